"""The SQLite backend's delivery-receipt operations, each run inside a `Batch`.

A receipt matches through `correlations` (carrier, key) -> segment, skipping segments that are
already final. On arrival only its best key (the id as the receipt writes it) counts. One that
matches nothing is either a repeat of a final receipt (see smppd.queue.receipts) or early: it is
held in `pending_receipts` (keys in `pending_keys`) until the Submitted carrying its id lands.
Its other keys (the same number written another way) count only once it has been held for
FALLBACK_AFTER_S (see `settle_held`): an early receipt must not be taken by another open segment
whose id reads as the same number while its own is still on its way. Held receipts are bounded
in number (the oldest is pushed out, marked `dropped`) and in time (then marked `unmatched`);
both stay on disk until purge and are counted, never silently lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Final

from smppd.queue.model import (
    Change,
    ReceiptIn,
    ReceiptOutcome,
    ReceiptResult,
)
from smppd.queue.receipts import (
    FALLBACK_AFTER_S,
    held_result,
    is_repeat,
    join_keys,
    split_keys,
    whole_message_receipt,
)
from smppd.queue.sqlite_batch import Batch, SegmentRow
from smppd.queue.states import (
    FINAL_STATES,
    SegmentEvent,
    SegmentState,
    segment_state,
    transition,
)

_MATCH: Final = """
    SELECT key, segment_id FROM correlations
    WHERE carrier = ? AND key IN (SELECT value FROM json_each(?))
"""
_HOLD: Final = """
    INSERT INTO pending_receipts (carrier, keys, stat, final_state, err, done_at, received_at,
        state, whole_message)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_HOLD_KEY: Final = "INSERT OR IGNORE INTO pending_keys (carrier, key, receipt_id) VALUES (?, ?, ?)"
_HELD_BY_KEY: Final = "SELECT receipt_id FROM pending_keys WHERE carrier = ? AND key = ?"
_HELD: Final = """
    SELECT keys, stat, final_state, err, done_at, whole_message, received_at
    FROM pending_receipts WHERE id = ? AND state = 'held'
"""
_SETTLE: Final = """
    SELECT id, carrier, keys, stat, final_state, err, done_at, whole_message
    FROM pending_receipts
    WHERE state = 'held' AND received_at > ? AND received_at <= ? ORDER BY received_at, id
"""
_OLDEST_HELD: Final = """
    SELECT id, carrier, keys, received_at FROM pending_receipts
    WHERE state = 'held' ORDER BY received_at LIMIT 1
"""
_FORGET_KEY: Final = "DELETE FROM pending_keys WHERE carrier = ? AND key = ? AND receipt_id = ?"
_HELD_OF: Final = """
    SELECT id, keys FROM pending_receipts INDEXED BY pending_receipts_held
    WHERE state = 'held' AND carrier = ?
"""
_REKEY: Final = "UPDATE pending_receipts SET keys = ? WHERE id = ?"
_UNHOLD: Final = "UPDATE pending_receipts SET state = ? WHERE id = ?"
_DELETE_HELD: Final = "DELETE FROM pending_receipts WHERE id = ?"
UNMATCHED: Final = "unmatched"
DROPPED: Final = "dropped"


def apply_receipts(
    batch: Batch, carrier: str, receipts: Sequence[ReceiptIn], *, now: float
) -> list[ReceiptResult]:
    batch.flush_inserts()
    sweep_held(batch, now=now)
    known = _match(batch, carrier, [r.keys[0] for r in receipts if r.keys and r.segment_id is None])
    batch.prefetch(r.segment_id for r in receipts if r.segment_id is not None)
    results = []
    for receipt in receipts:
        if receipt.segment_id is not None:
            row = batch.segment(receipt.segment_id)
            if row is None or transition(row.state, SegmentEvent.RECEIPT) is None:
                results.append(ReceiptResult(ReceiptOutcome.DUPLICATE))  # settled meanwhile
            else:
                results.append(apply_to_segment(batch, row, receipt, now=now))
            continue
        row = _matching_segment(batch, known, receipt.keys[:1])
        if row is not None:
            results.append(apply_to_segment(batch, row, receipt, now=now))
        elif not receipt.keys:
            _keep(batch, carrier, receipt, UNMATCHED, now=now)
            batch.receipts_unmatched += 1
            results.append(ReceiptResult(ReceiptOutcome.UNMATCHED))
        elif _repeats_final(batch, known, receipt, receipt.keys[:1]):
            results.append(ReceiptResult(ReceiptOutcome.DUPLICATE))
        else:
            _hold(batch, carrier, receipt, now=now)
            results.append(ReceiptResult(ReceiptOutcome.HELD))
    batch.flush(now=now)
    return results


def _match(batch: Batch, carrier: str, keys: list[str]) -> dict[str, int]:
    """key -> segment for those of `keys` that are known, their rows read into the batch."""
    if not keys:
        return {}
    known = dict(batch.db.execute(_MATCH, (carrier, json.dumps(keys))).fetchall())
    batch.prefetch(known.values())
    return known


def _matching_segment(
    batch: Batch, known: dict[str, int], keys: Sequence[str]
) -> SegmentRow | None:
    """The first segment under `keys` that can still take a receipt."""
    for key in keys:
        segment_id = known.get(key)
        row = None if segment_id is None else batch.segment(segment_id)
        if row is not None and transition(row.state, SegmentEvent.RECEIPT) is not None:
            return row
    return None


def _repeats_final(
    batch: Batch, known: dict[str, int], receipt: ReceiptIn, keys: Sequence[str]
) -> bool:
    """True if a final segment under one of `keys` recorded this very receipt.

    On arrival only the best key (the id as written, or its one reading in a fixed format): a
    fallback reading may be another message's id, whose receipt this is not.
    """
    for key in keys:
        segment_id = known.get(key)
        row = None if segment_id is None else batch.segment(segment_id)
        if row is not None and is_repeat(
            receipt,
            final=row.state in FINAL_STATES,
            stat=row.receipt_stat,
            err=row.receipt_err,
            done_at=row.done_at,
        ):
            return True
    return False


def apply_to_segment(
    batch: Batch, row: SegmentRow, receipt: ReceiptIn, *, now: float
) -> ReceiptResult:
    """Record a receipt on its submitted segment."""
    if transition(row.state, SegmentEvent.RECEIPT) is None:
        return ReceiptResult(ReceiptOutcome.DUPLICATE)
    if receipt.final_state is None and (row.receipt_stat, row.receipt_err) == (
        receipt.stat,
        receipt.err,
    ):
        return ReceiptResult(ReceiptOutcome.DUPLICATE)
    first = row.receipt_stat is None
    row.receipt_stat = receipt.stat
    row.receipt_err = receipt.err
    row.done_at = receipt.done_at
    if receipt.final_state is None:
        return ReceiptResult(ReceiptOutcome.MATCHED, batch.move(row, row.state, now=now))
    final = segment_state(receipt.final_state)
    after = max(0.0, now - row.updated_at) if first else None
    change = batch.move(row, final, now=now)
    siblings = (
        _settle_siblings(batch, row, receipt, final, now=now) if receipt.whole_message else ()
    )
    return ReceiptResult(ReceiptOutcome.MATCHED, change, siblings, after)


def _settle_siblings(
    batch: Batch, row: SegmentRow, receipt: ReceiptIn, final: SegmentState, *, now: float
) -> tuple[Change, ...]:
    """A whole-message receipt's other segments that are submitted take it too."""
    changes: list[Change] = []
    for sibling in batch.siblings(row):  # mostly cached: Batch.prefetch reads siblings too
        if sibling.state is not SegmentState.SUBMITTED:
            continue
        sibling.receipt_stat = receipt.stat
        sibling.receipt_err = receipt.err
        sibling.done_at = receipt.done_at
        changes.append(batch.move(sibling, final, now=now))
    return tuple(changes)


def settle_late_part(batch: Batch, row: SegmentRow, *, now: float) -> Change | None:
    """A part just submitted whose sibling a whole-message receipt already settled takes the
    same receipt (Submitted.whole_message)."""
    if row.state is not SegmentState.SUBMITTED:
        return None
    sibling = whole_message_receipt(batch.siblings(row))
    if sibling is None:
        return None
    row.receipt_stat = sibling.receipt_stat
    row.receipt_err = sibling.receipt_err
    row.done_at = sibling.done_at
    return batch.move(row, sibling.state, now=now)


def _keep(batch: Batch, carrier: str, receipt: ReceiptIn, state: str, *, now: float) -> int:
    cursor = batch.db.execute(
        _HOLD,
        (
            carrier,
            join_keys(receipt.keys),
            receipt.stat,
            receipt.final_state,
            receipt.err,
            receipt.done_at,
            now,
            state,
            receipt.whole_message,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _hold(batch: Batch, carrier: str, receipt: ReceiptIn, *, now: float) -> None:
    receipt_id = _keep(batch, carrier, receipt, "held", now=now)
    # Under every key it would have been looked up by, so the Submitted it would have matched,
    # had it come first, claims it (see match_held).
    batch.db.executemany(_HOLD_KEY, [(carrier, key, receipt_id) for key in receipt.keys])
    batch.receipts_held += 1
    batch.newest_held = max(batch.newest_held, now)
    if batch.held > batch.memory.max_held_receipts:
        oldest = batch.db.execute(_OLDEST_HELD).fetchone()
        _unhold(batch, oldest[0], oldest[1], oldest[2], DROPPED)
        batch.receipts_dropped += 1


def sweep_held(batch: Batch, *, now: float) -> None:
    """Held receipts past the hold time become unmatched (kept, counted)."""
    batch.swept_at = now
    oldest_kept = now - batch.memory.receipt_hold_s
    while batch.held > 0:
        oldest = batch.db.execute(_OLDEST_HELD).fetchone()
        if oldest is None or oldest[3] > oldest_kept:
            return
        _unhold(batch, oldest[0], oldest[1], oldest[2], UNMATCHED)
        batch.receipts_unmatched += 1


def _unhold(batch: Batch, receipt_id: int, carrier: str, keys: str, state: str) -> None:
    """A held receipt no longer held: kept on disk as `state`."""
    batch.db.execute(_UNHOLD, (state, receipt_id))
    _forget(batch, receipt_id, carrier, split_keys(keys), state)


def match_held(batch: Batch, row: SegmentRow, keys: Sequence[str], *, now: float) -> list[Change]:
    """Apply the receipts held under the best key of a segment that was just submitted: those
    that give its id as it does, and those held past FALLBACK_AFTER_S that give the same number
    another way and whose own id no segment has (each is held under all its lookup keys)."""
    receipt_ids = sorted(
        {found[0] for found in batch.db.execute(_HELD_BY_KEY, (row.carrier, keys[0]))}
    )
    changes: list[Change] = []
    for receipt_id in receipt_ids:
        held = batch.db.execute(_HELD, (receipt_id,)).fetchone()
        if held is None:
            continue
        keys_text, stat, final_state, err, done_at, whole, received_at = held
        receipt = ReceiptIn(split_keys(keys_text), stat, final_state, err, done_at, bool(whole))
        if receipt.keys[0] != keys[0] and (
            received_at > now - FALLBACK_AFTER_S
            or _match(batch, row.carrier, list(receipt.keys[:1]))
        ):
            continue
        applied = apply_to_segment(batch, row, receipt, now=now)
        _take_held(batch, receipt_id, row.carrier, receipt.keys, applied.outcome)
        changes.extend(applied.changes)
    return changes


def settle_held(batch: Batch, *, now: float) -> dict[str, list[Change]]:
    """Give the receipts held past FALLBACK_AFTER_S since the last call to the segments that
    wrote their id's number another way, where one is open and none wrote it as they do.
    The changes by carrier; the others stay held (a Submitted still to come may take them)."""
    sweep_held(batch, now=now)
    until = now - FALLBACK_AFTER_S
    if until <= batch.settled_until:
        return {}
    held = batch.db.execute(_SETTLE, (batch.settled_until, until)).fetchall()
    batch.settled_until = until
    changes: dict[str, list[Change]] = {}
    for receipt_id, carrier, keys, stat, final_state, err, done_at, whole in held:
        receipt = ReceiptIn(split_keys(keys), stat, final_state, err, done_at, bool(whole))
        known = _match(batch, carrier, list(receipt.keys))
        if receipt.keys[0] in known:
            continue
        row = _matching_segment(batch, known, receipt.keys)
        if row is None:
            if _repeats_final(batch, known, receipt, receipt.keys):
                # A copy of one settled before it: held until the hold time, it would end
                # as unmatched and read as a carrier whose ids do not match.
                _take_held(batch, receipt_id, carrier, receipt.keys, ReceiptOutcome.DUPLICATE)
            continue
        applied = apply_to_segment(batch, row, receipt, now=now)
        _take_held(batch, receipt_id, carrier, receipt.keys, applied.outcome)
        if applied.changes:
            changes.setdefault(carrier, []).extend(applied.changes)
    batch.flush(now=now)
    return changes


def rekey_held(
    batch: Batch, carrier: str, rekey: Callable[[tuple[str, ...]], tuple[str, ...] | None]
) -> int:
    """Queue.rekey_held: each held receipt of `carrier` under the keys `rekey` gives it."""
    changed = 0
    for receipt_id, joined in batch.db.execute(_HELD_OF, (carrier,)).fetchall():
        old = split_keys(joined)
        new = rekey(old)
        if new is None or new == old:
            continue
        batch.db.execute(_REKEY, (join_keys(new), receipt_id))
        batch.db.executemany(_FORGET_KEY, [(carrier, key, receipt_id) for key in old])
        batch.db.executemany(_HOLD_KEY, [(carrier, key, receipt_id) for key in new])
        changed += 1
    return changed


def _take_held(
    batch: Batch, receipt_id: int, carrier: str, keys: Sequence[str], outcome: ReceiptOutcome
) -> None:
    """A held receipt found its segment: applied (or a copy of one applied), not kept."""
    batch.db.execute(_DELETE_HELD, (receipt_id,))
    _forget(batch, receipt_id, carrier, keys, held_result(outcome))


def _forget(batch: Batch, receipt_id: int, carrier: str, keys: Sequence[str], result: str) -> None:
    """No longer held, having ended as `result` (matched, duplicate, unmatched or dropped)."""
    batch.db.executemany(_FORGET_KEY, [(carrier, key, receipt_id) for key in keys])
    batch.receipts_held -= 1
    batch.held_ended[carrier, result] += 1
