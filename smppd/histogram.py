"""A cheap latency histogram for hot paths: one bisect and two additions per observation.

A leaf (no smppd imports), so that any layer can keep one and smppd.metrics exports it at scrape
time without the layer knowing about Prometheus.
"""

from __future__ import annotations

import bisect
from typing import Final

LATENCY_BUCKETS_S: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# A carrier's time to deliver: seconds for a handset that is on, hours for one that is off.
DELIVERY_BUCKETS_S: Final = (
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    14400.0,
    86400.0,
)


class Histogram:
    """Counts per bucket (upper bounds in seconds, then +Inf) and the sum of what was observed."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        """`count` observations of `value` (a batch that took the same time)."""
        self.counts[bisect.bisect_left(self.buckets, value)] += count
        self.total += value * count

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        out = []
        running = 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out
