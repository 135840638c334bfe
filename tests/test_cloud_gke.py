"""GKE: the CreateClusterRequest as real container_v1 types, field by field; provisioning,
reuse and deletion through the real ClusterManagerClient (REST transport) against a local fake
of GKE's API; credentials into a kubernetes client Configuration with token refresh."""

from __future__ import annotations

import base64
import calendar
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.auth import credentials as ga_credentials
from google.cloud import container_v1 as c

from cloud.credentials import TokenRefresher, gke_configuration
from cloud.errors import CloudError
from cloud.gke import GKE, GKEBackend, cluster_leftovers, cluster_request, run_age_s
from cloud.settings import CloudSettings
from cloud.teardown import Ledger, Outcome
from sim.loader import build_scenario, load_scenario
from tests.cloud_fakes import FakeGKE
from tests.gcloud_capture import capture, gcloud_path

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "scenarios" / "gsp777.yaml"
SETTINGS = CloudSettings(project="proj", location="us-central1-a", cluster_name="lab")


def test_the_labs_cluster_request_field_by_field() -> None:
    request = cluster_request(load_scenario(LAB), SETTINGS, "run-1", "proj")
    assert isinstance(request, c.CreateClusterRequest)
    assert request.parent == "projects/proj/locations/us-central1-a"
    cluster = request.cluster
    assert cluster.name == "lab"
    assert dict(cluster.resource_labels) == {"managed-by": "scalelab", "scalelab-run-id": "run-1"}
    assert (
        cluster.autoscaling.autoscaling_profile == c.ClusterAutoscaling.AutoscalingProfile.BALANCED
    )
    assert cluster.release_channel.channel == c.ReleaseChannel.Channel.REGULAR
    assert cluster.initial_cluster_version == ""
    assert not cluster.addons_config.horizontal_pod_autoscaling.disabled
    (pool,) = cluster.node_pools
    # gcloud ... --machine-type=n1-standard-4 --enable-autoscaling --min-nodes=1 --max-nodes=3
    #   --num-nodes=1
    assert pool.name == "default-pool"
    assert pool.initial_node_count == 1
    assert pool.config.machine_type == "n1-standard-4"
    assert list(pool.config.accelerators) == []
    assert pool.autoscaling == c.NodePoolAutoscaling(
        enabled=True, min_node_count=1, max_node_count=3
    )
    assert dict(pool.config.resource_labels)["scalelab-run-id"] == "run-1"


def test_profile_gpu_pools_and_fixed_size() -> None:
    scenario = load_scenario(
        LAB,
        [
            "cluster.autoscaler.profile=optimize-utilization",
            "cluster.autoscaler.enabled=false",
            "cluster.node_pool.machine_type=n1-standard-4-nvidia-tesla-t4",
            "cluster.node_pool.initial_nodes=2",
            "cluster.node_pool.labels={role: serving}",
        ],
    )
    settings = CloudSettings(release_channel="stable", kubernetes_version="1.33")
    cluster = cluster_request(scenario, settings, "r", "p").cluster
    profile = c.ClusterAutoscaling.AutoscalingProfile.OPTIMIZE_UTILIZATION
    assert cluster.autoscaling.autoscaling_profile == profile
    assert cluster.release_channel.channel == c.ReleaseChannel.Channel.STABLE
    assert cluster.initial_cluster_version == "1.33"
    (pool,) = cluster.node_pools
    assert pool.config.machine_type == "n1-standard-4"
    assert list(pool.config.accelerators) == [
        c.AcceleratorConfig(accelerator_type="nvidia-tesla-t4", accelerator_count=1)
    ]
    assert not pool.autoscaling.enabled and pool.initial_node_count == 2
    assert dict(pool.config.labels) == {"role": "serving"}


@pytest.fixture
def fake_gke() -> Iterator[FakeGKE]:
    fake = FakeGKE()
    yield fake
    fake.close()


def gke_for(fake: FakeGKE, said: list[str]) -> GKE:
    return GKE(
        fake.client(), "proj", "us-central1-a", say=said.append, poll_s=0, sleep=lambda s: None
    )


def test_create_wait_and_delete(fake_gke: FakeGKE) -> None:
    said: list[str] = []
    gke = gke_for(fake_gke, said)
    ledger = Ledger(sleep=lambda s: None)
    cluster = gke.ensure_cluster(load_scenario(LAB), SETTINGS, "run-1", ledger)
    assert isinstance(cluster, c.Cluster) and cluster.name == "lab"
    assert cluster.node_pools[0].autoscaling.max_node_count == 3
    method, path, body = fake_gke.requests[1]
    assert (method, path) == ("POST", "projects/proj/locations/us-central1-a/clusters")
    assert body["cluster"]["nodePools"][0]["config"]["machineType"] == "n1-standard-4"
    assert any("creating cluster lab: done" in line for line in said)
    report = ledger.teardown(said.append)
    assert report.ok and report.items[0][1] is Outcome.REMOVED
    assert fake_gke.clusters == {}


def test_a_failed_operation_is_an_error(fake_gke: FakeGKE) -> None:
    fake_gke.operation_error = "Insufficient regional quota to satisfy request: CPUS"
    ledger = Ledger(sleep=lambda s: None)
    with pytest.raises(
        CloudError, match="creating cluster lab failed: Insufficient regional quota"
    ):
        gke_for(fake_gke, []).ensure_cluster(load_scenario(LAB), SETTINGS, "r", ledger)
    # The create was accepted, so teardown still knows to delete what may exist.
    assert [e.description for e in ledger.entries] == [
        "GKE cluster projects/proj/locations/us-central1-a/clusters/lab"
    ]


def test_reuse_adds_pools_sets_autoscaling_and_restores_it(fake_gke: FakeGKE) -> None:
    said: list[str] = []
    gke = gke_for(fake_gke, said)
    two_pools = build_scenario(
        {"cluster": {"node_pools": [{"name": "default-pool"}, {"name": "extra"}]}}, "two"
    )
    gke.ensure_cluster(
        load_scenario(LAB, ["cluster.node_pool.max_nodes=5"]), SETTINGS, "old", Ledger()
    )
    ledger = Ledger(sleep=lambda s: None)
    cluster = gke.ensure_cluster(two_pools, SETTINGS, "new", ledger)
    pools = {p.name: p for p in cluster.node_pools}
    assert set(pools) == {"default-pool", "extra"}
    assert pools["default-pool"].autoscaling.max_node_count == 3
    assert any("reusing cluster lab" in line for line in said)
    assert len(ledger.entries) == 2  # the new pool, and the autoscaling change; not the cluster
    assert ledger.teardown().ok
    restored = gke.get("lab")
    assert [p.name for p in restored.node_pools] == ["default-pool"]
    assert restored.node_pools[0].autoscaling.max_node_count == 5


def test_reuse_refuses_a_pool_of_another_machine_type(fake_gke: FakeGKE) -> None:
    gke = gke_for(fake_gke, [])
    gke.ensure_cluster(load_scenario(LAB), SETTINGS, "old", Ledger())
    other = load_scenario(LAB, ["cluster.node_pool.machine_type=e2-standard-4"])
    with pytest.raises(CloudError, match="of n1-standard-4, the scenario wants e2-standard-4"):
        gke.ensure_cluster(other, SETTINGS, "new", Ledger())


def test_delete_failures_are_retried_then_reported(fake_gke: FakeGKE) -> None:
    gke = gke_for(fake_gke, [])
    ledger = Ledger(attempts=3, sleep=lambda s: None)
    gke.ensure_cluster(load_scenario(LAB), SETTINGS, "r", ledger)
    fake_gke.fail("DELETE", r"/clusters/lab$", status=503, times=2)
    report = ledger.teardown()
    assert report.ok and fake_gke.clusters == {}  # third try went through
    ledger = Ledger(attempts=2, sleep=lambda s: None)
    gke.ensure_cluster(load_scenario(LAB), SETTINGS, "r", ledger)
    fake_gke.fail("DELETE", r"/clusters/lab$", status=500, times=5)
    report = ledger.teardown()
    assert not report.ok and "cloud cleanup" in report.render()
    assert report.items[0][1] is Outcome.FAILED and "500" in report.items[0][2]
    assert len(ledger.entries) == 1  # kept for a second try


def test_leftovers_are_found_by_label(fake_gke: FakeGKE) -> None:
    gke = gke_for(fake_gke, [])
    gke.ensure_cluster(load_scenario(LAB), SETTINGS, "run-9", Ledger())
    fake_gke.clusters["projects/proj/locations/us-central1-a/clusters/theirs"] = {
        "name": "theirs",
        "location": "us-central1-a",
        "resourceLabels": {"team": "x"},
    }
    everywhere = GKE(gke.client, "proj", "-", say=print, poll_s=0, sleep=lambda s: None)
    balancers: list[str] = []
    found = cluster_leftovers(
        everywhere, timeout=60, before_delete=lambda cluster: balancers.append(cluster.name)
    )
    assert [what for what, _ in found] == ["GKE cluster lab in us-central1-a (run run-9)"]
    found[0][1]()
    assert balancers == ["lab"]  # its LoadBalancer Services go first
    assert list(fake_gke.clusters) == ["projects/proj/locations/us-central1-a/clusters/theirs"]


def test_cleanup_finds_pools_added_to_a_reused_cluster_and_spares_recent_runs(
    fake_gke: FakeGKE,
) -> None:
    gke = gke_for(fake_gke, [])
    key = "projects/proj/locations/europe-west1/clusters/theirs"
    fake_gke.clusters[key] = {
        "name": "theirs",
        "location": "europe-west1",
        "resourceLabels": {"team": "x"},
        "nodePools": [{"name": "default-pool", "config": {"machineType": "e2-medium"}}],
        "autoscaling": {"autoscalingProfile": "BALANCED"},
    }
    reuse = GKE(gke.client, "proj", "europe-west1", say=print, poll_s=0, sleep=lambda s: None)
    two_pools = build_scenario(
        {"cluster": {"node_pools": [{"name": "extra", "machine_type": "n1-standard-4"}]}}, "x"
    )
    settings = CloudSettings(cluster_name="theirs")
    reuse.ensure_cluster(two_pools, settings, "lab-20260301-120000", Ledger())  # kept: --keep
    everywhere = GKE(gke.client, "proj", "-", say=print, poll_s=0, sleep=lambda s: None)
    found = cluster_leftovers(everywhere, timeout=60)
    assert [w for w, _ in found] == [
        "GKE node pool extra of cluster theirs in europe-west1 (run lab-20260301-120000)"
    ]
    assert cluster_leftovers(everywhere, timeout=60, spare=lambda run: run.startswith("lab")) == []
    found[0][1]()
    assert [p["name"] for p in fake_gke.clusters[key]["nodePools"]] == ["default-pool"]
    now = calendar.timegm((2026, 3, 1, 13, 0, 0, 0, 0, 0))
    assert run_age_s("lab-20260301-120000", now) == 3600 and run_age_s("manual", now) is None


def test_gke_backend_provisions_with_an_injected_client(fake_gke: FakeGKE, tmp_path: Path) -> None:
    backend = GKEBackend(
        load_scenario(LAB),
        SETTINGS,
        run_id="r",
        out=tmp_path,
        say=lambda s: None,
        client=fake_gke.client(),
        credentials=ga_credentials.AnonymousCredentials(),
    )
    backend.gke().poll_s = 0
    backend.provision()
    assert backend.cluster.current_master_version.startswith("1.33")
    assert backend._counted_pools() == ("default-pool",)
    assert backend.ledger.teardown().ok


class Expiring(ga_credentials.Credentials):
    """Real google-auth credentials whose token lasts ``ttl`` seconds."""

    def __init__(self, ttl: float) -> None:
        super().__init__()
        self.ttl = ttl
        self.issued = 0

    def refresh(self, request: Any) -> None:
        self.issued += 1
        self.token = f"token-{self.issued}"
        self.expiry = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=self.ttl)


def test_configuration_from_the_cluster_refreshes_its_token() -> None:
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    long_lived = Expiring(ttl=3600)
    config = gke_configuration("34.1.2.3", ca.decode(), long_lived, request=object())
    assert config.host == "https://34.1.2.3"
    assert Path(config.ssl_ca_cert).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert config.auth_settings()["BearerToken"]["value"] == "Bearer token-1"
    assert config.auth_settings()["BearerToken"]["value"] == "Bearer token-1"  # still valid
    short = Expiring(ttl=1)  # inside google-auth's refresh margin: renewed on every use
    config = gke_configuration("34.1.2.3", ca.decode(), short, request=object())
    config.auth_settings()
    assert isinstance(config.refresh_api_key_hook, TokenRefresher)
    assert config.refresh_api_key_hook.refreshes == 2
    with pytest.raises(CloudError, match="no endpoint"):
        gke_configuration("", "", short)


# --- the lab's own gcloud request (golden capture) -------------------------------------------

GOLDEN = ROOT / "tests" / "data" / "gcloud_create_cluster.json"


def leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a JSON body to dotted paths; lists are compared whole."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(leaves(value, f"{prefix}.{key}" if prefix else key))
        return out
    if isinstance(data, list) and data and isinstance(data[0], dict):
        out = {}
        for i, value in enumerate(data):
            out.update(leaves(value, f"{prefix}[{i}]"))
        return out
    return {prefix: data}


def sent_by_scalelab(fake: FakeGKE, scenario_path: Path = LAB) -> dict[str, Any]:
    """The CreateCluster body scalelab's client puts on the wire (REST transport)."""
    gke_for(fake, []).ensure_cluster(load_scenario(scenario_path), SETTINGS, "r", Ledger())
    ((path, body),) = [
        (p, b) for m, p, b in fake.requests if m == "POST" and p.endswith("/clusters")
    ]
    # The Python client carries ``parent`` in the URL (http rule post: /v1/{parent=...}/clusters);
    # gcloud's apitools repeats it in the body.
    return {**body, "parent": path.removesuffix("/clusters")}


def test_the_request_carries_every_field_the_labs_gcloud_sends(fake_gke: FakeGKE) -> None:
    golden = json.loads(GOLDEN.read_text())["request"]["body"]
    ours = leaves(sent_by_scalelab(fake_gke))
    differ = {
        path: (value, ours.get(path, "<missing>"))
        for path, value in leaves(golden).items()
        if ours.get(path, "<missing>") != value
    }
    assert differ == {}, f"field: (gcloud, scalelab): {differ}"
    # The scopes are what lets TF Serving read gs://: the storage one above all.
    scopes = ours["cluster.nodePools[0].config.oauthScopes"]
    assert "https://www.googleapis.com/auth/devstorage.read_only" in scopes


def test_scopes_and_node_service_account_are_settings() -> None:
    settings = CloudSettings.from_env(
        {
            "SCALELAB_GKE_OAUTH_SCOPES": "cloud-platform, https://www.googleapis.com/auth/x",
            "SCALELAB_GKE_NODE_SERVICE_ACCOUNT": "tfs@proj.iam.gserviceaccount.com",
        }
    )
    (pool,) = cluster_request(load_scenario(LAB), settings, "r", "p").cluster.node_pools
    assert list(pool.config.oauth_scopes) == [
        "https://www.googleapis.com/auth/cloud-platform",
        "https://www.googleapis.com/auth/x",
    ]
    assert pool.config.service_account == "tfs@proj.iam.gserviceaccount.com"
    assert pool.management.auto_upgrade and pool.management.auto_repair


@pytest.mark.skipif(gcloud_path() is None, reason="the Cloud SDK (gcloud) is not installed")
def test_the_golden_file_is_what_this_gcloud_sends() -> None:
    """Re-capture from the installed gcloud: a newer SDK that changed its defaults shows here
    (then: python -m tests.gcloud_capture, and check scalelab still sends the same)."""
    gcloud = gcloud_path()
    assert gcloud is not None
    fresh = capture(gcloud)
    golden = json.loads(GOLDEN.read_text())["request"]
    assert fresh == golden


# --- no cluster left billing --------------------------------------------------------------


def test_ctrl_c_while_creating_waits_for_the_create_then_deletes(fake_gke: FakeGKE) -> None:
    """GKE refuses a delete while the create runs (400 FAILED_PRECONDITION); teardown waits for
    the saved create operation instead of giving up after its retries."""
    said: list[str] = []
    interrupts = iter([KeyboardInterrupt()])

    def sleep(_s: float) -> None:
        err = next(interrupts, None)
        if err is not None:
            raise err

    gke = GKE(fake_gke.client(), "proj", "us-central1-a", say=said.append, poll_s=0, sleep=sleep)
    ledger = Ledger(attempts=1, sleep=lambda s: None)
    with pytest.raises(KeyboardInterrupt):
        gke.ensure_cluster(load_scenario(LAB), SETTINGS, "r", ledger)
    key = "projects/proj/locations/us-central1-a/clusters/lab"
    assert fake_gke.clusters[key]["status"] == "PROVISIONING"
    report = ledger.teardown(said.append)
    assert report.ok, report.render()
    assert fake_gke.clusters == {}
    assert any("waiting for operation operation-0 (create_cluster)" in s for s in said)
    deletes = [p for m, p, _ in fake_gke.requests if m == "DELETE"]
    assert deletes == ["projects/proj/locations/us-central1-a/clusters/lab"]  # no refused try


def test_cleanup_waits_for_an_operation_it_did_not_start(fake_gke: FakeGKE) -> None:
    gke = gke_for(fake_gke, [])
    gke.ensure_cluster(load_scenario(LAB), SETTINGS, "run-9", Ledger())
    fake_gke.operation_polls = 4
    gke.client.set_node_pool_autoscaling(  # someone's change, still RUNNING
        request=c.SetNodePoolAutoscalingRequest(
            name="projects/proj/locations/us-central1-a/clusters/lab/nodePools/default-pool",
            autoscaling=c.NodePoolAutoscaling(enabled=True, min_node_count=1, max_node_count=4),
        )
    )
    found = cluster_leftovers(GKE(gke.client, "proj", "-", say=print, poll_s=0), timeout=60)
    found[0][1]()
    assert fake_gke.clusters == {}
    refused = [
        p for m, p, _ in fake_gke.requests if m == "DELETE"
    ]  # the first try met the running operation (400), the second went through
    assert len(refused) == 2


def test_cleanup_of_a_pool_waits_for_an_operation_on_its_cluster(fake_gke: FakeGKE) -> None:
    """A run's pool in someone else's cluster: GKE refuses the pool's delete (400) while any
    operation runs on that cluster, here the owner's autoscaling change; cleanup waits it out
    as it does for a cluster, rather than failing."""
    said: list[str] = []
    gke = gke_for(fake_gke, said)
    key = "projects/proj/locations/us-central1-a/clusters/theirs"
    fake_gke.clusters[key] = {
        "name": "theirs",
        "location": "us-central1-a",
        "resourceLabels": {"team": "x"},
        "nodePools": [{"name": "default-pool", "config": {"machineType": "e2-medium"}}],
        "autoscaling": {"autoscalingProfile": "BALANCED"},
    }
    extra = build_scenario(
        {"cluster": {"node_pools": [{"name": "extra", "machine_type": "n1-standard-4"}]}}, "x"
    )
    gke.ensure_cluster(extra, CloudSettings(cluster_name="theirs"), "lab-1", Ledger())
    fake_gke.operation_polls = 4
    gke.client.set_node_pool_autoscaling(  # the owner's change, still RUNNING
        request=c.SetNodePoolAutoscalingRequest(
            name=f"{key}/nodePools/default-pool",
            autoscaling=c.NodePoolAutoscaling(enabled=True, min_node_count=1, max_node_count=4),
        )
    )
    found = cluster_leftovers(gke, timeout=60)
    assert [w for w, _ in found] == [
        "GKE node pool extra of cluster theirs in us-central1-a (run lab-1)"
    ]
    found[0][1]()
    assert [p["name"] for p in fake_gke.clusters[key]["nodePools"]] == ["default-pool"]
    deletes = [p for m, p, _ in fake_gke.requests if m == "DELETE"]
    assert deletes == [f"{key}/nodePools/extra"] * 2  # refused once (400), then through
    assert any("node pool extra of cluster theirs: waiting for operation" in line for line in said)


def test_a_cluster_created_meanwhile_by_someone_else_is_not_ours(fake_gke: FakeGKE) -> None:
    gke = gke_for(fake_gke, [])
    gke.ensure_cluster(load_scenario(LAB), SETTINGS, "theirs", Ledger())
    gke.get = lambda name: None  # type: ignore[method-assign]  # the race: gone at our look
    ledger = Ledger()
    with pytest.raises(Exception, match="Already exists"):
        gke.ensure_cluster(load_scenario(LAB), SETTINGS, "ours", ledger)
    assert ledger.entries == []  # 409: nothing to delete


def test_reuse_compares_the_fields_scalelab_sets_and_the_profile(fake_gke: FakeGKE) -> None:
    """A real pool reports location_policy (GKE fills it in): not a difference to undo."""
    gke = gke_for(fake_gke, [])
    gke.ensure_cluster(load_scenario(LAB), SETTINGS, "old", Ledger())
    pool = gke.get("lab").node_pools[0]
    assert pool.autoscaling.location_policy == c.NodePoolAutoscaling.LocationPolicy.BALANCED
    ledger = Ledger()
    gke.ensure_cluster(load_scenario(LAB), SETTINGS, "new", ledger)
    assert ledger.entries == []  # nothing changed, nothing to restore
    assert not [p for m, p, _ in fake_gke.requests if p.endswith(":setAutoscaling")]
    other = load_scenario(LAB, ["cluster.autoscaler.profile=optimize-utilization"])
    with pytest.raises(CloudError, match="runs the cluster autoscaler's balanced profile"):
        gke.ensure_cluster(other, SETTINGS, "new", Ledger())
