"""Daily caps per sender: counted in segments per UTC day, refused or held past the cap."""

from __future__ import annotations

import pytest

from smppd.senderpolicy import DAY_S, DailyCap, DailyCaps
from smppd.service import ApiError, ErrorCode

NOON = 20_000 * DAY_S + 43_200.0


def test_refuse_past_the_cap() -> None:
    """Segments beyond the cap are refused with over_daily_cap; other senders are not capped."""
    caps = DailyCaps({"SHOP": DailyCap(5, hold=False)})
    assert caps.reserve("SHOP", 3, at=NOON, now=NOON) == (20_000, None)
    assert caps.reserve("SHOP", 2, at=NOON, now=NOON) == (20_000, None)
    with pytest.raises(ApiError) as info:
        caps.reserve("SHOP", 1, at=NOON, now=NOON)
    assert info.value.code is ErrorCode.over_daily_cap
    assert info.value.field == "from"
    assert caps.reserve("OTHER", 1_000, at=NOON, now=NOON) == (None, None)  # not counted


def test_hold_moves_to_the_next_day_with_room() -> None:
    """With hold, a submit past the cap is scheduled for the next UTC midnight."""
    caps = DailyCaps({"SHOP": DailyCap(2, hold=True)})
    caps.reserve("SHOP", 2, at=NOON, now=NOON)
    assert caps.reserve("SHOP", 2, at=NOON, now=NOON) == (20_001, 20_001 * DAY_S)
    assert caps.reserve("SHOP", 1, at=NOON, now=NOON) == (20_002, 20_002 * DAY_S)


def test_release_and_new_day() -> None:
    """A released reservation frees its room; a new day starts from zero."""
    caps = DailyCaps({"SHOP": DailyCap(2, hold=False)})
    day, _ = caps.reserve("SHOP", 2, at=NOON, now=NOON)
    assert day is not None
    caps.release("SHOP", day, 2)
    caps.reserve("SHOP", 2, at=NOON, now=NOON)
    tomorrow = NOON + DAY_S
    assert caps.reserve("SHOP", 2, at=tomorrow, now=tomorrow) == (20_001, None)
    assert caps.count("SHOP", 20_000) == 0  # yesterday was pruned


def test_load_rebuilds_counts_after_restart() -> None:
    """Counts loaded from the queue count against the cap."""
    caps = DailyCaps({"SHOP": DailyCap(3, hold=False)})
    caps.load(20_000, {"SHOP": 3, "OTHER": 9})
    with pytest.raises(ApiError):
        caps.reserve("SHOP", 1, at=NOON, now=NOON)
    assert caps.count("OTHER", 20_000) == 0
