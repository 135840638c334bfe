"""Hypothesis strategies for the cluster cores (sim.cluster): resources, pods, pools, snapshots.

Snapshots are built so that every pool's node count starts within [min, max] and every bound
pod fits its node, as a real cluster would be.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import strategies as st

from sim.cluster.ca.model import (
    AutoscalerState,
    ClusterSnapshot,
    NodePhase,
    NodePool,
    NodeSnapshot,
)
from sim.cluster.catalog import Resources, load_catalog, machine_type
from sim.cluster.scheduler import PodView, filter_node

GiB = 2**30
CPU_MACHINES = ("n1-standard-2", "n1-standard-4", "e2-standard-4", "n2-standard-8")


def resources(max_cpu_milli: int = 4000, max_memory: int = 8 * GiB) -> st.SearchStrategy[Resources]:
    """Requests from 1m/1MiB up to the given maxima."""
    return st.builds(
        Resources,
        cpu_milli=st.integers(1, max_cpu_milli),
        memory_bytes=st.integers(2**20, max_memory),
    )


@st.composite
def app_pods(
    draw: st.DrawFn,
    prefix: str = "app",
    created: st.SearchStrategy[float] | None = None,
    max_cpu_milli: int = 4000,
) -> PodView:
    """A ReplicaSet pod with random requests, owned by one of two controllers."""
    created = created if created is not None else st.just(0.0)
    owner = draw(st.sampled_from(["web", "batch"]))
    index = draw(st.integers(0, 10**6))
    return PodView(
        name=f"{prefix}-{owner}-{index}",
        requests=draw(resources(max_cpu_milli)),
        owner_name=owner,
        created_at=draw(created),
    )


@st.composite
def pools(draw: st.DrawFn, name: str = "pool-a") -> NodePool:
    """A CPU node pool with 0 <= min <= max <= 6."""
    machine = machine_type(draw(st.sampled_from(CPU_MACHINES)))
    lo = draw(st.integers(0, 3))
    hi = draw(st.integers(max(lo, 1), 6))
    return NodePool(name, machine, lo, hi)


def _unique(pods: list[PodView]) -> list[PodView]:
    seen: set[str] = set()
    out = []
    for i, pod in enumerate(pods):
        name = pod.name if pod.name not in seen else f"{pod.name}-{i}"
        seen.add(name)
        out.append(replace(pod, name=name))
    return out


@st.composite
def snapshots(draw: st.DrawFn, now: float = 3600.0, upcoming: bool = True) -> ClusterSnapshot:
    """One or two CPU pools, nodes within bounds (some still provisioning), pods that fit,
    and a few pending pods created before ``now``."""
    pool_list = [draw(pools("pool-a"))]
    if draw(st.booleans()):
        pool_list.append(draw(pools("pool-b")))
    nodes: list[NodeSnapshot] = []
    used_names: set[str] = set()
    for pool in pool_list:
        count = draw(st.integers(pool.min_nodes, pool.max_nodes))
        for i in range(count):
            name = f"{pool.name}-n{i}"
            phase = NodePhase.READY
            created = draw(st.floats(0.0, now - 1.0))
            if upcoming and draw(st.integers(0, 4)) == 0:
                phase = NodePhase.PROVISIONING
                created = draw(st.floats(max(now - 1200.0, 0.0), now))
            pods: tuple[PodView, ...] = pool.template_pods
            if phase is NodePhase.READY:
                view = pool.view(name, pods)
                for pod in _unique(draw(st.lists(app_pods(prefix=name), max_size=4))):
                    if filter_node(pod, view).fits:
                        view = view.with_pod(pod)
                        pods = (*pods, pod)
            nodes.append(NodeSnapshot(name, pool.name, phase, created, pods))
            used_names.add(name)
    pending = _unique(
        draw(st.lists(app_pods(prefix="pending", created=st.floats(0.0, now - 5.0)), max_size=4))
    )
    return ClusterSnapshot(tuple(pool_list), tuple(nodes), tuple(pending))


@st.composite
def states(draw: st.DrawFn, snapshot: ClusterSnapshot, now: float) -> AutoscalerState:
    """A previous-loop state: random unneeded-since times and last scale-up/delete times."""
    since = {}
    for node in snapshot.nodes:
        if node.phase is NodePhase.READY and draw(st.booleans()):
            since[node.name] = draw(st.floats(max(now - 3000.0, 0.0), now))
    last_up = draw(st.one_of(st.none(), st.floats(max(now - 1500.0, 0.0), now)))
    last_delete = draw(st.one_of(st.none(), st.floats(max(now - 100.0, 0.0), now)))
    return AutoscalerState(
        unneeded_since=since, last_scale_up_time=last_up, last_scale_down_delete_time=last_delete
    )


def too_big_for_every_machine() -> Resources:
    """More CPU than any catalog machine can allocate."""
    biggest = max(m.vcpus for m in load_catalog().values())
    return Resources((biggest + 1) * 1000, GiB)
