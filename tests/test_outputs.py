"""Never delete what scalelab did not write (--out for run and fidelity); empty input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import UserError
from sim.outputs import MARK, changed, claim, mark, publish, snapshot

LAB = Path(__file__).resolve().parents[1] / "scenarios" / "gsp777.yaml"


def run(*args: str) -> object:
    return CliRunner().invoke(app, ["run", str(LAB), "--set", "duration=2m", "-q", *args])


def test_a_new_directory_gets_the_run_and_its_marker(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    done = run("--out", str(out))
    assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
    names = {"trace.csv", "events.jsonl", "summary.json", "report.html"}
    assert names <= {p.name for p in out.iterdir()}
    written = {p.name for p in out.iterdir()} - {MARK}
    assert set(json.loads((out / MARK).read_text())["files"]) == written  # all it wrote, only


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


# --- every command that writes: a file the user put there survives ---------------------------

ROOT = LAB.parents[1]
PROFILE = ROOT / "sim" / "serving" / "profiles" / "resnet101-cpu-amd-epyc-genoa.yaml"
SWEEP = ["--set", "duration=2m", "--vary", "hpa.minReplicas=1,2", "--seeds", "1", "-j", "1"]


def invoke(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def users_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "notes.md").write_text("mine")
    return path


def test_sweep_refuses_a_foreign_out_and_forced_keeps_the_users_file(tmp_path: Path) -> None:
    out = users_dir(tmp_path / "mine")
    refused = invoke("sweep", str(LAB), *SWEEP, "--out", str(out), "-q")
    assert refused.exit_code == 2 and "not a scalelab output" in refused.output  # type: ignore[attr-defined]
    assert sorted(p.name for p in out.iterdir()) == ["notes.md"]  # nothing ran, nothing written
    forced = invoke("sweep", str(LAB), *SWEEP, "--out", str(out), "-q", "--force")
    assert forced.exit_code == 0, forced.output  # type: ignore[attr-defined]
    assert (out / "notes.md").read_text() == "mine" and (out / "results.csv").exists()
    listed = set(json.loads((out / MARK).read_text())["files"])
    assert "cache" in listed and "notes.md" not in listed
    again = invoke("sweep", str(LAB), *SWEEP, "--out", str(out), "-q")  # marked now: no --force
    assert again.exit_code == 0 and (out / "notes.md").read_text() == "mine"  # type: ignore[attr-defined]


def test_tune_refuses_a_foreign_out_before_anything_runs(tmp_path: Path) -> None:
    out = users_dir(tmp_path / "mine")
    done = invoke(
        "tune", str(LAB), "--vary", "hpa.minReplicas=1:2", "--slo", "p95<=9s", "--out", str(out)
    )
    assert done.exit_code == 2 and "not a scalelab output" in " ".join(done.output.split())  # type: ignore[attr-defined]
    assert sorted(p.name for p in out.iterdir()) == ["notes.md"]


def test_compare_refuses_a_foreign_out_and_forced_keeps_the_users_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert run("--out", str(a)).exit_code == 0  # type: ignore[attr-defined]
    assert run("--out", str(b), "--seed", "2").exit_code == 0  # type: ignore[attr-defined]
    out = users_dir(tmp_path / "report")
    refused = invoke("compare", str(a), str(b), "--out", str(out))
    assert refused.exit_code == 2 and "not a scalelab output" in refused.output  # type: ignore[attr-defined]
    assert sorted(p.name for p in out.iterdir()) == ["notes.md"]
    forced = invoke("compare", str(a), str(b), "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output  # type: ignore[attr-defined]
    assert (out / "notes.md").read_text() == "mine" and (out / "compare.json").exists()
    fresh = tmp_path / "new" / "deeper"
    broken = invoke("compare", str(a), str(tmp_path / "nothing"), "--out", str(fresh))
    assert broken.exit_code == 2 and not (tmp_path / "new").exists()  # type: ignore[attr-defined]


def test_calibrate_never_replaces_a_file_it_did_not_write(tmp_path: Path) -> None:
    mine = tmp_path / "profile.yaml"
    mine.write_text("my hand-made notes\n")
    derive = ["calibrate", "--derive-from", str(PROFILE), "--machine-type", "e2-standard-4"]
    refused = invoke(*derive, "--out", str(mine))
    assert refused.exit_code == 2, refused.output  # type: ignore[attr-defined]
    assert "not written by scalelab calibrate" in " ".join(refused.output.split())  # type: ignore[attr-defined]
    assert mine.read_text() == "my hand-made notes\n"
    ours = tmp_path / "derived.yaml"
    for _ in range(2):  # new, then its own earlier profile: replaced without --force
        done = invoke(*derive, "--out", str(ours))
        assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
    assert ours.read_text().startswith("# scalelab latency profile")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["derived.yaml", "profile.yaml"]


def test_calibrates_default_name_steps_aside_from_a_users_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sim.serving.calibrate.cli import _free_default

    monkeypatch.chdir(tmp_path)
    Path("cpu.yaml").write_text("mine")
    assert _free_default(Path("cpu.yaml")) == Path("cpu-2.yaml")
    Path("cpu-2.yaml").write_text("# scalelab latency profile (schema 3).\n")
    assert _free_default(Path("cpu-2.yaml")) == Path("cpu-2.yaml")  # its own: replaced


def test_a_real_cluster_run_refuses_a_foreign_out_and_marks_what_it_wrote(
    tmp_path: Path,
) -> None:
    out = users_dir(tmp_path / "gke")
    args = ["run", str(LAB), "--backend", "gke", "--dry-run", "--out", str(out)]
    refused = invoke(*args)
    assert refused.exit_code == 2 and "not a scalelab output" in refused.output  # type: ignore[attr-defined]
    assert sorted(p.name for p in out.iterdir()) == ["notes.md"]
    forced = invoke(*args, "--force")
    assert forced.exit_code == 0, forced.output  # type: ignore[attr-defined]
    assert sorted(p.name for p in out.iterdir()) == ["notes.md"]  # a dry run writes nothing


def test_what_a_backend_wrote_as_it_went_is_marked_and_nothing_else(tmp_path: Path) -> None:
    out = users_dir(tmp_path / "gke")
    (out / "old-ledger.jsonl").write_text("{}")
    before = snapshot(out)
    (out / "cloud-ledger.jsonl").write_text("{}")  # what a real run writes as it goes
    (out / "old-ledger.jsonl").write_text('{"more": 1}')
    written = changed(out, before)
    assert written == ["cloud-ledger.jsonl", "old-ledger.jsonl"]
    mark(out, "run --backend gke", written)
    (out / "cloud-ledger.jsonl").unlink()
    (out / "trace.csv").write_text("t")
    mark(out, "run --backend gke", ["trace.csv"])  # merged with those still there
    assert json.loads((out / MARK).read_text())["files"] == ["old-ledger.jsonl", "trace.csv"]
    claim(out, "run")  # marked: a rerun may write here


def test_outputs_get_the_ordinary_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        out = tmp_path / "new" / "run"
        assert run("--out", str(out)).exit_code == 0  # type: ignore[attr-defined]
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777, out.parent.stat().st_mode & 0o777) == (0o750, 0o750)
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o640}
