"""kube-scheduler's scheduling queue: activeQ, backoffQ and the unschedulable pool.

Follows kubernetes pkg/scheduler/internal/queue/scheduling_queue.go (PriorityQueue):

- A new pod enters ``activeQ``, ordered by the PrioritySort plugin: higher priority first, then
  the earlier queue timestamp (``pInfo.Timestamp``). ``pop`` counts an attempt.
- A pod that fails its cycle (``AddUnschedulableIfNotPresent``) gets the failure time as its
  timestamp and waits in ``unschedulablePods``. (Upstream sends it to ``backoffQ`` instead when
  a cluster event arrived during its cycle; scheduling here is instantaneous, so none can.)
- A cluster event that may make it fit (``MoveAllToActiveOrBackoffQueue``: a node added or made
  Ready, an assigned pod deleted) moves each unschedulable pod whose failing plugins care about
  the event to ``backoffQ`` while it is still backing off, else to ``activeQ``.
- Backoff: ``podInitialBackoffDuration`` (1 s) doubled per attempt after the first, at most
  ``podMaxBackoffDuration`` (10 s), from the pod's timestamp (``calculateBackoffDuration``).
  ``flushBackoffQCompleted`` runs every second and moves expired pods to ``activeQ``.
- ``flushUnschedulablePodsLeftover`` runs every 30 s and moves pods unschedulable for longer
  than ``podMaxInUnschedulablePodsDuration`` (5 min) as a cluster event would.

Pure data, no clock: every method takes ``now``. QueueingHints are approximated by each
plugin's registered events (EventsToRegister): NodeResourcesFit wakes on node add and assigned
pod delete, TaintToleration, NodeAffinity and NodeUnschedulable on node add only; a pod that
failed with no plugin (no nodes at all) wakes on any event.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from sim.cluster import scheduler as sched

DEFAULT_INITIAL_BACKOFF = 1.0  # podInitialBackoffDuration (apis/config/v1/defaults.go)
DEFAULT_MAX_BACKOFF = 10.0  # podMaxBackoffDuration
DEFAULT_MAX_IN_UNSCHEDULABLE = 300.0  # podMaxInUnschedulablePodsDuration (5 min)
BACKOFF_FLUSH_PERIOD = 1.0  # wait.Until(p.flushBackoffQCompleted, 1.0*time.Second, ...)
LEFTOVER_FLUSH_PERIOD = 30.0  # wait.Until(p.flushUnschedulablePodsLeftover, 30*time.Second, ...)


class ClusterEvent(StrEnum):
    """The cluster events that can make an unschedulable pod fit."""

    NODE_ADD = "NodeAdd"  # a node registered, or became Ready (its not-ready taint lifted)
    ASSIGNED_POD_DELETE = "AssignedPodDelete"  # a bound pod left its node, freeing requests
    UNSCHEDULABLE_TIMEOUT = "UnschedulableTimeout"  # the 5 min leftover flush


class Plugin(StrEnum):
    NODE_UNSCHEDULABLE = "NodeUnschedulable"
    TAINT_TOLERATION = "TaintToleration"
    NODE_AFFINITY = "NodeAffinity"
    NODE_RESOURCES_FIT = "NodeResourcesFit"


_WAKES_ON: dict[Plugin, frozenset[ClusterEvent]] = {
    Plugin.NODE_UNSCHEDULABLE: frozenset({ClusterEvent.NODE_ADD}),
    Plugin.TAINT_TOLERATION: frozenset({ClusterEvent.NODE_ADD}),
    Plugin.NODE_AFFINITY: frozenset({ClusterEvent.NODE_ADD}),
    Plugin.NODE_RESOURCES_FIT: frozenset({ClusterEvent.NODE_ADD, ClusterEvent.ASSIGNED_POD_DELETE}),
}


def failed_plugins(reasons: Iterable[str]) -> frozenset[Plugin]:
    """The filter plugins behind a cycle's failure reasons (``Placement.reasons`` keys)."""
    plugins: set[Plugin] = set()
    for reason in reasons:
        if reason == sched.REASON_UNSCHEDULABLE:
            plugins.add(Plugin.NODE_UNSCHEDULABLE)
        elif reason == sched.REASON_NODE_SELECTOR:
            plugins.add(Plugin.NODE_AFFINITY)
        elif reason.startswith("node(s) had untolerated taint"):
            plugins.add(Plugin.TAINT_TOLERATION)
        else:  # Insufficient <resource>, Too many pods
            plugins.add(Plugin.NODE_RESOURCES_FIT)
    return frozenset(plugins)


def backoff_duration(attempts: int, initial: float, maximum: float) -> float:
    """calculateBackoffDuration: ``initial`` doubled per attempt after the first, capped."""
    duration = initial
    for _ in range(1, attempts):
        if duration > maximum - duration:
            return maximum
        duration += duration
    return duration


@dataclass
class QueuedPod:
    """QueuedPodInfo: the queue's record of one pending pod."""

    name: str
    priority: int
    timestamp: float  # last added to the queue or last failed
    attempts: int = 0
    plugins: frozenset[Plugin] = frozenset()
    where: str = "active"  # active | backoff | unschedulable


@dataclass
class SchedulingQueue:
    """The three queues; pods are known by name."""

    initial_backoff: float = DEFAULT_INITIAL_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    max_in_unschedulable: float = DEFAULT_MAX_IN_UNSCHEDULABLE
    _pods: dict[str, QueuedPod] = field(default_factory=dict)
    _active: list[tuple[int, float, int, str]] = field(default_factory=list)
    _backoff: list[tuple[float, int, str]] = field(default_factory=list)
    _unschedulable: dict[str, QueuedPod] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise ValueError(
                "scheduling queue needs 0 < initial_backoff <= max_backoff, got "
                f"{self.initial_backoff}, {self.max_backoff}"
            )

    def __len__(self) -> int:
        return len(self._pods)

    def __contains__(self, name: str) -> bool:
        return name in self._pods

    def names(self) -> Iterator[str]:
        """Every queued pod's name, in the order they were added."""
        return iter(self._pods)

    def where(self, name: str) -> str | None:
        pod = self._pods.get(name)
        return pod.where if pod else None

    @property
    def unschedulable_count(self) -> int:
        return len(self._unschedulable)

    # --- entries and exits ---------------------------------------------------------------------

    def add(self, name: str, now: float, priority: int = 0) -> None:
        """A new pending pod (``Add``): straight to activeQ."""
        if name in self._pods:
            raise ValueError(f"pod {name!r} is already queued")
        pod = QueuedPod(name, priority, now)
        self._pods[name] = pod
        self._push_active(pod)

    def delete(self, name: str) -> None:
        """The pod was deleted or bound: forget it (stale heap entries are skipped)."""
        pod = self._pods.pop(name, None)
        if pod is not None and pod.where == "unschedulable":
            del self._unschedulable[name]

    def pop(self) -> str | None:
        """The next pod to schedule from activeQ (one more attempt), or None."""
        while self._active:
            _, _, _, name = heapq.heappop(self._active)
            pod = self._pods.get(name)
            if pod is not None and pod.where == "active":
                pod.where = "popped"
                pod.attempts += 1
                return name
        return None

    def unschedulable(self, name: str, now: float, reasons: Iterable[str] = ()) -> None:
        """``name``'s cycle failed: it waits for a cluster event (AddUnschedulableIfNotPresent)."""
        pod = self._pods[name]
        pod.timestamp = now
        pod.plugins = failed_plugins(reasons)
        pod.where = "unschedulable"
        self._unschedulable[name] = pod

    # --- moves ---------------------------------------------------------------------------------

    def backoff_until(self, name: str) -> float:
        pod = self._pods[name]
        return pod.timestamp + backoff_duration(
            pod.attempts, self.initial_backoff, self.max_backoff
        )

    def on_event(self, event: ClusterEvent, now: float) -> int:
        """MoveAllToActiveOrBackoffQueue: wake the unschedulable pods ``event`` may help.
        Returns how many moved."""
        moving = [
            pod
            for pod in self._unschedulable.values()
            if not pod.plugins or any(event in _WAKES_ON[p] for p in pod.plugins)
        ]
        for pod in moving:
            self._move(pod, now)
        return len(moving)

    def flush_backoff(self, now: float) -> int:
        """flushBackoffQCompleted: pods whose backoff is over go to activeQ."""
        moved = 0
        heap = self._backoff
        while heap and heap[0][0] <= now:
            _, _, name = heapq.heappop(heap)
            pod = self._pods.get(name)
            if pod is not None and pod.where == "backoff":
                self._push_active(pod)
                moved += 1
        return moved

    def flush_leftover(self, now: float) -> int:
        """flushUnschedulablePodsLeftover: pods unschedulable for over 5 min are retried."""
        stale = [
            pod
            for pod in self._unschedulable.values()
            if now - pod.timestamp > self.max_in_unschedulable
        ]
        for pod in stale:
            self._move(pod, now)
        return len(stale)

    def next_backoff_expiry(self) -> float | None:
        """When the earliest pod in backoffQ may go back to activeQ."""
        while self._backoff:
            until, _, name = self._backoff[0]
            pod = self._pods.get(name)
            if pod is not None and pod.where == "backoff":
                return until
            heapq.heappop(self._backoff)
        return None

    def _move(self, pod: QueuedPod, now: float) -> None:
        del self._unschedulable[pod.name]
        until = self.backoff_until(pod.name)
        if until > now:  # isPodBackingoff: backoff time After now
            pod.where = "backoff"
            heapq.heappush(self._backoff, (until, next(self._seq), pod.name))
        else:
            self._push_active(pod)

    def _push_active(self, pod: QueuedPod) -> None:
        pod.where = "active"
        heapq.heappush(self._active, (-pod.priority, pod.timestamp, next(self._seq), pod.name))
