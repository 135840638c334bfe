"""Per-pod time series (``pods.csv``): requests in flight, completed req/s, CPU and connected
users per pod, so uneven load (users pinned to their first pod by keep-alive) is visible.

Sampled by the engine's once-a-second loop, but only every ``every`` seconds: a long run with
many replicas would otherwise write a row per pod per second. Rates are over the interval
since the pod's previous sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from sim.objects import Pod, PodPhase
from sim.serving.server import Server

# Assumption: about 600 samples per pod are enough to see load imbalance in a report (one per
# second up to 10 minutes, one per 6 s for an hour) and keep pods.csv small.
MAX_SAMPLES_PER_POD = 600

POD_COLUMNS = ("t", "pod", "node", "phase", "in_flight", "completed_rps", "cpu_cores", "users")


def sample_interval(duration: float, max_samples: int = MAX_SAMPLES_PER_POD) -> int:
    """Whole seconds between per-pod samples so a pod has at most ``max_samples`` of them."""
    return max(1, math.ceil(duration / max_samples))


def pod_phase(pod: Pod) -> str:
    """kubectl get pods' STATUS, short: Pending, Running, Ready or Terminating."""
    if pod.terminating:
        return "Terminating"
    if pod.phase is PodPhase.RUNNING:
        return "Ready" if pod.ready else "Running"
    return str(pod.phase)


def in_flight(server: Server) -> int:
    """Requests the server holds: running, waiting for a REST thread, or batched."""
    waiting = len(server.queue)
    if server.batching is None:
        return waiting + server.n
    batched = sum(len(m) for m in server.members.values()) + len(server.batch_open)
    return waiting + batched + sum(len(b) for b in server.batches)


class PodSeries:
    """Rows of ``POD_COLUMNS``, one per pod per sample."""

    def __init__(self, duration: float, max_samples: int = MAX_SAMPLES_PER_POD) -> None:
        self.every = sample_interval(duration, max_samples)
        self.columns: dict[str, list[object]] = {c: [] for c in POD_COLUMNS}
        self._last: dict[str, tuple[float, int, float]] = {}  # pod -> (t, served, cpu s)

    def due(self, t: int) -> bool:
        return t % self.every == 0

    def sample(self, t: int, pods: Iterable[Pod], users: dict[Server, int]) -> None:
        # One append per column per pod: bound once here, not looked up for every pod.
        add_t, add_pod, add_node, add_phase, add_flight, add_rps, add_cpu, add_users = (
            self.columns[c].append for c in POD_COLUMNS
        )
        last = self._last
        now = float(t)
        for pod in pods:
            server = pod.server
            served = server.served if server is not None else 0
            cpu = pod.cpu_seconds(now)
            before = last.get(pod.name)
            last[pod.name] = (now, served, cpu)
            if before is None or t <= before[0]:
                rate, cores = None, None
            else:
                span = t - before[0]
                rate = round((served - before[1]) / span, 4)
                cores = round((cpu - before[2]) / span, 4)
            add_t(t)
            add_pod(pod.name)
            add_node(pod.node.name if pod.node is not None else "")
            add_phase(pod_phase(pod))
            add_flight(in_flight(server) if server is not None else 0)
            add_rps(rate)
            add_cpu(cores)
            add_users(users.get(server, 0) if server is not None else 0)
