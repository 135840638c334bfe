"""DaemonSet pods never block a drain; they are not rescheduled (rules/daemonset/rule.go)."""

from __future__ import annotations

from dataclasses import dataclass

from sim.cluster.ca.drainability.rules import DRAIN_OK, UNDEFINED, DrainContext, DrainStatus
from sim.cluster.scheduler import OwnerKind, PodView


@dataclass(frozen=True, slots=True)
class DaemonSetRule:
    name: str = "DaemonSet"

    def drainable(self, pod: PodView, ctx: DrainContext) -> DrainStatus:
        return DRAIN_OK if pod.owner is OwnerKind.DAEMON_SET else UNDEFINED
