"""Plain data the HPA core works on: controller flags, pods, metrics, spec, memory, results.

Everything here is a frozen dataclass or a str enum, except :class:`HPAMemory`, which is the
controller's per-HPA memory (``recommendations``, ``scaleUpEvents``, ``scaleDownEvents`` maps in
upstream ``horizontal.go``) and is mutated by :func:`sim.hpa.reconcile` on purpose.

Units: CPU and every other quantity are integer milli-units (``Quantity.MilliValue()``), times
are float seconds on the simulator's clock, durations are float seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

MAX_INT32 = 2**31 - 1
MIN_INT32 = -(2**31)

PodPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]


# ---------------------------------------------------------------------------------------------
# Conditions (autoscaling/v2 HorizontalPodAutoscalerConditionType and the reasons horizontal.go
# writes). Str enums, so they compare equal to upstream's strings.
# ---------------------------------------------------------------------------------------------
class ConditionType(StrEnum):
    """The three HPA status condition types."""

    ABLE_TO_SCALE = "AbleToScale"
    SCALING_ACTIVE = "ScalingActive"
    SCALING_LIMITED = "ScalingLimited"


class AbleToScaleReason(StrEnum):
    """Reasons of the AbleToScale condition (horizontal.go reconcileAutoscaler, normalize*)."""

    SUCCEEDED_GET_SCALE = "SucceededGetScale"
    FAILED_GET_SCALE = "FailedGetScale"
    SUCCEEDED_RESCALE = "SucceededRescale"
    FAILED_UPDATE_SCALE = "FailedUpdateScale"
    READY_FOR_NEW_SCALE = "ReadyForNewScale"
    SCALE_UP_STABILIZED = "ScaleUpStabilized"
    SCALE_DOWN_STABILIZED = "ScaleDownStabilized"


class ScalingActiveReason(StrEnum):
    """Reasons of the ScalingActive condition (horizontal.go computeReplicasForMetric*)."""

    VALID_METRIC_FOUND = "ValidMetricFound"
    SCALING_DISABLED = "ScalingDisabled"
    INVALID_SELECTOR = "InvalidSelector"
    AMBIGUOUS_SELECTOR = "AmbiguousSelector"
    FAILED_GET_RESOURCE_METRIC = "FailedGetResourceMetric"
    FAILED_GET_CONTAINER_RESOURCE_METRIC = "FailedGetContainerResourceMetric"
    FAILED_GET_PODS_METRIC = "FailedGetPodsMetric"
    FAILED_GET_OBJECT_METRIC = "FailedGetObjectMetric"
    FAILED_GET_EXTERNAL_METRIC = "FailedGetExternalMetric"
    INVALID_METRIC_SOURCE_TYPE = "InvalidMetricSourceType"


class ScalingLimitedReason(StrEnum):
    """Reasons of the ScalingLimited condition (convertDesiredReplicasWith{Rules,BehaviorRate})."""

    DESIRED_WITHIN_RANGE = "DesiredWithinRange"
    TOO_MANY_REPLICAS = "TooManyReplicas"
    TOO_FEW_REPLICAS = "TooFewReplicas"
    SCALE_UP_LIMIT = "ScaleUpLimit"
    SCALE_DOWN_LIMIT = "ScaleDownLimit"


ConditionReason = AbleToScaleReason | ScalingActiveReason | ScalingLimitedReason

#: The condition type each reason belongs to.
REASON_TYPE: dict[ConditionReason, ConditionType] = {
    **{r: ConditionType.ABLE_TO_SCALE for r in AbleToScaleReason},
    **{r: ConditionType.SCALING_ACTIVE for r in ScalingActiveReason},
    **{r: ConditionType.SCALING_LIMITED for r in ScalingLimitedReason},
}


@dataclass(frozen=True)
class Condition:
    """One HPA status condition as ``setCondition`` writes it (status is "True"/"False")."""

    type: ConditionType
    status: Literal["True", "False"]
    reason: ConditionReason
    message: str


@dataclass(frozen=True)
class Event:
    """A Kubernetes event the controller would emit (``eventRecorder.Event*``)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


# ---------------------------------------------------------------------------------------------
# Controller flags
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ControllerConfig:
    """kube-controller-manager HPA flags, defaults from config/v1alpha1/defaults.go.

    ``scale_up_limit_factor``/``scale_up_limit_minimum`` are the package variables of
    horizontal.go used only when ``spec.behavior`` is nil (horizontal_test.go sets the factor
    to 8). ``configurable_tolerance`` is the HPAConfigurableTolerance feature gate: when on,
    ``behavior.scaleUp/scaleDown.tolerance`` override ``tolerance`` per direction.
    """

    sync_period: float = 15.0
    tolerance: float = 0.1
    downscale_stabilization_window: float = 300.0
    cpu_initialization_period: float = 300.0
    initial_readiness_delay: float = 30.0
    scale_up_limit_factor: float = 2.0
    scale_up_limit_minimum: float = 4.0
    configurable_tolerance: bool = True


@dataclass(frozen=True)
class Tolerances:
    """Per-direction tolerance (replica_calculator.go ``Tolerances``)."""

    scale_down: float
    scale_up: float

    def is_within(self, usage_ratio: float) -> bool:
        """Mirrors ``Tolerances.isWithin``: inclusive on both ends."""
        return (1.0 - self.scale_down) <= usage_ratio <= (1.0 + self.scale_up)


# ---------------------------------------------------------------------------------------------
# Observed world
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PodInfo:
    """What the HPA reads from one pod listed by the target's selector.

    ``ready`` is the status of the Ready condition, ``None`` when the pod has none.
    ``requests`` is resource name -> pod-level request in milli-units (the sum over containers
    and restartable init containers, as ``calculatePodRequests`` computes it); a resource that is
    absent means some container declares no request. ``container_requests`` is only needed for
    ContainerResource metrics: container name -> resource -> milli-units.
    """

    name: str
    phase: PodPhase = "Running"
    deleted: bool = False
    ready: bool | None = True
    start_time: float | None = None
    ready_transition_time: float | None = None
    requests: Mapping[str, int] = field(default_factory=dict)
    container_requests: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class PodMetric:
    """One pod's sample (metrics/interfaces.go ``PodMetric``): milli value, timestamp, window."""

    value: int
    timestamp: float = 0.0
    window: float = 0.0


@dataclass(frozen=True)
class MetricsSnapshot:
    """The metrics APIs as seen at one reconcile.

    A key that is absent means that API call failed for it:
    ``resource``: resource name -> pod name -> metric (metrics.k8s.io);
    ``container_resource``: container name -> resource name -> pod name -> metric;
    ``pods``: custom metric name -> pod name -> metric (custom.metrics.k8s.io, per pod);
    ``object``: metric name -> milli value of the described object;
    ``external``: metric name -> milli value (the sum over the series, as upstream sums them).
    """

    resource: Mapping[str, Mapping[str, PodMetric]] = field(default_factory=dict)
    pods: Mapping[str, Mapping[str, PodMetric]] = field(default_factory=dict)
    object: Mapping[str, int] = field(default_factory=dict)
    external: Mapping[str, int] = field(default_factory=dict)
    container_resource: Mapping[str, Mapping[str, Mapping[str, PodMetric]]] = field(
        default_factory=dict
    )


# ---------------------------------------------------------------------------------------------
# Internal (post-defaulting) spec
# ---------------------------------------------------------------------------------------------
class MetricSourceType(StrEnum):
    """autoscaling/v2 MetricSourceType."""

    RESOURCE = "Resource"
    CONTAINER_RESOURCE = "ContainerResource"
    PODS = "Pods"
    OBJECT = "Object"
    EXTERNAL = "External"


class MetricTargetType(StrEnum):
    """autoscaling/v2 MetricTargetType."""

    UTILIZATION = "Utilization"
    VALUE = "Value"
    AVERAGE_VALUE = "AverageValue"


class PolicyType(StrEnum):
    """autoscaling/v2 HPAScalingPolicyType."""

    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(StrEnum):
    """autoscaling/v2 ScalingPolicySelect."""

    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


@dataclass(frozen=True)
class MetricTarget:
    """A metric target; ``average_value``/``value`` in milli-units."""

    type: MetricTargetType
    average_utilization: int | None = None
    average_value: int | None = None
    value: int | None = None


@dataclass(frozen=True)
class MetricSpec:
    """One entry of ``spec.metrics``, flattened.

    ``name`` is the resource name for Resource/ContainerResource and ``metric.name`` for the
    others; ``container`` is set for ContainerResource, ``described_object`` ("Kind/name") for
    Object.
    """

    type: MetricSourceType
    name: str
    target: MetricTarget
    container: str | None = None
    described_object: str | None = None


@dataclass(frozen=True)
class ScalingPolicy:
    """autoscaling/v2 HPAScalingPolicy."""

    type: PolicyType
    value: int
    period_seconds: int


@dataclass(frozen=True)
class ScalingRules:
    """autoscaling/v2 HPAScalingRules after GenerateHPAScale{Up,Down}Rules.

    ``stabilization_window_seconds`` is None only for scaleDown left unset by the user; the
    controller fills it from its flag (maybeInitScaleDownStabilizationWindow).
    """

    stabilization_window_seconds: int | None
    select_policy: SelectPolicy
    policies: tuple[ScalingPolicy, ...]
    tolerance: float | None = None


#: GenerateHPAScaleUpRules defaults: window 0, Max, [Pods 4 / 15s, Percent 100 / 15s].
DEFAULT_SCALE_UP_RULES = ScalingRules(
    stabilization_window_seconds=0,
    select_policy=SelectPolicy.MAX,
    policies=(
        ScalingPolicy(PolicyType.PODS, 4, 15),
        ScalingPolicy(PolicyType.PERCENT, 100, 15),
    ),
)
#: GenerateHPAScaleDownRules defaults: window nil (-> controller flag), Max, [Percent 100 / 15s].
DEFAULT_SCALE_DOWN_RULES = ScalingRules(
    stabilization_window_seconds=None,
    select_policy=SelectPolicy.MAX,
    policies=(ScalingPolicy(PolicyType.PERCENT, 100, 15),),
)


@dataclass(frozen=True)
class Behavior:
    """autoscaling/v2 HorizontalPodAutoscalerBehavior with both directions defaulted."""

    scale_up: ScalingRules = DEFAULT_SCALE_UP_RULES
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN_RULES


@dataclass(frozen=True)
class HPASpec:
    """The spec the core runs on: API-defaulted, quantities in milli-units."""

    max_replicas: int
    min_replicas: int = 1
    metrics: tuple[MetricSpec, ...] = ()
    behavior: Behavior | None = None


# ---------------------------------------------------------------------------------------------
# Controller memory
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimestampedRecommendation:
    """horizontal.go ``timestampedRecommendation``."""

    recommendation: int
    timestamp: float


@dataclass(frozen=True)
class ScaleEvent:
    """horizontal.go ``timestampedScaleEvent``; ``replica_change`` is always >= 0."""

    replica_change: int
    timestamp: float
    outdated: bool = False


@dataclass
class HPAMemory:
    """What the controller keeps per HPA key between reconciles (mutated by reconcile).

    ``recommendations is None`` is a fresh controller (no map entry): the next reconcile first
    records ``{currentReplicas, now}`` (recordInitialRecommendation). ``[]`` is an existing but
    empty history, which does not get that initial entry.
    """

    recommendations: list[TimestampedRecommendation] | None = None
    scale_up_events: list[ScaleEvent] = field(default_factory=list)
    scale_down_events: list[ScaleEvent] = field(default_factory=list)
    last_scale_time: float | None = None


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricResult:
    """One metric's outcome in a reconcile (a MetricStatus plus the proposal or the error).

    ``current_average_utilization`` is the integer percentage of request (Utilization targets);
    ``current_average_value``/``current_value`` are milli-units.
    """

    spec: MetricSpec
    proposal: int | None
    description: str
    current_average_utilization: int | None = None
    current_average_value: int | None = None
    current_value: int | None = None
    error: str | None = None
    condition_reason: ScalingActiveReason | None = None


@dataclass(frozen=True)
class ReconcileResult:
    """What one reconcileAutoscaler pass decided.

    ``desired_replicas`` is what the controller writes to ``scale.spec.replicas`` (equal to
    ``current_replicas`` when it does not rescale). ``metric_desired`` is the prenormalized
    metric proposal (None when metrics were not evaluated or all failed), ``stabilized`` the
    value after stabilization. ``conditions`` are the ones set during this pass, one per type,
    in the order upstream first sets them.
    """

    current_replicas: int
    desired_replicas: int
    rescale: bool
    reason: str
    metric_desired: int | None = None
    stabilized: int | None = None
    metrics: tuple[MetricResult, ...] = ()
    conditions: tuple[Condition, ...] = ()
    events: tuple[Event, ...] = ()
    error: str | None = None

    def condition(self, type_: ConditionType | str) -> Condition | None:
        """The condition of that type set in this pass, if any."""
        for cond in self.conditions:
            if cond.type == type_:
                return cond
        return None

    def utilization(self, resource: str = "cpu") -> int | None:
        """Current average utilization (% of request) of the first Utilization metric on
        ``resource``, or None if there is none or it failed."""
        for m in self.metrics:
            if (
                m.spec.type in (MetricSourceType.RESOURCE, MetricSourceType.CONTAINER_RESOURCE)
                and m.spec.name == resource
                and m.current_average_utilization is not None
            ):
                return m.current_average_utilization
        return None
