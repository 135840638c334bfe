"""The event story: ``events.jsonl`` read as ``kubectl get events`` reads (time, type, reason,
object, message), for the report's table and ``scalelab events``.

Reasons are Kubernetes' own where Kubernetes emits the event: the HPA's ``SuccessfulRescale``
with ``New size: N; reason: ...`` (pkg/controller/podautoscaler/horizontal.go), the
Deployment's ``ScalingReplicaSet``, the scheduler's ``FailedScheduling`` (Warning), the
kubelet's ``Scheduled``/``Pulled``/``Started``/``Killing``, the cluster autoscaler's
``TriggeredScaleUp``/``NotTriggerScaleUp``/``ScaleDown``. The HPA emits no event when it holds
its size; ``kubectl describe hpa`` shows that as conditions, so a hold appears here once, when
its condition changes. Per-scrape metrics (``pod_metrics``) are left out except in ``-o json``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

KINDS = ("hpa", "pod", "node", "autoscaler", "load")

_POD_REASONS = {
    "created": ("SuccessfulCreate", "Created pod"),
    "scheduled": ("Scheduled", "Successfully assigned to {node}"),
    "pulled": ("Pulled", "Pulled image {image}"),
    "started": ("Started", "Started container"),
    "loaded": ("ModelLoaded", "TF Serving loaded the model"),
    "ready": ("Ready", "Readiness probe succeeded"),
    "endpoint": ("EndpointAdded", "Added to the Service's endpoints"),
    "warm": ("Running", "Running and Ready since before t=0"),
    "terminating": ("Killing", "Stopping container: {reason}"),
    "deleted": ("Deleted", "Pod deleted"),
}
_NODE_REASONS = {
    "requested": ("CreatingNode", "Node requested, Ready in {ready_in} s"),
    "ready": ("NodeReady", "Node is Ready"),
    "draining": ("ScaleDown", "Draining node: {reason}"),
    "deleted": ("RemovingNode", "Node deleted"),
}
# Kubernetes emits these as type Warning; the rest (NotTriggerScaleUp included) are Normal.
_WARNINGS = {"FailedScheduling", "FailedGetResourceMetric", "FailedComputeMetricsReplicas"}


@dataclass(frozen=True)
class StoryRow:
    """One line of the story, as ``kubectl get events`` prints it."""

    t: float
    kind: str  # one of KINDS, or another event kind (profile, ...)
    type: str  # Normal or Warning
    reason: str
    object: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(template: str, event: dict[str, Any]) -> str:
    try:
        return template.format(**event)
    except (KeyError, IndexError, ValueError):
        return template


def _hpa_row(event: dict[str, Any], deployment: str) -> tuple[str, str] | None:
    obj = f"horizontalpodautoscaler/{deployment}"
    if event.get("rescale"):
        reason = str(event.get("reason", ""))
        return obj, f"SuccessfulRescale|New size: {event.get('desired_replicas')}; reason: {reason}"
    conditions = event.get("conditions") or {}
    limited = conditions.get("ScalingLimited")
    able = conditions.get("AbleToScale")
    if limited and limited != "DesiredWithinRange":
        return obj, (
            f"ScalingLimited|{limited}: held at {event.get('desired_replicas')} "
            f"(metrics ask for {event.get('metric_desired')}); cpu {event.get('cpu_utilization')}%"
        )
    if able == "ScaleDownStabilized":
        return obj, (
            f"ScaleDownStabilized|held at {event.get('desired_replicas')} "
            f"(metrics ask for {event.get('metric_desired')}) within the stabilization window"
        )
    return None


def story(
    events: Iterable[dict[str, Any]], *, deployment: str = "image-classifier"
) -> list[StoryRow]:
    """The events worth reading, in time order; HPA holds only when their condition changes."""
    rows: list[StoryRow] = []
    last_hold: str | None = None
    for event in events:
        kind = str(event.get("kind", ""))
        t = float(event.get("t", 0.0))
        group, obj, reason, message = kind, "", "", ""
        if kind == "hpa":
            found = _hpa_row(event, deployment)
            if found is None:
                last_hold = None
                continue
            obj, text = found
            reason, message = text.split("|", 1)
            if reason != "SuccessfulRescale":
                key = f"{reason}:{event.get('desired_replicas')}"
                if key == last_hold:
                    continue
                last_hold = key
            else:
                last_hold = None
        elif kind == "scale":
            target = event.get("target")
            old, new = event.get("old"), event.get("new")
            direction = "up" if (new or 0) > (old or 0) else "down"
            if target == "deployment":
                group, obj, reason = "hpa", f"deployment/{event.get('name')}", "ScalingReplicaSet"
                message = f"Scaled {direction} replica set from {old} to {new}"
            else:
                group, obj, reason = "autoscaler", f"nodepool/{event.get('name')}", "ScaledGroup"
                message = f"Scaled {direction} node pool from {old} to {new}: {event.get('reason')}"
        elif kind == "unschedulable":
            group, obj, reason = "pod", f"pod/{event.get('pod')}", "FailedScheduling"
            message = str(event.get("reason", ""))
        elif kind == "autoscaler":
            involved = str(event.get("involved") or "")
            if involved.startswith("gke-") or "-pool-" in involved:
                obj = f"node/{involved}"
            elif involved:
                obj = f"pod/{involved}"
            else:
                obj = "configmap/cluster-autoscaler-status"
            reason, message = str(event.get("reason", "")), str(event.get("message", ""))
        elif kind == "pod":
            obj = f"pod/{event.get('pod')}"
            reason, template = _POD_REASONS.get(
                str(event.get("event")), (str(event.get("event", "")).title(), "")
            )
            message = _fmt(template, event)
            if event.get("node") and "{node}" not in template:
                message = f"{message} (node {event['node']})" if message else str(event["node"])
        elif kind == "node":
            obj = f"node/{event.get('node')}"
            reason, template = _NODE_REASONS.get(
                str(event.get("event")), (str(event.get("event", "")).title(), "")
            )
            message = _fmt(template, event)
        elif kind == "load":
            obj = "locust"
            if event.get("event") == "shape":
                reason = "Shape"
                message = f"{event.get('users')} users, spawn rate {event.get('spawn_rate')}/s"
            else:
                reason = str(event.get("event", "")).title()
                message = f"{event.get('users', '')} users".strip()
        elif kind == "pod_metrics":
            continue
        else:
            reason = str(event.get("reason") or event.get("event") or kind)
            message = str(
                event.get("message")
                or event.get("note")
                or ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("t", "kind"))
            )
        warning = reason in _WARNINGS
        rows.append(StoryRow(t, group, "Warning" if warning else "Normal", reason, obj, message))
    rows.sort(key=lambda r: r.t)
    return rows


def filter_kind(rows: Iterable[StoryRow], kind: str | None) -> list[StoryRow]:
    return [r for r in rows if kind is None or r.kind == kind]


def clock(t: float, duration: float) -> str:
    """A time as the run's length reads best: 12.5s, 4m05s, 2h03m."""
    if duration <= 600:
        return f"{t:.1f}s" if t % 1 else f"{t:.0f}s"
    if duration <= 4 * 3600:
        minutes, seconds = divmod(round(t), 60)
        return f"{minutes}m{seconds:02d}s"
    hours, rest = divmod(round(t), 3600)
    return f"{hours}h{rest // 60:02d}m"
