"""The drainability rule chain: may the CA evict this pod to delete its node?

Mirrors kubernetes/autoscaler cluster-autoscaler/simulator/drainability/rules/rules.go: each
rule returns UNDEFINED, DRAIN_OK, SKIP_DRAIN or BLOCK_DRAIN, in order, and the first answer
other than UNDEFINED wins. Options switch rules off as the flags do. Upstream's
``Overrides`` (used by the replica-count rule) and the terminal/long-terminating rules are not
modelled: the simulated cluster has no terminal pods and no custom controllers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from sim.cluster.scheduler import OwnerKind, PodView


class Outcome(StrEnum):
    """simulator/drainability/status.go OutcomeType."""

    UNDEFINED = "Undefined"
    DRAIN_OK = "DrainOk"
    BLOCK_DRAIN = "BlockDrain"
    SKIP_DRAIN = "SkipDrain"


class BlockingReason(StrEnum):
    """utils/drain BlockingPodReason, for pods that keep their node alive."""

    NOT_REPLICATED = "NotReplicated"
    UNMOVABLE_KUBE_SYSTEM_POD = "UnmovableKubeSystemPod"
    NOT_SAFE_TO_EVICT_ANNOTATION = "NotSafeToEvictAnnotation"
    LOCAL_STORAGE_REQUESTED = "LocalStorageRequested"
    NOT_ENOUGH_PDB = "NotEnoughPdb"


@dataclass(frozen=True, slots=True)
class DrainStatus:
    """A rule's answer; ``reason`` is set only for BLOCK_DRAIN."""

    outcome: Outcome = Outcome.UNDEFINED
    reason: BlockingReason | None = None


UNDEFINED = DrainStatus()
DRAIN_OK = DrainStatus(Outcome.DRAIN_OK)
SKIP_DRAIN = DrainStatus(Outcome.SKIP_DRAIN)


def blocked(reason: BlockingReason) -> DrainStatus:
    return DrainStatus(Outcome.BLOCK_DRAIN, reason)


@dataclass(frozen=True, slots=True)
class DrainContext:
    """What rules may look at besides the pod: the loop's time."""

    now: float


class Rule(Protocol):
    """One drainability rule (simulator/drainability/rules/<name>/rule.go)."""

    @property
    def name(self) -> str: ...

    def drainable(self, pod: PodView, ctx: DrainContext) -> DrainStatus: ...


Rules = tuple[Rule, ...]


def drainable(pod: PodView, rules: Rules, ctx: DrainContext) -> DrainStatus:
    """The first non-UNDEFINED answer in ``rules`` (rules.go ``Rules.Drainable``)."""
    for rule in rules:
        status = rule.drainable(pod, ctx)
        if status.outcome is not Outcome.UNDEFINED:
            return status
    return UNDEFINED


@dataclass(frozen=True, slots=True)
class PodsToMove:
    """simulator/drain.go GetPodsToMove: pods to reschedule, DaemonSet pods, the blocker."""

    movable: tuple[PodView, ...] = ()
    daemonset: tuple[PodView, ...] = ()
    blocking_pod: PodView | None = None
    blocking_reason: BlockingReason | None = None

    @property
    def blocked(self) -> bool:
        return self.blocking_pod is not None


def pods_to_move(pods: tuple[PodView, ...], rules: Rules, ctx: DrainContext) -> PodsToMove:
    """Sort a node's pods into movable / DaemonSet / skipped; stop at the first blocker."""
    movable: list[PodView] = []
    daemonset: list[PodView] = []
    for pod in pods:
        status = drainable(pod, rules, ctx)
        if status.outcome is Outcome.BLOCK_DRAIN:
            return PodsToMove(blocking_pod=pod, blocking_reason=status.reason)
        if status.outcome in (Outcome.UNDEFINED, Outcome.DRAIN_OK):
            if pod.owner is OwnerKind.DAEMON_SET:
                daemonset.append(pod)
            else:
                movable.append(pod)
    return PodsToMove(tuple(movable), tuple(daemonset))
