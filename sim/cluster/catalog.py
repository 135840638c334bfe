"""Machine types, GKE node allocatable, and kube-system pods: data loaded from YAML.

The numbers live in ``machines.yaml`` and ``system_pods.yaml`` next to this module, each with
a ``provenance`` section; this module only reads them and applies GKE's reservation formula
(https://cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from importlib import resources as importlib_resources
from types import MappingProxyType
from typing import Any, Literal

import yaml

from sim.units import cpu_millis, memory_bytes

GPU_RESOURCE = "nvidia.com/gpu"
"""The extended resource name GKE's device plugin advertises for NVIDIA GPUs."""

_MACHINES_FILE = "machines.yaml"
_SYSTEM_PODS_FILE = "system_pods.yaml"
_GIB = 2**30


class UnknownMachineTypeError(ValueError):
    """A machine type name that is not in ``machines.yaml``; the message lists the allowed ones."""


@dataclass(frozen=True, slots=True)
class Resources:
    """Requests or capacity as Kubernetes counts them: integer millicores, bytes and GPUs."""

    cpu_milli: int = 0
    memory_bytes: int = 0
    gpu: int = 0

    @classmethod
    def parse(
        cls, cpu: str | int | float = 0, memory: str | int | float = 0, gpu: int = 0
    ) -> Resources:
        """From Kubernetes quantities: ``Resources.parse("3", "4Gi")``."""
        return cls(cpu_millis(cpu), memory_bytes(memory), int(gpu))

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_milli + other.cpu_milli,
            self.memory_bytes + other.memory_bytes,
            self.gpu + other.gpu,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_milli - other.cpu_milli,
            self.memory_bytes - other.memory_bytes,
            self.gpu - other.gpu,
        )

    def __mul__(self, times: int) -> Resources:
        return Resources(self.cpu_milli * times, self.memory_bytes * times, self.gpu * times)

    __rmul__ = __mul__

    def fits_in(self, free: Resources) -> bool:
        """True when every component is at most ``free``'s."""
        return not self.insufficient(free)

    def insufficient(self, free: Resources) -> tuple[str, ...]:
        """Resource names short in ``free``, in NodeResourcesFit's order (cpu, memory, extended).

        Upstream: kubernetes pkg/scheduler/framework/plugins/noderesources/fit.go
        ``fitsRequest``; a zero request never fails, even on a node without that resource.
        """
        short: list[str] = []
        if self.cpu_milli > 0 and self.cpu_milli > free.cpu_milli:
            short.append("cpu")
        if self.memory_bytes > 0 and self.memory_bytes > free.memory_bytes:
            short.append("memory")
        if self.gpu > 0 and self.gpu > free.gpu:
            short.append(GPU_RESOURCE)
        return tuple(short)


def sum_resources(
    items: Iterator[Resources] | list[Resources] | tuple[Resources, ...],
) -> Resources:
    """The component-wise sum of ``items`` (the cluster autoscaler sums every node's pods at
    every scan: one Resources at the end, not one per item)."""
    cpu = memory = gpu = 0
    for item in items:
        cpu += item.cpu_milli
        memory += item.memory_bytes
        gpu += item.gpu
    return Resources(cpu, memory, gpu)


@dataclass(frozen=True, slots=True)
class MachineType:
    """One Compute Engine machine type as a GKE node.

    ``price_per_hour`` is the on-demand price in us-central1 including attached GPUs
    (``gpu_price_per_hour`` of it); ``speed_factor`` is the relative per-vCPU speed used by
    latency profiles (n1 = 1.0).
    """

    name: str
    family: str
    vcpus: int
    memory_bytes: int
    price_per_hour: float
    speed_factor: float
    gpu_type: str | None = None
    gpu_count: int = 0
    gpu_price_per_hour: float = 0.0

    @property
    def capacity(self) -> Resources:
        """What the kubelet reports as capacity (nominal memory; see machines.yaml)."""
        return Resources(self.vcpus * 1000, self.memory_bytes, self.gpu_count)

    @property
    def has_gpu(self) -> bool:
        return self.gpu_count > 0


@dataclass(frozen=True, slots=True)
class Reservation:
    """GKE Standard's kube-reserved tiers (plan-node-sizes), read from machines.yaml."""

    cpu_tiers: tuple[tuple[Fraction | None, Fraction], ...]
    memory_tiers: tuple[tuple[Fraction | None, Fraction], ...]
    memory_eviction_threshold: int
    small_machine_memory: int
    small_machine_reserved: int


@dataclass(frozen=True)
class Catalog(Mapping[str, MachineType]):
    """The machine types by name, plus the file's provenance and GKE's reservation tiers."""

    machines: Mapping[str, MachineType]
    reservation: Reservation
    max_pods_per_node: int
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> MachineType:
        try:
            return self.machines[name]
        except KeyError:
            allowed = ", ".join(sorted(self.machines))
            raise UnknownMachineTypeError(
                f"unknown machine type {name!r} in {_MACHINES_FILE}; allowed: {allowed}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.machines)

    def __len__(self) -> int:
        return len(self.machines)


def _read_yaml(filename: str) -> dict[str, Any]:
    text = importlib_resources.files("sim.cluster").joinpath(filename).read_text("utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{filename}: expected a mapping at the top level")
    return data


def _tiers(raw: list[list[Any]], unit: int) -> tuple[tuple[Fraction | None, Fraction], ...]:
    return tuple(
        (None if size is None else Fraction(str(size)) * unit, Fraction(str(frac)))
        for size, frac in raw
    )


def _machine(name: str, raw: Mapping[str, Any], machines: Mapping[str, MachineType]) -> MachineType:
    if "base" in raw:
        base = machines.get(raw["base"])
        if base is None:
            raise ValueError(
                f"{_MACHINES_FILE}: machines.{name}.base {raw['base']!r} is not defined"
            )
        gpu = raw.get("gpu") or {}
        gpu_price = float(gpu.get("price_per_hour", 0.0)) * int(gpu.get("count", 0))
        return MachineType(
            name=name,
            family=base.family,
            vcpus=base.vcpus,
            memory_bytes=base.memory_bytes,
            price_per_hour=base.price_per_hour + gpu_price,
            speed_factor=float(raw.get("speed_factor", base.speed_factor)),
            gpu_type=gpu.get("type"),
            gpu_count=int(gpu.get("count", 0)),
            gpu_price_per_hour=gpu_price,
        )
    missing = {"family", "vcpus", "memory", "price_per_hour", "speed_factor"} - set(raw)
    if missing:
        raise ValueError(f"{_MACHINES_FILE}: machines.{name} lacks {sorted(missing)}")
    return MachineType(
        name=name,
        family=str(raw["family"]),
        vcpus=int(raw["vcpus"]),
        memory_bytes=memory_bytes(raw["memory"]),
        price_per_hour=float(raw["price_per_hour"]),
        speed_factor=float(raw["speed_factor"]),
    )


@cache
def load_catalog() -> Catalog:
    """The packaged ``machines.yaml`` as a :class:`Catalog` (read once, then cached)."""
    data = _read_yaml(_MACHINES_FILE)
    machines: dict[str, MachineType] = {}
    # Plain machines first so that GPU variants can refer to their ``base``.
    raw_machines: dict[str, Any] = data["machines"]
    for name, raw in sorted(raw_machines.items(), key=lambda kv: "base" in kv[1]):
        machines[name] = _machine(name, raw, machines)
    res = data["gke_reservation"]
    reservation = Reservation(
        cpu_tiers=_tiers(res["cpu_tiers"], 1000),
        memory_tiers=_tiers(res["memory_tiers"], _GIB),
        memory_eviction_threshold=memory_bytes(res["memory_eviction_threshold"]),
        small_machine_memory=memory_bytes(res["small_machine_memory"]),
        small_machine_reserved=memory_bytes(res["small_machine_reserved"]),
    )
    return Catalog(
        machines=MappingProxyType(dict(sorted(machines.items()))),
        reservation=reservation,
        max_pods_per_node=int(data["max_pods_per_node"]),
        provenance=MappingProxyType(data.get("provenance", {})),
    )


def machine_type(name: str) -> MachineType:
    """The catalog entry for ``name``; raises :class:`UnknownMachineTypeError` listing the names."""
    return load_catalog()[name]


def _tiered(amount: int, tiers: tuple[tuple[Fraction | None, Fraction], ...]) -> Fraction:
    reserved, left = Fraction(0), Fraction(amount)
    for size, fraction in tiers:
        part = left if size is None else min(left, size)
        reserved += part * fraction
        left -= part
        if left <= 0:
            break
    return reserved


def reserved(machine: MachineType, reservation: Reservation | None = None) -> Resources:
    """kube-reserved plus the eviction threshold GKE withholds from pods, rounded up."""
    res = reservation or load_catalog().reservation
    cpu = _tiered(machine.vcpus * 1000, res.cpu_tiers)
    if machine.memory_bytes < res.small_machine_memory:
        mem = Fraction(res.small_machine_reserved)
    else:
        mem = _tiered(machine.memory_bytes, res.memory_tiers)
    mem += res.memory_eviction_threshold
    return Resources(math.ceil(cpu), math.ceil(mem), 0)


def allocatable(machine: MachineType, reservation: Reservation | None = None) -> Resources:
    """Node allocatable by GKE's formula (plan-node-sizes): capacity minus :func:`reserved`.

    CPU: 6% of the first core, 1% of the next, 0.5% of the next 2, 0.25% above 4.
    Memory: 25% of the first 4 GiB, 20% of the next 4, 10% of the next 8, 6% of the next 112,
    2% above 128 GiB (255 MiB flat under 1 GiB), plus the 100 MiB eviction threshold.
    n1-standard-4: 4000m - 80m = 3920m; 15 GiB - 2.5 GiB - 100 MiB = 12700 MiB.
    """
    return machine.capacity - reserved(machine, reservation)


# --------------------------------------------------------------------------- system pods

SystemPodKind = Literal["static", "DaemonSet", "Deployment"]


@dataclass(frozen=True, slots=True)
class ReplicaLadder:
    """cluster-proportional-autoscaler ``linear`` mode (kube-dns-autoscaler on GKE)."""

    cores_per_replica: int
    nodes_per_replica: int
    prevent_single_point_failure: bool

    def replicas(self, nodes: int, cores: int) -> int:
        """``max(ceil(cores/cpr), ceil(nodes/npr))``, at least 2 with 2+ nodes when asked."""
        wanted = max(
            math.ceil(cores / self.cores_per_replica), math.ceil(nodes / self.nodes_per_replica)
        )
        if self.prevent_single_point_failure and nodes > 1:
            wanted = max(wanted, 2)
        return max(wanted, 1)


@dataclass(frozen=True, slots=True)
class SystemPod:
    """A kube-system pod with its requests; ``kind`` decides how the CA treats it on drain."""

    name: str
    kind: SystemPodKind
    requests: Resources
    namespace: str = "kube-system"
    gpu_nodes_only: bool = False
    has_pdb: bool = False
    ladder: ReplicaLadder | None = None

    def replicas(self, nodes: int, cores: int) -> int:
        """How many replicas a cluster of ``nodes`` nodes and ``cores`` cores runs (1 if fixed)."""
        return 1 if self.ladder is None else self.ladder.replicas(nodes, cores)


@dataclass(frozen=True, slots=True)
class SystemPods:
    """``per_node``: on every node (DaemonSets, static pods); ``per_cluster``: Deployments."""

    per_node: tuple[SystemPod, ...]
    per_cluster: tuple[SystemPod, ...]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def for_node(self, machine: MachineType) -> tuple[SystemPod, ...]:
        """The per-node pods that run on a node of ``machine`` (GPU-only ones on GPU nodes)."""
        return tuple(p for p in self.per_node if machine.has_gpu or not p.gpu_nodes_only)

    def node_overhead(self, machine: MachineType) -> Resources:
        """Sum of the per-node pods' requests on a node of ``machine``."""
        return sum_resources([p.requests for p in self.for_node(machine)])

    def cluster_overhead(self) -> Resources:
        """Sum of one replica of each once-per-cluster pod's requests."""
        return sum_resources([p.requests for p in self.per_cluster])


def _system_pod(raw: Mapping[str, Any], where: str) -> SystemPod:
    kind = raw.get("kind")
    if kind not in ("static", "DaemonSet", "Deployment"):
        raise ValueError(
            f"{_SYSTEM_PODS_FILE}: {where}.kind must be static, DaemonSet or Deployment, "
            f"got {kind!r}"
        )
    ladder_raw = raw.get("replicas")
    ladder = None
    if isinstance(ladder_raw, Mapping):
        ladder = ReplicaLadder(
            int(ladder_raw["cores_per_replica"]),
            int(ladder_raw["nodes_per_replica"]),
            bool(ladder_raw.get("prevent_single_point_failure", False)),
        )
    return SystemPod(
        name=str(raw["name"]),
        kind=kind,
        requests=Resources.parse(raw.get("cpu", 0), raw.get("memory", 0)),
        namespace=str(raw.get("namespace", "kube-system")),
        gpu_nodes_only=bool(raw.get("gpu_nodes_only", False)),
        has_pdb=bool(raw.get("has_pdb", False)),
        ladder=ladder,
    )


@cache
def load_system_pods() -> SystemPods:
    """The packaged ``system_pods.yaml`` (read once, then cached)."""
    data = _read_yaml(_SYSTEM_PODS_FILE)
    per_node = tuple(_system_pod(r, f"per_node[{i}]") for i, r in enumerate(data["per_node"]))
    per_cluster = tuple(
        _system_pod(r, f"per_cluster[{i}]") for i, r in enumerate(data["per_cluster"])
    )
    return SystemPods(per_node, per_cluster, MappingProxyType(data.get("provenance", {})))
