"""The ``scalelab run`` command that re-runs one point of a sweep or tune on its own.

A point is the scenario file plus the sweep's ``--set`` plus its axis values; ``load.scale``
is no scenario field (it multiplies several), so the command sets what the point's scenario
mapping holds that the file does not: the leaves that differ, each as ``--set path=value``
with the value in YAML (what ``--set`` reads). The command gives the point's scenario exactly
(the same scenario hash), run from the directory the sweep ran in.
"""

from __future__ import annotations

import shlex
from typing import Any

import yaml

from sim.loader import read_scenario_data
from sim.sweep.plan import Base, Point, point_data


def changed_leaves(before: Any, after: Any, path: str = "") -> list[tuple[str, Any]]:
    """(dotted path, new value) of each leaf of ``after`` that differs from ``before``; a list
    whose length changed is one leaf; a key ``after`` dropped cannot be said with ``--set``."""
    if isinstance(before, dict) and isinstance(after, dict):
        gone = set(before) - set(after)
        if gone:
            raise ValueError(f"{path or 'the scenario'}: {sorted(gone)} removed; --set cannot")
        out: list[tuple[str, Any]] = []
        for key, value in after.items():
            where = f"{path}.{key}" if path else str(key)
            out += (
                changed_leaves(before.get(key), value, where) if key in before else [(where, value)]
            )
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out = []
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            out += changed_leaves(b, a, f"{path}[{i}]")
        return out
    return [] if before == after else [(path, after)]


def yaml_value(value: Any) -> str:
    """``value`` as ``--set`` reads it back (YAML, one line): 0.3, e2-standard-4, '1.10'."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def rerun_command(base: Base, point: Point, seed: int) -> str:
    """``scalelab run FILE --set ... --seed N``, shell-quoted."""
    raw = read_scenario_data(base.path)
    raw.setdefault("name", base.path.stem)
    args = ["scalelab", "run", str(base.path)]
    for path, value in changed_leaves(raw, point_data(base, point.values)):
        args += ["--set", f"{path}={yaml_value(value)}"]
    return shlex.join([*args, "--seed", str(seed)])
