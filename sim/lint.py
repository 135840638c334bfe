"""What is worth saying about a valid scenario before it runs: nothing here is an error, but
each is a likely surprise.

- a duration written as a bare number (``--set duration=45``): seconds were taken;
- a run that ends before its load does (a step shape's ``time_limit``, the last stage, a
  spike, a replay file): the run sees only part of the load;
- a replay file that ends before the run: the rate is 0, or Locust stops, from there on;
- a REST pool of one thread, which TF Serving's HTTP event loop holds: no REST request would
  be answered.

Pure functions on the validated scenario and the raw mapping it came from.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from sim.scenario import (
    ConstantUsers,
    LocustLoad,
    OpenLoopLoad,
    ReplayRate,
    ReplayUsers,
    Scenario,
    SpikeRate,
    StagesShape,
    StepShape,
    _nonneg_duration,
)
from sim.units import format_duration


def scenario_notes(scenario: Scenario, raw: Mapping[str, Any]) -> list[str]:
    """Every note, bare durations first."""
    return [*bare_durations(scenario, raw), *load_cut_short(scenario), *rest_pool(scenario)]


def rest_pool(scenario: Scenario) -> list[str]:
    """``--rest_api_num_threads=1``: the event loop runs on the pool's only thread
    (net_http EvHTTPServer::StartAcceptingRequests), so TF Serving answers no REST request;
    the simulator serves them one at a time (``sim.serving.model.rest_handlers``)."""
    if scenario.serving.rest_api_num_threads != 1:
        return []
    return [
        "serving.rest_api_num_threads=1: TF Serving's HTTP event loop holds that thread, so a "
        "real server would answer no REST request (simulated as one at a time); set 2 or more"
    ]


def bare_durations(model: BaseModel, raw: Mapping[str, Any]) -> list[str]:
    """Duration fields given as a number without a unit, with the unit that was taken."""
    notes = []
    for container, key, path in duration_fields(model, raw):
        given = container[key]
        if _bare_number(given):
            shown = str(given).strip()
            notes.append(
                f"{path}={shown} has no unit: read as {shown} seconds (write {shown}s, or "
                f"{shown}m / {shown}h for minutes / hours)"
            )
    return notes


def with_units(model: BaseModel, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (``model`` dumped) with every duration written with its unit (``45s``,
    ``20m``), so a file scalelab writes reads back without notes about bare numbers."""
    for container, key, _ in duration_fields(model, data):
        if _bare_number(container[key]):
            container[key] = format_duration(float(container[key]))
    return data


def duration_fields(
    model: BaseModel, raw: Mapping[str, Any], prefix: str = ""
) -> Iterator[tuple[Any, str, str]]:
    """(mapping, key, dotted path) of each duration field present in ``raw``, the mapping
    ``model`` was built from (nested models and lists of them included)."""
    for name, info in type(model).model_fields.items():
        key = info.alias or name
        if key not in raw:
            continue
        given, value, path = raw[key], getattr(model, name), f"{prefix}{key}"
        duration = any(getattr(m, "func", None) is _nonneg_duration for m in info.metadata)
        if duration or _is_duration(info.annotation):
            yield raw, key, path
        elif isinstance(value, BaseModel) and isinstance(given, Mapping):
            yield from duration_fields(value, given, f"{path}.")
        elif isinstance(value, list | tuple) and isinstance(given, list):
            for i, (item, raw_item) in enumerate(zip(value, given, strict=False)):
                if isinstance(item, BaseModel) and isinstance(raw_item, Mapping):
                    yield from duration_fields(item, raw_item, f"{path}[{i}].")


def load_cut_short(scenario: Scenario) -> list[str]:
    """The run ending before the load shape, or a replay file ending before the run."""
    duration = scenario.duration
    run = f"the run's duration {format_duration(duration)}"
    load = scenario.load
    notes = []
    end, what = _load_end(load)
    if end is not None and duration < end:
        notes.append(
            f"{run} ends before the load does ({what} at {format_duration(end)}): only its first "
            f"{format_duration(duration)} is simulated; set duration={format_duration(end)} or "
            "more to see all of it"
        )
    replay = _replay(load)
    if replay is not None:
        stop = duration
        if isinstance(load, OpenLoopLoad) and load.stop_at is not None:
            stop = min(stop, load.stop_at)
        if replay.end < stop:
            after = "Locust stops" if isinstance(replay, ReplayUsers) else "the rate is 0"
            notes.append(
                f"replay file {replay.file} ends at {format_duration(replay.end)}, before "
                f"{run}: {after} from there on (hold_last: sets how long its last row holds)"
            )
    return notes


def _load_end(load: LocustLoad | OpenLoopLoad) -> tuple[float | None, str]:
    if isinstance(load, LocustLoad):
        shape = load.shape
        if isinstance(shape, StepShape):
            return shape.time_limit, "steps stop (time_limit)"
        if isinstance(shape, StagesShape):
            return shape.stages[-1].until, "the last stage ends"
        if isinstance(shape, ConstantUsers):
            return shape.time_limit, "users stop (time_limit)"
        return None, ""  # a replay: load_cut_short's second note says where it ends
    rate = load.rate
    ends = []
    if isinstance(rate, SpikeRate):
        ends.append((rate.start + rate.duration, "the spike ends"))
    if isinstance(rate, ReplayRate):
        ends.append((rate.end, f"{rate.file} ends"))
    if load.stop_at is not None:
        ends = [(min(t, load.stop_at), w) for t, w in ends if t <= load.stop_at]
    return min(ends) if ends else (None, "")


def _replay(load: LocustLoad | OpenLoopLoad) -> ReplayRate | ReplayUsers | None:
    if isinstance(load, LocustLoad):
        return load.shape if isinstance(load.shape, ReplayUsers) else None
    return load.rate if isinstance(load.rate, ReplayRate) else None


def _is_duration(annotation: Any) -> bool:
    """``Duration`` or ``Duration | None``: an Annotated float carrying the duration parser."""
    if typing.get_origin(annotation) is typing.Annotated:
        return any(getattr(m, "func", None) is _nonneg_duration for m in annotation.__metadata__)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_duration(arg) for arg in typing.get_args(annotation))
    return False


def _bare_number(given: Any) -> bool:
    if isinstance(given, bool):
        return False
    if isinstance(given, int | float):
        return True
    if isinstance(given, str):
        try:
            float(given.strip())
        except ValueError:
            return False
        return True
    return False
