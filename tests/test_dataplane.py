"""The request path against queueing theory and its own bookkeeping."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.dataplane import DataPlane, Server
from sim.recorder import RequestRecorder
from sim.rng import stream


def make_plane(seconds: int, timeout: float = 1e9, seed: int = 1) -> DataPlane:
    return DataPlane(
        RequestRecorder(seconds),
        routing=stream(seed, "routing"),
        service=stream(seed, "serving"),
        timeout=timeout,
    )


def make_server(
    mean_work: float,
    sigma: float = 0.5,
    capacity: float = 1.0,
    parallelism: float = 1.0,
    threads: int = 10_000,
) -> Server:
    return Server(
        "pod-0",
        capacity=capacity,
        parallelism=parallelism,
        median=mean_work / math.exp(sigma**2 / 2),  # lognormal with this mean
        sigma=sigma,
        overhead=0.0,
        idle_cores=0.0,
        threads=threads,
        now=0.0,
    )


def machine_repairman_throughput(users: int, think: float, service: float) -> float:
    """Closed M/G/1-PS with N sources (BCMP: insensitive to the distributions): X = (1-p0)/S."""
    ratio = service / think
    terms = [math.perm(users, k) * ratio**k for k in range(users + 1)]
    p0 = 1.0 / sum(terms)
    return (1.0 - p0) / service


@pytest.mark.parametrize(
    ("users", "think", "service"), [(5, 2.0, 0.5), (12, 1.0, 0.2), (3, 0.85, 0.68)]
)
def test_closed_loop_throughput_matches_machine_repairman(
    users: int, think: float, service: float
) -> None:
    horizon = 20_000
    plane = make_plane(horizon)
    plane.add_endpoint(make_server(service))
    rng = np.random.default_rng(5)
    for _ in range(users):
        plane.spawn_user(lambda: float(rng.exponential(think)))
    warmup = 200
    plane.advance_to(warmup)
    done_before = plane.tally.ok
    plane.advance_to(horizon)
    measured = (plane.tally.ok - done_before) / (horizon - warmup)
    expected = machine_repairman_throughput(users, think, service)
    assert measured == pytest.approx(expected, rel=0.02)


def test_a_lone_request_takes_work_over_parallelism() -> None:
    plane = make_plane(100)
    server = make_server(1.3, sigma=0.0, capacity=3.85, parallelism=2.0)
    server.overhead = 0.03
    plane.add_endpoint(server)
    plane.spawn_user(lambda: 1000.0)
    plane.advance_to(50)
    plane.recorder.close()
    assert plane.tally.ok == 1
    assert plane.recorder.p50[0] == pytest.approx(1.3 / 2.0 + 0.03)


def test_open_loop_saturates_at_cores_over_work() -> None:
    # 10 req/s offered to a pod that can serve 3.85 / 1.3 = 2.96 req/s: throughput caps there.
    horizon = 600
    plane = make_plane(horizon, timeout=1e9)
    # The REST pool (4 x vCPU = 16 threads) bounds concurrency; beyond it requests queue FIFO.
    plane.add_endpoint(make_server(1.3, sigma=0.1, capacity=3.85, parallelism=2.0, threads=16))
    times = iter(np.arange(0, horizon, 0.1).tolist())
    plane.open_loop(lambda: [t for t in [next(times, None)] if t is not None] or None)
    plane.advance_to(horizon)
    throughput = plane.tally.ok / horizon
    assert throughput == pytest.approx(3.85 / 1.3, rel=0.03)


def test_no_endpoint_fails_at_once() -> None:
    plane = make_plane(10)
    plane.spawn_user(lambda: 1.0)
    plane.advance_to(5.5)
    assert plane.tally.ok == 0
    assert plane.tally.failed == 6  # t = 0, 1, ..., 5
    assert plane.recorder.failed[:6] == [1] * 6


def test_timeout_fails_the_request_and_reconnects() -> None:
    plane = make_plane(200, timeout=30.0)
    slow = make_server(100.0, sigma=0.0)
    plane.add_endpoint(slow)
    plane.spawn_user(lambda: 1.0)
    plane.advance_to(31)
    assert plane.tally.failed == 1 and plane.tally.ok == 0
    assert plane.recorder.failed[30] == 1


def test_kill_fails_in_flight_and_resets_pinned_users() -> None:
    plane = make_plane(100)
    a, b = make_server(5.0, sigma=0.0), make_server(0.1, sigma=0.0)
    b.name = "pod-1"
    plane.add_endpoint(a)
    plane.spawn_user(lambda: 0.5)
    plane.advance_to(1.0)
    plane.add_endpoint(b)
    plane.kill(a)
    assert plane.tally.failed == 1
    plane.advance_to(10.0)
    assert plane.tally.ok > 0 and b.served == plane.tally.ok


@settings(max_examples=25, deadline=None)
@given(
    users=st.integers(1, 8),
    rate=st.floats(0.0, 6.0),
    kill_at=st.floats(1.0, 50.0),
    horizon=st.integers(60, 120),
    seed=st.integers(0, 2**16),
)
def test_every_request_is_counted_exactly_once(
    users: int, rate: float, kill_at: float, horizon: int, seed: int
) -> None:
    plane = make_plane(horizon, timeout=20.0, seed=seed)
    servers = [make_server(0.8, capacity=2.0, parallelism=1.5, threads=4) for _ in range(2)]
    for s in servers:
        plane.add_endpoint(s)
    rng = np.random.default_rng(seed)
    arrivals = np.sort(rng.uniform(0, horizon, rng.poisson(rate * horizon))).tolist()
    blocks = iter([arrivals])
    plane.open_loop(lambda: next(blocks, None))
    for _ in range(users):
        plane.spawn_user(lambda: 0.85)
    plane.advance_to(kill_at)
    plane.kill(servers[0])
    plane.stop_user()
    plane.advance_to(float(horizon))
    open_in_flight = sum(1 for s in servers for job in [*s.jobs, *s.queue] if job[3] is None)
    users_in_flight = sum(1 for u in plane._users if u.sending >= 0)
    t = plane.tally
    assert t.sent == t.ok + t.failed + t.abandoned + open_in_flight + users_in_flight
    rec = plane.recorder
    assert sum(rec.offered) == t.sent and sum(rec.ok) == t.ok and sum(rec.failed) == t.failed
