"""SMPP time fields (v3.4 7.1.1): what the daemon writes as validity_period and reads back as a
query_sm_resp's final_date."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smppd.pdu.errors import EncodeError
from smppd.pdu.timefmt import format_absolute, format_relative, parse_time


def test_absolute_times_keep_their_offset_and_read_back_as_utc() -> None:
    when = datetime(2025, 1, 1, 12, 0, 0, 300_000, tzinfo=timezone(timedelta(hours=-1)))
    assert format_absolute(when) == "250101120000304-"
    assert parse_time("250101120000304-") == datetime(2025, 1, 1, 13, 0, 0, 300_000, tzinfo=UTC)
    assert parse_time("250101120000008+") == datetime(2025, 1, 1, 10, 0, tzinfo=UTC)
    assert parse_time("") is None


def test_relative_times_are_durations() -> None:
    delta = timedelta(days=400, hours=3, minutes=2, seconds=1)
    assert format_relative(delta) == "010105030201000R"
    assert parse_time("010105030201000R") == delta
    with pytest.raises(EncodeError):
        format_relative(timedelta(seconds=-1))


@pytest.mark.parametrize(
    "value",
    [
        "2501011200000-4+",  # a sign in the offset: its direction would be read reversed
        "2501011200000 4+",
        "25010112000001\u0664+",  # an Arabic-Indic digit
        "\u0662501011200000004+",
        "250101120000049+",  # past 12 hours of quarter hours
        "250101120000104R",  # the relative form's last three are 000
        "25010112000000+",
        "2501011200000004",
    ],
)
def test_malformed_times_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"SMPP time|out of range"):
        parse_time(value)


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 2),
        max_value=datetime(2098, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=45))]),
    )
)
def test_an_absolute_time_round_trips_to_the_tenth(when: datetime) -> None:
    when = when.replace(microsecond=when.microsecond // 100_000 * 100_000)
    assert parse_time(format_absolute(when)) == when
