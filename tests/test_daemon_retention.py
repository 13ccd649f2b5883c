"""The daemon's retention pass: overdue receipts are given up on, then finished messages purged."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest
from queue_support import CARRIER, T0, message

from smppd import daemon as daemon_module
from smppd.config import load_config
from smppd.daemon import Daemon
from smppd.pdu.receipt import correlation_keys
from smppd.queue import MemoryQueue, MessageState, Submitted
from smppd.senderpolicy import DAY_S, DailyCap, DailyCaps, day_of

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "smppd.yaml"


async def test_retention_gives_up_on_overdue_receipts_and_counts_them() -> None:
    config = load_config(SHIPPED)
    queue = MemoryQueue()
    daemon = Daemon(config, SHIPPED, queue)
    (enq,) = await queue.enqueue([message()], now=T0)
    (seg,) = await queue.claim(CARRIER, 1, now=T0)
    await queue.record([Submitted(seg.segment_id, correlation_keys("9"), "b")], now=T0)
    wait, keep = config.queue.receipt_wait_s, config.queue.retention_s

    await daemon._retention(T0 + wait - 1)
    assert daemon._extra_counters()["receipts_overdue"] == 0
    await daemon._retention(T0 + wait + 1)
    assert daemon._extra_counters()["receipts_overdue"] == 1
    status = await queue.status(enq.message_id, None)
    assert status is not None
    assert status.state is MessageState.SUBMITTED
    await daemon._retention(T0 + wait + 2 + keep)
    assert await queue.status(enq.message_id, None) is None


async def test_a_retention_shorter_than_the_day_keeps_the_days_messages_of_capped_senders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restart rebuilds the daily caps from today's messages: a retention of minutes that
    purged them would let a capped sender send its whole cap again. They stay until the UTC
    day is over, and go at the first pass after it."""
    config = load_config(SHIPPED)
    config = dataclasses.replace(config, queue=dataclasses.replace(config.queue, retention_s=60.0))
    noon = day_of(time.time()) * 86_400 + 43_200.0
    monkeypatch.setattr(time, "time", lambda: noon + 3_600)
    queue = MemoryQueue()
    daemon = Daemon(config, SHIPPED, queue)
    daemon.caps = DailyCaps({"ACME": DailyCap(10, hold=False)})
    sent = await queue.enqueue([message(source="ACME") for _ in range(3)], now=noon)
    for enq in sent:
        assert await queue.cancel(enq.message_id, None, now=noon) is not None
    await daemon._retention(noon + 3_600)
    restarted = DailyCaps({"ACME": DailyCap(10, hold=False)})
    await daemon._load_caps(restarted)
    assert restarted.count("ACME", day_of(noon)) == 3
    await daemon._retention(noon + 43_200 + 1)  # the next day
    assert await queue.status(sent[0].message_id, None) is None


class SlowPurgeQueue(MemoryQueue):
    """A queue whose purge waits for `release`, as one of millions of rows takes a while."""

    def __init__(self) -> None:
        super().__init__()
        self.purging = asyncio.Event()
        self.release = asyncio.Event()

    async def purge(self, before: float) -> int:
        self.purging.set()
        await self.release.wait()
        return await super().purge(before)


async def test_housekeeping_and_the_watchdog_go_on_while_a_purge_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Retention runs beside housekeeping, not inside it: a purge that takes long does not
    hold back the watchdog's pings, which systemd would otherwise take for a hung daemon."""
    monkeypatch.setattr(daemon_module, "HOUSEKEEPING_S", 0.01)
    queue = SlowPurgeQueue()
    daemon = Daemon(load_config(SHIPPED), SHIPPED, queue)
    pings = 0
    pinged = asyncio.Event()

    def watchdog() -> None:
        nonlocal pings
        pings += 1
        pinged.set()

    monkeypatch.setattr(daemon.notifier, "watchdog", watchdog)
    async with asyncio.timeout(5), asyncio.TaskGroup() as group:
        retention = group.create_task(daemon._retention_loop())
        await queue.purging.wait()
        housekeeping = group.create_task(daemon._housekeeping())
        while pings < 3:
            pinged.clear()
            await pinged.wait()
        assert not retention.done()
        queue.release.set()
        housekeeping.cancel()
        retention.cancel()


class SlowRecoverQueue(MemoryQueue):
    """A store whose read-back of what the last run left in flight takes until released."""

    def __init__(self) -> None:
        super().__init__()
        self.recovering = asyncio.Event()
        self.release = asyncio.Event()

    async def recover(self, *, now: float) -> int:
        self.recovering.set()
        await self.release.wait()
        return await super().recover(now=now)


async def test_reading_back_the_last_run_asks_for_more_start_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scans before READY (daily counts, segments left in flight) take as long as the open
    on a large store: systemd is asked for more start time while they run, as for the open."""
    queue = SlowRecoverQueue()
    daemon = Daemon(load_config(SHIPPED), SHIPPED, queue)
    asked: list[float] = []
    monkeypatch.setattr(daemon.notifier, "extend_timeout", asked.append)
    async with asyncio.timeout(5):
        running = asyncio.create_task(daemon.run())
        await queue.recovering.wait()
        assert asked == [daemon_module.OPEN_EXTEND_S]
        daemon._stop.set()  # a SIGTERM meanwhile: it stops before serving
        queue.release.set()
        assert await running == 0


async def test_the_expiry_sweep_starts_over_when_the_wall_clock_steps_back() -> None:
    """The sweep that expires waiting messages (their carrier down) goes on from where it got
    to; after an hour's step back, a message whose validity ends before that point with the
    old clock is expired still, not left queued for the outage."""
    queue = MemoryQueue()
    daemon = Daemon(load_config(SHIPPED), SHIPPED, queue)
    (first,) = await queue.enqueue([dataclasses.replace(message(), expires_at=T0 + 60)], now=T0)
    await daemon._expire_waiting(T0 + 61)
    assert await state(queue, first.message_id) is MessageState.EXPIRED
    now = T0 + 62 - 3600  # the clock stepped back an hour
    await daemon._clock_stepped_back(3600, T0 + 62, now=now)
    (second,) = await queue.enqueue([dataclasses.replace(message(), expires_at=now + 60)], now=now)
    await daemon._expire_waiting(now + 61)
    assert await state(queue, second.message_id) is MessageState.EXPIRED


async def state(queue: MemoryQueue, message_id: int) -> MessageState:
    status = await queue.status(message_id, None)
    assert status is not None
    return status.state


async def test_a_long_numbers_daily_count_takes_its_bare_digit_messages_too() -> None:
    """Messages stored before long-number senders were kept as "+digits" (schema 15 moved
    only the unfinished ones) count towards that sender's cap with the rest, at start."""
    queue = MemoryQueue()
    daemon = Daemon(load_config(SHIPPED), SHIPPED, queue)
    now = time.time()
    await queue.enqueue([message(source="447700900999") for _ in range(3)], now=now)
    await queue.enqueue([message(source="+447700900999") for _ in range(2)], now=now)
    caps = DailyCaps({"+447700900999": DailyCap(10, hold=False)})
    await daemon._load_caps(caps)
    assert caps.count("+447700900999", day_of(now)) == 5


async def test_a_restart_counts_every_day_messages_are_scheduled_for() -> None:
    """The counts were rebuilt for the next 7 days only, while a message may be scheduled up to
    366 ahead: a sender at its cap for a day 10 days out had it whole again after a restart.
    One scheduled in the past counted on its schedule's day, not today's as at acceptance."""
    queue = MemoryQueue()
    daemon = Daemon(load_config(SHIPPED), SHIPPED, queue)
    now = time.time()
    await queue.enqueue([message(source="ACME", not_before=now + 10 * DAY_S)], now=now)
    await queue.enqueue([message(source="ACME", not_before=now + 200 * DAY_S)], now=now)
    await queue.enqueue([message(source="ACME", not_before=now - 2 * DAY_S)], now=now)
    caps = DailyCaps({"ACME": DailyCap(1, hold=False)})
    await daemon._load_caps(caps)
    today = day_of(now)
    assert [caps.count("ACME", today + n) for n in (0, 10, 200, -2)] == [1, 1, 1, 0]
