"""A real request's failure in the simulator's words (cloud.failures): each way a request to
TF Serving fails, produced for real on 127.0.0.1 with ``requests`` (what Locust's HttpSession
runs), read both as ``requests`` raises it and as Locust reports it."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests
import urllib3.exceptions as u3

from cloud.failures import OTHER, failure_reason
from cloud.load import LoadProcess, LoadSpec
from sim.loader import build_scenario
from sim.recorder import FailureReason, bucket_centres

CLIENT_TIMEOUT = 0.2


def as_locust_reports(error: BaseException) -> BaseException:
    """What Locust's request event carries: the lowest connection-level context
    (locust/clients.py ResponseContextManager._report_request, Locust 2.x)."""
    while (
        isinstance(
            error,
            requests.exceptions.ConnectionError
            | u3.ProtocolError
            | u3.MaxRetryError
            | u3.NewConnectionError,
        )
        and error.__context__
    ):
        error = error.__context__
    return error


class Misbehaving:
    """One listening socket on 127.0.0.1 answering every request the same way."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1/models/m:predict"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(65536)
            if self.mode == "reset":  # RST: SO_LINGER 0, as a killed process's sockets
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif self.mode == "slow":
                time.sleep(4 * CLIENT_TIMEOUT)
            elif self.mode.isdigit():
                conn.sendall(
                    f"HTTP/1.1 {self.mode} X\r\nContent-Length: 2\r\n"
                    "Connection: close\r\n\r\n{}".encode()
                )
            conn.close()  # "close": no response at all

    def close(self) -> None:
        self.sock.close()


def fail(url: str) -> BaseException:
    try:
        response = requests.post(url, data=b"{}", timeout=CLIENT_TIMEOUT)
        response.raise_for_status()
    except requests.RequestException as err:
        return err
    raise AssertionError(f"{url} answered {response.status_code}")


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Misbehaving]:
    running = Misbehaving(request.param)
    yield running
    running.close()


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        ("503", FailureReason.UNAVAILABLE),  # TF Serving's UNAVAILABLE: a full batch queue
        ("504", FailureReason.TIMEOUT),  # DEADLINE_EXCEEDED: --rest_api_timeout_in_ms
        ("slow", FailureReason.TIMEOUT),  # the client's read timeout
        ("reset", FailureReason.RESET),
        ("close", FailureReason.RESET),  # RemoteDisconnected
        ("404", "http_404"),  # a model still loading: named, not folded into another reason
        ("429", "http_429"),
    ],
    indirect=["server"],
)
def test_each_failure_gets_its_reason(server: Misbehaving, reason: str) -> None:
    error = fail(server.url)
    assert failure_reason(error) == reason
    assert failure_reason(as_locust_reports(error)) == reason


def test_connection_refused_is_no_endpoint() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now: the kernel refuses, as kube-proxy's REJECT does
    error = fail(f"http://127.0.0.1:{port}/")
    reported = as_locust_reports(error)
    assert isinstance(reported, ConnectionRefusedError)
    assert failure_reason(error) == failure_reason(reported) == FailureReason.NO_ENDPOINT


def test_a_connect_timeout_is_no_endpoint_not_a_read_timeout() -> None:
    # A listener whose accept queue is full drops further SYNs: connect() times out.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(address)  # EINPROGRESS; the handshake completes or waits queued
        fillers.append(filler)
    time.sleep(0.05)
    try:
        error = fail(f"http://127.0.0.1:{address[1]}/")
    finally:
        for sock in (*fillers, listener):
            sock.close()
    assert isinstance(error, requests.exceptions.ConnectTimeout)
    assert failure_reason(error) == failure_reason(as_locust_reports(error))
    assert failure_reason(error) == FailureReason.NO_ENDPOINT


def test_what_is_no_known_reason_is_other() -> None:
    try:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as cause:
            raise requests.exceptions.ConnectionError("no such host") from cause
    except requests.exceptions.ConnectionError as err:
        assert failure_reason(err) == OTHER
    assert failure_reason("failure() from catch_response") == OTHER
    assert failure_reason(ValueError("bad JSON")) == OTHER


def test_a_cyclic_chain_ends() -> None:
    first, second = OSError("a"), OSError("b")
    first.__context__, second.__context__ = second, first
    assert failure_reason(first) == OTHER


class Cycling:
    """A stand-in that fails in turn (OK, 503, too slow, reset) until ``refuse_after`` seconds
    after its first request, then stops listening, so later connections are refused."""

    MODES = ("ok", "503", "slow", "reset")

    def __init__(self, refuse_after: float) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.refuse_after = refuse_after
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        first: float | None = None
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            first = time.monotonic() if first is None else first
            mode = self.MODES[self.accepted % len(self.MODES)]
            self.accepted += 1
            threading.Thread(target=self._answer, args=(conn, mode), daemon=True).start()
            if time.monotonic() - first >= self.refuse_after:
                self.sock.close()
                return

    @staticmethod
    def _answer(conn: socket.socket, mode: str) -> None:
        with conn:
            conn.recv(1 << 20)
            if mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if mode == "slow":
                time.sleep(4 * CLIENT_TIMEOUT)
                return
            status, body = (
                ("200 OK", b'{"predictions": [[1]]}') if mode == "ok" else ("503 X", b"{}")
            )
            conn.sendall(
                f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )


def test_locust_counts_every_failure_by_reason_and_every_ok_latency(tmp_path: Path) -> None:
    """The real Locust child against :class:`Cycling`: each second's reasons sum to its failed
    requests and its histogram to its OK ones, and all four reasons appear."""
    stand_in = Cycling(refuse_after=1.5)
    lab = build_scenario(
        {
            "name": "failing",
            "duration": 3,
            "load": {"kind": "open_loop", "rate": {"kind": "constant", "rps": 30}},
        },
        "failing",
    )
    spec = replace(
        LoadSpec.for_scenario(lab, host=stand_in.url, client_timeout=CLIENT_TIMEOUT),
        csv_name=None,
    )
    load = LoadProcess(spec, tmp_path)
    load.start()
    try:
        assert load.wait(timeout=30)
    finally:
        load.stop()
    assert load.total is not None and len(load.samples) == 3
    for sample in load.samples:
        assert sum(n for _, n in sample["histogram"]) == sample["ok"]
        assert sum(sample["failures_by_reason"].values()) == sample["failed"]
    reasons: Counter[str] = Counter(load.total["late_failures_by_reason"])
    ok = sum(n for _, n in load.total["late_histogram"])
    for sample in load.samples:
        reasons.update(sample["failures_by_reason"])
        ok += sum(n for _, n in sample["histogram"])
    assert sum(reasons.values()) == load.total["failures"]
    assert ok == load.total["requests"] - load.total["failures"] > 0
    assert set(reasons) == {r.value for r in FailureReason}, reasons
    # The OK requests answered at once: buckets of milliseconds, not of the 0.8 s sleepers.
    late = [bucket_centres([k])[0] for s in load.samples for k, _ in s["histogram"]]
    assert max(late) < 4 * CLIENT_TIMEOUT
