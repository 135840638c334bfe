"""One TF Serving container as the data plane runs it, and the CPU its node shares out.

A server with c cores and n requests in flight completes X(c, n) requests per second in total
and burns U(c, n) cores, both read from the profile's measured ladders (``Profile.tables``).
How the n requests share X is the discipline, set by ``width`` m, the requests that progress
together: the running min(n, m) share X(min(n, m)) equally, and the k-th beyond them gets
X(k) - X(k-1), what is left of the server's throughput (X made non-decreasing). m = 1 is FIFO
(the oldest runs as if alone), m >= n processor sharing; on a real server TensorFlow's inter-op
pool sets m (a Session::Run progresses only while its ops run on inter-op threads).

The running share one virtual-work clock (a heap ordered by finish, O(log m) per arrival and
completion, nothing to settle when their count changes); the waiting keep their work left at a
mark of the server's running clock and are settled only when they move up a place. A
request's work has mean 1 and the lognormal spread of latencies measured with as many in
flight, times the profile's after-idle factor when it finds the server idle
(``Profile.idle_factor``: on the 2-core VM a request after the lab's 0.85 s wait took 8-13%
longer than one sent back to back, and burnt up to 10% more CPU). While that request runs
alone the CPU counter accrues U x ``cpu_scale``, the CPU factor over the work's, so that its
CPU is the measured CPU factor's (``Profile.idle_cpu_factor``).
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


_SHARING: dict[tuple[int, int], tuple[list[float], list[float], list[float], int]] = {}
_SHARING_MAX = 4096


def sharing(rate: list[float], width: int) -> tuple[list[float], list[float], int]:
    """From per-request rates X(n)/n, X made non-decreasing: ``shared[k]``, the rate of each of
    k <= m running; ``lanes[i]``, X(m + i + 1) - X(m + i), the rate of the i-th waiting; and
    ``lane_end``, how many waiting places progress at all (past the plateau requests only
    wait, and are never visited). Kept per rate table (the profile caches one per cores), since
    pods contending for a node change cores at every request."""
    key = (id(rate), width)
    hit = _SHARING.get(key)
    if hit is not None and hit[0] is rate:
        return hit[1], hit[2], hit[3]
    m, best = width, 0.0
    shared = [0.0]
    for k in range(1, m + 1):
        best = max(best, rate[k] * k)
        shared.append(best / k)
    lanes = []
    for n in range(m + 1, len(rate)):
        x = rate[n] * n
        lanes.append(max(x - best, 0.0))
        best = max(best, x)
    end = len(lanes)
    while end and lanes[end - 1] == 0.0:
        end -= 1
    if len(_SHARING) >= _SHARING_MAX:
        _SHARING.clear()
    _SHARING[key] = (rate, shared, lanes, end)  # holding ``rate`` keeps its id unique
    return shared, lanes, end


Job = tuple[float, int, float, "User | None", int]
"""(finish virtual work, or plain work when queued; order, sent at, user or None, user seq)."""

Waiting = list[Any]
"""[work left at mark, order, sent at, user or None, user seq, mark, queue]: a request past the
m; ``queue``, the inter-op thread whose queue holds it (-1 when the oldest runs next)."""


def _coprimes(m: int) -> list[int]:
    """Steal strides: the numbers in 1..m coprime to m (Eigen's ``all_coprimes_``)."""
    return [i for i in range(1, m + 1) if math.gcd(i, m) == 1]


class Server:
    """One TF Serving container: its cores, in-flight requests and cumulative CPU time.

    ``cores_alone``: what it gets when no neighbour on the node is busy; ``cores``: what it gets
    now (less under contention, see :class:`NodeCpu`). ``quota`` (cores) is set when the
    container has a CPU limit: CFS then lets it burn at most ``quota x 100 ms`` per 100 ms
    period and throttles it for the rest. ``batching`` switches to TF Serving's batch
    scheduler: each batch (not each request) is a job in flight. ``random_entry``: a freed
    place among the m goes to a waiting request chosen as TensorFlow's thread pool would (see
    :meth:`pop_done`), not to the oldest; ``draw`` then gives the uniform draws that choice
    takes (the data plane sets it to its order stream).
    """

    __slots__ = (
        "after_idle",
        "after_idle_cpu",
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
        "cpu_scale",
        "cpu_seconds",
        "demand",
        "draw",
        "due",
        "generation",
        "head",
        "idle_since",
        "jobs",
        "lane_end",
        "lanes",
        "last",
        "members",
        "n",
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
        "steal_strides",
        "tables",
        "thread_of",
        "threads",
        "top",
        "virtual",
        "waiting",
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
        draw: Callable[[], float] | None = None,
        after_idle: Callable[[float], float] | None = None,
        after_idle_cpu: Callable[[float], float] | None = None,
    ) -> None:
        self.name = name
        self.tables = tables
        self.overhead = overhead
        self.threads = threads
        self.cores_alone = self.cores = cores
        self.rate, self.burn = tables(cores)
        self.burn_alone = self.burn
        self.top = len(self.rate) - 1
        if width is not None and width < 1:
            raise ValueError(f"width must be at least 1, got {width}")
        self.width = self.top if width is None else min(width, self.top)
        self.random_entry = random_entry
        self.draw = draw or self._no_draw
        self.thread_of: dict[int, int] = {}  # order -> inter-op thread, while requests wait
        self.steal_strides = _coprimes(self.width)
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
        self.virtual = 0.0  # work done by each running request since the start
        self.clock = 0.0  # seconds the server has run (the waiting's marks)
        self.last = now
        self.after_idle = after_idle  # idle seconds -> work factor (Profile.idle_factor)
        self.after_idle_cpu = after_idle_cpu  # and -> CPU factor (Profile.idle_cpu_factor)
        self.idle_since = now  # when the last request in flight left
        self.cpu_seconds = 0.0
        self.cpu_scale = 1.0  # U's multiplier while busy: below 1 while an after-idle one runs
        self.n = 0  # requests (or batches) in flight: running and waiting
        self.jobs: list[Job] = []  # the running, a heap by finish virtual work
        self.waiting: list[Waiting] = []  # the rest, in order
        self.queue: deque[Job] = deque()  # beyond the REST threads
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
        self._settle(0)
        for w in self.waiting:  # the lanes may reach further now: every mark starts here
            w[5] = self.clock
        self.cores = cores
        self.rate, self.burn = self.tables(cores)
        if alone:
            self.cores_alone, self.burn_alone = cores, self.burn
        self._set_rates()

    def _set_rates(self) -> None:
        self.shared, self.lanes, self.lane_end = sharing(self.rate, self.width)

    def push(self, work: float, order: int, t0: float, user: User | None, seq: int) -> None:
        """A request (or batch) starts; the server has been advanced to now. With a thread
        idle it runs at once (Eigen wakes an idle thread, which steals it); else, under
        ``random_entry``, it joins the back of a random thread's queue: a Session::Run from
        outside the pool is pushed to ``thread_data_[Rand() % num_threads].queue.PushBack``
        (Eigen ThreadPool/NonBlockingThreadPool.h, ScheduleWithHint). One that finds the
        server idle does ``after_idle`` of its idle time more work, and burns ``after_idle_cpu``
        of it more CPU while it runs alone (the scale ends when another joins)."""
        if not self.n:
            if self.after_idle is not None:
                gap = self.last - self.idle_since
                factor = self.after_idle(gap)
                work *= factor
                if self.after_idle_cpu is not None:
                    self.cpu_scale = self.after_idle_cpu(gap) / factor
        elif self.cpu_scale != 1.0:
            self.cpu_scale = 1.0
        self.n += 1
        jobs = self.jobs
        if len(jobs) < self.width:
            heapq.heappush(jobs, (self.virtual + work, order, t0, user, seq))
            return
        queue = -1
        if self.random_entry and self.width > 1:
            if not self.waiting:
                # Every queue is empty, so which thread runs which request is immaterial: the
                # threads are named now and followed for as long as requests wait.
                self.thread_of = {job[1]: i for i, job in enumerate(jobs)}
            queue = int(self.draw() * self.width)
        self.waiting.append([work, order, t0, user, seq, self.clock, queue])

    def _no_draw(self) -> float:
        raise RuntimeError(f"{self.name}: random_entry needs a draw (DataPlane.add_endpoint)")

    def _settle(self, start: int) -> None:
        """Work left as of now for the waiting from place ``start`` on, who are about to move
        up a place: those in lanes, and the first past them, whose mark starts its lane. The
        rest only wait, and are not visited."""
        waiting, lanes, clock = self.waiting, self.lanes, self.clock
        end = min(self.lane_end, len(waiting))
        for i in range(start, end):
            w = waiting[i]
            w[0] -= lanes[i] * (clock - w[5])
            w[5] = clock
        if start <= end < len(waiting):
            waiting[end][5] = clock

    def pop_done(self) -> Job:
        """The request whose completion was scheduled. When it was running and requests wait,
        one of them starts running on the thread it leaves: the oldest, or under
        ``random_entry`` the one TensorFlow's thread pool picks (:meth:`_next_for`). The
        waiting behind the one leaving move up a place and are settled first."""
        self.n -= 1
        if not self.n:
            self.idle_since = self.last
        jobs, waiting = self.jobs, self.waiting
        if jobs and jobs[0][1] == self.head:
            done = heapq.heappop(jobs)
            if waiting:
                j = 0
                if waiting[0][6] >= 0:
                    thread = self.thread_of.pop(done[1])
                    j = self._next_for(thread)
                    self.thread_of[waiting[j][1]] = thread
                self._settle(j)
                w = waiting.pop(j)
                heapq.heappush(jobs, (self.virtual + w[0], w[1], w[2], w[3], w[4]))
            return done
        for i in range(min(self.lane_end, len(waiting))):
            if waiting[i][1] == self.head:
                self._settle(i)
                return tuple(waiting.pop(i)[:5])
        raise LookupError(f"{self.name}: the scheduled request {self.head} is not in flight")

    def _next_for(self, thread: int) -> int:
        """The place in ``waiting`` of the request a freed inter-op thread runs next: the
        oldest in its own queue (a worker pops its queue's front; outside tasks were pushed to
        the back), else the newest of another's: Steal() pops the back of the first non-empty
        queue in a scan from a random victim with a random stride coprime to the pool's size
        (Eigen ThreadPool/NonBlockingThreadPool.h, WorkerLoop and Steal)."""
        waiting = self.waiting
        for j, w in enumerate(waiting):
            if w[6] == thread:
                return j
        m = self.width
        newest = [-1] * m
        for j in range(len(waiting) - 1, -1, -1):
            q = waiting[j][6]
            if newest[q] < 0:
                newest[q] = j
        r = int(self.draw() * 2**32)
        victim, stride = r % m, self.steal_strides[r % len(self.steal_strides)]
        while newest[victim] < 0:  # the freed thread's own queue is empty: the scan passes it
            victim = (victim + stride) % m
        return newest[victim]

    def next_done(self) -> tuple[int, float, float]:
        """The request to complete next, of those in flight (the oldest runs: X(1) > 0): its
        order, rate and work left."""
        jobs = self.jobs
        best, best_r, best_left = jobs[0][1], self.shared[len(jobs)], jobs[0][0] - self.virtual
        waiting, lanes, clock = self.waiting, self.lanes, self.clock
        for i in range(min(self.lane_end, len(waiting))):
            w, r = waiting[i], lanes[i]
            left = w[0] - r * (clock - w[5])
            if r > 0.0 and left * best_r < best_left * r:
                best, best_r, best_left = w[1], r, left
        return best, best_r, best_left

    def advance(self, now: float) -> None:
        dt = now - self.last
        if dt <= 0:
            return
        n = self.n
        if n:
            burn = self.burn[n if n < self.top else self.top]
            running = dt if self.quota is None else self._cfs_running(now, burn)
            self.virtual += self.shared[len(self.jobs)] * running
            self.clock += running
            self.cpu_seconds += burn * running * self.cpu_scale
        else:
            self.cpu_seconds += self.burn[0] * dt
        self.last = now

    def clear(self) -> list[Job]:
        """Every request (or batch) in flight, removed (the container is gone)."""
        gone = self.jobs + [tuple(w[:5]) for w in self.waiting]
        self.jobs, self.waiting, self.n = [], [], 0
        self.idle_since = self.last
        return gone

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
        pod_rate = self.burn[min(self.n, self.top)]
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
        running = sum(len(m) for m in self.members.values()) if self.batching else self.n
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
        n = server.n
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
