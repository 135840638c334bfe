"""The lab on a real GKE cluster: ``pytest -m gke``. Skipped unless credentials and a project
are configured (see cloud/README.md); it creates a cluster, runs ~8 minutes of load, compares
with the simulator, and deletes everything (a --max-cost guard of $2 stops it early)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cloud.cli import run_on_cluster
from cloud.settings import CloudSettings, new_run_id
from sim.compare import compare
from sim.engine import simulate
from sim.loader import load_scenario

pytestmark = pytest.mark.gke
ROOT = Path(__file__).resolve().parents[1]


def _configured() -> str | None:
    """Why the live test cannot run here, or None when it can."""
    for var in ("SCALELAB_GCP_PROJECT", "SCALELAB_MODEL_PATH"):
        if not os.environ.get(var):
            return f"{var} is not set"
    try:
        import google.auth

        google.auth.default()
    except Exception as err:  # no ADC: gcloud auth application-default login
        return f"no Google credentials ({err})"
    return None


def test_the_lab_on_gke(tmp_path: Path) -> None:
    reason = _configured()
    if reason:
        pytest.skip(reason)
    lab = load_scenario(ROOT / "scenarios" / "gsp777.yaml", ["duration=8m"])
    settings = CloudSettings.from_env(cluster_name=new_run_id("scalelab-live")[:40])
    trace = run_on_cluster(
        lab, backend="gke", out=tmp_path / "gke", yes=True, max_cost=2.0, settings=settings
    )
    assert trace is not None and len(trace) == 480
    assert trace.summary["requests_ok"] > 0
    assert trace.events_of("scale"), "the lab's load scales the deployment within 8 minutes"
    fidelity = compare(simulate(lab), trace)
    print(fidelity.render())
