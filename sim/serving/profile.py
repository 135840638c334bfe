"""Latency profiles: how fast a model server is at each load, measured.

A profile is data with provenance (``sim/serving/profiles/*.yaml``, written by ``scalelab
calibrate``). For each thread count (the cores the server has, which is also the size of its
intra-op pool) it holds a closed-loop ladder: ``concurrency`` callers with no think time keep
that many requests in flight, and the point records the throughput they got, X (requests/s),
the CPU the server burned meanwhile, U (cores, spinning intra-op threads included, as the
kernel and the kubelet count it), and the latency distribution. A lone request's CPU time does
not predict a loaded server: intra-op threads spin while they wait, so a busy server completes
more requests per CPU-second than a lone request suggests. The data plane therefore serves a
pod's n in-flight requests at X(c, n) in total and accrues U(c, n) on its CPU counter.

:meth:`Profile.throughput` and :meth:`Profile.cpu_cores` interpolate within the measured points
and leave them by the rules in :data:`EXTRAPOLATION_RULES`, with a
:class:`ProfileExtrapolationWarning` once per profile and rule.

A scenario names a family (``resnet101-tfserving``); the node's machine type picks the member
made for it, or the nearest one rescaled by the catalog's per-vCPU speed factor (recorded in
``Profile.scaled_from``). A scenario may also name one profile exactly, or a profile file.

Schema (``schema_version: 3``), one mapping::

    schema_version: 3
    name, family: str            # family groups one model's profiles across machine types
    machine_type: str | null     # a catalog machine type, null for a host measured locally
    kind: measured | endpoint | derived
    model: {...}                 # what was served: architecture, signature, payload
    defaults:
      threads: float             # cores TF Serving gets by default (the machine's vCPUs)
      overhead_s: float          # latency that burns no server CPU (network, HTTP), >= 0
      idle_cpu_cores: float      # CPU an idle server burns
      model_load_s, cold_factor  # optional: SavedModel load time; first request / warm one
      served_sigma: float        # optional: a lone request's lognormal spread through the
                                 # served path (REST), a floor under the work's spread
      served_plateau: float      # optional (> 0): the plateau through the served path over
                                 # the points' (in process); X is capped at it x the plateau
      waiting_spread:            # optional: the work's lognormal spread while more requests
        in_flight: [4, 7]        # are in flight than progress together (increasing, >= 1),
        sigma: [0.2, 0.39]       # fitted to closed loops through the served path (scalelab
                                 # fidelity); interpolated from the width's own spread, held
                                 # past the last; a bare number (session 14): every count
      after_idle:                # optional: a request that finds the server idle for gap_s
        gap_s: [0.01, ...]       # (increasing, > 0) costs factor x a back-to-back one's work
        factor: [1.02, ...]      # (> 0); interpolated from 1 at gap 0, held past the last gap
        cpu_factor: [1.01, ...]  # optional (> 0): its CPU, x a back-to-back one's; absent: the
                                 # CPU follows the work (factor)
    quantiles: [0.05, ..., 0.5, ..., 0.99]      # increasing, in (0, 1), contains 0.5
    points:                      # per threads: a batch-1 ladder over concurrency, from 1
      - threads: 2               # batch > 1 only at concurrency 1 (batching's cost)
        concurrency: 4
        batch: 1
        n: 120                   # latency samples
        latency_s: [...]         # at ``quantiles``, non-decreasing, end to end
        lognormal: {median_s: float, sigma: float, ks: float}   # fit; ks = Kolmogorov distance
        throughput_rps: float    # X: requests (whole batches) completed per second, > 0
        cpu_cores: float         # U: server CPU over the window / its length, > 0
        spread: {p50, p95}       # optional: relative range of the repeats' p50 and p95
        repeats: int             # optional
        background_cpu_cores: float  # optional: CPU other processes used meanwhile
    provenance: {...}            # CPU model, cores, TF version, date, command, method, ...
"""

from __future__ import annotations

import bisect
import itertools
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sim.cluster.catalog import machine_type
from sim.serving.calibrate.ladder import knee

SCHEMA_VERSION = 3
KINDS = ("measured", "endpoint", "derived")
DEFAULT_QUANTILES = (0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99)
REGENERATE = (
    "regenerate it: `scalelab calibrate --out FILE` (this machine), `scalelab calibrate "
    "--endpoint URL --model NAME --out FILE` (a live TF Serving) or `scalelab calibrate "
    "--derive-from LOCAL.yaml --machine-type TYPE --out FILE`"
)

_Z95 = 1.6448536269514722  # the standard normal's 0.95 quantile

EXTRAPOLATION_RULES = {
    "concurrency_above": "beyond the largest concurrency measured, throughput and CPU stay as "
    "there (the plateau) and latency less overhead_s grows in proportion to the requests in "
    "flight (Little's law); a warning only when the ladder stopped before its plateau (last "
    "step gained >= 3%)",
    "threads_below": "below the fewest threads measured, the server time-slices: throughput "
    "and CPU shrink in proportion to cores",
    "threads_above": "beyond the most threads measured, a server with c cores acts as c/t_max "
    "servers of t_max cores sharing the requests in flight, and no request runs faster than "
    "Amdahl's law L(c) = a + b/c fitted to the lone-request latencies allows; with one thread "
    "count measured, throughput and CPU are held",
    "batch_above": "beyond the largest batch measured, a batch's time grows linearly along the "
    "last two measured batch sizes (in proportion to batch when only batch 1 was measured)",
}
"""How the profile leaves its measured points, by axis and direction."""


class ProfileError(ValueError):
    """A profile file that does not follow the schema; the message names file, field and fix."""


class ProfileExtrapolationWarning(UserWarning):
    """A value was asked for outside a profile's measured range."""


@dataclass(frozen=True)
class Point:
    """One measured point (see the module docstring for the fields)."""

    threads: float
    concurrency: int
    batch: int
    n: int
    latency_s: tuple[float, ...]
    lognormal_median_s: float
    sigma: float
    ks: float
    throughput_rps: float
    cpu_cores: float
    spread: Mapping[str, float] | None = None
    repeats: int | None = None
    background_cpu_cores: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "threads": _num(self.threads),
            "concurrency": self.concurrency,
            "batch": self.batch,
            "n": self.n,
            "latency_s": [_round(v) for v in self.latency_s],
            "lognormal": {
                "median_s": _round(self.lognormal_median_s),
                "sigma": _round(self.sigma),
                "ks": _round(self.ks),
            },
            "throughput_rps": _round(self.throughput_rps),
            "cpu_cores": _round(self.cpu_cores),
        }
        if self.spread is not None:
            out["spread"] = {k: _round(v) for k, v in self.spread.items()}
        if self.repeats is not None:
            out["repeats"] = self.repeats
        if self.background_cpu_cores is not None:
            out["background_cpu_cores"] = _round(self.background_cpu_cores)
        return out


def _round(value: float, digits: int = 5) -> float:
    """Five significant digits: measurement noise is far larger, and diffs stay readable."""
    return float(f"{value:.{digits}g}")


def _rounded(value: Any) -> Any:
    """Floats anywhere in ``value`` to five significant digits (provenance timings)."""
    if isinstance(value, float):
        return _round(value)
    if isinstance(value, Mapping):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def _num(value: float) -> float | int:
    return int(value) if float(value).is_integer() else _round(value)


def _lerp(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """Piecewise-linear ys(x) over increasing xs, held beyond both ends."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, x)
    w = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
    return ys[i - 1] + w * (ys[i] - ys[i - 1])


def plateau_fit(concurrency: Sequence[int], throughput: Sequence[float]) -> list[float]:
    """X(n) as the model uses it. The steps from the ladder's knee on (``calibrate.ladder``)
    measure one saturated throughput and differ by their windows' noise only, so each stands
    for their mean; then X is made non-decreasing by pooling adjacent steps that fall (isotonic
    regression). Taking the best window instead, as a running maximum does, reads the plateau
    high by about a window's noise (4% on this machine's ladders)."""
    xs = list(throughput)
    at = knee(list(zip(concurrency, xs, strict=True)))
    if at is not None:
        i = list(concurrency).index(at)
        flat = sum(xs[i:]) / len(xs[i:])
        xs[i:] = [flat] * len(xs[i:])
    blocks: list[list[float]] = []  # [mean, count] per pooled run of steps
    for x in xs:
        blocks.append([x, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, count = blocks.pop()
            last = blocks[-1]
            last[0] = (last[0] * last[1] + mean * count) / (last[1] + count)
            last[1] += count
    return [mean for mean, count in blocks for _ in range(int(count))]


def _served(x: list[float], ratio: float) -> list[float]:
    """X(n) through the served path: capped at ``ratio`` x the plateau, never below the lone
    request's X (what the path adds to a lone request is ``overhead_s``). Assumption: the path
    costs throughput only where the server's CPU is all busy, which is the plateau; a ratio
    above 1 (measured: s12 n1 read 1.037) leaves X as measured, the path adds work only."""
    cap = max(x[-1] * ratio, x[0])
    return [min(v, cap) for v in x]


class _Ladder:
    """One thread count's measurements: X, U and latency over concurrency; batch cost."""

    def __init__(
        self,
        threads: float,
        points: Sequence[Point],
        quantiles: Sequence[float],
        served_plateau: float = 1.0,
    ):
        self.threads = threads
        ladder = sorted((p for p in points if p.batch == 1), key=lambda p: p.concurrency)
        self.n = [float(p.concurrency) for p in ladder]
        measured = [p.throughput_rps for p in ladder]
        self.x = plateau_fit([p.concurrency for p in ladder], measured)
        if served_plateau != 1.0:
            self.x = _served(self.x, served_plateau)
        self.u = [p.cpu_cores for p in ladder]
        self.lat = [p.latency_s for p in ladder]
        self.sigma = ladder[0].sigma  # a lone request's spread: the work's own variability
        # The ladder ends on its plateau when its last step gained less than 3%.
        self.plateau = len(measured) > 1 and measured[-1] <= 1.03 * max(measured[:-1])
        self.q50 = list(quantiles).index(0.5)
        batches = sorted((p for p in points if p.concurrency == 1), key=lambda p: p.batch)
        self.batch = [float(p.batch) for p in batches]
        self.batch_time = [1 / p.throughput_rps for p in batches]

    def throughput(self, n: float) -> float:
        """X(n): linear between measured n, up to 1 at n < 1 (idle part of the time), flat
        beyond the last (the plateau)."""
        if n < self.n[0]:
            return self.x[0] * n / self.n[0]
        return _lerp(self.n, self.x, n)

    def cpu(self, n: float) -> float:
        if n < self.n[0]:
            return self.u[0] * n / self.n[0]
        return _lerp(self.n, self.u, n)

    def latency(self, n: float, overhead: float = 0.0) -> list[float]:
        """Latency quantiles at n in flight; beyond the ladder, the server's part (all but
        ``overhead``) scaled by n (Little's law)."""
        if n >= self.n[-1]:
            k = n / self.n[-1]
            return [overhead + max(v - overhead, 0.0) * k for v in self.lat[-1]]
        return [_lerp(self.n, [q[i] for q in self.lat], n) for i in range(len(self.lat[0]))]

    def batch_cost(self, b: float) -> float:
        """Time of a lone batch of b relative to a lone batch of 1."""
        xs, ts = self.batch, self.batch_time
        if b <= xs[-1]:
            return _lerp(xs, ts, b) / ts[0]
        if len(xs) == 1:
            return b
        slope = max(ts[-1] - ts[-2], 0.0) / (xs[-1] - xs[-2])
        return (ts[-1] + slope * (b - xs[-1])) / ts[0]


@dataclass(frozen=True, eq=False)
class Profile:
    """A model server's measured ladders on one machine (or host), and the model built on them.

    ``speedup`` rescales a profile to a machine type faster per vCPU (throughput times it,
    latency's server part divided by it, CPU in use unchanged).
    """

    name: str
    family: str
    machine_type: str | None
    kind: str
    quantiles: tuple[float, ...]
    points: tuple[Point, ...]
    default_threads: float
    overhead_s: float
    idle_cpu_cores: float
    model_load_s: float | None = None
    cold_factor: float | None = None
    served_sigma: float | None = None
    served_plateau: float | None = None
    """The plateau through the served path over the ladders' (measured in process), where
    ``scalelab fidelity`` measured both: X(n) is capped at it."""
    waiting_spread: tuple[tuple[int, float], ...] = ()
    """(in flight, sigma): the work's lognormal spread while more requests are in flight than
    the inter-op width lets progress together, where ``scalelab fidelity`` fitted it to closed
    loops through the served path (:func:`sim.serving.fidelity.fit_waiting_spread`); empty: the
    spread measured at the width, held (:func:`sim.serving.model.past_width`)."""
    after_idle: tuple[tuple[float, float], ...] = ()
    """(gap_s, factor): a request arriving at a server idle for gap_s seconds does factor times
    the work of one arriving back to back (``calibrate.idle``); empty: factor 1."""
    after_idle_cpu: tuple[float, ...] = ()
    """Per gap of ``after_idle``, its CPU over a back-to-back one's; empty: as its work. In
    process here the CPU after idle grew 0.03-0.1 less than the latency."""
    model: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    scaled_from: str | None = None
    speedup: float = 1.0
    origin: str = ""
    _ladders: tuple[_Ladder, ...] = field(init=False, repr=False)
    _amdahl: tuple[float, float] = field(init=False, repr=False)
    _idle_gaps: list[float] = field(init=False, repr=False)
    _idle_factors: list[float] = field(init=False, repr=False)
    _idle_cpu: list[float] = field(init=False, repr=False)
    _warned: set[str] = field(init=False, repr=False, default_factory=set)
    _tables: dict[tuple[float, int], tuple[list[float], list[float]]] = field(
        init=False, repr=False, default_factory=dict
    )
    _spreads: dict[tuple[float, int], list[float]] = field(
        init=False, repr=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        threads = sorted({p.threads for p in self.points})
        ladders = tuple(
            _Ladder(
                t,
                [p for p in self.points if p.threads == t],
                self.quantiles,
                self.served_plateau or 1.0,
            )
            for t in threads
        )
        object.__setattr__(self, "_ladders", ladders)
        object.__setattr__(self, "_amdahl", _fit_amdahl(ladders))
        object.__setattr__(self, "_idle_gaps", [0.0] + [g for g, _ in self.after_idle])
        object.__setattr__(self, "_idle_factors", [1.0] + [f for _, f in self.after_idle])
        object.__setattr__(self, "_idle_cpu", [1.0, *self.after_idle_cpu])
        if self.after_idle_cpu and len(self.after_idle_cpu) != len(self.after_idle):
            raise ValueError(f"{self.name}: after_idle_cpu needs one factor per after_idle gap")

    # --- the model ----------------------------------------------------------------------------

    @property
    def threads(self) -> tuple[float, ...]:
        """The thread counts measured."""
        return tuple(ladder.threads for ladder in self._ladders)

    def concurrency(self, threads: float) -> tuple[float, ...]:
        """The ladder measured at the thread count nearest ``threads``."""
        return tuple(min(self._ladders, key=lambda lad: abs(lad.threads - threads)).n)

    def throughput(self, cores: float, n: float, batch: int = 1) -> float:
        """X(c, n): requests per second a server with ``cores`` completes with ``n`` in flight
        (batches per second for ``batch`` > 1: a lone batch takes :meth:`batch_cost` times a
        lone request)."""
        x = self._combine(cores, n, "throughput") * self.speedup
        return x / self.batch_cost(cores, batch) if batch > 1 else x

    def cpu_cores(self, cores: float, n: float) -> float:
        """U(c, n): cores the server keeps busy with ``n`` in flight (idle CPU at n = 0)."""
        if n <= 0:
            return self.idle_cpu_cores
        return max(self._combine(cores, n, "cpu"), self.idle_cpu_cores)

    def latency(self, cores: float, n: float) -> list[float]:
        """Latency quantiles at (c, n), end to end, by :attr:`quantiles`."""
        lower, upper, w = self._bracket(cores)
        o = self.overhead_s
        lat = [
            math.exp((1 - w) * math.log(a) + w * math.log(b))
            for a, b in zip(lower.latency(n, o), upper.latency(n, o), strict=True)
        ]
        x_here = self._combine(cores, n, "throughput")
        x_ref = math.exp(
            (1 - w) * math.log(lower.throughput(n)) + w * math.log(upper.throughput(n))
        )
        scale = x_ref / x_here / self.speedup  # beyond the thread range, by the throughput rule
        return [o + max(v - o, 0.0) * scale for v in lat]

    def sigma(self, cores: float) -> float:
        """A lone request's lognormal spread: the variability of the work itself."""
        lower, upper, w = self._bracket(cores)
        return (1 - w) * lower.sigma + w * upper.sigma

    def spread(self, cores: float, n: float) -> float:
        """The lognormal sigma of the latency distribution measured with ``n`` in flight,
        ln(p95 / p50) / 1.645 of its server part: under load requests do not share the CPU
        evenly, and the data plane draws a request's work with this spread (mean 1 kept). Never
        below the served path's lone spread (``served_sigma``) when one was measured."""
        floor = max(self.sigma(cores), self.served_sigma or 0.0)
        qs = self.quantiles
        if 0.95 not in qs or n <= 1:
            return floor
        o = self.overhead_s
        lat = self.latency(cores, n)
        p50, p95 = lat[qs.index(0.5)] - o, lat[qs.index(0.95)] - o
        if p50 <= 0 or p95 <= p50:
            return floor
        return max(math.log(p95 / p50) / _Z95, floor)

    def spreads(self, cores: float, size: int) -> list[float]:
        """:meth:`spread` for n = 0 .. size - 1, kept per cores (every pod of a deployment asks
        for the same)."""
        key = (round(cores, 3), size)
        hit = self._spreads.get(key)
        if hit is None:
            hit = self._spreads[key] = [self.spread(cores, n) for n in range(size)]
        return hit

    def batch_cost(self, cores: float, batch: int) -> float:
        """Time of a lone batch of ``batch`` relative to a lone single request."""
        if batch <= 1:
            return 1.0
        lower, upper, w = self._bracket(cores)
        if batch > min(lower.batch[-1], upper.batch[-1]):
            self._warn("batch_above")
        return (1 - w) * lower.batch_cost(batch) + w * upper.batch_cost(batch)

    def alone_latency(self, cores: float | None = None) -> float:
        """Mean latency of a request with the server to itself."""
        return self.overhead_s + 1 / self.throughput(cores or self.default_threads, 1)

    def idle_factor(self, gap: float) -> float:
        """A request's work after the server has been idle ``gap`` seconds, relative to one
        sent back to back (which the ladders measure)."""
        return _lerp(self._idle_gaps, self._idle_factors, gap)

    def idle_cpu_factor(self, gap: float) -> float:
        """The CPU of a request after ``gap`` seconds idle, relative to one sent back to back;
        without a measured CPU factor, as its work."""
        if not self.after_idle_cpu:
            return self.idle_factor(gap)
        return _lerp(self._idle_gaps, self._idle_cpu, gap)

    def tables(self, cores: float, size: int) -> tuple[list[float], list[float]]:
        """For the data plane: per-request progress rate X(c, n)/n and CPU U(c, n) for
        n = 0 .. size - 1 (the rate is in requests/s of mean work 1; 0 at n = 0)."""
        key = (round(cores, 3), size)
        hit = self._tables.get(key)
        if hit is None:
            c = max(key[0], 1e-3)
            rate = [0.0] + [self.throughput(c, n) / n for n in range(1, size)]
            burn = [self.cpu_cores(c, n) for n in range(size)]
            hit = self._tables[key] = (rate, burn)
        return hit

    def _bracket(self, cores: float) -> tuple[_Ladder, _Ladder, float]:
        """The measured thread counts around ``cores`` and the log-linear weight between."""
        ladders = self._ladders
        if cores <= ladders[0].threads:
            return ladders[0], ladders[0], 0.0
        if cores >= ladders[-1].threads:
            return ladders[-1], ladders[-1], 0.0
        i = bisect.bisect_right([lad.threads for lad in ladders], cores)
        lo, hi = ladders[i - 1], ladders[i]
        return lo, hi, math.log(cores / lo.threads) / math.log(hi.threads / lo.threads)

    def _combine(self, cores: float, n: float, what: str) -> float:
        if not cores > 0:
            raise ValueError(f"profile {self.name}: cores must be > 0, got {cores}")
        ladders = self._ladders
        lo_t, hi_t = ladders[0].threads, ladders[-1].threads
        # beyond the thread range, each of the c / t_max copies has n / copies in flight
        per_copy = n * hi_t / cores if cores > hi_t and len(ladders) > 1 else n
        if any(per_copy > lad.n[-1] and not lad.plateau for lad in self._bracket(cores)[:2]):
            self._warn("concurrency_above")
        if cores < lo_t * (1 - 1e-9):
            self._warn("threads_below")
            value: float = getattr(ladders[0], what)(n)
            return value * cores / lo_t
        if cores > hi_t * (1 + 1e-9):
            self._warn("threads_above")
            top = ladders[-1]
            if len(ladders) == 1:
                return float(getattr(top, what)(n))
            copies = cores / hi_t
            value = getattr(top, what)(n / copies) * copies
            if what == "throughput":
                a, b = self._amdahl
                value = min(value, n / (a + b / cores))
            return value
        lower, upper, w = self._bracket(cores)
        a, b = getattr(lower, what)(n), getattr(upper, what)(n)
        if a <= 0 or b <= 0:
            return 0.0  # nothing in flight
        return math.exp((1 - w) * math.log(a) + w * math.log(b))

    def _warn(self, rule: str) -> None:
        if rule not in self._warned:
            self._warned.add(rule)
            warnings.warn(
                f"profile {self.name}: {rule}; {EXTRAPOLATION_RULES[rule]}",
                ProfileExtrapolationWarning,
                stacklevel=3,
            )

    # --- derived profiles -----------------------------------------------------------------------

    def rescaled(
        self, *, name: str, machine: str, speedup: float, threads: float, note_source: bool = True
    ) -> Profile:
        """This profile on a machine ``speedup`` times faster per vCPU, defaulting to
        ``threads`` cores."""
        return Profile(
            name=name,
            family=self.family,
            machine_type=machine,
            kind=self.kind,
            quantiles=self.quantiles,
            points=self.points,
            default_threads=threads,
            overhead_s=self.overhead_s,
            idle_cpu_cores=self.idle_cpu_cores,
            model_load_s=self.model_load_s,
            cold_factor=self.cold_factor,
            served_sigma=self.served_sigma,
            served_plateau=self.served_plateau,
            waiting_spread=self.waiting_spread,
            after_idle=self.after_idle,
            after_idle_cpu=self.after_idle_cpu,
            model=self.model,
            provenance=self.provenance,
            scaled_from=self.name if note_source else self.scaled_from,
            speedup=self.speedup * speedup,
            origin=self.origin,
        )

    def to_dict(self) -> dict[str, Any]:
        """The schema-3 mapping (a rescaled profile writes its source's points)."""
        defaults: dict[str, Any] = {
            "threads": _num(self.default_threads),
            "overhead_s": _round(self.overhead_s),
            "idle_cpu_cores": _round(self.idle_cpu_cores),
        }
        if self.model_load_s is not None:
            defaults["model_load_s"] = _round(self.model_load_s)
        if self.cold_factor is not None:
            defaults["cold_factor"] = _round(self.cold_factor)
        if self.served_sigma is not None:
            defaults["served_sigma"] = _round(self.served_sigma)
        if self.served_plateau is not None:
            defaults["served_plateau"] = _round(self.served_plateau)
        if self.waiting_spread:
            defaults["waiting_spread"] = {
                "in_flight": [k for k, _ in self.waiting_spread],
                "sigma": [_round(v) for _, v in self.waiting_spread],
            }
        if self.after_idle:
            defaults["after_idle"] = {
                "gap_s": [_round(g) for g, _ in self.after_idle],
                "factor": [_round(f) for _, f in self.after_idle],
            }
            if self.after_idle_cpu:
                defaults["after_idle"]["cpu_factor"] = [_round(f) for f in self.after_idle_cpu]
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "family": self.family,
            "machine_type": self.machine_type,
            "kind": self.kind,
            "model": dict(self.model),
            "defaults": defaults,
            "quantiles": list(self.quantiles),
            "points": [p.to_dict() for p in self.points],
            "provenance": _rounded(dict(self.provenance)),
        }


def _fit_amdahl(ladders: Sequence[_Ladder]) -> tuple[float, float]:
    """Lone latency L(t) = a + b/t over the measured thread counts; (1/X, 0) when no speedup."""
    lone = [1 / lad.x[0] for lad in ladders]
    if len(ladders) < 2:
        return lone[-1], 0.0
    xs = [1 / lad.threads for lad in ladders]
    mx, my = sum(xs) / len(xs), sum(lone) / len(lone)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, lone, strict=True)) / sxx
    if b <= 0:
        return lone[-1], 0.0
    a = max(my - b * mx, 0.0)  # better than linear speedup (cache effects): no serial part
    return a, b


# --- reading and writing -------------------------------------------------------------------------


def _require(data: Mapping[str, Any], key: str, origin: str, where: str = "") -> Any:
    if key not in data or data[key] is None:
        raise ProfileError(f"{origin}: missing field {where}{key!r}")
    return data[key]


def _number(value: Any, origin: str, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProfileError(f"{origin}: {where} must be a number, got {value!r}")
    if positive and value <= 0:
        raise ProfileError(f"{origin}: {where} must be > 0, got {value!r}")
    if value < 0:
        raise ProfileError(f"{origin}: {where} must be >= 0, got {value!r}")
    return float(value)


def _integer(value: Any, origin: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ProfileError(f"{origin}: {where} must be an integer >= 1, got {value!r}")
    return value


def _point(raw: Any, i: int, nq: int, origin: str) -> Point:
    where = f"points[{i}]"
    if not isinstance(raw, Mapping):
        raise ProfileError(f"{origin}: {where} must be a mapping")
    if "cpu_s_per_request" in raw:
        raise ProfileError(
            f"{origin}: {where}.cpu_s_per_request is schema 2 (a lone request's CPU); schema 3 "
            f"measures throughput_rps and cpu_cores per concurrency: {REGENERATE}"
        )

    def number(key: str, *, positive: bool = False, within: Mapping[str, Any] = raw) -> float:
        prefix = f"{where}." if within is raw else f"{where}.lognormal."
        return _number(
            _require(within, key, origin, prefix), origin, prefix + key, positive=positive
        )

    def integer(key: str) -> int:
        return _integer(_require(raw, key, origin, f"{where}."), origin, f"{where}.{key}")

    lat = _require(raw, "latency_s", origin, f"{where}.")
    if not isinstance(lat, list) or len(lat) != nq:
        raise ProfileError(
            f"{origin}: {where}.latency_s must list one latency per quantile ({nq} values)"
        )
    values = tuple(_number(v, origin, f"{where}.latency_s", positive=True) for v in lat)
    if any(b < a for a, b in itertools.pairwise(values)):
        raise ProfileError(f"{origin}: {where}.latency_s must be non-decreasing, got {lat}")
    fit = _require(raw, "lognormal", origin, f"{where}.")
    if not isinstance(fit, Mapping):
        raise ProfileError(f"{origin}: {where}.lognormal must be a mapping")
    spread = raw.get("spread")
    if spread is not None:
        if not isinstance(spread, Mapping) or set(spread) - {"p50", "p95"}:
            raise ProfileError(
                f"{origin}: {where}.spread must be a mapping with p50 and/or p95, got {spread!r}"
            )
        spread = {k: _number(v, origin, f"{where}.spread.{k}") for k, v in spread.items()}
    background = raw.get("background_cpu_cores")
    return Point(
        threads=number("threads", positive=True),
        concurrency=integer("concurrency"),
        batch=integer("batch"),
        n=integer("n"),
        latency_s=values,
        lognormal_median_s=number("median_s", positive=True, within=fit),
        sigma=number("sigma", within=fit),
        ks=number("ks", within=fit),
        throughput_rps=number("throughput_rps", positive=True),
        cpu_cores=number("cpu_cores", positive=True),
        spread=spread,
        repeats=integer("repeats") if raw.get("repeats") is not None else None,
        background_cpu_cores=None
        if background is None
        else _number(background, origin, f"{where}.background_cpu_cores"),
    )


_AFTER_IDLE_KEYS = {"gap_s", "factor", "cpu_factor"}


def _after_idle(raw: Any, origin: str) -> tuple[tuple[tuple[float, float], ...], tuple[float, ...]]:
    """``defaults.after_idle`` as (gap, factor) pairs and the CPU factors (empty: none)."""
    if raw is None:
        return (), ()
    where = "defaults.after_idle"
    if not isinstance(raw, Mapping) or not {"gap_s", "factor"} <= set(raw) <= _AFTER_IDLE_KEYS:
        raise ProfileError(
            f"{origin}: {where} must be a mapping of gap_s, factor and optionally cpu_factor, "
            f"got {raw!r}"
        )
    gaps = raw["gap_s"]
    lists = {k: raw[k] for k in ("factor", "cpu_factor") if k in raw}
    if not isinstance(gaps, list) or any(
        not isinstance(v, list) or len(v) != len(gaps) for v in lists.values()
    ):
        raise ProfileError(
            f"{origin}: {where}: gap_s, {' and '.join(lists)} must be lists of one length"
        )
    gap = [_number(g, origin, f"{where}.gap_s[{i}]", positive=True) for i, g in enumerate(gaps)]
    if any(b <= a for a, b in itertools.pairwise(gap)):
        raise ProfileError(f"{origin}: {where}.gap_s must increase, got {gaps!r}")
    read = {
        k: [_number(f, origin, f"{where}.{k}[{i}]", positive=True) for i, f in enumerate(v)]
        for k, v in lists.items()
    }
    return tuple(zip(gap, read["factor"], strict=True)), tuple(read.get("cpu_factor", ()))


def _waiting_spread(raw: Any, origin: str) -> tuple[tuple[int, float], ...]:
    """``defaults.waiting_spread`` as (in flight, sigma) pairs. A bare number, as session 14's
    ``scalelab fidelity`` wrote it, is that sigma at every count past the width: one point at
    1, never past a width, is held (:func:`sim.serving.model.past_width`)."""
    where = "defaults.waiting_spread"
    if raw is None:
        return ()
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return ((1, _number(raw, origin, where)),)
    if not isinstance(raw, Mapping) or set(raw) != {"in_flight", "sigma"}:
        raise ProfileError(
            f"{origin}: {where} must be a mapping of in_flight and sigma (lists of one length) "
            f"or a number, got {raw!r}"
        )
    counts, sigmas = raw["in_flight"], raw["sigma"]
    if not isinstance(counts, list) or not isinstance(sigmas, list) or len(counts) != len(sigmas):
        raise ProfileError(f"{origin}: {where}: in_flight and sigma must be lists of one length")
    at = [_integer(k, origin, f"{where}.in_flight[{i}]") for i, k in enumerate(counts)]
    if not at or any(b <= a for a, b in itertools.pairwise(at)):
        raise ProfileError(f"{origin}: {where}.in_flight must increase, got {counts!r}")
    spread = [_number(v, origin, f"{where}.sigma[{i}]") for i, v in enumerate(sigmas)]
    return tuple(zip(at, spread, strict=True))


def _check_ladders(points: Sequence[Point], origin: str) -> None:
    """Per threads, a batch-1 ladder from concurrency 1; batch > 1 only at concurrency 1."""
    seen: dict[tuple[float, int, int], int] = {}
    for i, p in enumerate(points):
        key = (p.threads, p.concurrency, p.batch)
        if key in seen:
            raise ProfileError(
                f"{origin}: points[{i}] repeats threads={p.threads:g} concurrency="
                f"{p.concurrency} batch={p.batch} (first at points[{seen[key]}]); keep one"
            )
        seen[key] = i
        if p.batch > 1 and p.concurrency != 1:
            raise ProfileError(
                f"{origin}: points[{i}] has batch={p.batch} at concurrency={p.concurrency}; "
                "batch > 1 is measured at concurrency 1 only (it gives batching's cost)"
            )
    for t in sorted({p.threads for p in points}):
        if (t, 1, 1) not in seen:
            raise ProfileError(
                f"{origin}: threads={t:g} has no concurrency=1 batch=1 point; every thread "
                "count's ladder starts with a lone request"
            )


def profile_from_dict(data: Any, origin: str = "<profile>") -> Profile:
    """Validate a schema-3 mapping and build the :class:`Profile`; errors name the field."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{origin}: expected a mapping at the top level")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        hint = (
            f"; schema {version} profiles described a lone request, not a loaded server: "
            f"{REGENERATE}"
            if version in (1, 2)
            else ""
        )
        raise ProfileError(
            f"{origin}: schema_version must be {SCHEMA_VERSION}, got {version!r}{hint}"
        )
    kind = _require(data, "kind", origin)
    if kind not in KINDS:
        raise ProfileError(f"{origin}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    machine = data.get("machine_type")
    if machine is not None:
        try:
            machine_type(str(machine))
        except ValueError as error:
            raise ProfileError(f"{origin}: machine_type: {error}") from None
    quantiles = _require(data, "quantiles", origin)
    if (
        not isinstance(quantiles, list)
        or not quantiles
        or any(isinstance(q, bool) or not isinstance(q, int | float) for q in quantiles)
        or any(not 0 < q < 1 for q in quantiles)
        or any(b <= a for a, b in itertools.pairwise(quantiles))
        or 0.5 not in quantiles
    ):
        raise ProfileError(
            f"{origin}: quantiles must be an increasing list in (0, 1) containing 0.5, "
            f"got {quantiles!r}"
        )
    raw_points = _require(data, "points", origin)
    if not isinstance(raw_points, list) or not raw_points:
        raise ProfileError(f"{origin}: points must be a non-empty list")
    points = tuple(_point(raw, i, len(quantiles), origin) for i, raw in enumerate(raw_points))
    _check_ladders(points, origin)
    defaults = _require(data, "defaults", origin)
    if not isinstance(defaults, Mapping):
        raise ProfileError(f"{origin}: defaults must be a mapping")

    def opt(key: str, *, positive: bool = False) -> float | None:
        value = defaults.get(key)
        if value is None:
            return None
        return _number(value, origin, f"defaults.{key}", positive=positive)

    provenance = _require(data, "provenance", origin)
    if not isinstance(provenance, Mapping) or not provenance:
        raise ProfileError(f"{origin}: provenance must be a non-empty mapping (where from?)")
    idle = _after_idle(defaults.get("after_idle"), origin)
    return Profile(
        name=str(_require(data, "name", origin)),
        family=str(_require(data, "family", origin)),
        machine_type=None if machine is None else str(machine),
        kind=str(kind),
        quantiles=tuple(float(q) for q in quantiles),
        points=points,
        default_threads=_number(
            _require(defaults, "threads", origin, "defaults."),
            origin,
            "defaults.threads",
            positive=True,
        ),
        overhead_s=_number(defaults.get("overhead_s", 0.0), origin, "defaults.overhead_s"),
        idle_cpu_cores=_number(
            defaults.get("idle_cpu_cores", 0.0), origin, "defaults.idle_cpu_cores"
        ),
        model_load_s=opt("model_load_s"),
        cold_factor=opt("cold_factor"),
        served_sigma=opt("served_sigma"),
        served_plateau=opt("served_plateau", positive=True),
        waiting_spread=_waiting_spread(defaults.get("waiting_spread"), origin),
        after_idle=idle[0],
        after_idle_cpu=idle[1],
        model=dict(data.get("model") or {}),
        provenance=dict(provenance),
        origin=origin,
    )


def load_profile(path: Path | str) -> Profile:
    """Read a profile file (``.yaml``/``.yml``/``.json``)."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as error:
        raise ProfileError(f"cannot read profile {path}: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as error:
        raise ProfileError(f"{path}: not valid YAML/JSON: {error}") from None
    return profile_from_dict(data, str(path))


def dump_profile(data: Mapping[str, Any] | Profile, path: Path | str) -> Path:
    """Validate and write a profile in canonical form; JSON for ``.json``, YAML otherwise."""
    profile = data if isinstance(data, Profile) else profile_from_dict(data, str(path))
    mapping = profile.to_dict()  # canonical: validated, fields in schema order, 5 digits
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        import json

        text = json.dumps(mapping, indent=1) + "\n"
    else:
        header = (
            "# scalelab latency profile (schema 3). Written by `scalelab calibrate`: regenerate "
            "it\n# with the command in provenance.command instead of editing numbers by hand.\n"
        )
        text = header + yaml.dump(
            mapping, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True
        )
    path.write_text(text, "utf-8")
    return path


class _Dumper(yaml.SafeDumper):
    """Block style, except lists of numbers and small all-scalar mappings on one line."""


def _flow_if_flat(dumper: yaml.SafeDumper, data: Any, tag: str, short: bool) -> yaml.Node:
    flat = all(isinstance(v, int | float | bool) or v is None for v in data)
    if tag.endswith("map"):
        flat = len(data) <= 3 and all(
            isinstance(v, int | float | bool) or v is None for v in data.values()
        )
        return dumper.represent_mapping(tag, data.items(), flow_style=flat)
    return dumper.represent_sequence(tag, data, flow_style=flat and short)


_Dumper.add_representer(list, lambda d, v: _flow_if_flat(d, v, "tag:yaml.org,2002:seq", short=True))
_Dumper.add_representer(dict, lambda d, v: _flow_if_flat(d, v, "tag:yaml.org,2002:map", short=True))


@cache
def builtin_profiles() -> tuple[Profile, ...]:
    """The profiles shipped in ``sim/serving/profiles/``, by file name."""
    folder = resources.files("sim.serving") / "profiles"
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".json")):
            data = yaml.safe_load(entry.read_text("utf-8"))
            found.append(profile_from_dict(data, f"sim/serving/profiles/{entry.name}"))
    return tuple(found)


def _known(profiles: Iterable[Profile]) -> str:
    families = sorted({p.family for p in profiles})
    names = sorted(p.name for p in profiles)
    return f"families: {', '.join(families)}; profiles: {', '.join(names)}"


def profile_for(family: str, machine: str) -> Profile:
    """The profile the simulator uses for a node of type ``machine``.

    ``family`` is a family (the member made for ``machine``, else the nearest by speed factor
    and vCPUs rescaled by the speed-factor ratio, recorded in ``scaled_from``), a profile's
    exact name, or a profile file path. A profile measured on a host (no machine type) is used
    as is, with the machine's vCPUs as its default threads.
    """
    target = machine_type(machine)
    if family.endswith((".yaml", ".yml", ".json")):
        members: list[Profile] = [load_profile(family)]
    else:
        shipped = builtin_profiles()
        members = [p for p in shipped if p.family == family] or [
            p for p in shipped if p.name == family
        ]
        if not members:
            raise ValueError(f"unknown profile family {family!r}; known {_known(shipped)}")
    for profile in members:
        if profile.machine_type == machine:
            return profile
    typed = [p for p in members if p.machine_type is not None]
    if not typed:
        host = members[0]
        return host.rescaled(
            name=host.name,
            machine=machine,
            speedup=1.0,
            threads=float(target.vcpus),
            note_source=False,
        )

    def distance(p: Profile) -> tuple[float, str]:
        source = machine_type(str(p.machine_type))
        gap = abs(source.speed_factor - target.speed_factor) + abs(source.vcpus - target.vcpus)
        return gap, p.name

    nearest = min(typed, key=distance)
    source = machine_type(str(nearest.machine_type))
    return nearest.rescaled(
        name=f"{nearest.family}-{machine}",
        machine=machine,
        speedup=target.speed_factor / source.speed_factor,
        threads=nearest.default_threads * target.vcpus / source.vcpus,
    )
