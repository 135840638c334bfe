"""Manifests carry everything the simulation used: the Deployment and HPA that ``scalelab
manifests`` writes, read back as a scenario (``deployment: {manifest: ...}``,
``hpa: {manifest: ...}``), give the same simulation inputs, and a manifest's own args survive
the trip as given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloud.cli import register
from cloud.errors import CloudError
from cloud.manifests import build_objects, to_yaml, validate
from cloud.settings import CloudSettings, with_model_path
from sim.engine import simulate
from sim.errors import ScenarioError
from sim.loader import build_scenario, load_scenario
from sim.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]
MODEL = "gs://bucket/resnet_101"
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
FLAG_FIELDS = (
    "request_timeout",
    "rest_api_num_threads",
    "intra_op_threads",
    "inter_op_threads",
    "batching",
)
"""serving.* fields that a Deployment carries as TF Serving flags; the rest (profile,
discipline, warmup, ...) describe the model and the simulator, not the manifest."""
EVERYTHING = [
    "deployment.lifecycle.preStop.sleep.seconds=30",
    "deployment.terminationGracePeriodSeconds=45",
    "deployment.nodeSelector={pool: serving}",
    "deployment.resources.limits={cpu: 3500m, memory: 6Gi}",
    "deployment.readinessProbe={httpGet: {path: /v1/models/image_classifier, port: 8501},"
    " periodSeconds: 2, timeoutSeconds: 3, successThreshold: 1, failureThreshold: 4}",
    "serving.request_timeout=12.5",
    "serving.rest_api_num_threads=16",
    "serving.intra_op_threads=2",
    "serving.inter_op_threads=3",
    "serving.batching={max_batch_size: 4, batch_timeout_micros: 500, num_batch_threads: 2}",
    "hpa.behavior={scaleDown: {stabilizationWindowSeconds: 60, policies: "
    "[{type: Pods, value: 1, periodSeconds: 30}]}}",
]
"""Every field ``scalelab manifests`` must carry, set away from its default."""


def read_back(scenario: Scenario, where: Path) -> Scenario:
    """``scalelab manifests --model-path MODEL`` for ``scenario`` into ``where``, read back as
    a scenario that takes its deployment, serving flags and HPA from that file."""
    where.mkdir(parents=True, exist_ok=True)
    objects = build_objects(scenario, CloudSettings(model_path=model_of(scenario)), run_id="rt")
    (where / "generated.yaml").write_text(to_yaml(objects))
    data = scenario.model_dump(mode="json", by_alias=True)
    # Start-up timings are the simulator's assumptions, not part of a Deployment.
    data["deployment"] = {"manifest": "generated.yaml", "startup": data["deployment"]["startup"]}
    data["hpa"] = {"manifest": "generated.yaml"} if scenario.hpa is not None else None
    data["serving"] = {k: v for k, v in data["serving"].items() if k not in FLAG_FIELDS}
    (where / "back.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return load_scenario(where / "back.yaml")


def inputs(scenario: Scenario) -> Scenario:
    """The scenario less the HPA's scaleTargetRef (a manifest names the Deployment there; the
    simulator scales the scenario's one Deployment either way)."""
    if scenario.hpa is None:
        return scenario
    return scenario.model_copy(
        update={"hpa": scenario.hpa.model_copy(update={"scaleTargetRef": None})}
    )


def without_model_path(scenario: Scenario) -> Scenario:
    """The scenario less ``--model_base_path`` in its args: the model path is a run setting
    (``--model-path``), not a simulation input; a read-back manifest carries the run's."""
    args = [a for a in scenario.deployment.args if not a.startswith("--model_base_path=")]
    deployment = scenario.deployment.model_copy(update={"args": args})
    return scenario.model_copy(update={"deployment": deployment})


def model_of(scenario: Scenario) -> str:
    """The scenario's own model path (a manifest's --model_base_path), else MODEL."""
    return with_model_path(CloudSettings(), scenario).model_path or MODEL


def assert_same_inputs(back: Scenario, scenario: Scenario) -> None:
    assert f"--model_base_path={model_of(scenario)}" in back.deployment.args
    back, scenario = without_model_path(back), without_model_path(scenario)
    # Field by field first, so a failure names what the manifests lost.
    assert back.deployment == scenario.deployment
    assert back.serving == scenario.serving
    assert inputs(back).hpa == inputs(scenario).hpa
    assert inputs(back) == inputs(scenario)
    if back.hpa is not None:
        assert back.hpa.scaleTargetRef is not None
        assert back.hpa.scaleTargetRef.name == scenario.deployment.name


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_scenario_reads_back_the_same(path: Path, tmp_path: Path) -> None:
    scenario = load_scenario(path)
    assert_same_inputs(read_back(scenario, tmp_path), scenario)


def test_every_carried_field_set_reads_back_the_same(tmp_path: Path) -> None:
    scenario = load_scenario(ROOT / "scenarios" / "gsp777.yaml", EVERYTHING)
    back = read_back(scenario, tmp_path)
    assert_same_inputs(back, scenario)
    assert back.serving.batching is not None and back.serving.batching.num_batch_threads == 2


# --- a manifest-based scenario ------------------------------------------------------------

LAB_STYLE = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: tfserving-configs}
data:
  MODEL_NAME: resnet
  MODEL_PATH: gs://my-bucket/resnet_101
  batching.txt: |
    # a BatchingParameters text proto
    max_batch_size { value: 8 }
    batch_timeout_micros { value: 2000 }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: resnet}
spec:
  replicas: 2
  selector: {matchLabels: {app: resnet}}
  template:
    metadata: {labels: {app: resnet}}
    spec:
      terminationGracePeriodSeconds: 40
      containers:
      - name: tf-serving
        image: tensorflow/serving:2.8.0
        args:
        - --model_name=$(MODEL_NAME)
        - --model_base_path=$(MODEL_PATH)
        - --tensorflow_intra_op_parallelism=$(INTRA)
        - --rest_api_num_threads=12
        - --file_system_poll_wait_seconds=0
        - --enable_batching
        - --batching_parameters_file=/config/batching.txt
        - --monitoring_config_file=/etc/$$(literal)
        env:
        - {name: INTRA, value: "2"}
        envFrom:
        - configMapRef: {name: tfserving-configs}
        volumeMounts:
        - {name: config, mountPath: /config/batching.txt, subPath: batching.txt}
        resources:
          requests: {cpu: "2", memory: 3Gi}
        readinessProbe:
          tcpSocket: {port: 8500}
          periodSeconds: 3
        lifecycle:
          preStop: {sleep: {seconds: 20}}
      volumes:
      - name: config
        configMap: {name: tfserving-configs}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: resnet}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: resnet}
  minReplicas: 2
  maxReplicas: 5
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}
"""


def manifest_scenario(tmp_path: Path, extra: str = "", manifest: str = LAB_STYLE) -> Path:
    (tmp_path / "app.yaml").write_text(manifest)
    (tmp_path / "s.yaml").write_text(
        "duration: 2m\ndeployment: {manifest: app.yaml}\nhpa: {manifest: app.yaml}\n" + extra
    )
    return tmp_path / "s.yaml"


def test_a_manifests_flags_become_the_scenarios_fields(tmp_path: Path) -> None:
    s = load_scenario(manifest_scenario(tmp_path))
    assert (s.deployment.name, s.deployment.model_name, s.deployment.replicas) == (
        "resnet",
        "resnet",
        2,
    )
    assert (s.serving.intra_op_threads, s.serving.inter_op_threads) == (2, None)
    assert s.serving.rest_api_num_threads == 12
    assert s.serving.request_timeout == 30.0  # not given: TF Serving's default, 30000 ms
    assert s.serving.batching is not None
    assert (s.serving.batching.max_batch_size, s.serving.batching.batch_timeout_micros) == (8, 2000)
    assert s.serving.batching.num_batch_threads is None  # unset: TF Serving's default
    # Everything else is kept, expanded as the kubelet would, with $$ still escaped.
    assert s.deployment.args == [
        "--model_base_path=gs://my-bucket/resnet_101",
        "--file_system_poll_wait_seconds=0",
        "--monitoring_config_file=/etc/$$(literal)",
    ]
    assert s.deployment.lifecycle is not None


def test_a_manifests_own_args_are_emitted_as_given(tmp_path: Path) -> None:
    s = load_scenario(manifest_scenario(tmp_path))
    objects = build_objects(s, CloudSettings(), run_id="r")
    cm, deployment = objects[1], objects[2]
    args = deployment.spec.template.spec.containers[0].args
    # The model path comes from the manifest (no --model-path given) through the ConfigMap.
    assert cm.data["MODEL_PATH"] == "gs://my-bucket/resnet_101"
    assert cm.data["MODEL_NAME"] == "resnet"
    assert args[-2:] == [
        "--file_system_poll_wait_seconds=0",
        "--monitoring_config_file=/etc/$$(literal)",
    ]
    assert "--tensorflow_intra_op_parallelism=2" in args and "--rest_api_num_threads=12" in args
    # One setting, one flag: nothing the scenario sets appears twice.
    names = [a.split("=", 1)[0] for a in args]
    assert len(names) == len(set(names)), args
    assert validate(objects, ["1.31", "1.35"]) == []


def test_a_manifest_based_scenario_reads_back_the_same_and_simulates_the_same(
    tmp_path: Path,
) -> None:
    scenario = load_scenario(manifest_scenario(tmp_path))
    back = read_back(scenario, tmp_path / "rt")
    assert_same_inputs(back, scenario)
    first, second = tmp_path / "a", tmp_path / "b"
    simulate(scenario).write(first)
    simulate(back).write(second)
    for name in ("trace.csv", "events.jsonl"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_the_lab_simulates_the_same_after_the_round_trip(tmp_path: Path) -> None:
    scenario = load_scenario(ROOT / "scenarios" / "gsp777.yaml", [*EVERYTHING, "duration=150s"])
    back = read_back(scenario, tmp_path / "rt")
    first, second = tmp_path / "a", tmp_path / "b"
    simulate(scenario).write(first)
    simulate(back).write(second)
    for name in ("trace.csv", "events.jsonl"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


# --- which wins, and what is refused -----------------------------------------------------


def test_the_scenario_wins_over_the_manifests_flags(tmp_path: Path) -> None:
    """As over a manifest's other fields: the scenario is an overlay, and the manifests
    written from it carry the winning value, once."""
    path = manifest_scenario(tmp_path, "serving: {intra_op_threads: 4, batching: null}\n")
    s = load_scenario(path, ["serving.rest_api_num_threads=32"])
    assert (s.serving.intra_op_threads, s.serving.rest_api_num_threads) == (4, 32)
    assert s.serving.batching is None
    args = build_objects(s, CloudSettings(), run_id="r")[2].spec.template.spec.containers[0].args
    assert [a for a in args if "intra_op" in a or "rest_api_num" in a or "batching" in a] == [
        "--rest_api_num_threads=32",
        "--tensorflow_intra_op_parallelism=4",
    ]


def test_a_field_flag_in_deployment_args_is_refused_naming_both(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as err:
        build_scenario(
            {"deployment": {"args": ["--port=8500", "--rest_api_num_threads=8"]}}, "s.yaml"
        )
    text = str(err.value)
    assert "deployment" in text and "args[1]" in text and "serving.rest_api_num_threads" in text


def test_a_model_path_conflict_is_refused_naming_both(tmp_path: Path) -> None:
    s = load_scenario(manifest_scenario(tmp_path))
    with pytest.raises(CloudError, match=r"gs://my-bucket/resnet_101.*gs://other/m"):
        build_objects(s, CloudSettings(model_path="gs://other/m"), run_id="r")
    same = build_objects(s, CloudSettings(model_path="gs://my-bucket/resnet_101"), run_id="r")
    assert same[1].data["MODEL_PATH"] == "gs://my-bucket/resnet_101"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("--rest_api_num_threads=12", "--rest_api_num_threads=many"),
        ("--enable_batching\n", "--enable_batching=yes\n"),
        ("        - --enable_batching\n", ""),
        ("subPath: batching.txt", "subPath: other.txt"),
        ("max_batch_size { value: 8 }", "allowed_batch_sizes: 4"),
        ("--file_system_poll_wait_seconds=0", "--model_config_file=/m.config"),
        ("--file_system_poll_wait_seconds=0", "--tensorflow_session_parallelism=2"),
        ("configMapRef: {name: tfserving-configs}", "configMapRef: {name: elsewhere}"),
    ],
    ids=[
        "not-an-int",
        "bad-bool",
        "file-without-enable",
        "file-not-mounted",
        "unsimulated-field",
        "model-config-file",
        "session-and-intra",
        "configmap-elsewhere",
    ],
)
def test_a_manifest_scalelab_cannot_read_is_exit_2_naming_it(
    tmp_path: Path, change: str, message: str
) -> None:
    assert change in LAB_STYLE
    path = manifest_scenario(tmp_path, manifest=LAB_STYLE.replace(change, message))
    app = typer.Typer()
    register(app)
    done = CliRunner().invoke(app, ["manifests", str(path)])
    assert done.exit_code == 2, done.output
    assert "Traceback" not in done.output and "app.yaml" in done.output
    assert done.stdout == ""  # nothing half-written


def test_the_scenario_can_stand_in_for_what_the_manifest_cannot_say(tmp_path: Path) -> None:
    """The lab's layout (the ConfigMap in another file) reads when the scenario gives the
    fields that ConfigMap fed; without them it is an error naming the variable's source."""
    (tmp_path / "app.yaml").write_text(LAB_STYLE.split("---\n", 1)[1])
    (tmp_path / "s.yaml").write_text(
        "deployment: {manifest: app.yaml}\nserving: {batching: {max_batch_size: 8}}\n"
    )
    with pytest.raises(ScenarioError, match=r"\$\(MODEL_NAME\).*ConfigMap tfserving-configs"):
        load_scenario(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text(
        "deployment: {manifest: app.yaml, model_name: resnet}\n"
        "serving: {batching: {max_batch_size: 8}}\n"
    )
    s = load_scenario(tmp_path / "s.yaml")
    assert s.deployment.model_name == "resnet" and s.serving.intra_op_threads == 2
    assert s.serving.batching is not None and s.serving.batching.max_batch_size == 8
    # $(MODEL_PATH) is left for scalelab's own ConfigMap, which defines it: the run's path.
    cm = build_objects(s, CloudSettings(model_path="gs://b/m"), run_id="r")[1]
    assert cm.data["MODEL_PATH"] == "gs://b/m"


def test_a_port_the_service_does_not_use_is_refused(tmp_path: Path) -> None:
    s = build_scenario({"deployment": {"args": ["--rest_api_port=9000"]}}, "s.yaml")
    with pytest.raises(CloudError, match="rest_api_port=8501"):
        build_objects(s, CloudSettings(), run_id="r")


def test_a_shell_command_is_refused(tmp_path: Path) -> None:
    manifest = LAB_STYLE.replace(
        "        args:\n",
        '        command: ["/bin/sh", "-c", "tensorflow_model_server"]\n        args:\n',
    )
    with pytest.raises(ScenarioError, match="runs a shell"):
        load_scenario(manifest_scenario(tmp_path, manifest=manifest))


# --- property: any flag settings survive the trip -----------------------------------------

KEPT = st.lists(
    st.sampled_from(
        [
            "--file_system_poll_wait_seconds=0",
            "--enable_model_warmup=false",
            "--num_load_threads=2",
            "--grpc_max_threads=8",
            "--saved_model_tags=serve",
        ]
    ),
    unique=True,
    max_size=3,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    timeout_ms=st.integers(1, 120_000),
    rest=st.none() | st.integers(1, 64),
    intra=st.none() | st.integers(1, 16),
    inter=st.none() | st.integers(1, 16),
    batching=st.none()
    | st.fixed_dictionaries(
        {"max_batch_size": st.integers(1, 64)},
        optional={
            "batch_timeout_micros": st.integers(0, 10_000),
            "num_batch_threads": st.integers(1, 8),
            "max_enqueued_batches": st.integers(1, 100),
        },
    ),
    kept=KEPT,
)
def test_any_serving_flags_and_kept_args_read_back_the_same(
    tmp_path_factory: pytest.TempPathFactory,
    timeout_ms: int,
    rest: int | None,
    intra: int | None,
    inter: int | None,
    batching: dict[str, Any] | None,
    kept: list[str],
) -> None:
    serving = {
        "request_timeout": timeout_ms / 1000,
        "rest_api_num_threads": rest,
        "intra_op_threads": intra,
        "inter_op_threads": inter,
        "batching": batching,
    }
    scenario = build_scenario(
        {"duration": 60, "serving": serving, "deployment": {"args": kept}}, "property"
    )
    back = read_back(scenario, tmp_path_factory.mktemp("rt"))
    assert_same_inputs(back, scenario)
