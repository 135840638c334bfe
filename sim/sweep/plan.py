"""From a scenario file, overrides and axes to the list of points a sweep runs.

Everything here happens before any simulation: a bad path, value or combination is reported
with the file, field, given value and what is allowed, and nothing is run or written.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.bundled import resolve_scenario
from sim.errors import Problem, ScenarioError
from sim.loader import (
    build_scenario,
    command_line_paths,
    parse_path,
    read_scenario_data,
    scenario_sha256,
    set_path,
)
from sim.scenario import Scenario
from sim.sweep.axes import LOAD_SCALE, Axis, SweepError, scale_load, sweep_error

Values = tuple[tuple[str, Any], ...]
"""A point's coordinates: (axis path, value) in axis order."""


@dataclass(frozen=True)
class Point:
    """One configuration: its coordinates, its validated scenario and that scenario's hash."""

    index: int
    values: Values
    scenario: Scenario
    sha: str

    def value(self, path: str) -> Any:
        return dict(self.values)[path]


@dataclass(frozen=True)
class Base:
    """The scenario as given (file plus ``--set``): the baseline every point departs from."""

    path: Path
    data: dict[str, Any]
    scenario: Scenario
    sha: str
    override_paths: tuple[str, ...]

    @property
    def source(self) -> str:
        return str(self.path)


def load_base(path: Path, overrides: Sequence[tuple[str, Any]] = ()) -> Base:
    """Read the scenario (a file or a packaged scenario's name) and apply overrides (their file
    paths from the current directory); ScenarioError if either is wrong."""
    path = resolve_scenario(path)
    data = read_scenario_data(path)
    data.setdefault("name", path.stem)
    for key, value in overrides:
        try:
            set_path(data, key, command_line_paths(key, value))
        except ValueError as err:
            raise ScenarioError(f"{path} (--set {key})", [Problem(key, value, str(err))]) from None
    source = str(path)
    if overrides:
        source += " with --set " + " ".join(f"{k}={v}" for k, v in overrides)
    scenario = build_scenario(data, source, None, base_dir=path.parent)
    return Base(path, data, scenario, scenario_sha256(scenario), tuple(k for k, _ in overrides))


def point_data(base: Base, values: Values) -> dict[str, Any]:
    """The raw scenario mapping at a point: field axes set, then the load multiplied."""
    data = copy.deepcopy(base.data)
    scale = None
    for path, value in values:
        if path == LOAD_SCALE:
            scale = value
        else:
            set_path(data, path, value)
    if scale is not None:
        data = scale_load(data, scale)
    return data


def label(values: Values, names: dict[str, str] | None = None) -> str:
    """``averageUtilization=45 minReplicas=2``: short names, as in the ranked table."""
    names = names or short_names([p for p, _ in values])
    return " ".join(f"{names[p]}={v}" for p, v in values) or "baseline"


def short_names(paths: Sequence[str]) -> dict[str, str]:
    """The shortest unique dotted suffix of each path, for column headers and labels."""
    out: dict[str, str] = {}
    split = {p: [str(s) for s in parse_path(p) if not isinstance(s, int)] for p in paths}
    for path in paths:
        parts = split[path]
        for n in range(1, len(parts) + 1):
            tail = parts[-n:]
            if all(split[o][-n:] != tail for o in paths if o != path):
                out[path] = ".".join(tail)
                break
        else:
            out[path] = path
    return out


def build_point(base: Base, index: int, values: Values) -> Point:
    """Validate one point's scenario; SweepError naming the point on failure."""
    where = f"{base.source} at {label(values)}"
    try:
        data = point_data(base, values)
    except ValueError as err:
        path, value = values[-1] if len(values) == 1 else ("", dict(values))
        raise sweep_error(where, path, value, str(err)) from None
    try:
        scenario = build_scenario(data, where, None, base_dir=base.path.parent)
    except ScenarioError as err:
        raise SweepError(where, err.problems) from None
    return Point(index, values, scenario, scenario_sha256(scenario))


def check_axes(base: Base, axes: Sequence[Axis], each_value: bool = True) -> None:
    """Axes must not overlap or repeat a --set; with ``each_value``, each axis alone at each of
    its values (a range's ends) must give a valid scenario. A grid with --skip-invalid judges
    combinations instead: minReplicas=5 is invalid beside the base's maxReplicas=4, yet valid
    with maxReplicas=6 from another axis."""
    problems: list[Problem] = []
    sources: list[str] = []
    seen: list[str] = []
    for axis in axes:
        for other in seen:
            if (
                axis.path == other
                or axis.path.startswith((other + ".", other + "["))
                or (other.startswith((axis.path + ".", axis.path + "[")))
            ):
                raise sweep_error(
                    axis.origin, axis.path, axis.path, f"overlaps the axis {other}; vary it once"
                )
        if axis.path in base.override_paths:
            raise sweep_error(
                axis.origin, axis.path, axis.path, "is also given with --set; keep one of the two"
            )
        seen.append(axis.path)
        for value in axis.probes() if each_value else ():
            try:
                build_point(base, 0, ((axis.path, value),))
            except SweepError as err:
                sources.append(axis.origin)
                for p in err.problems:
                    allowed = p.allowed.removeprefix(f"{axis.path}: ")
                    if p.field not in ("", axis.path):
                        allowed = f"{p.field}: {allowed}"
                    problems.append(Problem(axis.path, value, allowed))
    if problems:
        problems = _merge(problems)
        raise SweepError(sources[0] if len(set(sources)) == 1 else base.source, problems)


def _merge(problems: list[Problem]) -> list[Problem]:
    """One line per distinct message, listing every value that got it (a typo'd path says so
    once, not once per value)."""
    merged: dict[tuple[str, str], list[object]] = {}
    for p in problems:
        merged.setdefault((p.field, p.allowed), []).append(p.given)
    return [
        Problem(f, given[0] if len(given) == 1 else given, allowed)
        for (f, allowed), given in merged.items()
    ]


def grid_points(base: Base, axes: Sequence[Axis], skip_invalid: bool = False) -> list[Point]:
    """Every combination of the axes' values, validated; invalid ones are an error (listed),
    or with ``skip_invalid`` left out. When none is valid, an axis value that is invalid on
    its own is named as such (a typo'd path once, with its fix)."""
    check_axes(base, axes, each_value=False)
    points: list[Point] = []
    bad: list[Problem] = []
    grids = [axis.grid() for axis in axes]
    for combo in itertools.product(*grids):
        values = tuple(zip((a.path for a in axes), combo, strict=True))
        try:
            points.append(build_point(base, len(points), values))
        except SweepError as err:
            first = err.problems[0] if err.problems else Problem("", "", "invalid")
            bad.append(Problem(label(values), first.given, f"{first.field}: {first.allowed}"))
    if not points:
        check_axes(base, axes)
    if bad and not skip_invalid:
        shown = bad[:10]
        if len(bad) > 10:
            shown.append(Problem("...", len(bad) - 10, "more invalid combinations"))
        shown.append(
            Problem("", f"{len(bad)} of {len(bad) + len(points)}", "--skip-invalid leaves them out")
        )
        raise SweepError(f"{base.source}: {len(bad)} combinations of the axes", shown)
    if not points:
        raise SweepError(
            f"{base.source}: no valid combination of the axes to run",
            [*_merge(bad)[:10], Problem("", len(bad), "combinations, all invalid")],
        )
    return points
