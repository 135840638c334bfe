"""Hypothesis tests of the HPA invariants in ../shared/hpa/properties.md (numbers in brackets).

Where a property needs a reference value (a window maximum, a policy limit) the test computes
it from the definition in properties.md, independently of sim.hpa's own helpers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sim.hpa import (
    AbleToScaleReason,
    ConditionType,
    ControllerConfig,
    HPAMemory,
    MetricsSnapshot,
    PodInfo,
    PodMetric,
    ReconcileResult,
    ScalingActiveReason,
    ScalingLimitedReason,
    reconcile,
)
from sim.hpa.normalize import (
    calculate_scale_up_limit_with_scaling_rules,
    convert_desired_replicas_with_behavior_rate,
    get_replicas_change_per_period,
    normalize_desired_replicas,
    normalize_desired_replicas_with_behaviors,
    stabilize_recommendation,
    stabilize_recommendation_with_behaviors,
    store_scale_event,
)
from sim.hpa.replica_calculator import (
    MetricError,
    ResourceReplicas,
    calc_plain_metric_replicas,
    get_external_metric_replicas,
    get_external_per_pod_metric_replicas,
    get_object_metric_replicas,
    get_resource_replicas,
    group_pods,
)
from sim.hpa.types import (
    MAX_INT32,
    Behavior,
    HPASpec,
    MetricSourceType,
    MetricSpec,
    MetricTarget,
    MetricTargetType,
    PolicyType,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
    TimestampedRecommendation,
    Tolerances,
)
from tests.strategies import (
    NOW,
    PodSet,
    core_behaviors,
    healthy_pod_sets,
    hpa_memories,
    hpa_specs,
    pod_sets,
    recommendation_histories,
    scale_event_lists,
)

CONFIG = ControllerConfig()
TOL = Tolerances(CONFIG.tolerance, CONFIG.tolerance)
FAST = settings(max_examples=150, deadline=None)
SLOW = settings(max_examples=80, deadline=None)


class Untouchable(Mapping[str, Any]):
    """A metrics source that fails the test if the controller reads it."""

    def __getitem__(self, key: str) -> Any:
        raise AssertionError(f"metrics were read ({key!r})")

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("metrics were iterated")

    def __len__(self) -> int:
        raise AssertionError("metrics were counted")


UNTOUCHABLE = MetricsSnapshot(
    resource=Untouchable(),
    pods=Untouchable(),
    object=Untouchable(),
    external=Untouchable(),
    container_resource=Untouchable(),
)


def run(
    spec: HPASpec,
    current: int,
    podset: PodSet,
    memory: HPAMemory,
    metrics: MetricsSnapshot | None = None,
) -> ReconcileResult:
    return reconcile(
        spec,
        current_replicas=current,
        status_replicas=current,
        pods=podset.pods,
        metrics=metrics
        if metrics is not None
        else MetricsSnapshot(resource={"cpu": podset.metrics}),
        now=NOW,
        memory=memory,
        config=CONFIG,
    )


def cpu_calc(
    current: int,
    target: int,
    pods: Sequence[PodInfo],
    metrics: Mapping[str, PodMetric],
    tolerances: Tolerances = TOL,
    resource: str = "cpu",
) -> ResourceReplicas:
    return get_resource_replicas(
        current,
        target,
        resource,
        pods,
        metrics,
        now=NOW,
        tolerances=tolerances,
        cpu_initialization_period=CONFIG.cpu_initialization_period,
        initial_readiness_delay=CONFIG.initial_readiness_delay,
    )


@st.composite
def reconcile_inputs(
    draw: st.DrawFn, behavior: bool | None = None
) -> tuple[HPASpec, int, PodSet, HPAMemory]:
    spec = draw(hpa_specs(behavior)).to_core()
    current = draw(st.integers(0, spec.max_replicas + 5))
    return spec, current, draw(pod_sets()), draw(hpa_memories())


def in_range_current(draw: st.DrawFn, spec: HPASpec) -> int:
    return draw(st.integers(max(spec.min_replicas, 1), spec.max_replicas))


# ============================================================== reconcile-level invariants
@FAST
@given(reconcile_inputs())
def test_bounds(inp: tuple[HPASpec, int, PodSet, HPAMemory]) -> None:
    """[1] Unless scaling is disabled at zero, the written count is within [min, max]."""
    spec, current, podset, memory = inp
    assume(current > 0 or spec.min_replicas == 0)
    res = run(spec, current, podset, memory)
    assert spec.min_replicas <= res.desired_replicas <= spec.max_replicas


@FAST
@given(spec=hpa_specs(), memory=hpa_memories())
def test_scaling_disabled_at_zero(spec: Any, memory: HPAMemory) -> None:
    """[2] current 0 with minReplicas != 0: stays 0, ScalingDisabled, metrics never read."""
    core = spec.to_core()
    assume(core.min_replicas != 0)
    res = run(core, 0, PodSet((), {}), memory, metrics=UNTOUCHABLE)
    assert res.desired_replicas == 0 and not res.rescale
    active = res.condition(ConditionType.SCALING_ACTIVE)
    assert active is not None and active.status == "False"
    assert active.reason == ScalingActiveReason.SCALING_DISABLED
    assert res.condition(ConditionType.SCALING_LIMITED) is None


@FAST
@given(spec=hpa_specs(), memory=hpa_memories(), data=st.data())
def test_out_of_range_current_short_circuits(spec: Any, memory: HPAMemory, data: Any) -> None:
    """[3] current > max -> max, 0 < current < min -> min, without metrics or normalization."""
    core = spec.to_core()
    above = data.draw(st.integers(core.max_replicas + 1, core.max_replicas + 10))
    res = run(core, above, PodSet((), {}), memory, metrics=UNTOUCHABLE)
    assert res.desired_replicas == core.max_replicas and res.rescale
    assert res.reason == "Current number of replicas above Spec.MaxReplicas"
    assert res.condition(ConditionType.SCALING_LIMITED) is None
    assert res.metric_desired is None and res.stabilized is None
    if core.min_replicas > 1:
        below = data.draw(st.integers(1, core.min_replicas - 1))
        res = run(core, below, PodSet((), {}), HPAMemory(), metrics=UNTOUCHABLE)
        assert res.desired_replicas == core.min_replicas and res.rescale
        assert res.reason == "Current number of replicas below Spec.MinReplicas"


_FAILING = [
    (
        MetricSpec(
            MetricSourceType.RESOURCE, "cpu", MetricTarget(MetricTargetType.UTILIZATION, 50)
        ),
        ScalingActiveReason.FAILED_GET_RESOURCE_METRIC,
    ),
    (
        MetricSpec(
            MetricSourceType.RESOURCE,
            "memory",
            MetricTarget(MetricTargetType.AVERAGE_VALUE, average_value=10**12),
        ),
        ScalingActiveReason.FAILED_GET_RESOURCE_METRIC,
    ),
    (
        MetricSpec(
            MetricSourceType.PODS,
            "qps",
            MetricTarget(MetricTargetType.AVERAGE_VALUE, average_value=1000),
        ),
        ScalingActiveReason.FAILED_GET_PODS_METRIC,
    ),
    (
        MetricSpec(
            MetricSourceType.OBJECT,
            "hits",
            MetricTarget(MetricTargetType.VALUE, value=5000),
            described_object="Ingress/main",
        ),
        ScalingActiveReason.FAILED_GET_OBJECT_METRIC,
    ),
    (
        MetricSpec(
            MetricSourceType.EXTERNAL,
            "queue",
            MetricTarget(MetricTargetType.AVERAGE_VALUE, average_value=30_000),
        ),
        ScalingActiveReason.FAILED_GET_EXTERNAL_METRIC,
    ),
    (
        MetricSpec(
            MetricSourceType.CONTAINER_RESOURCE,
            "cpu",
            MetricTarget(MetricTargetType.UTILIZATION, 60),
            container="server",
        ),
        ScalingActiveReason.FAILED_GET_CONTAINER_RESOURCE_METRIC,
    ),
]


@FAST
@given(
    failing=st.lists(st.sampled_from(_FAILING), min_size=1, max_size=4),
    behavior=st.one_of(st.none(), core_behaviors()),
    podset=pod_sets(),
    memory=hpa_memories(),
    data=st.data(),
)
def test_no_scale_on_total_metric_failure(
    failing: list[Any], behavior: Behavior | None, podset: PodSet, memory: HPAMemory, data: Any
) -> None:
    """[4] Every metric fails: no scale, ScalingActive=False with the first failure's reason,
    and nothing is stabilized (the history only gets the initial recommendation)."""
    spec = HPASpec(
        max_replicas=20, min_replicas=1, metrics=tuple(m for m, _ in failing), behavior=behavior
    )
    current = data.draw(st.integers(1, 20))
    history_before = None if memory.recommendations is None else list(memory.recommendations)
    res = run(spec, current, podset, memory, metrics=MetricsSnapshot())
    assert res.desired_replicas == current and not res.rescale
    active = res.condition(ConditionType.SCALING_ACTIVE)
    assert active is not None and active.status == "False"
    assert active.reason == failing[0][1]
    assert res.error is not None and f"({len(failing)} invalid out of {len(failing)})" in res.error
    # One FailedGet*Metric warning per failing metric, then FailedComputeMetricsReplicas for
    # the aborted pass (horizontal.go getUnableComputeReplicaCountCondition, reconcileAutoscaler).
    assert [e.reason for e in res.events] == [
        *(str(reason) for _, reason in failing),
        "FailedComputeMetricsReplicas",
    ]
    assert res.events[-1].message == res.error
    expected = (
        history_before if history_before is not None else [TimestampedRecommendation(current, NOW)]
    )
    assert memory.recommendations == expected


_EXTERNAL = MetricSpec(
    MetricSourceType.EXTERNAL, "queue", MetricTarget(MetricTargetType.VALUE, value=1000)
)


@FAST
@given(
    podset=healthy_pod_sets(),
    target=st.integers(10, 150),
    current=st.integers(1, 20),
    external_first=st.booleans(),
)
def test_partial_failure_never_scales_down(
    podset: PodSet, target: int, current: int, external_first: bool
) -> None:
    """[5] One metric fails: scale only if the others propose >= current; never scale down."""
    cpu = MetricSpec(
        MetricSourceType.RESOURCE, "cpu", MetricTarget(MetricTargetType.UTILIZATION, target)
    )
    metrics = (_EXTERNAL, cpu) if external_first else (cpu, _EXTERNAL)
    spec = HPASpec(max_replicas=40, min_replicas=1, metrics=metrics)
    proposal = cpu_calc(current, target, podset.pods, podset.metrics).replicas
    res = run(spec, current, podset, HPAMemory(recommendations=[]))
    active = res.condition(ConditionType.SCALING_ACTIVE)
    assert active is not None
    assert res.error is not None and "(1 invalid out of 2)" in res.error
    if proposal < current:
        assert res.desired_replicas == current and not res.rescale
        assert (active.status, active.reason) == (
            "False",
            ScalingActiveReason.FAILED_GET_EXTERNAL_METRIC,
        )
    else:
        assert (active.status, active.reason) == ("True", ScalingActiveReason.VALID_METRIC_FOUND)
        assert res.metric_desired == proposal
        assert res.desired_replicas >= current
        # The pass goes on: upstream only returns the error (retErr); FailedComputeMetricsReplicas
        # belongs to the abort path. The failing metric still records its own warning.
        reasons = [e.reason for e in res.events]
        assert "FailedComputeMetricsReplicas" not in reasons
        assert reasons.count(ScalingActiveReason.FAILED_GET_EXTERNAL_METRIC) == 1


@FAST
@given(
    podset=healthy_pod_sets(),
    target=st.integers(10, 150),
    qps_target=st.integers(100, 5000),
    queue=st.integers(0, 10**6),
    queue_target=st.integers(1000, 50_000),
    current=st.integers(1, 30),
)
def test_desired_is_max_across_metrics(
    podset: PodSet, target: int, qps_target: int, queue: int, queue_target: int, current: int
) -> None:
    """[6] With several valid metrics the prenormalized count is the largest proposal."""
    specs = (
        MetricSpec(
            MetricSourceType.RESOURCE, "cpu", MetricTarget(MetricTargetType.UTILIZATION, target)
        ),
        MetricSpec(
            MetricSourceType.PODS,
            "qps",
            MetricTarget(MetricTargetType.AVERAGE_VALUE, average_value=qps_target),
        ),
        MetricSpec(
            MetricSourceType.EXTERNAL,
            "queue",
            MetricTarget(MetricTargetType.VALUE, value=queue_target),
        ),
    )
    snapshot = MetricsSnapshot(
        resource={"cpu": podset.metrics}, pods={"qps": podset.metrics}, external={"queue": queue}
    )
    expected = [
        cpu_calc(current, target, podset.pods, podset.metrics).replicas,
        calc_plain_metric_replicas(
            podset.metrics,
            current,
            qps_target,
            podset.pods,
            "",
            now=NOW,
            tolerances=TOL,
            cpu_initialization_period=CONFIG.cpu_initialization_period,
            initial_readiness_delay=CONFIG.initial_readiness_delay,
        ).replicas,
        get_external_metric_replicas(current, queue_target, queue, podset.pods, TOL).replicas,
    ]
    spec = HPASpec(max_replicas=MAX_INT32, min_replicas=1, metrics=specs)
    res = run(spec, current, podset, HPAMemory(recommendations=[]), metrics=snapshot)
    assert [m.proposal for m in res.metrics] == expected
    assert res.metric_desired == max(expected)


@FAST
@given(reconcile_inputs())
def test_rescale_iff_changed_and_events_only_then(
    inp: tuple[HPASpec, int, PodSet, HPAMemory],
) -> None:
    """[7][29] out == current means no rescale, no event, no stored scale event, no
    lastScaleTime; a rescale with a behavior stores |out - current| in its direction's list."""
    spec, current, podset, memory = inp
    ups, downs = list(memory.scale_up_events), list(memory.scale_down_events)
    res = run(spec, current, podset, memory)
    assert res.rescale == (res.desired_replicas != current)
    rescale_events = [e for e in res.events if e.reason == "SuccessfulRescale"]
    if not res.rescale:
        assert not rescale_events and memory.last_scale_time is None
        assert (memory.scale_up_events, memory.scale_down_events) == (ups, downs)
        return
    assert len(rescale_events) == 1 and memory.last_scale_time == NOW
    able = res.condition(ConditionType.ABLE_TO_SCALE)
    assert able is not None and able.reason == AbleToScaleReason.SUCCEEDED_RESCALE
    if spec.behavior is None:
        assert (memory.scale_up_events, memory.scale_down_events) == (ups, downs)
        return
    grew = res.desired_replicas > current
    mine, before, other, other_before = (
        (memory.scale_up_events, ups, memory.scale_down_events, downs)
        if grew
        else (memory.scale_down_events, downs, memory.scale_up_events, ups)
    )
    assert other == other_before
    assert ScaleEvent(abs(res.desired_replicas - current), NOW, False) in mine
    assert len(mine) in (len(before), len(before) + 1)


@FAST
@given(spec=hpa_specs(), podset=pod_sets(), data=st.data())
def test_first_reconcile_never_scales_down(spec: Any, podset: PodSet, data: Any) -> None:
    """[8] A fresh controller records {current, now} first, so the first pass never scales
    down (legacy path, or behavior path with a positive scale-down window)."""
    core = spec.to_core()
    if core.behavior is not None:
        window = core.behavior.scale_down.stabilization_window_seconds
        assume(window is None or window > 0)
    current = in_range_current(data.draw, core)
    res = run(core, current, podset, HPAMemory())
    assert res.desired_replicas >= current


@FAST
@given(reconcile_inputs())
def test_condition_invariants(inp: tuple[HPASpec, int, PodSet, HPAMemory]) -> None:
    """[31][32] ScalingLimited True iff the rules changed the stabilized value, with
    DesiredWithinRange exactly when False; AbleToScale names the stabilization that applied."""
    spec, current, podset, memory = inp
    res = run(spec, current, podset, memory)
    limited = res.condition(ConditionType.SCALING_LIMITED)
    active = res.condition(ConditionType.SCALING_ACTIVE)
    able = res.condition(ConditionType.ABLE_TO_SCALE)
    assert able is not None
    if active is not None and active.status == "False":
        assert not res.rescale and res.desired_replicas == current
    if res.stabilized is None:
        assert limited is None
        return
    assert active is not None and active.reason == ScalingActiveReason.VALID_METRIC_FOUND
    assert limited is not None
    assert (limited.status == "True") == (res.desired_replicas != res.stabilized)
    assert (limited.reason == ScalingLimitedReason.DESIRED_WITHIN_RANGE) == (
        limited.status == "False"
    )
    if res.rescale:
        assert able.reason == AbleToScaleReason.SUCCEEDED_RESCALE
    elif res.stabilized == res.metric_desired:
        assert able.reason == AbleToScaleReason.READY_FOR_NEW_SCALE
    elif spec.behavior is None:
        assert able.reason == AbleToScaleReason.SCALE_DOWN_STABILIZED
    else:
        assert res.metric_desired is not None
        assert able.reason == (
            AbleToScaleReason.SCALE_UP_STABILIZED
            if res.metric_desired >= current
            else AbleToScaleReason.SCALE_DOWN_STABILIZED
        )


# ============================================================== replica calculation
@FAST
@given(podset=healthy_pod_sets(), target=st.integers(1, 300), current=st.integers(1, 30))
def test_utilization_is_truncated_percent_of_requests(
    podset: PodSet, target: int, current: int
) -> None:
    """[9] utilization = floor(100 * sum(usage) / sum(request)); ratio = utilization / target;
    the fast path multiplies by the ready pod count."""
    res = cpu_calc(current, target, podset.pods, podset.metrics)
    usage = sum(m.value for m in podset.metrics.values())
    requests = sum(p.requests["cpu"] for p in podset.pods)
    assert res.utilization == (100 * usage) // requests
    assert res.raw_average == usage // len(podset.pods)
    ratio = res.utilization / target
    if TOL.is_within(ratio):
        assert res.replicas == current
    else:
        assert res.replicas == math.ceil(ratio * len(podset.pods))


@FAST
@given(
    podset=pod_sets(min_size=1),
    target=st.integers(10, 200),
    current=st.integers(1, 20),
    down=st.floats(0.0, 0.5),
    up=st.floats(0.0, 0.5),
)
def test_tolerance_dead_band(
    podset: PodSet, target: int, current: int, down: float, up: float
) -> None:
    """[10] An initial ratio within [1-down, 1+up] returns current, whatever is missing/unready."""
    tolerances = Tolerances(down, up)
    try:
        res = cpu_calc(current, target, podset.pods, podset.metrics, tolerances)
    except MetricError:
        return
    if tolerances.is_within(res.utilization / target):
        assert res.replicas == current


@FAST
@given(
    pods=st.integers(1, 10),
    request=st.integers(1, 40),
    tol_pct=st.integers(0, 50),
    current=st.integers(1, 20),
)
def test_tolerance_edges_are_inclusive(pods: int, request: int, tol_pct: int, current: int) -> None:
    """[10] isWithin is inclusive: utilization exactly at 100 +/- tol% keeps current."""
    tolerance = tol_pct / 100
    for util in (100 + tol_pct, 100 - tol_pct):
        assume((1 - tolerance) <= util / 100 <= (1 + tolerance))
        podlist = [
            PodInfo(
                f"p{i}", start_time=0.0, ready_transition_time=1.0, requests={"cpu": request * 100}
            )
            for i in range(pods)
        ]
        metrics = {p.name: PodMetric(request * util, NOW, 30.0) for p in podlist}
        res = cpu_calc(current, 100, podlist, metrics, Tolerances(tolerance, tolerance))
        assert res.utilization == util
        assert res.replicas == current


@FAST
@given(
    podset=pod_sets(min_size=1),
    target=st.integers(10, 200),
    current=st.integers(1, 20),
)
def test_estimated_pods_never_reverse_direction(podset: PodSet, target: int, current: int) -> None:
    """[11][15] With missing pods, or unready pods on a scale-up, ratio < 1 never adds replicas
    and ratio > 1 never removes any."""
    try:
        res = cpu_calc(current, target, podset.pods, podset.metrics)
    except MetricError:
        return
    grouped = group_pods(
        podset.pods,
        podset.metrics,
        "cpu",
        CONFIG.cpu_initialization_period,
        CONFIG.initial_readiness_delay,
        NOW,
    )
    ratio = res.utilization / target
    if not (grouped.missing or (grouped.unready and ratio > 1)):
        return
    if ratio < 1:
        assert res.replicas <= current
    if ratio > 1:
        assert res.replicas >= current


def _unready_pods(kinds: list[tuple[str, int | None]]) -> PodSet:
    pods, metrics = [], {}
    for i, (kind, usage) in enumerate(kinds):
        name = f"unready-{i}"
        if kind == "pending":
            pods.append(PodInfo(name, phase="Pending", ready=False, requests={"cpu": 1000}))
        else:  # Running, started long ago, never became ready
            pods.append(
                PodInfo(
                    name,
                    ready=False,
                    start_time=0.0,
                    ready_transition_time=0.0,
                    requests={"cpu": 1000},
                )
            )
        # Without a sample a Running pod would be "missing" (groupPods checks that first).
        if usage is not None or kind != "pending":
            metrics[name] = PodMetric(usage or 0, NOW, 30.0)
    return PodSet(tuple(pods), metrics)


_unready_kinds = st.lists(
    st.tuples(
        st.sampled_from(["pending", "never-ready"]), st.one_of(st.none(), st.integers(0, 8000))
    ),
    min_size=1,
    max_size=4,
)


@FAST
@given(
    base=healthy_pod_sets(),
    extra=_unready_kinds,
    target=st.integers(10, 200),
    current=st.integers(1, 20),
)
def test_unready_pods_only_dampen_scale_up(
    base: PodSet, extra: Any, target: int, current: int
) -> None:
    """[13] Unready pods never count at or below target; above target they only hold the
    count at or above current (they are re-added at 0%)."""
    unready = _unready_pods(extra)
    alone = cpu_calc(current, target, base.pods, base.metrics)
    both = cpu_calc(current, target, base.pods + unready.pods, {**base.metrics, **unready.metrics})
    assert both.utilization == alone.utilization and both.raw_average == alone.raw_average
    if alone.utilization / target <= 1:
        assert both.replicas == alone.replicas
    else:
        assert both.replicas >= current


@st.composite
def _ignored_pods(draw: st.DrawFn) -> PodSet:
    pods, metrics = [], {}
    for i in range(draw(st.integers(1, 4))):
        name = f"ignored-{i}"
        deleted = draw(st.booleans())
        pods.append(
            PodInfo(
                name,
                phase="Running" if deleted else "Failed",
                deleted=deleted,
                ready=draw(st.booleans()),
                start_time=NOW - 5000,
                ready_transition_time=NOW - 4000,
                requests={"cpu": draw(st.integers(1, 40)) * 100},
            )
        )
        if draw(st.booleans()):
            metrics[name] = PodMetric(draw(st.integers(0, 10_000)), NOW, 30.0)
    return PodSet(tuple(pods), metrics)


@FAST
@given(
    base=pod_sets(min_size=1),
    ignored=_ignored_pods(),
    target=st.integers(10, 200),
    current=st.integers(1, 20),
)
def test_ignored_pods_never_count(base: PodSet, ignored: PodSet, target: int, current: int) -> None:
    """[14] Deleted and Failed pods change nothing: not the proposal, not the utilization."""
    assume(base.metrics)  # otherwise only the error text differs ("no metrics returned")

    def outcome(pods: Sequence[PodInfo], metrics: Mapping[str, PodMetric]) -> Any:
        try:
            return cpu_calc(current, target, pods, metrics)
        except MetricError:
            return "error"

    assert outcome(base.pods, base.metrics) == outcome(
        base.pods + ignored.pods, {**base.metrics, **ignored.metrics}
    )


@FAST
@given(podset=pod_sets())
def test_readiness_rules_apply_to_cpu_only(podset: PodSet) -> None:
    """[16] Non-cpu resources only treat Pending as unready; for cpu, a Ready pod past its
    initialization period always counts."""
    args = (CONFIG.cpu_initialization_period, CONFIG.initial_readiness_delay, NOW)
    mem = group_pods(podset.pods, podset.metrics, "memory", *args)
    cpu = group_pods(podset.pods, podset.metrics, "cpu", *args)
    counted = [p for p in podset.pods if not p.deleted and p.phase != "Failed"]
    assert mem.ignored == cpu.ignored == {p.name for p in podset.pods} - {p.name for p in counted}
    assert mem.unready == {p.name for p in counted if p.phase == "Pending"}
    assert mem.missing == cpu.missing
    assert mem.ready_pod_count == len(counted) - len(mem.unready) - len(mem.missing)
    assert mem.unready <= cpu.unready
    # cpu: the rules of [16], written out from properties.md.
    init, delay = CONFIG.cpu_initialization_period, CONFIG.initial_readiness_delay
    for p in counted:
        if p.phase == "Pending" or p.name not in podset.metrics:
            continue
        metric = podset.metrics[p.name]
        transition = -math.inf if p.ready_transition_time is None else p.ready_transition_time
        if p.ready is None or p.start_time is None:
            unready = True
        elif p.start_time + init > NOW:  # still initializing
            unready = not p.ready or metric.timestamp < transition + metric.window
        else:  # only "never became ready" pods are excluded
            unready = not p.ready and p.start_time + delay > transition
        assert (p.name in cpu.unready) == unready, p


@FAST
@given(
    current=st.integers(0, 50),
    status=st.integers(0, 50),
    target=st.integers(1, 10**6),
    usage=st.integers(0, 10**18),
    podset=pod_sets(min_size=1),
)
def test_object_and_external_proposals_are_bounded(
    current: int, status: int, target: int, usage: int, podset: PodSet
) -> None:
    """[17] Object/External proposals are >= 0 and capped at MaxInt32; from zero replicas the
    proposal is ceil(usage / target)."""
    value = get_object_metric_replicas(current, target, usage, podset.pods, TOL).replicas
    per_pod = get_external_per_pod_metric_replicas(status, target, usage, TOL).replicas
    for proposal in (value, per_pod):
        assert 0 <= proposal <= MAX_INT32
    if current == 0:
        assert value == min(math.ceil(usage / target), MAX_INT32)


# ============================================================== stabilization
windows = st.sampled_from([0, 15, 60, 300])


@FAST
@given(
    history=recommendation_histories(),
    current=st.integers(0, 30),
    desired=st.integers(0, 30),
    up_window=windows,
    down_window=windows,
)
def test_behavior_stabilization_is_a_clamp_and_records_desired(
    history: list[TimestampedRecommendation],
    current: int,
    desired: int,
    up_window: int,
    down_window: int,
) -> None:
    """[18][21] stab = clamp(current, upRec, downRec) over strictly-newer samples; the raw
    desired is stored in the last slot older than both windows, else appended."""
    memory = HPAMemory(recommendations=list(history))
    stab = stabilize_recommendation_with_behaviors(
        memory, current, desired, NOW, up_window, down_window
    )
    up_rec = min([desired] + [r.recommendation for r in history if r.timestamp > NOW - up_window])
    down_rec = max(
        [desired] + [r.recommendation for r in history if r.timestamp > NOW - down_window]
    )
    assert stab.replicas == min(max(current, up_rec), down_rec)
    assert min(current, desired) <= stab.replicas <= max(current, desired)
    if stab.replicas == desired:
        assert stab.reason == AbleToScaleReason.READY_FOR_NEW_SCALE
    elif desired >= current:
        assert stab.reason == AbleToScaleReason.SCALE_UP_STABILIZED
    else:
        assert stab.reason == AbleToScaleReason.SCALE_DOWN_STABILIZED
    old = [
        i
        for i, r in enumerate(history)
        if r.timestamp < NOW - up_window and r.timestamp < NOW - down_window
    ]
    expected = list(history)
    if old:
        expected[old[-1]] = TimestampedRecommendation(desired, NOW)
    else:
        expected.append(TimestampedRecommendation(desired, NOW))
    assert memory.recommendations == expected


@FAST
@given(history=recommendation_histories(), desired=st.integers(0, 30), window=windows)
def test_legacy_stabilization_takes_window_max(
    history: list[TimestampedRecommendation], desired: int, window: int
) -> None:
    """[22][21] Legacy: max of desired and every sample not strictly older than the cutoff;
    the last strictly older slot is reused."""
    memory = HPAMemory(recommendations=list(history))
    stab = stabilize_recommendation(memory, desired, NOW, window)
    kept = [r.recommendation for r in history if not r.timestamp < NOW - window]
    assert stab.replicas == max([desired, *kept])
    old = [i for i, r in enumerate(history) if r.timestamp < NOW - window]
    expected = list(history)
    if old:
        expected[old[-1]] = TimestampedRecommendation(desired, NOW)
    else:
        expected.append(TimestampedRecommendation(desired, NOW))
    assert memory.recommendations == expected


@FAST
@given(window=st.sampled_from([15, 60, 300]), desired=st.integers(0, 10), bump=st.integers(1, 10))
def test_window_edge_legacy_inclusive_behavior_exclusive(
    window: int, desired: int, bump: int
) -> None:
    """[22] A sample exactly ``window`` old counts on the legacy path, not on the behavior path."""
    higher = desired + bump
    edge = [TimestampedRecommendation(higher, NOW - window)]
    legacy = stabilize_recommendation(HPAMemory(recommendations=list(edge)), desired, NOW, window)
    assert legacy.replicas == higher
    behavior = stabilize_recommendation_with_behaviors(
        HPAMemory(recommendations=list(edge)), higher, desired, NOW, 0, window
    )
    assert behavior.replicas == desired
    inside = [TimestampedRecommendation(higher, NOW - window + 0.001)]
    behavior = stabilize_recommendation_with_behaviors(
        HPAMemory(recommendations=inside), higher, desired, NOW, 0, window
    )
    assert behavior.replicas == higher


# ============================================================== rate limits (behavior != nil)
def _period_start(
    cur: int, period: int, ups: Sequence[ScaleEvent], downs: Sequence[ScaleEvent]
) -> int:
    cutoff = NOW - period
    return (
        cur
        - sum(e.replica_change for e in ups if e.timestamp > cutoff)
        + sum(e.replica_change for e in downs if e.timestamp > cutoff)
    )


def oracle_up_limit(
    cur: int, ups: Sequence[ScaleEvent], downs: Sequence[ScaleEvent], rules: ScalingRules
) -> int:
    """L_up of properties.md [24]."""
    props = []
    for p in rules.policies:
        start = _period_start(cur, p.period_seconds, ups, downs)
        props.append(
            start + p.value if p.type == PolicyType.PODS else math.ceil(start * (1 + p.value / 100))
        )
    return min(props) if rules.select_policy == SelectPolicy.MIN else max(props)


def oracle_down_limit(
    cur: int, ups: Sequence[ScaleEvent], downs: Sequence[ScaleEvent], rules: ScalingRules
) -> int:
    """L_down of properties.md [25]."""
    props = []
    for p in rules.policies:
        start = _period_start(cur, p.period_seconds, ups, downs)
        props.append(
            start - p.value if p.type == PolicyType.PODS else int(start * (1 - p.value / 100))
        )
    return max(props) if rules.select_policy == SelectPolicy.MIN else min(props)


@st.composite
def behavior_normalization_inputs(draw: st.DrawFn) -> dict[str, Any]:
    min_replicas = draw(st.integers(0, 5))
    max_replicas = draw(st.integers(max(min_replicas, 1), 30))
    return {
        "behavior": draw(core_behaviors()),
        "min": min_replicas,
        "max": max_replicas,
        "current": (current := draw(st.integers(max(min_replicas, 1), max_replicas))),
        "desired": draw(st.one_of(st.integers(0, current), st.integers(0, 60))),
        "history": draw(recommendation_histories()),
        "ups": draw(scale_event_lists()),
        "downs": draw(scale_event_lists()),
    }


def normalize(inp: dict[str, Any]) -> tuple[int, int, ScalingLimitedReason]:
    memory = HPAMemory(
        recommendations=list(inp["history"]),
        scale_up_events=list(inp["ups"]),
        scale_down_events=list(inp["downs"]),
    )
    n = normalize_desired_replicas_with_behaviors(
        memory, inp["behavior"], inp["current"], inp["desired"], inp["min"], inp["max"], NOW, CONFIG
    )
    return n.desired, n.stabilized.replicas, n.limited.reason


@SLOW
@given(behavior_normalization_inputs())
def test_behavior_normalization_bounds_and_direction(inp: dict[str, Any]) -> None:
    """[1][23] Rate limiting never reverses the stabilized direction and stays in [min, max]."""
    out, stab, _ = normalize(inp)
    cur = inp["current"]
    assert inp["min"] <= out <= inp["max"]
    if stab > cur:
        assert out >= cur
    elif stab < cur:
        assert out <= cur
    else:
        assert out == cur


@SLOW
@given(behavior_normalization_inputs())
def test_behavior_normalization_respects_windows(inp: dict[str, Any]) -> None:
    """[19][20] No scale-down below the down-window max, no scale-up above the up-window min."""
    out, _, _ = normalize(inp)
    rules = inp["behavior"]
    cur, desired, history = inp["current"], inp["desired"], inp["history"]
    down_w = rules.scale_down.stabilization_window_seconds
    down_w = CONFIG.downscale_stabilization_window if down_w is None else down_w
    up_w = rules.scale_up.stabilization_window_seconds
    window_max = max([desired] + [r.recommendation for r in history if r.timestamp > NOW - down_w])
    window_min = min([desired] + [r.recommendation for r in history if r.timestamp > NOW - up_w])
    if out < cur:
        assert out >= min(cur, window_max)
    if out > cur:
        assert out <= max(cur, window_min)


@SLOW
@given(behavior_normalization_inputs())
def test_rate_limits_per_period_honored(inp: dict[str, Any]) -> None:
    """[24][25][26][31] out <= max(cur, L_up) on a scale-up and out >= max(min(L_down, cur), min)
    on a scale-down, and these bounds are attained: out = min(stab, max, max(L_up, cur)) and
    out = max(stab, min, min(L_down, cur)). Disabled (L = cur) freezes that direction. The
    reason names the binding bound (the policy limit only if strictly tighter than max/min)."""
    out, stab, reason = normalize(inp)
    cur, rules, lo, hi = inp["current"], inp["behavior"], inp["min"], inp["max"]
    up, down = rules.scale_up, rules.scale_down
    if stab > cur:
        l_up = (
            cur
            if up.select_policy == SelectPolicy.DISABLED
            else oracle_up_limit(cur, inp["ups"], inp["downs"], up)
        )
        assert out <= max(cur, l_up)
        assert out == min(stab, hi, max(l_up, cur))
        if out != stab:
            assert reason == (
                ScalingLimitedReason.SCALE_UP_LIMIT
                if hi > max(l_up, cur)
                else ScalingLimitedReason.TOO_MANY_REPLICAS
            )
        if up.select_policy == SelectPolicy.DISABLED:
            assert out == cur
    elif stab < cur:
        l_down = (
            cur
            if down.select_policy == SelectPolicy.DISABLED
            else oracle_down_limit(cur, inp["ups"], inp["downs"], down)
        )
        assert out >= max(min(l_down, cur), lo)
        assert out == max(stab, lo, min(l_down, cur))
        if out != stab:
            assert reason == (
                ScalingLimitedReason.SCALE_DOWN_LIMIT
                if lo < min(l_down, cur)
                else ScalingLimitedReason.TOO_FEW_REPLICAS
            )
        if down.select_policy == SelectPolicy.DISABLED:
            assert out == cur
    else:
        assert out == cur
    if out == stab:
        assert reason == ScalingLimitedReason.DESIRED_WITHIN_RANGE


@FAST
@given(
    current=st.integers(1, 20),
    extra=st.integers(1, 20),
    value=st.integers(1, 5),
    period=st.sampled_from([15, 60, 300]),
    spent=st.integers(0, 10),
    age_frac=st.floats(0.0, 0.99),
    select=st.sampled_from([SelectPolicy.MAX, SelectPolicy.MIN]),
    kind=st.sampled_from(list(PolicyType)),
)
def test_exhausted_budget_freezes_and_never_reverses(
    current: int,
    extra: int,
    value: int,
    period: int,
    spent: int,
    age_frac: float,
    select: SelectPolicy,
    kind: PolicyType,
) -> None:
    """[27] When recent events used up a period's budget the count stays at current with
    ScaleUpLimit / ScaleDownLimit, never moving backwards."""
    rules = ScalingRules(0, select, (ScalingPolicy(kind, value, period),))
    event = [ScaleEvent(value + spent, NOW - age_frac * period)]
    behavior = Behavior(scale_up=rules, scale_down=rules)
    start_up = current - (value + spent)
    up_limit = (
        start_up + value if kind == PolicyType.PODS else math.ceil(start_up * (1 + value / 100))
    )
    if up_limit <= current:
        up = convert_desired_replicas_with_behavior_rate(
            current, current + extra, 0, current + extra, behavior, event, [], NOW
        )
        assert (up.replicas, up.reason) == (current, ScalingLimitedReason.SCALE_UP_LIMIT)
    start_down = current + value + spent
    down_limit = (
        start_down - value if kind == PolicyType.PODS else int(start_down * (1 - value / 100))
    )
    if down_limit >= current:
        down = convert_desired_replicas_with_behavior_rate(
            current, 0, 0, current + extra, behavior, [], event, NOW
        )
        assert (down.replicas, down.reason) == (current, ScalingLimitedReason.SCALE_DOWN_LIMIT)


@FAST
@given(
    current=st.integers(0, 50),
    value=st.integers(1, 20),
    change=st.integers(1, 10),
    period=st.sampled_from([15, 30, 60, 120, 1800]),
)
def test_event_window_is_strict(current: int, value: int, change: int, period: int) -> None:
    """[28] An event exactly one period old does not count; one a millisecond newer does."""
    edge = [ScaleEvent(change, NOW - period)]
    inside = [ScaleEvent(change, NOW - period + 0.001)]
    assert get_replicas_change_per_period(period, edge, NOW) == 0
    assert get_replicas_change_per_period(period, inside, NOW) == change
    rules = ScalingRules(0, SelectPolicy.MAX, (ScalingPolicy(PolicyType.PODS, value, period),))
    assert (
        calculate_scale_up_limit_with_scaling_rules(current, edge, [], rules, NOW)
        == current + value
    )
    assert (
        calculate_scale_up_limit_with_scaling_rules(current, inside, [], rules, NOW)
        == current - change + value
    )
    # Scale-down events raise the scale-up period start (and only inside the period).
    assert (
        calculate_scale_up_limit_with_scaling_rules(current, [], inside, rules, NOW)
        == current + change + value
    )


@FAST
@given(
    behavior=st.one_of(st.none(), core_behaviors()),
    ups=scale_event_lists(),
    downs=scale_event_lists(),
    prev=st.integers(0, 30),
    new=st.integers(0, 30),
)
def test_store_scale_event_reuses_last_outdated_slot(
    behavior: Behavior | None, ups: list[ScaleEvent], downs: list[ScaleEvent], prev: int, new: int
) -> None:
    """[29] Stored only with a behavior; |new - prev| goes to its direction's list, over the
    last slot older than the longest policy period, else appended; the other list is untouched."""
    assume(new != prev)
    memory = HPAMemory(scale_up_events=list(ups), scale_down_events=list(downs))
    store_scale_event(behavior, memory, prev, new, NOW)
    if behavior is None:
        assert (memory.scale_up_events, memory.scale_down_events) == (ups, downs)
        return
    grow = new > prev
    rules = behavior.scale_up if grow else behavior.scale_down
    before, other_before = (ups, downs) if grow else (downs, ups)
    after, other_after = (
        (memory.scale_up_events, memory.scale_down_events)
        if grow
        else (memory.scale_down_events, memory.scale_up_events)
    )
    assert other_after == other_before
    cutoff = NOW - max(p.period_seconds for p in rules.policies)
    marked = [replace(e, outdated=e.outdated or e.timestamp < cutoff) for e in before]
    reusable = [i for i, e in enumerate(marked) if e.outdated]
    new_event = ScaleEvent(abs(new - prev), NOW, False)
    if reusable:
        marked[reusable[-1]] = new_event
    else:
        marked.append(new_event)
    assert after == marked


# ============================================================== legacy path (behavior == nil)
@FAST
@given(
    min_max=st.integers(0, 5).flatmap(
        lambda lo: st.tuples(st.just(lo), st.integers(max(lo, 1), 40))
    ),
    data=st.data(),
    desired=st.integers(0, 100),
    history=recommendation_histories(max_replicas=40),
)
def test_legacy_scale_up_cap_and_no_scale_down_limit(
    min_max: tuple[int, int], data: Any, desired: int, history: list[TimestampedRecommendation]
) -> None:
    """[30] Legacy path: out <= max(cur, min(max, max(2*cur, 4))); a stabilized scale-down
    within [min, max] is applied in one step."""
    lo, hi = min_max
    current = data.draw(st.integers(max(lo, 1), hi))
    memory = HPAMemory(recommendations=list(history))
    n = normalize_desired_replicas(memory, current, desired, lo, hi, NOW, CONFIG)
    assert lo <= n.desired <= hi
    assert n.desired <= max(current, min(hi, max(2 * current, 4)))
    stab = n.stabilized.replicas
    if lo <= stab <= current:
        assert n.desired == stab


@pytest.mark.parametrize("factor", [2.0, 8.0])
def test_legacy_cap_uses_configured_factor(factor: float) -> None:
    """[30] The cap follows ControllerConfig.scale_up_limit_factor (tests upstream use 8)."""
    config = replace(CONFIG, scale_up_limit_factor=factor)
    n = normalize_desired_replicas(HPAMemory(recommendations=[]), 3, 1000, 1, 2000, NOW, config)
    assert n.desired == int(max(factor * 3, 4))
    assert n.limited.reason == ScalingLimitedReason.SCALE_UP_LIMIT
