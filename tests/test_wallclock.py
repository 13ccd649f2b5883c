"""Noticing a wall clock that steps, against the monotonic clock's course."""

from __future__ import annotations

from smppd.wallclock import WallClockWatch


def test_a_step_is_told_once_with_its_size_and_direction() -> None:
    watch = WallClockWatch(wall=1000.0, monotonic=50.0)
    assert watch.step(wall=1001.0, monotonic=51.0) == 0.0  # in step
    assert watch.step(wall=402.0, monotonic=52.0) == -600.0  # set back 10 minutes
    assert watch.step(wall=403.0, monotonic=53.0) == 0.0  # in step again, from there
    assert watch.step(wall=4004.0, monotonic=54.0) == 3600.0  # an hour forward


def test_slews_and_jitter_are_not_steps() -> None:
    watch = WallClockWatch(wall=1000.0, monotonic=0.0)
    wall = 1000.0
    for second in range(1, 100):  # slewed 0.5 ms a second, 50 ms in all
        wall += 1.0 - 0.0005
        assert watch.step(wall=wall, monotonic=float(second)) == 0.0
    assert watch.step(wall=wall + 0.6, monotonic=100.5) == 0.0  # 0.9 s back: jitter


def unapplied(watch: WallClockWatch) -> tuple[float, float] | None:
    return watch.unapplied


def test_a_step_back_is_kept_until_the_store_has_taken_it() -> None:
    """A step back the store could not apply (busy, full) stays for the next tick, with any
    further step added; `since` is the reading before the step, in the new clock's time."""
    watch = WallClockWatch(wall=1000.0, monotonic=0.0)
    watch.step(wall=401.0, monotonic=1.0)  # back 600 between the readings at 1000 and 401
    assert unapplied(watch) == (600.0, 400.0)
    watch.step(wall=402.0, monotonic=2.0)  # the store failed: nothing applied
    assert unapplied(watch) == (600.0, 400.0)
    watch.step(wall=303.0, monotonic=3.0)  # another 100 back
    assert unapplied(watch) == (700.0, 302.0)
    watch.applied()
    watch.step(wall=304.0, monotonic=4.0)
    assert unapplied(watch) is None
    watch.step(wall=1304.0, monotonic=5.0)  # forward steps are not kept
    assert unapplied(watch) is None
