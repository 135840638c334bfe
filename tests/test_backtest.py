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
from sim.backtest.load import counter_rate
from sim.backtest.replay import Mismatch, ReplayConfig, replay
from sim.backtest.series import Series, SeriesSet
from sim.cli import app
from sim.engine import controller_config, simulate
from sim.loader import load_scenario

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
