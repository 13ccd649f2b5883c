"""A bare ESME on smppd's codec, for tests that watch the wire and for scripted sessions.

Owns nothing but a socket: it sends exactly the PDUs (or bytes) it is given and returns what
arrives, in wire order, one PDU at a time. No window, no retries, no automatic answers, so each
test sees the SMSC's behaviour unfiltered. Every read has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import TypeVar

from smppd.pdu.codec import PduReader, encode
from smppd.pdu.errors import DecodeError
from smppd.pdu.pdus import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    DeliverSm,
    DeliverSmResp,
    Pdu,
    SubmitSm,
    SubmitSmResp,
)

P = TypeVar("P", bound=Pdu)

_BINDS: dict[str, type[BindTransmitter | BindReceiver | BindTransceiver]] = {
    "tx": BindTransmitter,
    "rx": BindReceiver,
    "trx": BindTransceiver,
}


class ConnectionClosedError(Exception):
    """The SMSC closed the connection before the awaited PDU arrived."""


class EsmeClient:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, timeout_s: float = 5.0
    ) -> None:
        self.timeout_s = timeout_s  # for every read: nothing waits forever
        self._reader = reader
        self._writer = writer
        self._pdus = PduReader()
        self._sequence = 0

    @classmethod
    async def connect(cls, host: str, port: int, *, timeout_s: float = 5.0) -> EsmeClient:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, timeout_s=timeout_s)

    async def __aenter__(self) -> EsmeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    def send(self, pdu: Pdu) -> int:
        """Write `pdu` (numbered from our counter when its sequence_number is 0); its number."""
        if pdu.sequence_number == 0:
            pdu = dataclasses.replace(pdu, sequence_number=self.next_sequence())
        self._writer.write(encode(pdu))
        return pdu.sequence_number

    def send_raw(self, data: bytes) -> None:
        self._writer.write(data)

    async def read(self) -> Pdu:
        """The next PDU from the SMSC; DecodeError if it sent something undecodable."""
        async with asyncio.timeout(self.timeout_s):
            while True:
                pdu = self._pdus.next_pdu()
                if pdu is not None:
                    return pdu
                if self._pdus.broken:
                    raise DecodeError("framing lost", command_status=0, framing_lost=True)
                data = await self._reader.read(65536)
                if not data:
                    raise ConnectionClosedError("the SMSC closed the connection")
                self._pdus.feed(data)

    async def expect(self, cls: type[P]) -> P:
        """The next PDU, which must be a `cls` (TypeError naming what came instead)."""
        pdu = await self.read()
        if not isinstance(pdu, cls):
            raise TypeError(f"expected {cls.__name__}, got {pdu!r}")
        return pdu

    async def read_raw(self) -> bytes:
        """Bytes as they come, bypassing the codec (b"" at end of stream)."""
        async with asyncio.timeout(self.timeout_s):
            return await self._reader.read(65536)

    async def bind(
        self,
        kind: str = "trx",
        *,
        system_id: str = "smppd",
        password: str = "secret",  # noqa: S107 - the fake SMSC's default account
    ) -> Pdu:
        """Send a bind of `kind` (tx, rx or trx) and return its response (whatever status)."""
        self.send(_BINDS[kind](system_id=system_id, password=password))
        return await self.read()

    async def submit(self, pdu: SubmitSm) -> SubmitSmResp:
        """Send `pdu` and return the next PDU, which must be its resp."""
        seq = self.send(pdu)
        resp = await self.expect(SubmitSmResp)
        if resp.sequence_number != seq:
            raise ValueError(f"resp to {resp.sequence_number}, expected {seq}")
        return resp

    def ack(self, pdu: DeliverSm, status: int = 0) -> None:
        """Answer a deliver_sm."""
        self.send(DeliverSmResp(sequence_number=pdu.sequence_number, command_status=status))

    async def wait_closed(self) -> list[Pdu]:
        """Read until the SMSC closes the connection; the PDUs that came first."""
        pdus: list[Pdu] = []
        while True:
            try:
                pdus.append(await self.read())
            except ConnectionClosedError:
                return pdus

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
