"""kube-scheduler's scheduling queue (sim.cluster.queue) and how the simulated world uses it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cluster import scheduler as sched
from sim.cluster.queue import (
    ClusterEvent,
    Plugin,
    SchedulingQueue,
    backoff_duration,
    failed_plugins,
)
from sim.engine import simulate
from sim.scenario import Scenario

CPU = {sched.insufficient("cpu"): 2}
TAINT = {sched.untolerated_taint("ToBeDeletedByClusterAutoscaler", ""): 1}


def test_backoff_doubles_from_one_second_to_ten() -> None:
    # scheduling_queue_test.go TestBackOffFlow: 1s, 2s, 4s, 8s, then 10s (the maximum).
    assert [backoff_duration(a, 1.0, 10.0) for a in range(1, 8)] == [1, 2, 4, 8, 10, 10, 10]


@given(st.integers(1, 60), st.floats(0.1, 5), st.floats(5, 100))
def test_backoff_is_initial_doubled_and_capped(attempts: int, initial: float, most: float) -> None:
    got = backoff_duration(attempts, initial, most)
    assert got == pytest.approx(min(initial * 2 ** (attempts - 1), most))
    assert got <= most


def test_active_queue_orders_by_priority_then_timestamp() -> None:
    queue = SchedulingQueue()
    queue.add("late", 5.0)
    queue.add("early", 1.0)
    queue.add("important", 9.0, priority=100)
    assert [queue.pop(), queue.pop(), queue.pop(), queue.pop()] == [
        "important",
        "early",
        "late",
        None,
    ]


def test_unschedulable_pod_waits_for_an_event_then_backs_off() -> None:
    queue = SchedulingQueue()
    queue.add("p", 0.0)
    assert queue.pop() == "p"
    queue.unschedulable("p", 10.0, CPU)
    assert queue.pop() is None
    assert queue.flush_backoff(100.0) == 0  # only an event (or 5 min) wakes it
    # Two attempts so far would be 2 s; one attempt: backoff 1 s from the failure at 10 s.
    assert queue.on_event(ClusterEvent.NODE_ADD, 10.5) == 1
    assert queue.where("p") == "backoff"
    assert queue.next_backoff_expiry() == 11.0
    assert queue.flush_backoff(10.9) == 0
    assert queue.flush_backoff(11.0) == 1
    assert queue.pop() == "p"
    queue.unschedulable("p", 20.0, CPU)  # second attempt failed: 2 s
    queue.on_event(ClusterEvent.ASSIGNED_POD_DELETE, 30.0)  # long after: straight to activeQ
    assert queue.where("p") == "active"


def test_events_wake_only_pods_whose_failing_plugins_care() -> None:
    queue = SchedulingQueue()
    for name in ("room", "taint", "nothing"):
        queue.add(name, 0.0)
        queue.pop()
    queue.unschedulable("room", 0.0, CPU)
    queue.unschedulable("taint", 0.0, TAINT)
    queue.unschedulable("nothing", 0.0, {})  # no nodes at all: any event may help
    assert queue.on_event(ClusterEvent.ASSIGNED_POD_DELETE, 60.0) == 2
    assert queue.where("taint") == "unschedulable"
    assert queue.on_event(ClusterEvent.NODE_ADD, 60.0) == 1
    assert queue.where("taint") == "active"


def test_leftover_flush_after_five_minutes() -> None:
    queue = SchedulingQueue()
    queue.add("p", 0.0)
    queue.pop()
    queue.unschedulable("p", 0.0, TAINT)
    assert queue.flush_leftover(300.0) == 0  # not longer than podMaxInUnschedulablePodsDuration
    assert queue.flush_leftover(300.5) == 1
    assert queue.pop() == "p"


def test_failed_plugins_from_reasons() -> None:
    reasons = [
        sched.insufficient("memory"),
        sched.REASON_TOO_MANY_PODS,
        sched.REASON_NODE_SELECTOR,
        sched.REASON_UNSCHEDULABLE,
        sched.untolerated_taint("k", "v"),
    ]
    assert failed_plugins(reasons) == frozenset(Plugin)
    assert failed_plugins([]) == frozenset()


def test_bad_backoff_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="initial_backoff <= max_backoff"):
        SchedulingQueue(initial_backoff=20.0, max_backoff=10.0)


ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "pop", "fail", "event", "flush", "leftover", "delete"]),
        st.integers(0, 5),
        st.floats(0, 2),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_every_pod_is_in_exactly_one_queue(steps: list[tuple[str, int, float]]) -> None:
    """Whatever happens, a queued pod is in one place; pop never hands out a pod still
    backing off, nor one already popped and not yet returned."""
    queue = SchedulingQueue()
    now = 0.0
    popped: set[str] = set()
    for op, i, dt in steps:
        now += dt
        name = f"p{i}"
        if op == "add" and name not in queue:
            queue.add(name, now)
        elif op == "pop":
            got = queue.pop()
            if got is not None:
                assert got not in popped
                popped.add(got)
        elif op == "fail" and name in popped:
            popped.discard(name)
            queue.unschedulable(name, now, CPU)
        elif op == "event":
            queue.on_event(ClusterEvent.NODE_ADD, now)
        elif op == "flush":
            queue.flush_backoff(now)
        elif op == "leftover":
            queue.flush_leftover(now)
        elif op == "delete":
            queue.delete(name)
            popped.discard(name)
        places = {n: queue.where(n) for n in queue.names()}
        assert set(places.values()) <= {"active", "backoff", "unschedulable", "popped"}
        assert {n for n, w in places.items() if w == "popped"} == popped
        assert queue.unschedulable_count == sum(1 for w in places.values() if w == "unschedulable")
        for n, w in places.items():
            if w == "backoff":
                assert queue.backoff_until(n) > now or queue.next_backoff_expiry() is not None


def _two_pods_racing_two_nodes() -> Scenario:
    """Two new replicas need two new nodes that come up about a second apart."""
    return Scenario.model_validate(
        {
            "name": "queue",
            "duration": 200,
            "start": "warm",
            "cluster": {
                "node_pool": {
                    "machine_type": "n1-standard-4",
                    "min_nodes": 1,
                    "max_nodes": 3,
                    "provisioning_delay": {"min": 55, "max": 58},
                }
            },
            "deployment": {"replicas": 1},
            "hpa": {
                "minReplicas": 3,
                "maxReplicas": 3,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 60},
                        },
                    }
                ],
            },
            "load": {"kind": "open_loop", "rate": {"kind": "constant", "rps": 0.5}},
        }
    )


def test_world_retries_at_node_ready_or_after_backoff() -> None:
    """In a run: a pending pod binds when a node becomes Ready, unless it failed too recently
    (its backoff not over); then it binds at the first 1 s flush after the backoff."""
    events = simulate(_two_pods_racing_two_nodes(), seed=3).events
    ready = [e["t"] for e in events if e["kind"] == "node" and e["event"] == "ready"]
    failures: dict[str, list[float]] = {}
    backed_off = 0
    for e in events:
        if e["kind"] == "unschedulable":
            failures.setdefault(e["pod"], []).append(e["t"])
        if e["kind"] == "pod" and e["event"] == "scheduled" and e["pod"] in failures:
            t = e["t"]
            if t in ready:
                continue
            # Not at a node's readiness: it waited out its backoff in backoffQ.
            last_ready = max(r for r in ready if r < t)
            attempts = len(failures[e["pod"]])
            until = failures[e["pod"]][-1] + backoff_duration(attempts, 1.0, 10.0)
            assert last_ready < until <= t
            assert t == math.ceil(until)  # the flush runs on whole seconds
            backed_off += 1
    assert backed_off == 1
