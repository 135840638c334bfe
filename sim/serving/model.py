"""From a scenario's ``serving`` settings and a profile to the data plane's :class:`Server`."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from sim import scenario as spec
from sim.serving.profile import Profile
from sim.serving.server import BatchingConfig, Server

ASSUMED_COLD_FACTOR = 3.0
"""First Session::Run / a warm one, when neither the scenario nor the profile says."""


def cold_factor(serving: spec.Serving, profile: Profile) -> float:
    if serving.cold_factor is not None:
        return serving.cold_factor
    return profile.cold_factor if profile.cold_factor is not None else ASSUMED_COLD_FACTOR


def cores_alone(serving: spec.Serving, free: float) -> float:
    """Cores a pod's server uses with the node's free CPU to itself: all of it, or its
    intra-op pool when ``--tensorflow_intra_op_parallelism`` is smaller (assumption: the
    concurrent Session::Run calls share that one pool, so it bounds the cores in use)."""
    threads = serving.intra_op_threads
    return free if threads is None else min(free, float(threads))


def width(serving: spec.Serving, vcpus: float) -> int | None:
    """Requests that progress together (see :mod:`sim.serving.server`); None: all of them."""
    if serving.discipline == "fifo":
        return 1
    if serving.discipline == "ps":
        return None
    # TF Serving's --tensorflow_inter_op_parallelism, 0 (default): TensorFlow picks the number
    # of schedulable CPUs (tensorflow/core/common_runtime/process_util.cc,
    # DefaultNumInterOpThreads), which in a container without a CPU limit is the node's.
    return serving.inter_op_threads or max(1, int(vcpus))


def rest_handlers(pool: int) -> int:
    """The requests TF Serving's REST pool (``--rest_api_num_threads``, default 4 x vCPUs)
    serves at once: one thread fewer than the pool, whose first task is the HTTP server's
    event loop, which holds its thread for good (net_http EvHTTPServer::StartAcceptingRequests
    schedules event_base_loop on the executor). The loop, a pool thread, pushes each request
    to the front of its own queue (Eigen ScheduleWithHint) and the idle threads steal from the
    back (Steal, PopBack): beyond the handlers, requests wait in arrival order. With a pool of
    1 TF Serving would serve none; modelled as 1."""
    return max(1, pool - 1)


def rest_handlers_of(serving: spec.Serving, vcpus: float) -> int:
    """The REST handlers of ``serving`` on a node of ``vcpus`` (the pool TF Serving sizes by
    default at 4 x vCPUs; see :func:`rest_handlers`)."""
    return rest_handlers(serving.rest_api_num_threads or 4 * int(vcpus))


def past_width(
    fitted: Sequence[tuple[int, float]], width: int, at_width: float, top: int
) -> list[float]:
    """The work's spread with ``width`` + 1 .. ``top`` requests in flight: the profile's
    fitted points (in flight, sigma) past the width, interpolated from the width's own spread
    (``at_width``) and held past the last; with none past the width, the last fitted one held,
    or the width's own when none was fitted. At 8 users with the lab's think time the served
    copy holds 2-4 requests, and one sigma fitted at the 7 REST handlers and held from the
    width on put that rung's p95 37% high (s14 f1); so fidelity fits two counts (4 and 7 on 2
    cores) and the spread moves linearly between them (an assumption: two points)."""
    nodes = [(k, v) for k, v in fitted if k > width]
    if not nodes:
        return [fitted[-1][1] if fitted else at_width] * (top - width)
    xs, ys = zip((width, at_width), *nodes, strict=True)
    return [float(v) for v in np.interp(range(width + 1, top + 1), xs, ys)]


def build_server(
    name: str,
    serving: spec.Serving,
    profile: Profile,
    *,
    vcpus: float,
    cores: float,
    now: float,
    quota: float | None,
    weight: float,
) -> Server:
    """A pod's TF Serving container on a node of ``vcpus`` with ``cores`` to itself."""
    batching = None
    threads = rest_handlers_of(serving, vcpus)
    if serving.batching is not None:
        b = serving.batching
        batching = BatchingConfig(
            max_batch_size=b.max_batch_size,
            batch_timeout=b.batch_timeout_micros / 1e6,
            num_batch_threads=b.num_batch_threads or int(vcpus),
            max_enqueued_batches=b.max_enqueued_batches,
            cost=functools.cache(functools.partial(profile.batch_cost, cores)),
        )
    in_flight = max(threads, batching.num_batch_threads if batching else 0)
    m = width(serving, vcpus)
    spread = profile.spreads(cores, in_flight + 1)
    if serving.discipline == "inter_op" and m is not None and m < in_flight:
        # The model makes the waiting's share of the spread itself (the thread queues they
        # wait in); the spread measured past m is not the work's own.
        spread = spread[: m + 1] + past_width(profile.waiting_spread, m, spread[m], in_flight)
    return Server(
        name,
        tables=functools.partial(profile.tables, size=in_flight + 1),
        cores=cores,
        sigma=spread,
        overhead=profile.overhead_s,
        threads=threads,
        now=now,
        quota=quota,
        cold_requests=0 if serving.warmup else serving.cold_requests,
        cold_factor=cold_factor(serving, profile),
        batching=batching,
        weight=weight,
        width=m,
        random_entry=serving.discipline == "inter_op",
        after_idle=profile.idle_factor if profile.after_idle else None,
        after_idle_cpu=profile.idle_cpu_factor if profile.after_idle_cpu else None,
    )
