"""Nodes, scheduling, the cluster autoscaler and cost: pure decision cores, no SimPy, no clock.

Modelled (each module says where upstream does the same):

- ``catalog``: machine types from ``machines.yaml`` (n1/e2/n2-standard-2..16 and an
  n1-standard-4 + T4, us-central1 on-demand prices, a per-vCPU speed factor), GKE's
  allocatable formula, and the kube-system pods of ``system_pods.yaml``.
- ``scheduler``: kube-scheduler's fit (cordon, taints, nodeSelector, requests vs allocatable),
  LeastAllocated / MostAllocated scoring, the upstream "0/N nodes are available: ..." message.
- ``autoscaler`` (with ``ca/``): one cluster-autoscaler loop — give up nodes that never came
  up, scale-up by binpacking pending pods onto pool templates with an expander, scale-down of
  underused nodes whose pods can move, after the unneeded time and outside the cooldowns;
  GKE's balanced and optimize-utilization profiles; node lifecycle phases and provisioning
  delays.
- ``cost``: per-second billing with a one-minute minimum per node, an optional cluster fee.

Not modelled: pod priority and preemption, affinity other than nodeSelector, topology
spreading, volumes, node auto-provisioning, balancing similar node groups, spot VMs, unready
node scale-down, and the exact timing of evictions (the SimPy world's job).
"""

from sim.cluster.autoscaler import decide
from sim.cluster.ca.model import (
    AutoscalerDecision,
    AutoscalerState,
    ClusterSnapshot,
    NodePhase,
    NodePool,
    NodeSnapshot,
    ProvisioningDelay,
)
from sim.cluster.ca.options import AutoscalerOptions
from sim.cluster.catalog import MachineType, Resources, allocatable, load_catalog, machine_type
from sim.cluster.cost import NodeBilling, cost_at
from sim.cluster.scheduler import NodeView, Placement, PodView, schedule

__all__ = [
    "AutoscalerDecision",
    "AutoscalerOptions",
    "AutoscalerState",
    "ClusterSnapshot",
    "MachineType",
    "NodeBilling",
    "NodePhase",
    "NodePool",
    "NodeSnapshot",
    "NodeView",
    "Placement",
    "PodView",
    "ProvisioningDelay",
    "Resources",
    "allocatable",
    "cost_at",
    "decide",
    "load_catalog",
    "machine_type",
    "schedule",
]
