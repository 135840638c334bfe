"""Endpoint calibration: drive a live TF Serving REST API with the lab's request, fit a profile.

For each (concurrency, batch), ``concurrency`` closed-loop clients, each on its own keep-alive
connection as Locust's users are, post the lab's body (base64 JPEG, ``serving_preprocess``) to
``/v1/models/<model>[/versions/<v>]:predict``. The server's CPU is out of sight, so CPU-seconds
per request come from the processor-sharing fit of latency against concurrency
(:func:`sim.serving.calibrate.stats.fit_processor_sharing`) on the ``cores`` the pod can use; the
network and HTTP overhead is the median round trip of the model-status GET. Stdlib only.
"""

from __future__ import annotations

import datetime as dt
import functools
import http.client
import json
import platform
import statistics
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.serving.calibrate import CalibrationError, host, stats
from sim.serving.calibrate.payload import LAB_SIGNATURE, payload_info, rest_body
from sim.serving.calibrate.worker import Window, closed_loop
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
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    batch: tuple[int, ...] = (1,)
    seconds: float = 20.0
    repeats: int = 3
    min_requests: int = 10
    warmup: int = 3
    timeout: float = 30.0
    machine_type: str | None = None
    name: str | None = None
    family: str = "resnet101-tfserving"
    command: str = ""


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
            factory = (
                http.client.HTTPSConnection
                if self.scheme == "https"
                else http.client.HTTPConnection
            )
            conn = factory(self.host, self.port, timeout=self.timeout)
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


Progress = Callable[[str, dict[str, Any]], None]


def run_endpoint(run: EndpointRun, progress: Progress | None = None) -> dict[str, Any]:
    """Measure the endpoint and return the profile mapping (validated, not yet written)."""
    report: Progress = progress or (lambda event, fields: None)
    if run.cores <= 0:
        raise CalibrationError(f"--cores must be > 0, got {run.cores}")
    if not run.image.is_file():
        raise CalibrationError(f"--image {run.image}: no such file")
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
    jpeg = run.image.read_bytes()
    bodies = {b: rest_body(jpeg, b, run.signature) for b in run.batch}

    def post(batch: int) -> None:
        code, answer = client.request("POST", predict_path, bodies[batch])
        if code != 200:
            text = answer.decode("utf-8", errors="replace")[:300]
            raise CalibrationError(f"POST {run.url}{predict_path} answered HTTP {code}: {text}")

    try:
        first = time.perf_counter()
        code, answer = client.request("POST", predict_path, bodies[run.batch[0]])
        first_s = time.perf_counter() - first
        sample = _check(code, answer, f"POST {run.url}{predict_path}")
        for _ in range(run.warmup):
            post(run.batch[0])
        report("loaded", {"overhead_s": overhead, "first_request_s": first_s})
        windows: dict[tuple[int, int], Window] = {}
        for batch in run.batch:
            for concurrency in run.concurrency:
                window = closed_loop(
                    functools.partial(post, batch),
                    concurrency,
                    seconds=run.seconds,
                    repeats=run.repeats,
                    min_requests=run.min_requests,
                    max_seconds=max(run.seconds * 3, run.timeout),
                )
                windows[(concurrency, batch)] = window
                report(
                    "point",
                    {
                        "point": {
                            "threads": run.cores,
                            "concurrency": concurrency,
                            "batch": batch,
                            "n": len(window.latencies),
                            "latency_s": stats.quantiles(window.latencies),
                        }
                    },
                )
    except (OSError, http.client.HTTPException) as error:
        raise CalibrationError(f"requests to {run.url}{predict_path} failed: {error}") from None
    finally:
        client.close()
    points: list[dict[str, Any]] = []
    fits: dict[str, Any] = {}
    for batch in run.batch:
        observed = [(c, statistics.median(windows[(c, batch)].latencies)) for c in run.concurrency]
        try:
            fit = stats.fit_processor_sharing(observed, run.cores, overhead)
        except ValueError as error:
            raise CalibrationError(f"cannot fit batch {batch}: {error}") from None
        fits[f"batch_{batch}"] = {
            "cpu_seconds": fit.cpu_seconds,
            "parallelism": fit.parallelism,
            "rms_relative_error": fit.rms_relative_error,
        }
        for concurrency in run.concurrency:
            window = windows[(concurrency, batch)]
            n = len(window.latencies)
            points.append(
                stats.point(
                    threads=run.cores,
                    concurrency=concurrency,
                    batch=batch,
                    latencies=window.latencies,
                    cpu_s_per_request=fit.cpu_seconds,
                    throughput_rps=n / window.elapsed,
                    repeat_medians=window.repeat_medians,
                )
            )
    lone = windows[(run.concurrency[0], run.batch[0])]
    where = run.machine_type or "endpoint"
    data = {
        "schema_version": SCHEMA_VERSION,
        "name": run.name or f"{run.family}-{where}",
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
            "overhead_s": overhead,
            "idle_cpu_cores": 0.0,
            "cold_factor": first_s / statistics.median(lone.latencies),
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
                "concurrency": list(run.concurrency),
                "batch": list(run.batch),
                "window_s": run.seconds,
                "repeats": run.repeats,
                "min_requests": run.min_requests,
                "warmup_requests": run.warmup,
                "clients": "closed loop, no think time, one keep-alive connection each",
                "threads": f"--cores {run.cores:g}: the CPU the pod can use, given by the user",
                "cpu_time": "not observable from outside: CPU-seconds per request are the "
                "processor-sharing fit R(c) = overhead + W / min(p, cores / c) to the median "
                "latencies (see fit)",
                "overhead": "median round trip of 10 GET /v1/models/<model> on a keep-alive "
                "connection: network and HTTP, not the 61 KB upload or JSON parsing",
                "idle_cpu_cores": "not observable from outside; 0",
                "cold_factor": "the first POST's latency over the concurrency-1 median; "
                "1 when the server had already served requests",
            },
            "fit": fits,
            "elapsed_s": time.perf_counter() - began,
        },
    }
    profile_from_dict(data, str(data["name"]))
    return data
