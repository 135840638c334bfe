"""Endpoint calibration: climb a live TF Serving REST API's throughput curve with the lab's request.

Closed-loop clients with no think time, each on its own keep-alive connection as Locust's users
are, post the lab's body (base64 JPEG, ``serving_preprocess``) to
``/v1/models/<model>[/versions/<v>]:predict`` up the concurrency ladder
(:mod:`sim.serving.calibrate.ladder`), batch > 1 at concurrency 1, then lone requests after
idle gaps (:mod:`sim.serving.calibrate.idle`; their CPU too from a process or cgroup). The
server's CPU comes from a source the user names: a local process (``/proc/PID/stat``), a
cgroup (``cpu.stat`` ``usage_usec``, v1 ``cpuacct.usage``) or a pod through the Kubernetes API
(the kubelet's counter or metrics.k8s.io, :mod:`sim.serving.calibrate.podcpu`: each window then
starts once the source has caught up with the new load and spans several of its resolutions);
without one it is unmeasured and every point says the server kept its ``cores`` busy (intra-op
threads spin while any request is in flight). The round trip of the model-status GET is
recorded (provenance), but ``overhead_s`` is 0: the callers' throughput and latency already
include the network and HTTP. Stdlib only, but for a pod's CPU (the kubernetes client,
imported only then).
"""

from __future__ import annotations

import datetime as dt
import functools
import http.client
import json
import platform
import socket
import statistics
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.serving.calibrate import CalibrationError, host, ladder, stats
from sim.serving.calibrate.cpu import CgroupCpu, CpuError, CpuSource, ProcessCpu
from sim.serving.calibrate.idle import after_idle, factors
from sim.serving.calibrate.payload import LAB_SIGNATURE, payload_info, rest_body
from sim.serving.calibrate.worker import METHOD, Callers, Window, spread_notices
from sim.serving.profile import DEFAULT_QUANTILES, SCHEMA_VERSION, profile_from_dict


@dataclass
class EndpointRun:
    """An endpoint calibration's inputs."""

    url: str
    model: str
    image: Path
    cores: float
    version: str | None = None
    signature: str = LAB_SIGNATURE
    concurrency: tuple[int, ...] | None = None
    """A fixed ladder, or None: climb to past the knee."""
    max_concurrency: int = ladder.MAX_CONCURRENCY
    batch: tuple[int, ...] = ()
    """Batch sizes > 1, measured at concurrency 1."""
    seconds: float = 10.0
    repeats: int = 3
    min_requests: int = 10
    max_seconds: float = 40.0
    warmup: int = 3
    idle_rounds: int = 6
    """Rounds of the after-idle measurement (:mod:`sim.serving.calibrate.idle`); 0: none."""
    cpu_pid: int | None = None
    cpu_cgroup: Path | None = None
    cpu_pod: str | None = None
    """NAMESPACE/POD read through the Kubernetes API."""
    kubeconfig: Path | None = None
    kube_context: str | None = None
    timeout: float = 30.0
    machine_type: str | None = None
    name: str | None = None
    family: str = "resnet101-tfserving"
    command: str = ""


class _NoDelay(http.client.HTTPConnection):
    """Headers and body leave at once, as with urllib3 (Locust's client), which sets
    TCP_NODELAY: without it Nagle's algorithm and the server's delayed ACK hold a POST's body
    for ~40 ms, which would be measured as the server's latency."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _NoDelayTLS(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connection(scheme: str, host: str, port: int, timeout: float) -> http.client.HTTPConnection:
    """A keep-alive connection with TCP_NODELAY (see :class:`_NoDelay`)."""
    factory = _NoDelayTLS if scheme == "https" else _NoDelay
    return factory(host, port, timeout=timeout)


class _Client:
    """One keep-alive connection per calling thread, like one Locust user each."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CalibrationError(f"--endpoint must look like http://HOST:8501, got {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.local = threading.local()
        self.opened: list[http.client.HTTPConnection] = []
        self.lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = connection(self.scheme, self.host, self.port, self.timeout)
            self.local.conn = conn
            with self.lock:
                self.opened.append(conn)
        return conn

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = self._connection()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            conn.request(method, self.prefix + path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self.local.conn = None
            raise

    def close(self) -> None:
        """Close every caller's connection (the callers have finished)."""
        with self.lock:
            for conn in self.opened:
                conn.close()
            self.opened.clear()


def _check(status: int, body: bytes, what: str) -> dict[str, Any]:
    text = body.decode("utf-8", errors="replace")
    if status != 200:
        raise CalibrationError(f"{what} answered HTTP {status}: {text[:300]}")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        raise CalibrationError(f"{what} did not answer JSON: {text[:300]}") from None
    if not isinstance(parsed, dict):
        raise CalibrationError(f"{what} answered {text[:300]}")
    return parsed


def _outputs(sample: dict[str, Any]) -> list[str] | None:
    """The output names of the first prediction (``labels``, ``probabilities`` in the lab)."""
    predictions = sample.get("predictions")
    first = predictions[0] if isinstance(predictions, list) and predictions else None
    return sorted(first) if isinstance(first, dict) else None


def process_cpu(pid: int) -> ProcessCpu:
    """``--cpu-pid``: the process tree's CPU (:class:`sim.serving.calibrate.cpu.ProcessCpu`)."""
    try:
        return ProcessCpu(pid)
    except CpuError as error:
        raise CalibrationError(f"--cpu-pid {pid}: {error}") from None


def cgroup_cpu(path: Path) -> CgroupCpu:
    """``--cpu-cgroup``: the cgroup's CPU (:class:`sim.serving.calibrate.cpu.CgroupCpu`)."""
    try:
        return CgroupCpu(path)
    except CpuError as error:
        raise CalibrationError(f"--cpu-cgroup {path}: {error}") from None


def pod_cpu(pod: str, kubeconfig: Path | None, context: str | None) -> Any:
    """``--cpu-pod``: the pod's CPU through the Kubernetes API
    (:class:`sim.serving.calibrate.podcpu.PodCpu`)."""
    from sim.serving.calibrate.podcpu import PodCpu

    try:
        return PodCpu(pod, kubeconfig, context)
    except CpuError as error:
        raise CalibrationError(f"--cpu-pod {pod}: {error}") from None


def cpu_source(run: EndpointRun) -> CpuSource | None:
    """The CPU source the user named (at most one), ready to read."""
    given = [run.cpu_pid is not None, run.cpu_cgroup is not None, run.cpu_pod is not None]
    if sum(given) > 1:
        raise CalibrationError(
            "--cpu-pid, --cpu-cgroup and --cpu-pod are different CPU sources; pick one"
        )
    if run.cpu_pod is None and (run.kubeconfig is not None or run.kube_context is not None):
        raise CalibrationError("--kubeconfig and --context say where --cpu-pod's pod is")
    if run.cpu_pid is not None:
        return process_cpu(run.cpu_pid)
    if run.cpu_cgroup is not None:
        return cgroup_cpu(run.cpu_cgroup)
    if run.cpu_pod is not None:
        from sim.serving.calibrate.podcpu import window_too_short

        source = pod_cpu(run.cpu_pod, run.kubeconfig, run.kube_context)
        why = window_too_short(run.seconds, source.resolution_s, "--seconds")
        if why is not None:
            source.close()
            raise CalibrationError(f"--cpu-pod {run.cpu_pod}: {why}")
        return source
    return None


Progress = Callable[[str, dict[str, Any]], None]


def run_endpoint(run: EndpointRun, progress: Progress | None = None) -> dict[str, Any]:
    """Measure the endpoint and return the profile mapping (validated, not yet written)."""
    report: Progress = progress or (lambda event, fields: None)
    if run.cores <= 0:
        raise CalibrationError(f"--cores must be > 0, got {run.cores}")
    if not run.image.is_file():
        raise CalibrationError(f"--image {run.image}: no such file")
    if run.concurrency is not None and 1 not in run.concurrency:
        raise CalibrationError(
            "--concurrency must include 1 (the ladder starts with a lone request)"
        )
    if run.seconds <= 0 or run.max_seconds < run.seconds or run.repeats < 1:
        raise CalibrationError(
            "--seconds must be > 0, --max-seconds >= --seconds and --repeats >= 1"
        )
    cpu = cpu_source(run)
    try:
        return _measure(run, cpu, report)
    finally:
        close = getattr(cpu, "close", None)
        if close is not None:
            close()


def _measure(run: EndpointRun, cpu: CpuSource | None, report: Progress) -> dict[str, Any]:
    began = time.perf_counter()
    client = _Client(run.url, run.timeout)
    status_path = f"/v1/models/{run.model}"
    predict_path = status_path + (f"/versions/{run.version}" if run.version else "") + ":predict"
    try:
        status = _check(*client.request("GET", status_path), f"GET {run.url}{status_path}")
        rtts = []
        for _ in range(10):
            start = time.perf_counter()
            client.request("GET", status_path)
            rtts.append(time.perf_counter() - start)
    except (OSError, http.client.HTTPException) as error:
        raise CalibrationError(f"cannot reach {run.url}{status_path}: {error}") from None
    overhead = statistics.median(rtts)
    idle = 0.0
    idle_rule = "not observable without a CPU source; 0"
    if cpu is not None and cpu.resolution_s > 0:
        # The newest sample: the pod before the first POST (waiting a few resolutions for a
        # difference would cost minutes for the same figure).
        newest = getattr(cpu, "cores", None)
        idle = max(0.0, newest()) if newest is not None else 0.0
        idle_rule = f"measured: the newest sample before any request, from {cpu.description}"
    elif cpu is not None:
        idle_s, cpu0, wall0 = 1.0, cpu.seconds(), time.perf_counter()
        time.sleep(idle_s)
        idle = max(0.0, (cpu.seconds() - cpu0) / (time.perf_counter() - wall0))
        idle_rule = f"measured: {cpu.description} over 1 s before any request"
    jpeg = run.image.read_bytes()
    bodies = {b: rest_body(jpeg, b, run.signature) for b in (1, *run.batch)}
    where = f"POST {run.url}{predict_path}"

    def post(batch: int) -> None:
        code, answer = client.request("POST", predict_path, bodies[batch])
        if code != 200:
            text = answer.decode("utf-8", errors="replace")[:300]
            raise CalibrationError(f"{where} answered HTTP {code}: {text}")

    points: list[dict[str, Any]] = []

    def measure(callers: Callers, concurrency: int, batch: int) -> Window:
        window = callers.measure(
            concurrency,
            seconds=run.seconds,
            repeats=run.repeats,
            min_requests=run.min_requests,
            max_seconds=run.max_seconds,
            settle=cpu.lag_s if cpu is not None else 0.0,
        )
        cores = window.cpu_cores if cpu is not None else run.cores
        if cores is None or cores <= 0:
            raise CalibrationError(
                f"the CPU source ({cpu.description if cpu else '?'}) counted no CPU while "
                f"{concurrency} callers kept the server busy: is it the serving process?"
            )
        point = stats.point(
            threads=run.cores,
            concurrency=concurrency,
            batch=batch,
            latencies=window.latencies,
            throughput_rps=window.throughput,
            cpu_cores=cores,
            spread=window.spread,
            repeats=window.repeats if window.repeats > 1 else None,
        )
        points.append(point)
        report("point", {"point": point, "elapsed": window.elapsed})
        return window

    try:
        first = time.perf_counter()
        code, answer = client.request("POST", predict_path, bodies[1])
        first_s = time.perf_counter() - first
        sample = _check(code, answer, where)
        if "predictions" not in sample and "outputs" not in sample:
            raise CalibrationError(f"{where} answered without predictions: {answer[:300]!r}")
        for _ in range(run.warmup):
            post(1)
        report("loaded", {"overhead_s": overhead, "first_request_s": first_s})
        lone: list[float] = []
        with Callers(
            lambda: post(1), cpu_clock=cpu.seconds if cpu else None, busy_clock=None
        ) as callers:

            def step(concurrency: int) -> float:
                window = measure(callers, concurrency, 1)
                if concurrency == 1:
                    lone.extend(window.latencies)
                return window.throughput

            measured = ladder.climb(step, cap=run.max_concurrency, fixed=run.concurrency)
        for batch in run.batch:
            call = functools.partial(post, batch)
            with Callers(call, cpu_clock=cpu.seconds if cpu else None, busy_clock=None) as callers:
                measure(callers, 1, batch)
        idle_cost = None
        if run.idle_rounds:
            # per request: a process's or a cgroup's counter, not a pod's metrics (10 s or more)
            exact = cpu.seconds if cpu is not None and cpu.resolution_s < 0.1 else None
            idle_cost = after_idle(lambda: post(1), rounds=run.idle_rounds, cpu=exact)
    except (OSError, http.client.HTTPException) as error:
        raise CalibrationError(f"requests to {run.url}{predict_path} failed: {error}") from None
    finally:
        client.close()
    cpu_method = (
        f"measured: {cpu.description}, over the window divided by its length, in cores"
        if cpu is not None
        else "unmeasured: no --cpu-pid, --cpu-cgroup or --cpu-pod was given, so every point's "
        f"cpu_cores is --cores {run.cores:g}, assuming the server's intra-op threads spin while "
        "any request is in flight, so a busy server shows all its cores busy"
    )
    name_at = run.machine_type or "endpoint"
    source_provenance = getattr(cpu, "provenance", None)  # a pod source's own record
    data = {
        "schema_version": SCHEMA_VERSION,
        "name": run.name or f"{run.family}-{name_at}",
        "family": run.family,
        "machine_type": run.machine_type,
        "kind": "endpoint",
        "model": {
            "name": run.model,
            "signature": run.signature,
            "server": "TF Serving REST API",
            "version_status": status.get("model_version_status"),
            "outputs": _outputs(sample),
        },
        "defaults": {
            "threads": run.cores,
            # The callers' X and latency already include the round trip: a second overhead
            # on top would count it twice in the simulator.
            "overhead_s": 0.0,
            "idle_cpu_cores": idle,
            "cold_factor": first_s / statistics.median(lone),
            **({"after_idle": factors(idle_cost)} if idle_cost else {}),
        },
        "quantiles": list(DEFAULT_QUANTILES),
        "points": points,
        "provenance": {
            "tool": "scalelab calibrate (endpoint)",
            "command": run.command,
            "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "endpoint": run.url + predict_path,
            "client": {"cpu": host.cpu_info(), "python": platform.python_version()},
            "payload": {**payload_info(jpeg, str(run.image)), "signature": run.signature},
            "method": {
                "ladder": ladder.describe(run.concurrency, run.max_concurrency),
                "batch": f"batch {', '.join(map(str, run.batch))} at concurrency 1"
                if run.batch
                else "batch 1 only",
                "window_s": run.seconds,
                "repeats": run.repeats,
                "min_requests": run.min_requests,
                "max_window_s": run.max_seconds,
                "warmup_requests": run.warmup,
                **METHOD,
                "clients": METHOD["clients"] + "; one keep-alive connection each",
                "threads": f"--cores {run.cores:g}: the CPU the pod can use, given by the user",
                "cpu": cpu_method,
                "overhead": f"median round trip of 10 GET /v1/models/<model> on a keep-alive "
                f"connection: {overhead:.4f} s; defaults.overhead_s is 0 because the ladder's "
                "X and latency already include network and HTTP",
                "idle_cpu_cores": idle_rule,
                "cold_factor": "the first POST's latency over the concurrency-1 median; "
                "1 when the server had already served requests",
            },
            "ladder": {"knee": ladder.knee(measured), "measured": measured},
            **({"after_idle": idle_cost} if idle_cost else {}),
            **({"cpu_source": source_provenance()} if source_provenance else {}),
            "warnings": spread_notices(points, run.max_seconds),
            "elapsed_s": time.perf_counter() - began,
        },
    }
    _fit_waiting_spread(data, run.cores)
    profile_from_dict(data, str(data["name"]))
    return data


def _fit_waiting_spread(data: dict[str, Any], cores: float) -> None:
    """``defaults.waiting_spread``, fitted to the ladder's own loops past the inter-op width
    (:func:`sim.serving.fidelity.fit_waiting_spread`): they went through the REST API, so their
    p95 / p50 are the served tails that ``scalelab fidelity`` measures apart for a profile
    calibrated in process. Without such loops the spread stays held at the width's."""
    from sim.serving import fidelity as fid

    rungs = {p["concurrency"]: p for p in data["points"] if p["batch"] == 1}
    counts = fid.tail_counts(cores, rungs)
    if not counts:
        return
    p50, p95 = (DEFAULT_QUANTILES.index(q) for q in (0.5, 0.95))
    tails = [(n, rungs[n]["latency_s"][p95] / rungs[n]["latency_s"][p50]) for n in counts]
    fitted = fid.fit_waiting_spread(profile_from_dict(data, str(data["name"])), cores, tails)
    data["defaults"]["waiting_spread"] = {
        "in_flight": [n for n, _ in fitted],
        "sigma": [round(v, 5) for _, v in fitted],
    }
    data["provenance"]["method"]["waiting_spread"] = (
        "fitted: the work's lognormal spread past the inter-op width "
        f"({fid.inter_op_width(cores)} at --cores {cores:g}) such that the model's closed loops "
        "of n callers through TF Serving's REST pool, no think time, read this ladder's p95 / p50 "
        f"at n = {', '.join(str(n) for n in counts)} (the largest loop measured at most the REST "
        "handlers, and the one nearest halfway from the width to it), in increasing n"
    )
