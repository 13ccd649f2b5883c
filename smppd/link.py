"""One SMPP bind over a real connection: the thin asyncio shell around `smppd.session.Session`.

`Link` owns the socket (TCP, optionally TLS), the one timer the session asks for, the write
deadline, the result callbacks of the submits in flight, and the deliver handler's pending
answers. It moves bytes and time into the session and its events out: submit results handed
back, handlers started and answered, hooks of a `BindObserver` called. Foreign exceptions stop
here (OSError, ssl errors, timeouts become `LinkError`). It must not know the queue, the send
loop, the carrier's other binds or prometheus.

The hot path is one call per submit (`try_send`: no task, no future, no await), one call back
per result, and one write per loop iteration however many submits it carried.
"""

from __future__ import annotations

import asyncio
import functools
import math
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, cast

import structlog

from smppd.logsample import LogSample
from smppd.pdu import pdus
from smppd.pdu.command import CommandId
from smppd.pdu.status import CommandStatus, StatusClass, status_name
from smppd.ratelimit import AdaptiveRate, SlidingWindow
from smppd.session import (
    BindError,
    BindFailed,
    BindSettings,
    Bound,
    CloseReason,
    ConnectionShouldClose,
    DeliverReceived,
    LateResponse,
    LinkError,
    PeerError,
    QueryAnswered,
    ResponseTimedOut,
    Session,
    SessionClosedError,
    SlotsFreed,
    State,
    SubmitAnswered,
    SubmitResult,
    Throttled,
    Unbound,
)
from smppd.tlsctx import tls_context

log = structlog.get_logger(__name__)

DeliverHandler = Callable[[pdus.DeliverSm | pdus.DataSm], Awaitable[int]]

DEFAULT_MAX_HANDLERS: Final = 64  # deliver handlers running at once per bind
HAPPY_EYEBALLS_DELAY_S: Final = 0.25  # RFC 8305's connection attempt delay
BACKLOG_PER_HANDLER: Final = 16  # deliveries queued behind busy handlers before reading stops


class BindObserver(Protocol):
    """Hooks for metrics; `bind` names the bind (its index within the carrier, say)."""

    def state_changed(self, bind: str, state: State) -> None: ...
    # Once per submit: answered (latency_s to the answer) or unknown (no answer in time, or
    # the connection went first; latency_s None). A late answer comes after, as late_response.
    def submit_ended(self, bind: str, result: SubmitResult, latency_s: float | None) -> None: ...
    def response_timed_out(self, bind: str) -> None: ...
    def late_response(self, bind: str, *, accepted: bool, latency_s: float) -> None: ...
    def throttled(self, bind: str, command_status: int, tps: float | None) -> None: ...
    def peer_error(self, bind: str) -> None: ...
    def handler_failed(self, bind: str) -> None: ...
    def bind_failed(self, bind: str, command_status: int, permanent: bool) -> None: ...
    def disconnected(self, bind: str, reason: str) -> None: ...
    def reconnect_scheduled(self, bind: str, reason: str, delay_s: float) -> None: ...


class NullObserver:
    """A BindObserver that observes nothing."""

    def state_changed(self, bind: str, state: State) -> None:
        pass

    def submit_ended(self, bind: str, result: SubmitResult, latency_s: float | None) -> None:
        pass

    def response_timed_out(self, bind: str) -> None:
        pass

    def late_response(self, bind: str, *, accepted: bool, latency_s: float) -> None:
        pass

    def throttled(self, bind: str, command_status: int, tps: float | None) -> None:
        pass

    def peer_error(self, bind: str) -> None:
        pass

    def handler_failed(self, bind: str) -> None:
        pass

    def bind_failed(self, bind: str, command_status: int, permanent: bool) -> None:
        pass

    def disconnected(self, bind: str, reason: str) -> None:
        pass

    def reconnect_scheduled(self, bind: str, reason: str, delay_s: float) -> None:
        pass


def _why(exc: BaseException, *, tls: bool = False) -> str:
    """Why a connection failed, never an empty string: asyncio's TLS layer raises a bare
    ConnectionResetError() when the peer closes during the handshake (as one does that takes
    no TLS 1.2 or later, or no TLS at all)."""
    if text := str(exc):  # an SSLError's names its reason and what failed (hostname mismatch)
        return text
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"TLS {exc.reason}"
    if tls and isinstance(exc, ConnectionError):
        return "the SMSC closed the connection during the TLS handshake (its TLS version or setup?)"
    return type(exc).__name__


class Link(asyncio.Protocol):
    """One connection and its bind. Build with `await Link.connect(...)`; it is bound on return
    or the call raised. After the connection ends the link is spent: make a new one."""

    def __init__(
        self,
        settings: BindSettings,
        *,
        handler: DeliverHandler,
        name: str = "",
        carrier: str = "",
        observer: BindObserver | None = None,
        carrier_rate: SlidingWindow | None = None,
        bind_rate: AdaptiveRate | None = None,
        on_ready: Callable[[], None] | None = None,
        max_handlers: int = DEFAULT_MAX_HANDLERS,
        first_sequence_number: int = 1,
    ) -> None:
        self.settings = settings
        self.name = name
        self._log = log.bind(carrier=carrier, bind=name) if carrier else log.bind(bind=name)
        self._core = Session(
            settings,
            carrier_rate=carrier_rate,
            rate=bind_rate,
            first_sequence_number=first_sequence_number,
            name=name,
        )
        self._handler = handler
        self._observer: BindObserver = observer or NullObserver()
        self._on_ready = on_ready
        self._max_handlers = max_handlers
        self._loop = asyncio.get_running_loop()
        self._log_sample = LogSample()
        self._transport: asyncio.Transport | None = None
        # Sequence number -> what gets its result: a callback, not a future, so that a result
        # costs one call rather than a future, a done callback and an event-loop turn.
        self._results: dict[int, Callable[[SubmitResult], None]] = {}
        self._unknown = SubmitResult.outcome_unknown(name)
        self._timed_out = SubmitResult.outcome_unknown(name, answer_due=True)
        # Timed-out submits whose answer may still come: an acceptance then reaches on_result
        # a second time, as a late result, so that the segment is not sent again.
        self._late: dict[int, Callable[[SubmitResult], None]] = {}
        self._queries: dict[int, asyncio.Future[QueryAnswered | None]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._bound: asyncio.Future[None] = self._loop.create_future()
        # A bind that fails with no one awaiting it (the connect was cancelled) is logged by
        # the link already; mark it seen, so the loop does not report it again at collection.
        self._bound.add_done_callback(_seen)
        self._closed: asyncio.Future[CloseReason] = self._loop.create_future()
        self._close_reason: CloseReason | None = None
        self._lost_because: Exception | None = None
        self._state = State.OPEN
        self._flush_scheduled = False
        self._process_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._write_paused = False
        self._write_timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        self._handlers: set[asyncio.Future[int]] = set()
        self._backlog: deque[pdus.DeliverSm | pdus.DataSm] = deque()
        self._backlog_full = False  # reading waits until handlers take the backlog below half
        self._reading_paused = False
        self.late_responses = 0
        self.peer_errors = 0
        self.throttle_events = 0

    @classmethod
    async def connect(
        cls,
        settings: BindSettings,
        *,
        handler: DeliverHandler,
        name: str = "",
        carrier: str = "",
        observer: BindObserver | None = None,
        carrier_rate: SlidingWindow | None = None,
        bind_rate: AdaptiveRate | None = None,
        on_ready: Callable[[], None] | None = None,
        max_handlers: int = DEFAULT_MAX_HANDLERS,
        first_sequence_number: int = 1,
    ) -> Link:
        """Connect and bind; raises `LinkError` (network, TLS, timeouts) or `BindError`."""
        link = cls(
            settings,
            handler=handler,
            name=name,
            carrier=carrier,
            observer=observer,
            carrier_rate=carrier_rate,
            bind_rate=bind_rate,
            on_ready=on_ready,
            max_handlers=max_handlers,
            first_sequence_number=first_sequence_number,
        )
        await link._open()
        return link

    async def _open(self) -> None:
        s = self.settings
        try:
            context = tls_context(s.tls)
            hostname = (s.tls.server_hostname or s.host) if context is not None else None
            if hostname is not None:
                hostname.encode("idna")  # as ssl will, but before a socket is opened for it
            async with asyncio.timeout(s.connect_timeout_s):
                # A name with several addresses: the next is tried 250 ms after the one before
                # (RFC 8305), not once the first has used up the whole timeout.
                await self._loop.create_connection(
                    lambda: self,
                    s.host,
                    s.port,
                    ssl=context,
                    server_hostname=hostname,
                    happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S,
                )
        except TimeoutError:
            raise LinkError(f"connect to {s.address}: no answer in time") from None
        except OSError as exc:  # refused, unreachable, TLS files or handshake (SSLError too)
            raise LinkError(f"connect to {s.address}: {_why(exc, tls=s.tls.enabled)}") from exc
        except ValueError as exc:  # a name TLS cannot encode (IDNA: an empty label, say)
            raise LinkError(f"connect to {s.address}: {exc}") from None
        try:
            await self._bound
        except BaseException:
            self.abort()
            raise

    # --- what the send loop uses ---------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._core.state

    @property
    def closed(self) -> bool:
        return self._closed.done()

    @property
    def in_flight(self) -> int:
        return self._core.in_flight

    @property
    def room(self) -> int:
        """Free window slots (0 when the bind cannot submit at all)."""
        return 0 if self._write_paused else self._core.room

    def ready_at(self, now: float) -> float | None:
        """When try_send could next succeed (see Session.ready_at)."""
        return None if self._write_paused else self._core.ready_at(now=now)

    def try_send(self, body: bytes, on_result: Callable[[SubmitResult], None]) -> bool:
        """Send an encoded submit_sm body; False when the window is full, the bind is not bound
        or a rate holds it back. Once sent, `on_result` is called exactly once, never from
        within this call, with the result (an unknown outcome at worst)."""
        if self._write_paused:
            return False
        now = self._loop.time()
        seq = self._core.try_submit(body, now=now)
        if seq is None:
            return False
        self._results[seq] = on_result
        self._request_queued(now)
        return True

    def _request_queued(self, now: float) -> None:
        """A request is in the session's output: written this tick, timed from `now`."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        if now + self.settings.response_timeout_s < self._timer_at:
            self._arm_timer()

    def try_submit(self, body: bytes) -> asyncio.Future[SubmitResult] | None:
        """try_send() with a future for the result; None when it could not be sent."""
        future: asyncio.Future[SubmitResult] = self._loop.create_future()
        return future if self.try_send(body, functools.partial(resolve, future)) else None

    def try_query(self, body: bytes) -> asyncio.Future[QueryAnswered | None] | None:
        """Send an encoded query_sm body; None when the bind cannot (not bound, a receiver,
        closing). The future ends with its answer, or None when the link closed first."""
        if self._write_paused:
            return None
        now = self._loop.time()
        seq = self._core.try_query(body, now=now)
        if seq is None:
            return None
        future: asyncio.Future[QueryAnswered | None] = self._loop.create_future()
        self._queries[seq] = future
        self._request_queued(now)
        return future

    async def wait_ready(self) -> None:
        """Return when try_send could succeed, or once the link has closed."""
        loop = self._loop
        while not self._closed.done():
            now = loop.time()
            at = self.ready_at(now)
            if at is not None and at <= now:
                return
            waiter = loop.create_future()
            self._waiters.append(waiter)
            timer = None if at is None else loop.call_at(at, self._wake)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()

    async def submit(self, body: bytes) -> SubmitResult:
        """Wait for room, send, and return the result; SessionClosedError if the link closes
        before the body could be sent."""
        while True:
            future = self.try_submit(body)
            if future is not None:
                return await future
            if self._closed.done():
                raise SessionClosedError(f"bind {self.name or '-'} closed")
            await self.wait_ready()

    async def wait_closed(self) -> CloseReason:
        """Wait until the connection has ended (and its deliver handlers have finished)."""
        reason = await asyncio.shield(self._closed)
        await self._finish_handlers()
        return reason

    async def close(self, timeout_s: float | None = None) -> CloseReason:
        """Graceful close: no new submits, outstanding ones answered (up to `timeout_s`, by
        default response_timeout_s), unbind, close; handlers finish or are cancelled."""
        s = self.settings
        drain_s = s.response_timeout_s if timeout_s is None else timeout_s
        if not self._closed.done():
            self._core.close(now=self._loop.time(), drain_timeout_s=drain_s)
            self._process()
            try:
                async with asyncio.timeout(drain_s + s.unbind_timeout_s + 1.0):
                    await asyncio.shield(self._closed)
            except TimeoutError:
                self.abort()
        return await self.wait_closed()

    def abort(self) -> None:
        """Drop the connection now; everything outstanding ends as an unknown outcome."""
        if self._transport is not None:
            self._transport.abort()
        else:
            self._core.connection_lost()
            self._process()

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not necessarily an asyncio.Transport subclass (uvloop's).
        self._transport = cast(asyncio.Transport, transport)
        self._core.start_bind(now=self._loop.time())
        self._process()

    def data_received(self, data: bytes) -> None:
        self._core.receive_data(data, now=self._loop.time())
        self._process()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost_because = exc  # a TLS alert (a client certificate refused), a reset
        self._core.connection_lost()
        self._process()
        self._transport = None
        for timer in (self._timer, self._write_timer, self._abort_timer):
            if timer is not None:
                timer.cancel()
        self._timer_at = math.inf
        if not self._closed.done():
            self._closed.set_result(self._close_reason or CloseReason.CONNECTION_LOST)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._write_timer = self._loop.call_later(
            self.settings.response_timeout_s, self._write_timed_out
        )
        # The peer is not reading: what it sends meanwhile would only queue more answers.
        self._set_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        self._set_reading()
        self._wake()

    def _set_reading(self) -> None:
        """Read unless a full deliver backlog or a peer that does not read ours holds it."""
        paused = self._write_paused or self._backlog_full
        if paused != self._reading_paused and self._transport is not None:
            self._reading_paused = paused
            if paused:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    # --- internals -----------------------------------------------------------------------------

    def _write_timed_out(self) -> None:
        # The SMSC has not read our bytes for a response timeout: no answer can come in time.
        self._core.abort(CloseReason.WRITE_TIMEOUT)
        self._process()

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self._core.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)

    def _process(self) -> None:
        """Act on the session's events, write what it has to send, re-arm its timer."""
        core = self._core
        freed = False
        while (event := core.next_event()) is not None:
            if isinstance(event, SubmitAnswered):
                on_result = self._results.pop(event.sequence_number, None)
                if on_result is not None:
                    self._give(on_result, event.result)
                if not event.result.message_id and event.result.command_status == 0:
                    self._accepted_without_id()
                self._observer.submit_ended(self.name, event.result, event.latency_s)
                freed = True
            elif isinstance(event, DeliverReceived):
                self._deliver(event.pdu)
            elif isinstance(event, LateResponse | SlotsFreed):
                self._other_event(event)
                freed = True  # a slot a timed-out submit held is free
            elif isinstance(event, ResponseTimedOut):
                seq = event.sequence_number
                on_result = self._resolve_unknown(seq, self._timed_out)
                if on_result is not None:
                    self._late[seq] = on_result
                self._observer.response_timed_out(self.name)
                self._observer.submit_ended(self.name, self._timed_out, None)
                freed = True
            else:
                self._other_event(event)
        if self._late:
            self._forget_late()
        if core.state is not self._state:
            self._state = core.state
            self._observer.state_changed(self.name, self._state)
            freed = True
        data = core.data_to_send()
        transport = self._transport
        if data and transport is not None:
            transport.write(data)
        if self._close_reason is not None:
            if transport is not None and not transport.is_closing():
                if self._close_reason is CloseReason.WRITE_TIMEOUT:
                    transport.abort()
                else:
                    transport.close()
                    self._abort_timer = self._loop.call_later(
                        self.settings.unbind_timeout_s, transport.abort
                    )
        else:
            deadline = core.next_deadline()
            if deadline is not None and deadline < self._timer_at:
                self._arm_timer(deadline)
        if freed:
            self._wake()

    def _forget_late(self) -> None:
        """Let go of the late-answer callbacks the session no longer waits for: both are in the
        order the submits timed out, and the session forgets the oldest first (by age, count)."""
        late, core = self._late, self._core
        while late and not core.answer_may_come(first := next(iter(late))):
            del late[first]

    def _query_answered(self, event: QueryAnswered) -> None:
        query = self._queries.pop(event.sequence_number, None)
        if query is not None and not query.done():
            query.set_result(event)

    def _end_queries(self) -> None:
        """The link is closing: its queries' answers cannot come."""
        queries, self._queries = self._queries, {}
        for query in queries.values():
            if not query.done():
                query.set_result(None)

    def _should_close(self, event: ConnectionShouldClose) -> None:
        name = self.name
        self._close_reason = event.reason
        for seq in event.abandoned:
            self._resolve_unknown(seq)
            self._observer.submit_ended(name, self._unknown, None)
        for seq in list(self._results):  # none should be left; never leave one waiting
            self._resolve_unknown(seq)
        self._end_queries()
        self._late.clear()  # answers come on the connection that carried the submit
        self._observer.disconnected(name, event.reason.value)
        if not self._bound.done():
            self._bound.set_exception(
                LinkError(f"bind did not complete: {self._unbound_why(event)}")
            )
        if event.reason is CloseReason.REQUESTS_UNANSWERED:
            self._log.warning(
                "smsc stopped answering requests; dropping the bind",
                reason=event.reason.value,
            )
        else:
            self._log.info("bind closing", reason=event.reason.value)

    def _unbound_why(self, event: ConnectionShouldClose) -> str:
        """Why the bind did not complete. Under TLS 1.3 a server refuses a client certificate
        (or the lack of one) after the handshake, and asyncio reads its alert as a plain end of
        the connection: that case is named, as it looks like an SMPP fault otherwise."""
        if (lost := self._lost_because) is not None:
            return f"{event.reason} ({_why(lost)})"
        if event.reason is CloseReason.CONNECTION_LOST and self.settings.tls.enabled:
            return (
                f"{event.reason} (the SMSC closed the connection before answering the bind:"
                " over TLS, a client certificate it refused or wants?)"
            )
        return str(event.reason)

    def _other_event(self, event: object) -> None:
        name = self.name
        if isinstance(event, QueryAnswered):
            self._query_answered(event)
        elif isinstance(event, Throttled):
            self.throttle_events += 1
            self._observer.throttled(name, event.command_status, event.tps)
            self._log.warning(
                "smsc asked to slow down",
                status=status_name(event.command_status),
                tps=None if event.tps is None else round(event.tps, 2),
                pause_s=round(event.paused_until - self._loop.time(), 3),
            )
        elif isinstance(event, LateResponse):
            self.late_responses += 1
            on_result = self._late.pop(event.sequence_number, None)
            accepted = event.command_id == CommandId.submit_sm_resp and event.command_status == 0
            self._observer.late_response(name, accepted=accepted, latency_s=event.latency_s)
            if on_result is not None and accepted:
                self._give(
                    on_result,
                    SubmitResult(event.message_id, 0, StatusClass.SUCCESS, bind=name, late=True),
                )
        elif isinstance(event, SlotsFreed):
            self._log.info("timed-out submits given up as lost", submits=event.count)
        elif isinstance(event, PeerError):
            self.peer_errors += 1
            self._observer.peer_error(name)
            # Sampled by the fixed reason: what the peer wrote varies as it pleases.
            left_out = self._log_sample.allow(event.reason, self._loop.time())
            if left_out is not None:  # a peer can send these as fast as it writes bytes
                self._log.info(
                    "smsc protocol error survived",
                    reason=event.reason,
                    **({"detail": event.detail} if event.detail else {}),
                    command_id=None if event.command_id is None else f"0x{event.command_id:08x}",
                    sequence_number=event.sequence_number,
                    **({"same_since_last_line": left_out} if left_out else {}),
                )
        elif isinstance(event, Bound):
            version = event.interface_version
            self._log.info(
                "bound",
                address=self.settings.address,
                state=event.state.name,
                smsc=event.system_id,
                interface_version=None if version is None else f"0x{version:02x}",
            )
            needs = self.settings.needs_tlvs
            if needs and version is not None and version < pdus.INTERFACE_VERSION:
                self._log.warning(
                    "the smsc says it takes no TLVs (SMPP before 3.4), which"
                    f" {needs} needs: long messages may not arrive whole",
                    interface_version=f"0x{version:02x}",
                )
            if not self._bound.done():
                self._bound.set_result(None)
        elif isinstance(event, BindFailed):
            self._observer.bind_failed(name, event.command_status, event.permanent)
            if not self._bound.done():
                self._bound.set_exception(BindError(event.command_status))
        elif isinstance(event, Unbound):
            self._log.info("unbound", by_smsc=event.by_peer)
        elif isinstance(event, ConnectionShouldClose):
            self._should_close(event)

    def _accepted_without_id(self) -> None:
        left_out = self._log_sample.allow("accepted without id", self._loop.time())
        if left_out is not None:
            self._log.warning(
                "smsc accepted a submit with no usable message_id: no receipt can match it",
                **({"same_since_last_line": left_out} if left_out else {}),
            )

    def _resolve_unknown(
        self, seq: int, result: SubmitResult | None = None
    ) -> Callable[[SubmitResult], None] | None:
        """Give `seq`'s waiter an unknown outcome (`result`, or lost with the connection);
        the waiter, if there was one."""
        on_result = self._results.pop(seq, None)
        if on_result is not None:
            self._give(on_result, result or self._unknown)
        return on_result

    def _give(self, on_result: Callable[[SubmitResult], None], result: SubmitResult) -> None:
        # A failing callback must not stop the events after it, as a future's would not.
        try:
            on_result(result)
        except Exception as exc:
            self._loop.call_exception_handler(
                {"message": "submit result callback failed", "exception": exc}
            )

    def _arm_timer(self, deadline: float | None = None) -> None:
        if deadline is None:
            deadline = self._core.next_deadline()
            if deadline is None:
                return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._on_timer)
        self._timer_at = deadline

    def _on_timer(self) -> None:
        # The loop may run a timer a hair early; the deadline it was armed for has come.
        now = max(self._loop.time(), self._timer_at)
        self._timer = None
        self._timer_at = math.inf
        self._core.handle_timer(now=now)
        self._process()

    def _wake(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        if self._on_ready is not None:
            self._on_ready()

    # --- deliver_sm / data_sm ------------------------------------------------------------------

    def _deliver(self, pdu: pdus.DeliverSm | pdus.DataSm) -> None:
        if len(self._handlers) < self._max_handlers:
            self._start_handler(pdu)
            return
        # Every handler is busy: queue it. The SMSC's own window bounds what it sends before we
        # answer, so reading goes on (submit answers keep flowing); only an SMSC that ignores
        # its window fills the queue, and then reading stops until handlers have taken it
        # below half (resumed at each one, every read would add thousands for one taken).
        self._backlog.append(pdu)
        if not self._backlog_full and len(self._backlog) >= self._backlog_limit:
            self._backlog_full = True
            self._set_reading()

    def _start_handler(self, pdu: pdus.DeliverSm | pdus.DataSm) -> None:
        try:
            # A handler that answers through a future (receipts do) runs without a task.
            pending = asyncio.ensure_future(self._handler(pdu), loop=self._loop)
        except Exception as exc:  # raised before it could wait for anything
            self._answer(pdu, self._handler_failed(pdu, type(exc).__name__, str(exc)))
            return
        self._handlers.add(pending)
        pending.add_done_callback(functools.partial(self._handler_done, pdu))

    def _handler_done(
        self, pdu: pdus.DeliverSm | pdus.DataSm, pending: asyncio.Future[int]
    ) -> None:
        self._handlers.discard(pending)
        if not pending.cancelled():  # cancelled only once the connection is going away
            error = pending.exception()
            if error is not None:  # answered as a temporary error so the SMSC redelivers it
                status = self._handler_failed(pdu, type(error).__name__, str(error))
            else:
                status = pending.result()
                if not (isinstance(status, int) and 0 <= status <= 0xFFFFFFFF):
                    status = self._handler_failed(pdu, "ValueError", "not a command_status")
            self._answer(pdu, status)
        while self._backlog and len(self._handlers) < self._max_handlers:
            self._start_handler(self._backlog.popleft())
        if self._backlog_full and len(self._backlog) <= self._backlog_limit // 2:
            self._backlog_full = False
            self._set_reading()

    @property
    def _backlog_limit(self) -> int:
        return self._max_handlers * BACKLOG_PER_HANDLER

    def _answer(self, pdu: pdus.DeliverSm | pdus.DataSm, status: int) -> None:
        self._core.answer(pdu, status, now=self._loop.time())
        # Handlers done together (one receipt batch) share one write of their responses.
        if not self._process_scheduled:
            self._process_scheduled = True
            self._loop.call_soon(self._process_answers)

    def _process_answers(self) -> None:
        self._process_scheduled = False
        self._process()

    def _handler_failed(self, pdu: pdus.DeliverSm | pdus.DataSm, kind: str, error: str) -> int:
        self._observer.handler_failed(self.name)
        # Sampled by the error's type: while the store fails (a full disk) every receipt, MO
        # and redelivery of them fails alike, thousands a second.
        left_out = self._log_sample.allow(("handler failed", kind), self._loop.time())
        if left_out is not None:
            self._log.warning(
                "deliver handler failed; answering ESME_RX_T_APPN",
                command=type(pdu).__name__,
                error=f"{kind}: {error}",
                **({"same_since_last_line": left_out} if left_out else {}),
            )
        return CommandStatus.ESME_RX_T_APPN

    async def _finish_handlers(self) -> None:
        """Let running handlers finish (their answers cannot be sent any more, so the SMSC will
        redeliver); past a response timeout they are cancelled."""
        self._backlog.clear()
        if not self._handlers:
            return
        pending = set(self._handlers)
        _, late = await asyncio.wait(pending, timeout=self.settings.response_timeout_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)


def resolve(future: asyncio.Future[SubmitResult], result: SubmitResult) -> None:
    """Give a future its submit result, unless it was cancelled meanwhile."""
    if not future.done():
        future.set_result(result)


def _seen(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
