"""Reading a cluster every few seconds into plain snapshots, and turning snapshots into the
Trace's gauges and events.

Two halves, as in the simulator's pure cores: :func:`read_snapshot` makes the API calls (HPA,
Deployment, pods, nodes, events, metrics.k8s.io, the cluster autoscaler's status ConfigMap)
and converts the ``kubernetes.client`` model objects with small pure functions
(:func:`pod_state`, :func:`node_state`, ...); :class:`Tracker` compares consecutive snapshots
and emits events in the simulator's vocabulary (``pod``, ``node``, ``scale``, ``hpa``,
``unschedulable``) plus every new Kubernetes Event as ``k8s_event``. Times are seconds since
the load started (``t0``), taken from the objects' own timestamps where Kubernetes keeps them
(creation, condition transitions, Event times) and from the poll otherwise.

Sources of behaviour:
- HPA status: autoscaling/v2 ``status.currentMetrics`` / ``desiredReplicas``
  (https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/).
- Scale-up requests: the cluster autoscaler's ``TriggeredScaleUp`` pod events ("pod triggered
  scale-up: [{GROUP 1->2 (max: 3)}]") and ``ScaleDown`` node events; its status ConfigMap
  ``kube-system/cluster-autoscaler-status`` gives each node group's ``cloudProviderTarget``
  (https://github.com/kubernetes/autoscaler/blob/master/cluster-autoscaler/FAQ.md).
- Nodes being removed carry the ``ToBeDeletedByClusterAutoscaler`` taint.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import yaml

from cloud.errors import MissingDependencyError
from sim.cluster.catalog import UnknownMachineTypeError, machine_type
from sim.cluster.cost import NodeBilling, cost_at
from sim.trace import Cell
from sim.units import cpu_millis

try:
    from kubernetes.client.exceptions import ApiException
except ImportError as _err:  # pragma: no cover
    raise MissingDependencyError("kubernetes") from _err

POOL_LABEL = "cloud.google.com/gke-nodepool"
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
INSTANCE_TYPE_LABELS = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")
TO_BE_DELETED_TAINT = "ToBeDeletedByClusterAutoscaler"
CA_STATUS_CONFIGMAP = ("kube-system", "cluster-autoscaler-status")
CA_COMPONENT = "cluster-autoscaler"
DEFAULT_POOL = "default"
"""Pool name for nodes without the GKE pool label (a non-GKE cluster)."""


def _rel(stamp: datetime | None, t0: float) -> float | None:
    return None if stamp is None else round(stamp.timestamp() - t0, 3)


# --- plain snapshots ------------------------------------------------------------------------


@dataclass(frozen=True)
class PodState:
    name: str
    phase: str
    ready: bool
    node: str | None
    created: float | None
    deleting: bool = False
    ready_since: float | None = None
    unschedulable: str | None = None


@dataclass(frozen=True)
class NodeState:
    name: str
    pool: str
    machine_type: str | None
    ready: bool
    created: float | None
    deleting: bool = False


@dataclass(frozen=True)
class HPAState:
    current: int | None
    desired: int | None
    cpu_utilization: int | None
    conditions: dict[str, str] = field(default_factory=dict)
    last_scale: float | None = None


@dataclass(frozen=True)
class KubeEvent:
    key: str
    t: float | None
    reason: str
    kind: str
    name: str
    message: str
    source: str


@dataclass(frozen=True)
class CAGroup:
    """One node group in the cluster autoscaler's status."""

    name: str
    registered: int
    ready: int
    target: int | None
    min_size: int | None = None
    max_size: int | None = None


@dataclass(frozen=True)
class Snapshot:
    t: float
    deployment_replicas: int | None
    hpa: HPAState | None
    pods: tuple[PodState, ...]
    nodes: tuple[NodeState, ...]
    events: tuple[KubeEvent, ...] = ()
    pod_cpu: dict[str, int] | None = None
    ca_groups: tuple[CAGroup, ...] | None = None


# --- model object -> plain ------------------------------------------------------------------


def _condition(conditions: Sequence[Any] | None, kind: str) -> Any:
    return next((c for c in conditions or [] if c.type == kind), None)


def pod_state(pod: Any, t0: float) -> PodState:
    """A V1Pod as the Trace needs it."""
    status, meta = pod.status, pod.metadata
    conditions = status.conditions if status else None
    ready = _condition(conditions, "Ready")
    scheduled = _condition(conditions, "PodScheduled")
    is_ready = ready is not None and ready.status == "True"
    unschedulable = None
    if (
        scheduled is not None
        and scheduled.status == "False"
        and scheduled.reason == "Unschedulable"
    ):
        unschedulable = scheduled.message or "Unschedulable"
    return PodState(
        name=meta.name,
        phase=(status.phase if status else None) or "Pending",
        ready=is_ready,
        node=pod.spec.node_name if pod.spec else None,
        created=_rel(meta.creation_timestamp, t0),
        deleting=meta.deletion_timestamp is not None,
        ready_since=_rel(ready.last_transition_time, t0) if is_ready else None,
        unschedulable=unschedulable,
    )


def node_machine(labels: dict[str, str]) -> str | None:
    """The catalog name for a node: its instance type, plus the GPU when one is attached."""
    instance = next((labels[k] for k in INSTANCE_TYPE_LABELS if k in labels), None)
    accelerator = labels.get(ACCELERATOR_LABEL)
    if instance and accelerator:
        return f"{instance}-{accelerator}"
    return instance


def node_state(node: Any, t0: float) -> NodeState:
    meta = node.metadata
    labels = meta.labels or {}
    ready = _condition(node.status.conditions if node.status else None, "Ready")
    taints = (node.spec.taints or []) if node.spec else []
    return NodeState(
        name=meta.name,
        pool=labels.get(POOL_LABEL, DEFAULT_POOL),
        machine_type=node_machine(labels),
        ready=ready is not None and ready.status == "True",
        created=_rel(meta.creation_timestamp, t0),
        deleting=meta.deletion_timestamp is not None
        or any(t.key == TO_BE_DELETED_TAINT for t in taints),
    )


def hpa_state(hpa: Any) -> HPAState:
    """A V2HorizontalPodAutoscaler's status: replicas, the cpu utilization it acted on, and
    each condition's reason (AbleToScale, ScalingActive, ScalingLimited)."""
    status = hpa.status
    if status is None:
        return HPAState(None, None, None)
    cpu = None
    for metric in status.current_metrics or []:
        resource = metric.resource
        if metric.type == "Resource" and resource is not None and resource.name == "cpu":
            cpu = resource.current.average_utilization if resource.current else None
    return HPAState(
        current=status.current_replicas,
        desired=status.desired_replicas,
        cpu_utilization=cpu,
        conditions={c.type: c.reason for c in status.conditions or []},
        last_scale=status.last_scale_time.timestamp() if status.last_scale_time else None,
    )


def kube_event(event: Any, t0: float) -> KubeEvent:
    """A CoreV1Event; ``key`` changes each time the event recurs. A recurring event is either
    counted in ``count`` (the legacy recorder) or, from the events.k8s.io recorder that
    kube-scheduler and the HPA use, in ``series.count`` with ``series.lastObservedTime``
    while ``count`` stays unset (k8s.io/client-go/tools/events, event_broadcaster.go)."""
    meta = event.metadata
    series = event.series
    count = (series.count if series is not None else None) or event.count or 1
    stamp = (
        (series.last_observed_time if series is not None else None)
        or event.last_timestamp
        or event.event_time
        or meta.creation_timestamp
    )
    source = (event.source.component if event.source else None) or event.reporting_component or ""
    involved = event.involved_object
    return KubeEvent(
        key=f"{meta.uid or meta.name}/{count}",
        t=_rel(stamp, t0),
        reason=event.reason or "",
        kind=involved.kind or "",
        name=involved.name or "",
        message=event.message or "",
        source=source,
    )


_LEGACY_GROUP = re.compile(
    r"Name:\s+(\S+)\s*\n\s*Health:\s+\S+\s+\(ready=(\d+).*?registered=(\d+)"
    r".*?cloudProviderTarget=(\d+)\s+\(minSize=(\d+),\s*maxSize=(\d+)\)",
    re.S,
)


def parse_ca_status(text: str) -> tuple[CAGroup, ...] | None:
    """The node groups in ``cluster-autoscaler-status``: the YAML format (CA >= 1.30) or the
    older free-text one; None when neither can be read."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("nodeGroups"), list):
        groups = []
        for group in data["nodeGroups"]:
            health = group.get("health") or {}
            counts = health.get("nodeCounts") or {}
            registered = counts.get("registered") or {}
            groups.append(
                CAGroup(
                    name=str(group.get("name", "")),
                    registered=int(registered.get("total", 0)),
                    ready=int(registered.get("ready", 0)),
                    target=health.get("cloudProviderTarget"),
                    min_size=health.get("minSize"),
                    max_size=health.get("maxSize"),
                )
            )
        return tuple(groups)
    found = _LEGACY_GROUP.findall(text)
    if not found:
        return None
    return tuple(
        CAGroup(name, int(registered), int(ready), int(target), int(low), int(high))
        for name, ready, registered, target, low, high in found
    )


def pool_of_group(group: str, pools: Sequence[str]) -> str:
    """GKE's instance groups are ``gke-<cluster>-<pool>-<hash>-grp``; find the pool in it."""
    base = group.rstrip("/").rsplit("/", 1)[-1]
    for pool in sorted(pools, key=len, reverse=True):
        if f"-{pool}-" in base:
            return pool
    return base


def pod_cpu_usage(metrics: dict[str, Any]) -> dict[str, int]:
    """metrics.k8s.io/v1beta1 PodMetricsList -> {pod: millicores}."""
    usage: dict[str, int] = {}
    for item in metrics.get("items", []):
        total = sum(cpu_millis(c["usage"]["cpu"]) for c in item.get("containers", []))
        usage[item["metadata"]["name"]] = total
    return usage


# --- reading the API ------------------------------------------------------------------------


def read_snapshot(
    kube: Any,
    *,
    namespace: str,
    app: str,
    hpa_name: str | None,
    t0: float,
    now: float,
) -> Snapshot:
    """One poll of everything the Trace needs. Optional sources (metrics API, the CA status
    ConfigMap, node events) that a cluster lacks come back as None or empty, not as errors."""
    selector = f"app={app}"
    deployment = kube.apps.read_namespaced_deployment(app, namespace)
    hpa = (
        hpa_state(kube.autoscaling.read_namespaced_horizontal_pod_autoscaler(hpa_name, namespace))
        if hpa_name
        else None
    )
    pods = kube.core.list_namespaced_pod(namespace, label_selector=selector).items
    nodes = kube.core.list_node().items
    events = list(kube.core.list_namespaced_event(namespace).items)
    with contextlib.suppress(ApiException):
        events += kube.core.list_namespaced_event(
            "default", field_selector="involvedObject.kind=Node"
        ).items
    pod_cpu = None
    with contextlib.suppress(ApiException):
        pod_cpu = pod_cpu_usage(
            kube.custom.list_namespaced_custom_object(
                "metrics.k8s.io", "v1beta1", namespace, "pods", label_selector=selector
            )
        )
    groups = None
    try:
        config = kube.core.read_namespaced_config_map(
            CA_STATUS_CONFIGMAP[1], CA_STATUS_CONFIGMAP[0]
        )
        groups = parse_ca_status((config.data or {}).get("status", ""))
    except ApiException:
        pass
    return Snapshot(
        t=round(now - t0, 3),
        deployment_replicas=deployment.spec.replicas if deployment.spec else None,
        hpa=hpa,
        pods=tuple(pod_state(p, t0) for p in pods),
        nodes=tuple(node_state(n, t0) for n in nodes),
        events=tuple(kube_event(e, t0) for e in events),
        pod_cpu=pod_cpu,
        ca_groups=groups,
    )


# --- snapshots -> gauges, events, cost ------------------------------------------------------

RESCALE_MATCH_S = 60.0
"""How far apart a SuccessfulRescale event and the replicas change it explains may be seen."""
_RESCALE = re.compile(r"New size: (\d+)(?:; reason: (.*))?")
_SCALE_UP = re.compile(r"\{(\S+)\s+(\d+)->(\d+)\s+\(max:\s*(\d+)\)\}")


@dataclass
class NodeLife:
    name: str
    pool: str
    machine_type: str | None
    start: float
    end: float | None = None


class Tracker:
    """Turns consecutive snapshots into events and keeps node lifetimes for the cost.

    The first snapshot is the baseline: objects already there are not "created", and
    Kubernetes events older than the load's start are skipped.
    """

    def __init__(
        self,
        *,
        deployment: str = "",
        pools: Sequence[str] | None = None,
        cpu_request_millis: int | None = None,
        management_fee: bool = False,
        cost_start: float = 0.0,
    ) -> None:
        self.deployment = deployment
        self.pools = tuple(pools) if pools else None
        self.cpu_request = cpu_request_millis
        self.management_fee = management_fee
        self.cost_start = cost_start
        self.prev: Snapshot | None = None
        self.lives: dict[str, NodeLife] = {}
        self.pool_target: dict[str, int] = {}
        self._seen: set[str] = set()
        self._unschedulable: dict[str, str] = {}
        self._scaling_down: set[str] = set()
        self._unpriced: set[str] = set()
        self._unexplained: dict[str, Any] | None = None
        self._rescales: list[tuple[int, float, str]] = []

    # -- which nodes count

    def counts(self, node: NodeState) -> bool:
        return self.pools is None or node.pool in self.pools

    def _pool_names(self, snap: Snapshot) -> list[str]:
        if self.pools:
            return list(self.pools)
        return sorted({n.pool for n in snap.nodes})

    # -- gauges

    def gauges(self, snap: Snapshot) -> dict[str, Cell]:
        """The trace columns a snapshot sets (load columns come from Locust)."""
        pods = [p for p in snap.pods if not p.deleting]
        nodes = [n for n in snap.nodes if self.counts(n)]
        provisioning = sum(1 for n in nodes if not n.ready and not n.deleting)
        if snap.ca_groups is not None:
            pools = self._pool_names(snap)
            for group in snap.ca_groups:
                if self.pools is None or pool_of_group(group.name, pools) in self.pools:
                    provisioning += max(0, (group.target or 0) - group.registered)
        return {
            "replicas_desired": snap.deployment_replicas,
            "replicas_current": len(pods),
            "replicas_ready": sum(1 for p in pods if p.ready),
            "replicas_pending": sum(1 for p in pods if p.phase == "Pending"),
            "nodes_ready": sum(1 for n in nodes if n.ready and not n.deleting),
            "nodes_provisioning": provisioning,
            "cpu_utilization": snap.hpa.cpu_utilization if snap.hpa else None,
        }

    # -- cost

    def billing(self) -> list[NodeBilling]:
        records = []
        for life in self.lives.values():
            price = 0.0
            if life.machine_type is not None:
                try:
                    price = machine_type(life.machine_type).price_per_hour
                except UnknownMachineTypeError:
                    self._unpriced.add(life.machine_type)
            records.append(NodeBilling(life.name, life.pool, price, life.start, life.end))
        return records

    def cost(self, t: float) -> float:
        """Dollars billed for the counted nodes from ``cost_start`` to ``t`` (per second, one
        minute minimum, sim.cluster.cost), plus the GKE fee when the scenario counts it."""
        return cost_at(
            self.billing(),
            t,
            include_cluster_fee=self.management_fee,
            cluster_start=self.cost_start,
        ).total

    @property
    def unpriced(self) -> set[str]:
        """Instance types missing from the machine catalog (billed at 0 here)."""
        return set(self._unpriced)

    # -- events

    def update(self, snap: Snapshot) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []

        def log(t: float | None, kind: str, **fields: Any) -> dict[str, Any]:
            record = {"t": round(snap.t if t is None else t, 3), "kind": kind, **fields}
            out.append(record)
            return record

        first = self.prev is None
        prev = self.prev or replace(snap, pods=(), nodes=(), events=(), hpa=None)
        self._nodes(snap, prev, first, log)
        new_events = [e for e in snap.events if e.key not in self._seen]
        self._seen.update(e.key for e in snap.events)
        if first:
            new_events = [e for e in new_events if e.t is not None and e.t >= 0]
            pools = self._pool_names(snap)
            for pool in pools:
                self.pool_target[pool] = sum(
                    1 for n in snap.nodes if n.pool == pool and not n.deleting
                )
            for group in snap.ca_groups or ():
                if group.target is not None:
                    self.pool_target[pool_of_group(group.name, pools)] = group.target
            log(
                None,
                "observe",
                event="baseline",
                pods=len(snap.pods),
                nodes=len(snap.nodes),
                replicas=snap.deployment_replicas,
            )
        for event in sorted(new_events, key=lambda e: e.t if e.t is not None else snap.t):
            log(
                event.t,
                "k8s_event",
                reason=event.reason,
                object=f"{event.kind}/{event.name}",
                message=event.message,
                source=event.source,
            )
        if not first:
            self._pods(snap, prev, log)
        self._unschedulable_events(snap, new_events, log)
        self._scale_events(snap, prev, first, new_events, log)
        if snap.hpa is not None and snap.hpa != prev.hpa:
            log(
                None,
                "hpa",
                current_replicas=snap.hpa.current,
                desired_replicas=snap.hpa.desired,
                cpu_utilization=snap.hpa.cpu_utilization,
                conditions=snap.hpa.conditions,
            )
        if snap.pod_cpu is not None and snap.pod_cpu != prev.pod_cpu:
            usage = sum(snap.pod_cpu.values())
            requests = (self.cpu_request or 0) * len(snap.pod_cpu)
            log(
                None,
                "pod_metrics",
                cpu_millicores=snap.pod_cpu,
                utilization=round(100 * usage / requests) if requests else None,
            )
        self.prev = snap
        out.sort(key=lambda e: e["t"])
        return out

    def _nodes(self, snap: Snapshot, prev: Snapshot, first: bool, log: Any) -> None:
        before = {n.name: n for n in prev.nodes}
        now = {n.name: n for n in snap.nodes}
        for node in snap.nodes:
            if not self.counts(node):
                continue
            if node.name not in self.lives:
                start = max(node.created if node.created is not None else snap.t, self.cost_start)
                self.lives[node.name] = NodeLife(node.name, node.pool, node.machine_type, start)
            if first:
                continue
            old = before.get(node.name)
            if old is None:
                log(node.created, "node", node=node.name, pool=node.pool, event="registered")
            if node.ready and (old is None or not old.ready):
                log(None, "node", node=node.name, pool=node.pool, event="ready")
            if node.deleting and (old is None or not old.deleting):
                log(None, "node", node=node.name, pool=node.pool, event="draining")
        for name, node in before.items():
            if name not in now and self.counts(node):
                life = self.lives.get(name)
                if life is not None and life.end is None:
                    life.end = snap.t
                log(None, "node", node=name, pool=node.pool, event="deleted")

    def _pods(self, snap: Snapshot, prev: Snapshot, log: Any) -> None:
        before = {p.name: p for p in prev.pods}
        now = {p.name: p for p in snap.pods}
        for pod in snap.pods:
            old = before.get(pod.name)
            if old is None:
                log(pod.created, "pod", pod=pod.name, event="created")
            if pod.node and (old is None or not old.node):
                log(None, "pod", pod=pod.name, node=pod.node, event="scheduled")
            if pod.ready and (old is None or not old.ready):
                log(pod.ready_since, "pod", pod=pod.name, node=pod.node, event="ready")
            if pod.deleting and (old is None or not old.deleting):
                log(None, "pod", pod=pod.name, node=pod.node, event="terminating")
        for name, pod in before.items():
            if name not in now:
                log(None, "pod", pod=name, node=pod.node, event="deleted")

    def _unschedulable_events(self, snap: Snapshot, new: list[KubeEvent], log: Any) -> None:
        said = self._unschedulable
        for event in new:
            if event.reason == "FailedScheduling" and said.get(event.name) != event.message:
                said[event.name] = event.message
                log(event.t, "unschedulable", pod=event.name, reason=event.message)
        for pod in snap.pods:
            if pod.unschedulable and said.get(pod.name) != pod.unschedulable:
                said[pod.name] = pod.unschedulable
                log(None, "unschedulable", pod=pod.name, reason=pod.unschedulable)

    def _scale_events(
        self, snap: Snapshot, prev: Snapshot, first: bool, new: list[KubeEvent], log: Any
    ) -> None:
        # Deployment: spec.replicas moved; the HPA's SuccessfulRescale event dates it. One poll
        # reads the Deployment before the events, so either may be seen a poll before the other:
        # an early event waits (up to RESCALE_MATCH_S) for its replicas change, and a late one
        # amends the scale event already logged (the same dict the caller holds).
        for event in new:
            match = _RESCALE.match(event.message)
            if event.reason == "SuccessfulRescale" and match:
                stamp = event.t if event.t is not None else snap.t
                self._rescales.append((int(match.group(1)), stamp, match.group(2) or event.message))
        self._rescales = [r for r in self._rescales if snap.t - r[1] <= RESCALE_MATCH_S]
        waiting = self._unexplained
        if waiting is not None:
            for rescale in self._rescales:
                if rescale[0] == waiting["new"]:
                    waiting.update(t=round(rescale[1], 3), reason=rescale[2])
                    self._rescales.remove(rescale)
                    self._unexplained = None
                    break
        old, cur = prev.deployment_replicas, snap.deployment_replicas
        if not first and cur is not None and old is not None and cur != old:
            found = [r for r in self._rescales if r[0] == cur]
            when: float | None = found[-1][1] if found else None
            reason = found[-1][2] if found else "spec.replicas changed"
            if found:
                self._rescales.remove(found[-1])
            record = log(
                when,
                "scale",
                target="deployment",
                name=self.deployment,
                old=old,
                new=cur,
                reason=reason,
            )
            self._unexplained = None if found else record
        pools = self._pool_names(snap)
        # Node pools: the cluster autoscaler's own events, then its status ConfigMap.
        for event in new:
            if event.reason == "TriggeredScaleUp":
                for group, before, after, _ in _SCALE_UP.findall(event.message):
                    pool = pool_of_group(group, pools)
                    if self.pool_target.get(pool) != int(after):
                        self.pool_target[pool] = int(after)
                        log(
                            event.t,
                            "scale",
                            target="node-pool",
                            name=pool,
                            old=int(before),
                            new=int(after),
                            reason="pods unschedulable",
                        )
        downs: dict[str, list[KubeEvent]] = {}
        by_name = {n.name: n for n in (*prev.nodes, *snap.nodes)}
        for event in new:
            if (
                event.reason == "ScaleDown"
                and event.kind == "Node"
                and event.name not in self._scaling_down
            ):
                self._scaling_down.add(event.name)
                node = by_name.get(event.name)
                downs.setdefault(node.pool if node else DEFAULT_POOL, []).append(event)
        for pool, events in sorted(downs.items()):
            before_n = self.pool_target.get(pool, 0)
            after_n = max(0, before_n - len(events))
            self.pool_target[pool] = after_n
            log(
                min(e.t if e.t is not None else snap.t for e in events),
                "scale",
                target="node-pool",
                name=pool,
                old=before_n,
                new=after_n,
                reason="scale-down",
                nodes=[e.name for e in events],
            )
        if not first:
            for group in snap.ca_groups or ():
                pool = pool_of_group(group.name, pools)
                if group.target is not None and self.pool_target.get(pool) != group.target:
                    log(
                        None,
                        "scale",
                        target="node-pool",
                        name=pool,
                        old=self.pool_target.get(pool),
                        new=group.target,
                        reason="cluster-autoscaler target",
                    )
                    self.pool_target[pool] = group.target
