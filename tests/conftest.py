"""A hard stop for a test that hangs after it failed, and the property tests' profile.

pytest-timeout (and pytest's own faulthandler_timeout) stop watching a test once it has raised,
so a teardown that then waits forever (a task that outlives the event loop's cancellation) would
hang the whole run. This arms a timer around every test, re-armed when a failure cancels it,
that prints every thread's stack and ends the run instead.

Property tests draw the same examples on every run by default, so that a run passes or fails
for the code, reproducibly, not for the luck of the draw. `HYPOTHESIS_PROFILE=explore` draws
new ones each run, to look for cases no fixed draw covers.
"""

from __future__ import annotations

import faulthandler
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

settings.register_profile("fixed", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))

HARD_TIMEOUT_S = 90.0  # above the per-test timeout in pyproject.toml

_stderr = -1  # a copy of the real stderr, taken before capturing redirects it


def pytest_configure(config: pytest.Config) -> None:
    global _stderr
    _stderr = os.dup(2)


def pytest_unconfigure(config: pytest.Config) -> None:
    faulthandler.cancel_dump_traceback_later()
    os.close(_stderr)


def _arm() -> None:
    faulthandler.dump_traceback_later(HARD_TIMEOUT_S, exit=True, file=_stderr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    _arm()
    try:
        return (yield)
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.hookimpl(trylast=True)
def pytest_exception_interact() -> None:
    _arm()  # after the hooks that cancel it: the teardown still to come is watched too
