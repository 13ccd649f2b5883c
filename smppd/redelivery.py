"""Telling a carrier's redelivered MO from a new one.

An SMSC that did not get our deliver_sm_resp (the connection dropped after the message was
stored, say) delivers the message again, on that bind or another. SMPP v3.4 gives an MO no id
of its own, so a redelivery is known by its content: the same source, destination, coding,
esm_class, user data and SAR fields as one seen within the carrier's `inbound_dedup_s`. A part
of a long message is a PDU like any other: a part redelivered after its message was stored is
known too, and is not held as the start of a new, never completed message.

What is remembered is a 16-byte digest per PDU, for at most `max_entries` PDUs: oldest first
out. The digest is stored with what the PDU carried, in the same transaction, and read back by
the next run (`restore`): an SMSC that lost our deliver_sm_resp to a crash delivers the MO again
once the daemon is back, and it is told once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

from smppd.pdu import tlv
from smppd.pdu.pdus import DataSm, DeliverSm
from smppd.pdu.tlv import Tag

MAX_ENTRIES: Final = 100_000
_SAR: Final = (Tag.sar_msg_ref_num, Tag.sar_total_segments, Tag.sar_segment_seqnum)


def fingerprint(pdu: DeliverSm | DataSm) -> bytes:
    """What a redelivery of `pdu` has in common with it (not its sequence number)."""
    digest = hashlib.blake2b(digest_size=16)
    for field in (pdu.source_addr, pdu.destination_addr):
        digest.update(field.encode("latin-1", "replace"))
        digest.update(b"\0")
    # As sent, not as numbers: a hostile SMSC's 2 KB "integer" has no decimal repr.
    sar = [tlv.get_bytes(pdu.tlvs, tag) for tag in _SAR]
    digest.update(repr((pdu.source_addr_ton, pdu.esm_class, pdu.data_coding, sar)).encode())
    digest.update(pdu.content)
    return digest.digest()


class Redeliveries:
    """The fingerprints of a carrier's recent MO; seen() tells whether one is a redelivery."""

    def __init__(self, window_s: float, *, max_entries: int = MAX_ENTRIES) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # oldest arrival first
        self.restored = False  # whether an earlier run's were read (once a run: see restore)

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, key: bytes, now: float) -> bool:
        """True if `key` arrived within the window before `now` (the window then runs from
        now: an SMSC retrying every so often is caught each time); otherwise note it."""
        self._expire(now)
        if self.window_s <= 0:
            return False
        repeated = key in self._seen
        self._seen[key] = now
        self._seen.move_to_end(key)
        if len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return repeated

    def restore(self, seen: Iterable[tuple[bytes, float]], now: float) -> None:
        """Add what an earlier run saw: (key, seconds ago), oldest first. They go before any
        seen since, which are newer, and those the window no longer covers are left out."""
        kept: OrderedDict[bytes, float] = OrderedDict(
            (key, now - age) for key, age in seen if age < self.window_s
        )
        for key, at in self._seen.items():
            kept.pop(key, None)
            kept[key] = at
        while len(kept) > self.max_entries:
            kept.popitem(last=False)
        self._seen = kept
        self.restored = True

    def forget(self, key: bytes) -> None:
        """The message was not stored after all (the SMSC is answered an error and tries
        again): its next delivery is not a redelivery."""
        self._seen.pop(key, None)

    def _expire(self, now: float) -> None:
        seen = self._seen
        horizon = now - self.window_s
        while seen:
            key, at = next(iter(seen.items()))
            if at > horizon:
                return
            del seen[key]
