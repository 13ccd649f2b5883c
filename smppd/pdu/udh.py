"""User Data Header (3GPP TS 23.040 9.2.3.24): build, parse, and reassemble concatenated parts.

Owns the UDH octets at the head of a short_message sent with esm_class UDHI, the concatenation
IEs (0x00 with an 8-bit reference, 0x08 with a 16-bit one) and `Reassembler`, which puts the parts
of an inbound long message back in order. It must not know PDUs, TLVs, text alphabets or time
sources: callers pass octets, their own grouping key and `now`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from smppd.pdu.errors import DecodeError, EncodeError
from smppd.record import record

ESME_RINVMSGLEN = 0x00000001  # SMPP v3.4 5.1.3: the short_message is malformed

IEI_CONCAT_8BIT = 0x00  # 23.040 9.2.3.24.1
IEI_PORT_8BIT = 0x04  # 23.040 9.2.3.24.3
IEI_PORT_16BIT = 0x05  # 23.040 9.2.3.24.4
IEI_CONCAT_16BIT = 0x08  # 23.040 9.2.3.24.8

MAX_CONCAT_PARTS = 255  # the total is one octet in both concatenation IEs and in sar_total_segments


@record
class InformationElement:
    """One IE of a UDH: its identifier (IEI) and its data (length implied)."""

    iei: int
    data: bytes


@record
class ConcatInfo:
    """A concatenation IE: reference, total parts and this part's 1-based sequence number."""

    ref: int
    total: int
    seq: int
    ref16: bool


def septet_fill_bits(udh_length: int) -> int:
    """Fill bits after a UDH of `udh_length` octets (UDHL included) so septets start aligned."""
    return (7 - (udh_length * 8) % 7) % 7


def build_concat_udh(ref: int, total: int, seq: int, *, ref16: bool, more: bytes = b"") -> bytes:
    """The UDH (UDHL included) of part `seq` of `total` with reference `ref`: 6 or 7 octets,
    and `more` information elements after the concatenation one."""
    if not 1 <= total <= MAX_CONCAT_PARTS or not 1 <= seq <= total:
        raise EncodeError(f"concatenation part {seq} of {total} is out of range 1..255")
    if ref16:
        if not 0 <= ref <= 0xFFFF:
            raise EncodeError(f"16-bit concatenation reference {ref} is out of range")
        return bytes((6 + len(more), IEI_CONCAT_16BIT, 4, ref >> 8, ref & 0xFF, total, seq)) + more
    if not 0 <= ref <= 0xFF:
        raise EncodeError(f"8-bit concatenation reference {ref} is out of range")
    return bytes((5 + len(more), IEI_CONCAT_8BIT, 3, ref, total, seq)) + more


def parse_udh(short_message: bytes) -> tuple[list[InformationElement], bytes]:
    """The IEs of the UDH heading `short_message`, and the octets after it.

    DecodeError (ESME_RINVMSGLEN) when the UDH length runs past the data or an IE's length runs
    past the UDH.
    """
    if not short_message:
        raise DecodeError("UDHI set on an empty short_message", command_status=ESME_RINVMSGLEN)
    end = 1 + short_message[0]
    if end > len(short_message):
        raise DecodeError(
            f"UDH length {short_message[0]} runs past the {len(short_message)}-octet message",
            command_status=ESME_RINVMSGLEN,
        )
    elements: list[InformationElement] = []
    offset = 1
    while offset < end:
        if offset + 2 > end:
            raise DecodeError("UDH ends inside an IE header", command_status=ESME_RINVMSGLEN)
        iei, length = short_message[offset], short_message[offset + 1]
        data_end = offset + 2 + length
        if data_end > end:
            raise DecodeError(
                f"UDH IE 0x{iei:02X} length {length} runs past the UDH",
                command_status=ESME_RINVMSGLEN,
            )
        elements.append(InformationElement(iei, short_message[offset + 2 : data_end]))
        offset = data_end
    return elements, short_message[end:]


def concat_info(elements: Sequence[InformationElement]) -> ConcatInfo | None:
    """The concatenation IE among `elements`, or None.

    Per 23.040 9.2.3.24.1 an IE with a wrong length, a zero total, or a sequence number of zero or
    past the total is ignored (the part is then a message of its own); of repeated IEs the last
    one counts (9.2.3.24).
    """
    found: ConcatInfo | None = None
    for element in elements:
        data = element.data
        if element.iei == IEI_CONCAT_8BIT and len(data) == 3:
            candidate = ConcatInfo(data[0], data[1], data[2], ref16=False)
        elif element.iei == IEI_CONCAT_16BIT and len(data) == 4:
            candidate = ConcatInfo((data[0] << 8) | data[1], data[2], data[3], ref16=True)
        else:
            continue
        if 1 <= candidate.seq <= candidate.total:
            found = candidate
    return found


@record
class ConcatPart:
    """One part of a long message, from a UDH or from the sar_* TLVs, with its content."""

    ref: int
    total: int
    seq: int
    data: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.seq <= self.total <= MAX_CONCAT_PARTS:
            raise ValueError(f"part {self.seq} of {self.total} is not a valid concatenation part")


class DropReason(StrEnum):
    """Why a group of parts was given up before it was complete."""

    EXPIRED = "expired"  # the group outlived the timeout
    EVICTED = "evicted"  # more groups (or bytes) were pending than allowed; the oldest went
    TOO_MANY_PARTS = "too_many_parts"  # its total exceeds the configured maximum
    TOO_LARGE = "too_large"  # one part alone is larger than all parts may be together
    REUSED = "reused"  # a part of its seq came with other data: a new message under its ref


@record
class DroppedGroup:
    """An incomplete long message given up, with the parts that did arrive (ordered by seq)."""

    key: Hashable
    ref: int
    total: int
    parts: tuple[tuple[int, bytes], ...]
    reason: DropReason


@dataclass(slots=True)
class _Pending:
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0  # octets of data in `parts`


class Reassembler:
    """Collects the parts of concatenated messages until each is complete. Pure: `now` is an input.

    Parts are grouped by (caller's key, ref, total): the key should name the conversation (for
    MO, source and destination address), so equal references from different senders never mix,
    and a reused reference with a different total starts a new group. `add` returns the parts'
    data in sequence order once all have arrived; concatenating and decoding them is the
    caller's job (a sender may have split an escape or a surrogate pair across parts, which
    decoding the concatenation heals). A repeated part is ignored (the first copy is kept).

    Memory is bounded: at most `max_groups` pending groups and `max_bytes` octets of part data
    in all (the oldest groups are evicted past either), and `max_parts` parts per group; a
    peer sending 64 KiB message_payload parts must not hold gigabytes. Groups older than
    `timeout_s` are dropped by `expire`, which
    also hands back those evicted since its last call, so the caller can deliver or log
    incomplete messages rather than lose them silently. `now` must not go backwards.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 120.0,
        max_groups: int = 1024,
        max_parts: int = 255,
        max_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        if (
            timeout_s <= 0
            or max_groups < 1
            or max_bytes < 1
            or not 1 <= max_parts <= MAX_CONCAT_PARTS
        ):
            raise ValueError("timeout_s, max_groups, max_bytes and max_parts must be positive")
        self._timeout_s = timeout_s
        self._max_groups = max_groups
        self._max_parts = max_parts
        self._max_bytes = max_bytes
        self._bytes = 0  # of every pending group's parts
        # Insertion order is start order, so the oldest group is always first. An OrderedDict,
        # because finding the first entry of a plain dict slows down as entries leave its front.
        self._pending: OrderedDict[tuple[Hashable, int, int], _Pending] = OrderedDict()
        self._dropped: list[DroppedGroup] = []
        self._first_dropped_at: float | None = None

    def __len__(self) -> int:
        """Number of incomplete groups held."""
        return len(self._pending)

    def add(self, key: Hashable, part: ConcatPart, *, now: float) -> list[bytes] | None:
        """Take one part; the ordered data of all parts when this one completes its group."""
        if part.total == 1:
            return [part.data]
        group_key = (key, part.ref, part.total)
        if part.total > self._max_parts:
            dropped = DroppedGroup(
                key, part.ref, part.total, ((part.seq, part.data),), DropReason.TOO_MANY_PARTS
            )
            self._note_dropped(dropped, now=now)
            return None
        if len(part.data) > self._max_bytes:
            dropped = DroppedGroup(
                key, part.ref, part.total, ((part.seq, part.data),), DropReason.TOO_LARGE
            )
            self._note_dropped(dropped, now=now)
            return None
        pending = self._pending.get(group_key)
        if pending is not None and (held := pending.parts.get(part.seq)) is not None:
            if held == part.data:
                return None  # a repeat: the first copy is kept
            # The sender reused the reference (it has only 256, or 65,536) before the message
            # that had it was complete: that one is given up with what came of it, and this
            # part starts the new one, rather than being dropped as a repeat.
            self._drop(group_key, DropReason.REUSED, now=now)
        while self._pending and self._bytes + len(part.data) > self._max_bytes:
            self._drop(next(iter(self._pending)), DropReason.EVICTED, now=now)
        pending = self._pending.get(group_key)  # it may have been the oldest
        if pending is None:
            if len(self._pending) >= self._max_groups:
                self._drop(next(iter(self._pending)), DropReason.EVICTED, now=now)
            pending = self._pending[group_key] = _Pending(started=now)
        pending.parts[part.seq] = part.data
        pending.size += len(part.data)
        self._bytes += len(part.data)
        if len(pending.parts) < part.total:
            return None
        del self._pending[group_key]
        self._bytes -= pending.size
        return [pending.parts[seq] for seq in range(1, part.total + 1)]

    def conflicts(self, key: Hashable, part: ConcatPart) -> bool:
        """Whether `part`'s group is pending with another part of its seq: a new message under
        a reference its sender reused (`add` gives the pending one up for it)."""
        pending = self._pending.get((key, part.ref, part.total))
        held = None if pending is None else pending.parts.get(part.seq)
        return held is not None and held != part.data

    def give_up(self, key: Hashable, part: ConcatPart, reason: DropReason, *, now: float) -> None:
        """Drop `part`'s pending group, with `reason`: `expire` returns it."""
        group_key = (key, part.ref, part.total)
        if group_key in self._pending:
            self._drop(group_key, reason, now=now)

    def holds(self, key: Hashable, part: ConcatPart) -> bool:
        """Whether `part`'s group is pending with this very part (not completed, dropped or
        given up since it was added, nor another part of its seq)."""
        pending = self._pending.get((key, part.ref, part.total))
        return pending is not None and pending.parts.get(part.seq) == part.data

    def discard(self, key: Hashable, part: ConcatPart) -> None:
        """Take `part` out of its pending group again (it was refused after all: its sender
        delivers it again)."""
        group_key = (key, part.ref, part.total)
        pending = self._pending.get(group_key)
        if pending is None or (data := pending.parts.pop(part.seq, None)) is None:
            return
        pending.size -= len(data)
        self._bytes -= len(data)
        if not pending.parts:
            del self._pending[group_key]

    def expire(self, *, now: float) -> list[DroppedGroup]:
        """Drop groups started `timeout_s` or more before `now`; return them and any evicted."""
        deadline = now - self._timeout_s
        while self._pending:
            group_key, pending = next(iter(self._pending.items()))
            if pending.started > deadline:
                break
            self._drop(group_key, DropReason.EXPIRED, now=now)
        dropped, self._dropped = self._dropped, []
        self._first_dropped_at = None
        return dropped

    def next_deadline(self) -> float | None:
        """When `expire` next has something to return, or None while nothing is pending.

        Already past when a group was evicted or refused since the last `expire`.
        """
        if self._first_dropped_at is not None:
            return self._first_dropped_at
        for pending in self._pending.values():
            return pending.started + self._timeout_s
        return None

    def _drop(
        self, group_key: tuple[Hashable, int, int], reason: DropReason, *, now: float
    ) -> None:
        pending = self._pending.pop(group_key)
        self._bytes -= pending.size
        key, ref, total = group_key
        parts = tuple(sorted(pending.parts.items()))
        self._note_dropped(DroppedGroup(key, ref, total, parts, reason), now=now)

    def _note_dropped(self, dropped: DroppedGroup, *, now: float) -> None:
        self._dropped.append(dropped)
        if self._first_dropped_at is None:
            self._first_dropped_at = now
