"""A compact in-memory answer to "might this number have opted out of this sender?".

A Bloom filter of (sender, number) pairs: "no" is certain and costs one hash and a few bit tests
(the check runs on every submit); "maybe" (a real opt-out, a removed one, or a ~0.3% false
positive) is confirmed by the store's table. A set of a million pairs would cost ~100 MB of RAM;
this costs 2 MB. Positions come from Python's own hash of the pair (salted per process, which is
fine: the filter is built at open and lives in one process). Removals are not applied (Bloom
filters cannot forget); they only make "maybe" answers that the table then refutes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

_BITS_PER_ENTRY: Final = 16  # with 4 probes: ~0.25% false positives at capacity
_PROBES: Final = 4
_MIN_CAPACITY: Final = 1 << 16
_MASK64: Final = (1 << 64) - 1


class OptOutFilter:
    def __init__(self, capacity: int = _MIN_CAPACITY) -> None:
        self.capacity = max(capacity, _MIN_CAPACITY)
        self._bits = bytearray(self.capacity * _BITS_PER_ENTRY // 8)
        self._size = len(self._bits) * 8
        self.count = 0

    @classmethod
    def build(cls, pairs: Iterable[tuple[str, str]], count: int) -> OptOutFilter:
        """A filter holding `pairs` (about `count` of them) with room to grow to twice that."""
        made = cls(2 * count)
        for sender, number in pairs:
            made.add(sender, number)
        return made

    def add(self, sender: str, number: str) -> None:
        bits, size = self._bits, self._size
        first = hash((sender, number)) & _MASK64
        step = (first >> 32) | 1
        for i in range(_PROBES):
            position = (first + i * step) % size
            bits[position >> 3] |= 1 << (position & 7)
        self.count += 1

    def might_contain(self, sender: str, number: str) -> bool:
        bits, size = self._bits, self._size
        first = hash((sender, number)) & _MASK64
        step = (first >> 32) | 1
        for i in range(_PROBES):
            position = (first + i * step) % size
            if not bits[position >> 3] & (1 << (position & 7)):
                return False
        return True

    @property
    def overfull(self) -> bool:
        """Past capacity, false positives climb: the owner should rebuild it larger."""
        return self.count > self.capacity
