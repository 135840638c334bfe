"""The Kubernetes objects the control plane moves around: plain mutable records."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sim.cluster.ca.model import NodePhase
from sim.cluster.scheduler import PodView
from sim.serving.server import NodeCpu, Server


class PodPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass
class Node:
    name: str
    pool: str
    machine: str
    labels: dict[str, str]
    alloc_cpu: int  # millicores
    alloc_memory: int  # bytes
    vcpus: float
    created: float
    phase: NodePhase = NodePhase.PROVISIONING
    deleted_at: float | None = None
    system_pods: tuple[PodView, ...] = ()  # DaemonSets everywhere; kube-system Deployments on one
    pods: list[Pod] = field(default_factory=list)
    images: set[str] = field(default_factory=set)
    pulling: dict[str, float] = field(default_factory=dict)  # image -> pull done time
    cpu: NodeCpu | None = None  # shared by its serving pods, made with the first
    pods_cpu: int = 0  # millicores requested by ``pods``, kept on bind and unbind
    pods_memory: int = 0

    def bind(self, pod: Pod) -> None:
        self.pods.append(pod)
        self.pods_cpu += pod.cpu_request
        self.pods_memory += pod.memory_request

    def unbind(self, pod: Pod) -> None:
        self.pods.remove(pod)
        self.pods_cpu -= pod.cpu_request
        self.pods_memory -= pod.memory_request

    @property
    def requested_cpu(self) -> int:
        return sum(p.requests.cpu_milli for p in self.system_pods) + self.pods_cpu

    @property
    def requested_memory(self) -> int:
        return sum(p.requests.memory_bytes for p in self.system_pods) + self.pods_memory


@dataclass
class Pod:
    name: str
    created: float
    cpu_request: int
    memory_request: int
    cpu_limit: int | None
    phase: PodPhase = PodPhase.PENDING
    node: Node | None = None
    start_time: float | None = None  # status.startTime: the kubelet accepted the pod
    ready: bool = False
    ready_transition: float | None = None
    deletion_at: float | None = None  # metadata.deletionTimestamp
    server: Server | None = None
    load_cpu_cores: float = 0.0  # CPU burnt while the model loads
    load_window: tuple[float, float] | None = None
    unschedulable_reason: str | None = None
    view: PodView | None = None  # the scheduler's and the CA's view, made once

    @property
    def terminating(self) -> bool:
        return self.deletion_at is not None

    def cpu_seconds(self, now: float) -> float:
        """The container's cumulative CPU time, as the kubelet (cAdvisor) reports it."""
        total = 0.0
        if self.load_window is not None:
            start, end = self.load_window
            total += self.load_cpu_cores * max(0.0, min(now, end) - start)
        if self.server is not None:
            self.server.advance(now)
            total += self.server.cpu_seconds
        return total
