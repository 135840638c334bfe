"""Whole simulations: invariants, determinism, common random numbers, and the lab's story."""

from __future__ import annotations

import itertools
import math
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.engine import simulate
from sim.loader import build_scenario, load_scenario
from sim.trace import Trace

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "scenarios" / "gsp777.yaml"


@cache
def lab_trace() -> Trace:
    return simulate(load_scenario(LAB))


def values(trace: Trace, name: str) -> list[int]:
    return [int(v) for v in trace.column(name) if v is not None]


def check_invariants(
    trace: Trace, hpa_min: int, hpa_max: int, node_min: int, node_max: int
) -> None:
    s = trace.summary
    assert s["requests_total"] == (
        s["requests_ok"] + s["requests_failed"] + s["requests_abandoned"] + s["requests_in_flight"]
    )
    assert sum(values(trace, "offered_rps")) == s["requests_total"]
    assert sum(values(trace, "completed_rps")) == s["requests_ok"]
    assert sum(values(trace, "failed_rps")) == s["requests_failed"]
    for t, desired in enumerate(values(trace, "replicas_desired")):
        assert hpa_min <= desired <= hpa_max, f"replicas_desired {desired} out of range at t={t}"
    nodes = [
        r + p
        for r, p in zip(
            values(trace, "nodes_ready"), values(trace, "nodes_provisioning"), strict=True
        )
    ]
    assert all(node_min <= n <= node_max for n in nodes), (min(nodes), max(nodes))
    costs = [float(c) for c in trace.column("cost_usd") if c is not None]
    assert all(b >= a for a, b in itertools.pairwise(costs)), "cost must never decrease"


def test_lab_invariants() -> None:
    trace = lab_trace()
    check_invariants(trace, 1, 4, 1, 3)
    # n1-standard-4 fits exactly one 3-CPU replica: ready replicas never exceed ready nodes.
    for ready, nodes in zip(
        values(trace, "replicas_ready"), values(trace, "nodes_ready"), strict=True
    ):
        assert ready <= nodes


def test_lab_story() -> None:
    trace = lab_trace()
    s = trace.summary
    # Scale-up once the load is on, within the first steps (2 users from 0 s, 4 from 60 s):
    # which HPA sync first sees the pod above 66% depends on the profile's measured U(c, n).
    assert s["first_scale_up_t"] is not None and 15 <= s["first_scale_up_t"] <= 240
    assert s["max_replicas_desired"] == 4 and s["max_replicas_ready"] == 3
    # The 4th replica stays Pending: three nodes, each full, pool capped at three.
    full = [e for e in trace.events_of("unschedulable") if "0/3 nodes are available" in e["reason"]]
    assert full and all("Insufficient cpu" in e["reason"] for e in full)
    # Pod 2 waits for node 2: it is scheduled only once a second node is Ready.
    ready_nodes = [e["t"] for e in trace.events_of("node") if e["event"] == "ready"]
    scheduled = [e for e in trace.events_of("pod") if e["event"] == "scheduled"]
    assert len(ready_nodes) >= 2 and scheduled[1]["t"] >= ready_nodes[1]
    # Pod 4 is never scheduled: it stays Pending until the HPA scales back down.
    created = [e["pod"] for e in trace.events_of("pod") if e["event"] == "created"]
    assert len(created) == 4
    assert created[3] not in {e["pod"] for e in scheduled}
    # Scale-down after the load stops (660 s): replicas first, nodes only after the HPA's 5-min
    # stabilization plus the cluster autoscaler's 10 minutes of unneeded time.
    downs = [e for e in trace.events_of("scale") if e["new"] < e["old"]]
    assert downs and downs[0]["t"] >= 660 + 300 - 30
    assert values(trace, "replicas_desired")[-1] == 1
    removed = [e["t"] for e in trace.events_of("node") if e["event"] in ("draining", "deleted")]
    assert removed and min(removed) >= downs[0]["t"] + 600
    assert values(trace, "nodes_ready")[-1] < 3


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    scenario = load_scenario(LAB, ["duration=12m"])
    simulate(scenario).write(tmp_path / "a")
    simulate(scenario).write(tmp_path / "b")
    simulate(scenario, seed=2).write(tmp_path / "c")
    for name in ("trace.csv", "events.jsonl", "latency_histogram.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "trace.csv").read_bytes() != (
        tmp_path / "c" / "trace.csv"
    ).read_bytes()


def test_common_random_numbers_across_hpa_targets() -> None:
    """Changing the HPA target must not change the load realization (fair what-if comparisons)."""
    spike = ROOT / "scenarios" / "spike.yaml"
    low = simulate(
        load_scenario(
            spike, ["hpa.metrics[0].resource.target.averageUtilization=30", "duration=25m"]
        )
    )
    high = simulate(
        load_scenario(
            spike, ["hpa.metrics[0].resource.target.averageUtilization=90", "duration=25m"]
        )
    )
    assert low.column("offered_rps") == high.column("offered_rps")
    assert low.column("replicas_desired") != high.column("replicas_desired")


def test_cold_start_serves_after_startup() -> None:
    trace = simulate(load_scenario(LAB, ["start=cold", "duration=3m"]))
    ready = [e["t"] for e in trace.events_of("pod") if e["event"] == "ready"]
    # image pull (25 s) + container (5 s) + probes: first Ready well after t=0, not before 30 s.
    assert ready and 30 <= ready[0] <= 60
    assert values(trace, "failed_rps")[0] > 0  # no endpoint yet: connections refused


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rps=st.floats(0.2, 12.0),
    factor=st.floats(0.0, 4.0),
    hpa_min=st.integers(1, 3),
    extra=st.integers(0, 4),
    node_max=st.integers(1, 5),
    target=st.integers(20, 95),
    seed=st.integers(0, 1000),
)
def test_invariants_hold_for_random_open_loop_scenarios(
    rps: float, factor: float, hpa_min: int, extra: int, node_max: int, target: int, seed: int
) -> None:
    data = {
        "name": "prop",
        "seed": seed,
        "duration": "8m",
        "cluster": {
            "node_pool": {"machine_type": "n1-standard-4", "min_nodes": 1, "max_nodes": node_max}
        },
        "deployment": {"replicas": hpa_min},
        "hpa": {
            "minReplicas": hpa_min,
            "maxReplicas": hpa_min + extra,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": target},
                    },
                }
            ],
        },
        "load": {
            "kind": "open_loop",
            "rate": {
                "kind": "spike",
                "base_rps": rps,
                "factor": factor,
                "start": "2m",
                "duration": "3m",
            },
        },
    }
    trace = simulate(build_scenario(data, "<hypothesis>"))
    check_invariants(trace, hpa_min, hpa_min + extra, 1, node_max)
    assert not math.isnan(trace.summary["cost_usd"])


@pytest.mark.parametrize("name", ["spike.yaml", "diurnal.yaml"])
def test_open_loop_scenarios_scale_up(name: str) -> None:
    overrides = ["duration=6h"] if name == "diurnal.yaml" else []  # from the trough up
    trace = simulate(load_scenario(ROOT / "scenarios" / name, overrides))
    assert trace.summary["max_replicas_desired"] > trace.column("replicas_desired")[0]  # type: ignore[operator]


def test_node_selector_places_pods_in_the_chosen_pool_only() -> None:
    data = {
        "name": "pools",
        "duration": "12m",
        "cluster": {
            "node_pools": [
                {"name": "small", "machine_type": "n1-standard-4", "min_nodes": 1, "max_nodes": 3},
                {
                    "name": "big",
                    "machine_type": "e2-standard-8",
                    "min_nodes": 0,
                    "max_nodes": 2,
                    "labels": {"tier": "serving"},
                },
            ]
        },
        "deployment": {"nodeSelector": {"tier": "serving"}},
        "hpa": {"minReplicas": 1, "maxReplicas": 4},
        "load": {"kind": "open_loop", "rate": {"kind": "constant", "rps": 4}},
    }
    trace = simulate(build_scenario(data, "<pools>"))
    scheduled = [e["node"] for e in trace.events_of("pod") if e["event"] == "scheduled"]
    assert scheduled and all("-big-" in node for node in scheduled)
    grown = [e for e in trace.events_of("scale") if e["target"] == "node-pool"]
    assert grown and {e["name"] for e in grown} == {"big"}
    # e2-standard-8 fits two 3-CPU replicas per node; the profile was rescaled for it.
    assert any(e["machine_type"] == "e2-standard-8" for e in trace.events_of("profile"))
