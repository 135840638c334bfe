"""The sweep's (and tune's) report.html, in the run report's style (:mod:`sim.page`): one
offline page of interactive Plotly figures.

- Pareto plot: cost against the SLO metric, each point hoverable, the front, the baseline and
  the recommended point labelled;
- heat map for two axes, its cell text sized to the cells so it never overlaps (hidden, with
  the values on hover, when the cells are too small for a legible font);
- for tune, the optimisation history and a slice plot per parameter (as Optuna's
  ``plot_optimization_history`` / ``plot_slice``, drawn from the study's own results);
- the recommended (or top) point's timelines beside the baseline's;
- the ranked table with the ``scalelab run`` command that re-runs each point.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sim.page import figure_div, grid, page, table
from sim.sweep.plan import label, short_names
from sim.sweep.results import PointResult
from sim.sweep.slo import SLOSpec
from sim.trace import Trace

#: Assumption: the widest glyphs of Plotly's default font (Open Sans, else Arial) in the cell
#: text ("$0.1234", "misses SLO") advance at most 0.62 em, and a line takes 1.3 em; the
#: headless-browser test measures the drawn text against the cells.
GLYPH_EM = 0.62
LINE_EM = 1.3
#: Cell text below this size is not legible: hidden, the values stay on hover.
MIN_FONT = 8
MAX_FONT = 13
#: Heat map frame (px): fixed margins, so the plot area and hence each cell is known here.
MAP_MARGIN = {"l": 150, "r": 150, "t": 60, "b": 110}


def metric_of(slo: SLOSpec | None) -> tuple[str, str]:
    """(column, axis label) of the SLO metric plotted against cost."""
    if slo is None:
        return "latency_p95", "p95 latency (s), mean over seeds"
    primary = slo.primary
    unit = " (s)" if primary.column.startswith("latency") else ""
    return primary.column, f"{primary.metric}{unit}, mean over seeds"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _hover(r: PointResult, column: str) -> str:
    met = "-" if r.seeds_met is None else f"{r.seeds_met}/{len(r.rows)}"
    return (
        f"#{r.rank} {html.escape(label(r.point.values))}<br>cost {_fmt(r.mean('cost_usd'))} USD"
        f"<br>{column} {_fmt(r.mean(column))}<br>SLO met in {met} seeds"
    )


def _xy(results: Sequence[PointResult], column: str) -> list[PointResult]:
    return [r for r in results if r.mean("cost_usd") is not None and r.mean(column) is not None]


def pareto_labels(
    front: Sequence[PointResult],
    baseline: PointResult | None,
    chosen: PointResult | None,
    column: str,
) -> list[tuple[float, float, str]]:
    """(cost, metric, text) of each labelled place: front points by rank (#3), the
    recommendation starred, the baseline by name; points at the same place share one label."""
    places: dict[tuple[float, float], list[str]] = {}
    marked = [(r, f"#{r.rank}") for r in front]
    if chosen is not None:
        marked = [(r, f"★ #{r.rank}" if r is chosen else text) for r, text in marked]
        if chosen not in front:
            marked.append((chosen, f"★ #{chosen.rank}"))
    if baseline is not None:
        marked.append((baseline, "baseline"))
    for r, text in marked:
        x, y = r.mean("cost_usd"), r.mean(column)
        if x is not None and y is not None:
            places.setdefault((float(f"{x:.9g}"), float(f"{y:.9g}")), []).append(text)
    return [(x, y, ", ".join(texts)) for (x, y), texts in sorted(places.items())]


def pareto_figure(
    ranked: Sequence[PointResult],
    slo: SLOSpec | None,
    baseline: PointResult | None,
    chosen: PointResult | None,
) -> go.Figure:
    """Cost against the SLO metric; the front, the baseline and the recommendation labelled
    (front points by rank, as in the table; every point's values on hover)."""
    column, ylabel = metric_of(slo)
    fig = go.Figure()
    for name, color, symbol, members in (
        ("meets the SLO in every seed", "#2ca02c", "circle", [r for r in ranked if r.feasible]),
        ("misses it in some seed", "#999999", "x", [r for r in ranked if not r.feasible]),
    ):
        shown = _xy(members, column)
        if shown:
            fig.add_trace(
                go.Scatter(
                    x=[r.mean("cost_usd") for r in shown],
                    y=[r.mean(column) for r in shown],
                    mode="markers",
                    name=name,
                    marker={"color": color, "symbol": symbol, "size": 8, "opacity": 0.75},
                    hovertext=[_hover(r, column) for r in shown],
                    hoverinfo="text",
                )
            )
    front = sorted(
        _xy([r for r in ranked if r.pareto], column),
        key=lambda r: (r.mean("cost_usd") or 0, r.point.index),
    )
    if front:
        fig.add_trace(
            go.Scatter(
                x=[r.mean("cost_usd") for r in front],
                y=[r.mean(column) for r in front],
                mode="lines+markers",
                name="Pareto front",
                line={"color": "#1f77b4", "width": 1.2},
                marker={"size": 12, "color": "rgba(0,0,0,0)", "line": {"color": "#1f77b4"}},
                hovertext=[_hover(r, column) for r in front],
                hoverinfo="text",
            )
        )
    for result, name, symbol, color, size in (
        (baseline, "baseline", "square", "black", 10),
        (chosen, "recommended", "star", "#ff7f0e", 18),
    ):
        if result is None or not _xy([result], column):
            continue
        fig.add_trace(
            go.Scatter(
                x=[result.mean("cost_usd")],
                y=[result.mean(column)],
                mode="markers",
                name=name,
                marker={"symbol": symbol, "size": size, "color": color, "line": {"width": 1}},
                hovertext=[_hover(result, column)],
                hoverinfo="text",
            )
        )
    labels = pareto_labels(front, baseline, chosen, column)
    if labels:
        fig.add_trace(
            go.Scatter(
                x=[x for x, _, _ in labels],
                y=[y for _, y, _ in labels],
                text=[t for _, _, t in labels],
                mode="text",
                textposition=["top right" if k % 2 else "bottom left" for k in range(len(labels))],
                textfont={"size": 11},
                showlegend=False,
                hoverinfo="skip",
            )
        )
    if slo is not None:
        fig.add_hline(
            y=slo.primary.limit,
            line={"color": "#d62728", "dash": "dash", "width": 1},
            annotation_text=f"SLO {slo.primary.text()}",
            annotation_position="top left",
        )
    fig.update_layout(
        xaxis_title="cost (USD per run), mean over seeds",
        yaxis_title=ylabel,
        height=560,
        margin={"l": 70, "r": 30, "t": 30},
        legend={"orientation": "h", "y": -0.15},
    )
    return fig


def front_list(ranked: Sequence[PointResult], chosen: PointResult | None) -> str:
    """The Pareto plot's labels spelled out: #rank and the point's values, cheapest first."""
    front = sorted(
        (r for r in ranked if r.pareto or r is chosen),
        key=lambda r: (r.mean("cost_usd") or 0, r.point.index),
    )
    items = "".join(
        f"<li>{'★ ' if r is chosen else ''}#{r.rank}: {html.escape(label(r.point.values))}"
        f"{' (recommended)' if r is chosen else ''}</li>"
        for r in front
    )
    return f'<ul class="labels">{items}</ul>' if items else ""


def _integer_ticks(values: Sequence[Any]) -> dict[str, Any]:
    """Axis settings for a parameter of whole numbers: a tick per integer over a short span
    (plotly would put ticks at 2.5), else its own (whole) ticks."""
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return {}
    return {"dtick": 1} if max(values) - min(values) <= 12 else {"tickformat": "d"}


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def is_grid(ranked: Sequence[PointResult], paths: Sequence[str]) -> bool:
    xs = {r.point.value(paths[0]) for r in ranked}
    ys = {r.point.value(paths[1]) for r in ranked}
    return len(ranked) == len(xs) * len(ys)


@dataclass(frozen=True)
class CellText:
    """How a heat map writes its cells: the figure's size (px) and the font size, or None
    when no legible font fits (the text is then left to the hover)."""

    width: int
    height: int
    font: int | None


def cell_text(n_cols: int, n_rows: int, texts: Sequence[str]) -> CellText:
    """Size the heat map so its cell text fits at a legible font where it can (up to a frame
    of 1400 x 1000 px), and the font so the widest text fits its cell: no text overlaps."""
    lines = [t.split("<br>") for t in texts] or [[""]]
    chars = max(1, max(len(line) for parts in lines for line in parts))
    rows_of_text = max(len(parts) for parts in lines)
    want_w = chars * GLYPH_EM * MAX_FONT / 0.9
    want_h = rows_of_text * LINE_EM * MAX_FONT / 0.9
    side_x = MAP_MARGIN["l"] + MAP_MARGIN["r"]
    side_y = MAP_MARGIN["t"] + MAP_MARGIN["b"]
    width = int(min(1400, max(760, side_x + n_cols * want_w)))
    height = int(min(1000, max(420, side_y + n_rows * want_h)))
    cell_w = (width - side_x) / n_cols
    cell_h = (height - side_y) / n_rows
    size = math.floor(
        min(MAX_FONT, 0.9 * cell_w / (chars * GLYPH_EM), 0.9 * cell_h / (rows_of_text * LINE_EM))
    )
    return CellText(width, height, size if size >= MIN_FONT else None)


def heatmap_figure(
    ranked: Sequence[PointResult], paths: Sequence[str], slo: SLOSpec | None
) -> go.Figure:
    """Two axes: a heat map of the SLO metric with the mean cost in each cell (grids), or for
    scattered (tuned) points a scatter coloured by the metric."""
    column, title = metric_of(slo)
    names = short_names(list(paths))
    if not is_grid(ranked, paths):
        known = [r for r in ranked if r.mean(column) is not None]
        fig = go.Figure(
            go.Scatter(
                x=[r.point.value(paths[0]) for r in known],
                y=[r.point.value(paths[1]) for r in known],
                mode="markers",
                marker={
                    "color": [r.mean(column) for r in known],
                    "colorscale": "Viridis",
                    "reversescale": True,
                    "size": 11,
                    "colorbar": {"title": {"text": title, "side": "right"}},
                    "symbol": ["circle" if r.feasible else "x" for r in known],
                },
                hovertext=[_hover(r, column) for r in known],
                hoverinfo="text",
            )
        )
        fig.update_layout(xaxis_title=names[paths[0]], yaxis_title=names[paths[1]], height=560)
        fig.update_xaxes(_integer_ticks([r.point.value(paths[0]) for r in known]))
        fig.update_yaxes(_integer_ticks([r.point.value(paths[1]) for r in known]))
        return fig
    xs = sorted({r.point.value(paths[0]) for r in ranked}, key=_sortable)
    ys = sorted({r.point.value(paths[1]) for r in ranked}, key=_sortable)
    z: list[list[float | None]] = [[None] * len(xs) for _ in ys]
    text = [[""] * len(xs) for _ in ys]
    hover = [[""] * len(xs) for _ in ys]
    for r in ranked:
        i, j = ys.index(r.point.value(paths[1])), xs.index(r.point.value(paths[0]))
        z[i][j] = r.mean(column)
        cost = r.mean("cost_usd")
        text[i][j] = ("-" if cost is None else f"${cost:.4f}") + (
            "" if r.feasible else "<br>misses SLO"
        )
        hover[i][j] = _hover(r, column)
    sizing = cell_text(len(xs), len(ys), [t for row in text for t in row])
    heat = go.Heatmap(
        x=[str(x) for x in xs],
        y=[str(y) for y in ys],
        z=z,
        colorscale="Viridis",
        reversescale=True,
        colorbar={"title": {"text": title, "side": "right"}, "thickness": 16},
        hovertext=hover,
        hoverinfo="text",
        xgap=1,
        ygap=1,
    )
    if sizing.font is not None:
        heat.update(text=text, texttemplate="%{text}", textfont={"size": sizing.font})
    fig = go.Figure(heat)
    note = "cell text: mean cost" if sizing.font else "hover a cell for its cost"
    fig.update_layout(
        title={"text": f"{title} ({note})", "font": {"size": 13}},
        xaxis={"title": names[paths[0]], "type": "category", "automargin": False},
        yaxis={"title": names[paths[1]], "type": "category", "automargin": False},
        width=sizing.width,
        height=sizing.height,
        autosize=False,
        margin=MAP_MARGIN,
    )
    return fig


def _best_so_far(trials: Sequence[PointResult]) -> list[float | None]:
    best: float | None = None
    out: list[float | None] = []
    for r in trials:
        cost = r.mean("cost_usd")
        if r.feasible and cost is not None and (best is None or cost < best):
            best = cost
        out.append(best)
    return out


def history_figure(trials: Sequence[PointResult]) -> go.Figure:
    """Tune's optimisation history: each trial's mean cost in the order evaluated, feasible or
    not, and the best feasible cost so far (Optuna's plot_optimization_history)."""
    fig = go.Figure()
    numbers = list(range(1, len(trials) + 1))
    for name, color, symbol, keep in (
        ("meets the SLO", "#2ca02c", "circle", True),
        ("misses it", "#999999", "x", False),
    ):
        picked = [(n, r) for n, r in zip(numbers, trials, strict=True) if r.feasible == keep]
        if picked:
            fig.add_trace(
                go.Scatter(
                    x=[n for n, _ in picked],
                    y=[r.mean("cost_usd") for _, r in picked],
                    mode="markers",
                    name=name,
                    marker={"color": color, "symbol": symbol, "size": 8},
                    hovertext=[
                        f"trial {n}: {html.escape(label(r.point.values))}" for n, r in picked
                    ],
                    hoverinfo="text+y",
                )
            )
    fig.add_trace(
        go.Scatter(
            x=numbers,
            y=_best_so_far(trials),
            mode="lines",
            line_shape="hv",
            name="best feasible so far",
            line={"color": "#d62728"},
        )
    )
    fig.update_layout(
        xaxis_title="trial",
        yaxis_title="cost (USD per run), mean over seeds",
        xaxis={"tickformat": "d"},
        height=420,
        margin={"l": 70, "r": 30, "t": 30},
    )
    return fig


def slice_figure(trials: Sequence[PointResult], paths: Sequence[str]) -> go.Figure:
    """One panel per parameter: each trial's cost against that parameter's value, coloured by
    trial number, feasible as dots and infeasible as crosses (Optuna's plot_slice)."""
    names = short_names(list(paths))
    cols = min(3, len(paths))
    rows = math.ceil(len(paths) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        shared_yaxes=True,
        subplot_titles=[names[p] for p in paths],
        horizontal_spacing=0.06,
        vertical_spacing=0.18,
    )
    numbers = list(range(1, len(trials) + 1))
    known = [(n, r) for n, r in zip(numbers, trials, strict=True) if r.mean("cost_usd") is not None]
    for k, path in enumerate(paths):
        fig.add_trace(
            go.Scatter(
                x=[r.point.value(path) for _, r in known],
                y=[r.mean("cost_usd") for _, r in known],
                mode="markers",
                name=names[path],
                showlegend=False,
                marker={
                    "color": [n for n, _ in known],
                    "colorscale": "Viridis",
                    "cmin": 1,
                    "cmax": max(1, len(trials)),
                    "size": 8,
                    "line": {"width": 0.5, "color": "#333"},
                    "symbol": ["circle" if r.feasible else "x" for _, r in known],
                    "showscale": k == 0,
                    "colorbar": {"title": {"text": "trial"}, "thickness": 14},
                },
                hovertext=[f"trial {n}: {html.escape(label(r.point.values))}" for n, r in known],
                hoverinfo="text+y",
            ),
            row=k // cols + 1,
            col=k % cols + 1,
        )
        fig.update_xaxes(
            _integer_ticks([r.point.value(path) for _, r in known]),
            row=k // cols + 1,
            col=k % cols + 1,
        )
    fig.update_yaxes(title_text="cost (USD)", col=1)
    fig.update_layout(height=330 * rows, margin={"l": 70, "r": 30, "t": 40})
    return fig


def _series(trace: Trace, name: str) -> tuple[list[float], list[float]]:
    ts, vs = [], []
    for t, v in zip(trace.column("t"), trace.column(name), strict=True):
        if t is not None and v is not None:
            ts.append(float(t) / 60)
            vs.append(float(v))
    return ts, vs


def timelines_figure(
    baseline: Trace, other: Trace, other_title: str, slo: SLOSpec | None
) -> go.Figure:
    """Replicas and nodes, p95, and throughput of the baseline beside another point."""
    fig = make_subplots(
        rows=3,
        cols=2,
        shared_xaxes=True,
        shared_yaxes=True,
        column_titles=["baseline", other_title],
        vertical_spacing=0.06,
        horizontal_spacing=0.04,
    )
    lines = (
        (1, "replicas_desired", "replicas desired", "#17becf", "hv"),
        (1, "replicas_ready", "replicas ready", "#2ca02c", "hv"),
        (1, "nodes_ready", "nodes ready", "#8c564b", "hv"),
        (2, "latency_p95", "p95 per second", "#ff7f0e", "linear"),
        (3, "offered_rps", "offered req/s", "#7f7f7f", "linear"),
        (3, "completed_rps", "completed req/s", "#1f77b4", "linear"),
    )
    for col, trace in ((1, baseline), (2, other)):
        for row, column, name, color, shape in lines:
            xs, ys = _series(trace, column)
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    line={"color": color, "width": 1.2, "shape": shape},
                ),
                row=row,
                col=col,
            )
        if slo is not None and slo.p95_limit is not None:
            fig.add_hline(
                y=slo.p95_limit,
                row=2,
                col=col,
                line={"color": "#d62728", "dash": "dash", "width": 1},
                annotation_text=f"SLO p95 {slo.p95_limit:g} s",
                annotation_position="top left",
            )
    fig.update_yaxes(
        title_text="replicas / nodes", tickformat="d", rangemode="tozero", row=1, col=1
    )
    fig.update_yaxes(title_text="p95 (s)", row=2, col=1)
    fig.update_yaxes(title_text="req/s", row=3, col=1)
    fig.update_xaxes(title_text="time (min)", row=3)
    fig.update_layout(height=820, hovermode="x unified", margin={"l": 70, "r": 30, "t": 50})
    return fig


def table_html(
    ranked: Sequence[PointResult], slo: SLOSpec | None, commands: Mapping[int, str]
) -> str:
    """The ranked points, each with the command that re-runs it."""
    column, _ = metric_of(slo)
    head = [
        "rank",
        "point",
        "SLO seeds",
        "Pareto",
        f"{column} mean ± 95% CI",
        "cost USD ± CI",
        "node-hours",
        "error rate",
        "min. in violation",
        "re-run (first seed)",
    ]
    rows, classes = [], []
    for r in ranked:
        mean, ci, _ = r.stats[column]
        cost, cost_ci, _ = r.stats["cost_usd"]
        command = commands.get(r.point.index)
        rows.append(
            [
                str(r.rank),
                html.escape(label(r.point.values)),
                "-" if r.seeds_met is None else f"{r.seeds_met}/{len(r.rows)}",
                "●" if r.pareto else "",
                f"{_fmt(mean)} ± {_fmt(ci)}",
                f"{_fmt(cost)} ± {_fmt(cost_ci)}",
                _fmt(r.mean("node_hours")),
                _fmt(r.mean("error_rate")),
                _fmt(r.mean("minutes_in_violation")),
                f"<code>{html.escape(command)}</code>" if command else "-",
            ]
        )
        classes.append("" if r.feasible else "muted")
    numeric = [True, False, True, False, True, True, True, True, True, False]
    return grid(head, rows, numeric=numeric, row_class=classes, raw=[True] * len(head))


def write_report(
    path: Path,
    title: str,
    facts: Sequence[tuple[str, str]],
    figures: Sequence[tuple[str, go.Figure, str]],
    ranked: Sequence[PointResult],
    slo: SLOSpec | None,
    commands: Mapping[int, str],
) -> None:
    """``facts``: (name, text) rows at the top; ``figures``: (heading, figure, HTML under
    it) in order; ``commands``: point index -> the ``scalelab run`` command that re-runs it."""
    parts = [table(facts, "settings")]
    for k, (heading, fig, under) in enumerate(figures):
        parts.append(f"<h2>{html.escape(heading)}</h2>{figure_div(fig, f'figure-{k}')}{under}")
    parts.append(
        "<h2>Points, ranked (feasible first, then cheapest)</h2>"
        '<p class="note">Means over seeds ± the half-width of their 95% t interval. Each '
        "command re-runs the point with the first seed, from the directory the sweep ran in; "
        "--seed N for the others.</p>" + table_html(ranked, slo, commands)
    )
    path.write_text(page(title, "\n".join(parts)))
