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


def test_per_second_histograms_sum_to_the_run_histogram() -> None:
    rec = RequestRecorder(3)
    rec.complete(0.5, 0.1)
    rec.complete(0.7, 0.1)
    rec.complete(1.2, 0.2)
    rec.snapshot(2)
    rec.complete(2.5, 0.3)
    rec.snapshot(3)  # closes second 2; what completes after the end still lands in it
    rec.complete(5.0, 2.0)
    rec.close()
    hist = rec.latency_histogram()
    assert hist["t"] == [0, 1, 2, 2]
    assert hist["count"] == [2, 1, 1, 1]
    latencies = [float(v or 0) for v in hist["latency_s"]]
    for got, want in zip(latencies, (0.1, 0.2, 0.3, 2.0), strict=True):
        assert abs(got - want) <= 0.005 * want  # a 1% bucket's centre
    assert sum(int(c or 0) for c in hist["count"]) == int(rec.histogram.sum()) == sum(rec.ok)
