"""Latency profiles: schema, round trip, interpolation, extrapolation, machine-type selection."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.profile import (
    DEFAULT_QUANTILES,
    EXTRAPOLATION_RULES,
    ProfileError,
    ProfileExtrapolationWarning,
    builtin_profiles,
    dump_profile,
    load_profile,
    profile_for,
    profile_from_dict,
)

PROFILES = Path(__file__).resolve().parents[1] / "sim" / "profiles"


def _z(q: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(q)


def synthetic(
    threads: tuple[float, ...] = (1, 2),
    concurrency: tuple[int, ...] = (1, 2, 4),
    batch: tuple[int, ...] = (1, 2, 4),
    latency: Callable[[float, int, int], float] | None = None,
    cpu: Callable[[float, int, int], float] | None = None,
    sigma: float = 0.1,
    **top: Any,
) -> dict[str, Any]:
    """A schema-2 mapping whose medians follow ``latency`` (default: Amdahl x sharing x batch)."""

    def default_latency(t: float, c: int, b: int) -> float:
        lone = 0.3 * b * (0.2 + 0.8 / t)
        return lone * max(1.0, c * 0.9 * min(t, 2) / t)

    lat = latency or default_latency
    work = cpu or (lambda t, c, b: 0.3 * b * (1 + 0.05 * t))
    points = []
    for t, c, b in itertools.product(threads, concurrency, batch):
        median = lat(t, c, b)
        points.append(
            {
                "threads": t,
                "concurrency": c,
                "batch": b,
                "n": 30,
                "latency_s": [median * math.exp(sigma * _z(q)) for q in DEFAULT_QUANTILES],
                "lognormal": {"median_s": median, "sigma": sigma, "ks": 0.05},
                "cpu_s_per_request": work(t, c, b),
            }
        )
    data: dict[str, Any] = {
        "schema_version": 2,
        "name": "synthetic",
        "family": "synthetic",
        "machine_type": None,
        "kind": "measured",
        "model": {"architecture": "none"},
        "defaults": {"threads": max(threads), "overhead_s": 0.0, "idle_cpu_cores": 0.0},
        "quantiles": list(DEFAULT_QUANTILES),
        "points": points,
        "provenance": {"tool": "tests"},
    }
    data.update(top)
    return data


# --- the shipped profiles ----------------------------------------------------------------------


def test_shipped_profiles_validate_and_carry_provenance() -> None:
    shipped = builtin_profiles()
    names = {p.name for p in shipped}
    assert "resnet101-tfserving-gke-e2-standard-4" in names
    assert any(n.startswith("resnet101-cpu-") for n in names)
    for profile in shipped:
        assert profile.provenance.get("command", "").startswith("scalelab calibrate")
        assert profile.provenance.get("date")
        assert profile.alone_latency() > 0


def test_local_profile_records_the_host_and_the_toolchain() -> None:
    (local,) = [p for p in builtin_profiles() if p.name.startswith("resnet101-cpu-")]
    prov = local.provenance
    assert prov["cpu"]["model_name"] and prov["cpu"]["logical_cpus"] >= 1
    assert prov["tensorflow"]["version"]
    assert prov["payload"]["sha256"] and prov["payload"]["signature"] == "serving_preprocess"
    assert local.kind == "measured" and local.machine_type is None
    assert local.model["outputs"] == {"labels": [1, 5], "probabilities": [1, 5]}


def test_lab_profile_keeps_the_observed_lone_latency() -> None:
    lab = profile_for("resnet101-tfserving", "e2-standard-4")
    assert lab.name == "resnet101-tfserving-gke-e2-standard-4" and lab.scaled_from is None
    assert lab.default_threads == 4
    assert lab.alone_latency() == pytest.approx(0.680, rel=0.01)
    assert lab.service(4).latency_median == pytest.approx(0.680, rel=0.01)
    # The simulator's Server: a lone request at `parallelism` cores for cpu_seconds_median.
    assert 1.0 <= lab.parallelism <= 4.0
    assert lab.overhead_s + lab.cpu_seconds_median / lab.parallelism == pytest.approx(0.68, 0.01)
    # ... and at 2 users: two requests in flight do not slow each other down
    assert lab.service(4, 2).latency_median == pytest.approx(0.68, rel=0.05)


def test_lab_scenario_sees_the_observed_latency_at_two_users() -> None:
    """Through the simulator: about 680 ms median while the lab runs 2 users (first 60 s)."""
    from sim.engine import simulate
    from sim.loader import load_scenario

    root = Path(__file__).resolve().parents[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProfileExtrapolationWarning)
        trace = simulate(load_scenario(root / "scenarios" / "gsp777.yaml", ["duration=60s"]))
    medians = [v for v in trace.column("latency_p50")[10:60] if v is not None]
    assert float(np.median(medians)) == pytest.approx(0.68, rel=0.1)


def test_shipped_lab_profile_is_the_derivation_of_the_shipped_measurement() -> None:
    """The e2 profile is command output: re-deriving it from the local profile gives it back."""
    from sim.calibrate.derive import derive

    (local,) = [p for p in builtin_profiles() if p.name.startswith("resnet101-cpu-")]
    lab_file = PROFILES / "resnet101-tfserving-gke-e2-standard-4.yaml"
    shipped = yaml.safe_load(lab_file.read_text())
    again = load_profile(lab_file).to_dict()
    fresh = profile_from_dict(derive(local, machine="e2-standard-4")).to_dict()
    for mapping in (again, fresh):
        for key in ("date", "command"):
            mapping["provenance"].pop(key)
        mapping["provenance"]["derived_from"].pop("file")
    assert fresh == again
    assert "--derive-from" in shipped["provenance"]["command"]


def test_machine_type_picks_or_rescales_the_profile() -> None:
    lab = profile_for("resnet101-tfserving", "e2-standard-4")
    n1 = profile_for("resnet101-tfserving", "n1-standard-4")
    assert n1.scaled_from == lab.name and n1.machine_type == "n1-standard-4"
    assert n1.alone_latency() == pytest.approx(lab.alone_latency())  # speed factors 1.0 / 1.0
    n2 = profile_for("resnet101-tfserving", "n2-standard-4")  # 1.2x faster per vCPU
    assert n2.cpu_seconds_median == pytest.approx(lab.cpu_seconds_median / 1.2)
    server = lab.alone_latency() - lab.overhead_s
    assert n2.alone_latency() == pytest.approx(lab.overhead_s + server / 1.2)
    assert n2.parallelism == pytest.approx(lab.parallelism)


def test_bigger_machine_gets_more_threads_and_says_it_extrapolated() -> None:
    lab = profile_for("resnet101-tfserving", "e2-standard-4")
    big = profile_for("resnet101-tfserving", "e2-standard-8")
    assert big.default_threads == 8
    with pytest.warns(ProfileExtrapolationWarning, match="threads_above"):
        point = big.service(8)
    assert point.extrapolated and point.notes == ("threads_above",)
    assert point.latency_median <= lab.service(4).latency_median


def test_unknown_family_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="resnet101-tfserving"):
        profile_for("no-such-family", "e2-standard-4")


def test_a_profile_can_be_named_exactly_or_by_file(tmp_path: Path) -> None:
    (local,) = [p for p in builtin_profiles() if p.name.startswith("resnet101-cpu-")]
    named = profile_for(local.name, "n1-standard-4")
    assert named.name == local.name and named.scaled_from is None
    assert named.default_threads == 4
    path = dump_profile(synthetic(name="mine", family="mine"), tmp_path / "mine.json")
    mine = profile_for(str(path), "e2-standard-4")
    assert mine.name == "mine" and mine.default_threads == 4


# --- schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    data = synthetic()
    path = dump_profile(data, tmp_path / f"p{suffix}")
    if suffix == ".json":
        json.loads(path.read_text())
    loaded = load_profile(path)
    assert loaded.to_dict() == profile_from_dict(data).to_dict()
    again = load_profile(dump_profile(loaded, tmp_path / f"again{suffix}"))
    assert again.to_dict() == loaded.to_dict()
    for t, c, b in [(1, 1, 1), (1.5, 3, 3), (2, 4, 4)]:
        assert again.service(t, c, b) == loaded.service(t, c, b)


def _broken(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = synthetic()
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(schema_version=1), "re-run `scalelab calibrate`"),
        (lambda d: d.update(schema_version=3), "schema_version must be 2"),
        (lambda d: d.pop("family"), "missing field 'family'"),
        (lambda d: d.update(kind="guessed"), "kind must be one of"),
        (lambda d: d.update(machine_type="z9-mega-4"), "unknown machine type"),
        (lambda d: d.update(quantiles=[0.1, 0.9]), "containing 0.5"),
        (lambda d: d.pop("provenance"), "provenance"),
        (lambda d: d["points"].pop(3), "full grid"),
        (lambda d: d["points"].append(dict(d["points"][0])), "repeats threads=1"),
        (lambda d: d["points"][2]["latency_s"].reverse(), r"points\[2\].latency_s must be non-dec"),
        (lambda d: d["points"][1]["latency_s"].pop(), "one latency per quantile"),
        (lambda d: d["points"][0].update(cpu_s_per_request=0), "cpu_s_per_request must be > 0"),
        (lambda d: d["points"][0].update(concurrency=0.5), "concurrency must be an integer"),
        (lambda d: d["points"][0]["lognormal"].pop("ks"), "lognormal.'ks'"),
        (lambda d: d["defaults"].pop("threads"), "defaults.'threads'"),
    ],
)
def test_schema_errors_name_the_field(
    change: Callable[[dict[str, Any]], None], message: str
) -> None:
    with pytest.raises(ProfileError, match=message):
        profile_from_dict(_broken(change), "bad.yaml")


def test_unreadable_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("points: [")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(tmp_path / "bad.yaml")


# --- interpolation -----------------------------------------------------------------------------


def test_grid_points_come_back_exactly() -> None:
    data = synthetic()
    profile = profile_from_dict(data)
    for raw in data["points"]:
        sp = profile.service(raw["threads"], raw["concurrency"], raw["batch"])
        assert not sp.extrapolated
        assert sp.latency_median == pytest.approx(raw["latency_s"][3])
        assert sp.cpu_seconds_mean == pytest.approx(raw["cpu_s_per_request"])
        assert [v for _, v in sp.latency_quantiles] == pytest.approx(raw["latency_s"])


def test_interpolation_is_log_log_between_points() -> None:
    profile = profile_from_dict(synthetic(latency=lambda t, c, b: 1.0 / t * b))
    # A power law in every axis is reproduced exactly between the points.
    assert profile.service(1.5, 1, 3).latency_median == pytest.approx(3 / 1.5)
    assert profile.service(math.sqrt(2), 1, 1).latency_median == pytest.approx(1 / math.sqrt(2))


@settings(max_examples=40, deadline=None)
@given(
    increments=st.lists(st.floats(0.0, 1.0), min_size=27, max_size=27),
    axis=st.sampled_from([0, 1, 2]),
    queries=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6),
    others=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
)
def test_interpolation_is_monotone_where_the_data_is(
    increments: list[float], axis: int, queries: list[float], others: tuple[float, float]
) -> None:
    """Medians increasing along ``axis`` at every grid line stay increasing in between."""
    values = {"threads": (1.0, 2.0, 4.0), "concurrency": (1, 2, 4), "batch": (1, 2, 4)}
    grid = np.array(increments).reshape(3, 3, 3) + 0.01
    grid = np.cumsum(grid, axis=axis) + 0.1
    names = list(values)

    def lat(t: float, c: int, b: int) -> float:
        i = (values["threads"].index(t), values["concurrency"].index(c), values["batch"].index(b))
        return float(grid[i])

    profile = profile_from_dict(synthetic((1.0, 2.0, 4.0), (1, 2, 4), (1, 2, 4), latency=lat))
    free = [n for n in names if n != names[axis]]
    fixed = {free[0]: 1 + 3 * others[0], free[1]: 1 + 3 * others[1]}
    fixed = {k: (v if k == "threads" else round(v)) for k, v in fixed.items()}
    along = sorted(1 + 3 * q for q in queries)
    if names[axis] != "threads":
        along = sorted({round(v) for v in along})
    medians = [
        profile.service(**{**fixed, names[axis]: v}).latency_median  # type: ignore[arg-type]
        for v in along
    ]
    assert all(b >= a * (1 - 1e-9) for a, b in itertools.pairwise(medians))


# --- extrapolation ------------------------------------------------------------------------------


def _quiet(profile: Any, *args: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProfileExtrapolationWarning)
        return profile.service(*args)


def test_threads_beyond_the_grid_follow_amdahl() -> None:
    profile = profile_from_dict(synthetic(latency=lambda t, c, b: 0.2 + 0.8 / t))
    four = _quiet(profile, 4.0)
    assert four.extrapolated and four.latency_median == pytest.approx(0.2 + 0.8 / 4)
    two = profile.service(2.0)
    # each thread stays as busy as at 2: CPU-seconds scale with t * L(t)
    assert four.cpu_seconds_mean == pytest.approx(
        two.cpu_seconds_mean * (4 / 2) * (0.4 / 0.6), rel=1e-6
    )


def test_fewer_threads_than_measured_time_slice() -> None:
    profile = profile_from_dict(synthetic())
    half = _quiet(profile, 0.5)
    one = profile.service(1.0)
    assert half.notes == ("threads_below",)
    assert half.latency_median == pytest.approx(2 * one.latency_median)
    assert half.cpu_seconds_mean == pytest.approx(one.cpu_seconds_mean)


def test_concurrency_beyond_the_grid_shares_the_cpu() -> None:
    profile = profile_from_dict(synthetic())
    eight = _quiet(profile, 2.0, 8)
    four = profile.service(2.0, 4)
    assert eight.notes == ("concurrency_above",)
    assert eight.latency_median == pytest.approx(2 * four.latency_median)
    assert eight.cpu_seconds_mean == pytest.approx(four.cpu_seconds_mean)


def test_batch_beyond_the_grid_is_linear_along_the_last_step() -> None:
    profile = profile_from_dict(synthetic(latency=lambda t, c, b: 0.1 + 0.2 * b))
    sp = _quiet(profile, 1.0, 1, 8)
    assert sp.notes == ("batch_above",)
    assert sp.latency_median == pytest.approx(0.1 + 0.2 * 8)
    single = profile_from_dict(synthetic(batch=(2,)))
    assert _quiet(single, 1.0, 1, 1).latency_median == pytest.approx(
        single.service(1.0, 1, 2).latency_median / 2
    )


def test_each_rule_warns_once_per_profile() -> None:
    profile = profile_from_dict(synthetic())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile.service(8.0)
        profile.service(16.0)
        profile.service(2.0, 64)
    messages = [str(w.message) for w in caught if w.category is ProfileExtrapolationWarning]
    assert len(messages) == 2
    assert EXTRAPOLATION_RULES["threads_above"] in messages[0]


def test_bad_queries_are_rejected() -> None:
    profile = profile_from_dict(synthetic())
    with pytest.raises(ValueError, match="threads must be > 0"):
        profile.service(0)
    with pytest.raises(ValueError, match="concurrency and batch"):
        profile.service(1, 0)


def test_sampling_follows_the_quantiles() -> None:
    profile = profile_from_dict(synthetic(sigma=0.2))
    sp = profile.service(2.0)
    rng = np.random.default_rng(1)
    draws = sp.sample_latency(rng, 20_000)
    assert np.median(draws) == pytest.approx(sp.latency_median, rel=0.02)
    assert draws.min() >= sp.latency_quantiles[0][1] and draws.max() <= sp.latency(0.99)
    cpu = sp.sample_cpu_seconds(rng, 20_000)
    assert np.mean(cpu) == pytest.approx(sp.cpu_seconds_mean, rel=0.02)


def test_importing_sim_leaves_tensorflow_out() -> None:
    code = (
        "import sys, sim, sim.profile, sim.engine, sim.calibrate, sim.calibrate.cli, "
        "sim.calibrate.endpoint, sim.calibrate.derive, sim.calibrate.local; "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
