"""Features beyond simulating live in pyproject extras, so ``pip install scalelab`` (and
``make run``) installs only what a simulation needs. A missing extra is bad input, not a bug:
exit 2 with the ``pip install`` line, before anything is written."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from sim.errors import UserError

#: Top-level module -> the extra (pyproject ``optional-dependencies``) that installs it.
EXTRA_OF = {
    "pyarrow": "sweep",  # results.parquet; also Parquet replay files (backtest has it too)
    "optuna": "sweep",  # scalelab tune
    "distributed": "sweep",  # --executor dask
    "dask": "sweep",
    "prometheus_api_client": "backtest",
    "prometheus_client": "backtest",
    "matplotlib": "calibrate",  # fidelity.png
}


class MissingExtra(UserError):
    """A feature's packages are not installed."""


def install_hint(modules: Iterable[str], what: str) -> str:
    missing = sorted(set(modules))
    extras = sorted({EXTRA_OF.get(m, "test") for m in missing})
    return (
        f"{what} needs {', '.join(missing)}, which pip install scalelab leaves out: "
        f"pip install 'scalelab[{','.join(extras)}]' (in a checkout: make test installs all)"
    )


def require(modules: Iterable[str], what: str) -> None:
    """MissingExtra naming the pip install line unless every module can be imported."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(install_hint(missing, what))


def missing_extra(error: ModuleNotFoundError) -> MissingExtra | None:
    """The user-facing error for an import of an extra's module that failed; None when the
    module is not an extra's (a bug, shown as one)."""
    top = (error.name or "").split(".")[0]
    if top not in EXTRA_OF:
        return None
    return MissingExtra(install_hint([top], "this command"))
