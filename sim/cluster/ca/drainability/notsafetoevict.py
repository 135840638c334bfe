"""``cluster-autoscaler.kubernetes.io/safe-to-evict: "false"`` blocks
(rules/notsafetoevict/rule.go)."""

from __future__ import annotations

from dataclasses import dataclass

from sim.cluster.ca.drainability.rules import (
    UNDEFINED,
    BlockingReason,
    DrainContext,
    DrainStatus,
    blocked,
)
from sim.cluster.scheduler import PodView


@dataclass(frozen=True, slots=True)
class NotSafeToEvictRule:
    name: str = "NotSafeToEvict"

    def drainable(self, pod: PodView, ctx: DrainContext) -> DrainStatus:
        if pod.safe_to_evict is False:
            return blocked(BlockingReason.NOT_SAFE_TO_EVICT_ANNOTATION)
        return UNDEFINED
