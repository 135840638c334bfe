"""Latency profiles (schema 3): schema, round trip, interpolation, extrapolation, families."""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim.serving.profile as profile_module
from sim.serving.calibrate.ladder import knee
from sim.serving.profile import (
    DEFAULT_QUANTILES,
    EXTRAPOLATION_RULES,
    REGENERATE,
    Profile,
    ProfileError,
    ProfileExtrapolationWarning,
    builtin_profiles,
    dump_profile,
    load_profile,
    plateau_fit,
    profile_for,
    profile_from_dict,
)


def _z(q: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(q)


def default_throughput(t: float, n: int) -> float:
    """X(t, n): a power law in threads, saturating in n (its last step 2 -> 4 gains 2.4%)."""
    return 3.0 * t**0.8 * n / (n + 0.1)


def default_cpu(t: float, n: int) -> float:
    return 0.9 * t * n / (n + 0.2)


def default_batch_cost(b: int) -> float:
    return 0.4 + 0.6 * b


def synthetic(
    threads: tuple[float, ...] = (1, 2),
    concurrency: tuple[int, ...] = (1, 2, 4),
    batch: tuple[int, ...] = (1, 2, 4),
    throughput: Callable[[float, int], float] = default_throughput,
    cpu: Callable[[float, int], float] = default_cpu,
    batch_cost: Callable[[int], float] = default_batch_cost,
    latency: Callable[[float, int], float] | None = None,
    sigma: float | Callable[[float], float] = 0.1,
    overhead: float = 0.0,
    idle: float = 0.0,
    **top: Any,
) -> dict[str, Any]:
    """A schema-3 mapping: per thread count, a batch-1 ladder over ``concurrency`` with
    throughput X(t, n), CPU U(t, n) and median latency (default: Little's law, overhead +
    n / X), and batch points at concurrency 1 whose lone batch takes ``batch_cost(b)`` lone
    requests' time (same CPU as a lone request)."""

    def point(t: float, c: int, b: int, x: float, u: float, median: float) -> dict[str, Any]:
        s = sigma(t) if callable(sigma) else sigma
        return {
            "threads": t,
            "concurrency": c,
            "batch": b,
            "n": 30,
            "latency_s": [median * math.exp(s * _z(q)) for q in DEFAULT_QUANTILES],
            "lognormal": {"median_s": median, "sigma": s, "ks": 0.05},
            "throughput_rps": x,
            "cpu_cores": u,
        }

    points = []
    for t in threads:
        for c in concurrency:
            x = throughput(t, c)
            median = latency(t, c) if latency else overhead + c / x
            points.append(point(t, c, 1, x, cpu(t, c), median))
        for b in batch:
            if b > 1:
                time = batch_cost(b) / throughput(t, 1)
                points.append(point(t, 1, b, 1 / time, cpu(t, 1), overhead + time))
    data: dict[str, Any] = {
        "schema_version": 3,
        "name": "synthetic",
        "family": "synthetic",
        "machine_type": None,
        "kind": "measured",
        "model": {"architecture": "none"},
        "defaults": {"threads": max(threads), "overhead_s": overhead, "idle_cpu_cores": idle},
        "quantiles": list(DEFAULT_QUANTILES),
        "points": points,
        "provenance": {"tool": "tests"},
    }
    data.update(top)
    return data


def make(**kw: Any) -> Profile:
    return profile_from_dict(synthetic(**kw))


@contextmanager
def caught() -> Iterator[list[str]]:
    """The extrapolation rules warned about inside the block, in order."""
    rules: list[str] = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield rules
    for w in seen:
        if w.category is ProfileExtrapolationWarning:
            rules.append(str(w.message).split(": ", 1)[1].split(";", 1)[0])


# --- the shipped profiles (their numbers are being re-measured: not asserted here) ---------------


def test_shipped_profiles_load_and_carry_provenance() -> None:
    shipped = builtin_profiles()
    names = {p.name for p in shipped}
    assert "resnet101-tfserving-gke-e2-standard-4" in names
    assert any(n.startswith("resnet101-cpu-") for n in names)
    root = Path(__file__).resolve().parents[1]
    for profile in shipped:
        # written by a command (calibrate, or fidelity's calibration step), never by hand
        made_by = profile.provenance["command"]
        assert made_by.startswith(("scalelab calibrate", "scalelab fidelity"))
        assert profile.provenance.get("date")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ProfileExtrapolationWarning)
            assert profile.alone_latency() > profile.overhead_s
        # command output, in canonical form: validating and writing it again changes nothing
        again = profile_from_dict(profile.to_dict(), profile.origin)
        assert again.to_dict() == profile.to_dict()
        assert (root / profile.origin).is_file()


def test_the_lab_family_has_the_lab_machine() -> None:
    lab = profile_for("resnet101-tfserving", "e2-standard-4")
    assert lab.name == "resnet101-tfserving-gke-e2-standard-4" and lab.scaled_from is None
    assert lab.default_threads == 4


# --- schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_is_byte_stable(tmp_path: Path, suffix: str) -> None:
    data = synthetic(overhead=0.02, idle=0.01, sigma=lambda t: 0.1 * t)
    data["points"][0].update(spread={"p50": 0.01, "p95": 0.02}, repeats=3)
    data["points"][1]["background_cpu_cores"] = 0.05
    data["defaults"].update(model_load_s=8.0, cold_factor=3.5, served_plateau=0.96)
    data["defaults"]["after_idle"] = {
        "gap_s": [0.03, 0.9],
        "factor": [0.95, 1.12],
        "cpu_factor": [0.97, 1.05],
    }
    first = dump_profile(data, tmp_path / f"p{suffix}")
    if suffix == ".json":
        json.loads(first.read_text())
    loaded = load_profile(first)
    second = dump_profile(loaded, tmp_path / f"again{suffix}")
    assert second.read_bytes() == first.read_bytes()
    assert loaded.to_dict() == load_profile(second).to_dict()
    assert loaded.points[0].spread == {"p50": 0.01, "p95": 0.02}
    assert loaded.points[0].repeats == 3 and loaded.points[1].background_cpu_cores == 0.05
    assert (loaded.model_load_s, loaded.cold_factor) == (8.0, 3.5)
    assert loaded.served_plateau == 0.96
    assert loaded.after_idle == ((0.03, 0.95), (0.9, 1.12))
    assert loaded.after_idle_cpu == (0.97, 1.05)
    original = profile_from_dict(data)
    for c, n in [(1, 1), (1.5, 3), (2, 4)]:  # five significant digits survive the trip
        assert loaded.throughput(c, n) == pytest.approx(original.throughput(c, n), rel=1e-4)
        assert loaded.cpu_cores(c, n) == pytest.approx(original.cpu_cores(c, n), rel=1e-4)


@given(
    ratio=st.floats(0.5, 1.2),
    xs=st.lists(st.floats(1.0, 50.0), min_size=2, max_size=6),
)
def test_the_served_plateau_caps_x_and_spares_the_lone_request(
    ratio: float, xs: list[float]
) -> None:
    """A profile whose plateau through the served path is ``ratio`` of its in-process one: X is
    capped there, never below X at one in flight (the path's cost to a lone request is
    ``overhead_s``), stays as measured below the cap, and the CPU is untouched."""
    ladder = sorted(xs)
    n = tuple(range(1, len(ladder) + 1))
    data = synthetic(threads=(2,), concurrency=n, batch=(1,), throughput=lambda t, c: ladder[c - 1])
    plain = profile_from_dict(data)
    data["defaults"]["served_plateau"] = ratio
    served = profile_from_dict(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProfileExtrapolationWarning)
        lone, top = plain.throughput(2, 1), plain.throughput(2, 99)
        cap = max(top * ratio, lone)
        for k in (*n, 99):
            assert served.throughput(2, k) == pytest.approx(min(plain.throughput(2, k), cap))
        assert served.throughput(2, 1) == pytest.approx(lone)
        assert [served.cpu_cores(2, k) for k in n] == [plain.cpu_cores(2, k) for k in n]


def test_a_served_plateau_must_be_positive() -> None:
    data = synthetic()
    data["defaults"]["served_plateau"] = 0
    with pytest.raises(ProfileError, match=r"defaults\.served_plateau must be > 0, got 0"):
        profile_from_dict(data)


def _broken(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = synthetic()
    change(data)
    return data


def _point(data: dict[str, Any], t: float, c: int, b: int = 1) -> dict[str, Any]:
    (found,) = [
        p for p in data["points"] if (p["threads"], p["concurrency"], p["batch"]) == (t, c, b)
    ]
    return found


def _batch_at_concurrency(data: dict[str, Any]) -> None:
    _point(data, 1, 1, 2)["concurrency"] = 2


def _drop_lone(data: dict[str, Any]) -> None:
    data["points"].remove(_point(data, 2, 1))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["points"][0].pop("throughput_rps"), r"missing field points\[0\]\.'throughpu"),
        (lambda d: d["points"][2].pop("cpu_cores"), r"missing field points\[2\]\.'cpu_cores'"),
        (
            lambda d: d["points"][1].update(cpu_s_per_request=0.3),
            r"points\[1\]\.cpu_s_per_request is schema 2 .*" + re.escape(REGENERATE),
        ),
        (
            lambda d: d.update(schema_version=2),
            r"schema_version must be 3, got 2; schema 2 profiles .*" + re.escape(REGENERATE),
        ),
        (lambda d: d.update(schema_version=1), re.escape(REGENERATE)),
        (lambda d: d.update(schema_version=4), r"schema_version must be 3, got 4$"),
        (
            _batch_at_concurrency,
            r"points\[3\] has batch=2 at concurrency=2; batch > 1 is measured at concurrency 1",
        ),
        (_drop_lone, "threads=2 has no concurrency=1 batch=1 point"),
        (
            lambda d: d["points"].append(dict(d["points"][1])),
            r"points\[10\] repeats threads=1 concurrency=2 batch=1 \(first at points\[1\]\)",
        ),
        (lambda d: d["points"][0].update(throughput_rps=0), r"throughput_rps must be > 0"),
        (lambda d: d["points"][0].update(cpu_cores=-1), r"points\[0\]\.cpu_cores must be > 0"),
        (lambda d: d.pop("family"), "missing field 'family'"),
        (lambda d: d.update(kind="guessed"), "kind must be one of"),
        (lambda d: d.update(machine_type="z9-mega-4"), "unknown machine type"),
        (lambda d: d.update(quantiles=[0.1, 0.9]), "containing 0.5"),
        (lambda d: d.pop("provenance"), "provenance"),
        (lambda d: d.update(points=[]), "points must be a non-empty list"),
        (lambda d: d["points"][2]["latency_s"].reverse(), r"points\[2\].latency_s must be non-dec"),
        (lambda d: d["points"][1]["latency_s"].pop(), "one latency per quantile"),
        (lambda d: d["points"][0].update(concurrency=0.5), "concurrency must be an integer"),
        (lambda d: d["points"][0]["lognormal"].pop("ks"), r"points\[0\]\.lognormal\.'ks'"),
        (lambda d: d["points"][0].update(spread={"p99": 1}), "spread must be a mapping"),
        (lambda d: d["defaults"].pop("threads"), "defaults.'threads'"),
        (lambda d: d["defaults"].update(overhead_s=-1), "defaults.overhead_s must be >= 0"),
        (
            lambda d: d["defaults"].update(after_idle=[1.1]),
            r"defaults\.after_idle must be a mapping of gap_s, factor and optionally "
            r"cpu_factor, got \[1\.1\]",
        ),
        (
            lambda d: d["defaults"].update(after_idle={"gap_s": [0.1, 1], "factor": [1.1]}),
            "gap_s, factor must be lists of one length",
        ),
        (
            lambda d: d["defaults"].update(
                after_idle={"gap_s": [0.1], "factor": [1.1], "cpu_factor": [1, 1]}
            ),
            "gap_s, factor and cpu_factor must be lists of one length",
        ),
        (
            lambda d: d["defaults"].update(
                after_idle={"gap_s": [0.1], "factor": [1.1], "cpu": [1.0]}
            ),
            "optionally cpu_factor, got",
        ),
        (
            lambda d: d["defaults"].update(
                after_idle={"gap_s": [0.5], "factor": [1.1], "cpu_factor": [0]}
            ),
            r"defaults\.after_idle\.cpu_factor\[0\] must be > 0",
        ),
        (
            lambda d: d["defaults"].update(after_idle={"gap_s": [1, 0.1], "factor": [1, 1]}),
            r"defaults\.after_idle\.gap_s must increase, got \[1, 0\.1\]",
        ),
        (
            lambda d: d["defaults"].update(after_idle={"gap_s": [0], "factor": [1]}),
            r"defaults\.after_idle\.gap_s\[0\] must be > 0",
        ),
        (
            lambda d: d["defaults"].update(after_idle={"gap_s": [0.5], "factor": [-1]}),
            r"defaults\.after_idle\.factor\[0\] must be > 0",
        ),
    ],
)
def test_schema_errors_name_the_file_and_the_field(
    change: Callable[[dict[str, Any]], None], message: str
) -> None:
    with pytest.raises(ProfileError) as error:
        profile_from_dict(_broken(change), "bad.yaml")
    assert str(error.value).startswith("bad.yaml: ")
    assert re.search(message, str(error.value)), str(error.value)


@given(
    factors=st.lists(st.floats(0.5, 2.0), min_size=1, max_size=5),
    gap=st.floats(0.0, 10.0),
)
def test_the_after_idle_factor_is_one_back_to_back_and_bounded_by_the_measured(
    factors: list[float], gap: float
) -> None:
    """Linear between the measured gaps (from 1 at gap 0), held past the last: never outside
    the measured factors and 1, and exact at each measured gap."""
    gaps = [0.01 * 3**i for i in range(len(factors))]
    data = synthetic()
    data["defaults"]["after_idle"] = {"gap_s": gaps, "factor": factors}
    profile = profile_from_dict(data)
    assert profile.idle_factor(0.0) == 1.0
    for g, f in zip(gaps, factors, strict=True):
        assert profile.idle_factor(g) == pytest.approx(f)
    assert min(1.0, *factors) - 1e-12 <= profile.idle_factor(gap) <= max(1.0, *factors) + 1e-12
    assert profile.idle_factor(gaps[-1] + gap) == pytest.approx(factors[-1])
    assert profile_from_dict(synthetic()).idle_factor(gap) == 1.0  # none measured
    # without a CPU factor of its own the CPU follows the work; with one, the same rule
    assert profile.idle_cpu_factor(gap) == profile.idle_factor(gap)
    data["defaults"]["after_idle"]["cpu_factor"] = [1 + (f - 1) / 2 for f in factors]
    halved = profile_from_dict(data)
    assert halved.idle_cpu_factor(gap) - 1 == pytest.approx((profile.idle_factor(gap) - 1) / 2)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("points: [")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(tmp_path / "bad.yaml")
    old = tmp_path / "old.json"
    old.write_text(json.dumps(synthetic(schema_version=2)))
    with pytest.raises(ProfileError, match=re.escape(f"{old}: schema_version must be 3")):
        load_profile(old)
    broken = re.escape(f"{tmp_path / 'x.yaml'}: missing field points[0].'n'")
    with pytest.raises(ProfileError, match=broken):
        dump_profile(_broken(lambda d: d["points"][0].pop("n")), tmp_path / "x.yaml")


# --- interpolation -----------------------------------------------------------------------------


def test_measured_points_come_back_exactly() -> None:
    data = synthetic(overhead=0.03, threads=(1, 2, 4))
    profile = profile_from_dict(data)
    with caught() as rules:
        for raw in data["points"]:
            t, c, b = raw["threads"], raw["concurrency"], raw["batch"]
            if b == 1:
                assert profile.throughput(t, c) == pytest.approx(raw["throughput_rps"])
                assert profile.cpu_cores(t, c) == pytest.approx(raw["cpu_cores"])
                assert profile.latency(t, c) == pytest.approx(raw["latency_s"])
            else:
                lone = _point(data, t, 1)
                assert profile.batch_cost(t, b) == pytest.approx(
                    lone["throughput_rps"] / raw["throughput_rps"]
                )
                assert profile.throughput(t, 1, b) == pytest.approx(raw["throughput_rps"])
        assert profile.alone_latency(2) == pytest.approx(0.03 + 1 / default_throughput(2, 1))
        assert profile.alone_latency() == profile.alone_latency(4)  # defaults.threads
    assert rules == []


def test_between_concurrencies_the_ladder_is_linear_and_below_one_idles() -> None:
    profile = make()
    assert profile.throughput(2, 3) == pytest.approx(
        (default_throughput(2, 2) + default_throughput(2, 4)) / 2
    )
    assert profile.cpu_cores(2, 3) == pytest.approx((default_cpu(2, 2) + default_cpu(2, 4)) / 2)
    # fewer than one in flight on average: busy that share of the time
    assert profile.throughput(2, 0.25) == pytest.approx(default_throughput(2, 1) / 4)
    assert profile.cpu_cores(2, 0) == 0.0  # idle_cpu_cores


def test_nothing_in_flight_completes_nothing_at_any_cores() -> None:
    profile = make(threads=(1, 4), idle=0.01)
    for cores in (0.5, 1.0, 2.0, 4.0, 8.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ProfileExtrapolationWarning)
            assert profile.throughput(cores, 0) == 0.0
            assert profile.cpu_cores(cores, 0) == 0.01


def test_idle_cpu_is_a_floor() -> None:
    profile = make(idle=0.5)
    assert profile.cpu_cores(1, 0) == 0.5
    assert profile.cpu_cores(1, 0.1) == 0.5  # 0.9 x 0.1 / 1.2 busy would be less
    assert profile.cpu_cores(1, 4) == pytest.approx(default_cpu(1, 4))


def test_between_thread_counts_it_is_log_linear() -> None:
    """X, U and latency between two measured thread counts are the geometric blend (a power
    law in threads comes back exactly); the lone spread is linear in log(threads)."""
    profile = make(threads=(1, 4), sigma=lambda t: 0.1 * t)
    for c, n in itertools.product([1.5, 2.0, 3.0], [1, 2, 3, 4]):
        w = math.log(c) / math.log(4)
        x = profile.throughput(c, n)
        assert x == pytest.approx(
            profile.throughput(1, n) ** (1 - w) * profile.throughput(4, n) ** w
        )
        assert profile.cpu_cores(c, n) == pytest.approx(
            profile.cpu_cores(1, n) ** (1 - w) * profile.cpu_cores(4, n) ** w
        )
        lo, hi = profile.latency(1, n), profile.latency(4, n)
        lat = [a ** (1 - w) * b**w for a, b in zip(lo, hi, strict=True)]
        assert profile.latency(c, n) == pytest.approx(lat)
        assert profile.sigma(c) == pytest.approx(0.1 * (1 - w) + 0.4 * w)
        if n != 3:  # X is 3 t^0.8 f(n), U is 0.9 t g(n): power laws in t
            assert x == pytest.approx(default_throughput(c, n))
            assert profile.cpu_cores(c, n) == pytest.approx(default_cpu(c, n))
            assert profile.latency(c, n)[3] == pytest.approx(n / default_throughput(c, n))


ladder_steps = st.lists(st.floats(0.0, 2.0), min_size=4, max_size=4)


@settings(max_examples=60, deadline=None)
@given(
    x_steps=st.tuples(ladder_steps, ladder_steps),
    u_steps=st.tuples(ladder_steps, ladder_steps),
    cores=st.floats(1.0, 4.0),
    queries=st.lists(st.floats(0.0, 8.0), min_size=2, max_size=8),
)
def test_monotone_in_concurrency_where_the_data_is(
    x_steps: tuple[list[float], list[float]],
    u_steps: tuple[list[float], list[float]],
    cores: float,
    queries: list[float],
) -> None:
    """Non-decreasing X and U along every measured ladder stay so between (and beyond) the
    points, at and between the thread counts."""
    ladder = (1, 2, 4, 8)

    def cumulative(steps: tuple[list[float], list[float]]) -> Callable[[float, int], float]:
        def value(t: float, n: int) -> float:
            return 0.1 + sum(steps[t == 4][: ladder.index(n) + 1])

        return value

    profile = make(
        threads=(1, 4),
        concurrency=ladder,
        batch=(1,),
        throughput=cumulative(x_steps),
        cpu=cumulative(u_steps),
    )
    along = sorted(queries)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProfileExtrapolationWarning)
        xs = [profile.throughput(cores, n) for n in along]
        us = [profile.cpu_cores(cores, n) for n in along]
    for values in (xs, us):
        assert all(b >= a * (1 - 1e-9) for a, b in itertools.pairwise(values))


# --- extrapolation ------------------------------------------------------------------------------


def test_fewer_threads_than_measured_time_slice() -> None:
    profile = make(overhead=0.05)
    with caught() as rules:
        for n in (1, 2, 3, 4):
            assert profile.throughput(0.5, n) == pytest.approx(profile.throughput(1, n) / 2)
            assert profile.cpu_cores(0.5, n) == pytest.approx(profile.cpu_cores(1, n) / 2)
            server = [v - 0.05 for v in profile.latency(1, n)]
            assert profile.latency(0.5, n) == pytest.approx([0.05 + 2 * v for v in server])
        assert profile.throughput(0.25, 1) == pytest.approx(profile.throughput(1, 1) / 4)
    assert rules == ["threads_below"]


def amdahl_profile() -> Profile:
    """Lone latencies 1.2 s at 1 thread and 1.0 s at 2: L(t) = 0.8 + 0.4 / t exactly. At 2
    threads two in flight complete three times as many as one (superlinear, so the Amdahl cap
    can bind beyond), and the ladder is still climbing at its end (4 gains 17% over 2)."""
    xs = {(1, 1): 1 / 1.2, (1, 2): 1.2, (1, 4): 1.2, (2, 1): 1.0, (2, 2): 3.0, (2, 4): 3.5}
    return make(threads=(1, 2), batch=(1,), throughput=lambda t, n: xs[t, n])


def test_more_threads_than_measured_act_as_copies_capped_by_amdahl() -> None:
    profile = amdahl_profile()
    with caught() as rules:
        # c = 4: two copies of the 2-thread server, each with n/2 in flight, and no request
        # faster than L(4) = 0.9 s: X(4, n) = min(2 X(2, n/2), n / 0.9)
        assert profile.throughput(4, 1) == pytest.approx(1.0)  # one copy, half the time
        assert profile.throughput(4, 2) == pytest.approx(2 * 1.0)  # cap 2.2
        assert profile.throughput(4, 3) == pytest.approx(3 / 0.9)  # 2 x 2.0 = 4 > cap 3.3
        assert profile.throughput(4, 4) == pytest.approx(4 / 0.9)  # 2 x 3.0 = 6 > cap 4.4
        assert profile.throughput(4, 8) == pytest.approx(2 * 3.5)  # cap 8.9
        assert profile.throughput(8, 8) == pytest.approx(8 / (0.8 + 0.4 / 8))  # 4 x 3.0 > 9.4
        assert profile.cpu_cores(4, 4) == pytest.approx(2 * default_cpu(2, 2))  # no cap
        assert profile.cpu_cores(4, 3) == pytest.approx(2 * profile.cpu_cores(2, 1.5))
        # latency follows the throughput rule: n / X at the ladder's own points
        assert profile.latency(4, 4)[3] == pytest.approx(0.9)
        assert profile.latency(4, 8)[3] == pytest.approx(8 / 7.0)
    # n = 8 at 4 threads is 4 per copy: inside the 2-thread ladder, so no concurrency warning
    assert rules == ["threads_above"]
    with caught() as rules:
        assert profile.throughput(4, 16) == pytest.approx(2 * 3.5)  # 8 per copy: beyond
    assert rules == ["concurrency_above"]


def test_more_threads_with_one_thread_count_measured_are_held() -> None:
    profile = make(threads=(2,))
    with caught() as rules:
        for n in (1, 3, 4):
            assert profile.throughput(8, n) == pytest.approx(profile.throughput(2, n))
            assert profile.cpu_cores(8, n) == pytest.approx(profile.cpu_cores(2, n))
    assert rules == ["threads_above"]


def test_beyond_the_ladder_the_plateau_holds_and_latency_follows_little() -> None:
    profile = make(overhead=0.05)  # the last step (2 -> 4) gained 2.4%: the plateau
    with caught() as rules:
        for c in (1, 1.5, 2):
            assert profile.throughput(c, 16) == pytest.approx(profile.throughput(c, 4))
            assert profile.cpu_cores(c, 16) == pytest.approx(profile.cpu_cores(c, 4))
            assert profile.throughput(c, 5) == pytest.approx(profile.throughput(c, 4))
        for t in (1, 2):  # the server's part (not the overhead) grows with n
            server = [v - 0.05 for v in profile.latency(t, 4)]
            assert profile.latency(t, 16) == pytest.approx([0.05 + 4 * v for v in server])
            assert profile.latency(t, 16)[3] == pytest.approx(0.05 + 16 / profile.throughput(t, 16))
    assert rules == []


def test_a_ladder_that_stopped_climbing_too_early_says_so() -> None:
    profile = make(throughput=lambda t, n: t * n)  # still doubling at the last step
    with caught() as rules:
        assert profile.throughput(2, 4) == pytest.approx(8)
        assert profile.throughput(2, 8) == pytest.approx(8)  # held, but ...
        assert profile.throughput(1.5, 8) == pytest.approx(6)
    assert rules == ["concurrency_above"]  # ... once


def test_a_batch_beyond_the_measured_ones_grows_along_the_last_step() -> None:
    profile = make(batch=(1, 2, 4))  # a lone batch of b costs 0.4 + 0.6 b
    with caught() as rules:
        assert profile.batch_cost(1, 4) == pytest.approx(0.4 + 0.6 * 4)
        assert profile.batch_cost(1, 3) == pytest.approx(0.4 + 0.6 * 3)  # measured range
    assert rules == []
    with caught() as rules:
        assert profile.batch_cost(1, 8) == pytest.approx(0.4 + 0.6 * 8)
        assert profile.batch_cost(2, 16) == pytest.approx(0.4 + 0.6 * 16)
        assert profile.throughput(2, 1, 8) == pytest.approx(default_throughput(2, 1) / 5.2)
    assert rules == ["batch_above"]
    single = make(batch=(1,))
    with caught() as rules:
        assert single.batch_cost(1, 5) == pytest.approx(5)  # in proportion to the batch
    assert rules == ["batch_above"]
    assert single.batch_cost(1, 1) == 1.0


def test_each_rule_warns_once_per_profile_with_its_text() -> None:
    profile = make(throughput=lambda t, n: t * n)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(3):
            profile.throughput(8.0, 1)
            profile.throughput(0.5, 1)
            profile.cpu_cores(2.0, 64)
            profile.batch_cost(1, 64)
    messages = [str(w.message) for w in seen if w.category is ProfileExtrapolationWarning]
    assert len(messages) == 4
    for rule in ("threads_above", "threads_below", "concurrency_above", "batch_above"):
        (message,) = [m for m in messages if f": {rule};" in m]
        assert message.startswith("profile synthetic:")
        assert EXTRAPOLATION_RULES[rule] in message
    with caught() as rules:  # another profile warns again
        make(throughput=lambda t, n: t * n).throughput(8.0, 1)
    assert rules == ["threads_above"]


def test_bad_queries_are_rejected() -> None:
    profile = make()
    for cores in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="cores must be > 0"):
            profile.throughput(cores, 1)


# --- the data plane's tables ---------------------------------------------------------------------


@pytest.mark.parametrize("cores", [0.5, 1.0, 1.5, 2.0, 3.0])
def test_tables_are_throughput_per_request_and_cpu(cores: float) -> None:
    profile = make(idle=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProfileExtrapolationWarning)
        rate, burn = profile.tables(cores, 9)
        assert len(rate) == len(burn) == 9
        assert rate[0] == 0.0 and burn[0] == 0.01
        for n in range(1, 9):
            assert rate[n] * n == pytest.approx(profile.throughput(cores, n))
            assert burn[n] == pytest.approx(profile.cpu_cores(cores, n))
        assert profile.tables(cores, 9) is profile.tables(cores, 9)  # cached


# --- families and machine types ------------------------------------------------------------------


@pytest.fixture
def family(monkeypatch: pytest.MonkeyPatch) -> tuple[Profile, Profile]:
    """Family "fam" ships profiles for e2-standard-4 (speed 1.0) and n2-standard-8 (1.2)."""
    defaults = {"threads": 4, "overhead_s": 0.03, "idle_cpu_cores": 0.0}
    e2 = make(
        name="fam-e2-4",
        family="fam",
        machine_type="e2-standard-4",
        overhead=0.03,
        defaults=defaults,
        batch=(1,),
    )
    n2 = make(name="fam-n2-8", family="fam", machine_type="n2-standard-8", threads=(4, 8))
    monkeypatch.setattr(profile_module, "builtin_profiles", lambda: (e2, n2))
    return e2, n2


def test_the_family_member_for_the_machine_is_used_as_is(family: tuple[Profile, ...]) -> None:
    e2, n2 = family
    assert profile_for("fam", "e2-standard-4") is e2
    assert profile_for("fam", "n2-standard-8") is n2


def test_the_nearest_member_is_rescaled_by_speed(family: tuple[Profile, ...]) -> None:
    e2, _ = family
    n2 = profile_for("fam", "n2-standard-4")  # nearest: e2-standard-4 (same vCPUs), 1.2x
    assert (n2.name, n2.machine_type, n2.scaled_from) == (
        "fam-n2-standard-4",
        "n2-standard-4",
        "fam-e2-4",
    )
    assert n2.speedup == pytest.approx(1.2) and n2.default_threads == 4
    for c, n in [(1, 1), (1.5, 3), (2, 4)]:
        assert n2.throughput(c, n) == pytest.approx(1.2 * e2.throughput(c, n))
        assert n2.cpu_cores(c, n) == pytest.approx(e2.cpu_cores(c, n))  # CPU in use unchanged
        server = [v - 0.03 for v in e2.latency(c, n)]
        assert n2.latency(c, n) == pytest.approx([0.03 + v / 1.2 for v in server])
    assert n2.alone_latency(2) == pytest.approx(0.03 + (e2.alone_latency(2) - 0.03) / 1.2)
    assert n2.to_dict()["points"] == e2.to_dict()["points"]  # writes its source's points
    # nearest by speed factor, then vCPUs; default threads follow the vCPUs
    e2_2 = profile_for("fam", "e2-standard-2")
    assert e2_2.scaled_from == "fam-e2-4" and e2_2.default_threads == 2
    assert e2_2.speedup == 1.0
    e2_8 = profile_for("fam", "e2-standard-8")  # 0.2 apart in speed beats 4 in vCPUs
    assert e2_8.scaled_from == "fam-n2-8" and e2_8.default_threads == 8
    assert e2_8.speedup == pytest.approx(1 / 1.2)
    # the n2-standard-8 member is nearer to n2-standard-16 (same speed, 8 vCPUs off)
    n2_16 = profile_for("fam", "n2-standard-16")
    assert n2_16.scaled_from == "fam-n2-8" and n2_16.default_threads == 16
    assert n2_16.speedup == 1.0
    # rescaling a rescaled profile multiplies the speedups
    twice = n2.rescaled(name="x", machine="n2-standard-4", speedup=1.5, threads=4)
    assert twice.throughput(1, 1) == pytest.approx(1.5 * 1.2 * e2.throughput(1, 1))


def test_a_profile_named_exactly_or_by_file(family: tuple[Profile, ...], tmp_path: Path) -> None:
    e2, _ = family
    assert profile_for("fam-e2-4", "e2-standard-4") is e2
    assert profile_for("fam-e2-4", "n2-standard-4").speedup == pytest.approx(1.2)
    # a host profile (no machine type) is used as is, with the machine's vCPUs as threads
    path = dump_profile(synthetic(name="mine", family="mine"), tmp_path / "mine.json")
    mine = profile_for(str(path), "n2-standard-8")
    assert mine.name == "mine" and mine.scaled_from is None and mine.speedup == 1.0
    assert mine.default_threads == 8 and mine.machine_type == "n2-standard-8"
    assert mine.throughput(2, 2) == pytest.approx(load_profile(path).throughput(2, 2))


def test_unknown_family_lists_the_known_ones(family: tuple[Profile, ...]) -> None:
    with pytest.raises(ValueError, match=r"unknown profile family 'nope'.*families: fam;"):
        profile_for("nope", "e2-standard-4")


def test_importing_sim_leaves_tensorflow_out() -> None:
    code = (
        "import sys, sim, sim.serving.profile, sim.serving.server, sim.serving.model, sim.engine, "
        "sim.serving.calibrate, sim.serving.calibrate.cli, sim.serving.calibrate.endpoint, "
        "sim.serving.calibrate.derive, sim.serving.calibrate.local; "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# --- the plateau fit --------------------------------------------------------------------------

_LADDER_N = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]


@given(st.lists(st.floats(0.5, 50.0), min_size=1, max_size=len(_LADDER_N)))
def test_plateau_fit_is_non_decreasing_and_keeps_the_total(xs: list[float]) -> None:
    """Pooling replaces steps by their mean, so no throughput is made up or lost, and the
    model's X never falls with more in flight."""
    fitted = plateau_fit(_LADDER_N[: len(xs)], xs)
    assert len(fitted) == len(xs)
    assert all(a <= b * (1 + 1e-12) for a, b in itertools.pairwise(fitted))
    assert math.isclose(sum(fitted), sum(xs), rel_tol=1e-9)


@given(st.lists(st.floats(0.5, 50.0), min_size=2, max_size=len(_LADDER_N)))
def test_plateau_fit_flattens_every_step_from_the_knee(xs: list[float]) -> None:
    n = _LADDER_N[: len(xs)]
    at = knee(list(zip(n, xs, strict=True)))
    fitted = plateau_fit(n, xs)
    if at is None:
        # still rising at the end: only falls are pooled, a rising ladder is kept as measured
        if all(a <= b for a, b in itertools.pairwise(xs)):
            assert fitted == xs
    else:
        tail = fitted[n.index(at) :]
        assert max(tail) - min(tail) <= 1e-9 * max(tail)
        assert max(tail) <= max(xs) * (1 + 1e-12)  # never above the best window


def test_plateau_fit_reads_the_plateau_as_the_mean_not_the_best_window() -> None:
    # this machine's 2-thread ladder in process (fidelity run of session 3): the knee is n = 4
    # (11.51 < 1.03 x 11.88); the best window, 11.88, is what a running maximum would keep
    xs = [9.64, 11.35, 11.88, 11.51, 11.03, 11.85, 11.87]
    fitted = plateau_fit([1, 2, 3, 4, 6, 8, 12], xs)
    assert fitted[:2] == xs[:2]
    assert fitted[2:] == pytest.approx([sum(xs[2:]) / 5] * 5)  # n = 3 pooled with the plateau
    assert fitted[-1] == pytest.approx(11.628)
