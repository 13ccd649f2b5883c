"""SMPP time fields: schedule_delivery_time and validity_period (SMPP v3.4 section 7.1.1).

Absolute form `YYMMDDhhmmsstnnp`: tenths of a second, then the offset from UTC in quarter hours
and its direction (+/-). Relative form `YYMMDDhhmmss000R`: a duration. An empty string means
"immediately" / "SMSC default".
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Final

from smppd.pdu.errors import EncodeError

# ASCII digits only (str.isdigit and int() take other scripts' digits, signs and spaces too);
# the relative form's tenths and offset are 000.
_FORM: Final = re.compile(r"[0-9]{13}[0-9]{2}[+-]|[0-9]{12}000R", re.ASCII)


def format_absolute(when: datetime) -> str:
    """Render an aware datetime in the absolute form, keeping its UTC offset."""
    offset = when.utcoffset()
    if offset is None:
        raise EncodeError("absolute SMPP times need a timezone-aware datetime")
    quarters, rest = divmod(abs(int(offset.total_seconds())), 900)
    if rest or quarters > 48:
        raise EncodeError("UTC offset must be a whole number of quarter hours")
    sign = "-" if offset < timedelta(0) else "+"
    tenth = when.microsecond // 100_000
    return f"{when:%y%m%d%H%M%S}{tenth}{quarters:02d}{sign}"


def format_relative(delta: timedelta) -> str:
    """Render a duration in the relative form; months are not used (days carry up to 99 years)."""
    total = int(delta.total_seconds())
    if total < 0:
        raise EncodeError("relative SMPP times cannot be negative")
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    years, days = divmod(days, 365)
    months, days = divmod(days, 30)
    if years > 99:
        raise EncodeError("relative SMPP times are at most 99 years")
    return f"{years:02d}{months:02d}{days:02d}{hours:02d}{minutes:02d}{seconds:02d}000R"


def parse_time(value: str) -> datetime | timedelta | None:
    """Parse either form; None for an empty field. Raises ValueError for anything malformed."""
    if not value:
        return None
    if not _FORM.fullmatch(value):
        raise ValueError(f"not an SMPP time: {value!r}")
    yy, mo, dd, hh, mi, ss = (int(value[i : i + 2]) for i in range(0, 12, 2))
    if value[15] == "R":
        return timedelta(days=yy * 365 + mo * 30 + dd, hours=hh, minutes=mi, seconds=ss)
    tenth, quarters = int(value[12]), int(value[13:15])
    if quarters > 48:
        raise ValueError(f"UTC offset out of range: {value!r}")
    offset = timedelta(minutes=15 * quarters) * (-1 if value[15] == "-" else 1)
    # In its own offset: the instant compares as any aware datetime, and the SMSC's wall time
    # is there too (receipts, which name no zone, are on that clock).
    return datetime(2000 + yy, mo, dd, hh, mi, ss, tenth * 100_000, tzinfo=timezone(offset))
