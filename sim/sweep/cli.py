"""``scalelab sweep`` and ``scalelab tune``: ``register(app)`` adds them to the scalelab CLI.

Bad input (scenario, axes, sweep file, SLO, executor) exits 2 with file, field, given value
and what is allowed, before anything runs or is written. An interrupted sweep exits 130 and
keeps its finished runs in the cache; the same command resumes it. ``--recommend`` with no
point meeting the SLO writes the results, says which point came closest, and exits 1.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sim.console import err, fail
from sim.errors import Problem, ScenarioError, UserError
from sim.outputs import claim, mark

if TYPE_CHECKING:
    from sim.sweep.axes import Axis
    from sim.sweep.outputs import Outcome
    from sim.sweep.plan import Base, Point
    from sim.sweep.slo import SLOSpec
    from sim.sweep.study import Study


DEFAULT_SEEDS = 3
DEFAULT_BUDGET = 60

VaryOption = Annotated[
    list[str] | None,
    typer.Option(
        "--vary",
        help="an axis: dotted.path=LOW:HIGH:STEP or =a,b,c; load.scale=0.5,1,2 multiplies the "
        "load (repeatable)",
    ),
]
SweepFileOption = Annotated[
    Path | None, typer.Option("--sweep-file", help="YAML with vary/seeds/slo/set (and budget)")
]
SeedsOption = Annotated[
    int | None,
    typer.Option(
        help=f"seeds per point: the scenario's seed and the next ones [default: {DEFAULT_SEEDS}]"
    ),
]
SLOOption = Annotated[
    list[str] | None,
    typer.Option(
        "--slo",
        help="objective, e.g. 'p95<=1s', 'p99<=2s', 'error_rate<=1%', 'minutes_in_violation<=2' "
        "(repeatable or comma-separated) [default: the scenario's slo]",
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a scenario field for every point: dotted.path=value"),
]
OutOption = Annotated[
    Path | None, typer.Option(help="output directory [default: out/<name>-sweep or -tune]")
]
JobsOption = Annotated[
    int | None, typer.Option("--jobs", "-j", help="worker processes [default: all cores]")
]
ExecutorOption = Annotated[str, typer.Option(help="local (process pool) or dask")]
SchedulerOption = Annotated[
    str | None,
    typer.Option(help="Dask scheduler address, tcp://HOST:8786 [default: a local cluster]"),
]
RecommendOption = Annotated[
    bool,
    typer.Option(
        "--recommend",
        help="print the cheapest point meeting the SLO in every seed; write it as "
        "recommended.yaml and recommended-hpa.yaml",
    ),
]
TopOption = Annotated[int, typer.Option(help="rows of the ranked table to print")]
FreshOption = Annotated[
    bool, typer.Option("--fresh", help="rerun every point instead of reusing cached runs")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="no table, no progress")]
ForceOption = Annotated[
    bool, typer.Option(help="write into a non-empty --out that is not a scalelab output")
]
DebugOption = Annotated[bool, typer.Option("--debug", help="show tracebacks")]


def register(app: typer.Typer) -> None:
    """Add ``sweep`` and ``tune`` to the scalelab command line."""
    app.command("sweep")(sweep)
    app.command("tune")(tune)


def _problem(source: str, name: str, given: object, allowed: str) -> ScenarioError:
    from sim.sweep.axes import SweepError

    return SweepError(source, [Problem(name, given, allowed)])


@dataclass
class Setup:
    """Everything a sweep or tune needs, checked; nothing has run or been written yet."""

    kind: str
    base: Base
    axes: list[Axis]
    seeds: tuple[int, ...]
    slo: SLOSpec | None
    out: Path
    jobs: int
    executor: str
    scheduler: str | None
    budget: int = 0
    points: list[Point] = field(default_factory=list)


def _default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def prepare(
    kind: str,
    scenario: Path,
    vary: Sequence[str],
    sweep_file: Path | None,
    seeds: int | None,
    slo: Sequence[str],
    set_: Sequence[str],
    out: Path | None,
    jobs: int | None,
    executor: str,
    scheduler: str | None,
    recommend: bool,
    budget: int | None = None,
    skip_invalid: bool = False,
    force: bool = False,
) -> Setup:
    """Parse and validate all inputs; raises ScenarioError (or its SweepError) on bad input."""
    from sim.loader import parse_override
    from sim.sweep.axes import SweepFile, parse_vary, read_sweep_file
    from sim.sweep.plan import grid_points, load_base
    from sim.sweep.slo import from_scenario, parse_slo

    source = str(scenario)
    spec = read_sweep_file(sweep_file) if sweep_file is not None else SweepFile(Path())
    overrides: list[tuple[str, Any]] = list(spec.overrides)
    for text in set_:
        try:
            overrides.append(parse_override(text))
        except ValueError as error:
            raise _problem(f"{source} (--set {text})", text, text, str(error)) from None
    base = load_base(scenario, overrides)
    axes = [*spec.axes, *(parse_vary(text, source) for text in vary)]
    if not axes:
        raise _problem(
            source,
            "--vary",
            None,
            "give at least one axis (--vary PATH=VALUES or a --sweep-file with vary:)",
        )
    n_seeds = seeds if seeds is not None else spec.seeds or DEFAULT_SEEDS
    if n_seeds < 1:
        raise _problem("--seeds", "seeds", n_seeds, "an integer >= 1")
    slo_texts = list(slo) or list(spec.slo or ())
    try:
        objectives = parse_slo(slo_texts) if slo_texts else from_scenario(base.scenario.slo)
    except ValueError as error:
        where = "--slo" if slo else str(sweep_file)
        raise _problem(where, "slo", ", ".join(slo_texts), str(error)) from None
    if objectives is None and (recommend or kind == "tune"):
        what = "--recommend" if kind == "sweep" else "tune"
        raise _problem(
            source,
            "slo",
            None,
            f"{what} needs an SLO: give --slo 'p95<=1s' or set slo: in the scenario",
        )
    n_jobs = jobs if jobs is not None else _default_jobs()
    if n_jobs < 1:
        raise _problem("-j", "jobs", n_jobs, "an integer >= 1")
    if executor not in ("local", "dask"):
        raise _problem("--executor", "executor", executor, "local or dask")
    if scheduler is not None and executor != "dask":
        raise _problem("--scheduler", "scheduler", scheduler, "goes with --executor dask")
    target = out or Path("out") / f"{base.scenario.name}-{kind}"
    try:
        claim(target, kind, force=force)
    except UserError as error:
        raise _problem("--out", "out", str(target), str(error)) from None
    first = base.scenario.seed
    setup = Setup(
        kind=kind,
        base=base,
        axes=axes,
        seeds=tuple(range(first, first + n_seeds)),
        slo=objectives,
        out=target,
        jobs=n_jobs,
        executor=executor,
        scheduler=scheduler,
    )
    if kind == "sweep":
        setup.points = grid_points(base, axes, skip_invalid=skip_invalid)
    else:
        from sim.sweep.plan import check_axes

        check_axes(base, axes)
        setup.budget = budget if budget is not None else spec.budget or DEFAULT_BUDGET
        if setup.budget < 1:
            raise _problem("--budget", "budget", setup.budget, "an integer >= 1")
    return setup


class _Bar:
    """Points done and the best feasible point so far, on stderr when it is a terminal."""

    def __init__(self, enabled: bool, total_points: int, total_runs: int, title: str) -> None:
        self.enabled = enabled
        self.total_points, self.total_runs, self.title = total_points, total_runs, title

    @contextmanager
    def show(self) -> Iterator[Callable[[Study], None] | None]:
        if not self.enabled:
            yield None
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (
            TextColumn(self.title),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} points"),
            TextColumn("runs {task.fields[runs]}"),
            TimeElapsedColumn(),
            TextColumn("best feasible: {task.fields[best]}"),
        )
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task(
                "sweep", total=self.total_points, runs=f"0/{self.total_runs}", best="-"
            )

            def update(study: Study) -> None:
                bar.update(
                    task,
                    completed=study.points_done(),
                    runs=f"{len(study.records)}/{self.total_runs}",
                    best=study.describe_best(),
                )

            yield update


def _connect(setup: Setup) -> Any:
    """The executor; Dask connects now, so an unreachable scheduler is bad input (exit 2)."""
    from sim.sweep.executor import make_executor

    try:
        return make_executor(setup.executor, setup.jobs, setup.scheduler)
    except (ConnectionError, ValueError) as error:
        raise _problem("--scheduler", "scheduler", setup.scheduler, str(error)) from None


def execute(setup: Setup, fresh: bool, progress: bool, **tune_options: Any) -> tuple[Study, dict]:
    """Run the study through the cache; on Ctrl-C save progress, say how to resume, exit 130."""
    from sim.sweep.cache import RunCache
    from sim.sweep.runner import Runner
    from sim.sweep.study import Study

    study = Study(setup.base, setup.seeds, setup.slo)
    executor = _connect(setup) if setup.executor == "dask" else None
    mark(setup.out, setup.kind, ["cache"])  # an interrupted sweep's --out resumes, unrefused
    cache = RunCache(setup.out / "cache")
    runner = Runner(lambda: executor or _connect(setup), cache=cache, reuse=not fresh)
    if setup.kind == "sweep":
        n_points = len(setup.points)
        distinct = len({p.sha for p in setup.points} | {setup.base.sha})  # baseline included
    else:
        n_points = distinct = setup.budget + 1
    bar = _Bar(progress, n_points, distinct * len(setup.seeds), setup.kind)
    started = time.perf_counter()
    meta: dict[str, Any] = {}
    try:
        with bar.show() as update:
            if setup.kind == "sweep":
                study.run(runner, setup.points, update)
            else:
                from sim.sweep.tune import tune as search

                log = search(study, setup.axes, setup.budget, runner, on_run=update, **tune_options)
                meta["trials"] = log.trials
                meta["budget"] = setup.budget
                meta["evaluated"] = log.evaluated
                meta["repeated_trials"] = log.repeats
                meta["search_space_points"] = log.space
                meta["shortfall"] = log.shortfall
                meta["invalid_trials"] = [{"values": v, "reason": why} for v, why in log.invalid]
    except KeyboardInterrupt:
        runner.close()
        err.print(
            f"interrupted: {len(runner.computed)} runs finished this time, {len(cache)} kept in "
            f"{cache.directory}; run the same command again to resume",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(130) from None
    finally:
        runner.close()
        if executor is not None:  # connected up front; unused when every run was cached
            executor.close()
    meta["runs"] = {
        "total": len(runner.computed) + len(runner.reused),
        "computed": len(runner.computed),
        "reused": len(runner.reused),
    }
    meta["wall_seconds"] = round(time.perf_counter() - started, 3)
    meta["engine"] = cache.fingerprint
    return study, meta


def _pm(stats: tuple[float | None, float | None, float | None], digits: int = 3) -> str:
    mean, ci, _ = stats
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + ("" if ci is None else f" ±{ci:.{digits}f}")


def _stdout() -> Console:
    """Wide when piped (rich would wrap the table at 80 columns), the terminal's otherwise."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def print_results(setup: Setup, study: Study, outcome: Outcome, top: int) -> None:
    from sim.sweep.plan import label, short_names

    console = _stdout()
    names = short_names([a.path for a in setup.axes])
    table = Table(
        title=f"{setup.base.scenario.name}: {len(outcome.ranked)} points x "
        f"{len(study.seeds)} seeds, ranked (feasible first, then cheapest)"
    )
    table.add_column("#", justify="right", min_width=2)
    for axis in setup.axes:
        table.add_column(names[axis.path], no_wrap=True)
    metrics = ["latency_p95"]
    if study.slo is not None:
        metrics = list(
            dict.fromkeys([study.slo.primary.column, *(o.column for o in study.slo.objectives)])
        )
    for metric in metrics:
        unit = " s" if metric.startswith("latency") else ""
        table.add_column(f"{metric.removeprefix('latency_')}{unit}", justify="right")
    table.add_column("cost USD", justify="right")
    table.add_column("node-h", justify="right")
    table.add_column("SLO met", justify="right", min_width=4)
    table.add_column("Pareto", justify="center", min_width=6)
    for result in outcome.ranked[:top]:
        style = None if result.feasible else "dim"
        table.add_row(
            str(result.rank),
            *(escape(str(result.point.value(a.path))) for a in setup.axes),
            *(_pm(result.stats[m]) for m in metrics),
            _pm(result.stats["cost_usd"], 4),
            _pm(result.stats["node_hours"], 3),
            "-" if result.seeds_met is None else f"{result.seeds_met}/{len(result.rows)}",
            "●" if result.pareto else "",
            style=style,
        )
    console.print(table)
    console.print(
        "means over seeds ± the half-width of their 95% t interval", highlight=False, markup=False
    )
    if len(outcome.ranked) > top:
        console.print(f"... {len(outcome.ranked) - top} more in points.csv and report.html")
    base = outcome.baseline
    console.print(
        f"baseline (the scenario as given): cost {_pm(base.stats['cost_usd'], 4)} USD, "
        + ", ".join(f"{m.removeprefix('latency_')} {_pm(base.stats[m])}" for m in metrics)
        + ("" if base.seeds_met is None else f", SLO met in {base.seeds_met}/{len(base.rows)}"),
        highlight=False,
        markup=False,
    )
    ties: dict[tuple[float | None, float | None], list[str]] = {}
    for r in sorted((r for r in outcome.ranked if r.pareto), key=lambda r: r.mean("cost_usd") or 0):
        ties.setdefault((r.mean("cost_usd"), r.mean(metrics[0])), []).append(label(r.point.values))
    front = [" = ".join(labels) for labels in ties.values()]  # equal cost and metric: one entry
    console.print(
        f"Pareto front (cost vs {metrics[0]}): " + "; ".join(front), highlight=False, markup=False
    )
    if study.slo is not None:
        _warn_straddling(outcome.ranked, study.slo)


def _warn_straddling(ranked: list[Any], slo: SLOSpec) -> None:
    """Points whose 95% interval straddles an SLO limit: more seeds would say which side."""
    from sim.sweep.plan import label
    from sim.sweep.recommend import straddling

    found = [(r, straddling(r, slo)) for r in ranked]
    found = [(r, what) for r, what in found if what]
    if not found:
        return
    shown = "; ".join(f"{label(r.point.values)}: {', '.join(w)}" for r, w in found[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    err.print(
        f"warning: {len(found)} point(s) have a 95% interval straddling an SLO limit, so these "
        f"seeds cannot tell whether they meet it (more --seeds would): {shown}{more}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def print_recommendation(study: Study, outcome: Outcome, out: Path) -> bool:
    """Say what to deploy and why; False (with the closest point on stderr) if nothing fits."""
    from sim.sweep.plan import label
    from sim.sweep.recommend import closest, margins

    assert study.slo is not None
    chosen = outcome.chosen
    if chosen is None:
        near = closest(outcome.ranked, study.slo)
        primary = study.slo.primary
        unit = " s" if primary.column.startswith("latency") else ""
        hint = (
            f" The closest: {label(near.point.values)}, worst-seed {primary.metric} "
            f"{near.worst(primary.column):.4g}{unit} against the limit {primary.limit:g}{unit}."
            if near is not None
            else ""
        )
        message = (
            f"no point meets the SLO {study.slo.text()} in every seed "
            f"({len(outcome.ranked)} points x {len(study.seeds)} seeds).{hint} Relax the SLO or "
            f"widen the axes (more replicas or nodes). Results are in {out}/."
        )
        err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
        return False
    console = _stdout()
    cost = chosen.mean("cost_usd") or 0.0
    base_cost = outcome.baseline.mean("cost_usd")
    versus, runs, held = "", f"{len(study.seeds)} seeds", ""
    if outcome.levels:  # load axes are conditions: the setting held under each of them
        runs += f" x {len(outcome.levels)} load levels"
        held = " at every load level (" + "; ".join(label(v) for v in outcome.levels) + ")"
    elif base_cost:
        versus = f" (baseline {base_cost:.4f} USD, {(cost - base_cost) / base_cost:+.1%})"
    what = label(chosen.point.values)
    if chosen.point.sha == outcome.baseline.point.sha:  # no point beat it; ties keep it
        what, versus = f"keep the scenario as given ({what})", ""
    console.print(
        f"recommended: {what}: {cost:.4f} USD per run, mean of "
        f"{runs}{versus}; meets {study.slo.text()} in every seed{held}",
        highlight=False,
        markup=False,
    )
    for margin in margins(chosen, study.slo):
        console.print("  " + margin.text(), highlight=False, markup=False)
    files = [f for f in ("recommended.yaml", "recommended-hpa.yaml") if f in outcome.written]
    console.print(
        f"wrote {out}/"
        + f" and {out}/".join(files)
        + " (scalelab run the first; kubectl apply -f the second)",
        highlight=False,
        markup=False,
    )
    return True


def _main(
    kind: str,
    scenario: Path,
    options: dict[str, Any],
    tune_options: dict[str, Any],
    recommend: bool,
    top: int,
    fresh: bool,
    quiet: bool,
    debug: bool,
) -> None:
    from sim.extras import MissingExtra, require

    needs = ["pyarrow"] + (["optuna"] if kind == "tune" else [])
    needs += ["distributed"] if options["executor"] == "dask" else []
    try:  # before anything runs or is written: the results table is Parquet too
        require(needs, f"scalelab {kind}")
    except MissingExtra as error:
        fail(error, debug)
    try:
        setup = prepare(kind, scenario, recommend=recommend, **options)
        from sim.lint import scenario_notes

        for note in scenario_notes(setup.base.scenario, setup.base.data):
            err.print(f"warning: {note}", highlight=False, markup=False, soft_wrap=True)
        progress = not quiet and sys.stderr.isatty()
        study, meta = execute(setup, fresh, progress, **tune_options)
    except ScenarioError as error:
        fail(error, debug)
        return
    from sim.sweep.outputs import write_outputs

    if meta.get("shortfall"):  # tune: fewer distinct points than --budget, and why
        err.print(
            f"warning: tune evaluated {meta['evaluated']} of --budget {setup.budget} points: "
            f"{meta['shortfall']}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    outcome = write_outputs(setup, study, meta, recommend)
    runs = meta["runs"]
    if not quiet:
        print_results(setup, study, outcome, top)
        _stdout().print(
            f"{runs['total']} runs ({runs['computed']} computed, {runs['reused']} from cache) in "
            f"{meta['wall_seconds']:.1f} s on {setup.executor} -j {setup.jobs}; wrote "
            f"{setup.out}/: {', '.join(f for f in outcome.written if not f.startswith('rec'))}",
            highlight=False,
            markup=False,
        )
    if recommend and not print_recommendation(study, outcome, setup.out):
        raise typer.Exit(1)


def sweep(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    vary: VaryOption = None,
    sweep_file: SweepFileOption = None,
    seeds: SeedsOption = None,
    slo: SLOOption = None,
    set_: SetOption = None,
    out: OutOption = None,
    jobs: JobsOption = None,
    executor: ExecutorOption = "local",
    scheduler: SchedulerOption = None,
    recommend: RecommendOption = False,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="leave out invalid axis combinations")
    ] = False,
    top: TopOption = 20,
    fresh: FreshOption = False,
    force: ForceOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Run a scenario over a grid of field values x seeds; rank, Pareto front, recommend.

    Writes results.csv/.parquet (a row per point and seed), points.csv, report.html and
    sweep.json to --out; finished runs are cached there, so rerunning resumes.

    Exit codes: 0 done; 1 with --recommend when no point meets the SLO in every seed (the
    results are still written); 2 bad input, nothing run or written; 130 interrupted (the
    finished runs stay cached: the same command resumes).

    Examples:

    \b
      scalelab sweep scenarios/gsp777.yaml --sweep-file scenarios/sweeps/lab.yaml --recommend
      scalelab sweep scenarios/gsp777.yaml --slo 'p95<=4s' --seeds 5
        --vary hpa.metrics[0].resource.target.averageUtilization=40:90:5
        --vary cluster.node_pool.machine_type=e2-standard-4,n1-standard-4
      scalelab sweep scenarios/spike.yaml --vary load.scale=0.5,1,2 --vary hpa.minReplicas=1,2
        --executor dask --scheduler tcp://HOST:8786
    """
    options = {
        "vary": vary or [],
        "sweep_file": sweep_file,
        "seeds": seeds,
        "slo": slo or [],
        "set_": set_ or [],
        "out": out,
        "jobs": jobs,
        "executor": executor,
        "scheduler": scheduler,
        "skip_invalid": skip_invalid,
        "force": force,
    }
    _main("sweep", scenario, options, {}, recommend, top, fresh, quiet, debug)


def tune(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    vary: Annotated[
        list[str] | None,
        typer.Option(
            "--vary",
            help="a search range: path=LOW:HIGH (integers stay integers), LOW:HIGH:log, "
            "LOW:HIGH:STEP, or a list a,b,c (repeatable)",
        ),
    ] = None,
    budget: Annotated[
        int | None, typer.Option(help=f"points to evaluate [default: {DEFAULT_BUDGET}]")
    ] = None,
    batch: Annotated[
        int, typer.Option(help="points proposed per round (results do not depend on -j)")
    ] = 4,
    sampler_seed: Annotated[int, typer.Option(help="the optimizer's seed")] = 0,
    sweep_file: SweepFileOption = None,
    seeds: SeedsOption = None,
    slo: SLOOption = None,
    set_: SetOption = None,
    out: OutOption = None,
    jobs: JobsOption = None,
    executor: ExecutorOption = "local",
    scheduler: SchedulerOption = None,
    recommend: RecommendOption = False,
    top: TopOption = 20,
    fresh: FreshOption = False,
    force: ForceOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Search the axes with a seeded optimizer (Optuna TPE) for the cheapest point meeting
    the SLO in every seed; same outputs as sweep.

    Exit codes: as sweep's: 0 done; 1 with --recommend when no evaluated point meets the SLO
    in every seed; 2 bad input; 130 interrupted (rerun to resume from the cache).

    Example:

    \b
      scalelab tune scenarios/gsp777.yaml --budget 60 --slo 'p95<=4s' --recommend
        --vary hpa.metrics[0].resource.target.averageUtilization=20:95
        --vary hpa.minReplicas=1:3
        --vary hpa.behavior.scaleDown.stabilizationWindowSeconds=0:600:30
    """
    if batch < 1:
        fail(_problem("--batch", "batch", batch, "an integer >= 1"), debug)
    options = {
        "vary": vary or [],
        "sweep_file": sweep_file,
        "seeds": seeds,
        "slo": slo or [],
        "set_": set_ or [],
        "out": out,
        "jobs": jobs,
        "executor": executor,
        "scheduler": scheduler,
        "budget": budget,
        "force": force,
    }
    tune_options = {"batch": batch, "sampler_seed": sampler_seed}
    _main("tune", scenario, options, tune_options, recommend, top, fresh, quiet, debug)
