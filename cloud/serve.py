"""A local stand-in for TensorFlow Serving's REST API, to test the real path on 127.0.0.1.

It speaks the API of https://www.tensorflow.org/tfx/serving/api_rest: model status
(``GET /v1/models/NAME[/versions/N|/labels/L]``), metadata (``.../metadata``) and predict
(``POST ...:predict`` with row ``instances`` or columnar ``inputs``, ``{"b64": ...}`` for
binary strings), errors as ``{"error": "..."}`` with the HTTP status TF Serving maps the
error code to (NOT_FOUND 404, INVALID_ARGUMENT 400). HTTP/1.1 keep-alive, like the real
server, so Locust users keep their connections.

Two servables:
- :class:`ProfileServable`: no model; each request sleeps the time a latency profile draws,
  as the simulator's server would serve it: with ``n`` requests in service (itself included,
  counted when it starts) on ``c`` vCPUs, ``overhead_s + w / (X(c, n, rows) / n)``, where
  ``X`` is the profile's throughput (a request of ``rows`` instances is one batch of that
  size) and ``w`` a lognormal of mean 1 and the lone request's ``sigma(c)`` (seeded numpy
  Generator). At most ``workers`` are served at once, the rest wait (default: the knee of
  ``X(c, n)``, the fewest in service that reach 97% of its plateau: more would only lengthen
  every request's sleep without adding throughput). Predictions are synthetic.
- :class:`SavedModelServable`: real inference with TensorFlow (imported only then) on a
  SavedModel base path laid out as TF Serving expects (``BASE/<version>/saved_model.pb``),
  threaded as ``tensorflow_model_server`` is by default: intra-op and inter-op pools of one
  thread per schedulable core, and ``4 x cores - 1`` requests served at once (its REST pool
  less the thread its HTTP event loop holds).

Either hands its ``workers`` out in arrival order, as TF Serving does (:class:`RestExecutor`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cloud.errors import CloudError
from sim.cluster.catalog import machine_type
from sim.rng import stream
from sim.serving.model import rest_handlers
from sim.serving.profile import Profile, profile_for

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<verb>/metadata|:predict|:classify|:regress)?$"
)
MAX_BODY = 64 * 2**20


class ServingError(Exception):
    """An error TF Serving reports as ``{"error": message}`` with ``status``."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Servable(Protocol):
    name: str
    version: str
    signatures: tuple[str, ...]

    def metadata(self) -> dict[str, Any]: ...

    def predict(self, signature: str, columns: dict[str, list[Any]], rows: int) -> dict[str, Any]:
        """Outputs by name, each a list with one entry per row."""
        ...


def decode_b64(value: Any) -> Any:
    """``{"b64": "..."}`` -> bytes, recursively (the REST API's binary encoding)."""
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, TypeError) as err:
                raise ServingError(
                    HTTPStatus.BAD_REQUEST, f"Unable to base64 decode: {err}"
                ) from None
        return {k: decode_b64(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_b64(v) for v in value]
    return value


def parse_predict(body: bytes, default_input: str) -> tuple[str, dict[str, list[Any]], int, bool]:
    """(signature, columns, rows, row_format) from a predict request body."""
    try:
        request = json.loads(body)
    except ValueError as err:
        raise ServingError(HTTPStatus.BAD_REQUEST, f"JSON Parse error: {err}") from None
    if not isinstance(request, dict):
        raise ServingError(HTTPStatus.BAD_REQUEST, "JSON Value: not an object")
    if "instances" in request and "inputs" in request:
        raise ServingError(
            HTTPStatus.BAD_REQUEST, "Not both 'instances' and 'inputs' can be specified"
        )
    signature = str(request.get("signature_name") or "serving_default")
    if "instances" in request:
        instances = request["instances"]
        if not isinstance(instances, list) or not instances:
            raise ServingError(HTTPStatus.BAD_REQUEST, "'instances' must be a non-empty list")
        instances = decode_b64(instances)
        if all(isinstance(i, dict) for i in instances):
            keys = set(instances[0])
            if any(set(i) != keys for i in instances):
                raise ServingError(
                    HTTPStatus.BAD_REQUEST, "instances must all have the same named inputs"
                )
            return signature, {k: [i[k] for i in instances] for k in keys}, len(instances), True
        return signature, {default_input: instances}, len(instances), True
    if "inputs" in request:
        inputs = decode_b64(request["inputs"])
        if isinstance(inputs, dict):
            lengths = {len(v) if isinstance(v, list) else 1 for v in inputs.values()}
            rows = max(lengths) if lengths else 0
            columns = {k: v if isinstance(v, list) else [v] for k, v in inputs.items()}
            return signature, columns, rows, False
        values = inputs if isinstance(inputs, list) else [inputs]
        return signature, {default_input: values}, len(values), False
    raise ServingError(HTTPStatus.BAD_REQUEST, "Missing 'inputs' or 'instances' key")


# --- servables ------------------------------------------------------------------------------


KNEE = 0.97
"""The share of its plateau throughput at which a profile's ladder counts as saturated."""


def knee(profile: Profile, cores: float) -> int:
    """The fewest requests in flight at which ``X(cores, n)`` reaches :data:`KNEE` of its
    plateau (the most it reaches over the measured ladder, beyond which it is flat)."""
    ladder = max(profile.concurrency(cores)) * max(1.0, cores / max(profile.threads))
    throughput = [profile.throughput(cores, n) for n in range(1, math.ceil(ladder) + 1)]
    plateau = max(throughput)
    return next(n for n, x in enumerate(throughput, 1) if x >= KNEE * plateau)


class RestExecutor:
    """The REST handler threads a request needs to be served, handed out as TF Serving hands
    them out: in arrival order (``sim.serving.model.rest_handlers``: its event loop queues each
    request at one end of a thread queue and the idle handlers take them from the other). The
    thread is handed over explicitly: a request that arrives as a thread frees cannot take it
    ahead of those queued, as it could from a semaphore (whose woken waiter, passed, goes to the
    back of the line: up to a whole queue's wait, seen in the saturated rungs' tails). Used as
    ``with executor:`` around the work."""

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"a REST executor needs at least 1 thread, got {threads}")
        self._lock = threading.Lock()
        self._free = threads
        self._waiting: deque[threading.Event] = deque()

    def __enter__(self) -> None:
        with self._lock:
            if self._free:
                self._free -= 1
                return
            wake = threading.Event()
            self._waiting.append(wake)
        wake.wait()  # the thread was handed over: _free was not given back

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if not self._waiting:
                self._free += 1
                return
            wake = self._waiting.popleft()
        wake.set()


class ProfileServable:
    """Service times from a latency profile; see the module docstring."""

    LABELS = ("military uniform", "suit", "academic gown", "bow tie", "Windsor tie")

    def __init__(
        self,
        profile: Profile,
        *,
        name: str = "image_classifier",
        version: str = "1",
        seed: int = 1,
        workers: int | None = None,
        vcpus: int = 4,
        signatures: tuple[str, ...] = ("serving_default", "serving_preprocess"),
        input_name: str = "bytes_inputs",
        time_scale: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.profile = profile
        self.name, self.version, self.signatures = name, version, signatures
        self.input_name = input_name
        self.cores = float(vcpus)
        self.sigma = profile.sigma(self.cores)
        self.workers = workers or knee(profile, self.cores)
        self.time_scale = time_scale
        self._rng = stream(seed, "serving")
        self._lock = threading.Lock()  # the generator and the count in service
        self._in_service = 0
        self._slots = RestExecutor(self.workers)
        self._sleep = sleep

    def service_time(self, rows: int, in_service: int = 1) -> float:
        """Seconds for one request of ``rows`` instances with ``in_service`` requests (itself
        included) being served."""
        with self._lock:
            work = float(self._rng.lognormal(-(self.sigma**2) / 2, self.sigma))  # mean 1
        rate = self.profile.throughput(self.cores, in_service, rows) / in_service
        return (self.profile.overhead_s + work / rate) * self.time_scale

    def metadata(self) -> dict[str, Any]:
        signature = {
            "inputs": {
                self.input_name: {"dtype": "DT_STRING", "tensor_shape": {"dim": [{"size": "-1"}]}}
            },
            "outputs": {
                "labels": {
                    "dtype": "DT_STRING",
                    "tensor_shape": {"dim": [{"size": "-1"}, {"size": "5"}]},
                },
                "probabilities": {
                    "dtype": "DT_FLOAT",
                    "tensor_shape": {"dim": [{"size": "-1"}, {"size": "5"}]},
                },
            },
            "method_name": "tensorflow/serving/predict",
        }
        return {"signature_def": {name: signature for name in self.signatures}}

    def predict(self, signature: str, columns: dict[str, list[Any]], rows: int) -> dict[str, Any]:
        if set(columns) != {self.input_name}:
            raise ServingError(
                HTTPStatus.BAD_REQUEST,
                f"input names {sorted(columns)} do not match the signature's [{self.input_name!r}]",
            )
        with self._slots:
            with self._lock:
                self._in_service += 1
                n = self._in_service
            try:
                self._sleep(self.service_time(rows, n))
            finally:
                with self._lock:
                    self._in_service -= 1
        probabilities = [0.6, 0.2, 0.1, 0.05, 0.05]
        return {
            "labels": [list(self.LABELS) for _ in range(rows)],
            "probabilities": [probabilities for _ in range(rows)],
        }


def schedulable_cpus() -> int:
    """CPUs this process may run on (its affinity), as TF's ``port::NumSchedulableCPUs()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def set_tf_threads(tf: Any, threads: int | None) -> None:
    """Size TensorFlow's intra-op and inter-op pools; None leaves TF's 0 (its own choice, all
    schedulable cores). Only possible before TF's runtime starts, so before loading a model."""
    if threads is None:
        return
    if threads < 1:
        raise CloudError(f"threads must be at least 1, got {threads}")
    threading_ = tf.config.threading
    current = (
        threading_.get_intra_op_parallelism_threads(),
        threading_.get_inter_op_parallelism_threads(),
    )
    try:
        threading_.set_intra_op_parallelism_threads(threads)
        threading_.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        raise CloudError(
            f"TensorFlow already runs in this process with intra-op/inter-op threads {current} "
            f"(0 = all cores); {threads} threads need a fresh process (scalelab serve --threads)"
        ) from None


class SavedModelServable:
    """Real inference: the newest version under a TF Serving model base path.

    Outputs as TF Serving writes them: numbers as JSON numbers, strings as UTF-8 text, and
    string tensors whose name ends in ``_bytes`` as ``{"b64": ...}``; metadata dtypes are
    ``DataType`` names (``DT_STRING``).
    """

    def __init__(
        self,
        base_path: Path,
        *,
        name: str,
        workers: int | None = None,
        threads: int | None = None,
    ) -> None:
        try:
            import tensorflow as tf
        except ImportError as err:
            raise CloudError(
                "serving a SavedModel needs TensorFlow: pip install tensorflow "
                "(or use --profile for service times from a latency profile)"
            ) from err
        self._tf = tf
        # TF Serving's --tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism
        # default to 0, "the number of cores"; None passes that 0 through as it does.
        set_tf_threads(tf, threads)
        self.threads = threads or schedulable_cpus()
        # TF Serving's --rest_api_num_threads: 4 x NumSchedulableCPUs() (model_servers/server.h),
        # less the one its HTTP event loop holds; ``threads`` stands for the pod's cores.
        self.workers = workers or rest_handlers(4 * self.threads)
        version_dirs = sorted(
            (p for p in base_path.iterdir() if p.is_dir() and p.name.isdigit()),
            key=lambda p: int(p.name),
        )
        model_dir = version_dirs[-1] if version_dirs else base_path
        if not (model_dir / "saved_model.pb").exists():
            raise CloudError(f"no saved_model.pb under {base_path} (expected BASE/<version>/)")
        self.name = name
        self.version = model_dir.name if version_dirs else "1"
        self._model = tf.saved_model.load(str(model_dir))
        self.signatures = tuple(self._model.signatures.keys())
        self._slots = RestExecutor(self.workers)

    def metadata(self) -> dict[str, Any]:
        from tensorflow.core.framework import types_pb2

        def dtype(spec: Any) -> dict[str, str]:
            return {"dtype": types_pb2.DataType.Name(spec.dtype.as_datatype_enum)}

        out: dict[str, Any] = {}
        for key, fn in self._model.signatures.items():
            _, inputs = fn.structured_input_signature
            out[key] = {
                "inputs": {k: dtype(spec) for k, spec in inputs.items()},
                "outputs": {k: dtype(spec) for k, spec in fn.structured_outputs.items()},
                "method_name": "tensorflow/serving/predict",
            }
        return {"signature_def": out}

    def predict(self, signature: str, columns: dict[str, list[Any]], rows: int) -> dict[str, Any]:
        tf = self._tf
        fn = self._model.signatures[signature]
        _, specs = fn.structured_input_signature
        if len(columns) == 1 and len(specs) == 1:
            columns = {next(iter(specs)): next(iter(columns.values()))}
        try:
            tensors = {k: tf.constant(v, dtype=specs[k].dtype) for k, v in columns.items()}
            with self._slots:
                outputs = fn(**tensors)
        except (KeyError, ValueError, TypeError, tf.errors.OpError) as err:
            raise ServingError(HTTPStatus.BAD_REQUEST, str(err)) from None
        result = {}
        for key, tensor in outputs.items():
            value = tensor.numpy()
            if value.dtype.kind in "SO":
                if key.endswith("_bytes"):
                    encode = np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()})
                else:
                    encode = np.vectorize(lambda b: b.decode(errors="replace"))
                value = encode(value)
            result[key] = value.tolist()
        return result


# --- HTTP -----------------------------------------------------------------------------------


def _status_body(servable: Servable) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": servable.version,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def _resolve(servable: Servable, match: re.Match[str]) -> None:
    name, version, label = match.group("name"), match.group("version"), match.group("label")
    if name != servable.name:
        spec = f"Specific({name}, {version})" if version else f"Latest({name})"
        raise ServingError(HTTPStatus.NOT_FOUND, f"Servable not found for request: {spec}")
    if version is not None and version != servable.version:
        raise ServingError(
            HTTPStatus.NOT_FOUND, f"Servable not found for request: Specific({name}, {version})"
        )
    if label is not None:
        raise ServingError(HTTPStatus.BAD_REQUEST, f"Unrecognized servable version label: {label}")


def make_handler(servable: Servable) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "scalelab-serve"
        # TCP_NODELAY on each connection. The headers and the body go out in two writes; with
        # Nagle on, the body waits for the client's ACK of the headers, which a keep-alive
        # client delays by up to 40 ms (delayed ACK): 60 ms requests took 103 ms from the
        # second on. TF Serving's REST server does not stall so.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet like the real server
            return

        def _send(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (timeout, load stopped)

        def _route(self) -> re.Match[str]:
            match = _ROUTE.match(self.path.split("?", 1)[0])
            if match is None:
                raise ServingError(
                    HTTPStatus.NOT_FOUND, f"Malformed request: {self.command} {self.path}"
                )
            return match

        def do_GET(self) -> None:
            try:
                match = self._route()
                _resolve(servable, match)
                verb = match.group("verb")
                if verb == "/metadata":
                    spec = {
                        "name": servable.name,
                        "signature_name": "",
                        "version": servable.version,
                    }
                    self._send(HTTPStatus.OK, {"model_spec": spec, "metadata": servable.metadata()})
                elif verb is None:
                    self._send(HTTPStatus.OK, _status_body(servable))
                else:
                    raise ServingError(HTTPStatus.NOT_FOUND, f"Malformed request: GET {self.path}")
            except ServingError as err:
                self._send(err.status, {"error": err.message})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, MAX_BODY)) if length else b""
            try:
                if length > MAX_BODY:
                    raise ServingError(HTTPStatus.BAD_REQUEST, "request body too large")
                match = self._route()
                verb = match.group("verb")
                if verb in (None, "/metadata"):
                    raise ServingError(HTTPStatus.NOT_FOUND, f"Malformed request: POST {self.path}")
                _resolve(servable, match)
                if verb != ":predict":
                    raise ServingError(
                        HTTPStatus.BAD_REQUEST,
                        f"Expected a {verb[1:]} signature; this model serves predict only",
                    )
                default_input = getattr(servable, "input_name", "inputs")
                signature, columns, rows, row_format = parse_predict(body, default_input)
                if signature not in servable.signatures:
                    raise ServingError(
                        HTTPStatus.BAD_REQUEST,
                        f'Serving signature name: "{signature}" not found in signature def',
                    )
                outputs = servable.predict(signature, columns, rows)
                if not row_format:
                    self._send(HTTPStatus.OK, {"outputs": outputs})
                elif len(outputs) == 1:
                    self._send(HTTPStatus.OK, {"predictions": next(iter(outputs.values()))})
                else:
                    names = list(outputs)
                    rows_out = [{k: outputs[k][i] for k in names} for i in range(rows)]
                    self._send(HTTPStatus.OK, {"predictions": rows_out})
            except ServingError as err:
                self._send(err.status, {"error": err.message})

    return Handler


class ServingServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up (Locust stopping, a timeout) is normal, not worth a traceback."""
        if isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError):
            return
        super().handle_error(request, client_address)


@dataclass
class RunningServer:
    """A server on a background thread (tests, ``scalelab serve``)."""

    server: ServingServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_server(servable: Servable, host: str = "127.0.0.1", port: int = 8501) -> RunningServer:
    """Listen on ``host:port`` (port 0: any free one) and serve on a daemon thread."""
    server = ServingServer((host, port), make_handler(servable))
    thread = threading.Thread(target=server.serve_forever, name="tf-serving-standin", daemon=True)
    thread.start()
    return RunningServer(server, thread)


def profile_servable(
    family: str,
    machine: str,
    *,
    name: str,
    seed: int,
    workers: int | None = None,
    time_scale: float = 1.0,
) -> ProfileServable:
    """A profile servable for ``machine``: the family's profile for it, and its vCPUs."""
    return ProfileServable(
        profile_for(family, machine),
        name=name,
        seed=seed,
        workers=workers,
        vcpus=machine_type(machine).vcpus,
        time_scale=time_scale,
    )
