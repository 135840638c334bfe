"""Every kind of report (run, sweep, tune, compare) opened in headless Chromium: each plot
drawn with its traces, no script error, heat map text that does not overlap.

A probe script is put at the top of a copy of each page: it records uncaught errors,
unhandled promise rejections and console.error, and after the load event writes what it found
(per plot: drawn, trace count, cell texts and how many overlap) into a <pre>. One Chromium
loads every page, each in an iframe of an index page that gathers the probes into the <pre>
``--dump-dom`` prints. Chromium is Debian's ``chromium`` package (.ci/run installs it); without
it these tests skip.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.compare import compare_dirs
from sim.engine import simulate
from sim.loader import load_scenario
from sim.page import figure_div, page
from sim.report import write_report
from sim.scenario import Scenario
from sim.sweep.plan import Point
from sim.sweep.report import heatmap_figure
from sim.sweep.results import PointResult

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "scenarios" / "gsp777.yaml"
TARGET = "hpa.metrics[0].resource.target.averageUtilization"
CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium; .ci/run does)"
)

PROBE = """<script>(function(){
var errors=[];
window.addEventListener('error',function(e){errors.push('error: '+(e.message||e.type));},true);
window.addEventListener('unhandledrejection',function(e){errors.push('rejection: '+e.reason);});
var ce=console.error;console.error=function(){
 errors.push('console.error: '+Array.prototype.join.call(arguments,' '));
 ce.apply(console,arguments);};
function box(t){var r=t.getBoundingClientRect();
 return {l:r.left,r:r.right,t:r.top,b:r.bottom,w:r.width,text:t.textContent};}
function overlap(a,b){return a.l<b.r-0.5&&b.l<a.r-0.5&&a.t<b.b-0.5&&b.t<a.b-0.5;}
window.addEventListener('load',function(){setTimeout(function(){
 var plots=[].map.call(document.querySelectorAll('.plotly-graph-div'),function(d){
  var data=d._fullData||[];
  var cells=[].map.call(d.querySelectorAll('.heatmaplayer text'),box);
  var bad=0;for(var i=0;i<cells.length;i++)for(var j=i+1;j<cells.length;j++)
   if(overlap(cells[i],cells[j]))bad++;
  var heat=data.filter(function(t){return t.type==='heatmap';})[0];
  var area=d.querySelector('.nsewdrag');
  return {id:d.id,drawn:d.classList.contains('js-plotly-plot')&&!!d.querySelector('.main-svg'),
   traces:data.filter(function(t){return t.visible===true;}).length,
   drawnTraces:d.querySelectorAll('g.trace').length,
   heatmap:!!heat,columns:heat?heat.x.length:0,
   plotWidth:area?area.getBoundingClientRect().width:0,
   cellTexts:cells.length,
   widest:Math.max.apply(null,[0].concat(cells.map(function(c){return c.w;}))),
   overlaps:bad};});
 var out=document.createElement('pre');out.id='scalelab-probe';
 out.textContent=JSON.stringify({plots:plots,errors:errors});document.body.appendChild(out);
},0);});})();</script>"""


def in_process(*args: str) -> Any:
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, done.output
    return done


def fake_result(index: int, values: tuple[tuple[str, Any], ...], cost: float, p95: float) -> Any:
    """A point's result without running it (the heat map only reads means and feasibility)."""
    result = PointResult(Point(index, values, Scenario(), f"sha{index}"), rows=[{}])
    result.stats = {"cost_usd": (cost, None, cost), "latency_p95": (p95, None, p95)}
    result.seeds_met = 1 if p95 <= 2 else 0
    return result


def heat_map(columns: int, rows: int) -> Any:
    ranked = [
        fake_result(
            i * rows + j, (("a.x", i), ("b.y", j)), 0.0123 + 0.001 * i * j, 0.5 + 0.1 * (i + j)
        )
        for i in range(columns)
        for j in range(rows)
    ]
    return heatmap_figure(ranked, ["a.x", "b.y"], None)


def dense_maps(path: Path) -> Path:
    """A 14 x 12 heat map (text fits at a smaller font) and a 40 x 30 one (it cannot)."""
    body = figure_div(heat_map(14, 12), "dense") + figure_div(heat_map(40, 30), "crowded")
    path.write_text(page("dense heat maps", body))
    return path


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("reports")
    lab = load_scenario(LAB, ["duration=4m"])
    for name, trace in (("a", simulate(lab)), ("b", simulate(lab, seed=7))):
        trace.write(tmp / name)
        write_report(trace, tmp / name / "report.html", f"lab {name}")
    compare_dirs(tmp / "a", tmp / "b", tmp / "cmp")
    common = ["--set", "duration=3m", "--seeds", "1", "--slo", "p95<=4s", "-j", "1", "-q"]
    in_process(
        "sweep", str(LAB), *common, "--vary", f"{TARGET}=50,80", "--vary",
        "hpa.minReplicas=1,2", "--recommend", "--out", str(tmp / "sweep"),
    )  # fmt: skip
    in_process(
        "tune", str(LAB), *common, "--vary", f"{TARGET}=30:90", "--vary", "hpa.minReplicas=1:2",
        "--budget", "4", "--batch", "2", "--out", str(tmp / "tune"),
    )  # fmt: skip
    return {
        "run": tmp / "a" / "report.html",
        "compare": tmp / "cmp" / "report.html",
        "sweep": tmp / "sweep" / "report.html",
        "tune": tmp / "tune" / "report.html",
        "heat maps": dense_maps(tmp / "maps.html"),
    }


INDEX = """<html><body>{frames}<script>
var frames=document.querySelectorAll('iframe'),timer=setInterval(function(){{
 var found={{}},done=0;frames.forEach(function(f){{
  var p=f.contentDocument&&f.contentDocument.getElementById('scalelab-probe');
  if(p){{found[f.dataset.kind]=JSON.parse(p.textContent);done++;}}}});
 if(done<frames.length)return;clearInterval(timer);
 var out=document.createElement('pre');out.id='all-probes';
 out.textContent=JSON.stringify(found);document.body.appendChild(out);}},50);
</script></body></html>"""


@pytest.fixture(scope="module")
def probed(pages: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Each page's probe result: one Chromium loads every page, each in an iframe of an index
    page that collects the probes (one browser start instead of one per page)."""
    assert CHROMIUM is not None
    frames = []
    for n, (kind, path) in enumerate(pages.items()):
        copy = path.parent / f"probed-{n}.html"
        copy.write_text(path.read_text().replace("<head>", "<head>" + PROBE, 1))
        frames.append(
            f'<iframe data-kind="{kind}" src="{copy.as_uri()}" width="1300" height="900"></iframe>'
        )
    index = next(iter(pages.values())).parent / "probe-index.html"
    index.write_text(INDEX.format(frames="".join(frames)))
    done = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-extensions", "--allow-file-access-from-files",
            "--virtual-time-budget=20000", "--dump-dom", index.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    match = re.search(r'<pre id="all-probes">(.*?)</pre>', done.stdout, re.S)
    assert match, f"the probes wrote nothing (rc {done.returncode}): {done.stderr[-2000:]}"
    found: dict[str, dict[str, Any]] = json.loads(html.unescape(match.group(1)))
    assert set(found) == set(pages)
    return found


# Figures per page: run (timelines, per pod); sweep (Pareto, heat map, timelines); tune (Pareto,
# two-axis scatter, history, slices, timelines); compare (overlay).
EXPECTED = {"run": 2, "sweep": 3, "tune": 5, "compare": 1}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_every_plot_renders_without_a_script_error(
    kind: str, pages: dict[str, Path], probed: dict[str, dict[str, Any]]
) -> None:
    result = probed[kind]
    assert result["errors"] == []
    plots = result["plots"]
    in_file = re.findall(r'<div id="[\w-]+" class="plotly-graph-div"', pages[kind].read_text())
    assert len(plots) == len(in_file) == EXPECTED[kind]
    for plot in plots:
        assert plot["drawn"], plot
        # every trace Plotly built was drawn (a heat map is an image, not a g.trace)
        assert plot["traces"] > 0
        assert plot["heatmap"] or plot["drawnTraces"] == plot["traces"], plot


def test_sweep_heat_map_writes_every_cell(probed: dict[str, dict[str, Any]]) -> None:
    (heat,) = [p for p in probed["sweep"]["plots"] if p["heatmap"]]
    assert heat["cellTexts"] == 4 and heat["overlaps"] == 0


def test_dense_heat_map_text_fits_its_cells(probed: dict[str, dict[str, Any]]) -> None:
    assert probed["heat maps"]["errors"] == []
    dense, _ = probed["heat maps"]["plots"]
    assert dense["drawn"] and dense["cellTexts"] == 14 * 12 and dense["overlaps"] == 0
    assert dense["widest"] <= dense["plotWidth"] / dense["columns"]


def test_too_many_cells_leave_the_text_to_the_hover(probed: dict[str, dict[str, Any]]) -> None:
    _, crowded = probed["heat maps"]["plots"]
    assert crowded["drawn"] and crowded["cellTexts"] == 0
