"""What a request costs after its server has been idle, against one sent back to back.

The ladders measure closed loops with no think time, so the server is never idle; the lab's
users wait 0.8-0.9 s between requests. Measured in process on the 2-core VM (ResNet101, 2
threads, blocks of requests each sent the same gap after the previous answer): after 0.3-0.85 s
idle a request took 8-13% longer than back to back and burnt up to 10% more CPU; after 20 ms it
was 5-10% faster. Two requests started d ms apart on an idle server end d less about 5 ms apart
when the first found the server idle, and d apart when it did not: the cost is work, which the
second, arriving at a busy server, does not pay.

:func:`after_idle` measures it: rounds of blocks, one block per gap (0, back to back, among
them) in shuffled order, each request of a block sent ``gap`` after the previous answer, the
block's first request dropped (its history is the previous block's). The factor at a gap is its
median latency over the back-to-back median, both from the same rounds so that the machine's
drift cancels. Blocks are short (3 requests, 2 kept) and rounds many, so that a gap's samples
come from many moments: a second the machine was disturbed moves one block, and with blocks
of 5 over 2 rounds one block was half a gap's samples and moved its median (a round read 1.36
at 30 ms among rounds of 0.94-1.11, and one fidelity pass 1.37-1.41 from 0.1 s). The data
plane multiplies the work of a request that finds its server idle by the factor
(``Profile.idle_factor``) and, where the CPU per request was read, its CPU by the CPU's own
factor, the gap's median CPU over the back-to-back median (``Profile.idle_cpu_factor``).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

GAPS = (0.01, 0.03, 0.1, 0.3, 0.9)
"""Idle seconds measured: from a busy server's gaps to past the lab's 0.8-0.9 s wait."""

METHOD = (
    "rounds of blocks, one per gap in gap_s plus 0 (back to back), in shuffled order; each "
    "request of a block sent gap seconds after the previous answer, the block's first dropped; "
    "factor = the gap's median latency / the back-to-back median of the same rounds; cpu_factor "
    "the same of the CPU per request"
)


def after_idle(
    call: Callable[[], object],
    *,
    gaps: tuple[float, ...] = GAPS,
    rounds: int = 6,
    block: int = 3,
    cpu: Callable[[], float] | None = None,
    seed: int = 0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Measure the after-idle factors with ``call`` (one request, blocking); ``cpu``, when
    given, reads the server's CPU seconds (so the CPU a request burns, and its factor, are
    measured too). Returns ``{"gap_s", "factor"}`` (and ``"cpu_factor"``) for the profile's
    ``defaults.after_idle`` and the medians behind them under ``"measured"``."""
    if block < 2 or rounds < 1:
        raise ValueError(f"after_idle needs block >= 2 and rounds >= 1, got {block}, {rounds}")
    order = random.Random(seed)
    every = (0.0, *gaps)
    latency: dict[float, list[float]] = {g: [] for g in every}
    burnt: dict[float, list[float]] = {g: [] for g in every}
    for _ in range(rounds):
        shuffled = list(every)
        order.shuffle(shuffled)
        for gap in shuffled:
            for i in range(block):
                if gap:
                    sleep(gap)
                c0 = cpu() if cpu else 0.0
                t0 = time.perf_counter()
                call()
                t1 = time.perf_counter()
                c1 = cpu() if cpu else 0.0
                if i:
                    latency[gap].append(t1 - t0)
                    burnt[gap].append(c1 - c0)
    median = {g: statistics.median(v) for g, v in latency.items()}
    base = median[0.0]
    measured: dict[str, Any] = {
        "gap_s": list(every),
        "latency_s": [median[g] for g in every],
        "n": [len(latency[g]) for g in every],
    }
    result: dict[str, Any] = {"gap_s": list(gaps), "factor": [median[g] / base for g in gaps]}
    if cpu is not None:
        measured["cpu_s"] = cpus = [statistics.median(burnt[g]) for g in every]
        if cpus[0] > 0:
            result["cpu_factor"] = [c / cpus[0] for c in cpus[1:]]
    return result | {"measured": measured, "method": METHOD}


def factors(result: dict[str, Any]) -> dict[str, Any]:
    """The profile's ``defaults.after_idle`` from an :func:`after_idle` result."""
    return {k: result[k] for k in ("gap_s", "factor", "cpu_factor") if k in result}
