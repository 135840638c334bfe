"""The Pareto front of cost against the SLO metric (both minimized)."""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indexes of the points no other point dominates (<= on both, < on one), in input order.

    Equal points are all on the front (neither dominates the other). Sort by the first
    coordinate, then sweep keeping the best second coordinate seen: O(n log n).
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front: list[int] = []
    best = float("inf")
    i = 0
    while i < len(order):
        # Points sharing the first coordinate: only those with the group's least second one
        # can be on the front, and only if it beats everything cheaper.
        j = i
        while j < len(order) and points[order[j]][0] == points[order[i]][0]:
            j += 1
        group = order[i:j]
        least = min(points[k][1] for k in group)
        if least < best:
            front.extend(k for k in group if points[k][1] == least)
            best = least
        i = j
    return sorted(front)
