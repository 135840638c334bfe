"""Plain data the cluster-autoscaler core reads and returns: pools, nodes, state, decisions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal

import numpy as np

from sim.cluster.catalog import (
    GPU_RESOURCE,
    MachineType,
    Resources,
    allocatable,
    load_catalog,
    load_system_pods,
    machine_type,
    sum_resources,
)
from sim.cluster.scheduler import NodeView, OwnerKind, PodView, Taint

GKE_NODEPOOL_LABEL = "cloud.google.com/gke-nodepool"
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"


# ----------------------------------------------------------------------------- node lifecycle


class NodePhase(StrEnum):
    """A node's life: requested from the cloud, booting, Ready, being drained, gone.

    The CA counts REQUESTED and PROVISIONING nodes as *upcoming* capacity and DRAINING nodes
    as deletions in progress; DELETED nodes should simply be left out of a snapshot.
    """

    REQUESTED = "requested"
    PROVISIONING = "provisioning"
    READY = "ready"
    DRAINING = "draining"
    DELETED = "deleted"

    @property
    def upcoming(self) -> bool:
        return self in (NodePhase.REQUESTED, NodePhase.PROVISIONING)


NODE_TRANSITIONS: Mapping[NodePhase, frozenset[NodePhase]] = {
    NodePhase.REQUESTED: frozenset({NodePhase.PROVISIONING, NodePhase.DELETED}),
    NodePhase.PROVISIONING: frozenset({NodePhase.READY, NodePhase.DELETED}),
    NodePhase.READY: frozenset({NodePhase.DRAINING, NodePhase.DELETED}),
    # A failed drain puts the node back in service (the CA removes its taint).
    NodePhase.DRAINING: frozenset({NodePhase.READY, NodePhase.DELETED}),
    NodePhase.DELETED: frozenset(),
}


def advance(phase: NodePhase, to: NodePhase) -> NodePhase:
    """``to`` if a node may go from ``phase`` to ``to``; ValueError otherwise."""
    if to not in NODE_TRANSITIONS[phase]:
        allowed = ", ".join(sorted(NODE_TRANSITIONS[phase])) or "none"
        raise ValueError(f"a node cannot go from {phase} to {to}; allowed next: {allowed}")
    return to


@dataclass(frozen=True, slots=True)
class ProvisioningDelay:
    """Seconds from the scale-up request to a Ready node, drawn per node.

    ``uniform`` in [low, high] (default 50-80 s, observed on GKE in 2026; the CA FAQ's older
    figure for GCE is 3-4 min), ``constant`` (``low``), or ``lognormal`` with ``median`` and
    ``sigma`` (shape of the log).
    """

    kind: Literal["uniform", "constant", "lognormal"] = "uniform"
    low: float = 50.0
    high: float = 80.0
    median: float = 65.0
    sigma: float = 0.2

    def __post_init__(self) -> None:
        if self.kind not in ("uniform", "constant", "lognormal"):
            raise ValueError(
                f"provisioning delay kind must be uniform, constant or lognormal, got {self.kind!r}"
            )
        if self.low < 0:
            raise ValueError(f"provisioning delay needs low >= 0 seconds, got {self.low}")
        if self.kind == "uniform" and self.high < self.low:
            raise ValueError(
                f"uniform provisioning delay needs low <= high, got {self.low}, {self.high}"
            )
        if self.kind == "lognormal" and (self.median <= 0 or self.sigma < 0):
            raise ValueError("lognormal provisioning delay needs median > 0 and sigma >= 0")

    def sample(self, rng: np.random.Generator) -> float:
        if self.kind == "constant":
            return self.low
        if self.kind == "lognormal":
            return float(self.median * np.exp(self.sigma * rng.standard_normal()))
        return float(rng.uniform(self.low, self.high))


# ----------------------------------------------------------------------------------- pools


def daemonset_pods_for(machine: MachineType) -> tuple[PodView, ...]:
    """The per-node system pods of ``system_pods.yaml`` for a node of ``machine``."""
    return tuple(PodView.from_system_pod(p) for p in load_system_pods().for_node(machine))


@dataclass(frozen=True)
class NodePool:
    """An autoscaled GKE node pool (a CA node group): one machine type, min/max node counts.

    ``labels`` are added to GKE's own (``cloud.google.com/gke-nodepool``, instance type,
    accelerator); ``taints`` default to GKE's ``nvidia.com/gpu=present:NoSchedule`` on GPU
    pools. ``daemonset_pods`` default to ``system_pods.yaml`` and make the CA's template node.
    """

    name: str
    machine: MachineType
    min_nodes: int = 0
    max_nodes: int = 3
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] | None = None
    daemonset_pods: tuple[PodView, ...] | None = None
    max_node_provision_time: float | None = None
    provisioning_delay: ProvisioningDelay = field(default_factory=ProvisioningDelay)

    def __post_init__(self) -> None:
        if not 0 <= self.min_nodes <= self.max_nodes:
            raise ValueError(
                f"node pool {self.name!r}: need 0 <= min_nodes <= max_nodes, "
                f"got min_nodes={self.min_nodes}, max_nodes={self.max_nodes}"
            )

    @classmethod
    def of(cls, name: str, machine: str, min_nodes: int, max_nodes: int, **kw: Any) -> NodePool:
        """A pool by machine type name: ``NodePool.of("default-pool", "n1-standard-4", 1, 3)``."""
        return cls(name, machine_type(machine), min_nodes, max_nodes, **kw)

    @cached_property
    def node_labels(self) -> Mapping[str, str]:
        labels = {GKE_NODEPOOL_LABEL: self.name, INSTANCE_TYPE_LABEL: self.machine.name}
        if self.machine.gpu_type:
            labels[GKE_ACCELERATOR_LABEL] = self.machine.gpu_type
        labels.update(self.labels)
        return labels

    @cached_property
    def node_taints(self) -> tuple[Taint, ...]:
        if self.taints is not None:
            return self.taints
        return (Taint(GPU_RESOURCE, "present"),) if self.machine.has_gpu else ()

    @cached_property
    def template_pods(self) -> tuple[PodView, ...]:
        if self.daemonset_pods is not None:
            return self.daemonset_pods
        return daemonset_pods_for(self.machine)

    @cached_property
    def allocatable(self) -> Resources:
        return allocatable(self.machine)

    def view(self, name: str, pods: tuple[PodView, ...] = (), ready: bool = True) -> NodeView:
        """A node of this pool with ``pods`` bound, as the scheduler sees it."""
        return NodeView(
            name=name,
            allocatable=self.allocatable,
            requested=sum_resources([p.requests for p in pods]),
            pool=self.name,
            labels=self.node_labels,
            pod_count=len(pods),
            max_pods=load_catalog().max_pods_per_node,
            ready=ready,
            taints=self.node_taints,
        )

    def template(self, name: str | None = None) -> NodeView:
        """The CA's template node: an empty node of this pool with its DaemonSet pods."""
        return self.view(name or f"template-{self.name}", self.template_pods)


# ------------------------------------------------------------------------------- snapshot


@dataclass(frozen=True)
class NodeSnapshot:
    """One node as the CA sees it at a scan: pool, phase, creation time, pods bound to it."""

    name: str
    pool: str
    phase: NodePhase
    created_at: float = 0.0
    pods: tuple[PodView, ...] = ()
    scale_down_disabled: bool = False  # cluster-autoscaler.kubernetes.io/scale-down-disabled


@dataclass(frozen=True)
class ClusterSnapshot:
    """Everything one CA loop reads: pools, nodes, and pods the scheduler left unschedulable."""

    pools: tuple[NodePool, ...]
    nodes: tuple[NodeSnapshot, ...] = ()
    pending: tuple[PodView, ...] = ()

    def __post_init__(self) -> None:
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"node pool names must be unique, got {names}")
        node_names = [n.name for n in self.nodes]
        if len(set(node_names)) != len(node_names):
            raise ValueError("node names must be unique within a snapshot")
        unknown = sorted({n.pool for n in self.nodes} - set(names))
        if unknown:
            raise ValueError(f"nodes refer to unknown node pool(s) {unknown}; pools: {names}")

    @cached_property
    def pool_by_name(self) -> Mapping[str, NodePool]:
        return {p.name: p for p in self.pools}

    def pool_nodes(self, pool: str) -> list[NodeSnapshot]:
        return [n for n in self.nodes if n.pool == pool and n.phase is not NodePhase.DELETED]


# ---------------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class Backoff:
    """A node pool's scale-up backoff after failed provisioning (utils/backoff)."""

    until: float
    duration: float
    last_failure: float


@dataclass(frozen=True)
class AutoscalerState:
    """What the CA remembers between loops; :func:`decide` returns a new one.

    ``unneeded_since``: when each node was first found unneeded in an unbroken run of loops;
    ``unremovable_until``: nodes whose removal simulation failed, skipped until then;
    ``deleting``: nodes the CA started deleting -> whether they needed a drain.
    All ``last_*`` times start as None, i.e. long ago, as upstream starts them an hour back.
    """

    unneeded_since: Mapping[str, float] = field(default_factory=dict)
    unremovable_until: Mapping[str, float] = field(default_factory=dict)
    deleting: Mapping[str, bool] = field(default_factory=dict)
    last_scale_up_time: float | None = None
    last_scale_down_delete_time: float | None = None
    last_scale_down_fail_time: float | None = None
    backoff: Mapping[str, Backoff] = field(default_factory=dict)

    def record_scale_down_failure(self, now: float, node: str) -> AutoscalerState:
        """The world reports a failed drain/delete: scale-down pauses for the failure delay."""
        deleting = {k: v for k, v in self.deleting.items() if k != node}
        return replace(self, last_scale_down_fail_time=now, deleting=deleting)


# ------------------------------------------------------------------------- reasons, events


class UnremovableReason(StrEnum):
    """Why a node is not scaled down (simulator/cluster.go UnremovableReason)."""

    SCALE_DOWN_DISABLED_ANNOTATION = "ScaleDownDisabledAnnotation"
    NOT_UNNEEDED_LONG_ENOUGH = "NotUnneededLongEnough"
    NODE_GROUP_MIN_SIZE_REACHED = "NodeGroupMinSizeReached"
    CURRENTLY_BEING_DELETED = "CurrentlyBeingDeleted"
    NOT_UNDERUTILIZED = "NotUnderutilized"
    RECENTLY_UNREMOVABLE = "RecentlyUnremovable"
    NO_PLACE_TO_MOVE_PODS = "NoPlaceToMovePods"
    BLOCKED_BY_POD = "BlockedByPod"


class ScaleUpResult(StrEnum):
    """processors/status ScaleUpResult."""

    NOT_NEEDED = "ScaleUpNotNeeded"
    SUCCESSFUL = "ScaleUpSuccessful"
    NO_OPTIONS_AVAILABLE = "ScaleUpNoOptionsAvailable"
    IN_COOLDOWN = "ScaleUpInCooldown"  # all unschedulable pods are too new
    LIMITED_BY_MAX_NODES_TOTAL = "ScaleUpLimitedByMaxNodesTotal"


class ScaleDownResult(StrEnum):
    """core/scaledown/status ScaleDownResult."""

    DISABLED = "ScaleDownDisabled"
    NO_UNNEEDED = "ScaleDownNoUnneeded"
    NO_NODE_DELETED = "ScaleDownNoNodeDeleted"
    NODE_DELETE_STARTED = "ScaleDownNodeDeleteStarted"
    IN_COOLDOWN = "ScaleDownInCooldown"


class EventReason(StrEnum):
    """Kubernetes event reasons the CA records, verbatim."""

    TRIGGERED_SCALE_UP = "TriggeredScaleUp"
    NOT_TRIGGER_SCALE_UP = "NotTriggerScaleUp"
    SCALED_UP_GROUP = "ScaledUpGroup"
    SCALE_DOWN = "ScaleDown"
    SCALE_DOWN_EMPTY = "ScaleDownEmpty"
    SCALE_UP_TIMED_OUT = "ScaleUpTimedOut"
    DELETE_UNREGISTERED = "DeleteUnregistered"
    MAX_NODES_TOTAL_REACHED = "MaxNodesTotalReached"


@dataclass(frozen=True, slots=True)
class CAEvent:
    """One event: ``involved`` is the pod or node it is about, "" for the CA's own log."""

    reason: EventReason
    message: str
    involved: str = ""
    type: Literal["Normal", "Warning"] = "Normal"


@dataclass(frozen=True)
class AutoscalerDecision:
    """What one CA loop decided.

    ``scale_up``: pool -> nodes to add now; ``scale_down_empty`` / ``scale_down_drain``: nodes
    to delete, without / with pods to evict first (``pods_to_evict`` lists them);
    ``remove_unregistered``: nodes that never became Ready within max-node-provision-time;
    ``unneeded``: nodes currently unneeded; ``unremovable``: why others are not;
    ``state``: the state to pass to the next loop.
    """

    state: AutoscalerState
    scale_up: Mapping[str, int] = field(default_factory=dict)
    scale_down_empty: tuple[str, ...] = ()
    scale_down_drain: tuple[str, ...] = ()
    pods_to_evict: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    remove_unregistered: tuple[str, ...] = ()
    events: tuple[CAEvent, ...] = ()
    unneeded: tuple[str, ...] = ()
    unremovable: Mapping[str, UnremovableReason] = field(default_factory=dict)
    blocking_pods: Mapping[str, str] = field(default_factory=dict)
    scale_up_result: ScaleUpResult = ScaleUpResult.NOT_NEEDED
    scale_down_result: ScaleDownResult = ScaleDownResult.NO_UNNEEDED

    @property
    def scale_down(self) -> tuple[str, ...]:
        """All nodes to delete this loop, empty ones first."""
        return self.scale_down_empty + self.scale_down_drain


def is_daemon(pod: PodView) -> bool:
    """DaemonSet and mirror (static) pods: they run on every node and are never moved."""
    return pod.owner in (OwnerKind.DAEMON_SET, OwnerKind.MIRROR)
