"""Never delete what scalelab did not write (--out for run and fidelity); empty input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import UserError
from sim.outputs import MARK, claim, publish

LAB = Path(__file__).resolve().parents[1] / "scenarios" / "gsp777.yaml"


def run(*args: str) -> object:
    return CliRunner().invoke(app, ["run", str(LAB), "--set", "duration=2m", "-q", *args])


def test_a_new_directory_gets_the_run_and_its_marker(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    done = run("--out", str(out))
    assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
    names = {"trace.csv", "events.jsonl", "summary.json", "report.html"}
    assert names <= {p.name for p in out.iterdir()}
    assert set(json.loads((out / MARK).read_text())["files"]) == names


def test_rerunning_replaces_the_run_and_keeps_the_users_files(tmp_path: Path) -> None:
    out = tmp_path / "lab"
    assert run("--out", str(out)).exit_code == 0  # type: ignore[attr-defined]
    (out / "my-notes.txt").write_text("mine")
    before = (out / "trace.csv").read_bytes()
    assert run("--out", str(out), "--seed", "7").exit_code == 0  # type: ignore[attr-defined]
    assert (out / "my-notes.txt").read_text() == "mine"
    assert (out / "trace.csv").read_bytes() != before


@pytest.mark.parametrize("force", [False, True])
def test_a_directory_scalelab_did_not_write_is_refused_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, force: bool
) -> None:
    (tmp_path / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(tmp_path)
    done = run("--out", ".", *(["--force"] if force else []))
    assert (tmp_path / "thesis.tex").read_text() == "years of work"
    if force:
        assert done.exit_code == 0  # type: ignore[attr-defined]
        assert (tmp_path / "trace.csv").exists()
    else:
        assert done.exit_code == 2  # type: ignore[attr-defined]
        assert "not a scalelab output" in done.output  # type: ignore[attr-defined]
        assert "Traceback" not in done.output  # type: ignore[attr-defined]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_an_existing_file_or_unwritable_place_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    done = run("--out", str(a_file))
    assert done.exit_code == 2 and "not a directory" in done.output  # type: ignore[attr-defined]
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserError, match="not writable"):
            claim(locked / "out", "run")


def test_publish_removes_only_what_it_wrote_before(tmp_path: Path) -> None:
    out = tmp_path / "out"

    def first(d: Path) -> None:
        (d / "a.csv").write_text("1")
        (d / "b.csv").write_text("1")

    def second(d: Path) -> None:
        (d / "a.csv").write_text("2")

    publish(out, "x", first)
    (out / "user.txt").write_text("u")
    publish(out, "x", second)
    assert sorted(p.name for p in out.iterdir()) == [MARK, "a.csv", "user.txt"]
    assert (out / "a.csv").read_text() == "2"

    def broken(d: Path) -> None:
        (d / "a.csv").write_text("3")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        publish(out, "x", broken)
    assert (out / "a.csv").read_text() == "2"  # the earlier output stays as it was
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no staging left


def test_fidelity_refuses_a_foreign_out_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("k")
    done = CliRunner().invoke(app, ["fidelity", "--users", "1", "--out", str(tmp_path)])
    assert done.exit_code == 2, done.output
    assert "not a scalelab output" in " ".join(done.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_an_empty_scenario_is_refused_not_run_with_defaults(tmp_path: Path, text: str) -> None:
    scenario = tmp_path / "empty.yaml"
    scenario.write_text(text)
    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["run", str(scenario), "--out", str(out)])
    assert done.exit_code == 2
    assert "empty scenario" in " ".join(done.output.split())
    assert not out.exists()
