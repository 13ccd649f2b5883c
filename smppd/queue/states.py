"""Segment and message states, the table of segment transitions, and a message's derived state.

Pure rules shared by every backend: no I/O, no clock (time comes in as `now`). A segment is the
unit the send loop submits; a message's state is never stored as a truth of its own but derived from
its segments by `message_state`, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Final


class SegmentState(StrEnum):
    """Where one segment is in its life (stored as these strings, so the database reads plainly)."""

    QUEUED = "queued"  # due: waiting for a claim
    SCHEDULED = "scheduled"  # queued with next_attempt_at in the future (not_before or backoff)
    INFLIGHT = "inflight"  # claimed by the send loop; its outcome is not yet recorded
    SUBMITTED = "submitted"  # the SMSC accepted it; a receipt may follow
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"
    EXPIRED = "expired"  # validity ran out before submission, or the receipt said so
    REJECTED = "rejected"
    FAILED = "failed"  # a permanent submit error (or a receipt mapped to it)
    CANCELLED = "cancelled"


_STATE_OF_VALUE: Final[Mapping[str, SegmentState]] = {state.value: state for state in SegmentState}


def segment_state(value: str) -> SegmentState:
    """`SegmentState(value)` through a dict: rows are read by the thousand, and an enum call
    costs ten times a lookup. An unknown value raises ValueError, as the call does."""
    state = _STATE_OF_VALUE.get(value)
    return SegmentState(value) if state is None else state


class MessageState(StrEnum):
    """A message's state as clients see it, derived from its segments (see `message_state`)."""

    QUEUED = "queued"
    INFLIGHT = "inflight"
    SUBMITTED = "submitted"
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"
    EXPIRED = "expired"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES: Final = frozenset(
    {
        SegmentState.DELIVERED,
        SegmentState.UNDELIVERABLE,
        SegmentState.EXPIRED,
        SegmentState.REJECTED,
        SegmentState.FAILED,
        SegmentState.CANCELLED,
    }
)
# Not claimed yet: what a failed sibling cancels and an expired validity expires, in any state.
WAITING_STATES: Final = frozenset({SegmentState.QUEUED, SegmentState.SCHEDULED})
# Not yet accepted by the SMSC: what a cancel or an opt-out can still stop, and the queue's depth.
PENDING_STATES: Final = frozenset(
    {SegmentState.QUEUED, SegmentState.SCHEDULED, SegmentState.INFLIGHT}
)


class SegmentEvent(StrEnum):
    """What can happen to a segment; `TRANSITIONS` says in which states each applies."""

    CLAIMED = "claimed"
    EXPIRED = "expired"  # found past expires_at by a claim
    DUE = "due"  # a scheduled segment's next_attempt_at has come
    SUBMIT_ACCEPTED = "submit_accepted"
    LATE_ACCEPTED = "late_accepted"  # accepted after all, once its submit had timed out
    SUBMIT_RETRY = "submit_retry"  # a temporary error: try again later
    SUBMIT_UNKNOWN = "submit_unknown"  # no answer (timeout, connection lost): resend, at least once
    SUBMIT_FAILED = "submit_failed"  # a permanent error
    DEFERRED = "deferred"  # claimed but not sent (rate limit, stop); no attempt is counted
    RECOVERED = "recovered"  # in flight when the process stopped
    CANCELLED = "cancelled"  # by its client, or by an opt-out
    RECEIPT = "receipt"  # a delivery receipt; its own state says where the segment goes


_Q, _S, _I = SegmentState.QUEUED, SegmentState.SCHEDULED, SegmentState.INFLIGHT
_SUB, _C = SegmentState.SUBMITTED, SegmentState.CANCELLED

# (state, event) -> next state. A pair not in the table is ignored: a stale or repeated outcome
# (say, a Retry for a segment a receipt already finished) changes nothing. QUEUED targets become
# SCHEDULED when their next_attempt_at is still ahead (`waiting_state`). A cancel also takes
# in-flight segments, but the SMSC may already hold one: its acceptance still wins (CANCELLED ->
# SUBMITTED), because the message did leave and its receipt must match.
TRANSITIONS: Final[Mapping[tuple[SegmentState, SegmentEvent], SegmentState]] = {
    (_Q, SegmentEvent.CLAIMED): _I,
    (_Q, SegmentEvent.EXPIRED): SegmentState.EXPIRED,
    (_S, SegmentEvent.EXPIRED): SegmentState.EXPIRED,  # by the sweep, while its carrier is down
    (_S, SegmentEvent.DUE): _Q,
    (_I, SegmentEvent.SUBMIT_ACCEPTED): _SUB,
    (_C, SegmentEvent.SUBMIT_ACCEPTED): _SUB,
    (_I, SegmentEvent.SUBMIT_RETRY): _Q,
    (_I, SegmentEvent.SUBMIT_UNKNOWN): _Q,
    (_I, SegmentEvent.SUBMIT_FAILED): SegmentState.FAILED,
    (_I, SegmentEvent.DEFERRED): _Q,
    (_I, SegmentEvent.RECOVERED): _Q,
    (_Q, SegmentEvent.CANCELLED): _C,
    (_S, SegmentEvent.CANCELLED): _C,
    (_I, SegmentEvent.CANCELLED): _C,
    (_SUB, SegmentEvent.RECEIPT): _SUB,  # the receipt's final state replaces this one
    # The copy that timed out did go: not sent again, and its receipt must match. From
    # INFLIGHT too (claimed again): the SMSC holds a copy, so a temporary error or no answer
    # for the new one must not queue it a third time (the send loop withdraws it if it has
    # not written it yet); that one's own acceptance then changes nothing.
    **{
        (state, SegmentEvent.LATE_ACCEPTED): _SUB
        for state in (_Q, _S, _I, _C, SegmentState.FAILED, SegmentState.EXPIRED)
    },
}


# Ended without (as far as the store knew) reaching the SMSC.
ENDED_UNSENT: Final = frozenset({SegmentState.FAILED, SegmentState.EXPIRED, SegmentState.CANCELLED})


def keeps_its_end(
    state: SegmentState, receipt_stat: str | None, siblings: Iterable[SegmentState]
) -> bool:
    """Whether a late acceptance (the answer to an attempt that timed out) leaves a segment
    as it ended, though the transition table would revive it:
    - its end was told by a receipt (EXPIRED, as the carrier said), not by its validity
      ending before it went: a late answer does not undo what the carrier reported;
    - it failed or expired and that cancelled (or expired) the parts then waiting, which will
      never be sent: revived, it would be a fragment, the message reading submitted and then
      cancelled, with no cancel asked for, instead of the failure its client was told of."""
    if state is SegmentState.EXPIRED and receipt_stat is not None:
        return True
    return state in (SegmentState.FAILED, SegmentState.EXPIRED) and any(
        sibling in ENDED_UNSENT for sibling in siblings
    )


def transition(state: SegmentState, event: SegmentEvent) -> SegmentState | None:
    """The state after `event`, or None when the event does not apply in `state`."""
    return TRANSITIONS.get((state, event))


def waiting_state(next_attempt_at: float, *, now: float) -> SegmentState:
    """QUEUED if due at `now`, else SCHEDULED (kept apart so that claims see only due ones)."""
    return SegmentState.QUEUED if next_attempt_at <= now else SegmentState.SCHEDULED


def arrival_state(
    due: float, *, now: float, send_now: bool, expires_at: float | None
) -> SegmentState:
    """A new segment's state: INFLIGHT when its message asked to be sent now and is due and
    unexpired (claimed on arrival), else as `waiting_state`."""
    if send_now and due <= now and (expires_at is None or expires_at > now):
        return SegmentState.INFLIGHT
    return waiting_state(due, now=now)


# A definite failure of any part decides the message, checked in this order.
_FAILURES: Final = (
    (SegmentState.FAILED, MessageState.FAILED),
    (SegmentState.REJECTED, MessageState.REJECTED),
    (SegmentState.UNDELIVERABLE, MessageState.UNDELIVERABLE),
    (SegmentState.EXPIRED, MessageState.EXPIRED),
)
_DELIVERED_OR_CANCELLED: Final = frozenset({SegmentState.DELIVERED, SegmentState.CANCELLED})
_ACCEPTED: Final = frozenset({SegmentState.SUBMITTED, SegmentState.DELIVERED})


def message_state(states: Iterable[SegmentState]) -> MessageState:
    """A message's state from its segments' states; the first rule that holds wins.

    1. any failed, rejected, undeliverable or expired segment (in that order) -> that state;
    2. all delivered -> delivered;
    3. all delivered or cancelled -> cancelled (nothing more will be sent or delivered);
    4. any submitted or delivered -> submitted (accepted in part or whole, awaiting receipts);
    5. any inflight -> inflight;
    6. otherwise (queued or scheduled) -> queued.
    """
    present = set(states)
    for segment, message in _FAILURES:
        if segment in present:
            return message
    if present == {SegmentState.DELIVERED}:
        return MessageState.DELIVERED
    if present and present <= _DELIVERED_OR_CANCELLED:
        return MessageState.CANCELLED
    if present & _ACCEPTED:
        return MessageState.SUBMITTED
    if SegmentState.INFLIGHT in present:
        return MessageState.INFLIGHT
    return MessageState.QUEUED


# The common case, a message of one segment, without building sets.
ONE_SEGMENT: Final[Mapping[SegmentState, MessageState]] = {
    state: message_state([state]) for state in SegmentState
}


def is_finished(states: Iterable[SegmentState], *, registered_delivery: bool) -> bool:
    """True when nothing more will happen to the message, so retention may purge it.

    Every segment final; or, when no receipt was requested, every segment final or submitted.
    """
    done = finished_states(registered_delivery)
    return all(state in done for state in states)


def finished_states(registered_delivery: bool) -> frozenset[SegmentState]:
    """The segment states in which a message of only such segments is finished (is_finished);
    a set to test one segment against without building a sequence for it."""
    return FINAL_STATES if registered_delivery else _FINAL_OR_SUBMITTED


_FINAL_OR_SUBMITTED: Final = FINAL_STATES | {SegmentState.SUBMITTED}


def receipts_overdue(segments: Iterable[tuple[SegmentState, float]], *, before: float) -> bool:
    """True when a message only waits for receipts, for segments all accepted before `before`.

    `segments` are (state, updated_at) pairs; a submitted segment's updated_at is its acceptance.
    Carriers lose receipts: past this point the message is finished (still `submitted`) so that
    retention purges it, instead of waiting for ever.
    """
    waiting = False
    for state, updated_at in segments:
        if state is SegmentState.SUBMITTED:
            if updated_at >= before:
                return False
            waiting = True
        elif state not in FINAL_STATES:
            return False
    return waiting
