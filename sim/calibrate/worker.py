"""One measuring process: a SavedModel with a fixed number of threads, over (concurrency, batch).

Run as ``python -m sim.calibrate.worker CONFIG_JSON`` by :mod:`sim.calibrate.local`. It pins
itself to ``threads`` CPUs and sets TensorFlow's intra- and inter-op pools to ``threads`` before
TensorFlow starts (they cannot change afterwards, as in TF Serving, which sizes both pools from
the machine's cores), loads the model, then for each point runs ``concurrency`` closed-loop
callers on one payload of ``batch`` items, discarding each caller's first request (warm-up).

Other processes' CPU use is measured over every window (``/proc/stat`` minus this process); a
window during which they used more than ``quiet_cores`` is measured again while the worker's
``retry_seconds`` last, and the quietest attempt is kept.

Results go to stdout as lines ``@@scalelab {json}``; anything else there is ignored.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.calibrate import stats
from sim.calibrate.host import usable_cpus

MARK = "@@scalelab "


def emit(event: str, **fields: Any) -> None:
    print(MARK + json.dumps({"event": event, **fields}), flush=True)


@dataclass(frozen=True)
class Window:
    """What one point's measuring window saw."""

    latencies: list[float]
    cpu_seconds: float
    elapsed: float
    repeat_medians: list[float]
    warm_latency: float
    background_cores: float | None = None
    """CPU other processes used during the window, in cores (None where unknown)."""


def busy_cpu_seconds() -> float | None:
    """CPU-seconds the CPUs this process may run on have spent busy since boot (/proc/stat),
    None where unknown: other processes on CPUs outside the affinity do not disturb it."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    mine = {f"cpu{i}" for i in usable_cpus()}
    ticks = 0
    for line in lines:
        fields = line.split()
        if fields and fields[0] in mine:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
            ticks += user + nice + system + irq + softirq + steal
    return ticks / os.sysconf("SC_CLK_TCK")


def closed_loop(
    call: Callable[[], object],
    concurrency: int,
    *,
    seconds: float,
    repeats: int,
    min_requests: int,
    max_seconds: float,
    clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.process_time,
) -> Window:
    """Run ``concurrency`` callers back to back; measure after each has finished one request.

    The window lasts ``seconds``, longer when needed for ``min_requests`` completions at the
    warm-up latency, never longer than ``max_seconds``; it is split into ``repeats`` equal
    parts whose medians show the run-to-run spread. CPU time is the whole process's.
    """
    lock = threading.Lock()
    done: list[tuple[float, float]] = []
    firsts: list[float] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def caller() -> None:
        first = True
        try:
            while not stop.is_set():
                start = clock()
                call()
                end = clock()
                with lock:
                    if first:
                        firsts.append(end - start)
                        first = False
                    else:
                        done.append((start, end))
        except BaseException as error:  # reported by the main thread
            failures.append(error)
            stop.set()

    workers = [threading.Thread(target=caller, daemon=True) for _ in range(concurrency)]
    for worker in workers:
        worker.start()
    patience = max(60.0, 4 * max_seconds)
    deadline = clock() + patience
    while len(firsts) < concurrency and not failures:
        if clock() > deadline:
            stop.set()
            raise TimeoutError(
                f"only {len(firsts)} of {concurrency} callers finished a request in "
                f"{patience:.0f} s"
            )
        time.sleep(0.002)
    try:
        if failures:
            raise failures[0]
        warm = sorted(firsts)[len(firsts) // 2]
        window = min(max(seconds, min_requests / concurrency * warm), max_seconds)
        t0, cpu0, busy0 = clock(), cpu_clock(), busy_cpu_seconds()
        marks = [t0]
        for r in range(1, repeats + 1):
            time.sleep(max(0.0, t0 + window * r / repeats - clock()))
            marks.append(clock())

        def completed(since: float, until: float) -> list[float]:
            with lock:
                return [e - s for s, e in done if since <= e <= until]

        while len(completed(t0, clock())) < min_requests and clock() - t0 < max_seconds:
            if failures:
                raise failures[0]
            time.sleep(0.005)
        t1, cpu1, busy1 = clock(), cpu_clock(), busy_cpu_seconds()
        marks[-1] = t1
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    if failures:
        raise failures[0]
    latencies = completed(t0, t1)
    if not latencies:
        raise RuntimeError(f"no request completed in {t1 - t0:.1f} s; raise --max-seconds")
    medians = []
    for lo, hi in itertools.pairwise(marks):
        part = sorted(completed(lo, hi))
        if part:
            medians.append(part[len(part) // 2])
    background = None
    if busy0 is not None and busy1 is not None:
        background = max(0.0, (busy1 - busy0 - (cpu1 - cpu0)) / (t1 - t0))
    return Window(latencies, cpu1 - cpu0, t1 - t0, medians, warm, background)


def main(config: dict[str, Any]) -> None:
    threads = int(config["threads"])
    cpus = usable_cpus()
    if hasattr(os, "sched_setaffinity") and threads < len(cpus):
        os.sched_setaffinity(0, set(cpus[:threads]))
    pinned = min(threads, len(cpus))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from sim.calibrate.model import require_tensorflow

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
    time.sleep(config.get("idle_seconds", 1.0))
    idle = (time.process_time() - cpu0) / config.get("idle_seconds", 1.0)
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
    busy0, own0, wall0 = busy_cpu_seconds(), time.process_time(), time.perf_counter()
    retry_left = float(config.get("retry_seconds", 0.0))
    for concurrency, batch in config["points"]:
        data = payload(batch)

        def call(data: Any = data) -> object:
            return fn(**{arg: data})

        best: Window | None = None
        while True:
            window = closed_loop(
                call,
                concurrency,
                seconds=config["seconds"],
                repeats=config["repeats"],
                min_requests=config["min_requests"],
                max_seconds=config["max_seconds"],
            )
            if best is None or (window.background_cores or 0) < (best.background_cores or 0):
                best = window
            noisy = (best.background_cores or 0) > config.get("quiet_cores", 0.25)
            cost = window.elapsed + 2 * window.warm_latency
            if not noisy or cost > retry_left:
                break
            retry_left -= cost
            emit(
                "retry",
                threads=threads,
                concurrency=concurrency,
                batch=batch,
                background_cpu_cores=window.background_cores,
            )
        n = len(best.latencies)
        point = stats.point(
            threads=threads,
            concurrency=concurrency,
            batch=batch,
            latencies=best.latencies,
            cpu_s_per_request=best.cpu_seconds / n,
            throughput_rps=n / best.elapsed,
            repeat_medians=best.repeat_medians,
            qs=config["quantiles"],
        )
        if best.background_cores is not None:
            point["background_cpu_cores"] = best.background_cores
        emit("point", point=point, elapsed=best.elapsed)
    busy1 = busy_cpu_seconds()
    background = None
    if busy0 is not None and busy1 is not None:
        others = (busy1 - busy0) - (time.process_time() - own0)
        background = max(0.0, others / (time.perf_counter() - wall0))
    emit("done", threads=threads, background_cpu_cores=background)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
