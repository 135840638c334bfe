"""A recorded HPA as plain data: its kube-state-metrics scrapes and its pods' CPU counters.

:func:`build` turns raw series (from Prometheus or an OpenMetrics file) into a
:class:`Recording`. Times are seconds since the window's start, rounded to the millisecond
(Prometheus keeps milliseconds). One kube-state-metrics scrape gives all its samples one
timestamp, so a *round* is one such timestamp of the HPA's status, and a pod exists at a round
when it has a ``kube_pod_created`` sample with exactly that timestamp (backfilled data has no
staleness markers, so "the last sample" would keep deleted pods alive).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sim.backtest import names as n
from sim.backtest.series import Series, SeriesSet
from sim.errors import UserError
from sim.hpa.types import PodInfo

#: What a pod's Ready condition last changed at, when it is not Ready: kube-state-metrics
#: exports the time only for Ready pods, so an unready pod is taken as unready since its start
#: (as the simulator does). Assumed; it matters only within cpu-initialization-period.
UNREADY_SINCE = "start_time"


@dataclass(frozen=True)
class Target:
    """One ``kube_horizontalpodautoscaler_spec_target_metric`` series at a round."""

    metric_name: str
    target_type: str  # "utilization", "average" or "value"
    value: float


@dataclass(frozen=True)
class Round:
    """One kube-state-metrics scrape: the HPA's spec and status, the target's pods."""

    t: float
    current: int
    desired: int
    min_replicas: int | None
    max_replicas: int | None
    targets: tuple[Target, ...]
    pods: tuple[PodInfo, ...]


@dataclass
class Counter:
    """A pod's cumulative CPU seconds (cAdvisor), merged over its containers."""

    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class PodLife:
    """One pod of the target over the window, seconds since the window's start: created
    (``kube_pod_created``), scheduled (``kube_pod_start_time``), Running (the first round whose
    phase is Running), Ready (``kube_pod_status_ready_time`` at its first Ready round, else that
    round) and gone (its deletion timestamp; else, for a pod that vanished between two
    scrapes, its last round if that round records a scale-down, the next round if not);
    None: not within the window."""

    name: str
    created: float
    start: float | None
    running: float | None
    ready: float | None
    gone: float | None
    cpu_request: int  # millicores; 0 when unrecorded


@dataclass
class Recording:
    """Everything a replay reads; ``start`` is the window's start in unix seconds."""

    start: float
    end: float
    namespace: str
    hpa: str
    target: str
    rounds: list[Round]
    cpu: dict[str, Counter]
    notes: list[str] = field(default_factory=list)
    lives: dict[str, PodLife] = field(default_factory=dict)


def _rel(t: float, start: float) -> float:
    return round(t - start, 3)


def _in(series: Series, key: str, value: str) -> bool:
    return series.label(key) == value


def _by_pod(
    series: list[Series], start: float, end: float, value_filter: dict[str, str] | None = None
) -> dict[str, dict[float, float]]:
    out: dict[str, dict[float, float]] = defaultdict(dict)
    for s in series:
        if value_filter and any(s.label(k) != v for k, v in value_filter.items()):
            continue
        pod = s.label("pod")
        if pod is None:
            continue
        mine = out[pod]
        for t, v in zip(s.times, s.values, strict=True):
            if start <= t <= end:
                rel = _rel(t, start)
                mine[rel] = mine.get(rel, 0.0) + v
    return out


def build(
    data: SeriesSet,
    *,
    namespace: str,
    hpa: str,
    start: float | None,
    end: float | None,
    source: str,
) -> Recording:
    """The recording of HPA ``hpa`` in ``namespace`` over [start, end] (unix seconds; None: the
    data's span). Raises UserError naming the series and the labels that matched nothing."""
    missing = [name for name in n.REQUIRED if not data.named(name)]
    if missing:
        raise UserError(
            f"{source}: no series {', '.join(missing)} "
            f"(needed for {'; '.join(n.REQUIRED[m] for m in missing)})"
        )

    def mine(name: str) -> list[Series]:
        return [s for s in data.named(name) if _in(s, "namespace", namespace)]

    status = [s for s in mine(n.HPA_CURRENT) if _in(s, "horizontalpodautoscaler", hpa)]
    if not status:
        seen = sorted(
            {
                f"{s.label('namespace')}/{s.label('horizontalpodautoscaler')}"
                for s in data.named(n.HPA_CURRENT)
            }
        )
        raise UserError(
            f"{source}: {n.HPA_CURRENT}{{namespace={namespace!r}, "
            f"horizontalpodautoscaler={hpa!r}}} matches nothing; recorded HPAs: "
            f"{', '.join(seen) or 'none'}"
        )
    all_times = sorted(t for s in status for t in s.times)
    start = all_times[0] if start is None else start
    # Without --end: through the last recorded sync (a second past its scrape).
    end = all_times[-1] + 1.0 if end is None else end
    if end <= start:
        raise UserError(f"--start/--end: the window must be non-empty (got {start} .. {end})")
    notes: list[str] = []

    def hpa_values(name: str, extra: dict[str, str] | None = None) -> dict[float, float]:
        out: dict[float, float] = {}
        for s in mine(name):
            if not _in(s, "horizontalpodautoscaler", hpa):
                continue
            if extra and any(s.label(k) != v for k, v in extra.items()):
                continue
            for t, v in zip(s.times, s.values, strict=True):
                if start <= t <= end:
                    out[_rel(t, start)] = v
        return out

    current = hpa_values(n.HPA_CURRENT)
    desired = hpa_values(n.HPA_DESIRED)
    if not current:
        raise UserError(
            f"{source}: {n.HPA_CURRENT} for {namespace}/{hpa} has no sample between "
            f"{start:.3f} and {end:.3f} (recorded: {all_times[0]:.3f} .. {all_times[-1]:.3f})"
        )
    mins, maxs = hpa_values(n.HPA_MIN), hpa_values(n.HPA_MAX)
    targets: dict[float, list[Target]] = defaultdict(list)
    for s in mine(n.HPA_TARGET):
        if not _in(s, "horizontalpodautoscaler", hpa):
            continue
        for t, v in zip(s.times, s.values, strict=True):
            if start <= t <= end:
                targets[_rel(t, start)].append(
                    Target(s.label("metric_name") or "", s.label("metric_target_type") or "", v)
                )

    target = None
    for s in mine(n.HPA_INFO):
        if _in(s, "horizontalpodautoscaler", hpa):
            target = s.label("scaletargetref_name")
    if target is None:
        target = hpa
        notes.append(f"no {n.HPA_INFO}: the HPA's target taken to be Deployment {hpa!r}")

    # Which pods belong to the target: pod -> ReplicaSet -> Deployment.
    replicasets = {
        s.label("replicaset")
        for s in mine(n.REPLICASET_OWNER)
        if s.label("owner_kind") == "Deployment" and s.label("owner_name") == target
    }
    owned: set[str] = set()
    for s in mine(n.POD_OWNER):
        pod = s.label("pod")
        if pod and s.label("owner_kind") == "ReplicaSet" and s.label("owner_name") in replicasets:
            owned.add(pod)
    if not owned:
        raise UserError(
            f"{source}: no pod of Deployment {target!r} in namespace {namespace!r} "
            f"({n.REPLICASET_OWNER}{{owner_name={target!r}}} matched "
            f"{len(replicasets)} ReplicaSets, {n.POD_OWNER} none of their pods)"
        )

    created = _by_pod(mine(n.POD_CREATED), start, end)
    started = _by_pod(mine(n.POD_START), start, end)
    ready = _by_pod(mine(n.POD_READY), start, end, {"condition": "true"})
    ready_time = _by_pod(mine(n.POD_READY_TIME), start, end)
    deletion = _by_pod(mine(n.POD_DELETION), start, end)
    requests = _by_pod(mine(n.POD_REQUESTS), start, end, {"resource": "cpu"})
    phases: dict[str, dict[float, str]] = defaultdict(dict)
    for s in mine(n.POD_PHASE):
        pod, phase = s.label("pod"), s.label("phase")
        if pod in owned and phase:
            for t, v in zip(s.times, s.values, strict=True):
                if v == 1 and start <= t <= end:
                    phases[pod][_rel(t, start)] = phase

    at_round: dict[float, list[PodInfo]] = defaultdict(list)
    for pod in sorted(owned):
        for t, _ in sorted(created.get(pod, {}).items()):
            phase = phases.get(pod, {}).get(t, "Running")
            is_ready = ready.get(pod, {}).get(t, 0.0) == 1.0
            start_t = started.get(pod, {}).get(t)
            start_rel = _rel(start_t, start) if start_t is not None else None
            since = ready_time.get(pod, {}).get(t)
            transition = _rel(since, start) if is_ready and since is not None else start_rel
            request = requests.get(pod, {}).get(t)
            at_round[t].append(
                PodInfo(
                    name=pod,
                    phase=phase,  # type: ignore[arg-type]
                    deleted=t in deletion.get(pod, {}),
                    ready=is_ready if phase == "Running" else False,
                    start_time=start_rel,
                    ready_transition_time=transition,
                    requests={} if request is None else {"cpu": round(request * 1000)},
                )
            )

    rounds = [
        Round(
            t=t,
            current=int(current[t]),
            desired=int(desired[t]) if t in desired else -1,
            min_replicas=int(mins[t]) if t in mins else None,
            max_replicas=int(maxs[t]) if t in maxs else None,
            targets=tuple(sorted(targets.get(t, []), key=lambda x: x.metric_name)),
            pods=tuple(at_round.get(t, [])),
        )
        for t in sorted(current)
    ]

    cpu: dict[str, Counter] = {}
    for s in mine(n.CPU):
        pod_name = s.label("pod")
        if pod_name is None or pod_name not in owned or s.label("container") in ("", "POD"):
            continue  # cAdvisor's pod-level and pause-container series would double count
        samples = sorted(
            (_rel(t, start), v) for t, v in zip(s.times, s.values, strict=True) if t <= end
        )
        counter = cpu.setdefault(pod_name, Counter())
        if counter.times:  # a second container: add its counter point by point
            merged: dict[float, float] = dict(zip(counter.times, counter.values, strict=True))
            for t, v in samples:
                merged[t] = merged.get(t, 0.0) + v
            items = sorted(merged.items())
            counter.times = [t for t, _ in items]
            counter.values = [v for _, v in items]
        else:
            counter.times = [t for t, _ in samples]
            counter.values = [v for _, v in samples]
    lives = _lives(rounds, created, deletion, start)
    return Recording(start, end, namespace, hpa, target, rounds, cpu, notes, lives)


def _lives(
    rounds: list[Round],
    created: dict[str, dict[float, float]],
    deletion: dict[str, dict[float, float]],
    start: float,
) -> dict[str, PodLife]:
    """Each listed pod's life, read off the rounds (see :class:`PodLife`)."""
    seen: dict[str, dict[str, float | None]] = {}
    requests: dict[str, int] = {}
    last_round: dict[str, int] = {}
    for k, rnd in enumerate(rounds):
        for pod in rnd.pods:
            life = seen.setdefault(
                pod.name, {"start": None, "running": None, "ready": None, "gone": None}
            )
            last_round[pod.name] = k
            if pod.start_time is not None and life["start"] is None:
                life["start"] = pod.start_time
            if pod.phase == "Running" and life["running"] is None:
                life["running"] = rnd.t
            if pod.ready and life["ready"] is None:
                life["ready"] = (
                    pod.ready_transition_time if pod.ready_transition_time is not None else rnd.t
                )
            if pod.deleted and life["gone"] is None:
                life["gone"] = _rel(deletion[pod.name][rnd.t], start)
            if pod.requests.get("cpu"):
                requests[pod.name] = pod.requests["cpu"]
    out: dict[str, PodLife] = {}
    for name, life in seen.items():
        k = last_round[name]
        gone = life["gone"]
        if gone is None and k + 1 < len(rounds):
            # Vanished between two scrapes without a deletion timestamp: deleted by the
            # scale-down recorded at its last round if there is one, else by the next round.
            last = rounds[k]
            gone = last.t if 0 <= last.desired < last.current else rounds[k + 1].t
        made = min(created[name].values())
        out[name] = PodLife(
            name=name,
            created=_rel(made, start),
            start=life["start"],
            running=life["running"],
            ready=life["ready"],
            gone=gone,
            cpu_request=requests.get(name, 0),
        )
    return out
