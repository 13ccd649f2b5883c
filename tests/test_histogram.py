"""The hot-path histogram behind the latency metrics."""

from __future__ import annotations

from smppd.histogram import Histogram


def test_observations_land_in_the_first_bucket_that_holds_them() -> None:
    """Bounds are inclusive upper bounds, as Prometheus reads `le`; past the last is +Inf."""
    histogram = Histogram(buckets=(0.01, 0.1))
    for value in (0.005, 0.01, 0.05, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.01", 2.0), ("0.1", 3.0), ("+Inf", 4.0)]
    assert histogram.count == 4
    assert histogram.total == 0.005 + 0.01 + 0.05 + 3.0


def test_a_batch_is_counted_once_per_member() -> None:
    """observe(value, n) is n observations of value: counts and sum both grow by n."""
    histogram = Histogram(buckets=(0.01,))
    histogram.observe(0.02, 5)
    assert histogram.cumulative() == [("0.01", 0.0), ("+Inf", 5.0)]
    assert histogram.total == 0.1
