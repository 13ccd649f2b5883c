"""Both backends give the same answers to the same random workload (a differential test)."""

from __future__ import annotations

import random
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from queue_support import CARRIER, T0, message

from smppd.queue import (
    Failed,
    Outcome,
    Queue,
    QueueStats,
    ReceiptIn,
    ReceiptOutcome,
    Retry,
    Submitted,
    Unknown,
)
from smppd.queue.memory import MemoryQueue
from smppd.queue.sqlite import SqliteQueue

CLIENTS = ("otp", "crm", "blast")


async def both(stores: list[Queue], method: str, *args: object, **kwargs: object) -> object:
    """Call one method on every store and check that they answer alike."""
    answers = [await getattr(store, method)(*args, **kwargs) for store in stores]
    if isinstance(answers[0], QueueStats):  # commits are counted differently by design
        answers = [replace(answer, commits=0) for answer in answers]
    assert answers[0] == answers[1], (method, args)
    return answers[0]


@pytest.mark.parametrize("seed", range(6))
async def test_random_workloads_agree(tmp_path: Path, seed: int) -> None:
    """Enqueues, claims, outcomes, receipts, cancels and purges leave both backends alike."""
    rng = random.Random(seed)
    sqlite = await SqliteQueue.open(tmp_path / "queue.db", receipt_hold_s=30, max_held_receipts=5)
    stores: list[Queue] = [sqlite, MemoryQueue(receipt_hold_s=30, max_held_receipts=5)]
    inflight: list[int] = []
    submitted: list[str] = []
    ids: list[int] = []
    seen: set[ReceiptOutcome] = set()
    now = T0
    try:
        for _ in range(300):
            now += rng.choice((0.0, 0.5, 3.0))
            op = rng.random()
            if op < 0.3:
                batch = [
                    message(
                        rng.choice(CLIENTS),
                        ref=rng.choice((None, None, f"r{rng.randrange(20)}")),
                        destination=f"+1555000{rng.randrange(5)}",
                        priority=rng.choice((0, 5, 9)),
                        not_before=rng.choice((None, None, now + 2)),
                        expires_at=rng.choice((None, None, now + 4)),
                        registered_delivery=rng.random() < 0.7,
                        segments=[b"s"] * rng.choice((1, 1, 2, 3)),
                    )
                    for _ in range(rng.randrange(1, 4))
                ]
                results = await both(stores, "enqueue", batch, now=now)
                assert isinstance(results, list)
                ids.extend(r.message_id for r in results)
            elif op < 0.5:
                claim = await both(stores, "claim", CARRIER, rng.randrange(1, 6), now=now)
                inflight.extend(s.segment_id for s in claim)  # type: ignore[attr-defined]
            elif op < 0.75 and inflight:
                rng.shuffle(inflight)
                outcomes: list[Outcome] = []
                for sid in inflight[: rng.randrange(1, 4)]:
                    kind = rng.random()
                    if kind < 0.6:
                        key = str(rng.randrange(40))
                        submitted.append(key)
                        outcomes.append(Submitted(sid, (key,), "b"))
                    elif kind < 0.8:
                        outcomes.append(Retry(sid, 0x58, now + rng.choice((0.0, 1.0))))
                    elif kind < 0.9:
                        outcomes.append(Unknown(sid, now))
                    else:
                        outcomes.append(Failed(sid, 0x45))
                del inflight[: len(outcomes)]
                await both(stores, "record", outcomes, now=now)
            elif op < 0.88:
                keys = [*submitted[-5:], str(rng.randrange(40))]
                receipts = [
                    ReceiptIn(
                        (rng.choice(keys),),
                        "DELIVRD",
                        rng.choice(("delivered", "undeliverable", None)),
                        "000",
                        rng.choice((T0, T0 + 1)),
                    )
                    for _ in range(rng.randrange(1, 3))
                ]
                results = await both(stores, "apply_receipts", CARRIER, receipts, now=now)
                assert isinstance(results, list)
                seen.update(r.outcome for r in results)
            elif op < 0.93 and ids:
                await both(stores, "cancel", rng.choice(ids), rng.choice((None, "otp")), now=now)
            elif op < 0.96:
                await both(stores, "cancel_queued_to", "*", f"+1555000{rng.randrange(5)}", now=now)
            elif op < 0.98:
                await both(stores, "purge", now - 5)
            else:
                await both(stores, "recover", now=now)
                inflight.clear()
            assert stores[0].queued_depth() == stores[1].queued_depth()
        for message_id in ids:
            await both(stores, "status", message_id, None)
        await both(stores, "stats", now=now + 100)
    finally:
        await sqlite.close()
    with sqlite3.connect(tmp_path / "queue.db") as db:
        real = dict(db.execute("SELECT state, COUNT(*) FROM segments GROUP BY state").fetchall())
    stats = await stores[1].stats(now=now)
    counted = {state.value: sum(n.values()) for state, n in stats.segments.items()}
    assert real == counted
    assert len(real) >= 4, real  # the workload reached several states
    assert {ReceiptOutcome.MATCHED, ReceiptOutcome.HELD} <= seen, seen
