import math

from hypothesis import given
from hypothesis import strategies as st

from sim.recorder import RequestRecorder


def test_per_second_percentiles_are_nearest_rank() -> None:
    rec = RequestRecorder(3)
    for i in range(1, 101):
        rec.complete(1.5, i / 100)
    rec.close()
    assert rec.ok == [0, 100, 0]
    assert rec.p50[1] == 0.50 and rec.p95[1] == 0.95 and rec.p99[1] == 0.99
    assert rec.p50[0] is None


@given(st.lists(st.floats(0.001, 100.0), min_size=1, max_size=400))
def test_histogram_percentiles_within_one_percent(latencies: list[float]) -> None:
    rec = RequestRecorder(1000)
    for i, latency in enumerate(latencies):
        rec.complete(i / 2, latency)
    rec.close()
    ordered = sorted(latencies)
    for q in (0.5, 0.95, 0.99):
        exact = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
        approx = rec.percentile(q)
        assert approx is not None
        assert abs(approx - exact) <= 0.0101 * exact
    assert sum(rec.ok) == len(latencies)
