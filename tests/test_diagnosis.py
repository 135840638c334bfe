"""Causes read off a real cluster's events (cloud/observe.py's records), as off a simulated
run's: the autoscaler's NotTriggerScaleUp reason for a Pending replica, failure reasons that
are not the simulator's named as given."""

from __future__ import annotations

from typing import Any

from sim.diagnosis import causes


def real_events(pod: str = "image-classifier-7d9c-b") -> list[dict[str, Any]]:
    """What cloud.observe.Tracker logs for a replica the autoscaler cannot place."""
    return [
        {"t": 30.0, "kind": "pod", "pod": "image-classifier-7d9c-a", "event": "created"},
        {"t": 31.0, "kind": "pod", "pod": "image-classifier-7d9c-a", "event": "scheduled"},
        {"t": 95.2, "kind": "pod", "pod": pod, "event": "created"},
        {
            "t": 95.4,
            "kind": "unschedulable",
            "pod": pod,
            "reason": "0/3 nodes are available: 3 Insufficient cpu.",
        },
        {
            "t": 106.0,
            "kind": "k8s_event",
            "reason": "NotTriggerScaleUp",
            "object": f"Pod/{pod}",
            "message": "pod didn't trigger scale-up: 1 max node group size reached",
            "source": "cluster-autoscaler",
        },
    ]


def test_a_real_pending_replica_gets_the_autoscalers_reason() -> None:
    columns = {"t": list(range(600))}
    summary = {"duration_s": 600.0, "requests_total": 10, "requests_failed": 0}
    found = causes(columns, real_events(), summary)
    assert found == [
        "replica 2 Pending from 95 s to the end: 1 max node group size reached "
        "(image-classifier-7d9c-b)"
    ]


def test_a_real_pending_replica_without_the_autoscalers_event_gets_the_schedulers() -> None:
    events = [e for e in real_events() if e["kind"] != "k8s_event"]
    found = causes({"t": list(range(600))}, events, {"duration_s": 600.0})
    assert found and found[0].endswith(
        ": 0/3 nodes are available: 3 Insufficient cpu. (image-classifier-7d9c-b)"
    )


def test_real_failure_reasons_are_all_named() -> None:
    summary = {
        "duration_s": 60.0,
        "requests_total": 200,
        "requests_failed": 20,
        "failures_by_reason": {"unavailable": 12, "http_404": 5, "other": 3},
    }
    (text,) = causes({"t": list(range(60))}, [], summary)
    assert text.startswith("10% of requests failed (20 of 200): 12 UNAVAILABLE (batch queue full)")
    assert "5 http_404" in text and "3 other errors" in text
