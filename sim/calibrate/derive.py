"""A GKE node's profile derived from a local measurement and what a real run of the lab showed.

What was observed (public GKE run of GSP777, e2-standard-4 node, TF Serving 2.8.0,
``serving_preprocess``, no batching): a lone request through the LoadBalancer REST endpoint
takes about 680 ms median end to end at 1-2 users; TF Serving's intra-op pool defaults to all
node vCPUs (4 on e2-standard-4, which are 2 physical cores with hyper-threading); the SavedModel
loads in about 8 s; a pod on an existing node goes from created to Available in about 21 s.

The derivation keeps the *shape* measured locally (how latency and CPU scale with threads,
concurrency and batch on ResNet101) and takes the *scale* from the observation:

1. ``g(v)``: the physical cores a lone request's threads get from ``v`` vCPUs,
   ``min(v, P) + (smt_gain - 1) * max(0, v - P)`` with ``P = vcpus / threads_per_core`` (Linux
   spreads threads over idle cores first; a hyper-thread sibling adds ``smt_gain - 1`` of a core
   to one request's synchronised threads).
2. ``r``: the node's slowness per core relative to this host,
   ``(observed_latency - overhead) / local_lone_latency(g(vcpus))``. It folds in clock,
   microarchitecture and TF Serving 2.8's build (Eigen without oneDNN) against the local
   TensorFlow.
3. Each node point ``(v, c, b)`` is the local point ``(g(v), max(1, c * g(v) / v), b)``: server
   time and CPU-seconds times ``r``, plus ``overhead`` on latency. CPU-seconds are the local
   core-seconds (a lone request keeps about g(v) vCPUs busy), and ``c`` requests load the node's
   ``v`` vCPUs as ``c * g(v) / v`` requests load ``g(v)`` local cores: each vCPU serves
   concurrent requests at a full core's rate, as the simulator's processor sharing assumes.

Why 3, and not "v threads each as busy as locally": the same run saw about 680 ms at *2* users
too. Had a lone request kept all 4 vCPUs busy, two overlapping requests would slow each other
about 1.9x and the 2-user median would be 0.8-0.9 s in the simulator; with a lone request on
about 2 vCPUs and 4 vCPUs of throughput for concurrent ones, it stays near 680 ms.
"""

from __future__ import annotations

import datetime as dt
import warnings
from typing import Any

from sim.calibrate import CalibrationError
from sim.cluster.catalog import machine_type
from sim.profile import SCHEMA_VERSION, Profile, ProfileExtrapolationWarning, profile_from_dict

OBSERVED_LATENCY_S = 0.680
OVERHEAD_S = 0.030
MODEL_LOAD_S = 8.0
IDLE_CPU_CORES = 0.005
SMT_GAIN = 1.0
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
    """``g(v)``: the cores' worth of throughput ``v`` of the node's vCPUs give."""
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
    notes: set[str] = set()

    def at(v: float, c: float, b: int) -> Any:
        g = physical_cores(v, vcpus, smt_gain, threads_per_core)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ProfileExtrapolationWarning)
            sp = local.service(g, max(1.0, c * g / v), b)
        notes.update(sp.notes)
        return sp

    lone = at(vcpus, 1, 1)
    ratio = (observed_latency - overhead) / (lone.latency_median - local.overhead_s)
    axes = local.axes
    ks = max(p.ks for p in local.points)
    n = min(p.n for p in local.points)
    # The local concurrencies, and as many times more as the node has vCPUs per lone request.
    wider = vcpus / physical_cores(vcpus, vcpus, smt_gain, threads_per_core)
    local_c = [int(c) for c in axes["concurrency"]]
    concurrency = sorted(set(local_c) | {max(1, round(c * wider)) for c in local_c})
    points = []
    for v in range(1, vcpus + 1):
        for c in concurrency:
            for b in axes["batch"]:
                sp = at(v, c, int(b))
                server = [q - local.overhead_s for _, q in sp.latency_quantiles]
                points.append(
                    {
                        "threads": v,
                        "concurrency": c,
                        "batch": int(b),
                        "n": n,
                        "latency_s": [overhead + ratio * s for s in server],
                        "lognormal": {
                            "median_s": overhead + ratio * (sp.latency_median - local.overhead_s),
                            "sigma": sp.cpu_seconds_sigma,
                            "ks": ks,
                        },
                        "cpu_s_per_request": sp.cpu_seconds_mean * ratio,
                    }
                )
    lone_node = lone.cpu_seconds_mean * ratio
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
                "rule": "node point (v, c, b) = local point (g(v), max(1, c g(v) / v), b): "
                "latency = overhead + r x local latency, CPU-seconds = r x local CPU-seconds",
                "g": f"g(v) = min(v, {vcpus / threads_per_core:g}) + {smt_gain - 1:g} x "
                f"max(0, v - {vcpus / threads_per_core:g}) physical cores for v vCPUs",
                "local_lone_latency_s": lone.latency_median,
                "r": ratio,
                "r_meaning": f"this node runs ResNet101 {ratio:.2f}x slower per core than "
                f"{local_cpu} with TensorFlow {tf_version} in process",
                "lone_request": f"{observed_latency:g} s = {overhead:g} s overhead + "
                f"{observed_latency - overhead:g} s server time; "
                f"{lone_node:.3f} vCPU-seconds per request",
                "n_and_ks": "each point's n and lognormal.ks are the local grid's smallest n "
                "and largest Kolmogorov distance: the derived quantiles inherit its error",
                "extrapolated_local_axes": sorted(notes),
            },
            "assumed": [
                f"overhead_s {overhead:g}: LoadBalancer, network and HTTP/JSON framing of a "
                "61 KB JPEG in base64; not measured.",
                f"smt_gain {smt_gain:g}: a hyper-thread sibling adds {smt_gain - 1:g} of a core "
                "to one request's convolutions (its threads share the core's vector units).",
                "The local measurement's shape over threads, concurrency and batch (TensorFlow "
                f"{tf_version}, oneDNN) carries over to TF Serving 2.8.0 (Eigen), and one "
                "ratio r scales all of it.",
                "A lone request gets g(v) physical cores' worth from its v intra-op threads and "
                "keeps about that many vCPUs busy (CPU-seconds = r x local core-seconds), while "
                "concurrent requests get a full core's rate from every vCPU (what the "
                "simulator's processor sharing over vCPUs assumes). Chosen because the lab "
                "also saw about 680 ms at 2 users: 4 busy vCPUs per lone request would make "
                "overlapping requests about 1.9x slower and the 2-user median about 0.8-0.9 s.",
                f"idle_cpu_cores {IDLE_CPU_CORES:g}: TF Serving's idle pollers, assumed.",
                "cold_factor (first request over a warm one) as measured locally.",
                "Batch points: TF Serving's server-side batching runs one Session::Run per "
                "batch, as the local batch measurement does.",
                "n1-standard-4 (the lab manual's type) has no profile of its own: the simulator "
                "rescales this one by the catalog's speed factors (n1 1.0 / e2 1.0) and logs it.",
            ],
        },
    }
    profile_from_dict(data, str(data["name"]))
    return data
