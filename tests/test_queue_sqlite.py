"""What only the SQLite backend promises: durability, crash recovery, group commit, full disks."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from queue_support import CARRIER, T0, expired_by_receipt_then_answered_late, message, peek

from smppd.pdu.receipt import correlation_keys, receipt_keys, resp_keys
from smppd.queue import (
    MessageState,
    ReceiptIn,
    ReceiptOutcome,
    SegmentState,
    StorageFullError,
    Submitted,
    sqlite_admin,
    sqlite_batch,
    sqlite_queries,
    sqlite_reads,
    sqlite_receipts,
    sqlite_writes,
)
from smppd.queue import sqlite as sqlite_module
from smppd.queue.errors import QueueError, QueueInUseError, SchemaTooNewError, StorageCorruptError
from smppd.queue.model import (
    FINISHED_START,
    URGENT_PRIORITY,
    InboundIn,
    InboundPart,
    PartGroup,
    Seen,
)
from smppd.queue.owner import OwnerLock
from smppd.queue.receipts import FALLBACK_AFTER_S
from smppd.queue.schema import SCHEMA_VERSION
from smppd.queue.sqlite import SqliteQueue, open_error


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteQueue]:
    queue = await SqliteQueue.open(path)
    try:
        yield queue
    finally:
        await queue.close()


def scalar(path: Path, sql: str) -> int:
    ((value,),) = peek(path, sql)
    assert isinstance(value, int)
    return value


async def test_enqueue_is_on_disk_when_it_returns(store: SqliteQueue, path: Path) -> None:
    """Rows are committed (visible to another connection) the moment enqueue returns."""
    (enq,) = await store.enqueue([message(ref="r", segments=(b"x", b"y"))], now=T0)
    assert peek(path, "SELECT id, client, ref, total FROM messages") == [
        (enq.message_id, "otp", "r", 2)
    ]
    assert peek(
        path, "SELECT state, body FROM segments JOIN segment_bodies USING (id) ORDER BY id"
    ) == [
        ("queued", b"x"),
        ("queued", b"y"),
    ]
    assert peek(path, "PRAGMA journal_mode") == [("wal",)]


async def test_concurrent_writes_share_commits(store: SqliteQueue, path: Path) -> None:
    """200 concurrent enqueues complete in fewer than 200 transactions (group commit)."""
    before = store.commits
    results = await asyncio.gather(
        *(store.enqueue([message(ref=f"r{i}")], now=T0) for i in range(200))
    )
    assert len({r[0].message_id for r in results}) == 200
    assert store.commits - before < 200
    assert peek(path, "SELECT COUNT(*) FROM messages") == [(200,)]


async def test_small_writes_go_before_a_backlog_of_bulk_enqueues(path: Path) -> None:
    """A claim and a single submit queued behind two bulk enqueues commit in the first
    transaction, with at most one bulk write; the second bulk write waits for the next."""
    store = await SqliteQueue.open(path, bulk_batch=10)
    try:
        await store.enqueue([message(ref="old")], now=T0)
        bulk = [
            asyncio.ensure_future(
                store.enqueue([message(ref=f"b{n}-{i}") for i in range(40)], now=T0)
            )
            for n in range(2)
        ]
        claim = asyncio.ensure_future(store.claim(CARRIER, 1, now=T0))
        single = asyncio.ensure_future(store.enqueue([message(ref="urgent")], now=T0))
        before = store.commits
        done, _ = await asyncio.wait([claim, single], timeout=5)
        assert done == {claim, single}
        assert store.commits == before + 1
        assert bulk[0].done()
        assert not bulk[1].done()
        [claimed] = claim.result()
        assert claimed.message_id == 1  # the message that was queued before them all
        await asyncio.wait_for(bulk[1], 5)
        assert store.commits == before + 2
        assert peek(path, "SELECT COUNT(*) FROM messages") == [(82,)]
    finally:
        await store.close()


async def test_writes_within_the_commit_interval_share_one_transaction(path: Path) -> None:
    """A transaction starts at most once per commit_interval_s: writes queued in separate
    ticks meanwhile commit together, an urgent one does not wait, and close() does not either."""
    store = await SqliteQueue.open(path, commit_interval_s=60.0)
    try:
        await asyncio.wait_for(store.enqueue([message(ref="first")], now=T0), 5)
        before = store.commits
        first = asyncio.ensure_future(store.enqueue([message(ref="a")], now=T0))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(store.claim(CARRIER, 10, now=T0))
        await asyncio.sleep(0)
        urgent = asyncio.ensure_future(store.enqueue([message(ref="otp", priority=9)], now=T0))
        await asyncio.wait_for(urgent, 5)
        assert store.commits == before + 1
        assert not first.done()
        assert not second.done()
    finally:
        await asyncio.wait_for(store.close(), 5)
    assert store.commits == before + 2
    # The claim shares the transaction with the enqueue queued before it, and sees it.
    otp, (queued,) = urgent.result()[0].message_id, first.result()
    assert [s.message_id for s in second.result()] == [otp, 1, queued.message_id]


async def test_pages_are_read_while_a_transaction_waits(store: SqliteQueue, path: Path) -> None:
    """The finished and inbound pages come from the reader connection: they are answered while
    the writer is stuck in a transaction (here waiting for another process' write lock), and
    see what was committed before it."""
    await store.enqueue([message(ref="kept")], now=T0)
    (gone,) = await store.enqueue([message(ref="gone")], now=T0)
    assert await store.cancel(gone.message_id, None, now=T0)
    mo = await store.store_inbound(InboundIn(CARRIER, "+447700900001", "SHOP", "hi", 0, T0, "shop"))
    began = threading.Event()
    await store._conn.set_trace_callback(
        lambda sql: began.set() if sql == "BEGIN IMMEDIATE" else None
    )
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.ensure_future(store.enqueue([message(ref="otp", priority=9)], now=T0))
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, began.wait, 5)
        page = await asyncio.wait_for(
            store.finished_since(FINISHED_START, client="otp", limit=10), 2
        )
        received = await asyncio.wait_for(store.inbound_since(0, client=None, limit=10), 2)
        assert not write.done()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert [m.message_id for m in page.messages] == [gone.message_id]
    assert [m.id for m in received] == [mo]
    (urgent,) = await asyncio.wait_for(write, 5)
    assert urgent.created


async def test_a_finished_page_sees_one_moment(store: SqliteQueue) -> None:
    """A page's statements (its rows, their states, the last row it looked at) read one
    snapshot: a message finishing between them is on the next page, not behind the cursor."""
    a, b = await store.enqueue([message(ref="a"), message(ref="b")], now=T0)
    assert await store.cancel(a.message_id, "otp", now=T0 + 1)
    loop = asyncio.get_running_loop()
    finished_meanwhile: list[str] = []

    def between_statements(sql: str) -> None:  # in the reader's thread, as a statement starts
        if "count(*) OVER ()" in sql and not finished_meanwhile:
            finished_meanwhile.append(sql)
            cancel = store.cancel(b.message_id, "otp", now=T0 + 2)
            asyncio.run_coroutine_threadsafe(cancel, loop).result(5)

    await store._reader.set_trace_callback(between_statements)
    page = await store.finished_since(FINISHED_START, client="otp", limit=10)
    assert finished_meanwhile
    assert [m.message_id for m in page.messages] == [a.message_id]
    after = await store.finished_since(page.cursor, client="otp", limit=10)
    assert [m.message_id for m in after.messages] == [b.message_id]


async def test_a_closed_queue_leaves_its_wal_checkpointed(path: Path) -> None:
    """close() ends both connections, and the last to close checkpoints the WAL into the file
    and removes it: after a clean stop there is nothing left to replay."""
    store = await SqliteQueue.open(path)
    await store.enqueue([message(ref=f"r{i}") for i in range(50)], now=T0)
    await store.finished_since(FINISHED_START, client="otp", limit=10)  # the reader in use
    assert (path.parent / f"{path.name}-wal").exists()
    await store.close()
    assert not (path.parent / f"{path.name}-wal").exists()
    assert peek(path, "SELECT COUNT(*) FROM messages") == [(50,)]


async def test_concurrent_lookups_each_get_their_own_answer_or_error(store: SqliteQueue) -> None:
    """Lookups made together share round trips to the writer's thread, yet each gets its own
    answer, and one that fails fails alone, with a QueueError."""
    enqueued = await store.enqueue([message(ref=f"r{i}") for i in range(20)], now=T0)

    def broken(db: sqlite3.Connection) -> object:
        return db.execute("SELECT no_such_column FROM messages").fetchall()

    statuses = [store.status(e.message_id, None) for e in enqueued]
    results = await asyncio.wait_for(
        asyncio.gather(*statuses[:10], store._read(broken), *statuses[10:], return_exceptions=True),
        5,
    )
    failed = results.pop(10)
    assert isinstance(failed, QueueError)
    assert "no_such_column" in str(failed)
    assert [getattr(r, "ref", r) for r in results] == [f"r{i}" for i in range(20)]


async def test_an_urgent_submit_commits_ahead_of_everything_queued(store: SqliteQueue) -> None:
    """An urgent single submit queued last gets its own transaction first; the normal submit,
    the claim and the bulk enqueue queued before it commit after."""
    bulk = asyncio.ensure_future(store.enqueue([message(ref=f"b{i}") for i in range(40)], now=T0))
    normal = asyncio.ensure_future(store.enqueue([message(ref="normal")], now=T0))
    claim = asyncio.ensure_future(store.claim(CARRIER, 1, now=T0))
    urgent = asyncio.ensure_future(store.enqueue([message(ref="otp", priority=9)], now=T0))
    before = store.commits
    await asyncio.wait_for(urgent, 5)
    assert store.commits == before + 1
    assert not bulk.done()
    assert not normal.done()
    assert not claim.done()
    await asyncio.wait_for(asyncio.gather(bulk, normal, claim), 5)
    [claimed] = claim.result()
    assert claimed.message_id == urgent.result()[0].message_id


async def test_inflight_segments_survive_a_close_and_are_recovered(path: Path) -> None:
    """Claimed but unrecorded segments are queued again after reopening (at least once)."""
    async with await SqliteQueue.open(path) as store:
        await store.enqueue([message() for _ in range(3)], now=T0)
        claimed = await store.claim(CARRIER, 2, now=T0)
    async with await SqliteQueue.open(path) as store:
        assert store.queued_depth() == 3
        assert store.client_depth("otp") == 3  # the counts are stored with the rows
        assert await store.recover(now=T0 + 1) == 2
        again = await store.claim(CARRIER, 10, now=T0 + 2)
        assert {s.segment_id for s in claimed} < {s.segment_id for s in again}


_CRASHER = textwrap.dedent(
    """
    import asyncio, os, sys
    from queue_support import CARRIER, T0, message
    from smppd.queue.sqlite import SqliteQueue

    async def main():
        store = await SqliteQueue.open(sys.argv[1])
        await store.enqueue([message() for _ in range(5)], now=T0)
        await store.claim(CARRIER, 3, now=T0)
        print("claimed", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_a_killed_process_loses_nothing(path: Path) -> None:
    """After kill -9 with segments in flight, every acknowledged message is still there."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CRASHER, str(path), stdout=subprocess.PIPE, env=env
    )
    assert child.stdout is not None
    async with asyncio.timeout(20):
        assert await child.stdout.readline() == b"claimed\n"
        child.send_signal(signal.SIGKILL)
        await child.wait()
    async with await SqliteQueue.open(path) as store:
        assert await store.recover(now=T0 + 1) == 3
        assert len(await store.claim(CARRIER, 10, now=T0 + 1)) == 5


async def test_a_full_disk_acks_nothing_and_recovers(
    store: SqliteQueue, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the size cap a write fails with storage_full, stores nothing, and works again later;
    meanwhile the store says its writes fail (health, smppd_queue_writable), small writes that
    still commit (a delete) notwithstanding, until the failure is WRITE_FAILURE_HOLD_S old."""

    def failure() -> QueueError | None:  # read afresh each time (mypy narrows attributes)
        return store.write_failure

    (kept,) = await store.enqueue([message()], now=T0)
    assert failure() is None
    await store.set_max_bytes(scalar(path, "PRAGMA page_count") * scalar(path, "PRAGMA page_size"))
    big = [message(ref=f"big{i}", segments=(b"x" * 1000,)) for i in range(200)]
    with pytest.raises(StorageFullError) as raised:
        await store.enqueue(big, now=T0 + 1)
    assert raised.value.code == "storage_full"
    assert isinstance(failure(), StorageFullError)
    await store.forget_seen(now=T0 + 1)  # commits: it needs no new page
    assert isinstance(failure(), StorageFullError)
    assert store.queued_depth() == 1
    assert peek(path, "SELECT COUNT(*) FROM messages") == [(1,)]
    assert await store.status(kept.message_id, None) is not None
    await store.set_max_bytes(None)
    results = await store.enqueue(big, now=T0 + 2)
    assert all(r.created for r in results)
    assert isinstance(failure(), StorageFullError)  # held a while
    monkeypatch.setattr(sqlite_module, "WRITE_FAILURE_HOLD_S", 0.0)
    assert failure() is None
    assert results[0].message_id == kept.message_id + 1  # the failed batch used no ids
    assert store.queued_depth() == 201


async def test_an_empty_file_is_migrated(path: Path) -> None:
    """Opening an empty file creates the schema at the current version; reopening keeps it."""
    path.touch()  # noqa: ASYNC240  # test setup on a local tmp file
    async with await SqliteQueue.open(path):
        pass
    assert peek(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    async with await SqliteQueue.open(path) as store:
        assert store.queued_depth() == 0
    assert peek(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_a_newer_schema_is_refused(path: Path) -> None:
    """A database from a newer smppd is not opened (nor changed)."""
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNewError):
        await SqliteQueue.open(path)


async def test_a_corrupt_file_raises_a_queue_error(path: Path) -> None:
    """sqlite3 errors are translated at the boundary."""
    path.write_bytes(b"this is not a database" * 200)  # noqa: ASYNC240  # test setup
    with pytest.raises(StorageCorruptError):
        await SqliteQueue.open(path)


async def test_counts_persist_and_match_the_rows(path: Path) -> None:
    """The kept counts equal a real count of the rows, also after reopening."""
    async with await SqliteQueue.open(path) as store:
        await store.enqueue(
            [message(priority=p % 10, segments=(b"a",) * (1 + p % 3)) for p in range(40)], now=T0
        )
        claim = await store.claim(CARRIER, 25, now=T0)
        await store.record(
            [Submitted(s.segment_id, (str(s.segment_id),), "b") for s in claim[:10]], now=T0
        )
        await store.cancel(claim[20].message_id, None, now=T0)
        await store.purge(T0 + 1)
        before = await store.stats(now=T0)
    real = peek(path, "SELECT state, priority, COUNT(*) FROM segments GROUP BY state, priority")
    expected: dict[SegmentState, dict[int, int]] = {}
    for state, priority, n in real:
        expected.setdefault(SegmentState(str(state)), {})[int(str(priority))] = int(str(n))
    assert before.segments == expected
    async with await SqliteQueue.open(path) as store:
        after = await store.stats(now=T0)
        assert after.segments == expected
        assert after.queued_depth == before.queued_depth


@pytest.mark.parametrize(
    ("sql", "args", "index"),
    [
        (sqlite_writes._TOP_PRIORITY, (CARRIER, 10), "segments_queued"),
        (sqlite_writes._NEXT_CLIENT, (CARRIER, 5, ""), "segments_queued"),
        (sqlite_writes._FETCH_QUEUED, (CARRIER, 5, "otp", 10), "segments_queued"),
        (sqlite_writes._DUE_SCHEDULED, (CARRIER, T0, 10), "segments_scheduled"),
        (sqlite_writes._BY_REF, ("otp", "r"), "messages_by_ref"),
        (sqlite_admin._UNFINISHED_TO, ("+1",), "messages_by_destination"),
        (sqlite_admin._FINISHED_BEFORE, (T0, 10), "messages_finished"),
        (sqlite_admin._OPEN_AFTER, (T0, 0, T0, 10), "messages_open"),
        (sqlite_admin._EXPIRING_AFTER, (T0, 0, T0, 10), "messages_expiring"),
        (sqlite_receipts._MATCH, (CARRIER, '["1"]'), "PRIMARY KEY"),
        (sqlite_receipts._OLDEST_HELD, (), "pending_receipts_held"),
        (sqlite_batch._SELECT_SEGMENTS_IN, ("[1]",), "INTEGER PRIMARY KEY"),
        (sqlite_reads._RETRYING, (CARRIER,), "segments_retrying"),
        (sqlite_reads._HEAD, (CARRIER, 5, "otp"), "segments_queued"),
        (sqlite_queries._DUE, (CARRIER, T0, "submitted", 10), "receipt_queries_due"),
    ],
)
async def test_hot_queries_use_their_index(
    path: Path, sql: str, args: tuple[object, ...], index: str
) -> None:
    """Claims, lookups and retention seek through an index, never scan the backlog."""
    async with await SqliteQueue.open(path):
        pass
    with sqlite3.connect(path) as db:
        plan = [str(row[3]) for row in db.execute("EXPLAIN QUERY PLAN " + sql, args)]
    assert index in plan[0], plan
    assert not [
        step
        for step in plan
        if step.startswith("SCAN") and "INDEX" not in step and "json_each" not in step
    ], plan


async def test_dropping_stale_query_rows_reads_a_bounded_run_of_the_due_index(path: Path) -> None:
    """The due rows of settled segments are found among the first STALE_SCAN due rows, read
    through the index (its LIMIT bounds the rest: the subquery's own scan is of those)."""
    async with await SqliteQueue.open(path):
        pass
    with sqlite3.connect(path) as db:
        args = (CARRIER, T0, 10, "submitted")
        plan = [
            str(row[3])
            for row in db.execute("EXPLAIN QUERY PLAN " + sqlite_queries._DROP_STALE, args)
        ]
    assert any("USING COVERING INDEX receipt_queries_due" in step for step in plan), plan
    assert [step for step in plan if step.startswith("SCAN")] == ["SCAN q"], plan


async def test_an_abandoned_claim_is_put_back(store: SqliteQueue) -> None:
    """A claim whose caller stops waiting releases its segments instead of stranding them."""
    await store.enqueue([message() for _ in range(3)], now=T0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await store.claim(CARRIER, 3, now=T0)
    await store.add_optout("ACME", "+1", now=T0)  # by now the release is queued
    assert len(await store.claim(CARRIER, 3, now=T0)) == 3


async def test_ids_are_not_reused_after_everything_is_purged(path: Path) -> None:
    """Purging the newest messages does not hand their ids out again, even after reopening."""
    async with await SqliteQueue.open(path) as store:
        await store.enqueue([message(registered_delivery=False) for _ in range(3)], now=T0)
        claim = await store.claim(CARRIER, 3, now=T0)
        await store.record([Submitted(s.segment_id, ("1",), "b") for s in claim], now=T0)
        assert await store.purge(T0 + 1) == 3
    for table in ("messages", "segments", "segment_bodies"):
        assert peek(path, f"SELECT COUNT(*) FROM {table}") == [(0,)]
    async with await SqliteQueue.open(path) as store:
        (enq,) = await store.enqueue([message()], now=T0 + 2)
        assert enq.message_id > max(s.message_id for s in claim)


async def test_purging_a_message_takes_its_receipt_query_rows(path: Path) -> None:
    """A query row goes when it comes due, but only for a carrier that still queries: one a
    reload removed, or whose receipt_queries were turned off, kept its rows for ever."""
    receipt = ReceiptIn(correlation_keys("7"), "DELIVRD", "delivered", "000", T0 + 5)
    async with await SqliteQueue.open(path) as store:
        await store.enqueue([message()], now=T0)
        (seg,) = await store.claim(CARRIER, 1, now=T0)
        done = Submitted(seg.segment_id, correlation_keys("7"), "b", query_at=T0 + 60)
        await store.record([done], now=T0)
        assert peek(path, "SELECT COUNT(*) FROM receipt_queries") == [(1,)]
        await store.apply_receipts(CARRIER, [receipt], now=T0 + 6)
        assert await store.purge(T0 + 7) == 1
    assert peek(path, "SELECT COUNT(*) FROM receipt_queries") == [(0,)]


async def test_a_repeated_receipt_is_recognised_after_a_restart(path: Path) -> None:
    """A final segment's ids stay on disk: a resent final receipt is a duplicate after reopening."""
    receipt = ReceiptIn(correlation_keys("77"), "DELIVRD", "delivered", "000", T0 + 5)
    async with await SqliteQueue.open(path) as store:
        await store.enqueue([message()], now=T0)
        (seg,) = await store.claim(CARRIER, 1, now=T0)
        await store.record([Submitted(seg.segment_id, correlation_keys("77"), "b")], now=T0)
        (first,) = await store.apply_receipts(CARRIER, [receipt], now=T0 + 6)
        assert first.outcome is ReceiptOutcome.MATCHED
    async with await SqliteQueue.open(path) as store:
        (again,) = await store.apply_receipts(CARRIER, [receipt], now=T0 + 7)
        assert again.outcome is ReceiptOutcome.DUPLICATE
        assert (await store.stats(now=T0 + 7)).receipts_held == 0


async def test_a_receipt_queued_before_its_outcome_is_applied_after_it(store: SqliteQueue) -> None:
    """Receipts and outcomes are batched apart, so a receipt can reach the writer just before
    the outcome of its own submit_sm_resp. In one transaction receipts go last: it matches
    at once instead of being held as early."""
    await store.enqueue([message()], now=T0)
    (seg,) = await store.claim(CARRIER, 1, now=T0)
    receipt = ReceiptIn(receipt_keys("77"), "DELIVRD", "delivered", "000", T0 + 2)
    applied = asyncio.ensure_future(store.apply_receipts(CARRIER, [receipt], now=T0 + 2))
    recorded = asyncio.ensure_future(
        store.record([Submitted(seg.segment_id, resp_keys("77"), "b")], now=T0 + 1)
    )
    (result,), _ = await asyncio.gather(applied, recorded)
    assert result.outcome is ReceiptOutcome.MATCHED
    assert (await store.stats(now=T0 + 3)).receipts_held == 0


async def test_rows_written_with_null_in_the_sql_read_back_as_bound_ones(
    store: SqliteQueue, path: Path
) -> None:
    """Messages without a ref, schedule or validity, and segments without receipt fields, are
    written by statements that say NULL instead of binding None; bodies bind as bytearrays.
    What lands on disk is the same either way."""
    plain, full = await store.enqueue(
        [
            message(segments=(b"\x00plain",)),
            message(ref="r-1", not_before=T0 - 5, expires_at=T0 + 600, segments=(b"full",)),
        ],
        now=T0,
    )
    rows = peek(path, "SELECT id, ref, not_before, expires_at FROM messages ORDER BY id")
    assert rows == [
        (plain.message_id, None, None, None),
        (full.message_id, "r-1", T0 - 5, T0 + 600),
    ]
    bodies = peek(path, "SELECT typeof(body), body FROM segment_bodies ORDER BY id")
    assert bodies == [("blob", b"\x00plain"), ("blob", b"full")]
    first, second = await store.claim(CARRIER, 2, now=T0)
    assert (first.body, second.body) == (b"\x00plain", b"full")
    await store.record(
        [
            Submitted(first.segment_id, resp_keys("a1"), "b", "a1"),
            Submitted(second.segment_id, resp_keys("a2"), "b", "a2"),
        ],
        now=T0 + 1,
    )
    await store.apply_receipts(
        CARRIER, [ReceiptIn(receipt_keys("a2"), "DELIVRD", "delivered", "000", T0 + 2)], now=T0 + 3
    )
    segments = peek(
        path,
        "SELECT state, carrier_message_id, bind, receipt_stat, receipt_err, done_at, updated_at"
        " FROM segments ORDER BY id",
    )
    assert segments == [
        ("submitted", "a1", "b", None, None, None, T0 + 1),
        ("delivered", "a2", "b", "DELIVRD", "000", T0 + 2, T0 + 3),
    ]


async def test_a_held_receipt_settles_after_a_restart_and_idle_settling_writes_nothing(
    path: Path,
) -> None:
    """A receipt held for another rendering of its id is still given to its segment by a
    settling after the store was reopened. With nothing held since, settling commits nothing."""
    async with await SqliteQueue.open(path) as store:
        await store.enqueue([message()], now=T0)
        (segment,) = await store.claim(CARRIER, 1, now=T0)
        await store.record([Submitted(segment.segment_id, resp_keys("1a"), "b")], now=T0)
        receipt = ReceiptIn(receipt_keys("26"), "DELIVRD", "delivered", "000", T0 + 5)
        (result,) = await store.apply_receipts(CARRIER, [receipt], now=T0 + 6)
        assert result.outcome is ReceiptOutcome.HELD
    async with await SqliteQueue.open(path) as store:
        settled = await store.settle_receipts(now=T0 + 6 + FALLBACK_AFTER_S)
        assert [c.segment_id for c in settled[CARRIER]] == [segment.segment_id]
        stray = ReceiptIn(receipt_keys("ff"), "DELIVRD", "delivered", "000", T0 + 5)
        await store.apply_receipts(CARRIER, [stray], now=T0 + 10)
        assert await store.settle_receipts(now=T0 + 10 + FALLBACK_AFTER_S) == {}
        commits = store.commits
        assert await store.settle_receipts(now=T0 + 20) == {}
        assert store.commits == commits
    assert peek(path, "SELECT state FROM segments") == [("delivered",)]


async def test_a_resp_id_is_one_row_and_older_rows_still_match(
    store: SqliteQueue, path: Path
) -> None:
    """A resp id is stored under one key. Rows stored by earlier versions, under the id and each
    numeric reading, are still found by a receipt that writes the id in the other base (once it
    has waited, as for new rows)."""
    await store.enqueue([message(), message()], now=T0)
    new, old = await store.claim(CARRIER, 2, now=T0)
    await store.record(
        [
            Submitted(new.segment_id, resp_keys("0000001a"), "b"),
            Submitted(old.segment_id, ("s:x2b", "43"), "b"),  # "0x2b" as earlier versions kept it
        ],
        now=T0,
    )
    rows = peek(path, "SELECT key, segment_id FROM correlations ORDER BY key")
    assert rows == [("43", old.segment_id), ("s:1a", new.segment_id), ("s:x2b", old.segment_id)]
    receipts = [
        ReceiptIn(receipt_keys(rid), "DELIVRD", "delivered", "000", T0 + 5) for rid in ("26", "43")
    ]
    results = await store.apply_receipts(CARRIER, receipts, now=T0 + 6)
    assert [r.outcome for r in results] == [ReceiptOutcome.HELD] * 2  # written another way
    settled = await store.settle_receipts(now=T0 + 6 + FALLBACK_AFTER_S)
    assert [c.segment_id for c in settled[CARRIER]] == [new.segment_id, old.segment_id]


async def test_a_version_1_file_of_the_first_release_is_migrated(path: Path) -> None:
    """The first version 1 files had no retired_correlations table: they upgrade too, with
    their messages."""
    async with await SqliteQueue.open(path) as store:
        (enq,) = await store.enqueue([message()], now=T0)
    with sqlite3.connect(path) as db:
        _as_version_1(db)
        db.execute("PRAGMA user_version = 1")
    async with await SqliteQueue.open(path) as store:
        status = await store.status(enq.message_id, None)
        assert status is not None
        assert status.state is MessageState.QUEUED
    assert peek(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_version_1_retired_correlations_are_migrated(path: Path) -> None:
    """A version 1 file kept final segments' ids in retired_correlations: after the upgrade a
    resent final receipt under such an id is still a duplicate, and a newer open id that
    shared the key keeps it."""
    final = ReceiptIn(correlation_keys("77"), "DELIVRD", "delivered", "000", T0 + 5)
    async with await SqliteQueue.open(path) as store:
        await store.enqueue([message(), message()], now=T0)
        old, new = await store.claim(CARRIER, 2, now=T0)
        await store.record([Submitted(old.segment_id, correlation_keys("77"), "b")], now=T0)
        await store.apply_receipts(CARRIER, [final], now=T0 + 6)
        await store.record([Submitted(new.segment_id, correlation_keys("88"), "b")], now=T0)
    # Rewrite the file as version 1 held it: the final segment's key retired, plus a stale
    # retired row for a key that the newer, open segment has taken over; the old index.
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE retired_correlations (carrier TEXT NOT NULL, key TEXT NOT NULL, "
            "segment_id INTEGER NOT NULL, PRIMARY KEY (carrier, key)) WITHOUT ROWID"
        )
        db.execute(
            "INSERT INTO retired_correlations SELECT carrier, key, segment_id FROM correlations "
            "WHERE segment_id = ?",
            (old.segment_id,),
        )
        db.execute("DELETE FROM correlations WHERE segment_id = ?", (old.segment_id,))
        db.execute(
            "INSERT INTO retired_correlations VALUES (?, '88', ?)", (CARRIER, old.segment_id)
        )
        _as_version_1(db)
        db.execute("PRAGMA user_version = 1")
    async with await SqliteQueue.open(path) as store:
        (again,) = await store.apply_receipts(CARRIER, [final], now=T0 + 7)
        assert again.outcome is ReceiptOutcome.DUPLICATE
        newer = ReceiptIn(correlation_keys("88"), "DELIVRD", "delivered", "000", T0 + 8)
        (matched,) = await store.apply_receipts(CARRIER, [newer], now=T0 + 8)
        assert matched.outcome is ReceiptOutcome.MATCHED
        assert matched.change is not None
        assert matched.change.segment_id == new.segment_id
    assert peek(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert peek(path, "SELECT name FROM sqlite_master WHERE name = 'retired_correlations'") == []
    assert peek(path, "SELECT name FROM sqlite_master WHERE name LIKE 'messages_%dest%'") == [
        ("messages_by_destination",)
    ]
    assert peek(path, "SELECT name FROM sqlite_master WHERE name = 'messages_open'") == [
        ("messages_open",)
    ]


def _as_version_1(db: sqlite3.Connection) -> None:
    """Undo migrations 2-17 but retired_correlations (its rows are the test's to write): the
    index of unfinished messages by destination, no index of open messages."""
    _as_version_4(db)
    db.execute("DROP INDEX messages_by_destination")
    db.execute("DROP INDEX messages_open")
    db.execute(
        "CREATE INDEX messages_unfinished_by_destination ON messages (destination) "
        "WHERE finished_at IS NULL"
    )


def _as_version_4(db: sqlite3.Connection) -> None:
    """Undo migrations 5-17: segment bodies in a column of segments, as versions 1-4 kept
    them, no index of scheduled urgent segments, held receipts without whole_message, no
    table of inbound parts, no index of retrying or expiring work, no learned id formats,
    inbound as version 12 kept it, no receipt queries, no MO fingerprints."""
    _as_version_6(db)
    db.execute("DROP INDEX segments_scheduled_urgent")
    db.execute("ALTER TABLE segments ADD COLUMN body BLOB NOT NULL DEFAULT x''")
    db.execute(
        "UPDATE segments SET body = b.body FROM segment_bodies AS b WHERE b.id = segments.id"
    )
    db.execute("DROP TABLE segment_bodies")


def _as_version_6(db: sqlite3.Connection) -> None:
    """Undo migrations 7-17: held receipts without the whole_message column, no inbound parts,
    no index of segments waiting out a retry or of messages by expiry, no learned id formats,
    inbound as version 12 kept it, no receipt queries, no MO fingerprints."""
    _as_version_8(db)
    db.execute("ALTER TABLE pending_receipts DROP COLUMN whole_message")
    db.execute("DROP TABLE inbound_parts")


def _as_version_8(db: sqlite3.Connection) -> None:
    _as_version_9(db)
    db.execute("DROP INDEX segments_retrying")


def _as_version_9(db: sqlite3.Connection) -> None:
    _as_version_10(db)
    db.execute("DROP INDEX messages_expiring")


def _as_version_10(db: sqlite3.Connection) -> None:
    _as_version_11(db)
    db.execute("ALTER TABLE inbound_parts DROP COLUMN locking_shift")
    db.execute("ALTER TABLE inbound_parts DROP COLUMN single_shift")


def _as_version_11(db: sqlite3.Connection) -> None:
    _as_version_12(db)
    db.execute("DROP TABLE id_formats")


def _as_version_12(db: sqlite3.Connection) -> None:
    _as_version_13(db)
    db.execute("ALTER TABLE inbound DROP COLUMN complete")
    db.execute("ALTER TABLE inbound DROP COLUMN keyword")


def _as_version_13(db: sqlite3.Connection) -> None:
    _as_version_15(db)
    db.execute("DROP TABLE receipt_queries")


def _as_version_15(db: sqlite3.Connection) -> None:
    _as_version_16(db)
    db.execute("DROP TABLE inbound_seen")


def _as_version_16(db: sqlite3.Connection) -> None:
    db.execute("DROP INDEX inbound_by_client")


async def test_a_version_16_file_pages_a_clients_inbound_by_its_index(path: Path) -> None:
    """Version 16 had no index of inbound by client: after the upgrade a client's page reads
    its own MO through it, and the same ones as before."""
    async with await SqliteQueue.open(path) as store:
        for client in ("shop", "other", "shop", None):
            await store.store_inbound(InboundIn(CARRIER, "+447700900001", "S", "hi", 0, T0, client))
    with sqlite3.connect(path) as db:
        _as_version_16(db)
        db.execute("PRAGMA user_version = 16")
    async with await SqliteQueue.open(path) as store:
        assert [m.id for m in await store.inbound_since(0, client="shop")] == [1, 3]
        assert [m.id for m in await store.inbound_since(1, client="shop")] == [3]
        assert [m.id for m in await store.inbound_since(0)] == [1, 2, 3, 4]
    plan = peek(
        path,
        "EXPLAIN QUERY PLAN SELECT id FROM inbound WHERE client = 'shop' AND id > 0 ORDER BY id",
    )
    assert "inbound_by_client" in str(plan)


async def test_a_version_15_file_gets_mo_fingerprints_and_keeps_its_inbound(path: Path) -> None:
    """Version 15 kept no MO fingerprints: after the upgrade the inbound stored before is
    there as it was, and an MO stored since keeps its fingerprint."""
    async with await SqliteQueue.open(path) as store:
        await store.store_inbound(InboundIn(CARRIER, "+447700900001", "SHOP", "hi", 0, T0, "shop"))
    with sqlite3.connect(path) as db:
        _as_version_15(db)
        db.execute("PRAGMA user_version = 15")
    async with await SqliteQueue.open(path) as store:
        assert [m.text for m in await store.inbound_since(0)] == ["hi"]
        again = InboundIn(
            CARRIER, "+447700900001", "SHOP", "hi", 0, T0 + 1, "shop", seen=Seen(b"k", T0 + 61)
        )
        await store.store_inbound(again)
        assert await store.inbound_seen(CARRIER, now=T0 + 2, limit=10) == [(b"k", T0 + 1)]
    assert peek(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_a_version_13_file_gets_receipt_queries_and_keeps_its_segments(path: Path) -> None:
    """Version 13 had no receipt_queries: after the upgrade a segment accepted before it is
    simply not queried, and one accepted since with query_at is."""
    async with await SqliteQueue.open(path) as store:
        await store.enqueue([message(), message()], now=T0)
        old, new = await store.claim(CARRIER, 2, now=T0)
        await store.record([Submitted(old.segment_id, ("1",), "b")], now=T0)
    with sqlite3.connect(path) as db:
        _as_version_13(db)
        db.execute("PRAGMA user_version = 13")
    async with await SqliteQueue.open(path) as store:
        await store.record([Submitted(new.segment_id, ("2",), "b", query_at=T0 + 1)], now=T0)
        due = await store.due_queries(CARRIER, now=T0 + 1, limit=10)
    assert [t.segment_id for t in due] == [new.segment_id]
    assert peek(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_a_version_12_file_s_inbound_reads_as_complete_with_no_keyword(path: Path) -> None:
    """Version 12 kept neither: its messages read complete, their keyword null; one stored
    since keeps its own."""
    before = InboundIn(CARRIER, "+447700900001", "SHOP", "STOP", 0, T0, "shop", keyword="stop")
    async with await SqliteQueue.open(path) as store:
        await store.store_inbound(before)
    with sqlite3.connect(path) as db:
        _as_version_12(db)
        db.execute("PRAGMA user_version = 12")
    since = InboundIn(CARRIER, "+447700900001", "SHOP", "half", 0, T0 + 1, "shop", complete=False)
    async with await SqliteQueue.open(path) as store:
        await store.store_inbound(since)
        old, new = await store.inbound_since(0)
    assert (old.text, old.complete, old.keyword) == ("STOP", True, None)
    assert (new.text, new.complete, new.keyword) == ("half", False, None)
    assert peek(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_version_14_opt_outs_under_bare_long_senders_go_on_stopping_submits(
    path: Path,
) -> None:
    """Long-number senders are now kept as "+digits": an opt-out a version 14 file recorded
    under "447700900999" is found under "+447700900999" (one under both forms is kept once),
    and a message still queued from the bare form is sent from the canonical one. Short codes
    and alphanumerics keep theirs."""
    bare, plus, number = "447700900999", "+447700900999", "+447700900123"
    async with await SqliteQueue.open(path) as store:
        await store.add_optout(bare, number, now=T0)
        await store.add_optout(plus, number, now=T0 + 1)
        await store.add_optout(bare, "+447700900124", now=T0 + 2)
        await store.add_optout("12345", number, now=T0 + 3)
        await store.add_optout("ACME", number, now=T0 + 4)
        await store.enqueue([message(source=bare)], now=T0)
    with sqlite3.connect(path) as db:
        _as_version_15(db)
        db.execute("PRAGMA user_version = 14")
    async with await SqliteQueue.open(path) as store:
        assert await store.is_opted_out(plus, "+447700900124")
        rows = sorted((r.sender, r.number) for r in await store.list_optouts())
        (claimed,) = await store.claim(CARRIER, 10, now=T0 + 5)
    assert rows == [
        (plus, number),
        (plus, "+447700900124"),
        ("12345", number),
        ("ACME", number),
    ]
    assert claimed.source == plus
    assert peek(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_a_version_11_file_starts_with_nothing_learned_of_ids(path: Path) -> None:
    """Version 11 kept no learned id formats: after the upgrade there are none, and one can be."""
    async with await SqliteQueue.open(path):
        pass
    with sqlite3.connect(path) as db:
        _as_version_11(db)
        db.execute("PRAGMA user_version = 11")
    async with await SqliteQueue.open(path) as store:
        assert await store.id_formats() == {}
        await store.set_id_format(CARRIER, "decimal", now=T0)
        assert await store.id_formats() == {CARRIER: "decimal"}
    assert peek(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_version_10_held_parts_read_with_the_default_tables(path: Path) -> None:
    """An MO part a version 10 file holds comes back after the upgrade, its tables the
    default ones; a part held since keeps the national tables it named."""
    group = PartGroup(CARRIER, "+447700900001", "SHOP", 0, 9, 3)
    async with await SqliteQueue.open(path) as store:
        await store.hold_inbound_part(InboundPart(group, 1, b"one", T0))
    with sqlite3.connect(path) as db:
        _as_version_10(db)
        db.execute("PRAGMA user_version = 10")
    turkish = PartGroup(CARRIER, "+447700900001", "SHOP", 0, 9, 3, 1, 1)
    async with await SqliteQueue.open(path) as store:
        await store.hold_inbound_part(InboundPart(turkish, 2, b"two", T0 + 1))
        first, second = await store.held_inbound_parts(CARRIER)
    assert (first.seq, first.group.locking_shift, first.group.single_shift) == (1, 0, 0)
    assert (second.seq, second.group.locking_shift, second.group.single_shift) == (2, 1, 1)
    assert peek(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_version_6_held_receipts_stand_for_their_segment_alone(path: Path) -> None:
    """A receipt held by a version 6 file is read back as one for its own segment: applied when
    its Submitted comes, the message's other segment untouched."""
    async with await SqliteQueue.open(path) as store:
        await store.enqueue([message(segments=(b"one", b"two"))], now=T0)
        first, second = await store.claim(CARRIER, 2, now=T0)
        await store.record([Submitted(second.segment_id, correlation_keys("22"), "b")], now=T0)
        early = ReceiptIn(correlation_keys("11"), "DELIVRD", "delivered", "000", T0 + 1)
        (held,) = await store.apply_receipts(CARRIER, [early], now=T0 + 1)
        assert held.outcome is ReceiptOutcome.HELD
    with sqlite3.connect(path) as db:
        _as_version_6(db)
        db.execute("PRAGMA user_version = 6")
    async with await SqliteQueue.open(path) as store:
        changes = await store.record(
            [Submitted(first.segment_id, correlation_keys("11"), "b")], now=T0 + 2
        )
        assert [(c.segment_id, c.segment_state) for c in changes] == [
            (first.segment_id, SegmentState.SUBMITTED),
            (first.segment_id, SegmentState.DELIVERED),
        ]
    assert peek(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert peek(path, "SELECT state FROM segments ORDER BY id") == [("delivered",), ("submitted",)]


async def test_version_4_bodies_move_to_their_own_table(path: Path) -> None:
    """A version 4 file kept bodies in segments: after the upgrade every queued segment is
    claimed with its own body, segments no longer has the column, and the index of scheduled
    urgent segments exists."""
    async with await SqliteQueue.open(path) as store:
        await store.enqueue(
            [message(segments=(b"one", b"two")), message(segments=(b"three",))], now=T0
        )
    with sqlite3.connect(path) as db:
        _as_version_4(db)
        db.execute("PRAGMA user_version = 4")
    assert peek(path, "SELECT body FROM segments ORDER BY id") == [
        (b"one",),
        (b"two",),
        (b"three",),
    ]
    async with await SqliteQueue.open(path) as store:
        claim = await store.claim(CARRIER, 10, now=T0)
        assert [(s.message_id, s.index, s.body) for s in claim] == [
            (claim[0].message_id, 0, b"one"),
            (claim[0].message_id, 1, b"two"),
            (claim[2].message_id, 0, b"three"),
        ]
    assert peek(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    columns = [row[1] for row in peek(path, "PRAGMA table_info(segments)")]
    assert "body" not in columns
    index = "SELECT name FROM sqlite_master WHERE name = 'segments_scheduled_urgent'"
    assert peek(path, index) == [("segments_scheduled_urgent",)]


async def test_the_overdue_sweep_pages_past_messages_still_to_send(
    store: SqliteQueue, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep goes a page at a time and walks past open messages it must leave alone."""
    monkeypatch.setattr("smppd.queue.sqlite._PURGE_STEP", 2)
    messages = await store.enqueue([message() for _ in range(7)], now=T0)
    claim = await store.claim(CARRIER, 7, now=T0)
    sent = [s for s in claim if s.index == 0 and (s.message_id - messages[0].message_id) % 2 == 0]
    await store.record(
        [Submitted(s.segment_id, correlation_keys(str(s.segment_id)), "b") for s in sent], now=T0
    )
    assert len(sent) == 4  # messages 0, 2, 4, 6 accepted; 1, 3, 5 still inflight
    before = store.commits
    assert await store.finish_overdue(T0 + 1, now=T0 + 2) == 4
    assert store.commits - before == 4  # pages of two: seven open messages
    finished = peek(path, "SELECT id FROM messages WHERE finished_at IS NOT NULL")
    assert sorted(int(str(row[0])) for row in finished) == [s.message_id for s in sent]


async def test_urgent_due_is_read_from_its_own_index_after_a_restart(path: Path) -> None:
    """The scheduled urgent segments' times survive a reopen, and are found through the
    partial index, whose priority is URGENT_PRIORITY: not by scanning the scheduled backlog."""
    async with await SqliteQueue.open(path) as store:
        bulk = [message(priority=0, not_before=T0 + 1) for _ in range(50)]
        await store.enqueue([*bulk, message(priority=URGENT_PRIORITY, not_before=T0 + 9)], now=T0)
    async with await SqliteQueue.open(path) as store:
        assert await store.urgent_due(CARRIER, limit=5) == [T0 + 9]
    plan = peek(path, "EXPLAIN QUERY PLAN " + sqlite_reads._URGENT_DUE, CARRIER, 5)
    assert any("segments_scheduled_urgent" in str(row[-1]) for row in plan)
    ((index_sql,),) = peek(
        path, "SELECT sql FROM sqlite_master WHERE name = 'segments_scheduled_urgent'"
    )
    assert f"priority >= {URGENT_PRIORITY}" in str(index_sql)
    assert f"priority >= {URGENT_PRIORITY}" in sqlite_reads._URGENT_DUE


async def test_a_write_that_fails_alone_does_not_fail_those_batched_with_it(path: Path) -> None:
    """A write SQLite refuses for its own values (a lone surrogate it cannot encode) fails
    alone: the writes that shared its transaction are committed."""
    async with await SqliteQueue.open(path) as store:
        good = store.enqueue([message(ref="fine")], now=T0)
        bad = store.enqueue([message(ref="r\ud800")], now=T0)
        also = store.enqueue([message(ref="also fine")], now=T0)
        results = await asyncio.gather(good, bad, also, return_exceptions=True)
        assert isinstance(results[1], UnicodeEncodeError)
        assert all(isinstance(r, list) and r[0].created for r in (results[0], results[2]))
        assert store.queued_depth() == 2
    assert peek(path, "SELECT ref FROM messages ORDER BY id") == [("fine",), ("also fine",)]


async def test_a_second_open_of_a_queue_in_use_is_refused_and_changes_nothing(path: Path) -> None:
    """One process runs a queue: a second open (a second daemon on the same config) fails
    before touching it, naming the holder's pid, so it cannot "recover" the first one's
    in-flight segments and send them again. Closing releases the queue."""
    first = await SqliteQueue.open(path)
    try:
        await first.enqueue([message()], now=T0)
        await first.claim(CARRIER, 1, now=T0)
        with pytest.raises(
            QueueInUseError, match=rf"in use by another process \(pid {os.getpid()}\)"
        ):
            await SqliteQueue.open(path)
        assert peek(path, "SELECT state FROM segments") == [("inflight",)]
    finally:
        await first.close()
    async with await SqliteQueue.open(path) as again:
        assert await again.recover(now=T0 + 1) == 1


async def test_a_queue_reached_through_a_symlink_is_the_same_queue(path: Path) -> None:
    """A second daemon whose queue.path is a symlink to the live one's database (or to its
    directory) is refused too: it would resend the first one's in-flight segments and hand
    out message ids the first one already gave."""
    async with await SqliteQueue.open(path):
        linked_dir = path.parent / "linked"
        linked_dir.symlink_to(path.parent, target_is_directory=True)
        linked_file = path.parent / "other.db"
        linked_file.symlink_to(path)
        for alias in (linked_dir / path.name, linked_file):
            with pytest.raises(QueueInUseError, match="in use by another process"):
                await SqliteQueue.open(alias)


async def test_a_late_answer_after_a_receipt_leaves_no_correlation_when_purged(
    store: SqliteQueue, path: Path
) -> None:
    """A segment expired by a receipt and then answered late goes with its id when purged
    (it was revived under a second id, and the first stayed in correlations for ever)."""
    await expired_by_receipt_then_answered_late(store)
    assert await store.purge(T0 + 14) == 1
    assert peek(path, "SELECT carrier, key FROM correlations") == []


def damage(path: Path) -> None:
    """Every page but the first (the header, the schema) overwritten, in place."""
    page_size, pages = scalar(path, "PRAGMA page_size"), scalar(path, "PRAGMA page_count")
    with open(path, "r+b") as damaged:
        damaged.seek(page_size)
        damaged.write(b"\xff" * ((pages - 1) * page_size))


async def test_a_database_damaged_under_a_running_store_is_a_write_failure(path: Path) -> None:
    """Pages overwritten while the store runs (a failing disk): a write fails with
    storage_corrupt, shown as the store's write failure (health, smppd_queue_writable)."""
    async with await SqliteQueue.open(path) as store:
        await store.enqueue([message(segments=(b"x" * 500,)) for _ in range(400)], now=T0)
    async with await SqliteQueue.open(path) as store:
        damage(path)
        with pytest.raises(StorageCorruptError):
            await store.enqueue([message()], now=T0 + 1)
        assert isinstance(store.write_failure, StorageCorruptError)


def test_a_disk_io_error_opening_a_queue_on_a_full_file_system_says_so(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a WAL database on a full file system fails as SQLite grows its -shm file, and
    SQLite calls that a disk I/O error: with no space left it is a StorageFullError naming
    the file system; with space left, still the I/O error it is."""
    ioerr = sqlite3.OperationalError("disk I/O error")
    ioerr.sqlite_errorcode = sqlite3.SQLITE_IOERR_SHMSIZE
    free = os.statvfs(path.parent)
    assert type(open_error(ioerr, path)) is QueueError
    full = os.statvfs_result((*free[:4], 0, *free[5:]))  # f_bavail 0
    monkeypatch.setattr(os, "statvfs", lambda directory: full)
    error = open_error(ioerr, path)
    assert isinstance(error, StorageFullError)
    assert str(error) == (
        f"queue storage: disk I/O error: no space left on the file system of {path.parent}"
    )


async def test_a_queue_this_user_cannot_write_is_refused_at_open(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file readable but not writable (restored as another owner, mode 0644) opens
    read-only without a word: refused at open, saying what to check, rather than a daemon
    that starts and fails every write."""
    async with await SqliteQueue.open(path) as store:
        await store.enqueue([message()], now=T0)
    access = os.access

    def not_writable(name: str, mode: int) -> bool:  # as for a user other than its owner
        return not (name == str(path) and mode & os.W_OK) and access(name, mode)

    monkeypatch.setattr(os, "access", not_writable)
    with pytest.raises(QueueError) as info:
        await SqliteQueue.open(path)
    assert str(info.value) == (
        f"queue storage: {path} cannot be written by this user: check its owner and mode"
    )


def test_the_queue_is_free_again_when_its_holder_is_killed(path: Path) -> None:
    """The lock goes with the process: after kill -9 there is nothing to clear by hand."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            # Holds the lock until its stdin closes or it is killed: no timer involved.
            "import sys; from smppd.queue.owner import OwnerLock;"
            f" OwnerLock.take({str(path)!r}); print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(QueueInUseError, match=f"pid {holder.pid}"):
            OwnerLock.take(path)
    finally:
        holder.kill()
        holder.communicate(timeout=10)
    OwnerLock.take(path).release()


async def test_a_new_queue_is_readable_by_its_owner_only(path: Path) -> None:
    """Numbers and texts: 0600 for the database, its WAL and its lock, whatever the umask."""
    old = os.umask(0o022)
    try:
        async with await SqliteQueue.open(path) as store:
            await store.enqueue([message()], now=T0)
            modes = {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir() if p.is_file()}
    finally:
        os.umask(old)
    assert modes[path.name] == 0o600
    assert modes[f"{path.name}-wal"] == 0o600
    assert modes[f"{path.name}.lock"] == 0o600


async def test_learned_id_formats_are_on_disk_once_set(path: Path) -> None:
    """The write returns once durable: another connection reads the row, and a reopen finds it."""
    async with await SqliteQueue.open(path) as store:
        await store.set_id_format(CARRIER, "hex", now=T0)
        assert peek(path, "SELECT carrier, receipt_format, learned_at FROM id_formats") == [
            (CARRIER, "hex", T0)
        ]
    async with await SqliteQueue.open(path) as store:
        assert await store.id_formats() == {CARRIER: "hex"}
