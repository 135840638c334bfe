"""The scalelab command: outputs on success; on bad input exit 2, a precise message, no output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "scenarios" / "gsp777.yaml"


def scalelab(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sim.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_run_writes_its_outputs(tmp_path: Path) -> None:
    out = tmp_path / "lab"
    done = scalelab("run", str(LAB), "--out", str(out), "--set", "duration=5m", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == {
        "trace.csv",
        "events.jsonl",
        "summary.json",
        "report.html",
        "pods.csv",
        "latency_histogram.csv",  # per second, for compare's per-step percentiles
        "gsp777_stats.csv",  # Locust's --csv files
        "gsp777_stats_history.csv",
        "gsp777_failures.csv",
        ".scalelab",  # the marker: what scalelab wrote here
    }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 3 and summary["duration_s"] == 300
    header = (out / "trace.csv").read_text().splitlines()[0]
    assert header.startswith("t,users,offered_rps,completed_rps,failed_rps,latency_p50")
    assert len((out / "trace.csv").read_text().splitlines()) == 301
    assert 'class="plotly-graph-div"' in (out / "report.html").read_text()
    assert "requests ok / failed" in done.stdout


def test_quiet_prints_nothing(tmp_path: Path) -> None:
    done = scalelab(
        "run", str(LAB), "--out", str(tmp_path / "q"), "--set", "duration=1m", "--quiet"
    )
    assert done.returncode == 0 and done.stdout == ""


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--set", "hpa.maxReplicas=many"], "hpa.maxReplicas"),
        (["--set", "cluster.node_pool.machine_type=n9-huge"], "allowed: "),
        (["--set", "load.wait_time.between=[0.9, 0.1]"], "between"),
        (["--set", "duraton=5m"], "unknown field"),
    ],
)
def test_bad_input_exits_2_without_traceback_or_output(
    tmp_path: Path, args: list[str], words: str
) -> None:
    out = tmp_path / "never"
    done = scalelab("run", str(LAB), "--out", str(out), *args)
    assert done.returncode == 2
    assert words in done.stderr and "gsp777.yaml" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


def test_missing_file_exits_2(tmp_path: Path) -> None:
    done = scalelab("validate", str(tmp_path / "absent.yaml"))
    assert done.returncode == 2 and "cannot read" in done.stderr and "Traceback" not in done.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = scalelab("validate", str(tmp_path / "absent.yaml"), "--debug")
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_validate_and_help() -> None:
    done = scalelab("validate", str(LAB))
    assert done.returncode == 0 and "ok" in done.stdout
    helped = scalelab("--help")
    assert helped.returncode == 0 and "scalelab run scenarios/gsp777.yaml" in helped.stdout


def test_import_sim_stays_light() -> None:
    heavy = "('locust', 'kubernetes', 'google.cloud.container', 'gevent')"
    code = f"import sys, sim, sim.engine; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_cloud_plugs_in_through_its_entry_point() -> None:
    from sim.cli import app
    from sim.plugins import backends, load_plugins, register_backend

    load_plugins(app)  # what importing sim.cli did; a second call changes nothing

    helped = scalelab("--help")
    assert all(name in helped.stdout for name in ("compare", "manifests", "serve", "cloud"))
    assert {"sim", "gke", "kube"} <= set(backends())
    with pytest.raises(ValueError, match="already registered"):
        register_backend("sim", lambda *a, **k: None)


def test_cluster_flags_are_refused_for_the_simulator(tmp_path: Path) -> None:
    done = scalelab("run", str(LAB), "--out", str(tmp_path / "x"), "--dry-run")
    assert done.returncode == 2 and "--dry-run apply to --backend gke or kube" in done.stderr


def test_gke_dry_run_prints_the_plan_without_credentials(tmp_path: Path) -> None:
    done = scalelab("run", str(LAB), "--backend", "gke", "--dry-run", "--out", str(tmp_path / "g"))
    assert done.returncode == 0, done.stderr
    assert "n1-standard-4, autoscaling 1-3" in done.stdout + done.stderr
    assert not (tmp_path / "g" / "trace.csv").exists()
