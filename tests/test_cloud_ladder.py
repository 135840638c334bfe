"""The real half of ``scalelab fidelity`` on 127.0.0.1: real Locust users in a child process
against the TF Serving stand-in, windows cut by end time, CPU from /proc and cgroup files,
endpoint errors before any load, and a SavedModel served in its own process."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

from cloud.errors import CloudError
from cloud.ladder import (
    check_endpoint,
    cut,
    run_ladder,
    start_local_server,
    windows,
)
from cloud.load import lab_image, lab_request_body
from cloud.serve import RunningServer, ServingError, set_tf_threads, start_server
from sim.errors import UserError
from sim.serving.calibrate import cpu as cpu_module
from sim.serving.calibrate.cpu import CgroupCpu, CpuError, OthersCpu, ProcessCpu
from sim.serving.fidelity import Step

BODY = lab_request_body(lab_image())
SERVICE = 0.05


class FixedServable:
    """A fixed service time, at most ``workers`` requests at once: the closed-loop numbers
    are then known in advance (a lone user: Z + S per request; many: 1/S per second)."""

    name = "image_classifier"
    version = "1"
    signatures: tuple[str, ...] = ("serving_default", "serving_preprocess")
    input_name = "bytes_inputs"

    def __init__(self, service: float, workers: int, fail: bool = False) -> None:
        self.service = service
        self.slots = threading.BoundedSemaphore(workers)
        self.fail = fail

    def metadata(self) -> dict[str, Any]:
        return {"signature_def": {}}

    def predict(self, signature: str, columns: dict[str, list[Any]], rows: int) -> dict[str, Any]:
        if self.fail:
            raise ServingError(HTTPStatus.INTERNAL_SERVER_ERROR, "the model is on fire")
        with self.slots:
            time.sleep(self.service)
        return {"labels": [["a"]] * rows, "probabilities": [[1.0]] * rows}


@pytest.fixture
def server() -> Iterator[RunningServer]:
    running = start_server(FixedServable(SERVICE, workers=1), port=0)
    yield running
    running.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnCpu:
    """This process's CPU without its children's (ProcessCpu counts the Locust child too)."""

    description = "time.process_time()"
    resolution_s = 0.0
    lag_s = 0.0

    def seconds(self) -> float:
        return time.process_time()


def test_a_ladder_counts_each_request_in_the_window_it_ends_in(
    server: RunningServer, tmp_path: Path
) -> None:
    steps = [Step(users=1, seconds=3.0, settle=1.0), Step(users=8, seconds=3.0, settle=1.0)]
    wait = (0.1, 0.2)
    began = time.monotonic()
    results = run_ladder(
        server.url,
        "image_classifier",
        steps,
        wait=wait,
        body=BODY,
        cpu=ProcessCpu(os.getpid()),  # the stand-in runs in this process
        others=OthersCpu(OwnCpu()),  # Locust's child among them
        seed=3,
        workdir=tmp_path,
    )
    elapsed = time.monotonic() - began
    assert elapsed < 20
    assert [(r.users, r.start, r.end) for r in results] == [(1, 1.0, 4.0), (8, 5.0, 8.0)]
    think = sum(wait) / 2
    for step, result in zip(steps, results, strict=True):
        assert result.failed == 0 and result.errors == {}
        assert result.ok == len(result.latencies)
        assert result.throughput_rps == pytest.approx(result.ok / step.seconds)
        assert min(result.latencies) >= SERVICE * 0.9
        # The interactive response time law, X = N / (Z + R), with the measured R: a rung's
        # settle counted in (or a neighbour's requests) would move the count by a third.
        expected = step.users * step.seconds / (think + statistics.fmean(result.latencies))
        assert result.ok == pytest.approx(expected, rel=0.15)
        assert result.cpu_cores is not None and 0.0 <= result.cpu_cores < 4.0
    alone, crowded = results
    assert crowded.others_cores is not None and crowded.others_cores > 0  # Locust at 20 req/s
    assert alone.others_cores is not None and alone.others_cores > -0.05  # ticks, not less
    assert alone.ok == pytest.approx(3.0 / (think + SERVICE), abs=2)
    assert alone.p50 == pytest.approx(SERVICE, abs=0.02)
    # One worker, eight users wanting 8 / (Z + S) = 40/s: saturated at 1/S = 20/s, and the
    # rest of each cycle is queueing, R = N / X - Z (the asymptotic bounds).
    assert crowded.throughput_rps == pytest.approx(1 / SERVICE, rel=0.15)
    assert statistics.fmean(crowded.latencies) == pytest.approx(8 * SERVICE - think, rel=0.25)
    assert crowded.p50 is not None and alone.p50 is not None
    assert crowded.p50 > 3 * alone.p50
    assert crowded.p99 is not None and crowded.p95 is not None
    assert crowded.p50 <= crowded.p95 <= crowded.p99 <= max(crowded.latencies)
    lines = (tmp_path / "ladder-requests.jsonl").read_text().splitlines()
    assert len(lines) >= alone.ok + crowded.ok


def test_cut_assigns_by_end_time_to_half_open_windows() -> None:
    steps = [Step(2, seconds=2.0, settle=1.0), Step(3, seconds=1.0, settle=0.5)]
    assert windows(steps) == [(0.0, 1.0, 3.0), (3.0, 3.5, 4.5)]
    records = [
        (0.5, 0.1, True, None),  # settle of rung 0: dropped
        (1.0, 0.2, True, None),  # the window's start belongs to it
        (2.9, 0.3, False, "HTTP 500: x"),
        (2.95, 0.3, False, "HTTP 500: x"),
        (3.0, 0.4, True, None),  # rung 0's end is rung 1's settle
        (3.5, 0.5, True, None),
        (4.4, 0.6, False, "timeout"),
        (4.5, 0.7, True, None),  # after the last window
    ]
    first, second = cut(steps, records)
    assert (first.ok, first.failed, first.latencies) == (1, 2, [0.2])
    assert first.errors == {"HTTP 500: x": 2} and first.throughput_rps == 0.5
    assert first.p50 == first.p99 == 0.2 and first.cpu_cores is None
    assert (second.ok, second.failed, second.errors) == (1, 1, {"timeout": 1})
    assert second.latencies == [0.5]
    empty = cut([Step(1, seconds=1.0, settle=0.0)], [])[0]
    assert (empty.ok, empty.p50, empty.throughput_rps) == (0, None, 0.0)


@pytest.mark.parametrize("via_child", [False, True], ids=["process", "its-child"])
def test_process_cpu_counts_what_a_busy_loop_burned(via_child: bool) -> None:
    """1.5 s of CPU time burned by the process (or its child), whatever else the machine runs:
    CPU seconds, not wall time, so other load cannot move the figure."""
    burn = (
        "import time\nwhile time.process_time() < 1.5: pass\n"
        "print('done', flush=True)\ntime.sleep(10)\n"
    )
    code = (
        f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"
        if via_child
        else burn
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        cpu = ProcessCpu(proc.pid)
        before = cpu.seconds()
        assert proc.stdout is not None and proc.stdout.readline().strip() == "done"
        burned = cpu.seconds() - before
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert 1.0 < burned < 1.8  # the loop's 1.5 s, less what ran before the first reading
    with pytest.raises(CpuError, match="gone"):
        cpu.seconds()


def test_others_cpu_is_the_machines_busy_time_less_the_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """This process plays the server: what it burns is not the others', a child's burn is."""
    others = OthersCpu(OwnCpu())
    before = others.seconds()
    started = time.process_time()
    while time.process_time() - started < 0.6:
        pass
    own = others.seconds() - before
    before = others.seconds()
    subprocess.run(
        [sys.executable, "-c", "import time\nwhile time.process_time() < 1.0: pass"], check=True
    )
    child = others.seconds() - before
    assert own < 0.3  # the server's 0.6 s is not counted (what is: the OS, other tests' noise)
    assert 0.8 < child < 2.0  # the child's 1.0 s (its start-up too)
    monkeypatch.setattr(cpu_module, "busy_cpu_seconds", lambda: None)
    with pytest.raises(CpuError, match="/proc/stat"):
        others.seconds()


def test_cgroup_cpu_reads_v2_and_v1_accounting(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    assert CgroupCpu(v2).seconds() == 2.5
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "cpuacct.usage").write_text("1500000000\n")
    assert CgroupCpu(v1).seconds() == 1.5
    assert CgroupCpu(v1 / "cpuacct.usage").seconds() == 1.5
    with pytest.raises(CpuError, match="no cgroup CPU accounting"):
        CgroupCpu(tmp_path / "nothing")


def test_check_endpoint_says_what_the_server_said(server: RunningServer, tmp_path: Path) -> None:
    check_endpoint(server.url, "image_classifier", "1", BODY, timeout=5)
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CloudError, match="cannot reach") as refused:
        check_endpoint(nobody, "image_classifier", "1", BODY, timeout=5)
    assert nobody in str(refused.value) and "refused" in str(refused.value).lower()
    with pytest.raises(CloudError) as missing:
        check_endpoint(server.url, "resnet", "1", BODY, timeout=5)
    text = str(missing.value)
    assert f"{server.url}/v1/models/resnet/versions/1" in text and "HTTP 404" in text
    assert "Servable not found for request: Specific(resnet, 1)" in text
    with pytest.raises(CloudError, match="HTTP 404"):
        check_endpoint(server.url, "image_classifier", "7", BODY, timeout=5)
    with pytest.raises(CloudError, match="http"):
        check_endpoint("127.0.0.1:8501", "image_classifier", "1", BODY, timeout=5)
    # The ladder checks first: no Locust child is started for a wrong model.
    with pytest.raises(CloudError, match="HTTP 404"):
        run_ladder(server.url, "resnet", [Step(1, 1.0, 0.0)], body=BODY, workdir=tmp_path)
    assert not (tmp_path / "ladder-spec.json").exists()


def test_check_endpoint_reports_a_failing_predict() -> None:
    running = start_server(FixedServable(SERVICE, workers=1, fail=True), port=0)
    try:
        with pytest.raises(CloudError) as broken:
            check_endpoint(running.url, "image_classifier", None, BODY, timeout=5)
    finally:
        running.close()
    text = str(broken.value)
    assert f"POST {running.url}/v1/models/image_classifier:predict" in text
    assert "HTTP 500" in text and "the model is on fire" in text


def test_steps_are_checked() -> None:
    with pytest.raises(UserError, match="users >= 1"):
        Step(users=0, seconds=1.0, settle=0.0)
    with pytest.raises(UserError, match="seconds > 0"):
        Step(users=1, seconds=0.0, settle=0.0)


def test_tf_threads_are_set_before_the_runtime_starts() -> None:
    calls: list[tuple[str, int]] = []

    class Threading:
        started = False

        def get_intra_op_parallelism_threads(self) -> int:
            return 0

        def get_inter_op_parallelism_threads(self) -> int:
            return 0

        def set_intra_op_parallelism_threads(self, n: int) -> None:
            if self.started:
                raise RuntimeError("Intra op parallelism cannot be modified after initialization.")
            calls.append(("intra", n))

        def set_inter_op_parallelism_threads(self, n: int) -> None:
            calls.append(("inter", n))

    class TF:
        class config:  # mirrors tf.config
            threading = Threading()

    set_tf_threads(TF, None)
    assert calls == []  # TF Serving's default 0: TF picks all schedulable cores
    set_tf_threads(TF, 2)
    assert calls == [("intra", 2), ("inter", 2)]
    TF.config.threading.started = True
    with pytest.raises(CloudError, match="fresh process"):
        set_tf_threads(TF, 3)
    with pytest.raises(CloudError, match="at least 1"):
        set_tf_threads(TF, 0)


@pytest.mark.slow
def test_a_saved_model_served_in_its_own_process(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from sim.serving.calibrate.model import export

    export("tiny", tmp_path / "base")
    with start_local_server(tmp_path / "base", "tiny_model", threads=1) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.pid != os.getpid()
        check_endpoint(server.url, "tiny_model", "1", BODY, timeout=30)
        check_endpoint(server.url, "tiny_model", None, BODY, timeout=30)
        (result,) = run_ladder(
            server.url,
            "tiny_model",
            [Step(users=1, seconds=2.0, settle=0.5)],
            wait=(0.05, 0.1),
            body=BODY,
            cpu=ProcessCpu(server.pid),
            workdir=tmp_path / "ladder",
        )
        assert result.ok >= 5 and result.failed == 0
        assert result.cpu_cores is not None and 0.0 < result.cpu_cores < 2.5
        pid = server.pid
    assert server.process.poll() is not None
    with pytest.raises(CpuError, match="cannot read the CPU time"):
        ProcessCpu(pid)


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    with pytest.raises(CloudError, match=r"no saved_model\.pb"):
        start_local_server(tmp_path, "m", threads=1, startup_timeout=60)
