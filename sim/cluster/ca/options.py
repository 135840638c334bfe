"""Cluster-autoscaler options with upstream defaults, and GKE's two autoscaling profiles.

Defaults are the flag defaults of kubernetes/autoscaler cluster-autoscaler (config/flags/
flags.go, release 1.34) and its FAQ's parameter table, except the expander: the FAQ's
parameter table now says ``least-waste``, but scalelab follows GKE's documented ``random``
for the balanced profile (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from sim.cluster.scheduler import Scoring
from sim.units import parse_duration


class Expander(StrEnum):
    """How the CA picks among node pools that could help (``--expander``)."""

    RANDOM = "random"
    LEAST_WASTE = "least-waste"
    MOST_PODS = "most-pods"
    PRICE = "price"


class Profile(StrEnum):
    """GKE autoscaling profile (``--autoscaling-profile``)."""

    BALANCED = "balanced"
    OPTIMIZE_UTILIZATION = "optimize-utilization"


@dataclass(frozen=True, slots=True)
class ProfileTimings:
    """The knobs a GKE autoscaling profile changes.

    Google documents only that optimize-utilization "scales down more aggressively: it can
    remove more nodes, and remove nodes faster" and that the scheduler then prefers
    MostAllocated; it publishes no numbers, so :data:`OPTIMIZE_UTILIZATION_ASSUMED` is an
    assumption to override per scenario.
    """

    scale_down_unneeded_time: float
    scale_down_delay_after_add: float
    utilization_threshold: float
    scheduler_scoring: Scoring


OPTIMIZE_UTILIZATION_ASSUMED = ProfileTimings(
    scale_down_unneeded_time=60.0,
    scale_down_delay_after_add=60.0,
    utilization_threshold=0.5,
    scheduler_scoring=Scoring.MOST_ALLOCATED,
)
"""ASSUMED optimize-utilization timings: 1 min unneeded, 1 min after add, same threshold."""

_DURATIONS = (
    "scan_interval",
    "scale_down_unneeded_time",
    "scale_down_delay_after_add",
    "scale_down_delay_after_delete",
    "scale_down_delay_after_failure",
    "unremovable_node_recheck_timeout",
    "max_node_provision_time",
    "new_pod_scale_up_delay",
    "unschedulable_pod_time_buffer",
    "unschedulable_gpu_pod_time_buffer",
    "blocking_system_pod_disruption_timeout",
    "initial_node_group_backoff",
    "max_node_group_backoff",
    "node_group_backoff_reset",
)


@dataclass(frozen=True)
class AutoscalerOptions:
    """Cluster-autoscaler settings; times in seconds. Field = flag, upstream default.

    The ``scale_down_unneeded_time``, ``scale_down_delay_after_add`` and
    ``utilization_threshold`` fields are the balanced profile's; with
    ``profile="optimize-utilization"`` the values in ``optimize_utilization`` apply instead
    (see :attr:`timings`).
    """

    scan_interval: float = 10.0  # --scan-interval
    scale_down_enabled: bool = True  # --scale-down-enabled
    scale_down_unneeded_time: float = 600.0  # --scale-down-unneeded-time
    scale_down_delay_after_add: float = 600.0  # --scale-down-delay-after-add
    scale_down_delay_after_delete: float | None = None  # None: scan_interval (FAQ)
    scale_down_delay_after_failure: float = 180.0  # --scale-down-delay-after-failure
    utilization_threshold: float = 0.5  # --scale-down-utilization-threshold
    gpu_utilization_threshold: float = 0.5  # --scale-down-gpu-utilization-threshold
    ignore_daemonsets_utilization: bool = False  # --ignore-daemonsets-utilization
    unremovable_node_recheck_timeout: float = 300.0  # --unremovable-node-recheck-timeout
    max_node_provision_time: float = 900.0  # --max-node-provision-time
    max_empty_bulk_delete: int = 10  # --max-empty-bulk-delete, now --max-scale-down-parallelism
    max_drain_parallelism: int = 1  # --max-drain-parallelism: non-empty nodes one at a time
    max_nodes_total: int = 0  # --max-nodes-total, 0 = no limit
    expander: Expander = Expander.RANDOM  # --expander (GKE balanced: random)
    profile: Profile = Profile.BALANCED  # GKE --autoscaling-profile
    optimize_utilization: ProfileTimings = field(default=OPTIMIZE_UTILIZATION_ASSUMED)
    new_pod_scale_up_delay: float = 0.0  # --new-pod-scale-up-delay
    # core/static_autoscaler.go unschedulablePodTimeBuffer / unschedulablePodWithGpuTimeBuffer
    unschedulable_pod_time_buffer: float = 2.0
    unschedulable_gpu_pod_time_buffer: float = 30.0
    skip_nodes_with_system_pods: bool = True  # --skip-nodes-with-system-pods
    skip_nodes_with_local_storage: bool = True  # --skip-nodes-with-local-storage
    # --blocking-system-pod-distruption-timeout (1h upstream since 1.34); None = never, the
    # long-standing behaviour the FAQ describes and GKE's CA is assumed to keep.
    blocking_system_pod_disruption_timeout: float | None = None
    initial_node_group_backoff: float = 300.0  # --initial-node-group-backoff-duration
    max_node_group_backoff: float = 1800.0  # --max-node-group-backoff-duration
    node_group_backoff_reset: float = 10800.0  # --node-group-backoff-reset-timeout

    def __post_init__(self) -> None:
        object.__setattr__(self, "expander", Expander(self.expander))
        object.__setattr__(self, "profile", Profile(self.profile))
        problems = []
        for name in _DURATIONS:
            value = getattr(self, name)
            if value is not None and value < 0:
                problems.append(f"{name} must be >= 0 seconds, got {value}")
        if self.scan_interval <= 0:
            problems.append(f"scan_interval must be > 0 seconds, got {self.scan_interval}")
        for name in ("utilization_threshold", "gpu_utilization_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be within [0, 1], got {getattr(self, name)}")
        if self.max_empty_bulk_delete < 1 or self.max_drain_parallelism < 0:
            problems.append("max_empty_bulk_delete must be >= 1 and max_drain_parallelism >= 0")
        if self.max_nodes_total < 0:
            problems.append(
                f"max_nodes_total must be >= 0 (0 = no limit), got {self.max_nodes_total}"
            )
        if problems:
            raise ValueError("invalid cluster-autoscaler options: " + "; ".join(problems))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> AutoscalerOptions:
        """Build from scenario-style values: durations may be strings such as ``"10m"``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown cluster-autoscaler option(s) {unknown}; allowed: {sorted(known)}"
            )
        parsed = dict(values)
        for name in _DURATIONS:
            if parsed.get(name) is not None:
                parsed[name] = parse_duration(parsed[name])
        if isinstance(parsed.get("optimize_utilization"), Mapping):
            ou = dict(parsed["optimize_utilization"])
            for name in ("scale_down_unneeded_time", "scale_down_delay_after_add"):
                if name in ou:
                    ou[name] = parse_duration(ou[name])
            if "scheduler_scoring" in ou:
                ou["scheduler_scoring"] = Scoring(ou["scheduler_scoring"])
            parsed["optimize_utilization"] = replace(OPTIMIZE_UTILIZATION_ASSUMED, **ou)
        return cls(**parsed)

    @property
    def timings(self) -> ProfileTimings:
        """The profile-dependent values in force."""
        if self.profile is Profile.OPTIMIZE_UTILIZATION:
            return self.optimize_utilization
        return ProfileTimings(
            scale_down_unneeded_time=self.scale_down_unneeded_time,
            scale_down_delay_after_add=self.scale_down_delay_after_add,
            utilization_threshold=self.utilization_threshold,
            scheduler_scoring=Scoring.LEAST_ALLOCATED,
        )

    @property
    def delay_after_delete(self) -> float:
        """``--scale-down-delay-after-delete``, defaulting to the scan interval."""
        if self.scale_down_delay_after_delete is None:
            return self.scan_interval
        return self.scale_down_delay_after_delete

    @property
    def scheduler_scoring(self) -> Scoring:
        """The kube-scheduler scoring strategy GKE pairs with this profile."""
        return self.timings.scheduler_scoring
