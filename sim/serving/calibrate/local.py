"""Local calibration: export the model, measure it over a grid, assemble the profile.

One worker process per thread count (:mod:`sim.serving.calibrate.worker`), run one after another so
they never compete for the CPU; each measures every (concurrency, batch) point for its threads.
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

from sim.serving.calibrate import CalibrationError, host
from sim.serving.calibrate.model import ARCHS, export, require_tensorflow, synthetic_jpeg
from sim.serving.calibrate.payload import LAB_SIGNATURE, find_lab_image, payload_info
from sim.serving.calibrate.worker import MARK
from sim.serving.profile import DEFAULT_QUANTILES, SCHEMA_VERSION, profile_from_dict

SIGNATURES = ("serving_preprocess", "serving_default")
QUIET_CORES = 0.25
"""More CPU than this used by other processes during a run makes it a noisy measurement."""


@dataclass(frozen=True)
class Grid:
    """What to measure and for how long (per point)."""

    threads: tuple[int, ...]
    concurrency: tuple[int, ...]
    batch: tuple[int, ...]
    seconds: float
    repeats: int
    min_requests: int
    max_seconds: float
    retry_seconds: float = 0.0
    """Time all workers together may spend re-measuring windows other processes disturbed."""

    @property
    def points(self) -> int:
        return len(self.threads) * len(self.concurrency) * len(self.batch)


def default_grid(quick: bool, cpus: int | None = None) -> Grid:
    """Full: threads 1, 2, 4, ... up to the usable CPUs (and them), concurrency 1-2-4, batch
    1-2-4-8, 3 s windows in 3 repeats, up to 150 s of re-measuring disturbed windows;
    ``quick``: threads 1 and all CPUs, concurrency and batch 1-2, 1 s windows in 2 repeats, no
    re-measuring. On 2 cores they take about 4.5 (at most 8) and 1.5 minutes."""
    cpus = cpus or len(host.usable_cpus())
    if quick:
        return Grid(tuple(sorted({1, cpus})), (1, 2), (1, 2), 1.0, 2, 4, 4.0, 0.0)
    threads = {1, cpus}
    t = 2
    while t < cpus:
        threads.add(t)
        t *= 2
    return Grid(tuple(sorted(threads)), (1, 2, 4), (1, 2, 4, 8), 3.0, 3, 8, 15.0, 150.0)


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


def _validate(run: LocalRun) -> None:
    if run.arch not in ARCHS:
        raise CalibrationError(f"--model-arch must be one of {', '.join(ARCHS)}, got {run.arch!r}")
    if run.signature not in SIGNATURES:
        raise CalibrationError(
            f"--signature must be one of {', '.join(SIGNATURES)}, got {run.signature!r}"
        )
    grid = run.grid
    for label, values in (
        ("--threads", grid.threads),
        ("--concurrency", grid.concurrency),
        ("--batch", grid.batch),
    ):
        if not values or any(v < 1 for v in values) or len(set(values)) != len(values):
            raise CalibrationError(f"{label} must list distinct integers >= 1, got {values}")
    if grid.retry_seconds < 0:
        raise CalibrationError(f"--retry-seconds must be >= 0, got {grid.retry_seconds}")
    if grid.seconds <= 0 or grid.max_seconds < grid.seconds or grid.repeats < 1:
        raise CalibrationError(
            "--seconds must be > 0, --max-seconds >= --seconds and --repeats >= 1"
        )
    if run.image is not None and not run.image.is_file():
        raise CalibrationError(f"--image {run.image}: no such file")


def _worker(
    config: dict[str, Any], progress: Progress, log: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run one worker; return its 'loaded' record and its points."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    loaded: dict[str, Any] = {}
    points: list[dict[str, Any]] = []
    with log.open("w") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sim.serving.calibrate.worker", json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if not line.startswith(MARK):
                    continue
                record = json.loads(line[len(MARK) :])
                event = record.pop("event")
                if event == "loaded":
                    loaded = record
                elif event == "done":
                    loaded["background_cpu_cores"] = record.get("background_cpu_cores")
                elif event == "point":
                    points.append(record["point"])
                progress(event, record)
        finally:
            code = proc.wait()
    if code != 0 or len(points) != len(config["points"]):
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
        raise CalibrationError(
            f"the measuring process for threads={config['threads']} failed (exit {code}):\n{tail}"
        )
    return loaded, points


def run_local(run: LocalRun, progress: Progress | None = None) -> dict[str, Any]:
    """Export, measure and return the profile mapping (validated, not yet written)."""
    _validate(run)
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
        pairs = [[c, b] for c in grid.concurrency for b in grid.batch]
        for threads in grid.threads:
            config = {
                "saved_model": str(saved),
                "signature": run.signature,
                "threads": threads,
                "points": pairs,
                "seconds": grid.seconds,
                "repeats": grid.repeats,
                "min_requests": grid.min_requests,
                "max_seconds": grid.max_seconds,
                "image": str(image),
                "quantiles": list(DEFAULT_QUANTILES),
                "quiet_cores": QUIET_CORES,
                "retry_seconds": grid.retry_seconds / len(grid.threads),
            }
            loaded, measured = _worker(config, report, scratch / f"worker-{threads}.log")
            per_threads.append(loaded)
            points.extend(measured)
    cpus = len(host.usable_cpus())
    noisy = [p for p in points if (p.get("background_cpu_cores") or 0) > QUIET_CORES]
    notices = []
    if noisy:
        worst = max(p["background_cpu_cores"] for p in noisy)
        notices.append(
            f"{len(noisy)} of {len(points)} points were measured while other processes used "
            f"more than {QUIET_CORES} CPU cores (up to {worst:.2f}): their latencies are "
            "inflated (see points[].background_cpu_cores); measure on a quiet machine"
        )
    default_threads = min(cpus, max(grid.threads))
    at_default = min(per_threads, key=lambda r: abs(r["threads"] - default_threads))
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
                "concurrency": list(grid.concurrency),
                "batch": list(grid.batch),
                "window_s": grid.seconds,
                "repeats": grid.repeats,
                "min_requests": grid.min_requests,
                "max_window_s": grid.max_seconds,
                "warmup": "each caller's first request at a point is discarded; the window "
                "starts once every caller has finished one",
                "threads_meaning": "intra- and inter-op pool size, process pinned to that many "
                "CPUs (all of them when threads exceed the CPUs)",
                "cpu_time": "process CPU time (user + sys) over the window divided by the "
                "requests completed in it; one request is the whole batch",
                "latency": "wall time of the SavedModel signature call, in process: no "
                "network, HTTP or JSON, so defaults.overhead_s is 0",
                "spread": "(max - min) / median of the repeats' median latencies",
                "background": f"CPU other processes used during a window (/proc/stat minus "
                f"this process); a window above {QUIET_CORES} cores is measured again, the "
                f"quietest kept, for up to {grid.retry_seconds:g} s in all",
            },
            "per_threads": [{k: v for k, v in r.items() if k != "outputs"} for r in per_threads],
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
) -> Grid:
    """``base`` with the given fields replaced (the CLI's overrides)."""
    return Grid(
        tuple(sorted(threads)) if threads else base.threads,
        tuple(sorted(concurrency)) if concurrency else base.concurrency,
        tuple(sorted(batch)) if batch else base.batch,
        seconds if seconds is not None else base.seconds,
        repeats if repeats is not None else base.repeats,
        min_requests if min_requests is not None else base.min_requests,
        max(max_seconds if max_seconds is not None else base.max_seconds, seconds or 0.0),
        retry_seconds if retry_seconds is not None else base.retry_seconds,
    )
