"""GSM 7-bit national language shift tables (3GPP TS 23.038 6.2.1.2.4 and annex A).

A message can name, in its UDH, a locking shift table that replaces the default alphabet and a
single shift table that replaces the extension table reached by the escape (23.040 9.2.3.24.15
and .16, one octet each: the national language identifier). Turkish, Spanish and Portuguese are
kept here: Latin-script languages whose letters (ş, ğ, ı; á, í, ó, ú; ã, õ, ê) would otherwise
send the whole message as UCS-2, 70 characters a part instead of 160. Spanish has a single
shift table only (A.3.2 is void). The other identifiers (Indic scripts, Urdu) are not known
here: their text decodes with the default tables and is sent as UCS-2.

Tables are written as the cells where they differ from the default ones; the escape (0x1B)
stays where it is in every table. Pure: no I/O.
"""

from __future__ import annotations

import codecs
import functools
from collections.abc import Sequence
from enum import IntEnum
from typing import Final

from smppd.pdu import text as _text
from smppd.pdu.errors import TextError
from smppd.pdu.text import (
    GSM7_BASIC,
    GSM7_ESCAPE,
    GSM7_EXTENSION,
    Alphabet,
    decode_gsm7,
    decode_septets,
    encode_gsm7,
    reads_as_gsm7,
)
from smppd.pdu.udh import InformationElement
from smppd.record import record

IEI_SINGLE_SHIFT: Final = 0x24  # 23.040 9.2.3.24.15: national language single shift
IEI_LOCKING_SHIFT: Final = 0x25  # 23.040 9.2.3.24.16: national language locking shift
IE_OCTETS: Final = 3  # IEI, length 1, identifier


class NationalLanguage(IntEnum):
    """National language identifiers, 23.038 table 6.2.1.2.4.1 (those known here)."""

    TURKISH = 1
    SPANISH = 2
    PORTUGUESE = 3


# Annex A.3: locking shift tables, as cells that differ from the default alphabet (6.2.1).
_LOCKING: Final[dict[int, dict[int, str]]] = {
    NationalLanguage.TURKISH: {
        0x04: "€",
        0x07: "ı",
        0x0B: "Ğ",
        0x0C: "ğ",
        0x1C: "Ş",
        0x1D: "ş",
        0x40: "İ",
        0x60: "ç",
    },
    NationalLanguage.PORTUGUESE: {
        0x04: "ê",
        0x06: "ú",
        0x07: "í",
        0x08: "ó",
        0x09: "ç",
        0x0B: "Ô",
        0x0C: "ô",
        0x0E: "Á",
        0x0F: "á",
        0x12: "ª",
        0x13: "Ç",
        0x14: "À",
        0x15: "∞",
        0x16: "^",
        0x17: "\\",
        0x18: "€",
        0x19: "Ó",
        0x1A: "|",
        0x1C: "Â",
        0x1D: "â",
        0x1E: "Ê",
        0x24: "º",
        0x40: "Í",
        0x5B: "Ã",
        0x5C: "Õ",
        0x5D: "Ú",
        0x60: "~",
        0x7B: "ã",
        0x7C: "õ",
        0x7D: "`",
    },
}

# Annex A.2: single shift tables, as cells added to the default extension table (6.2.1.1), all
# of whose characters each of them keeps where they are.
_SINGLE: Final[dict[int, dict[int, str]]] = {
    NationalLanguage.TURKISH: {
        0x47: "Ğ",
        0x49: "İ",
        0x53: "Ş",
        0x63: "ç",
        0x67: "ğ",
        0x69: "ı",
        0x73: "ş",
    },
    NationalLanguage.SPANISH: {
        0x09: "ç",
        0x41: "Á",
        0x49: "Í",
        0x4F: "Ó",
        0x55: "Ú",
        0x61: "á",
        0x69: "í",
        0x6F: "ó",
        0x75: "ú",
    },
    NationalLanguage.PORTUGUESE: {
        0x05: "ê",
        0x09: "ç",
        0x0B: "Ô",
        0x0C: "ô",
        0x0E: "Á",
        0x0F: "á",
        0x12: "Φ",
        0x13: "Γ",
        0x15: "Ω",
        0x16: "Π",
        0x17: "Ψ",
        0x18: "Σ",
        0x19: "Θ",
        0x1F: "Ê",
        0x41: "À",
        0x49: "Í",
        0x4F: "Ó",
        0x55: "Ú",
        0x5B: "Ã",
        0x5C: "Õ",
        0x61: "Â",
        0x69: "í",
        0x6F: "ó",
        0x75: "ú",
        0x7B: "ã",
        0x7C: "õ",
        0x7F: "â",
    },
}


@record
class Shift:
    """The tables a GSM 7-bit text is written with: national language identifiers of the
    locking and the single shift table, 0 for the default alphabet or extension table."""

    locking: int = 0
    single: int = 0

    @property
    def is_default(self) -> bool:
        return not (self.locking or self.single)

    def elements(self) -> bytes:
        """The UDH information elements that announce the tables (none for the defaults)."""
        out = b""
        if self.locking:
            out += bytes((IEI_LOCKING_SHIFT, 1, self.locking))
        if self.single:
            out += bytes((IEI_SINGLE_SHIFT, 1, self.single))
        return out

    def describe(self) -> str:
        names = []
        if self.locking:
            names.append(f"{NationalLanguage(self.locking).name.lower()} locking shift")
        if self.single:
            names.append(f"{NationalLanguage(self.single).name.lower()} single shift")
        return "gsm7 with the " + " and ".join(names) + " table" if names else "gsm7"


DEFAULT_SHIFT: Final = Shift()


def shift_of(elements: Sequence[InformationElement]) -> Shift:
    """The tables a received message's UDH names (its parsed elements). An identifier not
    known here reads as the default table, as 23.038 6.2.1.2.4 has a receiver do; so does a
    Spanish locking shift, which does not exist."""
    locking = single = 0
    for element in elements:
        iei, data = element.iei, element.data
        if len(data) != 1:
            continue
        if iei == IEI_LOCKING_SHIFT and data[0] in _LOCKING:
            locking = data[0]
        elif iei == IEI_SINGLE_SHIFT and data[0] in _SINGLE:
            single = data[0]
    return Shift(locking, single)


def candidates(language: NationalLanguage) -> tuple[Shift, ...]:
    """The table choices a text in `language` may be sent with, cheapest header first."""
    out = [Shift(single=language)]
    if language in _LOCKING:
        out += [Shift(locking=language), Shift(locking=language, single=language)]
    return tuple(out)


class _Codec:
    """Encoding map, decoding table and escape map of one pair of tables."""

    def __init__(self, shift: Shift) -> None:
        basic = list(GSM7_BASIC)
        for septet, char in _LOCKING.get(shift.locking, {}).items():
            basic[septet] = char
        extension = dict(GSM7_EXTENSION)
        extension.update({char: septet for septet, char in _SINGLE.get(shift.single, {}).items()})
        self.decoding = "".join(basic) + "\ufffd" * 0x80
        # Keyed by the septet after the escape as the locking table reads it (see decode_septets).
        self.unescape = {basic[septet]: char for char, septet in extension.items()}
        encoding = {ord(char): bytes((GSM7_ESCAPE, s)) for char, s in extension.items()}
        # A character in both tables takes the one septet of the locking table.
        encoding.update(
            {ord(char): bytes((s,)) for s, char in enumerate(basic) if s != GSM7_ESCAPE}
        )
        self.encoding = encoding
        self.name = shift.describe()


@functools.cache
def _codec(shift: Shift) -> _Codec:
    return _Codec(shift)


def encode(text: str, shift: Shift) -> bytes:
    """Unpacked septets of `text` written with `shift`'s tables; TextError naming a misfit."""
    if shift.is_default:
        return encode_gsm7(text)
    codec = _codec(shift)
    try:
        return codecs.charmap_encode(text, "strict", codec.encoding)[0]
    except UnicodeEncodeError as exc:
        raise TextError(
            f"character at index {exc.start} (U+{ord(text[exc.start]):04X}) "
            f"cannot be encoded in {codec.name}"
        ) from None


def decode(data: bytes, shift: Shift) -> str:
    """Text of unpacked septets written with `shift`'s tables (tolerant, as decode_gsm7)."""
    if shift.is_default:
        return decode_gsm7(data)
    codec = _codec(shift)
    return decode_septets(data, codec.decoding, codec.unescape)


def decode_text(
    data: bytes,
    data_coding: int,
    *,
    default_alphabet: Alphabet = Alphabet.GSM7,
    shift: Shift = DEFAULT_SHIFT,
) -> str:
    """`smppd.pdu.text.decode_text`, reading GSM 03.38 septets with `shift`'s tables."""
    if not shift.is_default and reads_as_gsm7(data_coding, default_alphabet=default_alphabet):
        return decode(data, shift)
    return _text.decode_text(data, data_coding, default_alphabet=default_alphabet)


def decode_parts(
    parts: Sequence[tuple[bytes, Shift]],
    data_coding: int,
    *,
    default_alphabet: Alphabet = Alphabet.GSM7,
) -> str:
    """The text of a long message's parts, each with the tables its own header named. Decoded
    as one where they share them (a sender may have split a surrogate pair across parts); GSM
    7-bit parts naming different tables each with its own (23.040: the tables are a part's)."""
    shifts = {shift for _, shift in parts}
    if len(shifts) > 1 and reads_as_gsm7(data_coding, default_alphabet=default_alphabet):
        return "".join(
            decode_text(data, data_coding, default_alphabet=default_alphabet, shift=shift)
            for data, shift in parts
        )
    shift = parts[0][1] if parts else DEFAULT_SHIFT
    content = b"".join(data for data, _ in parts)
    return decode_text(content, data_coding, default_alphabet=default_alphabet, shift=shift)


def choose(text: str, language: NationalLanguage) -> list[tuple[Shift, bytes]]:
    """Each table choice of `language` that can carry `text`, with the septets it makes."""
    found = []
    for shift in candidates(language):
        try:
            found.append((shift, encode(text, shift)))
        except TextError:
            continue
    return found
