"""The incremental scheduler cache answers as a full scheduling cycle over the same nodes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cluster import scheduler as sched
from sim.cluster.catalog import Resources
from sim.cluster.schedcache import SchedulerCache

GiB = 2**30
LABELS = ({"pool": "a"}, {"pool": "b"})
TAINTS = ((), (sched.Taint(sched.TO_BE_DELETED_TAINT_KEY),), (sched.Taint("gpu", "present"),))


def _pod(i: int, cpu: int, selector: int, tolerate: bool) -> sched.PodView:
    return sched.PodView(
        name=f"p{i}",
        requests=Resources(cpu, GiB),
        node_selector=LABELS[0] if selector == 1 else {},
        tolerations=frozenset({"gpu"}) if tolerate else frozenset(),
    )


nodes_st = st.builds(
    lambda cpu, used, label, taint, pods, ready: (cpu, used, label, taint, pods, ready),
    st.sampled_from([2000, 3920, 7910]),
    st.integers(0, 4000),
    st.integers(0, 1),
    st.integers(0, 2),
    st.integers(0, 3),
    st.booleans(),
)
ops_st = st.lists(
    st.tuples(
        st.sampled_from(["upsert", "remove", "bind", "unbind", "schedule"]),
        st.integers(0, 7),  # node index
        st.sampled_from([500, 1000, 3000, 5000]),  # pod cpu
        st.integers(0, 1),  # nodeSelector or not
        st.booleans(),  # tolerates the gpu taint
        nodes_st,
    ),
    max_size=60,
)


def _view(i: int, spec: tuple[int, int, int, int, int, bool]) -> sched.NodeView:
    cpu, used, label, taint, pods, ready = spec
    return sched.NodeView(
        name=f"n{i}",
        allocatable=Resources(cpu, 15 * GiB),
        requested=Resources(min(used, cpu), GiB * pods),
        labels=LABELS[label],
        pod_count=pods,
        max_pods=4,
        ready=ready,
        taints=TAINTS[taint],
    )


@settings(max_examples=150, deadline=None)
@given(ops_st, st.sampled_from(list(sched.Scoring)))
def test_cache_picks_what_a_full_cycle_picks(ops: list, scoring: sched.Scoring) -> None:
    """After any sequence of node changes and binds, the cached answer (node, FitError,
    preemption message, reason counts) equals schedule() over the cache's current views."""
    cache = SchedulerCache(scoring)
    bound: dict[str, list[sched.PodView]] = {}
    for step, (op, i, cpu, selector, tolerate, spec) in enumerate(ops):
        name = f"n{i}"
        pod = _pod(step, cpu, selector, tolerate)
        if op == "upsert":
            cache.upsert(_view(i, spec))
            bound.setdefault(name, [])
        elif op == "remove":
            cache.remove(name)
            bound.pop(name, None)
        elif op == "bind" and name in cache:
            cache.bind(name, pod)
            bound[name].append(pod)
        elif op == "unbind" and bound.get(name):
            cache.unbind(name, bound[name].pop())
        got = cache.schedule(pod)
        want = sched.schedule(pod, list(cache), scoring)
        assert (got.node, got.message, got.event_message, dict(got.reasons)) == (
            want.node,
            want.message,
            want.event_message,
            dict(want.reasons),
        )
        if got.node is not None:
            assert got.scores[got.node] == want.scores[want.node]


def test_bind_and_unbind_keep_the_requests() -> None:
    cache = SchedulerCache()
    cache.upsert(sched.NodeView("n0", Resources(4000, 8 * GiB), Resources(200, GiB), pod_count=2))
    pod = _pod(0, 3000, 0, False)
    assert cache.schedule(pod).node == "n0"
    cache.bind("n0", pod)
    assert cache.view("n0").requested == Resources(3200, 2 * GiB)
    assert cache.view("n0").pod_count == 3
    second = cache.schedule(_pod(1, 3000, 0, False))
    assert second.node is None
    assert second.message == "0/1 nodes are available: 1 Insufficient cpu."
    cache.unbind("n0", pod)
    assert cache.view("n0").requested == Resources(200, GiB)
    assert cache.schedule(_pod(1, 3000, 0, False)).node == "n0"


def test_no_nodes() -> None:
    placement = SchedulerCache().schedule(_pod(0, 100, 0, False))
    assert placement.node is None
    assert placement.message == sched.NO_NODES_MESSAGE == placement.event_message


def test_many_updates_keep_the_heap_bounded() -> None:
    """Stale heap entries are compacted away, so memory stays O(nodes) under churn."""
    cache = SchedulerCache()
    view = sched.NodeView("n0", Resources(4000, 8 * GiB))
    cache.upsert(view)
    pod = _pod(0, 100, 0, False)
    cache.schedule(pod)
    for _ in range(1000):
        cache.bind("n0", pod)
        cache.unbind("n0", pod)
    index = next(iter(cache._classes.values()))
    assert len(index.heap) <= 2 * len(cache) + 64
    assert cache.schedule(pod).node == "n0"
