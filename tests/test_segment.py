"""Segmentation: capacities, cut points, UDH/SAR/payload forms, caps and reference allocation."""

from __future__ import annotations

import itertools
import random

import pytest
import smpplib.consts
import smpplib.gsm
from hypothesis import given, settings
from hypothesis import strategies as st

from smppd.pdu.errors import EncodeError, SegmentLimitError, TextError
from smppd.pdu.national import NationalLanguage, Shift, decode
from smppd.pdu.segment import (
    ConcatMethod,
    Reference,
    ReferenceAllocator,
    SarInfo,
    Segment,
    capacity,
    count_segments,
    national_shift,
    split_binary,
    split_message,
)
from smppd.pdu.text import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    Alphabet,
    choose_alphabet,
    decode_text,
    encode_gsm7,
    unpack_septets,
)
from smppd.pdu.udh import concat_info, parse_udh, septet_fill_bits

GSM_CHARS = sorted(set(GSM7_BASIC.replace("\x1b", "")) | set(GSM7_EXTENSION))
DATA_CODING = {Alphabet.GSM7: 0, Alphabet.UCS2: 8, Alphabet.LATIN1: 3}


def split(
    text: str,
    alphabet: Alphabet,
    method: ConcatMethod = ConcatMethod.UDH8,
    *,
    ref: Reference = 42,
    max_segments: int = 255,
    packed: bool = False,
) -> list[Segment]:
    return split_message(
        text,
        alphabet=alphabet,
        data_coding=DATA_CODING[alphabet],
        method=method,
        ref=ref,
        max_segments=max_segments,
        packed=packed,
    )


def bodies(segments: list[Segment]) -> list[bytes]:
    """The user data of each segment, UDH stripped."""
    result = []
    for segment in segments:
        if segment.message_payload is not None:
            result.append(segment.message_payload)
        elif segment.esm_class_udhi:
            result.append(parse_udh(segment.short_message)[1])
        else:
            result.append(segment.short_message)
    return result


def rejoin(segments: list[Segment], alphabet: Alphabet) -> str:
    return decode_text(b"".join(bodies(segments)), DATA_CODING[alphabet])


# --- capacities ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alphabet", "single", "udh8", "udh16"),
    [
        (Alphabet.GSM7, 160, 153, 152),
        (Alphabet.UCS2, 70, 67, 66),
        (Alphabet.LATIN1, 140, 134, 133),
        (Alphabet.BINARY, 140, 134, 133),
    ],
)
def test_capacities(alphabet: Alphabet, single: int, udh8: int, udh16: int) -> None:
    """One short message holds 160 septets / 70 units / 140 octets, less a 6 or 7 octet UDH."""
    assert capacity(alphabet) == single
    assert capacity(alphabet, 6) == udh8
    assert capacity(alphabet, 7) == udh16


# --- single segments ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(ConcatMethod))
@pytest.mark.parametrize(("alphabet", "length"), [(Alphabet.GSM7, 160), (Alphabet.UCS2, 70)])
def test_full_single_segment_has_no_udh(
    alphabet: Alphabet, length: int, method: ConcatMethod
) -> None:
    """Exactly 160 GSM or 70 UCS-2 characters go as one plain short_message, whatever the method."""
    text = ("x" if alphabet is Alphabet.GSM7 else "ж") * length
    (segment,) = split(text, alphabet, method)
    assert segment == Segment(
        short_message=text.encode("ascii" if alphabet is Alphabet.GSM7 else "utf-16-be"),
        esm_class_udhi=False,
        data_coding=DATA_CODING[alphabet],
    )
    assert count_segments(text, alphabet, method) == 1


def test_empty_text_is_one_empty_segment() -> None:
    """An empty message is one segment with an empty short_message."""
    assert split("", Alphabet.GSM7) == [Segment(b"", esm_class_udhi=False, data_coding=0)]


def test_escapes_count_two_septets() -> None:
    """159 characters with one '€' are 160 septets: still one segment; one more makes two."""
    assert count_segments("a" * 158 + "€", Alphabet.GSM7, ConcatMethod.UDH8) == 1
    assert count_segments("a" * 159 + "€", Alphabet.GSM7, ConcatMethod.UDH8) == 2


# --- UDH segments -------------------------------------------------------------------------------


def test_161_gsm_characters_udh8() -> None:
    """161 GSM characters split 153 + 8 with 8-bit reference UDHs."""
    segments = split("a" * 161, Alphabet.GSM7, ref=0xAB)
    assert [s.short_message[:6].hex() for s in segments] == ["050003ab0201", "050003ab0202"]
    assert [len(b) for b in bodies(segments)] == [153, 8]
    assert all(s.esm_class_udhi and s.sar is None and s.data_coding == 0 for s in segments)


def test_161_gsm_characters_udh16() -> None:
    """With a 16-bit reference the UDH is 7 octets and the first part 152 septets."""
    segments = split("a" * 161, Alphabet.GSM7, ConcatMethod.UDH16, ref=0x1234)
    assert [s.short_message[:7].hex() for s in segments] == ["06080412340201", "06080412340202"]
    assert [len(b) for b in bodies(segments)] == [152, 9]


def test_71_ucs2_characters() -> None:
    """71 UCS-2 characters split 67 + 4 (UDH8) or 66 + 5 (UDH16)."""
    assert [len(b) // 2 for b in bodies(split("ж" * 71, Alphabet.UCS2))] == [67, 4]
    udh16 = split("ж" * 71, Alphabet.UCS2, ConcatMethod.UDH16)
    assert [len(b) // 2 for b in bodies(udh16)] == [66, 5]
    assert all(len(s.short_message) <= 140 for s in udh16)


def test_escape_at_boundary_moves_to_next_segment() -> None:
    """152 plain characters then '€': the escape pair does not straddle the 153-septet cut."""
    text = "a" * 152 + "€" + "b" * 10
    segments = split(text, Alphabet.GSM7)
    first, second = bodies(segments)
    assert first == b"a" * 152
    assert second == b"\x1be" + b"b" * 10
    assert rejoin(segments, Alphabet.GSM7) == text


def test_escape_just_fits_at_boundary() -> None:
    """151 plain characters then '€' fill 153 septets exactly."""
    first, second = bodies(split("a" * 151 + "€" + "b" * 10, Alphabet.GSM7))
    assert first == b"a" * 151 + b"\x1be"
    assert second == b"b" * 10


def test_emoji_straddling_boundary_moves_to_next_segment() -> None:
    """An emoji at units 67-68 goes whole into the second segment, never a lone surrogate."""
    text = "ж" * 66 + "😀" + "ж" * 10
    segments = split(text, Alphabet.UCS2)
    first, second = bodies(segments)
    assert len(first) == 66 * 2
    assert second.startswith("😀".encode("utf-16-be"))
    assert rejoin(segments, Alphabet.UCS2) == text


@pytest.mark.parametrize(
    ("cluster", "name"),
    [
        ("🇬🇧", "a flag: two regional indicators"),
        ("👩\u200d👧", "a ZWJ sequence"),
        ("e\u0301", "a letter and its combining accent"),
        ("👍🏽", "an emoji and its skin tone"),
        ("❤\ufe0f", "a symbol and its variation selector"),
    ],
)
def test_a_user_visible_character_is_not_split_across_parts(cluster: str, name: str) -> None:
    """Wherever the cut would fall inside the cluster, the whole of it goes to the next part:
    a handset that shows each part alone shows no half flag or accent on nothing."""
    for pad in range(67 - len(cluster.encode("utf-16-be")) // 2 + 1, 67 + 1):
        text = "ж" * pad + cluster + "ж" * 20
        segments = split(text, Alphabet.UCS2)
        parts = [part.decode("utf-16-be") for part in bodies(segments)]
        assert "".join(parts) == text
        cuts = list(itertools.accumulate(len(part) for part in parts))
        assert not [c for c in cuts if pad < c < pad + len(cluster)], (name, pad)


def test_flags_in_a_row_are_cut_between_pairs() -> None:
    """A run of regional indicators pairs up from its start: the cut falls between flags."""
    text = "ж" * 60 + "🇬🇧🇫🇷🇩🇪" + "ж" * 20
    parts = [p.decode("utf-16-be") for p in bodies(split(text, Alphabet.UCS2))]
    assert parts[0].endswith("🇬🇧")
    assert parts[1].startswith("🇫🇷🇩🇪")


def test_a_long_run_of_flags_is_cut_between_pairs_in_every_part() -> None:
    """Each cut counts the run's pairs from its segment's start (a cut between flags), not
    from the text's: every part holds whole flags, and 8,000 of them are cut at once (counted
    from the text's start, each cut scanned the run anew: quadratic)."""
    text = "ж" + "🇬🇧" * 4000
    parts = [p.decode("utf-16-be") for p in bodies(split(text, Alphabet.UCS2, max_segments=255))]
    assert "".join(parts) == text
    for part in parts[1:]:
        assert len(part) % 2 == 0
        assert part.startswith("🇬🇧")
    with pytest.raises(SegmentLimitError):
        split("🇬🇧" * 32_000, Alphabet.UCS2, max_segments=10)


def test_emoji_counts_two_units() -> None:
    """35 emoji are 70 units: one segment; 36 need two."""
    assert count_segments("😀" * 35, Alphabet.UCS2, ConcatMethod.UDH8) == 1
    assert count_segments("😀" * 36, Alphabet.UCS2, ConcatMethod.UDH8) == 2


# --- SAR and payload ----------------------------------------------------------------------------


def test_sar_segments() -> None:
    """SAR carries no UDH; the TLVs number the parts, each sized for the SMSC's own UDH."""
    segments = split("a" * 161, Alphabet.GSM7, ConcatMethod.SAR, ref=0xBE)
    assert [s.sar for s in segments] == [SarInfo(0xBE, 2, 1), SarInfo(0xBE, 2, 2)]
    assert [len(s.short_message) for s in segments] == [153, 8]
    # As many parts as UDH8 takes: 306 septets are two, 67 x 2 UTF-16 units two.
    assert len(split("a" * 306, Alphabet.GSM7, ConcatMethod.SAR, ref=1)) == 2
    assert len(split("ж" * 134, Alphabet.UCS2, ConcatMethod.SAR, ref=1)) == 2
    assert not any(s.esm_class_udhi for s in segments)
    assert all(s.message_payload is None for s in segments)


def test_payload_segment() -> None:
    """PAYLOAD puts the whole long message in message_payload and none in short_message."""
    text = "ж" * 500
    (segment,) = split(text, Alphabet.UCS2, ConcatMethod.PAYLOAD)
    assert segment.short_message == b""
    assert segment.message_payload == text.encode("utf-16-be")
    assert not segment.esm_class_udhi
    assert segment.sar is None
    # The count is what the air carries once the SMSC splits it.
    assert count_segments(text, Alphabet.UCS2, ConcatMethod.PAYLOAD) == 8


def test_payload_limit_is_the_air_part_count() -> None:
    """A payload the SMSC would need more than 255 parts for is refused (before 64 KiB)."""
    data = b"\x00" * (134 * 255)
    (segment,) = split_binary(
        data, data_coding=4, method=ConcatMethod.PAYLOAD, ref=0, max_segments=255
    )
    assert segment.message_payload == data
    with pytest.raises(SegmentLimitError, match="needs 256 segments"):
        split_binary(
            data + b"\x00", data_coding=4, method=ConcatMethod.PAYLOAD, ref=0, max_segments=255
        )


def test_segment_never_carries_both_bodies() -> None:
    """A segment with message_payload has an empty short_message."""
    with pytest.raises(ValueError, match="not both"):
        Segment(b"x", esm_class_udhi=False, data_coding=0, message_payload=b"y")


# --- caps and argument checks -------------------------------------------------------------------


def test_max_segments() -> None:
    """Needing more segments than the cap is an error naming both numbers."""
    text = "a" * (153 * 3 + 1)
    assert len(split(text, Alphabet.GSM7, max_segments=4)) == 4
    with pytest.raises(SegmentLimitError, match="needs 4 segments; the cap is 3"):
        split(text, Alphabet.GSM7, max_segments=3)
    with pytest.raises(SegmentLimitError, match="needs 4 segments; the cap is 3"):
        split(text, Alphabet.GSM7, ConcatMethod.PAYLOAD, max_segments=3)


def test_concatenation_cannot_number_past_255() -> None:
    """A UDH numbers at most 255 parts, whatever the configured cap."""
    with pytest.raises(SegmentLimitError, match="needs 256 segments; the cap is 255"):
        split("a" * (153 * 256), Alphabet.GSM7, max_segments=1000)


def test_reference_range_checked() -> None:
    """An 8-bit UDH cannot carry a reference above 255; 16-bit forms take up to 65535."""
    with pytest.raises(EncodeError, match=r"0\.\.255"):
        split("a" * 161, Alphabet.GSM7, ref=256)
    assert split("a" * 161, Alphabet.GSM7, ConcatMethod.UDH16, ref=0xFFFF)
    with pytest.raises(EncodeError, match=r"0\.\.65535"):
        split("a" * 161, Alphabet.GSM7, ConcatMethod.UDH16, ref=0x10000)
    with pytest.raises(EncodeError, match=r"0\.\.255"):  # parts are cut for an 8-bit one
        split("a" * 161, Alphabet.GSM7, ConcatMethod.SAR, ref=256)


def test_a_reference_is_allocated_only_for_a_message_that_needs_one() -> None:
    """A function given as the reference is called once for a long message, never for a short
    one or a payload (which carry none)."""
    calls: list[int] = []

    def allocate() -> int:
        calls.append(len(calls))
        return 200 + len(calls)

    assert [s.short_message for s in split("hi", Alphabet.GSM7, ref=allocate)] == [b"hi"]
    assert split("a" * 161, Alphabet.GSM7, ConcatMethod.PAYLOAD, ref=allocate)
    assert calls == []
    parts = split("a" * 161, Alphabet.GSM7, ref=allocate)
    assert calls == [0]
    assert [p.short_message[:6] for p in parts] == [
        bytes([5, 0, 3, 201, 2, 1]),
        bytes([5, 0, 3, 201, 2, 2]),
    ]


def test_text_not_in_alphabet() -> None:
    """Text the alphabet cannot carry is refused, never sent with '?'."""
    with pytest.raises(TextError, match="index 3"):
        split("abc😀", Alphabet.GSM7)
    with pytest.raises(TextError):
        count_segments("abc😀", Alphabet.LATIN1, ConcatMethod.UDH8)


def test_packing_only_for_gsm() -> None:
    """Only septets can be packed."""
    with pytest.raises(ValueError, match="GSM"):
        split("ж", Alphabet.UCS2, packed=True)


# --- packed GSM ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "udh_octets"), [(ConcatMethod.UDH8, 6), (ConcatMethod.UDH16, 7)]
)
def test_packed_segments_fill_140_octets(method: ConcatMethod, udh_octets: int) -> None:
    """Packed parts use the whole 140 octets, septets aligned after the UDH's fill bits."""
    text = "".join(chr(ord("a") + i % 26) for i in range(400))
    segments = split(text, Alphabet.GSM7, method, packed=True)
    per_part = capacity(Alphabet.GSM7, udh_octets)
    assert len(segments) == 3
    for index, segment in enumerate(segments[:2]):
        assert len(segment.short_message) == 140
        body = parse_udh(segment.short_message)[1]
        septets = unpack_septets(body, per_part, septet_fill_bits(udh_octets))
        assert septets == encode_gsm7(text[index * per_part : (index + 1) * per_part])


def test_packed_single_segment() -> None:
    """160 septets pack into 140 octets with no UDH."""
    (segment,) = split("a" * 160, Alphabet.GSM7, packed=True)
    assert len(segment.short_message) == 140
    assert unpack_septets(segment.short_message, 160) == b"a" * 160


@pytest.mark.parametrize("text", ["Code 12", "x" * 15, "a" * 159])
def test_seven_spare_bits_carry_cr_not_an_at_sign(text: str) -> None:
    """8n-1 septets leave 7 spare bits: zeros there read as a trailing '@' wherever the count
    comes from the length (SMPP carries none), so they are a CR (TS 23.038 6.1.2.3.1)."""
    (segment,) = split(text, Alphabet.GSM7, packed=True)
    assert len(segment.short_message) == len(text) + 1 - (len(text) + 1) // 8
    readable = len(segment.short_message) * 8 // 7
    assert unpack_septets(segment.short_message, readable) == encode_gsm7(text) + b"\r"


def test_a_udh_part_s_spare_bits_carry_cr_too() -> None:
    """A UDH8 part cut back to 152 septets (before an escape) has 7 spare bits after them."""
    text = "a" * 152 + "€" * 10
    first = split(text, Alphabet.GSM7, ConcatMethod.UDH8, packed=True)[0]
    body = parse_udh(first.short_message)[1]
    septets = unpack_septets(body, (len(body) * 8 - 1) // 7, 1)
    assert septets == b"a" * 152 + b"\r"


# --- national language tables -------------------------------------------------------------------

TR_SINGLE = Shift(single=NationalLanguage.TURKISH)


def test_a_single_part_in_national_tables_has_a_udh_of_its_own() -> None:
    """The tables' IE needs a UDH (UDHL 3): 155 septets fit, packed into 140 octets after
    the UDH and its 5 fill bits; 156 make two parts of at most 149."""
    text = "ş" + "a" * 153  # 155 septets: the escape and its code, then 153
    (segment,) = split_message(
        text, alphabet=Alphabet.GSM7, data_coding=0, method=ConcatMethod.UDH8, ref=1,
        max_segments=10, packed=True, shift=TR_SINGLE,
    )  # fmt: skip
    assert segment.esm_class_udhi
    assert segment.short_message[:4] == bytes.fromhex("03240101")
    assert len(segment.short_message) == 140
    septets = unpack_septets(segment.short_message[4:], 155, septet_fill_bits(4))
    assert decode(septets, TR_SINGLE) == text
    longer = count_segments(text + "a", Alphabet.GSM7, ConcatMethod.UDH8, TR_SINGLE)
    assert longer == 2 == count_segments("a" * 298, Alphabet.GSM7, ConcatMethod.UDH8, TR_SINGLE)
    assert count_segments("a" * 299, Alphabet.GSM7, ConcatMethod.UDH8, TR_SINGLE) == 3


@pytest.mark.parametrize("method", [ConcatMethod.SAR, ConcatMethod.PAYLOAD])
def test_national_tables_need_a_udh_method(method: ConcatMethod) -> None:
    with pytest.raises(ValueError, match="udh8 or udh16"):
        national_shift("ş", NationalLanguage.TURKISH, method)
    with pytest.raises(ValueError, match="udh8 or udh16"):
        split_message(
            "ş", alphabet=Alphabet.GSM7, data_coding=0, method=method, ref=1, max_segments=10,
            shift=TR_SINGLE,
        )  # fmt: skip


# --- properties ---------------------------------------------------------------------------------

gsm_text = st.text(alphabet=st.sampled_from(GSM_CHARS), max_size=700)
emoji = st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF)
any_text = st.lists(st.one_of(st.characters(codec="utf-8"), emoji), max_size=400).map("".join)
methods = st.sampled_from([ConcatMethod.UDH8, ConcatMethod.UDH16, ConcatMethod.SAR])


def check_split(text: str, alphabet: Alphabet, method: ConcatMethod, ref: int) -> None:
    segments = split(text, alphabet, method, ref=ref)
    assert rejoin(segments, alphabet) == text
    assert len(segments) == count_segments(text, alphabet, method)
    for seq, segment in enumerate(segments, start=1):
        assert len(segment.short_message) <= 140
        body = bodies([segment])[0]
        if alphabet is Alphabet.GSM7:
            # Escapes are never the last septet (the encoder emits no ESC ESC).
            assert not body.endswith(b"\x1b")
        else:
            assert len(body) % 2 == 0
            assert not (len(body) >= 2 and 0xD8 <= body[-2] <= 0xDB)
        if len(segments) == 1:
            assert not segment.esm_class_udhi
            assert segment.sar is None
        elif method is ConcatMethod.SAR:
            assert segment.sar == SarInfo(ref, len(segments), seq)
        else:
            info = concat_info(parse_udh(segment.short_message)[0])
            assert info is not None
            assert (info.ref, info.total, info.seq) == (ref, len(segments), seq)


@settings(max_examples=200)
@given(gsm_text, methods, st.integers(0, 255))
def test_gsm_split_rejoins(text: str, method: ConcatMethod, ref: int) -> None:
    """GSM text splits into parts within 140 octets, no escape split, rejoining to the text."""
    check_split(text, Alphabet.GSM7, method, ref)


@settings(max_examples=200)
@given(any_text, methods, st.integers(0, 255))
def test_unicode_split_rejoins(text: str, method: ConcatMethod, ref: int) -> None:
    """Any text (emoji included) in the chosen alphabet splits and rejoins losslessly."""
    check_split(text, choose_alphabet(text), method, ref)


@settings(max_examples=200)
@given(gsm_text, st.sampled_from([ConcatMethod.UDH8, ConcatMethod.UDH16]))
def test_packed_split_rejoins(text: str, method: ConcatMethod) -> None:
    """Packed parts unpack (with fill bits) and rejoin to the text."""
    segments = split(text, Alphabet.GSM7, method, packed=True)
    encoded = encode_gsm7(text)
    septets = []
    if len(segments) == 1:
        septets.append(unpack_septets(segments[0].short_message, len(encoded)))
    else:
        udh_octets = 6 if method is ConcatMethod.UDH8 else 7
        left = len(encoded)
        for segment in segments:
            assert len(segment.short_message) <= 140
            body = parse_udh(segment.short_message)[1]
            # Unpacking cannot tell 7n trailing bits from a septet: count what fits, minus the rest.
            count = min(left, (len(body) * 8 - septet_fill_bits(udh_octets)) // 7)
            septets.append(unpack_septets(body, count, septet_fill_bits(udh_octets)))
            left -= count
    assert b"".join(septets) == encoded


@settings(max_examples=200)
@given(st.binary(max_size=1000), st.sampled_from(list(ConcatMethod)))
def test_binary_split_rejoins(data: bytes, method: ConcatMethod) -> None:
    """Octets split anywhere within 140 octets per part and rejoin exactly."""
    segments = split_binary(data, data_coding=4, method=method, ref=1, max_segments=255)
    assert b"".join(bodies(segments)) == data
    assert all(len(s.short_message) <= 140 and s.data_coding == 4 for s in segments)


# --- cross-check with smpplib -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("a" * 160, smpplib.consts.SMPP_ENCODING_DEFAULT),
        ("a" * 161, smpplib.consts.SMPP_ENCODING_DEFAULT),
        ("Hello world! " * 40, smpplib.consts.SMPP_ENCODING_DEFAULT),
        ("{x} " * 70, smpplib.consts.SMPP_ENCODING_DEFAULT),  # escapes away from boundaries
        ("ж" * 70, smpplib.consts.SMPP_ENCODING_DEFAULT),  # falls back to UCS-2
        ("ж" * 71, smpplib.consts.SMPP_ENCODING_DEFAULT),
        ("Привет, мир! " * 30, smpplib.consts.SMPP_ENCODING_DEFAULT),
        ("façade " * 50, smpplib.consts.SMPP_ENCODING_ISO88591),
    ],
)
def test_segment_counts_agree_with_smpplib(text: str, encoding: int) -> None:
    """Where no escape or surrogate pair sits on a cut, smpplib makes as many UDH8 parts."""
    parts, smpplib_encoding, _ = smpplib.gsm.make_parts(text, encoding)
    alphabet = {0: Alphabet.GSM7, 3: Alphabet.LATIN1, 8: Alphabet.UCS2}[smpplib_encoding]
    if encoding == smpplib.consts.SMPP_ENCODING_DEFAULT:
        assert alphabet is choose_alphabet(text)
    assert count_segments(text, alphabet, ConcatMethod.UDH8) == len(parts)


def test_smpplib_splits_escape_pairs_and_we_do_not() -> None:
    """At an escape on the cut smpplib splits the pair; we move it and may need a part more."""
    text = "a" * 152 + "€" + "a" * 152
    parts, _, _ = smpplib.gsm.make_parts(text)
    assert parts[0].endswith(b"\x1b")
    assert len(parts) == 2
    assert count_segments(text, Alphabet.GSM7, ConcatMethod.UDH8) == 3


# --- reference allocation -----------------------------------------------------------------------


def test_references_count_up_per_destination_and_wrap() -> None:
    """Each destination counts up from its start, wrapping at 256 or 65536."""
    allocator = ReferenceAllocator(rng=random.Random(1))
    first = allocator.next("+15550001", ref16=True)
    assert allocator.next("+15550001", ref16=True) == (first + 1) & 0xFFFF
    other = allocator.next("+15550002", ref16=False)
    assert allocator.next("+15550002", ref16=False) == (other + 1) & 0xFF
    refs = [allocator.next("+15550003", ref16=False) for _ in range(257)]
    assert all((b - a) % 256 == 1 for a, b in itertools.pairwise(refs))
    assert all(0 <= ref <= 0xFF for ref in refs)
    assert len(set(refs[:256])) == 256
    refs16 = [allocator.next("+15550004", ref16=True) for _ in range(65537)]
    assert refs16[-1] == refs16[0]
    assert len(set(refs16[:65536])) == 65536


def test_reference_memory_is_bounded() -> None:
    """Only the most recently used destinations are remembered."""
    allocator = ReferenceAllocator(max_destinations=2, rng=random.Random(7))
    a = allocator.next("a", ref16=True)
    allocator.next("b", ref16=True)
    assert allocator.next("a", ref16=True) == (a + 1) & 0xFFFF  # "a" is now the most recent
    allocator.next("c", ref16=True)  # evicts "b"
    assert len(allocator) == 2
    assert allocator.next("a", ref16=True) == (a + 2) & 0xFFFF
    with pytest.raises(ValueError, match="positive"):
        ReferenceAllocator(max_destinations=0)


def test_reference_starts_are_seeded() -> None:
    """A seeded allocator is deterministic."""
    first = ReferenceAllocator(rng=random.Random(3))
    second = ReferenceAllocator(rng=random.Random(3))
    assert [first.next(d, ref16=True) for d in "abc"] == [second.next(d, ref16=True) for d in "abc"]
