"""Rows per run, statistics per point, ranking, and the results tables on disk.

``results.csv`` / ``results.parquet``: one row per (point, seed): the point's coordinates, the
seed, whether it met the sweep's SLO, error rate, minutes in violation, then every figure of
the run's summary (a nested ``slo`` is flattened to ``slo.met``, ``slo.checks.p95.value``...).
The baseline scenario's runs are there too, with ``role`` = baseline and ``point`` = -1.
``points.csv``: one row per point: rank, feasibility, Pareto membership, and for each metric
the mean over seeds, the half-width of its 95% Student-t interval, and the worst seed.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.sweep.pareto import pareto_front
from sim.sweep.plan import Point, label
from sim.sweep.slo import SLOSpec, derived
from sim.sweep.stats import mean_ci
from sim.sweep.worker import Record

#: Figures summarized per point (mean, CI, worst); "worst" is the max for all of them.
POINT_METRICS = (
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "latency_mean",
    "error_rate",
    "minutes_in_violation",
    "cost_usd",
    "node_hours",
    "cost_per_million_requests",
    "max_replicas_desired",
    "max_replicas_ready",
    "max_nodes_ready",
    "requests_ok",
    "requests_failed",
)
#: Run figures that measure the machine, not the simulation: they differ run to run.
WALL_CLOCK = ("wall_seconds", "sim_requests_per_wall_second")


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, list | tuple):
            out[name] = repr(list(value))
        else:
            out[name] = value
    return out


def run_row(point: Point, seed: int, record: Record, slo: SLOSpec | None) -> dict[str, Any]:
    """One results.csv row."""
    summary = record["summary"]
    extra = derived(summary, record["p95"], slo.p95_limit if slo else None)
    row: dict[str, Any] = {
        "role": "baseline" if point.index < 0 else "point",
        "point": point.index,
        "label": label(point.values),
    }
    row.update(dict(point.values))
    row["seed"] = seed
    row.update(extra)
    row["meets_slo"] = None
    row.update(flatten(summary))
    if slo is not None:
        row["meets_slo"] = slo.met(row)
    return row


@dataclass
class PointResult:
    """A point over its seeds: per-metric (mean, CI half-width, worst), feasibility, rank."""

    point: Point
    rows: list[dict[str, Any]]
    stats: dict[str, tuple[float | None, float | None, float | None]] = field(default_factory=dict)
    seeds_met: int | None = None
    pareto: bool = False
    rank: int = 0

    @property
    def feasible(self) -> bool:
        """Meets the SLO in every seed (trivially true without an SLO)."""
        return self.seeds_met is None or self.seeds_met == len(self.rows)

    def mean(self, metric: str) -> float | None:
        return self.stats[metric][0]

    def worst(self, metric: str) -> float | None:
        return self.stats[metric][2]


def summarize(point: Point, rows: list[dict[str, Any]], slo: SLOSpec | None) -> PointResult:
    result = PointResult(point, rows)
    for metric in POINT_METRICS:
        values = [float(r[metric]) for r in rows if r.get(metric) is not None]
        if len(values) < len(rows) or not values:
            # A seed with no value (e.g. nothing completed): no mean; worst is unknown/inf.
            worst = math.inf if metric.startswith("latency") and rows else None
            result.stats[metric] = (None, None, worst)
            continue
        mean, ci = mean_ci(values)
        result.stats[metric] = (mean, ci, max(values))
    if slo is not None:
        result.seeds_met = sum(1 for r in rows if r["meets_slo"])
    return result


def rank_points(results: list[PointResult], slo: SLOSpec | None) -> list[PointResult]:
    """Feasible first, then cheapest (mean cost), then lowest SLO metric, then point order.

    Marks the Pareto front of mean cost against the mean SLO metric (p95 without an SLO).
    """
    metric = slo.primary.column if slo is not None else "latency_p95"
    scored = [r for r in results if r.mean("cost_usd") is not None and r.mean(metric) is not None]
    coords = [(float(r.mean("cost_usd") or 0), float(r.mean(metric) or 0)) for r in scored]
    for index in pareto_front(coords):
        scored[index].pareto = True

    def key(r: PointResult) -> tuple[bool, float, float, int]:
        cost, value = r.mean("cost_usd"), r.mean(metric)
        return (
            not r.feasible,
            math.inf if cost is None else cost,
            math.inf if value is None else value,
            r.point.index,
        )

    ranked = sorted(results, key=key)
    for number, result in enumerate(ranked, 1):
        result.rank = number
    return ranked


def point_row(result: PointResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "rank": result.rank,
        "point": result.point.index,
        "label": label(result.point.values),
    }
    row.update(dict(result.point.values))
    row.update(
        {
            "seeds": len(result.rows),
            "seeds_meeting_slo": result.seeds_met,
            "feasible": result.feasible if result.seeds_met is not None else None,
            "pareto": result.pareto,
            "scenario_sha256": result.point.sha,
        }
    )
    for metric, (mean, ci, worst) in result.stats.items():
        row[f"{metric}_mean"] = mean
        row[f"{metric}_ci95"] = ci
        row[f"{metric}_worst"] = worst
    return row


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return list(names)


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    names = _columns(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow(["" if row.get(n) is None else row.get(n) for n in names])
    return buffer.getvalue()


def _arrow_column(values: list[Any]) -> list[Any]:
    """One type per column: ints widen to float beside floats; anything else mixed -> text."""
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int, float} and float in kinds:
        return [None if v is None else float(v) for v in values]
    if len(kinds) > 1:
        return [None if v is None else str(v) for v in values]
    return values


def write_parquet(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = _columns(rows)
    table = pa.table({n: _arrow_column([row.get(n) for row in rows]) for n in names})
    pq.write_table(table, path)
