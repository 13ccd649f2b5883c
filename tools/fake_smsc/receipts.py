"""Message ids the fake SMSC issues, their state, and the delivery receipts it sends for them.

Owns the id counter and its rendering (hex or decimal), the per-message state that query_sm and
cancel_sm read, and the receipts: the stat drawn from the configured weights, the SMPP v3.4
Appendix B text (`id:... sub:001 dlvrd:001 submit date:... done date:... stat:... err:...
text:...`) with receipted_message_id and message_state TLVs, sent after the configured delay (or
before the submit_sm_resp), once or twice. It hands finished deliver_sm to the outbox; it must
not know connections.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

from smppd.pdu.national import DEFAULT_SHIFT, Shift, decode_text
from smppd.pdu.pdus import ESM_DELIVERY_RECEIPT, DataSm, DeliverSm, SubmitSm
from smppd.pdu.receipt import MessageState, ReceiptStat
from smppd.pdu.text import Alphabet, encode_gsm7, is_gsm7
from smppd.pdu.tlv import Tag, Tlv
from tools.fake_smsc.config import IdFormat, ReceiptConfig
from tools.fake_smsc.outbox import Outbox

EXCERPT_CHARS = 20  # Appendix B: "the first 20 characters of the short message"

_FINAL_STATES = frozenset(
    {
        MessageState.DELIVERED,
        MessageState.EXPIRED,
        MessageState.DELETED,
        MessageState.UNDELIVERABLE,
        MessageState.REJECTED,
        MessageState.UNKNOWN,
    }
)


class ReceiptRequest(NamedTuple):
    """What a receipt needs of its submit: kept only when one was asked for."""

    registered_delivery: int
    source_addr_ton: int
    source_addr_npi: int
    source_addr: str
    dest_addr_ton: int
    dest_addr_npi: int
    destination_addr: str
    data_coding: int
    data: bytes  # user data, UDH excluded, for the text excerpt
    shift: Shift = DEFAULT_SHIFT  # the national language tables its UDH named


@dataclass(slots=True, eq=False)
class Tracked:
    """A message the SMSC accepted: its id and state (small: up to max_tracked are kept)."""

    number: int
    message_id: str  # as given in the submit_sm_resp
    account: str
    submit_time: float
    receipt: ReceiptRequest | None
    state: MessageState = MessageState.ENROUTE
    final_time: float | None = None

    @property
    def is_final(self) -> bool:
        return self.state in _FINAL_STATES

    @property
    def wants_receipt(self) -> bool:
        return self.receipt is not None


class Tracker:
    def __init__(
        self,
        *,
        id_format: IdFormat,
        id_start: int,
        receipts: ReceiptConfig,
        outbox: Outbox,
        rng: random.Random,
        default_alphabet: Alphabet,
        max_tracked: int,
    ) -> None:
        self.id_format = id_format
        self.receipts = receipts  # replaceable while running
        self._next = id_start
        self._outbox = outbox
        self._rng = rng
        self._alphabet = default_alphabet
        self._max_tracked = max_tracked
        # OrderedDict: dropping the oldest of a plain dict rescans its deleted slots each time.
        self._by_id: OrderedDict[str, Tracked] = OrderedDict()
        self._timers: set[asyncio.TimerHandle] = set()

    def accept(
        self,
        pdu: SubmitSm | DataSm,
        data: bytes,
        *,
        account: str,
        now: float,
        shift: Shift = DEFAULT_SHIFT,
    ) -> Tracked:
        """Issue a message id for an accepted submit and remember the message."""
        number = self._next
        self._next += 1
        receipt: ReceiptRequest | None = None
        # registered_delivery bits 0-1 (5.2.17): 1 on success or failure, 2 on failure only.
        if pdu.registered_delivery & 0x03 in (1, 2):
            receipt = ReceiptRequest(
                pdu.registered_delivery,
                pdu.source_addr_ton,
                pdu.source_addr_npi,
                pdu.source_addr,
                pdu.dest_addr_ton,
                pdu.dest_addr_npi,
                pdu.destination_addr,
                pdu.data_coding,
                data,
                shift,
            )
        tracked = Tracked(number, self.id_format.render(number), account, now, receipt)
        by_id = self._by_id
        if len(by_id) >= self._max_tracked:  # forget the oldest: memory stays bounded
            by_id.popitem(last=False)
        by_id[tracked.message_id] = tracked
        return tracked

    def get(self, message_id: str) -> Tracked | None:
        return self._by_id.get(message_id)

    def cancel(self, message_id: str) -> bool:
        """Cancel a message not yet final (its receipt, when due, says DELETED)."""
        tracked = self._by_id.get(message_id)
        if tracked is None or tracked.is_final:
            return False
        tracked.state = MessageState.DELETED
        tracked.final_time = time.time()
        return True

    def resp_written(self, tracked: Tracked) -> None:
        """The submit_sm_resp went out: the receipt follows after the configured delay."""
        delay_s = self.receipts.delay_s
        if delay_s <= 0:
            self.send_receipt(tracked)
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            self.send_receipt(tracked)

        handle = loop.call_later(delay_s, fire)
        self._timers.add(handle)

    def send_receipt(self, tracked: Tracked) -> None:
        """Settle the message and queue its receipt as configured: its stat drawn from the
        weights, none for DELIVRD when only failures were asked for, a share lost, or twice.
        A message that asked for no receipt is settled all the same (query_sm reads it)."""
        request = tracked.receipt
        if tracked.state is MessageState.DELETED:
            stat = ReceiptStat.DELETED
        else:
            stat = self._draw_stat()
            tracked.state = stat.message_state
            tracked.final_time = time.time()
        if request is None:
            return
        if request.registered_delivery & 0x03 == 2 and stat is ReceiptStat.DELIVRD:
            return  # the ESME asked for failures only
        if self.receipts.lost and self._rng.random() < self.receipts.lost:
            return  # lost, as some carriers lose them
        for _ in range(2 if self.receipts.duplicate else 1):
            self._queue(tracked, request, stat)

    def receipt_on_demand(self, message_id: str, stat: ReceiptStat | None) -> ReceiptStat:
        """Queue one receipt for `message_id` (as in its resp) saying `stat` (drawn from the
        weights when None), whatever its state and the receipt settings; LookupError when the
        id is unknown (or forgotten) or its submit asked for no receipt."""
        tracked = self._by_id.get(message_id)
        if tracked is None:
            raise LookupError(f"no message {message_id!r} (unknown, or past max_tracked)")
        request = tracked.receipt
        if request is None:
            raise LookupError(f"message {message_id!r} asked for no receipt")
        stat = stat or self._draw_stat()
        tracked.state = stat.message_state
        if tracked.is_final:
            tracked.final_time = time.time()
        self._queue(tracked, request, stat)
        return stat

    def _queue(self, tracked: Tracked, request: ReceiptRequest, stat: ReceiptStat) -> None:
        receipt_format = self.receipts.id_format or self.id_format
        text = decode_text(
            request.data, request.data_coding, default_alphabet=self._alphabet, shift=request.shift
        )
        pdu = receipt_pdu(
            request,
            stat,
            submit_time=tracked.submit_time,
            receipt_id=receipt_format.render(tracked.number),
            done_time=tracked.final_time or time.time(),
            excerpt=text[:EXCERPT_CHARS],
            alphabet=self._alphabet,
        )
        self._outbox.put(tracked.account, "receipt", pdu)

    def close(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    def _draw_stat(self) -> ReceiptStat:
        outcomes = self.receipts.outcomes
        if len(outcomes) == 1:
            return ReceiptStat(next(iter(outcomes)))
        words = list(outcomes)
        (word,) = self._rng.choices(words, weights=[outcomes[w] for w in words])
        return ReceiptStat(word)


def _yymmddhhmm(when: float) -> str:
    return _minute(int(when // 60))


@functools.lru_cache(maxsize=16)
def _minute(minute: int) -> str:
    # Formatted once per minute: under load every receipt has two dates from the same few.
    return time.strftime("%y%m%d%H%M", time.gmtime(minute * 60))


# The stats that report a failure, with an error: not the delivered, nor the intermediate
# ACCEPTD and ENROUTE (a daemon reading an error there would log one for a message merely
# taken by the SMSC).
_FAILURES: Final = frozenset(
    {
        ReceiptStat.EXPIRED,
        ReceiptStat.DELETED,
        ReceiptStat.UNDELIV,
        ReceiptStat.UNKNOWN,
        ReceiptStat.REJECTD,
    }
)


def receipt_text(
    *, receipt_id: str, stat: ReceiptStat, submit_time: float, done_time: float, excerpt: str
) -> str:
    """The SMPP v3.4 Appendix B receipt body."""
    delivered = "001" if stat is ReceiptStat.DELIVRD else "000"
    err = "001" if stat in _FAILURES else "000"
    return (
        f"id:{receipt_id} sub:001 dlvrd:{delivered} submit date:{_yymmddhhmm(submit_time)} "
        f"done date:{_yymmddhhmm(done_time)} stat:{stat.value} err:{err} text:{excerpt}"
    )


def _encoder(alphabet: Alphabet) -> Callable[[str], bytes]:
    if alphabet is Alphabet.LATIN1:
        return lambda text: text.encode("latin-1", "replace")
    return _gsm7_or_question_marks


def _gsm7_or_question_marks(text: str) -> bytes:
    # Characters GSM 03.38 lacks become '?', as a carrier's receipt generator would show them.
    if not is_gsm7(text):
        text = "".join(c if is_gsm7(c) else "?" for c in text)
    return encode_gsm7(text)


def receipt_pdu(
    submit: ReceiptRequest,
    stat: ReceiptStat,
    *,
    submit_time: float,
    receipt_id: str,
    done_time: float,
    excerpt: str,
    alphabet: Alphabet,
) -> DeliverSm:
    """The deliver_sm (esm_class 0x04) reporting `stat` on `submit`, addressed back to it."""
    text = receipt_text(
        receipt_id=receipt_id,
        stat=stat,
        submit_time=submit_time,
        done_time=done_time,
        excerpt=excerpt,
    )
    tlvs = [
        Tlv.of_str(Tag.receipted_message_id, receipt_id),
        Tlv.of_int(Tag.message_state, stat.message_state),
    ]
    if stat in _FAILURES:
        tlvs.append(Tlv.of_bytes(Tag.network_error_code, bytes((3, 0, 1))))  # GSM, error 1
    return DeliverSm(
        source_addr_ton=submit.dest_addr_ton,
        source_addr_npi=submit.dest_addr_npi,
        source_addr=submit.destination_addr,
        dest_addr_ton=submit.source_addr_ton,
        dest_addr_npi=submit.source_addr_npi,
        destination_addr=submit.source_addr,
        esm_class=ESM_DELIVERY_RECEIPT,
        data_coding=0,
        short_message=_encoder(alphabet)(text),
        tlvs=tuple(tlvs),
    )
