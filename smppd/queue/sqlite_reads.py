"""The SQLite backend's reads: status, inbound, opt-outs, and the in-memory state built at open.

Plain functions of a sqlite3 connection, run in the connection's thread; none of them writes.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable
from typing import Final

from smppd.queue.counts import SegmentCounts
from smppd.queue.model import (
    FINISHED_LOOK_AHEAD,
    OPTOUT_ALL_SENDERS,
    Finished,
    FinishedCursor,
    FinishedPage,
    Inbound,
    InboundPart,
    MessageStatus,
    OptOut,
    PartGroup,
    SegmentStatus,
    segment_id,
    segment_index,
)
from smppd.queue.optout_filter import OptOutFilter
from smppd.queue.sqlite_batch import MemoryState
from smppd.queue.states import SegmentState, message_state, segment_state

_MESSAGE: Final = """
    SELECT client, ref, carrier, priority, created_at, not_before, expires_at,
        registered_delivery, total
    FROM messages WHERE id = ?
"""
_SEGMENTS: Final = """
    SELECT id, state, attempts, command_status, carrier_message_id, bind, receipt_stat,
        receipt_err, done_at, updated_at
    FROM segments WHERE id BETWEEN ? AND ?
"""


def message_status(
    db: sqlite3.Connection, message_id: int, client: str | None
) -> MessageStatus | None:
    found = db.execute(_MESSAGE, (message_id,)).fetchone()
    if found is None or (client is not None and found[0] != client):
        return None
    owner, ref, carrier, priority, created_at, not_before, expires_at, delivery, total = found
    bounds = (segment_id(message_id, 0), segment_id(message_id, total - 1))
    segments = tuple(
        SegmentStatus(segment_index(sid), SegmentState(state), *rest)
        for sid, state, *rest in db.execute(_SEGMENTS, bounds)
    )
    return MessageStatus(
        message_id=message_id,
        client=owner,
        ref=ref,
        carrier=carrier,
        priority=priority,
        state=message_state(s.state for s in segments),
        created_at=created_at,
        not_before=not_before,
        expires_at=expires_at,
        registered_delivery=bool(delivery),
        segments=segments,
    )


def message_id_of(db: sqlite3.Connection, client: str, ref: str) -> int | None:
    found = db.execute(
        "SELECT id FROM messages INDEXED BY messages_by_ref WHERE client = ? AND ref = ?",
        (client, ref),
    ).fetchone()
    return None if found is None else int(found[0])


_HEAD: Final = """
    SELECT m.created_at, m.not_before
    FROM segments AS s CROSS JOIN messages AS m ON m.id = s.id >> 8
    WHERE s.carrier = ? AND s.priority = ? AND s.client = ? AND s.state = 'queued'
    ORDER BY s.id LIMIT 1
"""


_RETRYING: Final = """
    SELECT m.created_at, m.not_before
    FROM segments AS s INDEXED BY segments_retrying CROSS JOIN messages AS m ON m.id = s.id >> 8
    WHERE s.carrier = ? AND s.state = 'scheduled' AND s.attempts > 0
    ORDER BY s.id LIMIT 1
"""


def oldest_due(
    db: sqlite3.Connection, heads: Iterable[tuple[str, int, str]], carriers: Iterable[str] = ()
) -> dict[str, float]:
    """Per carrier, since when its longest-waiting unsent work has been due: over each client's
    queue head and, for carriers in `carriers`, the oldest segment waiting out a retry.

    One index seek each; a message counts from its not_before when it has one.
    """
    found = [(head[0], db.execute(_HEAD, head).fetchone()) for head in heads]
    found += [(c, db.execute(_RETRYING, (c,)).fetchone()) for c in carriers]
    oldest: dict[str, float] = {}
    for carrier, row in found:
        if row is not None:
            created_at, not_before = row
            due = created_at if not_before is None else max(created_at, not_before)
            oldest[carrier] = min(due, oldest.get(carrier, due))
    return oldest


# The literal priority lets the planner use the partial index segments_scheduled_urgent.
_URGENT_DUE: Final = """
    SELECT DISTINCT next_attempt_at FROM segments INDEXED BY segments_scheduled_urgent
    WHERE carrier = ? AND state = 'scheduled' AND priority >= 6
    ORDER BY next_attempt_at LIMIT ?
"""


def urgent_due(db: sqlite3.Connection, carrier: str, limit: int) -> list[float]:
    return [at for (at,) in db.execute(_URGENT_DUE, (carrier, limit))]


_INBOUND_COLUMNS: Final = """
    SELECT id, carrier, source, destination, text, data_coding, received_at, client, complete,
        keyword FROM inbound
"""
_INBOUND_SINCE: Final = _INBOUND_COLUMNS + "WHERE id > ? ORDER BY id LIMIT ?"
_CLIENT_INBOUND_SINCE: Final = (
    _INBOUND_COLUMNS
    + "INDEXED BY inbound_by_client WHERE client = ? AND id > ? ORDER BY id LIMIT ?"
)


# A message is due when it was accepted, or at its not_before if that is later (a schedule in
# the past is due at once): the day the daily cap counted it on.
_SEGMENTS_BY_DAY: Final = """
    SELECT CAST(due / 86400 AS INTEGER) AS day, source, sum(total) FROM (
        SELECT max(created_at, coalesce(not_before, created_at)) AS due, source, total
        FROM messages
    ) WHERE due >= ? GROUP BY day, source
"""


def segments_by_day(db: sqlite3.Connection, start: float) -> dict[int, dict[str, int]]:
    days: dict[int, dict[str, int]] = {}
    for day, source, n in db.execute(_SEGMENTS_BY_DAY, (start,)):
        days.setdefault(int(day), {})[source] = int(n)
    return days


def inbound_since(
    db: sqlite3.Connection, after_id: int, client: str | None, limit: int
) -> list[Inbound]:
    if client is None:
        rows = db.execute(_INBOUND_SINCE, (after_id, limit))
    else:
        rows = db.execute(_CLIENT_INBOUND_SINCE, (client, after_id, limit))
    return [
        Inbound(id_, carrier, source, to, text, dcs, at, owner, bool(complete), keyword)
        for id_, carrier, source, to, text, dcs, at, owner, complete, keyword in rows
    ]


def id_formats(db: sqlite3.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT carrier, receipt_format FROM id_formats"))


_SEEN: Final = """
    SELECT key, seen_at FROM inbound_seen WHERE carrier = ? AND until > ?
    ORDER BY seen_at DESC LIMIT ?
"""


def inbound_seen(
    db: sqlite3.Connection, carrier: str, now: float, limit: int
) -> list[tuple[bytes, float]]:
    return [(key, at) for key, at in db.execute(_SEEN, (carrier, now, limit))][::-1]


_HELD_PARTS: Final = """
    SELECT source, destination, data_coding, ref, total, seq, data, received_at, locking_shift,
        single_shift
    FROM inbound_parts WHERE carrier = ? ORDER BY received_at
"""


def held_inbound_parts(db: sqlite3.Connection, carrier: str) -> list[InboundPart]:
    return [
        InboundPart(
            PartGroup(carrier, source, destination, dcs, ref, total, locking, single),
            seq,
            data,
            at,
        )
        for source, destination, dcs, ref, total, seq, data, at, locking, single in db.execute(
            _HELD_PARTS, (carrier,)
        )
    ]


_LIST_OPTOUTS: Final = """
    SELECT sender, number, created_at FROM optouts
    WHERE (sender, number) > (?, ?) AND (? IS NULL OR sender = ?)
    ORDER BY sender, number LIMIT ?
"""
_IS_OPTED_OUT: Final = "SELECT 1 FROM optouts WHERE number = ? AND sender IN (?, ?) LIMIT 1"


def list_optouts(
    db: sqlite3.Connection, sender: str | None, after: tuple[str, str] | None, limit: int
) -> list[OptOut]:
    start = after or ("", "")
    return [
        OptOut(*row)
        for row in db.execute(_LIST_OPTOUTS, (start[0], start[1], sender, sender, limit))
    ]


def is_opted_out(db: sqlite3.Connection, sender: str, number: str) -> bool:
    return db.execute(_IS_OPTED_OUT, (number, sender, OPTOUT_ALL_SENDERS)).fetchone() is not None


_HIGH_WATER: Final = """
    SELECT max(coalesce((SELECT max(id) FROM messages), 0) + 1,
               coalesce((SELECT value FROM meta WHERE name = 'next_message_id'), 1)),
           max(coalesce((SELECT max(id) FROM inbound), 0) + 1,
               coalesce((SELECT value FROM meta WHERE name = 'next_inbound_id'), 1))
"""
_COUNTS: Final = "SELECT carrier, priority, client, state, n FROM segment_counts"
_RECEIPT_TALLY: Final = "SELECT state, COUNT(*) FROM pending_receipts GROUP BY state"
_NEWEST_HELD: Final = "SELECT max(received_at) FROM pending_receipts WHERE state = 'held'"
_LAST_FINISHED: Final = "SELECT max(finished_at) FROM messages"
_OPTOUTS: Final = "SELECT sender, number FROM optouts"
_OPTOUT_COUNT: Final = "SELECT COUNT(*) FROM optouts"


def load_memory(
    db: sqlite3.Connection, *, receipt_hold_s: float, max_held_receipts: int
) -> MemoryState:
    """The in-memory state of an opened store: small tables and maxima, never the backlog."""
    next_message_id, next_inbound_id = db.execute(_HIGH_WATER).fetchone()
    counts = SegmentCounts(
        ((carrier, priority, client, SegmentState(state)), n)
        for carrier, priority, client, state, n in db.execute(_COUNTS)
    )
    tally = dict(db.execute(_RECEIPT_TALLY).fetchall())
    (optout_count,) = db.execute(_OPTOUT_COUNT).fetchone()
    (newest_held,) = db.execute(_NEWEST_HELD).fetchone()
    (last_finished,) = db.execute(_LAST_FINISHED).fetchone()
    return MemoryState(
        next_message_id=next_message_id,
        next_inbound_id=next_inbound_id,
        counts=counts,
        receipts_held=tally.get("held", 0),
        receipts_unmatched=tally.get("unmatched", 0),
        receipts_dropped=tally.get("dropped", 0),
        optouts=OptOutFilter.build(db.execute(_OPTOUTS), optout_count),
        receipt_hold_s=receipt_hold_s,
        max_held_receipts=max_held_receipts,
        newest_held=-math.inf if newest_held is None else newest_held,
        last_finished_at=-math.inf if last_finished is None else last_finished,
    )


# A page looks at the messages after the cursor through the finished_at index (the rowid, the
# id, after it: the order finishing came in), at most :look of them, and picks its own from them
# in SQLite; the second statement finds the last one it looked at. Python sees only what it
# returns.
_FINISHED_SINCE: Final = """
    SELECT id, ref, finished_at FROM (
        SELECT id, client, ref, finished_at FROM messages INDEXED BY messages_finished
        WHERE finished_at IS NOT NULL AND finished_at >= :at AND (finished_at > :at OR id > :id)
        ORDER BY finished_at, id LIMIT :look
    )
    WHERE :client IS NULL OR client = :client ORDER BY finished_at, id LIMIT :limit
"""
_LAST_LOOKED_AT: Final = """
    SELECT count(*) OVER (), finished_at, id FROM (
        SELECT id, finished_at FROM messages INDEXED BY messages_finished
        WHERE finished_at IS NOT NULL AND finished_at >= :at AND (finished_at > :at OR id > :id)
        ORDER BY finished_at, id LIMIT :look
    )
    ORDER BY finished_at DESC, id DESC LIMIT 1
"""
# Every segment of the given messages (a message's segment ids are one range of 256).
_SEGMENT_STATES: Final = """
    SELECT s.id >> 8, s.state FROM json_each(?) AS m JOIN segments AS s
    ON s.id BETWEEN m.value << 8 AND ((m.value + 1) << 8) - 1
"""


def finished_since(
    db: sqlite3.Connection, after: FinishedCursor, client: str | None, limit: int
) -> FinishedPage:
    at, last = after
    look = limit * FINISHED_LOOK_AHEAD
    window = {"at": at, "id": last, "look": look, "client": client, "limit": limit}
    rows = db.execute(_FINISHED_SINCE, window).fetchall()
    states: dict[int, list[SegmentState]] = {}
    for message_id, state in db.execute(_SEGMENT_STATES, (json.dumps([r[0] for r in rows]),)):
        states.setdefault(message_id, []).append(segment_state(state))
    found = [
        Finished(message_id, ref, message_state(states.get(message_id, ())), finished_at)
        for message_id, ref, finished_at in rows
    ]
    if len(found) == limit:  # the next page starts after the last of these
        return FinishedPage(found, (found[-1].finished_at, found[-1].message_id), more=True)
    last_looked = db.execute(_LAST_LOOKED_AT, window).fetchone()
    if last_looked is None:  # nothing finished after `after`
        return FinishedPage(found, after, more=False)
    looked, last_at, last_id = last_looked
    return FinishedPage(found, (last_at, last_id), more=looked == look)
