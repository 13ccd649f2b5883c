"""Mobile-originated messages: the deliver_sm segments a handset's text arrives in.

Owns the mapping of a text and two addresses onto deliver_sm PDUs: the alphabet and data_coding
(per the SMSC's default alphabet), the split into UDH, SAR or payload segments (smppd.pdu.segment)
and the TON/NPI of each address. It must not know binds or queues.
"""

from __future__ import annotations

from smppd.pdu.national import DEFAULT_SHIFT, NationalLanguage
from smppd.pdu.pdus import ESM_UDHI, DeliverSm
from smppd.pdu.segment import ConcatMethod, national_shift, split_message
from smppd.pdu.text import Alphabet, plan_encoding
from smppd.pdu.udh import MAX_CONCAT_PARTS


def address(addr: str) -> tuple[int, int, str]:
    """TON, NPI and digits of an address: "+447..." is international E.164, letters alphanumeric."""
    if addr.startswith("+") and addr[1:].isdigit():
        return 1, 1, addr[1:]  # international, ISDN (E.164)
    if addr.isdigit():
        return 0, 1, addr  # unknown, ISDN: national numbers and short codes
    return 5, 0, addr  # alphanumeric


def mo_pdus(
    *,
    source: str,
    destination: str,
    text: str,
    method: ConcatMethod,
    ref: int,
    default_alphabet: Alphabet,
    national: NationalLanguage | None = None,
) -> list[DeliverSm]:
    """The deliver_sm PDUs carrying `text` from `source` to `destination`, in part order.

    `national`: text the default alphabet lacks goes in that language's shift tables where
    they carry it, named in each part's UDH, as a handset set up for it writes it (UDH8 and
    UDH16 only, with a GSM default alphabet)."""
    alphabet, data_coding = plan_encoding(
        text, default_is_latin1=default_alphabet is Alphabet.LATIN1
    )
    shift = DEFAULT_SHIFT
    if national is not None and alphabet is not Alphabet.GSM7:
        if default_alphabet is not Alphabet.GSM7:
            raise ValueError("national language tables need the GSM default alphabet")
        found = national_shift(text, national, method)  # ValueError unless UDH8/UDH16
        if found is not None:
            alphabet, data_coding, shift = Alphabet.GSM7, 0, found
    if method is ConcatMethod.UDH8:
        ref &= 0xFF
    segments = split_message(
        text,
        alphabet=alphabet,
        data_coding=data_coding,
        method=method,
        ref=ref,
        max_segments=MAX_CONCAT_PARTS,
        shift=shift,
    )
    source_ton, source_npi, source_addr = address(source)
    dest_ton, dest_npi, dest_addr = address(destination)
    return [
        DeliverSm(
            source_addr_ton=source_ton,
            source_addr_npi=source_npi,
            source_addr=source_addr,
            dest_addr_ton=dest_ton,
            dest_addr_npi=dest_npi,
            destination_addr=dest_addr,
            esm_class=ESM_UDHI if segment.esm_class_udhi else 0,
            data_coding=segment.data_coding,
            short_message=segment.short_message,
            tlvs=segment.tlvs(),
        )
        for segment in segments
    ]
