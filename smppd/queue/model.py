"""The queue's domain values: what goes in (messages, outcomes, receipts) and what comes out.

Pure, frozen values with no behaviour beyond validating themselves. A segment's wire parameters are
an opaque `body` (the send loop encodes them once at submit time); nothing here knows SMPP or the
codec. Times are epoch seconds passed in by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import field
from enum import StrEnum
from typing import Final, overload

from smppd.queue.states import FINAL_STATES, MessageState, SegmentState
from smppd.record import record

MAX_PRIORITY: Final = 9  # 0 bulk .. 9 urgent; higher is claimed first
URGENT_PRIORITY: Final = 6  # above "normal" (5): OTPs, alerts; never stuck behind bulk
MAX_SEGMENTS: Final = 255  # a concatenated SMS has at most 255 parts (one octet in the UDH)
_INDEX_BITS: Final = 8


def segment_id(message_id: int, index: int) -> int:
    """The id of segment `index` (0-based) of `message_id`; a message's ids are one range."""
    return message_id << _INDEX_BITS | index


def message_id_of(segment_id: int) -> int:
    """The message a segment id belongs to."""
    return segment_id >> _INDEX_BITS


def segment_index(segment_id: int) -> int:
    """The 0-based position of a segment within its message."""
    return segment_id & ((1 << _INDEX_BITS) - 1)


def sibling_ids(message_id: int, total: int, *, but: int) -> list[int]:
    """The ids of a message's `total` segments other than `but`."""
    first = segment_id(message_id, 0)
    return [sid for sid in range(first, first + total) if sid != but]


# Where a reroute sweep goes on from: (priority, client, segment id), priorities descending.
RerouteCursor = tuple[int, str, int]


@record
class NewMessage:
    """One message to one recipient, already routed and split; `segments` are bodies in order.

    `ref` is the client's idempotency key: the same (client, ref) again yields the first message.
    `send_now` asks the store to claim it on arrival, when it is due at once: its segments are
    stored inflight and come back in `Enqueued.claimed` for the send loop, which saves an urgent
    message the claim transaction (and its wait behind the writer) on its way to the wire.
    """

    client: str
    ref: str | None
    source: str
    destination: str
    carrier: str
    priority: int
    not_before: float | None
    expires_at: float | None
    registered_delivery: bool
    segments: Sequence[bytes]
    send_now: bool = False
    # Other senders whose opt-outs stop it too (compliance.scope client: its client's own),
    # for the check the store makes again when an opt-out came since the submit's.
    opted_out_with: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be 0..{MAX_PRIORITY}, not {self.priority}")
        if not 1 <= len(self.segments) <= MAX_SEGMENTS:
            raise ValueError(f"a message has 1..{MAX_SEGMENTS} segments, not {len(self.segments)}")
        if not (self.client and self.carrier and self.destination):
            raise ValueError("client, carrier and destination must not be empty")


@record
class Enqueued:
    """The durable id of an enqueued message; `created` is False when its ref already existed.
    `claimed`: its segments, now inflight, when it asked to be sent now and could be.
    `opted_out`: not stored (message_id 0), its recipient having opted out of its sender after
    it was checked (Queue.enqueue's optouts_seen)."""

    message_id: int
    created: bool
    segments: int
    claimed: tuple[ClaimedSegment, ...] = ()
    opted_out: bool = False


@record
class ClaimedSegment:
    """A segment handed to the send loop (now `inflight`); `attempts` counts earlier attempts;
    past `expires_at` it must not be sent (it goes back, and the next claim expires it)."""

    segment_id: int
    message_id: int
    index: int
    total: int
    body: bytes
    client: str
    source: str
    destination: str
    priority: int
    attempts: int
    registered_delivery: bool
    expires_at: float | None = None


@record
class Change:
    """A segment changed state; `before`/`after` are its message's derived state around it.

    The daemon publishes these to the owning `client`. Receipt fields are set when a delivery
    receipt caused the change.
    """

    message_id: int
    segment_id: int
    client: str
    segment_state: SegmentState
    before: MessageState
    after: MessageState
    command_status: int | None = None
    receipt_stat: str | None = None
    receipt_err: str | None = None


@record
class Claim(Sequence[ClaimedSegment]):
    """The segments a claim moved to `inflight`, in sending order, plus what it expired on the way.

    It reads as the sequence of its segments; `expired` are the changes of segments found past
    their expires_at (never returned), for the daemon to publish.
    """

    segments: tuple[ClaimedSegment, ...] = ()
    expired: tuple[Change, ...] = ()

    @overload
    def __getitem__(self, index: int) -> ClaimedSegment: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[ClaimedSegment]: ...
    def __getitem__(self, index: int | slice) -> ClaimedSegment | Sequence[ClaimedSegment]:
        return self.segments[index]

    def __len__(self) -> int:
        return len(self.segments)

    def __iter__(self) -> Iterator[ClaimedSegment]:
        return iter(self.segments)


@record
class Submitted:
    """The SMSC accepted the segment (submit_sm_resp ok).

    `carrier_message_keys` are the correlation keys of the returned message_id (hex and decimal
    readings; see smppd.pdu.receipt.correlation_keys); receipts match by any of them. Keys come
    only from this final acceptance, never from a throttled attempt. `carrier_message_id` is the id
    as the SMSC wrote it, for display (the first key when not given). `whole_message`: the
    carrier sends one receipt per concatenated message (carrier `receipts_per: message`), so a
    part accepted after that receipt settled its siblings takes it too: none of its own follows.
    `late`: the answer came after its submit had timed out and been recorded as unknown; it
    applies to a segment waiting to be sent again (or failed, expired or cancelled since), not
    to one claimed again, whose own outcome follows.
    """

    segment_id: int
    carrier_message_keys: tuple[str, ...]
    bind: str
    carrier_message_id: str | None = None
    whole_message: bool = False
    late: bool = False
    # When to ask the SMSC about it with query_sm should no final receipt have come by then
    # (carriers[].receipt_queries); None: never. Only for segments that await a receipt.
    query_at: float | None = None


@record
class Retry:
    """A temporary error (throttled, SMSC queue full, ...): queue again for `next_attempt_at`.
    `counts` False: ESME_RTHROTTLED, about the bind's rate rather than this message, which uses
    none of its attempts (hours of throttling must not fail every message queued)."""

    segment_id: int
    command_status: int
    next_attempt_at: float
    counts: bool = True


@record
class Failed:
    """A permanent error: the segment will not be sent."""

    segment_id: int
    command_status: int


@record
class Unknown:
    """No answer (timeout, lost connection): the SMSC may hold it; send again (at least once)."""

    segment_id: int
    next_attempt_at: float


@record
class Deferred:
    """Not sent, by our own choice (a sender's rate, a stop): back to the queue for
    `next_attempt_at` without counting an attempt."""

    segment_id: int
    next_attempt_at: float


Outcome = Submitted | Retry | Failed | Unknown | Deferred


@record
class ReceiptIn:
    """A delivery receipt from one carrier, already parsed.

    `keys` are the correlation keys of its message id; `final_state` is the segment state its stat
    maps to (one of the final states), or None for an intermediate stat such as ENROUTE, which is
    recorded without leaving `submitted`.
    """

    keys: tuple[str, ...]
    stat: str
    final_state: str | None
    err: str
    done_at: float | None
    # The carrier sends one receipt per concatenated message (carrier `receipts_per: message`):
    # a final one also settles the message's other segments that are submitted.
    whole_message: bool = False
    # A query_sm answer is about the segment asked about, whatever its key leads to now (an
    # SMSC that reuses ids gives it to a newer message): only that one takes it, if still open.
    segment_id: int | None = None

    def __post_init__(self) -> None:
        if self.final_state is not None and self.final_state not in FINAL_STATES:
            raise ValueError(f"final_state must be a final segment state, not {self.final_state!r}")


class ReceiptOutcome(StrEnum):
    MATCHED = "matched"  # applied to its segment (the result carries the change)
    HELD = "held"  # no segment carries its id yet: kept until the Submitted lands, or a time limit
    DUPLICATE = "duplicate"  # already applied: nothing changed
    UNMATCHED = "unmatched"  # carries no key it could ever match by: kept and counted, not applied


@record
class ReceiptResult:
    outcome: ReceiptOutcome
    change: Change | None = None
    siblings: tuple[Change, ...] = ()  # of the other segments a whole-message receipt settled
    # A final receipt for a segment that had none before: seconds since the SMSC accepted it
    # (its last change), what the carrier took to deliver it. None otherwise: an interim
    # receipt moved that time, and a held receipt came before the acceptance.
    delivered_after_s: float | None = None

    @property
    def changes(self) -> tuple[Change, ...]:
        return self.siblings if self.change is None else (self.change, *self.siblings)


@record
class PartGroup:
    """The parts of one long MO: same conversation, data_coding, reference and total.

    `locking_shift` and `single_shift` are the national language tables (3GPP TS 23.038) its
    parts name in their UDH, 0 for the default ones: how GSM 7-bit text is read, not part of
    which message a part belongs to."""

    carrier: str
    source: str
    destination: str
    data_coding: int
    ref: int
    total: int
    locking_shift: int = field(default=0, compare=False)
    single_shift: int = field(default=0, compare=False)


@record
class Seen:
    """The fingerprint of an MO PDU (smppd.redelivery) stored with what it carried, in the same
    transaction, so that the carrier's redelivery window outlasts a restart: an SMSC that lost
    our deliver_sm_resp to a crash delivers it again after it. Kept until `until`."""

    key: bytes
    until: float


@record
class InboundPart:
    """One part of a long MO, kept on disk from its deliver_sm_resp until its message is stored
    (complete, or given up with the parts that came), so a restart in between loses none.
    `seen`: the fingerprint of the PDU that carried it (see Seen), if the carrier keeps them."""

    group: PartGroup
    seq: int
    data: bytes
    received_at: float
    seen: Seen | None = field(default=None, compare=False)


@record
class InboundIn:
    """A mobile-originated message; `client` is the account it is routed to, if any. A long one
    names its `parts`, whose held copies go in the same transaction as it is stored; one whose
    parts stopped coming is stored with those that came, not `complete`. `keyword` is the
    opt-out word it was read as (a str of smppd.compliance.Keyword), if any. `held`: the
    (seq, data) of the parts it was put together from; only those held copies go with it,
    not a newer part of a group with the same key (one started after this one was pushed
    out), which was answered ESME_ROK and must survive a restart. `seen`: the fingerprint of
    the PDU that brought it or its last part (see Seen), if the carrier keeps them."""

    carrier: str
    source: str
    destination: str
    text: str
    data_coding: int
    received_at: float
    client: str | None
    parts: PartGroup | None = None
    complete: bool = True
    keyword: str | None = None
    held: tuple[tuple[int, bytes], ...] = ()
    seen: Seen | None = None


@record
class Inbound:
    """A stored inbound message with its durable id (ids increase in arrival order)."""

    id: int
    carrier: str
    source: str
    destination: str
    text: str
    data_coding: int
    received_at: float
    client: str | None
    complete: bool
    keyword: str | None


@record
class Finished:
    """A message that reached its end (every segment final, or its receipts awaited long
    enough): what a client that was away reads back (Queue.finished_since)."""

    message_id: int
    ref: str | None
    state: MessageState
    finished_at: float


# Held MO parts wait for their carrier's handler, which stores them (complete or not) once
# their message's reassembly times out, after a restart too: however short the retention,
# only parts this much older than it (a removed carrier's) are purged. Acknowledged, they
# must not go while a crash could still need them.
PARTS_KEPT_S: Final = 7 * 86_400.0

# Where a page of finished messages ended: (finished_at, message_id) of the last one looked at.
FinishedCursor = tuple[float, int]
FINISHED_START: Final[FinishedCursor] = (float("-inf"), 0)


def finish_after(last: float, now: float) -> float:
    """The finished_at of a message finishing at `now` when the last one finished at `last`:
    `now`, or just after `last` when that is not before it (a clock stepped back, a write that
    waited while a later-stamped one committed). Never equal: within a tie pages go by id, and
    a message finishing later with a lower id would sort behind a cursor already past it."""
    return now if now > last else math.nextafter(last, math.inf)


# A page of finished messages looks at this many times its limit at most, whoever's they are,
# so that a client with few messages among many does not make one call scan them all.
FINISHED_LOOK_AHEAD: Final = 10


@record
class FinishedPage:
    messages: list[Finished]
    cursor: FinishedCursor  # where the next page starts
    more: bool  # the page ended at its limit or its look-ahead: there may be more after it


# As a sender: the number is opted out of every sender. The store does not know which senders
# belong to which client, so a per-client opt-out is one row per sender, written by the caller.
OPTOUT_ALL_SENDERS: Final = "*"


@record
class OptOut:
    sender: str
    number: str
    created_at: float


@record
class SegmentStatus:
    index: int
    state: SegmentState
    attempts: int
    command_status: int | None
    carrier_message_id: str | None
    bind: str | None
    receipt_stat: str | None
    receipt_err: str | None
    done_at: float | None
    updated_at: float


@record
class MessageStatus:
    message_id: int
    client: str
    ref: str | None
    carrier: str
    priority: int
    state: MessageState
    created_at: float
    not_before: float | None
    expires_at: float | None
    registered_delivery: bool
    segments: tuple[SegmentStatus, ...]


@record
class QueueStats:
    """Counts of stored segments and receipts; cheap to take (kept up to date, not counted)."""

    segments: Mapping[SegmentState, Mapping[int, int]]  # state -> priority -> count
    by_carrier: Mapping[str, Mapping[SegmentState, int]]
    queued_depth: int  # segments not yet accepted by an SMSC: queued, scheduled and inflight
    # Of unsent work that is due (queued, or waiting out a retry), since its message was due.
    oldest_queued_age_s: float | None
    receipts_held: int
    receipts_unmatched: int  # never matched (held past the time limit, or keyless); kept on disk
    receipts_dropped: int  # held receipts pushed out by the bound on their number; kept on disk
    commits: int = field(default=0)
    # oldest_queued_age_s per carrier, for those with due unsent work.
    oldest_age_by_carrier: Mapping[str, float] = field(default_factory=dict)
    # queued_depth per client, for those with unsent work (against api.clients[].max_queued).
    depth_by_client: Mapping[str, int] = field(default_factory=dict)


def claimed_on_arrival(message: NewMessage, message_id: int) -> tuple[ClaimedSegment, ...]:
    """The segments of a message the store claimed as it stored them (`NewMessage.send_now`)."""
    total = len(message.segments)
    return tuple(
        ClaimedSegment(
            segment_id=segment_id(message_id, index),
            message_id=message_id,
            index=index,
            total=total,
            body=body,
            client=message.client,
            source=message.source,
            destination=message.destination,
            priority=message.priority,
            attempts=0,
            registered_delivery=message.registered_delivery,
            expires_at=message.expires_at,
        )
        for index, body in enumerate(message.segments)
    )


@record
class QueryTarget:
    """A submitted segment whose receipt is late, to ask its SMSC about (smppd.queries)."""

    segment_id: int
    carrier_message_id: str  # as the SMSC wrote it in the submit_sm_resp
    key: str  # its first correlation key: a receipt built from the answer matches it
    body: bytes  # its submit_sm body, which holds the source address the query must name
    since: float  # when its row was last written (its acceptance, or an intermediate receipt)
