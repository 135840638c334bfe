"""Recorded time series as plain data: what a Prometheus range vector or an OpenMetrics file
holds, before anything is made of it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]
"""A label set, sorted by name: hashable, so series can be keyed by (name, labels)."""


def labels_of(mapping: Mapping[str, str]) -> Labels:
    return tuple(sorted(mapping.items()))


@dataclass
class Series:
    """One series: a metric name, its labels, and samples (unix seconds, value) in time order."""

    name: str
    labels: Labels
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def label(self, key: str) -> str | None:
        for name, value in self.labels:
            if name == key:
                return value
        return None

    def add(self, t: float, value: float) -> None:
        self.times.append(t)
        self.values.append(value)


class SeriesSet:
    """Series keyed by (name, labels), filled sample by sample."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, Labels], Series] = {}

    def add(self, name: str, labels: Mapping[str, str], t: float, value: float) -> None:
        self.series(name, labels).add(t, value)

    def series(self, name: str, labels: Mapping[str, str]) -> Series:
        """The series of that name and labels, created empty if new."""
        key = (name, labels_of(labels))
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = Series(name, key[1])
        return series

    def extend(self, series: Iterable[Series]) -> None:
        for s in series:
            key = (s.name, s.labels)
            mine = self._series.get(key)
            if mine is None:
                self._series[key] = Series(s.name, s.labels, list(s.times), list(s.values))
            else:
                mine.times.extend(s.times)
                mine.values.extend(s.values)

    def named(self, name: str) -> list[Series]:
        return [s for (n, _), s in self._series.items() if n == name]

    def names(self) -> set[str]:
        return {n for n, _ in self._series}

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._series.values())

    def __len__(self) -> int:
        return len(self._series)
