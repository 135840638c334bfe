"""The function a worker process runs: one scenario, one seed, a JSON-ready record.

Kept apart from the executors so a worker imports the simulator once (at start, or from the
forkserver's preload) and nothing of Dask, Optuna or matplotlib.
"""

from __future__ import annotations

from typing import Any

from sim.engine import simulate
from sim.scenario import Scenario
from sim.sweep.cache import engine_fingerprint

ENGINE = engine_fingerprint()
"""Fingerprint of the code this process imported (a forkserver's children inherit it)."""

Record = dict[str, Any]
"""``{"summary": Trace.summary, "p95": per-second latency_p95, "engine": code fingerprint}``."""


def run_one(scenario: Scenario, seed: int) -> Record:
    """Simulate and keep the summary plus the per-second p95 (for minutes in violation).

    ``engine`` is this worker's simulator code fingerprint: a Dask worker with other code
    would give other numbers, and the parent refuses its records.
    """
    trace = simulate(scenario, seed=seed)
    p95 = [None if v is None else round(float(v), 6) for v in trace.columns["latency_p95"]]
    return {"summary": trace.summary, "p95": p95, "engine": ENGINE}


def ignore_sigint() -> None:
    """Worker initializer: Ctrl-C is the parent's to handle (it cancels and saves progress);
    warnings print as the CLI's do (a forkserver's workers do not inherit its hook)."""
    import signal

    from sim.console import route_warnings

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    route_warnings()
