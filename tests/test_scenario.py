"""Scenario files: the shipped ones validate, overrides work, bad input gets a precise error."""

from pathlib import Path

import pytest
import yaml

from sim.errors import ScenarioError
from sim.lint import bare_durations
from sim.loader import build_scenario, dump_scenario, load_scenario, parse_path, scenario_sha256

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_shipped_scenarios_validate_and_round_trip(path: Path, tmp_path: Path) -> None:
    scenario = load_scenario(path)
    copy = tmp_path / "copy.yaml"
    dump_scenario(scenario, copy)
    assert scenario_sha256(load_scenario(copy)) == scenario_sha256(scenario)
    # every duration written with its unit: a replay reads back without a note about one
    assert bare_durations(scenario, yaml.safe_load(copy.read_text())) == []


def test_gsp777_is_the_lab() -> None:
    s = load_scenario(ROOT / "scenarios" / "gsp777.yaml")
    pool = s.cluster.pools[0]
    assert (pool.machine_type, pool.min_nodes, pool.max_nodes, pool.start_nodes) == (
        "n1-standard-4",
        1,
        3,
        1,
    )
    assert s.deployment.image == "tensorflow/serving:2.8.0"
    assert s.deployment.resources.requests.cpu == 3000
    assert s.deployment.resources.requests.memory == 4 * 2**30
    assert s.deployment.resources.limits.cpu is None
    probe = s.deployment.readinessProbe
    assert probe is not None and probe.tcpSocket is not None and probe.tcpSocket.port == 8500
    assert (probe.initialDelaySeconds, probe.periodSeconds) == (10, 5)
    assert s.hpa is not None and (s.hpa.minReplicas, s.hpa.maxReplicas) == (1, 4)
    assert s.duration == 1800 and s.start == "warm"
    shape = s.load.shape  # type: ignore[union-attr]
    ticks = [shape.tick(t) for t in (0, 59, 60, 600, 659, 660, 661)]
    assert ticks[:5] == [(2, 1.0), (2, 1.0), (4, 1.0), (22, 1.0), (22, 1.0)]
    assert ticks[5] is None and ticks[6] is None  # 11 steps, stop at 660 s


def test_set_overrides_by_dotted_path() -> None:
    s = load_scenario(
        ROOT / "scenarios" / "gsp777.yaml",
        [
            "hpa.maxReplicas=6",
            "cluster.node_pool.machine_type=e2-standard-4",
            "duration=45m",
            "hpa.metrics[0].resource.target.averageUtilization=40",
        ],
    )
    assert s.hpa is not None and s.hpa.maxReplicas == 6
    assert s.cluster.pools[0].machine_type == "e2-standard-4"
    assert s.duration == 2700


@pytest.mark.parametrize(
    ("override", "field", "words"),
    [
        ("hpa.maxReplica=6", "hpa.maxReplica", "unknown field"),
        ("duration=soon", "duration", "duration"),
        ("cluster.node_pool.machine_type=n9-huge", "machine_type", "n1-standard-4"),
        ("cluster.node_pool.max_nodes=0", "max_nodes", "greater than or equal to 1"),
        ("deployment.resources.requests.cpu=lots", "cpu", "quantity"),
        ("hpa.metrics[3].type=Pods", "hpa.metrics[3]", "out of range"),
        ("nonsense", "nonsense", "dotted.path=value"),
    ],
)
def test_bad_overrides_name_field_and_fix(override: str, field: str, words: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(ROOT / "scenarios" / "gsp777.yaml", [override])
    text = str(caught.value)
    assert "gsp777.yaml" in text and field in text and words in text


def test_unknown_top_level_field_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("duraton: 5m\n")
    with pytest.raises(ScenarioError, match="duraton: unknown field"):
        load_scenario(path)


def test_deployment_and_hpa_from_real_manifests(tmp_path: Path) -> None:
    (tmp_path / "deployment.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "resnet"},
                "spec": {
                    "replicas": 2,
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "tf-serving",
                                    "image": "tensorflow/serving:2.8.0",
                                    "args": ["--model_name=resnet", "--model_base_path=/models"],
                                    "resources": {"requests": {"cpu": "2", "memory": "3Gi"}},
                                    "readinessProbe": {
                                        "tcpSocket": {"port": 8500},
                                        "periodSeconds": 3,
                                    },
                                }
                            ]
                        }
                    },
                },
            }
        )
    )
    (tmp_path / "hpa.yaml").write_text(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: resnet}\n"
        "spec:\n  minReplicas: 2\n  maxReplicas: 5\n  metrics:\n  - type: Resource\n"
        "    resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}\n"
    )
    (tmp_path / "s.yaml").write_text(
        "deployment: {manifest: deployment.yaml}\nhpa: {manifest: hpa.yaml}\n"
    )
    s = load_scenario(tmp_path / "s.yaml")
    assert (s.deployment.name, s.deployment.replicas, s.deployment.model_name) == (
        "resnet",
        2,
        "resnet",
    )
    assert s.deployment.resources.requests.cpu == 2000
    assert s.hpa is not None and (s.hpa.minReplicas, s.hpa.maxReplicas) == (2, 5)


def test_missing_manifest_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("deployment: {manifest: nowhere.yaml}\n")
    with pytest.raises(ScenarioError, match="cannot read manifest"):
        load_scenario(tmp_path / "s.yaml")


@pytest.mark.parametrize("bad", ["hpa..x", "[0].a", "a[x]", ""])
def test_malformed_paths(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_path(bad)


def test_defaults_are_the_lab_deployment() -> None:
    s = build_scenario({}, "<empty>")
    assert s.deployment.resources.requests.cpu == 3000
    assert s.deployment.resources.requests.memory == 4 * 2**30
    assert s.cluster.pools[0].machine_type == "n1-standard-4"
    assert s.cluster.system_cpu_usage == 150
    assert s.deployment.startup.model_load_cpu == 1000


def test_an_explicit_null_survives_the_round_trip(tmp_path: Path) -> None:
    s = build_scenario({"deployment": {"readinessProbe": None}}, "<no probe>")
    dump_scenario(s, tmp_path / "s.yaml")
    assert load_scenario(tmp_path / "s.yaml").deployment.readinessProbe is None
