"""Recorded demand: a request rate per second, from a counter in a file or a PromQL query, and
the replay file a scenario's open-loop load reads."""

from __future__ import annotations

import bisect
import math
from pathlib import Path

from sim.backtest.series import SeriesSet
from sim.errors import UserError


def counter_rate(
    data: SeriesSet, name: str, *, namespace: str, start: float, end: float, source: str
) -> list[float]:
    """Per-second rate of the counter ``name`` summed over its series in ``namespace``:
    each series is interpolated linearly onto whole seconds (as Prometheus' rate()
    extrapolates between samples), then differenced."""
    series = [s for s in data.named(name) if s.label("namespace") == namespace]
    if not series:
        seen = sorted(data.names())
        raise UserError(
            f"{source}: --requests {name!r}: no such series in namespace {namespace!r} "
            f"(series there: {', '.join(seen[:8])}{' ...' if len(seen) > 8 else ''})"
        )
    seconds = math.ceil(end - start)
    totals = [0.0] * (seconds + 1)
    for s in series:
        times = s.times
        for k in range(seconds + 1):
            t = start + k
            i = bisect.bisect_right(times, t)
            if i == 0:
                value = s.values[0]
            elif i == len(times):
                value = s.values[-1]
            else:
                t0, t1, v0, v1 = times[i - 1], times[i], s.values[i - 1], s.values[i]
                value = v0 + (v1 - v0) * (t - t0) / (t1 - t0) if v1 >= v0 else v1
            totals[k] += value
    return [max(0.0, totals[k + 1] - totals[k]) for k in range(seconds)]


def write_replay(path: Path, rates: list[float]) -> None:
    """``t,rps`` lines, as the ``replay`` open-loop load reads them."""
    lines = ["t,rps", *(f"{t},{rate:.6g}" for t, rate in enumerate(rates))]
    path.write_text("\n".join(lines) + "\n")
