"""How many template nodes a pool needs for a set of pending pods: the binpacking estimator.

Follows cluster-autoscaler/estimator/binpacking_estimator.go and decreasing_pod_orderer.go:
pod groups (equivalent pods) are taken largest first by ``cpu/alloc + mem/alloc`` of an
exemplar; each pod goes to the new nodes already opened (first fit), else to the last opened
node, else to a fresh template node. A pod that does not fit an *empty* last node ends its
group. Estimation stops adding nodes at the pool's remaining capacity (the
SngCapacityThreshold limiter) and reports the nodes that received pods and those pods.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from sim.cluster.scheduler import NodeView, PodView, filter_node, first_fit


@dataclass(frozen=True)
class Estimate:
    """``node_count`` new nodes would host ``pods``."""

    node_count: int
    pods: tuple[PodView, ...]


def _group_score(group: Sequence[PodView], template: NodeView) -> float:
    pod = group[0]
    score = 0.0
    if template.allocatable.cpu_milli > 0:
        score += pod.requests.cpu_milli / template.allocatable.cpu_milli
    if template.allocatable.memory_bytes > 0:
        score += pod.requests.memory_bytes / template.allocatable.memory_bytes
    return score


def estimate(
    groups: Sequence[Sequence[PodView]], template: NodeView, max_nodes: int | None = None
) -> Estimate:
    """Binpack ``groups`` onto copies of ``template``, opening at most ``max_nodes`` nodes."""
    ordered = sorted(groups, key=lambda g: -_group_score(g, template))
    nodes: list[NodeView] = []
    has_pods: list[bool] = []
    scheduled: list[PodView] = []
    can_add = True

    def place(pod: PodView, index: int) -> bool:
        if not filter_node(pod, nodes[index]).fits:
            return False
        nodes[index] = nodes[index].with_pod(pod)
        has_pods[index] = True
        scheduled.append(pod)
        return True

    for group in ordered:
        # tryToScheduleOnExistingNodes: stop at the group's first pod that fits no new node.
        # The group's pods are equivalent and nodes only fill up, so each search resumes at
        # the node the previous pod landed on (first fit all the same).
        taken, start = 0, 0
        while taken < len(group):
            index = first_fit(group[taken], nodes, start)
            if index is None:
                break
            place(group[taken], index)
            taken, start = taken + 1, index
        if not can_add:
            continue
        for pod in group[taken:]:
            if nodes and place(pod, len(nodes) - 1):
                continue
            if nodes and not has_pods[-1]:
                break  # it did not fit an empty node, so it fits no new node
            if max_nodes is not None and len(nodes) >= max_nodes:
                can_add = False
                break
            nodes.append(replace(template, name=f"e-{len(nodes)}"))
            has_pods.append(False)
            if not place(pod, len(nodes) - 1):
                break
    return Estimate(sum(has_pods), tuple(scheduled))
