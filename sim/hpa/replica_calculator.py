"""Per-metric replica proposals: a transcription of upstream ``replica_calculator.go``.

Each function mirrors one upstream function and raises :class:`MetricError` where upstream
returns an error; the error texts keep upstream's wording so they can be matched in tests.
Integer arithmetic follows Go: ``int64`` division truncates toward zero, ``int32(float)``
truncates, and the Object/External paths cap at MaxInt32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sim.hpa.types import MAX_INT32, PodInfo, PodMetric, Tolerances

__all__ = [
    "GroupedPods",
    "MetricError",
    "PlainReplicas",
    "ResourceReplicas",
    "calc_plain_metric_replicas",
    "calculate_pod_requests",
    "get_external_metric_replicas",
    "get_external_per_pod_metric_replicas",
    "get_metric_usage_ratio",
    "get_object_metric_replicas",
    "get_object_per_pod_metric_replicas",
    "get_raw_resource_replicas",
    "get_resource_replicas",
    "get_resource_utilization_ratio",
    "group_pods",
]

CPU = "cpu"


class MetricError(Exception):
    """A metric could not produce a proposal (upstream returns ``err != nil``)."""


@dataclass(frozen=True)
class GroupedPods:
    """Result of :func:`group_pods`: the ready count and the three excluded name sets."""

    ready_pod_count: int
    unready: frozenset[str]
    missing: frozenset[str]
    ignored: frozenset[str]


@dataclass(frozen=True)
class ResourceReplicas:
    """GetResourceReplicas' return: proposal, integer utilization (%), raw average (milli)."""

    replicas: int
    utilization: int
    raw_average: int


@dataclass(frozen=True)
class PlainReplicas:
    """Proposal and the usage upstream reports alongside it (milli-units)."""

    replicas: int
    usage: int


def _go_div(a: int, b: int) -> int:
    """Go integer division: truncates toward zero (Python's // floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _ceil_int32(x: float) -> int:
    """``int32(math.Ceil(x))`` capped at MaxInt32, as the Object/External paths do."""
    if math.isnan(x):
        return 0
    if x >= MAX_INT32:
        return MAX_INT32
    return math.ceil(x)


def group_pods(
    pods: Sequence[PodInfo],
    metrics: Mapping[str, PodMetric],
    resource: str,
    cpu_initialization_period: float,
    initial_readiness_delay: float,
    now: float,
) -> GroupedPods:
    """Mirrors replica_calculator.go ``groupPods``: one pass, first matching rule wins.

    Deleted or Failed pods are ignored; Pending pods are unready; pods without a metric are
    missing; for cpu only, a pod is unready if it has no Ready condition or start time, if it is
    still initializing and (not Ready or its sample predates one window after the last readiness
    transition), or if it never became ready. All time comparisons are strict (Go After/Before).
    """
    ready = 0
    unready: set[str] = set()
    missing: set[str] = set()
    ignored: set[str] = set()
    for pod in pods:
        if pod.deleted or pod.phase == "Failed":
            ignored.add(pod.name)
            continue
        if pod.phase == "Pending":
            unready.add(pod.name)
            continue
        metric = metrics.get(pod.name)
        if metric is None:
            missing.add(pod.name)
            continue
        if resource == CPU:
            if pod.ready is None or pod.start_time is None:
                is_unready = True
            else:
                # A Ready condition without a transition time is Go's zero time: far past.
                transition = (
                    pod.ready_transition_time
                    if pod.ready_transition_time is not None
                    else -math.inf
                )
                if pod.start_time + cpu_initialization_period > now:
                    is_unready = (not pod.ready) or metric.timestamp < transition + metric.window
                else:
                    is_unready = (not pod.ready) and (
                        pod.start_time + initial_readiness_delay > transition
                    )
            if is_unready:
                unready.add(pod.name)
                continue
        ready += 1
    return GroupedPods(ready, frozenset(unready), frozenset(missing), frozenset(ignored))


def calculate_pod_requests(
    pods: Sequence[PodInfo], resource: str, container: str | None = None
) -> dict[str, int]:
    """Mirrors ``calculatePodRequests``: the request of every listed pod, ignored ones included.

    Without ``container`` this is the pod-level request; with it, only that container counts,
    and a listed pod without that container is an error, as upstream's
    ``calculatePodRequestsFromContainers`` ("container %s not found in Pod %s").
    """
    requests: dict[str, int] = {}
    for pod in pods:
        if container is None:
            if resource not in pod.requests:
                raise MetricError(f"missing request for {resource} in Pod {pod.name}")
            requests[pod.name] = pod.requests[resource]
        else:
            per_container = pod.container_requests.get(container)
            if per_container is None:
                # replica_calculator.go calculatePodRequestsFromContainers: `if container != ""
                # { return 0, fmt.Errorf("container %s not found in Pod %s", ...) }`
                raise MetricError(f"container {container} not found in Pod {pod.name}")
            if resource not in per_container:
                raise MetricError(
                    f"missing request for {resource} in container {container} of Pod {pod.name}"
                )
            requests[pod.name] = per_container[resource]
    return requests


def get_resource_utilization_ratio(
    metrics: Mapping[str, int], requests: Mapping[str, int], target_utilization: int
) -> tuple[float, int, int]:
    """Mirrors metrics/utilization.go ``GetResourceUtilizationRatio``.

    Returns (ratio, utilization %, raw average milli). Metrics of pods without a request are
    skipped; the percentage truncates to an integer before the ratio is taken.
    """
    metrics_total = 0
    requests_total = 0
    entries = 0
    for pod_name, value in metrics.items():
        request = requests.get(pod_name)
        if request is None:
            continue
        metrics_total += value
        requests_total += request
        entries += 1
    if requests_total == 0:
        raise MetricError("no metrics returned matched known pods")
    utilization = _go_div(metrics_total * 100, requests_total)
    return utilization / target_utilization, utilization, _go_div(metrics_total, entries)


def get_metric_usage_ratio(metrics: Mapping[str, int], target_usage: int) -> tuple[float, int]:
    """Mirrors metrics/utilization.go ``GetMetricUsageRatio``: (ratio, average milli)."""
    current = _go_div(sum(metrics.values()), len(metrics))
    return current / target_usage, current


def _resource_metrics(
    metrics: Mapping[str, PodMetric] | None, resource: str
) -> dict[str, PodMetric]:
    """The metrics client's checks: an API failure or an empty answer are errors."""
    if metrics is None:
        raise MetricError(
            f"unable to get metrics for resource {resource}: "
            "the resource metrics API returned an error"
        )
    if not metrics:
        raise MetricError(
            f"unable to get metrics for resource {resource}: "
            "no metrics returned from resource metrics API"
        )
    return dict(metrics)


def _usable_metrics(
    pods: Sequence[PodInfo],
    metrics: Mapping[str, PodMetric],
    resource: str,
    cpu_initialization_period: float,
    initial_readiness_delay: float,
    now: float,
) -> tuple[GroupedPods, dict[str, int]]:
    """groupPods, then removeMetricsForPods(ignored, unready): the opening both
    GetResourceReplicas and calcPlainMetricReplicas share upstream."""
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    grouped = group_pods(
        pods, metrics, resource, cpu_initialization_period, initial_readiness_delay, now
    )
    values = {
        name: m.value
        for name, m in metrics.items()
        if name not in grouped.ignored and name not in grouped.unready
    }
    if not values:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
    return grouped, values


def get_resource_replicas(
    current_replicas: int,
    target_utilization: int,
    resource: str,
    pods: Sequence[PodInfo],
    metrics: Mapping[str, PodMetric] | None,
    *,
    now: float,
    tolerances: Tolerances,
    cpu_initialization_period: float,
    initial_readiness_delay: float,
    container: str | None = None,
) -> ResourceReplicas:
    """Mirrors ``GetResourceReplicas`` (Resource / ContainerResource, Utilization target).

    Fast path (no missing pods, no unready pods on a scale-up): ``ceil(ratio * readyPodCount)``
    unless within tolerance. Slow path: fill missing pods with ``max(100, target)%`` of their
    request on a scale-down or 0 on a scale-up, unready pods with 0 on a scale-up, recompute,
    and keep ``current_replicas`` if within tolerance or if the direction would flip.
    """
    samples = _resource_metrics(metrics, resource)
    grouped, values = _usable_metrics(
        pods, samples, resource, cpu_initialization_period, initial_readiness_delay, now
    )
    requests = calculate_pod_requests(pods, resource, container)

    ratio, utilization, raw = get_resource_utilization_ratio(values, requests, target_utilization)

    scale_up_with_unready = bool(grouped.unready) and ratio > 1.0
    if not scale_up_with_unready and not grouped.missing:
        if tolerances.is_within(ratio):
            return ResourceReplicas(current_replicas, utilization, raw)
        return ResourceReplicas(math.ceil(ratio * grouped.ready_pod_count), utilization, raw)

    if grouped.missing:
        if ratio < 1.0:
            fallback = max(100, target_utilization)
            for name in grouped.missing:
                values[name] = _go_div(requests[name] * fallback, 100)
        elif ratio > 1.0:
            for name in grouped.missing:
                values[name] = 0
    if scale_up_with_unready:
        for name in grouped.unready:
            values[name] = 0

    new_ratio, _, _ = get_resource_utilization_ratio(values, requests, target_utilization)
    if (
        tolerances.is_within(new_ratio)
        or (ratio < 1.0 and new_ratio > 1.0)
        or (ratio > 1.0 and new_ratio < 1.0)
    ):
        return ResourceReplicas(current_replicas, utilization, raw)
    new_replicas = math.ceil(new_ratio * len(values))
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (
        new_ratio > 1.0 and new_replicas < current_replicas
    ):
        return ResourceReplicas(current_replicas, utilization, raw)
    return ResourceReplicas(new_replicas, utilization, raw)


def calc_plain_metric_replicas(
    metrics: Mapping[str, PodMetric],
    current_replicas: int,
    target_usage: int,
    pods: Sequence[PodInfo],
    resource: str,
    *,
    now: float,
    tolerances: Tolerances,
    cpu_initialization_period: float,
    initial_readiness_delay: float,
) -> PlainReplicas:
    """Mirrors ``calcPlainMetricReplicas`` (AverageValue targets on per-pod metrics).

    Same shape as :func:`get_resource_replicas` on raw averages: missing pods count as exactly
    the target on a scale-down. ``resource`` is "" for Pods metrics, so readiness is not checked.
    """
    grouped, values = _usable_metrics(
        pods, metrics, resource, cpu_initialization_period, initial_readiness_delay, now
    )

    ratio, usage = get_metric_usage_ratio(values, target_usage)
    scale_up_with_unready = bool(grouped.unready) and ratio > 1.0
    if not scale_up_with_unready and not grouped.missing:
        if tolerances.is_within(ratio):
            return PlainReplicas(current_replicas, usage)
        return PlainReplicas(math.ceil(ratio * grouped.ready_pod_count), usage)

    if grouped.missing:
        if ratio < 1.0:
            for name in grouped.missing:
                values[name] = target_usage
        elif ratio > 1.0:
            for name in grouped.missing:
                values[name] = 0
    if scale_up_with_unready:
        for name in grouped.unready:
            values[name] = 0

    new_ratio, _ = get_metric_usage_ratio(values, target_usage)
    if (
        tolerances.is_within(new_ratio)
        or (ratio < 1.0 and new_ratio > 1.0)
        or (ratio > 1.0 and new_ratio < 1.0)
    ):
        return PlainReplicas(current_replicas, usage)
    new_replicas = math.ceil(new_ratio * len(values))
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (
        new_ratio > 1.0 and new_replicas < current_replicas
    ):
        return PlainReplicas(current_replicas, usage)
    return PlainReplicas(new_replicas, usage)


def get_raw_resource_replicas(
    current_replicas: int,
    target_usage: int,
    resource: str,
    pods: Sequence[PodInfo],
    metrics: Mapping[str, PodMetric] | None,
    *,
    now: float,
    tolerances: Tolerances,
    cpu_initialization_period: float,
    initial_readiness_delay: float,
) -> PlainReplicas:
    """Mirrors ``GetRawResourceReplicas`` (Resource, AverageValue target)."""
    samples = _resource_metrics(metrics, resource)
    return calc_plain_metric_replicas(
        samples,
        current_replicas,
        target_usage,
        pods,
        resource,
        now=now,
        tolerances=tolerances,
        cpu_initialization_period=cpu_initialization_period,
        initial_readiness_delay=initial_readiness_delay,
    )


def _ready_pods_count(pods: Sequence[PodInfo]) -> int:
    """Mirrors ``getReadyPodsCount``: Running and Ready, over every listed pod."""
    if not pods:
        raise MetricError(
            "unable to calculate ready pods: "
            "no pods returned by selector while calculating replica count"
        )
    return sum(1 for p in pods if p.phase == "Running" and p.ready is True)


def _usage_ratio_replica_count(
    current_replicas: int, usage_ratio: float, pods: Sequence[PodInfo], tolerances: Tolerances
) -> int:
    """Mirrors ``getUsageRatioReplicaCount``; at current 0 it is ``ceil(ratio)`` (scale to zero)."""
    if current_replicas != 0:
        if tolerances.is_within(usage_ratio):
            return current_replicas
        return _ceil_int32(usage_ratio * _ready_pods_count(pods))
    return _ceil_int32(usage_ratio)


def get_object_metric_replicas(
    current_replicas: int,
    target_value: int,
    usage: int,
    pods: Sequence[PodInfo],
    tolerances: Tolerances,
) -> PlainReplicas:
    """Mirrors ``GetObjectMetricReplicas`` (Object, Value target); ``usage`` in milli."""
    replicas = _usage_ratio_replica_count(current_replicas, usage / target_value, pods, tolerances)
    return PlainReplicas(replicas, usage)


def get_external_metric_replicas(
    current_replicas: int,
    target_value: int,
    usage: int,
    pods: Sequence[PodInfo],
    tolerances: Tolerances,
) -> PlainReplicas:
    """Mirrors ``GetExternalMetricReplicas`` (External, Value target); usage is the series sum."""
    replicas = _usage_ratio_replica_count(current_replicas, usage / target_value, pods, tolerances)
    return PlainReplicas(replicas, usage)


def _per_pod_replicas(
    status_replicas: int, target_per_pod: int, usage: int, tolerances: Tolerances
) -> PlainReplicas:
    """Shared body of ``Get{Object,External}PerPodMetricReplicas``.

    With ``status_replicas == 0`` Go divides by zero in float64 (ratio +Inf or NaN, never within
    tolerance); the reported per-pod usage is then the total, since there is nothing to divide by.
    """
    if status_replicas == 0:
        ratio = math.inf if usage != 0 else math.nan
    else:
        ratio = usage / (target_per_pod * status_replicas)
    replicas = status_replicas
    if not tolerances.is_within(ratio):
        replicas = _ceil_int32(usage / target_per_pod)
    per_pod = usage if status_replicas == 0 else math.ceil(usage / status_replicas)
    return PlainReplicas(replicas, per_pod)


def get_object_per_pod_metric_replicas(
    status_replicas: int, target_average: int, usage: int, tolerances: Tolerances
) -> PlainReplicas:
    """Mirrors ``GetObjectPerPodMetricReplicas`` (Object, AverageValue target)."""
    return _per_pod_replicas(status_replicas, target_average, usage, tolerances)


def get_external_per_pod_metric_replicas(
    status_replicas: int, target_per_pod: int, usage: int, tolerances: Tolerances
) -> PlainReplicas:
    """Mirrors ``GetExternalPerPodMetricReplicas`` (External, AverageValue target)."""
    return _per_pod_replicas(status_replicas, target_per_pod, usage, tolerances)
