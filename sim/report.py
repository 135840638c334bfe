"""report.html: one self-contained, offline page that explains a run.

Interactive Plotly figures (zoom, hover, legend toggles; plotly.js inlined once by
:mod:`sim.page`), "why it went wrong" from :mod:`sim.diagnosis`, the summary with units, the
settings that shaped the run, failures by reason, a per-pod view, and the event story as a
filterable ``kubectl get events`` table (:mod:`sim.events`). Reads only the Trace, so a real
cluster's run gets the same page.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sim.diagnosis import causes as find_causes
from sim.events import KINDS, StoryRow, clock, story
from sim.page import figure_div, page, table
from sim.trace import Trace

# Assumption: a moving average over ~1/150 of the run (at least 5 s) shows the throughput's
# trend; the raw per-second series is one legend click away.
SMOOTH_FRACTION = 1 / 150
SMOOTH_MIN_S = 5

_COLORS = {
    "offered": "#7f7f7f",
    "completed": "#1f77b4",
    "failed": "#d62728",
    "p50": "#2ca02c",
    "p95": "#ff7f0e",
    "p99": "#9467bd",
    "desired": "#17becf",
    "current": "#1f77b4",
    "ready": "#2ca02c",
    "pending": "#d62728",
}


def time_unit(duration: float) -> tuple[str, float]:
    """Seconds up to 10 minutes, minutes up to 4 hours, hours beyond: (label, divisor)."""
    if duration <= 600:
        return "s", 1.0
    if duration <= 4 * 3600:
        return "min", 60.0
    return "h", 3600.0


def moving_average(values: Sequence[float | None], window: int) -> list[float | None]:
    """Trailing mean over ``window`` samples, skipping gaps (None)."""
    out: list[float | None] = []
    total, count, queue = 0.0, 0, []
    for v in values:
        queue.append(v)
        if v is not None:
            total, count = total + float(v), count + 1
        if len(queue) > window:
            old = queue.pop(0)
            if old is not None:
                total, count = total - float(old), count - 1
        out.append(total / count if count else None)
    return out


def _series(trace: Trace, name: str, div: float) -> tuple[list[float], list[Any]]:
    ts = [float(t) / div for t in trace.column("t") if t is not None]
    return ts, list(trace.column(name))[: len(ts)]


def _fmt(value: Any, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        text = f"{value:,.{digits}g}" if abs(value) < 10 ** (digits + 3) else f"{value:,.0f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text} {unit}".strip()


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The summary as (metric, value with unit) rows, in reading order."""
    s = summary
    rows = [
        (
            "requests ok / failed / total",
            f"{_fmt(s.get('requests_ok'))} / "
            f"{_fmt(s.get('requests_failed'))} / {_fmt(s.get('requests_total'))}",
        ),
        ("latency mean", _fmt(s.get("latency_mean"), "s")),
        (
            "latency p50 / p95 / p99",
            " / ".join(_fmt(s.get(k), "s") for k in ("latency_p50", "latency_p95", "latency_p99")),
        ),
        ("peak completed", _fmt(s.get("peak_completed_rps"), "req/s")),
        (
            "max replicas desired / ready",
            f"{_fmt(s.get('max_replicas_desired'))} / {_fmt(s.get('max_replicas_ready'))}",
        ),
        ("max nodes ready", _fmt(s.get("max_nodes_ready"))),
        ("first scale-up at", _fmt(s.get("first_scale_up_t"), "s")),
        ("node-hours", _fmt(s.get("node_hours"), "h")),
        ("cost", _fmt(s.get("cost_usd"), "USD")),
        ("cost per million requests", _fmt(s.get("cost_per_million_requests"), "USD")),
        ("duration simulated", _fmt(s.get("duration_s"), "s")),
    ]
    slo = s.get("slo")
    if slo:
        for name, check in slo.get("checks", {}).items():
            unit = "" if name == "error_rate" else "s"
            verdict = "met" if check.get("met") else "MISSED"
            rows.append(
                (
                    f"SLO {name} <= {_fmt(check.get('limit'), unit)}",
                    f"{_fmt(check.get('value'), unit)} ({verdict})",
                )
            )
    if s.get("wall_seconds") is not None:
        rows.append(("wall time", _fmt(s.get("wall_seconds"), "s")))
    rows.append(("seed", _fmt(s.get("seed"))))
    return rows


def _table(rows: Sequence[tuple[str, str]], css: str = "kv") -> str:
    return table(rows, css)


def settings_rows(settings: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not settings:
        return []
    rows = []
    hpa = settings.get("hpa")
    if hpa:
        rows.append(
            (
                "HPA",
                f"min {hpa['minReplicas']}, max {hpa['maxReplicas']}, "
                f"target {', '.join(hpa.get('targets') or []) or '-'}",
            )
        )
    else:
        rows.append(("HPA", "none"))
    for pool in settings.get("pools", []):
        rows.append(
            (
                f"node pool {pool['name']}",
                f"{pool['machine_type']}, {pool['min_nodes']}..{pool['max_nodes']} nodes",
            )
        )
    rows.append(("cluster autoscaler", "on" if settings.get("cluster_autoscaler") else "off"))
    dep = settings.get("deployment") or {}
    cpu = dep.get("cpu_request_milli")
    mem = dep.get("memory_request")
    limit = dep.get("cpu_limit_milli")
    rows.append(
        (
            "container",
            f"{dep.get('image', '-')}: requests cpu "
            f"{_fmt(cpu / 1000 if cpu else None)}, memory "
            f"{_fmt(mem / 2**30 if mem else None, 'GiB')}; cpu limit "
            f"{_fmt(limit / 1000) if limit else 'none'}",
        )
    )
    load = settings.get("load") or {}
    rows.append(
        (
            "load",
            f"{load.get('kind', '-')} "
            f"({'closed loop' if load.get('closed_loop') else 'open loop'}), "
            f"start {settings.get('start', '-')}",
        )
    )
    slo = settings.get("slo")
    if slo:
        rows.append(("SLO", ", ".join(f"{k} <= {v}" for k, v in slo.items())))
    return rows


def _event_markers(trace: Trace, div: float) -> list[tuple[float, str, str]]:
    """(t, label, colour) of the scale events worth a marker."""
    marks = []
    for row in story(trace.events):
        if row.reason == "SuccessfulRescale":
            marks.append((row.t / div, f"HPA: {row.message}", "#17becf"))
        elif row.reason in ("ScaledGroup",):
            marks.append((row.t / div, row.message, "#8c564b"))
        elif row.reason == "NotTriggerScaleUp":
            marks.append((row.t / div, f"CA: {row.message}", "#d62728"))
        elif row.reason == "FailedScheduling":
            marks.append((row.t / div, f"{row.object} Unschedulable: {row.message}", "#ff7f0e"))
        elif row.reason in ("NodeReady", "RemovingNode"):
            marks.append((row.t / div, f"{row.object}: {row.reason}", "#8c564b"))
    return marks


def timeline_figure(trace: Trace, title: str) -> go.Figure:
    """The run's timelines, one shared, zoomable time axis."""
    summary, settings = trace.summary, trace.summary.get("settings") or {}
    duration = float(summary.get("duration_s") or len(trace))
    unit, div = time_unit(duration)
    closed = (settings.get("load") or {}).get("closed_loop")
    if closed is None:
        closed = any(v for v in trace.column("users") if v)
    titles = (
        "throughput (req/s)",
        "latency (s)",
        "replicas",
        "nodes",
        "CPU utilization (% of request, HPA view)",
        "cost (USD, cumulative)",
    )
    specs = [[{"secondary_y": bool(closed)}]] + [[{}]] * 5
    fig = make_subplots(
        rows=6,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.035,
        subplot_titles=titles,
        specs=specs,
    )
    ts, _ = _series(trace, "t", div)
    window = max(SMOOTH_MIN_S, round(duration * SMOOTH_FRACTION))
    for name, label in (
        ("offered_rps", "offered"),
        ("completed_rps", "completed"),
        ("failed_rps", "failed"),
    ):
        _, raw = _series(trace, name, div)
        color = _COLORS[label]
        fig.add_trace(
            go.Scatter(
                x=ts,
                y=moving_average(raw, window),
                name=f"{label} ({window} s avg)",
                line={"color": color, "width": 1.6},
                legendgroup="rps",
            ),
            1,
            1,
        )
        fig.add_trace(
            go.Scatter(
                x=ts,
                y=raw,
                name=f"{label} per second",
                visible="legendonly",
                line={"color": color, "width": 0.6},
                opacity=0.5,
                legendgroup="rps",
            ),
            1,
            1,
        )
    if closed:
        _, users = _series(trace, "users", div)
        fig.add_trace(
            go.Scatter(
                x=ts,
                y=users,
                name="Locust users",
                line_shape="hv",
                line={"color": "#555", "dash": "dot"},
            ),
            1,
            1,
            secondary_y=True,
        )
        fig.update_yaxes(
            title_text="users", secondary_y=True, row=1, col=1, rangemode="tozero", tickformat="d"
        )
    for q, dash in (("p50", "solid"), ("p95", "dash"), ("p99", "dot")):
        _, vs = _series(trace, f"latency_{q}", div)
        fig.add_trace(
            go.Scatter(
                x=ts,
                y=vs,
                name=q,
                mode="lines",
                line={"color": _COLORS[q], "dash": dash, "width": 1.2},
            ),
            2,
            1,
        )
    slo = settings.get("slo") or {}
    for q in ("p50", "p95", "p99"):
        if slo.get(q) is not None:
            fig.add_hline(
                y=float(slo[q]),
                row=2,
                col=1,
                line={"color": _COLORS[q], "width": 1},
                annotation_text=f"SLO {q} {slo[q]:g} s",
                annotation_position="top left",
            )
    for name, dash in (
        ("desired", "dash"),
        ("current", "solid"),
        ("ready", "solid"),
        ("pending", "dot"),
    ):
        _, vs = _series(trace, f"replicas_{name}", div)
        fig.add_trace(
            go.Scatter(
                x=ts,
                y=vs,
                name=f"replicas {name}",
                line_shape="hv",
                line={
                    "color": _COLORS[name],
                    "dash": dash,
                    "width": 2.5 if name == "desired" else 1.5,
                },
            ),
            3,
            1,
        )
    hpa = settings.get("hpa")
    if hpa:
        for label, value in (
            ("minReplicas", hpa["minReplicas"]),
            ("maxReplicas", hpa["maxReplicas"]),
        ):
            fig.add_hline(
                y=value,
                row=3,
                col=1,
                line={"color": "#999", "dash": "longdash", "width": 1},
                annotation_text=f"{label} {value}",
                annotation_position="top left",
            )
    for name, color in (("nodes_ready", "#2ca02c"), ("nodes_provisioning", "#ff7f0e")):
        _, vs = _series(trace, name, div)
        fig.add_trace(
            go.Scatter(
                x=ts, y=vs, name=name.replace("_", " "), line_shape="hv", line={"color": color}
            ),
            4,
            1,
        )
    pools = settings.get("pools") or []
    if pools:
        top = sum(p["max_nodes"] for p in pools)
        fig.add_hline(
            y=top,
            row=4,
            col=1,
            line={"color": "#999", "dash": "longdash", "width": 1},
            annotation_text=f"node pool max {top}",
            annotation_position="top left",
        )
    _, cpu = _series(trace, "cpu_utilization", div)
    fig.add_trace(
        go.Scatter(x=ts, y=cpu, name="CPU utilization", line_shape="hv", line={"color": "#1f77b4"}),
        5,
        1,
    )
    targets = [v for v in trace.column("cpu_target") if v is not None]
    if targets:
        fig.add_hline(
            y=float(targets[0]),
            row=5,
            col=1,
            line={"color": "#d62728", "dash": "dash"},
            annotation_text=f"HPA target {targets[0]}%",
            annotation_position="top left",
        )
    _, cost = _series(trace, "cost_usd", div)
    fig.add_trace(go.Scatter(x=ts, y=cost, name="cost", line={"color": "#2ca02c"}), 6, 1)
    marks = _event_markers(trace, div)
    if marks:
        tops = [v for v in trace.column("replicas_desired") if v is not None]
        level = (max(tops) if tops else 1) + 0.5
        fig.add_trace(
            go.Scatter(
                x=[m[0] for m in marks],
                y=[level] * len(marks),
                mode="markers",
                name="scale events",
                marker={"symbol": "triangle-down", "size": 10, "color": [m[2] for m in marks]},
                hovertext=[m[1] for m in marks],
                hoverinfo="text+x",
            ),
            3,
            1,
        )
        for x, label, _color in marks:
            if label.startswith("HPA"):
                fig.add_annotation(
                    x=x,
                    y=level,
                    row=3,
                    col=1,
                    text=label.split(";")[0][5:],
                    showarrow=False,
                    yshift=12,
                    font={"size": 10},
                )
    for row in (3, 4):
        fig.update_yaxes(tickformat="d", rangemode="tozero", row=row, col=1)
    fig.update_yaxes(type="log", row=2, col=1)
    fig.update_xaxes(title_text=f"time ({unit})", row=6, col=1)
    fig.update_layout(
        title=title,
        height=1500,
        hovermode="x unified",
        legend={"groupclick": "toggleitem"},
        margin={"l": 60, "r": 30, "t": 60},
    )
    return fig


def pods_figure(pods: dict[str, list[Any]], duration: float) -> go.Figure | None:
    """In flight, completed req/s, CPU and connected users (closed loop only) per pod."""
    if not pods or not pods.get("t"):
        return None
    unit, div = time_unit(duration)
    names = sorted(set(pods["pod"]))
    metrics = [
        ("in_flight", "requests in flight"),
        ("completed_rps", "completed req/s"),
        ("cpu_cores", "CPU (cores)"),
    ]
    if any(pods.get("users") or []):
        metrics.append(("users", "connected Locust users"))
    fig = make_subplots(
        rows=len(metrics),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.05,
        subplot_titles=[m[1] for m in metrics],
    )
    palette = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    ]
    index: dict[str, list[int]] = {n: [] for n in names}
    for i, name in enumerate(pods["pod"]):
        index[name].append(i)
    for k, name in enumerate(names):
        rows = index[name]
        short = name.rsplit("-", 1)[-1]
        for r, (column, _) in enumerate(metrics, start=1):
            fig.add_trace(
                go.Scatter(
                    x=[float(pods["t"][i]) / div for i in rows],
                    y=[pods[column][i] for i in rows],
                    name=f"pod {short}",
                    legendgroup=name,
                    showlegend=r == 1,
                    line={"color": palette[k % len(palette)], "width": 1.2},
                    hovertext=[f"{name} on {pods['node'][i]} ({pods['phase'][i]})" for i in rows],
                ),
                r,
                1,
            )
    for r, (column, _) in enumerate(metrics, start=1):
        if column in ("in_flight", "users"):
            fig.update_yaxes(tickformat="d", rangemode="tozero", row=r, col=1)
    fig.update_xaxes(title_text=f"time ({unit})", row=len(metrics), col=1)
    fig.update_layout(
        height=230 * len(metrics), hovermode="x unified", margin={"l": 60, "r": 30, "t": 40}
    )
    return fig


def events_table(rows: Sequence[StoryRow], duration: float) -> str:
    """``kubectl get events`` as a table a kind menu and a text box filter."""
    kinds = sorted({r.kind for r in rows} | set(KINDS))
    options = "".join(f'<option value="{k}">{k}</option>' for k in kinds)
    body = "".join(
        f'<tr data-kind="{html.escape(r.kind)}" class="{r.type.lower()}">'
        f'<td title="{r.t:g} s">{clock(r.t, duration)}</td><td>{r.type}</td>'
        f"<td>{html.escape(r.reason)}</td><td>{html.escape(r.object)}</td>"
        f"<td>{html.escape(r.message)}</td></tr>"
        for r in rows
    )
    return (
        f'<div class="filters">kind <select id="ev-kind"><option value="">all</option>'
        f'{options}</select> <input id="ev-text" placeholder="filter text" size="40"> '
        '<span id="ev-count"></span></div><table id="events" class="events"><thead><tr>'
        "<th>time</th><th>type</th><th>reason</th><th>object</th><th>message</th></tr>"
        f"</thead><tbody>{body}</tbody></table>{_FILTER_JS}"
    )


_FILTER_JS = """<script>(function(){
var kind=document.getElementById('ev-kind'),text=document.getElementById('ev-text');
var rows=document.querySelectorAll('#events tbody tr'),count=document.getElementById('ev-count');
function apply(){var k=kind.value,q=text.value.toLowerCase(),n=0;
rows.forEach(function(r){var t=r.textContent.toLowerCase();
var ok=(!k||r.dataset.kind===k)&&(!q||t.indexOf(q)>=0);
r.style.display=ok?'':'none';if(ok)n++;});count.textContent=n+' of '+rows.length+' events';}
kind.onchange=apply;text.oninput=apply;apply();})();</script>"""


def render(trace: Trace, title: str) -> str:
    """The page's HTML."""
    summary = trace.summary
    duration = float(summary.get("duration_s") or len(trace))
    found = summary.get("causes")
    if found is None:
        found = find_causes(trace.columns, trace.events, summary, trace.pods)
    causes_html = (
        '<ul class="causes">' + "".join(f"<li>{html.escape(c)}</li>" for c in found) + "</ul>"
        if found
        else "<p>Nothing went wrong that the events show.</p>"
    )
    failures = summary.get("failures_by_reason") or {}
    failures_html = (
        _table([(k, _fmt(v)) for k, v in failures.items()]) if failures else "<p>none</p>"
    )
    timelines = figure_div(timeline_figure(trace, title), "timelines")
    pods = pods_figure(trace.pods or {}, duration)
    pods_html = (
        figure_div(pods, "pods") if pods is not None else "<p>No per-pod series in this run.</p>"
    )
    data = json.dumps({"title": title, "figures": 1 + (pods is not None)})
    body = f"""<h2>Why it went wrong</h2>{causes_html}
<h2>Summary</h2>{_table(summary_rows(summary))}
<h2>Settings</h2>{_table(settings_rows(summary.get("settings")), "settings")}
<h2>Failed requests by reason</h2>{failures_html}
<h2>Timelines</h2>{timelines}
<h2>Per pod</h2>{pods_html}
<h2>Events</h2>{events_table(story(trace.events), duration)}"""
    return page(title, body, f"data-report='{html.escape(data)}'")


def write_report(trace: Trace, path: Path, title: str) -> None:
    """Write report.html for ``trace``."""
    path.write_text(render(trace, title))
