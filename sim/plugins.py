"""What other packages add to scalelab: CLI commands and run backends.

``cloud`` (the real-cluster backends) depends on ``sim``, never the other way round, so it is
found through the ``scalelab.plugins`` entry point group instead of an import: each entry is a
``register(app)`` that adds commands and calls :func:`register_backend`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from sim.scenario import Scenario
    from sim.trace import Trace

Runner = Callable[..., "Trace | None"]
"""``runner(scenario, *, backend, out, seed, dry_run, yes, keep, max_cost, no_lb)``."""

_BACKENDS: dict[str, Runner] = {}
_loaded = False


def register_backend(name: str, runner: Runner) -> None:
    """Make ``scalelab run --backend NAME`` call ``runner``; another runner under a taken
    ``NAME`` is an error (registering the same one again is not)."""
    if name == "sim" or _BACKENDS.get(name, runner) is not runner:
        raise ValueError(f"backend {name!r} is already registered")
    _BACKENDS[name] = runner


def backends() -> list[str]:
    return ["sim", *sorted(_BACKENDS)]


def runner(name: str) -> Runner:
    if name not in _BACKENDS:
        raise KeyError(name)
    return _BACKENDS[name]


def load_plugins(app: typer.Typer) -> None:
    """Let every installed plugin add its commands and backends (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for entry in sorted(entry_points(group="scalelab.plugins"), key=lambda e: e.name):
        register: Callable[[typer.Typer], Any] = entry.load()
        register(app)


def run_backend(name: str, scenario: Scenario, out: Path, **options: Any) -> Trace | None:
    return runner(name)(scenario, backend=name, out=out, **options)
