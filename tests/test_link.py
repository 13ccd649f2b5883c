"""One bind over a real socket, against the fake SMSC (and a wiretap where bytes matter)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import os
import shutil
import ssl
import subprocess
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog.testing
from raw_smsc import read_frame

import smppd.session
from smppd.link import DeliverHandler, Link, NullObserver
from smppd.metrics import CarrierObserver
from smppd.pdu import pdus
from smppd.pdu.codec import PduReader, encode_body, frame
from smppd.pdu.command import CommandId
from smppd.pdu.status import CommandStatus, StatusClass
from smppd.pdu.tlv import Tag, Tlv
from smppd.session import (
    BindError,
    BindSettings,
    CloseReason,
    LinkError,
    SessionClosedError,
    State,
    SubmitResult,
    TlsSettings,
)
from smppd.tlsctx import tls_context
from tools.fake_smsc import FakeSmsc, Reorder, SmscConfig

S = CommandStatus


def body(destination: str = "447700900123") -> bytes:
    return encode_body(
        pdus.SubmitSm(source_addr="Acme", destination_addr=destination, short_message=b"hello")
    )


async def accept(pdu: pdus.DeliverSm | pdus.DataSm) -> int:
    return 0


def settings(port: int, **changes: object) -> BindSettings:
    base = BindSettings(
        host="127.0.0.1",
        port=port,
        system_id="smppd",
        password="secret",
        window=10,
        response_timeout_s=2.0,
        connect_timeout_s=2.0,
        bind_timeout_s=2.0,
        unbind_timeout_s=1.0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def smsc() -> AsyncIterator[FakeSmsc]:
    async with FakeSmsc(SmscConfig(port=0)) as server:
        yield server


async def connect(port: int, *, handler: DeliverHandler = accept, **changes: object) -> Link:
    return await Link.connect(settings(port, **changes), handler=handler, name="0")


class Tap:
    """A TCP relay to an upstream port that keeps what the client sent; optionally it ends TLS."""

    def __init__(self, upstream: int, context: ssl.SSLContext | None = None) -> None:
        self.upstream = upstream
        self.context = context
        self.from_client = bytearray()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Tap:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    def client_pdus(self) -> list[pdus.Pdu]:
        reader = PduReader()
        reader.feed(bytes(self.from_client))
        out = []
        while (pdu := reader.next_pdu()) is not None:
            out.append(pdu)
        return out

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bytearray | None
        ) -> None:
            try:
                while data := await src.read(65536):
                    if keep is not None:
                        keep += data
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        for task in (
            asyncio.create_task(pipe(reader, up_writer, self.from_client)),
            asyncio.create_task(pipe(up_reader, writer, None)),
        ):
            self.tasks.add(task)


# --- binding ------------------------------------------------------------------------------------


async def test_bind_and_submit(smsc: FakeSmsc) -> None:
    """A transceiver binds, submits, and gets the SMSC's message_id; the SMSC recorded it."""
    link = await connect(smsc.port)
    assert link.state is State.BOUND_TRX
    result = await link.submit(body("447700900001"))
    assert result.status_class is StatusClass.SUCCESS
    assert result.message_id
    assert result.bind == "0"
    (segment,) = smsc.records.segments
    assert (segment.destination, segment.message_id) == ("447700900001", result.message_id)
    assert await link.close() is CloseReason.UNBOUND


@pytest.mark.parametrize(
    ("changes", "status"),
    [({"password": "wrong"}, S.ESME_RINVPASWD), ({"system_id": "nobody"}, S.ESME_RINVSYSID)],
)
async def test_bad_credentials_raise_permanent_bind_error(
    smsc: FakeSmsc, changes: dict[str, object], status: int
) -> None:
    """A refused bind raises BindError naming the status, marked permanent."""
    with pytest.raises(BindError) as caught:
        await Link.connect(settings(smsc.port, **changes), handler=accept)
    assert caught.value.command_status == status
    assert caught.value.permanent


async def test_connect_refused_is_a_link_error() -> None:
    """Nothing listening: LinkError, not a bare OSError."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(LinkError):
        await connect(port)


async def test_bind_timeout_is_a_link_error(smsc: FakeSmsc) -> None:
    """An SMSC that never answers the bind: LinkError after bind_timeout_s."""
    smsc.set_faults(hang=True)
    with pytest.raises(LinkError, match="bind_timeout"):
        await connect(smsc.port, bind_timeout_s=0.2)


# --- the window, order and rates ----------------------------------------------------------------


async def test_window_never_exceeded_at_the_smsc(smsc: FakeSmsc) -> None:
    """However fast the sender, the SMSC never holds more than `window` unanswered submits."""
    smsc.set_faults(latency_s=[0.0, 0.005])
    link = await connect(smsc.port, window=7)
    futures = []
    for i in range(300):
        while (future := link.try_submit(body(f"4477009{i:05d}"))) is None:
            await link.wait_ready()
        futures.append(future)
    results = await asyncio.gather(*futures)
    assert all(r.status_class is StatusClass.SUCCESS for r in results)
    assert smsc.max_outstanding == 7
    assert len(smsc.records.segments) == 300
    await link.close()


async def test_out_of_order_responses_matched(smsc: FakeSmsc) -> None:
    """With responses released in reverse, each submit still gets its own message_id."""
    smsc.set_faults(reorder=Reorder.REVERSE, reorder_batch=10)
    link = await connect(smsc.port, window=10)
    destinations = [f"44770090{i:04d}" for i in range(30)]
    results = await asyncio.gather(*(link.submit(body(d)) for d in destinations))
    at_smsc = {s.destination: s.message_id for s in smsc.records.segments}
    assert {d: r.message_id for d, r in zip(destinations, results, strict=True)} == at_smsc
    assert len(set(at_smsc.values())) == 30
    await link.close()


async def test_throttled_answers_slow_the_bind(smsc: FakeSmsc) -> None:
    """ESME_RTHROTTLED answers are temporary results and put the bind into backoff."""
    smsc.set_faults(tps_limit=5)
    link = await connect(smsc.port, window=20, throttle_backoff_s=30.0)
    results = await asyncio.gather(*(f for _ in range(20) if (f := link.try_submit(body()))))
    throttled = [r for r in results if r.command_status == S.ESME_RTHROTTLED]
    assert len(throttled) == 15
    assert all(r.status_class is StatusClass.TEMPORARY for r in throttled)
    assert link.throttle_events == 1
    assert link.try_submit(body()) is None  # paused for throttle_backoff_s
    assert link.ready_at(asyncio.get_running_loop().time()) is not None
    await link.close()


# --- timeouts and loss --------------------------------------------------------------------------


async def test_response_timeout_reports_unknown(smsc: FakeSmsc) -> None:
    """A submit the SMSC never answers ends as an unknown outcome after response_timeout_s."""
    link = await connect(smsc.port, response_timeout_s=0.2, enquire_link_interval_s=30.0)
    smsc.set_faults(hang=True)
    async with asyncio.timeout(2):
        result = await link.submit(body())
    assert result.unknown
    assert result.status_class is None
    assert result.command_status != 0
    assert link.state is State.BOUND_TRX
    link.abort()


async def test_enquire_link_loss_closes_the_link(smsc: FakeSmsc) -> None:
    """An SMSC that stops answering is found dead by enquire_link and the link closes."""
    link = await connect(smsc.port, enquire_link_interval_s=0.1, response_timeout_s=0.2)
    smsc.set_faults(hang=True)
    async with asyncio.timeout(2):
        assert await link.wait_closed() is CloseReason.ENQUIRE_LINK_TIMEOUT
    assert link.try_submit(body()) is None


async def test_smsc_unbind_closes_with_outstanding_unknown(smsc: FakeSmsc) -> None:
    """The SMSC's unbind is answered and the link closes; what was outstanding is unknown."""
    link = await connect(smsc.port)
    smsc.set_faults(latency_s=5.0)
    future = link.try_submit(body())
    assert future is not None
    await smsc.records.wait_for(1, timeout=2, segments=True)
    assert smsc.send_unbind() == 1
    async with asyncio.timeout(2):
        assert await link.wait_closed() is CloseReason.PEER_UNBIND
        assert (await future).unknown


async def test_drop_mid_window_reports_every_submit_unknown(smsc: FakeSmsc) -> None:
    """When the connection drops with a full window, every outstanding submit is unknown."""
    link = await connect(smsc.port, window=10)
    smsc.set_faults(latency_s=5.0)
    futures = [f for _ in range(10) if (f := link.try_submit(body()))]
    assert len(futures) == 10
    await smsc.records.wait_for(10, timeout=2, segments=True)
    assert smsc.max_outstanding == 10
    smsc.drop()
    async with asyncio.timeout(2):
        results = await asyncio.gather(*futures)
        assert await link.wait_closed() is CloseReason.CONNECTION_LOST
    assert all(r.unknown for r in results)
    with pytest.raises(SessionClosedError):
        await link.submit(body())


async def test_a_flood_of_stray_responses_is_a_line_per_interval(smsc: FakeSmsc) -> None:
    """An SMSC sending responses for requests never made: each is counted and survived, but
    the log gets one line per 10 s with the count left out, not one line each."""
    link = await connect(smsc.port)
    stray = b"".join(frame(CommandId.submit_sm_resp, 0, 900_000 + i, b"x\x00") for i in range(500))
    with structlog.testing.capture_logs() as logs:
        assert smsc.send_raw(stray) == 1
        result = await link.submit(body())  # answered after the strays: they were read first
    assert result.status_class is StatusClass.SUCCESS
    assert link.peer_errors == 500
    lines = [e for e in logs if e["event"] == "smsc protocol error survived"]
    assert len(lines) == 1
    await link.close()


async def test_a_flood_of_unknown_commands_is_a_line_per_interval(smsc: FakeSmsc) -> None:
    """500 requests with 500 different unknown command_ids (each answered generic_nack) are
    one kind of error: one line per interval, however the peer varies its values."""
    link = await connect(smsc.port)
    unknown = b"".join(frame(0x0000_0800 + i, 0, 800_000 + i, b"") for i in range(500))
    with structlog.testing.capture_logs() as logs:
        assert smsc.send_raw(unknown) == 1
        result = await link.submit(body())  # answered after those: they were read first
    assert result.status_class is StatusClass.SUCCESS
    assert link.peer_errors == 500
    lines = [e for e in logs if e["event"] == "smsc protocol error survived"]
    assert len(lines) == 1
    assert lines[0]["reason"] == "undecodable request"
    assert "0x00000800" in lines[0]["detail"]
    await link.close()


@pytest.mark.parametrize(
    ("version", "needs_tlvs", "warned"),
    [
        (0x33, "concatenation: sar", True),
        (0x34, "concatenation: sar", False),
        (None, "concatenation: payload", False),  # omitted by many a 3.4 SMSC
        (0x33, "", False),  # UDH needs no TLV
    ],
)
async def test_an_smsc_of_smpp_33_is_warned_about_where_tlvs_are_used(
    version: int | None, needs_tlvs: str, warned: bool
) -> None:
    """An SMSC whose bind_resp says sc_interface_version 0x33 takes no TLVs: a carrier that
    concatenates with SAR TLVs or message_payload gets a warning naming the setting."""
    async with FakeSmsc(SmscConfig(port=0, interface_version=version)) as server:
        with structlog.testing.capture_logs() as logs:
            link = await connect(server.port, needs_tlvs=needs_tlvs)
        (bound,) = [e for e in logs if e["event"] == "bound"]
        assert bound["interface_version"] == (None if version is None else f"0x{version:02x}")
        warnings = [e for e in logs if e["log_level"] == "warning"]
        assert len(warnings) == warned
        if warned:
            assert needs_tlvs in warnings[0]["event"]
            assert warnings[0]["interface_version"] == "0x33"
        await link.close()


class _NoId:
    def render(self, number: int) -> str:
        return ""


async def test_an_acceptance_without_a_message_id_is_warned_about(smsc: FakeSmsc) -> None:
    """ESME_ROK with an empty message_id: accepted, but no receipt can ever match it, which
    an operator must hear of (one line per interval, however many)."""
    link = await connect(smsc.port)
    smsc.tracker.id_format = _NoId()  # type: ignore[assignment]
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            result = await link.submit(body())
            assert (result.status_class, result.message_id) == (StatusClass.SUCCESS, None)
    lines = [e for e in logs if "no usable message_id" in e["event"]]
    assert [e["log_level"] for e in lines] == ["warning"]
    await link.close()


class WriteOnlyTransport(asyncio.Transport):
    """A transport that keeps what is written and does nothing else."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def abort(self) -> None:
        return None

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        return None


async def test_a_connection_lost_before_the_bind_is_awaited_leaves_nothing_for_the_loop() -> None:
    """A connection that ends while no one awaits the bind (the connect was cancelled, say, by a
    stop) is logged once by the link; the loop is not left an unretrieved bind failure."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        link = Link(settings(1), handler=accept, name="0")
        transport = WriteOnlyTransport()
        link.connection_made(transport)
        reader = PduReader()
        reader.feed(bytes(transport.written))
        bind = reader.next_pdu()
        assert bind is not None
        assert bind.command_id is CommandId.bind_transceiver  # the bind went out
        link.connection_lost(ConnectionResetError("reset by peer"))
        assert link.closed
        del link
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert reported == []


async def test_try_send_calls_back_once_each_and_a_failing_callback_stops_no_other(
    smsc: FakeSmsc,
) -> None:
    """try_send's callbacks get their results later, never inside the call, once each; one
    that raises is reported to the loop and the results after it are still given."""
    link = await connect(smsc.port, window=10)
    loop = asyncio.get_running_loop()
    reported: list[BaseException] = []
    loop.set_exception_handler(lambda _, context: reported.append(context["exception"]))
    results: dict[int, list[SubmitResult]] = {i: [] for i in range(5)}
    all_given = asyncio.Event()

    def on_result(i: int, result: SubmitResult) -> None:
        results[i].append(result)
        if all(results.values()):
            all_given.set()
        if i == 0:
            raise RuntimeError("a broken callback")

    for i in range(5):
        assert link.try_send(body(f"4477009{i:05d}"), functools.partial(on_result, i))
    assert not any(results.values())  # nothing is called back from within try_send
    async with asyncio.timeout(2):
        await all_given.wait()
    assert all(
        len(got) == 1 and got[0].status_class is StatusClass.SUCCESS for got in results.values()
    )
    assert [str(e) for e in reported] == ["a broken callback"]
    smsc.set_faults(latency_s=5.0)
    unanswered: list[SubmitResult] = []
    assert link.try_send(body(), unanswered.append)
    await smsc.records.wait_for(6, timeout=2, segments=True)
    smsc.drop()
    async with asyncio.timeout(2):
        await link.wait_closed()
    assert len(unanswered) == 1
    assert unanswered[0].unknown
    assert all(len(got) == 1 for got in results.values())


async def test_garbage_loses_framing_and_closes(smsc: FakeSmsc) -> None:
    """An impossible command_length from the SMSC closes the link."""
    link = await connect(smsc.port)
    smsc.send_raw(bytes.fromhex("deadbeef") * 4)
    async with asyncio.timeout(2):
        assert await link.wait_closed() is CloseReason.FRAMING_LOST


async def test_blocked_write_has_a_deadline() -> None:
    """An SMSC that stops reading makes the link drop after response_timeout_s, and every
    submit it held ends unknown."""
    held: list[asyncio.StreamWriter] = []

    async def bind_then_stop_reading(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        data = await reader.readexactly(16)
        length = int.from_bytes(data[:4], "big")
        rest = await reader.readexactly(length - 16)
        bind = PduReader()
        bind.feed(data + rest)
        request = bind.next_pdu()
        assert request is not None
        resp = frame(CommandId.bind_transceiver_resp, 0, request.sequence_number, b"stuck\0")
        writer.write(resp)
        held.append(writer)  # hold the connection; read nothing more

    server = await asyncio.start_server(bind_then_stop_reading, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    big = encode_body(
        pdus.SubmitSm(
            destination_addr="447700900123",
            tlvs=(Tlv(Tag.message_payload, b"x" * 60_000),),
        )
    )
    link = await connect(port, window=1000, response_timeout_s=0.3, enquire_link_interval_s=30)
    futures: list[asyncio.Future[SubmitResult]] = []
    async with asyncio.timeout(5):
        while (future := link.try_submit(big)) is not None or not futures:
            if future is not None:
                futures.append(future)
            await asyncio.sleep(0)
        assert await link.wait_closed() is CloseReason.WRITE_TIMEOUT
        assert all(r.unknown for r in await asyncio.gather(*futures))
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


# --- what the SMSC delivers ---------------------------------------------------------------------


async def test_handler_failure_is_a_temporary_error_on_the_wire(smsc: FakeSmsc) -> None:
    """A deliver_sm whose handler raises is answered ESME_RX_T_APPN, so the SMSC redelivers it;
    the retry answered ESME_ROK settles it."""
    smsc.set_receipts(retry_timeout_s=0.05)
    calls: list[str] = []

    async def flaky(pdu: pdus.DeliverSm | pdus.DataSm) -> int:
        calls.append(pdu.source_addr)
        if len(calls) == 1:
            raise RuntimeError("store unavailable")
        return 0

    async with Tap(smsc.port) as tap:
        link = await connect(tap.port, handler=flaky)
        done = await smsc.inject_mo(source="447700900999", destination="12345", text="hi")
        async with asyncio.timeout(3):
            await done
        statuses = [
            p.command_status for p in tap.client_pdus() if isinstance(p, pdus.DeliverSmResp)
        ]
        assert statuses == [S.ESME_RX_T_APPN, 0]
        assert calls == ["447700900999", "447700900999"]
        await link.close()


async def test_handler_failures_log_a_line_per_interval_and_count_each(smsc: FakeSmsc) -> None:
    """While the store fails (a full disk) every MO fails alike: one warning line per kind of
    error and interval, with the count left out, not one a PDU; the metric counts each."""
    failed: list[str] = []
    twenty = asyncio.Event()

    def count(bind: str) -> None:
        failed.append(bind)
        if len(failed) >= 20:
            twenty.set()

    async def full(pdu: pdus.DeliverSm | pdus.DataSm) -> int:
        raise OSError("database or disk is full")

    link = await connect(smsc.port, handler=full)
    link._observer.handler_failed = count  # type: ignore[method-assign]
    with structlog.testing.capture_logs() as logs:
        for n in range(20):  # the SMSC delivers each again until answered ESME_ROK
            await smsc.inject_mo(source="447700900999", destination="12345", text=str(n))
        async with asyncio.timeout(3):
            await twenty.wait()
    lines = [e for e in logs if e["event"].startswith("deliver handler failed")]
    assert [e["error"] for e in lines] == ["OSError: database or disk is full"]
    await link.close()


async def test_a_handler_may_answer_through_a_future_or_fail_before_waiting(
    smsc: FakeSmsc,
) -> None:
    """A handler may return a future instead of being a coroutine (receipts do, to skip a task
    each): the deliver_sm is answered with its result once it resolves. A handler that raises
    at once is answered ESME_RX_T_APPN like one that fails later."""
    smsc.set_receipts(retry_timeout_s=0.05)
    answers: list[asyncio.Future[int]] = []
    redelivered = asyncio.Event()

    def by_future(pdu: pdus.DeliverSm | pdus.DataSm) -> asyncio.Future[int]:
        answers.append(asyncio.get_running_loop().create_future())
        if len(answers) == 1:
            raise RuntimeError("refused before waiting")
        redelivered.set()
        return answers[-1]

    async with Tap(smsc.port) as tap:
        link = await connect(tap.port, handler=by_future)
        done = await smsc.inject_mo(source="447700900999", destination="12345", text="hi")
        async with asyncio.timeout(3):
            await redelivered.wait()  # the refusal, then the SMSC's redelivery
            assert not done.done()
            answers[1].set_result(0)
            await done
        statuses = [
            p.command_status for p in tap.client_pdus() if isinstance(p, pdus.DeliverSmResp)
        ]
        assert statuses == [S.ESME_RX_T_APPN, 0]
        await link.close()


async def test_slow_handler_does_not_stall_submits(smsc: FakeSmsc) -> None:
    """While a deliver handler waits, submit responses are still read and matched."""
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow(pdu: pdus.DeliverSm | pdus.DataSm) -> int:
        entered.set()
        await release.wait()
        return 0

    link = await connect(smsc.port, handler=slow)
    done = await smsc.inject_mo(source="447700900999", destination="12345", text="hi")
    async with asyncio.timeout(3):
        await entered.wait()
        result = await link.submit(body())
        assert result.status_class is StatusClass.SUCCESS
        assert not done.done()
        release.set()
        await done
    await link.close()


async def test_handlers_are_bounded_and_answered_in_turn(smsc: FakeSmsc) -> None:
    """With every handler busy, further deliveries wait their turn (none is lost or answered
    early) while submit answers are still read."""
    running = 0
    most = 0
    release = asyncio.Event()

    async def slow(pdu: pdus.DeliverSm | pdus.DataSm) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return 0

    link = await Link.connect(settings(smsc.port), handler=slow, max_handlers=2)
    done = [
        await smsc.inject_mo(source="447700900999", destination="12345", text=f"hi {i}")
        for i in range(5)
    ]
    async with asyncio.timeout(3):
        assert (await link.submit(body())).status_class is StatusClass.SUCCESS
        assert not any(d.done() for d in done)
        release.set()
        await asyncio.gather(*done)
    assert most == 2
    assert smsc.outbox.stats["mo"].retried == 0
    await link.close()


async def test_an_smsc_ignoring_its_window_fills_the_backlog_a_read_at_a_time_at_most(
    smsc: FakeSmsc,
) -> None:
    """30,000 deliver_sm sent at once, handlers that take a turn of the loop each: reading
    stops at the backlog's limit and starts again only once it is down to half, so the backlog
    never holds much more than one read's worth (not the whole flood, as when every handler
    that finished started reading again)."""
    count = 30_000
    seen = 0
    peak = 0
    all_seen = asyncio.Event()
    link: Link | None = None

    async def handler(pdu: pdus.DeliverSm | pdus.DataSm) -> int:
        nonlocal seen, peak
        assert link is not None
        peak = max(peak, len(link._backlog))
        await asyncio.sleep(0)  # a turn of the loop, as a store write takes at least
        seen += 1
        if seen == count:
            all_seen.set()
        return 0

    link = await Link.connect(settings(smsc.port), handler=handler, max_handlers=4)
    text = b"x" * 120  # about 1,700 of these in one 256 KiB read
    flood = b"".join(
        frame(
            CommandId.deliver_sm,
            0,
            1_000_000 + i,
            encode_body(
                pdus.DeliverSm(
                    source_addr="447700900999", destination_addr="12345", short_message=text
                )
            ),
        )
        for i in range(count)
    )
    assert smsc.send_raw(flood) == 1
    async with asyncio.timeout(30):
        await all_seen.wait()
    assert peak < 5_000
    await link.close()


async def test_a_peer_that_writes_and_never_reads_gets_no_more_read_from_it() -> None:
    """An SMSC that floods enquire_links and reads none of our answers: once our writes back
    up, its PDUs are not read either (each would queue one more answer), so what it manages
    to send is what the sockets buffer, until the write deadline drops it."""
    sent = 0
    flooding = asyncio.Event()

    async def smsc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        _, sequence = await read_frame(reader)
        writer.write(frame(CommandId.bind_transceiver_resp, 0, sequence, b"raw\0"))
        chunk = b"".join(frame(CommandId.enquire_link, 0, i + 1, b"") for i in range(4096))
        flooding.set()
        with contextlib.suppress(ConnectionError):
            while sent < 400_000_000:  # never reached: a bound on the loop
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(smsc, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        link = await connect(port, response_timeout_s=2.0, enquire_link_interval_s=30)
        async with asyncio.timeout(10):
            await flooding.wait()
            assert await link.wait_closed() is CloseReason.WRITE_TIMEOUT
        assert sent < 20 * 1024 * 1024  # about 10 MB; 50 MB when it went on reading
    finally:
        server.close()


async def test_answers_an_smsc_writes_after_its_unbind_are_still_read() -> None:
    """An SMSC that unbinds, then writes the submit_sm_resps it owed in a later segment: they
    are read and count (cut off, each would be sent again), then the link closes."""
    answered_unbind = asyncio.Event()

    async def smsc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, sequence = await read_frame(reader)
        writer.write(frame(CommandId.bind_transceiver_resp, 0, sequence, b"raw\0"))
        submits = [(await read_frame(reader))[1] for _ in range(3)]
        writer.write(frame(CommandId.unbind, 0, 900, b""))
        await writer.drain()
        command_id, _ = await read_frame(reader)  # our unbind_resp, before it answers the submits
        if command_id == CommandId.unbind_resp:
            answered_unbind.set()
        writer.write(b"".join(frame(CommandId.submit_sm_resp, 0, s, b"m%d\0" % s) for s in submits))
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until we close
        writer.close()

    server = await asyncio.start_server(smsc, "127.0.0.1", 0)
    try:
        link = await connect(server.sockets[0].getsockname()[1])
        futures = [link.try_submit(body()) for _ in range(3)]
        async with asyncio.timeout(5):
            results = await asyncio.gather(*(f for f in futures if f is not None))
            assert await link.wait_closed() is CloseReason.PEER_UNBIND
        assert answered_unbind.is_set()
        assert [r.status_class for r in results] == [StatusClass.SUCCESS] * 3
        assert all(r.message_id and not r.unknown for r in results)
    finally:
        server.close()


async def test_a_delivery_the_smsc_wrote_before_its_unbind_is_answered_first() -> None:
    """A deliver_sm and the SMSC's unbind in one segment: the handler stores it after the
    read, and its deliver_sm_resp still goes out, before the unbind_resp. Unanswered, the SMSC
    delivered it again on the next bind: a receipt or an MO told twice."""
    after_bind: list[int] = []
    read_to_the_end = asyncio.Event()

    async def smsc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, sequence = await read_frame(reader)
        writer.write(frame(CommandId.bind_transceiver_resp, 0, sequence, b"raw\0"))
        mo = encode_body(pdus.DeliverSm(source_addr="447700900123", short_message=b"hello"))
        writer.write(frame(CommandId.deliver_sm, 0, 41, mo) + frame(CommandId.unbind, 0, 42, b""))
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                after_bind.append((await read_frame(reader))[0])
        read_to_the_end.set()
        writer.close()

    async def stores(pdu: pdus.DeliverSm | pdus.DataSm) -> int:
        await asyncio.sleep(0)  # a store's write takes at least a turn of the loop
        return 0

    server = await asyncio.start_server(smsc, "127.0.0.1", 0)
    try:
        link = await connect(server.sockets[0].getsockname()[1], handler=stores)
        async with asyncio.timeout(5):
            assert await link.wait_closed() is CloseReason.PEER_UNBIND
            await read_to_the_end.wait()
        assert after_bind == [CommandId.deliver_sm_resp, CommandId.unbind_resp]
    finally:
        server.close()


async def test_graceful_close_waits_for_outstanding(smsc: FakeSmsc) -> None:
    """close() lets outstanding submits finish before it unbinds."""
    smsc.set_faults(latency_s=0.1)
    link = await connect(smsc.port)
    futures = [f for _ in range(5) if (f := link.try_submit(body()))]
    async with asyncio.timeout(3):
        assert await link.close() is CloseReason.UNBOUND
    results = [f.result() for f in futures]
    assert all(r.status_class is StatusClass.SUCCESS for r in results)
    assert smsc.connections[-1].state.value == "closed"


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The base image ships the openssl command; a machine without it fails here, loudly.
    assert shutil.which("openssl"), "the TLS tests need the openssl command (package openssl)"
    d = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=smsc.test",
        "-keyout", "smsc.key", "-out", "smsc.csr")  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=DNS:smsc.test\n")
    run("x509", "-req", "-in", "smsc.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "smsc.pem")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=smppd",
        "-keyout", "client.key", "-out", "client.csr")  # fmt: skip
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", "client.pem")  # fmt: skip
    return d


async def test_tls_with_configured_ca_and_server_hostname(
    smsc: FakeSmsc, certificates: Path
) -> None:
    """Over TLS the link verifies the SMSC against the configured CA and server_hostname."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "smsc.pem", certificates / "smsc.key")
    tls = TlsSettings(
        enabled=True, ca_file=str(certificates / "ca.pem"), server_hostname="smsc.test"
    )
    async with Tap(smsc.port, context) as tap:
        link = await connect(tap.port, tls=tls)
        assert (await link.submit(body())).status_class is StatusClass.SUCCESS
        await link.close()
        wrong = dataclasses.replace(tls, server_hostname="other.test")
        with pytest.raises(LinkError, match="Hostname mismatch"):  # what failed, not only that
            await connect(tap.port, tls=wrong)
        # One that cannot be encoded (config refuses it; the link must not raise past it).
        with pytest.raises(LinkError, match="label"):
            await connect(tap.port, tls=dataclasses.replace(tls, server_hostname="a..b"))


async def test_tls_client_certificate(smsc: FakeSmsc, certificates: Path) -> None:
    """An SMSC that requires a client certificate accepts the configured one and no other."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "smsc.pem", certificates / "smsc.key")
    context.load_verify_locations(certificates / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    tls = TlsSettings(
        enabled=True,
        ca_file=certificates / "ca.pem",
        server_hostname="smsc.test",
        cert_file=certificates / "client.pem",
        key_file=certificates / "client.key",
    )
    async with Tap(smsc.port, context) as tap:
        link = await connect(tap.port, tls=tls, bind_timeout_s=1.0)
        assert (await link.submit(body())).status_class is StatusClass.SUCCESS
        await link.close()
        without = dataclasses.replace(tls, cert_file=None, key_file=None)
        # Under TLS 1.3 the refusal comes as an alert after the handshake, which asyncio reads
        # as an end of the connection: "bind did not complete: connection_lost", no more.
        with pytest.raises(LinkError, match="a client certificate it refused or wants"):
            await connect(tap.port, tls=without, bind_timeout_s=1.0)


async def test_a_peer_closing_during_the_tls_handshake_is_said_so(certificates: Path) -> None:
    """asyncio raises a bare ConnectionResetError() then (a peer that takes no TLS 1.2 or
    later does the same): the log read "connect to 127.0.0.1:N: " with nothing after."""

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the ClientHello's first bytes
        writer.transport.abort()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tls = TlsSettings(enabled=True, ca_file=certificates / "ca.pem", server_hostname="smsc.test")
    try:
        with pytest.raises(LinkError, match="closed the connection during the TLS handshake"):
            await connect(port, tls=tls)
    finally:
        server.close()
        await server.wait_closed()


def test_a_tls_context_is_built_once_for_its_files(certificates: Path) -> None:
    """Built for every connect, it read the trust store on the event loop each time (18 ms for
    the system's): kept now, and built again when one of its files changes."""
    ca = certificates / "ca-copy.pem"
    ca.write_bytes((certificates / "ca.pem").read_bytes())
    tls = TlsSettings(enabled=True, ca_file=ca)
    first = tls_context(tls)
    assert first is not None
    assert tls_context(dataclasses.replace(tls)) is first
    stat = ca.stat()
    os.utime(ca, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = tls_context(tls)
    assert second is not first
    # Renewed and put in place with its old mtime kept (cp -p, rsync -t): a new file all the same.
    renewed = certificates / "renewed.pem"
    renewed.write_bytes(ca.read_bytes())
    kept = ca.stat()
    os.utime(renewed, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    renewed.replace(ca)
    assert tls_context(tls) is not second
    assert tls_context(TlsSettings()) is None


# --- observer -----------------------------------------------------------------------------------


async def test_observer_sees_states_and_results(smsc: FakeSmsc) -> None:
    """The observer hooks report state changes and each answered submit."""
    seen: list[tuple[str, object]] = []

    class Recorder(NullObserver):
        def state_changed(self, bind: str, state: State) -> None:
            seen.append(("state", state))

        def submit_ended(self, bind: str, result: SubmitResult, latency_s: float | None) -> None:
            assert latency_s is not None
            assert latency_s >= 0
            seen.append(("result", result.command_status))

    smsc.set_faults(submit_errors={"ESME_RINVDSTADR": 1.0})
    link = await Link.connect(settings(smsc.port), handler=accept, observer=Recorder())
    await link.submit(body())
    await link.close()
    assert seen == [
        ("state", State.BINDING),
        ("state", State.BOUND_TRX),
        ("result", S.ESME_RINVDSTADR),
        ("state", State.UNBINDING),
        ("state", State.CLOSED),
    ]


async def test_every_submit_ends_once_in_the_carrier_counts(smsc: FakeSmsc) -> None:
    """smppd_submits_total counts each submit once: answered by its status, timed out or lost
    with the connection as `unknown`; a late answer adds its latency, past the timeout, to
    smppd_submit_latency_seconds and nothing to the submits."""
    late = asyncio.Event()

    class Observer(CarrierObserver):
        def late_response(self, bind: str, *, accepted: bool, latency_s: float) -> None:
            super().late_response(bind, accepted=accepted, latency_s=latency_s)
            late.set()

    observer = Observer("fake")
    link = await Link.connect(
        settings(smsc.port, response_timeout_s=0.25, enquire_link_interval_s=30.0),
        handler=accept,
        observer=observer,
    )
    assert (await link.submit(body())).command_status == 0
    smsc.set_faults(latency_s=0.4)  # late, yet before the probe for it gives up on the bind
    assert (await link.submit(body())).unknown
    async with asyncio.timeout(2):
        await late.wait()
    assert dict(observer.submits) == {"ESME_ROK": 1, "unknown": 1}
    assert (observer.timeouts, observer.late, observer.late_accepted) == (1, 1, 1)
    assert observer.latency.count == 2
    assert observer.latency.total >= 0.4

    smsc.set_faults(latency_s=5.0)
    futures = [f for _ in range(3) if (f := link.try_submit(body()))]
    await smsc.records.wait_for(5, timeout=2, segments=True)
    smsc.drop()
    async with asyncio.timeout(2):
        assert all(r.unknown for r in await asyncio.gather(*futures))
        assert await link.wait_closed() is CloseReason.CONNECTION_LOST
    assert dict(observer.submits) == {"ESME_ROK": 1, "unknown": 4}
    assert observer.latency.count == 2


async def test_a_lost_submits_callback_goes_once_its_answer_would_be_too_late(
    smsc: FakeSmsc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a timed-out submit's late answer would reach (the send loop's segment) is let go
    when the session stops waiting for that answer (LATE_ANSWER_S), not at the bind's close: a
    long-lived bind losing a few answers an hour held them all. The answer, when it comes at
    last, is a stray and reaches nobody."""
    monkeypatch.setattr(smppd.session, "LATE_ANSWER_S", 0.3)
    strays = asyncio.Event()

    class Observer(NullObserver):
        def peer_error(self, bind: str) -> None:
            strays.set()

    link = await Link.connect(
        settings(smsc.port, response_timeout_s=0.1, enquire_link_interval_s=0.1),
        handler=accept,
        observer=Observer(),
    )
    results: list[SubmitResult] = []
    ended = asyncio.Event()

    class Callback:
        def __call__(self, result: SubmitResult) -> None:
            results.append(result)
            ended.set()

    callback = Callback()
    gone = weakref.ref(callback)
    smsc.set_faults(latency_s=1.0)  # this submit's answer comes after LATE_ANSWER_S
    assert link.try_send(body(), callback)
    del callback
    async with asyncio.timeout(2):
        await ended.wait()
    assert results[0].unknown
    smsc.set_faults(latency_s=0.0)  # the probes are answered at once: the bind stays up
    async with asyncio.timeout(3):
        await strays.wait()
    assert gone() is None
    assert len(results) == 1
    assert link.state is State.BOUND_TRX
    await link.close()


async def test_a_query_gets_the_smscs_state_of_a_message(smsc: FakeSmsc) -> None:
    """query_sm for a message the SMSC settled without a receipt (it lost it): its state and
    final date come back; one for an id it does not know, ESME_RINVMSGID; once the link has
    closed, a query is refused and one outstanding ends with no answer."""
    smsc.set_receipts(lost=1.0)
    link = await connect(smsc.port)
    try:
        submit = pdus.SubmitSm(
            source_addr="Acme", destination_addr="447700900123", registered_delivery=1
        )
        submitted = link.try_submit(encode_body(submit))
        assert submitted is not None
        result = await asyncio.wait_for(submitted, 5)
        assert result.message_id
        query = pdus.QuerySm(message_id=result.message_id, source_addr="Acme")
        pending = link.try_query(encode_body(query))
        assert pending is not None
        answered = await asyncio.wait_for(pending, 5)
        assert answered is not None
        assert answered.resp is not None
        assert (answered.command_status, answered.resp.message_state) == (0, 2)  # DELIVERED
        assert answered.resp.final_date.endswith("000+")
        unknown = link.try_query(encode_body(pdus.QuerySm(message_id="nope", source_addr="Acme")))
        assert unknown is not None
        answered = await asyncio.wait_for(unknown, 5)
        assert answered is not None
        assert answered.command_status == S.ESME_RINVMSGID
        smsc.set_faults(latency_s=30.0)
        lost = link.try_query(encode_body(query))
        assert lost is not None
    finally:
        link.abort()
    assert await asyncio.wait_for(lost, 5) is None
    assert link.try_query(encode_body(query)) is None
