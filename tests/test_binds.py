"""A carrier's binds against the fake SMSC: keeping them bound, spreading submits, shared caps."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import random
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from raw_smsc import read_frame

from smppd.binds import (
    BIND_REFUSED_PERMANENT,
    CONNECT_FAILED,
    CarrierBinds,
    reconnect_delay,
)
from smppd.link import NullObserver, resolve
from smppd.pdu import pdus
from smppd.pdu.codec import encode_body, frame
from smppd.pdu.command import CommandId
from smppd.pdu.status import CommandStatus, StatusClass
from smppd.session import BindMode, BindSettings, ReconnectSettings, State, SubmitResult
from tools.fake_smsc import Account, FakeSmsc, SmscConfig

BODY = encode_body(pdus.SubmitSm(source_addr="Acme", destination_addr="447700900123"))


async def accept(pdu: pdus.DeliverSm | pdus.DataSm) -> int:
    return 0


def submit(binds: CarrierBinds, body: bytes) -> asyncio.Future[SubmitResult] | None:
    """try_send with a future for the result (None: nothing took it)."""
    future: asyncio.Future[SubmitResult] = asyncio.get_running_loop().create_future()
    return future if binds.try_send(body, functools.partial(resolve, future)) else None


def settings(port: int, **changes: object) -> BindSettings:
    base = BindSettings(
        host="127.0.0.1",
        port=port,
        system_id="smppd",
        password="secret",
        window=3,
        response_timeout_s=2.0,
        connect_timeout_s=1.0,
        bind_timeout_s=1.0,
        unbind_timeout_s=1.0,
        reconnect=ReconnectSettings(initial_s=0.01, max_s=0.05, auth_failure_s=30.0),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


class Watcher(NullObserver):
    """Records reconnect decisions and wakes a test when a bind becomes bound."""

    def __init__(self) -> None:
        self.reconnects: list[tuple[str, str, float]] = []
        self.refusals: list[tuple[int, bool]] = []
        self.changed = asyncio.Event()

    def state_changed(self, bind: str, state: State) -> None:
        self.changed.set()

    def bind_failed(self, bind: str, command_status: int, permanent: bool) -> None:
        self.refusals.append((command_status, permanent))

    def reconnect_scheduled(self, bind: str, reason: str, delay_s: float) -> None:
        self.reconnects.append((bind, reason, delay_s))
        self.changed.set()

    async def until(self, condition: Callable[[], object]) -> None:
        async with asyncio.timeout(3.0):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def smsc() -> AsyncIterator[FakeSmsc]:
    async with FakeSmsc(SmscConfig(port=0)) as server:
        yield server


def test_reconnect_delay_grows_with_jitter_and_a_cap() -> None:
    """Delays double per attempt, stay within [half, all] of the step, and stop at max_s."""
    rng = random.Random(7)
    for attempt, step in [(0, 1.0), (1, 2.0), (3, 8.0), (10, 60.0), (100, 60.0)]:
        delays = {reconnect_delay(attempt, initial_s=1.0, max_s=60.0, rng=rng) for _ in range(50)}
        assert all(step / 2 <= d <= step for d in delays)
        assert len(delays) > 1


async def test_keeps_the_configured_binds(smsc: FakeSmsc) -> None:
    """All configured binds come up and are offered as one."""
    watcher = Watcher()
    async with CarrierBinds(
        settings(smsc.port), binds=3, handler=accept, observer=watcher, carrier="acme"
    ) as binds:
        await asyncio.wait_for(binds.wait_bound(), 3)
        assert len(smsc.bound("smppd")) == 3
        result = await asyncio.wait_for(_submit(binds), 2)
        assert result.status_class is StatusClass.SUCCESS
    assert binds.bound_count == 0
    assert smsc.bound() == []


async def _submit(binds: CarrierBinds) -> SubmitResult:
    while (future := submit(binds, BODY)) is None:
        await binds.wait_ready()
    return await future


async def sent_at_pace(binds: CarrierBinds, count: int) -> list[float]:
    """Send `count` submits as fast as the binds take them; when each went (loop time)."""
    loop = asyncio.get_running_loop()
    times: list[float] = []
    async with asyncio.timeout(5):
        while len(times) < count:
            if submit(binds, BODY) is None:
                await binds.wait_ready()
            else:
                times.append(loop.time())
    return times


async def test_submits_go_to_the_bind_with_most_room(smsc: FakeSmsc) -> None:
    """Submits spread over the binds by free window slots; no bind's window is exceeded."""
    watcher = Watcher()
    async with CarrierBinds(
        settings(smsc.port, window=3), binds=2, handler=accept, observer=watcher
    ) as binds:
        await asyncio.wait_for(binds.wait_bound(), 3)
        smsc.set_faults(latency_s=5.0)
        futures = [submit(binds, BODY) for _ in range(7)]
        assert [f is not None for f in futures] == [True] * 6 + [False]
        assert sorted(link.in_flight for link in binds.links if link) == [3, 3]
        assert binds.in_flight == 6
        await smsc.records.wait_for(6, timeout=2, segments=True)
        assert smsc.max_outstanding == 3
        smsc.set_faults(latency_s=0.0)
        smsc.drop()  # settle them quickly: every outstanding one ends unknown
        results = await asyncio.wait_for(asyncio.gather(*(f for f in futures if f)), 2)
        assert all(r.unknown for r in results)


async def test_carrier_tps_is_shared(smsc: FakeSmsc) -> None:
    """The carrier cap holds across binds: two binds together send at most `tps` a second."""
    watcher = Watcher()
    async with CarrierBinds(
        settings(smsc.port, window=10), binds=2, handler=accept, tps=4, observer=watcher
    ) as binds:
        await asyncio.wait_for(binds.wait_bound(), 3)
        start = asyncio.get_running_loop().time()
        futures = [submit(binds, BODY) for _ in range(8)]
        assert sum(f is not None for f in futures) == 2  # paced: one every 1.02 / 4 s, and one
        assert binds.pick() is None  # ahead of that
        times = [start, start, *await sent_at_pace(binds, 3)]
        gaps = [b - a for a, b in itertools.pairwise(times[1:])]
        assert min(gaps) >= 0.2
        assert times[4] - times[0] >= 1.0  # the cap holds over any one-second span


async def test_bind_tps_holds_across_a_reconnect(smsc: FakeSmsc) -> None:
    """A bind that sent its bind_tps and reconnected within the second sends no more in that
    second: its rate outlives the session (the carrier cap here is far above it)."""
    watcher = Watcher()
    loop = asyncio.get_running_loop()
    async with CarrierBinds(
        settings(smsc.port, window=10, bind_tps=4),
        binds=1,
        handler=accept,
        tps=50,
        observer=watcher,
    ) as binds:
        await asyncio.wait_for(binds.wait_bound(), 3)
        start = loop.time()
        await sent_at_pace(binds, 4)
        await smsc.records.wait_for(4, timeout=2, segments=True)
        smsc.drop()
        await watcher.until(lambda: watcher.reconnects)
        await asyncio.wait_for(binds.wait_bound(), 3)
        if loop.time() < start + 0.9:  # still within the second (a slow machine may not be)
            assert submit(binds, BODY) is None
        async with asyncio.timeout(3):
            while (later := submit(binds, BODY)) is None:
                await binds.wait_ready()
        assert loop.time() >= start + 1.0
        await asyncio.wait_for(later, 2)


async def test_a_restarted_carrier_binds_count_what_their_predecessors_sent(
    smsc: FakeSmsc,
) -> None:
    """carry_rate_from: a bind configured alike goes on with its predecessor's rate; one whose
    bind_tps changed counts the predecessor's sends of the last second against its new cap
    (the window's own arithmetic is test_ratelimit's)."""
    loop = asyncio.get_running_loop()
    for new_tps, most in [(4, 0), (40, 36)]:
        async with CarrierBinds(
            settings(smsc.port, window=10, bind_tps=4), binds=1, handler=accept, tps=50
        ) as old:
            await asyncio.wait_for(old.wait_bound(), 3)
            first = (await sent_at_pace(old, 4))[0]
        new = CarrierBinds(
            settings(smsc.port, window=10, bind_tps=new_tps), binds=1, handler=accept, tps=50
        )
        new.carry_rate_from(old)
        async with new:
            await asyncio.wait_for(new.wait_bound(), 3)
            sent = 0
            while loop.time() < first + 0.95:  # the old binds' second
                if submit(new, BODY) is None:
                    async with asyncio.timeout(2):
                        await new.wait_ready()
                elif loop.time() < first + 0.95:
                    sent += 1
            assert sent <= most
            if most:
                assert sent > 0  # the rest of the cap, at its pace
            assert (await _submit(new)).status_class is StatusClass.SUCCESS


async def test_reconnects_after_a_drop(smsc: FakeSmsc) -> None:
    """A dropped bind reconnects after a short backoff and takes submits again."""
    watcher = Watcher()
    async with CarrierBinds(settings(smsc.port), binds=1, handler=accept, observer=watcher) as b:
        await asyncio.wait_for(b.wait_bound(), 3)
        smsc.drop()
        await watcher.until(lambda: watcher.reconnects)
        assert watcher.reconnects[0][1] == "connection_lost"
        assert watcher.reconnects[0][2] <= 0.01
        await asyncio.wait_for(b.wait_bound(), 3)
        assert len(smsc.connections) == 2
        result = await asyncio.wait_for(_submit(b), 2)
        assert result.status_class is StatusClass.SUCCESS


async def test_reconnects_after_smsc_unbind(smsc: FakeSmsc) -> None:
    """After the SMSC unbinds, the slot binds again."""
    watcher = Watcher()
    async with CarrierBinds(settings(smsc.port), binds=1, handler=accept, observer=watcher) as b:
        await asyncio.wait_for(b.wait_bound(), 3)
        smsc.send_unbind()
        await watcher.until(lambda: watcher.reconnects)
        await asyncio.wait_for(b.wait_bound(), 3)
        assert watcher.reconnects[0][1] == "peer_unbind"


async def test_bad_password_backs_off_longer(smsc: FakeSmsc) -> None:
    """A bind refused with ESME_RINVPASWD is permanent: the slot waits auth_failure_s, not the
    short backoff, and close() still returns at once."""
    watcher = Watcher()
    binds = CarrierBinds(
        settings(smsc.port, password="wrong"), binds=1, handler=accept, observer=watcher
    )
    async with binds:
        await watcher.until(lambda: watcher.reconnects)
        ((_, reason, delay),) = watcher.reconnects
        assert reason == BIND_REFUSED_PERMANENT
        assert 30.0 <= delay <= 36.0
        assert watcher.refusals == [(CommandStatus.ESME_RINVPASWD, True)]
        assert binds.bound_count == 0
        assert submit(binds, BODY) is None
    assert len(smsc.connections) == 1  # one attempt, not a hammering


async def test_refused_credentials_are_asked_with_by_one_bind_at_a_time(smsc: FakeSmsc) -> None:
    """Three binds with a wrong password made three failed logins every auth_failure_s: a
    carrier that locks an account after a few locked it. At start all three ask (a silent
    node must not hold the others up); once refused, one asks at a time, and once the
    credentials are good (the carrier fixed the account, here) every bind comes up."""
    watcher = Watcher()
    reconnect = ReconnectSettings(initial_s=0.01, max_s=0.05, auth_failure_s=0.2)
    config = settings(smsc.port, password="wrong", reconnect=reconnect)
    async with CarrierBinds(config, binds=3, handler=accept, observer=watcher) as binds:
        await watcher.until(lambda: len(watcher.refusals) >= 4)  # the start's three, one more
        assert len(smsc.connections) == 4
        smsc._accounts["smppd"] = dataclasses.replace(smsc._accounts["smppd"], password="wrong")
        await asyncio.wait_for(binds.wait_bound(), 3)
        await watcher.until(lambda: len(smsc.bound("smppd")) == 3)
    assert len(watcher.refusals) in (4, 5)  # the fifth ask may have come before the fix


class FirstSilent:
    """A relay to `upstream` whose `silent`-th connection is read and never answered."""

    def __init__(self, upstream: int, silent: int = 1) -> None:
        self.upstream = upstream
        self.silent = silent
        self.connections = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> FirstSilent:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        if self.connections == self.silent:
            await reader.read()  # until the client gives up and closes
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self.writers.append(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
            dst.close()

        for task in (
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            self.tasks.add(task)


async def test_a_silent_node_at_start_holds_no_other_bind_up(smsc: FakeSmsc) -> None:
    """With one bind asking first at start, a node that never answered the bind held every
    other bind for its timeout, and each in turn (the carrier down binds x timeout). Before
    a refusal the credentials are not in doubt: the others bind at once."""
    watcher = Watcher()
    async with FirstSilent(smsc.port) as relay:
        config = settings(relay.port, bind_timeout_s=30.0)
        async with CarrierBinds(config, binds=3, handler=accept, observer=watcher):
            async with asyncio.timeout(5.0):  # well inside the silent one's 30 s
                while len(smsc.bound("smppd")) < 2:
                    watcher.changed.clear()
                    await watcher.changed.wait()


async def test_an_ask_that_gets_no_answer_hands_the_turn_to_one_other_bind(
    smsc: FakeSmsc,
) -> None:
    """Refused at start (three binds), the credentials are in doubt and one bind asks again:
    its attempt timed out (an SMSC node that never answers the bind), which released every
    other bind at once, two failed logins together. Nothing was learnt: the next one asks,
    alone."""
    watcher = Watcher()
    reconnect = ReconnectSettings(initial_s=0.01, max_s=0.05, auth_failure_s=0.2)
    async with FirstSilent(smsc.port, silent=4) as relay:
        config = settings(relay.port, password="wrong", reconnect=reconnect, bind_timeout_s=0.3)
        async with CarrierBinds(config, binds=3, handler=accept, observer=watcher):
            await watcher.until(lambda: len(watcher.refusals) >= 4)
            assert relay.connections == 5  # the start's three, the silent one, one more
        assert len(watcher.refusals) == 4


async def test_connect_failures_back_off_exponentially() -> None:
    """With nothing listening, attempts back off with growing delays up to max_s."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    watcher = Watcher()
    async with CarrierBinds(settings(port), binds=1, handler=accept, observer=watcher):
        await watcher.until(lambda: len(watcher.reconnects) >= 4)
    delays = [d for _, reason, d in watcher.reconnects[:4] if reason == CONNECT_FAILED]
    assert len(delays) == 4
    assert 0.005 <= delays[0] <= 0.01
    assert 0.01 <= delays[1] <= 0.02
    assert all(d <= 0.05 for d in delays)


async def test_close_drains_outstanding_then_unbinds(smsc: FakeSmsc) -> None:
    """close() stops new submits, lets outstanding ones finish, then unbinds every bind."""
    watcher = Watcher()
    binds = CarrierBinds(settings(smsc.port), binds=2, handler=accept, observer=watcher)
    async with binds:
        await asyncio.wait_for(binds.wait_bound(), 3)
        smsc.set_faults(latency_s=0.1)
        futures = [f for _ in range(4) if (f := submit(binds, BODY))]
        closing = asyncio.create_task(binds.close())
        await asyncio.sleep(0)
        assert submit(binds, BODY) is None
        async with asyncio.timeout(3):
            await closing
            await binds.wait_ready()  # returns at once once closed
    assert all(f.result().status_class is StatusClass.SUCCESS for f in futures)
    assert [c.state.value for c in smsc.connections] == ["closed", "closed"]


async def test_a_bind_that_completes_while_close_drains_the_others_is_unbound_too() -> None:
    """close() drains bind 0 (a submit the SMSC never answers) while bind 1 still waits for
    its bind_resp, which comes during the drain: bind 1 is unbound as well, not dropped
    (a bound session aborted lingers at the SMSC, which may refuse the next start's binds)."""
    unbinds: dict[int, int] = {}
    answer_second = asyncio.Event()

    async def smsc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = len(unbinds)
        unbinds[n] = 0
        command_id, sequence = await read_frame(reader)
        if n == 1:
            await answer_second.wait()
        writer.write(frame(command_id | 0x8000_0000, 0, sequence, b"raw\0"))
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:  # submits are never answered: close() drains them out
                command_id, sequence = await read_frame(reader)
                if command_id == CommandId.unbind:
                    unbinds[n] += 1
                    writer.write(frame(CommandId.unbind_resp, 0, sequence, b""))
        writer.close()

    server = await asyncio.start_server(smsc, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        binds = CarrierBinds(
            settings(port, response_timeout_s=1.0, unbind_timeout_s=1.0), binds=2, handler=accept
        )
        runner = asyncio.create_task(binds.run())
        async with asyncio.timeout(10):
            await binds.wait_bound(1)
            assert submit(binds, BODY) is not None
            closing = asyncio.create_task(binds.close())
            await asyncio.sleep(0)  # close() has begun draining bind 0
            answer_second.set()
            await closing
            await runner
        assert unbinds == {0: 1, 1: 1}
    finally:
        server.close()


async def test_alybnd_is_not_permanent(smsc: FakeSmsc) -> None:
    """ESME_RALYBND (the SMSC still holds our old bind) is retried with the short backoff."""
    await smsc.stop()
    config = SmscConfig(port=0, accounts=(Account(max_binds=1),))
    async with FakeSmsc(config) as capped:
        watcher = Watcher()
        async with CarrierBinds(
            settings(capped.port), binds=2, handler=accept, observer=watcher
        ) as binds:
            await watcher.until(lambda: any(r[1] == "bind_refused" for r in watcher.reconnects))
            assert binds.bound_count == 1
            assert (CommandStatus.ESME_RALYBND, False) in watcher.refusals


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_dead_address_moves_the_binds_to_the_alternate(smsc: FakeSmsc) -> None:
    """Nothing listens at host:port; the SMSC's alternate address takes both binds at the
    next attempt, and the backoff grows only once every address was tried."""
    watcher = Watcher()
    dead = unused_port()
    config = settings(dead, alternates=(("127.0.0.1", smsc.port),))
    async with CarrierBinds(config, binds=2, handler=accept, observer=watcher) as binds:
        await asyncio.wait_for(binds.wait_bound(), 3)
        assert len(smsc.bound()) == 2
    failed = [d for _, reason, d in watcher.reconnects if reason == CONNECT_FAILED]
    assert len(failed) == 2  # one a bind, at host:port
    assert all(0.005 <= d <= 0.01 for d in failed)  # the first step of the backoff


async def test_every_address_is_tried_at_each_step_of_the_backoff() -> None:
    """With no address answering, the delays run a step per round of the three addresses."""
    watcher = Watcher()
    ports = [unused_port() for _ in range(3)]
    config = settings(ports[0], alternates=tuple(("127.0.0.1", p) for p in ports[1:]))
    async with CarrierBinds(config, binds=1, handler=accept, observer=watcher):
        await watcher.until(lambda: len(watcher.reconnects) >= 6)
    delays = [d for _, _, d in watcher.reconnects[:6]]
    assert all(0.005 <= d <= 0.01 for d in delays[:3])  # initial_s 0.01, half to all of it
    assert all(0.01 <= d <= 0.02 for d in delays[3:6])


async def test_a_bind_that_dropped_comes_back_to_its_own_address(smsc: FakeSmsc) -> None:
    """A link that held on the alternate reconnects there after a drop, though host:port has
    come back meanwhile: it goes where it last worked."""
    primary = unused_port()
    watcher = Watcher()
    config = settings(primary, alternates=(("127.0.0.1", smsc.port),))
    async with CarrierBinds(config, binds=1, handler=accept, observer=watcher) as binds:
        await asyncio.wait_for(binds.wait_bound(), 3)
        async with FakeSmsc(SmscConfig(port=primary)) as revived:
            assert smsc.drop() == 1
            await watcher.until(lambda: len(watcher.reconnects) >= 2)  # the drop's
            await asyncio.wait_for(binds.wait_bound(), 3)
            assert (len(revived.bound()), len(smsc.bound())) == (0, 1)


async def test_receiver_binds_come_up_beside_the_binds_and_never_carry_submits(
    smsc: FakeSmsc,
) -> None:
    """A transmitter bind and a receiver bind, as carriers that split them want: both are
    bound, the receiver named rx0, submits go on the transmitter only, and only it counts as
    the carrier being up."""
    watcher = Watcher()
    config = settings(smsc.port, bind_mode=BindMode.TRANSMITTER)
    async with CarrierBinds(config, binds=1, receivers=1, handler=accept, observer=watcher) as b:
        await asyncio.wait_for(b.wait_bound(), 3)
        states = sorted(c.state.value for c in smsc.bound())
        assert states == ["bound_rx", "bound_tx"]
        assert (b.bound_count, b.receivers_bound) == (1, 1)
        assert [link is not None and link.name for link in b.links] == ["0", "rx0"]
        for _ in range(5):
            assert (await asyncio.wait_for(_submit(b), 2)).status_class is StatusClass.SUCCESS
        (tx,) = [c for c in smsc.bound() if c.state.value == "bound_tx"]
        assert {s.bind_id for s in smsc.records.segments} == {tx.bind_id}
        tx.close()  # the transmitter gone, the receiver up: the carrier cannot send
        # Its reconnect is scheduled once the link is out of the slot, and waits 5 ms or more.
        await watcher.until(lambda: any(bind == "0" for bind, _, _ in watcher.reconnects))
        assert (b.bound_count, b.receivers_bound) == (0, 1)


class BoundAtTheSmscs(Watcher):
    """Also notes, at each bind state change, how many binds the SMSCs hold in all."""

    def __init__(self, *smscs: FakeSmsc) -> None:
        super().__init__()
        self.smscs = smscs
        self.totals: list[int] = []

    def state_changed(self, bind: str, state: State) -> None:
        self.totals.append(sum(len(s.bound()) for s in self.smscs))
        super().state_changed(bind, state)


async def test_binds_on_the_alternate_go_back_to_host_port_one_at_a_time(smsc: FakeSmsc) -> None:
    """host:port is down at the start, so both binds go to the alternate; once it is back,
    each bind unbinds from the alternate after primary_after_s and binds at host:port, one at
    a time: the SMSCs never hold fewer than one of the carrier's binds on the way."""
    primary = unused_port()
    reconnect = ReconnectSettings(initial_s=0.01, max_s=0.05, primary_after_s=0.3)
    config = settings(primary, alternates=(("127.0.0.1", smsc.port),), reconnect=reconnect)
    watcher = BoundAtTheSmscs(smsc)
    async with CarrierBinds(config, binds=2, handler=accept, observer=watcher) as binds:
        await watcher.until(lambda: len(smsc.bound()) == 2)
        async with FakeSmsc(SmscConfig(port=primary)) as revived:
            watcher.smscs = (smsc, revived)
            moving = len(watcher.totals)
            await watcher.until(lambda: len(revived.bound()) == 2)
            assert smsc.bound() == []
            assert len(watcher.totals) > moving + 4  # both went through unbind and rebind
            assert min(watcher.totals[moving:]) >= 1
            result = await asyncio.wait_for(_submit(binds), 2)
            assert result.status_class is StatusClass.SUCCESS
            assert len(revived.records.segments) == 1


async def test_a_bind_whose_way_back_fails_binds_at_the_alternate_again(smsc: FakeSmsc) -> None:
    """host:port stays down: a bind that leaves the alternate to go back fails to connect and
    binds at the alternate again, while the other bind stays up there."""
    reconnect = ReconnectSettings(initial_s=0.01, max_s=0.05, primary_after_s=0.1)
    config = settings(unused_port(), alternates=(("127.0.0.1", smsc.port),), reconnect=reconnect)
    watcher = BoundAtTheSmscs(smsc)
    async with CarrierBinds(config, binds=2, handler=accept, observer=watcher):
        await watcher.until(lambda: len(smsc.bound()) == 2)
        moving, failed = len(watcher.totals), len(watcher.reconnects)
        await watcher.until(
            lambda: (
                any(r[1] == CONNECT_FAILED for r in watcher.reconnects[failed:])
                and len(smsc.bound()) == 2
            )
        )
        assert min(watcher.totals[moving:]) >= 1


async def test_a_way_back_that_keeps_failing_is_tried_less_and_less_often(smsc: FakeSmsc) -> None:
    """host:port stays down: each way back that fails (a moment's outage for a carrier with one
    bind) doubles the time on the alternate before the next, up to RETURN_BACKOFF times
    primary_after_s; it was tried every primary_after_s for the whole outage."""
    reconnect = ReconnectSettings(initial_s=0.01, max_s=0.05, primary_after_s=0.05)
    config = settings(unused_port(), alternates=(("127.0.0.1", smsc.port),), reconnect=reconnect)
    loop = asyncio.get_running_loop()
    tries: list[float] = []

    class Tries(Watcher):
        def reconnect_scheduled(self, bind: str, reason: str, delay_s: float) -> None:
            if reason == CONNECT_FAILED:
                tries.append(loop.time())
            super().reconnect_scheduled(bind, reason, delay_s)

    watcher = Tries()
    async with CarrierBinds(config, binds=1, handler=accept, observer=watcher):
        await watcher.until(lambda: len(smsc.bound()) == 1)
        start = len(tries)  # the first bind's own failed connect is not a way back
        await watcher.until(lambda: len(tries) >= start + 4)
    gaps = [b - a for a, b in itertools.pairwise(tries[start:])]
    assert gaps[0] >= 0.1  # 0.05 x 2, 4, 8
    assert gaps[1] >= 0.2
    assert gaps[2] >= 0.4 - 0.05
    assert gaps[2] < 0.4 + 1.0  # no more than RETURN_BACKOFF times


async def test_spread_binds_take_the_addresses_in_turn(smsc: FakeSmsc) -> None:
    """With spread_binds, three binds over two addresses: binds 0 and 2 at host:port, bind 1
    at the alternate, and submits go over all three."""
    async with FakeSmsc(SmscConfig(port=0)) as other:
        config = settings(smsc.port, alternates=(("127.0.0.1", other.port),), spread_binds=True)
        async with CarrierBinds(config, binds=3, handler=accept) as binds:
            await asyncio.wait_for(binds.wait_bound(), 3)
            assert (len(smsc.bound()), len(other.bound())) == (2, 1)
            assert binds.bound_addresses() == {
                f"127.0.0.1:{smsc.port}": 2,
                f"127.0.0.1:{other.port}": 1,
            }
            results = await asyncio.wait_for(asyncio.gather(*(_submit(binds) for _ in range(9))), 2)
            assert all(r.status_class is StatusClass.SUCCESS for r in results)
            assert len(smsc.records.segments) == 6  # window 3 a bind: 3 each
            assert len(other.records.segments) == 3


async def test_a_spread_bind_goes_back_to_its_own_address(smsc: FakeSmsc) -> None:
    """Bind 1's own address (the alternate) is down at the start, so it binds at host:port;
    once the alternate is back it moves there after primary_after_s, and bind 0 stays."""
    own = unused_port()
    reconnect = ReconnectSettings(initial_s=0.01, max_s=0.05, primary_after_s=0.2)
    config = settings(
        smsc.port, alternates=(("127.0.0.1", own),), spread_binds=True, reconnect=reconnect
    )
    watcher = BoundAtTheSmscs(smsc)
    async with CarrierBinds(config, binds=2, handler=accept, observer=watcher) as binds:
        await watcher.until(lambda: len(smsc.bound()) == 2)
        first = {c.bind_id for c in smsc.bound()}
        async with FakeSmsc(SmscConfig(port=own)) as revived:
            watcher.smscs = (smsc, revived)
            await watcher.until(lambda: len(revived.bound()) == 1)
            await asyncio.wait_for(binds.wait_bound(), 3)
            (stayed,) = smsc.bound()
            assert stayed.bind_id in first  # bind 0 never left host:port
            assert [link is not None and link.name for link in binds.links] == ["0", "1"]
