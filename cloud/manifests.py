"""The lab's Kubernetes objects for a scenario, as kubernetes client models.

GSP777's manifests (tf-serving/configmap.yaml, deployment.yaml, service.yaml and
``kubectl autoscale``) with the scenario's values: image, model name, resources, readiness
probe, node selector, replicas, the autoscaling/v2 HPA spec as written. Every object carries
``app.kubernetes.io/managed-by: scalelab`` and ``scalelab.dev/run-id`` so that teardown and
``scalelab cloud cleanup`` find them by label. ``scalelab manifests`` prints the same objects
as YAML for ``kubectl apply -f -``.

Objects are built from the real ``kubernetes.client`` model classes, so a misspelt field is a
TypeError here, and checked against the Kubernetes OpenAPI schemas (kubernetes-validate) for
every minor version the scenario allows (:func:`allowed_versions`).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from cloud.errors import CloudError, MissingDependencyError
from cloud.plan import CONFIGMAP_NAME, GRPC_PORT, REST_PORT
from cloud.settings import (
    DEFAULT_MODEL_PATH,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    RUN_ID_LABEL,
    CloudSettings,
    with_model_path,
)
from sim import tfserving_flags
from sim.scenario import Probe, Scenario

try:
    from kubernetes import client as k8s
except ImportError as _err:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("kubernetes") from _err

CONTAINER_NAME = "tf-serving"
"""The lab's container name."""
CONFIG_MOUNT = "/etc/scalelab"

GKE_MINOR_VERSIONS: tuple[str, ...] = ("1.31", "1.32", "1.33", "1.34", "1.35")
"""GKE minor versions in the release channels when this was written (assumed, from GKE's
release notes); the manifests are validated against each one the scenario allows."""

FEATURE_MIN_VERSION: dict[str, str] = {
    # KEP-4951 HPAConfigurableTolerance: alpha in 1.33, on by default (beta) from 1.35.
    "behavior.*.tolerance": "1.35",
    # KEP-1610 HPAContainerMetrics: GA in 1.30.
    "metrics[].containerResource": "1.30",
}
"""The first minor version whose API server keeps each optional HPA field the scenario uses."""


def _minor(version: str) -> tuple[int, int]:
    match = re.match(r"v?(\d+)\.(\d+)", version)
    if not match:
        raise ValueError(f"not a Kubernetes version: {version!r} (expected e.g. 1.33 or v1.33.2)")
    return int(match.group(1)), int(match.group(2))


def at_least(version: str, floor: str) -> bool:
    """``version`` (``1.33``, ``v1.33.2``, ``1.33+``) is ``floor``'s minor or newer."""
    return _minor(version) >= _minor(floor)


def minimum_version(scenario: Scenario) -> tuple[str, list[str]]:
    """The oldest minor version that serves every field the scenario uses, and why."""
    needs: list[str] = []
    hpa = scenario.hpa
    if hpa is not None:
        rules = [hpa.behavior.scaleUp, hpa.behavior.scaleDown] if hpa.behavior else []
        if any(r is not None and r.tolerance is not None for r in rules):
            needs.append("behavior.*.tolerance")
        if any(m.containerResource is not None for m in hpa.metrics or []):
            needs.append("metrics[].containerResource")
    versions = [FEATURE_MIN_VERSION[n] for n in needs]
    floor = max(versions, key=_minor) if versions else GKE_MINOR_VERSIONS[0]
    return floor, needs


def allowed_versions(scenario: Scenario, pinned: str | None = None) -> list[str]:
    """The GKE minor versions that can run the scenario (only ``pinned``'s minor if given)."""
    floor, _ = minimum_version(scenario)
    found = [v for v in GKE_MINOR_VERSIONS if _minor(v) >= _minor(floor)]
    if pinned is not None:
        found = [v for v in found if _minor(v) == _minor(pinned)]
    return found


# --- quantities ---------------------------------------------------------------------------


def cpu_quantity(millis: int) -> str:
    """``3000`` -> ``"3"``, ``500`` -> ``"500m"`` (apimachinery's canonical forms)."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def memory_quantity(value: int) -> str:
    """Bytes as the largest exact binary suffix: ``4 * 2**30`` -> ``"4Gi"``."""
    for suffix, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if value % size == 0 and value >= size:
            return f"{value // size}{suffix}"
    return str(value)


# --- generic: camelCase API dict -> client model -------------------------------------------

_SCALARS = {"str", "int", "float", "bool", "object", "datetime", "date"}


def from_api_dict(type_name: str, data: Any) -> Any:
    """Build a ``kubernetes.client`` model from an API-shaped (camelCase) dict.

    Walks the generated ``openapi_types``/``attribute_map`` of each model; unknown keys raise
    ValueError, as a strict API server would.
    """
    if data is None:
        return None
    for prefix in ("list[", "List["):
        if type_name.startswith(prefix):
            return [from_api_dict(type_name[len(prefix) : -1], item) for item in data]
    if type_name.startswith(("dict(", "Dict[")):
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        return {key: from_api_dict(inner, value) for key, value in data.items()}
    if type_name in _SCALARS:
        if type_name == "str" and isinstance(data, int | float) and not isinstance(data, bool):
            return str(data)
        return data
    cls = getattr(k8s, type_name)
    by_key = {key: attr for attr, key in cls.attribute_map.items()}
    unknown = sorted(set(data) - set(by_key))
    if unknown:
        raise ValueError(f"{type_name} has no field(s) {unknown}; known: {sorted(by_key)}")
    kwargs = {
        by_key[key]: from_api_dict(cls.openapi_types[by_key[key]], v) for key, v in data.items()
    }
    return cls(**kwargs)


# --- the objects --------------------------------------------------------------------------


def object_labels(
    run_id: str, app: str | None = None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    labels = {MANAGED_BY_LABEL: MANAGED_BY, RUN_ID_LABEL: run_id, **(extra or {})}
    if app is not None:
        labels["app"] = app
    return labels


def _meta(name: str, namespace: str | None, labels: dict[str, str]) -> Any:
    return k8s.V1ObjectMeta(name=name, namespace=namespace, labels=dict(labels))


def probe(spec: Probe) -> Any:
    """The scenario's readiness probe as a V1Probe (tcpSocket or httpGet)."""
    return k8s.V1Probe(
        tcp_socket=k8s.V1TCPSocketAction(port=spec.tcpSocket.port) if spec.tcpSocket else None,
        http_get=(
            k8s.V1HTTPGetAction(path=spec.httpGet.path, port=spec.httpGet.port)
            if spec.httpGet
            else None
        ),
        initial_delay_seconds=spec.initialDelaySeconds,
        period_seconds=spec.periodSeconds,
        timeout_seconds=spec.timeoutSeconds,
        success_threshold=spec.successThreshold,
        failure_threshold=spec.failureThreshold,
    )


def batching_text(scenario: Scenario) -> str | None:
    """The ``--batching_parameters_file`` text proto (BatchingParameters, wrapper-typed fields:
    tensorflow_serving/servables/tensorflow/session_bundle_config.proto) for the scenario's
    ``serving.batching``; None without batching. A field the scenario leaves unset
    (num_batch_threads) is left out, so TF Serving's default applies as simulated."""
    batching = scenario.serving.batching
    return None if batching is None else tfserving_flags.batching_text(batching.model_dump())


def serving_flags(scenario: Scenario) -> list[str]:
    """The TF Serving flags the scenario's serving settings stand for (main.cc's flags)."""
    serving = scenario.serving
    return tfserving_flags.serving_args(
        serving.request_timeout,
        serving.rest_api_num_threads,
        serving.intra_op_threads,
        serving.inter_op_threads,
    )


SCALELAB_ENV = ("MODEL_NAME", "MODEL_PATH")
"""The variables scalelab's ConfigMap gives the container (``$(VAR)`` in its args)."""
FIXED_FLAGS = {"port": GRPC_PORT, "rest_api_port": REST_PORT}
"""Ports the Service, the readiness probe's default and the load generator use."""


def kept_args(scenario: Scenario) -> list[str]:
    """The deployment's own args to emit after scalelab's flags: as given, less a
    ``--model_base_path`` (scalelab writes it: :func:`cloud.settings.with_model_path`).
    Refused: another gRPC or REST port (the Service and the load use 8500/8501) and a
    ``$(VAR)`` that scalelab's Deployment does not define (Kubernetes would pass it on
    unexpanded)."""
    dep = scenario.deployment
    kept: list[str] = []
    for index, item in enumerate(dep.args):
        parsed = tfserving_flags.flag_name(item)
        name, value = parsed if parsed is not None else (None, None)
        if name == "model_base_path":
            continue
        if name in FIXED_FLAGS and value != str(FIXED_FLAGS[name]):
            raise CloudError(
                f"deployment.args[{index}] {item!r}: scalelab's Service, readiness probe and "
                f"load use --{name}={FIXED_FLAGS[name]}"
            )
        kept.append(item)
    defined = dict.fromkeys(SCALELAB_ENV, "")
    for item in [*(dep.command or []), *kept]:
        _, unresolved = tfserving_flags.expand(item, defined)
        if unresolved:
            raise CloudError(
                f"deployment.command/args item {item!r} refers to $({sorted(unresolved)[0]}), "
                "which scalelab's Deployment does not define (it defines "
                f"{', '.join(SCALELAB_ENV)}); write the value"
            )
    return kept


def lifecycle(scenario: Scenario) -> Any:
    """The container's preStop sleep hook (KEP-3960, PodLifecycleSleepAction: on by default
    from 1.30), or None."""
    hook = scenario.deployment.lifecycle
    if hook is None or hook.preStop is None or hook.preStop.sleep is None:
        return None
    return k8s.V1Lifecycle(
        pre_stop=k8s.V1LifecycleHandler(sleep=k8s.V1SleepAction(seconds=hook.preStop.sleep.seconds))
    )


def build_objects(
    scenario: Scenario,
    settings: CloudSettings,
    *,
    run_id: str,
    no_lb: bool = False,
) -> list[Any]:
    """Namespace, ConfigMap, Deployment, Service and (if the scenario has one) the HPA."""
    ns = settings.namespace
    dep = scenario.deployment
    labels = object_labels(run_id, extra=settings.extra_labels)
    app_labels = object_labels(run_id, dep.name, settings.extra_labels)
    batching = batching_text(scenario)

    data = {
        "MODEL_NAME": dep.model_name,
        "MODEL_PATH": with_model_path(settings, scenario).model_path or DEFAULT_MODEL_PATH,
    }
    # The image's entrypoint puts its own --port, --rest_api_port, --model_name and
    # --model_base_path first (tensorflow_serving/tools/docker/Dockerfile); these come after
    # and, TF Serving keeping a flag's last value, win. Scenario fields are written once here;
    # the deployment's own args (a manifest's, as given) follow, with no flag a field stands
    # for (Deployment refuses those).
    args = ["--model_name=$(MODEL_NAME)", "--model_base_path=$(MODEL_PATH)"]
    args += serving_flags(scenario)
    mounts, volumes = None, None
    if batching is not None:
        data["batching.config"] = batching
        args += ["--enable_batching", f"--batching_parameters_file={CONFIG_MOUNT}/batching.config"]
        mounts = [k8s.V1VolumeMount(name="config", mount_path=CONFIG_MOUNT, read_only=True)]
        volumes = [
            k8s.V1Volume(name="config", config_map=k8s.V1ConfigMapVolumeSource(name=CONFIGMAP_NAME))
        ]
    args += kept_args(scenario)

    requests = {"cpu": cpu_quantity(dep.resources.requests.cpu or 0)}
    if dep.resources.requests.memory is not None:
        requests["memory"] = memory_quantity(dep.resources.requests.memory)
    limits: dict[str, str] = {}
    if dep.resources.limits.cpu is not None:
        limits["cpu"] = cpu_quantity(dep.resources.limits.cpu)
    if dep.resources.limits.memory is not None:
        limits["memory"] = memory_quantity(dep.resources.limits.memory)

    container = k8s.V1Container(
        name=CONTAINER_NAME,
        image=dep.image,
        image_pull_policy="IfNotPresent",
        command=list(dep.command) if dep.command is not None else None,
        args=args,
        env_from=[
            k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name=CONFIGMAP_NAME))
        ],
        ports=[
            k8s.V1ContainerPort(name="http", container_port=REST_PORT, protocol="TCP"),
            k8s.V1ContainerPort(name="grpc", container_port=GRPC_PORT, protocol="TCP"),
        ],
        resources=k8s.V1ResourceRequirements(requests=requests, limits=limits or None),
        readiness_probe=probe(dep.readinessProbe) if dep.readinessProbe else None,
        lifecycle=lifecycle(scenario),
        volume_mounts=mounts,
    )
    deployment = k8s.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=_meta(dep.name, ns, app_labels),
        spec=k8s.V1DeploymentSpec(
            replicas=dep.replicas,
            selector=k8s.V1LabelSelector(match_labels={"app": dep.name}),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=app_labels),
                spec=k8s.V1PodSpec(
                    containers=[container],
                    node_selector=dict(dep.nodeSelector) or None,
                    termination_grace_period_seconds=dep.terminationGracePeriodSeconds,
                    volumes=volumes,
                ),
            ),
        ),
    )
    service = k8s.V1Service(
        api_version="v1",
        kind="Service",
        metadata=_meta(dep.name, ns, app_labels),
        spec=k8s.V1ServiceSpec(
            type="ClusterIP" if no_lb else "LoadBalancer",
            selector={"app": dep.name},
            ports=[
                k8s.V1ServicePort(name="tf-serving-grpc", port=GRPC_PORT, protocol="TCP"),
                k8s.V1ServicePort(name="tf-serving-http", port=REST_PORT, protocol="TCP"),
            ],
        ),
    )
    objects: list[Any] = [
        k8s.V1Namespace(api_version="v1", kind="Namespace", metadata=_meta(ns, None, labels)),
        k8s.V1ConfigMap(
            api_version="v1",
            kind="ConfigMap",
            metadata=_meta(CONFIGMAP_NAME, ns, labels),
            data=data,
        ),
        deployment,
        service,
    ]
    if scenario.hpa is not None:
        spec = scenario.hpa.model_dump(mode="json", exclude_none=True)
        spec["scaleTargetRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep.name}
        objects.append(
            k8s.V2HorizontalPodAutoscaler(
                api_version="autoscaling/v2",
                kind="HorizontalPodAutoscaler",
                metadata=_meta(dep.name, ns, app_labels),
                spec=from_api_dict("V2HorizontalPodAutoscalerSpec", spec),
            )
        )
    return objects


def to_api_dicts(objects: list[Any]) -> list[dict[str, Any]]:
    """What the client sends: camelCase JSON-ready dicts without None fields."""
    api = k8s.ApiClient()
    return [api.sanitize_for_serialization(obj) for obj in objects]


def to_yaml(objects: list[Any]) -> str:
    """A multi-document YAML stream for ``kubectl apply -f -``."""
    return yaml.safe_dump_all(to_api_dicts(objects), sort_keys=False)


def schema_version(version: str) -> str:
    """``version``, or the newest one kubernetes-validate bundles schemas for if it is newer
    (a cluster upgraded past this install's schemas is checked against the newest known)."""
    import kubernetes_validate

    newest = kubernetes_validate.latest_version()
    return (
        newest if _minor(version) > _minor(newest) else f"{_minor(version)[0]}.{_minor(version)[1]}"
    )


def validate(objects: list[Any], versions: list[str], *, strict: bool = True) -> list[str]:
    """Check every object against each version's OpenAPI schema; returns the problems.

    Uses kubernetes-validate's bundled schemas (strict: unknown fields are errors). A version
    newer than the bundled schemas is reported rather than silently skipped.
    """
    try:
        import kubernetes_validate
    except ImportError as err:  # pragma: no cover
        raise MissingDependencyError("kubernetes-validate") from err
    problems: list[str] = []
    for version in versions:
        for data in to_api_dicts(objects):
            what = f"{data['kind']}/{data['metadata']['name']} on {version}"
            try:
                kubernetes_validate.validate(data, version, strict)
            except kubernetes_validate.ValidationError as err:
                path = ".".join(str(p) for p in err.path)
                problems.append(f"{what}: {path}: {err.message}")
            except (
                kubernetes_validate.SchemaNotFoundError,
                kubernetes_validate.utils.VersionNotSupportedError,
            ) as err:
                problems.append(f"{what}: {err.message}")
    return problems
