"""Pods with local storage (emptyDir on disk, hostPath) block (rules/localstorage/rule.go)."""

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
class LocalStorageRule:
    name: str = "LocalStorage"

    def drainable(self, pod: PodView, ctx: DrainContext) -> DrainStatus:
        if pod.local_storage:
            return blocked(BlockingReason.LOCAL_STORAGE_REQUESTED)
        return UNDEFINED
