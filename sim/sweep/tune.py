"""``scalelab tune``: a seeded Optuna search over the axes instead of a grid.

Minimizes the mean cost over seeds subject to the SLO in every seed (one constraint per
objective: the worst seed's relative excess over its limit, <= 0 when met), with Optuna's TPE
sampler and its constraint support. Trials are asked in batches of fixed size, run in
parallel, and told back in order, so the same sampler seed and batch size give the same
trials whatever ``-j`` is; and a resumed tune replays its finished trials from the cache.

An axis ``LOW:HIGH`` of integers is searched as integers, of floats as floats (``LOW:HIGH:log``
on a log scale); ``LOW:HIGH:STEP`` on that grid; a list as categories.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sim.sweep.axes import Axis, SweepError
from sim.sweep.plan import Point, build_point
from sim.sweep.runner import Runner
from sim.sweep.study import Study

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

#: Optuna needs finite constraint values; a run with no latency at all is this far off.
FAR = 1e9


def distribution(axis: Axis) -> BaseDistribution:
    """The Optuna search space of one axis."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if axis.values is not None and axis.step is None:
        return CategoricalDistribution(list(axis.values))
    assert axis.low is not None and axis.high is not None
    if axis.integer:
        step = int(axis.step) if axis.step is not None else 1
        return IntDistribution(int(axis.low), int(axis.high), log=axis.log, step=step)
    return FloatDistribution(float(axis.low), float(axis.high), log=axis.log, step=axis.step)


#: Proposals asked per point of the budget before the search gives up on new points (a
#: space of mostly invalid combinations, or one TPE keeps re-proposing): an assumption.
ASKS_PER_POINT = 10


@dataclass
class TuneLog:
    """What the search did: trials asked, distinct points evaluated, proposals that repeated
    an evaluated point or made no valid scenario, and why fewer points than the budget."""

    trials: int = 0
    evaluated: int = 0
    repeats: int = 0
    invalid: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    space: int | None = None  # distinct points of the search space; None: continuous
    shortfall: str | None = None


def space_size(axes: Sequence[Axis]) -> int | None:
    """How many distinct points the axes span (None when a range is continuous)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    size = 1
    for axis in axes:
        dist = distribution(axis)
        if isinstance(dist, CategoricalDistribution):
            size *= len(dist.choices)
        elif isinstance(dist, FloatDistribution) and dist.step is None:
            return None  # a continuous range
        else:
            assert isinstance(dist, FloatDistribution | IntDistribution)
            size *= math.floor((dist.high - dist.low) / (dist.step or 1) + 1e-9) + 1
    return size


def tune(
    study: Study,
    axes: Sequence[Axis],
    budget: int,
    runner: Runner,
    *,
    batch: int = 4,
    sampler_seed: int = 0,
    on_run: Callable[[Study], None] | None = None,
) -> TuneLog:
    """Evaluate ``budget`` distinct points chosen by TPE (added to ``study.points``), or fewer
    with the reason in ``shortfall``: the space has fewer, or the sampler's proposals kept
    repeating evaluated points or making invalid scenarios. A repeat is told the result
    already known, so the sampler learns from it without another run."""
    import optuna
    from optuna.trial import TrialState

    if study.slo is None:
        raise ValueError("tune needs an SLO to search under (--slo or the scenario's slo:)")
    slo = study.slo
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(
        seed=sampler_seed,
        n_startup_trials=min(10, budget),
    )
    search = optuna.create_study(direction="minimize", sampler=sampler)
    space = {axis.path: distribution(axis) for axis in axes}
    log = TuneLog(space=space_size(axes))
    target = budget if log.space is None else min(budget, log.space)
    evaluated: dict[str, Point] = {}
    first = True
    while log.evaluated < target and log.trials < ASKS_PER_POINT * budget:
        asks = min(batch, target - log.evaluated, ASKS_PER_POINT * budget - log.trials)
        trials = [search.ask(space) for _ in range(asks)]
        log.trials += len(trials)
        told: list[tuple[Any, Point]] = []
        fresh: list[Point] = []
        for trial in trials:
            values = tuple((a.path, _clean(trial.params[a.path])) for a in axes)
            try:
                point = build_point(study.base, len(study.points) + len(fresh), values)
            except SweepError as err:
                log.invalid.append((dict(values), "; ".join(p.allowed for p in err.problems)))
                search.tell(trial, state=TrialState.FAIL)
                continue
            if point.sha in evaluated:
                log.repeats += 1
                point = evaluated[point.sha]
            else:
                evaluated[point.sha] = point
                fresh.append(point)
            told.append((trial, point))
        study.run(runner, fresh, on_run, with_baseline=first)
        first = False
        log.evaluated += len(fresh)
        for trial, point in told:
            result = study.result(point)
            for objective in slo.objectives:
                excess = objective.violation(result.worst(objective.column))
                trial.set_constraint(objective.metric, excess if math.isfinite(excess) else FAR)
            trial.set_user_attr("point", point.index)
            cost = result.mean("cost_usd")
            search.tell(trial, cost if cost is not None else FAR)
    log.shortfall = _shortfall(log, budget)
    return log


def _shortfall(log: TuneLog, budget: int) -> str | None:
    if log.evaluated >= budget:
        return None
    if log.space is not None and log.evaluated >= log.space:
        return f"the search space has only {log.space} points: all were evaluated"
    return (
        f"{log.trials} proposals ({ASKS_PER_POINT} per point of the budget) gave "
        f"{log.evaluated} distinct valid points: {log.repeats} repeated an evaluated point, "
        f"{len(log.invalid)} made no valid scenario"
        + (f" (the space has {log.space} points)" if log.space is not None else "")
    )


def _clean(value: Any) -> Any:
    """Float steps leave 0.30000000000000004; a scenario should read 0.3."""
    return round(value, 10) if isinstance(value, float) else value
