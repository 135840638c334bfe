"""Which pods a ReplicaSet deletes first when it scales down.

Mirrors kubernetes pkg/controller/controller_utils.go ``ActivePodsWithRanks.Less`` (as used by
replica_set.go ``getPodsToDelete``): unassigned before assigned; Pending before Unknown before
Running; not ready before ready; more pods of the set on the same node first (rank); ready for
a shorter time first; (restart counts are always 0 here); newer before older.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}


@dataclass(frozen=True)
class PodRank:
    name: str
    node: str | None
    phase: str
    ready: bool
    ready_since: float | None
    created: float


def deletion_order(pods: Sequence[PodRank]) -> list[str]:
    """Pod names, the first to delete first."""
    per_node = Counter(p.node for p in pods if p.node is not None)

    def key(p: PodRank) -> tuple[int, int, int, int, float, float]:
        return (
            0 if p.node is None else 1,
            _PHASE_ORDER.get(p.phase, 3),
            1 if p.ready else 0,
            -per_node[p.node] if p.node is not None else 0,
            # ready for less time first: a later transition sorts first
            -(p.ready_since if p.ready and p.ready_since is not None else 0.0),
            -p.created,
        )

    return [p.name for p in sorted(pods, key=key)]


def pods_to_delete(pods: Sequence[PodRank], count: int) -> list[str]:
    return deletion_order(pods)[: max(0, count)]
