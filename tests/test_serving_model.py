"""TF Serving's execution model: CFS throttling, the batch scheduler, cold start."""

from __future__ import annotations

import math

import pytest

from sim.dataplane import CFS_PERIOD, BatchingConfig, DataPlane, Server
from sim.errors import ScenarioError
from sim.loader import build_scenario
from sim.recorder import RequestRecorder
from sim.rng import stream


def plane(seconds: int = 600) -> DataPlane:
    return DataPlane(
        RequestRecorder(seconds),
        routing=stream(1, "routing"),
        service=stream(1, "serving"),
        timeout=1e9,
    )


def server(work: float, **kw: object) -> Server:
    options: dict[str, object] = dict(
        capacity=4.0,
        parallelism=2.0,
        median=work,
        sigma=0.0,
        overhead=0.0,
        idle_cores=0.0,
        threads=10_000,
        now=0.0,
    )
    options.update(kw)
    return Server("pod", **options)  # type: ignore[arg-type]


def burst(p: DataPlane, times: list[float]) -> None:
    blocks = iter([times])
    p.open_loop(lambda: next(blocks, None))


def test_cfs_quota_stretches_a_lone_request_period_by_period() -> None:
    # 1.3 CPU-s at parallelism 2 under a 1-core limit: 50 ms of running per 100 ms period.
    p = plane()
    s = server(1.3, quota=1.0)
    p.add_endpoint(s)
    burst(p, [0.0])
    p.advance_to(10.0)
    p.recorder.close()
    running_needed = 1.3 / 2.0
    per_period = 1.0 * CFS_PERIOD / 2.0
    full = math.ceil(running_needed / per_period) - 1
    expected = full * CFS_PERIOD + (running_needed - full * per_period)
    assert p.recorder.p50[int(expected)] == pytest.approx(expected)
    assert s.cpu_seconds == pytest.approx(1.3)


def test_cfs_quota_caps_throughput_at_limit_over_work() -> None:
    p = plane(400)
    s = server(0.5, quota=1.5, threads=8)
    p.add_endpoint(s)
    burst(p, [i * 0.1 for i in range(4000)])  # 10 req/s offered, 3 req/s allowed
    p.advance_to(400.0)
    assert p.tally.ok / 400 == pytest.approx(1.5 / 0.5, rel=0.02)
    assert s.cpu_seconds / 400 == pytest.approx(1.5, rel=0.02)


def test_without_quota_the_pod_uses_idle_node_cpu() -> None:
    p = plane(400)
    s = server(0.5, threads=8)
    p.add_endpoint(s)
    burst(p, [i * 0.1 for i in range(4000)])
    p.advance_to(400.0)
    assert p.tally.ok / 400 == pytest.approx(4.0 / 0.5, rel=0.02)


def batching(**kw: object) -> BatchingConfig:
    options: dict[str, object] = dict(
        max_batch_size=4,
        batch_timeout=0.05,
        num_batch_threads=1,
        max_enqueued_batches=10,
        cost=float,  # a batch of b costs b requests' CPU
    )
    options.update(kw)
    return BatchingConfig(**options)  # type: ignore[arg-type]


def test_a_lone_request_waits_for_the_batch_timeout() -> None:
    p = plane()
    p.add_endpoint(server(0.2, batching=batching(num_batch_threads=1)))
    burst(p, [1.0])
    p.advance_to(5.0)
    p.recorder.close()
    assert p.recorder.p50[1] == pytest.approx(0.05 + 0.2 / 2.0)


def test_full_batches_leave_at_once_and_share_one_run() -> None:
    # 8 requests at t=1: two full batches of 4; one batch thread runs them one after the other.
    p = plane()
    sqrt = batching(batch_timeout=10.0, cost=lambda b: b**0.5)
    p.add_endpoint(server(0.2, batching=sqrt))
    burst(p, [1.0] * 8)
    p.advance_to(5.0)
    p.recorder.close()
    batch = 0.2 * 4**0.5 / 2.0  # CPU of a batch of 4 at sqrt cost, run at parallelism 2
    assert p.tally.ok == 8
    assert p.recorder.p50[1] == pytest.approx(batch)  # the first four
    assert p.recorder.p99[1] == pytest.approx(2 * batch)  # the last four


def test_a_full_queue_rejects_with_unavailable() -> None:
    p = plane()
    p.add_endpoint(server(1.0, batching=batching(max_batch_size=1, max_enqueued_batches=1)))
    burst(p, [1.0] * 5)
    p.advance_to(20.0)
    # One runs, one waits in the queue, three are turned away at once.
    assert (p.tally.ok, p.tally.failed) == (2, 3)
    assert p.recorder.failed[1] == 3


def test_cold_start_slows_the_first_requests_only() -> None:
    p = plane()
    p.add_endpoint(server(0.4, cold_requests=1, cold_factor=3.0))
    burst(p, [1.0, 5.0])
    p.advance_to(10.0)
    p.recorder.close()
    assert p.recorder.p50[1] == pytest.approx(3 * 0.4 / 2.0)
    assert p.recorder.p50[5] == pytest.approx(0.4 / 2.0)


def test_a_limit_below_its_request_is_rejected() -> None:
    data = {"deployment": {"resources": {"requests": {"cpu": "3"}, "limits": {"cpu": "2"}}}}
    with pytest.raises(ScenarioError, match=r"limits\.cpu must be greater than or equal"):
        build_scenario(data, "<test>")


def test_batch_cost_and_cold_factor_come_from_the_profile() -> None:
    from sim.profile import profile_for
    from sim.scenario import Serving
    from sim.world import ASSUMED_COLD_FACTOR, batch_cost, cold_factor

    profile = profile_for("resnet101-tfserving", "e2-standard-4")
    cost = batch_cost(profile)
    assert cost(1) == pytest.approx(1.0)
    assert cost(1) < cost(2) < cost(4)  # a bigger batch burns more CPU in all
    assert cold_factor(Serving(), profile) == (profile.cold_factor or ASSUMED_COLD_FACTOR)
    assert cold_factor(Serving(cold_factor=2.0), profile) == 2.0


def test_intra_op_threads_pick_the_profile_point() -> None:
    from sim.engine import simulate
    from sim.profile import profile_for

    def lone_p50(extra: dict[str, object]) -> float:
        data = {
            "duration": "10m",
            "cluster": {"node_pool": {"machine_type": "e2-standard-4"}},
            "serving": extra,
            "load": {"kind": "open_loop", "rate": {"kind": "constant", "rps": 0.05}},
        }
        p50 = simulate(build_scenario(data, "<lone>")).summary["latency_p50"]
        assert p50 is not None
        return float(p50)

    profile = profile_for("resnet101-tfserving", "e2-standard-4")
    one = profile.service(1)
    # A lone request alone on the pod: its latency is the profile's at that many threads.
    assert lone_p50({"intra_op_threads": 1}) == pytest.approx(
        profile.overhead_s + one.cpu_seconds_median / one.parallelism, rel=0.05
    )
    assert lone_p50({}) == pytest.approx(profile.alone_latency(), rel=0.05)
