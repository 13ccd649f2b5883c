"""Delivery receipts: reading their outcome, and matching their message_id to a submit.

This module owns the receipt body of SMPP v3.4 Appendix B (`id:... stat:DELIVRD err:000 text:...`),
the receipt TLVs of 5.3.2 (receipted_message_id, message_state, network_error_code), the
normalisation of the stat words carriers actually send, and the correlation keys that let a
receipt's id find the submit_sm_resp id it refers to. It takes decoded values (str, int, bytes) and
never raises on what a peer sent; it knows nothing of PDUs' wire format, sessions or the store.

Correlation. Carriers render one id differently in the submit_sm_resp and in the receipt: hex in
one and decimal in the other (ids may exceed 64 bits), either case, with or without leading zeros.
The store keeps one key per submitted id, the id as written (`resp_keys`: case, leading zeros and
a hex id's 0x aside). A receipt is looked up by its own id as written first, then by every form a
resp id with the same numeric value could have had (`receipt_keys`): each reading of the
receipt's id (decimal and hex for all-digit ids), written in decimal and in hex. So a receipt
that writes the id as the resp did always finds its own segment first, and one that writes it
the other way still finds it; the store tries the other forms only for a receipt that the first
has not matched for a while (smppd.queue.receipts.FALLBACK_AFTER_S).
`correlation_keys` gives an id's numeric readings, under which earlier versions stored ids.

The known ambiguity: a decimal-looking id such as "1234" is read both as 1234 and as 0x1234, so it
could match a different message whose id is 4660. That is acceptable because a lookup is scoped to
one carrier's segments still waiting for a receipt, a carrier renders its ids consistently, and a
collision needs two open ids related by exactly that reinterpretation; the receipt's own form
comes first and breaks the remaining ties towards the plain decimal reading. A carrier that
writes hex resps and decimal receipts with sequential ids makes such pairs the rule: its
receipts' own form is then another message's id, and smppd.idformat tells that carrier from its
ids' digits, after which `learned_receipt_keys` looks its receipts up in the other base.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import field
from datetime import datetime
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Final

from smppd.record import record


class MessageState(IntEnum):
    """The message_state TLV (SMPP v3.4 5.2.28); SKIPPED is SMPP v5.0's, seen in the wild."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8
    SKIPPED = 9


class ReceiptOutcome(StrEnum):
    """What a receipt says happened to the message, in the queue's words."""

    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"
    EXPIRED = "expired"
    REJECTED = "rejected"
    DELETED = "deleted"
    ENROUTE = "enroute"
    ACCEPTED = "accepted"
    UNKNOWN = "unknown"


class ReceiptStat(StrEnum):
    """The `stat` word of a receipt, normalised to the spellings of SMPP v3.4 Appendix B.

    ENROUTE and ACCEPTD are intermediate. The spec calls ACCEPTED final (read by customer
    service), but carriers send ACCEPTD (and ACKED) to mean "taken by the SMSC", usually followed
    by the real outcome; treating it as final would settle messages before they are delivered.
    A message that never gets a later receipt is settled by its validity period instead.
    UNKNOWN is final, as in the spec and in Kannel's and Jasmin's handling.
    """

    DELIVRD = "DELIVRD"
    EXPIRED = "EXPIRED"
    DELETED = "DELETED"
    UNDELIV = "UNDELIV"
    ACCEPTD = "ACCEPTD"
    UNKNOWN = "UNKNOWN"
    REJECTD = "REJECTD"
    ENROUTE = "ENROUTE"

    @classmethod
    def from_word(cls, word: str) -> ReceiptStat | None:
        """The stat a carrier's word stands for (any case, spec or variant spelling), or None."""
        key = word.strip(_STRIP).upper()
        if _DIGITS.fullmatch(key) and len(key) <= 2:
            # A few SMSCs put the message_state number in the text instead of the word.
            return cls.from_message_state(int(key))
        return _STAT_WORDS.get(key)

    @classmethod
    def from_message_state(cls, state: int) -> ReceiptStat | None:
        """The stat for a message_state TLV value, or None when the value is not a state."""
        return _STAT_OF_STATE_VALUE.get(state)

    @property
    def is_final(self) -> bool:
        """Whether no further receipt is expected for the message."""
        return self not in _INTERMEDIATE

    @property
    def outcome(self) -> ReceiptOutcome:
        """The message outcome this stat reports."""
        return _OUTCOME_OF_STAT[self]

    @property
    def message_state(self) -> MessageState:
        """The message_state value that carries this stat (5.2.28)."""
        return _STATE_OF_STAT[self]


_INTERMEDIATE: Final = frozenset({ReceiptStat.ENROUTE, ReceiptStat.ACCEPTD})

_OUTCOME_OF_STAT: Final[Mapping[ReceiptStat, ReceiptOutcome]] = {
    ReceiptStat.DELIVRD: ReceiptOutcome.DELIVERED,
    ReceiptStat.EXPIRED: ReceiptOutcome.EXPIRED,
    ReceiptStat.DELETED: ReceiptOutcome.DELETED,
    ReceiptStat.UNDELIV: ReceiptOutcome.UNDELIVERABLE,
    ReceiptStat.ACCEPTD: ReceiptOutcome.ACCEPTED,
    ReceiptStat.UNKNOWN: ReceiptOutcome.UNKNOWN,
    ReceiptStat.REJECTD: ReceiptOutcome.REJECTED,
    ReceiptStat.ENROUTE: ReceiptOutcome.ENROUTE,
}

_STATE_OF_STAT: Final[Mapping[ReceiptStat, MessageState]] = {
    ReceiptStat.DELIVRD: MessageState.DELIVERED,
    ReceiptStat.EXPIRED: MessageState.EXPIRED,
    ReceiptStat.DELETED: MessageState.DELETED,
    ReceiptStat.UNDELIV: MessageState.UNDELIVERABLE,
    ReceiptStat.ACCEPTD: MessageState.ACCEPTED,
    ReceiptStat.UNKNOWN: MessageState.UNKNOWN,
    ReceiptStat.REJECTD: MessageState.REJECTED,
    ReceiptStat.ENROUTE: MessageState.ENROUTE,
}

_STAT_OF_STATE: Final[Mapping[MessageState, ReceiptStat]] = {
    **{state: stat for stat, state in _STATE_OF_STAT.items()},
    # Not transmitted on the network (SMPP v5.0): final and not delivered.
    MessageState.SKIPPED: ReceiptStat.UNDELIV,
}
_STAT_OF_STATE_VALUE: Final[Mapping[int, ReceiptStat]] = {
    state.value: stat for state, stat in _STAT_OF_STATE.items()
}

# Spellings seen from SMSCs and gateways, upper-cased. Words not listed read as UNKNOWN.
_STAT_WORDS: Final[Mapping[str, ReceiptStat]] = {
    **{stat.value: stat for stat in ReceiptStat},
    **{state.name: stat for state, stat in _STAT_OF_STATE.items()},
    "DELIVERD": ReceiptStat.DELIVRD,
    "DELIVR": ReceiptStat.DELIVRD,
    "EXPIRD": ReceiptStat.EXPIRED,
    "DELETD": ReceiptStat.DELETED,
    "UNDELIVERED": ReceiptStat.UNDELIV,
    "UNDELIVRD": ReceiptStat.UNDELIV,
    "UNDELIVD": ReceiptStat.UNDELIV,
    "REJECT": ReceiptStat.REJECTD,
    "REJECTED": ReceiptStat.REJECTD,
    "ACKED": ReceiptStat.ACCEPTD,
    "BUFFRED": ReceiptStat.ENROUTE,
    "BUFFERD": ReceiptStat.ENROUTE,
    "BUFFERED": ReceiptStat.ENROUTE,
}


@record
class NetworkError:
    """The network_error_code TLV (SMPP v3.4 5.3.2.31): network type, then its error code."""

    network_type: int  # 1 ANSI-136, 2 IS-95, 3 GSM; others reserved
    error_code: int


@record
class Receipt:
    """One delivery receipt, from its text, its TLVs or both.

    Dates are naive, in whatever zone the SMSC wrote them (the spec does not say). `err` stays text
    because carriers use alphanumeric codes; it is empty when neither text nor TLV gave one.
    `extra` holds the fields this module does not know, keyed by case-folded name. `stated` is
    false when neither the text nor a TLV gave a state (`stat` then reads UNKNOWN): such a
    receipt says nothing of the outcome, and settles nothing.
    """

    message_id: str
    stat: ReceiptStat
    err: str = ""
    sub: str | None = None
    dlvrd: str | None = None
    submit_date: datetime | None = None
    done_date: datetime | None = None
    text: str | None = field(default=None, repr=False)  # the message's start: never logged
    network_error: NetworkError | None = None
    extra: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    stated: bool = True

    @property
    def is_final(self) -> bool:
        """Whether this receipt settles the message."""
        return self.stated and self.stat.is_final

    @property
    def outcome(self) -> ReceiptOutcome:
        """The message outcome reported."""
        return self.stat.outcome


# What surrounds values: C-string NULs, padding, and the odd comma or semicolon separator.
_STRIP: Final = " \t\r\n\x00\x0b\x0c,;"
_DIGITS: Final = re.compile(r"[0-9]+")
_HEX: Final = re.compile(r"[0-9a-f]+")

# A field name starts the string or follows a separator, and ends at a colon. The two-word date
# names come first so that "submit date:" is not read as a field "date". The name length is capped
# so the scan stays linear on any input.
_FIELD: Final = re.compile(
    r"(?:^|(?<=[\s,;]))(submit[\s_-]*date|done[\s_-]*date|[a-z][a-z0-9_-]{0,31})[ \t]*:",
    re.IGNORECASE,
)
_NAME_NOISE: Final = re.compile(r"[\s_-]")
_KNOWN: Final = frozenset({"id", "sub", "dlvrd", "submitdate", "donedate", "stat", "err"})
_DATE_SEPARATORS: Final = re.compile(r"[\s\-:/.Tt]")


def parse_receipt_text(text: str) -> Receipt | None:
    """Read an SMPP v3.4 Appendix B receipt body; None when it has neither an id nor a stat.

    Tolerant: names in any case and order, `submit_date`/`submitdate` spellings, missing fields,
    extra spaces, unknown fields (kept in `extra`). `text:` runs to the end of the string, since
    the original message may contain colons and spaces. Never raises.
    """
    body = text.strip(_STRIP)
    canonical_form = _CANONICAL.fullmatch(body)
    if canonical_form is not None:
        # The Appendix B layout exactly, as most SMSCs write it: one match, no field scan.
        fast = _from_canonical(canonical_form)
        if fast is not None:
            return fast
    return _parse_fields(body)


def _canonical(field: re.Match[str]) -> str:
    return _NAME_NOISE.sub("", field.group(1).casefold())


def _parse_fields(body: str) -> Receipt | None:
    known: dict[str, str] = {}
    extra: dict[str, str] = {}
    message_text: str | None = None
    fields = _FIELD.finditer(body)
    current = next(fields, None)
    while current is not None:
        name = current.group(1).casefold()
        canonical = _NAME_NOISE.sub("", name)
        if canonical == "text" and message_text is None:
            if "stat" in known or "id" not in known:  # the usual order: the text is the rest
                message_text = body[current.end() :].strip(" \t\r\n\x00")
                break
            # Some SMSCs put the text after the id but before stat: it ends at the first known
            # field after it.
            following = next((f for f in fields if _canonical(f) in _KNOWN), None)
            end = following.start() if following is not None else len(body)
            message_text = body[current.end() : end].strip(" \t\r\n\x00")
            current = following
            continue
        following = next(fields, None)
        end = following.start() if following is not None else len(body)
        value = body[current.end() : end].strip(_STRIP)
        if canonical in _KNOWN:
            known.setdefault(canonical, value)
        else:
            extra.setdefault(name, value)
        current = following

    message_id = known.get("id", "")
    stat_word = known.get("stat")
    if not message_id and not stat_word:
        return None
    stat = ReceiptStat.from_word(stat_word) if stat_word else None
    if stat is None:
        stat = ReceiptStat.UNKNOWN
        if stat_word:
            # Keep the carrier's word for logs and metrics; the outcome is still final.
            extra.setdefault("stat", stat_word)
    return Receipt(
        message_id=message_id,
        stat=stat,
        err=known.get("err", ""),
        sub=known.get("sub") or None,
        dlvrd=known.get("dlvrd") or None,
        submit_date=_parse_date(known.get("submitdate", "")),
        done_date=_parse_date(known.get("donedate", "")),
        text=None if not message_text or message_text.casefold() == "none" else message_text,
        extra=MappingProxyType(extra),
        stated=bool(stat_word),
    )


# SMPP v3.4 Appendix B, lower case names and single spaces, as most SMSCs send it.
_CANONICAL: Final = re.compile(
    r"id:(?P<id>[0-9A-Za-z_-]{1,65}) sub:(?P<sub>\d{1,3}) dlvrd:(?P<dlvrd>\d{1,3}) "
    r"submit date:(?P<submit>\d{10}|\d{12}) done date:(?P<done>\d{10}|\d{12}) "
    r"stat:(?P<stat>[A-Z]{5,7}) err:(?P<err>[0-9A-Za-z]{1,3})(?: text:(?P<text>.*))?",
    re.DOTALL,
)


def _from_canonical(match: re.Match[str]) -> Receipt | None:
    # The pattern admits upper-case letters only: from_word's clean-up would have nothing to do.
    stat = _STAT_WORDS.get(match["stat"])
    if stat is None:  # a word we do not know: the general path keeps it in `extra`
        return None
    text = match["text"]
    text = None if text is None else text.strip(" \t\r\n\x00")
    return Receipt(
        message_id=match["id"],
        stat=stat,
        err=match["err"],
        sub=match["sub"],
        dlvrd=match["dlvrd"],
        submit_date=_parse_digits(match["submit"]),
        done_date=_parse_digits(match["done"]),
        text=None if not text or text.casefold() == "none" else text,
    )


def receipt_from_parts(
    text: str | None,
    *,
    receipted_message_id: str | None,
    message_state: int | None,
    network_error_code: bytes | None,
) -> Receipt | None:
    """Build a receipt from a deliver_sm/data_sm: the TLVs where present and valid, else the text.

    The TLVs are typed and unambiguous, so they win over the text's id, stat and err; the text
    still supplies the dates, counters and message excerpt. A message_state that is not a state, or
    a network_error_code that is not 3 octets, is ignored. None when neither source has an id or
    a stat.
    """
    parsed = parse_receipt_text(text) if text is not None else None
    tlv_id = receipted_message_id.strip(_STRIP) if receipted_message_id is not None else ""
    tlv_stat = ReceiptStat.from_message_state(message_state) if message_state is not None else None
    network_error = _parse_network_error(network_error_code)
    if (
        parsed is not None
        and network_error is None
        and (not tlv_id or tlv_id == parsed.message_id)
        and (tlv_stat is None or tlv_stat is parsed.stat)
    ):
        return parsed  # the TLVs agree with the text (the usual case): nothing to merge
    if parsed is None:
        if not tlv_id and tlv_stat is None:
            return None
        parsed = Receipt(message_id="", stat=ReceiptStat.UNKNOWN, stated=False)
    return Receipt(
        message_id=tlv_id or parsed.message_id,
        stat=tlv_stat if tlv_stat is not None else parsed.stat,
        err=f"{network_error.error_code:03d}" if network_error is not None else parsed.err,
        sub=parsed.sub,
        dlvrd=parsed.dlvrd,
        submit_date=parsed.submit_date,
        done_date=parsed.done_date,
        text=parsed.text,
        network_error=network_error,
        extra=parsed.extra,
        stated=tlv_stat is not None or parsed.stated,
    )


def _parse_network_error(value: bytes | None) -> NetworkError | None:
    if value is None or len(value) != 3:
        return None
    return NetworkError(network_type=value[0], error_code=int.from_bytes(value[1:3], "big"))


def _parse_date(value: str) -> datetime | None:
    """YYMMDDhhmm (the spec), YYMMDDhhmmss or YYYYMMDDhhmmss, separators allowed; else None."""
    digits = _DATE_SEPARATORS.sub("", value)
    if not _DIGITS.fullmatch(digits):
        return None
    return _parse_digits(digits)


@functools.lru_cache(maxsize=1024)
def _parse_digits(digits: str) -> datetime | None:
    """A date of 10, 12 or 14 digits (see `_parse_date`); else None. Cached: a burst of receipts
    carries the same few minutes, and datetimes are immutable."""
    if len(digits) == 14:
        year, rest = int(digits[:4]), digits[4:]
    elif len(digits) in (10, 12):
        # Two-digit years are this century: receipts report on messages sent minutes ago.
        year, rest = 2000 + int(digits[:2]), digits[2:]
    else:
        return None
    second = int(rest[8:10]) if len(rest) == 10 else 0
    try:
        # Naive on purpose: the SMSC's zone is unknown, so the time is kept as given.
        return datetime(
            year, int(rest[0:2]), int(rest[2:4]), int(rest[4:6]), int(rest[6:8]), second
        )
    except ValueError:
        return None


# SMPP's message_id is a C-Octet String of at most 65 octets; longer is no id we issued, and
# capping it bounds the big-integer conversions.
_MAX_ID_CHARS: Final = 65
# Non-numeric keys carry a prefix with a non-digit, so they never equal a numeric key.
_OPAQUE_PREFIX: Final = "s:"
# A 0x id of digits only ("0x120" is 288): without a key of its own it would share "120" with
# the decimal 120. No other key begins so: opaque keys begin "s:", numbers with a digit.
_HEX_DIGITS_PREFIX: Final = "h:"


def correlation_keys(message_id: str) -> tuple[str, ...]:
    """The keys under which `message_id` matches its other renderings; empty for an empty id.

    Hex ids (with a-f, or a 0x prefix) give their value; all-digit ids give their value read as
    decimal and as hex; values are decimal strings without leading zeros. Anything else, or an id
    longer than 65 characters, gives one prefixed case-folded key without leading zeros.
    """
    norm = normalise_id(message_id)
    return _readings(norm) if norm else ()


def normalise_id(message_id: str) -> str:
    """A message id as correlation compares it: padding stripped, case folded."""
    return message_id.strip(" \t\r\n\x00\x0b\x0c").casefold()


def _readings(norm: str) -> tuple[str, ...]:
    """`correlation_keys` of a normalised, non-empty id."""
    values = _values(norm)
    return tuple(map(str, values)) if values else (_OPAQUE_PREFIX + norm.lstrip("0"),)


def _values(norm: str) -> tuple[int, ...]:
    """The numbers a normalised id can stand for: one for a hex id (with a-f, or a 0x prefix),
    its decimal then hex reading for an all-digit one (one if they agree), none for anything
    else or past 65 characters."""
    if len(norm) <= _MAX_ID_CHARS:
        if norm.startswith("0x") and _HEX.fullmatch(norm, 2):
            return (int(norm[2:], 16),)
        if _DIGITS.fullmatch(norm):
            as_decimal, as_hex = int(norm), int(norm, 16)
            return (as_decimal,) if as_decimal == as_hex else (as_decimal, as_hex)
        if _HEX.fullmatch(norm):
            return (int(norm, 16),)
    return ()


def _written_key(norm: str) -> str:
    """The key of a normalised, non-empty id as written: without leading zeros, or a hex id's 0x
    (the same number in the same base is the same id). A 0x id of digits only has a key of its
    own (_HEX_DIGITS_PREFIX)."""
    if norm.startswith("0x") and len(norm) <= _MAX_ID_CHARS and _HEX.fullmatch(norm, 2):
        digits = norm[2:].lstrip("0")
        return (_HEX_DIGITS_PREFIX if _DIGITS.fullmatch(digits) else _OPAQUE_PREFIX) + digits
    return _OPAQUE_PREFIX + norm.lstrip("0")


def _hex_keys(value: int) -> tuple[str, ...]:
    """The keys of `value` written in hex: with a 0x too when its digits alone read as decimal.
    Zero has no digits, as _written_key writes it."""
    digits = f"{value:x}".lstrip("0")
    plain = _OPAQUE_PREFIX + digits
    return (plain, _HEX_DIGITS_PREFIX + digits) if _DIGITS.fullmatch(digits) else (plain,)


class IdFormat(StrEnum):
    """How a carrier writes the id of one message in its submit_sm_resp and in its receipts."""

    AUTO = "auto"  # the same way in both (matched as written); numeric readings as a fallback
    HEX = "hex"  # hex in the submit_sm_resp, decimal in the receipt (a known carrier quirk)
    DECIMAL = "decimal"  # decimal in the submit_sm_resp, hex in the receipt


def _exact_key(message_id: str) -> str | None:
    norm = normalise_id(message_id)
    return _OPAQUE_PREFIX + norm.lstrip("0") if norm else None


def _numeric_key(message_id: str, base: int) -> str | None:
    norm = normalise_id(message_id)
    if not norm or len(norm) > _MAX_ID_CHARS:
        return None
    if base == 16 and norm.startswith("0x"):
        norm = norm[2:]
    pattern = _DIGITS if base == 10 else _HEX
    return str(int(norm, base)) if pattern.fullmatch(norm) else None


def resp_keys(message_id: str, fmt: IdFormat = IdFormat.AUTO) -> tuple[str, ...]:
    """The key to store for the id a submit_sm_resp gave (none for an empty id).

    AUTO: the id as written (case, leading zeros and a 0x aside); `receipt_keys` finds it from
    other renderings of the same number. HEX / DECIMAL: the value of the id in that base, which is
    how the receipt will give it.
    """
    if fmt is IdFormat.AUTO:
        norm = normalise_id(message_id)
        return (_written_key(norm),) if norm else ()
    key = _numeric_key(message_id, 16 if fmt is IdFormat.HEX else 10)
    return (key,) if key is not None else tuple(filter(None, (_exact_key(message_id),)))


def receipt_keys(message_id: str, fmt: IdFormat = IdFormat.AUTO) -> tuple[str, ...]:
    """Keys to look a receipt's id up by, best first.

    AUTO: the id as written, so that a receipt writing it as the resp did finds its own segment
    even when another open id has the same numeric value ("0000000a" and "00000010" both read 10).
    Then the resp keys of every rendering, decimal or hex, of each number the id can stand for.
    Last, those numbers themselves: the keys earlier versions stored for a resp id.
    """
    if fmt is IdFormat.AUTO:
        norm = normalise_id(message_id)
        if not norm:
            return ()
        return _receipt_keys(norm)
    key = _numeric_key(message_id, 10 if fmt is IdFormat.HEX else 16)
    return (key,) if key is not None else tuple(filter(None, (_exact_key(message_id),)))


def learned_receipt_keys(message_id: str, fmt: IdFormat) -> tuple[str, ...]:
    """`receipt_keys` for a carrier whose resp ids are stored as AUTO has them but which was
    found to write receipts in the other base (smppd.idformat): HEX, a decimal receipt id is
    looked up as the resp's hex; DECIMAL, a hex one as the resp's decimal. Not by the id as
    written, which is another message's id there ("10" is 0x10's as written, 0xa's in fact). An
    id not of the expected kind gets the AUTO keys."""
    norm = normalise_id(message_id)
    if fmt is IdFormat.HEX and _DIGITS.fullmatch(norm) and len(norm) <= _MAX_ID_CHARS:
        return _hex_keys(int(norm))
    if fmt is IdFormat.DECIMAL and len(norm) <= _MAX_ID_CHARS:
        digits = norm[2:] if norm.startswith("0x") else norm
        if digits and _HEX.fullmatch(digits):
            return (_written_key(str(int(digits, 16))),)
    return _receipt_keys(norm) if norm else ()


def relearned_keys(keys: tuple[str, ...], fmt: IdFormat) -> tuple[str, ...] | None:
    """The keys of a receipt held under AUTO's `keys` once its carrier is known to write ids
    in the other base (`fmt`): `learned_receipt_keys` of the id they were made from (their
    first, the id as written, gives it back); None for keys AUTO did not make (learned ones
    already: this is done once) or that stay as they are. Held under the id as written, the
    receipt "65" (0x41's) would be taken by the resp 00000065."""
    if fmt is IdFormat.AUTO or not keys:
        return None
    best = keys[0]
    if best.startswith(_OPAQUE_PREFIX):
        norm = best.removeprefix(_OPAQUE_PREFIX) or "0"
    elif best.startswith(_HEX_DIGITS_PREFIX):
        norm = "0x" + best.removeprefix(_HEX_DIGITS_PREFIX)
    else:
        return None
    if _receipt_keys(norm) != keys:
        return None
    learned = learned_receipt_keys(norm, fmt)
    return None if not learned or learned == keys else learned


def _receipt_keys(norm: str) -> tuple[str, ...]:
    """`receipt_keys` (AUTO) of a normalised, non-empty id. The renderings that would give the
    best key again (the same number in the same base) are left out."""
    best = _written_key(norm)
    values = _values(norm)
    if not values:
        return (best,)
    if len(values) == 2:  # all digits: as decimal it is written in decimal, as hex in hex
        as_decimal, as_hex = values
        other = (*_hex_keys(as_decimal), f"{_OPAQUE_PREFIX}{as_hex}", *_hex_keys(as_hex))
        keys = (best, *other, str(as_decimal), str(as_hex))
    else:
        value = values[0]
        keys = (best, *_hex_keys(value), f"{_OPAQUE_PREFIX}{value}", str(value))
    return tuple(dict.fromkeys(keys))  # in order, each once


def primary_key(message_id: str) -> str:
    """The canonical key of `message_id`: the first of its correlation keys ("" for an empty id).

    For an all-digit id it is the decimal reading. The empty key is never among any id's
    correlation keys, so an empty id matches nothing.
    """
    keys = correlation_keys(message_id)
    return keys[0] if keys else ""
