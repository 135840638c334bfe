"""Backends that run a scenario on a real cluster, behind one template method.

:meth:`Backend.run` is the whole real run, the same for every backend: provision, connect,
check the manifests against the server's version, create the workload, find the endpoint,
wait for the model, run the load while observing, write the Trace, tear down. A backend
supplies only the cluster-specific steps, ``_provision()`` and ``_connect()`` (SkyPilot's
``provision()``/``_provision()`` split, sky/backends/backend.py). Backends register by name in
:data:`BACKENDS`, which refuses a second registration of a name. Each declares what it cannot
do in ``UNSUPPORTED`` with the reason; :meth:`Backend.check` rejects a scenario that needs one
of those before anything is created.

Nothing here imports an SDK at module level: ``import cloud.backend`` stays light.
"""

from __future__ import annotations

import enum
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from cloud.errors import Aborted, CloudError, UnsupportedScenarioError
from cloud.plan import REST_PORT, Plan, make_plan
from cloud.settings import CloudSettings
from cloud.teardown import Ledger, Say, TeardownReport, quiet, sigterm_as_interrupt
from sim.scenario import ClusterAutoscaler, HPAController, Metrics, Scenario

if TYPE_CHECKING:
    from sim.trace import Trace

T = TypeVar("T")


class Feature(enum.Enum):
    """Things a scenario may need that not every backend can give."""

    CA_FLAGS = "cluster-autoscaler flags other than the profile"
    HPA_CONTROLLER_FLAGS = "kube-controller-manager HPA flags"
    METRICS_RESOLUTION = "a metrics-server resolution other than 30 s"
    SCHEDULER_SCORING = "a scheduler scoring strategy of its own"
    HPA_SCALE_TO_ZERO = "an HPA with minReplicas 0"
    DETERMINISTIC_REPLAY = "the same seed gives the same trace"


def required_features(scenario: Scenario) -> dict[Feature, str]:
    """What the scenario needs beyond a stock cluster, each with the fields that say so."""
    need: dict[Feature, str] = {}

    def changed(value: Any, default: Any, fields: list[str]) -> list[str]:
        return [f for f in fields if getattr(value, f) != getattr(default, f)]

    ca = changed(
        scenario.cluster.autoscaler,
        ClusterAutoscaler(),
        [f for f in ClusterAutoscaler.model_fields if f not in ("enabled", "profile")],
    )
    if ca:
        need[Feature.CA_FLAGS] = ", ".join(f"cluster.autoscaler.{f}" for f in ca)
    hpa_flags = changed(scenario.hpa_controller, HPAController(), list(HPAController.model_fields))
    if hpa_flags:
        need[Feature.HPA_CONTROLLER_FLAGS] = ", ".join(f"hpa_controller.{f}" for f in hpa_flags)
    if scenario.metrics.resolution != Metrics().resolution:
        need[Feature.METRICS_RESOLUTION] = f"metrics.resolution = {scenario.metrics.resolution:g} s"
    cluster = scenario.cluster
    if cluster.scheduler_scoring is not None:
        implied = (
            "MostAllocated"
            if cluster.autoscaler.profile == "optimize-utilization"
            else ("LeastAllocated")
        )
        if cluster.scheduler_scoring != implied:
            need[Feature.SCHEDULER_SCORING] = (
                f"cluster.scheduler_scoring = {cluster.scheduler_scoring}"
            )
    if scenario.hpa is not None and scenario.hpa.minReplicas == 0:
        need[Feature.HPA_SCALE_TO_ZERO] = "hpa.minReplicas = 0"
    return need


class TeardownIncompleteError(CloudError):
    """Something the run created could not be deleted (it may still be billing)."""


class DuplicateRegistrationError(ValueError):
    """A name registered twice: the second would silently shadow the first."""


class Registry(Generic[T]):
    """Name -> class, filled by a decorator; duplicates are errors (unlike Vidur's)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        def add(item: T) -> T:
            for key in (name, *aliases):
                if key in self._items:
                    raise DuplicateRegistrationError(
                        f"{self.what} {key!r} is already registered ({self._items[key]!r})"
                    )
            for key in (name, *aliases):
                self._items[key] = item
            self._named(item, name)
            return item

        return add

    def _named(self, item: T, name: str) -> None:
        """Hook for subclasses: tell the item its registered name."""

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise CloudError(f"unknown {self.what} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


class _BackendRegistry(Registry["type[Backend]"]):
    def _named(self, item: type[Backend], name: str) -> None:
        item.name = name


BACKENDS: Registry[type[Backend]] = _BackendRegistry("backend")


def backend_class(name: str) -> type[Backend]:
    """The registered backend ``name`` (imports the built-in ones on first use)."""
    import cloud.gke
    import cloud.kube  # noqa: F401 - registers the backends

    return BACKENDS.get(name)


def _nothing() -> None:
    return None


class Backend(ABC):
    """One real run of one scenario; see the module docstring for the steps."""

    name: ClassVar[str] = "abstract"
    UNSUPPORTED: ClassVar[dict[Feature, str]] = {}

    def __init__(
        self,
        scenario: Scenario,
        settings: CloudSettings,
        *,
        run_id: str,
        out: Path,
        say: Say = print,
        seed: int | None = None,
        journal: bool = True,
    ) -> None:
        self.scenario = scenario
        self.settings = settings
        self.run_id = run_id
        self.out = out
        self.say = quiet(say) or print
        self.seed = scenario.seed if seed is None else seed
        self.ledger = Ledger(
            out / "cloud-ledger.jsonl" if journal else None,
            attempts=settings.teardown_attempts,
            backoff_s=settings.teardown_backoff_s,
        )
        self.teardown_report: TeardownReport | None = None
        self.started = time.time()
        self.load_balancer_since: float | None = None

    # --- capabilities ------------------------------------------------------------------------

    @classmethod
    def supports(cls, feature: Feature) -> bool:
        return feature not in cls.UNSUPPORTED

    @classmethod
    def check(cls, scenario: Scenario) -> None:
        """Raise :class:`UnsupportedScenarioError` naming each field and the reason."""
        missing = {
            f"{feature.value} ({fields})": cls.UNSUPPORTED[feature]
            for feature, fields in required_features(scenario).items()
            if not cls.supports(feature)
        }
        if missing:
            raise UnsupportedScenarioError(cls.name, missing)

    def plan(self, *, no_lb: bool, max_cost: float | None = None) -> Plan:
        return make_plan(
            self.scenario,
            self.settings,
            backend=self.name,
            run_id=self.run_id,
            no_lb=no_lb,
            max_cost=max_cost,
        )

    # --- the steps a backend supplies -------------------------------------------------------

    @abstractmethod
    def _provision(self) -> None:
        """Make the cluster exist (record what was created in ``self.ledger``)."""

    @abstractmethod
    def _connect(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for the cluster."""

    def _counted_pools(self) -> tuple[str, ...] | None:
        """Node pools whose nodes the trace counts (None: every node)."""
        return self.settings.node_pools

    def preflight(self) -> None:  # noqa: B027 - optional hook; most backends check nothing
        """Checks with the user's credentials before anything is created (raise to refuse)."""

    # --- the template -----------------------------------------------------------------------

    def provision(self) -> None:
        self.say(f"[{self.name}] provisioning")
        self._provision()

    def connect(self) -> Any:
        from cloud.workload import Kube

        kube = Kube(self._connect())
        version = kube.server_version()
        self.say(f"[{self.name}] connected: Kubernetes {version}")
        self._check_manifests(version)
        return kube

    def _check_manifests(self, version: str) -> None:
        from cloud.manifests import (
            at_least,
            build_objects,
            minimum_version,
            schema_version,
            validate,
        )

        floor, needs = minimum_version(self.scenario)
        objects = build_objects(self.scenario, self.settings, run_id=self.run_id)
        if needs and not at_least(version, floor):
            raise CloudError(
                f"the cluster runs Kubernetes {version}; the scenario uses {', '.join(needs)}, "
                f"which needs {floor} or newer"
            )
        checked = schema_version(version)
        if checked != version:
            self.say(f"validating the manifests against Kubernetes {checked} (newest known)")
        problems = validate(objects, [checked])
        if problems:
            raise CloudError("the manifests do not validate:\n  " + "\n  ".join(problems))

    def endpoint(self, kube: Any, *, no_lb: bool) -> tuple[str, Callable[[], None]]:
        """Where the load goes, and how to close it (port-forward) when done."""
        from cloud.workload import PortForwarder, load_balancer_url, pod_connector

        if self.settings.endpoint:
            return self.settings.endpoint.rstrip("/"), _nothing
        name, ns = self.scenario.deployment.name, self.settings.namespace
        if no_lb:
            rng = random.Random(self.seed)
            forwarder = PortForwarder(pod_connector(kube, ns, name, REST_PORT, rng)).start()
            return forwarder.url, forwarder.close
        url = load_balancer_url(kube, ns, name, self.settings.load_balancer_timeout, self.say)
        return url, _nothing

    def run(
        self, *, no_lb: bool = False, keep: bool = False, max_cost: float | None = None
    ) -> Trace:
        """The whole run; on Ctrl-C, SIGTERM, SIGHUP, an error or ``max_cost``, tear down
        (unless ``keep``), write what was observed, and raise :class:`Aborted` saying what was
        removed. The signal handlers stay in place until the teardown is over."""
        with sigterm_as_interrupt():
            return self._run(no_lb=no_lb, keep=keep, max_cost=max_cost)

    @property
    def billing_started(self) -> float | None:
        """When the first thing this run pays for was created (the cluster, on gke)."""
        return self.ledger.entries[0].created_at if self.ledger.entries else None

    def cost_so_far(self, now: float) -> float:
        """Before the load starts: the initial nodes and the cluster fee since creation, plus
        the load balancer since its Service was created (cloud.plan.standing_cost_per_hour)."""
        from cloud.plan import LOAD_BALANCER_PER_HOUR, standing_cost_per_hour

        started = self.billing_started
        cost = 0.0
        if started is not None:
            cost += standing_cost_per_hour(self.scenario, self.name) * (now - started) / 3600
        if self.load_balancer_since is not None:
            cost += LOAD_BALANCER_PER_HOUR * (now - self.load_balancer_since) / 3600
        return cost

    def _guard(self, max_cost: float | None) -> None:
        from cloud.session import CostLimitReached

        if max_cost is None:
            return
        cost = self.cost_so_far(time.time())
        if cost >= max_cost:
            raise CostLimitReached(
                f"--max-cost ${max_cost:.2f} reached (${cost:.2f} before the load started)"
            )

    def _run(self, *, no_lb: bool, keep: bool, max_cost: float | None) -> Trace:
        from cloud.session import Session

        session: Session | None = None
        close: Callable[[], None] = _nothing
        reason: str | None = None
        error: BaseException | None = None
        trace: Trace | None = None
        try:
            self.provision()
            self._guard(max_cost)
            kube = self.connect()
            from cloud.manifests import build_objects
            from cloud.workload import apply, wait_model_available

            objects = build_objects(self.scenario, self.settings, run_id=self.run_id, no_lb=no_lb)
            apply(
                kube,
                objects,
                self.ledger,
                self.say,
                delete_timeout=self.settings.delete_timeout,
                poll_s=self.settings.delete_poll_s,
            )
            if not no_lb:
                self.load_balancer_since = time.time()
            self._guard(max_cost)
            url, close = self.endpoint(kube, no_lb=no_lb)
            self._guard(max_cost)
            if self.scenario.start == "warm":
                wait_model_available(
                    url,
                    self.scenario.deployment.model_name,
                    self.settings.model_ready_timeout,
                    self.say,
                )
                self._guard(max_cost)
            session = Session(
                self.scenario,
                self.settings,
                kube,
                endpoint=url,
                out=self.out,
                say=self.say,
                seed=self.seed,
                backend=self.name,
                run_id=self.run_id,
                max_cost=max_cost,
                pools=self._counted_pools(),
                billing_started=self.billing_started,
                load_balancer_since=self.load_balancer_since,
            )
            session.run()
        except KeyboardInterrupt:
            reason = "interrupted"
        except Aborted as err:
            reason, error = str(err), err
        except Exception as err:
            reason, error = f"error: {err}", err
        finally:
            # Stop the load and keep what was observed, but tear down whatever happens here.
            try:
                close()
                if session is not None:
                    session.stop()
                    trace = session.trace(aborted=reason)
                    self._write(trace)
            except Exception as err:  # pragma: no cover - best effort
                self.say(f"stopping the load or writing the outputs failed: {err}")
                reason = reason or f"error: {err}"
            finally:
                report = self.ledger.keep() if keep else self.ledger.teardown(self.say)
                self.teardown_report = report
                self.say(report.render())
        left = report.failed
        if reason is not None or trace is None:
            removed = "kept everything (--keep)" if keep else "tore down what it created"
            if left:
                removed = f"could not remove {', '.join(left)}: run 'scalelab cloud cleanup'"
            raise Aborted(f"run stopped ({reason}); it {removed}") from error
        if left:
            raise TeardownIncompleteError(
                f"the run finished and its outputs are in {self.out}, but {', '.join(left)} "
                "could not be removed: run 'scalelab cloud cleanup'"
            )
        return trace

    def _write(self, trace: Trace) -> None:
        from sim.report import write_report

        self.out.mkdir(parents=True, exist_ok=True)
        trace.write(self.out)
        title = f"{self.scenario.name} on {self.name} (run {self.run_id})"
        write_report(trace, self.out / "report.html", title)
        self.say(f"wrote {self.out}/trace.csv, events.jsonl, summary.json, report.html")
