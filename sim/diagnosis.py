"""Why a run went wrong: causes read off the events and the per-second series, in words.

Pure functions on the Trace's plain data (no simulator state), so a real cluster's trace is
diagnosed the same way. Each finding names the time span, the object and the reason the
events give (the cluster autoscaler's NotTriggerScaleUp message, the scheduler's
FailedScheduling message, the HPA's ScalingLimited condition).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Assumption: a pod Pending for less than this waited for an ordinary node scale-up (GKE nodes
# take ~50-80 s to become Ready), which is not a cause.
PENDING_REPORT_S = 120.0
# Assumption: SLO misses less than this apart are one span.
SLO_MERGE_GAP_S = 60.0
# Assumption: load is "uneven" when, in at least this share of the samples with 2+ Ready
# pods, one Ready pod has no connected user while another has at least 2.
UNEVEN_SHARE = 0.2

_FAILURE_WORDS = {
    "timeout": "timed out",
    "unavailable": "UNAVAILABLE (batch queue full)",
    "reset": "reset at SIGTERM",
    "no_endpoint": "refused: no Ready endpoint",
    "other": "other errors (summary.json's locust_errors has their texts)",
}


def minutes(t: float) -> str:
    """4.5 min, 11 min, 90 s: a time for a sentence."""
    if t < 120:
        return f"{t:.0f} s"
    value = t / 60
    return f"{value:.1f} min".replace(".0 min", " min")


def _pending_causes(events: Sequence[dict[str, Any]], duration: float) -> list[str]:
    created: dict[str, float] = {}
    first_unschedulable: dict[str, float] = {}
    last_message: dict[str, str] = {}
    ca_reason: dict[str, str] = {}
    ended: dict[str, float] = {}
    for e in events:
        kind, pod = e.get("kind"), e.get("pod")
        if kind == "pod" and pod:
            if e.get("event") == "created":
                created.setdefault(pod, float(e["t"]))
            elif e.get("event") in ("scheduled", "terminating", "deleted"):
                ended.setdefault(pod, float(e["t"]))
        elif kind == "unschedulable" and pod:
            first_unschedulable.setdefault(pod, float(e["t"]))
            last_message[pod] = str(e.get("reason", ""))
        elif kind == "autoscaler" and e.get("reason") == "NotTriggerScaleUp":
            involved = str(e.get("involved") or "")
            message = str(e.get("message", ""))
            ca_reason[involved] = message.split(": ", 1)[-1]
        elif kind == "k8s_event" and e.get("reason") == "NotTriggerScaleUp":
            # A real cluster's Event as cloud/observe.py logs it: object "Pod/NAME", message
            # "pod didn't trigger scale-up: ..." (cluster-autoscaler
            # processors/status/eventing_scale_up_processor.go).
            involved = str(e.get("object") or "").removeprefix("Pod/")
            ca_reason[involved] = str(e.get("message", "")).split(": ", 1)[-1]
    order = {name: i + 1 for i, name in enumerate(sorted(created, key=lambda n: created[n]))}
    causes = []
    for pod, start in first_unschedulable.items():
        end = ended.get(pod)
        span_end = duration if end is None else end
        if span_end - start < PENDING_REPORT_S:
            continue
        until = "the end" if end is None else minutes(end)
        why = ca_reason.get(pod) or last_message.get(pod, "")
        replica = f"replica {order[pod]}" if pod in order else f"pod {pod}"
        causes.append(f"{replica} Pending from {minutes(start)} to {until}: {why} ({pod})")
    return causes


def _failure_causes(summary: dict[str, Any], events: Sequence[dict[str, Any]]) -> list[str]:
    failed = int(summary.get("requests_failed") or 0)
    sent = int(summary.get("requests_total") or 0)
    if not failed or not sent:
        return []
    by_reason: dict[str, int] = summary.get("failures_by_reason") or {}
    parts = ", ".join(
        f"{n} {_FAILURE_WORDS.get(r, r)}" for r, n in sorted(by_reason.items(), key=lambda x: -x[1])
    )
    share = 100 * failed / sent
    text = f"{share:.3g}% of requests failed ({failed} of {sent})"
    if parts:
        text += f": {parts}"
    if by_reason.get("no_endpoint"):
        blocked = [str(e.get("reason")) for e in events if e.get("kind") == "unschedulable"]
        if blocked:
            text += f"; pods unschedulable: {blocked[0]}"
    return [text]


def slo_spans(
    ts: Sequence[Any], values: Sequence[Any], limit: float, gap: float = SLO_MERGE_GAP_S
) -> list[tuple[float, float, float]]:
    """(start, end, worst excess) of the spans where ``values`` exceed ``limit``; misses less
    than ``gap`` apart merge."""
    spans: list[list[float]] = []
    for t, v in zip(ts, values, strict=True):
        if v is None or t is None or v <= limit:
            continue
        t, excess = float(t), float(v) - limit
        if spans and t - spans[-1][1] <= gap:
            spans[-1][1] = t + 1
            spans[-1][2] = max(spans[-1][2], excess)
        else:
            spans.append([t, t + 1, excess])
    return [(a, b, c) for a, b, c in spans]


def _slo_causes(columns: Mapping[str, Sequence[Any]], summary: dict[str, Any]) -> list[str]:
    slo = summary.get("slo") or {}
    causes = []
    for name, check in (slo.get("checks") or {}).items():
        column = f"latency_{name}"
        if column not in columns or check.get("met"):
            continue
        limit = float(check["limit"])
        for start, end, excess in slo_spans(columns["t"], columns[column], limit):
            causes.append(
                f"SLO {name} <= {limit:g} s missed from {minutes(start)} to {minutes(end)} "
                f"by up to {excess:.2g} s (per-second {name})"
            )
    return causes


def _hpa_limited(events: Sequence[dict[str, Any]], duration: float) -> list[str]:
    spans: list[tuple[float, float, int, int]] = []
    start: float | None = None
    held, wanted = 0, 0
    for e in events:
        if e.get("kind") != "hpa":
            continue
        limited = (e.get("conditions") or {}).get("ScalingLimited") == "TooManyReplicas"
        asks_more = (e.get("metric_desired") or 0) > (e.get("desired_replicas") or 0)
        if limited and asks_more:
            if start is None:
                start, held, wanted = float(e["t"]), int(e["desired_replicas"]), 0
            wanted = max(wanted, int(e["metric_desired"]))
        elif start is not None:
            spans.append((start, float(e["t"]), held, wanted))
            start = None
    if start is not None:
        spans.append((start, duration, held, wanted))
    return [
        f"HPA held at maxReplicas {h} from {minutes(a)} to {minutes(b)} "
        f"while the metrics asked for up to {w}"
        for a, b, h, w in spans
    ]


def _uneven_load(pods: Mapping[str, Sequence[Any]] | None) -> list[str]:
    if not pods or not pods.get("t"):
        return []
    by_t: dict[Any, list[tuple[str, int]]] = {}
    for t, name, phase, users in zip(
        pods["t"], pods["pod"], pods["phase"], pods["users"], strict=True
    ):
        if phase == "Ready":
            by_t.setdefault(t, []).append((str(name), int(users or 0)))
    shared = [(t, rows) for t, rows in by_t.items() if len(rows) >= 2]
    uneven = [
        (t, rows)
        for t, rows in shared
        if min(u for _, u in rows) == 0 and max(u for _, u in rows) >= 2
    ]
    if not shared or len(uneven) < UNEVEN_SHARE * len(shared):
        return []
    t, rows = max(uneven, key=lambda x: max(u for _, u in x[1]) - min(u for _, u in x[1]))
    busiest = max(rows, key=lambda r: r[1])
    idle = sum(1 for _, u in rows if u == 0)
    return [
        f"load uneven in {100 * len(uneven) / len(shared):.0f}% of samples with 2+ Ready pods: "
        f"at {minutes(float(t))} {busiest[0]} had {busiest[1]} users while {idle} other Ready "
        "pod(s) had none (each Locust user keeps its keep-alive connection to the pod it first "
        "reached)"
    ]


def causes(
    columns: Mapping[str, Sequence[Any]],
    events: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    pods: Mapping[str, Sequence[Any]] | None = None,
) -> list[str]:
    """What went wrong in a run, most telling first; empty when nothing did."""
    duration = float(summary.get("duration_s") or (len(columns.get("t", [])) or 0))
    return [
        *_failure_causes(summary, events),
        *_slo_causes(columns, summary),
        *_pending_causes(events, duration),
        *_hpa_limited(events, duration),
        *_uneven_load(pods),
    ]
