"""Helpers shared by the queue tests: message builders and a fixed clock origin."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from smppd.queue import NewMessage

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
