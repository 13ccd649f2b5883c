"""An in-memory queue backend: the same contract as SQLite, with nothing durable.

For tests and development only: it holds every message in RAM and loses them on exit. It keeps
the interface honest (a second backend must not need SQLite's assumptions) and applies the same
pure rules: smppd.queue.states for transitions, smppd.queue.fairness for claims and
smppd.queue.receipts for repeats. Each call is one "commit".
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from smppd.histogram import Histogram
from smppd.queue.counts import SegmentCounts
from smppd.queue.errors import QueueClosedError, QueueError
from smppd.queue.fairness import rotate_after, take_fairly
from smppd.queue.model import (
    FINISHED_LOOK_AHEAD,
    MAX_PRIORITY,
    OPTOUT_ALL_SENDERS,
    PARTS_KEPT_S,
    URGENT_PRIORITY,
    Change,
    Claim,
    ClaimedSegment,
    Deferred,
    Enqueued,
    Failed,
    Finished,
    FinishedCursor,
    FinishedPage,
    Inbound,
    InboundIn,
    InboundPart,
    MessageStatus,
    NewMessage,
    OptOut,
    Outcome,
    PartGroup,
    QueryTarget,
    QueueStats,
    ReceiptIn,
    ReceiptOutcome,
    ReceiptResult,
    RerouteCursor,
    Retry,
    Seen,
    SegmentStatus,
    Submitted,
    Unknown,
    claimed_on_arrival,
    finish_after,
    segment_id,
    segment_index,
    sibling_ids,
)
from smppd.queue.receipts import (
    FALLBACK_AFTER_S,
    held_ended_by_carrier,
    held_result,
    is_repeat,
    whole_message_receipt,
)
from smppd.queue.states import (
    FINAL_STATES,
    WAITING_STATES,
    SegmentEvent,
    SegmentState,
    arrival_state,
    is_finished,
    keeps_its_end,
    message_state,
    receipts_overdue,
    segment_state,
    transition,
    waiting_state,
)


@dataclass(eq=False)
class _Message:
    id: int
    new: NewMessage
    created_at: float
    finished_at: float | None = None


@dataclass(eq=False)
class _Segment:
    id: int
    message: _Message
    body: bytes
    state: SegmentState
    next_attempt_at: float
    updated_at: float
    attempts: int = 0
    command_status: int | None = None
    carrier_message_id: str | None = None
    keys: tuple[str, ...] = ()
    bind: str | None = None
    receipt_stat: str | None = None
    receipt_err: str | None = None
    done_at: float | None = None

    @property
    def queue_key(self) -> tuple[str, int, str]:
        new = self.message.new
        return (new.carrier, new.priority, new.client)


@dataclass(eq=False)
class _Receipt:
    carrier: str
    receipt: ReceiptIn
    received_at: float
    state: str = "held"  # held | unmatched | dropped


@dataclass(eq=False)
class _Pending:
    """Due segment ids per (carrier, priority, client), and scheduled ones by time per carrier."""

    ready: dict[tuple[str, int, str], list[int]] = field(default_factory=dict)
    scheduled: dict[str, list[tuple[float, int]]] = field(default_factory=dict)


class MemoryQueue:
    def __init__(self, *, receipt_hold_s: float = 600.0, max_held_receipts: int = 10_000) -> None:
        self._receipt_hold_s = receipt_hold_s
        self._max_held = max_held_receipts
        self._messages: dict[int, _Message] = {}
        self._segments: dict[int, _Segment] = {}
        self._by_ref: dict[tuple[str, str], int] = {}
        self._pending = _Pending()
        self._counts = SegmentCounts()
        self._queries: dict[int, tuple[str, float]] = {}  # segment id -> (carrier, due at)
        self._cursors: dict[tuple[str, int], str] = {}
        self._correlations: dict[tuple[str, str], int] = {}
        self._receipts: dict[int, _Receipt] = {}
        self._held: OrderedDict[int, _Receipt] = OrderedDict()
        self._held_ended: Counter[tuple[str, str]] = Counter()  # (carrier, result)
        self._settled_until = float("-inf")
        self._last_finished_at = float("-inf")  # as SqliteQueue's: finishing never goes back
        self._inbound: list[Inbound] = []
        self._last_inbound_id = 0  # a purge must not hand an id out again
        self._parts: dict[tuple[PartGroup, int], InboundPart] = {}
        self._seen: dict[tuple[str, bytes], tuple[float, float]] = {}  # -> (seen_at, until)
        self._optouts: dict[tuple[str, str], float] = {}
        self._optouts_added = 0  # Queue.optouts_recorded
        self._id_formats: dict[str, str] = {}
        self._next_id = 1
        self._next_receipt_id = 1
        self._commits = 0
        self._commit_latency = Histogram()
        self._closed = False

    # -- bookkeeping ----------------------------------------------------------------------------

    def _count(self, segment: _Segment, state: SegmentState, change: int) -> None:
        carrier, priority, client = segment.queue_key
        self._counts.apply({(carrier, priority, client, state): change})

    def _place(self, segment: _Segment) -> None:
        """Index a segment that just became queued or scheduled."""
        if segment.state is SegmentState.QUEUED:
            heapq.heappush(self._pending.ready.setdefault(segment.queue_key, []), segment.id)
        elif segment.state is SegmentState.SCHEDULED:
            carrier = segment.message.new.carrier
            heapq.heappush(
                self._pending.scheduled.setdefault(carrier, []),
                (segment.next_attempt_at, segment.id),
            )

    def _finish_time(self, now: float) -> float:
        self._last_finished_at = finish_after(self._last_finished_at, now)
        return self._last_finished_at

    def _siblings(self, message: _Message) -> list[_Segment]:
        total = len(message.new.segments)
        return [self._segments[segment_id(message.id, i)] for i in range(total)]

    def _move(self, segment: _Segment, state: SegmentState, *, now: float) -> Change:
        siblings = self._siblings(segment.message)
        before = message_state(s.state for s in siblings)
        message = segment.message
        delivery = message.new.registered_delivery
        was = is_finished((s.state for s in siblings), registered_delivery=delivery)
        self._count(segment, segment.state, -1)
        self._count(segment, state, +1)
        segment.state = state
        segment.updated_at = now
        self._place(segment)
        after = message_state(s.state for s in siblings)
        # By the states, as the SQLite backend does: a message finished by `finish_overdue`
        # stays finished while its late receipts come in.
        done = is_finished((s.state for s in siblings), registered_delivery=delivery)
        if done and (not was or after is not before):  # ended, or ended otherwise (listed again)
            message.finished_at = self._finish_time(now)
        elif was and not done:
            message.finished_at = None
        return Change(
            message_id=message.id,
            segment_id=segment.id,
            client=message.new.client,
            segment_state=state,
            before=before,
            after=after,
            command_status=segment.command_status,
            receipt_stat=segment.receipt_stat,
            receipt_err=segment.receipt_err,
        )

    def _commit(self) -> None:
        if self._closed:
            raise QueueClosedError("the queue is closed")
        self._commits += 1
        self._commit_latency.observe(0.0)

    # -- the Queue interface --------------------------------------------------------------------

    async def enqueue(
        self, messages: Sequence[NewMessage], *, now: float, optouts_seen: int | None = None
    ) -> list[Enqueued]:
        self._commit()
        recheck = optouts_seen is not None and self._optouts_added > optouts_seen
        results = []
        for new in messages:
            known = self._by_ref.get((new.client, new.ref)) if new.ref is not None else None
            if known is not None:
                results.append(Enqueued(known, False, len(self._messages[known].new.segments)))
                continue
            if recheck and any(
                [
                    await self.is_opted_out(s, new.destination)
                    for s in (new.source, *new.opted_out_with)
                ]
            ):
                results.append(Enqueued(0, False, len(new.segments), opted_out=True))
                continue
            message = _Message(self._next_id, new, now)
            self._next_id += 1
            self._messages[message.id] = message
            if new.ref is not None:
                self._by_ref[new.client, new.ref] = message.id
            due = now if new.not_before is None else max(now, new.not_before)
            state = arrival_state(due, now=now, send_now=new.send_now, expires_at=new.expires_at)
            for index, body in enumerate(new.segments):
                segment = _Segment(segment_id(message.id, index), message, body, state, due, now)
                self._segments[segment.id] = segment
                self._count(segment, state, +1)
                self._place(segment)
            claimed = claimed_on_arrival(new, message.id) if state is SegmentState.INFLIGHT else ()
            results.append(Enqueued(message.id, True, len(new.segments), claimed))
        return results

    async def claim(self, carrier: str, limit: int, *, now: float, min_priority: int = 0) -> Claim:
        self._commit()
        self._promote_due(carrier, now=now)
        claimed: list[ClaimedSegment] = []
        expired: list[Change] = []
        for priority in range(MAX_PRIORITY, min_priority - 1, -1):
            remaining = limit - len(claimed)
            if remaining <= 0:
                break
            clients = [
                client
                for (c, p, client) in self._counts.queued_keys()
                if c == carrier and p == priority
            ]
            if not clients:
                continue
            ordered = rotate_after(clients, self._cursors.get((carrier, priority)))

            def fetch(client: str, n: int, priority: int = priority) -> list[ClaimedSegment]:
                return self._fetch((carrier, priority, client), n, expired, now=now)

            taken, last = take_fairly(ordered[:remaining], remaining, fetch)
            claimed.extend(taken)
            if last is not None:
                self._cursors[carrier, priority] = last
        return Claim(tuple(claimed), tuple(expired))

    def _promote_due(self, carrier: str, *, now: float) -> None:
        heap = self._pending.scheduled.get(carrier, [])
        while heap and heap[0][0] <= now:
            _, sid = heapq.heappop(heap)
            segment = self._segments.get(sid)
            if (
                segment is not None
                and segment.state is SegmentState.SCHEDULED
                and segment.next_attempt_at <= now
            ):
                self._move(segment, SegmentState.QUEUED, now=now)

    def _fetch(
        self, key: tuple[str, int, str], n: int, expired: list[Change], *, now: float
    ) -> list[ClaimedSegment]:
        heap = self._pending.ready.get(key, [])
        taken: list[ClaimedSegment] = []
        while heap and len(taken) < n:
            segment = self._segments.get(heapq.heappop(heap))
            if segment is None or segment.state is not SegmentState.QUEUED:
                continue  # a stale index entry: the segment moved on since
            if segment.queue_key != key:
                continue  # rerouted to another carrier since
            new = segment.message.new
            if new.expires_at is not None and new.expires_at <= now:
                expired.append(self._move(segment, SegmentState.EXPIRED, now=now))
                continue
            attempts = segment.attempts
            self._move(segment, SegmentState.INFLIGHT, now=now)
            taken.append(
                ClaimedSegment(
                    segment_id=segment.id,
                    message_id=segment.message.id,
                    index=segment_index(segment.id),
                    total=len(new.segments),
                    body=segment.body,
                    client=new.client,
                    source=new.source,
                    destination=new.destination,
                    priority=new.priority,
                    attempts=attempts,
                    registered_delivery=new.registered_delivery,
                    expires_at=new.expires_at,
                )
            )
        return taken

    async def record(self, outcomes: Sequence[Outcome], *, now: float) -> list[Change]:
        self._commit()
        self._sweep_held(now=now)
        changes: list[Change] = []
        for outcome in outcomes:
            segment = self._segments.get(outcome.segment_id)
            if segment is None:
                continue
            if isinstance(outcome, Submitted):
                changes.extend(self._submitted(segment, outcome, now=now))
                continue
            event = {
                Retry: SegmentEvent.SUBMIT_RETRY,
                Unknown: SegmentEvent.SUBMIT_UNKNOWN,
                Failed: SegmentEvent.SUBMIT_FAILED,
                Deferred: SegmentEvent.DEFERRED,
            }[type(outcome)]
            target = transition(segment.state, event)
            if target is None:
                if segment.state is SegmentState.CANCELLED and not isinstance(outcome, Deferred):
                    # Cancelled while on the wire: its attempt counts (as in SQLite).
                    segment.attempts += not isinstance(outcome, Retry) or outcome.counts
                    status = None if isinstance(outcome, Unknown) else outcome.command_status
                    segment.command_status = status
                continue
            if isinstance(outcome, Deferred):
                segment.next_attempt_at = outcome.next_attempt_at
                target = waiting_state(outcome.next_attempt_at, now=now)
            else:
                segment.attempts += not isinstance(outcome, Retry) or outcome.counts
                if isinstance(outcome, Failed):
                    segment.command_status = outcome.command_status
                else:
                    segment.command_status = (
                        outcome.command_status if isinstance(outcome, Retry) else None
                    )
                    segment.next_attempt_at = outcome.next_attempt_at
                    target = waiting_state(outcome.next_attempt_at, now=now)
            if target in WAITING_STATES and any(
                sibling.state is SegmentState.FAILED for sibling in self._siblings(segment.message)
            ):
                # In flight when another part failed for good: not sent again (as in SQLite).
                target = SegmentState.CANCELLED
            changes.append(self._move(segment, target, now=now))
            if target is SegmentState.FAILED:
                # The parts not yet sent are cancelled, not sent as fragments (as in SQLite).
                changes.extend(
                    self._move(sibling, SegmentState.CANCELLED, now=now)
                    for sibling in self._siblings(segment.message)
                    if sibling.state in WAITING_STATES
                )
        return changes

    def _submitted(self, segment: _Segment, outcome: Submitted, *, now: float) -> list[Change]:
        event = SegmentEvent.LATE_ACCEPTED if outcome.late else SegmentEvent.SUBMIT_ACCEPTED
        target = transition(segment.state, event)
        if target is None:
            keys = outcome.carrier_message_keys
            if segment.state is SegmentState.SUBMITTED and segment.message.new.registered_delivery:
                # Another copy's acceptance (see the SQLite backend): its receipt matches too,
                # held already or to come; a key another segment holds stays that one's.
                carrier = segment.message.new.carrier
                new = [k for k in keys if (carrier, k) not in self._correlations]
                segment.keys = tuple(dict.fromkeys((*segment.keys, *new)))
                for key in new:
                    self._correlations[carrier, key] = segment.id
                if new:
                    return self._match_held(segment, tuple(new), now=now)
            return []
        if outcome.late and keeps_its_end(
            segment.state,
            segment.receipt_stat,
            (s.state for s in self._siblings(segment.message) if s is not segment),
        ):
            return []
        keys = outcome.carrier_message_keys
        segment.attempts += not outcome.late  # a late one's attempt counted when it timed out
        segment.command_status = 0
        segment.bind = outcome.bind
        segment.carrier_message_id = outcome.carrier_message_id or (keys[0] if keys else None)
        carrier = segment.message.new.carrier
        if segment.message.new.registered_delivery:
            # The new id's first (queries ask by it); an earlier acceptance's stay correlated
            # and must go with the segment when it is purged.
            segment.keys = tuple(dict.fromkeys((*keys, *segment.keys)))
            for key in keys:
                self._correlations[carrier, key] = segment.id
            if outcome.query_at is not None and keys:
                self._queries[segment.id] = (carrier, outcome.query_at)
        changes = [self._move(segment, target, now=now)]
        if segment.message.new.registered_delivery and keys:
            changes.extend(self._match_held(segment, keys, now=now))
        if outcome.whole_message and segment.message.new.registered_delivery:
            changes.extend(self._settle_late_part(segment, now=now))
        return changes

    def _match_held(self, segment: _Segment, keys: tuple[str, ...], *, now: float) -> list[Change]:
        """Apply the held receipts that `keys` (a Submitted's) correlate with `segment`."""
        carrier = segment.message.new.carrier
        changes: list[Change] = []
        for receipt_id, held in list(self._held.items()):
            # The Submitted's key among the receipt's: as if the receipt came after it. One
            # giving the id another way only once it has waited, and if no segment has its own.
            given = held.receipt.keys
            if (
                held.carrier == carrier
                and keys[0] in given
                and (
                    given[0] == keys[0]
                    or (
                        held.received_at <= now - FALLBACK_AFTER_S
                        and (carrier, given[0]) not in self._correlations
                    )
                )
            ):
                applied = self._apply_receipt(segment, held.receipt, now=now)
                self._take_held(receipt_id, applied.outcome)
                changes.extend(applied.changes)
        return changes

    def _settle_late_part(self, segment: _Segment, *, now: float) -> list[Change]:
        """See Submitted.whole_message: take a sibling's whole-message receipt."""
        if segment.state is not SegmentState.SUBMITTED:
            return []
        total = len(segment.message.new.segments)
        ids = sibling_ids(segment.message.id, total, but=segment.id)
        sibling = whole_message_receipt(self._segments.get(sid) for sid in ids)
        if sibling is None:
            return []
        segment.receipt_stat = sibling.receipt_stat
        segment.receipt_err = sibling.receipt_err
        segment.done_at = sibling.done_at
        return [self._move(segment, sibling.state, now=now)]

    async def apply_receipts(
        self, carrier: str, receipts: Sequence[ReceiptIn], *, now: float
    ) -> list[ReceiptResult]:
        self._commit()
        self._sweep_held(now=now)
        results = []
        for receipt in receipts:
            if receipt.segment_id is not None:  # a query's answer: about that segment only
                asked = self._segments.get(receipt.segment_id)
                if asked is None or transition(asked.state, SegmentEvent.RECEIPT) is None:
                    results.append(ReceiptResult(ReceiptOutcome.DUPLICATE))
                else:
                    results.append(self._apply_receipt(asked, receipt, now=now))
                continue
            sid = self._open_segment(carrier, receipt.keys[:1])
            if sid is not None:
                results.append(self._apply_receipt(self._segments[sid], receipt, now=now))
            elif not receipt.keys:
                self._keep(_Receipt(carrier, receipt, now, "unmatched"))
                results.append(ReceiptResult(ReceiptOutcome.UNMATCHED))
            elif self._repeats_final(carrier, receipt, receipt.keys[:1]):
                results.append(ReceiptResult(ReceiptOutcome.DUPLICATE))
            else:
                held = _Receipt(carrier, receipt, now)
                self._held[self._keep(held)] = held
                if len(self._held) > self._max_held:
                    _, oldest = self._held.popitem(last=False)
                    self._end_held(oldest, "dropped")
                results.append(ReceiptResult(ReceiptOutcome.HELD))
        return results

    async def rekey_held(
        self,
        carrier: str,
        rekey: Callable[[tuple[str, ...]], tuple[str, ...] | None],
        *,
        now: float,
    ) -> int:
        self._commit()
        changed = 0
        for held in self._held.values():
            if held.carrier != carrier:
                continue
            new = rekey(held.receipt.keys)
            if new is not None and new != held.receipt.keys:
                held.receipt = dataclasses.replace(held.receipt, keys=new)
                changed += 1
        return changed

    async def settle_receipts(self, *, now: float) -> dict[str, list[Change]]:
        self._commit()
        self._sweep_held(now=now)
        until = now - FALLBACK_AFTER_S
        changes: dict[str, list[Change]] = {}
        for receipt_id, held in list(self._held.items()):
            if held.received_at > until:
                break
            if held.received_at <= self._settled_until:
                continue
            keys = held.receipt.keys
            if (held.carrier, keys[0]) in self._correlations:
                continue  # its own segment is known: no other takes it
            sid = self._open_segment(held.carrier, keys)
            if sid is None:
                if self._repeats_final(held.carrier, held.receipt, keys):
                    self._take_held(receipt_id, ReceiptOutcome.DUPLICATE)  # see settle_held
                continue
            applied = self._apply_receipt(self._segments[sid], held.receipt, now=now)
            self._take_held(receipt_id, applied.outcome)
            if applied.changes:
                changes.setdefault(held.carrier, []).extend(applied.changes)
        self._settled_until = max(self._settled_until, until)
        return changes

    def _open_segment(self, carrier: str, keys: Sequence[str]) -> int | None:
        """The first segment under `keys` that can still take a receipt."""
        for key in keys:
            sid = self._correlations.get((carrier, key))
            if sid is not None and transition(self._segments[sid].state, SegmentEvent.RECEIPT):
                return sid
        return None

    def _keep(self, receipt: _Receipt) -> int:
        receipt_id = self._next_receipt_id
        self._next_receipt_id += 1
        self._receipts[receipt_id] = receipt
        return receipt_id

    def _sweep_held(self, *, now: float) -> None:
        while self._held:
            receipt_id, oldest = next(iter(self._held.items()))
            if oldest.received_at > now - self._receipt_hold_s:
                return
            del self._held[receipt_id]
            self._end_held(oldest, "unmatched")

    def _take_held(self, receipt_id: int, outcome: ReceiptOutcome) -> None:
        """A held receipt found its segment: applied (or a copy of one applied), not kept."""
        self._end_held(self._held.pop(receipt_id), held_result(outcome))
        del self._receipts[receipt_id]

    def _end_held(self, receipt: _Receipt, result: str) -> None:
        receipt.state = result
        self._held_ended[receipt.carrier, result] += 1

    def _apply_receipt(self, segment: _Segment, receipt: ReceiptIn, *, now: float) -> ReceiptResult:
        if transition(segment.state, SegmentEvent.RECEIPT) is None:
            return ReceiptResult(ReceiptOutcome.DUPLICATE)
        if receipt.final_state is None and (segment.receipt_stat, segment.receipt_err) == (
            receipt.stat,
            receipt.err,
        ):
            return ReceiptResult(ReceiptOutcome.DUPLICATE)
        first = segment.receipt_stat is None
        segment.receipt_stat = receipt.stat
        segment.receipt_err = receipt.err
        segment.done_at = receipt.done_at
        if receipt.final_state is None:
            return ReceiptResult(
                ReceiptOutcome.MATCHED, self._move(segment, segment.state, now=now)
            )
        final = segment_state(receipt.final_state)
        after = max(0.0, now - segment.updated_at) if first else None
        change = self._move(segment, final, now=now)
        siblings = []
        if receipt.whole_message:
            total = len(segment.message.new.segments)
            for sid in sibling_ids(segment.message.id, total, but=segment.id):
                sibling = self._segments.get(sid)
                if sibling is not None and sibling.state is SegmentState.SUBMITTED:
                    sibling.receipt_stat = receipt.stat
                    sibling.receipt_err = receipt.err
                    sibling.done_at = receipt.done_at
                    siblings.append(self._move(sibling, final, now=now))
        return ReceiptResult(ReceiptOutcome.MATCHED, change, tuple(siblings), after)

    def _repeats_final(self, carrier: str, receipt: ReceiptIn, keys: Sequence[str]) -> bool:
        """See sqlite_receipts._repeats_final."""
        for key in keys:
            segment = self._segments.get(self._correlations.get((carrier, key), -1))
            if segment is not None and is_repeat(
                receipt,
                final=segment.state in FINAL_STATES,
                stat=segment.receipt_stat,
                err=segment.receipt_err,
                done_at=segment.done_at,
            ):
                return True
        return False

    async def hold_inbound_part(self, part: InboundPart) -> None:
        self._commit()
        self._remember(part.group.carrier, part.seen, part.received_at)
        self._parts.setdefault((part.group, part.seq), part)

    def _remember(self, carrier: str, seen: Seen | None, now: float) -> None:
        if seen is not None:
            self._seen[carrier, seen.key] = (now, seen.until)

    async def inbound_seen(
        self, carrier: str, *, now: float, limit: int
    ) -> list[tuple[bytes, float]]:
        kept = [
            (at, key)
            for (owner, key), (at, until) in self._seen.items()
            if owner == carrier and until > now
        ]
        kept.sort(key=lambda entry: entry[0])
        return [(key, at) for at, key in kept[-limit:]] if limit > 0 else []

    async def bring_forward(self, source: str, *, now: float) -> int:
        self._commit()
        moved = 0
        for segment in self._segments.values():
            new = segment.message.new
            if (
                segment.state is SegmentState.SCHEDULED
                and segment.next_attempt_at > now
                and segment.attempts == 0
                and segment.command_status is None
                and new.source == source
                and new.priority < URGENT_PRIORITY
                and (new.not_before is None or new.not_before <= now)
            ):
                segment.next_attempt_at = now
                heapq.heappush(
                    self._pending.scheduled.setdefault(new.carrier, []), (now, segment.id)
                )
                moved += 1
        return moved

    async def forget_seen(self, *, now: float) -> int:
        self._commit()
        gone = [entry for entry, (_, until) in self._seen.items() if until <= now]
        for entry in gone:
            del self._seen[entry]
        return len(gone)

    async def held_inbound_parts(self, carrier: str) -> list[InboundPart]:
        held = [part for part in self._parts.values() if part.group.carrier == carrier]
        return sorted(held, key=lambda part: part.received_at)

    async def store_inbound(self, inbound: InboundIn) -> int:
        self._commit()
        self._remember(inbound.carrier, inbound.seen, inbound.received_at)
        if inbound.parts is not None:
            for seq, data in inbound.held:
                held = self._parts.get((inbound.parts, seq))
                if held is not None and held.data == data:
                    del self._parts[inbound.parts, seq]
        self._last_inbound_id += 1
        stored = Inbound(
            self._last_inbound_id,
            inbound.carrier,
            inbound.source,
            inbound.destination,
            inbound.text,
            inbound.data_coding,
            inbound.received_at,
            inbound.client,
            inbound.complete,
            inbound.keyword,
        )
        self._inbound.append(stored)
        return stored.id

    async def id_formats(self) -> dict[str, str]:
        return dict(self._id_formats)

    async def set_id_format(self, carrier: str, learned: str | None, *, now: float) -> None:
        self._commit()
        if learned is None:
            self._id_formats.pop(carrier, None)
        else:
            self._id_formats[carrier] = learned

    async def segments_by_day(self, start: float) -> dict[int, dict[str, int]]:
        days: dict[int, dict[str, int]] = {}
        for m in self._messages.values():
            at = max(m.created_at, m.new.not_before or m.created_at)
            if at >= start:
                counts = days.setdefault(int(at // 86_400), {})
                counts[m.new.source] = counts.get(m.new.source, 0) + len(m.new.segments)
        return days

    async def inbound_since(
        self, after_id: int, *, client: str | None = None, limit: int = 100
    ) -> list[Inbound]:
        found = [
            m for m in self._inbound if m.id > after_id and (client is None or m.client == client)
        ]
        return found[:limit]

    async def finished_since(
        self, after: FinishedCursor, *, client: str | None, limit: int
    ) -> FinishedPage:
        done = sorted(
            (m.finished_at, m.id, m)
            for m in self._messages.values()
            if m.finished_at is not None and (m.finished_at, m.id) > after
        )
        looked = done[: limit * FINISHED_LOOK_AHEAD]
        found: list[Finished] = []
        cursor = after
        for finished_at, message_id, message in looked:
            cursor = (finished_at, message_id)
            if client is not None and message.new.client != client:
                continue
            state = message_state(s.state for s in self._siblings(message))
            found.append(Finished(message_id, message.new.ref, state, finished_at))
            if len(found) == limit:
                break
        more = len(found) == limit or len(looked) == limit * FINISHED_LOOK_AHEAD
        return FinishedPage(found, cursor, more)

    async def add_optout(self, sender: str, number: str, *, now: float) -> bool:
        self._commit()
        if (sender, number) in self._optouts:
            return False
        self._optouts[sender, number] = now
        self._optouts_added += 1
        return True

    @property
    def optouts_recorded(self) -> int:
        return self._optouts_added

    async def remove_optout(self, sender: str, number: str) -> bool:
        self._commit()
        return self._optouts.pop((sender, number), None) is not None

    async def is_opted_out(self, sender: str, number: str) -> bool:
        return (sender, number) in self._optouts or (OPTOUT_ALL_SENDERS, number) in self._optouts

    async def list_optouts(
        self, *, sender: str | None = None, after: tuple[str, str] | None = None, limit: int = 1000
    ) -> list[OptOut]:
        start = after or ("", "")
        pairs = sorted(
            pair for pair in self._optouts if pair > start and (sender is None or pair[0] == sender)
        )
        return [OptOut(s, n, self._optouts[s, n]) for s, n in pairs[:limit]]

    async def cancel_queued_to(
        self, sender: str, number: str, *, now: float, client: str | None = None
    ) -> list[Change]:
        self._commit()
        changes = []
        for message in self._messages.values():
            new = message.new
            if (
                message.finished_at is None
                and new.destination == number
                and sender in (OPTOUT_ALL_SENDERS, new.source)
                and client in (None, new.client)
            ):
                changes.extend(self._cancel(message, now=now))
        return changes

    def _cancel(self, message: _Message, *, now: float) -> list[Change]:
        return [
            self._move(segment, SegmentState.CANCELLED, now=now)
            for segment in self._siblings(message)
            if transition(segment.state, SegmentEvent.CANCELLED) is not None
        ]

    async def message_id_of(self, client: str, ref: str) -> int | None:
        return self._by_ref.get((client, ref))

    async def status(self, message_id: int, client: str | None) -> MessageStatus | None:
        message = self._messages.get(message_id)
        if message is None or (client is not None and message.new.client != client):
            return None
        new = message.new
        segments = tuple(
            SegmentStatus(
                index=segment_index(s.id),
                state=s.state,
                attempts=s.attempts,
                command_status=s.command_status,
                carrier_message_id=s.carrier_message_id,
                bind=s.bind,
                receipt_stat=s.receipt_stat,
                receipt_err=s.receipt_err,
                done_at=s.done_at,
                updated_at=s.updated_at,
            )
            for s in self._siblings(message)
        )
        return MessageStatus(
            message_id=message.id,
            client=new.client,
            ref=new.ref,
            carrier=new.carrier,
            priority=new.priority,
            state=message_state(s.state for s in segments),
            created_at=message.created_at,
            not_before=new.not_before,
            expires_at=new.expires_at,
            registered_delivery=new.registered_delivery,
            segments=segments,
        )

    async def cancel(
        self, message_id: int, client: str | None, *, now: float
    ) -> tuple[MessageStatus, list[Change]] | None:
        self._commit()
        if await self.status(message_id, client) is None:
            return None
        changes = self._cancel(self._messages[message_id], now=now)
        found = await self.status(message_id, client)
        assert found is not None
        return found, changes

    async def recover(self, *, now: float) -> int:
        self._commit()
        inflight = [s for s in self._segments.values() if s.state is SegmentState.INFLIGHT]
        requeued = 0
        for segment in inflight:
            segment.attempts += 1  # it may have been sent (see Queue.recover)
            if any(s.state is SegmentState.FAILED for s in self._siblings(segment.message)):
                self._move(segment, SegmentState.CANCELLED, now=now)  # a fragment, never sent
            else:
                self._move(segment, SegmentState.QUEUED, now=now)
                requeued += 1
        return requeued

    async def rebase_schedules(self, back_s: float, *, now: float, since: float) -> int:
        self._commit()
        moved = 0
        for segment in self._segments.values():
            if segment.state is not SegmentState.SCHEDULED or segment.next_attempt_at <= now:
                continue
            if since <= segment.updated_at <= now:
                continue  # written since the step: in the new clock's time already
            not_before = segment.message.new.not_before
            if not_before is not None and segment.next_attempt_at <= not_before:
                continue
            segment.next_attempt_at = max(now, segment.next_attempt_at - back_s)
            self._place(segment)  # the earlier entry is skipped as stale when it comes up
            moved += 1
        for sid, (carrier, at) in list(self._queries.items()):
            queried = self._segments.get(sid)
            if at > now and queried is not None and not since <= queried.updated_at <= now:
                self._queries[sid] = (carrier, max(now, at - back_s))
        self._settled_until -= back_s
        return moved

    async def due_queries(self, carrier: str, *, now: float, limit: int) -> list[QueryTarget]:
        self._commit()
        due = sorted(
            (at, sid) for sid, (c, at) in self._queries.items() if c == carrier and at <= now
        )
        targets: list[QueryTarget] = []
        for _, sid in due:  # the stale are no part of `limit` (see sqlite_queries)
            segment = self._segments.get(sid)
            if segment is None or segment.state is not SegmentState.SUBMITTED or not segment.keys:
                del self._queries[sid]
                continue
            if len(targets) == limit:
                continue
            message_id = segment.carrier_message_id or segment.keys[0]
            targets.append(
                QueryTarget(sid, message_id, segment.keys[0], segment.body, segment.updated_at)
            )
        return targets

    async def schedule_queries(
        self, due: Sequence[tuple[int, float | None]], *, now: float
    ) -> None:
        self._commit()
        for sid, at in due:
            entry = self._queries.get(sid)
            if entry is None:
                continue
            if at is None:
                del self._queries[sid]
            else:
                self._queries[sid] = (entry[0], at)

    async def urgent_due(self, carrier: str, *, limit: int) -> list[float]:
        times = {
            segment.next_attempt_at
            for segment in self._segments.values()
            if segment.state is SegmentState.SCHEDULED
            and segment.message.new.carrier == carrier
            and segment.message.new.priority >= URGENT_PRIORITY
        }
        return sorted(times)[:limit]

    async def purge(self, before: float) -> int:
        self._commit()
        doomed = [
            m
            for m in self._messages.values()
            if m.finished_at is not None and m.finished_at < before
        ]
        for message in doomed:
            for segment in self._siblings(message):
                self._count(segment, segment.state, -1)
                del self._segments[segment.id]
                self._queries.pop(segment.id, None)
                for key in segment.keys:
                    if self._correlations.get((message.new.carrier, key)) == segment.id:
                        del self._correlations[message.new.carrier, key]
            del self._messages[message.id]
            if message.new.ref is not None:
                del self._by_ref[message.new.client, message.new.ref]
        self._inbound = [m for m in self._inbound if m.received_at >= before]
        kept = before - PARTS_KEPT_S
        self._parts = {k: p for k, p in self._parts.items() if p.received_at >= kept}
        for receipt_id, receipt in list(self._receipts.items()):
            if receipt.state != "held" and receipt.received_at < before:
                del self._receipts[receipt_id]
        return len(doomed)

    async def expire_waiting(
        self, *, now: float, after: tuple[float, int], limit: int
    ) -> tuple[list[Change], tuple[float, int], bool]:
        self._commit()
        due = sorted(
            (expires_at, message.id)
            for message in self._messages.values()
            if message.finished_at is None
            and (expires_at := message.new.expires_at) is not None
            and after < (expires_at, message.id)
            and expires_at <= now
        )
        changes: list[Change] = []
        cursor, blocked = after, False
        for key in due[:limit]:
            siblings = self._siblings(self._messages[key[1]])
            changes.extend(
                self._move(segment, SegmentState.EXPIRED, now=now)
                for segment in siblings
                if segment.state in WAITING_STATES
            )
            blocked = blocked or any(s.state is SegmentState.INFLIGHT for s in siblings)
            if not blocked:
                cursor = key
        return changes, cursor, blocked or len(due) <= limit

    async def finish_overdue(self, before: float, *, now: float) -> int:
        self._commit()
        finished = 0
        for message in self._messages.values():
            if (
                message.finished_at is None
                and message.created_at < before
                and receipts_overdue(
                    ((s.state, s.updated_at) for s in self._siblings(message)), before=before
                )
            ):
                message.finished_at = self._finish_time(now)
                finished += 1
        return finished

    async def reroute(
        self,
        carrier: str,
        pick: Callable[[str], str | None],
        *,
        now: float,
        limit: int = 1000,
        after: RerouteCursor | None = None,
    ) -> tuple[dict[str, int], RerouteCursor | None]:
        self._commit()
        self._promote_due(carrier, now=now)
        queued = sorted(
            (
                (-segment.message.new.priority, segment.message.new.client, segment.id)
                for segment in self._segments.values()
                if segment.state is SegmentState.QUEUED and segment.message.new.carrier == carrier
            ),
        )
        if after is not None:
            queued = [key for key in queued if key > (-after[0], after[1], after[2])]
        moved: dict[str, int] = {}
        done: set[int] = set()
        for _, _, sid in queued[:limit]:
            message = self._segments[sid].message
            if message.id in done:
                continue
            done.add(message.id)
            target = pick(message.new.destination)
            siblings = self._siblings(message)
            if (
                target is None
                or target == carrier
                or any(s.state is not SegmentState.QUEUED for s in siblings)
            ):
                continue
            for segment in siblings:
                self._count(segment, SegmentState.QUEUED, -1)
            message.new = dataclasses.replace(message.new, carrier=target)
            for segment in siblings:
                self._count(segment, SegmentState.QUEUED, +1)
                segment.updated_at = now
                self._place(segment)
            moved[target] = moved.get(target, 0) + 1
        if len(queued) <= limit:
            return moved, None
        priority, client, sid = queued[limit - 1]
        return moved, (-priority, client, sid)

    async def stats(self, *, now: float) -> QueueStats:
        oldest: dict[str, float] = {}  # carrier -> since when its oldest unsent work is due

        def note(segment: _Segment) -> None:
            new, created = segment.message.new, segment.message.created_at
            at = created if new.not_before is None else max(created, new.not_before)
            oldest[new.carrier] = min(at, oldest.get(new.carrier, at))

        for key, heap in self._pending.ready.items():
            due = [
                self._segments[sid]
                for sid in heap
                if sid in self._segments and self._segments[sid].state is SegmentState.QUEUED
            ]
            if due and key:
                note(min(due, key=lambda s: s.id))
        for segment in self._segments.values():  # waiting out a retry (see schema V9)
            if segment.state is SegmentState.SCHEDULED and segment.attempts > 0:
                note(segment)
        first_due = min(oldest.values(), default=None)
        tally = [r.state for r in self._receipts.values()]
        return QueueStats(
            segments=self._counts.by_state(),
            by_carrier=self._counts.by_carrier(),
            queued_depth=self._counts.depth,
            oldest_queued_age_s=None if first_due is None else max(0.0, now - first_due),
            receipts_held=tally.count("held"),
            receipts_unmatched=tally.count("unmatched"),
            receipts_dropped=tally.count("dropped"),
            commits=self._commits,
            oldest_age_by_carrier={c: max(0.0, now - t) for c, t in oldest.items()},
            depth_by_client=self._counts.depth_by_client(),
        )

    write_failure: QueueError | None = None  # nothing it writes can fail for storage's sake

    def queued_depth(self) -> int:
        return self._counts.depth

    def client_depth(self, client: str) -> int:
        return self._counts.client_depth(client)

    @property
    def commits(self) -> int:
        return self._commits

    @property
    def held_ended(self) -> dict[str, dict[str, int]]:
        return held_ended_by_carrier(self._held_ended)

    @property
    def commit_latency(self) -> Histogram:
        return self._commit_latency

    async def close(self) -> None:
        self._closed = True
