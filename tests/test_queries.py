"""Receipt queries: the query_sm a late receipt gets, how answers are read, and the loop's
step against an in-memory store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest
import structlog.testing
from queue_support import CARRIER, T0, message

from smppd.pdu import pdus
from smppd.pdu.codec import decode_body, encode_body
from smppd.pdu.command import CommandId
from smppd.pdu.status import CommandStatus
from smppd.queries import (
    FINAL,
    NO_ANSWER,
    PENDING,
    UNKNOWN_ID,
    ReceiptQueries,
    next_query_at,
    query_body,
    read_answer,
)
from smppd.queue import MemoryQueue, MessageState, SegmentState, Submitted
from smppd.queue.model import QueryTarget, ReceiptResult
from smppd.session import QueryAnswered

BODY = encode_body(
    pdus.SubmitSm(
        source_addr_ton=5, source_addr_npi=0, source_addr="SHOP", destination_addr="4477009"
    )
)
TARGET = QueryTarget(256, "A1B2", "a1b2", BODY, T0)


def resp(state: int, *, final_date: str = "", error_code: int = 0) -> QueryAnswered:
    answer = pdus.QuerySmResp(
        message_id="A1B2", message_state=state, final_date=final_date, error_code=error_code
    )
    return QueryAnswered(1, 0, answer)


def test_the_query_names_the_id_and_the_source_its_submit_gave() -> None:
    query = decode_body(CommandId.query_sm, 0, 1, query_body(TARGET))
    assert query == pdus.QuerySm(
        sequence_number=1,
        message_id="A1B2",
        source_addr_ton=5,
        source_addr_npi=0,
        source_addr="SHOP",
    )


def test_answers_read_as_final_pending_refused_or_none() -> None:
    """A final state becomes the receipt, matched by the segment's own key, with the SMSC's
    final date and error code; ENROUTE and ACCEPTD are pending; an error status, a nack or a
    state that is none is refused; no answer is no answer."""
    result, receipt = read_answer(TARGET, resp(5, final_date="261206101500000+", error_code=34))
    assert result == FINAL
    assert receipt is not None
    assert (receipt.keys, receipt.stat, receipt.final_state) == (
        ("a1b2",),
        "UNDELIV",
        "undeliverable",
    )
    assert (receipt.err, receipt.done_at) == ("034", 1796552100.0)
    # An SMSC an hour ahead of UTC: its wall time, as its receipts' done date reads.
    _, ahead = read_answer(TARGET, resp(2, final_date="261206101500004+"))
    assert ahead is not None
    assert ahead.done_at == 1796552100.0
    assert read_answer(TARGET, resp(2))[1] is not None
    assert read_answer(TARGET, resp(1)) == (PENDING, None)
    assert read_answer(TARGET, resp(6)) == (PENDING, None)
    assert read_answer(TARGET, resp(0)) == (UNKNOWN_ID, None)
    assert read_answer(TARGET, QueryAnswered(1, CommandStatus.ESME_RINVMSGID)) == (UNKNOWN_ID, None)
    assert read_answer(TARGET, QueryAnswered(1, None)) == (NO_ANSWER, None)
    assert read_answer(TARGET, None) == (NO_ANSWER, None)


@pytest.mark.parametrize(
    "status",
    [CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RMSGQFUL, CommandStatus.ESME_RSYSERR],
)
def test_a_query_refused_for_now_is_asked_again(status: CommandStatus) -> None:
    """A throttled (or queue-full, or failing) SMSC said nothing of the message: one busy
    second must not end receipt recovery for every segment asked about in it."""
    assert read_answer(TARGET, QueryAnswered(1, status)) == (NO_ANSWER, None)


def test_each_wait_is_as_long_as_the_segment_has_waited_until_the_receipt_wait() -> None:
    assert next_query_at(TARGET, now=T0 + 60, after_s=60, wait_s=1000) == T0 + 120
    assert next_query_at(TARGET, now=T0 + 120, after_s=60, wait_s=1000) == T0 + 240
    assert next_query_at(TARGET, now=T0 + 480, after_s=60, wait_s=1000) == T0 + 960
    assert next_query_at(TARGET, now=T0 + 960, after_s=60, wait_s=1000) is None


class Port:
    """Binds whose query answers the test gives, by message id."""

    def __init__(self, answers: dict[str, QueryAnswered | None]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.bound_count = 1

    def try_query(self, body: bytes) -> asyncio.Future[QueryAnswered | None] | None:
        query = decode_body(CommandId.query_sm, 0, 1, body)
        assert isinstance(query, pdus.QuerySm)
        self.asked.append(query.message_id)
        future: asyncio.Future[QueryAnswered | None] = asyncio.get_running_loop().create_future()
        future.set_result(self.answers[query.message_id])
        return future


def queries_on(
    queue: MemoryQueue,
    port: Port,
    clock: Callable[[], float] = lambda: T0,
    on_results: Callable[[Sequence[ReceiptResult]], None] = lambda results: None,
) -> ReceiptQueries:
    """Queries after 60 s, 10 a poll, until an hour."""
    return ReceiptQueries(
        CARRIER,
        queue,
        port,
        after_s=60,
        tps=10,
        wait_s=3600,
        clock=clock,
        on_results=on_results,
    )


async def test_a_step_applies_final_answers_and_asks_again_about_the_others() -> None:
    """Four segments due: the delivered one is settled as by its receipt (and published), the
    ENROUTE and unanswered ones are asked again later, the one the SMSC does not know never."""
    queue = MemoryQueue()
    enqueued = await queue.enqueue([message(segments=(BODY,)) for _ in range(4)], now=T0)
    claim = await queue.claim(CARRIER, 4, now=T0)
    ids = ["D", "E", "N", "X"]
    await queue.record(
        [
            Submitted(s.segment_id, (i.lower(),), "b", i, query_at=T0 + 60)
            for s, i in zip(claim, ids, strict=True)
        ],
        now=T0,
    )
    answers = {"D": resp(2), "E": resp(1), "N": None, "X": QueryAnswered(1, 0x0C)}
    port = Port(answers)
    published: list[Sequence[ReceiptResult]] = []
    clock = [T0 + 60]
    queries = queries_on(queue, port, lambda: clock[0], published.append)
    assert await queries.step() == 4
    assert sorted(port.asked) == ids
    assert dict(queries.counts) == {FINAL: 1, PENDING: 1, NO_ANSWER: 1, UNKNOWN_ID: 1}
    delivered = await queue.status(enqueued[0].message_id, None)
    assert delivered is not None
    assert delivered.state is MessageState.DELIVERED
    assert [r.change is not None for results in published for r in results] == [True]
    others = [await queue.status(e.message_id, None) for e in enqueued[1:]]
    assert all(s is not None and s.segments[0].state is SegmentState.SUBMITTED for s in others)
    assert await queries.step() == 0  # nothing due until T0 + 120
    clock[0] = T0 + 120
    port.asked.clear()
    assert await queries.step() == 2
    assert sorted(port.asked) == ["E", "N"]


async def test_a_body_no_query_can_be_made_of_is_not_asked_about() -> None:
    """A stored body that is no submit_sm (a store written by something else): counted as
    refused and dropped, not retried every poll, and the loop goes on."""
    queue = MemoryQueue()
    await queue.enqueue([message(segments=(b"\x00\x01",))], now=T0)
    (segment,) = await queue.claim(CARRIER, 1, now=T0)
    await queue.record([Submitted(segment.segment_id, ("k",), "b", "K", query_at=T0)], now=T0)
    port = Port({})
    queries = queries_on(queue, port)
    assert await queries.step() == 0
    assert dict(queries.counts) == {UNKNOWN_ID: 1}
    assert port.asked == []
    assert await queue.due_queries(CARRIER, now=T0 + 10_000, limit=10) == []


async def test_an_smsc_that_takes_no_query_sm_is_said_once() -> None:
    """ESME_RINVCMDID to every query: each is refused and not repeated, and one warning says
    to turn receipt queries off for the carrier."""
    queue = MemoryQueue()
    await queue.enqueue([message(segments=(BODY,)) for _ in range(2)], now=T0)
    claim = await queue.claim(CARRIER, 2, now=T0)
    await queue.record(
        [
            Submitted(s.segment_id, (f"k{i}",), "b", f"K{i}", query_at=T0)
            for i, s in enumerate(claim)
        ],
        now=T0,
    )
    nack = QueryAnswered(1, CommandStatus.ESME_RINVCMDID)
    port = Port({"K0": nack, "K1": nack})
    queries = queries_on(queue, port)
    with structlog.testing.capture_logs() as logs:
        assert await queries.step() == 2
    warnings = [line for line in logs if "does not take query_sm" in line["event"]]
    assert [(w["carrier"], w["status"]) for w in warnings] == [(CARRIER, "ESME_RINVCMDID")]
    assert dict(queries.counts) == {UNKNOWN_ID: 2}
    assert await queue.due_queries(CARRIER, now=T0 + 10_000, limit=10) == []
