"""Noticing the wall clock step back, as an NTP step or a resumed VM makes it.

The queue keeps wall-clock times (they outlive the process): a retry set for "in 30 s" before
the clock stepped back 10 minutes would wait 10 minutes and 30 s. The daemon compares the wall
clock's progress with the monotonic clock's once a tick and moves such times back by the step
(Queue.rebase_schedules). Slewing (NTP's gradual corrections) stays under the tolerance.
"""

from __future__ import annotations

from typing import Final

STEP_TOLERANCE_S: Final = 1.0  # less is jitter between two readings, or a slew


class WallClockWatch:
    """Compares the wall and monotonic clocks between readings. Pure: it is given both."""

    def __init__(self, wall: float, monotonic: float) -> None:
        self._offset = wall - monotonic

    def stepped_back(self, wall: float, monotonic: float) -> float:
        """Seconds the wall clock went back since the last reading beyond the monotonic
        clock's course; 0.0 when it did not (it kept pace, slewed or stepped forward)."""
        offset = wall - monotonic
        back = self._offset - offset
        self._offset = offset
        return back if back > STEP_TOLERANCE_S else 0.0
