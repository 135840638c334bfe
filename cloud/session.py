"""One load-and-observe session: Locust runs, the cluster is polled, a Trace comes out.

t = 0 is when the Locust child started (the simulator's t = 0 is the load's start too). Per
second ``s`` the trace takes Locust's sample for ``[s, s+1)`` and the cluster's state as last
observed at or before ``s`` (the first observation fills the seconds before it). Cost: the
``cost_usd`` column bills the observed nodes from t = 0, per second with a one-minute
minimum (sim.cluster.cost); the ``--max-cost`` guard also counts the set-up time from the
cluster's creation to t = 0 at the initial nodes' price and the cluster fee, and the load
balancer's hourly price from its Service's creation, since those are billed too.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloud.errors import Aborted, CloudError
from cloud.load import LoadProcess, LoadSpec
from cloud.observe import Snapshot, Tracker, read_snapshot
from cloud.plan import LOAD_BALANCER_PER_HOUR, standing_cost_per_hour
from cloud.settings import CloudSettings
from cloud.teardown import Say
from sim import __version__
from sim.compare import LatencyHistogram
from sim.diagnosis import causes
from sim.engine import slo_checks
from sim.loader import scenario_sha256
from sim.recorder import histogram_columns
from sim.runinfo import settings as run_settings
from sim.scenario import Scenario
from sim.trace import COLUMNS, Cell, Trace, timeline_figures

MAX_OBSERVE_FAILURES = 5
"""Consecutive failed polls (API server unreachable) before the run is stopped."""


class CostLimitReached(Aborted):
    """The ``--max-cost`` guard: the run's cost so far reached the limit."""


def cpu_target(scenario: Scenario) -> int | None:
    for metric in (scenario.hpa.metrics or []) if scenario.hpa else []:
        if metric.resource is not None and metric.resource.name == "cpu":
            return metric.resource.target.averageUtilization
    return None


class Session:
    def __init__(
        self,
        scenario: Scenario,
        settings: CloudSettings,
        kube: Any,
        *,
        endpoint: str,
        out: Path,
        say: Say,
        seed: int,
        backend: str,
        run_id: str,
        max_cost: float | None = None,
        pools: tuple[str, ...] | None = None,
        billing_started: float | None = None,
        load_balancer_since: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        python: str | None = None,
    ) -> None:
        self.scenario, self.settings, self.kube = scenario, settings, kube
        self.endpoint, self.out, self.say = endpoint, out, say
        self.seed, self.backend, self.run_id = seed, backend, run_id
        self.max_cost = max_cost
        self.clock, self.sleep = clock, sleep
        self.billing_started = billing_started
        self.load_balancer_since = load_balancer_since
        self.tracker = Tracker(
            deployment=scenario.deployment.name,
            pools=pools,
            cpu_request_millis=scenario.deployment.resources.requests.cpu,
            management_fee=scenario.cluster.management_fee and backend == "gke",
        )
        spec = LoadSpec.for_scenario(
            scenario,
            host=endpoint,
            seed=seed,
            image=settings.image_file,
            signature_name=settings.signature_name,
            model_version=settings.model_version,
            client_timeout=settings.client_timeout,
        )
        self.load = LoadProcess(spec, out) if python is None else LoadProcess(spec, out, python)
        self.t0: float | None = None
        self.observations: list[tuple[float, dict[str, Cell]]] = []
        self.events: list[dict[str, Any]] = []
        self.setup_cost = 0.0
        self.wall_started = clock()

    # --- running ------------------------------------------------------------------------------

    def observe_once(self, now: float) -> Snapshot:
        assert self.t0 is not None
        snap = read_snapshot(
            self.kube,
            namespace=self.settings.namespace,
            app=self.scenario.deployment.name,
            hpa_name=self.scenario.deployment.name if self.scenario.hpa is not None else None,
            t0=self.t0,
            now=now,
        )
        self.events += self.tracker.update(snap)
        self.observations.append((snap.t, self.tracker.gauges(snap)))
        return snap

    def guard_cost(self, t: float) -> float:
        """What the run has cost by ``t``: set-up, the nodes observed, the load balancer."""
        assert self.t0 is not None
        balancer = 0.0
        if self.load_balancer_since is not None:
            hours = max(0.0, self.t0 + t - self.load_balancer_since) / 3600
            balancer = LOAD_BALANCER_PER_HOUR * hours
        return self.setup_cost + self.tracker.cost(t) + balancer

    def run(self) -> None:
        """Start Locust, poll until the scenario's duration, then let Locust finish."""
        self.say(f"load: {self.scenario.duration:g} s of Locust against {self.endpoint}")
        self.t0 = self.load.start()
        if self.billing_started is not None:
            self.setup_cost = self._setup_cost(self.t0 - self.billing_started)
        interval = self.settings.observe_interval
        failures = 0
        next_poll = self.t0
        while True:
            now = self.clock()
            t = now - self.t0
            if t >= self.scenario.duration:
                break
            if not self.load.running:
                code = self.load.returncode
                if code not in (None, 0):
                    raise CloudError(f"Locust exited with code {code}; see {self.out}/locust.log")
            try:
                self.observe_once(now)
                failures = 0
            except Exception as err:  # the API server may blip (e.g. a control-plane upgrade)
                failures += 1
                self.events.append({"t": round(t, 3), "kind": "observe_error", "error": str(err)})
                if failures >= MAX_OBSERVE_FAILURES:
                    raise CloudError(
                        f"cannot observe the cluster ({failures} polls failed): {err}"
                    ) from err
            cost = self.guard_cost(t)
            if self.max_cost is not None and cost >= self.max_cost:
                raise CostLimitReached(
                    f"--max-cost ${self.max_cost:.2f} reached (${cost:.2f} at t={t:.0f} s)"
                )
            next_poll += interval
            self.sleep(max(0.0, min(next_poll, self.t0 + self.scenario.duration) - self.clock()))
        if not self.load.wait(timeout=15):
            self.load.stop()

    def stop(self) -> None:
        self.load.stop()

    def _setup_cost(self, seconds: float) -> float:
        if seconds <= 0:
            return 0.0
        return standing_cost_per_hour(self.scenario, self.backend) * seconds / 3600

    # --- the trace ----------------------------------------------------------------------------

    def trace(self, aborted: str | None = None) -> Trace:
        """The Trace so far (all of it after :meth:`run`); ``aborted`` says why it stopped."""
        samples = {int(s["second"]): s for s in self.load.samples}
        if aborted is None:
            seconds = max(1, math.ceil(self.scenario.duration))
        else:
            seen = [*samples, *(math.floor(t) for t, _ in self.observations)]
            seconds = max(seen) + 1 if seen else 0
        times = [t for t, _ in self.observations]
        target = cpu_target(self.scenario)
        columns: dict[str, list[Cell]] = {c: [] for c in COLUMNS}
        for s in range(seconds):
            sample = samples.get(s)
            columns["t"].append(s)
            columns["users"].append(sample["users"] if sample else None)
            columns["offered_rps"].append(sample["sent"] if sample else None)
            columns["completed_rps"].append(sample["ok"] if sample else None)
            columns["failed_rps"].append(sample["failed"] if sample else None)
            for q in ("50", "95", "99"):
                columns[f"latency_p{q}"].append(sample[f"p{q}"] if sample else None)
            at = bisect.bisect_right(times, s) - 1
            gauges = self.observations[max(at, 0)][1] if self.observations else {}
            for name in (
                "replicas_desired",
                "replicas_current",
                "replicas_ready",
                "replicas_pending",
                "nodes_ready",
                "nodes_provisioning",
                "cpu_utilization",
            ):
                columns[name].append(gauges.get(name))
            columns["cpu_target"].append(target)
            columns["cost_usd"].append(round(self.tracker.cost(float(s)), 6))
        self._add_late(columns)
        events = sorted(self.events, key=lambda e: e["t"])
        histogram = self._latency_histogram(samples, seconds)
        return Trace(
            columns=columns,
            events=events,
            summary=self._summary(columns, events, aborted, histogram),
            latency_histogram=histogram,
        )

    def _late(self) -> tuple[int, int]:
        """Requests that completed (OK, failed) after Locust's last sample, as its total says."""
        total = self.load.total
        if not total:
            return 0, 0
        samples = self.load.samples
        failed = int(total["failures"]) - sum(int(s["failed"]) for s in samples)
        done = int(total["requests"]) - sum(int(s["ok"]) + int(s["failed"]) for s in samples)
        return max(0, done - failed), max(0, failed)

    def _add_late(self, columns: dict[str, list[Cell]]) -> None:
        """Count the late requests in the last second, as the simulator's recorder counts
        completions after the end, so the columns sum to the summary's requests_ok/failed."""
        ok, failed = self._late()
        if not columns["t"] or not (ok or failed):
            return
        for name, n in (("completed_rps", ok), ("failed_rps", failed)):
            columns[name][-1] = int(columns[name][-1] or 0) + n

    def _latency_histogram(
        self, samples: dict[int, dict[str, Any]], seconds: int
    ) -> dict[str, list[Cell]]:
        """latency_histogram.csv, as the simulator writes it: each sample's OK histogram, the
        late one folded into the last second."""
        per_second: dict[int, Counter[int]] = {}
        for second, sample in samples.items():
            if 0 <= second < seconds and sample.get("histogram"):
                per_second[second] = Counter({int(k): int(n) for k, n in sample["histogram"]})
        late = (self.load.total or {}).get("late_histogram") or []
        if late and seconds:
            last = per_second.setdefault(seconds - 1, Counter())
            last.update({int(k): int(n) for k, n in late})
        return histogram_columns(
            {s: (sorted(c), [c[k] for k in sorted(c)]) for s, c in per_second.items()}
        )

    def _failures_by_reason(self) -> dict[str, int]:
        """Failed requests by reason (cloud.failures), over the samples and the late ones."""
        total: Counter[str] = Counter()
        for sample in self.load.samples:
            total.update(sample.get("failures_by_reason") or {})
        total.update((self.load.total or {}).get("late_failures_by_reason") or {})
        return {reason: total[reason] for reason in sorted(total) if total[reason]}

    def _summary(
        self,
        columns: dict[str, list[Cell]],
        events: list[dict[str, Any]],
        aborted: str | None,
        histogram: dict[str, list[Cell]],
    ) -> dict[str, Any]:
        total = self.load.total or {}
        samples = self.load.samples
        sent = int(total.get("sent", sum(s["sent"] for s in samples)))
        failed = int(total.get("failures", sum(s["failed"] for s in samples)))
        done = int(total.get("requests", sum(s["ok"] + s["failed"] for s in samples)))
        ok = done - failed
        duration = float(len(columns["t"]))
        cost = self.tracker.cost(duration)
        # As the simulator's summary: percentiles of the OK requests, from the same log-bucket
        # histogram (Locust's own totals count failed requests' times too: kept beside them).
        merged = LatencyHistogram(histogram).percentiles(-math.inf, math.inf)
        p50, p95, p99 = (merged[k] for k in ("latency_p50", "latency_p95", "latency_p99"))
        node_hours = sum(
            max(0.0, min(duration, life.end if life.end is not None else duration) - life.start)
            for life in self.tracker.lives.values()
        )
        summary = {
            "scenario": self.scenario.name,
            "duration_s": duration,
            "requests_total": sent,
            "requests_ok": ok,
            "requests_failed": failed,
            "requests_abandoned": 0,
            "requests_in_flight": max(0, sent - done),
            "failures_by_reason": self._failures_by_reason(),
            "latency_mean": total.get("latency_mean"),
            "latency_p50": p50,
            "latency_p95": p95,
            "latency_p99": p99,
            **timeline_figures(columns, self.events),
            "node_hours": round(node_hours / 3600, 6),
            "cost_usd": round(cost, 6),
            "cost_per_million_requests": round(cost / ok * 1e6, 4) if ok else None,
            "slo": slo_checks(self.scenario, p50, p95, p99, failed, sent),
            "wall_seconds": round(self.clock() - self.wall_started, 3),
            "seed": self.seed,
            "scenario_sha256": scenario_sha256(self.scenario),
            "version": __version__,
            "backend": self.backend,
            "run_id": self.run_id,
            "endpoint": self.endpoint,
            "aborted": aborted,
            "setup_cost_usd": round(self.setup_cost, 6),
            "locust_errors": total.get("errors", {}),
            "locust_latency": {k: total.get(k) for k in ("p50", "p95", "p99")},
            "unpriced_machine_types": sorted(self.tracker.unpriced),
        }
        # As sim/engine.py: what went wrong, read off this trace, and the settings behind it.
        summary["causes"] = causes(columns, events, summary)
        summary["settings"] = run_settings(self.scenario)
        return summary
