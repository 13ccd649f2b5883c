"""Cyclic garbage collector settings for a long-running process that allocates per message."""

from __future__ import annotations

import gc
from typing import Final

# The collector's first threshold, in net new container objects. At the default 700 a submit_many
# of a few hundred messages crosses it every time, and full collections walked every object
# imported at start-up: 6% of the daemon's CPU in bench/e2e.py and 30 ms pauses of both threads.
# Net growth reaches 10,000 only a few times a run; cycles are still collected.
GC_THRESHOLD: Final = 10_000


def tune_gc() -> None:
    """Keep what start-up built (modules, configuration, open files) out of every later
    collection, and collect only on real growth. Call once, when start-up is done."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, middle, oldest)
