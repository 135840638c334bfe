"""A Kubernetes pod's CPU read through the API server, for ``--cpu-pod NAMESPACE/POD``.

Two upstream sources, tried in this order:

* the kubelet's cumulative counter through the API server's node proxy, ``GET
  /api/v1/nodes/NODE/proxy/metrics/resource``, series ``container_cpu_usage_seconds_total``
  (STABLE; core-seconds, with the stats' own timestamp in ms: kubernetes
  pkg/kubelet/metrics/collectors/resource_metrics.go). Differences are exact; a new value
  appears each time the kubelet refreshes its container stats (cAdvisor housekeeping, about
  10-15 s). It needs RBAC ``get`` on ``nodes/proxy``.
* metrics.k8s.io/v1beta1 ``PodMetrics`` (metrics-server): ``containers[].usage.cpu`` is a RATE,
  ``(counter_last - counter_prev) / window`` in nanocores (truncated), ``timestamp`` is the last
  counter's time and ``window`` the time between the two (metrics-server
  pkg/storage/types.go ``resourceUsage``). metrics-server keeps the previous point until a
  newer one arrives (pkg/storage/pod.go ``Store``), so consecutive distinct samples cover
  adjacent windows and ``cores x window`` summed over them rebuilds the kubelet's counter.

Either way :class:`PodCpu` polls in a background thread, keeps each distinct sample once (by
timestamp) and rebuilds a cumulative figure (:class:`Integral`); ``seconds()`` only reads it.
The figure lags the pod by the time a sample takes to arrive, so a window's CPU is only as
good as that lag is steady: callers wait ``lag_s`` after a change of load before a window
starts, and refuse windows shorter than :data:`MIN_METRICS_WINDOWS` resolutions.
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sim.serving.calibrate.cpu import CpuError

INSTALL_HINT = "pip install 'scalelab[gke]'"

MIN_METRICS_WINDOWS = 4.0
"""A measuring window must span at least this many of the source's resolutions. Assumption:
a sample's arrival delay varies by up to one resolution, so a window's CPU is off by up to
1/MIN_METRICS_WINDOWS (25%) of the load in the worst case, much less when the delay is steady
(the kubelet polled directly: within the poll interval)."""

POLLS_PER_RESOLUTION = 5
"""Polls per resolution once it is known: a new sample is seen within a fifth of it."""
POLL_BOUNDS_S = (0.5, 5.0)
"""Poll at least this often and at most this often (seconds), whatever the resolution."""
STARTUP_POLL_S = 1.0
"""Poll interval until two distinct samples have given the resolution."""
STARTUP_TIMEOUT_S = 150.0
"""Wait this long for two distinct samples: metrics-server's slowest common resolution (60 s)
twice, plus a margin; a pod that has just started has no PodMetrics for one or two scrapes."""
GAP_TOLERANCE_S = 1.0
"""PodMetrics timestamps are RFC 3339 in whole seconds (metav1.Time): a window that starts
more than this after the previous sample's timestamp means a sample was missed."""
FAILURE_WINDOWS = 3.0
"""Polls that fail for this many resolutions in a row end the source (seconds() raises)."""

# Go's resource.Quantity suffixes (k8s.io/apimachinery/pkg/api/resource/suffix.go).
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_QUANTITY = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|[numkMGTPE]?)")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity (``250m``, ``123456789n``, ``1.5``, ``2Ki``, ``1e3``) as a number,
    by the grammar of k8s.io/apimachinery/pkg/api/resource/quantity.go."""
    match = _QUANTITY.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    number, suffix = Decimal(match.group(1)), match.group(2)
    if suffix in _BINARY:
        return number * (2 ** _BINARY[suffix])
    if suffix[:1] in ("e", "E"):
        return number.scaleb(int(suffix[1:]))
    return number.scaleb(_DECIMAL[suffix])


def parse_duration(text: str) -> float:
    """Seconds in a Go ``time.Duration`` string (metav1.Duration: ``15s``, ``1m0.5s``,
    ``14.907ms``, ``0s``)."""
    text = text.strip() if isinstance(text, str) else ""
    if text == "0":
        return 0.0
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Go duration: {text!r}")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def parse_time(text: str) -> float:
    """Seconds since the epoch in an RFC 3339 time (metav1.Time; fractions accepted)."""
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"not an RFC 3339 time: {text!r}") from None
    if when.tzinfo is None:
        raise ValueError(f"an RFC 3339 time needs a zone: {text!r}")
    return when.timestamp()


# --- samples and the rebuilt counter (pure) --------------------------------------------------


@dataclass(frozen=True)
class RateSample:
    """One PodMetrics: the pod's cores (containers summed), averaged over (timestamp - window,
    timestamp]."""

    timestamp: float
    window: float
    cores: float


@dataclass(frozen=True)
class CounterSample:
    """The kubelet's cumulative CPU seconds of the pod's containers at ``timestamp``."""

    timestamp: float
    seconds: float


Sample = RateSample | CounterSample


@dataclass
class Integral:
    """Cumulative CPU seconds rebuilt from distinct samples, carried forward in local time.

    At a sample's timestamp the figure is exact: the counter's own difference, or for rates
    ``cores x window`` (which is that difference, metrics-server's window being the time
    between its two counter readings). Between samples the newest rate continues from the
    local time the sample was first seen (assumption: the load goes on as it was), so the
    figure follows the pod delayed by a sample's arrival time; only changes in that delay
    make errors.
    """

    total: float = 0.0
    rate: float = 0.0
    last: Sample | None = None
    seen_at: float = 0.0
    samples: int = 0
    gaps: int = 0
    """Rate samples whose window started after the previous timestamp (a missed sample): the
    gap is filled at the new sample's rate."""
    restarts: int = 0
    """Counter decreases (a container restarted): its new count is added from zero."""
    intervals: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    """Local wall time at first sight minus the sample's timestamp (includes clock offset)."""

    def add(self, sample: Sample, seen_at: float, wall: float) -> bool:
        """Take ``sample`` first seen at local monotonic ``seen_at`` (wall clock ``wall``);
        False for a sample already taken or older than the newest."""
        last = self.last
        if last is not None and sample.timestamp <= last.timestamp:
            return False
        if last is not None:
            span = sample.timestamp - last.timestamp
            if isinstance(sample, RateSample):
                start = sample.timestamp - sample.window
                if start - last.timestamp > GAP_TOLERANCE_S:
                    self.gaps += 1
                    self.total += sample.cores * span
                else:
                    self.total += sample.cores * sample.window
                self.rate = sample.cores
            elif isinstance(last, CounterSample):
                grown = sample.seconds - last.seconds
                if grown < 0:
                    self.restarts += 1
                    grown = sample.seconds
                self.total += grown
                self.rate = grown / span
            self.intervals.append(span)
            self.delays.append(wall - sample.timestamp)
        elif isinstance(sample, RateSample):
            self.rate = sample.cores
        self.last = sample
        self.seen_at = seen_at
        self.samples += 1
        return True

    def value(self, now: float) -> float:
        """CPU seconds so far at local monotonic ``now``."""
        return self.total + self.rate * max(0.0, now - self.seen_at)

    @property
    def resolution(self) -> float | None:
        """Median time between distinct samples (None before two)."""
        return statistics.median(self.intervals) if self.intervals else None


def pod_metrics_sample(body: dict[str, Any], what: str) -> RateSample:
    """The sample in a metrics.k8s.io/v1beta1 PodMetrics object."""
    try:
        cores = sum(
            parse_quantity(str(c["usage"]["cpu"])) for c in body["containers"] if c.get("usage")
        )
        return RateSample(
            timestamp=parse_time(body["timestamp"]),
            window=parse_duration(body["window"]),
            cores=float(cores),
        )
    except (KeyError, TypeError, ValueError, InvalidOperation) as error:
        raise CpuError(f"{what} answered a PodMetrics without usable CPU ({error})") from None


def kubelet_sample(text: str, namespace: str, pod: str, what: str) -> CounterSample | None:
    """The pod's containers' ``container_cpu_usage_seconds_total`` summed, at the newest of
    their timestamps; None when the kubelet lists none of them."""
    from prometheus_client.parser import text_string_to_metric_families

    total, stamp, found = 0.0, None, False
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name != "container_cpu_usage_seconds_total":
                    continue
                if s.labels.get("namespace") != namespace or s.labels.get("pod") != pod:
                    continue
                found = True
                total += float(s.value)
                if s.timestamp is not None:
                    at = float(s.timestamp)
                    stamp = at if stamp is None else max(stamp, at)
    except ValueError as error:
        raise CpuError(f"{what} answered text that is not Prometheus' format ({error})") from None
    if not found:
        return None
    if stamp is None:
        raise CpuError(f"{what} gave {namespace}/{pod}'s CPU without a timestamp")
    return CounterSample(timestamp=stamp, seconds=total)


# --- the source ------------------------------------------------------------------------------


def split_pod(text: str) -> tuple[str, str]:
    """``NAMESPACE/POD`` as (namespace, pod)."""
    namespace, _, pod = text.partition("/")
    name = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
    if not (name.fullmatch(namespace) and name.fullmatch(pod)):
        raise CpuError(
            f"--cpu-pod must be NAMESPACE/POD (lower-case DNS names, e.g. default/"
            f"image-classifier-7d9f8-abcde), got {text!r}"
        )
    return namespace, pod


def _answer(error: Any) -> str:
    """The API server's message in an ApiException (its Status), else the error itself."""
    import json

    body = getattr(error, "body", None)
    status = getattr(error, "status", None)
    try:
        message = json.loads(body)["message"] if body else None
    except (ValueError, TypeError, KeyError):
        message = body if isinstance(body, str) else None
    text = message or getattr(error, "reason", None) or str(error)
    return f"HTTP {status}: {text}" if status else str(text)


class PodCpu:
    """``--cpu-pod NAMESPACE/POD``: the pod's CPU through the Kubernetes API (see the module)."""

    def __init__(
        self,
        pod: str,
        kubeconfig: Path | None = None,
        context: str | None = None,
        *,
        prefer: str = "auto",
        poll_s: float | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if prefer not in ("auto", "kubelet", "metrics"):
            raise ValueError(f"prefer must be auto, kubelet or metrics, got {prefer!r}")
        self.namespace, self.pod = split_pod(pod)
        self.clock, self.wall = clock, wall
        self.fixed_poll = poll_s
        self.integral = Integral()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.failure: CpuError | None = None
        self.fallback: str | None = None
        self._connect(kubeconfig, context)
        node = self._node()
        self.node = node
        self.fetch, self.source = self._choose(node, prefer)
        self._wait_for_two(startup_timeout)
        self.thread = threading.Thread(target=self._poll, name="pod-cpu", daemon=True)
        self.thread.start()

    # -- setting up ---------------------------------------------------------------------------

    def _connect(self, kubeconfig: Path | None, context: str | None) -> None:
        try:
            from kubernetes import client, config
            from kubernetes.client.rest import ApiException
        except ImportError:
            raise CpuError(
                "--cpu-pod reads the pod through the Kubernetes API with the kubernetes client, "
                f"which is not installed: {INSTALL_HINT}"
            ) from None
        self._api_exception = ApiException
        where = str(kubeconfig) if kubeconfig else "KUBECONFIG or ~/.kube/config"
        try:  # as cloud/credentials.py kubeconfig_api_client (sim does not import cloud)
            api = config.new_client_from_config(
                config_file=str(kubeconfig) if kubeconfig else None, context=context
            )
        except (config.ConfigException, OSError, ValueError, TypeError) as error:
            raise CpuError(
                f"cannot use kubeconfig {where} (context {context or 'current'}): {error}"
            ) from None
        # The proxied path goes out as kubectl sends it (``get --raw
        # /api/v1/nodes/NODE/proxy/metrics/resource``), its "/" not escaped to %2F.
        api.configuration.safe_chars_for_path_param = "/"
        self.server = api.configuration.host
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        """``call()``; CpuError naming ``what`` and the API's answer when it fails."""
        import urllib3

        try:
            return call()
        except self._api_exception as error:
            raise CpuError(f"{what}: the API server {self.server} answered {_answer(error)}") from (
                None
            )
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise CpuError(f"{what}: cannot reach the API server {self.server}: {error}") from None

    def _node(self) -> str:
        ref = f"{self.namespace}/{self.pod}"
        pod = self._call(
            f"pod {ref}", lambda: self.core.read_namespaced_pod(self.pod, self.namespace)
        )
        node = pod.spec.node_name if pod.spec else None
        phase = pod.status.phase if pod.status else None
        if not node or phase != "Running":
            raise CpuError(
                f"pod {ref} is {phase or 'in no phase'} on {node or 'no node'}: its CPU can "
                "only be read while it runs"
            )
        return str(node)

    def _kubelet(self, node: str) -> Callable[[], Sample | None]:
        what = f"GET {self.server}/api/v1/nodes/{node}/proxy/metrics/resource"

        def fetch() -> Sample | None:
            answer = self._call(
                what,
                lambda: self.core.connect_get_node_proxy_with_path(
                    node, "metrics/resource", _preload_content=False
                ),
            )
            text = answer.data.decode("utf-8", errors="replace")
            return kubelet_sample(text, self.namespace, self.pod, what)

        return fetch

    def _metrics(self) -> Callable[[], Sample | None]:
        what = (
            f"GET {self.server}/apis/metrics.k8s.io/v1beta1/namespaces/{self.namespace}/pods/"
            f"{self.pod}"
        )

        import urllib3

        def fetch() -> Sample | None:
            try:
                body = self.custom.get_namespaced_custom_object(
                    "metrics.k8s.io", "v1beta1", self.namespace, "pods", self.pod
                )
            except self._api_exception as error:
                if error.status == 404 and "podmetrics" in str(error.body or "").lower():
                    return None  # a pod metrics-server has not scraped twice yet
                raise CpuError(
                    f"{what}: the API server {self.server} answered {_answer(error)}"
                    + (" (is metrics-server installed?)" if error.status in (404, 503) else "")
                ) from None
            except (urllib3.exceptions.HTTPError, OSError) as error:
                raise CpuError(f"{what}: cannot reach the API server: {error}") from None
            if not isinstance(body, dict):
                raise CpuError(f"{what} answered {str(body)[:300]}")
            return pod_metrics_sample(body, what)

        return fetch

    def _choose(self, node: str, prefer: str) -> tuple[Callable[[], Sample | None], str]:
        """The kubelet's counter where it answers with the pod's series, else metrics.k8s.io;
        why the kubelet was not used goes to ``fallback``."""
        ref = f"{self.namespace}/{self.pod}"
        if prefer in ("auto", "kubelet"):
            kubelet = self._kubelet(node)
            try:
                if kubelet() is not None:
                    return kubelet, "kubelet"
                why = f"the kubelet on {node} lists no container_cpu_usage_seconds_total of {ref}"
            except CpuError as error:
                why = str(error)
            if prefer == "kubelet":
                raise CpuError(why)
            self.fallback = why
        metrics = self._metrics()
        metrics()  # fails now on a missing metrics API or no RBAC
        return metrics, "metrics.k8s.io"

    def _take(self, sample: Sample | None) -> None:
        if sample is not None:
            with self.lock:
                self.integral.add(sample, self.clock(), self.wall())

    def _wait_for_two(self, timeout: float) -> None:
        """Poll until two distinct samples give the first difference and the resolution."""
        began = self.clock()
        while self.integral.samples < 2:
            self._take(self.fetch())
            if self.integral.samples >= 2:
                break
            if self.clock() - began > timeout:
                got = self.integral.samples
                raise CpuError(
                    f"{self.source} gave {got} distinct sample{'s' * (got != 1)} of "
                    f"{self.namespace}/{self.pod}'s CPU in {timeout:.0f} s; two are needed "
                    "(a pod that has just started has none for a scrape or two)"
                )
            time.sleep(self.fixed_poll or STARTUP_POLL_S)

    # -- running ------------------------------------------------------------------------------

    @property
    def poll_s(self) -> float:
        """Seconds between polls: a fifth of the resolution, within POLL_BOUNDS_S."""
        if self.fixed_poll is not None:
            return self.fixed_poll
        low, high = POLL_BOUNDS_S
        return min(high, max(low, self.resolution_s / POLLS_PER_RESOLUTION))

    def _poll(self) -> None:
        failing_since: float | None = None
        while not self.stopping.wait(self.poll_s):
            try:
                self._take(self.fetch())
                failing_since = None
            except CpuError as error:
                now = self.clock()
                failing_since = failing_since if failing_since is not None else now
                if now - failing_since > FAILURE_WINDOWS * self.resolution_s:
                    with self.lock:
                        self.failure = error
                    return

    def seconds(self) -> float:
        """The rebuilt cumulative CPU seconds, carried forward to now."""
        with self.lock:
            if self.failure is not None:
                raise self.failure
            return self.integral.value(self.clock())

    def cores(self) -> float:
        """The newest sample's rate, in cores."""
        with self.lock:
            return self.integral.rate

    @property
    def resolution_s(self) -> float:
        """Median seconds between distinct samples."""
        with self.lock:
            return self.integral.resolution or 0.0

    @property
    def lag_s(self) -> float:
        """How long after a change of load the figure follows only the new load: the newest
        sample must cover time after the change only (a resolution) and have arrived (at most
        a resolution old when first seen, assumed, plus the arrival delays' spread: the clocks'
        offset cancels in it), and a poll must have fetched it."""
        with self.lock:
            delays = self.integral.delays
            spread = max(delays) - min(delays) if delays else 0.0
            resolution = self.integral.resolution or 0.0
        return 2 * resolution + spread + self.poll_s

    @property
    def description(self) -> str:
        ref = f"{self.namespace}/{self.pod}"
        res = f"{self.resolution_s:.3g} s"
        if self.source == "kubelet":
            text = (
                f"the kubelet's container_cpu_usage_seconds_total of pod {ref} (containers "
                f"summed) through {self.server}/api/v1/nodes/{self.node}/proxy/metrics/resource, "
                f"a new value every {res}"
            )
        else:
            text = (
                f"metrics.k8s.io/v1beta1 PodMetrics of pod {ref} (containers' usage.cpu, a rate "
                f"over {res} windows) through {self.server}, integrated"
            )
            if self.fallback:
                text += f"; the kubelet's counter was not used: {self.fallback}"
        return text + f"; polled every {self.poll_s:.3g} s"

    def provenance(self) -> dict[str, Any]:
        """What the source was and how steady it was over the run, for a profile."""
        with self.lock:
            integral = self.integral
            delays = list(integral.delays)
            out: dict[str, Any] = {
                "source": self.source,
                "pod": f"{self.namespace}/{self.pod}",
                "node": self.node,
                "api_server": self.server,
                "resolution_s": integral.resolution,
                "samples": integral.samples,
                "missed_samples_filled": integral.gaps,
                "counter_restarts": integral.restarts,
            }
        out["poll_s"] = self.poll_s
        out["arrival_delay_spread_s"] = max(delays) - min(delays) if delays else None
        out["rule"] = (
            "cumulative CPU rebuilt from distinct samples (kubelet: the counter; "
            "metrics.k8s.io: usage x window), carried forward at the newest rate between "
            "samples; each window starts lag_s after its load began and spans at least "
            f"{MIN_METRICS_WINDOWS:g} resolutions"
        )
        if self.fallback:
            out["kubelet_not_used"] = self.fallback
        return out

    def close(self) -> None:
        """Stop polling."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)


def window_too_short(seconds: float, resolution: float, option: str) -> str | None:
    """Why a ``seconds``-long measuring window is too short for a source of ``resolution``
    seconds (None when it is long enough)."""
    need = MIN_METRICS_WINDOWS * resolution
    if resolution <= 0 or seconds >= need:
        return None
    return (
        f"{option} {seconds:g} is shorter than {MIN_METRICS_WINDOWS:g} of the pod CPU source's "
        f"{resolution:.3g} s resolution: a window's CPU could be off by more than "
        f"{1 / MIN_METRICS_WINDOWS:.0%} of the load; use {option} {need:.3g} or more"
    )
