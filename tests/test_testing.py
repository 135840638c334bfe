"""The property-testing kit for users: valid scenarios from strategies; replayable failures."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from sim.loader import build_scenario, load_scenario
from sim.recorder import FailureReason
from sim.testing import (
    diurnal,
    hpa_specs,
    ramps,
    random_walks,
    scenarios,
    simulate,
    spikes,
    steps,
)
from sim.trace import Trace

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "scenarios" / "gsp777.yaml"


@settings(max_examples=30, deadline=None)
@given(
    load=st.one_of(spikes(), steps(), ramps(), diurnal(), random_walks()),
    hpa=hpa_specs(),
)
def test_strategies_give_valid_scenarios(load: dict, hpa: dict) -> None:
    scenario = build_scenario({"load": load, "hpa": hpa}, "<strategy>")
    assert scenario.hpa is not None
    assert scenario.hpa.minReplicas <= scenario.hpa.maxReplicas
    rate = scenario.load.rate  # type: ignore[union-attr]
    assert all(rate.rate(t) >= 0 for t in range(0, 3600, 97))


@settings(max_examples=20, deadline=None)
@given(load=random_walks(start_rps=2, max_rps=5, max_move=0.5))
def test_random_walks_stay_in_bounds_and_move_slowly(load: dict) -> None:
    rates = [r for _, r in load["rate"]["points"]]
    assert all(0 <= r <= 5 for r in rates)
    assert all(abs(b - a) <= 0.5 + 1e-9 for a, b in itertools.pairwise(rates))


@settings(max_examples=3, deadline=None)
@given(scenario=scenarios(LAB, load=spikes(base_rps=0.5), seeds=st.integers(0, 10)))
def test_scenarios_derive_from_the_base_file(scenario) -> None:  # type: ignore[no-untyped-def]
    base = load_scenario(LAB)
    assert scenario.cluster == base.cluster and scenario.hpa == base.hpa
    assert scenario.load.kind == "open_loop"


def test_a_counterexample_is_found_written_and_replayable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALELAB_COUNTEREXAMPLES", str(tmp_path))

    # False for the lab's Deployment: a scale-down under traffic kills a pod mid-request. (Not
    # "no request fails": a spike into one saturated pod also times requests out, which no
    # drain fixes.)
    @settings(max_examples=20, deadline=None, derandomize=True, phases=[Phase.generate])
    @given(load=spikes(base_rps=1, max_factor=3, latest=600, max_length=600))
    def claim(load: dict) -> None:
        assert resets(simulate(LAB, load=load, duration="20m").summary) == 0

    with pytest.raises(AssertionError):
        claim()
    replay = tmp_path / "gsp777.yaml"
    assert replay.exists()
    out = tmp_path / "run"
    command = [sys.executable, "-m", "sim.cli", "run", str(replay), "--out", str(out), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    # The replayed run is the failing one, and the failures come from killed pods.
    summary = json.loads((out / "summary.json").read_text())
    assert resets(summary) > 0
    killed = [e for e in Trace.read(out).events_of("pod") if e["event"] == "terminating"]
    assert killed
    # The same load with a preStop drain as long as the request timeout resets nothing.
    drained = simulate(replay, overrides=["deployment.lifecycle.preStop.sleep.seconds=30"])
    assert resets(drained.summary) == 0


def resets(summary: dict) -> int:
    """Requests reset by a container exiting under them."""
    return int(summary["failures_by_reason"].get(FailureReason.RESET, 0))
