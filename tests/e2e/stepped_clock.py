"""`python tests/e2e/stepped_clock.py run -c CONFIG`: smppd whose wall clock (time.time) each
SIGUSR1 sets back 600 s and each SIGUSR2 forward 600 s, as NTP steps would; the monotonic clock
goes on as it does."""

from __future__ import annotations

import signal
import sys
import time

STEP_S = 600.0
_real = time.time
_offset = [0.0]


def _stepped() -> float:
    return _real() - _offset[0]


def _step(signum: int, frame: object) -> None:
    _offset[0] += STEP_S if signum == signal.SIGUSR1 else -STEP_S


time.time = _stepped  # before smppd is imported, so that every clock it keeps is this one
signal.signal(signal.SIGUSR1, _step)
signal.signal(signal.SIGUSR2, _step)

from smppd.cli import main  # noqa: E402

sys.exit(main())
