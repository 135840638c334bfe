"""``scalelab fidelity``: the simulator's serving model against a real model server, one run,
one machine.

Locally it serves ResNet101 as TF Serving would (``scalelab serve --model-path``, thread pools =
cores) and runs ``--repeat`` rounds of: a calibration pass in process (unless given
``--profile``; ``--through-api`` calibrates once through the REST API with the server process's
CPU instead), lone requests in process and through the REST API turn about (what the served
path adds) and the plateau both ways, and a ladder of real Locust users. Then it simulates the
same ladder with the passes pooled (:mod:`sim.serving.fidelity`): both sides average the machine
over the same minutes, and the simulated server gets, rung by rung, the cores the real one's
machine left it (Locust and the OS take some). The calibration's own closed loops are simulated
too (``closed_loops``): the serving model against the very measurements it was built from, an
error no harness or machine drift explains. ``--endpoint`` points it at any TF Serving instead.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cloud.errors import CloudError
from sim.console import fail
from sim.errors import UserError
from sim.outputs import claim, publish

DEFAULT_USERS = "1,2,4,8,12,16,24"


def _ints(text: str, label: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CloudError(f"{label} takes comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise CloudError(f"{label} takes integers >= 1, got {text!r}")
    return values


def _wait(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise CloudError(
            f"--wait takes LOW,HIGH seconds (Locust's between), got {text!r}"
        ) from None
    if not 0 <= low <= high:
        raise CloudError(f"--wait needs 0 <= LOW <= HIGH, got {text!r}")
    return low, high


def fidelity(
    profile: Annotated[
        Path | None,
        typer.Option(help="calibrated profile to check [default: calibrate here first]"),
    ] = None,
    saved_model: Annotated[
        Path | None,
        typer.Option(help="SavedModel base path to serve [default: export the profile's model]"),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="longer calibration windows instead of quick ones")
    ] = False,
    through_api: Annotated[
        bool,
        typer.Option(
            "--through-api",
            help="calibrate through the served model's REST API (with its process's CPU) "
            "instead of the SavedModel in process",
        ),
    ] = False,
    endpoint: Annotated[
        str | None, typer.Option(help="a running TF Serving REST API instead of a local one")
    ] = None,
    model: Annotated[str, typer.Option(help="served model name")] = "image_classifier",
    cores: Annotated[
        float | None, typer.Option(help="cores the server has [default: this machine's]")
    ] = None,
    cpu_pid: Annotated[
        int | None, typer.Option(help="--endpoint: read the server's CPU from this local PID")
    ] = None,
    cpu_cgroup: Annotated[
        Path | None, typer.Option(help="--endpoint: read the server's CPU from this cgroup")
    ] = None,
    cpu_pod: Annotated[
        str | None,
        typer.Option(
            help="--endpoint: read the server's CPU from this NAMESPACE/POD through the "
            "Kubernetes API (kubelet counter, else metrics.k8s.io); --seconds must span 4 of "
            "its resolutions and --settle its lag"
        ),
    ] = None,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="--cpu-pod: kubeconfig [default: KUBECONFIG or ~/.kube]")
    ] = None,
    context: Annotated[
        str | None, typer.Option(help="--cpu-pod: kubeconfig context [default: current]")
    ] = None,
    users: Annotated[str, typer.Option(help="the ladder's user counts")] = DEFAULT_USERS,
    seconds: Annotated[float, typer.Option(help="measured seconds per user count")] = 30.0,
    settle: Annotated[float, typer.Option(help="seconds discarded at each count's start")] = 5.0,
    wait: Annotated[str, typer.Option(help="Locust's between(LOW, HIGH) wait, s")] = "0.8,0.9",
    max_error_rps: Annotated[float, typer.Option(help="bound on req/s error, %")] = 5.0,
    max_error_latency: Annotated[float, typer.Option(help="bound on p50/p95 error, %")] = 15.0,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("out/fidelity"),
    seed: Annotated[int, typer.Option(help="seed of both sides' wait times")] = 1,
    repeat: Annotated[
        int,
        typer.Option(
            help="rounds, each a calibration pass (when calibrating here), the REST step and "
            "a real ladder; both sides pooled over them, the table and files show the real "
            "ladders' range, the real side's own run-to-run spread",
            min=1,
        ),
    ] = 1,
    lone_requests: Annotated[
        int,
        typer.Option(
            help="pairs of lone requests (in process, through the API, turn about, each "
            "after a wait) in each round's REST step and in the drift check after the ladders, "
            "after 2 a side to warm up",
            min=5,
        ),
    ] = 20,
    force: Annotated[
        bool, typer.Option(help="write into a non-empty --out that is not a scalelab output")
    ] = False,
    sim_seeds: Annotated[
        int, typer.Option(help="simulated ladders pooled (seeds seed, seed+1, ...)", min=1)
    ] = 8,
    discipline: Annotated[
        str, typer.Option(help="inter_op, fifo or ps: how requests in flight share X(c, n)")
    ] = "inter_op",
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
) -> None:
    """Real against simulated, per user count: req/s, p50, p95, p99 and server CPU (exit 1
    when an error exceeds its bound, 2 on bad input)."""
    from sim.serving import fidelity as fid
    from sim.serving.calibrate import CalibrationError
    from sim.serving.profile import ProfileError, dump_profile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the export's TensorFlow logs
    console = Console()
    try:
        ladder = fid.steps_for(_ints(users, "--users"), seconds, settle)
        waits = _wait(wait)
        if seconds <= 0 or settle < 0:
            raise CloudError(f"--seconds must be > 0 and --settle >= 0, got {seconds}, {settle}")
        sources = (cpu_pid, cpu_cgroup, cpu_pod)
        if endpoint is None and any(v is not None for v in sources):
            raise CloudError(
                "--cpu-pid, --cpu-cgroup and --cpu-pod read a server given by --endpoint"
            )
        if sum(v is not None for v in sources) > 1:
            raise CloudError("--cpu-pid, --cpu-cgroup and --cpu-pod are different CPU sources")
        if cpu_pod is None and (kubeconfig is not None or context is not None):
            raise CloudError("--kubeconfig and --context say where --cpu-pod's pod is")
        if saved_model is not None and profile is None and not through_api and endpoint is None:
            raise CloudError(
                "--saved-model needs --profile (one calibrated for that model) or --through-api "
                "(calibrate it through its REST API): the in-process calibration measures the "
                "ResNet101 it exports"
            )
        if endpoint is not None and profile is None:
            raise CloudError(
                "--endpoint needs --profile: calibrate that server first with "
                "`scalelab calibrate --endpoint URL --model NAME --out FILE`"
            )
        bounds = fid.Bounds(max_error_rps, max_error_latency)
        claim(out, "fidelity", force=force)
        if discipline not in ("inter_op", "fifo", "ps"):
            raise CloudError(f"--discipline must be inter_op, fifo or ps, got {discipline!r}")
        with tempfile.TemporaryDirectory(prefix="scalelab-fidelity-") as tmp:
            result = _measure(
                console,
                Path(tmp),
                ladder,
                waits,
                profile=profile,
                saved_model=saved_model,
                quick=not full,
                in_process=not through_api,
                endpoint=endpoint,
                model=model,
                cores=cores,
                cpu_pid=cpu_pid,
                cpu_cgroup=cpu_cgroup,
                cpu_pod=(cpu_pod, kubeconfig, context) if cpu_pod is not None else None,
                seed=seed,
                repeat=repeat,
                lone_requests=lone_requests,
                sim_seeds=sim_seeds,
                discipline=discipline,
                out=out,
            )
    except (UserError, CalibrationError, ProfileError, OSError) as error:
        fail(error, debug)
    rows, meta, calibrated = result
    meta["command"] = shlex.join(["scalelab", *sys.argv[1:]])
    meta["bounds_pct"] = {"throughput": max_error_rps, "p50_p95": max_error_latency}
    misses = bounds.misses(rows)
    meta["misses"] = [dataclasses.asdict(m) | {"text": str(m)} for m in misses]
    noise = bounds.misses_from_noise(rows)
    if noise is not None:
        meta["misses_from_noise"] = {"expected": round(noise[0], 2), "cells": noise[1]}

    def write(staging: Path) -> None:
        fid.write(staging, rows, meta)
        if calibrated is not None:
            dump_profile(calibrated, staging / "profile.yaml")

    files = publish(out, "fidelity", write)
    console.print(_table(rows))
    console.print(f"wrote {out}/: " + ", ".join(files))
    if noise is not None:
        console.print(
            "by the spread of the real ladders and the simulated seeds (each cell's standard "
            "error: noise_pct in fidelity.json), a model exactly right would miss about "
            f"{noise[0]:.1f} of these {noise[1]} cells; more --repeat narrows it"
        )
    if misses:
        for miss in misses:
            console.print(f"[red]outside the bound:[/red] {miss}")
        within = sum(1 for m in misses if m.inside)
        if within:
            console.print(
                f"within the simulated ladders' own range ({sim_seeds} seeds): {within} of "
                f"{len(misses)} misses; single {seconds:g} s rungs differ that much in the model "
                "too, and longer --seconds or more --repeat narrow both sides"
            )
        drift = meta.get("rest_overhead", {}).get("drift_pct")
        if drift is not None and abs(drift) > max_error_latency:
            console.print(
                f"[yellow]the lone request moved by {drift:+.0f}% over the run, beyond the "
                f"{max_error_latency:g}% bound: the machine's speed changed under the ladders, "
                "and errors of that size are the machine's; measure again with nothing else "
                "running[/yellow]"
            )
        raise typer.Exit(1)


def _pod_cpu(
    console: Console, pod: str, kubeconfig: Path | None, context: str | None, ladder: list[Any]
) -> Any:
    """``--cpu-pod``: the pod's CPU through the Kubernetes API, refused when the ladder's
    windows are too short for its resolution or its settle shorter than its lag (a window's
    first seconds would count the previous user count's CPU)."""
    from sim.serving.calibrate.podcpu import PodCpu, window_too_short

    console.print(f"reading {pod}'s CPU through the Kubernetes API (two samples first) ...")
    try:
        source = PodCpu(pod, kubeconfig, context)
    except UserError as error:
        raise CloudError(f"--cpu-pod {pod}: {error}") from None
    seconds, settle = min(s.seconds for s in ladder), min(s.settle for s in ladder)
    why = window_too_short(seconds, source.resolution_s, "--seconds")
    if why is None and settle < source.lag_s:
        why = (
            f"--settle {settle:g} is shorter than the source's lag ({source.lag_s:.3g} s: "
            "two resolutions, the samples' arrival jitter and a poll), so each window would start "
            f"with the previous user count's CPU; use --settle {source.lag_s:.3g} or more"
        )
    if why is not None:
        source.close()
        raise CloudError(f"--cpu-pod {pod}: {why}")
    console.print(f"CPU from {source.description}")
    return source


def _measure(
    console: Console,
    tmp: Path,
    ladder: list[Any],
    waits: tuple[float, float],
    *,
    profile: Path | None,
    saved_model: Path | None,
    quick: bool,
    in_process: bool,
    endpoint: str | None,
    model: str,
    cores: float | None,
    cpu_pid: int | None,
    cpu_cgroup: Path | None,
    cpu_pod: tuple[str, Path | None, str | None] | None,
    seed: int,
    repeat: int,
    lone_requests: int,
    sim_seeds: int,
    discipline: str,
    out: Path,
) -> tuple[list[Any], dict[str, Any], Any]:
    from cloud import ladder as real
    from cloud.load import lab_image, lab_request_body
    from sim.serving import fidelity as fid
    from sim.serving.calibrate import host
    from sim.serving.calibrate.cpu import CgroupCpu, OthersCpu, ProcessCpu
    from sim.serving.calibrate.local import ServedCopy, pool_passes
    from sim.serving.profile import load_profile, profile_from_dict

    body = lab_request_body(lab_image(None))
    meta: dict[str, Any] = {"cpu": host.cpu_info(), "seed": seed, "wait_s": list(waits)}

    def one_ladder(url: str, cpu: Any, k: int, others: Any = None) -> Any:
        """The k-th real ladder (seed + k)."""
        return real.run_ladder(
            url,
            model,
            ladder,
            wait=waits,
            body=body,
            cpu=cpu,
            others=others,
            seed=seed + k,
            workdir=tmp / str(k),
        )

    began = time.perf_counter()
    calibrated: Any
    if endpoint is not None:
        assert profile is not None
        calibrated = load_profile(profile)
        have = cores or calibrated.default_threads
        cpu: Any = None
        if cpu_pid is not None:
            cpu = ProcessCpu(cpu_pid)
        elif cpu_cgroup is not None:
            cpu = CgroupCpu(cpu_cgroup)
        real.check_endpoint(endpoint, model, "1", body, 30.0)
        if cpu_pod is not None:
            cpu = _pod_cpu(console, *cpu_pod, ladder)
        try:
            console.print(f"driving {endpoint} with the ladder {[s.users for s in ladder]}")
            measured = [one_ladder(endpoint, cpu, k) for k in range(repeat)]
        finally:
            if cpu_pod is not None:
                cpu.close()
        own = calibrated
        meta["server"] = {"endpoint": endpoint, "model": model, "cores": have}
        if cpu is not None:
            meta["server"]["cpu"] = cpu.description
            if cpu_pod is not None:
                meta["server"]["cpu_source"] = cpu.provenance()
    else:
        have = cores or float(len(host.usable_cpus()))
        threads = max(1, round(have))
        calibrated = load_profile(profile) if profile is not None else None
        here = calibrated is None and in_process
        if saved_model is None:
            from sim.serving.calibrate.model import export

            console.print("exporting ResNet101 as the lab lays it out ...")
            saved_model = export("resnet101", tmp / "model")
        console.print(f"serving {saved_model} with {threads} threads")
        with (
            real.start_local_server(_base(saved_model), model, threads) as server,
            ServedCopy(_version(saved_model), threads, lab_image(None), tmp / "served.log") as copy,
        ):
            real.check_endpoint(server.url, model, "1", body, 60.0)
            # a profile measured in process has no REST path; one calibrated through the API has
            rest_step = here or (profile is not None and calibrated.kind == "measured")
            if calibrated is None and not here:
                calibrated = _calibrate_endpoint(console, server, model, have, quick)
            passes: list[dict[str, Any]] = []
            rest: list[list[dict[str, float]]] = []

            def served_copy(lone_seed: int, in_flight: int = 0) -> dict[str, Any]:
                """Lone pairs, then the plateau pairs and the tails when ``in_flight`` > 0."""
                return _served_copy(
                    console,
                    copy,
                    {"url": server.url, "model": model, "server_pid": server.pid},
                    waits=waits,
                    lone=lone_requests,
                    seed=lone_seed,
                    concurrency=in_flight,
                    tail=_tail_callers(have, discipline, in_flight),
                    cores=have,
                    quick=quick,
                )

            plateaus: list[list[dict[str, float]]] = []
            tails: list[list[dict[str, Any]]] = []
            measured = []

            def calibration_pass() -> None:
                """One of the repeat + 1 passes; later ones measure the first's ladder."""
                fixed = _ladder_of(passes[0]) if passes else None
                passes.append(_calibrate(console, tmp, quick, threads, repeat + 1, fixed))

            for k in range(repeat):
                if repeat > 1:
                    console.print(f"[bold]round {k + 1} of {repeat}[/bold]")
                if here:
                    calibration_pass()
                    inside_of = profile_from_dict(passes[-1], "calibrated here")
                else:
                    inside_of = calibrated  # the in-process profile the REST step compares with
                if rest_step:
                    found = served_copy(seed + k, _in_flight(inside_of, have, threads))
                    rest.append(found["lone"])
                    plateaus.append(found["pairs"])
                    tails.append(found["tail"])
                console.print(f"driving it with real Locust users: {[s.users for s in ladder]}")
                served = ProcessCpu(server.pid)
                measured.append(one_ladder(server.url, served, k, OthersCpu(served)))
            if here:
                # a closing pass: each ladder lies between two passes, so the passes' trapezoid
                # weights average a machine that drifts steadily over the ladders' minutes
                console.print("[bold]after the last ladder[/bold]")
                calibration_pass()
                weights = [0.5] + [1.0] * (repeat - 1) + [0.5]
                calibrated = profile_from_dict(pool_passes(passes, weights), "calibrated here")
            own = calibrated  # as measured: the closed loops below are its own
            if plateaus:
                meta["served_plateau"] = figures = _plateau_figures(console, plateaus, have, quick)
                calibrated = dataclasses.replace(calibrated, served_plateau=figures["ratio"])
            if rest:
                calibrated, meta["rest_overhead"] = _rest_overhead(console, calibrated, rest)
                after = served_copy(0)
                meta["rest_overhead"] |= _drift(console, rest[0], after["lone"])
                meta["rest_overhead"] |= _since_calibration(console, own, have, waits, rest[0])
            if tails and tails[0]:  # none without a width to fit past
                calibrated, meta["waiting_spread"] = _waiting_spread(
                    console, calibrated, have, tails, quick
                )
        if profile is None:
            meta["profile_file"] = str(out / "profile.yaml")
        meta["server"] = {"saved_model": str(saved_model), "threads": threads, "cores": have}
    others = _others(console, fid.pooled(measured), have)
    simulated = [
        fid.simulate_ladder(
            calibrated,
            have,
            ladder,
            wait=waits,
            seed=seed + k,
            discipline=discipline,
            others=others,
        )
        for k in range(sim_seeds)
    ]
    console.print("simulating the calibration's own closed loops ...")
    closed = fid.closed_loops(own, have, seed=seed, discipline=discipline)
    console.print(_closed_table(closed))
    meta["closed_loops"] = [dataclasses.asdict(c) for c in closed]
    meta["real"] = {
        "ladders": repeat,
        "seeds": [seed + k for k in range(repeat)],
        "others_cores": None if others is None else [round(v, 4) for v in others],
    }
    meta["simulated"] = {"seeds": sim_seeds, "discipline": discipline}
    meta["profile"] = calibrated.name
    meta["elapsed_s"] = round(time.perf_counter() - began, 1)
    return fid.compare(measured, simulated), meta, None if profile is not None else calibrated


def _others(console: Console, rungs: list[Any], cores: float) -> list[float] | None:
    """Per rung, the cores the server's machine gave to other processes (Locust, this one, the
    OS), from the real ladders, pooled: a local server shares the machine with its load, a
    remote one (``--endpoint``) does not, or its machine is not measured (None)."""
    if any(r.others_cores is None for r in rungs):
        return None
    others = [max(0.0, r.others_cores) for r in rungs]
    console.print(
        f"other processes used {min(others):.3f}-{max(others):.3f} of this machine's "
        f"{cores:g} cores during the ladders (Locust, the OS); the simulated server gets the "
        "rest, rung by rung"
    )
    return others


PLATEAU_CALLERS = 12
"""Closed-loop callers of the served side of :func:`_served_copy`: past the REST handlers
(4 x cores - 1 on this 2-core machine), so requests queue at the REST pool as in a saturated
Locust rung."""
SERVED_PAIRS = {True: (4, 3.0), False: (6, 5.0)}
"""Pairs and each window's seconds, by --full or not."""
TAIL_SECONDS = {True: 5.0, False: 15.0}
"""Each served tail's window (:func:`sim.serving.calibrate.worker.served_tail`) a round, by
--full or not: about 40 and 130 requests here."""


def _tail_callers(cores: float, discipline: str, in_flight: int) -> list[int]:
    """The served tails' closed loops: at the REST handlers (``in_flight``) and halfway from
    the inter-op width to them (:func:`sim.serving.fidelity.tail_counts`); none for other
    disciplines (the model fits past inter-op widths only) or with none in flight."""
    from sim.serving import fidelity as fid

    if discipline != "inter_op":
        return []
    return fid.tail_counts(cores, range(1, in_flight + 1))


def _served_copy(
    console: Console,
    copy: Any,
    server: dict[str, Any],
    *,
    waits: tuple[float, float],
    lone: int,
    seed: int,
    concurrency: int,
    tail: list[int],
    cores: float,
    quick: bool,
) -> dict[str, Any]:
    """The SavedModel in a worker (``copy``, a :class:`ServedCopy`) against the served copy
    (``server``: url, model, server_pid), turn about: ``lone`` pairs of lone requests, one in
    process and one through the API (what the served path adds to a lone request), then, when
    ``concurrency`` > 0, the plateau in process (that many callers: see :func:`_in_flight`)
    against through the API (:data:`PLATEAU_CALLERS` keep-alive callers, no think time), window
    after window: how much of the in-process plateau survives the served path (HTTP, JSON,
    base64 on the server's CPU); then ``tail``'s counts of callers through the API alone, the
    served tails (see :func:`_waiting_spread`)."""
    pairs, seconds = SERVED_PAIRS[quick] if concurrency > 0 else (0, 0.0)
    console.print(
        f"lone requests in process and through the API, turn about: {lone} pairs"
        + (
            f"; then the plateau both ways: {pairs} pairs of {seconds:g} s windows"
            + (
                f"; then {' and '.join(map(str, tail))} callers through the API for "
                f"{TAIL_SECONDS[quick]:g} s each (the tails)"
                if tail
                else ""
            )
            if pairs
            else ""
        )
        + " ..."
    )
    served = {
        **server,
        "lone": lone,
        "waits": list(waits),
        "seed": seed,
        "concurrency": concurrency,
        "callers": PLATEAU_CALLERS,
        "seconds": seconds,
        "pairs": pairs,
        "tail_callers": tail,
        "tail_seconds": TAIL_SECONDS[quick],
    }
    found = copy.measure(served)
    rest, inside = _medians(found["lone"])
    console.print(
        f"REST path: lone request {rest * 1000:.1f} ms through the API, {inside * 1000:.1f} ms "
        "in process"
    )
    if found["pairs"]:
        console.print(
            "plateau through the API over in process, per pair: "
            + ", ".join(f"{_ratio(p, cores):.3f}" for p in found["pairs"])
        )
    return found


def _medians(lone: list[dict[str, float]]) -> tuple[float, float]:
    """Lone pairs' median through the API and in process."""
    return (
        statistics.median(p["rest_s"] for p in lone),
        statistics.median(p["in_process_s"] for p in lone),
    )


def _ratio(pair: dict[str, float], cores: float) -> float:
    """A pair's plateau through the API over its plateau in process, the API side credited
    with the cores its callers took (``client_cpu_cores``, in this process): the real ladders'
    load generator is their ``others_cores``, which the simulated server already gives up (a
    plateau in proportion to its cores, as the profile's ``threads_below`` rule), so counting
    the callers' share here too would take it twice (2.5% with s16 a's 0.05 cores of 2)."""
    return pair["rest_rps"] / pair["in_process_rps"] * cores / (cores - pair["client_cpu_cores"])


def _in_flight(profile: Any, cores: float, threads: int) -> int:
    """Requests the served copy runs at once at its plateau: its REST handlers (4 x threads
    less the event loop's), or the top of the profile's ladder when that is lower. The pairs'
    in-process side runs that many, so both sides have the same requests in Session::Run."""
    from sim.scenario import Serving
    from sim.serving.model import rest_handlers_of

    return int(min(max(profile.concurrency(cores)), rest_handlers_of(Serving(), threads)))


def _plateau_figures(
    console: Console, rounds: list[list[dict[str, float]]], cores: float, quick: bool
) -> dict[str, Any]:
    """The served plateau over the in-process one, the mean of every round's pairs' ratios
    (each pair's two windows seconds apart, so the machine's drift cancels): the profile's
    ``served_plateau`` (the profile measured the model in process; the real ladders go through
    the REST API). Also the served path's CPU a request, where both sides' CPU was read: the
    API side's server CPU per request less the in-process side's."""
    pairs = [p for found in rounds for p in found]
    ratios = [_ratio(p, cores) for p in pairs]
    ratio = statistics.fmean(ratios)
    error = statistics.stdev(ratios) / math.sqrt(len(ratios)) if len(ratios) > 1 else None
    console.print(
        f"served plateau {100 * (ratio - 1):+.1f}% against the one in process (mean of "
        f"{len(ratios)} pairs"
        + ("" if error is None else f", standard error {100 * error:.1f}%")
        + ")"
    )
    figures: dict[str, Any] = {
        "callers": PLATEAU_CALLERS,
        "pairs_a_round": SERVED_PAIRS[quick][0],
        "seconds": SERVED_PAIRS[quick][1],
        "rounds": rounds,
        "ratio": ratio,
        "ratio_standard_error": error,
    }
    costs = [
        p["rest_cpu_cores"] / p["rest_rps"] - p["in_process_cpu_cores"] / p["in_process_rps"]
        for p in pairs
        if "rest_cpu_cores" in p and "in_process_cpu_cores" in p
    ]
    if costs:
        figures["served_cpu_s"] = statistics.fmean(costs)
    return figures


def _waiting_spread(
    console: Console,
    profile: Any,
    cores: float,
    tails: list[list[dict[str, Any]]],
    quick: bool,
) -> tuple[Any, dict[str, Any]]:
    """The work's spread past the inter-op width, fitted to the served tails (per count of
    callers, every round's latencies pooled): the profile's ``waiting_spread``."""
    from sim.serving import fidelity as fid

    pooled: dict[int, list[float]] = {}
    for found in tails:
        for t in found:
            pooled.setdefault(t["callers"], []).extend(t["latencies_s"])
    ratios = {n: fid.served_ratio(v) for n, v in sorted(pooled.items())}
    held = profile.spreads(cores, fid.inter_op_width(cores) + 1)[-1]
    fitted = fid.fit_waiting_spread(profile, cores, list(ratios.items()))
    console.print(
        "served tails through the API, p95/p50: "
        + ", ".join(f"{ratios[n]:.2f} at {n} callers ({len(pooled[n])} requests)" for n in ratios)
        + "; the work's spread past the inter-op width fitted to them: "
        + ", ".join(f"{sigma:.3f} at {n}" for n, sigma in fitted)
        + f" (the one measured at the width: {held:.3f})"
    )
    figures = {
        "seconds": TAIL_SECONDS[quick],
        "held_sigma": held,
        "points": [
            {"callers": n, "requests": len(pooled[n]), "ratio": ratios[n], "sigma": sigma}
            for n, sigma in fitted
        ],
        "rounds": [
            [
                {
                    "callers": t["callers"],
                    "throughput_rps": t["throughput_rps"],
                    "ratio": fid.served_ratio(t["latencies_s"]),
                    "latencies_s": t["latencies_s"],
                }
                for t in found
            ]
            for found in tails
        ],
    }
    return dataclasses.replace(profile, waiting_spread=fitted), figures


def _version(saved: Path) -> Path:
    """The SavedModel directory itself: ``saved`` or, for a TF Serving base path, its highest
    numbered version (as TF Serving serves by default)."""
    if (saved / "saved_model.pb").exists():
        return saved
    versions = [v for v in saved.iterdir() if v.name.isdigit() and v.is_dir()]
    if not versions:
        raise CloudError(f"{saved}: no saved_model.pb and no numbered version in it")
    return max(versions, key=lambda v: int(v.name))


def _rest_overhead(
    console: Console, profile: Any, rounds: list[list[dict[str, float]]]
) -> tuple[Any, dict[str, Any]]:
    """An in-process profile has no REST: what the REST path adds to a lone request is each
    round's median through the API less its median in process, the two read turn about
    (:func:`_served_copy`), averaged over the rounds; it is carried as the profile's
    ``overhead_s``, and the spread of the API requests' server part as its ``served_sigma``
    (assumption: the served path's variability is the server's work, HTTP and JSON on its
    threads, so it queues like work)."""
    from sim.serving.fidelity import served_spread

    medians = [_medians(lone) for lone in rounds]
    # a round may read the API faster than in process (noise): clamping each round at 0 before
    # averaging would bias the mean up, so only the mean is kept at 0 or more
    overheads = [rest - inside for rest, inside in medians]
    overhead = max(0.0, sum(overheads) / len(overheads))
    parts = [
        p["rest_s"] - max(0.0, o) - profile.overhead_s
        for lone, o in zip(rounds, overheads, strict=True)
        for p in lone
    ]
    served = served_spread(parts)
    every = [p for lone in rounds for p in lone]
    lone_rest, lone_inside = _medians(every)
    console.print(
        f"REST path adds {overhead * 1000:.1f} ms to a lone request "
        f"({len(rounds)} round{'s' if len(rounds) > 1 else ''}); served spread sigma "
        f"{served:.3f} (in process {profile.sigma(profile.default_threads):.3f})"
    )
    figures = {
        "lone_rest_s": lone_rest,
        "lone_in_process_s": lone_inside,
        "overhead_s": overhead,
        "served_sigma": served,
        "rounds": [{"lone_rest_s": r, "lone_in_process_s": i} for r, i in medians],
        # to re-derive either figure
        "lone_rest_times_s": [round(p["rest_s"], 6) for p in every],
        "lone_in_process_times_s": [round(p["in_process_s"], 6) for p in every],
    }
    changed = dataclasses.replace(
        profile, overhead_s=profile.overhead_s + overhead, served_sigma=served
    )
    return changed, figures


def _drift(
    console: Console, first: list[dict[str, float]], after: list[dict[str, float]]
) -> dict[str, Any]:
    """The first round's lone pairs against the same measured after the closing pass: how far
    the machine's speed moved over the run, through the API and in process. The model is
    calibrated before each ladder, but a machine that moved within a ladder shows here, and at
    light load an error of about this size is the machine's, not the model's (on this VM the
    lone request moved by up to 13% within minutes)."""
    (rest0, inside0), (rest, inside) = _medians(first), _medians(after)
    change = 100 * (rest - rest0) / rest0
    inside_change = 100 * (inside - inside0) / inside0
    console.print(
        f"lone request after the ladders: {rest * 1000:.1f} ms through the API, "
        f"{change:+.1f}% against the first round's, {inside_change:+.1f}% in process (the "
        "machine's own drift over the run)"
    )
    return {
        "lone_rest_after_s": rest,
        "lone_in_process_after_s": inside,
        "drift_pct": change,
        "in_process_drift_pct": inside_change,
    }


def _since_calibration(
    console: Console, profile: Any, cores: float, waits: tuple[float, float], first: Any
) -> dict[str, float]:
    """The profile's lone request (in process, after the wait's mean idle) against the first
    REST step's in process, in % of the latter: how far the machine moved between the
    calibration and the ladders, which the model cannot know (CI's guard once calibrated at a
    lone 237 ms and met the ladders at 142)."""
    q50 = profile.quantiles.index(0.5)
    calibrated = float(profile.latency(cores, 1)[q50]) * profile.idle_factor(sum(waits) / 2)
    _, inside = _medians(first)
    moved = 100 * (calibrated - inside) / inside
    console.print(
        f"the calibration's lone request: {calibrated * 1000:.1f} ms in process, {moved:+.1f}% "
        "against the first REST step's"
    )
    return {"lone_calibrated_s": calibrated, "since_calibration_pct": moved}


def _base(saved: Path) -> Path:
    """TF Serving's base path: the folder holding numbered versions."""
    return saved.parent if saved.name.isdigit() else saved


def _calibrate_endpoint(
    console: Console, server: Any, model: str, cores: float, quick: bool
) -> Any:
    """The served model's own ladder, through its REST API, with the server's CPU from its
    process: the system the prediction is about, HTTP and JSON included."""
    from cloud.load import lab_image
    from sim.serving.calibrate.endpoint import EndpointRun, run_endpoint
    from sim.serving.profile import profile_from_dict

    console.print(f"calibrating the served model through {server.url} ...")
    seconds, max_seconds = (4.0, 12.0) if quick else (10.0, 40.0)
    run = EndpointRun(
        url=server.url,
        model=model,
        image=lab_image(None),
        cores=cores,
        seconds=seconds,
        max_seconds=max_seconds,
        cpu_pid=server.pid,
        family="resnet101-served",
        name="resnet101-served-here",
        command="scalelab fidelity (calibration step, --endpoint with --cpu-pid)",
    )
    return profile_from_dict(run_endpoint(run), "calibrated here")


def _ladder_of(data: dict[str, Any]) -> list[int]:
    """The batch-1 concurrencies a calibration measured (a later pass measures the same)."""
    return sorted(p["concurrency"] for p in data["points"] if p["batch"] == 1)


def _calibrate(
    console: Console,
    tmp: Path,
    quick: bool,
    threads: int,
    passes: int,
    concurrency: list[int] | None,
) -> dict[str, Any]:
    """One in-process pass of the served thread count's ladder, batch 1 only (the real ladder
    neither batches nor runs other thread counts), with windows twice the default's shared
    among the ``passes`` (the rounds' and the closing one): the time the other ladders and
    batches would take goes to the steps that matter. Near the knee a step's throughput
    decides closed-loop latency about five times over. ``concurrency``: the first pass's
    ladder, measured again as it is."""
    from sim.serving.calibrate.local import LocalRun, default_grid, grid_with, run_local

    base = default_grid(quick=quick)
    grid = grid_with(
        base,
        threads=[threads],
        concurrency=concurrency,
        seconds=2 * base.seconds / passes,
        max_seconds=2 * base.max_seconds / passes,
        idle_rounds=max(1, round(2 * base.idle_rounds / passes)),
    )
    grid = dataclasses.replace(grid, batch=())
    console.print(
        f"calibrating ResNet101 here ({'--quick' if quick else 'full'}: {threads} threads, "
        f"{grid.seconds:.3g} s windows) ..."
    )
    run = LocalRun(
        grid=grid, export_dir=tmp / "model", command="scalelab fidelity (calibration step)"
    )
    return run_local(run)


def _closed_table(loops: list[Any]) -> Table:
    table = Table(
        title="the model against its own calibration: n callers, no think time, no REST "
        "(error % of measured)"
    )
    for label in ("n", "req/s", "p50 s", "p95 s", "p95/p50"):
        table.add_column(label, justify="right")
    for c in loops:
        cells = [str(c.n)]
        for metric in ("throughput_rps", "p50", "p95"):
            m, s, e = c.measured[metric], c.simulated[metric], c.error(metric)
            cells.append(f"{m:.3g} / -" if s is None else f"{m:.3g} / {s:.3g} ({e:+.0f}%)")
        s50, s95 = c.simulated["p50"], c.simulated["p95"]
        ratio = "-" if s50 is None or s95 is None else f"{s95 / s50:.2f}"
        cells.append(f"{c.measured['p95'] / c.measured['p50']:.2f} / {ratio}")
        table.add_row(*cells)
    return table


def _table(rows: list[Any]) -> Table:
    table = Table(title="real against simulated (error % of real)")
    table.add_column("users", justify="right")
    for label in ("req/s", "p50 s", "p95 s", "p99 s", "CPU cores"):
        table.add_column(label, justify="right")
    for row in rows:
        cells = [str(row.users)]
        for metric in ("throughput_rps", "p50", "p95", "p99", "cpu_cores"):
            r, s, e = row.real.get(metric), row.simulated.get(metric), row.error(metric)
            if r is None or s is None:
                cells.append("-")
                continue
            error = "" if e is None else f" ({e:+.0f}%)"
            spread = row.spread(metric)
            within = "" if spread is None else f"\n(real range {spread:.0f}%)"
            cells.append(f"{r:.3g} / {s:.3g}{error}{within}")
        table.add_row(*cells)
    return table


def register(app: typer.Typer) -> None:
    app.command(help=fidelity.__doc__)(fidelity)
