"""One self-contained, offline HTML page of Plotly figures and tables, shared by every report
(run, sweep, tune, compare) so they read alike.

plotly.js is inlined once per page, as the plotly package ships it (``plotly.min.js``, already
minified, ~4.8 MB): a report is one file that opens anywhere, with no network and no CDN. Figure
divs get fixed ids (not plotly's random UUIDs), so the same inputs give the same bytes.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from functools import cache
from typing import Any

CSS = """body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:3px 9px;
text-align:left;font-size:13px;vertical-align:top}table.kv td,td.num{text-align:right;
font-variant-numeric:tabular-nums}tr.warning td{background:#fff4e5}tr.muted td{color:#888}
ul.causes li{margin:.3em 0}.filters{margin:.5em 0}h2{margin-top:1.4em}
code{font-size:12px;white-space:pre-wrap;word-break:break-all}p.note{color:#555;font-size:13px}"""

CONFIG = {"responsive": True, "displaylogo": False}


@cache
def plotly_js() -> str:
    """The minified plotly.js bundle the plotly package ships (read once per process)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def figure_div(fig: Any, div_id: str) -> str:
    """A figure as a div and the script that draws it (plotly.js comes from the page head)."""
    out: str = fig.to_html(full_html=False, include_plotlyjs=False, config=CONFIG, div_id=div_id)
    return out


def table(rows: Sequence[tuple[str, str]], css: str = "kv") -> str:
    """Two columns: a header cell and a value, escaped."""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="{css}">{body}</table>'


def grid(
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    numeric: Sequence[bool] | None = None,
    row_class: Sequence[str] | None = None,
    raw: Sequence[bool] | None = None,
) -> str:
    """A table with a header row; ``numeric`` columns right-aligned; ``raw`` cells are HTML
    already (the caller escaped them), the rest are escaped here."""
    numeric = numeric or [False] * len(head)
    raw = raw or [False] * len(head)
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    lines = []
    for i, row in enumerate(rows):
        css = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        cells = "".join(
            f"<td{' class=num' if numeric[j] else ''}>{c if raw[j] else html.escape(c)}</td>"
            for j, c in enumerate(row)
        )
        lines.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def page(title: str, body: str, body_attrs: str = "") -> str:
    """The whole document: head with the CSS and plotly.js, then ``body``."""
    attrs = f" {body_attrs}" if body_attrs else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style>
<script type="text/javascript">{plotly_js()}</script></head>
<body{attrs}><h1>{html.escape(title)}</h1>
{body}
</body></html>
"""
