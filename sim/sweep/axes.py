"""Sweep axes (``--vary PATH=VALUES``), the load multiplier, and the sweep file format.

An axis is one of the scenario's own dotted paths (as ``--set`` takes them) with its values:

- ``PATH=40:90:5``: a stepped range, both ends included (integers if all three are);
- ``PATH=1,2,3`` or ``PATH=e2-standard-4,n1-standard-4``: a list, each item read as YAML;
- ``PATH=20:95`` or ``PATH=0.5:4:log``: a continuous (or integer) range, for ``tune`` only.

``load.scale`` is not a scenario field: it multiplies the scenario's load (Locust users, or
open-loop rates) through :func:`scale_load`, a pure function on the raw scenario mapping.

A sweep file (YAML) holds the same, so a sweep can be kept next to its scenario::

    vary:
      hpa.metrics[0].resource.target.averageUtilization: 40:90:5
      hpa.minReplicas: [1, 2]
    seeds: 3
    slo: p95<=4s
    set: {duration: 30m}
    budget: 60          # tune only: points to evaluate
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sim.errors import Problem, ScenarioError
from sim.loader import parse_override, parse_path
from sim.scenario import (
    ConstantUsers,
    LocustLoad,
    StepShape,
)

LOAD_SCALE = "load.scale"
"""The pseudo-path of the load multiplier axis."""

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*({_NUMBER})\s*:\s*({_NUMBER})\s*(?::\s*({_NUMBER}|log)\s*)?$")
MAX_AXIS_VALUES = 10_000


@dataclass
class SweepError(ScenarioError):
    """A sweep (axes, sweep file, SLO, executor) that cannot run as given; nothing has run."""

    def __str__(self) -> str:
        lines = [f"{self.source}: invalid sweep"]
        lines += [p.render() for p in self.problems]
        return "\n".join(lines)


def sweep_error(source: str, field: str, given: object, allowed: str) -> SweepError:
    return SweepError(source, [Problem(field, given, allowed)])


@dataclass(frozen=True)
class Axis:
    """One varied field: a grid of ``values``, or a ``low..high`` range a tuner samples."""

    path: str
    values: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    integer: bool = False
    origin: str = field(default="", compare=False)

    @property
    def is_grid(self) -> bool:
        return self.values is not None

    def grid(self) -> tuple[Any, ...]:
        """The values a sweep runs; a continuous range has none (it is for ``tune``)."""
        if self.values is None:
            raise sweep_error(
                self.origin,
                self.path,
                f"{self.low:g}:{self.high:g}",
                "a sweep needs a step or a list (e.g. 40:90:5 or 40,60,80); "
                "continuous ranges are for scalelab tune",
            )
        return self.values

    def probes(self) -> tuple[Any, ...]:
        """Values that validate the axis before anything runs: all of a grid, a range's ends."""
        if self.values is not None:
            return self.values
        assert self.low is not None and self.high is not None
        low, high = (int(self.low), int(self.high)) if self.integer else (self.low, self.high)
        return (low, high) if low != high else (low,)


def _number(text: str) -> int | float:
    value = yaml.safe_load(text)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{text!r} is not a number")
    return value


def _stepped(low: int | float, high: int | float, step: int | float) -> tuple[Any, ...]:
    if step <= 0:
        raise ValueError(f"the step must be > 0, got {step}")
    count = math.floor((high - low) / step + 1e-9) + 1
    if count > MAX_AXIS_VALUES:
        raise ValueError(f"{count} values is too many for one axis (at most {MAX_AXIS_VALUES})")
    if all(isinstance(v, int) for v in (low, high, step)):
        return tuple(int(low + i * step) for i in range(count))
    return tuple(round(low + i * step, 10) for i in range(count))


def axis_from_text(path: str, spec: str, origin: str) -> Axis:
    """Parse one axis's values as written after ``PATH=`` (see the module docstring)."""
    match = _RANGE.match(spec)
    if match is not None:
        low, high = _number(match.group(1)), _number(match.group(2))
        if high < low:
            raise ValueError(f"a range must run low:high with low <= high, got {spec!r}")
        third = match.group(3)
        integer = isinstance(low, int) and isinstance(high, int)
        if third is None or third == "log":
            if third == "log" and low <= 0:
                raise ValueError(f"a log range needs low > 0, got {spec!r}")
            return Axis(path, None, low, high, None, third == "log", integer, origin)
        step = _number(third)
        values = _stepped(low, high, step)
        integer = integer and isinstance(step, int)
        return Axis(path, values, low, values[-1], step, False, integer, origin)
    if ":" in spec and "," not in spec:
        raise ValueError(
            f"{spec!r} is not a range; write LOW:HIGH:STEP with numbers (durations in seconds), "
            "or a comma-separated list"
        )
    items = [item.strip() for item in spec.split(",")]
    if any(item == "" for item in items):
        raise ValueError(f"empty value in the list {spec!r}")
    listed: list[Any] = []
    for item in items:
        try:
            listed.append(yaml.safe_load(item))
        except yaml.YAMLError:
            listed.append(item)
    return axis_from_values(path, listed, origin)


def axis_from_values(path: str, values: Sequence[Any], origin: str) -> Axis:
    if not values:
        raise ValueError("an axis needs at least one value")
    seen: list[Any] = []
    for value in values:
        if value in seen:
            raise ValueError(f"the value {value!r} appears twice")
        seen.append(value)
    return Axis(path, tuple(values), origin=origin)


def _check_path(path: str) -> None:
    parse_path(path)  # raises ValueError for a malformed path
    if path == "seed":
        raise ValueError("the seed is not an axis; use --seeds N (the same seeds at every point)")
    if path == "name":
        raise ValueError("name is not an axis (it does not change the simulation)")
    if path.startswith("load.scale.") or path.startswith("load.scale["):
        raise ValueError("load.scale is a number (the load multiplier), not a mapping")


def parse_vary(text: str, source: str) -> Axis:
    """``--vary PATH=VALUES`` -> Axis, or SweepError naming the option."""
    origin = f"{source} (--vary {text})"
    if "=" not in text:
        raise sweep_error(origin, text, text, "--vary expects dotted.path=values, e.g. x=1,2,3")
    path, spec = (part.strip() for part in text.split("=", 1))
    try:
        _check_path(path)
        return axis_from_text(path, spec, origin)
    except ValueError as err:
        raise sweep_error(origin, path, spec, str(err)) from None


# --- the load multiplier ------------------------------------------------------------------


def _scaled_users(value: Any, factor: float, what: str, minimum: int) -> int:
    users = round(float(value) * factor)
    if users < minimum:
        raise ValueError(f"load.scale={factor:g} leaves {what} at {users}; it must be >= {minimum}")
    return users


def scale_load(data: Mapping[str, Any], factor: float) -> dict:
    """The raw scenario mapping with its load multiplied by ``factor``.

    Locust shapes: users (``step_users``, ``users``, each stage's ``users``) times the factor,
    rounded to whole users (the load then scales by the rounded ratio). Open-loop: every rate
    (``rps``, ``base_rps``, ``mean_rps`` and ``amplitude_rps``, piecewise ``points``, replayed
    rates and users through their ``scale``). Defaults come from the schema, so a scenario
    that leaves its load out scales too.
    """
    if isinstance(factor, bool) or not isinstance(factor, int | float):
        raise ValueError(f"load.scale must be a number, got {factor!r}")
    if not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"load.scale must be > 0, got {factor!r}")
    out = copy.deepcopy(dict(data))
    load = dict(out.get("load") or {})
    kind = load.get("kind", LocustLoad.model_fields["kind"].default)
    if kind == "locust":
        shape = dict(load.get("shape") or {})
        shape_kind = shape.get("kind", StepShape.model_fields["kind"].default)
        if shape_kind == "steps":
            given = shape.get("step_users", StepShape.model_fields["step_users"].default)
            shape["step_users"] = _scaled_users(given, factor, "step_users", 1)
        elif shape_kind == "constant":
            given = shape.get("users", ConstantUsers.model_fields["users"].default)
            shape["users"] = _scaled_users(given, factor, "users", 0)
        elif shape_kind == "stages":
            stages = []
            for i, stage in enumerate(shape.get("stages") or []):
                stage = dict(stage)
                stage["users"] = _scaled_users(stage.get("users", 0), factor, f"stages[{i}]", 0)
                stages.append(stage)
            shape["stages"] = stages
        elif shape_kind == "replay":  # each replayed count times the factor, rounded
            shape["scale"] = float(shape.get("scale", 1.0)) * factor
        else:
            raise ValueError(f"load.scale cannot scale a Locust shape of kind {shape_kind!r}")
        shape["kind"] = shape_kind
        load["shape"] = shape
    elif kind == "open_loop":
        rate = dict(load.get("rate") or {})
        for key in ("rps", "base_rps", "mean_rps", "amplitude_rps"):
            if key in rate:
                rate[key] = float(rate[key]) * factor
        if "points" in rate:
            rate["points"] = [[t, float(r) * factor] for t, r in rate["points"]]
        if rate.get("kind") == "replay":
            rate["scale"] = float(rate.get("scale", 1.0)) * factor
        load["rate"] = rate
    else:
        raise ValueError(f"load.scale cannot scale a load of kind {kind!r}")
    load["kind"] = kind  # the schema's discriminator, needed once a default load is written out
    out["load"] = load
    return out


# --- the sweep file -----------------------------------------------------------------------

SWEEP_FILE_KEYS = {
    "vary": "mapping of dotted.path -> list of values, or 'LOW:HIGH:STEP' / 'LOW:HIGH'",
    "seeds": "number of seeds per point (int >= 1)",
    "slo": "objectives: 'p95<=1s', a list of them, or a mapping {p95: 1s}",
    "set": "base overrides: mapping of dotted.path -> value, or list of 'path=value'",
    "budget": "tune only: number of points to evaluate (int >= 1)",
}


@dataclass(frozen=True)
class SweepFile:
    """What a sweep file says; command-line options add to (axes) or replace (the rest) it."""

    path: Path
    axes: tuple[Axis, ...] = ()
    seeds: int | None = None
    slo: tuple[str, ...] | None = None
    overrides: tuple[tuple[str, Any], ...] = ()
    budget: int | None = None


def _positive_int(source: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise sweep_error(source, key, value, "an integer >= 1")
    return value


def _slo_texts(source: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if isinstance(value, dict):
        return tuple(f"{k}<={v}" for k, v in value.items())
    raise sweep_error(source, "slo", value, SWEEP_FILE_KEYS["slo"])


def _override_pairs(source: str, value: Any) -> tuple[tuple[str, Any], ...]:
    if isinstance(value, dict):
        return tuple((str(k), v) for k, v in value.items())
    if isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value):
        return tuple(parse_override(v) for v in value)
    raise sweep_error(source, "set", value, SWEEP_FILE_KEYS["set"])


def read_sweep_file(path: Path) -> SweepFile:
    """Parse and check a sweep file's shape (axes are validated against the scenario later)."""
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise sweep_error(source, "", source, f"cannot read: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise sweep_error(source, "", "<file>", f"not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise sweep_error(source, "", data, "the top level must be a mapping")
    unknown = [k for k in data if k not in SWEEP_FILE_KEYS]
    if unknown:
        raise sweep_error(
            source,
            str(unknown[0]),
            data[unknown[0]],
            f"unknown key; allowed: {', '.join(SWEEP_FILE_KEYS)}",
        )
    vary = data.get("vary") or {}
    if not isinstance(vary, dict):
        raise sweep_error(source, "vary", vary, SWEEP_FILE_KEYS["vary"])
    axes = []
    for key, spec in vary.items():
        origin = f"{source}: vary.{key}"
        try:
            _check_path(str(key))
            if isinstance(spec, list):
                axes.append(axis_from_values(str(key), spec, origin))
            elif isinstance(spec, str):
                axes.append(axis_from_text(str(key), spec, origin))
            else:
                axes.append(axis_from_values(str(key), [spec], origin))
        except ValueError as err:
            raise sweep_error(source, f"vary.{key}", spec, str(err)) from None
    return SweepFile(
        path=path,
        axes=tuple(axes),
        seeds=_positive_int(source, "seeds", data["seeds"]) if "seeds" in data else None,
        slo=_slo_texts(source, data["slo"]) if "slo" in data else None,
        overrides=_override_pairs(source, data["set"]) if "set" in data else (),
        budget=_positive_int(source, "budget", data["budget"]) if "budget" in data else None,
    )
