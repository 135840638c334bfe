"""The ``scalelab`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sim import __version__
from sim.backtest.cli import register as register_backtest
from sim.console import err, fail, route_warnings
from sim.errors import ScenarioError, UserError
from sim.events_cli import register as register_events
from sim.outputs import claim, publish
from sim.plugins import load_plugins
from sim.serving.calibrate.cli import register as register_calibrate
from sim.serving.profile import ProfileError
from sim.sweep.cli import register as register_sweep

if TYPE_CHECKING:
    from sim.scenario import Scenario
    from sim.trace import Trace

HELP = """Simulate how a TF Serving deployment autoscales on Kubernetes, and what it costs.

\b
Examples:
  scalelab run gsp777                       # a packaged scenario, by name, from anywhere
  scalelab run scenarios/gsp777.yaml
  scalelab run scenarios/gsp777.yaml --seed 7 --set hpa.maxReplicas=6 --out out/max6
  scalelab run scenarios/gsp777.yaml --set cluster.node_pool.machine_type=e2-standard-4
  scalelab validate scenarios/spike.yaml
  scalelab sweep scenarios/gsp777.yaml --vary hpa.minReplicas=1,2 --seeds 3 --recommend
"""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, rich_markup_mode=None)


def _version(shown: bool) -> None:
    if shown:
        print(f"scalelab {__version__}")
        raise typer.Exit()


@app.callback()
def _every_command(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    route_warnings()


SCENARIO_HELP = "scenario YAML file, or a packaged scenario's name: gsp777, spike, diurnal"
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a scenario field: dotted.path=value (repeatable)"),
]
DebugOption = Annotated[bool, typer.Option("--debug", help="show tracebacks")]


def load(scenario: Path, overrides: list[str] | None, debug: bool) -> Scenario:
    """The validated scenario, or exit 2 with the file, field and fix on stderr; what is worth
    saying about a valid one (a bare-number duration, a load cut short) as warnings."""
    from sim.lint import scenario_notes
    from sim.loader import read_scenario

    try:
        loaded, raw = read_scenario(scenario, overrides or [])
    except ScenarioError as error:
        fail(error, debug)
    for note in scenario_notes(loaded, raw):
        err.print(f"[yellow]warning:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
    return loaded


@app.command()
def validate(
    scenario: Annotated[Path, typer.Argument(help=SCENARIO_HELP)],
    set_: SetOption = None,
    debug: DebugOption = False,
) -> None:
    """Check a scenario file (and overrides) without running it."""
    loaded = load(scenario, set_, debug)
    print(f"{scenario}: ok ({loaded.name}, {loaded.duration:g} s, load {loaded.load.kind})")


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help=SCENARIO_HELP)],
    out: Annotated[Path | None, typer.Option(help="output directory [default: out/<name>]")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed [default: the scenario's]")] = None,
    set_: SetOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no summary, no progress")] = False,
    backend: Annotated[
        str, typer.Option(help="sim, or a real cluster: gke, kube (pip install scalelab[gke])")
    ] = "sim",
    dry_run: Annotated[bool, typer.Option(help="real cluster: print the plan and stop")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="real cluster: do not ask")] = False,
    keep: Annotated[bool, typer.Option(help="real cluster: leave what was created")] = False,
    max_cost: Annotated[
        float | None, typer.Option(help="real cluster: stop and tear down past this many USD")
    ] = None,
    no_lb: Annotated[
        bool, typer.Option(help="real cluster: ClusterIP + port-forward, no LoadBalancer")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(help="write into a non-empty --out that is not a scalelab output"),
    ] = False,
    debug: DebugOption = False,
) -> None:
    """Simulate a scenario (or run it on a cluster); write trace.csv, events.jsonl,
    summary.json and report.html.

    Exit codes: 0 when the scenario's slo: is met or it has none; 1 when a check misses (each
    is printed with its value and limit); 2 bad input, nothing written; 130 interrupted."""
    from sim.engine import simulate
    from sim.locust_csv import write_locust_csv
    from sim.report import write_report

    loaded = load(scenario, set_, debug)
    if seed is not None and seed < 0:
        fail(ValueError(f"--seed must be >= 0, got {seed}"), debug)
    if backend != "sim":
        _run_on_cluster(
            loaded,
            backend,
            out,
            seed,
            debug,
            quiet,
            dry_run=dry_run,
            yes=yes,
            keep=keep,
            max_cost=max_cost,
            no_lb=no_lb,
            force=force,
        )
        return
    cluster_only = {
        "--dry-run": dry_run,
        "--yes": yes,
        "--keep": keep,
        "--max-cost": max_cost is not None,
        "--no-lb": no_lb,
    }
    given = [flag for flag, used in cluster_only.items() if used]
    if given:
        fail(ValueError(f"{', '.join(given)} apply to --backend gke or kube, not sim"), debug)
    target = out or Path("out") / loaded.name
    try:
        claim(target, "run", force=force)
    except UserError as error:
        fail(error, debug)
    try:
        if not quiet and sys.stderr.isatty():
            trace = _simulate_with_progress(loaded, seed)
        else:
            trace = simulate(loaded, seed=seed)
    except KeyboardInterrupt:
        err.print(f"interrupted: nothing written to {target}", highlight=False, markup=False)
        raise typer.Exit(130) from None
    except ProfileError as error:  # a profile file that exists but is not a valid profile
        fail(error, debug)

    def write(staging: Path) -> None:
        trace.write(staging)
        title = f"{loaded.name} (seed {trace.summary['seed']})"
        write_report(trace, staging / "report.html", title)
        if trace.locust is not None:
            write_locust_csv(trace.locust, staging / loaded.name)

    publish(target, "run", write)
    if not quiet:
        _print_summary(trace.summary, target)
    _gate(trace.summary.get("slo"), quiet)


def _run_on_cluster(
    scenario: Scenario,
    backend: str,
    out: Path | None,
    seed: int | None,
    debug: bool,
    quiet: bool,
    force: bool = False,
    **options: Any,
) -> None:
    from sim.outputs import changed, mark, snapshot
    from sim.plugins import backends, run_backend

    if backend not in backends():
        hint = "" if len(backends()) > 1 else " (install them with: pip install 'scalelab[gke]')"
        fail(ValueError(f"--backend {backend!r}: allowed {', '.join(backends())}{hint}"), debug)
    target = out or Path("out") / f"{scenario.name}-{backend}"
    command = f"run --backend {backend}"
    try:
        claim(target, command, force=force)
    except UserError as error:
        fail(error, debug)
    before = snapshot(target)
    try:
        trace = run_backend(backend, scenario, target, seed=seed, **options)
    except UserError as error:
        fail(error, debug)
    finally:
        # The backend writes as it goes (its ledger first); whatever it wrote is scalelab's.
        written = changed(target, before)
        if written:
            mark(target, command, written)
    if trace is not None:
        if not quiet:
            _print_summary(trace.summary, target)
        _gate(trace.summary.get("slo"), quiet)


def _gate(slo: dict[str, Any] | None, quiet: bool) -> None:
    """Print each SLO check with its value and limit; exit 1 when one is missed (k6-style)."""
    from sim.gate import OK, check_lines, exit_code, verdict

    code = exit_code(slo)
    if not quiet:
        for line in check_lines(slo):
            print(line)
        if slo:
            print(verdict(slo))
    elif code != OK:  # a CI log still says why the job failed
        for line in [*check_lines(slo), verdict(slo)]:
            err.print(line, highlight=False, markup=False)
    if code != OK:
        raise typer.Exit(code)


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="run directory A (the reference, e.g. sim)")],
    b: Annotated[Path, typer.Argument(help="run directory B (e.g. gke)")],
    out: Annotated[
        Path | None, typer.Option(help="report directory [default: out/compare-A-vs-B]")
    ] = None,
    window: Annotated[float, typer.Option(help="step length when users do not step (s)")] = 60.0,
    max_gap: Annotated[
        float | None,
        typer.Option(
            help="pair scale events at most this far apart (s) [default: any distance]",
            min=0,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="write into a non-empty --out that is not a scalelab output")
    ] = False,
    debug: DebugOption = False,
) -> None:
    """Fidelity of B against A: the overall figures, scale events paired by nearest time,
    timelines, per-step throughput and percentiles (from merged latency histograms), cost."""
    from sim.compare import Comparison, compare_dirs

    target = out or Path("out") / f"compare-{a.name}-vs-{b.name}"
    results: list[Comparison] = []
    try:
        claim(target, "compare", force=force)
        publish(
            target,
            "compare",
            lambda staging: results.append(
                compare_dirs(a, b, staging, window_s=window, max_gap_s=max_gap)
            ),
        )
    except UserError as error:
        fail(error, debug)
    except (OSError, ValueError, KeyError) as error:
        fail(ValueError(f"cannot compare {a} and {b}: {error}"), debug)
    result = results[0]
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False, soft_wrap=True)
    print(result.render())
    print(f"wrote {target}/compare.json, report.html")


def _simulate_with_progress(scenario: Scenario, seed: int | None) -> Trace:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from sim.engine import simulate

    columns = (
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("sim", total=scenario.duration)

        def tick(t: float) -> None:
            if int(t) % 60 == 0:
                bar.update(task, completed=t)

        return simulate(scenario, seed=seed, progress=tick)


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    def fmt(value: object, unit: str = "") -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}{unit}"
        return f"{value}{unit}"

    table = Table(title=f"{summary['scenario']} (seed {summary['seed']})", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("requests ok / failed", f"{summary['requests_ok']} / {summary['requests_failed']}"),
        (
            "latency p50 / p95 / p99",
            " / ".join(
                fmt(summary[k], " s") for k in ("latency_p50", "latency_p95", "latency_p99")
            ),
        ),
        ("peak completed req/s", fmt(summary["peak_completed_rps"])),
        (
            "max replicas desired / ready",
            f"{summary['max_replicas_desired']} / {summary['max_replicas_ready']}",
        ),
        ("first scale-up at", fmt(summary["first_scale_up_t"], " s")),
        ("node-hours", fmt(summary["node_hours"])),
        ("cost", fmt(summary["cost_usd"], " USD")),
        ("USD per million requests", fmt(summary["cost_per_million_requests"])),
    ]
    failures = summary.get("failures_by_reason") or {}
    if failures:
        rows.append(("failed by reason", ", ".join(f"{k} {v}" for k, v in failures.items())))
    rows.append(("simulated in", f"{summary['wall_seconds']} s wall"))
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)
    for cause in summary.get("causes") or []:
        Console().print(f"- {cause}", highlight=False, markup=False)
    name = summary["scenario"]
    files = ["trace.csv", "events.jsonl", "summary.json", "report.html", "pods.csv"]
    files += ["latency_histogram.csv"]
    files += [f"{name}_stats.csv", f"{name}_stats_history.csv", f"{name}_failures.csv"]
    Console().print(f"wrote {out}/: " + ", ".join(f for f in files if (out / f).exists()))


register_sweep(app)
register_events(app)
register_calibrate(app)
register_backtest(app)
load_plugins(app)


def main() -> None:
    from sim.extras import missing_extra

    try:
        app()
    except ModuleNotFoundError as error:  # a feature whose extra is not installed
        missing = missing_extra(error)
        if missing is None or "--debug" in sys.argv:
            raise
        err.print(f"[red]error:[/red] {escape(str(missing))}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
