"""Latency profiles: how much CPU one ResNet101 request burns, and how parallel it runs.

A profile is data (``sim/profiles/*.yaml``) with provenance. A scenario names a family
(``resnet101-tfserving``); the node's machine type picks the profile made for it, or the
nearest one in the family rescaled by the catalog's per-vCPU speed factor (recorded in
``Profile.scaled_from``), so changing the machine type changes the latency model too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

import yaml

from sim.cluster.catalog import machine_type


@dataclass(frozen=True)
class Profile:
    name: str
    family: str
    machine_type: str
    cpu_seconds_median: float
    cpu_seconds_sigma: float
    parallelism: float
    overhead_s: float
    idle_cpu_cores: float
    scaled_from: str | None = None

    def alone_latency(self) -> float:
        """Median latency of a request with the pod to itself."""
        return self.overhead_s + self.cpu_seconds_median / self.parallelism


def _parse(data: dict[str, Any], origin: str) -> Profile:
    if data.get("schema_version") != 1:
        raise ValueError(f"{origin}: schema_version must be 1, got {data.get('schema_version')!r}")
    service = data.get("service") or {}
    try:
        return Profile(
            name=str(data["name"]),
            family=str(data["family"]),
            machine_type=str(data["machine_type"]),
            cpu_seconds_median=float(service["cpu_seconds_median"]),
            cpu_seconds_sigma=float(service.get("cpu_seconds_sigma", 0.0)),
            parallelism=float(service["parallelism"]),
            overhead_s=float(service.get("overhead_s", 0.0)),
            idle_cpu_cores=float(service.get("idle_cpu_cores", 0.0)),
        )
    except KeyError as err:
        raise ValueError(f"{origin}: missing field {err.args[0]!r}") from None


@cache
def builtin_profiles() -> tuple[Profile, ...]:
    folder = resources.files("sim") / "profiles"
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            found.append(_parse(yaml.safe_load(entry.read_text()), entry.name))
    return tuple(found)


def profile_for(family: str, machine: str) -> Profile:
    """The family's profile for ``machine``, rescaled from the nearest one when none matches."""
    members = [p for p in builtin_profiles() if p.family == family]
    if not members:
        known = sorted({p.family for p in builtin_profiles()})
        raise ValueError(f"unknown profile family {family!r}; known: {', '.join(known)}")
    for profile in members:
        if profile.machine_type == machine:
            return profile
    target = machine_type(machine)

    def distance(p: Profile) -> tuple[float, str]:
        source = machine_type(p.machine_type)
        return abs(source.speed_factor - target.speed_factor) + abs(
            source.vcpus - target.vcpus
        ), p.name

    nearest = min(members, key=distance)
    speedup = target.speed_factor / machine_type(nearest.machine_type).speed_factor
    return replace(
        nearest,
        name=f"{family}-{machine}",
        machine_type=machine,
        cpu_seconds_median=nearest.cpu_seconds_median / speedup,
        scaled_from=nearest.name,
    )
