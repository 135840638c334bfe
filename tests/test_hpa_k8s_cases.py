"""Upstream Kubernetes HPA test facts (JSON case files) run against sim.hpa.

Files: ``$SCALELAB_HPA_CASES`` (paths joined by ``:``), else every
``../shared/hpa/k8s_cases*.json``. One pytest case per JSON case, id = its ``source``. Each
``kind`` (and for ``behavior`` each ``stage``) calls exactly the function the upstream test
calls, and the case's ``function_under_test`` must name it. An unknown kind/stage fails, and
so does any field, at any depth, that the run did not read: a wrong ``message`` inside
``expected_conditions`` or a misspelt input cannot pass by being ignored. Only the descriptive
fields (:data:`DESCRIPTIVE`, ``*_note``) need no reader; an input the upstream function does not
take must be null.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.hpa import ControllerConfig, HorizontalPodAutoscalerSpec, HPAMemory, reconcile
from sim.hpa.normalize import (
    calculate_scale_down_limit_with_behaviors,
    calculate_scale_up_limit_with_scaling_rules,
    convert_desired_replicas_with_behavior_rate,
    convert_desired_replicas_with_rules,
    get_replicas_change_per_period,
    stabilize_recommendation,
    stabilize_recommendation_with_behaviors,
    store_scale_event,
)
from sim.hpa.replica_calculator import MetricError, get_resource_replicas, group_pods
from sim.hpa.spec import HorizontalPodAutoscalerBehavior
from sim.hpa.types import (
    DEFAULT_SCALE_DOWN_RULES,
    DEFAULT_SCALE_UP_RULES,
    REASON_TYPE,
    Behavior,
    MetricsSnapshot,
    PodInfo,
    PodMetric,
    PolicyType,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
    TimestampedRecommendation,
    Tolerances,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "hpa"
#: The evaluation instant; case times are offsets from it (-1e11 stands for Go's zero time).
NOW = 1_000_000.0


Key = str | int
#: Fields that describe a case for people and steer nothing: they need not be read.
DESCRIPTIVE = frozenset(
    {
        "source",
        "test_name",
        "table_case_name",
        "time_semantics",
        "field_semantics",
        "upstream_comment",
        "note",
        "notes",
        "skipped_reason",
    }
)


def _descriptive(key: Key) -> bool:
    return isinstance(key, str) and (key in DESCRIPTIVE or key.endswith(("_note", "_notes")))


class _Reads:
    """Which paths of one case were read: one by one (``paths``), or as a whole (``whole``)."""

    def __init__(self) -> None:
        self.paths: set[tuple[Key, ...]] = set()
        self.whole: set[tuple[Key, ...]] = set()


def _wrap(value: Any, path: tuple[Key, ...], reads: _Reads) -> Any:
    if isinstance(value, dict):
        return CaseDict(value, path, reads)
    if isinstance(value, list):
        return CaseList(value, path, reads)
    return value


class CaseDict:
    """A JSON object of a case that records which of its fields were read, at any depth."""

    def __init__(self, data: dict[str, Any], path: tuple[Key, ...], reads: _Reads) -> None:
        self.data = data
        self.path = path
        self.reads = reads

    def __getitem__(self, key: str) -> Any:
        self.reads.paths.add((*self.path, key))
        return _wrap(self.data[key], (*self.path, key), self.reads)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self.data else default

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def keys(self) -> list[str]:
        return list(self.data)

    def items(self) -> list[tuple[str, Any]]:
        return [(key, self[key]) for key in self.data]


class CaseList:
    """A JSON array of a case; iterating or comparing it reads its items."""

    def __init__(self, data: list[Any], path: tuple[Key, ...], reads: _Reads) -> None:
        self.data = data
        self.path = path
        self.reads = reads

    def __getitem__(self, index: int) -> Any:
        self.reads.paths.add((*self.path, index))
        return _wrap(self.data[index], (*self.path, index), self.reads)

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(len(self.data)))

    def __len__(self) -> int:
        return len(self.data)

    def __eq__(self, other: object) -> bool:
        self.reads.whole.add(self.path)
        return self.data == other

    __hash__ = None  # type: ignore[assignment]


class Case(CaseDict):
    """One JSON case; :meth:`unread` lists every field, at any depth, that nothing read."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data, (), _Reads())

    def unread(self) -> list[str]:
        out: list[str] = []

        def walk(value: Any, path: tuple[Key, ...]) -> None:
            if any(path[:i] in self.reads.whole for i in range(len(path) + 1)):
                return
            if isinstance(value, dict) and value:
                for key, item in value.items():
                    if not _descriptive(key):
                        walk(item, (*path, key))
            elif isinstance(value, list) and value:
                for index, item in enumerate(value):
                    walk(item, (*path, index))
            elif path not in self.reads.paths:
                out.append("".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)[1:])

        walk(self.data, ())
        return out


def _unset(case: CaseDict, *keys: str) -> None:
    """Fields the upstream function under test does not take: a case may carry them only as
    null (or empty), since a value there would be a fact this runner cannot check."""
    for key in keys:
        if key in case:
            value = case[key]
            raw = value.data if isinstance(value, CaseList | CaseDict) else value
            assert raw is None or raw in ([], {}), (
                f"{key}={raw!r} is not an input of the function under test"
            )


def _case_files(shared: Path = SHARED) -> list[Path]:
    env = os.environ.get("SCALELAB_HPA_CASES")
    if env:
        return [Path(p) for p in env.split(":") if p]
    return sorted(shared.glob("k8s_cases*.json")) or [shared / "k8s_cases*.json"]


def _load() -> list[Any]:
    params: list[Any] = []
    seen: dict[str, int] = {}
    for path in _case_files():
        if not path.is_file():
            params.append(pytest.param(None, str(path), id=f"missing-case-file:{path.name}"))
            continue
        raw = json.loads(path.read_text())
        cases = raw["cases"] if isinstance(raw, dict) else raw
        for case in cases:
            source = str(case.get("source", "<no source>"))
            seen[source] = seen.get(source, 0) + 1
            case_id = source if seen[source] == 1 else f"{source}#{seen[source]}"
            params.append(pytest.param(case, str(path), id=case_id))
    return params


# ----------------------------------------------------------------------------- builders
def _t(offset: float | None) -> float | None:
    return None if offset is None else NOW + offset


def _pod(p: dict[str, Any], container: str | None = None) -> PodInfo:
    request = p.get("cpu_request_milli")
    requests = {} if request is None else {"cpu": request}
    ready = p["ready_condition"] if "ready_condition" in p else p.get("ready", True)
    return PodInfo(
        name=p["name"],
        phase=p.get("phase", "Running"),
        deleted=p.get("deleted", False),
        ready=ready,
        start_time=_t(p.get("start_offset_s")),
        ready_transition_time=_t(p.get("ready_transition_offset_s")),
        requests={} if container else requests,
        container_requests={container: requests} if container else {},
    )


def _cpu_metrics(case: Case) -> dict[str, PodMetric]:
    ts = NOW + case["metric_timestamp_offset_s"]
    window = float(case["metric_window_s"])
    metrics = {
        p["name"]: PodMetric(p["cpu_usage_milli"], ts, window)
        for p in case["pods"]
        if p.get("cpu_usage_milli") is not None
    }
    for extra in case.get("extra_pod_metrics") or []:
        metrics[extra["name"]] = PodMetric(extra["cpu_usage_milli"], ts, window)
    return metrics


def _rules(d: dict[str, Any] | None, default: ScalingRules) -> ScalingRules:
    """Rules as the case states them; unset fields keep the direction's API defaults."""
    if d is None:
        return default
    policies = d.get("policies")
    return ScalingRules(
        stabilization_window_seconds=d.get("stabilization_window_s"),
        select_policy=SelectPolicy(d["select_policy"])
        if d.get("select_policy")
        else default.select_policy,
        policies=default.policies
        if policies is None
        else tuple(
            ScalingPolicy(PolicyType(p["type"]), p["value"], p["period_s"]) for p in policies
        ),
        tolerance=d.get("tolerance"),
    )


def _behavior(d: dict[str, Any] | None) -> Behavior | None:
    if d is None:
        return None
    return Behavior(
        scale_up=_rules(d.get("scale_up"), DEFAULT_SCALE_UP_RULES),
        scale_down=_rules(d.get("scale_down"), DEFAULT_SCALE_DOWN_RULES),
    )


def _api_rules(d: dict[str, Any] | None) -> dict[str, Any] | None:
    """snake_case case rules -> the API's camelCase HPAScalingRules (nil fields left out)."""
    if d is None:
        return None
    out: dict[str, Any] = {}
    if d.get("stabilization_window_s") is not None:
        out["stabilizationWindowSeconds"] = d["stabilization_window_s"]
    if d.get("select_policy") is not None:
        out["selectPolicy"] = d["select_policy"]
    if d.get("policies") is not None:
        out["policies"] = [
            {"type": p["type"], "value": p["value"], "periodSeconds": p["period_s"]}
            for p in d["policies"]
        ]
    if d.get("tolerance") is not None:
        out["tolerance"] = d["tolerance"]
    return out


def _api_behavior(d: dict[str, Any] | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"scaleUp": _api_rules(d.get("scale_up")), "scaleDown": _api_rules(d.get("scale_down"))}


def _check_defaulting(case: Case) -> None:
    """behavior_as_written_in_test, defaulted by sim.hpa.spec, must equal ``behavior``."""
    if "behavior_as_written_in_test" not in case:
        return
    written = case["behavior_as_written_in_test"]
    expected = _behavior(case["behavior"])
    if written is None:
        assert expected is None
        return
    defaulted = HorizontalPodAutoscalerBehavior.model_validate(_api_behavior(written)).to_core()
    assert defaulted == expected, "API defaulting of the test's raw behavior differs"


def _events(items: list[dict[str, Any]]) -> list[ScaleEvent]:
    return [
        ScaleEvent(e["replica_change"], NOW + e["offset_s"], e.get("outdated", False))
        for e in items
    ]


def _memory(case: Case, key: str = "recommendations") -> HPAMemory:
    recs = case.get(key)
    return HPAMemory(
        recommendations=None
        if recs is None
        else [TimestampedRecommendation(r["replicas"], NOW + r["offset_s"]) for r in recs],
        scale_up_events=_events(case.get("scale_up_events") or []),
        scale_down_events=_events(case.get("scale_down_events") or []),
    )


def _check_reason(case: Case, reason: str) -> None:
    if case.get("expected_condition_reason") is not None:
        assert reason == case["expected_condition_reason"]
    if case.get("expected_condition_type") is not None:
        assert REASON_TYPE[reason] == case["expected_condition_type"]  # type: ignore[index]


def _check_history(case: Case, memory: HPAMemory) -> None:
    history = memory.recommendations or []
    if case.get("expected_recommendations_after") is not None:
        assert [r.recommendation for r in history] == case["expected_recommendations_after"]
    if case.get("expected_recommendations_count_after") is not None:
        assert len(history) == case["expected_recommendations_count_after"]


# ----------------------------------------------------------------------------- kinds
def run_replica_calc(case: Case) -> None:
    """GetResourceReplicas on one Utilization target."""
    container = case.get("container")
    pods = [_pod(p, container) for p in case["pods"]]
    tol = case.get("tolerance")
    down = case.get("tolerance_scale_down")
    up = case.get("tolerance_scale_up")
    tolerances = Tolerances(
        scale_down=tol if down is None else down, scale_up=tol if up is None else up
    )

    def call() -> Any:
        return get_resource_replicas(
            case["current_replicas"],
            case["target_utilization"],
            "cpu",
            pods,
            _cpu_metrics(case),
            now=NOW,
            tolerances=tolerances,
            cpu_initialization_period=float(case["cpu_initialization_period_s"]),
            initial_readiness_delay=float(case["initial_readiness_delay_s"]),
            container=container,
        )

    if case["expect_error"]:
        with pytest.raises(MetricError) as info:
            call()
        if case.get("expected_error_substring"):
            assert case["expected_error_substring"] in str(info.value)
        _unset(case, "expected_replicas", "expected_utilization", "expected_raw_average_milli")
        return
    _unset(case, "expected_error_substring")
    result = call()
    assert result.replicas == case["expected_replicas"]
    if case.get("expected_utilization") is not None:
        assert result.utilization == case["expected_utilization"]
    if case.get("expected_raw_average_milli") is not None:
        assert result.raw_average == case["expected_raw_average_milli"]


def stage_rate_limit_only(case: Case) -> None:
    """convertDesiredReplicasWithBehaviorRate on the post-defaulting rules."""
    _check_defaulting(case)
    behavior = _behavior(case["behavior"])
    assert behavior is not None
    memory = _memory(case)
    limited = convert_desired_replicas_with_behavior_rate(
        case["current_replicas"],
        case["prenormalized_desired_replicas"],
        case.get("min_replicas") if case.get("min_replicas") is not None else 1,
        case["max_replicas"],
        behavior,
        memory.scale_up_events,
        memory.scale_down_events,
        NOW,
    )
    assert limited.replicas == case["expected_replicas"]
    _check_reason(case, limited.reason)


def stage_stabilize_only(case: Case) -> None:
    """stabilizeRecommendationWithBehaviors; unset windows are as the case states them."""
    behavior = case["behavior"] or {}
    up = (behavior.get("scale_up") or {}).get("stabilization_window_s")
    down = (behavior.get("scale_down") or {}).get("stabilization_window_s")
    for direction in ("scale_up", "scale_down"):
        if behavior.get(direction) is not None:
            _unset(behavior[direction], "select_policy", "policies")
    _unset(case, "min_replicas", "max_replicas")
    up_window = DEFAULT_SCALE_UP_RULES.stabilization_window_seconds if up is None else up
    down_window = ControllerConfig().downscale_stabilization_window if down is None else down
    memory = _memory(case)
    stab = stabilize_recommendation_with_behaviors(
        memory,
        case["current_replicas"],
        case["prenormalized_desired_replicas"],
        NOW,
        float(up_window or 0),
        float(down_window),
    )
    assert stab.replicas == case["expected_replicas"]
    _check_reason(case, stab.reason)
    _check_history(case, memory)


def stage_legacy_stabilize_only(case: Case) -> None:
    """Legacy stabilizeRecommendation (behavior == nil)."""
    window = case.get("downscale_stabilization_window_s")
    memory = _memory(case)
    _unset(case, "behavior", "current_replicas", "min_replicas", "max_replicas")
    stab = stabilize_recommendation(
        memory,
        case["prenormalized_desired_replicas"],
        NOW,
        ControllerConfig().downscale_stabilization_window if window is None else float(window),
    )
    assert stab.replicas == case["expected_replicas"]
    _check_reason(case, stab.reason)
    _check_history(case, memory)


def stage_legacy_clamp_only(case: Case) -> None:
    """convertDesiredReplicasWithRules with the case's scale-up factor and minimum."""
    defaults = ControllerConfig()
    _unset(case, "behavior", "recommendations", "scale_up_events", "scale_down_events")
    limited = convert_desired_replicas_with_rules(
        case["current_replicas"],
        case["prenormalized_desired_replicas"],
        case.get("min_replicas") if case.get("min_replicas") is not None else 1,
        case["max_replicas"],
        scale_up_limit_factor=case.get("scale_up_limit_factor", defaults.scale_up_limit_factor),
        scale_up_limit_minimum=case.get("scale_up_limit_minimum", defaults.scale_up_limit_minimum),
    )
    assert limited.replicas == case["expected_replicas"]
    _check_reason(case, limited.reason)


def _limit_stage(case: Case, up: bool) -> None:
    behavior = _behavior(case["behavior"])
    assert behavior is not None
    memory = _memory(case)
    fn = (
        calculate_scale_up_limit_with_scaling_rules
        if up
        else calculate_scale_down_limit_with_behaviors
    )
    limit = fn(
        case["current_replicas"],
        memory.scale_up_events,
        memory.scale_down_events,
        behavior.scale_up if up else behavior.scale_down,
        NOW,
    )
    assert limit == case["expected_replicas"]
    assert case.get("expected_condition_reason") is None, "limit functions return no reason"
    _unset(
        case, "prenormalized_desired_replicas", "min_replicas", "max_replicas", "recommendations"
    )


def stage_scale_up_limit_only(case: Case) -> None:
    """calculateScaleUpLimitWithScalingRules (a replica-count bound)."""
    _limit_stage(case, up=True)


def stage_scale_down_limit_only(case: Case) -> None:
    """calculateScaleDownLimitWithBehaviors (a replica-count bound)."""
    _limit_stage(case, up=False)


BEHAVIOR_STAGES: dict[str, Callable[[Case], None]] = {
    "rate_limit_only": stage_rate_limit_only,
    "stabilize_only": stage_stabilize_only,
    "legacy_stabilize_only": stage_legacy_stabilize_only,
    "legacy_clamp_only": stage_legacy_clamp_only,
    "scale_up_limit_only": stage_scale_up_limit_only,
    "scale_down_limit_only": stage_scale_down_limit_only,
}


def _stage(case: Case) -> Callable[[Case], None]:
    stage = case.get("stage")
    if stage not in BEHAVIOR_STAGES:
        pytest.fail(f"unknown behavior stage {stage!r}; known: {sorted(BEHAVIOR_STAGES)}")
    return BEHAVIOR_STAGES[stage]


def run_end_to_end(case: Case) -> None:
    """One reconcile of a single cpu Utilization metric, through the pydantic spec."""
    _check_defaulting(case)
    defaults = ControllerConfig()
    config = ControllerConfig(
        tolerance=case.get("tolerance", defaults.tolerance),
        cpu_initialization_period=float(
            case.get("cpu_initialization_period_s", defaults.cpu_initialization_period)
        ),
        initial_readiness_delay=float(
            case.get("initial_readiness_delay_s", defaults.initial_readiness_delay)
        ),
        downscale_stabilization_window=float(
            case.get("downscale_stabilization_window_s", defaults.downscale_stabilization_window)
        ),
        scale_up_limit_factor=case.get("scale_up_limit_factor", defaults.scale_up_limit_factor),
        scale_up_limit_minimum=case.get("scale_up_limit_minimum", defaults.scale_up_limit_minimum),
    )
    target = case.get("target_utilization")
    api_spec: dict[str, Any] = {"maxReplicas": case["max_replicas"]}
    if case.get("min_replicas") is not None:
        api_spec["minReplicas"] = case["min_replicas"]
    if target:
        api_spec["metrics"] = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": target},
                },
            }
        ]
    if case.get("behavior") is not None:
        api_spec["behavior"] = _api_behavior(case["behavior"])
    spec = HorizontalPodAutoscalerSpec.model_validate(api_spec).to_core()
    assert spec.behavior == _behavior(case["behavior"])
    if not target:
        # Upstream's test builds no metric at all for a zero target (no API defaulting there).
        spec = type(spec)(spec.max_replicas, spec.min_replicas, (), spec.behavior)

    current = case.get("spec_replicas", case.get("current_replicas"))
    result = reconcile(
        spec,
        current_replicas=current,
        status_replicas=case.get("status_replicas", current),
        pods=[_pod(p) for p in case["pods"]],
        metrics=MetricsSnapshot(resource={"cpu": _cpu_metrics(case)}),
        now=NOW,
        memory=_memory(case, "initial_recommendations"),
        config=config,
    )
    assert result.desired_replicas == case["expected_replicas"]
    if case.get("expected_conditions") is not None:
        got = {str(c.type): c for c in result.conditions}
        want = {c["type"]: c for c in case["expected_conditions"]}
        assert sorted(got) == sorted(want), "condition types"
        for kind, expected in want.items():
            assert (got[kind].status, str(got[kind].reason)) == (
                expected["status"],
                expected["reason"],
            ), kind
            if expected.get("message") is not None:
                assert got[kind].message == expected["message"], f"{kind} message"
    if case.get("expected_cpu_utilization") is not None:
        assert result.utilization("cpu") == case["expected_cpu_utilization"]


def run_group_pods(case: Case) -> None:
    """groupPods on the listed pods and per-pod metrics."""
    metrics = {
        name: PodMetric(m["value"], NOW + m["timestamp_offset_s"], float(m["window_s"]))
        for name, m in case["metrics"].items()
    }
    grouped = group_pods(
        [_pod(p) for p in case["pods"]],
        metrics,
        case["resource"],
        float(case["cpu_initialization_period_s"]),
        float(case["initial_readiness_delay_s"]),
        NOW,
    )
    assert grouped.ready_pod_count == case["expected_ready_pod_count"]
    assert grouped.unready == set(case["expected_unready_pods"])
    assert grouped.missing == set(case["expected_missing_pods"])
    assert grouped.ignored == set(case["expected_ignored_pods"])


def run_store_scale_event(case: Case) -> None:
    """getReplicasChangePerPeriod before, then storeScaleEvent in both directions."""
    prev = _events(case["prev_scale_events"])
    for key in case.data:
        match = re.fullmatch(r"expected_replicas_change_last_(\d+)s", key)
        if match:
            assert get_replicas_change_per_period(int(match.group(1)), prev, NOW) == case[key]
    rules = (
        None
        if case["scaling_rules"] is None
        else _rules(case["scaling_rules"], DEFAULT_SCALE_UP_RULES)
    )
    change = case["replica_change"]
    expected = [(e["replica_change"], e["outdated"]) for e in case["expected_events_after"]]
    for up in (True, False):
        behavior = None
        if rules is not None:
            behavior = Behavior(scale_up=rules) if up else Behavior(scale_down=rules)
        memory = HPAMemory(
            scale_up_events=list(prev) if up else [], scale_down_events=[] if up else list(prev)
        )
        store_scale_event(behavior, memory, 10, 10 + change if up else 10 - change, NOW)
        events = memory.scale_up_events if up else memory.scale_down_events
        assert [(e.replica_change, e.outdated) for e in events] == expected, "up" if up else "down"
        other = memory.scale_down_events if up else memory.scale_up_events
        assert other == [], "an event must only go to its own direction's list"


#: The upstream function each runner calls, as the case's ``function_under_test`` names it.
FUNCTIONS: dict[Callable[[Case], None], tuple[str, ...]] = {
    run_replica_calc: ("GetResourceReplicas",),
    stage_rate_limit_only: ("convertDesiredReplicasWithBehaviorRate",),
    stage_stabilize_only: ("stabilizeRecommendationWithBehaviors",),
    stage_legacy_stabilize_only: ("stabilizeRecommendation",),
    stage_legacy_clamp_only: ("convertDesiredReplicasWithRules",),
    stage_scale_up_limit_only: ("calculateScaleUpLimitWithScalingRules",),
    stage_scale_down_limit_only: ("calculateScaleDownLimitWithBehaviors",),
    run_end_to_end: ("reconcileAutoscaler",),
    run_group_pods: ("groupPods",),
    run_store_scale_event: ("getReplicasChangePerPeriod", "storeScaleEvent"),
}

KINDS: dict[str, Callable[[Case], None]] = {
    "replica_calc": run_replica_calc,
    "behavior": lambda case: _stage(case)(case),
    "end_to_end": run_end_to_end,
    "group_pods": run_group_pods,
    "store_scale_event": run_store_scale_event,
}


def run_case(data: dict[str, Any], path: str = "<case>") -> None:
    """Run one case; fail on an unknown kind or stage, a ``function_under_test`` that is not the
    function run, or any field, at any depth, that the run did not read."""
    case = Case(data)
    kind = case.get("kind")
    if kind not in KINDS:
        pytest.fail(f"unknown case kind {kind!r} in {path}; known: {sorted(KINDS)}")
    runner = _stage(case) if kind == "behavior" else KINDS[kind]
    runner(case)
    named = case["function_under_test"]
    for function in FUNCTIONS[runner]:
        assert re.search(rf"\b{function}\b", named), f"runs {function}, the case names {named!r}"
    if case.get("skipped_in_upstream"):
        # The table entry exists upstream but its loop skips it; its facts still hold here.
        assert case.get("skipped_reason"), "a case skipped upstream says why"
    unread = case.unread()
    assert not unread, (
        f"fields the runner did not read (a typo, or a fact it does not check): {unread}"
    )


@pytest.mark.parametrize(("data", "path"), _load())
def test_k8s_case(data: dict[str, Any] | None, path: str) -> None:
    if data is None:
        pytest.fail(f"case file not found: {path}")
    run_case(data, path)


# ----------------------------------------------------------------------------- the runner itself
def _reconcile_case() -> dict[str, Any]:
    path = SHARED / "k8s_cases_reconcile.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    cases = json.loads(path.read_text())
    return next(
        c
        for c in cases
        if c["kind"] == "end_to_end"
        and {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"}
        in c["expected_conditions"]
    )


def _fails(data: dict[str, Any], match: str) -> None:
    with pytest.raises(AssertionError, match=match):
        run_case(data)


def test_runner_checks_condition_messages() -> None:
    case = _reconcile_case()
    run_case(case)
    conditions = [dict(c) for c in case["expected_conditions"]]
    active = next(i for i, c in enumerate(conditions) if c["type"] == "ScalingActive")
    # Upstream's message (horizontal.go computeReplicasForMetrics, computeStatusForResourceMetric)
    right = "the HPA was able to successfully calculate a replica count from cpu resource "
    right += "utilization (percentage of request)"
    conditions[active]["message"] = right
    run_case({**case, "expected_conditions": conditions})
    conditions[active]["message"] = "a message nothing produces"
    _fails({**case, "expected_conditions": conditions}, "ScalingActive message")


def test_runner_fails_on_a_field_it_does_not_read_at_any_depth() -> None:
    case = _reconcile_case()
    _fails({**case, "tolerence": 0.2}, r"\['tolerence'\]")
    pods = [dict(p) for p in case["pods"]]
    pods[0]["cpu_limit_milli"] = 500
    _fails({**case, "pods": pods}, r"pods\[0\]\.cpu_limit_milli")
    conditions = [dict(c) for c in case["expected_conditions"]]
    conditions[0]["lastTransitionTime"] = "2024-01-01T00:00:00Z"
    _fails({**case, "expected_conditions": conditions}, "lastTransitionTime")
    # A note is for people: it needs no reader.
    run_case({**case, "pods_note": "anything"})


def test_runner_checks_the_function_named_and_unused_inputs() -> None:
    case = _reconcile_case()
    _fails({**case, "function_under_test": "HorizontalController.groupPods"}, "reconcileAutoscaler")
    legacy = next(
        c
        for c in json.loads((SHARED / "k8s_cases.json").read_text())
        if c.get("stage") == "legacy_clamp_only"
    )
    run_case(legacy)
    # convertDesiredReplicasWithRules reads no history: a case stating one cannot be checked.
    _fails({**legacy, "recommendations": [{"offset_s": -60, "replicas": 9}]}, "not an input")


def test_every_case_file_in_shared_is_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCALELAB_HPA_CASES", raising=False)
    for name in ("k8s_cases.json", "k8s_cases_zeta.json", "k8s_cases_alpha.json", "other.json"):
        (tmp_path / name).write_text("[]")
    assert [p.name for p in _case_files(tmp_path)] == [
        "k8s_cases.json",
        "k8s_cases_alpha.json",
        "k8s_cases_zeta.json",
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _case_files(empty) == [empty / "k8s_cases*.json"]  # reported as a missing file
