"""scalelab compare: fidelity of one run against another, on any two traces."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sim.cli import app
from sim.compare import (
    FROM_HISTOGRAM,
    FROM_PER_SECOND,
    LatencyHistogram,
    compare,
    compare_dirs,
    load_steps,
    pair_by_nearest_time,
    scale_matches,
    step_mad,
)
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


def scale(t: float, target: str, old: int, new: int) -> dict[str, Any]:
    return {"t": t, "kind": "scale", "target": target, "name": "x", "old": old, "new": new}


def test_scale_events_pair_by_direction_and_nearest_time() -> None:
    a = trace(
        10,
        [
            scale(100, "deployment", 1, 2),
            scale(270, "deployment", 2, 4),
            scale(900, "deployment", 4, 1),
        ],
    )
    # B missed A's first scale-up: in order, A's 100 s would pair with B's 260 s.
    b = trace(10, [scale(260, "deployment", 2, 3), scale(250, "node-pool", 1, 2)])
    ups = [m for m in scale_matches(a, b) if (m.target, m.direction) == ("deployment", "up")]
    assert [(m.a_t, m.b_t, m.delta) for m in ups] == [(100.0, None, None), (270.0, 260.0, -10.0)]
    assert (ups[1].a_change, ups[1].b_change) == ("2->4", "2->3")
    found = {(m.target, m.direction): m for m in scale_matches(a, b)}
    assert found[("deployment", "down")].a_t == 900.0  # a down never pairs with an up
    assert found[("deployment", "down")].b_t is None
    assert found[("node-pool", "up")].a_t is None and found[("node-pool", "up")].b_t == 250.0
    far = [m for m in scale_matches(a, b, max_gap_s=5) if m.target == "deployment"]
    assert all(m.a_t is None or m.b_t is None for m in far)  # 10 s apart: not a pair


times = st.lists(st.integers(0, 400).map(float), max_size=12)


@settings(max_examples=200, deadline=None)
@given(a=times, b=times, gap=st.one_of(st.none(), st.integers(0, 100).map(float)))
def test_nearest_time_pairing_is_a_stable_matching(
    a: list[float], b: list[float], gap: float | None
) -> None:
    pairs = pair_by_nearest_time(a, b, gap)
    assert sorted(i for i, _ in pairs if i is not None) == list(range(len(a)))
    assert sorted(j for _, j in pairs if j is not None) == list(range(len(b)))
    partner_gap_a = {i: abs(b[j] - a[i]) for i, j in pairs if i is not None and j is not None}
    partner_gap_b = {j: abs(b[j] - a[i]) for i, j in pairs if i is not None and j is not None}
    limit = math.inf if gap is None else gap
    assert all(d <= limit for d in partner_gap_a.values())
    # No A and B both prefer each other to their partners (unpaired: any partner within
    # the gap is preferred), so no event pairs with a far one while a near one is free.
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            d = abs(y - x)
            if d <= limit:
                assert not (
                    d < partner_gap_a.get(i, math.inf) and d < partner_gap_b.get(j, math.inf)
                ), (i, j)
    starts = [
        min(
            t
            for t in (a[i] if i is not None else None, b[j] if j is not None else None)
            if t is not None
        )
        for i, j in pairs
    ]
    assert starts == sorted(starts)


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
    assert result.latency_source == {"a": FROM_PER_SECOND, "b": FROM_PER_SECOND}
    assert sum("no latency_histogram.csv" in w for w in result.warnings) == 2


def histogram_of(per_second: list[list[float]]) -> dict[str, list[Cell]]:
    rows = sorted((t, v) for t, values in enumerate(per_second) for v in values)
    merged: dict[tuple[int, float], int] = {}
    for key in rows:
        merged[key] = merged.get(key, 0) + 1
    return {
        "t": [t for t, _ in merged],
        "latency_s": [v for _, v in merged],
        "count": list(merged.values()),
    }


def test_step_percentiles_merge_the_histograms() -> None:
    # 5 requests a second: each second's nearest-rank p95 and p99 are both its slowest, so the
    # mean of per-second percentiles makes p95 == p99; the merged 50 requests do not.
    seconds = [[0.1, 0.2, 0.3, 0.4, 1.0 + t] for t in range(10)]
    slowest = [max(v) for v in seconds]
    a = trace(10, users=[5] * 10, completed_rps=[5] * 10, latency_p95=slowest, latency_p99=slowest)
    a.latency_histogram = histogram_of(seconds)
    result = compare(a, a, min_step_s=0)
    (step,) = result.steps
    every = sorted(v for values in seconds for v in values)
    # nearest rank ceil(q * 50): p50 the 25th, p95 the 48th, p99 the 50th of the merged 50
    assert step.latency["latency_p50"]["a"] == every[24] == 0.3
    assert step.latency["latency_p95"]["a"] == every[47] == 8.0
    assert step.latency["latency_p99"]["a"] == every[49] == 10.0
    assert result.latency_source["a"] == FROM_HISTOGRAM
    assert LatencyHistogram(a.latency_histogram).percentiles(3, 5) == {
        "latency_p50": 0.3,
        "latency_p95": 5.0,
        "latency_p99": 5.0,
    }
    assert LatencyHistogram(a.latency_histogram).percentiles(20, 30)["latency_p95"] is None


@settings(max_examples=50, deadline=None)
@given(
    per_second=st.lists(
        st.lists(st.floats(0.001, 60.0, allow_nan=False), max_size=8), min_size=1, max_size=8
    ),
    cut=st.integers(0, 8),
)
def test_merged_percentiles_are_the_nearest_rank_of_all_requests(
    per_second: list[list[float]], cut: int
) -> None:
    hist = LatencyHistogram(histogram_of(per_second))
    for start, end in ((0, cut), (cut, len(per_second))):
        values = sorted(v for t in range(start, min(end, len(per_second))) for v in per_second[t])
        got = hist.percentiles(start, end)
        for name, q in (("latency_p50", 0.5), ("latency_p95", 0.95), ("latency_p99", 0.99)):
            want = values[max(1, math.ceil(q * len(values))) - 1] if values else None
            assert got[name] == want


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
    assert "replicas_desired" in text and "cost: A $" in text
    # The overall table first, then the scale events.
    assert text.index("overall") < text.index("latency p95") < text.index("scale events, paired")
    assert same.warnings == [] and same.latency_source == {"a": FROM_HISTOGRAM, "b": FROM_HISTOGRAM}
    assert any("ran different scenarios" in w for w in capped.warnings)


def test_a_whole_run_step_has_the_summary_percentiles(tmp_path: Path) -> None:
    run = simulate(load_scenario(LAB, ["duration=6m"]))
    assert run.latency_histogram is not None
    whole = LatencyHistogram(run.latency_histogram).percentiles(0, len(run))
    assert [whole[k] for k in ("latency_p50", "latency_p95", "latency_p99")] == [
        run.summary[k] for k in ("latency_p50", "latency_p95", "latency_p99")
    ]
    assert whole["latency_p95"] != whole["latency_p99"]
    run.write(tmp_path / "run")
    again = LatencyHistogram(Trace.read(tmp_path / "run").latency_histogram or {})
    read_back = again.percentiles(0, len(run))
    for key, value in whole.items():
        assert read_back[key] == pytest.approx(value, rel=1e-5)  # written to 6 digits
    assert sum(int(c or 0) for c in run.latency_histogram["count"]) == run.summary["requests_ok"]


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
    assert set(data) == {
        "a",
        "b",
        "span",
        "overall",
        "scale_events",
        "timelines",
        "steps",
        "cost",
        "latency_source",
        "warnings",
    }
    assert [r["key"] for r in data["overall"]][:5] == [
        "requests_ok",
        "requests_failed",
        "latency_p50",
        "latency_p95",
        "latency_p99",
    ]
    assert "warning:" not in done.output  # the same scenario, both with histograms
    page = (out / "report.html").read_text()
    assert page.count('class="plotly-graph-div"') == 1
    # the overall table comes first; legends name the runs by their short names
    assert page.index("<h2>Overall</h2>") < page.index("<h2>Timelines</h2>")
    assert '"name":"a"' in page and '"name":"b"' in page
    assert compare_dirs(tmp_path / "a", tmp_path / "a").cost["diff"] == 0.0
    missing = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "cannot compare" in missing.output
    other = load_scenario(LAB, ["duration=6m", "hpa.maxReplicas=2"])
    simulate(other).write(tmp_path / "c")
    (tmp_path / "c" / "latency_histogram.csv").unlink()
    differs = CliRunner().invoke(
        app, ["compare", str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "ac")]
    )
    assert differs.exit_code == 0, differs.output
    assert "ran different scenarios" in differs.output
    assert "has no latency_histogram.csv" in differs.output
    (tmp_path / "c" / "latency_histogram.csv").write_text("t,latency,n\n0,1,1\n")
    bad = CliRunner().invoke(
        app, ["compare", str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2 and "latency_histogram.csv has columns" in bad.output
    assert not (tmp_path / "x").exists()
