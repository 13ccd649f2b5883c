"""The SQLite backend's less frequent writes: cancels, opt-outs, inbound, recovery and retention.

Each runs inside a `Batch` of the group-commit writer, like the hot-path operations in
smppd.queue.sqlite_writes, so every write shares the one mechanism.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from smppd.queue.model import (
    OPTOUT_ALL_SENDERS,
    PARTS_KEPT_S,
    URGENT_PRIORITY,
    Change,
    InboundIn,
    InboundPart,
    MessageStatus,
    RerouteCursor,
    Seen,
    message_id_of,
    segment_id,
)
from smppd.queue.optout_filter import OptOutFilter
from smppd.queue.receipts import split_keys
from smppd.queue.sqlite_batch import SET_FINISHED, Batch, execute_rows
from smppd.queue.sqlite_reads import message_status
from smppd.queue.sqlite_writes import promote_due
from smppd.queue.states import (
    WAITING_STATES,
    SegmentEvent,
    SegmentState,
    receipts_overdue,
    transition,
)

_OWNER: Final = "SELECT client, total FROM messages WHERE id = ?"


def cancel(
    batch: Batch, message_id: int, client: str | None, *, now: float
) -> tuple[MessageStatus, list[Change]] | None:
    batch.flush_inserts()
    found = batch.db.execute(_OWNER, (message_id,)).fetchone()
    if found is None or (client is not None and found[0] != client):
        return None
    changes = _cancel_message(batch, message_id, found[1], now=now)
    batch.flush(now=now)
    status = message_status(batch.db, message_id, client)
    assert status is not None  # its row was just read, in this transaction
    return status, changes


def _cancel_message(batch: Batch, message_id: int, total: int, *, now: float) -> list[Change]:
    return [
        batch.move(row, SegmentState.CANCELLED, now=now)
        for row in batch.message_segments(message_id, total)
        if transition(row.state, SegmentEvent.CANCELLED) is not None
    ]


_UNFINISHED_TO: Final = """
    SELECT id, source, client, total FROM messages WHERE destination = ? AND finished_at IS NULL
"""


def cancel_queued_to(
    batch: Batch, sender: str, number: str, *, now: float, client: str | None = None
) -> list[Change]:
    """Cancel unsent segments to `number` from `sender` ("*": from any sender), of `client`'s
    messages only if given."""
    batch.flush_inserts()
    changes = []
    rows = batch.db.execute(_UNFINISHED_TO, (number,)).fetchall()
    for message_id, source, owner, total in rows:
        if sender in (OPTOUT_ALL_SENDERS, source) and client in (None, owner):
            changes.extend(_cancel_message(batch, message_id, total, now=now))
    batch.flush(now=now)
    return changes


_INSERT_INBOUND: Final = """
    INSERT INTO inbound (
        id, carrier, source, destination, text, data_coding, received_at, client, complete,
        keyword
    )
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


_HOLD_PART: Final = """
    INSERT OR IGNORE INTO inbound_parts
        (carrier, source, destination, data_coding, ref, total, seq, data, received_at,
         locking_shift, single_shift)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_FORGET_PART: Final = """
    DELETE FROM inbound_parts WHERE carrier = ? AND source = ? AND destination = ?
        AND data_coding = ? AND ref = ? AND total = ? AND seq = ? AND data = ?
"""
_REMEMBER: Final = """
    INSERT OR REPLACE INTO inbound_seen (carrier, key, seen_at, until) VALUES (?, ?, ?, ?)
"""
_FORGET_SEEN: Final = "DELETE FROM inbound_seen WHERE until <= ?"


def _remember(batch: Batch, carrier: str, seen: Seen | None, now: float) -> None:
    if seen is not None:
        batch.db.execute(_REMEMBER, (carrier, seen.key, now, seen.until))


# Through the index of waiting segments (a sender's deferred work is among them), each one's
# message looked up by its id: no scan of the messages.
_BRING_FORWARD: Final = """
    UPDATE segments INDEXED BY segments_scheduled SET next_attempt_at = :now
    WHERE state = 'scheduled' AND next_attempt_at > :now AND attempts = 0
        AND command_status IS NULL AND priority < :urgent
        AND EXISTS (
            SELECT 1 FROM messages AS m WHERE m.id = segments.id >> 8 AND m.source = :source
            AND coalesce(m.not_before, 0) <= :now
        )
"""


def bring_forward(batch: Batch, source: str, now: float) -> int:
    parameters = {"now": now, "source": source, "urgent": URGENT_PRIORITY}
    return batch.db.execute(_BRING_FORWARD, parameters).rowcount


def forget_seen(batch: Batch, now: float) -> int:
    return batch.db.execute(_FORGET_SEEN, (now,)).rowcount


def hold_inbound_part(batch: Batch, part: InboundPart) -> None:
    g = part.group
    _remember(batch, g.carrier, part.seen, part.received_at)
    batch.db.execute(
        _HOLD_PART,
        (
            g.carrier,
            g.source,
            g.destination,
            g.data_coding,
            g.ref,
            g.total,
            part.seq,
            part.data,
            part.received_at,
            g.locking_shift,
            g.single_shift,
        ),
    )


def store_inbound(batch: Batch, inbound: InboundIn) -> int:
    _remember(batch, inbound.carrier, inbound.seen, inbound.received_at)
    if (g := inbound.parts) is not None:
        key = (g.carrier, g.source, g.destination, g.data_coding, g.ref, g.total)
        batch.db.executemany(_FORGET_PART, [(*key, seq, data) for seq, data in inbound.held])
    inbound_id = batch.next_inbound_id
    batch.next_inbound_id += 1
    batch.db.execute(
        _INSERT_INBOUND,
        (
            inbound_id,
            inbound.carrier,
            inbound.source,
            inbound.destination,
            inbound.text,
            inbound.data_coding,
            inbound.received_at,
            inbound.client,
            inbound.complete,
            inbound.keyword,
        ),
    )
    return inbound_id


_ADD_OPTOUT: Final = "INSERT OR IGNORE INTO optouts (sender, number, created_at) VALUES (?, ?, ?)"
_REMOVE_OPTOUT: Final = "DELETE FROM optouts WHERE sender = ? AND number = ?"
_ALL_OPTOUTS: Final = "SELECT sender, number FROM optouts"
_COUNT_OPTOUTS: Final = "SELECT COUNT(*) FROM optouts"


def add_optout(batch: Batch, sender: str, number: str, *, now: float) -> bool:
    if batch.db.execute(_ADD_OPTOUT, (sender, number, now)).rowcount == 0:
        return False
    batch.optouts_added.append((sender, number))
    if batch.memory.optouts.count + len(batch.optouts_added) > batch.memory.optouts.capacity:
        batch.new_optout_filter = load_optout_filter(batch)
    return True


def load_optout_filter(batch: Batch) -> OptOutFilter:
    (count,) = batch.db.execute(_COUNT_OPTOUTS).fetchone()
    return OptOutFilter.build(batch.db.execute(_ALL_OPTOUTS), count)


def remove_optout(batch: Batch, sender: str, number: str) -> bool:
    return batch.db.execute(_REMOVE_OPTOUT, (sender, number)).rowcount > 0


_SET_ID_FORMAT: Final = """
    INSERT INTO id_formats (carrier, receipt_format, learned_at) VALUES (?, ?, ?)
    ON CONFLICT (carrier) DO UPDATE SET receipt_format = excluded.receipt_format,
        learned_at = excluded.learned_at
"""


def set_id_format(batch: Batch, carrier: str, learned: str | None, *, now: float) -> None:
    if learned is None:
        batch.db.execute("DELETE FROM id_formats WHERE carrier = ?", (carrier,))
    else:
        batch.db.execute(_SET_ID_FORMAT, (carrier, learned, now))


_INFLIGHT: Final = """
    SELECT id, carrier, priority, client, total FROM segments WHERE state = 'inflight'
"""
_REQUEUE: Final = """
    UPDATE segments SET state = 'queued', attempts = attempts + 1, updated_at = ? WHERE id = ?
"""


def recover(batch: Batch, *, now: float) -> int:
    """Segments left inflight by a stopped process go back to queued (they are sent again),
    except parts of a message another part of which failed for good: cancelled, as `record`
    would have had them, rather than sent and billed as fragments no handset can join.

    Either way one attempt is counted, as for a submit lost with its connection: it may have
    been sent, even accepted, and one that then expires or is cancelled must not read as
    never tried.

    A full scan, once at startup: an index of inflight rows would cost every claim and outcome.
    """
    batch.flush_inserts()
    rows = batch.db.execute(_INFLIGHT).fetchall()
    cancelled = set()
    for sid, _, _, _, total in rows:
        if total == 1:
            continue
        parts = batch.message_segments(message_id_of(sid), total)
        if any(part.state is SegmentState.FAILED for part in parts):
            (row,) = [part for part in parts if part.id == sid]
            row.attempts += 1
            batch.move(row, SegmentState.CANCELLED, now=now)
            cancelled.add(sid)
    requeued = [row for row in rows if row[0] not in cancelled]
    batch.db.executemany(_REQUEUE, [(now, row[0]) for row in requeued])
    for _, carrier, priority, client, _ in requeued:
        batch.counts[carrier, priority, client, SegmentState.INFLIGHT] -= 1
        batch.counts[carrier, priority, client, SegmentState.QUEUED] += 1
    batch.flush(now=now)
    return len(requeued)


# Waiting segments whose time was computed from the clock (retries, deferrals) move back by the
# step, not below now. A segment past its message's not_before was due once, which in real time
# is past however the clock reads now; one waiting for it still keeps it. Rows written since
# the step (updated_at from ?3 on) are in the new clock's time already.
_REBASE: Final = """
    UPDATE segments SET next_attempt_at = max(?1, next_attempt_at - ?2)
    FROM messages AS m
    WHERE segments.state = 'scheduled' AND segments.next_attempt_at > ?1
        AND NOT (segments.updated_at >= ?3 AND segments.updated_at <= ?1)
        AND m.id = segments.id >> 8
        AND (m.not_before IS NULL OR segments.next_attempt_at > m.not_before)
"""

# Query times (carriers[].receipt_queries) alike, by their segment's last write.
_REBASE_QUERIES: Final = """
    UPDATE receipt_queries SET due_at = max(?1, due_at - ?2)
    FROM segments AS s
    WHERE receipt_queries.due_at > ?1 AND s.id = receipt_queries.segment_id
        AND NOT (s.updated_at >= ?3 AND s.updated_at <= ?1)
"""


def rebase_schedules(batch: Batch, *, back_s: float, now: float, since: float) -> int:
    batch.flush_inserts()
    moved = batch.db.execute(_REBASE, (now, back_s, since)).rowcount
    batch.db.execute(_REBASE_QUERIES, (now, back_s, since))
    # Held receipts received in the span the clock now goes through again get their turn.
    batch.settled_until -= back_s
    batch.swept_at -= back_s
    return int(moved)


_SAVE_HIGH_WATER: Final = """
    INSERT INTO meta (name, value) VALUES (?, ?)
    ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)
"""
_FINISHED_BEFORE: Final = """
    SELECT id, total FROM messages WHERE finished_at < ? ORDER BY finished_at LIMIT ?
"""
_DOOMED_SEGMENTS: Final = """
    SELECT id, carrier, priority, client, state, correlation_keys FROM segments
    WHERE id BETWEEN ? AND ?
"""
_DELETE_SEGMENTS: Final = "DELETE FROM segments WHERE id BETWEEN ? AND ?"
_DELETE_BODIES: Final = "DELETE FROM segment_bodies WHERE id BETWEEN ? AND ?"
# Rows go when they come due, but only for a carrier that still queries (see schema V14).
_DELETE_QUERIES: Final = "DELETE FROM receipt_queries WHERE segment_id BETWEEN ? AND ?"
_DELETE_MESSAGE: Final = "DELETE FROM messages WHERE id = ?"
_FORGET: Final = "DELETE FROM correlations WHERE carrier = ? AND key = ? AND segment_id = ?"
_DELETE_INBOUND: Final = """
    DELETE FROM inbound WHERE id IN
        (SELECT id FROM inbound WHERE received_at < ? ORDER BY id LIMIT ?)
"""
_OLD_RECEIPTS: Final = """
    SELECT id, state FROM pending_receipts
    WHERE state != 'held' AND received_at < ? LIMIT ?
"""
_DELETE_RECEIPT: Final = "DELETE FROM pending_receipts WHERE id = ?"
# Parts a running handler has not given up: only a removed carrier's get this old.
_DELETE_OLD_PARTS: Final = "DELETE FROM inbound_parts WHERE received_at < ?"


def purge_step(batch: Batch, before: float, limit: int) -> tuple[int, bool]:
    """Delete up to `limit` finished messages (and old inbound and unmatched receipts).

    Returns how many messages went and whether more may remain. High-water marks of the ids are
    saved first, so ids of deleted rows are never handed out again.
    """
    batch.flush_inserts()
    batch.db.executemany(
        _SAVE_HIGH_WATER,
        [("next_message_id", batch.next_message_id), ("next_inbound_id", batch.next_inbound_id)],
    )
    messages = batch.db.execute(_FINISHED_BEFORE, (before, limit)).fetchall()
    for message_id, total in messages:
        bounds = (segment_id(message_id, 0), segment_id(message_id, total - 1))
        for sid, carrier, priority, client, state, keys in batch.db.execute(
            _DOOMED_SEGMENTS, bounds
        ).fetchall():
            batch.counts[carrier, priority, client, SegmentState(state)] -= 1
            if keys:
                batch.db.executemany(_FORGET, [(carrier, key, sid) for key in split_keys(keys)])
        batch.db.execute(_DELETE_SEGMENTS, bounds)
        batch.db.execute(_DELETE_BODIES, bounds)
        batch.db.execute(_DELETE_QUERIES, bounds)
        batch.db.execute(_DELETE_MESSAGE, (message_id,))
    inbound = batch.db.execute(_DELETE_INBOUND, (before, limit)).rowcount
    batch.db.execute(_DELETE_OLD_PARTS, (before - PARTS_KEPT_S,))
    receipts = batch.db.execute(_OLD_RECEIPTS, (before, limit)).fetchall()
    for receipt_id, state in receipts:
        batch.db.execute(_DELETE_RECEIPT, (receipt_id,))
        batch.receipts_unmatched -= state == "unmatched"
        batch.receipts_dropped -= state == "dropped"
    more = max(len(messages), inbound, len(receipts)) >= limit
    return len(messages), more


_OPEN_AFTER: Final = """
    SELECT id, created_at, total FROM messages
    WHERE finished_at IS NULL AND (created_at, id) > (?, ?) AND created_at < ?
    ORDER BY created_at, id LIMIT ?
"""
_SEGMENT_STATES: Final = "SELECT state, updated_at FROM segments WHERE id BETWEEN ? AND ?"


_EXPIRING_AFTER: Final = """
    SELECT id, expires_at, total FROM messages
    WHERE expires_at IS NOT NULL AND finished_at IS NULL
        AND (expires_at, id) > (?, ?) AND expires_at <= ?
    ORDER BY expires_at, id LIMIT ?
"""


def expire_waiting_step(
    batch: Batch, after: tuple[float, int], limit: int, *, now: float
) -> tuple[list[Change], tuple[float, int], bool]:
    """`Queue.expire_waiting` for up to `limit` messages: the changes, the cursor, and whether
    the pass is done."""
    batch.flush_inserts()
    messages = batch.db.execute(_EXPIRING_AFTER, (*after, now, limit)).fetchall()
    changes: list[Change] = []
    cursor, blocked = after, False
    for message_id, expires_at, total in messages:
        rows = batch.message_segments(message_id, total)
        changes.extend(
            batch.move(row, SegmentState.EXPIRED, now=now)
            for row in rows
            if row.state in WAITING_STATES
        )
        blocked = blocked or any(row.state is SegmentState.INFLIGHT for row in rows)
        if not blocked:
            cursor = (expires_at, message_id)
    batch.flush(now=now)
    return changes, cursor, blocked or len(messages) < limit


def finish_overdue_step(
    batch: Batch, before: float, after: tuple[float, int], limit: int, *, now: float
) -> tuple[int, tuple[float, int] | None]:
    """Finish up to `limit` open messages, created after the `after` cursor, whose receipts are
    overdue (see `receipts_overdue`). Returns how many, and the cursor to go on from (None: done).

    Open messages still to be sent are passed over, so the cursor walks on past them.
    """
    batch.flush_inserts()
    messages = batch.db.execute(_OPEN_AFTER, (*after, before, limit)).fetchall()
    finished = []
    for message_id, _, total in messages:
        bounds = (segment_id(message_id, 0), segment_id(message_id, total - 1))
        segments = batch.db.execute(_SEGMENT_STATES, bounds).fetchall()
        if receipts_overdue(((SegmentState(s), at) for s, at in segments), before=before):
            finished.append((batch.finish_time(now), message_id))
    if finished:
        execute_rows(batch.db, SET_FINISHED, finished)
    if len(messages) < limit:
        return len(finished), None
    last_id, last_created, _ = messages[-1]
    return len(finished), (last_created, last_id)


_INFLIGHT_ONE: Final = (
    "SELECT carrier, priority, client FROM segments WHERE id = ? AND state = 'inflight'"
)


def requeue(batch: Batch, ids: list[int], *, now: float) -> int:
    """Put claimed segments nobody will send back to queued (a claim whose caller went away)."""
    batch.flush_inserts()
    requeued = []
    for sid in ids:
        found = batch.db.execute(_INFLIGHT_ONE, (sid,)).fetchone()
        if found is not None:
            carrier, priority, client = found
            batch.counts[carrier, priority, client, SegmentState.INFLIGHT] -= 1
            batch.counts[carrier, priority, client, SegmentState.QUEUED] += 1
            requeued.append((now, sid))
    batch.db.executemany(_REQUEUE, requeued)
    return len(requeued)


# One priority of a carrier's due segments, in the order of the segments_queued index.
_QUEUED_FROM: Final = """
    SELECT s.id, s.client, m.destination, m.total
    FROM segments AS s CROSS JOIN messages AS m ON m.id = s.id >> 8
    WHERE s.carrier = ? AND s.priority = ? AND s.state = 'queued' AND (s.client, s.id) > (?, ?)
    ORDER BY s.client, s.id LIMIT ?
"""
_STATES_OF: Final = "SELECT state FROM segments WHERE id BETWEEN ? AND ?"
_SET_MESSAGE_CARRIER: Final = "UPDATE messages SET carrier = ? WHERE id = ?"
_SET_SEGMENTS_CARRIER: Final = (
    "UPDATE segments SET carrier = ?, updated_at = ? WHERE id BETWEEN ? AND ?"
)


def reroute_step(
    batch: Batch,
    carrier: str,
    pick: Callable[[str], str | None],
    limit: int,
    after: RerouteCursor | None,
    *,
    now: float,
) -> tuple[dict[str, int], RerouteCursor | None]:
    """Move `carrier`'s waiting messages to `pick(destination)` (None: they stay), looking at up
    to `limit` due segments from the `after` cursor, urgent priorities first. Only a message whose
    segments are all queued moves, whole, so no part of it is with the SMSC or a send loop.
    Returns the messages moved per carrier, and the cursor to go on from (None: done).
    Scheduled segments that are due (retries, say) are waiting too: they become queued first."""
    batch.flush(now=now)
    promote_due(batch, carrier, limit, now=now)
    moved: dict[str, int] = {}
    queued = {p for c, p, _ in batch.memory.counts.queued_keys() if c == carrier}
    queued.update(
        key[1]
        for key, n in batch.counts.items()
        if key[0] == carrier and key[3] is SegmentState.QUEUED and n > 0
    )
    priorities = sorted(queued, reverse=True)
    seen = 0
    for priority in priorities:
        if after is not None and priority > after[0]:
            continue
        start = after[1:] if after is not None and priority == after[0] else ("", 0)
        rows = batch.db.execute(_QUEUED_FROM, (carrier, priority, *start, limit - seen)).fetchall()
        done: set[int] = set()
        for sid, client, destination, total in rows:
            message_id = message_id_of(sid)
            if message_id in done:
                continue
            done.add(message_id)
            target = pick(destination)
            if target is None or target == carrier:
                continue
            bounds = (segment_id(message_id, 0), segment_id(message_id, total - 1))
            states = [state for (state,) in batch.db.execute(_STATES_OF, bounds)]
            if len(states) != total or any(state != "queued" for state in states):
                continue
            batch.db.execute(_SET_MESSAGE_CARRIER, (target, message_id))
            batch.db.execute(_SET_SEGMENTS_CARRIER, (target, now, *bounds))
            batch.counts[carrier, priority, client, SegmentState.QUEUED] -= total
            batch.counts[target, priority, client, SegmentState.QUEUED] += total
            moved[target] = moved.get(target, 0) + 1
        seen += len(rows)
        if seen >= limit:
            _, client, _, _ = rows[-1]
            return moved, (priority, client, rows[-1][0])
    return moved, None
