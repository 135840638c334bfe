"""Stand-ins for the two remote APIs, spoken to by the *real* client libraries over HTTP on
127.0.0.1: a tiny Kubernetes API server (an object store with label selectors) for
``kubernetes.client``, and GKE's v1 REST API for ``container_v1.ClusterManagerClient`` with
its REST transport. Objects are stored as the JSON the real API serves, built from the real
model classes (``ApiClient().sanitize_for_serialization`` / ``container_v1.*.to_json``).
Failures are injected per method and path pattern.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes import client as k8s


@dataclass
class Failure:
    method: str
    pattern: str
    status: int
    times: int = 1


def api_json(obj: Any) -> dict[str, Any]:
    """A kubernetes client model object as the API server would serve it."""
    data: dict[str, Any] = k8s.ApiClient().sanitize_for_serialization(obj)
    return data


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (a test ending) are not errors worth a traceback."""


@dataclass
class FakeKubeAPI:
    """Items live at their canonical paths; a collection is every item one segment below."""

    store: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    version: tuple[str, str] = ("1", "33")
    metrics_server: bool = True
    finalize_reads: int = 2
    """A deleted Namespace (or a LoadBalancer Service, held by its
    service.kubernetes.io/load-balancer-cleanup finalizer) is still served, with a
    deletionTimestamp, until this many reads of it; the last read is a 404."""
    token: str | None = "t0ken"
    """Every request must carry ``Authorization: Bearer <token>``; GKE answers an anonymous
    call with 403 (system:anonymous has no RBAC rights). None: no check."""
    answers: dict[str, Callable[[], tuple[int, str, bytes]]] = field(default_factory=dict)
    """GET answers made at request time, by path: (status, content type, body), e.g. a
    PodMetrics that moves on or a kubelet's /metrics/resource text through the node proxy."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    _uids: Iterator[int] = field(default_factory=itertools.count)
    _finalizing: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def terminating(self, path: str) -> bool:
        with self.lock:
            return path in self._finalizing

    def _read_item(self, path: str) -> dict[str, Any] | None:
        """GET of one object: a finalizing one goes away on its last read (with its contents,
        for a Namespace), as the namespace controller or service controller finishes."""
        with self.lock:
            item = self.store.get(path)
            if item is None or path not in self._finalizing:
                return item
            self._finalizing[path] -= 1
            if self._finalizing[path] > 0:
                return item
            del self._finalizing[path]
            namespace = re.fullmatch(r"/api/v1/namespaces/([^/]+)", path)
            inside = f"/namespaces/{namespace.group(1)}/" if namespace else None
            for key in [k for k in self.store if k == path or (inside and inside in k)]:
                del self.store[key]
                self._finalizing.pop(key, None)
            return None

    def _delete(self, path: str) -> tuple[int, dict[str, Any]]:
        """(status, body) of a DELETE: a Namespace goes Terminating, a LoadBalancer Service
        waits for its finalizer, anything else goes at once."""
        with self.lock:
            item = self.store.get(path)
            if item is None:
                return 404, {}
            kind = item.get("kind")
            if kind is None:
                kind = "Namespace" if re.fullmatch(r"/api/v1/namespaces/[^/]+", path) else ""
            balancer = kind == "Service" and (item.get("spec") or {}).get("type") == (
                "LoadBalancer"
            )
            if path in self._finalizing:
                if kind == "Namespace":  # as the API server answers a second delete
                    return 409, {
                        "reason": "Conflict",
                        "message": "The system is ensuring all content is removed from this "
                        "namespace. Upon completion, this namespace will automatically be "
                        "purged by the system.",
                    }
                return 200, item
            if kind == "Namespace" or balancer:
                meta = item.setdefault("metadata", {})
                meta["deletionTimestamp"] = _now()
                if kind == "Namespace":
                    item.setdefault("status", {})["phase"] = "Terminating"
                    meta.setdefault("finalizers", ["kubernetes"])
                else:
                    meta["finalizers"] = ["service.kubernetes.io/load-balancer-cleanup"]
                self._finalizing[path] = self.finalize_reads
                return 200, item
            del self.store[path]
            return 200, item

    def _admit(self, path: str) -> tuple[int, str, str] | None:
        """NamespaceLifecycle admission for a create: the namespace must exist and not be
        Terminating (plugin/pkg/admission/namespace/lifecycle/admission.go)."""
        match = re.match(r"(/api/v1|/apis/[^/]+/[^/]+)/namespaces/([^/]+)/", path + "/")
        if match is None or path.rstrip("/").endswith(f"/namespaces/{match.group(2)}"):
            return None
        ns = match.group(2)
        with self.lock:
            if f"/api/v1/namespaces/{ns}" not in self.store:
                return 404, "NotFound", f'namespaces "{ns}" not found'
            if f"/api/v1/namespaces/{ns}" in self._finalizing:
                return (
                    403,
                    "Forbidden",
                    f"unable to create new content in namespace {ns} because it is being "
                    "terminated",
                )
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "u", "user": {"token": "t0ken"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    # -- seeding ---------------------------------------------------------------------------

    def put(self, path: str, obj: Any) -> None:
        data = obj if isinstance(obj, dict) else api_json(obj)
        with self.lock:
            self.store[path.rstrip("/")] = data

    def get(self, path: str) -> dict[str, Any] | None:
        with self.lock:
            return self.store.get(path)

    def paths(self, pattern: str) -> list[str]:
        with self.lock:
            return sorted(p for p in self.store if re.fullmatch(pattern, p))

    def fail(self, method: str, pattern: str, status: int = 500, times: int = 1) -> None:
        self.failures.append(Failure(method, pattern, status, times))

    # -- HTTP ------------------------------------------------------------------------------

    def _injected(self, method: str, path: str) -> int | None:
        with self.lock:
            for failure in self.failures:
                if (
                    failure.method == method
                    and failure.times > 0
                    and re.search(failure.pattern, path)
                ):
                    failure.times -= 1
                    return failure.status
        return None

    def _list(self, path: str, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        labels = dict(
            part.split("=", 1) for part in query.get("labelSelector", [""])[0].split(",") if part
        )
        fields = dict(
            part.split("=", 1) for part in query.get("fieldSelector", [""])[0].split(",") if part
        )
        # /apis/apps/v1/deployments lists every namespace's deployments.
        parts = path.split("/")
        resource = parts[-1]
        everywhere = "namespaces" not in parts[:-1] and resource not in ("namespaces", "nodes")
        with self.lock:
            items = []
            for key, item in sorted(self.store.items()):
                parent, _, _ = key.rpartition("/")
                if everywhere:
                    prefix = "/".join(parts[:-1]) + "/namespaces/"
                    if not (key.startswith(prefix) and parent.endswith("/" + resource)):
                        continue
                elif parent != path:
                    continue
                have = (item.get("metadata") or {}).get("labels") or {}
                if any(have.get(k) != v for k, v in labels.items()):
                    continue
                if "involvedObject.kind" in fields and (
                    (item.get("involvedObject") or {}).get("kind") != fields["involvedObject.kind"]
                ):
                    continue
                items.append(item)
        return items

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": reason,
                        "message": message,
                        "code": code,
                    },
                )

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length)) if length else {}

            def _common(self) -> tuple[str, dict[str, list[str]]] | None:
                split = urlsplit(self.path)
                path = split.path.rstrip("/")
                api.requests.append((self.command, path))
                if api.token is not None and (
                    self.headers.get("Authorization") != f"Bearer {api.token}"
                ):
                    self._body()
                    self._status(
                        403,
                        "Forbidden",
                        f'{path} is forbidden: User "system:anonymous" cannot '
                        f"{self.command.lower()} it",
                    )
                    return None
                status = api._injected(self.command, path)
                if status is not None:
                    self._body()  # drain it, or the next keep-alive request reads it
                    self._status(status, "InternalError", f"injected failure on {path}")
                    return None
                return path, parse_qs(split.query)

            def do_GET(self) -> None:
                common = self._common()
                if common is None:
                    return
                path, query = common
                if path in api.answers:
                    status, content_type, data = api.answers[path]()
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if path == "/version":
                    major, minor = api.version
                    self._send(
                        200,
                        {
                            "major": major,
                            "minor": minor,
                            "gitVersion": f"v{major}.{minor}.0",
                            "gitCommit": "0" * 40,
                            "gitTreeState": "clean",
                            "buildDate": "2026-01-01T00:00:00Z",
                            "goVersion": "go1.24",
                            "compiler": "gc",
                            "platform": "linux/amd64",
                        },
                    )
                    return
                item = api._read_item(path)
                if item is not None:
                    self._send(200, item)
                    return
                items = api._list(path, query)
                known = items or any(k.rpartition("/")[0] == path for k in api.store)
                collections = (
                    "pods",
                    "nodes",
                    "events",
                    "namespaces",
                    "deployments",
                    "services",
                    "configmaps",
                    "horizontalpodautoscalers",
                )
                missing = path.startswith("/apis/metrics.k8s.io") and not api.metrics_server
                if missing or (not known and path.rsplit("/", 1)[-1] not in collections):
                    self._status(404, "NotFound", f"{path} not found")
                    return
                self._send(
                    200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items}
                )

            def do_POST(self) -> None:
                common = self._common()
                if common is None:
                    return
                path, _ = common
                body = self._body()
                refused = api._admit(path)
                if refused is not None:
                    self._status(*refused)
                    return
                meta = body.setdefault("metadata", {})
                item_path = f"{path}/{meta['name']}"
                with api.lock:
                    if item_path in api.store:
                        exists = True
                    else:
                        exists = False
                        meta.setdefault("uid", f"uid-{next(api._uids)}")
                        meta.setdefault("creationTimestamp", _now())
                        meta["resourceVersion"] = "1"
                        api.store[item_path] = body
                if exists:
                    self._status(409, "AlreadyExists", f"{item_path} already exists")
                else:
                    self._send(201, body)

            def do_DELETE(self) -> None:
                common = self._common()
                if common is None:
                    return
                path, _ = common
                self._body()
                status, found = api._delete(path)
                if status == 404:
                    self._status(404, "NotFound", f"{path} not found")
                elif status != 200:
                    self._status(status, found["reason"], found["message"])
                else:  # the object comes back (a Namespace or a Service with finalizers too)
                    self._send(200, found)

        return Handler


# --- GKE ------------------------------------------------------------------------------------


@dataclass
class FakeGKE:
    """GKE's REST API: clusters, node pools and long-running operations, as strict as GKE is
    where the backend relies on it:

    - an operation stays RUNNING for ``operation_polls`` reads, then is DONE (its effect, such
      as a deleted cluster disappearing, happens then);
    - while an operation runs on a cluster, deleting it is a 400 FAILED_PRECONDITION
      ("Operation ... is currently creating cluster ... Please wait and try again once it is
      done."), as GKE answers;
    - creating a cluster that exists is a 409 ALREADY_EXISTS;
    - a request without ``Authorization: Bearer <token>`` is a 403 (None: no check).
    """

    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    operation_error: str | None = None
    operation_polls: int = 3
    token: str | None = "gke-t0ken"
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ops: Iterator[int] = field(default_factory=itertools.count)
    _pending: dict[str, tuple[int, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import container_v1
        from google.cloud.container_v1.services.cluster_manager.transports.rest import (
            ClusterManagerRestTransport,
        )
        from google.oauth2.credentials import Credentials

        credentials = AnonymousCredentials() if self.token is None else Credentials(self.token)
        transport = ClusterManagerRestTransport(
            host=self.host, credentials=credentials, url_scheme="http"
        )
        return container_v1.ClusterManagerClient(transport=transport)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail(self, method: str, pattern: str, status: int = 500, times: int = 1) -> None:
        self.failures.append(Failure(method, pattern, status, times))

    def running(self, cluster_path: str) -> list[dict[str, Any]]:
        """Operations not yet DONE on a cluster (or its node pools)."""
        return [
            op
            for key, op in self.operations.items()
            if op["status"] != "DONE" and op["_cluster"] == cluster_path
        ]

    def _operation(
        self, parent: str, kind: str, cluster_path: str, target: str, on_done: Any = None
    ) -> dict[str, Any]:
        name = f"operation-{next(self._ops)}"
        op: dict[str, Any] = {
            "name": name,
            "operationType": kind,
            "status": "RUNNING",
            "selfLink": f"https://container.googleapis.com/v1/{parent}/operations/{name}",
            "targetLink": f"https://container.googleapis.com/v1/{target}",
            "_cluster": cluster_path,
        }
        key = f"{parent}/operations/{name}"
        self.operations[key] = op
        self._pending[key] = (self.operation_polls, on_done)
        if self.operation_polls <= 0:
            self._finish(key)
        return op

    def _finish(self, key: str) -> None:
        op = self.operations[key]
        _, on_done = self._pending.pop(key)
        op["status"] = "DONE"
        if self.operation_error:
            op["error"] = {"code": 9, "message": self.operation_error}
        if on_done is not None:
            on_done()

    def _poll(self, key: str) -> dict[str, Any] | None:
        op = self.operations.get(key)
        if op is not None and key in self._pending:
            left, on_done = self._pending[key]
            self._pending[key] = (left - 1, on_done)
            if left - 1 <= 0:
                self._finish(key)
        return op

    @staticmethod
    def _public(op: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in op.items() if not k.startswith("_")}

    def _busy(self, cluster_path: str) -> str | None:
        """GKE's refusal while an operation runs on the cluster, or None."""
        for op in self.running(cluster_path):
            verb = {"CREATE_CLUSTER": "creating", "DELETE_CLUSTER": "deleting"}.get(
                op["operationType"], "updating"
            )
            name = cluster_path.rsplit("/", 1)[-1]
            return (
                f"Operation {op['selfLink']} is currently {verb} cluster {name}. "
                "Please wait and try again once it is done."
            )
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        gke = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, code: int, status: str, message: str) -> None:
                self._send(code, {"error": {"code": code, "status": status, "message": message}})

            def _start(self) -> tuple[str, dict[str, Any]] | None:
                path = urlsplit(self.path).path.removeprefix("/v1/")
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                gke.requests.append((self.command, path, body))
                if gke.token is not None and (
                    self.headers.get("Authorization") != f"Bearer {gke.token}"
                ):
                    self._error(
                        403,
                        "PERMISSION_DENIED",
                        "Request is missing required authentication credential.",
                    )
                    return None
                for failure in gke.failures:
                    if (
                        failure.method == self.command
                        and failure.times > 0
                        and re.search(failure.pattern, path)
                    ):
                        failure.times -= 1
                        self._error(failure.status, "INTERNAL", f"injected failure on {path}")
                        return None
                return path, body

            def do_GET(self) -> None:
                started = self._start()
                if started is None:
                    return
                path, _ = started
                with gke.lock:
                    if "/operations/" in path:
                        found = gke._poll(path)
                        found = gke._public(found) if found is not None else None
                    elif path.endswith("/operations"):
                        parent = path.removesuffix("/operations")
                        everywhere = parent.endswith("/locations/-")
                        ops = [
                            gke._public(op)
                            for key, op in gke.operations.items()
                            if everywhere or key.startswith(parent + "/")
                        ]
                        self._send(200, {"operations": ops})
                        return
                    elif path.endswith("/clusters"):
                        parent = path.removesuffix("/clusters")
                        everywhere = parent.endswith("/locations/-")
                        clusters = [
                            c
                            for key, c in gke.clusters.items()
                            if everywhere or key.startswith(parent + "/")
                        ]
                        self._send(200, {"clusters": clusters})
                        return
                    else:
                        found = gke.clusters.get(path)
                if found is None:
                    self._error(404, "NOT_FOUND", f"{path} not found")
                else:
                    self._send(200, found)

            def do_POST(self) -> None:
                started = self._start()
                if started is None:
                    return
                path, body = started
                parent = "/".join(path.split("/")[:4])
                with gke.lock:
                    if path.endswith("/clusters"):
                        cluster = body["cluster"]
                        key = f"{path}/{cluster['name']}"
                        if key in gke.clusters:
                            self._error(409, "ALREADY_EXISTS", f"Already exists: {key}.")
                            return
                        cluster.update(
                            status="PROVISIONING",
                            endpoint="127.0.0.1",
                            location=path.split("/")[3],
                            masterAuth={"clusterCaCertificate": "LS0tLS1CRUdJTg=="},
                            currentMasterVersion="1.33.5-gke.100",
                        )
                        for pool in cluster.get("nodePools", []):
                            # GKE fills in what was not sent (e.g. the location policy).
                            pool.setdefault("autoscaling", {}).setdefault(
                                "locationPolicy", "BALANCED"
                            )
                        gke.clusters[key] = cluster
                        op = gke._operation(
                            parent,
                            "CREATE_CLUSTER",
                            key,
                            key,
                            lambda c=cluster: c.update(status="RUNNING"),
                        )
                    elif path.endswith("/nodePools"):
                        key = path.removesuffix("/nodePools")
                        busy = gke._busy(key)
                        if busy:
                            self._error(400, "FAILED_PRECONDITION", busy)
                            return
                        cluster = gke.clusters[key]
                        cluster.setdefault("nodePools", []).append(body["nodePool"])
                        target = f"{key}/nodePools/{body['nodePool']['name']}"
                        op = gke._operation(parent, "CREATE_NODE_POOL", key, target)
                    elif path.endswith(":setAutoscaling"):
                        key, _, pool = path.removesuffix(":setAutoscaling").rpartition(
                            "/nodePools/"
                        )
                        busy = gke._busy(key)
                        if busy:
                            self._error(400, "FAILED_PRECONDITION", busy)
                            return
                        for p in gke.clusters[key]["nodePools"]:
                            if p["name"] == pool:
                                p["autoscaling"] = {
                                    "locationPolicy": "BALANCED",
                                    **body["autoscaling"],
                                }
                        op = gke._operation(
                            parent, "SET_NODE_POOL_SIZE", key, f"{key}/nodePools/{pool}"
                        )
                    else:
                        self._error(404, "NOT_FOUND", path)
                        return
                self._send(200, gke._public(op))

            def do_DELETE(self) -> None:
                started = self._start()
                if started is None:
                    return
                path, _ = started
                parent = "/".join(path.split("/")[:4])
                with gke.lock:
                    key = path.rpartition("/nodePools/")[0] if "/nodePools/" in path else path
                    if key not in gke.clusters:
                        self._error(404, "NOT_FOUND", f"{path} not found")
                        return
                    busy = gke._busy(key)
                    if busy:
                        self._error(400, "FAILED_PRECONDITION", busy)
                        return
                    if "/nodePools/" in path:
                        pool = path.rpartition("/nodePools/")[2]
                        cluster = gke.clusters[key]

                        def drop(c: dict[str, Any] = cluster, pool: str = pool) -> None:
                            c["nodePools"] = [p for p in c["nodePools"] if p["name"] != pool]

                        op = gke._operation(parent, "DELETE_NODE_POOL", key, path, drop)
                    else:
                        gke.clusters[key]["status"] = "STOPPING"
                        op = gke._operation(
                            parent,
                            "DELETE_CLUSTER",
                            key,
                            path,
                            lambda k=key: gke.clusters.pop(k, None),
                        )
                self._send(200, gke._public(op))

        return Handler
