"""Wall time of the 60-point lab sweep with ``-j 2``: the issue's bar is under a minute.

Runs ``scalelab sweep scenarios/gsp777.yaml --sweep-file scenarios/sweeps/lab.yaml`` end to end
in a subprocess (start-up, validation, the runs, report and recommendation) with a fresh cache,
once per seed count, and prints the wall time beside the time spent in the runs and the mean
simulation time per run. Then reruns the last one to show a fully cached resume.

    .venv/bin/python benchmarks/bench_sweep.py [--jobs 2] [--seeds 1 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "gsp777.yaml"
SWEEP = ROOT / "scenarios" / "sweeps" / "lab.yaml"
# The scalelab CLI with the sweep commands registered (whether or not sim/cli.py does it).
ENTRY = (
    "from sim.cli import app\n"
    "from sim.sweep.cli import register\n"
    "if not any((c.name or c.callback.__name__) == 'sweep' for c in app.registered_commands):\n"
    "    register(app)\n"
    "app()\n"
)


def sweep(out: Path, jobs: int, seeds: int, fresh: bool) -> tuple[float, dict]:
    args = [sys.executable, "-c", ENTRY, "sweep", str(SCENARIO), "--sweep-file", str(SWEEP)]
    args += ["--seeds", str(seeds), "-j", str(jobs), "--out", str(out), "--recommend", "-q"]
    if fresh:
        args.append("--fresh")
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):  # 1: no point met the SLO, still a finished sweep
        raise SystemExit(f"sweep failed ({done.returncode}):\n{done.stderr}")
    return wall, json.loads((out / "sweep.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 3])
    options = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    print(
        f"{'points':>6} {'seeds':>5} {'runs':>5} {'wall s':>7} {'in runs s':>9} "
        f"{'sim s/run':>9} {'serial est. s':>13}  note"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for seeds in options.seeds:
            out = Path(tmp) / f"s{seeds}"
            wall, info = sweep(out, options.jobs, seeds, fresh=True)
            per_run = _mean_sim_seconds(out)
            runs = info["runs"]["total"]
            print(
                f"{info['points']:>6} {seeds:>5} {runs:>5} {wall:>7.1f} "
                f"{info['wall_seconds']:>9.1f} {per_run:>9.3f} {per_run * runs:>13.1f}  "
                f"-j {options.jobs}, fresh cache"
            )
        wall, info = sweep(out, options.jobs, options.seeds[-1], fresh=False)
        print(
            f"{info['points']:>6} {options.seeds[-1]:>5} {info['runs']['total']:>5} "
            f"{wall:>7.1f} {info['wall_seconds']:>9.1f} {'-':>9} {'-':>13}  "
            f"resumed: {info['runs']['reused']} runs from the cache"
        )
    print(f"load average {os.getloadavg()[0]:.2f} at end (other work on the machine slows it)")


def _mean_sim_seconds(out: Path) -> float:
    import csv

    with open(out / "results.csv", newline="") as handle:
        walls = [float(row["wall_seconds"]) for row in csv.DictReader(handle)]
    return sum(walls) / len(walls)


if __name__ == "__main__":
    main()
