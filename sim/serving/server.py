"""One TF Serving container as the data plane runs it, and the CPU its node shares out.

A server with c cores and n requests in flight completes X(c, n) requests per second in total
and burns U(c, n) cores, both read from the profile's measured ladders (``Profile.tables``).
How the n requests share X is the discipline, set by ``width`` m, the requests that progress
together: the oldest min(n, m) share X(min(n, m)) equally, and the k-th oldest beyond them gets
X(k) - X(k-1) (what is left of the server's throughput). m = 1 is FIFO (the oldest runs as if
alone), m >= n is processor sharing; TensorFlow's inter-op pool sets m on a real server (each
Session::Run needs an inter-op thread to run its ops). Arrivals cost O(1) once m requests are in
flight (O(m) below), completions settle the positions whose rate changes. ``width=None`` is
plain processor sharing on a virtual-work clock (a heap, O(log n) per arrival and completion).
A request's work has mean 1 and the lognormal spread of latencies measured with as many in
flight.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.dataplane import User

CFS_PERIOD = 0.1
"""cpu.cfs_period_us: the kubelet sets a 100 ms CFS period for containers with a CPU limit."""

Tables = Callable[[float], tuple[list[float], list[float]]]
"""cores -> (per-request rate X(c, n)/n, CPU U(c, n)) for n = 0, 1, ... (``Profile.tables``)."""


@dataclass(frozen=True)
class BatchingConfig:
    """TF Serving's batch scheduler (BasicBatchScheduler) for one model."""

    max_batch_size: int
    batch_timeout: float  # seconds
    num_batch_threads: int
    max_enqueued_batches: int
    cost: Callable[[int], float]  # a lone batch of b's time / a lone request's, from the profile

    def batch_work(self, works: list[float]) -> float:
        b = len(works)
        return sum(works) / b * self.cost(b)


Job = tuple[float, int, float, "User | None", int]
"""(finish virtual work or plain work when queued, order, sent at, user or None, user seq)."""


class Server:
    """One TF Serving container: its cores, in-flight requests and cumulative CPU time.

    ``cores_alone``: what it gets when no neighbour on the node is busy; ``cores``: what it gets
    now (less under contention, see :class:`NodeCpu`). ``quota`` (cores) is set when the
    container has a CPU limit: CFS then lets it burn at most ``quota x 100 ms`` per 100 ms
    period and throttles it for the rest. ``batching`` switches to TF Serving's batch
    scheduler: each batch (not each request) is a job in flight.
    """

    __slots__ = (
        "alive",
        "batch_open",
        "batch_since",
        "batch_timer",
        "batches",
        "batching",
        "burn",
        "burn_alone",
        "cfs_period",
        "cfs_used",
        "clock",
        "cold_factor",
        "cold_left",
        "cores",
        "cores_alone",
        "cpu_seconds",
        "demand",
        "due",
        "fifo",
        "generation",
        "head",
        "jobs",
        "lane_rate",
        "lanes",
        "last",
        "members",
        "name",
        "node",
        "overhead",
        "queue",
        "quota",
        "random_entry",
        "rate",
        "served",
        "shared",
        "spread",
        "tables",
        "threads",
        "top",
        "virtual",
        "weight",
        "width",
        "work_median",
    )

    def __init__(
        self,
        name: str,
        *,
        tables: Tables,
        cores: float,
        sigma: float | Sequence[float],
        overhead: float,
        threads: int,
        now: float,
        quota: float | None = None,
        cold_requests: int = 0,
        cold_factor: float = 1.0,
        batching: BatchingConfig | None = None,
        weight: float = 1.0,
        width: int | None = None,
        random_entry: bool = False,
    ) -> None:
        self.name = name
        self.tables = tables
        self.overhead = overhead
        self.threads = threads
        self.fifo = width is not None  # positions in arrival order (else the virtual clock)
        self.clock = 0.0  # seconds the server has run (the positions' reference for work done)
        self.cores_alone = self.cores = cores
        self.rate, self.burn = tables(cores)
        self.burn_alone = self.burn
        self.top = len(self.rate) - 1
        if width is not None and width < 1:
            raise ValueError(f"width must be at least 1, got {width}")
        self.width = min(width or 1, self.top)
        self.random_entry = random_entry and width is not None
        self._set_rates()
        # A request joining k - 1 others draws lognormal work of mean 1 with spread[k]: the
        # latency spread measured with k in flight (or one sigma for every k).
        spread = [sigma] * (self.top + 1) if isinstance(sigma, float | int) else list(sigma)
        if len(spread) != self.top + 1:
            raise ValueError(f"spread needs {self.top + 1} values (n = 0 .. {self.top})")
        self.spread = spread
        self.work_median = [math.exp(-(v**2) / 2) for v in spread]
        self.node: NodeCpu | None = None
        self.weight = weight  # CFS shares: the CPU request
        self.demand = 0.0  # cores it would burn now with the node to itself
        self.virtual = 0.0
        self.last = now
        self.cpu_seconds = 0.0
        self.jobs: list[Job] = []
        self.queue: deque[Job] = deque()
        self.generation = 0
        self.head = -1  # order number of the job whose completion is scheduled
        self.due = math.inf  # and when
        self.served = 0
        self.alive = True
        self.quota = quota
        self.cfs_period = -1
        self.cfs_used = 0.0  # CPU-seconds used in period ``cfs_period``
        self.cold_left = cold_requests
        self.cold_factor = cold_factor
        self.batching = batching
        self.members: dict[int, list[Job]] = {}  # batch order -> its requests
        self.batch_open: list[Job] = []
        self.batch_since = 0.0
        self.batch_timer = -1.0
        self.batches: deque[list[Job]] = deque()  # closed batches waiting for a thread

    def set_cores(self, cores: float, *, alone: bool = False) -> None:
        """New cores from now on (the caller has advanced the server to now)."""
        if self.fifo and self.jobs:
            self._settle(0, len(self.jobs))
        self.cores = cores
        self.rate, self.burn = self.tables(cores)
        if alone:
            self.cores_alone, self.burn_alone = cores, self.burn
        self._set_rates()

    def _set_rates(self) -> None:
        """The positions' rates from X made non-decreasing: ``shared[s]``, each of the oldest s
        when s <= m progress together; ``lanes``, (position, X(k) - X(k-1)) for positions k - 1
        >= m that progress at all (past the plateau requests only wait and are never visited);
        ``lane_rate``, the same by position (0 below m and where a request only waits)."""
        m, best = self.width, 0.0
        self.shared = [0.0]
        for s in range(1, m + 1):
            best = max(best, self.rate[s] * s)
            self.shared.append(best / s)
        self.lanes = []
        self.lane_rate = [0.0] * (self.top + 1)
        for n in range(m + 1, self.top + 1):
            x = self.rate[n] * n
            if x > best:
                self.lanes.append((n - 1, x - best))
                self.lane_rate[n - 1] = x - best
                best = x

    # With positions (``fifo``) a job is [work left at its mark, order, sent at, user, seq,
    # mark], the mark a reading of ``clock`` (running seconds): its work left now is work -
    # rate x (clock - mark), where rate is its position's. A rate changes only when the job
    # moves up (an older one completes) or, among the oldest m, when the count sharing changes;
    # the jobs concerned are settled first.

    def push(self, work: float, order: int, t0: float, user: User | None, seq: int) -> None:
        """A request (or batch) starts; the server has been advanced to now."""
        if self.fifo:
            n = len(self.jobs)
            if 0 < n < self.width:
                self._settle(0, n)
            self.jobs.append([work, order, t0, user, seq, self.clock])  # type: ignore[arg-type]
        else:
            heapq.heappush(self.jobs, (self.virtual + work, order, t0, user, seq))

    def _settle(self, start: int, stop: int) -> None:
        """Work left as of now for the jobs at positions ``start`` to ``stop`` - 1."""
        jobs, lane_rate, clock, m = self.jobs, self.lane_rate, self.clock, self.width
        n = len(jobs)
        shared = self.shared[n if n < m else m]
        for i in range(start, min(stop, n)):
            job: Any = jobs[i]
            job[0] -= (shared if i < m else lane_rate[i]) * (clock - job[5])
            job[5] = clock

    def pop_done(self, pick: float = -1.0) -> Job:
        """With positions: the request whose completion was scheduled. The younger ones move up
        a position, and with m or fewer in flight the oldest share among one fewer: the jobs
        whose rate changes are settled first.

        ``pick``, uniform in [0, 1) (``random_entry``): which waiting request takes a freed
        place among the m, instead of the oldest. TensorFlow runs ops on Eigen's
        NonBlockingThreadPool, whose Schedule() from outside the pool pushes to the back of a
        random thread's queue; a thread pops its own queue's front and, when that is empty,
        steals the back of another's (Eigen ThreadPool/NonBlockingThreadPool.h). So the k-th
        oldest waiting request is next with probability (1/m)(1 - 1/m)^(k-1), and the newest
        when none waits in the freed queue. Assumption: each completion draws queue membership
        afresh (a request's queue is not remembered)."""
        jobs, head, m = self.jobs, self.head, self.width
        n = len(jobs)
        for i in range(n if n < m else m):
            if jobs[i][1] == head:
                break
        else:
            for i, _ in self.lanes:
                if i < n and jobs[i][1] == head:
                    break
            else:
                raise LookupError(f"{self.name}: the scheduled request {head} is not in flight")
        last = self.lanes[-1][0] + 2 if self.lanes else m + 1
        self._settle(0 if n <= m else max(i + 1, m), last)
        done = jobs.pop(i)
        if pick >= 0.0 and i < m < n:
            # The n - m waiting are now at positions m - 1 .. n - 2; the one chosen moves to
            # m - 1 and the others keep their order. Those it passes were settled above (or
            # wait at rate 0); its own work left is current, so its mark is now.
            g = int(math.log(1.0 - pick) / math.log(1.0 - 1.0 / m)) if m > 1 else 0
            j = m - 1 + (g if g < n - m else n - m - 1)
            if j != m - 1:
                jobs.insert(m - 1, jobs.pop(j))
            jobs[m - 1][5] = self.clock  # type: ignore[index]
        return tuple(done[:5])  # type: ignore[return-value]

    def next_done(self) -> tuple[Job, float, float] | None:
        """With positions: the request to complete next, its rate and work left (None when
        nothing progresses)."""
        best: Job | None = None
        best_t, best_r, best_left = math.inf, 0.0, 0.0
        jobs, clock, m = self.jobs, self.clock, self.width
        n = len(jobs)
        k = n if n < m else m
        r = self.shared[k]
        for i in range(k):
            job: Any = jobs[i]
            left = job[0] - r * (clock - job[5])
            if left < best_t * r:
                best, best_t, best_r, best_left = job, left / r, r, left
        for i, r in self.lanes:
            if i >= n:
                break
            job = jobs[i]
            left = job[0] - r * (clock - job[5])
            if left < best_t * r:
                best, best_t, best_r, best_left = job, left / r, r, left
        return None if best is None else (best, best_r, best_left)

    def advance(self, now: float) -> None:
        dt = now - self.last
        if dt <= 0:
            return
        n = len(self.jobs)
        if n:
            if n > self.top:
                n = self.top  # the plateau
            burn = self.burn[n]
            running = dt if self.quota is None else self._cfs_running(now, burn)
            if self.fifo:
                self.clock += running
            else:
                self.virtual += self.rate[n] * running
            self.cpu_seconds += burn * running
        else:
            self.cpu_seconds += self.burn[0] * dt
        self.last = now

    def _cfs_running(self, now: float, pod_rate: float) -> float:
        """Seconds of [last, now] the pod actually ran at ``pod_rate`` under its CFS quota."""
        assert self.quota is not None
        budget = self.quota * CFS_PERIOD
        k = int(self.last // CFS_PERIOD)
        used = self.cfs_used if k == self.cfs_period else 0.0
        end = (k + 1) * CFS_PERIOD
        running = min(min(now, end) - self.last, max(0.0, budget - used) / pod_rate)
        if now <= end:
            self.cfs_period, self.cfs_used = k, used + running * pod_rate
            return running
        last_k = int(now // CFS_PERIOD)
        per_period = min(CFS_PERIOD, budget / pod_rate)
        running += (last_k - k - 1) * per_period
        tail = min(now - last_k * CFS_PERIOD, per_period)
        self.cfs_period, self.cfs_used = last_k, tail * pod_rate
        return running + tail

    def finish_time(self, left: float, rate: float) -> float:
        """When the head job, ``left`` work from done, completes at ``rate`` per job."""
        needed = left / rate  # seconds of running time
        if self.quota is None:
            return self.last + needed
        pod_rate = self.burn[min(len(self.jobs), self.top)]
        budget = self.quota * CFS_PERIOD
        k = int(self.last // CFS_PERIOD)
        used = self.cfs_used if k == self.cfs_period else 0.0
        end = (k + 1) * CFS_PERIOD
        first = min(end - self.last, max(0.0, budget - used) / pod_rate)
        if needed <= first:
            return self.last + needed
        needed -= first
        per_period = min(CFS_PERIOD, budget / pod_rate)
        # whole periods before the last one; a tolerance so that rounding (0.15 / 0.05 =
        # 3.0000000000000004) does not push an exact multiple into one more period
        full = max(math.ceil(needed / per_period - 1e-9) - 1, 0)
        return end + full * CFS_PERIOD + (needed - full * per_period)

    def in_flight(self) -> int:
        waiting = len(self.batch_open) + sum(len(b) for b in self.batches)
        running = sum(len(m) for m in self.members.values()) if self.batching else len(self.jobs)
        return running + len(self.queue) + waiting


class NodeCpu:
    """The CPU a node's serving pods share. Each pod may use what its neighbours leave idle;
    only when their demands together exceed the node's free CPU does CFS split it by shares
    (cpu.shares = the CPU request), water-filling: a pod wanting less than its share gets its
    demand and the rest is split again among the others
    (https://docs.kernel.org/scheduler/sched-design-CFS.html, group scheduling).

    A pod granted a fraction f of the CPU it would burn alone runs as on f x its cores
    (assumption: throughput and CPU in use scale together with the cores a server gets).
    """

    __slots__ = ("demand", "free", "servers")

    def __init__(self, free: float) -> None:
        self.free = free
        self.servers: list[Server] = []
        self.demand = 0.0

    def contended(self, server: Server) -> bool:
        """Update ``server``'s demand; True when the split may have changed."""
        n = len(server.jobs)
        demand = server.burn_alone[n if n < server.top else server.top]
        before = self.demand
        self.demand += demand - server.demand
        server.demand = demand
        return before > self.free or self.demand > self.free

    def split(self) -> dict[Server, float]:
        """Cores for each server under the current demands."""
        self.demand = sum(s.demand for s in self.servers)
        if self.demand <= self.free:
            return {s: s.cores_alone for s in self.servers}
        cores: dict[Server, float] = {}
        left = self.free
        pending = [s for s in self.servers if s.demand > 0]
        for s in self.servers:
            if s.demand <= 0:
                cores[s] = s.cores_alone
        while pending:
            weights = sum(s.weight for s in pending)
            satisfied = [s for s in pending if s.demand <= left * s.weight / weights]
            if not satisfied:
                for s in pending:
                    cores[s] = s.cores_alone * (left * s.weight / weights) / s.demand
                break
            for s in satisfied:
                cores[s] = s.cores_alone
                left -= s.demand
                pending.remove(s)
        return cores
