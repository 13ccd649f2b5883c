"""Noticing the wall clock step, as an NTP step or a resumed VM makes it.

The queue keeps wall-clock times (they outlive the process): a retry set for "in 30 s" before
the clock stepped back 10 minutes would wait 10 minutes and 30 s. The daemon compares the wall
clock's progress with the monotonic clock's once a tick and moves such times back by a step
back (Queue.rebase_schedules); a step forward only brings them sooner, and is logged. Slewing
(NTP's gradual corrections) stays under the tolerance.
"""

from __future__ import annotations

from typing import Final

STEP_TOLERANCE_S: Final = 1.0  # less is jitter between two readings, or a slew


class WallClockWatch:
    """Compares the wall and monotonic clocks between readings, and keeps the steps back the
    store has not yet been told of (`unapplied`). Pure: it is given both clocks."""

    def __init__(self, wall: float, monotonic: float) -> None:
        self._offset = wall - monotonic
        self._wall = wall
        # Seconds back, and the earliest wall time (in the new clock's reading) that rows
        # written after the step can carry: the reading before it, moved back as far.
        self.unapplied: tuple[float, float] | None = None

    def step(self, wall: float, monotonic: float) -> float:
        """Seconds the wall clock jumped since the last reading beyond the monotonic clock's
        course, negative when back; 0.0 when it kept pace or slewed. A step back is added to
        `unapplied` until `applied()`."""
        offset = wall - monotonic
        jump = offset - self._offset
        self._offset = offset
        previous, self._wall = self._wall, wall
        if abs(jump) <= STEP_TOLERANCE_S:
            return 0.0
        if jump < 0:
            earlier = 0.0 if self.unapplied is None else self.unapplied[0]
            self.unapplied = (earlier - jump, previous + jump)
        return jump

    def applied(self) -> None:
        """The store has moved its times back by `unapplied`."""
        self.unapplied = None
