"""Expanders: pick one node pool among those whose new nodes would help pending pods.

Each filter keeps the best options (cluster-autoscaler/expander/*); remaining ties are broken
at random with the CA's generator, as upstream's chain ends with the random expander. Options
are sorted by pool name first so that a seeded run is reproducible.

- ``random`` (expander/random): any option.
- ``most-pods`` (expander/mostpods): the most pods helped.
- ``least-waste`` (expander/waste): the least ``(idle cpu + idle memory)`` fraction of the new
  nodes' capacity.
- ``price`` (expander/price, simplified): the lowest ``(nodes' price + s) / (pods' price + s)``
  with GCE's base per-vCPU and per-GiB prices for pods (cloudprovider/gce/gce_price_info.go) and
  ``s`` the price of a 0.5-CPU/500Mi stabilisation pod; GPU pools get upstream's fixed
  unfitness of 1000 so CPU pods avoid them. The preferred-node-size unfitness is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim.cluster.ca.model import NodePool
from sim.cluster.ca.options import Expander
from sim.cluster.catalog import Resources, sum_resources
from sim.cluster.scheduler import PodView

BASE_CPU_PRICE_PER_HOUR = 0.033174  # gce_price_info.go cpuPricePerHour
BASE_MEMORY_PRICE_PER_GIB_HOUR = 0.004446  # gce_price_info.go memoryPricePerHourPerGb
PRICE_STABILIZATION_POD = Resources(500, 500 * 2**20)  # expander/price/price.go
GPU_UNFITNESS = 1000.0  # expander/price/price.go gpuUnfitnessOverride


@dataclass(frozen=True)
class ExpansionOption:
    """Add ``node_count`` nodes to ``pool`` so that ``pods`` can schedule."""

    pool: NodePool
    node_count: int
    pods: tuple[PodView, ...]


def _pod_price(requests: Resources, gpu_price: float) -> float:
    return (
        requests.cpu_milli / 1000 * BASE_CPU_PRICE_PER_HOUR
        + requests.memory_bytes / 2**30 * BASE_MEMORY_PRICE_PER_GIB_HOUR
        + requests.gpu * gpu_price
    )


def _waste(option: ExpansionOption) -> float:
    # expander/waste uses the node's capacity, not its allocatable.
    capacity = option.pool.machine.capacity * option.node_count
    requested = sum_resources([p.requests for p in option.pods])
    wasted_cpu = (capacity.cpu_milli - requested.cpu_milli) / capacity.cpu_milli
    wasted_mem = (capacity.memory_bytes - requested.memory_bytes) / capacity.memory_bytes
    return wasted_cpu + wasted_mem


def _price_score(option: ExpansionOption) -> float:
    machine = option.pool.machine
    gpu_price = machine.gpu_price_per_hour / machine.gpu_count if machine.gpu_count else 0.0
    nodes = machine.price_per_hour * option.node_count
    pods = sum(_pod_price(p.requests, gpu_price) for p in option.pods)
    stabilization = _pod_price(PRICE_STABILIZATION_POD, 0.0)
    unfitness = GPU_UNFITNESS if machine.has_gpu else 1.0
    return unfitness * (nodes + stabilization) / (pods + stabilization)


def best_options(expander: Expander, options: Sequence[ExpansionOption]) -> list[ExpansionOption]:
    """The options ``expander`` rates best (all of them for ``random``), in pool-name order."""
    ordered = sorted(options, key=lambda o: o.pool.name)
    if expander is Expander.RANDOM or not ordered:
        return ordered
    if expander is Expander.MOST_PODS:
        most = max(len(o.pods) for o in ordered)
        return [o for o in ordered if len(o.pods) == most]
    key = _waste if expander is Expander.LEAST_WASTE else _price_score
    scores = [key(o) for o in ordered]
    best = min(scores)
    return [o for o, s in zip(ordered, scores, strict=True) if s == best]


def choose(
    expander: Expander, options: Sequence[ExpansionOption], rng: np.random.Generator | None
) -> ExpansionOption | None:
    """The option to execute, or None when there is none.

    Ties go to a uniform draw from ``rng`` (drawn only when there is a tie), or, without a
    generator, to the first by pool name.
    """
    best = best_options(expander, options)
    if not best:
        return None
    if len(best) == 1 or rng is None:
        return best[0]
    return best[int(rng.integers(len(best)))]
