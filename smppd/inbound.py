"""What arrives from a carrier: delivery receipts and mobile-originated messages.

The bind calls `InboundHandler` for each deliver_sm / data_sm and answers the SMSC with the status
returned, only after this returns: a receipt or message is on disk before it is acknowledged, and
a storage failure propagates so the bind answers a temporary error and the SMSC retries.

A reply goes to the client that owns the sender id it was sent to, never to anyone else; with no
owner it is stored and counted. Long MO messages are reassembled from their UDH/SAR parts first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import structlog

from smppd.address import NumberPlan, canonical_sender, from_wire, international_reading
from smppd.compliance import Keyword, Keywords
from smppd.errors import SmppdError
from smppd.events import inbound_event, publish_changes
from smppd.histogram import DELIVERY_BUCKETS_S, Histogram
from smppd.idformat import IdFormatLearner
from smppd.logsample import LogSample
from smppd.pdu import tlv
from smppd.pdu.errors import DecodeError
from smppd.pdu.national import DEFAULT_SHIFT, Shift, decode_parts, decode_text, shift_of
from smppd.pdu.pdus import ESM_INTERMEDIATE_NOTIFICATION, ESM_TYPE_MASK, ESM_UDHI, DataSm, DeliverSm
from smppd.pdu.receipt import (
    IdFormat,
    ReceiptOutcome,
    learned_receipt_keys,
    receipt_from_parts,
    receipt_keys,
)
from smppd.pdu.status import CommandStatus
from smppd.pdu.text import Alphabet, DataCoding
from smppd.pdu.tlv import Tag
from smppd.pdu.udh import (
    MAX_CONCAT_PARTS,
    ConcatPart,
    DropReason,
    Reassembler,
    concat_info,
    parse_udh,
)
from smppd.queue.base import Queue
from smppd.queue.errors import QueueError
from smppd.queue.model import (
    OPTOUT_ALL_SENDERS,
    InboundIn,
    InboundPart,
    PartGroup,
    ReceiptIn,
    ReceiptResult,
    Seen,
)
from smppd.record import record
from smppd.redelivery import Redeliveries, fingerprint
from smppd.service import Event

log = structlog.get_logger(__name__)

_EPOCH = datetime(1970, 1, 1)  # receipt dates are naive, read as UTC
# One automatic reply per sender id, number and keyword in this time: anyone can text STOP or
# HELP again and again, and each reply is an urgent message that counts against the sender's
# daily cap. The opt-out itself is recorded every time.
AUTO_REPLY_COOLDOWN_S: Final = 3600.0
_MAX_REPLIES_REMEMBERED: Final = 100_000

# A receipt's outcome as the segment state it settles (None: intermediate, stays submitted).
FINAL_STATE_OF: Mapping[ReceiptOutcome, str | None] = {
    ReceiptOutcome.DELIVERED: "delivered",
    ReceiptOutcome.UNDELIVERABLE: "undeliverable",
    ReceiptOutcome.EXPIRED: "expired",
    ReceiptOutcome.REJECTED: "rejected",
    ReceiptOutcome.DELETED: "undeliverable",
    ReceiptOutcome.UNKNOWN: "undeliverable",  # as the SMSC said it (stat:UNKNOWN, state 7)
    ReceiptOutcome.ENROUTE: None,
    ReceiptOutcome.ACCEPTED: None,
}


@dataclass
class InboundCounters:
    receipts: dict[str, int] = field(default_factory=dict)  # by result: matched, held, ...
    receipts_unparseable: int = 0
    inbound: int = 0
    inbound_unowned: int = 0
    inbound_redelivered: int = 0  # answered and not stored again (carriers[].inbound_dedup_s)
    parts_held: int = 0
    optouts: int = 0
    optins: int = 0
    auto_replies: int = 0
    # Acceptance to final receipt, of the segments whose first receipt is final.
    delivery: Histogram = field(default_factory=lambda: Histogram(DELIVERY_BUCKETS_S))


@record
class OptOutPolicy:
    keywords: Keywords
    per_client: bool  # scope "client": STOP to one sender id opts out of all the client's ids
    senders_of: Mapping[str, tuple[str, ...]]  # client -> its sender ids
    auto_replies: Mapping[Keyword, str] = field(default_factory=dict)
    # How an MO's bare digits are read (address.from_wire), as submits' are: an opt-out must
    # be stored as the number clients submit to.
    numbers: NumberPlan = field(default_factory=NumberPlan)


# Sends an automatic reply: (client, sender id, number, text).
AutoReply = Callable[[str, str, str, str], Awaitable[object]]


class ReceiptBatcher:
    """Applies the receipts that arrive together in one store call.

    Each deliver_sm waits for its own answer, so every receipt is still durable before its
    deliver_sm_resp; but the receipts of one burst (binds read them concurrently) share one
    lookup and one transaction instead of one each. A receipt's answer is a future the batch
    resolves, not a task of its own.
    """

    def __init__(
        self,
        carrier: str,
        queue: Queue,
        clock: Callable[[], float],
        on_result: Callable[[ReceiptResult], None],
    ) -> None:
        self._carrier = carrier
        self._queue = queue
        self._clock = clock
        self._on_result = on_result
        self._pending: list[tuple[ReceiptIn, asyncio.Future[int]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0

    def add(self, receipt: ReceiptIn) -> asyncio.Future[int]:
        """The command_status to answer the receipt's deliver_sm with, once it is stored."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)  # after the other receipts of this tick are added
        self._pending.append((receipt, future))
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._apply(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply(self, batch: list[tuple[ReceiptIn, asyncio.Future[int]]]) -> None:
        self.calls += 1
        try:
            results = await self._queue.apply_receipts(
                self._carrier, [receipt for receipt, _ in batch], now=self._clock()
            )
        except Exception as exc:  # every waiting deliver_sm is answered with a temporary error
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            try:
                self._on_result(result)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                continue
            if not future.done():
                future.set_result(CommandStatus.ESME_ROK)


class ReplyCooldown:
    """When each (sender, number, keyword) last got an automatic reply: one an hour each.

    In monotonic time, so a wall clock stepped back does not stretch the hour; one per daemon,
    shared by its carriers' handlers, so a reload that restarts a carrier does not forget it.
    The oldest entries go past `limit`.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        limit: int = _MAX_REPLIES_REMEMBERED,
    ) -> None:
        self._clock = clock
        self._limit = limit
        self._last: dict[tuple[str, str, Keyword], float] = {}  # oldest first

    def __len__(self) -> int:
        return len(self._last)

    def take(self, sender: str, number: str, keyword: Keyword) -> bool:
        """Whether a reply may go now; if so, it is counted as sent."""
        now, key = self._clock(), (sender, number, keyword)
        last = self._last.pop(key, None)
        if last is not None and now - last < AUTO_REPLY_COOLDOWN_S:
            self._last[key] = last  # still the time of the reply that was sent
            return False
        self._last[key] = now
        if len(self._last) > self._limit:
            del self._last[next(iter(self._last))]
        return True

    def give_back(self, sender: str, number: str, keyword: Keyword) -> None:
        """The reply `take` allowed was not sent (refused, the store failing): the next may go."""
        self._last.pop((sender, number, keyword), None)


def learned_id_format(carrier: str, found: IdFormat, *, kept: bool = False) -> None:
    """Say what receipts of `carrier` are matched by now that its ids told (smppd.idformat)."""
    if found is IdFormat.AUTO:
        log.warning(
            "message ids no longer show the hex-or-decimal quirk learned before: receipts are "
            "matched as written again until the ids tell",
            carrier=carrier,
        )
        return
    hex_resps = found is IdFormat.HEX
    log.warning(
        "message ids were found hex on one side and decimal on the other: receipts are "
        "matched so until the ids say otherwise; set message_id_format for this carrier"
        if kept
        else "message ids are hex on one side and decimal on the other: receipts are matched "
        "so from now on, and ones before may have gone to the wrong message; set "
        "message_id_format for this carrier",
        carrier=carrier,
        resp_ids="hex" if hex_resps else "decimal",
        receipt_ids="decimal" if hex_resps else "hex",
        message_id_format=str(found),
    )


class InboundHandler:
    def __init__(
        self,
        carrier: str,
        queue: Queue,
        *,
        owners: Mapping[str, str],
        optout: OptOutPolicy,
        unowned_to: str | None = None,  # the client of MO to numbers no sender entry owns
        default_alphabet: Alphabet,
        publish: Callable[[Event], None],
        clock: Callable[[], float],
        wants: Callable[[str], bool] = lambda client: True,
        reassembly_timeout_s: float = 300.0,
        auto_reply: AutoReply | None = None,
        withdraw: Callable[[Sequence[int]], None] = lambda segment_ids: None,
        id_format: IdFormat = IdFormat.AUTO,
        learner: IdFormatLearner | None = None,  # AUTO: who tells a carrier's id quirk
        receipts_per_message: bool = False,
        counters: InboundCounters | None = None,  # carried over from the carrier's last start
        cooldown: ReplyCooldown | None = None,  # the daemon's, kept across carrier restarts
        redeliveries: Redeliveries | None = None,  # the carrier's recent MO; None: no dedup
        # For the reassembly timeout, which a wall clock stepped back would stretch.
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.carrier = carrier
        self._queue = queue
        self._owners = owners
        self._unowned_to = unowned_to
        self._optout = optout
        self._default_alphabet = default_alphabet
        self._publish = publish
        self._wants = wants
        self._clock = clock
        self._monotonic = monotonic
        self._parts = Reassembler(timeout_s=reassembly_timeout_s)  # in monotonic time
        # The national tables of held parts that named any, by (group, seq): a part's own,
        # which its group (equal whatever the tables) does not tell.
        self._part_shifts: dict[tuple[PartGroup, int], Shift] = {}
        # Long messages a put-back completed (see _put_back), to be stored.
        self._completed: list[tuple[PartGroup, list[tuple[int, bytes]]]] = []
        self._parts_restored = False
        self._restore_lock = asyncio.Lock()
        self._auto_reply = auto_reply
        self._cooldown = ReplyCooldown() if cooldown is None else cooldown
        self._redeliveries = redeliveries
        # MO being stored, by fingerprint: a redelivery that arrives meanwhile gets the first
        # delivery's answer when it has one, not an ESME_ROK for what may yet fail to commit.
        self._storing: dict[bytes, asyncio.Future[int]] = {}
        self._withdraw = withdraw  # tells the send loops what an opt-out cancelled
        self._receipts = ReceiptBatcher(carrier, queue, clock, self._receipt_applied)
        self._id_format = id_format
        self._learner = learner
        self._whole_message = receipts_per_message  # a receipt stands for the whole message
        self.counters = InboundCounters() if counters is None else counters
        # Lines a peer can make as fast as it sends PDUs: one per kind and 10 s, with a count
        # (the counters have them all).
        self._log_sample = LogSample()

    def _keys(self, message_id: str) -> tuple[str, ...]:
        learner = self._learner
        if learner is None:
            return receipt_keys(message_id, self._id_format)
        if learner.learning and (found := learner.receipt(message_id)) is not None:
            learned_id_format(self.carrier, found)
        fmt = learner.receipt_format
        return (
            receipt_keys(message_id)
            if fmt is IdFormat.AUTO
            else learned_receipt_keys(message_id, fmt)
        )

    def reconfigure(
        self, *, owners: Mapping[str, str], optout: OptOutPolicy, unowned_to: str | None = None
    ) -> None:
        """New sender owners, opt-out rules and the client of unowned MO (a reload); they
        apply to the next PDU."""
        self._owners = owners
        self._optout = optout
        self._unowned_to = unowned_to

    def __call__(self, pdu: DeliverSm | DataSm) -> Awaitable[int]:
        """The command_status to answer `pdu` with, once what it carries is stored."""
        if pdu.is_receipt:
            return self._receipt(pdu)
        return self._mobile_originated(pdu)

    # --- receipts --------------------------------------------------------------------------

    def _receipt(self, pdu: DeliverSm | DataSm) -> asyncio.Future[int]:
        content = pdu.content
        receipt = receipt_from_parts(
            # Latin-1 reads every octet and keeps ids ASCII whatever the SMSC's default alphabet
            # (read as GSM, an id's "_" or "@" would change); UCS-2 is the one coding unlike it.
            decode_text(content, DataCoding.UCS2)
            if pdu.data_coding == DataCoding.UCS2
            else content.decode("latin-1"),
            receipted_message_id=tlv.get_str(pdu.tlvs, Tag.receipted_message_id),
            message_state=tlv.get_int(pdu.tlvs, Tag.message_state),
            network_error_code=tlv.get_bytes(pdu.tlvs, Tag.network_error_code),
        )
        if receipt is None:
            # Nothing to match it by: acknowledging is right (a retry would not parse better).
            self.counters.receipts_unparseable += 1
            if (left_out := self._log_sample.allow("unparseable", self._monotonic())) is not None:
                log.warning(
                    "unparseable delivery receipt: no id, stat or receipt TLVs",
                    carrier=self.carrier,
                    sequence_number=pdu.sequence_number,
                    esm_class=f"0x{pdu.esm_class:02x}",
                    data_coding=pdu.data_coding,
                    octets=len(content),  # not its text: it quotes the message
                    **_same(left_out),
                )
            answered: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            answered.set_result(CommandStatus.ESME_ROK)
            return answered
        done = receipt.done_date
        done_at = None if done is None else (done - _EPOCH).total_seconds()
        # An intermediate notification (SMPP v3.4 5.2.12), or a receipt that gives no state
        # ("message buffered"), settles nothing: the real outcome may follow. Read as the
        # UNKNOWN it would otherwise be, it failed a message the next receipt said delivered.
        intermediate = (
            pdu.esm_class & ESM_TYPE_MASK == ESM_INTERMEDIATE_NOTIFICATION or not receipt.stated
        )
        item = ReceiptIn(
            keys=self._keys(receipt.message_id),
            stat=str(receipt.stat) if receipt.stated else "",
            final_state=None if intermediate else FINAL_STATE_OF[receipt.outcome],
            err=receipt.err,
            done_at=done_at,
            whole_message=self._whole_message,
        )
        return self._receipts.add(item)

    def _receipt_applied(self, result: ReceiptResult) -> None:
        outcome = str(result.outcome)
        self.counters.receipts[outcome] = self.counters.receipts.get(outcome, 0) + 1
        if result.delivered_after_s is not None:
            self.counters.delivery.observe(result.delivered_after_s)
        if result.change is not None:
            publish_changes(self._publish, result.changes, carrier=self.carrier, wants=self._wants)

    # --- mobile-originated messages --------------------------------------------------------

    async def _mobile_originated(self, pdu: DeliverSm | DataSm) -> int:
        redeliveries = self._redeliveries
        if redeliveries is None or redeliveries.window_s <= 0:
            return await asyncio.shield(_to_its_end(self._store_mo(pdu)))
        key = fingerprint(pdu)
        if not redeliveries.restored:
            await self._restore_seen(redeliveries)
        storing = self._storing.get(key)
        if storing is not None:  # still being stored: answered as that delivery is
            status = await asyncio.shield(storing)
            self.counters.inbound_redelivered += 1
            return status
        if redeliveries.seen(key, self._monotonic()) and not self._changes_opt_out(pdu):
            self.counters.inbound_redelivered += 1
            if (left_out := self._log_sample.allow("again", self._monotonic())) is not None:
                log.info(
                    "inbound message delivered again; answered, not stored again",
                    carrier=self.carrier,
                    **_same(left_out),
                )
            return CommandStatus.ESME_ROK
        seen = Seen(key, self._clock() + redeliveries.window_s)

        def stored(store: asyncio.Future[int]) -> None:
            del self._storing[key]
            if store.cancelled() or store.exception() is not None:  # the exception retrieved
                redeliveries.forget(key)  # answered an error: the SMSC's next try is taken

        store = self._storing[key] = _to_its_end(self._store_mo(pdu, seen), stored)
        return await asyncio.shield(store)

    def _changes_opt_out(self, pdu: DeliverSm | DataSm) -> bool:
        """Whether `pdu` is a whole MO that reads as STOP or START. One is never taken for a
        redelivery: the same STOP again after a START must stop again (opt-out is absolute),
        a START after that start again; a true redelivery recorded twice changes nothing."""
        content, part, shift = _concat_part(pdu)
        if part is not None:
            return False
        text = decode_text(
            content, pdu.data_coding, default_alphabet=self._default_alphabet, shift=shift
        )
        return self._optout.keywords.classify(text) in (Keyword.STOP, Keyword.START)

    async def _restore_seen(self, redeliveries: Redeliveries) -> None:
        """Once a run: the fingerprints stored with the MO of the last (see smppd.redelivery)."""
        async with self._restore_lock:
            if redeliveries.restored:
                return
            now = self._clock()
            seen = await self._queue.inbound_seen(
                self.carrier, now=now, limit=redeliveries.max_entries
            )
            # Stored that long ago, in the window's monotonic time.
            ages = [(key, max(0.0, now - at)) for key, at in seen]
            redeliveries.restore(ages, self._monotonic())

    def _sender_id(self, pdu: DeliverSm | DataSm) -> str:
        """The MO's destination, a sender id of ours, in the form senders are configured and
        submitted in, whatever TON the SMSC gives it. Some put TON 1 on every address: short
        code 12345 read as the number +12345 would be owned by nobody, and its STOP would not
        stop submits from it."""
        address, plan, owners = pdu.destination_addr, self._optout.numbers, self._owners
        destination = from_wire(address, pdu.dest_addr_ton, plan=plan)
        if destination in owners:
            return destination
        for form in (address, canonical_sender(address)):
            if form in owners:
                return form
        if destination == "+" + address and len(address) <= plan.short_code_max_digits:
            return address
        return destination

    async def _store_mo(self, pdu: DeliverSm | DataSm, seen: Seen | None = None) -> int:
        await self._restore_parts()
        now = self._clock()
        plan = self._optout.numbers
        source = from_wire(pdu.source_addr, pdu.source_addr_ton, plan=plan)
        # A STOP is recorded under the other reading of its number too (see the function).
        also = international_reading(pdu.source_addr, pdu.source_addr_ton, plan=plan)
        destination = self._sender_id(pdu)
        content, part, shift = _concat_part(pdu)
        group = None
        parts = None
        if part is not None:
            # The data_coding is part of the group: an incomplete one is decoded with its own,
            # not with that of whatever message arrives when it expires.
            group = PartGroup(
                self.carrier,
                source,
                destination,
                pdu.data_coding,
                part.ref,
                part.total,
                shift.locking,
                shift.single,
            )
            if self._parts.conflicts(group, part):
                # A new message under a reference its sender reused before the old one was
                # complete: the old one is stored first (incomplete), since on disk this part
                # takes its row. Failing that, this one is refused and comes again; taken, it
                # would not be on disk, and the old parts put back would displace it.
                self._parts.give_up(group, part, DropReason.REUSED, now=self._monotonic())
                await self.store_incomplete(now)
                if self._parts.conflicts(group, part):
                    raise QueueError("the earlier message under this reference is not stored yet")
            if not shift.is_default:
                self._part_shifts.setdefault((group, part.seq), shift)
            fresh = not self._parts.holds(group, part)  # not a repeat of one held
            parts = self._parts.add(group, part, now=self._monotonic())
            # What the part pushed out is stored first: that may be an older group of its own
            # key, whose held rows must be gone before this part's row joins them.
            await self.store_incomplete(now)
            # Held unless another delivery completed its message meanwhile (and took the
            # group's held rows with it: this row would outlive it) or its group was given up.
            if parts is None and self._parts.holds(group, part):
                self.counters.parts_held += 1
                # On disk before the SMSC has its deliver_sm_resp, like a whole message.
                held = InboundPart(group, part.seq, part.data, now, seen)
                try:
                    await self._queue.hold_inbound_part(held)
                except BaseException:
                    if fresh:  # answered an error, so delivered again: not pending meanwhile
                        self._parts.discard(group, part)
                        self._part_shifts.pop((group, part.seq), None)
                    raise
        else:
            await self.store_incomplete(now)
        if group is None:
            text = decode_text(
                content, pdu.data_coding, default_alphabet=self._default_alphabet, shift=shift
            )
            await self._store(
                source, destination, text, pdu.data_coding, now, complete=True, seen=seen, also=also
            )
        elif parts is not None:
            assert part is not None
            numbered = list(enumerate(parts, 1))
            shifts = self._shifts_of(group, numbered)
            try:
                await self._store_group(group, numbered, now, complete=True, seen=seen, also=also)
            except BaseException:
                # The SMSC is answered an error and delivers this part again: the others,
                # answered and held on disk, wait for it here again, or that delivery would
                # start a group of its own and, stored incomplete, take their rows with it.
                others = [(seq, data) for seq, data in numbered if seq != part.seq]
                self._put_back(group, others, shifts)
                raise
        return CommandStatus.ESME_ROK

    async def store_incomplete(self, now: float | None = None) -> None:
        """Store the long messages whose parts stopped coming (timed out or pushed out), with
        the parts that arrived. Called for each MO and by the daemon's housekeeping, so a
        quiet carrier's last incomplete message is not held indefinitely."""
        await self._restore_parts()
        if now is None:
            now = self._clock()
        while self._completed:
            whole, numbered = self._completed.pop()
            if not await self._store_or_keep(whole, numbered, now, complete=True):
                break
        for dropped in self._parts.expire(now=self._monotonic()):
            group = dropped.key
            assert isinstance(group, PartGroup)
            log.warning(
                "long inbound message incomplete; storing the parts that arrived",
                reason=str(dropped.reason),
                parts=f"{len(dropped.parts)}/{dropped.total}",
            )
            await self._store_or_keep(group, list(dropped.parts), now, complete=False)

    async def _store_or_keep(
        self, group: PartGroup, numbered: list[tuple[int, bytes]], now: float, *, complete: bool
    ) -> bool:
        """Store a long message from its parts; False if that failed. Held on disk still,
        they are back in memory then, stored when they expire again (or complete), not only
        after a restart; the failure is logged, not raised into the next MO's answer."""
        shifts = self._shifts_of(group, numbered)
        try:
            await self._store_group(group, numbered, now, complete=complete)
        except BaseException as exc:
            self._put_back(group, numbered, shifts)
            if not isinstance(exc, Exception):
                raise
            kind = "a long" if complete else "an incomplete"
            log.error(f"storing {kind} inbound message failed; its parts are kept", error=str(exc))
            return False
        return True

    async def _restore_parts(self) -> None:
        """Once, before anything else touches the parts: those an earlier run held on disk."""
        async with self._restore_lock:  # not contended after the first time: no wait
            if self._parts_restored:
                return
            for held in await self._queue.held_inbound_parts(self.carrier):
                group = held.group
                part = ConcatPart(group.ref, group.total, held.seq, held.data)
                shift = Shift(group.locking_shift, group.single_shift)  # this part's own
                if not shift.is_default:
                    self._part_shifts.setdefault((group, held.seq), shift)
                # Received that long ago, in the reassembler's monotonic time.
                age = max(0.0, self._clock() - held.received_at)
                parts = self._parts.add(group, part, now=self._monotonic() - age)
                if parts is not None:  # every part held: its message was never stored
                    numbered = list(enumerate(parts, 1))
                    await self._store_group(group, numbered, held.received_at, complete=True)
            self._parts_restored = True

    def _store_group(
        self,
        group: PartGroup,
        parts: list[tuple[int, bytes]],
        now: float,
        *,
        complete: bool,
        seen: Seen | None = None,
        also: str | None = None,
    ) -> Awaitable[None]:
        """Store a long message from its (seq, data) parts; its held parts go with it."""
        return self._store(
            group.source,
            group.destination,
            self._group_text(group, parts),
            group.data_coding,
            now,
            complete=complete,
            parts=group,
            held=tuple(parts),
            seen=seen,
            also=also,
        )

    def _shifts_of(self, group: PartGroup, parts: list[tuple[int, bytes]]) -> dict[int, Shift]:
        """The national tables of `parts` that named any (storing them takes them)."""
        return {
            seq: shift
            for seq, _ in parts
            if (shift := self._part_shifts.get((group, seq))) is not None
        }

    def _put_back(
        self, group: PartGroup, parts: list[tuple[int, bytes]], shifts: dict[int, Shift]
    ) -> None:
        """Parts a failed store took from the reassembler, pending there again; should they
        complete their group (its last part came meanwhile), it is stored as a whole with the
        next incomplete ones."""
        for seq, data in parts:
            if seq in shifts:
                self._part_shifts.setdefault((group, seq), shifts[seq])
            done = self._parts.add(
                group, ConcatPart(group.ref, group.total, seq, data), now=self._monotonic()
            )
            if done is not None:
                self._completed.append((group, list(enumerate(done, 1))))

    def _group_text(self, group: PartGroup, parts: list[tuple[int, bytes]]) -> str:
        """The text of a long message's parts, each read with its own national tables."""
        shifted = [
            (data, self._part_shifts.pop((group, seq), DEFAULT_SHIFT)) for seq, data in parts
        ]
        return decode_parts(shifted, group.data_coding, default_alphabet=self._default_alphabet)

    async def _store(
        self,
        source: str,
        destination: str,
        text: str,
        data_coding: int,
        now: float,
        *,
        complete: bool,
        parts: PartGroup | None = None,
        held: tuple[tuple[int, bytes], ...] = (),
        seen: Seen | None = None,
        also: str | None = None,  # the source's other reading (international_reading)
    ) -> None:
        # The sender's owner manages its opt-outs and replies; an unowned number's MO goes to
        # the client configured for those, if any, for it to read, and no more.
        owner = self._owners.get(destination)
        client = owner or self._unowned_to
        keyword = self._optout.keywords.classify(text) if complete else None
        word = None if keyword is None else str(keyword)
        stored = InboundIn(
            self.carrier,
            source,
            destination,
            text,
            data_coding,
            now,
            client,
            parts,
            complete,
            word,
            held,
            seen,
        )
        # The opt-out first: should storing the message then fail, the SMSC's next delivery
        # records it again, which changes nothing, and stores the message once. The other way
        # round, a failed opt-out would have the message stored twice.
        if keyword is Keyword.STOP:
            numbers = (source,) if also is None or also == source else (source, also)
            await self._opt_out(owner, destination, numbers, now)
        elif keyword is Keyword.START:
            # Its own reading only: the other may be someone else's STOP (+16012345678's, for
            # a German 16012345678 under prefix 49), which a START must never lift.
            await self._opt_in(owner, destination, source)
        inbound_id = await self._queue.store_inbound(stored)
        self.counters.inbound += 1
        if owner is None:
            self.counters.inbound_unowned += 1
            left_out = self._log_sample.allow("unowned", self._monotonic())
            if left_out is not None:
                log.info(
                    "inbound message to an unowned sender id",
                    destination=destination,
                    client=client,
                    **_same(left_out),
                )
        # Published before the reply is queued (a commit of its own): events go out in the
        # order of their ids, which a client catching up with `inbound` relies on.
        self._publish(inbound_event(inbound_id, stored))
        if keyword is not None and owner is not None:
            await self._reply(keyword, owner, destination, source)

    async def _reply(self, keyword: Keyword, client: str, sender: str, number: str) -> None:
        text = self._optout.auto_replies.get(keyword)
        if text is None or self._auto_reply is None:
            return
        if not self._cooldown.take(sender, number, keyword):
            log.debug("automatic reply skipped: one was sent within the hour", keyword=str(keyword))
            return
        try:
            await self._auto_reply(client, sender, number, text)
        except SmppdError as exc:
            # The inbound message is stored and the opt-out recorded; only the courtesy reply
            # is lost, which must not make the SMSC redeliver the STOP. A repeat may have one.
            self._cooldown.give_back(sender, number, keyword)
            log.warning("automatic reply not sent", keyword=str(keyword), error=str(exc))
        else:
            self.counters.auto_replies += 1

    def _scope(self, client: str | None, sender: str) -> tuple[str, ...]:
        if self._optout.per_client and client is not None:
            return self._optout.senders_of.get(client, (sender,))
        return (sender,)

    async def _opt_out(
        self, client: str | None, sender: str, numbers: tuple[str, ...], now: float
    ) -> None:
        per_client = self._optout.per_client and client is not None
        for sender_id in self._scope(client, sender):
            for number in numbers:
                await self._queue.add_optout(sender_id, number, now=now)
                if not per_client:
                    await self._cancel_queued(sender_id, number, now, None)
        if per_client:  # its messages from any sender: those it may use without owning them too
            for number in numbers:
                await self._cancel_queued(OPTOUT_ALL_SENDERS, number, now, client)
        self.counters.optouts += 1
        log.info("opt-out recorded", sender=sender, **_numbers(numbers))

    async def _cancel_queued(
        self, sender: str, number: str, now: float, client: str | None
    ) -> None:
        changes = await self._queue.cancel_queued_to(sender, number, now=now, client=client)
        self._withdraw([change.segment_id for change in changes])
        publish_changes(self._publish, changes, wants=self._wants)

    async def _opt_in(self, client: str | None, sender: str, number: str) -> None:
        for sender_id in self._scope(client, sender):
            await self._queue.remove_optout(sender_id, number)
        self.counters.optins += 1
        log.info("opt-in recorded", sender=sender, number=number)


def _numbers(numbers: tuple[str, ...]) -> dict[str, str]:
    """An opt-out's number for the log (masked), with its other reading when it has one."""
    found = {"number": numbers[0]}
    if len(numbers) > 1:
        found["other_reading"] = numbers[1]
    return found


def _to_its_end(
    storing: Coroutine[object, object, int],
    done: Callable[[asyncio.Future[int]], None] | None = None,
) -> asyncio.Future[int]:
    """`storing` as a task of its own, to be awaited shielded: should the handler be cancelled
    meanwhile (its bind gone, say), the store goes on, for a write once queued commits, and the
    message it stored must still have its event published (and its fingerprint kept, so the
    SMSC's redelivery is told apart). `done` is called as it ends; the exception of one that
    failed is retrieved either way (a cancelled handler's: the SMSC tries again)."""
    store = asyncio.ensure_future(storing)
    store.add_done_callback(done or _retrieved)
    return store


def _retrieved(store: asyncio.Future[int]) -> None:
    if not store.cancelled():
        store.exception()


def _same(left_out: int) -> dict[str, int]:
    return {"same_since_last_line": left_out} if left_out else {}


def _concat_part(pdu: DeliverSm | DataSm) -> tuple[bytes, ConcatPart | None, Shift]:
    """The user data without its header, the part of a long message it is, if one, and the
    national language tables its header names."""
    content = pdu.content
    if pdu.esm_class & ESM_UDHI:
        try:
            elements, rest = parse_udh(content)
        except DecodeError:  # a broken header: keep the bytes rather than lose the message
            return content, None, DEFAULT_SHIFT
        shift = shift_of(elements)
        info = concat_info(elements)
        if info is not None and info.total > 1:
            return rest, ConcatPart(info.ref, info.total, info.seq, rest), shift
        return rest, None, shift
    ref = tlv.get_int(pdu.tlvs, Tag.sar_msg_ref_num)
    total = tlv.get_int(pdu.tlvs, Tag.sar_total_segments)
    seq = tlv.get_int(pdu.tlvs, Tag.sar_segment_seqnum)
    # The TLVs are one octet (two for the reference), but a delivery keeps a TLV of the wrong
    # length: values out of range make the message one of its own rather than fail it.
    if (
        ref is not None
        and 0 <= ref <= 0xFFFF
        and total
        and seq
        and 1 <= seq <= total <= MAX_CONCAT_PARTS
        and total > 1
    ):
        return content, ConcatPart(ref, total, seq, content), DEFAULT_SHIFT
    return content, None, DEFAULT_SHIFT
