"""Hypothesis strategies shared by scalelab's tests (one module, imported as tests.strategies).

HPA section: API-shaped HPA specs (camelCase dicts and validated models), core behaviors,
pod sets with usage and readiness, recommendation histories, scale events, controller memory.
All times are relative to :data:`NOW`, a fixed instant (never the wall clock).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from sim.hpa import HorizontalPodAutoscalerSpec, HPAMemory, PodInfo, PodMetric
from sim.hpa.types import (
    Behavior,
    PolicyType,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
    TimestampedRecommendation,
)

__all__ = [
    "NOW",
    "PodSet",
    "api_behaviors",
    "api_hpa_specs",
    "api_scaling_rules",
    "core_behaviors",
    "core_scaling_rules",
    "healthy_pod_sets",
    "hpa_memories",
    "hpa_specs",
    "pod_sets",
    "recommendation_histories",
    "scale_event_lists",
]

#: The evaluation instant of every generated input.
NOW = 100_000.0

# ------------------------------------------------------------------------------------ HPA spec
_periods = st.sampled_from([15, 30, 60, 120, 300])


def api_scaling_policies() -> st.SearchStrategy[dict[str, Any]]:
    """One ``HPAScalingPolicy`` as written in a manifest."""
    return st.fixed_dictionaries(
        {
            "type": st.sampled_from(["Pods", "Percent"]),
            "value": st.integers(1, 300),
            "periodSeconds": _periods,
        }
    )


def api_scaling_rules() -> st.SearchStrategy[dict[str, Any]]:
    """``scaleUp``/``scaleDown`` with any subset of fields set (the rest defaulted)."""
    return st.fixed_dictionaries(
        {},
        optional={
            "stabilizationWindowSeconds": st.sampled_from([0, 15, 60, 300]),
            "selectPolicy": st.sampled_from(["Max", "Min", "Disabled"]),
            "policies": st.lists(api_scaling_policies(), min_size=1, max_size=3),
            "tolerance": st.sampled_from(["0", "0.05", "100m", "0.2", "0.5"]),
        },
    )


def api_behaviors() -> st.SearchStrategy[dict[str, Any]]:
    """``spec.behavior`` as written in a manifest."""
    return st.fixed_dictionaries(
        {}, optional={"scaleUp": api_scaling_rules(), "scaleDown": api_scaling_rules()}
    )


def _cpu_metric(target: int) -> dict[str, Any]:
    return {
        "type": "Resource",
        "resource": {
            "name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": target},
        },
    }


@st.composite
def api_hpa_specs(
    draw: st.DrawFn, behavior: bool | None = None, max_max: int = 20
) -> dict[str, Any]:
    """An HPA ``spec`` dict with one cpu Utilization metric; ``behavior`` True/False forces
    a behavior or none, None lets hypothesis choose."""
    min_replicas = draw(st.integers(0, 5))
    max_replicas = draw(st.integers(max(min_replicas, 1), max_max))
    spec: dict[str, Any] = {
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "metrics": [_cpu_metric(draw(st.integers(10, 150)))],
    }
    with_behavior = draw(st.booleans()) if behavior is None else behavior
    if with_behavior:
        spec["behavior"] = draw(api_behaviors())
    return spec


def hpa_specs(behavior: bool | None = None, max_max: int = 20) -> st.SearchStrategy[Any]:
    """Validated :class:`HorizontalPodAutoscalerSpec` models."""
    return api_hpa_specs(behavior, max_max).map(HorizontalPodAutoscalerSpec.model_validate)


def core_scaling_rules(window: bool = True) -> st.SearchStrategy[ScalingRules]:
    """Post-defaulting rules for one direction, straight into the core's dataclass."""
    return st.builds(
        ScalingRules,
        stabilization_window_seconds=st.sampled_from([0, 15, 60, 300]) if window else st.none(),
        select_policy=st.sampled_from(list(SelectPolicy)),
        policies=st.lists(
            st.builds(
                ScalingPolicy,
                type=st.sampled_from(list(PolicyType)),
                value=st.one_of(st.integers(1, 10), st.integers(1, 300)),
                period_seconds=_periods,
            ),
            min_size=1,
            max_size=3,
        ).map(tuple),
    )


def core_behaviors() -> st.SearchStrategy[Behavior]:
    """Post-defaulting behaviors (scale-down window sometimes nil, as the API leaves it)."""
    return st.builds(
        Behavior,
        scale_up=core_scaling_rules(),
        scale_down=st.one_of(core_scaling_rules(), core_scaling_rules(window=False)),
    )


# ------------------------------------------------------------------------------------ pods
@dataclass(frozen=True)
class PodSet:
    """Pods as the selector lists them plus their cpu samples (pod name -> metric)."""

    pods: tuple[PodInfo, ...]
    metrics: dict[str, PodMetric]


@st.composite
def _pod_with_metric(draw: st.DrawFn, healthy: bool) -> tuple[PodInfo, PodMetric | None]:
    request = draw(st.integers(1, 40)) * 100
    if healthy:
        # Running, Ready, started long ago: groupPods counts it ready whatever the resource.
        pod = PodInfo(
            name="",
            phase="Running",
            ready=True,
            start_time=NOW - 10_000.0,
            ready_transition_time=NOW - 9_000.0,
            requests={"cpu": request, "memory": request * 1_000_000},
        )
        usage = draw(st.integers(0, 8000))
        return pod, PodMetric(usage, NOW - draw(st.sampled_from([0.0, 5.0, 15.0])), 30.0)
    start_age = draw(
        st.one_of(
            st.none(), st.sampled_from([0.0, 20.0, 60.0, 200.0, 300.0, 300.0, 330.0, 400.0, 5000.0])
        )
    )
    start = None if start_age is None else NOW - start_age
    ready = draw(st.sampled_from([True, True, True, False, None]))
    transition = None
    if start is not None and ready is not None:
        transition = start + draw(st.sampled_from([0.0, 5.0, 30.0, 60.0]))
        transition = min(transition, NOW)
    pod = PodInfo(
        name="",
        phase=draw(st.sampled_from(["Running"] * 6 + ["Pending", "Failed", "Succeeded"])),
        deleted=draw(st.integers(0, 9)) == 0,
        ready=ready,
        start_time=start,
        ready_transition_time=transition,
        requests={"cpu": request, "memory": request * 1_000_000},
    )
    if draw(st.integers(0, 5)) == 0:
        return pod, None
    usage = draw(st.integers(0, 8000))
    return pod, PodMetric(usage, NOW - draw(st.sampled_from([0.0, 10.0, 30.0, 90.0])), 30.0)


def _named(items: list[tuple[PodInfo, PodMetric | None]]) -> PodSet:
    pods = []
    metrics = {}
    for i, (pod, metric) in enumerate(items):
        name = f"pod-{i}"
        pods.append(
            PodInfo(
                name=name,
                phase=pod.phase,
                deleted=pod.deleted,
                ready=pod.ready,
                start_time=pod.start_time,
                ready_transition_time=pod.ready_transition_time,
                requests=pod.requests,
            )
        )
        if metric is not None:
            metrics[name] = metric
    return PodSet(tuple(pods), metrics)


def pod_sets(min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[PodSet]:
    """Pods in every state groupPods distinguishes: deleted, Failed, Pending, not Ready,
    initializing with stale samples, never ready, missing metrics, and healthy."""
    return st.lists(
        st.one_of(_pod_with_metric(healthy=False), _pod_with_metric(healthy=True)),
        min_size=min_size,
        max_size=max_size,
    ).map(_named)


def healthy_pod_sets(min_size: int = 1, max_size: int = 12) -> st.SearchStrategy[PodSet]:
    """Running, long-Ready pods that all report a fresh sample."""
    return st.lists(_pod_with_metric(healthy=True), min_size=min_size, max_size=max_size).map(
        _named
    )


# ------------------------------------------------------------------------------------ memory
_ages = st.one_of(
    st.sampled_from([0.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0]),  # window edges on purpose
    st.floats(0.0, 900.0, allow_nan=False),
)


def recommendation_histories(
    max_replicas: int = 30, max_size: int = 8
) -> st.SearchStrategy[list[TimestampedRecommendation]]:
    """Past recommendations, some exactly on typical window boundaries."""
    return st.lists(
        st.builds(
            TimestampedRecommendation,
            recommendation=st.integers(0, max_replicas),
            timestamp=_ages.map(lambda age: NOW - age),
        ),
        max_size=max_size,
    )


def scale_event_lists(
    max_change: int = 10, max_size: int = 5
) -> st.SearchStrategy[list[ScaleEvent]]:
    """Past scale events of one direction, some exactly one policy period old."""
    return st.lists(
        st.builds(
            ScaleEvent,
            replica_change=st.integers(0, max_change),
            timestamp=_ages.map(lambda age: NOW - age),
            outdated=st.booleans(),
        ),
        max_size=max_size,
    )


def hpa_memories(max_replicas: int = 30) -> st.SearchStrategy[HPAMemory]:
    """Controller memory: fresh (nil history), empty, or with recommendations and events."""
    return st.builds(
        HPAMemory,
        recommendations=st.one_of(st.none(), recommendation_histories(max_replicas)),
        scale_up_events=scale_event_lists(),
        scale_down_events=scale_event_lists(),
    )
