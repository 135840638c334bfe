"""Cost per simulated request as the fleet grows: the same per-pod load at 10 to 5000 pods.

Each size runs in its own subprocess (so peak RSS is its own) on one workload scaled by the
pod count N: 2-CPU pods on n2-standard-16 nodes (seven fit a node), N warm replicas on the
nodes they need, an HPA on cpu 60% from N to 1.5 N, open-loop Poisson load of ``--rps`` per
pod that steps up by ``--step`` at 4 min. The step drives the HPA to scale up, new pods wait
Pending for the cluster autoscaler's nodes, and then run: the scheduler, the CA and the data
plane all work at every size. Prints wall microseconds per simulated request, peak RSS, and
the ratio of the largest size's cost per request to the smallest's.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 10,100,1000,5000] [--duration 10m]
    .venv/bin/python benchmarks/bench_scale.py --profile 1000 --duration 3m   # cProfile, top 30
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # time this checkout's sim, not the one an editable install names
PODS_PER_NODE = 7  # 2-CPU pods on an n2-standard-16: 15.67 free cores after DaemonSets
TARGETS = {"ratio": 1.5, "rss_mb": 1024.0}


def scenario(pods: int, duration: str, rps: float, step: float) -> Any:
    """The benchmark workload for ``pods`` replicas (a pydantic Scenario)."""
    from sim.scenario import Scenario

    nodes = math.ceil(pods / PODS_PER_NODE)
    most = math.ceil(1.5 * pods)
    rate = rps * pods
    return Scenario.model_validate(
        {
            "name": f"bench-scale-{pods}",
            "seed": 1,
            "duration": duration,
            "start": "warm",
            "cluster": {
                "node_pool": {
                    "machine_type": "n2-standard-16",
                    "min_nodes": nodes,
                    "initial_nodes": nodes,
                    "max_nodes": math.ceil(most / PODS_PER_NODE) + 1,
                }
            },
            "deployment": {
                "replicas": pods,
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
            },
            "hpa": {
                "minReplicas": pods,
                "maxReplicas": most,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 60},
                        },
                    }
                ],
            },
            "load": {
                "kind": "open_loop",
                "rate": {
                    "kind": "piecewise",
                    "points": [[0, rate], [240, rate], [241, rate * step]],
                },
            },
        }
    )


def child(pods: int, duration: str, rps: float, step: float) -> None:
    import warnings

    from sim.engine import simulate

    warnings.simplefilter("ignore")  # the profile's extrapolation warning, once per run
    started = time.perf_counter()
    trace = simulate(scenario(pods, duration, rps, step))
    wall = time.perf_counter() - started
    columns = trace.columns
    print(
        json.dumps(
            {
                "pods": pods,
                "requests": trace.summary["requests_total"],
                "wall_s": wall,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "replicas_end": columns["replicas_ready"][-1],
                "nodes_end": columns["nodes_ready"][-1],
            }
        )
    )


def measure(pods: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", str(pods), "--duration", args.duration]
    command += ["--rps", str(args.rps), "--step", str(args.step)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def profile(pods: int, args: argparse.Namespace) -> None:
    import cProfile
    import pstats
    import warnings

    from sim.engine import simulate

    warnings.simplefilter("ignore")
    work = scenario(pods, args.duration, args.rps, args.step)
    profiler = cProfile.Profile()
    profiler.enable()
    simulate(work)
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,5000")
    parser.add_argument("--duration", default="10m")
    parser.add_argument("--rps", type=float, default=0.6, help="requests/s per pod")
    parser.add_argument("--step", type=float, default=1.6, help="load factor from 4 min")
    parser.add_argument("--child", type=int)
    parser.add_argument("--profile", type=int, help="cProfile one size in this process")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.duration, args.rps, args.step)
        return
    if args.profile:
        profile(args.profile, args)
        return
    rows = []
    for pods in (int(s) for s in args.sizes.split(",")):
        r = measure(pods, args)
        r["us_per_request"] = r["wall_s"] / r["requests"] * 1e6
        rows.append(r)
        print(
            f"{pods:>6} pods  {r['requests']:>9} requests  {r['wall_s']:8.2f} s wall  "
            f"{r['us_per_request']:6.1f} us/request  peak RSS {r['peak_rss_mb']:7.1f} MB  "
            f"(end: {r['replicas_end']} ready pods on {r['nodes_end']} nodes)",
            flush=True,
        )
    ratio = rows[-1]["us_per_request"] / rows[0]["us_per_request"]
    print(
        f"cost per request {rows[-1]['pods']} vs {rows[0]['pods']} pods: {ratio:.2f}x "
        f"(target <= {TARGETS['ratio']}x); peak RSS at {rows[-1]['pods']} pods "
        f"{rows[-1]['peak_rss_mb']:.0f} MB (target < {TARGETS['rss_mb']:.0f} MB)"
    )


if __name__ == "__main__":
    main()
