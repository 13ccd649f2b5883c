"""Mobile-originated messages injected into the fake SMSC reach the receiver binds."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from smppd.pdu import national
from smppd.pdu.codec import PduReader, encode
from smppd.pdu.national import NationalLanguage, shift_of
from smppd.pdu.pdus import (
    ESM_UDHI,
    BindTransceiver,
    BindTransceiverResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
)
from smppd.pdu.segment import ConcatMethod
from smppd.pdu.text import Alphabet, decode_text
from smppd.pdu.tlv import Tag, get_bytes, get_int
from smppd.pdu.udh import ConcatPart, Reassembler, concat_info, parse_udh
from tools.fake_smsc import Account, EsmeClient, FakeSmsc, SmscConfig


@pytest.fixture
async def smsc() -> AsyncIterator[FakeSmsc]:
    async with FakeSmsc(SmscConfig(port=0)) as server:
        yield server


async def bound(smsc: FakeSmsc, kind: str = "trx", **credentials: str) -> EsmeClient:
    client = await EsmeClient.connect(smsc.host, smsc.port)
    assert (await client.bind(kind, **credentials)).command_status == 0
    return client


def rejoin(pdus: list[DeliverSm]) -> str:
    """The text of MO parts, reassembled as a receiving ESME would."""
    reassembler = Reassembler()
    whole: list[bytes] | None = None
    for pdu in pdus:
        if pdu.esm_class & ESM_UDHI:
            elements, data = parse_udh(pdu.short_message)
            info = concat_info(elements)
            assert info is not None
            part = ConcatPart(info.ref, info.total, info.seq, data)
        elif (total := get_int(pdu.tlvs, Tag.sar_total_segments)) is not None:
            ref = get_int(pdu.tlvs, Tag.sar_msg_ref_num)
            seq = get_int(pdu.tlvs, Tag.sar_segment_seqnum)
            assert ref is not None
            assert seq is not None
            part = ConcatPart(ref, total, seq, pdu.short_message)
        else:
            data = get_bytes(pdu.tlvs, Tag.message_payload) or pdu.short_message
            part = ConcatPart(0, 1, 1, data)
        whole = reassembler.add("mo", part, now=0.0) or whole
    assert whole is not None
    return decode_text(b"".join(whole), pdus[0].data_coding, default_alphabet=Alphabet.GSM7)


async def test_injected_stop_reaches_the_transceiver(smsc: FakeSmsc) -> None:
    """inject_mo delivers a deliver_sm with the handset's number, the short code and the text."""
    async with await bound(smsc) as client:
        acked = await smsc.inject_mo(source="+447700900123", destination="12345", text="STOP")
        mo = await client.expect(DeliverSm)
        assert (mo.source_addr, mo.source_addr_ton, mo.source_addr_npi) == ("447700900123", 1, 1)
        assert mo.destination_addr == "12345"
        assert (mo.esm_class, mo.data_coding, mo.short_message) == (0, 0, b"STOP")
        assert not acked.done()
        client.ack(mo)
        async with asyncio.timeout(5):
            await acked
    assert smsc.outbox.stats["mo"].acked == 1


async def test_mo_waits_for_a_receiver_and_skips_transmitters(smsc: FakeSmsc) -> None:
    """Queued before any bind, the MO goes to the receiver, never to a transmitter."""
    acked = await smsc.inject_mo(source="+447700900123", destination="12345", text="HELP")
    async with await bound(smsc, "tx") as tx, await bound(smsc, "rx") as rx:
        mo = await rx.expect(DeliverSm)
        assert mo.short_message == b"HELP"
        rx.ack(mo)
        async with asyncio.timeout(5):
            await acked
        # The transmitter got nothing: its next PDU is the answer to this enquire_link.
        seq = tx.send(EnquireLink())
        assert (await tx.expect(EnquireLinkResp)).sequence_number == seq


async def test_mo_goes_to_the_named_account_only() -> None:
    """With two accounts, an MO for one is never delivered to the other's bind."""
    config = SmscConfig(port=0, accounts=(Account(), Account(system_id="other", password="pw")))
    async with FakeSmsc(config) as smsc:
        async with (
            await bound(smsc, system_id="other", password="pw") as other,
            await bound(smsc) as mine,
        ):
            await smsc.inject_mo(source="+4470", destination="1", text="for mine")
            await smsc.inject_mo(source="+4470", destination="1", text="for other", account="other")
            assert (await mine.expect(DeliverSm)).short_message == b"for mine"
            assert (await other.expect(DeliverSm)).short_message == b"for other"
        with pytest.raises(ValueError, match="no account"):
            await smsc.inject_mo(source="+4470", destination="1", text="x", account="nobody")


@pytest.mark.parametrize(
    "method", [ConcatMethod.UDH8, ConcatMethod.UDH16, ConcatMethod.SAR, ConcatMethod.PAYLOAD]
)
@pytest.mark.parametrize(
    "text", ["Reply to this with your {order} number, please. " * 8, "Ünïcödé ☃ and emoji 🎉 " * 12]
)
async def test_long_mo_arrives_in_segments_that_rejoin(
    smsc: FakeSmsc, method: ConcatMethod, text: str
) -> None:
    """A text longer than one segment is split (UDH, SAR or payload) and rejoins exactly."""
    async with await bound(smsc) as client:
        acked = await smsc.inject_mo(
            source="+447700900123", destination="12345", text=text, concatenation=method
        )
        pdus = [await client.expect(DeliverSm)]
        pdus += [await client.expect(DeliverSm) for _ in range(_total(pdus[0]) - 1)]
        for pdu in pdus:
            client.ack(pdu)
        async with asyncio.timeout(5):
            await acked
    assert (len(pdus) == 1) is (method is ConcatMethod.PAYLOAD)
    assert rejoin(pdus) == text


def _total(pdu: DeliverSm) -> int:
    if pdu.esm_class & ESM_UDHI:
        info = concat_info(parse_udh(pdu.short_message)[0])
        assert info is not None
        return info.total
    total = get_int(pdu.tlvs, Tag.sar_total_segments)
    return 1 if total is None else total


async def test_unacknowledged_mo_is_retried(smsc: FakeSmsc) -> None:
    """An MO not answered is sent again after the retry timeout."""
    smsc.set_receipts(retry_timeout_s=0.05)
    async with await bound(smsc) as client:
        acked = await smsc.inject_mo(source="+4470", destination="1", text="again")
        first = await client.expect(DeliverSm)
        second = await client.expect(DeliverSm)
        assert first.short_message == second.short_message == b"again"
        client.ack(second)
        async with asyncio.timeout(5):
            await acked


async def test_an_mo_can_come_in_the_turkish_tables(smsc: FakeSmsc) -> None:
    """With `national`, Turkish goes as a Turkish handset writes it: GSM 7-bit septets in the
    Turkish tables, named in each part's UDH after the concatenation IE."""
    text = "Yarın sabah İstanbul'a uçuyorum; şehirde görüşürüz. " * 4
    async with await bound(smsc) as client:
        await smsc.inject_mo(
            source="+905321234567",
            destination="12345",
            text=text,
            national=NationalLanguage.TURKISH,
        )
        pdus = [await client.expect(DeliverSm)]
        pdus += [await client.expect(DeliverSm) for _ in range(_total(pdus[0]) - 1)]
        for pdu in pdus:
            client.ack(pdu)
    texts = []
    for pdu in pdus:
        elements, septets = parse_udh(pdu.short_message)
        assert pdu.data_coding == 0
        assert [e.iei for e in elements] == [0x00, 0x24]  # two parts either way: single shift
        texts.append(national.decode(septets, shift_of(elements)))
    assert "".join(texts) == text
    assert len(pdus) == 2  # UCS-2 would take 4


async def test_national_tables_need_udh_concatenation(smsc: FakeSmsc) -> None:
    with pytest.raises(ValueError, match="udh8 or udh16"):
        await smsc.inject_mo(
            source="+905321234567",
            destination="12345",
            text="teşekkürler",
            concatenation=ConcatMethod.SAR,
            national=NationalLanguage.TURKISH,
        )


async def raw_transceiver(smsc: FakeSmsc, sock: socket.socket) -> PduReader:
    """Bind `sock` (non-blocking) as a transceiver; the reader holding what came after."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        await loop.sock_connect(sock, (smsc.host, smsc.port))
        bind = BindTransceiver(sequence_number=1, system_id="smppd", password="secret")
        await loop.sock_sendall(sock, encode(bind))
        pdus = PduReader()
        while (resp := pdus.next_pdu()) is None:
            pdus.feed(await loop.sock_recv(sock, 4096))
    assert isinstance(resp, BindTransceiverResp)
    assert resp.command_status == 0
    return pdus


async def test_a_receiver_that_stops_reading_gets_no_more_deliver_sm() -> None:
    """Past the transport's high-water mark no deliver_sm is written, retries included, so the
    server's buffer stays bounded; once the client reads again every MO arrives."""
    loop = asyncio.get_running_loop()
    async with FakeSmsc(SmscConfig(port=0, outbound_window=10)) as smsc:
        smsc.set_receipts(retry_timeout_s=0.02)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and it never reads
        sock.setblocking(False)
        with sock:
            pdus = await raw_transceiver(smsc, sock)
            connection = smsc.connections[0]
            transport = connection._transport
            assert transport is not None
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            transport.set_write_buffer_limits(high=4096)
            paused, idle = asyncio.Event(), asyncio.Event()
            pause_writing, forget = connection.pause_writing, connection.forget

            def pausing() -> None:
                pause_writing()
                paused.set()

            def forgetting(sequence_number: int) -> None:
                forget(sequence_number)
                if not connection.info()["deliver_sm_in_flight"]:
                    idle.set()

            connection.pause_writing = pausing  # type: ignore[method-assign]
            connection.forget = forgetting  # type: ignore[method-assign]
            texts = {f"{n:03d} " + "x" * 150 for n in range(100)}
            for text in sorted(texts):
                await smsc.inject_mo(source="+447700900123", destination="12345", text=text)
            async with asyncio.timeout(2):
                await paused.wait()
                # Every attempt written before the pause times out; none is written again.
                await idle.wait()
            one_round = 10 * 250  # the outbound window of deliver_sm, written in one go
            assert transport.get_write_buffer_size() <= 4096 + one_round
            assert smsc.outbox.waiting() == 100

            smsc.set_receipts(retry_timeout_s=5.0)  # from now on every answer is in time
            received: set[str] = set()

            async def read_and_ack() -> None:
                while True:
                    pdus.feed(await loop.sock_recv(sock, 65536))
                    acks = []
                    while (pdu := pdus.next_pdu()) is not None:
                        assert isinstance(pdu, DeliverSm)
                        received.add(pdu.short_message.decode())
                        acks.append(encode(DeliverSmResp(sequence_number=pdu.sequence_number)))
                    await loop.sock_sendall(sock, b"".join(acks))

            reader = asyncio.create_task(read_and_ack())
            async with asyncio.timeout(5):
                await smsc.outbox.wait_acked("mo", 100)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    assert received == texts
