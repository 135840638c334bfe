"""The Kubernetes Horizontal Pod Autoscaler (autoscaling/v2) as a pure decision core.

:func:`reconcile` is one ``reconcileAutoscaler`` pass of upstream
``pkg/controller/podautoscaler/horizontal.go`` on plain data: the HPA spec, the target's
``spec.replicas``/``status.replicas``, the listed pods, a metrics snapshot, ``now`` (float
seconds) and the controller's per-HPA memory (:class:`HPAMemory`, mutated in place). No clock,
no I/O, no SimPy; the simulator calls it every ``ControllerConfig.sync_period``.

Modelled, following upstream (replica_calculator.go, horizontal.go, metrics/utilization.go,
apis/autoscaling/v2 defaults.go):

- API defaulting: ``minReplicas`` 1, cpu Utilization 80% when no metrics are given, behavior
  rules from GenerateHPAScaleUpRules / GenerateHPAScaleDownRules (a user policy list replaces
  the default list), the nil scale-down window taken from the controller flag.
- The reconcile branches: scaling disabled at ``spec.replicas == 0`` (unless ``minReplicas``
  is 0), the short-circuit to max/min when the current count is out of range, the maximum over
  all metrics, and no scaling when every metric fails or when some fail and the rest would
  scale down.
- Resource and ContainerResource metrics with Utilization targets (groupPods' ignored, unready,
  missing pods and the cpu initialization / readiness-delay rules; integer-percent utilization;
  missing pods at ``max(100, target)%`` on scale-down and 0 on scale-up; unready pods at 0 on
  scale-up; the no-direction-flip guards) and AverageValue targets (calcPlainMetricReplicas).
- Pods metrics (AverageValue), Object and External metrics (Value, with the ready-pod count and
  scale-from-zero ``ceil(ratio)``; AverageValue per pod over ``status.replicas``).
- Tolerance with per-direction overrides (``behavior.*.tolerance``, HPAConfigurableTolerance).
- Legacy normalization (no behavior): downscale stabilization window (inclusive cutoff),
  scale-up cap ``max(2*current, 4)``. Behavior normalization: up/down stabilization windows
  (strict), Pods/Percent policies per period with Max/Min/Disabled selection, period start
  corrected by the scale events of both directions, event slots reused after the longest
  period. The initial recommendation recorded on a fresh controller (no scale-down on the
  first pass).
- Conditions AbleToScale / ScalingActive / ScalingLimited with upstream reasons, the
  SuccessfulRescale event, a FailedGet*Metric warning per failing metric, and
  FailedComputeMetricsReplicas only when a metric failure stops the pass (not when a partial
  failure still scales up), ``lastScaleTime``.

Not modelled:

- Selectors: the caller passes the pods the target's selector lists. InvalidSelector,
  AmbiguousSelector, SelectorRequired and metric label selectors are never produced/evaluated.
- Failures of the API server: reading or updating the scale subresource always succeeds
  (no FailedGetScale, FailedUpdateScale, FailedRescale), and status-update conflicts.
- Conditions from earlier passes: a result carries only the conditions set in this pass.
- The metrics pipeline itself (metrics-server scrape windows, custom/external adapters): the
  caller supplies samples with their timestamp and window. Per-container details are reduced
  to one sample per pod and container; a pod missing the named container in the metrics API is
  treated as a missing pod rather than an error. ContainerResource AverageValue is rejected.
- Go ``int32`` overflow (Python ints do not wrap); Object/External proposals are capped at
  MaxInt32 as upstream does.
- PodLevelResources and restartable init containers are the caller's business: ``requests``
  is already the pod-level request.
"""

from sim.hpa.controller import reconcile
from sim.hpa.spec import HorizontalPodAutoscalerSpec
from sim.hpa.types import (
    AbleToScaleReason,
    Condition,
    ConditionType,
    ControllerConfig,
    HPAMemory,
    MetricsSnapshot,
    PodInfo,
    PodMetric,
    ReconcileResult,
    ScalingActiveReason,
    ScalingLimitedReason,
)

__all__ = [
    "AbleToScaleReason",
    "Condition",
    "ConditionType",
    "ControllerConfig",
    "HPAMemory",
    "HorizontalPodAutoscalerSpec",
    "MetricsSnapshot",
    "PodInfo",
    "PodMetric",
    "ReconcileResult",
    "ScalingActiveReason",
    "ScalingLimitedReason",
    "reconcile",
]
