"""Helpers for tests that play an SMSC by hand on a raw socket (what the fake SMSC will not do)."""

from __future__ import annotations

import asyncio

from smppd.pdu.codec import HEADER_SIZE


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int]:
    """Read one PDU; its (command_id, sequence_number)."""
    header = await reader.readexactly(HEADER_SIZE)
    await reader.readexactly(int.from_bytes(header[:4], "big") - HEADER_SIZE)
    return int.from_bytes(header[4:8], "big"), int.from_bytes(header[12:16], "big")
