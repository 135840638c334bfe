"""Fidelity of one run against another: ``scalelab compare A B``.

Works on any two run directories in the Trace schema: a simulation and a GKE run of the same
scenario and seed (the main use), or two simulations with different settings. A is the
reference; differences are B - A.

- Scale events: the ``scale`` events of each target (deployment, node pools), split into ups
  and downs and paired by nearest time (:func:`pair_by_nearest_time`: the closest unpaired A
  and B first, so pairing is never thrown off by an extra event on one side); each pair gives
  both times and the difference; events left over (or farther apart than ``max_gap_s``, when
  given) are listed unmatched.
- Timelines: replicas (desired, ready) and nodes (ready) as step functions (a value holds
  until the next row), compared by the time-weighted mean absolute difference over the span
  both traces cover.
- Load steps: spans where A's Locust user count holds, each with the spawn ramp before it
  (open loop, or no users column: fixed windows of ``window_s``). Per step: mean completed
  req/s of each and the relative error; p50/p95/p99 of the step's OK requests, from the
  run's per-second latency histograms (``latency_histogram.csv``) merged over the step, and
  their relative errors. A run without that file falls back to the completion-weighted mean
  of its per-second percentiles, which is only an approximation (percentiles do not average;
  at a few requests a second p95 and p99 are both the second's slowest), and says so.
- Overall: the summaries' headline figures (requests, p50/p95/p99, cost, ...) side by side.
- Cost: the summaries' ``cost_usd`` (or the last ``cost_usd`` row) and the difference.
- Warnings: the two runs are different scenarios (``scenario_sha256`` in summary.json), or
  a run lacks what an exact measure needs.
"""

from __future__ import annotations

import bisect
import heapq
import html
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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


#: How a run's per-step percentiles were found.
FROM_HISTOGRAM = "merged latency histograms"
FROM_PER_SECOND = "completion-weighted mean of per-second percentiles (approximate)"


@dataclass
class Comparison:
    a: str
    b: str
    span: tuple[float, float]
    overall: list[dict[str, Any]] = field(default_factory=list)
    scale_events: list[ScaleMatch] = field(default_factory=list)
    timelines: dict[str, float | None] = field(default_factory=dict)
    steps: list[StepError] = field(default_factory=list)
    cost: dict[str, float | None] = field(default_factory=dict)
    latency_source: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scale_events"] = [{**asdict(m), "delta": m.delta} for m in self.scale_events]
        return data

    def render(self) -> str:
        """A plain-text report for the terminal."""
        lines = [f"compare A={self.a} B={self.b} over t in [{self.span[0]:g}, {self.span[1]:g}) s"]
        lines += _table(
            ["overall", "A", "B", "B - A", "relative"],
            [
                [r["figure"], r["a_text"], r["b_text"], r["diff_text"], _pct(r["relative"])]
                for r in self.overall
            ],
        )
        lines.append("scale events, paired by nearest time (B - A):")
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
        sources = {self.latency_source.get("a"), self.latency_source.get("b")}
        how = (
            sources.pop()
            if len(sources) == 1
            else "; ".join(f"{k.upper()}: {v}" for k, v in self.latency_source.items())
        )
        lines.append(f"load steps (relative error of B vs A; percentiles from {how}):")
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


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned first column, right-aligned numbers, two spaces apart."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(r)
        ).rstrip()
        for r in [header, *rows]
    ]


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


def pair_by_nearest_time(
    a: Sequence[float], b: Sequence[float], max_gap_s: float | None = None
) -> list[tuple[int | None, int | None]]:
    """Pairs of indices into ``a`` and ``b`` (None: unpaired), closest unpaired pair first.

    The closest remaining (A, B) pair is always adjacent in the merged time order (a point
    between them would be closer to one of them), so a heap of adjacent A-B neighbours finds
    each next pair in O(log n). The result is stable: no A and B are closer to each other than
    each is to its partner. Pairs farther apart than ``max_gap_s`` are not made. Ties go to the
    earlier times. Every index appears exactly once; pairs are in time order.
    """
    points = sorted([(t, 0, i) for i, t in enumerate(a)] + [(t, 1, j) for j, t in enumerate(b)])
    n = len(points)
    prev = list(range(-1, n - 1))
    nxt = list(range(1, n + 1))
    alive = [True] * n
    heap: list[tuple[float, float, float, int, int]] = []

    def push(left: int, right: int) -> None:
        if left >= 0 and right < n and points[left][1] != points[right][1]:
            gap = points[right][0] - points[left][0]
            heapq.heappush(heap, (gap, points[left][0], points[right][0], left, right))

    for k in range(n - 1):
        push(k, k + 1)
    pairs: dict[int, int] = {}  # index into a -> index into b
    while heap:
        gap, _, _, left, right = heapq.heappop(heap)
        if not (alive[left] and alive[right] and nxt[left] == right):
            continue
        if max_gap_s is not None and gap > max_gap_s:
            break
        x, y = (left, right) if points[left][1] == 0 else (right, left)
        pairs[points[x][2]] = points[y][2]
        alive[left] = alive[right] = False
        before, after = prev[left], nxt[right]
        if before >= 0:
            nxt[before] = after
        if after < n:
            prev[after] = before
        push(before, after)
    paired_b = set(pairs.values())
    out: list[tuple[int | None, int | None]] = [(i, pairs.get(i)) for i in range(len(a))]
    out += [(None, j) for j in range(len(b)) if j not in paired_b]

    def when(pair: tuple[int | None, int | None]) -> tuple[float, float]:
        times = [a[pair[0]]] if pair[0] is not None else []
        times += [b[pair[1]]] if pair[1] is not None else []
        return (min(times), max(times))

    return sorted(out, key=when)


def scale_matches(a: Trace, b: Trace, max_gap_s: float | None = None) -> list[ScaleMatch]:
    """Scale events per target and direction, paired by nearest time (see the module doc)."""

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
    for key in sorted(set(ga) | set(gb), key=lambda k: (k[0], k[1] != "up")):
        ea, eb = ga.get(key, []), gb.get(key, [])
        pairs = pair_by_nearest_time(
            [float(e["t"]) for e in ea], [float(e["t"]) for e in eb], max_gap_s
        )
        for index, (i, j) in enumerate(pairs):
            x = ea[i] if i is not None else None
            y = eb[j] if j is not None else None
            matches.append(
                ScaleMatch(
                    target=key[0],
                    direction=key[1],
                    index=index,
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


#: The quantile of each percentile column.
QUANTILES = {"latency_p50": 0.50, "latency_p95": 0.95, "latency_p99": 0.99}


class LatencyHistogram:
    """A run's per-second latency histograms (``latency_histogram.csv``), merged over spans."""

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        self.t = np.asarray(columns["t"], dtype=float)
        self.latency = np.asarray(columns["latency_s"], dtype=float)
        self.count = np.asarray(columns["count"], dtype=np.int64)
        if len(self.t) and np.any(np.diff(self.t) < 0):
            raise ValueError("latency_histogram.csv: rows are not in time order")

    def percentiles(self, start: float, end: float) -> dict[str, float | None]:
        """p50/p95/p99 of every OK request that completed in [start, end): the value at rank
        ceil(q * n) of the merged histogram, as the summary's own percentiles
        (:meth:`sim.recorder.RequestRecorder.percentile`)."""
        lo, hi = np.searchsorted(self.t, [start, end], side="left")
        values, counts = self.latency[lo:hi], self.count[lo:hi]
        total = int(counts.sum())
        if total == 0:
            return dict.fromkeys(QUANTILES)
        order = np.argsort(values, kind="stable")
        cumulative = np.cumsum(counts[order])
        out: dict[str, float | None] = {}
        for name, q in QUANTILES.items():
            rank = max(1, math.ceil(q * total))
            out[name] = float(values[order][int(np.searchsorted(cumulative, rank))])
        return out


def _histogram(trace: Trace) -> LatencyHistogram | None:
    return None if trace.latency_histogram is None else LatencyHistogram(trace.latency_histogram)


def _window(
    trace: Trace, start: float, end: float, histogram: LatencyHistogram | None = None
) -> tuple[float | None, dict[str, float | None]]:
    rows = [i for i, t in enumerate(trace.column("t")) if t is not None and start <= t < end]
    rate = trace.column("completed_rps")
    rates = [float(v) for v in (rate[i] for i in rows) if v is not None]
    rps = round(sum(rates) / len(rates), 6) if rates else None
    if histogram is not None:
        return rps, {
            k: None if v is None else round(v, 6)
            for k, v in histogram.percentiles(start, end).items()
        }
    # No histogram: the completion-weighted mean of the per-second percentiles (approximate).
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


def scenario_warnings(a: Trace, b: Trace, labels: tuple[str, str] = ("A", "B")) -> list[str]:
    """What makes the comparison less than like for like: different scenarios (by the
    ``scenario_sha256`` each run recorded) or a run without that record."""
    ha, hb = a.summary.get("scenario_sha256"), b.summary.get("scenario_sha256")
    names = (a.summary.get("scenario"), b.summary.get("scenario"))
    if ha and hb and ha != hb:
        which = f" ({names[0]!s} vs {names[1]!s})" if names[0] != names[1] else ""
        return [
            f"{labels[0]} and {labels[1]} ran different scenarios{which}: scenario_sha256 "
            f"{str(ha)[:12]}... vs {str(hb)[:12]}...; differences include the settings, "
            "not only the backend"
        ]
    missing = [label for label, h in zip(labels, (ha, hb), strict=True) if not h]
    if missing:
        return [
            f"{' and '.join(missing)} recorded no scenario_sha256 in summary.json: "
            "cannot tell whether both ran the same scenario"
        ]
    return []


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
    max_gap_s: float | None = None,
) -> Comparison:
    """Compare B against A (see the module docstring for each measure)."""
    end = float(min(len(a), len(b)))
    result = Comparison(a=a_label, b=b_label, span=(0.0, end))
    result.overall = overall_figures(a, b)
    result.warnings = scenario_warnings(a, b, (a_label, b_label))
    hist_a, hist_b = _histogram(a), _histogram(b)
    for side, label, hist in (("a", a_label, hist_a), ("b", b_label, hist_b)):
        result.latency_source[side] = FROM_PER_SECOND if hist is None else FROM_HISTOGRAM
        if hist is None:
            result.warnings.append(
                f"{label} has no latency_histogram.csv: its per-step percentiles are the "
                "completion-weighted mean of per-second percentiles, an approximation"
            )
    result.scale_events = scale_matches(a, b, max_gap_s)
    for name in TIMELINES:
        result.timelines[name] = step_mad(_series(a, name), _series(b, name), 0.0, end)
    for start, stop, users in load_steps(a, end, window_s, min_step_s):
        a_rps, a_lat = _window(a, start, stop, hist_a)
        b_rps, b_lat = _window(b, start, stop, hist_b)
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


def overall_figures(a: Trace, b: Trace) -> list[dict[str, Any]]:
    """The summaries' headline figures both runs have: figure, a, b, diff (B - A), relative,
    and each as text with its unit."""
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
            {
                "key": key,
                "figure": name,
                "a": num_a,
                "b": num_b,
                "diff": diff,
                "relative": _rel(num_a, num_b),
                "a_text": _fmt(num_a) + suffix,
                "b_text": _fmt(num_b) + suffix,
                "diff_text": ("-" if diff is None else f"{diff:+.3g}") + suffix,
            }
        )
    return rows


def overall_rows(a: Trace, b: Trace) -> list[tuple[str, str, str, str, str]]:
    """(figure, A, B, B - A, relative) as text, for the report's overall table."""
    return [
        (r["figure"], r["a_text"], r["b_text"], r["diff_text"], _pct(r["relative"]))
        for r in overall_figures(a, b)
    ]


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
    warned = "".join(f"<p><b>warning:</b> {html.escape(w)}</p>" for w in result.warnings)
    body = f"""<p>A = <b>{html.escape(la)}</b> ({html.escape(result.a)}), blue; B = <b>{
        html.escape(lb)
    }</b> ({html.escape(result.b)}), orange. Differences are B - A, over t in [{result.span[0]:g}, {
        result.span[1]:g}) s.</p>
{warned}<h2>Overall</h2>{overall}
<h2>Timelines</h2>{figure_div(overlay_figure(a, b, (la, lb)), "overlay")}
<h2>Scale events, paired by nearest time</h2>{events if result.scale_events else "<p>none</p>"}
<h2>Timelines, time-weighted mean difference</h2>{timelines}
<h2>Load steps</h2>{steps}"""
    (out / "report.html").write_text(page(f"{la} vs {lb}", body))


def compare_dirs(
    a_dir: Path,
    b_dir: Path,
    out: Path | None = None,
    window_s: float = 60.0,
    max_gap_s: float | None = None,
) -> Comparison:
    """Read two run directories, compare, and write the report when ``out`` is given."""
    a, b = Trace.read(a_dir), Trace.read(b_dir)
    result = compare(
        a, b, a_label=str(a_dir), b_label=str(b_dir), window_s=window_s, max_gap_s=max_gap_s
    )
    if out is not None:
        write_comparison(result, a, b, out)
    return result
