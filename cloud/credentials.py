"""Cluster credentials without gcloud or a kubeconfig plugin.

For GKE: Application Default Credentials (``google.auth.default``), and the cluster's
endpoint and CA certificate from ``container_v1.Cluster`` (``endpoint``,
``master_auth.cluster_ca_certificate``), put into a ``kubernetes.client.Configuration``
whose ``refresh_api_key_hook`` renews the OAuth token before it expires, so runs longer than a
token's hour keep working. This is what ``gcloud container clusters get-credentials`` plus
the gke-gcloud-auth-plugin do (https://cloud.google.com/kubernetes-engine/docs/how-to/api-server-authentication).
For any other cluster: a kubeconfig, through the kubernetes client's own loader.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import tempfile
import threading
from typing import Any

from cloud.errors import CloudError, MissingDependencyError

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
BEARER_KEYS = ("authorization", "BearerToken")
"""Where kubernetes clients look for the bearer token (``Configuration.auth_settings``):
30.1 to 35.x read only ``authorization``, 36.0.0 and 36.0.1 only ``BearerToken``, 36.0.2 and
later either. Both are set, each with the ``Bearer`` prefix, so every allowed client sends
the Authorization header; without it GKE treats the calls as anonymous (403)."""

try:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
except ImportError as _err:  # pragma: no cover
    raise MissingDependencyError("kubernetes") from _err


def google_credentials(project: str | None = None) -> tuple[Any, str]:
    """ADC with the cloud-platform scope, and the project (given, or ADC's own)."""
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
    except ImportError as err:  # pragma: no cover
        raise MissingDependencyError("google-auth") from err
    try:
        credentials, detected = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except DefaultCredentialsError as err:
        raise CloudError(
            "no Google credentials: run 'gcloud auth application-default login' or set "
            f"GOOGLE_APPLICATION_CREDENTIALS ({err})"
        ) from None
    chosen = project or detected
    if not chosen:
        raise CloudError("no GCP project: set SCALELAB_GCP_PROJECT (or GOOGLE_CLOUD_PROJECT)")
    return credentials, chosen


class TokenRefresher:
    """A ``refresh_api_key_hook``: the kubernetes client calls it before every request; it
    refreshes the Google credentials once they are no longer ``valid`` (google-auth treats a
    token as invalid a few minutes before its expiry) and puts the token in the header."""

    def __init__(self, credentials: Any, request: Any = None) -> None:
        self.credentials = credentials
        self._request = request
        self._lock = threading.Lock()
        self.refreshes = 0

    def _transport(self) -> Any:
        if self._request is None:
            from google.auth.transport.requests import Request

            self._request = Request()
        return self._request

    def __call__(self, configuration: Any) -> None:
        with self._lock:
            if not self.credentials.valid:
                self.credentials.refresh(self._transport())
                self.refreshes += 1
            for key in BEARER_KEYS:
                configuration.api_key[key] = self.credentials.token


def _ca_file(ca_certificate_b64: str) -> str:
    pem = base64.b64decode(ca_certificate_b64)
    with tempfile.NamedTemporaryFile(prefix="scalelab-ca-", suffix=".crt", delete=False) as f:
        f.write(pem)
        name = f.name

    def remove(path: str = name) -> None:
        with contextlib.suppress(OSError):
            os.unlink(path)

    atexit.register(remove)
    return name


def gke_configuration(
    endpoint: str, ca_certificate_b64: str, credentials: Any, *, request: Any = None
) -> Any:
    """A kubernetes client Configuration for a GKE control plane (bearer token, its CA)."""
    if not endpoint or not ca_certificate_b64:
        raise CloudError("the cluster has no endpoint or CA certificate yet (still creating?)")
    configuration: Any = k8s.Configuration()
    configuration.host = f"https://{endpoint}"
    configuration.ssl_ca_cert = _ca_file(ca_certificate_b64)
    configuration.verify_ssl = True
    configuration.api_key_prefix = dict.fromkeys(BEARER_KEYS, "Bearer")
    hook = TokenRefresher(credentials, request)
    hook(configuration)
    configuration.refresh_api_key_hook = hook
    return configuration


def gke_api_client(cluster: Any, credentials: Any, *, request: Any = None) -> Any:
    """An ApiClient for a ``container_v1.Cluster``."""
    return k8s.ApiClient(
        gke_configuration(
            cluster.endpoint,
            cluster.master_auth.cluster_ca_certificate,
            credentials,
            request=request,
        )
    )


def kubeconfig_api_client(path: str | None = None, context: str | None = None) -> Any:
    """An ApiClient from a kubeconfig (``KUBECONFIG`` or ~/.kube/config), like kubectl."""
    try:
        return k8s_config.new_client_from_config(config_file=path, context=context)
    except (k8s_config.ConfigException, OSError, ValueError) as err:
        where = path or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise CloudError(
            f"cannot use kubeconfig {where} (context {context or 'current'}): {err}"
        ) from None
