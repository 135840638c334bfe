"""Stabilization, rate limits and scale-event bookkeeping: the normalize* half of ``horizontal.go``.

Every function takes ``now`` and the controller memory explicitly. Time windows follow Go's
``time.After``/``time.Before``: the behavior path counts a sample only if it is strictly newer
than ``now - window``; the legacy path keeps a sample unless it is strictly older than the cutoff.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sim.hpa.types import (
    MAX_INT32,
    MIN_INT32,
    AbleToScaleReason,
    Behavior,
    ControllerConfig,
    HPAMemory,
    PolicyType,
    ScaleEvent,
    ScalingLimitedReason,
    ScalingRules,
    SelectPolicy,
    TimestampedRecommendation,
)

__all__ = [
    "Limited",
    "Normalized",
    "Stabilized",
    "calculate_scale_down_limit_with_behaviors",
    "calculate_scale_up_limit",
    "calculate_scale_up_limit_with_scaling_rules",
    "convert_desired_replicas_with_behavior_rate",
    "convert_desired_replicas_with_rules",
    "get_longest_policy_period",
    "get_replicas_change_per_period",
    "mark_scale_events_outdated",
    "normalize_desired_replicas",
    "normalize_desired_replicas_with_behaviors",
    "record_initial_recommendation",
    "stabilize_recommendation",
    "stabilize_recommendation_with_behaviors",
    "store_scale_event",
]

_MESSAGES: dict[ScalingLimitedReason, str] = {
    ScalingLimitedReason.DESIRED_WITHIN_RANGE: "the desired count is within the acceptable range",
    ScalingLimitedReason.TOO_MANY_REPLICAS: (
        "the desired replica count is more than the maximum replica count"
    ),
    ScalingLimitedReason.TOO_FEW_REPLICAS: (
        "the desired replica count is less than the minimum replica count"
    ),
    ScalingLimitedReason.SCALE_UP_LIMIT: (
        "the desired replica count is increasing faster than the maximum scale rate"
    ),
    ScalingLimitedReason.SCALE_DOWN_LIMIT: (
        "the desired replica count is decreasing faster than the maximum scale rate"
    ),
}
STABILIZED_MESSAGES: dict[AbleToScaleReason, str] = {
    AbleToScaleReason.SCALE_UP_STABILIZED: (
        "recent recommendations were lower than current one, "
        "applying the lowest recent recommendation"
    ),
    AbleToScaleReason.SCALE_DOWN_STABILIZED: (
        "recent recommendations were higher than current one, "
        "applying the highest recent recommendation"
    ),
    AbleToScaleReason.READY_FOR_NEW_SCALE: "recommended size matches current size",
}


@dataclass(frozen=True)
class Stabilized:
    """A stabilized recommendation and the AbleToScale reason normalize* would set for it."""

    replicas: int
    reason: AbleToScaleReason


@dataclass(frozen=True)
class Limited:
    """A rule/rate-limited count and its ScalingLimited reason."""

    replicas: int
    reason: ScalingLimitedReason

    @property
    def message(self) -> str:
        """Upstream's message for ``reason``."""
        return _MESSAGES[self.reason]


# ----------------------------------------------------------------------------- recommendations
def record_initial_recommendation(memory: HPAMemory, current_replicas: int, now: float) -> None:
    """Mirrors ``recordInitialRecommendation``: only a nil history gets ``{current, now}``."""
    if memory.recommendations is None:
        memory.recommendations = [TimestampedRecommendation(current_replicas, now)]


def _store_recommendation(
    history: list[TimestampedRecommendation], old_index: int | None, desired: int, now: float
) -> None:
    """Overwrite the last old slot if there is one, else append (both stabilize* functions)."""
    entry = TimestampedRecommendation(desired, now)
    if old_index is None:
        history.append(entry)
    else:
        history[old_index] = entry


def stabilize_recommendation(
    memory: HPAMemory, desired: int, now: float, window: float
) -> Stabilized:
    """Mirrors legacy ``stabilizeRecommendation`` (behavior == nil).

    Result = max(desired, every recommendation not strictly older than ``now - window``).
    The raw ``desired`` is then stored. The AbleToScale reason is ScaleDownStabilized when the
    result differs from ``desired``, else ReadyForNewScale (normalizeDesiredReplicas).
    """
    if memory.recommendations is None:
        memory.recommendations = []
    history = memory.recommendations
    cutoff = now - window
    result = desired
    old_index: int | None = None
    for i, rec in enumerate(history):
        if rec.timestamp < cutoff:
            old_index = i
        elif rec.recommendation > result:
            result = rec.recommendation
    _store_recommendation(history, old_index, desired, now)
    reason = (
        AbleToScaleReason.SCALE_DOWN_STABILIZED
        if result != desired
        else AbleToScaleReason.READY_FOR_NEW_SCALE
    )
    return Stabilized(result, reason)


def stabilize_recommendation_with_behaviors(
    memory: HPAMemory,
    current_replicas: int,
    desired: int,
    now: float,
    up_window: float,
    down_window: float,
) -> Stabilized:
    """Mirrors ``stabilizeRecommendationWithBehaviors``.

    ``upRec = min(desired, recs newer than now-upWindow)``, ``downRec = max(desired, recs newer
    than now-downWindow)``; the result is ``current`` raised to ``upRec`` then lowered to
    ``downRec``. The raw ``desired`` is stored in the last slot older than both windows, else
    appended. The reason is the one normalizeDesiredReplicasWithBehaviors sets.
    """
    if memory.recommendations is None:
        memory.recommendations = []
    history = memory.recommendations
    up_cutoff = now - up_window
    down_cutoff = now - down_window
    up_rec = desired
    down_rec = desired
    old_index: int | None = None
    for i, rec in enumerate(history):
        if rec.timestamp > up_cutoff:
            up_rec = min(rec.recommendation, up_rec)
        if rec.timestamp > down_cutoff:
            down_rec = max(rec.recommendation, down_rec)
        if rec.timestamp < up_cutoff and rec.timestamp < down_cutoff:
            old_index = i
    result = current_replicas
    if result < up_rec:
        result = up_rec
    if result > down_rec:
        result = down_rec
    _store_recommendation(history, old_index, desired, now)
    if result == desired:
        reason = AbleToScaleReason.READY_FOR_NEW_SCALE
    elif desired >= current_replicas:
        reason = AbleToScaleReason.SCALE_UP_STABILIZED
    else:
        reason = AbleToScaleReason.SCALE_DOWN_STABILIZED
    return Stabilized(result, reason)


# ----------------------------------------------------------------------------- legacy rules
def calculate_scale_up_limit(current_replicas: int, factor: float, minimum: float) -> int:
    """Mirrors ``calculateScaleUpLimit``: ``int32(max(factor*current, minimum))``."""
    return int(max(factor * current_replicas, minimum))


def convert_desired_replicas_with_rules(
    current_replicas: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    *,
    scale_up_limit_factor: float,
    scale_up_limit_minimum: float,
) -> Limited:
    """Mirrors ``convertDesiredReplicasWithRules`` (behavior == nil): clamp to
    ``[min, min(max, scaleUpLimit)]`` with no scale-down rate limit."""
    scale_up_limit = calculate_scale_up_limit(
        current_replicas, scale_up_limit_factor, scale_up_limit_minimum
    )
    if max_replicas > scale_up_limit:
        maximum, limiting = scale_up_limit, ScalingLimitedReason.SCALE_UP_LIMIT
    else:
        maximum, limiting = max_replicas, ScalingLimitedReason.TOO_MANY_REPLICAS
    if desired < min_replicas:
        return Limited(min_replicas, ScalingLimitedReason.TOO_FEW_REPLICAS)
    if desired > maximum:
        return Limited(maximum, limiting)
    return Limited(desired, ScalingLimitedReason.DESIRED_WITHIN_RANGE)


# ----------------------------------------------------------------------------- behavior rules
def get_replicas_change_per_period(
    period_seconds: float, events: Sequence[ScaleEvent], now: float
) -> int:
    """Mirrors ``getReplicasChangePerPeriod``: sum of changes strictly newer than now-period."""
    cutoff = now - period_seconds
    return sum(e.replica_change for e in events if e.timestamp > cutoff)


def _period_start(
    current_replicas: int,
    period_seconds: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    now: float,
) -> int:
    return (
        current_replicas
        - get_replicas_change_per_period(period_seconds, up_events, now)
        + get_replicas_change_per_period(period_seconds, down_events, now)
    )


def calculate_scale_up_limit_with_scaling_rules(
    current_replicas: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: ScalingRules,
    now: float,
) -> int:
    """Mirrors ``calculateScaleUpLimitWithScalingRules``.

    Per policy: Pods -> ``periodStart + value``, Percent -> ``ceil(periodStart*(1+value/100))``;
    Max selects the largest proposal, Min the smallest, Disabled returns ``current``.
    """
    if rules.select_policy == SelectPolicy.DISABLED:
        return current_replicas
    pick_min = rules.select_policy == SelectPolicy.MIN
    result = MAX_INT32 if pick_min else MIN_INT32
    for policy in rules.policies:
        start = _period_start(current_replicas, policy.period_seconds, up_events, down_events, now)
        if policy.type == PolicyType.PODS:
            proposed = start + policy.value
        else:
            proposed = math.ceil(start * (1 + policy.value / 100))
        result = min(result, proposed) if pick_min else max(result, proposed)
    return result


def calculate_scale_down_limit_with_behaviors(
    current_replicas: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: ScalingRules,
    now: float,
) -> int:
    """Mirrors ``calculateScaleDownLimitWithBehaviors``.

    Per policy: Pods -> ``periodStart - value``, Percent -> ``int32(periodStart*(1-value/100))``
    (truncation); Max selects the smallest bound (biggest change), Min the largest, Disabled
    returns ``current``.
    """
    if rules.select_policy == SelectPolicy.DISABLED:
        return current_replicas
    pick_max = rules.select_policy == SelectPolicy.MIN
    result = MIN_INT32 if pick_max else MAX_INT32
    for policy in rules.policies:
        start = _period_start(current_replicas, policy.period_seconds, up_events, down_events, now)
        if policy.type == PolicyType.PODS:
            proposed = start - policy.value
        else:
            proposed = int(start * (1 - policy.value / 100))
        result = max(result, proposed) if pick_max else min(result, proposed)
    return result


def convert_desired_replicas_with_behavior_rate(
    current_replicas: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    behavior: Behavior,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    now: float,
) -> Limited:
    """Mirrors ``convertDesiredReplicasWithBehaviorRate``: rate limits plus min/max.

    A scale-up is capped at ``max(current, upLimit)`` and ``max``; a scale-down is floored at
    ``min(current, downLimit)`` and ``min``. An exhausted budget therefore freezes at
    ``current`` and never reverses the direction.
    """
    if desired > current_replicas:
        limit = calculate_scale_up_limit_with_scaling_rules(
            current_replicas, up_events, down_events, behavior.scale_up, now
        )
        limit = max(limit, current_replicas)
        if max_replicas > limit:
            maximum, reason = limit, ScalingLimitedReason.SCALE_UP_LIMIT
        else:
            maximum, reason = max_replicas, ScalingLimitedReason.TOO_MANY_REPLICAS
        if desired > maximum:
            return Limited(maximum, reason)
    elif desired < current_replicas:
        limit = calculate_scale_down_limit_with_behaviors(
            current_replicas, up_events, down_events, behavior.scale_down, now
        )
        limit = min(limit, current_replicas)
        if min_replicas < limit:
            minimum, reason = limit, ScalingLimitedReason.SCALE_DOWN_LIMIT
        else:
            minimum, reason = min_replicas, ScalingLimitedReason.TOO_FEW_REPLICAS
        if desired < minimum:
            return Limited(minimum, reason)
    return Limited(desired, ScalingLimitedReason.DESIRED_WITHIN_RANGE)


@dataclass(frozen=True)
class Normalized:
    """normalizeDesiredReplicas*' outcome: final count, stabilization and limiting steps."""

    desired: int
    stabilized: Stabilized
    limited: Limited


def normalize_desired_replicas(
    memory: HPAMemory,
    current_replicas: int,
    prenormalized: int,
    min_replicas: int,
    max_replicas: int,
    now: float,
    config: ControllerConfig,
) -> Normalized:
    """Mirrors ``normalizeDesiredReplicas`` (behavior == nil): legacy stabilization, then
    convertDesiredReplicasWithRules."""
    stab = stabilize_recommendation(
        memory, prenormalized, now, config.downscale_stabilization_window
    )
    limited = convert_desired_replicas_with_rules(
        current_replicas,
        stab.replicas,
        min_replicas,
        max_replicas,
        scale_up_limit_factor=config.scale_up_limit_factor,
        scale_up_limit_minimum=config.scale_up_limit_minimum,
    )
    return Normalized(limited.replicas, stab, limited)


def normalize_desired_replicas_with_behaviors(
    memory: HPAMemory,
    behavior: Behavior,
    current_replicas: int,
    prenormalized: int,
    min_replicas: int,
    max_replicas: int,
    now: float,
    config: ControllerConfig,
) -> Normalized:
    """Mirrors ``normalizeDesiredReplicasWithBehaviors``: fill a nil scale-down window from the
    controller flag (maybeInitScaleDownStabilizationWindow), stabilize, then rate-limit."""
    down_window = behavior.scale_down.stabilization_window_seconds
    if down_window is None:
        down_window = int(config.downscale_stabilization_window)
    up_window = behavior.scale_up.stabilization_window_seconds or 0
    stab = stabilize_recommendation_with_behaviors(
        memory, current_replicas, prenormalized, now, up_window, down_window
    )
    limited = convert_desired_replicas_with_behavior_rate(
        current_replicas,
        stab.replicas,
        min_replicas,
        max_replicas,
        behavior,
        memory.scale_up_events,
        memory.scale_down_events,
        now,
    )
    return Normalized(limited.replicas, stab, limited)


# ----------------------------------------------------------------------------- scale events
def get_longest_policy_period(rules: ScalingRules) -> int:
    """Mirrors ``getLongestPolicyPeriod`` (0 without policies)."""
    return max((p.period_seconds for p in rules.policies), default=0)


def mark_scale_events_outdated(
    events: list[ScaleEvent], longest_policy_period: float, now: float
) -> None:
    """Mirrors ``markScaleEventsOutdated``: events strictly older than the period are reusable."""
    cutoff = now - longest_policy_period
    for i, event in enumerate(events):
        if event.timestamp < cutoff:
            events[i] = replace(event, outdated=True)


def store_scale_event(
    behavior: Behavior | None,
    memory: HPAMemory,
    prev_replicas: int,
    new_replicas: int,
    now: float,
) -> None:
    """Mirrors ``storeScaleEvent``: nothing without a behavior; otherwise ``|new - prev|`` goes
    to the direction's list, overwriting its last outdated slot or appended."""
    if behavior is None:
        return
    if new_replicas > prev_replicas:
        events = memory.scale_up_events
        longest = get_longest_policy_period(behavior.scale_up)
        change = new_replicas - prev_replicas
    else:
        events = memory.scale_down_events
        longest = get_longest_policy_period(behavior.scale_down)
        change = prev_replicas - new_replicas
    mark_scale_events_outdated(events, longest, now)
    old_index: int | None = None
    for i, event in enumerate(events):
        if event.outdated:
            old_index = i
    new_event = ScaleEvent(change, now, outdated=False)
    if old_index is None:
        events.append(new_event)
    else:
        events[old_index] = new_event
