"""``scalelab calibrate``: the command; ``register(app)`` adds it to the scalelab CLI."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from sim.console import err, fail
from sim.serving.calibrate import CalibrationError

HELP = """Measure a model's throughput curves into a latency profile (sim/serving/profiles/).

For each thread count, closed-loop callers with no think time climb the concurrency ladder
1, 2, 3, 4, 6, 8, 12, ... to three steps past the knee (the first step that raises throughput by
no more than 3%); each point records throughput, the server's CPU in cores and the latency
quantiles. Three modes:

\b
  (default)           build ResNet101 with TensorFlow, export it like the lab's SavedModel and
                      measure it in process, one pinned worker per thread count
                      (pip install 'scalelab[calibrate]')
  --endpoint URL      drive a live TF Serving with the lab's request; CPU from --cpu-pid,
                      --cpu-cgroup or --cpu-pod (Kubernetes API), else assumed (all --cores busy)
  --derive-from FILE  turn a local measurement into a GKE node's profile
                      (sim/serving/calibrate/derive.py)

Examples:

\b
  scalelab calibrate --quick --out /tmp/quick.yaml
  scalelab calibrate --out sim/serving/profiles/resnet101-cpu-amd-epyc-genoa.yaml
  scalelab calibrate --endpoint http://localhost:8501 --model image_classifier \\
      --cores 4 --cpu-pid $(pgrep -f tensorflow_model_server) --out my-server.yaml
  scalelab calibrate --endpoint http://EXTERNAL_IP:8501 --machine-type e2-standard-4 \\
      --cpu-pod default/image-classifier-7d9f8-abcde --seconds 60 --out gke.yaml
  scalelab calibrate --derive-from sim/serving/profiles/resnet101-cpu-amd-epyc-genoa.yaml \\
      --machine-type e2-standard-4 \\
      --out sim/serving/profiles/resnet101-tfserving-gke-e2-standard-4.yaml
"""


_LOCAL, _ENDPOINT, _DERIVE = "Local measurement", "Live endpoint", "Derived node profile"
_LADDER = "Ladder and windows (local and endpoint)"


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
                f"X {p['throughput_rps']:.3g}/s, U {p['cpu_cores']:.2f} cores, "
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
            help="smaller run (threads 1 and all CPUs, batch 2 only, 1.5-3 s windows in 2 "
            "repeats, 20 s of re-measuring): about 2 minutes for ResNet101 on 2 cores",
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
    retry_seconds: Annotated[
        float | None,
        typer.Option(
            help="time to re-measure windows other processes disturbed [default: 120; --quick 20]",
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
    concurrency: Annotated[
        str | None,
        typer.Option(
            help="a fixed ladder instead of the knee search, e.g. 1,2,4 (must include 1) "
            "[default: 1,2,3,4,6,8,12,... to 3 steps past the knee]",
            rich_help_panel=_LADDER,
        ),
    ] = None,
    max_concurrency: Annotated[
        int | None,
        typer.Option(help="the ladder's top [default: 64]", rich_help_panel=_LADDER),
    ] = None,
    batch: Annotated[
        str | None,
        typer.Option(
            help="batch sizes > 1 to measure at concurrency 1, e.g. 2,4,8; 1 for none "
            "[default: 2,4,8; --quick 2; --endpoint none]",
            rich_help_panel=_LADDER,
        ),
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option(
            help="measuring window per point [default: 4; --quick 1.5; --endpoint 10]",
            rich_help_panel=_LADDER,
        ),
    ] = None,
    repeats: Annotated[
        int | None,
        typer.Option(
            help="sub-windows whose p50 and p95 must agree within 5%, else the window doubles "
            "[default: 3; --quick 2]",
            rich_help_panel=_LADDER,
        ),
    ] = None,
    min_requests: Annotated[
        int | None,
        typer.Option(
            help="requests per window at least [default: 10; --quick 4]", rich_help_panel=_LADDER
        ),
    ] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option(
            help="longest window per point [default: 12; --quick 3; --endpoint 40]",
            rich_help_panel=_LADDER,
        ),
    ] = None,
    idle_rounds: Annotated[
        int | None,
        typer.Option(
            help="rounds of lone requests after idle gaps of 0.01-0.9 s, about 6 s each "
            "with ResNet101 on 2 cores: what a request costs after the server idled; 0 for "
            "none [default: 6; --quick 4]",
            min=0,
            rich_help_panel=_LADDER,
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
    cpu_pid: Annotated[
        int | None,
        typer.Option(
            help="the server's process on this machine: its CPU from /proc/PID/stat",
            rich_help_panel=_ENDPOINT,
        ),
    ] = None,
    cpu_cgroup: Annotated[
        Path | None,
        typer.Option(
            help="the server's cgroup directory on this machine: its CPU from cpu.stat "
            "usage_usec (v2) or cpuacct.usage (v1) [default, without --cpu-pid: unmeasured, "
            "all --cores assumed busy]",
            rich_help_panel=_ENDPOINT,
        ),
    ] = None,
    cpu_pod: Annotated[
        str | None,
        typer.Option(
            help="NAMESPACE/POD serving the endpoint: its CPU through the Kubernetes API (the "
            "kubelet's counter through the node proxy, else metrics.k8s.io); windows must span "
            "4 of its resolutions (pip install 'scalelab[gke]')",
            rich_help_panel=_ENDPOINT,
        ),
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            help="--cpu-pod: kubeconfig [default: KUBECONFIG or ~/.kube/config]",
            rich_help_panel=_ENDPOINT,
        ),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(
            help="--cpu-pod: kubeconfig context [default: its current one]",
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
    force: Annotated[
        bool, typer.Option(help="replace an --out file that is not a scalelab profile")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
) -> None:
    """Measure a model's throughput curves into a latency profile (see --help)."""
    from sim.errors import UserError
    from sim.outputs import claim_file, publish_file

    try:
        if out is not None:  # before anything runs: calibrating takes minutes
            claim_file(out, "--out", "calibrate", is_profile_file, force=force)
    except UserError as error:
        fail(error, debug)
    try:
        if endpoint and derive_from:
            raise CalibrationError("--endpoint and --derive-from are different modes; pick one")
        sources = (cpu_pid, cpu_cgroup, cpu_pod, kubeconfig, context)
        if endpoint is None and any(v is not None for v in sources):
            raise CalibrationError(
                "--cpu-pid, --cpu-cgroup and --cpu-pod (with --kubeconfig, --context) name the "
                "CPU source of an --endpoint; a local calibration measures its own process"
            )
        command = _command_line(ctx)
        ladder = Ladder(
            concurrency=_ints(concurrency, "--concurrency"),
            max_concurrency=max_concurrency,
            batch=_ints(batch, "--batch"),
            seconds=seconds,
            repeats=repeats,
            min_requests=min_requests,
            max_seconds=max_seconds,
            idle_rounds=idle_rounds,
        )
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
                CpuOptions(cpu_pid, cpu_cgroup, cpu_pod, kubeconfig, context),
                machine_type,
                ladder,
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
                ladder,
                retry_seconds,
                image,
                export_dir,
                name,
                family,
                command,
            )
        from sim.serving.profile import dump_profile, profile_from_dict

        target = out or _free_default(Path(f"{data['name']}.yaml"))
        profile = profile_from_dict(data, str(target))  # invalid data: nothing written
        publish_file(target, lambda temp: dump_profile(profile, temp))
        for notice in data["provenance"].get("warnings") or []:
            err.print(
                f"[yellow]warning:[/yellow] {escape(notice)}", highlight=False, soft_wrap=True
            )
    except (CalibrationError, ValueError, OSError) as error:
        fail(error, debug)
    print(summary(target, data))


def is_profile_file(path: Path) -> bool:
    """A profile scalelab wrote: its YAML header, or JSON with a schema and a provenance."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if text.startswith("# scalelab latency profile"):
        return True
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and "schema" in data and "provenance" in data


def _free_default(path: Path) -> Path:
    """The default ``NAME.yaml``, or ``NAME-2.yaml``... when a file scalelab did not write
    holds the name (the measurement is not thrown away; the summary names the file)."""
    candidate, n = path, 1
    while candidate.exists() and not (candidate.is_file() and is_profile_file(candidate)):
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    if candidate != path:
        err.print(
            f"{path} exists and is not a scalelab profile: writing {candidate} instead",
            highlight=False,
            markup=False,
        )
    return candidate


@dataclass(frozen=True)
class CpuOptions:
    """The endpoint's CPU source options as given (None: not given)."""

    pid: int | None = None
    cgroup: Path | None = None
    pod: str | None = None
    kubeconfig: Path | None = None
    context: str | None = None


@dataclass(frozen=True)
class Ladder:
    """The ladder and window options common to the local and endpoint modes (None: default)."""

    concurrency: tuple[int, ...] | None = None
    max_concurrency: int | None = None
    batch: tuple[int, ...] | None = None
    seconds: float | None = None
    repeats: int | None = None
    min_requests: int | None = None
    max_seconds: float | None = None
    idle_rounds: int | None = None


def summary(target: Path, data: dict[str, Any]) -> str:
    """What was written and measured: per thread count, the ladder's throughput X and CPU U at
    each concurrency n, the knee, and batch > 1 at concurrency 1."""
    points = data["points"]
    lines = [f"wrote {target}: {data['name']} ({data['kind']}), {len(points)} points"]
    knees = {
        float(entry["threads"]): entry.get("knee")
        for entry in data["provenance"].get("ladders") or []
    }
    if "ladder" in data["provenance"]:
        knees[float(data["defaults"]["threads"])] = data["provenance"]["ladder"].get("knee")
    for threads in sorted({float(p["threads"]) for p in points}):
        mine = [p for p in points if float(p["threads"]) == threads]
        rungs = sorted((p for p in mine if p["batch"] == 1), key=lambda p: p["concurrency"])
        knee = knees.get(threads)
        head = f"  threads {threads:g}" + (f" (knee at n={knee})" if knee else "") + ":"
        lines.append(head)
        rows = {
            "n": [str(p["concurrency"]) for p in rungs],
            "X/s": [f"{p['throughput_rps']:.3g}" for p in rungs],
            "U": [f"{p['cpu_cores']:.2f}" for p in rungs],
            "p50 s": [f"{p['latency_s'][3]:.3g}" for p in rungs],
        }
        width = max(len(v) for values in rows.values() for v in values)
        for label, values in rows.items():
            lines.append(f"    {label:>5} " + " ".join(v.rjust(width) for v in values))
        batches = sorted((p for p in mine if p["batch"] > 1), key=lambda p: p["batch"])
        if batches:
            lines.append(
                "    batch at n=1: "
                + ", ".join(
                    f"{p['batch']}: X {p['throughput_rps']:.3g}/s U {p['cpu_cores']:.2f} "
                    f"p50 {p['latency_s'][3]:.3g} s"
                    for p in batches
                )
            )
    idle = data["defaults"].get("after_idle")
    for key, what in (("factor", "work"), ("cpu_factor", "CPU")):
        if idle and key in idle:
            pairs = zip(idle["gap_s"], idle[key], strict=True)
            lines.append(
                f"  after idle ({what} x back to back's): "
                + ", ".join(f"{g:g} s {f:.2f}" for g, f in pairs)
            )
    spread = data["defaults"].get("waiting_spread")
    if spread:
        pairs = zip(spread["in_flight"], spread["sigma"], strict=True)
        lines.append(
            "  spread past the inter-op width (fitted to the loops' p95/p50): "
            + ", ".join(f"{s:.3f} at {n}" for n, s in pairs)
        )
    cpu = (data["provenance"].get("method") or {}).get("cpu")
    if cpu:
        lines.append(f"  cpu: {cpu}")
    return "\n".join(lines)


def _local(
    quick: bool,
    arch: str,
    signature: str,
    threads: str | None,
    ladder: Ladder,
    retry_seconds: float | None,
    image: Path | None,
    export_dir: Path | None,
    name: str | None,
    family: str | None,
    command: str,
) -> dict[str, Any]:
    from sim.serving.calibrate.local import LocalRun, default_grid, grid_with, run_local, validate
    from sim.serving.calibrate.model import require_tensorflow

    grid = grid_with(
        default_grid(quick),
        threads=_ints(threads, "--threads"),
        concurrency=ladder.concurrency,
        batch=ladder.batch,
        seconds=ladder.seconds,
        repeats=ladder.repeats,
        min_requests=ladder.min_requests,
        max_seconds=ladder.max_seconds,
        retry_seconds=retry_seconds,
        max_concurrency=ladder.max_concurrency,
        idle_rounds=ladder.idle_rounds,
    )
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
    validate(run)
    require_tensorflow()  # fail before any work with the install hint
    with _progress(None, "calibrate") as progress:
        return run_local(run, progress)


def _endpoint(
    url: str,
    model: str,
    version: str | None,
    image: Path | None,
    cores: float | None,
    cpu: CpuOptions,
    machine: str | None,
    ladder: Ladder,
    timeout: float,
    name: str | None,
    family: str | None,
    command: str,
) -> dict[str, Any]:
    from sim.cluster.catalog import machine_type
    from sim.serving.calibrate.endpoint import EndpointRun, run_endpoint
    from sim.serving.calibrate.payload import find_lab_image

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
        cpu_pid=cpu.pid,
        cpu_cgroup=cpu.cgroup,
        cpu_pod=cpu.pod,
        kubeconfig=cpu.kubeconfig,
        kube_context=cpu.context,
    )
    if family:
        run.family = family
    if ladder.concurrency:
        run.concurrency = ladder.concurrency
    if ladder.max_concurrency is not None:
        run.max_concurrency = ladder.max_concurrency
    if ladder.batch:
        run.batch = tuple(sorted(b for b in ladder.batch if b != 1))
    if ladder.seconds is not None:
        run.seconds = ladder.seconds
        run.max_seconds = max(run.max_seconds, ladder.seconds)
    if ladder.repeats is not None:
        run.repeats = ladder.repeats
    if ladder.min_requests is not None:
        run.min_requests = ladder.min_requests
    if ladder.max_seconds is not None:
        run.max_seconds = max(ladder.max_seconds, run.seconds)
    if ladder.idle_rounds is not None:
        run.idle_rounds = ladder.idle_rounds
    with _progress(None, "endpoint") as progress:
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
