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


@dataclass
class TuneLog:
    """What the search did: trials asked, and those whose parameters made no valid scenario."""

    trials: int = 0
    invalid: list[tuple[dict[str, Any], str]] = field(default_factory=list)


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
    """Evaluate ``budget`` points chosen by TPE; they are added to ``study.points``."""
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
    log = TuneLog()
    first = True
    while log.trials < budget:
        trials = [search.ask(space) for _ in range(min(batch, budget - log.trials))]
        log.trials += len(trials)
        pending: list[tuple[Any, Point]] = []
        for trial in trials:
            values = tuple((a.path, _clean(trial.params[a.path])) for a in axes)
            try:
                point = build_point(study.base, len(study.points) + len(pending), values)
            except SweepError as err:
                log.invalid.append((dict(values), "; ".join(p.allowed for p in err.problems)))
                search.tell(trial, state=TrialState.FAIL)
                continue
            pending.append((trial, point))
        study.run(runner, [p for _, p in pending], on_run, with_baseline=first)
        first = False
        for trial, point in pending:
            result = study.result(point)
            for objective in slo.objectives:
                excess = objective.violation(result.worst(objective.column))
                trial.set_constraint(objective.metric, excess if math.isfinite(excess) else FAR)
            trial.set_user_attr("point", point.index)
            cost = result.mean("cost_usd")
            search.tell(trial, cost if cost is not None else FAR)
    return log


def _clean(value: Any) -> Any:
    """Float steps leave 0.30000000000000004; a scenario should read 0.3."""
    return round(value, 10) if isinstance(value, float) else value
