"""A pure kube-scheduler fit: filter nodes by requests, score the survivors, pick one.

Modelled, in the default plugin order of kube-scheduler (pkg/scheduler/apis/config/v1/
default_plugins.go), each a filter that stops at the first failing plugin for a node:
``NodeUnschedulable`` (cordoned), ``TaintToleration`` (NoSchedule/NoExecute taints, incl. the
not-ready taint), ``NodeAffinity`` (``nodeSelector`` only), ``NodeResourcesFit`` (pods, cpu,
memory, nvidia.com/gpu against allocatable minus what is already requested). Scoring is
``NodeResourcesFit`` with ``LeastAllocated`` (default) or ``MostAllocated`` (GKE's
optimize-utilization profile) plus ``NodeResourcesBalancedAllocation``, both weight 1 over cpu
and memory, in integer arithmetic as upstream. Ties among the top score: upstream picks one at
random (``selectHost``); pass a ``numpy.random.Generator`` for that, or none to take the first
by node name (deterministic, the default).

Not modelled: PodTopologySpread's default spreading, InterPodAffinity, ImageLocality, volumes,
host ports, node affinity expressions other than ``nodeSelector``, preemption itself (its
message is, assuming no lower-priority victims exist), and ``percentageOfNodesToScore``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np

from sim.cluster.catalog import GPU_RESOURCE, Resources, SystemPod

MAX_NODE_SCORE = 100
# pkg/scheduler/util/pod_resources.go: what a container without requests counts as when scoring.
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024

NOT_READY_TAINT_KEY = "node.kubernetes.io/not-ready"
TO_BE_DELETED_TAINT_KEY = "ToBeDeletedByClusterAutoscaler"
"""The taint the cluster autoscaler puts on nodes it is deleting (utils/taints/taints.go)."""

# Filter reasons, verbatim from the upstream plugins.
REASON_UNSCHEDULABLE = "node(s) were unschedulable"  # nodeunschedulable.ErrReasonUnschedulable
REASON_NODE_SELECTOR = (
    "node(s) didn't match Pod's node affinity/selector"  # nodeaffinity.ErrReasonPod
)
REASON_TOO_MANY_PODS = "Too many pods"  # noderesources fit.go
REASON_NO_VICTIMS = "No preemption victims found for incoming pod"  # defaultpreemption
REASON_PREEMPTION_NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_NODES_MESSAGE = "no nodes available to schedule pods"  # schedule_one.go ErrNoNodesAvailable


def insufficient(resource: str) -> str:
    """``Insufficient cpu`` and friends, as noderesources/fit.go words them."""
    return f"Insufficient {resource}"


def untolerated_taint(key: str, value: str) -> str:
    """tainttoleration's reason: ``node(s) had untolerated taint {key: value}``."""
    return f"node(s) had untolerated taint {{{key}: {value}}}"


class Scoring(StrEnum):
    """NodeResourcesFit scoring strategy (KubeSchedulerConfiguration ``scoringStrategy.type``)."""

    LEAST_ALLOCATED = "LeastAllocated"
    MOST_ALLOCATED = "MostAllocated"


class OwnerKind(StrEnum):
    """What controls a pod; decides how the cluster autoscaler may drain it."""

    REPLICA_SET = "ReplicaSet"
    STATEFUL_SET = "StatefulSet"
    JOB = "Job"
    DAEMON_SET = "DaemonSet"
    MIRROR = "Mirror"  # a static pod's mirror (kube-proxy on GKE)
    NONE = "None"  # a bare pod


class PdbState(StrEnum):
    """Whether a PodDisruptionBudget covers the pod and, if so, allows one more disruption."""

    NONE = "none"
    ALLOWS = "allows"
    BLOCKS = "blocks"


@dataclass(frozen=True, slots=True)
class Taint:
    """A node taint; only ``NoSchedule`` and ``NoExecute`` keep pods off a node."""

    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclass(frozen=True)
class PodView:
    """What the scheduler and the cluster autoscaler need to know about a pod.

    ``tolerations`` holds taint keys the pod tolerates (operator Exists), ``"*"`` for all; a
    pod requesting GPUs also tolerates ``nvidia.com/gpu`` (ExtendedResourceToleration, on in
    GKE). ``owner``/``namespace``/``pdb``/``safe_to_evict``/``local_storage`` feed the CA's
    drainability rules; ``created_at`` is the pod's creation time (CA's new-pod buffer and the
    blocking-system-pod timeout); ``owner_name`` groups equivalent pods for CA's binpacking.
    """

    name: str
    requests: Resources = field(default_factory=Resources)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: frozenset[str] = frozenset()
    namespace: str = "default"
    owner: OwnerKind = OwnerKind.REPLICA_SET
    owner_name: str = ""
    pdb: PdbState = PdbState.NONE
    safe_to_evict: bool | None = None
    local_storage: bool = False
    created_at: float = 0.0
    priority: int = 0

    @classmethod
    def from_system_pod(
        cls, pod: SystemPod, name: str | None = None, created_at: float = 0.0
    ) -> PodView:
        """A kube-system pod from ``system_pods.yaml`` as a PodView (tolerates every taint)."""
        owner = {
            "static": OwnerKind.MIRROR,
            "DaemonSet": OwnerKind.DAEMON_SET,
            "Deployment": OwnerKind.REPLICA_SET,
        }[pod.kind]
        return cls(
            name=name or pod.name,
            requests=pod.requests,
            tolerations=frozenset({"*"}) if owner is not OwnerKind.REPLICA_SET else frozenset(),
            namespace=pod.namespace,
            owner=owner,
            owner_name=pod.name,
            pdb=PdbState.ALLOWS if pod.has_pdb else PdbState.NONE,
            created_at=created_at,
            priority=2_000_000_000,  # system-cluster-critical / system-node-critical
        )

    def tolerates(self, taint: Taint) -> bool:
        if "*" in self.tolerations or taint.key in self.tolerations:
            return True
        return taint.key == GPU_RESOURCE and self.requests.gpu > 0


@dataclass(frozen=True)
class NodeView:
    """A node as the scheduler sees it: allocatable, what bound pods request, labels, taints.

    ``ready=False`` stands for the ``node.kubernetes.io/not-ready:NoSchedule`` taint the node
    lifecycle controller sets; ``unschedulable`` is ``spec.unschedulable`` (cordoned).
    """

    name: str
    allocatable: Resources
    requested: Resources = field(default_factory=Resources)
    pool: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    pod_count: int = 0
    max_pods: int = 110
    ready: bool = True
    unschedulable: bool = False
    taints: tuple[Taint, ...] = ()

    @property
    def free(self) -> Resources:
        return self.allocatable - self.requested

    @property
    def schedulable(self) -> bool:
        """False when cordoned or not Ready: no ordinary pod can land here."""
        return self.ready and not self.unschedulable

    def effective_taints(self) -> tuple[Taint, ...]:
        if self.ready:
            return self.taints
        return (Taint(NOT_READY_TAINT_KEY), *self.taints)

    def with_pod(self, pod: PodView) -> NodeView:
        """This node after binding ``pod`` to it."""
        return replace(self, requested=self.requested + pod.requests, pod_count=self.pod_count + 1)

    def without_pod(self, pod: PodView) -> NodeView:
        """This node after ``pod`` left it."""
        return replace(self, requested=self.requested - pod.requests, pod_count=self.pod_count - 1)


@dataclass(frozen=True, slots=True)
class NodeFit:
    """One node's filter verdict: no ``reasons`` means the pod fits.

    ``resolvable`` is False for UnschedulableAndUnresolvable statuses (cordon, taints,
    selector), which preemption cannot help.
    """

    reasons: tuple[str, ...] = ()
    resolvable: bool = True

    @property
    def fits(self) -> bool:
        return not self.reasons


FITS = NodeFit()


def filter_node(pod: PodView, node: NodeView) -> NodeFit:
    """Run the modelled filter plugins in upstream order; the first failing plugin reports."""
    if node.unschedulable and not pod.tolerates(Taint("node.kubernetes.io/unschedulable")):
        return NodeFit((REASON_UNSCHEDULABLE,), resolvable=False)
    for taint in node.effective_taints():
        if taint.effect in ("NoSchedule", "NoExecute") and not pod.tolerates(taint):
            return NodeFit((untolerated_taint(taint.key, taint.value),), resolvable=False)
    for key, value in pod.node_selector.items():
        if node.labels.get(key) != value:
            return NodeFit((REASON_NODE_SELECTOR,), resolvable=False)
    reasons: list[str] = []
    if node.pod_count + 1 > node.max_pods:
        reasons.append(REASON_TOO_MANY_PODS)
    reasons.extend(insufficient(r) for r in pod.requests.insufficient(node.free))
    return NodeFit(tuple(reasons)) if reasons else FITS


def _non_zero(requests: Resources) -> tuple[int, int]:
    cpu = requests.cpu_milli or DEFAULT_MILLI_CPU_REQUEST
    mem = requests.memory_bytes or DEFAULT_MEMORY_REQUEST
    return cpu, mem


def _least(requested: int, capacity: int) -> int:
    # noderesources/least_allocated.go leastRequestedScore
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * MAX_NODE_SCORE // capacity


def _most(requested: int, capacity: int) -> int:
    # noderesources/most_allocated.go mostRequestedScore
    if capacity == 0:
        return 0
    return min(requested, capacity) * MAX_NODE_SCORE // capacity


def score_node(
    pod: PodView,
    node: NodeView,
    scoring: Scoring = Scoring.LEAST_ALLOCATED,
    balanced_allocation: bool = True,
) -> int:
    """NodeResourcesFit score (+ BalancedAllocation) of ``node`` for ``pod``, 0-100 each.

    ``requested`` includes the pod; pods without requests count as 100m / 200Mi, as upstream's
    non-zero requests do (approximated: the node's own sum is taken as given).
    """
    pod_cpu, pod_mem = _non_zero(pod.requests)
    req = (node.requested.cpu_milli + pod_cpu, node.requested.memory_bytes + pod_mem)
    cap = (node.allocatable.cpu_milli, node.allocatable.memory_bytes)
    per_resource = _least if scoring is Scoring.LEAST_ALLOCATED else _most
    pairs = [(r, c) for r, c in zip(req, cap, strict=True) if c > 0]
    fit = sum(per_resource(r, c) for r, c in pairs) // len(pairs) if pairs else 0
    if not balanced_allocation or len(pairs) < 2:
        return fit
    # noderesources/balanced_allocation.go: 1 - std of the fractions (|f0 - f1| / 2 for two).
    fractions = [min(r / c, 1.0) for r, c in pairs]
    std = abs(fractions[0] - fractions[1]) / 2
    return fit + int((1 - std) * MAX_NODE_SCORE)


def fit_error_message(num_nodes: int, fits: Iterable[NodeFit]) -> str:
    """FitError.Error(): ``0/N nodes are available: <count reason>, ....``

    Reasons are counted over nodes, formatted ``"%v %v"`` and sorted as strings (so "10 ..."
    sorts before "2 ..."), as pkg/scheduler/framework/types.go does.
    """
    histogram: Counter[str] = Counter()
    for fit in fits:
        histogram.update(fit.reasons)
    return fit_error_from_histogram(num_nodes, histogram)


def fit_error_from_histogram(num_nodes: int, histogram: Mapping[str, int]) -> str:
    """:func:`fit_error_message` from reason counts already summed over the nodes."""
    if num_nodes == 0:
        return NO_NODES_MESSAGE
    parts = sorted(f"{count} {reason}" for reason, count in histogram.items() if count > 0)
    return f"0/{num_nodes} nodes are available: {', '.join(parts)}."


def preemption_message(num_nodes: int, fits: Iterable[NodeFit]) -> str:
    """DefaultPreemption's PostFilter message when no lower-priority pod could be evicted."""
    resolvable = unresolvable = 0
    for fit in fits:
        if fit.resolvable:
            resolvable += 1
        else:
            unresolvable += 1
    return preemption_from_counts(num_nodes, resolvable, unresolvable)


def preemption_from_counts(num_nodes: int, resolvable: int, unresolvable: int) -> str:
    """:func:`preemption_message` from the counts of resolvable and unresolvable failures."""
    histogram = {REASON_NO_VICTIMS: resolvable, REASON_PREEMPTION_NOT_HELPFUL: unresolvable}
    parts = sorted(f"{count} {reason}" for reason, count in histogram.items() if count > 0)
    return f"preemption: 0/{num_nodes} nodes are available: {', '.join(parts)}."


@dataclass(frozen=True)
class Placement:
    """The scheduler's answer for one pod.

    ``node`` is the chosen node's name, or None when the pod stays Pending; ``message`` is then
    the FitError text ("0/3 nodes are available: 3 Insufficient cpu."), ``event_message`` the
    full FailedScheduling event text of kube-scheduler >= 1.22 (with the preemption part),
    ``reasons`` the per-reason node counts. ``scores`` holds every feasible node's score.
    """

    node: str | None
    message: str = ""
    event_message: str = ""
    reasons: Mapping[str, int] = field(default_factory=dict)
    scores: Mapping[str, int] = field(default_factory=dict)

    @property
    def scheduled(self) -> bool:
        return self.node is not None


def schedule(
    pod: PodView,
    nodes: Sequence[NodeView],
    scoring: Scoring | str = Scoring.LEAST_ALLOCATED,
    *,
    rng: np.random.Generator | None = None,
    balanced_allocation: bool = True,
) -> Placement:
    """Filter, score and pick a node for ``pod`` (one scheduling cycle, no preemption).

    Ties among the best score go to the first node by name, or to a uniform draw from ``rng``
    (upstream ``selectHost`` samples the top-scored nodes uniformly).
    """
    strategy = Scoring(scoring)
    fits = {node.name: filter_node(pod, node) for node in nodes}
    feasible = sorted((n for n in nodes if fits[n.name].fits), key=lambda n: n.name)
    if not feasible:
        failed = list(fits.values())
        message = fit_error_message(len(nodes), failed)
        event = message if not nodes else f"{message} {preemption_message(len(nodes), failed)}"
        histogram: Counter[str] = Counter()
        for fit in failed:
            histogram.update(fit.reasons)
        return Placement(None, message, event, dict(histogram))
    scores = {n.name: score_node(pod, n, strategy, balanced_allocation) for n in feasible}
    best = max(scores.values())
    top = [n.name for n in feasible if scores[n.name] == best]
    chosen = top[int(rng.integers(len(top)))] if rng is not None and len(top) > 1 else top[0]
    return Placement(chosen, scores=scores)


def first_fit(pod: PodView, nodes: Sequence[NodeView], start: int = 0) -> int | None:
    """Index of the first node from ``start`` that ``pod`` passes the filters on, or None
    (the CA's simulations).

    A node that failed a pod fails it again once it holds more pods (every filter here is
    monotone in the node's load), so callers placing identical pods one after another onto
    nodes that only fill up may start where the previous one landed.
    """
    for i in range(start, len(nodes)):
        if filter_node(pod, nodes[i]).fits:
            return i
    return None
