"""Drainability rules, one per file, chained in upstream order by :func:`default_rules`."""

from __future__ import annotations

from sim.cluster.ca.drainability.daemonset import DaemonSetRule
from sim.cluster.ca.drainability.localstorage import LocalStorageRule
from sim.cluster.ca.drainability.mirror import MirrorRule
from sim.cluster.ca.drainability.notsafetoevict import NotSafeToEvictRule
from sim.cluster.ca.drainability.pdb import PdbRule
from sim.cluster.ca.drainability.replicated import ReplicatedRule
from sim.cluster.ca.drainability.rules import (
    BlockingReason,
    DrainContext,
    DrainStatus,
    Outcome,
    PodsToMove,
    Rule,
    Rules,
    drainable,
    pods_to_move,
)
from sim.cluster.ca.drainability.safetoevict import SafeToEvictRule
from sim.cluster.ca.drainability.system import SystemRule
from sim.cluster.ca.options import AutoscalerOptions


def default_rules(options: AutoscalerOptions | None = None) -> Rules:
    """rules.go ``Default``: mirror; then interrupting (DaemonSet, safe-to-evict); then
    blocking (replicated, system, not-safe-to-evict, local storage, PDB). The system and
    local-storage rules follow ``--skip-nodes-with-system-pods`` / ``-with-local-storage``."""
    opts = options or AutoscalerOptions()
    rules: list[Rule] = [MirrorRule(), DaemonSetRule(), SafeToEvictRule(), ReplicatedRule()]
    if opts.skip_nodes_with_system_pods:
        rules.append(SystemRule(opts.blocking_system_pod_disruption_timeout))
    rules.append(NotSafeToEvictRule())
    if opts.skip_nodes_with_local_storage:
        rules.append(LocalStorageRule())
    rules.append(PdbRule())
    return tuple(rules)


__all__ = [
    "BlockingReason",
    "DrainContext",
    "DrainStatus",
    "Outcome",
    "PodsToMove",
    "Rule",
    "Rules",
    "default_rules",
    "drainable",
    "pods_to_move",
]
