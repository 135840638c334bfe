"""report.html: one self-contained page (inline PNG plots) for a run."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sim.trace import Trace


def _xy(trace: Trace, name: str) -> tuple[list[float], list[float]]:
    """(minutes, values) of a trace column, leaving out empty seconds."""
    ts, vs = [], []
    for t, v in zip(trace.column("t"), trace.column(name), strict=True):
        if v is not None and t is not None:
            ts.append(float(t) / 60)
            vs.append(float(v))
    return ts, vs


def figure_png(trace: Trace, title: str) -> bytes:
    fig, axes = plt.subplots(6, 1, figsize=(11, 17), sharex=True)
    ax = axes[0]
    ax.plot(*_xy(trace, "offered_rps"), label="offered req/s", lw=0.8)
    ax.plot(*_xy(trace, "completed_rps"), label="completed req/s", lw=0.8)
    ax.plot(*_xy(trace, "failed_rps"), label="failed req/s", lw=0.8, color="tab:red")
    users = ax.twinx()
    users.plot(*_xy(trace, "users"), label="Locust users", color="gray", ls="--", lw=1)
    users.set_ylabel("users")
    ax.set_ylabel("req/s")
    ax.legend(loc="upper left")
    ax.set_title(title)

    ax = axes[1]
    for name in ("latency_p50", "latency_p95", "latency_p99"):
        ax.plot(*_xy(trace, name), label=name.replace("latency_", ""), lw=0.8)
    ax.set_ylabel("latency (s)")
    ax.set_yscale("log")
    ax.legend(loc="upper left")

    ax = axes[2]
    for name in ("replicas_desired", "replicas_current", "replicas_ready", "replicas_pending"):
        ax.step(*_xy(trace, name), where="post", label=name.replace("replicas_", ""))
    for event in trace.events_of("scale"):
        ax.axvline(event["t"] / 60, color="k", alpha=0.25, lw=0.8)
    ax.set_ylabel("replicas")
    ax.legend(loc="upper left")

    ax = axes[3]
    ax.step(*_xy(trace, "nodes_ready"), where="post", label="ready")
    ax.step(*_xy(trace, "nodes_provisioning"), where="post", label="provisioning")
    ax.set_ylabel("nodes")
    ax.legend(loc="upper left")

    ax = axes[4]
    ax.step(*_xy(trace, "cpu_utilization"), where="post", label="cpu utilization (HPA view)")
    ax.plot(*_xy(trace, "cpu_target"), label="target", color="tab:red", ls="--")
    ax.set_ylabel("% of requests")
    ax.legend(loc="upper left")

    ax = axes[5]
    ax.plot(*_xy(trace, "cost_usd"), label="cumulative cost", color="tab:green")
    ax.set_ylabel("USD")
    ax.set_xlabel("minutes")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def _table(summary: dict[str, Any]) -> str:
    rows = []
    for key, value in summary.items():
        text = json.dumps(value) if isinstance(value, dict | list) else str(value)
        rows.append(f"<tr><th>{html.escape(key)}</th><td>{html.escape(text)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def write_report(trace: Trace, path: Path, title: str) -> None:
    png = base64.b64encode(figure_png(trace, title)).decode()
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:13px}}</style></head>
<body><h1>{html.escape(title)}</h1>
<img alt="timelines" src="data:image/png;base64,{png}">
<h2>Summary</h2>{_table(trace.summary)}
</body></html>
"""
    path.write_text(page)
