"""Everything a real-cluster run needs beyond the scenario, each a named, documented parameter.

The scenario says *what* to run; these say *where* (project, zone, kubeconfig) and the
assumptions of the real path (timeouts, polling). Unset fields come from ``SCALELAB_*``
environment variables (:meth:`CloudSettings.from_env`), so ``scalelab run --backend gke``
needs no extra flags once the environment is set up.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloud.errors import CloudError

if TYPE_CHECKING:
    from sim.scenario import Scenario

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
"""Kubernetes' recommended label (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/)."""
MANAGED_BY = "scalelab"
RUN_ID_LABEL = "scalelab.dev/run-id"
GKE_MANAGED_BY_LABEL = "managed-by"
"""GKE resource labels allow no '/' or '.' (https://cloud.google.com/compute/docs/labeling-resources)."""
GKE_RUN_ID_LABEL = "scalelab-run-id"

GCLOUD_DEFAULT_SCOPES: tuple[str, ...] = (
    "https://www.googleapis.com/auth/devstorage.read_only",
    "https://www.googleapis.com/auth/logging.write",
    "https://www.googleapis.com/auth/monitoring",
    "https://www.googleapis.com/auth/service.management.readonly",
    "https://www.googleapis.com/auth/servicecontrol",
    "https://www.googleapis.com/auth/trace.append",
)
"""The node OAuth scopes ``gcloud container clusters create`` sends when none are given
(captured from Cloud SDK 528.0.0: tests/data/gcloud_create_cluster.json). Without
devstorage.read_only the nodes cannot read the model from Cloud Storage."""


DEFAULT_MODEL_PATH = "gs://MODEL_BUCKET/resnet_101"
"""Placeholder for printing manifests; a real run needs ``model_path`` (SCALELAB_MODEL_PATH)."""


@dataclass(frozen=True)
class CloudSettings:
    """Where and how a real-cluster run happens (all but ``project`` have defaults)."""

    project: str | None = None
    location: str = "us-central1-a"
    """Zone or region of the GKE cluster; a zone keeps it to one zonal cluster (assumed)."""
    cluster_name: str = "scalelab"
    release_channel: str = "regular"
    kubernetes_version: str | None = None
    """``initial_cluster_version``; None takes the release channel's default."""
    namespace: str = "scalelab"
    model_path: str | None = None
    """TF Serving ``--model_base_path`` (e.g. gs://BUCKET/resnet_101); the scenario has none."""
    node_oauth_scopes: tuple[str, ...] = GCLOUD_DEFAULT_SCOPES
    """``NodeConfig.oauth_scopes`` of every node pool scalelab creates (gcloud's defaults)."""
    node_service_account: str | None = None
    """``NodeConfig.service_account``; None: the Compute Engine default service account, as
    gcloud. It needs roles/storage.objectViewer on the model's bucket."""
    kubeconfig: str | None = None
    context: str | None = None
    endpoint: str | None = None
    """Send the load here instead of the Service's address (an Ingress, a tunnel, a test)."""
    model_version: str = "1"
    signature_name: str = "serving_preprocess"
    image_file: Path | None = None
    """The JPEG the lab posts; default: the packaged grace_hopper.jpg."""
    observe_interval: float = 1.0
    """Seconds between reads of the HPA, pods, nodes and metrics: the trace's rows are 1 s, as
    the simulator's (SCALELAB_OBSERVE_INTERVAL changes it; each read is ~7 API calls)."""
    client_timeout: float = 60.0
    """Locust's per-request timeout; TF Serving's own REST timeout is the scenario's."""
    model_ready_timeout: float = 900.0
    load_balancer_timeout: float = 600.0
    operation_timeout: float = 1800.0
    delete_timeout: float = 600.0
    """How long a deleted Namespace or LoadBalancer Service may take to go (assumed: GKE
    removes a forwarding rule in a few minutes)."""
    delete_poll_s: float = 2.0
    """Seconds between reads while waiting for a delete to finish."""
    cluster_overhead_s: float = 480.0
    """Cluster create + delete time billed at the initial nodes, for the cost estimate
    (assumed: ~6 min create, ~2 min delete)."""
    teardown_attempts: int = 3
    teardown_backoff_s: float = 5.0
    """Each delete is tried this often, waiting backoff x attempt between tries."""
    node_pools: tuple[str, ...] | None = None
    """Count only nodes of these pools (label cloud.google.com/gke-nodepool); None: the
    scenario's pools on gke, every node on kube."""
    extra_labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **given: Any) -> CloudSettings:
        """Explicit values win, then ``SCALELAB_*`` variables, then the defaults."""
        env = dict(os.environ if environ is None else environ)
        found: dict[str, Any] = {}
        project = env.get("SCALELAB_GCP_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT")
        if project:
            found["project"] = project
        for name, var in (
            ("location", "SCALELAB_GKE_LOCATION"),
            ("cluster_name", "SCALELAB_GKE_CLUSTER"),
            ("namespace", "SCALELAB_NAMESPACE"),
            ("model_path", "SCALELAB_MODEL_PATH"),
            ("kubeconfig", "KUBECONFIG"),
            ("context", "SCALELAB_KUBE_CONTEXT"),
            ("endpoint", "SCALELAB_ENDPOINT"),
            ("node_service_account", "SCALELAB_GKE_NODE_SERVICE_ACCOUNT"),
        ):
            if env.get(var):
                found[name] = env[var]
        if env.get("SCALELAB_OBSERVE_INTERVAL"):
            found["observe_interval"] = _seconds(
                "SCALELAB_OBSERVE_INTERVAL", env["SCALELAB_OBSERVE_INTERVAL"]
            )
        if env.get("SCALELAB_GKE_OAUTH_SCOPES"):
            found["node_oauth_scopes"] = tuple(
                _scope(s) for s in env["SCALELAB_GKE_OAUTH_SCOPES"].split(",") if s.strip()
            )
        found.update({k: v for k, v in given.items() if v is not None})
        return cls(**found)

    def with_(self, **changes: Any) -> CloudSettings:
        return replace(self, **changes)


def _seconds(var: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise CloudError(f"{var}={text!r}: expected a number of seconds above 0, e.g. 1 or 0.5")
    return value


def _scope(name: str) -> str:
    """A scope as gcloud's ``--scopes`` takes it: a URL, or a short name under
    https://www.googleapis.com/auth/ (``devstorage.read_only``, ``cloud-platform``)."""
    name = name.strip()
    return name if "://" in name else f"https://www.googleapis.com/auth/{name}"


def new_run_id(scenario_name: str, now: float | None = None) -> str:
    """``<scenario>-<UTC yyyymmdd-hhmmss>``: a valid label value and DNS label (<= 63 chars)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    slug = re.sub(r"[^a-z0-9-]+", "-", scenario_name.lower()).strip("-")[:40] or "run"
    return f"{slug}-{stamp}"


def with_model_path(settings: CloudSettings, scenario: Scenario) -> CloudSettings:
    """The settings with the model's base path: their own (``--model-path``,
    SCALELAB_MODEL_PATH), else the deployment's own ``--model_base_path`` (a manifest's arg;
    the last one, as TF Serving reads it); both, and different, is an error naming both."""
    from sim.tfserving_flags import flag_name

    given = None
    for item in scenario.deployment.args:
        parsed = flag_name(item)
        if parsed is not None and parsed[0] == "model_base_path":
            given = parsed[1]
    if given in ("$(MODEL_PATH)", DEFAULT_MODEL_PATH):
        given = None  # scalelab's own reference, or the placeholder it prints: not a path
    if given is not None and settings.model_path is not None and given != settings.model_path:
        raise CloudError(
            f"deployment.args has --model_base_path={given} and the model path setting "
            f"(--model-path or SCALELAB_MODEL_PATH) is {settings.model_path}; give one, or the "
            "same in both"
        )
    return replace(settings, model_path=settings.model_path or given)
