"""The observer: kubernetes client model objects -> plain states -> the Trace's gauges and
events, and one poll against an API server (the real client over HTTP to a local fake)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client as k8s

from cloud.credentials import kubeconfig_api_client
from cloud.errors import CloudError
from cloud.observe import (
    CAGroup,
    HPAState,
    KubeEvent,
    NodeState,
    PodState,
    Snapshot,
    Tracker,
    hpa_state,
    kube_event,
    node_state,
    parse_ca_status,
    pod_cpu_usage,
    pod_state,
    pool_of_group,
    read_snapshot,
)
from cloud.settings import CloudSettings
from cloud.workload import Kube
from tests.cloud_fakes import FakeKubeAPI

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NS = "lab"
GROUP = (
    "https://www.googleapis.com/compute/v1/projects/p/zones/us-central1-a/instanceGroups/"
    "gke-scalelab-default-pool-1a2b3c4d-grp"
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_pod(
    name: str,
    *,
    created: float = -60,
    node: str | None = "n1",
    ready_at: float | None = -30,
    unschedulable: str | None = None,
    deleting: bool = False,
) -> k8s.V1Pod:
    conditions = []
    if ready_at is not None:
        conditions.append(
            k8s.V1PodCondition(type="Ready", status="True", last_transition_time=at(ready_at))
        )
    else:
        conditions.append(k8s.V1PodCondition(type="Ready", status="False"))
    if unschedulable:
        conditions.append(
            k8s.V1PodCondition(
                type="PodScheduled", status="False", reason="Unschedulable", message=unschedulable
            )
        )
    return k8s.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=k8s.V1ObjectMeta(
            name=name,
            namespace=NS,
            labels={"app": "image-classifier"},
            creation_timestamp=at(created),
            deletion_timestamp=at(0) if deleting else None,
        ),
        spec=k8s.V1PodSpec(node_name=node, containers=[k8s.V1Container(name="tf-serving")]),
        status=k8s.V1PodStatus(phase="Running" if node else "Pending", conditions=conditions),
    )


def make_node(
    name: str, *, ready: bool = True, pool: str = "default-pool", taint: bool = False
) -> k8s.V1Node:
    return k8s.V1Node(
        api_version="v1",
        kind="Node",
        metadata=k8s.V1ObjectMeta(
            name=name,
            creation_timestamp=at(-600),
            labels={
                "cloud.google.com/gke-nodepool": pool,
                "node.kubernetes.io/instance-type": "n1-standard-4",
            },
        ),
        spec=k8s.V1NodeSpec(
            taints=[k8s.V1Taint(key="ToBeDeletedByClusterAutoscaler", effect="NoSchedule")]
            if taint
            else None
        ),
        status=k8s.V1NodeStatus(
            conditions=[k8s.V1NodeCondition(type="Ready", status="True" if ready else "False")]
        ),
    )


def make_hpa(current: int, desired: int, cpu: int | None) -> k8s.V2HorizontalPodAutoscaler:
    metrics = []
    if cpu is not None:
        metrics = [
            k8s.V2MetricStatus(
                type="Resource",
                resource=k8s.V2ResourceMetricStatus(
                    name="cpu", current=k8s.V2MetricValueStatus(average_utilization=cpu)
                ),
            )
        ]
    return k8s.V2HorizontalPodAutoscaler(
        api_version="autoscaling/v2",
        kind="HorizontalPodAutoscaler",
        metadata=k8s.V1ObjectMeta(name="image-classifier", namespace=NS),
        spec=k8s.V2HorizontalPodAutoscalerSpec(
            max_replicas=4,
            scale_target_ref=k8s.V2CrossVersionObjectReference(
                kind="Deployment", name="image-classifier", api_version="apps/v1"
            ),
        ),
        status=k8s.V2HorizontalPodAutoscalerStatus(
            current_replicas=current,
            desired_replicas=desired,
            current_metrics=metrics,
            conditions=[
                k8s.V2HorizontalPodAutoscalerCondition(
                    type="AbleToScale", status="True", reason="SucceededRescale"
                )
            ],
        ),
    )


def make_event(
    name: str, reason: str, message: str, t: float, *, kind: str = "Pod", source: str = ""
) -> k8s.CoreV1Event:
    return k8s.CoreV1Event(
        api_version="v1",
        kind="Event",
        metadata=k8s.V1ObjectMeta(
            name=f"{name}.{reason}.{t}", namespace=NS, uid=f"{name}-{reason}-{t}"
        ),
        involved_object=k8s.V1ObjectReference(kind=kind, name=name, namespace=NS),
        reason=reason,
        message=message,
        count=1,
        last_timestamp=at(t),
        source=k8s.V1EventSource(component=source),
    )


T0S = T0.timestamp()
RESCALE_REASON = "cpu resource utilization (percentage of request) above target"


# --- model objects -> plain ------------------------------------------------------------------


def test_pod_states() -> None:
    ready = pod_state(make_pod("a", created=-60, ready_at=-30), T0S)
    assert ready == PodState("a", "Running", True, "n1", -60.0, False, -30.0, None)
    pending = pod_state(
        make_pod("b", node=None, ready_at=None, unschedulable="0/1 nodes: Insufficient cpu."), T0S
    )
    assert (pending.phase, pending.ready, pending.unschedulable) == (
        "Pending",
        False,
        "0/1 nodes: Insufficient cpu.",
    )
    assert pod_state(make_pod("c", deleting=True), T0S).deleting


def test_node_states_and_gpu_machine_names() -> None:
    node = node_state(make_node("n1"), T0S)
    assert node == NodeState("n1", "default-pool", "n1-standard-4", True, -600.0, False)
    assert node_state(make_node("n2", taint=True), T0S).deleting
    gpu = make_node("g")
    gpu.metadata.labels["cloud.google.com/gke-accelerator"] = "nvidia-tesla-t4"
    assert node_state(gpu, T0S).machine_type == "n1-standard-4-nvidia-tesla-t4"


def test_hpa_state_reads_cpu_and_conditions() -> None:
    state = hpa_state(make_hpa(2, 3, 87))
    assert (state.current, state.desired, state.cpu_utilization) == (2, 3, 87)
    assert state.conditions == {"AbleToScale": "SucceededRescale"}
    empty = make_hpa(1, 1, None)
    empty.status = None
    assert hpa_state(empty) == HPAState(None, None, None)


def test_event_key_changes_when_it_recurs() -> None:
    event = make_event("p", "FailedScheduling", "0/1 nodes", 12.5, source="default-scheduler")
    first = kube_event(event, T0S)
    assert (first.t, first.reason, first.kind, first.source) == (
        12.5,
        "FailedScheduling",
        "Pod",
        "default-scheduler",
    )
    event.count = 2
    assert kube_event(event, T0S).key != first.key


def test_an_event_series_recurs_through_series_count() -> None:
    """The events.k8s.io recorder (kube-scheduler's FailedScheduling) leaves ``count`` unset
    and counts repeats in ``series``; each repeat is new, dated by its last observation."""
    event = make_event("p", "FailedScheduling", "0/1 nodes", 12.5, source="default-scheduler")
    event.count, event.last_timestamp = None, None
    event.event_time = at(12.5)
    first = kube_event(event, T0S)
    event.series = k8s.CoreV1EventSeries(count=2, last_observed_time=at(42.0))
    second = kube_event(event, T0S)
    event.series = k8s.CoreV1EventSeries(count=3, last_observed_time=at(72.0))
    third = kube_event(event, T0S)
    assert len({first.key, second.key, third.key}) == 3
    assert (first.t, second.t, third.t) == (12.5, 42.0, 72.0)


def test_the_default_observer_matches_the_traces_resolution() -> None:
    assert CloudSettings().observe_interval == 1.0
    assert CloudSettings.from_env({"SCALELAB_OBSERVE_INTERVAL": "0.5"}).observe_interval == 0.5
    with pytest.raises(CloudError, match="SCALELAB_OBSERVE_INTERVAL='0': expected a number"):
        CloudSettings.from_env({"SCALELAB_OBSERVE_INTERVAL": "0"})


COUNTS = "ready=1 unready=0 (resourceUnready=0) notStarted=0 longNotStarted=0 registered=1"
LEGACY = f"""Cluster-autoscaler status at 2026-03-01 12:00:00 +0000 UTC:
Cluster-wide:
  Health:      Healthy ({COUNTS} longUnregistered=0)
NodeGroups:
  Name:        {GROUP}
  Health:      Healthy ({COUNTS} longUnregistered=0 cloudProviderTarget=2 (minSize=1, maxSize=3))
"""
MODERN = f"""time: 2026-03-01 12:00:00 +0000 UTC
autoscalerStatus: Running
clusterWide:
  health: {{status: Healthy}}
nodeGroups:
- name: {GROUP}
  health:
    status: Healthy
    nodeCounts:
      registered: {{total: 1, ready: 1, notStarted: 0}}
      longUnregistered: 0
    cloudProviderTarget: 2
    minSize: 1
    maxSize: 3
"""


@pytest.mark.parametrize("text", [LEGACY, MODERN], ids=["legacy", "yaml"])
def test_cluster_autoscaler_status_both_formats(text: str) -> None:
    assert parse_ca_status(text) == (CAGroup(GROUP, 1, 1, 2, 1, 3),)


def test_pool_of_group_and_metrics() -> None:
    assert pool_of_group(GROUP, ["default-pool", "pool"]) == "default-pool"
    assert parse_ca_status("nothing here") is None
    usage = {
        "items": [{"metadata": {"name": "a"}, "containers": [{"usage": {"cpu": "2500000000n"}}]}]
    }
    assert pod_cpu_usage(usage) == {"a": 2500}


# --- snapshots -> events and gauges -----------------------------------------------------------


def snap(t: float, **kw: Any) -> Snapshot:
    base: dict[str, Any] = {
        "deployment_replicas": 1,
        "hpa": HPAState(1, 1, 20),
        "pods": (PodState("a", "Running", True, "n1", -60, ready_since=-30),),
        "nodes": (NodeState("n1", "default-pool", "n1-standard-4", True, -600),),
    }
    base.update(kw)
    return Snapshot(t=t, **base)


def ev(name: str, reason: str, message: str, t: float, kind: str = "Pod") -> KubeEvent:
    return KubeEvent(f"{name}/{reason}/{t}", t, reason, kind, name, message, "")


def kinds(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == kind]


def test_a_scale_up_story() -> None:
    tracker = Tracker(
        deployment="image-classifier", pools=["default-pool"], cpu_request_millis=3000
    )
    first = tracker.update(snap(0.5, events=(ev("old", "Pulled", "x", -100),)))
    assert [e["kind"] for e in first] == ["observe", "hpa"]  # baseline; the old event skipped
    pending = PodState("b", "Pending", False, None, 31.0, unschedulable="0/1 nodes are available")
    second = tracker.update(
        snap(
            35.0,
            deployment_replicas=2,
            hpa=HPAState(1, 2, 95),
            pods=(*snap(0).pods, pending),
            events=(
                ev(
                    "image-classifier",
                    "SuccessfulRescale",
                    "New size: 2; reason: " + RESCALE_REASON,
                    30.2,
                    "HorizontalPodAutoscaler",
                ),
                ev("b", "FailedScheduling", "0/1 nodes are available: 1 Insufficient cpu.", 31.5),
                ev(
                    "b",
                    "TriggeredScaleUp",
                    f"pod triggered scale-up: [{{{GROUP} 1->2 (max: 3)}}]",
                    32.0,
                ),
            ),
        )
    )
    scale = kinds(second, "scale")
    assert scale[0] == {
        "t": 30.2,
        "kind": "scale",
        "target": "deployment",
        "name": "image-classifier",
        "old": 1,
        "new": 2,
        "reason": RESCALE_REASON,
    }
    assert scale[1]["target"] == "node-pool" and scale[1]["name"] == "default-pool"
    assert (scale[1]["t"], scale[1]["old"], scale[1]["new"]) == (32.0, 1, 2)
    assert kinds(second, "unschedulable")[0]["t"] == 31.5
    assert kinds(second, "pod")[0] == {"t": 31.0, "kind": "pod", "pod": "b", "event": "created"}
    assert kinds(second, "hpa")[0]["cpu_utilization"] == 95
    # The CA's status then shows the same target: no second scale event.
    new_node = NodeState("n2", "default-pool", "n1-standard-4", False, 80.0)
    third = tracker.update(
        snap(
            85.0,
            deployment_replicas=2,
            hpa=HPAState(1, 2, 95),
            pods=(*snap(0).pods, pending),
            nodes=(*snap(0).nodes, new_node),
            ca_groups=(CAGroup(GROUP, 2, 1, 2),),
        )
    )
    assert kinds(third, "scale") == []
    assert kinds(third, "node") == [
        {"t": 80.0, "kind": "node", "node": "n2", "pool": "default-pool", "event": "registered"}
    ]
    gauges = tracker.gauges(
        snap(
            85.0,
            deployment_replicas=2,
            pods=(*snap(0).pods, pending),
            nodes=(*snap(0).nodes, new_node),
        )
    )
    assert gauges == {
        "replicas_desired": 2,
        "replicas_current": 2,
        "replicas_ready": 1,
        "replicas_pending": 1,
        "nodes_ready": 1,
        "nodes_provisioning": 1,
        "cpu_utilization": 20,
    }


def test_scale_down_node_events_and_cost() -> None:
    tracker = Tracker(deployment="d", pools=["default-pool"])
    two = (
        NodeState("n1", "default-pool", "n1-standard-4", True, -600),
        NodeState("n2", "default-pool", "n1-standard-4", True, -100),
    )
    tracker.update(snap(0.0, nodes=two))
    draining = (two[0], NodeState("n2", "default-pool", "n1-standard-4", True, -100, deleting=True))
    events = tracker.update(
        snap(
            700.0,
            nodes=draining,
            events=(
                ev(
                    "n2", "ScaleDown", "marked the node as toBeDeleted/unschedulable", 690.0, "Node"
                ),
            ),
        )
    )
    down = kinds(events, "scale")[0]
    assert (down["t"], down["old"], down["new"], down["nodes"]) == (690.0, 2, 1, ["n2"])
    assert kinds(events, "node")[0]["event"] == "draining"
    gone = tracker.update(snap(760.0, nodes=two[:1]))
    assert kinds(gone, "node")[0]["event"] == "deleted"
    # Two n1-standard-4 from t=0, one stops at 760 s: per second, a minute minimum.
    price = 0.189999 / 3600
    assert tracker.cost(1000.0) == pytest.approx(price * (1000 + 760))
    assert tracker.cost(10.0) == pytest.approx(price * 60 * 2)


def test_nodes_outside_the_pools_are_not_counted() -> None:
    tracker = Tracker(pools=["serving"])
    snapshot = snap(0.0, nodes=(NodeState("x", "system", "e2-medium", True, -10),))
    tracker.update(snapshot)
    assert tracker.gauges(snapshot)["nodes_ready"] == 0 and tracker.cost(100.0) == 0.0


# --- one poll through the real client ------------------------------------------------------


@pytest.fixture
def fake_api() -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI()
    yield api
    api.close()


def test_read_snapshot_through_the_client(fake_api: FakeKubeAPI, tmp_path: Any) -> None:
    fake_api.put(
        f"/apis/apps/v1/namespaces/{NS}/deployments/image-classifier",
        k8s.V1Deployment(
            api_version="apps/v1",
            kind="Deployment",
            metadata=k8s.V1ObjectMeta(name="image-classifier", namespace=NS),
            spec=k8s.V1DeploymentSpec(
                replicas=2,
                selector=k8s.V1LabelSelector(match_labels={"app": "image-classifier"}),
                template=k8s.V1PodTemplateSpec(
                    spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="tf-serving")])
                ),
            ),
        ),
    )
    fake_api.put(
        f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/image-classifier",
        make_hpa(1, 2, 91),
    )
    fake_api.put(f"/api/v1/namespaces/{NS}/pods/a", make_pod("a"))
    fake_api.put(
        f"/api/v1/namespaces/{NS}/pods/b",
        make_pod("b", node=None, ready_at=None, unschedulable="Insufficient cpu"),
    )
    other = make_pod("other")
    other.metadata.labels = {"app": "something-else"}
    fake_api.put(f"/api/v1/namespaces/{NS}/pods/other", other)
    fake_api.put("/api/v1/nodes/n1", make_node("n1"))
    fake_api.put(
        f"/api/v1/namespaces/{NS}/events/e1",
        make_event("b", "FailedScheduling", "Insufficient cpu", 5.0),
    )
    fake_api.put(
        "/api/v1/namespaces/default/events/e2", make_event("n1", "ScaleDown", "x", 6.0, kind="Node")
    )
    fake_api.put(
        "/api/v1/namespaces/kube-system/configmaps/cluster-autoscaler-status",
        k8s.V1ConfigMap(
            api_version="v1",
            kind="ConfigMap",
            metadata=k8s.V1ObjectMeta(name="cluster-autoscaler-status"),
            data={"status": MODERN},
        ),
    )
    fake_api.put(
        f"/apis/metrics.k8s.io/v1beta1/namespaces/{NS}/pods/a",
        {
            "metadata": {"name": "a", "namespace": NS, "labels": {"app": "image-classifier"}},
            "containers": [{"name": "tf-serving", "usage": {"cpu": "1800m", "memory": "1Gi"}}],
        },
    )
    kube = Kube(kubeconfig_api_client(str(fake_api.kubeconfig(tmp_path / "kubeconfig"))))
    snapshot = read_snapshot(
        kube,
        namespace=NS,
        app="image-classifier",
        hpa_name="image-classifier",
        t0=T0S,
        now=T0S + 10,
    )
    assert snapshot.t == 10.0 and snapshot.deployment_replicas == 2
    assert snapshot.hpa == HPAState(1, 2, 91, {"AbleToScale": "SucceededRescale"})
    assert sorted(p.name for p in snapshot.pods) == ["a", "b"]
    assert [n.name for n in snapshot.nodes] == ["n1"]
    assert sorted(e.reason for e in snapshot.events) == ["FailedScheduling", "ScaleDown"]
    assert snapshot.pod_cpu == {"a": 1800}
    assert snapshot.ca_groups == (CAGroup(GROUP, 1, 1, 2, 1, 3),)
    # Without metrics-server and the CA's ConfigMap, those parts are simply absent.
    for path in fake_api.paths(r"/apis/metrics.*|.*/cluster-autoscaler-status"):
        fake_api.store.pop(path)
    fake_api.metrics_server = False
    bare = read_snapshot(kube, namespace=NS, app="image-classifier", hpa_name=None, t0=T0S, now=T0S)
    assert bare.pod_cpu is None and bare.ca_groups is None and bare.hpa is None


def test_rescale_event_and_replicas_change_seen_in_either_order() -> None:
    rescale = ev(
        "d", "SuccessfulRescale", "New size: 2; reason: busy", 4.5, "HorizontalPodAutoscaler"
    )
    early = Tracker(deployment="d")
    early.update(snap(0.0))
    assert kinds(early.update(snap(5.0, events=(rescale,))), "scale") == []
    (scale,) = kinds(early.update(snap(10.0, deployment_replicas=2)), "scale")
    assert (scale["t"], scale["reason"], scale["old"], scale["new"]) == (4.5, "busy", 1, 2)
    late = Tracker(deployment="d")
    late.update(snap(0.0))
    (logged,) = kinds(late.update(snap(5.0, deployment_replicas=2)), "scale")
    assert (logged["t"], logged["reason"]) == (5.0, "spec.replicas changed")
    late.update(snap(10.0, deployment_replicas=2, events=(rescale,)))
    assert (logged["t"], logged["reason"]) == (4.5, "busy")  # amended in place
