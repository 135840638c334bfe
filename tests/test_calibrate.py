"""``scalelab calibrate``: fitting, the endpoint mode against a local fake TF Serving, the
derivation of a node profile, the CLI's errors, and a real calibration of a tiny Keras model."""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sim.calibrate import stats
from sim.calibrate.cli import register
from sim.calibrate.derive import derive, physical_cores
from sim.calibrate.host import slug
from sim.calibrate.payload import jpeg_size, rest_body
from sim.calibrate.worker import closed_loop
from sim.profile import load_profile, profile_from_dict
from tests.test_profile import synthetic

ROOT = Path(__file__).resolve().parents[1]
HAS_TF = importlib.util.find_spec("tensorflow") is not None
# A valid JPEG header is all the fake server and the payload code look at.
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffc0001108025802000301220002110103")
JPEG += b"\x11\x01\xff\xd9"


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """test harness"""

    register(app)
    return app


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli(), ["calibrate", *args])


# --- fitting -----------------------------------------------------------------------------------


def test_lognormal_fit_recovers_parameters_and_reports_its_error() -> None:
    rng = np.random.default_rng(3)
    samples = 0.25 * np.exp(0.1 * rng.standard_normal(4000))
    fit = stats.fit_lognormal(samples)
    assert fit.median == pytest.approx(0.25, rel=0.01)
    assert fit.sigma == pytest.approx(0.1, rel=0.05)
    assert fit.ks < 0.03
    skewed = stats.fit_lognormal(rng.uniform(1, 2, 4000))
    assert skewed.ks > fit.ks


def test_point_summarises_a_window() -> None:
    raw = stats.point(
        threads=2,
        concurrency=1,
        batch=1,
        latencies=[0.1, 0.2, 0.3, 0.4],
        cpu_s_per_request=0.5,
        repeat_medians=[0.2, 0.3],
    )
    assert raw["latency_s"][3] == pytest.approx(0.25)
    assert raw["spread"] == pytest.approx(0.1 / 0.25)
    assert raw["n"] == 4


def test_processor_sharing_fit_recovers_work_and_parallelism() -> None:
    truth = stats.SharingFit(1.2, 2.0, 0.03, 4.0, 0.0)
    observed = [(c, truth.latency(c)) for c in (1, 2, 4, 8)]
    fit = stats.fit_processor_sharing(observed, cores=4.0, overhead_s=0.03)
    assert fit.cpu_seconds == pytest.approx(1.2, rel=0.01)
    assert fit.parallelism == pytest.approx(2.0, abs=0.02)
    assert fit.rms_relative_error < 0.01
    with pytest.raises(ValueError, match="do not exceed the overhead"):
        stats.fit_processor_sharing([(1, 0.01)], cores=4.0, overhead_s=0.03)


class Sharing:
    """Two 'cores' shared fairly: a request takes 10 ms x max(1, in flight / 2)."""

    def __init__(self, service: float = 0.01, cores: int = 2) -> None:
        self.service, self.cores = service, cores
        self.lock = threading.Lock()
        self.active = 0
        self.calls = 0

    def __call__(self) -> None:
        with self.lock:
            self.active += 1
            self.calls += 1
            share = max(1.0, self.active / self.cores)
        time.sleep(self.service * share)
        with self.lock:
            self.active -= 1


def test_closed_loop_keeps_the_concurrency_and_drops_warm_up() -> None:
    call = Sharing()

    window = closed_loop(call, 4, seconds=0.2, repeats=2, min_requests=10, max_seconds=1.0)
    assert len(window.latencies) >= 10 and call.calls > len(window.latencies)
    # four callers on two cores: each request takes about twice the service time
    assert np.median(window.latencies) > 0.015
    assert len(window.repeat_medians) == 2
    assert window.background_cores is None or window.background_cores >= 0


def test_default_grids_follow_the_cores() -> None:
    from sim.calibrate.local import default_grid, grid_with

    quick, full = default_grid(quick=True, cpus=2), default_grid(quick=False, cpus=2)
    assert (quick.threads, quick.concurrency, quick.batch, quick.points) == (
        (1, 2),
        (1, 2),
        (1, 2),
        8,
    )
    assert (full.threads, full.concurrency, full.batch, full.points) == (
        (1, 2),
        (1, 2, 4),
        (1, 2, 4, 8),
        24,
    )
    assert default_grid(quick=False, cpus=16).threads == (1, 2, 4, 8, 16)
    assert default_grid(quick=False, cpus=6).threads == (1, 2, 4, 6)
    mine = grid_with(full, threads=[4, 1], seconds=20.0)
    assert mine.threads == (1, 4) and mine.max_seconds == 20.0 and mine.batch == full.batch


def test_host_slug() -> None:
    assert slug({"model_name": "AMD EPYC", "codename": "milan"}) == "amd-epyc-milan"
    xeon = {"model_name": "Intel(R) Xeon(R) Platinum 8273CL CPU @ 2.20GHz"}
    assert slug(xeon) == "intel-xeon-platinum-8273cl"
    assert slug({"model_name": "AMD EPYC 7B13 64-Core Processor"}) == "amd-epyc-7b13"


def test_lab_request_body() -> None:
    body = json.loads(rest_body(JPEG, batch=2))
    assert body["signature_name"] == "serving_preprocess"
    assert [base64.b64decode(i["b64"]) for i in body["instances"]] == [JPEG, JPEG]
    assert jpeg_size(JPEG) == (512, 600)
    assert jpeg_size(b"not a jpeg") is None


# --- derivation ----------------------------------------------------------------------------------


def test_derivation_scales_the_local_shape_to_the_observed_latency() -> None:
    local = profile_from_dict(synthetic())
    data = derive(local, machine="e2-standard-4", observed_latency=0.68, overhead=0.03)
    node = profile_from_dict(data)
    assert node.machine_type == "e2-standard-4" and node.kind == "derived"
    assert node.axes["threads"] == (1, 2, 3, 4)
    assert node.axes["concurrency"] == (1, 2, 4, 8)  # 4 vCPUs take twice a lone request's 2
    assert node.service(4).latency_median == pytest.approx(0.68)
    r = data["provenance"]["derivation"]["r"]
    assert r == pytest.approx(0.65 / local.service(2.0).latency_median)
    # 1 vCPU is one core; 4 vCPUs give a lone request 2 cores, and it burns 2 cores' time
    assert node.service(1).latency_median == pytest.approx(
        0.03 + r * local.service(1.0).latency_median
    )
    assert node.service(4).cpu_seconds_mean == pytest.approx(
        r * local.service(2.0).cpu_seconds_mean
    )
    assert node.service(3).latency_median == pytest.approx(node.service(4).latency_median)
    # two requests fill the 4 vCPUs without slowing each other; four load them like two locally
    assert node.service(4, 2).latency_median == pytest.approx(node.service(4).latency_median)
    assert node.service(4, 4).latency_median == pytest.approx(
        0.03 + r * local.service(2.0, 2).latency_median
    )
    assert "overhead_s 0.03" in " ".join(data["provenance"]["assumed"])


def test_hyperthreads_can_be_given_some_throughput() -> None:
    assert physical_cores(4, 4, 1.0, 2) == 2
    assert physical_cores(4, 4, 1.25, 2) == pytest.approx(2.5)
    assert physical_cores(1, 4, 1.25, 2) == 1
    local = profile_from_dict(synthetic(threads=(1, 2, 4)))
    node = profile_from_dict(derive(local, smt_gain=1.25))
    assert node.service(4).latency_median == pytest.approx(0.68)
    assert node.service(3).latency_median > node.service(4).latency_median


def test_derive_command_writes_the_node_profile(tmp_path: Path) -> None:
    source = tmp_path / "local.yaml"
    source.write_text(json.dumps(synthetic()))
    out = tmp_path / "node.yaml"
    done = invoke("--derive-from", str(source), "--machine-type", "e2-standard-4", "-o", str(out))
    assert done.exit_code == 0, done.output
    node = load_profile(out)
    assert node.provenance["command"] == (
        f"scalelab calibrate --out {out} --machine-type e2-standard-4 --derive-from {source}"
    )
    assert node.alone_latency() == pytest.approx(0.68, rel=1e-3)


# --- the command's errors ------------------------------------------------------------------------


def test_missing_tensorflow_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow -> ImportError
    done = invoke("--quick", "--out", str(tmp_path / "p.yaml"))
    assert done.exit_code == 2
    assert "pip install 'scalelab[calibrate]'" in done.output
    assert "Traceback" not in done.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threads", "1,x"], "comma-separated integers"),
        (["--endpoint", "http://127.0.0.1:9", "--derive-from", "x.yaml"], "pick one"),
        (["--endpoint", "http://127.0.0.1:9"], "needs --cores"),
        (["--endpoint", "ftp://example", "--cores", "4"], "http://HOST:8501"),
        (["--endpoint", "http://127.0.0.1:9", "--cores", "4"], "cannot reach"),
        (["--derive-from", "absent.yaml"], "cannot read profile"),
        (["--endpoint", "http://127.0.0.1:9", "--machine-type", "z9-mega"], "unknown machine"),
    ],
)
def test_errors_exit_2_without_a_traceback(args: list[str], message: str, tmp_path: Path) -> None:
    done = invoke(*args, "--image", str(ROOT / "pyproject.toml"), "-o", str(tmp_path / "p.yaml"))
    assert done.exit_code == 2, done.output
    assert message in done.output and "Traceback" not in done.output


# --- the endpoint mode against a fake TF Serving --------------------------------------------------


class FakeServing(BaseHTTPRequestHandler):
    """TF Serving's REST surface on two 'cores' shared fairly by 20 ms requests."""

    cores: ClassVar[Sharing] = Sharing(service=0.02)
    bodies: ClassVar[list[dict[str, Any]]] = []
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body wait out a delayed ACK (40 ms)

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/v1/models/image_classifier":
            self._send(200, {"model_version_status": [{"version": "1", "state": "AVAILABLE"}]})
        else:
            self._send(404, {"error": "Could not find any versions of model"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if len(FakeServing.bodies) < 3:
            FakeServing.bodies.append(body)
        if self.path != "/v1/models/image_classifier/versions/1:predict":
            self._send(404, {"error": "no such model"})
            return
        FakeServing.cores()
        top = {"labels": ["a"] * 5, "probabilities": [0.2] * 5}
        self._send(200, {"predictions": [top] * len(body["instances"])})


@pytest.fixture
def fake_serving() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeServing)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_endpoint_calibration_fits_what_it_observes(fake_serving: str, tmp_path: Path) -> None:
    image = tmp_path / "lab.jpg"
    image.write_bytes(JPEG)
    out = tmp_path / "cluster.yaml"
    args = ["--endpoint", fake_serving, "--model-version", "1", "--cores", "2"]
    args += ["--concurrency", "1,2,4", "--seconds", "0.3", "--repeats", "2"]
    args += ["--min-requests", "6", "--image", str(image), "--machine-type", "e2-standard-4"]
    done = invoke(*args, "-o", str(out), "--timeout", "5")
    assert done.exit_code == 0, done.output
    profile = load_profile(out)
    assert profile.kind == "endpoint" and profile.machine_type == "e2-standard-4"
    assert profile.axes == {"threads": (2.0,), "concurrency": (1.0, 2.0, 4.0), "batch": (1.0,)}
    body = FakeServing.bodies[0]
    assert body["signature_name"] == "serving_preprocess"
    assert base64.b64decode(body["instances"][0]["b64"]) == JPEG
    lone, four = profile.service(2), profile.service(2, 4)
    assert four.latency_median > 1.4 * lone.latency_median  # two callers wait for a core
    fit = profile.provenance["fit"]["batch_1"]
    assert fit["parallelism"] == pytest.approx(1.0, abs=0.35)
    assert profile.provenance["endpoint"].endswith("/v1/models/image_classifier/versions/1:predict")
    assert profile.model["outputs"] == ["labels", "probabilities"]
    assert 0 < profile.overhead_s < lone.latency_median


def test_endpoint_errors_are_reported(fake_serving: str, tmp_path: Path) -> None:
    image = tmp_path / "lab.jpg"
    image.write_bytes(JPEG)
    done = invoke(
        "--endpoint", fake_serving, "--model", "other", "--cores", "2",
        "--image", str(image), "-o", str(tmp_path / "p.yaml"),
    )  # fmt: skip
    assert done.exit_code == 2 and "HTTP 404" in done.output


# --- real calibrations -----------------------------------------------------------------------


def _calibrate(tmp_path: Path, *args: str, timeout: float) -> tuple[Path, Path]:
    out, export_dir = tmp_path / "profile.yaml", tmp_path / "model"
    command = [sys.executable, "-m", "sim.calibrate", "calibrate", "--out", str(out)]
    command += ["--export-dir", str(export_dir), *args]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wrote" in done.stdout
    return out, export_dir


@pytest.mark.skipif(not HAS_TF, reason="needs the calibrate extra (tensorflow-cpu)")
def test_tiny_model_calibration_end_to_end(tmp_path: Path) -> None:
    out, export_dir = _calibrate(
        tmp_path,
        "--model-arch", "tiny", "--threads", "1", "--concurrency", "1,2", "--batch", "1,2",
        "--seconds", "0.3", "--repeats", "2", "--min-requests", "5", "--max-seconds", "2",
        timeout=120,
    )  # fmt: skip
    assert (export_dir / "1" / "saved_model.pb").is_file()
    profile = load_profile(out)
    assert profile.kind == "measured" and profile.family == "tiny-cnn-cpu"
    assert len(profile.points) == 4
    assert profile.model["outputs"] == {"labels": [1, 5], "probabilities": [1, 5]}
    prov = profile.provenance
    assert prov["command"].startswith("scalelab calibrate --out")
    assert prov["tensorflow"]["version"] and prov["cpu"]["logical_cpus"] >= 1
    assert prov["payload"]["bytes"] > 0 and prov["date"]
    assert profile.model_load_s is not None and profile.cold_factor is not None
    for point in profile.points:
        assert point.n >= 5 and point.cpu_s_per_request > 0
    batch2 = profile.service(1, 1, 2)
    assert batch2.cpu_seconds_mean > profile.service(1, 1, 1).cpu_seconds_mean


@pytest.mark.resnet
@pytest.mark.skipif(not HAS_TF, reason="needs the calibrate extra (tensorflow-cpu)")
def test_resnet101_calibration_small_grid(tmp_path: Path) -> None:
    out, _ = _calibrate(
        tmp_path,
        "--threads", "1", "--concurrency", "1,2", "--batch", "1",
        "--seconds", "0.5", "--repeats", "1", "--min-requests", "2", "--max-seconds", "4",
        timeout=170,
    )  # fmt: skip
    profile = load_profile(out)
    assert profile.name.startswith("resnet101-cpu-")
    assert "ResNet101" in profile.model["architecture"]
    lone = profile.service(1)
    # ResNet101 is ~7.8 GFLOPs a 224x224 image: tenths of a second on one modern core
    assert 0.03 < lone.latency_median < 5
    assert lone.parallelism == pytest.approx(1.0, abs=0.3)
    assert profile.service(1, 2).latency_median > 1.3 * lone.latency_median
