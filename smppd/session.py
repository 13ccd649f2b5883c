"""The protocol state of one SMPP bind, sans-IO: bytes and `now` in, events and bytes out.

`Session` owns what SMPP v3.4 asks of an ESME on one connection: the bind handshake, sequence
numbers, the window of outstanding submit_sm, response timeouts, enquire_link, answering the
SMSC's requests, unbind, and the bind's rate (its own adaptive cap and an optional cap shared by
the carrier's binds). It never touches a socket, a clock or asyncio: the caller feeds received
bytes with `receive_data(data, now=...)`, sends what `data_to_send()` returns, arms one timer at
`next_deadline()` and calls `handle_timer(now=...)` when it fires, and reads `next_event()`.
It must not know the queue, the send loop or how a message body was built.

Every submit ends in exactly one of `SubmitAnswered`, `ResponseTimedOut`, or the `abandoned`
tuple of the `ConnectionShouldClose` that ends the session; nothing waits forever.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Final

from smppd.errors import SmppdError
from smppd.pdu import pdus
from smppd.pdu import tlv as _tlv
from smppd.pdu.codec import (
    DEFAULT_MAX_COMMAND_LENGTH,
    HEADER,
    HEADER_SIZE,
    decode_body,
    encode,
    frame,
)
from smppd.pdu.command import CommandId, is_response
from smppd.pdu.errors import DecodeError
from smppd.pdu.status import CommandStatus, StatusClass, StatusPolicy, status_name
from smppd.pdu.tlv import Tag
from smppd.ratelimit import AdaptiveRate, SlidingWindow
from smppd.record import record

MAX_SEQUENCE_NUMBER: Final = 0x7FFFFFFF  # SMPP v3.4 5.1.4: 0x00000001..0x7FFFFFFF
TIMED_OUT_MEMORY: Final = 65_536  # timed-out numbers remembered, to tell late from stray answers
# How long after its sending a timed-out submit's answer is still taken as late, not stray (or
# HOLD_TIMED_OUT + 1 response timeouts, if longer: its slot is held that long, and the segment
# goes out again one timeout after it timed out). By then a late acceptance would not settle it;
# remembering longer only holds memory, on a bind losing a few answers an hour.
LATE_ANSWER_S: Final = 600.0
# A submit that timed out keeps its window slot this many response timeouts from its sending:
# the SMSC counts it as outstanding until it answers, and a window refilled at each timeout put
# twice the window into a slow SMSC (which throttles or refuses what is over its window). Not
# longer: a submit an SMSC lost for good would hold its slot that long, and an SMSC that answers
# nothing for a second timeout is dropped by the probe anyway.
HOLD_TIMED_OUT: Final = 2
# Submits lost (no answer in HOLD_TIMED_OUT timeouts) with no other submit answered between
# them, past which the bind is dropped: an SMSC that answers enquire_link but swallows every
# submit (a stuck node) would otherwise keep it for ever, each submit spending an attempt
# while the carrier's other addresses go untried. One that answers late keeps its bind.
LOST_IN_A_ROW: Final = 3

_BODILESS_REQUESTS: Final = frozenset({int(CommandId.enquire_link), int(CommandId.unbind)})

# Bind answers that retrying soon will not heal (credentials, account, system_type). Not
# ESME_RBINDFAIL: SMSCs give that catch-all for "too many sessions" too, as while they still
# hold the sessions of a connection that dropped, which a normal back-off outlasts.
PERMANENT_BIND_FAILURES: Final = frozenset(
    {
        CommandStatus.ESME_RINVPASWD,
        CommandStatus.ESME_RINVSYSID,
        CommandStatus.ESME_RINVSYSTYP,
    }
)


# --- errors -----------------------------------------------------------------------------------


class SessionError(SmppdError):
    """Base class of the errors of a bind (the session, its link and the carrier's binds)."""


class BindError(SessionError):
    """The SMSC refused the bind with `command_status`; `permanent` when retrying won't heal it."""

    def __init__(self, command_status: int) -> None:
        self.command_status = command_status
        self.permanent = command_status in PERMANENT_BIND_FAILURES
        super().__init__(f"bind refused: {status_name(command_status)}")


class LinkError(SessionError):
    """The connection could not be made, or was lost or timed out before the bind completed."""


class SessionClosedError(SessionError):
    """The bind closed before the request could be sent (it was not sent)."""


class LocalProtocolError(SessionError):
    """We asked the session for something SMPP does not allow in its state (our bug)."""


# --- settings ---------------------------------------------------------------------------------


class BindMode(StrEnum):
    TRANSCEIVER = "transceiver"
    TRANSMITTER = "transmitter"
    RECEIVER = "receiver"


# How a carrier's receiver_binds are named (rx0, rx1, ...), its other binds being 0, 1, ...
RECEIVER_BIND_PREFIX: Final = "rx"


@record(kw_only=True)
class TlsSettings:
    enabled: bool = False
    ca_file: str | Path | None = None  # None: the system's trust store
    cert_file: str | Path | None = None  # client certificate, with key_file
    key_file: str | Path | None = None
    verify_hostname: bool = True
    server_hostname: str | None = None  # None: the host connected to


@record(kw_only=True)
class ReconnectSettings:
    initial_s: float = 1.0
    max_s: float = 60.0
    auth_failure_s: float = 300.0  # after a bind refused for credentials
    # A bind held on another address than its own (host:port, or with spread_binds its share)
    # goes back after this long, one bind of the carrier at a time (None: it stays where it is).
    primary_after_s: float | None = None


_BIND_FIELD_SIZES: Final = (
    ("system_id", 15),
    ("password", 8),
    ("system_type", 12),
    ("address_range", 40),
)


@record(kw_only=True)
class BindSettings:
    host: str
    port: int
    alternates: tuple[tuple[str, int], ...] = ()  # other (host, port)s of the SMSC, in turn
    # Bind i starts at (and goes back to) address i mod the addresses, not host:port.
    spread_binds: bool = False
    system_id: str
    password: str = field(repr=False)
    system_type: str = ""
    bind_mode: BindMode = BindMode.TRANSCEIVER
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    window: int = 10
    bind_tps: float | None = None
    enquire_link_interval_s: float = 30.0
    response_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    bind_timeout_s: float = 10.0
    unbind_timeout_s: float = 5.0
    reconnect: ReconnectSettings = field(default_factory=ReconnectSettings)
    throttle_backoff_s: float = 1.0
    tls: TlsSettings = field(default_factory=TlsSettings)
    max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH
    # What the carrier's configuration sends in TLVs (e.g. "concatenation: sar"), for a warning
    # when an SMSC says it takes none; empty when nothing depends on them.
    needs_tlvs: str = ""
    # How the carrier's submit answers are read (its own codes where they differ from the spec).
    statuses: StatusPolicy = field(default_factory=StatusPolicy)

    @property
    def address(self) -> str:
        """host:port, for logs ([host]:port for an IPv6 one)."""
        host = self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def __post_init__(self) -> None:
        # SMPP v3.4 4.1.1: C-string sizes without the NUL; checked here so a bind can be encoded.
        for name, size in _BIND_FIELD_SIZES:
            value = getattr(self, name)
            if len(value) > size or not value.isascii():
                raise ValueError(f"{name} must be at most {size} ASCII characters")
        if self.window < 1:
            raise ValueError("window must be at least 1")
        if self.bind_tps is not None and not self.bind_tps > 0:
            raise ValueError("bind_tps must be positive or None")
        if self.max_command_length < HEADER_SIZE:
            raise ValueError("max_command_length must be at least 16")
        for name in (
            "enquire_link_interval_s",
            "response_timeout_s",
            "connect_timeout_s",
            "bind_timeout_s",
            "unbind_timeout_s",
            "throttle_backoff_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


# --- results and events -----------------------------------------------------------------------


@record
class SubmitResult:
    """How a submit_sm ended. `unknown`: no answer (timeout, connection lost), so the SMSC may or
    may not have taken it; such a result carries ESME_RUNKNOWNERR and no status_class, so that a
    check of `command_status == 0` never mistakes it for success."""

    message_id: str | None
    command_status: int
    status_class: StatusClass | None
    unknown: bool = False
    bind: str = ""  # which bind answered: receipts may have to be matched per bind
    # Unknown because no answer came in time, on a bind still up: it may yet come, late.
    answer_due: bool = False
    # The late acceptance of a submit whose result was unknown (answer_due) before.
    late: bool = False
    # The answer asks to slow down (ESME_RTHROTTLED, or a code the carrier's StatusPolicy
    # reads so): for the metrics, which count these apart from errors.
    throttling: bool = False
    # It is about the bind's rate alone (StatusPolicy.pacing): retried with no attempt spent.
    pacing: bool = False

    @classmethod
    def outcome_unknown(cls, bind: str = "", *, answer_due: bool = False) -> SubmitResult:
        status = CommandStatus.ESME_RUNKNOWNERR
        return cls(None, status, None, unknown=True, bind=bind, answer_due=answer_due)


class CloseReason(StrEnum):
    UNBOUND = "unbound"  # our unbind was answered
    PEER_UNBIND = "peer_unbind"
    BIND_FAILED = "bind_failed"
    BIND_TIMEOUT = "bind_timeout"
    ENQUIRE_LINK_TIMEOUT = "enquire_link_timeout"
    # A submit and then an enquire_link timed out, or LOST_IN_A_ROW submits were lost.
    REQUESTS_UNANSWERED = "requests_unanswered"
    UNBIND_TIMEOUT = "unbind_timeout"
    FRAMING_LOST = "framing_lost"
    CLOSED_BEFORE_BOUND = "closed_before_bound"
    CONNECTION_LOST = "connection_lost"
    WRITE_TIMEOUT = "write_timeout"  # the peer stopped reading our bytes (the link decides)


@record
class Bound:
    state: State
    system_id: str  # the SMSC's, from the bind resp
    # Its sc_interface_version TLV; None (absent) or below 0x34 says it takes no TLVs (SMPP
    # v3.4 5.3.2.25), so SAR or message_payload concatenation may not reach the handset.
    interface_version: int | None = None


@record
class BindFailed:
    command_status: int
    permanent: bool


@record
class SubmitAnswered:
    sequence_number: int
    result: SubmitResult
    latency_s: float


@record
class ResponseTimedOut:
    sequence_number: int


@record
class QueryAnswered:
    """How a query_sm of ours ended: its query_sm_resp (`resp`, whatever its status), a
    generic_nack (`command_status` only), or no answer in time (`command_status` None)."""

    sequence_number: int
    command_status: int | None
    resp: pdus.QuerySmResp | None = None


@record
class DeliverReceived:
    """A deliver_sm or data_sm (receipt or MO) to hand on; answer it with `Session.answer`."""

    sequence_number: int
    pdu: pdus.DeliverSm | pdus.DataSm


@record
class Throttled:
    """The SMSC said slow down: sending pauses until `paused_until`, then runs at `tps`."""

    command_status: int
    tps: float | None
    paused_until: float


@record
class LateResponse:
    """An answer to a request that had already timed out (never matched to another). For a
    submit, its status and message_id: an accepted one need not be sent again."""

    command_id: int
    sequence_number: int
    command_status: int = 0
    message_id: str | None = None
    latency_s: float = 0.0  # from the submit to this answer


@record
class SlotsFreed:
    """Window slots that timed-out submits held were given up: no answer came in
    HOLD_TIMED_OUT response timeouts, so the SMSC lost them."""

    count: int


@record
class PeerError:
    """The SMSC broke the protocol in a way the session survived (counted, not fatal).

    `reason` is one of a few fixed texts (what logging is sampled by); `detail` says what the
    peer sent, in its own values."""

    reason: str
    command_id: int | None
    sequence_number: int | None
    detail: str = ""


@record
class Unbound:
    by_peer: bool


@record
class ConnectionShouldClose:
    """The session is over: close the transport after sending `data_to_send()`. The outcome of
    every submit still outstanding (`abandoned`) is unknown."""

    reason: CloseReason
    abandoned: tuple[int, ...] = ()


Event = (
    Bound
    | BindFailed
    | SubmitAnswered
    | ResponseTimedOut
    | QueryAnswered
    | DeliverReceived
    | Throttled
    | LateResponse
    | SlotsFreed
    | PeerError
    | Unbound
    | ConnectionShouldClose
)


# --- states -----------------------------------------------------------------------------------


class State(Enum):
    """SMPP v3.4 2.2 session states (UNBINDING: our unbind sent, its resp awaited)."""

    OPEN = "open"
    BINDING = "binding"
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    UNBINDING = "unbinding"
    CLOSED = "closed"


class Input(Enum):
    BIND_SENT = "bind_sent"
    BOUND_AS_TX = "bound_as_tx"
    BOUND_AS_RX = "bound_as_rx"
    BOUND_AS_TRX = "bound_as_trx"
    UNBIND_SENT = "unbind_sent"
    UNBIND_RECEIVED = "unbind_received"
    UNBIND_RESP_RECEIVED = "unbind_resp_received"
    CLOSE = "close"


_BOUND: Final = (State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX)
_LIVE: Final = (State.OPEN, State.BINDING, *_BOUND, State.UNBINDING)

TRANSITIONS: Final[dict[tuple[State, Input], State]] = {
    (State.OPEN, Input.BIND_SENT): State.BINDING,
    (State.BINDING, Input.BOUND_AS_TX): State.BOUND_TX,
    (State.BINDING, Input.BOUND_AS_RX): State.BOUND_RX,
    (State.BINDING, Input.BOUND_AS_TRX): State.BOUND_TRX,
    **{(s, Input.UNBIND_SENT): State.UNBINDING for s in _BOUND},
    **{(s, Input.UNBIND_RECEIVED): State.CLOSED for s in (State.BINDING, *_BOUND, State.UNBINDING)},
    (State.UNBINDING, Input.UNBIND_RESP_RECEIVED): State.CLOSED,
    **{(s, Input.CLOSE): State.CLOSED for s in _LIVE},
}

_BIND_REQUEST: Final = {
    BindMode.TRANSMITTER: (pdus.BindTransmitter, Input.BOUND_AS_TX),
    BindMode.RECEIVER: (pdus.BindReceiver, Input.BOUND_AS_RX),
    BindMode.TRANSCEIVER: (pdus.BindTransceiver, Input.BOUND_AS_TRX),
}

# Where an SMSC may send us deliver_sm / data_sm (a lenient reading: losing one costs more).
_DELIVERABLE: Final = frozenset({State.BINDING, *_BOUND, State.UNBINDING})

_SUBMIT_SM: Final = int(CommandId.submit_sm)
_SUBMIT_SM_RESP: Final = int(CommandId.submit_sm_resp)
# What _dispatch answers with its own resp, and what it leaves unanswered; it nacks the rest.
_TAKEN_REQUESTS: Final = frozenset(
    int(c)
    for c in (CommandId.deliver_sm, CommandId.data_sm, CommandId.enquire_link, CommandId.unbind)
)
_UNANSWERED_REQUESTS: Final = frozenset(
    int(c) for c in (CommandId.alert_notification, CommandId.outbind)
)
_NULL_MESSAGE_ID: Final = b"\0"  # deliver_sm_resp / data_sm_resp: message_id unused (4.6.2)


@dataclass(slots=True)
class _Control:
    """An outstanding bind, enquire_link, unbind or query_sm of ours."""

    resp_id: int
    sent_at: float
    deadline: float


# --- the session ------------------------------------------------------------------------------


class Session:
    """One bind's protocol state. See the module docstring for the calling convention."""

    def __init__(
        self,
        settings: BindSettings,
        *,
        carrier_rate: SlidingWindow | None = None,
        rate: AdaptiveRate | None = None,
        first_sequence_number: int = 1,
        name: str = "",
    ) -> None:
        if not 1 <= first_sequence_number <= MAX_SEQUENCE_NUMBER:
            raise ValueError("first_sequence_number must be 1..0x7FFFFFFF")
        self.settings = settings
        self.name = name  # put on results, nothing else
        self.state = State.OPEN
        # The bind's own rate: given, it outlives the session (a reconnect must not grant a
        # fresh bind_tps in the same second, nor undo a slow-down the SMSC asked for).
        if rate is None:
            rate = AdaptiveRate(settings.bind_tps, backoff_s=settings.throttle_backoff_s)
        self.rate = rate
        self._carrier_rate = carrier_rate
        self._window = settings.window
        self._response_timeout_s = settings.response_timeout_s
        self._max_length = settings.max_command_length
        self._seq = first_sequence_number
        self._wrapped = False  # before the first wrap no number can still be in use
        self._submits: dict[int, float] = {}  # seq -> sent_at, in sending order
        self._control: dict[int, _Control] = {}
        self._timed_out: OrderedDict[int, float] = OrderedDict()  # timed-out submit seq -> sent_at
        self._held: dict[int, float] = {}  # timed-out submit seq -> when its slot is given up
        self._inbound = 0  # deliver_sm / data_sm received and not yet answered
        self._can_submit = False
        self._draining = False
        self._drain_deadline = math.inf
        self._last_rx = -math.inf
        # When the SMSC last answered one of our requests, and when the latest submit that timed
        # out with nothing answered after it was sent went out. While no answer has come since,
        # only an answer, not the SMSC's own PDUs, shows it alive.
        self._last_answer = -math.inf
        self._silent_since = -math.inf
        self._lost_in_a_row = 0  # see LOST_IN_A_ROW
        self._lost_limit = LOST_IN_A_ROW
        # Our enquire_links that timed out in a row while the SMSC sent other PDUs (its own
        # enquire_links, say): keep-alive is on the answers to ours, not on any byte read.
        self._probes_missed = 0
        self._buf = bytearray()
        # The SMSC unbound us: answers to our submits are still read (an SMSC writes them as
        # it drains its window, each a duplicate SMS if dropped), and the deliveries we owe an
        # answer are answered, until neither is outstanding, the connection ends or this
        # deadline passes; then the session closes. The unbind_resp waits for both, to half
        # the deadline at most: most SMSCs close once they have it (what they had not answered
        # is sent again, what we had not is delivered again), but some write their answers
        # only after it.
        self._peer_unbound = False
        self._peer_unbind_deadline = math.inf
        self._unbind_resp_owed: int | None = None  # the unbind's sequence number
        self._unbind_resp_by = math.inf
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()

    # --- what the shell reads ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def in_flight(self) -> int:
        return len(self._submits)

    @property
    def room(self) -> int:
        """Submits that could be sent now as far as the window is concerned (0 if not sendable)."""
        return self._window - len(self._submits) - len(self._held) if self._can_submit else 0

    @property
    def inbound_unanswered(self) -> int:
        return self._inbound

    @property
    def can_submit(self) -> bool:
        return self._can_submit

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = b"".join(out)
        out.clear()
        return data

    def next_deadline(self) -> float | None:
        """The earliest time `handle_timer` has something to do (None: nothing scheduled)."""
        state = self.state
        if self._peer_unbound:
            if self._unbind_resp_owed is not None:
                return min(self._unbind_resp_by, self._peer_unbind_deadline)
            return self._peer_unbind_deadline
        if state is State.CLOSED or state is State.OPEN:
            return None
        at = math.inf
        if self._submits:
            at = next(iter(self._submits.values())) + self._response_timeout_s
        if self._held:
            at = min(at, next(iter(self._held.values())))
        for control in self._control.values():
            at = min(at, control.deadline)
        if state in _BOUND:
            if not self._enquiring():
                at = min(at, self._last_answer + self.settings.enquire_link_interval_s)
            if self._draining:
                at = min(at, self._drain_deadline)
        return None if at == math.inf else at

    def answer_may_come(self, seq: int) -> bool:
        """Whether a timed-out submit's late answer would still be taken (see LATE_ANSWER_S)."""
        return seq in self._timed_out

    def ready_at(self, *, now: float) -> float | None:
        """When `try_submit` could next succeed: `now` or a later time if only the rate holds it
        back; None if it waits for something else (the bind, a free window slot)."""
        if not self._can_submit or len(self._submits) + len(self._held) >= self._window:
            return None
        at = self.rate.ready_at(now)
        carrier = self._carrier_rate
        return at if carrier is None else max(at, carrier.ready_at(now))

    # --- what the shell asks -----------------------------------------------------------------

    def start_bind(self, *, now: float) -> None:
        cls, _ = _BIND_REQUEST[self.settings.bind_mode]
        s = self.settings
        seq = self._next_sequence_number()
        request = cls(
            sequence_number=seq,
            system_id=s.system_id,
            password=s.password,
            system_type=s.system_type,
            addr_ton=s.addr_ton,
            addr_npi=s.addr_npi,
            address_range=s.address_range,
        )
        data = encode(request)  # raises EncodeError for settings SMPP cannot carry
        self._transition(Input.BIND_SENT)
        self._out.append(data)
        self._control[seq] = _Control(cls.command_id | 0x80000000, now, now + s.bind_timeout_s)
        self._last_rx = now

    def try_submit(self, body: bytes, *, now: float) -> int | None:
        """Frame an encoded submit_sm body with a fresh sequence number and queue it for sending.

        Returns the sequence number, or None when the window is full, the bind cannot submit
        (not bound, receiver, closing) or a rate holds it back; the body is then not sent.
        """
        if not self._can_submit or len(self._submits) + len(self._held) >= self._window:
            return None
        rate = self.rate
        if not rate.allows(now):
            return None
        carrier = self._carrier_rate
        if carrier is not None:
            if not carrier.allows(now):
                return None
            carrier.record(now)
        rate.record(now)
        seq = self._next_sequence_number()
        self._out.append(frame(_SUBMIT_SM, 0, seq, body))
        self._submits[seq] = now
        return seq

    def try_query(self, body: bytes, *, now: float) -> int | None:
        """Queue a query_sm (an encoded body) with a fresh sequence number; it ends as a
        `QueryAnswered`, or unanswered when the session closes first. None when the bind cannot
        submit (not bound, receiver, closing). Not in the submit window: the caller bounds how
        many it keeps outstanding."""
        if not self._can_submit:
            return None
        seq = self._next_sequence_number()
        self._out.append(frame(CommandId.query_sm, 0, seq, body))
        deadline = now + self._response_timeout_s
        self._control[seq] = _Control(CommandId.query_sm_resp, now, deadline)
        return seq

    def answer(
        self, request: pdus.DeliverSm | pdus.DataSm, command_status: int, *, now: float
    ) -> None:
        """Answer a `DeliverReceived` request (once its handler has returned)."""
        self._inbound -= 1
        if self.state is State.CLOSED and not self._peer_unbound:
            return
        resp_id = request.command_id | 0x80000000
        self._out.append(frame(resp_id, command_status, request.sequence_number, _NULL_MESSAGE_ID))
        if self._peer_unbound:
            self._after_peer_unbind(now)
        elif self._draining:
            self._unbind_if_drained(now)

    def close(self, *, now: float, drain_timeout_s: float) -> None:
        """Stop taking submits; unbind once the outstanding ones are answered (or at the drain
        deadline), then `ConnectionShouldClose(UNBOUND)` or `(UNBIND_TIMEOUT)`."""
        state = self.state
        if state is State.OPEN or state is State.BINDING:
            self._close(CloseReason.CLOSED_BEFORE_BOUND)
        elif state in _BOUND and not self._draining:
            self._draining = True
            self._can_submit = False
            self._drain_deadline = now + drain_timeout_s
            self._unbind_if_drained(now)

    def connection_lost(self) -> None:
        """The transport is gone; ends the session (`ConnectionShouldClose(CONNECTION_LOST)`)."""
        # Requests still known in CLOSED mean an error cut a read short after a transition
        # (asyncio aborts the connection): they are handed back all the same.
        if self._peer_unbound:
            self._close(CloseReason.PEER_UNBIND)
        elif self.state is not State.CLOSED or self._submits or self._control:
            self._close(CloseReason.CONNECTION_LOST)

    def abort(self, reason: CloseReason) -> None:
        """End the session now for a reason the shell found (a write that cannot complete)."""
        if self.state is not State.CLOSED or self._peer_unbound:
            self._close(reason)

    # --- time --------------------------------------------------------------------------------

    def handle_timer(self, *, now: float) -> None:
        if self._peer_unbound:
            self._after_peer_unbind(now)
            return
        if self.state is State.CLOSED:
            return
        for seq, control in list(self._control.items()):
            if control.deadline <= now:
                self._control_timed_out(seq, control, now)
                if self.closed:
                    return
        held = self._held
        if held and next(iter(held.values())) <= now:
            count = len(held)
            while held and next(iter(held.values())) <= now:
                del held[next(iter(held))]  # no answer after all this time: lost
            self._events.append(SlotsFreed(count - len(held)))
            self._lost_in_a_row += count - len(held)
            if self._lost_in_a_row >= self._lost_limit and self.state in _BOUND:
                self._drop(CloseReason.REQUESTS_UNANSWERED)
                return
        submits = self._submits
        limit = now - self._response_timeout_s
        hold_s = (HOLD_TIMED_OUT - 1) * self._response_timeout_s
        timed_out = self._timed_out
        forget_before = now - max(LATE_ANSWER_S, (HOLD_TIMED_OUT + 1) * self._response_timeout_s)
        while timed_out and next(iter(timed_out.values())) <= forget_before:
            timed_out.popitem(last=False)
        while submits:
            seq, sent_at = next(iter(submits.items()))
            if sent_at > limit:
                break
            del submits[seq]
            if self._last_answer < sent_at:
                # Nothing answered since it went out. The SMSC may still send deliver_sm and
                # enquire_links of its own while ignoring ours: probe it now (below), and drop
                # the bind unless an answer comes, rather than spend every message's attempts.
                self._silent_since = sent_at
            timed_out[seq] = sent_at
            if len(timed_out) > TIMED_OUT_MEMORY:
                timed_out.popitem(last=False)
            held[seq] = now + hold_s
            self._events.append(ResponseTimedOut(seq))
        if self._draining and self.state in _BOUND:
            if now >= self._drain_deadline:
                self._send_unbind(now)  # what is still outstanding is abandoned at close
            else:
                self._unbind_if_drained(now)  # the last ones may just have timed out
        if (
            self.state in _BOUND
            and (
                self._unanswered()
                or now >= self._last_answer + self.settings.enquire_link_interval_s
            )
            and not self._enquiring()
        ):
            self._send_request(pdus.EnquireLink, now, self._response_timeout_s)

    def _control_timed_out(self, seq: int, control: _Control, now: float) -> None:
        del self._control[seq]
        resp_id = control.resp_id
        if resp_id == CommandId.enquire_link_resp:
            if self._unanswered():
                self._drop(CloseReason.REQUESTS_UNANSWERED)
            elif self._last_rx <= control.sent_at:
                self._drop(CloseReason.ENQUIRE_LINK_TIMEOUT)
            elif self._last_answer > control.sent_at:  # it answers ours, late: slow, not deaf
                self._probes_missed = 0
            else:  # it sends PDUs of its own but answers none of ours: not twice in a row
                self._probes_missed += 1
                if self._probes_missed >= 2:
                    self._drop(CloseReason.ENQUIRE_LINK_TIMEOUT)
        elif resp_id == CommandId.unbind_resp:
            self._close(CloseReason.UNBIND_TIMEOUT)
        elif resp_id == CommandId.query_sm_resp:
            self._events.append(QueryAnswered(seq, None))
        else:
            self._close(CloseReason.BIND_TIMEOUT)

    # --- bytes in ----------------------------------------------------------------------------

    def receive_data(self, data: bytes, *, now: float) -> None:
        if self.state is State.CLOSED and not self._peer_unbound:
            return
        self._last_rx = now
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        unpack = HEADER.unpack_from
        while end - pos >= HEADER_SIZE:
            length, cid, status, seq = unpack(buf, pos)
            if length < HEADER_SIZE or length > self._max_length:
                self._framing_lost(cid, seq)
                return
            if end - pos < length:
                break
            body = bytes(buf[pos + HEADER_SIZE : pos + length])
            pos += length
            if self._peer_unbound and not is_response(cid):
                continue  # a request after the SMSC's unbind: the session is over for it
            try:
                pdu = decode_body(cid, status, seq, body)
            except DecodeError as exc:
                self._undecodable(cid, status, seq, exc, now)
            else:
                self._dispatch(pdu, now)
            if self.closed and not self._peer_unbound:
                buf.clear()
                return
        del buf[:pos]
        if self._peer_unbound:
            self._after_peer_unbind(now)

    def _after_peer_unbind(self, now: float) -> None:
        """The unbind_resp once nothing is owed either way (or half way to the deadline), and
        the close then; at the deadline what is still unanswered is abandoned."""
        late = now >= self._peer_unbind_deadline
        owed = self._submits or self._inbound
        if self._unbind_resp_owed is not None and (not owed or now >= self._unbind_resp_by):
            self._out.append(frame(CommandId.unbind_resp, 0, self._unbind_resp_owed, b""))
            self._unbind_resp_owed = None
        if late or not owed:
            self._buf.clear()
            self._close(CloseReason.PEER_UNBIND)

    def _dispatch(self, pdu: pdus.Pdu, now: float) -> None:
        if isinstance(pdu, pdus.SubmitSmResp):  # the hot path first
            sent_at = self._submits.pop(pdu.sequence_number, None)
            if sent_at is None:
                seq = pdu.sequence_number
                self._unmatched(
                    pdu.command_id, seq, now, pdu.command_status, pdu.message_id or None
                )
            else:
                self._submit_answered(
                    pdu.sequence_number, sent_at, pdu.command_status, pdu.message_id or None, now
                )
            return
        cls = type(pdu)
        if isinstance(pdu, pdus.DeliverSm | pdus.DataSm):
            self._deliver(pdu)
        elif cls is pdus.EnquireLink:
            self._out.append(frame(CommandId.enquire_link_resp, 0, pdu.sequence_number, b""))
        elif cls is pdus.GenericNack:
            self._generic_nack(pdu, now)
        elif pdu.is_response:
            self._control_answered(pdu, now)
        elif cls is pdus.Unbind:
            self._unbind_resp_owed = pdu.sequence_number  # sent by _after_peer_unbind
            # Our own unbind out (a drain that ran out of time): nothing more to wait for.
            wait_s = self.settings.unbind_timeout_s if self.state in _BOUND else 0.0
            self._transition(Input.UNBIND_RECEIVED)
            self._events.append(Unbound(by_peer=True))
            # Closed once the answers it still owes are read (an SMSC may write them just
            # after its unbind), or at unbind_timeout_s: cut off, they would be sent again.
            self._peer_unbound = True
            self._can_submit = False
            self._peer_unbind_deadline = now + wait_s
            self._unbind_resp_by = now + wait_s / 2
        elif cls is pdus.AlertNotification:
            pass  # no response is defined; nothing here needs to know who became available
        elif cls is pdus.Outbind:  # no response is defined, but on a bind we opened it is wrong
            self._events.append(PeerError("outbind on a connection we opened", cls.command_id, 0))
        else:  # an SMSC has no business sending us submit_sm, query_sm, binds...
            seq = pdu.sequence_number
            self._out.append(frame(CommandId.generic_nack, CommandStatus.ESME_RINVCMDID, seq, b""))
            self._events.append(PeerError("unexpected request", pdu.command_id, seq))

    def _submit_answered(
        self, seq: int, sent_at: float, status: int, message_id: str | None, now: float
    ) -> None:
        self._last_answer = now
        self._lost_in_a_row = 0
        if status == 0:
            result = SubmitResult(message_id, 0, StatusClass.SUCCESS, False, self.name)
        else:
            statuses = self.settings.statuses
            throttling = status in statuses.throttling
            result = SubmitResult(
                message_id,
                status,
                statuses.classify(status),
                bind=self.name,
                throttling=throttling,
                pacing=status in statuses.pacing,
            )
            if throttling and self.rate.throttled(now=now, sent_at=sent_at):
                rate = self.rate
                tps = None if rate.limit is None else rate.limit / rate.period_s
                self._events.append(Throttled(status, tps, rate.paused_until))
        self._events.append(SubmitAnswered(seq, result, now - sent_at))
        if self._draining:
            self._unbind_if_drained(now)

    def _deliver(self, pdu: pdus.DeliverSm | pdus.DataSm) -> None:
        if self.state not in _DELIVERABLE:
            status = CommandStatus.ESME_RINVBNDSTS
            self._out.append(frame(pdu.command_id | 0x80000000, status, pdu.sequence_number, b""))
            return
        self._inbound += 1
        self._events.append(DeliverReceived(pdu.sequence_number, pdu))

    def _generic_nack(self, pdu: pdus.Pdu, now: float) -> None:
        seq = pdu.sequence_number
        sent_at = self._submits.pop(seq, None)
        if sent_at is not None:
            # A nack is never an acceptance: one that says 0 is a broken SMSC, and the submit
            # is retried as after a system error rather than recorded as sent with no id.
            status = pdu.command_status or CommandStatus.ESME_RSYSERR
            self._submit_answered(seq, sent_at, status, None, now)
            return
        control = self._control.pop(seq, None)
        if control is None:
            self._unmatched(pdu.command_id, seq, now, pdu.command_status)
        elif control.resp_id == CommandId.unbind_resp:
            self._close(CloseReason.UNBOUND)  # refused or not, the session is over
        elif control.resp_id == CommandId.query_sm_resp:
            status = pdu.command_status or CommandStatus.ESME_RSYSERR  # never an answer
            self._events.append(QueryAnswered(seq, status))
        elif control.resp_id == CommandId.enquire_link_resp:
            # A nacked enquire_link is an answer: the SMSC is there, and the next probe waits
            # its interval (not counting from the last answer would send one at once, forever).
            self._last_answer = now
            self._probes_missed = 0
        elif not self._peer_unbound:  # after the SMSC's unbind, a bind's fate no longer matters
            self._bind_failed(pdu.command_status or CommandStatus.ESME_RBINDFAIL)

    def _control_answered(self, pdu: pdus.Pdu, now: float) -> None:
        seq = pdu.sequence_number
        control = self._control.get(seq)
        if control is None or control.resp_id != pdu.command_id:
            self._unmatched(pdu.command_id, seq, now)
            return
        del self._control[seq]
        self._last_answer = now
        cid = pdu.command_id
        if cid == CommandId.enquire_link_resp:
            self._probes_missed = 0
            return
        if isinstance(pdu, pdus.QuerySmResp):
            self._events.append(QueryAnswered(seq, pdu.command_status, pdu))
            return
        if self._peer_unbound:
            # The SMSC unbound earlier in this read (an unbind crossing ours, or one before
            # our bind was answered): the session is already over, and ends with the read.
            return
        if cid == CommandId.unbind_resp:
            self._transition(Input.UNBIND_RESP_RECEIVED)
            self._events.append(Unbound(by_peer=False))
            self._close(CloseReason.UNBOUND)
            return
        status = pdu.command_status  # one of the bind resps
        if status != 0:
            self._bind_failed(status)
            return
        _, bound = _BIND_REQUEST[self.settings.bind_mode]
        self._transition(bound)
        self._can_submit = self.state is not State.BOUND_RX
        tlvs = getattr(pdu, "tlvs", ())
        version = _tlv.get_int(tlvs, Tag.sc_interface_version) if tlvs else None
        self._events.append(Bound(self.state, str(getattr(pdu, "system_id", "")), version))

    def _bind_failed(self, status: int) -> None:
        self._events.append(BindFailed(status, status in PERMANENT_BIND_FAILURES))
        self._close(CloseReason.BIND_FAILED)

    def _unmatched(
        self, command_id: int, seq: int, now: float, status: int = 0, message_id: str | None = None
    ) -> None:
        sent_at = self._timed_out.get(seq)
        if sent_at is not None and command_id in (_SUBMIT_SM_RESP, CommandId.generic_nack):
            del self._timed_out[seq]
            self._held.pop(seq, None)  # answered at last: its slot is free
            self._last_answer = now  # slow, not dead: no reason to drop the bind
            self._lost_in_a_row = 0
            if command_id == CommandId.generic_nack:
                status = status or CommandStatus.ESME_RSYSERR  # never an acceptance
            self._events.append(LateResponse(command_id, seq, status, message_id, now - sent_at))
        else:
            self._events.append(PeerError("response matches no request", command_id, seq))

    def _undecodable(self, cid: int, status: int, seq: int, exc: DecodeError, now: float) -> None:
        """A PDU whose header was readable but whose body was not (SMPP v3.4 5.1.3)."""
        if is_response(cid):
            # Never answer an answer. The header's status still says how it ended; a body we
            # cannot read only costs the message_id.
            self._events.append(PeerError("undecodable response", cid, seq, str(exc)))
            if cid == _SUBMIT_SM_RESP and (sent_at := self._submits.pop(seq, None)) is not None:
                self._submit_answered(seq, sent_at, status, None, now)
            elif cid == _SUBMIT_SM_RESP and seq in self._timed_out:
                self._unmatched(cid, seq, now, status)  # a late answer still frees its slot
            elif (control := self._control.get(seq)) is not None and control.resp_id == cid:
                answer = pdus.PDU_BY_ID[cid](sequence_number=seq, command_status=status)
                self._control_answered(answer, now)
            elif cid == CommandId.generic_nack:  # it has no body: stray octets change nothing
                self._generic_nack(
                    pdus.GenericNack(sequence_number=seq, command_status=status), now
                )
            return
        self._events.append(PeerError("undecodable request", cid, seq, str(exc)))
        if cid in _BODILESS_REQUESTS:
            # enquire_link and unbind have no body: stray octets change nothing they say, and an
            # unbind refused for them would leave the SMSC to tear the connection down.
            self._dispatch(pdus.PDU_BY_ID[cid](sequence_number=seq), now)
            return
        # Answered as its decodable twin would be: a request we take gets its own resp with
        # the codec's status, one we never take its ESME_RINVCMDID nack, one without a
        # response (alert_notification, outbind) nothing.
        if cid in _TAKEN_REQUESTS:
            resp_id = pdus.RESPONSE_OF[pdus.PDU_BY_ID[cid]].command_id
            self._out.append(frame(resp_id, exc.command_status, seq, b""))
        elif cid not in _UNANSWERED_REQUESTS:
            self._out.append(frame(CommandId.generic_nack, CommandStatus.ESME_RINVCMDID, seq, b""))

    def _framing_lost(self, cid: int, seq: int) -> None:
        self._events.append(PeerError("command_length out of range", cid, seq))
        self._out.append(frame(CommandId.generic_nack, CommandStatus.ESME_RINVCMDLEN, seq, b""))
        self._drop(CloseReason.FRAMING_LOST)
        self._buf.clear()

    # --- internals ---------------------------------------------------------------------------

    def _next_sequence_number(self) -> int:
        seq = self._seq
        if self._wrapped:  # skip numbers still in use, or whose late answer may yet come
            submits, control, timed_out = self._submits, self._control, self._timed_out
            while seq in submits or seq in control or seq in timed_out:
                seq = seq + 1 if seq < MAX_SEQUENCE_NUMBER else 1
        if seq < MAX_SEQUENCE_NUMBER:
            self._seq = seq + 1
        else:
            self._seq = 1
            self._wrapped = True
        return seq

    def _send_request(self, cls: type[pdus.Pdu], now: float, timeout_s: float) -> None:
        seq = self._next_sequence_number()
        self._out.append(frame(cls.command_id, 0, seq, b""))
        self._control[seq] = _Control(cls.command_id | 0x80000000, now, now + timeout_s)

    def _unanswered(self) -> bool:
        return self._last_answer < self._silent_since

    def _enquiring(self) -> bool:
        return any(c.resp_id == CommandId.enquire_link_resp for c in self._control.values())

    def _unbind_if_drained(self, now: float) -> None:
        if not self._submits and not self._inbound and self.state in _BOUND:
            self._send_unbind(now)

    def _send_unbind(self, now: float) -> None:
        self._send_request(pdus.Unbind, now, self.settings.unbind_timeout_s)
        self._transition(Input.UNBIND_SENT)

    def _drop(self, reason: CloseReason) -> None:
        """Close on our own decision; a bound SMSC is told with unbind first (not awaited), so it
        does not answer our next bind with ESME_RALYBND."""
        if self.state in _BOUND:
            seq = self._next_sequence_number()
            self._out.append(frame(CommandId.unbind, 0, seq, b""))
        self._close(reason)

    def _close(self, reason: CloseReason) -> None:
        if self.state is not State.CLOSED:  # unbind exchanges get there by their own transition
            self._transition(Input.CLOSE)
        self._can_submit = False
        self._peer_unbound = False
        self._unbind_resp_owed = None
        abandoned = tuple(self._submits)
        self._submits.clear()
        self._held.clear()
        self._control.clear()
        self._events.append(ConnectionShouldClose(reason, abandoned))

    def _transition(self, event: Input) -> None:
        try:
            self.state = TRANSITIONS[self.state, event]
        except KeyError:
            raise LocalProtocolError(f"{event.name} is not allowed in {self.state.name}") from None
