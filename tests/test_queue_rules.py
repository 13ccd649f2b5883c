"""The queue's pure rules: derived message state, transitions, fair sharing, filters, values."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from queue_support import message

from smppd.queue import ReceiptIn
from smppd.queue.fairness import interleave, rotate_after, take_fairly
from smppd.queue.model import message_id_of, segment_id, segment_index
from smppd.queue.optout_filter import OptOutFilter
from smppd.queue.receipts import is_repeat, join_keys, split_keys
from smppd.queue.states import (
    FINAL_STATES,
    MessageState,
    SegmentEvent,
    SegmentState,
    is_finished,
    message_state,
    transition,
    waiting_state,
)

S = SegmentState


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([S.QUEUED], MessageState.QUEUED),
        ([S.SCHEDULED, S.QUEUED], MessageState.QUEUED),
        ([S.QUEUED, S.INFLIGHT], MessageState.INFLIGHT),
        ([S.SUBMITTED, S.QUEUED], MessageState.SUBMITTED),
        ([S.DELIVERED, S.SUBMITTED], MessageState.SUBMITTED),
        ([S.DELIVERED, S.DELIVERED], MessageState.DELIVERED),
        ([S.DELIVERED, S.CANCELLED], MessageState.CANCELLED),
        ([S.CANCELLED], MessageState.CANCELLED),
        ([S.DELIVERED, S.EXPIRED], MessageState.EXPIRED),
        ([S.UNDELIVERABLE, S.EXPIRED], MessageState.UNDELIVERABLE),
        ([S.REJECTED, S.UNDELIVERABLE], MessageState.REJECTED),
        ([S.REJECTED, S.FAILED, S.QUEUED], MessageState.FAILED),
    ],
)
def test_message_state_rules(states: list[SegmentState], expected: MessageState) -> None:
    """A message's state follows the documented precedence over its segments."""
    assert message_state(states) is expected


@given(st.lists(st.sampled_from(list(SegmentState)), min_size=1, max_size=8))
def test_message_state_ignores_segment_order(states: list[SegmentState]) -> None:
    """Only which states are present matters, not their order or count."""
    assert message_state(states) is message_state(reversed(states))
    assert message_state(states) is message_state(states + states[:1])


def test_finished_messages() -> None:
    """Finished: all segments final, or final/submitted when no receipt was asked for."""
    assert is_finished([S.DELIVERED, S.CANCELLED], registered_delivery=True)
    assert not is_finished([S.DELIVERED, S.SUBMITTED], registered_delivery=True)
    assert is_finished([S.DELIVERED, S.SUBMITTED], registered_delivery=False)
    assert not is_finished([S.INFLIGHT], registered_delivery=False)


def test_transitions() -> None:
    """Transitions come from one table; pairs not in it do not apply."""
    assert transition(S.QUEUED, SegmentEvent.CLAIMED) is S.INFLIGHT
    assert transition(S.CANCELLED, SegmentEvent.SUBMIT_ACCEPTED) is S.SUBMITTED
    assert transition(S.SUBMITTED, SegmentEvent.SUBMIT_RETRY) is None
    assert transition(S.SCHEDULED, SegmentEvent.CLAIMED) is None
    assert transition(S.SUBMITTED, SegmentEvent.CANCELLED) is None
    for final in FINAL_STATES:
        assert transition(final, SegmentEvent.RECEIPT) is None
        assert transition(final, SegmentEvent.RECOVERED) is None
    assert waiting_state(10.0, now=10.0) is S.QUEUED
    assert waiting_state(10.5, now=10.0) is S.SCHEDULED


def test_take_fairly_interleaves_and_shares() -> None:
    """Each client gets an equal share; one that runs out leaves its share to the others."""
    backlog: dict[str, list[object]] = {
        "big": list(range(1000)),
        "small": ["s1", "s2"],
        "mid": [f"m{i}" for i in range(5)],
    }

    def fetch(client: str, n: int) -> list[object]:
        taken, backlog[client] = backlog[client][:n], backlog[client][n:]
        return taken

    items, last = take_fairly(["big", "mid", "small"], 12, fetch)
    assert items[:6] == [0, "m0", "s1", 1, "m1", "s2"]
    assert len(items) == 12
    assert items.count("s1") + items.count("s2") == 2
    assert len([i for i in items if isinstance(i, str) and i.startswith("m")]) == 5
    assert last == "mid"  # the final round went big, mid: the next claim starts after mid


def test_interleave_and_rotation() -> None:
    """Interleave takes one from each list per rank; rotation starts after the cursor."""
    lists: list[list[object]] = [[1, 2, 3], [], ["a"]]
    assert interleave(lists) == [1, "a", 2, 3]
    assert rotate_after(["c", "a", "b"], None) == ["a", "b", "c"]
    assert rotate_after(["c", "a", "b"], "a") == ["b", "c", "a"]
    assert rotate_after(["c", "a", "b"], "bb") == ["c", "a", "b"]


def test_segment_ids_pack_message_and_index() -> None:
    """A segment id carries its message id and index."""
    sid = segment_id(123456789, 254)
    assert (message_id_of(sid), segment_index(sid)) == (123456789, 254)
    assert segment_id(7, 0) < segment_id(7, 1) < segment_id(8, 0)


def test_optout_filter_never_misses_and_rarely_guesses() -> None:
    """No false negatives; false positives stay near the designed rate."""
    rng = random.Random(7)
    stored = {("ACME", f"+1555{rng.randrange(10**7):07d}") for _ in range(20_000)}
    seen = OptOutFilter.build(iter(stored), len(stored))
    assert all(seen.might_contain(s, n) for s, n in stored)
    others = [("ACME", f"+4477{i:07d}") for i in range(20_000)]
    false_positives = sum(seen.might_contain(s, n) for s, n in others)
    assert false_positives < 0.01 * len(others)
    assert not seen.overfull


def test_repeats_are_told_by_stat_err_and_done_date() -> None:
    """A receipt repeats a final one when stat and err match and it was done in the same
    minute (a receipt's done date is to the minute, a query_sm answer's to the second), or
    either has no done date."""
    receipt = ReceiptIn(("1",), "DELIVRD", "delivered", "000", 60.0)
    assert is_repeat(receipt, final=True, stat="DELIVRD", err="000", done_at=60.0)
    assert is_repeat(receipt, final=True, stat="DELIVRD", err="000", done_at=119.0)
    assert is_repeat(receipt, final=True, stat="DELIVRD", err="000", done_at=None)
    assert not is_repeat(receipt, final=True, stat="DELIVRD", err="000", done_at=120.0)
    assert not is_repeat(receipt, final=True, stat="DELIVRD", err="001", done_at=60.0)
    assert not is_repeat(receipt, final=True, stat="UNDELIV", err="000", done_at=60.0)
    enroute = ReceiptIn(("1",), "ENROUTE", None, "000", 90.0)
    assert is_repeat(enroute, final=True, stat="DELIVRD", err="000", done_at=60.0)
    assert not is_repeat(enroute, final=False, stat="ACCEPTD", err="000", done_at=60.0)
    assert split_keys(join_keys(("a", "b"))) == ("a", "b")
    assert split_keys(None) == ()


def test_values_validate_themselves() -> None:
    """Out-of-range priorities, segment counts and receipt states are refused at construction."""
    with pytest.raises(ValueError, match="priority"):
        message(priority=10)
    with pytest.raises(ValueError, match="segments"):
        message(segments=())
    with pytest.raises(ValueError, match="segments"):
        message(segments=[b"x"] * 256)
    with pytest.raises(ValueError, match="final_state"):
        ReceiptIn(("1",), "ENROUTE", "submitted", "000", None)
