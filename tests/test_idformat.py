"""Telling hex resp ids with decimal receipt ids (or the reverse) under message_id_format auto."""

from __future__ import annotations

import random

import pytest

from smppd.idformat import IdFormatLearner
from smppd.pdu.receipt import (
    IdFormat,
    learned_receipt_keys,
    receipt_keys,
    relearned_keys,
    resp_keys,
)


def fed(resps: list[str], receipts: list[str]) -> tuple[IdFormatLearner, IdFormat | None]:
    learner = IdFormatLearner()
    for message_id in resps:
        learner.resp(message_id)
    found = None
    for message_id in receipts:
        found = learner.receipt(message_id) or found
        if not learner.learning:
            break
    return learner, found


def test_hex_resps_with_decimal_receipts_are_told_and_nothing_else_is() -> None:
    ids = range(1, 301)
    learner, found = fed([f"{n:08X}" for n in ids], [str(n) for n in ids])
    assert (found, learner.receipt_format, learner.learning) == (IdFormat.HEX, IdFormat.HEX, False)
    learner, found = fed([str(n) for n in ids], [f"{n:x}" for n in ids])
    assert (found, learner.receipt_format) == (IdFormat.DECIMAL, IdFormat.DECIMAL)
    # Written alike: hex on both sides settles as AUTO; decimal on both never decides.
    learner, found = fed([f"{n:08X}" for n in ids], [f"{n:08x}" for n in ids])
    assert (found, learner.receipt_format, learner.learning) == (None, IdFormat.AUTO, False)
    learner, found = fed([str(n) for n in ids], [str(n) for n in ids])
    assert (found, learner.receipt_format, learner.learning) == (None, IdFormat.AUTO, True)


def test_chance_alone_does_not_make_a_hex_carrier_look_decimal() -> None:
    """Random 8-digit hex ids on both sides: the receipts that happen to be all digits (2% of
    them) never add up to a decision for HEX."""
    rng = random.Random(7)
    for _ in range(200):
        ids = [f"{rng.getrandbits(32):08x}" for _ in range(80)]
        learner, found = fed(ids, ids)
        assert found is None
        assert learner.receipt_format is IdFormat.AUTO


def test_learned_keys_find_the_resp_as_auto_stored_it() -> None:
    """HEX: receipt "10" is 0xa's resp (0000000A), not the resp written "00000010"; DECIMAL:
    receipt "1f" is the resp "31". Ids of the other kind keep the AUTO keys."""
    assert learned_receipt_keys("10", IdFormat.HEX) == resp_keys("0000000A")
    assert resp_keys("00000010")[0] in learned_receipt_keys("16", IdFormat.HEX)
    assert resp_keys("0x10")[0] in learned_receipt_keys("16", IdFormat.HEX)
    assert learned_receipt_keys("1f", IdFormat.DECIMAL) == resp_keys("31")
    assert learned_receipt_keys("0x1F", IdFormat.DECIMAL) == resp_keys("31")
    assert learned_receipt_keys("ab12", IdFormat.HEX)[0] == resp_keys("ab12")[0]
    assert learned_receipt_keys("", IdFormat.HEX) == ()


@pytest.mark.parametrize("peer_id", ["12\u00b3", "\u00b9", "\u0661\u0662", "\uff11"])
def test_ids_of_digits_outside_ascii_are_opaque_not_a_crash(peer_id: str) -> None:
    """str.isdigit() holds for superscripts and other scripts' digits, which int() rejects
    (or reads as a number the carrier never wrote): they key as written, in either base."""
    for fmt in (IdFormat.HEX, IdFormat.DECIMAL):
        assert learned_receipt_keys(peer_id, fmt) == receipt_keys(peer_id)
        assert relearned_keys(receipt_keys(peer_id), fmt) is None


def learner_fed(
    known: IdFormat, resps: list[str], receipts: list[str]
) -> tuple[IdFormatLearner, list[tuple[int, IdFormat]]]:
    """A learner started from `known`, fed resps and receipts in turn; the changes it
    reported, with the receipt count at which each came."""
    learner = IdFormatLearner(known)
    changes = []
    for n, (resp, receipt) in enumerate(zip(resps, receipts, strict=True), 1):
        learner.resp(resp)
        if (found := learner.receipt(receipt)) is not None:
            changes.append((n, found))
    return learner, changes


def test_a_kept_format_is_used_at_once_and_confirmed_by_ids_that_agree() -> None:
    """Started from HEX, the quirk still there: receipts are read as HEX from the first one, no
    change is reported (the daemon warned at start), and the ids confirm it."""
    ids = range(1, 301)
    learner = IdFormatLearner(IdFormat.HEX)
    assert (learner.receipt_format, learner.learning) == (IdFormat.HEX, True)
    learner, changes = learner_fed(IdFormat.HEX, [f"{n:08X}" for n in ids], [str(n) for n in ids])
    assert (changes, learner.receipt_format, learner.learning) == ([], IdFormat.HEX, False)
    learner, changes = learner_fed(IdFormat.DECIMAL, [str(n) for n in ids], [f"{n:x}" for n in ids])
    assert (changes, learner.receipt_format, learner.learning) == ([], IdFormat.DECIMAL, False)


def test_a_kept_format_the_ids_contradict_is_dropped_and_learned_again() -> None:
    """The carrier changed its ids since. Hex on both sides: the third receipt id with letters
    drops HEX (at the next decision point), and the letters on both sides then settle AUTO.
    Decimal on both: the resps, hex under HEX, show no letters in 64, and it is dropped too."""
    ids = range(1, 301)
    hexes = [f"{n:08x}" for n in ids]
    learner, changes = learner_fed(IdFormat.HEX, hexes, hexes)
    assert changes == [(16, IdFormat.AUTO)]  # letters in receipts 10, 11, 12
    assert (learner.receipt_format, learner.learning) == (IdFormat.AUTO, False)
    decimals = [str(n) for n in ids]
    learner, changes = learner_fed(IdFormat.HEX, decimals, decimals)
    assert changes == [(64, IdFormat.AUTO)]
    assert (learner.receipt_format, learner.learning) == (IdFormat.AUTO, True)
    # DECIMAL (decimal resps, hex receipts) is dropped by resp ids with letters.
    learner, changes = learner_fed(IdFormat.DECIMAL, hexes, hexes)
    assert changes == [(16, IdFormat.AUTO)]
    # A carrier that changed to the other quirk is learned as such once the old is dropped.
    learner, changes = learner_fed(
        IdFormat.DECIMAL, [f"{n:08X}" for n in ids], [str(n) for n in ids]
    )
    assert [found for _, found in changes] == [IdFormat.AUTO, IdFormat.HEX]
    assert (learner.receipt_format, learner.learning) == (IdFormat.HEX, False)
