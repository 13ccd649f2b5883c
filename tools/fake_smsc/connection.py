"""One ESME connection to the fake SMSC: framing, bind state, answers and the faults on the wire.

Owns the asyncio Protocol of a TCP connection: PDUs framed with smppd's PduReader, the bind state
(SMPP v3.4 2.3), the answer to each request, the response pipeline (latency, reordering, hang),
the per-connection faults (drop, unbind, garbage after N PDUs), the count of submits received and
not yet answered (and its maximum), and the deliver_sm it has in flight. Writes are gathered and
flushed once per loop iteration. Accounts, ids, receipts and records belong to the `Host`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol

from smppd.pdu.codec import PduReader, encode, frame
from smppd.pdu.command import CommandId, is_response
from smppd.pdu.errors import DecodeError
from smppd.pdu.pdus import (
    PDU_BY_ID,
    RESPONSE_OF,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    DataSm,
    Pdu,
    QuerySm,
    QuerySmResp,
    SubmitSm,
    Unbind,
)
from smppd.pdu.status import CommandStatus
from smppd.pdu.tlv import Tag, Tlv
from tools.fake_smsc.config import SmscConfig
from tools.fake_smsc.faults import Faults, Reorder
from tools.fake_smsc.outbox import Outbox, ResponseCallback
from tools.fake_smsc.receipts import Tracked, Tracker
from tools.fake_smsc.records import Content, Records, split_content

UNBIND_TIMEOUT_S = 5.0  # after our unbind, close anyway if no unbind_resp comes

BindPdu = BindTransmitter | BindReceiver | BindTransceiver

_GENERIC_NACK = int(CommandId.generic_nack)
_SUBMIT_SM_RESP = int(CommandId.submit_sm_resp)
_DATA_SM_RESP = int(CommandId.data_sm_resp)
_DELIVER_SM = int(CommandId.deliver_sm)


class BindState(Enum):
    """Session states of SMPP v3.4 2.3, from the SMSC's side."""

    OPEN = "open"
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    UNBIND_PENDING = "unbind_pending"  # we sent unbind and wait for unbind_resp
    CLOSED = "closed"


_BindResp = BindTransmitterResp | BindReceiverResp | BindTransceiverResp
_BIND_STATE: dict[type[Pdu], tuple[BindState, type[_BindResp]]] = {
    BindTransmitter: (BindState.BOUND_TX, BindTransmitterResp),
    BindReceiver: (BindState.BOUND_RX, BindReceiverResp),
    BindTransceiver: (BindState.BOUND_TRX, BindTransceiverResp),
}
_CAN_SUBMIT = frozenset({BindState.BOUND_TX, BindState.BOUND_TRX})
_CAN_RECEIVE = frozenset({BindState.BOUND_RX, BindState.BOUND_TRX})
_BOUND = frozenset({BindState.BOUND_TX, BindState.BOUND_RX, BindState.BOUND_TRX})


class Host(Protocol):
    """What a connection asks of the server it belongs to."""

    config: SmscConfig
    faults: Faults
    rng: random.Random
    records: Records
    tracker: Tracker
    outbox: Outbox

    def bind(self, connection: SmscConnection, pdu: BindPdu) -> int:
        """Check credentials and caps; register the bind and return 0, or the status to answer."""
        ...

    def allow_submit(self, account: str, *, now: float) -> bool:
        """Whether the account's TPS limit lets one more submit through at `now`."""
        ...

    def accepted_submit(self, account: str, *, now: float) -> None:
        """A submit was accepted at `now`: it counts towards the TPS limit (refused ones,
        throttled or failed, do not: the limit is on accepted submits)."""
        ...

    def connection_lost(self, connection: SmscConnection) -> None: ...


# (encoded response, is a submit response, called once it is written)
_Response = tuple[bytes, bool, Callable[[], None] | None]


class SmscConnection(asyncio.Protocol):
    def __init__(self, host: Host, bind_id: int) -> None:
        self.host = host
        self.bind_id = bind_id
        self.state = BindState.OPEN
        self.account = ""  # system_id once bound
        self.peer = ""
        self.pdus_received = 0
        self.outstanding = 0  # submits received and not yet answered
        self.max_outstanding = 0
        # Of those, the ones a hang swallowed (never to be answered): not held against `window`,
        # or clearing a hang would leave the client throttled for good.
        self._swallowed = 0
        self.opened_at = time.time()
        self.closed_at: float | None = None
        self._reader = PduReader(max_command_length=host.config.max_command_length)
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []
        self._writing_paused = False  # the transport is past its high-water mark
        self._flush_scheduled = False
        self._close_after_flush = False
        self._sequence = 0
        self._in_flight: dict[int, ResponseCallback] = {}  # our deliver_sm by sequence_number
        self._held: list[_Response] = []  # submit responses held for reordering
        self._hold_timer: asyncio.TimerHandle | None = None
        self._unbind_timer: asyncio.TimerHandle | None = None
        # Responses waiting out latency_s, in the order they were decided.
        self._delayed: dict[int, tuple[asyncio.TimerHandle, _Response]] = {}
        self._delayed_key = 0
        self._unbind_resp: bytes | None = None  # to the client's unbind, once answers are out
        self._client_unbound = False
        self._fired: set[str] = set()  # the *_after_pdus faults already fired here

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    def data_received(self, data: bytes) -> None:
        if self.state is BindState.CLOSED:
            return
        reader = self._reader
        reader.feed(data)
        host = self.host
        while self.is_open:
            try:
                pdu = reader.next_pdu()
            except DecodeError as exc:
                self._decode_failed(exc)
                continue
            if pdu is None:
                break
            self.pdus_received += 1
            faults = host.faults
            if faults.drop_after_pdus is not None and self.pdus_received >= faults.drop_after_pdus:
                self._unanswered(pdu)
                self.abort()
                break
            if faults.hang:
                self._unanswered(pdu)
                continue
            self._dispatch(pdu)
            self._after_pdu(faults)
        host.records.flush()
        if self.state in _CAN_RECEIVE:
            host.outbox.pump(self.account)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = BindState.CLOSED
        self.closed_at = time.time()
        self._transport = None
        for timer in (self._hold_timer, self._unbind_timer):
            if timer is not None:
                timer.cancel()
        for handle, _ in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        in_flight, self._in_flight = self._in_flight, {}
        self.host.connection_lost(self)
        for callback in in_flight.values():
            callback(None)

    def pause_writing(self) -> None:
        # The client is not reading: stop reading its requests and stop sending it deliver_sm
        # (a retry would be written again into a buffer that does not drain), so memory stays
        # bounded. Deliveries whose retry timeout runs out meanwhile go to another bind.
        self._writing_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._transport is not None:
            self._transport.resume_reading()
        if self.state in _CAN_RECEIVE:
            self.host.outbox.pump(self.account)

    @property
    def is_open(self) -> bool:
        return self.state is not BindState.CLOSED

    # --- actions the server or the faults take --------------------------------------------

    def send_unbind(self) -> bool:
        """Ask the client to unbind (SMPP v3.4 4.2); the connection closes on its unbind_resp."""
        if self.state not in _BOUND:
            return False
        self.state = BindState.UNBIND_PENDING
        self.host.outbox.remove_receiver(self.account, self)
        self._write(encode(Unbind(sequence_number=self._next_sequence())))
        self._unbind_timer = self._loop.call_later(UNBIND_TIMEOUT_S, self.close)
        return True

    def send_raw(self, data: bytes) -> None:
        """Write `data` as is (garbage, a hand-made PDU)."""
        if self.state is not BindState.CLOSED:
            self._write(data)

    def close(self) -> None:
        """Close after writing what is pending."""
        if self._transport is None or self.state is BindState.CLOSED:
            return
        self._close_after_flush = True
        self._flush()

    def abort(self) -> None:
        """Drop the connection at once, like a lost TCP connection.

        Answers already decided are handed to the socket first, so what reaches the client is
        exactly the answers to the PDUs before the drop (a response still delayed is lost).
        """
        if self._transport is not None:
            self._flush()
            self.state = BindState.CLOSED
            self._transport.abort()

    def info(self) -> dict[str, Any]:
        return {
            "bind_id": self.bind_id,
            "account": self.account,
            "state": self.state.value,
            "peer": self.peer,
            "pdus_received": self.pdus_received,
            "outstanding": self.outstanding,
            "max_outstanding": self.max_outstanding,
            "deliver_sm_in_flight": len(self._in_flight),
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
        }

    # --- outbox.Receiver ------------------------------------------------------------------

    def can_deliver(self) -> bool:
        return (
            self.state in _CAN_RECEIVE
            and not self._writing_paused
            and not self.host.faults.hang
            and len(self._in_flight) < self.host.config.outbound_window
        )

    def deliver(self, body: bytes, on_response: ResponseCallback) -> int:
        sequence_number = self._next_sequence()
        self._in_flight[sequence_number] = on_response
        self._write(frame(_DELIVER_SM, 0, sequence_number, body))
        return sequence_number

    def forget(self, sequence_number: int) -> None:
        self._in_flight.pop(sequence_number, None)

    # --- requests -------------------------------------------------------------------------

    def _dispatch(self, pdu: Pdu) -> None:
        if pdu.is_response:
            self._response(pdu)
        elif self._client_unbound:
            pass  # requests after the client's own unbind: not answered, the connection ends
        elif isinstance(pdu, SubmitSm | DataSm) and self.state in _BOUND:
            self._submit(pdu)
        elif isinstance(pdu, BindTransmitter | BindReceiver | BindTransceiver):
            self._bind(pdu)
        elif pdu.command_id == CommandId.unbind and self.state is BindState.UNBIND_PENDING:
            # Our unbind and the ESME's crossed: each is answered, and the connection ends.
            self._write(frame(CommandId.unbind_resp, 0, pdu.sequence_number, b""))
            self.close()
        elif self.state not in _BOUND:
            self._answer(pdu, CommandStatus.ESME_RINVBNDSTS)
        elif pdu.command_id == CommandId.enquire_link:
            self._answer(pdu, 0)
        elif pdu.command_id == CommandId.unbind:
            # Answered in order: after the responses still waiting out their latency (a client
            # that does not wait for it loses them), then the connection closes.
            self.state = BindState.UNBIND_PENDING
            self.host.outbox.remove_receiver(self.account, self)
            self._unbind_resp = frame(CommandId.unbind_resp, 0, pdu.sequence_number, b"")
            self._client_unbound = True
            self._unbind_when_answered()
        elif isinstance(pdu, QuerySm | CancelSm) and self.state not in _CAN_SUBMIT:
            # SMPP v3.4 4.8, 4.9: a transmitter's or transceiver's, as submits are.
            self._answer(pdu, CommandStatus.ESME_RINVBNDSTS)
        elif isinstance(pdu, QuerySm):
            self._query(pdu)
        elif isinstance(pdu, CancelSm):
            self._cancel(pdu)
        else:  # replace_sm, submit_multi, or an SMSC-side command: not supported here
            self._answer(pdu, CommandStatus.ESME_RINVCMDID)

    def _bind(self, pdu: BindPdu) -> None:
        state, resp_cls = _BIND_STATE[type(pdu)]
        if self.state is not BindState.OPEN:
            status: int = CommandStatus.ESME_RALYBND
        else:
            status = self.host.bind(self, pdu)
        if status:
            self._respond(frame(resp_cls.command_id, status, pdu.sequence_number, b""))
            return
        self.state = state
        self.account = pdu.system_id
        config = self.host.config
        version = config.interface_version
        tlvs = () if version is None else (Tlv.of_int(Tag.sc_interface_version, version),)
        resp = resp_cls(sequence_number=pdu.sequence_number, system_id=config.system_id, tlvs=tlvs)
        self._respond(encode(resp))
        if state in _CAN_RECEIVE:
            self.host.outbox.add_receiver(self.account, self)

    def _submit(self, pdu: SubmitSm | DataSm) -> None:
        host = self.host
        faults = host.faults
        self.outstanding += 1
        self.max_outstanding = max(self.max_outstanding, self.outstanding)
        resp_id = _SUBMIT_SM_RESP if isinstance(pdu, SubmitSm) else _DATA_SM_RESP
        content: Content | None = None
        if self.state not in _CAN_SUBMIT:
            status = int(CommandStatus.ESME_RINVBNDSTS)
        elif faults.window is not None and self.outstanding - self._swallowed > faults.window:
            # The client overran the window: refused at once, not after the latency.
            status = faults.window_status
            self._record(pdu, None, "", status)
            self._write_response(frame(resp_id, status, pdu.sequence_number, b""), True, None)
            return
        elif faults.tps_limit is not None and not host.allow_submit(
            self.account, now=self._loop.time()
        ):
            status = CommandStatus.ESME_RTHROTTLED
        else:
            status = faults.draw_submit_error(host.rng)
        try:
            content = split_content(pdu)
        except DecodeError as exc:
            status = status or exc.command_status
        if status == 0 and not pdu.destination_addr:
            status = CommandStatus.ESME_RINVDSTADR
        if status:
            self._record(pdu, content, "", status)
            self._respond(frame(resp_id, status, pdu.sequence_number, b""), submit=True)
            return
        assert content is not None
        host.accepted_submit(self.account, now=self._loop.time())
        tracker = host.tracker
        now = time.time()
        tracked = tracker.accept(
            pdu, content.data, account=self.account, now=now, shift=content.shift
        )
        self._record(pdu, content, tracked.message_id, 0, now=now)
        after: Callable[[], None] | None = None
        concat = content.concat
        receipts = tracker.receipts
        if receipts.auto and not (
            receipts.per_message and concat is not None and concat.seq != concat.total
        ):  # settled, with or without a receipt
            if receipts.before_resp:
                tracker.send_receipt(tracked)
            else:
                after = _receipt_after(tracker, tracked)
        body = tracked.message_id.encode("ascii") + b"\0"
        self._respond(frame(resp_id, 0, pdu.sequence_number, body), submit=True, after=after)

    def _query(self, pdu: QuerySm) -> None:
        tracked = self.host.tracker.get(pdu.message_id)
        if tracked is None or tracked.account != self.account:
            self._answer(pdu, CommandStatus.ESME_RINVMSGID)
            return
        final_date = ""
        if tracked.final_time is not None:
            final_date = time.strftime("%y%m%d%H%M%S", time.gmtime(tracked.final_time)) + "000+"
        resp = QuerySmResp(
            sequence_number=pdu.sequence_number,
            message_id=tracked.message_id,
            final_date=final_date,
            message_state=tracked.state,
        )
        self._respond(encode(resp))

    def _cancel(self, pdu: CancelSm) -> None:
        tracked = self.host.tracker.get(pdu.message_id)
        ok = tracked is not None and tracked.account == self.account
        if ok and self.host.tracker.cancel(pdu.message_id):
            self._answer(pdu, 0)
        else:
            self._answer(pdu, CommandStatus.ESME_RCANCELFAIL)

    def _response(self, pdu: Pdu) -> None:
        cid = pdu.command_id
        if cid == CommandId.unbind_resp:
            if self.state is BindState.UNBIND_PENDING:
                self.close()
            return
        # deliver_sm_resp, or a generic_nack of one of our deliver_sm: both settle it.
        callback = self._in_flight.pop(pdu.sequence_number, None)
        if callback is not None and cid == CommandId.deliver_sm_resp:
            callback(pdu.command_status)
        elif callback is not None and cid == _GENERIC_NACK:
            callback(pdu.command_status or CommandStatus.ESME_RUNKNOWNERR)
        elif callback is not None:  # some other resp with our number: not an answer to it
            self._in_flight[pdu.sequence_number] = callback

    def _answer(self, pdu: Pdu, status: int) -> None:
        """The spec's response to `pdu` with `status` and an empty body."""
        resp_id = RESPONSE_OF[type(pdu)].command_id
        self._respond(frame(resp_id, status, pdu.sequence_number, b""))

    def _decode_failed(self, exc: DecodeError) -> None:
        """SMPP v3.4 5.1.3: generic_nack for a header that cannot be read or an unknown
        command; a known request whose body cannot be read gets its own resp with the codec's
        status, and a response is never answered (its request goes on waiting)."""
        cid, seq = exc.command_id, exc.sequence_number or 0
        if not self.host.faults.hang:
            known = None if cid is None or exc.framing_lost else PDU_BY_ID.get(cid)
            if known is None:
                self._write(frame(_GENERIC_NACK, exc.command_status, seq, b""))
            elif not is_response(known.command_id):
                resp_id = RESPONSE_OF[known].command_id
                self._write(frame(resp_id, exc.command_status, seq, b""))
        if exc.framing_lost:  # nothing after an impossible command_length can be trusted
            self.close()

    def _unanswered(self, pdu: Pdu) -> None:
        """Count and record a PDU that gets no answer (hang, drop)."""
        if isinstance(pdu, SubmitSm | DataSm):
            self.outstanding += 1
            self._swallowed += 1
            self.max_outstanding = max(self.max_outstanding, self.outstanding)
            try:
                content: Content | None = split_content(pdu)
            except DecodeError:
                content = None
            self._record(pdu, content, "", None)

    def _record(
        self,
        pdu: SubmitSm | DataSm,
        content: Content | None,
        message_id: str,
        status: int | None,
        *,
        now: float | None = None,
    ) -> None:
        self.host.records.add(
            pdu,
            content,
            account=self.account,
            bind_id=self.bind_id,
            message_id=message_id,
            command_status=status,
            now=time.time() if now is None else now,
        )

    def _after_pdu(self, faults: Faults) -> None:
        count = self.pdus_received
        if (
            faults.unbind_after_pdus is not None
            and count >= faults.unbind_after_pdus
            and "unbind" not in self._fired
            and self.send_unbind()  # not yet bound: at the first PDU once it is
        ):
            self._fired.add("unbind")
        if (
            faults.garbage_after_pdus is not None
            and count >= faults.garbage_after_pdus
            and "garbage" not in self._fired
        ):
            self._fired.add("garbage")
            self.send_raw(faults.garbage)

    # --- the response pipeline: latency, hang, reordering ---------------------------------

    def _respond(
        self, data: bytes, *, submit: bool = False, after: Callable[[], None] | None = None
    ) -> None:
        host = self.host
        delay_s = host.faults.response_delay_s(host.rng)
        if delay_s > 0:
            key = self._delayed_key = self._delayed_key + 1
            handle = self._loop.call_later(delay_s, self._emit_delayed, key)
            self._delayed[key] = (handle, (data, submit, after))
        else:
            self._emit(data, submit, after)

    def _emit_delayed(self, key: int) -> None:
        _, response = self._delayed.pop(key)
        self._emit(*response)
        if self._unbind_resp is not None:
            self._unbind_when_answered()

    def _unbind_when_answered(self) -> None:
        """The client's unbind_resp, once no response waits out its latency (all were decided
        before it: requests after it get none, so a client that keeps sending gets it too)."""
        if self._unbind_resp is None or self._delayed:
            return
        if self._held:
            self._release_held()
        self._write(self._unbind_resp)
        self._unbind_resp = None
        self.close()

    def _emit(self, data: bytes, submit: bool, after: Callable[[], None] | None) -> None:
        if self.state is BindState.CLOSED:
            return
        if self.host.faults.hang:  # a hung SMSC never answers, even what it had decided before
            if submit:
                self._swallowed += 1
            return
        faults = self.host.faults
        if submit and (faults.reorder is not None or self._held):
            self._held.append((data, submit, after))
            if faults.reorder is None or len(self._held) >= faults.reorder_batch:
                self._release_held()
            elif self._hold_timer is None:
                self._hold_timer = self._loop.call_later(faults.reorder_hold_s, self._release_held)
            return
        self._write_response(data, submit, after)

    def _release_held(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        held, self._held = self._held, []
        order = self.host.faults.reorder
        if order is Reorder.REVERSE:
            held.reverse()
        elif order is Reorder.SHUFFLE:
            self.host.rng.shuffle(held)
        if self.state is BindState.CLOSED:
            return
        if self.host.faults.hang:  # hung since they were held: never answered, as in _emit
            self._swallowed += sum(1 for _, submit, _ in held if submit)
            return
        for data, submit, after in held:
            self._write_response(data, submit, after)

    def _write_response(self, data: bytes, submit: bool, after: Callable[[], None] | None) -> None:
        self._write(data)
        if submit:
            self.outstanding -= 1
        if after is not None:
            after()

    # --- writing --------------------------------------------------------------------------

    def _next_sequence(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1  # 1..0x7FFFFFFF (SMPP v3.4 5.1.4)
        return self._sequence

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self._transport
        if transport is None:
            self._out.clear()
            return
        if self._out:
            data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
            self._out.clear()
            transport.write(data)
        if self._close_after_flush:
            self.state = BindState.CLOSED
            transport.close()


def _receipt_after(tracker: Tracker, tracked: Tracked) -> Callable[[], None]:
    def written() -> None:
        tracker.resp_written(tracked)

    return written
