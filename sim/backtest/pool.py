"""Nodes and cost for a pod timeline, from a scenario's node pools.

A recording names pods, not the nodes a proposal would have needed, so recorded and proposed
pods are placed by one model here and billed by :mod:`sim.cluster.cost` (per second, one-minute
minimum, GKE's cluster fee when the scenario has it):

- a node of a pool holds ``pods_per_node`` of the target's pods: its allocatable (GKE's
  formula, :func:`sim.cluster.catalog.allocatable`) less its per-node system pods' requests,
  divided by the pod's requests (cpu and memory). Once-per-cluster system pods (kube-dns,
  metrics-server, ...) are not placed: assumed to fit beside them (:data:`CLUSTER_PODS_PLACED`);
- pods that exist (Pending or Running, not deleted) fill the pools in the scenario's order;
  a pool grows at once to the nodes its pods need, between ``min_nodes`` and ``max_nodes``
  (the cluster autoscaler adds nodes for unschedulable pods; billing from the request, as
  the simulator's cost does), and a node goes when it has been unneeded for
  ``scale_down_unneeded_time`` and no node was added for ``scale_down_delay_after_add``
  (cluster-autoscaler FAQ, "How does scale-down work?"). Without the autoscaler a pool keeps
  its initial nodes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim.cluster.catalog import allocatable, load_system_pods, machine_type
from sim.cluster.cost import GKE_CLUSTER_FEE_PER_HOUR, MINIMUM_BILLED_SECONDS, NodeBilling, cost_at
from sim.errors import UserError
from sim.scenario import Scenario

#: Once-per-cluster system pods are not placed on any node (assumption; see the module doc).
CLUSTER_PODS_PLACED = False


@dataclass(frozen=True)
class Pool:
    name: str
    machine: str
    price_per_hour: float
    pods_per_node: int
    min_nodes: int
    max_nodes: int
    start_nodes: int


@dataclass(frozen=True)
class NodeModel:
    pools: tuple[Pool, ...]
    unneeded_time: float
    delay_after_add: float
    management_fee: bool

    @property
    def capacity(self) -> int:
        """How many of the target's pods the pools can hold at most."""
        return sum(p.max_nodes * p.pods_per_node for p in self.pools)


def node_model(scenario: Scenario, cpu_request: int) -> NodeModel:
    """The scenario's pools for pods requesting ``cpu_request`` millicores (the recorded
    request; the scenario's when 0) and the scenario's deployment's memory request."""
    requests = scenario.deployment.resources.requests
    cpu = cpu_request or (requests.cpu or 0)
    memory = requests.memory or 0
    ca = scenario.cluster.autoscaler
    system = load_system_pods()
    pools = []
    for pool in scenario.cluster.pools:
        machine = machine_type(pool.machine_type)
        free = allocatable(machine) - system.node_overhead(machine)
        fits = [free.cpu_milli // cpu if cpu else None, free.memory_bytes // memory or None]
        per_node = min((f for f in fits if f is not None), default=0) if cpu or memory else 0
        if not cpu and not memory:
            raise UserError(
                "scenario deployment.resources.requests: no cpu or memory request and none "
                "recorded; cannot place pods on nodes"
            )
        lo, hi = (pool.min_nodes, pool.max_nodes) if ca.enabled else (pool.start_nodes,) * 2
        pools.append(
            Pool(
                pool.name,
                pool.machine_type,
                machine.price_per_hour,
                max(per_node, 0),
                lo,
                hi,
                pool.start_nodes,
            )
        )
    if not any(p.pods_per_node for p in pools):
        raise UserError(
            f"scenario cluster pools: no node of {', '.join(p.machine for p in pools)} holds a "
            f"pod requesting {cpu}m cpu and {memory} bytes of memory"
        )
    return NodeModel(
        tuple(pools),
        ca.scale_down_unneeded_time,
        ca.scale_down_delay_after_add,
        scenario.cluster.management_fee,
    )


def needed(model: NodeModel, pods: int) -> list[int]:
    """Nodes each pool needs for ``pods`` pods, filling the pools in order."""
    out = []
    left = pods
    for pool in model.pools:
        take = min(left, pool.max_nodes * pool.pods_per_node)
        left -= take
        out.append(max(pool.min_nodes, math.ceil(take / pool.pods_per_node) if take else 0))
    return out


@dataclass
class Nodes:
    """Nodes per second and the cumulative cost at each second's end."""

    count: list[int]
    cost: list[float]
    node_hours: float
    total_cost: float


def nodes_and_cost(model: NodeModel, live_pods: Sequence[int]) -> Nodes:
    """``live_pods[s]``: pods that exist during second s. Nodes already there at the window's
    start are billed from it. The cost at each second's end is :class:`NodeBilling`'s rule
    evaluated for all seconds at once; the total is :func:`sim.cluster.cost.cost_at`'s."""
    seconds = len(live_pods)
    by_count = {n: needed(model, n) for n in set(live_pods)}
    bills: list[NodeBilling] = []
    counts = [0] * seconds
    for i, pool in enumerate(model.pools):
        opened: list[float] = []  # start times of the pool's nodes, oldest first
        window: deque[tuple[int, int]] = deque()  # (second, needed), decreasing: a window max
        last_add = -math.inf
        for s in range(seconds):
            want = by_count[live_pods[s]][i]
            while window and window[-1][1] <= want:
                window.pop()
            window.append((s, want))
            while window[0][0] <= s - model.unneeded_time:
                window.popleft()
            if want > len(opened):
                opened.extend([float(s)] * (want - len(opened)))
                last_add = s
            keep = window[0][1]  # the most needed over the last unneeded_time seconds
            if keep < len(opened) and s - last_add >= model.delay_after_add:
                for start in opened[keep:]:
                    name = f"{pool.name}-{len(bills)}"
                    bills.append(NodeBilling(name, pool.name, pool.price_per_hour, start, float(s)))
                del opened[keep:]
            counts[s] += len(opened)
        for start in opened:
            name = f"{pool.name}-{len(bills)}"
            bills.append(NodeBilling(name, pool.name, pool.price_per_hour, start))
    ends = np.arange(1, seconds + 1, dtype=float)
    cost = np.zeros(seconds)
    for b in bills:
        stop = ends if b.end is None else np.minimum(ends, b.end)
        ran = np.ceil(np.maximum(stop - b.start, 0.0) - 1e-9)
        billed = np.where(ends < b.start, 0.0, np.maximum(ran, MINIMUM_BILLED_SECONDS))
        cost += billed * b.price_per_hour / 3600.0
    if model.management_fee:
        cost += np.ceil(ends - 1e-9) * GKE_CLUSTER_FEE_PER_HOUR / 3600.0
    total = cost_at(bills, float(seconds), include_cluster_fee=model.management_fee).total
    hours = sum(min(b.end if b.end is not None else seconds, seconds) - b.start for b in bills)
    return Nodes(
        counts, [round(float(c), 6) for c in cost], round(hours / 3600, 6), round(total, 6)
    )
