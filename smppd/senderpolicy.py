"""Daily caps per sender id: segments accepted per UTC day, refused or held past the cap.

Carriers block a sender that goes over its daily allowance, so the cap is counted in segments (what
the carrier counts) and checked at submit time. Counts are rebuilt from the queue after a restart
(`load`). A reservation is made while a submit is validated and released if the submit does not
end up queued, so a refused or repeated submit costs nothing. Pure: time comes in as `now`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from smppd.service import ApiError, ErrorCode

DAY_S = 86_400
HOLD_DAYS = 7  # how far ahead `hold` looks for a day with room before refusing


@dataclass(frozen=True, slots=True)
class DailyCap:
    limit: int
    hold: bool  # past the cap: hold until the next day with room, instead of refusing


def day_of(t: float) -> int:
    return int(t // DAY_S)


class DailyCaps:
    def __init__(self, caps: Mapping[str, DailyCap]) -> None:
        self._caps = dict(caps)
        self._counts: dict[tuple[str, int], int] = {}

    @property
    def senders(self) -> frozenset[str]:
        return frozenset(self._caps)

    def load(self, day: int, counts: Mapping[str, int]) -> None:
        """Counts of segments already due on `day`, per sender (from the queue)."""
        for sender, n in counts.items():
            if sender in self._caps:
                self._counts[sender, day] = n

    def count(self, sender: str, day: int) -> int:
        return self._counts.get((sender, day), 0)

    def reserve(
        self, sender: str, segments: int, *, at: float, now: float
    ) -> tuple[int | None, float | None]:
        """Room for `segments` more from `sender`, due at `at` (now, or a scheduled time):
        (the day counted on, None for a sender with no cap; a later not_before when held, else
        None).

        Raises ApiError(over_daily_cap) when the cap is reached and the sender does not hold.
        """
        cap = self._caps.get(sender)
        if cap is None:
            return None, None
        first = day_of(at)
        self._prune(day_of(now))
        for day in range(first, first + (HOLD_DAYS if cap.hold else 1)):
            if self.count(sender, day) + segments <= cap.limit:
                self._counts[sender, day] = self.count(sender, day) + segments
                return day, None if day == first else float(day * DAY_S)
        raise ApiError(
            ErrorCode.over_daily_cap,
            f"sender {sender!r} reached its daily cap of {cap.limit} segments; "
            "it resets at 00:00 UTC",
            field="from",
        )

    def release(self, sender: str, day: int, segments: int) -> None:
        if sender in self._caps and (sender, day) in self._counts:
            self._counts[sender, day] = max(0, self._counts[sender, day] - segments)

    def _prune(self, today: int) -> None:
        for key in [k for k in self._counts if k[1] < today]:
            del self._counts[key]
