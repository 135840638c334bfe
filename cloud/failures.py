"""Why a real request failed, in the simulator's words (:class:`sim.recorder.FailureReason`), so
a real run's ``summary.json`` carries the same ``failures_by_reason`` as a simulated one.

Locust's ``HttpSession`` reports the ``requests`` exception, unwrapped down to its lowest
``ConnectionError``/``ProtocolError``/``MaxRetryError``/``NewConnectionError`` context
(locust/clients.py ``ResponseContextManager._report_request``), so what arrives may be a
``requests`` exception, a urllib3 one or a bare ``OSError``. The whole chain is read
(``__cause__``, ``__context__``, ``MaxRetryError.reason`` and exception ``args``):

- HTTP 503: TF Serving maps UNAVAILABLE to 503 (tensorflow_serving/model_servers/http_server.cc
  ``ToHTTPStatusCode``: ``Code::UNAVAILABLE -> SERVICE_UNAV``), which is what a full batch
  queue returns (tensorflow/core/kernels/batching_util/shared_batch_scheduler.h: "The batch
  scheduling queue to which this task was submitted is full", ``errors::Unavailable``).
  -> ``unavailable``.
- A read timeout (``requests.ReadTimeout``), or HTTP 504, TF Serving's DEADLINE_EXCEEDED
  (``ToHTTPStatusCode``: ``GATEWAY_TO``, from ``--rest_api_timeout_in_ms``) -> ``timeout``.
- Connection refused: kube-proxy REJECTs a Service with no endpoints
  (pkg/proxy/iptables/proxier.go: "has no endpoints" ``-j REJECT``, ICMP port unreachable,
  which connect() reports as ECONNREFUSED) -> ``no_endpoint``. A connect timeout is counted
  here too: nothing accepted the connection (a cloud load balancer with no healthy backend
  drops the SYN instead of refusing it).
- Connection reset or closed without a response (``ConnectionResetError``,
  ``http.client.RemoteDisconnected``, a broken pipe, urllib3's ``ProtocolError``): the
  container went away with the request in flight -> ``reset``.

Anything else is named rather than dropped: ``http_<status>`` for another HTTP status (404
while a model loads, 429 RESOURCE_EXHAUSTED, ...), else ``other``; the error texts stay in
``summary.json``'s ``locust_errors``.
"""

from __future__ import annotations

from collections.abc import Iterator

from sim.recorder import FailureReason

OTHER = "other"
"""A failure that is none of the simulator's reasons and no HTTP status (e.g. a DNS error)."""

_MAX_CHAIN = 32  # exceptions read along one chain; real chains are 3-6 long


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and every exception it wraps, breadth first, each once."""
    queue, seen = [error], set[int]()
    while queue and len(seen) < _MAX_CHAIN:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += list(current.args)
        queue += [e for e in linked if isinstance(e, BaseException)]


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) and status > 0 else None


def failure_reason(error: object) -> str:
    """The reason a request failed with ``error`` (what Locust's request event carries)."""
    if not isinstance(error, BaseException):
        return OTHER  # a string from catch_response's failure(), or None
    import socket

    import requests
    import urllib3.exceptions as u3

    chain = list(_chain(error))
    for e in chain:
        status = _status(e)
        if status is not None:
            if status == 503:
                return FailureReason.UNAVAILABLE.value
            if status == 504:
                return FailureReason.TIMEOUT.value
            return f"http_{status}"
    # urllib3 >= 2.0 raises NameResolutionError; 1.26 a NewConnectionError from the gaierror.
    unresolved = (socket.gaierror, getattr(u3, "NameResolutionError", socket.gaierror))
    if any(isinstance(e, unresolved) for e in chain):
        return OTHER
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return FailureReason.NO_ENDPOINT.value
    connect_timeout = any(
        isinstance(e, requests.exceptions.ConnectTimeout)
        or (isinstance(e, u3.ConnectTimeoutError) and not isinstance(e, u3.NewConnectionError))
        for e in chain
    )
    if connect_timeout:
        return FailureReason.NO_ENDPOINT.value
    timeouts = (requests.exceptions.Timeout, u3.TimeoutError, TimeoutError)
    if any(isinstance(e, timeouts) for e in chain):
        return FailureReason.TIMEOUT.value
    resets = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, u3.ProtocolError)
    if any(isinstance(e, resets) for e in chain):
        return FailureReason.RESET.value
    return OTHER
