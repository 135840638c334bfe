"""The request path: Locust users and open-loop arrivals, L4 routing, TF Serving, timeouts.

Requests are the hot path, so they do not live in SimPy: no process or generator per request.
The data plane is its own heap-ordered event loop over plain tuples. The SimPy control plane
calls ``advance_to(env.now)`` before it reads or changes anything requests see (endpoints, a
pod's CPU), so both agree on the order of events.

TF Serving is :class:`sim.serving.server.Server`: ``n`` requests in flight on a pod with ``c``
cores complete at the profile's measured X(c, n) in total, shared by the scenario's discipline.
Requests beyond the REST thread pool wait in FIFO order. Pods on one node share its CPU by demand
(:class:`sim.serving.server.NodeCpu`); the split is only recomputed while they contend.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sim.recorder import FailureReason, RequestRecorder
from sim.serving.server import Job, NodeCpu, Server

_COMPLETE, _WAKE, _TIMEOUT, _BATCH = 0, 1, 2, 3
_INF = math.inf
_BLOCK = 4096  # random draws fetched from numpy at a time
_EARLY = 1e-9  # work left (in mean requests) above which a completion event came early


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
        order: np.random.Generator,
        timeout: float,
    ) -> None:
        self.recorder = recorder
        self.timeout = timeout
        self.now = 0.0
        self.endpoints: list[Server] = []
        self.tally = Tally()
        self._heap: list[tuple[float, int, int, object, int]] = []
        self._seq = itertools.count()
        # Draws in blocks (as sim.rng.Buffered does), read inline: they are on the hot path.
        self._routing, self._service = routing, service
        self._route_buf: list[float] = []
        self._route_i = 0
        self._demand_buf: list[float] = []
        self._demand_i = 0
        self._order, self._order_buf, self._order_i = order, list[float](), 0
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
        stranded = list(server.queue) + server.batch_open + [j for b in server.batches for j in b]
        if server.batching is not None:
            stranded += [j for members in server.members.values() for j in members]
            server.clear()
        else:
            stranded += server.clear()
        if server.node is not None and server.node.contended(server):
            self._split(server.node)
        server.queue.clear()
        server.members.clear()
        server.batches.clear()
        server.batch_open = []
        server.generation += 1
        for job in stranded:
            t0, user, seq = job[2], job[3], job[4]
            if user is None:
                self._fail(self.now, FailureReason.RESET, self.now - t0)
            elif user.sending == seq:
                self._fail(self.now, FailureReason.RESET, self.now - t0)
                self._idle(user, self.now)
        for user in self._users:
            if user.server is server:
                user.server = None

    def share_node(self, node: NodeCpu, cores_alone: dict[Server, float]) -> None:
        """The node's serving pods changed (one came or went): each gets ``cores_alone`` when
        its neighbours are idle, and the node's split is recomputed."""
        node.servers = list(cores_alone)
        for server, cores in cores_alone.items():
            server.node = node if len(cores_alone) > 1 else None
            server.advance(self.now)
            server.set_cores(cores, alone=True)
            node.contended(server)
            self._reschedule(server)
        self._split(node)

    def _split(self, node: NodeCpu) -> None:
        for server, cores in node.split().items():
            if abs(cores - server.cores) > 1e-9:
                server.advance(self.now)
                server.set_cores(cores)
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

    def connections(self) -> dict[Server, int]:
        """Running Locust users per pod their keep-alive connection is pinned to."""
        pinned: dict[Server, int] = {}
        for user in self._users:
            if not user.stopped and user.server is not None:
                pinned[user.server] = pinned.get(user.server, 0) + 1
        return pinned

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
            elif kind == _BATCH:
                server = obj  # type: ignore[assignment]
                if server.alive:
                    self._start_batches(server, t)
            else:
                user = obj  # type: ignore[assignment]
                if user.sending == aux:
                    # The client gives up; urllib3 drops a timed-out connection, so it reconnects.
                    self._fail(t, FailureReason.TIMEOUT, self.timeout)
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
        i = self._arrival_i = self._arrival_i + 1
        if i < len(self._arrivals):
            self._next_arrival = self._arrivals[i]
        else:
            self._refill()
        endpoints = self.endpoints
        if not endpoints:
            self._dispatch(None, t, None, 0)
            return
        # _pick(), inlined: one call fewer per request.
        r = self._route_i
        if r >= len(self._route_buf):
            self._route_buf, r = self._routing.random(_BLOCK).tolist(), 0
        self._route_i = r + 1
        self._dispatch(endpoints[int(self._route_buf[r] * len(endpoints))], t, None, 0)

    def _pick(self) -> Server | None:
        endpoints = self.endpoints
        if not endpoints:
            return None
        i = self._route_i
        if i >= len(self._route_buf):
            self._route_buf, i = self._routing.random(_BLOCK).tolist(), 0
        self._route_i = i + 1
        return endpoints[int(self._route_buf[i] * len(endpoints))]

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
        i = self._demand_i
        if i >= len(self._demand_buf):
            self._demand_buf, i = self._service.standard_normal(_BLOCK).tolist(), 0
        self._demand_i = i + 1
        z = self._demand_buf[i]
        if server is None:
            # No Ready endpoint: the connection is refused at once (Locust records a failure).
            self._fail(t, FailureReason.NO_ENDPOINT)
            if user is not None:
                self._idle(user, t)
            return
        k = server.n + 1
        if k > server.top:
            k = server.top
        work = server.work_median[k] * math.exp(server.spread[k] * z)
        if server.cold_left:
            # Without a warmup file the first Session::Run calls pay graph initialisation.
            server.cold_left -= 1
            work *= server.cold_factor
        if server.batching is not None:
            self._enqueue_batch(server, (work, next(self._seq), t, user, seq), t)
            return
        n = server.n
        if n >= server.threads:
            server.queue.append((work, next(self._seq), t, user, seq))
            return
        jobs = server.jobs
        dt = t - server.last
        if dt > 0.0 and n and server.quota is None:  # server.advance(t), its busy case inlined
            server.virtual += server.shared[len(jobs)] * dt
            server.clock += dt
            server.cpu_seconds += server.burn[n if n < server.top else server.top] * dt
            server.last = t
        else:
            server.advance(t)
        # server.push(...), inlined
        server.n = n + 1
        if len(jobs) < server.width:
            heapq.heappush(jobs, (server.virtual + work, next(self._seq), t, user, seq))
        else:
            server.waiting.append([work, next(self._seq), t, user, seq, server.clock])
        if server.node is not None and server.node.contended(server):
            self._split(server.node)
        elif n and server.quota is None:
            m = server.width
            if n >= m:
                # It waits: nobody else's rate changes, so the scheduled completion stays
                # first unless the new one, at its own place's rate, would beat it.
                i = n - m
                rate = server.lanes[i] if i < server.lane_end else 0.0
                if rate == 0.0 or t + work / rate >= server.due:
                    return
            # It runs: the running now share among one more, so they go no faster. Unless
            # the new request is the new head, the scheduled completion stays, perhaps early:
            # _complete checks and schedules it again then (fewer events than every arrival
            # rescheduling).
            elif server.shared[n + 1] <= server.shared[n] and jobs[0][1] == server.head:
                return
        self._reschedule(server)

    def _reschedule(self, server: Server) -> None:
        server.generation += 1
        jobs = server.jobs
        if not jobs:
            return
        if server.waiting:
            server.head, rate, left = server.next_done()
        else:
            server.head = jobs[0][1]
            rate = server.shared[len(jobs)]
            left = jobs[0][0] - server.virtual
        if left < 0.0:
            left = 0.0
        when = server.last + left / rate if server.quota is None else server.finish_time(left, rate)
        server.due = when
        heapq.heappush(self._heap, (when, next(self._seq), _COMPLETE, server, server.generation))

    def _complete(self, server: Server, t: float) -> None:
        jobs = server.jobs
        dt = t - server.last
        if dt > 0.0 and server.quota is None:  # server.advance(t), inlined (it is busy)
            n = server.n
            server.virtual += server.shared[len(jobs)] * dt
            server.clock += dt
            server.cpu_seconds += server.burn[n if n < server.top else server.top] * dt
            server.last = t
        else:
            server.advance(t)
        if server.waiting:
            head, _, left = server.next_done()
            if head != server.head or left > _EARLY:
                self._reschedule(server)
                return
            if server.random_entry:
                i = self._order_i
                if i >= len(self._order_buf):
                    self._order_buf, i = self._order.random(_BLOCK).tolist(), 0
                self._order_i = i + 1
                _, order, t0, user, seq = server.pop_done(self._order_buf[i])
            else:
                _, order, t0, user, seq = server.pop_done()
        elif jobs[0][0] - server.virtual > _EARLY:
            self._reschedule(server)  # arrivals slowed the head down since it was scheduled
            return
        else:
            _, order, t0, user, seq = heapq.heappop(jobs)  # server.pop_done(), inlined
            server.n -= 1
        node = server.node
        if server.batching is not None:
            for _, _, r0, ruser, rseq in server.members.pop(order):
                server.served += 1
                self._respond(server, t, r0, ruser, rseq)
            self._start_batches(server, t)
        else:
            server.served += 1
            if server.queue:
                server.push(*server.queue.popleft())
            latency = t - t0 + server.overhead
            if user is None and latency <= self.timeout:  # _respond's common case, inlined
                self.tally.ok += 1
                self.recorder.complete(t, latency)
            else:
                self._respond(server, t, t0, user, seq)
        if node is not None and node.contended(server):
            self._split(node)
        if jobs and not server.waiting and server.quota is None:
            # self._reschedule(server), its common case inlined
            server.generation += 1
            first = jobs[0]
            server.head = first[1]
            left = first[0] - server.virtual
            when = t + (left if left > 0.0 else 0.0) / server.shared[len(jobs)]
            server.due = when
            heapq.heappush(
                self._heap, (when, next(self._seq), _COMPLETE, server, server.generation)
            )
        else:
            self._reschedule(server)

    def _respond(self, server: Server, t: float, t0: float, user: User | None, seq: int) -> None:
        latency = t - t0 + server.overhead
        if user is None:
            if latency > self.timeout:
                self._fail(t0 + self.timeout, FailureReason.TIMEOUT, self.timeout)
            else:
                self.tally.ok += 1
                self.recorder.complete(t, latency)
        elif user.sending == seq:
            self.tally.ok += 1
            self.recorder.complete(t, latency)
            self._idle(user, t + server.overhead)

    # --- TF Serving's batch scheduler ---------------------------------------------------------

    def _enqueue_batch(self, server: Server, job: Job, t: float) -> None:
        """BasicBatchScheduler::Schedule: join the open batch, or open a new one unless
        max_enqueued_batches are already waiting (then the request fails with UNAVAILABLE)."""
        config = server.batching
        assert config is not None
        if not server.batch_open:
            if len(server.batches) + 1 > config.max_enqueued_batches:
                self._reject(job, t)
                return
            server.batch_since = t
        server.batch_open.append(job)
        if len(server.batch_open) >= config.max_batch_size:
            server.batches.append(server.batch_open)
            server.batch_open = []
        self._start_batches(server, t)

    def _start_batches(self, server: Server, t: float) -> None:
        """Give free batch threads the closed batches, then the open one once its timeout is up
        (a batch under max_batch_size waits batch_timeout_micros for company)."""
        config = server.batching
        assert config is not None
        started = False
        while server.n < config.num_batch_threads:
            if server.batches:
                batch = server.batches.popleft()
            elif server.batch_open and t >= server.batch_since + config.batch_timeout:
                batch, server.batch_open = server.batch_open, []
            else:
                break
            if not started:
                server.advance(t)
                started = True
            order = next(self._seq)
            server.members[order] = batch
            work = config.batch_work([job[0] for job in batch])
            server.push(work, order, t, None, 0)
        if started:
            if server.node is not None and server.node.contended(server):
                self._split(server.node)
            self._reschedule(server)
        due = server.batch_since + config.batch_timeout
        if server.batch_open and due > t and server.batch_timer != due:
            server.batch_timer = due
            heapq.heappush(self._heap, (due, next(self._seq), _BATCH, server, 0))

    def _reject(self, job: Job, t: float) -> None:
        _, _, _, user, _ = job
        self._fail(t, FailureReason.UNAVAILABLE)
        if user is not None:
            self._idle(user, t)

    def _fail(self, t: float, reason: FailureReason, latency: float = 0.0) -> None:
        self.tally.failed += 1
        self.recorder.fail(t, reason, latency)

    def _idle(self, user: User, t: float) -> None:
        user.sending = -1
        if not user.stopped:
            heapq.heappush(self._heap, (t + user.wait(), next(self._seq), _WAKE, user, 0))
