"""GSM 03.38, UCS-2, Latin-1, IA5 and binary text, septet packing and the alphabet decision."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smppd.pdu.errors import DecodeError, EncodeError, TextError
from smppd.pdu.text import (
    GSM7_BASIC,
    GSM7_ESCAPE,
    GSM7_EXTENSION,
    Alphabet,
    DataCoding,
    choose_alphabet,
    data_coding_for,
    decode_gsm7,
    decode_text,
    decode_ucs2,
    encode_gsm7,
    encode_text,
    encode_ucs2,
    gsm7_length,
    is_gsm7,
    latin1_octets,
    pack_septets,
    plan_encoding,
    require_encodable,
    ucs2_length,
    unpack_septets,
)

GSM_CHARS = sorted(set(GSM7_BASIC.replace("\x1b", "")) | set(GSM7_EXTENSION))
gsm_text = st.text(alphabet=st.sampled_from(GSM_CHARS), max_size=400)
septets = st.binary(max_size=300).map(lambda data: bytes(octet & 0x7F for octet in data))


def reference_pack(values: bytes, fill_bits: int) -> bytes:
    """Bit by bit, least significant first, as drawn in 23.038 6.1.2.1.1."""
    bits = [0] * fill_bits
    for value in values:
        bits.extend((value >> index) & 1 for index in range(7))
    bits.extend([0] * (-len(bits) % 8))
    return bytes(
        sum(bit << index for index, bit in enumerate(bits[start : start + 8]))
        for start in range(0, len(bits), 8)
    )


# --- GSM 03.38 tables ---------------------------------------------------------------------------


def test_basic_table_has_128_distinct_entries() -> None:
    """The basic table maps each of the 128 septets to a different character, ESC at 0x1B."""
    assert len(GSM7_BASIC) == 128
    assert len(set(GSM7_BASIC)) == 128
    assert GSM7_BASIC[GSM7_ESCAPE] == "\x1b"
    assert (GSM7_BASIC[0x00], GSM7_BASIC[0x02], GSM7_BASIC[0x24]) == ("@", "$", "¤")
    assert (GSM7_BASIC[0x40], GSM7_BASIC[0x5F], GSM7_BASIC[0x60]) == ("¡", "§", "¿")


@pytest.mark.parametrize("septet", [s for s in range(128) if s != GSM7_ESCAPE])
def test_every_basic_character_round_trips(septet: int) -> None:
    """Each basic-table character encodes to its septet and decodes back."""
    char = GSM7_BASIC[septet]
    assert encode_gsm7(char) == bytes([septet])
    assert decode_gsm7(bytes([septet])) == char
    assert is_gsm7(char)
    assert gsm7_length(char) == 1


@pytest.mark.parametrize(
    ("char", "code"),
    [("\x0c", 0x0A), ("^", 0x14), ("{", 0x28), ("}", 0x29), ("\\", 0x2F), ("[", 0x3C),
     ("~", 0x3D), ("]", 0x3E), ("|", 0x40), ("€", 0x65)],
)  # fmt: skip
def test_extension_characters_round_trip(char: str, code: int) -> None:
    """Extension characters are ESC plus their code, count two septets and decode back."""
    assert GSM7_EXTENSION[char] == code
    assert encode_gsm7(char) == bytes([0x1B, code])
    assert decode_gsm7(bytes([0x1B, code])) == char
    assert gsm7_length(char) == 2
    assert is_gsm7(char)


def test_mixed_text_encodes_known_bytes() -> None:
    """ASCII, accented and extension characters mix in one encoding."""
    assert encode_gsm7("Hi [€5] é") == b"Hi \x1b<\x1be5\x1b> \x05"
    assert encode_gsm7("a@$_") == b"a\x00\x02\x11"
    assert gsm7_length("Hi [€5] é") == 12
    assert gsm7_length("") == 0


@pytest.mark.parametrize("text", ["`", "ç", "á", "\t", "\x1b", "😀", "Ж", "\x00", "Ä\x7f"])
def test_characters_outside_gsm_are_refused(text: str) -> None:
    """Characters in neither table are not GSM (ESC itself included) and never become '?'."""
    assert not is_gsm7(text)
    with pytest.raises(TextError):
        encode_gsm7(text)


def test_text_error_names_position_not_text() -> None:
    """The error names the offending character's index and code point, not the message."""
    with pytest.raises(TextError) as caught:
        encode_gsm7("secret code 12`34")
    assert "index 14" in str(caught.value)
    assert "U+0060" in str(caught.value)
    assert "secret" not in str(caught.value)
    with pytest.raises(TextError, match="index 3"):
        encode_gsm7("€€€😀")


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"\x1bA", "A"),  # undefined escape: the basic-table character
        (b"\x1b\x1bA", " A"),  # ESC ESC: a space, and the next septet is plain
        (b"ab\x1b", "ab "),  # trailing ESC: a space
        (b"\x1b\x0d", "\r"),
        (b"a\x80\xff", "a\ufffd\ufffd"),  # not septets
        (b"\x1b\x80", "\ufffd"),
    ],
)
def test_decode_gsm7_is_tolerant(data: bytes, text: str) -> None:
    """Malformed GSM input decodes per 23.038 6.2.1.1 rather than raising."""
    assert decode_gsm7(data) == text


@settings(max_examples=200)
@given(gsm_text)
def test_gsm7_round_trip(text: str) -> None:
    """Any GSM text encodes to septets and decodes back; the length counts escapes twice."""
    encoded = encode_gsm7(text)
    assert decode_gsm7(encoded) == text
    assert encoded.isascii()
    assert gsm7_length(text) == len(encoded) == len(text) + sum(c in GSM7_EXTENSION for c in text)
    assert is_gsm7(text)


@settings(max_examples=200)
@given(st.text(max_size=50))
def test_is_gsm7_agrees_with_encoder(text: str) -> None:
    """is_gsm7 is true exactly when encode_gsm7 succeeds."""
    try:
        encode_gsm7(text)
    except TextError:
        assert not is_gsm7(text)
    else:
        assert is_gsm7(text)


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_decode_gsm7_never_raises(data: bytes) -> None:
    """Any octets decode to some text."""
    assert isinstance(decode_gsm7(data), str)


# --- septet packing -----------------------------------------------------------------------------


def test_pack_known_vectors() -> None:
    """'hellohello' packs as in 23.038; 8 septets fill 7 octets; fill bits shift the septets."""
    assert pack_septets(encode_gsm7("hellohello")).hex() == "e8329bfd4697d9ec37"
    assert pack_septets(encode_gsm7("Hello")).hex() == "c8329bfd06"
    assert pack_septets(b"\x7f" * 8) == b"\xff" * 7
    # One fill bit, as after a 6-octet UDH: 0x06fd9b32e8 << 1.
    assert pack_septets(encode_gsm7("hello"), 1).hex() == "d06536fb0d"
    assert pack_septets(b"\x01", 6) == b"\x40\x00"
    assert pack_septets(b"") == b""


def test_pack_across_blocks() -> None:
    """Long inputs (as in a packed message_payload) pack and unpack past the 256-septet blocks."""
    values = bytes(index * 37 % 128 for index in range(1000))
    for fill_bits in (0, 3):
        packed = pack_septets(values, fill_bits)
        assert packed == reference_pack(values, fill_bits)
        assert unpack_septets(packed, len(values), fill_bits) == values


def test_unpack_known_vectors() -> None:
    """Unpacking inverts the known vectors, trailing bits ignored."""
    assert unpack_septets(bytes.fromhex("e8329bfd4697d9ec37"), 10) == b"hellohello"
    assert unpack_septets(bytes.fromhex("d06536fb0d"), 5, 1) == encode_gsm7("hello")
    assert unpack_septets(b"\xff" * 7, 8) == b"\x7f" * 8
    assert unpack_septets(b"\xff" * 7, 7) == b"\x7f" * 7


def test_unpack_too_short_is_a_decode_error() -> None:
    """Asking for more septets than the octets hold answers ESME_RINVMSGLEN."""
    with pytest.raises(DecodeError) as caught:
        unpack_septets(b"\x00" * 7, 9)
    assert caught.value.command_status == 0x00000001
    with pytest.raises(DecodeError):
        unpack_septets(b"\x00" * 7, 8, 1)


def test_pack_refuses_bad_input() -> None:
    """Octets above 0x7F are not septets; fill bits are 0..6."""
    with pytest.raises(EncodeError):
        pack_septets(b"\x80")
    with pytest.raises(ValueError, match="fill_bits"):
        pack_septets(b"a", 7)
    with pytest.raises(ValueError, match="fill_bits"):
        unpack_septets(b"a", 1, -1)


@settings(max_examples=200)
@given(septets, st.integers(0, 6))
def test_pack_matches_bitwise_reference_and_round_trips(values: bytes, fill_bits: int) -> None:
    """Packing equals the bit-by-bit definition, has the right length and unpacks back."""
    packed = pack_septets(values, fill_bits)
    assert packed == reference_pack(values, fill_bits)
    assert len(packed) == (7 * len(values) + fill_bits + 7) // 8
    assert unpack_septets(packed, len(values), fill_bits) == values


# --- UCS-2 --------------------------------------------------------------------------------------


def test_ucs2_surrogate_pairs() -> None:
    """An emoji is a surrogate pair: two units, four octets."""
    assert encode_ucs2("😀") == b"\xd8\x3d\xde\x00"
    assert ucs2_length("😀") == 2
    assert ucs2_length("a😀b") == 4
    assert ucs2_length("abc") == 3
    assert ucs2_length("Жж") == 2
    assert decode_ucs2(b"\x00a\xd8\x3d\xde\x00") == "a😀"


def test_ucs2_decode_is_tolerant() -> None:
    """A lone surrogate or an odd octet decodes to U+FFFD, never an exception."""
    assert decode_ucs2(b"\xd8\x3d\x00A") == "\ufffdA"
    assert decode_ucs2(b"\xde\x00") == "\ufffd"
    assert decode_ucs2(b"\x00A\x00") == "A\ufffd"


def test_ucs2_refuses_lone_surrogate_text() -> None:
    """A str holding a lone surrogate cannot be sent as UTF-16."""
    with pytest.raises(TextError, match="index 1"):
        encode_ucs2("a\ud83d")
    with pytest.raises(TextError):
        choose_alphabet("a\ud83db")


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_ucs2_round_trip(text: str) -> None:
    """Any text without lone surrogates round-trips through UCS-2 and counts its units."""
    encoded = encode_ucs2(text)
    assert decode_ucs2(encoded) == text
    assert ucs2_length(text) == len(encoded) // 2 == len(text) + sum(ord(c) > 0xFFFF for c in text)


# --- other alphabets ----------------------------------------------------------------------------


def test_latin1_ia5_and_binary() -> None:
    """Latin-1 and IA5 are their codecs; binary is characters U+0000-U+00FF as octets."""
    assert encode_text("café", Alphabet.LATIN1) == b"caf\xe9"
    assert encode_text("cafe", Alphabet.IA5) == b"cafe"
    assert encode_text("\x00\xff", Alphabet.BINARY) == b"\x00\xff"
    assert encode_text("€", Alphabet.GSM7) == b"\x1be"
    assert encode_text("€", Alphabet.UCS2) == b"\x20\xac"
    with pytest.raises(TextError, match="index 3"):
        encode_text("caf€", Alphabet.LATIN1)
    with pytest.raises(TextError, match="index 3"):
        encode_text("café", Alphabet.IA5)
    with pytest.raises(TextError, match="index 0"):
        encode_text("Ā", Alphabet.BINARY)


@pytest.mark.parametrize(
    ("text", "alphabet", "position"),
    [
        ("ab`", Alphabet.GSM7, 2),
        ("ab€", Alphabet.LATIN1, 2),
        ("aé", Alphabet.IA5, 1),
        ("x\udc00", Alphabet.UCS2, 1),
        ("ĀĀ", Alphabet.BINARY, 0),
    ],
)
def test_require_encodable_names_first_misfit(text: str, alphabet: Alphabet, position: int) -> None:
    """require_encodable raises on the first character the alphabet lacks."""
    with pytest.raises(TextError, match=f"index {position} "):
        require_encodable(text, alphabet)


@pytest.mark.parametrize("alphabet", list(Alphabet))
def test_require_encodable_passes_what_encodes(alphabet: Alphabet) -> None:
    """Text the alphabet carries passes the check."""
    require_encodable("Hello, world", alphabet)


# --- choosing the alphabet and data_coding ------------------------------------------------------


def test_data_coding_values() -> None:
    """The enum carries the SMPP v3.4 5.2.19 values."""
    assert DataCoding.SMSC_DEFAULT.value == 0
    assert DataCoding.IA5.value == 1
    assert DataCoding.OCTET_UNSPECIFIED.value == 2
    assert DataCoding.LATIN1.value == 3
    assert DataCoding.BINARY.value == 4
    assert DataCoding.UCS2.value == 8
    assert DataCoding.KS_C_5601.value == 0x0E


def test_choose_alphabet() -> None:
    """GSM7 when it fits, Latin-1 only when allowed, else UCS-2."""
    assert choose_alphabet("Hello [€]") is Alphabet.GSM7
    assert choose_alphabet("") is Alphabet.GSM7
    assert choose_alphabet("façade") is Alphabet.UCS2
    assert choose_alphabet("façade", allow_latin1=True) is Alphabet.LATIN1
    assert choose_alphabet("hi 😀", allow_latin1=True) is Alphabet.UCS2


def test_data_coding_for() -> None:
    """Each alphabet maps to its data_coding; GSM7 cannot be signalled when 0 means Latin-1."""
    assert data_coding_for(Alphabet.GSM7) == 0
    assert data_coding_for(Alphabet.LATIN1) == 3
    assert data_coding_for(Alphabet.LATIN1, gsm_as_default=False) == 0
    assert data_coding_for(Alphabet.UCS2) == 8
    assert data_coding_for(Alphabet.UCS2, gsm_as_default=False) == 8
    assert data_coding_for(Alphabet.BINARY) == 4
    assert data_coding_for(Alphabet.IA5) == 1
    with pytest.raises(TextError):
        data_coding_for(Alphabet.GSM7, gsm_as_default=False)


@pytest.mark.parametrize(
    ("text", "default_is_latin1", "allow_latin1", "expected"),
    [
        ("Hello", False, False, (Alphabet.GSM7, 0)),
        ("Hello €", False, False, (Alphabet.GSM7, 0)),
        ("façade", False, False, (Alphabet.UCS2, 8)),
        ("façade", False, True, (Alphabet.LATIN1, 3)),
        ("😀", False, True, (Alphabet.UCS2, 8)),
        # A Latin-1 default carrier: written in Latin-1, counted as the GSM the air carries.
        ("Hello {x}", True, False, (Alphabet.GSM7, 0)),
        ("Hello {x}", True, True, (Alphabet.GSM7, 0)),
        ("déjà vu", True, False, (Alphabet.GSM7, 0)),  # é and à are in both
        ("façade", True, False, (Alphabet.UCS2, 8)),  # ç is Latin-1 but not GSM
        ("Hello €", True, False, (Alphabet.UCS2, 8)),  # GSM but not Latin-1
        ("ΔΣ", True, False, (Alphabet.UCS2, 8)),
    ],
)
def test_plan_encoding(
    text: str, default_is_latin1: bool, allow_latin1: bool, expected: tuple[Alphabet, int]
) -> None:
    """The plan follows the carrier's meaning of data_coding 0."""
    plan = plan_encoding(text, default_is_latin1=default_is_latin1, allow_latin1=allow_latin1)
    assert plan == expected


def test_plan_encoding_forced() -> None:
    """A forced alphabet is used when it fits and refused with TextError when not."""
    assert plan_encoding("Hi", default_is_latin1=False, force=Alphabet.UCS2) == (Alphabet.UCS2, 8)
    # Latin-1 asked of a Latin-1 default carrier: its data_coding 0, counted as GSM on the air.
    assert plan_encoding("Hi", default_is_latin1=True, force=Alphabet.LATIN1) == (
        Alphabet.GSM7,
        0,
    )
    with pytest.raises(TextError, match="index 2"):
        plan_encoding("Hi😀", default_is_latin1=False, force=Alphabet.GSM7)
    assert plan_encoding("Hi", default_is_latin1=True, force=Alphabet.GSM7) == (
        Alphabet.GSM7,
        0,
    )
    with pytest.raises(TextError, match="index 3"):  # GSM, but not written in Latin-1
        plan_encoding("Hi €", default_is_latin1=True, force=Alphabet.GSM7)
    with pytest.raises(TextError):
        plan_encoding("a\ud800", default_is_latin1=True)


@settings(max_examples=200)
@given(st.text(max_size=100), st.booleans(), st.booleans())
def test_plan_encoding_round_trips(text: str, default_is_latin1: bool, allow_latin1: bool) -> None:
    """Whatever the plan, the text encodes and decodes back through its data_coding."""
    alphabet, data_coding = plan_encoding(
        text, default_is_latin1=default_is_latin1, allow_latin1=allow_latin1
    )
    default = Alphabet.LATIN1 if default_is_latin1 else Alphabet.GSM7
    written = (
        Alphabet.LATIN1
        if latin1_octets(alphabet, default_is_latin1=default_is_latin1)
        else alphabet
    )
    encoded = encode_text(text, written)
    assert decode_text(encoded, data_coding, default_alphabet=default) == text


# --- decoding by data_coding --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "data_coding", "default", "text"),
    [
        (b"\x1be\x00", 0, Alphabet.GSM7, "€@"),
        (b"caf\xe9", 0, Alphabet.LATIN1, "café"),
        (b"abc", 0, Alphabet.IA5, "abc"),
        (b"ab\xe9", 1, Alphabet.GSM7, "ab\ufffd"),
        (b"caf\xe9", 3, Alphabet.GSM7, "café"),
        (b"\x00\xff\x1b", 2, Alphabet.GSM7, "\x00\xff\x1b"),  # octets pass through
        (b"\x00\xff\x1b", 4, Alphabet.GSM7, "\x00\xff\x1b"),
        (b"\xd8\x3d\xde\x00", 8, Alphabet.GSM7, "😀"),
        (b"\xb6", 6, Alphabet.GSM7, "Ж"),
        (b"\xe0", 7, Alphabet.GSM7, "א"),
        (b"\x1be", 0xF0, Alphabet.LATIN1, "€"),  # message class, default alphabet
        (b"\x1be", 0xF4, Alphabet.GSM7, "\x1be"),  # message class, 8-bit data
        (b"\x1be", 0x11, Alphabet.GSM7, "€"),  # 23.038 general group, GSM7 class 1
        (b"\x00a", 0x18, Alphabet.GSM7, "a"),  # general group, UCS2
        (b"\x00a", 0xE0, Alphabet.GSM7, "a"),  # MWI group, UCS2
        (b"\x1be", 0xC0, Alphabet.GSM7, "€"),  # MWI group, default alphabet
        (b"\x01\x02", 0x30, Alphabet.GSM7, "\x01\x02"),  # compressed: octets as they are
        (b"\x01\x02", 0x80, Alphabet.GSM7, "\x01\x02"),  # reserved
    ],
)
def test_decode_text(data: bytes, data_coding: int, default: Alphabet, text: str) -> None:
    """decode_text follows data_coding, and the carrier's default for 0."""
    assert decode_text(data, data_coding, default_alphabet=default) == text


def test_decode_text_rejects_non_octet_data_coding() -> None:
    """data_coding is one octet; anything else is the caller's bug."""
    with pytest.raises(ValueError, match="octet"):
        decode_text(b"", 256)


@settings(max_examples=200)
@given(st.binary(max_size=160), st.integers(0, 255), st.sampled_from(list(Alphabet)))
def test_decode_text_never_raises(data: bytes, data_coding: int, default: Alphabet) -> None:
    """Any octets under any data_coding decode to some text."""
    assert isinstance(decode_text(data, data_coding, default_alphabet=default), str)


@settings(max_examples=200)
@given(st.binary(max_size=160), st.sampled_from([2, 4]))
def test_binary_decode_is_lossless(data: bytes, data_coding: int) -> None:
    """Octet data decoded as text encodes back to the same octets."""
    assert encode_text(decode_text(data, data_coding), Alphabet.BINARY) == data
