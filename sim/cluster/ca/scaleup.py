"""Scale-up: which pool grows, by how much, and the events for pods that cannot be helped.

Follows cluster-autoscaler/core/scaleup/orchestrator/orchestrator.go ``ScaleUp``: skip pools
in backoff or at max size; check one pod of each equivalence group against the pool's template
node; binpack the groups that fit (:mod:`sim.cluster.ca.estimator`); let the expander pick one
option; cap it at the pool's max size and ``--max-nodes-total``. Pods that fit no pool get a
``NotTriggerScaleUp`` event aggregating, per pool, why (processors/status/
eventing_scale_up_processor.go ``ReasonsMessage``; upstream leaves the order to Go's map
iteration, scalelab sorts the parts like the scheduler's FitError does). Balancing similar node
groups and node-group auto-provisioning are not modelled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sim.cluster.ca.estimator import estimate
from sim.cluster.ca.expander import ExpansionOption, choose
from sim.cluster.ca.model import (
    AutoscalerState,
    CAEvent,
    EventReason,
    NodePool,
    ScaleUpResult,
)
from sim.cluster.ca.options import AutoscalerOptions
from sim.cluster.scheduler import PodView, filter_node

# core/scaleup/orchestrator/skippedreasons.go
BACKOFF_REASON = "in backoff after failed scale-up"
MAX_LIMIT_REACHED_REASON = "max node group size reached"
MAX_TOTAL_REASON = "max total nodes in cluster reached"


@dataclass(frozen=True)
class ScaleUpOutcome:
    """``result``; on success ``pool`` grows by ``new_nodes``; ``events`` to record."""

    result: ScaleUpResult
    pool: str | None = None
    new_nodes: int = 0
    events: tuple[CAEvent, ...] = ()


def equivalence_groups(pods: Sequence[PodView]) -> list[list[PodView]]:
    """Pods with the same controller and scheduling-relevant spec, in first-seen order
    (core/scaleup/equivalence/groups.go); pods without a controller name stand alone."""
    groups: dict[tuple[object, ...], list[PodView]] = {}
    for pod in pods:
        key = (
            pod.namespace,
            pod.owner_name or f"pod/{pod.name}",
            pod.requests,
            tuple(sorted(pod.node_selector.items())),
            pod.tolerations,
        )
        groups.setdefault(key, []).append(pod)
    return list(groups.values())


def not_triggered_message(reasons: Counter[str]) -> str:
    """``pod didn't trigger scale-up: 1 Insufficient cpu, 1 max node group size reached``."""
    parts = sorted(f"{count} {reason}" for reason, count in reasons.items())
    return f"pod didn't trigger scale-up: {', '.join(parts)}"


def in_backoff(state: AutoscalerState, pool: str, now: float) -> bool:
    """utils/backoff ``BackoffStatus``: backed off until ``until`` (inclusive)."""
    backoff = state.backoff.get(pool)
    return backoff is not None and not backoff.until < now


def scale_up(
    pods: Sequence[PodView],
    pools: Sequence[NodePool],
    target_sizes: Mapping[str, int],
    node_count: int,
    state: AutoscalerState,
    now: float,
    options: AutoscalerOptions,
    rng: np.random.Generator | None,
) -> ScaleUpOutcome:
    """Decide one scale-up for ``pods`` (already filtered: none fits an existing node).

    ``target_sizes`` counts each pool's nodes including upcoming and draining ones;
    ``node_count`` is all nodes plus upcoming ones, for ``--max-nodes-total``.
    """
    groups = equivalence_groups(pods)
    skipped: dict[str, str] = {}
    valid: list[NodePool] = []
    for pool in sorted(pools, key=lambda p: p.name):
        if in_backoff(state, pool.name, now):
            skipped[pool.name] = BACKOFF_REASON
        elif target_sizes.get(pool.name, 0) >= pool.max_nodes:
            skipped[pool.name] = MAX_LIMIT_REACHED_REASON
        else:
            valid.append(pool)

    rejected: list[dict[str, tuple[str, ...]]] = [{} for _ in groups]
    schedulable: dict[str, list[list[PodView]]] = {pool.name: [] for pool in valid}
    for pool in valid:
        template = pool.template()
        for i, group in enumerate(groups):
            fit = filter_node(group[0], template)
            if fit.fits:
                schedulable[pool.name].append(group)
            else:
                rejected[i][pool.name] = fit.reasons

    options_: list[ExpansionOption] = []
    for pool in valid:
        room = pool.max_nodes - target_sizes.get(pool.name, 0)
        if options.max_nodes_total > 0:
            room = min(room, options.max_nodes_total - node_count)
        if not schedulable[pool.name] or room <= 0:
            continue
        est = estimate(schedulable[pool.name], pool.template(), max_nodes=room)
        if est.node_count > 0 and est.pods:
            options_.append(ExpansionOption(pool, est.node_count, est.pods))

    best = choose(options.expander, options_, rng)
    if best is None:
        events: list[CAEvent] = []
        for i, group in enumerate(groups):
            if any(group in schedulable[p.name] for p in valid):
                continue  # fits a pool, but no option this loop (e.g. cluster-wide cap)
            reasons: Counter[str] = Counter()
            for pool_reasons in rejected[i].values():
                reasons.update(pool_reasons)
            reasons.update(skipped.values())
            for pod in group:
                events.append(
                    CAEvent(
                        EventReason.NOT_TRIGGER_SCALE_UP, not_triggered_message(reasons), pod.name
                    )
                )
        return ScaleUpOutcome(ScaleUpResult.NO_OPTIONS_AVAILABLE, events=tuple(events))

    pool = best.pool
    current = target_sizes.get(pool.name, 0)
    new_nodes = min(best.node_count, pool.max_nodes - current)
    events = [
        CAEvent(
            EventReason.SCALED_UP_GROUP,
            f"Scale-up: setting group {pool.name} size to {current + new_nodes} "
            f"instead of {current} (max: {pool.max_nodes})",
        )
    ]
    info = f"[{{{pool.name} {current}->{current + new_nodes} (max: {pool.max_nodes})}}]"
    events.extend(
        CAEvent(EventReason.TRIGGERED_SCALE_UP, f"pod triggered scale-up: {info}", pod.name)
        for pod in best.pods
    )
    return ScaleUpOutcome(ScaleUpResult.SUCCESSFUL, pool.name, new_nodes, tuple(events))
