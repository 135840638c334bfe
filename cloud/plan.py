"""What a real-cluster run will create and roughly what it will cost, before anything starts.

The plan needs no credentials and no SDK: it reads the scenario, the settings and the machine
catalog (``sim/cluster/machines.yaml``, us-central1 on-demand prices). Costs are a bracket:
``low`` keeps every pool at its minimum for the whole run, ``high`` holds every pool at its
maximum; both add the cluster's create/delete time at the initial size and GKE's cluster fee.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cloud.settings import CloudSettings
from sim.cluster.catalog import machine_type
from sim.cluster.cost import GKE_CLUSTER_FEE_PER_HOUR
from sim.scenario import LocustLoad, NodePool, Scenario

CONFIGMAP_NAME = "tfserving-configs"
"""The lab's ConfigMap (GSP777 tf-serving/configmap.yaml)."""
GRPC_PORT = 8500
REST_PORT = 8501
LOAD_BALANCER_PER_HOUR = 0.025
"""The LoadBalancer Service's forwarding rule (an external passthrough Network Load Balancer),
us-central1, within the first five rules of a project
(https://cloud.google.com/vpc/network-pricing#lb). Assumed: its per-GB data processing is not
counted (the lab's JPEG posts are ~61 KB each)."""


@dataclass(frozen=True)
class ObjectRef:
    """One Kubernetes object the run creates."""

    kind: str
    api_version: str
    name: str
    namespace: str | None

    def __str__(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{self.kind} {self.name} ({self.api_version}){where}"


def workload_refs(scenario: Scenario, settings: CloudSettings, *, no_lb: bool) -> list[ObjectRef]:
    """The objects in creation order (teardown runs the reverse)."""
    ns, name = settings.namespace, scenario.deployment.name
    service = "ClusterIP + port-forward" if no_lb else "LoadBalancer"
    refs = [
        ObjectRef("Namespace", "v1", ns, None),
        ObjectRef("ConfigMap", "v1", CONFIGMAP_NAME, ns),
        ObjectRef("Deployment", "apps/v1", name, ns),
        ObjectRef(f"Service[{service}]", "v1", name, ns),
    ]
    if scenario.hpa is not None:
        refs.append(ObjectRef("HorizontalPodAutoscaler", "autoscaling/v2", name, ns))
    return refs


@dataclass(frozen=True)
class PoolPlan:
    name: str
    machine_type: str
    gce_machine_type: str
    accelerator: tuple[str, int] | None
    min_nodes: int
    max_nodes: int
    initial_nodes: int
    autoscaling: bool
    price_per_hour: float


def pool_plan(pool: NodePool, autoscaling: bool) -> PoolPlan:
    """A scenario pool as GKE sees it: a catalog GPU type is a base machine plus accelerators."""
    machine = machine_type(pool.machine_type)
    gce = machine.name
    accelerator = None
    if machine.has_gpu and machine.gpu_type:
        gce = machine.name.removesuffix(f"-{machine.gpu_type}")
        accelerator = (machine.gpu_type, machine.gpu_count)
    return PoolPlan(
        name=pool.name,
        machine_type=machine.name,
        gce_machine_type=gce,
        accelerator=accelerator,
        min_nodes=pool.min_nodes if autoscaling else pool.start_nodes,
        max_nodes=pool.max_nodes if autoscaling else pool.start_nodes,
        initial_nodes=pool.start_nodes,
        autoscaling=autoscaling,
        price_per_hour=machine.price_per_hour,
    )


@dataclass(frozen=True)
class CostEstimate:
    """A bracket in USD; see the module docstring for what each end assumes."""

    low: float
    high: float
    hours: float

    def render(self) -> str:
        return f"${self.low:.2f} to ${self.high:.2f} (run {self.hours * 60:.0f} min)"


def standing_cost_per_hour(scenario: Scenario, backend: str) -> float:
    """USD per hour of the cluster at its initial size: the initial nodes, and GKE's fee when
    the scenario counts it (what is billed from creation until the load starts)."""
    autoscaling = scenario.cluster.autoscaler.enabled
    nodes = sum(
        pool_plan(p, autoscaling).price_per_hour * p.start_nodes for p in scenario.cluster.pools
    )
    fee = GKE_CLUSTER_FEE_PER_HOUR if scenario.cluster.management_fee and backend == "gke" else 0
    return nodes + fee


def estimate_cost(
    pools: list[PoolPlan],
    duration_s: float,
    *,
    overhead_s: float,
    management_fee: bool,
    load_balancer: bool = False,
) -> CostEstimate:
    hours, overhead = duration_s / 3600, overhead_s / 3600
    setup = sum(p.initial_nodes * p.price_per_hour for p in pools) * overhead
    fee = GKE_CLUSTER_FEE_PER_HOUR * (hours + overhead) if management_fee else 0.0
    fee += LOAD_BALANCER_PER_HOUR * hours if load_balancer else 0.0
    low = sum(p.min_nodes * p.price_per_hour for p in pools) * hours
    high = sum(p.max_nodes * p.price_per_hour for p in pools) * hours
    return CostEstimate(round(low + setup + fee, 4), round(high + setup + fee, 4), hours)


@dataclass(frozen=True)
class Plan:
    """Everything printed before a run (and all of ``--dry-run``)."""

    backend: str
    run_id: str
    scenario: str
    duration_s: float
    cluster: dict[str, str]
    pools: list[PoolPlan]
    autoscaling_profile: str
    objects: list[ObjectRef]
    load: str
    cost: CostEstimate
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"plan for {self.scenario} on {self.backend} (run id {self.run_id})", "cluster:"]
        lines += [f"  {k}: {v}" for k, v in self.cluster.items()]
        lines.append(f"  cluster autoscaler profile: {self.autoscaling_profile}")
        for p in self.pools:
            gpu = f" + {p.accelerator[1]} x {p.accelerator[0]}" if p.accelerator else ""
            scaling = f"autoscaling {p.min_nodes}-{p.max_nodes}" if p.autoscaling else "fixed size"
            lines.append(
                f"  node pool {p.name}: {p.gce_machine_type}{gpu}, {scaling}, "
                f"{p.initial_nodes} initial, ${p.price_per_hour:.4f}/h per node"
            )
        lines.append("kubernetes objects (labelled as scalelab's with the run id):")
        lines += [f"  {ref}" for ref in self.objects]
        lines.append(f"load: {self.load} for {self.duration_s:g} s")
        lines.append(f"estimated cost: {self.cost.render()}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def describe_load(scenario: Scenario) -> str:
    load = scenario.load
    if isinstance(load, LocustLoad):
        shape = load.shape
        wait = load.wait_time
        waits = f"between {wait.between}" if wait.between is not None else f"{wait.constant} s"
        return f"Locust closed loop, {shape.kind} shape, wait {waits}"
    return f"Locust open loop, Poisson arrivals at a {load.rate.kind} rate"


def make_plan(
    scenario: Scenario,
    settings: CloudSettings,
    *,
    backend: str,
    run_id: str,
    no_lb: bool,
    max_cost: float | None = None,
) -> Plan:
    autoscaling = scenario.cluster.autoscaler.enabled
    pools = [pool_plan(p, autoscaling) for p in scenario.cluster.pools]
    notes: list[str] = []
    if backend == "gke":
        cluster = {
            "project": settings.project or "<unset: SCALELAB_GCP_PROJECT>",
            "location": settings.location,
            "name": f"{settings.cluster_name} (created unless it exists, then reused)",
            "release channel": settings.release_channel,
            "version": settings.kubernetes_version or "the channel's default",
        }
        overhead = settings.cluster_overhead_s
    else:
        cluster = {
            "kubeconfig": settings.kubeconfig or "~/.kube/config",
            "context": settings.context or "current context",
        }
        overhead = 0.0
        notes.append(
            "kube uses the cluster as it is: node pools are not created; the cost assumes the "
            "scenario's pools describe it"
        )
    if no_lb:
        notes.append("Service is ClusterIP; the load goes through a local port-forward")
    if settings.endpoint:
        notes.append(f"load goes to {settings.endpoint} instead of the Service")
    cost = estimate_cost(
        pools,
        scenario.duration,
        overhead_s=overhead,
        management_fee=scenario.cluster.management_fee and backend == "gke",
        load_balancer=not no_lb,
    )
    if max_cost is not None:
        verdict = "may reach" if cost.high >= max_cost else "stays under"
        notes.append(f"--max-cost ${max_cost:.2f}: the run {verdict} it; it stops there")
    return Plan(
        backend=backend,
        run_id=run_id,
        scenario=scenario.name,
        duration_s=scenario.duration,
        cluster=cluster,
        pools=pools,
        autoscaling_profile=scenario.cluster.autoscaler.profile,
        objects=workload_refs(scenario, settings, no_lb=no_lb),
        load=describe_load(scenario),
        cost=cost,
        notes=notes,
    )
