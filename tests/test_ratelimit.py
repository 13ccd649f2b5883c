"""Sliding-window caps and the adaptive bind rate, with the clock passed in."""

from __future__ import annotations

import itertools
import math
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smppd.ratelimit import (
    ARRIVAL_MARGIN,
    PACE_AHEAD_S,
    SPORADIC_MIN_THROTTLES,
    AdaptiveRate,
    SlidingWindow,
    window_for_rate,
)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 20),
    st.lists(st.floats(0.0, 0.3, allow_nan=False), min_size=1, max_size=200),
)
def test_never_more_than_limit_in_any_period(limit: int, gaps: list[float]) -> None:
    """Whatever the attempt times, no span of period_s holds more than `limit` sends, paced
    or not; paced, no span of a tenth of it holds more than its share at the pace, what it may
    run ahead by (PACE_AHEAD_S, or a step), and one."""
    for paced in (False, True):
        window = SlidingWindow(limit, paced=paced)
        now = 0.0
        sent: list[float] = []
        for gap in gaps:
            now += gap
            assert window.allows(now) is (window.ready_at(now) == now)
            if window.try_acquire(now):
                sent.append(now)
        for i, start in enumerate(sent):
            assert sum(1 for t in sent[i:] if t < start + 1.0) <= limit
            if paced:
                most = (0.1 + max(PACE_AHEAD_S, 1 / limit)) * limit + 1 + 1e-9
                assert sum(1 for t in sent[i:] if t < start + 0.1) <= most


def test_a_paced_window_spreads_its_sends_over_the_second() -> None:
    """50 a second, paced: two at once (one ahead of the pace), then one every 20 ms, not the
    second's 50 at its start (an urgent message then waited for the next second)."""
    window = SlidingWindow(50, paced=True)
    burst = 0
    while window.try_acquire(0.0):
        burst += 1
    assert burst == 2
    assert window.ready_at(0.0) == pytest.approx(0.02)
    times = [t / 1000 for t in range(1, 1000) if window.try_acquire(t / 1000)]
    assert len(times) == 48  # the second's 50 in all
    assert all(b - a > 0.0189 for a, b in itertools.pairwise(times))  # 1 ms steps
    unpaced = SlidingWindow(50)
    assert sum(unpaced.try_acquire(0.0) for _ in range(60)) == 50


def test_ready_at_is_when_the_oldest_send_leaves() -> None:
    """ready_at names the first moment a send is allowed again."""
    window = SlidingWindow(2)
    assert window.try_acquire(0.0)
    assert window.try_acquire(0.4)
    assert not window.allows(0.9)
    assert window.ready_at(0.9) == 1.0
    assert window.try_acquire(1.0)
    assert window.ready_at(1.0) == 1.4


def test_limit_changes_within_capacity() -> None:
    """The limit can shrink and grow at once, never beyond the capacity nor below one."""
    window = SlidingWindow(4)
    for t in (0.0, 0.1, 0.2):
        window.record(t)
    window.set_limit(2)
    assert not window.allows(0.5)
    window.set_limit(100)
    assert window.limit == 4
    assert window.allows(0.5)
    window.set_limit(0)
    assert window.limit == 1


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 20),
    st.integers(1, 20),
    st.lists(st.floats(0.0, 0.3, allow_nan=False), min_size=1, max_size=100),
    st.lists(st.floats(0.0, 0.3, allow_nan=False), min_size=1, max_size=100),
)
def test_a_window_that_takes_over_counts_the_old_one_s_sends(
    old_limit: int, new_limit: int, before: list[float], after: list[float]
) -> None:
    """A window inheriting another's sends (a rate changed, a carrier restarted) keeps its
    own limit over every span that ends at one of its sends, the old window's sends counted:
    no fresh cap on top of them."""
    old, new = SlidingWindow(old_limit), SlidingWindow(new_limit)
    now, sent_before, sent_after = 0.0, [], []
    for gap in before:
        now += gap
        if old.try_acquire(now):
            sent_before.append(now)
    new.inherit(old)
    for gap in after:
        now += gap
        if new.try_acquire(now):
            sent_after.append(now)
    sent = sent_before + sent_after
    for end in sent_after:
        assert sum(1 for t in sent if end - 1.0 < t <= end) <= new_limit


def test_an_inherited_window_allows_what_is_left_of_the_cap() -> None:
    old = SlidingWindow(5)
    for t in (0.0, 0.1, 0.2, 0.3, 0.4):
        assert old.try_acquire(t)
    lowered, raised = SlidingWindow(3), SlidingWindow(8)
    lowered.inherit(old)
    raised.inherit(old)
    assert not lowered.allows(0.5)
    assert lowered.ready_at(0.5) == 1.2  # the third send back, 0.2, leaves the span
    assert [raised.try_acquire(0.5) for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize(
    ("tps", "expected"), [(50.0, (50, 1.0)), (50.7, (50, 1.0)), (1.0, (1, 1.0)), (0.5, (1, 2.0))]
)
def test_window_for_rate(tps: float, expected: tuple[int, float]) -> None:
    """Rates become whole sends per second (rounded down), or one per 1/tps below one a second."""
    assert window_for_rate(tps) == expected


def throttle(rate: AdaptiveRate, *, now: float, sent_at: float) -> bool:
    """SPORADIC_MIN_THROTTLES throttling answers: the fewest that may slow a bind down. Only
    the last may; the result is whether it did."""
    for _ in range(SPORADIC_MIN_THROTTLES - 1):
        assert not rate.throttled(now=now, sent_at=sent_at)
    return rate.throttled(now=now, sent_at=sent_at)


def test_uncapped_rate_learns_a_cap_when_throttled_and_drops_it_again() -> None:
    """An uncapped bind that gets throttled slows to half of what it was sending, then regains
    it step by step and becomes uncapped again."""
    rate = AdaptiveRate(None, backoff_s=1.0)
    for i in range(40):
        assert rate.allows(i * 0.01)
        rate.record(i * 0.01)
    assert throttle(rate, now=0.5, sent_at=0.3)
    assert rate.limit == 20
    assert not rate.allows(1.4)
    assert not rate.throttled(now=0.6, sent_at=0.4)  # sent before the slow-down began
    limits = []
    for t in range(2, 9):
        assert rate.allows(float(t))
        limits.append(rate.limit)
    assert limits == [20, 24, 28, 32, 36, None, None]  # steps of a tenth of 40
    assert rate.ready_at(9.0) == 9.0


def test_capped_rate_recovers_to_its_ceiling() -> None:
    """A capped bind regains a tenth of its cap per quiet backoff period, up to the cap."""
    rate = AdaptiveRate(100, backoff_s=2.0)
    assert throttle(rate, now=0.0, sent_at=0.0)
    assert rate.limit == 50
    assert rate.paused_until == 2.0
    assert rate.ready_at(1.0) == 2.0
    limits = []
    for t in range(4, 20, 2):
        rate.allows(float(t))
        limits.append(rate.limit)
    assert limits == [60, 70, 80, 90, 100, 100, 100, 100]
    assert throttle(rate, now=30.0, sent_at=29.0)
    assert rate.limit == 50
    assert math.isclose(rate.period_s, ARRIVAL_MARGIN)


def test_sporadic_throttling_does_not_slow_the_bind() -> None:
    """A carrier that throttles one submit in a hundred whatever the rate: no slow-down (each
    would pause the bind, which held it near one send a second); a share past 5% does slow
    it, as a rate over the carrier's cap draws."""
    rate = AdaptiveRate(5000, backoff_s=1.0)
    now = 0.0
    slowed = []
    for i in range(3000):  # 1,000 a second for 3 s, every 100th throttled
        now = i / 1000
        assert rate.allows(now)
        rate.record(now)
        if i % 100 == 99:
            slowed.append(rate.throttled(now=now + 0.005, sent_at=now))
    assert slowed == [False] * 30
    assert rate.limit == SlidingWindow.for_rate(5000).limit
    # A burst of throttling: once it passes 5% of the sends it slows the bind, once.
    burst = [rate.throttled(now=3.0 + j / 1000, sent_at=2.99) for j in range(200)]
    assert burst.count(True) == 1
    assert rate.limit == SlidingWindow.for_rate(5000).limit // 2


def test_after_a_slow_down_sporadic_throttling_does_not_slow_it_again() -> None:
    """A burst halves the rate; then one answer in a hundred sends is sporadic again: the
    burst, still within the 10 s span, is not counted towards the next one's share."""
    rate = AdaptiveRate(100, backoff_s=1.0)
    for i in range(500):  # 5 s at the cap
        rate.record(i / 100)
    burst = [rate.throttled(now=5.0, sent_at=4.99) for _ in range(30)]
    assert burst.count(True) == 1
    assert rate.limit == 50
    now, sent, slowed = 6.0, 0, []
    while now < 12.0:
        if rate.allows(now):
            rate.record(now)
            sent += 1
            if sent % 100 == 0:
                slowed.append(rate.throttled(now=now + 0.05, sent_at=now))
        now += 0.001
    assert len(slowed) >= 3
    assert not any(slowed)
    assert (rate.limit or 0) > 50  # recovering, not halved again


def test_at_low_rates_a_few_throttling_answers_slow_the_bind() -> None:
    """Five answers in twenty sends are far past the share: the fifth slows the bind."""
    rate = AdaptiveRate(50, backoff_s=1.0)
    for i in range(20):
        rate.record(i / 50)
    assert throttle(rate, now=0.5, sent_at=0.4)
    assert rate.limit == 25


def test_a_wide_window_holds_its_send_times_without_an_object_each() -> None:
    """The cap for 1,000,000/s keeps the last million send times: as doubles in place, not a
    float object each (24 MB more once that many had passed)."""
    window = SlidingWindow.for_rate(1_000_000)
    tracing = tracemalloc.is_tracing()  # already on (PYTHONTRACEMALLOC): left on
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        now = 1_800_000_000.0
        for i in range(200_000):
            assert window.try_acquire(now + i * 1e-6)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        if not tracing:
            tracemalloc.stop()
    assert grown < 100_000, grown  # a float object each would be 4.8 MB
