"""Event fan-out: only the owning client hears its events, and a lagging subscriber is dropped."""

from __future__ import annotations

import asyncio

from smppd.events import EventHub, publish_changes
from smppd.queue.model import Change
from smppd.queue.states import MessageState, SegmentState
from smppd.service import Event


async def collect(sub: object, n: int) -> list[Event]:
    out: list[Event] = []
    async with asyncio.timeout(2):
        async for event in sub:  # type: ignore[attr-defined]
            out.append(event)
            if len(out) == n:
                break
    return out


async def test_events_reach_only_their_client() -> None:
    """A reply for client A is never seen by client B."""
    hub = EventHub()
    a = hub.subscribe("a", frozenset({"inbound", "receipt"}))
    b = hub.subscribe("b", frozenset({"inbound", "receipt"}))
    hub.publish(Event("inbound", "a", {"text": "hi"}))
    hub.publish(Event("receipt", "b", {"id": 1}))
    hub.publish(Event("inbound", None, {"text": "orphan"}))
    assert [e.data for e in await collect(a, 1)] == [{"text": "hi"}]
    assert [e.data for e in await collect(b, 1)] == [{"id": 1}]
    assert a.queue.empty()
    assert b.queue.empty()


async def test_kinds_filter() -> None:
    """A subscriber to receipts does not hear state changes."""
    hub = EventHub()
    sub = hub.subscribe("a", frozenset({"receipt"}))
    hub.publish(Event("state", "a", {"state": "submitted"}))
    hub.publish(Event("receipt", "a", {"stat": "DELIVRD"}))
    assert [e.kind for e in await collect(sub, 1)] == ["receipt"]


async def test_published_counts_what_each_subscriber_takes() -> None:
    """The published figure is events queued: one per subscriber taking it, none for a kind
    nobody subscribed to."""
    hub = EventHub()
    hub.subscribe("a", frozenset({"receipt"}))
    hub.subscribe("a", frozenset({"receipt", "state"}))
    hub.publish(Event("receipt", "a", {"stat": "DELIVRD"}))
    assert hub.published == 2
    hub.publish(Event("state", "a", {"state": "delivered"}))
    assert hub.published == 3
    hub.publish(Event("inbound", "a", {"text": "hi"}))
    assert hub.published == 3


async def test_lagging_subscriber_is_told_and_dropped() -> None:
    """Past its queue bound a subscriber gets a last `dropped` event and hears nothing more.
    The notice is not queued behind the backlog it could not read (10,000 stale events, hours
    for a slow reader, which then believed itself live): it is all there is."""
    hub = EventHub(queue_size=3)
    sub = hub.subscribe("a", frozenset({"receipt"}))
    for i in range(10):
        hub.publish(Event("receipt", "a", {"n": i}))
    events = [e async for e in sub]
    assert [e.kind for e in events] == ["dropped"]
    assert hub.subscriber_count() == 0
    assert hub.dropped_subscribers == 1
    assert sub.queue.qsize() == 0


async def test_close_ends_iteration() -> None:
    """Closing a subscription ends its iterator."""
    hub = EventHub()
    sub = hub.subscribe("a", frozenset({"receipt"}))
    sub.close()
    assert [e async for e in sub] == []
    assert hub.subscriber_count() == 0


def test_changes_are_published_only_for_clients_with_a_subscriber() -> None:
    """publish_changes builds events only for a client someone listens to, and stops once the
    last subscription closes."""
    hub = EventHub()
    built: list[Event] = []

    def publish(event: Event) -> None:
        built.append(event)
        hub.publish(event)

    def change(client: str) -> Change:
        return Change(
            message_id=7,
            segment_id=7 << 8,
            client=client,
            segment_state=SegmentState.DELIVERED,
            before=MessageState.SUBMITTED,
            after=MessageState.DELIVERED,
            receipt_stat="DELIVRD",
            receipt_err="000",
        )

    assert not hub.wants("a")
    sub = hub.subscribe("a", frozenset({"receipt", "state"}))
    assert hub.wants("a")
    publish_changes(publish, [change("a"), change("b")], carrier="fake", wants=hub.wants)
    assert [(e.kind, e.client) for e in built] == [("receipt", "a"), ("state", "a")]
    assert sub.queue.qsize() == 2
    sub.close()
    assert not hub.wants("a")
    publish_changes(publish, [change("a")], carrier="fake", wants=hub.wants)
    assert len(built) == 2
