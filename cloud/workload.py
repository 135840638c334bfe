"""Putting the lab's objects on a cluster, reaching TF Serving, and taking them off again.

Creation goes through the typed ``kubernetes.client`` APIs (CoreV1Api, AppsV1Api,
AutoscalingV2Api); each accepted create is recorded in the run's :class:`~cloud.teardown.Ledger`
with its delete call at once, so an error one line later still tears it down. The model is
"up" when TF Serving's model status API says AVAILABLE
(https://www.tensorflow.org/tfx/serving/api_rest#model_status_api), not when the pod is Ready:
the readiness probe only checks that the gRPC port is open.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from cloud.errors import CloudError, MissingDependencyError
from cloud.plan import REST_PORT
from cloud.teardown import Ledger, Say

try:
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException
except ImportError as _err:  # pragma: no cover
    raise MissingDependencyError("kubernetes") from _err


class Kube:
    """The typed API groups a run uses, over one ``ApiClient``."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.autoscaling = k8s.AutoscalingV2Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)
        self.version = k8s.VersionApi(api_client)

    def server_version(self) -> str:
        info = self.version.get_code()
        return f"{info.major}.{str(info.minor).rstrip('+')}"


def is_not_found(err: BaseException) -> bool:
    return isinstance(err, ApiException) and err.status == 404


def _is_conflict(err: BaseException) -> bool:
    return isinstance(err, ApiException) and err.status == 409


def _describe(obj: Any) -> str:
    where = f" in namespace {obj.metadata.namespace}" if obj.metadata.namespace else ""
    return f"{obj.kind} {obj.metadata.name}{where}"


def _calls(kube: Kube, obj: Any) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(create, delete) for one object; deletes propagate in the background (GC).

    Deletes skip decoding the response (``_preload_content=False``): the API server answers
    with a Status or with the object itself (a Namespace going Terminating, a Service held by
    its load-balancer finalizer), and only the HTTP status matters here.
    """
    name, ns = obj.metadata.name, obj.metadata.namespace
    options = k8s.V1DeleteOptions(propagation_policy="Background")
    kind = obj.kind
    if kind == "Namespace":
        return (
            lambda: kube.core.create_namespace(obj),
            lambda: kube.core.delete_namespace(name, body=options, _preload_content=False),
        )
    if kind == "ConfigMap":
        return (
            lambda: kube.core.create_namespaced_config_map(ns, obj),
            lambda: kube.core.delete_namespaced_config_map(
                name, ns, body=options, _preload_content=False
            ),
        )
    if kind == "Deployment":
        return (
            lambda: kube.apps.create_namespaced_deployment(ns, obj),
            lambda: kube.apps.delete_namespaced_deployment(
                name, ns, body=options, _preload_content=False
            ),
        )
    if kind == "Service":
        return (
            lambda: kube.core.create_namespaced_service(ns, obj),
            lambda: kube.core.delete_namespaced_service(
                name, ns, body=options, _preload_content=False
            ),
        )
    if kind == "HorizontalPodAutoscaler":
        return (
            lambda: kube.autoscaling.create_namespaced_horizontal_pod_autoscaler(ns, obj),
            lambda: kube.autoscaling.delete_namespaced_horizontal_pod_autoscaler(
                name, ns, body=options, _preload_content=False
            ),
        )
    raise ValueError(f"scalelab does not create {kind} objects")


def wait_gone(read: Callable[[], Any], timeout: float, interval: float = 2.0) -> None:
    """Poll ``read`` until it raises 404: a LoadBalancer Service's finalizer
    (service.kubernetes.io/load-balancer-cleanup) holds it until the cloud LB is deleted, a
    Namespace stays Terminating until its contents are gone. Reads start 0.05 s apart and
    back off to ``interval``."""
    deadline = time.monotonic() + timeout
    delay = min(0.05, interval)
    while time.monotonic() < deadline:
        try:
            read()
        except ApiException as err:
            if err.status == 404:
                return
            raise
        time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
        delay = min(delay * 2, interval)
    raise CloudError(f"still present after {timeout:.0f} s (a finalizer not done?)")


def _namespace_terminating(kube: Kube, name: str) -> bool:
    namespace = kube.core.read_namespace(name)
    return bool(namespace.status and namespace.status.phase == "Terminating")


def apply(
    kube: Kube,
    objects: list[Any],
    ledger: Ledger,
    say: Say,
    *,
    delete_timeout: float = 600.0,
    poll_s: float = 2.0,
) -> None:
    """Create each object, recording it for teardown; an existing namespace is reused (and
    kept), any other existing object is an error that points at ``scalelab cloud cleanup``.

    A namespace still Terminating (a previous run's teardown) is waited for, then created:
    the API server refuses new objects in it with 403 (NamespaceLifecycle admission). Deletes
    of a Namespace or a LoadBalancer Service wait until the object is gone (the namespace
    controller, the service.kubernetes.io/load-balancer-cleanup finalizer), so the next run
    finds neither half-deleted."""
    for obj in objects:
        create, delete = _calls(kube, obj)
        what = _describe(obj)
        try:
            create()
        except ApiException as err:
            if _is_conflict(err) and obj.kind == "Namespace":
                name = obj.metadata.name
                if not _namespace_terminating(kube, name):
                    say(f"reusing existing {what} (it is not deleted afterwards)")
                    continue
                say(f"{what} is still Terminating (an earlier teardown): waiting for it to go")
                wait_gone(functools.partial(kube.core.read_namespace, name), delete_timeout, poll_s)
                create()
            elif _is_conflict(err):
                raise CloudError(
                    f"{what} already exists (a previous run kept with --keep?); remove it with "
                    "'scalelab cloud cleanup' or kubectl, then run again"
                ) from None
            else:
                raise CloudError(
                    f"creating {what} failed: HTTP {err.status} {err.reason}: {err.body}"
                ) from None
        read = _reader(kube, obj)
        if read is not None:
            ledger.record(
                what,
                functools.partial(_delete_and_wait, delete, read, delete_timeout, poll_s),
                is_not_found,
            )
        else:
            ledger.record(what, delete, is_not_found)
        say(f"created {what}")


def _reader(kube: Kube, obj: Any) -> Callable[[], Any] | None:
    """How to read back an object whose delete finishes later (None: gone at once)."""
    name, ns = obj.metadata.name, obj.metadata.namespace
    if obj.kind == "Namespace":
        return lambda: kube.core.read_namespace(name)
    if obj.kind == "Service" and obj.spec.type == "LoadBalancer":
        return lambda: kube.core.read_namespaced_service(name, ns)
    return None


def load_balancer_url(
    kube: Kube, namespace: str, name: str, timeout: float, say: Say, interval: float = 5.0
) -> str:
    """Wait for the Service's external address (status.loadBalancer.ingress)."""
    deadline = time.monotonic() + timeout
    said = False
    while time.monotonic() < deadline:
        service = kube.core.read_namespaced_service(name, namespace)
        balancer = service.status.load_balancer if service.status else None
        ingress = (balancer.ingress or []) if balancer else []
        if ingress:
            address = ingress[0].ip or ingress[0].hostname
            if address:
                return f"http://{address}:{REST_PORT}"
        if not said:
            say(f"waiting for the load balancer of Service {name}")
            said = True
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
    raise CloudError(
        f"Service {name} got no external address in {timeout:.0f} s; try --no-lb (port-forward)"
    )


def model_status(url: str, model: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET /v1/models/NAME (TF Serving's model status API)."""
    with urllib.request.urlopen(f"{url}/v1/models/{model}", timeout=timeout) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def wait_model_available(
    url: str, model: str, timeout: float, say: Say, interval: float = 5.0
) -> dict[str, Any]:
    """Poll until some version reports state AVAILABLE; connection errors mean "not yet"."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    said = False
    while True:
        try:
            status = model_status(url, model)
            states = [v.get("state") for v in status.get("model_version_status", [])]
            if "AVAILABLE" in states:
                return status
            last = f"states {states}"
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code}: {err.read()[:200]!r}"
        except (OSError, ValueError) as err:
            last = str(err)
        if time.monotonic() >= deadline:
            raise CloudError(
                f"model {model!r} at {url} not AVAILABLE after {timeout:.0f} s (last: {last}); "
                "check the model path and the pod's logs"
            )
        if not said:
            say(f"waiting for model {model} to be AVAILABLE at {url}")
            said = True
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


# --- port-forward for --no-lb ---------------------------------------------------------------


class PortForwarder:
    """A local TCP port whose every new connection is forwarded to a Ready pod.

    kube-proxy picks an endpoint per new connection at random and the connection stays with
    it (DESIGN.md, connections); this does the same over the API server's pod portforward
    subresource, one stream per connection. ``connect`` returns the remote end (a socket-like
    object with recv/sendall/close).
    """

    def __init__(self, connect: Callable[[], Any], host: str = "127.0.0.1") -> None:
        self._connect = connect
        self._server = socket.create_server((host, 0))
        self._server.settimeout(0.5)
        self.host = host
        self.port: int = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="port-forward", daemon=True)
        self.errors: list[str] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> PortForwarder:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                local, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                remote = self._connect()
            except Exception as err:
                self.errors.append(str(err))
                local.close()
                continue
            for src, dst in ((local, remote), (remote, local)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()


def _pump(src: Any, dst: Any) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def pod_connector(
    kube: Kube, namespace: str, app: str, port: int, rng: random.Random
) -> Callable[[], Any]:
    """Connections to a random Ready pod of ``app`` through the portforward subresource."""
    from kubernetes.stream import portforward

    def connect() -> Any:
        pods = kube.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
        ready = [
            str(p.metadata.name)
            for p in pods
            if p.metadata is not None and _ready(p) and not p.metadata.deletion_timestamp
        ]
        if not ready:
            raise CloudError(f"no Ready pod of {app} to forward to")
        forward = portforward(
            kube.core.connect_get_namespaced_pod_portforward,
            rng.choice(sorted(ready)),
            namespace,
            ports=str(port),
        )
        return forward.socket(port)

    return connect


def _ready(pod: Any) -> bool:
    conditions = (pod.status.conditions or []) if pod.status else []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


# --- leftovers ------------------------------------------------------------------------------


def leftovers(
    kube: Kube,
    run_id: str | None = None,
    *,
    keep: Callable[[str], bool] = lambda _run: False,
    delete_timeout: float = 600.0,
    poll_s: float = 2.0,
) -> list[tuple[str, Callable[[], Any]]]:
    """Every object labelled as scalelab's (optionally of one run; ``keep(run_id)`` spares a
    run still in progress), in teardown order: HPAs, Services, Deployments, ConfigMaps, then
    labelled namespaces. LoadBalancer Services and Namespaces are waited for until gone."""
    from cloud.settings import MANAGED_BY, MANAGED_BY_LABEL, RUN_ID_LABEL

    selector = f"{MANAGED_BY_LABEL}={MANAGED_BY}" + (f",{RUN_ID_LABEL}={run_id}" if run_id else "")
    options = k8s.V1DeleteOptions(propagation_policy="Background")
    found: list[tuple[str, Callable[[], Any]]] = []

    def spared(item: Any) -> bool:
        return keep(str((item.metadata.labels or {}).get(RUN_ID_LABEL, "")))

    def add(
        kind: str,
        items: list[Any],
        delete: Callable[[str, str], Any],
        read: Callable[[str, str], Any] | None = None,
    ) -> None:
        for item in items:
            if spared(item):
                continue
            name, ns = item.metadata.name, item.metadata.namespace
            call = functools.partial(delete, name, ns)
            if read is not None and getattr(item.spec, "type", None) == "LoadBalancer":
                call = functools.partial(
                    _delete_and_wait,
                    call,
                    functools.partial(read, name, ns),
                    delete_timeout,
                    poll_s,
                )
            found.append((f"{kind} {name} in namespace {ns}", call))

    add(
        "HorizontalPodAutoscaler",
        kube.autoscaling.list_horizontal_pod_autoscaler_for_all_namespaces(
            label_selector=selector
        ).items,
        lambda n, ns: kube.autoscaling.delete_namespaced_horizontal_pod_autoscaler(
            n, ns, body=options, _preload_content=False
        ),
    )
    add(
        "Service",
        kube.core.list_service_for_all_namespaces(label_selector=selector).items,
        lambda n, ns: kube.core.delete_namespaced_service(
            n, ns, body=options, _preload_content=False
        ),
        kube.core.read_namespaced_service,
    )
    add(
        "Deployment",
        kube.apps.list_deployment_for_all_namespaces(label_selector=selector).items,
        lambda n, ns: kube.apps.delete_namespaced_deployment(
            n, ns, body=options, _preload_content=False
        ),
    )
    add(
        "ConfigMap",
        kube.core.list_config_map_for_all_namespaces(label_selector=selector).items,
        lambda n, ns: kube.core.delete_namespaced_config_map(
            n, ns, body=options, _preload_content=False
        ),
    )
    namespaces: list[Any] = kube.core.list_namespace(label_selector=selector).items
    for item in namespaces:
        if spared(item):
            continue
        name = str(item.metadata.name)
        delete = functools.partial(
            kube.core.delete_namespace, name, body=options, _preload_content=False
        )
        read = functools.partial(kube.core.read_namespace, name)
        found.append(
            (
                f"Namespace {name}",
                functools.partial(_delete_and_wait, delete, read, delete_timeout, poll_s),
            )
        )
    return found


def _delete_and_wait(
    delete: Callable[[], Any], read: Callable[[], Any], timeout: float, poll_s: float
) -> None:
    try:
        delete()
    except ApiException as err:
        if not _is_conflict(err):  # 409: a Namespace already Terminating
            raise
    wait_gone(read, timeout, poll_s)


def load_balancer_services(kube: Kube) -> list[tuple[str, Callable[[], Any]]]:
    """Every LoadBalancer Service in a cluster, each with a delete that waits for its
    finalizer: GKE does not promise to remove a cluster's load balancers when the cluster is
    deleted (https://cloud.google.com/kubernetes-engine/docs/how-to/deleting-a-cluster)."""
    options = k8s.V1DeleteOptions(propagation_policy="Background")
    found: list[tuple[str, Callable[[], Any]]] = []
    services: list[Any] = kube.core.list_service_for_all_namespaces().items
    for svc in services:
        if svc.spec is None or svc.spec.type != "LoadBalancer":
            continue
        name, ns = str(svc.metadata.name), str(svc.metadata.namespace)
        delete = functools.partial(
            kube.core.delete_namespaced_service, name, ns, body=options, _preload_content=False
        )
        read = functools.partial(kube.core.read_namespaced_service, name, ns)
        found.append(
            (
                f"LoadBalancer Service {name} in namespace {ns}",
                functools.partial(_delete_and_wait, delete, read, 600.0, 2.0),
            )
        )
    return found
