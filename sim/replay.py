"""Replay files: a rate or a user count over time, read from CSV or Parquet.

A file holds a time column and a value column, found by name (``t``/``time``/``timestamp``...,
``rps``/``rate``... or ``users``...) or else by position (time first, the value next); a file
of one numeric column is one value per second. Each value holds from its time until the next
row's; the last row holds for ``hold_last`` seconds, by default as long as the step before it
(one second for a single row). Numeric times are seconds from the start of the run; timestamps
(ISO 8601 text, Parquet timestamps, or Unix epoch seconds, numbers >= 1e9) count from the first
row. Before the first row the value is 0; after the file ends it is 0 (rates) or the test
stops (users, as a Locust shape returning None).
"""

from __future__ import annotations

import bisect
import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

TIME_NAMES = ("t", "time", "timestamp", "ts", "seconds", "second", "time_s", "elapsed", "offset")
RATE_NAMES = (
    "rps",
    "rate",
    "qps",
    "req/s",
    "requests/s",
    "requests_per_second",
    "arrival_rate",
    "throughput",
)
USER_NAMES = ("users", "user_count", "active_users", "concurrency", "vus", "clients")
#: Numbers this large in a time column are Unix epoch seconds (2001 on), not run offsets.
EPOCH_FROM = 1e9

Column = str | int | None


@dataclass(frozen=True)
class Series:
    """Values held from each time until the next, the last until ``end`` (seconds)."""

    times: tuple[float, ...]
    values: tuple[float, ...]
    end: float

    def at(self, t: float) -> float | None:
        """The value holding at ``t``; 0 before the first row, None once the file has ended."""
        if t >= self.end:
            return None
        i = bisect.bisect_right(self.times, t) - 1
        return self.values[i] if i >= 0 else 0.0


def read_series(
    path: Path,
    *,
    what: str,
    names: Sequence[str],
    time_column: Column = None,
    value_column: Column = None,
    hold_last: float | None = None,
    integer: bool = False,
) -> Series:
    """Read ``path`` (``.parquet``/``.pq`` as Parquet, anything else as CSV); ValueError naming
    the file, the row and the column on anything it cannot use."""
    header: list[str] | None
    rows: list[list[Any]]
    if path.suffix.lower() in (".parquet", ".pq"):
        header, rows, first_row = _read_parquet(path)
    else:
        header, rows, first_row = _read_csv(path)
    if not rows:
        raise ValueError(f"{path}: no data rows (expected a time and a {what} column)")
    width = len(rows[0])
    if width == 1 and time_column is None:
        if value_column not in (None, 0) and not (header and _match(header, value_column) == 0):
            raise ValueError(f"{path}: one column only, so no column {value_column!r}")
        values = [_value(path, first_row + i, row[0], what, integer) for i, row in enumerate(rows)]
        return _series(path, [float(i) for i in range(len(values))], values, hold_last, 1.0)
    t_at, v_at = _columns(path, header, width, names, time_column, value_column)
    times: list[float] = []
    values = []
    stamps = False
    for i, row in enumerate(rows):
        line = first_row + i
        if len(row) <= max(t_at, v_at):
            raise ValueError(f"{path}:{line}: {len(row)} columns, expected at least {width}")
        seconds, stamp = _time(path, line, row[t_at])
        stamps = stamps or stamp
        if times and seconds <= times[-1]:
            raise ValueError(
                f"{path}:{line}: time {row[t_at]!r} is not after the previous row's; rows must "
                "be in increasing time order"
            )
        times.append(seconds)
        values.append(_value(path, line, row[v_at], what, integer))
    if stamps or times[0] >= EPOCH_FROM:
        times = [t - times[0] for t in times]
    return _series(path, times, values, hold_last, None)


def _series(
    path: Path, times: list[float], values: list[float], hold: float | None, step: float | None
) -> Series:
    if times[0] < 0:
        raise ValueError(f"{path}: times must be >= 0 seconds from the start, got {times[0]:g}")
    if hold is None:
        hold = step if step is not None else (times[-1] - times[-2] if len(times) > 1 else 1.0)
    return Series(tuple(times), tuple(values), times[-1] + hold)


def _columns(
    path: Path,
    header: list[str] | None,
    width: int,
    names: Sequence[str],
    time_column: Column,
    value_column: Column,
) -> tuple[int, int]:
    def pick(column: Column, known: Sequence[str], role: str) -> int | None:
        if column is None:
            return _match(header, None, known) if header else None
        found = _match(header, column)
        if found is None or found >= width:
            columns = ", ".join(header) if header else f"positions 0..{width - 1}, no header"
            raise ValueError(f"{path}: no {role} column {column!r} (the file has: {columns})")
        return found

    t_at = pick(time_column, TIME_NAMES, "time")
    v_at = pick(value_column, names, "value")
    if t_at is None:
        t_at = 0 if v_at != 0 else 1
    if v_at is None:
        v_at = next(i for i in range(width) if i != t_at)
    if t_at == v_at:
        raise ValueError(f"{path}: the time and value columns are the same column ({t_at})")
    return t_at, v_at


def _match(header: list[str] | None, column: Column, known: Sequence[str] = ()) -> int | None:
    """The index of ``column`` (a position, or a header name) or of the first known name."""
    if isinstance(column, int):
        return column if column >= 0 else None
    cells = [_norm(h) for h in header or []]
    for name in [column] if column is not None else known:
        if _norm(name) in cells:
            return cells.index(_norm(name))
    return None


def _norm(name: str) -> str:
    return "_".join(name.strip().lower().split())


def _time(path: Path, line: int, cell: Any) -> tuple[float, bool]:
    """Seconds, and whether it was a timestamp (counted from the first row)."""
    if isinstance(cell, datetime):
        return cell.timestamp(), True
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        number = float(cell)
    else:
        text = str(cell).strip()
        try:
            number = float(text)
        except ValueError:
            try:
                return datetime.fromisoformat(text).timestamp(), True
            except ValueError:
                raise ValueError(
                    f"{path}:{line}: time {text!r} is neither seconds nor an ISO 8601 timestamp"
                ) from None
    if not math.isfinite(number):
        raise ValueError(f"{path}:{line}: time must be finite, got {cell!r}")
    return number, False


def _value(path: Path, line: int, cell: Any, what: str, integer: bool) -> float:
    try:
        value = float(cell)
    except (TypeError, ValueError):
        raise ValueError(f"{path}:{line}: expected {what}, got {cell!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{path}:{line}: {what} must be finite and >= 0, got {cell!r}")
    if integer and not value.is_integer():
        raise ValueError(f"{path}:{line}: {what} must be a whole number, got {cell!r}")
    return value


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> tuple[list[str] | None, list[list[str]], int]:
    """Header (when the first row is not all data), data rows, and the first data row's line."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"cannot read replay file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (CSV) file; name Parquet files *.parquet") from None
    numbered = [
        (n, row)
        for n, row in enumerate(csv.reader(text.splitlines()), 1)
        if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#")
    ]
    if not numbered:
        return None, [], 1
    header = None
    first_line, first = numbered[0]
    if not all(_is_number(c) for c in first) and not _looks_like_data(first):
        header = [c.strip() for c in first]
        numbered = numbered[1:]
    rows = [[c.strip() for c in row] for _, row in numbered]
    return header, rows, numbered[0][0] if numbered else first_line + 1


def _looks_like_data(row: list[str]) -> bool:
    """A first row of a timestamp and numbers is data, not a header."""
    try:
        datetime.fromisoformat(row[0].strip())
    except ValueError:
        return False
    return all(_is_number(c) for c in row[1:])


def _read_parquet(path: Path) -> tuple[list[str], list[list[Any]], int]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except OSError as err:
        raise ValueError(f"cannot read replay file {path} as Parquet: {err}") from None
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    rows = [list(row) for row in zip(*columns, strict=True)]
    return list(table.column_names), rows, 1
