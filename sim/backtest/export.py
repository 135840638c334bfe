"""Any scalelab run as OpenMetrics, under kube-state-metrics' and cAdvisor's names.

The run's events are replayed in the order they were logged, so each HPA sync sees the pods
exactly as that reconcile saw them: at every ``hpa`` event one kube-state-metrics "scrape" is
written (HPA spec and status, every pod of the Deployment, its ReplicaSet), all samples of that
scrape with the sync's timestamp, as one kube-state-metrics scrape gives its samples one
timestamp. Each ``pod_metrics`` event (what metrics-server serves after a scrape) becomes two
points of the pod's ``container_cpu_usage_seconds_total`` counter, ``window_s`` apart, whose
rate is that usage: the counter starts at 0 at a pod's first point and integrates the usage
metrics-server served (millicore precision), so it is the kubelet's counter up to an offset.
The per-second trace adds the Deployment's replicas and TF Serving's request counter.

Times on disk are unix seconds: the run's t plus ``start``, rounded to the millisecond (run
events are logged to the millisecond).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sim.backtest import names as n
from sim.backtest.series import SeriesSet
from sim.errors import UserError
from sim.hpa.spec import HorizontalPodAutoscalerSpec
from sim.scenario import Scenario
from sim.trace import Trace

#: ReplicaSet name: pods are named <deployment>-<pod-template-hash>-<suffix> (the simulator
#: and the Deployment controller alike), so the ReplicaSet is the name less its last part.


def replicaset_of(pod: str) -> str:
    return pod.rsplit("-", 1)[0]


@dataclass
class _Pod:
    created: float
    node: str | None = None
    start: float | None = None
    running: bool = False
    ready: bool = False
    ready_since: float | None = None
    deleting: float | None = None


def _target_labels(spec: HorizontalPodAutoscalerSpec) -> list[tuple[dict[str, str], float]]:
    """kube_horizontalpodautoscaler_spec_target_metric's series: metric_name and
    metric_target_type ("utilization", "average", "value") as kube-state-metrics writes them."""
    out = []
    for metric in spec.to_core().metrics:
        target = metric.target
        if target.average_utilization is not None:
            kind, value = "utilization", float(target.average_utilization)
        elif target.average_value is not None:
            kind, value = "average", target.average_value / 1000
        elif target.value is not None:
            kind, value = "value", target.value / 1000
        else:
            continue
        out.append(({"metric_name": metric.name, "metric_target_type": kind}, value))
    return out


def export(trace: Trace, scenario: Scenario, *, namespace: str, start: float) -> SeriesSet:
    """The run's series; ``start`` is the unix time of the run's t = 0."""
    if scenario.hpa is None:
        raise UserError(f"scenario {scenario.name!r} has no hpa: there is nothing to backtest")
    deployment = scenario.deployment
    hpa_name = deployment.name
    cpu_cores = (deployment.resources.requests.cpu or 0) / 1000
    memory = deployment.resources.requests.memory
    out = SeriesSet()
    ns = {"namespace": namespace}
    hpa_labels = {**ns, "horizontalpodautoscaler": hpa_name}
    targets = _target_labels(scenario.hpa)
    pods: dict[str, _Pod] = {}
    cpu_last: dict[str, tuple[float, float]] = {}  # pod -> (t, counter)

    def at(t: float) -> float:
        return round(start + t, 3)

    for event in trace.events:
        kind, t = event["kind"], float(event["t"])
        if kind == "pod":
            _pod_event(pods, event)
        elif kind == "pod_metrics":
            window = float(event.get("window_s") or scenario.metrics.resolution)
            for pod, milli in event["cpu_millicores"].items():
                labels = {**ns, "pod": pod, "container": deployment.name}
                last = cpu_last.get(pod)
                begin = round(t - window, 3)
                if last is None or last[0] != begin:
                    base = last[1] if last is not None else 0.0
                    out.add(n.CPU, labels, at(begin), base)
                    last = (begin, base)
                value = last[1] + milli / 1000 * window
                out.add(n.CPU, labels, at(t), value)
                cpu_last[pod] = (t, value)
        elif kind == "hpa":
            ts = at(t)
            out.add(
                n.HPA_INFO,
                {
                    **hpa_labels,
                    "scaletargetref_api_version": "apps/v1",
                    "scaletargetref_kind": "Deployment",
                    "scaletargetref_name": deployment.name,
                },
                ts,
                1,
            )
            out.add(n.HPA_MIN, hpa_labels, ts, scenario.hpa.minReplicas or 1)
            out.add(n.HPA_MAX, hpa_labels, ts, scenario.hpa.maxReplicas)
            for labels, value in targets:
                out.add(n.HPA_TARGET, {**hpa_labels, **labels}, ts, value)
            out.add(n.HPA_CURRENT, hpa_labels, ts, event["current_replicas"])
            out.add(n.HPA_DESIRED, hpa_labels, ts, event["desired_replicas"])
            replicasets = set()
            for name, pod in pods.items():
                _pod_scrape(out, ns, name, pod, ts, start, deployment.name, cpu_cores, memory)
                replicasets.add(replicaset_of(name))
            for rs in sorted(replicasets):
                owner = {
                    **ns,
                    "replicaset": rs,
                    "owner_kind": "Deployment",
                    "owner_name": deployment.name,
                    "owner_is_controller": "true",
                }
                out.add(n.REPLICASET_OWNER, owner, ts, 1)
            dep = {**ns, "deployment": deployment.name}
            out.add(n.DEPLOYMENT_REPLICAS, dep, ts, event["desired_replicas"])
            ready = sum(1 for p in pods.values() if p.ready and p.deleting is None)
            out.add(n.DEPLOYMENT_READY, dep, ts, ready)
    _request_counter(out, trace, ns, deployment.model_name, start)
    return out


def _pod_event(pods: dict[str, _Pod], event: dict[str, Any]) -> None:
    name, what, t = event["pod"], event["event"], float(event["t"])
    if what == "created":
        pods[name] = _Pod(created=t)
        return
    pod = pods.get(name)
    if pod is None:
        return
    if event.get("node"):
        pod.node = event["node"]
    if what == "scheduled":
        pod.start = t  # status.startTime: the kubelet accepted the pod
    elif what == "warm":
        pod.start, pod.running = float(event["started"]), True
        pod.ready, pod.ready_since = True, float(event["ready_since"])
    elif what == "started":
        pod.running = True
    elif what == "ready":
        pod.running = pod.ready = True
        pod.ready_since = t
    elif what == "terminating":
        pod.deleting = t
    elif what == "deleted":
        del pods[name]


def _pod_scrape(
    out: SeriesSet,
    ns: dict[str, str],
    name: str,
    pod: _Pod,
    ts: float,
    start: float,
    container: str,
    cpu_cores: float,
    memory: int | None,
) -> None:
    """One kube-state-metrics scrape of one pod (only the phase that holds is written, and
    only the Ready condition's "true" series, to keep files small)."""
    labels = {**ns, "pod": name}
    out.add(n.POD_CREATED, labels, ts, round(start + pod.created, 3))
    if pod.start is not None:
        out.add(n.POD_START, labels, ts, round(start + pod.start, 3))
    phase = "Running" if pod.running else "Pending"
    out.add(n.POD_PHASE, {**labels, "phase": phase}, ts, 1)
    out.add(n.POD_READY, {**labels, "condition": "true"}, ts, 1 if pod.ready else 0)
    if pod.ready and pod.ready_since is not None:
        out.add(n.POD_READY_TIME, labels, ts, round(start + pod.ready_since, 3))
    if pod.deleting is not None:
        out.add(n.POD_DELETION, labels, ts, round(start + pod.deleting, 3))
    node = pod.node or ""
    req = {**labels, "container": container, "node": node}
    out.add(n.POD_REQUESTS, {**req, "resource": "cpu", "unit": "core"}, ts, cpu_cores)
    if memory is not None:
        out.add(n.POD_REQUESTS, {**req, "resource": "memory", "unit": "byte"}, ts, memory)
    owner = {
        **labels,
        "owner_kind": "ReplicaSet",
        "owner_name": replicaset_of(name),
        "owner_is_controller": "true",
    }
    out.add(n.POD_OWNER, owner, ts, 1)


def _request_counter(
    out: SeriesSet, trace: Trace, ns: dict[str, str], model: str, start: float
) -> None:
    """TF Serving's request counter, summed over the Deployment's pods, once a second."""
    total = {"OK": 0.0, "UNAVAILABLE": 0.0}
    columns = {"OK": trace.columns["completed_rps"], "UNAVAILABLE": trace.columns["failed_rps"]}
    for status in columns:  # the counter is 0 at the run's start; row t counts [t, t + 1)
        labels = {**ns, "model_name": model, "entrypoint": "REST", "status": status}
        out.add(n.REQUESTS, labels, round(start, 3), 0.0)
    for i, t in enumerate(trace.columns["t"]):
        if t is None:
            continue
        for status, column in columns.items():
            value = column[i]
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                total[status] += float(value)
            labels = {**ns, "model_name": model, "entrypoint": "REST", "status": status}
            out.add(n.REQUESTS, labels, round(start + float(t) + 1, 3), total[status])
