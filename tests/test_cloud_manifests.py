"""The lab's objects as kubernetes client models, checked against the OpenAPI schemas of every
Kubernetes version the scenario allows (kubernetes-validate, strict: unknown fields fail)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml
from kubernetes import client as k8s
from typer.testing import CliRunner

from cloud.cli import register
from cloud.manifests import (
    GKE_MINOR_VERSIONS,
    allowed_versions,
    build_objects,
    cpu_quantity,
    from_api_dict,
    memory_quantity,
    to_api_dicts,
    to_yaml,
    validate,
)
from cloud.settings import CloudSettings
from sim.loader import load_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = [
    ROOT / "scenarios" / f"{n}.yaml" for n in ("gsp777", "spike", "diurnal", "bench-throughput")
]
TOLERANCE = "hpa.behavior={scaleUp: {tolerance: '0.05'}}"


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_scenario_validates_on_every_allowed_version(path: Path) -> None:
    scenario = load_scenario(path)
    versions = allowed_versions(scenario)
    assert versions, "a scenario that no GKE version can run"
    objects = build_objects(scenario, CloudSettings(), run_id="test")
    assert validate(objects, versions) == []


def test_the_lab_objects_field_by_field() -> None:
    lab = load_scenario(ROOT / "scenarios" / "gsp777.yaml")
    settings = CloudSettings(namespace="lab", model_path="gs://bucket/resnet_101")
    ns, cm, deployment, service, hpa = build_objects(lab, settings, run_id="r-1")
    assert isinstance(deployment, k8s.V1Deployment) and isinstance(
        hpa, k8s.V2HorizontalPodAutoscaler
    )
    assert cm.data == {"MODEL_NAME": "image_classifier", "MODEL_PATH": "gs://bucket/resnet_101"}
    container = deployment.spec.template.spec.containers[0]
    assert container.image == "tensorflow/serving:2.8.0"
    assert container.args[:2] == ["--model_name=$(MODEL_NAME)", "--model_base_path=$(MODEL_PATH)"]
    assert "--rest_api_timeout_in_ms=30000" in container.args
    assert container.resources.requests == {"cpu": "3", "memory": "4Gi"}
    assert container.resources.limits is None  # Burstable, as in the lab
    probe = container.readiness_probe
    assert (probe.tcp_socket.port, probe.initial_delay_seconds, probe.period_seconds) == (
        8500,
        10,
        5,
    )
    assert probe.failure_threshold == 10
    assert {p.container_port for p in container.ports} == {8500, 8501}
    assert deployment.spec.selector.match_labels == {"app": "image-classifier"}
    assert service.spec.type == "LoadBalancer" and service.spec.selector == {
        "app": "image-classifier"
    }
    assert {p.port for p in service.spec.ports} == {8500, 8501}
    assert hpa.spec.scale_target_ref.name == "image-classifier"
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 4)
    assert hpa.spec.metrics[0].resource.target.average_utilization == 60
    for obj in (ns, cm, deployment, service, hpa):
        assert obj.metadata.labels["app.kubernetes.io/managed-by"] == "scalelab"
        assert obj.metadata.labels["scalelab.dev/run-id"] == "r-1"
    pod_labels = deployment.spec.template.metadata.labels
    assert pod_labels["scalelab.dev/run-id"] == "r-1" and pod_labels["app"] == "image-classifier"


def test_yaml_is_what_the_client_sends() -> None:
    lab = load_scenario(ROOT / "scenarios" / "gsp777.yaml")
    objects = build_objects(lab, CloudSettings(), run_id="r")
    docs = list(yaml.safe_load_all(to_yaml(objects)))
    assert docs == to_api_dicts(objects)
    assert [d["kind"] for d in docs] == [
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
    ]


def test_batching_adds_flags_and_the_parameters_file() -> None:
    lab = load_scenario(ROOT / "scenarios" / "gsp777.yaml", ["serving.batching.max_batch_size=8"])
    objects = build_objects(lab, CloudSettings(), run_id="r")
    cm, deployment = objects[1], objects[2]
    assert "max_batch_size { value: 8 }" in cm.data["batching.config"]
    args = deployment.spec.template.spec.containers[0].args
    assert "--enable_batching" in args
    assert "--batching_parameters_file=/etc/scalelab/batching.config" in args
    assert validate(objects, ["1.33"]) == []


def test_hpa_tolerance_narrows_the_versions_and_the_schemas_agree() -> None:
    scenario = load_scenario(ROOT / "scenarios" / "gsp777.yaml", [TOLERANCE])
    assert allowed_versions(scenario) == [v for v in GKE_MINOR_VERSIONS if v >= "1.35"]
    objects = build_objects(scenario, CloudSettings(), run_id="r")
    assert validate(objects, ["1.35"]) == []
    # On a version before the field existed, the strict schema rejects it.
    problems = validate(objects, ["1.32"])
    assert problems and "tolerance" in problems[0] and "HorizontalPodAutoscaler" in problems[0]


def test_limits_and_node_selector_pass_through() -> None:
    scenario = load_scenario(
        ROOT / "scenarios" / "gsp777.yaml",
        [
            "deployment.resources.limits.cpu=3500m",
            "deployment.resources.limits.memory=6Gi",
            "deployment.nodeSelector={pool: serving}",
        ],
    )
    deployment = build_objects(scenario, CloudSettings(), run_id="r")[2]
    spec = deployment.spec.template.spec
    assert spec.containers[0].resources.limits == {"cpu": "3500m", "memory": "6Gi"}
    assert spec.node_selector == {"pool": "serving"}


def test_quantities_and_strict_conversion() -> None:
    assert (cpu_quantity(3000), cpu_quantity(250)) == ("3", "250m")
    assert (memory_quantity(4 * 2**30), memory_quantity(3 * 2**20), memory_quantity(1000)) == (
        "4Gi",
        "3Mi",
        "1000",
    )
    target = from_api_dict("V2MetricTarget", {"type": "AverageValue", "averageValue": 500})
    assert target.average_value == "500"
    with pytest.raises(ValueError, match="no field"):
        from_api_dict("V2MetricTarget", {"type": "Utilization", "averageUtilisation": 60})


def test_manifests_command_prints_yaml(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    lab = str(ROOT / "scenarios" / "gsp777.yaml")
    done = runner.invoke(
        app, ["manifests", lab, "--namespace", "demo", "--run-id", "x1", "--no-lb", "--validate"]
    )
    assert done.exit_code == 0, done.output
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert {d["metadata"].get("namespace") for d in docs[1:]} == {"demo"}
    assert docs[3]["spec"]["type"] == "ClusterIP"
    bad = runner.invoke(app, ["manifests", lab, "--set", "hpa.maxReplicas=many"])
    assert bad.exit_code == 2 and "hpa.maxReplicas" in bad.output


def test_what_the_simulation_used_is_in_the_manifests() -> None:
    """The preStop sleep README's property test recommends, the thread flags and the
    scenario's own batching (it crashed the build before) reach the Deployment."""
    scenario = load_scenario(
        ROOT / "scenarios" / "gsp777.yaml",
        [
            "deployment.lifecycle.preStop.sleep.seconds=30",
            "serving.intra_op_threads=2",
            "serving.rest_api_num_threads=16",
            "serving.batching.max_batch_size=4",
        ],
    )
    objects = build_objects(scenario, CloudSettings(), run_id="r")
    cm, deployment = objects[1], objects[2]
    container = deployment.spec.template.spec.containers[0]
    assert container.lifecycle.pre_stop.sleep.seconds == 30
    assert "--tensorflow_intra_op_parallelism=2" in container.args
    assert "--rest_api_num_threads=16" in container.args
    assert "--enable_batching" in container.args
    # Unset fields stay out, so TF Serving's defaults apply as the simulator assumed.
    assert cm.data["batching.config"] == (
        "max_batch_size { value: 4 }\n"
        "batch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 10 }\n"
    )
    assert validate(objects, ["1.31", "1.35"]) == []
