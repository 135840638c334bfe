"""The counterfactual against the recording, second by second and in figures.

Both sides are counted the same way: replicas from the pods' lives (a pod counts from its
creation until it is deleted, as Running from its first Running round), nodes and cost from
:mod:`sim.backtest.pool` when a scenario gives the pools, CPU from the counters. ``pod_hours``
counts Running pods; ``cpu_utilization_mean`` is the CPU they burnt over what they requested.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sim.backtest.counterfactual import DEMAND_MODEL, Outcome
from sim.backtest.pool import NodeModel, Nodes, nodes_and_cost
from sim.backtest.recording import Recording
from sim.backtest.replay import Sync
from sim.trace import COLUMNS, Cell, Trace


@dataclass(frozen=True)
class Life:
    """A pod's created, Running, Ready and gone times, and its cpu request in millicores."""

    created: float
    running: float | None
    ready: float | None
    gone: float | None
    cpu_request: int


@dataclass
class Timeline:
    """Per second from the window's start (the state at each whole second)."""

    current: list[int]
    running: list[int]
    ready: list[int]
    nodes: Nodes | None
    pod_hours: float
    requested_core_seconds: float


def _steps(times: Iterable[float | None], seconds: int) -> list[int]:
    """How many of ``times`` are at or before each whole second."""
    diff = [0] * (seconds + 1)
    for t in times:
        if t is not None and t < seconds:
            diff[max(0, math.ceil(t - 1e-9))] += 1
    out, total = [], 0
    for s in range(seconds):
        total += diff[s]
        out.append(total)
    return out


def timeline(lives: Sequence[Life], seconds: int, pool: NodeModel | None) -> Timeline:
    def count(start: Iterable[float | None], stop: Iterable[float | None]) -> list[int]:
        up, down = _steps(start, seconds), _steps(stop, seconds)
        return [a - b for a, b in zip(up, down, strict=True)]

    current = count((p.created for p in lives), (p.gone for p in lives))
    run = [p for p in lives if p.running is not None]
    running = count((p.running for p in run), (p.gone for p in run))
    rdy = [p for p in lives if p.ready is not None]
    ready = count((p.ready for p in rdy), (p.gone for p in rdy))
    hours = 0.0
    requested = 0.0
    for p in run:
        assert p.running is not None
        begin = max(p.running, 0.0)
        stop = seconds if p.gone is None else min(p.gone, seconds)
        if stop > begin:
            hours += stop - begin
            requested += (stop - begin) * p.cpu_request / 1000
    nodes = nodes_and_cost(pool, current) if pool is not None else None
    return Timeline(current, running, ready, nodes, round(hours / 3600, 6), requested)


def recorded_lives(recording: Recording) -> list[Life]:
    return [
        Life(p.created, p.running, p.ready, p.gone, p.cpu_request) for p in recording.lives.values()
    ]


def proposed_lives(outcome: Outcome) -> list[Life]:
    return [Life(p.created, p.running, p.ready, p.gone, p.cpu_request) for p in outcome.pods]


def figures(
    line: Timeline, cpu_seconds: float, desired: Sequence[int | None], seconds: int
) -> dict[str, Any]:
    util = cpu_seconds / line.requested_core_seconds if line.requested_core_seconds else None
    known = [d for d in desired if d is not None]
    return {
        "max_replicas": max(line.current, default=0),
        "max_replicas_desired": max(known, default=None),
        "mean_replicas": round(sum(line.current) / seconds, 4) if seconds else None,
        "mean_replicas_ready": round(sum(line.ready) / seconds, 4) if seconds else None,
        "pod_hours": line.pod_hours,
        "cpu_core_seconds": round(cpu_seconds, 3),
        "cpu_utilization_mean": None if util is None else round(util, 4),
        "max_nodes": max(line.nodes.count, default=0) if line.nodes else None,
        "node_hours": line.nodes.node_hours if line.nodes else None,
        "cost_usd": line.nodes.total_cost if line.nodes else None,
    }


def held(values: Sequence[tuple[float, Cell]], seconds: int) -> list[Cell]:
    """(t, value) pairs held from each t until the next, per whole second."""
    out: list[Cell] = [None] * seconds
    k = -1
    for s in range(seconds):
        while k + 1 < len(values) and values[k + 1][0] <= s:
            k += 1
        if k >= 0:
            out[s] = values[k][1]
    return out


def fill(columns: dict[str, list[Cell]], line: Timeline) -> None:
    """Replicas, nodes and cost columns of a trace from a timeline."""
    columns["replicas_current"] = list(line.current)
    columns["replicas_ready"] = list(line.ready)
    columns["replicas_pending"] = [a - b for a, b in zip(line.current, line.running, strict=True)]
    if line.nodes is not None:
        columns["nodes_ready"] = list(line.nodes.count)
        columns["cost_usd"] = list(line.nodes.cost)


def proposal_trace(outcome: Outcome, line: Timeline, cpu_target: int | None, seconds: int) -> Trace:
    """The counterfactual in the trace schema: load and latency are not known here."""
    columns: dict[str, list[Cell]] = {c: [None] * seconds for c in COLUMNS}
    columns["t"] = list(range(seconds))
    columns["cpu_target"] = [cpu_target] * seconds
    columns["replicas_desired"] = held([(s.t, s.desired) for s in outcome.steps], seconds)
    columns["cpu_utilization"] = held([(s.t, s.utilization) for s in outcome.steps], seconds)
    fill(columns, line)
    events = [
        {
            "t": s.t,
            "kind": "hpa",
            "current_replicas": s.current,
            "desired_replicas": s.desired,
            "cpu_utilization": s.utilization,
        }
        for s in outcome.steps
    ]
    return Trace(columns=columns, events=events)


def compare(
    recording: Recording,
    syncs: Sequence[Sync],
    outcome: Outcome,
    recorded: Timeline,
    proposed: Timeline,
    *,
    spec: dict[str, Any],
    spec_from: str,
) -> dict[str, Any]:
    """counterfactual.json: the proposal's figures against the recorded ones."""
    seconds = len(recorded.current)
    same = [s for s, step in zip(syncs, outcome.steps, strict=True) if s.recorded is not None]
    agree = sum(
        1
        for s, step in zip(syncs, outcome.steps, strict=True)
        if s.recorded is not None and s.recorded == step.desired
    )
    recorded_desired = [s.recorded for s in syncs]
    return {
        "model": "cpu-demand",
        "demand_model": DEMAND_MODEL,
        "spec_from": spec_from,
        "spec": spec,
        "window_s": seconds,
        "recorded": figures(recorded, outcome.recorded_cpu_seconds, recorded_desired, seconds),
        "proposed": {
            **figures(proposed, outcome.cpu_seconds, [s.desired for s in outcome.steps], seconds),
            "unserved_cpu_core_seconds": round(outcome.unserved_cpu_seconds, 3),
        },
        "syncs_deciding_as_recorded": agree,
        "syncs_with_recorded_decision": len(same),
        "seconds_with_recorded_replicas": sum(
            1 for a, b in zip(recorded.current, proposed.current, strict=True) if a == b
        ),
        "notes": outcome.notes,
    }
