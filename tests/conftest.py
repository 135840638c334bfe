"""Fixtures shared by more than one test module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


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
