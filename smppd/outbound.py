"""From a validated submit to the submit_sm bodies the queue stores: encoding, segmentation, TLVs.

Each body is encoded once, here, at submit time; the send loop only frames it with a sequence
number per attempt. The carrier profile carries what differs between carriers (what data_coding
0 means, how long messages are tied together, TON/NPI). Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from datetime import UTC, datetime
from typing import Final

from smppd.address import destination_ton_npi, sender_ton_npi, wire_address
from smppd.pdu.codec import encode_body
from smppd.pdu.errors import SegmentLimitError, TextError
from smppd.pdu.lookalike import plain
from smppd.pdu.national import DEFAULT_SHIFT, NationalLanguage, Shift
from smppd.pdu.pdus import ESM_UDHI, SubmitSm
from smppd.pdu.segment import (
    UDH_METHODS,
    ConcatMethod,
    Reference,
    Segment,
    national_shift,
    split_message,
)
from smppd.pdu.text import Alphabet, DataCoding, is_gsm7, latin1_octets, plan_encoding
from smppd.pdu.timefmt import format_absolute
from smppd.record import record
from smppd.service import ApiError, ErrorCode

REGISTERED_DELIVERY_FINAL = 0x01  # SMPP v3.4 5.2.17: receipt on final outcome, success or failure

_FORCED = {
    "auto": None,
    "gsm7": Alphabet.GSM7,
    "ucs2": Alphabet.UCS2,
    "latin1": Alphabet.LATIN1,
}
ENCODINGS = frozenset(_FORCED)


@record
class OutboundProfile:
    default_is_latin1: bool = False
    concatenation: ConcatMethod = ConcatMethod.UDH8
    max_segments: int = 10
    source_ton: int | None = None  # None: derived from the sender id's form
    source_npi: int | None = None
    dest_ton: int | None = None  # None: derived from the destination's form
    dest_npi: int | None = None
    service_type: str = ""
    registered_delivery: bool = True  # False: the carrier is never asked for receipts
    priority_flag: bool = False  # True: each message's priority goes as priority_flag
    # Text GSM 03.38 lacks goes in this language's tables (23.038 annex A) before UCS-2.
    national: NationalLanguage | None = None


@record
class Prepared:
    bodies: list[bytes]
    alphabet: Alphabet


def prepare(
    *,
    destination: str,
    source: str,
    text: str,
    encoding: str,
    registered_delivery: bool,
    expires_at: float | None,
    ref: Reference,
    profile: OutboundProfile,
    flash: bool = False,
    smart: bool = False,
    priority: int = 0,
    source_ton_npi: tuple[int, int] | None = None,  # the sender's kind's; None: its id's form
) -> Prepared:
    """The submit_sm bodies for one message; ApiError for text SMPP cannot carry as asked.

    `registered_delivery` is the request's wish, which the carrier's profile can overrule.
    `flash` (message class 0) names its alphabet in the data_coding (GSM 03.38 section 4:
    0x10 GSM 7-bit, 0x18 UCS-2), so GSM text goes as GSM septets even to a carrier whose
    data_coding 0 is Latin-1, and Latin-1 text, which has no class, is refused.
    """
    force = _FORCED.get(encoding)
    if encoding not in _FORCED:
        raise ApiError(ErrorCode.invalid_field, f"unknown encoding {encoding!r}", field="encoding")
    if flash and force is Alphabet.LATIN1:
        raise ApiError(
            ErrorCode.invalid_field, "flash needs encoding auto, gsm7 or ucs2", field="flash"
        )
    if flash and profile.default_is_latin1:
        profile = dataclasses.replace(profile, default_is_latin1=False)
    text = composed(text)
    try:
        text, (alphabet, data_coding, shift) = _plan_text(text, force, profile, smart=smart)
        if flash:
            data_coding = _FLASH[alphabet]
        segments = split_message(
            text,
            alphabet=alphabet,
            data_coding=data_coding,
            method=profile.concatenation,
            ref=ref,
            max_segments=profile.max_segments,
            latin1_octets=latin1_octets(alphabet, default_is_latin1=profile.default_is_latin1),
            shift=shift,
        )
    except TextError as exc:
        raise ApiError(ErrorCode.unencodable_text, str(exc), field="text") from exc
    except SegmentLimitError as exc:
        raise ApiError(ErrorCode.too_many_segments, str(exc), field="text") from exc

    ton, npi = sender_ton_npi(source) if source_ton_npi is None else source_ton_npi
    dest_ton, dest_npi = destination_ton_npi(destination)
    template = SubmitSm(
        service_type=profile.service_type,
        source_addr_ton=ton if profile.source_ton is None else profile.source_ton,
        source_addr_npi=npi if profile.source_npi is None else profile.source_npi,
        source_addr=wire_address(source),
        dest_addr_ton=dest_ton if profile.dest_ton is None else profile.dest_ton,
        dest_addr_npi=dest_npi if profile.dest_npi is None else profile.dest_npi,
        destination_addr=wire_address(destination),
        priority_flag=priority_flag(priority) if profile.priority_flag else 0,
        validity_period=(
            "" if expires_at is None else format_absolute(datetime.fromtimestamp(expires_at, UTC))
        ),
        registered_delivery=(
            REGISTERED_DELIVERY_FINAL if registered_delivery and profile.registered_delivery else 0
        ),
    )
    return Prepared([_body(template, s) for s in segments], alphabet)


def priority_flag(priority: int) -> int:
    """SMPP priority_flag 0..3 for an API priority 0..9, by thirds: 0-2 (bulk) 0, 3-5
    (normal) 1, 6-8 2, 9 (urgent) 3."""
    return min(3, priority // 3)


# data_coding for message class 0 (GSM 03.38 section 4, general data coding, class given).
_FLASH: Final = {Alphabet.GSM7: 0x10, Alphabet.UCS2: 0x18}


def composed(text: str) -> str:
    """`text` in Unicode normal form C: "e" followed by a combining acute is one "é", which
    GSM 03.38 has, where the decomposed pair would force the whole message into UCS-2 (twice
    the parts). The same characters to a reader; ASCII, most text, is returned at once."""
    if text.isascii() or unicodedata.is_normalized("NFC", text):
        return text
    return unicodedata.normalize("NFC", text)


def _plan_text(
    text: str, force: Alphabet | None, profile: OutboundProfile, *, smart: bool
) -> tuple[str, tuple[Alphabet, int, Shift]]:
    """The text to send and its plan. With `smart`, text that would go as UCS-2 (or that the
    alphabet asked for cannot carry) goes with its look-alike punctuation in GSM characters
    instead, where that spares UCS-2; otherwise exactly as given. Never a text it empties
    (zero-width characters only): that would go as an empty message."""
    if smart and force is not Alphabet.UCS2 and (replaced := plain(text)) != text and replaced:
        exact = _try_plan(text, force, profile)
        if exact is None or exact[0] is Alphabet.UCS2:
            spared = _try_plan(replaced, force, profile)
            if spared is not None and spared[0] is not Alphabet.UCS2:
                return replaced, spared
        if exact is not None:
            return text, exact
    return text, _plan(text, force, profile)  # raises the TextError of the text as given


def _try_plan(
    text: str, force: Alphabet | None, profile: OutboundProfile
) -> tuple[Alphabet, int, Shift] | None:
    try:
        return _plan(text, force, profile)
    except TextError:
        return None


def _plan(
    text: str, force: Alphabet | None, profile: OutboundProfile
) -> tuple[Alphabet, int, Shift]:
    """Alphabet, data_coding and tables: GSM 03.38 where it carries the text, then the
    profile's national tables (auto or gsm7 asked for), then plan_encoding's choice."""
    language = profile.national
    if (
        language is not None
        and force in (None, Alphabet.GSM7)
        and profile.concatenation in UDH_METHODS  # the tables are named in a UDH
        and not profile.default_is_latin1  # and sent as GSM 03.38 septets
        and not is_gsm7(text)
    ):
        shift = national_shift(text, language, profile.concatenation)
        if shift is not None:
            return Alphabet.GSM7, DataCoding.SMSC_DEFAULT, shift
    alphabet, data_coding = plan_encoding(
        text, default_is_latin1=profile.default_is_latin1, force=force
    )
    return alphabet, data_coding, DEFAULT_SHIFT


def _body(template: SubmitSm, segment: Segment) -> bytes:
    template.esm_class = ESM_UDHI if segment.esm_class_udhi else 0
    template.data_coding = segment.data_coding
    template.short_message = segment.short_message
    template.tlvs = segment.tlvs()
    return encode_body(template)
