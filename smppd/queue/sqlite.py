"""The default queue backend: SQLite (WAL, synchronous=FULL) through one aiosqlite connection.

This module is the asyncio shell: it owns the connection, the group-commit writer and the
translation of sqlite3 errors into QueueError. Every write (enqueue, claim, outcome, receipt,
inbound, opt-out, cancel, recovery, purge) is queued to the single writer task, which takes
everything pending, runs it in the connection's thread as one transaction, commits (one fsync),
then resolves each caller's future: an acknowledgement always follows the COMMIT that made it
durable, and N concurrent callers share one fsync. The SQL lives in the sqlite_* modules.

Reads that page through many rows (the finished and inbound pages, opt-out lists, a day's
counts by sender) go through a second, query-only connection with a thread of its own: WAL lets
it read the last committed state beside a transaction in progress, so a page of 1,000 finished
messages (5-10 ms) neither waits for the writer's transactions nor holds them up (and with them
every window slot). Lookups of a row or a few (status, opt-out checks, due times) stay on the
writer's connection, between its transactions: its cache holds the pages just written, which
every commit makes another connection read afresh. With a service polling status 500 times a
second during a run, status on the reader answered in 3 instead of 7 ms but cost the daemon 10%
more CPU a message and 6% of its rate. An acknowledged write is committed before its caller
hears of it, so a read that follows sees it on either connection.

Writes come in three lanes. Bulk writes (enqueues of many messages, purge steps) are the big
ones and nobody is waiting on a wire for them; everything else (claims, outcomes, receipts,
single submits) is small and on the path of traffic. Each transaction takes the small ones first
and adds bulk writes up to `bulk_batch` (at least one, so bulk always progresses), so a claim
waits for at most one bounded transaction, never for a backlog of bulk enqueues. Urgent writes
(a few messages of URGENT_PRIORITY and up, and the claims that take only those) get a
transaction of their own ahead of the rest: an OTP costs one extra small commit instead of
waiting inside a transaction full of other traffic's outcomes and receipts. Within a
transaction, receipts are applied after the other writes, so one queued just before the outcome
that opens its correlation still matches it.

Transactions start at most one per `commit_interval_s` (urgent writes do not wait). Under load a
transaction takes longer than that anyway; at a few hundred or thousand messages a second the
writer would otherwise commit each write on its own, as soon as the last commit ended, and the
thread hand-offs and fsyncs of those commits were most of the daemon's CPU (at 1,000 msg/s, 86%
of a core against 55% with 2 ms, for about half a millisecond more on a durable ack).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import partial
from os import PathLike
from typing import Any, Final, Generic, TypeVar, cast

import aiosqlite

from smppd.histogram import Histogram
from smppd.pathlock import PathLock
from smppd.queue import (
    sqlite_admin,
    sqlite_queries,
    sqlite_reads,
    sqlite_receipts,
    sqlite_writes,
)
from smppd.queue.base import ENQUEUE_MAX
from smppd.queue.errors import (
    QueueClosedError,
    QueueError,
    StorageBusyError,
    StorageCorruptError,
    StorageFullError,
)
from smppd.queue.model import (
    OPTOUT_ALL_SENDERS,
    URGENT_PRIORITY,
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
from smppd.queue.owner import OwnerLock
from smppd.queue.receipts import held_ended_by_carrier
from smppd.queue.schema import migrate
from smppd.queue.sqlite_batch import Batch, MemoryState
from smppd.queue.states import SegmentState

T = TypeVar("T")

DEFAULT_RECEIPT_HOLD_S: Final = 600.0
DEFAULT_MAX_HELD_RECEIPTS: Final = 10_000
DEFAULT_MAX_BATCH: Final = 8192  # messages, outcomes or receipts per transaction
DEFAULT_BULK_BATCH: Final = ENQUEUE_MAX  # of which from bulk writes (about 15 ms of work)
DEFAULT_COMMIT_INTERVAL_S: Final = 0.002  # least time between the starts of two transactions
BULK_ENQUEUE: Final = 16  # an enqueue of more messages than this is a bulk write
DEFAULT_CACHE_KIB: Final = 16 * 1024
# A settling with nothing new to try still sweeps held receipts for the hold time this often.
SWEEP_HELD_S: Final = 10.0
_PURGE_STEP: Final = 500  # messages per purge transaction, so other writes interleave
_BUSY_TIMEOUT_S: Final = 5.0
_READER_CACHE_KIB: Final = 4 * 1024  # pages only, read afresh after each commit anyway


def _primary_code(exc: BaseException) -> int:
    """SQLite's primary result code of `exc` (its extended code's low byte), 0 if none."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF


def translate(exc: sqlite3.Error) -> QueueError:
    """The QueueError for a sqlite3 error (the boundary: nothing above sees sqlite3)."""
    primary = _primary_code(exc)
    kind: type[QueueError] = QueueError
    if primary == sqlite3.SQLITE_FULL:
        kind = StorageFullError
    elif primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        kind = StorageBusyError
    elif primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        kind = StorageCorruptError
    error = kind(f"queue storage: {exc}")
    error.reason = _REASONS.get(primary, "")
    error.__cause__ = exc
    return error


_REASONS: Final = {
    sqlite3.SQLITE_IOERR: "disk I/O error",
    sqlite3.SQLITE_READONLY: "the database is read-only",
    sqlite3.SQLITE_CANTOPEN: "the database file cannot be opened",
    sqlite3.SQLITE_PERM: "access to the database denied",
    sqlite3.SQLITE_BUSY: "another process holds the database",
    sqlite3.SQLITE_LOCKED: "another process holds the database",
    sqlite3.SQLITE_CORRUPT: "the database file is damaged",
    sqlite3.SQLITE_NOTADB: "the database file is damaged",
}


_NEARLY_FULL_BYTES: Final = 1 << 20
_STORAGE_CODES: Final = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_NOTADB,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_READONLY,
    }
)
# How long a transaction failed for the storage's sake shows as Queue.write_failure.
WRITE_FAILURE_HOLD_S: Final = 30.0


def _storage_fault(exc: BaseException) -> bool:
    """Whether a transaction failed for the storage's sake (full, busy, damaged, I/O), as
    every write would, not for one write's own (a value refused, a bug)."""
    if isinstance(exc, sqlite3.OperationalError):
        return True
    return isinstance(exc, sqlite3.DatabaseError) and _primary_code(exc) in _STORAGE_CODES


def open_error(exc: sqlite3.Error, path: str | PathLike[str]) -> QueueError:
    """translate() for an error opening `path`: SQLite reports the file system filling up as
    it grows the WAL index (its -shm file) at open as a disk I/O error, which sends an SRE to
    the hardware; with next to no space left there it is said to be that."""
    error = translate(exc)
    if type(error) is QueueError and _primary_code(exc) == sqlite3.SQLITE_IOERR:
        directory = os.path.dirname(os.path.abspath(path))
        try:
            free = os.statvfs(directory)
        except OSError:
            return error
        if free.f_bavail * free.f_frsize < _NEARLY_FULL_BYTES:
            error = StorageFullError(
                f"queue storage: {exc}: no space left on the file system of {directory}"
            )
            error.__cause__ = exc
    return error


class _Lane(Enum):
    URGENT = "urgent"
    SMALL = "small"
    BULK = "bulk"


_URGENT, _SMALL, _BULK = _Lane.URGENT, _Lane.SMALL, _Lane.BULK


def _enqueue_lane(messages: Sequence[NewMessage]) -> _Lane:
    if len(messages) > BULK_ENQUEUE:
        return _BULK
    if all(message.priority >= URGENT_PRIORITY for message in messages):
        return _URGENT
    return _SMALL


@dataclass(slots=True)
class _Write(Generic[T]):
    apply: Callable[[Batch], T]
    weight: int
    now: float
    future: asyncio.Future[T]
    late: bool = False  # applied after the transaction's other writes (receipts)


def _is_late(write: _Write[Any]) -> bool:
    return write.late


class SqliteQueue:
    """The SQLite queue; create with `await SqliteQueue.open(path)`, end with `close()`."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        db: sqlite3.Connection,
        memory: MemoryState,
        *,
        reader: tuple[aiosqlite.Connection, sqlite3.Connection],  # see _connect_reader
        max_batch: int,
        bulk_batch: int = DEFAULT_BULK_BATCH,
        commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S,
        owner: PathLock | None = None,  # see smppd.queue.owner; released by close()
    ) -> None:
        self._conn = conn
        self._db = db
        self._reader, self._reader_db = reader
        self._memory = memory
        self._owner = owner
        self._max_batch = max_batch
        self._bulk_batch = bulk_batch
        self._urgent: deque[_Write[Any]] = deque()
        self._lookups: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._looking_up: asyncio.Task[None] | None = None
        self._small: deque[_Write[Any]] = deque()
        self._bulk: deque[_Write[Any]] = deque()
        self._wakeup = asyncio.Event()
        self._commit_interval_s = commit_interval_s
        self._last_start = -math.inf  # perf_counter() when the last transaction started
        self._pacing: asyncio.Future[None] | None = None  # the wait for the interval to pass
        self._closing = False
        self._closed = False
        self._commits = 0
        self._write_failure: QueueError | None = None
        self._failed_at = -math.inf
        self._commit_latency = Histogram()
        self._writer = asyncio.create_task(self._write_loop(), name="smppd.queue.writer")

    @classmethod
    async def open(
        cls,
        path: str | PathLike[str],
        *,
        receipt_hold_s: float = DEFAULT_RECEIPT_HOLD_S,
        max_held_receipts: int = DEFAULT_MAX_HELD_RECEIPTS,
        max_batch: int = DEFAULT_MAX_BATCH,
        bulk_batch: int = DEFAULT_BULK_BATCH,
        commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S,
        cache_kib: int = DEFAULT_CACHE_KIB,
        max_bytes: int | None = None,
    ) -> SqliteQueue:
        """Open (creating or migrating) the database at `path`.

        `max_bytes` caps the database size (writes past it fail with StorageFullError).
        """
        owner = OwnerLock.take(path)
        try:
            _create_private(path)
            conn, db, memory = await _connect(
                path,
                cache_kib=cache_kib,
                max_bytes=max_bytes,
                receipt_hold_s=receipt_hold_s,
                max_held_receipts=max_held_receipts,
            )
        except BaseException:
            owner.release()
            raise
        try:
            reader = await _connect_reader(path)
        except BaseException:
            try:
                await conn.close()
            finally:
                owner.release()
            raise
        return cls(
            conn,
            db,
            memory,
            reader=reader,
            max_batch=max_batch,
            bulk_batch=bulk_batch,
            commit_interval_s=commit_interval_s,
            owner=owner,
        )

    # -- the group-commit writer --------------------------------------------------------------

    def _submit(
        self,
        apply: Callable[[Batch], T],
        *,
        weight: int,
        now: float,
        lane: _Lane = _SMALL,
        late: bool = False,
    ) -> asyncio.Future[T]:
        """Queue a write for the writer. Once queued it is performed, even if nobody waits."""
        if self._closing:
            raise QueueClosedError("the queue is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        queue = self._urgent if lane is _URGENT else self._bulk if lane is _BULK else self._small
        queue.append(_Write(apply, weight, now, future, late))
        self._wakeup.set()
        if lane is _URGENT:
            self._end_pacing()  # an urgent write does not wait for the interval
        return future

    async def _write_loop(self) -> None:
        while True:
            if not (self._urgent or self._small or self._bulk):
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self._urgent:
                await self._pace()
            if not self._urgent:  # an urgent transaction is one extra, in no one's interval
                self._last_start = time.perf_counter()
            writes = self._take()
            try:
                await self._commit(writes)
            except Exception as exc:  # a bug after COMMIT: fail the waiting callers, go on
                for write in writes:
                    _fail(write.future, exc)

    async def _pace(self) -> None:
        """Wait until `commit_interval_s` has passed since the last transaction started, or an
        urgent write comes; what arrives meanwhile shares the transaction."""
        wait = self._last_start + self._commit_interval_s - time.perf_counter()
        if wait <= 0 or self._closing:
            return
        loop = asyncio.get_running_loop()
        self._pacing = pacing = loop.create_future()
        timer = loop.call_later(wait, _resolve, pacing)
        try:
            await pacing
        finally:
            timer.cancel()
            self._pacing = None

    def _end_pacing(self) -> None:
        if self._pacing is not None:
            _resolve(self._pacing)

    def _take(self) -> list[_Write[Any]]:
        """The next transaction's writes: urgent ones alone, else small then bulk (see the
        module doc)."""
        if self._urgent:
            writes, self._urgent = list(self._urgent), deque()
            return writes
        writes = []
        weight = 0
        small = self._small
        while small and (not writes or weight + small[0].weight <= self._max_batch):
            write = small.popleft()
            writes.append(write)
            weight += write.weight
        bulk, bulk_weight = self._bulk, 0
        while bulk and (
            bulk_weight == 0
            or (
                bulk_weight + bulk[0].weight <= self._bulk_batch
                and weight + bulk[0].weight <= self._max_batch
            )
        ):
            write = bulk.popleft()
            writes.append(write)
            weight += write.weight
            bulk_weight += write.weight
        # Late writes (receipts) after the rest, each kind in its order: receipts and outcomes
        # are batched apart, so a receipt read just after its submit_sm_resp can be queued
        # before that resp's outcome, and would be held instead of matched.
        writes.sort(key=_is_late)
        return writes

    async def _commit(self, writes: list[_Write[Any]]) -> None:
        started = time.perf_counter()
        try:
            batch, results = await _in_thread(self._conn, partial(self._transaction, writes))
        except Exception as exc:
            storage = _storage_fault(exc)
            if len(writes) > 1 and not storage:
                # One write's own fault (a value SQLite refuses, a bug in an operation) must not
                # fail the others it was batched with: each goes again in a transaction of its
                # own. Nothing was applied (rolled back, and memory moves only after COMMIT).
                # A busy, full, damaged or failing database is everyone's fault: no retry.
                for write in writes:
                    await self._commit([write])
                return
            error = translate(exc) if isinstance(exc, sqlite3.Error) else exc
            if storage and isinstance(error, QueueError):
                self._write_failure = error
                self._failed_at = time.monotonic()
            for write in writes:
                _fail(write.future, error)
            return
        batch.apply_to(self._memory)
        self._commits += 1
        self._commit_latency.observe(time.perf_counter() - started)
        for write, result in zip(writes, results, strict=True):
            if not write.future.done():
                write.future.set_result(result)

    def _transaction(self, writes: list[_Write[Any]]) -> tuple[Batch, list[Any]]:
        """Runs in the connection's thread: all pending writes, one COMMIT."""
        db = self._db
        batch = Batch(db, self._memory)
        db.execute("BEGIN IMMEDIATE")
        try:
            results = [write.apply(batch) for write in writes]
            batch.finish(now=max(write.now for write in writes))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
        return batch, results

    async def _read(self, read: Callable[[sqlite3.Connection], T], *, page: bool = False) -> T:
        """`read` between the writer's transactions, or with `page` on the reader connection,
        beside them (see the module doc).

        Lookups share thread round trips: while one batch of them runs (or waits behind a
        transaction), those that come meanwhile gather for the next. A round trip costs about
        45 us of CPU (a thread's wake-up and the loop's), a status lookup itself about 11.
        """
        if self._closing:
            raise QueueClosedError("the queue is closed")
        if page:
            try:
                return await _in_thread(self._reader, partial(_snapshot, read, self._reader_db))
            except sqlite3.Error as exc:
                raise translate(exc) from exc
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._lookups.append((read, future))
        if self._looking_up is None:
            self._looking_up = asyncio.create_task(self._look_up(), name="smppd.queue.lookups")
        return await future

    async def _look_up(self) -> None:
        try:
            while self._lookups:
                batch, self._lookups = self._lookups, []
                reads = [read for read, _ in batch]
                try:
                    results = await _in_thread(self._conn, partial(_each, self._db, reads))
                except Exception as exc:  # the thread could not run them (closed)
                    results = [_Failed(exc)] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, _Failed):
                        error = result.error
                        future.set_exception(
                            translate(error) if isinstance(error, sqlite3.Error) else error
                        )
                    else:
                        future.set_result(result)
        finally:
            self._looking_up = None

    # -- the Queue interface ------------------------------------------------------------------

    async def enqueue(
        self, messages: Sequence[NewMessage], *, now: float, optouts_seen: int | None = None
    ) -> list[Enqueued]:
        if not messages:
            return []
        return await self._submit(
            partial(sqlite_writes.enqueue, messages=messages, now=now, optouts_seen=optouts_seen),
            weight=len(messages),
            now=now,
            lane=_enqueue_lane(messages),
        )

    async def claim(self, carrier: str, limit: int, *, now: float, min_priority: int = 0) -> Claim:
        if limit <= 0:
            return Claim()
        future = self._submit(
            partial(
                sqlite_writes.claim,
                carrier=carrier,
                limit=limit,
                now=now,
                min_priority=min_priority,
            ),
            weight=limit,
            now=now,
            lane=_URGENT if min_priority >= URGENT_PRIORITY else _SMALL,
        )
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # Nobody will send what this claim takes: put it back once it lands.
            future.add_done_callback(partial(self._release_abandoned, now=now))
            raise

    def _release_abandoned(self, future: asyncio.Future[Claim], *, now: float) -> None:
        if future.cancelled() or future.exception() is not None or not future.result():
            return
        ids = [segment.segment_id for segment in future.result()]
        with contextlib.suppress(QueueClosedError):
            released = self._submit(
                partial(sqlite_admin.requeue, ids=ids, now=now), weight=len(ids), now=now
            )
            released.add_done_callback(_retrieve)

    async def record(self, outcomes: Sequence[Outcome], *, now: float) -> list[Change]:
        if not outcomes:
            return []
        return await self._submit(
            partial(sqlite_writes.record, outcomes=outcomes, now=now),
            weight=len(outcomes),
            now=now,
        )

    async def apply_receipts(
        self, carrier: str, receipts: Sequence[ReceiptIn], *, now: float
    ) -> list[ReceiptResult]:
        if not receipts:
            return []
        return await self._submit(
            partial(sqlite_receipts.apply_receipts, carrier=carrier, receipts=receipts, now=now),
            weight=len(receipts),
            now=now,
            late=True,
        )

    async def rekey_held(
        self,
        carrier: str,
        rekey: Callable[[tuple[str, ...]], tuple[str, ...] | None],
        *,
        now: float,
    ) -> int:
        return await self._submit(
            partial(sqlite_receipts.rekey_held, carrier=carrier, rekey=rekey),
            weight=1,
            now=now,
        )

    async def settle_receipts(self, *, now: float) -> dict[str, list[Change]]:
        memory = self._memory
        if not memory.receipts_held:
            return {}
        if memory.newest_held <= memory.settled_until and now < memory.swept_at + SWEEP_HELD_S:
            # None held since the last settling, and writes have swept the hold time lately:
            # a transaction a tick for nothing otherwise, while receipts are held and no other
            # write comes (a quiet or stopped carrier's held receipts still end unmatched).
            return {}
        return await self._submit(
            partial(sqlite_receipts.settle_held, now=now), weight=1, now=now, late=True
        )

    async def store_inbound(self, inbound: InboundIn) -> int:
        return await self._submit(
            partial(sqlite_admin.store_inbound, inbound=inbound),
            weight=1,
            now=inbound.received_at,
        )

    async def hold_inbound_part(self, part: InboundPart) -> None:
        await self._submit(
            partial(sqlite_admin.hold_inbound_part, part=part), weight=1, now=part.received_at
        )

    async def held_inbound_parts(self, carrier: str) -> list[InboundPart]:
        return await self._read(partial(sqlite_reads.held_inbound_parts, carrier=carrier))

    async def inbound_seen(
        self, carrier: str, *, now: float, limit: int
    ) -> list[tuple[bytes, float]]:
        return await self._read(
            partial(sqlite_reads.inbound_seen, carrier=carrier, now=now, limit=limit)
        )

    async def bring_forward(self, source: str, *, now: float) -> int:
        return await self._submit(
            partial(sqlite_admin.bring_forward, source=source, now=now), weight=1, now=now
        )

    async def forget_seen(self, *, now: float) -> int:
        return await self._submit(
            partial(sqlite_admin.forget_seen, now=now), weight=1, now=now, lane=_BULK
        )

    async def id_formats(self) -> dict[str, str]:
        return await self._read(sqlite_reads.id_formats)

    async def set_id_format(self, carrier: str, learned: str | None, *, now: float) -> None:
        await self._submit(
            partial(sqlite_admin.set_id_format, carrier=carrier, learned=learned, now=now),
            weight=1,
            now=now,
        )

    async def segments_by_day(self, start: float) -> dict[int, dict[str, int]]:
        return await self._read(partial(sqlite_reads.segments_by_day, start=start), page=True)

    async def inbound_since(
        self, after_id: int, *, client: str | None = None, limit: int = 100
    ) -> list[Inbound]:
        return await self._read(
            partial(sqlite_reads.inbound_since, after_id=after_id, client=client, limit=limit),
            page=True,
        )

    async def finished_since(
        self, after: FinishedCursor, *, client: str | None, limit: int
    ) -> FinishedPage:
        return await self._read(
            partial(sqlite_reads.finished_since, after=after, client=client, limit=limit), page=True
        )

    async def add_optout(self, sender: str, number: str, *, now: float) -> bool:
        return await self._submit(
            partial(sqlite_admin.add_optout, sender=sender, number=number, now=now),
            weight=1,
            now=now,
        )

    async def remove_optout(self, sender: str, number: str) -> bool:
        return await self._submit(
            partial(sqlite_admin.remove_optout, sender=sender, number=number), weight=1, now=0.0
        )

    @property
    def optouts_recorded(self) -> int:
        return self._memory.optouts_applied

    async def is_opted_out(self, sender: str, number: str) -> bool:
        """A Bloom filter answers "no" in memory; only a "maybe" asks the table."""
        optouts = self._memory.optouts
        if not (
            optouts.might_contain(sender, number)
            or optouts.might_contain(OPTOUT_ALL_SENDERS, number)
        ):
            return False
        return await self._read(partial(sqlite_reads.is_opted_out, sender=sender, number=number))

    async def list_optouts(
        self, *, sender: str | None = None, after: tuple[str, str] | None = None, limit: int = 1000
    ) -> list[OptOut]:
        return await self._read(
            partial(sqlite_reads.list_optouts, sender=sender, after=after, limit=limit), page=True
        )

    async def cancel_queued_to(
        self, sender: str, number: str, *, now: float, client: str | None = None
    ) -> list[Change]:
        return await self._submit(
            partial(
                sqlite_admin.cancel_queued_to, sender=sender, number=number, now=now, client=client
            ),
            weight=1,
            now=now,
        )

    async def message_id_of(self, client: str, ref: str) -> int | None:
        return await self._read(partial(sqlite_reads.message_id_of, client=client, ref=ref))

    async def status(self, message_id: int, client: str | None) -> MessageStatus | None:
        return await self._read(
            partial(sqlite_reads.message_status, message_id=message_id, client=client)
        )

    async def cancel(
        self, message_id: int, client: str | None, *, now: float
    ) -> tuple[MessageStatus, list[Change]] | None:
        return await self._submit(
            partial(sqlite_admin.cancel, message_id=message_id, client=client, now=now),
            weight=1,
            now=now,
        )

    async def recover(self, *, now: float) -> int:
        return await self._submit(partial(sqlite_admin.recover, now=now), weight=1, now=now)

    async def rebase_schedules(self, back_s: float, *, now: float, since: float) -> int:
        return await self._submit(
            partial(sqlite_admin.rebase_schedules, back_s=back_s, now=now, since=since),
            weight=1,
            now=now,
        )

    async def due_queries(self, carrier: str, *, now: float, limit: int) -> list[QueryTarget]:
        return await self._submit(
            partial(sqlite_queries.due_queries, carrier=carrier, now=now, limit=limit),
            weight=1,
            now=now,
        )

    async def schedule_queries(
        self, due: Sequence[tuple[int, float | None]], *, now: float
    ) -> None:
        await self._submit(
            partial(sqlite_queries.schedule_queries, due=due), weight=len(due), now=now
        )

    async def urgent_due(self, carrier: str, *, limit: int) -> list[float]:
        return await self._read(partial(sqlite_reads.urgent_due, carrier=carrier, limit=limit))

    async def purge(self, before: float) -> int:
        purged = 0
        while True:
            deleted, more = await self._submit(
                partial(sqlite_admin.purge_step, before=before, limit=_PURGE_STEP),
                weight=_PURGE_STEP,
                now=before,
                lane=_BULK,
            )
            purged += deleted
            if not more:
                return purged

    async def expire_waiting(
        self, *, now: float, after: tuple[float, int], limit: int
    ) -> tuple[list[Change], tuple[float, int], bool]:
        return await self._submit(
            partial(sqlite_admin.expire_waiting_step, after=after, limit=limit, now=now),
            weight=limit,
            now=now,
            lane=_BULK,
        )

    async def finish_overdue(self, before: float, *, now: float) -> int:
        finished = 0
        cursor: tuple[float, int] | None = (float("-inf"), 0)
        while cursor is not None:
            step, cursor = await self._submit(
                partial(
                    sqlite_admin.finish_overdue_step,
                    before=before,
                    after=cursor,
                    limit=_PURGE_STEP,
                    now=now,
                ),
                weight=_PURGE_STEP,
                now=now,
                lane=_BULK,
            )
            finished += step
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
        # `pick` runs in the connection's thread: it must only read what it was built with.
        return await self._submit(
            partial(
                sqlite_admin.reroute_step,
                carrier=carrier,
                pick=pick,
                limit=limit,
                after=after,
                now=now,
            ),
            weight=limit,
            now=now,
            lane=_BULK,
        )

    async def stats(self, *, now: float) -> QueueStats:
        memory = self._memory
        heads = memory.counts.queued_keys()
        by_carrier = memory.counts.by_carrier()
        waiting = [c for c, n in by_carrier.items() if n.get(SegmentState.SCHEDULED)]
        due = (
            await self._read(partial(sqlite_reads.oldest_due, heads=heads, carriers=waiting))
            if heads or waiting
            else {}
        )
        oldest = min(due.values(), default=None)
        return QueueStats(
            segments=memory.counts.by_state(),
            by_carrier=by_carrier,
            queued_depth=memory.counts.depth,
            oldest_queued_age_s=None if oldest is None else max(0.0, now - oldest),
            oldest_age_by_carrier={c: max(0.0, now - t) for c, t in due.items()},
            depth_by_client=memory.counts.depth_by_client(),
            receipts_held=memory.receipts_held,
            receipts_unmatched=memory.receipts_unmatched,
            receipts_dropped=memory.receipts_dropped,
            commits=self._commits,
        )

    @property
    def write_failure(self) -> QueueError | None:
        # Held for a while, not cleared by the next commit: with the disk full, small writes
        # (an outcome, a delete) go on committing between the refused ones.
        if time.monotonic() - self._failed_at < WRITE_FAILURE_HOLD_S:
            return self._write_failure
        return None

    def queued_depth(self) -> int:
        return self._memory.counts.depth

    def client_depth(self, client: str) -> int:
        return self._memory.counts.client_depth(client)

    @property
    def commits(self) -> int:
        return self._commits

    @property
    def held_ended(self) -> dict[str, dict[str, int]]:
        return held_ended_by_carrier(self._memory.held_ended)

    @property
    def commit_latency(self) -> Histogram:
        return self._commit_latency

    async def set_max_bytes(self, max_bytes: int | None) -> None:
        """Change the database size cap (None: no cap beyond SQLite's own)."""
        # A setting of the writer's connection, which is the one that grows the file.
        await self._read(partial(_set_max_bytes, max_bytes=max_bytes))

    async def close(self) -> None:
        """Finish every queued write, then close the database."""
        if self._closed:
            return
        self._closing = True
        self._wakeup.set()
        self._end_pacing()  # what is queued is committed now
        try:
            await self._writer
            if self._looking_up is not None:
                await self._looking_up
        finally:
            self._closed = True
            try:
                try:  # whichever closes last checkpoints the WAL into the file and removes it
                    await self._reader.close()
                finally:
                    await self._conn.close()
            finally:
                if self._owner is not None:
                    self._owner.release()

    async def __aenter__(self) -> SqliteQueue:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def _connect(
    path: str | PathLike[str],
    *,
    cache_kib: int,
    max_bytes: int | None,
    receipt_hold_s: float,
    max_held_receipts: int,
) -> tuple[aiosqlite.Connection, sqlite3.Connection, MemoryState]:
    """The store's connection (configured and migrated), its sqlite3 handle, and what is kept
    in memory, read from disk; QueueError (translated) when the database cannot be used."""

    def setup(db: sqlite3.Connection) -> None:
        _configure(db, cache_kib=cache_kib, max_bytes=max_bytes)
        migrate(db)

    _check_writable(path)
    conn, db = await _open(path, setup, cached_statements=256)
    try:
        memory = await _in_thread(
            conn,
            partial(
                sqlite_reads.load_memory,
                db,
                receipt_hold_s=receipt_hold_s,
                max_held_receipts=max_held_receipts,
            ),
        )
    except BaseException as exc:
        await conn.close()
        if isinstance(exc, sqlite3.Error):
            raise open_error(exc, path) from exc
        raise
    return conn, db, memory


async def _connect_reader(
    path: str | PathLike[str],
) -> tuple[aiosqlite.Connection, sqlite3.Connection]:
    """The query-only connection pages are read through (opened after the writer's migrated)."""

    def setup(db: sqlite3.Connection) -> None:
        db.execute("PRAGMA query_only = ON")
        db.execute(f"PRAGMA cache_size = -{_READER_CACHE_KIB}")
        db.execute("PRAGMA temp_store = MEMORY")

    return await _open(path, setup, cached_statements=64)


async def _open(
    path: str | PathLike[str],
    setup: Callable[[sqlite3.Connection], None],
    *,
    cached_statements: int,
) -> tuple[aiosqlite.Connection, sqlite3.Connection]:
    """A connection with its own thread, `setup` run on it there; QueueError (translated)
    when it cannot be opened or set up, the thread ended."""
    opened: list[sqlite3.Connection] = []
    failed: list[BaseException] = []

    def connect() -> sqlite3.Connection:
        db = sqlite3.connect(
            path,
            isolation_level=None,
            timeout=_BUSY_TIMEOUT_S,
            cached_statements=cached_statements,
        )
        opened.append(db)
        try:
            setup(db)
        except Exception as exc:
            # Raised from here, aiosqlite would stop its thread without waiting for it;
            # handing back the connection lets close() end the thread in order.
            failed.append(exc)
        return db

    conn = aiosqlite.Connection(connect, iter_chunk_size=64)
    try:
        await conn
    except sqlite3.Error as exc:
        raise open_error(exc, path) from exc
    if failed:
        await conn.close()
        if isinstance(failed[0], sqlite3.Error):
            raise open_error(failed[0], path) from failed[0]
        raise failed[0]
    return conn, opened[0]


def _check_writable(path: str | PathLike[str]) -> None:
    """QueueError if this user may read the database (or its WAL files) but not write them:
    SQLite would open it read-only without a word (a file restored from a backup as root,
    say), and every write fail while the daemon looked up. Asked of the file system, not by
    a write: that would wait out another process' lock."""
    for name in (os.fspath(path), f"{os.fspath(path)}-wal", f"{os.fspath(path)}-shm"):
        if os.path.exists(name) and not os.access(name, os.R_OK | os.W_OK):
            raise QueueError(
                f"queue storage: {name} cannot be written by this user: check its owner and mode"
            )


def _create_private(path: str | PathLike[str]) -> None:
    """A new database file readable by its owner only, whatever the umask: it holds numbers
    and texts. SQLite gives its -wal and -shm files the database file's permissions."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise QueueError(
            f"queue storage: cannot create {os.fspath(path)}: {exc.strerror}"
        ) from None
    os.close(fd)


def _configure(db: sqlite3.Connection, *, cache_kib: int, max_bytes: int | None) -> None:
    # WAL lets readers (the CLI, backups) run beside the writer; FULL syncs the WAL on every
    # COMMIT, so an acknowledged message survives power loss (NORMAL may lose the last commits).
    (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode != "wal":
        raise sqlite3.OperationalError(f"cannot use WAL journal mode (got {mode})")
    db.execute("PRAGMA synchronous = FULL")
    db.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
    db.execute("PRAGMA temp_store = MEMORY")
    db.execute("PRAGMA journal_size_limit = 67108864")
    _set_max_bytes(db, max_bytes)


def _set_max_bytes(db: sqlite3.Connection, max_bytes: int | None) -> None:
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    pages = 0xFFFFFFFE if max_bytes is None else max(1, max_bytes // page_size)
    db.execute(f"PRAGMA max_page_count = {int(pages)}")


async def _in_thread(conn: aiosqlite.Connection, work: Callable[[], T]) -> T:
    """Run `work` in the connection's own thread, as one unit.

    aiosqlite's public calls take one thread round trip per statement; a batch of thousands of
    statements must be one round trip, so it goes through the queue aiosqlite itself uses.
    """
    # The type as a string: cast() with a subscripted Callable builds the alias on every call.
    run = cast("Callable[[Callable[[], T]], Awaitable[T]]", conn._execute)
    return await run(work)


def _snapshot(read: Callable[[sqlite3.Connection], T], db: sqlite3.Connection) -> T:
    """Runs in the reader's thread: `read` in one read transaction, so all its statements see
    the same commits (a page's cursor must not pass a message its rows did not see finish)."""
    db.execute("BEGIN")
    try:
        return read(db)
    finally:
        db.execute("COMMIT")  # a read transaction: nothing to keep or undo either way


@dataclass(slots=True)
class _Failed:
    error: Exception


def _each(
    db: sqlite3.Connection, reads: Sequence[Callable[[sqlite3.Connection], Any]]
) -> list[Any]:
    """Runs in the connection's thread: every read, each one's result or its failure alone."""
    results: list[Any] = []
    for read in reads:
        try:
            results.append(read(db))
        except Exception as exc:
            results.append(_Failed(exc))
    return results


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
