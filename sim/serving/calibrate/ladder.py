"""The concurrency ladder: which closed-loop concurrencies to measure, and when to stop.

Each thread count gets a batch-1 ladder n = 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64 (powers of
two and three times them) of closed-loop callers with no think time. The next n depends on the
throughputs measured so far. A step *rises* when its throughput X(n) is at least ``KNEE_GAIN``
(1.03) times the best X at smaller n; the *knee* is the first n where X(n) is below that (a step
that gained no more than 3%). The ladder measures ``PAST_KNEE`` (3) steps past the knee and
stops, never beyond its cap (``MAX_CONCURRENCY``, 64). Should one of those steps rise after all
(the knee was a disturbed window, or the curve climbs again), the knee moves to the next step
that does not rise: the ladder always ends with the knee and three steps after it that raised
throughput by no more than 3% over the best before them. A fixed list (``--concurrency``) is
measured as given.

Pure functions: the worker and the endpoint mode both call :func:`next_concurrency`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

KNEE_GAIN = 1.03
"""A step that raises throughput by less than this factor over the best so far is the knee."""
PAST_KNEE = 3
"""Steps measured past the knee before the ladder stops."""
MAX_CONCURRENCY = 64

Measured = Sequence[tuple[int, float]]
"""(concurrency, throughput) in the order measured."""


def steps(cap: int = MAX_CONCURRENCY) -> tuple[int, ...]:
    """1, 2, 3, 4, 6, 8, 12, 16, 24, ... up to ``cap`` (powers of two and 3 x them)."""
    out: set[int] = set()
    power = 1
    while power <= cap:
        out.add(power)
        if 3 * power // 2 <= cap and power > 1:
            out.add(3 * power // 2)
        power *= 2
    return tuple(sorted(out))


def knee(measured: Measured, gain: float = KNEE_GAIN) -> int | None:
    """The first concurrency below ``gain`` x the best before it and after the last that was
    not (see the module docstring); None while the last step measured rose."""
    best = 0.0
    found: int | None = None
    for i, (n, x) in enumerate(measured):
        if i == 0 or x >= gain * best:
            found = None  # a rise: any earlier knee was premature
        elif found is None:
            found = n
        best = max(best, x)
    return found


def next_concurrency(
    measured: Measured,
    *,
    cap: int = MAX_CONCURRENCY,
    fixed: Sequence[int] | None = None,
    gain: float = KNEE_GAIN,
    past: int = PAST_KNEE,
) -> int | None:
    """The next concurrency to measure after ``measured``, or None when the ladder is done.

    With ``fixed``, its values in order. Otherwise the next of :func:`steps` above the last
    measured, unless ``past`` steps beyond the knee are already measured or it exceeds ``cap``.
    """
    if fixed is not None:
        return fixed[len(measured)] if len(measured) < len(fixed) else None
    if not measured:
        return 1
    at = knee(measured, gain)
    if at is not None:
        after = sum(1 for n, _ in measured if n > at)
        if after >= past:
            return None
    last = measured[-1][0]
    return next((n for n in steps(cap) if n > last), None)


def climb(
    measure: Callable[[int], float],
    *,
    cap: int = MAX_CONCURRENCY,
    fixed: Sequence[int] | None = None,
) -> list[tuple[int, float]]:
    """Measure ``measure(n) -> throughput`` up the ladder; return what was measured."""
    measured: list[tuple[int, float]] = []
    while (n := next_concurrency(measured, cap=cap, fixed=fixed)) is not None:
        measured.append((n, measure(n)))
    return measured


def describe(fixed: Sequence[int] | None, cap: int = MAX_CONCURRENCY) -> str:
    """The ladder rule in words, for a profile's provenance."""
    if fixed is not None:
        return f"fixed: concurrency {', '.join(map(str, fixed))} (--concurrency), no knee search"
    return (
        f"concurrency {', '.join(map(str, steps(cap)))} in turn, stopping {PAST_KNEE} steps "
        f"past the knee: the first concurrency whose throughput is below {KNEE_GAIN:g} x the "
        f"best at smaller concurrency (a step that gained no more than "
        f"{round((KNEE_GAIN - 1) * 100):d}%); a later step that rises above that moves the "
        "knee to the next one that does not"
    )
