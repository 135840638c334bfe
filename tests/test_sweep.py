"""Sweeps and tuning end to end: trends, outputs, the recommendation re-run, executors,
interrupt and resume, and the messages for bad axes and infeasible SLOs."""

from __future__ import annotations

import csv
import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from sim.engine import simulate
from sim.loader import load_scenario
from sim.sweep.axes import parse_vary
from sim.sweep.cache import RunCache
from sim.sweep.executor import ProcessExecutor, SerialExecutor
from sim.sweep.plan import Base, grid_points, load_base
from sim.sweep.results import WALL_CLOCK, flatten
from sim.sweep.runner import Runner
from sim.sweep.slo import parse_slo
from sim.sweep.study import Study
from sim.sweep.tune import tune

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "scenarios" / "gsp777.yaml"
TARGET = "hpa.metrics[0].resource.target.averageUtilization"
# The real scalelab app, with sweep/tune registered unless sim/cli.py already does it.
ENTRY = (
    "from sim.cli import app\n"
    "from sim.sweep.cli import register\n"
    "if not any((c.name or c.callback.__name__) == 'sweep' for c in app.registered_commands):\n"
    "    register(app)\n"
    "app()\n"
)
# The lab with room to scale (6 replicas, 6 nodes), so the cpu target is what limits it.
ROOMY = ["--set", "hpa.maxReplicas=6", "--set", "cluster.node_pool.max_nodes=6"]


def scalelab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


def in_process(*args: str) -> Any:
    """The sweep commands in this process (serial with -j 1): fast for small cases."""
    from sim.sweep.cli import register

    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, list(args))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def without_wall_clock(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in rows]


# --- one real sweep of the lab, shared by the tests below ----------------------------------


@pytest.fixture(scope="module")
def lab_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    out = tmp_path_factory.mktemp("lab") / "sweep"
    done = scalelab(
        "sweep", str(LAB), "--set", "duration=10m", *ROOMY,
        "--vary", f"{TARGET}=20:90:10", "--seeds", "3", "--slo", "p95<=6s",
        "--recommend", "-j", "2", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    yield done, out


def by_target(out: Path) -> list[dict[str, str]]:
    return sorted(read_csv(out / "points.csv"), key=lambda r: int(r[TARGET]))


@pytest.mark.slow
def test_a_lower_cpu_target_lowers_p95_and_raises_cost(lab_sweep: tuple[Any, Path]) -> None:
    _, out = lab_sweep
    rows = by_target(out)
    p95 = [float(r["latency_p95_mean"]) for r in rows]
    cost = [float(r["cost_usd_mean"]) for r in rows]
    assert len(rows) == 8
    # monotone over the whole range (same seeds everywhere, so no noise between points) ...
    assert all(a <= b for a, b in itertools.pairwise(p95)), p95
    assert all(a >= b for a, b in itertools.pairwise(cost)), cost
    # ... and a real effect from end to end, not a flat line
    assert p95[0] < p95[-1] and cost[0] > cost[-1]
    assert all(r["latency_p95_ci95"] != "" and r["seeds"] == "3" for r in rows)


@pytest.mark.slow
def test_results_hold_every_run_and_every_summary_figure(lab_sweep: tuple[Any, Path]) -> None:
    import pyarrow.parquet as pq

    _, out = lab_sweep
    rows = read_csv(out / "results.csv")
    points = [r for r in rows if r["role"] == "point"]
    assert len(points) == 8 * 3 and len(rows) == 8 * 3 + 3  # + the baseline's three seeds
    assert {(r["point"], r["seed"]) for r in points} == {
        (str(p), str(s)) for p in range(8) for s in (1, 2, 3)
    }
    one = simulate(load_scenario(LAB, ["duration=1m"]), seed=1).summary
    assert set(flatten(one)) <= set(rows[0])
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert len(table) == len(rows)
    for csv_row, pq_row in zip(rows, table, strict=True):
        assert float(csv_row["cost_usd"]) == pq_row["cost_usd"]
        assert float(csv_row["latency_p95"]) == pq_row["latency_p95"]
    info = json.loads((out / "sweep.json").read_text())
    distinct = {(r["scenario_sha256"], r["seed"]) for r in rows}  # baseline = target 60's
    assert info["runs"] == {"total": len(distinct), "computed": len(distinct), "reused": 0}
    assert info["pareto"] and info["recommended"]["point"] in range(8)
    report = (out / "report.html").read_text()
    # Pareto + timelines (one axis: no map), each with the command that re-runs its points
    assert report.count('class="plotly-graph-div"') == 2
    assert report.count("<code>scalelab run ") == len(by_target(out))


@pytest.mark.slow
def test_the_recommendation_meets_its_slo_when_rerun(
    lab_sweep: tuple[Any, Path], tmp_path: Path
) -> None:
    import yaml

    done, out = lab_sweep
    info = json.loads((out / "sweep.json").read_text())
    chosen = info["recommended"]
    assert "recommended:" in done.stdout and "margin" in done.stdout
    points = {int(r["point"]): r for r in read_csv(out / "points.csv")}
    mine = points[chosen["point"]]
    # the cheapest point that meets the SLO in every seed: every cheaper point misses somewhere
    assert mine["feasible"] == "True"
    for row in points.values():
        if float(row["cost_usd_mean"]) < float(mine["cost_usd_mean"]):
            assert row["feasible"] == "False"
    assert [m["margin"] for m in chosen["margins"]] == [6.0 - float(mine["latency_p95_worst"])]

    run = scalelab("run", str(out / "recommended.yaml"), "--out", str(tmp_path / "r"), "-q")
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["slo"]["met"] is True
    swept = {
        int(r["seed"]): float(r["latency_p95"])
        for r in read_csv(out / "results.csv")
        if r["point"] == str(chosen["point"])
    }
    assert summary["latency_p95"] == swept[summary["seed"]]  # the file reproduces the point
    for seed in (2, 3):
        again = simulate(load_scenario(out / "recommended.yaml"), seed=seed).summary
        assert again["slo"]["met"] and again["latency_p95"] == swept[seed]
    manifest = yaml.safe_load((out / "recommended-hpa.yaml").read_text())
    target = manifest["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]
    assert target == chosen["values"][TARGET] and manifest["spec"]["maxReplicas"] == 6


# --- executors, interrupt and resume ----------------------------------------------------------


def small(base_args: tuple[tuple[str, Any], ...] = (("duration", "5m"),)) -> Base:
    return load_base(LAB, list(base_args))


def records_without_wall(study: Study) -> dict[tuple[str, int], Any]:
    out = {}
    for key, record in study.records.items():
        summary = {k: v for k, v in record["summary"].items() if k not in WALL_CLOCK}
        out[key] = {**record, "summary": summary}
    return out


def test_interrupt_and_resume_lose_no_run_and_repeat_none(tmp_path: Path) -> None:
    base = small()
    points = grid_points(base, [parse_vary(f"{TARGET}=30:90:20", "x")])
    seeds = (1, 2)
    cache = RunCache(tmp_path / "cache")

    def stop_after(n: int) -> Any:
        def check(study: Study) -> None:
            if len(study.records) >= n:
                raise KeyboardInterrupt

        return check

    first = Runner(lambda: ProcessExecutor(2), cache=cache)
    with pytest.raises(KeyboardInterrupt):
        Study(base, seeds, None).run(first, points, stop_after(3))
    first.close()
    done_first = set(first.computed)
    assert len(done_first) == 3 and len(cache) == 3

    second = Runner(lambda: ProcessExecutor(2), cache=cache)
    resumed = Study(base, seeds, None)
    resumed.run(second, points)
    second.close()
    everything = {(p.sha, s) for p in [*points, resumed.baseline] for s in seeds}
    assert set(second.reused) == done_first  # nothing finished is lost ...
    assert not done_first & set(second.computed)  # ... or run again
    assert done_first | set(second.computed) == everything
    assert len(second.computed) == len(set(second.computed))

    reference = Study(base, seeds, None)
    reference.run(Runner(SerialExecutor), points)
    assert records_without_wall(resumed) == records_without_wall(reference)


@pytest.mark.slow
def test_ctrl_c_then_the_same_command_resumes(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = [
        "sweep", str(LAB), "--set", "duration=15m", "--vary", f"{TARGET}=25:95:10",
        "--seeds", "2", "-j", "2", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A suite started in the background inherits SIGINT ignored, and Python then never
        # raises KeyboardInterrupt: give the sweep the default, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while len(list((out / "cache").glob("*.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "resume" in stderr and "Traceback" not in stderr
    kept = len(list((out / "cache").glob("*.json")))
    total = 8 * 2 + 2  # 8 points and the baseline (60 is not on the grid), 2 seeds each
    assert 3 <= kept < total
    assert not (out / "results.csv").exists()  # nothing half-written

    again = scalelab(*args)
    assert again.returncode == 0, again.stderr
    info = json.loads((out / "sweep.json").read_text())
    assert info["runs"] == {"total": total, "computed": total - kept, "reused": kept}
    assert len(read_csv(out / "results.csv")) == total


@pytest.mark.slow
def test_local_and_dask_executors_give_identical_results(tmp_path: Path) -> None:
    from distributed import LocalCluster

    args = ["sweep", str(LAB), "--set", "duration=5m", "--vary", f"{TARGET}=40,80"]
    args += ["--vary", "load.scale=1,2", "--seeds", "2", "-q"]
    local = scalelab(*args, "-j", "2", "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:  # fmt: skip
        dask = scalelab(
            *args, "--executor", "dask", "--scheduler", cluster.scheduler_address,
            "--out", str(tmp_path / "dask"),
        )  # fmt: skip
    assert dask.returncode == 0, dask.stderr
    assert json.loads((tmp_path / "dask" / "sweep.json").read_text())["executor"] == "dask"
    mine = without_wall_clock(read_csv(tmp_path / "local" / "results.csv"))
    theirs = without_wall_clock(read_csv(tmp_path / "dask" / "results.csv"))
    assert mine == theirs and len(mine) == 4 * 2 + 2
    # the load axis really changes the load: twice the users, more requests where the HPA
    # scales out (at 80% one pod stays saturated: its plateau, not the users, sets the count)
    rows = {(r[TARGET], r["load.scale"], r["seed"]): int(r["requests_total"]) for r in mine
            if r["role"] == "point"}  # fmt: skip
    assert all(rows[("40", "2", s)] > 1.1 * rows[("40", "1", s)] for s in ("1", "2"))


# --- tune ---------------------------------------------------------------------------------


def test_tune_is_seeded_so_a_rerun_repeats_its_trials_from_the_cache(tmp_path: Path) -> None:
    base = small()
    axes = [parse_vary(f"{TARGET}=20:95", "x"), parse_vary("hpa.minReplicas=1:3", "x")]
    slo = parse_slo(["p95<=4s"])
    cache = RunCache(tmp_path / "cache")
    studies, runners = [], []
    for _ in range(2):
        study, runner = Study(base, (1,), slo), Runner(SerialExecutor, cache=cache)
        log = tune(study, axes, 6, runner, batch=3, sampler_seed=7)
        assert log.trials == 6 and not log.invalid
        studies.append(study)
        runners.append(runner)
    first, second = ([p.values for p in s.points] for s in studies)
    assert first == second and len(first) == 6
    assert runners[1].computed == []  # every run of the rerun came from the cache
    for values in first:
        value = dict(values)[TARGET]
        assert isinstance(value, int) and 20 <= value <= 95


def test_tune_command_writes_the_sweep_outputs(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    done = in_process(
        "tune", str(LAB), "--set", "duration=5m", "--vary", f"{TARGET}=30:90",
        "--budget", "4", "--batch", "2", "--seeds", "1", "--slo", "p95<=30s", "--recommend",
        "-j", "1", "--out", str(out),
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    info = json.loads((out / "sweep.json").read_text())
    assert info["command"] == "tune" and info["evaluated"] == info["points"] == 4
    assert info["trials"] >= 4 and info["shortfall"] is None  # a repeat is asked again
    assert {p.name for p in out.iterdir()} >= {
        "results.csv", "results.parquet", "points.csv", "report.html", "recommended.yaml",
        "recommended-hpa.yaml",
    }  # fmt: skip


# --- messages -----------------------------------------------------------------------------


def test_progress_tracks_the_best_feasible_point(tmp_path: Path) -> None:
    from sim.sweep.cli import execute, prepare

    setup = prepare(
        "sweep", LAB, [f"{TARGET}=50,90"], None, 1, ["p95<=30s"], ["duration=3m"],
        tmp_path / "o", 1, "local", None, recommend=True,
    )  # fmt: skip
    study, meta = execute(setup, fresh=False, progress=True)
    assert study.points_done() == 2 and study.best is not None
    costs = [study.result(p).mean("cost_usd") for p in study.points]
    assert study.best.cost == min(c for c in costs if c is not None)
    assert meta["runs"]["computed"] == 3


def test_an_infeasible_slo_says_what_came_closest(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    done = in_process(
        "sweep", str(LAB), "--set", "duration=5m", "--vary", f"{TARGET}=50,90",
        "--vary", "hpa.minReplicas=1,2", "--seeds", "1", "--slo", "p95<=50ms",
        "--recommend", "-j", "1", "--out", str(out),
    )  # fmt: skip
    assert done.exit_code == 1
    assert "no point meets the SLO p95<=0.05s" in done.stderr and "closest" in done.stderr
    assert (out / "results.csv").exists() and not (out / "recommended.yaml").exists()
    report = (out / "report.html").read_text()
    assert report.count('class="plotly-graph-div"') == 3  # Pareto, heat map, timelines
    assert json.loads((out / "sweep.json").read_text())["feasible_points"] == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--vary", "hpa.minReplica=1,2"], "did you mean 'minReplicas'"),
        (["--vary", "hpa.minReplicas=0:9:1"], "must be greater than or equal to minReplicas"),
        (["--vary", "cluster.node_pool.machine_type=e2-standard-4,n9-huge"], "allowed: "),
        (["--vary", "load.scale=0,1"], "load.scale must be > 0"),
        (["--vary", f"{TARGET}=20:95"], "needs a step"),
        (["--vary", "hpa.minReplicas=1,2", "--slo", "p95>=1s"], "METRIC<=LIMIT"),
        (["--vary", "hpa.minReplicas=1,2", "--recommend"], "needs an SLO"),
        (["--vary", "hpa.minReplicas=1,2", "--scheduler", "tcp://h:8786"], "--executor dask"),
        (["--vary", "hpa.minReplicas=1,2", "--set", "hpa.maxReplicas=many"], "hpa.maxReplicas"),
        (["--vary", "hpa.minReplicas=1,2", "-j", "0"], ">= 1"),
        ([], "at least one axis"),
    ],
)
def test_bad_input_exits_2_before_anything_runs(
    tmp_path: Path, args: list[str], words: str
) -> None:
    out = tmp_path / "never"
    done = in_process("sweep", str(LAB), *args, "--out", str(out))
    assert done.exit_code == 2, done.stdout
    assert words in " ".join(done.stderr.split()) and "Traceback" not in done.stderr
    assert not out.exists()


def test_bad_sweep_file_and_tune_without_slo(tmp_path: Path) -> None:
    bad = tmp_path / "sweep.yaml"
    bad.write_text("vary:\n  hpa.minReplicas: [1, 2]\nseed: 2\n")
    done = in_process("sweep", str(LAB), "--sweep-file", str(bad), "--out", str(tmp_path / "n"))
    assert done.exit_code == 2 and str(bad) in done.stderr and "unknown key" in done.stderr
    done = in_process("tune", str(LAB), "--vary", f"{TARGET}=20:95", "--out", str(tmp_path / "n"))
    assert done.exit_code == 2 and "needs an SLO" in done.stderr
    assert not (tmp_path / "n").exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = in_process("sweep", str(LAB), "--vary", "hpa.minReplica=1", "--debug")
    assert done.exit_code != 0 and done.exception is not None


def test_sweep_leaves_sim_import_light() -> None:
    code = "import sim.sweep.cli, sys; print(sorted(m for m in ('dask', 'distributed', "
    code += "'optuna', 'pyarrow', 'matplotlib') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "[]", done.stderr
