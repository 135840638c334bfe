"""Locust's CSV files for a simulated run: ``<name>_stats.csv``, ``<name>_stats_history.csv``
and ``<name>_failures.csv``, with Locust's columns and row conventions, so tooling that reads
``locust --csv`` output reads a simulated run.

Conventions taken from locust/stats.py (``StatsCSV``, ``StatsCSVFileWriter``, Locust 2.x):

- one row per request name, then the ``Aggregated`` row (Type empty); the simulator sends one
  request, the lab's ``POST /v1/models/NAME/versions/1:predict``;
- failed requests count in ``Request Count`` and their response times in the statistics;
- times in milliseconds; percentiles and the median are Locust's rounded histogram keys
  (``bucket_response_time``), the median clamped to [min, max]; ``N/A`` with no requests;
- the history has one ``Aggregated`` row per second with the *cumulative* percentiles (the
  default, ``full_history=False``) and ``Requests/s`` / ``Failures/s`` as Locust's
  ``current_rps``: the mean over seconds [last - 12, last - 3] of the last request's second;
- failures: ``Method, Name, Error, Occurrences, First Seen, Last Seen`` with UTC timestamps.

What differs: Timestamps are ``start_unix`` + simulated seconds (0 by default, so a simulated
run starts at 1970-01-01T00:00:00Z: the same seed gives the same bytes); percentiles come from
scalelab's 1%-wide histogram before Locust's rounding; ``Average Content Size`` is 0 (the
simulator does not model response bodies).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sim.recorder import LOCUST_PERCENTILES, Cumulative, FailureReason, RequestRecorder

STATS_COLUMNS = (
    "Type",
    "Name",
    "Request Count",
    "Failure Count",
    "Median Response Time",
    "Average Response Time",
    "Min Response Time",
    "Max Response Time",
    "Average Content Size",
    "Requests/s",
    "Failures/s",
)
HISTORY_COLUMNS = ("Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s")
HISTORY_TOTAL_COLUMNS = (
    "Total Request Count",
    "Total Failure Count",
    "Total Median Response Time",
    "Total Average Response Time",
    "Total Min Response Time",
    "Total Max Response Time",
    "Total Average Content Size",
)
FAILURES_COLUMNS = ("Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen")

# The error text Locust's HttpUser (requests/urllib3) records for each way a request fails.
LOCUST_ERRORS = {
    FailureReason.TIMEOUT: "ReadTimeout(ReadTimeoutError("
    "'Read timed out. (read timeout={timeout:g})'))",
    FailureReason.UNAVAILABLE: "HTTPError('503 Server Error: Service Unavailable for url: {path}')",
    FailureReason.RESET: "ConnectionError(ProtocolError('Connection aborted.', "
    "ConnectionResetError(104, 'Connection reset by peer')))",
    FailureReason.NO_ENDPOINT: "ConnectionError(NewConnectionError('Failed to establish a new "
    "connection: [Errno 111] Connection refused'))",
}


def readable_percentiles(percentiles: Sequence[float] = LOCUST_PERCENTILES) -> list[str]:
    """Column names as locust.stats.get_readable_percentiles writes them: 50%, 99.9%, 100%."""
    return [
        f"{int(p * 100) if (p * 100).is_integer() else round(100 * p, 6)}%" for p in percentiles
    ]


def bucket_response_time(ms: float) -> int:
    """locust.stats.bucket_response_time: about two significant digits."""
    if ms < 100:
        return round(ms)
    if ms < 1000:
        return int(round(ms, -1))
    if ms < 10000:
        return int(round(ms, -2))
    return int(round(ms, -3))


def predict_path(model: str) -> str:
    """The lab's request path (cloud.load.predict_path, which sim cannot import)."""
    return f"/v1/models/{model}/versions/1:predict"


@dataclass(frozen=True)
class LocustFailure:
    error: str
    occurrences: int
    first_seen: float
    last_seen: float


@dataclass(frozen=True)
class LocustStats:
    """What the three files need, in seconds; built by :func:`from_recorder`."""

    method: str
    name: str
    start_unix: float
    users: list[int]  # per second
    outcomes: list[int]  # requests the client saw end (ok or failed), per second
    failures_per_second: list[int]
    cumulative: list[Cumulative | None]  # per second, at its start
    total: Cumulative
    duration: float
    failures: list[LocustFailure]


def from_recorder(
    recorder: RequestRecorder,
    users: Sequence[int | float | None],
    *,
    model: str,
    timeout: float,
    duration: float,
    start_unix: float = 0.0,
) -> LocustStats:
    """Locust's view of a finished simulated run."""
    path = predict_path(model)
    histogram = recorder.histogram + recorder.fail_histogram
    count = int(histogram.sum())
    failures = sum(f.count for f in recorder.failures.values())
    total = Cumulative(
        requests=count,
        failures=failures,
        response_sum=recorder.latency_sum + recorder.fail_latency_sum,
        response_min=recorder.response_min if count else None,
        response_max=recorder.response_max if count else None,
        percentiles=recorder.percentiles_of(histogram),
        last_t=recorder.last_t,
    )
    errors = [
        LocustFailure(
            error=LOCUST_ERRORS[reason].format(timeout=timeout, path=path),
            occurrences=tally.count,
            first_seen=tally.first,
            last_seen=tally.last,
        )
        for reason, tally in sorted(recorder.failures.items())
    ]
    return LocustStats(
        method="POST",
        name=path,
        start_unix=start_unix,
        users=[int(u or 0) for u in users],
        outcomes=[ok + bad for ok, bad in zip(recorder.ok, recorder.failed, strict=True)],
        failures_per_second=list(recorder.failed),
        cumulative=list(recorder.cumulative),
        total=total,
        duration=duration,
        failures=errors,
    )


def _ms(seconds: float | None) -> float:
    return 0 if seconds is None else round(seconds * 1000, 3)


def _median(c: Cumulative) -> int | float:
    """StatsEntry.median_response_time: the rounded p50, clamped to [min, max]."""
    if c.percentiles is None:
        return 0
    median: int | float = bucket_response_time(c.percentiles[0] * 1000)
    if c.response_max is not None and median > _ms(c.response_max):
        median = _ms(c.response_max)
    elif c.response_min is not None and median < _ms(c.response_min):
        median = _ms(c.response_min)
    return median


def _percentile_fields(c: Cumulative) -> list[str | int]:
    if not c.requests or c.percentiles is None:
        return ["N/A"] * len(LOCUST_PERCENTILES)
    return [bucket_response_time(p * 1000) for p in c.percentiles]


def _averages(c: Cumulative) -> tuple[float, int | float, float, float, int]:
    """Average, median, min, max response time (ms), average content size."""
    average = c.response_sum * 1000 / c.requests if c.requests else 0.0
    return round(average, 3), _median(c), _ms(c.response_min), _ms(c.response_max), 0


def _current_rate(per_second: Sequence[int], last_t: float | None) -> float:
    """StatsEntry.current_rps: the mean over [int(last) - 12, int(last) - 3], from the start."""
    if last_t is None:
        return 0.0
    last = int(last_t)
    window = [per_second[s] for s in range(max(last - 12, 0), min(last - 2, len(per_second)))]
    return math.fsum(window) / max(len(window), 1)


def _utc(unix: float) -> str:
    """locust.util.date.format_utc_timestamp."""
    return datetime.fromtimestamp(int(unix), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_locust_csv(stats: LocustStats, prefix: Path) -> list[Path]:
    """Write ``<prefix>_stats.csv``, ``_stats_history.csv`` and ``_failures.csv``."""
    pct_names = readable_percentiles()
    total = stats.total
    elapsed = total.last_t or 0.0  # StatsEntry.total_rps: since the start (t = 0)
    rps = total.requests / elapsed if elapsed > 0 else 0.0
    fps = total.failures / elapsed if elapsed > 0 else 0.0
    average, median, low, high, size = _averages(total)
    stats_path = Path(f"{prefix}_stats.csv")
    with open(stats_path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow([*STATS_COLUMNS, *pct_names])
        for kind, name in ((stats.method, stats.name), ("", "Aggregated")):
            out.writerow(
                [
                    kind,
                    name,
                    total.requests,
                    total.failures,
                    median,
                    average,
                    low,
                    high,
                    size,
                    rps,
                    fps,
                    *_percentile_fields(total),
                ]
            )
    history_path = Path(f"{prefix}_stats_history.csv")
    with open(history_path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow([*HISTORY_COLUMNS, *pct_names, *HISTORY_TOTAL_COLUMNS])
        for t, c in enumerate(stats.cumulative):
            if c is None:
                continue
            average, median, low, high, size = _averages(c)
            out.writerow(
                [
                    int(stats.start_unix + t),
                    stats.users[t] if t < len(stats.users) else 0,
                    "",
                    "Aggregated",
                    f"{_current_rate(stats.outcomes, c.last_t):2f}",
                    f"{_current_rate(stats.failures_per_second, c.last_t):2f}",
                    *_percentile_fields(c),
                    c.requests,
                    c.failures,
                    median,
                    average,
                    low,
                    high,
                    size,
                ]
            )
    failures_path = Path(f"{prefix}_failures.csv")
    with open(failures_path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(FAILURES_COLUMNS)
        for f in sorted(stats.failures, key=lambda f: f.error):
            out.writerow(
                [
                    stats.method,
                    stats.name,
                    f.error,
                    f.occurrences,
                    _utc(stats.start_unix + f.first_seen),
                    _utc(stats.start_unix + f.last_seen),
                ]
            )
    return [stats_path, history_path, failures_path]
