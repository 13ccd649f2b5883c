"""Submit preparation: addresses, encoding choice, segmentation into submit_sm bodies."""

from __future__ import annotations

import pytest

from smppd import address as address_module
from smppd.address import (
    NumberPlan,
    check_sender,
    from_wire,
    mask,
    normalise_destination,
    sender_ton_npi,
    wire_address,
)
from smppd.outbound import OutboundProfile, composed, prepare
from smppd.pdu.codec import decode_body
from smppd.pdu.command import CommandId
from smppd.pdu.national import NationalLanguage, Shift, decode, shift_of
from smppd.pdu.pdus import SubmitSm
from smppd.pdu.segment import ConcatMethod
from smppd.pdu.segment import count_segments as count_segments_in
from smppd.pdu.text import Alphabet, decode_gsm7, decode_text, encode_gsm7
from smppd.pdu.tlv import Tag, get_int
from smppd.pdu.udh import concat_info, parse_udh
from smppd.service import ApiError, ErrorCode


def bodies_to_pdus(bodies: list[bytes]) -> list[SubmitSm]:
    out = []
    for body in bodies:
        pdu = decode_body(CommandId.submit_sm, 0, 1, body)
        assert isinstance(pdu, SubmitSm)
        out.append(pdu)
    return out


def run(text: str, **overrides: object) -> list[SubmitSm]:
    args: dict[str, object] = {
        "destination": "+447911123456",
        "source": "SMPPD",
        "text": text,
        "encoding": "auto",
        "registered_delivery": True,
        "expires_at": None,
        "ref": 7,
        "profile": OutboundProfile(),
    }
    args.update(overrides)
    return bodies_to_pdus(prepare(**args).bodies)  # type: ignore[arg-type]


def test_single_gsm_message() -> None:
    """A short GSM text is one submit_sm with data_coding 0, TON/NPI and receipts requested."""
    [pdu] = run("Hello [world] €")
    assert pdu.destination_addr == "447911123456"
    assert (pdu.dest_addr_ton, pdu.dest_addr_npi) == (1, 1)
    assert (pdu.source_addr_ton, pdu.source_addr_npi, pdu.source_addr) == (5, 0, "SMPPD")
    assert pdu.data_coding == 0
    assert pdu.esm_class == 0
    assert pdu.registered_delivery == 1
    assert decode_text(pdu.short_message, 0) == "Hello [world] €"


def test_long_unicode_message_is_concatenated_with_udh() -> None:
    """A 100-character UCS-2 text goes as two UDH parts that rejoin to the text."""
    text = "Привет мир! 👋 " * 7
    pdus = run(text)
    assert len(pdus) == 2
    parts = []
    for i, pdu in enumerate(pdus, 1):
        assert pdu.esm_class & 0x40
        assert pdu.data_coding == 8
        ies, payload = parse_udh(pdu.short_message)
        info = concat_info(ies)
        assert info is not None
        assert (info.ref, info.total, info.seq) == (7, 2, i)
        assert len(pdu.short_message) <= 140
        parts.append(payload)
    assert b"".join(parts).decode("utf-16-be") == text


def test_sar_concatenation() -> None:
    """A carrier that wants SAR gets sar_* TLVs and no UDH."""
    pdus = run("x" * 200, profile=OutboundProfile(concatenation=ConcatMethod.SAR))
    assert [get_int(p.tlvs, Tag.sar_segment_seqnum) for p in pdus] == [1, 2]
    assert all(get_int(p.tlvs, Tag.sar_total_segments) == 2 for p in pdus)
    assert all(p.esm_class == 0 for p in pdus)


def test_payload_concatenation() -> None:
    """A carrier that wants message_payload gets one PDU with sm_length 0."""
    [pdu] = run("y" * 500, profile=OutboundProfile(concatenation=ConcatMethod.PAYLOAD))
    assert pdu.short_message == b""
    assert pdu.content == b"y" * 500


def test_decomposed_accents_are_composed_before_the_encoding_is_chosen() -> None:
    """Some clients send "e" + U+0301 for "é": composed, the text stays GSM 03.38 (one part)
    instead of going UCS-2 (two); what the handset shows is the same."""
    decomposed = "Re\u0301sume\u0301 " + "a" * 140
    [pdu] = run(decomposed)
    assert pdu.data_coding == 0
    assert decode_gsm7(pdu.short_message) == "Résumé " + "a" * 140
    assert composed("plain ascii") == "plain ascii"


LATIN1_CARRIER = OutboundProfile(default_is_latin1=True)


def test_a_latin1_default_carrier_gets_latin1_octets_in_gsm_sized_parts() -> None:
    """Its SMSC turns data_coding 0 into GSM 03.38 on the air, so text is cut as that: 160
    characters are one part (not two of 140 octets), an extension character counts twice, and
    the octets written are the Latin-1 of each part's text."""
    [single] = run("é" + "a" * 159, profile=LATIN1_CARRIER)
    assert (single.data_coding, single.short_message) == (0, b"\xe9" + b"a" * 159)
    braces = run("{" * 100, profile=LATIN1_CARRIER)  # 200 septets on the air
    bodies = [parse_udh(p.short_message)[1] for p in braces]
    assert bodies == [b"{" * 76, b"{" * 24]  # 153 septets a part, no escape pair split
    assert all(p.data_coding == 0 and p.esm_class & 0x40 for p in braces)
    assert len(run("a" * 306, profile=LATIN1_CARRIER)) == 2


def test_latin1_asked_of_a_latin1_default_carrier_is_cut_as_gsm_on_the_air() -> None:
    """encoding latin1 to such a carrier is its data_coding 0, which its SMSC sends as GSM:
    cut in septets as `auto` is (it was cut in Latin-1 octets, 168 septets a part on the air
    with escapes), and text GSM lacks is refused rather than replaced on the air."""
    text = "Code [1234] {ok} " * 8
    forced = run(text, profile=LATIN1_CARRIER, encoding="latin1")
    assert [p.short_message for p in forced] == [
        p.short_message for p in run(text, profile=LATIN1_CARRIER)
    ]
    assert all(p.data_coding == 0 for p in forced)
    with pytest.raises(ApiError) as info:
        run("ça va", profile=LATIN1_CARRIER, encoding="latin1")
    assert info.value.code is ErrorCode.unencodable_text
    assert "cannot be sent as latin1 on this route" in info.value.message


def test_a_short_code_destination_goes_as_the_networks_own() -> None:
    """By default TON/NPI follow the destination's form: a short code went as the
    international number +12345 and goes as TON 3 (network specific), NPI 0; a carrier's
    dest_ton/dest_npi, when set, apply to every destination."""
    [pdu] = run("hi", destination="12345")
    assert (pdu.destination_addr, pdu.dest_addr_ton, pdu.dest_addr_npi) == ("12345", 3, 0)
    [number] = run("hi")
    assert (number.dest_addr_ton, number.dest_addr_npi) == (1, 1)
    carrier = OutboundProfile(dest_ton=0, dest_npi=1)
    for destination in ("12345", "+447911123456"):
        [set_for_all] = run("hi", destination=destination, profile=carrier)
        assert (set_for_all.dest_addr_ton, set_for_all.dest_addr_npi) == (0, 1)


def test_priority_flag_by_thirds_where_the_carrier_wants_it() -> None:
    carrier = OutboundProfile(priority_flag=True)
    flags = [run("hi", priority=p, profile=carrier)[0].priority_flag for p in range(10)]
    assert flags == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    assert {run("hi", priority=p)[0].priority_flag for p in range(10)} == {0}


def test_a_latin1_default_carrier_gets_ucs2_for_letters_gsm_lacks() -> None:
    """ç and ` are Latin-1 but not GSM 03.38: the SMSC could only replace them, so UCS-2."""
    [pdu] = run("ça va `ok`", profile=LATIN1_CARRIER)
    assert pdu.data_coding == 8
    assert pdu.short_message.decode("utf-16-be") == "ça va `ok`"


def test_a_latin1_default_carrier_with_payload_or_sar_writes_latin1() -> None:
    [payload] = run(
        "à" * 200,
        profile=OutboundProfile(default_is_latin1=True, concatenation=ConcatMethod.PAYLOAD),
    )
    assert payload.content == b"\xe0" * 200
    sar = run(
        "à" * 200, profile=OutboundProfile(default_is_latin1=True, concatenation=ConcatMethod.SAR)
    )
    assert b"".join(p.short_message for p in sar) == b"\xe0" * 200
    assert [len(p.short_message) for p in sar] == [153, 47]


TURKISH = OutboundProfile(national=NationalLanguage.TURKISH)
TR = NationalLanguage.TURKISH


def test_turkish_text_goes_in_the_turkish_tables_not_ucs2() -> None:
    """With national_language turkish, text with ş ğ ı goes as GSM 7-bit septets whose UDH
    names a Turkish table: here the locking shift table (IE 0x25), where those letters take
    one septet, so 152 characters are one part; behind the single shift table's escapes they
    would take two parts, and as UCS-2 three."""
    text = "Sayın müşterimiz, siparişiniz yola çıktı. Kargo takip numaranız: 4471 2390. " * 2
    assert len(text) == 152
    [pdu] = run(text, profile=TURKISH)
    assert (pdu.esm_class, pdu.data_coding) == (0x40, 0)
    elements, septets = parse_udh(pdu.short_message)
    assert [(e.iei, e.data) for e in elements] == [(0x25, b"\x01")]
    assert decode(septets, Shift(locking=TR)) == text
    single = Shift(single=TR)
    assert count_segments_in(text, Alphabet.GSM7, ConcatMethod.UDH8, single) == 2
    assert len(run(text)) == 3  # without the tables: UCS-2, 67 characters a part


def test_long_turkish_text_names_its_tables_in_every_part() -> None:
    """Each part carries the concatenation IE and then the table's, and holds 149 septets
    at most (140 octets less a 9-octet UDH)."""
    text = "ışığı şıkışık " * 30
    pdus = run(text, profile=TURKISH)
    assert len(pdus) == 3
    texts = []
    for seq, pdu in enumerate(pdus, 1):
        elements, septets = parse_udh(pdu.short_message)
        info = concat_info(elements)
        assert info is not None
        assert (info.ref, info.total, info.seq) == (7, 3, seq)
        assert [(e.iei, e.data) for e in elements[1:]] == [(0x25, b"\x01")]
        assert len(septets) <= 149
        texts.append(decode(septets, Shift(locking=TR)))
    assert "".join(texts) == text


def test_both_tables_where_the_locking_one_lacks_a_letter() -> None:
    """Portuguese: ã takes one septet in the locking table, which has no Ω; the single shift
    table has it. Both named (IEs 0x25 and 0x24), 151 septets fit one part of 152."""
    text = "ã" * 10 + "Ω" + "a" * 139
    [pdu] = run(text, profile=OutboundProfile(national=NationalLanguage.PORTUGUESE))
    elements, septets = parse_udh(pdu.short_message)
    assert [(e.iei, e.data) for e in elements] == [(0x25, b"\x03"), (0x24, b"\x03")]
    assert len(septets) == 151
    assert decode(septets, shift_of(elements)) == text


def test_national_tables_only_where_gsm_lacks_the_text() -> None:
    """Text the default alphabet carries goes without a UDH; text no Turkish table has goes
    as UCS-2; ucs2 asked for is UCS-2; gsm7 asked for may use the tables."""
    [plain] = run("Merhaba dünya", profile=TURKISH)
    assert (plain.esm_class, plain.short_message) == (0, encode_gsm7("Merhaba dünya"))
    [cyrillic] = run("Привет, ş", profile=TURKISH)
    assert cyrillic.data_coding == 8
    [asked] = run("teşekkürler", profile=TURKISH, encoding="ucs2")
    assert asked.data_coding == 8
    [forced] = run("teşekkürler", profile=TURKISH, encoding="gsm7")
    assert (forced.esm_class, forced.data_coding) == (0x40, 0)
    with pytest.raises(ApiError) as caught:
        run("teşekkürler", encoding="gsm7")  # no national tables on this carrier
    assert caught.value.code is ErrorCode.unencodable_text


@pytest.mark.parametrize(
    "profile",
    [
        OutboundProfile(national=TR, concatenation=ConcatMethod.SAR),
        OutboundProfile(national=TR, concatenation=ConcatMethod.PAYLOAD),
        OutboundProfile(national=TR, default_is_latin1=True),
    ],
)
def test_national_tables_where_they_cannot_go_fall_back_to_ucs2(
    profile: OutboundProfile,
) -> None:
    """The configuration refuses these; a profile built otherwise sends UCS-2, not an error."""
    pdus = run("teşekkürler", profile=profile)
    assert {pdu.data_coding for pdu in pdus} == {8}


def test_validity_is_absolute_utc() -> None:
    """An expiry becomes an absolute validity_period in UTC."""
    [pdu] = run("hi", expires_at=1_700_000_000.0)
    assert pdu.validity_period == "231114221320000+"


def test_unencodable_and_too_long() -> None:
    """Text a forced alphabet cannot carry, or over the segment cap, is refused with its code."""
    with pytest.raises(ApiError) as info:
        run("emoji 👋", encoding="latin1")
    assert info.value.code is ErrorCode.unencodable_text
    with pytest.raises(ApiError) as info:
        run("z" * 2000)
    assert info.value.code is ErrorCode.too_many_segments
    with pytest.raises(ApiError) as info:
        run("hi", encoding="klingon")
    assert info.value.code is ErrorCode.invalid_field


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+44 7911 123-456", "+447911123456"),
        ("+44 (0) 7911-123456", "+447911123456"),
        ("0044(0)7911 123456", "+447911123456"),
        ("+353 (0)87 123 4567", "+353871234567"),
        ("44 (0) 7700 900123", "+447700900123"),  # the country code without + or 00
        ("+44 (20) 7946 0000", "+442079460000"),
        ("00447911123456", "+447911123456"),
        ("447911123456", "+447911123456"),
        ("12345", "12345"),
    ],
)
def test_destination_normalisation(raw: str, expected: str) -> None:
    """International forms normalise to +E.164; short digits are short codes."""
    assert normalise_destination(raw) == expected


@pytest.mark.parametrize(
    ("raw", "prefix", "expected"),
    [
        ("07911 123456", "44", "+447911123456"),  # the trunk 0 goes
        ("7911123456", "44", "+447911123456"),
        ("447911123456", "44", "+447911123456"),  # international without the +
        ("+447911123456", "44", "+447911123456"),
        ("2025550123", "1", "+12025550123"),  # no trunk 0 in the NANP
        ("12025550123", "1", "+12025550123"),
    ],
)
def test_national_numbers_with_default_country(raw: str, prefix: str, expected: str) -> None:
    """With a default country prefix, a national number gets it in place of its trunk 0; bare
    digits that already begin with it are the international number."""
    assert normalise_destination(raw, plan=NumberPlan(prefix)) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("20123456", "+4520123456"),  # a Danish mobile: 8 digits, no trunk 0
        ("20 12 34 56", "+4520123456"),
        ("4520123456", "+4520123456"),
        ("123456", "123456"),  # a short code still
        ("1231", "1231"),
    ],
)
def test_eight_digit_national_numbers_with_shorter_short_codes(raw: str, expected: str) -> None:
    """Where national numbers have 8 digits, short_code_max_digits 6 makes them numbers."""
    plan = NumberPlan("45", short_code_max_digits=6)
    assert normalise_destination(raw, plan=plan) == expected
    assert normalise_destination("20123456") == "20123456"  # 8 digits: a short code by default


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("+12", "2 digits, E.164 has 7 to 15"),
        ("+4479111234567890", "16 digits, E.164 has 7 to 15"),
        ("hello", "not only digits"),
        ("+44abc", "not only digits"),
        ("", "not only digits"),
        ("+0123456789", "no country code"),
        ("07911123456", "no country code (or set compliance.default_country_prefix)"),
        ("+44" + " " * 58 + "7911123456", "71 characters, at most 64 with separators"),
        (" " * 1_000_000 + "(", "1000001 characters"),
    ],
)
def test_bad_destinations(raw: str, why: str) -> None:
    """Impossible numbers are invalid_address naming the field and what is wrong, without
    echoing the number (the caller sees it masked, so the reason is what tells it apart)."""
    with pytest.raises(ApiError) as info:
        normalise_destination(raw, field="to")
    assert info.value.code is ErrorCode.invalid_address
    assert info.value.field == "to"
    assert why in info.value.message
    if len(raw) > 6:
        assert raw not in info.value.message


def test_a_long_run_of_separators_is_read_in_linear_time() -> None:
    """The trunk-0 pattern over 200,000 spaces and a bracket that closes nothing: no split of
    the run between two quantifiers is tried (the old pattern took minutes; 40 KB, 8 s)."""
    raw = " " * 200_000 + "("
    assert address_module._TRUNK_ZERO.sub(r"\1", raw) == raw


def test_sender_forms() -> None:
    """Sender TON/NPI follow the id's form; alphanumerics are at most 11 characters."""
    assert sender_ton_npi("SMPPD") == (5, 0)
    assert sender_ton_npi("12345") == (3, 0)
    assert sender_ton_npi("+447911123456") == (1, 1)
    check_sender("ElevenChars")
    with pytest.raises(ApiError):
        check_sender("TwelveChars!")
    assert from_wire("447911123456", 1) == "+447911123456"
    assert from_wire("00447911123456", 1) == "+447911123456"
    assert from_wire("12345", 3) == "12345"


@pytest.mark.parametrize("sender", ["ACME", "My Shop", "Co-op", "+INFO", "[[[[[", "12345"])
def test_senders_networks_carry(sender: str) -> None:
    check_sender(sender)


@pytest.mark.parametrize(
    ("sender", "why"),
    [
        ("a`b", "GSM 03.38 septets"),  # no backtick in GSM 03.38
        ("[[[[[[", "GSM 03.38 septets"),  # 12 septets
        ("Caf\u00e9", "GSM 03.38 septets"),
        ("", "GSM 03.38 septets"),
        ("00447911123456", "international form"),
        ("07911123456", "international form"),
        ("+4479111234567890", "7 to 15 digits, not 16"),
    ],
)
def test_senders_no_network_carries(sender: str, why: str) -> None:
    with pytest.raises(ApiError) as info:
        check_sender(sender)
    assert why in info.value.message


def test_an_alphanumeric_sender_keeps_a_leading_plus_on_the_wire() -> None:
    assert wire_address("+INFO") == "+INFO"
    assert wire_address("+447911123456") == "447911123456"


def test_mask_hides_the_middle() -> None:
    """Masked numbers keep a prefix and the last two digits."""
    assert mask("+447911123456") == "+44791*****56"
    assert mask("12345") == "12345"


def test_a_flash_message_names_class_0_and_its_alphabet_in_every_part() -> None:
    """GSM text goes with data_coding 0x10, the same septets as without flash; UCS-2 with
    0x18; a long one carries it in each part. To a carrier whose data_coding 0 is Latin-1 the
    text still goes as GSM septets, since 0x10 says so; Latin-1, which names no class, is
    refused."""
    text = "Your code is 4711 [valid 5 min] €"
    [plain] = run(text)
    [flash] = run(text, flash=True)
    assert (flash.data_coding, flash.short_message) == (0x10, plain.short_message)
    assert decode_text(flash.short_message, flash.data_coding) == text
    latin1_carrier = OutboundProfile(default_is_latin1=True)
    [to_latin1] = run(text, flash=True, profile=latin1_carrier)
    assert (to_latin1.data_coding, to_latin1.short_message) == (0x10, plain.short_message)
    cyrillic = run("Ваш код 4711. " * 8, flash=True)
    assert len(cyrillic) == 2
    assert {p.data_coding for p in cyrillic} == {0x18}
    assert all(p.esm_class & 0x40 for p in cyrillic)
    with pytest.raises(ApiError) as info:
        run(text, flash=True, encoding="latin1")
    assert (info.value.code, info.value.field) == (ErrorCode.invalid_field, "flash")


def test_smart_encoding_sends_typographic_punctuation_as_gsm_where_that_spares_ucs2() -> None:
    """One curly apostrophe would make 150 characters three UCS-2 parts; with smart_encoding
    they go as one GSM part with a plain apostrophe, dashes and spaces likewise. Without it,
    or where the text needs UCS-2 anyway (an emoji), it goes exactly as given."""
    text = "Don\u2019t miss it \u2013 \u201cdoors\u201d open at 9\u00a0am\u2026 " + "x" * 100
    assert len(run(text)) == 3
    [smart] = run(text, smart=True)
    assert smart.data_coding == 0
    assert decode_text(smart.short_message, 0) == (
        'Don\'t miss it - "doors" open at 9 am... ' + "x" * 100
    )
    with_emoji = "Don\u2019t miss it \U0001f600"
    [kept] = run(with_emoji, smart=True)
    assert (kept.data_coding, decode_text(kept.short_message, 8)) == (8, with_emoji)
    [exact] = run("Don\u2019t", encoding="ucs2", smart=True)  # asked for UCS-2: as given
    assert decode_text(exact.short_message, 8) == "Don\u2019t"


def test_smart_encoding_never_sends_a_text_it_empties() -> None:
    """Zero-width characters only went as an empty submit_sm (sm_length 0), which the API
    refuses as "": the text goes as given (UCS-2), and a forced gsm7 refuses it."""
    text = "\u200b\u200b"
    [pdu] = run(text, smart=True)
    assert (pdu.data_coding, decode_text(pdu.short_message, 8)) == (8, text)
    with pytest.raises(ApiError) as info:
        run(text, encoding="gsm7", smart=True)
    assert info.value.code == ErrorCode.unencodable_text


def test_smart_encoding_makes_a_forced_gsm7_fit_and_leaves_letters_alone() -> None:
    """encoding gsm7 refuses a curly quote unless smart_encoding replaces it; letters GSM
    lacks are never replaced: with the Turkish tables ş goes as itself, beside a plain
    apostrophe."""
    with pytest.raises(ApiError) as info:
        run("it\u2019s", encoding="gsm7")
    assert info.value.code == ErrorCode.unencodable_text
    [forced] = run("it\u2019s", encoding="gsm7", smart=True)
    assert decode_text(forced.short_message, 0) == "it's"
    turkish = "Ba\u015far\u0131\u2019n\u0131z"  # with a curly apostrophe
    [pdu] = run(turkish, smart=True, profile=TURKISH)
    assert (pdu.esm_class, pdu.data_coding) == (0x40, 0)
    elements, septets = parse_udh(pdu.short_message)
    assert decode(septets, shift_of(elements)) == "Ba\u015far\u0131'n\u0131z"
    [accented] = run("Se\u00f1or\u2019s caf\u00e1", smart=True)  # á is not GSM: UCS-2, as given
    assert (
        decode_text(accented.short_message, accented.data_coding) == "Se\u00f1or\u2019s caf\u00e1"
    )
