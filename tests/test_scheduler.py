"""kube-scheduler fit core: hand-computed messages and scores, plus properties."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cluster.catalog import Resources
from sim.cluster.scheduler import (
    NodeView,
    PodView,
    Scoring,
    Taint,
    filter_node,
    schedule,
    score_node,
)
from tests.cluster_strategies import resources

GiB = 2**30
CPU_POOL = {"cloud.google.com/gke-nodepool": "cpu"}


def node(name: str, requested: Resources | None = None, **kw: Any) -> NodeView:
    requested = requested or Resources()
    return NodeView(name, Resources(4000, 8 * GiB), requested, labels=CPU_POOL, **kw)


def pod(cpu: int = 1000, mem: int = GiB, **kw: Any) -> PodView:
    return PodView("p", Resources(cpu, mem), **kw)


def test_insufficient_cpu_message() -> None:
    busy = Resources(3500, GiB)
    placement = schedule(pod(), [node("a", busy), node("b", busy), node("c", busy)])
    assert placement.node is None
    assert placement.message == "0/3 nodes are available: 3 Insufficient cpu."
    assert placement.reasons == {"Insufficient cpu": 3}


def test_reasons_are_counted_and_sorted_as_strings() -> None:
    busy = Resources(3500, GiB)
    gpu_pool = NodeView(
        "g", Resources(4000, 8 * GiB), labels={"cloud.google.com/gke-nodepool": "gpu"}
    )
    placement = schedule(pod(node_selector=CPU_POOL), [node("a", busy), node("b", busy), gpu_pool])
    assert placement.message == (
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "2 Insufficient cpu."
    )
    assert placement.event_message == (
        placement.message + " preemption: 0/3 nodes are available: "
        "1 Preemption is not helpful for scheduling, "
        "2 No preemption victims found for incoming pod."
    )
    nodes = [node(f"n{i}", busy) for i in range(10)] + [
        node("x", unschedulable=True),
        node("y", unschedulable=True),
    ]
    assert schedule(pod(), nodes).message == (
        "0/12 nodes are available: 10 Insufficient cpu, 2 node(s) were unschedulable."
    )


def test_every_short_resource_is_a_reason() -> None:
    full = Resources(3500, 7 * GiB + 512 * 2**20)
    assert schedule(pod(), [node("a", full), node("b", full)]).message == (
        "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient memory."
    )


def test_not_ready_and_tainted_nodes() -> None:
    assert schedule(pod(), [node("a", ready=False)]).message == (
        "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
    )
    gpu_node = node("g", taints=(Taint("nvidia.com/gpu", "present"),))
    assert schedule(pod(), [gpu_node]).message == (
        "0/1 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: present}."
    )
    gpu_node = NodeView(
        "g", Resources(4000, 8 * GiB, 1), taints=(Taint("nvidia.com/gpu", "present"),)
    )
    gpu_pod = PodView("gp", Resources(1000, GiB, 1))  # ExtendedResourceToleration
    assert schedule(gpu_pod, [gpu_node]).node == "g"
    assert not node("a", ready=False).schedulable
    assert not node("a", unschedulable=True).schedulable


def test_too_many_pods_and_no_nodes() -> None:
    full = node("a", pod_count=110)
    assert filter_node(pod(), full).reasons == ("Too many pods",)
    assert schedule(pod(), []).message == "no nodes available to schedule pods"


def test_scores_hand_computed() -> None:
    # Pod 1 CPU / 1 GiB on 4 CPU / 8 GiB nodes; "a" empty, "b" has 2 CPU / 2 GiB requested.
    a, b = node("a"), node("b", Resources(2000, 2 * GiB))
    p = pod()
    least, most = Scoring.LEAST_ALLOCATED, Scoring.MOST_ALLOCATED
    # LeastAllocated: a (75 + 87) // 2 = 81; b (25 + 62) // 2 = 43.
    assert score_node(p, a, least, balanced_allocation=False) == 81
    assert score_node(p, b, least, balanced_allocation=False) == 43
    # MostAllocated: a (25 + 12) // 2 = 18; b (75 + 37) // 2 = 56.
    assert score_node(p, a, most, balanced_allocation=False) == 18
    assert score_node(p, b, most, balanced_allocation=False) == 56
    # BalancedAllocation: a 100 * (1 - |.25 - .125| / 2) = 93; b 100 * (1 - |.75 - .375| / 2) = 81.
    assert score_node(p, a, least) == 81 + 93
    assert score_node(p, b, most) == 56 + 81
    assert schedule(p, [a, b]).node == "a"
    assert schedule(p, [a, b], "MostAllocated").node == "b"


def test_ties_go_to_the_first_name_or_to_the_generator() -> None:
    nodes = [node("c"), node("a"), node("b")]
    assert schedule(pod(), nodes).node == "a"
    draws = {schedule(pod(), nodes, rng=np.random.default_rng(seed)).node for seed in range(30)}
    assert draws == {"a", "b", "c"}
    again = [schedule(pod(), nodes, rng=np.random.default_rng(7)).node for _ in range(3)]
    assert len(set(again)) == 1


@settings(max_examples=60, deadline=None)
@given(
    requested=st.lists(resources(4000, 8 * GiB), min_size=0, max_size=6),
    request=resources(4000, 8 * GiB),
    strategy=st.sampled_from(list(Scoring)),
)
def test_placement_is_feasible_and_best(
    requested: list[Resources], request: Resources, strategy: Scoring
) -> None:
    nodes = [node(f"n{i}", r) for i, r in enumerate(requested)]
    p = PodView("p", request)
    placement = schedule(p, nodes, strategy)
    if placement.node is None:
        assert all(not filter_node(p, n).fits for n in nodes)
        if nodes:
            assert placement.message.startswith(f"0/{len(nodes)} nodes are available: ")
            assert sum(placement.reasons.values()) >= len(nodes)
    else:
        chosen = next(n for n in nodes if n.name == placement.node)
        assert filter_node(p, chosen).fits
        assert placement.scores[placement.node] == max(placement.scores.values())
        assert request.fits_in(chosen.free)
