"""``scalelab calibrate``: the command; ``register(app)`` adds it to the scalelab CLI."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from sim.serving.calibrate import CalibrationError
from sim.console import err, fail

HELP = """Measure a model's latency and CPU time into a latency profile (sim/serving/profiles/*.yaml).

Three modes:

\b
  (default)           build ResNet101 with TensorFlow, export it like the lab's SavedModel and
                      measure threads x concurrency x batch (pip install 'scalelab[calibrate]')
  --endpoint URL      drive a live TF Serving with the lab's request, fit what it observes
  --derive-from FILE  turn a local measurement into a GKE node's profile, scaled to the lab's
                      observed latency (sim/serving/calibrate/derive.py)

Examples:

\b
  scalelab calibrate --quick --out /tmp/quick.yaml
  scalelab calibrate --out sim/serving/profiles/resnet101-cpu-amd-epyc-milan.yaml
  scalelab calibrate --endpoint http://34.1.2.3:8501 --model image_classifier \\
      --machine-type e2-standard-4 --out my-cluster.yaml
  scalelab calibrate --derive-from sim/serving/profiles/resnet101-cpu-amd-epyc-milan.yaml \\
      --machine-type e2-standard-4 --out sim/serving/profiles/resnet101-tfserving-gke-e2-standard-4.yaml
"""


_LOCAL, _ENDPOINT, _DERIVE = "Local measurement", "Live endpoint", "Derived node profile"


def _command_line(ctx: typer.Context) -> str:
    """This invocation as a command that reproduces it: the options given, not the defaults."""
    words = ["scalelab", "calibrate"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if value == param.default or value is None or param.name == "debug":
            continue
        flag = max(param.opts, key=len)
        if isinstance(value, bool):
            words.append(flag if value else (param.secondary_opts or [flag])[0])
        else:
            words += [flag, str(value)]
    return shlex.join(words)


@contextmanager
def _progress(total: int | None, label: str) -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """A progress bar on a terminal, one line per step otherwise."""
    began = time.perf_counter()
    done = 0

    def line(event: str, fields: dict[str, Any]) -> str:
        if event == "point":
            p = fields["point"]
            return (
                f"threads={p['threads']:g} concurrency={p['concurrency']} batch={p['batch']}: "
                f"p50 {p['latency_s'][3]:.4f} s, n={p['n']}"
            )
        if event == "retry":
            return (
                f"threads={fields['threads']:g} concurrency={fields['concurrency']} "
                f"batch={fields['batch']}: other processes used "
                f"{fields['background_cpu_cores']:.2f} cores; measuring again"
            )
        if event == "loaded":
            bits = [f"{k}={v:.4g}" for k, v in fields.items() if isinstance(v, float)]
            return "ready: " + ", ".join(bits)
        return f"{event} {' '.join(f'{k}={v}' for k, v in fields.items())}".strip()

    if sys.stderr.isatty():
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=err,
        ) as bar:
            task = bar.add_task("", total=total)

            def update(event: str, fields: dict[str, Any]) -> None:
                if event == "done":
                    return
                bar.update(
                    task, advance=1 if event == "point" else 0, description=line(event, fields)
                )

            yield update
        return

    def plain(event: str, fields: dict[str, Any]) -> None:
        nonlocal done
        if event == "done":
            return
        done += event == "point"
        count = f"[{done}/{total}] " if event == "point" and total else ""
        err.print(
            f"{label} {time.perf_counter() - began:6.1f}s {count}{line(event, fields)}",
            highlight=False,
            markup=False,
        )

    yield plain


def _ints(text: str | None, label: str) -> tuple[int, ...] | None:
    from sim.serving.calibrate.local import parse_ints

    return None if text is None else parse_ints(text, label)


def calibrate(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="profile to write (.yaml or .json) [default: ./NAME.yaml]"
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="small grid (threads 1 and all CPUs, concurrency and batch 1-2, 1 s windows): "
            "under 2 minutes for ResNet101 on 2 cores",
            rich_help_panel=_LOCAL,
        ),
    ] = False,
    model_arch: Annotated[
        str,
        typer.Option(
            "--model-arch", help="resnet101 or tiny (a small CNN for tests)", rich_help_panel=_LOCAL
        ),
    ] = "resnet101",
    signature: Annotated[
        str,
        typer.Option(
            help="serving_preprocess (JPEG in, as the lab) or serving_default (float images)",
            rich_help_panel=_LOCAL,
        ),
    ] = "serving_preprocess",
    threads: Annotated[
        str | None,
        typer.Option(
            help="intra-op thread counts, e.g. 1,2 [default: 1, 2, 4, ... up to the CPUs]",
            rich_help_panel=_LOCAL,
        ),
    ] = None,
    concurrency: Annotated[
        str | None,
        typer.Option(
            help="requests in flight, e.g. 1,2,4 [default: 1,2,4; --endpoint: 1,2,4,8]",
            rich_help_panel=_LOCAL,
        ),
    ] = None,
    batch: Annotated[
        str | None,
        typer.Option(
            help="items per request, e.g. 1,2,4,8 [default: 1,2,4,8; --endpoint: 1]",
            rich_help_panel=_LOCAL,
        ),
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option(
            help="measuring window per point [default: 3; --quick 1; --endpoint 20]",
            rich_help_panel=_LOCAL,
        ),
    ] = None,
    repeats: Annotated[
        int | None,
        typer.Option(help="repeats per window [default: 3; --quick 2]", rich_help_panel=_LOCAL),
    ] = None,
    min_requests: Annotated[
        int | None,
        typer.Option(
            help="requests per point at least [default: 8; --quick 4]", rich_help_panel=_LOCAL
        ),
    ] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option(
            help="longest window per point [default: 15; --quick 4]", rich_help_panel=_LOCAL
        ),
    ] = None,
    retry_seconds: Annotated[
        float | None,
        typer.Option(
            help="time to re-measure windows other processes disturbed [default: 150; --quick 0]",
            rich_help_panel=_LOCAL,
        ),
    ] = None,
    image: Annotated[
        Path | None,
        typer.Option(
            help="JPEG to send [default: the lab's ../shared/data/grace_hopper.jpg; locally a "
            "synthetic one when it is missing]",
            rich_help_panel=_LOCAL,
        ),
    ] = None,
    export_dir: Annotated[
        Path | None,
        typer.Option(
            help="keep the SavedModel here (<dir>/1/); reused when it already holds the model",
            rich_help_panel=_LOCAL,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="profile name [default: resnet101-cpu-<cpu> / <family>-<machine>]"),
    ] = None,
    family: Annotated[
        str | None,
        typer.Option(help="profile family [default: resnet101-cpu; others resnet101-tfserving]"),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            help="TF Serving REST base URL, e.g. http://HOST:8501", rich_help_panel=_ENDPOINT
        ),
    ] = None,
    model: Annotated[
        str, typer.Option(help="served model name", rich_help_panel=_ENDPOINT)
    ] = "image_classifier",
    model_version: Annotated[
        str | None,
        typer.Option(help="model version to address [default: latest]", rich_help_panel=_ENDPOINT),
    ] = None,
    cores: Annotated[
        float | None,
        typer.Option(
            help="CPU the serving pod can use [default: the --machine-type's vCPUs]",
            rich_help_panel=_ENDPOINT,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="request timeout in seconds", rich_help_panel=_ENDPOINT)
    ] = 30.0,
    machine_type: Annotated[
        str | None,
        typer.Option(
            help="GKE machine type the profile is for (endpoint: the node's; derive: the "
            "target, default e2-standard-4)",
            rich_help_panel=_DERIVE,
        ),
    ] = None,
    derive_from: Annotated[
        Path | None,
        typer.Option(help="local profile to derive a node profile from", rich_help_panel=_DERIVE),
    ] = None,
    observed_latency: Annotated[
        float,
        typer.Option(help="observed lone-request median on the node, s", rich_help_panel=_DERIVE),
    ] = 0.680,
    overhead: Annotated[
        float,
        typer.Option(help="LB + network + HTTP part of it, s (assumed)", rich_help_panel=_DERIVE),
    ] = 0.030,
    smt_gain: Annotated[
        float,
        typer.Option(
            help="throughput of a core with both hyper-threads busy over one (assumed)",
            rich_help_panel=_DERIVE,
        ),
    ] = 1.0,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
) -> None:
    """Measure a model's latency and CPU time into a latency profile (see --help)."""
    try:
        if endpoint and derive_from:
            raise CalibrationError("--endpoint and --derive-from are different modes; pick one")
        command = _command_line(ctx)
        if derive_from is not None:
            data = _derive(
                derive_from,
                machine_type,
                observed_latency,
                overhead,
                smt_gain,
                name,
                family,
                command,
            )
        elif endpoint is not None:
            data = _endpoint(
                endpoint,
                model,
                model_version,
                image,
                cores,
                machine_type,
                concurrency,
                batch,
                seconds,
                repeats,
                min_requests,
                timeout,
                name,
                family,
                command,
            )
        else:
            data = _local(
                quick,
                model_arch,
                signature,
                threads,
                concurrency,
                batch,
                seconds,
                repeats,
                min_requests,
                max_seconds,
                retry_seconds,
                image,
                export_dir,
                name,
                family,
                command,
            )
        from sim.serving.profile import dump_profile

        target = dump_profile(data, out or Path(f"{data['name']}.yaml"))
        for notice in data["provenance"].get("warnings") or []:
            err.print(
                f"[yellow]warning:[/yellow] {escape(notice)}", highlight=False, soft_wrap=True
            )
    except (CalibrationError, ValueError, OSError) as error:
        fail(error, debug)
    _summary(target)


def _summary(target: Path) -> None:
    from sim.serving.profile import load_profile

    profile = load_profile(target)
    lone = profile.default
    axes = profile.axes
    print(
        f"wrote {target}: {profile.name}, {len(profile.points)} points "
        f"(threads {_fmt(axes['threads'])}, concurrency {_fmt(axes['concurrency'])}, "
        f"batch {_fmt(axes['batch'])}); lone request at {profile.default_threads:g} threads: "
        f"{lone.latency_median:.4f} s median, {lone.cpu_seconds_mean:.4f} CPU-s, "
        f"parallelism {lone.parallelism:.2f}"
    )


def _fmt(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


def _local(
    quick: bool,
    arch: str,
    signature: str,
    threads: str | None,
    concurrency: str | None,
    batch: str | None,
    seconds: float | None,
    repeats: int | None,
    min_requests: int | None,
    max_seconds: float | None,
    retry_seconds: float | None,
    image: Path | None,
    export_dir: Path | None,
    name: str | None,
    family: str | None,
    command: str,
) -> dict[str, Any]:
    from sim.serving.calibrate.local import LocalRun, default_grid, grid_with, run_local
    from sim.serving.calibrate.model import require_tensorflow

    grid = grid_with(
        default_grid(quick),
        threads=_ints(threads, "--threads"),
        concurrency=_ints(concurrency, "--concurrency"),
        batch=_ints(batch, "--batch"),
        seconds=seconds,
        repeats=repeats,
        min_requests=min_requests,
        max_seconds=max_seconds,
        retry_seconds=retry_seconds,
    )
    require_tensorflow()  # fail before anything else with the install hint
    run = LocalRun(
        arch=arch,
        grid=grid,
        signature=signature,
        image=image,
        export_dir=export_dir,
        name=name,
        family=family,
        command=command,
    )
    with _progress(grid.points, "calibrate") as progress:
        return run_local(run, progress)


def _endpoint(
    url: str,
    model: str,
    version: str | None,
    image: Path | None,
    cores: float | None,
    machine: str | None,
    concurrency: str | None,
    batch: str | None,
    seconds: float | None,
    repeats: int | None,
    min_requests: int | None,
    timeout: float,
    name: str | None,
    family: str | None,
    command: str,
) -> dict[str, Any]:
    from sim.serving.calibrate.endpoint import EndpointRun, run_endpoint
    from sim.serving.calibrate.payload import find_lab_image
    from sim.cluster.catalog import machine_type

    if cores is None:
        if machine is None:
            raise CalibrationError(
                "--endpoint needs --cores (the CPU the serving pod can use) or --machine-type"
            )
        cores = float(machine_type(machine).vcpus)
    elif machine is not None:
        machine_type(machine)
    jpeg = image or find_lab_image()
    if jpeg is None:
        raise CalibrationError(
            "the lab's image ../shared/data/grace_hopper.jpg is not here; pass --image JPEG"
        )
    run = EndpointRun(
        url=url.rstrip("/"),
        model=model,
        image=jpeg,
        cores=cores,
        version=version,
        machine_type=machine,
        name=name,
        command=command,
        timeout=timeout,
    )
    if family:
        run.family = family
    if concurrency:
        run.concurrency = _ints(concurrency, "--concurrency") or run.concurrency
    if batch:
        run.batch = _ints(batch, "--batch") or run.batch
    if seconds is not None:
        run.seconds = seconds
    if repeats is not None:
        run.repeats = repeats
    if min_requests is not None:
        run.min_requests = min_requests
    total = len(run.concurrency) * len(run.batch)
    with _progress(total, "endpoint") as progress:
        return run_endpoint(run, progress)


def _derive(
    source: Path,
    machine: str | None,
    observed_latency: float,
    overhead: float,
    smt_gain: float,
    name: str | None,
    family: str | None,
    command: str,
) -> dict[str, Any]:
    from sim.serving.calibrate.derive import derive
    from sim.serving.profile import load_profile

    local = load_profile(source)
    return derive(
        local,
        machine=machine or "e2-standard-4",
        observed_latency=observed_latency,
        overhead=overhead,
        smt_gain=smt_gain,
        name=name,
        family=family or "resnet101-tfserving",
        command=command,
        source=str(source),
    )


def register(app: typer.Typer) -> None:
    """Add ``calibrate`` to the scalelab command line."""
    app.command("calibrate", help=HELP, no_args_is_help=False)(calibrate)
