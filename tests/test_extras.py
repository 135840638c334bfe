"""``pip install scalelab`` (and ``make run``) installs what simulating needs; every other
feature names the extra to install, exit 2, before anything is written."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app, main
from sim.extras import EXTRA_OF, MissingExtra, require

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: Not needed to simulate: what `make run` leaves out (extras' packages and their big deps).
NOT_FOR_SIMULATING = [
    "pyarrow",
    "optuna",
    "dask",
    "distributed",
    "prometheus_api_client",
    "prometheus_client",
    "matplotlib",
    "pandas",
    "tensorflow",
    "kubernetes",
    "locust",
    "google",
]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_simulating_imports_nothing_from_an_extra(tmp_path: Path) -> None:
    """`make run` installs only pyproject's dependencies: run, validate and events must work
    with every extra's package unimportable."""
    code = (
        "import sys\n"
        f"for m in {NOT_FOR_SIMULATING!r}: sys.modules[m] = None\n"
        "from sim.cli import main\n"
        "sys.argv = ['scalelab', *sys.argv[1:]]\n"
        "main()\n"
    )
    for args in (
        ["run", "gsp777", "--set", "duration=3m", "--out", "lab", "-q"],
        ["events", "lab", "--kind", "hpa"],
        ["validate", "spike"],
    ):
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert done.returncode == 0, (args, done.stderr)
    assert (tmp_path / "lab" / "report.html").is_file()


def test_extras_are_declared_and_the_test_extra_has_them_all() -> None:
    extras = PYPROJECT["optional-dependencies"]
    core = {_name(r) for r in PYPROJECT["dependencies"]}
    test = {_name(r) for r in extras["test"]}
    for module, extra in EXTRA_OF.items():
        wanted = module.replace("_", "-")  # dask[distributed] installs distributed
        assert any(wanted in r.lower() for r in extras[extra]), (module, extra)
    for extra, requirements in extras.items():
        for requirement in requirements:
            assert _name(requirement) in test, f"make test would miss {requirement} ({extra})"
            assert _name(requirement) not in core or extra == "test", requirement


def test_require_names_the_pip_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    require(["yaml"], "anything")  # installed: nothing to say
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(MissingExtra, match=r"scalelab tune needs optuna.*'scalelab\[sweep\]'"):
        require(["yaml", "optuna"], "scalelab tune")


def test_a_sweep_without_its_extra_exits_2_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    out = tmp_path / "sw"
    done = CliRunner().invoke(
        app, ["sweep", "gsp777", "--vary", "hpa.maxReplicas=4,5", "--out", str(out)]
    )
    assert done.exit_code == 2
    assert "pip install 'scalelab[sweep]'" in done.output
    assert not out.exists()


def test_an_extra_imported_mid_command_is_exit_2_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Parquet replay file needs pyarrow, read while the scenario loads."""
    (tmp_path / "rates.parquet").write_bytes(b"PAR1")
    (tmp_path / "s.yaml").write_text(
        "load: {kind: open_loop, rate: {kind: replay, file: rates.parquet}}\n"
    )
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setattr(sys, "argv", ["scalelab", "validate", str(tmp_path / "s.yaml")])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "pyarrow" in err and "pip install 'scalelab[sweep]'" in err
    assert "Traceback" not in err
