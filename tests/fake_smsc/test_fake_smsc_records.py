"""What the fake SMSC records: segments, reassembled messages, text in every data_coding, files."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smppd.pdu import national
from smppd.pdu.national import DEFAULT_SHIFT, NationalLanguage, Shift
from smppd.pdu.pdus import ESM_UDHI, SubmitSm, SubmitSmResp
from smppd.pdu.segment import ConcatMethod, split_message
from smppd.pdu.status import CommandStatus as S
from smppd.pdu.text import Alphabet
from smppd.pdu.udh import build_concat_udh
from tools.fake_smsc import EsmeClient, FakeSmsc, SmscConfig
from tools.fake_smsc.records import (
    Concat,
    MessageRecord,
    SegmentRecord,
    message_line,
    segment_line,
)
from tools.fake_smsc.server import MAX_CLOSED_KEPT

LONG = "The quick brown fox jumps over the lazy dog; {braces} and [brackets] cost two. " * 4
DEST = "447700900123"


def parts_of(text: str, method: ConcatMethod, *, ref: int = 7, dest: str = DEST) -> list[SubmitSm]:
    """The submit_sm PDUs smppd's segmentation makes of `text`."""
    alphabet = Alphabet.UCS2 if not text.isascii() else Alphabet.GSM7
    segments = split_message(
        text,
        alphabet=alphabet,
        data_coding=8 if alphabet is Alphabet.UCS2 else 0,
        method=method,
        ref=ref,
        max_segments=10,
    )
    return [
        SubmitSm(
            source_addr="SMPPD",
            destination_addr=dest,
            esm_class=ESM_UDHI if segment.esm_class_udhi else 0,
            data_coding=segment.data_coding,
            short_message=segment.short_message,
            tlvs=segment.tlvs(),
        )
        for segment in segments
    ]


@pytest.fixture
async def smsc() -> AsyncIterator[FakeSmsc]:
    async with FakeSmsc(SmscConfig(port=0)) as server:
        yield server


@pytest.fixture
async def client(smsc: FakeSmsc) -> AsyncIterator[EsmeClient]:
    async with await EsmeClient.connect(smsc.host, smsc.port) as esme:
        assert (await esme.bind()).command_status == 0
        yield esme


@pytest.mark.parametrize(
    "method", [ConcatMethod.UDH8, ConcatMethod.UDH16, ConcatMethod.SAR, ConcatMethod.PAYLOAD]
)
@pytest.mark.parametrize("text", [LONG, "Ünïcödé with emoji 🎉 " * 10])
async def test_concatenated_message_is_reassembled(
    smsc: FakeSmsc, client: EsmeClient, method: ConcatMethod, text: str
) -> None:
    """UDH 8/16-bit, SAR and message_payload each yield one message with the whole text."""
    pdus = parts_of(text, method)
    ids = [(await client.submit(pdu)).message_id for pdu in pdus]
    await smsc.records.wait_for(1)
    (message,) = smsc.records.messages
    assert message.text == text
    assert message.parts == len(pdus)
    assert list(message.message_ids) == ids
    assert (message.source, message.destination) == ("SMPPD", DEST)
    segments = smsc.records.segments
    assert len(segments) == len(pdus)
    if method is ConcatMethod.PAYLOAD:
        assert segments[0].payload
        assert segments[0].concat is None
    else:
        kinds = {ConcatMethod.UDH8: "udh8", ConcatMethod.UDH16: "udh16", ConcatMethod.SAR: "sar"}
        assert [s.concat.seq for s in segments if s.concat] == list(range(1, len(pdus) + 1))
        assert {s.concat.kind for s in segments if s.concat} == {kinds[method]}
        assert {s.concat.ref for s in segments if s.concat} == {7}


async def test_parts_out_of_order_and_repeated_make_one_message(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """Parts sent 3, 1, 1, 2 give one message in part order; the repeat is a segment only."""
    first, second, third = parts_of(LONG, ConcatMethod.UDH8)
    for pdu in (third, first, first, second):
        await client.submit(pdu)
    assert [m.text for m in smsc.records.messages] == [LONG]
    assert smsc.records.segment_count == 4


async def test_refused_part_does_not_count_until_resent(smsc: FakeSmsc, client: EsmeClient) -> None:
    """A part answered with an error is not part of the message; its accepted resend is."""
    first, second, third = parts_of(LONG, ConcatMethod.UDH8)
    await client.submit(first)
    smsc.faults.submit_errors = {S.ESME_RTHROTTLED: 1.0}
    assert (await client.submit(second)).command_status == S.ESME_RTHROTTLED
    smsc.faults.submit_errors = {}
    await client.submit(third)
    assert smsc.records.messages == []
    await client.submit(second)
    assert [m.text for m in smsc.records.messages] == [LONG]


async def test_same_reference_from_different_destinations_does_not_mix(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """Reassembly is keyed by addresses too: equal references to two handsets stay apart."""
    a = parts_of(LONG, ConcatMethod.UDH8, dest="447700900001")
    b = parts_of(LONG.upper(), ConcatMethod.UDH8, dest="447700900002")
    for pdu_a, pdu_b in zip(a, b, strict=True):
        await client.submit(pdu_a)
        await client.submit(pdu_b)
    assert smsc.records.texts_to("447700900001") == [LONG]
    assert smsc.records.texts_to("447700900002") == [LONG.upper()]


async def test_counts_by_destination_show_duplicates(smsc: FakeSmsc, client: EsmeClient) -> None:
    """A message sent twice counts twice: "exactly once" is checkable."""
    for dest in ("447700900001", "447700900002", "447700900001"):
        await client.submit(SubmitSm(destination_addr=dest, short_message=b"hi"))
    assert smsc.records.by_destination() == {"447700900001": 2, "447700900002": 1}


@pytest.mark.parametrize(
    ("data_coding", "data", "text", "alphabet"),
    [
        (0, b"\x00\x01\x02\x1b\x65", "@£$€", Alphabet.GSM7),
        (0, "café".encode("latin-1"), "café", Alphabet.LATIN1),
        (1, b"plain ascii", "plain ascii", Alphabet.GSM7),
        (3, "señor".encode("latin-1"), "señor", Alphabet.GSM7),
        (8, "привет 🎉".encode("utf-16-be"), "привет 🎉", Alphabet.GSM7),
        (4, b"\x00\xff\x10", "\x00\xff\x10", Alphabet.GSM7),
    ],
)
async def test_text_is_decoded_for_every_data_coding(
    data_coding: int, data: bytes, text: str, alphabet: Alphabet
) -> None:
    """GSM or Latin-1 for 0 (as configured), IA5, Latin-1, UCS-2 and binary octets."""
    async with (
        FakeSmsc(SmscConfig(port=0, default_alphabet=alphabet)) as smsc,
        await EsmeClient.connect(smsc.host, smsc.port) as client,
    ):
        await client.bind()
        await client.submit(
            SubmitSm(destination_addr=DEST, data_coding=data_coding, short_message=data)
        )
    assert smsc.records.segments[0].text == text
    assert smsc.records.messages[0].text == text
    assert smsc.records.messages[0].data_coding == data_coding


async def test_wait_for_wakes_when_the_count_is_reached(smsc: FakeSmsc, client: EsmeClient) -> None:
    """wait_for returns once N messages are in, and times out when they are not."""
    for n in range(3):
        client.send(SubmitSm(destination_addr=f"4470{n}", short_message=b"x"))
    await smsc.records.wait_for(count=3, timeout=5)
    await smsc.records.wait_for(count=3, timeout=5, segments=True)
    assert smsc.records.message_count == 3
    with pytest.raises(TimeoutError):
        await smsc.records.wait_for(count=4, timeout=0.05)
    for _ in range(3):
        await client.expect(SubmitSmResp)


async def test_clear_forgets_what_was_recorded(smsc: FakeSmsc, client: EsmeClient) -> None:
    """clear() empties lists and counters."""
    await client.submit(SubmitSm(destination_addr=DEST, short_message=b"x"))
    smsc.records.clear()
    assert (smsc.records.segments, smsc.records.messages, smsc.records.message_count) == (
        [],
        [],
        0,
    )


async def test_json_lines_record_file(tmp_path: Path) -> None:
    """--record writes one line per segment and per complete message."""
    path = tmp_path / "records.jsonl"
    async with (
        FakeSmsc(SmscConfig(port=0, record_path=path)) as smsc,
        await EsmeClient.connect(smsc.host, smsc.port) as client,
    ):
        await client.bind()
        pdus = parts_of(LONG, ConcatMethod.SAR)
        for pdu in pdus:
            await client.submit(pdu)
        smsc.faults.submit_errors = {S.ESME_RSYSERR: 1.0}
        await client.submit(SubmitSm(destination_addr=DEST, short_message=b"refused"))
        # Written per batch, before the answer: readable while the SMSC runs.
        lines = [json.loads(line) for line in path.read_text().splitlines()]
    total = len(pdus)
    assert [line["type"] for line in lines] == ["segment"] * total + ["message", "segment"]
    assert lines[total]["text"] == LONG
    assert lines[total]["parts"] == total
    assert lines[0]["concat"] == {"kind": "sar", "ref": 7, "total": total, "seq": 1}
    assert lines[0]["message_id"] == "00000001"
    assert lines[-1]["command_status"] == S.ESME_RSYSERR
    assert lines[-1]["text"] == "refused"


_times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
_ints = st.integers(min_value=0, max_value=2**32)
_concats = st.none() | st.builds(
    Concat, st.sampled_from(["udh8", "udh16", "sar"]), _ints, _ints, _ints
)
_segments = st.builds(
    SegmentRecord,
    time=_times,
    account=st.text(),
    bind_id=_ints,
    sequence_number=_ints,
    command=st.sampled_from(["submit_sm", "data_sm"]),
    source=st.text(),
    destination=st.text(),
    destination_ton=_ints,
    destination_npi=_ints,
    esm_class=_ints,
    data_coding=_ints,
    registered_delivery=_ints,
    text=st.text(),
    concat=_concats,
    payload=st.booleans(),
    message_id=st.text(),
    command_status=st.none() | _ints,
)
_messages = st.builds(
    MessageRecord,
    time=_times,
    account=st.text(),
    source=st.text(),
    destination=st.text(),
    text=st.text(),
    parts=_ints,
    data_coding=_ints,
    message_ids=st.lists(st.text(), max_size=4).map(tuple),
)


@given(_segments)
def test_a_segment_line_is_the_json_of_its_record(record: SegmentRecord) -> None:
    """The record file's hand-built lines are exactly what json.dumps makes of the records."""
    assert segment_line(record) == json.dumps({"type": "segment", **asdict(record)})


@given(_messages)
def test_a_message_line_is_the_json_of_its_record(record: MessageRecord) -> None:
    assert message_line(record) == json.dumps({"type": "message", **asdict(record)})


async def test_counting_only_mode_keeps_counters_not_records() -> None:
    """record_in_memory False: no lists, but segment, message and status counts."""
    async with (
        FakeSmsc(SmscConfig(port=0, record_in_memory=False)) as smsc,
        await EsmeClient.connect(smsc.host, smsc.port) as client,
    ):
        await client.bind()
        for pdu in parts_of(LONG, ConcatMethod.UDH8):
            await client.submit(pdu)
        await client.submit(SubmitSm(destination_addr=DEST, short_message=b"x"))
        smsc.faults.submit_errors = {S.ESME_RTHROTTLED: 1.0}
        await client.submit(SubmitSm(destination_addr=DEST, short_message=b"x"))
        await smsc.records.wait_for(2)
    records = smsc.records
    assert (records.segments, records.messages) == ([], [])
    assert (records.segment_count, records.message_count) == (5, 2)
    assert smsc.stats()["statuses"] == {"ESME_ROK": 4, "ESME_RTHROTTLED": 1}


async def test_records_in_memory_are_bounded_and_the_counts_are_not() -> None:
    """A long run keeps the latest `max_records` of each kind, and counts every one."""
    async with (
        FakeSmsc(SmscConfig(port=0, max_records=10)) as smsc,
        await EsmeClient.connect(smsc.host, smsc.port) as client,
    ):
        await client.bind()
        for i in range(40):
            await client.submit(SubmitSm(destination_addr="4470", short_message=f"m{i}".encode()))
        await smsc.records.wait_for(40, timeout=5)
        assert smsc.records.segment_count == smsc.records.message_count == 40
        assert 10 <= len(smsc.records.messages) <= 11
        assert smsc.records.messages[-1].text == "m39"


async def test_closed_connections_are_forgotten_past_a_bound() -> None:
    """Reconnects (drop_after_pdus and the like) do not grow the connection list for ever."""
    async with FakeSmsc(SmscConfig(port=0)) as smsc:
        for _ in range(MAX_CLOSED_KEPT * 2 + 20):
            async with await EsmeClient.connect(smsc.host, smsc.port) as client:
                await client.bind()
        async with await EsmeClient.connect(smsc.host, smsc.port) as client:
            await client.bind()
            assert len(smsc.connections) <= 2 * MAX_CLOSED_KEPT + 1
            assert smsc.bound()[0] is smsc.connections[-1]


async def test_parts_that_name_different_national_tables_read_each_with_its_own(
    smsc: FakeSmsc, client: EsmeClient
) -> None:
    """A part in the Turkish locking table and one naming no tables make "İstanbul ¡" whole,
    not the text both read with either part's tables."""
    locking = Shift(locking=NationalLanguage.TURKISH)
    halves = [("İstanbul ", locking), ("¡", DEFAULT_SHIFT)]
    for seq, (text, shift) in enumerate(halves, 1):
        udh = build_concat_udh(3, 2, seq, ref16=False, more=shift.elements())
        pdu = SubmitSm(
            source_addr="SMPPD",
            destination_addr=DEST,
            esm_class=ESM_UDHI,
            short_message=udh + national.encode(text, shift),
        )
        await client.submit(pdu)
    await smsc.records.wait_for(1)
    [message] = smsc.records.messages
    assert message.text == "İstanbul ¡"
