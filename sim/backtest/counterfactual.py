"""What another HPA spec would have done on the recorded demand (pure: no I/O, no clock).

The demand model (:data:`DEMAND_MODEL`): a pod's CPU follows the requests it gets, so the CPU
that the recorded Ready pods burnt is the demand, conserved and shared among the pods the
proposal would have had Ready at that moment. The share follows how the load balancer spread
the requests in the recording: a pod that was Ready there keeps its weight (its recorded CPU),
a pod the recording lacks gets the recorded average; the shares are scaled so they sum to the
demand. With the recorded spec the proposal has the recorded pods, so each keeps its own CPU
and the replay reproduces the recorded replicas. Demand with no Ready pod to take it is
counted as unserved CPU-seconds.

Pods: the window starts with the recorded pods. A pod the proposal creates at a sync as the
k-th replica *is* the recorded pod created as the k-th replica in the same sync period, if
there is one (its times, its CPU while it starts). Otherwise it takes the start-up times
(created -> scheduled -> Running -> Ready) of the recorded k-th replica created nearest in
time that became Ready; a k beyond the pool's capacity stays Pending; a k never recorded Ready
takes the slowest recorded start-up (:data:`UNRECORDED_STARTUP`), burning CPU as its
counterpart did while starting. Scale-down deletes the pods the recorded ReplicaSet deleted in
that sync period first, then by upstream's ranking (:mod:`sim.replicaset`).

Metrics: each pod's CPU is integrated into a counter sampled when the recorded pod it is was
(else at every recorded sample time), and metrics-server's rate, the HPA's inputs and the exact
core are as in :mod:`sim.backtest.replay`.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

from sim import hpa
from sim.backtest.recording import Counter, PodLife, Recording
from sim.backtest.replay import ReplayConfig, cpu_metrics, sync_times
from sim.hpa.types import HPASpec
from sim.replicaset import PodRank, deletion_order

DEMAND_MODEL = (
    "a pod's CPU follows the requests it gets: the recorded Ready pods' CPU is shared among "
    "the proposal's Ready pods as the recorded requests were spread (a pod the recording lacks "
    "gets the average)"
)
#: Start-up taken by a k-th replica that no recorded k-th replica shows (assumed).
UNRECORDED_STARTUP = "slowest recorded"


@dataclass(eq=False)
class Pod:
    """A pod of the counterfactual: times in seconds since the window's start."""

    name: str
    ordinal: int
    created: float
    start: float | None
    running: float | None
    ready: float | None
    gone: float | None
    cpu_request: int
    identity: str | None  # the recorded pod it is
    counterpart: str | None  # the recorded pod whose start-up it takes
    counter: Counter = field(default_factory=Counter)
    cpu_seconds: float = 0.0

    def info(self, t: float) -> hpa.PodInfo:
        """The pod as the HPA lists it at ``t`` (as :func:`recording.build` rebuilds one)."""
        started = self.start is not None and self.start <= t
        running = self.running is not None and self.running <= t
        ready = running and self.ready is not None and self.ready <= t
        start = self.start if started else None
        return hpa.PodInfo(
            name=self.name,
            phase="Running" if running else "Pending",
            deleted=False,
            ready=ready,
            start_time=start,
            ready_transition_time=self.ready if ready else start,
            requests={"cpu": self.cpu_request} if self.cpu_request else {},
        )


@dataclass(frozen=True)
class Step:
    """One sync of the counterfactual."""

    t: float
    current: int
    desired: int
    utilization: int | None
    pods: int
    pods_with_cpu: int


@dataclass
class Outcome:
    steps: list[Step]
    pods: list[Pod]
    cpu_seconds: float  # burnt by the proposal's pods within the window
    recorded_cpu_seconds: float  # burnt by the recorded pods within the window
    unserved_cpu_seconds: float
    notes: list[str]
    demand_cpu_seconds: float = 0.0  # burnt by the recorded Ready pods within the window
    served_cpu_seconds: float = 0.0  # of that demand, taken by the proposal's Ready pods


def ordinals(lives: dict[str, PodLife]) -> dict[str, int]:
    """Each recorded pod's replica number when created: how many of the target's pods existed
    (itself included, deleted ones not) right after its creation."""
    ordered = sorted(lives.values(), key=lambda p: (p.created, p.name))
    out = {}
    for i, pod in enumerate(ordered):
        out[pod.name] = sum(1 for q in ordered[: i + 1] if q.gone is None or q.gone > pod.created)
    return out


def _alive(pod: PodLife | Pod, t: float) -> bool:
    return pod.created <= t and (pod.gone is None or t < pod.gone)


def _between(a: float | None, t: float, b: float | None) -> bool:
    """``a <= t < b``, None as never for ``a`` and as forever for ``b``."""
    return a is not None and a <= t and (b is None or t < b)


class _Recorded:
    """The recorded pods' CPU on the grid of all recorded counter times."""

    def __init__(self, recording: Recording) -> None:
        end = recording.end - recording.start
        times = sorted({t for c in recording.cpu.values() for t in c.times if t <= end})
        self.grid = np.array(times, dtype=float)
        self.names = sorted(recording.lives)
        self.index = {name: i for i, name in enumerate(self.names)}
        mids = (self.grid[1:] + self.grid[:-1]) / 2 if len(times) > 1 else np.zeros(0)
        self.mids = mids
        steps = len(mids)
        self.inc = np.zeros((len(self.names), steps))
        self.own: list[set[int]] = []
        self.last_own: list[int] = []
        ready_bits = [0] * steps
        ready = np.zeros((len(self.names), steps), dtype=bool)
        starting = np.zeros((len(self.names), steps), dtype=bool)
        for i, name in enumerate(self.names):
            life = recording.lives[name]
            counter = recording.cpu.get(name)
            own: set[int] = set()
            if counter is not None and counter.times:
                inside = [t for t in counter.times if t <= end]
                values = counter.values[: len(inside)]
                if inside:
                    curve = np.interp(self.grid, inside, values)
                    self.inc[i] = np.diff(curve)
                    lo = bisect.bisect_left(times, inside[0])
                    own = {bisect.bisect_left(times, t) for t in inside}
                    self.inc[i, :lo] = 0.0
            self.own.append(own)
            self.last_own.append(max(own, default=-1))
            gone = math.inf if life.gone is None else life.gone
            r = math.inf if life.ready is None else life.ready
            s = math.inf if life.start is None else life.start
            ready[i] = (r <= mids) & (mids < gone)
            starting[i] = (s <= mids) & (mids < r) & (mids < gone)
            for k in np.nonzero(ready[i])[0]:
                ready_bits[k] |= 1 << i
        self.ready = ready
        self.starting = starting
        self.ready_bits = ready_bits
        self.demand = (self.inc * ready).sum(axis=0) if steps else np.zeros(0)
        self.ready_count = ready.sum(axis=0) if steps else np.zeros(0, dtype=int)
        self.lives = recording.lives

    def startup_rate(self, name: str) -> float:
        """CPU cores the recorded pod burnt while it started (between scheduled and Ready)."""
        i = self.index[name]
        seconds = float(np.sum(np.diff(self.grid)[self.starting[i]]))
        used = float(np.sum(self.inc[i][self.starting[i]]))
        return used / seconds if seconds > 0 else 0.0


def counterfactual(
    recording: Recording,
    spec: HPASpec,
    config: ReplayConfig | None = None,
    *,
    capacity: int | None = None,
) -> Outcome:
    """Replay the recorded demand under ``spec``; ``capacity``: the most pods the node pools
    hold (None: unbounded)."""
    cfg = config or ReplayConfig()
    period = cfg.controller.sync_period
    end = recording.end - recording.start
    rec = _Recorded(recording)
    lives = recording.lives
    ordinal = ordinals(lives)
    notes: list[str] = []
    startup_rates: dict[str, float] = {}

    def startup_rate(name: str) -> float:
        if name not in startup_rates:
            startup_rates[name] = rec.startup_rate(name)
        return startup_rates[name]

    pods: list[Pod] = []
    for life in sorted(lives.values(), key=lambda p: (p.created, p.name)):
        if _alive(life, 0.0):
            pods.append(_copy(life, ordinal[life.name], life.name))
    first = [r for r in recording.rounds if r.t < period]
    replicas = first[0].current if first else len(pods)
    by_ordinal: dict[int, list[PodLife]] = {}
    for life in lives.values():
        if life.ready is not None:
            by_ordinal.setdefault(ordinal[life.name], []).append(life)
    slowest = max(
        (p for p in lives.values() if p.ready is not None),
        key=lambda p: (p.ready or 0.0) - p.created,
        default=None,
    )
    # A pod the recording lacks requests what the newest recorded pod requested.
    request = max(lives.values(), key=lambda p: (p.created, p.name)).cpu_request if lives else 0
    used_identity = {p.name for p in pods}
    made = 0

    grid, mids = rec.grid, rec.mids
    k = 0  # next grid interval to integrate
    cpu_total = 0.0
    unserved = 0.0
    served = 0.0
    counters: dict[str, Counter] = {}

    def emit(pod: Pod, j: int) -> None:
        if pod.identity is not None:
            i = rec.index[pod.identity]
            if j not in rec.own[i] and j <= rec.last_own[i]:
                return
        elif pod.start is None or grid[j] < pod.start:
            return
        pod.counter.times.append(float(grid[j]))
        pod.counter.values.append(pod.cpu_seconds)

    def integrate_until(t: float) -> None:
        nonlocal k, cpu_total, unserved, served
        while k < len(mids) and grid[k + 1] <= t:
            m = float(mids[k])
            width = float(grid[k + 1] - grid[k])
            live = [p for p in pods if _between(p.start, m, p.gone)]
            for p in live:
                if not p.counter.times:
                    emit(p, k)
            ready = [p for p in live if _between(p.ready, m, p.gone)]
            demand = float(rec.demand[k])
            shares = _shares(rec, k, ready)
            if m >= 0:
                if ready:
                    served += math.fsum(shares.values())
                else:
                    unserved += demand
            for p in live:
                if p in shares:
                    used = shares[p]
                elif p.identity is not None and (
                    rec.starting[rec.index[p.identity], k] or grid[k + 1] <= 0
                ):  # starting as recorded, or before the window: its own CPU
                    used = float(rec.inc[rec.index[p.identity], k])
                elif p.counterpart is not None and not _between(p.ready, m, None):
                    used = startup_rate(p.counterpart) * width
                else:
                    used = 0.0
                p.cpu_seconds += used
                if m >= 0:
                    cpu_total += used
                emit(p, k + 1)
            k += 1

    steps: list[Step] = []
    memory = hpa.HPAMemory()
    for t in sync_times(recording, period):
        integrate_until(t)
        listed = [p for p in pods if _alive(p, t)]
        infos = [p.info(t) for p in listed]
        counters = {p.name: p.counter for p in listed}
        cpu = cpu_metrics(infos, counters, t, cfg)
        result = hpa.reconcile(
            spec,
            current_replicas=replicas,
            status_replicas=len(listed),
            pods=infos,
            metrics=hpa.MetricsSnapshot(resource={"cpu": cpu}),
            now=t,
            memory=memory,
            config=cfg.controller,
        )
        steps.append(
            Step(
                t,
                replicas,
                result.desired_replicas,
                result.utilization("cpu"),
                len(listed),
                len(cpu),
            )
        )
        replicas = result.desired_replicas
        if replicas > len(listed):
            fresh = sorted(
                (
                    life
                    for life in lives.values()
                    if t <= life.created < t + period and life.name not in used_identity
                ),
                key=lambda p: (p.created, p.name),
            )
            for n in range(len(listed) + 1, replicas + 1):
                twin = next((p for p in fresh if ordinal[p.name] == n), None)
                if twin is not None:
                    fresh.remove(twin)
                    used_identity.add(twin.name)
                    pods.append(_copy(twin, n, twin.name))
                    continue
                made += 1
                name = f"{recording.target}-proposed-{made:05d}"
                pods.append(
                    _new(name, n, t, by_ordinal.get(n, []), slowest, capacity, request, notes)
                )
        elif replicas < len(listed):
            chosen = _to_delete(listed, len(listed) - replicas, lives, t, period)
            for p in chosen:
                twin_life = lives.get(p.identity or "")
                recorded_gone = twin_life.gone if twin_life is not None else None
                if recorded_gone is not None and t <= recorded_gone < t + period:
                    p.gone = recorded_gone
                else:
                    p.gone = t
    integrate_until(end)
    inside = mids >= 0
    recorded_cpu = float(np.sum(rec.inc[:, inside])) if len(mids) else 0.0
    demand = float(np.sum(rec.demand[inside])) if len(mids) else 0.0
    return Outcome(
        steps, pods, cpu_total, recorded_cpu, unserved, sorted(set(notes)), demand, served
    )


def _shares(rec: _Recorded, k: int, ready: list[Pod]) -> dict[Pod, float]:
    """The demand of grid interval ``k`` shared among the proposal's Ready pods."""
    if not ready:
        return {}
    demand = float(rec.demand[k])
    bits = 0
    exact = True
    for p in ready:
        if p.identity is None:
            exact = False
            break
        bits |= 1 << rec.index[p.identity]
    if exact and bits == rec.ready_bits[k]:
        return {p: float(rec.inc[rec.index[p.identity or ""], k]) for p in ready}
    count = int(rec.ready_count[k])
    average = demand / count if count else 1.0
    weights = []
    for p in ready:
        i = rec.index[p.identity] if p.identity is not None else None
        own = i is not None and bool(rec.ready[i, k])
        weights.append(float(rec.inc[i, k]) if own and i is not None else average)
    total = math.fsum(weights)
    if total <= 0:
        return {p: demand / len(ready) for p in ready}
    return {p: demand * w / total for p, w in zip(ready, weights, strict=True)}


def _copy(life: PodLife, n: int, identity: str) -> Pod:
    return Pod(
        name=life.name,
        ordinal=n,
        created=life.created,
        start=life.start,
        running=life.running,
        ready=life.ready,
        gone=None,
        cpu_request=life.cpu_request,
        identity=identity,
        counterpart=identity,
    )


def _new(
    name: str,
    n: int,
    t: float,
    same: list[PodLife],
    slowest: PodLife | None,
    capacity: int | None,
    request: int,
    notes: list[str],
) -> Pod:
    """A pod the recording lacks, created at ``t`` as replica ``n``."""
    twin = min(same, key=lambda p: (abs(p.created - t), p.created), default=None)
    if twin is None:
        if capacity is not None and n > capacity:
            notes.append(f"replica {n} is beyond the node pools' capacity ({capacity}): Pending")
        elif slowest is not None:
            notes.append(
                f"replica {n} never became Ready in the recording: it takes the slowest "
                "recorded start-up"
            )
            twin = slowest
        else:
            notes.append("no recorded pod became Ready: new pods stay Pending")
    if twin is None:
        return Pod(name, n, t, None, None, None, None, request, None, None)

    def shift(x: float | None) -> float | None:
        return None if x is None else round(t + (x - twin.created), 3)

    return Pod(
        name=name,
        ordinal=n,
        created=t,
        start=shift(twin.start),
        running=shift(twin.running),
        ready=shift(twin.ready),
        gone=None,
        cpu_request=request,
        identity=None,
        counterpart=twin.name,
    )


def _to_delete(
    listed: list[Pod], count: int, lives: dict[str, PodLife], t: float, period: float
) -> list[Pod]:
    """The pods the recorded ReplicaSet deleted in this sync period, then upstream's ranking."""
    recorded = sorted(
        (
            p
            for p in listed
            if p.identity is not None
            and (life := lives.get(p.identity)) is not None
            and life.gone is not None
            and t <= life.gone < t + period
        ),
        key=lambda p: (lives[p.identity or ""].gone, p.name),
    )
    chosen = recorded[:count]
    rest = [p for p in listed if p not in chosen]
    ranks = [
        PodRank(
            name=p.name,
            node=None if p.start is None or p.start > t else "node",
            phase="Running" if p.running is not None and p.running <= t else "Pending",
            ready=p.ready is not None and p.ready <= t,
            ready_since=p.ready,
            created=p.created,
        )
        for p in rest
    ]
    by_name = {p.name: p for p in rest}
    chosen += [by_name[name] for name in deletion_order(ranks)[: count - len(chosen)]]
    return chosen
