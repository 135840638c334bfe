"""The local TF Serving REST stand-in: the API's shapes, its errors, seeded service times."""

from __future__ import annotations

import base64
import http.client
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from cloud.load import lab_image, lab_request_body, predict_path
from cloud.serve import (
    ProfileServable,
    RunningServer,
    SavedModelServable,
    profile_servable,
    start_server,
)
from sim.profile import profile_for


@pytest.fixture
def server() -> Iterator[RunningServer]:
    servable = profile_servable(
        "resnet101-tfserving", "e2-standard-4", name="image_classifier", seed=3, time_scale=0.01
    )
    running = start_server(servable, port=0)
    yield running
    running.close()


def call(
    running: RunningServer, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    host, port = running.server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    result = response.status, json.loads(response.read())
    conn.close()
    return result


def test_model_status_and_metadata(server: RunningServer) -> None:
    status, body = call(server, "GET", "/v1/models/image_classifier")
    assert status == 200
    assert body == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert call(server, "GET", "/v1/models/image_classifier/versions/1")[0] == 200
    status, meta = call(server, "GET", "/v1/models/image_classifier/metadata")
    assert status == 200 and meta["model_spec"]["name"] == "image_classifier"
    assert set(meta["metadata"]["signature_def"]) == {"serving_default", "serving_preprocess"}


def test_the_labs_request(server: RunningServer) -> None:
    body = json.loads(lab_request_body(lab_image()))
    assert body["signature_name"] == "serving_preprocess"
    assert base64.b64decode(body["instances"][0]["b64"])[:2] == b"\xff\xd8"  # a JPEG
    status, answer = call(server, "POST", predict_path("image_classifier"), body)
    assert status == 200
    (prediction,) = answer["predictions"]
    assert len(prediction["labels"]) == 5 and len(prediction["probabilities"]) == 5


def test_columnar_inputs(server: RunningServer) -> None:
    jpeg = base64.b64encode(b"\xff\xd8fake").decode()
    status, answer = call(
        server,
        "POST",
        "/v1/models/image_classifier:predict",
        {"inputs": {"bytes_inputs": [{"b64": jpeg}, {"b64": jpeg}]}},
    )
    assert status == 200 and len(answer["outputs"]["labels"]) == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "words"),
    [
        ("GET", "/v1/models/other", None, 404, "Servable not found for request: Latest(other)"),
        (
            "GET",
            "/v1/models/image_classifier/versions/7",
            None,
            404,
            "Specific(image_classifier, 7)",
        ),
        ("POST", "/v1/models/image_classifier:predict", b"{not json", 400, "JSON Parse error"),
        (
            "POST",
            "/v1/models/image_classifier:predict",
            {"signature_name": "x"},
            400,
            "Missing 'inputs' or 'instances'",
        ),
        (
            "POST",
            "/v1/models/image_classifier:predict",
            {"instances": [1], "inputs": [1]},
            400,
            "Not both",
        ),
        (
            "POST",
            "/v1/models/image_classifier:predict",
            {"instances": [{"b64": "@@@"}]},
            400,
            "base64",
        ),
        (
            "POST",
            "/v1/models/image_classifier:predict",
            {"signature_name": "nope", "instances": [1]},
            400,
            "not found in signature def",
        ),
        ("POST", "/v1/models/image_classifier:classify", {"examples": []}, 400, "predict only"),
        ("GET", "/v2/anything", None, 404, "Malformed request"),
    ],
)
def test_errors_are_json_with_the_status(
    server: RunningServer, method: str, path: str, body: Any, code: int, words: str
) -> None:
    status, answer = call(server, method, path, body)
    assert status == code and set(answer) == {"error"} and words in answer["error"]


def test_service_times_are_seeded_and_shaped_by_the_profile() -> None:
    profile = profile_for("resnet101-tfserving", "e2-standard-4")
    slept: list[float] = []
    one = ProfileServable(profile, seed=5, vcpus=4, sleep=slept.append)
    two = ProfileServable(profile, seed=5)
    draws = [one.service_time(1) for _ in range(2000)]
    assert draws[:50] == [two.service_time(1) for _ in range(50)]
    median = sorted(draws)[len(draws) // 2]
    assert median == pytest.approx(profile.alone_latency(), rel=0.03)
    # A lone pod's concurrency: its vCPUs over what one request keeps busy.
    assert one.workers == max(1, math.floor(4 / profile.parallelism))
    one.predict("serving_preprocess", {"bytes_inputs": [b"x", b"y"]}, 2)
    assert slept and slept[0] > 2 * profile.cpu_seconds_median / profile.parallelism * 0.7


def test_a_saved_model_is_served_with_real_inference(tmp_path: Any) -> None:
    tf = pytest.importorskip("tensorflow")

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="bytes_inputs")])
        def preprocess(self, bytes_inputs: Any) -> dict[str, Any]:
            return {
                "lengths": tf.strings.length(bytes_inputs),
                "head_bytes": tf.strings.substr(bytes_inputs, 0, 2),
            }

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def total(self, x: Any) -> dict[str, Any]:
            return {"y": tf.reduce_sum(x, axis=1)}

    model = Model()
    tf.saved_model.save(
        model,
        str(tmp_path / "base" / "3"),
        signatures={"serving_preprocess": model.preprocess, "serving_default": model.total},
    )
    running = start_server(SavedModelServable(tmp_path / "base", name="m"), port=0)
    try:
        jpeg = base64.b64encode(b"\xff\xd8jpeg").decode()
        status, answer = call(
            running,
            "POST",
            "/v1/models/m/versions/3:predict",
            {"signature_name": "serving_preprocess", "instances": [{"b64": jpeg}]},
        )
        head = base64.b64encode(b"\xff\xd8").decode()
        assert status == 200
        assert answer == {"predictions": [{"lengths": 6, "head_bytes": {"b64": head}}]}
        assert call(running, "POST", "/v1/models/m:predict", {"instances": [[1.0, 2.0]]}) == (
            200,
            {"predictions": [3.0]},
        )
        assert call(running, "POST", "/v1/models/m:predict", {"inputs": {"x": [[1.0, 2.0]]}}) == (
            200,
            {"outputs": {"y": [3.0]}},
        )
        status, error = call(running, "POST", "/v1/models/m:predict", {"instances": [["a", "b"]]})
        assert status == 400 and "error" in error
        status, meta = call(running, "GET", "/v1/models/m/metadata")
        signature = meta["metadata"]["signature_def"]["serving_preprocess"]
        assert signature["inputs"] == {"bytes_inputs": {"dtype": "DT_STRING"}}
        assert meta["model_spec"]["version"] == "3"
    finally:
        running.close()
