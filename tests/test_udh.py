"""User Data Header building and parsing, and reassembly of concatenated parts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smppd.pdu.errors import DecodeError, EncodeError
from smppd.pdu.udh import (
    ConcatInfo,
    ConcatPart,
    DropReason,
    InformationElement,
    Reassembler,
    build_concat_udh,
    concat_info,
    parse_udh,
    septet_fill_bits,
)

ESME_RINVMSGLEN = 0x00000001


def test_build_concat_udh_vectors() -> None:
    """8-bit and 16-bit reference headers have the 23.040 layout."""
    assert build_concat_udh(0xCC, 3, 1, ref16=False).hex() == "050003cc0301"
    assert build_concat_udh(0x1234, 2, 2, ref16=True).hex() == "0608041234" + "0202"
    assert build_concat_udh(0, 255, 255, ref16=False).hex() == "05000300ffff"


@pytest.mark.parametrize(
    ("ref", "total", "seq", "ref16"),
    [(256, 2, 1, False), (-1, 2, 1, True), (0x10000, 2, 1, True), (1, 0, 0, False),
     (1, 2, 3, False), (1, 2, 0, False), (1, 256, 1, True)],
)  # fmt: skip
def test_build_concat_udh_refuses_out_of_range(ref: int, total: int, seq: int, ref16: bool) -> None:
    """References, totals and sequence numbers outside their fields are refused."""
    with pytest.raises(EncodeError):
        build_concat_udh(ref, total, seq, ref16=ref16)


def test_parse_udh_with_concat_and_ports() -> None:
    """A UDH with a 16-bit port IE and a concat IE parses into both, and the rest follows."""
    message = bytes.fromhex("0b0504") + b"\x0b\x84\x23\xf0" + bytes.fromhex("0003ab0201") + b"body"
    elements, rest = parse_udh(message)
    assert elements == [
        InformationElement(0x05, b"\x0b\x84\x23\xf0"),
        InformationElement(0x00, b"\xab\x02\x01"),
    ]
    assert rest == b"body"
    assert concat_info(elements) == ConcatInfo(ref=0xAB, total=2, seq=1, ref16=False)


def test_parse_udh_empty_header_and_rest() -> None:
    """A zero-length UDH has no IEs; a UDH may be the whole message."""
    assert parse_udh(b"\x00abc") == ([], b"abc")
    assert parse_udh(bytes.fromhex("0404020102")) == ([InformationElement(4, b"\x01\x02")], b"")
    assert parse_udh(bytes.fromhex("02") + b"\x01\x00" + bytes.fromhex("ff")) == (
        [InformationElement(1, b"")],
        b"\xff",
    )


@pytest.mark.parametrize(
    "message",
    [
        b"",  # no UDHL at all
        bytes.fromhex("05000302"),  # UDHL past the data
        bytes.fromhex("0500040102030405"),  # IE length past the UDH
        bytes.fromhex("0100"),  # IE header cut by the UDH end
        bytes.fromhex("0400010102"),  # second IE header cut
    ],
)
def test_parse_udh_malformed(message: bytes) -> None:
    """A UDH whose lengths do not add up is a decode error answering ESME_RINVMSGLEN."""
    with pytest.raises(DecodeError) as caught:
        parse_udh(message)
    assert caught.value.command_status == ESME_RINVMSGLEN
    assert not caught.value.framing_lost


@settings(max_examples=200)
@given(st.binary(max_size=160))
def test_parse_udh_arbitrary_bytes(message: bytes) -> None:
    """Any octets parse into IEs that rebuild the header, or raise DecodeError only."""
    try:
        elements, rest = parse_udh(message)
    except DecodeError:
        return
    header = b"".join(bytes((e.iei, len(e.data))) + e.data for e in elements)
    assert bytes((len(header),)) + header + rest == message


@settings(max_examples=200)
@given(st.integers(0, 0xFFFF), st.integers(1, 255), st.data(), st.booleans())
def test_concat_udh_round_trip(ref: int, total: int, data: st.DataObject, ref16: bool) -> None:
    """A built concat UDH parses back to the same reference, total and sequence."""
    seq = data.draw(st.integers(1, total))
    ref = ref if ref16 else ref & 0xFF
    udh = build_concat_udh(ref, total, seq, ref16=ref16)
    assert len(udh) == (7 if ref16 else 6)
    elements, rest = parse_udh(udh + b"xyz")
    assert rest == b"xyz"
    assert concat_info(elements) == ConcatInfo(ref, total, seq, ref16)


@pytest.mark.parametrize(
    "elements",
    [
        [],
        [InformationElement(0x00, b"\x01\x00\x00")],  # total 0
        [InformationElement(0x00, b"\x01\x02\x00")],  # seq 0
        [InformationElement(0x00, b"\x01\x02\x03")],  # seq past total
        [InformationElement(0x00, b"\x01\x02")],  # wrong length
        [InformationElement(0x08, b"\x01\x02\x01")],  # wrong length
        [InformationElement(0x05, b"\x0b\x84\x23\xf0")],  # ports only
    ],
)
def test_concat_info_ignores_invalid(elements: list[InformationElement]) -> None:
    """An invalid or absent concatenation IE means the part stands alone (23.040 9.2.3.24.1)."""
    assert concat_info(elements) is None


def test_concat_info_last_repeated_ie_wins() -> None:
    """Of repeated concatenation IEs the last one counts."""
    elements = [
        InformationElement(0x00, b"\x01\x02\x01"),
        InformationElement(0x08, b"\x01\x00\x03\x02"),
    ]
    assert concat_info(elements) == ConcatInfo(0x100, 3, 2, ref16=True)


def test_septet_fill_bits() -> None:
    """Fill bits bring the septets after the UDH to a septet boundary."""
    assert septet_fill_bits(6) == 1  # 48 bits + 1 = 7 septets
    assert septet_fill_bits(7) == 0  # 56 bits = 8 septets
    assert septet_fill_bits(0) == 0
    assert septet_fill_bits(12) == 2  # 96 + 2 = 98 = 14 septets
    for octets in range(1, 141):
        assert (octets * 8 + septet_fill_bits(octets)) % 7 == 0


# --- reassembly ---------------------------------------------------------------------------------


def parts_of(message: bytes, ref: int, size: int) -> list[ConcatPart]:
    chunks = [message[i : i + size] for i in range(0, len(message), size)]
    return [ConcatPart(ref, len(chunks), seq, chunk) for seq, chunk in enumerate(chunks, 1)]


def test_concat_part_validates() -> None:
    """A part's sequence number lies in 1..total and the total in 1..255."""
    with pytest.raises(ValueError, match="not a valid"):
        ConcatPart(1, 2, 3, b"")
    with pytest.raises(ValueError, match="not a valid"):
        ConcatPart(1, 256, 1, b"")
    with pytest.raises(ValueError, match="not a valid"):
        ConcatPart(1, 0, 0, b"")


def test_reassembles_out_of_order_and_ignores_duplicates() -> None:
    """Parts in any order complete once each sequence number is seen; repeats change nothing."""
    reassembler = Reassembler()
    first, second, third = parts_of(b"abcdefgh", ref=7, size=3)
    assert reassembler.add("k", third, now=0.0) is None
    assert reassembler.add("k", first, now=1.0) is None
    assert reassembler.add("k", first, now=1.5) is None
    assert len(reassembler) == 1
    assert reassembler.add("k", second, now=2.0) == [b"abc", b"def", b"gh"]
    assert len(reassembler) == 0
    assert reassembler.next_deadline() is None


def test_a_reused_reference_starts_a_new_message_and_gives_up_the_old_one() -> None:
    """A part whose seq is held with other data is a new message under a reference the sender
    reused before the old one completed (its lost part never came): the old one is given up
    with what arrived, and the new one is put together on its own. Taken for a repeat, the
    new first part was dropped after its ESME_ROK, and its second completed the old message."""
    reassembler = Reassembler()
    assert reassembler.add("k", ConcatPart(42, 2, 1, b"old 1"), now=0.0) is None
    assert reassembler.add("k", ConcatPart(42, 2, 1, b"new 1"), now=60.0) is None
    (dropped,) = reassembler.expire(now=60.0)
    assert (dropped.reason, dropped.parts) == (DropReason.REUSED, ((1, b"old 1"),))
    assert reassembler.holds("k", ConcatPart(42, 2, 1, b"new 1"))
    assert not reassembler.holds("k", ConcatPart(42, 2, 1, b"old 1"))
    assert reassembler.add("k", ConcatPart(42, 2, 2, b"new 2"), now=61.0) == [b"new 1", b"new 2"]


def test_single_part_completes_at_once() -> None:
    """A part of a one-part message needs no waiting."""
    assert Reassembler().add("k", ConcatPart(1, 1, 1, b"x"), now=0.0) == [b"x"]


def test_keys_refs_and_totals_keep_groups_apart() -> None:
    """Equal references from different keys, or with different totals, never mix."""
    reassembler = Reassembler()
    assert reassembler.add("alice", ConcatPart(5, 2, 1, b"a1"), now=0.0) is None
    assert reassembler.add("bob", ConcatPart(5, 2, 2, b"b2"), now=0.0) is None
    assert reassembler.add("alice", ConcatPart(5, 3, 2, b"x2"), now=0.0) is None
    assert reassembler.add("alice", ConcatPart(6, 2, 2, b"y2"), now=0.0) is None
    assert len(reassembler) == 4
    assert reassembler.add("alice", ConcatPart(5, 2, 2, b"a2"), now=1.0) == [b"a1", b"a2"]
    assert reassembler.add("bob", ConcatPart(5, 2, 1, b"b1"), now=1.0) == [b"b1", b"b2"]


def test_expire_drops_old_groups_with_their_parts() -> None:
    """Groups that outlive the timeout come back from expire with what arrived."""
    reassembler = Reassembler(timeout_s=10.0)
    reassembler.add("a", ConcatPart(1, 3, 2, b"a2"), now=0.0)
    reassembler.add("a", ConcatPart(1, 3, 1, b"a1"), now=5.0)
    reassembler.add("b", ConcatPart(2, 2, 1, b"b1"), now=4.0)
    assert reassembler.next_deadline() == 10.0
    assert reassembler.expire(now=9.9) == []
    (dropped,) = reassembler.expire(now=10.0)
    assert (dropped.key, dropped.ref, dropped.total) == ("a", 1, 3)
    assert dropped.parts == ((1, b"a1"), (2, b"a2"))
    assert dropped.reason is DropReason.EXPIRED
    assert reassembler.next_deadline() == 14.0
    assert len(reassembler) == 1
    # A late part of an expired group starts afresh rather than completing a ghost.
    assert reassembler.add("a", ConcatPart(1, 3, 3, b"a3"), now=11.0) is None


def test_eviction_bounds_pending_groups() -> None:
    """Past max_groups the oldest group is evicted and reported by the next expire."""
    reassembler = Reassembler(max_groups=2, timeout_s=100.0)
    reassembler.add("a", ConcatPart(1, 2, 1, b"a1"), now=0.0)
    reassembler.add("b", ConcatPart(1, 2, 1, b"b1"), now=1.0)
    reassembler.add("c", ConcatPart(1, 2, 1, b"c1"), now=2.0)
    assert len(reassembler) == 2
    assert reassembler.next_deadline() == 2.0  # due now: there is something to report
    (dropped,) = reassembler.expire(now=2.0)
    assert (dropped.key, dropped.reason, dropped.parts) == ("a", DropReason.EVICTED, ((1, b"a1"),))
    assert reassembler.next_deadline() == 101.0
    assert reassembler.add("b", ConcatPart(1, 2, 2, b"b2"), now=3.0) == [b"b1", b"b2"]


def test_the_bytes_held_are_bounded_too() -> None:
    """Past max_bytes of part data the oldest groups are evicted (a peer sending 64 KiB
    parts must not hold gigabytes); a part larger than the whole budget is refused at once;
    a completed or repeated part frees or costs nothing more."""
    reassembler = Reassembler(max_bytes=100, timeout_s=100.0)
    reassembler.add("a", ConcatPart(1, 2, 1, b"a" * 40), now=0.0)
    reassembler.add("b", ConcatPart(1, 2, 1, b"b" * 40), now=1.0)
    reassembler.add("b", ConcatPart(1, 2, 1, b"b" * 40), now=1.5)  # a repeat: ignored
    reassembler.add("c", ConcatPart(1, 3, 1, b"c" * 40), now=2.0)  # 120 > 100: a goes
    assert len(reassembler) == 2
    (evicted,) = reassembler.expire(now=2.0)
    assert (evicted.key, evicted.reason) == ("a", DropReason.EVICTED)
    assert reassembler.add("b", ConcatPart(1, 2, 2, b"b" * 10), now=3.0) == [b"b" * 40, b"b" * 10]
    # b's 50 octets are free again: c can take 60 more without evicting anything.
    assert reassembler.add("c", ConcatPart(1, 3, 2, b"c" * 60), now=4.0) is None
    assert reassembler.expire(now=4.0) == []
    assert reassembler.add("d", ConcatPart(1, 2, 1, b"d" * 101), now=5.0) is None
    (refused,) = reassembler.expire(now=5.0)
    assert (refused.key, refused.reason) == ("d", DropReason.TOO_LARGE)
    assert len(reassembler) == 1


def test_too_many_parts_is_refused() -> None:
    """A group with more parts than allowed is reported at once and never held."""
    reassembler = Reassembler(max_parts=4)
    assert reassembler.add("a", ConcatPart(1, 5, 1, b"x"), now=0.0) is None
    assert len(reassembler) == 0
    (dropped,) = reassembler.expire(now=0.0)
    assert dropped.reason is DropReason.TOO_MANY_PARTS
    assert dropped.parts == ((1, b"x"),)


def test_reassembler_validates_limits() -> None:
    """Limits must be positive and parts at most 255."""
    with pytest.raises(ValueError, match="positive"):
        Reassembler(timeout_s=0)
    with pytest.raises(ValueError, match="positive"):
        Reassembler(max_parts=256)
    with pytest.raises(ValueError, match="positive"):
        Reassembler(max_bytes=0)


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=600), st.integers(1, 50), st.randoms(use_true_random=False))
def test_reassembly_property(message: bytes, size: int, rng: random.Random) -> None:
    """Parts shuffled and partly duplicated reassemble to the original exactly once."""
    parts = parts_of(message, ref=9, size=size)
    if len(parts) > 255:
        return
    delivered = parts + rng.sample(parts, k=len(parts) // 3)
    rng.shuffle(delivered)
    reassembler = Reassembler()
    results = [reassembler.add(("src", "dst"), part, now=0.0) for part in delivered]
    completed = [r for r in results if r is not None]
    # A duplicate arriving after completion starts a new group, which never completes.
    assert len(completed) == 1
    assert b"".join(completed[0]) == message


def test_a_discarded_part_leaves_its_group_as_it_was() -> None:
    """discard() takes a part back out (refused after all): the group waits for it again,
    holds() says so, its bytes no longer count, and a group left empty is gone."""
    reassembler = Reassembler(max_bytes=10)
    first, second = ConcatPart(7, 2, 1, b"12345"), ConcatPart(7, 2, 2, b"67890")
    assert reassembler.add("k", first, now=0.0) is None
    assert reassembler.holds("k", first)
    assert not reassembler.holds("k", second)
    reassembler.discard("k", first)
    assert not reassembler.holds("k", first)
    assert len(reassembler) == 0
    assert reassembler.add("k", second, now=1.0) is None
    assert reassembler.add("k", first, now=2.0) == [b"12345", b"67890"]  # all 10 bytes fit
    assert reassembler.expire(now=100.0) == []
