"""Latency profiles: how long a model takes in TF Serving, and how much CPU it burns.

A profile is data with provenance (``sim/profiles/*.yaml``, written by ``scalelab calibrate``):
measured points on a grid of (threads, concurrency, batch). Each point holds the latency
distribution (quantiles plus a lognormal fit and its error) and the CPU-seconds one request
consumed. ``threads`` is the CPU the pod can use, in vCPUs (TF Serving's intra-op pool defaults
to all of them); ``concurrency`` is the number of requests in flight; ``batch`` is the number of
items in one request (or one server-side batch).

:meth:`Profile.service` interpolates between the points and extrapolates outside them by the
rules in :data:`EXTRAPOLATION_RULES`, with a :class:`ProfileExtrapolationWarning` (once per
profile and rule) and ``ServicePoint.extrapolated`` set, so the simulator never silently leaves
the measured range.

A scenario names a family (``resnet101-tfserving``); the node's machine type picks the profile
made for it, or the nearest one in the family rescaled by the catalog's per-vCPU speed factor
(recorded in ``Profile.scaled_from``), so changing the machine type changes the latency model.
A scenario may also name one profile exactly, or a profile file (``*.yaml``/``*.json``).

Schema (``schema_version: 2``), one mapping::

    schema_version: 2
    name, family: str            # family groups one model's profiles across machine types
    machine_type: str | null     # a catalog machine type, null for a host measured locally
    kind: measured | endpoint | derived
    model: {...}                 # what was served: architecture, signature, payload
    defaults:
      threads: float             # CPU TF Serving gets by default (the machine's vCPUs)
      overhead_s: float          # latency that burns no server CPU (network, HTTP), >= 0
      idle_cpu_cores: float      # CPU an idle server burns
      model_load_s, cold_factor  # optional: SavedModel load time; first request / warm one
    quantiles: [0.05, ..., 0.5, ..., 0.99]      # increasing, in (0, 1), contains 0.5
    points:                      # a full grid: every threads x concurrency x batch once
      - threads: 2
        concurrency: 1
        batch: 1
        n: 40                    # latency samples
        latency_s: [...]         # at ``quantiles``, non-decreasing, end to end
        lognormal: {median_s: float, sigma: float, ks: float}   # fit; ks = Kolmogorov distance
        cpu_s_per_request: float # mean CPU-seconds per request (the whole batch), > 0
        throughput_rps: float    # optional
        spread: float            # optional: relative range of the repeats' medians
        background_cpu_cores: float  # optional: CPU other processes used meanwhile
    provenance: {...}            # CPU model, cores, TF version, date, command, payload, ...
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from sim.cluster.catalog import machine_type

SCHEMA_VERSION = 2
KINDS = ("measured", "endpoint", "derived")
DEFAULT_QUANTILES = (0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99)

EXTRAPOLATION_RULES = {
    "threads_above": "beyond the most threads measured, lone-request latency follows Amdahl's "
    "law L(t) = a + b/t fitted to the measured threads, and each thread stays as busy as at the "
    "largest count (CPU-seconds in proportion to t*L(t)); with one thread count measured, "
    "latency and CPU-seconds are held",
    "threads_below": "below the fewest threads measured, the pod time-slices: latency grows "
    "by t_min/t and CPU-seconds per request stay the same",
    "concurrency_above": "beyond the largest concurrency measured, the pod is saturated: latency "
    "grows in proportion to concurrency (processor sharing) and CPU-seconds stay the same",
    "concurrency_below": "below the smallest concurrency measured, values are held",
    "batch_above": "beyond the largest batch measured, latency and CPU-seconds grow linearly "
    "along the last two measured batch sizes (in proportion to batch when only one was measured)",
    "batch_below": "below the smallest batch measured, latency and CPU-seconds shrink in "
    "proportion to batch",
}
"""How :meth:`Profile.service` leaves the measured grid, by axis and direction."""

Axis = Literal["threads", "concurrency", "batch"]


class ProfileError(ValueError):
    """A profile file that does not follow the schema; the message names file, field and fix."""


class ProfileExtrapolationWarning(UserWarning):
    """A service point was asked for outside a profile's measured range."""


@dataclass(frozen=True)
class ServicePoint:
    """Service demand at one (threads, concurrency, batch), as the data plane uses it.

    ``cpu_seconds_median``/``cpu_seconds_sigma``: lognormal CPU-seconds one request (the whole
    batch) burns; sigma is the lone-request latency spread, since a request alone runs at a
    fixed rate. ``parallelism``: cores one request keeps busy at this point (at concurrency 1,
    the processor-sharing cap). ``latency_median``: end to end, including ``overhead_s``.
    """

    threads: float
    concurrency: float
    batch: int
    cpu_seconds_median: float
    cpu_seconds_sigma: float
    parallelism: float
    latency_median: float
    overhead_s: float
    latency_quantiles: tuple[tuple[float, float], ...]
    extrapolated: bool = False
    notes: tuple[str, ...] = ()

    @property
    def cpu_seconds_mean(self) -> float:
        return self.cpu_seconds_median * math.exp(self.cpu_seconds_sigma**2 / 2)

    def latency(self, q: float) -> float:
        """Latency quantile ``q`` by linear interpolation between the stored quantiles."""
        qs = [p for p, _ in self.latency_quantiles]
        vs = [v for _, v in self.latency_quantiles]
        return float(np.interp(q, qs, vs))

    def sample_latency(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Latencies drawn by inverse CDF from the quantiles (tails clamped to the extremes)."""
        return np.asarray(
            np.interp(
                rng.random(size),
                [p for p, _ in self.latency_quantiles],
                [v for _, v in self.latency_quantiles],
            )
        )

    def sample_cpu_seconds(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """CPU-seconds per request, lognormal(median, sigma)."""
        return self.cpu_seconds_median * np.exp(self.cpu_seconds_sigma * rng.standard_normal(size))


@dataclass(frozen=True)
class Point:
    """One measured grid point (see the module docstring for the fields)."""

    threads: float
    concurrency: int
    batch: int
    n: int
    latency_s: tuple[float, ...]
    lognormal_median_s: float
    sigma: float
    ks: float
    cpu_s_per_request: float
    throughput_rps: float | None = None
    spread: float | None = None
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
            "cpu_s_per_request": _round(self.cpu_s_per_request),
        }
        if self.throughput_rps is not None:
            out["throughput_rps"] = _round(self.throughput_rps)
        if self.spread is not None:
            out["spread"] = _round(self.spread)
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


@dataclass(frozen=True, eq=False)
class Profile:
    """A family member's measured grid, plus the single-point view the simulator reads today.

    The flat attributes (``cpu_seconds_median``, ``parallelism``, ...) are the lone-request,
    batch-1 service point at ``default_threads``: what the data plane's ``Server`` takes.
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
    model: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    scaled_from: str | None = None
    speedup: float = 1.0
    origin: str = ""
    _grid: _Grid = field(init=False, repr=False)
    _warned: set[str] = field(init=False, repr=False, default_factory=set)
    _cache: dict[tuple[float, float, int], ServicePoint] = field(
        init=False, repr=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_grid", _Grid(self.points, self.quantiles))

    # --- the interpolation API ----------------------------------------------------------------

    def service(self, threads: float, concurrency: float = 1, batch: int = 1) -> ServicePoint:
        """Service demand with ``threads`` vCPUs, ``concurrency`` requests in flight, ``batch``
        items per request; interpolated log-log between grid points (monotone wherever the data
        is), extrapolated by :data:`EXTRAPOLATION_RULES` with a warning outside them."""
        if not threads > 0:
            raise ValueError(f"profile {self.name}: threads must be > 0, got {threads}")
        if concurrency < 1 or batch < 1:
            raise ValueError(
                f"profile {self.name}: concurrency and batch must be >= 1, "
                f"got {concurrency} and {batch}"
            )
        key = (float(threads), float(concurrency), int(batch))
        hit = self._cache.get(key)
        if hit is None:
            hit = self._service(*key)
            self._cache[key] = hit
        if hit.extrapolated:
            for note in hit.notes:
                if note not in self._warned:
                    self._warned.add(note)
                    warnings.warn(
                        f"profile {self.name}: {note}; {EXTRAPOLATION_RULES[note]}",
                        ProfileExtrapolationWarning,
                        stacklevel=2,
                    )
        return hit

    def _service(self, threads: float, concurrency: float, batch: int) -> ServicePoint:
        lat, cpu, sigma, notes = self._grid.evaluate(threads, concurrency, batch)
        overhead = self.overhead_s
        if self.speedup != 1.0:
            lat = overhead + np.maximum(lat - overhead, 0.0) / self.speedup
            cpu = cpu / self.speedup
        median = float(lat[self._grid.q50])
        cpu_median = cpu * math.exp(-(sigma**2) / 2)
        busy = max(median - overhead, 1e-9)
        return ServicePoint(
            threads=threads,
            concurrency=concurrency,
            batch=batch,
            cpu_seconds_median=cpu_median,
            cpu_seconds_sigma=sigma,
            parallelism=cpu_median / busy,
            latency_median=median,
            overhead_s=overhead,
            latency_quantiles=tuple(zip(self.quantiles, (float(v) for v in lat), strict=True)),
            extrapolated=bool(notes),
            notes=tuple(notes),
        )

    @property
    def axes(self) -> dict[Axis, tuple[float, ...]]:
        """The measured values along each axis."""
        g = self._grid
        return {"threads": g.threads, "concurrency": g.concurrency, "batch": g.batch}

    # --- the single-point view (what sim/world.py reads) --------------------------------------

    @property
    def default(self) -> ServicePoint:
        """A lone batch-1 request with ``default_threads`` vCPUs."""
        return self.service(self.default_threads)

    @property
    def cpu_seconds_median(self) -> float:
        return self.default.cpu_seconds_median

    @property
    def cpu_seconds_sigma(self) -> float:
        return self.default.cpu_seconds_sigma

    @property
    def parallelism(self) -> float:
        return self.default.parallelism

    def alone_latency(self) -> float:
        """Median latency of a request with the pod to itself."""
        return self.overhead_s + self.cpu_seconds_median / self.parallelism

    # --- derived profiles -----------------------------------------------------------------------

    def rescaled(
        self, *, name: str, machine: str, speedup: float, threads: float, note_source: bool = True
    ) -> Profile:
        """This profile on a machine ``speedup`` times faster per vCPU, defaulting to ``threads``
        vCPUs: server CPU-seconds and server time divide by ``speedup``; overhead stays."""
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
            model=self.model,
            provenance=self.provenance,
            scaled_from=self.name if note_source else self.scaled_from,
            speedup=self.speedup * speedup,
            origin=self.origin,
        )

    def to_dict(self) -> dict[str, Any]:
        """The schema-2 mapping (a rescaled profile writes its source's points)."""
        defaults: dict[str, Any] = {
            "threads": _num(self.default_threads),
            "overhead_s": _round(self.overhead_s),
            "idle_cpu_cores": _round(self.idle_cpu_cores),
        }
        if self.model_load_s is not None:
            defaults["model_load_s"] = _round(self.model_load_s)
        if self.cold_factor is not None:
            defaults["cold_factor"] = _round(self.cold_factor)
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


class _Grid:
    """The points as arrays over sorted axes, for multilinear interpolation in log-log space."""

    def __init__(self, points: Sequence[Point], quantiles: Sequence[float]) -> None:
        self.threads = tuple(sorted({float(p.threads) for p in points}))
        self.concurrency = tuple(sorted({float(p.concurrency) for p in points}))
        self.batch = tuple(sorted({float(p.batch) for p in points}))
        shape = (len(self.threads), len(self.concurrency), len(self.batch))
        self.q50 = list(quantiles).index(0.5)
        self.lat = np.zeros((*shape, len(quantiles)))
        self.cpu = np.zeros(shape)
        self.sigma = np.zeros(shape)
        for p in points:
            i = (
                self.threads.index(float(p.threads)),
                self.concurrency.index(float(p.concurrency)),
                self.batch.index(float(p.batch)),
            )
            self.lat[i] = p.latency_s
            self.cpu[i] = p.cpu_s_per_request
            self.sigma[i] = p.sigma
        self.log_lat = np.log(self.lat)
        self.log_cpu = np.log(self.cpu)
        self.logs = [np.log(self.threads), np.log(self.concurrency), np.log(self.batch)]
        self.amdahl = self._fit_amdahl()

    def _fit_amdahl(self) -> tuple[float, float]:
        """L(t) = a + b/t over the lone smallest-batch latencies; (1, 0) when no speedup."""
        t = np.asarray(self.threads)
        lat = self.lat[:, 0, 0, self.q50]
        if len(t) < 2:
            return 1.0, 0.0
        x = 1 / t
        b, a = np.polyfit(x, lat, 1)
        if b <= 0:
            return 1.0, 0.0
        if a < 0:  # better than linear speedup (cache effects): keep the last step's slope
            a = 0.0
        return float(a), float(b)

    def _bracket(self, axis: int, x: float) -> tuple[int, int, float]:
        values = self.logs[axis]
        lx = math.log(x)
        if len(values) == 1 or lx <= values[0]:
            return 0, 0, 0.0
        if lx >= values[-1]:
            last = len(values) - 1
            return last, last, 0.0
        hi = int(np.searchsorted(values, lx))
        lo = hi - 1
        return lo, hi, float((lx - values[lo]) / (values[hi] - values[lo]))

    def _at(self, t: float, c: float, b: float) -> tuple[np.ndarray, float, float]:
        """Log-multilinear value at a point inside the grid's box (coordinates clamped)."""
        brackets = [self._bracket(0, t), self._bracket(1, c), self._bracket(2, b)]
        log_lat = np.zeros(self.lat.shape[-1])
        log_cpu = 0.0
        sigma = 0.0
        for corner in range(8):
            weight = 1.0
            index = []
            for axis, (lo, hi, w) in enumerate(brackets):
                upper = (corner >> axis) & 1
                weight *= w if upper else 1 - w
                index.append(hi if upper else lo)
            if weight == 0.0:
                continue
            i = tuple(index)
            log_lat += weight * self.log_lat[i]
            log_cpu += weight * float(self.log_cpu[i])
            c0 = (i[0], 0, i[2])  # the work's spread: lone-request latency spread
            sigma += weight * float(self.sigma[c0])
        return np.exp(log_lat), math.exp(log_cpu), sigma

    def evaluate(self, t: float, c: float, b: int) -> tuple[np.ndarray, float, float, list[str]]:
        """Latency quantiles, mean CPU-seconds and sigma at (t, c, b), with extrapolation notes.

        Inside the box: log-multilinear. Outside: the value at the clamped point times each
        axis's rule (:data:`EXTRAPOLATION_RULES`), batch first, then threads and concurrency.
        """
        tc = min(max(t, self.threads[0]), self.threads[-1])
        cc = min(max(float(c), self.concurrency[0]), self.concurrency[-1])
        bc = min(max(float(b), self.batch[0]), self.batch[-1])
        lat, cpu, sigma = self._at(tc, cc, bc)
        notes: list[str] = []
        if b > bc:
            if len(self.batch) > 1:
                lat_prev, cpu_prev, _ = self._at(tc, cc, self.batch[-2])
                step = (b - bc) / (bc - self.batch[-2])
                lat = lat + np.maximum(lat - lat_prev, 0.0) * step
                cpu = cpu + max(cpu - cpu_prev, 0.0) * step
            else:
                lat, cpu = lat * (b / bc), cpu * (b / bc)
            notes.append("batch_above")
        elif b < bc:
            lat, cpu = lat * (b / bc), cpu * (b / bc)
            notes.append("batch_below")
        if t > tc * (1 + 1e-9):
            if len(self.threads) > 1:
                a, slope = self.amdahl
                ratio = (a + slope / t) / (a + slope / tc)
                lat, cpu = lat * ratio, cpu * (t / tc) * ratio
            notes.append("threads_above")
        elif t < tc * (1 - 1e-9):
            lat = lat * (tc / t)
            notes.append("threads_below")
        if c > cc:
            lat = lat * (c / cc)
            notes.append("concurrency_above")
        elif c < cc:
            notes.append("concurrency_below")
        return lat, cpu, sigma, notes


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
    n = _integer(_require(raw, "n", origin, f"{where}."), origin, f"{where}.n")
    optional = {
        k: _number(raw[k], origin, f"{where}.{k}") if raw.get(k) is not None else None
        for k in ("throughput_rps", "spread", "background_cpu_cores")
    }
    return Point(
        threads=_number(
            _require(raw, "threads", origin, f"{where}."), origin, f"{where}.threads", positive=True
        ),
        concurrency=_integer(
            _require(raw, "concurrency", origin, f"{where}."), origin, f"{where}.concurrency"
        ),
        batch=_integer(_require(raw, "batch", origin, f"{where}."), origin, f"{where}.batch"),
        n=n,
        latency_s=values,
        lognormal_median_s=_number(
            _require(fit, "median_s", origin, f"{where}.lognormal."),
            origin,
            f"{where}.lognormal.median_s",
            positive=True,
        ),
        sigma=_number(
            _require(fit, "sigma", origin, f"{where}.lognormal."),
            origin,
            f"{where}.lognormal.sigma",
        ),
        ks=_number(
            _require(fit, "ks", origin, f"{where}.lognormal."), origin, f"{where}.lognormal.ks"
        ),
        cpu_s_per_request=_number(
            _require(raw, "cpu_s_per_request", origin, f"{where}."),
            origin,
            f"{where}.cpu_s_per_request",
            positive=True,
        ),
        throughput_rps=optional["throughput_rps"],
        spread=optional["spread"],
        background_cpu_cores=optional["background_cpu_cores"],
    )


def _check_grid(points: Sequence[Point], origin: str) -> None:
    seen: dict[tuple[float, int, int], int] = {}
    for i, p in enumerate(points):
        key = (p.threads, p.concurrency, p.batch)
        if key in seen:
            raise ProfileError(
                f"{origin}: points[{i}] repeats threads={p.threads:g} concurrency="
                f"{p.concurrency} batch={p.batch} (first at points[{seen[key]}]); keep one"
            )
        seen[key] = i
    ts = sorted({p.threads for p in points})
    cs = sorted({p.concurrency for p in points})
    bs = sorted({p.batch for p in points})
    missing = [(t, c, b) for t in ts for c in cs for b in bs if (t, c, b) not in seen]
    if missing:
        t, c, b = missing[0]
        raise ProfileError(
            f"{origin}: points must form a full grid over threads {ts}, concurrency {cs}, "
            f"batch {bs}; missing {len(missing)}, e.g. threads={t:g} concurrency={c} "
            f"batch={b}: measure it or drop that axis value"
        )


def profile_from_dict(data: Any, origin: str = "<profile>") -> Profile:
    """Validate a schema-2 mapping and build the :class:`Profile`; errors name the field."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{origin}: expected a mapping at the top level")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        hint = (
            "; schema 1 (one cpu_seconds/parallelism pair) is no longer read: "
            "re-run `scalelab calibrate`"
            if version == 1
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
    _check_grid(points, origin)
    defaults = _require(data, "defaults", origin)
    if not isinstance(defaults, Mapping):
        raise ProfileError(f"{origin}: defaults must be a mapping")

    def opt(key: str) -> float | None:
        value = defaults.get(key)
        return None if value is None else _number(value, origin, f"defaults.{key}")

    provenance = _require(data, "provenance", origin)
    if not isinstance(provenance, Mapping) or not provenance:
        raise ProfileError(f"{origin}: provenance must be a non-empty mapping (where from?)")
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
            "# scalelab latency profile (schema 2). Written by `scalelab calibrate`: regenerate "
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
    """The profiles shipped in ``sim/profiles/``, by file name."""
    folder = resources.files("sim") / "profiles"
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".json")):
            data = yaml.safe_load(entry.read_text("utf-8"))
            found.append(profile_from_dict(data, f"sim/profiles/{entry.name}"))
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
