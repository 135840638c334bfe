"""kube-system pods without a PodDisruptionBudget block their node (rules/system/rule.go),
unless ``--blocking-system-pod-distruption-timeout`` has passed since the pod was created."""

from __future__ import annotations

from dataclasses import dataclass

from sim.cluster.ca.drainability.rules import (
    DRAIN_OK,
    UNDEFINED,
    BlockingReason,
    DrainContext,
    DrainStatus,
    blocked,
)
from sim.cluster.scheduler import PdbState, PodView

KUBE_SYSTEM = "kube-system"


@dataclass(frozen=True, slots=True)
class SystemRule:
    disruption_timeout: float | None = None
    name: str = "System"

    def drainable(self, pod: PodView, ctx: DrainContext) -> DrainStatus:
        if pod.namespace != KUBE_SYSTEM or pod.pdb is not PdbState.NONE:
            return UNDEFINED
        if (
            self.disruption_timeout is not None
            and ctx.now > pod.created_at + self.disruption_timeout
        ):
            return DRAIN_OK
        return blocked(BlockingReason.UNMOVABLE_KUBE_SYSTEM_POD)
