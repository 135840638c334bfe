"""Fidelity of one run against another: ``scalelab compare A B``.

Works on any two run directories in the Trace schema: a simulation and a GKE run of the same
scenario and seed (the main use), or two simulations with different settings. A is the
reference; differences are B - A.

- Scale events: the ``scale`` events of each target (deployment, node pools), split into ups
  and downs and matched in order (A's first scale-up with B's first, ...); each match gives
  both times and the difference; extra events on either side are listed unmatched.
- Timelines: replicas (desired, ready) and nodes (ready) as step functions (a value holds
  until the next row), compared by the time-weighted mean absolute difference over the span
  both traces cover.
- Load steps: spans where A's Locust user count holds, each with the spawn ramp before it
  (open loop, or no users column: fixed windows of ``window_s``). Per step: mean completed
  req/s of each and the relative error; p50/p95/p99 as the completion-weighted mean of the
  per-second percentiles (an approximation: per-second percentiles do not combine exactly)
  and their relative errors.
- Cost: the summaries' ``cost_usd`` (or the last ``cost_usd`` row) and the difference.
"""

from __future__ import annotations

import bisect
import html
import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sim.trace import Trace

TIMELINES = ("replicas_desired", "replicas_ready", "nodes_ready")
PERCENTILES = ("latency_p50", "latency_p95", "latency_p99")


@dataclass(frozen=True)
class ScaleMatch:
    target: str
    direction: str
    index: int
    a_t: float | None
    b_t: float | None
    a_change: str | None
    b_change: str | None

    @property
    def delta(self) -> float | None:
        if self.a_t is None or self.b_t is None:
            return None
        return round(self.b_t - self.a_t, 3)


@dataclass(frozen=True)
class StepError:
    start: float
    end: float
    users: float | None
    a_rps: float | None
    b_rps: float | None
    rps_error: float | None
    latency: dict[str, dict[str, float | None]]


@dataclass
class Comparison:
    a: str
    b: str
    span: tuple[float, float]
    scale_events: list[ScaleMatch] = field(default_factory=list)
    timelines: dict[str, float | None] = field(default_factory=dict)
    steps: list[StepError] = field(default_factory=list)
    cost: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scale_events"] = [{**asdict(m), "delta": m.delta} for m in self.scale_events]
        return data

    def render(self) -> str:
        """A plain-text report for the terminal."""
        lines = [f"compare A={self.a} B={self.b} over t in [{self.span[0]:g}, {self.span[1]:g}) s"]
        lines.append("scale events (B - A):")
        for m in self.scale_events:
            lines.append(
                f"  {m.target} {m.direction} #{m.index + 1}: "
                f"A {_fmt(m.a_t)} s ({m.a_change or '-'}), "
                f"B {_fmt(m.b_t)} s ({m.b_change or '-'}), diff {_fmt(m.delta)} s"
            )
        if not self.scale_events:
            lines.append("  none in either trace")
        lines.append("timelines, time-weighted mean |B - A|:")
        lines += [f"  {name}: {_fmt(value)}" for name, value in self.timelines.items()]
        lines.append("load steps (relative error of B vs A):")
        for s in self.steps:
            lat = ", ".join(
                f"{k.removeprefix('latency_')} {_pct(v['error'])}" for k, v in s.latency.items()
            )
            lines.append(
                f"  [{s.start:g}, {s.end:g}) users {_fmt(s.users)}: req/s A {_fmt(s.a_rps)} "
                f"B {_fmt(s.b_rps)} ({_pct(s.rps_error)}); {lat}"
            )
        c = self.cost
        lines.append(
            f"cost: A ${_fmt(c.get('a'))}, B ${_fmt(c.get('b'))}, diff ${_fmt(c.get('diff'))} "
            f"({_pct(c.get('error'))})"
        )
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"


def _rel(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a == 0:
        return None
    return round((b - a) / a, 6)


# --- pieces ---------------------------------------------------------------------------------


def _series(trace: Trace, name: str) -> list[tuple[float, float | None]]:
    if name not in trace.columns:
        return []
    return [
        (float(t), None if v is None else float(v))
        for t, v in zip(trace.column("t"), trace.column(name), strict=True)
        if t is not None
    ]


def step_mad(
    a: list[tuple[float, float | None]],
    b: list[tuple[float, float | None]],
    start: float,
    end: float,
) -> float | None:
    """Time-weighted mean |b - a| over [start, end) of two step functions (each value holds
    until the next point); spans where either is unknown are left out of the weight."""
    cuts = sorted({start, end, *(t for t, _ in a), *(t for t, _ in b)})
    cuts = [t for t in cuts if start <= t <= end]
    times_a, times_b = [t for t, _ in a], [t for t, _ in b]

    def value_at(
        series: list[tuple[float, float | None]], times: list[float], t: float
    ) -> float | None:
        at = bisect.bisect_right(times, t) - 1
        return series[at][1] if at >= 0 else None

    total = weight = 0.0
    for left, right in itertools.pairwise(cuts):
        va, vb = value_at(a, times_a, left), value_at(b, times_b, left)
        if va is None or vb is None:
            continue
        total += abs(vb - va) * (right - left)
        weight += right - left
    return round(total / weight, 6) if weight > 0 else None


def scale_matches(a: Trace, b: Trace) -> list[ScaleMatch]:
    def groups(trace: Trace) -> dict[tuple[str, str], list[dict[str, Any]]]:
        out: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for event in trace.events_of("scale"):
            old, new = event.get("old"), event.get("new")
            if old is None or new is None or old == new:
                continue
            direction = "up" if new > old else "down"
            out.setdefault((str(event.get("target", "")), direction), []).append(event)
        return out

    ga, gb = groups(a), groups(b)
    matches = []
    for key in sorted(set(ga) | set(gb)):
        ea, eb = ga.get(key, []), gb.get(key, [])
        for i in range(max(len(ea), len(eb))):
            x = ea[i] if i < len(ea) else None
            y = eb[i] if i < len(eb) else None
            matches.append(
                ScaleMatch(
                    target=key[0],
                    direction=key[1],
                    index=i,
                    a_t=float(x["t"]) if x else None,
                    b_t=float(y["t"]) if y else None,
                    a_change=f"{x['old']}->{x['new']}" if x else None,
                    b_change=f"{y['old']}->{y['new']}" if y else None,
                )
            )
    return matches


def load_steps(
    trace: Trace, end: float, window_s: float = 60.0, min_step_s: float = 10.0
) -> list[tuple[float, float, float | None]]:
    """(start, end, users) spans where the user count holds, else fixed windows.

    Locust spawns users at ``spawn_rate`` per second, so a step begins with a short ramp;
    spans shorter than ``min_step_s`` join the span after them (the step they ramp into).
    """
    users = [(t, v) for t, v in _series(trace, "users") if t < end]
    known = [v for _, v in users if v is not None]
    if not known or (len(set(known)) == 1 and known[0] == 0):
        count = max(1, math.ceil(end / window_s))
        return [(i * window_s, min(end, (i + 1) * window_s), None) for i in range(count)]
    raw: list[tuple[float, float, float | None]] = []
    start, current = users[0][0], users[0][1]
    for t, v in users[1:]:
        if v != current:
            raw.append((start, t, current))
            start, current = t, v
    raw.append((start, end, current))
    steps: list[tuple[float, float, float | None]] = []
    pending: float | None = None
    for begin, stop, value in raw:
        if stop - begin < min_step_s and (begin, stop, value) != raw[-1]:
            pending = begin if pending is None else pending
            continue
        steps.append((begin if pending is None else pending, stop, value))
        pending = None
    return steps


def _window(trace: Trace, start: float, end: float) -> tuple[float | None, dict[str, float | None]]:
    rows = [i for i, t in enumerate(trace.column("t")) if t is not None and start <= t < end]
    rate = trace.column("completed_rps")
    rates = [float(v) for v in (rate[i] for i in rows) if v is not None]
    rps = round(sum(rates) / len(rates), 6) if rates else None
    latency: dict[str, float | None] = {}
    for name in PERCENTILES:
        column = trace.column(name)
        total = weight = 0.0
        for i in rows:
            value, done = column[i], rate[i]
            if value is not None and done:
                total += float(value) * float(done)
                weight += float(done)
        latency[name] = round(total / weight, 6) if weight else None
    return rps, latency


def _final_cost(trace: Trace) -> float | None:
    if isinstance(trace.summary.get("cost_usd"), int | float):
        return float(trace.summary["cost_usd"])
    costs = [float(v) for v in trace.column("cost_usd") if v is not None]
    return costs[-1] if costs else None


def compare(
    a: Trace,
    b: Trace,
    *,
    a_label: str = "A",
    b_label: str = "B",
    window_s: float = 60.0,
    min_step_s: float = 10.0,
) -> Comparison:
    """Compare B against A (see the module docstring for each measure)."""
    end = float(min(len(a), len(b)))
    result = Comparison(a=a_label, b=b_label, span=(0.0, end))
    result.scale_events = scale_matches(a, b)
    for name in TIMELINES:
        result.timelines[name] = step_mad(_series(a, name), _series(b, name), 0.0, end)
    for start, stop, users in load_steps(a, end, window_s, min_step_s):
        a_rps, a_lat = _window(a, start, stop)
        b_rps, b_lat = _window(b, start, stop)
        result.steps.append(
            StepError(
                start=start,
                end=stop,
                users=users,
                a_rps=a_rps,
                b_rps=b_rps,
                rps_error=_rel(a_rps, b_rps),
                latency={
                    name: {
                        "a": a_lat[name],
                        "b": b_lat[name],
                        "error": _rel(a_lat[name], b_lat[name]),
                    }
                    for name in PERCENTILES
                },
            )
        )
    cost_a, cost_b = _final_cost(a), _final_cost(b)
    result.cost = {
        "a": cost_a,
        "b": cost_b,
        "diff": None if cost_a is None or cost_b is None else round(cost_b - cost_a, 6),
        "error": _rel(cost_a, cost_b),
    }
    return result


# --- report.html ----------------------------------------------------------------------------


def short_labels(a: str, b: str) -> tuple[str, str]:
    """Legend names: the shortest trailing path parts that tell A and B apart
    ("out/lab" and "out/lab-gke" -> "lab", "lab-gke"); "A" and "B" when nothing does."""
    pa, pb = Path(a).parts or (a,), Path(b).parts or (b,)
    for n in range(1, max(len(pa), len(pb)) + 1):
        x, y = "/".join(pa[-n:]), "/".join(pb[-n:])
        if x != y:
            return x, y
    return "A", "B"


#: The summary figures the overall table compares: (key, label, unit).
OVERALL = (
    ("requests_ok", "requests ok", ""),
    ("requests_failed", "requests failed", ""),
    ("latency_p50", "latency p50", "s"),
    ("latency_p95", "latency p95", "s"),
    ("latency_p99", "latency p99", "s"),
    ("peak_completed_rps", "peak completed", "req/s"),
    ("max_replicas_desired", "max replicas desired", ""),
    ("max_replicas_ready", "max replicas ready", ""),
    ("max_nodes_ready", "max nodes ready", ""),
    ("first_scale_up_t", "first scale-up at", "s"),
    ("node_hours", "node-hours", "h"),
    ("cost_usd", "cost", "USD"),
)


def overall_rows(a: Trace, b: Trace) -> list[tuple[str, str, str, str, str]]:
    """(figure, A, B, B - A, relative) for the summaries' headline figures both runs have."""
    rows = []
    for key, name, unit in OVERALL:
        va, vb = a.summary.get(key), b.summary.get(key)
        if key == "cost_usd":
            va, vb = _final_cost(a), _final_cost(b)
        if not isinstance(va, int | float) and not isinstance(vb, int | float):
            continue
        num_a = float(va) if isinstance(va, int | float) else None
        num_b = float(vb) if isinstance(vb, int | float) else None
        diff = None if num_a is None or num_b is None else num_b - num_a
        suffix = f" {unit}" if unit else ""
        rows.append(
            (
                name,
                _fmt(num_a) + suffix,
                _fmt(num_b) + suffix,
                ("-" if diff is None else f"{diff:+.3g}") + suffix,
                _pct(_rel(num_a, num_b)),
            )
        )
    return rows


def overlay_figure(a: Trace, b: Trace, labels: tuple[str, str]) -> Any:
    """Both runs on one zoomable time axis, A blue and B orange, legend by short name."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from sim.report import time_unit

    panels = [
        ("completed req/s", ["completed_rps"], "linear"),
        ("p95 latency (s)", ["latency_p95"], "linear"),
        ("replicas (ready; desired dashed)", ["replicas_ready", "replicas_desired"], "hv"),
        ("nodes ready", ["nodes_ready"], "hv"),
        ("CPU utilization (HPA view)", ["cpu_utilization"], "hv"),
        ("cumulative cost (USD)", ["cost_usd"], "linear"),
    ]
    unit, div = time_unit(float(max(len(a), len(b))))
    fig = make_subplots(
        rows=len(panels),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.035,
        subplot_titles=[p[0] for p in panels],
    )
    for row, (_, names, shape) in enumerate(panels, start=1):
        for trace, name, color in ((a, labels[0], "#1f77b4"), (b, labels[1], "#ff7f0e")):
            for i, column in enumerate(names):
                points = [(t / div, v) for t, v in _series(trace, column) if v is not None]
                fig.add_trace(
                    go.Scatter(
                        x=[t for t, _ in points],
                        y=[v for _, v in points],
                        name=name if i == 0 else f"{name} desired",
                        legendgroup=name,
                        showlegend=row == 1,
                        line={"color": color, "width": 1.2, "shape": shape}
                        | ({"dash": "dash"} if i else {}),
                    ),
                    row=row,
                    col=1,
                )
        if shape == "hv":
            fig.update_yaxes(rangemode="tozero", row=row, col=1)
    for row in (3, 4):
        fig.update_yaxes(tickformat="d", row=row, col=1)
    fig.update_xaxes(title_text=f"time ({unit})", row=len(panels), col=1)
    fig.update_layout(height=1300, hovermode="x unified", margin={"l": 60, "r": 30, "t": 40})
    return fig


def write_comparison(result: Comparison, a: Trace, b: Trace, out: Path) -> None:
    """compare.json and report.html (:mod:`sim.page`): the overall table first, then both
    runs overlaid, then the fidelity tables (scale events, timelines, load steps)."""
    from sim.page import figure_div, grid, page

    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    la, lb = short_labels(result.a, result.b)
    numeric5 = [False, True, True, True, True]
    overall = grid(["figure", la, lb, "B - A", "relative"], overall_rows(a, b), numeric=numeric5)
    events = grid(
        ["target", "direction", "#", f"{la} (s)", f"{lb} (s)", "B - A (s)"],
        [
            [
                m.target,
                m.direction,
                str(m.index + 1),
                f"{_fmt(m.a_t)} ({m.a_change or '-'})",
                f"{_fmt(m.b_t)} ({m.b_change or '-'})",
                _fmt(m.delta),
            ]
            for m in result.scale_events
        ],
        numeric=[False, False, True, True, True, True],
    )
    timelines = grid(
        ["series", "time-weighted mean |B - A|"],
        [[name, _fmt(value)] for name, value in result.timelines.items()],
        numeric=[False, True],
    )
    steps = grid(
        ["span (s)", "users", f"req/s {la}", f"req/s {lb}", "req/s error"]
        + [f"{k.removeprefix('latency_')} error" for k in PERCENTILES],
        [
            [
                f"[{s.start:g}, {s.end:g})",
                _fmt(s.users),
                _fmt(s.a_rps),
                _fmt(s.b_rps),
                _pct(s.rps_error),
                *(_pct(s.latency[k]["error"]) for k in PERCENTILES),
            ]
            for s in result.steps
        ],
        numeric=[False] + [True] * (4 + len(PERCENTILES)),
    )
    body = f"""<p>A = <b>{html.escape(la)}</b> ({html.escape(result.a)}), blue; B = <b>{
        html.escape(lb)
    }</b> ({html.escape(result.b)}), orange. Differences are B - A, over t in [{result.span[0]:g}, {
        result.span[1]:g}) s.</p>
<h2>Overall</h2>{overall}
<h2>Timelines</h2>{figure_div(overlay_figure(a, b, (la, lb)), "overlay")}
<h2>Scale events, matched in order</h2>{events if result.scale_events else "<p>none</p>"}
<h2>Timelines, time-weighted mean difference</h2>{timelines}
<h2>Load steps</h2>{steps}"""
    (out / "report.html").write_text(page(f"{la} vs {lb}", body))


def compare_dirs(
    a_dir: Path, b_dir: Path, out: Path | None = None, window_s: float = 60.0
) -> Comparison:
    """Read two run directories, compare, and write the report when ``out`` is given."""
    a, b = Trace.read(a_dir), Trace.read(b_dir)
    result = compare(a, b, a_label=str(a_dir), b_label=str(b_dir), window_s=window_s)
    if out is not None:
        write_comparison(result, a, b, out)
    return result
