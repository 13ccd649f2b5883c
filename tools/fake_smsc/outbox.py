"""Deliveries the SMSC originates (receipts and mobile-originated messages), per account.

Owns the queue of deliver_sm waiting for a receiver: each waits until a receiver or transceiver
bind of its account can take it (any of them, in turn), is resent when the client does not answer
ESME_ROK within the retry timeout (or answers an error status, or the connection goes), and counts
as delivered on the first ESME_ROK. It must not know how a bind is framed: a `Receiver` sends the
body and reports the deliver_sm_resp status back.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from smppd.pdu.codec import encode_body
from smppd.pdu.pdus import DeliverSm

# Called with the deliver_sm_resp's command_status, or None when the connection went first.
ResponseCallback = Callable[[int | None], None]


class Receiver(Protocol):
    """A bind that can take deliver_sm (RX or TRX)."""

    bind_id: int

    def can_deliver(self) -> bool: ...

    def deliver(self, body: bytes, on_response: ResponseCallback) -> int:
        """Send a deliver_sm with `body`; return its sequence_number."""
        ...

    def forget(self, sequence_number: int) -> None:
        """Stop waiting for the response to `sequence_number` (it timed out)."""
        ...


@dataclass(slots=True, eq=False)
class Delivery:
    account: str
    kind: str  # "receipt" or "mo": for stats only
    body: bytes
    done: asyncio.Future[None] | None  # resolved on the first ESME_ROK, when someone waits
    attempts: int = 0
    # Identifies the attempt in flight (0: none), so a late answer to an abandoned one is ignored.
    attempt: int = 0
    retry_timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class _Sent(NamedTuple):
    deadline: float
    delivery: Delivery
    attempt: int
    receiver: Receiver
    sequence_number: int


@dataclass(slots=True)
class OutboxStats:
    queued: int = 0
    sent: int = 0
    acked: int = 0
    retried: int = 0
    dropped: int = 0  # the oldest waiting, past MAX_WAITING for their account


# Deliveries waiting for a receiver, per account: past this the oldest are dropped (as an SMSC
# expires what it cannot deliver), so that a client that takes receipts slower than it submits
# does not grow the fake SMSC without end (about 500 bytes each).
MAX_WAITING = 200_000


class Outbox:
    """Deliveries per account. Attempts in flight share one timer: with one retry timeout for
    all, their deadlines come in sending order, so a deque and a timer on its head suffice."""

    def __init__(self, *, retry_timeout_s: Callable[[], float]) -> None:
        self._retry_timeout_s = retry_timeout_s
        self._ready: dict[str, deque[Delivery]] = {}
        self._receivers: dict[str, list[Receiver]] = {}
        self._turn: dict[str, int] = {}
        self._live: set[Delivery] = set()
        # By deadline, then attempt: the retry timeout can change while attempts are out, so
        # a later one may be due first.
        self._sent: list[tuple[float, int, _Sent]] = []
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._attempts = itertools.count(1)
        self.stats: dict[str, OutboxStats] = {"receipt": OutboxStats(), "mo": OutboxStats()}
        self._acked = asyncio.Event()  # set at each acknowledgement, for wait_acked

    def put(
        self, account: str, kind: str, pdu: DeliverSm, *, track: bool = False
    ) -> asyncio.Future[None] | None:
        """Queue `pdu` for `account`; with `track`, a future resolved once a client acked it."""
        done = asyncio.get_running_loop().create_future() if track else None
        delivery = Delivery(account, kind, encode_body(pdu), done)
        self._live.add(delivery)
        self.stats[kind].queued += 1
        ready = self._ready.setdefault(account, deque())
        ready.append(delivery)
        if len(ready) > MAX_WAITING:
            oldest = ready.popleft()
            self._live.discard(oldest)
            self.stats[oldest.kind].dropped += 1
            if oldest.done is not None and not oldest.done.done():
                oldest.done.cancel()
        self.pump(account)
        return done

    def add_receiver(self, account: str, receiver: Receiver) -> None:
        self._receivers.setdefault(account, []).append(receiver)
        self.pump(account)

    def remove_receiver(self, account: str, receiver: Receiver) -> None:
        receivers = self._receivers.get(account, [])
        if receiver in receivers:
            receivers.remove(receiver)

    async def wait_acked(self, kind: str, count: int) -> None:
        """Until `count` deliveries of `kind` ("receipt", "mo") in all were acknowledged."""
        while self.stats[kind].acked < count:
            self._acked.clear()
            await self._acked.wait()

    def waiting(self, account: str | None = None) -> int:
        """Deliveries not yet acknowledged (queued or in flight)."""
        if account is None:
            return len(self._live)
        return sum(1 for d in self._live if d.account == account)

    def pump(self, account: str) -> None:
        """Send what is ready for `account` to whichever of its receivers can take it."""
        ready = self._ready.get(account)
        if not ready:
            return
        receivers = self._receivers.get(account)
        if not receivers:
            return
        while ready:
            receiver = self._next_receiver(account, receivers)
            if receiver is None:
                return
            self._send(ready.popleft(), receiver)

    def pump_all(self) -> None:
        for account in list(self._ready):
            self.pump(account)

    def close(self) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        for delivery in self._live:
            if delivery.retry_timer is not None:
                delivery.retry_timer.cancel()
            if delivery.done is not None and not delivery.done.done():
                delivery.done.cancel()
        self._live.clear()
        self._ready.clear()
        self._sent.clear()

    def _next_receiver(self, account: str, receivers: list[Receiver]) -> Receiver | None:
        start = self._turn.get(account, 0)
        count = len(receivers)
        for offset in range(count):
            receiver = receivers[(start + offset) % count]
            if receiver.can_deliver():
                self._turn[account] = start + offset + 1
                return receiver
        return None

    def _send(self, delivery: Delivery, receiver: Receiver) -> None:
        attempt = next(self._attempts)
        delivery.attempt = attempt
        delivery.attempts += 1
        stats = self.stats[delivery.kind]
        stats.sent += 1
        if delivery.attempts > 1:
            stats.retried += 1

        def on_response(status: int | None) -> None:
            self._answered(delivery, attempt, status)

        sequence_number = receiver.deliver(delivery.body, on_response)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_timeout_s()
        sent = _Sent(deadline, delivery, attempt, receiver, sequence_number)
        heapq.heappush(self._sent, (deadline, attempt, sent))
        timer = self._sweep_timer
        if timer is None or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._sweep_timer = loop.call_at(deadline, self._sweep)

    def _answered(self, delivery: Delivery, attempt: int, status: int | None) -> None:
        if delivery.attempt != attempt or delivery not in self._live:
            return
        delivery.attempt = 0
        sent = self._sent
        while sent and sent[0][2].delivery.attempt != sent[0][1]:  # answered: drop from view
            heapq.heappop(sent)
        if status == 0:
            self._live.discard(delivery)
            self.stats[delivery.kind].acked += 1
            self._acked.set()
            if delivery.done is not None and not delivery.done.done():
                delivery.done.set_result(None)
        elif status is None:  # the connection went: another bind may take it now
            self._requeue(delivery)
        else:  # refused for now: try again after the retry timeout
            loop = asyncio.get_running_loop()
            delivery.retry_timer = loop.call_later(self._retry_timeout_s(), self._requeue, delivery)
        self.pump(delivery.account)

    def _sweep(self) -> None:
        """Requeue the attempts whose time is up; re-arm for the next deadline."""
        self._sweep_timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        sent = self._sent
        while sent:
            head = sent[0][2]
            if head.delivery.attempt != head.attempt:
                heapq.heappop(sent)
                continue
            if head.deadline > now:
                self._sweep_timer = loop.call_at(head.deadline, self._sweep)
                return
            heapq.heappop(sent)
            head.delivery.attempt = 0
            head.receiver.forget(head.sequence_number)
            self._requeue(head.delivery)

    def _requeue(self, delivery: Delivery) -> None:
        if delivery not in self._live:
            return
        delivery.retry_timer = None
        self._ready.setdefault(delivery.account, deque()).append(delivery)
        self.pump(delivery.account)
