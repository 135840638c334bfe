"""The local TF Serving REST stand-in: the API's shapes, its errors, seeded service times."""

from __future__ import annotations

import base64
import http.client
import json
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from cloud.load import lab_image, lab_request_body, predict_path
from cloud.serve import (
    ProfileServable,
    RestExecutor,
    RunningServer,
    SavedModelServable,
    knee,
    profile_servable,
    start_server,
)
from sim.serving.profile import (
    Profile,
    ProfileExtrapolationWarning,
    profile_for,
    profile_from_dict,
)
from tests.test_profile import synthetic


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


def knee_profile() -> Profile:
    """X(2, n) = 1, 1.8, 2.4, 2.5, 2.5 for n = 1..5 (a knee at 4: 2.4 < 0.97 x 2.5 <= 2.5)."""
    xs = {1: 1.0, 2: 1.8, 3: 2.4, 4: 2.5, 5: 2.5}
    return profile_from_dict(
        synthetic(
            threads=(2,),
            concurrency=(1, 2, 3, 4, 5),
            batch=(1, 4),
            throughput=lambda t, n: xs[n],
            sigma=0.2,
            overhead=0.03,
        )
    )


def test_service_times_are_seeded() -> None:
    profile = profile_for("resnet101-tfserving", "e2-standard-4")
    one, two = ProfileServable(profile, seed=5), ProfileServable(profile, seed=5)
    assert [one.service_time(1) for _ in range(50)] == [two.service_time(1) for _ in range(50)]
    assert ProfileServable(profile, seed=6).service_time(1) != one.service_time(1)


@pytest.mark.parametrize("in_service", [1, 2, 3, 5, 8])
def test_a_request_sleeps_its_share_of_the_throughput(in_service: int) -> None:
    """Mean sleep = overhead + n / X(c, n) (Little's law in a closed loop); a lone request's
    is the profile's alone latency, its median a lognormal's of that mean and sigma(c)."""
    profile = knee_profile()
    servable = ProfileServable(profile, seed=2, vcpus=2)
    draws = np.array([servable.service_time(1, in_service) for _ in range(20_000)])
    x = profile.throughput(2, min(in_service, 5))
    assert draws.mean() == pytest.approx(0.03 + in_service / x, rel=0.01)
    server = np.log(draws - 0.03)
    assert server.std() == pytest.approx(0.2, rel=0.03)
    if in_service == 1:
        assert draws.mean() == pytest.approx(profile.alone_latency(2), rel=0.01)
        assert np.median(draws) == pytest.approx(0.03 + math.exp(-0.02) / x, rel=0.01)


def test_a_request_of_several_instances_is_one_batch() -> None:
    profile = knee_profile()
    servable = ProfileServable(profile, seed=2, vcpus=2)
    draws = [servable.service_time(4) for _ in range(20_000)]
    cost = profile.batch_cost(2, 4)  # measured: 0.4 + 0.6 x 4
    assert cost == pytest.approx(2.8)
    assert float(np.mean(draws)) == pytest.approx(0.03 + cost / 1.0, rel=0.01)


def test_the_vcpus_pick_the_thread_count() -> None:
    profile = profile_from_dict(synthetic(threads=(1, 4), sigma=lambda t: 0.1 * t))
    for vcpus in (1, 2, 4):
        servable = ProfileServable(profile, vcpus=vcpus, seed=1)
        assert servable.sigma == pytest.approx(profile.sigma(vcpus))
        draws = [servable.service_time(1) for _ in range(5000)]
        assert float(np.mean(draws)) == pytest.approx(profile.alone_latency(vcpus), rel=0.02)


def test_workers_default_to_the_knee_of_the_throughput() -> None:
    profile = knee_profile()
    assert knee(profile, 2) == 4
    assert ProfileServable(profile, vcpus=2).workers == 4
    assert ProfileServable(profile, vcpus=2, workers=7).workers == 7
    flat = profile_from_dict(synthetic(threads=(2,), throughput=lambda t, n: 1.0))
    assert knee(flat, 2) == 1  # no gain from concurrency: one at a time
    # beyond the measured threads a server acts as copies: their ladders end further out
    linear = profile_from_dict(synthetic(threads=(1, 2), throughput=lambda t, n: t * min(n, 2)))
    with pytest.warns(ProfileExtrapolationWarning, match="threads_above"):
        assert knee(linear, 4) == 4  # two copies of two
    assert knee(linear, 2) == 2


def test_requests_in_service_are_counted_and_capped_at_workers() -> None:
    profile = knee_profile()
    gate = threading.Barrier(3, timeout=5)
    seen: list[int] = []

    class Counting(ProfileServable):
        def service_time(self, rows: int, in_service: int = 1) -> float:
            seen.append(in_service)
            return super().service_time(rows, in_service)

    def together(_: float) -> None:
        gate.wait()

    servable = Counting(profile, vcpus=2, workers=3, sleep=together)
    threads = [
        threading.Thread(target=servable.predict, args=("x", {"bytes_inputs": [b"x"]}, 1))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sorted(seen) == [1, 2, 3]  # all three in service at once, each counted
    assert servable._in_service == 0  # and released

    busy: list[int] = []

    def hold(_: float) -> None:
        busy.append(capped._in_service)
        time.sleep(0.02)

    capped = ProfileServable(profile, vcpus=2, workers=2, sleep=hold)
    threads = [
        threading.Thread(target=capped.predict, args=("x", {"bytes_inputs": [b"x"]}, 1))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(busy) == 6 and max(busy) <= 2


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


def test_keep_alive_responses_do_not_wait_out_a_delayed_ack() -> None:
    """Headers and body are two writes: with Nagle's algorithm on, the body waited for the
    client's delayed ACK, and every request after the first on a connection took 40 ms more."""
    from tests.test_cloud_ladder import FixedServable

    running = start_server(FixedServable(0.02, workers=1), port=0)
    body = json.dumps({"signature_name": "serving_preprocess", "instances": [{"b64": "aGk="}]})
    connection = http.client.HTTPConnection("127.0.0.1", running.server.server_address[1])
    times = []
    try:
        for _ in range(6):
            started = time.perf_counter()
            connection.request("POST", predict_path("image_classifier", "1"), body)
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200
            times.append(time.perf_counter() - started)
    finally:
        connection.close()
        running.close()
    assert sorted(times)[3] < 0.02 + 0.025, times  # the median of the keep-alive ones


def test_the_rest_executor_hands_threads_over_in_arrival_order() -> None:
    """One handler thread held by A; B, C, D queue. Each release hands the thread to the
    oldest waiting, and a request arriving just as it is handed over (E, before B has even
    woken) queues behind it: a semaphore would have let E take it and sent B to the back."""
    executor = RestExecutor(1)
    release = {name: threading.Event() for name in "ABCDE"}
    got: list[str] = []

    def request(name: str) -> None:
        with executor:
            got.append(name)
            release[name].wait(5)

    def until(check: Any) -> None:
        deadline = time.monotonic() + 5
        while not check() and time.monotonic() < deadline:
            time.sleep(0.001)

    for i, name in enumerate("ABCD"):
        threading.Thread(target=request, args=(name,), daemon=True).start()
        until(lambda i=i: len(got) + len(executor._waiting) > i)
    assert got == ["A"] and len(executor._waiting) == 3
    with executor._lock:  # B is handed the thread but cannot run before E arrives
        release["A"].set()
        threading.Thread(target=request, args=("E",), daemon=True).start()
        time.sleep(0.05)
    for name, served in (("A", 2), ("B", 3), ("C", 4), ("D", 5)):
        release[name].set()
        until(lambda served=served: len(got) >= served)
    release["E"].set()
    assert got == ["A", "B", "C", "D", "E"]


def test_the_rest_executor_serves_every_request_and_at_most_its_threads_at_once() -> None:
    executor = RestExecutor(3)
    lock, busy, peak, served = threading.Lock(), [0], [0], [0]

    def request() -> None:
        with executor:
            with lock:
                busy[0] += 1
                peak[0] = max(peak[0], busy[0])
            time.sleep(0.002)
            with lock:
                busy[0] -= 1
                served[0] += 1

    threads = [threading.Thread(target=request) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert served[0] == 40 and peak[0] == 3
    assert executor._free == 3 and not executor._waiting
