"""The request path against queueing theory and its own bookkeeping.

A server with n requests in flight completes X(c, n) in total (each at X/n) and burns
U(c, n) cores; tests give it X and U directly, or a synthetic profile's.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.dataplane import DataPlane
from sim.recorder import RequestRecorder
from sim.rng import stream
from sim.scenario import Serving
from sim.serving.model import build_server
from sim.serving.profile import Profile, ProfileExtrapolationWarning, profile_from_dict
from sim.serving.server import NodeCpu, Server
from tests.test_profile import synthetic

Rate = Callable[[float, int], float]
"""(cores, requests in flight) -> requests/s completed (X) or cores burnt (U)."""


def cores_of(c: float, n: int) -> float:
    """U: each request in flight keeps one core busy, up to the cores there are."""
    return min(float(n), c)


def parallel(service: float) -> Rate:
    """X: each request needs ``service`` seconds of one core; n share min(n, c) cores."""
    return lambda c, n: min(float(n), c) / service


def make_plane(seconds: int, timeout: float = 1e9, seed: int = 1) -> DataPlane:
    return DataPlane(
        RequestRecorder(seconds),
        routing=stream(seed, "routing"),
        service=stream(seed, "serving"),
        order=stream(seed, "serving-order"),
        timeout=timeout,
    )


def make_server(
    x: Rate,
    u: Rate = cores_of,
    *,
    cores: float = 1.0,
    sigma: float = 0.5,
    overhead: float = 0.0,
    threads: int = 256,
    name: str = "pod-0",
    **kw: object,
) -> Server:
    """A server whose tables are ``x`` and ``u`` for n = 0 .. threads (it never has more)."""

    @functools.cache
    def tables(c: float) -> tuple[list[float], list[float]]:
        rate = [0.0] + [x(c, n) / n for n in range(1, threads + 1)]
        burn = [u(c, n) for n in range(threads + 1)]
        return rate, burn

    return Server(
        name,
        tables=tables,
        cores=cores,
        sigma=sigma,
        overhead=overhead,
        threads=threads,
        now=0.0,
        **kw,  # type: ignore[arg-type]
    )


def profile_server(profile: Profile, cores: float, threads: int = 16) -> Server:
    serving = Serving(warmup=True, rest_api_num_threads=threads)
    return build_server(
        "pod-0", serving, profile, vcpus=cores, cores=cores, now=0.0, quota=None, weight=1.0
    )


def burst(plane: DataPlane, times: list[float]) -> None:
    blocks = iter([times])
    plane.open_loop(lambda: next(blocks, None))


def closed_loop_throughput(users: int, think: float, x: Callable[[int], float]) -> float:
    """A closed network of ``users``: think time ``think`` (an infinite server), then one
    processor-sharing server completing x(n) requests/s with n present. Product form (BCMP,
    insensitive to both distributions): p(n + 1) = p(n) (N - n) / (think x(n + 1))."""
    p = [1.0]
    for n in range(users):
        p.append(p[-1] * (users - n) / (think * x(n + 1)))
    return sum(pn * x(n) for n, pn in enumerate(p) if n) / sum(p)


def measure(plane: DataPlane, warmup: float, horizon: float) -> float:
    plane.advance_to(warmup)
    before = plane.tally.ok
    plane.advance_to(horizon)
    return (plane.tally.ok - before) / (horizon - warmup)


# --- against queueing theory ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("users", "think", "service", "cores"),
    [(5, 2.0, 0.5, 1), (12, 1.0, 0.2, 1), (3, 0.85, 0.68, 1), (8, 1.0, 0.5, 2), (10, 0.5, 0.4, 4)],
)
def test_closed_loop_throughput_matches_machine_repairman(
    users: int, think: float, service: float, cores: int
) -> None:
    """X(n) = n/S up to c cores and flat after: the machine-repairman model with c repairmen."""
    horizon = 10_000
    plane = make_plane(horizon)
    plane.add_endpoint(make_server(parallel(service), cores=cores))
    rng = np.random.default_rng(5)
    for _ in range(users):
        plane.spawn_user(lambda: float(rng.exponential(think)))
    measured = measure(plane, 200, horizon)
    expected = closed_loop_throughput(users, think, lambda n: min(n, cores) / service)
    assert measured == pytest.approx(expected, rel=0.02)


LADDER = {1: 1.0, 2: 1.7, 4: 2.2, 8: 2.25}
"""A measured X(2, n): still climbing at 4, its plateau (within 3%) from 8 on."""


def ladder_profile(sigma: float = 0.5, overhead: float = 0.0) -> Profile:
    return profile_from_dict(
        synthetic(
            threads=(2,),
            concurrency=tuple(LADDER),
            batch=(1,),
            throughput=lambda t, n: LADDER[n],
            cpu=lambda t, n: min(2.0, 0.8 + 0.3 * n),
            sigma=sigma,
            overhead=overhead,
        )
    )


@pytest.mark.parametrize("users", [1, 2, 3, 4, 6, 8, 12])
def test_users_without_think_time_get_the_measured_throughput(users: int) -> None:
    """N requests always in flight complete X(c, N): the ladder's, between its points linearly,
    beyond its end the plateau; and the pod burns U(c, N)."""
    profile = ladder_profile()
    server = profile_server(profile, 2.0)
    plane = make_plane(3000)
    plane.add_endpoint(server)
    for _ in range(users):
        plane.spawn_user(lambda: 0.0)
    plane.advance_to(100)
    server.advance(plane.now)
    cpu_before = server.cpu_seconds
    measured = measure(plane, 100, 3000)
    server.advance(plane.now)
    expected = {3: (1.7 + 2.2) / 2, 6: (2.2 + 2.25) / 2, 12: 2.25}.get(users) or LADDER[users]
    assert profile.throughput(2.0, users) == pytest.approx(expected)
    assert measured == pytest.approx(expected, rel=0.03)
    assert (server.cpu_seconds - cpu_before) / 2900 == pytest.approx(
        profile.cpu_cores(2.0, users), rel=1e-6
    )


def test_overhead_is_time_out_of_the_server() -> None:
    """The overhead delays the next request without occupying the server: a closed network
    whose think time is the overhead (BCMP holds for a fixed delay at an infinite server)."""
    profile = ladder_profile(overhead=1.0)
    plane = make_plane(5000)
    plane.add_endpoint(profile_server(profile, 2.0))
    for _ in range(4):
        plane.spawn_user(lambda: 0.0)
    measured = measure(plane, 100, 5000)
    expected = closed_loop_throughput(4, 1.0, lambda n: profile.throughput(2.0, n))
    assert expected < profile.throughput(2.0, 4) * 0.9  # the overhead matters here
    assert measured == pytest.approx(expected, rel=0.02)
    assert plane.recorder.latency_sum / plane.tally.ok == pytest.approx(4 / measured, rel=0.02)


def test_a_lone_request_takes_the_lone_latency() -> None:
    plane = make_plane(100)
    server = make_server(lambda c, n: 1 / 0.65, sigma=0.0, overhead=0.03)
    plane.add_endpoint(server)
    plane.spawn_user(lambda: 1000.0)
    plane.advance_to(50)
    plane.recorder.close()
    assert plane.tally.ok == 1
    assert plane.recorder.p50[0] == pytest.approx(0.65 + 0.03)


def test_work_is_lognormal_of_mean_one() -> None:
    """Lone requests, far apart: latency = work / X(c, 1), work of mean 1 and spread sigma."""
    profile = ladder_profile(sigma=0.4)
    server = profile_server(profile, 2.0)
    plane = make_plane(40_000)
    plane.add_endpoint(server)
    burst(plane, [10.0 * i for i in range(4000)])
    plane.advance_to(40_000)
    plane.recorder.close()
    assert plane.tally.ok == 4000
    assert plane.recorder.latency_sum / 4000 == pytest.approx(profile.alone_latency(2.0), rel=0.02)
    p50 = plane.recorder.percentile(0.5)
    assert p50 == pytest.approx(math.exp(-(0.4**2) / 2) / LADDER[1], rel=0.02)
    p95 = plane.recorder.percentile(0.95)
    assert p95 is not None and p50 is not None
    assert math.log(p95 / p50) / 1.6449 == pytest.approx(0.4, rel=0.05)


def test_open_loop_saturates_at_the_plateau() -> None:
    # 10 req/s offered to a pod that completes at most 2.25/s: throughput caps there.
    horizon = 1000
    plane = make_plane(horizon)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProfileExtrapolationWarning)  # the ladder has a plateau
        plane.add_endpoint(profile_server(ladder_profile(sigma=0.1), 2.0, threads=16))
    burst(plane, np.arange(0, horizon, 0.1).tolist())
    assert measure(plane, 100, horizon) == pytest.approx(2.25, rel=0.03)


def test_beyond_the_rest_pool_requests_wait_in_order() -> None:
    plane = make_plane(10)
    server = make_server(lambda c, n: 1.0 / 0.3, sigma=0.0, threads=2)  # one core, shared
    plane.add_endpoint(server)
    burst(plane, [1.0, 1.0, 1.0])
    plane.advance_to(1.59)
    assert plane.tally.ok == 0  # the first two share the core: done at 1.6
    assert len(server.jobs) == 2 and len(server.queue) == 1
    plane.advance_to(1.61)
    assert plane.tally.ok == 2 and len(server.jobs) == 1
    plane.advance_to(1.89)
    assert plane.tally.ok == 2
    plane.advance_to(1.91)  # the third, alone from 1.6 on
    assert plane.tally.ok == 3


def test_idle_pod_burns_the_idle_cpu() -> None:
    plane = make_plane(100)
    server = make_server(parallel(0.5), lambda c, n: 0.01 if n == 0 else 1.0, cores=2.0)
    plane.add_endpoint(server)
    plane.advance_to(50)
    server.advance(plane.now)
    assert server.cpu_seconds == pytest.approx(0.5)


# --- failures and bookkeeping -------------------------------------------------------------------


def test_no_endpoint_fails_at_once() -> None:
    plane = make_plane(10)
    plane.spawn_user(lambda: 1.0)
    plane.advance_to(5.5)
    assert plane.tally.ok == 0
    assert plane.tally.failed == 6  # t = 0, 1, ..., 5
    assert plane.recorder.failed[:6] == [1] * 6


def test_timeout_fails_the_request_and_reconnects() -> None:
    plane = make_plane(200, timeout=30.0)
    slow = make_server(parallel(100.0), sigma=0.0)
    plane.add_endpoint(slow)
    plane.spawn_user(lambda: 1.0)
    plane.advance_to(31)
    assert plane.tally.failed == 1 and plane.tally.ok == 0
    assert plane.recorder.failed[30] == 1


def test_kill_fails_in_flight_and_resets_pinned_users() -> None:
    plane = make_plane(100)
    a = make_server(parallel(5.0), sigma=0.0)
    b = make_server(parallel(0.1), sigma=0.0, name="pod-1")
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
    weights=st.tuples(st.floats(0.1, 4.0), st.floats(0.1, 4.0)),
    seed=st.integers(0, 2**16),
)
def test_every_request_is_counted_exactly_once(
    users: int,
    rate: float,
    kill_at: float,
    horizon: int,
    weights: tuple[float, float],
    seed: int,
) -> None:
    plane = make_plane(horizon, timeout=20.0, seed=seed)
    servers = [
        make_server(parallel(0.8), cores=2.0, threads=4, name=f"pod-{i}", weight=w)
        for i, w in enumerate(weights)
    ]
    node = NodeCpu(2.0)  # both on one node: they contend once both are busy
    plane.share_node(node, dict.fromkeys(servers, 2.0))
    for s in servers:
        plane.add_endpoint(s)
    rng = np.random.default_rng(seed)
    arrivals = np.sort(rng.uniform(0, horizon, rng.poisson(rate * horizon))).tolist()
    burst(plane, arrivals)
    for _ in range(users):
        plane.spawn_user(lambda: 0.85)
    plane.advance_to(kill_at)
    plane.kill(servers[0])
    plane.share_node(node, {servers[1]: 2.0})  # as the world does when a pod goes
    plane.stop_user()
    plane.advance_to(float(horizon))
    open_in_flight = sum(
        1 for s in servers for job in [*s.jobs, *s.waiting, *s.queue] if job[3] is None
    )
    users_in_flight = sum(1 for u in plane._users if u.sending >= 0)
    t = plane.tally
    assert t.sent == t.ok + t.failed + t.abandoned + open_in_flight + users_in_flight
    rec = plane.recorder
    assert sum(rec.offered) == t.sent and sum(rec.ok) == t.ok and sum(rec.failed) == t.failed
    assert servers[1].cores == 2.0 and servers[1].node is None  # alone on the node now


# --- a node's CPU shared by demand ---------------------------------------------------------------


def bare_server(name: str, *, cores_alone: float, demand: float, weight: float) -> Server:
    server = make_server(parallel(1.0), cores=cores_alone, threads=1, name=name, weight=weight)
    server.demand = demand
    return server


@settings(max_examples=300, deadline=None)
@given(
    free=st.floats(0.5, 16.0),
    pods=st.lists(
        st.tuples(st.floats(0.5, 8.0), st.just(0.0) | st.floats(0.01, 8.0), st.floats(0.1, 4.0)),
        min_size=1,
        max_size=6,
    ),
)
def test_the_split_is_water_filling_by_weight(
    free: float, pods: list[tuple[float, float, float]]
) -> None:
    """A pod granted cores c of its c_alone burns demand x c / c_alone (the model's assumption):
    never more than it asked, never more than the node has in all; when the demands exceed the
    free CPU all of it is handed out, every pod held below its demand gets the same CPU per
    weight, and a pod given its whole demand wanted no more than that level."""
    node = NodeCpu(free)
    node.servers = [
        bare_server(f"pod-{i}", cores_alone=alone, demand=demand, weight=weight)
        for i, (alone, demand, weight) in enumerate(pods)
    ]
    cores = node.split()
    assert set(cores) == set(node.servers)
    total = sum(s.demand for s in node.servers)
    assert node.demand == pytest.approx(total)
    granted = {s: s.demand * cores[s] / s.cores_alone for s in node.servers}
    for s in node.servers:
        assert 0 < cores[s] <= s.cores_alone * (1 + 1e-9)
        assert granted[s] <= s.demand * (1 + 1e-9)
    if total <= free:
        assert all(cores[s] == s.cores_alone for s in node.servers)
        return
    assert sum(granted.values()) == pytest.approx(free, rel=1e-9)
    held = [s for s in node.servers if granted[s] < s.demand * (1 - 1e-9)]
    assert held  # someone gets less than it wants
    level = granted[held[0]] / held[0].weight
    for s in held:
        assert granted[s] / s.weight == pytest.approx(level, rel=1e-9)
    for s in node.servers:
        if s not in held:
            assert s.demand / s.weight <= level * (1 + 1e-9)


def test_the_split_examples() -> None:
    a = bare_server("a", cores_alone=4.0, demand=4.0, weight=1.0)
    b = bare_server("b", cores_alone=4.0, demand=4.0, weight=1.0)
    node = NodeCpu(4.0)
    node.servers = [a, b]
    assert node.split() == {a: 2.0, b: 2.0}  # equal shares
    a.weight = 3.0
    assert node.split() == {a: 3.0, b: 1.0}  # by weight
    a.weight, a.demand = 1.0, 1.0  # a wants less than its half: b gets the rest
    assert node.split() == {a: 4.0, b: pytest.approx(3.0)}
    b.demand = 3.0  # together within the node: each as alone
    assert node.split() == {a: 4.0, b: 4.0}
    a.demand = 0.0  # idle pods keep their cores_alone whatever the others do
    b.demand = 8.0
    assert node.split() == {a: 4.0, b: pytest.approx(2.0)}


def shared_node(
    weights: tuple[float, float], users: tuple[int, int]
) -> tuple[DataPlane, Server, Server]:
    """Two pods on a node of 4 free cores, each 4 cores when alone; users pinned to each."""
    plane = make_plane(4000)
    a, b = (
        make_server(parallel(0.5), cores=4.0, threads=16, name=name, weight=w)
        for name, w in zip("ab", weights, strict=True)
    )
    plane.share_node(NodeCpu(4.0), {a: 4.0, b: 4.0})
    for server, count in zip((a, b), users, strict=True):
        plane.endpoints = [server]  # a user stays on the pod it connected to
        for _ in range(count):
            plane.spawn_user(lambda: 0.0)
    plane.endpoints = [a, b]
    return plane, a, b


def rates(plane: DataPlane, servers: tuple[Server, ...], start: float, end: float) -> list[float]:
    """Requests/s and cores each server used over [start, end]."""
    plane.advance_to(start)
    for s in servers:
        s.advance(start)
    before = [(s.served, s.cpu_seconds) for s in servers]
    plane.advance_to(end)
    out = []
    for s, (served, cpu) in zip(servers, before, strict=True):
        s.advance(end)
        out += [(s.served - served) / (end - start), (s.cpu_seconds - cpu) / (end - start)]
    return out


@pytest.mark.parametrize(
    ("weights", "users", "cores"),
    [
        ((1.0, 1.0), (4, 0), (4.0, 4.0)),  # b idle: a has the node to itself
        ((1.0, 1.0), (2, 2), (4.0, 4.0)),  # 2 + 2 cores wanted: no contention
        ((1.0, 1.0), (4, 4), (2.0, 2.0)),  # 8 wanted, 4 there: half each
        ((3.0, 1.0), (4, 4), (3.0, 1.0)),  # by CPU request
        ((1.0, 1.0), (1, 8), (4.0, 3.0)),  # a wants 1 of its 2: b gets the other 3
    ],
)
def test_pods_on_a_node_share_its_cpu_by_demand(
    weights: tuple[float, float], users: tuple[int, int], cores: tuple[float, float]
) -> None:
    """X = min(n, c) / 0.5 and U = min(n, c): a pod given c cores completes min(n, c) / 0.5
    requests/s and burns min(n, c) cores."""
    plane, a, b = shared_node(weights, users)
    x_a, u_a, x_b, u_b = rates(plane, (a, b), 100, 1100)
    for x, u, n, c in [(x_a, u_a, users[0], cores[0]), (x_b, u_b, users[1], cores[1])]:
        assert x == pytest.approx(min(n, c) / 0.5, rel=0.03)
        assert u == pytest.approx(min(n, c), rel=1e-6)
    assert u_a + u_b <= 4.0 + 1e-6


def test_cores_come_back_when_the_neighbour_goes_idle() -> None:
    plane, a, b = shared_node((1.0, 1.0), (4, 4))
    plane.advance_to(50)
    assert (a.cores, b.cores) == (2.0, 2.0)
    for _ in range(4):
        plane.stop_user()  # b's users, the newest: their requests in flight finish unrecorded
    plane.advance_to(60)
    assert not b.jobs
    assert (a.cores, b.cores) == (4.0, 4.0)
    x_a, u_a, x_b, u_b = rates(plane, (a, b), 100, 600)
    assert x_a == pytest.approx(4 / 0.5, rel=0.03) and u_a == pytest.approx(4.0)
    assert x_b == 0 and u_b == 0
