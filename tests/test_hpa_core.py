"""Hand-computed HPA examples for what the upstream case files do not cover: Pods, Object,
External and ContainerResource metrics, memory targets, several metrics at once, per-direction
tolerance, and the spec model's validation and defaulting."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from sim.hpa import (
    ConditionType,
    ControllerConfig,
    HorizontalPodAutoscalerSpec,
    HPAMemory,
    MetricsSnapshot,
    PodInfo,
    PodMetric,
    ReconcileResult,
    ScalingActiveReason,
    ScalingLimitedReason,
    reconcile,
)
from sim.hpa.normalize import convert_desired_replicas_with_behavior_rate
from sim.hpa.replica_calculator import (
    calc_plain_metric_replicas,
    get_object_metric_replicas,
    group_pods,
)
from sim.hpa.types import (
    Behavior,
    PolicyType,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
    TimestampedRecommendation,
    Tolerances,
)
from sim.units import milli

NOW = 10_000.0
GI = 2**30


def ready_pod(name: str, **requests: int) -> PodInfo:
    """A Running pod, Ready for an hour: counted ready by every rule."""
    return PodInfo(name, start_time=NOW - 3600, ready_transition_time=NOW - 3500, requests=requests)


def sample(value: int) -> PodMetric:
    return PodMetric(value, NOW - 5, 30.0)


def run(
    spec: dict[str, Any],
    current: int,
    pods: list[PodInfo],
    metrics: MetricsSnapshot,
    status: int | None = None,
    config: ControllerConfig | None = None,
) -> ReconcileResult:
    return reconcile(
        HorizontalPodAutoscalerSpec.model_validate(spec),
        current_replicas=current,
        status_replicas=current if status is None else status,
        pods=pods,
        metrics=metrics,
        now=NOW,
        memory=HPAMemory(recommendations=[]),
        config=config,
    )


def pods_metric(name: str, average: str) -> dict[str, Any]:
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": name},
            "target": {"type": "AverageValue", "averageValue": average},
        },
    }


def cpu_metric(target: int) -> dict[str, Any]:
    return {
        "type": "Resource",
        "resource": {
            "name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": target},
        },
    }


# ------------------------------------------------------------------------- metric types
def test_pods_metric_average_value_scales_on_the_average() -> None:
    # average (1500 + 1200 + 900) / 3 = 1200m against 800m: ratio 1.5, ceil(1.5 * 3) = 5.
    pods = [ready_pod(f"p{i}") for i in range(3)]
    snapshot = MetricsSnapshot(
        pods={"qps": {"p0": sample(1500), "p1": sample(1200), "p2": sample(900)}}
    )
    res = run({"maxReplicas": 10, "metrics": [pods_metric("qps", "800m")]}, 3, pods, snapshot)
    assert res.metric_desired == 5 and res.desired_replicas == 5
    assert res.metrics[0].current_average_value == 1200
    assert res.reason == "pods metric qps above target"


def test_pods_metric_missing_pod_counts_as_target_on_scale_down() -> None:
    # 3 x 200m vs target 1000m: ratio 0.2; the missing pod counts as 1000m:
    # (600 + 1000) / 4 = 400m, ratio 0.4, ceil(0.4 * 4) = 2.
    pods = [ready_pod(f"p{i}") for i in range(4)]
    samples = {f"p{i}": sample(200) for i in range(3)}
    res = calc_plain_metric_replicas(
        samples,
        4,
        1000,
        pods,
        "",
        now=NOW,
        tolerances=Tolerances(0.1, 0.1),
        cpu_initialization_period=300,
        initial_readiness_delay=30,
    )
    assert (res.replicas, res.usage) == (2, 200)


def test_memory_average_value_target() -> None:
    # usage 3Gi and 5Gi, target 2Gi per pod: average 4Gi, ratio 2, ceil(2 * 2) = 4.
    pods = [ready_pod("a"), ready_pod("b")]
    snapshot = MetricsSnapshot(
        resource={"memory": {"a": sample(milli("3Gi")), "b": sample(milli("5Gi"))}}
    )
    spec = {
        "maxReplicas": 10,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "memory",
                    "target": {"type": "AverageValue", "averageValue": "2Gi"},
                },
            }
        ],
    }
    res = run(spec, 2, pods, snapshot)
    assert res.metric_desired == 4
    assert res.metrics[0].current_average_value == 4 * GI * 1000
    assert res.reason == "memory resource above target"


def test_memory_utilization_ignores_cpu_readiness_rules() -> None:
    # A not-Ready pod with a sample counts for memory (readiness is only checked for cpu):
    # usage 3Gi + 2Gi + 3Gi over 3 x 4Gi requests = 66%, target 50: ratio 1.32, ceil(3.96) = 4.
    req = {"memory": milli("4Gi")}
    pods = [
        ready_pod("a", **req),
        ready_pod("b", **req),
        PodInfo(
            "c", ready=False, start_time=NOW - 10, ready_transition_time=NOW - 10, requests=req
        ),
    ]
    usage = {"a": milli("3Gi"), "b": milli("2Gi"), "c": milli("3Gi")}
    snapshot = MetricsSnapshot(resource={"memory": {k: sample(v) for k, v in usage.items()}})
    spec = {
        "maxReplicas": 10,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "memory",
                    "target": {"type": "Utilization", "averageUtilization": 50},
                },
            }
        ],
    }
    res = run(spec, 3, pods, snapshot)
    assert res.utilization("memory") == 66
    assert res.metric_desired == 4


def test_object_value_uses_running_and_ready_pods() -> None:
    # 10 against a value target of 2: ratio 5; ready = Running and Ready = 2 of 4 pods,
    # so ceil(5 * 2) = 10; the legacy cap max(2 * 4, 4) = 8 then limits it.
    pods = [
        ready_pod("a"),
        ready_pod("b"),
        PodInfo("c", ready=False, start_time=NOW - 100, ready_transition_time=NOW - 100),
        PodInfo("d", phase="Pending", ready=None),
    ]
    proposal = get_object_metric_replicas(4, 2000, 10_000, pods, Tolerances(0.1, 0.1))
    assert proposal.replicas == 10
    spec = {
        "maxReplicas": 20,
        "metrics": [
            {
                "type": "Object",
                "object": {
                    "describedObject": {
                        "kind": "Ingress",
                        "name": "main",
                        "apiVersion": "networking.k8s.io/v1",
                    },
                    "metric": {"name": "requests-per-second"},
                    "target": {"type": "Value", "value": "2"},
                },
            }
        ],
    }
    res = run(spec, 4, pods, MetricsSnapshot(object={"requests-per-second": 10_000}))
    assert res.metric_desired == 10 and res.desired_replicas == 8
    limited = res.condition(ConditionType.SCALING_LIMITED)
    assert limited is not None and (limited.status, limited.reason) == (
        "True",
        ScalingLimitedReason.SCALE_UP_LIMIT,
    )
    assert res.metrics[0].current_value == 10_000


def test_object_average_value_divides_by_status_replicas() -> None:
    # 9 over status.replicas 3 against 1 per pod: ratio 3 (outside tolerance), ceil(9 / 1) = 9;
    # the reported average is ceil(9000m / 3) = 3000m. spec.replicas (5) does not enter.
    spec = {
        "maxReplicas": 20,
        "metrics": [
            {
                "type": "Object",
                "object": {
                    "describedObject": {"kind": "Service", "name": "tf-serving"},
                    "metric": {"name": "inflight"},
                    "target": {"type": "AverageValue", "averageValue": "1"},
                },
            }
        ],
    }
    res = run(spec, 5, [], MetricsSnapshot(object={"inflight": 9000}), status=3)
    assert res.metric_desired == 9
    assert res.metrics[0].current_average_value == 3000


def test_external_value_scales_from_zero_with_min_zero() -> None:
    # minReplicas 0 and current 0: metrics are evaluated; ceil(2500m / 1000m) = 3 (no tolerance).
    spec = {
        "minReplicas": 0,
        "maxReplicas": 10,
        "metrics": [
            {
                "type": "External",
                "external": {
                    "metric": {"name": "queue"},
                    "target": {"type": "Value", "value": "1"},
                },
            }
        ],
    }
    res = run(spec, 0, [], MetricsSnapshot(external={"queue": 2500}))
    assert res.desired_replicas == 3 and res.rescale
    idle = run(spec, 0, [], MetricsSnapshot(external={"queue": 0}))
    assert idle.desired_replicas == 0 and not idle.rescale


def test_external_average_value_target() -> None:
    # 12 over status 2 against 4 per pod: ratio 1.5, ceil(12 / 4) = 3.
    spec = {
        "maxReplicas": 10,
        "metrics": [
            {
                "type": "External",
                "external": {
                    "metric": {"name": "queue"},
                    "target": {"type": "AverageValue", "averageValue": "4"},
                },
            }
        ],
    }
    res = run(spec, 2, [], MetricsSnapshot(external={"queue": 12_000}))
    assert res.metric_desired == 3
    assert res.metrics[0].current_average_value == 6000


def test_container_resource_counts_only_the_named_container() -> None:
    # server usage 900m of 1000m on each of 2 pods = 90% vs 60%: ratio 1.5, ceil(1.5 * 2) = 3.
    # The sidecar's request (500m) must not dilute the ratio.
    requests = {"server": {"cpu": 1000}, "sidecar": {"cpu": 500}}
    pods = [
        PodInfo(
            n, start_time=NOW - 3600, ready_transition_time=NOW - 3500, container_requests=requests
        )
        for n in ("a", "b")
    ]
    snapshot = MetricsSnapshot(
        container_resource={"server": {"cpu": {"a": sample(900), "b": sample(900)}}}
    )
    spec = {
        "maxReplicas": 10,
        "metrics": [
            {
                "type": "ContainerResource",
                "containerResource": {
                    "name": "cpu",
                    "container": "server",
                    "target": {"type": "Utilization", "averageUtilization": 60},
                },
            }
        ],
    }
    res = run(spec, 2, pods, snapshot)
    assert res.utilization("cpu") == 90
    assert res.metric_desired == 3
    missing = run(spec, 2, pods, MetricsSnapshot())
    active = missing.condition(ConditionType.SCALING_ACTIVE)
    assert active is not None
    assert active.reason == ScalingActiveReason.FAILED_GET_CONTAINER_RESOURCE_METRIC


def test_container_resource_with_a_pod_lacking_the_container_is_an_error() -> None:
    # replica_calculator.go calculatePodRequestsFromContainers: "container %s not found in Pod
    # %s". Pod c runs no "server" container, so the metric fails and the pass stops (no scale),
    # even though a and b alone would propose 3.
    with_server = {"server": {"cpu": 1000}, "sidecar": {"cpu": 500}}
    pods = [
        PodInfo(
            n,
            start_time=NOW - 3600,
            ready_transition_time=NOW - 3500,
            container_requests=with_server if n != "c" else {"sidecar": {"cpu": 500}},
        )
        for n in ("a", "b", "c")
    ]
    snapshot = MetricsSnapshot(
        container_resource={"server": {"cpu": {"a": sample(900), "b": sample(900)}}}
    )
    spec = {
        "maxReplicas": 10,
        "metrics": [
            {
                "type": "ContainerResource",
                "containerResource": {
                    "name": "cpu",
                    "container": "server",
                    "target": {"type": "Utilization", "averageUtilization": 60},
                },
            }
        ],
    }
    res = run(spec, 3, pods, snapshot)
    assert res.metrics[0].error == "container server not found in Pod c"
    assert not res.rescale and res.desired_replicas == 3
    active = res.condition(ConditionType.SCALING_ACTIVE)
    assert active is not None and active.status == "False"
    assert active.reason == ScalingActiveReason.FAILED_GET_CONTAINER_RESOURCE_METRIC
    assert [e.reason for e in res.events] == [
        "FailedGetContainerResourceMetric",
        "FailedComputeMetricsReplicas",
    ]


def test_several_metrics_take_the_largest_proposal() -> None:
    # cpu: 2 pods at 30% of 1000m vs 60% -> ratio 0.5 -> 1; qps: 2000m avg vs 500m -> ratio 4 -> 8.
    pods = [ready_pod("a", cpu=1000), ready_pod("b", cpu=1000)]
    snapshot = MetricsSnapshot(
        resource={"cpu": {"a": sample(300), "b": sample(300)}},
        pods={"qps": {"a": sample(2000), "b": sample(2000)}},
    )
    spec = {"maxReplicas": 10, "metrics": [cpu_metric(60), pods_metric("qps", "500m")]}
    res = run(spec, 2, pods, snapshot)
    assert [m.proposal for m in res.metrics] == [1, 8]
    assert res.metric_desired == 8
    assert res.reason == "pods metric qps above target"
    assert res.desired_replicas == 4  # legacy cap: max(2 * 2, 4)


@pytest.mark.parametrize(
    ("usage", "behavior", "gate", "expected"),
    [
        (1150, None, True, 5),  # ratio 1.15 > 1.1: ceil(1.15 * 4) = 5
        (1150, {"scaleUp": {"tolerance": "0.2"}}, True, 4),  # inside the 20% scale-up band
        (1150, {"scaleUp": {"tolerance": "0.2"}}, False, 5),  # gate off: the flag's 10%
        (1150, {"scaleDown": {"tolerance": "0.2"}}, True, 5),  # other direction: no effect
        (750, None, True, 3),  # ratio 0.75 < 0.9: ceil(0.75 * 4) = 3
        (750, {"scaleDown": {"tolerance": "300m"}}, True, 4),  # 0.7 <= 0.75: inside
        (750, {"scaleUp": {"tolerance": "0.3"}}, True, 3),  # other direction: no effect
    ],
)
def test_per_direction_tolerance(
    usage: int, behavior: dict[str, Any] | None, gate: bool, expected: int
) -> None:
    pods = [ready_pod(f"p{i}", cpu=1000) for i in range(4)]
    snapshot = MetricsSnapshot(resource={"cpu": {p.name: sample(usage) for p in pods}})
    spec: dict[str, Any] = {"maxReplicas": 10, "metrics": [cpu_metric(100)]}
    if behavior is not None:
        spec["behavior"] = behavior
    res = run(spec, 4, pods, snapshot, config=ControllerConfig(configurable_tolerance=gate))
    assert res.metric_desired == expected


@pytest.mark.parametrize(
    ("current", "desired", "policy", "expected"),
    [
        # int32(10 * (1 - 0.5)) = 5 == minReplicas 5: min wins the tie -> TooFewReplicas.
        (
            10,
            2,
            ScalingPolicy(PolicyType.PERCENT, 50, 60),
            (5, ScalingLimitedReason.TOO_FEW_REPLICAS),
        ),
        # int32(10 * (1 - 0.15)) = int32(8.5) = 8 > min 5: ScaleDownLimit at 8 (truncation).
        (
            10,
            2,
            ScalingPolicy(PolicyType.PERCENT, 15, 60),
            (8, ScalingLimitedReason.SCALE_DOWN_LIMIT),
        ),
        # ceil(5 * 2) = 10 == maxReplicas 10: max wins the tie -> TooManyReplicas.
        (
            5,
            20,
            ScalingPolicy(PolicyType.PERCENT, 100, 60),
            (10, ScalingLimitedReason.TOO_MANY_REPLICAS),
        ),
        # ceil(7 * 1.1) = ceil(7.7) = 8 < max 10: ScaleUpLimit at 8 (rounded up).
        (
            7,
            20,
            ScalingPolicy(PolicyType.PERCENT, 10, 60),
            (8, ScalingLimitedReason.SCALE_UP_LIMIT),
        ),
    ],
)
def test_rate_limit_rounding_and_ties(
    current: int, desired: int, policy: ScalingPolicy, expected: tuple[int, ScalingLimitedReason]
) -> None:
    rules = ScalingRules(0, SelectPolicy.MAX, (policy,))
    limited = convert_desired_replicas_with_behavior_rate(
        current, desired, 5, 10, Behavior(scale_up=rules, scale_down=rules), [], [], NOW
    )
    assert (limited.replicas, limited.reason) == expected


@pytest.mark.parametrize(
    ("start_age", "ready", "transition_after_start", "sample_age", "unready"),
    [
        # Exactly cpuInitializationPeriod (300 s) old is no longer initializing (strict After),
        # so a not-Ready pod that became ready at start + delay (30 s) still counts.
        (300.0, False, 30.0, 0.0, False),
        (299.0, False, 30.0, 0.0, True),  # still initializing and not Ready
        # Past initialization: "never became ready" needs start + delay strictly after it.
        (400.0, False, 29.0, 0.0, True),
        (400.0, False, 30.0, 0.0, False),
        # Initializing and Ready: the sample must be at least one window (30 s) newer than
        # the transition; exactly one window is enough (strict Before).
        (100.0, True, 40.0, 30.0, False),  # transition at -60, sample at -30: -30 < -30 is false
        (100.0, True, 40.0, 31.0, True),
    ],
)
def test_group_pods_time_boundaries_are_strict(
    start_age: float, ready: bool, transition_after_start: float, sample_age: float, unready: bool
) -> None:
    start = NOW - start_age
    pod = PodInfo(
        "p", ready=ready, start_time=start, ready_transition_time=start + transition_after_start
    )
    metrics = {"p": PodMetric(100, NOW - sample_age, 30.0)}
    grouped = group_pods([pod], metrics, "cpu", 300.0, 30.0, NOW)
    assert (grouped.unready == {"p"}) == unready
    assert grouped.ready_pod_count == (0 if unready else 1)


# ------------------------------------------------------------------------- spec model
def test_spec_defaults_follow_the_api_server() -> None:
    spec = HorizontalPodAutoscalerSpec.model_validate({"maxReplicas": 4})
    core = spec.to_core()
    assert core.min_replicas == 1 and core.behavior is None
    (metric,) = core.metrics
    assert (metric.name, metric.target.average_utilization) == ("cpu", 80)


def test_behavior_defaults_and_policy_list_replacement() -> None:
    spec = HorizontalPodAutoscalerSpec.model_validate(
        {
            "maxReplicas": 4,
            "behavior": {
                "scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]},
                "scaleDown": {"selectPolicy": "Min", "tolerance": "50m"},
            },
        }
    )
    behavior = spec.to_core().behavior
    assert behavior is not None
    up, down = behavior.scale_up, behavior.scale_down
    assert up.policies == (ScalingPolicy(PolicyType.PODS, 1, 60),)  # replaces, not merged
    assert (up.stabilization_window_seconds, up.select_policy) == (0, SelectPolicy.MAX)
    assert down.policies == (ScalingPolicy(PolicyType.PERCENT, 100, 15),)
    assert down.stabilization_window_seconds is None  # filled by the controller flag
    assert (down.select_policy, down.tolerance) == (SelectPolicy.MIN, 0.05)


def test_nil_scale_down_window_uses_the_controller_flag() -> None:
    # History holds 6 from 200 s ago: inside the 300 s flag window, outside a 100 s one.
    pods = [ready_pod("a", cpu=1000), ready_pod("b", cpu=1000)]
    snapshot = MetricsSnapshot(resource={"cpu": {"a": sample(100), "b": sample(100)}})
    spec = HorizontalPodAutoscalerSpec.model_validate(
        {"maxReplicas": 10, "metrics": [cpu_metric(50)], "behavior": {}}
    )
    for flag, expected in ((300.0, 4), (100.0, 1)):
        memory = HPAMemory(recommendations=[TimestampedRecommendation(6, NOW - 200)])
        res = reconcile(
            spec,
            current_replicas=4,
            status_replicas=4,
            pods=pods,
            metrics=snapshot,
            now=NOW,
            memory=memory,
            config=ControllerConfig(downscale_stabilization_window=flag),
        )
        assert res.desired_replicas == expected, flag


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ({"maxReplicas": 4, "minReplica": 2}, ["minReplica", "did you mean 'minReplicas'"]),
        ({"maxReplicas": 2, "minReplicas": 3}, ["maxReplicas (2)", "minReplicas (3)"]),
        ({"maxReplicas": 0}, ["maxReplicas", "greater than or equal to 1"]),
        (
            {"maxReplicas": 4, "behavior": {"scaleUp": {"selectPolicy": "max"}}},
            ["selectPolicy", "'Max', 'Min' or 'Disabled'", "'max'"],
        ),
        (
            {"maxReplicas": 4, "behavior": {"scaleDown": {"policies": []}}},
            ["policies", "at least 1"],
        ),
        (
            {
                "maxReplicas": 4,
                "behavior": {
                    "scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 0}]}
                },
            },
            ["periodSeconds", "greater than 0"],
        ),
        (
            {"maxReplicas": 4, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 4000}}},
            ["stabilizationWindowSeconds", "3600"],
        ),
        (
            {"maxReplicas": 4, "behavior": {"scaleUp": {"tolerance": "-0.1"}}},
            ["tolerance", "negative"],
        ),
        (
            {
                "maxReplicas": 4,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "memory",
                            "target": {"type": "AverageValue", "averageValue": "4Gx"},
                        },
                    }
                ],
            },
            ["'4Gx'", "Gi"],
        ),
        (
            {
                "maxReplicas": 4,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageValue": "500m"},
                        },
                    }
                ],
            },
            ["Utilization", "averageUtilization", "averageValue"],
        ),
        (
            {"maxReplicas": 4, "metrics": [pods_metric("qps", "0")]},
            ["averageValue", "positive"],
        ),
        (
            {
                "maxReplicas": 4,
                "metrics": [
                    {
                        "type": "Pods",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 50},
                        },
                    }
                ],
            },
            ["type Pods", "'pods'"],
        ),
        (
            {
                "maxReplicas": 4,
                "metrics": [
                    {
                        "type": "Pods",
                        "pods": {
                            "metric": {"name": "qps"},
                            "target": {"type": "Value", "value": "1"},
                        },
                    }
                ],
            },
            ["Pods", "Value", "AverageValue"],
        ),
        (
            {
                "maxReplicas": 4,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 0},
                        },
                    }
                ],
            },
            ["averageUtilization", "greater than or equal to 1"],
        ),
        (
            {
                "maxReplicas": 4,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "taget": {}}}],
            },
            ["taget", "did you mean 'target'"],
        ),
    ],
)
def test_spec_validation_errors_say_what_and_what_is_allowed(
    spec: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(ValidationError) as info:
        HorizontalPodAutoscalerSpec.model_validate(spec)
    text = str(info.value)
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def test_quantities_accept_strings_and_numbers() -> None:
    for value, expected in (("500m", 500), (2, 2000), (0.5, 500), ("4Gi", 4 * GI * 1000)):
        spec = HorizontalPodAutoscalerSpec.model_validate(
            {"maxReplicas": 4, "metrics": [pods_metric("qps", value)]}  # type: ignore[arg-type]
        )
        assert spec.to_core().metrics[0].target.average_value == expected
