"""A compact in-memory answer to "might this number have opted out of this sender?".

A Bloom filter of (sender, number) pairs: "no" is certain and costs a few bit tests; "maybe"
(a real opt-out, a removed one, or a ~1% false positive) is confirmed by the store's table. A
set of a million pairs would cost ~100 MB of RAM; this costs ~1.2 MB, so the check on every submit
stays in memory whatever the list's size. Removals are not applied (Bloom filters cannot forget);
they only make "maybe" answers that the table then refutes, until the next rebuild.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Final

_BITS_PER_ENTRY: Final = 10  # with 7 hashes: ~0.8% false positives at capacity
_HASHES: Final = 7
_MIN_CAPACITY: Final = 1 << 16


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

    def _positions(self, sender: str, number: str) -> Iterator[int]:
        digest = hashlib.blake2b(f"{sender}\x1f{number}".encode(), digest_size=16).digest()
        first = int.from_bytes(digest[:8], "little")
        step = int.from_bytes(digest[8:], "little") | 1
        size = self._size
        return ((first + i * step) % size for i in range(_HASHES))

    def add(self, sender: str, number: str) -> None:
        bits = self._bits
        for position in self._positions(sender, number):
            bits[position >> 3] |= 1 << (position & 7)
        self.count += 1

    def might_contain(self, sender: str, number: str) -> bool:
        bits = self._bits
        return all(bits[p >> 3] & (1 << (p & 7)) for p in self._positions(sender, number))

    @property
    def overfull(self) -> bool:
        """Past capacity, false positives climb: the owner should rebuild it larger."""
        return self.count > self.capacity
