"""Receipt queries in the SQLite store: when each submitted segment is next to be asked about.

Runs in the writer's transactions like the other write modules. A `receipt_queries` row is
written with a segment's acceptance (Submitted.query_at) and is not touched when its receipt
comes: the row of a segment settled meanwhile is dropped when it comes due, so receipts, the
hot path, pay nothing for it. Those dropped rows are no part of a call's `limit` (the queries
a second the carrier allows): above that many receipts a second they would take it all, and
the segments that did lose their receipt would never be asked about.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from smppd.queue.model import QueryTarget
from smppd.queue.receipts import split_keys
from smppd.queue.sqlite_batch import Batch, json_ids
from smppd.queue.states import SegmentState

INSERT: Final = (
    "INSERT OR REPLACE INTO receipt_queries (segment_id, carrier, due_at) VALUES {values}"
)
# Due rows a call looks at for settled segments to drop, earliest first: a bound on the
# writer's time when receipts stop coming and live due rows pile up (they are asked about at
# the carrier's queries a second, and moved on as they are).
STALE_SCAN: Final = 10_000
_DROP_STALE: Final = """
    DELETE FROM receipt_queries WHERE segment_id IN (
        SELECT q.segment_id FROM (
            SELECT segment_id FROM receipt_queries
            WHERE carrier = ? AND due_at <= ? ORDER BY due_at LIMIT ?
        ) AS q
        LEFT JOIN segments AS s ON s.id = q.segment_id
        WHERE s.state IS NULL OR s.state != ?
    )
"""
_DUE: Final = """
    SELECT q.segment_id, s.carrier_message_id, s.correlation_keys, s.updated_at, b.body
    FROM receipt_queries AS q
    JOIN segments AS s ON s.id = q.segment_id
    LEFT JOIN segment_bodies AS b ON b.id = q.segment_id
    WHERE q.carrier = ? AND q.due_at <= ? AND s.state = ?
    ORDER BY q.due_at
    LIMIT ?
"""
_DELETE: Final = "DELETE FROM receipt_queries WHERE segment_id IN (SELECT value FROM json_each(?))"
_RESCHEDULE: Final = "UPDATE receipt_queries SET due_at = ? WHERE segment_id = ?"


def due_queries(batch: Batch, *, carrier: str, now: float, limit: int) -> list[QueryTarget]:
    """Up to `limit` of `carrier`'s segments due to be queried, earliest first; the due rows of
    segments no longer awaiting a receipt (settled, purged) are dropped on the way."""
    batch.flush_inserts()
    submitted = SegmentState.SUBMITTED.value
    batch.db.execute(_DROP_STALE, (carrier, now, STALE_SCAN, submitted))
    targets: list[QueryTarget] = []
    stale: list[int] = []
    for sid, message_id, keys, since, body in batch.db.execute(
        _DUE, (carrier, now, submitted, limit)
    ).fetchall():
        key = split_keys(keys)[:1]
        if not key or not message_id or body is None:
            stale.append(sid)
            continue
        targets.append(QueryTarget(sid, message_id, key[0], bytes(body), since))
    if stale:
        batch.db.execute(_DELETE, (json_ids(stale),))
    return targets


def schedule_queries(batch: Batch, *, due: Sequence[tuple[int, float | None]]) -> None:
    """Each segment's next query time; None: it is not to be queried again."""
    done = [sid for sid, at in due if at is None]
    if done:
        batch.db.execute(_DELETE, (json_ids(done),))
    again = [(at, sid) for sid, at in due if at is not None]
    if again:
        batch.db.executemany(_RESCHEDULE, again)
