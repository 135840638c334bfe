"""Scale-down: which nodes are unneeded, and which of them to delete now.

Two steps, as cluster-autoscaler/core/scaledown/planner/planner.go:

1. :func:`find_unneeded` (``categorizeNodes``): a Ready node is a candidate when it was not
   found unremovable in the last ``--unremovable-node-recheck-timeout``, has no scale-down-
   disabled annotation, and its utilization (eligibility/eligibility.go: max of cpu and memory
   requests over allocatable, DaemonSet and mirror pods included; GPU utilization alone on GPU
   nodes) is below the threshold (one exactly at it is not: ``isNodeBelowUtilizationThreshold``
   returns false when ``utilization >= threshold``). Its pods are then sorted by the
   drainability rules and the movable ones placed, first fit by node name, on the other Ready
   nodes; placements are kept and the node is dropped from the destinations, so later
   candidates see that load (simulator/cluster.go ``SimulateNodeRemoval`` with a persisted
   snapshot).
2. :func:`select_for_deletion` (``NodesToDelete``): unneeded for longer than
   ``scale_down_unneeded_time`` (strictly, unneeded/nodes.go), the pool above its min size
   counting deletions in progress, then the budgets (budgets/budgets.go ``CropNodes``): up to
   ``max_empty_bulk_delete`` nodes in flight in all, of which up to ``max_drain_parallelism``
   need a drain.

Not modelled: unready-node scale-down (``--scale-down-unready-time``), per-pool (local)
delays, PDB budgets shared across nodes, cluster-wide minimum resource limits, the limit on
how many unneeded nodes are tracked, and the ``IsRisky`` ordering.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sim.cluster.ca.drainability import DrainContext, Rules, pods_to_move
from sim.cluster.ca.model import NodePool, UnremovableReason, is_daemon
from sim.cluster.ca.options import AutoscalerOptions
from sim.cluster.catalog import GPU_RESOURCE, sum_resources
from sim.cluster.schedcache import PodClass, pod_class
from sim.cluster.scheduler import NodeView, PodView, filter_node


@dataclass(frozen=True, slots=True)
class Utilization:
    """simulator/utilization Info: per-resource fractions and the one that counts."""

    cpu: float
    memory: float
    gpu: float
    resource: str
    value: float

    def __str__(self) -> str:
        return (
            f"{{cpu: {self.cpu:.3f}, memory: {self.memory:.3f}, {self.resource}: {self.value:.3f}}}"
        )


def utilization(
    pool: NodePool, pods: Sequence[PodView], ignore_daemonsets: bool = False
) -> Utilization:
    """Sum of requests over allocatable (utilization/info.go ``Calculate``).

    With ``ignore_daemonsets`` DaemonSet pods' requests leave both the sum and allocatable.
    """
    alloc = pool.allocatable
    counted = [p for p in pods if not (ignore_daemonsets and is_daemon(p))]
    skipped = sum_resources([p.requests for p in pods if ignore_daemonsets and is_daemon(p)])
    used = sum_resources([p.requests for p in counted])
    if pool.machine.has_gpu and alloc.gpu > 0:
        gpu = used.gpu / (alloc.gpu - skipped.gpu) if alloc.gpu > skipped.gpu else 0.0
        return Utilization(0.0, 0.0, gpu, GPU_RESOURCE, gpu)
    cpu = used.cpu_milli / (alloc.cpu_milli - skipped.cpu_milli)
    mem = used.memory_bytes / (alloc.memory_bytes - skipped.memory_bytes)
    if cpu > mem:
        return Utilization(cpu, mem, 0.0, "cpu", cpu)
    return Utilization(cpu, mem, 0.0, "memory", mem)


@dataclass(frozen=True)
class Candidate:
    """A Ready node the CA may remove: its pool and every pod in the CA's snapshot of it
    (bound pods plus pending pods the CA placed there in simulation)."""

    name: str
    pool: NodePool
    pods: tuple[PodView, ...]
    scale_down_disabled: bool = False


@dataclass(frozen=True)
class NodeToRemove:
    """An unneeded node: the pods that would need a new home, and its utilization."""

    name: str
    pool: str
    pods_to_move: tuple[PodView, ...]
    utilization: Utilization

    @property
    def empty(self) -> bool:
        return not self.pods_to_move


@dataclass
class UnneededResult:
    """Outcome of one ``categorizeNodes`` pass."""

    removable: list[NodeToRemove] = field(default_factory=list)
    unremovable: dict[str, UnremovableReason] = field(default_factory=dict)
    blocking_pods: dict[str, str] = field(default_factory=dict)
    recheck_until: dict[str, float] = field(default_factory=dict)
    utilization: dict[str, Utilization] = field(default_factory=dict)


def find_unneeded(
    candidates: Sequence[Candidate],
    destinations: Mapping[str, NodeView],
    unremovable_until: Mapping[str, float],
    now: float,
    options: AutoscalerOptions,
    rules: Rules,
) -> UnneededResult:
    """Which ``candidates`` could go, each assuming the ones before it went too."""
    result = UnneededResult()
    dest = dict(destinations)
    order = sorted(dest)  # first fit by node name; removed nodes are skipped
    # Per pod class, the nodes of ``order`` before this index fail it in ``dest`` (or are
    # gone): ``dest`` only fills up and shrinks, so that stays true for later candidates.
    known_full: dict[PodClass, int] = {}
    ctx = DrainContext(now)
    threshold = options.timings.utilization_threshold
    for cand in candidates:
        if unremovable_until.get(cand.name, float("-inf")) > now:
            result.unremovable[cand.name] = UnremovableReason.RECENTLY_UNREMOVABLE
            continue
        if cand.scale_down_disabled:
            result.unremovable[cand.name] = UnremovableReason.SCALE_DOWN_DISABLED_ANNOTATION
            continue
        util = utilization(cand.pool, cand.pods, options.ignore_daemonsets_utilization)
        result.utilization[cand.name] = util
        limit = options.gpu_utilization_threshold if util.resource == GPU_RESOURCE else threshold
        # eligibility.go isNodeBelowUtilizationThreshold: `if utilInfo.Utilization >= threshold
        # { return false }`, so a node exactly at the threshold stays (NotUnderutilized).
        if util.value >= limit:
            result.unremovable[cand.name] = UnremovableReason.NOT_UNDERUTILIZED
            continue
        to_move = pods_to_move(cand.pods, rules, ctx)
        recheck = now + options.unremovable_node_recheck_timeout
        if to_move.blocked:
            assert to_move.blocking_pod is not None
            result.unremovable[cand.name] = UnremovableReason.BLOCKED_BY_POD
            result.blocking_pods[cand.name] = (
                f"{to_move.blocking_pod.name} ({to_move.blocking_reason})"
            )
            result.recheck_until[cand.name] = recheck
            continue
        moved = _move_pods(to_move.movable, cand.name, dest, order, known_full)
        if moved is None:
            result.unremovable[cand.name] = UnremovableReason.NO_PLACE_TO_MOVE_PODS
            result.recheck_until[cand.name] = recheck
            continue
        dest.update(moved)  # commit: the pods moved, the node is gone
        dest.pop(cand.name, None)
        result.removable.append(NodeToRemove(cand.name, cand.pool.name, to_move.movable, util))
    return result


def _move_pods(
    pods: Sequence[PodView],
    leaving: str,
    dest: Mapping[str, NodeView],
    order: Sequence[str],
    known_full: dict[PodClass, int],
) -> dict[str, NodeView] | None:
    """Place ``pods`` first fit by name on ``dest`` without node ``leaving``: the changed
    nodes, or None when one pod fits nowhere. ``dest`` is left as it was."""
    changed: dict[str, NodeView] = {}
    resume: dict[PodClass, int] = {}  # within this trial, equivalent pods resume here
    for pod in pods:
        key = pod_class(pod)
        from_known = key not in resume
        i = known_full.get(key, 0) if from_known else resume[key]
        while i < len(order):
            name = order[i]
            view = changed.get(name)
            if view is None and name in dest and name != leaving:
                if filter_node(pod, dest[name]).fits:
                    break
                if from_known:
                    known_full[key] = i + 1
            elif view is not None:
                if filter_node(pod, view).fits:
                    break
                from_known = False
            elif name == leaving:
                from_known = False
            elif from_known:  # removed from dest for good
                known_full[key] = i + 1
            i += 1
        if i == len(order):
            return None
        resume[key] = i
        name = order[i]
        changed[name] = (changed.get(name) or dest[name]).with_pod(pod)
    return changed


@dataclass(frozen=True)
class Selection:
    """Nodes to delete now and why the other unneeded nodes wait."""

    empty: tuple[NodeToRemove, ...] = ()
    drain: tuple[NodeToRemove, ...] = ()
    unremovable: Mapping[str, UnremovableReason] = field(default_factory=dict)


def select_for_deletion(
    removable: Sequence[NodeToRemove],
    unneeded_since: Mapping[str, float],
    pools: Mapping[str, NodePool],
    target_sizes: Mapping[str, int],
    deletions_in_progress: Mapping[str, bool],
    deletion_pools: Mapping[str, str],
    now: float,
    options: AutoscalerOptions,
) -> Selection:
    """Apply the unneeded-time, min-size and parallelism checks to the unneeded nodes.

    ``deletions_in_progress`` maps nodes being deleted to whether they needed a drain and
    ``deletion_pools`` gives their pools.
    """
    unneeded_time = options.timings.scale_down_unneeded_time
    sizes = dict(target_sizes)
    in_progress_by_pool: dict[str, int] = {}
    for deleting in deletions_in_progress:
        pool = deletion_pools.get(deleting)
        if pool is not None:
            in_progress_by_pool[pool] = in_progress_by_pool.get(pool, 0) + 1
    unremovable: dict[str, UnremovableReason] = {}
    empty: list[NodeToRemove] = []
    drain: list[NodeToRemove] = []
    ordered = sorted((n for n in removable if n.empty), key=lambda n: n.name) + sorted(
        (n for n in removable if not n.empty), key=lambda n: n.name
    )
    for candidate in ordered:
        if not unneeded_since[candidate.name] + unneeded_time < now:
            unremovable[candidate.name] = UnremovableReason.NOT_UNNEEDED_LONG_ENOUGH
            continue
        size = sizes.get(candidate.pool, 0)
        if size - in_progress_by_pool.get(candidate.pool, 0) <= pools[candidate.pool].min_nodes:
            unremovable[candidate.name] = UnremovableReason.NODE_GROUP_MIN_SIZE_REACHED
            continue
        sizes[candidate.pool] = size - 1
        (empty if candidate.empty else drain).append(candidate)
    drains_running = sum(1 for needs_drain in deletions_in_progress.values() if needs_drain)
    parallelism = options.max_empty_bulk_delete - len(deletions_in_progress)
    drain_budget = options.max_drain_parallelism - drains_running
    empty = empty[: max(parallelism, 0)]
    parallelism -= len(empty)
    drain = drain[: max(min(parallelism, drain_budget), 0)]
    return Selection(tuple(empty), tuple(drain), unremovable)
