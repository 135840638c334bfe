"""A PodDisruptionBudget with no disruptions left blocks (rules/pdb/rule.go). Upstream also
decrements budgets as it plans several nodes; here each pod's budget state is given."""

from __future__ import annotations

from dataclasses import dataclass

from sim.cluster.ca.drainability.rules import (
    UNDEFINED,
    BlockingReason,
    DrainContext,
    DrainStatus,
    blocked,
)
from sim.cluster.scheduler import PdbState, PodView


@dataclass(frozen=True, slots=True)
class PdbRule:
    name: str = "PDB"

    def drainable(self, pod: PodView, ctx: DrainContext) -> DrainStatus:
        return blocked(BlockingReason.NOT_ENOUGH_PDB) if pod.pdb is PdbState.BLOCKS else UNDEFINED
