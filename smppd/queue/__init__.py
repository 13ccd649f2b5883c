"""The durable queue: messages, segments, outcomes, receipts, inbound messages and opt-outs.

Callers use the `Queue` protocol and the values in smppd.queue.model; `open_queue` picks the
backend by name, the one place that does. Nothing outside this package writes SQL, and nothing in
it knows SMPP sessions or the codec (a segment's wire parameters are an opaque body).
"""

from __future__ import annotations

from os import PathLike
from typing import Final

from smppd.queue.base import Queue
from smppd.queue.errors import QueueClosedError, QueueError, QueueInUseError, StorageFullError
from smppd.queue.memory import MemoryQueue
from smppd.queue.model import (
    OPTOUT_ALL_SENDERS,
    Change,
    Claim,
    ClaimedSegment,
    Deferred,
    Enqueued,
    Failed,
    Inbound,
    InboundIn,
    MessageStatus,
    NewMessage,
    OptOut,
    Outcome,
    QueueStats,
    ReceiptIn,
    ReceiptOutcome,
    ReceiptResult,
    Retry,
    SegmentStatus,
    Submitted,
    Unknown,
)
from smppd.queue.sqlite import DEFAULT_COMMIT_INTERVAL_S, SqliteQueue
from smppd.queue.states import FINAL_STATES, MessageState, SegmentState

BACKENDS: Final = ("sqlite", "memory")


async def open_queue(
    backend: str,
    path: str | PathLike[str] | None = None,
    *,
    receipt_hold_s: float = 600.0,
    max_held_receipts: int = 10_000,
    commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S,
) -> Queue:
    """Open the named backend ("sqlite" needs `path`; "memory" keeps nothing)."""
    if backend == "sqlite":
        if path is None:
            raise ValueError("the sqlite queue needs a path")
        return await SqliteQueue.open(
            path,
            receipt_hold_s=receipt_hold_s,
            max_held_receipts=max_held_receipts,
            commit_interval_s=commit_interval_s,
        )
    if backend == "memory":
        return MemoryQueue(receipt_hold_s=receipt_hold_s, max_held_receipts=max_held_receipts)
    raise ValueError(f"unknown queue backend {backend!r} (known: {', '.join(BACKENDS)})")


__all__ = [
    "BACKENDS",
    "FINAL_STATES",
    "OPTOUT_ALL_SENDERS",
    "Change",
    "Claim",
    "ClaimedSegment",
    "Deferred",
    "Enqueued",
    "Failed",
    "Inbound",
    "InboundIn",
    "MemoryQueue",
    "MessageState",
    "MessageStatus",
    "NewMessage",
    "OptOut",
    "Outcome",
    "Queue",
    "QueueClosedError",
    "QueueError",
    "QueueInUseError",
    "QueueStats",
    "ReceiptIn",
    "ReceiptOutcome",
    "ReceiptResult",
    "Retry",
    "SegmentState",
    "SegmentStatus",
    "SqliteQueue",
    "StorageFullError",
    "Submitted",
    "Unknown",
    "open_queue",
]
