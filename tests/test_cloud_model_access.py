"""The model check before a GKE run: the Cloud Storage JSON API's object listing, served on
127.0.0.1 and read through a real ``requests`` session, decides whether TF Serving could load
the path (a numbered version with saved_model.pb, the version the load posts to)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from cloud.errors import CloudError
from cloud.gke import GKEBackend
from cloud.model_access import check_model, check_model_path, layout, split_gs
from cloud.settings import CloudSettings
from sim.loader import load_scenario

ROOT = Path(__file__).resolve().parents[1]


class FakeStorage:
    """``GET /storage/v1/b/BUCKET/o?prefix=&pageToken=``: pages of two names; 403 for buckets
    in ``forbidden``; 404 for buckets it does not hold."""

    def __init__(self, buckets: dict[str, list[str]], forbidden: tuple[str, ...] = ()) -> None:
        self.buckets, self.forbidden = buckets, forbidden
        self.calls = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                fake.calls += 1
                split = urlsplit(self.path)
                bucket = split.path.split("/")[4]
                query = {k: v[0] for k, v in parse_qs(split.query).items()}
                code, body = 200, {}
                if bucket in fake.forbidden:
                    code, body = 403, {"error": {"code": 403, "message": "denied"}}
                elif bucket not in fake.buckets:
                    code, body = 404, {"error": {"code": 404, "message": "no bucket"}}
                else:
                    names = [n for n in fake.buckets[bucket] if n.startswith(query["prefix"])]
                    start = int(query.get("pageToken", 0))
                    body = {"items": [{"name": n} for n in names[start : start + 2]]}
                    if start + 2 < len(names):
                        body["nextPageToken"] = str(start + 2)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


MODEL = [
    "resnet_101/1/saved_model.pb",
    "resnet_101/1/variables/variables.index",
    "resnet_101/1/variables/variables.data-00000-of-00001",
    "resnet_101/1/assets.extra/tf_serving_warmup_requests",
    "resnet_101_other/2/saved_model.pb",
]


@pytest.fixture
def storage() -> Iterator[FakeStorage]:
    fake = FakeStorage({"lab": MODEL, "empty": ["resnet_101/README"]}, forbidden=("secret",))
    yield fake
    fake.close()


def check(storage: FakeStorage, path: str, **kwargs: Any) -> list[str]:
    options: dict[str, Any] = {"model_version": "1", "warmup": True, **kwargs}
    return check_model_path(path, None, session=requests.Session(), base_url=storage.url, **options)


def test_a_servable_path_passes_over_several_pages(storage: FakeStorage) -> None:
    assert check(storage, "gs://lab/resnet_101") == []
    assert storage.calls == 2  # four names under the prefix, two per page
    warned = check(storage, "gs://lab/resnet_101/", warmup=False)
    assert "ships warmup requests" in warned[0]


def test_each_way_a_real_run_would_wait_for_nothing_is_refused(storage: FakeStorage) -> None:
    with pytest.raises(CloudError, match=r"cannot list gs://secret/m .*objectViewer"):
        check(storage, "gs://secret/m")
    with pytest.raises(CloudError, match="bucket 'nobucket' does not exist"):
        check(storage, "gs://nobucket/m")
    with pytest.raises(CloudError, match="no SavedModel version directory"):
        check(storage, "gs://empty/resnet_101")
    with pytest.raises(CloudError, match="no SavedModel version directory"):
        check(storage, "gs://lab/resnet_101/1")  # the version dir, not the base path
    with pytest.raises(CloudError, match="highest version, 2, but the load posts to version 1"):
        check(storage, "gs://lab/resnet_101_other")
    assert "not checked" in check(storage, "/models/resnet")[0]


@given(st.sets(st.integers(0, 50), max_size=6), st.sets(st.integers(0, 50), max_size=6))
def test_the_version_served_is_the_highest_with_a_graph(graphs: set[int], others: set[int]) -> None:
    names = [f"{v}/saved_model.pb" for v in graphs]
    names += [f"{v}/variables/variables.index" for v in others]  # not a SavedModel alone
    found = layout("gs://b/m", names)
    assert found.graphs == graphs and found.latest == (max(graphs) if graphs else None)
    if graphs:
        latest = max(graphs)
        assert check_model(found, model_version=str(latest), warmup=False) == []
        if latest + 1 not in graphs:
            with pytest.raises(CloudError):
                check_model(found, model_version=str(latest + 1), warmup=False)


def test_split_gs() -> None:
    assert split_gs("gs://b/a/b/") == ("b", "a/b")
    with pytest.raises(CloudError, match="names no bucket"):
        split_gs("gs:///x")


def test_the_gke_backend_checks_before_creating_anything(
    storage: FakeStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloud.model_access as model_access

    monkeypatch.setattr(model_access, "STORAGE_API", storage.url)
    monkeypatch.setattr(
        "google.auth.transport.requests.AuthorizedSession", lambda _c: requests.Session()
    )
    said: list[str] = []
    backend = GKEBackend(
        load_scenario(ROOT / "scenarios" / "gsp777.yaml"),
        CloudSettings(project="p", model_path="gs://empty/resnet_101"),
        run_id="r",
        out=tmp_path,
        say=said.append,
        client=object(),
        credentials=object(),
    )
    with pytest.raises(CloudError, match="no SavedModel version directory"):
        backend.preflight()
    assert backend.ledger.entries == []
