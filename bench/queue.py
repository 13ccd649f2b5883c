"""Throughput and memory of the SQLite queue, on a real file in a temporary directory.

Prints: acknowledged (durable) enqueues/s with N concurrent submitters sharing group commits;
claims/s; outcomes recorded/s; receipts applied/s; then RSS with a large backlog queued, the
claim latency of an urgent message behind it, and the time to reopen it.

    .venv/bin/python bench/queue.py                       # 100,000 messages, 1,000,000 backlog
    .venv/bin/python bench/queue.py --count 20000 --backlog 100000
"""

# ruff: noqa: E402  (the path fix below must come before the imports)
from __future__ import annotations

import sys
from pathlib import Path

# This script shares its name with the stdlib's `queue` (which asyncio imports): keep its own
# directory off the import path, and the repository on it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Sequence

from smppd.queue import ClaimedSegment, NewMessage, ReceiptIn, Submitted
from smppd.queue.sqlite import SqliteQueue

CARRIER = "bench"
BODY = bytes(range(150))  # ~ one encoded submit_sm's parameters


def new_message(i: int, *, client: str = "bulk", priority: int = 5) -> NewMessage:
    return NewMessage(
        client=client,
        ref=None,
        source="BENCH",
        destination=f"+1555{i % 10_000_000:07d}",
        carrier=CARRIER,
        priority=priority,
        not_before=None,
        expires_at=None,
        registered_delivery=True,
        segments=(BODY,),
    )


def rss_mib() -> float:
    with Path("/proc/self/status").open() as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def file_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20


async def bench_enqueue(store: SqliteQueue, count: int, submitters: int) -> None:
    per = count // submitters
    commits = store.commits

    async def submitter(n: int) -> list[float]:
        latencies = []
        for i in range(per):
            start = time.perf_counter()
            await store.enqueue([new_message(n * per + i)], now=time.time())
            latencies.append(time.perf_counter() - start)
        return latencies

    start = time.perf_counter()
    results = await asyncio.gather(*(submitter(n) for n in range(submitters)))
    elapsed = time.perf_counter() - start
    latencies = sorted(x for r in results for x in r)
    done = per * submitters
    batches = store.commits - commits
    print(
        f"enqueue: {done / elapsed:,.0f} acked/s ({submitters} submitters, {done:,} messages,"
        f" {batches:,} commits, {done / batches:.0f} per commit,"
        f" p50 {statistics.median(latencies) * 1e3:.1f} ms,"
        f" p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.1f} ms)"
    )


async def bench_claim_record(store: SqliteQueue, count: int, batch: int) -> None:
    start = time.perf_counter()
    claimed: list[ClaimedSegment] = []
    while len(claimed) < count:
        got = await store.claim(CARRIER, batch, now=time.time())
        if not got:
            break
        claimed.extend(got)
    elapsed = time.perf_counter() - start
    print(f"claim:   {len(claimed) / elapsed:,.0f} segments/s (batches of {batch})")

    start = time.perf_counter()
    for i in range(0, len(claimed), batch):
        await store.record(
            [
                Submitted(s.segment_id, (str(s.segment_id),), "bind-1")
                for s in claimed[i : i + batch]
            ],
            now=time.time(),
        )
    elapsed = time.perf_counter() - start
    print(f"record:  {len(claimed) / elapsed:,.0f} outcomes/s (Submitted, batches of {batch})")

    start = time.perf_counter()
    for i in range(0, len(claimed), batch):
        receipts = [
            ReceiptIn((str(s.segment_id),), "DELIVRD", "delivered", "000", None)
            for s in claimed[i : i + batch]
        ]
        await store.apply_receipts(CARRIER, receipts, now=time.time())
    elapsed = time.perf_counter() - start
    print(f"receipt: {len(claimed) / elapsed:,.0f} receipts/s (batches of {batch})")


async def bench_pipeline(store: SqliteQueue, count: int, submitters: int, batch: int) -> None:
    """Enqueue, claim and record concurrently, as the daemon does (no receipts).

    The sender records each claim's outcomes in the background and claims again at once, as a
    send loop with a window would; enqueues, claims and outcomes share commits.
    """
    per = count // submitters
    total = per * submitters
    recorded = 0
    recording: set[asyncio.Task[None]] = set()

    async def submitter(n: int) -> None:
        for i in range(per):
            await store.enqueue([new_message(n * per + i)], now=time.time())

    async def record(claimed: Sequence[ClaimedSegment]) -> None:
        nonlocal recorded
        outcomes = [Submitted(s.segment_id, (str(s.segment_id),), "bind-1") for s in claimed]
        await store.record(outcomes, now=time.time())
        recorded += len(claimed)

    async def sender() -> None:
        claimed = 0
        while claimed < total:
            got = await store.claim(CARRIER, batch, now=time.time())
            if not got:
                await asyncio.sleep(0.001)  # nothing due yet: poll, as a send loop would
                continue
            claimed += len(got)
            task = asyncio.create_task(record(got))
            recording.add(task)
            task.add_done_callback(recording.discard)
        await asyncio.gather(*recording)

    cpu = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(sender(), *(submitter(n) for n in range(submitters)))
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    print(
        f"pipeline: {recorded / elapsed:,.0f} messages/s enqueued, claimed and recorded"
        f" concurrently ({submitters} submitters; CPU {cpu / elapsed:.0%},"
        f" {cpu / recorded * 1e6:.0f} us per message, bench included)"
    )


async def bench_backlog(path: Path, backlog: int, chunk: int) -> None:
    async with await SqliteQueue.open(path) as store:
        start = time.perf_counter()
        for i in range(0, backlog, chunk):
            await store.enqueue(
                [new_message(j) for j in range(i, min(backlog, i + chunk))], now=time.time()
            )
        elapsed = time.perf_counter() - start
        print(
            f"backlog: {backlog:,} queued in {elapsed:.1f} s ({backlog / elapsed:,.0f}/s in"
            f" batches of {chunk}); RSS {rss_mib():.0f} MiB;"
            f" file {file_mib(path):.0f} MiB"
        )
        latencies = []
        for i in range(200):
            await store.enqueue([new_message(i, client="otp", priority=9)], now=time.time())
            start = time.perf_counter()
            (claimed,) = await store.claim(CARRIER, 1, now=time.time())
            latencies.append(time.perf_counter() - start)
            assert claimed.client == "otp"
        latencies.sort()
        print(
            f"urgent behind the backlog: claim p50 {statistics.median(latencies) * 1e3:.2f} ms,"
            f" p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.2f} ms"
        )
        stats_start = time.perf_counter()
        stats = await store.stats(now=time.time())
        print(
            f"stats: depth {stats.queued_depth:,} in"
            f" {(time.perf_counter() - stats_start) * 1e3:.1f} ms"
        )
    start = time.perf_counter()
    async with await SqliteQueue.open(path) as store:
        print(
            f"reopen with {store.queued_depth():,} queued: {time.perf_counter() - start:.2f} s,"
            f" RSS {rss_mib():.0f} MiB"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="messages for throughput runs")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="messages for the RSS run")
    parser.add_argument("--submitters", type=int, default=1024, help="concurrent enqueue callers")
    parser.add_argument("--batch", type=int, default=500, help="claim/record batch size")
    parser.add_argument("--dir", default=None, help="directory for the database files")
    args = parser.parse_args()
    print(f"pid {os.getpid()}, RSS at start {rss_mib():.0f} MiB")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        async with await SqliteQueue.open(Path(tmp) / "throughput.db") as store:
            await bench_enqueue(store, args.count, args.submitters)
            await bench_claim_record(store, args.count, args.batch)
        async with await SqliteQueue.open(Path(tmp) / "pipeline.db") as store:
            await bench_pipeline(store, args.count, args.submitters, args.batch)
        await bench_backlog(Path(tmp) / "backlog.db", args.backlog, 1000)


if __name__ == "__main__":
    asyncio.run(main())
