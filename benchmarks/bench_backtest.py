"""Backtest speed: a 24 h window at 15 s syncs (5760 decisions) over 30 pods.

The recording is synthetic but has every series a real one has: kube-state-metrics rounds
every 15 s (HPA spec and status, each pod's created/start/phase/ready/requests/owner) and
each pod's cAdvisor CPU counter every 15 s under a diurnal load. Prints the time to read the
OpenMetrics file, to build the recording, to replay it, and to run the counterfactual with a
lower target (pods, nodes and cost per second from an n1-standard-4 pool) (target: under 10 s
in all, as ``scalelab backtest`` does them all).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

from sim.backtest import names as n
from sim.backtest import openmetrics as om
from sim.backtest import recording as rec
from sim.backtest import whatif
from sim.backtest.counterfactual import counterfactual
from sim.backtest.pool import node_model
from sim.backtest.replay import ReplayConfig, replay
from sim.backtest.series import SeriesSet
from sim.hpa import ControllerConfig
from sim.hpa.types import HPASpec, MetricSourceType, MetricSpec, MetricTarget, MetricTargetType
from sim.scenario import Scenario

START = 1_735_689_600.0
DAY = 86_400
PODS = 30


def recording_text() -> str:
    out = SeriesSet()
    ns = {"namespace": "prod"}
    hpa = {**ns, "horizontalpodautoscaler": "web"}
    counters = [0.0] * PODS
    for k in range(DAY // 15):
        t = START + 15 * k
        load = 0.5 + 0.4 * math.sin(2 * math.pi * k * 15 / DAY)  # cores per pod
        out.add(
            n.HPA_INFO,
            {**hpa, "scaletargetref_kind": "Deployment", "scaletargetref_name": "web"},
            t,
            1,
        )
        out.add(n.HPA_MIN, hpa, t, 10)
        out.add(n.HPA_MAX, hpa, t, 40)
        out.add(
            n.HPA_TARGET, {**hpa, "metric_name": "cpu", "metric_target_type": "utilization"}, t, 60
        )
        out.add(n.HPA_CURRENT, hpa, t, PODS)
        out.add(n.HPA_DESIRED, hpa, t, PODS)
        out.add(
            n.REPLICASET_OWNER,
            {**ns, "replicaset": "web-abc", "owner_kind": "Deployment", "owner_name": "web"},
            t,
            1,
        )
        for p in range(PODS):
            pod = {**ns, "pod": f"web-abc-{p:05d}"}
            out.add(n.POD_CREATED, pod, t, START - 3600)
            out.add(n.POD_START, pod, t, START - 3600)
            out.add(n.POD_PHASE, {**pod, "phase": "Running"}, t, 1)
            out.add(n.POD_READY, {**pod, "condition": "true"}, t, 1)
            out.add(n.POD_READY_TIME, pod, t, START - 3500)
            out.add(
                n.POD_REQUESTS, {**pod, "container": "web", "resource": "cpu", "unit": "core"}, t, 1
            )
            out.add(n.POD_OWNER, {**pod, "owner_kind": "ReplicaSet", "owner_name": "web-abc"}, t, 1)
            counters[p] += load * 15 * (1 + 0.01 * p)
            out.add(n.CPU, {**pod, "container": "web"}, t, counters[p])
    return om.render(out)


def main() -> None:
    text = recording_text()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "day.om"
        path.write_text(text)
        t0 = time.perf_counter()
        data = om.read(path)
        t1 = time.perf_counter()
        recording = rec.build(
            data, namespace="prod", hpa="web", start=START, end=START + DAY, source=str(path)
        )
        t2 = time.perf_counter()
        spec = HPASpec(
            max_replicas=40,
            min_replicas=10,
            metrics=(
                MetricSpec(
                    MetricSourceType.RESOURCE,
                    "cpu",
                    MetricTarget(MetricTargetType.UTILIZATION, average_utilization=60),
                ),
            ),
        )
        config = ReplayConfig(ControllerConfig(), resolution=15.0)
        syncs = replay(recording, spec, config)
        t3 = time.perf_counter()
        pool = node_model(
            Scenario.model_validate({"cluster": {"node_pool": {"max_nodes": 40}}}), 1000
        )
        lower = MetricSpec(
            MetricSourceType.RESOURCE,
            "cpu",
            MetricTarget(MetricTargetType.UTILIZATION, average_utilization=40),
        )
        proposal = HPASpec(max_replicas=60, min_replicas=10, metrics=(lower,))
        outcome = counterfactual(recording, proposal, config, capacity=pool.capacity)
        recorded = whatif.timeline(whatif.recorded_lives(recording), DAY, pool)
        proposed = whatif.timeline(whatif.proposed_lives(outcome), DAY, pool)
        t4 = time.perf_counter()
    lines = text.count("\n")
    print(
        f"24 h, {PODS} pods, {len(syncs)} syncs, {lines} OpenMetrics lines "
        f"({len(text) / 1e6:.0f} MB)"
    )
    print(
        f"read {t1 - t0:.2f} s, build {t2 - t1:.2f} s, replay {t3 - t2:.2f} s, "
        f"counterfactual {t4 - t3:.2f} s; total {t4 - t0:.2f} s (target < 10 s)"
    )
    print(
        f"counterfactual at 40% (recorded 60%): max replicas {max(proposed.current)} vs "
        f"{max(recorded.current)}, pod-hours {proposed.pod_hours:.1f} vs {recorded.pod_hours:.1f}, "
        f"cost ${proposed.nodes.total_cost if proposed.nodes else 0:.2f} vs "
        f"${recorded.nodes.total_cost if recorded.nodes else 0:.2f}"
    )


if __name__ == "__main__":
    main()
