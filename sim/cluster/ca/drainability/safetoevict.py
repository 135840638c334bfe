"""``cluster-autoscaler.kubernetes.io/safe-to-evict: "true"`` lets any pod go
(rules/safetoevict/rule.go); it is checked before every blocking rule."""

from __future__ import annotations

from dataclasses import dataclass

from sim.cluster.ca.drainability.rules import DRAIN_OK, UNDEFINED, DrainContext, DrainStatus
from sim.cluster.scheduler import PodView


@dataclass(frozen=True, slots=True)
class SafeToEvictRule:
    name: str = "SafeToEvict"

    def drainable(self, pod: PodView, ctx: DrainContext) -> DrainStatus:
        return DRAIN_OK if pod.safe_to_evict is True else UNDEFINED
