"""Helpers shared by the queue tests: message builders and a fixed clock origin."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from smppd.queue import NewMessage, Queue, ReceiptIn, Submitted, Unknown

T0 = 1_700_000_000.0
CARRIER = "acme"


def message(
    client: str = "otp",
    *,
    ref: str | None = None,
    source: str = "ACME",
    destination: str = "+15550000001",
    carrier: str = CARRIER,
    priority: int = 5,
    not_before: float | None = None,
    expires_at: float | None = None,
    registered_delivery: bool = True,
    segments: Sequence[bytes] = (b"body",),
    send_now: bool = False,
) -> NewMessage:
    return NewMessage(
        client=client,
        ref=ref,
        source=source,
        destination=destination,
        carrier=carrier,
        priority=priority,
        not_before=not_before,
        expires_at=expires_at,
        registered_delivery=registered_delivery,
        segments=segments,
        send_now=send_now,
    )


def peek(path: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    """Read with a separate plain connection, as another process would."""
    with sqlite3.connect(path) as db:
        return db.execute(sql, args).fetchall()


async def expired_by_receipt_then_answered_late(store: Queue) -> int:
    """A message whose segment's first attempt timed out, the second was accepted as "a1" and
    a receipt said EXPIRED, then the first attempt's answer came late as "b2". Its id."""
    (enq,) = await store.enqueue([message()], now=T0)
    (seg,) = await store.claim(CARRIER, 1, now=T0)
    await store.record([Unknown(seg.segment_id, T0)], now=T0)
    (seg,) = await store.claim(CARRIER, 1, now=T0 + 10)
    await store.record([Submitted(seg.segment_id, ("a1",), "b", "a1")], now=T0 + 10)
    expired = ReceiptIn(("a1",), "EXPIRED", "expired", "000", T0)
    await store.apply_receipts(CARRIER, [expired], now=T0 + 11)
    late = Submitted(seg.segment_id, ("b2",), "b", "b2", late=True)
    assert await store.record([late], now=T0 + 12) == []  # what the carrier said stands
    return enq.message_id
