"""What reached the fake SMSC: every submitted segment, and the messages they reassemble into.

Owns the segment and message records, reassembly of concatenated messages (UDH with 8- or 16-bit
references, SAR TLVs; message_payload carries a whole message), the counters, the JSON-lines file
and the waiters of `wait_for`. A message counts once it is complete from segments answered
ESME_ROK, so tests can assert "reached the carrier exactly once". It takes decoded PDUs and
values; it must not know connections, faults or time sources beyond the `now` it is given.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from json.encoder import encode_basestring_ascii as _q
from pathlib import Path
from typing import IO, Any

from smppd.pdu.national import DEFAULT_SHIFT, Shift, decode_parts, decode_text, shift_of
from smppd.pdu.pdus import ESM_UDHI, DataSm, SubmitSm
from smppd.pdu.text import Alphabet
from smppd.pdu.tlv import Tag, get_int
from smppd.pdu.udh import ConcatPart, DroppedGroup, Reassembler, concat_info, parse_udh
from smppd.record import record

_MAX_GROUPS = 4096  # incomplete long messages held at once; the oldest goes past it


@record
class Concat:
    """How a segment says it is part of a longer message."""

    kind: str  # "udh8", "udh16" or "sar"
    ref: int
    total: int
    seq: int


@record
class SegmentRecord:
    time: float  # wall clock, seconds since the epoch
    account: str
    bind_id: int
    sequence_number: int
    command: str  # "submit_sm" or "data_sm"
    source: str
    destination: str
    destination_ton: int
    destination_npi: int
    esm_class: int
    data_coding: int
    registered_delivery: int
    text: str  # this segment's user data, UDH excluded
    concat: Concat | None
    payload: bool  # the user data came in message_payload
    message_id: str  # "" when the submit was refused
    command_status: int | None  # None: never answered (hang, drop)


@record
class MessageRecord:
    time: float  # when the last part arrived
    account: str
    source: str
    destination: str
    text: str
    parts: int
    data_coding: int
    message_ids: tuple[str, ...]  # of the parts, in part order


@record
class Content:
    """The user data of a submit, split from its UDH, with the concatenation it announces."""

    data: bytes
    concat: Concat | None
    payload: bool
    shift: Shift = DEFAULT_SHIFT  # national language tables its UDH names


def split_content(pdu: SubmitSm | DataSm) -> Content:
    """The user data and concatenation of `pdu`; DecodeError when its UDH is malformed."""
    data = pdu.content
    payload = isinstance(pdu, DataSm) or (not pdu.short_message and bool(data))
    concat: Concat | None = None
    shift = DEFAULT_SHIFT
    if pdu.esm_class & ESM_UDHI:
        elements, data = parse_udh(data)
        shift = shift_of(elements)
        info = concat_info(elements)
        if info is not None:
            concat = Concat("udh16" if info.ref16 else "udh8", info.ref, info.total, info.seq)
    if concat is None and pdu.tlvs:
        total = get_int(pdu.tlvs, Tag.sar_total_segments)
        seq = get_int(pdu.tlvs, Tag.sar_segment_seqnum)
        ref = get_int(pdu.tlvs, Tag.sar_msg_ref_num)
        if total is not None and seq is not None and ref is not None and 1 <= seq <= total:
            concat = Concat("sar", ref, total, seq)
    return Content(data, concat, payload, shift)


# The record file's lines, written field by field: json.dumps of the record's dict cost the SMSC
# 8-14 us a message under benchmark load, these 1.5-3. Same text as json.dumps with its default
# separators (tests compare them); strings go through json's own escaping.
def _json_int(value: int | None) -> str:
    return "null" if value is None else str(value)


def _json_concat(concat: Concat | None) -> str:
    if concat is None:
        return "null"
    return (
        f'{{"kind": {_q(concat.kind)}, "ref": {concat.ref}, "total": {concat.total}, '
        f'"seq": {concat.seq}}}'
    )


def segment_line(record: SegmentRecord) -> str:
    """`record` as a JSON object of type "segment"."""
    r = record
    return (
        f'{{"type": "segment", "time": {r.time!r}, "account": {_q(r.account)}, '
        f'"bind_id": {r.bind_id}, "sequence_number": {r.sequence_number}, '
        f'"command": {_q(r.command)}, "source": {_q(r.source)}, '
        f'"destination": {_q(r.destination)}, "destination_ton": {r.destination_ton}, '
        f'"destination_npi": {r.destination_npi}, "esm_class": {r.esm_class}, '
        f'"data_coding": {r.data_coding}, "registered_delivery": {r.registered_delivery}, '
        f'"text": {_q(r.text)}, "concat": {_json_concat(r.concat)}, '
        f'"payload": {"true" if r.payload else "false"}, "message_id": {_q(r.message_id)}, '
        f'"command_status": {_json_int(r.command_status)}}}'
    )


def message_line(record: MessageRecord) -> str:
    """`record` as a JSON object of type "message"."""
    r = record
    ids = ", ".join(map(_q, r.message_ids))
    return (
        f'{{"type": "message", "time": {r.time!r}, "account": {_q(r.account)}, '
        f'"source": {_q(r.source)}, "destination": {_q(r.destination)}, "text": {_q(r.text)}, '
        f'"parts": {r.parts}, "data_coding": {r.data_coding}, "message_ids": [{ids}]}}'
    )


def _bound(records: list[Any], most: int) -> None:
    """Keep the latest `most` (the list may run a tenth over, so trimming is not per record)."""
    if len(records) > most + most // 10:
        del records[: len(records) - most]


class Records:
    """Segments and messages received, in memory (unless counting only) and in a JSON-lines file.

    `segments` and `messages` are empty in counting-only mode; the counters always work.
    """

    def __init__(
        self,
        *,
        default_alphabet: Alphabet = Alphabet.GSM7,
        in_memory: bool = True,
        path: Path | None = None,
        max_records: int = 100_000,
    ) -> None:
        self.default_alphabet = default_alphabet
        self.in_memory = in_memory
        self.max_records = max_records  # in memory: the latest of each list
        self.segments: list[SegmentRecord] = []
        self.messages: list[MessageRecord] = []
        self.segment_count = 0
        self.message_count = 0
        self.status_counts: Counter[int] = Counter()  # answered statuses; -1: unanswered
        self._reassembler = Reassembler(timeout_s=600.0, max_groups=_MAX_GROUPS)
        # Each held part's message id and the national tables its UDH named, by group.
        self._part_ids: dict[tuple[Any, ...], dict[int, tuple[str, Shift]]] = {}
        self._waiters: list[tuple[int, bool, asyncio.Future[None]]] = []
        self._path = path
        self._file: IO[str] | None = None  # opened by open(), or else at the first flush
        self._lines: list[str] = []

    # --- recording ------------------------------------------------------------------------

    def add(
        self,
        pdu: SubmitSm | DataSm,
        content: Content | None,
        *,
        account: str,
        bind_id: int,
        message_id: str,
        command_status: int | None,
        now: float,
    ) -> None:
        """Record one received segment (`content` None when its UDH could not be parsed)."""
        self.segment_count += 1
        self.status_counts[-1 if command_status is None else command_status] += 1
        if not self.in_memory and self._path is None:
            if command_status == 0 and content is not None:
                self._count_message(pdu, content, account, now)
            self._wake()
            return
        data = pdu.content if content is None else content.data
        record = SegmentRecord(
            time=now,
            account=account,
            bind_id=bind_id,
            sequence_number=pdu.sequence_number,
            command="data_sm" if isinstance(pdu, DataSm) else "submit_sm",
            source=pdu.source_addr,
            destination=pdu.destination_addr,
            destination_ton=pdu.dest_addr_ton,
            destination_npi=pdu.dest_addr_npi,
            esm_class=pdu.esm_class,
            data_coding=pdu.data_coding,
            registered_delivery=pdu.registered_delivery,
            text=self.decode(
                data, pdu.data_coding, DEFAULT_SHIFT if content is None else content.shift
            ),
            concat=None if content is None else content.concat,
            payload=False if content is None else content.payload,
            message_id=message_id,
            command_status=command_status,
        )
        if self.in_memory:
            self.segments.append(record)
            _bound(self.segments, self.max_records)
        if self._path is not None:
            self._lines.append(segment_line(record))
        if command_status == 0 and content is not None:
            self._reassemble(record, content, now)
        self._wake()

    def decode(self, data: bytes, data_coding: int, shift: Shift = DEFAULT_SHIFT) -> str:
        return decode_text(data, data_coding, default_alphabet=self.default_alphabet, shift=shift)

    def _count_message(
        self, pdu: SubmitSm | DataSm, content: Content, account: str, now: float
    ) -> None:
        concat = content.concat
        if concat is None or concat.total == 1:
            self.message_count += 1
            return
        key = (account, pdu.source_addr, pdu.destination_addr, concat.kind)
        part = ConcatPart(concat.ref, concat.total, concat.seq, b"")
        if self._reassembler.add(key, part, now=now) is not None:
            self.message_count += 1
        self._expire(now)

    def _reassemble(self, record: SegmentRecord, content: Content, now: float) -> None:
        concat = content.concat
        if concat is None or concat.total == 1:
            self._add_message(record, record.text, 1, (record.message_id,))
            return
        key = (record.account, record.source, record.destination, concat.kind)
        ids = self._part_ids.setdefault((key, concat.ref, concat.total), {})
        ids.setdefault(concat.seq, (record.message_id, content.shift))
        part = ConcatPart(concat.ref, concat.total, concat.seq, content.data)
        parts = self._reassembler.add(key, part, now=now)
        for dropped in self._expire(now):
            self._part_ids.pop((dropped.key, dropped.ref, dropped.total), None)
        if parts is None:
            return
        del self._part_ids[(key, concat.ref, concat.total)]
        seqs = range(1, concat.total + 1)
        text = decode_parts(
            [(data, ids[seq][1]) for seq, data in zip(seqs, parts, strict=True)],
            record.data_coding,
            default_alphabet=self.default_alphabet,
        )
        message_ids = tuple(ids[seq][0] for seq in seqs)
        self._add_message(record, text, concat.total, message_ids)

    def _expire(self, now: float) -> list[DroppedGroup]:
        """Incomplete groups given up: only when one is due or the table is full (expire scans)."""
        reassembler = self._reassembler
        deadline = reassembler.next_deadline()
        if (deadline is None or now < deadline) and len(reassembler) < _MAX_GROUPS:
            return []
        return reassembler.expire(now=now)

    def _add_message(
        self, last: SegmentRecord, text: str, parts: int, message_ids: tuple[str, ...]
    ) -> None:
        self.message_count += 1
        record = MessageRecord(
            time=last.time,
            account=last.account,
            source=last.source,
            destination=last.destination,
            text=text,
            parts=parts,
            data_coding=last.data_coding,
            message_ids=message_ids,
        )
        if self.in_memory:
            self.messages.append(record)
            _bound(self.messages, self.max_records)
        if self._path is not None:
            self._lines.append(message_line(record))

    def open(self) -> None:
        """Open the record file now (at the server's start): a path that cannot be written is
        then an error there, not a connection dropped at its first submit."""
        if self._path is not None and self._file is None:
            self._file = self._path.open("a", encoding="utf-8")

    def flush(self) -> None:
        """Write the JSON lines gathered since the last flush (called once per read batch)."""
        if not self._lines or self._path is None:
            return
        if self._file is None:
            self._file = self._path.open("a", encoding="utf-8")
        self._lines.append("")
        self._file.write("\n".join(self._lines))
        self._file.flush()
        self._lines.clear()

    def close(self) -> None:
        self.flush()
        self._path = None
        if self._file is not None:
            self._file.close()
            self._file = None
        for _, _, future in self._waiters:
            if not future.done():
                future.cancel()
        self._waiters.clear()

    # --- reading ----------------------------------------------------------------------------

    def by_destination(self) -> Counter[str]:
        """Complete messages per destination address (empty in counting-only mode)."""
        return Counter(m.destination for m in self.messages)

    def texts_to(self, destination: str) -> list[str]:
        return [m.text for m in self.messages if m.destination == destination]

    def clear(self) -> None:
        """Forget what was recorded so far (counters included); pending waiters keep waiting."""
        self.segments.clear()
        self.messages.clear()
        self.segment_count = self.message_count = 0
        self.status_counts.clear()

    async def wait_for(
        self,
        count: int,
        timeout: float = 5.0,  # noqa: ASYNC109 - reads as the tests say it: wait_for(N, timeout=5)
        *,
        segments: bool = False,
    ) -> None:
        """Return once `count` complete messages (or segments) have been recorded.

        TimeoutError after `timeout` seconds. Woken by each record, never by polling.
        """
        if self._reached(count, segments):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (count, segments, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await future
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _reached(self, count: int, segments: bool) -> bool:
        return (self.segment_count if segments else self.message_count) >= count

    def _wake(self) -> None:
        if not self._waiters:
            return
        for entry in list(self._waiters):
            count, segments, future = entry
            if self._reached(count, segments):
                self._waiters.remove(entry)
                if not future.done():
                    future.set_result(None)
