"""Delivery receipt parsing, stat normalisation and message-id correlation."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import smppd.pdu.receipt as receipt_module
from smppd.pdu.receipt import (
    IdFormat,
    MessageState,
    NetworkError,
    Receipt,
    ReceiptOutcome,
    ReceiptStat,
    correlation_keys,
    learned_receipt_keys,
    parse_receipt_text,
    primary_key,
    receipt_from_parts,
    receipt_keys,
    resp_keys,
)

SPEC_EXAMPLE = (
    "id:0123456789 sub:001 dlvrd:001 submit date:0511210000 done date:0511210001 "
    "stat:DELIVRD err:000 Text:Hello World"
)


def parse(text: str) -> Receipt:
    receipt = parse_receipt_text(text)
    assert receipt is not None
    return receipt


# --- the receipt text -------------------------------------------------------------------------


def test_spec_example() -> None:
    """The SMPP v3.4 Appendix B layout yields every field."""
    receipt = parse(SPEC_EXAMPLE)
    assert receipt.message_id == "0123456789"
    assert receipt.sub == "001"
    assert receipt.dlvrd == "001"
    assert receipt.submit_date == datetime(2005, 11, 21, 0, 0)
    assert receipt.done_date == datetime(2005, 11, 21, 0, 1)
    assert receipt.stat is ReceiptStat.DELIVRD
    assert receipt.err == "000"
    assert receipt.text == "Hello World"
    assert receipt.extra == {}
    assert receipt.is_final
    assert receipt.outcome is ReceiptOutcome.DELIVERED


def test_kannel_style_receipt() -> None:
    """The common gateway rendering with lower-case `text:` parses the same way."""
    receipt = parse(
        "id:0123456789 sub:001 dlvrd:001 submit date:2311231200 done date:2311231201 "
        "stat:DELIVRD err:000 text:Hello"
    )
    assert receipt.message_id == "0123456789"
    assert receipt.submit_date == datetime(2023, 11, 23, 12, 0)
    assert receipt.done_date == datetime(2023, 11, 23, 12, 1)
    assert receipt.text == "Hello"


def test_jasmin_style_order_and_uuid_id() -> None:
    """Fields in another order with a UUID id are read by name, not position."""
    receipt = parse(
        "id:5a8e5c0c-3c1c-4d6e-9c1b-2f2b7c9d0e1f submit date:2311231200 done date:2311231205 "
        "stat:UNDELIV sub:001 dlvrd:000 err:001 text:Your code is"
    )
    assert receipt.message_id == "5a8e5c0c-3c1c-4d6e-9c1b-2f2b7c9d0e1f"
    assert receipt.stat is ReceiptStat.UNDELIV
    assert receipt.outcome is ReceiptOutcome.UNDELIVERABLE
    assert receipt.dlvrd == "000"
    assert receipt.text == "Your code is"


def test_upper_case_names() -> None:
    """Field names are case-insensitive."""
    receipt = parse(
        "ID:77 SUB:001 DLVRD:001 SUBMIT DATE:2311231200 DONE DATE:2311231201 STAT:EXPIRED ERR:000"
    )
    assert receipt.message_id == "77"
    assert receipt.stat is ReceiptStat.EXPIRED
    assert receipt.submit_date == datetime(2023, 11, 23, 12, 0)
    assert receipt.done_date == datetime(2023, 11, 23, 12, 1)


@pytest.mark.parametrize(
    "name", ["submit date", "submit_date", "submitdate", "Submit-Date", "submit   date"]
)
def test_date_name_variants(name: str) -> None:
    """The two-word date names are read with a space, underscore, hyphen or nothing between."""
    receipt = parse(f"id:1 {name}:2311231200 stat:DELIVRD")
    assert receipt.submit_date == datetime(2023, 11, 23, 12, 0)
    assert receipt.extra == {}


def test_missing_text_and_fields() -> None:
    """Absent fields are None (or an empty err), not an error."""
    receipt = parse("id:42 stat:DELIVRD")
    assert receipt == Receipt(message_id="42", stat=ReceiptStat.DELIVRD)
    assert receipt.err == ""
    assert receipt.text is None
    assert receipt.submit_date is None


@pytest.mark.parametrize("text", ["none", "NONE", "", "   "])
def test_text_none_or_empty_is_none(text: str) -> None:
    """`text:none` and an empty text mean there is no excerpt."""
    assert parse(f"id:1 stat:DELIVRD err:000 text:{text}").text is None


def test_text_runs_to_the_end_with_colons_and_spaces() -> None:
    """The text field is the rest of the string, field-like words included."""
    receipt = parse("id:1 stat:DELIVRD err:000 text:Meet at 10:30  id:2 stat:UNDELIV")
    assert receipt.text == "Meet at 10:30  id:2 stat:UNDELIV"
    assert receipt.message_id == "1"
    assert receipt.stat is ReceiptStat.DELIVRD


def test_text_before_stat_ends_at_the_next_known_field() -> None:
    """Some SMSCs write the text before stat and err: those are still read (the message was
    delivered, not unknown), and the text stops where they start."""
    receipt = parse(
        "id:AB23 sub:001 dlvrd:001 done date:2612041201 text:hello x:y stat:DELIVRD err:000"
    )
    assert (receipt.message_id, receipt.stat, receipt.err) == ("AB23", ReceiptStat.DELIVRD, "000")
    assert receipt.text == "hello x:y"
    assert receipt.done_date is not None
    assert parse("id:7 text:only stat:UNDELIV").stat is ReceiptStat.UNDELIV
    assert parse("id:7 text:no stat here").stat is ReceiptStat.UNKNOWN


def test_alphanumeric_err_is_kept_as_text() -> None:
    """Carriers' alphanumeric error codes survive untouched."""
    assert parse("id:1 stat:UNDELIV err:ABC text:x").err == "ABC"
    assert parse("id:1 stat:UNDELIV err:0x1F").err == "0x1F"


def test_extra_spaces_and_terminators() -> None:
    """Padding around names and values, NULs and separators do not leak into values."""
    receipt = parse("\x00  id : 99   sub: 001 ,stat:  DELIVRD;  err:000 text: hi  \x00\x00")
    assert receipt.message_id == "99"
    assert receipt.sub == "001"
    assert receipt.stat is ReceiptStat.DELIVRD
    assert receipt.err == "000"
    assert receipt.text == "hi"


def test_unknown_fields_go_to_extra() -> None:
    """Fields this module does not know are kept by case-folded name."""
    receipt = parse("id:1 sub:001 dlvrd:001 stat:DELIVRD err:000 MCC:234 mnc:15 text:x")
    assert receipt.extra == {"mcc": "234", "mnc": "15"}


def test_first_occurrence_wins() -> None:
    """A repeated field keeps its first value."""
    assert parse("id:1 id:2 stat:DELIVRD stat:UNDELIV").message_id == "1"
    assert parse("id:1 id:2 stat:DELIVRD stat:UNDELIV").stat is ReceiptStat.DELIVRD


def test_buffered_is_enroute_and_intermediate() -> None:
    """BUFFRED-style words normalise to ENROUTE, which does not settle the message."""
    for word in ("BUFFRED", "BUFFERD", "buffered"):
        receipt = parse(f"id:1 stat:{word}")
        assert receipt.stat is ReceiptStat.ENROUTE
        assert not receipt.is_final
        assert receipt.outcome is ReceiptOutcome.ENROUTE


def test_unrecognised_stat_is_unknown_and_kept() -> None:
    """A stat word nobody documented reads as final UNKNOWN; the word is kept in extra."""
    receipt = parse("id:1 stat:WEIRD err:000")
    assert receipt.stat is ReceiptStat.UNKNOWN
    assert receipt.is_final
    assert receipt.extra == {"stat": "WEIRD"}


def test_id_without_stat_is_a_receipt_that_settles_nothing() -> None:
    """A receipt with an id but no stat is still a receipt, but one that gives no state: not
    final (as UNKNOWN would be), since the outcome may follow in another."""
    receipt = parse("id:abc err:000")
    assert receipt.stat is ReceiptStat.UNKNOWN
    assert not receipt.stated
    assert not receipt.is_final
    assert "stat" not in receipt.extra
    assert parse("id:abc stat:UNKNOWN").is_final  # said so: final


def test_stat_without_id() -> None:
    """A stat alone is a receipt with an empty id (the TLV may supply it)."""
    receipt = parse("stat:DELIVRD err:000")
    assert receipt.message_id == ""
    assert receipt.stat is ReceiptStat.DELIVRD


@pytest.mark.parametrize(
    "text", ["", "Hello, see you at 10:30", "sub:001 dlvrd:001 err:000", "text:id:1 stat:DELIVRD"]
)
def test_not_a_receipt(text: str) -> None:
    """Text with neither an id nor a stat (before the text field) is not a receipt."""
    assert parse_receipt_text(text) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2311231200", datetime(2023, 11, 23, 12, 0)),
        ("231123120059", datetime(2023, 11, 23, 12, 0, 59)),
        ("20231123120059", datetime(2023, 11, 23, 12, 0, 59)),
        ("19991231235959", datetime(1999, 12, 31, 23, 59, 59)),
        ("2023-11-23 12:00:59", datetime(2023, 11, 23, 12, 0, 59)),
        ("2023-11-23T12:00:59", datetime(2023, 11, 23, 12, 0, 59)),
        ("2313231200", None),  # month 13
        ("2311232460", None),  # hour 24
        ("231123120", None),  # 9 digits
        ("23112312OO", None),
        ("", None),
        ("\u0663\u0661\u0661\u0661\u0662\u0663\u0661\u0662\u0660\u0660", None),  # Arabic-Indic
    ],
)
def test_dates(value: str, expected: datetime | None) -> None:
    """Dates of 10, 12 or 14 digits parse (separators tolerated); anything else is None."""
    assert parse(f"id:1 submit date:{value} done date:{value} stat:DELIVRD").submit_date == expected
    assert parse(f"id:1 done date:{value} stat:DELIVRD").done_date == expected


def test_text_is_not_in_repr() -> None:
    """The message excerpt never shows in a logged receipt."""
    assert "Secret" not in repr(parse("id:1 stat:DELIVRD text:Secret 123456"))


# --- stats and message states -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "stat"),
    [
        ("DELIVRD", ReceiptStat.DELIVRD),
        ("delivered", ReceiptStat.DELIVRD),
        ("EXPIRD", ReceiptStat.EXPIRED),
        ("DELETED", ReceiptStat.DELETED),
        ("UNDELIVERABLE", ReceiptStat.UNDELIV),
        ("UNDELIVERED", ReceiptStat.UNDELIV),
        ("REJECTED", ReceiptStat.REJECTD),
        ("ACKED", ReceiptStat.ACCEPTD),
        ("ACCEPTED", ReceiptStat.ACCEPTD),
        ("ENROUTE", ReceiptStat.ENROUTE),
        ("SKIPPED", ReceiptStat.UNDELIV),
        ("2", ReceiptStat.DELIVRD),
        ("08", ReceiptStat.REJECTD),
        ("0", None),
        ("99", None),
        ("", None),
        ("NOPE", None),
    ],
)
def test_stat_words(word: str, stat: ReceiptStat | None) -> None:
    """Spec words, carrier variants and message_state numbers normalise; the rest do not."""
    assert ReceiptStat.from_word(word) is stat


def test_final_and_intermediate() -> None:
    """Only ENROUTE and ACCEPTD leave the message open."""
    assert {s for s in ReceiptStat if not s.is_final} == {ReceiptStat.ENROUTE, ReceiptStat.ACCEPTD}


def test_every_stat_has_a_distinct_outcome_and_state() -> None:
    """Stats, outcomes and message states correspond one to one (SKIPPED aside)."""
    assert len({s.outcome for s in ReceiptStat}) == len(ReceiptStat)
    for stat in ReceiptStat:
        assert ReceiptStat.from_message_state(stat.message_state) is stat
        assert ReceiptStat.from_word(stat.message_state.name) is stat


def test_every_message_state_maps() -> None:
    """Every message_state value of 5.2.28 (and v5's SKIPPED) has a stat; others have none."""
    for state in MessageState:
        assert ReceiptStat.from_message_state(state) is not None
    assert ReceiptStat.from_message_state(0) is None
    assert ReceiptStat.from_message_state(255) is None


# --- text and TLVs together -------------------------------------------------------------------


def test_message_state_tlv_overrides_text() -> None:
    """The message_state TLV wins over the text's stat; the text still gives the rest."""
    receipt = receipt_from_parts(
        SPEC_EXAMPLE,
        receipted_message_id=None,
        message_state=MessageState.UNDELIVERABLE,
        network_error_code=None,
    )
    assert receipt is not None
    assert receipt.stat is ReceiptStat.UNDELIV
    assert receipt.message_id == "0123456789"
    assert receipt.done_date == datetime(2005, 11, 21, 0, 1)
    assert receipt.err == "000"


def test_tlvs_override_id_and_err() -> None:
    """receipted_message_id and network_error_code win over the text's id and err."""
    receipt = receipt_from_parts(
        "id:1234 stat:DELIVRD err:000 text:hi",
        receipted_message_id="4D2\x00",
        message_state=2,
        network_error_code=bytes([3, 0x00, 0x22]),
    )
    assert receipt is not None
    assert receipt.message_id == "4D2"
    assert receipt.err == "034"
    assert receipt.network_error == NetworkError(network_type=3, error_code=0x22)
    assert receipt.text == "hi"


def test_tlvs_that_agree_with_the_text_give_the_text_receipt() -> None:
    """The usual receipt: TLVs repeating the text's id and state add nothing to it."""
    text = SPEC_EXAMPLE
    parsed = parse_receipt_text(text)
    assert parsed is not None
    receipt = receipt_from_parts(
        text,
        receipted_message_id=parsed.message_id + "\x00",
        message_state=MessageState.DELIVERED,
        network_error_code=None,
    )
    assert receipt == parsed
    assert receipt.stat is ReceiptStat.DELIVRD


def test_invalid_tlvs_fall_back_to_text() -> None:
    """A message_state that is no state, an empty id or a short error code is ignored."""
    receipt = receipt_from_parts(
        "id:1 stat:EXPIRED err:ABC",
        receipted_message_id="",
        message_state=42,
        network_error_code=b"\x03\x00",
    )
    assert receipt == parse("id:1 stat:EXPIRED err:ABC")


def test_tlvs_alone() -> None:
    """A receipt with no text (e.g. data_sm) is built from the TLVs."""
    receipt = receipt_from_parts(
        None, receipted_message_id="abc", message_state=3, network_error_code=None
    )
    assert receipt == Receipt(message_id="abc", stat=ReceiptStat.EXPIRED)


def test_tlvs_with_non_receipt_text() -> None:
    """TLVs make a receipt even when the text is not in the receipt format."""
    receipt = receipt_from_parts(
        "Delivered!", receipted_message_id="abc", message_state=None, network_error_code=None
    )
    assert receipt == Receipt(message_id="abc", stat=ReceiptStat.UNKNOWN, stated=False)
    assert not receipt.is_final
    stated = receipt_from_parts(
        "Delivered!", receipted_message_id="abc", message_state=7, network_error_code=None
    )
    assert stated == Receipt(message_id="abc", stat=ReceiptStat.UNKNOWN)
    assert stated.is_final


def test_nothing_is_no_receipt() -> None:
    """Neither TLVs nor receipt text: not a receipt."""
    assert (
        receipt_from_parts(
            "hello", receipted_message_id=None, message_state=None, network_error_code=b"\x03\0\1"
        )
        is None
    )
    assert (
        receipt_from_parts(None, receipted_message_id=" ", message_state=0, network_error_code=None)
        is None
    )


# --- correlation ------------------------------------------------------------------------------


def correlate(a: str, b: str) -> bool:
    return bool(set(correlation_keys(a)) & set(correlation_keys(b)))


def test_hex_and_decimal_above_64_bits() -> None:
    """A 72-bit id in hex matches its decimal rendering."""
    value = 0x1A2B3C4D5E6F7A8B9C
    assert value > 2**64
    assert correlate("1A2B3C4D5E6F7A8B9C", str(value))
    assert correlate("1a2b3c4d5e6f7a8b9c", "0" + str(value))
    assert correlation_keys("1A2B3C4D5E6F7A8B9C") == (str(value),)


def test_case_and_leading_zeros() -> None:
    """Case and leading zeros do not matter."""
    assert correlation_keys("00ABC") == correlation_keys("abc") == ("2748",)
    assert correlate("0x00abc", "ABC")
    assert correlate("0001234", "1234")


def test_decimal_looking_ids_have_both_readings() -> None:
    """An all-digit id is keyed as decimal first, then as hex."""
    assert correlation_keys("1234") == ("1234", "4660")
    assert primary_key("1234") == "1234"
    assert correlate("1234", "4D2")  # decimal in the resp, hex in the receipt
    assert correlate("4660", "1234")  # hex-without-letters in the resp, decimal in the receipt
    assert correlation_keys("7") == ("7",)
    assert correlation_keys("000") == ("0",)


def test_long_decimal_ids() -> None:
    """Decimal ids of 20+ digits keep their exact value."""
    big = "123456789012345678901234567890"
    assert correlation_keys(big)[0] == big
    assert correlate(big, format(int(big), "X"))
    assert not correlate(big, str(int(big) + 1))


def test_non_numeric_ids() -> None:
    """Alphanumeric ids match case-insensitively without leading zeros and never as numbers."""
    uuid = "5A8E5C0C-3C1C-4D6E-9C1B-2F2B7C9D0E1F"
    assert correlate(uuid, uuid.lower())
    assert correlation_keys("00XyZ") == ("s:xyz",)
    assert correlate("00XyZ", "xyz")
    assert not correlate("xyz", "abc")
    assert primary_key("00XyZ") == "s:xyz"


def test_whitespace_nul_and_empty() -> None:
    """Padding and NULs are ignored; an empty id has no keys and matches nothing."""
    assert correlation_keys(" 12ab\x00") == correlation_keys("12AB")
    assert correlation_keys("") == ()
    assert correlation_keys(" \x00 ") == ()
    assert primary_key("\x00") == ""
    assert "" not in correlation_keys("0")


def test_overlong_ids_are_opaque() -> None:
    """Ids over 65 characters are not read as numbers (bounding the conversion work)."""
    digits = "9" * 66
    assert correlation_keys(digits) == ("s:" + digits,)
    assert correlation_keys("9" * 65)[0] == "9" * 65


def test_unicode_digits_are_not_numbers() -> None:
    """Only ASCII digits count; int()'s acceptance of other scripts' digits is not used."""
    assert correlation_keys("\u0661\u0662") == ("s:\u0661\u0662",)
    assert correlation_keys("1_000") == ("s:1_000",)


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=2**200), st.integers(min_value=0, max_value=4))
def test_renderings_of_one_value_share_a_key(value: int, zeros: int) -> None:
    """Decimal, lower and upper hex, zero-padded or 0x-prefixed renderings all correlate."""
    pad = "0" * zeros
    renderings = [
        pad + str(value),
        pad + format(value, "x"),
        pad + format(value, "X"),
        "0x" + format(value, "x"),
    ]
    for rendering in renderings:
        assert str(value) in correlation_keys(rendering)
        assert correlate(renderings[0], rendering)


@settings(max_examples=200)
@given(st.text(max_size=80))
def test_correlation_keys_are_total(message_id: str) -> None:
    """Any string gets at most two keys, the first being its primary key."""
    keys = correlation_keys(message_id)
    assert len(keys) <= 2
    assert primary_key(message_id) == (keys[0] if keys else "")


def matched_when_every_reading_was_stored(resp: str, receipt: str) -> bool:
    """The earlier rule: the same id as written, or a numeric reading in common."""
    a, b = (i.strip(" \t\r\n\x00\x0b\x0c").casefold().lstrip("0") for i in (resp, receipt))
    return (bool(resp.strip(" \t\r\n\x00\x0b\x0c")) and a == b) or correlate(resp, receipt)


renderings = st.integers(min_value=0, max_value=5000).flatmap(
    lambda v: st.sampled_from([str(v), f"{v:x}", f"{v:X}", f"0x{v:x}", f"00{v}", f"000{v:x}"])
)


@settings(max_examples=500)
@given(st.one_of(renderings, st.text("0123456789abcdefxAZ-", max_size=6)), st.data())
def test_one_resp_key_matches_as_every_reading_did(resp: str, data: st.DataObject) -> None:
    """A resp id is stored under one key, and a receipt's keys find it from exactly the
    renderings that matched when every numeric reading of the resp id was stored."""
    receipt = data.draw(st.one_of(renderings, st.just(resp), st.just(resp.upper())))
    keys = resp_keys(resp)
    assert len(keys) <= 1
    found = bool(set(keys) & set(receipt_keys(receipt)))
    assert found == matched_when_every_reading_was_stored(resp, receipt)


@pytest.mark.parametrize(
    ("resp", "receipt"),
    [("0x120", "78"), ("0x120", "288"), ("0x120", "120"), ("120", "0x120"), ("120", "78")],
)
def test_a_0x_id_of_digits_matches_as_every_reading_did(resp: str, receipt: str) -> None:
    """The id 0x120 is 288 only: its digits read as decimal once matched a receipt for 0x78."""
    found = bool(set(resp_keys(resp)) & set(receipt_keys(receipt)))
    assert found == matched_when_every_reading_was_stored(resp, receipt)


@pytest.mark.parametrize("zero", ["0", "000", "0x0"])
def test_id_zero_matches_under_a_learned_format_too(zero: str) -> None:
    """The first id of a fresh SMSC counter: its resp key is found by its receipt however the
    carrier's receipts were learned to write ids."""
    for fmt in (IdFormat.HEX, IdFormat.DECIMAL):
        assert set(resp_keys(zero)) & set(learned_receipt_keys("0", fmt)), fmt


def test_a_receipt_looks_up_its_own_rendering_first() -> None:
    """The id as written first; other renderings of its numbers after; the bare readings that
    earlier versions stored last."""
    assert resp_keys("0000001A") == resp_keys("0x1a") == ("s:1a",)
    assert receipt_keys("26") == ("s:26", "s:1a", "s:38", "h:26", "26", "38")
    # A 0x id of digits only is its own key: "0x120" (288) is not the decimal "120".
    assert resp_keys("0x0120") == ("h:120",)
    assert "h:120" in receipt_keys("288")
    assert "h:120" in receipt_keys("120")  # read as hex, 288 again
    assert "h:120" not in receipt_keys("78")  # 0x78 is 120, which 0x120 is not
    assert receipt_keys("1a") == ("s:1a", "s:26", "26")
    assert receipt_keys("xyz") == ("s:xyz",)
    assert receipt_keys("") == ()


# --- never raises -----------------------------------------------------------------------------

fragments = st.sampled_from(
    [
        "id:",
        "ID:",
        "sub:",
        "dlvrd:",
        "submit date:",
        "done_date:",
        "stat:",
        "err:",
        "text:",
        "none",
        "DELIVRD",
        "BUFFRED",
        "2311231200",
        "20231123120000",
        " ",
        ":",
        "\x00",
        ",",
        "1A2B",
    ]
)


@settings(max_examples=200)
@given(st.text())
def test_parse_never_raises_on_arbitrary_text(text: str) -> None:
    """Any text parses to a receipt or None."""
    result = parse_receipt_text(text)
    assert result is None or isinstance(result, Receipt)


@settings(max_examples=200)
@given(st.lists(st.one_of(fragments, st.text(max_size=5)), max_size=30).map("".join))
def test_parse_never_raises_on_receipt_like_text(text: str) -> None:
    """Text built from receipt fragments parses to a receipt or None."""
    result = parse_receipt_text(text)
    assert result is None or isinstance(result, Receipt)


@settings(max_examples=200)
@given(
    st.text(max_size=30),
    st.one_of(st.none(), st.integers(min_value=-1, max_value=300)),
    st.one_of(st.none(), st.binary(max_size=4)),
    st.one_of(st.none(), st.text(max_size=10)),
)
def test_from_parts_never_raises(
    message_id: str | None, state: int | None, error: bytes | None, text: str | None
) -> None:
    """Any combination of TLV values and text gives a receipt or None."""
    result = receipt_from_parts(
        text, receipted_message_id=message_id, message_state=state, network_error_code=error
    )
    assert result is None or isinstance(result, Receipt)


value_text = st.text(alphabet="0123456789ABCDEFabcdef", min_size=1, max_size=12)


@settings(max_examples=200)
@given(
    message_id=value_text,
    sub=value_text,
    err=st.text(alphabet="0123456789ABCXYZ", min_size=1, max_size=4),
    stat=st.sampled_from(list(ReceiptStat)),
    when=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
    excerpt=st.text(alphabet="abc :XY1", max_size=20).filter(
        lambda t: t.strip() not in ("", "none")
    ),
    order=st.permutations(range(6)),
    upper=st.booleans(),
)
def test_rendered_receipts_round_trip(
    *,
    message_id: str,
    sub: str,
    err: str,
    stat: ReceiptStat,
    when: datetime,
    excerpt: str,
    order: list[int],
    upper: bool,
) -> None:
    """A receipt rendered with fields in any order and either case parses back to its values."""
    when = when.replace(microsecond=0)
    fields = [
        f"id:{message_id}",
        f"sub:{sub}",
        f"dlvrd:{sub}",
        f"submit date:{when:%y%m%d%H%M%S}",
        f"done date:{when:%Y%m%d%H%M%S}",
        f"stat:{stat.value}",
    ]
    head = " ".join(fields[i] for i in order)
    text = f"{head} err:{err} text:{excerpt}"
    if upper:
        text = text.replace("id:", "ID:").replace("stat:", "STAT:").replace("text:", "Text:")
    receipt = parse(text)
    assert receipt.message_id == message_id
    assert receipt.sub == receipt.dlvrd == sub
    assert receipt.submit_date == receipt.done_date == when
    assert receipt.stat is stat
    assert receipt.err == err
    assert receipt.text == excerpt.strip()


def test_ids_that_share_a_numeric_reading_match_as_written() -> None:
    """ "0000000a" and "00000010" both read 10; each receipt finds its own id first."""
    ten_hex = resp_keys("0000000a")
    sixteen = resp_keys("00000010")
    assert receipt_keys("00000010")[0] in sixteen
    assert receipt_keys("00000010")[0] not in ten_hex
    assert receipt_keys("0000000A")[0] in ten_hex
    assert resp_keys("") == ()
    assert resp_keys("abc-XYZ") == receipt_keys("ABC-xyz") == ("s:abc-xyz",)


def test_hex_resp_decimal_receipt_format() -> None:
    """With IdFormat.HEX the resp id is read as hex and the receipt id as decimal (and back)."""
    assert resp_keys("1A", IdFormat.HEX) == receipt_keys("26", IdFormat.HEX) == ("26",)
    assert resp_keys("26", IdFormat.DECIMAL) == receipt_keys("1a", IdFormat.DECIMAL) == ("26",)
    assert receipt_keys("10", IdFormat.HEX) != resp_keys("10", IdFormat.HEX)


@pytest.mark.parametrize(
    "body",
    [
        "id:1A2B3C4D sub:001 dlvrd:001 submit date:2311231200 done date:2311231201 "
        "stat:DELIVRD err:000 text:The quick: brown fox",
        "id:42 sub:001 dlvrd:000 submit date:231123120000 done date:231123120101 "
        "stat:UNDELIV err:0A1",
        "id:7 sub:001 dlvrd:001 submit date:2311231200 done date:2311231201 stat:EXPIRED "
        "err:000 text:none",
        "id:7 sub:001 dlvrd:001 submit date:2311231200 done date:2311231201 stat:NOTAWORD "
        "err:000 text:x",
    ],
)
def test_canonical_fast_path_agrees_with_the_field_scan(body: str) -> None:
    """The one-regex path for the Appendix B layout gives what the tolerant scan gives."""
    assert parse_receipt_text(body) == receipt_module._parse_fields(body)
