"""Receipt queries: ask the SMSC with query_sm about segments whose receipt is late.

Carriers lose receipts. For a carrier with `receipt_queries.after_s`, each segment that awaits
its receipt is asked about that long after its acceptance. A final state in the answer is applied
as its receipt would have been, through the store's receipt path and by the segment's own
correlation key (a receipt that comes after all then counts as a duplicate); an intermediate one
(ENROUTE, ACCEPTD), no answer in time or a query refused for now (throttled) asks again later,
each wait as long as the segment's age, until that passes queue.receipt_wait_s; an SMSC that
says it does not know the id is not asked again. It must not know how a link speaks SMPP: it
encodes bodies and reads answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final, Protocol

import structlog

from smppd.inbound import FINAL_STATE_OF
from smppd.pdu import pdus
from smppd.pdu.codec import decode_body, encode_body
from smppd.pdu.command import CommandId
from smppd.pdu.errors import DecodeError, EncodeError
from smppd.pdu.receipt import ReceiptStat
from smppd.pdu.status import CommandStatus, StatusClass, classify, status_name
from smppd.pdu.timefmt import parse_time
from smppd.queue.base import Queue
from smppd.queue.errors import QueueError
from smppd.queue.model import QueryTarget, ReceiptIn, ReceiptResult
from smppd.session import QueryAnswered

log = structlog.get_logger(__name__)

POLL_S: Final = 1.0  # due queries are late by nature: a second more is nothing
# The answer that says the SMSC takes no query_sm at all, rather than not knowing this message.
_UNSUPPORTED: Final = frozenset({CommandStatus.ESME_RINVCMDID})

# How a query ended, for smppd_receipt_queries_total (a small fixed set).
FINAL: Final = "final"  # a final state, applied as the receipt
PENDING: Final = "pending"  # an intermediate state: asked again later
# None in time, the bind went first, or refused for now (ESME_RTHROTTLED, ESME_RSYSERR and
# the other temporary statuses): asked again later.
NO_ANSWER: Final = "no_answer"
UNKNOWN_ID: Final = "unknown_id"  # the SMSC refused it (ESME_RINVMSGID and the like): not again


class QueryPort(Protocol):
    @property
    def bound_count(self) -> int: ...
    def try_query(self, body: bytes) -> asyncio.Future[QueryAnswered | None] | None: ...


def query_body(target: QueryTarget) -> bytes:
    """The query_sm body for `target`: its id, and the source address its submit_sm gave."""
    submit = decode_body(CommandId.submit_sm, 0, 0, target.body)
    assert isinstance(submit, pdus.SubmitSm)
    query = pdus.QuerySm(
        message_id=target.carrier_message_id,
        source_addr_ton=submit.source_addr_ton,
        source_addr_npi=submit.source_addr_npi,
        source_addr=submit.source_addr,
    )
    return encode_body(query)


def read_answer(target: QueryTarget, answer: QueryAnswered | None) -> tuple[str, ReceiptIn | None]:
    """How the query ended, and for a final state the receipt it stands for."""
    if answer is None or answer.command_status is None:
        return NO_ANSWER, None
    resp = answer.resp
    if answer.command_status != 0 and classify(answer.command_status) is StatusClass.TEMPORARY:
        return NO_ANSWER, None
    if answer.command_status != 0 or resp is None:
        return UNKNOWN_ID, None
    stat = ReceiptStat.from_message_state(resp.message_state)
    if stat is None:
        return UNKNOWN_ID, None  # no state at all: asking again will not tell more
    if not stat.is_final:
        return PENDING, None
    receipt = ReceiptIn(
        keys=(target.key,),
        stat=str(stat),
        final_state=FINAL_STATE_OF[stat.outcome],
        err=f"{resp.error_code:03d}",
        done_at=_seconds(resp.final_date),
        segment_id=target.segment_id,
    )
    return FINAL, receipt


_EPOCH: Final = datetime(1970, 1, 1)


def _seconds(value: str) -> float | None:
    """A final_date on the receipts' clock: a receipt's done date has no zone and is read as
    UTC (smppd.inbound), so the SMSC's local wall time here is too, not the instant its offset
    names. Told both ways, one delivery then reads as one (a late receipt is a duplicate)."""
    try:
        when = parse_time(value)
    except ValueError:
        return None
    if not isinstance(when, datetime):
        return None
    return (when.replace(tzinfo=None) - _EPOCH).total_seconds()


def next_query_at(
    target: QueryTarget, *, now: float, after_s: float, wait_s: float
) -> float | None:
    """When to ask again about a segment still pending: after as long as it has waited (at
    least `after_s`), unless that passes `wait_s` since it was accepted."""
    at = now + max(after_s, now - target.since)
    return None if at - target.since > wait_s else at


class ReceiptQueries:
    """One carrier's receipt queries: at most `tps` a second, on its bound binds."""

    def __init__(
        self,
        carrier: str,
        queue: Queue,
        port: QueryPort,
        *,
        after_s: float,
        tps: float,
        wait_s: float,
        clock: Callable[[], float],
        on_results: Callable[[Sequence[ReceiptResult]], None],
        counts: Counter[str] | None = None,
    ) -> None:
        self.carrier = carrier
        self._queue = queue
        self._port = port
        self._after_s = after_s
        self._per_poll = max(1, round(tps * POLL_S))
        self.wait_s = wait_s  # queue.receipt_wait_s, which a reload may change
        self._clock = clock
        self._on_results = on_results
        self.counts: Counter[str] = Counter() if counts is None else counts
        self._stop = asyncio.Event()
        self._said_unsupported = False

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            if self._port.bound_count == 0:
                continue  # nothing to ask on: the due ones wait
            try:
                await self.step()
            except QueueError as exc:  # storage trouble: the due ones are asked next time
                log.error("receipt queries failed", carrier=self.carrier, error=str(exc))
            except Exception:  # a bug here must not end the daemon: log it, go on next poll
                log.exception("receipt queries failed", carrier=self.carrier)

    def _unsupported(self, status: int) -> None:
        if not self._said_unsupported:
            self._said_unsupported = True
            log.warning(
                "the smsc does not take query_sm: each late receipt costs a refused query;"
                " set receipt_queries.after_s to null for this carrier",
                carrier=self.carrier,
                status=status_name(status),
            )

    async def step(self) -> int:
        """Ask about the segments due now (up to a poll's worth); returns how many were asked."""
        now = self._clock()
        targets = await self._queue.due_queries(self.carrier, now=now, limit=self._per_poll)
        asked: list[tuple[QueryTarget, asyncio.Future[QueryAnswered | None]]] = []
        schedule: list[tuple[int, float | None]] = []
        for target in targets:
            try:
                body = query_body(target)
            except (DecodeError, EncodeError):  # a body no query can be made of: not asked
                self.counts[UNKNOWN_ID] += 1
                schedule.append((target.segment_id, None))
                continue
            pending = self._port.try_query(body)
            if pending is None:
                break  # the binds went: the rest stay due for the next poll
            asked.append((target, pending))
        answers = await asyncio.gather(*(pending for _, pending in asked))
        now = self._clock()
        receipts: list[ReceiptIn] = []
        for (target, _), answer in zip(asked, answers, strict=True):
            result, receipt = read_answer(target, answer)
            self.counts[result] += 1
            if answer is not None and answer.command_status in _UNSUPPORTED:
                self._unsupported(answer.command_status)
            if receipt is not None:
                receipts.append(receipt)
                schedule.append((target.segment_id, None))
            elif result == UNKNOWN_ID:
                schedule.append((target.segment_id, None))
            else:
                again = next_query_at(target, now=now, after_s=self._after_s, wait_s=self.wait_s)
                schedule.append((target.segment_id, again))
        if receipts:
            self._on_results(await self._queue.apply_receipts(self.carrier, receipts, now=now))
        if schedule:
            await self._queue.schedule_queries(schedule, now=now)
        return len(asked)
