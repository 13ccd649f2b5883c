"""The sans-IO bind: bytes and a hand-advanced clock in, events and bytes out."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from smppd.pdu import pdus
from smppd.pdu.codec import PduReader, encode, encode_body, frame
from smppd.pdu.command import CommandId
from smppd.pdu.status import CommandStatus, StatusClass, StatusPolicy
from smppd.pdu.tlv import Tlv
from smppd.ratelimit import ARRIVAL_MARGIN, SPORADIC_MIN_THROTTLES, SlidingWindow
from smppd.session import (
    HOLD_TIMED_OUT,
    LATE_ANSWER_S,
    LOST_IN_A_ROW,
    MAX_SEQUENCE_NUMBER,
    BindError,
    BindFailed,
    BindMode,
    BindSettings,
    Bound,
    CloseReason,
    ConnectionShouldClose,
    DeliverReceived,
    Event,
    LateResponse,
    LocalProtocolError,
    PeerError,
    QueryAnswered,
    ResponseTimedOut,
    Session,
    SlotsFreed,
    State,
    SubmitAnswered,
    Throttled,
    Unbound,
)

S = CommandStatus
BODY = encode_body(pdus.SubmitSm(source_addr="Acme", destination_addr="447700900123"))


def settings_(**changes: object) -> BindSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 2775,
        "system_id": "smppd",
        "password": "secret",
        "window": 4,
        "enquire_link_interval_s": 30.0,
        "response_timeout_s": 5.0,
        "bind_timeout_s": 3.0,
        "unbind_timeout_s": 2.0,
        "throttle_backoff_s": 1.0,
    }
    values.update(changes)
    return BindSettings(**values)  # type: ignore[arg-type]


class Peer:
    """The SMSC's side of a session under test: decodes what it sends, encodes what it gets."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.reader = PduReader()
        self.now = 0.0

    def sent(self) -> list[pdus.Pdu]:
        self.reader.feed(self.session.data_to_send())
        out = []
        while (pdu := self.reader.next_pdu()) is not None:
            out.append(pdu)
        return out

    def send(self, *items: pdus.Pdu | bytes) -> None:
        data = b"".join(i if isinstance(i, bytes) else encode(i) for i in items)
        self.session.receive_data(data, now=self.now)

    def events(self) -> list[Event]:
        out = []
        while (event := self.session.next_event()) is not None:
            out.append(event)
        return out

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.session.handle_timer(now=self.now)

    def submit(self, body: bytes = BODY) -> int:
        seq = self.session.try_submit(body, now=self.now)
        assert seq is not None
        return seq

    def answer(self, seq: int, status: int = 0, message_id: str = "") -> None:
        self.send(
            pdus.SubmitSmResp(sequence_number=seq, command_status=status, message_id=message_id)
        )


def bound(**changes: object) -> Peer:
    first = changes.pop("first_sequence_number", 1)
    carrier = changes.pop("carrier_rate", None)
    session = Session(
        settings_(**changes),
        first_sequence_number=first,  # type: ignore[arg-type]
        carrier_rate=carrier,  # type: ignore[arg-type]
    )
    peer = Peer(session)
    session.start_bind(now=peer.now)
    (bind,) = peer.sent()
    peer.send(bind_resp(bind))
    assert isinstance(peer.events()[0], Bound)
    return peer


def bind_resp(bind: pdus.Pdu, status: int = 0) -> bytes:
    return frame(bind.command_id | 0x80000000, status, bind.sequence_number, b"smsc\0")


def answers(events: list[Event]) -> dict[int, SubmitAnswered]:
    return {e.sequence_number: e for e in events if isinstance(e, SubmitAnswered)}


def closing(events: list[Event]) -> ConnectionShouldClose:
    (close,) = [e for e in events if isinstance(e, ConnectionShouldClose)]
    return close


# --- binding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "request_cls", "state"),
    [
        (BindMode.TRANSMITTER, pdus.BindTransmitter, State.BOUND_TX),
        (BindMode.RECEIVER, pdus.BindReceiver, State.BOUND_RX),
        (BindMode.TRANSCEIVER, pdus.BindTransceiver, State.BOUND_TRX),
    ],
)
def test_bind_handshake(mode: BindMode, request_cls: type[pdus.Pdu], state: State) -> None:
    """The bind goes out with the configured credentials and its resp enters the bound state."""
    session = Session(settings_(bind_mode=mode, system_type="OTP", address_range="^44"))
    peer = Peer(session)
    session.start_bind(now=0.0)
    assert session.state.name == "BINDING"
    (bind,) = peer.sent()
    assert isinstance(bind, request_cls)
    assert (bind.system_id, bind.password, bind.system_type) == ("smppd", "secret", "OTP")  # type: ignore[attr-defined]
    assert bind.address_range == "^44"  # type: ignore[attr-defined]
    peer.send(bind_resp(bind))
    assert peer.events() == [Bound(state, "smsc")]
    assert session.state is state
    assert session.can_submit is (state is not State.BOUND_RX)


def test_the_smscs_interface_version_comes_with_bound() -> None:
    """sc_interface_version in the bind resp (0x34: it takes TLVs) is reported; none, None."""
    session = Session(settings_())
    peer = Peer(session)
    session.start_bind(now=0.0)
    (bind,) = peer.sent()
    body = b"smsc\0" + bytes.fromhex("0210000134")
    peer.send(frame(bind.command_id | 0x80000000, 0, bind.sequence_number, body))
    assert peer.events() == [Bound(State.BOUND_TRX, "smsc", 0x34)]


def test_bind_password_never_in_repr() -> None:
    """Settings and the bind PDU keep the password out of their repr (and so out of logs)."""
    assert "secret" not in repr(settings_())
    assert "secret" not in repr(pdus.BindTransceiver(password="secret"))


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        (S.ESME_RINVPASWD, True),
        (S.ESME_RINVSYSID, True),
        (S.ESME_RINVSYSTYP, True),
        (S.ESME_RBINDFAIL, False),  # also "too many sessions", as after a drop
        (S.ESME_RALYBND, False),
        (S.ESME_RSYSERR, False),
    ],
)
def test_bind_refused(status: int, permanent: bool) -> None:
    """A refused bind names its status, says whether retrying can heal it, and ends the session."""
    session = Session(settings_())
    peer = Peer(session)
    session.start_bind(now=0.0)
    (bind,) = peer.sent()
    peer.send(pdus.BindTransceiverResp(sequence_number=bind.sequence_number, command_status=status))
    events = peer.events()
    assert events[0] == BindFailed(status, permanent)
    assert closing(events).reason is CloseReason.BIND_FAILED
    assert session.state is State.CLOSED
    error = BindError(status)
    assert (error.command_status, error.permanent) == (status, permanent)
    assert S(status).name in str(error)


def test_bind_answered_by_generic_nack() -> None:
    """An SMSC that nacks the bind (it knows no transceiver, say) fails it with that status."""
    session = Session(settings_())
    peer = Peer(session)
    session.start_bind(now=0.0)
    (bind,) = peer.sent()
    peer.send(
        pdus.GenericNack(sequence_number=bind.sequence_number, command_status=S.ESME_RINVCMDID)
    )
    assert peer.events()[0] == BindFailed(S.ESME_RINVCMDID, False)


def test_bind_timeout() -> None:
    """No bind_resp within bind_timeout_s ends the session."""
    session = Session(settings_(bind_timeout_s=3.0))
    peer = Peer(session)
    session.start_bind(now=0.0)
    assert session.next_deadline() == 3.0
    peer.advance(2.9)
    assert peer.events() == []
    peer.advance(0.1)
    assert closing(peer.events()).reason is CloseReason.BIND_TIMEOUT


def test_bind_twice_is_a_local_error() -> None:
    """A transition missing from the table is refused as our own bug."""
    peer = bound()
    with pytest.raises(LocalProtocolError):
        peer.session.start_bind(now=0.0)


def test_settings_are_checked() -> None:
    """Nonsense settings are refused when built."""
    with pytest.raises(ValueError, match="window"):
        settings_(window=0)
    with pytest.raises(ValueError, match="response_timeout_s"):
        settings_(response_timeout_s=0)
    with pytest.raises(ValueError, match="bind_tps"):
        settings_(bind_tps=0)


# --- submits and the window ---------------------------------------------------------------------


def test_submit_frames_the_body_with_a_fresh_number() -> None:
    """try_submit puts the stored body on the wire under a new sequence number."""
    peer = bound()
    seq = peer.submit()
    assert peer.session.data_to_send() == frame(CommandId.submit_sm, 0, seq, BODY)
    assert peer.submit() == seq + 1


def test_window_is_never_exceeded() -> None:
    """With `window` submits outstanding try_submit refuses; an answer frees one slot."""
    peer = bound(window=3)
    seqs = [peer.submit() for _ in range(3)]
    assert peer.session.try_submit(BODY, now=0.0) is None
    assert peer.session.ready_at(now=0.0) is None
    assert peer.session.room == 0
    peer.answer(seqs[1], message_id="m1")
    assert peer.session.room == 1
    assert peer.session.ready_at(now=0.0) == 0.0
    assert peer.submit() not in seqs
    assert peer.session.try_submit(BODY, now=0.0) is None


def test_success_and_error_results() -> None:
    """A resp becomes a result with its message_id and status class; latency is measured."""
    peer = bound()
    ok, bad, slow = peer.submit(), peer.submit(), peer.submit()
    peer.now = 0.25
    peer.answer(ok, message_id="abc123")
    peer.answer(bad, S.ESME_RINVDSTADR)
    peer.answer(slow, S.ESME_RSYSERR)
    got = answers(peer.events())
    assert got[ok].result.message_id == "abc123"
    assert got[ok].result.status_class is StatusClass.SUCCESS
    assert got[ok].latency_s == 0.25
    assert got[bad].result.status_class is StatusClass.PERMANENT
    assert got[bad].result.message_id is None
    assert got[slow].result.status_class is StatusClass.TEMPORARY
    assert not any(a.result.unknown for a in got.values())


def test_out_of_order_responses_are_matched_by_number() -> None:
    """Responses in any order reach the submit with their sequence number, not FIFO."""
    peer = bound(window=5)
    seqs = [peer.submit() for _ in range(5)]
    peer.send(*(pdus.SubmitSmResp(sequence_number=s, message_id=f"id{s}") for s in reversed(seqs)))
    got = answers(peer.events())
    assert {s: got[s].result.message_id for s in seqs} == {s: f"id{s}" for s in seqs}


def test_response_fed_one_byte_at_a_time() -> None:
    """A resp split across many reads is framed once it is whole."""
    peer = bound()
    seq = peer.submit()
    for byte in encode(pdus.SubmitSmResp(sequence_number=seq, message_id="x")):
        peer.send(bytes([byte]))
    assert answers(peer.events())[seq].result.message_id == "x"


def test_smsc_sequence_numbers_kept_apart_from_ours() -> None:
    """A deliver_sm carrying the number of a pending submit is a request, not its answer."""
    peer = bound()
    seq = peer.submit()
    peer.send(pdus.DeliverSm(sequence_number=seq, source_addr="447700900123"))
    (event,) = peer.events()
    assert isinstance(event, DeliverReceived)
    assert peer.session.in_flight == 1
    # A resp of the wrong kind with our number is not taken for the submit's answer either.
    peer.send(pdus.DeliverSmResp(sequence_number=seq))
    (event,) = peer.events()
    assert isinstance(event, PeerError)
    assert peer.session.in_flight == 1
    peer.answer(seq, message_id="m")
    assert answers(peer.events())[seq].result.message_id == "m"


@pytest.mark.parametrize("tail", [b"", b"\0", b"\x07"])
def test_error_resp_with_no_body_or_a_stray_octet(tail: bytes) -> None:
    """An error resp without a body, or with one stray octet, is still its submit's answer."""
    peer = bound()
    seq = peer.submit()
    peer.send(frame(CommandId.submit_sm_resp, S.ESME_RINVDSTADR, seq, tail))
    result = answers(peer.events())[seq].result
    assert (result.command_status, result.message_id) == (S.ESME_RINVDSTADR, None)


def test_generic_nack_answers_a_submit() -> None:
    """A generic_nack with a submit's number ends it with the nack's status."""
    peer = bound()
    seq = peer.submit()
    peer.send(pdus.GenericNack(sequence_number=seq, command_status=S.ESME_RINVCMDLEN))
    result = answers(peer.events())[seq].result
    assert result.command_status == S.ESME_RINVCMDLEN
    assert result.status_class is StatusClass.PERMANENT


def test_a_generic_nack_with_stray_octets_still_answers_its_request() -> None:
    """generic_nack has no body; one that carries octets (noted as a peer error) still ends
    the submit it answers with its status, rather than leaving it to time out."""
    peer = bound()
    seq = peer.submit()
    peer.send(frame(CommandId.generic_nack, S.ESME_RINVCMDLEN, seq, b"\x00\x05\xff\xff"))
    events = peer.events()
    assert isinstance(events[0], PeerError)
    assert answers(events)[seq].result.command_status == S.ESME_RINVCMDLEN
    session = Session(settings_())  # and a bind it answers fails with its status at once
    binding = Peer(session)
    session.start_bind(now=0.0)
    (bind,) = binding.sent()
    binding.send(frame(CommandId.generic_nack, 0x0D, bind.sequence_number, b"\x00\x05\xff\xff"))
    assert any(isinstance(e, BindFailed) for e in binding.events())


def test_generic_nack_with_status_0_is_not_an_acceptance() -> None:
    """A generic_nack that says ESME_ROK for a submit is a broken SMSC, not a submitted
    segment with no id (which no receipt could ever match): it retries like a system error."""
    peer = bound()
    seq = peer.submit()
    peer.send(pdus.GenericNack(sequence_number=seq, command_status=S.ESME_ROK))
    result = answers(peer.events())[seq].result
    assert (result.command_status, result.message_id) == (S.ESME_RSYSERR, None)
    assert result.status_class is not StatusClass.SUCCESS


def test_undecodable_resp_keeps_its_header_status() -> None:
    """A submit_sm_resp whose message_id cannot be read still ends the submit with its status."""
    peer = bound()
    seq = peer.submit()
    peer.sent()
    peer.send(frame(CommandId.submit_sm_resp, 0, seq, b"x" * 300 + b"\0"))
    events = peer.events()
    assert isinstance(events[0], PeerError)
    result = answers(events)[seq].result
    assert (result.command_status, result.message_id, result.unknown) == (0, None, False)
    assert peer.session.data_to_send() == b""  # an answer is never answered


def test_receiver_cannot_submit() -> None:
    """A receiver bind refuses submits."""
    peer = bound(bind_mode=BindMode.RECEIVER)
    assert peer.session.try_submit(BODY, now=0.0) is None
    assert peer.session.ready_at(now=0.0) is None


def test_not_bound_refuses_submits() -> None:
    """Before the bind is answered nothing can be submitted."""
    session = Session(settings_())
    assert session.try_submit(BODY, now=0.0) is None
    session.start_bind(now=0.0)
    assert session.try_submit(BODY, now=0.0) is None


# --- sequence numbers ---------------------------------------------------------------------------


def test_sequence_numbers_wrap_to_one() -> None:
    """After 0x7FFFFFFF comes 1 (SMPP v3.4 5.1.4), never 0 or a 32-bit number."""
    peer = bound(first_sequence_number=MAX_SEQUENCE_NUMBER - 2, window=10)
    seqs = [peer.submit() for _ in range(4)]
    assert seqs == [MAX_SEQUENCE_NUMBER - 1, MAX_SEQUENCE_NUMBER, 1, 2]


def test_wrapped_numbers_skip_ones_still_in_use() -> None:
    """After a wrap, numbers still outstanding or timed out are skipped, not reused."""
    peer = bound(window=10)
    busy = [peer.submit() for _ in range(3)]  # 2, 3, 4 (the bind took 1)
    peer.advance(5.0)  # they time out: their late answers may still come
    late = peer.submit()
    peer.session._seq = MAX_SEQUENCE_NUMBER  # white box: jump to the end of the number space
    assert [peer.submit() for _ in range(3)] == [MAX_SEQUENCE_NUMBER, 1, late + 1]
    assert set(busy).isdisjoint({MAX_SEQUENCE_NUMBER, 1, late + 1})


class WindowMachine(RuleBasedStateMachine):
    """Any sequence of submits, answers in any order and timeouts keeps the window's promises: a
    submit that timed out holds its slot until its late answer, or 2 response timeouts. (The
    window alone: the drop after LOST_IN_A_ROW lost submits is tested on its own.)"""

    def __init__(self) -> None:
        super().__init__()
        self.peer = bound(window=5, first_sequence_number=MAX_SEQUENCE_NUMBER - 20)
        self.peer.session._lost_limit = 1 << 30
        self.outstanding: set[int] = set()
        self.held: dict[int, float] = {}  # timed out, unanswered -> when the slot is given up
        self.ended: set[int] = set()
        self.sent = 0

    def _collect(self) -> None:
        now = self.peer.now
        self.held = {seq: at for seq, at in self.held.items() if at > now}
        for event in self.peer.events():
            if isinstance(event, SubmitAnswered | ResponseTimedOut):
                seq = event.sequence_number
                assert seq in self.outstanding
                self.outstanding.discard(seq)
                self.ended.add(seq)
                if isinstance(event, ResponseTimedOut):
                    self.held[seq] = now + 5.0
            elif isinstance(event, LateResponse):
                assert event.sequence_number in self.held
                del self.held[event.sequence_number]

    @rule()
    def submit(self) -> None:
        seq = self.peer.session.try_submit(BODY, now=self.peer.now)
        if len(self.outstanding) + len(self.held) >= 5:
            assert seq is None
            return
        assert seq is not None
        assert 1 <= seq <= MAX_SEQUENCE_NUMBER
        assert seq not in self.outstanding
        self.outstanding.add(seq)
        self.sent += 1

    @precondition(lambda self: self.outstanding or self.held)
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.outstanding | self.held.keys())))
        self.peer.answer(seq, message_id=str(seq))
        self._collect()

    @rule(seconds=st.floats(0.0, 6.0))
    def time_passes(self, seconds: float) -> None:
        self.peer.advance(seconds)
        self._collect()
        sent = self.peer.sent()
        enquiries = [p for p in sent if isinstance(p, pdus.EnquireLink)]
        for p in enquiries:
            self.peer.send(pdus.EnquireLinkResp(sequence_number=p.sequence_number))

    @invariant()
    def window_holds(self) -> None:
        session = self.peer.session
        assert session.in_flight == len(self.outstanding)
        assert session.room == (5 - len(self.outstanding) - len(self.held)) * session.can_submit


TestWindowMachine = WindowMachine.TestCase
TestWindowMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


# --- timeouts -----------------------------------------------------------------------------------


def test_response_timeout_and_late_answer() -> None:
    """A submit unanswered for response_timeout_s ends unknown; its late answer is counted and
    dropped, never matched to another submit."""
    peer = bound(response_timeout_s=5.0)
    first = peer.submit()
    peer.now = 1.0
    second = peer.submit()
    assert peer.session.next_deadline() == 5.0
    peer.advance(3.9)
    assert peer.events() == []
    peer.advance(0.1)
    assert peer.events() == [ResponseTimedOut(first)]
    assert peer.session.next_deadline() == 6.0
    peer.send(pdus.DeliverSmResp(sequence_number=first))  # not the answer it was waiting for
    assert isinstance(peer.events()[0], PeerError)
    assert peer.session.room == 2  # of 4: the first is still the SMSC's until it answers
    peer.answer(first, message_id="late")
    assert peer.events() == [LateResponse(CommandId.submit_sm_resp, first, 0, "late", 5.0)]
    assert peer.session.in_flight == 1
    assert peer.session.room == 3
    peer.answer(second, message_id="ok")
    assert answers(peer.events())[second].result.message_id == "ok"


def test_a_late_answer_with_an_undecodable_body_still_frees_its_slot() -> None:
    """A timed-out submit's late resp whose message_id cannot be read (no NUL within 256
    octets) is still that submit's answer: its status counts and its slot is free."""
    peer = bound(response_timeout_s=5.0, window=2)
    seq = peer.submit()
    peer.advance(5.0)
    assert peer.events() == [ResponseTimedOut(seq)]
    assert peer.session.room == 1
    peer.send(frame(CommandId.submit_sm_resp, 0, seq, b"x" * 300))
    events = peer.events()
    assert isinstance(events[0], PeerError)
    assert events[1:] == [LateResponse(CommandId.submit_sm_resp, seq, 0, None, 5.0)]
    assert peer.session.room == 2


def test_a_timed_out_submit_never_answered_frees_its_slot_after_two_timeouts() -> None:
    """An SMSC that lost a submit yet answers the rest: its slot is given up 2 timeouts from
    the sending (SlotsFreed, which wakes the send loop), not held until the bind drops."""
    peer = bound(response_timeout_s=5.0, window=2)
    lost = peer.submit()
    peer.advance(5.0)
    assert ResponseTimedOut(lost) in peer.events()
    for pdu in peer.sent():  # the link is alive: any probe is answered
        if isinstance(pdu, pdus.EnquireLink):
            peer.send(pdus.EnquireLinkResp(sequence_number=pdu.sequence_number))
    assert peer.session.room == 1
    assert peer.session.next_deadline() == 10.0
    peer.advance(4.9)
    assert peer.session.room == 1
    peer.advance(0.1)
    assert SlotsFreed(1) in peer.events()
    assert peer.session.room == 2
    peer.answer(lost, message_id="very late")  # still known as late, not a stray
    assert peer.events() == [LateResponse(CommandId.submit_sm_resp, lost, 0, "very late", 10.0)]


def test_a_timed_out_submits_answer_is_taken_as_late_for_late_answer_s_then_as_stray() -> None:
    """A lost submit's number is remembered LATE_ANSWER_S from its sending, not for the
    bind's life: an answer later than that is a stray (and its number is free again)."""
    peer = bound(response_timeout_s=5.0, enquire_link_interval_s=30.0)
    lost = peer.submit()
    peer.advance(5.0)
    assert ResponseTimedOut(lost) in peer.events()
    while peer.now < LATE_ANSWER_S - 5.0:  # the bind is alive: every probe is answered
        assert peer.session.answer_may_come(lost)
        peer.advance(5.0)
        for pdu in peer.sent():
            if isinstance(pdu, pdus.EnquireLink):
                peer.send(pdus.EnquireLinkResp(sequence_number=pdu.sequence_number))
    assert peer.session.answer_may_come(lost)
    peer.advance(5.0)
    assert not peer.session.answer_may_come(lost)
    assert peer.session.state is State.BOUND_TRX
    peer.events()
    peer.answer(lost, message_id="hours late")
    (event,) = peer.events()
    assert isinstance(event, PeerError)
    assert event.reason == "response matches no request"


def test_with_a_long_response_timeout_a_late_answer_is_awaited_longer_too() -> None:
    """response_timeout_s of 400 s: the slot is held to 800 s and the segment goes out again
    at 800 s, so an answer at 700 s is late, not a stray; forgotten only at 1,200 s."""
    peer = bound(response_timeout_s=400.0, enquire_link_interval_s=30.0)
    lost = peer.submit()
    while peer.now < 1199.0:  # the bind is alive: every probe is answered
        peer.advance(1.0 if peer.now >= 1190.0 else 10.0)
        for pdu in peer.sent():
            if isinstance(pdu, pdus.EnquireLink):
                peer.send(pdus.EnquireLinkResp(sequence_number=pdu.sequence_number))
        assert peer.session.answer_may_come(lost) is (peer.now >= 400.0)
    peer.advance(1.0)
    assert not peer.session.answer_may_come(lost)


def test_enquire_link_when_idle_and_answered() -> None:
    """After enquire_link_interval_s with nothing received, an enquire_link goes out."""
    peer = bound(enquire_link_interval_s=30.0)
    assert peer.session.next_deadline() == 30.0
    peer.advance(29.0)
    assert peer.sent() == []
    peer.advance(1.0)
    (probe,) = peer.sent()
    assert isinstance(probe, pdus.EnquireLink)
    peer.send(pdus.EnquireLinkResp(sequence_number=probe.sequence_number))
    peer.advance(10.0)
    assert peer.events() == []
    assert peer.session.next_deadline() == 60.0


def test_an_smsc_that_talks_but_never_answers_our_enquire_link_is_dropped() -> None:
    """Its own enquire_links do not stand in for answers to ours: ours go out on schedule
    anyway, and two in a row unanswered drop the bind before a submit pays for it."""
    peer = bound(enquire_link_interval_s=30.0, response_timeout_s=5.0)
    probes = 0
    for second in range(1, 60):
        peer.now = float(second)
        if second % 2:  # every other second, so that each of our probes sees its traffic
            peer.send(pdus.EnquireLink(sequence_number=1000 + second))
        peer.advance(0.0)
        probes += sum(isinstance(p, pdus.EnquireLink) for p in peer.sent())
        if peer.session.closed:
            break
    assert probes == 2
    assert closing(peer.events()).reason is CloseReason.ENQUIRE_LINK_TIMEOUT
    assert peer.now == 40.0


def test_an_smsc_slower_than_the_timeout_keeps_its_bind() -> None:
    """Everything answered 1.5 timeouts late, probes included: late answers to our submits
    show it alive, so probes that time out one after another never drop it."""
    peer = bound(enquire_link_interval_s=30.0, response_timeout_s=2.0)
    for _ in range(3):
        seq = peer.submit()
        probes = []
        for _ in range(3):  # 3 s in 1 s steps: the timeout at 2 s sends a probe
            peer.advance(1.0)
            probes += [p for p in peer.sent() if isinstance(p, pdus.EnquireLink)]
        peer.answer(seq, message_id=str(seq))  # 3 s after: late
        peer.advance(1.0)  # the probe sent at 2 s times out at 4 s
        for probe in probes:
            peer.send(pdus.EnquireLinkResp(sequence_number=probe.sequence_number))
        assert peer.session.state is State.BOUND_TRX
        peer.events()


def test_an_smsc_that_answers_probes_but_swallows_submits_is_dropped() -> None:
    """enquire_link answered every time, no submit ever answered: once LOST_IN_A_ROW submits
    have gone unanswered for HOLD_TIMED_OUT timeouts the bind is dropped (requests_unanswered)
    so that it binds again, maybe to another node, instead of spending every attempt."""
    peer = bound(enquire_link_interval_s=30.0, response_timeout_s=2.0, window=5)
    seqs = [peer.submit() for _ in range(LOST_IN_A_ROW)]
    peer.sent()
    closed = None
    for _ in range(12):  # 6 s in half-second steps, each probe answered at once
        peer.advance(0.5)
        for probe in peer.sent():
            if isinstance(probe, pdus.EnquireLink):
                peer.send(pdus.EnquireLinkResp(sequence_number=probe.sequence_number))
        closing = [e for e in peer.events() if isinstance(e, ConnectionShouldClose)]
        if closing:
            closed = (peer.now, closing[0].reason)
            break
    assert closed == (2.0 * HOLD_TIMED_OUT, CloseReason.REQUESTS_UNANSWERED)
    assert len(seqs) == LOST_IN_A_ROW


def test_enquire_link_unanswered_closes_and_abandons() -> None:
    """No answer to enquire_link means the link is dead: unbind is sent (not awaited), the
    session closes and every outstanding submit's outcome is unknown."""
    peer = bound(enquire_link_interval_s=30.0, response_timeout_s=10.0)
    peer.advance(30.0)
    (probe,) = peer.sent()
    assert isinstance(probe, pdus.EnquireLink)
    peer.now = 31.0
    seqs = [peer.submit() for _ in range(2)]
    peer.sent()
    peer.advance(8.9)
    assert peer.events() == []
    peer.advance(0.1)
    close = closing(peer.events())
    assert close.reason is CloseReason.ENQUIRE_LINK_TIMEOUT
    assert close.abandoned == tuple(seqs)
    (unbind,) = peer.sent()
    assert isinstance(unbind, pdus.Unbind)
    assert peer.session.state is State.CLOSED


def test_slow_enquire_link_with_traffic_is_not_death() -> None:
    """An unanswered enquire_link while other PDUs arrive does not close a live link."""
    peer = bound(enquire_link_interval_s=30.0, response_timeout_s=5.0)
    peer.advance(30.0)
    peer.sent()
    peer.now = 32.0
    peer.send(pdus.EnquireLink(sequence_number=7))
    peer.advance(3.0)
    assert peer.session.state is State.BOUND_TRX


def test_smsc_that_stops_answering_is_dropped_though_it_still_sends() -> None:
    """A submit that times out with nothing answered since it went out sends an enquire_link
    at once; the SMSC's own enquire_links do not count as life, and with no answer to ours
    either the bind is dropped, instead of every message spending its attempts on it."""
    peer = bound(enquire_link_interval_s=30.0, response_timeout_s=5.0)
    peer.now = 1.0
    seq = peer.submit()
    peer.sent()
    peer.advance(2.0)
    peer.send(pdus.EnquireLink(sequence_number=70))
    peer.sent()
    peer.advance(3.0)
    assert [type(e) for e in peer.events()] == [ResponseTimedOut]
    (probe,) = peer.sent()
    assert isinstance(probe, pdus.EnquireLink)
    peer.advance(2.0)
    peer.send(pdus.EnquireLink(sequence_number=71))
    peer.sent()
    peer.advance(3.0)
    close = closing(peer.events())
    assert close.reason is CloseReason.REQUESTS_UNANSWERED
    assert peer.session.state is State.CLOSED
    assert seq not in close.abandoned  # already timed out, reported once


def test_one_lost_resp_among_answers_is_no_reason_to_probe() -> None:
    """A submit that times out while later ones were answered is a lost resp, not a dead SMSC:
    no early enquire_link; and an answered probe keeps the bind."""
    peer = bound(enquire_link_interval_s=30.0, response_timeout_s=5.0)
    lost, answered = peer.submit(), peer.submit()
    peer.sent()
    peer.advance(1.0)
    peer.answer(answered, message_id="a")
    peer.advance(4.0)
    assert ResponseTimedOut(lost) in peer.events()
    assert peer.sent() == []
    silent = peer.submit()
    peer.sent()
    peer.advance(5.0)
    assert ResponseTimedOut(silent) in peer.events()
    (probe,) = peer.sent()
    assert isinstance(probe, pdus.EnquireLink)
    peer.send(pdus.EnquireLinkResp(sequence_number=probe.sequence_number))
    peer.advance(5.0)
    assert peer.session.state is State.BOUND_TRX
    assert peer.events() == [SlotsFreed(1)]  # the lost one's slot, given up: nothing else


def test_answers_the_smscs_enquire_link() -> None:
    """The SMSC's enquire_link gets enquire_link_resp with its own number."""
    peer = bound()
    peer.send(pdus.EnquireLink(sequence_number=99))
    assert peer.session.data_to_send() == frame(CommandId.enquire_link_resp, 0, 99, b"")


# --- what the SMSC sends ------------------------------------------------------------------------


def test_a_nacked_enquire_link_is_an_answer_and_the_next_waits_its_interval() -> None:
    """An SMSC that nacks enquire_link (ESME_RINVCMDID) is alive: no new probe until the next
    interval, however often the bind is idle, and the bind stays up."""
    peer = bound(enquire_link_interval_s=30.0)
    sent_probes = 0
    for _ in range(3):
        peer.advance(30.0)
        (probe,) = peer.sent()
        assert isinstance(probe, pdus.EnquireLink)
        sent_probes += 1
        peer.send(frame(CommandId.generic_nack, S.ESME_RINVCMDID, probe.sequence_number, b""))
        peer.session.handle_timer(now=peer.now)
        assert peer.sent() == []
        assert peer.session.next_deadline() == peer.now + 30.0
    assert sent_probes == 3
    assert peer.events() == []
    assert peer.session.state is State.BOUND_TRX


@pytest.mark.parametrize("with_resps", [False, True])
def test_an_unbind_crossing_ours_ends_the_session_with_every_submit_reported(
    with_resps: bool,
) -> None:
    """Our drain's unbind and the SMSC's cross: its unbind, then its unbind_resp to ours, in
    one read. The SMSC's unbind is answered, the session ends once, and a submit still out is
    handed back as abandoned, never left without a result."""
    peer = bound(window=2)
    answered, out = peer.submit(), peer.submit()
    peer.sent()
    peer.session.close(now=0.0, drain_timeout_s=1.0)
    peer.advance(1.0)  # the drain deadline: our unbind goes with `out` unanswered
    (unbind,) = peer.sent()
    assert isinstance(unbind, pdus.Unbind)
    resps = [pdus.SubmitSmResp(sequence_number=answered, message_id="m")] if with_resps else []
    peer.send(
        *resps,
        pdus.Unbind(sequence_number=42),
        pdus.UnbindResp(sequence_number=unbind.sequence_number),
    )
    assert peer.session.data_to_send() == frame(CommandId.unbind_resp, 0, 42, b"")
    events = peer.events()
    abandoned = (out,) if with_resps else (answered, out)
    assert events[-1] == ConnectionShouldClose(CloseReason.PEER_UNBIND, abandoned)
    assert [e for e in events if isinstance(e, ConnectionShouldClose)] == [events[-1]]
    assert list(answers(events)) == ([answered] if with_resps else [])
    assert peer.session.state is State.CLOSED
    assert peer.session.in_flight == 0


def test_connection_lost_hands_back_submits_whatever_the_state() -> None:
    """Should a read fail midway (a bug raising after the state moved to CLOSED, as the
    crossed unbinds once did), the lost connection still hands back every submit out."""
    peer = bound()
    seq = peer.submit()
    peer.sent()
    peer.session.state = State.CLOSED  # as a read cut short after a transition leaves it
    peer.session.connection_lost()
    assert peer.events() == [ConnectionShouldClose(CloseReason.CONNECTION_LOST, (seq,))]
    peer.session.connection_lost()  # once only
    assert peer.events() == []


def test_an_unbind_before_the_bind_resp_ends_the_session() -> None:
    """An SMSC that unbinds and then answers our bind in the same read: closed, not bound."""
    session = Session(settings_())
    peer = Peer(session)
    session.start_bind(now=0.0)
    (bind,) = peer.sent()
    peer.send(pdus.Unbind(sequence_number=9), bind_resp(bind))
    assert peer.session.data_to_send() == frame(CommandId.unbind_resp, 0, 9, b"")
    events = peer.events()
    assert not any(isinstance(e, Bound) for e in events)
    assert events[-1] == ConnectionShouldClose(CloseReason.PEER_UNBIND)
    assert session.state is State.CLOSED


def test_smsc_unbind() -> None:
    """The SMSC's unbind is answered at once when nothing is owed; with a submit unanswered,
    the unbind_resp waits half of unbind_timeout_s for its answer (an SMSC that closes on
    the unbind_resp never sends it: the submit would be sent again, a duplicate SMS), and
    the session closes at unbind_timeout_s with what is outstanding unknown."""
    peer = bound()
    peer.send(pdus.Unbind(sequence_number=41))
    assert peer.session.data_to_send() == frame(CommandId.unbind_resp, 0, 41, b"")
    assert peer.events() == [Unbound(by_peer=True), ConnectionShouldClose(CloseReason.PEER_UNBIND)]
    peer = bound()
    seq = peer.submit()
    peer.sent()
    peer.send(pdus.Unbind(sequence_number=42))
    assert peer.session.data_to_send() == b""
    assert peer.events() == [Unbound(by_peer=True)]
    assert not peer.session.can_submit
    timeout_s = peer.session.settings.unbind_timeout_s
    assert peer.session.next_deadline() == peer.now + timeout_s / 2
    peer.advance(timeout_s / 2)
    assert peer.session.data_to_send() == frame(CommandId.unbind_resp, 0, 42, b"")
    assert peer.session.next_deadline() == peer.now + timeout_s / 2
    assert peer.events() == []
    peer.advance(timeout_s / 2)
    assert peer.events() == [ConnectionShouldClose(CloseReason.PEER_UNBIND, (seq,))]


def test_the_unbind_resp_waits_for_the_answers_the_smsc_still_owes() -> None:
    """An SMSC that unbinds with submits unanswered and writes their answers before it reads
    our unbind_resp: they are read, then the unbind_resp goes and the session closes."""
    peer = bound()
    seq = peer.submit()
    peer.sent()
    peer.send(pdus.Unbind(sequence_number=42))
    assert peer.session.data_to_send() == b""
    peer.advance(0.1)
    peer.send(pdus.SubmitSmResp(sequence_number=seq, message_id="m1"))
    assert peer.session.data_to_send() == frame(CommandId.unbind_resp, 0, 42, b"")
    events = peer.events()
    assert answers(events)[seq].result.message_id == "m1"
    assert events[-1] == ConnectionShouldClose(CloseReason.PEER_UNBIND, ())


def test_an_smsc_that_unbinds_and_closes_ends_the_session_at_once() -> None:
    peer = bound()
    seq = peer.submit()
    peer.sent()
    peer.send(pdus.Unbind(sequence_number=42))
    assert peer.events() == [Unbound(by_peer=True)]
    peer.session.connection_lost()
    assert peer.events() == [ConnectionShouldClose(CloseReason.PEER_UNBIND, (seq,))]


def test_enquire_link_and_unbind_with_stray_octets_are_honoured() -> None:
    """They have no body: one that carries octets is still answered ESME_ROK, and the unbind
    still ends the session (noted as a peer error)."""
    peer = bound()
    peer.send(frame(CommandId.enquire_link, 0, 7, b"\x00"))
    assert peer.session.data_to_send() == frame(CommandId.enquire_link_resp, 0, 7, b"")
    assert isinstance(peer.events()[0], PeerError)
    peer.send(frame(CommandId.unbind, 0, 8, b"\x00\x00"))
    assert peer.session.data_to_send() == frame(CommandId.unbind_resp, 0, 8, b"")
    assert Unbound(by_peer=True) in peer.events()
    assert peer.session.state is State.CLOSED


def test_answers_read_with_the_smsc_unbind_still_count() -> None:
    """An SMSC draining its window as it unbinds writes resps behind its unbind, in that read
    or later ones; each one dropped would be a submit resent, a duplicate SMS. Requests after
    it are not answered; the session closes once the last answer is in."""
    peer = bound(window=5)
    seqs = [peer.submit() for _ in range(5)]
    peer.sent()
    resps = [pdus.SubmitSmResp(sequence_number=seq, message_id=f"m{seq}") for seq in seqs]
    enquire = pdus.EnquireLink(sequence_number=77)
    peer.send(resps[0], resps[1], pdus.Unbind(sequence_number=42), resps[2], enquire, resps[3])
    assert peer.session.data_to_send() == b""  # the unbind_resp waits for the last answer
    events = peer.events()
    got = [answers(events)[seq].result.message_id for seq in seqs[:4]]
    assert got == [f"m{seq}" for seq in seqs[:4]]
    assert Unbound(by_peer=True) in events
    assert not any(isinstance(e, ConnectionShouldClose) for e in events)
    peer.send(resps[4])  # a later read, as an SMSC writes it after its unbind: still counts
    assert peer.session.data_to_send() == frame(CommandId.unbind_resp, 0, 42, b"")
    events = peer.events()
    assert answers(events)[seqs[4]].result.message_id == f"m{seqs[4]}"
    assert events[-1] == ConnectionShouldClose(CloseReason.PEER_UNBIND, ())
    assert peer.session.state is State.CLOSED
    peer.send(resps[4])  # the connection is over
    assert peer.events() == []


def test_a_delivery_read_before_the_smsc_unbind_is_answered_before_the_unbind_resp() -> None:
    """A deliver_sm the SMSC wrote just before its unbind is stored by its handler while the
    session ends: its deliver_sm_resp still goes, before the unbind_resp (an SMSC closes once
    it has that), and the session closes then. Dropped, the receipt or MO came again."""
    peer = bound()
    deliver = pdus.DeliverSm(sequence_number=5, esm_class=0x04, short_message=b"id:1 stat:DELIVRD")
    peer.send(deliver, pdus.Unbind(sequence_number=42))
    events = peer.events()
    assert [type(e) for e in events] == [DeliverReceived, Unbound]
    assert peer.session.data_to_send() == b""  # the unbind_resp waits for the answer
    peer.advance(0.1)
    assert peer.events() == []
    received = events[0]
    assert isinstance(received, DeliverReceived)
    peer.session.answer(received.pdu, 0, now=peer.now)
    assert peer.session.data_to_send() == (
        frame(CommandId.deliver_sm_resp, 0, 5, b"\0") + frame(CommandId.unbind_resp, 0, 42, b"")
    )
    assert peer.events() == [ConnectionShouldClose(CloseReason.PEER_UNBIND, ())]


def test_a_delivery_still_unanswered_at_the_unbind_deadline_is_abandoned() -> None:
    """A handler that outlasts unbind_timeout_s: the unbind_resp goes then, and the session
    closes; the answer that comes after is not written."""
    peer = bound()
    peer.send(pdus.DeliverSm(sequence_number=5), pdus.Unbind(sequence_number=42))
    received = peer.events()[0]
    assert isinstance(received, DeliverReceived)
    peer.advance(peer.session.settings.unbind_timeout_s)
    assert peer.session.data_to_send() == frame(CommandId.unbind_resp, 0, 42, b"")
    assert peer.events() == [ConnectionShouldClose(CloseReason.PEER_UNBIND, ())]
    peer.session.answer(received.pdu, 0, now=peer.now)
    assert peer.session.data_to_send() == b""
    assert peer.session.inbound_unanswered == 0


def test_deliver_answered_with_handler_status() -> None:
    """deliver_sm and data_sm are handed on and answered only when `answer` is called."""
    peer = bound()
    deliver = pdus.DeliverSm(sequence_number=5, esm_class=0x04, short_message=b"id:1 stat:DELIVRD")
    data = pdus.DataSm(sequence_number=6, source_addr="447700900123")
    peer.send(deliver, data)
    events = peer.events()
    assert [type(e) for e in events] == [DeliverReceived, DeliverReceived]
    assert peer.session.data_to_send() == b""
    assert peer.session.inbound_unanswered == 2
    first, second = (e.pdu for e in events if isinstance(e, DeliverReceived))
    peer.session.answer(second, S.ESME_RX_T_APPN, now=0.0)
    peer.session.answer(first, 0, now=0.0)
    assert peer.session.data_to_send() == (
        frame(CommandId.data_sm_resp, S.ESME_RX_T_APPN, 6, b"\0")
        + frame(CommandId.deliver_sm_resp, 0, 5, b"\0")
    )
    assert peer.session.inbound_unanswered == 0


def test_unknown_tlv_is_skipped() -> None:
    """A deliver_sm with a vendor TLV is delivered with the TLV kept, not refused."""
    peer = bound()
    peer.send(pdus.DeliverSm(sequence_number=5, tlvs=(Tlv(0x1400, b"\x01\x02"),)))
    (event,) = peer.events()
    assert isinstance(event, DeliverReceived)
    assert event.pdu.tlvs == (Tlv(0x1400, b"\x01\x02"),)


def test_undecodable_request_answered_with_its_status() -> None:
    """A deliver_sm whose body cannot be decoded gets deliver_sm_resp with the codec's status."""
    peer = bound()
    body = bytearray(encode_body(pdus.DeliverSm(short_message=b"hi")))
    body[body.index(b"hi") - 1] = 200  # sm_length beyond the PDU
    peer.send(frame(CommandId.deliver_sm, 0, 8, bytes(body)))
    assert isinstance(peer.events()[0], PeerError)
    assert peer.session.data_to_send() == frame(
        CommandId.deliver_sm_resp, S.ESME_RINVMSGLEN, 8, b""
    )
    assert peer.session.state is State.BOUND_TRX


@pytest.mark.parametrize(
    ("cid", "answer"),
    [
        (CommandId.submit_sm, frame(CommandId.generic_nack, S.ESME_RINVCMDID, 8, b"")),
        (CommandId.query_sm, frame(CommandId.generic_nack, S.ESME_RINVCMDID, 8, b"")),
        (CommandId.alert_notification, b""),
        (CommandId.outbind, b""),
    ],
    ids=["submit_sm", "query_sm", "alert_notification", "outbind"],
)
def test_undecodable_request_is_answered_as_its_decodable_twin(
    cid: CommandId, answer: bytes
) -> None:
    """A request we never take is nacked ESME_RINVCMDID, decodable or not (not given a resp
    that suggests it was considered), and one without a response gets none."""
    peer = bound()
    peer.send(frame(cid, 0, 8, b"\xff" * 64))
    assert isinstance(peer.events()[0], PeerError)
    assert peer.session.data_to_send() == answer
    assert peer.session.state is State.BOUND_TRX


def test_unknown_command_gets_generic_nack() -> None:
    """An unknown command_id is nacked with ESME_RINVCMDID and the session goes on."""
    peer = bound()
    peer.send(frame(0x00000777, 0, 9, b""))
    assert peer.session.data_to_send() == frame(CommandId.generic_nack, S.ESME_RINVCMDID, 9, b"")
    peer.send(frame(0x80000777, 0, 10, b""))  # an unknown answer is never answered
    assert peer.session.data_to_send() == b""
    assert peer.session.state is State.BOUND_TRX


def test_unexpected_request_gets_generic_nack() -> None:
    """A request an SMSC should never send (submit_sm) is nacked, not acted on."""
    peer = bound()
    peer.send(pdus.SubmitSm(sequence_number=11))
    assert peer.session.data_to_send() == frame(CommandId.generic_nack, S.ESME_RINVCMDID, 11, b"")


def test_framing_lost_closes() -> None:
    """An impossible command_length is nacked, unbind is sent, and the session closes."""
    peer = bound()
    seq = peer.submit()
    peer.sent()
    peer.send(struct.pack(">IIII", 0xDEADBEEF, 4, 0, 3))
    close = closing(peer.events())
    assert close == ConnectionShouldClose(CloseReason.FRAMING_LOST, (seq,))
    nack, unbind = peer.sent()
    assert isinstance(nack, pdus.GenericNack)
    assert nack.command_status == S.ESME_RINVCMDLEN
    assert isinstance(unbind, pdus.Unbind)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 17))
def test_arbitrary_bytes_never_raise(data: bytes, chunk: int) -> None:
    """Whatever the SMSC sends, in any chunking, the session answers with events, never raises."""
    peer = bound()
    peer.submit()
    for i in range(0, len(data), chunk):
        peer.send(data[i : i + chunk])
    peer.events()
    peer.sent()


# --- throttling and rates -----------------------------------------------------------------------


def test_throttled_answer_slows_the_bind() -> None:
    """ESME_RTHROTTLED pauses the bind for throttle_backoff_s and halves its rate, once there
    are enough of them to mean it (SPORADIC_MIN_THROTTLES, here all of a window); each submit
    itself is a temporary result, for the send loop to retry."""
    peer = bound(window=10, bind_tps=8, throttle_backoff_s=1.0)
    seqs = []
    for i in range(SPORADIC_MIN_THROTTLES):  # at the bind's pace: one every 1.02 / 8 s
        peer.now = i * 0.13
        seqs.append(peer.submit())
    peer.now = 0.6
    for seq in seqs:
        peer.answer(seq, S.ESME_RTHROTTLED)
    events = peer.events()
    throttled = [e for e in events if isinstance(e, Throttled)]
    # One window halves once: 4 per (slightly widened) second.
    assert throttled == [Throttled(S.ESME_RTHROTTLED, 4.0 / ARRIVAL_MARGIN, 1.6)]
    assert all(a.result.status_class is StatusClass.TEMPORARY for a in answers(events).values())
    assert peer.session.try_submit(BODY, now=1.5) is None
    assert peer.session.ready_at(now=1.5) == 1.6
    # From 1.6 on: 4 per second, one every 1.02 / 4 s (one step ahead at most), and at 2.6, a
    # quiet backoff period later, 5.
    sent = [peer.session.try_submit(BODY, now=1.6 + i * 0.05) for i in range(21)]
    times = [round(1.6 + i * 0.05, 2) for i, s in enumerate(sent) if s is not None]
    assert times == [1.6, 1.65, 1.9, 2.15, 2.6]
    # Each quiet backoff period adds a tenth of the ceiling (8) back, at least one.
    assert peer.session.rate.allows(3.2)
    assert peer.session.rate.limit == 5


def test_queue_full_also_throttles() -> None:
    """ESME_RMSGQFUL is treated as a request to slow down too."""
    peer = bound(window=10)
    for seq in [peer.submit() for _ in range(SPORADIC_MIN_THROTTLES)]:
        peer.answer(seq, S.ESME_RMSGQFUL)
    assert any(isinstance(e, Throttled) for e in peer.events())
    assert peer.session.try_submit(BODY, now=0.5) is None


def test_a_carriers_own_codes_are_read_its_way() -> None:
    """With the carrier's StatusPolicy, its vendor code 0x458 slows the bind down as
    ESME_RTHROTTLED does, 0x401 is retried, and ESME_RSYSERR (which it uses for numbers it
    will never take) fails at once; an unlisted vendor code stays permanent."""
    statuses = StatusPolicy.of(temporary=[0x401], permanent=[S.ESME_RSYSERR], throttling=[0x458])
    peer = bound(window=20, statuses=statuses)
    seqs = {code: peer.submit() for code in (0x401, S.ESME_RSYSERR, 0x402)}
    for code, seq in seqs.items():
        peer.answer(seq, code)
    first = answers(peer.events())
    classes = {seq: a.result.status_class for seq, a in first.items()}
    assert classes == {
        seqs[0x401]: StatusClass.TEMPORARY,
        seqs[S.ESME_RSYSERR]: StatusClass.PERMANENT,
        seqs[0x402]: StatusClass.PERMANENT,
    }
    assert not any(a.result.throttling for a in first.values())
    for seq in [peer.submit() for _ in range(SPORADIC_MIN_THROTTLES)]:
        peer.answer(seq, 0x458)
    events = peer.events()
    assert any(isinstance(e, Throttled) and e.command_status == 0x458 for e in events)
    results = [a.result for a in answers(events).values()]
    assert all(r.status_class is StatusClass.TEMPORARY and r.throttling for r in results)
    assert all(r.pacing for r in results)  # retried with no attempt spent
    assert peer.session.try_submit(BODY, now=0.5) is None


def test_bind_tps_cap() -> None:
    """A bind never sends more than bind_tps in any one-second span, counted 2% wider
    (ARRIVAL_MARGIN) for the jitter on the way to the SMSC, and spreads them over it (one every
    1.02 / 5 s, one step ahead at most): not the second's five at once."""
    peer = bound(window=100, bind_tps=5)
    sent = [peer.session.try_submit(BODY, now=i * 0.1) for i in range(20)]
    times = [i * 0.1 for i, s in enumerate(sent) if s is not None]
    assert times == pytest.approx([0.0, 0.1, 0.3, 0.5, 0.7, 1.1, 1.2, 1.4, 1.6, 1.8])


def test_carrier_rate_is_shared() -> None:
    """Two binds sharing a carrier cap send at most that many together, at its pace."""
    carrier = SlidingWindow.for_rate(3, paced=True)
    a = bound(window=10, carrier_rate=carrier)
    b = bound(window=10, carrier_rate=carrier)
    step = ARRIVAL_MARGIN / 3
    timed = [(a, 0.0), (b, 0.0), (a, 0.0), (b, step), (a, step)]  # one step ahead at most
    got = [s.session.try_submit(BODY, now=now) for s, now in timed]
    assert [g is not None for g in got] == [True, True, False, True, False]
    assert a.session.ready_at(now=1.5 * step) == ARRIVAL_MARGIN  # three in the span already


# --- graceful close -----------------------------------------------------------------------------


def test_close_drains_then_unbinds() -> None:
    """close stops submits, waits for outstanding answers, unbinds, and ends on unbind_resp."""
    peer = bound()
    seq = peer.submit()
    peer.sent()
    peer.session.close(now=0.0, drain_timeout_s=5.0)
    assert peer.session.try_submit(BODY, now=0.0) is None
    assert peer.sent() == []
    peer.answer(seq, message_id="m")
    (unbind,) = peer.sent()
    assert isinstance(unbind, pdus.Unbind)
    assert peer.session.state is State.UNBINDING
    peer.send(pdus.UnbindResp(sequence_number=unbind.sequence_number))
    events = peer.events()
    assert events[-2:] == [Unbound(by_peer=False), ConnectionShouldClose(CloseReason.UNBOUND)]


def test_close_waits_for_handlers() -> None:
    """A deliver_sm still in its handler is answered before the unbind goes out."""
    peer = bound()
    peer.send(pdus.DeliverSm(sequence_number=3))
    (event,) = peer.events()
    assert isinstance(event, DeliverReceived)
    peer.session.close(now=0.0, drain_timeout_s=5.0)
    assert peer.sent() == []
    peer.session.answer(event.pdu, 0, now=0.0)
    resp, unbind = peer.sent()
    assert isinstance(resp, pdus.DeliverSmResp)
    assert isinstance(unbind, pdus.Unbind)


def test_close_drain_deadline_then_unbind_timeout() -> None:
    """At the drain deadline unbind goes out anyway; an unanswered unbind still ends the session."""
    peer = bound(unbind_timeout_s=2.0, response_timeout_s=30.0)
    seq = peer.submit()
    peer.sent()
    peer.session.close(now=0.0, drain_timeout_s=5.0)
    assert peer.session.next_deadline() == 5.0
    peer.advance(5.0)
    (unbind,) = peer.sent()
    assert isinstance(unbind, pdus.Unbind)
    peer.advance(2.0)
    assert closing(peer.events()) == ConnectionShouldClose(CloseReason.UNBIND_TIMEOUT, (seq,))


def test_close_before_bound() -> None:
    """Closing while the bind is pending ends the session at once."""
    session = Session(settings_())
    session.start_bind(now=0.0)
    session.close(now=0.0, drain_timeout_s=1.0)
    assert closing(Peer(session).events()).reason is CloseReason.CLOSED_BEFORE_BOUND


def test_connection_lost_abandons_outstanding() -> None:
    """When the transport goes, every outstanding submit is reported with the close."""
    peer = bound()
    seqs = [peer.submit() for _ in range(3)]
    peer.session.connection_lost()
    assert peer.events() == [ConnectionShouldClose(CloseReason.CONNECTION_LOST, tuple(seqs))]
    peer.session.receive_data(b"\0" * 32, now=1.0)
    assert peer.events() == []


def test_a_query_ends_answered_nacked_or_unanswered_and_leaves_the_bind_up() -> None:
    """query_sm goes out framed as given; its query_sm_resp, a generic_nack or its timeout
    each end it as a QueryAnswered, and none of them drops the bind or takes a window slot."""
    peer = bound(window=1, response_timeout_s=5.0)
    body = encode_body(pdus.QuerySm(message_id="abc", source_addr="Acme"))
    first, second, third = (peer.session.try_query(body, now=peer.now) for _ in range(3))
    assert first is not None
    assert second is not None
    assert third is not None
    sent = peer.sent()
    assert [type(p) for p in sent] == [pdus.QuerySm] * 3
    assert isinstance(sent[0], pdus.QuerySm)
    assert sent[0].message_id == "abc"
    assert peer.session.try_submit(BODY, now=peer.now) is not None  # the window is free
    resp = pdus.QuerySmResp(sequence_number=first, message_id="abc", message_state=2)
    peer.send(resp, pdus.GenericNack(sequence_number=second, command_status=0))
    events = [e for e in peer.events() if isinstance(e, QueryAnswered)]
    assert events == [QueryAnswered(first, 0, resp), QueryAnswered(second, S.ESME_RSYSERR)]
    peer.advance(5.0)
    assert [e for e in peer.events() if isinstance(e, QueryAnswered)] == [
        QueryAnswered(third, None)
    ]
    assert peer.session.state is State.BOUND_TRX
    assert bound(bind_mode=BindMode.RECEIVER).session.try_query(body, now=0.0) is None
