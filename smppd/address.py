"""Phone numbers and sender ids: validation, normalisation, TON/NPI, and masking for logs.

Destinations are stored and compared in one canonical form: `+` and 7 to 15 digits (E.164), or the
bare digits of a short code. The SMPP wire form drops the `+` and says TON 1 / NPI 1 instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from smppd.logging import mask_msisdn as mask
from smppd.pdu.text import gsm7_length, is_gsm7
from smppd.service import ApiError, ErrorCode

__all__ = [
    "NumberPlan",
    "canonical_sender",
    "check_sender",
    "destination_ton_npi",
    "from_wire",
    "international_reading",
    "mask",
    "normalise_destination",
    "sender_problem",
    "sender_ton_npi",
    "wire_address",
]

# SMPP v3.4 5.2.5 / 5.2.6
TON_UNKNOWN, TON_INTERNATIONAL, TON_NATIONAL, TON_NETWORK, TON_ALPHANUMERIC = 0, 1, 2, 3, 5
NPI_UNKNOWN, NPI_E164 = 0, 1

_SEPARATORS = re.compile(r"[\s\-().]")
# "+44 (0) 20 7946 0000": the trunk 0 a national caller would dial, shown but never dialled
# after the country code (written with + or 00, or without: "44 (0) 7700 900123"). No two
# quantifiers next to each other take the same characters: a run of spaces cannot be split
# between them in every way (quadratic backtracking on a long one that fails to match).
_TRUNK_ZERO = re.compile(r"^([\s\-.]*(?:(?:\+|00)[\s\-.]*)?[0-9]{1,3}[\s\-.]*)\(\s*0\s*\)")
# Longer than any number written with spaces, dashes or brackets: refused unread.
MAX_ADDRESS_CHARS = 64
_DIGITS = re.compile(r"[0-9]+")
SHORT_CODE_MAX_DIGITS = 8
ALPHANUMERIC_MAX = 11  # GSM 03.40: an alphanumeric originator is at most 11 characters


@dataclass(frozen=True, slots=True)
class NumberPlan:
    """How bare digits are read, in submits and in MO alike (an opt-out must be stored as the
    number clients submit to): the country numbers without a code are in, and the longest
    short code. Where national numbers have 8 digits (Denmark, Norway, Singapore, Hong Kong)
    the short codes are shorter, and 8 digits are a number of the country."""

    country_prefix: str | None = None
    short_code_max_digits: int = SHORT_CODE_MAX_DIGITS


_NO_PLAN = NumberPlan()


def normalise_destination(raw: str, *, plan: NumberPlan = _NO_PLAN, field: str = "to") -> str:
    """The canonical form of a destination, or ApiError(invalid_address) naming `field`.

    `+CC...` and `00CC...` are international, a `(0)` after the country code dropped. Bare
    digits of 3 to the plan's short_code_max_digits (8 unless set) are a short code. Longer
    bare digits are taken as international written without the `+`, except with a country
    prefix in the plan: then a leading trunk `0` is dropped and the prefix put in its place,
    and digits that do not begin with the prefix get it too. Digits that do begin with it are
    international already: SMSCs write MO numbers that way with TON 0, and a STOP read as
    "+44 44..." would stop nobody.
    """
    if len(raw) > MAX_ADDRESS_CHARS:
        raise ApiError(
            ErrorCode.invalid_address,
            f"{field} is not an E.164 number or short code ({len(raw)} characters, at most "
            f"{MAX_ADDRESS_CHARS} with separators)",
            field=field,
        )
    number = _SEPARATORS.sub("", _TRUNK_ZERO.sub(r"\1", raw) if "(" in raw else raw)
    if number.startswith("00"):
        number = "+" + number[2:]
    if number.startswith("+"):
        digits = number[1:]
    else:
        digits = number
        if _DIGITS.fullmatch(digits) and 3 <= len(digits) <= plan.short_code_max_digits:
            return digits
        if (prefix := plan.country_prefix) and _DIGITS.fullmatch(digits):
            if digits.startswith("0"):
                digits = prefix + digits[1:]
            elif not digits.startswith(prefix):
                digits = prefix + digits
    if not _DIGITS.fullmatch(digits) or not 7 <= len(digits) <= 15 or digits[0] == "0":
        raise ApiError(
            ErrorCode.invalid_address,
            f"{field} is not an E.164 number or short code ({mask(raw)}: {_why(digits)})",
            field=field,
        )
    return "+" + digits


def _why(digits: str) -> str:
    """What is wrong with a number, for the caller, who sees it masked."""
    if not _DIGITS.fullmatch(digits):
        return "not only digits"
    if digits.startswith("0"):
        return "no country code (or set compliance.default_country_prefix)"
    return f"{len(digits)} digits, E.164 has 7 to 15"


def check_sender(sender: str, *, field: str = "from") -> None:
    """Reject sender ids no network would carry: alphanumerics over 11 characters and the like."""
    if (problem := sender_problem(sender)) is not None:
        raise ApiError(ErrorCode.invalid_address, f"{field}: {problem}", field=field)


def sender_problem(sender: str) -> str | None:
    """Why no network would carry `sender` as an originator, or None.

    A number with `+` or of more than 8 digits is a long number, 7 to 15 digits in
    international form. An alphanumeric id reaches the handset as at most 11 GSM 03.38
    septets (TS 23.040 9.1.2.5: 10 octets), where ASCII's backtick has no place and [ ] { }
    ~ \\ ^ | take two.
    """
    usual = len(sender) <= ALPHANUMERIC_MAX and sender.isascii() and sender.isalnum()
    if usual and not sender.isdigit():
        return None  # the usual ids, letters and digits: checked without encoding them
    plus = sender.startswith("+")
    digits = sender[1:] if plus else sender
    if _DIGITS.fullmatch(digits) and (plus or len(digits) > SHORT_CODE_MAX_DIGITS):
        if not 7 <= len(digits) <= 15:
            return f"a long number is 7 to 15 digits, not {len(digits)}"
        if digits[0] == "0":
            return "a long number is written in international form: no trunk 0 or 00"
        return None
    if (
        not sender
        or not sender.isascii()
        or not sender.isprintable()
        or not is_gsm7(sender)
        or gsm7_length(sender) > ALPHANUMERIC_MAX
    ):
        return (
            f"an alphanumeric sender id is 1 to {ALPHANUMERIC_MAX} GSM 03.38 septets of "
            "printable ASCII (no backtick; [ ] { } ~ \\ ^ | count two)"
        )
    return None


def canonical_sender(sender: str) -> str:
    """A long-number sender id in the form MO to it arrives in: `+` and its digits.

    "447700900999" and "+447700900999" are one number on the wire (TON 1 either way), but a
    STOP sent to it comes back as "+447700900999": configured, submitted and stored as that,
    the opt-out and the reply's owner are found. Short codes and alphanumerics stay as given.
    """
    if SHORT_CODE_MAX_DIGITS < len(sender) <= 15 and _DIGITS.fullmatch(sender):
        return "+" + sender
    return sender


# A sender id's TON/NPI by its kind (config senders[].kind: short | long | alpha).
SENDER_KIND_TON_NPI: Final = {
    "alpha": (TON_ALPHANUMERIC, NPI_UNKNOWN),
    "short": (TON_NETWORK, NPI_UNKNOWN),
    "long": (TON_INTERNATIONAL, NPI_E164),
}


def sender_ton_npi(sender: str) -> tuple[int, int]:
    """TON/NPI from a sender id's form: alphanumeric, short code or international number."""
    bare = sender.lstrip("+")
    if not _DIGITS.fullmatch(bare):
        return SENDER_KIND_TON_NPI["alpha"]
    if len(bare) <= SHORT_CODE_MAX_DIGITS and not sender.startswith("+"):
        return SENDER_KIND_TON_NPI["short"]
    return SENDER_KIND_TON_NPI["long"]


def international_reading(address: str, ton: int, *, plan: NumberPlan = _NO_PLAN) -> str | None:
    """The other way to read an MO's TON 0 digits, if there is one: `from_wire` reads them as
    a client's bare digits, with the plan's country prefix put in front when they do not begin
    with it; but many SMSCs send every MO as TON 0 in full international form, and a foreign
    subscriber's 4915112345678 under prefix 44 is +4915112345678, not +444915112345678. A STOP
    is recorded under both (a missed one is the costly mistake), a START lifts the first only
    (the other may be another subscriber's STOP); None when only one reading exists (another
    TON, a trunk 0, the prefix already there, a short code, no prefix)."""
    prefix = plan.country_prefix
    if (
        ton not in _READ_AS_BARE
        or not prefix
        or not _DIGITS.fullmatch(address)
        or len(address) <= plan.short_code_max_digits
        or address.startswith(("0", prefix))
        or not 7 <= len(address) <= 15
    ):
        return None
    return "+" + address


def destination_ton_npi(destination: str) -> tuple[int, int]:
    """TON/NPI from a canonical destination's form: `+` and digits international, a short
    code its network's own (sent as TON 1, 12345 would be the number +12345)."""
    if destination.startswith("+"):
        return TON_INTERNATIONAL, NPI_E164
    return TON_NETWORK, NPI_UNKNOWN


def wire_address(address: str) -> str:
    """The address as SMPP carries it: international numbers without `+` (TON says it); an
    alphanumeric id that begins with `+` keeps it."""
    return address[1:] if address.startswith("+") and _DIGITS.fullmatch(address, 1) else address


# TONs whose digits from_wire reads as a client's bare digits: unknown, subscriber number and
# abbreviated (SMPP v3.4 5.2.5).
_READ_AS_BARE: Final = frozenset({TON_UNKNOWN, 4, 6})


def from_wire(address: str, ton: int, *, plan: NumberPlan = _NO_PLAN) -> str:
    """An address received from an SMSC in canonical form, so it matches what clients submit
    (an opt-out from it must stop submits to it).

    International (TON 1) digits get their `+`. Digits of unknown type (TON 0, which many
    SMSCs send for every MO) are read as a client's bare digits are (`normalise_destination`),
    and so are those said to be a subscriber number or abbreviated (TON 4, 6), which SMSCs
    send in full as often as not.
    National ones (TON 2) get the plan's country prefix, if one says which country, in place
    of a trunk 0: always, since TON 2 says they carry none (a German 0491... is 491...,
    which read as international would be someone in Nuremberg). Anything else, or what does
    not read as a number, is kept as it came.
    """
    if not _DIGITS.fullmatch(address):
        return address
    if ton == TON_INTERNATIONAL:  # some write the international prefix 00 as well
        return "+" + (address[2:] if address.startswith("00") else address)
    if ton == TON_NATIONAL and plan.country_prefix:
        if len(address) <= plan.short_code_max_digits:  # a short code, as a client's digits are
            return address
        digits = plan.country_prefix + address.removeprefix("0")
        return "+" + digits if len(digits) <= 15 else address
    if ton in _READ_AS_BARE:
        try:
            return normalise_destination(address, plan=plan)
        except ApiError:
            return address
    return address
