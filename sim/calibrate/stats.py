"""From raw observations to profile points: quantiles, lognormal fits, the processor-sharing fit.

numpy only, so the endpoint mode and the tests need no TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from sim.profile import DEFAULT_QUANTILES


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


def point(
    *,
    threads: float,
    concurrency: int,
    batch: int,
    latencies: Sequence[float],
    cpu_s_per_request: float,
    throughput_rps: float | None = None,
    repeat_medians: Sequence[float] = (),
    qs: Sequence[float] = DEFAULT_QUANTILES,
) -> dict[str, Any]:
    """One profile point (schema 2) from a window's latencies and CPU time."""
    fit = fit_lognormal(latencies)
    out: dict[str, Any] = {
        "threads": threads,
        "concurrency": concurrency,
        "batch": batch,
        "n": len(latencies),
        "latency_s": quantiles(latencies, qs),
        "lognormal": {"median_s": fit.median, "sigma": fit.sigma, "ks": fit.ks},
        "cpu_s_per_request": cpu_s_per_request,
    }
    if throughput_rps is not None:
        out["throughput_rps"] = throughput_rps
    medians = [m for m in repeat_medians if m > 0]
    if len(medians) > 1:
        out["spread"] = (max(medians) - min(medians)) / float(np.median(medians))
    return out


@dataclass(frozen=True)
class SharingFit:
    """The processor-sharing model fitted to latency against concurrency on ``cores`` cores:
    ``R(c) = overhead + cpu_seconds / min(parallelism, cores / c)``."""

    cpu_seconds: float
    parallelism: float
    overhead_s: float
    cores: float
    rms_relative_error: float

    def latency(self, concurrency: float) -> float:
        rate = min(self.parallelism, self.cores / concurrency)
        return self.overhead_s + self.cpu_seconds / rate


def fit_processor_sharing(
    observed: Sequence[tuple[int, float]], cores: float, overhead_s: float
) -> SharingFit:
    """Least-squares (relative) fit of CPU-seconds per request and parallelism.

    For each parallelism p in [0.05, cores], the best CPU-seconds W has a closed form; the p
    with the smallest relative error wins. The saturated slope pins W (= cores x dR/dc), the
    lone latency then pins p, which is why concurrency must reach past cores / p.
    """
    if not observed:
        raise ValueError("no observations to fit")
    c = np.array([float(k) for k, _ in observed])
    r = np.array([float(v) for _, v in observed]) - overhead_s
    if np.any(r <= 0):
        raise ValueError(
            f"observed latencies {[round(v, 4) for _, v in observed]} do not exceed the "
            f"overhead {overhead_s:.4f} s"
        )
    best: SharingFit | None = None
    for p in np.arange(0.05, cores + 1e-9, 0.01):
        k = 1 / np.minimum(p, cores / c)
        # minimise sum(((W k - r) / r)^2): W = sum(k/r) / sum(k^2/r^2)
        w = float(np.sum(k / r) / np.sum((k / r) ** 2))
        err = float(np.sqrt(np.mean(((w * k - r) / r) ** 2)))
        if best is None or err < best.rms_relative_error - 1e-12:
            best = SharingFit(w, float(p), overhead_s, cores, err)
    assert best is not None
    return best
