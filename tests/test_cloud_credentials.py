"""The GKE bearer token reaches the API server on every kubernetes client pyproject allows.

Clients 30.1 to 35.x read only ``api_key["authorization"]``, 36.0.0/36.0.1 only
``BearerToken``, later ones either. The check runs the real client in a child interpreter:
this venv's (the newest) and, where ``make test`` built it, ``.venv-oldest`` with the floor
(kubernetes 30.1.0). The fake API server answers 403 without ``Authorization: Bearer``.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloud_fakes import FakeKubeAPI

ROOT = Path(__file__).resolve().parents[1]
OLDEST = ROOT / ".venv-oldest" / "bin" / "python"
CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()

CHILD = """
import sys
from kubernetes import __version__, client as k8s
from cloud.credentials import gke_configuration

class Token:
    valid = True
    token = "t0ken"

config = gke_configuration("203.0.113.9", sys.argv[2], Token(), request=object())
config.host = sys.argv[1]
k8s.CoreV1Api(k8s.ApiClient(config)).list_namespace()
print(__version__)
"""


@pytest.fixture
def fake_api() -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI()
    yield api
    api.close()


def interpreters() -> list[object]:
    oldest = pytest.param(
        str(OLDEST),
        "30.1.0",
        marks=pytest.mark.skipif(
            not OLDEST.exists(), reason=".venv-oldest is absent: 'make test' builds it"
        ),
        id="oldest",
    )
    return [pytest.param(sys.executable, None, id="this-venv"), oldest]


@pytest.mark.parametrize(("python", "expected"), interpreters())
def test_the_token_is_sent_on_every_allowed_client(
    fake_api: FakeKubeAPI, python: str, expected: str | None
) -> None:
    done = subprocess.run(
        [python, "-c", CHILD, fake_api.url, CA],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    if expected is not None:
        assert done.stdout.strip() == expected
    assert ("GET", "/api/v1/namespaces") in fake_api.requests


def test_the_fake_refuses_anonymous_calls(fake_api: FakeKubeAPI) -> None:
    """Without the header the same call is a 403, as on GKE: the check above can fail."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    config = k8s.Configuration()
    config.host = fake_api.url
    with pytest.raises(ApiException) as raised:
        k8s.CoreV1Api(k8s.ApiClient(config)).list_namespace()
    assert raised.value.status == 403 and "system:anonymous" in str(raised.value.body)
