"""Per-second request statistics, aggregated as they stream by (never a list of all requests)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Summary percentiles come from a log-bucketed histogram: buckets 1% wide, so a reported
# percentile is within 1% of the exact one, in memory that does not grow with the request count.
_LOG_STEP = math.log(1.01)
_FLOOR = 1e-4  # latencies below 0.1 ms share the first bucket
_BUCKETS = math.ceil(math.log(1e5 / _FLOOR) / _LOG_STEP)  # up to ~28 h


def _nearest_rank(ordered: Sequence[float], q: float) -> float:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class RequestRecorder:
    """Counts and latency percentiles per simulated second.

    ``ok``/``failed`` are per-second counters indexed by the second in which the client saw the
    outcome. Latencies are kept only for the second still open and reduced to p50/p95/p99 when it
    closes; requests complete in time order, so a closed second never receives a latency again.
    """

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self.offered = [0] * seconds
        self.ok = [0] * seconds
        self.failed = [0] * seconds
        self.p50: list[float | None] = [None] * seconds
        self.p95: list[float | None] = [None] * seconds
        self.p99: list[float | None] = [None] * seconds
        self.histogram = np.zeros(_BUCKETS + 1, dtype=np.int64)
        self.latency_sum = 0.0
        self._open_second = 0
        self._open: list[float] = []

    def _bucket(self, t: float) -> int:
        second = int(t)
        return second if 0 <= second < self.seconds else min(max(second, 0), self.seconds - 1)

    def offer(self, t: float) -> None:
        second = int(t)
        if second >= self.seconds:
            second = self.seconds - 1
        self.offered[second] += 1

    def fail(self, t: float) -> None:
        self.failed[self._bucket(t)] += 1

    def complete(self, t: float, latency: float) -> None:
        second = int(t)
        if second >= self.seconds:
            second = self.seconds - 1
        if second != self._open_second:
            self.close()
            self._open_second = second
        self._open.append(latency)
        self.ok[second] += 1

    def close(self) -> None:
        """Reduce the open second's latencies to percentiles and fold them into the histogram."""
        if not self._open:
            return
        ordered = sorted(self._open)
        second = self._open_second
        self.p50[second] = _nearest_rank(ordered, 0.50)
        self.p95[second] = _nearest_rank(ordered, 0.95)
        self.p99[second] = _nearest_rank(ordered, 0.99)
        scaled = np.log(np.maximum(np.asarray(ordered), _FLOOR) / _FLOOR) / _LOG_STEP
        keys = np.minimum(scaled.astype(np.int64), _BUCKETS)
        self.histogram += np.bincount(keys, minlength=_BUCKETS + 1)
        self.latency_sum += math.fsum(ordered)
        self._open = []

    def percentile(self, q: float) -> float | None:
        """A percentile over every successful request, to within 1%."""
        total = int(self.histogram.sum())
        if total == 0:
            return None
        rank = max(1, math.ceil(q * total))
        key = int(np.searchsorted(np.cumsum(self.histogram), rank))
        return _FLOOR * math.exp((key + 0.5) * _LOG_STEP)
