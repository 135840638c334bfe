"""The real half of ``scalelab fidelity``: closed-loop Locust users against a model server at a
ladder of user counts, cut into one measured window per rung.

Rung k runs from ``T_k`` (the sum of the earlier rungs' ``settle + seconds``) for ``settle +
seconds``; its window is ``[T_k + settle, T_k + settle + seconds)`` and a request belongs to the
rung whose window holds its END time. The load is the lab's (GSP777 locust/tasks.py): one
``HttpUser`` per user (one keep-alive connection each, its requests session), ``wait_time =
between(a, b)`` drawn from the simulator's own per-user streams (:func:`sim.loadgen.wait_time`,
same seed, same waits), posting the lab's ``serving_preprocess`` body.

Locust runs in a child (``python -m cloud.ladder SPEC.json``, :func:`child_main`) because
importing it monkey-patches the interpreter with gevent. The child writes every request as one
JSON line ``[end_s, latency_s, ok, error]`` (times from the ladder's t=0) to a file the parent
cuts into windows. Rungs start from the child's own clock rather than a ``LoadTestShape``:
Locust's shape worker polls ``tick()`` once a second (locust/runners.py ``shape_worker``), which
would move rung boundaries by up to a second. A rung that adds users spawns them evenly
``1/spawn_rate`` apart with ``spawn_rate = users`` (so all exist within a second), as
:func:`sim.loadgen.locust_runner` does; a rung with fewer users stops the surplus at once.

The server's CPU comes from a :class:`CpuSource` sampled by the parent at each window's start
and end: :mod:`sim.serving.calibrate.cpu`'s ``ProcessCpu`` (a local server's process tree) or
``CgroupCpu`` (a container); for a local server, ``OthersCpu`` too: what the rest of the
machine (Locust, this process, the OS) burnt meanwhile.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from cloud.errors import CloudError
from cloud.load import predict_path
from sim.serving.calibrate.cpu import CpuError, CpuSource
from sim.serving.fidelity import Rung, Step

START_LEAD = 0.3
"""Seconds between the child announcing t=0 and t=0, so the parent's CPU sampler is ready."""
ANSWER_CHARS = 500


def spawn_rate(step: Step) -> float:
    """Users per second a rung adds its users at: all of them within its first second."""
    return float(step.users)


def windows(steps: Sequence[Step]) -> list[tuple[float, float, float]]:
    """(rung start, window start, window end) per rung, seconds since the ladder's t=0."""
    out = []
    at = 0.0
    for step in steps:
        out.append((at, at + step.settle, at + step.settle + step.seconds))
        at += step.settle + step.seconds
    return out


# --- CPU ------------------------------------------------------------------------------------


_Sample = tuple[float, float] | None
"""(monotonic time, CPU seconds), None where the read failed."""


def _sample(cpu: CpuSource) -> _Sample:
    """(monotonic time, CPU seconds), the time taken halfway through the read."""
    before = time.monotonic()
    try:
        value = cpu.seconds()
    except (CloudError, CpuError, OSError):  # the rung's CPU is then unmeasured
        return None
    return (before + time.monotonic()) / 2, value


class _CpuSampler(threading.Thread):
    """Samples each of ``sources`` at each window's start and end (monotonic ``t0`` +
    offsets)."""

    def __init__(
        self, sources: Sequence[CpuSource], t0: float, spans: list[tuple[float, float, float]]
    ):
        super().__init__(name="ladder-cpu", daemon=True)
        self.sources, self.t0, self.spans = sources, t0, spans
        self.samples: list[list[tuple[_Sample, _Sample]]] = [[] for _ in sources]
        self.stop = threading.Event()

    def run(self) -> None:
        for _, start, end in self.spans:
            pairs: list[list[_Sample]] = [[] for _ in self.sources]
            for at in (start, end):
                if self.stop.wait(max(0.0, self.t0 + at - time.monotonic())):
                    return
                for pair, source in zip(pairs, self.sources, strict=True):
                    pair.append(_sample(source))
            for samples, (first, last) in zip(self.samples, pairs, strict=True):
                samples.append((first, last))

    def cores(self, k: int, source: int = 0) -> float | None:
        """Source ``source``'s cores over window ``k`` (None where unmeasured)."""
        samples = self.samples[source]
        if k >= len(samples):
            return None
        first, last = samples[k]
        if first is None or last is None or last[0] <= first[0]:
            return None
        return (last[1] - first[1]) / (last[0] - first[0])


# --- the endpoint ---------------------------------------------------------------------------


def _answer(err: urllib.error.HTTPError) -> str:
    try:
        text = err.read().decode(errors="replace")
    except OSError:
        text = ""
    return text.strip()[:ANSWER_CHARS] or err.reason


def _call(url: str, *, data: bytes | None, timeout: float) -> Any:
    """The JSON a 200 answer carries; CloudError naming ``url`` and the answer otherwise."""
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    method = "POST" if data else "GET"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        raise CloudError(f"{method} {url} answered HTTP {err.code}: {_answer(err)}") from None
    except urllib.error.URLError as err:
        raise CloudError(
            f"cannot reach the model server: {method} {url}: {err.reason} "
            "(is it running, and is the URL right?)"
        ) from None
    except (TimeoutError, OSError) as err:
        raise CloudError(f"{method} {url}: no answer within {timeout:g} s ({err})") from None
    try:
        return json.loads(text)
    except ValueError:
        raise CloudError(
            f"{method} {url} answered HTTP 200 but not JSON: {text[:ANSWER_CHARS]}"
        ) from None


def check_endpoint(
    url: str, model: str, version: str | None, body: str, timeout: float = 30.0
) -> None:
    """Fail before any load with what the server said: the model's status must list an
    AVAILABLE version, and one predict with ``body`` must answer 200 with predictions."""
    base = url.rstrip("/")
    if not re.match(r"^https?://[^/]+", base):
        raise CloudError(f"the model server URL must be http(s)://HOST[:PORT], got {url!r}")
    status_url = f"{base}/v1/models/{model}" + (f"/versions/{version}" if version else "")
    status = _call(status_url, data=None, timeout=timeout)
    versions = status.get("model_version_status") if isinstance(status, dict) else None
    if not versions or not any(v.get("state") == "AVAILABLE" for v in versions):
        raise CloudError(
            f"GET {status_url}: model {model!r} has no AVAILABLE version: "
            f"{json.dumps(status)[:ANSWER_CHARS]}"
        )
    predict_url = base + predict_path(model, version)
    answer = _call(predict_url, data=body.encode(), timeout=timeout)
    if not isinstance(answer, dict) or not ({"predictions", "outputs"} & set(answer)):
        raise CloudError(
            f"POST {predict_url} answered HTTP 200 without predictions: "
            f"{json.dumps(answer)[:ANSWER_CHARS]}"
        )


# --- the ladder (parent) --------------------------------------------------------------------


@dataclass(frozen=True)
class LadderSpec:
    """Everything the child needs, as JSON."""

    host: str
    path: str
    body: str
    steps: list[dict[str, Any]]
    wait: tuple[float, float]
    seed: int
    timeout: float
    requests_file: str

    @classmethod
    def read(cls, path: Path) -> LadderSpec:
        data = json.loads(path.read_text())
        data["wait"] = tuple(data["wait"])
        return cls(**data)


Record = tuple[float, float, bool, str | None]
"""One request: (end since t=0, latency, ok, error text)."""


def cut(
    steps: Sequence[Step], records: Sequence[Record], cpu: _CpuSampler | None = None
) -> list[Rung]:
    """One :class:`Rung` per rung from the child's records, by each request's end time."""
    spans = windows(steps)
    starts = [start for _, start, _ in spans]
    ok: list[list[float]] = [[] for _ in steps]
    failed = [0] * len(steps)
    errors: list[dict[str, int]] = [{} for _ in steps]
    for end, latency, success, error in records:
        k = bisect.bisect_right(starts, end) - 1
        if k < 0 or end >= spans[k][2]:
            continue  # in a settle period, or after the last window
        if success:
            ok[k].append(latency)
        else:
            failed[k] += 1
            text = error or "unknown error"
            errors[k][text] = errors[k].get(text, 0) + 1
    results = []
    for k, (step, (_, start, end)) in enumerate(zip(steps, spans, strict=True)):
        results.append(
            Rung(
                users=step.users,
                start=start,
                end=end,
                ok=len(ok[k]),
                failed=failed[k],
                latencies=ok[k],
                cpu_cores=None if cpu is None else cpu.cores(k),
                others_cores=None if cpu is None or len(cpu.sources) < 2 else cpu.cores(k, 1),
                errors=dict(sorted(errors[k].items(), key=lambda item: -item[1])),
            )
        )
    return results


def _read_records(path: Path) -> list[Record]:
    records: list[Record] = []
    if not path.exists():
        return records
    with path.open() as lines:
        for line in lines:
            try:
                end, latency, success, error = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            records.append((float(end), float(latency), bool(success), error))
    return records


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class _Child:
    """The Locust child: its process, its announced t=0 and its stdout records."""

    proc: subprocess.Popen[str]
    log: Path
    t0: float | None = None
    done: dict[str, Any] | None = None
    started: threading.Event = field(default_factory=threading.Event)

    def read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("kind") == "started":
                self.t0 = float(record["t0"])
                self.started.set()
            elif record.get("kind") == "done":
                self.done = record
        self.started.set()

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def run_ladder(
    url: str,
    model: str,
    steps: Sequence[Step],
    *,
    wait: tuple[float, float] = (0.8, 0.9),
    body: str,
    version: str | None = "1",
    cpu: CpuSource | None = None,
    others: CpuSource | None = None,
    seed: int = 1,
    workdir: Path,
    timeout: float = 30.0,
    start_timeout: float = 60.0,
) -> list[Rung]:
    """Run the ladder against ``url`` and return one :class:`Rung` per rung.

    Checks the endpoint first (:func:`check_endpoint`), so a wrong URL or model fails before
    any load. ``cpu`` is the server's CPU, ``others`` the CPU the rest of its machine burns
    (the load generator among them: a local server shares the machine with it).
    ``timeout`` is each request's client timeout; ``workdir`` receives the child's spec, its
    log (ladder-locust.log) and its requests (ladder-requests.jsonl).
    """
    steps = list(steps)
    if not steps:
        raise CloudError("the ladder has no steps")
    low, high = wait
    if not 0 <= low <= high:
        raise CloudError(f"wait must be (min, max) with 0 <= min <= max, got {wait}")
    host = url.rstrip("/")
    check_endpoint(host, model, version, body, timeout)
    workdir.mkdir(parents=True, exist_ok=True)
    requests_file = workdir / "ladder-requests.jsonl"
    requests_file.unlink(missing_ok=True)
    spec = LadderSpec(
        host=host,
        path=predict_path(model, version),
        body=body,
        steps=[asdict(s) for s in steps],
        wait=(float(low), float(high)),
        seed=seed,
        timeout=timeout,
        requests_file=str(requests_file),
    )
    spec_path = workdir / "ladder-spec.json"
    spec_path.write_text(json.dumps(asdict(spec)))
    log_path = workdir / "ladder-locust.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloud.ladder", str(spec_path)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    child = _Child(proc, log_path)
    assert proc.stdout is not None
    reader = threading.Thread(target=child.read, args=(proc.stdout,), daemon=True)
    reader.start()
    sampler: _CpuSampler | None = None
    spans = windows(steps)
    try:
        if not child.started.wait(start_timeout) or child.t0 is None:
            raise CloudError(
                f"Locust did not start within {start_timeout:.0f} s; {log_path} ends with:\n"
                + _tail(log_path)
            )
        if cpu is not None:
            sources = [cpu] if others is None else [cpu, others]
            sampler = _CpuSampler(sources, child.t0, spans)
            sampler.start()
        left = child.t0 + spans[-1][2] - time.monotonic()
        try:
            proc.wait(max(0.0, left) + timeout + 30.0)
        except subprocess.TimeoutExpired:
            raise CloudError(f"the Locust child did not finish; see {log_path}") from None
        reader.join(timeout=5)
        if proc.returncode != 0 or child.done is None or child.done.get("stopped"):
            raise CloudError(
                f"the Locust child failed (exit {proc.returncode}); {log_path} ends with:\n"
                + _tail(log_path)
            )
        if sampler is not None:
            sampler.join(timeout=5)
    finally:
        if sampler is not None:
            sampler.stop.set()
        child.stop()
    return cut(steps, _read_records(requests_file), sampler)


# --- a local TF Serving stand-in on a SavedModel ----------------------------------------------


_SERVING_LINE = re.compile(r"serving \S+ at (https?://\S+)")


@dataclass
class LocalServer:
    """``scalelab serve --model-path`` in its own process: TF's CPU is that process's alone
    (measurable with ``ProcessCpu``), and gevent and TensorFlow never share a process."""

    process: subprocess.Popen[str]
    url: str = ""
    output: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.output.append(line.rstrip())
            match = _SERVING_LINE.search(line)
            if match and not self.url:
                self.url = match.group(1)
                self.ready.set()
        self.ready.set()

    def close(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def start_local_server(
    saved_model: Path,
    model: str,
    threads: int,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 180.0,
) -> LocalServer:
    """Serve ``saved_model`` (a TF Serving base path, ``BASE/<version>/``) as ``model`` with
    ``threads`` TF intra-op/inter-op threads, in a subprocess; returns once the model's status
    answers AVAILABLE. Port 0 picks a free port (read back from the server's first line)."""
    command = [
        sys.executable,
        "-m",
        "sim.cli",
        "serve",
        "--model-path",
        str(saved_model),
        "--model-name",
        model,
        "--threads",
        str(threads),
        "--host",
        host,
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = LocalServer(proc)
    assert proc.stderr is not None
    threading.Thread(target=server._read, args=(proc.stderr,), daemon=True).start()
    deadline = time.monotonic() + startup_timeout

    def failed(why: str) -> CloudError:
        server.close()
        output = "\n".join(server.output)
        return CloudError(f"the local model server ({' '.join(command)}) {why}; it said:\n{output}")

    if not server.ready.wait(startup_timeout) or not server.url:
        code = proc.poll()
        raise failed(
            f"exited with {code}" if code is not None else f"did not start in {startup_timeout} s"
        )
    status_url = f"{server.url}/v1/models/{model}"
    while True:
        try:
            status = _call(status_url, data=None, timeout=5.0)
            states = [v.get("state") for v in status.get("model_version_status", [])]
            if "AVAILABLE" in states:
                return server
            why = f"answered {json.dumps(status)[:ANSWER_CHARS]}"
        except CloudError as err:
            why = str(err)
        if proc.poll() is not None:
            raise failed(f"exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise failed(f"was not AVAILABLE within {startup_timeout} s (last: {why})")
        time.sleep(0.2)


# --- the child ------------------------------------------------------------------------------


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def child_main(spec_path: str) -> int:  # pragma: no cover - runs in the child (tested e2e)
    """Run the ladder in ``spec_path``: JSON lines on stdout (started, rung..., done) and one
    line per request in the spec's requests file."""
    spec = LadderSpec.read(Path(spec_path))
    steps = [Step(**s) for s in spec.steps]

    import gevent
    import gevent.event
    from locust import HttpUser, task
    from locust.env import Environment
    from locust.stats import StatsError

    from sim.loadgen import wait_time
    from sim.scenario import WaitTime

    waits = WaitTime(between=spec.wait)
    headers = {"Content-Type": "application/json"}
    numbers = iter(range(10**9))
    parent = os.getppid()
    stopping = gevent.event.Event()
    out = open(spec.requests_file, "w", buffering=1 << 16)  # noqa: SIM115 - closed below
    t0 = time.monotonic() + START_LEAD

    def on_request(response_time: float, exception: Exception | None = None, **_: Any) -> None:
        # Locust's response_time: ms from sending to the body read (locust/clients.py).
        end = time.monotonic() - t0
        error = None if exception is None else StatsError.parse_error(exception)
        out.write(json.dumps([round(end, 6), round(response_time / 1000, 6), error is None, error]))
        out.write("\n")

    class LadderUser(HttpUser):
        host = spec.host

        def __init__(self, environment: Any) -> None:
            super().__init__(environment)
            self._wait = wait_time(waits, spec.seed, next(numbers))

        def wait_time(self) -> float:
            return self._wait()

        @task
        def predict(self) -> None:
            with self.client.post(
                spec.path,
                data=spec.body,
                headers=headers,
                timeout=spec.timeout,
                name=spec.path,
                catch_response=True,
            ) as response:
                # Status 0: no answer at all; Locust reports the exception itself.
                if response.status_code not in (0, 200):
                    text = response.text[:200] if response.text else ""
                    response.failure(f"HTTP {response.status_code}: {text}")

    env = Environment(user_classes=[LadderUser])
    env.events.request.add_listener(on_request)
    runner = env.create_local_runner()
    gevent.signal_handler(signal.SIGTERM, stopping.set)

    def until(offset: float) -> bool:
        """Sleep until ``t0 + offset``; True when told to stop first."""
        return stopping.wait(max(0.0, t0 + offset - time.monotonic()))

    def watch_parent() -> None:
        while not stopping.wait(1.0):
            if os.getppid() != parent:
                stopping.set()

    gevent.spawn(watch_parent)
    _emit({"kind": "started", "t0": t0})
    current = 0
    for k, (step, (at, _, _)) in enumerate(zip(steps, windows(steps), strict=True)):
        if until(at):
            break
        _emit({"kind": "rung", "index": k, "users": step.users, "at": time.monotonic() - t0})
        rate = spawn_rate(step)
        if step.users <= current:
            runner.start(step.users, spawn_rate=rate)
        for n in range(current + 1, step.users + 1):
            if until(at + (n - current - 1) / rate):
                break
            runner.start(n, spawn_rate=rate)  # one more user, at once
        current = step.users
    stopped = stopping.is_set() or until(windows(steps)[-1][2])
    runner.quit()
    out.close()
    _emit({"kind": "done", "stopped": stopped, "users": current})
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(child_main(sys.argv[1]))
