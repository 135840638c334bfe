"""One measuring process: a SavedModel with a fixed number of threads, over (concurrency, batch).

Run as ``python -m sim.serving.calibrate.worker CONFIG_JSON`` by :mod:`sim.serving.calibrate.local`. It pins
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

from sim.serving.calibrate import stats
from sim.serving.calibrate.host import usable_cpus

MARK = "@@scalelab "


def emit(event: str, **fields: Any) -> None:
    print(MARK + json.dumps({"event": event, **fields}), flush=True)


@@WINDOW@@


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
