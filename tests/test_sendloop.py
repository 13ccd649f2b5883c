"""The send loop against the fake SMSC: order, fairness, retries, failures, expiry, scheduling."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import structlog.testing

from smppd import sendloop
from smppd.binds import CarrierBinds
from smppd.metrics import CarrierObserver
from smppd.outbound import OutboundProfile, prepare
from smppd.pdu.codec import decode_body
from smppd.pdu.command import CommandId
from smppd.pdu.pdus import DataSm, DeliverSm, SubmitSm
from smppd.pdu.receipt import correlation_keys
from smppd.pdu.status import CommandStatus, StatusClass, StatusPolicy
from smppd.queue import MessageState, NewMessage, SegmentState
from smppd.queue.errors import StorageFullError
from smppd.queue.memory import MemoryQueue
from smppd.queue.model import (
    URGENT_PRIORITY,
    Change,
    Claim,
    ClaimedSegment,
    Deferred,
    Failed,
    Outcome,
    ReceiptIn,
    ReceiptOutcome,
    Retry,
    Submitted,
    Unknown,
    segment_id,
)
from smppd.ratelimit import SenderRates
from smppd.sendloop import CarrierSendLoop, RetryPolicy, outcome_for
from smppd.session import BindSettings, SubmitResult
from tools.fake_smsc import FakeSmsc, SmscConfig

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def message(
    text: str,
    *,
    client: str = "a",
    source: str = "SMPPD",
    priority: int = 5,
    not_before: float | None = None,
    expires_at: float | None = None,
    send_now: bool = False,
) -> NewMessage:
    bodies = prepare(
        destination="+447700900123",
        source=source,
        text=text,
        encoding="auto",
        registered_delivery=False,
        expires_at=None,
        ref=1,
        profile=OutboundProfile(),
    ).bodies
    return NewMessage(
        client=client,
        ref=None,
        source=source,
        destination="+447700900123",
        carrier="fake",
        priority=priority,
        not_before=not_before,
        expires_at=expires_at,
        registered_delivery=False,
        segments=bodies,
        send_now=send_now,
    )


@dataclass
class Pipeline:
    smsc: FakeSmsc
    queue: MemoryQueue
    loop: CarrierSendLoop
    clock: Clock
    rates: SenderRates

    def texts(self) -> list[str]:
        return [m.text for m in self.smsc.records.messages]


async def no_deliveries(pdu: DeliverSm | DataSm) -> int:
    return 0


@asynccontextmanager
async def pipeline(
    *messages: NewMessage,
    window: int = 1,
    claim_batch: int = 5,
    start: bool = True,
    clock: Clock | None = None,
    sender_tps: dict[str, float] | None = None,
    rates: SenderRates | None = None,  # shared with another pipeline; else from sender_tps
    queue: MemoryQueue | None = None,
    response_timeout_s: float = 10.0,
    policy: RetryPolicy | None = None,
    on_changes: Callable[[Sequence[Change]], None] = lambda changes: None,
    observer: CarrierObserver | None = None,
    statuses: StatusPolicy | None = None,
) -> AsyncIterator[Pipeline]:
    """Messages enqueued first, then a bound carrier and its send loop started."""
    clock = clock or Clock()
    queue = queue or MemoryQueue()
    rates = SenderRates(sender_tps) if rates is None else rates
    if messages:
        await queue.enqueue(messages, now=clock())
    async with FakeSmsc(SmscConfig(port=0)) as smsc:
        binds = CarrierBinds(
            BindSettings(
                host="127.0.0.1",
                port=smsc.port,
                system_id="smppd",
                password="secret",
                window=window,
                response_timeout_s=response_timeout_s,
                statuses=statuses or StatusPolicy(),
            ),
            binds=1,
            handler=no_deliveries,
            carrier="fake",
            observer=observer,
        )
        loop = CarrierSendLoop(
            "fake",
            queue,
            binds,
            claim_batch=claim_batch,
            max_unrecorded=window,
            policy=policy or RetryPolicy(max_attempts=3, initial_s=0.0, max_s=0.0),
            clock=clock,
            on_changes=on_changes,
            idle_poll_s=0.05,
            rng=random.Random(1),
            sender_rates=rates,
        )
        async with binds:
            await binds.wait_bound()
            task = asyncio.create_task(loop.run()) if start else None
            try:
                yield Pipeline(smsc, queue, loop, clock, rates)
            finally:
                loop.stop()
                await binds.close()
                if task is not None:
                    await asyncio.wait_for(task, 10)


async def test_urgent_overtakes_a_bulk_backlog() -> None:
    """Urgent messages queued after a bulk backlog reach the SMSC before it."""
    bulk = [message(f"bulk {i}", priority=0) for i in range(40)]
    urgent = [message(f"otp {i}", priority=9) for i in range(3)]
    async with pipeline(*bulk, *urgent) as p:
        await p.smsc.records.wait_for(43, timeout=10)
        assert p.texts()[:3] == ["otp 0", "otp 1", "otp 2"]
        assert sorted(p.texts()[3:]) == sorted(f"bulk {i}" for i in range(40))


async def test_urgent_uses_the_reserved_window_while_bulk_fills_the_rest() -> None:
    """With a slow SMSC, a bulk backlog fills all but the reserved tenth of the window; an
    urgent message queued then goes out at once instead of waiting for bulk answers."""
    bulk = [message(f"bulk {i}", priority=0) for i in range(30)]
    async with pipeline(*bulk, window=10, claim_batch=10, start=False) as p:
        p.smsc.set_faults(latency_s=1.0)
        task = asyncio.create_task(p.loop.run())
        await p.smsc.records.wait_for(9, timeout=5)
        await p.queue.enqueue([message("otp", priority=9)], now=p.clock())
        p.loop.wake(urgent_at=p.clock())
        await p.smsc.records.wait_for(10, timeout=5)
        assert p.texts()[9] == "otp"
        assert sorted(p.texts()[:9]) == sorted(f"bulk {i}" for i in range(9))
        p.smsc.set_faults(latency_s=0.0)
        p.loop.stop()
        await asyncio.wait_for(task, 10)


async def test_clients_share_the_link_fairly() -> None:
    """A small client's messages are interleaved with a big client's backlog, not after it."""
    big = [message(f"big {i}", client="big") for i in range(60)]
    small = [message(f"small {i}", client="small") for i in range(4)]
    async with pipeline(*big, *small) as p:
        await p.smsc.records.wait_for(64, timeout=10)
        first = p.texts()[:10]
        assert {f"small {i}" for i in range(4)} <= set(first), first


async def test_throttled_answer_is_retried_then_accepted() -> None:
    """ESME_RTHROTTLED sends the segment back to the queue, using none of its attempts; it is
    accepted on a later try."""
    async with pipeline(start=False) as p:
        p.smsc.set_faults(submit_errors={CommandStatus.ESME_RTHROTTLED: 1.0})
        [queued] = await p.queue.enqueue([message("retry me")], now=p.clock())
        task = asyncio.create_task(p.loop.run())
        await p.smsc.records.wait_for(1, timeout=10, segments=True)
        p.smsc.set_faults(submit_errors={})
        await p.smsc.records.wait_for(1, timeout=10)
        p.loop.stop()
        await asyncio.wait_for(task, 10)
        status = await p.queue.status(queued.message_id, None)
        assert status is not None
        assert status.state is MessageState.SUBMITTED
        assert len(p.smsc.records.segments) >= 2
        assert status.segments[0].attempts == 1  # the accepted one; throttled answers are free
        assert p.texts() == ["retry me"]


async def test_an_acceptance_after_the_response_timeout_is_kept_and_not_sent_again() -> None:
    """An SMSC slower than the response timeout: the submit ends unknown and waits to go again
    (unknown_delay_s), its late ESME_ROK comes first and settles it with its carrier id, and the
    SMSC gets it once. The bind stays up: a late answer is a sign of life."""
    submitted = asyncio.Event()

    def on_changes(changes: Sequence[Change]) -> None:
        if any(c.segment_state is SegmentState.SUBMITTED for c in changes):
            submitted.set()

    policy = RetryPolicy(max_attempts=3, initial_s=0.0, max_s=0.0, unknown_delay_s=30.0)
    observer = CarrierObserver("fake")
    async with pipeline(
        start=False,
        response_timeout_s=0.3,
        policy=policy,
        on_changes=on_changes,
        observer=observer,
    ) as p:
        p.smsc.set_faults(latency_s=0.45)  # answered before the probe that follows times out
        [queued] = await p.queue.enqueue([message("slow")], now=p.clock())
        task = asyncio.create_task(p.loop.run())
        async with asyncio.timeout(10):
            await submitted.wait()
        p.loop.stop()
        await asyncio.wait_for(task, 10)
        status = await p.queue.status(queued.message_id, None)
        assert status is not None
        assert status.state is MessageState.SUBMITTED
        [segment] = status.segments
        assert segment.carrier_message_id == p.smsc.records.segments[0].message_id
        assert segment.attempts == 1  # counted once, when it timed out
        assert p.loop.late_accepted == 1
        assert (observer.late, observer.late_accepted) == (1, 1)  # smppd_late_acceptances
        assert len(p.smsc.records.segments) == 1
        assert len(p.smsc.connections) == 1  # never dropped and bound again


async def test_permanent_error_fails_the_message() -> None:
    """ESME_RINVDSTADR fails the segment at once, without a retry."""
    async with pipeline(start=False) as p:
        p.smsc.set_faults(submit_errors={CommandStatus.ESME_RINVDSTADR: 1.0})
        [queued] = await p.queue.enqueue([message("bad number")], now=p.clock())
        task = asyncio.create_task(p.loop.run())
        await p.smsc.records.wait_for(1, timeout=10, segments=True)
        p.loop.stop()  # run() returns only once every claimed segment's outcome is recorded
        await asyncio.wait_for(task, 10)
        status = await p.queue.status(queued.message_id, None)
        assert status is not None
        assert status.state is MessageState.FAILED
        assert status.segments[0].command_status == CommandStatus.ESME_RINVDSTADR
        assert len(p.smsc.records.segments) == 1


@pytest.mark.parametrize("listed", [False, True])
async def test_a_vendor_code_fails_the_message_unless_the_carrier_lists_it_temporary(
    listed: bool,
) -> None:
    """0x401, a vendor code: read by the spec it fails the message at once; with the carrier's
    submit_statuses saying temporary, the message is retried and accepted."""
    statuses = StatusPolicy.of(temporary=[0x401]) if listed else None
    async with pipeline(start=False, statuses=statuses) as p:
        p.smsc.set_faults(submit_errors={0x401: 1.0})
        [queued] = await p.queue.enqueue([message("busy")], now=p.clock())
        task = asyncio.create_task(p.loop.run())
        await p.smsc.records.wait_for(1, timeout=10, segments=True)
        p.smsc.set_faults(submit_errors={})
        if listed:
            await p.smsc.records.wait_for(1, timeout=10)
        p.loop.stop()
        await asyncio.wait_for(task, 10)
        status = await p.queue.status(queued.message_id, None)
        assert status is not None
        if listed:
            assert status.state is MessageState.SUBMITTED
            assert p.texts() == ["busy"]
        else:
            assert status.state is MessageState.FAILED
            assert status.segments[0].command_status == 0x401
            assert len(p.smsc.records.segments) == 1


async def test_expired_and_scheduled_messages() -> None:
    """An expired message is never sent; a scheduled one waits for its time."""
    clock_t0 = T0
    expired = message("too late", expires_at=clock_t0 - 1)
    later = message("later", not_before=clock_t0 + 100)
    now_msg = message("now")
    async with pipeline(expired, later, now_msg) as p:
        await p.smsc.records.wait_for(1, timeout=10)
        assert p.texts() == ["now"]
        p.clock.now = clock_t0 + 101
        p.loop.wake()
        await p.smsc.records.wait_for(2, timeout=10)
        assert p.texts() == ["now", "later"]
        status = await p.queue.status(1, None)
        assert status is not None
        assert status.state is MessageState.EXPIRED


class WallClock(Clock):
    def __call__(self) -> float:
        return time.time()


async def test_sender_rate_holds_over_any_second_at_the_smsc() -> None:
    """A sender capped at 10/s never has more than 10 submits in any one-second span at the
    SMSC, while an uncapped sender's messages are not held back behind it."""
    capped = [message(f"capped {i}") for i in range(25)]
    free = [message(f"free {i}", client="b", source="FREE") for i in range(5)]
    async with pipeline(
        *capped, *free, window=10, claim_batch=30, clock=WallClock(), sender_tps={"SMPPD": 10}
    ) as p:
        await p.smsc.records.wait_for(30, timeout=20)
        times = sorted(s.time for s in p.smsc.records.segments if s.text.startswith("capped"))
        assert len(times) == 25
        assert all(
            later - earlier >= 1.0 for earlier, later in zip(times, times[10:], strict=False)
        )
        free_last = max(s.time for s in p.smsc.records.segments if s.text.startswith("free"))
        assert free_last < times[-1]
        assert p.loop.deferred > 0


async def test_a_senders_rate_holds_over_all_its_carriers_together() -> None:
    """A sender capped at 10/s whose messages go to two carriers (two routes, or a failover
    under way) sends 10/s in all, not 10/s on each: the cap protects the sender id."""
    rates = SenderRates({"SMPPD": 10})
    to_a = [message(f"a {i}") for i in range(10)]
    to_b = [message(f"b {i}") for i in range(10)]
    options: dict[str, Any] = {"window": 10, "claim_batch": 30, "rates": rates}
    async with (
        pipeline(*to_a, clock=WallClock(), **options) as a,
        pipeline(*to_b, clock=WallClock(), **options) as b,
    ):
        await a.smsc.records.wait_for(10, timeout=10)
        await b.smsc.records.wait_for(10, timeout=10)
        segments = [*a.smsc.records.segments, *b.smsc.records.segments]
    times = sorted(s.time for s in segments)
    assert len(times) == 20
    assert all(later - earlier >= 1.0 for earlier, later in zip(times, times[10:], strict=False))


class SteppedClock(Clock):
    """The wall clock, set back by `offset` seconds (an NTP step, a VM resumed)."""

    offset = 0.0

    def __call__(self) -> float:
        return time.time() - self.offset


async def test_a_capped_sender_keeps_its_rate_when_the_wall_clock_steps_back() -> None:
    """A sender's rate window counts in monotonic time: the wall clock set back 10 minutes
    after its first sends neither stops it until the clock catches up nor lets it burst."""
    clock = SteppedClock()
    capped = [message(f"capped {i}") for i in range(15)]
    async with pipeline(
        *capped, window=10, claim_batch=30, clock=clock, sender_tps={"SMPPD": 10}
    ) as p:
        await p.smsc.records.wait_for(5, timeout=5)
        clock.offset = 600.0
        await p.smsc.records.wait_for(15, timeout=10)
        times = sorted(s.time for s in p.smsc.records.segments)
        assert all(
            later - earlier >= 1.0 for earlier, later in zip(times, times[10:], strict=False)
        )


async def test_a_reload_that_changes_a_senders_cap_counts_what_it_sent_already() -> None:
    """10/s lowered to 8/s after the first second's ten: the new window counts those ten, so
    no second at the SMSC holds more than ten, although messages submitted then find it
    (a fresh window would have sent eight of them at once)."""
    capped = [message(f"capped {i}") for i in range(10)]
    async with pipeline(
        *capped, window=10, claim_batch=30, clock=WallClock(), sender_tps={"SMPPD": 10}
    ) as p:
        await p.smsc.records.wait_for(10, timeout=5)
        p.rates.set_tps({"SMPPD": 8})
        await p.queue.enqueue([message(f"more {i}") for i in range(10)], now=p.clock())
        p.loop.wake()
        await p.smsc.records.wait_for(20, timeout=10)
        times = sorted(s.time for s in p.smsc.records.segments)
    assert all(later - earlier >= 1.0 for earlier, later in zip(times, times[10:], strict=False))
    assert all(
        later - earlier >= 1.0 for earlier, later in zip(times[10:], times[18:], strict=False)
    )


async def test_a_reload_that_lifts_a_senders_cap_applies_to_its_next_messages() -> None:
    """Without its cap after a reload, a sender's 20 messages go in well under the two seconds
    its old 10/s would take, none deferred."""
    async with pipeline(
        window=10, claim_batch=30, clock=WallClock(), sender_tps={"SMPPD": 10}
    ) as p:
        p.rates.set_tps({})
        await p.queue.enqueue([message(f"more {i}") for i in range(20)], now=p.clock())
        p.loop.wake()
        await p.smsc.records.wait_for(20, timeout=10)
        times = sorted(s.time for s in p.smsc.records.segments)
        assert times[-1] - times[0] < 1.0
        assert p.loop.deferred == 0


class FailOnceQueue(MemoryQueue):
    """A queue whose first claim raises `error`: a full disk, or a fault in the store."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error: Exception | None = error

    async def claim(self, carrier: str, limit: int, *, now: float, min_priority: int = 0) -> Claim:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return await super().claim(carrier, limit, now=now, min_priority=min_priority)


@pytest.mark.parametrize(
    "error", [StorageFullError("database or disk is full"), RuntimeError("a fault in the store")]
)
async def test_a_failed_claim_is_retried(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """A storage error or a fault on claim does not stop the send loop: it retries and sends."""
    monkeypatch.setattr(sendloop, "CLAIM_RETRY_S", 0.01)
    queue = FailOnceQueue(error)
    with structlog.testing.capture_logs() as logs:
        async with pipeline(message("after the error"), queue=queue) as p:
            await p.smsc.records.wait_for(1, timeout=10)
            assert queue.error is None
            assert p.texts() == ["after the error"]
    failed = [e for e in logs if e["event"] == "claiming segments failed; retrying"]
    assert [e["error"] for e in failed] == [
        str(error) if isinstance(error, StorageFullError) else f"RuntimeError: {error}"
    ]


class FaultyUrgentQueue(MemoryQueue):
    """Reading the scheduled urgent segments fails with a fault once `go` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()

    async def urgent_due(self, carrier: str, *, limit: int) -> list[float]:
        await self.go.wait()
        raise RuntimeError("a fault in the store")


async def test_a_fault_in_one_claimer_neither_strands_the_other_s_segments_nor_hangs_stop() -> None:
    """The urgent claimer failing while the main one is mid-batch on a full window must not
    cancel that batch with its unsent segments still claimed: all go out, and stop() ends."""
    queue = FaultyUrgentQueue()
    texts = [f"m {i}" for i in range(10)]
    with structlog.testing.capture_logs() as logs:
        async with pipeline(
            *(message(t) for t in texts), window=1, claim_batch=5, queue=queue, start=False
        ) as p:
            p.smsc.set_faults(latency_s=0.05)
            task = asyncio.create_task(p.loop.run())
            await p.smsc.records.wait_for(1, timeout=5)
            queue.go.set()  # the main loop holds four claimed, unsent segments now
            await p.smsc.records.wait_for(len(texts), timeout=10)
            p.loop.stop()
            await asyncio.wait_for(task, 10)
            assert sorted(p.texts()) == sorted(texts)
            assert p.loop.claimed == 0
    assert any(
        e["event"] == "reading scheduled urgent segments failed"
        and e["error"] == "RuntimeError: a fault in the store"
        for e in logs
    )


async def test_a_subscriber_fault_loses_no_segment() -> None:
    """on_changes raising (a bug in the hub) is logged; the send loop records and sends on."""

    def broken(changes: Sequence[Change]) -> None:
        raise RuntimeError("hub fault")

    with structlog.testing.capture_logs() as logs:
        async with pipeline(message("one"), message("two"), on_changes=broken) as p:
            await p.smsc.records.wait_for(2, timeout=10)
    assert sorted(p.texts()) == ["one", "two"]
    assert any(e["event"] == "publishing state changes failed" for e in logs)


class ManualPort:
    """Binds whose submit results the test hands out one by one."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[SubmitResult]] = []
        self.submitted = asyncio.Event()

    def try_send(self, body: bytes, on_result: Callable[[SubmitResult], None]) -> bool:
        future: asyncio.Future[SubmitResult] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda done: on_result(done.result()))
        self.futures.append(future)
        self.submitted.set()
        return True

    async def wait_ready(self) -> None:
        return None

    def interrupt(self) -> None:
        return None

    async def wait_for(self, count: int) -> None:
        """Until `count` submits have been handed over in all."""
        while len(self.futures) < count:
            self.submitted.clear()
            await self.submitted.wait()


class OneSlotPort(ManualPort):
    """A bind with room for `room` submits, then none until the test gives it more."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self.more = asyncio.Event()
        self.waiting = asyncio.Event()
        self.interrupted = False

    def try_send(self, body: bytes, on_result: Callable[[SubmitResult], None]) -> bool:
        if len(self.futures) >= self.room:
            return False
        return super().try_send(body, on_result)

    async def wait_ready(self) -> None:
        while len(self.futures) >= self.room and not self.interrupted:
            self.waiting.set()
            self.more.clear()
            await self.more.wait()

    def interrupt(self) -> None:
        self.interrupted = True
        self.more.set()

    def give(self, room: int) -> None:
        self.room += room
        self.more.set()


async def test_a_segment_waiting_for_a_bind_is_rated_on_the_senders_rate_of_now() -> None:
    """A reload lowers a sender's cap while its segment waits for a bind: the send counts in
    the new window (counted in the old one, which nothing reads any more, the new cap would
    let another through at once)."""
    clock, monotonic = Clock(), Clock()
    monotonic.now = 0.0
    rates = SenderRates({"SMPPD": 10})
    queue = MemoryQueue()
    await queue.enqueue([message("a"), message("b")], now=clock())
    port = OneSlotPort(room=1)
    loop = CarrierSendLoop(
        "fake",
        queue,
        port,
        claim_batch=5,
        max_unrecorded=10,
        policy=RetryPolicy(),
        clock=clock,
        sender_rates=rates,
        monotonic=monotonic,
    )
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        await port.waiting.wait()  # "a" went; "b" waits for room
        monotonic.now = 5.0
        rates.set_tps({"SMPPD": 1})
        port.give(1)
        await port.wait_for(2)
    assert not rates.windows["SMPPD"].allows(5.0)  # "b" is in the 1/s window
    loop.stop()
    for future in port.futures:
        future.set_result(SubmitResult("a", 0, StatusClass.SUCCESS, bind="b1"))
    await asyncio.wait_for(task, 5)


class DeferralsQueue(MemoryQueue):
    """A queue that notes when each deferred segment is to come back."""

    def __init__(self) -> None:
        super().__init__()
        self.deferred: dict[int, float] = {}
        self.recorded = asyncio.Event()

    async def record(self, outcomes: Sequence[Outcome], *, now: float) -> list[Change]:
        changes = await super().record(outcomes, now=now)
        for outcome in outcomes:
            if isinstance(outcome, Deferred):
                self.deferred[outcome.segment_id] = outcome.next_attempt_at
        self.recorded.set()
        return changes

    async def wait_deferred(self, count: int) -> None:
        while len(self.deferred) < count:
            self.recorded.clear()
            await self.recorded.wait()


def _capped_at_two(queue: MemoryQueue) -> tuple[CarrierSendLoop, ManualPort, asyncio.Task[None]]:
    """A running loop whose sender SMPPD may send 2 a second (monotonic time stands at 0)."""
    monotonic = Clock()
    monotonic.now = 0.0
    port = ManualPort()
    loop = CarrierSendLoop(
        "fake",
        queue,
        port,
        claim_batch=50,
        max_unrecorded=100,
        policy=RetryPolicy(),
        clock=Clock(),
        sender_rates=SenderRates({"SMPPD": 2}),
        monotonic=monotonic,
    )
    return loop, port, asyncio.create_task(loop.run())


async def test_an_urgent_message_of_a_capped_sender_is_not_lined_up_behind_its_bulk() -> None:
    """A sender capped at 2/s with 40 bulk messages: 38 are deferred one behind the other, the
    last 19 s away. Its OTP, deferred too (the window is full), comes back at the sender's next
    free send, not behind them."""
    queue = DeferralsQueue()
    bulk = await queue.enqueue([message(f"bulk {i}", priority=0) for i in range(40)], now=T0)
    loop, port, task = _capped_at_two(queue)
    async with asyncio.timeout(5):
        await queue.wait_deferred(38)
        (otp,) = await queue.enqueue([message("otp", priority=URGENT_PRIORITY)], now=T0)
        loop.wake(urgent_at=T0)
        await queue.wait_deferred(39)
    assert len(port.futures) == 2
    lined_up = sorted(queue.deferred[segment_id(m.message_id, 0)] for m in bulk[2:])
    assert lined_up[-1] >= T0 + 18.5
    otp_back = queue.deferred[segment_id(otp.message_id, 0)]
    assert otp_back <= T0 + 1.1  # when the first of the two sends leaves the window
    await _finish(loop, task, port)


async def test_urgent_messages_deferred_together_come_back_spaced_out() -> None:
    """40 OTPs of a sender capped at 2/s: the 38 deferred are lined up at its rate, on a line
    of their own, not all back at the next free send (to be deferred again, most of them,
    over and over: a store write each)."""
    queue = DeferralsQueue()
    await queue.enqueue([message(f"otp {i}", priority=URGENT_PRIORITY) for i in range(40)], now=T0)
    loop, port, task = _capped_at_two(queue)
    async with asyncio.timeout(5):
        await queue.wait_deferred(38)
    back = sorted(queue.deferred.values())
    assert all(later - earlier >= 0.49 for earlier, later in itertools.pairwise(back))
    await _finish(loop, task, port)


class GatedQueue(MemoryQueue):
    """A queue whose first record call waits for the gate; every call is noted."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.calls: list[list[int]] = []
        self.called = asyncio.Event()

    async def record(self, outcomes: Sequence[Outcome], *, now: float) -> list[Change]:
        self.calls.append([o.segment_id for o in outcomes])
        self.called.set()
        if len(self.calls) == 1:
            await self.gate.wait()
        return await super().record(outcomes, now=now)


async def test_outcomes_reach_the_store_while_an_earlier_record_is_in_flight() -> None:
    """A slow record call does not hold back later outcomes: each tick's go to the store at
    once, so a receipt read after its submit_sm_resp never overtakes the outcome it needs."""
    clock = Clock()
    queue = GatedQueue()
    await queue.enqueue([message("one"), message("two")], now=clock())
    port = ManualPort()
    loop = loop_on(queue, port, clock, claim_batch=2, max_unrecorded=2, idle_poll_s=0.05)
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        await port.wait_for(2)
        first, second = port.futures
        first.set_result(SubmitResult("a", 0, StatusClass.SUCCESS, bind="b1"))
        await queue.called.wait()
        queue.called.clear()
        second.set_result(SubmitResult("b", 0, StatusClass.SUCCESS, bind="b1"))
        await queue.called.wait()  # while the first call still waits at the gate
    assert len(queue.calls) == 2
    queue.gate.set()
    loop.stop()
    await asyncio.wait_for(task, 5)
    assert loop.recorded == 2
    stats = await queue.stats(now=clock())
    assert stats.queued_depth == 0


async def test_with_one_receipt_per_message_a_part_accepted_after_it_takes_it() -> None:
    """On a carrier with `receipts_per: message`, the receipt for the message can be read on
    one bind before another bind's submit_sm_resp for a later part: that part is delivered
    when its resp is recorded, not left waiting for a receipt that will never come."""
    clock = Clock()
    queue = RecordingQueue()
    two_parts = dataclasses.replace(message("x" * 200), registered_delivery=True)
    (enq,) = await queue.enqueue([two_parts], now=clock())
    port = ManualPort()
    loop = loop_on(queue, port, clock, claim_batch=2, max_unrecorded=2, receipts_per_message=True)
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        await port.wait_for(2)
        first, second = port.futures
        first.set_result(SubmitResult("m1", 0, StatusClass.SUCCESS, bind="b1"))
        await queue.recorded.wait()
        queue.recorded.clear()
        receipt = ReceiptIn(
            correlation_keys("m1"), "DELIVRD", "delivered", "000", clock(), whole_message=True
        )
        (matched,) = await queue.apply_receipts("fake", [receipt], now=clock())
        assert matched.outcome is ReceiptOutcome.MATCHED
        second.set_result(SubmitResult("m2", 0, StatusClass.SUCCESS, bind="b2"))
        await queue.recorded.wait()
        loop.stop()
        await task
    status = await queue.status(enq.message_id, None)
    assert status is not None
    assert [s.state for s in status.segments] == [SegmentState.DELIVERED] * 2
    assert status.state is MessageState.DELIVERED


class FullDiskQueue(MemoryQueue):
    """A queue whose record calls fail as a full disk would while `full` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False
        self.failures = 0
        self.failed = asyncio.Event()

    async def record(self, outcomes: Sequence[Outcome], *, now: float) -> list[Change]:
        if self.full:
            self.failures += 1
            self.failed.set()
            raise StorageFullError("queue storage: database or disk is full")
        return await super().record(outcomes, now=now)


async def test_a_record_that_keeps_failing_is_retried_then_left_to_recovery_on_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full disk holds outcomes back, retried with a log line each and no traceback; once
    stopping, the retries end after the grace and the segments stay in flight, so the stop
    finishes and the next start's recovery sends them again."""
    monkeypatch.setattr(sendloop, "RECORD_RETRY_S", (0.01, 0.02))
    monkeypatch.setattr(sendloop, "STOP_RECORD_GRACE_S", 0.1)
    clock = Clock()
    queue = FullDiskQueue()
    await queue.enqueue([message("one"), message("two")], now=clock())
    port = ManualPort()
    loop = loop_on(queue, port, clock, claim_batch=2, max_unrecorded=2)
    task = asyncio.create_task(loop.run())
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(5):
            await port.wait_for(2)
            queue.full = True
            for future, carrier_id in zip(port.futures, "ab", strict=True):
                future.set_result(SubmitResult(carrier_id, 0, StatusClass.SUCCESS, bind="b1"))
            while queue.failures < 3:  # retried while running, not given up on
                queue.failed.clear()
                await queue.failed.wait()
            assert not task.done()
            loop.stop()
            await task
    assert loop.recorded == 0
    assert loop.claimed == 0
    assert loop.unrecorded == 0
    retries = [e for e in logs if e["event"] == "recording outcomes failed; retrying"]
    assert len(retries) >= 3
    assert all(e["log_level"] == "error" and "exc_info" not in e for e in retries)
    assert "disk is full" in retries[0]["error"]
    [given_up] = [e for e in logs if e["event"].startswith("outcomes not recorded before")]
    assert given_up["segments"] == 2
    queue.full = False
    assert await queue.recover(now=clock()) == 2


def loop_on(
    queue: MemoryQueue,
    port: sendloop.SubmitPort,
    clock: Clock,
    *,
    claim_batch: int = 5,
    max_unrecorded: int = 10,
    idle_poll_s: float = 3600.0,
    receipts_per_message: bool = False,
    on_changes: Callable[[Sequence[Change]], None] = lambda changes: None,
) -> CarrierSendLoop:
    """A send loop on `port`, polling an idle queue only once an hour unless told otherwise."""
    return CarrierSendLoop(
        "fake",
        queue,
        port,
        claim_batch=claim_batch,
        max_unrecorded=max_unrecorded,
        policy=RetryPolicy(),
        clock=clock,
        idle_poll_s=idle_poll_s,
        receipts_per_message=receipts_per_message,
        on_changes=on_changes,
    )


async def test_outcome_latency_is_the_time_from_outcome_to_commit() -> None:
    """outcome_latency counts each sent segment once, with the time its outcome waited for the
    store (a slow commit holds the window slot that long)."""
    clock = Clock()
    queue = GatedQueue()
    await queue.enqueue([message("one"), message("two")], now=clock())
    port = ManualPort()
    loop = loop_on(queue, port, clock, claim_batch=2, max_unrecorded=2)
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        await port.wait_for(2)
        for future, carrier_id in zip(port.futures, "ab", strict=True):
            future.set_result(SubmitResult(carrier_id, 0, StatusClass.SUCCESS, bind="b1"))
        await queue.called.wait()  # both outcomes are in the first record call, at the gate
        clock.now += 0.03  # the commit takes 30 ms
        queue.gate.set()
        loop.stop()  # run() returns once every outcome is recorded
        await task
    assert len(queue.calls) == 1
    assert loop.recorded == 2
    histogram = loop.outcome_latency
    assert histogram.count == 2
    assert histogram.total == pytest.approx(0.06)
    assert dict(histogram.cumulative())["0.025"] == 0
    assert dict(histogram.cumulative())["0.05"] == 2


async def test_a_segment_that_expires_while_it_waits_for_room_is_not_sent() -> None:
    """Claimed together behind a window of one, the second message's validity runs out while
    the first is answered: it never reaches the port, and its message ends expired."""
    clock = Clock()
    queue = MemoryQueue()
    await queue.enqueue(
        [message("one", expires_at=T0 + 10), message("two", expires_at=T0 + 10)], now=clock()
    )
    port = ManualPort()
    expired = asyncio.Event()

    def on_changes(changes: Sequence[Change]) -> None:
        if any(c.after is MessageState.EXPIRED for c in changes):
            expired.set()

    # A poll of 0.01 s is what finds it queued again, as for any deferral.
    loop = loop_on(
        queue, port, clock, claim_batch=2, max_unrecorded=1, idle_poll_s=0.01, on_changes=on_changes
    )
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        await port.wait_for(1)
        clock.now = T0 + 11
        port.futures[0].set_result(SubmitResult("a", 0, StatusClass.SUCCESS, bind="b1"))
        await expired.wait()
        loop.stop()
        await task
    assert len(port.futures) == 1
    states = [(await queue.status(i, None)) for i in (1, 2)]
    assert [s.state if s else None for s in states] == [
        MessageState.SUBMITTED,
        MessageState.EXPIRED,
    ]


async def test_a_segment_cancelled_while_it_waits_for_room_is_not_sent() -> None:
    """Three claimed together behind a window of one: the second is cancelled (the store
    moves it, the loop is told) while the first is out, so the third goes next and the second
    never reaches the port; it stays cancelled."""
    clock = Clock()
    queue = MemoryQueue()
    texts = ("one", "two", "three")
    await queue.enqueue([message(t) for t in texts], now=clock())
    port = BodiesPort()
    loop = loop_on(queue, port, clock, claim_batch=3, max_unrecorded=1)
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        await port.wait_for(1)
        cancelled = await queue.cancel(2, None, now=clock())
        assert cancelled is not None
        loop.withdraw([segment_id(2, 0)])
        port.futures[0].set_result(SubmitResult("a", 0, StatusClass.SUCCESS, bind="b1"))
        await port.wait_for(2)
        port.futures[1].set_result(SubmitResult("c", 0, StatusClass.SUCCESS, bind="b1"))
        loop.stop()
        await task
    sent = [decode_body(CommandId.submit_sm, 0, 1, body) for body in port.bodies]
    assert [pdu.short_message for pdu in sent if isinstance(pdu, SubmitSm)] == [b"one", b"three"]
    status = await queue.status(2, None)
    assert status is not None
    assert status.state is MessageState.CANCELLED


async def test_a_part_failed_for_good_keeps_its_siblings_waiting_for_room_unsent() -> None:
    """Three parts claimed together behind a window of one: the first fails for good. The
    store cancels the parts waiting in the queue, but these were held by the loop (inflight)
    and went out after it as fragments no handset can put together."""
    clock = Clock()
    queue = MemoryQueue()
    (enq,) = await queue.enqueue([message("x" * 400)], now=clock())  # three parts
    port = BodiesPort()
    cancelled: list[Change] = []
    both_cancelled = asyncio.Event()

    def on_changes(changes: Sequence[Change]) -> None:
        cancelled.extend(c for c in changes if c.segment_state is SegmentState.CANCELLED)
        if len(cancelled) == 2:
            both_cancelled.set()

    loop = loop_on(queue, port, clock, claim_batch=3, max_unrecorded=1, on_changes=on_changes)
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        await port.wait_for(1)
        port.futures[0].set_result(SubmitResult(None, 0x0B, StatusClass.PERMANENT, bind="b1"))
        await first_of(port.wait_for(2), both_cancelled.wait())
        await stop_accepting(loop, task, port, answered=1)
    assert len(port.futures) == 1
    status = await queue.status(enq.message_id, None)
    assert status is not None
    assert [s.state for s in status.segments] == [
        SegmentState.FAILED,
        SegmentState.CANCELLED,
        SegmentState.CANCELLED,
    ]
    assert status.state is MessageState.FAILED


async def first_of(*waits: Coroutine[Any, Any, object]) -> None:
    """Return once the first of `waits` has; the others are cancelled."""
    tasks = {asyncio.ensure_future(wait) for wait in waits}
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()


async def stop_accepting(
    loop: CarrierSendLoop, task: asyncio.Task[None], port: ManualPort, *, answered: int
) -> None:
    """Stop `loop`, accept what it sent past the first `answered`, and wait for it to end."""
    loop.stop()
    for future in port.futures[answered:]:
        future.set_result(SubmitResult("late", 0, StatusClass.SUCCESS, bind="b1"))
    await task


class ClaimsQueue(MemoryQueue):
    """Counts the claims of each message, and says when a claim took any; keeps every
    outcome recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.claimed = asyncio.Event()
        self._claims: list[int] = []
        self.outcomes: list[Outcome] = []
        self.recorded = asyncio.Event()

    async def record(self, outcomes: Sequence[Outcome], *, now: float) -> list[Change]:
        self.outcomes.extend(outcomes)
        self.recorded.set()
        return await super().record(outcomes, now=now)

    def claims_of(self, message_id: int) -> int:
        return self._claims.count(message_id)

    async def claim(self, carrier: str, limit: int, *, now: float, min_priority: int = 0) -> Claim:
        claim = await super().claim(carrier, limit, now=now, min_priority=min_priority)
        self._claims.extend(s.message_id for s in claim.segments)
        if claim.segments:
            self.claimed.set()
        return claim


class CallbacksPort(ManualPort):
    """Keeps each submit's body and result callback, to give a late answer after the first."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []
        self.callbacks: list[Callable[[SubmitResult], None]] = []

    def try_send(self, body: bytes, on_result: Callable[[SubmitResult], None]) -> bool:
        self.bodies.append(body)
        self.callbacks.append(on_result)
        return super().try_send(body, on_result)


async def test_a_late_acceptance_while_claimed_again_withdraws_the_copy_held_unsent() -> None:
    """X's submit timed out and X was claimed again, waiting for room behind Y, when its first
    copy's ESME_ROK came: the store has it submitted, and the loop does not send the copy it
    holds (the SMSC would have had it twice)."""
    clock = Clock()
    queue = ClaimsQueue()
    x, _ = await queue.enqueue([message("x"), message("y")], now=clock())
    port = CallbacksPort()
    states: list[tuple[int, SegmentState]] = []
    changed = asyncio.Event()

    def on_changes(changes: Sequence[Change]) -> None:
        states.extend((c.message_id, c.segment_state) for c in changes)
        changed.set()

    loop = loop_on(queue, port, clock, claim_batch=2, max_unrecorded=1, on_changes=on_changes)
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        await port.wait_for(1)
        port.futures[0].set_result(SubmitResult.outcome_unknown("b1", answer_due=True))
        await port.wait_for(2)  # Y takes the window; X is queued again, then claimed again
        while not queue.claims_of(x.message_id) >= 2:
            queue.claimed.clear()
            loop.wake()
            await queue.claimed.wait()
        port.callbacks[0](SubmitResult("x1", 0, StatusClass.SUCCESS, bind="b1", late=True))
        while (x.message_id, SegmentState.SUBMITTED) not in states:
            changed.clear()
            await changed.wait()
        port.futures[1].set_result(SubmitResult("y1", 0, StatusClass.SUCCESS, bind="b1"))
        x_segment = segment_id(x.message_id, 0)
        while len(port.bodies) < 3 and not any(
            isinstance(o, Deferred) and o.segment_id == x_segment for o in queue.outcomes
        ):
            queue.recorded.clear()
            port.submitted.clear()
            await first_of(queue.recorded.wait(), port.submitted.wait())
        await stop_accepting(loop, task, port, answered=2)
    assert len(port.bodies) == 2
    status = await queue.status(x.message_id, None)
    assert status is not None
    assert status.segments[0].carrier_message_id == "x1"


class LateSubmitQueue(MemoryQueue):
    """A queue where a submit lands just after the first claim looked, and its wake() comes
    before the claim's (empty) answer is back, as when both share one transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: CarrierSendLoop | None = None
        self.landed = False

    async def claim(self, carrier: str, limit: int, *, now: float, min_priority: int = 0) -> Claim:
        claim = await super().claim(carrier, limit, now=now, min_priority=min_priority)
        if not claim.segments and min_priority == 0 and not self.landed:
            self.landed = True
            await self.enqueue([message("late")], now=now)
            assert self.loop is not None
            self.loop.wake()
        return claim


async def test_a_wake_during_an_empty_claim_is_not_lost() -> None:
    """A submit announced while the claim that missed it is still answering is claimed at
    once, not at the next idle poll (an hour here)."""
    clock = Clock()
    queue = LateSubmitQueue()
    port = ManualPort()
    loop = loop_on(queue, port, clock, max_unrecorded=5)
    queue.loop = loop
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        await port.wait_for(1)
    assert queue.landed
    port.futures[0].set_result(SubmitResult("a", 0, StatusClass.SUCCESS, bind="b1"))
    loop.stop()
    await asyncio.wait_for(task, 5)
    assert loop.recorded == 1


async def test_arrivals_are_taken_only_while_the_loop_waits_for_work() -> None:
    """ready_for_arrival: yes once a claim found nothing due and while nothing is queued or
    unsent; a handed-over segment goes on a bind at once; no after a wake(), and once
    stopping."""
    clock = Clock()
    queue = MemoryQueue()
    port = ManualPort()
    loop = loop_on(queue, port, clock)
    assert not loop.ready_for_arrival()  # not yet looked at the queue
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        await loop.idle.wait()  # the first claim found nothing
        assert loop.ready_for_arrival()
        (enqueued,) = await queue.enqueue([message("now", send_now=True)], now=clock())
        loop.hand_over(enqueued.claimed)
        assert len(port.futures) == 1  # on the wire already, not waiting for a task
        assert loop.ready_for_arrival()  # the next one may follow at once
        loop.wake()
        assert not loop.ready_for_arrival()  # a submit queued work: it goes first
        port.futures[0].set_result(SubmitResult("a", 0, StatusClass.SUCCESS, bind="b1"))
    loop.stop()
    assert not loop.ready_for_arrival()
    await asyncio.wait_for(task, 5)
    assert loop.recorded == 1


async def test_no_arrival_is_taken_while_a_handed_over_one_waits_for_a_bind() -> None:
    """A segment handed over that no bind can take yet blocks further hand-overs: they would
    pass it."""
    clock = Clock()
    queue = MemoryQueue()
    port = StuckOnBulkPort()
    loop = loop_on(queue, port, clock, idle_poll_s=0.25)
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        await loop.idle.wait()
        (enqueued,) = await queue.enqueue([message("bulk", send_now=True)], now=clock())
        loop.hand_over(enqueued.claimed)
        await port.bulk_waiting.wait()
        assert (loop.claimed, loop.unrecorded) == (1, 0)
        assert not loop.ready_for_arrival()
    loop.stop()
    port.ready.set()
    await asyncio.wait_for(task, 5)


class StuckOnBulkPort(ManualPort):
    """Binds that take nothing but urgent text: a bulk send waits for `ready`, as behind a
    slow carrier, and each refused bulk send makes the port busy again."""

    def __init__(self) -> None:
        super().__init__()
        self.bulk_waiting = asyncio.Event()
        self.ready = asyncio.Event()
        self.ready.set()

    def try_send(self, body: bytes, on_result: Callable[[SubmitResult], None]) -> bool:
        if b"otp" in body:
            return super().try_send(body, on_result)
        self.bulk_waiting.set()
        self.ready.clear()
        return False

    async def wait_ready(self) -> None:
        await self.ready.wait()


async def test_an_urgent_submit_is_claimed_while_the_main_loop_is_stuck_sending() -> None:
    """wake(urgent_at=now) claims and sends an urgent message at once, though the main loop is
    blocked handing out a bulk batch it claimed earlier."""
    clock = Clock()
    queue = MemoryQueue()
    await queue.enqueue([message(f"bulk {i}", priority=0) for i in range(3)], now=clock())
    port = StuckOnBulkPort()
    loop = CarrierSendLoop(
        "fake", queue, port, claim_batch=3, max_unrecorded=20, policy=RetryPolicy(), clock=clock
    )
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        await port.bulk_waiting.wait()  # the bulk batch is claimed; its first send waits
        await queue.enqueue([message("otp 1", priority=9)], now=clock())
        loop.wake(urgent_at=clock())
        port.ready.set()  # one free moment: the main loop's bulk retry is refused again
        await port.submitted.wait()
    assert len(port.futures) == 1
    assert (loop.claimed, loop.unrecorded) == (4, 1)  # the bulk batch is claimed, not sent
    loop.stop()
    port.ready.set()
    port.futures[0].set_result(SubmitResult("a", 0, StatusClass.SUCCESS, bind="b1"))
    await asyncio.wait_for(task, 5)
    stats = await queue.stats(now=clock())
    assert stats.segments[SegmentState.SUBMITTED] == {9: 1}
    assert stats.segments[SegmentState.QUEUED] == {0: 3}


class StuckClaimQueue(MemoryQueue):
    """A queue whose claims never return."""

    def __init__(self) -> None:
        super().__init__()
        self.claiming = asyncio.Event()

    async def claim(self, carrier: str, limit: int, *, now: float, min_priority: int = 0) -> Claim:
        self.claiming.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_cancelling_the_loop_mid_claim_ends_it() -> None:
    """A loop cancelled while its claim is pending ends at once and counts nothing as claimed,
    so run() does not wait for outcomes of segments that were never claimed."""
    queue = StuckClaimQueue()
    loop = CarrierSendLoop(
        "fake",
        queue,
        ManualPort(),
        claim_batch=5,
        max_unrecorded=10,
        policy=RetryPolicy(),
        clock=Clock(),
    )
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(queue.claiming.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert (loop.claimed, loop.unrecorded) == (0, 0)


async def test_a_cancelled_loop_ends_without_waiting_for_unanswered_submits() -> None:
    """Cancelled (the daemon's task group failing, say), run() ends at once though a submit it
    sent is unanswered: the segment stays in flight on disk, and recovery queues it again."""
    clock = Clock()
    queue = MemoryQueue()
    await queue.enqueue([message("unanswered")], now=clock())
    port = ManualPort()
    loop = CarrierSendLoop(
        "fake", queue, port, claim_batch=5, max_unrecorded=10, policy=RetryPolicy(), clock=clock
    )
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(port.submitted.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert (loop.claimed, loop.unrecorded) == (1, 1)
    assert (await queue.stats(now=clock())).segments[SegmentState.INFLIGHT] == {5: 1}


class CountingQueue(MemoryQueue):
    """A queue that tells how many claims returned."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0
        self.claimed = asyncio.Event()

    async def claim(self, carrier: str, limit: int, *, now: float, min_priority: int = 0) -> Claim:
        claim = await super().claim(carrier, limit, now=now, min_priority=min_priority)
        self.claims += 1
        self.claimed.set()
        return claim


async def test_the_next_batch_is_claimed_while_one_is_sent_and_handed_back_on_stop() -> None:
    """With the window full, the next batch is already claimed (inflight, not sent, so no
    duplicate after a crash); a stop puts it back in the queue rather than leaving it inflight."""
    clock = Clock()
    queue = CountingQueue()
    await queue.enqueue([message(f"m {i}") for i in range(6)], now=clock())
    port = ManualPort()
    loop = CarrierSendLoop(
        "fake", queue, port, claim_batch=2, max_unrecorded=2, policy=RetryPolicy(), clock=clock
    )
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        while queue.claims < 2:
            queue.claimed.clear()
            await queue.claimed.wait()
        await port.wait_for(2)
    assert (loop.claimed, loop.unrecorded) == (4, 2)
    assert len(port.futures) == 2  # the window is full: the batch claimed ahead waits
    loop.stop()
    for future in port.futures:
        future.set_result(SubmitResult("a", 0, StatusClass.SUCCESS, bind="b1"))
    await asyncio.wait_for(task, 5)
    assert (loop.claimed, loop.unrecorded) == (0, 0)
    stats = await queue.stats(now=clock())
    assert stats.segments == {SegmentState.SUBMITTED: {5: 2}, SegmentState.QUEUED: {5: 4}}


def claimed(attempts: int) -> ClaimedSegment:
    return ClaimedSegment(
        segment_id=256,
        message_id=1,
        index=0,
        total=1,
        body=b"",
        client="a",
        source="S",
        destination="+1",
        priority=5,
        attempts=attempts,
        registered_delivery=False,
    )


def test_outcome_table() -> None:
    """Submit results map to queue outcomes: ok, temporary, permanent, unknown, attempts cap."""
    rng = random.Random(0)
    policy = RetryPolicy(max_attempts=3, initial_s=1.0, max_s=10.0)
    ok = SubmitResult("1A", 0, StatusClass.SUCCESS, bind="0")
    throttled = SubmitResult(None, 0x58, StatusClass.TEMPORARY, throttling=True, pacing=True)
    busy = SubmitResult(None, 0x08, StatusClass.TEMPORARY)
    bad = SubmitResult(None, 0x0B, StatusClass.PERMANENT)
    lost = SubmitResult(None, 0xFF, None, unknown=True)
    outcome = outcome_for(claimed(0), ok, bind="0", policy=policy, now=T0, rng=rng)
    assert isinstance(outcome, Submitted)
    assert outcome.carrier_message_keys == ("s:1a",)  # the id as written: one key
    retry = outcome_for(claimed(1), busy, bind="0", policy=policy, now=T0, rng=rng)
    assert isinstance(retry, Retry)
    assert retry.counts
    assert T0 + 1.0 <= retry.next_attempt_at <= T0 + 2.0
    assert isinstance(
        outcome_for(claimed(2), busy, bind="0", policy=policy, now=T0, rng=rng), Failed
    )
    # Throttling is the bind's rate: retried at the first step however often, no attempt used.
    retry = outcome_for(claimed(2), throttled, bind="0", policy=policy, now=T0, rng=rng)
    assert isinstance(retry, Retry)
    assert not retry.counts
    assert T0 + 0.5 <= retry.next_attempt_at <= T0 + 1.0
    assert isinstance(
        outcome_for(claimed(0), bad, bind="0", policy=policy, now=T0, rng=rng), Failed
    )
    assert isinstance(
        outcome_for(claimed(0), lost, bind="0", policy=policy, now=T0, rng=rng), Unknown
    )
    # A carrier whose submit_statuses read ESME_RTHROTTLED otherwise has it treated so.
    as_permanent = SubmitResult(None, 0x58, StatusClass.PERMANENT)
    assert isinstance(
        outcome_for(claimed(0), as_permanent, bind="0", policy=policy, now=T0, rng=rng), Failed
    )
    as_temporary = SubmitResult(None, 0x58, StatusClass.TEMPORARY)
    retry = outcome_for(claimed(1), as_temporary, bind="0", policy=policy, now=T0, rng=rng)
    assert isinstance(retry, Retry)
    assert retry.counts


def test_an_accepted_segment_awaiting_a_receipt_is_to_be_queried_after_query_after_s() -> None:
    """carriers[].receipt_queries.after_s: an accepted segment that asked for a receipt is
    to be queried then; one that asked for none, or on a carrier that does not query, never."""
    rng = random.Random(0)
    policy = RetryPolicy()
    ok = SubmitResult("1A", 0, StatusClass.SUCCESS, bind="0")
    awaiting = dataclasses.replace(claimed(0), registered_delivery=True)
    queried = outcome_for(
        awaiting, ok, bind="0", policy=policy, now=T0, rng=rng, query_after_s=600.0
    )
    assert isinstance(queried, Submitted)
    assert queried.query_at == T0 + 600.0
    for segment, after in ((claimed(0), 600.0), (awaiting, None)):
        plain = outcome_for(
            segment, ok, bind="0", policy=policy, now=T0, rng=rng, query_after_s=after
        )
        assert isinstance(plain, Submitted)
        assert plain.query_at is None


class UrgentArrivesQueue(MemoryQueue):
    """A queue where an urgent message lands just before the third claim (no urgent wake)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.claims = 0

    async def claim(self, carrier: str, limit: int, *, now: float, min_priority: int = 0) -> Claim:
        self.claims += 1
        if self.claims == 3:
            await self.enqueue([message("otp", priority=9)], now=self.clock())
        return await super().claim(carrier, limit, now=now, min_priority=min_priority)


class BodiesPort(ManualPort):
    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def try_send(self, body: bytes, on_result: Callable[[SubmitResult], None]) -> bool:
        self.bodies.append(body)
        return super().try_send(body, on_result)


async def test_an_urgent_segment_in_a_batch_claimed_ahead_goes_out_at_once() -> None:
    """The main loop's batch claimed ahead may hold an urgent segment: it is sent on the
    reserve at once, not after the bulk batch that waits for room before it."""
    clock = Clock()
    queue = UrgentArrivesQueue(clock)
    await queue.enqueue([message(f"bulk {i}", priority=0) for i in range(20)], now=clock())
    port = BodiesPort()
    loop = CarrierSendLoop(
        "fake", queue, port, claim_batch=5, max_unrecorded=10, policy=RetryPolicy(), clock=clock
    )
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        await port.wait_for(10)  # 9 bulk fill all but the reserve; then the urgent one
    assert b"otp" in port.bodies[9]
    assert all(b"bulk" in body for body in port.bodies[:9])
    loop.stop()
    for future in port.futures:
        future.set_result(SubmitResult("a", 0, StatusClass.SUCCESS, bind="b1"))
    await asyncio.wait_for(task, 5)
    assert (loop.claimed, loop.unrecorded) == (0, 0)


async def _bulk_fills_the_window(
    queue: MemoryQueue, port: ManualPort, clock: Clock, *, policy: RetryPolicy
) -> tuple[CarrierSendLoop, asyncio.Task[None]]:
    """A loop whose bulk traffic holds all of max_unrecorded (10) but the urgent reserve (1),
    unanswered: the main loop waits for room and claims nothing more."""
    await queue.enqueue([message(f"bulk {i}", priority=0) for i in range(12)], now=clock())
    loop = CarrierSendLoop(
        "fake", queue, port, claim_batch=10, max_unrecorded=10, policy=policy, clock=clock
    )
    task = asyncio.create_task(loop.run())
    await port.wait_for(9)
    return loop, task


async def _an_urgent_one_sent_past_bulk(
    queue: MemoryQueue, port: ManualPort, clock: Clock, *, policy: RetryPolicy
) -> tuple[CarrierSendLoop, asyncio.Task[None]]:
    """`_bulk_fills_the_window`, then an urgent message sent on the reserve (the 10th)."""
    loop, task = await _bulk_fills_the_window(queue, port, clock, policy=policy)
    await queue.enqueue([message("otp", priority=9)], now=clock())
    loop.wake(urgent_at=clock())
    await port.wait_for(10)
    return loop, task


async def _finish(loop: CarrierSendLoop, task: asyncio.Task[None], port: ManualPort) -> None:
    loop.stop()
    for future in port.futures:
        if not future.done():
            future.set_result(SubmitResult("x", 0, StatusClass.SUCCESS, bind="b1"))
    await asyncio.wait_for(task, 5)


async def test_an_urgent_retry_goes_out_when_due_while_bulk_holds_the_window() -> None:
    """A throttled urgent submit is retried by the urgent claimer when its retry comes due,
    not after the bulk backlog the main loop is stuck behind."""
    clock = Clock()
    queue = MemoryQueue()
    port = BodiesPort()
    policy = RetryPolicy(initial_s=0.0, max_s=0.0)
    async with asyncio.timeout(5):
        loop, task = await _an_urgent_one_sent_past_bulk(queue, port, clock, policy=policy)
        throttled = SubmitResult(
            None, CommandStatus.ESME_RTHROTTLED, StatusClass.TEMPORARY, throttling=True, pacing=True
        )
        port.futures[9].set_result(throttled)
        await port.wait_for(11)  # the retry, on the reserve again
        assert loop.claimed == 10 + 2 + 1  # the first batch, the one claimed ahead, the otp
        await _finish(loop, task, port)
    stats = await queue.stats(now=clock())
    assert stats.segments[SegmentState.SUBMITTED] == {0: 9, 9: 1}


async def test_after_a_clock_step_back_the_urgent_timers_follow_the_stores_times() -> None:
    """An urgent retry's timer was set in the old clock's time; the clock steps back 10,000 s
    and the store moves the retry back with it: rebased() replaces the timer's time with the
    store's new one (the old one would read as 10,000 s away, taking a timer slot for that
    long), keeping the retry's own delay."""
    clock = Clock()
    queue = RecordingQueue()
    port = BodiesPort()
    policy = RetryPolicy(initial_s=600.0, max_s=600.0)
    async with asyncio.timeout(5):
        loop, task = await _an_urgent_one_sent_past_bulk(queue, port, clock, policy=policy)
        failed = SubmitResult(None, CommandStatus.ESME_RSYSERR, StatusClass.TEMPORARY)
        queue.recorded.clear()
        port.futures[9].set_result(failed)
        await queue.recorded.wait()
        (old,) = await queue.urgent_due("fake", limit=10)
        assert loop._urgent_due == [old]
        step = 10_000.0
        clock.now -= step
        assert await queue.rebase_schedules(step, now=clock(), since=clock()) == 1
        rearming = loop.rebased()
        assert rearming is not None
        await rearming
        assert loop._urgent_due == [old - step]
        await _finish(loop, task, port)


async def test_a_scheduled_urgent_message_goes_out_at_its_time_while_bulk_holds_the_window() -> (
    None
):
    """wake(urgent_at=later) runs the urgent claimer at that time, though the main loop is
    waiting for room behind bulk traffic."""
    clock = Clock()
    queue = MemoryQueue()
    port = BodiesPort()
    async with asyncio.timeout(5):
        loop, task = await _bulk_fills_the_window(queue, port, clock, policy=RetryPolicy())
        at = clock() + 0.05
        await queue.enqueue([message("otp", priority=9, not_before=at)], now=clock())
        loop.wake(urgent_at=at)
        clock.now = at  # the timer fires 0.05 s from now; by then the message is due
        await port.wait_for(10)
        assert b"otp" in port.bodies[9]
        await _finish(loop, task, port)


async def test_an_urgent_message_scheduled_before_a_restart_goes_out_at_its_time() -> None:
    """Scheduled before this loop existed (a restart), with no wake() for it: the loop reads its
    time from the store and runs the urgent claimer then, past the bulk holding the window."""
    clock = Clock()
    queue = MemoryQueue()
    port = BodiesPort()
    at = clock() + 0.05
    await queue.enqueue([message("otp", priority=9, not_before=at)], now=clock())
    async with asyncio.timeout(5):
        loop, task = await _bulk_fills_the_window(queue, port, clock, policy=RetryPolicy())
        clock.now = at  # the timer fires 0.05 s from now; by then the message is due
        await port.wait_for(10)
        assert b"otp" in port.bodies[9]
        await _finish(loop, task, port)


async def test_segments_claimed_on_arrival_go_out_at_once_on_the_reserve() -> None:
    """An urgent message the store claimed as it stored it is sent when handed over, though
    bulk holds all of the window but the reserve; its outcome is recorded like any other."""
    clock = Clock()
    queue = MemoryQueue()
    port = BodiesPort()
    async with asyncio.timeout(5):
        loop, task = await _bulk_fills_the_window(queue, port, clock, policy=RetryPolicy())
        assert loop.ready_for_urgent()
        [enq] = await queue.enqueue([message("otp", priority=9, send_now=True)], now=clock())
        loop.hand_over(enq.claimed)
        await port.wait_for(10)
        assert b"otp" in port.bodies[9]
        assert not loop.ready_for_urgent()  # the reserve is taken
        await _finish(loop, task, port)
    status = await queue.status(enq.message_id, None)
    assert status is not None
    assert [s.state for s in status.segments] == [SegmentState.SUBMITTED]


async def test_segments_handed_to_a_stopping_loop_go_back_to_the_queue() -> None:
    """Handed over as the loop stops, they are not sent: they are queued again (no attempt
    counted), and run() returns once that is recorded."""
    clock = Clock()
    queue = MemoryQueue()
    port = BodiesPort()
    loop = CarrierSendLoop(
        "fake", queue, port, claim_batch=5, max_unrecorded=10, policy=RetryPolicy(), clock=clock
    )
    task = asyncio.create_task(loop.run())
    [enq] = await queue.enqueue([message("otp", priority=9, send_now=True)], now=clock())
    loop.stop()
    assert not loop.ready_for_urgent()
    loop.hand_over(enq.claimed)
    await asyncio.wait_for(task, 5)
    assert port.bodies == []
    assert (loop.claimed, loop.unrecorded) == (0, 0)
    status = await queue.status(enq.message_id, None)
    assert status is not None
    assert [(s.state, s.attempts) for s in status.segments] == [(SegmentState.QUEUED, 0)]


class RecordingQueue(CountingQueue):
    """A CountingQueue that also signals every committed record call."""

    def __init__(self) -> None:
        super().__init__()
        self.recorded = asyncio.Event()

    async def record(self, outcomes: Sequence[Outcome], *, now: float) -> list[Change]:
        changes = await super().record(outcomes, now=now)
        self.recorded.set()
        return changes


async def test_hand_back_returns_claimed_unsent_segments_and_claims_no_more() -> None:
    """With the window full, hand_back() puts the batch being sent and the one claimed ahead
    back in the queue (unsent, no attempt counted), and nothing more is claimed until the
    binds have room; then everything goes out as usual."""
    queue = RecordingQueue()
    msgs = [message(f"m {i}") for i in range(8)]
    async with pipeline(*msgs, window=2, claim_batch=2, queue=queue, start=False) as p:
        p.smsc.set_faults(latency_s=1.0)
        task = asyncio.create_task(p.loop.run())
        async with asyncio.timeout(5):
            while queue.claims < 3:  # 2 sent, the next 2 waiting for room, 2 claimed ahead
                queue.claimed.clear()
                await queue.claimed.wait()
            await p.smsc.records.wait_for(2, timeout=5, segments=True)
            assert (p.loop.claimed, p.loop.unrecorded) == (6, 2)
            p.loop.hand_back()
            while p.loop.claimed > 2:
                queue.recorded.clear()
                await queue.recorded.wait()
        stats = await queue.stats(now=p.clock())
        assert stats.segments == {SegmentState.INFLIGHT: {5: 2}, SegmentState.QUEUED: {5: 6}}
        assert queue.claims == 3
        handed_back = await queue.status(3, None)  # of the batch that was waiting for room
        assert handed_back is not None
        assert handed_back.state is MessageState.QUEUED
        assert handed_back.segments[0].attempts == 0
        p.smsc.set_faults(latency_s=0.0)
        await p.smsc.records.wait_for(8, timeout=10)
        assert sorted(p.texts()) == sorted(f"m {i}" for i in range(8))
        assert len(p.smsc.records.segments) == 8
        p.loop.stop()
        await asyncio.wait_for(task, 10)


class DownPort(ManualPort):
    """Binds that are all down: nothing is taken, and wait_ready returns only on interrupt()."""

    def __init__(self) -> None:
        super().__init__()
        self._interrupted = asyncio.Event()
        self.waiting = 0
        self.entered = asyncio.Event()

    def try_send(self, body: bytes, on_result: Callable[[SubmitResult], None]) -> bool:
        return False

    async def wait_ready(self) -> None:
        self._interrupted.clear()
        self.waiting += 1
        self.entered.set()
        try:
            await self._interrupted.wait()
        finally:
            self.waiting -= 1

    def interrupt(self) -> None:
        self._interrupted.set()

    async def wait_for_waiters(self, count: int) -> None:
        while self.waiting < count:
            self.entered.clear()
            await self.entered.wait()


async def test_a_hand_back_while_the_binds_are_down_claims_nothing_new() -> None:
    """With every bind down, hand_back() returns an urgent segment handed over on arrival; the
    wake-up it gives the waiting claimers does not make them claim the queued bulk."""
    clock = Clock()
    queue = RecordingQueue()
    await queue.enqueue([message(f"bulk {i}", priority=0) for i in range(3)], now=clock())
    port = DownPort()
    loop = CarrierSendLoop(
        "fake", queue, port, claim_batch=5, max_unrecorded=10, policy=RetryPolicy(), clock=clock
    )
    task = asyncio.create_task(loop.run())
    (otp,) = await queue.enqueue([message("otp", priority=9, send_now=True)], now=clock())
    loop.hand_over(otp.claimed)
    assert loop.claimed == 1
    async with asyncio.timeout(5):
        await port.wait_for_waiters(2)  # the main loop's claim, and the hand-over's send
        loop.hand_back()
        while loop.claimed:
            queue.recorded.clear()
            await queue.recorded.wait()
    assert queue.claims == 0
    stats = await queue.stats(now=clock())
    assert stats.segments == {SegmentState.QUEUED: {0: 3, 9: 1}}
    loop.stop()
    port.interrupt()  # as closing binds end every wait
    await asyncio.wait_for(task, 5)


class StepsBackAfterARead(Clock):
    """Set `step_after` to step the clock back that far just after its next reading."""

    step_after: float | None = None

    def __call__(self) -> float:
        now = self.now
        if self.step_after is not None:
            self.now -= self.step_after
            self.step_after = None
        return now


async def test_outcomes_are_recorded_as_of_the_reading_their_times_come_from() -> None:
    """The clock steps back 10,000 s right after a failed submit's retry time is read off it,
    before the outcome reaches the store: the retry is written as the old clock's, so the
    step's rebase moves it back with the rest and it goes out after its own delay, not
    10,000 s late."""
    clock = StepsBackAfterARead()
    queue = RecordingQueue()
    await queue.enqueue([message("one")], now=clock())
    port = ManualPort()
    policy = RetryPolicy(initial_s=300.0, max_s=600.0)  # 300..600 s
    loop = CarrierSendLoop(
        "fake", queue, port, claim_batch=1, max_unrecorded=1, policy=policy, clock=clock
    )
    task = asyncio.create_task(loop.run())
    step = 10_000.0
    async with asyncio.timeout(5):
        await port.wait_for(1)
        clock.step_after = step
        queue.recorded.clear()
        failed = SubmitResult(None, CommandStatus.ESME_RSYSERR, StatusClass.TEMPORARY)
        port.futures[0].set_result(failed)
        await queue.recorded.wait()
        assert clock.now == T0 - step  # stepped after the outcome's reading
        assert await queue.rebase_schedules(step, now=clock(), since=clock()) == 1
        clock.now = T0 - step + 600.0
        loop.wake()
        await port.wait_for(2)
        await _finish(loop, task, port)


async def test_settle_outcomes_returns_once_the_outcomes_made_are_recorded() -> None:
    """What a clock step waits for before it moves the store's times: the outcome whose
    record call is held at the gate, committed."""
    clock = Clock()
    queue = GatedQueue()
    await queue.enqueue([message("one")], now=clock())
    port = ManualPort()
    loop = loop_on(queue, port, clock, claim_batch=1, max_unrecorded=1)
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        await port.wait_for(1)
        port.futures[0].set_result(SubmitResult("a", 0, StatusClass.SUCCESS, bind="b1"))
        await queue.called.wait()
        settling = asyncio.create_task(loop.settle_outcomes())
        done, _ = await asyncio.wait({settling}, timeout=0.05)
        assert not done
        assert loop.recorded == 0
        queue.gate.set()
        await settling
        assert loop.recorded == 1
        stats = await queue.stats(now=clock())
        assert stats.segments[SegmentState.SUBMITTED] == {5: 1}
        await loop.settle_outcomes()  # nothing left to wait for
        loop.stop()
        await task


class TokenPort(BodiesPort):
    """Binds under a rate cap: each send takes a token the test grants; a grant wakes every
    waiter in the order they began to wait (as CarrierBinds does)."""

    def __init__(self, tokens: int) -> None:
        super().__init__()
        self.tokens = tokens
        self.waiters: list[asyncio.Future[None]] = []
        self.waiting = asyncio.Event()

    def try_send(self, body: bytes, on_result: Callable[[SubmitResult], None]) -> bool:
        if not self.tokens:
            return False
        self.tokens -= 1
        return super().try_send(body, on_result)

    async def wait_ready(self) -> None:
        if self.tokens:
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        self.waiting.set()
        await waiter

    def grant(self) -> None:
        self.tokens += 1
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.set_result(None)

    async def wait_for_waiters(self, count: int) -> None:
        while len(self.waiters) < count:
            self.waiting.clear()
            await self.waiting.wait()


async def test_an_urgent_send_takes_the_next_rate_token_before_bulk_that_waited_first() -> None:
    """A carrier's rate, not its window, holds bulk back: the bulk send waiting for a token
    was woken first at every grant and took it, so an OTP went out after the whole batch.
    Bulk now gives way while an urgent send waits for a bind."""
    clock = Clock()
    queue = MemoryQueue()
    await queue.enqueue([message(f"bulk {i}", priority=0) for i in range(5)], now=clock())
    port = TokenPort(tokens=1)
    loop = loop_on(queue, port, clock, claim_batch=5, max_unrecorded=20)
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        await port.wait_for(1)  # bulk 0 took the token; bulk 1 waits for the next
        await port.wait_for_waiters(1)
        await queue.enqueue([message("otp", priority=9)], now=clock())
        loop.wake(urgent_at=clock())
        await port.wait_for_waiters(2)  # the urgent claimer waits behind it
        port.grant()
        await port.wait_for(2)
        port.grant()
        await port.wait_for(3)
    assert [b"otp" in body for body in port.bodies] == [False, True, False]
    assert b"bulk 1" in port.bodies[2]
    loop.stop()
    port.grant()  # the bulk send waiting for a token sees the stop
    await _finish(loop, task, port)


class OutagePort(ManualPort):
    """Binds that take everything while `up`; down, wait_ready waits for interrupt()."""

    def __init__(self) -> None:
        super().__init__()
        self.up = True
        self.waiters: list[asyncio.Future[None]] = []

    def try_send(self, body: bytes, on_result: Callable[[SubmitResult], None]) -> bool:
        return self.up and super().try_send(body, on_result)

    async def wait_ready(self) -> None:
        if not self.up:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            await waiter

    def interrupt(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


async def test_a_hand_back_during_an_outage_returns_bulk_that_gave_way_to_an_urgent_claim() -> None:
    """The binds go down with an urgent submit waiting to be claimed: bulk woken as room
    freed gives way to it, and waits for it; hand_back() (a failover) must still put that
    bulk back in the queue, or it reads as inflight, unmovable, for the whole outage."""
    clock = Clock()
    queue = RecordingQueue()
    await queue.enqueue([message(f"bulk {i}", priority=0) for i in range(25)], now=clock())
    port = OutagePort()
    loop = loop_on(queue, port, clock, claim_batch=10, max_unrecorded=10)
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(5):
        await port.wait_for(9)  # all but the urgent reserve
        port.up = False
        await queue.enqueue([message("otp", priority=9)], now=clock())
        loop.wake(urgent_at=clock())
        for future in port.futures:  # the connection went: unknown, recorded, room frees
            future.set_result(SubmitResult.outcome_unknown("b1", answer_due=False))
        while loop.unrecorded:
            queue.recorded.clear()
            await queue.recorded.wait()
        for _ in range(20):  # let the woken bulk send reach its wait (no time passes)
            await asyncio.sleep(0)
        loop.hand_back()
        while loop.claimed:
            queue.recorded.clear()
            await queue.recorded.wait()
    stats = await queue.stats(now=clock())
    assert SegmentState.INFLIGHT not in stats.segments
    loop.stop()
    await asyncio.wait_for(task, 5)
