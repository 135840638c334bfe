"""report.html of a backtest: replicas, utilization and cost over time, recorded against
replayed and proposed, and the figures side by side (Plotly, self-contained)."""

from __future__ import annotations

import html
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from sim.trace import Trace

_ROWS = (
    ("max_replicas", "max replicas"),
    ("max_replicas_desired", "max desired replicas"),
    ("mean_replicas", "mean replicas"),
    ("mean_replicas_ready", "mean Ready replicas"),
    ("pod_hours", "pod-hours (Running)"),
    ("cpu_core_seconds", "CPU core-seconds"),
    ("cpu_utilization_mean", "CPU used / requested"),
    ("max_nodes", "max nodes"),
    ("node_hours", "node-hours"),
    ("cost_usd", "cost, USD"),
    ("unserved_cpu_core_seconds", "demand with no Ready pod, core-s"),
    ("latency_p95", "latency p95, s"),
    ("failed_rps_total", "failed requests"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape(str(value))


def figure(replayed: Trace, proposed: Trace | None) -> go.Figure:
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        subplot_titles=("replicas", "HPA cpu utilization, % of request", "cost, USD"),
        vertical_spacing=0.07,
    )
    t = [float(x) / 60 for x in replayed.columns["t"] if x is not None]

    def line(trace: Trace, column: str, name: str, row: int, dash: str = "solid") -> None:
        fig.add_trace(
            go.Scatter(
                x=t,
                y=trace.columns[column],
                name=name,
                mode="lines",
                line={"shape": "hv", "dash": dash},
            ),
            row=row,
            col=1,
        )

    line(replayed, "replicas_current", "recorded replicas", 1)
    line(replayed, "replicas_ready", "recorded Ready", 1, "dot")
    line(replayed, "replicas_desired", "replayed desired", 1, "dash")
    line(replayed, "cpu_utilization", "replayed", 2)
    line(replayed, "cost_usd", "recorded", 3)
    if proposed is not None:
        line(proposed, "replicas_current", "proposed replicas", 1)
        line(proposed, "replicas_ready", "proposed Ready", 1, "dot")
        line(proposed, "cpu_utilization", "proposed", 2)
        line(proposed, "cost_usd", "proposed", 3)
    fig.update_xaxes(title_text="minutes from the window's start", row=3, col=1)
    fig.update_layout(height=820, margin={"t": 40, "l": 60, "r": 20, "b": 40})
    return fig


def render(
    title: str,
    backtest: dict[str, Any],
    comparison: dict[str, Any],
    replayed: Trace,
    proposed: Trace | None,
) -> str:
    rows = "".join(
        f"<tr><td>{label}</td><td>{_cell(comparison['recorded'].get(key))}</td>"
        f"<td>{_cell(comparison['proposed'].get(key))}</td></tr>"
        for key, label in _ROWS
        if key in comparison["recorded"] or key in comparison["proposed"]
    )
    rate = backtest.get("match_rate")
    notes = [*backtest.get("notes", []), *comparison.get("notes", [])]
    fig = figure(replayed, proposed).to_html(
        full_html=False, include_plotlyjs=False, config={"displaylogo": False}
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1em 2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ddd;padding:3px 9px;font-size:13px}}td+td{{text-align:right}}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head><body>
<h1>{html.escape(title)}</h1>
<p>Replay: {backtest.get("matched")}/{backtest.get("syncs_with_decision")} syncs decided as
recorded ({"-" if rate is None else f"{100 * rate:.2f}%"}); mismatches:
{html.escape(str(backtest.get("mismatches_by_reason") or "none"))}.</p>
<p>Counterfactual ({html.escape(comparison["model"])}, spec from
{html.escape(comparison["spec_from"])}): {html.escape(comparison.get("demand_model", ""))}.</p>
<table><tr><th></th><th>recorded</th><th>proposed</th></tr>{rows}</table>
{"".join(f"<p>{html.escape(n)}</p>" for n in notes)}
{fig}
</body></html>
"""
