"""Telling a redelivered MO from a new one: what the fingerprint covers, the window, the bound."""

from __future__ import annotations

import dataclasses

from smppd.pdu.pdus import DataSm, DeliverSm
from smppd.pdu.tlv import Tag, Tlv
from smppd.redelivery import Redeliveries, fingerprint

MO = DeliverSm(
    sequence_number=7,
    source_addr="447700900001",
    source_addr_ton=1,
    destination_addr="12345",
    short_message=b"YES",
)


def test_a_redelivery_differs_only_in_its_sequence_number() -> None:
    """The same MO under another sequence number is the same; any field of its content, its
    numbers, coding, esm_class or SAR part is another message."""
    assert fingerprint(dataclasses.replace(MO, sequence_number=99)) == fingerprint(MO)
    others = [
        dataclasses.replace(MO, short_message=b"YES!"),
        dataclasses.replace(MO, source_addr="447700900002"),
        dataclasses.replace(MO, destination_addr="12346"),
        dataclasses.replace(MO, data_coding=8),
        dataclasses.replace(MO, esm_class=0x40),
        dataclasses.replace(MO, source_addr_ton=0),
        dataclasses.replace(MO, tlvs=(Tlv.of_int(Tag.sar_segment_seqnum, 2),)),
    ]
    assert len({fingerprint(pdu) for pdu in others} | {fingerprint(MO)}) == len(others) + 1
    # The user data in message_payload, or in a data_sm, is the same message.
    payload = dataclasses.replace(MO, short_message=b"", tlvs=(Tlv(Tag.message_payload, b"YES"),))
    assert fingerprint(payload) == fingerprint(MO)
    data_sm = DataSm(
        source_addr="447700900001",
        source_addr_ton=1,
        destination_addr="12345",
        tlvs=(Tlv(Tag.message_payload, b"YES"),),
    )
    assert fingerprint(data_sm) == fingerprint(MO)


def test_a_sar_value_too_long_for_a_number_still_has_a_fingerprint() -> None:
    """A hostile SMSC's sar_total_segments of 1,786 octets: a number past Python's decimal
    conversion limit. It is fingerprinted as sent (its repr raised, and the MO, never stored,
    came again for ever)."""
    huge = dataclasses.replace(MO, tlvs=(Tlv(Tag.sar_total_segments, b"\xff" * 1786),))
    assert fingerprint(huge) != fingerprint(MO)


def test_the_window_runs_from_the_last_delivery() -> None:
    """Seen within the window: a redelivery, and the window starts again from it; past it,
    new. Window 0 remembers nothing."""
    recent = Redeliveries(60.0)
    assert not recent.seen(b"a", 0.0)
    assert recent.seen(b"a", 50.0)
    assert recent.seen(b"a", 100.0)  # 50 s after the last one
    assert not recent.seen(b"a", 161.0)
    assert not recent.seen(b"b", 161.0)
    off = Redeliveries(0.0)
    assert not off.seen(b"a", 0.0)
    assert not off.seen(b"a", 0.0)
    assert len(off) == 0


def test_what_is_remembered_is_bounded_and_expires() -> None:
    """At most max_entries, the oldest out first; entries past the window go at the next call."""
    recent = Redeliveries(60.0, max_entries=3)
    for i, key in enumerate([b"a", b"b", b"c", b"d"]):
        assert not recent.seen(key, float(i))
    assert len(recent) == 3
    assert not recent.seen(b"a", 4.0)  # pushed out by d
    assert recent.seen(b"d", 5.0)
    assert not recent.seen(b"e", 200.0)
    assert len(recent) == 1


def test_a_forgotten_mo_is_new_again() -> None:
    recent = Redeliveries(60.0)
    assert not recent.seen(b"a", 0.0)
    recent.forget(b"a")
    assert not recent.seen(b"a", 1.0)
    recent.forget(b"never seen")


def test_what_an_earlier_run_saw_goes_before_what_was_seen_since() -> None:
    """restore() adds an earlier run's keys by age, oldest first out, ahead of keys seen
    meanwhile; one older than the window, or past the bound, is left out."""
    seen = Redeliveries(60.0, max_entries=3)
    assert not seen.seen(b"now", 100.0)
    earlier = [(b"too old", 61.0), (b"first", 50.0), (b"second", 40.0), (b"third", 30.0)]
    seen.restore([*earlier, (b"now", 20.0)], 100.0)
    assert seen.restored
    assert len(seen) == 3  # "too old" out of the window, "first" past the bound
    assert seen.seen(b"second", 101.0)
    assert seen.seen(b"third", 101.0)
    assert seen.seen(b"now", 101.0)
    assert not seen.seen(b"first", 101.0)
    assert not seen.seen(b"too old", 101.0)
