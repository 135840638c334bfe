"""``--cpu-pod``: a pod's CPU through the Kubernetes API, from the kubelet's counter (node proxy)
or metrics.k8s.io PodMetrics, against the project's fake API server on 127.0.0.1 serving a
pod whose true CPU counter is known; quantity, duration and time parsing; the rebuilt counter;
errors in ``scalelab calibrate --endpoint``."""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client as k8s
from kubernetes.utils import parse_quantity as upstream_quantity
from typer.testing import CliRunner

from sim.cli import app
from sim.serving.calibrate import podcpu
from sim.serving.calibrate.cpu import CpuError
from sim.serving.calibrate.podcpu import (
    CounterSample,
    Integral,
    PodCpu,
    RateSample,
    kubelet_sample,
    parse_duration,
    parse_quantity,
    parse_time,
    split_pod,
    window_too_short,
)
from tests.cloud_fakes import FakeKubeAPI
from tests.test_calibrate import fake_serving, image, invoke, written  # noqa: F401

NODE = "gke-lab-pool-1"
METRICS = "/apis/metrics.k8s.io/v1beta1/namespaces/lab/pods/server"
KUBELET = f"/api/v1/nodes/{NODE}/proxy/metrics/resource"


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250m", Decimal("0.25")),
        ("123456789n", Decimal("0.123456789")),
        ("1500u", Decimal("0.0015")),
        ("2", Decimal(2)),
        ("1.5", Decimal("1.5")),
        ("0", Decimal(0)),
        ("2Ki", Decimal(2048)),
        ("1e3", Decimal(1000)),
        ("5E-3", Decimal("0.005")),
        (".5", Decimal("0.5")),
        ("5.", Decimal(5)),
        ("+1k", Decimal(1000)),
    ],
)
def test_quantities(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "m", "1.2.3", "1Kb", "cpu", "1 m", "1e", "--1", "0x10"])
def test_bad_quantities_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


SUFFIXES = ["n", "u", "m", "", "k", "M", "G", "Ki", "Mi", "Gi", "e3", "E-2", "e0"]


@given(
    sign=st.sampled_from(["", "+", "-"]),
    whole=st.integers(0, 10**12),
    fraction=st.one_of(st.none(), st.integers(0, 10**9)),
    suffix=st.sampled_from(SUFFIXES),
)
def test_quantities_agree_with_the_kubernetes_client(
    sign: str, whole: int, fraction: int | None, suffix: str
) -> None:
    text = f"{sign}{whole}" + ("" if fraction is None else f".{fraction}") + suffix
    assert parse_quantity(text) == upstream_quantity(text)


@given(nanocores=st.integers(0, 64 * 10**9))
def test_metrics_server_nanocores_round_trip(nanocores: int) -> None:
    """metrics-server writes NewScaledQuantity(cores in n, -9) (pkg/storage/types.go)."""
    assert parse_quantity(f"{nanocores}n") * 10**9 == nanocores


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15s", 15.0),
        ("1m0.5s", 60.5),
        ("14.907ms", 0.014907),
        ("0s", 0.0),
        ("0", 0.0),
        ("1h2m3.5s", 3723.5),
        ("500us", 0.0005),
        ("250µs", 0.00025),
        ("30ns", 3e-8),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "15", "s", "1x", "1m 5s", "-1s"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a Go duration"):
        parse_duration(text)


@given(h=st.integers(0, 50), m=st.integers(0, 59), ms=st.integers(0, 59_999))
def test_go_duration_parts_add_up(h: int, m: int, ms: int) -> None:
    text = (f"{h}h" if h else "") + (f"{m}m" if h or m else "") + f"{ms / 1000:g}s"
    assert parse_duration(text) == pytest.approx(3600 * h + 60 * m + ms / 1000)


def test_times() -> None:
    assert parse_time("2026-01-01T00:00:00Z") == dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    assert parse_time("2026-01-01T00:00:00.25Z") % 1 == pytest.approx(0.25)
    for bad in ("2026-01-01T00:00:00", "yesterday", ""):
        with pytest.raises(ValueError, match="RFC 3339"):
            parse_time(bad)


@pytest.mark.parametrize("text", ["server", "lab/", "/server", "Lab/server", "lab/server/x"])
def test_pod_must_be_namespace_slash_name(text: str) -> None:
    with pytest.raises(CpuError, match="NAMESPACE/POD"):
        split_pod(text)


def test_kubelet_text_is_filtered_to_the_pod() -> None:
    text = (
        "# TYPE container_cpu_usage_seconds_total counter\n"
        'container_cpu_usage_seconds_total{container="a",namespace="lab",pod="server"} 2.5 1000\n'
        'container_cpu_usage_seconds_total{container="b",namespace="lab",pod="server"} 1 2000\n'
        'container_cpu_usage_seconds_total{container="a",namespace="lab",pod="other"} 9 2000\n'
        'container_cpu_usage_seconds_total{container="a",namespace="x",pod="server"} 9 2000\n'
        "# TYPE pod_cpu_usage_seconds_total counter\n"
        'pod_cpu_usage_seconds_total{namespace="lab",pod="server"} 99 2000\n'
    )
    assert kubelet_sample(text, "lab", "server", "k") == CounterSample(timestamp=2.0, seconds=3.5)
    assert kubelet_sample(text, "lab", "absent", "k") is None
    with pytest.raises(CpuError, match="without a timestamp"):
        kubelet_sample(text.replace(" 1000\n", "\n").replace(" 2000\n", "\n"), "lab", "server", "k")


# --- the rebuilt counter (pure) --------------------------------------------------------------


@given(
    windows=st.lists(st.floats(0.5, 60), min_size=1, max_size=30),
    rates=st.lists(st.floats(0, 64), min_size=30, max_size=30),
    repeats=st.lists(st.integers(1, 3), min_size=30, max_size=30),
)
def test_rates_times_windows_rebuild_the_counter(
    windows: list[float], rates: list[float], repeats: list[int]
) -> None:
    """Adjacent PodMetrics windows, each polled once or more: the rebuilt figure is the true
    counter's difference (metrics-server's rate is that difference over the window)."""
    integral, at, counter = Integral(), 1000.0, 0.0
    integral.add(RateSample(at, 15.0, 0.1), 0.0, at)
    for k, window in enumerate(windows):
        at += window
        counter += rates[k] * window
        for _ in range(repeats[k]):  # duplicates by timestamp are ignored
            integral.add(RateSample(at, window, rates[k]), at - 1000, at + 0.5)
    assert integral.total == pytest.approx(counter, rel=1e-9, abs=1e-9)
    assert integral.samples == len(windows) + 1 and integral.gaps == 0
    assert integral.value(integral.seen_at) == pytest.approx(counter, rel=1e-9, abs=1e-9)


def test_a_missed_sample_is_filled_at_the_next_rate() -> None:
    integral = Integral()
    integral.add(RateSample(100.0, 15.0, 1.0), 0.0, 100.0)
    integral.add(RateSample(130.0, 15.0, 2.0), 30.0, 130.0)  # (100, 115] never seen
    assert integral.gaps == 1 and integral.total == pytest.approx(60.0)
    integral.add(RateSample(145.0, 15.0, 1.0), 45.0, 145.0)
    assert integral.gaps == 1 and integral.total == pytest.approx(75.0)


def test_counter_samples_restarts_and_carrying_forward() -> None:
    integral = Integral()
    assert integral.add(CounterSample(10.0, 100.0), 0.0, 10.0)
    assert integral.add(CounterSample(20.0, 115.0), 10.0, 10.2)
    assert not integral.add(CounterSample(20.0, 115.0), 11.0, 21.0)  # the same sample again
    assert not integral.add(CounterSample(15.0, 110.0), 12.0, 22.0)  # older than the newest
    assert integral.total == 15.0 and integral.rate == pytest.approx(1.5)
    # carried forward at 1.5 cores from when the sample arrived (local t=10)
    assert integral.value(14.0) == pytest.approx(15.0 + 1.5 * 4)
    integral.add(CounterSample(30.0, 4.0), 20.0, 30.0)  # the container restarted
    assert integral.restarts == 1 and integral.total == pytest.approx(19.0)
    assert integral.resolution == 10.0


def test_window_rule() -> None:
    assert window_too_short(60, 15, "--seconds") is None
    assert window_too_short(1, 0, "--seconds") is None  # exact sources
    why = window_too_short(30, 15, "--seconds")
    assert why is not None and "--seconds 60" in why and "25%" in why


# --- the source against a fake API server ----------------------------------------------------


def go_duration(seconds: float) -> str:
    """metav1.Duration as Go writes it for sub-minute windows (``200ms``, ``15s``)."""
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class FakePod:
    """A pod whose containers burn ``rate`` cores (changeable); the kubelet refreshes its stats
    every ``resolution`` s and metrics-server turns the last two into a rate, as upstream."""

    resolution: float = 0.1
    rate: float = 1.5
    sidecar: float = 0.05
    began: float = field(default_factory=time.time)
    history: list[tuple[float, float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.history.append((self.began, 0.0, self.rate))

    def set_rate(self, rate: float) -> None:
        with self.lock:
            now = time.time()
            self.history.append((now, self.counter(now), rate))

    def counter(self, t: float) -> float:
        earlier = [h for h in self.history if h[0] <= t] or self.history[:1]  # before: extend
        since, base, rate = earlier[-1]
        return base + rate * (t - since)

    def stat_time(self, t: float) -> float:
        k = int((t - self.began) / self.resolution)
        return self.began + k * self.resolution

    def kubelet(self) -> tuple[int, str, bytes]:
        with self.lock:
            at = self.stat_time(time.time())
            serving = self.counter(at)
        ms = round(at * 1000)
        lines = [
            "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by "
            "the container in core-seconds",
            "# TYPE container_cpu_usage_seconds_total counter",
            f'container_cpu_usage_seconds_total{{container="serving",namespace="lab",'
            f'pod="server"}} {serving:.9f} {ms}',
            f'container_cpu_usage_seconds_total{{container="istio-proxy",namespace="lab",'
            f'pod="server"}} {self.sidecar * (at - self.began):.9f} {ms}',
            'container_cpu_usage_seconds_total{container="x",namespace="lab",pod="other"} 7 '
            f"{ms}",
        ]
        return 200, "text/plain; version=0.0.4", ("\n".join(lines) + "\n").encode()

    def pod_metrics(self) -> tuple[int, str, bytes]:
        with self.lock:
            last = self.stat_time(time.time())
            prev = last - self.resolution
            window = last - prev
            serving = (self.counter(last) - self.counter(prev)) / window
        body = {
            "kind": "PodMetrics",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {"name": "server", "namespace": "lab"},
            "timestamp": rfc3339(last),
            "window": go_duration(window),
            "containers": [
                {"name": "serving", "usage": {"cpu": f"{int(serving * 1e9)}n", "memory": "1Gi"}},
                {"name": "istio-proxy", "usage": {"cpu": f"{int(self.sidecar * 1e9)}n"}},
            ],
        }
        return 200, "application/json", json.dumps(body).encode()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeKubeAPI, FakePod, Path]]:
    api = FakeKubeAPI()
    pod = FakePod()
    api.put(
        "/api/v1/namespaces/lab/pods/server",
        k8s.V1Pod(
            api_version="v1",
            kind="Pod",
            metadata=k8s.V1ObjectMeta(name="server", namespace="lab"),
            spec=k8s.V1PodSpec(node_name=NODE, containers=[]),
            status=k8s.V1PodStatus(phase="Running"),
        ),
    )
    api.answers[KUBELET] = pod.kubelet
    api.answers[METRICS] = pod.pod_metrics
    try:
        yield api, pod, api.kubeconfig(tmp_path / "kubeconfig")
    finally:
        api.close()


def assert_cores(source: PodCpu, seconds: float, true: float) -> None:
    """Cores over ``seconds``, read as the callers read it after the source's lag, are the
    true figure within the stated bound: the rebuilt counter follows the pod delayed by each
    sample's arrival, so a difference is off by at most ``true x`` the delays' spread."""
    time.sleep(source.lag_s)
    a, t0 = source.seconds(), time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    cores = (source.seconds() - a) / elapsed
    spread = source.provenance()["arrival_delay_spread_s"]
    assert abs(cores - true) <= true * spread / elapsed + 0.01, (cores, true, spread)


def test_the_kubelet_counter_is_preferred(cluster: tuple[FakeKubeAPI, FakePod, Path]) -> None:
    api, pod, kubeconfig = cluster
    source = PodCpu("lab/server", kubeconfig, poll_s=0.02)
    try:
        assert source.source == "kubelet" and source.node == NODE
        assert source.resolution_s == pytest.approx(pod.resolution, rel=0.05)
        assert_cores(source, 1.0, 1.55)  # both containers
        pod.set_rate(0.5)  # the load drops: the figure follows after lag_s
        assert_cores(source, 1.0, 0.55)
        record = source.provenance()
        assert record["source"] == "kubelet" and record["samples"] > 10
        assert "kubelet_not_used" not in record
        assert "container_cpu_usage_seconds_total of pod lab/server" in source.description
    finally:
        source.close()
    assert ("GET", METRICS) not in api.requests


def test_metrics_api_when_the_node_proxy_is_forbidden(
    cluster: tuple[FakeKubeAPI, FakePod, Path],
) -> None:
    api, pod, kubeconfig = cluster
    api.fail("GET", "/proxy/metrics/resource$", status=403)
    source = PodCpu("lab/server", kubeconfig, poll_s=0.02)
    try:
        assert source.source == "metrics.k8s.io"
        assert_cores(source, 1.0, 1.55)
        assert "HTTP 403" in source.description and "metrics.k8s.io/v1beta1" in source.description
        record = source.provenance()
        assert record["source"] == "metrics.k8s.io" and "HTTP 403" in record["kubelet_not_used"]
        assert record["missed_samples_filled"] == 0
        assert record["resolution_s"] == pytest.approx(pod.resolution, rel=0.05)
    finally:
        source.close()


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        ("lab/nope", "pod lab/nope: the API server http://127.0.0.1:"),
        ("gone/server", "pod gone/server: the API server http://127.0.0.1:"),
    ],
)
def test_a_missing_pod_names_it_and_the_answer(
    cluster: tuple[FakeKubeAPI, FakePod, Path], pod: str, message: str
) -> None:
    _, _, kubeconfig = cluster
    with pytest.raises(CpuError, match=message) as caught:
        PodCpu(pod, kubeconfig, poll_s=0.02)
    assert "HTTP 404" in str(caught.value) and "not found" in str(caught.value)


def test_no_metrics_server_and_no_node_proxy(cluster: tuple[FakeKubeAPI, FakePod, Path]) -> None:
    api, _, kubeconfig = cluster
    del api.answers[METRICS]
    api.metrics_server = False
    api.fail("GET", "/proxy/metrics/resource$", status=403)
    with pytest.raises(CpuError, match=r"metrics.k8s.io.*HTTP 404.*metrics-server installed"):
        PodCpu("lab/server", kubeconfig, poll_s=0.02)


def test_a_pod_that_is_not_running(cluster: tuple[FakeKubeAPI, FakePod, Path]) -> None:
    api, _, kubeconfig = cluster
    api.put(
        "/api/v1/namespaces/lab/pods/pending",
        {
            "kind": "Pod",
            "metadata": {"name": "pending"},
            "spec": {"containers": []},
            "status": {"phase": "Pending"},
        },
    )
    with pytest.raises(CpuError, match="lab/pending is Pending on no node"):
        PodCpu("lab/pending", kubeconfig)


def test_too_few_samples_in_time(cluster: tuple[FakeKubeAPI, FakePod, Path]) -> None:
    _, pod, kubeconfig = cluster
    pod.resolution = 3600.0  # the stats never move on within the wait
    with pytest.raises(CpuError, match="1 distinct sample of lab/server's CPU in 0 s"):
        PodCpu("lab/server", kubeconfig, poll_s=0.02, startup_timeout=0.2)


def test_a_bad_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(CpuError, match=r"cannot use kubeconfig .*absent"):
        PodCpu("lab/server", tmp_path / "absent")


def test_without_the_kubernetes_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    with pytest.raises(CpuError, match=r"pip install 'scalelab\[gke\]'"):
        PodCpu("lab/server", tmp_path / "kubeconfig")


# --- scalelab calibrate --endpoint --cpu-pod -------------------------------------------------


WINDOW = ["--repeats", "2", "--min-requests", "6", "--max-seconds", "1.0"]
WINDOW += ["--idle-rounds", "0"]  # ~20 s of lone requests: the pod source reads no per-request CPU


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake kubelet refreshes every 0.1 s, not 10-15 s: poll it as often, relatively."""
    monkeypatch.setattr(podcpu, "STARTUP_POLL_S", 0.02)
    monkeypatch.setattr(podcpu, "POLL_BOUNDS_S", (0.02, 5.0))


def test_calibrate_with_a_pod_source(
    cluster: tuple[FakeKubeAPI, FakePod, Path],
    fake_serving: str,  # noqa: F811
    image: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    _, pod, kubeconfig = cluster
    out = tmp_path / "gke.yaml"
    args = ["--endpoint", fake_serving, "--cores", "2", "--concurrency", "1,2", *WINDOW]
    args += ["--seconds", "0.6", "--image", str(image), "-o", str(out)]
    done = invoke(*args, "--cpu-pod", "lab/server", "--kubeconfig", str(kubeconfig))
    assert done.exit_code == 0, done.output
    data = written(out)
    for p in data["points"]:
        assert p["cpu_cores"] == pytest.approx(1.55, rel=0.15), p
    assert data["defaults"]["idle_cpu_cores"] == pytest.approx(1.55, rel=0.05)
    method = data["provenance"]["method"]
    assert method["cpu"].startswith("measured: the kubelet's container_cpu_usage_seconds_total")
    assert method["idle_cpu_cores"].startswith("measured: the newest sample")
    record = data["provenance"]["cpu_source"]
    assert record["source"] == "kubelet" and record["pod"] == "lab/server"
    assert record["resolution_s"] == pytest.approx(pod.resolution, rel=0.05)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cpu-pod", "lab/nope"], "--cpu-pod lab/nope: pod lab/nope: the API server"),
        (["--cpu-pod", "nope"], "must be NAMESPACE/POD"),
        (["--cpu-pod", "lab/server", "--seconds", "0.2"], "--seconds 0.2 is shorter than 4"),
        (["--cpu-pod", "lab/server", "--cpu-pid", "1"], "pick one"),
        (["--context", "other"], "say where --cpu-pod's pod is"),
    ],
)
def test_calibrate_pod_errors_exit_2_and_write_nothing(
    cluster: tuple[FakeKubeAPI, FakePod, Path],
    fake_serving: str,  # noqa: F811
    image: Path,  # noqa: F811
    tmp_path: Path,
    extra: list[str],
    message: str,
) -> None:
    _, _, kubeconfig = cluster
    out = tmp_path / "p.yaml"
    args = ["--endpoint", fake_serving, "--cores", "2", "--image", str(image), "-o", str(out)]
    done = invoke(*args, "--kubeconfig", str(kubeconfig), *extra)
    assert done.exit_code == 2, done.output
    assert message in " ".join(done.output.split()), done.output
    assert "Traceback" not in done.output and not out.exists()
    if "nope" in extra[-1] and "/" in extra[-1]:
        assert "HTTP 404" in done.output and "not found" in done.output


def test_cpu_pod_needs_an_endpoint(tmp_path: Path) -> None:
    done = invoke("--cpu-pod", "lab/server", "-o", str(tmp_path / "p.yaml"))
    assert done.exit_code == 2 and "CPU source of an --endpoint" in done.output


# --- scalelab fidelity --endpoint --cpu-pod ---------------------------------------------------


class TinyServing(BaseHTTPRequestHandler):
    """Just enough TF Serving for fidelity's endpoint check (status, one predict)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, payload: dict[str, object]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send({"model_version_status": [{"version": "1", "state": "AVAILABLE"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send({"predictions": [{"labels": ["a"], "probabilities": [1.0]}]})


@pytest.fixture
def tiny_serving() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), TinyServing)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cpu-pod", "lab/nope"], "--cpu-pod lab/nope: pod lab/nope: the API server"),
        (["--cpu-pod", "lab/server", "--settle", "0"], "--settle 0 is shorter than the source's"),
        (["--cpu-pod", "lab/server", "--seconds", "0.2"], "--seconds 0.2 is shorter than 4"),
        (["--cpu-pod", "lab/server", "--cpu-pid", "1"], "different CPU sources"),
        (["--context", "x"], "say where --cpu-pod's pod is"),
    ],
)
def test_fidelity_pod_errors_exit_2_and_write_nothing(
    cluster: tuple[FakeKubeAPI, FakePod, Path],
    tiny_serving: str,
    tmp_path: Path,
    extra: list[str],
    message: str,
) -> None:
    from tests.test_fidelity import linear_profile

    _, _, kubeconfig = cluster
    profile = tmp_path / "p.yaml"
    profile.write_text(json.dumps(linear_profile()))
    out = tmp_path / "out"
    args = ["fidelity", "--endpoint", tiny_serving, "--profile", str(profile), "--out", str(out)]
    done = CliRunner().invoke(app, [*args, "--kubeconfig", str(kubeconfig), *extra])
    assert done.exit_code == 2, done.output
    assert message in " ".join(done.output.split()), done.output
    assert "Traceback" not in done.output and not out.exists()
