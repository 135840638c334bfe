"""Sweep building blocks without simulation: t intervals, Pareto front, axes, load scaling,
SLO parsing, sweep files, point validation, cache and the recommendation's files."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from sim.loader import build_scenario, load_scenario, scenario_json
from sim.scenario import OpenLoopLoad, Scenario
from sim.sweep.axes import (
    SweepError,
    parse_vary,
    read_sweep_file,
    scale_load,
)
from sim.sweep.cache import RunCache
from sim.sweep.pareto import pareto_front
from sim.sweep.plan import Point, check_axes, grid_points, load_base, short_names
from sim.sweep.recommend import hpa_manifest, recommended_scenario
from sim.sweep.results import rank_points, run_row, summarize
from sim.sweep.slo import derived, parse_slo
from sim.sweep.stats import mean_ci, t_quantile, t_within

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "scenarios" / "gsp777.yaml"
SPIKE = ROOT / "scenarios" / "spike.yaml"
TARGET = "hpa.metrics[0].resource.target.averageUtilization"


# --- Student t ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("df", "table"),  # two-sided 95% critical values from any t table
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (10, 2.228), (30, 2.042)],
)
def test_t_quantile_matches_the_t_table(df: int, table: float) -> None:
    assert t_quantile(0.95, df) == pytest.approx(table, abs=5e-4)


def test_t_quantiles_fall_towards_the_normal_one() -> None:
    values = [t_quantile(0.95, df) for df in range(1, 200)]
    assert all(a > b for a, b in itertools.pairwise(values))
    assert t_quantile(0.95, 5000) == pytest.approx(1.95996, abs=1e-3)


@given(st.integers(1, 60), st.floats(0.01, 50))
def test_t_within_is_a_probability_and_grows_with_t(df: int, t: float) -> None:
    low, high = t_within(t, df), t_within(t * 1.5, df)
    assert 0 <= low <= high + 1e-12 and high <= 1  # monotone up to rounding near 1


def test_mean_ci() -> None:
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2 and half == pytest.approx(t_quantile(0.95, 2) / math.sqrt(3))
    assert mean_ci([5.0]) == (5.0, None)
    assert mean_ci([4.0, 4.0, 4.0]) == (4.0, 0.0)


# --- Pareto -------------------------------------------------------------------------------


def _dominated(p: tuple[float, float], q: tuple[float, float]) -> bool:
    return q[0] <= p[0] and q[1] <= p[1] and q != p


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=25))
def test_pareto_front_is_exactly_the_undominated_points(pts: list[tuple[int, int]]) -> None:
    coords = [(float(a), float(b)) for a, b in pts]
    expected = [i for i, p in enumerate(coords) if not any(_dominated(p, q) for q in coords)]
    assert pareto_front(coords) == expected


# --- axes ---------------------------------------------------------------------------------


def test_ranges_include_both_ends_and_keep_integers() -> None:
    axis = parse_vary(f"{TARGET}=40:90:5", "s.yaml")
    assert axis.values == tuple(range(40, 95, 5)) and all(type(v) is int for v in axis.values)
    assert parse_vary("load.scale=0.5:1.5:0.25", "s").values == (0.5, 0.75, 1.0, 1.25, 1.5)
    assert parse_vary("x.y=0.1:0.3:0.1", "s").values == (0.1, 0.2, 0.3)


def test_lists_are_read_as_yaml_scalars() -> None:
    assert parse_vary("hpa.minReplicas=1,2,3", "s").values == (1, 2, 3)
    machines = parse_vary("cluster.node_pool.machine_type=e2-standard-4,n1-standard-4", "s")
    assert machines.values == ("e2-standard-4", "n1-standard-4")


def test_continuous_ranges_are_for_tune_only() -> None:
    axis = parse_vary(f"{TARGET}=20:95", "s")
    assert (axis.values, axis.low, axis.high, axis.integer) == (None, 20, 95, True)
    assert parse_vary("load.scale=0.5:2:log", "s").log
    with pytest.raises(SweepError, match="needs a step"):
        axis.grid()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("hpa.minReplicas", "dotted.path=values"),
        ("hpa.minReplicas=3:1:1", "low <= high"),
        ("hpa.minReplicas=1:3:0", "step must be > 0"),
        ("hpa.minReplicas=1,2,1", "appears twice"),
        ("hpa.minReplicas=1,,2", "empty value"),
        ("seed=1,2", "--seeds"),
        ("hpa..x=1", "malformed"),
        ("duration=10m:30m:10m", "not a range"),
        ("load.scale=0:2:log", "log range needs low > 0"),
    ],
)
def test_malformed_axes_name_the_option(text: str, words: str) -> None:
    with pytest.raises(SweepError, match=words) as caught:
        parse_vary(text, "lab.yaml")
    assert "lab.yaml (--vary" in str(caught.value)


# --- load.scale ---------------------------------------------------------------------------


def _validated(data: dict[str, Any]) -> Scenario:
    return build_scenario(data, "test", base_dir=ROOT / "scenarios")


@pytest.mark.parametrize(
    "rate",
    [
        {"kind": "constant", "rps": 3.0},
        {"kind": "spike", "base_rps": 1.0, "factor": 5, "start": 60, "duration": 60},
        {"kind": "sinusoid", "mean_rps": 4.0, "amplitude_rps": 2.0, "period": 600},
        {"kind": "piecewise", "points": [[0, 1.0], [100, 4.0], [200, 0.5]]},
    ],
)
@pytest.mark.parametrize("factor", [0.5, 1.0, 2.5])
def test_load_scale_multiplies_every_open_loop_rate(rate: dict[str, Any], factor: float) -> None:
    data = {"load": {"kind": "open_loop", "rate": rate}}
    before = json.dumps(data)
    scaled = _validated(scale_load(data, factor)).load
    plain = _validated(data).load
    assert json.dumps(data) == before  # pure: the input mapping is untouched
    assert isinstance(scaled, OpenLoopLoad) and isinstance(plain, OpenLoopLoad)
    for t in range(0, 700, 7):
        assert scaled.rate.rate(t) == pytest.approx(plain.rate.rate(t) * factor)


def test_load_scale_on_locust_shapes_rounds_to_whole_users() -> None:
    lab = yaml.safe_load(LAB.read_text())
    steps = _validated(scale_load(lab, 2.5)).load
    assert steps.kind == "locust" and steps.shape.kind == "steps"
    assert steps.shape.step_users == round(lab["load"]["shape"]["step_users"] * 2.5)
    # a scenario that leaves its load out gets the schema's default load, scaled
    default = _validated({}).load
    assert default.kind == "locust" and default.shape.kind == "steps"
    assert _validated(scale_load({}, 3)).load.shape.step_users == default.shape.step_users * 3
    stages = {"kind": "stages", "stages": [{"until": 60, "users": 3}, {"until": 120, "users": 7}]}
    shape = _validated(scale_load({"load": {"kind": "locust", "shape": stages}}, 2)).load.shape
    assert [s.users for s in shape.stages] == [6, 14]


def test_load_scale_refuses_what_it_cannot_mean() -> None:
    with pytest.raises(ValueError, match="> 0"):
        scale_load({}, 0)
    with pytest.raises(ValueError, match="step_users"):
        scale_load({}, 0.1)  # 2 users per step x 0.1 rounds to 0


# --- SLO ----------------------------------------------------------------------------------


def test_slo_forms() -> None:
    slo = parse_slo(["p95<=1.5s, error_rate<1%", "minutes_in_violation<=2", "p99<=2500ms"])
    assert [(o.metric, o.limit, o.strict) for o in slo.objectives] == [
        ("p95", 1.5, False),
        ("error_rate", 0.01, True),
        ("minutes_in_violation", 2.0, False),
        ("p99", 2.5, False),
    ]
    assert slo.primary.metric == "p95" and slo.p95_limit == 1.5
    assert slo.met(
        {"latency_p95": 1.5, "error_rate": 0.0, "minutes_in_violation": 2, "latency_p99": 2.0}
    )
    assert not slo.met(
        {"latency_p95": None, "error_rate": 0.0, "minutes_in_violation": 0, "latency_p99": 2.0}
    )
    assert parse_slo(["error_rate<=0.01"]).objectives[0].met(0.01)
    assert not parse_slo(["error_rate<0.01"]).objectives[0].met(0.01)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("p96<=1s", "unknown SLO metric"),
        ("p95>=1s", "METRIC<=LIMIT"),
        ("p95<=fast", "duration"),
        ("error_rate<=2", r"\[0, 1\]"),
        ("minutes_in_violation<=3", "give p95"),
        ("p95<=0s", "never be met"),
        ("p95<=1s,p95<=2s", "once"),
    ],
)
def test_bad_slo(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_slo([text])


def test_minutes_in_violation_counts_seconds_over_the_p95_limit() -> None:
    series = [0.5] * 100 + [2.0] * 90 + [None] * 10 + [1.0] * 30
    figures = derived({"requests_total": 200, "requests_failed": 5}, series, 1.0)
    assert figures == {"error_rate": 0.025, "minutes_in_violation": 1.5}


# --- sweep file, points -------------------------------------------------------------------


def test_the_example_sweep_file_gives_sixty_distinct_valid_points() -> None:
    spec = read_sweep_file(ROOT / "scenarios" / "sweeps" / "lab.yaml")
    points = grid_points(load_base(LAB, spec.overrides), spec.axes)
    assert len(points) == 60 and len({p.sha for p in points}) == 60
    assert spec.seeds and spec.slo
    for point in points[:5]:
        for path, value in point.values:
            data = json.loads(scenario_json(point.scenario))
            assert _walk(data, path) == value


def _walk(data: Any, path: str) -> Any:
    from sim.loader import parse_path

    for part in parse_path(path):
        data = data[part]
    return data


def test_sweep_file_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text("vary: {hpa.minReplicas: [1, 2]}\nseed: 3\n")
    with pytest.raises(SweepError, match="unknown key; allowed: vary, seeds") as caught:
        read_sweep_file(bad)
    assert str(bad) in str(caught.value)
    bad.write_text("vary: {hpa.minReplicas: '1:3'}\nseeds: 0\n")
    with pytest.raises(SweepError, match="integer >= 1"):
        read_sweep_file(bad)


def test_a_misspelt_path_is_one_clear_error_before_anything_runs() -> None:
    base = load_base(LAB)
    with pytest.raises(SweepError) as caught:
        check_axes(base, [parse_vary("hpa.minReplica=1,2", str(LAB))])
    text = str(caught.value)
    assert "gsp777.yaml" in text and "hpa.minReplica" in text
    assert "did you mean 'minReplicas'" in text and text.count("did you mean") == 1


def test_bad_values_and_combinations_are_listed() -> None:
    base = load_base(LAB)
    with pytest.raises(SweepError, match="unknown machine type 'n9-huge'"):
        grid_points(base, [parse_vary("cluster.node_pool.machine_type=n9-huge", "x")])
    axes = [parse_vary("hpa.minReplicas=1,2,3", "x"), parse_vary("hpa.maxReplicas=2,4", "x")]
    with pytest.raises(SweepError, match="minReplicas=3 maxReplicas=2") as caught:
        grid_points(base, axes)
    assert "--skip-invalid" in str(caught.value)
    points = grid_points(base, axes, skip_invalid=True)
    assert len(points) == 5 and all(
        p.scenario.hpa and p.scenario.hpa.maxReplicas >= (p.scenario.hpa.minReplicas or 1)
        for p in points
    )


def test_overlapping_or_repeated_axes_are_refused() -> None:
    base = load_base(LAB, [("hpa.maxReplicas", 6)])
    for axes in (
        ["hpa.minReplicas=1,2", "hpa.minReplicas=3"],
        ["hpa.behavior.scaleDown.stabilizationWindowSeconds=60", "hpa.behavior={}"],
        ["hpa.maxReplicas=4,5"],
    ):
        with pytest.raises(SweepError, match=r"overlaps|also given with --set"):
            check_axes(base, [parse_vary(a, "x") for a in axes])


def test_short_names_are_unique_suffixes() -> None:
    paths = [
        "hpa.behavior.scaleUp.stabilizationWindowSeconds",
        "hpa.behavior.scaleDown.stabilizationWindowSeconds",
        TARGET,
    ]
    assert short_names(paths) == {
        paths[0]: "scaleUp.stabilizationWindowSeconds",
        paths[1]: "scaleDown.stabilizationWindowSeconds",
        TARGET: "averageUtilization",
    }


# --- cache --------------------------------------------------------------------------------


def test_cache_misses_on_other_code_or_a_torn_file(tmp_path: Path) -> None:
    record = {"summary": {"cost_usd": 0.25}, "p95": [0.5, None]}
    cache = RunCache(tmp_path, fingerprint="aaaa")
    assert cache.get("sha", 1) is None
    cache.put("sha", 1, record)
    assert cache.get("sha", 1) == record and cache.get("sha", 2) is None and len(cache) == 1
    assert RunCache(tmp_path, fingerprint="bbbb").get("sha", 1) is None
    (tmp_path / "sha-s1.json").write_text('{"engine": "aaaa", "sha": "sha", "se')
    assert cache.get("sha", 1) is None
    assert not list(tmp_path.glob(".run.*"))  # no temp files left behind


def test_the_cache_fingerprint_covers_all_the_code_simulate_imports() -> None:
    import subprocess
    import sys

    from sim.sweep.cache import engine_files

    code = "import sys, sim.engine; print('\\n'.join(m.__file__ for n, m in sys.modules.items()"
    code += " if (n == 'sim' or n.startswith('sim.')) and getattr(m, '__file__', None)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {Path(line).resolve() for line in done.stdout.split()}
    covered = {p.resolve() for p in engine_files()}
    assert loaded and loaded <= covered
    assert any(p.name == "machines.yaml" for p in covered)  # data the engine reads


# --- ranking and the recommendation's files ---------------------------------------------------


def _fake_point(index: int, cost: float, p95: float, base: Scenario) -> tuple[Point, list]:
    point = Point(index, (("hpa.minReplicas", index + 1),), base, f"sha{index}")
    rows = []
    for seed in (1, 2):
        summary = {
            "cost_usd": cost,
            "latency_p95": p95 + seed / 100,
            "requests_total": 10,
            "requests_failed": 0,
        }
        rows.append(run_row(point, seed, {"summary": summary, "p95": [p95]}, SLO))
    return point, rows


SLO = parse_slo(["p95<=2s"])


def test_ranking_puts_the_cheapest_feasible_point_first() -> None:
    base = load_scenario(LAB)
    made = [
        _fake_point(0, 1.0, 1.0, base),
        _fake_point(1, 0.5, 3.0, base),
        _fake_point(2, 0.8, 1.9, base),
        _fake_point(3, 0.9, 1.0, base),
    ]
    ranked = rank_points([summarize(p, rows, SLO) for p, rows in made], SLO)
    assert [r.point.index for r in ranked] == [2, 3, 0, 1]
    assert [r.feasible for r in ranked] == [True, True, True, False]
    assert {r.point.index for r in ranked if r.pareto} == {1, 2, 3}
    assert ranked[0].worst("latency_p95") == pytest.approx(1.92)


def test_recommended_files_read_back(tmp_path: Path) -> None:
    from sim.sweep.recommend import write_recommendation

    base = load_base(LAB)
    (point,) = grid_points(base, [parse_vary(f"{TARGET}=45", "x")])
    result = summarize(point, [], SLO)
    scenario = recommended_scenario(result, SLO)
    assert scenario.slo is not None and scenario.slo.p95 == 2.0
    assert write_recommendation(scenario, tmp_path / "r.yaml", tmp_path / "hpa.yaml")
    manifest = yaml.safe_load((tmp_path / "hpa.yaml").read_text())
    assert manifest["apiVersion"] == "autoscaling/v2"
    assert manifest["spec"]["scaleTargetRef"]["name"] == scenario.deployment.name
    # the manifest is a real HPA: a scenario can take it back as its hpa
    (tmp_path / "use.yaml").write_text(f"hpa: {{manifest: {tmp_path / 'hpa.yaml'}}}\n")
    taken = load_scenario(tmp_path / "use.yaml").hpa
    assert taken is not None and scenario.hpa is not None
    assert taken.scaleTargetRef is not None and taken.scaleTargetRef.kind == "Deployment"
    assert taken.model_dump(exclude={"scaleTargetRef"}) == scenario.hpa.model_dump(
        exclude={"scaleTargetRef"}
    )
    assert hpa_manifest(load_scenario(tmp_path / "r.yaml")) == manifest


def test_skip_invalid_judges_combinations_not_each_value_against_the_base() -> None:
    """minReplicas=5 is invalid beside the lab's maxReplicas=4, valid with maxReplicas=6."""
    base = load_base(LAB)
    axes = [parse_vary("hpa.minReplicas=1,3,5", "x"), parse_vary("hpa.maxReplicas=4,6", "x")]
    points = grid_points(base, axes, skip_invalid=True)
    pairs = {(p.scenario.hpa.minReplicas, p.scenario.hpa.maxReplicas) for p in points}  # type: ignore[union-attr]
    assert pairs == {(1, 4), (3, 4), (1, 6), (3, 6), (5, 6)}
    with pytest.raises(SweepError, match="minReplicas=5 maxReplicas=4"):
        grid_points(base, axes)  # without --skip-invalid the bad combination is listed
    with pytest.raises(SweepError, match=r"maxReplicas \(4\) must be .* minReplicas \(7\)"):
        grid_points(base, [parse_vary("hpa.minReplicas=7,8", "x")], skip_invalid=True)


# --- load axes are conditions; the recommendation file; intervals straddling the SLO ----------


def _at(values: tuple, index: int, cost: float, p95s: tuple[float, float], base: Any) -> Any:
    point = Point(index, values, base.scenario, f"sha{index}")
    rows = [
        run_row(
            point,
            seed,
            {"summary": {"cost_usd": cost, "latency_p95": p95, "requests_total": 10,
                         "requests_failed": 0}, "p95": [p95]},
            SLO,
        )
        for seed, p95 in zip((1, 2), p95s, strict=True)
    ]  # fmt: skip
    return summarize(point, rows, SLO)


def test_load_axes_are_conditions_the_setting_must_hold_under_all() -> None:
    from sim.sweep.recommend import choose_setting

    base = load_base(LAB)
    low, high = ("load.scale", 0.5), ("load.scale", 1)
    one, two = ("hpa.minReplicas", 1), ("hpa.minReplicas", 2)
    results = [
        _at((low, one), 0, 0.10, (1.0, 1.1), base),  # cheapest, but only at half the traffic
        _at((high, one), 1, 0.20, (2.5, 2.6), base),
        _at((low, two), 2, 0.30, (0.8, 0.9), base),
        _at((high, two), 3, 0.40, (1.5, 1.9), base),
    ]
    ranked = rank_points(results, SLO)
    assert ranked[0].point.values == (low, one)  # what the old rule "recommended"
    chosen, levels = choose_setting(ranked, base, SLO)
    assert chosen is not None and chosen.point.values == (two,)
    assert levels == [(low,), (high,)]
    assert chosen.mean("cost_usd") == pytest.approx(0.35)  # over both load levels
    assert chosen.worst("latency_p95") == pytest.approx(1.9) and len(chosen.rows) == 4
    assert chosen.point.scenario.hpa is not None and chosen.point.scenario.hpa.minReplicas == 2
    missing = [r for r in ranked if r.point.values != (high, two)]  # two lacks a load level
    assert choose_setting(missing, base, SLO)[0] is None


def test_a_95_interval_straddling_the_limit_is_named() -> None:
    from sim.sweep.recommend import straddling

    base = load_base(LAB)
    wide = _at((("hpa.minReplicas", 1),), 0, 0.1, (1.5, 2.4), base)  # mean 1.95, limit inside
    assert straddling(wide, SLO) and straddling(wide, SLO)[0].startswith("p95 1.95 ±")
    narrow = _at((("hpa.minReplicas", 1),), 0, 0.1, (1.0, 1.1), base)
    assert straddling(narrow, SLO) == []


def test_recommended_yaml_is_the_base_with_only_the_changed_fields(tmp_path: Path) -> None:
    from sim.sweep.recommend import recommended_data, write_recommendation

    (tmp_path / "scn").mkdir()
    (tmp_path / "scn" / "rates.csv").write_text("t,rps\n0,0.5\n60,1\n")
    source = tmp_path / "scn" / "s.yaml"
    source.write_text(
        "name: s\nduration: 5m\nhpa: {minReplicas: 1, maxReplicas: 4}\n"
        "load: {kind: open_loop, rate: {kind: replay, file: rates.csv}}\n"
    )
    base = load_base(source)
    out = tmp_path / "out" / "sweep"
    out.mkdir(parents=True)
    data, scenario = recommended_data(base, (("hpa.maxReplicas", 6),), SLO, out)
    assert data["hpa"] == {"minReplicas": 1, "maxReplicas": 6}
    assert set(data) == {"name", "duration", "hpa", "load", "description", "slo"}  # no defaults
    assert data["load"]["rate"]["file"] == "../../scn/rates.csv"  # still found from out/
    header = "Recommended by scalelab sweep over s.yaml\nChanged: hpa.maxReplicas=6"
    write_recommendation(scenario, out / "recommended.yaml", out / "hpa.yaml", data, header)
    text = (out / "recommended.yaml").read_text()
    assert text.startswith("# Recommended by scalelab sweep over s.yaml\n# Changed:")
    reread = load_scenario(out / "recommended.yaml")
    assert reread.hpa is not None and reread.hpa.maxReplicas == 6
    assert reread.load.rate.rate(61) == 1.0  # type: ignore[union-attr]


def test_the_pareto_list_merges_ties(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sim.cli import app

    args = ["sweep", str(LAB), "--set", "duration=2m", "--vary", "hpa.maxReplicas=4,5"]
    args += ["--seeds", "1", "-j", "1", "--slo", "p95<=100s", "--out", str(tmp_path / "s")]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    front = next(x for x in done.output.splitlines() if x.startswith("Pareto front"))
    # in 2 minutes the lab never asks for a 4th replica: equal cost and p95, one entry
    assert front.endswith("maxReplicas=4 = maxReplicas=5")
