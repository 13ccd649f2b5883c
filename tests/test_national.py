"""National language shift tables: the cells 23.038 annex A gives, round trips, UDH elements."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smppd.pdu.errors import TextError
from smppd.pdu.national import (
    DEFAULT_SHIFT,
    NationalLanguage,
    Shift,
    candidates,
    choose,
    decode,
    encode,
    shift_of,
)
from smppd.pdu.text import GSM7_BASIC, decode_gsm7
from smppd.pdu.udh import InformationElement

TR, ES, PT = NationalLanguage.TURKISH, NationalLanguage.SPANISH, NationalLanguage.PORTUGUESE
ESC = 0x1B


def test_turkish_letters_of_the_locking_shift_table() -> None:
    """A.3.1: the cells where the Turkish locking table differs from the default alphabet."""
    septets = bytes((0x40, 0x60, 0x04, 0x07, 0x0B, 0x0C, 0x1C, 0x1D))
    assert decode(septets, Shift(locking=TR)) == "İç€ıĞğŞş"
    assert decode_gsm7(septets) == "¡¿èìØøÆæ"  # the same septets, default alphabet
    assert encode("İç€ıĞğŞş", Shift(locking=TR)) == septets


def test_turkish_letters_of_the_single_shift_table() -> None:
    """A.2.1: Turkish letters behind the escape; the default extension's cells stay."""
    codes = (0x53, 0x63, 0x73, 0x47, 0x67, 0x49, 0x69, 0x65, 0x28, 0x40)
    septets = b"".join(bytes((ESC, code)) for code in codes)
    assert decode(septets, Shift(single=TR)) == "ŞçşĞğİı€{|"
    assert encode("ŞçşĞğİı€{|", Shift(single=TR)) == septets


def test_spanish_has_a_single_shift_table_only() -> None:
    septets = bytes((ESC, 0x41, ESC, 0x69, ESC, 0x09, 0x61))  # Á í ç a
    assert decode(septets, Shift(single=ES)) == "Áíça"
    assert candidates(ES) == (Shift(single=ES),)
    assert shift_of([InformationElement(0x25, bytes((ES,)))]) == DEFAULT_SHIFT  # A.3.2 is void


def test_portuguese_tables() -> None:
    assert decode(bytes((0x04, 0x7B, 0x15, 0x60)), Shift(locking=PT)) == "êã∞~"
    assert decode(bytes((ESC, 0x05, ESC, 0x7F, ESC, 0x12)), Shift(single=PT)) == "êâΦ"


@pytest.mark.parametrize("shift", [Shift(locking=TR), Shift(locking=PT)])
def test_a_locking_table_is_one_to_one_and_keeps_the_escape(shift: Shift) -> None:
    cells = [decode(bytes((septet,)), shift) for septet in range(0x80) if septet != ESC]
    assert len(set(cells)) == 127
    assert decode(bytes((ESC,)), shift) == " "  # still the escape: a trailing one is a space
    assert decode(bytes((ESC, 0x65)), shift) == "€"  # and still leads to the extension table


@pytest.mark.parametrize("language", list(NationalLanguage))
def test_every_character_of_every_choice_round_trips(language: NationalLanguage) -> None:
    for shift in candidates(language):
        text = decode(
            b"".join(bytes((s,)) for s in range(0x80) if s != ESC)
            + b"".join(bytes((ESC, s)) for s in range(0x80)),
            shift,
        )
        characters = "".join(sorted(set(text)))
        assert decode(encode(characters, shift), shift) == characters


def test_a_character_in_both_tables_takes_the_locking_tables_one_septet() -> None:
    """ç is in the Turkish locking table (0x60) and single shift table (0x1B 0x63)."""
    assert encode("ç", Shift(locking=TR, single=TR)) == bytes((0x60,))
    assert encode("ç", Shift(single=TR)) == bytes((ESC, 0x63))


def test_an_unknown_escape_reads_as_the_locking_tables_character() -> None:
    """23.038 6.2.1.1: a code missing from the single shift table shows the character the
    locking shift table has there."""
    assert decode(bytes((ESC, 0x04)), Shift(locking=TR)) == "€"
    assert decode(bytes((ESC, 0x04)), DEFAULT_SHIFT) == "è"


def test_text_the_tables_cannot_carry_is_refused_by_name() -> None:
    with pytest.raises(TextError, match=r"index 1 \(U\+00E1\).*turkish single shift"):
        encode("aáa", Shift(single=TR))
    with pytest.raises(TextError, match="turkish locking shift"):
        encode("Ø", Shift(locking=TR))  # its cell holds Ğ there
    assert encode("Ø", Shift(single=TR)) == bytes((GSM7_BASIC.index("Ø"),))


def test_udh_elements_announce_the_tables() -> None:
    assert Shift(locking=TR, single=TR).elements() == bytes.fromhex("250101240101")
    assert Shift(single=ES).elements() == bytes.fromhex("240102")
    assert DEFAULT_SHIFT.elements() == b""
    assert shift_of(
        [
            InformationElement(0x00, b"\x01\x02\x01"),
            InformationElement(0x24, b"\x01"),
            InformationElement(0x25, b"\x01"),
        ]
    ) == Shift(TR, TR)
    # Identifiers not known here (Hindi is 6) and malformed elements read as the defaults.
    assert (
        shift_of([InformationElement(0x24, b"\x06"), InformationElement(0x25, b"\x03\x03")])
        == DEFAULT_SHIFT
    )


def test_choose_lists_each_choice_that_carries_the_text() -> None:
    text = "Şişli'de buluşalım mı? Saat 3'te, çarşı girişinde."
    shifts = [shift for shift, _ in choose(text, TR)]
    assert shifts == [Shift(single=TR), Shift(locking=TR), Shift(locking=TR, single=TR)]
    septets = {shift: len(encoded) for shift, encoded in choose(text, TR)}
    # ş, ı and ç are one septet in the locking table and two behind the escape.
    assert septets[Shift(locking=TR)] < septets[Shift(single=TR)]
    assert choose("Ø and ş", TR) == [(Shift(single=TR), encode("Ø and ş", Shift(single=TR)))]
    assert choose("日本", TR) == []


@given(st.text(alphabet=st.sampled_from(sorted(set("ŞşĞğİıçÇüÜöÖ€{}[]abc ÁéñÆ")))))
def test_whatever_encodes_decodes_back(text: str) -> None:
    for language in NationalLanguage:
        for shift, encoded in choose(text, language):
            assert decode(encoded, shift) == text
