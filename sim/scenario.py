"""The scenario schema: one typed, validated tree, with no side effects.

Where Kubernetes has a shape, the scenario uses it: ``hpa`` is an autoscaling/v2
HorizontalPodAutoscaler ``spec``, and the deployment takes container ``resources`` and a
``readinessProbe`` as a Deployment does (or a ``manifest:`` path to a real Deployment).
Every assumption the simulator makes is a named field here, with its default and source.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sim.container_manifest import (
    Container,
    deployment_fields,
    read_container,
    serving_from_container,
)
from sim.hpa import HorizontalPodAutoscalerSpec
from sim.replay import RATE_NAMES, USER_NAMES, Series, read_series
from sim.tfserving_flags import FIELD_FLAGS, REFUSED_FLAGS, field_flag_in
from sim.units import cpu_millis, memory_bytes, parse_duration


def _nonneg_duration(value: Any) -> float:
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_nonneg_duration)]
"""Seconds, written as ``90s``, ``15m``, ``1h`` or a bare number of seconds."""
MilliCPU = Annotated[
    int, BeforeValidator(cpu_millis), PlainSerializer(lambda v: f"{v}m", return_type=str)
]
"""Millicores, written as ``3`` or ``500m``."""
Bytes = Annotated[int, BeforeValidator(memory_bytes)]
"""Bytes, written as ``4Gi`` or ``512M``."""


class Strict(BaseModel):
    """Unknown fields are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


# --- cluster ------------------------------------------------------------------------------


class ProvisioningDelay(Strict):
    """Scale-up request to node Ready, uniform in [min, max].

    Default 50-80 s: observed on a 2026 GKE run; the CA FAQ's older figure is 3-4 min.
    """

    min: Duration = 50.0
    max: Duration = 80.0

    @model_validator(mode="after")
    def _ordered(self) -> ProvisioningDelay:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}s) must be >= min ({self.min}s)")
        return self


class NodePool(Strict):
    """A GKE node pool with cluster autoscaling (``--enable-autoscaling --min/max-nodes``)."""

    name: str = "default-pool"
    machine_type: str = "n1-standard-4"
    min_nodes: int = Field(1, ge=0)
    max_nodes: int = Field(3, ge=1)
    initial_nodes: int | None = Field(None, ge=0, description="--num-nodes; default min_nodes")
    labels: dict[str, str] = Field(default_factory=dict)
    provisioning_delay: ProvisioningDelay = ProvisioningDelay()

    @field_validator("machine_type")
    @classmethod
    def _known_machine(cls, value: str) -> str:
        from sim.cluster.catalog import machine_type

        machine_type(value)  # raises with the list of known types
        return value

    @model_validator(mode="after")
    def _bounds(self) -> NodePool:
        if self.max_nodes < self.min_nodes:
            raise ValueError(
                f"max_nodes ({self.max_nodes}) must be >= min_nodes ({self.min_nodes})"
            )
        start = self.start_nodes
        if not self.min_nodes <= start <= self.max_nodes:
            raise ValueError(
                f"initial_nodes ({start}) must lie in [min_nodes, max_nodes] = "
                f"[{self.min_nodes}, {self.max_nodes}]"
            )
        return self

    @property
    def start_nodes(self) -> int:
        return self.min_nodes if self.initial_nodes is None else self.initial_nodes


class ClusterAutoscaler(Strict):
    """cluster-autoscaler flags; defaults from the upstream FAQ."""

    enabled: bool = True
    profile: Literal["balanced", "optimize-utilization"] = "balanced"
    scan_interval: Duration = 10.0
    scale_down_unneeded_time: Duration = 600.0
    scale_down_delay_after_add: Duration = 600.0
    scale_down_utilization_threshold: float = Field(0.5, gt=0, le=1)
    max_node_provision_time: Duration = 900.0
    expander: Literal["random", "least-waste", "most-pods", "price"] = "random"


class Cluster(Strict):
    node_pool: NodePool | None = None
    node_pools: list[NodePool] | None = None
    autoscaler: ClusterAutoscaler = ClusterAutoscaler()
    scheduler_scoring: Literal["LeastAllocated", "MostAllocated"] | None = Field(
        None, description="default: MostAllocated under optimize-utilization, else LeastAllocated"
    )
    management_fee: bool = Field(True, description="GKE cluster fee, $0.10/h")
    system_cpu_usage: MilliCPU = Field(
        150, description="CPU that system pods actually burn per node (assumption: ~0.15 CPU)"
    )

    @model_validator(mode="after")
    def _one_way_to_say_pools(self) -> Cluster:
        if self.node_pool is not None and self.node_pools is not None:
            raise ValueError("give either node_pool or node_pools, not both")
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"node pool names must be unique, got {names}")
        return self

    @property
    def pools(self) -> list[NodePool]:
        if self.node_pools is not None:
            return list(self.node_pools)
        return [self.node_pool or NodePool()]

    @property
    def scoring(self) -> str:
        if self.scheduler_scoring is not None:
            return self.scheduler_scoring
        if self.autoscaler.profile == "optimize-utilization":
            return "MostAllocated"
        return "LeastAllocated"


# --- deployment ---------------------------------------------------------------------------


class ResourceList(Strict):
    cpu: MilliCPU | None = None
    memory: Bytes | None = None


class Resources(Strict):
    requests: ResourceList = ResourceList()
    limits: ResourceList = ResourceList()

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> Resources:
        # The API server rejects a limit below its request (ValidateResourceRequirements).
        for name in ("cpu", "memory"):
            request, limit = getattr(self.requests, name), getattr(self.limits, name)
            if request is not None and limit is not None and limit < request:
                raise ValueError(f"limits.{name} must be greater than or equal to requests.{name}")
        return self


class TCPSocketAction(Strict):
    port: int | str


class HTTPGetAction(Strict):
    path: str = "/"
    port: int | str


class Probe(Strict):
    """A Kubernetes readiness probe; only whether the port answers matters to the simulator."""

    tcpSocket: TCPSocketAction | None = None
    httpGet: HTTPGetAction | None = None
    initialDelaySeconds: int = Field(0, ge=0)
    periodSeconds: int = Field(10, ge=1)
    timeoutSeconds: int = Field(1, ge=1)
    successThreshold: int = Field(1, ge=1)
    failureThreshold: int = Field(3, ge=1)


class SleepAction(Strict):
    seconds: int = Field(ge=0)


class LifecycleHandler(Strict):
    """A container lifecycle hook; the simulator models the ``sleep`` action (KEP-3960)."""

    sleep: SleepAction | None = None


class Lifecycle(Strict):
    preStop: LifecycleHandler | None = None


class Startup(Strict):
    """Pod start-up timings: assumptions tuned to a GKE run (created->Available ~21 s)."""

    image_pull: Duration = Field(25.0, description="tensorflow/serving pull on a node without it")
    container_create: Duration = Field(5.0, description="sandbox + container start, image cached")
    server_start: Duration = Field(4.0, description="TF Serving process start before model load")
    model_load: Duration = Field(8.0, description="SavedModel load (observed ~8 s)")
    model_load_cpu: MilliCPU = Field(1000, description="CPU burnt while loading the model")
    endpoint_propagation: Duration = Field(1.0, description="Ready -> endpoint in kube-proxy")


class Deployment(Strict):
    """The TF Serving Deployment (lab: image-classifier, tensorflow/serving:2.8.0)."""

    name: str = "image-classifier"
    replicas: int = Field(1, ge=0)
    image: str = "tensorflow/serving:2.8.0"
    model_name: str = "image_classifier"
    resources: Resources = Resources(requests=ResourceList(cpu="3", memory="4Gi"))
    readinessProbe: Probe | None = Probe(
        tcpSocket=TCPSocketAction(port=8500),
        initialDelaySeconds=10,
        periodSeconds=5,
        failureThreshold=10,
    )
    nodeSelector: dict[str, str] = Field(default_factory=dict)
    terminationGracePeriodSeconds: int = Field(30, ge=0)
    lifecycle: Lifecycle | None = Field(
        None, description="e.g. preStop: {sleep: {seconds: 30}} to drain before SIGTERM"
    )
    startup: Startup = Startup()
    command: list[str] | None = Field(
        None, description="the container's command, as given in a manifest [default: the image's]"
    )
    args: list[str] = Field(
        default_factory=list,
        description="TF Serving args emitted as given after the flags scalelab writes for the "
        "scenario's fields (a manifest's own args; a flag that a field stands for is refused)",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_manifest(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or "manifest" not in data:
            return data
        rest = {k: v for k, v in data.items() if k != "manifest"}
        base = Path((info.context or {}).get("base_dir", "."))
        return {**deployment_from_manifest(base / str(data["manifest"]), rest), **rest}

    @model_validator(mode="after")
    def _one_place_per_flag(self) -> Deployment:
        # A flag and the field it stands for must not disagree: the field is the one place.
        for part, items in (("command", self.command or []), ("args", self.args)):
            found = field_flag_in(items)
            if found is not None:
                index, flag = found
                raise ValueError(
                    f"{part}[{index}] {items[index]!r} sets what "
                    f"{FIELD_FLAGS.get(flag, 'no scenario field')} says; set it there "
                    f"({REFUSED_FLAGS.get(flag, 'scalelab writes the flag')})"
                )
        return self

    @model_validator(mode="after")
    def _needs_cpu_request(self) -> Deployment:
        if self.resources.requests.cpu is None or self.resources.requests.cpu <= 0:
            raise ValueError(
                "resources.requests.cpu is required (the scheduler and the HPA use it)"
            )
        return self


def _manifest_docs(path: Path) -> list[Any]:
    try:
        return list(yaml.safe_load_all(path.read_text()))
    except OSError as err:
        raise ValueError(f"cannot read manifest {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ValueError(f"manifest {path} is not valid YAML: {err}") from err


def _read_manifest(path: Path, kind: str, docs: list[Any] | None = None) -> dict[str, Any]:
    docs = _manifest_docs(path) if docs is None else docs
    found = [d for d in docs if isinstance(d, dict) and d.get("kind") == kind]
    if len(found) != 1:
        kinds = [d.get("kind") for d in docs if isinstance(d, dict)]
        raise ValueError(f"manifest {path} must hold exactly one {kind}, found kinds {kinds}")
    return found[0]


def _container(path: Path) -> Container:
    docs = _manifest_docs(path)
    spec = _read_manifest(path, "Deployment", docs).get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    return read_container(docs, pod, f"manifest {path}")


def deployment_from_manifest(path: Path, given: Collection[str] = ()) -> dict[str, Any]:
    """The scenario's deployment fields from a real apps/v1 Deployment manifest (and the
    ConfigMaps in the same file); fields in ``given`` are the scenario's own and not read."""
    manifest = _read_manifest(path, "Deployment")
    spec = manifest.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    containers = pod.get("containers") or []
    if not containers:
        raise ValueError(f"manifest {path}: spec.template.spec.containers is empty")
    container = containers[0]
    out: dict[str, Any] = {"name": (manifest.get("metadata") or {}).get("name", "deployment")}
    if "replicas" in spec:
        out["replicas"] = spec["replicas"]
    for key in ("image", "resources", "readinessProbe", "lifecycle"):
        if key in container:
            out[key] = container[key]
    for key in ("nodeSelector", "terminationGracePeriodSeconds"):
        if key in pod:
            out[key] = pod[key]
    return {**out, **deployment_fields(_container(path), given)}


def serving_from_manifest(path: Path, given: Collection[str] = ()) -> dict[str, Any]:
    """The ``serving`` fields a Deployment manifest's TF Serving flags set (and a batching
    parameters file from a ConfigMap in the same file); ``given`` fields are not read."""
    return serving_from_container(_container(path), given)


def hpa_from_manifest(path: Path) -> dict[str, Any]:
    manifest = _read_manifest(path, "HorizontalPodAutoscaler")
    api = manifest.get("apiVersion")
    if api != "autoscaling/v2":
        raise ValueError(f"manifest {path}: apiVersion {api!r}; scalelab reads autoscaling/v2")
    return dict(manifest.get("spec") or {})


# --- TF Serving, metrics, controllers -----------------------------------------------------


class Batching(Strict):
    """``--enable_batching`` with a batching parameters file; unset fields take
    BasicBatchScheduler::Options' defaults (tensorflow/core/kernels/batching_util/
    basic_batch_scheduler.h): max_batch_size 1000, batch_timeout_micros 0,
    num_batch_threads = the machine's cores, max_enqueued_batches 10."""

    max_batch_size: int = Field(1000, ge=1)
    batch_timeout_micros: int = Field(0, ge=0)
    num_batch_threads: int | None = Field(None, ge=1, description="default: node vCPUs")
    max_enqueued_batches: int = Field(10, ge=1)


class Serving(Strict):
    """TF Serving's performance model inputs."""

    profile: str = Field("resnet101-tfserving", description="latency profile family")
    request_timeout: Duration = Field(30.0, description="a request over this fails (lab: 30 s)")
    rest_api_num_threads: int | None = Field(
        None,
        ge=1,
        description="--rest_api_num_threads; default 4 x node vCPUs (TF Serving); one of them "
        "runs the HTTP event loop, so one fewer requests are served at once",
    )
    intra_op_threads: int | None = Field(
        None,
        ge=1,
        description="--tensorflow_intra_op_parallelism; default: all node vCPUs (TF Serving)",
    )
    inter_op_threads: int | None = Field(
        None,
        ge=1,
        description="--tensorflow_inter_op_parallelism; default: all node vCPUs (TensorFlow)",
    )
    discipline: Literal["inter_op", "fifo", "ps"] = Field(
        "inter_op",
        description="how requests in flight share the measured throughput X(c, n): inter_op, "
        "the oldest m = inter-op threads share X(m) and each one after gets X(k) - X(k-1) "
        "(a Session::Run progresses only on an inter-op thread); fifo, m = 1 (the oldest as "
        "if alone); ps, every request at X(n)/n (processor sharing)",
    )
    batching: Batching | None = None
    warmup: bool = Field(
        False, description="the SavedModel ships assets.extra/tf_serving_warmup_requests"
    )
    cold_requests: int = Field(
        1, ge=0, description="requests that pay the first-run cost without warmup (assumed)"
    )
    cold_factor: float | None = Field(
        None,
        ge=1,
        description="first-run CPU cost / a warm request's; default: the profile's "
        "measured value, else 3.0 (assumed)",
    )
    shutdown_time: Duration = Field(
        1.0, description="SIGTERM -> pod gone (kubelet cleanup, assumed)"
    )

    @field_validator("profile")
    @classmethod
    def _profile_beside_scenario(cls, value: str, info: ValidationInfo) -> str:
        """A profile file is read when the run starts, so its path is made absolute (resolved)
        against the scenario's directory now (as manifests and replay files are read): a scenario
        written elsewhere (a counterexample, a sweep's point) still finds it."""
        from sim.serving import profile as profiles  # not at import: profiles read data files

        if not value.endswith((".yaml", ".yml", ".json")):
            shipped = profiles.builtin_profiles()
            if any(value in (p.family, p.name) for p in shipped):
                return value
            families = sorted({p.family for p in shipped})
            raise ValueError(
                f"unknown profile {value!r}: a packaged family ({', '.join(families)}), a "
                "profile's name, or a profile file (.yaml, .yml, .json)"
            )
        base = Path((info.context or {}).get("base_dir", "."))
        path = (base / value).resolve()
        if not path.is_file():
            raise ValueError(
                f"no profile file at {path} (in a scenario file a path is relative to that "
                "file's directory; with --set, to the current directory)"
            )
        return str(path)


class Metrics(Strict):
    """metrics-server: usage is the rate between the last two scrapes."""

    resolution: Duration = Field(30.0, gt=0, description="30 s on GKE's add-on, 15 s upstream")


class HPAController(Strict):
    """kube-controller-manager flags for the HPA (upstream defaults)."""

    sync_period: Duration = Field(15.0, gt=0)
    tolerance: float = Field(0.1, ge=0)
    downscale_stabilization: Duration = 300.0
    cpu_initialization_period: Duration = 300.0
    initial_readiness_delay: Duration = 30.0


def _hpa_from_manifest(data: Any, info: ValidationInfo) -> Any:
    if isinstance(data, dict) and "manifest" in data:
        base = Path((info.context or {}).get("base_dir", "."))
        rest = {k: v for k, v in data.items() if k != "manifest"}
        return {**hpa_from_manifest(base / str(data["manifest"])), **rest}
    return data


# --- load ---------------------------------------------------------------------------------


class _Replay(Strict):
    """A value over time replayed from a CSV or Parquet file (``sim.replay`` has the rules):
    each row holds from its time until the next; the last for ``hold_last``."""

    file: str
    time_column: str | int | None = Field(
        None, description="header name or 0-based position [default: by name, else first]"
    )
    hold_last: Duration | None = Field(
        None,
        description="how long the last row holds; assumed: as long as the step before it "
        "(1 s for one value per second)",
    )
    scale: float = Field(1.0, gt=0, description="multiplies every value (sweeps' load.scale)")
    points: tuple[tuple[float, float], ...] = Field(
        default=(), description="(t, value) rows, filled from file at load"
    )
    end: float = Field(0.0, ge=0, description="when the last row stops holding, filled at load")

    _series: Series | None = PrivateAttr(None)

    def series(self) -> Series:
        """The rows as a Series, built once (``at`` is called every simulated second)."""
        if self._series is None:
            times = tuple(t for t, _ in self.points)
            values = tuple(v * self.scale for _, v in self.points)
            self._series = Series(times, values, self.end)
        return self._series


def _read_replay(
    data: Any, info: ValidationInfo, column: str, what: str, names: tuple[str, ...], integer: bool
) -> Any:
    if isinstance(data, dict) and "file" in data and not data.get("points"):
        base = Path((info.context or {}).get("base_dir", "."))
        hold = data.get("hold_last")
        series = read_series(
            base / str(data["file"]),
            what=what,
            names=names,
            time_column=data.get("time_column"),
            value_column=data.get(column),
            hold_last=None if hold is None else parse_duration(hold),
            integer=integer,
        )
        points = tuple(zip(series.times, series.values, strict=True))
        data = {**data, "points": points, "end": series.end}
    elif isinstance(data, dict) and data.get("points") and data.get("hold_last") is not None:
        # A scenario written out with its rows: a new hold_last still moves the end.
        data = {**data, "end": float(data["points"][-1][0]) + parse_duration(data["hold_last"])}
    return data


class WaitTime(Strict):
    """Locust wait_time: ``between: [a, b]`` or ``constant: x`` seconds."""

    between: tuple[float, float] | None = None
    constant: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> WaitTime:
        if (self.between is None) == (self.constant is None):
            raise ValueError("give exactly one of between: [min, max] or constant: seconds")
        if self.between is not None and not 0 <= self.between[0] <= self.between[1]:
            raise ValueError(f"between must be [min, max] with 0 <= min <= max, got {self.between}")
        return self


class StepShape(Strict):
    """Locust's StepLoadShape: ``(floor(t/step_time)+1) * step_users`` users until time_limit.

    Locust's shape returns None once ``run_time > time_limit``; its run_time at the tick due at
    ``time_limit`` is already a hair past it, so on exact integer ticks the test stops *at*
    ``time_limit`` (the lab's 11 steps of 60 s stop at 660 s).
    """

    kind: Literal["steps"] = "steps"
    step_users: int = Field(2, ge=1)
    step_time: Duration = 60.0
    spawn_rate: float = Field(1.0, gt=0)
    time_limit: Duration = 660.0

    def tick(self, t: float) -> tuple[int, float] | None:
        if t >= self.time_limit:
            return None
        return (math.floor(t / self.step_time) + 1) * self.step_users, self.spawn_rate


class Stage(Strict):
    until: Duration
    users: int = Field(ge=0)
    spawn_rate: float = Field(1.0, gt=0)


class StagesShape(Strict):
    """Locust's StagesShape: each stage holds until its ``until`` time; stop after the last."""

    kind: Literal["stages"] = "stages"
    stages: list[Stage] = Field(min_length=1)

    def tick(self, t: float) -> tuple[int, float] | None:
        for stage in self.stages:
            if t < stage.until:
                return stage.users, stage.spawn_rate
        return None


class ConstantUsers(Strict):
    kind: Literal["constant"] = "constant"
    users: int = Field(ge=0)
    spawn_rate: float = Field(1.0, gt=0)
    time_limit: Duration | None = None

    def tick(self, t: float) -> tuple[int, float] | None:
        if self.time_limit is not None and t >= self.time_limit:
            return None
        return self.users, self.spawn_rate


class ReplayUsers(_Replay):
    """Closed-loop users replayed from a file: ``t,users`` rows (any header, by name or
    position); each count holds until the next row, and the test stops when the file ends
    (a Locust shape's ``tick()`` returning None). ``scale`` rounds to whole users."""

    kind: Literal["replay"] = "replay"
    users_column: str | int | None = Field(
        None, description="header name or 0-based position [default: by name, else second]"
    )
    spawn_rate: float = Field(1.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any, info: ValidationInfo) -> Any:
        return _read_replay(data, info, "users_column", "a user count", USER_NAMES, True)

    def tick(self, t: float) -> tuple[int, float] | None:
        value = self.series().at(t) if self.points else None
        if value is None:
            return None
        return round(value), self.spawn_rate


Shape = Annotated[
    StepShape | StagesShape | ConstantUsers | ReplayUsers, Field(discriminator="kind")
]


class LocustLoad(Strict):
    """Closed loop: each user requests, waits for the response, sleeps wait_time, repeats."""

    kind: Literal["locust"] = "locust"
    wait_time: WaitTime = WaitTime(between=(0.8, 0.9))
    shape: Shape = StepShape()


class ConstantRate(Strict):
    kind: Literal["constant"] = "constant"
    rps: float = Field(ge=0)

    def rate(self, t: float) -> float:
        return self.rps


class PiecewiseRate(Strict):
    """Rate held at each point's value from its time until the next point."""

    kind: Literal["piecewise"] = "piecewise"
    points: list[tuple[Duration, float]] = Field(min_length=1)

    @field_validator("points")
    @classmethod
    def _sorted(cls, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        times = [t for t, _ in points]
        if times != sorted(times):
            raise ValueError("points must be in increasing time order")
        if any(r < 0 for _, r in points):
            raise ValueError("rates must be >= 0")
        return points

    def rate(self, t: float) -> float:
        current = 0.0
        for start, rps in self.points:
            if t < start:
                break
            current = rps
        return current


class SpikeRate(Strict):
    kind: Literal["spike"] = "spike"
    base_rps: float = Field(ge=0)
    factor: float = Field(5.0, ge=0)
    start: Duration = 600.0
    duration: Duration = 600.0

    def rate(self, t: float) -> float:
        inside = self.start <= t < self.start + self.duration
        return self.base_rps * (self.factor if inside else 1.0)


class SinusoidRate(Strict):
    """``mean + amplitude * sin(2 pi (t - phase) / period)``, never below zero."""

    kind: Literal["sinusoid"] = "sinusoid"
    mean_rps: float = Field(ge=0)
    amplitude_rps: float = Field(ge=0)
    period: Duration = 86400.0
    phase: Duration = 0.0

    def rate(self, t: float) -> float:
        wave = math.sin(2 * math.pi * (t - self.phase) / self.period)
        return max(0.0, self.mean_rps + self.amplitude_rps * wave)


class ReplayRate(_Replay):
    """Open-loop rates replayed from a file: ``t,rps`` rows (any header, by name or position),
    or one rate per line for one per second."""

    kind: Literal["replay"] = "replay"
    rate_column: str | int | None = Field(
        None, description="header name or 0-based position [default: by name, else second]"
    )

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any, info: ValidationInfo) -> Any:
        return _read_replay(data, info, "rate_column", "a rate in req/s", RATE_NAMES, False)

    def rate(self, t: float) -> float:
        value = self.series().at(t) if self.points else None
        return 0.0 if value is None else value


RateShape = Annotated[
    ConstantRate | PiecewiseRate | SpikeRate | SinusoidRate | ReplayRate,
    Field(discriminator="kind"),
]


class OpenLoopLoad(Strict):
    """Poisson arrivals at rate(t), piecewise constant per second; each on a new connection."""

    kind: Literal["open_loop"] = "open_loop"
    rate: RateShape
    stop_at: Duration | None = None


Load = Annotated[LocustLoad | OpenLoopLoad, Field(discriminator="kind")]


class SLO(Strict):
    """Service-level objective checked in the summary; latencies in seconds."""

    p50: Duration | None = None
    p95: Duration | None = None
    p99: Duration | None = None
    error_rate: float | None = Field(None, ge=0, le=1)


# --- the scenario -------------------------------------------------------------------------


class Scenario(Strict):
    """One simulated (or replayed) experiment."""

    name: str = "scenario"
    description: str = ""
    seed: int = Field(1, ge=0)
    duration: Duration = 1800.0
    start: Literal["warm", "cold"] = Field(
        "warm",
        description="warm: the initial replicas are Running and Ready at t=0 (as in the lab)",
    )
    cluster: Cluster = Cluster()
    deployment: Deployment = Deployment()
    hpa: Annotated[HorizontalPodAutoscalerSpec | None, BeforeValidator(_hpa_from_manifest)] = None
    hpa_controller: HPAController = HPAController()
    metrics: Metrics = Metrics()
    serving: Serving = Serving()
    load: Load = LocustLoad()
    slo: SLO | None = None

    @model_validator(mode="before")
    @classmethod
    def _serving_from_manifest(cls, data: Any, info: ValidationInfo) -> Any:
        """A Deployment manifest's TF Serving flags fill ``serving`` where the scenario does not
        say (the scenario wins, as over the manifest's other fields), so what is simulated is
        what ``scalelab manifests`` writes back."""
        dep = data.get("deployment") if isinstance(data, dict) else None
        serving = data.get("serving") or {} if isinstance(data, dict) else None
        if not isinstance(dep, dict) or "manifest" not in dep or not isinstance(serving, dict):
            return data
        path = Path((info.context or {}).get("base_dir", ".")) / str(dep["manifest"])
        try:
            container = _container(path)
        except ValueError:
            return data  # deployment's own validator reports it, under deployment
        try:
            found = serving_from_container(container, serving)
        except ValueError as err:
            raise ValueError(f"deployment.manifest -> serving: {err}") from err
        return {**data, "serving": {**found, **serving}}

    @field_validator("duration")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("duration must be > 0")
        return value
