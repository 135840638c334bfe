"""The request path: Locust users and open-loop arrivals, L4 routing, TF Serving, timeouts.

Requests are the hot path, so they do not live in SimPy: no process or generator per request.
The data plane is its own heap-ordered event loop over plain tuples. The SimPy control plane
calls ``advance_to(env.now)`` before it reads or changes anything requests see (endpoints, a
pod's CPU), so both agree on the order of events.

TF Serving without batching is modelled as processor sharing with a per-request cap: ``n``
requests in flight on a pod with ``C`` cores each progress at ``min(parallelism, C/n)`` cores,
which is how the intra-op thread pools of concurrent Session::Run calls share the CPU. Since all
requests progress at the same rate, one "virtual work" clock per pod orders completions in a heap:
O(log n) per arrival and completion. Requests beyond the REST thread pool wait in FIFO order.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sim.recorder import RequestRecorder
from sim.rng import Buffered

_COMPLETE, _WAKE, _TIMEOUT = 0, 1, 2
_INF = math.inf


class Server:
    """One TF Serving container: its CPU, in-flight requests and cumulative CPU time."""

    __slots__ = (
        "alive",
        "capacity",
        "cpu_seconds",
        "generation",
        "head",
        "idle_cores",
        "jobs",
        "last",
        "median",
        "name",
        "overhead",
        "parallelism",
        "queue",
        "served",
        "sigma",
        "threads",
        "virtual",
    )

    def __init__(
        self,
        name: str,
        *,
        capacity: float,
        parallelism: float,
        median: float,
        sigma: float,
        overhead: float,
        idle_cores: float,
        threads: int,
        now: float,
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.parallelism = parallelism
        self.median, self.sigma, self.overhead = median, sigma, overhead
        self.idle_cores = idle_cores
        self.threads = threads
        self.virtual = 0.0
        self.last = now
        self.cpu_seconds = 0.0
        self.jobs: list[tuple[float, int, float, User | None, int]] = []
        self.queue: deque[tuple[float, int, float, User | None, int]] = deque()
        self.generation = 0
        self.head = -1  # order number of the request whose completion is scheduled
        self.served = 0
        self.alive = True

    def advance(self, now: float) -> None:
        dt = now - self.last
        if dt <= 0:
            return
        n = len(self.jobs)
        if n:
            share = self.capacity / n
            rate = share if share < self.parallelism else self.parallelism
            self.virtual += rate * dt
            self.cpu_seconds += rate * n * dt
        self.cpu_seconds += self.idle_cores * dt
        self.last = now

    def in_flight(self) -> int:
        return len(self.jobs) + len(self.queue)

    def busy_cores(self) -> float:
        n = len(self.jobs)
        return min(n * self.parallelism, self.capacity) if n else 0.0


class User:
    """A Locust user: one keep-alive connection, pinned to the pod chosen when it connected."""

    __slots__ = ("index", "sending", "server", "stopped", "wait")

    def __init__(self, index: int, wait: Callable[[], float]) -> None:
        self.index = index
        self.wait = wait
        self.server: Server | None = None
        self.sending = -1  # sequence number of the request in flight, -1 when idle
        self.stopped = False


@dataclass
class Tally:
    """Request outcomes, for the conservation check: sent = ok + failed + abandoned + in flight."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    abandoned: int = 0


class DataPlane:
    """Requests from clients through the Service to TF Serving pods, and back."""

    def __init__(
        self,
        recorder: RequestRecorder,
        *,
        routing: np.random.Generator,
        service: np.random.Generator,
        timeout: float,
    ) -> None:
        self.recorder = recorder
        self.timeout = timeout
        self.now = 0.0
        self.endpoints: list[Server] = []
        self.tally = Tally()
        self._heap: list[tuple[float, int, int, object, int]] = []
        self._seq = itertools.count()
        self._route = Buffered(routing, "uniform")
        self._demand = Buffered(service, "normal")
        self._users: list[User] = []
        self._arrivals: list[float] = []
        self._arrival_i = 0
        self._next_arrival = _INF
        self._arrival_source: Callable[[], list[float] | None] | None = None

    # --- control-plane API ------------------------------------------------------------------

    def add_endpoint(self, server: Server) -> None:
        self.endpoints.append(server)

    def remove_endpoint(self, server: Server) -> None:
        if server in self.endpoints:
            self.endpoints.remove(server)

    def kill(self, server: Server) -> None:
        """The container exits: in-flight requests fail, pinned connections are reset."""
        self.remove_endpoint(server)
        server.advance(self.now)
        server.alive = False
        stranded = list(server.jobs) + list(server.queue)
        server.jobs.clear()
        server.queue.clear()
        server.generation += 1
        for _, _, _, user, seq in stranded:
            if user is None:
                self._fail(self.now)
            elif user.sending == seq:
                self._fail(self.now)
                self._idle(user, self.now)
        for user in self._users:
            if user.server is server:
                user.server = None

    def set_capacity(self, server: Server, cores: float) -> None:
        server.advance(self.now)
        server.capacity = cores
        self._reschedule(server)

    def spawn_user(self, wait: Callable[[], float]) -> None:
        """A new Locust user runs its first task at once."""
        user = User(len(self._users), wait)
        self._users.append(user)
        self._send(user, self.now)

    def stop_user(self) -> None:
        """Locust stops the newest user; a request it had in flight is never recorded."""
        for user in reversed(self._users):
            if not user.stopped:
                user.stopped = True
                if user.sending >= 0:
                    self.tally.abandoned += 1
                    user.sending = -1
                return

    def active_users(self) -> int:
        return sum(1 for u in self._users if not u.stopped)

    def open_loop(self, source: Callable[[], list[float] | None]) -> None:
        """Arrival times come from ``source``, one sorted block per call, None when done."""
        self._arrival_source = source
        self._refill()

    def in_flight(self) -> int:
        return self.tally.sent - self.tally.ok - self.tally.failed - self.tally.abandoned

    # --- the loop -----------------------------------------------------------------------------

    def advance_to(self, t_end: float) -> None:
        heap = self._heap
        while True:
            t_heap = heap[0][0] if heap else _INF
            t_arr = self._next_arrival
            if t_arr <= t_heap:
                if t_arr > t_end:
                    break
                self.now = t_arr
                self._arrive_open(t_arr)
                continue
            if t_heap > t_end:
                break
            t, _, kind, obj, aux = heapq.heappop(heap)
            self.now = t
            if kind == _COMPLETE:
                server: Server = obj  # type: ignore[assignment]
                if aux == server.generation:
                    self._complete(server, t)
            elif kind == _WAKE:
                user: User = obj  # type: ignore[assignment]
                if not user.stopped:
                    self._send(user, t)
            else:
                user = obj  # type: ignore[assignment]
                if user.sending == aux:
                    # The client gives up; urllib3 drops a timed-out connection, so it reconnects.
                    self._fail(t)
                    user.server = None
                    self._idle(user, t)
        self.now = t_end

    # --- internals ------------------------------------------------------------------------------

    def _refill(self) -> None:
        while self._arrival_source is not None:
            block = self._arrival_source()
            if block is None:
                self._arrival_source = None
                break
            if block:
                self._arrivals, self._arrival_i = block, 0
                self._next_arrival = block[0]
                return
        self._next_arrival = _INF

    def _arrive_open(self, t: float) -> None:
        self._arrival_i += 1
        if self._arrival_i < len(self._arrivals):
            self._next_arrival = self._arrivals[self._arrival_i]
        else:
            self._refill()
        self._dispatch(self._pick(), t, None, 0)

    def _pick(self) -> Server | None:
        endpoints = self.endpoints
        if not endpoints:
            return None
        return endpoints[int(self._route.next() * len(endpoints))]

    def _send(self, user: User, t: float) -> None:
        server = user.server
        if server is None or not server.alive:
            server = user.server = self._pick()
        seq = next(self._seq)
        user.sending = seq
        if server is None:
            self._dispatch(None, t, user, seq)
            return
        heapq.heappush(self._heap, (t + self.timeout, seq, _TIMEOUT, user, seq))
        self._dispatch(server, t, user, seq)

    def _dispatch(self, server: Server | None, t: float, user: User | None, seq: int) -> None:
        self.tally.sent += 1
        self.recorder.offer(t)
        # Drawn for every request, routed or not, so the demand sequence is the same at every
        # what-if point that sees the same arrivals (common random numbers).
        z = self._demand.next()
        if server is None:
            # No Ready endpoint: the connection is refused at once (Locust records a failure).
            self._fail(t)
            if user is not None:
                self._idle(user, t)
            return
        work = server.median * math.exp(server.sigma * z)
        jobs = server.jobs
        n = len(jobs)
        if n >= server.threads:
            server.queue.append((work, next(self._seq), t, user, seq))
            return
        server.advance(t)
        heapq.heappush(jobs, (server.virtual + work, next(self._seq), t, user, seq))
        # While fewer requests than cores/parallelism run, each runs at full parallelism: a new
        # one slows nobody down, so the scheduled completion stays right unless it is the new head.
        if n and server.capacity >= (n + 1) * server.parallelism and jobs[0][1] == server.head:
            return
        self._reschedule(server)

    def _reschedule(self, server: Server) -> None:
        server.generation += 1
        jobs = server.jobs
        if not jobs:
            return
        head = jobs[0]
        server.head = head[1]
        share = server.capacity / len(jobs)
        rate = share if share < server.parallelism else server.parallelism
        if rate <= 0:
            return
        left = head[0] - server.virtual
        when = server.last + (left if left > 0.0 else 0.0) / rate
        heapq.heappush(self._heap, (when, next(self._seq), _COMPLETE, server, server.generation))

    def _complete(self, server: Server, t: float) -> None:
        server.advance(t)
        _, _, t0, user, seq = heapq.heappop(server.jobs)
        server.served += 1
        if server.queue:
            work, order, q0, quser, qseq = server.queue.popleft()
            heapq.heappush(server.jobs, (server.virtual + work, order, q0, quser, qseq))
        self._reschedule(server)
        latency = t - t0 + server.overhead
        if user is None:
            if latency > self.timeout:
                self._fail(t0 + self.timeout)
            else:
                self.tally.ok += 1
                self.recorder.complete(t, latency)
        elif user.sending == seq:
            self.tally.ok += 1
            self.recorder.complete(t, latency)
            self._idle(user, t + server.overhead)

    def _fail(self, t: float) -> None:
        self.tally.failed += 1
        self.recorder.fail(t)

    def _idle(self, user: User, t: float) -> None:
        user.sending = -1
        if not user.stopped:
            heapq.heappush(self._heap, (t + user.wait(), next(self._seq), _WAKE, user, 0))
