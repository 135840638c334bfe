"""What a backtest writes: decisions.csv, backtest.json, and the replay as a run directory
(trace.csv, events.jsonl with one ``hpa`` event per sync, summary.json)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

from sim.backtest.recording import Recording
from sim.backtest.replay import Sync
from sim.backtest.whatif import Timeline, fill
from sim.trace import COLUMNS, Cell, Trace


def summary(recording: Recording, syncs: list[Sync], source: str) -> dict[str, Any]:
    """Match rate over the syncs that have a recorded decision, and the reasons of the rest."""
    judged = [s for s in syncs if s.recorded is not None]
    matched = sum(1 for s in judged if s.matched)
    reasons = Counter(s.mismatch.name for s in syncs if s.mismatch is not None)
    first = [
        {"t": s.t, "recorded": s.recorded, "replayed": s.replayed, "reason": s.mismatch.value}
        for s in syncs
        if s.mismatch is not None
    ][:20]
    return {
        "source": source,
        "namespace": recording.namespace,
        "hpa": recording.hpa,
        "target": recording.target,
        "start": recording.start,
        "end": recording.end,
        "syncs": len(syncs),
        "syncs_with_decision": len(judged),
        "matched": matched,
        "match_rate": round(matched / len(judged), 6) if judged else None,
        "mismatches_by_reason": dict(sorted(reasons.items())),
        "first_mismatches": first,
        "notes": recording.notes,
    }


def trace(
    recording: Recording,
    syncs: list[Sync],
    cpu_target: int | None,
    line: Timeline | None = None,
) -> Trace:
    """The replay in the trace schema, one row per second from the window's start: the
    replayed desired replicas held between syncs, the recorded current replicas and the
    utilization the replay computed; with ``line``, the recorded pods' replicas (current,
    Ready, Pending) and the nodes and cost they needed; load and latency are not known here."""
    seconds = int(recording.end - recording.start)
    columns: dict[str, list[Cell]] = {c: [None] * seconds for c in COLUMNS}
    columns["t"] = list(range(seconds))
    columns["cpu_target"] = [cpu_target] * seconds
    k = -1
    for second in range(seconds):
        while k + 1 < len(syncs) and syncs[k + 1].t <= second:
            k += 1
        if k >= 0:
            s = syncs[k]
            columns["replicas_desired"][second] = s.replayed
            columns["replicas_current"][second] = s.current
            columns["cpu_utilization"][second] = s.utilization
    if line is not None:
        fill(columns, line)
    events = [
        {
            "t": s.t,
            "kind": "hpa",
            "current_replicas": s.current,
            "desired_replicas": s.replayed,
            "recorded_desired_replicas": s.recorded,
            "cpu_utilization": s.utilization,
            "mismatch": None if s.mismatch is None else s.mismatch.value,
        }
        for s in syncs
    ]
    return Trace(columns=columns, events=events)


def write(
    out: Path,
    recording: Recording,
    syncs: list[Sync],
    info: dict[str, Any],
    cpu_target: int | None,
    line: Timeline | None = None,
) -> Trace:
    """decisions.csv, backtest.json and the replay as a run directory; returns its trace."""
    with open(out / "decisions.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(
            [
                "t",
                "current",
                "recorded",
                "replayed",
                "match",
                "utilization",
                "pods",
                "pods_with_cpu",
                "reason",
            ]
        )
        for s in syncs:
            writer.writerow(
                [
                    f"{s.t:g}",
                    "" if s.current is None else s.current,
                    "" if s.recorded is None else s.recorded,
                    "" if s.replayed is None else s.replayed,
                    int(s.matched),
                    "" if s.utilization is None else s.utilization,
                    s.pods,
                    s.pods_with_cpu,
                    "" if s.mismatch is None else s.mismatch.value,
                ]
            )
    (out / "backtest.json").write_text(json.dumps(info, indent=2) + "\n")
    replayed = trace(recording, syncs, cpu_target, line)
    replayed.summary = info
    replayed.write(out)
    return replayed
