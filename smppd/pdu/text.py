"""SMS text encodings: GSM 03.38, UCS-2, Latin-1, IA5 and binary, and the choice between them.

Owns the mapping between `str` and the octets of short_message / message_payload for each
data_coding (SMPP v3.4 5.2.19), septet packing (3GPP TS 23.040 9.2.3.24) and the one decision of
which alphabet and data_coding a text goes out with (`plan_encoding`). It must not know PDUs,
segments or carrier config beyond the flags passed in. Encoding is strict: a character no allowed
alphabet can carry raises TextError naming its position, never a silent '?'. Decoding is tolerant:
peer bytes always yield a str (U+FFFD for what cannot be read) and never raise.

GSM text is "unpacked" here, one septet per octet, as SMPP carries it; `pack_septets` is for the
carriers that want packed septets.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Mapping
from enum import IntEnum, StrEnum

from smppd.pdu.errors import DecodeError, EncodeError, TextError

ESME_RINVMSGLEN = 0x00000001  # SMPP v3.4 5.1.3: answered when a message body is malformed


class DataCoding(IntEnum):
    """data_coding values, SMPP v3.4 5.2.19."""

    SMSC_DEFAULT = 0x00
    IA5 = 0x01
    OCTET_UNSPECIFIED = 0x02
    LATIN1 = 0x03
    BINARY = 0x04  # the spec's second "Octet unspecified"; equals TP-DCS 8-bit data (23.038 4)
    JIS = 0x05
    CYRILLIC = 0x06
    ISO_8859_8 = 0x07
    UCS2 = 0x08
    PICTOGRAM = 0x09
    ISO_2022_JP = 0x0A
    EXTENDED_KANJI_JIS = 0x0D
    KS_C_5601 = 0x0E


class Alphabet(StrEnum):
    """The alphabet a text is actually encoded with (data_coding 0 may mean GSM7 or LATIN1)."""

    GSM7 = "gsm7"
    LATIN1 = "latin1"
    UCS2 = "ucs2"
    BINARY = "binary"
    IA5 = "ia5"


GSM7_ESCAPE = 0x1B

# 3GPP TS 23.038 6.2.1, indexed by septet value; 0x1B is the escape to the extension table.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)

# 3GPP TS 23.038 6.2.1.1: characters sent as 0x1B followed by this septet.
GSM7_EXTENSION: dict[str, int] = {
    "\x0c": 0x0A,  # form feed (page break)
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}

# ESC itself is not text: accepting it would let a caller smuggle arbitrary escapes.
_GSM_CHARS = frozenset(GSM7_BASIC.replace("\x1b", "")) | frozenset(GSM7_EXTENSION)
_NOT_GSM = re.compile("[^" + re.escape("".join(sorted(_GSM_CHARS))) + "]")
_NOT_LATIN1 = re.compile("[^\x00-\xff]")
_NOT_IA5 = re.compile("[^\x00-\x7f]")
# A str can hold a lone surrogate (json.loads accepts "\ud83d"); UTF-16 cannot carry one.
_SURROGATE = re.compile("[\ud800-\udfff]")

_GSM_ENCODE: dict[int, bytes] = {
    ord(char): bytes((septet,)) for septet, char in enumerate(GSM7_BASIC) if septet != GSM7_ESCAPE
}
_GSM_ENCODE.update(
    {ord(char): bytes((GSM7_ESCAPE, septet)) for char, septet in GSM7_EXTENSION.items()}
)
# Fast path for plain ASCII text with no extension characters: one bytes.translate.
_GSM_ASCII_BASIC = bytes(
    code for code in range(0x80) if chr(code) in GSM7_BASIC and code != GSM7_ESCAPE
)
_GSM_ASCII_ALL = _GSM_ASCII_BASIC + bytes(ord(char) for char in GSM7_EXTENSION if char.isascii())
_ASCII_TO_GSM = bytes(
    GSM7_BASIC.index(chr(code)) if code in _GSM_ASCII_BASIC else code for code in range(0x100)
)

# Octets 0x80-0xFF are not septets: they decode to U+FFFD rather than being masked to 7 bits.
_GSM_DECODE = GSM7_BASIC + "\ufffd" * 0x80
# Keyed by the basic-table character of the septet after the escape.
_GSM_UNESCAPE = {GSM7_BASIC[septet]: char for char, septet in GSM7_EXTENSION.items()}
_ESCAPED = re.compile("\x1b(.?)", re.DOTALL)


def _unencodable(text: str, position: int, alphabet: Alphabet) -> TextError:
    return TextError(
        f"character at index {position} (U+{ord(text[position]):04X}) "
        f"cannot be encoded in {alphabet.value}"
    )


def is_gsm7(text: str) -> bool:
    """Whether every character of `text` is in the GSM 03.38 basic or extension table."""
    if text.isascii():
        return not text.encode("ascii").translate(None, _GSM_ASCII_ALL)
    return _NOT_GSM.search(text) is None


def encode_gsm7(text: str) -> bytes:
    """GSM 03.38 septets of `text`, one per octet (unpacked); extension characters take two."""
    if text.isascii():
        raw = text.encode("ascii")
        if not raw.translate(None, _GSM_ASCII_BASIC):
            return raw.translate(_ASCII_TO_GSM)
    try:
        return codecs.charmap_encode(text, "strict", _GSM_ENCODE)[0]
    except UnicodeEncodeError as exc:
        raise _unencodable(text, exc.start, Alphabet.GSM7) from None


def decode_gsm7(data: bytes) -> str:
    """Text of unpacked GSM 03.38 septets.

    Tolerant, per 23.038 6.2.1.1: an escape to an undefined extension code reads as the
    basic-table character, ESC ESC and a trailing ESC read as a space, and octets above 0x7F
    (not septets) read as U+FFFD.
    """
    return decode_septets(data, _GSM_DECODE, _GSM_UNESCAPE)


def decode_septets(data: bytes, table: str, unescape: Mapping[str, str]) -> str:
    """`data` through a 256-entry decoding `table`, then each escape through `unescape` (keyed
    by the character `table` gives the septet after the escape). 23.038 6.2.1.1: an unknown
    escape shows the basic-table character; ESC ESC (reserved for a further table) and a
    trailing ESC show a space."""
    text = codecs.charmap_decode(data, "strict", table)[0]
    if "\x1b" not in text:
        return text

    def unescaped(match: re.Match[str]) -> str:
        follower = match.group(1)
        if follower in {"", "\x1b"}:
            return " "
        return unescape.get(follower, follower)

    return _ESCAPED.sub(unescaped, text)


def gsm7_length(text: str) -> int:
    """Septets `text` takes in GSM 03.38 (an extension character counts 2); TextError if not GSM."""
    return len(encode_gsm7(text))


# Septets are packed a block at a time, 256 septets (224 octets) as one big integer whose 8-bit
# lanes are merged pairwise in log2(256) steps: each step shifts the upper half of every lane pair
# down onto the lower half (SIMD-within-a-register). That is ten times faster than a loop over
# septets, and blocks of 224 octets concatenate with no bit offset.
_BLOCK_SEPTETS = 256
_BLOCK_OCTETS = _BLOCK_SEPTETS * 7 // 8


def _lane_steps() -> tuple[tuple[int, int, int], ...]:
    """(mask of the low lane of each pair, mask of the high lane, shift) from 8-bit lanes up."""
    steps = []
    lane_bits, value_bits = 8, 7
    while lane_bits < 8 * _BLOCK_SEPTETS:
        pair = ((1 << value_bits) - 1).to_bytes(2 * lane_bits // 8, "little")
        low = int.from_bytes(pair * (_BLOCK_SEPTETS * 4 // lane_bits), "little")
        steps.append((low, low << lane_bits, lane_bits - value_bits))
        lane_bits, value_bits = 2 * lane_bits, 2 * value_bits
    return tuple(steps)


_PACK_STEPS = _lane_steps()
# Unpacking runs the same steps backwards: the high values move up by the shift.
_UNPACK_STEPS = tuple((low, high >> shift, shift) for low, high, shift in reversed(_PACK_STEPS))


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack 7-bit values into octets, after `fill_bits` zero bits (3GPP TS 23.040 9.2.3.24).

    The fill bits follow a UDH so that the first septet starts on a septet boundary.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, not {fill_bits}")
    if not septets.isascii():
        raise EncodeError("septets must be 7-bit values")
    packed = bytearray()
    for start in range(0, len(septets), _BLOCK_SEPTETS):
        value = int.from_bytes(septets[start : start + _BLOCK_SEPTETS], "little")
        for low, high, shift in _PACK_STEPS:
            value = (value & low) | ((value & high) >> shift)
        packed += value.to_bytes(_BLOCK_OCTETS, "little")
    length = (7 * len(septets) + fill_bits + 7) // 8
    if fill_bits:
        # The septets use 7n bits, so the shifted value fits the `length` octets exactly.
        return (int.from_bytes(packed, "little") << fill_bits).to_bytes(length, "little")
    return bytes(packed[:length])


def unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> bytes:
    """`count` 7-bit values packed in `data` after `fill_bits` bits, one per octet.

    DecodeError (ESME_RINVMSGLEN) when `data` is too short to hold them.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, not {fill_bits}")
    if count < 0 or fill_bits + 7 * count > 8 * len(data):
        raise DecodeError(
            f"{len(data)} octets cannot hold {count} septets after {fill_bits} fill bits",
            command_status=ESME_RINVMSGLEN,
        )
    if fill_bits:
        data = (int.from_bytes(data, "little") >> fill_bits).to_bytes(len(data), "little")
    septets = bytearray()
    for start in range(0, (7 * count + 7) // 8, _BLOCK_OCTETS):
        value = int.from_bytes(data[start : start + _BLOCK_OCTETS], "little")
        for low, high, shift in _UNPACK_STEPS:
            value = (value & low) | ((value & high) << shift)
        septets += value.to_bytes(_BLOCK_SEPTETS, "little")
    return bytes(septets[:count])


def encode_ucs2(text: str) -> bytes:
    """UTF-16BE of `text`: characters beyond the BMP take a surrogate pair (two units)."""
    try:
        return text.encode("utf-16-be")
    except UnicodeEncodeError as exc:
        raise _unencodable(text, exc.start, Alphabet.UCS2) from None


def decode_ucs2(data: bytes) -> str:
    """Text of UTF-16BE octets; a lone surrogate or an odd trailing octet reads as U+FFFD."""
    return data.decode("utf-16-be", "replace")


def ucs2_length(text: str) -> int:
    """UTF-16 code units of `text` (a character beyond the BMP counts 2)."""
    if text.isascii():
        return len(text)
    return len(encode_ucs2(text)) // 2


def _encode_latin1(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise _unencodable(text, exc.start, Alphabet.LATIN1) from None


def _encode_ia5(text: str) -> bytes:
    try:
        return text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise _unencodable(text, exc.start, Alphabet.IA5) from None


def _encode_binary(text: str) -> bytes:
    # The inverse of decoding data_coding 2/4: each character U+0000-U+00FF is one octet.
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise _unencodable(text, exc.start, Alphabet.BINARY) from None


_ENCODERS: dict[Alphabet, Callable[[str], bytes]] = {
    Alphabet.GSM7: encode_gsm7,
    Alphabet.LATIN1: _encode_latin1,
    Alphabet.UCS2: encode_ucs2,
    Alphabet.BINARY: _encode_binary,
    Alphabet.IA5: _encode_ia5,
}

_UNENCODABLE: dict[Alphabet, re.Pattern[str]] = {
    Alphabet.GSM7: _NOT_GSM,
    Alphabet.LATIN1: _NOT_LATIN1,
    Alphabet.UCS2: _SURROGATE,
    Alphabet.BINARY: _NOT_LATIN1,
    Alphabet.IA5: _NOT_IA5,
}


def encode_text(text: str, alphabet: Alphabet) -> bytes:
    """Octets of `text` in `alphabet` (GSM7 unpacked); TextError naming the first misfit.

    BINARY takes characters U+0000-U+00FF as the octets themselves, mirroring `decode_text`.
    """
    return _ENCODERS[alphabet](text)


def require_encodable(text: str, alphabet: Alphabet) -> None:
    """Raise TextError naming the first character of `text` that `alphabet` cannot carry."""
    if alphabet is Alphabet.GSM7 and is_gsm7(text):
        return
    match = _UNENCODABLE[alphabet].search(text)
    if match is not None:
        raise _unencodable(text, match.start(), alphabet)


def choose_alphabet(text: str, *, allow_latin1: bool = False) -> Alphabet:
    """The most compact alphabet for `text`: GSM7, then Latin-1 if allowed, then UCS2.

    TextError when even UCS-2 cannot carry it (a lone surrogate).
    """
    if is_gsm7(text):
        return Alphabet.GSM7
    if allow_latin1 and _NOT_LATIN1.search(text) is None:
        return Alphabet.LATIN1
    require_encodable(text, Alphabet.UCS2)
    return Alphabet.UCS2


def data_coding_for(alphabet: Alphabet, *, gsm_as_default: bool = True) -> int:
    """The data_coding that signals `alphabet` to a carrier.

    `gsm_as_default` says whether the carrier reads data_coding 0 as GSM 03.38 (else Latin-1).
    Latin-1 goes as 0 to a carrier whose default it is (what such carriers expect) and as 3
    otherwise; GSM7 cannot be signalled to a Latin-1-default carrier (TextError). Binary goes as
    4, which matches TP-DCS 8-bit data for SMSCs that pass the value through.
    """
    if alphabet is Alphabet.GSM7:
        if not gsm_as_default:
            raise TextError(
                "GSM 03.38 cannot be signalled to a carrier whose data_coding 0 is Latin-1"
            )
        return DataCoding.SMSC_DEFAULT
    if alphabet is Alphabet.LATIN1:
        return DataCoding.LATIN1 if gsm_as_default else DataCoding.SMSC_DEFAULT
    return _FIXED_DATA_CODING[alphabet]


_FIXED_DATA_CODING: dict[Alphabet, int] = {
    Alphabet.UCS2: DataCoding.UCS2,
    Alphabet.BINARY: DataCoding.BINARY,
    Alphabet.IA5: DataCoding.IA5,
}


def plan_encoding(
    text: str,
    *,
    default_is_latin1: bool,
    allow_latin1: bool = False,
    force: Alphabet | None = None,
) -> tuple[Alphabet, int]:
    """The alphabet and data_coding to send `text` with: the single place this is decided.

    With `force`, that alphabet or TextError. Otherwise GSM7 when it fits, then (with
    `allow_latin1`) Latin-1 as data_coding 3, then UCS-2.

    A carrier whose data_coding 0 is Latin-1 (`default_is_latin1`) still sends it on the air
    as GSM 03.38, the only 7-bit alphabet there is: text that both carry is planned as GSM7
    with data_coding 0, so it is counted and cut in septets as the air carries it, and written
    in Latin-1 octets (`latin1_octets`). Latin-1 letters GSM lacks go as UCS-2, as they would
    to any carrier, rather than be turned into others or "?" by the SMSC.
    """
    if default_is_latin1 and force in (Alphabet.GSM7, Alphabet.LATIN1):
        # Latin-1 asked of such a carrier is its data_coding 0 too, and as GSM on the air it
        # must fit: so only text GSM has (`auto` sends the rest as UCS-2).
        if force is Alphabet.LATIN1 and (match := _NOT_GSM.search(text)) is not None:
            char = text[match.start()]
            raise TextError(
                f"character at index {match.start()} (U+{ord(char):04X}) cannot be sent as "
                "latin1 on this route: its carrier sends data_coding 0 as GSM 03.38 on the "
                "air, which lacks it (encoding auto sends it as UCS-2)"
            )
        require_encodable(text, Alphabet.GSM7)
        require_encodable(text, Alphabet.LATIN1)  # what it is written in
        return Alphabet.GSM7, DataCoding.SMSC_DEFAULT
    if default_is_latin1 and force is None:
        if is_gsm7(text) and _NOT_LATIN1.search(text) is None:
            return Alphabet.GSM7, DataCoding.SMSC_DEFAULT
        require_encodable(text, Alphabet.UCS2)
        return Alphabet.UCS2, DataCoding.UCS2
    gsm_as_default = not default_is_latin1
    if force is not None:
        require_encodable(text, force)
        return force, data_coding_for(force, gsm_as_default=gsm_as_default)
    alphabet = choose_alphabet(text, allow_latin1=allow_latin1)
    return alphabet, data_coding_for(alphabet, gsm_as_default=gsm_as_default)


def latin1_octets(alphabet: Alphabet, *, default_is_latin1: bool) -> bool:
    """Whether planned GSM7 text is written in Latin-1 octets (see `plan_encoding`)."""
    return default_is_latin1 and alphabet is Alphabet.GSM7


def _decode_binary(data: bytes) -> str:
    # Lossless: each octet becomes U+0000-U+00FF, and encode_text(..., BINARY) gives it back.
    return data.decode("latin-1")


def _decode_ia5(data: bytes) -> str:
    return data.decode("ascii", "replace")


def _codec(name: str) -> Callable[[bytes], str]:
    def decode(data: bytes) -> str:
        return data.decode(name, "replace")

    return decode


_DECODERS: dict[Alphabet, Callable[[bytes], str]] = {
    Alphabet.GSM7: decode_gsm7,
    Alphabet.LATIN1: _decode_binary,  # Latin-1 decoding is the identity on code points
    Alphabet.UCS2: decode_ucs2,
    Alphabet.BINARY: _decode_binary,
    Alphabet.IA5: _decode_ia5,
}


def _decoder_for(data_coding: int) -> Callable[[bytes], str]:
    explicit: dict[int, Callable[[bytes], str]] = {
        DataCoding.IA5: _decode_ia5,
        DataCoding.LATIN1: _decode_binary,
        DataCoding.JIS: _codec("shift_jis"),  # what JIS X 0208 carriers send in practice
        DataCoding.CYRILLIC: _codec("iso8859_5"),
        DataCoding.ISO_8859_8: _codec("iso8859_8"),
        DataCoding.UCS2: decode_ucs2,
        DataCoding.ISO_2022_JP: _codec("iso2022_jp"),
        DataCoding.EXTENDED_KANJI_JIS: _codec("euc_jis_2004"),
        DataCoding.KS_C_5601: _codec("euc_kr"),
    }
    if data_coding in explicit:
        return explicit[data_coding]
    # SMPP reserves the rest; SMSCs that pass TP-DCS through send 23.038 4 coding groups.
    group = data_coding >> 4
    if 0x1 <= group <= 0x7:  # general data coding / automatic deletion groups
        if data_coding & 0x20:  # compressed: no decompressor, keep the octets
            return _decode_binary
        return (decode_gsm7, _decode_binary, decode_ucs2, _decode_binary)[(data_coding >> 2) & 3]
    if group in {0xC, 0xD}:  # message waiting indication, default alphabet
        return decode_gsm7
    if group == 0xE:  # message waiting indication, UCS2
        return decode_ucs2
    if group == 0xF:  # message class: bit 2 picks 8-bit data over the default alphabet
        return _decode_binary if data_coding & 0x04 else decode_gsm7
    return _decode_binary  # 2, 4, pictogram and reserved values: the octets, losslessly


_BY_DATA_CODING: tuple[Callable[[bytes], str], ...] = tuple(
    _decoder_for(data_coding) for data_coding in range(0x100)
)


def decode_text(
    data: bytes, data_coding: int, *, default_alphabet: Alphabet = Alphabet.GSM7
) -> str:
    """Text of a short_message or message_payload as sent with `data_coding`.

    data_coding 0 decodes per the carrier's `default_alphabet`; 1 IA5, 3 Latin-1, 8 UCS-2,
    5-7 and 0x0A-0x0E with their national codecs; octet data (2, 4, and values not naming a
    text alphabet) as Latin-1, one character per octet, so the octets survive losslessly.
    Tolerant: never raises on any bytes (U+FFFD for what cannot be read). A `data_coding`
    outside 0..255 is the caller's bug (the field is one octet): ValueError.
    """
    return _decoder(data_coding, default_alphabet)(data)


def reads_as_gsm7(data_coding: int, *, default_alphabet: Alphabet = Alphabet.GSM7) -> bool:
    """Whether `decode_text` reads `data_coding` as GSM 03.38 septets."""
    return _decoder(data_coding, default_alphabet) is decode_gsm7


def _decoder(data_coding: int, default_alphabet: Alphabet) -> Callable[[bytes], str]:
    if data_coding == DataCoding.SMSC_DEFAULT:
        return _DECODERS[default_alphabet]
    if not 0 <= data_coding <= 0xFF:
        raise ValueError(f"data_coding {data_coding} is not an octet")
    return _BY_DATA_CODING[data_coding]
