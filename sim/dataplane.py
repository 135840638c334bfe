"""The request path: Locust users and open-loop arrivals, L4 routing, TF Serving, timeouts.

Requests are the hot path, so they do not live in SimPy: no process or generator per request.
The data plane is its own heap-ordered event loop over plain tuples. The SimPy control plane
calls ``advance_to(env.now)`` before it reads or changes anything requests see (endpoints, a
pod's CPU), so both agree on the order of events.

TF Serving is :class:`sim.serving.server.Server`: ``n`` requests in flight on a pod with ``c``
cores complete at the profile's measured X(c, n) in total, shared by the scenario's discipline.
Requests beyond the REST handler threads wait in FIFO order (``rest_handlers``). Pods on one
node share its CPU by demand (:class:`sim.serving.server.NodeCpu`); the split is only
recomputed while they contend.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sim.recorder import FailureReason, RequestRecorder
from sim.rng import Buffered
from sim.serving.server import Job, NodeCpu, Server

_COMPLETE, _WAKE, _TIMEOUT, _BATCH = 0, 1, 2, 3
_INF = math.inf
_BLOCK = 4096  # random draws fetched from numpy at a time
_EARLY = 1e-9  # work left (in mean requests) above which a completion event came early
_END = (math.nan, math.nan)  # closes a pod's arrivals for _run_alone: nan compares below nothing


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
        # Routing and demand draws come a window's worth at a time (Buffered.take) on the
        # open-loop path, one at a time (Buffered.next) for Locust users: the same sequences.
        self._routes = Buffered(routing, "uniform", _BLOCK)
        self._demand = Buffered(service, "normal", _BLOCK)
        self._order = Buffered(order, "uniform", _BLOCK)
        self._users: list[User] = []
        self._arrivals: list[float] = []
        self._arrival_i = 0
        self._next_arrival = _INF
        self._arrival_source: Callable[[], list[float] | None] | None = None
        # Completions (time, latency) not yet handed to the recorder (see _record).
        self._done_t: list[float] = []
        self._done_latency: list[float] = []

    # --- control-plane API ------------------------------------------------------------------

    def add_endpoint(self, server: Server) -> None:
        if server.random_entry:
            server.draw = self._order.next  # which queue a waiting request joins, whom to steal
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
            self.resize(server, cores)
            node.contended(server)
        self._split(node)

    def resize(self, server: Server, cores: float) -> None:
        """From now on ``server`` has ``cores`` whenever its node's other pods leave them idle
        (always, alone on its node)."""
        server.advance(self.now)
        server.set_cores(cores, alone=True)
        self._reschedule(server)

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
        """Run every request event up to ``t_end``; completions are counted, and handed to the
        recorder, in bulk at the end."""
        if self._users or not self.endpoints:
            self._advance_events(t_end)
        else:
            self._advance_open(t_end)
        self.now = t_end
        self._record()

    def _advance_events(self, t_end: float) -> None:
        """One heap of events in time order (open-loop arrivals, by time, before any event
        at the same instant). A completion on a plain pod runs inline with the hot state in
        locals; every other event goes to the methods below, ``now`` set first."""
        heap = self._heap
        pop, replace = heapq.heappop, heapq.heapreplace
        seq = self._seq
        timeout = self.timeout
        done_t, done_latency = self._done_t.append, self._done_latency.append
        while True:
            t_heap = heap[0][0] if heap else _INF
            t_arr = self._next_arrival
            if t_arr <= t_heap:
                if t_arr > t_end:
                    break
                self.now = t_arr
                self._arrival_i += 1
                if self._arrival_i < len(self._arrivals):
                    self._next_arrival = self._arrivals[self._arrival_i]
                else:
                    self._refill()
                self._dispatch(self._pick(), t_arr, None, 0)
                continue
            if t_heap > t_end:
                break
            # The event stays first in the heap while it runs (whatever it schedules is at
            # its time or later, with a later sequence number): popped, or replaced by the
            # event it schedules, when done.
            t, _, kind, obj, aux = heap[0]
            if kind == _COMPLETE:
                server: Server = obj  # type: ignore[assignment]
                if aux != server.generation:
                    pop(heap)
                    continue
                if (
                    server.waiting
                    or server.quota is not None
                    or server.batching is not None
                    or server.node is not None
                ):
                    pop(heap)
                    self.now = t
                    self._complete(server, t)
                    continue
                # self._complete(server, t), its common case inlined
                jobs = server.jobs
                dt = t - server.last
                if dt > 0.0:  # server.advance(t), inlined (it is busy)
                    n = server.n
                    top = server.top
                    server.virtual += server.shared[len(jobs)] * dt
                    server.clock += dt
                    server.cpu_seconds += server.burn[n if n < top else top] * dt * server.cpu_scale
                    server.last = t
                first = jobs[0]
                left = first[0] - server.virtual
                if left > _EARLY:  # arrivals slowed the head down since it was scheduled
                    server.generation = gen = server.generation + 1
                    server.head = first[1]
                    server.due = when = server.last + left / server.shared[len(jobs)]
                    replace(heap, (when, next(seq), _COMPLETE, server, gen))
                    continue
                _, _, t0, user, useq = pop(jobs)
                server.n -= 1
                if not server.n:
                    server.idle_since = t
                server.served += 1
                if server.queue:
                    server.push(*server.queue.popleft())
                latency = t - t0 + server.overhead
                if user is None and latency <= timeout:  # _respond's common case, inlined
                    done_t(t)
                    done_latency(latency)
                else:
                    self.now = t
                    self._respond(server, t, t0, user, useq)
                if jobs and not server.waiting:  # self._reschedule(server), inlined
                    server.generation = gen = server.generation + 1
                    first = jobs[0]
                    server.head = first[1]
                    left = first[0] - server.virtual
                    when = t + (left if left > 0.0 else 0.0) / server.shared[len(jobs)]
                    server.due = when
                    replace(heap, (when, next(seq), _COMPLETE, server, gen))
                else:
                    pop(heap)
                    self._reschedule(server)
                continue
            pop(heap)
            self.now = t
            self._event(t, kind, obj, aux)

    def _event(self, t: float, kind: int, obj: object, aux: int) -> None:
        """A user's wake-up or timeout, or a batch's timeout, due at ``t``."""
        if kind == _WAKE:
            user: User = obj  # type: ignore[assignment]
            if not user.stopped:
                self._send(user, t)
        elif kind == _BATCH:
            server: Server = obj  # type: ignore[assignment]
            if server.alive:
                self._start_batches(server, t)
        else:
            user = obj  # type: ignore[assignment]
            if user.sending == aux:
                # The client gives up; urllib3 drops a timed-out connection, so it reconnects.
                self._fail(t, FailureReason.TIMEOUT, self.timeout)
                user.server = None
                self._idle(user, t)

    def _advance_open(self, t_end: float) -> None:
        """Open-loop arrivals only (no Locust user) and at least one endpoint: route every
        arrival up to ``t_end`` first (the draws do not depend on the pods' state), then run
        the pods.

        Pods interact only through a node's shared CPU and through the draws that put a
        waiting request in a thread's queue (random_entry), taken in time order across pods.
        A plain pod (no node neighbours, CPU limit or batching) whose requests in flight all
        run (no queue, no waiting, nor will any in this window) touches neither, so its events
        need no other pod's: :meth:`_run_alone` runs them with its state in locals and no heap.
        The other pods run together, in time order, by the general methods
        (:meth:`_run_routed`). Events of different pods at one instant may run in another
        order than one heap would give: they commute.
        """
        times = self._take_arrivals(t_end)
        demand = self._demand.take(len(times))  # the draws _dispatch and _pick take
        routes = self._routes.take(len(times))
        by_server = self._by_server(times, demand, routes)

        # The pods with an arrival or a completion event due by t_end (in that order), each
        # classed once: alone, or together with the heap.
        heap = self._heap
        due: list[Server] = [
            e[3]  # type: ignore[misc]
            for e in sorted(e for e in heap if e[0] <= t_end)
            if e[2] == _COMPLETE
        ]
        alone: list[Server] = []
        together: set[Server] = set()
        for server in dict.fromkeys((*by_server, *due)):
            arriving = by_server.get(server)
            most = server.n + (len(arriving) // 2 if arriving else 0)
            if (
                server.quota is None
                and server.batching is None
                and server.node is None
                and not server.waiting
                and not server.queue
                and most <= server.width
                and most <= server.threads
            ):
                alone.append(server)
            else:
                together.add(server)
        if alone:
            self._run_alone_all(alone, by_server, t_end)
        if together or (heap and heap[0][0] <= t_end):
            endpoints = self.endpoints
            count = len(endpoints)
            mine = [
                (t, z, server)
                for t, z, r in zip(times, demand, routes, strict=True)
                if (server := endpoints[int(r * count)]) in together
            ]
            self._run_routed(t_end, mine)

    def _take_arrivals(self, t_end: float) -> list[float]:
        """The open-loop arrivals up to ``t_end``, counted as sent and offered to the recorder
        a block at a time."""
        taken: list[float] = []
        while self._next_arrival <= t_end:
            arrivals, i = self._arrivals, self._arrival_i
            cut = bisect.bisect_right(arrivals, t_end, i)
            block = arrivals[i:cut]
            self.recorder.offer_many(block)
            taken += block
            if cut < len(arrivals):
                self._arrival_i, self._next_arrival = cut, arrivals[cut]
            else:
                self._refill()
        self.tally.sent += len(taken)
        return taken

    def _by_server(
        self, times: list[float], demand: list[float], routes: list[float]
    ) -> dict[Server, list[float]]:
        """Each pod's arrivals (time, demand draw, time, ...), pods in the order of their first
        arrival, routed by the draws in ``routes`` as :meth:`_pick` routes."""
        endpoints = self.endpoints
        count = len(endpoints)
        by_pod: dict[int, list[float]] = {}
        get = by_pod.get
        for t, z, r in zip(times, demand, routes, strict=True):
            pod = int(r * count)
            bucket = get(pod)
            if bucket is None:
                by_pod[pod] = [t, z]
            else:
                bucket.append(t)
                bucket.append(z)
        return {endpoints[pod]: bucket for pod, bucket in by_pod.items()}

    def _run_alone_all(
        self, alone: list[Server], by_server: dict[Server, list[float]], t_end: float
    ) -> None:
        """Run the ``alone`` pods up to ``t_end`` by :meth:`_run_alone`. Their heap entries due
        by then leave the heap, and their next completions join it; the heap is built again
        once (unique sequence numbers order it, however it is built)."""
        heap = self._heap
        gone = set(alone)
        heap[:] = [e for e in heap if e[0] > t_end or e[3] not in gone]
        fails: list[tuple[float, float]] = []  # (failed at, sent at): timed out
        self._run_alone(alone, by_server, t_end, fails)
        heapq.heapify(heap)
        fails.sort()
        for _, t0 in fails:
            self._fail(t0 + self.timeout, FailureReason.TIMEOUT, self.timeout)

    def _run_alone(
        self,
        alone: list[Server],
        by_server: dict[Server, list[float]],
        t_end: float,
        fails: list[tuple[float, float]],
    ) -> None:
        """Run each plain pod's events up to ``t_end``: its arrivals in ``by_server`` (time,
        demand draw, ...) and its completion event, as :meth:`_advance_events` and the
        methods it calls would, in the same arithmetic. Every request in flight runs
        (``len(jobs)`` is ``n``, at most ``width``, so ``min(n, top)`` is ``n``). Completions
        go to the recorder's buffer, timeouts to ``fails``, and a pod's next completion, when
        it moved, to the heap (not yet heap-ordered). One call for all of them: what every pod
        uses is looked up once."""
        seq, exp, push, pop = self._seq, math.exp, heapq.heappush, heapq.heappop
        done_t, done_latency = self._done_t.append, self._done_latency.append
        timeout, early, heap = self.timeout, _EARLY, self._heap
        for server in alone:
            arrivals = by_server.get(server, [])
            arrivals += _END
            shared, burn = server.shared, server.burn
            median, spread, overhead = server.work_median, server.spread, server.overhead
            jobs, n, cold, served = server.jobs, server.n, server.cold_left, server.served
            after_idle, idle_since = server.after_idle, server.idle_since
            after_idle_cpu, scale = server.after_idle_cpu, server.cpu_scale
            virtual, clock, cpu, last = (
                server.virtual,
                server.clock,
                server.cpu_seconds,
                server.last,
            )
            head, generation, when = server.head, server.generation, server.due
            due = when if jobs else _INF
            t_arr, i = arrivals[0], 0  # they end with _END
            while True:
                if t_arr <= due:  # an arrival: _serve's plain case (n < width <= top)
                    t, z = t_arr, arrivals[i + 1]
                    i += 2
                    t_arr = arrivals[i]
                    k = n + 1
                    work = median[k] * exp(spread[k] * z)
                    if cold:
                        cold -= 1
                        work *= server.cold_factor
                    dt = t - last
                    if dt > 0.0:  # server.advance(t)
                        if n:
                            virtual += shared[n] * dt
                            clock += dt
                            cpu += burn[n] * dt * scale
                        else:
                            cpu += burn[0] * dt
                        last = t
                    if n:  # server.push's after-idle cost
                        scale = 1.0
                    elif after_idle is not None:
                        factor = after_idle(t - idle_since)
                        work *= factor
                        if after_idle_cpu is not None:
                            scale = after_idle_cpu(t - idle_since) / factor
                    push(jobs, (virtual + work, next(seq), t, None, 0))
                    if n and shared[n + 1] <= shared[n] and jobs[0][1] == head:
                        n += 1  # the scheduled completion stays (see _serve)
                        continue
                    n += 1
                    generation += 1  # _reschedule
                    first = jobs[0]
                    head = first[1]
                    left = first[0] - virtual
                    if left < 0.0:
                        left = 0.0
                    when = due = last + left / shared[n]
                    continue
                if due > t_end:
                    break
                t = due  # its completion event: _complete's plain case
                dt = t - last
                if dt > 0.0:
                    virtual += shared[n] * dt
                    clock += dt
                    cpu += burn[n] * dt * scale
                    last = t
                first = jobs[0]
                left = first[0] - virtual
                if left > early:  # it came early
                    generation += 1
                    head = first[1]
                    when = due = last + left / shared[n]
                    continue
                _, _, t0, _, _ = pop(jobs)
                n -= 1
                if not n:
                    idle_since = t
                served += 1
                latency = t - t0 + overhead
                if latency <= timeout:
                    done_t(t)
                    done_latency(latency)
                else:
                    fails.append((t, t0))
                generation += 1
                if jobs:
                    first = jobs[0]
                    head = first[1]
                    left = first[0] - virtual
                    when = due = t + (left if left > 0.0 else 0.0) / shared[n]
                else:
                    due = _INF
            server.n, server.cold_left, server.served = n, cold, served
            server.idle_since, server.cpu_scale = idle_since, scale
            server.virtual, server.clock, server.cpu_seconds = virtual, clock, cpu
            server.last, server.head, server.due = last, head, when
            if server.generation != generation:
                server.generation = generation
                if due < _INF:  # else its entry in the heap stands, or it has none
                    heap.append((due, next(seq), _COMPLETE, server, generation))

    def _run_routed(self, t_end: float, arrivals: list[tuple[float, float, Server]]) -> None:
        """Run the heap's events up to ``t_end`` and ``arrivals`` (time, demand draw, pod),
        already routed, in time order (arrivals first at one instant), by the general
        methods."""
        heap = self._heap
        i, count = 0, len(arrivals)
        while True:
            t_heap = heap[0][0] if heap else _INF
            if i < count and arrivals[i][0] <= t_heap:
                t, z, server = arrivals[i]
                i += 1
                self.now = t
                self._serve(server, t, None, 0, z)
                continue
            if t_heap > t_end:
                break
            t, _, kind, obj, aux = heapq.heappop(heap)
            self.now = t
            if kind == _COMPLETE:
                if aux == obj.generation:  # type: ignore[attr-defined]
                    self._complete(obj, t)  # type: ignore[arg-type]
            else:
                self._event(t, kind, obj, aux)

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
        self._arrivals, self._arrival_i, self._next_arrival = [], 0, _INF

    def _pick(self) -> Server | None:
        endpoints = self.endpoints
        if not endpoints:
            return None
        return endpoints[int(self._routes.next() * len(endpoints))]

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
        self._serve(server, t, user, seq, self._demand.next())

    def _serve(
        self, server: Server | None, t: float, user: User | None, seq: int, z: float
    ) -> None:
        """A request sent at ``t`` (counted and offered) reaches ``server``, with demand draw
        ``z``."""
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
        server.advance(t)
        server.push(work, next(self._seq), t, user, seq)
        jobs = server.jobs
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
        """The scheduled completion on ``server`` is due at ``t``, or came early."""
        jobs = server.jobs
        server.advance(t)
        if server.waiting:
            head, _, left = server.next_done()
            if head != server.head or left > _EARLY:
                self._reschedule(server)
                return
            _, order, t0, user, seq = server.pop_done()
        elif jobs[0][0] - server.virtual > _EARLY:
            self._reschedule(server)  # arrivals slowed the head down since it was scheduled
            return
        else:
            _, order, t0, user, seq = heapq.heappop(jobs)  # server.pop_done(), inlined
            server.n -= 1
            if not server.n:
                server.idle_since = t
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
            self._respond(server, t, t0, user, seq)
        if node is not None and node.contended(server):
            self._split(node)
        self._reschedule(server)

    def _respond(self, server: Server, t: float, t0: float, user: User | None, seq: int) -> None:
        latency = t - t0 + server.overhead
        if user is None:
            if latency > self.timeout:
                self._fail(t0 + self.timeout, FailureReason.TIMEOUT, self.timeout)
            else:
                self._done_t.append(t)
                self._done_latency.append(latency)
        elif user.sending == seq:
            self._done_t.append(t)
            self._done_latency.append(latency)
            self._idle(user, t + server.overhead)

    def _record(self) -> None:
        """Count the completions since the last call and hand them to the recorder."""
        times, latencies = self._done_t, self._done_latency
        if not times:
            return
        self.tally.ok += len(times)
        self.recorder.complete_many(times, latencies)
        times.clear()
        latencies.clear()

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
