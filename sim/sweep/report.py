"""The sweep's report.html: Pareto plot, a heat map for two-axis sweeps, the timelines of the
recommended point beside the baseline's, and the ranked table; one file, inline PNGs."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from sim.sweep.plan import label, short_names
from sim.sweep.results import PointResult
from sim.sweep.slo import SLOSpec
from sim.trace import Trace


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def metric_of(slo: SLOSpec | None) -> tuple[str, str]:
    """(column, axis label) of the SLO metric plotted against cost."""
    if slo is None:
        return "latency_p95", "p95 latency (s), mean over seeds"
    primary = slo.primary
    unit = " (s)" if primary.column.startswith("latency") else ""
    return primary.column, f"{primary.metric}{unit}, mean over seeds"


def _pairs(results: Sequence[PointResult], column: str) -> tuple[list[float], list[float]]:
    """(mean cost, mean ``column``) of the results that have both."""
    xs, ys = [], []
    for r in results:
        x, y = r.mean("cost_usd"), r.mean(column)
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
    return xs, ys


def pareto_png(
    ranked: Sequence[PointResult],
    slo: SLOSpec | None,
    baseline: PointResult | None,
    chosen: PointResult | None,
) -> str:
    column, ylabel = metric_of(slo)
    fig, ax = plt.subplots(figsize=(9, 6))
    groups = [
        ("meets the SLO in every seed", "tab:green", [r for r in ranked if r.feasible]),
        ("misses it in some seed", "tab:gray", [r for r in ranked if not r.feasible]),
    ]
    for name, color, members in groups:
        xs, ys = _pairs(members, column)
        if xs:
            ax.scatter(xs, ys, s=22, color=color, alpha=0.7, label=name)
    front = sorted(
        (r for r in ranked if r.pareto), key=lambda r: (r.mean("cost_usd") or 0, r.point.index)
    )
    if front:
        xs, ys = _pairs(front, column)
        ax.plot(xs, ys, color="tab:blue", marker="o", mfc="none", lw=1.2, label="Pareto front")
    if baseline is not None:
        xs, ys = _pairs([baseline], column)
        ax.scatter(xs, ys, marker="s", s=70, color="black", label="baseline")
    if chosen is not None:
        xs, ys = _pairs([chosen], column)
        ax.scatter(
            xs,
            ys,
            marker="*",
            s=260,
            color="tab:orange",
            edgecolor="black",
            zorder=5,
            label="recommended",
        )
    if slo is not None:
        ax.axhline(slo.primary.limit, color="tab:red", ls="--", lw=1, label="SLO limit")
    ax.set_xlabel("cost (USD per run), mean over seeds")
    ax.set_ylabel(ylabel)
    ax.set_title("cost against the SLO metric")
    ax.legend(loc="best", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _is_grid(ranked: Sequence[PointResult], paths: Sequence[str]) -> bool:
    xs = {r.point.value(paths[0]) for r in ranked}
    ys = {r.point.value(paths[1]) for r in ranked}
    return len(ranked) == len(xs) * len(ys)


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def map_png(ranked: Sequence[PointResult], paths: Sequence[str], slo: SLOSpec | None) -> str:
    """Two axes: a heat map of the SLO metric (cost written in each cell; x = infeasible), or
    for scattered (tuned) points a scatter coloured by it."""
    column, title = metric_of(slo)
    names = short_names(list(paths))
    fig, ax = plt.subplots(figsize=(9, 6))
    if _is_grid(ranked, paths):
        xs = sorted({r.point.value(paths[0]) for r in ranked}, key=_sortable)
        ys = sorted({r.point.value(paths[1]) for r in ranked}, key=_sortable)
        grid = [[math.nan] * len(xs) for _ in ys]
        for r in ranked:
            i, j = ys.index(r.point.value(paths[1])), xs.index(r.point.value(paths[0]))
            value = r.mean(column)
            grid[i][j] = math.nan if value is None else value
            cost = r.mean("cost_usd")
            text = ("" if cost is None else f"${cost:.4f}") + ("" if r.feasible else "\nmisses SLO")
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
        shown: Any = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis_r")
        ax.set_xticks(range(len(xs)), [str(x) for x in xs], rotation=45, fontsize=8)
        ax.set_yticks(range(len(ys)), [str(y) for y in ys], fontsize=8)
    else:
        known = [r for r in ranked if r.mean(column) is not None]
        shown = ax.scatter(
            [r.point.value(paths[0]) for r in known],
            [r.point.value(paths[1]) for r in known],
            c=[float(r.mean(column) or 0) for r in known],
            cmap="viridis_r",
        )
    fig.colorbar(shown, ax=ax, label=title)
    ax.set_xlabel(names[paths[0]])
    ax.set_ylabel(names[paths[1]])
    ax.set_title(f"{title} over the two axes (cell text: mean cost)")
    fig.tight_layout()
    return _png(fig)


def _xy(trace: Trace, name: str) -> tuple[list[float], list[float]]:
    ts, vs = [], []
    for t, v in zip(trace.column("t"), trace.column(name), strict=True):
        if t is not None and v is not None:
            ts.append(float(t) / 60)
            vs.append(float(v))
    return ts, vs


def timelines_png(baseline: Trace, other: Trace, other_title: str, slo: SLOSpec | None) -> str:
    fig, axes = plt.subplots(3, 2, figsize=(13, 10), sharex=True, sharey="row")
    for col, (trace, title) in enumerate(((baseline, "baseline"), (other, other_title))):
        ax = axes[0][col]
        ax.step(*_xy(trace, "replicas_desired"), where="post", label="desired")
        ax.step(*_xy(trace, "replicas_ready"), where="post", label="ready")
        ax.step(*_xy(trace, "nodes_ready"), where="post", label="nodes ready", ls="--")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("replicas / nodes")
        ax.legend(loc="upper left", fontsize=8)
        ax = axes[1][col]
        ax.plot(*_xy(trace, "latency_p95"), lw=0.8, label="p95 per second")
        if slo is not None and slo.p95_limit is not None:
            ax.axhline(slo.p95_limit, color="tab:red", ls="--", lw=1, label="SLO p95")
        ax.set_ylabel("latency (s)")
        ax.legend(loc="upper left", fontsize=8)
        ax = axes[2][col]
        ax.plot(*_xy(trace, "offered_rps"), lw=0.8, label="offered req/s")
        ax.plot(*_xy(trace, "completed_rps"), lw=0.8, label="completed req/s")
        ax.set_ylabel("req/s")
        ax.set_xlabel("minutes")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table_html(ranked: Sequence[PointResult], slo: SLOSpec | None) -> str:
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
    ]
    rows = []
    for r in ranked:
        mean, ci, _ = r.stats[column]
        cost, cost_ci, _ = r.stats["cost_usd"]
        met = "-" if r.seeds_met is None else f"{r.seeds_met}/{len(r.rows)}"
        cells = [
            str(r.rank),
            label(r.point.values),
            met,
            "●" if r.pareto else "",
            f"{_fmt(mean)} ± {_fmt(ci)}",
            f"{_fmt(cost)} ± {_fmt(cost_ci)}",
            _fmt(r.mean("node_hours")),
            _fmt(r.mean("error_rate")),
            _fmt(r.mean("minutes_in_violation")),
        ]
        style = "" if r.feasible else ' style="color:#888"'
        rows.append(f"<tr{style}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def write_report(
    path: Path,
    title: str,
    facts: Sequence[tuple[str, str]],
    images: Sequence[tuple[str, str]],
    ranked: Sequence[PointResult],
    slo: SLOSpec | None,
) -> None:
    """``facts``: (name, text) lines at the top; ``images``: (heading, base64 PNG)."""
    fact_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts
    )
    figures = "".join(
        f'<h2>{html.escape(h)}</h2><img alt="{html.escape(h)}" src="data:image/png;base64,{png}">'
        for h, png in images
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:13px}}</style></head>
<body><h1>{html.escape(title)}</h1><table>{fact_rows}</table>
{figures}
<h2>Points, ranked (feasible first, then cheapest)</h2>{table_html(ranked, slo)}
</body></html>
"""
    path.write_text(page)
