"""scalelab outside its repository: packaged scenarios by name, paths inside a scenario
relative to its file, --version, and scalelab's warnings as one clean line.

The wheel itself is checked by hand (pip wheel, a throwaway venv, a run from /tmp: too slow
for the suite); here the package-data rules and the name resolution are checked in-process.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
import tomllib
import warnings
from importlib import metadata
from pathlib import Path

import pytest
import yaml

import sim
from sim.bundled import bundled_dir, bundled_names, resolve_scenario
from sim.console import route_warnings
from sim.errors import ScenarioError
from sim.loader import dump_scenario, load_scenario
from sim.serving.profile import ProfileExtrapolationWarning
from sim.testing import counterexample_dir, simulate

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "sim" / "serving" / "profiles"
HOST_PROFILE = PROFILES / "resnet101-cpu-amd-epyc-genoa.yaml"  # 2 threads measured


def scalelab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sim.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_every_scenario_users_see_is_package_data() -> None:
    """A file under scenarios/ that no package-data glob matches would be missing from the
    wheel, and ``scalelab run NAME`` would fail only after pip install."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["sim"]
    files = [p.relative_to(ROOT).as_posix() for p in (ROOT / "scenarios").rglob("*.yaml")]
    assert files
    for path in files:
        assert any(fnmatch.fnmatch(path, g) for g in globs), f"{path} is not package data"
    # and the package sees the same files the user does (one copy, no drift)
    assert bundled_dir().resolve() == (ROOT / "scenarios").resolve()
    assert bundled_names() == sorted(p.stem for p in (ROOT / "scenarios").glob("*.yaml"))


def test_a_bare_name_is_the_packaged_scenario_and_a_file_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for given in ("gsp777", "gsp777.yaml"):
        assert resolve_scenario(given) == bundled_dir() / "gsp777.yaml"
    assert load_scenario("gsp777").name == "gsp777"
    mine = yaml.safe_load((ROOT / "scenarios" / "gsp777.yaml").read_text())
    mine["name"] = "mine"
    (tmp_path / "gsp777.yaml").write_text(yaml.safe_dump(mine))
    assert resolve_scenario("gsp777.yaml") == Path("gsp777.yaml")  # the file here wins
    assert load_scenario("gsp777.yaml").name == "mine"
    with pytest.raises(ScenarioError, match=r"no packaged scenario.*gsp777, spike"):
        resolve_scenario("gsp77")
    assert resolve_scenario("sub/gsp777") == Path("sub/gsp777")  # a path: the loader says


def test_run_by_name_from_any_directory(tmp_path: Path) -> None:
    done = scalelab("run", "gsp777", "--set", "duration=3m", "--out", "lab", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "lab" / "summary.json").read_text())
    assert summary["scenario"] == "gsp777" and summary["requests_ok"] > 0
    wrong = scalelab("validate", "gsp77", cwd=tmp_path)
    assert wrong.returncode == 2
    assert "no packaged scenario of that name" in wrong.stderr and "gsp777" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_simulate_takes_a_packaged_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SCALELAB_COUNTEREXAMPLES", raising=False)
    trace = simulate("gsp777", duration="2m")
    assert trace.summary["scenario"] == "gsp777" and trace.summary["requests_ok"] > 0
    assert (tmp_path / counterexample_dir() / "gsp777.yaml").is_file()


def _scenario_with_files(folder: Path) -> Path:
    """A scenario whose profile, HPA manifest and replay file sit beside it."""
    folder.mkdir()
    shutil.copy(HOST_PROFILE, folder / "prof.yaml")
    (folder / "rates.csv").write_text("t,rps\n0,1.0\n60,2.0\n")
    (folder / "hpa.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "image-classifier"},
                "spec": {
                    "scaleTargetRef": {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": "image-classifier",
                    },
                    "minReplicas": 1,
                    "maxReplicas": 3,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {"type": "Utilization", "averageUtilization": 50},
                            },
                        }
                    ],
                },
            }
        )
    )
    data = yaml.safe_load((ROOT / "scenarios" / "gsp777.yaml").read_text())
    data.update(
        name="beside",
        duration="2m",
        hpa={"manifest": "hpa.yaml"},
        serving={"profile": "prof.yaml"},
        load={"kind": "open_loop", "rate": {"kind": "replay", "file": "rates.csv"}},
    )
    path = folder / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_paths_inside_a_scenario_are_relative_to_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _scenario_with_files(tmp_path / "sub")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    scenario = load_scenario(Path("..") / "sub" / "s.yaml")
    assert Path(scenario.serving.profile) == (tmp_path / "sub" / "prof.yaml").resolve()
    assert scenario.hpa.maxReplicas == 3
    assert scenario.load.rate.points == ((0.0, 1.0), (60.0, 2.0))  # type: ignore[union-attr]
    # written elsewhere (a counterexample, a sweep point), it still finds its profile
    dump_scenario(scenario, elsewhere / "copy.yaml")
    assert load_scenario(elsewhere / "copy.yaml").serving.profile == scenario.serving.profile
    # on the command line a path is the current directory's, as any command-line path is
    shutil.copy(HOST_PROFILE, elsewhere / "mine.yaml")
    given = load_scenario(path, ["serving.profile=mine.yaml"])
    assert Path(given.serving.profile) == (elsewhere / "mine.yaml").resolve()
    with pytest.raises(ScenarioError, match=r"serving\.profile: no profile file at .*nope\.yaml"):
        load_scenario(path, ["serving.profile=nope.yaml"])
    with pytest.raises(ScenarioError, match=r"unknown profile 'nope'.*resnet101-tfserving"):
        load_scenario(path, ["serving.profile=nope"])


def test_a_profile_from_a_file_is_an_event_and_its_warning_one_line(tmp_path: Path) -> None:
    """The host profile measured 2 threads; an n1-standard-4 pod runs 4: extrapolated."""
    path = _scenario_with_files(tmp_path / "sub")
    done = scalelab("run", str(path), "--out", "out", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").open()]
    profiles = [e for e in events if e["kind"] == "profile"]
    assert profiles and profiles[0]["file"] == str((tmp_path / "sub" / "prof.yaml").resolve())
    assert profiles[0]["profile"] == "resnet101-cpu-amd-epyc-genoa"
    lines = [line for line in done.stderr.splitlines() if "threads_above" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: profile resnet101-cpu-amd-epyc")
    assert "ProfileExtrapolationWarning" not in done.stderr and ".py:" not in done.stderr


def test_route_warnings_once_per_message_others_untouched(
    capsys: pytest.CaptureFixture[str],
) -> None:
    passed_on: list[tuple] = []
    with warnings.catch_warnings():  # restores showwarning and the filters afterwards
        warnings.simplefilter("always")
        warnings.showwarning = lambda *args, **kwargs: passed_on.append(args)
        route_warnings()
        for _ in range(3):
            warnings.warn("profile p: threads_above; rule", ProfileExtrapolationWarning, 1)
        warnings.warn("profile p: n_above; rule", ProfileExtrapolationWarning, 1)
        warnings.warn("someone else's", DeprecationWarning, 1)
    err = capsys.readouterr().err
    assert err.count("warning: profile p: threads_above; rule") == 1
    assert err.count("warning: profile p: n_above; rule") == 1
    assert "someone else's" not in err  # left to Python's format, file and line included
    assert [(str(a[0]), a[1]) for a in passed_on] == [("someone else's", DeprecationWarning)]


def test_version_is_the_package_version(tmp_path: Path) -> None:
    done = scalelab("--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"scalelab {sim.__version__}"
    assert metadata.version("scalelab") == sim.__version__
