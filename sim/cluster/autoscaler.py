"""The cluster autoscaler's decision core: one ``RunOnce`` loop as a pure function.

:func:`decide` takes a :class:`ClusterSnapshot` (pools, nodes with their pods, unschedulable
pods), the :class:`AutoscalerState` from the previous loop, the time, the options and a numpy
generator, and returns an :class:`AutoscalerDecision`; the SimPy world calls it every
``scan_interval`` and applies the result. The order follows cluster-autoscaler/core/
static_autoscaler.go (release 1.34):

1. Nodes still not Ready ``max_node_provision_time`` after they were requested are given up
   (``removeOldUnregisteredNodes``, never below min size) and their pool backs off from
   scale-up (5 min, doubling to 30 min, forgotten after 3 h).
2. Pods on nodes being drained join the pods to help (podlistprocessor/
   currently_drained_nodes.go); pending pods that fit a Ready node, or a template node standing
   for each upcoming node, are placed there in the CA's snapshot and need no scale-up
   (filter_out_schedulable.go) — so nodes still provisioning are not asked for twice.
3. If pods remain and the oldest is at least 2 s old (30 s for GPU pods), scale-up runs
   (:mod:`sim.cluster.ca.scaleup`); otherwise scale-down is also skipped this loop.
4. Scale-down always recomputes unneeded nodes (:mod:`sim.cluster.ca.scaledown`), then deletes
   only outside the cooldowns: ``scale_down_delay_after_add`` since the last scale-up (this
   loop's included), ``scale_down_delay_after_delete`` since the last deletion,
   ``scale_down_delay_after_failure`` since the last failure.

Times compare strictly as upstream's ``time.Before``/``After``: a node unneeded since ``t`` is
removable from the first loop *after* ``t + unneeded_time``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np

from sim.cluster.ca.drainability import default_rules
from sim.cluster.ca.model import (
    AutoscalerDecision,
    AutoscalerState,
    Backoff,
    CAEvent,
    ClusterSnapshot,
    EventReason,
    NodePhase,
    NodePool,
    NodeSnapshot,
    ScaleDownResult,
    ScaleUpResult,
    UnremovableReason,
    is_daemon,
)
from sim.cluster.ca.options import AutoscalerOptions
from sim.cluster.ca.scaledown import Candidate, find_unneeded, select_for_deletion
from sim.cluster.ca.scaleup import MAX_TOTAL_REASON, scale_up
from sim.cluster.schedcache import PodClass, pod_class
from sim.cluster.scheduler import NodeView, OwnerKind, PodView, first_fit


def _prune(
    snapshot: ClusterSnapshot, state: AutoscalerState, now: float, options: AutoscalerOptions
) -> AutoscalerState:
    present = {n.name: n for n in snapshot.nodes if n.phase is not NodePhase.DELETED}
    deleting = {k: v for k, v in state.deleting.items() if k in present}
    for node in present.values():
        if node.phase is NodePhase.DRAINING and node.name not in deleting:
            deleting[node.name] = any(not is_daemon(p) for p in node.pods)
    return replace(
        state,
        unneeded_since={k: v for k, v in state.unneeded_since.items() if k in present},
        unremovable_until={
            k: v for k, v in state.unremovable_until.items() if k in present and v > now
        },
        deleting=deleting,
        backoff={
            k: b
            for k, b in state.backoff.items()
            if now - b.last_failure <= options.node_group_backoff_reset
        },
    )


def _give_up_unregistered(
    snapshot: ClusterSnapshot, state: AutoscalerState, now: float, options: AutoscalerOptions
) -> tuple[list[str], list[CAEvent], AutoscalerState]:
    removed: list[str] = []
    events: list[CAEvent] = []
    backoff = dict(state.backoff)
    for pool in sorted(snapshot.pools, key=lambda p: p.name):
        limit = pool.max_node_provision_time or options.max_node_provision_time
        nodes = snapshot.pool_nodes(pool.name)
        old = sorted(
            (n for n in nodes if n.phase.upcoming and n.created_at + limit < now),
            key=lambda n: (n.created_at, n.name),
        )
        if not old:
            continue
        oldest = old[0].created_at
        events.append(
            CAEvent(
                EventReason.SCALE_UP_TIMED_OUT,
                f"Nodes added to group {pool.name} failed to register within {now - oldest:g}s",
                type="Warning",
            )
        )
        previous = backoff.get(pool.name)
        duration = options.initial_node_group_backoff
        if previous is not None:
            duration = previous.duration
            if previous.until < now:
                duration = min(2 * previous.duration, options.max_node_group_backoff)
        backoff[pool.name] = Backoff(until=now + duration, duration=duration, last_failure=now)
        possible = len(nodes) - pool.min_nodes
        for node in old[: max(possible, 0)]:
            removed.append(node.name)
            events.append(
                CAEvent(EventReason.DELETE_UNREGISTERED, f"Removed unregistered node {node.name}")
            )
    return removed, events, replace(state, backoff=backoff)


def _node_view(node: NodeSnapshot, pool: NodePool) -> NodeView:
    return pool.view(node.name, node.pods)


def _all_pods_new(pods: list[PodView], now: float, options: AutoscalerOptions) -> bool:
    """static_autoscaler.go ``allPodsAreNew``: the oldest pod (GPU pod) is under 2 s (30 s)."""
    oldest = min(p.created_at for p in pods)
    if oldest + options.unschedulable_pod_time_buffer > now:
        return True
    gpu = [p.created_at for p in pods if p.requests.gpu > 0]
    return bool(gpu) and min(gpu) + options.unschedulable_gpu_pod_time_buffer > now


def filter_out_schedulable(
    pods: list[PodView],
    views: dict[str, NodeView],
    fake: dict[str, NodeView],
    injected: dict[str, list[PodView]],
) -> list[PodView]:
    """Place ``pods`` first fit on the Ready ``views``, then the upcoming nodes' templates
    (``fake``), updating both and recording in ``injected`` what went to Ready nodes; return
    the pods that fit nowhere (podlistprocessor/filter_out_schedulable.go).

    Equivalent pods resume where the last one landed (upstream hints by equivalence group):
    the nodes before it failed one and have only filled up since, so the result is first fit.
    """
    to_help: list[PodView] = []
    order = [*views, *fake]
    targets = [views[k] if k in views else fake[k] for k in order]
    resume: dict[PodClass, int] = {}
    for pod in pods:
        key = pod_class(pod)
        index = first_fit(pod, targets, resume.get(key, 0))
        if index is None:
            resume[key] = len(targets)
            to_help.append(pod)
            continue
        resume[key] = index
        name = order[index]
        targets[index] = targets[index].with_pod(pod)
        if name in views:
            views[name] = targets[index]
            injected[name].append(pod)
        else:
            fake[name] = targets[index]
    return to_help


def decide(
    snapshot: ClusterSnapshot,
    state: AutoscalerState,
    now: float,
    options: AutoscalerOptions | None = None,
    rng: np.random.Generator | None = None,
) -> AutoscalerDecision:
    """One cluster-autoscaler loop at time ``now``: what to add, what to remove, and why.

    ``rng`` breaks expander ties (``random`` draws from it every time several pools could
    help); without one the first pool by name is taken. The returned decision carries the
    state for the next loop; ``state`` itself is not modified.
    """
    opts = options or AutoscalerOptions()
    pools = snapshot.pool_by_name
    st = _prune(snapshot, state, now, opts)
    events: list[CAEvent] = []

    # 1. Nodes that never came up.
    given_up, give_up_events, st = _give_up_unregistered(snapshot, st, now, opts)
    events.extend(give_up_events)
    gone = set(given_up)
    live = [n for n in snapshot.nodes if n.phase is not NodePhase.DELETED and n.name not in gone]
    target_sizes: dict[str, int] = defaultdict(int)
    for node in live:
        target_sizes[node.pool] += 1
    deletion_pools = {n.name: n.pool for n in live if n.name in st.deleting}

    # 2. The CA's snapshot: Ready nodes (not being deleted) and one template per upcoming node.
    ready = sorted(
        (n for n in live if n.phase is NodePhase.READY and n.name not in st.deleting),
        key=lambda n: n.name,
    )
    views: dict[str, NodeView] = {n.name: _node_view(n, pools[n.pool]) for n in ready}
    upcoming = sorted((n for n in live if n.phase.upcoming), key=lambda n: n.name)
    fake: dict[str, NodeView] = {n.name: pools[n.pool].template(n.name) for n in upcoming}
    injected: dict[str, list[PodView]] = defaultdict(list)

    drained_pods = [
        p
        for n in live
        if n.name in st.deleting
        for p in n.pods
        if not is_daemon(p) and p.owner is not OwnerKind.NONE
    ]
    candidates_pending = [p for p in (*snapshot.pending, *drained_pods) if not is_daemon(p)]
    candidates_pending.sort(key=lambda p: -p.priority)  # stable: equal priority keeps order
    to_help = filter_out_schedulable(candidates_pending, views, fake, injected)
    if opts.new_pod_scale_up_delay > 0:
        to_help = [p for p in to_help if now - p.created_at >= opts.new_pod_scale_up_delay]

    # 3. Scale-up.
    scale_up_result = ScaleUpResult.NOT_NEEDED
    scale_up_plan: dict[str, int] = {}
    scale_down_forbidden = False
    if not to_help:
        pass
    elif opts.max_nodes_total > 0 and len(ready) >= opts.max_nodes_total:
        scale_up_result = ScaleUpResult.LIMITED_BY_MAX_NODES_TOTAL
        events.append(
            CAEvent(
                EventReason.MAX_NODES_TOTAL_REACHED,
                f"Max total nodes in cluster reached: {opts.max_nodes_total}",
                type="Warning",
            )
        )
        events.extend(
            CAEvent(
                EventReason.NOT_TRIGGER_SCALE_UP,
                f"pod didn't trigger scale-up: {MAX_TOTAL_REASON}",
                p.name,
            )
            for p in to_help
        )
    elif _all_pods_new(to_help, now, opts):
        scale_up_result = ScaleUpResult.IN_COOLDOWN
        scale_down_forbidden = True
    else:
        outcome = scale_up(to_help, snapshot.pools, target_sizes, len(live), st, now, opts, rng)
        scale_up_result = outcome.result
        events.extend(outcome.events)
        if outcome.result is ScaleUpResult.SUCCESSFUL and outcome.pool is not None:
            scale_up_plan[outcome.pool] = outcome.new_nodes
            st = replace(st, last_scale_up_time=now)

    # 4. Scale-down.
    if not opts.scale_down_enabled:
        return AutoscalerDecision(
            state=replace(st, unneeded_since={}),
            scale_up=scale_up_plan,
            remove_unregistered=tuple(given_up),
            events=tuple(events),
            scale_up_result=scale_up_result,
            scale_down_result=ScaleDownResult.DISABLED,
        )
    candidates = [
        Candidate(n.name, pools[n.pool], (*n.pods, *injected[n.name]), n.scale_down_disabled)
        for n in ready
    ]
    found = find_unneeded(candidates, views, st.unremovable_until, now, opts, default_rules(opts))
    unneeded_since = {r.name: st.unneeded_since.get(r.name, now) for r in found.removable}
    unremovable = dict(found.unremovable)
    for name in st.deleting:
        unremovable[name] = UnremovableReason.CURRENTLY_BEING_DELETED
    st = replace(
        st,
        unneeded_since=unneeded_since,
        unremovable_until={**st.unremovable_until, **found.recheck_until},
    )

    timings = opts.timings
    in_cooldown = (
        scale_down_forbidden
        or (
            st.last_scale_up_time is not None
            and st.last_scale_up_time + timings.scale_down_delay_after_add > now
        )
        or (
            st.last_scale_down_fail_time is not None
            and st.last_scale_down_fail_time + opts.scale_down_delay_after_failure > now
        )
        or (
            st.last_scale_down_delete_time is not None
            and st.last_scale_down_delete_time + opts.delay_after_delete > now
        )
    )
    empty: tuple[str, ...] = ()
    drain: tuple[str, ...] = ()
    evict: dict[str, tuple[str, ...]] = {}
    if in_cooldown:
        scale_down_result = ScaleDownResult.IN_COOLDOWN
    elif not found.removable:
        scale_down_result = ScaleDownResult.NO_UNNEEDED
    else:
        selection = select_for_deletion(
            found.removable,
            unneeded_since,
            pools,
            target_sizes,
            st.deleting,
            deletion_pools,
            now,
            opts,
        )
        unremovable.update(selection.unremovable)
        empty = tuple(n.name for n in selection.empty)
        drain = tuple(n.name for n in selection.drain)
        if empty or drain:
            scale_down_result = ScaleDownResult.NODE_DELETE_STARTED
            for removed in selection.empty:
                events.append(
                    CAEvent(
                        EventReason.SCALE_DOWN_EMPTY,
                        f'Scale-down: removing empty node "{removed.name}"',
                    )
                )
            for removed in selection.drain:
                names = tuple(p.name for p in removed.pods_to_move)
                evict[removed.name] = names
                events.append(
                    CAEvent(
                        EventReason.SCALE_DOWN,
                        f"Scale-down: removing node {removed.name}, "
                        f"utilization: {removed.utilization}, "
                        f"pods to reschedule: {','.join(names)}",
                    )
                )
            for name in (*empty, *drain):
                events.append(
                    CAEvent(
                        EventReason.SCALE_DOWN, "marked the node as toBeDeleted/unschedulable", name
                    )
                )
            deleting = dict(st.deleting)
            deleting.update(dict.fromkeys(empty, False))
            deleting.update(dict.fromkeys(drain, True))
            st = replace(
                st,
                deleting=deleting,
                last_scale_down_delete_time=now,
                unneeded_since={k: v for k, v in st.unneeded_since.items() if k not in deleting},
            )
        else:
            scale_down_result = ScaleDownResult.NO_NODE_DELETED

    return AutoscalerDecision(
        state=st,
        scale_up=scale_up_plan,
        scale_down_empty=empty,
        scale_down_drain=drain,
        pods_to_evict=evict,
        remove_unregistered=tuple(given_up),
        events=tuple(events),
        unneeded=tuple(sorted(st.unneeded_since)),
        unremovable=unremovable,
        blocking_pods=found.blocking_pods,
        scale_up_result=scale_up_result,
        scale_down_result=scale_down_result,
    )


__all__ = [
    "AutoscalerDecision",
    "AutoscalerOptions",
    "AutoscalerState",
    "CAEvent",
    "ClusterSnapshot",
    "EventReason",
    "NodePhase",
    "NodePool",
    "NodeSnapshot",
    "ScaleDownResult",
    "ScaleUpResult",
    "UnremovableReason",
    "decide",
]
