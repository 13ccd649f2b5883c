"""Pure rules for delivery receipts that match no open correlation.

Carriers reuse message ids, so a final segment no longer takes receipts under its ids, and the
next submission that reuses an id takes it over. A receipt that arrives under the id of a final
segment is either a repeat of the final one (the SMSC resent it, say after a lost
deliver_sm_resp, or it answers a query_sm about what its receipt already said) or the early
receipt of a new submission that reused the id: the same stat and err as the one applied, done
in the same minute, means a repeat; anything else is held for the new one. A minute because a
receipt's done date is written to the minute and a query_sm answer's final date to the second
(or not at all: a date missing on either side does not tell them apart).

Only a receipt's best key (its id as written) matches at once. Its other keys (the same number
written another way) wait FALLBACK_AFTER_S: otherwise an early receipt for 0000000a would be
taken by an open 00000010 (ten in decimal) before its own submit_sm_resp is recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, Protocol, TypeVar

from smppd.queue.model import ReceiptIn, ReceiptOutcome
from smppd.queue.states import FINAL_STATES, SegmentState

# How long a held receipt waits for a segment that wrote its id the same way before one that wrote
# the same number another way may take it: far longer than a submit_sm_resp trails its receipt.
FALLBACK_AFTER_S: Final = 2.0
KEY_SEPARATOR: Final = "\x1f"  # never part of an SMPP message_id (a printable C-Octet string)


def join_keys(keys: Iterable[str]) -> str:
    return KEY_SEPARATOR.join(keys)


def split_keys(joined: str | None) -> tuple[str, ...]:
    return tuple(joined.split(KEY_SEPARATOR)) if joined else ()


def is_repeat(
    receipt: ReceiptIn,
    *,
    final: bool,
    stat: str | None,
    err: str | None,
    done_at: float | None,
) -> bool:
    """True if `receipt` tells nothing new of a segment that recorded (stat, err, done_at) and
    is `final`: the final receipt again, or an intermediate state (ENROUTE) that came after
    it. Held, such a one would end unmatched and count towards the unmatched-receipts alert;
    were it an early one for a submission reusing the id, only an intermediate state is lost."""
    if final and receipt.final_state is None:
        return True
    if (receipt.stat, receipt.err) != (stat, err):
        return False
    if receipt.done_at is None or done_at is None:
        return True
    return receipt.done_at // 60 == done_at // 60


class _Settled(Protocol):
    @property
    def state(self) -> SegmentState: ...
    @property
    def receipt_stat(self) -> str | None: ...


S = TypeVar("S", bound=_Settled)


def whole_message_receipt(siblings: Iterable[S | None]) -> S | None:
    """The sibling whose receipt a part accepted after its message's whole-message receipt
    takes (Submitted.whole_message): the first one final by a receipt."""
    for sibling in siblings:
        if (
            sibling is not None
            and sibling.receipt_stat is not None
            and sibling.state in FINAL_STATES
        ):
            return sibling
    return None


def held_result(outcome: ReceiptOutcome) -> str:
    """How a held receipt that found its segment ended: "matched", or "duplicate" when a copy
    held with it was applied first (the SMSC sent it twice before its submit_sm_resp came)."""
    return "matched" if outcome is ReceiptOutcome.MATCHED else "duplicate"


def held_ended_by_carrier(ended: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """(carrier, result) -> n as carrier -> result -> n (`Queue.held_ended`). Read from the
    metrics thread too: the copy is taken in one step, the event loop may be adding a key."""
    by_carrier: dict[str, dict[str, int]] = {}
    for (carrier, result), n in dict(ended).items():
        by_carrier.setdefault(carrier, {})[result] = n
    return by_carrier
