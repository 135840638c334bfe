"""Pods without a controller cannot be recreated elsewhere: they block
(rules/replicated/rule.go, drain.NotReplicated)."""

from __future__ import annotations

from dataclasses import dataclass

from sim.cluster.ca.drainability.rules import (
    UNDEFINED,
    BlockingReason,
    DrainContext,
    DrainStatus,
    blocked,
)
from sim.cluster.scheduler import OwnerKind, PodView


@dataclass(frozen=True, slots=True)
class ReplicatedRule:
    name: str = "Replicated"

    def drainable(self, pod: PodView, ctx: DrainContext) -> DrainStatus:
        if pod.owner is OwnerKind.NONE:
            return blocked(BlockingReason.NOT_REPLICATED)
        return UNDEFINED
