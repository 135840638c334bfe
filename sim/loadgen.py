"""Load: Locust's runner driving closed-loop users, or open-loop Poisson arrivals.

The Locust runner follows locust/runners.py: the shape's ``tick()`` runs every second; a new
(user_count, spawn_rate) starts spawning ``spawn_rate`` users per second, each of which runs its
first task at once; ``None`` stops the test. The shape is a pure function of ``t``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy

from sim.dataplane import DataPlane
from sim.rng import Buffered, stream
from sim.scenario import LocustLoad, OpenLoopLoad, WaitTime

Log = Callable[..., None]


def wait_time(spec: WaitTime, seed: int, index: int) -> Callable[[], float]:
    """The user's own wait_time draws: one stream per user, so each user's sleeps are the
    same whatever the system does (common random numbers across what-if points)."""
    if spec.constant is not None:
        constant = spec.constant
        return lambda: constant
    assert spec.between is not None
    low, high = spec.between
    draws = Buffered(stream(seed, "locust-user", index), "uniform", block=256)
    return lambda: low + (high - low) * draws.next()


def locust_runner(
    env: simpy.Environment,
    plane: DataPlane,
    load: LocustLoad,
    seed: int,
    sync: Callable[[], None],
    log: Log,
) -> Generator[Any, Any, None]:
    target = 0
    rate = 1.0
    spawned = 0
    next_spawn = 0.0
    tick = 0.0
    while True:
        sync()
        state = load.shape.tick(env.now)
        if state is None:
            while plane.active_users():
                plane.stop_user()
            log("load", event="stop", users=0)
            return
        users, rate = state
        if users != target:
            log("load", event="shape", users=users, spawn_rate=rate)
            target = users
            next_spawn = max(next_spawn, env.now)
        while plane.active_users() > target:
            plane.stop_user()
        # Spawn at spawn_rate users/s within this second (locust spawns evenly, 1/rate apart).
        while plane.active_users() < target and next_spawn < tick + 1.0:
            if next_spawn > env.now:
                yield env.timeout(next_spawn - env.now)
                sync()
            plane.spawn_user(wait_time(load.wait_time, seed, spawned))
            spawned += 1
            next_spawn = env.now + 1.0 / rate
        tick += 1.0
        yield env.timeout(tick - env.now)


def open_loop_source(
    load: OpenLoopLoad, rng: np.random.Generator, horizon: float
) -> Callable[[], list[float] | None]:
    """Arrival-time blocks, one per second: Poisson counts at rate(t), uniform within it."""
    stop = horizon if load.stop_at is None else min(horizon, load.stop_at)
    second = 0

    def next_block() -> list[float] | None:
        nonlocal second
        if second >= stop:
            return None
        count = int(rng.poisson(load.rate.rate(float(second))))
        block = (second + np.sort(rng.random(count))).tolist()
        second += 1
        return block[: bisect.bisect_left(block, stop)]  # sorted: those before ``stop``

    return next_block
