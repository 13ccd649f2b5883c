"""At most one log line per kind of event and interval, with a count of those left out.

A peer can make an event happen as fast as it can send bytes (stray responses, refused
connections): a line for each would flood the journal, whose rate limit would then drop the
lines that matter. Pure: time comes in as `now`.
"""

from __future__ import annotations

from collections.abc import Hashable

DEFAULT_INTERVAL_S = 10.0
_MAX_KEYS = 1024  # distinct kinds remembered; past it the oldest go (they log again at once)


class LogSample:
    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._due: dict[Hashable, tuple[float, int]] = {}  # key -> (next line at, left out)

    def allow(self, key: Hashable, now: float) -> int | None:
        """None: leave this one out. Otherwise log it, with the count left out since the last."""
        due, skipped = self._due.get(key, (-1.0, 0))
        if now < due:
            self._due[key] = (due, skipped + 1)
            return None
        self._due.pop(key, None)
        if len(self._due) >= _MAX_KEYS:
            del self._due[next(iter(self._due))]
        self._due[key] = (now + self._interval_s, 0)
        return skipped
