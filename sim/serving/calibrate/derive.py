"""A GKE node's profile derived from a local measurement and what a real run of the lab showed.

What was observed (public GKE run of GSP777, e2-standard-4 node, TF Serving 2.8.0,
``serving_preprocess``, no batching): a lone request through the LoadBalancer REST endpoint
takes about 680 ms median end to end at 1-2 users; TF Serving's intra-op pool defaults to all
node vCPUs (4 on e2-standard-4, which are 2 physical cores with hyper-threading); the SavedModel
loads in about 8 s; a pod on an existing node goes from created to Available in about 21 s.

A lone-request figure does not determine throughput under concurrency, so the derivation keeps
the *shape* of the local ladders (how X, U and latency change with requests in flight, threads
and batch on ResNet101) and takes only the *scale* from the observation:

1. ``g(v)``: the local cores' worth of ``v`` node vCPUs,
   ``min(v, P) + (smt_gain - 1) * max(0, v - P)`` with ``P = vcpus / threads_per_core``:
   Linux spreads threads over idle cores first, and a hyper-thread sibling adds
   ``smt_gain - 1`` of a core.
2. ``r``: the node's slowness per core relative to this host,
   ``(observed_latency - overhead) / local lone latency at g(vcpus)``. It folds in clock,
   microarchitecture and TF Serving 2.8's build (Eigen without oneDNN) against the local
   TensorFlow.
3. Each node point ``(v, n)`` is the local model at ``(g(v), n)``: throughput divided by
   ``r``, latency's server part times ``r`` plus ``overhead``, and CPU in use ``U x v / g(v)``
   (the share of the intra-op pool kept busy, spinning included, carries over).

The ladder is the local one at its largest thread count; beyond it the plateau holds.
"""

from __future__ import annotations

import datetime as dt
import warnings
from typing import Any

from sim.cluster.catalog import machine_type
from sim.serving.calibrate import CalibrationError
from sim.serving.profile import (
    SCHEMA_VERSION,
    Profile,
    ProfileExtrapolationWarning,
    profile_from_dict,
)

OBSERVED_LATENCY_S = 0.680
OVERHEAD_S = 0.030
MODEL_LOAD_S = 8.0
IDLE_CPU_CORES = 0.005
SMT_GAIN = 1.25
THREADS_PER_CORE = 2

OBSERVED = [
    "Median end-to-end latency of a lone request through the LoadBalancer REST endpoint: about "
    "680 ms at 1-2 Locust users (public GKE run of GSP777, e2-standard-4 node, TF Serving "
    "2.8.0, serving_preprocess, no batching).",
    "TF Serving's intra-op thread pool defaults to all node vCPUs: 4 on e2-standard-4, which "
    "are 2 physical cores with hyper-threading.",
    "The SavedModel loads in about 8 s (defaults.model_load_s).",
    "A pod on an existing node goes from created to Available in about 21 s (the simulator's "
    "startup model, not this profile, uses it).",
]


def physical_cores(v: float, vcpus: int, smt_gain: float, threads_per_core: int) -> float:
    """``g(v)``: the local cores' worth of ``v`` of the node's vCPUs."""
    cores = vcpus / threads_per_core
    return min(v, cores) + (smt_gain - 1) * max(0.0, v - cores)


def derive(
    local: Profile,
    *,
    machine: str = "e2-standard-4",
    observed_latency: float = OBSERVED_LATENCY_S,
    overhead: float = OVERHEAD_S,
    smt_gain: float = SMT_GAIN,
    threads_per_core: int = THREADS_PER_CORE,
    name: str | None = None,
    family: str = "resnet101-tfserving",
    command: str = "",
    source: str = "",
) -> dict[str, Any]:
    """The node profile mapping (validated, not yet written); see the module docstring."""
    node = machine_type(machine)
    if not 0 <= overhead < observed_latency:
        raise CalibrationError(
            f"--overhead {overhead} must be >= 0 and below --observed-latency {observed_latency}"
        )
    if not 1 <= smt_gain <= 2:
        raise CalibrationError(f"--smt-gain must be in [1, 2], got {smt_gain}")
    vcpus = node.vcpus

    def g(v: float) -> float:
        return physical_cores(v, vcpus, smt_gain, threads_per_core)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ProfileExtrapolationWarning)
        lone_local = local.alone_latency(g(vcpus)) - local.overhead_s
        ratio = (observed_latency - overhead) / lone_local
        ks = max(p.ks for p in local.points)
        n_samples = min(p.n for p in local.points)
        ladder = [int(n) for n in local.concurrency(max(local.threads))]
        batches = sorted({p.batch for p in local.points if p.concurrency == 1})
        points = []
        for v in range(1, vcpus + 1):
            cores = g(v)
            for n in ladder:
                lat = local.latency(cores, n)
                quantiles = [overhead + ratio * max(q - local.overhead_s, 1e-6) for q in lat]
                points.append(
                    {
                        "threads": v,
                        "concurrency": n,
                        "batch": 1,
                        "n": n_samples,
                        "latency_s": quantiles,
                        "lognormal": {
                            "median_s": quantiles[local.quantiles.index(0.5)],
                            "sigma": local.sigma(cores),
                            "ks": ks,
                        },
                        "throughput_rps": local.throughput(cores, n) / ratio,
                        "cpu_cores": local.cpu_cores(cores, n) * v / cores,
                    }
                )
            lone: dict[str, Any] = points[-len(ladder)]
            for b in batches[1:]:
                cost = local.batch_cost(cores, b)
                median = overhead + (lone["lognormal"]["median_s"] - overhead) * cost
                points.append(
                    {
                        **lone,
                        "batch": b,
                        "latency_s": [overhead + (q - overhead) * cost for q in lone["latency_s"]],
                        "lognormal": {**lone["lognormal"], "median_s": median},
                        "throughput_rps": lone["throughput_rps"] / cost,
                    }
                )
    notes = sorted({str(w.message).split(";")[0].split(": ")[-1] for w in caught})
    lone_x = local.throughput(g(vcpus), 1) / ratio
    top_x = local.throughput(g(vcpus), ladder[-1]) / ratio
    local_date = local.provenance.get("date", "?")
    local_cpu = (local.provenance.get("cpu") or {}).get("model_name", "?")
    tf_version = (local.provenance.get("tensorflow") or {}).get("version", "?")
    data = {
        "schema_version": SCHEMA_VERSION,
        "name": name or f"{family}-gke-{machine}",
        "family": family,
        "machine_type": machine,
        "kind": "derived",
        "model": {
            "architecture": "ResNet V2 101 (the lab's); its arithmetic measured as "
            "tf.keras.applications.ResNet101",
            "server": "TF Serving 2.8.0 REST, no batching",
            "signature": "serving_preprocess",
        },
        "defaults": {
            "threads": vcpus,
            "overhead_s": overhead,
            "idle_cpu_cores": IDLE_CPU_CORES,
            "model_load_s": MODEL_LOAD_S,
            **({"cold_factor": local.cold_factor} if local.cold_factor else {}),
        },
        "quantiles": list(local.quantiles),
        "points": points,
        "provenance": {
            "tool": "scalelab calibrate --derive-from",
            "command": command,
            "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "derived_from": {
                "profile": local.name,
                "file": source or local.origin,
                "measured": local_date,
                "cpu": local_cpu,
                "tensorflow": tf_version,
            },
            "observed": OBSERVED,
            "derivation": {
                "rule": "node point (v, n) = local model at (g(v), n): throughput / r, latency "
                "= overhead + r x local server latency, CPU in use = local U x v / g(v)",
                "g": f"g(v) = min(v, {vcpus / threads_per_core:g}) + {smt_gain - 1:g} x "
                f"max(0, v - {vcpus / threads_per_core:g}) physical cores for v vCPUs",
                "local_lone_latency_s": lone_local,
                "r": ratio,
                "r_meaning": f"this node runs ResNet101 {ratio:.2f}x slower per core than "
                f"{local_cpu} with TensorFlow {tf_version} in process",
                "lone_request": f"{observed_latency:g} s = {overhead:g} s overhead + "
                f"{observed_latency - overhead:g} s server time",
                "throughput": f"{lone_x:.3f} req/s with one request in flight, {top_x:.3f} "
                f"req/s at the plateau ({ladder[-1]} in flight) on {vcpus} vCPUs",
                "n_and_ks": "each point's n and lognormal.ks are the local profile's smallest n "
                "and largest Kolmogorov distance: the derived quantiles inherit its error",
                "extrapolated_local_axes": sorted(notes),
            },
            "assumed": [
                f"overhead_s {overhead:g}: LoadBalancer, network and HTTP/JSON framing of a "
                "61 KB JPEG in base64; not measured.",
                "The local measurement's shape over threads, load and batch (TensorFlow "
                f"{tf_version}, oneDNN) carries over to TF Serving 2.8.0 (Eigen), and one "
                "ratio r scales all of it.",
                "Throughput under concurrency is NOT observed on GKE: it follows the local "
                "ladder's shape (X(n) / X(1) as measured here at g(v) cores), scaled by the "
                "one lone-request ratio r. `scalelab calibrate --endpoint` on a real cluster "
                "measures it instead.",
                f"smt_gain {smt_gain:g}: a hyper-thread sibling adds {smt_gain - 1:g} of a core "
                "to the server's throughput (compute-bound convolutions share the core's "
                "vector units; 1.0-1.3 is the usual range).",
                "CPU in use: the node's v intra-op threads are as busy (spinning included) as "
                "the local g(v) cores were at the same load, so U = local U x v / g(v): what "
                "the kubelet, and the HPA, see.",
                f"idle_cpu_cores {IDLE_CPU_CORES:g}: TF Serving's idle pollers, assumed.",
                "cold_factor (first request over a warm one) as measured locally.",
                "Batch points: a batch's cost relative to one request as measured locally "
                "(TF Serving's server-side batching runs one Session::Run per batch).",
                "n1-standard-4 (the lab manual's type) has no profile of its own: the simulator "
                "rescales this one by the catalog's speed factors (n1 1.0 / e2 1.0) and logs it.",
            ],
        },
    }
    profile_from_dict(data, str(data["name"]))
    return data
