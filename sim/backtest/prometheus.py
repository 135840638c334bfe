"""Read a recorded HPA from a Prometheus server.

Through prometheus-api-client (PrometheusConnect), the maintained Python client for
Prometheus' HTTP API (/api/v1/query, /api/v1/query_range). Each series is fetched as a range
vector ``name{namespace="NS"}[W]`` evaluated at the window's end: that returns the raw samples
with their own timestamps, which the replay needs (metrics-server's window is the time between
two cAdvisor samples; kube-state-metrics' scrapes are told apart by timestamp). A
``query_range`` would resample every series onto a step grid and keep a deleted pod's last
value for the 5-minute lookback. A request-rate query is a PromQL expression, evaluated with
``query_range`` at 1 s steps.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sim.backtest import names as n
from sim.backtest.series import SeriesSet
from sim.errors import UserError

#: Prometheus refuses a query_range of more than 11,000 points (api.go); fetched in chunks.
MAX_POINTS = 10_000

#: The series a backtest reads, besides the required ones.
OPTIONAL = (
    n.HPA_INFO,
    n.HPA_MIN,
    n.HPA_MAX,
    n.HPA_TARGET,
    n.POD_START,
    n.POD_READY,
    n.POD_READY_TIME,
    n.POD_PHASE,
    n.POD_DELETION,
    n.REPLICASET_OWNER,
)


def _client(url: str, timeout: float) -> Any:
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    # Two quick retries on connection errors and 5xx (the client's default backs off ~6 s).
    retry = Retry(total=2, backoff_factor=0.1, status_forcelist=(502, 503, 504))
    return PrometheusConnect(url=url, disable_ssl=True, timeout=timeout, retry=retry)


def _ask(url: str, query: str, call: Any) -> Any:
    import requests
    from prometheus_api_client.exceptions import PrometheusApiClientException

    try:
        return call()
    except PrometheusApiClientException as error:
        raise UserError(f"--prometheus {url}: query {query!r} failed: {error}") from None
    except requests.RequestException as error:
        raise UserError(
            f"--prometheus {url}: query {query!r} got no answer ({type(error).__name__}: {error})"
        ) from None
    except ValueError as error:  # not JSON: not a Prometheus API
        raise UserError(
            f"--prometheus {url}: query {query!r}: not a Prometheus answer ({error})"
        ) from None


def fetch(
    url: str,
    *,
    namespace: str,
    start: float,
    end: float,
    lookback: float,
    timeout: float = 30.0,
) -> SeriesSet:
    """Every series the backtest reads, raw samples from ``start - lookback`` to ``end``."""
    client = _client(url, timeout)
    width = math.ceil(end - start + lookback)
    out = SeriesSet()
    for name in (*n.REQUIRED, *OPTIONAL):
        query = f'{name}{{namespace="{namespace}"}}[{width}s]'
        result = _ask(url, query, lambda q=query: client.custom_query(q, params={"time": end}))
        if not result and name in n.REQUIRED:
            raise UserError(
                f"--prometheus {url}: query {query!r} at {end} returned no series "
                f"(needed for {n.REQUIRED[name]})"
            )
        for item in result or []:
            labels = {k: v for k, v in item["metric"].items() if k != "__name__"}
            for ts, value in item.get("values", []):
                out.add(name, labels, float(ts), float(value))
    return out


def request_rate(
    url: str, query: str, *, start: float, end: float, timeout: float = 30.0
) -> list[float]:
    """The request rate of each second [start + s, start + s + 1): ``query`` evaluated at
    the second's end (e.g. ``sum(idelta(:tensorflow:serving:request_count[2s]))`` for a
    counter scraped every second); a second with no value is refused (say which)."""
    client = _client(url, timeout)
    seconds = math.ceil(end - start)
    values: dict[int, float] = {}
    for chunk in range(0, seconds, MAX_POINTS):
        lo, hi = start + chunk + 1, start + min(seconds, chunk + MAX_POINTS)
        result = _ask(
            url,
            query,
            lambda lo=lo, hi=hi: client.custom_query_range(
                query,
                start_time=datetime.fromtimestamp(lo, UTC),
                end_time=datetime.fromtimestamp(hi, UTC),
                step="1s",
            ),
        )
        if len(result) > 1:
            raise UserError(
                f"--requests {query!r}: returned {len(result)} series; wrap it in sum(...)"
            )
        for ts, value in result[0]["values"] if result else []:
            values[round(float(ts) - start) - 1] = float(value)
    gaps = [s for s in range(seconds) if s not in values]
    if gaps:
        raise UserError(
            f"--requests {query!r}: no value at {len(gaps)} of {seconds} seconds "
            f"(first at start + {gaps[0]} s)"
        )
    return [values[s] for s in range(seconds)]
