"""The load: Locust, driven from Python in a child process, reporting Locust's statistics
once a second.

Why a child process: importing locust monkey-patches the whole interpreter with gevent
(https://docs.locust.io/en/stable/use-as-lib.html), which would also patch the kubernetes
client and google-cloud-container's gRPC in the run's own process. So this module's top level
imports no locust; ``python -m cloud.load SPEC.json`` (:func:`child_main`) does, builds a
Locust ``Environment`` with a local runner, and prints one JSON line per second. It stops by
itself after the scenario's duration, on SIGTERM, or when its parent dies.

What it sends is the lab's request (GSP777 locust/tasks.py): ``POST
/v1/models/NAME/versions/1:predict`` with ``{"signature_name": "serving_preprocess",
"instances": [{"b64": <JPEG>}]}``. Closed loop: one ``HttpUser`` per Locust user, with the
scenario's ``wait_time`` drawn from the simulator's own per-user streams
(:func:`sim.loadgen.wait_time`), and the scenario's shape behind Locust's ``LoadTestShape``
(its ``tick()`` passes ``get_run_time()`` into the shape's pure ``tick(t)``). Open loop: the
simulator's own Poisson arrival times (:func:`sim.loadgen.open_loop_source`, same seed, same
arrivals), each request on a new connection as the design says.

Per second, from Locust's ``stats.total``: completed = new requests - new failures, failed =
new failures, and p50/p95/p99 from the difference of its response-time histograms with
Locust's own ``calculate_response_time_percentile`` (ms -> s). Locust counts failed requests'
times in its histogram; the simulator's latencies are of completed requests only.

Each sample also carries what the simulator's recorder keeps: the OK requests' latencies as
``histogram`` (``[[bucket, count], ...]`` in :func:`sim.recorder.latency_bucket`'s 1% buckets,
from each request's own response time, not Locust's rounded one) and ``failures_by_reason``
(:func:`cloud.failures.failure_reason`), both counted by a listener on Locust's ``request``
event and taken at the same instant as the ``stats.total`` difference, so per second the
histogram's counts sum to ``ok`` and the reasons to ``failed``. What completes after the last
sample (while the runner quits) comes in the total as ``late_histogram`` and
``late_failures_by_reason``.

With ``csv_name`` the child also runs Locust's own ``StatsCSVFileWriter`` (what ``locust --csv
NAME`` runs, locust/main.py), writing ``NAME_stats.csv``, ``NAME_stats_history.csv``,
``NAME_failures.csv`` and ``NAME_exceptions.csv`` beside the spec file, once a second; after the
load stops it writes them once more, so the files hold the final totals (Locust's own shutdown
only closes them, up to a second stale).
"""

from __future__ import annotations

import base64
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from cloud.errors import CloudError
from sim.scenario import Scenario

IMAGE_NAME = "grace_hopper.jpg"


def lab_image(explicit: Path | None = None) -> Path:
    """The JPEG the lab posts: ``explicit``, the packaged copy, or ../shared/data beside the
    repository; a clear error when none exists."""
    candidates = [explicit] if explicit is not None else []
    here = Path(__file__).resolve()
    candidates += [
        here.parent / "data" / IMAGE_NAME,
        here.parents[2] / "shared" / "data" / IMAGE_NAME,
    ]
    for path in candidates:
        if path is not None and path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise CloudError(f"the lab's image {IMAGE_NAME} was not found (tried {tried}); pass image_file")


def lab_request_body(image: Path, signature_name: str = "serving_preprocess") -> str:
    """The JSON body of the lab's predict request."""
    b64 = base64.b64encode(image.read_bytes()).decode()
    return json.dumps({"signature_name": signature_name, "instances": [{"b64": b64}]})


def predict_path(model: str, version: str | None = "1") -> str:
    version_part = f"/versions/{version}" if version else ""
    return f"/v1/models/{model}{version_part}:predict"


@dataclass(frozen=True)
class LoadSpec:
    """Everything the child needs, as JSON."""

    host: str
    path: str
    body: str
    load: dict[str, Any]
    seed: int
    duration: float
    client_timeout: float = 60.0
    csv_name: str | None = None  # Locust's --csv prefix, a file name beside the spec file

    @classmethod
    def for_scenario(
        cls,
        scenario: Scenario,
        *,
        host: str,
        seed: int | None = None,
        image: Path | None = None,
        signature_name: str = "serving_preprocess",
        model_version: str | None = "1",
        client_timeout: float = 60.0,
    ) -> LoadSpec:
        return cls(
            host=host.rstrip("/"),
            path=predict_path(scenario.deployment.model_name, model_version),
            body=lab_request_body(lab_image(image), signature_name),
            load=scenario.load.model_dump(mode="json"),
            seed=scenario.seed if seed is None else seed,
            duration=scenario.duration,
            client_timeout=client_timeout,
            csv_name=scenario.name,
        )


@dataclass
class LoadProcess:
    """The parent's handle on the Locust child: start it, read its samples, stop it."""

    spec: LoadSpec
    workdir: Path
    python: str = sys.executable
    samples: list[dict[str, Any]] = field(default_factory=list)
    total: dict[str, Any] | None = None
    start_unix: float | None = None
    errors: list[str] = field(default_factory=list)
    _proc: subprocess.Popen[str] | None = None
    _reader: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, timeout: float = 60.0) -> float:
        """Spawn the child and wait for its first line; returns the load's t=0 (Unix time)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        spec_path = self.workdir / "load-spec.json"
        spec_path.write_text(json.dumps(asdict(self.spec)))
        log = open(self.workdir / "locust.log", "w")  # noqa: SIM115 - closed by the child's exit
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(
            [self.python, "-m", "cloud.load", str(spec_path)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
        log.close()
        stdout = self._proc.stdout
        assert stdout is not None
        started = threading.Event()
        self._reader = threading.Thread(
            target=self._read, args=(stdout, started), name="locust-reader", daemon=True
        )
        self._reader.start()
        if not started.wait(timeout) or self.start_unix is None:
            self.stop()
            raise CloudError(
                f"Locust did not start within {timeout:.0f} s; see {self.workdir / 'locust.log'}"
            )
        return self.start_unix

    def _read(self, stream: IO[str], started: threading.Event) -> None:
        for line in stream:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            kind = record.get("kind")
            with self._lock:
                if kind == "started":
                    self.start_unix = float(record["start_unix"])
                    started.set()
                elif kind == "sample":
                    self.samples.append(record)
                elif kind == "total":
                    self.total = record
                elif kind == "error":
                    self.errors.append(str(record.get("message")))
        started.set()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def wait(self, timeout: float) -> bool:
        """Wait for the child to finish on its own; True if it did."""
        if self._proc is None:
            return True
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        if self._reader is not None:
            self._reader.join(timeout=5)
        return True

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (the child stops its users and prints its totals), then SIGKILL."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            if self._reader is not None:
                self._reader.join(timeout=5)
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if self._reader is not None:
            self._reader.join(timeout=5)


# --- the child ------------------------------------------------------------------------------


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _final_csv_rows(writer: Any) -> None:  # pragma: no cover - runs in the child
    """One more pass of Locust's ``StatsCSVFileWriter.stats_writer`` loop body, so the files
    hold the final totals: each overwritten file rewritten whole (its header, then the current
    rows), one more history row appended; then closed."""
    for handle, header, rows in (
        (writer.requests_csv_filehandle, writer.requests_csv_columns, writer._requests_data_rows),
        (writer.failures_csv_filehandle, writer.failures_columns, writer._failures_data_rows),
        (
            writer.exceptions_csv_filehandle,
            writer.exceptions_columns,
            writer._exceptions_data_rows,
        ),
    ):
        handle.seek(0)
        handle.truncate()
        out = csv.writer(handle)
        out.writerow(header)
        rows(out)
    writer._stats_history_data_rows(writer.stats_history_csv_writer, time.time())
    writer.close_files()


def child_main(spec_path: str) -> int:  # pragma: no cover - runs in the child (tested e2e)
    """Run the load described in ``spec_path``; print JSON lines (started, sample..., total)."""
    spec = LoadSpec(**json.loads(Path(spec_path).read_text()))

    import gevent
    import gevent.event
    from locust import HttpUser, LoadTestShape, task
    from locust.clients import HttpSession
    from locust.env import Environment
    from locust.stats import calculate_response_time_percentile, diff_response_time_dicts
    from pydantic import TypeAdapter

    from cloud.failures import failure_reason
    from sim.loadgen import open_loop_source, wait_time
    from sim.recorder import latency_bucket
    from sim.rng import stream
    from sim.scenario import Load, LocustLoad

    load = TypeAdapter(Load).validate_python(spec.load)
    headers = {"Content-Type": "application/json"}
    sent = [0]
    user_numbers = iter(range(10**9))
    parent = os.getppid()
    stopping = gevent.event.Event()

    def post(client: Any) -> None:
        sent[0] += 1
        client.post(
            spec.path, data=spec.body, headers=headers, timeout=spec.client_timeout, name=spec.path
        )

    env: Any
    if isinstance(load, LocustLoad):
        shape_of = load.shape
        waits = load.wait_time

        class LabUser(HttpUser):
            host = spec.host

            def __init__(self, environment: Any) -> None:
                super().__init__(environment)
                self._wait = wait_time(waits, spec.seed, next(user_numbers))

            def wait_time(self) -> float:
                return self._wait()

            @task
            def predict(self) -> None:
                post(self.client)

        class LabShape(LoadTestShape):
            def tick(self) -> tuple[int, float] | None:
                t = self.get_run_time()
                return None if t >= spec.duration else shape_of.tick(t)

        env = Environment(user_classes=[LabUser], shape_class=LabShape())
        runner = env.create_local_runner()
    else:
        env = Environment(user_classes=[])
        runner = env.create_local_runner()
        source = open_loop_source(load, stream(spec.seed, "load"), spec.duration)

        def fire() -> None:
            session = HttpSession(spec.host, env.events.request, None)
            try:
                post(session)
            finally:
                session.close()

        def arrivals(start: float) -> None:
            while (block := source()) is not None:
                for at in block:
                    gevent.sleep(max(0.0, start + at - time.time()))
                    gevent.spawn(fire)

    gevent.signal_handler(signal.SIGTERM, stopping.set)

    ok_buckets: Counter[int] = Counter()
    reasons: Counter[str] = Counter()

    def on_request(response_time: float, exception: Any, **_: Any) -> None:
        if exception is None:
            ok_buckets[latency_bucket(response_time / 1000.0)] += 1
        else:
            reasons[failure_reason(exception)] += 1

    env.events.request.add_listener(on_request)

    def take_counts() -> dict[str, Any]:
        """The OK histogram and failure reasons since the last take (then cleared)."""
        taken = {"histogram": sorted(ok_buckets.items()), "failures_by_reason": dict(reasons)}
        ok_buckets.clear()
        reasons.clear()
        return taken

    def snapshot() -> tuple[int, int, int, dict[int, int]]:
        # Read env.stats.total each time: Runner.start() replaces it (RequestStats.clear_all).
        total = env.stats.total
        return sent[0], total.num_requests, total.num_failures, dict(total.response_times)

    def ms(value: int) -> float:
        return round(value / 1000.0, 6)

    csv_writer: Any = None
    if spec.csv_name:
        from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter

        base = str(Path(spec_path).resolve().parent / spec.csv_name)
        csv_writer = StatsCSVFileWriter(env, PERCENTILES_TO_REPORT, base, full_history=False)
        csv_greenlet = gevent.spawn(csv_writer.stats_writer)
    start = time.time()
    _emit({"kind": "started", "start_unix": start})
    if isinstance(load, LocustLoad):
        runner.start_shape()
    else:
        gevent.spawn(arrivals, start)
    prev = snapshot()
    second = 0
    while second < spec.duration and not stopping.is_set():
        stopping.wait(max(0.0, start + second + 1 - time.time()))
        if stopping.is_set() and time.time() < start + second + 1:
            break
        cur = snapshot()
        requests = cur[1] - prev[1]
        failures = cur[2] - prev[2]
        hist = diff_response_time_dicts(cur[3], prev[3])
        counted = sum(hist.values())
        pct = {
            f"p{int(q * 100)}": ms(calculate_response_time_percentile(hist, counted, q))
            if counted
            else None
            for q in (0.50, 0.95, 0.99)
        }
        _emit(
            {
                "kind": "sample",
                "second": second,
                "users": runner.user_count,
                "sent": cur[0] - prev[0],
                "ok": requests - failures,
                "failed": failures,
                **pct,
                **take_counts(),
            }
        )
        prev = cur
        second += 1
        if os.getppid() != parent:
            break
    runner.quit()
    if csv_writer is not None:
        csv_greenlet.kill()
        _final_csv_rows(csv_writer)
    stats = env.stats.total
    late = take_counts()
    errors = sorted(env.stats.errors.values(), key=lambda e: -e.occurrences)[:10]
    _emit(
        {
            "kind": "total",
            "seconds": second,
            "sent": sent[0],
            "requests": stats.num_requests,
            "failures": stats.num_failures,
            "latency_mean": ms(stats.avg_response_time) if stats.num_requests else None,
            **{
                f"p{int(q * 100)}": ms(stats.get_response_time_percentile(q))
                if stats.num_requests
                else None
                for q in (0.50, 0.95, 0.99)
            },
            "errors": {str(e.error): e.occurrences for e in errors},
            "late_histogram": late["histogram"],
            "late_failures_by_reason": late["failures_by_reason"],
        }
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(child_main(sys.argv[1]))
