"""The send loop of one carrier: queue -> binds -> outcomes -> queue.

It claims due segments in batches (the store orders them by priority, fairness and age), hands
each to the carrier's binds as soon as a window slot is free, and records the outcomes in batches
(one transaction each, through the store's group commit).

Duplicates after a crash are bounded by `max_unrecorded`: a segment counts from the moment it is
handed to a bind until its outcome is committed, and no more are sent while that many are open.
With max_unrecorded = window x binds, a kill -9 resends at most that many (the crash bound).
Segments claimed but not yet sent are no duplicates (recovery queues them again, and they go once),
so the next batch is claimed while the current one is being sent: a claim's transaction is not in
the loop that refills the window.

A tenth of `max_unrecorded` is kept for urgent traffic (priority above normal): bulk fills the
rest, so an urgent segment finds room and a free window slot instead of waiting for a bulk
backlog's outcomes. An urgent submit that finds room is claimed by the store as it is stored
(NewMessage.send_now) and handed over here, with no claim transaction at all; otherwise it wakes
a claimer of its own, so it is not queued behind the bulk batches the main loop holds either,
and its claim is committed alone, ahead of other writes (see smppd.queue.sqlite). That claimer
also runs when an urgent segment comes due later: a retry after a throttled or unanswered
submit, a sender's deferral, a scheduled submit.

A sender with its own TPS cap is held to it here, where sends happen: a segment its rate does not
allow now goes back to the queue (Deferred, no attempt counted) for the sender's next free slot,
so other senders' segments are not stuck behind it.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import structlog

from smppd.histogram import Histogram
from smppd.idformat import IdFormatLearner
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
from smppd.queue.states import SegmentState
from smppd.ratelimit import SenderRates
from smppd.session import SubmitResult

log = structlog.get_logger(__name__)


class _Send(Enum):
    """What _send did with a segment."""

    SENT = "sent"
    DEFERRED = "deferred"  # the sender's own rate says not now
    STOPPED = "stopped"  # stopping, or handed back
    WITHDRAWN = "withdrawn"  # cancelled, or past its validity, while it waited for room


_SENT, _DEFERRED, _STOPPED, _WITHDRAWN = (
    _Send.SENT,
    _Send.DEFERRED,
    _Send.STOPPED,
    _Send.WITHDRAWN,
)

CLAIM_RETRY_S = 1.0
# A failed record is retried, the wait doubling from the first figure up to the second.
RECORD_RETRY_S = (0.5, 5.0)
# Once stopping, failed records are retried this long; then their segments are left in flight
# for the next start's recovery to send again, so a full disk cannot hold a stop forever.
STOP_RECORD_GRACE_S = 10.0
URGENT_RESERVE = 0.1  # of max_unrecorded (none when that is under 10)
# The loop's timers may fire a little before the clock reads the time they were set for.
_TIMER_SLACK_S = 0.001
# Due times of urgent segments the loop keeps a timer for; past this many, the later ones are
# left to the main loop's claims (they still go first by priority there).
MAX_URGENT_TIMERS = 1024
# Cancelled segment ids remembered in case one is claimed and waiting for room: a cancel that
# finds a segment in flight reaches the loops by id, and most ids are for other carriers' loops
# or already sent, so only the latest are kept.
MAX_WITHDRAWN = 10_000


# A claim's segments still to send, and whether the claim came back full (more is due).
_Batch = tuple[Sequence[ClaimedSegment], bool]


class SubmitPort(Protocol):
    """What the send loop needs of a carrier's binds."""

    def try_send(self, body: bytes, on_result: Callable[[SubmitResult], None]) -> bool:
        """Send `body` if a bind can take it now; once sent, `on_result` gets its result,
        exactly once and never from within this call (see Link.try_send)."""

    async def wait_ready(self) -> None: ...

    def interrupt(self) -> None:
        """Return from every pending wait_ready() now."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 20
    initial_s: float = 1.0
    max_s: float = 300.0
    # A submit that timed out is sent again after this long, so that its late answer (from an
    # SMSC slower than the response timeout) can come first and spare the SMSC a copy; one lost
    # with its connection, whose answer cannot come, at once.
    unknown_delay_s: float = 0.0

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
    whole_message: bool = False,
    query_after_s: float | None = None,
) -> Outcome:
    """The queue transition a submit result asks for: the one table of outcome policy."""
    if result.unknown:
        if segment.attempts + 1 >= policy.max_attempts:
            return Failed(segment.segment_id, result.command_status)
        return Unknown(segment.segment_id, now + policy.unknown_delay_s * result.answer_due)
    if result.status_class is StatusClass.SUCCESS:
        message_id = result.message_id or ""
        keys = resp_keys(message_id, id_format)
        query_at = None
        if query_after_s is not None and segment.registered_delivery:
            query_at = now + query_after_s  # asked about then, if no final receipt has come
        return Submitted(
            segment.segment_id, keys, bind, message_id, whole_message, result.late, query_at
        )
    if result.pacing:
        # The bind's rate is the answer (AdaptiveRate); the message keeps its attempts, and
        # its back-off the first step's. Only as the carrier's StatusPolicy reads it: one that
        # lists ESME_RTHROTTLED temporary or permanent has it treated so.
        return Retry(segment.segment_id, result.command_status, now + policy.backoff(0, rng), False)
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
        sender_rates: SenderRates | None = None,  # shared by every carrier's loop
        id_format: IdFormat = IdFormat.AUTO,
        learner: IdFormatLearner | None = None,  # AUTO: sees the resp ids
        receipts_per_message: bool = False,  # see Submitted.whole_message
        outcome_latency: Histogram | None = None,  # carried over from the carrier's last start
        monotonic: Callable[[], float] = time.monotonic,  # for the senders' rate windows
        query_after_s: float | None = None,  # carriers[].receipt_queries.after_s
    ) -> None:
        self.carrier = carrier
        self._queue = queue
        self._port = port
        self._claim_batch = claim_batch
        # The main loop claims a window's worth at a time, one batch ahead: enough to refill
        # the window while the next claim commits; larger batches only make the transaction an
        # urgent claim waits behind longer.
        self._batch = max(1, min(claim_batch, max_unrecorded))
        self._max_unrecorded = max_unrecorded
        self._reserve = int(max_unrecorded * URGENT_RESERVE)
        self._policy = policy
        self._clock = clock
        # Rate windows count in monotonic time: wall times recorded before a clock step back
        # would hold a capped sender for the length of the step.
        self._monotonic = monotonic
        self._on_changes = on_changes
        self._idle_poll_s = idle_poll_s
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        # The main loop's last claim came back short (nothing more was due) and nothing has
        # gone back to the queue since; a wake() says a submit queued work meanwhile.
        self._drained = False
        self.idle = asyncio.Event()  # set while the main loop waits for work
        self._urgent = asyncio.Event()
        self._room = asyncio.Event()
        # Urgent sends waiting for a bind (a window slot, a rate token), and the urgent claimer
        # while it claims and sends: while there are any, bulk sends wait for them, or a freed
        # token would go to whichever waiter woke first (bulk, under a carrier's rate cap).
        self._urgent_waiting = 0
        self._urgent_passed = asyncio.Event()
        self._pending: list[Outcome] = []
        self._pending_sent = 0  # of _pending, outcomes of segments that were handed to a bind
        self._pending_urgent: list[float] = []  # due times of urgent segments in _pending
        self._urgent_due: list[float] = []  # heap: when the urgent claimer is to run next
        self._urgent_timer: asyncio.TimerHandle | None = None
        self._recording: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()  # held until done (see rebased)
        self._handed: set[asyncio.Task[bool]] = set()
        self._all_recorded = asyncio.Event()
        self._unrecorded = 0  # sent, outcome not yet committed: the duplicate bound
        self._claimed = 0  # claimed, outcome not yet committed (sent or not)
        self._stopping = False
        # hand_back() moves this on: the sends of batches started before it hand back instead.
        self._generation = 0
        self.submitted = 0
        self.recorded = 0
        self.deferred = 0
        self.late_accepted = 0  # acceptances that came after their submit timed out
        # From a sent segment's outcome (its submit_sm_resp, or none in time) to its commit:
        # the part of a window slot's turn that storage decides.
        self.outcome_latency = Histogram() if outcome_latency is None else outcome_latency
        self._pending_since = 0.0
        self._senders = SenderRates() if sender_rates is None else sender_rates
        self._withdrawn: dict[int, None] = {}  # an ordered set, oldest first (see withdraw)
        self._id_format = id_format
        self._learner = learner
        self._whole_message = receipts_per_message
        self._query_after_s = query_after_s

    def wake(self, *, urgent_at: float | None = None) -> None:
        """New work may be due (a submit landed): claim now rather than at the next poll.

        `urgent_at` (clock time, now or later) says an urgent segment is due then: the urgent
        claimer runs at that time instead of waiting for the main loop's bulk batches.
        """
        self._wake.set()
        if urgent_at is not None:
            self._urgent_at(urgent_at)

    def rebased(self) -> asyncio.Task[None] | None:
        """The store moved its waiting times (the wall clock stepped back): claim now, and set
        the urgent timers again from the store, their old times being the old clock's. The
        task that reads them, if any."""
        self._drop_urgent_timer()
        self._wake.set()
        if self._stopping:
            return None
        task = asyncio.get_running_loop().create_task(self._arm_stored_urgent())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _urgent_at(self, at: float) -> None:
        now = self._clock()
        if at <= now:
            self._urgent.set()
            return
        due = self._urgent_due
        if len(due) >= MAX_URGENT_TIMERS or self._stopping:
            return
        heapq.heappush(due, at)
        if due[0] == at:  # a new earliest time: the timer moves up
            self._arm_urgent_timer(now)

    def _arm_urgent_timer(self, now: float) -> None:
        if self._urgent_timer is not None:
            self._urgent_timer.cancel()
            self._urgent_timer = None
        if self._urgent_due:
            delay = max(0.0, self._urgent_due[0] - now)
            loop = asyncio.get_running_loop()
            self._urgent_timer = loop.call_later(delay, self._urgent_timer_fired)

    def _urgent_timer_fired(self) -> None:
        self._urgent_timer = None
        now = self._clock()
        due = self._urgent_due
        while due and due[0] <= now + _TIMER_SLACK_S:
            heapq.heappop(due)
        self._urgent.set()
        self._arm_urgent_timer(now)

    def ready_for_urgent(self) -> bool:
        """Whether urgent segments handed over now would go out at once (room on the reserve)."""
        return not self._stopping and self._unrecorded < self._max_unrecorded

    def ready_for_arrival(self) -> bool:
        """Whether segments of any priority handed over now would go out at once and pass
        nothing: the main loop's last claim left nothing due behind and no submit has queued
        work since (its wake() would be set), nothing claimed is still unsent, and there is
        room outside the urgent reserve. Retries that come due meanwhile wait for the next
        claim, as they would."""
        return (
            self._drained
            and not self._wake.is_set()
            and not self._stopping
            and self._claimed == self._unrecorded
            and self._unrecorded < self._max_unrecorded - self._reserve
        )

    def hand_over(self, segments: Sequence[ClaimedSegment]) -> None:
        """Send segments the store claimed on arrival (NewMessage.send_now), beside the claimers.

        Once handed over they are this loop's: sent, or handed back to the queue on a stop, and
        run() returns only after their outcomes are recorded.
        """
        self._claimed += len(segments)
        # Those that can go without waiting go now, so that the next arrival already sees them
        # on a bind (ready_for_arrival) rather than claimed and unsent.
        sent = 0
        while sent < len(segments) and self._submit_at_once(segments[sent]):
            sent += 1
        if sent < len(segments):
            self._send_soon(segments[sent:])

    def _submit_at_once(self, segment: ClaimedSegment) -> bool:
        """Submit `segment` if nothing would make _send wait for room or defer it."""
        if (
            self._stopping
            or self._unrecorded >= self._limit(segment)
            or segment.source in self._senders.windows
            or (self._urgent_waiting and not _is_urgent(segment))
        ):
            return False
        return self._try_send(segment)

    def _limit(self, segment: ClaimedSegment) -> int:
        """Unrecorded segments past which `segment` waits: bulk leaves the urgent reserve free."""
        if segment.priority < URGENT_PRIORITY:
            return self._max_unrecorded - self._reserve
        return self._max_unrecorded

    def _try_send(self, segment: ClaimedSegment) -> bool:
        if not self._port.try_send(segment.body, functools.partial(self._done, segment)):
            return False
        self._unrecorded += 1
        self.submitted += 1
        return True

    def withdraw(self, segment_ids: Iterable[int]) -> None:
        """These segments were cancelled: any of them claimed here and not yet written is not
        sent (one already on the wire may still be accepted, and then that wins)."""
        withdrawn = self._withdrawn
        for segment_id in segment_ids:
            withdrawn[segment_id] = None
        while len(withdrawn) > MAX_WITHDRAWN:
            del withdrawn[next(iter(withdrawn))]

    def _send_soon(self, segments: Sequence[ClaimedSegment]) -> None:
        task = asyncio.get_running_loop().create_task(self._send_all(segments))
        self._handed.add(task)
        task.add_done_callback(self._handed.discard)

    def hand_back(self) -> None:
        """Put what this loop claimed and has not sent back in the queue, where a failover
        sweep can move it (the carrier has been down a while). Later claims wait for a bind as
        always, so only a batch claimed while the binds were still up is held this way."""
        self._drained = False
        if self._claimed > self._unrecorded:
            self._generation += 1
            self._room.set()
            self._urgent_passed.set()  # bulk waiting for an urgent claimer held up by the outage
            self._port.interrupt()

    @property
    def unrecorded(self) -> int:
        """Segments handed to a bind whose outcome is not yet committed."""
        return self._unrecorded

    @property
    def claimed(self) -> int:
        """Segments claimed whose outcome is not yet committed (unrecorded ones included)."""
        return self._claimed

    async def run(self) -> None:
        """Claim and send until stop(); then record what is outstanding and return.

        Cancelled, it ends at once: outcomes still owed are recorded if they come, and recovery
        queues again whatever is left in flight.
        """
        cancelled = False
        try:
            # One task group: if either claimer fails, both stop and the failure is seen.
            async with asyncio.TaskGroup() as group:
                group.create_task(self._urgent_loop())
                try:
                    await self._claim_loop()
                finally:
                    self._stopping = True
                    self._urgent.set()
                    self._drop_urgent_timer()
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            # Outstanding submits still owe a result (the binds answer or time them out as
            # unknown); return only when every claimed segment is recorded.
            while self._claimed > 0 and not cancelled:
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
        self._urgent_passed.set()
        self._port.interrupt()  # a wait for room on a full window ends too
        self._drop_urgent_timer()

    def _drop_urgent_timer(self) -> None:
        if self._urgent_timer is not None:
            self._urgent_timer.cancel()
            self._urgent_timer = None
        self._urgent_due.clear()

    async def _claim_loop(self) -> None:
        ahead: asyncio.Task[_Batch | None] | None = None
        try:
            while not self._stopping:
                if ahead is None:
                    await self._wait_for_room()
                    if self.stopping:
                        break
                    # Cleared before the claim, not after it: a submit that lands too late for
                    # this claim to see it may announce itself before the claim's answer is
                    # back, and its wake() must then end the idle wait that follows.
                    if self._wake.is_set():
                        self._drained = False  # this claim takes what was queued first
                    self._wake.clear()
                    batch = await self._next_batch(ahead=False)
                else:
                    batch, ahead = await ahead, None
                if batch is None:
                    self._drained = False
                    await asyncio.sleep(CLAIM_RETRY_S)
                    continue
                segments, full = batch
                self._drained = not full
                if not full and not segments:
                    await self._idle()
                    continue
                if full:  # more is due: claim it while this batch goes out
                    ahead = asyncio.get_running_loop().create_task(self._next_batch(ahead=True))
                if not await self._send_all(segments) and ahead is not None:
                    # Handed back (or stopping): so is the batch claimed ahead, and the next
                    # claim waits for a bind.
                    await self._abandon(ahead)
                    ahead = None
        finally:
            if ahead is not None:
                await self._abandon(ahead)

    async def _wait_for_room(self) -> None:
        """Until a bind could take a submit (or stopping): the port's wait, minus the wake-ups
        a hand_back() gives every waiter, so that it claims nothing while the binds are down."""
        while True:
            generation = self._generation
            await self._port.wait_ready()
            if generation == self._generation or self._stopping:
                return

    async def _next_batch(self, *, ahead: bool) -> _Batch | None:
        """The main loop's next claim, and whether it came back full; None after an error.

        A batch claimed ahead sends its urgent segments (those no urgent claim took first) at
        once, on the reserve, rather than after the batch before it; in a task of their own, so
        that cancelling this one (see _abandon) only ever cancels a claim.
        """
        claim = await self._claim(self._batch, 0)
        if claim is None:
            return None
        segments: Sequence[ClaimedSegment] = claim.segments
        full = len(segments) == self._batch
        if ahead:
            urgent = 0
            while urgent < len(segments) and segments[urgent].priority >= URGENT_PRIORITY:
                urgent += 1  # claims come in priority order: the urgent ones lead
            if urgent:
                self._send_soon(segments[:urgent])
                segments = segments[urgent:]
        return segments, full

    async def _idle(self) -> None:
        """Nothing due: wait for a submit's wake() (none at all if one came since the last
        claim began) or the next poll."""
        if self._wake.is_set():
            return
        self.idle.set()
        try:
            async with asyncio.timeout(self._idle_poll_s):
                await self._wake.wait()
        except TimeoutError:
            pass
        finally:
            self.idle.clear()

    async def _abandon(self, ahead: asyncio.Task[_Batch | None]) -> None:
        """A batch claimed ahead is not to be sent (a stop, a hand-back): cancel its claim, or
        return what it claimed to the queue."""
        ahead.cancel()
        try:
            batch = await ahead
        except asyncio.CancelledError:
            return  # the store puts an abandoned claim back itself
        if batch is not None:
            now = self._clock()
            for segment in batch[0]:
                self._add(Deferred(segment.segment_id, now), now, sent=False)

    async def _urgent_loop(self) -> None:
        """Claim urgent segments the moment one is submitted, beside the main loop."""
        await self._arm_stored_urgent()
        while True:
            await self._urgent.wait()
            self._urgent.clear()
            if self._stopping:
                return
            self._urgent_waiting += 1  # bulk gives way while they are claimed and sent
            try:
                await self._wait_for_room()  # during an outage urgent segments stay queued too
                if self.stopping:
                    return
                # Claimed even when no room is free: they go first as outcomes free the
                # reserve, rather than behind the bulk batches the main loop holds.
                claim = await self._claim(self._claim_batch, URGENT_PRIORITY)
                if claim is not None:
                    await self._send_all(claim.segments)
            finally:
                self._urgent_passed_one()

    async def _arm_stored_urgent(self) -> None:
        """Urgent segments the store already holds scheduled (a restart) set the urgent
        claimer's timers, as their submits or retries did when they were scheduled; otherwise
        they would wait for the main loop's next claim, behind whatever bulk it holds."""
        try:
            times = await self._queue.urgent_due(self.carrier, limit=MAX_URGENT_TIMERS)
        except Exception as exc:  # they still go out with the main loop's claims
            log.error(
                "reading scheduled urgent segments failed",
                carrier=self.carrier,
                error=_describe(exc),
            )
            return
        for at in times:
            self._urgent_at(at)

    async def _claim(self, limit: int, min_priority: int) -> Claim | None:
        """Claim up to `limit`; None after a storage error (logged)."""
        try:
            claim = await self._queue.claim(
                self.carrier, limit, now=self._clock(), min_priority=min_priority
            )
        except Exception as exc:
            # A full disk, a busy database or a fault in the store must not stop sending for
            # good, nor take the other claimer down with segments in hand: wait, retry.
            log.error(
                "claiming segments failed; retrying", carrier=self.carrier, error=_describe(exc)
            )
            return None
        self._claimed += len(claim.segments)
        if claim.expired:
            self._publish(claim.expired)
        return claim

    def _publish(self, changes: Sequence[Change]) -> None:
        """Events for subscribers; a fault there loses events, never segments."""
        try:
            self._on_changes(changes)
        except Exception as exc:
            log.error("publishing state changes failed", carrier=self.carrier, error=_describe(exc))

    async def _send_all(self, segments: Sequence[ClaimedSegment]) -> bool:
        """Hand `segments` to the binds; False when stopping or hand_back() returned the rest
        to the queue."""
        generation = self._generation
        for i, segment in enumerate(segments):
            try:
                sent = await self._send(segment, generation)
            except BaseException:  # cancelled: what was not sent goes back, or it is never recorded
                self._hand_back_unsent(segments[i:])
                raise
            if sent is _STOPPED:
                self._hand_back_unsent(segments[i:])
                return False
            if sent is _DEFERRED:
                self._defer(segment)
            elif sent is _WITHDRAWN:  # the store keeps it cancelled, or the next claim expires it
                now = self._clock()
                self._add(Deferred(segment.segment_id, now), now, sent=False)
        return True

    def _hand_back_unsent(self, segments: Sequence[ClaimedSegment]) -> None:
        now = self._clock()
        for unsent in segments:
            self._add(Deferred(unsent.segment_id, now), now, sent=False)

    def _release(self, recorded: int, sent: int) -> None:
        """`recorded` claimed segments, `sent` of them handed to a bind, have their outcome
        committed: their room is free."""
        self._claimed -= recorded
        self._unrecorded -= sent
        self._room.set()
        if self._claimed <= 0:
            self._all_recorded.set()

    async def _send(self, segment: ClaimedSegment, generation: int) -> _Send:
        """Submit on the first bind with room; _STOPPED only once stopping or handing back
        (`generation` is past); _DEFERRED when the sender's own rate says not now; _WITHDRAWN
        when it was cancelled, or its validity ran out, before there was room.

        Room under max_unrecorded (bulk leaves the urgent reserve free) is checked and taken
        with no await between that and the write, and so is the sender's window, so the time it
        records is the time the submit_sm leaves. The port's wait_ready() returns when a slot
        frees up and also when the binds close, so a stop during an outage does not leave this
        waiting. Bulk gives way to urgent sends that wait for a bind (see _urgent_waiting).
        """
        limit = self._limit(segment)
        urgent = _is_urgent(segment)
        waiting = False  # counted in _urgent_waiting
        senders = self._senders
        try:
            while True:
                if self._stopping or generation != self._generation:
                    return _STOPPED
                withdrawn = self._withdrawn
                if withdrawn and segment.segment_id in withdrawn:
                    del withdrawn[segment.segment_id]
                    return _WITHDRAWN
                expires_at = segment.expires_at
                if expires_at is not None and self._clock() >= expires_at:
                    return _WITHDRAWN
                if self._urgent_waiting and not urgent:
                    self._urgent_passed.clear()
                    await self._urgent_passed.wait()
                    continue
                if self._unrecorded >= limit:
                    self._room.clear()
                    await self._room.wait()
                    continue
                # Read at each pass: a reload may have given the sender another rate.
                window = senders.windows.get(segment.source) if senders.windows else None
                if window is None:
                    if self._try_send(segment):
                        return _SENT
                else:
                    now = self._monotonic()  # only capped senders pay for reading the clock
                    if not window.allows(now):
                        return _DEFERRED
                    if self._try_send(segment):
                        window.record(now)
                        return _SENT
                if urgent and not waiting:
                    waiting = True
                    self._urgent_waiting += 1
                await self._port.wait_ready()
        finally:
            if waiting:
                self._urgent_passed_one()

    def _urgent_passed_one(self) -> None:
        self._urgent_waiting -= 1
        if not self._urgent_waiting:
            self._urgent_passed.set()

    def _defer(self, segment: ClaimedSegment) -> None:
        """Back to the queue for the sender's next free slot; later ones queue up behind it at
        the sender's rate, so they return spaced out rather than all at once. Urgent ones
        have a line of their own (see SenderRates)."""
        now = self._monotonic()
        next_slot = self._senders.next_slot
        window = self._senders.windows.get(segment.source)
        urgent = _is_urgent(segment)
        if window is None:  # uncapped since _send saw its window: due now
            slot = now
        else:
            line = (segment.source, urgent)
            slot = max(window.ready_at(now), next_slot.get(line, 0.0))
            next_slot[line] = slot + window.period_s / window.limit
        self.deferred += 1
        wall = self._clock()  # the queue keeps wall-clock times
        deferred = Deferred(segment.segment_id, wall + (slot - now))
        self._add(deferred, wall, sent=False, urgent=urgent)

    def _done(self, segment: ClaimedSegment, result: SubmitResult) -> None:
        learner = self._learner
        if learner is not None and learner.learning and result.message_id:
            learner.resp(result.message_id)
        now = self._clock()
        outcome = outcome_for(
            segment,
            result,
            bind=result.bind,
            policy=self._policy,
            now=now,
            rng=self._rng,
            id_format=self._id_format,
            whole_message=self._whole_message,
            query_after_s=self._query_after_s,
        )
        if result.late:
            # Accepted after all, by an SMSC slower than the response timeout: the store takes
            # it unless the segment went out again meanwhile. Not one of the window's outcomes
            # (the unknown one released the slot), so it is recorded on its own.
            self.late_accepted += 1
            task = asyncio.get_running_loop().create_task(self._record_late(outcome))
            self._recording.add(task)
            task.add_done_callback(self._recording.discard)
            return
        if isinstance(outcome, Failed) and segment.total > 1:
            # The handset can never put the message together: the parts this loop holds
            # unsent are not sent either (the store cancels them as they come back).
            first = segment.segment_id - segment.index
            self.withdraw(first + i for i in range(segment.total) if i != segment.index)
        self._add(outcome, now, sent=True, urgent=_is_urgent(segment))

    async def _record_late(self, outcome: Outcome) -> None:
        try:
            changes = await self._queue.record([outcome], now=self._clock())
        except Exception as exc:  # the segment is sent again: at least once all the same
            log.warning(
                "a late acceptance was not recorded", carrier=self.carrier, error=_describe(exc)
            )
            return
        # Accepted while claimed again: if this loop has not written that copy yet, it never will.
        self.withdraw(c.segment_id for c in changes if c.segment_state is SegmentState.SUBMITTED)
        if changes:
            self._publish(changes)

    def _add(self, outcome: Outcome, now: float, *, sent: bool, urgent: bool = False) -> None:
        """`now` is the clock reading the outcome's times came from."""
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
            # The batch is recorded as of this reading: were it recorded as of a later one, a
            # clock step back in between would leave its retry times, from the old clock,
            # marked as the new clock's, and the step's rebase would pass them over.
            self._pending_since = now
        self._pending.append(outcome)
        self._pending_sent += sent
        if isinstance(outcome, Retry | Unknown | Deferred):
            self._drained = False  # it goes back to the queue: arrivals must not pass it
            if urgent:
                self._pending_urgent.append(outcome.next_attempt_at)

    def _flush(self) -> None:
        """Hand this tick's outcomes to the store at once, not behind an earlier record call.

        The store's writer commits whatever is pending in one transaction, so this costs no
        extra commits. A receipt read off the wire after its submit_sm_resp may still be queued
        just before this (the two are batched apart); the store applies a transaction's
        receipts after its other writes, so it matches directly instead of being held as early.
        """
        if not self._pending:  # settle_outcomes() flushed this tick's already
            return
        batch, self._pending = self._pending, []
        sent, self._pending_sent = self._pending_sent, 0
        urgent, self._pending_urgent = self._pending_urgent, []
        since = self._pending_since
        task = asyncio.get_running_loop().create_task(self._record(batch, sent, urgent, since))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def settle_outcomes(self) -> None:
        """Return once the outcomes made so far are committed (or their recording gave up):
        a clock step's rebase, queued to the store after them, then moves them with the rest."""
        self._flush()
        recording = set(self._recording)
        if recording:
            await asyncio.wait(recording)

    async def _record(
        self, batch: list[Outcome], sent: int, urgent_due: list[float], since: float
    ) -> None:
        loop = asyncio.get_running_loop()
        delay, most = RECORD_RETRY_S
        give_up_at: float | None = None
        while True:
            try:
                changes = await self._queue.record(batch, now=since)
                break
            except Exception as exc:  # storage trouble: keep the outcomes and retry
                error = _describe(exc)
                if self._stopping:
                    if give_up_at is None:
                        give_up_at = loop.time() + STOP_RECORD_GRACE_S
                    elif loop.time() >= give_up_at:
                        log.error(
                            "outcomes not recorded before the stop; the next start sends "
                            "these segments again",
                            carrier=self.carrier,
                            segments=len(batch),
                            error=error,
                        )
                        self._release(len(batch), sent)
                        return
                log.error(
                    "recording outcomes failed; retrying",
                    carrier=self.carrier,
                    segments=len(batch),
                    error=error,
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                delay = min(most, delay * 2)
        if sent:
            self.outcome_latency.observe(max(0.0, self._clock() - since), sent)
        self.recorded += len(batch)
        self._release(len(batch), sent)
        for at in set(urgent_due):  # queued again only now: claimable from here on
            self._urgent_at(at)
        if changes:
            self._publish(changes)


def _describe(exc: Exception) -> str:
    """A storage error says what it is; anything else (a fault) is named by its type too."""
    return str(exc) if isinstance(exc, QueueError) else f"{type(exc).__name__}: {exc}"


def _is_urgent(segment: ClaimedSegment) -> bool:
    return segment.priority >= URGENT_PRIORITY
