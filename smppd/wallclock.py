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
    """Compares the wall and monotonic clocks between readings. Pure: it is given both."""

    def __init__(self, wall: float, monotonic: float) -> None:
        self._offset = wall - monotonic

    def step(self, wall: float, monotonic: float) -> float:
        """Seconds the wall clock jumped since the last reading beyond the monotonic clock's
        course, negative when back; 0.0 when it kept pace or slewed."""
        offset = wall - monotonic
        jump = offset - self._offset
        self._offset = offset
        return jump if abs(jump) > STEP_TOLERANCE_S else 0.0
