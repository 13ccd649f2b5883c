"""Collector settings of the daemon and the fake SMSC: start-up objects frozen, a higher first
threshold, and cycles made later still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from smppd.gctune import GC_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class _Node:
    def __init__(self) -> None:
        self.me = self


def test_tune_gc_freezes_start_up_and_raises_the_first_threshold(restored_gc: None) -> None:
    before = gc.get_threshold()
    tune_gc()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (GC_THRESHOLD, before[1], before[2])
    cycle = _Node()
    alive = weakref.ref(cycle)
    del cycle
    assert alive() is not None  # only the collector frees a cycle
    gc.collect()
    assert alive() is None
