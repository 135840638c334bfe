"""Mirror (static) pods are skipped: they belong to the node (rules/mirror/rule.go)."""

from __future__ import annotations

from dataclasses import dataclass

from sim.cluster.ca.drainability.rules import SKIP_DRAIN, UNDEFINED, DrainContext, DrainStatus
from sim.cluster.scheduler import OwnerKind, PodView


@dataclass(frozen=True, slots=True)
class MirrorRule:
    name: str = "Mirror"

    def drainable(self, pod: PodView, ctx: DrainContext) -> DrainStatus:
        return SKIP_DRAIN if pod.owner is OwnerKind.MIRROR else UNDEFINED
