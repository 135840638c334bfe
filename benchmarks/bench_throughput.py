"""Speed and memory of the simulator against an idiomatic SimPy M/M/c of the same request count.

Runs, each in its own subprocess so peak RSS is its own:
  1. scalelab on scenarios/bench-throughput.yaml (400 req/s open loop for 1 h, ~1.44 M requests);
  2. the same scenario cut to 15 min, to show memory does not grow with the request count;
  3. an M/M/c in SimPy written the usual way (one process per request, ``simpy.Resource``),
     with the same arrival rate, duration and mean service load.
Prints wall seconds, requests per wall second, peak RSS, and the speed ratio. The two 1 h runs
alternate ``--repeat`` times and the best of each counts (the usual way to take timing noise
out of a shared machine); every run's time is printed too.

    .venv/bin/python benchmarks/bench_throughput.py [--duration 1h]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # time this checkout's sim, not the one an editable install names
SCENARIO = ROOT / "scenarios" / "bench-throughput.yaml"


def run_scalelab(duration: str) -> dict[str, float]:
    from sim.engine import simulate
    from sim.loader import load_scenario

    scenario = load_scenario(SCENARIO, [f"duration={duration}"])
    started = time.perf_counter()
    trace = simulate(scenario)
    wall = time.perf_counter() - started
    return {"requests": trace.summary["requests_total"], "wall_s": wall}


def run_mmc(duration: str) -> dict[str, float]:
    import random

    import simpy

    from sim.units import parse_duration

    horizon = parse_duration(duration)
    rate, servers, mean_service = 400.0, 40, 40 * 0.68 / 400.0  # same load, utilisation 0.68
    rng = random.Random(1)
    env = simpy.Environment()
    pool = simpy.Resource(env, capacity=servers)
    done = [0]

    def request(env: simpy.Environment) -> object:
        with pool.request() as slot:
            yield slot
            yield env.timeout(rng.expovariate(1.0 / mean_service))
        done[0] += 1

    def source(env: simpy.Environment) -> object:
        count = 0
        while True:
            yield env.timeout(rng.expovariate(rate))
            env.process(request(env))
            count += 1
            sent[0] = count

    sent = [0]
    env.process(source(env))
    started = time.perf_counter()
    env.run(until=horizon)
    wall = time.perf_counter() - started
    return {"requests": sent[0], "wall_s": wall}


def child(kind: str, duration: str) -> None:
    result = run_scalelab(duration) if kind == "scalelab" else run_mmc(duration)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(kind: str, duration: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--duration", duration],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="1h")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=["scalelab", "mmc"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args.duration)
        return
    fulls, mmcs = [], []
    for _ in range(max(1, args.repeat)):
        fulls.append(measure("scalelab", args.duration))
        mmcs.append(measure("mmc", args.duration))
    full = min(fulls, key=lambda r: r["wall_s"])
    mmc = min(mmcs, key=lambda r: r["wall_s"])
    short = measure("scalelab", "15m")
    print(
        "runs (wall s): scalelab "
        + ", ".join(f"{r['wall_s']:.2f}" for r in fulls)
        + "; simpy M/M/c "
        + ", ".join(f"{r['wall_s']:.2f}" for r in mmcs)
    )
    for name, r in (
        ("scalelab " + args.duration, full),
        ("scalelab 15m", short),
        ("simpy M/M/c " + args.duration, mmc),
    ):
        print(
            f"{name:<22} {r['requests']:>9.0f} requests  {r['wall_s']:7.2f} s wall  "
            f"{r['requests'] / r['wall_s']:>9.0f} req/s  peak RSS {r['peak_rss_mb']:6.1f} MB"
        )
    speed = (full["requests"] / full["wall_s"]) / (mmc["requests"] / mmc["wall_s"])
    print(f"speed ratio scalelab / idiomatic SimPy: {speed:.2f}x (targets: >= 2x, then >= 3x)")
    print(
        f"peak RSS {args.duration} vs 15m: {full['peak_rss_mb']:.1f} MB vs "
        f"{short['peak_rss_mb']:.1f} MB (target < 300 MB)"
    )


if __name__ == "__main__":
    main()
