"""Means with Student-t 95% confidence intervals over seeds, without scipy.

The two-sided t distribution function for integer degrees of freedom has a closed form
(Abramowitz & Stegun 26.7.3 and 26.7.4); the quantile is found by bisection on it. Seeds give
integer degrees of freedom, so this is exact, not a table lookup with interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache


def t_within(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` degrees of freedom (A&S 26.7.3-4)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if t <= 0:
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2 == 0:
        term = total = 1.0
        for k in range(1, (df - 2) // 2 + 1):
            term *= cos2 * (2 * k - 1) / (2 * k)
            total += term
        return min(1.0, math.sin(theta) * total)  # rounding can overshoot 1 by an ulp
    total = 0.0
    if df > 1:
        term = total = math.cos(theta)
        for k in range(1, (df - 3) // 2 + 1):
            term *= cos2 * (2 * k) / (2 * k + 1)
            total += term
    return min(1.0, 2 / math.pi * (theta + math.sin(theta) * total))


@cache
def t_quantile(confidence: float, df: int) -> float:
    """The t with P(|T| <= t) = ``confidence``: 12.706 for 95% and df=1, 1.96 as df grows."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    low, high = 0.0, 1.0
    while t_within(high, df) < confidence:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if t_within(mid, df) < confidence:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return (low + high) / 2


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None]:
    """Mean and the half-width of its t confidence interval (None with fewer than 2 values)."""
    if not values:
        raise ValueError("mean_ci needs at least one value")
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, t_quantile(confidence, n - 1) * math.sqrt(variance / n)
