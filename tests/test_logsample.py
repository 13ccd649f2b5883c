"""LogSample: one line per kind and interval, and a count of what was left out."""

from __future__ import annotations

from smppd.logsample import LogSample


def test_one_line_per_kind_and_interval_with_the_count_left_out() -> None:
    sample = LogSample(interval_s=10.0)
    assert sample.allow("stray", 0.0) == 0
    assert [sample.allow("stray", t) for t in (1.0, 2.0, 9.9)] == [None, None, None]
    assert sample.allow("other", 5.0) == 0  # kinds are counted apart
    assert sample.allow("stray", 10.0) == 3
    assert sample.allow("stray", 10.5) is None
    assert sample.allow("stray", 25.0) == 1


def test_the_kinds_remembered_are_bounded() -> None:
    sample = LogSample(interval_s=10.0)
    for uid in range(5000):
        assert sample.allow(("unauthorized", uid), 0.0) == 0
    assert len(sample._due) <= 1024
