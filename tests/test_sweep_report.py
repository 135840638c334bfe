"""The sweep/tune/compare report's parts, without a browser: the command that re-runs a point,
heat map cell sizing, Pareto labels, compare's short legend names and overall table.
(tests/test_report_browser.py opens the pages themselves in Chromium.)"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.compare import overall_rows, short_labels
from sim.engine import simulate
from sim.loader import load_scenario, scenario_sha256
from sim.scenario import Scenario
from sim.sweep.plan import Point, build_point, load_base
from sim.sweep.report import (
    GLYPH_EM,
    LINE_EM,
    MAP_MARGIN,
    MIN_FONT,
    cell_text,
    history_figure,
    pareto_labels,
)
from sim.sweep.rerun import changed_leaves, rerun_command
from sim.sweep.results import PointResult

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "scenarios" / "gsp777.yaml"
TARGET = "hpa.metrics[0].resource.target.averageUtilization"


def sets_of(command: str) -> tuple[str, list[str], int]:
    args = shlex.split(command)
    assert args[:2] == ["scalelab", "run"]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    return args[2], sets, int(args[args.index("--seed") + 1])


@pytest.mark.parametrize(
    ("scenario", "overrides", "values"),
    [
        (LAB, [("duration", "5m")], ((TARGET, 45), ("load.scale", 1.5))),
        (LAB, [], (("cluster.node_pool.machine_type", "e2-standard-4"), ("hpa.minReplicas", 2))),
        (ROOT / "scenarios" / "spike.yaml", [("duration", "2m")], (("load.scale", 0.5),)),
        (LAB, [("hpa.behavior.scaleDown.stabilizationWindowSeconds", 60)], ((TARGET, 55),)),
    ],
)
def test_the_rerun_command_gives_the_points_scenario(
    scenario: Path, overrides: list[tuple[str, Any]], values: tuple[tuple[str, Any], ...]
) -> None:
    base = load_base(scenario, overrides)
    point = build_point(base, 0, values)
    path, sets, seed = sets_of(rerun_command(base, point, 4))
    assert seed == 4 and Path(path) == scenario
    # The command's scenario is the point's, field for field (load.scale included).
    assert scenario_sha256(load_scenario(path, sets)) == point.sha
    baseline = Point(-1, (), base.scenario, base.sha)
    path, sets, _ = sets_of(rerun_command(base, baseline, 1))
    assert scenario_sha256(load_scenario(path, sets)) == base.sha
    assert len(sets) == len(overrides)  # the baseline is the file plus the sweep's --set


def test_changed_leaves_name_each_difference_once() -> None:
    before = {"a": {"b": 1, "c": [1, 2]}, "d": [{"e": 1}], "f": "x"}
    after = {"a": {"b": 2, "c": [1, 2, 3]}, "d": [{"e": 5}], "f": "x", "g": {"h": 1}}
    assert changed_leaves(before, after) == [
        ("a.b", 2),
        ("a.c", [1, 2, 3]),
        ("d[0].e", 5),
        ("g", {"h": 1}),
    ]
    with pytest.raises(ValueError, match="removed"):
        changed_leaves({"a": 1, "b": 2}, {"a": 1})


@given(
    st.integers(1, 80),
    st.integers(1, 60),
    st.lists(st.text(alphabet="$0123456789.", min_size=1, max_size=12), min_size=1, max_size=5),
    st.booleans(),
)
def test_heat_map_font_fits_the_widest_text_in_its_cell(
    cols: int, rows: int, texts: list[str], two_lines: bool
) -> None:
    if two_lines:
        texts = [t + "<br>misses SLO" for t in texts]
    sizing = cell_text(cols, rows, texts)
    assert 760 <= sizing.width <= 1400 and 420 <= sizing.height <= 1000
    if sizing.font is None:
        return
    assert sizing.font >= MIN_FONT
    cell_w = (sizing.width - MAP_MARGIN["l"] - MAP_MARGIN["r"]) / cols
    cell_h = (sizing.height - MAP_MARGIN["t"] - MAP_MARGIN["b"]) / rows
    widest = max(len(line) for t in texts for line in t.split("<br>"))
    assert widest * GLYPH_EM * sizing.font <= cell_w
    assert (2 if two_lines else 1) * LINE_EM * sizing.font <= cell_h


def test_a_small_grid_gets_the_full_font_and_a_huge_one_none() -> None:
    assert cell_text(3, 2, ["$0.0123"]).font == 13
    assert cell_text(100, 100, ["$0.0123"]).font is None


def result(index: int, cost: float, p95: float, rank: int, seeds_met: int = 1) -> PointResult:
    r = PointResult(Point(index, (("x", index),), Scenario(), f"s{index}"), rows=[{}])
    r.stats = {"cost_usd": (cost, None, cost), "latency_p95": (p95, None, p95)}
    r.seeds_met, r.rank, r.pareto = seeds_met, rank, True
    return r


def test_pareto_labels_merge_points_at_one_place_and_star_the_recommendation() -> None:
    a, b, c = result(0, 1.0, 3.0, 1), result(1, 1.0, 3.0, 2), result(2, 2.0, 1.0, 3)
    base = result(-1, 2.0, 1.0, 0)
    labels = pareto_labels([a, b, c], base, a, "latency_p95")
    assert labels == [(1.0, 3.0, "★ #1, #2"), (2.0, 1.0, "#3, baseline")]


def test_history_tracks_the_best_feasible_cost_so_far() -> None:
    trials = [
        result(0, 3.0, 1, 0),
        result(1, 1.0, 9, 0, seeds_met=0),
        result(2, 2.0, 1, 0),
        result(3, 2.5, 1, 0),
    ]
    best = history_figure(trials).data[-1]
    assert best.name == "best feasible so far"
    assert list(best.y) == [3.0, 3.0, 2.0, 2.0]  # the cheaper infeasible trial does not count


@given(
    st.lists(st.text(alphabet="abc-", min_size=1, max_size=4), min_size=1, max_size=4),
    st.lists(st.text(alphabet="abc-", min_size=1, max_size=4), min_size=1, max_size=4),
)
def test_short_labels_tell_two_runs_apart(a: list[str], b: list[str]) -> None:
    pa, pb = "/".join(a), "/".join(b)
    la, lb = short_labels(pa, pb)
    if Path(pa).parts == Path(pb).parts:
        assert (la, lb) == ("A", "B")
    else:
        assert la != lb
        assert pa.endswith(la) and pb.endswith(lb)


def test_short_labels_of_the_usual_directories() -> None:
    assert short_labels("out/gsp777", "out/gsp777-gke") == ("gsp777", "gsp777-gke")
    assert short_labels("runs/a/out", "runs/b/out") == ("a/out", "b/out")


def test_overall_table_lists_both_runs_and_the_difference() -> None:
    lab = load_scenario(LAB, ["duration=4m"])
    a, b = simulate(lab), simulate(load_scenario(LAB, ["duration=4m", "hpa.maxReplicas=1"]))
    rows = {r[0]: r for r in overall_rows(a, b)}
    assert rows["cost"][1] != rows["cost"][2] and rows["cost"][3].endswith("USD")
    ok_a, ok_b = a.summary["requests_ok"], b.summary["requests_ok"]
    assert rows["requests ok"][1:4] == (f"{ok_a:.3g}", f"{ok_b:.3g}", f"{ok_b - ok_a:+.3g}")
