"""Fixtures shared by more than one test module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Modules that measure this machine (a stand-in's rate in wall-clock time, CPU counters, real
# Locust, TensorFlow): `make test` runs them one at a time after the rest, which run in parallel
# workers, so that no other test's CPU moves what they measure.
SERIAL = {
    "test_calibrate",
    "test_cloud_e2e",
    "test_cloud_failures",
    "test_cloud_ladder",
    "test_cloud_serve",
    "test_fidelity",
    "test_pod_cpu",
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in SERIAL:
            item.add_marker(pytest.mark.serial)


@pytest.fixture(scope="session")
def resnet101_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ResNet101 exported once as the lab lays it out (``BASE/1/``), for every test that serves
    or calibrates it: an export takes ~20 s here, and ``export`` reuses a stamped one. In a
    subprocess, so that TensorFlow stays out of the test process."""
    base = tmp_path_factory.mktemp("resnet101") / "model"
    code = "import sys, pathlib; from sim.serving.calibrate.model import export; "
    code += "export('resnet101', pathlib.Path(sys.argv[1]))"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(base)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return base
