"""Fan-out of events (receipts, inbound messages, state changes) to the owning client's subscribers.

An event names its client; only that client's subscribers see it, so a reply never reaches another
account. Each subscriber has a bounded queue: one that falls behind gets a last `dropped` event and
is removed, so a stuck reader can cost memory only up to its bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from smppd.queue.model import Change, Inbound, InboundIn
from smppd.service import Event

KINDS = frozenset({"receipt", "inbound", "state"})


def inbound_json(inbound_id: int, inbound: Inbound | InboundIn) -> dict[str, Any]:
    """What a client hears of an inbound message: its event, and the API's `inbound` reply."""
    return {
        "id": inbound_id,
        "from": inbound.source,
        "to": inbound.destination,
        "text": inbound.text,
        "carrier": inbound.carrier,
        "received_at": inbound.received_at,
        "keyword": inbound.keyword,
        "complete": inbound.complete,
    }


def inbound_event(inbound_id: int, inbound: InboundIn) -> Event:
    return Event("inbound", inbound.client, inbound_json(inbound_id, inbound))


def change_event(change: Change) -> Event:
    data: dict[str, object] = {
        "id": change.message_id,
        "segment": change.segment_id & 0xFF,
        "segment_state": str(change.segment_state),
        "state": str(change.after),
    }
    if change.command_status is not None:
        data["command_status"] = change.command_status
    return Event("state", change.client, data)


def publish_changes(
    publish: Callable[[Event], None],
    changes: Iterable[Change],
    *,
    carrier: str | None = None,
    wants: Callable[[str], bool] = lambda client: True,
) -> None:
    """Events for queue changes: a `receipt` when a receipt caused one (matched on arrival or
    later, when its early receipt met the submit_sm_resp), a `state` when the message's state
    moved. Only for clients that `wants` says have a subscriber."""
    for change in changes:
        if not wants(change.client):
            continue
        if change.receipt_stat is not None:
            publish(
                Event(
                    "receipt",
                    change.client,
                    {
                        "id": change.message_id,
                        "segment": change.segment_id & 0xFF,
                        "stat": change.receipt_stat,
                        "err": change.receipt_err,
                        "state": str(change.after),
                        "carrier": carrier,
                    },
                )
            )
        if change.before != change.after:
            publish(change_event(change))


@dataclass(eq=False)
class _Subscriber:
    client: str
    kinds: frozenset[str]
    queue: asyncio.Queue[Event | None]
    hub: EventHub
    closed: bool = False
    dropped: bool = field(default=False)

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            event = await self.queue.get()
            if event is None:
                return
            yield event

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub._remove(self)
            self._end()

    def _end(self) -> None:
        # The queue keeps one slot spare for the sentinel (see EventHub.subscribe).
        self.queue.put_nowait(None)


class EventHub:
    def __init__(self, *, queue_size: int = 10_000) -> None:
        self._queue_size = queue_size
        self._by_client: dict[str, set[_Subscriber]] = {}
        self.published = 0  # events queued to subscribers, one per subscriber
        self.dropped_subscribers = 0

    def subscribe(self, client: str, kinds: frozenset[str]) -> _Subscriber:
        queue: asyncio.Queue[Event | None] = asyncio.Queue(self._queue_size + 2)
        sub = _Subscriber(client, kinds, queue, self)
        self._by_client.setdefault(client, set()).add(sub)
        return sub

    def wants(self, client: str | None) -> bool:
        """Whether `client` has a subscriber: events nobody would see are not worth building."""
        return client in self._by_client

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._by_client.values())

    def publish(self, event: Event) -> None:
        if event.client is None:
            return
        subs = self._by_client.get(event.client)
        if not subs:
            return
        for sub in list(subs):
            if event.kind not in sub.kinds:
                continue
            if sub.queue.qsize() >= self._queue_size:
                self._drop(sub)
            else:
                sub.queue.put_nowait(event)
                self.published += 1  # what a subscriber takes: one each

    def publish_changes(self, changes: Iterable[Change], *, carrier: str | None = None) -> None:
        """`publish_changes` to this hub's subscribers."""
        publish_changes(self.publish, changes, carrier=carrier, wants=self.wants)

    def close(self) -> None:
        for subs in list(self._by_client.values()):
            for sub in list(subs):
                sub.close()

    def _drop(self, sub: _Subscriber) -> None:
        self.dropped_subscribers += 1
        self._remove(sub)
        sub.closed = True
        sub.dropped = True
        # The notice goes ahead of the backlog, not behind it: a reader that far behind would
        # go on for long with events already stale, when it can read them back from the store
        # (inbound, finished) and should start doing so now.
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(Event("dropped", sub.client, {"reason": "subscriber fell behind"}))
        sub._end()

    def _remove(self, sub: _Subscriber) -> None:
        subs = self._by_client.get(sub.client)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_client[sub.client]
