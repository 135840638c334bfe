"""The recommendation: the cheapest point that meets the SLO in every seed, its margin, and
the files to act on (a scenario ``scalelab run`` takes, and an autoscaling/v2 HPA manifest).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sim.loader import build_scenario, dump_scenario, load_scenario, scenario_json
from sim.scenario import Scenario
from sim.sweep.results import PointResult
from sim.sweep.slo import SLOSpec


@dataclass(frozen=True)
class Margin:
    """How far the worst seed stays inside one objective (limit - worst; > 0 is headroom)."""

    metric: str
    limit: float
    worst: float | None

    @property
    def absolute(self) -> float | None:
        return None if self.worst is None else self.limit - self.worst

    @property
    def relative(self) -> float | None:
        if self.absolute is None or self.limit == 0:
            return None
        return self.absolute / self.limit

    def text(self) -> str:
        unit = " s" if self.metric.startswith("p") else ""
        worst = "-" if self.worst is None else f"{self.worst:.4g}{unit}"
        rel = "" if self.relative is None else f" ({self.relative:+.0%})"
        margin = "-" if self.absolute is None else f"{self.absolute:.4g}{unit}"
        return (
            f"{self.metric}: worst seed {worst}, limit {self.limit:g}{unit}, margin {margin}{rel}"
        )


def choose(ranked: list[PointResult]) -> PointResult | None:
    """The first-ranked point if it is feasible (the ranking puts feasible, cheapest first)."""
    if ranked and ranked[0].seeds_met is not None and ranked[0].feasible:
        return ranked[0]
    return None


def margins(result: PointResult, slo: SLOSpec) -> list[Margin]:
    return [Margin(o.metric, o.limit, result.worst(o.column)) for o in slo.objectives]


def closest(ranked: list[PointResult], slo: SLOSpec) -> PointResult | None:
    """With no feasible point: the one whose worst seed comes nearest the primary limit."""
    column = slo.primary.column
    candidates = [r for r in ranked if r.worst(column) is not None]
    return min(candidates, key=lambda r: (r.worst(column), r.point.index), default=None)


def recommended_scenario(result: PointResult, slo: SLOSpec) -> Scenario:
    """The point's scenario, renamed ``<name>-recommended``, with the SLO it was chosen for."""
    scenario = result.point.scenario
    data = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["name"] = f"{scenario.name}-recommended"
    values = ", ".join(f"{p}={v}" for p, v in result.point.values)
    data["description"] = f"scalelab sweep recommendation: {values}; SLO {slo.text()}"
    kept = slo.scenario_slo()
    if kept:
        data["slo"] = kept
    return build_scenario(data, "recommended scenario")


def hpa_manifest(scenario: Scenario) -> dict[str, Any] | None:
    """An autoscaling/v2 HorizontalPodAutoscaler for the scenario's Deployment (None: no HPA)."""
    if scenario.hpa is None:
        return None
    spec = scenario.hpa.model_dump(mode="json", exclude_none=True)
    name = scenario.deployment.name
    spec.setdefault("scaleTargetRef", {"apiVersion": "apps/v1", "kind": "Deployment", "name": name})
    ordered = {"scaleTargetRef": spec.pop("scaleTargetRef"), **spec}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": ordered,
    }


def write_recommendation(scenario: Scenario, scenario_path: Path, hpa_path: Path) -> bool:
    """Write both files; verify the scenario file reads back to the same scenario.

    Returns whether an HPA manifest was written (a scenario without an HPA has none).
    """
    dump_scenario(scenario, scenario_path)
    reread = load_scenario(scenario_path)
    if scenario_json(reread) != scenario_json(scenario):
        raise RuntimeError(
            f"{scenario_path} does not read back to the recommended scenario (a dump_scenario "
            "round-trip bug); rerun with --debug and report it"
        )
    manifest = hpa_manifest(scenario)
    if manifest is None:
        return False
    hpa_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return True
