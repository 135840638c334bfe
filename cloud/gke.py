"""GKE: create (or reuse) the scenario's cluster with google-cloud-container, and remove it.

The request is the lab's ``gcloud container clusters create --machine-type=n1-standard-4
--enable-autoscaling --min-nodes=1 --max-nodes=3 --num-nodes=1`` spelled as
``container_v1.CreateClusterRequest`` (https://cloud.google.com/kubernetes-engine/docs/reference/rest/v1/projects.locations.clusters#Cluster):
one ``NodePool`` per scenario pool with ``NodePoolAutoscaling``, the cluster autoscaler's
``autoscaling_profile`` from the scenario, GKE resource labels naming scalelab and the run.
Long-running calls return an ``Operation`` that is polled (``get_operation``) until DONE.
Only the cluster autoscaler's profile can be chosen on GKE; its other flags cannot, and the
backend says so before anything starts (:data:`GKEBackend.UNSUPPORTED`).
"""

from __future__ import annotations

import calendar
import functools
import re
import time
from collections.abc import Callable
from typing import Any, ClassVar

from cloud.backend import BACKENDS, Backend, Feature
from cloud.errors import CloudError, MissingDependencyError
from cloud.plan import PoolPlan, pool_plan
from cloud.settings import GKE_MANAGED_BY_LABEL, GKE_RUN_ID_LABEL, MANAGED_BY, CloudSettings
from cloud.teardown import Ledger, Say
from sim.scenario import Scenario


def container_v1() -> Any:
    """The google-cloud-container module, imported on first use."""
    try:
        from google.cloud import container_v1 as module
    except ImportError as err:  # pragma: no cover
        raise MissingDependencyError("google-cloud-container") from err
    return module


def _not_found(err: BaseException) -> bool:
    from google.api_core import exceptions

    return isinstance(err, exceptions.NotFound)


def _busy(err: BaseException) -> bool:
    """GKE's answer to a change while an operation runs on the cluster: HTTP 400
    FAILED_PRECONDITION, "Operation ... is currently creating cluster X. Please wait and try
    again once it is done." (the REST transport raises it as BadRequest)."""
    from google.api_core import exceptions

    if not isinstance(err, exceptions.BadRequest | exceptions.FailedPrecondition):
        return False
    text = str(err)
    return "currently" in text or "try again" in text or "FAILED_PRECONDITION" in text


def gke_labels(run_id: str) -> dict[str, str]:
    return {GKE_MANAGED_BY_LABEL: MANAGED_BY, GKE_RUN_ID_LABEL: run_id}


def autoscaling_profile(scenario: Scenario) -> Any:
    c = container_v1()
    profiles = {
        "balanced": c.ClusterAutoscaling.AutoscalingProfile.BALANCED,
        "optimize-utilization": c.ClusterAutoscaling.AutoscalingProfile.OPTIMIZE_UTILIZATION,
    }
    return profiles[scenario.cluster.autoscaler.profile]


MAX_SURGE = 1
"""``upgradeSettings.maxSurge`` as gcloud sends it (tests/data/gcloud_create_cluster.json)."""


def node_pool(
    plan: PoolPlan,
    run_id: str,
    labels: dict[str, str],
    settings: CloudSettings | None = None,
) -> Any:
    """One ``container_v1.NodePool`` (``--num-nodes`` is the initial count per zone), with what
    the lab's gcloud command sends by default: the node OAuth scopes (devstorage.read_only lets
    TF Serving read the model from gs://), auto-upgrade and auto-repair (release channels need
    both) and a surge upgrade of one node."""
    c = container_v1()
    settings = settings or CloudSettings()
    accelerators = []
    if plan.accelerator is not None:
        kind, count = plan.accelerator
        accelerators = [c.AcceleratorConfig(accelerator_type=kind, accelerator_count=count)]
    return c.NodePool(
        name=plan.name,
        initial_node_count=plan.initial_nodes,
        config=c.NodeConfig(
            machine_type=plan.gce_machine_type,
            labels=dict(labels),
            resource_labels=gke_labels(run_id),
            accelerators=accelerators,
            oauth_scopes=list(settings.node_oauth_scopes),
            service_account=settings.node_service_account or "",
        ),
        management=c.NodeManagement(auto_upgrade=True, auto_repair=True),
        upgrade_settings=c.NodePool.UpgradeSettings(max_surge=MAX_SURGE),
        autoscaling=c.NodePoolAutoscaling(
            enabled=plan.autoscaling,
            min_node_count=plan.min_nodes if plan.autoscaling else 0,
            max_node_count=plan.max_nodes if plan.autoscaling else 0,
        ),
    )


def cluster_request(scenario: Scenario, settings: CloudSettings, run_id: str, project: str) -> Any:
    """The ``CreateClusterRequest`` for a scenario (pure: no call is made)."""
    c = container_v1()
    autoscaling = scenario.cluster.autoscaler.enabled
    pools = [
        node_pool(pool_plan(p, autoscaling), run_id, p.labels, settings)
        for p in scenario.cluster.pools
    ]
    channel = c.ReleaseChannel.Channel[settings.release_channel.upper()]
    return c.CreateClusterRequest(
        parent=f"projects/{project}/locations/{settings.location}",
        cluster=c.Cluster(
            name=settings.cluster_name,
            description=f"scalelab run {run_id} of scenario {scenario.name}",
            resource_labels=gke_labels(run_id),
            node_pools=pools,
            autoscaling=c.ClusterAutoscaling(autoscaling_profile=autoscaling_profile(scenario)),
            release_channel=c.ReleaseChannel(channel=channel),
            initial_cluster_version=settings.kubernetes_version or "",
            addons_config=c.AddonsConfig(
                horizontal_pod_autoscaling=c.HorizontalPodAutoscaling(disabled=False),
                http_load_balancing=c.HttpLoadBalancing(disabled=False),
            ),
        ),
    )


def autoscaling_fields(autoscaling: Any) -> tuple[bool, int, int]:
    """The ``NodePoolAutoscaling`` fields scalelab sets; a real pool reports more (GKE fills
    in ``location_policy``, for one), which must not count as a difference."""
    return (
        bool(autoscaling.enabled),
        int(autoscaling.min_node_count),
        int(autoscaling.max_node_count),
    )


def check_profile(cluster: Any, scenario: Scenario, name: str) -> None:
    """A reused cluster must run the scenario's autoscaling profile (unset means balanced,
    GKE's default); scalelab does not change a cluster-wide setting it did not create."""
    c = container_v1()
    have = cluster.autoscaling.autoscaling_profile
    if have == c.ClusterAutoscaling.AutoscalingProfile.PROFILE_UNSPECIFIED:
        have = c.ClusterAutoscaling.AutoscalingProfile.BALANCED
    want = autoscaling_profile(scenario)
    if have != want:
        raise CloudError(
            f"cluster {name} runs the cluster autoscaler's {have.name.lower()} profile, the "
            f"scenario wants {want.name.lower()} (cluster.autoscaler.profile): use another "
            "cluster_name (SCALELAB_GKE_CLUSTER) or change the scenario"
        )


class GKE:
    """Cluster operations over one ``ClusterManagerClient``."""

    def __init__(
        self,
        client: Any,
        project: str,
        location: str,
        *,
        say: Say,
        poll_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.project, self.location = project, location
        self.say = say
        self.poll_s = poll_s
        self._sleep = sleep

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def cluster_path(self, name: str) -> str:
        return f"{self.parent}/clusters/{name}"

    def wait(self, operation: Any, what: str, timeout: float, *, check: bool = True) -> Any:
        """Poll an Operation until DONE, printing its progress; raise on its error (unless not
        ``check``: an operation that only has to be over, such as a failed create before the
        delete that cleans it up)."""
        c = container_v1()
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        name = f"{self.parent}/operations/{operation.name}"
        last = ""
        while operation.status != c.Operation.Status.DONE:
            if time.monotonic() > deadline:
                raise CloudError(
                    f"{what}: operation {operation.name} not done after {timeout:.0f} s"
                )
            self._sleep(self.poll_s)
            operation = self.client.get_operation(name=name)
            state = f"{operation.status.name.lower()}{_progress(operation)}"
            if state != last:
                self.say(f"{what}: {state} ({time.monotonic() - started:.0f} s)")
                last = state
        # status_message: "if an error has occurred, a textual description" (deprecated for
        # ``error``, a google.rpc.Status); either one means the operation failed.
        if check and (operation.error.code or operation.status_message):
            raise CloudError(
                f"{what} failed: {operation.error.message or operation.status_message}"
            )
        return operation

    def get(self, name: str) -> Any | None:
        try:
            return self.client.get_cluster(name=self.cluster_path(name))
        except Exception as err:
            if _not_found(err):
                return None
            raise

    def running_operations(self, cluster: str) -> list[Any]:
        """Operations not yet DONE on a cluster or its node pools (``targetLink`` names it)."""
        c = container_v1()
        done = c.Operation.Status.DONE
        found = self.client.list_operations(parent=self.parent).operations
        suffix = f"/clusters/{cluster}"
        return [
            op
            for op in found
            if op.status != done
            and (op.target_link.endswith(suffix) or f"{suffix}/" in op.target_link)
        ]

    def delete_cluster(self, name: str, timeout: float, pending: str | None = None) -> None:
        """Delete, first waiting out any operation still running on the cluster (its create
        after a Ctrl-C, an upgrade): until it is DONE, GKE refuses the delete with 400
        FAILED_PRECONDITION. ``pending`` is an operation known to be running (the create)."""
        self._delete_when_idle(
            f"cluster {name}",
            name,
            lambda: self.client.delete_cluster(name=self.cluster_path(name)),
            timeout,
            pending,
        )

    def _delete_when_idle(
        self,
        what: str,
        cluster: str,
        delete: Callable[[], Any],
        timeout: float,
        pending: str | None = None,
    ) -> None:
        """Call ``delete`` once no operation runs on ``cluster`` (GKE runs one at a time per
        cluster, its node pools included, and refuses others with 400 FAILED_PRECONDITION),
        then wait for the delete; ``timeout`` covers the waits and the delete."""
        c = container_v1()
        deadline = time.monotonic() + timeout
        waiting = [] if pending is None else [pending]
        while True:
            for op_name in waiting:
                operation = self.client.get_operation(name=f"{self.parent}/operations/{op_name}")
                if operation.status != c.Operation.Status.DONE:
                    self.say(
                        f"{what}: waiting for operation {op_name} "
                        f"({operation.operation_type.name.lower()}) before deleting it"
                    )
                    self.wait(
                        operation,
                        f"waiting for {op_name} on {what}",
                        max(0.0, deadline - time.monotonic()),
                        check=False,
                    )
            try:
                operation = delete()
                break
            except Exception as err:
                if not _busy(err):
                    raise
                if time.monotonic() > deadline:
                    raise CloudError(
                        f"{what} still busy after {timeout:.0f} s; GKE said: {err}"
                    ) from err
                waiting = [op.name for op in self.running_operations(cluster)]
                if not waiting:
                    self._sleep(self.poll_s)
        self.wait(operation, f"deleting {what}", max(0.0, deadline - time.monotonic()))

    def ensure_cluster(
        self,
        scenario: Scenario,
        settings: CloudSettings,
        run_id: str,
        ledger: Ledger,
    ) -> Any:
        """Create the cluster, or reuse one of that name (adding missing pools and setting
        their autoscaling); every change is in the ledger with its undo."""
        c = container_v1()
        name, timeout = settings.cluster_name, settings.operation_timeout
        existing = self.get(name)
        if existing is None:
            request = cluster_request(scenario, settings, run_id, self.project)
            self.say(f"creating cluster {name} in {self.location}")
            # In the ledger before the call: a Ctrl-C while it is in flight may leave a cluster
            # that GKE accepted; if none was made, teardown finds it already gone (404).
            pending: list[str] = []

            def delete() -> None:
                self.delete_cluster(name, timeout, pending[0] if pending else None)

            entry = ledger.record(f"GKE cluster {self.cluster_path(name)}", delete, _not_found)
            try:
                operation = self.client.create_cluster(request=request)
            except Exception:
                ledger.forget(entry)  # refused (e.g. 409: someone else's cluster): not ours
                raise
            pending.append(operation.name)
            self.wait(operation, f"creating cluster {name}", timeout)
            return self.client.get_cluster(name=self.cluster_path(name))
        self.say(f"reusing cluster {name} (it is not deleted afterwards)")
        check_profile(existing, scenario, name)
        autoscaling = scenario.cluster.autoscaler.enabled
        have = {p.name: p for p in existing.node_pools}
        for pool in scenario.cluster.pools:
            plan = pool_plan(pool, autoscaling)
            pool_name = f"{self.cluster_path(name)}/nodePools/{plan.name}"
            current = have.get(plan.name)
            if current is None:
                self.say(f"adding node pool {plan.name}")
                operation = self.client.create_node_pool(
                    request=c.CreateNodePoolRequest(
                        parent=self.cluster_path(name),
                        node_pool=node_pool(plan, run_id, pool.labels, settings),
                    )
                )
                ledger.record(
                    f"GKE node pool {pool_name}",
                    functools.partial(self.delete_node_pool, pool_name, timeout),
                    _not_found,
                )
                self.wait(operation, f"adding node pool {plan.name}", timeout)
                continue
            if current.config.machine_type != plan.gce_machine_type:
                raise CloudError(
                    f"cluster {name} has node pool {plan.name} of {current.config.machine_type}, "
                    f"the scenario wants {plan.gce_machine_type}: use another cluster_name "
                    "(SCALELAB_GKE_CLUSTER) or pool name"
                )
            wanted = node_pool(plan, run_id, pool.labels, settings).autoscaling
            if autoscaling_fields(current.autoscaling) != autoscaling_fields(wanted):
                self._set_autoscaling(pool_name, wanted, timeout)
                ledger.record(
                    f"autoscaling of {pool_name} (restored to what it was)",
                    functools.partial(
                        self._set_autoscaling, pool_name, current.autoscaling, timeout
                    ),
                    _not_found,
                )
        return self.client.get_cluster(name=self.cluster_path(name))

    def delete_node_pool(self, pool_name: str, timeout: float) -> None:
        """Delete a pool (its full path), waiting out operations running on its cluster as
        :meth:`delete_cluster` does: a pool's create, an autoscaling change."""
        cluster = pool_name.partition("/clusters/")[2].partition("/")[0]
        self._delete_when_idle(
            f"node pool {pool_name.rpartition('/')[2]} of cluster {cluster}",
            cluster,
            lambda: self.client.delete_node_pool(name=pool_name),
            timeout,
        )

    def _set_autoscaling(self, pool_name: str, autoscaling: Any, timeout: float) -> None:
        c = container_v1()
        operation = self.client.set_node_pool_autoscaling(
            request=c.SetNodePoolAutoscalingRequest(name=pool_name, autoscaling=autoscaling)
        )
        self.wait(operation, f"setting autoscaling of {pool_name}", timeout)

    def clusters(self) -> list[Any]:
        """Every cluster in ``location`` (``-``: all locations of the project)."""
        return list(self.client.list_clusters(parent=self.parent).clusters)


def _progress(operation: Any) -> str:
    progress = operation.progress
    if progress is None or not progress.stages:
        return f", {operation.detail}" if operation.detail else ""
    running = [s for s in progress.stages if s.status.name == "RUNNING"]
    stage = running[0] if running else progress.stages[-1]
    return f", {stage.name or 'stage'} {stage.status.name.lower()}"


@BACKENDS.register("gke")
class GKEBackend(Backend):
    """Creates (or reuses) a GKE cluster, runs there, and deletes what it created."""

    UNSUPPORTED: ClassVar[dict[Feature, str]] = {
        Feature.CA_FLAGS: "GKE runs the cluster autoscaler itself; only its autoscaling "
        "profile can be set (ClusterAutoscaling.autoscaling_profile)",
        Feature.HPA_CONTROLLER_FLAGS: "GKE's control plane is managed: kube-controller-manager "
        "flags (--horizontal-pod-autoscaler-*) cannot be set",
        Feature.METRICS_RESOLUTION: "GKE's metrics-server add-on has a fixed 30 s resolution",
        Feature.SCHEDULER_SCORING: "GKE's scheduler scoring follows the autoscaling profile "
        "(optimize-utilization: MostAllocated); it cannot be set on its own",
        Feature.HPA_SCALE_TO_ZERO: "minReplicas 0 needs the HPAScaleToZero alpha feature gate, "
        "which GKE does not enable",
        Feature.DETERMINISTIC_REPLAY: "a real cluster: timing, placement and latency vary",
    }

    def __init__(self, *args: Any, client: Any = None, credentials: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._client = client
        self._credentials = credentials
        self._gke: GKE | None = None
        self.cluster: Any = None

    def gke(self) -> GKE:
        if self._gke is None:
            from cloud.credentials import google_credentials

            project = self.settings.project
            if self._credentials is None or project is None:
                credentials, project = google_credentials(project)
                self._credentials = self._credentials or credentials
            client = self._client or container_v1().ClusterManagerClient(
                credentials=self._credentials
            )
            self._gke = GKE(client, project, self.settings.location, say=self.say)
        return self._gke

    def preflight(self) -> None:
        """The model must be readable and servable before a cluster is paid for."""
        from cloud.model_access import check_model_path

        self.gke()
        path = self.settings.model_path
        if path is None:
            return
        self.say(f"checking the model at {path}")
        for warning in check_model_path(
            path,
            self._credentials,
            model_version=self.settings.model_version,
            warmup=self.scenario.serving.warmup,
        ):
            self.say(f"warning: {warning}")

    def _provision(self) -> None:
        self.cluster = self.gke().ensure_cluster(
            self.scenario, self.settings, self.run_id, self.ledger
        )

    def _connect(self) -> Any:
        from cloud.credentials import gke_api_client

        self.gke()
        return gke_api_client(self.cluster, self._credentials)

    def _counted_pools(self) -> tuple[str, ...] | None:
        return self.settings.node_pools or tuple(p.name for p in self.scenario.cluster.pools)


RUN_STAMP = re.compile(r"(\d{8}-\d{6})$")


def run_age_s(run_id: str, now: float | None = None) -> float | None:
    """Seconds since a run started, from its id (``<scenario>-<UTC yyyymmdd-hhmmss>``,
    cloud.settings.new_run_id); None when the id carries no stamp."""
    match = RUN_STAMP.search(run_id)
    if match is None:
        return None
    started = calendar.timegm(time.strptime(match.group(1), "%Y%m%d-%H%M%S"))
    return (time.time() if now is None else now) - started


def cluster_leftovers(
    gke: GKE,
    timeout: float,
    *,
    before_delete: Callable[[Any], None] | None = None,
    spare: Callable[[str], bool] = lambda _run: False,
) -> list[tuple[str, Callable[[], Any]]]:
    """What scalelab left on GKE, each with its delete (which waits for the operation): the
    clusters labelled as scalelab's and, in clusters that are not, the node pools a run added
    (their nodes carry the labels). ``before_delete(cluster)`` runs before a cluster's delete
    (the CLI removes its LoadBalancer Services there); ``spare(run_id)`` leaves a run alone."""
    found: list[tuple[str, Callable[[], Any]]] = []
    for cluster in gke.clusters():
        at = GKE(
            gke.client,
            gke.project,
            cluster.location,
            say=gke.say,
            poll_s=gke.poll_s,
            sleep=gke._sleep,
        )
        labels = cluster.resource_labels
        if labels.get(GKE_MANAGED_BY_LABEL) == MANAGED_BY:
            run = labels.get(GKE_RUN_ID_LABEL, "?")
            if spare(run):
                continue

            def delete(cluster: Any = cluster, at: GKE = at) -> None:
                if before_delete is not None:
                    before_delete(cluster)
                at.delete_cluster(cluster.name, timeout)

            found.append((f"GKE cluster {cluster.name} in {cluster.location} (run {run})", delete))
            continue
        for pool in cluster.node_pools:
            pool_labels = pool.config.resource_labels
            if pool_labels.get(GKE_MANAGED_BY_LABEL) != MANAGED_BY:
                continue
            run = pool_labels.get(GKE_RUN_ID_LABEL, "?")
            if spare(run):
                continue
            path = f"{at.cluster_path(cluster.name)}/nodePools/{pool.name}"
            found.append(
                (
                    f"GKE node pool {pool.name} of cluster {cluster.name} in {cluster.location} "
                    f"(run {run})",
                    functools.partial(at.delete_node_pool, path, timeout),
                )
            )
    return found
