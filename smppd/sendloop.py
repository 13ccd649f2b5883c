"""The send loop of one carrier: queue -> binds -> outcomes -> queue.

It claims due segments in batches (the store orders them by priority, fairness and age), hands
each to the carrier's binds as soon as a window slot is free, and records the outcomes in batches
(one transaction each, through the store's group commit).

Duplicates after a crash are bounded by `max_unrecorded`: a segment counts from its claim until its
outcome is committed, and no more are claimed while that many are open. With max_unrecorded =
window x binds, a kill -9 resends at most that many (DESIGN.md invariant 2).

A tenth of `max_unrecorded` is kept for urgent traffic (priority above normal): bulk fills the
rest, so an urgent segment finds room and a free window slot instead of waiting for a bulk
backlog's outcomes. An urgent submit wakes a claimer of its own, so it is not queued behind the
bulk batch the main loop is busy sending either; its claim is committed alone, ahead of other
writes (see smppd.queue.sqlite).

A sender with its own TPS cap is held to it here, where sends happen: a segment its rate does not
allow now goes back to the queue (Deferred, no attempt counted) for the sender's next free slot,
so other senders' segments are not stuck behind it.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import structlog

from smppd.pdu.receipt import IdFormat, resp_keys
from smppd.pdu.status import StatusClass
from smppd.queue.base import Queue
from smppd.queue.errors import QueueError
from smppd.queue.model import (
    URGENT_PRIORITY,
    Change,
    Claim,
    ClaimedSegment,
    Deferred,
    Failed,
    Outcome,
    Retry,
    Submitted,
    Unknown,
)
from smppd.ratelimit import SlidingWindow, window_for_rate
from smppd.session import SubmitResult

log = structlog.get_logger(__name__)


class _Defer(Enum):
    DEFER = "defer"


_DEFER = _Defer.DEFER

# Sends from one sender are spaced a little wider than its rate, so arrival jitter on the way to
# the SMSC cannot put one more than the cap into a one-second span as the carrier measures it.
SENDER_RATE_MARGIN = 1.02
CLAIM_RETRY_S = 1.0
URGENT_RESERVE = 0.1  # of max_unrecorded (none when that is under 10)


def sender_window(tps: float) -> SlidingWindow:
    limit, period_s = window_for_rate(tps)
    return SlidingWindow(limit, period_s=period_s * SENDER_RATE_MARGIN)


class SubmitPort(Protocol):
    """What the send loop needs of a carrier's binds."""

    def try_submit(self, body: bytes) -> asyncio.Future[SubmitResult] | None: ...

    async def wait_ready(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 20
    initial_s: float = 1.0
    max_s: float = 300.0
    unknown_delay_s: float = 0.0  # resend at once after a timeout or a lost link

    def backoff(self, attempts: int, rng: random.Random) -> float:
        """Exponential with full jitter between half and all of the step, capped."""
        step = min(self.initial_s * float(1 << min(attempts, 30)), self.max_s)
        return step * (0.5 + rng.random() / 2)


def outcome_for(
    segment: ClaimedSegment,
    result: SubmitResult,
    *,
    bind: str,
    policy: RetryPolicy,
    now: float,
    rng: random.Random,
    id_format: IdFormat = IdFormat.AUTO,
) -> Outcome:
    """The queue transition a submit result asks for: the one table of outcome policy."""
    if result.unknown:
        if segment.attempts + 1 >= policy.max_attempts:
            return Failed(segment.segment_id, result.command_status)
        return Unknown(segment.segment_id, now + policy.unknown_delay_s)
    if result.status_class is StatusClass.SUCCESS:
        message_id = result.message_id or ""
        return Submitted(segment.segment_id, resp_keys(message_id, id_format), bind, message_id)
    if result.status_class is StatusClass.TEMPORARY and segment.attempts + 1 < policy.max_attempts:
        return Retry(
            segment.segment_id,
            result.command_status,
            now + policy.backoff(segment.attempts, rng),
        )
    return Failed(segment.segment_id, result.command_status)


class CarrierSendLoop:
    def __init__(
        self,
        carrier: str,
        queue: Queue,
        port: SubmitPort,
        *,
        claim_batch: int,
        max_unrecorded: int,
        policy: RetryPolicy,
        clock: Callable[[], float],
        on_changes: Callable[[Sequence[Change]], None] = lambda changes: None,
        idle_poll_s: float = 0.25,
        rng: random.Random | None = None,
        sender_tps: Mapping[str, float] | None = None,
        id_format: IdFormat = IdFormat.AUTO,
    ) -> None:
        self.carrier = carrier
        self._queue = queue
        self._port = port
        self._claim_batch = claim_batch
        self._max_unrecorded = max_unrecorded
        self._reserve = int(max_unrecorded * URGENT_RESERVE)
        self._bulk_waits_for_room = False
        self._policy = policy
        self._clock = clock
        self._on_changes = on_changes
        self._idle_poll_s = idle_poll_s
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._room = asyncio.Event()
        self._pending: list[Outcome] = []
        self._recording: set[asyncio.Task[None]] = set()
        self._all_recorded = asyncio.Event()
        self._unrecorded = 0
        self._stopping = False
        self.submitted = 0
        self.recorded = 0
        self.deferred = 0
        self._sender_windows = {
            sender: sender_window(tps) for sender, tps in (sender_tps or {}).items()
        }
        self._next_slot: dict[str, float] = {}
        self._id_format = id_format

    def wake(self, *, urgent: bool = False) -> None:
        """New work may be due (a submit landed): claim now rather than at the next poll."""
        self._wake.set()
        if urgent:
            self._urgent.set()

    @property
    def unrecorded(self) -> int:
        return self._unrecorded

    async def run(self) -> None:
        """Claim and send until stop(); then record what is outstanding and return."""
        try:
            # One task group: if either claimer fails, both stop and the failure is seen.
            async with asyncio.TaskGroup() as group:
                group.create_task(self._urgent_loop())
                try:
                    await self._claim_loop()
                finally:
                    self._stopping = True
                    self._urgent.set()
        finally:
            # Outstanding submits still owe a result (the binds answer or time them out as
            # unknown); return only when every claimed segment is recorded.
            while self._unrecorded > 0:
                self._all_recorded.clear()
                await self._all_recorded.wait()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._urgent.set()
        self._room.set()

    async def _claim_loop(self) -> None:
        while not self._stopping:
            room = self._max_unrecorded - self._unrecorded
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            await self._port.wait_ready()
            if self.stopping:
                break
            room = self._max_unrecorded - self._unrecorded  # the urgent claimer may have taken some
            if room <= 0:
                continue
            min_priority = 0
            if room <= self._reserve:  # only urgent segments may take the reserve
                min_priority = URGENT_PRIORITY
            else:
                room -= self._reserve
            claim = await self._claim(min(room, self._claim_batch), min_priority)
            if claim is None:
                await asyncio.sleep(CLAIM_RETRY_S)
                continue
            if not claim.segments:
                if min_priority and self._max_unrecorded - self._unrecorded > self._reserve:
                    continue  # outcomes recorded meanwhile made room for bulk again
                self._wake.clear()
                self._bulk_waits_for_room = bool(min_priority)
                try:
                    async with asyncio.timeout(self._idle_poll_s):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                finally:
                    self._bulk_waits_for_room = False
                continue
            await self._send_all(claim.segments)

    async def _urgent_loop(self) -> None:
        """Claim urgent segments the moment one is submitted, beside the main loop."""
        while True:
            await self._urgent.wait()
            self._urgent.clear()
            if self._stopping:
                return
            await self._port.wait_ready()  # during an outage urgent segments stay queued too
            if self.stopping:
                return
            room = self._max_unrecorded - self._unrecorded
            if room <= 0:
                continue  # the main loop claims it once outcomes make room
            claim = await self._claim(min(room, self._claim_batch), URGENT_PRIORITY)
            if claim is not None:
                await self._send_all(claim.segments)

    async def _claim(self, limit: int, min_priority: int) -> Claim | None:
        """Claim up to `limit`; None after a storage error (logged).

        The room is taken before the claim is issued, so the two claimers together never
        exceed max_unrecorded; what the claim does not fill is given back.
        """
        self._unrecorded += limit
        try:
            claim = await self._queue.claim(
                self.carrier, limit, now=self._clock(), min_priority=min_priority
            )
        except QueueError as exc:
            # A full disk or a busy database must not stop sending for good: wait, retry.
            log.error("claiming segments failed; retrying", carrier=self.carrier, error=str(exc))
            self._release(limit)
            return None
        except BaseException:  # cancelled: the store puts an abandoned claim back itself
            self._release(limit)
            raise
        self._release(limit - len(claim.segments))
        if claim.expired:
            self._on_changes(claim.expired)
        return claim

    async def _send_all(self, segments: Sequence[ClaimedSegment]) -> None:
        for i, segment in enumerate(segments):
            window = self._sender_windows.get(segment.source)
            fut = await self._send(segment.body, window)
            if fut is None:  # stopping: hand back what was claimed but never sent
                now = self._clock()
                for unsent in segments[i:]:
                    self._add(Deferred(unsent.segment_id, now))
                break
            if fut is _DEFER:
                assert window is not None
                self._defer(segment, window)
                continue
            assert isinstance(fut, asyncio.Future)
            fut.add_done_callback(functools.partial(self._done, segment))
            self.submitted += 1

    def _release(self, n: int) -> None:
        """`n` claimed segments are recorded (or were never claimed): their room is free."""
        self._unrecorded -= n
        self._room.set()
        if self._bulk_waits_for_room and self._max_unrecorded - self._unrecorded > self._reserve:
            self._wake.set()
        if self._unrecorded <= 0:
            self._all_recorded.set()

    async def _send(
        self, body: bytes, window: SlidingWindow | None
    ) -> asyncio.Future[SubmitResult] | _Defer | None:
        """Submit on the first bind with room; None only once stopping; _DEFER when the
        sender's own rate says not now.

        The sender's window is checked and recorded with no await between that and the write,
        so the time it records is the time the submit_sm leaves. The port's wait_ready() returns
        when a slot frees up and also when the binds close, so a stop during an outage does not
        leave this waiting.
        """
        while True:
            if window is None:
                fut = self._port.try_submit(body)
            else:
                now = self._clock()  # only capped senders pay for reading the clock
                if not window.allows(now):
                    return _DEFER
                fut = self._port.try_submit(body)
                if fut is not None:
                    window.record(now)
            if fut is not None:
                return fut
            if self._stopping:
                return None
            await self._port.wait_ready()

    def _defer(self, segment: ClaimedSegment, window: SlidingWindow) -> None:
        """Back to the queue for the sender's next free slot; later ones queue up behind it at
        the sender's rate, so they return spaced out rather than all at once."""
        now = self._clock()
        slot = max(window.ready_at(now), self._next_slot.get(segment.source, 0.0))
        self._next_slot[segment.source] = slot + window.period_s / window.limit
        self.deferred += 1
        self._add(Deferred(segment.segment_id, slot))

    def _done(self, segment: ClaimedSegment, fut: asyncio.Future[SubmitResult]) -> None:
        now = self._clock()
        if fut.cancelled() or fut.exception() is not None:
            # The bind guarantees a result; anything else is treated as outcome unknown.
            outcome: Outcome = Unknown(segment.segment_id, now)
        else:
            result = fut.result()
            outcome = outcome_for(
                segment,
                result,
                bind=result.bind,
                policy=self._policy,
                now=now,
                rng=self._rng,
                id_format=self._id_format,
            )
        self._add(outcome)

    def _add(self, outcome: Outcome) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(outcome)

    def _flush(self) -> None:
        """Hand this tick's outcomes to the store at once, not behind an earlier record call.

        The store's writer commits whatever is pending in one transaction, so this costs no
        extra commits; and since a receipt is read off the wire after its submit_sm_resp, its
        write is queued after the outcome that opens its correlation and matches it directly
        instead of being held as early.
        """
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._record(batch))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record(self, batch: list[Outcome]) -> None:
        while True:
            try:
                changes = await self._queue.record(batch, now=self._clock())
                break
            except Exception:  # storage trouble: keep the outcomes and retry, never drop them
                log.exception("recording outcomes failed; retrying", carrier=self.carrier)
                await asyncio.sleep(0.5)
        self.recorded += len(batch)
        self._release(len(batch))
        if changes:
            self._on_changes(changes)
