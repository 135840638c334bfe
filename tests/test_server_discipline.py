"""How a server's requests in flight share its measured throughput X(n) (``width`` m)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sim.serving.server import Server


def server(xs: list[float], width: int | None, *, random_entry: bool = False) -> Server:
    """A server with X(n) = ``xs[n - 1]`` for n = 1 .. len(xs) in flight."""
    rate = [0.0] + [x / n for n, x in enumerate(xs, start=1)]
    burn = [0.0] + [1.0] * len(xs)
    return Server(
        "pod",
        tables=lambda c: (rate, burn),
        cores=1.0,
        sigma=0.0,
        overhead=0.0,
        threads=len(xs),
        now=0.0,
        width=width,
        random_entry=random_entry,
    )


def made_monotone(xs: list[float]) -> list[float]:
    out, best = [], 0.0
    for x in xs:
        best = max(best, x)
        out.append(best)
    return out


@settings(max_examples=150, deadline=None)
@given(
    xs=st.lists(st.floats(0.5, 20.0), min_size=1, max_size=8),
    width=st.integers(1, 9),
    random_entry=st.booleans(),
    ops=st.lists(
        st.tuples(st.floats(0.0, 0.5), st.floats(0.05, 3.0), st.floats(0.0, 0.999)),
        min_size=1,
        max_size=60,
    ),
)
# A waiting request past the lanes (it only waits) enters from the back: its mark is stale.
@example(
    xs=[10.0] * 4,
    width=2,
    random_entry=True,
    ops=[(0.0, 1.0, 0.6)] * 3 + [(0.05, 1.0, 0.6), (0.5, 1.0, 0.6)],
)
def test_work_done_is_the_integral_of_the_measured_throughput(
    xs: list[float],
    width: int,
    random_entry: bool,
    ops: list[tuple[float, float, float]],
) -> None:
    """Whatever the width and the entry order, the requests in flight together progress at
    X(min(n, top)) (X made non-decreasing): a request that is not settled when its rate changes,
    or is settled at the wrong rate, breaks this balance."""
    done, integral = balance(xs, width, random_entry, ops)
    assert done == pytest.approx(integral, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(("width", "random_entry"), [(1, False), (2, False), (2, True), (3, True)])
def test_the_balance_holds_over_long_queues_past_the_plateau(
    width: int, random_entry: bool
) -> None:
    """Queues longer than the lanes: requests that only wait must start their lane when they
    reach it, not from when they arrived."""
    xs = [1.0, 1.7, 1.95, 2.2, 2.21, 2.23, 2.25] + [2.25] * 9
    rnd = random.Random(3)
    ops = [(rnd.expovariate(10.0), rnd.lognormvariate(0, 0.5), rnd.random()) for _ in range(5000)]
    done, integral = balance(xs, width, random_entry, ops)
    assert done == pytest.approx(integral, rel=1e-9)


def balance(
    xs: list[float], width: int, random_entry: bool, ops: list[tuple[float, float, float]]
) -> tuple[float, float]:
    """Drive a server as the data plane does: (work done, integral of X(n(t)) dt)."""
    s = server(xs, width, random_entry=random_entry)
    x_hat = [0.0, *made_monotone(xs)]
    works: dict[int, float] = {}
    done_work = integral = 0.0
    order = 0
    for gap, work, pick in ops:
        arrival = s.last + gap
        while s.n:
            s.head, rate, left = s.next_done()
            due = s.last + max(left, 0.0) / rate
            if due > arrival:
                break
            integral += x_hat[min(s.n, s.top)] * (due - s.last)
            s.advance(due)
            completed = s.pop_done(pick if random_entry else -1.0)
            done_work += works.pop(completed[1])
        integral += x_hat[min(s.n, s.top)] * (arrival - s.last)
        s.advance(arrival)
        if s.n < s.top:
            order += 1
            works[order] = work
            s.push(work, order, arrival, None, 0)
    assert s.n == len(s.jobs) + len(s.waiting) and len(s.jobs) == min(s.n, s.width)
    s._settle(0)
    left = [job[0] - s.virtual for job in s.jobs] + [w[0] for w in s.waiting]
    in_flight = sum(works[job[1]] for job in s.jobs + s.waiting) - sum(left)
    return done_work + in_flight, integral


def test_the_oldest_m_share_and_the_rest_wait_for_what_is_left() -> None:
    # X(1) = 10, X(2) = 11, X(3) = 11.5 req/s; two inter-op threads.
    s = server([10.0, 11.0, 11.5], 2)
    assert s.shared == [0.0, 10.0, 5.5]
    assert s.lanes == [0.5]  # the third gets X(3) - X(2)
    s.push(1.0, 1, 0.0, None, 0)
    s.push(1.0, 2, 0.0, None, 0)
    assert s.next_done() == (1, 5.5, 1.0)  # both at X(2)/2: 2/11 s, not 1/10 s
    fifo = server([10.0, 11.0, 11.5], 1)
    assert fifo.shared == [0.0, 10.0] and fifo.lanes == [1.0, 0.5]
    ps = server([10.0, 11.0, 11.5], None)
    assert ps.width == 3 and ps.shared == [0.0, 10.0, 5.5, 11.5 / 3] and ps.lanes == []


def test_past_the_plateau_requests_only_wait() -> None:
    s = server([10.0, 11.0, 11.0, 10.5, 11.5, 11.5], 2)
    assert s.lanes == [0.0, 0.0, 0.5, 0.0] and s.lane_end == 3  # X(4) dips: made flat


@pytest.mark.parametrize(
    ("pick", "entered"),
    [(0.0, 3), (0.49, 3), (0.5, 4), (0.74, 4), (0.75, 5), (0.87, 5), (0.88, 6), (0.999, 6)],
)
def test_a_freed_place_takes_a_waiting_request_from_its_own_queue(
    pick: float, entered: int
) -> None:
    """Two inter-op threads: the oldest waiting is next with probability 1/2, the next 1/4, ...;
    with none left in the freed thread's queue it steals the newest."""
    s = server([10.0] * 6, 2)
    for order in range(1, 7):
        s.push(1.0, order, 0.0, None, 0)
    s.head = 1
    s.pop_done(pick)
    assert sorted(job[1] for job in s.jobs) == [2, entered]
    waiting = [w[1] for w in s.waiting]
    assert waiting == sorted(set(range(3, 7)) - {entered})  # the others keep their order


def test_geometric_entry_probabilities() -> None:
    # P(the k-th oldest waiting enters) = (1/m)(1 - 1/m)^(k - 1) with m = 4, over a fine grid.
    m, waiting = 4, 12
    counts = [0] * waiting
    grid = 8_000
    for i in range(grid):
        s = server([10.0] * (m + waiting), m)
        for order in range(1, m + waiting + 1):
            s.push(1.0, order, 0.0, None, 0)
        s.head = 1
        s.pop_done((i + 0.5) / grid)
        (entered,) = {job[1] for job in s.jobs} - set(range(2, m + 1))
        counts[entered - m - 1] += 1
    for k in range(waiting - 1):
        assert counts[k] / grid == pytest.approx((1 / m) * (1 - 1 / m) ** k, abs=1e-3)
    assert counts[-1] / grid == pytest.approx((1 - 1 / m) ** (waiting - 1), abs=1e-3)
    assert math.isclose(sum(counts), grid)
