"""Scenarios shipped inside the package, so ``scalelab run gsp777`` and
``sim.testing.simulate("gsp777", ...)`` work after ``pip install``, from any directory.

In a checkout ``sim/scenarios`` is a link to the top-level ``scenarios/`` (the files users
read and copy: one copy, no drift); a wheel carries them as package data. A path to a file
always wins: only a bare name with no such file here is looked up among the packaged ones.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from sim.errors import Problem, ScenarioError

SUFFIXES = (".yaml", ".yml")


def bundled_dir() -> Path:
    """The packaged scenarios' directory (a real directory: pip unpacks wheels)."""
    return Path(str(resources.files("sim") / "scenarios"))


def bundled_names() -> list[str]:
    """Names ``scalelab run NAME`` accepts, e.g. ``gsp777`` (``sweeps/`` holds sweep files)."""
    folder = bundled_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())


def is_bare_name(path: Path) -> bool:
    """``gsp777`` or ``gsp777.yaml``: no directory part, so it may name a packaged scenario."""
    return len(path.parts) == 1 and not path.is_absolute()


def resolve_scenario(given: str | Path) -> Path:
    """The scenario file ``given`` names: itself when it is a file (or has a directory part),
    else the packaged scenario of that name; ScenarioError listing the packaged names when
    neither exists."""
    path = Path(given)
    if path.is_file() or not is_bare_name(path):
        return path
    folder = bundled_dir()
    stem = path.name.removesuffix(path.suffix) if path.suffix in SUFFIXES else path.name
    for suffix in SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    if path.exists():
        return path  # a directory: the loader says it cannot be read
    names = bundled_names()
    raise ScenarioError(
        str(path),
        [
            Problem(
                "",
                str(given),
                "no such file, and no packaged scenario of that name; packaged: "
                + (", ".join(names) if names else "none (the package has no scenarios/)"),
            )
        ],
    )
