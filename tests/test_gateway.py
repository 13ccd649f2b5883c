"""The gateway's hand-off to the send loops: what each accepted submit asks of them."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

from smppd import config as cfg
from smppd import gateway as gateway_module
from smppd.config import load_config
from smppd.daemon import gateway_settings
from smppd.events import EventHub, inbound_event
from smppd.gateway import HAND_OVER_MAX, Gateway, GatewaySettings
from smppd.logsample import LogSample
from smppd.outbound import OutboundProfile
from smppd.pdu.codec import decode_body
from smppd.pdu.command import CommandId
from smppd.pdu.pdus import SubmitSm
from smppd.queue import MessageState, Queue, SegmentState, open_queue
from smppd.queue.base import ENQUEUE_MAX
from smppd.queue.errors import QueueClosedError, StorageBusyError, StorageFullError
from smppd.queue.memory import MemoryQueue
from smppd.queue.model import (
    ClaimedSegment,
    Enqueued,
    InboundIn,
    NewMessage,
    Submitted,
    segment_id,
)
from smppd.queue.sqlite import BULK_ENQUEUE, translate
from smppd.routing import Router, RouteRule
from smppd.senderpolicy import DAY_S, DailyCap, DailyCaps
from smppd.service import (
    ApiError,
    ClientIdentity,
    ErrorCode,
    SubmitReply,
    SubmitRequest,
    finished_token,
    parse_finished_token,
)

T0 = 1_800_000_000.0
SHIPPED = Path(__file__).resolve().parent.parent / "config" / "smppd.yaml"
CLIENT = ClientIdentity(name="app", senders=frozenset({"ALPHA"}), owned=frozenset({"ALPHA"}))
# May send from ALPHA, which is app's: not its to manage.
GUEST = ClientIdentity(name="guest", senders=frozenset({"ALPHA"}))


class Loops:
    """Send loops that note what they are told; `ready` answers ready_for_urgent."""

    def __init__(self, *, ready: bool = False, idle: bool = False) -> None:
        self.ready = ready
        self.idle = idle
        self.wakes: list[tuple[str, float | None]] = []
        self.handed: list[tuple[str, list[ClaimedSegment]]] = []
        self.withdrawn: list[int] = []

    def wake(self, carrier: str, urgent_at: float | None) -> None:
        self.wakes.append((carrier, urgent_at))

    def ready_for_urgent(self, carrier: str) -> bool:
        return self.ready

    def ready_for_arrival(self, carrier: str) -> bool:
        return self.idle

    def hand_over(self, carrier: str, segments: Sequence[ClaimedSegment]) -> None:
        self.handed.append((carrier, list(segments)))

    def withdraw(self, segment_ids: Sequence[int]) -> None:
        self.withdrawn.extend(segment_ids)


def gateway(
    queue: Queue,
    loops: Loops,
    profile: OutboundProfile | None = None,
    *,
    max_depth: int = 1000,
    hub: EventHub | None = None,
    caps: DailyCaps | None = None,
    settings: GatewaySettings | None = None,
) -> Gateway:
    def health() -> dict[str, Any]:
        return {}

    return Gateway(
        queue=queue,
        router=Router([RouteRule(prefix="", carriers=("fake",), failover_after_s=60.0)]),
        profiles={"fake": profile or OutboundProfile()},
        hub=hub or EventHub(),
        settings=settings or GatewaySettings(max_depth=max_depth),
        down_since=lambda carrier: None,
        loops=loops,
        health=health,
        clock=lambda: T0,
        caps=caps,
    )


def request(
    text: str,
    *,
    priority: int = 5,
    schedule_at: float | None = None,
    validity_s: float | None = None,
) -> SubmitRequest:
    return SubmitRequest(
        to="+447700900123",
        sender="ALPHA",
        text=text,
        priority=priority,
        schedule_at=schedule_at,
        validity_s=validity_s,
    )


async def test_a_schedule_that_cannot_work_is_refused_and_nothing_stored() -> None:
    """A schedule_at over a year ahead (milliseconds by mistake) or at or after the message's
    expiry is an invalid_field on schedule_at; the valid neighbours are accepted."""
    queue = MemoryQueue()
    replies = await gateway(queue, Loops()).submit(
        CLIENT,
        [
            request("ms", schedule_at=T0 * 1000),
            request("expired first", schedule_at=T0 + 3600, validity_s=600),
            request("at expiry", schedule_at=T0 + 600, validity_s=600),
            request("in a year", schedule_at=T0 + 365 * 86_400),
            request("before expiry", schedule_at=T0 + 300, validity_s=600),
        ],
    )
    errors = [r for r in replies if isinstance(r, ApiError)]
    assert [(e.code, e.field) for e in errors] == [(ErrorCode.invalid_field, "schedule_at")] * 3
    assert "epoch seconds" in str(errors[0])
    assert "expire" in str(errors[1])
    assert [isinstance(r, SubmitReply) for r in replies[3:]] == [True, True]
    stats = await queue.stats(now=T0)
    assert stats.queued_depth == 2


class RecordingQueue(MemoryQueue):
    """Notes the priorities of each enqueue call."""

    def __init__(self) -> None:
        super().__init__()
        self.enqueues: list[list[int]] = []

    async def enqueue(
        self, messages: Sequence[NewMessage], *, now: float, optouts_seen: int | None = None
    ) -> list[Enqueued]:
        self.enqueues.append([m.priority for m in messages])
        return await super().enqueue(messages, now=now, optouts_seen=optouts_seen)


async def test_the_urgent_messages_of_a_mixed_call_are_stored_by_a_write_of_their_own() -> None:
    """So the store commits them alone, ahead of the rest; replies stay in request order."""
    queue = RecordingQueue()
    texts = ["bulk", "otp 1", "normal", "otp 2"]
    priorities = [0, 9, 5, 7]
    replies = await gateway(queue, Loops()).submit(
        CLIENT, [request(t, priority=p) for t, p in zip(texts, priorities, strict=True)]
    )
    assert queue.enqueues == [[9, 7], [0, 5]]
    assert all(isinstance(r, SubmitReply) for r in replies)
    ids = [r.id for r in replies if isinstance(r, SubmitReply)]
    stored = [await queue.status(message_id, CLIENT.name) for message_id in ids]
    assert [s.priority for s in stored if s is not None] == priorities
    await gateway(queue, Loops()).submit(CLIENT, [request("a"), request("b", priority=0)])
    assert queue.enqueues[2:] == [[5, 0]]


class FullOnce(RecordingQueue):
    """A store whose second enqueue finds the disk full."""

    async def enqueue(
        self, messages: Sequence[NewMessage], *, now: float, optouts_seen: int | None = None
    ) -> list[Enqueued]:
        if len(self.enqueues) == 1:
            self.enqueues.append([])
            raise StorageFullError("queue storage: database or disk is full")
        return await super().enqueue(messages, now=now, optouts_seen=optouts_seen)


async def test_a_big_call_is_stored_by_writes_of_at_most_enqueue_max() -> None:
    """So no transaction of it holds urgent writes and outcomes long; a ref repeated across
    two of its writes is still one message, and a write that fails refuses only its own."""
    queue = RecordingQueue()
    calls = [dataclasses.replace(request(f"m{i}"), ref=f"r{i % 2000}") for i in range(2500)]
    calls.insert(7, request("otp", priority=9))
    replies = await gateway(queue, Loops(), max_depth=10_000).submit(CLIENT, calls)
    # Even writes, each a bulk write to the SQLite store (so applied in order, none ahead).
    assert [len(e) for e in queue.enqueues] == [1, 834, 834, 832]
    assert all(len(e) > BULK_ENQUEUE for e in queue.enqueues[1:])
    ids = [r.id for r in replies if isinstance(r, SubmitReply)]
    assert len(ids) == 2501
    assert ids[2002] == ids[1]  # r1: m1, in the first write, and m2001 (after the otp)
    assert (await queue.stats(now=T0)).queued_depth == 2001

    full = FullOnce()
    replies = await gateway(full, Loops(), max_depth=10_000).submit(
        CLIENT, [request(f"m{i}") for i in range(3000)]
    )
    codes = [r.code if isinstance(r, ApiError) else "ok" for r in replies]
    assert codes == ["ok"] * 1000 + [ErrorCode.storage_full] * 1000 + ["ok"] * 1000
    assert (await full.stats(now=T0)).queued_depth == 2000
    assert max(len(e) for e in full.enqueues) <= ENQUEUE_MAX


async def test_bulk_and_normal_submits_wake_the_main_loop_once_per_batch() -> None:
    loops = Loops(ready=True)
    replies = await gateway(MemoryQueue(), loops).submit(
        CLIENT, [request("a", priority=0), request("b"), request("c", schedule_at=T0 + 60)]
    )
    assert len(replies) == 3
    assert loops.wakes == [("fake", None)]
    assert loops.handed == []


async def test_urgent_submits_ask_for_the_urgent_claimer_when_each_is_due() -> None:
    """Without room for a hand-over, an urgent message due now wakes the urgent claimer now; a
    scheduled one asks for its time, so it is not left to the main loop's bulk batches."""
    loops = Loops(ready=False)
    await gateway(MemoryQueue(), loops).submit(
        CLIENT,
        [
            request("otp", priority=9),
            request("later", priority=9, schedule_at=T0 + 30),
            request("again", priority=9),
            request("past", priority=9, schedule_at=T0 - 5),
            request("bulk", priority=0),
        ],
    )
    # The bulk message is stored by a write of its own (below), which wakes the main loop.
    assert loops.wakes == [("fake", T0), ("fake", T0 + 30), ("fake", None)]


async def test_an_urgent_submit_with_room_is_claimed_on_arrival_and_handed_over() -> None:
    """The store claims it as it stores it; the send loop gets its segments, no wake."""
    queue = MemoryQueue()
    loops = Loops(ready=True)
    [reply] = await gateway(queue, loops).submit(CLIENT, [request("otp 1234", priority=9)])
    assert isinstance(reply, SubmitReply)
    [(carrier, segments)] = loops.handed
    assert carrier == "fake"
    assert [s.message_id for s in segments] == [reply.id]
    assert loops.wakes == []
    status = await queue.status(reply.id, "app")
    assert status is not None
    assert [s.state for s in status.segments] == [SegmentState.INFLIGHT]


async def test_only_a_few_segments_a_call_are_claimed_on_arrival() -> None:
    """A big urgent batch is left to the claimers beyond HAND_OVER_MAX segments."""
    loops = Loops(ready=True)
    count = HAND_OVER_MAX + 3
    await gateway(MemoryQueue(), loops).submit(
        CLIENT, [request(f"otp {i}", priority=9) for i in range(count)]
    )
    assert sum(len(segments) for _, segments in loops.handed) == HAND_OVER_MAX
    assert loops.wakes == [("fake", T0)]


async def test_an_auto_reply_is_urgent() -> None:
    loops = Loops(ready=False)
    await gateway(MemoryQueue(), loops).submit_reply("app", "ALPHA", "+447700900123", "stopped")
    assert loops.wakes == [("fake", T0)]
    handing = Loops(ready=True)
    await gateway(MemoryQueue(), handing).submit_reply("app", "ALPHA", "+447700900123", "stop")
    assert len(handing.handed) == 1


async def test_a_submit_to_an_idle_loop_is_claimed_on_arrival_whatever_its_priority() -> None:
    """When the loop waits for work, bulk and normal messages are handed over too; once one of
    a call's messages is queued (too big for the hand-over), the rest of it queue behind it."""
    queue = MemoryQueue()
    loops = Loops(idle=True)
    fill = [request(f"fill {i}") for i in range(HAND_OVER_MAX - 2)]
    two = "x" * 161  # two segments: more than the one left of this call's hand-over
    replies = await gateway(queue, loops).submit(
        CLIENT, [request("bulk", priority=0), *fill, request(two), request("after")]
    )
    assert all(isinstance(r, SubmitReply) for r in replies)
    assert sum(len(segments) for _, segments in loops.handed) == HAND_OVER_MAX - 1
    assert loops.wakes == [("fake", None)]
    stats = await queue.stats(now=T0)
    assert stats.segments[SegmentState.INFLIGHT] == {0: 1, 5: HAND_OVER_MAX - 2}
    assert stats.segments[SegmentState.QUEUED] == {5: 3}  # the two segments, then "after"


async def test_nothing_is_claimed_on_arrival_for_a_busy_loop_or_a_later_time() -> None:
    """A loop that is not waiting for work, or a message scheduled for later, goes through
    the queue as before."""
    loops = Loops(idle=False)
    await gateway(MemoryQueue(), loops).submit(CLIENT, [request("busy")])
    assert loops.handed == []
    idle = Loops(idle=True)
    await gateway(MemoryQueue(), idle).submit(CLIENT, [request("later", schedule_at=T0 + 60)])
    assert idle.handed == []
    assert idle.wakes == [("fake", None)]


async def test_only_long_messages_take_a_concatenation_reference() -> None:
    """Two long messages to one handset carry consecutive UDH references; a one-segment message
    between them uses none up (it carries no UDH)."""
    queue = MemoryQueue()
    replies = await gateway(queue, Loops()).submit(
        CLIENT, [request("a" * 200), request("short"), request("b" * 200)]
    )
    assert all(isinstance(r, SubmitReply) for r in replies)
    claim = await queue.claim("fake", 10, now=T0)
    pdus = [decode_body(CommandId.submit_sm, 0, 1, s.body) for s in claim.segments]
    texts = [p.short_message for p in pdus if isinstance(p, SubmitSm)]
    assert texts[2] == b"short"
    udhs = [t[:6] for t in texts[:2] + texts[3:]]
    assert [u[:3] for u in udhs] == [bytes([5, 0, 3])] * 4
    (first,) = {udhs[0][3], udhs[1][3]}
    (second,) = {udhs[2][3], udhs[3][3]}
    assert second == (first + 1) & 0xFF


async def test_a_senders_configured_kind_sets_its_ton_and_npi() -> None:
    """The kind was checked and then ignored: an all-digit alphanumeric id and a long number
    of 7 digits went as short codes (TON 3). Now alpha is 5/0, long 1/1, short 3/0; an id
    the config does not list keeps the TON/NPI of its form."""
    config = load_config(SHIPPED)
    senders = (
        cfg.Sender(id="8080", client="app", kind=cfg.SenderKind.ALPHA),
        cfg.Sender(id="1234567", client="app", kind=cfg.SenderKind.LONG),
        cfg.Sender(id="4321", client="app", kind=cfg.SenderKind.SHORT),
    )
    settings = gateway_settings(dataclasses.replace(config, senders=senders))
    queue = MemoryQueue()
    ids = ("8080", "1234567", "4321", "999")
    client = ClientIdentity(name="app", senders=frozenset(ids), owned=frozenset(ids))
    sent = [dataclasses.replace(request("hi"), sender=sender) for sender in ids]
    replies = await gateway(queue, Loops(), settings=settings).submit(client, sent)
    assert all(isinstance(r, SubmitReply) for r in replies)
    claimed = await queue.claim("fake", 9, now=T0)
    pdus = [decode_body(CommandId.submit_sm, 0, 1, s.body) for s in claimed]
    assert [
        (p.source_addr, p.source_addr_ton, p.source_addr_npi)
        for p in pdus
        if isinstance(p, SubmitSm)
    ] == [
        ("8080", 5, 0),
        ("1234567", 1, 1),
        ("4321", 3, 0),
        ("999", 3, 0),
    ]


async def test_a_carrier_without_receipts_is_never_asked_for_them() -> None:
    """`registered_delivery: false` on the carrier overrules the submit's default: the
    submit_sm asks for no receipt and the message does not wait for one once submitted."""
    queue = MemoryQueue()
    profile = OutboundProfile(registered_delivery=False)
    (reply,) = await gateway(queue, Loops(), profile).submit(CLIENT, [request("no receipt")])
    assert isinstance(reply, SubmitReply)
    (segment,) = await queue.claim("fake", 10, now=T0)
    pdu = decode_body(CommandId.submit_sm, 0, 1, segment.body)
    assert isinstance(pdu, SubmitSm)
    assert pdu.registered_delivery == 0
    await queue.record([Submitted(segment.segment_id, ("m1",), "b")], now=T0)
    status = await queue.status(reply.id, None)
    assert status is not None
    assert status.state is MessageState.SUBMITTED
    assert not status.registered_delivery


async def test_a_carrier_that_routes_by_priority_gets_it_as_priority_flag() -> None:
    """With `priority_flag: true` a message's priority (as capped for its client) goes as
    priority_flag by thirds; other carriers get 0 whatever the priority."""
    capped = dataclasses.replace(CLIENT, max_priority=5)
    for profile, client, flags in (
        (OutboundProfile(priority_flag=True), CLIENT, [0, 1, 2, 3]),
        (OutboundProfile(priority_flag=True), capped, [0, 1, 1, 1]),
        (OutboundProfile(), CLIENT, [0, 0, 0, 0]),
    ):
        queue = MemoryQueue()
        requests = [request(f"p{p}", priority=p) for p in (0, 5, 8, 9)]
        await gateway(queue, Loops(), profile).submit(client, requests)
        claimed = await queue.claim("fake", 10, now=T0)
        pdus = [decode_body(CommandId.submit_sm, 0, 1, s.body) for s in claimed]
        sent = {p.short_message: p.priority_flag for p in pdus if isinstance(p, SubmitSm)}
        assert [sent[b"p%d" % p] for p in (0, 5, 8, 9)] == flags


async def test_a_carrier_with_receipts_asks_for_them_unless_the_submit_does_not() -> None:
    queue = MemoryQueue()
    wants, declines = request("wants"), request("declines")
    declines = dataclasses.replace(declines, registered_delivery=False)
    replies = await gateway(queue, Loops()).submit(CLIENT, [wants, declines])
    assert all(isinstance(r, SubmitReply) for r in replies)
    claim = await queue.claim("fake", 10, now=T0)
    flags = [decode_body(CommandId.submit_sm, 0, 1, s.body) for s in claim.segments]
    assert [p.registered_delivery for p in flags if isinstance(p, SubmitSm)] == [1, 0]


async def test_cancels_and_opt_outs_tell_the_send_loops_what_they_cancelled() -> None:
    """A claimed segment the store cancels may be waiting in a send loop: the loops are told
    its id, by a cancel and by an opt-out, and not the ids of segments already submitted."""
    queue = MemoryQueue()
    loops = Loops()
    gw = gateway(queue, loops)
    replies = await gw.submit(CLIENT, [request("one"), request("two"), request("three")])
    one, two, three = (r.id for r in replies if isinstance(r, SubmitReply))
    claimed = await queue.claim("fake", 3, now=T0)
    await queue.record([Submitted(claimed[0].segment_id, ("s:1",), "b")], now=T0)
    assert (await gw.cancel(CLIENT, one))[
        "cancelled"
    ] == 0  # submitted already: nothing to withdraw
    assert (await gw.cancel(CLIENT, two))["cancelled"] == 1
    assert (await gw.cancel(CLIENT, two))["cancelled"] == 0  # cancelled before: not again
    assert loops.withdrawn == [segment_id(two, 0)]
    await gw.optout(CLIENT, "add", "ALPHA", "+447700900123")
    assert loops.withdrawn == [segment_id(two, 0), segment_id(three, 0)]


async def test_cancels_and_opt_outs_publish_the_state_events_of_what_they_cancelled() -> None:
    """A client's `state` subscribers hear of a cancel over the API and of the messages an
    opt-out cancelled, as of any other change, and nothing of a cancel that changed nothing."""
    queue = MemoryQueue()
    hub = EventHub()
    gw = gateway(queue, Loops(), hub=hub)
    replies = await gw.submit(CLIENT, [request("one"), request("two")])
    one, two = (r.id for r in replies if isinstance(r, SubmitReply))
    sub = hub.subscribe(CLIENT.name, frozenset({"state"}))
    await gw.cancel(CLIENT, one)
    await gw.cancel(CLIENT, one)  # cancelled before: no event
    await gw.optout(CLIENT, "add", "ALPHA", "+447700900123")
    sub.close()
    events = [(e.kind, e.data["id"], e.data["state"], e.data["segment_state"]) async for e in sub]
    assert events == [
        ("state", one, "cancelled", "cancelled"),
        ("state", two, "cancelled", "cancelled"),
    ]


async def test_a_long_sender_written_without_its_plus_is_the_configured_one() -> None:
    """Long-number senders are configured as "+digits" (the form STOPs to them arrive in): a
    client submitting from the bare digits sends from that sender, is refused where a STOP
    to it was recorded, and manages its opt-outs under either form."""
    plus, bare = "+447700900999", "447700900999"
    owner = ClientIdentity(name="app", senders=frozenset({plus}), owned=frozenset({plus}))
    queue = MemoryQueue()
    gw = gateway(queue, Loops())
    asked = dataclasses.replace(request("hi"), sender=bare)
    (reply,) = await gw.submit(owner, [asked])
    assert isinstance(reply, SubmitReply)
    (claimed,) = await queue.claim("fake", 10, now=T0)
    assert claimed.source == plus
    await queue.add_optout(plus, "+447700900123", now=T0)  # as an MO STOP records it
    (refused,) = await gw.submit(owner, [asked])
    assert isinstance(refused, ApiError)
    assert refused.code is ErrorCode.opted_out
    listed = await gw.optout(owner, "list", bare, None)
    assert [(o["sender"], o["number"]) for o in listed["optouts"]] == [(plus, "+447700900123")]
    assert await gw.optout(owner, "remove", bare, "+447700900123") == {"changed": True}


async def test_only_the_owner_of_a_sender_manages_its_opt_outs() -> None:
    """A client allowed to send from another client's id cannot list who opted out of it,
    undo a STOP, or add an opt-out (which would cancel the owner's queued messages)."""
    queue = MemoryQueue()
    gw = gateway(queue, Loops())
    (reply,) = await gw.submit(CLIENT, [request("queued for later", schedule_at=T0 + 600)])
    assert isinstance(reply, SubmitReply)
    await gw.optout(CLIENT, "add", "ALPHA", "+447700900999")
    for action, number in (("list", None), ("remove", "+447700900999"), ("add", "+447700900123")):
        with pytest.raises(ApiError) as refused:
            await gw.optout(GUEST, action, "ALPHA", number)
        assert refused.value.code is ErrorCode.sender_not_allowed
    assert (await gw.optout(GUEST, "list", "", None)) == {"optouts": []}
    listed = await gw.optout(CLIENT, "list", "ALPHA", None)
    assert [o["number"] for o in listed["optouts"]] == ["+447700900999"]
    status = await queue.status(reply.id, None)
    assert status is not None
    assert status.state is MessageState.QUEUED


async def test_inbound_gives_the_client_its_own_messages_after_an_id_as_events_say_them() -> None:
    """A page of the client's stored inbound, oldest first, each as its `inbound` event said
    it; another client's and unowned messages stay out."""
    queue = MemoryQueue()
    mine = [
        InboundIn("fake", "+447700900001", "ALPHA", "STOP", 0, T0, "app", keyword="stop"),
        InboundIn("fake", "+447700900002", "ALPHA", "part of", 8, T0 + 1, "app", complete=False),
    ]
    ids = [await queue.store_inbound(mine[0])]
    await queue.store_inbound(InboundIn("fake", "+447700900003", "BETA", "x", 0, T0, "guest"))
    await queue.store_inbound(InboundIn("fake", "+447700900004", "NONE", "y", 0, T0, None))
    ids.append(await queue.store_inbound(mine[1]))
    gw = gateway(queue, Loops())
    page = await gw.inbound(CLIENT, 0, 100)
    assert page == {"messages": [inbound_event(i, m).data for i, m in zip(ids, mine, strict=True)]}
    assert page["messages"][1] == {
        "id": ids[1],
        "from": "+447700900002",
        "to": "ALPHA",
        "text": "part of",
        "carrier": "fake",
        "received_at": T0 + 1,
        "keyword": None,
        "complete": False,
    }
    assert [m["id"] for m in (await gw.inbound(CLIENT, ids[0], 100))["messages"]] == [ids[1]]
    assert [m["id"] for m in (await gw.inbound(CLIENT, 0, 1))["messages"]] == [ids[0]]
    assert [m["text"] for m in (await gw.inbound(GUEST, 0, 100))["messages"]] == ["x"]


async def test_a_client_past_its_max_queued_is_refused_and_no_other_is() -> None:
    """app may hold 3 segments not yet sent: a call that would pass that is refused whole with
    client_queue_full while guest's submits still go in; queue.max_depth refuses everyone
    with queue_full; once app's segments are sent, it may submit again."""
    queue = MemoryQueue()
    gw = gateway(queue, Loops(), max_depth=6)
    app = dataclasses.replace(CLIENT, max_queued=3)

    def codes(replies: Sequence[SubmitReply | ApiError]) -> list[str]:
        return [str(r.code) if isinstance(r, ApiError) else "ok" for r in replies]

    assert codes(await gw.submit(app, [request("a"), request("b")])) == ["ok", "ok"]
    refused = await gw.submit(app, [request("c"), request("d")])
    assert codes(refused) == ["client_queue_full"] * 2
    assert isinstance(refused[0], ApiError)
    assert "has 2 segments not yet sent and may have 3 (max_queued)" in refused[0].message
    assert codes(await gw.submit(GUEST, [request(f"g{i}") for i in range(4)])) == ["ok"] * 4
    assert codes(await gw.submit(GUEST, [request("over")])) == ["queue_full"]
    claim = await queue.claim("fake", 10, now=T0)
    sent = [s for s in claim if s.client == "app"]
    await queue.record([Submitted(s.segment_id, (str(s.segment_id),), "b") for s in sent], now=T0)
    assert codes(await gw.submit(app, [request("c")])) == ["ok"]
    assert queue.client_depth("app") == 1
    stats = await gw.stats(app)
    assert (stats["client_queued"], stats["client_max_queued"]) == (1, 3)
    stats = await gw.stats(GUEST)
    assert (stats["client_queued"], stats["client_max_queued"]) == (4, None)


async def test_a_client_s_smart_encoding_applies_to_its_submits_that_do_not_say() -> None:
    """A client configured with smart_encoding has a curly apostrophe sent as GSM unless a
    submit says smart_encoding false; one without it has that only when a submit asks."""
    queue = MemoryQueue()
    gw = gateway(queue, Loops())
    smart = dataclasses.replace(CLIENT, smart_encoding=True)
    text = "it\u2019s"
    for client, asked in [(smart, None), (smart, False), (CLIENT, None), (CLIENT, True)]:
        [reply] = await gw.submit(
            client, [SubmitRequest("+447700900001", "ALPHA", text, smart_encoding=asked)]
        )
        assert isinstance(reply, SubmitReply)
    claim = await queue.claim("fake", 10, now=T0)
    pdus = [decode_body(CommandId.submit_sm, 0, 1, s.body) for s in claim.segments]
    codings = [p.data_coding for p in pdus if isinstance(p, SubmitSm)]
    assert codings == [0, 8, 8, 0]


async def test_finished_reads_back_the_client_s_ended_messages_with_a_cursor() -> None:
    """Two of app's messages cancelled and one of guest's: app reads its two, oldest first,
    with a `next` past every message it looked at (guest's too); from there nothing is left."""
    queue = MemoryQueue()
    gw = gateway(queue, Loops())
    mine = await gw.submit(CLIENT, [dataclasses.replace(request("a"), ref="r-a"), request("b")])
    theirs = await gw.submit(GUEST, [request("g")])
    for client, reply in [(CLIENT, mine[0]), (GUEST, theirs[0]), (CLIENT, mine[1])]:
        assert isinstance(reply, SubmitReply)
        await gw.cancel(client, reply.id)
    page = await gw.finished(CLIENT, None, 100)
    ids = [r.id for r in mine if isinstance(r, SubmitReply)]
    assert [(m["message_id"], m["ref"], m["state"]) for m in page["messages"]] == [
        (ids[0], "r-a", "cancelled"),
        (ids[1], None, "cancelled"),
    ]
    assert page["more"] is False
    assert isinstance(theirs[0], SubmitReply)
    last = (page["messages"][1]["finished_at"], ids[1])  # guest's finished before it
    assert page["next"] == finished_token(last)
    after = await gw.finished(CLIENT, parse_finished_token(page["next"]), 100)
    assert after == {"messages": [], "next": page["next"], "more": False}
    assert await gw.finished(dataclasses.replace(CLIENT, name="new"), None, 10) == {
        "messages": [],
        "next": page["next"],  # past the messages looked at, none of them its own
        "more": False,
    }


async def test_a_client_s_validity_applies_from_when_its_messages_are_due() -> None:
    """A client with validity_s 600: a message that gives none expires 600 s after the
    submit, a scheduled one 600 s after its schedule (not refused for outliving it), and one
    that gives its own keeps it, counted from the submit."""
    queue = MemoryQueue()
    gw = gateway(queue, Loops())
    otp = dataclasses.replace(CLIENT, validity_s=600.0)
    replies = await gw.submit(
        otp,
        [
            request("now"),
            request("later", schedule_at=T0 + 3600),
            request("own", validity_s=60),
        ],
    )
    ids = [r.id for r in replies if isinstance(r, SubmitReply)]
    expiries = [(await queue.status(i, None)) for i in ids]
    assert [s.expires_at if s else None for s in expiries] == [T0 + 600, T0 + 4200, T0 + 60]
    [plain] = await gw.submit(CLIENT, [request("no limit")])
    assert isinstance(plain, SubmitReply)
    status = await queue.status(plain.id, None)
    assert status is not None
    assert status.expires_at is None


async def test_a_ref_already_stored_is_that_message_again_even_past_a_cap_or_the_depth() -> None:
    """A client resubmitting after a lost reply gets the stored message (created false), not
    over_daily_cap or queue_full for what will be sent anyway; a new ref is still refused."""
    queue = MemoryQueue()
    gw = gateway(queue, Loops(), max_depth=1, caps=DailyCaps({"ALPHA": DailyCap(1, hold=False)}))
    [first] = await gw.submit(CLIENT, [dataclasses.replace(request("hi"), ref="order-1")])
    assert isinstance(first, SubmitReply)
    assert first.created
    [again] = await gw.submit(CLIENT, [dataclasses.replace(request("hi"), ref="order-1")])
    assert again == SubmitReply(first.id, 1, created=False)
    [other] = await gw.submit(CLIENT, [dataclasses.replace(request("hi"), ref="order-2")])
    assert isinstance(other, ApiError)
    assert other.code in (ErrorCode.over_daily_cap, ErrorCode.queue_full)
    assert queue.queued_depth() == 1


async def test_under_client_scope_an_opt_out_covers_every_sender_the_client_sends_from() -> None:
    """A STOP is stored under the senders its client owned then: a sender added later by a
    reload, or one the client may use but does not own, sent to the number again. Under
    scope client the client's own senders are checked too; under scope sender only the one."""
    queue = MemoryQueue()
    await queue.add_optout("ALPHA", "+447700900123", now=T0)
    client = ClientIdentity(
        name="app",
        senders=frozenset({"ALPHA", "NEWID", "BETA"}),
        owned=frozenset({"ALPHA", "NEWID"}),
    )
    sent = [dataclasses.replace(request("hi"), sender=s) for s in ("NEWID", "BETA", "ALPHA")]
    per_client = GatewaySettings(max_depth=1000, optout_per_client=True)
    replies = await gateway(queue, Loops(), settings=per_client).submit(client, sent)
    assert [getattr(r, "code", None) for r in replies] == [ErrorCode.opted_out] * 3
    replies = await gateway(queue, Loops()).submit(client, sent)
    assert [getattr(r, "code", None) for r in replies] == [None, None, ErrorCode.opted_out]


async def test_a_ref_stored_before_its_recipient_opted_out_is_that_message_again() -> None:
    """The recipient texts STOP after a message was stored (and perhaps sent): its ref
    resubmitted is that message (created false), not opted_out, which would tell the client
    that what it sent was refused; a new ref to that number is refused."""
    queue = MemoryQueue()
    gw = gateway(queue, Loops())
    [first] = await gw.submit(CLIENT, [dataclasses.replace(request("hi"), ref="order-1")])
    assert isinstance(first, SubmitReply)
    await queue.add_optout("ALPHA", "+447700900123", now=T0)
    [again] = await gw.submit(CLIENT, [dataclasses.replace(request("hi"), ref="order-1")])
    assert again == SubmitReply(first.id, 1, created=False)
    [other] = await gw.submit(CLIENT, [dataclasses.replace(request("hi"), ref="order-2")])
    assert isinstance(other, ApiError)
    assert other.code is ErrorCode.opted_out
    # A ref given twice in one call, first to the opted-out number: that one is refused, not
    # answered with the message the call itself stored under the ref.
    to_other = dataclasses.replace(request("hi"), ref="order-3", to="+447700900124")
    refused, stored = await gw.submit(
        CLIENT, [dataclasses.replace(request("hi"), ref="order-3"), to_other], whole=False
    )
    assert isinstance(refused, ApiError)
    assert refused.code is ErrorCode.opted_out
    assert isinstance(stored, SubmitReply)
    assert stored.created


async def test_a_ref_repeated_in_a_call_at_a_higher_priority_is_its_first_message() -> None:
    """The urgent messages of a call are written ahead of the rest; a ref first given to a
    bulk message and then again as urgent (a resubmit with a raised priority, pipelined) is
    the first message, created by its first place, not the urgent one written ahead of it."""
    queue = MemoryQueue()
    gw = gateway(queue, Loops())
    bulk = dataclasses.replace(request("first text"), ref="order-1")
    urgent = dataclasses.replace(request("second text"), ref="order-1", priority=9)
    other = dataclasses.replace(request("otp"), ref="otp-1", priority=9)
    first, again, otp = await gw.submit(CLIENT, [bulk, urgent, other], whole=False)
    assert isinstance(first, SubmitReply)
    assert isinstance(otp, SubmitReply)
    assert first.created
    assert again == SubmitReply(first.id, 1, created=False)
    status = await queue.status(first.id, None)
    assert status is not None
    assert status.priority < 9
    assert otp.id < first.id  # the call's urgent message still goes ahead


async def test_a_message_held_past_its_cap_is_refused_if_it_would_expire_first() -> None:
    """With over_cap hold, a message past today's cap waits for tomorrow: one whose own
    validity ends before then is refused (and counts nothing), and a client's default
    validity is counted from the day it is held for."""
    queue = MemoryQueue()
    caps = DailyCaps({"ALPHA": DailyCap(1, hold=True)})
    gw = gateway(queue, Loops(), caps=caps)
    [today] = await gw.submit(CLIENT, [request("today")])
    assert isinstance(today, SubmitReply)
    [short] = await gw.submit(CLIENT, [request("short", validity_s=300)])
    assert isinstance(short, ApiError)
    assert short.code is ErrorCode.over_daily_cap
    tomorrow = (T0 // DAY_S + 1) * DAY_S
    assert caps.count("ALPHA", int(tomorrow // DAY_S)) == 0
    otp = dataclasses.replace(CLIENT, validity_s=600.0)
    [held] = await gw.submit(otp, [request("held")])
    assert isinstance(held, SubmitReply)
    status = await queue.status(held.id, None)
    assert status is not None
    assert (status.not_before, status.expires_at) == (tomorrow, tomorrow + 600)


class OptOutsFail(MemoryQueue):
    """A store whose opt-out lookups fail for one number."""

    async def is_opted_out(self, sender: str, number: str) -> bool:
        if number == "+447700900999":
            raise StorageBusyError("database is locked")
        return await super().is_opted_out(sender, number)


async def test_a_store_error_while_checking_gives_that_submit_a_storage_error_and_no_cap() -> None:
    """The opt-out lookup failing for one message of a call: that one gets a storage error,
    the others are stored, and the cap counts only what was stored."""
    queue = OptOutsFail()
    caps = DailyCaps({"ALPHA": DailyCap(2, hold=False)})
    gw = gateway(queue, Loops(), caps=caps)
    failing = dataclasses.replace(request("b"), to="+447700900999")
    replies = await gw.submit(CLIENT, [request("a"), failing, request("c")])
    assert [type(r) for r in replies] == [SubmitReply, ApiError, SubmitReply]
    assert isinstance(replies[1], ApiError)
    assert replies[1].code is ErrorCode.storage_error
    assert caps.count("ALPHA", int(T0 // DAY_S)) == 2


async def test_optout_list_reads_each_own_sender_and_pages_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another client's sender sorting first and holding many opt-outs hides none of ours,
    and a list longer than a page says where the next one starts."""
    monkeypatch.setattr(gateway_module, "OPTOUT_PAGE", 3)
    queue = MemoryQueue()
    for i in range(5):
        await queue.add_optout("AAA", f"+4477009000{i:02}", now=T0)  # not app's
    for i in range(4):
        await queue.add_optout("ALPHA", f"+4477009001{i:02}", now=T0)
    owner = dataclasses.replace(CLIENT, owned=frozenset({"ALPHA", "BETA"}))
    await queue.add_optout("BETA", "+447700900200", now=T0)
    gw = gateway(queue, Loops())
    first = await gw.optout(owner, "list", "", None)
    assert [(r["sender"], r["number"][-3:]) for r in first["optouts"]] == [
        ("ALPHA", "100"),
        ("ALPHA", "101"),
        ("ALPHA", "102"),
    ]
    assert first["next"] == {"sender": "ALPHA", "number": "+447700900102"}
    after = (first["next"]["sender"], first["next"]["number"])
    second = await gw.optout(owner, "list", "", None, after)
    assert [(r["sender"], r["number"][-3:]) for r in second["optouts"]] == [
        ("ALPHA", "103"),
        ("BETA", "200"),
    ]
    assert "next" not in second


class FullDisk(MemoryQueue):
    """A store whose disk is full for cancels and opt-outs."""

    async def cancel(self, message_id: int, client: str | None, *, now: float) -> Any:
        raise StorageFullError("queue storage: database or disk is full")

    async def add_optout(self, sender: str, number: str, *, now: float) -> bool:
        raise StorageFullError("queue storage: database or disk is full")

    async def remove_optout(self, sender: str, number: str) -> bool:
        raise StorageBusyError("database is locked")


async def test_a_store_that_cannot_take_a_cancel_or_an_opt_out_says_which_error() -> None:
    """storage_full for a full disk (as a submit gets), not `internal` as for a bug."""
    gw = gateway(FullDisk(), Loops())
    with pytest.raises(ApiError) as cancel:
        await gw.cancel(CLIENT, 1)
    assert cancel.value.code is ErrorCode.storage_full
    with pytest.raises(ApiError) as add:
        await gw.optout(CLIENT, "add", "ALPHA", "+447700900123")
    assert add.value.code is ErrorCode.storage_full
    with pytest.raises(ApiError) as remove:
        await gw.optout(CLIENT, "remove", "ALPHA", "+447700900123")
    assert remove.value.code is ErrorCode.storage_error
    assert remove.value.message == "storage error (storage_busy); try again"


def _disk_io_error() -> Exception:
    """What the SQLite backend raises for a failing disk: sqlite3's own error, translated."""
    error = sqlite3.OperationalError("disk I/O error")
    error.sqlite_errorcode = sqlite3.SQLITE_IOERR_READ
    return translate(error)


class ReadsFail(MemoryQueue):
    """A store whose disk fails every read."""

    async def status(self, message_id: int, client: str | None) -> Any:
        raise _disk_io_error()

    async def message_id_of(self, client: str, ref: str) -> Any:
        raise _disk_io_error()

    async def inbound_since(self, *args: Any, **kwargs: Any) -> Any:
        raise _disk_io_error()

    async def finished_since(self, *args: Any, **kwargs: Any) -> Any:
        raise _disk_io_error()

    async def stats(self, *, now: float) -> Any:
        raise _disk_io_error()

    async def list_optouts(self, *args: Any, **kwargs: Any) -> Any:
        raise _disk_io_error()


async def test_a_store_failing_reads_answers_storage_error_naming_the_failure() -> None:
    """Every read the API makes gets storage_error saying what failed, as a submit does, not
    `internal` (which tells the operator of a bug)."""
    gw = gateway(ReadsFail(), Loops())
    reads: list[Callable[[], Awaitable[object]]] = [
        lambda: gw.status(CLIENT, 1),
        lambda: gw.message_id_of(CLIENT, "r"),
        lambda: gw.inbound(CLIENT, 0, 10),
        lambda: gw.finished(CLIENT, None, 10),
        lambda: gw.stats(CLIENT),
        lambda: gw.optout(CLIENT, "list", "ALPHA", None),
    ]
    for read in reads:
        with pytest.raises(ApiError) as failed:
            await read()
        assert failed.value.code is ErrorCode.storage_error
        assert failed.value.message == "storage error (storage_error: disk I/O error); try again"


class Closed(MemoryQueue):
    async def cancel(self, message_id: int, client: str | None, *, now: float) -> Any:
        raise QueueClosedError("the queue is closed")


async def test_a_store_closed_by_a_stopping_daemon_is_shutting_down_for_the_client() -> None:
    """What a request meets in the moment between the store closing and the API: the code
    that tells a client to retry against the restarted daemon, not a storage failure."""
    with pytest.raises(ApiError) as cancel:
        await gateway(Closed(), Loops()).cancel(CLIENT, 1)
    assert cancel.value.code is ErrorCode.shutting_down


async def test_a_failing_store_is_logged_once_per_kind_and_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every request fails alike while the store does (a client retrying a full disk): one
    line per op and error kind in 10 s, the next saying how many it stands for."""
    monkeypatch.setattr(gateway_module, "_STORAGE_LOG", LogSample())
    clock = [100.0]
    monkeypatch.setattr(gateway_module, "_log_clock", lambda: clock[0])
    gw = gateway(FullDisk(), Loops())
    with structlog.testing.capture_logs() as logs:
        for _ in range(50):
            with pytest.raises(ApiError):
                await gw.cancel(CLIENT, 1)
            with pytest.raises(ApiError):
                await gw.optout(CLIENT, "remove", "ALPHA", "+447700900123")
        clock[0] += 10.0
        with pytest.raises(ApiError):
            await gw.cancel(CLIENT, 1)
    lines = [(e["event"], e["op"], e.get("same_since_last_line")) for e in logs]
    assert lines == [
        ("storage full: refused until space is freed", "cancel", None),
        ("queue error", "optout", None),
        ("storage full: refused until space is freed", "cancel", 49),
    ]


async def test_independent_submits_that_pass_a_depth_are_refused_one_by_one() -> None:
    """Single submits read together (not a submit_many): those that fit the queue's depth
    go in, in order, and only the rest get queue_full; a submit_many is refused whole."""
    queue = MemoryQueue()
    gw = gateway(queue, Loops(), max_depth=3)

    def codes(replies: Sequence[SubmitReply | ApiError]) -> list[str]:
        return [str(r.code) if isinstance(r, ApiError) else "ok" for r in replies]

    many = [request(f"m{i}") for i in range(4)]
    assert codes(await gw.submit(CLIENT, many)) == ["queue_full"] * 4
    singles = [request(f"s{i}") for i in range(5)]
    assert codes(await gw.submit(CLIENT, singles, whole=False)) == ["ok"] * 3 + ["queue_full"] * 2
    assert queue.queued_depth() == 3


async def test_refs_of_refused_submits_are_looked_up_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past REF_LOOKUPS_MAX in one call, a refused submit's refusal stands (a flood refused
    for a full queue costs no store read per message); the ones looked up are found."""
    monkeypatch.setattr(gateway_module, "REF_LOOKUPS_MAX", 1)
    queue = MemoryQueue()
    gw = gateway(queue, Loops(), max_depth=2)
    stored = [dataclasses.replace(request(f"m{i}"), ref=f"r{i}") for i in range(2)]
    assert all(isinstance(r, SubmitReply) for r in await gw.submit(CLIENT, stored))
    again = await gw.submit(CLIENT, [*stored, request("new")])
    assert [type(r) for r in again] == [SubmitReply, ApiError, ApiError]


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
async def test_a_stop_recorded_between_a_submits_check_and_its_write_refuses_it(
    backend: str, tmp_path: Path
) -> None:
    """The recipient texts STOP while a submit is between its opt-out check and its write:
    the STOP's cancel of what was queued to it finds nothing yet, so the write itself must
    refuse the message (opted_out, nothing stored, its daily cap given back); the other
    recipient of the call is stored, and an automatic reply still goes."""
    queue = await open_queue(backend, tmp_path / "queue.db")
    caps = DailyCaps({"ALPHA": DailyCap(10, hold=False)})
    real_enqueue = queue.enqueue
    stops = ["+447700900123"]

    async def stop_first(
        messages: Sequence[NewMessage], *, now: float, optouts_seen: int | None = None
    ) -> list[Enqueued]:
        for number in stops:
            assert await queue.add_optout("ALPHA", number, now=now)
            assert await queue.cancel_queued_to("ALPHA", number, now=now) == []
        stops.clear()
        return await real_enqueue(messages, now=now, optouts_seen=optouts_seen)

    queue.enqueue = stop_first  # type: ignore[method-assign]
    try:
        gw = gateway(queue, Loops(), caps=caps)
        other = dataclasses.replace(request("promo"), to="+447700900124")
        replies = await gw.submit(CLIENT, [request("promo"), other])
        assert isinstance(replies[0], ApiError)
        assert (replies[0].code, replies[0].field) == (ErrorCode.opted_out, "to")
        assert isinstance(replies[1], SubmitReply)
        assert (await queue.stats(now=T0)).queued_depth == 1
        assert caps.count("ALPHA", int(T0 // DAY_S)) == 1
        again = await gw.submit(CLIENT, [request("promo")])  # checked as usual now
        assert isinstance(again[0], ApiError)
        assert again[0].code is ErrorCode.opted_out
        reply_id = await gw.submit_reply("app", "ALPHA", "+447700900123", "You are opted out")
        status = await queue.status(reply_id, None)
        assert status is not None
        assert status.state is MessageState.QUEUED
    finally:
        await queue.close()


class GatedQueue(MemoryQueue):
    """A store whose writes after the first `free` wait for `gate` (a busy writer): calls
    overlap between their checks and their commits. `stored` is set once a write is stored."""

    def __init__(self, free: int = 0) -> None:
        super().__init__()
        self.free = free
        self.gate = asyncio.Event()
        self.stored = asyncio.Event()
        self.writes = 0
        self.entered = asyncio.Event()

    async def enqueue(
        self, messages: Sequence[NewMessage], *, now: float, optouts_seen: int | None = None
    ) -> list[Enqueued]:
        self.writes += 1
        self.entered.set()
        if self.writes > self.free:
            await self.gate.wait()
        done = await super().enqueue(messages, now=now, optouts_seen=optouts_seen)
        self.stored.set()
        return done

    async def wait_for_writes(self, count: int) -> None:
        """Until `count` writes have begun (those past `free` waiting at the gate)."""
        while self.writes < count:
            self.entered.clear()
            await asyncio.wait_for(self.entered.wait(), 5)


async def test_concurrent_calls_do_not_pass_the_depths_together() -> None:
    """Four calls of 400 against a depth of 1,000, and independent submits against a client's
    max_queued, all in flight at once: the depths count what other calls have past the checks
    and not yet stored, so the third and fourth are refused (each had passed against the same
    empty queue), and a refused or stored call gives its share back."""
    queue = GatedQueue()
    gw = gateway(queue, Loops(), max_depth=1000)
    calls = [
        asyncio.ensure_future(gw.submit(CLIENT, [request(f"{c}.{i}") for i in range(400)]))
        for c in range(4)
    ]
    await queue.wait_for_writes(2)  # the first two wait in their writes
    queue.gate.set()
    replies = await asyncio.wait_for(asyncio.gather(*calls), 5)
    codes = [{r.code if isinstance(r, ApiError) else "ok" for r in reply} for reply in replies]
    assert codes == [{"ok"}, {"ok"}, {ErrorCode.queue_full}, {ErrorCode.queue_full}]
    assert (await queue.stats(now=T0)).queued_depth == 800
    assert gw._admitting == 0

    capped = dataclasses.replace(CLIENT, max_queued=803)
    queue.gate.clear()
    singles = [
        asyncio.ensure_future(gw.submit(capped, [request(f"s{i}")], whole=False)) for i in range(5)
    ]
    await queue.wait_for_writes(2 + 3)
    queue.gate.set()
    replies = await asyncio.wait_for(asyncio.gather(*singles), 5)
    singles_codes = [r.code if isinstance(r, ApiError) else "ok" for (r,) in replies]
    assert singles_codes == ["ok"] * 3 + [ErrorCode.client_queue_full] * 2
    assert queue.client_depth("app") == 803


async def test_a_sender_id_no_network_carries_is_an_invalid_address_not_a_permission() -> None:
    """A malformed `from` (12 letters) says what is wrong with it, not that the client may
    not send from it; a well-formed id the client does not hold is sender_not_allowed."""
    gw = gateway(MemoryQueue(), Loops())
    bad, other = (
        dataclasses.replace(request("x"), sender=sender) for sender in ("WAYTOOLONGID", "OTHER")
    )
    replies = await gw.submit(CLIENT, [bad, other], whole=False)
    assert [(r.code, r.field) for r in replies if isinstance(r, ApiError)] == [
        (ErrorCode.invalid_address, "from"),
        (ErrorCode.sender_not_allowed, "from"),
    ]


async def test_a_write_stored_is_no_longer_counted_as_admitted_too() -> None:
    """A call of two writes whose first is stored while its second waits: the stored half is in
    the store's depth, so it no longer counts as admitted (it counted twice, and a call that
    fits was refused queue_full)."""
    queue = GatedQueue(free=1)
    gw = gateway(queue, Loops(), max_depth=1600)
    big = asyncio.ensure_future(gw.submit(CLIENT, [request(f"a{i}") for i in range(1030)]))
    await asyncio.wait_for(queue.stored.wait(), 5)
    assert queue.queued_depth() == 515
    small = asyncio.ensure_future(gw.submit(CLIENT, [request(f"b{i}") for i in range(500)]))
    # Checked: refused at once, or past the checks and waiting in its write.
    third = asyncio.ensure_future(queue.wait_for_writes(3))
    await asyncio.wait({small, third}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    third.cancel()
    queue.gate.set()
    assert all(isinstance(r, SubmitReply) for r in await asyncio.wait_for(small, 5))
    assert all(isinstance(r, SubmitReply) for r in await asyncio.wait_for(big, 5))
    assert queue.queued_depth() == 1530
