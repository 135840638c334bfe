"""One measuring process: a SavedModel with a fixed number of threads, up its concurrency ladder.

Run as ``python -m sim.serving.calibrate.worker CONFIG_JSON`` by
:mod:`sim.serving.calibrate.local`. It pins itself to ``threads`` CPUs and sets TensorFlow's
intra- and inter-op pools to ``threads`` before TensorFlow starts (they cannot change
afterwards, as in TF Serving, which sizes both pools from the machine's cores), loads the model,
then climbs the batch-1 concurrency ladder (:mod:`sim.serving.calibrate.ladder`) with
closed-loop callers (:class:`Callers`), measures the after-idle cost when the config asks
(``idle_rounds``, :mod:`sim.serving.calibrate.idle`) and each batch > 1 at concurrency 1.
Each point's throughput is requests completed over the window, its CPU the process's CPU time
(user + sys) over the window, in cores.

Other processes' CPU use is measured over every window (``/proc/stat`` minus this process); a
window during which they used more than ``quiet_cores`` is measured again while the worker's
``retry_seconds`` last, and the quietest attempt is kept.

With ``served`` in its config it measures nothing else and stays up, the model loaded, until its
stdin closes: each line there asks for :func:`lone_pairs`, a lone request in process and through
a served copy's REST API turn about, then :func:`served_pairs`, the plateau both ways window
after window, then :func:`served_tail` (``scalelab fidelity``), and is answered by a ``done``
line.

Results go to stdout as lines ``@@scalelab {json}``; anything else there is ignored.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.serving.calibrate import ladder, stats
from sim.serving.calibrate.cpu import busy_cpu_seconds
from sim.serving.calibrate.host import usable_cpus
from sim.serving.calibrate.idle import after_idle

MARK = "@@scalelab "
SPREAD_TOLERANCE = 0.05
"""A window is extended while its repeats' p50 or p95 differ by more than this (relative)."""

METHOD = {
    "clients": "closed loop, no think time: each caller sends its next request as soon as "
    "the previous one answers",
    "warmup": "the callers keep calling from one concurrency to the next; at each point every "
    "caller's first request started after the step is discarded, and the window starts when "
    "the last of them completes",
    "window": "from that completion to the last completion once window_s have passed (longer "
    "for min_requests completions at the warm-up latency); it is split into `repeats` equal "
    f"sub-windows and doubled, up to max_window_s, while their p50 or p95 differ by more than "
    f"{SPREAD_TOLERANCE:.0%} (relative range); points[].spread is the final window's",
    "throughput": "requests (whole batches) completed in the window over its length",
    "spread": "(max - min) / median of the sub-windows' p50, and of their p95",
}
"""How a point is measured, in words, for a profile's provenance.method."""


def emit(event: str, **fields: Any) -> None:
    print(MARK + json.dumps({"event": event, **fields}), flush=True)


@dataclass(frozen=True)
class Window:
    """What one point's measuring window saw: it runs from one completion to another, so the
    throughput counts whole requests over the time they took."""

    latencies: list[float]
    """Latencies of the requests that completed in the window."""
    cpu_seconds: float | None
    """CPU the server burned over the window (None where there is no CPU source)."""
    elapsed: float
    spread: dict[str, float] | None
    """Relative range of the sub-windows' p50 and p95 (None with fewer than 2 sub-windows)."""
    repeats: int
    warm_latency: float
    """Median latency of the callers' warm-up requests (discarded)."""
    background_cores: float | None = None
    """CPU other processes used during the window, in cores (None where unknown)."""
    extended: int = 0
    """How many times the window was doubled because its repeats disagreed."""

    @property
    def throughput(self) -> float:
        """Requests completed per second."""
        return len(self.latencies) / self.elapsed

    @property
    def cpu_cores(self) -> float | None:
        """CPU-seconds over window seconds."""
        return None if self.cpu_seconds is None else self.cpu_seconds / self.elapsed


def spread_notices(points: list[dict[str, Any]], max_seconds: float) -> list[str]:
    """A warning when some points' repeats still disagreed at the longest window."""
    wide = [
        p for p in points if max((p.get("spread") or {}).values(), default=0) > SPREAD_TOLERANCE
    ]
    if not wide:
        return []
    worst = max(max(p["spread"].values()) for p in wide)
    return [
        f"{len(wide)} of {len(points)} points' repeats still differed by more than "
        f"{SPREAD_TOLERANCE:.0%} (up to {worst:.0%}, see points[].spread) after extending the "
        f"window to {max_seconds:g} s: raise --max-seconds for steadier figures"
    ]


@dataclass(frozen=True)
class _Done:
    caller: int
    start: float
    end: float
    cpu: float
    """The CPU clock when the request completed."""


class Callers:
    """Closed-loop callers with no think time that keep calling from one window to the next.

    :meth:`measure` adds callers up to the concurrency asked for (the ladder only climbs, so a
    caller is never taken away), waits until every caller has completed a request it started
    after that (warm-up, discarded), then measures a window. Use as a context manager: leaving
    it stops the callers and waits for their requests in flight.
    """

    def __init__(
        self,
        call: Callable[[], object],
        *,
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] | None = time.process_time,
        busy_clock: Callable[[], float | None] | None = busy_cpu_seconds,
    ) -> None:
        self.call = call
        self.clock = clock
        self.cpu_clock = cpu_clock
        self.busy_clock = busy_clock
        self.lock = threading.Lock()
        self.done: list[_Done] = []
        self.failures: list[BaseException] = []
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> Callers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _caller(self, me: int) -> None:
        cpu_clock = self.cpu_clock
        try:
            while not self.stop.is_set():
                start = self.clock()
                self.call()
                end = self.clock()
                cpu = cpu_clock() if cpu_clock is not None else 0.0
                with self.lock:
                    self.done.append(_Done(me, start, end, cpu))
        except BaseException as error:  # reported by the main thread
            self.failures.append(error)
            self.stop.set()

    def _check(self) -> None:
        if self.failures:
            raise self.failures[0]

    def _sleep_until(self, when: float) -> None:
        while (left := when - self.clock()) > 0:
            self._check()
            time.sleep(min(left, 0.02))
        self._check()

    def _since(self, index: int) -> list[_Done]:
        with self.lock:
            return self.done[index:]

    def measure(
        self,
        concurrency: int,
        *,
        seconds: float,
        repeats: int,
        min_requests: int,
        max_seconds: float,
        tolerance: float = SPREAD_TOLERANCE,
        settle: float = 0.0,
    ) -> Window:
        """Measure one window at ``concurrency`` callers.

        The window starts when the last caller completes its warm-up request (or, with
        ``settle`` > 0, at the first completion ``settle`` seconds after that: a CPU source
        that lags the server reflects the new load by then) and lasts
        ``seconds``, longer when needed for ``min_requests`` completions at the warm-up latency,
        never longer than ``max_seconds``. It is split into ``repeats`` equal sub-windows: while
        the relative range of their p50 or of their p95 exceeds ``tolerance``, the window
        doubles, up to ``max_seconds``. It ends at the last completion, so the throughput is
        the requests completed after the start over the time to the last of them.
        """
        if concurrency < len(self.threads):
            raise ValueError(f"cannot go down from {len(self.threads)} to {concurrency} callers")
        self._check()
        with self.lock:
            base = len(self.done)
        since = self.clock()
        for me in range(len(self.threads), concurrency):
            thread = threading.Thread(target=self._caller, args=(me,), daemon=True)
            self.threads.append(thread)
            thread.start()
        patience = max(60.0, 4 * max_seconds)
        firsts: dict[int, _Done] = {}
        seen = base
        while len(firsts) < concurrency:
            if self.clock() - since > patience:
                self.stop.set()
                raise TimeoutError(
                    f"only {len(firsts)} of {concurrency} callers finished a request in "
                    f"{patience:.0f} s"
                )
            time.sleep(0.002)
            self._check()
            fresh = self._since(seen)
            seen += len(fresh)
            for done in fresh:
                if done.start >= since and done.caller not in firsts:
                    firsts[done.caller] = done
        begin = max(firsts.values(), key=lambda d: d.end)
        if settle > 0:
            self._sleep_until(begin.end + settle)
            begin = self._first_after(seen, begin.end + settle, since, patience)
        t0 = begin.end
        main0 = (self.clock(), self._cpu(), self.busy_clock() if self.busy_clock else None)
        warm = sorted(d.end - d.start for d in firsts.values())[concurrency // 2]
        target = min(max(seconds, min_requests / concurrency * warm), max_seconds)
        extended = 0
        while True:
            self._sleep_until(t0 + target)
            window = [d for d in self._since(base) if d.start >= since and d.end > t0]
            elapsed = self.clock() - t0
            if not window or (len(window) < min_requests and elapsed < max_seconds):
                if elapsed > patience:
                    raise TimeoutError(f"no request completed in {elapsed:.0f} s")
                target = elapsed + 0.005
                continue
            last = max(window, key=lambda d: d.end)
            spread = stats.sub_window_spread(
                [(d.end, d.end - d.start) for d in window], t0, last.end, repeats
            )
            disagree = repeats > 1 and (spread is None or max(spread.values()) > tolerance)
            if disagree and target < max_seconds:
                target = min(2 * target, max_seconds)
                extended += 1
                continue
            break
        main1 = (self.clock(), self._cpu(), self.busy_clock() if self.busy_clock else None)
        background = None
        if main0[2] is not None and main1[2] is not None:
            own = main1[1] - main0[1] if self.cpu_clock is not None else 0.0
            background = max(0.0, (main1[2] - main0[2] - own) / (main1[0] - main0[0]))
        return Window(
            latencies=[d.end - d.start for d in window],
            cpu_seconds=last.cpu - begin.cpu if self.cpu_clock is not None else None,
            elapsed=last.end - t0,
            spread=spread,
            repeats=repeats,
            warm_latency=warm,
            background_cores=background,
            extended=extended,
        )

    def _cpu(self) -> float:
        return self.cpu_clock() if self.cpu_clock is not None else 0.0

    def _first_after(self, index: int, when: float, since: float, patience: float) -> _Done:
        """The first completion at or after ``when`` of a request started after ``since``."""
        while True:
            after = [d for d in self._since(index) if d.start >= since and d.end >= when]
            if after:
                return min(after, key=lambda d: d.end)
            if self.clock() - when > patience:
                raise TimeoutError(f"no request completed in {patience:.0f} s")
            time.sleep(0.002)
            self._check()


def quietest(
    callers: Callers,
    concurrency: int,
    settings: dict[str, Any],
    budget: list[float],
    on_retry: Callable[[Window], None] = lambda window: None,
) -> Window:
    """Measure a window with ``settings`` (seconds, repeats, min_requests, max_seconds and
    optionally tolerance and quiet_cores); while other processes used more than
    ``quiet_cores`` during it and ``budget[0]`` seconds of re-measuring are left, measure again.
    The quietest window wins."""
    best: Window | None = None
    while True:
        window = callers.measure(
            concurrency,
            seconds=settings["seconds"],
            repeats=settings["repeats"],
            min_requests=settings["min_requests"],
            max_seconds=settings["max_seconds"],
            tolerance=settings.get("tolerance", SPREAD_TOLERANCE),
        )
        if best is None or (window.background_cores or 0) < (best.background_cores or 0):
            best = window
        noisy = (best.background_cores or 0) > settings.get("quiet_cores", 0.25)
        cost = window.elapsed + 2 * window.warm_latency
        if not noisy or cost > budget[0]:
            return best
        budget[0] -= cost
        on_retry(window)


def served_pairs(
    inside: Callable[[], object],
    outside: Callable[[], object],
    *,
    concurrency: int,
    callers: int,
    seconds: float,
    pairs: int,
    server_cpu: Callable[[], float] | None = None,
) -> list[dict[str, float]]:
    """``pairs`` pairs of plateau windows: ``concurrency`` closed-loop callers of ``inside`` (the
    model in this process) and ``callers`` of ``outside`` (a predict through the served copy's
    REST API), one side idle while the other runs, in the order AB BA AB ... so that a machine
    drifting steadily within a pair cancels over two. This VM's plateau moves by 5-10% from one
    10 s window to the next, and an in-process pass a minute before a REST window read the
    served plateau at 0.73 to 1.02 of its own; 14 alternating pairs of 8 s read it at 0.80 to
    1.08, mean 0.96. Each pair also has each side's server CPU (``server_cpu``: the served
    copy's process; this process's for the side in it) and the cores this process spent calling
    the API (the client's share of the machine)."""
    found = []
    for k in range(pairs):
        sides = [
            ("in_process", inside, concurrency, time.process_time),
            ("rest", outside, callers, server_cpu),
        ]
        pair: dict[str, float] = {}
        for name, call, n, cpu in sides[:: -1 if k % 2 else 1]:
            own0, wall0 = time.process_time(), time.perf_counter()
            with Callers(call, cpu_clock=cpu, busy_clock=None) as running:
                window = running.measure(
                    n, seconds=seconds, repeats=1, min_requests=1, max_seconds=seconds
                )
            pair[f"{name}_rps"] = window.throughput
            if window.cpu_cores is not None:
                pair[f"{name}_cpu_cores"] = window.cpu_cores
            if name == "rest":
                own = time.process_time() - own0
                pair["client_cpu_cores"] = own / (time.perf_counter() - wall0)
            if hasattr(call, "close"):
                call.close()
        emit("pair", **pair)
        found.append(pair)
    return found


def lone_pairs(
    inside: Callable[[], object],
    outside: Callable[[], object],
    *,
    count: int,
    waits: tuple[float, float],
    seed: int,
) -> list[dict[str, float]]:
    """``count`` pairs of lone requests, one to the model in this process and one through the
    served copy's REST API, in the order AB BA ..., each pair after a pause drawn from
    ``waits`` (as a lone Locust user draws its wait): what the served path adds to a lone
    request, read seconds apart so the machine's drift cancels. Measured a minute after its
    calibration pass instead, one round read it at 11.7 ms and the next at 57.6 ms while the
    lone request through the API before and after the ladders read 143.9 and 144.5 ms (s13
    a1). Each side's engine idles at least one pause before its request (as in a 1-user rung),
    at most a pause and two of the other side's requests; assumption: the after-idle cost is
    flat over that range (measured flat within 1% from 0.3 s to 0.9 s on this VM). Two
    requests a side warm up first and are not kept. ``outside`` is a
    :class:`RestPredict` (http.client), not the requests Session a Locust ``HttpUser`` sends
    with: interleaved, 40 requests each, the two read medians within 6 ms of each other
    (114-120 ms, session 9)."""
    pauses = random.Random(seed)
    sides = [("in_process_s", inside), ("rest_s", outside)]
    for _ in range(2):
        for _, call in sides:
            call()
    found = []
    for k in range(count):
        pair: dict[str, float] = {}
        time.sleep(pauses.uniform(*waits))
        for name, call in sides[:: -1 if k % 2 else 1]:
            started = time.perf_counter()
            call()
            pair[name] = time.perf_counter() - started
        emit("lone", **pair)
        found.append(pair)
    if hasattr(outside, "close"):
        outside.close()
    return found


def served_tail(outside: Callable[[], object], *, callers: int, seconds: float) -> dict[str, Any]:
    """A closed loop of ``callers`` through the served copy's REST API with no think time, one
    window: its latencies. Run at the REST handlers' count, every handler is busy and none
    waits in the pool's queue, so the spread is the served requests' own while more are in
    flight than the inter-op pool runs at once (there FIFO queueing adds a near-constant wait
    and hides it: at 12 callers p95 / p50 read 1.33-1.40 against 1.68-1.69 at 7, s14)."""
    with Callers(outside, cpu_clock=None, busy_clock=None) as running:
        window = running.measure(
            callers, seconds=seconds, repeats=1, min_requests=1, max_seconds=seconds
        )
    if hasattr(outside, "close"):
        outside.close()
    return {
        "callers": callers,
        "throughput_rps": window.throughput,
        "latencies_s": [round(v, 6) for v in window.latencies],
    }


class RestPredict:
    """A predict through a TF Serving REST API, each calling thread on its own keep-alive
    connection (as Locust's users); :meth:`close` ends them (the served copy's handler threads
    with them)."""

    def __init__(self, url: str, model: str, body: bytes) -> None:
        from sim.serving.calibrate.endpoint import _Client  # it imports this module

        self.client = _Client(url, timeout=60.0)
        self.where = f"POST {url}/v1/models/{model}:predict"
        self.path = f"/v1/models/{model}:predict"
        self.body = body

    def __call__(self) -> None:
        status, answer = self.client.request("POST", self.path, self.body)
        if status != 200:
            text = answer.decode("utf-8", errors="replace")[:300]
            raise RuntimeError(f"{self.where} answered HTTP {status}: {text}")

    def close(self) -> None:
        self.client.close()


def served_copy(
    served: dict[str, Any], model_call: Callable[[], object], body: bytes
) -> dict[str, Any]:
    """One request of a served-copy worker: ``lone`` pairs, then the plateau ``pairs``, then
    the served ``tail`` at each count of ``tail_callers``."""
    from sim.serving.calibrate.cpu import ProcessCpu

    lone = []
    if served.get("lone"):
        lone = lone_pairs(
            model_call,
            RestPredict(served["url"], served["model"], body),
            count=served["lone"],
            waits=tuple(served["waits"]),
            seed=served["seed"],
        )
    found = []
    if served.get("pairs"):
        server = ProcessCpu(served["server_pid"]) if served.get("server_pid") else None
        found = served_pairs(
            model_call,
            RestPredict(served["url"], served["model"], body),
            concurrency=served["concurrency"],
            callers=served["callers"],
            seconds=served["seconds"],
            pairs=served["pairs"],
            server_cpu=server.seconds if server is not None else None,
        )
    tail = [
        served_tail(
            RestPredict(served["url"], served["model"], body),
            callers=callers,
            seconds=served["tail_seconds"],
        )
        for callers in served.get("tail_callers", [])
    ]
    return {"lone": lone, "pairs": found, "tail": tail}


def main(config: dict[str, Any]) -> None:
    threads = int(config["threads"])
    cpus = usable_cpus()
    if hasattr(os, "sched_setaffinity") and threads < len(cpus):
        os.sched_setaffinity(0, set(cpus[:threads]))
    pinned = min(threads, len(cpus))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from sim.serving.calibrate.model import require_tensorflow

    tf = require_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    started = time.perf_counter()
    loaded = tf.saved_model.load(config["saved_model"])
    model_load_s = time.perf_counter() - started
    signature = config["signature"]
    fn = loaded.signatures[signature]
    (arg,) = fn.structured_input_signature[1]
    jpeg = Path(config["image"]).read_bytes()

    def payload(batch: int) -> Any:
        if signature == "serving_preprocess":
            return tf.constant([jpeg] * batch)
        return tf.random.stateless_uniform([batch, 224, 224, 3], seed=[0, batch])

    one = payload(1)
    started = time.perf_counter()
    answer = fn(**{arg: one})
    first = time.perf_counter() - started
    outputs = {key: [int(d) for d in value.shape] for key, value in sorted(answer.items())}
    warm_runs = []
    for _ in range(3):
        started = time.perf_counter()
        fn(**{arg: one})
        warm_runs.append(time.perf_counter() - started)
    warm = sorted(warm_runs)[1]
    cpu0 = time.process_time()
    idle_seconds = config.get("idle_seconds", 1.0)
    time.sleep(idle_seconds)
    idle = (time.process_time() - cpu0) / idle_seconds
    emit(
        "loaded",
        threads=threads,
        cpus=pinned,
        model_load_s=model_load_s,
        first_request_s=first,
        warm_request_s=warm,
        idle_cpu_cores=idle,
        outputs=outputs,
    )
    if config.get("served"):
        from sim.serving.calibrate.payload import rest_body

        body = rest_body(jpeg, 1, signature)

        def model_call() -> None:
            fn(**{arg: one})

        # one request a line on stdin, each answered by a "done"; the model stays loaded in
        # between (a worker start costs a TensorFlow import and a model load, ~13 s here)
        for line in sys.stdin:
            emit("done", threads=threads, **served_copy(json.loads(line), model_call, body))
        return
    busy0, own0, wall0 = busy_cpu_seconds(), time.process_time(), time.perf_counter()
    budget = [float(config.get("retry_seconds", 0.0))]

    def record(window: Window, concurrency: int, batch: int) -> None:
        assert window.cpu_seconds is not None
        point = stats.point(
            threads=threads,
            concurrency=concurrency,
            batch=batch,
            latencies=window.latencies,
            throughput_rps=window.throughput,
            cpu_cores=window.cpu_seconds / window.elapsed,
            spread=window.spread,
            repeats=window.repeats if window.repeats > 1 else None,
            qs=config["quantiles"],
        )
        if window.background_cores is not None:
            point["background_cpu_cores"] = window.background_cores
        emit("point", point=point, elapsed=window.elapsed, extended=window.extended)

    def retry(concurrency: int, batch: int) -> Callable[[Window], None]:
        def report(window: Window) -> None:
            emit(
                "retry",
                threads=threads,
                concurrency=concurrency,
                batch=batch,
                background_cpu_cores=window.background_cores,
            )

        return report

    def call_with(data: Any) -> Callable[[], object]:
        return lambda: fn(**{arg: data})

    with Callers(call_with(one)) as callers:

        def step(concurrency: int) -> float:
            window = quietest(callers, concurrency, config, budget, retry(concurrency, 1))
            record(window, concurrency, 1)
            return window.throughput

        measured = ladder.climb(
            step,
            cap=int(config.get("max_concurrency", ladder.MAX_CONCURRENCY)),
            fixed=config.get("concurrency"),
        )
    if config.get("idle_rounds"):  # with the callers gone: the server must be idle
        rounds = int(config["idle_rounds"])
        emit("after_idle", **after_idle(call_with(one), rounds=rounds, cpu=time.process_time))
    for batch in config.get("batch", []):
        with Callers(call_with(payload(batch))) as callers:
            window = quietest(callers, 1, config, budget, retry(1, batch))
        record(window, 1, batch)
    busy1 = busy_cpu_seconds()
    background = None
    if busy0 is not None and busy1 is not None:
        others = (busy1 - busy0) - (time.process_time() - own0)
        background = max(0.0, others / (time.perf_counter() - wall0))
    emit(
        "done",
        threads=threads,
        background_cpu_cores=background,
        ladder=measured,
        knee=ladder.knee(measured),
    )


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
