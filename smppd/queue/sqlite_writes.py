"""The SQLite backend's write operations on messages and segments, each run inside a `Batch`.

Each function is one operation of the group-commit writer: it runs in the connection's thread,
inside the transaction the writer opened, and leaves its effects on memory in the batch. Reads
that drive a write (idempotency lookups, claim scans) happen here too, inside the same
transaction, so what they see cannot change before the write lands. Receipts and other writes
are in smppd.queue.sqlite_receipts and smppd.queue.sqlite_admin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from smppd.queue import sqlite_queries
from smppd.queue.fairness import take_fairly
from smppd.queue.model import (
    MAX_PRIORITY,
    Change,
    Claim,
    ClaimedSegment,
    Deferred,
    Enqueued,
    Failed,
    NewMessage,
    Outcome,
    Retry,
    Submitted,
    Unknown,
    claimed_on_arrival,
    message_id_of,
    segment_id,
    segment_index,
)
from smppd.queue.receipts import join_keys, split_keys
from smppd.queue.sqlite_batch import Batch, SegmentRow, execute_rows, json_ids
from smppd.queue.sqlite_reads import is_opted_out
from smppd.queue.sqlite_receipts import match_held, settle_late_part, sweep_held
from smppd.queue.states import (
    WAITING_STATES,
    SegmentEvent,
    SegmentState,
    arrival_state,
    keeps_its_end,
    transition,
    waiting_state,
)

_BY_REF: Final = "SELECT id, total FROM messages WHERE client = ? AND ref = ?"


def enqueue(
    batch: Batch, messages: Sequence[NewMessage], *, now: float, optouts_seen: int | None
) -> list[Enqueued]:
    """Stage the messages' rows (written by the next flush, together with other enqueues);
    see Queue.enqueue for `optouts_seen`."""
    # Transactions run one after another, each applied to memory before the next begins:
    # what is applied, and this transaction's own so far, is every opt-out written.
    written = batch.memory.optouts_applied + len(batch.optouts_added)
    recheck = optouts_seen is not None and written > optouts_seen
    results = []
    for message in messages:
        if message.ref is not None:
            ref = (message.client, message.ref)
            known = batch.by_ref.get(ref)
            if known is None:
                known = batch.db.execute(_BY_REF, ref).fetchone()
            if known is not None:
                batch.by_ref[ref] = known
                results.append(Enqueued(message_id=known[0], created=False, segments=known[1]))
                continue
        if recheck and any(
            is_opted_out(batch.db, sender, message.destination)
            for sender in (message.source, *message.opted_out_with)
        ):
            results.append(Enqueued(0, False, len(message.segments), opted_out=True))
            continue
        message_id = batch.next_message_id
        batch.next_message_id += 1
        total = len(message.segments)
        due = now if message.not_before is None else max(now, message.not_before)
        state = arrival_state(
            due, now=now, send_now=message.send_now, expires_at=message.expires_at
        )
        delivery = int(message.registered_delivery)
        row = (
            message_id,
            message.client,
            message.source,
            message.destination,
            message.carrier,
            message.priority,
            delivery,
            total,
            now,
        )
        if message.ref is None and message.not_before is None and message.expires_at is None:
            batch.new_plain_messages.append(row)
        else:
            batch.new_messages.append((*row, message.ref, message.not_before, message.expires_at))
        batch.new_segments.extend(
            (
                segment_id(message_id, index),
                message.carrier,
                message.priority,
                message.client,
                total,
                delivery,
                state.value,
                due,
                now,
                0,
            )
            for index in range(total)
        )
        # A bytearray binds directly; bytes go through sqlite3's adapter lookup (four times the
        # cost, about 0.4 us a value on a fast day). SQLite stores the same BLOB either way.
        batch.new_bodies.extend(
            (segment_id(message_id, index), bytearray(body))
            for index, body in enumerate(message.segments)
        )
        batch.counts[message.carrier, message.priority, message.client, state] += total
        if message.ref is not None:
            batch.by_ref[message.client, message.ref] = (message_id, total)
        claimed = claimed_on_arrival(message, message_id) if state is SegmentState.INFLIGHT else ()
        results.append(Enqueued(message_id, True, total, claimed))
    return results


# The claim walks the partial index segments_queued: (carrier, priority, client, id) of due rows.
# `s.id >> 8` is the message id (smppd.queue.model.segment_id); CROSS JOIN keeps segments outer.
_TOP_PRIORITY: Final = """
    SELECT priority FROM segments
    WHERE carrier = ? AND state = 'queued' AND priority < ?
    ORDER BY priority DESC LIMIT 1
"""
_NEXT_CLIENT: Final = """
    SELECT client FROM segments
    WHERE carrier = ? AND priority = ? AND state = 'queued' AND client > ?
    ORDER BY client LIMIT 1
"""
_FETCH_QUEUED: Final = """
    SELECT s.id, s.total, s.registered_delivery, s.attempts, b.body,
        m.source, m.destination, m.expires_at
    FROM segments AS s CROSS JOIN messages AS m ON m.id = s.id >> 8
        CROSS JOIN segment_bodies AS b ON b.id = s.id
    WHERE s.carrier = ? AND s.priority = ? AND s.client = ? AND s.state = 'queued'
    ORDER BY s.id LIMIT ?
"""
_MARK_INFLIGHT: Final = """
    UPDATE segments SET state = 'inflight', updated_at = ?
    WHERE id IN (SELECT value FROM json_each(?))
"""
_DUE_SCHEDULED: Final = """
    SELECT id, priority, client FROM segments
    WHERE carrier = ? AND state = 'scheduled' AND next_attempt_at <= ?
    ORDER BY next_attempt_at LIMIT ?
"""
_MARK_QUEUED: Final = """
    UPDATE segments SET state = 'queued', updated_at = ?
    WHERE id IN (SELECT value FROM json_each(?))
"""
_PROMOTE_AT_LEAST: Final = 256


def claim(batch: Batch, carrier: str, limit: int, *, now: float, min_priority: int = 0) -> Claim:
    """Move up to `limit` due segments (of `min_priority` or above) to inflight: by priority,
    then fairly, then by age."""
    batch.flush_inserts()
    promote_due(batch, carrier, limit, now=now)
    claimed: list[ClaimedSegment] = []
    expired: list[Change] = []
    priority = MAX_PRIORITY + 1
    while len(claimed) < limit:
        found = batch.db.execute(_TOP_PRIORITY, (carrier, priority)).fetchone()
        if found is None or found[0] < min_priority:
            break
        priority = found[0]
        remaining = limit - len(claimed)
        clients = _clients(batch, carrier, priority, remaining)

        def fetch(client: str, n: int, priority: int = priority) -> list[ClaimedSegment]:
            return _fetch(batch, carrier, priority, client, n, expired, now=now)

        taken, last = take_fairly(clients, remaining, fetch)
        claimed.extend(taken)
        if last is not None:
            batch.cursors[carrier, priority] = last
    batch.flush(now=now)
    return Claim(tuple(claimed), tuple(expired))


def promote_due(batch: Batch, carrier: str, limit: int, *, now: float) -> None:
    """Scheduled segments whose time has come become queued (claimable)."""
    rows = batch.db.execute(
        _DUE_SCHEDULED, (carrier, now, max(limit, _PROMOTE_AT_LEAST))
    ).fetchall()
    if not rows:
        return
    batch.db.execute(_MARK_QUEUED, (now, json_ids(sid for sid, _, _ in rows)))
    for _, priority, client in rows:
        batch.counts[carrier, priority, client, SegmentState.SCHEDULED] -= 1
        batch.counts[carrier, priority, client, SegmentState.QUEUED] += 1


def _clients(batch: Batch, carrier: str, priority: int, most: int) -> list[str]:
    """Up to `most` clients with due segments, starting after the last one served (wrapping)."""
    cursor = batch.cursor(carrier, priority)
    clients = _scan_clients(batch, carrier, priority, cursor or "", most, upto=None)
    if cursor is not None and len(clients) < most:
        clients += _scan_clients(batch, carrier, priority, "", most - len(clients), upto=cursor)
    return clients


def _scan_clients(
    batch: Batch, carrier: str, priority: int, after: str, most: int, *, upto: str | None
) -> list[str]:
    """Distinct clients > `after` (and <= `upto`), one index seek each."""
    found: list[str] = []
    while len(found) < most:
        row = batch.db.execute(_NEXT_CLIENT, (carrier, priority, after)).fetchone()
        if row is None or (upto is not None and row[0] > upto):
            break
        after = row[0]
        found.append(after)
    return found


def _fetch(
    batch: Batch,
    carrier: str,
    priority: int,
    client: str,
    n: int,
    expired: list[Change],
    *,
    now: float,
) -> list[ClaimedSegment]:
    """Claim up to n of one client's oldest due segments; expire those past their time."""
    taken: list[ClaimedSegment] = []
    while len(taken) < n:
        want = n - len(taken)
        rows = batch.db.execute(_FETCH_QUEUED, (carrier, priority, client, want)).fetchall()
        fresh = []
        stale = []
        for sid, total, delivery, attempts, body, source, destination, expires_at in rows:
            if expires_at is not None and expires_at <= now:
                stale.append(sid)
                continue
            fresh.append(sid)
            taken.append(
                ClaimedSegment(
                    segment_id=sid,
                    message_id=message_id_of(sid),
                    index=segment_index(sid),
                    total=total,
                    body=body,
                    client=client,
                    source=source,
                    destination=destination,
                    priority=priority,
                    attempts=attempts,
                    registered_delivery=bool(delivery),
                    expires_at=expires_at,
                )
            )
        if fresh:
            batch.db.execute(_MARK_INFLIGHT, (now, json_ids(fresh)))
            batch.counts[carrier, priority, client, SegmentState.QUEUED] -= len(fresh)
            batch.counts[carrier, priority, client, SegmentState.INFLIGHT] += len(fresh)
        if stale:
            expired.extend(_expire(batch, stale, now=now))
        if len(rows) < want:
            break
    return taken


def _expire(batch: Batch, ids: list[int], *, now: float) -> list[Change]:
    changes = []
    for sid in ids:
        row = batch.segment(sid)
        if row is not None and transition(row.state, SegmentEvent.EXPIRED) is not None:
            changes.append(batch.move(row, SegmentState.EXPIRED, now=now))
    batch.flush(now=now)
    return changes


_INSERT_CORRELATIONS: Final = (
    "INSERT OR REPLACE INTO correlations (carrier, key, segment_id) VALUES {values}"
)


def record(batch: Batch, outcomes: Sequence[Outcome], *, now: float) -> list[Change]:
    """Apply submit outcomes to inflight segments; outcomes that do not apply are skipped."""
    batch.flush_inserts()
    sweep_held(batch, now=now)
    changes: list[Change] = []
    correlations: list[tuple[str, str, int]] = []
    queries: list[tuple[int, str, float]] = []
    batch.prefetch(outcome.segment_id for outcome in outcomes)
    for outcome in outcomes:
        row = batch.segment(outcome.segment_id)
        if row is None:
            continue
        if isinstance(outcome, Submitted):
            if row.state is SegmentState.SUBMITTED:  # another copy's answer, late or not
                changes.extend(_another_copy(batch, row, outcome, now=now))
                continue
            change = _submitted(batch, row, outcome, correlations, now=now)
            if change is None:
                continue
            changes.append(change)
            if outcome.query_at is not None and row.correlation_keys:
                queries.append((row.id, row.carrier, outcome.query_at))
            if batch.held and outcome.carrier_message_keys and row.registered_delivery:
                execute_rows(batch.db, _INSERT_CORRELATIONS, correlations)
                correlations.clear()
                changes.extend(match_held(batch, row, outcome.carrier_message_keys, now=now))
            if outcome.whole_message and row.total > 1 and row.registered_delivery:
                late = settle_late_part(batch, row, now=now)
                if late is not None:
                    changes.append(late)
        else:
            target = _unsent(row, outcome, now=now)
            if (
                target is None
                and row.state is SegmentState.CANCELLED
                and not isinstance(outcome, Deferred)
            ):
                # Cancelled while on the wire: it went all the same, so its attempt counts and
                # its answer shows, though it stays cancelled.
                row.attempts += not isinstance(outcome, Retry) or outcome.counts
                row.command_status = (
                    None if isinstance(outcome, Unknown) else outcome.command_status
                )
                batch.touch(row)
            elif target is not None:
                if target in WAITING_STATES and row.total > 1 and _a_part_failed(batch, row):
                    # It was in flight when another part failed for good, which cancelled the
                    # parts then waiting: it is not sent again either.
                    target = SegmentState.CANCELLED
                changes.append(batch.move(row, target, now=now))
                if target is SegmentState.FAILED and row.total > 1:
                    changes.extend(_cancel_unsent_parts(batch, row, now=now))
    if correlations:
        execute_rows(batch.db, _INSERT_CORRELATIONS, correlations)
    if queries:
        execute_rows(batch.db, sqlite_queries.INSERT, queries)
    batch.flush(now=now)
    return changes


_CORRELATED: Final = "SELECT segment_id FROM correlations WHERE carrier = ? AND key = ?"
# A key another segment holds stays that one's (an SMSC that reuses ids).
_CORRELATE_IF_FREE: Final = (
    "INSERT OR IGNORE INTO correlations (carrier, key, segment_id) VALUES {values}"
)


def _another_copy(batch: Batch, row: SegmentRow, outcome: Submitted, *, now: float) -> list[Change]:
    """Another copy's acceptance of a submitted segment (one copy timed out and both went):
    nothing changes but its id, correlated too, since the SMSC sends a receipt for each copy;
    one held already (it came before this answer) is applied."""
    keys = outcome.carrier_message_keys
    if not (row.registered_delivery and keys):
        return []
    earlier = split_keys(row.correlation_keys) if row.correlation_keys else ()
    new = [key for key in keys if key not in earlier]
    if not new:
        return []
    execute_rows(batch.db, _CORRELATE_IF_FREE, [(row.carrier, key, row.id) for key in new])
    mine = tuple(
        key
        for key in new
        if batch.db.execute(_CORRELATED, (row.carrier, key)).fetchone() == (row.id,)
    )
    row.correlation_keys = join_keys(tuple(dict.fromkeys((*earlier, *mine))))
    batch.touch(row)
    return match_held(batch, row, mine, now=now) if mine and batch.held else []


def _a_part_failed(batch: Batch, row: SegmentRow) -> bool:
    return any(sibling.state is SegmentState.FAILED for sibling in batch.siblings(row))


def _cancel_unsent_parts(batch: Batch, row: SegmentRow, *, now: float) -> list[Change]:
    """A part failed for good: the handset can never put the message together, so the parts
    not yet sent are cancelled rather than sent and billed as fragments (a part in flight may
    still be accepted)."""
    return [
        batch.move(sibling, SegmentState.CANCELLED, now=now)
        for sibling in batch.siblings(row)
        if sibling.state in WAITING_STATES
    ]


def _submitted(
    batch: Batch,
    row: SegmentRow,
    outcome: Submitted,
    correlations: list[tuple[str, str, int]],
    *,
    now: float,
) -> Change | None:
    event = SegmentEvent.LATE_ACCEPTED if outcome.late else SegmentEvent.SUBMIT_ACCEPTED
    target = transition(row.state, event)
    if target is None:
        return None
    if outcome.late and keeps_its_end(
        row.state, row.receipt_stat, (s.state for s in batch.siblings(row))
    ):
        return None
    keys = outcome.carrier_message_keys
    row.attempts += not outcome.late  # a late one's attempt counted when it timed out
    row.command_status = 0
    row.bind = outcome.bind
    row.carrier_message_id = outcome.carrier_message_id or (keys[0] if keys else None)
    if row.registered_delivery and keys:
        # Only registered segments can expect a receipt; the others skip these writes.
        # The new id's first (queries ask by it); an earlier acceptance's stay correlated and
        # must go with the segment when it is purged.
        earlier = split_keys(row.correlation_keys) if row.correlation_keys else ()
        row.correlation_keys = join_keys(tuple(dict.fromkeys((*keys, *earlier))))
        correlations.extend((row.carrier, key, row.id) for key in keys)
    return batch.move(row, target, now=now)


_EVENTS: Final = {
    Retry: SegmentEvent.SUBMIT_RETRY,
    Unknown: SegmentEvent.SUBMIT_UNKNOWN,
    Failed: SegmentEvent.SUBMIT_FAILED,
    Deferred: SegmentEvent.DEFERRED,
}


def _unsent(
    row: SegmentRow, outcome: Retry | Failed | Unknown | Deferred, *, now: float
) -> SegmentState | None:
    """Update `row` for an outcome that leaves it unsent; the state to move it to, if any."""
    target = transition(row.state, _EVENTS[type(outcome)])
    if target is None:
        return None
    if isinstance(outcome, Deferred):
        row.next_attempt_at = outcome.next_attempt_at
        return waiting_state(outcome.next_attempt_at, now=now)
    row.attempts += not isinstance(outcome, Retry) or outcome.counts
    if isinstance(outcome, Failed):
        row.command_status = outcome.command_status
        return target
    row.command_status = outcome.command_status if isinstance(outcome, Retry) else None
    row.next_attempt_at = outcome.next_attempt_at
    return waiting_state(outcome.next_attempt_at, now=now)
