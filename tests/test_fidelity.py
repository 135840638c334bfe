"""scalelab fidelity: the simulated ladder, the comparison, the outputs, and a real short ladder
against ResNet101 served here (CI's regression guard on the serving model)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import UserError
from sim.serving.fidelity import (
    WAITING_SPREAD_RANGE,
    Bounds,
    ClosedLoop,
    Row,
    Rung,
    Step,
    closed_loops,
    compare,
    fit_waiting_spread,
    pooled,
    served_ratio,
    served_spread,
    simulate_ladder,
    tail_counts,
    write,
)
from sim.serving.profile import profile_from_dict
from tests.test_profile import synthetic

HAS_TF = importlib.util.find_spec("tensorflow") is not None


def linear_profile(service: float = 0.2, top: int = 8) -> dict:
    """X(n) = n / service: requests never slow each other, up to ``top`` in flight."""
    return synthetic(
        threads=(2,),
        concurrency=tuple(range(1, top + 1)),
        batch=(1,),
        throughput=lambda t, n: n / service,
        cpu=lambda t, n: 0.5 * n,
        sigma=0.0,
    )


def test_simulated_ladder_follows_the_closed_loop_formula() -> None:
    profile = profile_from_dict(linear_profile())
    rungs = simulate_ladder(
        profile, 2.0, [Step(1, 120, 5), Step(4, 120, 5)], wait=(0.8, 0.9), seed=3
    )
    for rung in rungs:
        # each user cycles through service (0.2 s) and a wait of 0.85 s on average
        assert rung.throughput_rps == pytest.approx(rung.users / 1.05, rel=0.04)
        assert rung.p50 == pytest.approx(0.2, rel=0.01)
        # U(n) = 0.5 n cores, n = X x 0.2 in flight on average
        assert rung.cpu_cores == pytest.approx(0.5 * rung.throughput_rps * 0.2, rel=0.05)
        assert rung.failed == 0
    assert rungs[1].start == pytest.approx(125 + 5)


def test_simulated_ladder_saturates_at_the_plateau() -> None:
    profile = profile_from_dict(linear_profile(top=2))  # plateau 10 req/s from 2 in flight
    (rung,) = simulate_ladder(profile, 2.0, [Step(30, 60, 10)], seed=1)
    assert rung.throughput_rps == pytest.approx(10.0, rel=0.03)
    # Little's law: 30 users, 10 req/s, 0.85 s of waiting each -> 3 s - 0.85 s in the server
    assert sum(rung.latencies) / len(rung.latencies) == pytest.approx(30 / 10 - 0.85, rel=0.05)


def test_the_simulated_server_gets_what_the_machines_other_processes_leave() -> None:
    """A rung whose real machine gave 0.5 of its 2 cores to other processes (Locust, the OS):
    the saturated server serves and burns in proportion to the 1.5 left (threads_below), and
    a rung where they took nothing is untouched."""
    profile = profile_from_dict(linear_profile(top=2))  # 10 req/s at 2 cores
    steps = [Step(30, 60, 10), Step(30, 60, 10)]
    alone = simulate_ladder(profile, 2.0, steps, seed=1)
    shared = simulate_ladder(profile, 2.0, steps, seed=1, others=[0.0, 0.5])
    assert shared[0].latencies == alone[0].latencies
    assert shared[1].throughput_rps == pytest.approx(0.75 * alone[1].throughput_rps, rel=0.03)
    assert shared[1].cpu_cores == pytest.approx(0.75 * alone[1].cpu_cores, rel=0.03)
    with pytest.raises(ValueError, match="one value per step"):
        simulate_ladder(profile, 2.0, steps, others=[0.1])


def test_pooled_rungs_average_the_other_processes_cpu() -> None:
    a, b = rung(2, 10, [0.2] * 10, 0.5), rung(2, 14, [0.3] * 14, 0.7)
    a.others_cores, b.others_cores = 0.02, 0.04
    assert pooled([[a], [b]])[0].others_cores == pytest.approx(0.03)
    b.others_cores = None  # one ladder unmeasured: the pool is too
    assert pooled([[a], [b]])[0].others_cores is None


def test_simulated_ladder_counts_timed_out_requests_as_failed() -> None:
    # 30 users on a 10 req/s plateau wait ~2.2 s in the server: with a 1 s client timeout
    # their requests fail (and the work left behind keeps the server too busy for any to pass)
    profile = profile_from_dict(linear_profile(top=2))
    (rung,) = simulate_ladder(profile, 2.0, [Step(30, 30, 10)], seed=1, timeout=1.0)
    assert rung.failed > 300 and all(v <= 1.0 for v in rung.latencies)


def test_same_seed_same_ladder() -> None:
    profile = profile_from_dict(linear_profile())
    steps = [Step(3, 20, 2)]
    a, b = simulate_ladder(profile, 2, steps, seed=5), simulate_ladder(profile, 2, steps, seed=5)
    assert a[0].latencies == b[0].latencies
    assert simulate_ladder(profile, 2, steps, seed=6)[0].latencies != a[0].latencies


def test_closed_loops_replay_the_calibration_points_on_the_model() -> None:
    """Each batch-1 point at the served thread count, simulated as the calibration ran it:
    its throughput comes back (no think time, so X(n) itself), and requests queued in the
    inter-op threads' queues spread the latency; through a REST pool (a profile measured over
    REST) the requests past its 8 threads wait in order instead, and the spread narrows."""
    data = synthetic(
        threads=(1, 2),
        concurrency=(1, 2, 3, 4, 6, 8, 12),
        throughput=lambda t, n: 10.0 * t * min(n, 2) / 2 if t == 2 else 7.0,
        sigma=0.05,
    )
    loops = closed_loops(profile_from_dict(data), 2.0, requests=400, seeds=2)
    assert [c.n for c in loops] == [1, 2, 3, 4, 6, 8, 12]  # the 2-thread ladder, batch 1
    for c in loops:
        error = c.error("throughput_rps")
        assert error is not None and abs(error) < 3.0
        assert c.measured["p50"] == pytest.approx(c.n / c.measured["throughput_rps"], rel=0.01)
    ratio = {c.n: ratio_of(c) for c in loops}
    assert ratio[12] > 1.4
    data["kind"] = "endpoint"
    rest = closed_loops(profile_from_dict(data), 2.0, requests=400, seeds=2)[-1]
    assert ratio_of(rest) < ratio[12] - 0.15


def ratio_of(loop: ClosedLoop) -> float:
    p50, p95 = loop.simulated["p50"], loop.simulated["p95"]
    assert p50 is not None and p95 is not None
    return p95 / p50


def test_steps_are_checked() -> None:
    with pytest.raises(UserError, match="users >= 1"):
        Step(0, 10, 1)


def rung(users: int, ok: int, latencies: list[float], cpu: float | None = 1.0) -> Rung:
    return Rung(users, 0.0, 10.0, ok, 0, latencies, cpu)


def test_errors_are_relative_to_the_real_side(tmp_path: Path) -> None:
    real = [rung(1, 10, [0.2] * 10), rung(4, 40, [0.4] * 40)]
    simulated = [rung(1, 11, [0.25] * 11), rung(4, 40, [0.4] * 40, None)]
    rows = compare([real], [simulated])
    assert rows[0].error("throughput_rps") == pytest.approx(10.0)
    assert rows[0].real_range == {} and rows[0].spread("p50") is None  # one ladder
    assert rows[0].error("p50") == pytest.approx(25.0)
    assert rows[1].error("cpu_cores") is None
    misses = Bounds(throughput=5, latency=15).misses(rows)
    assert [str(m) for m in misses] == [
        "1 users: throughput_rps off by +10.0% (bound 5%)",
        "1 users: p50 off by +25.0% (bound 15%)",
        "1 users: p95 off by +25.0% (bound 15%)",
    ]
    files = write(tmp_path, rows, {"machine": "here"})
    assert [f.name for f in files] == ["fidelity.csv", "fidelity.json", "fidelity.png"]
    lines = (tmp_path / "fidelity.csv").read_text().splitlines()
    assert lines[0].startswith("users,real_throughput_rps,sim_throughput_rps,error_throughput")
    assert lines[1].startswith("1,1,1.1,10,")
    data = json.loads((tmp_path / "fidelity.json").read_text())
    assert data["machine"] == "here" and data["rows"][1]["error_pct"]["cpu_cores"] is None
    with pytest.raises(ValueError, match="different user counts"):
        compare([real], [simulated[:1]])


def test_repeated_real_ladders_are_pooled_and_their_range_kept(tmp_path: Path) -> None:
    # two real ladders of one rung: 10 and 14 requests in 10 s, latencies 0.2 and 0.3 s
    first, second = [rung(2, 10, [0.2] * 10, 0.5)], [rung(2, 14, [0.3] * 14, 0.7)]
    (row,) = compare([first, second], [[rung(2, 12, [0.25] * 12, 0.6)]])
    assert row.real["throughput_rps"] == pytest.approx(1.2)  # 24 requests over 20 s
    assert row.real["p50"] == 0.3  # over all 24 responses: 14 of them took 0.3 s
    assert row.real["cpu_cores"] == pytest.approx(0.6)
    assert row.real_range["throughput_rps"] == (1.0, 1.4)
    assert row.real_range["p50"] == (0.2, 0.3)
    assert row.spread("throughput_rps") == pytest.approx(100 * 0.4 / 1.2)
    assert row.error("throughput_rps") == pytest.approx(0.0)
    write(tmp_path, [row], {})
    header, line = (tmp_path / "fidelity.csv").read_text().splitlines()
    cells = dict(zip(header.split(","), line.split(","), strict=True))
    assert (cells["real_p50_min"], cells["real_p50_max"]) == ("0.2", "0.3")
    data = json.loads((tmp_path / "fidelity.json").read_text())
    assert data["rows"][0]["real_spread_pct"]["p50"] == pytest.approx(100 * 0.1 / 0.3)
    # a miss names the real side's own range, which one run cannot resolve below
    assert str(Bounds(latency=10).misses([row])[0]) == (
        "2 users: p50 off by -16.7% (bound 10%; the real ladders 33% apart)"
    )


def test_each_cell_has_the_standard_error_an_exactly_right_model_meets() -> None:
    """Two real ladders at 1.0 and 1.4 req/s: sample SD 0.283, standard error 0.2 of the pooled
    1.2, so 16.7% of it; with one simulated seed the real side is the whole noise. An exactly
    right model then misses the 5% req/s bound with probability 2(1 - Phi(0.3)) = 0.764 and each
    15% latency bound (p50 and p95 at 0.2 and 0.3 s: also 16.7%) with 2(1 - Phi(0.9)) = 0.368."""
    first, second = [rung(2, 10, [0.2] * 10, 0.5)], [rung(2, 14, [0.3] * 14, 0.7)]
    (row,) = compare([first, second], [[rung(2, 12, [0.25] * 12, 0.6)]])
    assert row.real_se["throughput_rps"] == pytest.approx(0.2)
    assert row.real_se["p50"] == pytest.approx(0.05) and row.sim_se == {}
    assert row.noise("throughput_rps") == pytest.approx(100 / 6)
    expected, cells = Bounds(throughput=5, latency=15).misses_from_noise([row]) or (0.0, 0)
    assert cells == 3 and expected == pytest.approx(0.76418 + 2 * 0.36812, abs=1e-4)
    # the seeds' spread adds to it: 3 seeds at 1.1, 1.2 and 1.3 req/s, standard error 0.0577
    seeds = [[rung(2, n, [0.25] * n, 0.6)] for n in (11, 12, 13)]
    (both,) = compare([first, second], seeds)
    assert both.noise("throughput_rps") == pytest.approx(100 * math.hypot(0.2, 0.1 / 3**0.5) / 1.2)
    # one real ladder resolves nothing, and a wider bound cannot expect more misses
    assert Bounds().misses_from_noise(compare([first], seeds)) is None
    assert compare([first], seeds)[0].noise("p50") is None
    wide = Bounds(throughput=10, latency=30).misses_from_noise([both])
    assert wide is not None and wide[0] < (Bounds().misses_from_noise([both]) or (0.0, 0))[0]


def test_a_miss_says_whether_a_simulated_ladder_reaches_the_real_range(tmp_path: Path) -> None:
    """Single ladders of one length differ in the model too (at 2 users, whether the users fall
    into step decides the p50): each side's range over its ladders is kept, and a miss says
    whether some simulated seed came out inside the real ladders' range."""
    real = [[rung(2, 20, [0.30] * 20)], [rung(2, 20, [0.34] * 20)]]
    near = [[rung(2, 20, [v] * 20)] for v in (0.22, 0.31, 0.25)]  # one seed reaches 0.30..0.34
    far = [[rung(2, 20, [v] * 20)] for v in (0.22, 0.24, 0.25)]
    (row,) = compare(real, near)
    assert row.sim_range["p50"] == (0.22, 0.31) and row.real_range["p50"] == (0.30, 0.34)
    assert row.overlaps("p50") is True and row.overlaps("throughput_rps") is True
    (miss,) = Bounds(latency=15).misses([row])[:1]
    assert (miss.metric, miss.inside) == ("p50", True)
    assert str(miss).endswith("simulated ladders 0.22..0.31, within the real 0.3..0.34)")
    (apart,) = compare(real, far)
    assert apart.overlaps("p50") is False
    assert [m.inside for m in Bounds(latency=15).misses([apart])] == [False, False]
    # one ladder a side: each is a range of one value
    (single,) = compare(real[:1], near[1:2])
    assert single.sim_range == {} and single.overlaps("p50") is False
    assert compare(real[:1], [real[0]])[0].overlaps("p95") is True
    write(tmp_path, [row], {})
    header, line = (tmp_path / "fidelity.csv").read_text().splitlines()
    cells = dict(zip(header.split(","), line.split(","), strict=True))
    assert (cells["sim_p50_min"], cells["sim_p50_max"]) == ("0.22", "0.31")
    assert json.loads((tmp_path / "fidelity.json").read_text())["rows"][0]["sim_range"]["p50"] == [
        0.22,
        0.31,
    ]


def test_a_row_without_a_real_value_has_no_error() -> None:
    assert Row(1, {"p50": None}, {"p50": 0.3}).error("p50") is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--users", "0,2"], "--users takes integers >= 1"),
        (["--users", "a"], "comma-separated integers"),
        (["--wait", "0.9"], "--wait takes LOW,HIGH"),
        (["--endpoint", "http://127.0.0.1:9"], "--endpoint needs --profile"),
        (["--cpu-pid", "1"], "read a server given by --endpoint"),
        (["--saved-model", "/tmp/m"], "--saved-model needs --profile"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    args: list[str], message: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["fidelity", *args, "--out", str(out)])
    assert done.exit_code == 2, done.output
    assert message in " ".join(done.output.split())
    assert not out.exists()


def test_unreachable_endpoint_names_the_url(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(json.dumps(linear_profile()))
    out = tmp_path / "out"
    done = CliRunner().invoke(
        app,
        [
            "fidelity",
            "--endpoint",
            "http://127.0.0.1:9",
            "--profile",
            str(profile),
            "--out",
            str(out),
        ],
    )
    assert done.exit_code == 2, done.output
    assert "127.0.0.1:9" in done.output and "Traceback" not in done.output
    assert not out.exists()


@pytest.mark.resnet
@pytest.mark.skipif(not HAS_TF, reason="needs the calibrate extra (tensorflow-cpu)")
def test_resnet101_short_ladder_real_against_simulated(
    tmp_path: Path, resnet101_export: Path
) -> None:
    """CI's guard: calibrate ResNet101 here (a short ladder at this machine's cores), serve the
    same SavedModel, drive it with real Locust at 1, 4 and 24 users, and hold the simulated
    ladder within loose bounds widened by the drift fidelity measured (a shared CI machine is
    noisy; README has the tight figures).
    Light load and saturation, not the knee: near 12 users the real tails move most from one
    run to the next (p95 -29% to -48% in two runs here), so a bound there catches noise."""
    from sim.serving.calibrate.host import usable_cpus
    from sim.serving.calibrate.local import LocalRun, default_grid, grid_with, run_local
    from sim.serving.profile import dump_profile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cores = len(usable_cpus())
    # the after-idle factors in --quick's 4 rounds of 2 kept a gap: one round of blocks of 5
    # (4 kept, one block) let a disturbed block read 1.36 at 30 ms, and the 4-user p95 came
    # out 57% high
    # a fixed ladder through the knee (n = 2 or 3 here) onto the plateau, which holds beyond
    grid = grid_with(default_grid(quick=True), threads=[cores], concurrency=[1, 2, 4, 8])
    grid = dataclasses.replace(grid, batch=())
    run = LocalRun(grid=grid, export_dir=resnet101_export, command="test")
    calibrated = run_local(run)
    # the real ResNet101: ~7.8 GFLOPs a 224x224 image, tenths of a second on modern cores
    assert calibrated["name"].startswith("resnet101-cpu-")
    assert "ResNet101" in calibrated["model"]["architecture"]
    lone, *_, top = sorted(calibrated["points"], key=lambda p: p["concurrency"])
    assert 0.03 < lone["latency_s"][3] < 5 and 0 < lone["cpu_cores"] <= cores + 0.1
    assert lone["throughput_rps"] == pytest.approx(1 / lone["latency_s"][3], rel=0.3)
    assert top["latency_s"][3] > 2 * lone["latency_s"][3]  # 8 in flight on 2 cores queue
    profile = dump_profile(calibrated, tmp_path / "profile.yaml")
    out = tmp_path / "fidelity"
    done = CliRunner().invoke(
        app,
        [
            *("fidelity", "--profile", str(profile), "--saved-model", str(resnet101_export)),
            *("--users", "1,4,24", "--seconds", "10", "--settle", "2", "--out", str(out)),
            *("--lone-requests", "6"),
            *("--max-error-rps", "1000", "--max-error-latency", "1000"),  # checked below
        ],
    )
    assert done.exit_code == 0, done.output
    data = json.loads((out / "fidelity.json").read_text())
    rows = data["rows"]
    assert [r["users"] for r in rows] == [1, 4, 24]
    assert all(r["real"]["ok"] > 0 and r["real"]["failed"] == 0 for r in rows)
    # the served path's plateau against the SavedModel in its own worker, pair by pair
    (pairs,) = data["served_plateau"]["rounds"]
    assert len(pairs) == 4 and all(p["in_process_rps"] > 0 and p["rest_rps"] > 0 for p in pairs)
    assert all(1 < p["rest_cpu_cores"] <= cores + 0.1 for p in pairs)  # the server process's
    assert 0.5 < data["served_plateau"]["ratio"] < 1.2
    # the REST step's lone requests, in process and through the API turn about
    rest = data["rest_overhead"]
    assert len(rest["lone_rest_times_s"]) == len(rest["lone_in_process_times_s"]) == 6
    assert 0 <= rest["overhead_s"] < 0.1  # HTTP, JSON and base64 of one lab image
    # the served tails at the REST handlers (4 x cores - 1, below the ladder's top of 8) and
    # halfway from the inter-op width (the cores) to them, the work's spread past the width
    # fitted to each
    tail = data["waiting_spread"]
    handlers = min(8, 4 * cores - 1)
    assert [t["callers"] for t in tail["points"]] == [(cores + handlers) // 2, handlers]
    assert all(t["requests"] > 10 for t in tail["points"])  # 5 s each: 25-45 here
    assert all(1 < t["ratio"] < 4 and 0 <= t["sigma"] <= 1 for t in tail["points"])
    # Bounds widened by the machine's own move over the run, which fidelity measures (the lone
    # request after the ladders, and between calibration and ladders): a CI run here slowed by
    # 20% between calibration and saturation, and its real req/s at 24 users fell by as much.
    # Latencies from the nearest simulated seed: 10 s rungs hold 10-70 requests, and the seeds'
    # p95 at 4 users spans +-23% (0.22-0.36 s here); a CI run's real p95 there, 0.222 s, fell
    # 43% below the seeds' pooled 0.39 s (+76% in % of real), with a drift of 18%.
    drift = max(abs(rest["drift_pct"]), abs(rest["since_calibration_pct"]))
    for row in rows:
        nearest = row["nearest_error_pct"]
        assert abs(row["error_pct"]["throughput_rps"]) <= 15 + drift, (row, drift, done.output)
        assert abs(nearest["p50"]) <= 45 + drift, (row, drift, done.output)
        assert abs(nearest["p95"]) <= 45 + drift, (row, drift, done.output)


@pytest.mark.parametrize("sigma", [0.05, 0.2, 0.5])
def test_served_spread_recovers_a_lognormal_sigma(sigma: float) -> None:
    rng = np.random.default_rng(7)
    times = rng.lognormal(math.log(0.1), sigma, 4000).tolist()
    assert served_spread(times) == pytest.approx(sigma, rel=0.06)
    # the odd very slow request does not move it (an interquartile estimate)
    assert served_spread([*times[:40], 5.0, 9.0]) == pytest.approx(
        served_spread(times[:40]), rel=0.15
    )
    with pytest.raises(ValueError, match="at least 4"):
        served_spread([0.1, 0.2, -0.1])


def test_the_served_spread_is_a_floor_under_the_work_spread() -> None:
    profile = profile_from_dict(synthetic(threads=(1, 2), sigma=lambda t: 0.05))
    served = dataclasses.replace(profile, served_sigma=0.2)
    assert profile.spread(2.0, 1) == pytest.approx(0.05)
    assert served.spread(2.0, 1) == pytest.approx(0.2)
    assert served.spreads(2.0, 6) == [max(v, 0.2) for v in profile.spreads(2.0, 6)]
    again = profile_from_dict(served.to_dict())
    assert again.served_sigma == pytest.approx(0.2)
    assert profile_from_dict(profile.to_dict()).served_sigma is None


def test_repeat_runs_the_real_ladder_again_and_writes_its_range(tmp_path: Path) -> None:
    """``--repeat 2`` against a stand-in with a fixed service time (real Locust users): both
    ladders run, the files carry each figure's range over them, the table says so."""
    from cloud.serve import start_server
    from tests.test_cloud_ladder import FixedServable

    profile = tmp_path / "p.yaml"
    profile.write_text(json.dumps(linear_profile()))
    out = tmp_path / "out"
    running = start_server(FixedServable(0.05, workers=2), port=0)
    try:
        done = CliRunner().invoke(
            app,
            [
                *("fidelity", "--endpoint", running.url, "--profile", str(profile)),
                *("--users", "1,2", "--seconds", "1.5", "--settle", "0.3", "--wait", "0.1,0.2"),
                *("--repeat", "2", "--out", str(out)),
                *("--max-error-rps", "1000", "--max-error-latency", "1000"),
            ],
        )
    finally:
        running.close()
    assert done.exit_code == 0, done.output
    assert "real range" in done.output
    data = json.loads((out / "fidelity.json").read_text())
    # a remote server's machine is not this one: nothing of its CPU goes to other processes
    assert data["real"] == {"ladders": 2, "seeds": [1, 2], "others_cores": None}
    for row in data["rows"]:
        low, high = row["real_range"]["throughput_rps"]
        pooled = row["real"]["throughput_rps"]  # within the ladders', to rounding (1e-15)
        assert 0 < low <= pooled * (1 + 1e-9) and pooled <= high * (1 + 1e-9)
        assert row["real_spread_pct"]["throughput_rps"] >= 0
    header = (out / "fidelity.csv").read_text().splitlines()[0].split(",")
    assert {"real_p95_min", "real_p95_max"} <= set(header)


def test_rest_step_measures_what_the_served_path_adds_to_a_lone_request() -> None:
    """Lone requests in process (20 ms) and through a 60 ms stand-in's API, turn about: the
    sides alternate AB BA and never overlap, the warm-up requests are not kept, the REST step
    carries the difference as ``overhead_s`` (plus the stand-in's own HTTP time, a few ms
    here), the drift check compares both sides with the first round's, and a server that
    answers errors stops it with the URL and the answer."""
    import time

    from rich.console import Console

    from cloud.fidelity import _drift, _rest_overhead
    from cloud.serve import start_server
    from sim.serving.calibrate.worker import RestPredict, lone_pairs
    from tests.test_cloud_ladder import FixedServable

    profile = profile_from_dict(linear_profile(service=0.02))
    console = Console(quiet=True)
    body = json.dumps({"instances": [{"b64": "aGk="}]}).encode()
    spans: list[tuple[str, float, float]] = []

    def inside() -> None:
        start = time.perf_counter()
        time.sleep(0.02)
        spans.append(("in_process", start, time.perf_counter()))

    running = start_server(FixedServable(0.06, workers=1), port=0)
    try:
        rest = RestPredict(running.url, "image_classifier", body)

        def outside() -> None:
            start = time.perf_counter()
            rest()
            spans.append(("rest", start, time.perf_counter()))

        first = lone_pairs(inside, outside, count=8, waits=(0.01, 0.02), seed=1)
        served, figures = _rest_overhead(console, profile, [first])
        again = RestPredict(running.url, "image_classifier", body)
        drift = _drift(
            console, first, lone_pairs(inside, again, count=8, waits=(0.01, 0.02), seed=2)
        )
    finally:
        running.close()
    sides = [side for side, _, _ in spans[4:20]]  # after 2 warm-up requests a side
    assert sides == ["in_process", "rest", "rest", "in_process"] * 4  # AB BA
    for side, start, end in spans:
        assert not any(s < end and start < e for other, s, e in spans if other != side)
    assert len(figures["lone_rest_times_s"]) == len(figures["lone_in_process_times_s"]) == 8
    assert min(figures["lone_rest_times_s"]) >= 0.06
    assert 0.02 <= figures["lone_in_process_s"] < 0.03
    overhead = figures["overhead_s"]
    assert overhead == pytest.approx(figures["lone_rest_s"] - figures["lone_in_process_s"])
    assert 0.03 <= overhead < 0.06
    assert served.overhead_s == pytest.approx(profile.overhead_s + overhead)
    assert served.served_sigma == figures["served_sigma"] >= 0
    # the same fixed-time server after as before: no drift beyond the HTTP time's jitter
    assert drift["lone_rest_after_s"] >= 0.06 and abs(drift["drift_pct"]) < 20
    assert abs(drift["in_process_drift_pct"]) < 20
    failing = start_server(FixedServable(0.01, workers=1, fail=True), port=0)
    try:
        with pytest.raises(RuntimeError, match=r"HTTP 500.*on fire") as error:
            lone_pairs(
                inside,
                RestPredict(failing.url, "image_classifier", body),
                count=2,
                waits=(0.0, 0.01),
                seed=1,
            )
    finally:
        failing.close()
    assert failing.url in str(error.value)


def test_served_pairs_alternate_the_two_plateaus_window_after_window() -> None:
    """In process (2 callers of a 20 ms call: 100 req/s) against a 50 ms stand-in through its
    REST API (2 workers: 40 req/s): the sides never overlap, they swap order from one pair to
    the next, each pair reads both plateaus, the in-process side its own CPU, the API side the
    client's; a server answering errors stops it with the URL and the answer."""
    import time

    from cloud.serve import start_server
    from sim.serving.calibrate.worker import RestPredict, served_pairs
    from tests.test_cloud_ladder import FixedServable

    spans: list[tuple[str, float, float]] = []

    def inside() -> None:
        start = time.perf_counter()
        time.sleep(0.02)
        spans.append(("in_process", start, time.perf_counter()))

    body = json.dumps({"instances": [{"b64": "aGk="}]}).encode()
    running = start_server(FixedServable(0.05, workers=2), port=0)
    try:
        rest = RestPredict(running.url, "image_classifier", body)

        def outside() -> None:
            start = time.perf_counter()
            rest()
            spans.append(("rest", start, time.perf_counter()))

        outside.close = rest.close  # type: ignore[attr-defined]
        pairs = served_pairs(inside, outside, concurrency=2, callers=6, seconds=0.6, pairs=2)
    finally:
        running.close()
    assert len(pairs) == 2
    for pair in pairs:
        assert pair["in_process_rps"] == pytest.approx(100, rel=0.15)
        assert pair["rest_rps"] == pytest.approx(40, rel=0.15)
        assert pair["in_process_cpu_cores"] >= 0 and "rest_cpu_cores" not in pair
        assert 0 <= pair["client_cpu_cores"] < 2
    order = [side for i, (side, _, _) in enumerate(spans) if i == 0 or spans[i - 1][0] != side]
    assert order == ["in_process", "rest", "in_process"]  # AB BA, not AB AB
    for side, start, end in spans:
        others = [s for s in spans if s[0] != side]
        assert not any(s < end and start < e for _, s, e in others)
    failing = start_server(FixedServable(0.01, workers=1, fail=True), port=0)
    try:
        with pytest.raises(RuntimeError, match=r"HTTP 500.*on fire") as error:
            served_pairs(
                inside,
                RestPredict(failing.url, "image_classifier", body),
                concurrency=1,
                callers=2,
                seconds=0.2,
                pairs=1,
            )
    finally:
        failing.close()
    assert failing.url in str(error.value)


def lone(rest: list[float], inside: list[float]) -> list[dict[str, float]]:
    return [{"rest_s": r, "in_process_s": i} for r, i in zip(rest, inside, strict=True)]


def test_rest_overhead_pairs_each_round_with_its_own_lone_requests() -> None:
    """Two rounds on a machine that slowed by 30% between them: the overhead is the mean of
    each round's median through the API less its median in process, both read turn about
    (10 ms plus the medians' sampling error), and the rounds' figures are kept."""
    from rich.console import Console

    from cloud.fidelity import _rest_overhead

    profile = profile_from_dict(linear_profile(service=0.02))
    work = np.random.default_rng(3).lognormal(0.0, 0.1, 80)
    rounds = [
        lone((0.100 * work[:20] + 0.010).tolist(), (0.100 * work[40:60]).tolist()),
        lone((0.130 * work[20:40] + 0.010).tolist(), (0.130 * work[60:]).tolist()),
    ]
    med = [float(np.median(work[k : k + 20])) for k in (0, 20, 40, 60)]
    served, figures = _rest_overhead(Console(quiet=True), profile, rounds)
    expected = (0.100 * (med[0] - med[2]) + 0.130 * (med[1] - med[3])) / 2 + 0.010
    assert figures["overhead_s"] == pytest.approx(expected)
    assert [r["lone_in_process_s"] for r in figures["rounds"]] == pytest.approx(
        [0.100 * med[2], 0.130 * med[3]]
    )
    assert len(figures["lone_rest_times_s"]) == len(figures["lone_in_process_times_s"]) == 40
    assert served.overhead_s == pytest.approx(profile.overhead_s + expected)


def test_rest_overhead_averages_rounds_before_clamping() -> None:
    """A round whose API median reads below its median in process (noise: -4 ms) pulls the
    mean down with it: rounds of -4 and +10 ms add 3 ms, not 5; a mean below 0 adds nothing."""
    from rich.console import Console

    from cloud.fidelity import _rest_overhead

    profile = profile_from_dict(linear_profile(service=0.02))
    rounds = [lone([0.096] * 5, [0.100] * 5), lone([0.110] * 5, [0.100] * 5)]
    served, figures = _rest_overhead(Console(quiet=True), profile, rounds)
    assert figures["overhead_s"] == pytest.approx(0.003)
    assert served.overhead_s == pytest.approx(profile.overhead_s + 0.003)
    faster = [lone([0.096] * 5, [0.100] * 5), lone([0.098] * 5, [0.100] * 5)]
    assert _rest_overhead(Console(quiet=True), profile, faster)[1]["overhead_s"] == 0.0


def test_the_served_plateau_credits_the_api_side_with_its_callers_cores() -> None:
    """The pairs' API side shares the machine with its callers; the real ladders' load
    generator is their others_cores, which the simulated server gives up already. A pair whose
    callers took 0.05 of 2 cores reads its ratio x 2 / 1.95; one whose callers took none as read."""
    from rich.console import Console

    from cloud.fidelity import _plateau_figures

    pairs = [
        {"rest_rps": 6.0, "in_process_rps": 7.5, "client_cpu_cores": 0.05},
        {"rest_rps": 7.0, "in_process_rps": 7.0, "client_cpu_cores": 0.0},
    ]
    figures = _plateau_figures(Console(quiet=True), [pairs], 2.0, quick=True)
    assert figures["ratio"] == pytest.approx((0.8 * 2 / 1.95 + 1.0) / 2)
    assert figures["ratio_standard_error"] == pytest.approx(abs(0.8 * 2 / 1.95 - 1) / 2)


@pytest.fixture
def stand_in_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """fidelity's local server is a 50 ms stand-in (real HTTP, 2 at a time) and the export is
    skipped: the rounds' orchestration runs for real without TensorFlow."""
    import contextlib

    from cloud import ladder as real
    from cloud.serve import start_server
    from sim.serving.calibrate import model as exporter
    from tests.test_cloud_ladder import FixedServable

    @contextlib.contextmanager
    def serve(saved: Path, model: str, threads: int) -> Any:
        running = start_server(FixedServable(0.05, workers=2), port=0)
        try:
            yield types.SimpleNamespace(url=running.url, pid=os.getpid())
        finally:
            running.close()

    def export(arch: str, base: Path) -> Path:
        """An empty SavedModel where a real export would be (nothing loads it here)."""
        (base / "1").mkdir(parents=True)
        (base / "1" / "saved_model.pb").write_bytes(b"")
        return base / "1"

    monkeypatch.setattr(real, "start_local_server", serve)
    monkeypatch.setattr(exporter, "export", export)


SHORT_LADDER = (
    *("--cores", "2", "--users", "1,2", "--seconds", "1.5", "--settle", "0.3"),
    *("--wait", "0.1,0.2", "--max-error-rps", "1000", "--max-error-latency", "1000"),
    *("--lone-requests", "6"),
)


@pytest.mark.usefixtures("stand_in_server")
def test_rounds_calibrate_before_each_ladder_and_pool_the_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--repeat 2`` calibrating here: each round is a calibration pass, the REST step and a
    real ladder, and a closing pass follows the last (real Locust against a 50 ms stand-in
    here, the passes synthetic: a machine that speeds up steadily). Later passes measure the
    first's ladder, the profile written is their pool with trapezoid weights (each ladder lies
    between two passes) and each pass kept, and each round's REST step reads the lone request
    through the API against the one in process on its own machine (the last pass's speed)."""
    import time

    from cloud import fidelity as cli
    from sim.serving.calibrate.worker import RestPredict, lone_pairs, served_pairs, served_tail

    speeds = iter([20.0, 24.0, 28.0])  # lone request 50 ms, 41.7 ms, 35.7 ms
    asked: list[list[int] | None] = []
    tops: list[int] = []

    def calibrate(console: Any, tmp: Path, quick: bool, threads: int, passes: int, fixed: Any):
        asked.append(fixed)
        speed = next(speeds)
        tops.append(0)
        data = synthetic(
            threads=(2,),
            concurrency=(1, 2, 3),
            batch=(1,),
            throughput=lambda t, n: speed * min(n, 2),
            sigma=0.05,
        )
        data["provenance"]["date"] = f"pass {len(asked)}"
        return data

    def served(
        console: Any,
        copy: Any,
        server: dict[str, Any],
        *,
        waits: tuple[float, float],
        lone: int,
        seed: int,
        concurrency: int,
        tail: list[int],
        cores: float,
        quick: bool,
    ) -> dict[str, Any]:
        """In process: the last pass's machine, processor sharing at its plateau."""
        speed = [20.0, 24.0, 28.0][len(tops) - 1]
        body = json.dumps({"instances": [{"b64": "aGk="}]}).encode()
        found = {
            "lone": lone_pairs(
                lambda: time.sleep(1 / speed),
                RestPredict(server["url"], server["model"], body),
                count=lone,
                waits=waits,
                seed=seed,
            ),
            "pairs": [],
            "tail": [],
        }
        if concurrency:
            tops[-1] = concurrency
            found["pairs"] = served_pairs(
                lambda: time.sleep(concurrency / (2 * speed)),
                RestPredict(server["url"], server["model"], body),
                concurrency=concurrency,
                callers=cli.PLATEAU_CALLERS,
                seconds=0.6,
                pairs=2,
            )
            found["tail"] = [
                served_tail(
                    RestPredict(server["url"], server["model"], body), callers=n, seconds=1.0
                )
                for n in tail
            ]
        return found

    monkeypatch.setattr(cli, "_calibrate", calibrate)
    monkeypatch.setattr(cli, "_served_copy", served)
    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["fidelity", *SHORT_LADDER, "--repeat", "2", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert asked == [None, [1, 2, 3], [1, 2, 3]]
    assert "round 2 of 2" in done.output
    pooled = yaml.safe_load((out / "profile.yaml").read_text())
    passes = pooled["provenance"]["passes"]
    assert [p["date"] for p in passes] == ["pass 1", "pass 2", "pass 3"]
    assert [p["throughput_rps"]["2/1/1"] for p in passes] == [20.0, 24.0, 28.0]
    assert [p["weight"] for p in passes] == [0.25, 0.5, 0.25]
    x = {p["concurrency"]: p["throughput_rps"] for p in pooled["points"]}
    assert x[1] == pytest.approx(24.0) and x[3] == pytest.approx(48.0)
    data = json.loads((out / "fidelity.json").read_text())
    rounds = data["rest_overhead"]["rounds"]
    assert [r["lone_in_process_s"] for r in rounds] == pytest.approx([1 / 20, 1 / 24], rel=0.1)
    assert data["rest_overhead"]["lone_in_process_after_s"] == pytest.approx(1 / 28, rel=0.1)
    assert len(data["rest_overhead"]["lone_rest_times_s"]) == 2 * 6  # --lone-requests a round
    # each round's pairs: the served plateau (12 callers against 2 workers of 50 ms: 40 req/s)
    # beside the in-process one at the top of its pass's ladder (2 x its speed), recorded
    assert tops == [3, 3, 0]  # the closing pass has no REST step
    plateau = data["served_plateau"]
    rounds_pairs = plateau["rounds"]
    assert [len(r) for r in rounds_pairs] == [2, 2]
    for found, inside in zip(rounds_pairs, [40.0, 48.0], strict=True):
        assert all(p["in_process_rps"] == pytest.approx(inside, rel=0.1) for p in found)
        assert all(30 < p["rest_rps"] < 43 for p in found), found  # +-1 request in 0.6 s
    # each pair's API side credited with its callers' share of the machine (the real ladders'
    # load generator is their others_cores, which the simulated server gives up already)
    have = data["server"]["cores"]
    ratios = [
        p["rest_rps"] / p["in_process_rps"] * have / (have - p["client_cpu_cores"])
        for r in rounds_pairs
        for p in r
    ]
    assert all(p["client_cpu_cores"] > 0 for r in rounds_pairs for p in r)
    assert plateau["ratio"] == pytest.approx(sum(ratios) / 4)
    assert plateau["ratio_standard_error"] > 0
    assert pooled["defaults"]["served_plateau"] == pytest.approx(plateau["ratio"], rel=1e-4)
    assert "served plateau" in done.output
    # each round's served tail (3 callers, the stand-in's 2 workers: halfway from the width of
    # 2 is 2 again, so one count), pooled and fitted: the profile written carries the spread
    # the model needs to reproduce it
    tail = data["waiting_spread"]
    assert [[r["callers"] for r in found] for found in tail["rounds"]] == [[3], [3]]
    assert all(len(r["latencies_s"]) > 20 and r["ratio"] >= 1 for f in tail["rounds"] for r in f)
    (point,) = tail["points"]
    assert point["callers"] == 3 and point["requests"] > 40 and point["ratio"] >= 1
    assert pooled["defaults"]["waiting_spread"] == {
        "in_flight": [3],
        "sigma": [pytest.approx(point["sigma"], abs=1e-4)],
    }
    assert "served tails through the API" in done.output and "at 3 callers" in done.output
    for r in rounds:  # the stand-in's 50 ms and its HTTP time
        assert 0.05 <= r["lone_rest_s"] < 0.08
    assert data["real"]["ladders"] == 2
    others = data["real"]["others_cores"]  # Locust and this process share the machine
    assert len(others) == 2 and all(0 <= v < 2 for v in others)
    assert "other processes used" in done.output
    assert [c["n"] for c in data["closed_loops"]] == [1, 2, 3]  # the pool's own, simulated
    assert "the model against its own calibration" in done.output


@pytest.mark.usefixtures("stand_in_server")
def test_a_profile_calibrated_through_the_api_gets_no_rest_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--through-api`` calibrates over REST once, before the rounds: its profile already holds
    the REST path, so no REST step adds it again and no in-process pass runs."""
    from cloud import fidelity as cli

    calls: list[str] = []

    def through_api(console: Any, server: Any, model: str, cores: float, quick: bool) -> Any:
        calls.append(server.url)
        return profile_from_dict(linear_profile(service=0.05))

    def in_process(*args: Any) -> Any:
        raise AssertionError("no in-process pass with --through-api")

    monkeypatch.setattr(cli, "_calibrate_endpoint", through_api)
    monkeypatch.setattr(cli, "_calibrate", in_process)
    out = tmp_path / "out"
    done = CliRunner().invoke(
        app, ["fidelity", *SHORT_LADDER, "--through-api", "--repeat", "2", "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    assert len(calls) == 1
    data = json.loads((out / "fidelity.json").read_text())
    assert "rest_overhead" not in data and data["real"]["ladders"] == 2
    assert "REST path" not in done.output


@pytest.mark.parametrize("drift", [40.0, -3.0])
def test_a_miss_exits_1_and_a_machine_that_moved_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drift: float
) -> None:
    """Misses are printed and exit 1, whatever the drift; only a lone request that moved by more
    than the latency bound over the run adds that the machine, not the model, may be the cause."""
    from cloud import fidelity as cli

    rows = compare([[rung(1, 10, [0.2] * 10, 0.3)]], [[rung(1, 10, [0.3] * 10, 0.3)]])
    meta = {"rest_overhead": {"drift_pct": drift}}
    monkeypatch.setattr(cli, "_measure", lambda *args, **kwargs: (rows, meta, None))
    out = tmp_path / "out"
    done = CliRunner().invoke(
        app, ["fidelity", "--profile", str(tmp_path / "p.yaml"), "--out", str(out)]
    )
    assert done.exit_code == 1, done.output
    shown = " ".join(done.output.split())
    assert "outside the bound: 1 users: p50 off by +50.0% (bound 15%)" in shown
    assert ("the machine's speed changed" in shown) == (abs(drift) > 15)
    assert json.loads((out / "fidelity.json").read_text())["misses"]


def test_a_miss_against_one_real_ladder_names_the_real_value() -> None:
    """With one real ladder there is no real range; the miss still says what was measured."""
    rows = compare(
        [[rung(1, 10, [0.2] * 10, 0.3)]], [[rung(1, 10, [v] * 10, 0.3)] for v in (0.3, 0.32)]
    )
    (miss,) = [m for m in Bounds().misses(rows) if m.metric == "p50"]
    assert str(miss).endswith("simulated ladders 0.3..0.32, outside the real 0.2)")


@pytest.mark.parametrize(("real", "nearest"), [(0.2, 50.0), (0.31, 0.0), (0.4, -20.0)])
def test_the_nearest_seed_error_is_the_model_s_beyond_its_sampling(
    real: float, nearest: float
) -> None:
    """The error of the seed nearest the real value: none when the seeds straddle it, else
    measured from the nearer end of their range (not from their pooled value)."""
    sims = [[rung(1, 10, [v] * 10, 0.3)] for v in (0.3, 0.32)]
    (row,) = compare([[rung(1, 10, [real] * 10, 0.3)]], sims)
    assert row.nearest_error("p50") == pytest.approx(nearest)
    assert abs(row.error("p50") or 0) >= abs(nearest) - 1e-9  # the pooled seeds lie in the range
    (one,) = compare([[rung(1, 10, [real] * 10, 0.3)]], sims[:1])  # one seed: no range
    assert one.nearest_error("p50") == one.error("p50")


def test_misses_within_the_simulated_range_are_counted_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run still exits 1 on every miss; it says how many of them some simulated ladder
    reaches, and fidelity.json keeps each miss's ranges and verdict."""
    from cloud import fidelity as cli

    real = [[rung(2, 20, [0.30] * 20, 0.5)], [rung(2, 20, [0.34] * 20, 0.5)]]
    simulated = [[rung(2, 20, [v] * 20, 0.5)] for v in (0.22, 0.31, 0.25)]
    rows = compare(real, simulated)
    monkeypatch.setattr(cli, "_measure", lambda *args, **kwargs: (rows, {}, None))
    out = tmp_path / "out"
    done = CliRunner().invoke(
        app,
        ["fidelity", "--profile", str(tmp_path / "p.yaml"), "--out", str(out), "--sim-seeds", "3"],
    )
    assert done.exit_code == 1, done.output
    shown = " ".join(done.output.split())
    assert "within the simulated ladders' own range (3 seeds): 1 of 1 misses" in shown
    misses = json.loads((out / "fidelity.json").read_text())["misses"]
    assert [(m["metric"], m["inside"]) for m in misses] == [("p50", True)]  # p95 is -9%
    assert misses[0]["sim_range"] == [0.22, 0.31] and misses[0]["text"].startswith("2 users: p50")
    expected, cells = Bounds().misses_from_noise(rows) or (0.0, 0)
    assert json.loads((out / "fidelity.json").read_text())["misses_from_noise"] == {
        "expected": round(expected, 2),
        "cells": cells,
    }
    assert f"would miss about {expected:.1f} of these 3 cells" in shown


def _plateau_profile() -> Any:
    """Two cores, X rising to a plateau of 10 req/s at 2 in flight and held to 16."""
    return profile_from_dict(
        synthetic(
            threads=(2,),
            concurrency=(1, 2, 3, 4, 8, 16),
            batch=(1,),
            throughput=lambda t, n: 10.0 * min(n, 2) / 2 if n < 2 else 10.0,
            sigma=0.05,
        )
    )


@pytest.mark.parametrize("made", [((4, 0.3), (7, 0.6)), ((4, 0.6), (7, 0.3))])
def test_the_waiting_spread_fitted_to_served_tails_is_the_one_that_made_them(
    made: tuple[tuple[int, float], ...],
) -> None:
    """Served tails the model itself made with a known spread at 4 and 7 in flight (closed
    loops through the REST pool, other seeds than the fit's): the fit finds both again, the
    spread rising or falling between them. (Below about 0.2 a tail hardly moves: there the
    inter-op pool's own order makes it.)"""
    profile = _plateau_profile()
    trial = dataclasses.replace(profile, waiting_spread=made)
    tails = []
    for callers, _ in made:
        rungs = [
            simulate_ladder(trial, 2.0, [Step(callers, 60.0, 5.0)], wait=(0.0, 0.0), seed=100 + k)
            for k in range(6)
        ]
        tails.append((callers, served_ratio([v for r in rungs for v in r[0].latencies])))
    fitted = fit_waiting_spread(profile, 2.0, tails[::-1])  # in any order
    # within the p95's sampling noise: 3600 requests a side moved the fit by up to 0.06 here
    assert [k for k, _ in fitted] == [4, 7]
    assert [v for _, v in fitted] == [pytest.approx(v, abs=0.1) for _, v in made]


@pytest.mark.parametrize(
    ("cores", "available", "counts"),
    [
        (2.0, range(1, 8), [4, 7]),  # fidelity's loops on 2 cores: 7 handlers
        (2.0, [1, 2, 3, 4, 6, 8, 12], [4, 6]),  # a calibration's ladder: 8 and 12 queue
        (2.0, [1, 2, 3], [3]),  # halfway is the top itself
        (2.0, [1, 2], []),  # none past the width
        (1.0, [1, 2, 3, 4], [2, 3]),  # 1 core: width 1, 3 handlers
        (4.0, [1, 2, 4, 6, 8, 12, 16, 24], [8, 12]),  # 15 handlers
    ],
)
def test_the_tails_are_fitted_past_the_width_up_to_the_rest_handlers(
    cores: float, available: list[int], counts: list[int]
) -> None:
    assert tail_counts(cores, available) == counts


def test_the_waiting_spread_stays_in_its_range_and_reaches_the_server() -> None:
    """A tail narrower than the model makes without spread fits 0, one wider than it makes
    with the most fits the top; the server draws the fitted spread past the width only (the
    spread measured up to it is the work's own), rising from the width's own to the fitted
    points and held past the last, and the profile file keeps it."""
    from sim.scenario import Serving
    from sim.serving.model import build_server

    profile = _plateau_profile()
    assert fit_waiting_spread(profile, 2.0, [(7, 1.0)]) == ((7, WAITING_SPREAD_RANGE[0]),)
    assert fit_waiting_spread(profile, 2.0, [(7, 50.0)]) == ((7, WAITING_SPREAD_RANGE[1]),)
    fitted = dataclasses.replace(profile, waiting_spread=((4, 0.3), (6, 0.5)))
    serving = Serving(warmup=True)
    held = build_server("p", serving, profile, vcpus=2, cores=2.0, now=0.0, quota=None, weight=1)
    server = build_server("p", serving, fitted, vcpus=2, cores=2.0, now=0.0, quota=None, weight=1)
    assert server.spread[:3] == held.spread[:3]  # up to the width (2 inter-op threads)
    at_width = held.spread[2]
    assert server.spread[3:] == pytest.approx([(at_width + 0.3) / 2, 0.3, 0.4, 0.5, 0.5])
    assert set(held.spread[3:]) == {at_width}
    assert profile_from_dict(fitted.to_dict()).waiting_spread == fitted.waiting_spread
    # a bare number (session 14's profiles): that spread at every count past the width
    old = {**fitted.to_dict(), "defaults": {"threads": 2, "waiting_spread": 0.3}}
    flat = build_server(
        "p", serving, profile_from_dict(old), vcpus=2, cores=2.0, now=0.0, quota=None, weight=1
    )
    assert set(flat.spread[3:]) == {0.3}
    for bad, says in [
        (-1, "waiting_spread must be >= 0"),
        ({"in_flight": [4, 4], "sigma": [0.1, 0.2]}, "in_flight must increase"),
        ({"in_flight": [0], "sigma": [0.1]}, r"in_flight\[0\] must be an integer >= 1"),
        ({"in_flight": [4], "sigma": [0.1, 0.2]}, "lists of one length"),
        ({"in_flight": [4], "sigma": [-0.1]}, r"sigma\[0\] must be >= 0"),
        ({"at": [4]}, "a mapping of in_flight and sigma"),
    ]:
        with pytest.raises(ValueError, match=says):
            profile_from_dict({**old, "defaults": {"threads": 2, "waiting_spread": bad}})
