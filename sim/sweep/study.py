"""A study: the points of a sweep (or a tune), its seeds and SLO, and the runs' records.

Every point runs with the same seeds: ``scenario.seed``, ``+1``, ... Each component draws
from its own stream of the seed, so the load a seed gives is the same at every point (common
random numbers) and point-to-point differences are the configuration's. The baseline (the
scenario as given) runs with the same seeds, for comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sim.sweep.executor import Task
from sim.sweep.plan import Base, Point, label
from sim.sweep.results import PointResult, rank_points, run_row, summarize
from sim.sweep.runner import Runner
from sim.sweep.slo import SLOSpec
from sim.sweep.worker import Record


@dataclass
class Best:
    """The cheapest point so far that met the SLO in every seed (for the progress bar)."""

    point: Point
    cost: float


@dataclass
class Study:
    base: Base
    seeds: tuple[int, ...]
    slo: SLOSpec | None
    points: list[Point] = field(default_factory=list)
    records: dict[tuple[str, int], Record] = field(default_factory=dict)
    best: Best | None = None
    _done: dict[str, int] = field(default_factory=dict)

    @property
    def baseline(self) -> Point:
        return Point(-1, (), self.base.scenario, self.base.sha)

    def tasks(self, points: Sequence[Point]) -> list[Task]:
        return [Task(p.sha, seed, p.scenario) for p in points for seed in self.seeds]

    def points_done(self) -> int:
        return sum(1 for p in self.points if self._done.get(p.sha, 0) >= len(self.seeds))

    def run(
        self,
        runner: Runner,
        points: Sequence[Point],
        on_run: Callable[[Study], None] | None = None,
        with_baseline: bool = True,
    ) -> None:
        """Run ``points`` (added to the study) and the baseline, every seed of each."""
        self.points.extend(points)
        by_sha: dict[str, list[Point]] = {}
        for point in self.points:
            by_sha.setdefault(point.sha, []).append(point)

        def landed(task: Task, record: Record) -> None:
            self.records[task.key] = record
            self._done[task.sha] = self._done.get(task.sha, 0) + 1
            if self._done[task.sha] == len(self.seeds):
                for point in by_sha.get(task.sha, []):
                    self._consider(point)
            if on_run is not None:
                on_run(self)

        tasks = self.tasks(points)
        if with_baseline:
            tasks += self.tasks([self.baseline])
        runner.run([t for t in tasks if t.key not in self.records], landed)

    def _consider(self, point: Point) -> None:
        result = self.result(point)
        cost = result.mean("cost_usd")
        if self.slo is None or not result.feasible or cost is None:
            return
        if self.best is None or cost < self.best.cost:
            self.best = Best(point, cost)

    def rows(self, point: Point) -> list[dict[str, Any]]:
        return [run_row(point, s, self.records[(point.sha, s)], self.slo) for s in self.seeds]

    def result(self, point: Point) -> PointResult:
        return summarize(point, self.rows(point), self.slo)

    def ranked(self) -> list[PointResult]:
        """Every distinct point (the first of identical scenarios), ranked."""
        seen: set[str] = set()
        unique = []
        for point in self.points:
            if point.sha not in seen:
                seen.add(point.sha)
                unique.append(point)
        return rank_points([self.result(p) for p in unique], self.slo)

    def describe_best(self) -> str:
        if self.best is None:
            return "-" if self.slo is not None else "(no SLO)"
        return f"{label(self.best.point.values)} ${self.best.cost:.4f}"
