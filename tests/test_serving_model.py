"""TF Serving's execution model: CFS throttling, the batch scheduler, cold start, and the server
built from a scenario and a profile."""

from __future__ import annotations

import math
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.dataplane import DataPlane
from sim.errors import ScenarioError
from sim.loader import build_scenario
from sim.recorder import RequestRecorder
from sim.rng import stream
from sim.scenario import Batching, Serving
from sim.serving.model import (
    ASSUMED_COLD_FACTOR,
    build_server,
    cold_factor,
    cores_alone,
    rest_handlers,
)
from sim.serving.profile import ProfileExtrapolationWarning, profile_for, profile_from_dict
from sim.serving.server import CFS_PERIOD, BatchingConfig, Server
from tests.test_dataplane import burst, make_server, parallel
from tests.test_profile import synthetic


def plane(seconds: int = 600) -> DataPlane:
    return DataPlane(
        RequestRecorder(seconds),
        routing=stream(1, "routing"),
        service=stream(1, "serving"),
        order=stream(1, "serving-order"),
        timeout=1e9,
    )


# --- CFS quota -------------------------------------------------------------------------------


def test_cfs_quota_stretches_a_lone_request_period_by_period() -> None:
    # A lone request needs 0.65 s of running and burns 2 cores meanwhile; a 1-core limit lets
    # it run 50 ms of every 100 ms period.
    p = plane()
    s = make_server(lambda c, n: 1 / 0.65, lambda c, n: 2.0 if n else 0.0, sigma=0.0, quota=1.0)
    p.add_endpoint(s)
    burst(p, [0.0])
    p.advance_to(10.0)
    p.recorder.close()
    running_needed = 0.65
    per_period = 1.0 * CFS_PERIOD / 2.0
    full = math.ceil(running_needed / per_period) - 1
    expected = full * CFS_PERIOD + (running_needed - full * per_period)
    assert expected == pytest.approx(1.25)
    assert p.recorder.p50[int(expected)] == pytest.approx(expected)
    assert s.cpu_seconds == pytest.approx(2.0 * 0.65)


def test_cfs_quota_starting_mid_period_uses_what_is_left_of_it() -> None:
    p = plane()
    s = make_server(lambda c, n: 1 / 0.2, lambda c, n: 2.0 if n else 0.0, sigma=0.0, quota=1.0)
    p.add_endpoint(s)
    burst(p, [0.02, 5.08])
    p.advance_to(10.0)
    p.recorder.close()
    # from 0.02: 50 ms to 0.07, throttled to 0.1, then 50 ms a period: 0.02 + 0.05 + 3 x 0.05
    # of running end at 0.35
    assert p.recorder.p50[0] == pytest.approx(0.33)
    # from 5.08: 20 ms to 5.1 (budget left), then 50 ms a period: 0.18 s at 5.4 + 0.03
    assert p.recorder.p50[5] == pytest.approx(5.43 - 5.08)
    assert s.cpu_seconds == pytest.approx(2 * 2.0 * 0.2)


def test_cfs_quota_caps_throughput_at_the_limit_over_the_cpu_per_request() -> None:
    # 4 cores, 0.5 s of one core a request: 8/s unthrottled; a 1.5-core quota allows 3/s.
    p = plane(400)
    s = make_server(parallel(0.5), cores=4.0, sigma=0.1, quota=1.5, threads=8)
    p.add_endpoint(s)
    burst(p, [i * 0.1 for i in range(4000)])  # 10 req/s offered
    for t in range(10, 401, 10):
        p.advance_to(float(t))
        s.advance(p.now)
        assert s.cpu_seconds <= 1.5 * (t + CFS_PERIOD)  # never more than the quota
    assert p.tally.ok / 400 == pytest.approx(1.5 / 0.5, rel=0.02)
    assert s.cpu_seconds / 400 == pytest.approx(1.5, rel=0.01)


def test_a_quota_above_the_burn_does_not_throttle() -> None:
    p = plane(400)
    s = make_server(parallel(0.5), cores=2.0, quota=2.5, threads=8)
    p.add_endpoint(s)
    burst(p, [i * 0.1 for i in range(4000)])
    p.advance_to(400.0)
    assert p.tally.ok / 400 == pytest.approx(2.0 / 0.5, rel=0.02)


def test_without_quota_the_pod_uses_idle_node_cpu() -> None:
    p = plane(400)
    s = make_server(parallel(0.5), cores=4.0, threads=8)
    p.add_endpoint(s)
    burst(p, [i * 0.1 for i in range(4000)])
    p.advance_to(400.0)
    assert p.tally.ok / 400 == pytest.approx(4.0 / 0.5, rel=0.02)


# --- TF Serving's batch scheduler --------------------------------------------------------------


def batching(**kw: object) -> BatchingConfig:
    options: dict[str, object] = dict(
        max_batch_size=4,
        batch_timeout=0.05,
        num_batch_threads=1,
        max_enqueued_batches=10,
        cost=float,  # a batch of b takes b lone requests' time
    )
    options.update(kw)
    return BatchingConfig(**options)  # type: ignore[arg-type]


def test_a_lone_request_waits_for_the_batch_timeout() -> None:
    p = plane()
    p.add_endpoint(make_server(parallel(0.2), sigma=0.0, batching=batching()))
    burst(p, [1.0])
    p.advance_to(5.0)
    p.recorder.close()
    assert p.recorder.p50[1] == pytest.approx(0.05 + 0.2)


def test_full_batches_leave_at_once_and_share_one_run() -> None:
    # 8 requests at t=1: two full batches of 4; one batch thread runs them one after the other.
    p = plane()
    sqrt = batching(batch_timeout=10.0, cost=lambda b: b**0.5)
    p.add_endpoint(make_server(parallel(0.2), sigma=0.0, batching=sqrt))
    burst(p, [1.0] * 8)
    p.advance_to(5.0)
    p.recorder.close()
    batch = 0.2 * 4**0.5  # a batch of 4 at sqrt cost
    assert p.tally.ok == 8
    assert p.recorder.p50[1] == pytest.approx(batch)  # the first four
    assert p.recorder.p99[1] == pytest.approx(2 * batch)  # the last four


def test_batch_threads_run_batches_side_by_side() -> None:
    # Two batch threads on 2 cores: both batches of 4 run at once, each on one core.
    p = plane()
    two = batching(batch_timeout=10.0, num_batch_threads=2)
    p.add_endpoint(make_server(parallel(0.2), cores=2.0, sigma=0.0, batching=two))
    burst(p, [1.0] * 8)
    p.advance_to(5.0)
    p.recorder.close()
    assert p.tally.ok == 8
    assert p.recorder.p50[1] == pytest.approx(4 * 0.2)
    assert p.recorder.p99[1] == pytest.approx(4 * 0.2)


def test_a_full_queue_rejects_with_unavailable() -> None:
    p = plane()
    config = batching(max_batch_size=1, max_enqueued_batches=1)
    p.add_endpoint(make_server(parallel(1.0), sigma=0.0, batching=config))
    burst(p, [1.0] * 5)
    p.advance_to(20.0)
    # One runs, one waits in the queue, three are turned away at once.
    assert (p.tally.ok, p.tally.failed) == (2, 3)
    assert p.recorder.failed[1] == 3


# --- cold start ----------------------------------------------------------------------------------


def test_cold_start_slows_the_first_requests_only() -> None:
    p = plane()
    p.add_endpoint(make_server(parallel(0.4), sigma=0.0, cold_requests=1, cold_factor=3.0))
    burst(p, [1.0, 5.0])
    p.advance_to(10.0)
    p.recorder.close()
    assert p.recorder.p50[2] == pytest.approx(3 * 0.4)  # done at 2.2
    assert p.recorder.p50[5] == pytest.approx(0.4)


def test_a_limit_below_its_request_is_rejected() -> None:
    data = {"deployment": {"resources": {"requests": {"cpu": "3"}, "limits": {"cpu": "2"}}}}
    with pytest.raises(ScenarioError, match=r"limits\.cpu must be greater than or equal"):
        build_scenario(data, "<test>")


# --- the server a scenario and a profile make ---------------------------------------------------


def test_cold_factor_comes_from_the_scenario_the_profile_or_the_assumption() -> None:
    measured = profile_from_dict(synthetic(defaults={"threads": 2, "cold_factor": 7.5}))
    unknown = profile_from_dict(synthetic())
    assert cold_factor(Serving(), measured) == 7.5
    assert cold_factor(Serving(), unknown) == ASSUMED_COLD_FACTOR
    assert cold_factor(Serving(cold_factor=2.0), measured) == 2.0


def test_intra_op_threads_bound_the_cores_alone() -> None:
    assert cores_alone(Serving(), 3.6) == 3.6
    assert cores_alone(Serving(intra_op_threads=2), 3.6) == 2.0
    assert cores_alone(Serving(intra_op_threads=8), 3.6) == 3.6


@given(pool=st.integers(1, 512))
def test_the_rest_pool_serves_one_request_fewer_than_its_threads(pool: int) -> None:
    """The HTTP event loop runs on one of the pool's threads for good; a pool of 1 is modelled
    as 1 handler (TF Serving itself would serve nothing)."""
    assert rest_handlers(pool) == max(1, pool - 1)


def test_the_eighth_request_on_two_vcpus_waits_for_a_rest_handler() -> None:
    """2 vCPUs: a pool of 8, 7 handlers; of eight requests at once the eighth waits."""
    profile = profile_from_dict(synthetic(threads=(2,)))
    server = build_server(
        "pod", Serving(warmup=True), profile, vcpus=2, cores=2.0, now=0.0, quota=None, weight=1.0
    )
    assert server.threads == 7
    p, log = logged()
    p.add_endpoint(server)
    burst(p, [0.0] * 8)
    p.advance_to(0.001)
    assert server.n == 7 and len(server.queue) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProfileExtrapolationWarning)
        p.advance_to(60.0)
    assert len(log.ok) == 8 and not server.queue


def test_the_built_server_reads_the_profile_at_its_cores() -> None:
    profile = profile_from_dict(
        synthetic(threads=(1, 4), sigma=lambda t: 0.1 * t, overhead=0.02, idle=0.01)
    )
    server = build_server(
        "pod", Serving(), profile, vcpus=4, cores=2.0, now=3.0, quota=1.5, weight=2.0
    )
    # --rest_api_num_threads' default, 4 x vCPUs, less the thread TF Serving's HTTP event loop
    # holds for good (net_http EvHTTPServer::StartAcceptingRequests)
    assert server.threads == 15
    assert server.top == 15  # the tables reach as far as requests can be in flight
    assert server.cores == server.cores_alone == 2.0
    assert (server.quota, server.weight, server.last) == (1.5, 2.0, 3.0)
    # The default discipline, inter_op: TensorFlow's inter-op pool has a thread per vCPU, so 4
    # requests progress together and a freed place goes to a waiting one at random.
    assert server.width == 4 and server.random_entry
    # work spread: the latency spread measured with that many in flight, up to the 4 that
    # progress together (beyond, the model makes the waiting's spread itself)
    assert server.spread[1] == pytest.approx(profile.sigma(2.0))
    assert server.spread[3] == pytest.approx(profile.spread(2.0, 3))
    assert server.spread[9] == pytest.approx(profile.spread(2.0, 4))
    assert profile.spread(2.0, 9) != profile.spread(2.0, 4)
    fifo = build_server(
        "pod", Serving(discipline="fifo"), profile, vcpus=4, cores=2.0, now=0, quota=None, weight=1
    )
    assert (fifo.width, fifo.random_entry) == (1, False)
    assert fifo.spread[9] == pytest.approx(profile.spread(2.0, 9))
    two = build_server(
        "pod", Serving(inter_op_threads=2), profile, vcpus=4, cores=2.0, now=0, quota=None, weight=1
    )
    assert two.width == 2  # --tensorflow_inter_op_parallelism set
    ps = build_server(
        "pod", Serving(discipline="ps"), profile, vcpus=4, cores=2.0, now=0, quota=None, weight=1
    )
    assert ps.width == ps.top  # all of them
    assert server.overhead == 0.02
    assert server.cold_left == 1 and server.cold_factor == ASSUMED_COLD_FACTOR
    for n in range(1, 16):
        assert server.rate[n] * n == pytest.approx(profile.throughput(2.0, n))
        assert server.burn[n] == pytest.approx(profile.cpu_cores(2.0, n))
    assert server.burn[0] == 0.01
    server.set_cores(1.0)  # contended: the profile at fewer cores
    assert server.rate[1] == pytest.approx(profile.throughput(1.0, 1))
    assert server.burn_alone[4] == pytest.approx(profile.cpu_cores(2.0, 4))  # still alone's
    assert server.batching is None

    serving = Serving(
        rest_api_num_threads=3,
        warmup=True,
        batching=Batching(max_batch_size=8, num_batch_threads=6),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProfileExtrapolationWarning)  # batch 8 > 4 measured
        batched = build_server(
            "pod", serving, profile, vcpus=4, cores=2.0, now=0.0, quota=None, weight=1.0
        )
        assert batched.threads == 2 and batched.top == 6  # batch threads beyond the REST pool
        assert batched.cold_left == 0  # the warmup records paid the first-run cost
        config = batched.batching
        assert config is not None and config.num_batch_threads == 6
        for b in (1, 2, 4, 8):
            assert config.cost(b) == pytest.approx(profile.batch_cost(2.0, b))
    assert config.cost(2) < config.cost(4) < config.cost(8)
    default = build_server(
        "pod", Serving(batching=Batching()), profile, vcpus=4, cores=2, now=0, quota=None, weight=1
    ).batching
    assert default is not None and default.num_batch_threads == 4  # default: vCPUs


def test_intra_op_threads_pick_the_profile_point() -> None:
    """A lone request alone on the pod takes the profile's lone latency at its cores: the
    intra-op pool's size, else the node's free CPU."""
    from sim.engine import simulate

    def lone(extra: dict[str, object]) -> tuple[float, float]:
        data = {
            "duration": "10m",
            "cluster": {"node_pool": {"machine_type": "e2-standard-4"}},
            "serving": extra,
            "load": {"kind": "open_loop", "rate": {"kind": "constant", "rps": 0.05}},
        }
        scenario = build_scenario(data, "<lone>")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ProfileExtrapolationWarning)
            p50 = simulate(scenario).summary["latency_p50"]
        assert p50 is not None
        return float(p50), 4 - scenario.cluster.system_cpu_usage / 1000

    profile = profile_for("resnet101-tfserving", "e2-standard-4")

    def median(cores: float) -> float:  # lognormal work of mean 1
        return profile.overhead_s + math.exp(-(profile.sigma(cores) ** 2) / 2) / profile.throughput(
            cores, 1
        )

    one, _ = lone({"intra_op_threads": 1})
    assert one == pytest.approx(median(1.0), rel=0.05)
    every, free = lone({})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProfileExtrapolationWarning)
        assert every == pytest.approx(median(free), rel=0.05)
    assert every < one


# --- after idle ----------------------------------------------------------------------------------


def after_idle(gap: float) -> float:
    """1 back to back, rising to 1.5 after a second or more idle."""
    return 1.0 + 0.5 * min(gap, 1.0)


class Log:
    """A recorder that keeps every response (done, latency)."""

    def __init__(self) -> None:
        self.ok: list[tuple[float, float]] = []

    def offer(self, t: float) -> None:
        pass

    def offer_many(self, times: list[float]) -> None:
        pass

    def complete_many(self, times: list[float], latencies: list[float]) -> None:
        self.ok += zip(times, latencies, strict=True)

    def fail(self, *args: object) -> None:
        raise AssertionError(f"no request should fail: {args}")


def logged() -> tuple[DataPlane, Log]:
    log = Log()
    p = DataPlane(
        log,  # type: ignore[arg-type]
        routing=stream(1, "routing"),
        service=stream(1, "serving"),
        order=stream(1, "serving-order"),
        timeout=1e9,
    )
    return p, log


def responses(server: Server, arrivals: list[float], until: float) -> list[tuple[float, float]]:
    """(done, latency) of open-loop ``arrivals`` at ``server``."""
    p, log = logged()
    p.add_endpoint(server)
    burst(p, arrivals)
    p.advance_to(until)
    return log.ok


def test_a_request_that_finds_the_server_idle_pays_for_the_gap() -> None:
    # idle since 0: 0.6 s idle -> 1.3 x 0.4 s, done 1.12; then 1.18 s -> 1.5 x; then 0.05 s
    server = make_server(parallel(0.4), sigma=0.0, after_idle=after_idle)
    done = responses(server, [0.6, 2.3, 2.95], 10.0)
    assert [lat for _, lat in done] == pytest.approx([0.52, 0.6, 0.41])
    # the CPU follows the work: one core busy for each request's whole time
    assert server.cpu_seconds == pytest.approx(0.52 + 0.6 + 0.41)


def after_idle_cpu(gap: float) -> float:
    """The CPU grows half as much as the work: 1.25 after a second or more idle."""
    return 1.0 + 0.25 * min(gap, 1.0)


def test_a_lone_request_after_idle_burns_the_cpu_factor_of_its_work() -> None:
    """The same requests as above with a CPU factor of their own: the latencies stand, and each
    burns 0.4 s x its CPU factor (1.15, 1.25, 1.0125), not its whole time (in process here the
    CPU after idle grew 0.03-0.1 less than the latency)."""
    server = make_server(
        parallel(0.4), sigma=0.0, after_idle=after_idle, after_idle_cpu=after_idle_cpu
    )
    done = responses(server, [0.6, 2.3, 2.95], 10.0)
    assert [lat for _, lat in done] == pytest.approx([0.52, 0.6, 0.41])
    assert server.cpu_seconds == pytest.approx(0.4 * (1.15 + 1.25 + 1.0125))


def test_the_cpu_factor_ends_when_another_request_joins() -> None:
    """Two cores: A pays 1.5 x the work and 1.25 x the CPU for its idle second; B joins at 1.1,
    and from then both burn U(2) = 2 cores as back-to-back requests do. Only A's 0.1 s alone is
    scaled, by 1.25 / 1.5."""
    kw = {"cores": 2.0, "sigma": 0.0, "after_idle": after_idle}
    plain = make_server(parallel(0.4), **kw)  # type: ignore[arg-type]
    scaled = make_server(parallel(0.4), after_idle_cpu=after_idle_cpu, **kw)  # type: ignore[arg-type]
    assert responses(scaled, [1.0, 1.1], 10.0) == responses(plain, [1.0, 1.1], 10.0)
    assert plain.cpu_seconds - scaled.cpu_seconds == pytest.approx(0.1 * (1 - 1.25 / 1.5))


def test_a_closed_loop_user_burns_the_cpu_factor_as_open_loop_arrivals_do() -> None:
    """The ``_serve`` / ``pop_done`` path: 0.6 s and 1.18 s idle, CPU 0.4 x (1.15 + 1.25)."""
    p, log = logged()
    server = make_server(
        parallel(0.4), sigma=0.0, after_idle=after_idle, after_idle_cpu=after_idle_cpu
    )
    p.add_endpoint(server)
    p.advance_to(0.6)
    p.spawn_user(lambda: 1.18)
    p.advance_to(2.9)
    assert [lat for _, lat in log.ok] == pytest.approx([0.52, 0.6])
    assert server.cpu_seconds == pytest.approx(0.4 * (1.15 + 1.25))


def test_a_request_that_finds_the_server_busy_does_not() -> None:
    # two cores: the first pays 1.5 x (idle 1 s), the second joins it at 1.1 and does not
    server = make_server(parallel(0.4), cores=2.0, sigma=0.0, after_idle=after_idle)
    done = responses(server, [1.0, 1.1], 10.0)
    assert done == [
        (pytest.approx(1.5), pytest.approx(0.4)),
        (pytest.approx(1.6), pytest.approx(0.6)),
    ]


def test_a_colliding_pair_ends_closer_than_it_started() -> None:
    """One core shared equally, requests at 1.0 and 1.05: without the factor they end 0.05 s
    apart as they started (A 0.35 s left when B joins: 1.75, then B 1.8); when A paid 1.5 x for
    its idle second, B ends first (1.85) and A 0.15 s after: the pull between colliding users
    measured in process (``calibrate.idle``), which equal sharing alone cannot make."""
    plain = make_server(parallel(0.4), sigma=0.0)
    assert responses(plain, [1.0, 1.05], 10.0) == [
        (pytest.approx(1.75), pytest.approx(0.75)),
        (pytest.approx(1.8), pytest.approx(0.75)),
    ]
    paid = make_server(parallel(0.4), sigma=0.0, after_idle=after_idle)
    assert responses(paid, [1.0, 1.05], 10.0) == [
        (pytest.approx(1.85), pytest.approx(0.8)),
        (pytest.approx(2.0), pytest.approx(1.0)),
    ]


def test_a_closed_loop_user_pays_as_open_loop_arrivals_do() -> None:
    """A user's requests go through ``_serve`` and ``pop_done``, not the open loop's inlined
    path: sent at 0.6 (0.6 s idle: 0.52 s), then 1.18 s after the answer (0.6 s)."""
    p, log = logged()
    p.add_endpoint(make_server(parallel(0.4), sigma=0.0, after_idle=after_idle))
    p.advance_to(0.6)
    p.spawn_user(lambda: 1.18)
    p.advance_to(4.0)
    assert log.ok == [
        (pytest.approx(1.12), pytest.approx(0.52)),
        (pytest.approx(2.9), pytest.approx(0.6)),
    ]


def test_the_built_server_takes_the_profile_s_after_idle_factors() -> None:
    plain = profile_from_dict(synthetic(threads=(2,)))
    assert (
        build_server(
            "p", Serving(warmup=True), plain, vcpus=2, cores=2.0, now=0.0, quota=None, weight=1.0
        ).after_idle
        is None
    )
    data = synthetic(threads=(2,))
    data["defaults"]["after_idle"] = {"gap_s": [0.1, 1.0], "factor": [1.1, 1.3]}
    profile = profile_from_dict(data)
    server = build_server(
        "p", Serving(warmup=True), profile, vcpus=2, cores=2.0, now=0.0, quota=None, weight=1.0
    )
    assert server.after_idle is not None and server.after_idle(0.55) == pytest.approx(1.2)
    assert server.after_idle_cpu is None  # no CPU factor measured: the CPU follows the work
    data["defaults"]["after_idle"]["cpu_factor"] = [1.05, 1.1]
    server = build_server(
        "p", Serving(warmup=True), profile_from_dict(data), vcpus=2, cores=2.0, now=0.0,
        quota=None, weight=1.0,
    )  # fmt: skip
    assert server.after_idle_cpu is not None
    assert server.after_idle_cpu(0.55) == pytest.approx(1.075)
