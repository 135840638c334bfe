"""Block-buffered draws: taken many at a time or one at a time, the same sequence."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sim.rng import Buffered, stream


@given(
    kind=st.sampled_from(["uniform", "normal"]),
    counts=st.lists(st.integers(min_value=-1, max_value=20), max_size=30),
)
def test_take_gives_what_next_gives(kind: str, counts: list[int]) -> None:
    """``take(k)`` is k calls of ``next()`` (-1 here: one ``next()``), across block ends."""
    many = Buffered(stream(1, "test"), kind, block=7)
    one = Buffered(stream(1, "test"), kind, block=7)
    for count in counts:
        got = [many.next()] if count < 0 else many.take(count)
        assert got == [one.next() for _ in range(1 if count < 0 else count)]
    assert many.next() == one.next()  # and they stand at the same place after
