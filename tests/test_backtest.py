"""Backtest: export a simulated run, read it back (file and real Prometheus), replay its HPA."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sim.backtest import export as ex
from sim.backtest import openmetrics as om
from sim.backtest import recording as rec
from sim.backtest import whatif
from sim.backtest.counterfactual import Outcome, counterfactual
from sim.backtest.load import counter_rate
from sim.backtest.pool import node_model
from sim.backtest.replay import Mismatch, ReplayConfig, replay
from sim.backtest.series import Series, SeriesSet
from sim.cli import app
from sim.engine import controller_config, simulate
from sim.hpa.types import HPASpec
from sim.loader import load_scenario
from sim.trace import Trace

SCENARIO = Path(__file__).parent.parent / "scenarios" / "gsp777.yaml"
HPA = "image-classifier"
# Recent enough for Prometheus' default 15-day retention, whole seconds, in the past.
START = float(int(time.time()) // 60 * 60 - 3 * 3600)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    scenario = load_scenario(SCENARIO)
    trace = simulate(scenario)
    run_dir = tmp_path_factory.mktemp("run")
    trace.write(run_dir)
    text = om.render(ex.export(trace, scenario, namespace="default", start=START))
    path = run_dir.parent / "run.om"
    path.write_text(text)
    return {"scenario": scenario, "trace": trace, "dir": run_dir, "file": path}


def _replay(path: Path, scenario, **changes):  # type: ignore[no-untyped-def]
    data = om.read(path)
    recording = rec.build(
        data,
        namespace="default",
        hpa=HPA,
        start=START,
        end=START + scenario.duration,
        source=str(path),
    )
    for key, value in changes.items():
        setattr(recording, key, value)
    config = ReplayConfig(
        controller=controller_config(scenario), resolution=scenario.metrics.resolution
    )
    return recording, replay(recording, scenario.hpa.to_core(), config)


def test_round_trip_reproduces_every_decision(run: dict) -> None:
    scenario, trace = run["scenario"], run["trace"]
    recorded = [e for e in trace.events if e["kind"] == "hpa"]
    _, syncs = _replay(run["file"], scenario)
    assert [s.t for s in syncs] == [e["t"] for e in recorded]
    assert [s.replayed for s in syncs] == [e["desired_replicas"] for e in recorded]
    assert all(s.matched and s.mismatch is None for s in syncs)
    # Not a trivial run: the HPA scaled up and back down.
    assert len({e["desired_replicas"] for e in recorded}) >= 3
    assert [s.utilization for s in syncs] == [e["cpu_utilization"] for e in recorded]


def test_replay_notices_wrong_cpu(run: dict) -> None:
    """Halve every pod's CPU: the replay must then disagree with the recording somewhere."""
    recording, _ = _replay(run["file"], run["scenario"])
    halved = {
        pod: dataclasses.replace(c, values=[v / 2 for v in c.values])
        for pod, c in recording.cpu.items()
    }
    _, syncs = _replay(run["file"], run["scenario"], cpu=halved)
    wrong = [s for s in syncs if not s.matched]
    assert wrong and all(s.mismatch is not None for s in wrong)


def test_missing_cpu_is_a_named_reason(run: dict) -> None:
    _, syncs = _replay(run["file"], run["scenario"], cpu={})
    reasons = {s.mismatch for s in syncs if not s.matched}
    assert Mismatch.MISSING_SAMPLES in reasons


def test_request_counter_round_trip(run: dict) -> None:
    trace, scenario = run["trace"], run["scenario"]
    rates = counter_rate(
        om.read(run["file"]),
        ":tensorflow:serving:request_count",
        namespace="default",
        start=START,
        end=START + scenario.duration,
        source="x",
    )
    expected = [
        a + b
        for a, b in zip(trace.columns["completed_rps"], trace.columns["failed_rps"], strict=True)
    ]
    assert rates == pytest.approx(expected)


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(
        st.floats(min_value=0, max_value=1e9, allow_nan=False), min_size=1, max_size=20
    ),
    label=st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=10
    ),
)
def test_openmetrics_round_trip_is_exact(tmp_path_factory, values, label) -> None:  # type: ignore[no-untyped-def]
    times = [1_700_000_000 + 15 * i + 0.125 for i in range(len(values))]
    series = Series("kube_pod_created", (("namespace", "n"), ("pod", label)), times, values)
    path = tmp_path_factory.mktemp("om") / "x.om"
    path.write_text(om.render([series]))
    back = om.read(path).named("kube_pod_created")
    assert len(back) == 1 and back[0].values == values and back[0].times == times
    assert back[0].label("pod") == label


def test_cli_file_backtest_and_errors(run: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "bt"
    load = tmp_path / "load.csv"
    result = runner.invoke(
        app,
        [
            "backtest",
            "--openmetrics",
            str(run["file"]),
            "--hpa",
            HPA,
            "--scenario",
            str(SCENARIO),
            "--out",
            str(out),
            "--requests",
            ":tensorflow:serving:request_count",
            "--write-load",
            str(load),
            "--start",
            str(START),
            "--end",
            str(START + 1800),
        ],
    )
    assert result.exit_code == 0, result.output
    info = json.loads((out / "backtest.json").read_text())
    assert info["match_rate"] == 1.0 and info["syncs_with_decision"] == 120
    rows = (out / "trace.csv").read_text().splitlines()
    assert len(rows) == 1 + 1800
    assert len(load.read_text().splitlines()) == 1 + 1800
    # --requests and --scenario: the full simulator on the recorded rate predicts latency
    whatif_info = json.loads((out / "counterfactual.json").read_text())
    assert whatif_info["model"] == "simulator"
    proposed = whatif_info["proposed"]
    assert proposed["latency_p95"] > 0 and proposed["requests_total"] > 0
    assert proposed["requests_total"] == pytest.approx(
        sum(run["trace"].columns["offered_rps"]), rel=0.1
    )
    simulated = Trace.read(out / "proposal")
    assert any(v for v in simulated.columns["latency_p95"])
    # labels that match nothing
    bad = runner.invoke(
        app,
        [
            "backtest",
            "--openmetrics",
            str(run["file"]),
            "--hpa",
            "nope",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert bad.exit_code == 2 and "matches nothing" in bad.output and "default/" in bad.output
    assert not (tmp_path / "x").exists()
    missing = runner.invoke(
        app,
        [
            "backtest",
            "--openmetrics",
            str(tmp_path / "none.om"),
            "--hpa",
            HPA,
            "--out",
            str(tmp_path / "y"),
        ],
    )
    assert missing.exit_code == 2 and "cannot read" in missing.output
    when = runner.invoke(
        app,
        [
            "backtest",
            "--openmetrics",
            str(run["file"]),
            "--hpa",
            HPA,
            "--start",
            "yesterday",
            "--out",
            str(tmp_path / "z"),
        ],
    )
    assert when.exit_code == 2 and "RFC 3339" in when.output


def test_cli_export_refuses_another_scenario(run: dict, tmp_path: Path) -> None:
    target = tmp_path / "x.om"
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(run["dir"]),
            "--openmetrics",
            str(target),
            "--scenario",
            str(SCENARIO),
            "--set",
            "hpa.maxReplicas=6",
        ],
    )
    assert result.exit_code == 2 and "not the scenario" in result.output
    assert not target.exists()
    ok = CliRunner().invoke(
        app, ["export", str(run["dir"]), "--openmetrics", str(target), "--scenario", str(SCENARIO)]
    )
    assert ok.exit_code == 0 and target.read_text().endswith("# EOF\n")


def test_missing_series_is_named(tmp_path: Path) -> None:
    data = SeriesSet()
    data.add("kube_pod_created", {"namespace": "n", "pod": "p"}, 1.0, 1.0)
    with pytest.raises(Exception, match="kube_horizontalpodautoscaler_status_current_replicas"):
        rec.build(data, namespace="n", hpa="h", start=None, end=None, source="f")


# --- a real Prometheus ---------------------------------------------------------------------

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="prometheus/promtool not installed (apt-get install prometheus; .ci/run does)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus_url(run: dict, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("prom")
    data = base / "data"
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(run["file"]), str(data)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = base / "prometheus.yml"
    config.write_text("global: {}\n")
    port = _free_port()
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=30d",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("prometheus did not become ready within 30 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@needs_prometheus
def test_backtest_against_real_prometheus(run: dict, prometheus_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bt"
    load = tmp_path / "load.csv"
    end = START + run["scenario"].duration
    result = CliRunner().invoke(
        app,
        [
            "backtest",
            "--prometheus",
            prometheus_url,
            "--hpa",
            HPA,
            "--namespace",
            "default",
            "--start",
            str(START),
            "--end",
            str(end),
            "--scenario",
            str(SCENARIO),
            "--out",
            str(out),
            "--write-load",
            str(load),
            "--requests",
            "sum(idelta(:tensorflow:serving:request_count[2s]))",
        ],
    )
    assert result.exit_code == 0, result.output
    info = json.loads((out / "backtest.json").read_text())
    recorded = [e for e in run["trace"].events if e["kind"] == "hpa"]
    assert info["syncs_with_decision"] == len(recorded) and info["match_rate"] == 1.0
    replayed = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [e["desired_replicas"] for e in replayed] == [e["desired_replicas"] for e in recorded]
    trace = run["trace"]
    sent = [
        a + b
        for a, b in zip(trace.columns["completed_rps"], trace.columns["failed_rps"], strict=True)
    ]
    rows = load.read_text().splitlines()[1:]
    assert [float(r.split(",")[1]) for r in rows] == pytest.approx(sent)


@needs_prometheus
def test_counterfactual_from_real_prometheus(
    run: dict, prometheus_url: str, tmp_path: Path
) -> None:
    """Read back from Prometheus, the run's own spec proposed: the run's replicas, every second."""
    out = tmp_path / "bt"
    trace, end = run["trace"], START + run["scenario"].duration
    result = CliRunner().invoke(
        app,
        [
            "backtest",
            "--prometheus",
            prometheus_url,
            "--hpa",
            HPA,
            "--start",
            str(START),
            "--end",
            str(end),
            "--scenario",
            str(SCENARIO),
            "--propose",
            str(SCENARIO),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    info = json.loads((out / "counterfactual.json").read_text())
    assert info["syncs_deciding_as_recorded"] == info["syncs_with_recorded_decision"] == 120
    assert info["seconds_with_recorded_replicas"] == info["window_s"] == 1800
    proposal = Trace.read(out / "proposal")
    for column in ("replicas_desired", "replicas_current", "replicas_ready"):
        assert proposal.columns[column] == trace.columns[column], column
    assert info["proposed"]["cost_usd"] == info["recorded"]["cost_usd"] > 0


@needs_prometheus
def test_prometheus_errors_exit_2(prometheus_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["--start", str(START), "--end", str(START + 600), "--out", str(tmp_path / "o")]
    gone = runner.invoke(
        app,
        [
            "backtest",
            "--prometheus",
            f"http://127.0.0.1:{_free_port()}",
            "--hpa",
            HPA,
            "--timeout",
            "2",
            *common,
        ],
    )
    assert gone.exit_code == 2 and "kube_horizontalpodautoscaler" in gone.output
    assert "got no answer" in gone.output
    nothing = runner.invoke(
        app,
        [
            "backtest",
            "--prometheus",
            prometheus_url,
            "--hpa",
            HPA,
            "--namespace",
            "elsewhere",
            *common,
        ],
    )
    assert nothing.exit_code == 2 and 'namespace="elsewhere"' in nothing.output
    assert "returned no series" in nothing.output
    assert not (tmp_path / "o").exists()


# --- the counterfactual ----------------------------------------------------------------------


def _config(scenario) -> ReplayConfig:  # type: ignore[no-untyped-def]
    return ReplayConfig(
        controller=controller_config(scenario), resolution=scenario.metrics.resolution
    )


def _with_target(spec: HPASpec, target: int, max_replicas: int) -> HPASpec:
    metric = spec.metrics[0]
    changed = dataclasses.replace(
        metric, target=dataclasses.replace(metric.target, average_utilization=target)
    )
    return dataclasses.replace(spec, metrics=(changed,), max_replicas=max_replicas)


@pytest.fixture(scope="module")
def recorded(run: dict):  # type: ignore[no-untyped-def]
    scenario = run["scenario"]
    recording, _ = _replay(run["file"], scenario)
    pool = node_model(scenario, 3000)
    own = counterfactual(
        recording, scenario.hpa.to_core(), _config(scenario), capacity=pool.capacity
    )
    return {"recording": recording, "pool": pool, "own": own}


def _pod_hours(outcome: Outcome, seconds: int) -> float:
    lives = whatif.proposed_lives(outcome)
    return whatif.timeline(lives, seconds, None).pod_hours


def test_counterfactual_with_own_spec_reproduces_the_run(run: dict, recorded: dict) -> None:
    """The run's own spec on its own demand: the same decision at every sync, and the same
    replicas (desired, current, Ready) every second as the simulator's trace."""
    trace, scenario = run["trace"], run["scenario"]
    own: Outcome = recorded["own"]
    hpa_events = [e for e in trace.events if e["kind"] == "hpa"]
    assert [s.desired for s in own.steps] == [e["desired_replicas"] for e in hpa_events]
    assert [s.utilization for s in own.steps] == [e["cpu_utilization"] for e in hpa_events]
    seconds = int(scenario.duration)
    line = whatif.timeline(whatif.proposed_lives(own), seconds, recorded["pool"])
    proposal = whatif.proposal_trace(own, line, 60, seconds)
    for column in ("replicas_desired", "replicas_current", "replicas_ready"):
        assert proposal.columns[column] == trace.columns[column][:seconds], column
    # Demand conserved: every recorded Ready pod's CPU went to a Ready pod of the replay.
    assert own.unserved_cpu_seconds == 0
    assert own.served_cpu_seconds == pytest.approx(own.demand_cpu_seconds, rel=1e-9)
    assert own.cpu_seconds == pytest.approx(own.recorded_cpu_seconds, rel=1e-9)
    # Nodes and cost from the pool: the same model on both sides gives the same bill.
    rec_line = whatif.timeline(
        whatif.recorded_lives(recorded["recording"]), seconds, recorded["pool"]
    )
    assert line.nodes is not None and rec_line.nodes is not None
    assert line.nodes.total_cost == rec_line.nodes.total_cost > 0
    assert max(line.nodes.count) == 3  # the lab's pool: one 3-CPU replica per node, max 3


@settings(max_examples=20, deadline=None)
@given(target=st.integers(1, 50), max_replicas=st.integers(4, 10))
def test_lower_target_gives_more_replicas_and_pod_hours(
    run: dict, recorded: dict, target: int, max_replicas: int
) -> None:
    scenario = run["scenario"]
    spec = _with_target(scenario.hpa.to_core(), target, max_replicas)
    pool = recorded["pool"]
    lower = counterfactual(recorded["recording"], spec, _config(scenario), capacity=pool.capacity)
    own = recorded["own"]
    seconds = int(scenario.duration)
    assert sum(s.desired for s in lower.steps) > sum(s.desired for s in own.steps)
    assert max(s.desired for s in lower.steps) >= max(s.desired for s in own.steps)
    assert _pod_hours(lower, seconds) > _pod_hours(own, seconds)
    # Demand is conserved whatever the spec: served plus unserved is what the recording burnt.
    assert lower.served_cpu_seconds + lower.unserved_cpu_seconds == pytest.approx(
        lower.demand_cpu_seconds, rel=1e-9
    )
    # Replicas beyond the pool's capacity (3 nodes, one pod each) never run.
    line = whatif.timeline(whatif.proposed_lives(lower), seconds, pool)
    assert max(line.ready) <= pool.capacity


@settings(max_examples=15, deadline=None)
@given(
    target=st.integers(20, 150),
    min_replicas=st.integers(1, 3),
    extra=st.integers(0, 6),
)
def test_counterfactual_shares_all_demand(
    run: dict, recorded: dict, target: int, min_replicas: int, extra: int
) -> None:
    """Any spec: each Ready pod's share sums to the recorded demand where a pod was Ready, and
    the proposal never has more Ready pods than the pool holds."""
    scenario = run["scenario"]
    spec = dataclasses.replace(
        _with_target(scenario.hpa.to_core(), target, min_replicas + extra),
        min_replicas=min_replicas,
    )
    out = counterfactual(
        recorded["recording"], spec, _config(scenario), capacity=recorded["pool"].capacity
    )
    assert out.served_cpu_seconds + out.unserved_cpu_seconds == pytest.approx(
        out.demand_cpu_seconds, rel=1e-9
    )
    assert all(min_replicas <= s.desired <= min_replicas + extra for s in out.steps[1:])
    line = whatif.timeline(whatif.proposed_lives(out), int(scenario.duration), None)
    assert max(line.ready) <= recorded["pool"].capacity


def test_cli_propose_and_errors(run: dict, tmp_path: Path) -> None:
    manifest = tmp_path / "hpa.yaml"
    manifest.write_text(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\n"
        "metadata: {name: image-classifier}\n"
        "spec:\n  minReplicas: 1\n  maxReplicas: 6\n  metrics:\n  - type: Resource\n"
        "    resource: {name: cpu, target: {type: Utilization, averageUtilization: 30}}\n"
    )
    common = ["backtest", "--openmetrics", str(run["file"]), "--hpa", HPA]
    common += ["--scenario", str(SCENARIO), "--start", str(START)]
    out = tmp_path / "bt"
    runner = CliRunner()
    result = runner.invoke(app, [*common, "--out", str(out), "--propose", str(manifest)])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "counterfactual.json").read_text())
    assert info["model"] == "cpu-demand" and info["spec"]["maxReplicas"] == 6
    assert info["proposed"]["pod_hours"] > info["recorded"]["pod_hours"]
    assert info["proposed"]["cost_usd"] > info["recorded"]["cost_usd"] > 0
    assert info["proposed"]["max_replicas_desired"] == 6
    proposal = Trace.read(out / "proposal")
    assert max(v for v in proposal.columns["replicas_desired"] if v is not None) == 6
    assert set(proposal.columns["cpu_target"]) == {30}
    assert "<html" in (out / "report.html").read_text()[:200]
    # --set on top of the proposal; an invalid value is named and nothing is written
    bad = runner.invoke(app, [*common, "--out", str(tmp_path / "x"), "--set", "hpa.maxReplicas=0"])
    assert bad.exit_code == 2 and "hpa.maxReplicas" in bad.output
    assert not (tmp_path / "x").exists()
    missing = runner.invoke(
        app, [*common, "--out", str(tmp_path / "y"), "--propose", str(tmp_path / "none.yaml")]
    )
    assert (
        missing.exit_code == 2 and "--propose" in missing.output and "none.yaml" in missing.output
    )
    simulator = runner.invoke(app, [*common, "--out", str(tmp_path / "z"), "--model", "simulator"])
    assert simulator.exit_code == 2 and "--requests" in simulator.output
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()
