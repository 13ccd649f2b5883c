"""The fake SMSC's protocol behaviour: binds, commands, and what it answers to bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from smppd.pdu.codec import encode, frame
from smppd.pdu.command import CommandId
from smppd.pdu.pdus import (
    BindReceiverResp,
    BindTransceiverResp,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    DataSm,
    DataSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    ReplaceSmResp,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
)
from smppd.pdu.receipt import MessageState
from smppd.pdu.status import CommandStatus as S
from smppd.pdu.tlv import Tag, Tlv
from tools.fake_smsc import Account, EsmeClient, FakeSmsc, IdFormat, SmscConfig

SUBMIT = SubmitSm(source_addr="SMPPD", destination_addr="447700900123", short_message=b"hi")


@pytest.fixture
async def smsc() -> AsyncIterator[FakeSmsc]:
    async with FakeSmsc(SmscConfig(port=0)) as server:
        yield server


async def connect(smsc: FakeSmsc) -> EsmeClient:
    return await EsmeClient.connect(smsc.host, smsc.port)


async def test_defaults_match_the_shipped_daemon_config() -> None:
    """Without arguments the SMSC listens on 127.0.0.1:2775 for smppd/secret."""
    config = SmscConfig()
    assert (config.host, config.port) == ("127.0.0.1", 2775)
    assert config.accounts == (Account(system_id="smppd", password="secret"),)


async def test_port_zero_reports_the_real_port(smsc: FakeSmsc) -> None:
    """Started on port 0, the server exposes the port it got."""
    assert smsc.port > 0
    async with await connect(smsc) as client:
        assert (await client.bind()).command_status == 0


@pytest.mark.parametrize(
    ("kind", "resp_cls"),
    [("tx", BindTransmitterResp), ("rx", BindReceiverResp), ("trx", BindTransceiverResp)],
)
async def test_each_bind_kind_is_accepted(
    smsc: FakeSmsc, kind: str, resp_cls: type[BindTransmitterResp]
) -> None:
    """bind_transmitter, bind_receiver and bind_transceiver get their own resp with ESME_ROK."""
    async with await connect(smsc) as client:
        resp = await client.bind(kind)
        assert type(resp) is resp_cls
        assert isinstance(resp, BindTransmitterResp | BindReceiverResp | BindTransceiverResp)
        assert resp.command_status == 0
        assert resp.system_id == "fake_smsc"
    assert smsc.connections[0].account == "smppd"


async def test_unknown_system_id_and_wrong_password_are_refused(smsc: FakeSmsc) -> None:
    """A wrong system_id gets ESME_RINVSYSID, a wrong password ESME_RINVPASWD."""
    async with await connect(smsc) as client:
        assert (await client.bind(system_id="nobody")).command_status == S.ESME_RINVSYSID
        assert (await client.bind(password="wrong")).command_status == S.ESME_RINVPASWD
        assert smsc.bound() == []
        # Still open: a correct bind on the same connection works.
        assert (await client.bind()).command_status == 0
        assert smsc.bound() == smsc.connections


async def test_bind_cap_per_account() -> None:
    """Past max_binds an account's next bind gets ESME_RALYBND; a freed slot can be reused."""
    config = SmscConfig(port=0, accounts=(Account(max_binds=2),))
    async with FakeSmsc(config) as smsc:
        first, second, third = [await connect(smsc) for _ in range(3)]
        assert (await first.bind()).command_status == 0
        assert (await second.bind("rx")).command_status == 0
        assert (await third.bind()).command_status == S.ESME_RALYBND
        first.send(Unbind())
        await first.expect(UnbindResp)
        assert await first.wait_closed() == []
        await first.close()
        assert (await third.bind()).command_status == 0
        for client in (second, third):
            await client.close()


async def test_second_bind_on_a_bound_connection_is_refused(smsc: FakeSmsc) -> None:
    """A bound connection cannot bind again: ESME_RALYBND."""
    async with await connect(smsc) as client:
        await client.bind()
        assert (await client.bind("tx")).command_status == S.ESME_RALYBND


async def test_commands_before_bind_get_invalid_bind_status(smsc: FakeSmsc) -> None:
    """submit_sm, enquire_link, query_sm and unbind before a bind get ESME_RINVBNDSTS."""
    async with await connect(smsc) as client:
        cases: list[tuple[Pdu, type[Pdu]]] = [
            (SUBMIT, SubmitSmResp),
            (EnquireLink(), EnquireLinkResp),
            (QuerySm(message_id="1"), QuerySmResp),
            (Unbind(), UnbindResp),
        ]
        for pdu, resp_cls in cases:
            seq = client.send(pdu)
            resp = await client.expect(resp_cls)
            assert (resp.sequence_number, resp.command_status) == (seq, S.ESME_RINVBNDSTS)
    # Nothing reached the carrier before a bind: no segment recorded or counted.
    assert smsc.records.segments == []
    assert smsc.records.segment_count == 0


async def test_submit_query_and_cancel_on_a_receiver_bind_are_refused(smsc: FakeSmsc) -> None:
    """A receiver may not submit, nor query or cancel (SMPP v3.4 4.8, 4.9): ESME_RINVBNDSTS."""
    async with await connect(smsc) as client:
        await client.bind("rx")
        assert (await client.submit(SUBMIT)).command_status == S.ESME_RINVBNDSTS
        for pdu, resp_cls in ((QuerySm(message_id="1"), QuerySmResp), (CancelSm(), CancelSmResp)):
            seq = client.send(pdu)
            resp = await client.expect(resp_cls)
            assert (resp.sequence_number, resp.command_status) == (seq, S.ESME_RINVBNDSTS)


async def test_submit_gets_a_message_id_and_is_recorded(smsc: FakeSmsc) -> None:
    """submit_sm is answered ESME_ROK with a fresh id, and the record carries what was sent."""
    async with await connect(smsc) as client:
        await client.bind()
        first = await client.submit(SUBMIT)
        second = await client.submit(SUBMIT)
    assert first.command_status == second.command_status == 0
    assert (first.message_id, second.message_id) == ("00000001", "00000002")
    segment = smsc.records.segments[0]
    assert (segment.source, segment.destination, segment.text) == ("SMPPD", "447700900123", "hi")
    assert (segment.account, segment.bind_id, segment.sequence_number) == ("smppd", 1, 2)
    assert (segment.message_id, segment.command_status) == ("00000001", 0)


async def test_decimal_message_ids() -> None:
    """With message_id_format decimal, ids are decimal digits from message_id_start."""
    config = SmscConfig(port=0, message_id_format=IdFormat.DECIMAL, message_id_start=41)
    async with FakeSmsc(config) as smsc, await connect(smsc) as client:
        await client.bind()
        assert (await client.submit(SUBMIT)).message_id == "41"
        assert (await client.submit(SUBMIT)).message_id == "42"


async def test_data_sm_is_answered_and_recorded(smsc: FakeSmsc) -> None:
    """data_sm gets data_sm_resp with a message id; its message_payload is the text."""
    async with await connect(smsc) as client:
        await client.bind()
        payload = Tlv.of_bytes(Tag.message_payload, b"via data sm")
        seq = client.send(DataSm(source_addr="A", destination_addr="4470", tlvs=(payload,)))
        resp = await client.expect(DataSmResp)
    assert (resp.sequence_number, resp.command_status, resp.message_id) == (seq, 0, "00000001")
    assert smsc.records.messages[0].text == "via data sm"
    assert smsc.records.segments[0].command == "data_sm"
    assert smsc.records.segments[0].payload


async def test_enquire_link_is_answered(smsc: FakeSmsc) -> None:
    """enquire_link gets enquire_link_resp with the same sequence_number."""
    async with await connect(smsc) as client:
        await client.bind()
        seq = client.send(EnquireLink())
        resp = await client.expect(EnquireLinkResp)
        assert (resp.sequence_number, resp.command_status) == (seq, 0)


async def test_unbind_is_answered_then_the_connection_closes(smsc: FakeSmsc) -> None:
    """unbind gets unbind_resp, after which the SMSC closes the connection."""
    async with await connect(smsc) as client:
        await client.bind()
        seq = client.send(Unbind())
        resp = await client.expect(UnbindResp)
        assert (resp.sequence_number, resp.command_status) == (seq, 0)
        assert await client.wait_closed() == []


async def test_query_sm_and_cancel_sm(smsc: FakeSmsc) -> None:
    """query_sm reports ENROUTE, cancel_sm makes it DELETED, a second cancel fails."""
    smsc.set_receipts(auto=False)  # nothing settles it by itself
    async with await connect(smsc) as client:
        await client.bind()
        message_id = (await client.submit(SUBMIT)).message_id
        client.send(QuerySm(message_id=message_id))
        query = await client.expect(QuerySmResp)
        assert (query.command_status, query.message_state) == (0, MessageState.ENROUTE)
        client.send(CancelSm(message_id=message_id))
        assert (await client.expect(CancelSmResp)).command_status == 0
        client.send(QuerySm(message_id=message_id))
        query = await client.expect(QuerySmResp)
        assert query.message_state == MessageState.DELETED
        assert query.final_date
        client.send(CancelSm(message_id=message_id))
        assert (await client.expect(CancelSmResp)).command_status == S.ESME_RCANCELFAIL
        client.send(QuerySm(message_id="ffffffff"))
        assert (await client.expect(QuerySmResp)).command_status == S.ESME_RINVMSGID


async def test_a_message_that_asked_for_no_receipt_is_settled_all_the_same(
    smsc: FakeSmsc,
) -> None:
    """As a carrier delivers what it gets, receipt or not: query_sm reads its outcome (it
    stayed ENROUTE for ever)."""
    smsc.set_receipts(outcomes={"UNDELIV": 1.0})
    async with await connect(smsc) as client:
        await client.bind()
        message_id = (await client.submit(SUBMIT)).message_id  # registered_delivery 0
        client.send(QuerySm(message_id=message_id))
        query = await client.expect(QuerySmResp)
        assert (query.command_status, query.message_state) == (0, MessageState.UNDELIVERABLE)
        assert query.final_date


async def test_unknown_command_gets_generic_nack(smsc: FakeSmsc) -> None:
    """A well-framed PDU with an unknown command_id gets generic_nack ESME_RINVCMDID."""
    async with await connect(smsc) as client:
        await client.bind()
        client.send_raw(frame(0x00000999, 0, 77, b""))
        nack = await client.expect(GenericNack)
        assert (nack.sequence_number, nack.command_status) == (77, S.ESME_RINVCMDID)
        # The connection goes on.
        seq = client.send(EnquireLink())
        assert (await client.expect(EnquireLinkResp)).sequence_number == seq


async def test_unsupported_known_command_gets_its_resp_with_invalid_command(
    smsc: FakeSmsc,
) -> None:
    """replace_sm, which this SMSC does not implement, gets replace_sm_resp ESME_RINVCMDID."""
    async with await connect(smsc) as client:
        await client.bind()
        client.send(ReplaceSm(message_id="1"))
        assert (await client.expect(ReplaceSmResp)).command_status == S.ESME_RINVCMDID


async def test_undecodable_body_gets_its_resp_with_the_decode_status(smsc: FakeSmsc) -> None:
    """A submit_sm whose sm_length runs past the PDU gets submit_sm_resp ESME_RINVMSGLEN
    (SMPP v3.4 5.1.3: generic_nack is for a header that cannot be read)."""
    async with await connect(smsc) as client:
        await client.bind()
        body = bytearray(encode(SUBMIT)[16:])
        body[-3] = 200  # sm_length, now longer than the two octets that follow
        client.send_raw(frame(CommandId.submit_sm, 0, 9, bytes(body)))
        resp = await client.expect(SubmitSmResp)
        assert (resp.sequence_number, resp.command_status) == (9, S.ESME_RINVMSGLEN)
        assert (await client.submit(SUBMIT)).command_status == 0


async def test_an_undecodable_response_is_not_answered(smsc: FakeSmsc) -> None:
    """A deliver_sm_resp with a TLV running past its end draws nothing: a response is never
    answered."""
    async with await connect(smsc) as client:
        await client.bind()
        client.send_raw(frame(CommandId.deliver_sm_resp, 0, 5, b"\0\x00\x1e\x00\x09x"))
        client.send(Unbind())
        pdus = await client.wait_closed()
    assert [type(p) for p in pdus] == [UnbindResp]


async def test_an_unbind_crossing_the_smscs_own_is_answered_ok(smsc: FakeSmsc) -> None:
    """Both sides unbind at once: the ESME's unbind gets unbind_resp ESME_ROK (it was
    bound), not ESME_RINVBNDSTS, and the connection ends."""
    async with await connect(smsc) as client:
        await client.bind()
        smsc.connections[0].send_unbind()
        seq = client.send(Unbind())
        pdus = await client.wait_closed()
    answers = [p for p in pdus if isinstance(p, UnbindResp) and p.sequence_number == seq]
    assert [p.command_status for p in answers] == [S.ESME_ROK]


async def test_garbage_that_loses_framing_gets_generic_nack_then_close(smsc: FakeSmsc) -> None:
    """An impossible command_length is answered generic_nack ESME_RINVCMDLEN, then the close."""
    async with await connect(smsc) as client:
        await client.bind()
        client.send_raw(b"\xff" * 32)
        pdus = await client.wait_closed()
    assert len(pdus) == 1
    assert isinstance(pdus[0], GenericNack)
    assert pdus[0].command_status == S.ESME_RINVCMDLEN


async def test_malformed_udh_is_refused_and_not_a_message(smsc: FakeSmsc) -> None:
    """UDHI with a UDH length past the data: the submit gets ESME_RINVMSGLEN."""
    async with await connect(smsc) as client:
        await client.bind()
        bad = SubmitSm(destination_addr="4470", esm_class=0x40, short_message=b"\x09\x00\x03")
        assert (await client.submit(bad)).command_status == S.ESME_RINVMSGLEN
    assert smsc.records.messages == []
    assert smsc.records.segments[0].command_status == S.ESME_RINVMSGLEN


async def test_only_the_newest_ids_are_remembered() -> None:
    """Past max_tracked_messages the oldest id is forgotten: query_sm gets ESME_RINVMSGID."""
    async with (
        FakeSmsc(SmscConfig(port=0, max_tracked_messages=2)) as smsc,
        await connect(smsc) as client,
    ):
        await client.bind()
        ids = [(await client.submit(SUBMIT)).message_id for _ in range(3)]
        statuses = []
        for message_id in ids:
            client.send(QuerySm(message_id=message_id))
            statuses.append((await client.expect(QuerySmResp)).command_status)
    assert statuses == [S.ESME_RINVMSGID, 0, 0]
