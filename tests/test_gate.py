"""Exit codes a CI can gate on: run exits 1 when it misses the scenario's SLO, 0 otherwise."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from sim.cli import app
from sim.gate import OK, SLO_MISSED, check_lines, exit_code, verdict

LAB = Path(__file__).resolve().parents[1] / "scenarios" / "gsp777.yaml"

checks = st.dictionaries(
    st.sampled_from(["p50", "p95", "p99", "error_rate"]),
    st.builds(
        lambda value, limit: {
            "value": value,
            "limit": limit,
            "met": value is not None and value <= limit,
        },
        st.none() | st.floats(0, 100),
        st.floats(0, 100),
    ),
    min_size=1,
)


@given(checks)
def test_exit_1_exactly_when_a_check_is_missed(found: dict) -> None:
    slo = {"checks": found, "met": all(c["met"] for c in found.values())}
    missed = [name for name, c in found.items() if not c["met"]]
    assert exit_code(slo) == (SLO_MISSED if missed else OK)
    lines = check_lines(slo)
    assert len(lines) == len(found)
    assert [line.split()[1] for line in lines if line.startswith("MISS")] == missed
    assert verdict(slo).endswith("exit 1" if missed else "exit 0")


def test_no_slo_is_exit_0() -> None:
    assert exit_code(None) == OK and check_lines(None) == []


def run(tmp_path: Path, *args: str) -> object:
    out = tmp_path / "out"
    return CliRunner().invoke(
        app, ["run", str(LAB), "--out", str(out), "--set", "duration=11m", *args]
    )


def test_run_exits_1_when_it_misses_its_slo_and_prints_each_check(tmp_path: Path) -> None:
    done = run(tmp_path, "--set", "slo.p95=1ms", "--set", "slo.error_rate=0.5")
    assert done.exit_code == 1, done.output  # type: ignore[attr-defined]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    p95 = summary["slo"]["checks"]["p95"]["value"]
    assert f"MISS p95 {p95:.4g} s (limit <= 0.001 s)" in done.output  # type: ignore[attr-defined]
    assert "ok   error_rate 0.0000% (limit <= 50.0000%)" in done.output  # type: ignore[attr-defined]
    assert "SLO missed (p95): exit 1" in done.output  # type: ignore[attr-defined]


def test_run_exits_0_when_it_meets_its_slo_or_has_none(tmp_path: Path) -> None:
    met = run(tmp_path, "--set", "slo.p95=10m")
    assert met.exit_code == 0, met.output  # type: ignore[attr-defined]
    assert "SLO met: exit 0" in met.output  # type: ignore[attr-defined]
    none = run(tmp_path)
    assert none.exit_code == 0, none.output  # type: ignore[attr-defined]
    assert "SLO" not in none.output  # type: ignore[attr-defined]


def test_quiet_still_says_why_it_failed(tmp_path: Path) -> None:
    done = run(tmp_path, "-q", "--set", "slo.p50=1ms")
    assert done.exit_code == 1  # type: ignore[attr-defined]
    assert "MISS p50" in done.output and "exit 1" in done.output  # type: ignore[attr-defined]
    quiet_met = run(tmp_path, "-q", "--set", "slo.p50=10m")
    assert quiet_met.exit_code == 0 and quiet_met.output == ""  # type: ignore[attr-defined]
