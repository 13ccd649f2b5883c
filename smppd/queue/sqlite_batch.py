"""One write transaction of the SQLite backend: its row cache, bookkeeping and in-memory delta.

A `Batch` runs in the database connection's thread while the group-commit writer waits for it.
It reads the loop-owned `MemoryState` but never changes it: everything the transaction would change
in memory (counts, id allocators, receipt tallies, claim cursors) is collected here and applied by
the writer only after COMMIT, so a failed transaction (a full disk) leaves memory as it was.
The operations themselves live in smppd.queue.sqlite_writes.
"""

from __future__ import annotations

import functools
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Final

from smppd.queue.counts import CountKey, SegmentCounts
from smppd.queue.model import Change, finish_after, message_id_of, segment_id
from smppd.queue.optout_filter import OptOutFilter
from smppd.queue.states import (
    FINAL_STATES,
    ONE_SEGMENT,
    SegmentState,
    finished_states,
    is_finished,
    message_state,
    segment_state,
)


@dataclass
class MemoryState:
    """What the SQLite store keeps in memory: owned by the event loop, changed after commits."""

    next_message_id: int
    next_inbound_id: int
    counts: SegmentCounts
    receipts_held: int
    receipts_unmatched: int
    receipts_dropped: int
    optouts: OptOutFilter
    receipt_hold_s: float
    max_held_receipts: int
    cursors: dict[tuple[str, int], str] = field(default_factory=dict)
    held_ended: Counter[tuple[str, str]] = field(default_factory=Counter)  # (carrier, result)
    # Held receipts received up to here have had their other keys tried (settle_held), and
    # when the newest was received: settling has nothing to do until that passes this.
    settled_until: float = float("-inf")
    newest_held: float = float("-inf")
    # When held receipts were last swept for the hold time (sweep_held): settling with
    # nothing new to try still sweeps once sqlite.SWEEP_HELD_S has passed since.
    swept_at: float = float("-inf")
    # The latest finished_at written: a message finishing after the wall clock stepped back
    # takes it, so that the order messages finished in (Queue.finished_since) never goes back.
    last_finished_at: float = float("-inf")
    # Opt-outs added since open, as the filter has them (Queue.optouts_recorded).
    optouts_applied: int = 0


# Both read the columns SegmentRow unpacks, in its order.
_SELECT_SEGMENT: Final = """
    SELECT id, carrier, priority, client, total, registered_delivery, state, attempts,
        next_attempt_at, command_status, carrier_message_id, correlation_keys, bind,
        receipt_stat, receipt_err, done_at, updated_at
    FROM segments WHERE id = ?
"""
_SELECT_SEGMENTS: Final = """
    SELECT id, carrier, priority, client, total, registered_delivery, state, attempts,
        next_attempt_at, command_status, carrier_message_id, correlation_keys, bind,
        receipt_stat, receipt_err, done_at, updated_at
    FROM segments WHERE id BETWEEN ? AND ?
"""
# Many rows in one statement: the ids travel as one JSON array (constant SQL, one round trip).
_SELECT_SEGMENTS_IN: Final = """
    SELECT id, carrier, priority, client, total, registered_delivery, state, attempts,
        next_attempt_at, command_status, carrier_message_id, correlation_keys, bind,
        receipt_stat, receipt_err, done_at, updated_at
    FROM segments WHERE id IN (SELECT value FROM json_each(?))
"""
# In the order of SegmentRow.values(); VALUES columns are named column1, column2, ...
_UPDATE_SEGMENTS: Final = """
    UPDATE segments SET state = v.column1, attempts = v.column2, next_attempt_at = v.column3,
        command_status = v.column4, carrier_message_id = v.column5, correlation_keys = v.column6,
        bind = v.column7, updated_at = v.column8, receipt_stat = v.column10,
        receipt_err = v.column11, done_at = v.column12
    FROM (VALUES {values}) AS v WHERE segments.id = v.column9
"""
# The same for rows without receipt fields (every outcome's): NULL written in the SQL rather than
# bound, as sqlite3 binds None through its adapter lookup, two or three times an int's cost.
_UPDATE_UNRECEIPTED: Final = """
    UPDATE segments SET state = v.column1, attempts = v.column2, next_attempt_at = v.column3,
        command_status = v.column4, carrier_message_id = v.column5, correlation_keys = v.column6,
        bind = v.column7, updated_at = v.column8, receipt_stat = NULL, receipt_err = NULL,
        done_at = NULL
    FROM (VALUES {values}) AS v WHERE segments.id = v.column9
"""
SET_FINISHED: Final = """
    UPDATE messages SET finished_at = v.column1 FROM (VALUES {values}) AS v
    WHERE messages.id = v.column2
"""
_UPSERT_COUNT: Final = """
    INSERT INTO segment_counts (carrier, priority, client, state, n) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (carrier, priority, client, state) DO UPDATE SET n = n + excluded.n
"""
_DELETE_EMPTY_COUNT: Final = """
    DELETE FROM segment_counts WHERE carrier = ? AND priority = ? AND client = ? AND state = ?
"""


class SegmentRow:
    """A segment's row as read in this transaction, changed in place and written back at flush."""

    __slots__ = (
        "attempts",
        "bind",
        "carrier",
        "carrier_message_id",
        "client",
        "command_status",
        "correlation_keys",
        "done_at",
        "id",
        "message_id",
        "next_attempt_at",
        "original_state",
        "priority",
        "receipt_err",
        "receipt_stat",
        "registered_delivery",
        "state",
        "total",
        "updated_at",
    )

    def __init__(self, row: Any) -> None:
        (
            self.id,
            self.carrier,
            self.priority,
            self.client,
            self.total,
            registered_delivery,
            state,
            self.attempts,
            self.next_attempt_at,
            self.command_status,
            self.carrier_message_id,
            self.correlation_keys,
            self.bind,
            self.receipt_stat,
            self.receipt_err,
            self.done_at,
            self.updated_at,
        ) = row
        self.registered_delivery = bool(registered_delivery)
        self.state = segment_state(state)
        self.original_state = self.state
        self.message_id = message_id_of(self.id)  # read on every change: kept, not derived

    id: int
    message_id: int
    carrier: str
    priority: int
    client: str
    total: int
    registered_delivery: bool
    state: SegmentState
    original_state: SegmentState
    attempts: int
    next_attempt_at: float
    command_status: int | None
    carrier_message_id: str | None
    correlation_keys: str | None
    bind: str | None
    receipt_stat: str | None
    receipt_err: str | None
    done_at: float | None
    updated_at: float

    def values(self, *, receipt: bool = True) -> tuple[object, ...]:
        """The row's columns for _UPDATE_SEGMENTS; without its receipt fields (`receipt` false,
        for a row whose are all None) for _UPDATE_UNRECEIPTED."""
        head = (
            self.state.value,
            self.attempts,
            self.next_attempt_at,
            self.command_status,
            self.carrier_message_id,
            self.correlation_keys,
            self.bind,
            self.updated_at,
            self.id,
        )
        return (*head, self.receipt_stat, self.receipt_err, self.done_at) if receipt else head


class Batch:
    """The state of one write transaction (see the module docstring)."""

    def __init__(self, db: sqlite3.Connection, memory: MemoryState) -> None:
        self.db = db
        self.memory = memory
        # The delta applied to `memory` after COMMIT.
        self.counts: Counter[CountKey] = Counter()
        self.next_message_id = memory.next_message_id
        self.next_inbound_id = memory.next_inbound_id
        self.receipts_held = 0
        self.receipts_unmatched = 0
        self.receipts_dropped = 0
        self.held_ended: Counter[tuple[str, str]] = Counter()
        self.cursors: dict[tuple[str, int], str] = {}
        self.settled_until = memory.settled_until
        self.newest_held = memory.newest_held
        self.swept_at = memory.swept_at
        self.last_finished_at = memory.last_finished_at
        self.optouts_added: list[tuple[str, str]] = []
        self.new_optout_filter: OptOutFilter | None = None
        # Staged inserts (consecutive enqueues share one executemany) and the row cache.
        self.new_messages: list[tuple[object, ...]] = []
        self.new_plain_messages: list[tuple[object, ...]] = []  # no ref, schedule or validity
        self.new_segments: list[tuple[object, ...]] = []
        self.new_bodies: list[tuple[object, ...]] = []
        self.by_ref: dict[tuple[str, str], tuple[int, int]] = {}
        self._rows: dict[int, SegmentRow] = {}
        self._dirty: dict[int, SegmentRow] = {}
        self._touched: dict[int, SegmentRow] = {}  # message id -> one of its rows
        self._reopened: set[int] = set()  # messages that were unfinished again for a while

    # -- reads through the cache ------------------------------------------------------------

    def segment(self, sid: int) -> SegmentRow | None:
        row = self._rows.get(sid)
        if row is None:
            found = self.db.execute(_SELECT_SEGMENT, (sid,)).fetchone()
            if found is None:
                return None
            row = self._rows[sid] = SegmentRow(found)
        return row

    def prefetch(self, ids: Iterable[int]) -> None:
        """Read the rows of `ids` and of their messages' other segments in one or two queries."""
        missing = [sid for sid in ids if sid not in self._rows]
        for _ in range(2):  # the rows, then the siblings of multi-segment ones
            if not missing:
                return
            rows = self._rows
            for found in self.db.execute(_SELECT_SEGMENTS_IN, (json_ids(missing),)):
                if found[0] not in rows:
                    rows[found[0]] = SegmentRow(found)
            firsts = {
                segment_id(rows[sid].message_id, 0): rows[sid].total
                for sid in missing
                if sid in rows and rows[sid].total > 1
            }
            missing = [
                sid
                for first, total in firsts.items()
                for sid in range(first, first + total)
                if sid not in rows
            ]

    def message_segments(self, message_id: int, total: int) -> list[SegmentRow]:
        first, last = segment_id(message_id, 0), segment_id(message_id, total - 1)
        if any(sid not in self._rows for sid in range(first, last + 1)):
            for found in self.db.execute(_SELECT_SEGMENTS, (first, last)):
                self._rows.setdefault(found[0], SegmentRow(found))
        return [self._rows[sid] for sid in range(first, last + 1) if sid in self._rows]

    def siblings(self, row: SegmentRow) -> list[SegmentRow]:
        """The other segments of `row`'s message, in order."""
        if row.total == 1:
            return []
        return [s for s in self.message_segments(row.message_id, row.total) if s.id != row.id]

    # -- changes ------------------------------------------------------------------------------

    def move(self, row: SegmentRow, state: SegmentState, *, now: float) -> Change:
        """Set a cached row's state; the Change carries its message's state before and after."""
        was = row.state
        if row.total == 1:  # the common case, without building lists
            siblings = None
            before, after = ONE_SEGMENT[was], ONE_SEGMENT[state]
        else:
            siblings = self.message_segments(row.message_id, row.total)
            before = message_state([s.state for s in siblings])
        if state is not was:
            counts, carrier, priority, client = self.counts, row.carrier, row.priority, row.client
            counts[(carrier, priority, client, was)] -= 1
            counts[(carrier, priority, client, state)] += 1
            row.state = state
            if (
                was in FINAL_STATES
                and state not in FINAL_STATES
                and not is_finished(
                    [s.state for s in siblings] if siblings is not None else (state,),
                    registered_delivery=row.registered_delivery,
                )
            ):
                self._reopened.add(row.message_id)
        row.updated_at = now
        self._dirty[row.id] = row
        self._touched[row.message_id] = row
        if siblings is not None:
            after = message_state([s.state for s in siblings])
        return Change(
            message_id=row.message_id,
            segment_id=row.id,
            client=row.client,
            segment_state=state,
            before=before,
            after=after,
            command_status=row.command_status,
            receipt_stat=row.receipt_stat,
            receipt_err=row.receipt_err,
        )

    def touch(self, row: SegmentRow) -> None:
        """A cached row changed in place, not its state: written with the rest at flush."""
        self._dirty[row.id] = row

    def flush(self, *, now: float) -> None:
        """Write staged inserts and changed rows; mark messages that finished (or reopened)."""
        self.flush_inserts()
        if self._dirty:
            receipted, unreceipted = [], []
            for row in self._dirty.values():
                if row.receipt_stat is None and row.receipt_err is None and row.done_at is None:
                    unreceipted.append(row.values(receipt=False))
                else:
                    receipted.append(row.values())
            execute_rows(self.db, _UPDATE_SEGMENTS, receipted)
            execute_rows(self.db, _UPDATE_UNRECEIPTED, unreceipted)
        finished: list[tuple[float | None, int]] = []
        for message_id, row in self._touched.items():
            delivery = row.registered_delivery
            # A finished message that ends otherwise (a late acceptance of one that failed, or
            # was cancelled; a receipt for one that asked for none) is listed again too.
            if row.total == 1:  # the common case, tested against a set
                final = finished_states(delivery)
                was = row.original_state in final
                done = row.state in final
                ended_otherwise = ONE_SEGMENT[row.original_state] is not ONE_SEGMENT[row.state]
            else:
                rows = self.message_segments(message_id, row.total)
                originals = [r.original_state for r in rows]
                was = is_finished(originals, registered_delivery=delivery)
                done = is_finished([r.state for r in rows], registered_delivery=delivery)
                ended_otherwise = message_state(originals) is not message_state(
                    [r.state for r in rows]
                )
            if done and (not was or ended_otherwise or message_id in self._reopened):
                finished.append((self.finish_time(now), message_id))
            elif was and not done:
                finished.append((None, message_id))
        if finished:
            execute_rows(self.db, SET_FINISHED, finished)
        self._rows.clear()
        self._dirty.clear()
        self._touched.clear()
        self._reopened.clear()

    def finish_time(self, now: float) -> float:
        """The finished_at of a message finishing at `now`: after the last one (see
        model.finish_after)."""
        self.last_finished_at = finish_after(self.last_finished_at, now)
        return self.last_finished_at

    def flush_inserts(self) -> None:
        if self.new_messages or self.new_plain_messages:
            execute_rows(self.db, _INSERT_MESSAGE, self.new_messages)
            execute_rows(self.db, _INSERT_PLAIN_MESSAGE, self.new_plain_messages)
            execute_rows(self.db, _INSERT_SEGMENT, self.new_segments)
            execute_rows(self.db, _INSERT_BODY, self.new_bodies)
            self.new_messages.clear()
            self.new_plain_messages.clear()
            self.new_segments.clear()
            self.new_bodies.clear()

    def finish(self, *, now: float) -> None:
        """The last step before COMMIT: flush, and persist the count deltas."""
        self.flush(now=now)
        upserts = []
        empties = []
        for key, change in self.counts.items():
            if not change:
                continue
            upserts.append((key[0], key[1], key[2], key[3].value, change))
            if self.memory.counts.get(key) + change == 0:
                empties.append((key[0], key[1], key[2], key[3].value))
        if upserts:
            self.db.executemany(_UPSERT_COUNT, upserts)
        if empties:
            self.db.executemany(_DELETE_EMPTY_COUNT, empties)

    def apply_to(self, memory: MemoryState) -> None:
        """After COMMIT: make the in-memory state match what is now on disk."""
        memory.counts.apply(self.counts)
        memory.next_message_id = self.next_message_id
        memory.next_inbound_id = self.next_inbound_id
        memory.receipts_held += self.receipts_held
        memory.receipts_unmatched += self.receipts_unmatched
        memory.receipts_dropped += self.receipts_dropped
        memory.held_ended.update(self.held_ended)
        memory.cursors.update(self.cursors)
        memory.settled_until = self.settled_until
        memory.newest_held = self.newest_held
        memory.swept_at = self.swept_at
        memory.last_finished_at = self.last_finished_at
        if self.new_optout_filter is not None:
            memory.optouts = self.new_optout_filter
        else:
            for sender, number in self.optouts_added:
                memory.optouts.add(sender, number)
        memory.optouts_applied += len(self.optouts_added)

    # -- views of memory as this transaction has changed it -----------------------------------

    @property
    def held(self) -> int:
        return self.memory.receipts_held + self.receipts_held

    def cursor(self, carrier: str, priority: int) -> str | None:
        key = (carrier, priority)
        return self.cursors.get(key, self.memory.cursors.get(key))


# Messages with no ref, schedule or validity (most) leave those columns to their default, NULL,
# rather than bind None (see _UPDATE_UNRECEIPTED); the others give them after the rest.
_INSERT_PLAIN_MESSAGE: Final = """
    INSERT INTO messages (id, client, source, destination, carrier, priority,
        registered_delivery, total, created_at)
    VALUES {values}
"""
_INSERT_MESSAGE: Final = """
    INSERT INTO messages (id, client, source, destination, carrier, priority,
        registered_delivery, total, created_at, ref, not_before, expires_at)
    VALUES {values}
"""
_INSERT_SEGMENT: Final = """
    INSERT INTO segments (id, carrier, priority, client, total, registered_delivery, state,
        next_attempt_at, updated_at, attempts)
    VALUES {values}
"""
_INSERT_BODY: Final = "INSERT INTO segment_bodies (id, body) VALUES {values}"

# Rows per statement. sqlite3 releases the GIL around every step, and executemany steps once per
# row: with the event loop busy on the other thread, each step then waits up to a switch interval
# to get the GIL back (a 1,000-row executemany beside a busy thread took 1.7 s instead of 2.5
# ms). A statement over a multi-row VALUES list steps once for all its rows.
ROWS_PER_STATEMENT: Final = 64


def execute_rows(db: sqlite3.Connection, template: str, rows: Sequence[tuple[object, ...]]) -> None:
    """Run `template` (SQL with a `{values}` slot for a VALUES list) over `rows`, all of one
    width, in statements of up to ROWS_PER_STATEMENT rows."""
    if not rows:
        return
    width = len(rows[0])
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        db.execute(_values_sql(template, width, len(chunk)), list(chain.from_iterable(chunk)))


@functools.lru_cache(maxsize=4 * ROWS_PER_STATEMENT)
def _values_sql(template: str, width: int, rows: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return template.format(values=", ".join([row] * rows))


def json_ids(ids: Iterable[int]) -> str:
    """Integers as a JSON array, for `IN (SELECT value FROM json_each(?))`."""
    return "[" + ",".join(map(str, ids)) + "]"
