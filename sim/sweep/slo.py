"""The sweep's service-level objective: ``p95<=1s``, ``p99<=2s``, ``error_rate<=1%``,
``minutes_in_violation<=2``.

A run meets the SLO when every objective holds for that run; a point is feasible when it
meets the SLO in every seed (not on average), so a recommendation does not rest on luck.
Minutes in violation counts the seconds whose per-second p95 exceeds the p95 limit, / 60.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sim.scenario import SLO
from sim.units import parse_duration

#: Objective name -> the column of a result row it limits, and how it is written.
METRICS: dict[str, str] = {
    "p50": "latency_p50",
    "p95": "latency_p95",
    "p99": "latency_p99",
    "error_rate": "error_rate",
    "minutes_in_violation": "minutes_in_violation",
}
LATENCIES = ("p50", "p95", "p99")
_EXPRESSION = re.compile(r"^\s*([A-Za-z_0-9]+)\s*(<=|<)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Objective:
    """One limit: ``metric <= limit`` (or ``<``); latencies in seconds, minutes in minutes."""

    metric: str
    limit: float
    strict: bool = False

    @property
    def column(self) -> str:
        return METRICS[self.metric]

    def met(self, value: float | None) -> bool:
        """A missing value (nothing completed) never meets a limit."""
        if value is None or math.isnan(value):
            return False
        return value < self.limit if self.strict else value <= self.limit

    def text(self) -> str:
        op = "<" if self.strict else "<="
        unit = "s" if self.metric in LATENCIES else ""
        return f"{self.metric}{op}{self.limit:g}{unit}"

    def violation(self, value: float | None) -> float:
        """How far past the limit, relative to it (<= 0 when met): the optimizer's constraint."""
        if value is None or math.isnan(value):
            return math.inf
        scale = self.limit if self.limit > 0 else 1.0
        over = (value - self.limit) / scale
        if self.strict and over >= 0:
            return max(over, 1e-12)
        return over


@dataclass(frozen=True)
class SLOSpec:
    """All objectives of a sweep; the first latency objective is the Pareto front's axis."""

    objectives: tuple[Objective, ...]

    def __post_init__(self) -> None:
        names = [o.metric for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"each SLO metric may appear once, got {', '.join(names)}")
        if "minutes_in_violation" in names and self.p95_limit is None:
            raise ValueError(
                "minutes_in_violation counts seconds whose p95 exceeds the p95 limit; "
                "give p95<=... too"
            )

    @property
    def p95_limit(self) -> float | None:
        for objective in self.objectives:
            if objective.metric == "p95":
                return objective.limit
        return None

    @property
    def primary(self) -> Objective:
        """The objective plotted against cost: the first latency one, else the first."""
        for objective in self.objectives:
            if objective.metric in LATENCIES:
                return objective
        return self.objectives[0]

    def met(self, row: Mapping[str, Any]) -> bool:
        return all(o.met(row.get(o.column)) for o in self.objectives)

    def text(self) -> str:
        return ", ".join(o.text() for o in self.objectives)

    def scenario_slo(self) -> dict[str, float]:
        """The objectives a scenario's ``slo:`` can hold (minutes in violation it cannot)."""
        return {
            o.metric: o.limit for o in self.objectives if o.metric in (*LATENCIES, "error_rate")
        }


def _limit(metric: str, raw: str) -> float:
    if metric in LATENCIES:
        value = parse_duration(raw)
    elif metric == "error_rate":
        text = raw.strip()
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        if not 0 <= value <= 1:
            raise ValueError(f"error_rate must lie in [0, 1] (or 0%-100%), got {raw!r}")
    else:
        text = raw.strip()
        try:
            value = float(text)
        except ValueError:
            value = parse_duration(text) / 60
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{metric}: the limit must be finite and >= 0, got {raw!r}")
    if metric in LATENCIES and value == 0:
        raise ValueError(f"{metric}: a latency limit of 0 s can never be met")
    return value


def parse_slo(texts: Sequence[str]) -> SLOSpec:
    """``["p95<=1s", "error_rate<=1%"]`` (or one comma-separated string) -> SLOSpec."""
    objectives = []
    for text in texts:
        for part in text.split(","):
            if not part.strip():
                continue
            match = _EXPRESSION.match(part)
            if match is None:
                raise ValueError(
                    f"{part.strip()!r} is not an objective; write METRIC<=LIMIT such as p95<=1s"
                )
            metric, op, raw = match.groups()
            if metric not in METRICS:
                raise ValueError(f"unknown SLO metric {metric!r}; allowed: {', '.join(METRICS)}")
            try:
                limit = _limit(metric, raw)
            except ValueError as err:
                raise ValueError(f"{part.strip()!r}: {err}") from None
            objectives.append(Objective(metric, limit, strict=op == "<"))
    if not objectives:
        raise ValueError("the SLO is empty; write e.g. p95<=1s")
    return SLOSpec(tuple(objectives))


def from_scenario(slo: SLO | None) -> SLOSpec | None:
    """The scenario's own ``slo:`` as objectives (None when it has none)."""
    if slo is None:
        return None
    objectives = [
        Objective(name, float(limit))
        for name, limit in (
            ("p50", slo.p50),
            ("p95", slo.p95),
            ("p99", slo.p99),
            ("error_rate", slo.error_rate),
        )
        if limit is not None
    ]
    return SLOSpec(tuple(objectives)) if objectives else None


def derived(
    summary: Mapping[str, Any], p95_series: Sequence[float | None], p95_limit: float | None
) -> dict[str, float | None]:
    """Figures the SLO needs beyond the summary: error rate and minutes in violation."""
    sent = summary.get("requests_total") or 0
    failed = summary.get("requests_failed") or 0
    minutes = None
    if p95_limit is not None:
        minutes = sum(1 for v in p95_series if v is not None and v > p95_limit) / 60
    return {"error_rate": failed / sent if sent else 0.0, "minutes_in_violation": minutes}
