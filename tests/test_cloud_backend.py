"""Backends: registry, capabilities with reasons, the plan and --dry-run (no credentials)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cloud.backend import (
    BACKENDS,
    Backend,
    DuplicateRegistrationError,
    Feature,
    Registry,
    backend_class,
    required_features,
)
from cloud.cli import register, run_on_cluster
from cloud.errors import CloudError, UnsupportedScenarioError
from cloud.plan import estimate_cost, make_plan, pool_plan
from cloud.settings import CloudSettings, new_run_id
from sim.loader import build_scenario, load_scenario
from sim.scenario import NodePool

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "scenarios" / "gsp777.yaml"


def test_import_cloud_stays_light() -> None:
    heavy = "('locust', 'kubernetes', 'google.cloud.container', 'google.cloud', 'gevent')"
    code = (
        "import sys, cloud, cloud.backend, cloud.plan, cloud.cli, cloud.settings, sim.compare; "
        f"print(sorted(m for m in {heavy} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_registry_refuses_duplicates_and_names_the_known_ones() -> None:
    registry: Registry[type] = Registry("thing")
    registry.register("a", aliases=("alpha",))(int)
    with pytest.raises(DuplicateRegistrationError, match="'alpha' is already registered"):
        registry.register("alpha")(str)
    with pytest.raises(CloudError, match="known: a, alpha"):
        registry.get("b")
    assert backend_class("gke").name == "gke" and backend_class("kube").name == "kube"
    assert set(BACKENDS.names()) >= {"gke", "kube"}
    with pytest.raises(DuplicateRegistrationError):
        BACKENDS.register("gke")(type("Other", (Backend,), {}))


def test_the_lab_needs_nothing_special() -> None:
    lab = load_scenario(LAB)
    assert required_features(lab) == {}
    backend_class("gke").check(lab)
    backend_class("kube").check(lab)


@pytest.mark.parametrize(
    ("override", "feature", "field"),
    [
        (
            "cluster.autoscaler.scan_interval=30s",
            Feature.CA_FLAGS,
            "cluster.autoscaler.scan_interval",
        ),
        (
            "hpa_controller.sync_period=5s",
            Feature.HPA_CONTROLLER_FLAGS,
            "hpa_controller.sync_period",
        ),
        ("metrics.resolution=15s", Feature.METRICS_RESOLUTION, "metrics.resolution"),
        ("cluster.scheduler_scoring=MostAllocated", Feature.SCHEDULER_SCORING, "MostAllocated"),
        ("hpa.minReplicas=0", Feature.HPA_SCALE_TO_ZERO, "hpa.minReplicas"),
    ],
)
def test_gke_rejects_what_it_cannot_do_with_the_reason(
    override: str, feature: Feature, field: str
) -> None:
    scenario = load_scenario(LAB, [override])
    assert field in required_features(scenario)[feature]
    with pytest.raises(UnsupportedScenarioError) as caught:
        backend_class("gke").check(scenario)
    message = str(caught.value)
    assert field in message and backend_class("gke").UNSUPPORTED[feature] in message


def test_kube_allows_scale_to_zero_but_not_control_plane_flags() -> None:
    backend_class("kube").check(load_scenario(LAB, ["hpa.minReplicas=0"]))
    with pytest.raises(UnsupportedScenarioError, match="kube-controller-manager"):
        backend_class("kube").check(load_scenario(LAB, ["hpa_controller.tolerance=0.2"]))
    assert not backend_class("gke").supports(Feature.DETERMINISTIC_REPLAY)


def test_cost_bracket_from_the_catalog() -> None:
    lab = load_scenario(LAB)
    pools = [pool_plan(p, True) for p in lab.cluster.pools]
    # 30 min: 1 node at least, 3 at most, n1-standard-4 at $0.189999/h; 8 min of set-up at 1 node.
    est = estimate_cost(pools, 1800, overhead_s=480, management_fee=False)
    assert est.low == pytest.approx(0.189999 * (0.5 + 480 / 3600), abs=1e-4)
    assert est.high == pytest.approx(0.189999 * (1.5 + 480 / 3600), abs=1e-4)
    with_fee = estimate_cost(pools, 1800, overhead_s=0, management_fee=True)
    assert with_fee.low == pytest.approx(0.189999 * 0.5 + 0.05, abs=1e-4)


def test_gpu_machine_becomes_a_base_type_plus_accelerators() -> None:
    plan = pool_plan(NodePool(machine_type="n1-standard-4-nvidia-tesla-t4"), True)
    assert plan.gce_machine_type == "n1-standard-4"
    assert plan.accelerator == ("nvidia-tesla-t4", 1)


def test_plan_names_cluster_pool_objects_and_cost() -> None:
    lab = load_scenario(LAB)
    settings = CloudSettings(project="p", location="us-central1-a")
    plan = make_plan(lab, settings, backend="gke", run_id="r1", no_lb=True, max_cost=0.10)
    text = plan.render()
    for words in (
        "project: p",
        "node pool default-pool: n1-standard-4, autoscaling 1-3, 1 initial",
        "cluster autoscaler profile: balanced",
        "Deployment image-classifier (apps/v1) in namespace scalelab",
        "Service[ClusterIP + port-forward]",
        "HorizontalPodAutoscaler image-classifier (autoscaling/v2)",
        "estimated cost: $",
        "--max-cost $0.10: the run may reach it",
    ):
        assert words in text, words


def test_dry_run_prints_the_plan_and_needs_no_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    said: list[str] = []
    lab = load_scenario(LAB)
    out = tmp_path / "run"
    result = run_on_cluster(
        lab,
        backend="gke",
        out=out,
        dry_run=True,
        settings=CloudSettings(project="p"),
        say=said.append,
    )
    assert result is None and "plan for gsp777 on gke" in said[0]
    assert not out.exists()


def test_a_real_run_needs_a_model_path_and_confirmation(tmp_path: Path) -> None:
    lab = load_scenario(LAB)
    with pytest.raises(CloudError, match="SCALELAB_MODEL_PATH"):
        run_on_cluster(lab, backend="kube", out=tmp_path, settings=CloudSettings(), say=print)
    settings = CloudSettings(model_path="gs://b/m")
    with pytest.raises(CloudError, match="not confirmed; nothing was created"):
        run_on_cluster(
            lab, backend="kube", out=tmp_path, settings=settings, say=print, confirm=lambda q: False
        )


def test_settings_from_environment() -> None:
    env = {"SCALELAB_GCP_PROJECT": "proj", "SCALELAB_MODEL_PATH": "gs://x/y", "KUBECONFIG": "/k"}
    settings = CloudSettings.from_env(env, location="europe-west1-b")
    assert (settings.project, settings.model_path, settings.kubeconfig) == (
        "proj",
        "gs://x/y",
        "/k",
    )
    assert settings.location == "europe-west1-b"
    assert new_run_id("GSP 777!", now=0) == "gsp-777-19700101-000000"


def test_registered_commands_exist() -> None:
    app = typer.Typer()

    @app.command()
    def version() -> None:  # a second command so typer keeps subcommands
        print("v")

    register(app)
    runner = CliRunner()
    helped = runner.invoke(app, ["--help"])
    assert helped.exit_code == 0
    for name in ("manifests", "serve", "cloud"):
        assert name in helped.output
    assert "cleanup" in runner.invoke(app, ["cloud", "--help"]).output
    done = runner.invoke(app, ["serve", "--profile", "x", "--model-path", "/m"])
    assert done.exit_code == 2 and "exactly one" in done.output


def test_build_scenario_with_open_loop_plan_is_described() -> None:
    spike = build_scenario(
        {"load": {"kind": "open_loop", "rate": {"kind": "constant", "rps": 2}}}, "x"
    )
    plan = make_plan(spike, CloudSettings(), backend="kube", run_id="r", no_lb=False)
    assert "open loop, Poisson arrivals at a constant rate" in plan.render()
