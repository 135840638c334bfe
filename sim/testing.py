"""Property-test your own autoscaling policy with hypothesis.

State what your policy must guarantee, and let hypothesis search loads and HPA specs for a
counterexample::

    from hypothesis import given, settings
    from sim.testing import simulate, spikes

    @settings(max_examples=10, deadline=None)
    @given(load=spikes(base_rps=1, max_factor=6))
    def test_p95_under_slo(load):
        trace = simulate("gsp777", load=load, duration="20m")  # or a scenario file
        assert trace.p95_latency(after="5m") < 15

Every ``simulate`` call writes the scenario it ran to ``<SCALELAB_COUNTEREXAMPLES or
out/counterexamples>/<name>.yaml``; hypothesis runs the shrunk failing example last, so after a
failure that file is the counterexample, and ``scalelab run`` replays it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from hypothesis import note
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from sim.bundled import resolve_scenario
from sim.engine import simulate as _simulate
from sim.loader import build_scenario, dump_scenario, read_scenario_data
from sim.scenario import Scenario
from sim.trace import Trace
from sim.units import format_duration

__all__ = [
    "diurnal",
    "hpa_specs",
    "ramps",
    "random_walks",
    "scenarios",
    "simulate",
    "spikes",
    "steps",
]

LoadSpec = dict[str, Any]


def _open_loop(rate: dict[str, Any]) -> LoadSpec:
    return {"kind": "open_loop", "rate": rate}


def spikes(
    base_rps: float = 1.0,
    max_factor: float = 5.0,
    earliest: float = 60.0,
    latest: float = 900.0,
    max_length: float = 900.0,
) -> st.SearchStrategy[LoadSpec]:
    """Open-loop Poisson load at ``base_rps`` that jumps by up to ``max_factor`` once."""
    return st.builds(
        lambda factor, start, length: _open_loop(
            {
                "kind": "spike",
                "base_rps": base_rps,
                "factor": round(factor, 2),
                "start": start,
                "duration": length,
            }
        ),
        st.floats(1.0, max_factor),
        st.integers(int(earliest), int(latest)),
        st.integers(30, int(max_length)),
    )


def steps(max_rps: float = 5.0, step: float = 60.0, count: int = 10) -> st.SearchStrategy[LoadSpec]:
    """A rate held for ``step`` seconds at a time, each level drawn in [0, max_rps]."""
    return st.lists(st.floats(0.0, max_rps), min_size=1, max_size=count).map(
        lambda levels: _open_loop(
            {"kind": "piecewise", "points": [[i * step, round(r, 3)] for i, r in enumerate(levels)]}
        )
    )


def ramps(max_rps: float = 5.0, max_length: float = 1200.0) -> st.SearchStrategy[LoadSpec]:
    """A linear ramp from one rate to another over a drawn time, in 10-second steps."""

    def build(start: float, end: float, length: int) -> LoadSpec:
        n = max(1, length // 10)
        points = [[i * 10, round(start + (end - start) * i / n, 3)] for i in range(n + 1)]
        return _open_loop({"kind": "piecewise", "points": points})

    return st.builds(
        build, st.floats(0.0, max_rps), st.floats(0.0, max_rps), st.integers(10, int(max_length))
    )


def diurnal(max_rps: float = 8.0, period: float = 86400.0) -> st.SearchStrategy[LoadSpec]:
    """A sinusoidal day: mean and amplitude drawn so the rate stays within [0, max_rps]."""
    return st.builds(
        lambda mean, swing, phase: _open_loop(
            {
                "kind": "sinusoid",
                "mean_rps": round(mean, 3),
                "amplitude_rps": round(mean * swing, 3),
                "period": period,
                "phase": phase,
            }
        ),
        st.floats(0.0, max_rps / 2),
        st.floats(0.0, 1.0),
        st.integers(0, int(period)),
    )


def random_walks(
    start_rps: float = 2.0,
    max_rps: float = 8.0,
    step: float = 60.0,
    count: int = 20,
    max_move: float = 1.0,
) -> st.SearchStrategy[LoadSpec]:
    """A rate that moves by at most ``max_move`` req/s per step, kept within [0, max_rps]."""

    def build(moves: list[float]) -> LoadSpec:
        rate, points = start_rps, []
        for i, move in enumerate(moves):
            points.append([i * step, round(rate, 3)])
            rate = min(max_rps, max(0.0, rate + move))
        return _open_loop({"kind": "piecewise", "points": points})

    return st.lists(st.floats(-max_move, max_move), min_size=1, max_size=count).map(build)


def hpa_specs(
    min_replicas: tuple[int, int] = (1, 3),
    max_replicas: tuple[int, int] = (2, 10),
    utilization: tuple[int, int] = (20, 95),
    with_behavior: bool = True,
) -> st.SearchStrategy[dict[str, Any]]:
    """autoscaling/v2 HPA specs on cpu Utilization, optionally with a ``behavior``."""
    rules = st.fixed_dictionaries(
        {
            "stabilizationWindowSeconds": st.integers(0, 600),
            "selectPolicy": st.sampled_from(["Max", "Min"]),
            "policies": st.lists(
                st.fixed_dictionaries(
                    {
                        "type": st.sampled_from(["Pods", "Percent"]),
                        "value": st.integers(1, 200),
                        "periodSeconds": st.integers(1, 600),
                    }
                ),
                min_size=1,
                max_size=3,
            ),
        }
    )
    behavior = (
        st.one_of(st.none(), st.fixed_dictionaries({"scaleUp": rules, "scaleDown": rules}))
        if with_behavior
        else st.none()
    )

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        low = draw(st.integers(*min_replicas))
        high = draw(st.integers(max(low, max_replicas[0]), max(low, max_replicas[1])))
        spec: dict[str, Any] = {
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": draw(st.integers(*utilization)),
                        },
                    },
                }
            ],
        }
        chosen = draw(behavior)
        if chosen is not None:
            spec["behavior"] = chosen
        return spec

    return build()


def _base(base: str | Path | Scenario) -> tuple[dict[str, Any], str, Path]:
    if isinstance(base, Scenario):
        return base.model_dump(mode="json", by_alias=True, exclude_none=True), base.name, Path(".")
    path = resolve_scenario(base)  # a file, or a packaged scenario's name: "gsp777"
    data = read_scenario_data(path)
    data.setdefault("name", path.stem)
    return data, str(path), path.parent


def scenarios(
    base: str | Path | Scenario,
    *,
    load: st.SearchStrategy[LoadSpec] | None = None,
    hpa: st.SearchStrategy[dict[str, Any]] | None = None,
    seeds: st.SearchStrategy[int] | None = None,
) -> st.SearchStrategy[Scenario]:
    """Whole scenarios: the base file with its load, HPA spec and seed drawn."""
    data, source, folder = _base(base)

    @st.composite
    def build(draw: st.DrawFn) -> Scenario:
        variant = dict(data)
        if load is not None:
            variant["load"] = draw(load)
        if hpa is not None:
            variant["hpa"] = draw(hpa)
            variant.setdefault("deployment", {})
            variant["deployment"] = {
                **variant["deployment"],
                "replicas": variant["hpa"]["minReplicas"],
            }
        if seeds is not None:
            variant["seed"] = draw(seeds)
        return build_scenario(variant, source, base_dir=folder)

    return build()


def counterexample_dir() -> Path:
    return Path(os.environ.get("SCALELAB_COUNTEREXAMPLES", "out/counterexamples"))


def simulate(
    base: str | Path | Scenario,
    *,
    load: LoadSpec | None = None,
    hpa: dict[str, Any] | None = None,
    duration: str | float | None = None,
    seed: int | None = None,
    overrides: list[str] | None = None,
) -> Trace:
    """Run the base scenario with the given load/HPA/duration and return its trace.

    The exact scenario run is written where ``scalelab run`` can replay it (see module doc).
    """
    if (
        isinstance(base, Scenario)
        and load is None
        and hpa is None
        and duration is None
        and not overrides
    ):
        scenario = base
    else:
        data, source, folder = _base(base)
        if load is not None:
            data["load"] = load
        if hpa is not None:
            data["hpa"] = hpa
        if duration is not None:
            data["duration"] = duration if isinstance(duration, str) else format_duration(duration)
        scenario = build_scenario(data, source, overrides, base_dir=folder)
    folder_out = counterexample_dir()
    folder_out.mkdir(parents=True, exist_ok=True)
    replay = folder_out / f"{scenario.name}.yaml"
    dump_scenario(scenario, replay)
    with contextlib.suppress(InvalidArgument):  # outside a hypothesis test there is no report
        note(
            f"replay with: scalelab run {replay}" + (f" --seed {seed}" if seed is not None else "")
        )
    return _simulate(scenario, seed=seed)
