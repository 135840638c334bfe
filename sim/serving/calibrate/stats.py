"""From raw observations to profile points: quantiles, lognormal fits, repeat spreads.

numpy only, so the endpoint mode and the tests need no TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from sim.serving.profile import DEFAULT_QUANTILES


@dataclass(frozen=True)
class LognormalFit:
    """``median * exp(sigma * Z)``; ``ks`` is the Kolmogorov distance to the sample (its error)."""

    median: float
    sigma: float
    ks: float


def fit_lognormal(samples: Sequence[float] | np.ndarray) -> LognormalFit:
    """Maximum-likelihood lognormal fit and its Kolmogorov-Smirnov distance to ``samples``."""
    x = np.sort(np.asarray(samples, dtype=float))
    if len(x) == 0 or np.any(x <= 0):
        raise ValueError("a lognormal fit needs positive samples")
    logs = np.log(x)
    mu = float(logs.mean())
    sigma = float(logs.std(ddof=1)) if len(x) > 1 else 0.0
    if sigma == 0.0:
        return LognormalFit(math.exp(mu), 0.0, 0.0)
    normal = NormalDist(mu, sigma)
    cdf = np.array([normal.cdf(v) for v in logs])
    n = len(x)
    upper = np.arange(1, n + 1) / n - cdf
    lower = cdf - np.arange(0, n) / n
    return LognormalFit(math.exp(mu), sigma, float(max(upper.max(), lower.max())))


def quantiles(samples: Sequence[float], qs: Sequence[float] = DEFAULT_QUANTILES) -> list[float]:
    """Sample quantiles (linear interpolation), non-decreasing by construction."""
    return [float(v) for v in np.quantile(np.asarray(samples, dtype=float), list(qs))]


def relative_range(values: Sequence[float]) -> float:
    """``(max - min) / median``: how far apart repeats of one figure are."""
    return (max(values) - min(values)) / float(np.median(values))


def sub_window_spread(
    completions: Sequence[tuple[float, float]], t0: float, t1: float, parts: int
) -> dict[str, float] | None:
    """The relative range of the p50 and of the p95 over ``parts`` equal sub-windows.

    ``completions`` are (end time, latency) pairs; a request belongs to the sub-window its end
    falls in. None when fewer than two sub-windows saw a request.
    """
    if parts < 2 or t1 <= t0:
        return None
    groups: list[list[float]] = [[] for _ in range(parts)]
    for end, latency in completions:
        if t0 < end <= t1:
            groups[min(parts - 1, int((end - t0) / (t1 - t0) * parts))].append(latency)
    filled = [np.asarray(g) for g in groups if g]
    if len(filled) < 2:
        return None
    return {
        "p50": relative_range([float(np.quantile(g, 0.5)) for g in filled]),
        "p95": relative_range([float(np.quantile(g, 0.95)) for g in filled]),
    }


def point(
    *,
    threads: float,
    concurrency: int,
    batch: int,
    latencies: Sequence[float],
    throughput_rps: float,
    cpu_cores: float,
    spread: dict[str, float] | None = None,
    repeats: int | None = None,
    qs: Sequence[float] = DEFAULT_QUANTILES,
) -> dict[str, Any]:
    """One profile point (schema 3) from a closed-loop window's latencies, throughput and CPU."""
    fit = fit_lognormal(latencies)
    out: dict[str, Any] = {
        "threads": threads,
        "concurrency": concurrency,
        "batch": batch,
        "n": len(latencies),
        "latency_s": quantiles(latencies, qs),
        "lognormal": {"median_s": fit.median, "sigma": fit.sigma, "ks": fit.ks},
        "throughput_rps": throughput_rps,
        "cpu_cores": cpu_cores,
    }
    if spread is not None:
        out["spread"] = dict(spread)
    if repeats is not None:
        out["repeats"] = repeats
    return out
