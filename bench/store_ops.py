"""CPU per message of each SQLite store operation, run in this one thread.

The writer's operations (enqueue, claim, record an outcome, apply a receipt) on a real file, each
in its own transaction with `synchronous=FULL`, with no event loop and no other thread taking
the interpreter lock, so the figures move far less with the machine's load than e2e runs do:
what they show is the Python and SQLite work itself. Prints microseconds per message of each
operation, commit included, as the median of the rounds.

    .venv/bin/python bench/store_ops.py                  # 20,000 messages in batches of 100
    .venv/bin/python bench/store_ops.py --batch 50 --rounds 5
"""

# ruff: noqa: E402  (the path fix below must come before the imports)
from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the stdlib's `queue` (which aiosqlite imports): keep this
# directory off the import path, and the repository on it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from smppd.pdu.receipt import receipt_keys, resp_keys
from smppd.queue import sqlite as sqlite_queue
from smppd.queue import sqlite_reads, sqlite_receipts, sqlite_writes
from smppd.queue.model import NewMessage, ReceiptIn, Submitted
from smppd.queue.schema import migrate
from smppd.queue.sqlite_batch import Batch, MemoryState

CARRIER = "bench"
BODY = bytes(range(150))  # about one encoded submit_sm's parameters
T0 = 1_800_000_000.0
OPS = ("enqueue", "claim", "record", "receipts")

T = TypeVar("T")


def new_message(i: int) -> NewMessage:
    return NewMessage(
        client="bulk",
        ref=None,
        source="BENCH",
        destination=f"+4477{i:08d}",
        carrier=CARRIER,
        priority=5,
        not_before=None,
        expires_at=None,
        registered_delivery=True,
        segments=(BODY,),
    )


def run_round(path: Path, count: int, batch_size: int) -> dict[str, float]:
    """Seconds of this thread's CPU per operation over `count` messages."""
    db = sqlite3.connect(path, isolation_level=None, cached_statements=256)
    sqlite_queue._configure(db, cache_kib=sqlite_queue.DEFAULT_CACHE_KIB, max_bytes=None)
    migrate(db)
    memory: MemoryState = sqlite_reads.load_memory(
        db, receipt_hold_s=600.0, max_held_receipts=10_000
    )
    spent = dict.fromkeys(OPS, 0.0)

    def transaction(op: str, apply: Callable[[Batch], T]) -> T:
        started = time.thread_time()
        batch = Batch(db, memory)
        db.execute("BEGIN IMMEDIATE")
        result = apply(batch)
        batch.finish(now=T0)
        db.execute("COMMIT")
        batch.apply_to(memory)
        spent[op] += time.thread_time() - started
        return result

    for start in range(0, count, batch_size):
        messages = [new_message(start + i) for i in range(batch_size)]
        transaction("enqueue", partial(sqlite_writes.enqueue, messages=messages, now=T0))
        claim = transaction(
            "claim", partial(sqlite_writes.claim, carrier=CARRIER, limit=batch_size, now=T0)
        )
        ids = {s.segment_id: f"{0xA000_0000 + s.segment_id:08x}" for s in claim}
        outcomes = [Submitted(sid, resp_keys(cid), "b1", cid) for sid, cid in ids.items()]
        transaction("record", partial(sqlite_writes.record, outcomes=outcomes, now=T0))
        receipts = [
            ReceiptIn(
                keys=receipt_keys(cid),
                stat="DELIVRD",
                final_state="delivered",
                err="000",
                done_at=T0,
            )
            for cid in ids.values()
        ]
        apply = partial(sqlite_receipts.apply_receipts, carrier=CARRIER, receipts=receipts, now=T0)
        transaction("receipts", apply)
    db.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="messages a round (20,000)")
    parser.add_argument("--batch", type=int, default=100, help="messages a transaction (100)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each on a new file (3)")
    args = parser.parse_args()
    results: dict[str, list[float]] = {op: [] for op in OPS}
    with tempfile.TemporaryDirectory(prefix="smppd-store-ops-") as directory:
        for round_number in range(args.rounds):
            spent = run_round(Path(directory) / f"{round_number}.db", args.count, args.batch)
            for op in OPS:
                results[op].append(spent[op] / args.count * 1e6)
    print(f"{args.count:,} messages a round in transactions of {args.batch}, {args.rounds} rounds")
    for op in OPS:
        runs = ", ".join(f"{v:.1f}" for v in results[op])
        print(f"{op:9s} {statistics.median(results[op]):6.1f} us/message  ({runs})")
    total = sum(statistics.median(results[op]) for op in OPS)
    print(f"{'all':9s} {total:6.1f} us/message")


if __name__ == "__main__":
    main()
