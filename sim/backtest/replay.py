"""Replay a recorded HPA: at every sync, rebuild the controller's inputs and run the exact core.

Pure: a :class:`~sim.backtest.recording.Recording` and a spec in, one :class:`Sync` per sync
out. The controller keeps its own memory (stabilization history, scale events) from a fresh
start at the window's first sync, as a restarted kube-controller-manager would.

Inputs at a sync at time t (syncs at ``k * sync_period`` from the window's start):

- the replicas the HPA started from and its recorded decision: the first kube-state-metrics
  round in [t, t + sync_period) (the HPA writes its status when it reconciles; the next scrape
  shows it);
- the pods: the latest round at or before t;
- each pod's CPU as metrics-server serves it (metrics-server ``--metric-resolution``,
  pkg/storage: the rate between its last two kubelet scrapes): the pod's latest counter point
  newer than t - resolution, against its latest point at least a resolution (less
  ``scrape_jitter``) older; in millicores, rounded.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sim import hpa
from sim.backtest.recording import Counter, Recording, Round, Target
from sim.hpa.types import HPASpec, MetricSourceType, MetricSpec, MetricTarget, MetricTargetType


class Mismatch(StrEnum):
    """Why a replayed decision differs from the recorded one (the first that applies)."""

    NO_STATUS = "no HPA status sample for this sync"
    SPEC_CHANGED = "the HPA spec changed within the stabilization window"
    METRIC_NOT_RECORDED = "the spec has a metric the recording lacks"
    MISSING_SAMPLES = "a Running pod has no CPU sample"
    HISTORY_BEFORE_WINDOW = "stabilization history from before the window is unknown"
    UNEXPLAINED = "inputs complete: not explained by the recording"


@dataclass(frozen=True)
class ReplayConfig:
    """The controller's flags and the metrics pipeline's timing.

    ``resolution`` is metrics-server's ``--metric-resolution`` (15 s upstream, 30 s on GKE's
    add-on); ``scrape_jitter`` is how far apart two counter points may be short of a
    resolution and still count as consecutive scrapes (assumed, 1 s).
    """

    controller: hpa.ControllerConfig = dataclasses.field(default_factory=hpa.ControllerConfig)
    resolution: float = 15.0
    scrape_jitter: float = 1.0


@dataclass(frozen=True)
class Sync:
    """One HPA sync: what was recorded and what the replay decided."""

    t: float
    current: int | None
    recorded: int | None
    replayed: int | None
    utilization: int | None
    pods: int
    pods_with_cpu: int
    mismatch: Mismatch | None

    @property
    def matched(self) -> bool:
        return self.recorded is not None and self.recorded == self.replayed


def cpu_metrics(
    pods: Sequence[hpa.PodInfo], cpu: dict[str, Counter], t: float, config: ReplayConfig
) -> dict[str, hpa.PodMetric]:
    """metrics.k8s.io's pod CPU at ``t``: pods without two fresh enough points are absent."""
    out: dict[str, hpa.PodMetric] = {}
    res = config.resolution
    for pod in pods:
        counter = cpu.get(pod.name)
        if counter is None:
            continue
        times = counter.times
        i = bisect.bisect_right(times, t) - 1
        if i < 0 or t - times[i] >= res:
            continue
        new_t = times[i]
        j = bisect.bisect_right(times, round(new_t - res + config.scrape_jitter, 3)) - 1
        if j < 0 or j >= i:
            continue
        window = round(new_t - times[j], 3)
        used = counter.values[i] - counter.values[j]
        if used < 0:
            continue  # the counter restarted (container restart): metrics-server drops it
        milli = round(used / window * 1000)
        out[pod.name] = hpa.PodMetric(value=milli, timestamp=new_t, window=window)
    return out


_TARGET_TYPE = {
    "utilization": MetricTargetType.UTILIZATION,
    "average": MetricTargetType.AVERAGE_VALUE,
    "value": MetricTargetType.VALUE,
}


def _recorded_metrics(targets: tuple[Target, ...]) -> tuple[MetricSpec, ...]:
    """Resource metrics as kube-state-metrics shows them (name + target type + value)."""
    out = []
    for tg in targets:
        kind = _TARGET_TYPE.get(tg.target_type)
        if kind is MetricTargetType.UTILIZATION:
            target = MetricTarget(kind, average_utilization=round(tg.value))
        elif kind is MetricTargetType.AVERAGE_VALUE:
            target = MetricTarget(kind, average_value=round(tg.value * 1000))
        else:
            continue
        out.append(MetricSpec(MetricSourceType.RESOURCE, tg.metric_name, target))
    return tuple(out)


def spec_at(base: HPASpec | None, rnd: Round) -> HPASpec | None:
    """The spec in force at a round: min/max and (resource) targets as recorded there, the
    rest (behavior, other metrics) from ``base``."""
    if base is None:
        if rnd.max_replicas is None:
            return None
        metrics = _recorded_metrics(rnd.targets)
        return HPASpec(
            max_replicas=rnd.max_replicas,
            min_replicas=rnd.min_replicas if rnd.min_replicas is not None else 1,
            metrics=metrics,
        )
    spec = base
    if rnd.min_replicas is not None and rnd.min_replicas != spec.min_replicas:
        spec = dataclasses.replace(spec, min_replicas=rnd.min_replicas)
    if rnd.max_replicas is not None and rnd.max_replicas != spec.max_replicas:
        spec = dataclasses.replace(spec, max_replicas=rnd.max_replicas)
    recorded = {m.name: m for m in _recorded_metrics(rnd.targets)}
    if recorded:
        metrics = tuple(
            recorded.get(m.name, m) if m.type is MetricSourceType.RESOURCE else m
            for m in spec.metrics
        )
        if metrics != spec.metrics:
            spec = dataclasses.replace(spec, metrics=metrics)
    return spec


def sync_times(recording: Recording, period: float) -> list[float]:
    span = recording.end - recording.start
    return [round(k * period, 3) for k in range(int(span // period) + 1) if k * period < span]


def replay(
    recording: Recording, base: HPASpec | None, config: ReplayConfig | None = None
) -> list[Sync]:
    """Every sync of the window, replayed with a fresh controller memory."""
    cfg = config or ReplayConfig()
    period = cfg.controller.sync_period
    rounds = recording.rounds
    round_times = [r.t for r in rounds]
    memory = hpa.HPAMemory()
    window = cfg.controller.downscale_stabilization_window
    out: list[Sync] = []
    last_spec: HPASpec | None = None
    spec_changed_at: float | None = None
    for t in sync_times(recording, period):
        k = bisect.bisect_left(round_times, t)
        decision = rounds[k] if k < len(rounds) and rounds[k].t < t + period else None
        p = bisect.bisect_right(round_times, t) - 1
        listing = rounds[p] if p >= 0 else None
        if decision is None or listing is None:
            out.append(Sync(t, None, None, None, None, 0, 0, Mismatch.NO_STATUS))
            continue
        spec = spec_at(base, listing)
        if spec is None:
            out.append(
                Sync(
                    t,
                    decision.current,
                    decision.desired,
                    None,
                    None,
                    0,
                    0,
                    Mismatch.METRIC_NOT_RECORDED,
                )
            )
            continue
        if last_spec is not None and spec != last_spec:
            spec_changed_at = t
        last_spec = spec
        pods = listing.pods
        cpu = cpu_metrics(pods, recording.cpu, t, cfg)
        result = hpa.reconcile(
            spec,
            current_replicas=decision.current,
            status_replicas=sum(1 for q in pods if not q.deleted),
            pods=pods,
            metrics=hpa.MetricsSnapshot(resource={"cpu": cpu}),
            now=t,
            memory=memory,
            config=cfg.controller,
        )
        recorded = decision.desired if decision.desired >= 0 else None
        mismatch = None
        if recorded is None:
            mismatch = Mismatch.NO_STATUS
        elif recorded != result.desired_replicas:
            mismatch = _why(spec, pods, cpu, t, spec_changed_at, window)
        out.append(
            Sync(
                t,
                decision.current,
                recorded,
                result.desired_replicas,
                result.utilization("cpu"),
                len(pods),
                len(cpu),
                mismatch,
            )
        )
    return out


def _why(
    spec: HPASpec,
    pods: Sequence[hpa.PodInfo],
    cpu: dict[str, hpa.PodMetric],
    t: float,
    spec_changed_at: float | None,
    window: float,
) -> Mismatch:
    if spec_changed_at is not None and t - spec_changed_at <= window:
        return Mismatch.SPEC_CHANGED
    if any(m.type is not MetricSourceType.RESOURCE or m.name != "cpu" for m in spec.metrics):
        return Mismatch.METRIC_NOT_RECORDED
    if any(q.phase == "Running" and not q.deleted and q.name not in cpu for q in pods):
        return Mismatch.MISSING_SAMPLES
    if t < window:
        return Mismatch.HISTORY_BEFORE_WINDOW
    return Mismatch.UNEXPLAINED
