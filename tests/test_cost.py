"""Billing: per second, one-minute minimum per node, optional cluster fee; per pool."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cluster.catalog import machine_type
from sim.cluster.cost import (
    GKE_CLUSTER_FEE_PER_HOUR,
    NodeBilling,
    RunningBill,
    cluster_cost,
    cluster_fee,
    cost_at,
    cost_series,
)

N1_PRICE = 0.189999


def n1(
    name: str, start: float, end: float | None = None, pool: str = "default-pool"
) -> NodeBilling:
    return NodeBilling.for_machine(name, pool, machine_type("n1-standard-4"), start, end)


def test_one_hour_of_n1_standard_4() -> None:
    assert n1("a", 0.0).cost(3600.0) == pytest.approx(N1_PRICE)
    assert n1("a", 0.0, 3600.0).cost(7200.0) == pytest.approx(N1_PRICE)


def test_one_minute_minimum_and_whole_seconds() -> None:
    short = n1("a", 100.0, 120.0)  # ran 20 s, billed 60 s
    assert short.billed_seconds(99.0) == 0.0
    assert short.billed_seconds(110.0) == 60.0  # the minute is owed from the start
    assert short.cost(1000.0) == pytest.approx(N1_PRICE / 60)
    assert n1("b", 0.0, 90.2).billed_seconds(500.0) == 91.0
    assert n1("c", 0.0, 60.000000001).billed_seconds(500.0) == 60.0


def test_per_pool_sums_and_cluster_fee() -> None:
    gpu = NodeBilling.for_machine(
        "g", "gpu-pool", machine_type("n1-standard-4-nvidia-tesla-t4"), 0.0
    )
    records = [n1("a", 0.0), n1("b", 1800.0), gpu]
    at = cost_at(records, 3600.0, include_cluster_fee=True)
    assert at.per_pool["default-pool"] == pytest.approx(N1_PRICE * 1.5)
    assert at.per_pool["gpu-pool"] == pytest.approx(0.189999 + 0.35)
    assert at.cluster_fee == pytest.approx(0.10)
    assert at.total == pytest.approx(N1_PRICE * 1.5 + 0.539999 + 0.10)
    assert cost_at(records, 3600.0).cluster_fee == 0.0
    assert cluster_fee(1800.0, cluster_start=0.0) == pytest.approx(GKE_CLUSTER_FEE_PER_HOUR / 2)


def test_lab_run_cost() -> None:
    # GSP777-like: one node all along, two more from 70 s to 1210 s, over 1800 s.
    records = [n1("n0", 0.0), n1("n1", 70.0, 1210.0), n1("n2", 70.0, 1210.0)]
    assert cost_at(records, 1800.0).total == pytest.approx(N1_PRICE * (1800 + 2 * 1140) / 3600)


def test_cluster_cost_accepts_plain_tuples() -> None:
    records = [
        ("default-pool", "n1-standard-4", 0.0, None),
        ("default-pool", "n1-standard-4", 70.0, 1210.0),
    ]
    expected = N1_PRICE * (1800 + 1140) / 3600
    assert cluster_cost(records, 1800.0) == pytest.approx(expected)
    assert cluster_cost(records, 1800.0, management_fee=True) == pytest.approx(expected + 0.05)


@settings(max_examples=80, deadline=None)
@given(
    spans=st.lists(
        st.tuples(st.floats(0, 5000), st.one_of(st.none(), st.floats(0, 5000))),
        min_size=1,
        max_size=6,
    ),
    times=st.lists(st.floats(0, 10_000), min_size=2, max_size=10),
)
def test_cumulative_cost_never_decreases_and_honours_the_minimum(
    spans: list[tuple[float, float | None]], times: list[float]
) -> None:
    records = [
        n1(f"n{i}", start, None if end is None else max(start, end))
        for i, (start, end) in enumerate(spans)
    ]
    series = cost_series(records, sorted(times), include_cluster_fee=True)
    totals = [c.total for c in series]
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(totals))
    for record in records:
        last = max(times)
        if last >= record.start:
            assert record.billed_seconds(last) >= 60.0


@settings(max_examples=60, deadline=None)
@given(
    lives=st.lists(
        st.tuples(
            st.sampled_from(["n1-standard-4", "e2-standard-4"]),
            st.floats(0, 300),
            st.one_of(st.none(), st.floats(0, 400)),
        ),
        max_size=12,
    ),
    fee=st.booleans(),
)
def test_the_running_bill_is_the_cluster_cost_at_every_second(
    lives: list[tuple[str, float, float | None]], fee: bool
) -> None:
    """Sampled once a second as the engine does, retired nodes billed once when they retire."""
    nodes = [
        (f"node-{i}", m, start, None if life is None else start + life)
        for i, (m, start, life) in enumerate(lives)
    ]
    bill = RunningBill(management_fee=fee)
    retired: list[str] = []
    for t in range(0, 800, 7):
        now = float(t)
        live = [
            (name, ("pool", m, s, None))
            for name, m, s, e in nodes
            if s <= now and (e is None or e > now)
        ]
        retiring = [
            (name, ("pool", m, s, e))
            for name, m, s, e in nodes
            if e is not None and s <= e <= now and name not in retired
        ]
        retired += [name for name, _ in retiring]
        ever = [("pool", m, s, e) for name, m, s, e in nodes if s <= now]
        assert bill.total(live, retiring, now) == pytest.approx(
            cluster_cost(ever, now, management_fee=fee), rel=1e-12, abs=1e-12
        )
