"""The daemon's retention pass: overdue receipts are given up on, then finished messages purged."""

from __future__ import annotations

from pathlib import Path

from queue_support import CARRIER, T0, message

from smppd.config import load_config
from smppd.daemon import Daemon
from smppd.pdu.receipt import correlation_keys
from smppd.queue import MemoryQueue, MessageState, Submitted

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "smppd.yaml"


async def test_retention_gives_up_on_overdue_receipts_and_counts_them() -> None:
    config = load_config(SHIPPED)
    queue = MemoryQueue()
    daemon = Daemon(config, SHIPPED, queue)
    (enq,) = await queue.enqueue([message()], now=T0)
    (seg,) = await queue.claim(CARRIER, 1, now=T0)
    await queue.record([Submitted(seg.segment_id, correlation_keys("9"), "b")], now=T0)
    wait, keep = config.queue.receipt_wait_s, config.queue.retention_s

    await daemon._retention(T0 + wait - 1)
    assert daemon._extra_counters()["receipts_overdue"] == 0
    await daemon._retention(T0 + wait + 1)
    assert daemon._extra_counters()["receipts_overdue"] == 1
    status = await queue.status(enq.message_id, None)
    assert status is not None
    assert status.state is MessageState.SUBMITTED
    await daemon._retention(T0 + wait + 2 + keep)
    assert await queue.status(enq.message_id, None) is None
