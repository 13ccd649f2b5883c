"""Delivery receipts from the fake SMSC: content, timing modes, id formats and retries."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from smppd.pdu import national
from smppd.pdu.national import NationalLanguage, Shift
from smppd.pdu.pdus import (
    ESM_DELIVERY_RECEIPT,
    ESM_UDHI,
    DeliverSm,
    QuerySm,
    QuerySmResp,
    SubmitSm,
    SubmitSmResp,
)
from smppd.pdu.receipt import MessageState, ReceiptStat, parse_receipt_text, receipt_from_parts
from smppd.pdu.status import CommandStatus as S
from smppd.pdu.text import Alphabet
from smppd.pdu.tlv import Tag, get_bytes, get_int, get_str
from tools.fake_smsc import EsmeClient, FakeSmsc, IdFormat, ReceiptConfig, SmscConfig, outbox
from tools.fake_smsc.receipts import ReceiptRequest, receipt_pdu

TEXT = "Your code is 123456. It expires in 10 minutes."


def submit(registered_delivery: int = 1, text: str = TEXT) -> SubmitSm:
    return SubmitSm(
        source_addr="SMPPD",
        source_addr_ton=5,
        destination_addr="447700900123",
        dest_addr_ton=1,
        dest_addr_npi=1,
        registered_delivery=registered_delivery,
        short_message=text.encode("ascii"),
    )


def receipt_text(pdu: DeliverSm) -> str:
    return pdu.short_message.decode("ascii")


async def started(receipts: ReceiptConfig, **config: object) -> FakeSmsc:
    smsc = FakeSmsc(SmscConfig(port=0, receipts=receipts, **config))  # type: ignore[arg-type]
    await smsc.start()
    return smsc


@pytest.fixture
async def smsc() -> AsyncIterator[FakeSmsc]:
    async with FakeSmsc(SmscConfig(port=0)) as server:
        yield server


@pytest.fixture
async def client(smsc: FakeSmsc) -> AsyncIterator[EsmeClient]:
    async with await EsmeClient.connect(smsc.host, smsc.port) as esme:
        assert (await esme.bind()).command_status == 0
        yield esme


async def test_receipt_follows_the_resp_with_the_standard_text_and_tlvs(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """A receipt: esm_class 0x04, Appendix B text, receipted_message_id and message_state."""
    resp = await client.submit(submit())
    receipt = await client.expect(DeliverSm)
    assert receipt.esm_class == ESM_DELIVERY_RECEIPT
    assert (receipt.source_addr, receipt.source_addr_ton) == ("447700900123", 1)
    assert (receipt.destination_addr, receipt.dest_addr_ton) == ("SMPPD", 5)
    text = receipt_text(receipt)
    assert text.startswith(f"id:{resp.message_id} sub:001 dlvrd:001 submit date:")
    assert "stat:DELIVRD err:000 text:Your code is 123456" in text
    assert text.endswith("text:" + TEXT[:20])
    assert get_str(receipt.tlvs, Tag.receipted_message_id) == resp.message_id
    assert get_int(receipt.tlvs, Tag.message_state) == MessageState.DELIVERED
    parsed = parse_receipt_text(text)
    assert parsed is not None
    assert parsed.submit_date is not None
    assert parsed.done_date is not None
    client.ack(receipt)


async def test_the_excerpt_of_a_text_in_national_tables_reads_as_its_text(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """A submit whose UDH names the Turkish locking shift table: the receipt's text excerpt
    is read with it, "?" for İ (which the receipt's default alphabet lacks), not the ¡ the
    same septet is in the default table."""
    locking = Shift(locking=NationalLanguage.TURKISH)
    pdu = submit()
    pdu.esm_class = ESM_UDHI
    pdu.short_message = bytes((3,)) + locking.elements() + national.encode("İstanbul", locking)
    await client.submit(pdu)
    receipt = await client.expect(DeliverSm)
    assert receipt_text(receipt).endswith("text:?stanbul")
    client.ack(receipt)


async def test_no_receipt_unless_asked(smsc: FakeSmsc, client: EsmeClient) -> None:
    """registered_delivery 0 gets no receipt; 2 (failure only) gets none for DELIVRD."""
    await client.submit(submit(registered_delivery=0))
    await client.submit(submit(registered_delivery=2))
    last = await client.submit(submit(registered_delivery=1))
    receipt = await client.expect(DeliverSm)
    assert get_str(receipt.tlvs, Tag.receipted_message_id) == last.message_id
    client.ack(receipt)


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("UNDELIV", MessageState.UNDELIVERABLE),
        ("EXPIRED", MessageState.EXPIRED),
        ("REJECTD", MessageState.REJECTED),
    ],
)
async def test_outcome_weights_choose_the_stat(word: str, state: MessageState) -> None:
    """With all the weight on one failure, every receipt reports it (text and TLVs agree)."""
    smsc = await started(ReceiptConfig(outcomes={word: 1.0}))
    try:
        async with await EsmeClient.connect(smsc.host, smsc.port) as client:
            await client.bind()
            await client.submit(submit(registered_delivery=2))  # failure-only still gets it
            receipt = await client.expect(DeliverSm)
            client.ack(receipt)
    finally:
        await smsc.stop()
    parsed = receipt_from_parts(
        receipt_text(receipt),
        receipted_message_id=get_str(receipt.tlvs, Tag.receipted_message_id),
        message_state=get_int(receipt.tlvs, Tag.message_state),
        network_error_code=get_bytes(receipt.tlvs, Tag.network_error_code),
    )
    assert parsed is not None
    assert parsed.stat is ReceiptStat(word)
    assert f"stat:{word} err:001" in receipt_text(receipt)
    assert "dlvrd:000" in receipt_text(receipt)
    assert get_int(receipt.tlvs, Tag.message_state) == state


async def test_outcome_mix(smsc: FakeSmsc, client: EsmeClient) -> None:
    """A 50/50 mix gives both outcomes over a run of receipts."""
    smsc.rng.seed(7)
    smsc.set_receipts(outcomes={"DELIVRD": 1, "UNDELIV": 1})
    stats = set()
    for _ in range(20):
        await client.submit(submit())
        receipt = await client.expect(DeliverSm)
        client.ack(receipt)
        stats.add(get_int(receipt.tlvs, Tag.message_state))
    assert stats == {MessageState.DELIVERED, MessageState.UNDELIVERABLE}


async def test_lost_receipts_are_never_sent(smsc: FakeSmsc, client: EsmeClient) -> None:
    """`lost: 1.0` sends none (a carrier that loses them); the message is settled anyway, and
    setting it back to 0 sends the next one."""
    smsc.set_receipts(lost=1.0)
    lost = await client.submit(submit())
    smsc.set_receipts(lost=0.0)
    kept = await client.submit(submit())
    receipt = await client.expect(DeliverSm)  # the first deliver_sm is the second's receipt
    assert get_str(receipt.tlvs, Tag.receipted_message_id) == kept.message_id
    client.ack(receipt)
    tracked = smsc.tracker.get(lost.message_id)
    assert tracked is not None
    assert tracked.is_final
    with pytest.raises(ValueError, match="lost must be a share"):
        smsc.set_receipts(lost=1.5)


async def test_receipt_delay_lets_other_answers_come_first(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """With delay_s, the receipt comes after responses to later requests."""
    smsc.set_receipts(delay_s=0.2)
    first = await client.submit(submit())
    await client.submit(submit(registered_delivery=0))
    receipt = await client.expect(DeliverSm)
    assert get_str(receipt.tlvs, Tag.receipted_message_id) == first.message_id
    client.ack(receipt)


async def test_receipt_before_resp_puts_it_first_on_the_wire(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """before_resp: the deliver_sm for a message precedes its submit_sm_resp."""
    smsc.set_receipts(before_resp=True, delay_s=10)  # the delay does not apply
    seq = client.send(submit())
    receipt = await client.expect(DeliverSm)
    resp = await client.expect(SubmitSmResp)
    assert resp.sequence_number == seq
    assert get_str(receipt.tlvs, Tag.receipted_message_id) == resp.message_id
    client.ack(receipt)


async def test_duplicate_mode_sends_each_receipt_twice(smsc: FakeSmsc, client: EsmeClient) -> None:
    """duplicate: two deliver_sm with the same receipted_message_id."""
    smsc.set_receipts(duplicate=True)
    resp = await client.submit(submit())
    first, second = await client.expect(DeliverSm), await client.expect(DeliverSm)
    for receipt in (first, second):
        assert get_str(receipt.tlvs, Tag.receipted_message_id) == resp.message_id
        client.ack(receipt)
    assert first.sequence_number != second.sequence_number


async def test_per_message_mode_sends_one_receipt_for_the_last_part(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """per_message: the parts of a concatenated message (UDH 8-bit reference) before the last
    get no receipt; the last one does, and a single-part message still gets its own."""
    smsc.set_receipts(per_message=True)
    resps = []
    for seq in (1, 2, 3):
        part = SubmitSm(
            source_addr="SMPPD",
            destination_addr="447700900123",
            esm_class=0x40,  # UDHI
            registered_delivery=1,
            short_message=bytes([5, 0, 3, 0x2A, 3, seq]) + f"part {seq}".encode("ascii"),
        )
        resps.append(await client.submit(part))  # the next PDU is each one's resp, no receipt
    last = await client.expect(DeliverSm)
    assert get_str(last.tlvs, Tag.receipted_message_id) == resps[2].message_id
    client.ack(last)
    single = await client.submit(submit())
    receipt = await client.expect(DeliverSm)
    assert get_str(receipt.tlvs, Tag.receipted_message_id) == single.message_id
    client.ack(receipt)


async def test_hex_in_the_resp_and_decimal_in_the_receipt() -> None:
    """id_format decimal on receipts: the resp says 0000002a, the receipt 42."""
    smsc = await started(
        ReceiptConfig(id_format=IdFormat.DECIMAL),
        message_id_format=IdFormat.HEX,
        message_id_start=42,
    )
    try:
        async with await EsmeClient.connect(smsc.host, smsc.port) as client:
            await client.bind()
            resp = await client.submit(submit())
            receipt = await client.expect(DeliverSm)
            client.ack(receipt)
    finally:
        await smsc.stop()
    assert resp.message_id == "0000002a"
    assert receipt_text(receipt).startswith("id:42 ")
    assert get_str(receipt.tlvs, Tag.receipted_message_id) == "42"


async def test_unacknowledged_receipt_is_resent_after_the_retry_timeout(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """A receipt not answered within retry_timeout_s comes again, with a new sequence_number."""
    smsc.set_receipts(retry_timeout_s=0.1)
    await client.submit(submit())
    first = await client.expect(DeliverSm)
    again = await client.expect(DeliverSm)  # we did not answer the first
    assert again.short_message == first.short_message
    assert again.sequence_number != first.sequence_number
    client.ack(again)
    acked = smsc.outbox.stats["receipt"]
    assert (acked.sent, acked.retried) == (2, 1)


async def test_a_shorter_retry_timeout_applies_to_the_receipts_sent_after_it(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """retry_timeout_s lowered from 60 to 0.1 while one receipt is out: the one sent after it
    comes again in 0.1 s, not once the first one's 60 s are up."""
    smsc.set_receipts(retry_timeout_s=60.0)
    await client.submit(submit())
    first = await client.expect(DeliverSm)
    smsc.set_receipts(retry_timeout_s=0.1)
    await client.submit(submit())
    second = await client.expect(DeliverSm)
    again = await client.expect(DeliverSm)  # neither answered: the second's comes again
    assert again.short_message == second.short_message != first.short_message
    client.ack(again)
    client.ack(first)


async def test_error_status_on_deliver_sm_resp_means_retry(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """deliver_sm_resp with a non-zero status is no ack: the receipt is sent again."""
    smsc.set_receipts(retry_timeout_s=0.05)
    await client.submit(submit())
    first = await client.expect(DeliverSm)
    client.ack(first, status=S.ESME_RX_T_APPN)
    again = await client.expect(DeliverSm)
    assert again.short_message == first.short_message
    client.ack(again)
    # The SMSC reads the ack before this submit, so once it is answered the receipt is settled.
    await client.submit(submit(registered_delivery=0))
    assert smsc.outbox.waiting() == 0
    stats = smsc.outbox.stats["receipt"]
    assert (stats.sent, stats.acked, stats.retried) == (2, 1, 1)


async def test_receipt_waits_for_a_receiver_bind_of_the_same_account(smsc: FakeSmsc) -> None:
    """Submitted on a transmitter, the receipt goes to the receiver that binds afterwards."""
    async with await EsmeClient.connect(smsc.host, smsc.port) as tx:
        await tx.bind("tx")
        resp = await tx.submit(submit())
        assert smsc.outbox.waiting("smppd") == 1
        async with await EsmeClient.connect(smsc.host, smsc.port) as rx:
            await rx.bind("rx")
            receipt = await rx.expect(DeliverSm)
            rx.ack(receipt)
            assert get_str(receipt.tlvs, Tag.receipted_message_id) == resp.message_id


async def test_receipt_in_flight_on_a_lost_connection_goes_to_the_next_bind(
    smsc: FakeSmsc,
) -> None:
    """A receipt unanswered when its connection drops is delivered on the next receiver."""
    smsc.set_receipts(retry_timeout_s=30)
    async with await EsmeClient.connect(smsc.host, smsc.port) as first:
        await first.bind()
        resp = await first.submit(submit())
        await first.expect(DeliverSm)  # not answered
    async with await EsmeClient.connect(smsc.host, smsc.port) as second:
        await second.bind("rx")
        receipt = await second.expect(DeliverSm)
        second.ack(receipt)
    assert get_str(receipt.tlvs, Tag.receipted_message_id) == resp.message_id


async def test_receipts_alternate_between_receiver_binds(smsc: FakeSmsc) -> None:
    """With two receivers up, receipts are spread over both."""
    async with (
        await EsmeClient.connect(smsc.host, smsc.port) as tx,
        await EsmeClient.connect(smsc.host, smsc.port) as one,
        await EsmeClient.connect(smsc.host, smsc.port) as two,
    ):
        await tx.bind("tx")
        await one.bind("rx")
        await two.bind("rx")
        ids = {(await tx.submit(submit())).message_id, (await tx.submit(submit())).message_id}
        got = set()
        for esme in (one, two):
            receipt = await esme.expect(DeliverSm)
            esme.ack(receipt)
            got.add(get_str(receipt.tlvs, Tag.receipted_message_id))
    assert got == ids


async def test_query_sm_after_the_receipt_reports_the_final_state(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """Once the receipt is out, query_sm says DELIVERED."""
    resp = await client.submit(submit())
    client.ack(await client.expect(DeliverSm))
    client.send(QuerySm(message_id=resp.message_id))
    assert (await client.expect(QuerySmResp)).message_state == MessageState.DELIVERED


async def test_long_message_excerpt_is_cut_at_20_characters(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """text: carries the first 20 characters only."""
    await client.submit(submit(text="A" * 30))
    receipt = await client.expect(DeliverSm)
    client.ack(receipt)
    assert receipt_text(receipt).endswith("text:" + "A" * 20)


def test_rng_is_replaceable() -> None:
    """Tests seed the SMSC's randomness through `rng`."""
    smsc = FakeSmsc(SmscConfig(port=0))
    smsc.rng = random.Random(3)
    assert smsc.rng.random() == random.Random(3).random()


async def test_receipts_waiting_for_a_receiver_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no receiver bound, receipts wait; past MAX_WAITING the oldest are dropped and
    counted, so a client slower than its submits cannot grow the SMSC without end."""
    monkeypatch.setattr(outbox, "MAX_WAITING", 5)
    async with (
        FakeSmsc(SmscConfig(port=0)) as smsc,
        await EsmeClient.connect(smsc.host, smsc.port) as client,
    ):
        await client.bind("tx")  # takes no deliver_sm
        for _ in range(8):
            await client.submit(submit())
        assert smsc.outbox.waiting() == 5
        assert smsc.stats()["outbox"]["receipt"]["dropped"] == 3


@pytest.mark.parametrize(
    ("stat", "err", "network_error"),
    [
        (ReceiptStat.DELIVRD, "000", None),
        (ReceiptStat.ACCEPTD, "000", None),  # intermediate: no error to report
        (ReceiptStat.ENROUTE, "000", None),
        (ReceiptStat.UNDELIV, "001", b"\x03\x00\x01"),
        (ReceiptStat.EXPIRED, "001", b"\x03\x00\x01"),
    ],
)
def test_only_a_failure_carries_an_error(
    stat: ReceiptStat, err: str, network_error: bytes | None
) -> None:
    pdu = receipt_pdu(
        ReceiptRequest(1, 5, 0, "SMPPD", 1, 1, "447700900123", 0, b""),
        stat,
        submit_time=0.0,
        receipt_id="1",
        done_time=0.0,
        excerpt="",
        alphabet=Alphabet.GSM7,
    )
    assert f"stat:{stat.value} err:{err} " in pdu.short_message.decode()
    assert get_bytes(pdu.tlvs, Tag.network_error_code) == network_error
