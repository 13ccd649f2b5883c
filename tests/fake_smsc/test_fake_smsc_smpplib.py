"""The fake SMSC against smpplib, an independent SMPP client (blocking, run in a thread)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.gsm

from smppd.pdu.receipt import parse_receipt_text
from tools.fake_smsc import FakeSmsc, SmscConfig

PLAIN = "Your code is 123456"
LONG = "This message is long enough to need three parts when sent in GSM 03.38. " * 5
UNICODE_LONG = "Ünïcödé ☃ with emoji 🎉 and more, " * 5
DEADLINE_S = 10.0


@pytest.fixture
async def smsc() -> AsyncIterator[FakeSmsc]:
    async with FakeSmsc(SmscConfig(port=0)) as server:
        yield server


def new_client(port: int) -> Any:
    return smpplib.client.Client("127.0.0.1", port, timeout=2, allow_unknown_opt_params=True)


def send_and_collect(port: int, texts: list[str]) -> dict[str, list[Any]]:
    """Bind a transceiver, send `texts` asking for receipts, read until every receipt is in."""
    client = new_client(port)
    sent: list[Any] = []
    received: list[Any] = []
    # smpplib calls its handlers with pdu= as a keyword.
    client.set_message_sent_handler(lambda pdu: sent.append(pdu))  # noqa: PLW0108
    client.set_message_received_handler(lambda pdu: received.append(pdu))  # noqa: PLW0108
    client.connect()
    try:
        client.bind_transceiver(system_id="smppd", password="secret")
        submitted = 0
        for text in texts:
            parts, encoding, esm_class = smpplib.gsm.make_parts(text)
            for part in parts:
                client.send_message(
                    source_addr_ton=smpplib.consts.SMPP_TON_ALNUM,
                    source_addr="SMPPD",
                    dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
                    dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
                    destination_addr="447700900123",
                    short_message=part,
                    data_coding=encoding,
                    esm_class=esm_class,
                    registered_delivery=True,
                )
                submitted += 1
        deadline = time.monotonic() + DEADLINE_S
        while (len(sent) < submitted or len(received) < submitted) and (
            time.monotonic() < deadline
        ):
            client.read_once()
        client.unbind()
    finally:
        client.disconnect()
    return {"sent": sent, "received": received}


async def test_plain_and_concatenated_messages_with_receipts(smsc: FakeSmsc) -> None:
    """smpplib's plain and UDH-concatenated submits arrive whole; every part gets a receipt."""
    result = await asyncio.to_thread(send_and_collect, smsc.port, [PLAIN, LONG, UNICODE_LONG])
    texts = [m.text for m in smsc.records.messages]
    assert texts == [PLAIN, LONG, UNICODE_LONG]
    assert smsc.records.messages[0].parts == 1
    assert all(m.parts > 1 for m in smsc.records.messages[1:])
    segments = smsc.records.segments
    assert len(result["sent"]) == len(segments)
    ids = {pdu.message_id.decode() for pdu in result["sent"]}
    assert ids == {s.message_id for s in segments}
    receipts = [parse_receipt_text(pdu.short_message.decode()) for pdu in result["received"]]
    assert {r.message_id for r in receipts if r is not None} == ids
    assert {int(pdu.esm_class) for pdu in result["received"]} == {4}
    assert {pdu.receipted_message_id.decode() for pdu in result["received"]} == ids
    assert smsc.outbox.stats["receipt"].acked == len(segments)


def bind_with(port: int, system_id: str, password: str) -> int:
    client = new_client(port)
    client.connect()
    try:
        client.bind_transmitter(system_id=system_id, password=password)
    except smpplib.exceptions.PDUError as exc:
        return int(exc.args[1])
    finally:
        client.disconnect()
    return 0


async def test_wrong_credentials_are_refused(smsc: FakeSmsc) -> None:
    """smpplib sees ESME_RINVPASWD and ESME_RINVSYSID as bind errors."""
    assert await asyncio.to_thread(bind_with, smsc.port, "smppd", "wrong") == 0x0E
    assert await asyncio.to_thread(bind_with, smsc.port, "nobody", "secret") == 0x0F
    assert await asyncio.to_thread(bind_with, smsc.port, "smppd", "secret") == 0


def receive_one(port: int, bound: Any) -> Any:
    client = new_client(port)
    received: list[Any] = []
    client.set_message_received_handler(lambda pdu: received.append(pdu))  # noqa: PLW0108
    client.connect()
    try:
        client.bind_receiver(system_id="smppd", password="secret")
        bound()
        deadline = time.monotonic() + DEADLINE_S
        while not received and time.monotonic() < deadline:
            client.read_once()
    finally:
        client.disconnect()
    return received[0] if received else None


async def test_mo_reaches_an_smpplib_receiver(smsc: FakeSmsc) -> None:
    """An injected MO arrives at smpplib's receiver, which acknowledges it."""
    loop = asyncio.get_running_loop()
    bound = asyncio.Event()
    worker = asyncio.ensure_future(
        asyncio.to_thread(receive_one, smsc.port, lambda: loop.call_soon_threadsafe(bound.set))
    )
    async with asyncio.timeout(DEADLINE_S):
        await bound.wait()
        acked = await smsc.inject_mo(source="+447700900123", destination="12345", text="STOP")
        await acked
        mo = await worker
    assert mo.short_message == b"STOP"
    assert mo.source_addr.decode() == "447700900123"
