"""The queue's interface, in domain words; every backend implements it and passes the same tests.

It promises: a write returns only once it is durable; enqueue is idempotent on (client, ref);
claims hand out due segments by priority, then fairly between clients, then by age; nothing is
dropped silently. It says nothing about how or where data is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol

from smppd.histogram import Histogram
from smppd.queue.errors import QueueError
from smppd.queue.model import (
    Change,
    Claim,
    Enqueued,
    FinishedCursor,
    FinishedPage,
    Inbound,
    InboundIn,
    InboundPart,
    MessageStatus,
    NewMessage,
    OptOut,
    Outcome,
    QueryTarget,
    QueueStats,
    ReceiptIn,
    ReceiptResult,
    RerouteCursor,
)

# The most messages one enqueue should carry. A write is one transaction, and urgent writes and
# the outcomes that free window slots wait for the one running: a 5,000-message submit_many in
# one transaction held an urgent submit's ack 80 ms (p50) behind it, against 27 ms at 1,000.
ENQUEUE_MAX: Final = 1024


class Queue(Protocol):
    async def enqueue(
        self, messages: Sequence[NewMessage], *, now: float, optouts_seen: int | None = None
    ) -> list[Enqueued]:
        """Store messages (one result each, in order); a known (client, ref) returns the first.

        `optouts_seen`: the optouts_recorded at which the messages were checked against the
        opt-outs. A message whose recipient opted out of its sender since then is not stored
        (Enqueued.opted_out): a STOP recorded, and its queued messages cancelled, while a
        submit was between its check and its write must not let that submit through.
        """
        ...

    @property
    def optouts_recorded(self) -> int:
        """Opt-outs recorded since open that is_opted_out already answers by."""
        ...

    async def claim(self, carrier: str, limit: int, *, now: float, min_priority: int = 0) -> Claim:
        """Move up to `limit` due segments of `carrier` (of `min_priority` or above) to
        inflight and return them."""
        ...

    async def record(self, outcomes: Sequence[Outcome], *, now: float) -> list[Change]:
        """Apply submit outcomes of inflight segments; stale or repeated ones change nothing."""
        ...

    async def apply_receipts(
        self, carrier: str, receipts: Sequence[ReceiptIn], *, now: float
    ) -> list[ReceiptResult]:
        """Match receipts to submitted segments (one result each); durable before returning."""
        ...

    async def rekey_held(
        self,
        carrier: str,
        rekey: Callable[[tuple[str, ...]], tuple[str, ...] | None],
        *,
        now: float,
    ) -> int:
        """Give each receipt of `carrier` still held the keys `rekey` makes of its keys (None:
        they stay); how many changed. For when the carrier's id format becomes known."""
        ...

    async def settle_receipts(self, *, now: float) -> dict[str, list[Change]]:
        """Give receipts held for a while to the open segments that wrote the same number
        another way (see smppd.queue.sqlite_receipts); the changes, by carrier."""
        ...

    async def store_inbound(self, inbound: InboundIn) -> int:
        """Store a mobile-originated message; returns its id once durable. The held parts of
        `inbound.parts`, if any, are deleted with it."""
        ...

    async def hold_inbound_part(self, part: InboundPart) -> None:
        """Keep one part of an incomplete long MO until its message is stored; returns once
        durable. A repeated part is ignored (the first copy is kept)."""
        ...

    async def held_inbound_parts(self, carrier: str) -> list[InboundPart]:
        """The parts held for `carrier`, oldest first: what a restart reassembles from."""
        ...

    async def inbound_seen(
        self, carrier: str, *, now: float, limit: int
    ) -> list[tuple[bytes, float]]:
        """The fingerprints stored with `carrier`'s MO (InboundIn.seen, InboundPart.seen) kept
        past `now`, with when each was stored: the newest `limit`, oldest first."""
        ...

    async def bring_forward(self, source: str, *, now: float) -> int:
        """Bulk segments of `source`'s messages deferred for its rate (waiting, never sent)
        come due at `now`: its rate was raised or lifted. Not those waiting out a retry, their
        message's schedule or a daily cap. How many."""
        ...

    async def forget_seen(self, *, now: float) -> int:
        """Delete the fingerprints kept until `now` or before; how many went."""
        ...

    async def id_formats(self) -> dict[str, str]:
        """What was learned of each carrier's message ids (`set_id_format`), by carrier."""
        ...

    async def set_id_format(self, carrier: str, learned: str | None, *, now: float) -> None:
        """Keep what was learned of `carrier`'s message ids, an opaque word (None: forget it);
        returns once durable."""
        ...

    async def segments_by_day(self, start: float) -> dict[int, dict[str, int]]:
        """Segments of messages per UTC day (epoch seconds // 86,400) and sender id, of those
        due (accepted, or at a later not_before) from `start` on: what daily caps count,
        rebuilt after a restart, on every day a message may be scheduled for."""
        ...

    async def inbound_since(
        self, after_id: int, *, client: str | None = None, limit: int = 100
    ) -> list[Inbound]:
        """Inbound messages with id > after_id (of `client` only, if given), oldest first."""
        ...

    async def finished_since(
        self, after: FinishedCursor, *, client: str | None, limit: int
    ) -> FinishedPage:
        """Messages finished after `after` (of `client` only, if given), in the order they
        finished, at most `limit`. A page looks at limit x FINISHED_LOOK_AHEAD messages at
        most, so it may hold fewer than `limit` (none) and still not be the last (`more`): its
        cursor moves on past the other clients' messages it looked at."""
        ...

    async def add_optout(self, sender: str, number: str, *, now: float) -> bool:
        """Opt `number` out of `sender` ("*": of every sender); True if it was not already."""
        ...

    async def remove_optout(self, sender: str, number: str) -> bool:
        """Undo an opt-out; True if there was one."""
        ...

    async def is_opted_out(self, sender: str, number: str) -> bool:
        """True if `number` opted out of `sender` or of every sender."""
        ...

    async def list_optouts(
        self, *, sender: str | None = None, after: tuple[str, str] | None = None, limit: int = 1000
    ) -> list[OptOut]:
        """Opt-outs ordered by (sender, number), starting after `after` (a page cursor)."""
        ...

    async def cancel_queued_to(
        self, sender: str, number: str, *, now: float, client: str | None = None
    ) -> list[Change]:
        """Cancel unsent segments from `sender` ("*": any sender) to `number`; of `client`'s
        messages only, if given."""
        ...

    async def status(self, message_id: int, client: str | None) -> MessageStatus | None:
        """The message, or None if unknown or owned by another client (None: any client)."""
        ...

    async def message_id_of(self, client: str, ref: str) -> int | None:
        """The id of `client`'s message submitted with `ref`, while it is kept; else None."""
        ...

    async def cancel(
        self, message_id: int, client: str | None, *, now: float
    ) -> tuple[MessageStatus, list[Change]] | None:
        """Cancel the segments not yet submitted: the status after and what this call changed
        (nothing, when every segment was already submitted or finished), or None as for
        `status`."""
        ...

    async def recover(self, *, now: float) -> int:
        """At startup: put segments left inflight back to queued; returns how many. A part of
        a message another part of which failed for good is cancelled instead (see record).
        Either way each counts an attempt: it may have been sent, even accepted."""
        ...

    async def rebase_schedules(self, back_s: float, *, now: float, since: float) -> int:
        """The wall clock stepped back `back_s` seconds: retry and deferral times set before
        the step move back with it, to `now` at the earliest. A message's not_before, which a
        client or a daily cap set as a wall-clock time, stays where a segment waits for it
        still. Segments written at `since` or later (in the new clock's time: the step's
        earliest moment) already had their times from the new clock and stay too. Receipt
        queries due (`due_queries`) move alike. Returns how many segments moved."""
        ...

    async def due_queries(self, carrier: str, *, now: float, limit: int) -> list[QueryTarget]:
        """Up to `limit` of `carrier`'s segments whose query_sm is due (Submitted.query_at, or
        `schedule_queries`), earliest first, each still awaiting its receipt; those settled
        meanwhile are not queried, now or later."""
        ...

    async def schedule_queries(
        self, due: Sequence[tuple[int, float | None]], *, now: float
    ) -> None:
        """When each (segment id, time) is to be queried next; None: not again."""
        ...

    async def urgent_due(self, carrier: str, *, limit: int) -> list[float]:
        """When `carrier`'s scheduled urgent segments (URGENT_PRIORITY and up) come due: up to
        `limit` distinct times, earliest first. A send loop starting over stored work (a
        restart) sets its urgent claimer's timers from these."""
        ...

    async def purge(self, before: float) -> int:
        """Delete messages finished before `before` (and older inbound and unmatched receipts,
        and held MO parts PARTS_KEPT_S older still)."""
        ...

    async def expire_waiting(
        self, *, now: float, after: tuple[float, int], limit: int
    ) -> tuple[list[Change], tuple[float, int], bool]:
        """Expire the queued and scheduled segments of up to `limit` messages whose validity
        ended after the `after` cursor (expires_at, message id) and by `now`: a claim expires
        them only with a bind up, and a client must not see an OTP `queued` for the length of
        an outage. Returns the changes, the cursor to go on from (a message not yet expired
        by now has a later expires_at) and whether that was all. Segments in flight are left
        to their outcome, and the cursor stays before their message, the pass ending there: an
        outcome that queues one again (a timeout, a lost bind) must find it expired next time."""
        ...

    async def finish_overdue(self, before: float, *, now: float) -> int:
        """Finish messages that only wait for receipts of segments accepted before `before`
        (they stay `submitted`), so that retention purges them; returns how many. Only those
        created before `before` are looked at (the bound keeps the scan off recent work): after
        the wall clock stepped back, one accepted since waits until its creation is that old."""
        ...

    async def reroute(
        self,
        carrier: str,
        pick: Callable[[str], str | None],
        *,
        now: float,
        limit: int = 1000,
        after: RerouteCursor | None = None,
    ) -> tuple[dict[str, int], RerouteCursor | None]:
        """Failover of waiting work: move `carrier`'s messages whose segments are all queued to
        the carrier `pick(destination)` names (None or `carrier`: they stay), looking at up to
        `limit` due segments from `after`, urgent ones first; scheduled segments that are due
        (retries) count as queued. Returns the messages moved per carrier and the cursor to go
        on from (None: the sweep is done)."""
        ...

    async def stats(self, *, now: float) -> QueueStats: ...

    def queued_depth(self) -> int:
        """Segments not yet accepted by an SMSC (queued, scheduled, inflight), in O(1)."""
        ...

    @property
    def write_failure(self) -> QueueError | None:
        """Why a transaction failed for the storage's sake (full, busy, damaged, I/O: not one
        write's own fault) in the last while (the SQLite store: WRITE_FAILURE_HOLD_S), if one
        did; else None. Writes that need the storage fail alike while it fails (submits are
        refused, outcomes not recorded), and this says so a while after."""
        ...

    def client_depth(self, client: str) -> int:
        """Of queued_depth, the segments of `client`'s messages, in O(1)."""
        ...

    @property
    def commits(self) -> int:
        """Write transactions committed since open (group commit makes this far below the calls)."""
        ...

    @property
    def held_ended(self) -> Mapping[str, Mapping[str, int]]:
        """Since open, how held (early) receipts stopped being held, by carrier and result:
        "matched" (their segment came, or it wrote their number another way and they had
        waited), "duplicate" (a copy held with it was applied first), "unmatched" (the hold
        time passed) or "dropped" (pushed out by the bound)."""
        ...

    @property
    def commit_latency(self) -> Histogram:
        """How long each committed write transaction took, from the writer taking its writes to
        their results being ready (zero for a backend that stores nothing)."""
        ...

    async def close(self) -> None: ...
