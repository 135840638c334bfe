"""What a finished sweep or tune writes: the results tables, report.html, sweep.json and the
recommendation, staged and moved into place file by file by :func:`sim.outputs.publish`, so a
failure never leaves a mix of old and new outputs, stale recommendation files are removed,
and nothing scalelab did not write is touched."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.outputs import publish

if TYPE_CHECKING:
    from sim.sweep.axes import Axis
    from sim.sweep.cli import Setup
    from sim.sweep.plan import Point, Values
    from sim.sweep.results import PointResult
    from sim.sweep.study import Study


@dataclass
class Outcome:
    ranked: list[PointResult]
    baseline: PointResult
    chosen: PointResult | None
    written: list[str]
    levels: list[Values] = field(default_factory=list)  # load levels the choice held at


def _trace_for(point: Point, seed: int) -> Any:
    from sim.engine import simulate

    return simulate(point.scenario, seed=seed)


def write_outputs(setup: Setup, study: Study, meta: dict[str, Any], recommend: bool) -> Outcome:
    """Write every output into a staging directory, then move each file into place."""
    from sim.sweep import recommend as rec
    from sim.sweep import report
    from sim.sweep.plan import label
    from sim.sweep.rerun import rerun_command
    from sim.sweep.results import csv_text, point_row, write_parquet

    ranked = study.ranked()
    baseline = study.result(study.baseline)
    chosen, levels = (
        rec.choose_setting(ranked, setup.base, study.slo) if study.slo is not None else (None, [])
    )
    if study.slo is not None and not levels:  # ties keep the scenario as given
        chosen = rec.keep_baseline(chosen, baseline, ranked, study.slo)
    rows = [row for p in sorted(study.points, key=lambda p: p.index) for row in study.rows(p)]
    rows += baseline.rows
    written: list[str] = []

    def write(staging: Path) -> None:
        (staging / "results.csv").write_text(csv_text(rows))
        write_parquet(rows, staging / "results.parquet")
        (staging / "points.csv").write_text(csv_text([point_row(r) for r in ranked]))
        written.extend(["results.csv", "results.parquet", "points.csv"])
        if recommend and chosen is not None and study.slo is not None:
            # staging and setup.out share a parent: paths re-pointed from one hold from both
            data, scenario = rec.recommended_data(
                setup.base, chosen.point.values, study.slo, setup.out
            )
            header = _recommendation_header(setup, study, chosen, levels)
            written.append("recommended.yaml")
            if rec.write_recommendation(
                scenario,
                staging / "recommended.yaml",
                staging / "recommended-hpa.yaml",
                data=data,
                header=header,
            ):
                written.append("recommended-hpa.yaml")
        shown = chosen or (ranked[0] if ranked else None)
        paths = [a.path for a in setup.axes]
        figures = [
            (
                "Pareto front: cost against the SLO metric",
                report.pareto_figure(ranked, study.slo, baseline, chosen),
                report.front_list(ranked, chosen),
            )
        ]
        if len(setup.axes) == 2 and ranked:
            figures.append(
                ("Heat map over the two axes", report.heatmap_figure(ranked, paths, study.slo), "")
            )
        if setup.kind == "tune" and study.points:
            trials = [study.result(p) for p in study.points]  # in the order evaluated
            figures.append(("Optimisation history", report.history_figure(trials), ""))
            figures.append(("Slice plot per parameter", report.slice_figure(trials, paths), ""))
        if shown is not None:
            seed = study.seeds[0]
            name = ("recommended: " if shown is chosen else "top-ranked: ") + label(
                shown.point.values
            )
            figures.append(
                (
                    f"Timelines, seed {seed}: baseline beside {name}",
                    report.timelines_figure(
                        _trace_for(study.baseline, seed),
                        _trace_for(shown.point, seed),
                        name,
                        study.slo,
                    ),
                    "",
                )
            )
        commands = {
            r.point.index: rerun_command(setup.base, r.point, study.seeds[0]) for r in ranked
        }
        facts = [
            ("scenario", f"{setup.base.source} ({setup.base.scenario.name})"),
            ("axes", "; ".join(_axis_text(a) for a in setup.axes)),
            ("seeds", ", ".join(map(str, study.seeds))),
            ("SLO", study.slo.text() if study.slo else "none (ranked by cost)"),
            ("points", str(len(ranked))),
            ("runs", f"{meta['runs']['computed']} computed, {meta['runs']['reused']} from cache"),
            ("recommended", label(chosen.point.values) if chosen else "-"),
            ("re-run the baseline", rerun_command(setup.base, study.baseline, study.seeds[0])),
        ]
        report.write_report(
            staging / "report.html",
            f"scalelab {setup.kind}: {setup.base.scenario.name}",
            facts,
            figures,
            ranked,
            study.slo,
            commands,
        )
        written.append("report.html")
        summary = _sweep_json(setup, study, meta, ranked, baseline, chosen)
        (staging / "sweep.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        written.append("sweep.json")

    # Files of an earlier output these results lack (a stale recommendation) are removed; the
    # cache stays; nothing scalelab did not write is touched (sim.outputs).
    publish(setup.out, setup.kind, write, keep=["cache"])
    return Outcome(ranked, baseline, chosen, written, levels)


def _recommendation_header(
    setup: Setup, study: Study, chosen: PointResult, levels: list[Values]
) -> str:
    """The comment atop recommended.yaml: which sweep chose it, and what changed."""
    from sim.sweep.plan import label

    assert study.slo is not None
    changed = ", ".join(f"{p}={v}" for p, v in chosen.point.values) or "nothing"
    held = ""
    if levels:
        held = " at every load level (" + "; ".join(label(v) for v in levels) + ")"
    return (
        f"Recommended by scalelab {setup.kind} over {setup.base.source}: axes "
        + "; ".join(_axis_text(a) for a in setup.axes)
        + f"; seeds {', '.join(map(str, study.seeds))}.\n"
        f"Changed from {setup.base.source}: {changed}.\n"
        f"Meets {study.slo.text()} in every seed{held}; the results are in "
        f"{setup.out}/sweep.json."
    )


def _axis_text(axis: Axis) -> str:
    if axis.values is not None:
        shown = ", ".join(map(str, axis.values[:12])) + (" ..." if len(axis.values) > 12 else "")
        return f"{axis.path} = {shown}"
    return f"{axis.path} in [{axis.low}, {axis.high}]" + (" (log)" if axis.log else "")


def _sweep_json(
    setup: Setup,
    study: Study,
    meta: dict[str, Any],
    ranked: list[PointResult],
    baseline: PointResult,
    chosen: PointResult | None,
) -> dict[str, Any]:
    from sim.sweep.recommend import margins

    def brief(r: PointResult) -> dict[str, Any]:
        return {
            "point": r.point.index,
            "values": dict(r.point.values),
            "scenario_sha256": r.point.sha,
            "cost_usd_mean": r.mean("cost_usd"),
            "seeds_meeting_slo": r.seeds_met,
        }

    out: dict[str, Any] = {
        "command": setup.kind,
        "scenario": setup.base.source,
        "scenario_sha256": setup.base.sha,
        "axes": [
            {
                "path": a.path,
                "values": list(a.values) if a.values is not None else None,
                "low": a.low,
                "high": a.high,
                "log": a.log,
            }
            for a in setup.axes
        ],
        "seeds": list(study.seeds),
        "slo": study.slo.text() if study.slo else None,
        "points": len(ranked),
        "feasible_points": sum(1 for r in ranked if r.feasible) if study.slo else None,
        "pareto": [r.point.index for r in ranked if r.pareto],
        "baseline": brief(baseline),
        "recommended": None,
        "executor": setup.executor,
        "jobs": setup.jobs,
        **meta,
    }
    if chosen is not None and study.slo is not None:
        out["recommended"] = {
            **brief(chosen),
            "margins": [
                {"metric": m.metric, "limit": m.limit, "worst": m.worst, "margin": m.absolute}
                for m in margins(chosen, study.slo)
            ],
        }
    return out
