"""One seeded random stream per component: changing one leaves the others' draws alone."""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, component: str, *index: int) -> np.random.Generator:
    """The generator for ``component`` (and optional sub-index, e.g. a Locust user's number)."""
    return np.random.default_rng(
        np.random.SeedSequence([seed, zlib.crc32(component.encode()), *index])
    )


class Buffered:
    """Scalar draws served from numpy blocks: one numpy call per 4096 draws, not per draw."""

    __slots__ = ("_block", "_buffer", "_draw", "_i")

    def __init__(self, gen: np.random.Generator, kind: str, block: int = 4096) -> None:
        if kind not in ("uniform", "normal"):
            raise ValueError(f"kind must be uniform or normal, got {kind!r}")
        self._draw = gen.random if kind == "uniform" else gen.standard_normal
        self._block = block
        self._buffer: list[float] = []
        self._i = 0

    def next(self) -> float:
        if self._i >= len(self._buffer):
            self._buffer = self._draw(self._block).tolist()
            self._i = 0
        value = self._buffer[self._i]
        self._i += 1
        return value

    def take(self, count: int) -> list[float]:
        """The next ``count`` draws, as ``count`` calls of :meth:`next` give them (a block is
        drawn only when a draw needs it), in one list."""
        i, buffer = self._i, self._buffer
        if i + count <= len(buffer):
            self._i = i + count
            return buffer[i : i + count]
        taken = buffer[i:]
        count -= len(taken)
        while count > 0:
            self._buffer = self._draw(self._block).tolist()
            self._i = min(count, self._block)
            taken += self._buffer[: self._i]
            count -= self._i
        return taken
