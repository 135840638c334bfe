"""One HPA reconcile: the decision half of upstream ``horizontal.go`` ``reconcileAutoscaler``.

:func:`reconcile` is pure apart from mutating the :class:`HPAMemory` it is given (the
controller's per-HPA recommendation history and scale events). Reading and writing the scale
subresource is the caller's job: the caller passes ``scale.spec.replicas`` and
``scale.status.replicas`` in and writes ``desired_replicas`` back when ``rescale`` is true.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sim.hpa.normalize import (
    STABILIZED_MESSAGES,
    Limited,
    normalize_desired_replicas,
    normalize_desired_replicas_with_behaviors,
    record_initial_recommendation,
    store_scale_event,
)
from sim.hpa.replica_calculator import (
    MetricError,
    calc_plain_metric_replicas,
    get_external_metric_replicas,
    get_external_per_pod_metric_replicas,
    get_object_metric_replicas,
    get_object_per_pod_metric_replicas,
    get_raw_resource_replicas,
    get_resource_replicas,
)
from sim.hpa.types import (
    AbleToScaleReason,
    Condition,
    ConditionReason,
    ConditionType,
    ControllerConfig,
    Event,
    HPAMemory,
    HPASpec,
    MetricResult,
    MetricSourceType,
    MetricSpec,
    MetricsSnapshot,
    MetricTargetType,
    PodInfo,
    ReconcileResult,
    ScalingActiveReason,
    Tolerances,
)

if TYPE_CHECKING:
    from sim.hpa.spec import HorizontalPodAutoscalerSpec

__all__ = ["MetricsReplicas", "compute_replicas_for_metrics", "reconcile", "tolerances_for_hpa"]

_FAILED_REASON: dict[MetricSourceType, ScalingActiveReason] = {
    MetricSourceType.RESOURCE: ScalingActiveReason.FAILED_GET_RESOURCE_METRIC,
    MetricSourceType.CONTAINER_RESOURCE: ScalingActiveReason.FAILED_GET_CONTAINER_RESOURCE_METRIC,
    MetricSourceType.PODS: ScalingActiveReason.FAILED_GET_PODS_METRIC,
    MetricSourceType.OBJECT: ScalingActiveReason.FAILED_GET_OBJECT_METRIC,
    MetricSourceType.EXTERNAL: ScalingActiveReason.FAILED_GET_EXTERNAL_METRIC,
}


class _Conditions:
    """``setCondition`` semantics: one condition per type, replaced in place."""

    def __init__(self) -> None:
        self._by_type: dict[ConditionType, Condition] = {}

    def set(
        self,
        type_: ConditionType,
        status: Literal["True", "False"],
        reason: ConditionReason,
        message: str,
    ) -> None:
        self._by_type[type_] = Condition(type_, status, reason, message)

    def freeze(self) -> tuple[Condition, ...]:
        return tuple(self._by_type.values())


def tolerances_for_hpa(spec: HPASpec, config: ControllerConfig) -> Tolerances:
    """Mirrors ``tolerancesForHpa``: the cluster flag, overridden per direction by
    ``behavior.scaleUp/scaleDown.tolerance`` when the HPAConfigurableTolerance gate is on."""
    down = up = config.tolerance
    if spec.behavior is not None and config.configurable_tolerance:
        if spec.behavior.scale_down.tolerance is not None:
            down = spec.behavior.scale_down.tolerance
        if spec.behavior.scale_up.tolerance is not None:
            up = spec.behavior.scale_up.tolerance
    return Tolerances(scale_down=down, scale_up=up)


@dataclass(frozen=True)
class _MetricInputs:
    """What every computeStatusFor*Metric helper reads, gathered once per reconcile."""

    spec_replicas: int
    status_replicas: int
    pods: Sequence[PodInfo]
    metrics: MetricsSnapshot
    now: float
    tolerances: Tolerances
    cpu_initialization_period: float
    initial_readiness_delay: float


def _resource_metric(metric: MetricSpec, inp: _MetricInputs) -> MetricResult:
    """Mirrors ``computeStatusForResourceMetricGeneric`` (Resource and ContainerResource).

    Like upstream, an AverageValue target is looked at before a Utilization one.
    """
    target = metric.target
    if metric.type == MetricSourceType.RESOURCE:
        samples = inp.metrics.resource.get(metric.name)
        kind = ""
    else:
        assert metric.container is not None
        per_container = inp.metrics.container_resource.get(metric.container)
        samples = None if per_container is None else per_container.get(metric.name)
        kind = "container "
    if target.average_value is not None:
        if metric.type == MetricSourceType.CONTAINER_RESOURCE:
            raise MetricError("container resource AverageValue targets are not modelled")
        plain = get_raw_resource_replicas(
            inp.spec_replicas,
            target.average_value,
            metric.name,
            inp.pods,
            samples,
            now=inp.now,
            tolerances=inp.tolerances,
            cpu_initialization_period=inp.cpu_initialization_period,
            initial_readiness_delay=inp.initial_readiness_delay,
        )
        return MetricResult(
            metric, plain.replicas, f"{metric.name} resource", current_average_value=plain.usage
        )
    if target.average_utilization is None:
        raise MetricError(
            "invalid resource metric source: neither an average utilization target "
            "nor an average value (usage) target was set"
        )
    res = get_resource_replicas(
        inp.spec_replicas,
        target.average_utilization,
        metric.name,
        inp.pods,
        samples,
        container=metric.container,
        now=inp.now,
        tolerances=inp.tolerances,
        cpu_initialization_period=inp.cpu_initialization_period,
        initial_readiness_delay=inp.initial_readiness_delay,
    )
    return MetricResult(
        metric,
        res.replicas,
        f"{metric.name} {kind}resource utilization (percentage of request)",
        current_average_utilization=res.utilization,
        current_average_value=res.raw_average,
    )


def _pods_metric(metric: MetricSpec, inp: _MetricInputs) -> MetricResult:
    """Mirrors ``computeStatusForPodsMetric`` (GetMetricReplicas, AverageValue target)."""
    samples = inp.metrics.pods.get(metric.name)
    if samples is None:
        raise MetricError(f"unable to get metric {metric.name}: no metrics returned")
    if metric.target.average_value is None:
        raise MetricError("invalid pods metric source: no averageValue target")
    plain = calc_plain_metric_replicas(
        samples,
        inp.spec_replicas,
        metric.target.average_value,
        inp.pods,
        "",
        now=inp.now,
        tolerances=inp.tolerances,
        cpu_initialization_period=inp.cpu_initialization_period,
        initial_readiness_delay=inp.initial_readiness_delay,
    )
    return MetricResult(
        metric, plain.replicas, f"pods metric {metric.name}", current_average_value=plain.usage
    )


def _object_or_external_metric(metric: MetricSpec, inp: _MetricInputs) -> MetricResult:
    """Mirrors ``computeStatusForObjectMetric`` / ``computeStatusForExternalMetric``: a Value
    target against the ready pods, an AverageValue target per ``status.replicas``."""
    target = metric.target
    is_object = metric.type == MetricSourceType.OBJECT
    usage = (inp.metrics.object if is_object else inp.metrics.external).get(metric.name)
    label = (
        f"{metric.described_object or 'object'} metric {metric.name}"
        if is_object
        else f"external metric {metric.name}"
    )
    if usage is None:
        raise MetricError(f"unable to get {label}: no metrics returned")
    if target.type == MetricTargetType.VALUE and target.value is not None:
        value_fn = get_object_metric_replicas if is_object else get_external_metric_replicas
        plain = value_fn(inp.spec_replicas, target.value, usage, inp.pods, inp.tolerances)
        return MetricResult(metric, plain.replicas, label, current_value=plain.usage)
    if target.type == MetricTargetType.AVERAGE_VALUE and target.average_value is not None:
        per_pod_fn = (
            get_object_per_pod_metric_replicas
            if is_object
            else get_external_per_pod_metric_replicas
        )
        plain = per_pod_fn(inp.status_replicas, target.average_value, usage, inp.tolerances)
        return MetricResult(metric, plain.replicas, label, current_average_value=plain.usage)
    raise MetricError(
        f"invalid {'object' if is_object else 'external'} metric source: "
        "neither a value target nor an average value target was set"
    )


_HANDLERS: dict[MetricSourceType, Callable[[MetricSpec, _MetricInputs], MetricResult]] = {
    MetricSourceType.RESOURCE: _resource_metric,
    MetricSourceType.CONTAINER_RESOURCE: _resource_metric,
    MetricSourceType.PODS: _pods_metric,
    MetricSourceType.OBJECT: _object_or_external_metric,
    MetricSourceType.EXTERNAL: _object_or_external_metric,
}


def _compute_metric(metric: MetricSpec, inp: _MetricInputs) -> MetricResult:
    """Mirrors ``computeReplicasForMetric``: a proposal, or the error and the ScalingActive
    reason of this metric's type (FailedGet*Metric / InvalidMetricSourceType)."""
    handler = _HANDLERS.get(metric.type)
    if handler is None:
        return MetricResult(
            metric,
            None,
            metric.name,
            error=f'unknown metric source type "{metric.type}"',
            condition_reason=ScalingActiveReason.INVALID_METRIC_SOURCE_TYPE,
        )
    try:
        return handler(metric, inp)
    except MetricError as err:
        return MetricResult(
            metric, None, metric.name, error=str(err), condition_reason=_FAILED_REASON[metric.type]
        )


@dataclass(frozen=True)
class MetricsReplicas:
    """computeReplicasForMetrics' outcome: ``replicas`` is -1 when reconcile must stop."""

    replicas: int
    metric_name: str
    results: tuple[MetricResult, ...]
    error: str | None
    condition_reason: ScalingActiveReason
    condition_message: str

    @property
    def failed(self) -> bool:
        """True when the controller does not scale this pass (all failed, or partial + down)."""
        return self.replicas == -1


def compute_replicas_for_metrics(
    spec: HPASpec,
    *,
    spec_replicas: int,
    status_replicas: int,
    pods: Sequence[PodInfo],
    metrics: MetricsSnapshot,
    now: float,
    config: ControllerConfig,
) -> MetricsReplicas:
    """Mirrors ``computeReplicasForMetrics``: the maximum proposal over all metrics.

    If every metric fails, or some fail and the maximum is below ``spec_replicas`` (a
    scale-down), the result is -1 and ScalingActive takes the first failure's reason; a partial
    failure on a scale-up proceeds and only reports the error.
    """
    inputs = _MetricInputs(
        spec_replicas=spec_replicas,
        status_replicas=status_replicas,
        pods=pods,
        metrics=metrics,
        now=now,
        tolerances=tolerances_for_hpa(spec, config),
        cpu_initialization_period=config.cpu_initialization_period,
        initial_readiness_delay=config.initial_readiness_delay,
    )
    results = tuple(_compute_metric(m, inputs) for m in spec.metrics)
    replicas = 0
    metric_name = ""
    first_failure: MetricResult | None = None
    invalid = 0
    for res in results:
        if res.proposal is None:
            invalid += 1
            if first_failure is None:
                first_failure = res
            continue
        if replicas == 0 or res.proposal > replicas:
            replicas = res.proposal
            metric_name = res.description
    error = None
    if first_failure is not None:
        error = (
            f"invalid metrics ({invalid} invalid out of {len(results)}), "
            f"first error is: {first_failure.error}"
        )
    if not results:
        # Unreachable through the API (defaulting adds cpu 80%); upstream then sets an empty
        # condition and stops. Report it as an invalid metric source instead.
        return MetricsReplicas(
            -1,
            "",
            results,
            "no metrics specified",
            ScalingActiveReason.INVALID_METRIC_SOURCE_TYPE,
            "the HPA was unable to compute the replica count: no metrics specified",
        )
    if invalid >= len(results) or (invalid > 0 and replicas < spec_replicas):
        assert first_failure is not None and first_failure.condition_reason is not None
        return MetricsReplicas(
            -1,
            "",
            results,
            error,
            first_failure.condition_reason,
            f"the HPA was unable to compute the replica count: {first_failure.error}",
        )
    return MetricsReplicas(
        replicas,
        metric_name,
        results,
        error,
        ScalingActiveReason.VALID_METRIC_FOUND,
        f"the HPA was able to successfully calculate a replica count from {metric_name}",
    )


def reconcile(
    spec: HPASpec | HorizontalPodAutoscalerSpec,
    *,
    current_replicas: int,
    status_replicas: int,
    pods: Sequence[PodInfo],
    metrics: MetricsSnapshot,
    now: float,
    memory: HPAMemory,
    config: ControllerConfig | None = None,
) -> ReconcileResult:
    """One pass of ``reconcileAutoscaler`` after a successful read of the scale subresource.

    ``current_replicas`` is ``scale.spec.replicas``, ``status_replicas`` is
    ``scale.status.replicas`` (used only by AverageValue targets on Object/External metrics),
    ``pods`` are the pods the target's selector lists. ``memory`` is mutated: the initial
    recommendation, the stabilization history and, when rescaling with a behavior, the scale
    events. The scale update is assumed to succeed.
    """
    core = spec if isinstance(spec, HPASpec) else spec.to_core()
    cfg = config if config is not None else ControllerConfig()
    conditions = _Conditions()
    conditions.set(
        ConditionType.ABLE_TO_SCALE,
        "True",
        AbleToScaleReason.SUCCEEDED_GET_SCALE,
        "the HPA controller was able to get the target's current scale",
    )
    record_initial_recommendation(memory, current_replicas, now)

    min_replicas = core.min_replicas
    desired = 0
    rescale = True
    reason = ""
    metric_desired: int | None = None
    stabilized: int | None = None
    outcome: MetricsReplicas | None = None
    events: list[Event] = []

    if current_replicas == 0 and min_replicas != 0:
        desired = 0
        rescale = False
        reason = "scaling is disabled since the replica count of the target is zero"
        conditions.set(
            ConditionType.SCALING_ACTIVE, "False", ScalingActiveReason.SCALING_DISABLED, reason
        )
    elif current_replicas > core.max_replicas:
        reason = "Current number of replicas above Spec.MaxReplicas"
        desired = core.max_replicas
    elif current_replicas < min_replicas:
        reason = "Current number of replicas below Spec.MinReplicas"
        desired = min_replicas
    else:
        outcome = compute_replicas_for_metrics(
            core,
            spec_replicas=current_replicas,
            status_replicas=status_replicas,
            pods=pods,
            metrics=metrics,
            now=now,
            config=cfg,
        )
        # computeReplicasForMetric -> getUnableComputeReplicaCountCondition: each failing
        # metric records a Warning event with its FailedGet*Metric reason, on either path.
        events += [
            Event("Warning", str(m.condition_reason), m.error)
            for m in outcome.results
            if m.error is not None and m.condition_reason is not None
        ]
        active_status: Literal["True", "False"] = "False" if outcome.failed else "True"
        conditions.set(
            ConditionType.SCALING_ACTIVE,
            active_status,
            outcome.condition_reason,
            outcome.condition_message,
        )
        if outcome.failed:
            # horizontal.go reconcileAutoscaler: FailedComputeMetricsReplicas is recorded only
            # here, where `err != nil && metricDesiredReplicas == -1` stops the pass; a partial
            # failure that still scales up only returns the error (retErr), with no such event.
            message = outcome.error or "failed to compute desired number of replicas"
            return ReconcileResult(
                current_replicas=current_replicas,
                desired_replicas=current_replicas,
                rescale=False,
                reason=f"failed to compute desired number of replicas: {message}",
                metrics=outcome.results,
                conditions=conditions.freeze(),
                events=(*events, Event("Warning", "FailedComputeMetricsReplicas", message)),
                error=message,
            )
        metric_desired = outcome.replicas
        if metric_desired > desired:
            desired = metric_desired
        if desired > current_replicas:
            reason = f"{outcome.metric_name} above target"
        elif desired < current_replicas:
            reason = "All metrics below target"
        else:
            reason = "desired replica count matches current"
        if core.behavior is None:
            norm = normalize_desired_replicas(
                memory, current_replicas, desired, min_replicas, core.max_replicas, now, cfg
            )
        else:
            norm = normalize_desired_replicas_with_behaviors(
                memory,
                core.behavior,
                current_replicas,
                desired,
                min_replicas,
                core.max_replicas,
                now,
                cfg,
            )
        stab, limited = norm.stabilized, norm.limited
        conditions.set(
            ConditionType.ABLE_TO_SCALE, "True", stab.reason, STABILIZED_MESSAGES[stab.reason]
        )
        _set_limited(conditions, limited, stab.replicas)
        stabilized = stab.replicas
        desired = limited.replicas
        rescale = desired != current_replicas
        if not rescale and metric_desired != current_replicas:
            held_by = limited.reason if limited.replicas != stab.replicas else stab.reason
            reason = f"{reason}; held at {current_replicas} ({held_by})"

    if rescale:
        conditions.set(
            ConditionType.ABLE_TO_SCALE,
            "True",
            AbleToScaleReason.SUCCEEDED_RESCALE,
            f"the HPA controller was able to update the target scale to {desired}",
        )
        events.append(
            Event("Normal", "SuccessfulRescale", f"New size: {desired}; reason: {reason}")
        )
        store_scale_event(core.behavior, memory, current_replicas, desired, now)
        memory.last_scale_time = now
    else:
        desired = current_replicas
    return ReconcileResult(
        current_replicas=current_replicas,
        desired_replicas=desired,
        rescale=rescale,
        reason=reason if rescale else f"no rescale: {reason}",
        metric_desired=metric_desired,
        stabilized=stabilized,
        metrics=outcome.results if outcome is not None else (),
        conditions=conditions.freeze(),
        events=tuple(events),
        error=outcome.error if outcome is not None else None,
    )


def _set_limited(conditions: _Conditions, limited: Limited, stabilized: int) -> None:
    """ScalingLimited is True iff the rules changed the stabilized value (normalize*)."""
    status: Literal["True", "False"] = "False" if limited.replicas == stabilized else "True"
    conditions.set(ConditionType.SCALING_LIMITED, status, limited.reason, limited.message)
