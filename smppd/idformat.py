"""Telling, for a carrier on `message_id_format: auto`, that it writes an id in one base in its
submit_sm_resp and in the other in its receipts.

AUTO matches a receipt by its id as written first. For such a carrier with sequential ids that
is another message's id: the receipt "10" for the resp 0000000A finds the resp 00000010, at
once. The two are told apart by their digits: hex ids have letters a-f often (a third of them
or more), decimal ones never. Resp ids with letters and receipt ids never any, past the point
where chance explains it, mean hex resps and decimal receipts (HEX); the reverse, DECIMAL. The
daemon then looks receipts up in the other base (`learned_receipt_keys`) and warns once: the
receipts before were matched as AUTO does, and the config should say so for certain.

What was learned is kept in the store, so that a restart does not match those first receipts
wrongly again: a learner started from it (`known`) uses it at once and still counts, until its
ids confirm it or contradict it (the carrier changed its ids). Then it learns as from nothing.
"""

from __future__ import annotations

from typing import Final

from smppd.pdu.receipt import IdFormat, normalise_id

# How many of the other side's ids, going by its share with letters, would have had letters
# had both sides written ids alike, with none seen: e^-20 (2e-9) by chance. At a third of hex
# ids with letters, about 60 receipts.
EXPECTED_LETTERS: Final = 20.0
MIN_SEEN: Final = 30  # of either side before any decision
# A kept format is dropped after this many ids of the kind it rules out (HEX: receipt ids with
# letters) ...
CONTRADICTIONS: Final = 3
# ... or when the side it holds to be hex shows no letters in this many ids: at a third with
# letters, (2/3)^64 (5e-12) by chance.
LETTERLESS: Final = 64


def _has_letters(message_id: str) -> bool:
    norm = normalise_id(message_id)
    digits = norm[2:] if norm.startswith("0x") else norm
    return bool(digits) and not (digits.isascii() and digits.isdigit())


class IdFormatLearner:
    """Counts ids with letters on both sides until one of the two quirks is plain, then keeps
    the answer (`receipt_format`); AUTO until then, and for good once ids are seen alike.
    `known`, a format kept from an earlier run, is the answer meanwhile unless ids contradict it."""

    __slots__ = (
        "_decided",
        "_known",
        "_receipt_letters",
        "_receipts",
        "_resp_letters",
        "_resps",
        "receipt_format",
    )

    def __init__(self, known: IdFormat = IdFormat.AUTO) -> None:
        self._resps = self._resp_letters = self._receipts = self._receipt_letters = 0
        self.receipt_format = self._known = known
        self._decided = False

    @property
    def learning(self) -> bool:
        return not self._decided

    def resp(self, message_id: str) -> None:
        self._resps += 1
        self._resp_letters += _has_letters(message_id)

    def receipt(self, message_id: str) -> IdFormat | None:
        """Count a receipt id; the format receipts are matched by when it changes here (AUTO:
        a kept one no longer holds), else None."""
        self._receipts += 1
        self._receipt_letters += _has_letters(message_id)
        if self._receipts % 8:
            return None  # deciding every few is soon enough
        return self._decide()

    def _decide(self) -> IdFormat | None:
        if self._known is not IdFormat.AUTO and self._contradicted():
            self._known = IdFormat.AUTO
            return self._found(IdFormat.AUTO, decided=False)
        resps, receipts = self._resps, self._receipts
        if resps < MIN_SEEN or receipts < MIN_SEEN:
            return None
        resp_share, receipt_share = self._resp_letters / resps, self._receipt_letters / receipts
        if self._resp_letters and self._receipt_letters:
            return self._found(IdFormat.AUTO)  # letters on both sides: written alike
        if not self._receipt_letters and receipts * resp_share >= EXPECTED_LETTERS:
            return self._found(IdFormat.HEX)
        if not self._resp_letters and resps * receipt_share >= EXPECTED_LETTERS:
            return self._found(IdFormat.DECIMAL)
        return None

    def _contradicted(self) -> bool:
        if self._known is IdFormat.HEX:  # hex resps, decimal receipts
            ruled_out, lettered, seen = self._receipt_letters, self._resp_letters, self._resps
        else:
            ruled_out, lettered, seen = self._resp_letters, self._receipt_letters, self._receipts
        return ruled_out >= CONTRADICTIONS or (seen >= LETTERLESS and not lettered)

    def _found(self, found: IdFormat, *, decided: bool = True) -> IdFormat | None:
        self._decided = decided
        changed = found is not self.receipt_format
        self.receipt_format = found
        return found if changed else None
