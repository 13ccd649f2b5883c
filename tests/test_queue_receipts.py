"""The queue contract for delivery receipts, opt-outs and inbound messages, on every backend."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from queue_support import CARRIER, T0, message

from smppd.pdu.receipt import (
    IdFormat,
    correlation_keys,
    learned_receipt_keys,
    receipt_keys,
    relearned_keys,
    resp_keys,
)
from smppd.queue import (
    InboundIn,
    MessageState,
    Queue,
    ReceiptIn,
    ReceiptOutcome,
    Retry,
    SegmentState,
    Submitted,
    open_queue,
)
from smppd.queue.receipts import FALLBACK_AFTER_S


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Queue]:
    queue = await open_queue(
        request.param, tmp_path / "queue.db", receipt_hold_s=60.0, max_held_receipts=3
    )
    try:
        yield queue
    finally:
        await queue.close()


def delivered(carrier_id: str, *, done_at: float = T0 + 50) -> ReceiptIn:
    return ReceiptIn(correlation_keys(carrier_id), "DELIVRD", "delivered", "000", done_at)


async def submit_one(store: Queue, carrier_id: str, **fields: object) -> int:
    """Enqueue, claim and submit one message; returns its id."""
    (enq,) = await store.enqueue([message(**fields)], now=T0)  # type: ignore[arg-type]
    (seg,) = await store.claim(CARRIER, 1, now=T0)
    await store.record([Submitted(seg.segment_id, correlation_keys(carrier_id), "b")], now=T0)
    return enq.message_id


async def state_of(store: Queue, message_id: int) -> MessageState:
    status = await store.status(message_id, None)
    assert status is not None
    return status.state


async def test_a_receipt_finds_its_id_as_written_then_written_another_way(store: Queue) -> None:
    """The daemon's keys: one per resp id. A receipt that writes the id as its resp did finds
    that segment at once, even when another open id has the same number; one that writes it in
    the other base is held, and finds it through its later keys once it has waited."""
    ids = {}
    for resp_id in ("0000001a", "00000026", "ff00"):
        ids[resp_id] = await submit_keys(store, resp_keys(resp_id), now=T0)
    receipts = [
        ReceiptIn(receipt_keys(rid), "DELIVRD", "delivered", "000", T0 + 5)
        for rid in ("26", "0X1A", "65280")  # as written, as written, in decimal
    ]
    results = await store.apply_receipts(CARRIER, receipts, now=T0 + 6)
    changed = [r.change.message_id if r.change is not None else None for r in results]
    assert changed == [ids["00000026"], ids["0000001a"], None]
    assert results[2].outcome is ReceiptOutcome.HELD
    assert await store.settle_receipts(now=T0 + 6 + FALLBACK_AFTER_S / 2) == {}
    settled = await store.settle_receipts(now=T0 + 6 + FALLBACK_AFTER_S)
    assert [c.message_id for c in settled[CARRIER]] == [ids["ff00"]]
    assert await state_of(store, ids["ff00"]) is MessageState.DELIVERED
    assert (await store.stats(now=T0 + 9)).receipts_held == 0
    assert store.held_ended == {CARRIER: {"matched": 1}}


async def test_an_early_receipt_waits_for_the_id_as_it_writes_it(store: Queue) -> None:
    """An early receipt for 0000000a is not taken by the open 00000010 (ten, read as decimal):
    its own resp, recorded after it, takes it; 00000010 then gets its own receipt."""
    ten = await submit_keys(store, resp_keys("00000010"), now=T0)
    early = ReceiptIn(receipt_keys("0000000a"), "DELIVRD", "delivered", "000", T0 + 5)
    (result,) = await store.apply_receipts(CARRIER, [early], now=T0 + 1)
    assert result.outcome is ReceiptOutcome.HELD
    own = await submit_keys(store, resp_keys("0000000a"), now=T0 + 1.5)
    assert await state_of(store, own) is MessageState.DELIVERED
    assert await state_of(store, ten) is MessageState.SUBMITTED
    assert await store.settle_receipts(now=T0 + 10) == {}
    assert await state_of(store, ten) is MessageState.SUBMITTED
    later = ReceiptIn(receipt_keys("00000010"), "DELIVRD", "delivered", "000", T0 + 6)
    (result,) = await store.apply_receipts(CARRIER, [later], now=T0 + 11)
    assert result.change is not None
    assert result.change.message_id == ten


async def test_an_early_receipt_is_claimed_as_a_later_one_would_match(store: Queue) -> None:
    """An early receipt giving the id in decimal is claimed by the resp that gave it in hex
    once it has waited (by settling, or by the Submitted itself when that comes later); one
    for an id no resp has given, by none."""
    early = ReceiptIn(receipt_keys("26"), "DELIVRD", "delivered", "000", T0 + 5)
    late = ReceiptIn(receipt_keys("43"), "DELIVRD", "delivered", "000", T0 + 5)
    stray = ReceiptIn(receipt_keys("ff"), "DELIVRD", "delivered", "000", T0 + 5)
    results = await store.apply_receipts(CARRIER, [early, late, stray], now=T0 + 1)
    assert [r.outcome for r in results] == [ReceiptOutcome.HELD] * 3
    other = await submit_keys(store, resp_keys("2c"), now=T0 + 2)
    own = await submit_keys(store, resp_keys("0000001A"), now=T0 + 2)
    assert await state_of(store, own) is MessageState.SUBMITTED  # the hex "26" may still come
    settled = await store.settle_receipts(now=T0 + 1 + FALLBACK_AFTER_S)
    assert [c.message_id for c in settled[CARRIER]] == [own]
    after = await submit_keys(store, resp_keys("2b"), now=T0 + 2 + FALLBACK_AFTER_S)
    assert await state_of(store, after) is MessageState.DELIVERED
    assert await state_of(store, other) is MessageState.SUBMITTED
    assert (await store.stats(now=T0 + 5)).receipts_held == 1


async def test_a_receipt_whose_own_segment_is_final_is_not_given_to_another(store: Queue) -> None:
    """A second, different receipt for a final segment's id is held (a resubmission may reuse
    the id), and never given to an open segment that wrote its number another way."""
    own = await submit_keys(store, resp_keys("1a"), now=T0)
    receipt = ReceiptIn(receipt_keys("1a"), "DELIVRD", "delivered", "000", T0 + 5)
    (first,) = await store.apply_receipts(CARRIER, [receipt], now=T0 + 1)
    assert first.outcome is ReceiptOutcome.MATCHED
    other = await submit_keys(store, resp_keys("26"), now=T0 + 1)  # 0x1a written in decimal
    differs = ReceiptIn(receipt_keys("1a"), "UNDELIV", "undeliverable", "001", T0 + 7)
    (second,) = await store.apply_receipts(CARRIER, [differs], now=T0 + 2)
    assert second.outcome is ReceiptOutcome.HELD
    assert await store.settle_receipts(now=T0 + 2 + FALLBACK_AFTER_S) == {}
    assert await state_of(store, other) is MessageState.SUBMITTED
    assert await state_of(store, own) is MessageState.DELIVERED


async def submit_keys(store: Queue, keys: tuple[str, ...], *, now: float) -> int:
    (enq,) = await store.enqueue([message()], now=T0)
    (seg,) = await store.claim(CARRIER, 1, now=T0)
    await store.record([Submitted(seg.segment_id, keys, "b")], now=now)
    return enq.message_id


async def test_a_receipt_delivers_its_segment(store: Queue) -> None:
    """A final receipt matched by the carrier id moves the segment to its state, and says how
    long after the acceptance it came."""
    message_id = await submit_one(store, "1A2B")
    (result,) = await store.apply_receipts(CARRIER, [delivered("1A2B")], now=T0 + 60)
    assert result.outcome is ReceiptOutcome.MATCHED
    assert result.delivered_after_s == 60.0
    assert result.change is not None
    assert (result.change.message_id, result.change.client) == (message_id, "otp")
    assert (result.change.before, result.change.after) == (
        MessageState.SUBMITTED,
        MessageState.DELIVERED,
    )
    assert (result.change.receipt_stat, result.change.receipt_err) == ("DELIVRD", "000")
    status = await store.status(message_id, "otp")
    assert status is not None
    (segment,) = status.segments
    assert (segment.state, segment.receipt_stat, segment.done_at) == (
        SegmentState.DELIVERED,
        "DELIVRD",
        T0 + 50,
    )


async def test_hex_and_decimal_renderings_match(store: Queue) -> None:
    """A resp id in hex matches a receipt that writes the same id in decimal."""
    message_id = await submit_one(store, "1a2b")  # hex: keys ("6699",)
    (result,) = await store.apply_receipts(CARRIER, [delivered("6699")], now=T0 + 60)
    assert result.outcome is ReceiptOutcome.MATCHED
    assert await state_of(store, message_id) is MessageState.DELIVERED


async def test_receipts_match_only_their_carrier(store: Queue) -> None:
    """The same id from another carrier does not match."""
    message_id = await submit_one(store, "77")
    (result,) = await store.apply_receipts("other", [delivered("77")], now=T0 + 60)
    assert result.outcome is ReceiptOutcome.HELD
    assert await state_of(store, message_id) is MessageState.SUBMITTED


async def test_an_intermediate_receipt_keeps_the_segment_submitted(store: Queue) -> None:
    """ENROUTE is recorded without leaving submitted; the same again changes nothing. Neither
    it nor the final receipt after it says how long delivery took: ENROUTE moved the time."""
    message_id = await submit_one(store, "42")
    enroute = ReceiptIn(correlation_keys("42"), "ENROUTE", None, "000", None)
    (result,) = await store.apply_receipts(CARRIER, [enroute], now=T0 + 1)
    assert result.outcome is ReceiptOutcome.MATCHED
    assert result.change is not None
    assert result.change.before is result.change.after is MessageState.SUBMITTED
    assert result.change.receipt_stat == "ENROUTE"
    assert result.delivered_after_s is None
    (again,) = await store.apply_receipts(CARRIER, [enroute], now=T0 + 2)
    assert again.outcome is ReceiptOutcome.DUPLICATE
    (final,) = await store.apply_receipts(CARRIER, [delivered("42")], now=T0 + 3)
    assert final.outcome is ReceiptOutcome.MATCHED
    assert final.delivered_after_s is None
    assert await state_of(store, message_id) is MessageState.DELIVERED


async def test_a_duplicate_final_receipt_changes_nothing(store: Queue) -> None:
    """The same final receipt twice (also within one call) is applied once and then reported."""
    message_id = await submit_one(store, "99")
    results = await store.apply_receipts(CARRIER, [delivered("99"), delivered("99")], now=T0 + 60)
    assert [r.outcome for r in results] == [ReceiptOutcome.MATCHED, ReceiptOutcome.DUPLICATE]
    assert [r.delivered_after_s for r in results] == [60.0, None]
    (later,) = await store.apply_receipts(CARRIER, [delivered("99")], now=T0 + 61)
    assert later.outcome is ReceiptOutcome.DUPLICATE
    assert later.change is None
    assert await state_of(store, message_id) is MessageState.DELIVERED
    stats = await store.stats(now=T0 + 61)
    assert stats.receipts_held == 0


async def test_an_early_receipt_is_held_then_matched(store: Queue) -> None:
    """A receipt that beats its submit_sm_resp is held and applied when Submitted lands."""
    (enq,) = await store.enqueue([message()], now=T0)
    (seg,) = await store.claim(CARRIER, 1, now=T0)
    (held,) = await store.apply_receipts(CARRIER, [delivered("5150")], now=T0 + 1)
    assert held.outcome is ReceiptOutcome.HELD
    assert (await store.stats(now=T0 + 1)).receipts_held == 1
    changes = await store.record(
        [Submitted(seg.segment_id, correlation_keys("5150"), "b")], now=T0 + 2
    )
    assert [(c.segment_state, c.after) for c in changes] == [
        (SegmentState.SUBMITTED, MessageState.SUBMITTED),
        (SegmentState.DELIVERED, MessageState.DELIVERED),
    ]
    assert await state_of(store, enq.message_id) is MessageState.DELIVERED
    assert (await store.stats(now=T0 + 2)).receipts_held == 0
    assert store.held_ended == {CARRIER: {"matched": 1}}


async def test_a_receipt_held_too_long_is_kept_as_unmatched(store: Queue) -> None:
    """Past the hold time a held receipt is counted as unmatched and no longer applied."""
    (held,) = await store.apply_receipts(CARRIER, [delivered("808")], now=T0)
    assert held.outcome is ReceiptOutcome.HELD
    (enq,) = await store.enqueue([message()], now=T0 + 61)
    (seg,) = await store.claim(CARRIER, 1, now=T0 + 61)
    changes = await store.record(
        [Submitted(seg.segment_id, correlation_keys("808"), "b")], now=T0 + 61
    )
    assert [c.segment_state for c in changes] == [SegmentState.SUBMITTED]
    stats = await store.stats(now=T0 + 61)
    assert (stats.receipts_held, stats.receipts_unmatched) == (0, 1)
    assert store.held_ended == {CARRIER: {"unmatched": 1}}
    assert await state_of(store, enq.message_id) is MessageState.SUBMITTED
    assert await store.purge(T0 + 1) == 0  # the message is not finished
    assert (await store.stats(now=T0 + 62)).receipts_unmatched == 0  # purged with retention
    assert store.held_ended == {CARRIER: {"unmatched": 1}}  # a counter: purging keeps it


async def test_settling_ends_receipts_held_too_long_with_no_other_write(store: Queue) -> None:
    """Traffic stops with a receipt held: the housekeeping's settling still counts it as
    unmatched once it is past the hold time, though no receipt came since it last settled
    (the unmatched-receipts alert reads these counts)."""
    (held,) = await store.apply_receipts(CARRIER, [delivered("808")], now=T0)
    assert held.outcome is ReceiptOutcome.HELD
    assert await store.settle_receipts(now=T0 + FALLBACK_AFTER_S + 1) == {}
    assert (await store.stats(now=T0 + 2)).receipts_held == 1
    assert await store.settle_receipts(now=T0 + 61) == {}
    stats = await store.stats(now=T0 + 61)
    assert (stats.receipts_held, stats.receipts_unmatched) == (0, 1)
    assert store.held_ended == {CARRIER: {"unmatched": 1}}


async def test_held_receipts_are_bounded(store: Queue) -> None:
    """Past the bound the oldest held receipt is pushed out and counted, not applied."""
    results = await store.apply_receipts(CARRIER, [delivered(str(n)) for n in range(1, 5)], now=T0)
    assert [r.outcome for r in results] == [ReceiptOutcome.HELD] * 4
    stats = await store.stats(now=T0)
    assert (stats.receipts_held, stats.receipts_dropped) == (3, 1)
    await store.enqueue([message(), message()], now=T0)
    claim = await store.claim(CARRIER, 2, now=T0)
    changes = await store.record(
        [
            Submitted(claim[0].segment_id, correlation_keys("1"), "b"),  # pushed out
            Submitted(claim[1].segment_id, correlation_keys("4"), "b"),  # still held
        ],
        now=T0 + 1,
    )
    assert [c.segment_state for c in changes] == [
        SegmentState.SUBMITTED,
        SegmentState.SUBMITTED,
        SegmentState.DELIVERED,
    ]
    assert store.held_ended == {CARRIER: {"dropped": 1, "matched": 1}}


async def test_a_keyless_receipt_is_kept_unmatched(store: Queue) -> None:
    """A receipt with no usable id is counted as unmatched at once."""
    receipt = ReceiptIn((), "DELIVRD", "delivered", "000", None)
    (result,) = await store.apply_receipts(CARRIER, [receipt], now=T0)
    assert result.outcome is ReceiptOutcome.UNMATCHED
    assert (await store.stats(now=T0)).receipts_unmatched == 1


async def test_a_final_receipt_frees_the_id_for_reuse(store: Queue) -> None:
    """Once final, a carrier id matches the next message submitted under it, not the old one."""
    first = await submit_one(store, "123")
    await store.apply_receipts(CARRIER, [delivered("123", done_at=T0 + 10)], now=T0 + 10)
    second = await submit_one(store, "123")
    undeliverable = ReceiptIn(correlation_keys("123"), "UNDELIV", "undeliverable", "001", T0 + 20)
    (result,) = await store.apply_receipts(CARRIER, [undeliverable], now=T0 + 20)
    assert result.outcome is ReceiptOutcome.MATCHED
    assert result.change is not None
    assert result.change.message_id == second
    assert await state_of(store, first) is MessageState.DELIVERED
    assert await state_of(store, second) is MessageState.UNDELIVERABLE


async def test_an_early_receipt_for_a_reused_id_is_held_not_taken_for_a_repeat(
    store: Queue,
) -> None:
    """A receipt under a retired id that differs from the final one (done in another minute)
    waits for its submission."""
    await submit_one(store, "123")
    await store.apply_receipts(CARRIER, [delivered("123", done_at=T0 + 10)], now=T0 + 10)
    (enq,) = await store.enqueue([message()], now=T0)
    (seg,) = await store.claim(CARRIER, 1, now=T0)
    (early,) = await store.apply_receipts(CARRIER, [delivered("123", done_at=T0 + 70)], now=T0)
    assert early.outcome is ReceiptOutcome.HELD
    changes = await store.record(
        [Submitted(seg.segment_id, correlation_keys("123"), "b")], now=T0 + 21
    )
    assert changes[-1].message_id == enq.message_id
    assert changes[-1].after is MessageState.DELIVERED


async def test_an_intermediate_receipt_after_the_final_one_is_no_news(store: Queue) -> None:
    """ENROUTE arriving after DELIVRD (carriers send them out of order) is a duplicate: not
    held to end unmatched, which the unmatched-receipts alert would count."""
    message_id = await submit_one(store, "123")
    await store.apply_receipts(CARRIER, [delivered("123")], now=T0 + 50)
    enroute = ReceiptIn(correlation_keys("123"), "ENROUTE", None, "000", T0 + 40)
    (result,) = await store.apply_receipts(CARRIER, [enroute], now=T0 + 51)
    assert result.outcome is ReceiptOutcome.DUPLICATE
    assert await state_of(store, message_id) is MessageState.DELIVERED
    assert (await store.stats(now=T0 + 52)).receipts_held == 0


@pytest.mark.parametrize("query_after_s", [42, None])
async def test_a_query_answer_and_the_receipt_are_one_receipt_in_either_order(
    store: Queue, query_after_s: int | None
) -> None:
    """A query_sm answer (final date to the second, or none) and the carrier's receipt (done
    date to the minute) for one message: whichever comes second is a duplicate, not held,
    and a later message reusing the id is not settled by it."""
    minute = T0 // 60 * 60
    receipt = delivered("123", done_at=minute)
    answer = dataclasses.replace(
        receipt, done_at=None if query_after_s is None else minute + query_after_s
    )
    for first, second in ((answer, receipt), (receipt, answer)):
        message_id = await submit_one(store, "123")
        (applied,) = await store.apply_receipts(CARRIER, [first], now=T0 + 50)
        assert applied.outcome is ReceiptOutcome.MATCHED
        (again,) = await store.apply_receipts(CARRIER, [second], now=T0 + 51)
        assert again.outcome is ReceiptOutcome.DUPLICATE
        assert await state_of(store, message_id) is MessageState.DELIVERED
    reused = await submit_one(store, "123")
    assert await state_of(store, reused) is MessageState.SUBMITTED
    assert (await store.stats(now=T0 + 52)).receipts_held == 0


async def test_a_retried_segment_matches_receipts_by_its_final_id(store: Queue) -> None:
    """Throttled attempts register no ids; the accepted attempt's id is what receipts match."""
    (enq,) = await store.enqueue([message()], now=T0)
    (seg,) = await store.claim(CARRIER, 1, now=T0)
    await store.record([Retry(seg.segment_id, 0x58, T0 + 1)], now=T0)
    (again,) = await store.claim(CARRIER, 1, now=T0 + 1)
    await store.record([Submitted(again.segment_id, correlation_keys("31"), "b")], now=T0 + 2)
    (result,) = await store.apply_receipts(CARRIER, [delivered("31")], now=T0 + 3)
    assert result.outcome is ReceiptOutcome.MATCHED
    assert await state_of(store, enq.message_id) is MessageState.DELIVERED


async def test_multi_part_messages_are_delivered_when_every_part_is(store: Queue) -> None:
    """Each part's receipt matches its own segment; the message is delivered after the last."""
    await store.enqueue([message(segments=(b"a", b"b"))], now=T0)
    claim = await store.claim(CARRIER, 2, now=T0)
    await store.record([Submitted(s.segment_id, (str(100 + s.index),), "b") for s in claim], now=T0)
    first, second = await store.apply_receipts(
        CARRIER,
        [
            ReceiptIn(("100",), "DELIVRD", "delivered", "000", T0),
            ReceiptIn(("101",), "DELIVRD", "delivered", "000", T0),
        ],
        now=T0 + 1,
    )
    assert first.change is not None
    assert second.change is not None
    assert (first.change.after, second.change.after) == (
        MessageState.SUBMITTED,
        MessageState.DELIVERED,
    )


def whole(carrier_id: str, stat: str = "DELIVRD", final: str | None = "delivered") -> ReceiptIn:
    """A receipt from a carrier that sends one per concatenated message."""
    return ReceiptIn(correlation_keys(carrier_id), stat, final, "000", T0 + 50, whole_message=True)


async def three_parts(store: Queue, *, submit: int = 3) -> tuple[int, list[int]]:
    """A three-part message, its first `submit` parts submitted as w0, w1, ... (the rest
    left in flight); its id and its segment ids."""
    (enq,) = await store.enqueue([message(segments=(b"a", b"b", b"c"))], now=T0)
    claim = await store.claim(CARRIER, 3, now=T0)
    outcomes = [
        Submitted(s.segment_id, correlation_keys(f"w{s.index}"), "b") for s in claim[:submit]
    ]
    await store.record(outcomes, now=T0)
    return enq.message_id, [s.segment_id for s in claim]


async def segment_states(store: Queue, message_id: int) -> list[SegmentState]:
    status = await store.status(message_id, None)
    assert status is not None
    return [segment.state for segment in status.segments]


async def test_a_whole_message_receipt_settles_every_submitted_part(store: Queue) -> None:
    """One final receipt under the last part's id delivers all three parts, each with its
    change; a per-part receipt that comes anyway for another part is a duplicate."""
    message_id, segments = await three_parts(store)
    (result,) = await store.apply_receipts(CARRIER, [whole("w2")], now=T0 + 60)
    assert result.outcome is ReceiptOutcome.MATCHED
    assert [(c.segment_id, c.segment_state, c.after) for c in result.changes] == [
        (segments[2], SegmentState.DELIVERED, MessageState.SUBMITTED),
        (segments[0], SegmentState.DELIVERED, MessageState.SUBMITTED),
        (segments[1], SegmentState.DELIVERED, MessageState.DELIVERED),
    ]
    assert all(c.receipt_stat == "DELIVRD" for c in result.changes)
    assert await state_of(store, message_id) is MessageState.DELIVERED
    (again,) = await store.apply_receipts(CARRIER, [whole("w0")], now=T0 + 61)
    assert again.outcome is ReceiptOutcome.DUPLICATE


async def test_a_part_accepted_after_a_whole_message_receipt_takes_it(store: Queue) -> None:
    """A part still in flight does not take the receipt at once (its submit may yet fail);
    when its submit_sm_resp is recorded it takes it, since no receipt of its own will come."""
    message_id, segments = await three_parts(store, submit=2)
    (result,) = await store.apply_receipts(
        CARRIER, [whole("w0", "UNDELIV", "undeliverable")], now=T0 + 60
    )
    assert [c.segment_id for c in result.changes] == segments[:2]
    changes = await store.record(
        [Submitted(segments[2], correlation_keys("w2"), "b", whole_message=True)], now=T0 + 61
    )
    assert [(c.segment_id, c.segment_state, c.after, c.receipt_stat) for c in changes] == [
        (segments[2], SegmentState.SUBMITTED, MessageState.UNDELIVERABLE, None),
        (segments[2], SegmentState.UNDELIVERABLE, MessageState.UNDELIVERABLE, "UNDELIV"),
    ]
    assert await segment_states(store, message_id) == [SegmentState.UNDELIVERABLE] * 3
    status = await store.status(message_id, None)
    assert status is not None
    assert status.segments[2].done_at == T0 + 50


async def test_a_part_accepted_late_waits_when_no_final_whole_message_receipt_came(
    store: Queue,
) -> None:
    """Only a final receipt stands for the parts to come: after an intermediate one, or with
    a carrier that sends a receipt per part, the part accepted late waits for its own."""
    message_id, segments = await three_parts(store, submit=1)
    await store.apply_receipts(CARRIER, [whole("w0", "ENROUTE", None)], now=T0 + 1)
    await store.record(
        [Submitted(segments[1], correlation_keys("w1"), "b", whole_message=True)], now=T0 + 2
    )
    await store.apply_receipts(CARRIER, [whole("w1")], now=T0 + 3)
    await store.record([Submitted(segments[2], correlation_keys("w2"), "b")], now=T0 + 4)
    assert await segment_states(store, message_id) == [
        SegmentState.DELIVERED,
        SegmentState.DELIVERED,
        SegmentState.SUBMITTED,
    ]


async def test_an_intermediate_whole_message_receipt_moves_only_its_part(store: Queue) -> None:
    message_id, _ = await three_parts(store)
    (result,) = await store.apply_receipts(CARRIER, [whole("w1", "ENROUTE", None)], now=T0 + 1)
    assert len(result.changes) == 1
    assert await segment_states(store, message_id) == [SegmentState.SUBMITTED] * 3


async def test_a_held_whole_message_receipt_settles_the_parts_when_its_own_lands(
    store: Queue,
) -> None:
    """Early, it is held (with what it stands for); the Submitted of the part it names applies
    it to that part and to the parts already submitted."""
    message_id, segments = await three_parts(store, submit=2)
    (held,) = await store.apply_receipts(CARRIER, [whole("w2")], now=T0 + 1)
    assert held.outcome is ReceiptOutcome.HELD
    changes = await store.record([Submitted(segments[2], correlation_keys("w2"), "b")], now=T0 + 2)
    assert [(c.segment_id, c.segment_state) for c in changes] == [
        (segments[2], SegmentState.SUBMITTED),
        (segments[2], SegmentState.DELIVERED),
        (segments[0], SegmentState.DELIVERED),
        (segments[1], SegmentState.DELIVERED),
    ]
    assert await state_of(store, message_id) is MessageState.DELIVERED


async def test_a_whole_message_receipt_settled_after_the_wait_settles_the_parts(
    store: Queue,
) -> None:
    """One that gives the last part's hex id in decimal is held, and settling it after the wait
    delivers every part, each change returned for the daemon to publish."""
    (enq,) = await store.enqueue([message(segments=(b"a", b"b", b"c"))], now=T0)
    claim = await store.claim(CARRIER, 3, now=T0)
    await store.record(
        [Submitted(s.segment_id, resp_keys(f"{0xA0 + s.index:08x}"), "b") for s in claim], now=T0
    )
    receipt = ReceiptIn(
        receipt_keys(str(0xA2)), "DELIVRD", "delivered", "000", T0 + 5, whole_message=True
    )
    (held,) = await store.apply_receipts(CARRIER, [receipt], now=T0 + 6)
    assert held.outcome is ReceiptOutcome.HELD
    settled = await store.settle_receipts(now=T0 + 6 + FALLBACK_AFTER_S)
    assert sorted(c.segment_id for c in settled[CARRIER]) == [s.segment_id for s in claim]
    assert await state_of(store, enq.message_id) is MessageState.DELIVERED


async def test_optouts(store: Queue) -> None:
    """Opt-outs are per sender, "*" covers every sender, and removal undoes them."""
    assert await store.add_optout("ACME", "+15550000001", now=T0)
    assert not await store.add_optout("ACME", "+15550000001", now=T0)
    assert await store.add_optout("*", "+15550000002", now=T0)
    assert await store.is_opted_out("ACME", "+15550000001")
    assert not await store.is_opted_out("OTHER", "+15550000001")
    assert await store.is_opted_out("OTHER", "+15550000002")
    listed = await store.list_optouts()
    assert [(o.sender, o.number) for o in listed] == [
        ("*", "+15550000002"),
        ("ACME", "+15550000001"),
    ]
    assert [o.number for o in await store.list_optouts(sender="ACME")] == ["+15550000001"]
    assert len(await store.list_optouts(after=("*", "+15550000002"))) == 1
    assert await store.remove_optout("ACME", "+15550000001")
    assert not await store.remove_optout("ACME", "+15550000001")
    assert not await store.is_opted_out("ACME", "+15550000001")


async def test_cancel_queued_to_an_opted_out_number(store: Queue) -> None:
    """Unsent segments from the sender to the number are cancelled; others are untouched."""
    to_them, other_sender, other_number = await store.enqueue(
        [
            message(source="ACME", destination="+15550000009"),
            message(source="SHOP", destination="+15550000009"),
            message(source="ACME", destination="+15550000008"),
        ],
        now=T0,
    )
    changes = await store.cancel_queued_to("ACME", "+15550000009", now=T0 + 1)
    assert [(c.message_id, c.after) for c in changes] == [
        (to_them.message_id, MessageState.CANCELLED)
    ]
    assert await state_of(store, other_sender.message_id) is MessageState.QUEUED
    changes = await store.cancel_queued_to("*", "+15550000009", now=T0 + 2)
    assert [c.message_id for c in changes] == [other_sender.message_id]
    assert await state_of(store, other_number.message_id) is MessageState.QUEUED
    assert await store.cancel_queued_to("*", "+15550000009", now=T0 + 3) == []


async def test_inbound_messages(store: Queue) -> None:
    """Inbound messages get increasing ids and can be read back per client."""
    first = await store.store_inbound(
        InboundIn(CARRIER, "+15550000001", "ACME", "STOP", 0, T0, "otp")
    )
    second = await store.store_inbound(
        InboundIn(CARRIER, "+15550000002", "SHOP", "hi", 8, T0 + 1, "crm")
    )
    assert second > first
    assert [m.id for m in await store.inbound_since(0)] == [first, second]
    (mine,) = await store.inbound_since(0, client="crm")
    assert (mine.text, mine.data_coding, mine.client) == ("hi", 8, "crm")
    assert await store.inbound_since(second) == []


async def test_overdue_receipts_finish_the_message_for_retention(store: Queue) -> None:
    """A message whose segments were all accepted before the cut and whose receipts never came
    is finished (still `submitted`) and later purged; one with a segment still to be sent, or
    accepted after the cut, is left alone."""
    overdue, partly_sent = await store.enqueue([message(), message(segments=(b"a", b"b"))], now=T0)
    first, second_0 = await store.claim(CARRIER, 2, now=T0)
    await store.record(
        [
            Submitted(first.segment_id, correlation_keys("1"), "b"),
            Submitted(second_0.segment_id, correlation_keys("2"), "b"),
        ],
        now=T0 + 10,
    )
    (recent,) = await store.enqueue([message(priority=9)], now=T0 + 20)
    (seg,) = await store.claim(CARRIER, 1, now=T0 + 20)
    await store.record([Submitted(seg.segment_id, correlation_keys("3"), "b")], now=T0 + 30)

    assert await store.finish_overdue(T0 + 20, now=T0 + 100) == 1
    assert await store.finish_overdue(T0 + 20, now=T0 + 101) == 0  # already finished
    assert await state_of(store, overdue.message_id) is MessageState.SUBMITTED
    assert await store.purge(T0 + 100) == 0  # finished at T0 + 100, not before it
    assert await store.purge(T0 + 102) == 1
    assert await store.status(overdue.message_id, None) is None
    assert await state_of(store, partly_sent.message_id) is MessageState.SUBMITTED
    assert await state_of(store, recent.message_id) is MessageState.SUBMITTED


async def test_a_late_receipt_still_applies_to_a_finished_message(store: Queue) -> None:
    """Giving up on receipts does not forget the ids: a late one still matches, and a message
    it does not complete stays finished."""
    (enq,) = await store.enqueue([message(segments=(b"a", b"b"))], now=T0)
    first, second = await store.claim(CARRIER, 2, now=T0)
    await store.record(
        [
            Submitted(first.segment_id, correlation_keys("81"), "b"),
            Submitted(second.segment_id, correlation_keys("82"), "b"),
        ],
        now=T0,
    )
    assert await store.finish_overdue(T0 + 1, now=T0 + 5) == 1
    (late,) = await store.apply_receipts(CARRIER, [delivered("81")], now=T0 + 60)
    assert late.outcome is ReceiptOutcome.MATCHED
    status = await store.status(enq.message_id, None)
    assert status is not None
    assert [s.state for s in status.segments] == [SegmentState.DELIVERED, SegmentState.SUBMITTED]
    assert await store.purge(T0 + 6) == 1  # still finished at T0 + 5


async def test_receipts_held_before_the_id_format_was_known_take_its_keys(store: Queue) -> None:
    """A carrier with hex resps and decimal receipts: the receipt "65" (for 0x41) was held
    under AUTO's keys, the id as written first. Once the format is known and the held receipts
    re-keyed, the resp 00000065 (another message, whose id "65" is as written) does not take
    it; the resp 00000041, its own, does."""
    (held,) = await store.apply_receipts(
        CARRIER,
        [ReceiptIn(receipt_keys("65"), "DELIVRD", "delivered", "000", T0)],
        now=T0,
    )
    assert held.outcome is ReceiptOutcome.HELD
    rekey = functools.partial(relearned_keys, fmt=IdFormat.HEX)
    assert await store.rekey_held(CARRIER, rekey, now=T0 + 1) == 1
    assert await store.rekey_held(CARRIER, rekey, now=T0 + 1) == 0  # done once
    assert await store.rekey_held("other", rekey, now=T0 + 1) == 0
    other, own = await store.enqueue([message(), message()], now=T0 + 1)
    claimed = {s.message_id: s.segment_id for s in await store.claim(CARRIER, 2, now=T0 + 1)}
    await store.record(
        [Submitted(claimed[other.message_id], resp_keys("00000065"), "b")], now=T0 + 2
    )
    assert await state_of(store, other.message_id) is MessageState.SUBMITTED
    await store.record([Submitted(claimed[own.message_id], resp_keys("00000041"), "b")], now=T0 + 3)
    assert await state_of(store, own.message_id) is MessageState.DELIVERED
    assert store.held_ended == {CARRIER: {"matched": 1}}


def test_held_keys_become_the_learned_format_s() -> None:
    """HEX: a decimal receipt id's keys become its hex value's; DECIMAL: a hex id's, its
    decimal value's; ids of the other kind, AUTO, or keys already learned stay."""
    assert relearned_keys(receipt_keys("65"), IdFormat.HEX) == learned_receipt_keys(
        "65", IdFormat.HEX
    )
    assert relearned_keys(receipt_keys("0x1A"), IdFormat.DECIMAL) == ("s:26",)
    assert relearned_keys(receipt_keys("6a"), IdFormat.DECIMAL) == ("s:106",)
    assert relearned_keys(receipt_keys("65"), IdFormat.AUTO) is None
    learned = learned_receipt_keys("65", IdFormat.HEX)
    assert relearned_keys(learned, IdFormat.HEX) is None  # once only
    assert relearned_keys(receipt_keys("65", IdFormat.HEX), IdFormat.HEX) is None  # set so
    assert relearned_keys((), IdFormat.HEX) is None


async def test_an_early_receipt_sent_twice_counts_one_match_and_one_duplicate(
    store: Queue,
) -> None:
    """The SMSC repeats a receipt before its submit_sm_resp came: both copies are held, the
    submit applies the first and the second is a duplicate, not a second match."""
    (enq,) = await store.enqueue([message()], now=T0)
    (seg,) = await store.claim(CARRIER, 1, now=T0)
    results = await store.apply_receipts(CARRIER, [delivered("5150")] * 2, now=T0 + 1)
    assert [r.outcome for r in results] == [ReceiptOutcome.HELD] * 2
    changes = await store.record(
        [Submitted(seg.segment_id, correlation_keys("5150"), "b")], now=T0 + 2
    )
    assert [c.segment_state for c in changes] == [SegmentState.SUBMITTED, SegmentState.DELIVERED]
    assert await state_of(store, enq.message_id) is MessageState.DELIVERED
    assert (await store.stats(now=T0 + 2)).receipts_held == 0
    assert store.held_ended == {CARRIER: {"matched": 1, "duplicate": 1}}


async def test_a_receipt_settled_twice_by_the_fallback_counts_one_duplicate(store: Queue) -> None:
    """Two copies of a receipt writing the id in the other base wait out FALLBACK_AFTER_S and
    settle on the segment together: one match, one duplicate."""
    message_id = await submit_keys(store, resp_keys("ff00"), now=T0)
    receipt = ReceiptIn(receipt_keys("65280"), "DELIVRD", "delivered", "000", T0 + 5)
    results = await store.apply_receipts(CARRIER, [receipt, receipt], now=T0 + 6)
    assert [r.outcome for r in results] == [ReceiptOutcome.HELD] * 2
    settled = await store.settle_receipts(now=T0 + 6 + FALLBACK_AFTER_S)
    assert [c.message_id for c in settled[CARRIER]] == [message_id]
    assert await state_of(store, message_id) is MessageState.DELIVERED
    assert store.held_ended == {CARRIER: {"matched": 1, "duplicate": 1}}


async def test_a_copy_of_a_settled_receipt_ends_as_a_duplicate(store: Queue) -> None:
    """A copy of a receipt the fallback settled comes later: held (its best key is no
    segment's), it ends as a duplicate when it has waited, not as unmatched at the hold time."""
    message_id = await submit_keys(store, resp_keys("ff00"), now=T0)
    receipt = ReceiptIn(receipt_keys("65280"), "DELIVRD", "delivered", "000", T0 + 5)
    await store.apply_receipts(CARRIER, [receipt], now=T0 + 6)
    assert (await store.settle_receipts(now=T0 + 6 + FALLBACK_AFTER_S)).keys() == {CARRIER}
    (again,) = await store.apply_receipts(CARRIER, [receipt], now=T0 + 7 + FALLBACK_AFTER_S)
    assert again.outcome is ReceiptOutcome.HELD
    assert await store.settle_receipts(now=T0 + 7 + 2 * FALLBACK_AFTER_S) == {}
    assert (await store.stats(now=T0 + 8 + 2 * FALLBACK_AFTER_S)).receipts_held == 0
    assert store.held_ended == {CARRIER: {"matched": 1, "duplicate": 1}}
    assert await state_of(store, message_id) is MessageState.DELIVERED
