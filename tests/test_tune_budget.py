"""``tune --budget N`` evaluates N distinct points or says why fewer; with ties the
recommendation keeps the scenario as given instead of an arbitrary equal point."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from sim.cli import app
from sim.sweep.axes import parse_vary
from sim.sweep.tune import space_size

GRACE = "deployment.terminationGracePeriodSeconds"


def test_space_size_counts_distinct_points() -> None:
    def size(*vary: str) -> int | None:
        return space_size([parse_vary(v, "x") for v in vary])

    assert size("hpa.minReplicas=1:3", "hpa.maxReplicas=4,6") == 6
    assert size(f"{GRACE}=0:600:30") == 21
    assert size("serving.cold_factor=1.5:3:0.5") == 4
    assert size("serving.cold_factor=1.5:3") is None  # a continuous range: no end
    assert size("hpa.minReplicas=1:3", "serving.cold_factor=1.5:3") is None


def test_a_budget_past_the_space_and_ties_keep_the_baseline(tmp_path: Path) -> None:
    """The grace period matters only when a pod is deleted, and nothing scales down in the
    first 3 minutes (stabilization: 5): both points tie with the lab as given."""
    out = tmp_path / "tune"
    done = CliRunner().invoke(
        app,
        [
            "tune", "gsp777", "--set", "duration=3m", "--vary", f"{GRACE}=45,60",
            "--budget", "5", "--batch", "2", "--seeds", "1", "--slo", "p95<=60s",
            "--recommend", "-j", "1", "--out", str(out),
        ],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "tune evaluated 2 of --budget 5 points: the search space has only 2 points" in (
        done.stderr
    )
    info = json.loads((out / "sweep.json").read_text())
    assert info["evaluated"] == 2 and info["points"] == 2 and info["shortfall"]
    assert info["recommended"]["point"] == -1  # the baseline, not point 0 or 1
    assert info["recommended"]["cost_usd_mean"] == info["baseline"]["cost_usd_mean"]
    assert "recommended: keep the scenario as given" in done.stdout
    recommended = yaml.safe_load((out / "recommended.yaml").read_text())
    assert "terminationGracePeriodSeconds" not in recommended["deployment"]
