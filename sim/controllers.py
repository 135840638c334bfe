"""Control loops as SimPy processes: metrics-server, the HPA controller, the cluster autoscaler.

Each loop is the same few lines: wait for its period, observe, call a pure decision core,
apply the result, log it. The decisions themselves live in ``sim.hpa`` and ``sim.cluster``.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim import hpa
from sim.cluster.autoscaler import decide
from sim.cluster.ca.model import AutoscalerState, ClusterSnapshot, NodePhase, NodeSnapshot
from sim.cluster.ca.options import AutoscalerOptions
from sim.hpa.types import HPASpec
from sim.objects import PodPhase
from sim.world import WARM_START_AGE, World


@dataclass
class Scrape:
    t: float
    cpu_seconds: float
    served: int


@dataclass
class MetricsServer:
    """metrics-server: every ``resolution`` it reads each pod's cumulative CPU from the kubelet;
    a pod's usage is the rate between its last two scrapes (so a new pod has none for a while)."""

    world: World
    resolution: float
    history: dict[str, tuple[Scrape, Scrape | None]] = field(default_factory=dict)

    def run(self) -> Generator[Any, Any, None]:
        env = self.world.env
        while True:
            self.scrape()
            yield env.timeout(self.resolution)

    def scrape(self) -> None:
        world = self.world
        world.sync()
        now = world.env.now
        seen: dict[str, tuple[Scrape, Scrape | None]] = {}
        for pod in world.pods:
            if pod.phase is not PodPhase.RUNNING or pod.node is None:
                continue
            served = pod.server.served if pod.server else 0
            sample = Scrape(now, pod.cpu_seconds(now), served)
            last = self.history.get(pod.name)
            if (
                last is None
                and pod.start_time is not None
                and pod.start_time <= now - WARM_START_AGE
            ):
                # A warm replica has been scraped before t=0: seed one idle sample.
                idle = pod.server.burn[0] if pod.server else 0.0
                last = (Scrape(now - self.resolution, -idle * self.resolution, 0), None)
            seen[pod.name] = (sample, last[0] if last else None)
        self.history = seen
        # What metrics.k8s.io serves until the next scrape: the backtest's export reads it.
        cpu = {
            name: _cpu_milli(new, old)[0] for name, (new, old) in seen.items() if old is not None
        }
        if cpu:
            world.log("pod_metrics", cpu_millicores=cpu, window_s=self.resolution)

    def snapshot(self) -> hpa.MetricsSnapshot:
        """What the HPA can read: cpu (resource), per-pod req/s and in-flight (Pods metrics),
        and their totals behind the Service (Object/External metrics)."""
        cpu: dict[str, hpa.PodMetric] = {}
        rps: dict[str, hpa.PodMetric] = {}
        in_flight: dict[str, hpa.PodMetric] = {}
        pods = {p.name: p for p in self.world.pods}
        for name, (new, old) in self.history.items():
            if old is None:
                continue
            milli, window = _cpu_milli(new, old)
            cpu[name] = hpa.PodMetric(value=milli, timestamp=new.t, window=window)
            rate = (new.served - old.served) / window
            rps[name] = hpa.PodMetric(value=round(rate * 1000), timestamp=new.t, window=window)
            pod = pods.get(name)
            flight = pod.server.in_flight() if pod and pod.server else 0
            in_flight[name] = hpa.PodMetric(value=flight * 1000, timestamp=new.t, window=window)
        totals = {
            "requests_per_second": sum(m.value for m in rps.values()),
            "in_flight_requests": sum(m.value for m in in_flight.values()),
        }
        return hpa.MetricsSnapshot(
            resource={"cpu": cpu},
            pods={"requests_per_second": rps, "in_flight_requests": in_flight},
            object=totals,
            external=totals,
        )


def _cpu_milli(new: Scrape, old: Scrape) -> tuple[int, float]:
    """A pod's CPU in millicores over the window between two scrapes, and that window."""
    window = new.t - old.t
    return round((new.cpu_seconds - old.cpu_seconds) / window * 1000), window


@dataclass
class HPALoop:
    """The HPA controller: every sync period, one reconcile of the deployment's HPA."""

    world: World
    metrics: MetricsServer
    spec: HPASpec
    config: hpa.ControllerConfig
    memory: hpa.HPAMemory = field(default_factory=hpa.HPAMemory)
    last: hpa.ReconcileResult | None = None

    def run(self) -> Generator[Any, Any, None]:
        env = self.world.env
        while True:
            self.reconcile()
            yield env.timeout(self.config.sync_period)

    def reconcile(self) -> hpa.ReconcileResult:
        world = self.world
        world.sync()
        now = world.env.now
        pods = tuple(
            hpa.PodInfo(
                name=p.name,
                phase=p.phase.value,
                deleted=p.terminating,
                ready=p.ready if p.phase is PodPhase.RUNNING else False,
                start_time=p.start_time,
                ready_transition_time=p.ready_transition
                if p.ready_transition is not None
                else p.start_time,
                requests={"cpu": p.cpu_request, "memory": p.memory_request * 1000},
            )
            for p in world.pods
        )
        current = world.replicas
        status_replicas = len(world.active_pods())
        snapshot = self.metrics.snapshot()
        result = hpa.reconcile(
            self.spec,
            current_replicas=current,
            status_replicas=status_replicas,
            pods=pods,
            metrics=snapshot,
            now=now,
            memory=self.memory,
            config=self.config,
        )
        self.last = result
        metrics = [
            {
                "type": m.spec.type.value,
                "name": m.spec.name,
                "proposal": m.proposal,
                "current_utilization": m.current_average_utilization,
                "current_average_milli": m.current_average_value,
                "current_milli": m.current_value,
                "error": m.error,
            }
            for m in result.metrics
        ]
        sample = snapshot.resource.get("cpu", {})
        world.log(
            "hpa",
            current_replicas=current,
            desired_replicas=result.desired_replicas,
            metric_desired=result.metric_desired,
            stabilized=result.stabilized,
            rescale=result.rescale,
            cpu_utilization=cpu_utilization(result),
            pods={
                "listed": len(pods),
                "ready": sum(1 for p in pods if p.ready and p.phase == "Running"),
                "pending": sum(1 for p in pods if p.phase == "Pending"),
                "with_cpu_metric": sum(1 for p in pods if p.name in sample),
            },
            metrics=metrics,
            conditions={c.type.value: c.reason.value for c in result.conditions},
            reason=result.reason,
        )
        if result.rescale:
            world.log(
                "scale",
                target="deployment",
                name=world.scenario.deployment.name,
                old=current,
                new=result.desired_replicas,
                reason=result.reason,
            )
            world.replicas = result.desired_replicas
            world.reconcile_replicaset()
        return result


def cpu_utilization(result: hpa.ReconcileResult | None) -> int | None:
    """The cpu utilization (percent of requests) the HPA last computed, if it did."""
    return None if result is None else result.utilization("cpu")


@dataclass
class AutoscalerLoop:
    """The cluster autoscaler: every scan interval, one RunOnce over a snapshot of the world."""

    world: World
    options: AutoscalerOptions
    rng: np.random.Generator
    state: AutoscalerState = field(default_factory=AutoscalerState)
    _said: dict[tuple[str, str], str] = field(default_factory=dict)

    def run(self) -> Generator[Any, Any, None]:
        while True:
            self.scan()
            yield self.world.env.timeout(self.options.scan_interval)

    def snapshot(self) -> ClusterSnapshot:
        world = self.world
        nodes = tuple(
            NodeSnapshot(
                name=n.name,
                pool=n.pool,
                phase=n.phase,
                created_at=n.created,
                pods=n.system_pods + tuple(world.pod_view(p) for p in n.pods if not p.terminating),
            )
            for n in world.nodes
        )
        pending = tuple(world.pod_view(p) for p in world.pending_pods())
        return ClusterSnapshot(pools=tuple(world.pools.values()), nodes=nodes, pending=pending)

    def scan(self) -> None:
        world = self.world
        world.sync()
        decision = decide(self.snapshot(), self.state, world.env.now, self.options, self.rng)
        self.state = decision.state
        for event in decision.events:
            # Upstream re-emits the same event every loop; the log keeps changes only.
            key = (event.reason.value, event.involved)
            if self._said.get(key) != event.message:
                self._said[key] = event.message
                world.log(
                    "autoscaler",
                    reason=event.reason.value,
                    involved=event.involved,
                    message=event.message,
                )
        for pool, count in decision.scale_up.items():
            before = len([n for n in world.nodes if n.pool == pool])
            world.log(
                "scale",
                target="node-pool",
                name=pool,
                old=before,
                new=before + count,
                reason="pods unschedulable",
            )
            for _ in range(count):
                world.add_node(pool, ready=False)
        doomed = [
            world.node_named(n) for n in (*decision.remove_unregistered, *decision.scale_down)
        ]
        for pool in sorted({n.pool for n in doomed if n is not None}):
            mine = [
                n
                for n in doomed
                if n is not None and n.pool == pool and n.phase is not NodePhase.DRAINING
            ]
            if not mine:
                continue
            before = len(
                [n for n in world.nodes if n.pool == pool and n.phase is not NodePhase.DRAINING]
            )
            world.log(
                "scale",
                target="node-pool",
                name=pool,
                old=before,
                new=before - len(mine),
                reason="scale-down",
                nodes=[n.name for n in mine],
            )
            for node in mine:
                world.delete_node(node, reason="scale-down")
