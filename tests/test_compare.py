"""scalelab compare: fidelity of one run against another, on any two traces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.compare import compare, compare_dirs, load_steps, scale_matches, step_mad
from sim.engine import simulate
from sim.loader import load_scenario
from sim.trace import COLUMNS, Cell, Trace

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "scenarios" / "gsp777.yaml"


def trace(n: int, events: list[dict[str, Any]] | None = None, **columns: list[Cell]) -> Trace:
    data: dict[str, list[Cell]] = {name: [None] * n for name in COLUMNS}
    data["t"] = list(range(n))
    data.update(columns)
    return Trace(columns=data, events=events or [], summary={})


def test_step_mad_is_time_weighted() -> None:
    a = [(0.0, 1.0), (10.0, 3.0)]
    b = [(0.0, 2.0), (5.0, 3.0)]
    # |2-1| for 5 s, |3-1| for 5 s, 0 for 10 s, over 20 s.
    assert step_mad(a, b, 0.0, 20.0) == pytest.approx(0.75)
    assert step_mad(a, a, 0.0, 20.0) == 0.0
    unknown = [(0.0, None), (10.0, 3.0)]
    assert step_mad(unknown, b, 0.0, 20.0) == 0.0  # only [10, 20) counts, where both are 3
    assert step_mad([], b, 0.0, 20.0) is None


def test_scale_events_match_in_order_per_target_and_direction() -> None:
    def scale(t: float, target: str, old: int, new: int) -> dict[str, Any]:
        return {"t": t, "kind": "scale", "target": target, "name": "x", "old": old, "new": new}

    a = trace(
        10,
        [
            scale(100, "deployment", 1, 2),
            scale(200, "deployment", 2, 4),
            scale(900, "deployment", 4, 1),
        ],
    )
    b = trace(10, [scale(130, "deployment", 1, 3), scale(250, "node-pool", 1, 2)])
    found = {(m.target, m.direction, m.index): m for m in scale_matches(a, b)}
    first = found[("deployment", "up", 0)]
    assert (first.a_t, first.b_t, first.delta, first.b_change) == (100.0, 130.0, 30.0, "1->3")
    assert (
        found[("deployment", "up", 1)].b_t is None and found[("deployment", "up", 1)].delta is None
    )
    assert found[("deployment", "down", 0)].a_t == 900.0
    assert found[("node-pool", "up", 0)].a_t is None and found[("node-pool", "up", 0)].b_t == 250.0


def test_load_steps_follow_the_user_count_or_fall_back_to_windows() -> None:
    stepped = trace(6, users=[2, 2, 4, 4, 4, 6])
    assert load_steps(stepped, 6.0, min_step_s=0) == [(0, 2, 2), (2, 5, 4), (5, 6.0, 6)]
    ramped = trace(40, users=[1] + [2] * 19 + [3] + [4] * 19)
    assert load_steps(ramped, 40.0) == [(0, 20, 2), (20, 40.0, 4)]
    open_loop = trace(150, users=[0] * 150)
    assert load_steps(open_loop, 150.0, window_s=60) == [
        (0, 60, None),
        (60, 120, None),
        (120, 150.0, None),
    ]


def test_per_step_throughput_and_latency_errors() -> None:
    a = trace(4, users=[2, 2, 4, 4], completed_rps=[2, 2, 4, 4], latency_p95=[1.0, 1.0, 2.0, 2.0])
    b = trace(4, users=[2, 2, 4, 4], completed_rps=[1, 3, 3, 3], latency_p95=[1.0, 2.0, 3.0, 3.0])
    result = compare(a, b, min_step_s=0)
    first, second = result.steps
    assert (first.a_rps, first.b_rps, first.rps_error) == (2.0, 2.0, 0.0)
    assert second.rps_error == pytest.approx(-0.25)
    # completion-weighted: (1*1 + 2*3) / 4 = 1.75 against 1.0
    assert first.latency["latency_p95"] == {"a": 1.0, "b": 1.75, "error": 0.75}
    assert second.latency["latency_p95"]["error"] == pytest.approx(0.5)
    assert first.latency["latency_p50"]["error"] is None  # no data


def test_a_simulation_against_itself_and_against_another_setting() -> None:
    lab = load_scenario(LAB, ["duration=12m"])
    base = simulate(lab)
    same = compare(base, simulate(lab))
    assert all(v == 0.0 for v in same.timelines.values())
    assert all(m.delta == 0.0 for m in same.scale_events)
    assert all(s.rps_error in (0.0, None) for s in same.steps)
    assert same.cost["diff"] == 0.0
    capped = compare(base, simulate(load_scenario(LAB, ["duration=12m", "hpa.maxReplicas=2"])))
    assert (
        capped.timelines["replicas_desired"] is not None
        and capped.timelines["replicas_desired"] > 0
    )
    ups = [m for m in capped.scale_events if m.target == "deployment" and m.direction == "up"]
    assert ups and ups[0].a_t is not None
    # The lab's 11 steps of 2 more users (each with its 2 s spawn ramp), then the idle tail.
    assert [(s.start, s.end, s.users) for s in capped.steps[:2]] == [(0, 60, 2), (60, 120, 4)]
    assert len(capped.steps) == 12 and capped.steps[-1].users == 0
    text = capped.render()
    assert "scale events (B - A):" in text and "replicas_desired" in text and "cost: A $" in text


def test_compare_command_writes_the_report(tmp_path: Path) -> None:
    lab = load_scenario(LAB, ["duration=6m"])
    simulate(lab).write(tmp_path / "a")
    simulate(lab, seed=7).write(tmp_path / "b")
    out = tmp_path / "cmp"
    done = CliRunner().invoke(
        app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    assert "timelines, time-weighted mean |B - A|" in done.output
    data = json.loads((out / "compare.json").read_text())
    assert set(data) == {"a", "b", "span", "scale_events", "timelines", "steps", "cost"}
    page = (out / "report.html").read_text()
    assert page.count('class="plotly-graph-div"') == 1
    # the overall table comes first; legends name the runs by their short names
    assert page.index("<h2>Overall</h2>") < page.index("<h2>Timelines</h2>")
    assert '"name":"a"' in page and '"name":"b"' in page
    assert compare_dirs(tmp_path / "a", tmp_path / "a").cost["diff"] == 0.0
    missing = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "cannot compare" in missing.output
