"""The scheduler's view of the nodes, kept current on bind and unbind instead of rebuilt per pod.

kube-scheduler keeps a cache of node infos updated by informer events and takes a snapshot of
it per cycle (pkg/scheduler/backend/cache/cache.go ``UpdateSnapshot`` copies only the nodes
whose generation changed). Here each node's :class:`NodeView` (requested resources, pod count,
taints) is updated when a pod binds or leaves, and, per *class* of pods (the same requests,
nodeSelector and tolerations: what filter and score read, as the old equivalence cache of
pkg/scheduler/core/equivalence_cache.go grouped them), each node's filter verdict and score are
kept too, with a heap of the feasible nodes by (score, name). One cycle is then O(log nodes):
the best-scored feasible node, the first by name among equal scores, exactly what
:func:`sim.cluster.scheduler.schedule` picks (without ``rng``) from the same nodes, and, when
no node fits, the same FitError and preemption messages from per-reason counts.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from sim.cluster import scheduler as sched
from sim.cluster.catalog import Resources

PodClass = tuple[Resources, tuple[tuple[str, str], ...], frozenset[str]]


def pod_class(pod: sched.PodView) -> PodClass:
    """What filter_node and score_node read from a pod (names and times do not matter)."""
    return (pod.requests, tuple(sorted(pod.node_selector.items())), pod.tolerations)


@dataclass
class _ClassIndex:
    """One pod class's verdict on every node, the reason counts, and the feasible heap."""

    pod: sched.PodView
    fits: dict[str, sched.NodeFit] = field(default_factory=dict)
    scores: dict[str, int] = field(default_factory=dict)
    reasons: Counter[str] = field(default_factory=Counter)
    resolvable: int = 0  # failing nodes preemption could help (NodeResourcesFit failures)
    unresolvable: int = 0
    heap: list[tuple[int, str, int]] = field(default_factory=list)


class SchedulerCache:
    """Node views by name plus per-pod-class indexes; :meth:`schedule` runs one cycle."""

    def __init__(
        self, scoring: sched.Scoring | str = sched.Scoring.LEAST_ALLOCATED, *, balanced: bool = True
    ) -> None:
        self.scoring = sched.Scoring(scoring)
        self.balanced = balanced
        self._nodes: dict[str, sched.NodeView] = {}
        self._versions: dict[str, int] = {}
        self._classes: dict[PodClass, _ClassIndex] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, name: str) -> bool:
        return name in self._nodes

    def __iter__(self) -> Iterator[sched.NodeView]:
        return iter(self._nodes.values())

    def view(self, name: str) -> sched.NodeView:
        return self._nodes[name]

    # --- cache updates -------------------------------------------------------------------------

    def upsert(self, view: sched.NodeView) -> None:
        """A node appeared or changed (added, Ready, tainted, a pod bound or gone)."""
        name = view.name
        self._nodes[name] = view
        version = self._versions.get(name, -1) + 1
        self._versions[name] = version
        for index in self._classes.values():
            self._forget(index, name)
            self._judge(index, view, version)

    def remove(self, name: str) -> None:
        """The node left the scheduler's view (deleted)."""
        if self._nodes.pop(name, None) is None:
            return
        self._versions[name] += 1
        for index in self._classes.values():
            self._forget(index, name)

    def bind(self, name: str, pod: sched.PodView) -> sched.NodeView:
        """``pod`` is bound to node ``name``: its requests count there from now on."""
        view = self._nodes[name].with_pod(pod)
        self.upsert(view)
        return view

    def unbind(self, name: str, pod: sched.PodView) -> sched.NodeView:
        """``pod`` left node ``name``: its requests are free again."""
        view = self._nodes[name].without_pod(pod)
        self.upsert(view)
        return view

    # --- one scheduling cycle ------------------------------------------------------------------

    def schedule(self, pod: sched.PodView) -> sched.Placement:
        """The node ``pod`` goes to, or the FitError when none fits (no preemption)."""
        index = self._index(pod)
        heap, versions = index.heap, self._versions
        while heap:
            neg_score, name, version = heap[0]
            if versions.get(name) == version and name in self._nodes:
                return sched.Placement(name, scores={name: -neg_score})
            heapq.heappop(heap)
        count = len(self._nodes)
        message = sched.fit_error_from_histogram(count, index.reasons)
        if count:
            preemption = sched.preemption_from_counts(count, index.resolvable, index.unresolvable)
            event = f"{message} {preemption}"
        else:
            event = message
        reasons = {k: v for k, v in index.reasons.items() if v > 0}
        return sched.Placement(None, message, event, reasons)

    # --- internals -----------------------------------------------------------------------------

    def _index(self, pod: sched.PodView) -> _ClassIndex:
        key = pod_class(pod)
        index = self._classes.get(key)
        if index is None:
            index = self._classes[key] = _ClassIndex(pod)
            for name, view in self._nodes.items():
                self._judge(index, view, self._versions[name])
        return index

    def _judge(self, index: _ClassIndex, view: sched.NodeView, version: int) -> None:
        fit = sched.filter_node(index.pod, view)
        name = view.name
        index.fits[name] = fit
        if fit.fits:
            score = sched.score_node(index.pod, view, self.scoring, self.balanced)
            index.scores[name] = score
            heapq.heappush(index.heap, (-score, name, version))
            if len(index.heap) > 2 * len(self._nodes) + 64:
                self._compact(index)
            return
        index.reasons.update(fit.reasons)
        if fit.resolvable:
            index.resolvable += 1
        else:
            index.unresolvable += 1

    def _forget(self, index: _ClassIndex, name: str) -> None:
        fit = index.fits.pop(name, None)
        if fit is None:
            return
        if fit.fits:
            del index.scores[name]
            return  # its heap entry is stale now (version moved on)
        index.reasons.subtract(fit.reasons)
        if fit.resolvable:
            index.resolvable -= 1
        else:
            index.unresolvable -= 1

    def _compact(self, index: _ClassIndex) -> None:
        versions = self._versions
        index.heap = [(-score, name, versions[name]) for name, score in index.scores.items()]
        heapq.heapify(index.heap)
