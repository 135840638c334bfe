"""Before anything is created: can the model be read, and is it a servable SavedModel?

TF Serving's ``--model_base_path`` holds one directory per version, named by a number, each
with a ``saved_model.pb`` (or ``.pbtxt``); with the default version policy it serves only the
highest number (tensorflow_serving/sources/storage_path/file_system_storage_path_source.proto,
``ServableVersionPolicy.Latest``). Warmup requests live in the version's
``assets.extra/tf_serving_warmup_requests``
(https://www.tensorflow.org/tfx/serving/saved_model_warmup).

The check lists the objects under the path with the user's own credentials through the Cloud
Storage JSON API (``GET /storage/v1/b/BUCKET/o?prefix=...``,
https://cloud.google.com/storage/docs/json_api/v1/objects/list). A run that skips it waits
for the model for ``model_ready_timeout`` (15 min by default) and only then tears down.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cloud.errors import CloudError

STORAGE_API = "https://storage.googleapis.com"
LIST_LIMIT = 5000
"""Objects listed at most (assumed ample: a SavedModel version holds a handful of files)."""
_VERSION = re.compile(r"^(\d+)/(saved_model\.pb(?:txt)?|assets\.extra/tf_serving_warmup_requests)$")


@dataclass(frozen=True)
class ModelLayout:
    """What a SavedModel base path holds: version -> it has a graph, it has warmup data."""

    path: str
    graphs: frozenset[int]
    warmup: frozenset[int]

    @property
    def latest(self) -> int | None:
        return max(self.graphs) if self.graphs else None


def split_gs(path: str) -> tuple[str, str]:
    """``gs://bucket/a/b/`` -> (``bucket``, ``a/b``)."""
    if not path.startswith("gs://"):
        raise ValueError(f"not a gs:// path: {path!r}")
    bucket, _, prefix = path.removeprefix("gs://").partition("/")
    if not bucket:
        raise CloudError(f"model path {path!r} names no bucket (expected gs://BUCKET/PATH)")
    return bucket, prefix.strip("/")


def layout(path: str, names: list[str]) -> ModelLayout:
    """Versions found among object names (relative to the base path)."""
    graphs: set[int] = set()
    warmup: set[int] = set()
    for name in names:
        match = _VERSION.match(name)
        if match:
            version = int(match.group(1))
            (warmup if match.group(2).startswith("assets") else graphs).add(version)
    return ModelLayout(path, frozenset(graphs), frozenset(warmup))


def list_objects(session: Any, path: str, base_url: str | None = None) -> list[str]:
    """Object names under ``path`` (relative to it), through an authorized ``requests`` session."""
    base_url = base_url or STORAGE_API
    bucket, prefix = split_gs(path)
    prefix = f"{prefix}/" if prefix else ""
    names: list[str] = []
    token: str | None = None
    while len(names) < LIST_LIMIT:
        params = {"prefix": prefix, "fields": "items(name),nextPageToken", "maxResults": 1000}
        if token:
            params["pageToken"] = token
        response = session.get(f"{base_url}/storage/v1/b/{bucket}/o", params=params, timeout=30)
        if response.status_code in (401, 403):
            raise CloudError(
                f"your Google credentials cannot list {path} (HTTP {response.status_code}): "
                "grant yourself roles/storage.objectViewer on the bucket, or check "
                "SCALELAB_MODEL_PATH"
            )
        if response.status_code == 404:
            raise CloudError(f"model path {path}: bucket {bucket!r} does not exist")
        if response.status_code != 200:
            raise CloudError(
                f"listing {path} failed: HTTP {response.status_code} {response.text[:200]}"
            )
        data = response.json()
        names += [item["name"][len(prefix) :] for item in data.get("items", [])]
        token = data.get("nextPageToken")
        if not token:
            break
    return names


def check_model(found: ModelLayout, *, model_version: str, warmup: bool) -> list[str]:
    """Raise when TF Serving could not serve what the load asks for; return warnings."""
    if not found.graphs:
        raise CloudError(
            f"model path {found.path} holds no SavedModel version directory "
            "(<path>/<number>/saved_model.pb); SCALELAB_MODEL_PATH must be the model's base "
            "path, e.g. gs://BUCKET/resnet_101 holding 1/saved_model.pb"
        )
    latest = found.latest
    if str(latest) != str(model_version):
        raise CloudError(
            f"model path {found.path}: TF Serving serves its highest version, {latest}, but the "
            f"load posts to version {model_version} (versions found: {sorted(found.graphs)})"
        )
    warnings = []
    if warmup and latest not in found.warmup:
        warnings.append(
            f"the scenario sets serving.warmup, but version {latest} at {found.path} has no "
            "assets.extra/tf_serving_warmup_requests: the real pods will start cold"
        )
    if not warmup and latest in found.warmup:
        warnings.append(
            f"version {latest} at {found.path} ships warmup requests, but the scenario does not "
            "set serving.warmup: the simulation assumed cold starts"
        )
    return warnings


def check_model_path(
    path: str,
    credentials: Any,
    *,
    model_version: str,
    warmup: bool,
    session: Any = None,
    base_url: str | None = None,
) -> list[str]:
    """The whole check for a gs:// path (warnings returned); other schemes are not checked."""
    if not path.startswith("gs://"):
        return [f"model path {path} is not on Cloud Storage: not checked before the run"]
    if session is None:
        from google.auth.transport.requests import AuthorizedSession

        session = AuthorizedSession(credentials)
    found = layout(path, list_objects(session, path, base_url))
    return check_model(found, model_version=model_version, warmup=warmup)
