"""Reloads of a running daemon (its carrier at a closed port): what is applied, what is reported."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from queue_support import message

from smppd import daemon as daemon_module
from smppd.config import Config, load_config
from smppd.daemon import Daemon
from smppd.pdu.receipt import correlation_keys
from smppd.queue import Deferred, MemoryQueue, NewMessage, Submitted
from smppd.queue.errors import QueueError
from smppd.service import ClientIdentity, SubmitReply, SubmitRequest

CONFIG = """\
queue:
  path: {tmp}/q.db
  receipt_wait_s: {wait}
  retry_max_s: {retry_max}
api:
  socket: {tmp}/s.sock
  max_connections: {max_connections}
  clients:
    - name: demo
      any_uid: true
logging:
  level: {level}
  format: json
carriers:
{carriers}
routes:
  - prefix: ""
    carriers: [{route}]
senders:
  - id: ACME
    client: demo
{cap}
"""
# Every carrier at a closed port: never bound.
CARRIER = (
    "  - {{name: {name}, host: 127.0.0.1, port: 9, system_id: smppd, password: secret,"
    " reconnect: {{initial_s: 30, max_s: 60}}, receipt_queries: {{after_s: 60}}}}\n"
)


def write(
    path: Path,
    *,
    carriers: tuple[str, ...] = ("fake",),
    route: str = "fake",
    max_connections: int = 256,
    level: str = "info",
    cap: str = "",
    wait: int = 259200,
    retry_max: int = 300,
) -> None:
    path.write_text(
        CONFIG.format(
            tmp=path.parent,
            carriers="".join(CARRIER.format(name=name) for name in carriers),
            route=route,
            max_connections=max_connections,
            level=level,
            cap=cap,
            wait=wait,
            retry_max=retry_max,
        )
    )


class FlakyQueue(MemoryQueue):
    """A queue whose counts by sender fail while `fail` is set (a store that cannot answer)."""

    fail = False

    async def segments_by_day(self, start: float) -> dict[int, dict[str, int]]:
        if self.fail:
            raise QueueError("database is locked")
        return await super().segments_by_day(start)


@asynccontextmanager
async def running(
    path: Path, queue: MemoryQueue, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Daemon, asyncio.Task[int]]]:
    daemon = Daemon(load_config(path), path, queue)
    ready = asyncio.Event()
    monkeypatch.setattr(daemon.notifier, "ready", lambda status: ready.set())
    task = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        assert daemon.serving
        yield daemon, task
    finally:
        daemon._stop.set()
        async with asyncio.timeout(20):
            await task


def reported(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """What each reload reports as needing a restart."""
    seen: list[list[str]] = []
    real = daemon_module.needs_restart

    def spy(old: Config, new: Config) -> list[str]:
        seen.append(real(old, new))
        return seen[-1]

    monkeypatch.setattr(daemon_module, "needs_restart", spy)
    return seen


def caps_of(daemon: Daemon) -> tuple[int | None, bool]:
    """The configured cap of the one sender, and whether the daemon counts any."""
    return daemon.config.senders[0].daily_cap, bool(daemon.caps.senders)


async def test_a_change_that_needs_a_restart_is_reported_until_the_file_matches_what_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "smppd.yaml"
    write(path)
    restart = reported(monkeypatch)
    async with running(path, MemoryQueue(), monkeypatch) as (daemon, _):
        write(path, max_connections=7)
        await daemon._reload_config()
        write(path, max_connections=7, level="debug")  # another change: 7 is still not in force
        await daemon._reload_config()
        write(path, max_connections=256, level="debug")  # back to what runs: nothing to do
        await daemon._reload_config()
        assert daemon._api is not None
        assert daemon._api.settings.max_connections == 256
        assert daemon.config.api.max_connections == 256
        assert daemon.config.logging.level == "debug"
    assert restart == [["api.max_connections"], ["api.max_connections"], []]


async def test_a_reload_whose_caps_cannot_be_counted_is_refused_and_the_daemon_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "smppd.yaml"
    write(path)
    queue = FlakyQueue()
    async with running(path, queue, monkeypatch) as (daemon, task):
        queue.fail = True
        write(path, cap="    daily_cap: 100", level="debug")
        await daemon._reload_config()
        assert not task.done()
        # Nothing of it applied (read through a function: mypy would keep the narrowing).
        assert caps_of(daemon) == (None, False)
        assert daemon.config.logging.level == "info"
        queue.fail = False
        await daemon._reload_config()
        assert caps_of(daemon) == (100, True)


class BringForwardSpy(MemoryQueue):
    """Notes each bring_forward and how many segments it moved."""

    def __init__(self) -> None:
        super().__init__()
        self.brought: list[tuple[str, int]] = []

    async def bring_forward(self, source: str, *, now: float) -> int:
        moved = await super().bring_forward(source, now=now)
        self.brought.append((source, moved))
        return moved


async def test_a_reload_that_raises_a_senders_rate_brings_its_deferred_work_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ACME's deferred work was lined up at 1/s: raised to 100/s, it is due now (it would
    drain at the old rate for as long as it took to line up); lowered, it is left as is."""
    path = tmp_path / "smppd.yaml"
    write(path, cap="    tps: 1")
    queue = BringForwardSpy()
    now = time.time()
    await queue.enqueue(
        [NewMessage("demo", None, "ACME", "+447700900123", "fake", 0, None, None, True, (b"x",))],
        now=now,
    )
    (claimed,) = await queue.claim("fake", 1, now=now)
    await queue.record([Deferred(claimed.segment_id, now + 3600)], now=now)
    async with running(path, queue, monkeypatch) as (daemon, _):
        write(path, cap="    tps: 0.5")
        await daemon._reload_config()
        assert queue.brought == []
        write(path, cap="    tps: 100")
        await daemon._reload_config()
        assert queue.brought == [("ACME", 1)]
        (due,) = await queue.claim("fake", 1, now=time.time())
        assert due.segment_id == claimed.segment_id


async def test_a_reload_gives_the_receipt_queries_the_new_receipt_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "smppd.yaml"
    write(path, wait=259200)
    async with running(path, MemoryQueue(), monkeypatch) as (daemon, _):
        queries = daemon.carriers["fake"].queries
        assert queries is not None
        assert queries.wait_s == 259200
        write(path, wait=3600)
        await daemon._reload_config()
        assert daemon.carriers["fake"].queries is queries  # not restarted for it
        assert queries.wait_s == 3600


def hold_stops(daemon: Daemon, names: list[str]) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the named carriers' stops wait for `release` (a drain of slow answers); `begun` is
    set once all of them have begun."""
    waiting: set[str] = set()
    begun, release = asyncio.Event(), asyncio.Event()
    for name in names:
        runtime = daemon.carriers[name]
        real = runtime.stop

        async def stop(name: str = name, real: Any = real) -> None:
            waiting.add(name)
            if waiting == set(names):
                begun.set()
            await release.wait()
            await real()

        runtime.stop = stop  # type: ignore[method-assign]
    return begun, release


async def test_a_reload_routes_new_submits_by_the_new_routes_while_carriers_drain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload removing carrier a and routing to b: a submit while a drains its answers
    goes to b (by the old routes it was queued for a, which was then removed: never sent)."""
    path = tmp_path / "smppd.yaml"
    write(path, carriers=("a", "b"), route="a")
    queue = MemoryQueue()
    async with running(path, queue, monkeypatch) as (daemon, _):
        begun, release = hold_stops(daemon, ["a"])
        write(path, carriers=("b",), route="b")
        reload = asyncio.create_task(daemon._reload_config())
        await asyncio.wait_for(begun.wait(), 5)
        demo = ClientIdentity(name="demo", senders=frozenset({"ACME"}))
        (reply,) = await daemon.gateway.submit(
            demo, [SubmitRequest(to="+447700900123", sender="ACME", text="hi")]
        )
        release.set()
        await asyncio.wait_for(reload, 10)
        assert isinstance(reply, SubmitReply)
        status = await queue.status(reply.id, None)
        assert status is not None
        assert status.carrier == "b"
        assert set(daemon.carriers) == {"b"}


async def test_a_reload_stops_the_carriers_it_restarts_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One after another, each carrier would be out for the sum of all their drains."""
    path = tmp_path / "smppd.yaml"
    write(path, carriers=("a", "b"), route="a, b")
    async with running(path, MemoryQueue(), monkeypatch) as (daemon, _):
        begun, release = hold_stops(daemon, ["a", "b"])
        write(path, carriers=("a", "b"), route="a, b", retry_max=600)  # restarts every send loop
        reload = asyncio.create_task(daemon._reload_config())
        await asyncio.wait_for(begun.wait(), 5)  # both, neither released: together
        assert not reload.done()
        release.set()
        await asyncio.wait_for(reload, 10)


async def test_a_carrier_down_when_a_reload_restarts_it_stays_down_since_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its outage goes on: a fresh one would have routes send to it again, and hold off
    failing its work over, for another failover_after_s."""
    path = tmp_path / "smppd.yaml"
    write(path, carriers=("a", "b"), route="a, b")
    async with running(path, MemoryQueue(), monkeypatch) as (daemon, _):
        before = daemon.carriers["a"]
        before.down_since = 1000.0
        write(path, carriers=("a", "b"), route="a, b", retry_max=600)
        await daemon._reload_config()
        assert daemon.carriers["a"] is not before
        assert daemon.carriers["a"].down_since == 1000.0


async def test_no_failover_sweep_runs_while_a_reload_changes_the_carriers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep by the old routes could move work to a carrier the reload then removes, and
    find its target gone (KeyError): it waits for the next tick."""
    path = tmp_path / "smppd.yaml"
    write(path, carriers=("a", "b"), route="a, b")
    queue = MemoryQueue()
    async with running(path, queue, monkeypatch) as (daemon, _):
        daemon.carriers["a"].down_since = -1e9  # down past any failover_after_s
        swept: list[str] = []

        async def reroute(carrier: str, *args: Any, **kwargs: Any) -> Any:
            swept.append(carrier)
            return {}, None

        monkeypatch.setattr(queue, "reroute", reroute)
        daemon.carriers["b"].down_since = None  # up: a target (no tick runs between)
        async with daemon._reconfiguring:
            await daemon._fail_over(0.0, time.monotonic())
        assert swept == []
        await daemon._fail_over(0.0, time.monotonic())
        assert swept == ["a"]


async def test_a_carrier_a_reload_removes_leaves_only_its_daemon_wide_counts_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replacing a carrier (a new name: a new account or endpoint) keeps the daemon-wide counts
    it added, so smppd_optouts_total does not go back, and lets go of the rest: its recent MO's
    fingerprints (up to 100,000 for a busy carrier) were held for the life of the process."""
    path = tmp_path / "smppd.yaml"
    write(path, carriers=("old",), route="old")
    async with running(path, MemoryQueue(), monkeypatch) as (daemon, _):
        totals = daemon._totals["old"]
        totals.inbound.optouts += 2  # as its InboundHandler counts them
        assert totals.redeliveries is not None
        fingerprints = weakref.ref(totals.redeliveries)
        del totals
        settle = daemon._settle_receipts
        next_housekeeping = asyncio.get_running_loop().create_future()

        async def spy(now: float) -> None:
            await settle(now)
            if not next_housekeeping.done() and "old" not in daemon.carriers:
                next_housekeeping.set_result(None)

        monkeypatch.setattr(daemon, "_settle_receipts", spy)
        registry = daemon.metrics_registry()
        assert registry.get_sample_value("smppd_optouts_total") == 2
        write(path, carriers=("new",), route="new")
        await daemon._reload_config()
        assert sorted(daemon.carriers) == ["new"]
        async with asyncio.timeout(5):
            await next_housekeeping  # whose loop variable holds a runtime until its next pass
        gc.collect()
        assert fingerprints() is None
        assert registry.get_sample_value("smppd_optouts_total") == 2
        daemon._totals["new"].inbound.optouts += 1
        assert registry.get_sample_value("smppd_optouts_total") == 3
        write(path, carriers=("old", "new"), route="new")  # back: its own counts start again
        await daemon._reload_config()
        assert registry.get_sample_value("smppd_optouts_total") == 3


async def test_work_queued_for_a_carrier_a_reload_makes_receiver_only_is_reported_unrouted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver-only carrier gets no send loop and takes no failover: the work queued for it
    before the reload is as stranded as a removed carrier's, and is reported so (the gauge
    behind SmppdQueuedForRemovedCarrier), not left queued unseen."""
    path = tmp_path / "smppd.yaml"
    write(path, carriers=("a", "b"), route="a")
    queue = MemoryQueue()
    async with running(path, queue, monkeypatch) as (daemon, _):
        demo = ClientIdentity(name="demo", senders=frozenset({"ACME"}))
        replies = await daemon.gateway.submit(
            demo, [SubmitRequest(to="+447700900123", sender="ACME", text=f"m{i}") for i in "12"]
        )
        assert all(isinstance(reply, SubmitReply) for reply in replies)
        write(path, carriers=("a", "b"), route="b")
        receiver = (
            "- {name: a, bind_mode: receiver, host: 127.0.0.1, port: 9, system_id: s, password: p}"
        )
        path.write_text(path.read_text().replace(CARRIER.format(name="a").strip(), receiver))
        await daemon._reload_config()
        assert not daemon.config.carriers[0].can_send
        await daemon._refresh_stats(time.time())
        gauge = daemon.metrics_registry().get_sample_value
        assert gauge("smppd_queue_unrouted_segments", {"carrier": "a"}) == 2
        assert gauge("smppd_queue_unrouted_segments", {"carrier": "b"}) is None


async def test_a_reload_renaming_a_carrier_warns_that_its_awaited_receipts_go_unmatched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Receipts are matched by carrier name (message ids are the carrier's own), so a rename is
    a removal and an addition: what the old name submitted is never settled by a receipt that
    comes on the new one. The reload says so, naming the carrier on the same account."""
    queue = MemoryQueue()
    now = time.time()
    await queue.enqueue([message(client="demo", carrier="old")], now=now)
    (segment,) = await queue.claim("old", 1, now=now)
    await queue.record([Submitted(segment.segment_id, correlation_keys("9"), "0")], now=now)
    path = tmp_path / "smppd.yaml"
    write(path, carriers=("old",), route="old")
    async with running(path, queue, monkeypatch) as (daemon, _):
        write(path, carriers=("new",), route="new")  # the same SMSC and system_id
        monkeypatch.setattr(daemon_module, "configure_logging", lambda level, fmt: None)
        with structlog.testing.capture_logs() as logs:
            await daemon._reload_config()
        (warned,) = [e for e in logs if e["event"] == "carrier removed with awaited receipts"]
        assert (warned["carrier"], warned["segments"], warned["renamed_to"]) == ("old", 1, "new")
        assert warned["log_level"] == "warning"
