"""The SimPy control plane: ReplicaSet, kube-scheduler, kubelet, metrics-server, nodes.

Long-lived actors are SimPy processes; decisions are made by the pure cores (``sim.hpa``,
``sim.cluster``, ``sim.replicaset``). Before reading or changing what requests see, every
actor calls ``sync()`` so the data plane has caught up to ``env.now``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Generator, Mapping, ValuesView
from typing import Any

import numpy as np
import simpy

from sim import scenario as spec
from sim.cluster import catalog as cat
from sim.cluster import scheduler as sched
from sim.cluster.ca.model import NodePhase, NodePool, ProvisioningDelay
from sim.cluster.queue import (
    BACKOFF_FLUSH_PERIOD,
    LEFTOVER_FLUSH_PERIOD,
    ClusterEvent,
    SchedulingQueue,
)
from sim.cluster.schedcache import SchedulerCache
from sim.dataplane import DataPlane
from sim.objects import Node, Pod, PodPhase
from sim.replicaset import PodRank, pods_to_delete
from sim.rng import stream
from sim.scenario import Scenario
from sim.serving.model import build_server, cold_factor, cores_alone
from sim.serving.profile import Profile, profile_for
from sim.serving.server import NodeCpu, Server

WARM_START_AGE = 3600.0
"""A warm replica started this long before t=0, so HPA start-up windows are long past."""


def core_pool(pool: spec.NodePool, scenario: Scenario) -> NodePool:
    """The cluster-autoscaler core's view of a scenario node pool."""
    delay = pool.provisioning_delay
    return NodePool(
        name=pool.name,
        machine=cat.machine_type(pool.machine_type),
        min_nodes=pool.min_nodes,
        max_nodes=pool.max_nodes,
        labels=pool.labels,
        max_node_provision_time=scenario.cluster.autoscaler.max_node_provision_time,
        provisioning_delay=ProvisioningDelay(
            kind="constant" if delay.min == delay.max else "uniform", low=delay.min, high=delay.max
        ),
    )


_TO_BE_DELETED = sched.Taint(sched.TO_BE_DELETED_TAINT_KEY, "", "NoSchedule")


class World:
    """Cluster state plus the processes that change it.

    Pods and nodes are kept by name; the scheduler's node views (:class:`SchedulerCache`),
    each node's requested resources and the counts the per-second gauges read are updated as
    pods bind, leave or change phase, so no event walks every pod or node.
    """

    def __init__(
        self, env: simpy.Environment, scenario: Scenario, plane: DataPlane, seed: int
    ) -> None:
        self.env = env
        self.scenario = scenario
        self.plane = plane
        self.events: list[dict[str, Any]] = []
        self._nodes: dict[str, Node] = {}
        self.node_version = 0  # bumped when a node is added or deleted: readers may reuse lists
        self.retired_nodes: list[Node] = []
        self._pods: dict[str, Pod] = {}
        self.cache = SchedulerCache(scenario.cluster.scoring)
        self.queue = SchedulingQueue()
        # Pods not terminating: all, Ready, phase Pending; nodes by phase (DELETED left out).
        self.active_count = self.ready_count = self.pending_count = 0
        self.node_phases: Counter[NodePhase] = Counter()
        self.replicas = scenario.deployment.replicas  # deployment spec.replicas
        self.pools = {p.name: core_pool(p, scenario) for p in scenario.cluster.pools}
        self._node_rng = stream(seed, "nodes")
        self._pod_ids = itertools.count()
        self._node_ids = {name: itertools.count() for name in self.pools}
        self._profiles: dict[str, Profile] = {}
        self._cluster_pods_placed = False
        self._last_failure: Mapping[str, int] = {}
        env.process(self.run_scheduling_queue())

    # --- bookkeeping --------------------------------------------------------------------------

    @property
    def pods(self) -> ValuesView[Pod]:
        """Every pod not yet deleted from the API server, oldest first."""
        return self._pods.values()

    @property
    def nodes(self) -> ValuesView[Node]:
        """Every node not yet deleted, oldest first."""
        return self._nodes.values()

    def sync(self) -> None:
        self.plane.advance_to(self.env.now)

    def log(self, kind: str, **fields: Any) -> None:
        self.events.append({"t": round(self.env.now, 3), "kind": kind, **fields})

    def profile(self, machine: str) -> Profile:
        if machine not in self._profiles:
            source = self.scenario.serving.profile
            profile = profile_for(source, machine)
            self._profiles[machine] = profile
            # Which measurement the run stands on: said whenever it is not the packaged
            # profile measured for this machine type.
            from_file = {"file": source} if source.endswith((".yaml", ".yml", ".json")) else {}
            if profile.scaled_from:
                self.log(
                    "profile",
                    machine_type=machine,
                    profile=profile.name,
                    scaled_from=profile.scaled_from,
                    **from_file,
                    note="no profile measured for this machine type: rescaled by speed factor",
                )
            elif from_file:
                self.log(
                    "profile",
                    machine_type=machine,
                    profile=profile.name,
                    **from_file,
                    note="read from the scenario's profile file",
                )
        return self._profiles[machine]

    # --- nodes --------------------------------------------------------------------------------

    def add_node(self, pool_name: str, *, ready: bool) -> Node:
        pool = self.pools[pool_name]
        index = next(self._node_ids[pool.name])
        # Upstream node names: gke-<cluster>-<pool>-<8 hex of the instance group>-<4 chars>.
        node = Node(
            name=f"gke-scalelab-{pool.name}-{index:04d}",
            pool=pool.name,
            machine=pool.machine.name,
            labels=dict(pool.node_labels),
            alloc_cpu=pool.allocatable.cpu_milli,
            alloc_memory=pool.allocatable.memory_bytes,
            vcpus=float(pool.machine.vcpus),
            created=self.env.now,
        )
        # DaemonSet pods run on every node; GKE starts the kube-system Deployments (kube-dns,
        # metrics-server, konnectivity, ...) on the first node, and they block its scale-down.
        node.system_pods = pool.template_pods
        if not self._cluster_pods_placed:
            cluster_pods = cat.load_system_pods().per_cluster
            node.system_pods += tuple(sched.PodView.from_system_pod(p) for p in cluster_pods)
            self._cluster_pods_placed = True
        self._nodes[node.name] = node
        self.node_version += 1
        self.node_phases[node.phase] += 1
        if ready:
            self._node_ready(node)
        else:
            delay = pool.provisioning_delay.sample(self._node_rng)
            self.log(
                "node", node=node.name, pool=pool.name, event="requested", ready_in=round(delay, 3)
            )
            self.env.process(self._provision(node, delay))
        return node

    def _provision(self, node: Node, delay: float) -> Generator[Any, Any, None]:
        yield self.env.timeout(delay)
        if node.phase is NodePhase.PROVISIONING:
            self._node_ready(node)
            self.schedule_pending()

    def _set_phase(self, node: Node, phase: NodePhase) -> None:
        self.node_phases[node.phase] -= 1
        node.phase = phase
        if phase is not NodePhase.DELETED:
            self.node_phases[phase] += 1

    def _node_view(self, node: Node) -> sched.NodeView:
        """The node as kube-scheduler sees it. The CA taints a node it deletes
        (ToBeDeletedByClusterAutoscaler)."""
        return sched.NodeView(
            name=node.name,
            pool=node.pool,
            labels=node.labels,
            allocatable=cat.Resources(node.alloc_cpu, node.alloc_memory),
            requested=cat.Resources(node.requested_cpu, node.requested_memory),
            pod_count=len(node.pods) + len(node.system_pods),
            taints=self.pools[node.pool].node_taints
            + ((_TO_BE_DELETED,) if node.phase is NodePhase.DRAINING else ()),
        )

    def _node_ready(self, node: Node) -> None:
        self._set_phase(node, NodePhase.READY)
        self.log("node", node=node.name, pool=node.pool, event="ready")
        # A node still provisioning has not registered with the API server: the scheduler
        # sees it from now on, and pods waiting for room are woken (a NodeAdd event).
        self.cache.upsert(self._node_view(node))
        self.queue.on_event(ClusterEvent.NODE_ADD, self.env.now)

    def delete_node(self, node: Node, reason: str) -> None:
        """Taint ToBeDeletedByClusterAutoscaler, evict its pods (the ReplicaSet replaces
        them), delete the VM once they are gone. A node not yet Ready is simply deleted."""
        if node.phase in (NodePhase.DRAINING, NodePhase.DELETED):
            return
        was_ready = node.phase is NodePhase.READY
        self._set_phase(node, NodePhase.DRAINING)
        if was_ready:
            self.cache.upsert(self._node_view(node))
        self.log("node", node=node.name, pool=node.pool, event="draining", reason=reason)
        for pod in list(node.pods):
            self.delete_pod(pod, reason="evicted by the cluster autoscaler")
        self.reconcile_replicaset()
        self.env.process(self._remove_node(node))

    def _remove_node(self, node: Node) -> Generator[Any, Any, None]:
        while node.pods:
            yield self.env.timeout(1.0)
        self._set_phase(node, NodePhase.DELETED)
        node.deleted_at = self.env.now
        del self._nodes[node.name]
        self.node_version += 1
        self.cache.remove(node.name)
        self.retired_nodes.append(node)
        self.log("node", node=node.name, pool=node.pool, event="deleted")

    def node_named(self, name: str) -> Node | None:
        return self._nodes.get(name)

    # --- pods ---------------------------------------------------------------------------------

    def _new_pod(self) -> Pod:
        spec = self.scenario.deployment
        requests, limits = spec.resources.requests, spec.resources.limits
        suffix = np.base_repr(next(self._pod_ids) + 36**4, 36).lower()[-5:]
        pod = Pod(
            name=f"{spec.name}-5f8d7c9b4-{suffix}",
            created=self.env.now,
            cpu_request=requests.cpu or 0,
            memory_request=requests.memory or 0,
            cpu_limit=limits.cpu,
        )
        pod.view = sched.PodView(
            name=pod.name,
            requests=cat.Resources(pod.cpu_request, pod.memory_request),
            node_selector=spec.nodeSelector,
            created_at=pod.created,
            owner_name=spec.name,
        )
        self._pods[pod.name] = pod
        self.active_count += 1
        self.pending_count += 1
        self.queue.add(pod.name, self.env.now, priority=pod.view.priority)
        self.log("pod", pod=pod.name, event="created")
        return pod

    def start_warm(self) -> None:
        """The lab's starting point: the initial replicas already Running and Ready."""
        for _ in range(self.replicas):
            pod = self._new_pod()
            node = self._fit(pod)
            if node is None:
                self.schedule_pending()
                continue
            self.queue.delete(pod.name)
            self._bind(pod, node)
            node.images.add(self.scenario.deployment.image)
            started = self.env.now - WARM_START_AGE
            pod.start_time = started
            self._running(pod)
            self._server(pod)  # the model server's port is open
            assert pod.server is not None
            pod.server.cold_left = 0  # it has been serving long before t=0
            self._ready(pod, started + 21.0)
            self.plane.add_endpoint(self._server(pod))
            self.log(
                "pod",
                pod=pod.name,
                node=node.name,
                event="warm",
                started=started,
                ready_since=pod.ready_transition,
            )

    def active_pods(self) -> list[Pod]:
        return [p for p in self._pods.values() if not p.terminating]

    def pending_pods(self) -> list[Pod]:
        """Pods the scheduler has not bound yet (in one of its queues), oldest first."""
        return [self._pods[name] for name in self.queue.names()]

    def _running(self, pod: Pod) -> None:
        pod.phase = PodPhase.RUNNING
        if not pod.terminating:
            self.pending_count -= 1

    def _ready(self, pod: Pod, since: float) -> None:
        pod.ready, pod.ready_transition = True, since
        if not pod.terminating:
            self.ready_count += 1

    def reconcile_replicaset(self) -> None:
        """replica_set.go manageReplicas: create the missing pods or delete the excess."""
        diff = self.active_count - self.replicas
        if diff < 0:
            for _ in range(-diff):
                self._new_pod()
            self.schedule_pending()
        elif diff > 0:
            active = self.active_pods()
            ranks = [
                PodRank(
                    name=p.name,
                    node=p.node.name if p.node else None,
                    phase=p.phase.value,
                    ready=p.ready,
                    ready_since=p.ready_transition,
                    created=p.created,
                )
                for p in active
            ]
            doomed = set(pods_to_delete(ranks, diff))
            for pod in active:
                if pod.name in doomed:
                    self.delete_pod(pod, reason="replicaset scale-down")

    def delete_pod(self, pod: Pod, reason: str) -> None:
        if pod.terminating:
            return
        self.sync()
        pod.deletion_at = self.env.now
        self.active_count -= 1
        self.ready_count -= pod.ready
        self.pending_count -= pod.phase is PodPhase.PENDING
        if pod.node is None:
            self.queue.delete(pod.name)  # the scheduler skips a pod being deleted
        self.log(
            "pod",
            pod=pod.name,
            node=pod.node.name if pod.node else None,
            event="terminating",
            reason=reason,
        )
        if pod.server is not None:
            self.plane.remove_endpoint(pod.server)
        self.env.process(self._terminate(pod))

    def _terminate(self, pod: Pod) -> Generator[Any, Any, None]:
        """Endpoint already removed; preStop runs, then SIGTERM. tensorflow_model_server installs
        no SIGTERM handler, so it exits at once and its in-flight requests fail. Connections
        pinned to it keep sending until then (kube-proxy leaves established flows alone)."""
        serving, spec = self.scenario.serving, self.scenario.deployment
        if pod.server is not None and spec.lifecycle is not None:
            hook = spec.lifecycle.preStop
            if hook is not None and hook.sleep is not None:
                yield self.env.timeout(min(hook.sleep.seconds, spec.terminationGracePeriodSeconds))
        self.sync()
        if pod.server is not None:
            self.plane.kill(pod.server)
        if pod.node is not None:
            yield self.env.timeout(serving.shutdown_time)
        node = pod.node
        if node is not None and pod in node.pods:
            node.unbind(pod)
            if node.name in self.cache:
                assert pod.view is not None
                self.cache.unbind(node.name, pod.view)
            self._rebalance(node)
            # Its requests are free: pods that failed for room may fit (AssignedPodDelete).
            self.queue.on_event(ClusterEvent.ASSIGNED_POD_DELETE, self.env.now)
        del self._pods[pod.name]
        self.log("pod", pod=pod.name, node=node.name if node else None, event="deleted")
        self.schedule_pending()

    # --- scheduling ---------------------------------------------------------------------------

    def _fit(self, pod: Pod) -> Node | None:
        """One scheduling cycle for ``pod`` on the cached node views (Ready and draining
        nodes, in O(log nodes)); logs the FitError when it changes."""
        placement = self.cache.schedule(self.pod_view(pod))
        if placement.node is None:
            if placement.message != pod.unschedulable_reason:
                pod.unschedulable_reason = placement.message
                self.log("unschedulable", pod=pod.name, reason=placement.message)
            self._last_failure = placement.reasons
            return None
        return self._nodes[placement.node]

    def pod_view(self, pod: Pod) -> sched.PodView:
        assert pod.view is not None
        return pod.view

    def schedule_pending(self) -> None:
        """kube-scheduler's scheduleOne for each pod in activeQ, highest priority and oldest
        first; a pod that fits nowhere waits in the unschedulable pool (sim.cluster.queue)."""
        queue, now = self.queue, self.env.now
        while (name := queue.pop()) is not None:
            pod = self._pods[name]
            node = self._fit(pod)
            if node is None:
                queue.unschedulable(name, now, self._last_failure)
                continue
            queue.delete(name)
            self._bind(pod, node)
            self.env.process(self._kubelet(pod))

    def run_scheduling_queue(self) -> Generator[Any, Any, None]:
        """The queue's timers: backoffQ flushed every second (flushBackoffQCompleted), the
        unschedulable pool every 30 s (flushUnschedulablePodsLeftover); what they free is
        scheduled at once."""
        ticks_per_leftover = round(LEFTOVER_FLUSH_PERIOD / BACKOFF_FLUSH_PERIOD)
        for tick in itertools.count(1):
            yield self.env.timeout(BACKOFF_FLUSH_PERIOD)
            moved = self.queue.flush_backoff(self.env.now)
            if tick % ticks_per_leftover == 0:
                moved += self.queue.flush_leftover(self.env.now)
            if moved:
                self.schedule_pending()

    def _bind(self, pod: Pod, node: Node) -> None:
        pod.node = node
        pod.unschedulable_reason = None
        node.bind(pod)
        self.cache.bind(node.name, self.pod_view(pod))
        self.log("pod", pod=pod.name, node=node.name, event="scheduled")

    # --- kubelet ------------------------------------------------------------------------------

    def _kubelet(self, pod: Pod) -> Generator[Any, Any, None]:
        """Start-up: image pull (once per node), container, model load, readiness probe."""
        env, spec = self.env, self.scenario.deployment
        node = pod.node
        assert node is not None
        pod.start_time = env.now
        if spec.image not in node.images:
            done = node.pulling.get(spec.image)
            if done is None:
                done = node.pulling[spec.image] = env.now + spec.startup.image_pull
            yield env.timeout(max(0.0, done - env.now))
            if spec.image not in node.images:
                node.images.add(spec.image)
                self.log("pod", pod=pod.name, node=node.name, event="pulled", image=spec.image)
        yield env.timeout(spec.startup.container_create)
        if pod.terminating:
            return
        self._running(pod)
        started = env.now
        self.log("pod", pod=pod.name, node=node.name, event="started")
        yield env.timeout(spec.startup.server_start)
        load = spec.startup.model_load
        serving = self.scenario.serving
        if serving.warmup:
            # TF Serving replays the warmup records at load time, paying the first-run cost there.
            profile = self.profile(node.machine)
            cold = cold_factor(serving, profile)
            cores = cores_alone(serving, self._free_cpu(node))
            load += serving.cold_requests * cold * profile.alone_latency(cores)
        pod.load_cpu_cores = spec.startup.model_load_cpu / 1000
        pod.load_window = (env.now, env.now + load)
        yield env.timeout(load)
        if pod.terminating:
            return
        self.sync()
        self._server(pod)  # the model is loaded: the port opens
        self.log("pod", pod=pod.name, node=node.name, event="loaded")
        probe = spec.readinessProbe
        if probe is not None:
            # Probes run at start + initialDelay + k*period; Ready after successThreshold passes.
            first = started + probe.initialDelaySeconds
            k = max(0.0, -(-(env.now - first) // probe.periodSeconds))
            ready_at = first + (k + probe.successThreshold - 1) * probe.periodSeconds
            yield env.timeout(max(0.0, ready_at - env.now))
        if pod.terminating:
            return
        self._ready(pod, env.now)
        self.log("pod", pod=pod.name, node=node.name, event="ready")
        yield env.timeout(spec.startup.endpoint_propagation)
        if pod.terminating or pod.server is None:
            return
        self.sync()
        self.plane.add_endpoint(pod.server)
        self.log("pod", pod=pod.name, node=node.name, event="endpoint")

    def _server(self, pod: Pod) -> Server:
        if pod.server is None:
            node = pod.node
            assert node is not None
            pod.server = build_server(
                pod.name,
                self.scenario.serving,
                self.profile(node.machine),
                vcpus=node.vcpus,
                cores=cores_alone(self.scenario.serving, self._free_cpu(node)),
                now=self.env.now,
                quota=pod.cpu_limit / 1000 if pod.cpu_limit is not None else None,
                weight=pod.cpu_request or 1,
            )
            self._rebalance(node)
        return pod.server

    def _free_cpu(self, node: Node) -> float:
        """The node's CPU left to serving pods: its vCPUs less what system pods use."""
        return node.vcpus - self.scenario.cluster.system_cpu_usage / 1000

    def _rebalance(self, node: Node) -> None:
        """Serving pods came or went on ``node``: they share its free CPU by demand (a pod with
        no limit, Burstable, may use all that its neighbours leave idle); a limit is enforced
        per CFS period by the server's quota, not here."""
        serving = [p.server for p in node.pods if p.server is not None and p.server.alive]
        if not serving:
            return
        if node.cpu is None:
            node.cpu = NodeCpu(self._free_cpu(node))
        alone = cores_alone(self.scenario.serving, node.cpu.free)
        self.plane.share_node(node.cpu, dict.fromkeys(serving, alone))
