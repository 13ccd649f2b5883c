"""Inbound handling without sockets: receipts batched into one store call, MO reassembly."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from queue_support import message as queue_message
from queue_support import peek

from smppd.address import NumberPlan, from_wire
from smppd.compliance import DEFAULT, Keyword
from smppd.idformat import IdFormatLearner
from smppd.inbound import (
    AUTO_REPLY_COOLDOWN_S,
    AutoReply,
    InboundHandler,
    OptOutPolicy,
    ReplyCooldown,
)
from smppd.logging import configure_logging
from smppd.pdu import national
from smppd.pdu.national import DEFAULT_SHIFT, NationalLanguage, Shift
from smppd.pdu.pdus import ESM_UDHI, DeliverSm
from smppd.pdu.receipt import IdFormat, resp_keys
from smppd.pdu.text import Alphabet
from smppd.pdu.tlv import Tag, Tlv
from smppd.pdu.udh import build_concat_udh
from smppd.queue import MessageState
from smppd.queue.base import Queue
from smppd.queue.errors import QueueError, StorageFullError
from smppd.queue.memory import MemoryQueue
from smppd.queue.model import (
    Enqueued,
    InboundIn,
    InboundPart,
    NewMessage,
    PartGroup,
    Submitted,
)
from smppd.queue.sqlite import SqliteQueue
from smppd.redelivery import Redeliveries
from smppd.service import Event

T0 = 1_800_000_000.0


def handler(
    queue: Queue,
    events: list[Event],
    now: list[float] | None = None,
    learner: IdFormatLearner | None = None,
    mono: list[float] | None = None,
    redeliveries: Redeliveries | None = None,
    *,
    owners: Mapping[str, str] | None = None,
    auto_replies: Mapping[Keyword, str] | None = None,
    auto_reply: AutoReply | None = None,
) -> InboundHandler:
    """A handler whose clock reads `now[0]` (T0 if not given), reassembly timeout 10 s, its
    monotonic clock `mono[0]` (the same as `now` if not given); SHOP is shop's unless
    `owners` say otherwise."""
    clock = [T0] if now is None else now
    monotonic = clock if mono is None else mono
    return InboundHandler(
        "fake",
        queue,
        owners={"SHOP": "shop"} if owners is None else owners,
        optout=OptOutPolicy(
            keywords=DEFAULT, per_client=False, senders_of={}, auto_replies=auto_replies or {}
        ),
        auto_reply=auto_reply,
        default_alphabet=Alphabet.GSM7,
        publish=events.append,
        clock=lambda: clock[0],
        monotonic=lambda: monotonic[0],
        reassembly_timeout_s=10.0,
        learner=learner,
        redeliveries=redeliveries,
    )


def receipt_pdu(message_id: str) -> DeliverSm:
    return DeliverSm(
        esm_class=0x04,
        short_message=f"id:{message_id} stat:DELIVRD err:000".encode(),
        tlvs=(Tlv.of_str(Tag.receipted_message_id, message_id), Tlv.of_int(Tag.message_state, 2)),
    )


async def submitted(queue: MemoryQueue, keys: list[str]) -> list[Enqueued]:
    """One message per key, claimed and accepted by the SMSC under that correlation key."""
    new = NewMessage("shop", None, "SHOP", "+447700900001", "fake", 5, None, None, True, [b"x"])
    enqueued = await queue.enqueue([new] * len(keys), now=T0)
    claim = await queue.claim("fake", len(keys), now=T0)
    await queue.record(
        [Submitted(s.segment_id, (key,), "0") for s, key in zip(claim, keys, strict=True)],
        now=T0,
    )
    return enqueued


async def assert_delivered(queue: MemoryQueue, enqueued: list[Enqueued]) -> None:
    for e in enqueued:
        status = await queue.status(e.message_id, None)
        assert status is not None
        assert status.state == "delivered"


async def test_concurrent_receipts_share_one_store_call() -> None:
    """Receipts handled in the same tick are applied in one call, each to its own message."""
    queue = MemoryQueue()
    ids = ["0000000a", "00000010", "1f"]
    enqueued = await submitted(queue, [f"s:{i.lstrip('0')}" for i in ids])
    events: list[Event] = []
    inbound = handler(queue, events)
    statuses = await asyncio.gather(*(inbound(receipt_pdu(i)) for i in ids))
    assert statuses == [0, 0, 0]
    assert inbound._receipts.calls == 1
    receipts = [e for e in events if e.kind == "receipt"]
    assert sorted(e.data["id"] for e in receipts) == sorted(e.message_id for e in enqueued)
    await assert_delivered(queue, enqueued)


async def test_a_receipt_written_in_ucs2_is_read_as_text() -> None:
    """Some SMSCs send the receipt's text with data_coding 8 and no receipt TLVs: it is read
    as UCS-2 and matched, not counted as unparseable and dropped; a data_coding 0 receipt
    keeps an id's "_" (GSM would read that octet as another letter)."""
    queue = MemoryQueue()
    ids = ["ab12cd34", "id_77"]
    enqueued = await submitted(queue, [f"s:{i}" for i in ids])
    text = (
        "id:{} sub:001 dlvrd:001 submit date:2612041200 done date:2612041201 stat:DELIVRD err:000"
    )
    ucs2 = DeliverSm(
        esm_class=0x04, data_coding=8, short_message=text.format(ids[0]).encode("utf-16-be")
    )
    plain = DeliverSm(esm_class=0x04, short_message=text.format(ids[1]).encode())
    events: list[Event] = []
    inbound = handler(queue, events)
    assert list(await asyncio.gather(inbound(ucs2), inbound(plain))) == [0, 0]
    assert inbound.counters.receipts_unparseable == 0
    await assert_delivered(queue, enqueued)


async def test_a_receipt_sent_as_an_mo_or_an_ack_is_read_as_a_receipt() -> None:
    """esm_class 0 with the receipt TLVs, and 0x08 (an SME delivery acknowledgement), settle
    their messages; neither reaches the sender's owner as an inbound text."""
    queue = MemoryQueue()
    ids = ["ab24", "ab25"]
    enqueued = await submitted(queue, [f"s:{i}" for i in ids])
    as_mo = dataclasses.replace(receipt_pdu(ids[0]), esm_class=0, source_addr="447700900001")
    as_ack = dataclasses.replace(receipt_pdu(ids[1]), esm_class=0x08, tlvs=())
    events: list[Event] = []
    inbound = handler(queue, events)
    assert list(await asyncio.gather(inbound(as_mo), inbound(as_ack))) == [0, 0]
    assert sorted(e.kind for e in events) == ["receipt", "receipt", "state", "state"]
    await assert_delivered(queue, enqueued)
    mo = DeliverSm(source_addr="447700900001", destination_addr="SHOP", short_message=b"id:x")
    assert await inbound(mo) == 0
    assert events[-1].kind == "inbound"  # the same text, without the TLV: a person's reply


async def test_an_intermediate_notification_or_a_stateless_receipt_settles_nothing() -> None:
    """An intermediate delivery notification (esm_class 0x20), or a receipt that names no
    state (the id in its TLV, free text), leaves the segment submitted: read as UNKNOWN they
    made it undeliverable for good, and the DELIVRD receipt after it changed nothing."""
    queue = MemoryQueue()
    ids = ["ab30", "ab31", "ab32"]
    enqueued = await submitted(queue, [f"s:{i}" for i in ids])
    events: list[Event] = []
    inbound = handler(queue, events)
    buffered = DeliverSm(
        esm_class=0x20,
        short_message=b"Message buffered, will retry",
        tlvs=(Tlv.of_str(Tag.receipted_message_id, ids[0]),),
    )
    enroute = dataclasses.replace(receipt_pdu(ids[1]), esm_class=0x20)  # says DELIVRD: not yet
    stateless = DeliverSm(
        esm_class=0x04,
        short_message=b"Your message was sent",
        tlvs=(Tlv.of_str(Tag.receipted_message_id, ids[2]),),
    )
    assert list(await asyncio.gather(*(inbound(p) for p in (buffered, enroute, stateless)))) == [
        0,
        0,
        0,
    ]
    for e in enqueued:
        status = await queue.status(e.message_id, None)
        assert status is not None
        assert status.state == "submitted"
    told = [e for e in events if e.kind == "receipt"]
    assert sorted(e.data["stat"] for e in told) == ["", "", "DELIVRD"]
    assert all(e.data["state"] == "submitted" for e in told)
    assert list(await asyncio.gather(*(inbound(receipt_pdu(i)) for i in ids))) == [0, 0, 0]
    await assert_delivered(queue, enqueued)


async def test_a_carrier_with_hex_resps_and_decimal_receipts_is_told_and_matched_right() -> None:
    """Sequential ids, hex in the resp (0000000A), decimal in the receipt ("10"): as written,
    "10" is the resp 00000010's. Once the ids have shown the quirk, receipts are read in the
    other base, and each settles its own message; a warning says so, once."""
    queue = MemoryQueue()
    new = NewMessage("shop", None, "SHOP", "+447700900001", "fake", 5, None, None, True, [b"x"])
    enqueued = await queue.enqueue([new] * 200, now=T0)
    claim = await queue.claim("fake", 200, now=T0)
    learner = IdFormatLearner()
    for n, segment in enumerate(claim, 1):
        learner.resp(f"{n:08X}")
        await queue.record([Submitted(segment.segment_id, resp_keys(f"{n:08X}"), "0")], now=T0)
    events: list[Event] = []
    inbound = handler(queue, events, learner=learner)

    def receipt(n: int) -> DeliverSm:
        text = f"id:{n} sub:001 dlvrd:001 stat:DELIVRD err:{n:03d}"
        return DeliverSm(esm_class=0x04, short_message=text.encode())

    with structlog.testing.capture_logs() as logs:
        for n in range(150, 200):  # their decimal ids, read as hex, are no resp of these
            assert await inbound(receipt(n)) == 0
        assert learner.receipt_format is IdFormat.HEX
        for n in range(10, 100):
            assert await inbound(receipt(n)) == 0
    warnings = [line for line in logs if "hex on one side" in line["event"]]
    assert [(w["resp_ids"], w["message_id_format"]) for w in warnings] == [("hex", "hex")]
    for n in range(10, 100):
        status = await queue.status(enqueued[n - 1].message_id, None)
        assert status is not None
        assert status.segments[0].receipt_err == f"{n:03d}"


async def test_a_kept_quirk_the_ids_contradict_is_dropped_and_receipts_match_as_written() -> None:
    """Started from a kept HEX, a carrier now writing hex on both sides: under HEX, the all-digit
    receipt "00000016" would be read as decimal 16, 0x10's. Receipt ids with letters drop HEX
    at the next decision point (a warning says so), and from then each receipt, matched as
    written, settles its own message."""
    queue = MemoryQueue()
    new = NewMessage("shop", None, "SHOP", "+447700900001", "fake", 5, None, None, True, [b"x"])
    enqueued = await queue.enqueue([new] * 64, now=T0)
    claim = await queue.claim("fake", 64, now=T0)
    learner = IdFormatLearner(IdFormat.HEX)
    for n, segment in enumerate(claim, 1):
        learner.resp(f"{n:08x}")
        await queue.record([Submitted(segment.segment_id, resp_keys(f"{n:08x}"), "0")], now=T0)
    inbound = handler(queue, [], learner=learner)

    def receipt(n: int) -> DeliverSm:
        text = f"id:{n:08x} sub:001 dlvrd:001 stat:DELIVRD err:{n:03d}"
        return DeliverSm(esm_class=0x04, short_message=text.encode())

    with structlog.testing.capture_logs() as logs:
        for n in (10, 11, 12, 13, 14, 15, 26, 27):  # with letters: three drop HEX
            assert await inbound(receipt(n)) == 0
        assert learner.receipt_format is IdFormat.AUTO
        for n in range(16, 26):
            assert await inbound(receipt(n)) == 0
    dropped = [line for line in logs if "no longer show" in line["event"]]
    assert [(line["carrier"], line["log_level"]) for line in dropped] == [("fake", "warning")]
    for n in range(16, 26):
        status = await queue.status(enqueued[n - 1].message_id, None)
        assert status is not None
        assert status.segments[0].receipt_err == f"{n:03d}"


async def test_long_mo_is_reassembled_and_routed_to_the_owner() -> None:
    """A two-part UDH MO is stored once, whole, and published to the sender id's owner."""
    queue = MemoryQueue()
    events: list[Event] = []
    inbound = handler(queue, events)
    parts = [b"Hello, ", b"world"]
    for seq, data in enumerate(parts, 1):
        pdu = DeliverSm(
            source_addr="447700900001",
            source_addr_ton=1,
            destination_addr="SHOP",
            esm_class=ESM_UDHI,
            short_message=build_concat_udh(7, 2, seq, ref16=False) + data,
        )
        assert await inbound(pdu) == 0
    [event] = [e for e in events if e.kind == "inbound"]
    assert event.client == "shop"
    assert event.data["text"] == "Hello, world"
    assert event.data["from"] == "+447700900001"
    stored = await queue.inbound_since(0)
    assert [m.text for m in stored] == ["Hello, world"]


def part_pdu(source: str, seq: int, data: bytes, *, data_coding: int = 0) -> DeliverSm:
    return DeliverSm(
        source_addr=source,
        source_addr_ton=1,
        destination_addr="SHOP",
        esm_class=ESM_UDHI,
        data_coding=data_coding,
        short_message=build_concat_udh(9, 2, seq, ref16=False) + data,
    )


async def test_huge_mo_parts_from_a_hostile_smsc_hold_a_bounded_amount() -> None:
    """Parts of 64 KB (a message_payload each) that never complete their messages: the parts
    held in memory stay within the reassembler's byte budget, and those pushed out are stored
    as incomplete messages, each with the part that came, rather than held or lost."""
    queue = MemoryQueue()
    events: list[Event] = []
    inbound = handler(queue, events)
    part = b"x" * 64_000
    for ref in range(120):
        pdu = DeliverSm(
            source_addr="447700900001",
            source_addr_ton=1,
            destination_addr="SHOP",
            esm_class=ESM_UDHI,
            tlvs=(Tlv(Tag.message_payload, build_concat_udh(ref, 254, 1, ref16=False) + part),),
        )
        assert await inbound(pdu) == 0
    held = len(inbound._parts)
    assert held * len(part) <= 4 * 1024 * 1024
    stored = await queue.inbound_since(0, limit=1000)
    assert len(stored) == 120 - held
    assert all(len(m.text) == len(part) for m in stored)
    assert not any(e.data["complete"] for e in events if e.kind == "inbound")


async def test_an_incomplete_long_mo_is_decoded_with_its_own_data_coding() -> None:
    """The first half of a UCS-2 message, given up when an unrelated GSM message arrives after
    the reassembly timeout, is stored as the UCS-2 text it is, marked incomplete."""
    queue = MemoryQueue()
    events: list[Event] = []
    now = [T0]
    inbound = handler(queue, events, now)
    first_half = "Привет".encode("utf-16-be")
    assert await inbound(part_pdu("447700900001", 1, first_half, data_coding=8)) == 0
    now[0] += 60.0
    unrelated = DeliverSm(
        source_addr="447700900002", source_addr_ton=1, destination_addr="SHOP", short_message=b"ok"
    )
    assert await inbound(unrelated) == 0
    stored = {m.source: (m.text, m.data_coding, m.complete) for m in await queue.inbound_since(0)}
    assert stored == {"+447700900001": ("Привет", 8, False), "+447700900002": ("ok", 0, True)}
    [partial] = [e for e in events if e.kind == "inbound" and not e.data["complete"]]
    assert partial.data["text"] == "Привет"


async def test_the_store_keeps_what_an_inbound_event_said() -> None:
    """The event and the stored message agree: id, complete and the keyword it was read as,
    so that a client reading what it missed sees what a subscriber saw."""
    queue = MemoryQueue()
    events: list[Event] = []
    inbound = handler(queue, events)
    for text in (b"STOP", b"hello"):
        pdu = DeliverSm(
            source_addr="447700900001",
            source_addr_ton=1,
            destination_addr="SHOP",
            short_message=text,
        )
        assert await inbound(pdu) == 0
    said = [e.data for e in events if e.kind == "inbound"]
    stored = await queue.inbound_since(0)
    assert [(m.id, m.text, m.keyword, m.complete) for m in stored] == [
        (d["id"], d["text"], d["keyword"], d["complete"]) for d in said
    ]
    assert [m.keyword for m in stored] == ["stop", None]


async def test_a_wall_clock_stepped_back_does_not_hold_an_incomplete_mo_longer() -> None:
    """The reassembly timeout runs in monotonic time: a long MO whose last part never comes is
    stored as incomplete 10 s after its first, although the wall clock went back 10 minutes
    meanwhile and another conversation's part arrived after the step."""
    queue = MemoryQueue()
    wall, mono = [T0], [0.0]
    inbound = handler(queue, [], wall, mono=mono)
    assert await inbound(part_pdu("447700900001", 1, b"first half")) == 0
    wall[0], mono[0] = T0 + 5 - 600, 5.0
    assert await inbound(part_pdu("447700900002", 1, b"other")) == 0
    wall[0], mono[0] = T0 + 11 - 600, 11.0
    await inbound.store_incomplete()
    assert [(m.source, m.text) for m in await queue.inbound_since(0)] == [
        ("+447700900001", "first half")
    ]


async def test_an_incomplete_long_mo_is_stored_when_nothing_else_arrives() -> None:
    """With no further MO, the housekeeping's call stores the parts that came once the timeout
    passes, and not before."""
    queue = MemoryQueue()
    events: list[Event] = []
    now = [T0]
    inbound = handler(queue, events, now)
    assert await inbound(part_pdu("447700900001", 2, b"world")) == 0
    now[0] += 9.0
    await inbound.store_incomplete()
    assert await queue.inbound_since(0) == []
    now[0] += 1.0
    await inbound.store_incomplete()
    [stored] = await queue.inbound_since(0)
    assert (stored.source, stored.text) == ("+447700900001", "world")
    [event] = [e for e in events if e.kind == "inbound"]
    assert event.data["complete"] is False
    await inbound.store_incomplete()
    assert len(await queue.inbound_since(0)) == 1


async def test_stop_tells_the_send_loops_what_it_cancelled() -> None:
    """A STOP cancels what is still unsent from that sender to that number, a claimed segment
    included, and hands the send loops its id so that a loop holding it does not send it."""
    queue = MemoryQueue()
    (enqueued,) = await queue.enqueue(
        [NewMessage("shop", None, "SHOP", "+447700900001", "fake", 5, None, None, True, [b"x"])],
        now=T0,
    )
    (claimed,) = await queue.claim("fake", 1, now=T0)
    withdrawn: list[int] = []
    inbound = InboundHandler(
        "fake",
        queue,
        owners={"SHOP": "shop"},
        optout=OptOutPolicy(keywords=DEFAULT, per_client=False, senders_of={}),
        default_alphabet=Alphabet.GSM7,
        publish=lambda event: None,
        clock=lambda: T0,
        withdraw=withdrawn.extend,
    )
    stop = DeliverSm(
        source_addr="447700900001",
        source_addr_ton=1,
        destination_addr="SHOP",
        short_message=b"STOP",
    )
    assert await inbound(stop) == 0
    assert withdrawn == [claimed.segment_id]
    status = await queue.status(enqueued.message_id, None)
    assert status is not None
    assert status.state == "cancelled"


@pytest.mark.parametrize("ton", [0, 1, 3])
async def test_a_stop_to_a_short_code_stops_it_whatever_ton_the_smsc_gives_it(ton: int) -> None:
    """Some SMSCs put TON 1 on every address: 12345 with TON 1 is still the short code (it
    was read as the number +12345: owned by nobody, and submits from 12345 went on)."""
    queue = MemoryQueue()
    events: list[Event] = []
    inbound = handler(queue, events, owners={"12345": "shop", "+447700900999": "shop"})
    for destination, number in (("12345", "447700902222"), ("7654", "447700903333")):
        stop = DeliverSm(
            source_addr=number,
            source_addr_ton=1,
            destination_addr=destination,
            dest_addr_ton=ton,
            short_message=b"STOP",
        )
        assert await inbound(stop) == 0
        assert await queue.is_opted_out(destination, "+" + number)
    # A long number of ours keeps its + whatever its TON (it is owned in that form).
    long_number = DeliverSm(
        source_addr="447700904444",
        source_addr_ton=1,
        destination_addr="447700900999",
        dest_addr_ton=ton,
        short_message=b"hi",
    )
    assert await inbound(long_number) == 0
    owned = [(e.data["to"], e.client) for e in events if e.kind == "inbound"]
    assert owned == [("12345", "shop"), ("7654", None), ("+447700900999", "shop")]


def shop_handler(queue: Queue, plan: NumberPlan) -> InboundHandler:
    """MO to SHOP (shop's), opt-outs by sender, numbers read under `plan`."""
    policy = OptOutPolicy(keywords=DEFAULT, per_client=False, senders_of={}, numbers=plan)
    return InboundHandler(
        "fake",
        queue,
        owners={"SHOP": "shop"},
        optout=policy,
        default_alphabet=Alphabet.GSM7,
        publish=lambda event: None,
        clock=lambda: T0,
    )


@pytest.mark.parametrize(
    ("source", "ton", "prefix"),
    [
        ("447700902222", 0, None),  # unknown type: bare digits, as a client's are read
        ("00447700902222", 0, None),
        ("07700902222", 2, "44"),  # national, with the country configured
        ("7700902222", 2, "44"),
        ("07700902222", 0, "44"),
        ("447700902222", 0, "44"),  # international digits with TON 0, the country configured
        ("7700902222", 0, "44"),
        ("447700902222", 4, None),  # "subscriber number" or "abbreviated", in full all the same
        ("447700902222", 6, "44"),
        ("7700902222", 4, "44"),
    ],
)
async def test_a_stop_stops_submits_however_the_smsc_writes_the_number(
    source: str, ton: int, prefix: str | None
) -> None:
    """Many SMSCs send MO numbers with TON 0 or as national numbers: the opt-out is stored
    under the number clients submit to, so the next submit to it is refused."""
    queue = MemoryQueue()
    inbound = shop_handler(queue, NumberPlan(prefix))
    stop = DeliverSm(
        source_addr=source, source_addr_ton=ton, destination_addr="SHOP", short_message=b"STOP"
    )
    assert await inbound(stop) == 0
    assert await queue.is_opted_out("SHOP", "+447700902222")


async def test_a_foreign_stop_with_ton_0_stops_its_international_number_too() -> None:
    """Under a country prefix, TON 0 digits were read only as a client's bare digits: a German
    subscriber's 4915112345678 was recorded as +444915112345678 and the next submit to
    +4915112345678 was sent. Both readings are opted out; digits that begin with the prefix,
    or another TON, have one reading only."""
    queue = MemoryQueue()
    inbound = shop_handler(queue, NumberPlan("44"))

    def mo(source: str, text: bytes, ton: int = 0) -> DeliverSm:
        return DeliverSm(
            source_addr=source, source_addr_ton=ton, destination_addr="SHOP", short_message=text
        )

    assert await inbound(mo("4915112345678", b"STOP")) == 0
    assert await queue.is_opted_out("SHOP", "+4915112345678")
    assert await queue.is_opted_out("SHOP", "+444915112345678")
    assert await inbound(mo("447700902222", b"STOP")) == 0
    assert await inbound(mo("4915112345679", b"STOP", ton=1)) == 0
    assert [o.number for o in await queue.list_optouts()] == [
        "+444915112345678",
        "+447700902222",
        "+4915112345678",
        "+4915112345679",
    ]
    # A START lifts its own reading only: the other may be someone else's STOP, as
    # +4915112345679's (TON 1) is to the TON 0 digits 4915112345679 of +444915112345679.
    assert await inbound(mo("4915112345679", b"START")) == 0
    assert await queue.is_opted_out("SHOP", "+4915112345679")
    assert await inbound(mo("4915112345678", b"START")) == 0
    assert not await queue.is_opted_out("SHOP", "+444915112345678")
    assert await queue.is_opted_out("SHOP", "+4915112345678")


async def test_under_client_scope_a_stop_cancels_the_clients_queued_messages_from_any_sender() -> (
    None
):
    """A STOP cancelled what was queued from the client's own senders only: one from a sender
    it may use without owning it (BETA, beta's) still went. Another client's stays queued."""
    queue = MemoryQueue()
    number = "+447700902222"
    shop_beta, beta_beta, shop_shop = await queue.enqueue(
        [
            queue_message("shop", source="BETA", destination=number),
            queue_message("beta", source="BETA", destination=number),
            queue_message("shop", source="SHOP", destination=number),
        ],
        now=T0,
    )
    policy = OptOutPolicy(
        keywords=DEFAULT, per_client=True, senders_of={"shop": ("SHOP",), "beta": ("BETA",)}
    )
    inbound = InboundHandler(
        "fake",
        queue,
        owners={"SHOP": "shop", "BETA": "beta"},
        optout=policy,
        default_alphabet=Alphabet.GSM7,
        publish=lambda event: None,
        clock=lambda: T0,
    )
    stop = DeliverSm(
        source_addr="447700902222",
        source_addr_ton=1,
        destination_addr="SHOP",
        short_message=b"STOP",
    )
    assert await inbound(stop) == 0
    states = [(await queue.status(m.message_id, None)) for m in (shop_beta, beta_beta, shop_shop)]
    assert [s.state if s else None for s in states] == [
        MessageState.CANCELLED,
        MessageState.QUEUED,
        MessageState.CANCELLED,
    ]
    assert [(o.sender, o.number) for o in await queue.list_optouts()] == [("SHOP", number)]


async def test_a_stop_beside_an_empty_message_payload_opts_out() -> None:
    """Its text is short_message's when the SMSC adds an empty message_payload TLV."""
    queue = MemoryQueue()
    stop = DeliverSm(
        source_addr="447700902222",
        destination_addr="SHOP",
        short_message=b"STOP",
        tlvs=(Tlv.of_bytes(Tag.message_payload, b""),),
    )
    assert await handler(queue, [])(stop) == 0
    assert await queue.is_opted_out("SHOP", "+447700902222")


def test_numbers_that_do_not_read_as_international_are_kept_as_they_came() -> None:
    assert from_wire("07700902222", 0) == "07700902222"  # national, country unknown
    assert from_wire("7700902222", 2) == "7700902222"
    assert from_wire("12345", 0) == "12345"  # a short code
    assert from_wire("ACME", 5) == "ACME"
    assert from_wire("447700902222", 1) == "+447700902222"


def test_a_national_number_gets_the_country_prefix_even_when_it_begins_with_its_digits() -> None:
    """TON 2 says the number carries no country code: a German 0491 number (Leer), written
    4911234567, is +494911234567, not the Nuremberg +4911234567 that TON 0 digits would be
    read as, or a STOP from it would opt out someone else."""
    germany = NumberPlan("49")
    assert from_wire("4911234567", 2, plan=germany) == "+494911234567"
    assert from_wire("04911234567", 2, plan=germany) == "+494911234567"
    assert from_wire("4911234567", 0, plan=germany) == "+4911234567"
    assert from_wire("12345678901234", 2, plan=germany) == "12345678901234"
    # A short code stays one: a STOP to it must be recorded under the code clients send from.
    assert from_wire("12345", 2, plan=germany) == "12345"


def test_eight_digit_national_numbers_where_the_plan_says_short_codes_are_shorter() -> None:
    """In Denmark a number has 8 digits and no trunk 0: with short codes up to 6 digits, a
    STOP from 20123456 (TON 0 or 2) is from +4520123456, the number clients submit to."""
    denmark = NumberPlan("45", short_code_max_digits=6)
    assert from_wire("20123456", 0, plan=denmark) == "+4520123456"
    assert from_wire("20123456", 2, plan=denmark) == "+4520123456"
    assert from_wire("4520123456", 0, plan=denmark) == "+4520123456"
    assert from_wire("1231", 0, plan=denmark) == "1231"  # a short code
    assert from_wire("1231", 2, plan=denmark) == "1231"
    assert from_wire("20123456", 0, plan=NumberPlan("45")) == "20123456"  # a short code


async def test_a_repeated_stop_is_answered_once_an_hour_and_recorded_every_time() -> None:
    """Anyone can text STOP again and again: each is an opt-out (and a stored MO), but the
    automatic reply, an urgent message counted against the sender's daily cap, goes once per
    number, sender and keyword an hour."""
    queue = MemoryQueue()
    replies: list[tuple[str, str, str, str]] = []
    now = [T0]
    cooldown = ReplyCooldown(clock=lambda: now[0])

    async def auto_reply(client: str, sender: str, number: str, text: str) -> None:
        replies.append((client, sender, number, text))

    inbound = InboundHandler(
        "fake",
        queue,
        owners={"SHOP": "shop"},
        optout=OptOutPolicy(
            keywords=DEFAULT,
            per_client=False,
            senders_of={},
            auto_replies={Keyword.STOP: "You are unsubscribed.", Keyword.HELP: "Text STOP."},
        ),
        default_alphabet=Alphabet.GSM7,
        publish=lambda event: None,
        clock=lambda: now[0],
        auto_reply=auto_reply,
        cooldown=cooldown,
    )

    def mo(text: str, source: str = "447700900001") -> DeliverSm:
        return DeliverSm(
            source_addr=source,
            source_addr_ton=1,
            destination_addr="SHOP",
            short_message=text.encode(),
        )

    for _ in range(5):
        assert await inbound(mo("STOP")) == 0
        now[0] += 60
    assert await inbound(mo("HELP")) == 0  # another keyword: its own reply
    assert await inbound(mo("STOP", source="447700900002")) == 0  # another number
    assert [(r[2], r[3]) for r in replies] == [
        ("+447700900001", "You are unsubscribed."),
        ("+447700900001", "Text STOP."),
        ("+447700900002", "You are unsubscribed."),
    ]
    now[0] += AUTO_REPLY_COOLDOWN_S
    assert await inbound(mo("STOP")) == 0
    assert len(replies) == 4
    assert len(await queue.inbound_since(0)) == 8
    assert await queue.is_opted_out("SHOP", "+447700900001")


async def test_a_reply_that_could_not_be_sent_does_not_hold_back_the_next() -> None:
    """The hour's reply was counted as sent when it was refused (a daily cap, no route, the
    store failing): a repeat STOP in that hour got no confirmation at all."""
    queue = MemoryQueue()
    sent: list[str] = []
    failing = [True]

    async def auto_reply(client: str, sender: str, number: str, text: str) -> None:
        if failing[0]:
            raise QueueError("database is locked")
        sent.append(number)

    replies = {Keyword.STOP: "You are unsubscribed."}
    inbound = handler(queue, [], auto_replies=replies, auto_reply=auto_reply)
    assert await inbound(mo_pdu(b"STOP")) == 0
    assert sent == []
    failing[0] = False
    assert await inbound(mo_pdu(b"STOP")) == 0
    assert await inbound(mo_pdu(b"STOP")) == 0  # sent now: the hour's one
    assert len(sent) == 1


async def test_a_keywords_event_goes_out_before_its_reply_is_queued() -> None:
    """The reply is a commit of its own: an MO stored meanwhile must not have its event out
    first, or a client that handled it and pages `inbound` from its id misses the STOP."""
    queue = MemoryQueue()
    events: list[Event] = []
    published_when_replying: list[list[str]] = []

    async def auto_reply(client: str, sender: str, number: str, text: str) -> None:
        published_when_replying.append([e.data["text"] for e in events if e.kind == "inbound"])

    replies = {Keyword.STOP: "You are unsubscribed."}
    inbound = handler(queue, events, auto_replies=replies, auto_reply=auto_reply)
    assert await inbound(mo_pdu(b"STOP")) == 0
    assert published_when_replying == [["STOP"]]


async def test_a_long_mo_is_completed_across_a_restart(tmp_path: Path) -> None:
    """A part acknowledged before a restart is on disk: the new run's handler completes the
    message from it and the part that comes after, and no part is left held."""
    path = tmp_path / "queue.db"
    async with await SqliteQueue.open(path) as queue:
        assert await handler(queue, [])(part_pdu("447700900001", 1, b"Hello, ")) == 0
    events: list[Event] = []
    async with await SqliteQueue.open(path) as queue:
        inbound = handler(queue, events)
        assert await inbound(part_pdu("447700900001", 2, b"world")) == 0
        [stored] = await queue.inbound_since(0)
        assert (stored.text, stored.source) == ("Hello, world", "+447700900001")
        assert await queue.held_inbound_parts("fake") == []
    [event] = [e for e in events if e.kind == "inbound"]
    assert event.data["complete"] is True


async def test_a_long_mo_under_a_reused_reference_is_stored_whole_beside_the_old_one(
    tmp_path: Path,
) -> None:
    """A sender reuses reference 9 while the old message under it still waits for its lost
    part: the new message is stored whole and the old one incomplete, nothing held left. The
    new first part was taken for a repeat (dropped after its ESME_ROK), and its second part
    completed the old message."""
    async with await SqliteQueue.open(tmp_path / "queue.db") as queue:
        now = [T0]
        inbound = handler(queue, [], now)
        assert await inbound(part_pdu("447700900001", 1, b"Old one, ")) == 0
        now[0] += 5.0  # within the reassembly timeout
        assert await inbound(part_pdu("447700900001", 1, b"New one, ")) == 0
        assert await inbound(part_pdu("447700900001", 2, b"in two parts")) == 0
        stored = {(m.text, m.complete) for m in await queue.inbound_since(0)}
        assert stored == {("Old one, ", False), ("New one, in two parts", True)}
        assert await queue.held_inbound_parts("fake") == []


class FullOnce(SqliteQueue):
    """A store whose next `failures` inbound writes fail as a full disk does."""

    failures = 0

    async def store_inbound(self, *args: Any, **kwargs: Any) -> Any:
        if type(self).failures:
            type(self).failures -= 1
            raise StorageFullError("database or disk is full")
        return await super().store_inbound(*args, **kwargs)


async def test_a_reused_reference_whose_old_message_cannot_be_stored_refuses_the_new_part(
    tmp_path: Path,
) -> None:
    """The old message under the reused reference must be stored before the new part takes
    its row on disk: while that fails, the new part is refused (the SMSC delivers it again),
    not answered ESME_ROK and kept nowhere (the old parts, put back, displaced it and the new
    second part completed the old message). Across a restart both come out whole."""
    path = tmp_path / "queue.db"
    async with await FullOnce.open(path) as queue:
        now = [T0]
        inbound = handler(queue, [], now)
        assert await inbound(part_pdu("447700900001", 1, b"Old one, ")) == 0
        now[0] += 5.0
        FullOnce.failures = 1  # open() gives a SqliteQueue, to the type checker
        with pytest.raises(QueueError):  # answered ESME_RX_T_APPN by the link
            await inbound(part_pdu("447700900001", 1, b"New one, "))
        assert [p.data for p in await queue.held_inbound_parts("fake")] == [b"Old one, "]
    async with await FullOnce.open(path) as queue:  # a restart, and the SMSC delivers again
        inbound = handler(queue, [], [T0 + 6.0])
        assert await inbound(part_pdu("447700900001", 1, b"New one, ")) == 0
        assert await inbound(part_pdu("447700900001", 2, b"in two parts")) == 0
        stored = {(m.text, m.complete) for m in await queue.inbound_since(0)}
        assert stored == {("Old one, ", False), ("New one, in two parts", True)}
        assert await queue.held_inbound_parts("fake") == []


def payload_part(source: str, ref: int, seq: int, data: bytes) -> DeliverSm:
    """Part `seq` of 3 of a long MO carried in message_payload."""
    return DeliverSm(
        source_addr=source,
        source_addr_ton=1,
        destination_addr="SHOP",
        esm_class=ESM_UDHI,
        tlvs=(Tlv(Tag.message_payload, build_concat_udh(ref, 3, seq, ref16=False) + data),),
    )


async def test_a_part_whose_own_older_group_was_pushed_out_survives_a_restart(
    tmp_path: Path,
) -> None:
    """Part 2 arrives when its group, the oldest, is pushed out of the full byte budget: the
    old group (part 1) is stored incomplete, and part 2, answered ESME_ROK as the start of a
    new group of the same key, stays held on disk and completes with part 3 after a restart
    (the incomplete store took every held row of that key, part 2's too)."""
    path = tmp_path / "queue.db"
    big = b"x" * 60_000
    async with await SqliteQueue.open(path) as queue:
        inbound = handler(queue, [])
        assert await inbound(payload_part("447700900001", 1, 1, b"one " + big)) == 0
        for i in range(68):  # other conversations fill the 4 MiB budget
            assert await inbound(payload_part(f"4477009{i + 10:05d}", 2, 1, big)) == 0
        assert await inbound(payload_part("447700900001", 1, 2, b"two " + big)) == 0
        held = await queue.held_inbound_parts("fake")
        assert [p.seq for p in held if p.group.source == "+447700900001"] == [2]
    async with await SqliteQueue.open(path) as queue:
        clock = [T0]
        inbound = handler(queue, [], now=clock)
        assert await inbound(payload_part("447700900001", 1, 3, b"three")) == 0
        clock[0] += 3600  # past the reassembly timeout: stored as it is
        await inbound.store_incomplete()
        texts = [
            m.text for m in await queue.inbound_since(0, limit=1000) if m.source == "+447700900001"
        ]
        assert sorted(t[:4] for t in texts) == ["one ", "two "]
        assert [t for t in texts if t.startswith("two ")] == ["two " + "x" * 60_000 + "three"]


def turkish(text: str, shift: Shift) -> bytes:
    return national.encode(text, shift)


async def test_an_mo_in_the_turkish_tables_reads_as_turkish() -> None:
    """A handset that writes Turkish in GSM 7-bit names the national tables in its UDH
    (23.040 9.2.3.24.15-16): a single shift MO and a long locking shift one read as the text
    typed, not as the default alphabet's letters in the same cells."""
    queue = MemoryQueue()
    events: list[Event] = []
    inbound = handler(queue, events)
    single = Shift(single=NationalLanguage.TURKISH)
    short = DeliverSm(
        source_addr="447700900001",
        source_addr_ton=1,
        destination_addr="SHOP",
        esm_class=ESM_UDHI,
        short_message=bytes((3,)) + single.elements() + turkish("Görüşürüz, teşekkürler", single),
    )
    assert await inbound(short) == 0
    both = Shift(locking=NationalLanguage.TURKISH, single=NationalLanguage.TURKISH)
    halves = ["Yarın sabah İstanbul'a ", "uçuyorum; ğ, ş, ı ve ç da."]
    for seq, half in enumerate(halves, 1):
        udh = build_concat_udh(4, 2, seq, ref16=False)
        pdu = part_pdu("447700900002", seq, b"")
        pdu.short_message = bytes((udh[0] + 6,)) + udh[1:] + both.elements() + turkish(half, both)
        assert await inbound(pdu) == 0
    stored = {m.source: m.text for m in await queue.inbound_since(0)}
    assert stored == {
        "+447700900001": "Görüşürüz, teşekkürler",
        "+447700900002": "".join(halves),
    }
    assert sorted(e.data["text"] for e in events if e.kind == "inbound") == sorted(stored.values())


@pytest.mark.parametrize("order", [(1, 2), (2, 1)])
async def test_parts_that_name_different_tables_read_each_with_its_own(
    order: tuple[int, int],
) -> None:
    """The tables are a part's (each TPDU names its own): a long MO whose first part is in
    the Turkish locking table and whose second names none reads right in either arrival
    order, complete or given up incomplete."""
    locking = Shift(locking=NationalLanguage.TURKISH)
    halves = {1: ("İstanbul ", locking), 2: ("abc¡", DEFAULT_SHIFT)}

    def part(seq: int, source: str = "447700900001") -> DeliverSm:
        text, shift = halves[seq]
        udh = build_concat_udh(9, 2, seq, ref16=False, more=shift.elements())
        pdu = part_pdu(source, seq, b"")
        pdu.short_message = udh + national.encode(text, shift)
        return pdu

    queue = MemoryQueue()
    now = [T0]
    inbound = handler(queue, [], now)
    for seq in order:
        assert await inbound(part(seq)) == 0
    assert await inbound(part(order[0], source="447700900002")) == 0  # its other never comes
    now[0] += 60.0
    await inbound.store_incomplete()
    stored = {m.source: m.text for m in await queue.inbound_since(0)}
    assert stored == {"+447700900001": "İstanbul abc¡", "+447700900002": halves[order[0]][0]}
    assert inbound._part_shifts == {}


async def test_a_long_turkish_mo_keeps_its_tables_across_a_restart(tmp_path: Path) -> None:
    """The tables a held part's header named are on disk with it: the part read back after a
    restart is still Turkish (it would read "¡stanbul" with the default alphabet)."""
    path = tmp_path / "queue.db"
    locking = Shift(locking=NationalLanguage.TURKISH)

    def part(seq: int, text: str) -> DeliverSm:
        pdu = part_pdu("447700900001", seq, b"")
        udh = build_concat_udh(9, 2, seq, ref16=False)
        pdu.short_message = bytes((udh[0] + 3,)) + udh[1:] + locking.elements()
        pdu.short_message += turkish(text, locking)
        return pdu

    async with await SqliteQueue.open(path) as queue:
        assert await handler(queue, [])(part(1, "İstanbul ")) == 0
    async with await SqliteQueue.open(path) as queue:
        assert await handler(queue, [])(part(2, "Ğğ")) == 0
        [stored] = await queue.inbound_since(0)
        assert stored.text == "İstanbul Ğğ"


async def test_an_opt_out_line_masks_the_number_once() -> None:
    """The log processor masks `number`: a number masked before logging came out masked twice,
    its operator prefix gone."""
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("info", "json", stream=stream)
    try:
        inbound = handler(MemoryQueue(), [])
        stop = DeliverSm(
            source_addr="447911123423",
            source_addr_ton=1,
            destination_addr="SHOP",
            short_message=b"STOP",
        )
        assert await inbound(stop) == 0
    finally:
        for extra in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(extra)
        root.setLevel(level)
        structlog.reset_defaults()
    [line] = [json.loads(x) for x in stream.getvalue().splitlines() if "opt-out" in x]
    assert line["number"] == "+44791*****23"


async def test_mo_to_an_unowned_number_goes_to_the_unowned_inbound_client_and_no_further() -> None:
    """With unowned_to, an MO to a number no sender entry owns is stored for and told to that
    client; its STOP opts out of that number alone (as with no such client) and gets no
    automatic reply, which no client may send from there. Owned numbers keep their owner."""
    queue = MemoryQueue()
    events: list[Event] = []
    replies: list[tuple[str, str, str, str]] = []

    async def auto_reply(client: str, sender: str, number: str, text: str) -> None:
        replies.append((client, sender, number, text))

    inbound = InboundHandler(
        "fake",
        queue,
        owners={"SHOP": "shop"},
        optout=OptOutPolicy(
            keywords=DEFAULT,
            per_client=True,
            senders_of={"shop": ("SHOP",), "ops": ("OPS",)},
            auto_replies={Keyword.STOP: "You are unsubscribed."},
        ),
        unowned_to="ops",
        auto_reply=auto_reply,
        default_alphabet=Alphabet.GSM7,
        publish=events.append,
        clock=lambda: T0,
    )
    for to, text in (("447700900999", b"hello"), ("447700900999", b"STOP"), ("SHOP", b"hi")):
        pdu = DeliverSm(
            source_addr="447700902222", source_addr_ton=1, destination_addr=to, short_message=text
        )
        assert await inbound(pdu) == 0
    assert [(e.client, e.data["text"]) for e in events if e.kind == "inbound"] == [
        ("ops", "hello"),
        ("ops", "STOP"),
        ("shop", "hi"),
    ]
    assert [m.text for m in await queue.inbound_since(0, client="ops")] == ["hello", "STOP"]
    assert [(o.sender, o.number) for o in await queue.list_optouts()] == [
        ("+447700900999", "+447700902222")
    ]
    assert replies == []
    assert inbound.counters.inbound_unowned == 2


def mo_pdu(text: bytes, source: str = "447700900001") -> DeliverSm:
    return DeliverSm(
        source_addr=source, source_addr_ton=1, destination_addr="SHOP", short_message=text
    )


@pytest.mark.parametrize(
    ("ref", "total"),
    [
        (b"\x00\x07", b"\x01\x00"),  # a total of 256, in two octets
        (b"\x80" + b"\x00" * 7, b"\x02"),  # a reference of 2**63, past SQLite's INTEGER
    ],
)
async def test_sar_tlvs_out_of_range_make_a_message_of_its_own(
    ref: bytes, total: bytes, tmp_path: Path
) -> None:
    """sar_total_segments is one octet, sar_msg_ref_num two; a carrier that sends them longer
    must not fail the MO, which its SMSC would then deliver again for ever: it is stored as it
    came (held as a part, an 8-octet reference did not fit the store's integer)."""
    queue = await SqliteQueue.open(tmp_path / "queue.db")
    try:
        pdu = dataclasses.replace(
            mo_pdu(b"part one"),
            tlvs=(
                Tlv(Tag.sar_msg_ref_num, ref),
                Tlv(Tag.sar_total_segments, total),
                Tlv(Tag.sar_segment_seqnum, b"\x01"),
            ),
        )
        assert await handler(queue, [])(pdu) == 0
        assert [m.text for m in await queue.inbound_since(0)] == ["part one"]
    finally:
        await queue.close()


async def test_an_mo_delivered_again_within_the_window_is_answered_and_not_stored_again() -> None:
    """inbound_dedup_s 60: the same MO 30 s later is answered ESME_ROK and neither stored nor
    told again; another text, or another number, is a message of its own; the same MO 61 s
    after its last delivery is new again."""
    queue = MemoryQueue()
    events: list[Event] = []
    now = [T0]
    inbound = handler(queue, events, now, redeliveries=Redeliveries(60.0))
    assert await inbound(mo_pdu(b"YES")) == 0
    now[0] += 30.0
    assert await inbound(mo_pdu(b"YES")) == 0
    assert await inbound(mo_pdu(b"NO")) == 0
    assert await inbound(mo_pdu(b"YES", source="447700900002")) == 0
    now[0] += 61.0
    assert await inbound(mo_pdu(b"YES")) == 0
    stored = [(m.source, m.text) for m in await queue.inbound_since(0)]
    assert stored == [
        ("+447700900001", "YES"),
        ("+447700900001", "NO"),
        ("+447700900002", "YES"),
        ("+447700900001", "YES"),
    ]
    assert len([e for e in events if e.kind == "inbound"]) == 4
    assert inbound.counters.inbound_redelivered == 1
    assert inbound.counters.inbound == 4


async def test_a_keyword_within_the_window_is_never_taken_for_a_redelivery() -> None:
    """STOP, START, STOP, START within inbound_dedup_s: each changes the opt-out as it says
    (the second STOP, equal to the first, was answered and dropped, and the number stayed
    opted in; then the second START, and it stayed opted out). Other MO, HELP too, are
    deduplicated."""
    queue = MemoryQueue()
    now = [T0]
    inbound = handler(queue, [], now, redeliveries=Redeliveries(120.0))
    for text, opted_out in ((b"STOP", True), (b"START", False), (b"STOP", True), (b"START", False)):
        now[0] += 10.0
        assert await inbound(mo_pdu(text)) == 0
        assert await queue.is_opted_out("SHOP", "+447700900001") is opted_out
    assert [m.text for m in await queue.inbound_since(0)] == ["STOP", "START", "STOP", "START"]
    assert inbound.counters.inbound_redelivered == 0
    for text in (b"yes please", b"yes please", b"HELP", b"HELP"):
        assert await inbound(mo_pdu(text)) == 0
    assert inbound.counters.inbound_redelivered == 2  # HELP changes no opt-out


async def test_without_a_window_every_mo_is_stored() -> None:
    """inbound_dedup_s 0 (the default): the same MO twice is stored twice."""
    queue = MemoryQueue()
    inbound = handler(queue, [], redeliveries=Redeliveries(0.0))
    for _ in range(2):
        assert await inbound(mo_pdu(b"YES")) == 0
    assert len(await queue.inbound_since(0)) == 2
    assert inbound.counters.inbound_redelivered == 0


async def test_a_part_delivered_again_after_its_message_was_stored_is_not_held() -> None:
    """The second part of a long MO comes again after the message was stored whole: it is
    answered and not held as the start of a new message, so no incomplete fragment is stored
    once the reassembly timeout passes."""
    queue = MemoryQueue()
    events: list[Event] = []
    now = [T0]
    inbound = handler(queue, events, now, redeliveries=Redeliveries(60.0))
    assert await inbound(part_pdu("447700900001", 1, b"Hello, ")) == 0
    assert await inbound(part_pdu("447700900001", 2, b"world")) == 0
    assert await inbound(part_pdu("447700900001", 2, b"world")) == 0
    now[0] += 11.0
    await inbound.store_incomplete()
    assert [(m.text, m.complete) for m in await queue.inbound_since(0)] == [("Hello, world", True)]
    assert inbound.counters.inbound_redelivered == 1


async def test_an_mo_delivered_again_after_a_restart_is_told_once(tmp_path: Path) -> None:
    """The daemon stored an MO and a long MO's first part, then died before the SMSC had its
    deliver_sm_resps: after the restart the SMSC delivers both again, and the long MO's
    second part (already stored whole) too. Neither is stored twice, the part is not held as
    a new message, and an MO first seen past the window is stored again."""
    path = tmp_path / "queue.db"
    now = [T0]
    async with await SqliteQueue.open(path) as queue:
        inbound = handler(queue, [], now, redeliveries=Redeliveries(60.0))
        assert await inbound(mo_pdu(b"YES")) == 0
        assert await inbound(part_pdu("447700900002", 1, b"Hello, ")) == 0
        assert await inbound(part_pdu("447700900002", 2, b"world")) == 0
        assert peek(path, "SELECT count(*) FROM inbound_seen") == [(3,)]
    now[0] += 30.0
    async with await SqliteQueue.open(path) as queue:
        inbound = handler(queue, [], now, mono=[5.0], redeliveries=Redeliveries(60.0))
        assert await inbound(mo_pdu(b"YES")) == 0
        assert await inbound(part_pdu("447700900002", 2, b"world")) == 0
        assert inbound.counters.inbound_redelivered == 2
        now[0] += 11.0
        await inbound.store_incomplete()
        assert await queue.held_inbound_parts("fake") == []
        stored = [(m.source, m.text) for m in await queue.inbound_since(0)]
        assert stored == [("+447700900001", "YES"), ("+447700900002", "Hello, world")]
    now[0] += 60.0  # 101 s after the first delivery: a message of its own
    async with await SqliteQueue.open(path) as queue:
        inbound = handler(queue, [], now, redeliveries=Redeliveries(60.0))
        assert await inbound(mo_pdu(b"YES")) == 0
        assert inbound.counters.inbound_redelivered == 0
        assert len(await queue.inbound_since(0)) == 3
        assert await queue.forget_seen(now=now[0]) == 2  # the long MO's two: past their window
    assert peek(path, "SELECT count(*) FROM inbound_seen") == [(1,)]


async def test_without_a_window_no_fingerprint_is_stored(tmp_path: Path) -> None:
    """inbound_dedup_s 0: nothing is written beside the message."""
    path = tmp_path / "queue.db"
    async with await SqliteQueue.open(path) as queue:
        inbound = handler(queue, [], redeliveries=Redeliveries(0.0))
        assert await inbound(mo_pdu(b"YES")) == 0
        assert await inbound(part_pdu("447700900002", 1, b"Hello, ")) == 0
    assert peek(path, "SELECT count(*) FROM inbound_seen") == [(0,)]
    assert peek(path, "SELECT count(*) FROM inbound") == [(1,)]


async def test_lines_a_carrier_can_repeat_at_will_are_sampled() -> None:
    """An SMSC sending unparseable receipts, one MO again and again, or MO to a number nobody
    owns, as fast as it can: one line of each kind in 10 s, the next with how many it stands
    for; the counters count every one."""
    queue = MemoryQueue()
    mono = [5.0]
    inbound = handler(queue, [], mono=mono, redeliveries=Redeliveries(3600.0))
    junk = DeliverSm(esm_class=0x04, short_message=b"nothing to read here")
    unowned = dataclasses.replace(mo_pdu(b"hi"), destination_addr="NOBODY")
    with structlog.testing.capture_logs() as logs:
        for i in range(200):
            assert await inbound(junk) == 0
            assert await inbound(mo_pdu(b"YES")) == 0
            other = dataclasses.replace(unowned, destination_addr=f"NOBODY{i}")
            assert await inbound(dataclasses.replace(other, short_message=b"hi %d" % i)) == 0
        mono[0] += 10.0
        assert await inbound(junk) == 0
    counted: dict[str, list[object]] = {}
    for line in logs:
        counted.setdefault(line["event"], []).append(line.get("same_since_last_line"))
    assert counted == {
        "unparseable delivery receipt: no id, stat or receipt TLVs": [None, 199],
        "inbound message delivered again; answered, not stored again": [None],
        "inbound message to an unowned sender id": [None],
    }
    assert inbound.counters.receipts_unparseable == 201
    assert inbound.counters.inbound_redelivered == 199
    assert inbound.counters.inbound_unowned == 200


class FailingOnce(MemoryQueue):
    """A store whose first store_inbound fails (a full disk, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def store_inbound(self, inbound: InboundIn) -> int:
        if self.failures:
            self.failures -= 1
            raise StorageFullError("disk full")
        return await super().store_inbound(inbound)


async def test_an_mo_whose_storing_failed_is_taken_when_the_smsc_tries_again() -> None:
    """Storing failed, so the bind answered an error: the SMSC's next delivery of the same MO
    is stored, not taken for a redelivery."""
    queue = FailingOnce()
    inbound = handler(queue, [], redeliveries=Redeliveries(60.0))
    with pytest.raises(StorageFullError):
        await inbound(mo_pdu(b"YES"))
    assert await inbound(mo_pdu(b"YES")) == 0
    assert [m.text for m in await queue.inbound_since(0)] == ["YES"]
    assert inbound.counters.inbound_redelivered == 0


async def test_a_long_mo_whose_completing_part_failed_to_store_completes_on_its_retry() -> None:
    """Storing the whole message fails at its last part, which the SMSC then delivers again:
    the parts before it wait for that delivery, and the message is stored whole once, rather
    than the retried part starting a message of its own that, stored incomplete when it
    timed out, took the earlier parts' held rows with it."""
    queue = FailingOnce()
    queue.failures = 0
    now = [T0]
    inbound = handler(queue, [], now, redeliveries=Redeliveries(60.0))
    assert await inbound(part_pdu("447700900001", 1, b"Hello, ")) == 0
    queue.failures = 1
    with pytest.raises(StorageFullError):
        await inbound(part_pdu("447700900001", 2, b"world"))
    now[0] += 5.0
    assert await inbound(part_pdu("447700900001", 2, b"world")) == 0
    now[0] += 11.0
    await inbound.store_incomplete()
    assert [(m.text, m.complete) for m in await queue.inbound_since(0)] == [("Hello, world", True)]
    assert await queue.held_inbound_parts("fake") == []


async def test_an_incomplete_long_mo_that_failed_to_store_is_stored_when_it_expires_again() -> None:
    """The store of a timed-out message's parts fails: they are kept, held and in memory, and
    the next pass stores them; the failure is logged, not raised into the next MO's answer."""
    queue = FailingOnce()
    queue.failures = 0
    now = [T0]
    inbound = handler(queue, [], now)
    assert await inbound(part_pdu("447700900001", 1, b"Hello, ")) == 0
    now[0] += 11.0
    queue.failures = 1
    with structlog.testing.capture_logs() as logs:
        await inbound.store_incomplete()
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "storing an incomplete inbound message failed; its parts are kept"
    ]
    assert await queue.inbound_since(0) == []
    now[0] += 11.0
    await inbound.store_incomplete()
    assert [(m.text, m.complete) for m in await queue.inbound_since(0)] == [("Hello, ", False)]
    assert await queue.held_inbound_parts("fake") == []


class OutageStore(MemoryQueue):
    """While `outage` is set, holding a part fails at once and storing an MO fails once
    `part_refused` is set (the store of a timed-out message ends after the late part's)."""

    def __init__(self) -> None:
        super().__init__()
        self.outage = False
        self.part_refused = asyncio.Event()
        self.storing = asyncio.Event()

    async def hold_inbound_part(self, part: InboundPart) -> None:
        if self.outage:
            self.part_refused.set()
            raise StorageFullError("disk full")
        await super().hold_inbound_part(part)

    async def store_inbound(self, inbound: InboundIn) -> int:
        if self.outage:
            self.storing.set()
            await self.part_refused.wait()
            raise StorageFullError("disk full")
        return await super().store_inbound(inbound)


async def test_a_late_part_refused_in_an_outage_does_not_complete_its_message_unseen() -> None:
    """In a storage outage, storing a timed-out part 1 fails while the late part 2 is refused
    (its hold fails: the SMSC delivers it again). Part 2 is not left pending meanwhile: put
    back, part 1 would complete the message with it, and the whole text was dropped there
    (the redelivered part 2 then began a message of its own, stored as a fragment)."""
    queue = OutageStore()
    events: list[Event] = []
    now = [T0]
    inbound = handler(queue, events, now)
    assert await inbound(part_pdu("447700900001", 1, b"Your code ")) == 0
    now[0] += 11.0  # part 2 is late: part 1 times out
    queue.outage = True
    housekeeping = asyncio.ensure_future(inbound.store_incomplete())
    await queue.storing.wait()
    with pytest.raises(StorageFullError):
        await inbound(part_pdu("447700900001", 2, b"is 1234"))
    await housekeeping  # its store failed too; part 1 is kept
    queue.outage = False
    assert await inbound(part_pdu("447700900001", 2, b"is 1234")) == 0  # the SMSC again
    now[0] += 11.0
    await inbound.store_incomplete()
    stored = [(m.text, m.complete) for m in await queue.inbound_since(0)]
    assert stored == [("Your code is 1234", True)]
    assert [(e.data["text"], e.data["complete"]) for e in events] == stored
    assert await queue.held_inbound_parts("fake") == []


async def test_a_put_back_that_completes_a_long_mo_stores_it_whole() -> None:
    """A failed store puts its parts back; when that completes their message (its last part
    came meanwhile and was held), the message is stored whole with the next pass."""
    queue = OutageStore()
    now = [T0]
    inbound = handler(queue, [], now)
    assert await inbound(part_pdu("447700900001", 1, b"Hello, ")) == 0
    now[0] += 11.0
    expired = inbound._parts.expire(now=now[0])  # taken out to be stored, as housekeeping does
    ((seq, data),) = expired[0].parts
    assert await inbound(part_pdu("447700900001", 2, b"world")) == 0  # held, a group anew
    group = expired[0].key
    assert isinstance(group, PartGroup)
    inbound._put_back(group, [(seq, data)], {})  # that store failed
    await inbound.store_incomplete()
    assert [(m.text, m.complete) for m in await queue.inbound_since(0)] == [("Hello, world", True)]
    assert await queue.held_inbound_parts("fake") == []


async def test_a_part_is_not_held_after_another_delivery_stored_its_message() -> None:
    """Parts 1 and 2 arrive together while an older group is due: part 1 waits for that
    group's store; part 2 completes and stores the message, taking the held rows. Part 1's
    row, written after, would outlive the message and come back after a restart as a
    fragment of it."""
    with tempfile.TemporaryDirectory() as directory:
        queue = await SqliteQueue.open(Path(directory) / "queue.db")
        try:
            events: list[Event] = []
            now = [T0]
            inbound = handler(queue, events, now)
            assert await inbound(part_pdu("447700900009", 1, b"never completed")) == 0
            now[0] += 20.0  # that group is past its timeout; no housekeeping pass yet
            both = await asyncio.gather(
                inbound(part_pdu("447700900001", 1, b"Hello ")),
                inbound(part_pdu("447700900001", 2, b"world")),
            )
            assert list(both) == [0, 0]
            texts = [(e.data["text"], e.data["complete"]) for e in events]
            assert texts == [("never completed", False), ("Hello world", True)]
            assert await queue.held_inbound_parts("fake") == []
        finally:
            await queue.close()


class QueuedStore(MemoryQueue):
    """store_inbound says when its write is queued, then waits for `commit` to finish it."""

    def __init__(self) -> None:
        super().__init__()
        self.queued = asyncio.Event()
        self.commit = asyncio.Event()

    async def store_inbound(self, inbound: InboundIn) -> int:
        self.queued.set()
        await self.commit.wait()
        return await super().store_inbound(inbound)


class Published(list[Event]):
    """Events as published; `first` is set by the first."""

    def __init__(self) -> None:
        super().__init__()
        self.first = asyncio.Event()

    def append(self, event: Event) -> None:
        super().append(event)
        self.first.set()


@pytest.mark.parametrize("dedup", [False, True])
async def test_an_mo_whose_handler_is_cancelled_mid_store_is_still_told(dedup: bool) -> None:
    """The link cancels a handler still running after its bind went: a write once queued
    commits all the same, so the store goes on to its end, the event is published, and (with
    inbound_dedup_s) the SMSC's redelivery is known for one, not stored a second time."""
    queue = QueuedStore()
    events = Published()
    inbound = handler(queue, events, redeliveries=Redeliveries(600.0) if dedup else None)
    first = asyncio.ensure_future(inbound(mo_pdu(b"see you at 5")))
    async with asyncio.timeout(5):
        await queue.queued.wait()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        queue.commit.set()
        await events.first.wait()
    assert [m.text for m in await queue.inbound_since(0)] == ["see you at 5"]
    if dedup:
        assert await inbound(mo_pdu(b"see you at 5")) == 0  # the SMSC again: no resp came
        assert len(await queue.inbound_since(0)) == 1
        assert inbound.counters.inbound_redelivered == 1
    assert [e.data["text"] for e in events] == ["see you at 5"]


class GatedStore(MemoryQueue):
    """store_inbound waits for `gate` (a slow fsync), then fails `failures` times."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.failures = failures

    async def store_inbound(self, inbound: InboundIn) -> int:
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise StorageFullError("disk full")
        return await super().store_inbound(inbound)


@pytest.mark.parametrize("fails", [False, True])
async def test_a_redelivery_during_the_first_store_is_answered_as_that_store_ends(
    fails: bool,
) -> None:
    """The SMSC's timer ran out while the MO was being stored and it delivered it again: the
    redelivery is not answered ESME_ROK before the first delivery is on disk. It gets the
    first one's answer: ESME_ROK once stored, the error if storing failed (and the SMSC's next
    try is then stored)."""
    queue = GatedStore(failures=1 if fails else 0)
    inbound = handler(queue, [], redeliveries=Redeliveries(60.0))
    first = asyncio.ensure_future(inbound(mo_pdu(b"Call me")))
    await asyncio.sleep(0)
    again = asyncio.ensure_future(inbound(mo_pdu(b"Call me")))
    done, _ = await asyncio.wait([again], timeout=0.05)
    assert not done  # waiting for the first delivery's store
    queue.gate.set()
    results = await asyncio.gather(first, again, return_exceptions=True)
    if fails:
        assert [type(r) for r in results] == [StorageFullError, StorageFullError]
        assert await inbound(mo_pdu(b"Call me")) == 0
    else:
        assert list(results) == [0, 0]
    assert [m.text for m in await queue.inbound_since(0)] == ["Call me"]


async def test_an_mo_to_our_number_written_nationally_finds_its_owner() -> None:
    """With a default country prefix, an MO to the sender +447700900999 written 07700900999
    (TON 0) is that sender's: its owner gets it, and a STOP stops submits from that sender."""
    queue = MemoryQueue()
    events: list[Event] = []
    inbound = InboundHandler(
        "fake",
        queue,
        owners={"+447700900999": "shop"},
        optout=OptOutPolicy(
            keywords=DEFAULT, per_client=False, senders_of={}, numbers=NumberPlan("44")
        ),
        default_alphabet=Alphabet.GSM7,
        publish=events.append,
        clock=lambda: T0,
    )
    stop = DeliverSm(
        source_addr="07700900123", destination_addr="07700900999", short_message=b"STOP"
    )
    assert await inbound(stop) == 0
    assert await queue.is_opted_out("+447700900999", "+447700900123")
    (event,) = [e for e in events if e.kind == "inbound"]
    assert (event.client, event.data["to"]) == ("shop", "+447700900999")


class OptOutFailsOnce(MemoryQueue):
    """add_optout fails once (a full disk), or store_inbound does, as `fails` says."""

    def __init__(self, fails: str) -> None:
        super().__init__()
        self.fails = fails

    async def add_optout(self, sender: str, number: str, *, now: float) -> bool:
        if self.fails == "optout":
            self.fails = ""
            raise StorageFullError("disk full")
        return await super().add_optout(sender, number, now=now)

    async def store_inbound(self, inbound: InboundIn) -> int:
        if self.fails == "inbound":
            self.fails = ""
            raise StorageFullError("disk full")
        return await super().store_inbound(inbound)


@pytest.mark.parametrize("fails", ["optout", "inbound"])
async def test_a_stop_whose_storing_failed_part_way_is_stored_once_on_the_retry(
    fails: str,
) -> None:
    """Recording a STOP takes two writes, the opt-out and the message; either failing has the
    SMSC deliver it again, which leaves one stored message and the number opted out."""
    queue = OptOutFailsOnce(fails)
    inbound = handler(queue, [], redeliveries=Redeliveries(60.0))
    with pytest.raises(StorageFullError):
        await inbound(mo_pdu(b"STOP"))
    assert await inbound(mo_pdu(b"STOP")) == 0
    assert [m.text for m in await queue.inbound_since(0)] == ["STOP"]
    assert await queue.is_opted_out("SHOP", "+447700900001")
