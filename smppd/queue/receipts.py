"""Pure rules for delivery receipts that do not match an open correlation at once.

Carriers reuse message ids, so a correlation is deleted once its segment is final; a receipt that
then arrives under the same key is either a repeat of the final one (the SMSC resent it) or the
early receipt of a new submission that reused the id. `RecentFinals` remembers the last finals
applied under each key so the two can be told apart: same stat, err and done date -> a duplicate;
anything else is held. It is memory only and bounded: a repeat after a restart is held and later
counted as unmatched, which is kept and visible rather than applied twice.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

from smppd.queue.model import ReceiptIn

KEY_SEPARATOR: Final = "\x1f"  # never part of an SMPP message_id (a printable C-Octet string)
Fingerprint = tuple[str, str, float | None]  # stat, err, done_at


def join_keys(keys: Iterable[str]) -> str:
    return KEY_SEPARATOR.join(keys)


def split_keys(joined: str | None) -> tuple[str, ...]:
    return tuple(joined.split(KEY_SEPARATOR)) if joined else ()


def fingerprint(receipt: ReceiptIn) -> Fingerprint:
    return (receipt.stat, receipt.err, receipt.done_at)


class RecentFinals:
    """The last `capacity` (carrier, key) -> fingerprint of a final receipt applied under it."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, str], Fingerprint] = OrderedDict()

    def add(self, carrier: str, keys: Iterable[str], seen: Fingerprint) -> None:
        for key in keys:
            self._seen[carrier, key] = seen
            self._seen.move_to_end((carrier, key))
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def is_repeat(self, carrier: str, receipt: ReceiptIn) -> bool:
        """True if a final receipt with the same stat, err and done date was applied under a key."""
        seen = fingerprint(receipt)
        return any(self._seen.get((carrier, key)) == seen for key in receipt.keys)
