import math
import random

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


@given(
    st.lists(st.tuples(st.floats(0.0, 6.0), st.floats(0.001, 10.0)), max_size=60),
    st.lists(st.integers(1, 8), max_size=8),
    st.randoms(use_true_random=False),
)
def test_bulk_completions_and_offers_record_what_one_by_one_does(
    done: list[tuple[float, float]], cuts: list[int], shuffle: random.Random
) -> None:
    """complete_many, given each batch in any order (the data plane hands them over pod by
    pod), and offer_many record exactly what complete and offer do one at a time."""
    done.sort()
    one, bulk = RequestRecorder(5), RequestRecorder(5)
    start = 0
    for cut in [*cuts, len(done)]:
        batch = done[start : start + cut]
        start += cut
        for t, latency in batch:
            one.complete(t, latency)
            one.offer(t)
        shuffle.shuffle(batch)
        bulk.complete_many([t for t, _ in batch], [latency for _, latency in batch])
        bulk.offer_many(sorted(t for t, _ in batch))
        one.snapshot(min(5, int(batch[-1][0]) if batch else 0))
        bulk.snapshot(min(5, int(batch[-1][0]) if batch else 0))
    one.close()
    bulk.close()
    assert bulk.ok == one.ok and bulk.offered == one.offered
    assert bulk.p50 == one.p50 and bulk.p95 == one.p95 and bulk.p99 == one.p99
    assert bulk.latency_sum == one.latency_sum
    assert bulk.cumulative == one.cumulative
    assert bulk.latency_histogram() == one.latency_histogram()
