"""The queue contract: every backend passes these (states, claims, outcomes, cancels, retention)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from queue_support import CARRIER, T0, expired_by_receipt_then_answered_late, message

from smppd.queue import (
    Deferred,
    Failed,
    MessageState,
    Queue,
    ReceiptOutcome,
    Retry,
    SegmentState,
    Submitted,
    Unknown,
    open_queue,
)
from smppd.queue.model import (
    FINISHED_START,
    PARTS_KEPT_S,
    URGENT_PRIORITY,
    FinishedPage,
    InboundIn,
    InboundPart,
    PartGroup,
    ReceiptIn,
    Seen,
    segment_id,
)


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Queue]:
    queue = await open_queue(request.param, tmp_path / "queue.db")
    try:
        yield queue
    finally:
        await queue.close()


async def segment_states(store: Queue, message_id: int) -> list[SegmentState]:
    status = await store.status(message_id, None)
    assert status is not None
    return [segment.state for segment in status.segments]


async def test_enqueue_stores_messages_as_queued(store: Queue) -> None:
    """Enqueue returns one durable id per message and its segments start queued."""
    results = await store.enqueue([message(segments=(b"a", b"b", b"c")), message(ref="r1")], now=T0)
    assert [(r.created, r.segments) for r in results] == [(True, 3), (True, 1)]
    assert results[0].message_id != results[1].message_id
    status = await store.status(results[0].message_id, "otp")
    assert status is not None
    assert status.state is MessageState.QUEUED
    assert [s.index for s in status.segments] == [0, 1, 2]
    assert all(s.state is SegmentState.QUEUED and s.attempts == 0 for s in status.segments)
    assert store.queued_depth() == 4


async def test_client_depth_counts_each_clients_unsent_segments(store: Queue) -> None:
    """A client's share of queued_depth: its segments until an SMSC accepts them or they
    fail, inflight ones included, and no one else's."""
    enqueued = await store.enqueue([message(segments=(b"a", b"b")), message("crm")], now=T0)
    assert [store.client_depth(c) for c in ("otp", "crm", "nobody")] == [2, 1, 0]
    claim = await store.claim(CARRIER, 10, now=T0)
    assert store.client_depth("otp") == 2
    first, second = (s for s in claim if s.client == "otp")
    await store.record([Submitted(first.segment_id, ("1",), "b")], now=T0)
    await store.record([Failed(second.segment_id, 0x0B)], now=T0)
    assert [store.client_depth(c) for c in ("otp", "crm")] == [0, 1]
    await store.cancel(enqueued[1].message_id, "crm", now=T0)
    assert store.client_depth("crm") == 0
    assert store.queued_depth() == 0


async def test_same_ref_returns_the_first_message(store: Queue) -> None:
    """A repeated (client, ref) yields the first message, across calls and within one batch."""
    (first,) = await store.enqueue([message(ref="order-1", segments=(b"a", b"b"))], now=T0)
    again = await store.enqueue(
        [message(ref="order-1"), message(ref="order-2"), message(ref="order-2")], now=T0 + 1
    )
    assert again[0].message_id == first.message_id
    assert (again[0].created, again[0].segments) == (False, 2)
    assert again[1].created
    assert again[2].message_id == again[1].message_id
    assert not again[2].created
    (other,) = await store.enqueue([message("crm", ref="order-1")], now=T0)
    assert other.created
    assert other.message_id != first.message_id
    assert store.queued_depth() == 4


async def test_claim_moves_segments_inflight_with_their_fields(store: Queue) -> None:
    """A claim returns the due segments with what the send loop needs, and only once."""
    (enq,) = await store.enqueue(
        [message(destination="+15551234567", segments=(b"p0", b"p1"))], now=T0
    )
    claim = await store.claim(CARRIER, 10, now=T0)
    assert [(s.message_id, s.index, s.total, s.body) for s in claim] == [
        (enq.message_id, 0, 2, b"p0"),
        (enq.message_id, 1, 2, b"p1"),
    ]
    first = claim[0]
    assert (first.client, first.source, first.destination) == ("otp", "ACME", "+15551234567")
    assert (first.priority, first.attempts, first.registered_delivery) == (5, 0, True)
    assert await segment_states(store, enq.message_id) == [SegmentState.INFLIGHT] * 2
    assert len(await store.claim(CARRIER, 10, now=T0)) == 0
    assert len(await store.claim("other-carrier", 10, now=T0)) == 0
    assert store.queued_depth() == 2  # inflight segments still count until accepted


async def test_claim_takes_higher_priority_first(store: Queue) -> None:
    """Urgent segments are claimed before bulk ones queued earlier."""
    bulk = await store.enqueue([message("blast", priority=0) for _ in range(5)], now=T0)
    (urgent,) = await store.enqueue([message("otp", priority=9)], now=T0 + 1)
    claim = await store.claim(CARRIER, 3, now=T0 + 2)
    assert claim[0].message_id == urgent.message_id
    assert [s.message_id for s in claim[1:]] == [e.message_id for e in bulk[:2]]


async def test_claim_with_a_minimum_priority_leaves_lower_ones_queued(store: Queue) -> None:
    """A claim for priority 6 and up takes the urgent and high ones, never the bulk."""
    await store.enqueue([message("blast", priority=0) for _ in range(3)], now=T0)
    high = await store.enqueue(
        [message("otp", priority=9), message("alert", priority=6)], now=T0 + 1
    )
    await store.enqueue([message("normal", priority=5)], now=T0 + 1)
    claim = await store.claim(CARRIER, 10, now=T0 + 2, min_priority=6)
    assert [s.message_id for s in claim] == [e.message_id for e in high]
    assert [s.priority for s in claim] == [9, 6]
    assert len(await store.claim(CARRIER, 10, now=T0 + 2, min_priority=6)) == 0
    stats = await store.stats(now=T0 + 2)
    assert stats.segments[SegmentState.QUEUED] == {0: 3, 5: 1}


async def test_a_big_client_does_not_starve_a_small_one(store: Queue) -> None:
    """A 10-message client's messages come out in the first claim beside a 10,000 backlog."""
    await store.enqueue(
        [message("blast", destination=f"+1555{i:07d}") for i in range(10_000)], now=T0
    )
    small = await store.enqueue([message("otp") for _ in range(10)], now=T0 + 1)
    claim = await store.claim(CARRIER, 100, now=T0 + 2)
    clients = [s.client for s in claim]
    assert len(claim) == 100
    assert {s.message_id for s in claim if s.client == "otp"} == {e.message_id for e in small}
    assert clients[:20] == ["blast", "otp"] * 10  # interleaved, not appended
    blast = [s.message_id for s in claim if s.client == "blast"]
    assert blast == sorted(blast)  # each client's own messages stay in age order


async def test_claims_rotate_between_clients(store: Queue) -> None:
    """Claims of one segment alternate between clients instead of favouring one."""
    await store.enqueue([message("a") for _ in range(3)] + [message("b") for _ in range(3)], now=T0)
    clients = [(await store.claim(CARRIER, 1, now=T0))[0].client for _ in range(6)]
    assert clients in (["a", "b"] * 3, ["b", "a"] * 3)


async def test_scheduled_messages_wait_for_not_before(store: Queue) -> None:
    """A message with not_before in the future is not claimed until then."""
    (later,) = await store.enqueue([message(not_before=T0 + 60)], now=T0)
    assert await segment_states(store, later.message_id) == [SegmentState.SCHEDULED]
    status = await store.status(later.message_id, None)
    assert status is not None
    assert status.state is MessageState.QUEUED
    assert len(await store.claim(CARRIER, 10, now=T0 + 59)) == 0
    claim = await store.claim(CARRIER, 10, now=T0 + 60)
    assert [s.message_id for s in claim] == [later.message_id]


async def test_expired_segments_are_never_claimed(store: Queue) -> None:
    """A claim expires segments past expires_at and reports the change instead of sending them."""
    (stale,) = await store.enqueue([message(expires_at=T0 + 30)], now=T0)
    (fresh,) = await store.enqueue([message(expires_at=T0 + 300)], now=T0)
    claim = await store.claim(CARRIER, 10, now=T0 + 30)
    assert [s.message_id for s in claim] == [fresh.message_id]
    assert [(c.message_id, c.before, c.after) for c in claim.expired] == [
        (stale.message_id, MessageState.QUEUED, MessageState.EXPIRED)
    ]
    assert await segment_states(store, stale.message_id) == [SegmentState.EXPIRED]
    assert len(await store.claim(CARRIER, 10, now=T0 + 31)) == 0


async def test_submitted_outcome(store: Queue) -> None:
    """Submitted moves a segment to submitted and records the carrier id and bind."""
    (enq,) = await store.enqueue([message()], now=T0)
    (seg,) = await store.claim(CARRIER, 1, now=T0)
    (change,) = await store.record(
        [Submitted(seg.segment_id, ("6699",), "acme-1", carrier_message_id="1A2B")], now=T0 + 1
    )
    assert (change.message_id, change.client, change.segment_state) == (
        enq.message_id,
        "otp",
        SegmentState.SUBMITTED,
    )
    assert (change.before, change.after) == (MessageState.INFLIGHT, MessageState.SUBMITTED)
    status = await store.status(enq.message_id, "otp")
    assert status is not None
    (segment,) = status.segments
    assert (segment.state, segment.attempts, segment.command_status) == (
        SegmentState.SUBMITTED,
        1,
        0,
    )
    assert (segment.carrier_message_id, segment.bind) == ("1A2B", "acme-1")
    assert store.queued_depth() == 0


async def test_retry_requeues_with_backoff(store: Queue) -> None:
    """Retry puts the segment back (scheduled until its time) with attempts and status kept."""
    (enq,) = await store.enqueue([message()], now=T0)
    (seg,) = await store.claim(CARRIER, 1, now=T0)
    (change,) = await store.record([Retry(seg.segment_id, 0x58, T0 + 10)], now=T0 + 1)
    assert change.segment_state is SegmentState.SCHEDULED
    assert (change.before, change.after) == (MessageState.INFLIGHT, MessageState.QUEUED)
    assert change.command_status == 0x58
    assert len(await store.claim(CARRIER, 1, now=T0 + 9)) == 0
    (again,) = await store.claim(CARRIER, 1, now=T0 + 10)
    assert (again.segment_id, again.attempts) == (seg.segment_id, 1)
    (change,) = await store.record([Retry(seg.segment_id, 0x14, T0 + 10)], now=T0 + 10)
    assert change.segment_state is SegmentState.QUEUED  # already due
    status = await store.status(enq.message_id, None)
    assert status is not None
    assert (status.segments[0].attempts, status.segments[0].command_status) == (2, 0x14)


async def test_a_retry_that_does_not_count_keeps_the_attempts_and_shows_its_status(
    store: Queue,
) -> None:
    """A throttling answer (counts False) requeues like any Retry, without using an attempt."""
    (enq,) = await store.enqueue([message()], now=T0)
    (seg,) = await store.claim(CARRIER, 1, now=T0)
    (change,) = await store.record([Retry(seg.segment_id, 0x58, T0 + 1, False)], now=T0)
    assert (change.segment_state, change.command_status) == (SegmentState.SCHEDULED, 0x58)
    (again,) = await store.claim(CARRIER, 1, now=T0 + 1)
    assert again.attempts == 0
    status = await store.status(enq.message_id, None)
    assert status is not None
    assert (status.segments[0].attempts, status.segments[0].command_status) == (0, 0x58)


async def test_deferred_requeues_without_an_attempt(store: Queue) -> None:
    """Deferred (not sent by our choice) goes back for its time and counts no attempt."""
    (enq,) = await store.enqueue([message()], now=T0)
    (seg,) = await store.claim(CARRIER, 1, now=T0)
    (change,) = await store.record([Deferred(seg.segment_id, T0 + 3)], now=T0)
    assert change.segment_state is SegmentState.SCHEDULED
    assert len(await store.claim(CARRIER, 1, now=T0 + 2)) == 0
    (again,) = await store.claim(CARRIER, 1, now=T0 + 3)
    assert (again.segment_id, again.attempts) == (seg.segment_id, 0)
    assert store.queued_depth() == 1
    status = await store.status(enq.message_id, None)
    assert status is not None
    assert status.segments[0].attempts == 0


async def test_a_senders_deferred_work_is_brought_forward(store: Queue) -> None:
    """bring_forward (the sender's rate raised): its bulk segments deferred for its rate come
    due now; not another sender's, an urgent one, one waiting out a retry, or a message
    scheduled for later."""
    deferred, retrying, other, urgent = await store.enqueue(
        [
            message(ref="deferred"),
            message(ref="retrying"),
            message(ref="other", source="OTHER"),
            message(ref="urgent", priority=URGENT_PRIORITY),
        ],
        now=T0,
    )
    await store.enqueue([message(ref="later", not_before=T0 + 500)], now=T0)
    claimed = {s.segment_id: s for s in await store.claim(CARRIER, 10, now=T0)}
    assert len(claimed) == 4
    first = {e.message_id: segment_id(e.message_id, 0) for e in (deferred, retrying, other, urgent)}
    await store.record(
        [
            Deferred(first[deferred.message_id], T0 + 100),
            Retry(first[retrying.message_id], 0x08, T0 + 100),
            Deferred(first[other.message_id], T0 + 100),
            Deferred(first[urgent.message_id], T0 + 100),
        ],
        now=T0,
    )
    assert await store.bring_forward("ACME", now=T0 + 1) == 1
    (due,) = await store.claim(CARRIER, 10, now=T0 + 1)
    assert due.segment_id == first[deferred.message_id]
    assert await store.bring_forward("ACME", now=T0 + 1) == 0


async def test_failed_and_unknown_outcomes(store: Queue) -> None:
    """Failed is final; Unknown sends again (at least once) and counts the attempt."""
    failing, unknown = await store.enqueue([message(), message()], now=T0)
    claim = await store.claim(CARRIER, 2, now=T0)
    changes = await store.record(
        [Failed(claim[0].segment_id, 0x0B), Unknown(claim[1].segment_id, T0 + 5)], now=T0 + 1
    )
    assert [(c.message_id, c.after) for c in changes] == [
        (failing.message_id, MessageState.FAILED),
        (unknown.message_id, MessageState.QUEUED),
    ]
    (again,) = await store.claim(CARRIER, 5, now=T0 + 5)
    assert (again.message_id, again.attempts) == (unknown.message_id, 1)
    status = await store.status(failing.message_id, None)
    assert status is not None
    assert (status.state, status.segments[0].command_status) == (MessageState.FAILED, 0x0B)


async def test_stale_outcomes_change_nothing(store: Queue) -> None:
    """An outcome for a segment that is not inflight (or unknown) is ignored."""
    (enq,) = await store.enqueue([message()], now=T0)
    (seg,) = await store.claim(CARRIER, 1, now=T0)
    await store.record([Submitted(seg.segment_id, ("1",), "b")], now=T0)
    assert await store.record([Retry(seg.segment_id, 0x58, T0 + 5)], now=T0) == []
    assert await store.record([Failed(seg.segment_id, 8), Unknown(10**12, T0)], now=T0) == []
    assert await segment_states(store, enq.message_id) == [SegmentState.SUBMITTED]


async def test_a_message_state_is_derived_from_its_segments(store: Queue) -> None:
    """A three-part message is inflight, then submitted in part, then failed by one part."""
    (enq,) = await store.enqueue([message(segments=(b"0", b"1", b"2"))], now=T0)
    claim = await store.claim(CARRIER, 3, now=T0)
    changes = await store.record(
        [
            Submitted(claim[0].segment_id, ("10",), "b"),
            Submitted(claim[1].segment_id, ("11",), "b"),
            Failed(claim[2].segment_id, 0x45),
        ],
        now=T0 + 1,
    )
    assert [(c.before, c.after) for c in changes] == [
        (MessageState.INFLIGHT, MessageState.SUBMITTED),
        (MessageState.SUBMITTED, MessageState.SUBMITTED),
        (MessageState.SUBMITTED, MessageState.FAILED),
    ]
    status = await store.status(enq.message_id, None)
    assert status is not None
    assert status.state is MessageState.FAILED


async def assert_failed_and_the_rest_cancelled(store: Queue, message_id: int) -> None:
    """A three-part message whose first part failed for good and whose others were cancelled."""
    assert await segment_states(store, message_id) == [
        SegmentState.FAILED,
        SegmentState.CANCELLED,
        SegmentState.CANCELLED,
    ]
    status = await store.status(message_id, None)
    assert status is not None
    assert status.state is MessageState.FAILED


async def test_a_part_that_fails_for_good_cancels_the_parts_not_yet_sent(store: Queue) -> None:
    """They would reach the handset as fragments it can never put together, and be billed; a
    part already claimed (perhaps on the wire) is left to its own outcome."""
    (enq,) = await store.enqueue([message(segments=(b"0", b"1", b"2", b"3"))], now=T0)
    claim = await store.claim(CARRIER, 2, now=T0)
    await store.record([Retry(claim[1].segment_id, 0x58, T0 + 60)], now=T0)  # scheduled
    claim = await store.claim(CARRIER, 2, now=T0)  # parts 2 and 3
    changes = await store.record([Failed(claim[0].segment_id, 0x0B)], now=T0 + 1)
    assert [(c.segment_id, c.segment_state) for c in changes] == [
        (claim[0].segment_id, SegmentState.FAILED),
        (claim[0].segment_id - 1, SegmentState.CANCELLED),
    ]
    assert await segment_states(store, enq.message_id) == [
        SegmentState.INFLIGHT,
        SegmentState.CANCELLED,
        SegmentState.FAILED,
        SegmentState.INFLIGHT,
    ]


async def test_a_part_in_flight_when_another_failed_for_good_is_not_sent_again(
    store: Queue,
) -> None:
    """A part on the wire when another failed for good, answered with a temporary error or
    deferred, is cancelled rather than queued to be sent again; the message stays failed."""
    (enq,) = await store.enqueue([message(segments=(b"0", b"1", b"2"))], now=T0)
    first, second, third = await store.claim(CARRIER, 3, now=T0)
    await store.record([Failed(first.segment_id, 0x0B)], now=T0 + 1)
    changes = await store.record(
        [
            Retry(second.segment_id, 0x58, T0 + 60),
            Deferred(third.segment_id, T0 + 2),
        ],
        now=T0 + 1,
    )
    assert [(c.segment_id, c.segment_state) for c in changes] == [
        (second.segment_id, SegmentState.CANCELLED),
        (third.segment_id, SegmentState.CANCELLED),
    ]
    await assert_failed_and_the_rest_cancelled(store, enq.message_id)
    assert len(await store.claim(CARRIER, 10, now=T0 + 100)) == 0


async def test_a_late_acceptance_of_a_failed_part_does_not_revive_a_fragment(
    store: Queue,
) -> None:
    """Part 0's last attempt timed out (failed, so the waiting parts were cancelled), then its
    acceptance came late: reviving it would leave a fragment whose rest is never sent and a
    message reading submitted, then cancelled. It stays failed, as its client was told. With
    no sibling cancelled (the others were accepted) the late acceptance still applies."""
    (enq,) = await store.enqueue([message(segments=(b"0", b"1", b"2"))], now=T0)
    (first,) = await store.claim(CARRIER, 1, now=T0)
    await store.record([Failed(first.segment_id, 0x08)], now=T0 + 1)
    late = Submitted(first.segment_id, ("abc123",), "b", late=True)
    assert await store.record([late], now=T0 + 2) == []
    await assert_failed_and_the_rest_cancelled(store, enq.message_id)

    (enq,) = await store.enqueue([message(segments=(b"0", b"1"))], now=T0)
    first, second = await store.claim(CARRIER, 2, now=T0)
    await store.record([Submitted(second.segment_id, ("def456",), "b")], now=T0 + 1)
    await store.record([Failed(first.segment_id, 0x08)], now=T0 + 1)
    changes = await store.record(
        [Submitted(first.segment_id, ("abc124",), "b", late=True)], now=T0 + 2
    )
    assert [(c.segment_state, c.after) for c in changes] == [
        (SegmentState.SUBMITTED, MessageState.SUBMITTED)
    ]


async def test_a_late_acceptance_while_claimed_again_settles_it_and_is_not_sent_a_third_time(
    store: Queue,
) -> None:
    """The first copy timed out, the segment was claimed again, then the first copy's ESME_ROK
    came: it was dropped, so a throttled answer for the second copy queued it a third time and
    the first copy's receipt was held and never matched. The SMSC holds a copy: it is
    submitted, the second copy's answer changes nothing, and the receipt matches."""
    (enq,) = await store.enqueue([message()], now=T0)
    (first,) = await store.claim(CARRIER, 1, now=T0)
    await store.record([Unknown(first.segment_id, T0 + 1)], now=T0)
    (again,) = await store.claim(CARRIER, 1, now=T0 + 1)
    late = Submitted(first.segment_id, ("k1",), "b", late=True)
    changes = await store.record([late], now=T0 + 2)
    assert [c.segment_state for c in changes] == [SegmentState.SUBMITTED]
    await store.record([Retry(again.segment_id, 0x58, T0 + 3)], now=T0 + 2)
    assert len(await store.claim(CARRIER, 1, now=T0 + 10)) == 0
    await assert_delivered_by(store, "k1", enq.message_id, now=T0 + 11)


async def assert_delivered_by(store: Queue, key: str, message_id: int, *, now: float) -> None:
    """A DELIVRD receipt under `key` is matched and delivers message `message_id`."""
    delivered = ReceiptIn((key,), "DELIVRD", "delivered", "000", T0)
    (result,) = await store.apply_receipts(CARRIER, [delivered], now=now)
    assert result.outcome is ReceiptOutcome.MATCHED
    status = await store.status(message_id, None)
    assert status is not None
    assert status.state is MessageState.DELIVERED


async def test_an_opt_out_since_the_submit_is_checked_for_the_other_senders_too(
    store: Queue,
) -> None:
    """Under compliance.scope client, a STOP recorded under the client's own sender between
    the submit's check and its enqueue: the store's second look checked the message's own
    sender only, and one from another sender of the client went."""
    seen = store.optouts_recorded
    await store.add_optout("OWNED", "+15550000001", now=T0)
    shared = dataclasses.replace(message(source="SHARED"), opted_out_with=("OWNED",))
    other = message(source="SHARED")  # no scope: its own sender's opt-outs only
    stopped, sent = await store.enqueue([shared, other], now=T0, optouts_seen=seen)
    assert (stopped.opted_out, sent.opted_out) == (True, False)


async def test_a_segment_cancelled_on_the_wire_counts_its_attempt(store: Queue) -> None:
    """Cancelled while in flight, its answer was ignored with its attempt: accepted late
    after all it showed attempts 0, and one refused showed no attempt and no status."""
    timed_out, refused = await store.enqueue([message(), message()], now=T0)
    first, second = await store.claim(CARRIER, 2, now=T0)
    for enq in (timed_out, refused):
        await store.cancel(enq.message_id, None, now=T0 + 1)
    await store.record([Unknown(first.segment_id, T0 + 5)], now=T0 + 2)
    await store.record([Retry(second.segment_id, 0x58, T0 + 5)], now=T0 + 2)
    status = await store.status(refused.message_id, None)
    assert status is not None
    assert (status.state, status.segments[0].attempts) == (MessageState.CANCELLED, 1)
    assert status.segments[0].command_status == 0x58
    await store.record([Submitted(first.segment_id, ("k1",), "b", late=True)], now=T0 + 3)
    status = await store.status(timed_out.message_id, None)
    assert status is not None
    assert (status.state, status.segments[0].attempts) == (MessageState.SUBMITTED, 1)


async def test_both_copies_receipts_match_after_a_late_acceptance(store: Queue) -> None:
    """The second copy was on the wire when the first's late ESME_ROK settled the segment: its
    own ESME_ROK changes nothing, but the SMSC sends a receipt for each copy, and the second's
    was held and ended unmatched (the alert for a carrier whose ids do not match)."""
    await store.enqueue([message()], now=T0)
    (first,) = await store.claim(CARRIER, 1, now=T0)
    await store.record([Unknown(first.segment_id, T0 + 1)], now=T0)
    (again,) = await store.claim(CARRIER, 1, now=T0 + 1)
    await store.record([Submitted(first.segment_id, ("k1",), "b", late=True)], now=T0 + 2)
    assert await store.record([Submitted(again.segment_id, ("k2",), "b")], now=T0 + 3) == []
    receipts = [ReceiptIn((k,), "DELIVRD", "delivered", "000", T0) for k in ("k1", "k2")]
    results = await store.apply_receipts(CARRIER, receipts, now=T0 + 4)
    assert ReceiptOutcome.HELD not in [r.outcome for r in results]


async def test_a_late_acceptance_of_a_segment_submitted_again_correlates_its_id(
    store: Queue,
) -> None:
    """The other order: the second copy is accepted first, then the first copy's late ESME_ROK
    comes. The SMSC holds both and sends a receipt for each; the memory store kept the late
    id, SQLite dropped it (that receipt held, then unmatched)."""
    await store.enqueue([message()], now=T0)
    (first,) = await store.claim(CARRIER, 1, now=T0)
    await store.record([Unknown(first.segment_id, T0 + 1)], now=T0)
    (again,) = await store.claim(CARRIER, 1, now=T0 + 1)
    await store.record([Submitted(again.segment_id, ("k2",), "b")], now=T0 + 2)
    late = Submitted(first.segment_id, ("k1",), "b", late=True)
    assert await store.record([late], now=T0 + 3) == []
    receipts = [ReceiptIn((k,), "DELIVRD", "delivered", "000", T0) for k in ("k2", "k1")]
    results = await store.apply_receipts(CARRIER, receipts, now=T0 + 4)
    assert ReceiptOutcome.HELD not in [r.outcome for r in results]


async def test_a_second_copys_early_receipt_matches_and_a_reused_id_stays_its_owners(
    store: Queue,
) -> None:
    """The second copy's receipt came before its ESME_ROK: held, it ended unmatched, as it
    is applied when that answer comes. An id the SMSC gave another open segment meanwhile
    (it reuses ids) stays that segment's: its receipt settled the first one instead."""
    (enq,) = await store.enqueue([message()], now=T0)
    (first,) = await store.claim(CARRIER, 1, now=T0)
    await store.record([Unknown(first.segment_id, T0 + 1)], now=T0)
    (again,) = await store.claim(CARRIER, 1, now=T0 + 1)
    await store.record([Submitted(first.segment_id, ("k1",), "b", late=True)], now=T0 + 2)
    early = ReceiptIn(("k2",), "DELIVRD", "delivered", "000", T0)
    (held,) = await store.apply_receipts(CARRIER, [early], now=T0 + 3)
    assert held.outcome is ReceiptOutcome.HELD
    await store.record([Submitted(again.segment_id, ("k2",), "b")], now=T0 + 4)
    status = await store.status(enq.message_id, None)
    assert status is not None
    assert status.state is MessageState.DELIVERED
    stats = await store.stats(now=T0 + 5)
    assert stats.receipts_held == 0

    (a,) = await store.enqueue([message()], now=T0)
    (b,) = await store.enqueue([message()], now=T0)
    (a_first,) = await store.claim(CARRIER, 1, now=T0)
    await store.record([Unknown(a_first.segment_id, T0 + 1)], now=T0)
    a_again, b_seg = await store.claim(CARRIER, 2, now=T0 + 1)
    assert a_again.message_id == a.message_id
    await store.record([Submitted(a_first.segment_id, ("a1",), "b", late=True)], now=T0 + 2)
    await store.record([Submitted(b_seg.segment_id, ("x9",), "b")], now=T0 + 3)
    await store.record([Submitted(a_again.segment_id, ("x9",), "b")], now=T0 + 4)  # reused
    await assert_delivered_by(store, "x9", b.message_id, now=T0 + 5)


async def test_waiting_segments_past_their_validity_are_expired_by_the_sweep(
    store: Queue,
) -> None:
    """Queued and scheduled segments of messages whose validity ended are expired, in steps
    from a cursor; one in flight is left to its outcome, the cursor staying before its
    message: queued again (its submit timed out), it is expired by the next pass. A later
    pass sees only what expired since."""
    soon, later, short, endless = await store.enqueue(
        [
            message(expires_at=T0 + 5, segments=(b"a", b"b")),
            message(expires_at=T0 + 6, not_before=T0 + 100),  # scheduled
            message(expires_at=T0 + 4),
            message(),
        ],
        now=T0,
    )
    (inflight,) = await store.claim(CARRIER, 1, now=T0)  # soon's first part, the oldest due
    assert inflight.message_id == soon.message_id
    cursor = (float("-inf"), 0)
    changes, cursor, done = await store.expire_waiting(now=T0 + 10, after=cursor, limit=1)
    assert not done
    more, cursor, done = await store.expire_waiting(now=T0 + 10, after=cursor, limit=5)
    assert done  # up to soon, whose first part is in flight
    expired = {(c.message_id, c.segment_id) for c in [*changes, *more]}
    assert all(c.segment_state is SegmentState.EXPIRED for c in [*changes, *more])
    assert inflight.segment_id not in {sid for _, sid in expired}
    assert {mid for mid, _ in expired} == {soon.message_id, later.message_id, short.message_id}
    states = [await store.status(m.message_id, None) for m in (later, endless)]
    assert [s.state if s else None for s in states] == [MessageState.EXPIRED, MessageState.QUEUED]
    await store.record([Unknown(inflight.segment_id, T0 + 11)], now=T0 + 11)
    again, cursor, done = await store.expire_waiting(now=T0 + 12, after=cursor, limit=10)
    assert [(c.segment_id, c.segment_state) for c in again] == [
        (inflight.segment_id, SegmentState.EXPIRED)
    ]
    status = await store.status(soon.message_id, None)
    assert status is not None
    assert status.state is MessageState.EXPIRED
    last, _, done = await store.expire_waiting(now=T0 + 20, after=cursor, limit=10)
    assert (last, done) == ([], True)


async def test_cancel_stops_unsent_segments(store: Queue) -> None:
    """Cancel turns queued segments into cancelled; they are never claimed."""
    (enq,) = await store.enqueue([message(segments=(b"a", b"b"))], now=T0)
    assert await store.cancel(enq.message_id, "someone-else", now=T0) is None
    found = await store.cancel(enq.message_id, "otp", now=T0 + 1)
    assert found is not None
    status, changes = found
    assert status.state is MessageState.CANCELLED
    assert [s.state for s in status.segments] == [SegmentState.CANCELLED] * 2
    assert [(c.segment_id, c.segment_state) for c in changes] == [
        (segment_id(enq.message_id, i), SegmentState.CANCELLED) for i in range(2)
    ]
    assert len(await store.claim(CARRIER, 10, now=T0 + 2)) == 0
    assert store.queued_depth() == 0
    again = await store.cancel(enq.message_id, "otp", now=T0 + 3)  # nothing left to cancel
    assert again is not None
    assert again[0].state is MessageState.CANCELLED
    assert again[1] == []
    assert await store.cancel(10**9, None, now=T0) is None


async def test_an_inflight_segment_cancelled_still_records_its_submission(store: Queue) -> None:
    """A segment cancelled while in flight becomes submitted if the SMSC accepted it anyway."""
    (enq,) = await store.enqueue([message()], now=T0)
    (seg,) = await store.claim(CARRIER, 1, now=T0)
    await store.cancel(enq.message_id, None, now=T0)
    assert await store.record([Retry(seg.segment_id, 0x58, T0)], now=T0) == []
    assert await segment_states(store, enq.message_id) == [SegmentState.CANCELLED]
    (change,) = await store.record([Submitted(seg.segment_id, ("7",), "b")], now=T0)
    assert (change.before, change.after) == (MessageState.CANCELLED, MessageState.SUBMITTED)


async def test_status_is_private_to_the_owner(store: Queue) -> None:
    """Status answers None for unknown ids and for another client's messages."""
    (enq,) = await store.enqueue([message("otp")], now=T0)
    assert await store.status(enq.message_id, "crm") is None
    assert await store.status(enq.message_id + 1000, "otp") is None
    assert await store.status(enq.message_id, "otp") is not None


async def test_a_message_is_found_by_its_clients_ref(store: Queue) -> None:
    """message_id_of finds a client's message by the ref it was submitted with, and not by
    another client's ref or one never given."""
    (first, _, other) = await store.enqueue(
        [message("otp", ref="a"), message("otp"), message("crm", ref="b")], now=T0
    )
    assert await store.message_id_of("otp", "a") == first.message_id
    assert await store.message_id_of("crm", "b") == other.message_id
    assert await store.message_id_of("otp", "b") is None
    assert await store.message_id_of("crm", "a") is None
    assert await store.message_id_of("otp", "never") is None


async def test_recover_requeues_inflight_segments(store: Queue) -> None:
    """After a stop, segments left inflight are claimed again (at least once)."""
    enqueued = await store.enqueue([message() for _ in range(3)], now=T0)
    claim = await store.claim(CARRIER, 2, now=T0)
    assert await store.recover(now=T0 + 1) == 2
    again = await store.claim(CARRIER, 10, now=T0 + 2)
    assert {s.segment_id for s in claim} <= {s.segment_id for s in again}
    assert len(again) == len(enqueued)
    assert await store.recover(now=T0 + 3) == 3


async def test_a_recovered_segment_counts_the_attempt_it_may_have_made(store: Queue) -> None:
    """A segment left inflight may have been sent, even accepted, before the stop: recovery
    counts that attempt, so that one then cancelled (or expired) does not read as never tried;
    one claimed again and sent counts both."""
    first, second = await store.enqueue([message(), message()], now=T0)
    claimed = await store.claim(CARRIER, 2, now=T0)
    assert [s.attempts for s in claimed] == [0, 0]
    assert await store.recover(now=T0 + 1) == 2
    cancelled = await store.cancel(first.message_id, None, now=T0 + 2)
    assert cancelled is not None
    assert cancelled[0].state is MessageState.CANCELLED
    assert [s.attempts for s in cancelled[0].segments] == [1]
    (again,) = await store.claim(CARRIER, 10, now=T0 + 3)
    assert again.message_id == second.message_id
    assert again.attempts == 1
    await store.record([Submitted(again.segment_id, ("k",), "0", "k")], now=T0 + 4)
    sent = await store.status(second.message_id, None)
    assert sent is not None
    assert [s.attempts for s in sent.segments] == [2]


async def test_recover_cancels_a_part_whose_sibling_failed_for_good(store: Queue) -> None:
    """Both parts of a message in flight, the first failed for good, then a stop: the second
    is not sent after the restart as a fragment no handset can join (and billed), but
    cancelled, as an outcome recorded in time would have had it; the counts agree."""
    (enq,) = await store.enqueue([message(segments=(b"p0", b"p1"))], now=T0)
    first, _ = await store.claim(CARRIER, 10, now=T0)
    await store.record([Failed(first.segment_id, 0x0B)], now=T0 + 1)
    assert await store.recover(now=T0 + 2) == 0
    assert len(await store.claim(CARRIER, 10, now=T0 + 3)) == 0
    status = await store.status(enq.message_id, None)
    assert status is not None
    assert [s.attempts for s in status.segments] == [1, 1]  # the second may have gone out
    assert await segment_states(store, enq.message_id) == [
        SegmentState.FAILED,
        SegmentState.CANCELLED,
    ]
    assert store.queued_depth() == 0
    status = await store.status(enq.message_id, None)
    assert status is not None
    assert status.state is MessageState.FAILED


async def test_send_now_claims_a_due_message_on_arrival(store: Queue) -> None:
    """A message that asks to be sent now is stored inflight and handed back as claimed, with
    what a claim would give; no claim returns it again, and its outcome is recorded as usual."""
    (enq,) = await store.enqueue(
        [message(priority=9, send_now=True, segments=(b"p0", b"p1"), registered_delivery=False)],
        now=T0,
    )
    assert [(s.message_id, s.index, s.total, s.body, s.attempts) for s in enq.claimed] == [
        (enq.message_id, 0, 2, b"p0", 0),
        (enq.message_id, 1, 2, b"p1", 0),
    ]
    first = enq.claimed[0]
    assert (first.client, first.source, first.priority) == ("otp", "ACME", 9)
    assert await segment_states(store, enq.message_id) == [SegmentState.INFLIGHT] * 2
    assert len(await store.claim(CARRIER, 10, now=T0)) == 0
    assert store.queued_depth() == 2  # inflight still counts until accepted
    outcomes = [Submitted(s.segment_id, (f"k{s.index}",), "0") for s in enq.claimed]
    await store.record(outcomes, now=T0 + 1)
    status = await store.status(enq.message_id, "otp")
    assert status is not None
    assert status.state is MessageState.SUBMITTED
    assert store.queued_depth() == 0


async def test_send_now_leaves_scheduled_expired_and_repeated_messages_to_claims(
    store: Queue,
) -> None:
    """Only a new message due now and not expired is claimed on arrival."""
    (first,) = await store.enqueue([message(ref="r", send_now=True)], now=T0)
    later, expired, again = await store.enqueue(
        [
            message(send_now=True, not_before=T0 + 60),
            message(send_now=True, expires_at=T0),
            message(ref="r", send_now=True),
        ],
        now=T0,
    )
    assert len(first.claimed) == 1
    assert (later.claimed, expired.claimed, again.claimed) == ((), (), ())
    assert not again.created
    assert await segment_states(store, later.message_id) == [SegmentState.SCHEDULED]
    claim = await store.claim(CARRIER, 10, now=T0)
    assert len(claim.expired) == 1
    assert len(claim) == 0


async def test_recover_requeues_segments_claimed_on_arrival(store: Queue) -> None:
    """A crash before a message claimed on arrival was sent: recovery queues it again."""
    (enq,) = await store.enqueue([message(priority=9, send_now=True)], now=T0)
    assert await store.recover(now=T0 + 1) == 1
    claim = await store.claim(CARRIER, 10, now=T0 + 2)
    assert [s.segment_id for s in claim] == [s.segment_id for s in enq.claimed]


async def test_purge_deletes_only_finished_old_messages(store: Queue) -> None:
    """Retention removes finished messages older than the cut; ids are never reused."""
    done, waiting, queued = await store.enqueue(
        [message(registered_delivery=False), message(), message()], now=T0
    )
    claim = await store.claim(CARRIER, 2, now=T0)
    await store.record([Submitted(s.segment_id, ("5",), "b") for s in claim], now=T0 + 1)
    assert await store.purge(T0 + 1) == 0  # finished at T0 + 1, not before it
    assert await store.purge(T0 + 2) == 1
    assert await store.status(done.message_id, None) is None
    assert await store.status(waiting.message_id, None) is not None  # awaits its receipt
    assert await store.status(queued.message_id, None) is not None
    (new,) = await store.enqueue([message()], now=T0 + 3)
    assert new.message_id > queued.message_id
    stats = await store.stats(now=T0 + 3)
    assert SegmentState.SUBMITTED in stats.segments
    assert stats.segments[SegmentState.SUBMITTED] == {5: 1}


async def test_stats_count_by_state_and_priority(store: Queue) -> None:
    """Stats count segments by state and priority and report the oldest due segment's age."""
    await store.enqueue([message(priority=9, segments=(b"a", b"b"))], now=T0)
    await store.enqueue([message(priority=0), message(priority=0, not_before=T0 + 99)], now=T0 + 5)
    await store.claim(CARRIER, 1, now=T0 + 10)
    stats = await store.stats(now=T0 + 10)
    assert stats.segments == {
        SegmentState.INFLIGHT: {9: 1},
        SegmentState.QUEUED: {9: 1, 0: 1},
        SegmentState.SCHEDULED: {0: 1},
    }
    assert stats.by_carrier == {
        CARRIER: {SegmentState.INFLIGHT: 1, SegmentState.QUEUED: 2, SegmentState.SCHEDULED: 1}
    }
    assert stats.queued_depth == store.queued_depth() == 4
    assert stats.oldest_queued_age_s == pytest.approx(10.0)
    empty = await store.stats(now=T0)
    assert empty.receipts_held == empty.receipts_unmatched == empty.receipts_dropped == 0


async def test_the_oldest_age_counts_work_waiting_out_a_retry(store: Queue) -> None:
    """A message the carrier keeps refusing for now (throttled, no answer) waits in back-off,
    not in the queue: its age still counts from when it was due, so the oldest-age alerts see
    it. One scheduled by its client for later does not count until then."""
    await store.enqueue([message(), message(not_before=T0 + 3600)], now=T0)
    (first,) = await store.claim(CARRIER, 1, now=T0 + 1)
    await store.record([Retry(first.segment_id, 0x58, T0 + 900)], now=T0 + 2)
    stats = await store.stats(now=T0 + 600)
    assert stats.queued_depth == 2
    assert stats.segments[SegmentState.SCHEDULED] == {5: 2}
    assert stats.oldest_queued_age_s == pytest.approx(600.0)
    (again,) = await store.claim(CARRIER, 1, now=T0 + 900)
    await store.record([Unknown(again.segment_id, T0 + 1800)], now=T0 + 901)
    assert (await store.stats(now=T0 + 1200)).oldest_queued_age_s == pytest.approx(1200.0)


async def test_the_oldest_age_is_also_given_per_carrier(store: Queue) -> None:
    """Which carrier holds the oldest work: each carrier's own oldest due, unsent message."""
    await store.enqueue([message(carrier="a")], now=T0)
    await store.enqueue([message(carrier="b"), message(carrier="a")], now=T0 + 100)
    (retrying,) = await store.claim("b", 1, now=T0 + 101)
    await store.record([Retry(retrying.segment_id, 0x58, T0 + 900)], now=T0 + 102)
    stats = await store.stats(now=T0 + 300)
    assert stats.oldest_age_by_carrier == {"a": pytest.approx(300.0), "b": pytest.approx(200.0)}
    assert stats.oldest_queued_age_s == pytest.approx(300.0)


async def test_segments_by_day_counts_on_the_day_each_is_due(store: Queue) -> None:
    """Segments per UTC day and sender: scheduled ones on their not_before's day however
    far ahead (a cap counted them there), one scheduled in the past on the day it was
    accepted (due at once, counted today), nothing due before `start`."""
    today = int(T0 // 86_400)
    await store.enqueue([message(segments=(b"a", b"b")), message(source="ZED")], now=T0)
    await store.enqueue([message(not_before=T0 + 86_400)], now=T0)
    await store.enqueue([message(not_before=T0 + 300 * 86_400)], now=T0)
    await store.enqueue([message(not_before=T0 - 2 * 86_400)], now=T0)
    await store.enqueue([message()], now=T0 - 86_400)  # yesterday's: not counted from today
    assert await store.segments_by_day(today * 86_400) == {
        today: {"ACME": 3, "ZED": 1},
        today + 1: {"ACME": 1},
        today + 300: {"ACME": 1},
    }


async def test_reroute_moves_retries_that_are_due_and_leaves_later_ones(store: Queue) -> None:
    """A segment waiting to be sent again (no answer, or a temporary error) fails over once its
    retry is due; one whose retry time is still ahead stays where it is, scheduled."""
    due, later = await store.enqueue([message("due"), message("later")], now=T0)
    claim = await store.claim(CARRIER, 2, now=T0)
    await store.record(
        [
            Unknown(claim[0].segment_id, next_attempt_at=T0 + 5),
            Retry(claim[1].segment_id, command_status=0x58, next_attempt_at=T0 + 100),
        ],
        now=T0,
    )
    moved, cursor = await store.reroute(CARRIER, lambda destination: "backup", now=T0 + 10)
    assert (moved, cursor) == ({"backup": 1}, None)
    (taken,) = await store.claim("backup", 10, now=T0 + 10)
    assert (taken.message_id, taken.attempts) == (due.message_id, 1)
    assert len(await store.claim(CARRIER, 10, now=T0 + 10)) == 0
    stats = await store.stats(now=T0 + 10)
    assert stats.by_carrier[CARRIER] == {SegmentState.SCHEDULED: 1}
    assert stats.by_carrier["backup"] == {SegmentState.INFLIGHT: 1}
    status = await store.status(later.message_id, None)
    assert status is not None
    assert status.segments[0].state is SegmentState.SCHEDULED


async def test_reroute_moves_whole_waiting_messages_urgent_first(store: Queue) -> None:
    """Failover of waiting work: messages whose segments are all queued move to the carrier the
    pick names, urgent first, and the new carrier's claims take them; a message with a part in
    flight, or whose pick says stay, stays."""
    bulk = await store.enqueue(
        [message("blast", priority=0, destination="+447700900001") for _ in range(3)], now=T0
    )
    (urgent,) = await store.enqueue(
        [message("otp", priority=9, destination="+447700900002", segments=(b"u0", b"u1"))],
        now=T0,
    )
    (partly,) = await store.enqueue(
        [message(destination="+447700900003", segments=(b"p0", b"p1"))], now=T0
    )
    (stays,) = await store.enqueue([message(destination="+15551234567")], now=T0)
    # One segment of `partly` goes in flight: the claim takes priority 9, then 5.
    claim = await store.claim(CARRIER, 3, now=T0)
    assert [s.message_id for s in claim] == [urgent.message_id] * 2 + [partly.message_id]
    await store.record([Deferred(s.segment_id, T0) for s in claim[:2]], now=T0)

    def pick(destination: str) -> str | None:
        return "backup" if destination.startswith("+44") else None

    moved, cursor = await store.reroute(CARRIER, pick, now=T0 + 1, limit=2)
    assert (moved, cursor is not None) == ({"backup": 1}, True)  # the urgent one, first
    total: dict[str, int] = dict(moved)
    while cursor is not None:
        moved, cursor = await store.reroute(CARRIER, pick, now=T0 + 1, limit=2, after=cursor)
        for carrier, n in moved.items():
            total[carrier] = total.get(carrier, 0) + n
    assert total == {"backup": 4}
    taken = await store.claim("backup", 10, now=T0 + 2)
    assert [s.message_id for s in taken] == [urgent.message_id] * 2 + [e.message_id for e in bulk]
    assert [s.body for s in taken[:2]] == [b"u0", b"u1"]
    left = await store.claim(CARRIER, 10, now=T0 + 2)
    assert {s.message_id for s in left} == {partly.message_id, stays.message_id}
    stats = await store.stats(now=T0 + 2)
    assert stats.by_carrier["backup"] == {SegmentState.INFLIGHT: 5}
    assert stats.by_carrier[CARRIER] == {SegmentState.INFLIGHT: 3}
    assert store.queued_depth() == 8


async def test_every_commit_is_timed(store: Queue) -> None:
    """commit_latency holds one observation per committed transaction, none of them negative."""
    before = store.commit_latency.count
    await store.enqueue([message()], now=T0)
    await store.claim(CARRIER, 10, now=T0)
    assert store.commit_latency.count - before == 2
    assert store.commit_latency.count == store.commits
    assert store.commit_latency.total >= 0.0


async def test_urgent_due_lists_when_scheduled_urgent_segments_come_due(store: Queue) -> None:
    """Distinct times, earliest first, of the carrier's scheduled segments of URGENT_PRIORITY
    and up; not queued ones, lower priorities or other carriers; at most `limit`."""
    await store.enqueue(
        [
            message(priority=9, not_before=T0 + 30),
            message(priority=6, not_before=T0 + 10, segments=(b"a", b"b")),
            message(priority=7, not_before=T0 + 30),
            message(priority=6, not_before=T0 + 20),
            message(priority=5, not_before=T0 + 5),  # not urgent
            message(priority=9, not_before=T0 + 1, carrier="other"),
            message(priority=9),  # queued: the claims take it
        ],
        now=T0,
    )
    assert await store.urgent_due(CARRIER, limit=10) == [T0 + 10, T0 + 20, T0 + 30]
    assert await store.urgent_due(CARRIER, limit=2) == [T0 + 10, T0 + 20]
    assert await store.urgent_due("other", limit=10) == [T0 + 1]
    assert await store.urgent_due("none", limit=10) == []


async def test_inbound_parts_are_held_until_their_message_is_stored(store: Queue) -> None:
    """Parts of a long MO wait on disk, the first copy of a repeat kept, per carrier; storing
    the message that names them deletes them, and the purge takes a removed carrier's."""
    group = PartGroup(CARRIER, "+447700900001", "SHOP", 8, 7, 3)
    other = PartGroup("other", "+447700900001", "SHOP", 0, 7, 2)
    await store.hold_inbound_part(InboundPart(group, 2, b"two", T0))
    await store.hold_inbound_part(InboundPart(group, 2, b"again", T0 + 1))
    await store.hold_inbound_part(InboundPart(group, 1, b"one", T0 + 2))
    await store.hold_inbound_part(InboundPart(other, 1, b"x", T0 + 3))
    assert await store.held_inbound_parts(CARRIER) == [
        InboundPart(group, 2, b"two", T0),
        InboundPart(group, 1, b"one", T0 + 2),
    ]
    whole = InboundIn(
        CARRIER,
        group.source,
        "SHOP",
        "text",
        8,
        T0 + 4,
        "shop",
        parts=group,
        held=((2, b"two"), (1, b"one")),
    )
    await store.store_inbound(whole)
    assert await store.held_inbound_parts(CARRIER) == []
    assert [m.text for m in await store.inbound_since(0)] == ["text"]
    assert await store.held_inbound_parts("other") == [InboundPart(other, 1, b"x", T0 + 3)]
    await store.purge(T0 + 4)  # a retention shorter than the reassembly: the part stays
    assert await store.held_inbound_parts("other") == [InboundPart(other, 1, b"x", T0 + 3)]
    await store.purge(T0 + 4 + PARTS_KEPT_S)  # a removed carrier's, long past
    assert await store.held_inbound_parts("other") == []


async def test_storing_a_long_mo_takes_only_the_held_parts_it_was_made_of(store: Queue) -> None:
    """A group pushed out unfinished is stored with the parts it had: a part held since under
    the same key (a newer group's, answered ESME_ROK) stays on disk for a restart."""
    group = PartGroup(CARRIER, "+447700900001", "SHOP", 0, 7, 3)
    await store.hold_inbound_part(InboundPart(group, 1, b"old one", T0))
    await store.hold_inbound_part(InboundPart(group, 2, b"new two", T0 + 1))
    old = InboundIn(
        CARRIER, group.source, "SHOP", "old one", 0, T0 + 2, "shop", parts=group,
        complete=False, held=((1, b"old one"), (2, b"old two")),
    )  # fmt: skip
    await store.store_inbound(old)
    assert await store.held_inbound_parts(CARRIER) == [InboundPart(group, 2, b"new two", T0 + 1)]


async def test_a_late_answer_does_not_undo_an_expiry_a_receipt_reported(store: Queue) -> None:
    """A receipt said EXPIRED, then an earlier attempt's answer came late: the segment stays
    expired and the message finished (it was revived as submitted, left `finished`, and kept a
    second id: purged, the memory store then raised KeyError for a receipt under the first,
    and SQLite kept its row for ever). Purged, a receipt under its id is held as unknown."""
    message_id = await expired_by_receipt_then_answered_late(store)
    status = await store.status(message_id, None)
    assert status is not None
    assert status.state is MessageState.EXPIRED
    page = await store.finished_since(FINISHED_START, client=None, limit=10)
    assert [m.message_id for m in page.messages] == [message_id]
    assert await store.purge(T0 + 14) == 1
    other = ReceiptIn(("c3",), "DELIVRD", "delivered", "000", T0)
    again = ReceiptIn(("a1",), "DELIVRD", "delivered", "000", T0)
    results = await store.apply_receipts(CARRIER, [other, again], now=T0 + 15)
    assert [r.outcome for r in results] == [ReceiptOutcome.HELD, ReceiptOutcome.HELD]


async def test_fingerprints_are_kept_with_their_mo_until_they_expire(store: Queue) -> None:
    """A fingerprint stored with an MO or a held part is read back per carrier, newest
    `limit` oldest first, while its window lasts; a later one of the same key replaces it;
    forget_seen deletes those past their window."""
    group = PartGroup(CARRIER, "+447700900001", "SHOP", 0, 7, 2)
    mo = InboundIn(CARRIER, "+447700900001", "SHOP", "hi", 0, T0, "shop", seen=Seen(b"a", T0 + 60))
    await store.store_inbound(mo)
    await store.hold_inbound_part(InboundPart(group, 1, b"one", T0 + 1, Seen(b"b", T0 + 61)))
    other = InboundIn("other", "+1555", "SHOP", "x", 0, T0 + 2, None, seen=Seen(b"a", T0 + 10))
    await store.store_inbound(other)
    await store.store_inbound(InboundIn(CARRIER, "+447700900002", "SHOP", "no fp", 0, T0, "shop"))
    assert await store.inbound_seen(CARRIER, now=T0 + 5, limit=10) == [(b"a", T0), (b"b", T0 + 1)]
    assert await store.inbound_seen(CARRIER, now=T0 + 5, limit=1) == [(b"b", T0 + 1)]
    assert await store.inbound_seen(CARRIER, now=T0 + 60, limit=10) == [(b"b", T0 + 1)]
    again = InboundIn(
        CARRIER, "+447700900001", "SHOP", "hi", 0, T0 + 3, "shop", seen=Seen(b"a", T0 + 63)
    )
    await store.store_inbound(again)
    assert await store.inbound_seen(CARRIER, now=T0 + 62, limit=10) == [(b"a", T0 + 3)]
    assert await store.forget_seen(now=T0 + 61) == 2  # b, and the other carrier's a
    assert await store.inbound_seen(CARRIER, now=T0, limit=10) == [(b"a", T0 + 3)]
    assert await store.inbound_seen("other", now=T0, limit=10) == []


async def test_a_wall_clock_step_back_moves_retries_not_what_a_client_scheduled(
    store: Queue,
) -> None:
    """After the wall clock stepped back 600 s, a retry set for 100 s after the last try is
    due 100 s after it again in the new time; a message scheduled for a wall-clock time
    keeps it; a retry of a scheduled message, whose time came once, moves back too (not held
    to that time, which the new clock reads as still ahead); and a retry recorded since the
    step, with the new clock's times, stays."""
    (plain,) = await store.enqueue([message()], now=T0)
    (later,) = await store.enqueue([message(not_before=T0 + 500)], now=T0)
    (early,) = await store.enqueue([message(not_before=T0 + 50)], now=T0)
    (fresh,) = await store.enqueue([message()], now=T0)
    claimed = {s.message_id: s for s in await store.claim(CARRIER, 10, now=T0)}
    assert set(claimed) == {plain.message_id, fresh.message_id}
    await store.record([Retry(claimed[plain.message_id].segment_id, 0x58, T0 + 100)], now=T0)
    (again,) = await store.claim(CARRIER, 10, now=T0 + 50)
    assert again.message_id == early.message_id
    await store.record([Retry(again.segment_id, 0x58, T0 + 200)], now=T0 + 50)

    stepped = T0 + 51 - 600  # the clock went back 600 s at about T0 + 50.5
    retry = Retry(claimed[fresh.message_id].segment_id, 0x58, stepped + 30)
    await store.record([retry], now=stepped)  # before the daemon noticed the step
    assert await store.rebase_schedules(600.0, now=stepped + 0.5, since=T0 + 50 - 600) == 2
    assert len(await store.claim(CARRIER, 10, now=stepped + 29)) == 0
    (due,) = await store.claim(CARRIER, 10, now=stepped + 30)
    assert due.message_id == fresh.message_id  # its 30 s, not moved again
    (due,) = await store.claim(CARRIER, 10, now=stepped + 49)  # T0 + 100 - 600
    assert due.message_id == plain.message_id
    assert len(await store.claim(CARRIER, 10, now=stepped + 148)) == 0
    (due,) = await store.claim(CARRIER, 10, now=stepped + 149)  # T0 + 200 - 600, not T0 + 50
    assert due.message_id == early.message_id
    assert len(await store.claim(CARRIER, 10, now=T0 + 499)) == 0
    (due,) = await store.claim(CARRIER, 10, now=T0 + 500)
    assert due.message_id == later.message_id


async def test_a_wall_clock_step_back_moves_receipt_queries_too(store: Queue) -> None:
    """A query_sm due 60 s after acceptance was asked an hour late after the clock stepped
    back an hour: it moves back with the retries; one scheduled since the step stays."""
    await store.enqueue([message(), message()], now=T0)
    first, second = await store.claim(CARRIER, 2, now=T0)
    await store.record([Submitted(first.segment_id, ("k1",), "b", "K1", query_at=T0 + 60)], now=T0)
    stepped = T0 + 1 - 3_600  # the clock went back an hour at T0 + 1
    await store.record(
        [Submitted(second.segment_id, ("k2",), "b", "K2", query_at=stepped + 60)], now=stepped
    )
    await store.rebase_schedules(3_600.0, now=stepped + 0.5, since=stepped - 0.5)
    assert await store.due_queries(CARRIER, now=stepped + 58, limit=10) == []
    (due,) = await store.due_queries(CARRIER, now=stepped + 59.5, limit=10)  # T0 + 60, moved
    assert due.segment_id == first.segment_id
    assert len(await store.due_queries(CARRIER, now=stepped + 60, limit=10)) == 2


async def test_what_was_learned_of_a_carrier_s_ids_is_kept_replaced_and_forgotten(
    store: Queue,
) -> None:
    """One word per carrier: a second write replaces the first, None forgets it."""
    assert await store.id_formats() == {}
    await store.set_id_format(CARRIER, "hex", now=T0)
    await store.set_id_format("other", "hex", now=T0)
    await store.set_id_format("other", "decimal", now=T0 + 1)
    assert await store.id_formats() == {CARRIER: "hex", "other": "decimal"}
    await store.set_id_format(CARRIER, None, now=T0 + 2)
    await store.set_id_format("never", None, now=T0 + 2)
    assert await store.id_formats() == {"other": "decimal"}


async def test_inbound_is_read_back_per_client_in_order_with_ids_never_reused(
    store: Queue,
) -> None:
    """What an inbound event said is what the store gives back: the client's own messages
    after an id, oldest first, with how they came (complete, keyword). A purge of the oldest
    does not hand their ids out again."""
    stop = InboundIn(CARRIER, "+447700900001", "SHOP", "STOP", 0, T0, "shop", keyword="stop")
    half = InboundIn(CARRIER, "+447700900002", "SHOP", "part", 8, T0 + 1, "shop", complete=False)
    other = InboundIn(CARRIER, "+447700900003", "ACME", "hi", 0, T0 + 2, "acme")
    unowned = InboundIn(CARRIER, "+447700900004", "NOBODY", "yo", 0, T0 + 3, None)
    ids = [await store.store_inbound(m) for m in (stop, half, other, unowned)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 4
    mine = await store.inbound_since(0, client="shop")
    assert [(m.id, m.text, m.complete, m.keyword, m.data_coding) for m in mine] == [
        (ids[0], "STOP", True, "stop", 0),
        (ids[1], "part", False, None, 8),
    ]
    assert [m.id for m in await store.inbound_since(ids[0], client="shop")] == [ids[1]]
    assert [m.id for m in await store.inbound_since(0, client="shop", limit=1)] == [ids[0]]
    assert [m.text for m in await store.inbound_since(0)] == ["STOP", "part", "hi", "yo"]
    await store.purge(T0 + 10)
    assert await store.inbound_since(0) == []
    later = await store.store_inbound(dataclasses.replace(other, received_at=T0 + 11))
    assert later > ids[-1]


async def test_segments_come_due_for_a_query_until_settled_or_told_not_again(store: Queue) -> None:
    """A segment accepted with query_at is offered once due, with what the query needs; one a
    final receipt settled is not offered again; schedule_queries sets the next time, or none.
    A segment accepted without query_at, or of another carrier, is never offered."""
    await store.enqueue([message(segments=(b"a", b"b")), message()], now=T0)
    first, second, plain = await store.claim(CARRIER, 10, now=T0)
    await store.record(
        [
            Submitted(first.segment_id, ("k1",), "b", "K1", query_at=T0 + 60),
            Submitted(second.segment_id, ("k2",), "b", "K2", query_at=T0 + 60),
            Submitted(plain.segment_id, ("k3",), "b", "K3"),
        ],
        now=T0,
    )
    assert await store.due_queries(CARRIER, now=T0 + 59, limit=10) == []
    assert await store.due_queries("other-carrier", now=T0 + 60, limit=10) == []
    due = await store.due_queries(CARRIER, now=T0 + 60, limit=10)
    assert [(t.segment_id, t.carrier_message_id, t.key, t.body, t.since) for t in due] == [
        (first.segment_id, "K1", "k1", b"a", T0),
        (second.segment_id, "K2", "k2", b"b", T0),
    ]
    assert len(await store.due_queries(CARRIER, now=T0 + 60, limit=1)) == 1
    delivered = ReceiptIn(("k2",), "DELIVRD", "delivered", "000", None)
    await store.apply_receipts(CARRIER, [delivered], now=T0 + 61)
    await store.schedule_queries(
        [(first.segment_id, T0 + 120), (second.segment_id, T0 + 120)], now=T0 + 61
    )
    assert await store.due_queries(CARRIER, now=T0 + 119, limit=10) == []
    due = await store.due_queries(CARRIER, now=T0 + 120, limit=10)
    assert [t.segment_id for t in due] == [first.segment_id]
    await store.schedule_queries([(first.segment_id, None)], now=T0 + 121)
    assert await store.due_queries(CARRIER, now=T0 + 10_000, limit=10) == []


async def test_settled_segments_due_for_a_query_take_no_part_of_the_limit(store: Queue) -> None:
    """Above the carrier's queries a second in receipts, the due rows of settled segments
    filled every call's limit: the one whose receipt was lost was never asked about."""
    await store.enqueue([message() for _ in range(10)], now=T0)
    claimed = await store.claim(CARRIER, 10, now=T0)
    await store.record(
        [
            Submitted(s.segment_id, (f"k{i}",), "b", f"K{i}", query_at=T0 + 60)
            for i, s in enumerate(claimed)
        ],
        now=T0,
    )
    receipts = [ReceiptIn((f"k{i}",), "DELIVRD", "delivered", "000", None) for i in range(9)]
    await store.apply_receipts(CARRIER, receipts, now=T0 + 1)  # all but the last
    due = await store.due_queries(CARRIER, now=T0 + 60, limit=2)
    assert [t.segment_id for t in due] == [claimed[9].segment_id]


async def test_finished_messages_are_read_back_in_the_order_they_finished(store: Queue) -> None:
    """Cancelled, failed, and submitted without a receipt asked for: each finished, and read
    back per client in the order they finished, paged by the cursor; one still queued is not
    there."""
    otp_cancelled, web_cancelled, otp_failed, otp_sent, otp_queued = await store.enqueue(
        [
            message(ref="a"),
            message("web"),
            message(segments=(b"x", b"y")),
            message(registered_delivery=False),
            message(),
        ],
        now=T0,
    )
    await store.cancel(otp_cancelled.message_id, "otp", now=T0 + 1)
    await store.cancel(web_cancelled.message_id, "web", now=T0 + 2)
    claim = await store.claim(CARRIER, 3, now=T0 + 3)
    first = {s.segment_id: s for s in claim}
    parts = [segment_id(otp_failed.message_id, i) for i in range(2)]
    assert set(parts) <= set(first)
    await store.record([Failed(part, 0x45) for part in parts], now=T0 + 3)
    sent = segment_id(otp_sent.message_id, 0)
    assert sent in first
    await store.record([Submitted(sent, ("m1",), "0", "m1")], now=T0 + 4)
    first_page = await store.finished_since(FINISHED_START, client="otp", limit=10)
    found, cursor = first_page.messages, first_page.cursor
    assert not first_page.more
    assert [(f.message_id, f.ref, f.state, f.finished_at) for f in found] == [
        (otp_cancelled.message_id, "a", MessageState.CANCELLED, T0 + 1),
        (otp_failed.message_id, None, MessageState.FAILED, T0 + 3),
        (otp_sent.message_id, None, MessageState.SUBMITTED, T0 + 4),
    ]
    assert cursor == (T0 + 4, otp_sent.message_id)
    assert await store.finished_since(cursor, client="otp", limit=10) == FinishedPage(
        [], cursor, more=False
    )
    everyone = (await store.finished_since(FINISHED_START, client=None, limit=10)).messages
    assert web_cancelled.message_id in [f.message_id for f in everyone]
    assert otp_queued.message_id not in [f.message_id for f in everyone]
    paged: list[int] = []
    cursor = FINISHED_START
    for _ in range(5):
        page = await store.finished_since(cursor, client="otp", limit=1)
        paged.extend(f.message_id for f in page.messages)
        cursor = page.cursor
        if not page.more:
            break
    assert paged == [f.message_id for f in found]


async def test_a_finished_message_that_ends_otherwise_is_listed_again(store: Queue) -> None:
    """Without receipts asked for, submitted is an end: a message listed as failed (its
    submit timed out for the last time) or cancelled (while in flight) whose acceptance came
    late kept its finished_at, and a client paging `finished` never learnt that it went."""
    unreceipted = [message(registered_delivery=False) for _ in range(2)]
    failed, cancelled = await store.enqueue(unreceipted, now=T0)
    first, second = await store.claim(CARRIER, 2, now=T0)
    await store.record([Failed(first.segment_id, 0x08)], now=T0 + 1)
    await store.cancel(cancelled.message_id, None, now=T0 + 2)
    page = await store.finished_since(FINISHED_START, client=None, limit=10)
    assert [(f.message_id, f.state) for f in page.messages] == [
        (failed.message_id, MessageState.FAILED),
        (cancelled.message_id, MessageState.CANCELLED),
    ]
    await store.record([Submitted(first.segment_id, ("k1",), "b", late=True)], now=T0 + 3)
    await store.record([Submitted(second.segment_id, ("k2",), "b")], now=T0 + 4)
    again = await store.finished_since(page.cursor, client=None, limit=10)
    assert [(f.message_id, f.state, f.finished_at) for f in again.messages] == [
        (failed.message_id, MessageState.SUBMITTED, T0 + 3),
        (cancelled.message_id, MessageState.SUBMITTED, T0 + 4),
    ]


async def test_a_page_of_finished_messages_looks_at_a_bounded_number(store: Queue) -> None:
    """25 of web's messages finished before one of otp's: a page of 1 for otp looks at 10 and
    returns none, with a cursor past them and `more`; the third page finds otp's."""
    batch = [message("web", ref=str(i)) for i in range(25)] + [message()]
    enqueued = await store.enqueue(batch, now=T0)
    for i, e in enumerate(enqueued):
        client = "otp" if i == 25 else "web"
        await store.cancel(e.message_id, client, now=T0 + 1 + i)
    pages = []
    cursor = FINISHED_START
    for _ in range(3):
        page = await store.finished_since(cursor, client="otp", limit=1)
        pages.append(([f.message_id for f in page.messages], page.more))
        cursor = page.cursor
    assert pages == [([], True), ([], True), ([enqueued[25].message_id], True)]
    assert not (await store.finished_since(cursor, client="otp", limit=1)).more


async def test_receipts_overdue_after_a_step_back_wait_until_the_message_is_that_old(
    store: Queue,
) -> None:
    """Created before the wall clock stepped back an hour, accepted after: both backends give
    up on its receipt once its creation, not only its acceptance, is receipt_wait old."""
    (enq,) = await store.enqueue([message()], now=T0)
    accepted = T0 - 3600 + 1
    (seg,) = await store.claim(CARRIER, 1, now=accepted)
    await store.record([Submitted(seg.segment_id, ("k",), "b")], now=accepted)
    assert await store.finish_overdue(accepted + 10, now=accepted + 610) == 0
    assert await store.finish_overdue(T0 + 1, now=T0 + 601) == 1
    page = await store.finished_since(FINISHED_START, client=None, limit=10)
    assert [m.message_id for m in page.messages] == [enq.message_id]


async def test_finishing_after_the_wall_clock_stepped_back_keeps_the_order(store: Queue) -> None:
    """A message finishing after the clock went back 60 s finishes just after the latest, so
    a cursor taken before the step still reads it, after the one that finished first, even
    with a lower id (an equal finished_at would sort it by id, behind the cursor)."""
    first, second = await store.enqueue([message(ref="1"), message(ref="2")], now=T0)
    await store.cancel(second.message_id, "otp", now=T0 + 100)
    page = await store.finished_since(FINISHED_START, client="otp", limit=10)
    await store.cancel(first.message_id, "otp", now=T0 + 40)  # the clock stepped back
    after = await store.finished_since(page.cursor, client="otp", limit=10)
    assert [(f.message_id, f.finished_at) for f in after.messages] == [
        (first.message_id, math.nextafter(T0 + 100, math.inf))
    ]


async def test_the_latest_finish_is_known_again_after_a_reopen(tmp_path: Path) -> None:
    """The SQLite store reads the latest finished_at back when opened, so the order holds
    across a restart too."""
    queue = await open_queue("sqlite", tmp_path / "queue.db")
    try:
        first, second = await queue.enqueue([message(), message()], now=T0)
        await queue.cancel(second.message_id, "otp", now=T0 + 100)
    finally:
        await queue.close()
    queue = await open_queue("sqlite", tmp_path / "queue.db")
    try:
        await queue.cancel(first.message_id, "otp", now=T0 + 40)
        status = (await queue.finished_since(FINISHED_START, client="otp", limit=10)).messages
        assert [(f.message_id, f.finished_at) for f in status] == [
            (second.message_id, T0 + 100),
            (first.message_id, math.nextafter(T0 + 100, math.inf)),
        ]
    finally:
        await queue.close()


async def test_a_query_answer_settles_the_segment_asked_about_not_the_one_its_id_now_names(
    store: Queue,
) -> None:
    """An SMSC that reused an id while the first message under it was still open: the answer
    to the query about the first (by its segment) settles the first, not the newer message
    the id's key now leads to; once settled, another answer about it changes nothing."""
    first, second = await store.enqueue([message(), message()], now=T0)
    old, new = await store.claim(CARRIER, 2, now=T0)
    await store.record([Submitted(old.segment_id, ("k9",), "0", "K9")], now=T0)
    await store.record([Submitted(new.segment_id, ("k9",), "0", "K9")], now=T0 + 1)
    answer = ReceiptIn(("k9",), "DELIVRD", "delivered", "000", None, segment_id=old.segment_id)
    (result,) = await store.apply_receipts(CARRIER, [answer], now=T0 + 2)
    assert result.outcome is ReceiptOutcome.MATCHED
    assert await segment_states(store, first.message_id) == [SegmentState.DELIVERED]
    assert await segment_states(store, second.message_id) == [SegmentState.SUBMITTED]
    (again,) = await store.apply_receipts(CARRIER, [answer], now=T0 + 3)
    assert again.outcome is ReceiptOutcome.DUPLICATE
    assert await segment_states(store, second.message_id) == [SegmentState.SUBMITTED]
