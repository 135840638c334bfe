"""What the nodes (and, optionally, the GKE cluster) cost up to a given time.

Compute Engine bills VMs per second with a one-minute minimum
(https://cloud.google.com/compute/vm-instance-pricing, "Billing model"): a node that ran 20 s
costs 60 s, one that ran 90.2 s costs 91 s. Here the minute is owed as soon as a node starts,
so a cumulative cost curve never decreases. GKE's cluster management fee is $0.10 per cluster
per hour, billed per second (https://cloud.google.com/kubernetes-engine/pricing); it is off by
default because the free tier's monthly credit covers one zonal cluster. Which instant counts
as a node's ``start`` (the scale-up request, VM RUNNING, or Ready) is the caller's choice; the
VM is billed from RUNNING, a few tens of seconds before Ready.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sim.cluster.catalog import MachineType, machine_type

MINIMUM_BILLED_SECONDS = 60.0
GKE_CLUSTER_FEE_PER_HOUR = 0.10
_EPS = 1e-9  # keeps 60.000000001 s of float noise from billing a 61st second


@dataclass(frozen=True, slots=True)
class NodeBilling:
    """One node's billable life: ``end`` None while it still runs."""

    name: str
    pool: str
    price_per_hour: float
    start: float
    end: float | None = None

    @classmethod
    def for_machine(
        cls, name: str, pool: str, machine: MachineType, start: float, end: float | None = None
    ) -> NodeBilling:
        return cls(name, pool, machine.price_per_hour, start, end)

    def billed_seconds(self, t: float) -> float:
        """Seconds billed by time ``t``: 0 before start, whole seconds, at least 60 after."""
        if t < self.start:
            return 0.0
        stop = t if self.end is None else min(t, self.end)
        ran = math.ceil(max(stop - self.start, 0.0) - _EPS)
        return max(float(ran), MINIMUM_BILLED_SECONDS)

    def cost(self, t: float) -> float:
        """Dollars owed for this node by time ``t``."""
        return self.billed_seconds(t) * self.price_per_hour / 3600.0


@dataclass(frozen=True)
class CostBreakdown:
    """Cumulative cost at one time: per pool, the cluster fee, and the total, in dollars."""

    t: float
    per_pool: Mapping[str, float] = field(default_factory=dict)
    cluster_fee: float = 0.0

    @property
    def nodes(self) -> float:
        return sum(self.per_pool.values())

    @property
    def total(self) -> float:
        return self.nodes + self.cluster_fee


def cluster_fee(
    t: float, cluster_start: float = 0.0, per_hour: float = GKE_CLUSTER_FEE_PER_HOUR
) -> float:
    """The management fee from ``cluster_start`` to ``t``, per second, no minimum."""
    seconds = math.ceil(max(t - cluster_start, 0.0) - _EPS)
    return max(seconds, 0) * per_hour / 3600.0


def cost_at(
    records: Iterable[NodeBilling],
    t: float,
    *,
    include_cluster_fee: bool = False,
    cluster_start: float = 0.0,
    cluster_fee_per_hour: float = GKE_CLUSTER_FEE_PER_HOUR,
) -> CostBreakdown:
    """Cumulative cost at ``t`` of all ``records``, summed per pool."""
    per_pool: dict[str, float] = defaultdict(float)
    for record in records:
        per_pool[record.pool] += record.cost(t)
    fee = cluster_fee(t, cluster_start, cluster_fee_per_hour) if include_cluster_fee else 0.0
    return CostBreakdown(t, dict(sorted(per_pool.items())), fee)


def cost_series(
    records: Sequence[NodeBilling],
    times: Iterable[float],
    *,
    include_cluster_fee: bool = False,
    cluster_start: float = 0.0,
    cluster_fee_per_hour: float = GKE_CLUSTER_FEE_PER_HOUR,
) -> list[CostBreakdown]:
    """:func:`cost_at` at each of ``times`` (e.g. once per simulated second)."""
    return [
        cost_at(
            records,
            t,
            include_cluster_fee=include_cluster_fee,
            cluster_start=cluster_start,
            cluster_fee_per_hour=cluster_fee_per_hour,
        )
        for t in times
    ]


NodeRecord = NodeBilling | tuple[str, str, float, float | None]
"""A :class:`NodeBilling`, or ``(pool, machine type name, start, end or None)``."""


def as_billing(record: NodeRecord) -> NodeBilling:
    """Normalise a :data:`NodeRecord`; tuples take the machine's price from the catalog."""
    if isinstance(record, NodeBilling):
        return record
    pool, machine, start, end = record
    return NodeBilling.for_machine(f"{pool}@{start}", pool, machine_type(machine), start, end)


class RunningBill:
    """:func:`cluster_cost` sampled at increasing times (once a simulated second): a retired
    node's bill is final, so it is added once when the node retires instead of at every
    sample, and each live node's billing is built once."""

    def __init__(self, *, management_fee: bool, cluster_start: float = 0.0) -> None:
        self.management_fee = management_fee
        self.cluster_start = cluster_start
        self.closed = 0.0  # dollars of the nodes already retired
        self.retired = 0  # how many of them
        self._live: dict[str, NodeBilling] = {}
        # The last ``live`` passed and its (start, end, price) per node: the engine passes
        # the same list until a node comes or goes.
        self._seen: Sequence[tuple[str, NodeRecord]] | None = None
        self._terms: list[tuple[float, float | None, float]] = []

    def total(
        self,
        live: Sequence[tuple[str, NodeRecord]],
        retiring: Sequence[tuple[str, NodeRecord]],
        t: float,
    ) -> float:
        """Dollars by ``t``: ``live``, the nodes now, and ``retiring``, those retired since the
        last call, each as (name, record). ``live`` is read again only when it is another
        object than at the last call (pass a new list when the nodes change)."""
        for name, record in retiring:
            self._live.pop(name, None)
            self.closed += as_billing(record).cost(t)
        self.retired += len(retiring)
        if live is not self._seen:  # another list of live nodes: their billings, once
            bills = self._live
            terms = []
            for name, record in live:
                billing = bills.get(name)
                if billing is None:
                    billing = bills[name] = as_billing(record)
                terms.append((billing.start, billing.end, billing.price_per_hour))
            self._seen, self._terms = live, terms
        total = self.closed
        for start, end, price in self._terms:
            # NodeBilling.cost(t), inlined: it runs for every node every simulated second
            if t < start:
                billed = 0.0
            else:
                ran = math.ceil(max((t if end is None else min(t, end)) - start, 0.0) - _EPS)
                billed = max(float(ran), MINIMUM_BILLED_SECONDS)
            total += billed * price / 3600.0
        if self.management_fee:
            total += cluster_fee(t, self.cluster_start)
        return total


def cluster_cost(
    records: Iterable[NodeRecord],
    t: float,
    *,
    management_fee: bool = False,
    cluster_start: float = 0.0,
) -> float:
    """Total dollars by ``t``: every node's bill plus, if ``management_fee``, GKE's $0.10/h."""
    breakdown = cost_at(
        [as_billing(r) for r in records],
        t,
        include_cluster_fee=management_fee,
        cluster_start=cluster_start,
    )
    return breakdown.total
