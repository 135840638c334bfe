"""Run one scenario through the simulator and return its Trace."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from typing import Any

import simpy

from sim import __version__, hpa
from sim.cluster.ca.model import NodePhase
from sim.cluster.ca.options import AutoscalerOptions, Expander
from sim.cluster.ca.options import Profile as CAProfile
from sim.cluster.cost import NodeRecord, RunningBill, cluster_cost
from sim.controllers import AutoscalerLoop, HPALoop, MetricsServer, cpu_utilization
from sim.dataplane import DataPlane
from sim.diagnosis import causes
from sim.loader import scenario_sha256
from sim.loadgen import locust_runner, open_loop_source
from sim.locust_csv import from_recorder
from sim.objects import Node
from sim.podseries import PodSeries
from sim.recorder import RequestRecorder
from sim.rng import stream
from sim.runinfo import settings
from sim.scenario import LocustLoad, Scenario
from sim.trace import COLUMNS, Cell, Trace, timeline_figures
from sim.world import World

Progress = Callable[[float], None]


def _cpu_target(spec: hpa.HorizontalPodAutoscalerSpec | None) -> int | None:
    if spec is None:
        return None
    for metric in spec.metrics or []:
        resource = getattr(metric, "resource", None)
        if resource is not None and resource.name == "cpu":
            return resource.target.averageUtilization
    return None


def controller_config(scenario: Scenario) -> hpa.ControllerConfig:
    flags = scenario.hpa_controller
    return hpa.ControllerConfig(
        sync_period=flags.sync_period,
        tolerance=flags.tolerance,
        downscale_stabilization_window=flags.downscale_stabilization,
        cpu_initialization_period=flags.cpu_initialization_period,
        initial_readiness_delay=flags.initial_readiness_delay,
    )


def autoscaler_options(scenario: Scenario) -> AutoscalerOptions:
    flags = scenario.cluster.autoscaler
    return AutoscalerOptions(
        scan_interval=flags.scan_interval,
        scale_down_unneeded_time=flags.scale_down_unneeded_time,
        scale_down_delay_after_add=flags.scale_down_delay_after_add,
        utilization_threshold=flags.scale_down_utilization_threshold,
        max_node_provision_time=flags.max_node_provision_time,
        expander=Expander(flags.expander),
        profile=CAProfile(flags.profile),
    )


def simulate(
    scenario: Scenario, *, seed: int | None = None, progress: Progress | None = None
) -> Trace:
    """Simulate ``scenario``; the same scenario and seed always give the same trace."""
    started = time.perf_counter()
    seed = scenario.seed if seed is None else seed
    seconds = max(1, math.ceil(scenario.duration))
    env = simpy.Environment()
    recorder = RequestRecorder(seconds)
    plane = DataPlane(
        recorder,
        routing=stream(seed, "routing"),
        service=stream(seed, "serving"),
        order=stream(seed, "serving-order"),
        timeout=scenario.serving.request_timeout,
    )
    world = World(env, scenario, plane, seed)
    for pool in scenario.cluster.pools:
        for _ in range(pool.start_nodes):
            node = world.add_node(pool.name, ready=True)
            if scenario.start == "warm":
                node.images.add(scenario.deployment.image)
    if scenario.start == "warm":
        world.start_warm()
    else:
        world.reconcile_replicaset()

    metrics = MetricsServer(world, scenario.metrics.resolution)
    env.process(metrics.run())
    hpa_loop = None
    if scenario.hpa is not None:
        hpa_loop = HPALoop(world, metrics, scenario.hpa.to_core(), controller_config(scenario))
        env.process(hpa_loop.run())
    if scenario.cluster.autoscaler.enabled:
        env.process(
            AutoscalerLoop(world, autoscaler_options(scenario), stream(seed, "autoscaler")).run()
        )
    if isinstance(scenario.load, LocustLoad):
        env.process(locust_runner(env, plane, scenario.load, seed, world.sync, world.log))
    else:
        plane.open_loop(open_loop_source(scenario.load, stream(seed, "load"), scenario.duration))

    cpu_target = _cpu_target(scenario.hpa)
    gauges: dict[str, list[Cell]] = {c: [] for c in COLUMNS}
    pod_series = PodSeries(scenario.duration)
    bill = RunningBill(management_fee=scenario.cluster.management_fee)
    live: list[tuple[str, NodeRecord]] = []
    live_version = -1

    def running_cost(t: float) -> float:
        """:func:`_cost` for the per-second gauge (retired nodes billed once; the live nodes'
        records listed again only when a node comes or goes)."""
        nonlocal live, live_version
        if live_version != world.node_version:
            live = [(n.name, _billed(n)) for n in world.nodes]
            live_version = world.node_version
        retiring = [(n.name, _billed(n)) for n in world.retired_nodes[bill.retired :]]
        return bill.total(live, retiring, t)

    def sample() -> Generator[Any, Any, None]:
        for t in range(seconds):
            if t > env.now:
                yield env.timeout(t - env.now)
            world.sync()
            # The world keeps these counts as pods and nodes change: no walk over them here.
            phases = world.node_phases
            gauges["t"].append(t)
            gauges["users"].append(plane.active_users())
            gauges["replicas_desired"].append(world.replicas)
            gauges["replicas_current"].append(world.active_count)
            gauges["replicas_ready"].append(world.ready_count)
            gauges["replicas_pending"].append(world.pending_count)
            gauges["nodes_ready"].append(phases[NodePhase.READY])
            gauges["nodes_provisioning"].append(
                phases[NodePhase.REQUESTED] + phases[NodePhase.PROVISIONING]
            )
            gauges["cpu_utilization"].append(
                cpu_utilization(hpa_loop.last) if hpa_loop is not None else None
            )
            gauges["cpu_target"].append(cpu_target)
            gauges["cost_usd"].append(round(running_cost(float(t)), 6))
            recorder.snapshot(t)
            if pod_series.due(t):
                pod_series.sample(t, world.pods, plane.connections())
            if progress is not None:
                progress(float(t))

    env.process(sample())
    env.run(until=scenario.duration)
    plane.advance_to(scenario.duration)
    recorder.close()

    columns = dict(gauges)
    columns["offered_rps"] = list(recorder.offered)
    columns["completed_rps"] = list(recorder.ok)
    columns["failed_rps"] = list(recorder.failed)
    columns["latency_p50"] = list(recorder.p50)
    columns["latency_p95"] = list(recorder.p95)
    columns["latency_p99"] = list(recorder.p99)
    columns = {name: columns[name] for name in COLUMNS}
    wall = time.perf_counter() - started
    summary = _summary(scenario, seed, world, plane, recorder, columns, wall)
    summary["causes"] = causes(columns, world.events, summary, pod_series.columns)
    summary["settings"] = settings(scenario)
    locust = from_recorder(
        recorder,
        gauges["users"],
        model=scenario.deployment.model_name,
        timeout=scenario.serving.request_timeout,
        duration=scenario.duration,
    )
    return Trace(
        columns=columns,
        events=world.events,
        summary=summary,
        pods=dict(pod_series.columns),
        locust=locust,
        latency_histogram=recorder.latency_histogram(),
    )


def _billed(node: Node) -> NodeRecord:
    """What billing needs of a node: pool, machine type, created, deleted (None: running)."""
    return (node.pool, node.machine, node.created, node.deleted_at)


def _cost(world: World, t: float) -> float:
    records = [_billed(n) for n in (*world.retired_nodes, *world.nodes)]
    return cluster_cost(records, t, management_fee=world.scenario.cluster.management_fee)


def _node_hours(world: World, t: float) -> float:
    nodes = (*world.retired_nodes, *world.nodes)
    return (
        sum((min(t, n.deleted_at if n.deleted_at is not None else t) - n.created) for n in nodes)
        / 3600
    )


def _summary(
    scenario: Scenario,
    seed: int,
    world: World,
    plane: DataPlane,
    recorder: RequestRecorder,
    columns: dict[str, list[Cell]],
    wall: float,
) -> dict[str, Any]:
    tally = plane.tally
    cost = _cost(world, scenario.duration)
    p50, p95, p99 = (recorder.percentile(q) for q in (0.50, 0.95, 0.99))
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "duration_s": scenario.duration,
        "requests_total": tally.sent,
        "requests_ok": tally.ok,
        "requests_failed": tally.failed,
        "requests_abandoned": tally.abandoned,
        "requests_in_flight": plane.in_flight(),
        "failures_by_reason": {
            str(reason): tally.count for reason, tally in sorted(recorder.failures.items())
        },
        "latency_mean": recorder.latency_sum / tally.ok if tally.ok else None,
        "latency_p50": p50,
        "latency_p95": p95,
        "latency_p99": p99,
        **timeline_figures(columns, world.events),
        "node_hours": round(_node_hours(world, scenario.duration), 6),
        "cost_usd": round(cost, 6),
        "cost_per_million_requests": round(cost / tally.ok * 1e6, 4) if tally.ok else None,
        "slo": slo_checks(scenario, p50, p95, p99, tally.failed, tally.sent),
        "wall_seconds": round(wall, 3),
        "sim_requests_per_wall_second": round(tally.sent / wall) if wall > 0 else None,
        "seed": seed,
        "scenario_sha256": scenario_sha256(scenario),
        "version": __version__,
    }
    return summary


def slo_checks(
    scenario: Scenario,
    p50: float | None,
    p95: float | None,
    p99: float | None,
    failed: int,
    sent: int,
) -> dict[str, Any] | None:
    slo = scenario.slo
    if slo is None:
        return None
    checks: dict[str, Any] = {}
    for name, limit, value in (("p50", slo.p50, p50), ("p95", slo.p95, p95), ("p99", slo.p99, p99)):
        if limit is not None:
            checks[name] = {
                "limit": limit,
                "value": value,
                "met": value is not None and value <= limit,
            }
    if slo.error_rate is not None:
        rate = failed / sent if sent else 0.0
        checks["error_rate"] = {
            "limit": slo.error_rate,
            "value": rate,
            "met": rate <= slo.error_rate,
        }
    return {"checks": checks, "met": all(c["met"] for c in checks.values())}
