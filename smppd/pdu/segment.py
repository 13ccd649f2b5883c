"""Segmentation of a long message into submit_sm bodies: UDH (8/16-bit reference), SAR or payload.

Owns the per-segment capacities (3GPP TS 23.040 9.2.3.24: 140 octets of user data, less the UDH),
where a message may be cut (never inside a GSM escape pair or a UTF-16 surrogate pair), the
segment cap, and the allocation of concatenation references. It must not know PDUs or TLV
encoding (the caller maps `Segment` onto submit_sm fields), carriers or queues.
"""

from __future__ import annotations

import dataclasses
import random
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from enum import StrEnum

from smppd.pdu import national
from smppd.pdu.errors import EncodeError, SegmentLimitError
from smppd.pdu.national import DEFAULT_SHIFT, NationalLanguage, Shift
from smppd.pdu.text import GSM7_ESCAPE, Alphabet, decode_gsm7, encode_text, pack_septets
from smppd.pdu.tlv import Tag, Tlv
from smppd.pdu.udh import MAX_CONCAT_PARTS, build_concat_udh, septet_fill_bits
from smppd.record import record

USER_DATA_OCTETS = 140  # 23.040 9.2.3.16: TP-User-Data of one short message
UDH8_OCTETS = 6  # UDHL, IEI 0x00, IEDL, ref, total, seq
UDH16_OCTETS = 7  # UDHL, IEI 0x08, IEDL, ref (2), total, seq


# A concatenation reference, or what allocates one: called only for a message that needs it, so
# that one-segment messages (most traffic) use up no reference of their destination's.
Reference = int | Callable[[], int]


class ConcatMethod(StrEnum):
    """How the parts of a long message are tied together."""

    UDH8 = "udh8"  # UDH IEI 0x00 in short_message, esm_class UDHI
    UDH16 = "udh16"  # UDH IEI 0x08
    SAR = "sar"  # sar_msg_ref_num / sar_total_segments / sar_segment_seqnum TLVs
    PAYLOAD = "payload"  # whole message in the message_payload TLV; the SMSC splits it


@record
class SarInfo:
    """The SAR TLVs of one segment (SMPP v3.4 5.3.2.22-24)."""

    sar_msg_ref_num: int
    sar_total_segments: int
    sar_segment_seqnum: int


@record
class Segment:
    """One submit_sm body. The caller ORs 0x40 into esm_class when `esm_class_udhi`."""

    short_message: bytes
    esm_class_udhi: bool
    data_coding: int
    sar: SarInfo | None = None
    message_payload: bytes | None = None

    def __post_init__(self) -> None:
        # SMPP v3.4 5.3.2.32: short_message and message_payload must not both carry data.
        if self.message_payload is not None and self.short_message:
            raise ValueError("a segment carries short_message or message_payload, not both")

    def tlvs(self) -> tuple[Tlv, ...]:
        """The optional parameters this segment travels with: sar_* and message_payload."""
        out: list[Tlv] = []
        if self.sar is not None:
            out += [
                Tlv.of_int(Tag.sar_msg_ref_num, self.sar.sar_msg_ref_num),
                Tlv.of_int(Tag.sar_total_segments, self.sar.sar_total_segments),
                Tlv.of_int(Tag.sar_segment_seqnum, self.sar.sar_segment_seqnum),
            ]
        if self.message_payload is not None:
            out.append(Tlv.of_bytes(Tag.message_payload, self.message_payload))
        return tuple(out)


# The methods whose parts carry a UDH of ours, where national language tables can be named.
UDH_METHODS = frozenset({ConcatMethod.UDH8, ConcatMethod.UDH16})


def _unit_octets(alphabet: Alphabet) -> int:
    # Octets per counted unit of the encoded form: a UTF-16 unit is 2, a septet (unpacked) 1.
    return 2 if alphabet is Alphabet.UCS2 else 1


def capacity(alphabet: Alphabet, udh_octets: int = 0) -> int:
    """Units (septets, UTF-16 units or octets) of `alphabet` one segment holds after a UDH.

    GSM7 counts septets as the SMSC packs them (160, 153, 152), also when sent unpacked.
    """
    octets = USER_DATA_OCTETS - udh_octets
    if alphabet is Alphabet.GSM7:
        return octets * 8 // 7
    return octets // _unit_octets(alphabet)


_PART_UDH_OCTETS = {
    ConcatMethod.UDH8: UDH8_OCTETS,
    ConcatMethod.UDH16: UDH16_OCTETS,
    # No UDH in short_message, but the SMSC adds one on the air: with a reference under 256
    # (SAR references are 8-bit here, see _split) that is the 6-octet header.
    ConcatMethod.SAR: UDH8_OCTETS,
    # The SMSC splits a payload itself; counted as it usually does, with an 8-bit reference.
    ConcatMethod.PAYLOAD: UDH8_OCTETS,
}


def _cut(
    encoded: bytes, alphabet: Alphabet, method: ConcatMethod, shift: Shift = DEFAULT_SHIFT
) -> list[int]:
    """End offsets of each segment in `encoded`: one end when it fits a single segment. A
    national `shift` puts its elements in every segment's UDH (and so gives one a UDH)."""
    unit = _unit_octets(alphabet)
    more = len(shift.elements())
    if len(encoded) <= capacity(alphabet, 1 + more if more else 0) * unit:
        return [len(encoded)]
    limit = capacity(alphabet, _PART_UDH_OCTETS[method] + more) * unit
    ends: list[int] = []
    start = 0
    while len(encoded) - start > limit:
        end = start + limit
        # The encoder emits 0x1B only as an escape prefix, so a final 0x1B starts a pair.
        if alphabet is Alphabet.GSM7 and encoded[end - 1] == GSM7_ESCAPE:
            end -= 1
        elif alphabet is Alphabet.UCS2:
            end = _ucs2_break(encoded, start, end)
        ends.append(end)
        start = end
    ends.append(len(encoded))
    return ends


# How far back (in UTF-16 units) a cut may move to keep a character whole, as its reader sees
# it: past this, a cluster so long is cut where it must be (between code points still).
_MAX_CLUSTER_UNITS = 16


def _ucs2_break(encoded: bytes, start: int, end: int) -> int:
    """`end`, or the nearest earlier offset that splits no user-visible character.

    Never inside a surrogate pair; where it can, not before a combining mark, a variation
    selector, an emoji skin tone or a zero width joiner, nor after a joiner, nor inside a
    flag's pair of regional indicators. Handsets that show each part alone would otherwise
    show half a flag, or an accent on nothing.
    """
    if 0xD8 <= encoded[end - 2] <= 0xDB:  # a high surrogate: its pair must stay whole
        end -= 2
    at = end
    while at - start > 2 and end - at < 2 * _MAX_CLUSTER_UNITS:
        if not _joined(encoded, at, start):
            return at
        at -= 2
        if 0xDC <= encoded[at] <= 0xDF:  # a low surrogate: step over the whole pair
            at -= 2
    return end


def _code_point_at(encoded: bytes, at: int) -> int:
    unit = int.from_bytes(encoded[at : at + 2], "big")
    if 0xD800 <= unit <= 0xDBFF and at + 4 <= len(encoded):
        low = int.from_bytes(encoded[at + 2 : at + 4], "big")
        return 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
    return unit


def _code_point_before(encoded: bytes, at: int) -> int:
    unit = int.from_bytes(encoded[at - 2 : at], "big")
    if 0xDC00 <= unit <= 0xDFFF and at >= 4:
        return _code_point_at(encoded, at - 4)
    return unit


def _joined(encoded: bytes, at: int, start: int) -> bool:
    """Whether the code points either side of offset `at` belong to one visible character;
    `start` is where the segment begins (a cut between characters)."""
    if at >= len(encoded):
        return False
    after, before = _code_point_at(encoded, at), _code_point_before(encoded, at)
    if _ZWJ in (before, after) or _extends(after):
        return True
    if _is_regional(after) and _is_regional(before):
        # Flags pair up from the first indicator of a run: split only between pairs. Counted
        # from the segment's start, a cut between pairs: from the text's, a long run of flags
        # would make every cut scan it all again.
        run, back = 0, at
        while back > start and _is_regional(_code_point_before(encoded, back)):
            run, back = run + 1, back - 4
        return run % 2 == 1
    return False


_ZWJ = 0x200D


def _extends(code_point: int) -> bool:
    """A code point that attaches to the one before it."""
    return (
        0xFE00 <= code_point <= 0xFE0F  # variation selectors
        or 0x1F3FB <= code_point <= 0x1F3FF  # emoji skin tones
        or 0xE0020 <= code_point <= 0xE007F  # emoji tag sequences
        or unicodedata.category(chr(code_point)) in ("Mn", "Me", "Mc")
    )


def _is_regional(code_point: int) -> bool:
    return 0x1F1E6 <= code_point <= 0x1F1FF


def count_segments(
    text: str, alphabet: Alphabet, method: ConcatMethod, shift: Shift = DEFAULT_SHIFT
) -> int:
    """Short messages `text` becomes on the air (a payload counts as the SMSC will split it).

    TextError when `alphabet` cannot carry `text`. Not capped: compare with the limit yourself.
    """
    return len(_cut(_encode(text, alphabet, shift), alphabet, method, shift))


def national_shift(text: str, language: NationalLanguage, method: ConcatMethod) -> Shift | None:
    """The tables of `language` that send `text` in the fewest parts, then with the shortest
    header; None when no choice of them carries it. Only for UDH concatenation, where the
    tables can be named in each part."""
    if method not in UDH_METHODS:
        raise ValueError("national language tables are named in a UDH: udh8 or udh16 only")
    best: tuple[tuple[int, int], Shift] | None = None
    for shift, encoded in national.choose(text, language):
        cost = (len(_cut(encoded, Alphabet.GSM7, method, shift)), len(shift.elements()))
        if best is None or cost < best[0]:
            best = cost, shift
    return None if best is None else best[1]


def _encode(text: str, alphabet: Alphabet, shift: Shift) -> bytes:
    if shift.is_default:
        return encode_text(text, alphabet)
    if alphabet is not Alphabet.GSM7:
        raise ValueError("national language tables are for GSM 7-bit text only")
    return national.encode(text, shift)


def split_message(
    text: str,
    *,
    alphabet: Alphabet,
    data_coding: int,
    method: ConcatMethod,
    ref: Reference,
    max_segments: int,
    packed: bool = False,
    latin1_octets: bool = False,
    shift: Shift = DEFAULT_SHIFT,
) -> list[Segment]:
    """The submit_sm bodies that carry `text` encoded in `alphabet`.

    A message that fits one segment gets no UDH or SAR (with PAYLOAD too: it goes in
    short_message). Otherwise UDH8/UDH16 put a concatenation UDH with reference `ref` (see
    `Reference`) in each short_message, SAR sets the sar_* TLVs, and PAYLOAD returns one
    segment with the whole message in message_payload. `packed` packs GSM septets (after the
    UDH with its fill bits). TextError when `alphabet` cannot carry `text`; SegmentLimitError
    when it needs more than `max_segments` short messages on the air (or 255, the most a
    concatenation header can number), which also bounds a payload well under the TLV's 64 KiB.
    `latin1_octets`: GSM7 text cut in septets, as the air carries it, each part written in
    Latin-1 (a carrier whose data_coding 0 is Latin-1; see text.plan_encoding).
    `shift`: GSM7 written with national language tables (see `national_shift`), which every
    segment names in its UDH, a single one too; UDH8 and UDH16 only.
    """
    encoded = _encode(text, alphabet, shift)
    segments = _split(
        encoded, alphabet, data_coding, method, ref, max_segments, packed=packed, shift=shift
    )
    if latin1_octets:
        if alphabet is not Alphabet.GSM7 or packed or not shift.is_default:
            raise ValueError("only unpacked GSM 03.38 septets can be written as Latin-1")
        return [_in_latin1(segment) for segment in segments]
    return segments


def _in_latin1(segment: Segment) -> Segment:
    """`segment`'s GSM 03.38 septets (after any UDH) rewritten as the Latin-1 of their text."""
    if segment.message_payload is not None:
        payload = decode_gsm7(segment.message_payload).encode("latin-1")
        return dataclasses.replace(segment, message_payload=payload)
    body = segment.short_message
    udh = body[: body[0] + 1] if segment.esm_class_udhi else b""
    text = decode_gsm7(body[len(udh) :])
    return dataclasses.replace(segment, short_message=udh + text.encode("latin-1"))


def split_binary(
    data: bytes, *, data_coding: int, method: ConcatMethod, ref: Reference, max_segments: int
) -> list[Segment]:
    """`split_message` for octets sent as they are (data_coding 2 or 4), cut anywhere."""
    return _split(data, Alphabet.BINARY, data_coding, method, ref, max_segments, packed=False)


def _split(
    encoded: bytes,
    alphabet: Alphabet,
    data_coding: int,
    method: ConcatMethod,
    reference: Reference,
    max_segments: int,
    *,
    packed: bool,
    shift: Shift = DEFAULT_SHIFT,
) -> list[Segment]:
    if packed and alphabet is not Alphabet.GSM7:
        raise ValueError("only GSM 03.38 septets can be packed")
    more = shift.elements()
    if more and method not in UDH_METHODS:
        raise ValueError("national language tables are named in a UDH: udh8 or udh16 only")
    ends = _cut(encoded, alphabet, method, shift)
    cap = min(max_segments, MAX_CONCAT_PARTS)
    if len(ends) > cap:
        raise SegmentLimitError(f"message needs {len(ends)} segments; the cap is {cap}")
    if len(ends) == 1 and more:
        udh = bytes((len(more),)) + more
        body = _pack(encoded, septet_fill_bits(len(udh))) if packed else encoded
        return [Segment(udh + body, esm_class_udhi=True, data_coding=data_coding)]
    if len(ends) == 1:
        body = _pack(encoded) if packed else encoded
        return [Segment(body, esm_class_udhi=False, data_coding=data_coding)]
    if method is ConcatMethod.PAYLOAD:
        # The part cap (255 at most, about 34 KB) keeps this under the TLV's 64 KiB.
        payload = _pack(encoded) if packed else encoded
        return [
            Segment(b"", esm_class_udhi=False, data_coding=data_coding, message_payload=payload)
        ]

    ref = reference() if callable(reference) else reference
    # sar_msg_ref_num is a 16-bit TLV, but a reference over 255 makes the SMSC put a 7-octet
    # header on the air, one the parts were not cut for.
    ref_limit = 0xFFFF if method is ConcatMethod.UDH16 else 0xFF
    if not 0 <= ref <= ref_limit:
        raise EncodeError(f"concatenation reference {ref} is out of range 0..{ref_limit}")
    total = len(ends)
    segments: list[Segment] = []
    start = 0
    for seq, end in enumerate(ends, start=1):
        body = encoded[start:end]
        start = end
        if method is ConcatMethod.SAR:
            sar = SarInfo(ref, total, seq)
            short_message = _pack(body) if packed else body
            segments.append(
                Segment(short_message, esm_class_udhi=False, data_coding=data_coding, sar=sar)
            )
            continue
        udh = build_concat_udh(ref, total, seq, ref16=method is ConcatMethod.UDH16, more=more)
        if packed:
            body = _pack(body, septet_fill_bits(len(udh)))
        segments.append(Segment(udh + body, esm_class_udhi=True, data_coding=data_coding))
    return segments


def _pack(septets: bytes, fill_bits: int = 0) -> bytes:
    """Packed septets. Seven spare bits at the end carry CR rather than zeros, which a handset
    counting septets by length would read as a trailing '@' (3GPP TS 23.038 6.1.2.3.1)."""
    if (fill_bits + 7 * len(septets)) % 8 == 1:
        septets += b"\r"
    return pack_septets(septets, fill_bits)


class ReferenceAllocator:
    """Concatenation references per destination, so long messages to one handset never mix.

    Each destination counts up from a random start: (last + 1) mod 256, or mod 65536 for 16-bit
    references (one counter serves both). Memory is bounded by keeping the `max_destinations`
    most recently used; a forgotten destination restarts at random, which collides with a
    still-pending group on the handset only by a 1-in-256 chance. Pure apart from `rng`, which
    tests seed.
    """

    def __init__(self, *, max_destinations: int = 10_000, rng: random.Random | None = None) -> None:
        if max_destinations < 1:
            raise ValueError("max_destinations must be positive")
        self._max_destinations = max_destinations
        self._rng = rng if rng is not None else random.Random()
        self._last: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        """Number of destinations remembered."""
        return len(self._last)

    def next(self, destination: str, *, ref16: bool) -> int:
        """The next reference for a long message to `destination`."""
        last = self._last.get(destination)
        if last is None:
            if len(self._last) >= self._max_destinations:
                self._last.popitem(last=False)
            current = self._rng.randrange(0x10000)
        else:
            current = (last + 1) & 0xFFFF
            self._last.move_to_end(destination)
        self._last[destination] = current
        return current if ref16 else current & 0xFF
