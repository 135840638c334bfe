"""Replay files honour their time column; CSV or Parquet; t,users drives Locust users."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from sim.cli import app
from sim.engine import simulate
from sim.errors import ScenarioError
from sim.lint import bare_durations, load_cut_short, scenario_notes
from sim.loader import build_scenario, read_scenario, with_overrides
from sim.replay import RATE_NAMES, Series, read_series
from sim.sweep.axes import scale_load

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "scenarios" / "gsp777.yaml"


def open_loop(tmp_path: Path, rate: dict, duration: str = "30m") -> dict:
    """The lab's cluster under an open-loop replay (raw mapping)."""
    return {
        "name": "replay",
        "duration": duration,
        "hpa": {"minReplicas": 1, "maxReplicas": 4},
        "load": {"kind": "open_loop", "rate": {"kind": "replay", **rate}},
    }


def build(tmp_path: Path, data: dict, overrides: list[str] | None = None):  # type: ignore[no-untyped-def]
    return build_scenario(data, "test.yaml", overrides, base_dir=tmp_path)


def test_each_rate_holds_until_the_next_t(tmp_path: Path) -> None:
    """The issue's file: t = 0, 60, ..., 1740 at 3.3 req/s is ~5940 requests, not 30 s of it."""
    (tmp_path / "rates.csv").write_text("t,rps\n" + "".join(f"{60 * i},3.3\n" for i in range(30)))
    scenario = build(tmp_path, open_loop(tmp_path, {"file": "rates.csv"}))
    assert scenario.load.rate.end == 1800.0  # the last row holds one step (60 s)
    assert load_cut_short(scenario) == []
    sent = simulate(scenario).summary["requests_total"]
    assert abs(sent - 5940) < 5 * 5940**0.5  # Poisson: within 5 standard deviations


@given(
    st.lists(st.floats(0.1, 100), min_size=1, max_size=20),
    st.lists(st.integers(0, 1000), min_size=20, max_size=20),
    st.floats(0, 3000),
)
def test_value_at_t_is_the_last_row_at_or_before_t(
    steps: list[float], values: list[int], t: float
) -> None:
    times = [sum(steps[:i]) for i in range(len(steps))]
    series = Series(tuple(times), tuple(float(v) for v in values[: len(times)]), times[-1] + 5)
    got = series.at(t)
    if t >= series.end:
        assert got is None
    else:
        before = [v for time, v in zip(series.times, series.values, strict=False) if time <= t]
        assert got == (before[-1] if before else 0.0)


@pytest.mark.parametrize(
    ("text", "extra"),
    [
        ("t,rps\n0,1\n10,5\n20,2\n", {}),  # by name
        ("rps,time\n1,0\n5,10\n2,20\n", {}),  # by name, other order
        ("when,how_many\n0,1\n10,5\n20,2\n", {}),  # unknown names: by position
        ("0,1\n10,5\n20,2\n", {}),  # no header
        ("# from prod\n\nTime, Requests/s ,x\n0,1,9\n10,5,9\n20,2,9\n", {}),  # spaces, comments
        ("a,b,c\n9,0,1\n9,10,5\n9,20,2\n", {"time_column": 1, "rate_column": "c"}),
    ],
)
def test_any_header_by_name_or_position(tmp_path: Path, text: str, extra: dict) -> None:
    (tmp_path / "r.csv").write_text(text)
    rate = build(tmp_path, open_loop(tmp_path, {"file": "r.csv", **extra})).load.rate
    assert [rate.rate(t) for t in (0, 9.9, 10, 19, 20, 29.9, 30)] == [1, 1, 5, 5, 2, 2, 0]


def test_one_column_is_one_value_per_second(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("rps\n1\n2\n3\n")
    rate = build(tmp_path, open_loop(tmp_path, {"file": "r.txt"})).load.rate
    assert [rate.rate(t) for t in (0, 1.5, 2, 3)] == [1, 2, 3, 0]


def test_parquet_with_timestamps_counts_from_the_first_row(tmp_path: Path) -> None:
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    table = pa.table(
        {
            "timestamp": [start + timedelta(minutes=m) for m in (0, 1, 2)],
            "qps": [2.0, 6.0, 4.0],
        }
    )
    pq.write_table(table, tmp_path / "r.parquet")
    rate = build(tmp_path, open_loop(tmp_path, {"file": "r.parquet"})).load.rate
    assert [rate.rate(t) for t in (0, 59, 60, 120, 179, 180)] == [2, 2, 6, 4, 4, 0]
    (tmp_path / "iso.csv").write_text("2026-03-01T12:00:00Z,1\n2026-03-01T12:00:30Z,3\n")
    iso = build(tmp_path, open_loop(tmp_path, {"file": "iso.csv"})).load.rate
    assert (iso.end, iso.rate(29), iso.rate(30)) == (60.0, 1, 3)


@pytest.mark.parametrize(
    ("text", "extra", "words"),
    [
        ("t,rps\n0,1\n60,2\n30,3\n", {}, "r.csv:4: time '30' is not after"),
        ("t,rps\n0,1\n60,-2\n", {}, "r.csv:3: a rate in req/s must be finite and >= 0"),
        ("t,rps\n0,1\n60,lots\n", {}, "r.csv:3: expected a rate in req/s, got 'lots'"),
        ("t,rps\n0,1\n", {"rate_column": "qps"}, "no value column 'qps' (the file has: t, rps)"),
        ("t,rps\nyesterday,1\n", {}, "neither seconds nor an ISO 8601 timestamp"),
        ("t,rps\n", {}, "no data rows"),
    ],
)
def test_a_bad_file_names_the_file_line_and_column(
    tmp_path: Path, text: str, extra: dict, words: str
) -> None:
    (tmp_path / "r.csv").write_text(text)
    with pytest.raises(ScenarioError) as caught:
        build(tmp_path, open_loop(tmp_path, {"file": "r.csv", **extra}))
    assert words in " ".join(str(caught.value).split())


def test_the_cli_warns_when_the_file_ends_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("t,rps\n0,1\n60,2\n")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "load: {kind: open_loop, rate: {kind: replay, file: r.csv}}\nduration: 10m\n"
    )
    done = CliRunner().invoke(app, ["validate", str(scenario)])
    assert done.exit_code == 0, done.output
    text = " ".join(done.output.split())
    assert "replay file r.csv ends at 2m, before the run's duration 10m: the rate is 0" in text
    loaded, _ = read_scenario(scenario, ["load.rate.hold_last=9m"])
    assert loaded.load.rate.end == 600 and load_cut_short(loaded) == []  # hold_last covers it


def test_t_users_drives_closed_loop_users(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text("time,users\n0,2\n60,5\n120,1\n")
    data = {
        "name": "users",
        "duration": "4m",
        "load": {
            "kind": "locust",
            "shape": {"kind": "replay", "file": "users.csv", "spawn_rate": 10},
        },
    }
    scenario = build(tmp_path, data)
    trace = simulate(scenario)
    users = trace.column("users")
    assert (users[30], users[90], users[150]) == (2, 5, 1)
    assert users[200] == 0  # the file ended at 180 s: Locust stops
    assert any("Locust stops from there on" in n for n in load_cut_short(scenario))
    doubled = build(tmp_path, scale_load(data, 2)).load.shape
    assert [doubled.tick(t) for t in (0, 60, 120, 180)] == [(4, 10), (10, 10), (2, 10), None]
    with pytest.raises(ScenarioError, match="whole number"):
        (tmp_path / "users.csv").write_text("t,users\n0,2.5\n")
        build(tmp_path, data)


def test_load_scale_multiplies_replayed_rates(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("t,rps\n0,1\n10,3\n")
    data = open_loop(tmp_path, {"file": "r.csv"})
    rate = build(tmp_path, scale_load(data, 2.5)).load.rate
    assert (rate.rate(0), rate.rate(10)) == (2.5, 7.5)


def test_rate_names_match_whatever_their_case_and_spacing(tmp_path: Path) -> None:
    for name in RATE_NAMES:
        (tmp_path / "r.csv").write_text(f"x, {name.upper()} ,t\n7,1,0\n7,2,10\n")
        series = read_series(tmp_path / "r.csv", what="rate", names=RATE_NAMES)
        assert series.values == (1, 2) and series.times == (0, 10), name


# --- notes: bare-number durations and loads cut short ----------------------------------------


def test_a_bare_number_duration_says_seconds_were_taken() -> None:
    data = {"duration": 45, "slo": {"p95": "2"}, "load": {"kind": "locust"}}
    raw = with_overrides(data, "x", ["hpa_controller.sync_period=15"])
    scenario = build_scenario(raw, "x")
    notes = bare_durations(scenario, raw)
    assert [n.split(" has no unit")[0] for n in notes] == [
        "duration=45",
        "hpa_controller.sync_period=15",
        "slo.p95=2",
    ]
    assert "read as 45 seconds" in notes[0]
    written = with_overrides(data, "x", ["duration=45s", "slo.p95=2s"])
    assert bare_durations(build_scenario(written, "x"), written) == []


def test_a_duration_that_cuts_the_load_short_is_named() -> None:
    scenario, raw = read_scenario(LAB, ["duration=45"])
    notes = scenario_notes(scenario, raw)
    assert any("ends before the load does (steps stop (time_limit) at 11m)" in n for n in notes)
    full, raw = read_scenario(LAB)
    assert scenario_notes(full, raw) == []  # the lab runs 30m, past its 11m of steps
    spike, raw = read_scenario(ROOT / "scenarios" / "spike.yaml", ["duration=15m"])
    assert any("the spike ends at 20m" in n for n in scenario_notes(spike, raw))


def test_a_rest_pool_of_one_thread_is_named() -> None:
    """TF Serving's HTTP event loop holds one REST thread for good: a pool of 1 answers none."""
    one, raw = read_scenario(LAB, ["serving.rest_api_num_threads=1"])
    assert any("event loop holds that thread" in n for n in scenario_notes(one, raw))
    two, raw = read_scenario(LAB, ["serving.rest_api_num_threads=2"])
    assert scenario_notes(two, raw) == []
