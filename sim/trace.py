"""The Trace: the contract between backends (simulator, real cluster) and everything downstream.

On disk, in a run directory: ``trace.csv`` (one row per second), ``events.jsonl`` (one JSON
object per line, each with ``t`` and ``kind``), ``summary.json``, where the backend samples
pods, ``pods.csv`` (one row per pod per sample, :mod:`sim.podseries`) and, where it keeps them,
``latency_histogram.csv`` (per second, the OK requests' latency histogram: ``t, latency_s,
count``, one row per non-empty bucket; percentiles over a span merge these, since per-second
percentiles cannot be combined). Times and latencies are in seconds, money in USD.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.units import parse_duration

COLUMNS = (
    "t",
    "users",
    "offered_rps",
    "completed_rps",
    "failed_rps",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "replicas_desired",
    "replicas_current",
    "replicas_ready",
    "replicas_pending",
    "nodes_ready",
    "nodes_provisioning",
    "cpu_utilization",
    "cpu_target",
    "cost_usd",
)

#: latency_histogram.csv: second, a latency (s, the bucket's centre), how many OK requests.
HISTOGRAM_COLUMNS = ("t", "latency_s", "count")

if TYPE_CHECKING:
    from sim.locust_csv import LocustStats

Cell = int | float | None


def _cell(value: Cell) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}"


def _parse(text: str) -> Cell:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def _parse_any(text: str) -> object:
    try:
        return _parse(text)
    except ValueError:
        return text


def _write_csv(path: Path, columns: dict[str, list[Any]]) -> None:
    names = list(columns)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(names)
        for row in zip(*(columns[n] for n in names), strict=True):
            writer.writerow([v if isinstance(v, str) else _cell(v) for v in row])


def _read_csv(path: Path, parse: Any) -> dict[str, list[Any]]:
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        columns: dict[str, list[Any]] = {name: [] for name in header}
        for row in reader:
            for name, text in zip(header, row, strict=True):
                columns[name].append(parse(text))
    return columns


def timeline_figures(
    columns: dict[str, list[Cell]], events: list[dict[str, Any]]
) -> dict[str, Any]:
    """Summary figures read off the per-second series and events, the same for every backend."""

    def top(name: str) -> int:
        return max((int(v) for v in columns[name] if v is not None), default=0)

    ups = [
        e["t"]
        for e in events
        if e["kind"] == "scale"
        and e.get("target") == "deployment"
        and (e["new"] or 0) > (e["old"] or 0)
    ]
    return {
        "peak_completed_rps": top("completed_rps"),
        "max_replicas_desired": top("replicas_desired"),
        "max_replicas_ready": top("replicas_ready"),
        "max_nodes_ready": top("nodes_ready"),
        "first_scale_up_t": min(ups) if ups else None,
    }


@dataclass
class Trace:
    columns: dict[str, list[Cell]]
    events: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    pods: dict[str, list[Any]] | None = None  # sim.podseries.POD_COLUMNS
    locust: LocustStats | None = None  # for Locust's CSV files; not read back
    latency_histogram: dict[str, list[Cell]] | None = None  # HISTOGRAM_COLUMNS

    def __len__(self) -> int:
        return len(self.columns["t"])

    def column(self, name: str) -> list[Cell]:
        return self.columns[name]

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == kind]

    def p95_latency(self, after: float | str = 0.0) -> float:
        """Worst per-second p95 latency at or after ``after`` (seconds, or ``"5m"``); 0 when
        nothing completed."""
        start = parse_duration(after)
        values = [
            v
            for t, v in zip(self.columns["t"], self.columns["latency_p95"], strict=True)
            if v is not None and t is not None and t >= start
        ]
        return max((float(v) for v in values), default=0.0)

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        _write_csv(out / "trace.csv", self.columns)
        if self.pods is not None:
            _write_csv(out / "pods.csv", self.pods)
        if self.latency_histogram is not None:
            _write_csv(out / "latency_histogram.csv", self.latency_histogram)
        with open(out / "events.jsonl", "w") as handle:
            for event in self.events:
                handle.write(json.dumps(event, sort_keys=False) + "\n")
        (out / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n")

    @classmethod
    def read(cls, run_dir: Path) -> Trace:
        columns: dict[str, list[Cell]] = _read_csv(run_dir / "trace.csv", _parse)
        missing = [c for c in COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"{run_dir}/trace.csv lacks columns {missing}")
        events = [
            json.loads(line)
            for line in (run_dir / "events.jsonl").read_text().splitlines()
            if line.strip()
        ]
        summary = json.loads((run_dir / "summary.json").read_text())
        pods_csv = run_dir / "pods.csv"
        pods = _read_csv(pods_csv, _parse_any) if pods_csv.is_file() else None
        histogram_csv = run_dir / "latency_histogram.csv"
        histogram = _read_csv(histogram_csv, _parse) if histogram_csv.is_file() else None
        if histogram is not None and list(histogram) != list(HISTOGRAM_COLUMNS):
            raise ValueError(
                f"{histogram_csv} has columns {list(histogram)}, expected {list(HISTOGRAM_COLUMNS)}"
            )
        return cls(
            columns=columns, events=events, summary=summary, pods=pods, latency_histogram=histogram
        )
