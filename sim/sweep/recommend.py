"""The recommendation: the cheapest point that meets the SLO in every seed, its margin, and
the files to act on (a scenario ``scalelab run`` takes, and an autoscaling/v2 HPA manifest).
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sim.loader import build_scenario, dump_scenario, load_scenario, scenario_json, set_path
from sim.scenario import Scenario
from sim.sweep.plan import Base, Values, build_point
from sim.sweep.results import PointResult, summarize
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


def is_condition(path: str) -> bool:
    """Load axes (``load.scale``, rates, users) describe the traffic, not a setting one
    deploys: a recommendation must hold under each of them, never pick one."""
    return path == "load" or path.startswith(("load.", "load["))


def settings_of(values: Values) -> Values:
    return tuple((p, v) for p, v in values if not is_condition(p))


def choose_setting(
    ranked: list[PointResult], base: Base, slo: SLOSpec
) -> tuple[PointResult | None, list[Values]]:
    """The cheapest setting meeting the SLO in every seed at every load level, as one result
    over all their runs (its point: the setting at the base's load), and the load levels.

    Without load axes this is :func:`choose`. A setting missing a load level (left out by
    --skip-invalid) is not recommended: it was not shown to hold there. Cost is the mean over
    the load levels' runs; ties go to the lower primary metric, then the earlier point.
    """
    levels = sorted({tuple((p, v) for p, v in r.point.values if is_condition(p)) for r in ranked})
    if levels in ([], [()]):
        return choose(ranked), []
    groups: dict[Values, list[PointResult]] = {}
    for result in ranked:
        groups.setdefault(settings_of(result.point.values), []).append(result)
    candidates = []
    for setting, results in groups.items():
        if len(results) < len(levels) or not all(r.feasible for r in results):
            continue
        first = min(r.point.index for r in results)
        merged = summarize(
            build_point(base, first, setting), [x for r in results for x in r.rows], slo
        )
        candidates.append(merged)

    def key(r: PointResult) -> tuple[float, float, int]:
        return (
            r.mean("cost_usd") or math.inf,
            r.mean(slo.primary.column) or math.inf,
            r.point.index,
        )

    return min(candidates, key=key, default=None), levels


#: Relative difference below which two means are a tie (the same runs give equal floats;
#: this only absorbs rounding in sums taken in another order).
TIE = 1e-9


def keep_baseline(
    chosen: PointResult | None, baseline: PointResult, ranked: list[PointResult], slo: SLOSpec
) -> PointResult | None:
    """The recommendation, or the scenario as given when no point beats it: a point as cheap
    with an equal SLO metric (or worse) would be an arbitrary change. Prefers a point that
    *is* the baseline (same scenario), so its values still name the settings."""
    if chosen is None or not baseline.feasible or baseline.seeds_met is None:
        return chosen
    if chosen.point.sha == baseline.point.sha:
        return chosen

    def better(a: float | None, b: float | None) -> bool | None:
        """True if a < b beyond a tie, False if a > b, None for a tie."""
        x, y = (math.inf if v is None else v for v in (a, b))
        if x == y or math.isclose(x, y, rel_tol=TIE):
            return None
        return x < y

    column = slo.primary.column
    verdict = better(chosen.mean("cost_usd"), baseline.mean("cost_usd"))
    if verdict is None:
        verdict = better(chosen.mean(column), baseline.mean(column))
    if verdict:
        return chosen
    same = [r for r in ranked if r.point.sha == baseline.point.sha]
    return same[0] if same else baseline


def straddling(result: PointResult, slo: SLOSpec) -> list[str]:
    """Objectives whose limit lies inside the point's 95% interval of the mean: with these
    seeds it is a coin toss which side of the limit the point is on."""
    found = []
    for objective in slo.objectives:
        mean, ci, _ = result.stats.get(objective.column, (None, None, None))
        if mean is not None and ci is not None and mean - ci <= objective.limit <= mean + ci:
            unit = " s" if objective.column.startswith("latency") else ""
            found.append(
                f"{objective.metric} {mean:.4g} ±{ci:.2g}{unit} against {objective.limit:g}{unit}"
            )
    return found


def margins(result: PointResult, slo: SLOSpec) -> list[Margin]:
    return [Margin(o.metric, o.limit, result.worst(o.column)) for o in slo.objectives]


def closest(ranked: list[PointResult], slo: SLOSpec) -> PointResult | None:
    """With no feasible point: the one whose worst seed comes nearest the primary limit."""
    column = slo.primary.column
    candidates = [r for r in ranked if r.worst(column) is not None]
    return min(candidates, key=lambda r: (r.worst(column), r.point.index), default=None)


#: Fields of a scenario that name a file, resolved against the scenario file's directory.
FILE_FIELDS = ("deployment.manifest", "hpa.manifest", "load.rate.file", "load.shape.file")


def recommended_data(
    base: Base, values: Values, slo: SLOSpec, out: Path
) -> tuple[dict[str, Any], Scenario]:
    """The base scenario as its author wrote it (plus --set), with only the recommended
    fields changed, renamed ``<name>-recommended``, with the SLO it was chosen for; file paths
    inside it re-pointed from ``out`` (where it is written). Also the Scenario it reads as."""
    data = copy.deepcopy(base.data)
    for path, value in values:
        set_path(data, path, value)
    data["name"] = f"{base.scenario.name}-recommended"
    shown = ", ".join(f"{p}={v}" for p, v in values) or "the scenario as given"
    data["description"] = f"scalelab recommendation: {shown}; SLO {slo.text()}"
    kept = slo.scenario_slo()
    if kept:
        data["slo"] = kept
    scenario = build_scenario(data, "recommended scenario", base_dir=base.path.parent)
    for dotted in FILE_FIELDS:
        _repoint(data, dotted, base.path.parent, out)
    profile = (data.get("serving") or {}).get("profile")
    if isinstance(profile, str) and (base.path.parent / profile).is_file():
        _repoint(data, "serving.profile", base.path.parent, out)
    return data, scenario


def _repoint(data: dict[str, Any], dotted: str, source_dir: Path, out: Path) -> None:
    node: Any = data
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict) and isinstance(node.get(last), str):
        target = source_dir / node[last]
        node[last] = os.path.relpath(target.absolute(), out.absolute())


def recommended_scenario(result: PointResult, slo: SLOSpec) -> Scenario:
    """The point's scenario in full, renamed ``<name>-recommended``, with its SLO (tests)."""
    scenario = result.point.scenario
    data = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["name"] = f"{scenario.name}-recommended"
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


def write_recommendation(
    scenario: Scenario,
    scenario_path: Path,
    hpa_path: Path,
    data: dict[str, Any] | None = None,
    header: str = "",
) -> bool:
    """Write both files; verify the scenario file reads back to the same scenario.

    ``data`` is the mapping to write (default: the whole scenario), ``header`` a comment put
    above it. Returns whether an HPA manifest was written (a scenario without an HPA has none).
    """
    if data is None:
        dump_scenario(scenario, scenario_path)
    else:
        comment = "".join(f"# {line}\n" for line in header.splitlines())
        scenario_path.write_text(comment + yaml.safe_dump(data, sort_keys=False))
    reread = load_scenario(scenario_path)
    if _comparable(reread) != _comparable(scenario):
        raise RuntimeError(
            f"{scenario_path} does not read back to the recommended scenario (a round-trip "
            "bug); rerun with --debug and report it"
        )
    manifest = hpa_manifest(scenario)
    if manifest is None:
        return False
    hpa_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return True


def _comparable(scenario: Scenario) -> str:
    """The scenario's JSON without the strings that name files (re-pointed when written
    elsewhere; what they hold is read into the scenario itself)."""
    data = json.loads(scenario_json(scenario))
    for dotted in (*FILE_FIELDS, "serving.profile"):
        node: Any = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return json.dumps(data, sort_keys=True)
