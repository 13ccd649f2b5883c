"""Noticing a wall clock that steps back, against the monotonic clock's course."""

from __future__ import annotations

from smppd.wallclock import WallClockWatch


def test_a_step_back_is_told_once_with_its_size() -> None:
    watch = WallClockWatch(wall=1000.0, monotonic=50.0)
    assert watch.stepped_back(wall=1001.0, monotonic=51.0) == 0.0  # in step
    assert watch.stepped_back(wall=402.0, monotonic=52.0) == 600.0  # set back 10 minutes
    assert watch.stepped_back(wall=403.0, monotonic=53.0) == 0.0  # in step again, from there


def test_slews_jitter_and_forward_steps_are_not_steps_back() -> None:
    watch = WallClockWatch(wall=1000.0, monotonic=0.0)
    wall = 1000.0
    for second in range(1, 100):  # slewed 0.5 ms a second, 50 ms in all
        wall += 1.0 - 0.0005
        assert watch.stepped_back(wall=wall, monotonic=float(second)) == 0.0
    assert watch.stepped_back(wall=wall + 0.6, monotonic=100.5) == 0.0  # 0.9 s back: jitter
    assert watch.stepped_back(wall=wall + 3600.0, monotonic=101.0) == 0.0  # a step forward
