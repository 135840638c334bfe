"""Per-second request statistics, aggregated as they stream by (never a list of all requests)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from sim.trace import Cell

# Summary percentiles come from a log-bucketed histogram: buckets 1% wide, so a reported
# percentile is within 1% of the exact one, in memory that does not grow with the request count.
_LOG_STEP = math.log(1.01)
_FLOOR = 1e-4  # latencies below 0.1 ms share the first bucket
_BUCKETS = math.ceil(math.log(1e5 / _FLOOR) / _LOG_STEP)  # up to ~28 h


# Locust's report percentiles (locust/stats.py PERCENTILES_TO_REPORT), kept cumulatively per
# second for <name>_stats_history.csv.
LOCUST_PERCENTILES = (0.50, 0.66, 0.75, 0.80, 0.90, 0.95, 0.98, 0.99, 0.999, 0.9999, 1.0)


class FailureReason(StrEnum):
    """Why a request failed, as the client saw it."""

    TIMEOUT = "timeout"  # no response within the client's timeout
    UNAVAILABLE = "unavailable"  # TF Serving's batch queue was full (UNAVAILABLE, HTTP 503)
    RESET = "reset"  # the container exited (SIGTERM) with the request in flight
    NO_ENDPOINT = "no_endpoint"  # the Service had no Ready endpoint: connection refused


@dataclass
class FailureTally:
    """Failures of one reason: how many, first and last seen (simulated seconds)."""

    count: int = 0
    first: float = math.inf
    last: float = -math.inf


@dataclass(frozen=True)
class Cumulative:
    """Locust's running totals at one moment: ok and failed requests, response times in s."""

    requests: int
    failures: int
    response_sum: float
    response_min: float | None
    response_max: float | None
    percentiles: tuple[float, ...] | None  # LOCUST_PERCENTILES
    last_t: float | None


def latency_bucket(latency: float) -> int:
    """The histogram bucket of one latency (s): what a real run's load driver uses too, so its
    ``latency_histogram.csv`` has the simulator's buckets."""
    return min(int(math.log(max(latency, _FLOOR) / _FLOOR) / _LOG_STEP), _BUCKETS)


def _centre(key: int) -> float:
    return _FLOOR * math.exp((key + 0.5) * _LOG_STEP)


_CENTRES = [_centre(k) for k in range(_BUCKETS + 1)]  # looked up: a run has ~10^5 rows of them


def bucket_centres(keys: np.ndarray | Sequence[int]) -> list[float]:
    """The latency each histogram bucket stands for (its geometric centre, s)."""
    keys = keys.tolist() if isinstance(keys, np.ndarray) else keys
    return [_CENTRES[k] if 0 <= k <= _BUCKETS else _centre(int(k)) for k in keys]


def histogram_columns(
    per_second: Mapping[int, tuple[np.ndarray | Sequence[int], np.ndarray | Sequence[int]]],
) -> dict[str, list[Cell]]:
    """``latency_histogram.csv``'s columns from each second's (bucket keys ascending, counts):
    ``t``, ``latency_s`` (the bucket's centre), ``count``; one row per non-empty bucket."""
    ts: list[Cell] = []
    values: list[Cell] = []
    counts: list[Cell] = []
    for second in sorted(per_second):
        keys, n = per_second[second]
        ts += [second] * len(keys)
        values += bucket_centres(keys)
        counts += n.tolist() if isinstance(n, np.ndarray) else [int(c) for c in n]
    return {"t": ts, "latency_s": values, "count": counts}


def _nearest_rank(ordered: np.ndarray, q: float) -> float:
    return float(ordered[max(0, math.ceil(q * len(ordered)) - 1)])


def _percentiles(cumulative: np.ndarray, total: int) -> tuple[float, ...] | None:
    """Locust's report percentiles from a histogram's cumulative counts (``total`` the last)."""
    if total == 0:
        return None
    # calculate_response_time_percentile (locust/stats.py): the value at rank
    # int(n * q) + 1, capped at n.
    ranks = [min(total, int(q * total) + 1) for q in LOCUST_PERCENTILES]
    return tuple(bucket_centres(np.searchsorted(cumulative, ranks)))


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
        self.response_min = math.inf  # ok and failed requests, as Locust counts them
        self.response_max = 0.0
        self.last_t: float | None = None  # when the client last saw an outcome
        # Failed requests' response times: Locust counts them in its statistics too.
        self.fail_histogram = np.zeros(_BUCKETS + 1, dtype=np.int64)
        self.fail_latency_sum = 0.0
        self.failures: dict[FailureReason, FailureTally] = {}
        # Per second, Locust's running totals as they stood at its start (see snapshot()).
        self.cumulative: list[Cumulative | None] = [None] * seconds
        # Per second, the successful requests' histogram (sparse: bucket keys, counts), so that
        # percentiles over any span merge exactly (per-second percentiles do not combine).
        self.second_histograms: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._open_second = 0
        self._open: list[float] = []
        self._last_snapshot: Cumulative | None = None

    def _bucket(self, t: float) -> int:
        second = int(t)
        return second if 0 <= second < self.seconds else min(max(second, 0), self.seconds - 1)

    def offer(self, t: float) -> None:
        second = int(t)
        if second >= self.seconds:
            second = self.seconds - 1
        self.offered[second] += 1

    def offer_many(self, times: Sequence[float]) -> None:
        """:meth:`offer` for each of ``times`` (ascending): one count when they share a second,
        as an open-loop block does."""
        if not times:
            return
        last = self.seconds - 1
        first = min(int(times[0]), last)
        if first == min(int(times[-1]), last):
            self.offered[first] += len(times)
        else:
            for t in times:
                self.offer(t)

    def fail(self, t: float, reason: FailureReason, latency: float = 0.0) -> None:
        """A request failed at ``t`` after ``latency`` seconds, for ``reason``."""
        self.failed[self._bucket(t)] += 1
        tally = self.failures.get(reason)
        if tally is None:
            tally = self.failures[reason] = FailureTally()
        tally.count += 1
        tally.first = min(tally.first, t)
        tally.last = max(tally.last, t)
        self.fail_histogram[latency_bucket(latency)] += 1
        self.fail_latency_sum += latency
        self.response_min = min(self.response_min, latency)
        self.response_max = max(self.response_max, latency)
        if self.last_t is None or t > self.last_t:
            self.last_t = t

    def complete(self, t: float, latency: float) -> None:
        second = int(t)
        if second >= self.seconds:
            second = self.seconds - 1
        if second != self._open_second:
            self.close()
            self._open_second = second
        self._open.append(latency)
        self.ok[second] += 1

    def complete_many(self, times: Sequence[float], latencies: Sequence[float]) -> None:
        """:meth:`complete` for each (``times[i]``, ``latencies[i]``) in time order, a second at
        a time: the data plane hands them over in bulk, pod by pod, so ``times`` need not be
        sorted (a second's latencies are a set: only which second each falls in counts)."""
        if not times:
            return
        last = self.seconds - 1
        first = min(int(min(times)), last)
        if first == min(int(max(times)), last):
            self._take(first, latencies)
            return
        order = sorted(range(len(times)), key=times.__getitem__)
        ordered = [times[i] for i in order]
        i = 0
        while i < len(order):
            second = int(ordered[i])
            j = len(order) if second >= last else bisect.bisect_left(ordered, second + 1, i)
            self._take(min(second, last), [latencies[k] for k in order[i:j]])
            i = j

    def _take(self, second: int, latencies: Sequence[float]) -> None:
        if second != self._open_second:
            self.close()
            self._open_second = second
        self._open += latencies
        self.ok[second] += len(latencies)

    def close(self) -> None:
        """Reduce the open second's latencies to percentiles and fold them into the histogram."""
        if not self._open:
            return
        ordered = np.array(self._open)
        ordered.sort()
        second = self._open_second
        self.p50[second] = _nearest_rank(ordered, 0.50)
        self.p95[second] = _nearest_rank(ordered, 0.95)
        self.p99[second] = _nearest_rank(ordered, 0.99)
        scaled = np.log(np.maximum(ordered, _FLOOR) / _FLOOR) / _LOG_STEP
        keys = np.minimum(scaled.astype(np.int64), _BUCKETS)  # ascending, as ``ordered``
        low = int(keys[0])
        counts = np.bincount(keys - low)
        unique = np.flatnonzero(counts)
        counts = counts[unique]
        unique += low
        self.histogram[unique] += counts
        earlier = self.second_histograms.get(second)
        if earlier is not None:  # the last second also takes completions after the end
            unique, counts = np.unique(
                np.concatenate([np.repeat(unique, counts), np.repeat(*earlier)]),
                return_counts=True,
            )
        # Small integer types: a day of per-second histograms must not dominate the run's memory
        # (keys < 2^16 buckets; a second's count < 2^32).
        self.second_histograms[second] = (unique.astype(np.uint16), counts.astype(np.uint32))
        self.latency_sum += math.fsum(self._open)  # exactly rounded: the order does not matter
        self.response_min = min(self.response_min, float(ordered[0]))
        self.response_max = max(self.response_max, float(ordered[-1]))
        self._open = []
        if self.last_t is None or second > self.last_t:
            self.last_t = float(second)  # a completion within ``second``: Locust reads int(t)

    def snapshot(self, t: int) -> None:
        """Record Locust's running totals at the start of second ``t`` (every outcome before
        ``t`` is in; the caller has advanced the data plane to ``t``)."""
        if self._open and self._open_second < t:
            self.close()
        if not 0 <= t < self.seconds:
            return
        cumulative = np.cumsum(self.histogram + self.fail_histogram)
        count = int(cumulative[-1])
        last = self._last_snapshot
        if last is None or last.requests != count:  # else nothing has come in since
            percentiles = _percentiles(cumulative, count)
        else:
            percentiles = last.percentiles
        self.cumulative[t] = self._last_snapshot = Cumulative(
            requests=count,
            failures=sum(f.count for f in self.failures.values()),
            response_sum=self.latency_sum + self.fail_latency_sum,
            response_min=self.response_min if count else None,
            response_max=self.response_max if count else None,
            percentiles=percentiles,
            last_t=self.last_t,
        )

    def locust_percentiles(self) -> tuple[float, ...] | None:
        """Locust's report percentiles over every request, ok or failed (s)."""
        return self.percentiles_of(self.histogram + self.fail_histogram)

    @staticmethod
    def percentiles_of(histogram: np.ndarray) -> tuple[float, ...] | None:
        """Locust's report percentiles of ``histogram`` (bucket centres, s)."""
        cumulative = np.cumsum(histogram)
        return _percentiles(cumulative, int(cumulative[-1]))

    def latency_histogram(self) -> dict[str, list[Cell]]:
        """Per second, how many requests completed OK with each latency (the bucket's centre,
        s): columns ``t``, ``latency_s``, ``count``, one row per non-empty bucket, in order."""
        return histogram_columns(self.second_histograms)

    def percentile(self, q: float) -> float | None:
        """A percentile over every successful request, to within 1%."""
        total = int(self.histogram.sum())
        if total == 0:
            return None
        rank = max(1, math.ceil(q * total))
        key = int(np.searchsorted(np.cumsum(self.histogram), rank))
        return bucket_centres(np.array([key]))[0]
