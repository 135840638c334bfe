"""Local calibration: export the model, measure its throughput curves, assemble the profile.

One worker process per thread count (:mod:`sim.serving.calibrate.worker`), run one after another
so they never compete for the CPU; each climbs its batch-1 concurrency ladder to past the knee
(:mod:`sim.serving.calibrate.ladder`) and measures batch > 1 at concurrency 1.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.serving.calibrate import CalibrationError, host, ladder
from sim.serving.calibrate.idle import factors
from sim.serving.calibrate.model import ARCHS, export, require_tensorflow, synthetic_jpeg
from sim.serving.calibrate.payload import LAB_SIGNATURE, find_lab_image, payload_info
from sim.serving.calibrate.worker import MARK, METHOD, SPREAD_TOLERANCE, spread_notices
from sim.serving.profile import DEFAULT_QUANTILES, SCHEMA_VERSION, profile_from_dict

SIGNATURES = ("serving_preprocess", "serving_default")
QUIET_CORES = 0.25
"""More CPU than this used by other processes during a run makes it a noisy measurement."""


@dataclass(frozen=True)
class Grid:
    """What to measure and for how long (per point)."""

    threads: tuple[int, ...]
    concurrency: tuple[int, ...] | None
    """A fixed batch-1 ladder, or None: climb the ladder to past the knee (ladder.py)."""
    batch: tuple[int, ...]
    """Batch sizes > 1, each measured at concurrency 1."""
    seconds: float
    repeats: int
    min_requests: int
    max_seconds: float
    retry_seconds: float = 0.0
    """Time all workers together may spend re-measuring windows other processes disturbed."""
    max_concurrency: int = ladder.MAX_CONCURRENCY
    idle_rounds: int = 6
    """Rounds of :func:`sim.serving.calibrate.idle.after_idle` at the default thread count (0:
    none); each takes about 6 s with ResNet101 on 2 cores."""


def default_grid(quick: bool, cpus: int | None = None) -> Grid:
    """Full: threads 1, 2, 4, ... up to the usable CPUs (and them), each thread count's ladder
    to 3 steps past its knee, batch 2, 4, 8 at concurrency 1, 4 s windows in 3 repeats extended
    up to 12 s, up to 120 s of re-measuring disturbed windows; ``quick``: threads 1 and all
    CPUs, batch 2, 1.5 s windows in 2 repeats extended up to 3 s, 20 s of re-measuring. For
    ResNet101 on 2 cores they take about 4-7 and 1.5-2 minutes, with the after-idle cost
    measured in 6 and 4 rounds (36 and 24 s)."""
    cpus = cpus or len(host.usable_cpus())
    if quick:
        return Grid(tuple(sorted({1, cpus})), None, (2,), 1.5, 2, 4, 3.0, 20.0, idle_rounds=4)
    threads = {1, cpus}
    t = 2
    while t < cpus:
        threads.add(t)
        t *= 2
    return Grid(tuple(sorted(threads)), None, (2, 4, 8), 4.0, 3, 10, 12.0, 120.0)


@dataclass
class LocalRun:
    """A local calibration's inputs."""

    arch: str = "resnet101"
    grid: Grid = field(default_factory=lambda: default_grid(quick=False))
    signature: str = LAB_SIGNATURE
    image: Path | None = None
    export_dir: Path | None = None
    name: str | None = None
    family: str | None = None
    command: str = ""


Progress = Callable[[str, dict[str, Any]], None]
"""Called with ("export" | "loaded" | "point", fields) as the run goes."""


def validate(run: LocalRun) -> None:
    """A :class:`CalibrationError` for options that cannot make a profile."""
    if run.arch not in ARCHS:
        raise CalibrationError(f"--model-arch must be one of {', '.join(ARCHS)}, got {run.arch!r}")
    if run.signature not in SIGNATURES:
        raise CalibrationError(
            f"--signature must be one of {', '.join(SIGNATURES)}, got {run.signature!r}"
        )
    grid = run.grid
    for label, values in (
        ("--threads", grid.threads),
        ("--concurrency", grid.concurrency or (1,)),
        ("--batch", grid.batch or (2,)),
    ):
        if not values or any(v < 1 for v in values) or len(set(values)) != len(values):
            raise CalibrationError(f"{label} must list distinct integers >= 1, got {values}")
    if grid.concurrency is not None and 1 not in grid.concurrency:
        raise CalibrationError(
            f"--concurrency must include 1 (every thread count's ladder starts with a lone "
            f"request), got {','.join(map(str, grid.concurrency))}"
        )
    if grid.max_concurrency < 1:
        raise CalibrationError(f"--max-concurrency must be >= 1, got {grid.max_concurrency}")
    if grid.idle_rounds < 0:
        raise CalibrationError(f"--idle-rounds must be >= 0, got {grid.idle_rounds}")
    if grid.retry_seconds < 0:
        raise CalibrationError(f"--retry-seconds must be >= 0, got {grid.retry_seconds}")
    if grid.seconds <= 0 or grid.max_seconds < grid.seconds or grid.repeats < 1:
        raise CalibrationError(
            "--seconds must be > 0, --max-seconds >= --seconds and --repeats >= 1"
        )
    if run.image is not None and not run.image.is_file():
        raise CalibrationError(f"--image {run.image}: no such file")


def _environment() -> dict[str, str]:
    """A worker's environment: TensorFlow quiet, this checkout importable."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def _command(config: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "sim.serving.calibrate.worker", json.dumps(config)]


def _records(lines: Any) -> Any:
    """(event, record) for each ``MARK`` line a worker prints."""
    for line in lines:
        if line.startswith(MARK):
            record = json.loads(line[len(MARK) :])
            yield record.pop("event"), record


def _failed(config: dict[str, Any], code: int | None, log: Path) -> CalibrationError:
    tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
    return CalibrationError(
        f"the measuring process for threads={config['threads']} failed (exit {code}):\n{tail}"
    )


def _worker(
    config: dict[str, Any], progress: Progress, log: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run one worker; return its 'loaded' record (with its ladder and knee) and points."""
    loaded: dict[str, Any] = {}
    points: list[dict[str, Any]] = []
    finished = False
    with log.open("w") as errors:
        proc = subprocess.Popen(
            _command(config),
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=_environment(),
        )
        assert proc.stdout is not None
        try:
            for event, record in _records(proc.stdout):
                if event == "loaded":
                    loaded = record
                elif event == "done":
                    finished = True
                    loaded["background_cpu_cores"] = record.get("background_cpu_cores")
                    loaded["ladder"] = record.get("ladder")
                    loaded["knee"] = record.get("knee")
                elif event == "point":
                    points.append(record["point"])
                elif event == "after_idle":
                    loaded["after_idle"] = record
                progress(event, record)
        finally:
            code = proc.wait()
    if code != 0 or not finished:
        raise _failed(config, code, log)
    return loaded, points


class ServedCopy:
    """The SavedModel loaded once in a worker, measured against a served copy as often as asked
    (:meth:`measure`), so that a check after the ladders costs no second TensorFlow start. The
    worker starts at the first :meth:`measure` (not while a calibration pass runs) and idles in
    between, blocked on its stdin. Use as a context manager: leaving it closes that stdin, and
    the worker exits."""

    def __init__(self, saved_model: Path, threads: int, image: Path, log: Path) -> None:
        self.config = {
            "saved_model": str(saved_model),
            "signature": LAB_SIGNATURE,
            "threads": threads,
            "image": str(image),
            "served": True,
            "idle_seconds": 0.2,  # the pairs do not use the worker's idle CPU
        }
        self.log = log
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        with self.log.open("w") as errors:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                _command(self.config),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                env=_environment(),
            )
        assert proc.stdout is not None
        self._events = _records(proc.stdout)
        return proc

    def measure(self, served: dict[str, Any]) -> dict[str, Any]:
        """``served``: url, model, server_pid; lone, waits, seed for
        :func:`sim.serving.calibrate.worker.lone_pairs`; concurrency, callers, seconds, pairs
        for :func:`sim.serving.calibrate.worker.served_pairs`; tail_callers (a list of counts),
        tail_seconds for :func:`sim.serving.calibrate.worker.served_tail`. Returns ``lone``,
        ``pairs`` and ``tail`` (one window a count), each empty when not asked for."""
        if self.proc is None:
            self.proc = self._start()
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(served) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the worker is gone: its events end below, and its log says why
        for event, record in self._events:
            if event == "done":
                return {k: record[k] for k in ("lone", "pairs", "tail")}
        raise _failed(self.config, self.proc.wait(), self.log)

    def __enter__(self) -> ServedCopy:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_local(run: LocalRun, progress: Progress | None = None) -> dict[str, Any]:
    """Export, measure and return the profile mapping (validated, not yet written)."""
    validate(run)
    report: Progress = progress or (lambda event, fields: None)
    began = time.perf_counter()
    tf = require_tensorflow()
    info = host.cpu_info()
    grid = run.grid
    with tempfile.TemporaryDirectory(prefix="scalelab-calibrate-") as tmp:
        scratch = Path(tmp)
        if run.image is not None:
            jpeg, source = run.image.read_bytes(), str(run.image)
        elif (lab := find_lab_image()) is not None:
            jpeg, source = lab.read_bytes(), f"{lab.name} (the lab's image)"
        else:
            jpeg, source = synthetic_jpeg(), "synthetic 512x600 JPEG (the lab's image not found)"
        image = scratch / "payload.jpg"
        image.write_bytes(jpeg)
        report("export", {"arch": run.arch})
        started = time.perf_counter()
        base = run.export_dir or scratch / "model"
        saved = export(run.arch, base)
        export_s = time.perf_counter() - started
        per_threads: list[dict[str, Any]] = []
        points: list[dict[str, Any]] = []
        default_threads = min(len(host.usable_cpus()), max(grid.threads))
        idle_at = min(grid.threads, key=lambda t: abs(t - default_threads))
        for threads in grid.threads:
            config = {
                "saved_model": str(saved),
                "signature": run.signature,
                "threads": threads,
                "concurrency": list(grid.concurrency) if grid.concurrency else None,
                "max_concurrency": grid.max_concurrency,
                "batch": list(grid.batch),
                "seconds": grid.seconds,
                "repeats": grid.repeats,
                "min_requests": grid.min_requests,
                "max_seconds": grid.max_seconds,
                "tolerance": SPREAD_TOLERANCE,
                "image": str(image),
                "quantiles": list(DEFAULT_QUANTILES),
                "quiet_cores": QUIET_CORES,
                "retry_seconds": grid.retry_seconds / len(grid.threads),
                "idle_rounds": grid.idle_rounds if threads == idle_at else 0,
            }
            loaded, measured = _worker(config, report, scratch / f"worker-{threads}.log")
            per_threads.append(loaded)
            points.extend(measured)
    noisy = [p for p in points if (p.get("background_cpu_cores") or 0) > QUIET_CORES]
    notices = []
    if noisy:
        worst = max(p["background_cpu_cores"] for p in noisy)
        notices.append(
            f"{len(noisy)} of {len(points)} points were measured while other processes used "
            f"more than {QUIET_CORES} CPU cores (up to {worst:.2f}): their latencies are "
            "inflated (see points[].background_cpu_cores); measure on a quiet machine"
        )
    notices += spread_notices(points, grid.max_seconds)
    at_default = min(per_threads, key=lambda r: abs(r["threads"] - default_threads))
    idle = next((r for r in per_threads if "after_idle" in r), None)
    cpu_slug = host.slug(info)
    stem = {"resnet101": "resnet101", "tiny": "tiny-cnn"}[run.arch]
    data = {
        "schema_version": SCHEMA_VERSION,
        "name": run.name or f"{stem}-cpu-{cpu_slug}",
        "family": run.family or f"{stem}-cpu",
        "machine_type": None,
        "kind": "measured",
        "model": {
            "architecture": {
                "resnet101": "tf.keras.applications.ResNet101(weights=None)",
                "tiny": "tiny CNN (2 conv layers, 10 classes) for tests",
            }[run.arch],
            "signature": run.signature,
            "savedmodel_layout": "<base>/1/ with serving_default and serving_preprocess",
            "server": "in-process TensorFlow (SavedModel signatures), no REST",
            "outputs": per_threads[0].get("outputs"),
        },
        "defaults": {
            "threads": default_threads,
            "overhead_s": 0.0,
            "idle_cpu_cores": at_default["idle_cpu_cores"],
            "model_load_s": at_default["model_load_s"],
            "cold_factor": at_default["first_request_s"] / at_default["warm_request_s"],
            **({"after_idle": factors(idle["after_idle"])} if idle else {}),
        },
        "quantiles": list(DEFAULT_QUANTILES),
        "points": points,
        "provenance": {
            "tool": "scalelab calibrate (local)",
            "command": run.command,
            "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "cpu": info,
            "tensorflow": {
                "version": tf.__version__,
                "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on, x86)"),
            },
            "python": platform.python_version(),
            "payload": {**payload_info(jpeg, source), "signature": run.signature},
            "method": {
                "threads": list(grid.threads),
                "ladder": ladder.describe(grid.concurrency, grid.max_concurrency),
                "batch": f"batch {', '.join(map(str, grid.batch))} at concurrency 1"
                if grid.batch
                else "batch 1 only",
                "window_s": grid.seconds,
                "repeats": grid.repeats,
                "min_requests": grid.min_requests,
                "max_window_s": grid.max_seconds,
                **METHOD,
                "threads_meaning": "intra- and inter-op pool size, process pinned to that many "
                "CPUs (all of them when threads exceed the CPUs)",
                "cpu": "measured: the process's CPU time (user + sys, time.process_time) over "
                "the window divided by its length, in cores; spinning intra-op threads count",
                "latency": "wall time of the SavedModel signature call, in process: no "
                "network, HTTP or JSON, so defaults.overhead_s is 0",
                "background": f"CPU other processes used during a window (/proc/stat minus "
                f"this process); a window above {QUIET_CORES} cores is measured again, the "
                f"quietest kept, for up to {grid.retry_seconds:g} s in all",
            },
            "ladders": [
                {"threads": r["threads"], "knee": r.get("knee"), "measured": r.get("ladder")}
                for r in per_threads
            ],
            "per_threads": [
                {k: v for k, v in r.items() if k not in ("outputs", "ladder", "knee", "after_idle")}
                for r in per_threads
            ],
            **({"after_idle": {"threads": idle["threads"], **idle["after_idle"]}} if idle else {}),
            "warnings": notices,
            "export_s": export_s,
            "elapsed_s": time.perf_counter() - began,
        },
    }
    profile_from_dict(data, str(data["name"]))
    return data


def parse_ints(text: str, label: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> (1, 2, 4), with a clear error for anything else."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CalibrationError(f"{label} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise CalibrationError(f"{label} is empty")
    return values


def grid_with(
    base: Grid,
    *,
    threads: Sequence[int] | None = None,
    concurrency: Sequence[int] | None = None,
    batch: Sequence[int] | None = None,
    seconds: float | None = None,
    repeats: int | None = None,
    min_requests: int | None = None,
    max_seconds: float | None = None,
    retry_seconds: float | None = None,
    max_concurrency: int | None = None,
    idle_rounds: int | None = None,
) -> Grid:
    """``base`` with the given fields replaced (the CLI's overrides). ``concurrency`` fixes the
    ladder; batch 1 in ``batch`` is implied (it is the ladder) and dropped."""
    return Grid(
        tuple(sorted(threads)) if threads else base.threads,
        tuple(sorted(concurrency)) if concurrency else base.concurrency,
        tuple(sorted(b for b in batch if b != 1)) if batch else base.batch,
        seconds if seconds is not None else base.seconds,
        repeats if repeats is not None else base.repeats,
        min_requests if min_requests is not None else base.min_requests,
        max(max_seconds if max_seconds is not None else base.max_seconds, seconds or 0.0),
        retry_seconds if retry_seconds is not None else base.retry_seconds,
        max_concurrency if max_concurrency is not None else base.max_concurrency,
        idle_rounds if idle_rounds is not None else base.idle_rounds,
    )


def pool_passes(
    passes: Sequence[dict[str, Any]], weights: Sequence[float] | None = None
) -> dict[str, Any]:
    """Several calibrations of the same grid (``run_local`` mappings) as one profile: each
    point's throughput, CPU and latency quantiles are the passes' weighted means (``weights``,
    default equal), its request count their sum, its spread and background CPU the worst
    pass's. ``scalelab fidelity`` measures a pass before each real ladder and one after the
    last, so the model averages the machine over the same minutes the real side does (its
    plateau moved by 17% within six minutes on the 2-core VM). The passes' own figures stay in
    ``provenance.passes``."""
    if len(passes) == 1:
        return passes[0]
    share = [1.0] * len(passes) if weights is None else list(weights)
    if len(share) != len(passes) or min(share) < 0 or sum(share) <= 0:
        raise CalibrationError(f"one weight >= 0 per pass, got {share} for {len(passes)}")
    share = [w / sum(share) for w in share]
    key = ("threads", "concurrency", "batch")
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for data in passes:
        for point in data["points"]:
            grouped.setdefault(tuple(point[k] for k in key), []).append(point)
    if any(len(same) != len(passes) for same in grouped.values()):
        raise CalibrationError("passes to pool must measure the same points")

    def mean(values: Sequence[float]) -> float:
        return sum(w * v for w, v in zip(share, values, strict=True))

    points = []
    for same in grouped.values():
        first = same[0]
        background = [p["background_cpu_cores"] for p in same if p.get("background_cpu_cores")]
        points.append(
            {
                **{k: first[k] for k in key},
                "n": sum(p["n"] for p in same),
                "latency_s": [mean(q) for q in zip(*(p["latency_s"] for p in same), strict=True)],
                "lognormal": {
                    "median_s": mean([p["lognormal"]["median_s"] for p in same]),
                    "sigma": mean([p["lognormal"]["sigma"] for p in same]),
                    "ks": max(p["lognormal"]["ks"] for p in same),
                },
                "throughput_rps": mean([p["throughput_rps"] for p in same]),
                "cpu_cores": mean([p["cpu_cores"] for p in same]),
                "repeats": sum(p.get("repeats", 1) for p in same),
                "background_cpu_cores": max(background) if background else 0.0,
            }
        )
        if all(p.get("spread") for p in same):
            points[-1]["spread"] = {q: max(p["spread"][q] for p in same) for q in ("p50", "p95")}
    pooled = dict(passes[0])
    pooled["points"] = points
    pooled["defaults"] = dict(passes[0]["defaults"])
    for name in ("idle_cpu_cores", "model_load_s", "cold_factor"):
        if all(name in d["defaults"] for d in passes):
            pooled["defaults"][name] = mean([d["defaults"][name] for d in passes])
    idle = [d["defaults"].get("after_idle") for d in passes]
    pooled["defaults"].pop("after_idle", None)
    if all(i is not None and i["gap_s"] == idle[0]["gap_s"] for i in idle):
        pooled["defaults"]["after_idle"] = {"gap_s": idle[0]["gap_s"]}
        for factor in ("factor", "cpu_factor"):
            if all(factor in i for i in idle):
                by_gap = zip(*(i[factor] for i in idle), strict=True)
                pooled["defaults"]["after_idle"][factor] = [mean(f) for f in by_gap]
    provenance = dict(passes[0]["provenance"])
    provenance["pooled"] = (
        f"{len(passes)} passes: each point's throughput, CPU and latency quantiles are their "
        "means weighted by passes[].weight"
    )
    provenance["passes"] = [
        {
            "date": d["provenance"].get("date"),
            "weight": w,
            "throughput_rps": {
                f"{p['threads']}/{p['concurrency']}/{p['batch']}": p["throughput_rps"]
                for p in d["points"]
            },
            "after_idle_factor": d["defaults"].get("after_idle", {}).get("factor"),
            "after_idle_cpu_factor": d["defaults"].get("after_idle", {}).get("cpu_factor"),
            "lone_p50_s": [
                p["latency_s"][DEFAULT_QUANTILES.index(0.5)]
                for p in d["points"]
                if p["concurrency"] == 1 and p["batch"] == 1
            ],
        }
        for d, w in zip(passes, share, strict=True)
    ]
    provenance["warnings"] = [w for d in passes for w in d["provenance"].get("warnings", [])]
    pooled["provenance"] = provenance
    profile_from_dict(pooled, str(pooled["name"]))
    return pooled
