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
from collections.abc import Iterator
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
    token: str | None = "t0ken"
    """Every request must carry ``Authorization: Bearer <token>``; GKE answers an anonymous
    call with 403 (system:anonymous has no RBAC rights). None: no check."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    _uids: Iterator[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

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
                item = api.get(path)
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
                with api.lock:
                    found = api.store.pop(path, None)
                if found is None:
                    self._status(404, "NotFound", f"{path} not found")
                else:  # like a Namespace or a Service with finalizers: the object comes back
                    self._send(200, found)

        return Handler


# --- GKE ------------------------------------------------------------------------------------


@dataclass
class FakeGKE:
    """GKE's REST API: clusters, node pools and operations (each DONE on its first poll)."""

    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    operation_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ops: Iterator[int] = field(default_factory=itertools.count)

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

        transport = ClusterManagerRestTransport(
            host=self.host, credentials=AnonymousCredentials(), url_scheme="http"
        )
        return container_v1.ClusterManagerClient(transport=transport)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail(self, method: str, pattern: str, status: int = 500, times: int = 1) -> None:
        self.failures.append(Failure(method, pattern, status, times))

    def _operation(self, parent: str, kind: str, target: str) -> dict[str, Any]:
        name = f"operation-{next(self._ops)}"
        op: dict[str, Any] = {
            "name": name,
            "operationType": kind,
            "status": "RUNNING",
            "targetLink": target,
        }
        done = {**op, "status": "DONE"}
        if self.operation_error:
            done["error"] = {"code": 9, "message": self.operation_error}
        self.operations[f"{parent}/operations/{name}"] = done
        return op

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
                        found = gke.operations.get(path)
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
                        cluster.update(
                            status="RUNNING",
                            endpoint="127.0.0.1",
                            location=path.split("/")[3],
                            masterAuth={"clusterCaCertificate": "LS0tLS1CRUdJTg=="},
                            currentMasterVersion="1.33.5-gke.100",
                        )
                        gke.clusters[f"{path}/{cluster['name']}"] = cluster
                        op = gke._operation(parent, "CREATE_CLUSTER", cluster["name"])
                    elif path.endswith("/nodePools"):
                        cluster = gke.clusters[path.removesuffix("/nodePools")]
                        cluster.setdefault("nodePools", []).append(body["nodePool"])
                        op = gke._operation(parent, "CREATE_NODE_POOL", body["nodePool"]["name"])
                    elif path.endswith(":setAutoscaling"):
                        cluster_path, _, pool = path.removesuffix(":setAutoscaling").rpartition(
                            "/nodePools/"
                        )
                        for p in gke.clusters[cluster_path]["nodePools"]:
                            if p["name"] == pool:
                                p["autoscaling"] = body["autoscaling"]
                        op = gke._operation(parent, "SET_NODE_POOL_SIZE", pool)
                    else:
                        self._error(404, "NOT_FOUND", path)
                        return
                self._send(200, op)

            def do_DELETE(self) -> None:
                started = self._start()
                if started is None:
                    return
                path, _ = started
                parent = "/".join(path.split("/")[:4])
                with gke.lock:
                    if "/nodePools/" in path:
                        cluster_path, _, pool = path.rpartition("/nodePools/")
                        pools = gke.clusters[cluster_path]["nodePools"]
                        gke.clusters[cluster_path]["nodePools"] = [
                            p for p in pools if p["name"] != pool
                        ]
                        op = gke._operation(parent, "DELETE_NODE_POOL", pool)
                    elif path in gke.clusters:
                        del gke.clusters[path]
                        op = gke._operation(parent, "DELETE_CLUSTER", path)
                    else:
                        self._error(404, "NOT_FOUND", f"{path} not found")
                        return
                self._send(200, op)

        return Handler
