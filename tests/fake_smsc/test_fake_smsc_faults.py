"""Each fault knob of the fake SMSC, observed on the wire with a raw client."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator

import pytest

from smppd.pdu.codec import encode
from smppd.pdu.errors import DecodeError
from smppd.pdu.pdus import (
    EnquireLink,
    EnquireLinkResp,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
)
from smppd.pdu.status import CommandStatus as S
from tools.fake_smsc import EsmeClient, FakeSmsc, Faults, Reorder, SmscConfig


def submit(n: int = 0) -> SubmitSm:
    return SubmitSm(source_addr="SMPPD", destination_addr=f"44770090{n:04d}", short_message=b"x")


@pytest.fixture
async def smsc() -> AsyncIterator[FakeSmsc]:
    async with FakeSmsc(SmscConfig(port=0)) as server:
        server.rng = random.Random(1234)
        yield server


@pytest.fixture
async def client(smsc: FakeSmsc) -> AsyncIterator[EsmeClient]:
    async with await EsmeClient.connect(smsc.host, smsc.port) as esme:
        assert (await esme.bind()).command_status == 0
        yield esme


async def read_resps(client: EsmeClient, count: int) -> list[SubmitSmResp]:
    return [await client.expect(SubmitSmResp) for _ in range(count)]


async def test_fixed_latency_delays_each_response(smsc: FakeSmsc, client: EsmeClient) -> None:
    """With latency_s set, no answer comes sooner than that."""
    smsc.faults.latency_s = 0.2
    loop = asyncio.get_running_loop()
    start = loop.time()
    await client.submit(submit())
    assert loop.time() - start >= 0.19


async def test_latency_applies_per_response_so_a_later_fast_one_overtakes(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """A response held by latency comes after one answered once latency was switched off."""
    smsc.set_faults(latency_s=[30.0, 30.0])  # a range, as the control interface gives it
    slow = client.send(submit(1))
    await smsc.records.wait_for(1, segments=True)  # taken, and its answer is being held
    smsc.set_faults(latency_s=0)
    fast = client.send(submit(2))
    assert (await client.expect(SubmitSmResp)).sequence_number == fast != slow
    assert smsc.connections[0].outstanding == 1


async def test_submit_errors_answer_a_fraction_with_the_given_status(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """submit_errors {status: fraction} answers that share of submits with that status."""
    smsc.set_faults(submit_errors={"0x14": 0.5, "ESME_RINVDSTADR": 0.5})
    for n in range(40):
        client.send(submit(n))
    statuses = [r.command_status for r in await read_resps(client, 40)]
    assert set(statuses) == {S.ESME_RMSGQFUL, S.ESME_RINVDSTADR}
    smsc.faults.submit_errors = {S.ESME_RSYSERR: 1.0}
    assert (await client.submit(submit())).command_status == S.ESME_RSYSERR
    smsc.faults.submit_errors = {}
    assert (await client.submit(submit())).command_status == 0
    assert smsc.records.message_count == 1


async def test_refused_submits_carry_no_message_id(smsc: FakeSmsc, client: EsmeClient) -> None:
    """An error submit_sm_resp has no body; its record has no id and makes no message."""
    smsc.faults.submit_errors = {S.ESME_RTHROTTLED: 1.0}
    resp = await client.submit(submit())
    assert (resp.command_status, resp.message_id) == (S.ESME_RTHROTTLED, "")
    assert smsc.records.segments[0].message_id == ""
    assert smsc.records.messages == []


async def test_tps_limit_throttles_the_excess_within_one_second(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """With tps_limit 10, of 30 submits sent at once 10 pass and 20 get ESME_RTHROTTLED."""
    smsc.set_faults(tps_limit=10)
    client.send_raw(b"".join(_encoded(client, submit(n)) for n in range(30)))
    statuses = [r.command_status for r in await read_resps(client, 30)]
    assert statuses.count(0) == 10
    assert statuses.count(S.ESME_RTHROTTLED) == 20


async def test_tps_limit_counts_accepted_submits_only(smsc: FakeSmsc, client: EsmeClient) -> None:
    """The limit is on accepted submits: ten refused by submit_errors use none of it, and
    the five after them within the second are all accepted."""
    smsc.set_faults(tps_limit=5, submit_errors={"ESME_RSYSERR": 1.0})
    client.send_raw(b"".join(_encoded(client, submit(n)) for n in range(10)))
    statuses = [r.command_status for r in await read_resps(client, 10)]
    assert statuses == [S.ESME_RSYSERR] * 10
    smsc.set_faults(submit_errors={})
    client.send_raw(b"".join(_encoded(client, submit(n)) for n in range(10, 15)))
    assert [r.command_status for r in await read_resps(client, 5)] == [0] * 5


async def test_tps_limit_is_per_account_across_binds(smsc: FakeSmsc, client: EsmeClient) -> None:
    """Two binds of one account share the limit."""
    smsc.faults.tps_limit = 5
    async with await EsmeClient.connect(smsc.host, smsc.port) as other:
        await other.bind()
        for esme in (client, other):
            esme.send_raw(b"".join(_encoded(esme, submit(n)) for n in range(5)))
        statuses = [r.command_status for r in await read_resps(client, 5)]
        statuses += [r.command_status for r in await read_resps(other, 5)]
    assert statuses.count(0) == 5
    assert statuses.count(S.ESME_RTHROTTLED) == 5


@pytest.mark.parametrize("status", [S.ESME_RTHROTTLED, S.ESME_RMSGQFUL])
async def test_window_refuses_submits_beyond_it_and_max_outstanding_shows_the_overrun(
    smsc: FakeSmsc, client: EsmeClient, status: int
) -> None:
    """Beyond `window` unanswered submits, the next get window_status at once."""
    # Hold answers so that the first three stay outstanding while the others arrive.
    smsc.set_faults(window=3, window_status=status, reorder="reverse", reorder_hold_s=0.3)
    client.send_raw(b"".join(_encoded(client, submit(n)) for n in range(5)))
    resps = await read_resps(client, 5)
    assert [(r.sequence_number, r.command_status) for r in resps] == [
        (5, status),
        (6, status),
        (4, 0),
        (3, 0),
        (2, 0),
    ]
    assert smsc.max_outstanding == 4  # the client overran its window of 3
    assert smsc.connections[0].outstanding == 0


async def test_max_outstanding_counts_pipelined_submits(smsc: FakeSmsc, client: EsmeClient) -> None:
    """Submits held unanswered are counted; the maximum stays after they are answered."""
    smsc.set_faults(reorder="reverse", reorder_batch=7)
    client.send_raw(b"".join(_encoded(client, submit(n)) for n in range(7)))
    await read_resps(client, 7)
    assert smsc.connections[0].max_outstanding == 7
    assert smsc.connections[0].outstanding == 0
    await client.submit(submit())
    assert smsc.stats()["max_outstanding"] == 7


async def test_hang_answers_nothing_while_the_connection_stays_open(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """While hung, requests are read and never answered; after it, answers resume."""
    smsc.faults.hang = True
    client.send(submit())
    await smsc.records.wait_for(1, segments=True)
    smsc.set_faults(hang=False)
    # Only what is sent after the hang gets an answer, so the next PDU is this resp.
    seq = client.send(EnquireLink())
    assert (await client.expect(EnquireLinkResp)).sequence_number == seq
    assert smsc.records.segments[0].command_status is None
    assert smsc.connections[0].outstanding == 1
    assert smsc.stats()["statuses"] == {"unanswered": 1}


async def test_submits_a_hang_swallowed_do_not_count_against_the_window(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """Once a hang is cleared, submits it left unanswered do not hold the window: the next
    submits are answered, not refused with window_status."""
    smsc.faults.hang = True
    for n in range(3):
        client.send(submit(n))
    await smsc.records.wait_for(3, segments=True)
    smsc.set_faults(hang=False, window=2)
    assert [(await client.submit(submit(n))).command_status for n in range(3)] == [0, 0, 0]
    assert smsc.connections[0].outstanding == 3  # the swallowed ones, still unanswered


async def test_drop_after_n_pdus_closes_at_the_nth(smsc: FakeSmsc, client: EsmeClient) -> None:
    """drop_after_pdus 3: the bind and one submit are answered, the connection drops at the 3rd."""
    smsc.faults.drop_after_pdus = 3
    client.send(submit(1))
    client.send(submit(2))
    client.send(submit(3))
    pdus = await client.wait_closed()
    assert [(type(p), p.sequence_number) for p in pdus] == [(SubmitSmResp, 2)]
    assert [s.command_status for s in smsc.records.segments] == [0, None]


async def test_unbind_after_n_pdus(smsc: FakeSmsc, client: EsmeClient) -> None:
    """unbind_after_pdus 2: after answering the 2nd PDU the SMSC sends unbind, then closes."""
    smsc.faults.unbind_after_pdus = 2
    await client.submit(submit())
    unbind = await client.expect(Unbind)
    client.send(UnbindResp(sequence_number=unbind.sequence_number))
    assert await client.wait_closed() == []


async def test_unbind_after_n_pdus_waits_for_the_bind(smsc: FakeSmsc) -> None:
    """unbind_after_pdus 1 with a refused bind first: the unbind comes once a bind succeeds."""
    smsc.faults.unbind_after_pdus = 1
    async with await EsmeClient.connect(smsc.host, smsc.port) as esme:
        assert (await esme.bind(password="wrong")).command_status == S.ESME_RINVPASWD
        assert (await esme.bind()).command_status == 0
        unbind = await esme.expect(Unbind)
        esme.send(UnbindResp(sequence_number=unbind.sequence_number))
        assert await esme.wait_closed() == []


async def test_client_unbind_gets_the_delayed_answers_first(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """The client's unbind no longer drops the answers still waiting out latency_s: they come
    first, in order, then the unbind_resp (a submit after the unbind is not answered)."""
    smsc.faults.latency_s = 0.3
    first, second = client.send(submit(1)), client.send(submit(2))
    await smsc.records.wait_for(2, segments=True)
    unbind = client.send(Unbind())
    client.send(submit(3))
    pdus = await client.wait_closed()
    assert [(type(p), p.sequence_number, p.command_status) for p in pdus] == [
        (SubmitSmResp, first, 0),
        (SubmitSmResp, second, 0),
        (UnbindResp, unbind, 0),
    ]
    assert [s.command_status for s in smsc.records.segments] == [0, 0]


async def test_a_client_that_keeps_sending_after_its_unbind_gets_the_unbind_resp(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """Each PDU after the unbind was answered after the latency too, and the unbind_resp
    waited for every response pending: a client sending enquire_links never got it."""
    smsc.faults.latency_s = (0.05, 0.15)  # a later answer may be quicker than an earlier one
    first = client.send(submit(1))
    unbind = client.send(Unbind())
    client.send(EnquireLink())
    got: list[tuple[type, int]] = []
    while (UnbindResp, unbind) not in got and len(got) < 10:  # one more with each answer
        pdu = await client.read()
        got.append((type(pdu), pdu.sequence_number))
        client.send(EnquireLink())
    assert got == [(SubmitSmResp, first), (UnbindResp, unbind)]


async def test_send_unbind_refuses_submits_until_the_client_answers(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """After the SMSC's unbind, a submit gets ESME_RINVBNDSTS; unbind_resp closes."""
    assert smsc.send_unbind() == 1
    unbind = await client.expect(Unbind)
    assert (await client.submit(submit())).command_status == S.ESME_RINVBNDSTS
    client.send(UnbindResp(sequence_number=unbind.sequence_number))
    assert await client.wait_closed() == []
    assert smsc.send_unbind() == 0


@pytest.mark.parametrize(
    ("order", "expected"),
    [(Reorder.REVERSE, [6, 5, 4, 3, 2]), (Reorder.SHUFFLE, None)],
)
async def test_reorder_releases_a_batch_out_of_order(
    smsc: FakeSmsc, client: EsmeClient, order: Reorder, expected: list[int] | None
) -> None:
    """Held responses are released reversed, or shuffled (a permutation, not in order)."""
    smsc.faults.reorder = order
    smsc.faults.reorder_batch = 5
    client.send_raw(b"".join(_encoded(client, submit(n)) for n in range(5)))
    got = [r.sequence_number for r in await read_resps(client, 5)]
    if expected is not None:
        assert got == expected
    else:
        assert sorted(got) == [2, 3, 4, 5, 6]
        assert got != sorted(got)


async def test_reorder_releases_a_partial_batch_after_the_hold_time(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """A batch that never fills is released (reversed) once reorder_hold_s passes."""
    smsc.set_faults(reorder="reverse", reorder_batch=100, reorder_hold_s=0.05)
    client.send_raw(b"".join(_encoded(client, submit(n)) for n in range(3)))
    assert [r.sequence_number for r in await read_resps(client, 3)] == [4, 3, 2]


async def test_a_hang_keeps_the_responses_reorder_holds(smsc: FakeSmsc, client: EsmeClient) -> None:
    """Held submit responses released while hung are never answered, as a hung SMSC answers
    nothing: once it answers again, the first thing it sends is the next answer."""
    smsc.set_faults(reorder="reverse", reorder_batch=100, reorder_hold_s=30)
    client.send_raw(b"".join(_encoded(client, submit(n)) for n in range(3)))
    await smsc.records.wait_for(3, segments=True)
    smsc.set_faults(hang=True)
    (connection,) = smsc.connections
    connection._release_held()  # what the hold timer does once reorder_hold_s is past
    smsc.set_faults(hang=False, reorder=None)
    seq = client.send(EnquireLink())
    assert (await client.expect(EnquireLinkResp)).sequence_number == seq  # no submit_sm_resp


async def test_reorder_does_not_hold_other_responses(smsc: FakeSmsc, client: EsmeClient) -> None:
    """enquire_link_resp is not held behind submit responses."""
    smsc.set_faults(reorder="reverse", reorder_batch=2, reorder_hold_s=30)
    client.send(submit())
    seq = client.send(EnquireLink())
    assert (await client.expect(EnquireLinkResp)).sequence_number == seq
    client.send(submit())
    assert [r.sequence_number for r in await read_resps(client, 2)] == [4, 2]


async def test_garbage_after_n_pdus(smsc: FakeSmsc, client: EsmeClient) -> None:
    """garbage_after_pdus 2: after the 2nd answer the client gets bytes it cannot frame."""
    smsc.faults.garbage_after_pdus = 2
    await client.submit(submit())
    with pytest.raises(DecodeError) as caught:
        await client.read()
    assert caught.value.framing_lost


async def test_send_raw_and_drop_actions(smsc: FakeSmsc, client: EsmeClient) -> None:
    """send_raw writes bytes as they are; drop aborts the connection."""
    assert smsc.send_raw(bytes.fromhex("00000010800000150000000000000063")) == 1
    assert (await client.expect(EnquireLinkResp)).sequence_number == 0x63
    assert smsc.drop() == 1
    assert await client.wait_closed() == []


async def test_set_faults_rejects_bad_values_without_changing_anything(smsc: FakeSmsc) -> None:
    """An invalid change raises and leaves every knob as it was."""
    with pytest.raises(ValueError, match="unknown fault knob"):
        smsc.set_faults(window=5, nonsense=1)
    with pytest.raises(ValueError, match="add up"):
        smsc.set_faults(submit_errors={"0x58": 0.7, "0x14": 0.7})
    with pytest.raises(TypeError):
        smsc.set_faults(hang="yes")
    assert smsc.faults == Faults()


async def test_receipt_weights_that_add_up_to_infinity_are_refused(smsc: FakeSmsc) -> None:
    """Two weights of 1e308 passed (each finite), and every submit then broke the connection
    with a traceback: their sum must be finite too."""
    with pytest.raises(ValueError, match="add up to a finite number"):
        smsc.set_receipts(outcomes={"DELIVRD": 1e308, "UNDELIV": 1e308})


def _encoded(client: EsmeClient, pdu: SubmitSm) -> bytes:
    return encode(dataclasses.replace(pdu, sequence_number=client.next_sequence()))
