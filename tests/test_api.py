"""The API server against a stand-in service: replies, errors and limits as bytes on the socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import structlog
from api_fakes import (
    DEMO,
    WAIT_S,
    FakeService,
    Raw,
    RecordingObserver,
    close_raw_connections,
    own_uid,
    running_server,
    short_tmpdir,
)
from hypothesis import given
from hypothesis import strategies as st

from smppd import api
from smppd.api import (
    TOO_LONG,
    ApiServer,
    ApiServerError,
    ApiSettings,
    ClientTable,
    LineSplitter,
    max_priority_for_flag,
)
from smppd.config import ApiClient, ApiConfig
from smppd.events import EventHub
from smppd.pathlock import PathLock
from smppd.service import ApiError, ClientIdentity, ErrorCode, Event, SubmitRequest

SUBMIT: dict[str, Any] = {"op": "submit", "to": "+447700900123", "from": "ACME", "text": "hi"}


def submits(service: FakeService) -> list[list[SubmitRequest]]:
    return [call[1][1] for call in service.calls if call[0] == "submit"]


# --- framing ------------------------------------------------------------------------------------


def test_splitter_reports_a_long_line_once_and_resumes_after_its_newline() -> None:
    """A line over the limit yields one TOO_LONG as soon as it passes; the next line is whole."""
    splitter = LineSplitter(8)
    assert splitter.feed(b"12345") == []
    assert splitter.feed(b"6789") == [TOO_LONG]
    assert splitter.feed(b"abcdefghijkl") == []
    assert splitter.feed(b"xyz\nok\n12345678\n123456789\n") == [b"ok", b"12345678", TOO_LONG]


def test_splitter_end_gives_a_last_line_left_without_its_newline() -> None:
    """At end of input the unterminated rest is a line; nothing, or a refused long line, is not."""
    splitter = LineSplitter(8)
    assert splitter.feed(b"ok\nlast") == [b"ok"]
    assert splitter.end() == b"last"
    assert splitter.end() is None
    assert splitter.feed(b"123456789") == [TOO_LONG]
    assert splitter.end() is None


@given(
    st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=8),
    st.lists(st.integers(1, 7), max_size=30),
)
def test_splitter_is_independent_of_chunking(lines: list[bytes], cuts: list[int]) -> None:
    """However the stream is cut, the same lines (or TOO_LONG markers) come out."""
    stream = b"".join(line + b"\n" for line in lines)
    expected = [line if len(line) <= 10 else TOO_LONG for line in lines]
    splitter = LineSplitter(10)
    out: list[object] = []
    pos = 0
    for cut in cuts:
        out += splitter.feed(stream[pos : pos + cut])
        pos += cut
    out += splitter.feed(stream[pos:])
    assert out == expected


# --- ops ----------------------------------------------------------------------------------------


async def test_submit_is_parsed_passed_to_the_service_and_acknowledged() -> None:
    """A submit's fields reach the service as a SubmitRequest for the caller's client."""
    service = FakeService()
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        request = SUBMIT | {
            "id": "r1",
            "priority": "urgent",
            "ref": "order-7",
            "validity_s": 600,
            "schedule_at": 1.5e9,
            "registered_delivery": False,
            "encoding": "ucs2",
        }
        reply = await raw.call(request)
        assert reply == {"ok": True, "id": "r1", "message_id": 1, "segments": 1, "created": True}
        await raw.close()
    assert service.calls[0][1][0] == "demo"
    assert submits(service) == [
        [
            SubmitRequest(
                to="+447700900123",
                sender="ACME",
                text="hi",
                priority=9,
                ref="order-7",
                validity_s=600.0,
                schedule_at=1.5e9,
                registered_delivery=False,
                encoding="ucs2",
            )
        ]
    ]


async def test_a_last_request_without_its_newline_is_answered_after_a_half_close() -> None:
    """`printf '{...}' | nc -U sock`: the request before end of input is performed and
    answered, not dropped because no newline followed it."""
    service = FakeService()
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        await raw.send(json.dumps(SUBMIT | {"id": 1}).encode() + b"\n")
        await raw.send(json.dumps(SUBMIT | {"id": 2}).encode())
        raw.writer.write_eof()
        replies = [await raw.recv(), await raw.recv()]
        assert sorted(r["id"] for r in replies) == [1, 2]
        assert all(r["ok"] for r in replies)
        assert await raw.closed_by_server()
    assert len([m for batch in submits(service) for m in batch]) == 2


def test_submit_options_given_as_null_are_absent_and_the_first_bad_field_is_named() -> None:
    """null options take their defaults; errors name the first bad field in a fixed order
    (unknown fields, then the options, then to / from / text), whatever the JSON order."""
    assert api.parse_submit(
        {"to": "+4477", "from": "A", "text": "x", "priority": None, "encoding": None}
    ) == SubmitRequest(to="+4477", sender="A", text="x")
    cases: list[tuple[dict[str, object], str]] = [
        ({"text": 1, "encoding": "utf8", "priority": 99, "to": "+4"}, "priority"),
        ({"text": 1, "encoding": "utf8", "to": "+4", "from": "A"}, "encoding"),
        ({"text": "x", "from": 3, "bogus": 1}, "bogus"),
        ({"text": "x", "from": 3}, "to"),
        ({"to": "+4", "text": "x", "from": None}, "from"),
    ]
    for request, field in cases:
        with pytest.raises(ApiError) as raised:
            api.parse_submit(request)
        assert raised.value.field == field, request


async def test_submit_refused_by_the_service_is_an_error_reply() -> None:
    """An ApiError from the service comes back with its code and field."""
    async with running_server() as server:
        raw = await Raw.open(server.settings.socket)
        reply = await raw.call(SUBMIT | {"id": 3, "to": "0770"})
        assert reply == {
            "ok": False,
            "id": 3,
            "error": {"code": "invalid_address", "message": "bad number", "field": "to"},
        }


async def test_submit_many_answers_each_message_in_order() -> None:
    """Valid messages go to the service in one call; bad ones fail alone, in their place."""
    service = FakeService()
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        messages = [
            {"to": "+447700900001", "from": "ACME", "text": "a"},
            {"to": "+447700900002", "from": "ACME", "text": "b", "priority": 12},
            {"to": "0770", "from": "ACME", "text": "c"},
            "not an object",
            {"to": "+447700900003", "from": "ACME", "text": "d" * 200},
            {"op": "status", "id": 99, "to": "+447700900004", "from": "ACME", "text": "e"},
        ]
        reply = await raw.call({"op": "submit_many", "id": 9, "messages": messages})
    assert reply["ok"] is True
    assert reply["id"] == 9
    results = reply["results"]
    assert results[0] == {"ok": True, "message_id": 1, "segments": 1, "created": True}
    assert results[1]["ok"] is False
    assert results[1]["error"]["code"] == "invalid_field"
    assert results[1]["error"]["field"] == "priority"
    assert results[2]["error"]["code"] == "invalid_address"
    assert results[3]["error"]["code"] == "invalid_request"
    assert results[4] == {"ok": True, "message_id": 2, "segments": 2, "created": True}
    assert (results[5]["error"]["code"], results[5]["error"]["field"]) == ("invalid_field", "op")
    assert [[r.text for r in call] for call in submits(service)] == [["a", "c", "d" * 200]]


async def test_pipelined_requests_complete_out_of_order_and_echo_their_ids() -> None:
    """A slow request does not hold back one read after it; ids tell the replies apart."""
    service = FakeService(gates={"slow": asyncio.Event()})
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        await raw.send(
            json.dumps(SUBMIT | {"id": "a", "ref": "slow"}).encode()
            + b"\n"
            + json.dumps({"op": "health", "id": "h"}).encode()
            + b"\n"
        )
        assert (await raw.recv())["id"] == "h"
        async with asyncio.timeout(WAIT_S):
            await service.submit_entered.wait()
        assert (await raw.call(SUBMIT | {"id": "b", "ref": "fast"}))["id"] == "b"
        service.gates["slow"].set()
        second = await raw.recv()
        assert (second["id"], second["message_id"]) == ("a", 2)


def _lines(*requests: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(request).encode() + b"\n" for request in requests)


async def test_submits_read_together_reach_the_service_in_one_call() -> None:
    """Single submits that arrive in one read are validated and stored together, as a
    submit_many's messages are; each is still answered on its own, a bad one with its error."""
    service = FakeService()
    observer = RecordingObserver()
    async with running_server(service, observer=observer) as server:
        raw = await Raw.open(server.settings.socket)
        await raw.send(
            _lines(
                SUBMIT | {"id": 1, "to": "+447700900001"},
                {"op": "submit", "id": 2, "to": "+447700900002", "from": "ACME"},
                SUBMIT | {"id": 3, "to": "0770"},
                SUBMIT | {"id": 4, "to": "+447700900004", "text": "d" * 200},
            )
        )
        replies = {reply["id"]: reply for reply in [await raw.recv() for _ in range(4)]}
    assert [[r.to for r in call] for call in submits(service)] == [
        ["+447700900001", "0770", "+447700900004"]
    ]
    assert replies[1] == {"ok": True, "id": 1, "message_id": 1, "segments": 1, "created": True}
    assert replies[2]["error"] == {
        "code": "missing_field",
        "message": "text is required",
        "field": "text",
    }
    assert replies[3]["error"]["code"] == "invalid_address"
    assert replies[4] == {"ok": True, "id": 4, "message_id": 2, "segments": 2, "created": True}
    assert sorted(observer.requests) == [
        ("submit", "invalid_address"),
        ("submit", "missing_field"),
        ("submit", "ok"),
        ("submit", "ok"),
    ]


async def test_each_message_of_a_submit_many_is_counted_with_its_result() -> None:
    """A submit_many is one request answered ok, whatever became of its messages: the
    per-message results (what the refusing-submits alert reads) are counted one by one, and
    single submits count there too."""
    service = FakeService()
    observer = RecordingObserver()
    async with running_server(service, observer=observer) as server:
        raw = await Raw.open(server.settings.socket)
        batch = [SUBMIT, SUBMIT | {"to": "0770"}, {"to": "+447700900002"}, SUBMIT]
        reply = await raw.call({"op": "submit_many", "messages": batch})
        assert [r["ok"] for r in reply["results"]] == [True, False, False, True]
        refused = await raw.call({"op": "submit_many", "messages": "not a list"})
        assert refused["error"]["code"] == "invalid_field"
        single = await raw.call(SUBMIT | {"to": "0770"})
        assert single["error"]["code"] == "invalid_address"
    assert observer.requests == [
        ("submit_many", "ok"),
        ("submit_many", "invalid_field"),
        ("submit", "invalid_address"),
    ]
    assert observer.messages == [
        "ok",
        "invalid_address",
        "missing_field",
        "ok",
        "invalid_field",
        "invalid_address",
    ]


async def test_a_failing_service_fails_each_submit_of_a_read_alone() -> None:
    """A bug behind a batch of submits answers each of them `internal`; one the server refused
    itself keeps its own error, and the connection stays usable."""
    service = FakeService(failure=RuntimeError("boom"))
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        await raw.send(_lines(SUBMIT | {"id": 1}, SUBMIT | {"id": 2, "priority": "soon"}))
        codes = {reply["id"]: reply["error"]["code"] for reply in [await raw.recv() for _ in "ab"]}
        assert codes == {1: "internal", 2: "invalid_field"}
        service.failure = None
        assert (await raw.call(SUBMIT | {"id": 3}))["ok"] is True


async def test_a_refusal_raised_by_the_service_answers_each_submit_of_a_read() -> None:
    """An ApiError the service raises for a whole call is every submit's reply."""
    service = FakeService(failure=ApiError(ErrorCode.shutting_down, "stopping"))
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        await raw.send(_lines(SUBMIT | {"id": 1}, SUBMIT | {"id": 2}))
        codes = {reply["id"]: reply["error"]["code"] for reply in [await raw.recv() for _ in "ab"]}
    assert codes == {1: "shutting_down", 2: "shutting_down"}


async def test_inbound_pages_reach_the_service_with_their_defaults() -> None:
    """`after` defaults to 0 and `limit` to 100; the service's messages are the reply."""
    service = FakeService()
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        first = await raw.call({"op": "inbound", "id": 1})
        assert first == {"ok": True, "id": 1, "messages": [{"id": 1, "text": "hi"}]}
        await raw.call({"op": "inbound", "after": 41, "limit": 1000})
    assert [c for c in service.calls if c[0] == "inbound"] == [
        ("inbound", (0, 100)),
        ("inbound", (41, 1000)),
    ]


async def test_finished_pages_reach_the_service_with_their_cursor() -> None:
    """No `after`: from the start (None), `limit` 100; a `next` given back is read as the
    cursor it stands for; the service's reply is the reply."""
    service = FakeService()
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        first = await raw.call({"op": "finished", "id": 1})
        assert first == {"ok": True, "id": 1, "messages": [], "next": "1.5:7"}
        await raw.call({"op": "finished", "after": "1700000001.25:42", "limit": 1000})
    assert [c for c in service.calls if c[0] == "finished"] == [
        ("finished", (None, 100)),
        ("finished", ((1700000001.25, 42), 1000)),
    ]


async def test_status_cancel_health_stats_and_optout() -> None:
    """Each op reaches the service and its result is the reply; `ok` and `id` stay the server's."""
    service = FakeService()
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        await raw.call(SUBMIT)
        status = await raw.call({"op": "status", "id": 1, "message_id": 1})
        assert {k: status[k] for k in ("ok", "id", "message_id", "state")} == {
            "ok": True,
            "id": 1,
            "message_id": 1,
            "state": "queued",
        }
        cancel = await raw.call({"op": "cancel", "id": 2, "message_id": 1})
        assert cancel["state"] == "cancelled"
        missing = await raw.call({"op": "status", "id": 3, "message_id": 99})
        assert missing["error"]["code"] == "not_found"
        assert (await raw.call({"op": "health"}))["binds_up"] == 2
        assert await raw.call({"op": "stats", "id": 5}) == {"ok": True, "id": 5, "queued": 1}
        add = {"op": "optout", "action": "add", "sender": "ACME", "number": "+447700900123"}
        assert (await raw.call(add))["numbers"] == ["+447700900123"]
        listed = await raw.call({"op": "optout", "action": "list", "sender": "ACME"})
        assert listed["numbers"] == ["+447700900123"]
        no_number = await raw.call({"op": "optout", "action": "remove", "sender": "ACME"})
        assert no_number["error"] == {
            "code": "missing_field",
            "message": "number is required",
            "field": "number",
        }
        everything = await raw.call({"op": "optout", "action": "list"})
        assert everything["ok"] is True
        cursor = {"sender": "ACME", "number": "+447700900123"}
        more = await raw.call({"op": "optout", "action": "list", "after": cursor})
        assert more["ok"] is True
        for bad in ({"sender": "ACME"}, ["ACME", "+447700900123"], {**cursor, "x": 1}):
            wrong = await raw.call({"op": "optout", "action": "list", "after": bad})
            assert wrong["error"]["field"] == "after"
    assert ("optout", ("list", "ACME", None)) in service.calls
    assert ("optout", ("list", "", None)) in service.calls
    assert ("optout", ("list", "", None, ("ACME", "+447700900123"))) in service.calls


async def test_status_and_cancel_name_the_message_by_id_or_by_ref() -> None:
    """A status or cancel names the message by `message_id` or by the `ref` it was submitted
    with: exactly one of them; an unknown ref is not_found on `ref`."""
    service = FakeService()
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        await raw.call(SUBMIT)
        await raw.call(SUBMIT | {"ref": "order-7"})
        status = await raw.call({"op": "status", "id": 1, "ref": "order-7"})
        assert (status["ok"], status["message_id"]) == (True, 2)
        cancel = await raw.call({"op": "cancel", "id": 2, "ref": "order-7"})
        assert (cancel["ok"], cancel["state"]) == (True, "cancelled")
        for request, code, field in (
            ({"ref": "order-8"}, "not_found", "ref"),
            ({"ref": "order-7", "message_id": 2}, "invalid_field", "ref"),
            ({"ref": ""}, "invalid_field", "ref"),
            ({"ref": 7}, "invalid_field", "ref"),
            ({}, "missing_field", "message_id"),
        ):
            reply = await raw.call({"op": "status", "id": 3} | request)
            assert (reply["error"]["code"], reply["error"].get("field")) == (code, field), request
    assert ("message_id_of", "order-7") in service.calls
    assert ("cancel", 2) in service.calls


# --- malformed input ----------------------------------------------------------------------------

MALFORMED: list[tuple[bytes, str, str | None]] = [
    (b"{not json", "invalid_json", None),
    (b'{"op": "health", "x": NaN}', "invalid_json", None),
    (b"[" * 100_000, "invalid_json", None),
    (b'{"op": "health", "x": "\xff"}', "invalid_json", None),
    (b'{"op": "submit", "to": "+447700900123", "to": "+447700900124"}', "invalid_json", None),
    (b'{"op": "health", "x": {"a": 1, "a": 1}}', "invalid_json", None),
    (b"[1, 2]", "invalid_request", None),
    (b'"health"', "invalid_request", None),
    (b'{"id": 1}', "missing_field", "op"),
    (b'{"op": "fly", "id": 1}', "unknown_op", None),
    (b'{"op": 7, "id": 1}', "unknown_op", None),
    (b'{"op": "health", "id": [1]}', "invalid_field", "id"),
    (b'{"op": "health", "id": true}', "invalid_field", "id"),
    (b'{"op": "health", "extra": 1}', "invalid_field", "extra"),
    (b'{"op": "submit", "to": "+4477", "from": "ACME"}', "missing_field", "text"),
    (b'{"op": "submit", "to": "+4477", "text": "x"}', "missing_field", "from"),
    (b'{"op": "submit", "to": null, "from": "A", "text": "x"}', "invalid_field", "to"),
    (b'{"op": "submit", "to": "+4477", "from": "A", "text": 5}', "invalid_field", "text"),
    (b'{"op": "submit", "to": "+4477", "from": "A", "text": ""}', "invalid_field", "text"),
    (b'{"op": "submit", "to": "", "from": "A", "text": "x"}', "invalid_field", "to"),
    (  # a lone surrogate in the text: refused by name, not later as unencodable
        b'{"op": "submit", "to": "+4477", "from": "A", "text": "\\ud83d"}',
        "invalid_field",
        "text",
    ),
    (b'{"op":"submit","to":"+4","from":"A","text":"x","priority":12}', "invalid_field", "priority"),
    (
        b'{"op":"submit","to":"+4","from":"A","text":"x","priority":"high"}',
        "invalid_field",
        "priority",
    ),
    (
        b'{"op":"submit","to":"+4","from":"A","text":"x","priority":true}',
        "invalid_field",
        "priority",
    ),
    (
        b'{"op":"submit","to":"+4","from":"A","text":"x","validity_s":-1}',
        "invalid_field",
        "validity_s",
    ),
    (
        b'{"op":"submit","to":"+4","from":"A","text":"x","validity_s":1e400}',
        "invalid_field",
        "validity_s",
    ),
    (  # a validity in milliseconds by mistake: years, which SMPP's dates cannot carry
        b'{"op":"submit","to":"+4","from":"A","text":"x","validity_s":86400000000}',
        "invalid_field",
        "validity_s",
    ),
    (
        b'{"op":"submit","to":"+4","from":"A","text":"x","schedule_at":"soon"}',
        "invalid_field",
        "schedule_at",
    ),
    (  # a lone surrogate, which no store can keep (it failed the writes batched with it)
        b'{"op":"submit","to":"+4","from":"A","text":"x","ref":"r\\ud800"}',
        "invalid_field",
        "ref",
    ),
    (  # not a key: a client meaning "no ref" would have every later submit taken as a repeat
        b'{"op":"submit","to":"+4","from":"A","text":"x","ref":""}',
        "invalid_field",
        "ref",
    ),
    (
        b'{"op":"optout","action":"list","sender":"\\udfff"}',
        "invalid_field",
        "sender",
    ),
    (
        b'{"op":"submit","to":"+4","from":"A","text":"x","registered_delivery":1}',
        "invalid_field",
        "registered_delivery",
    ),
    (
        b'{"op":"submit","to":"+4","from":"A","text":"x","encoding":"utf8"}',
        "invalid_field",
        "encoding",
    ),
    (b'{"op":"submit","to":"+4","from":"A","text":"x","ref":7}', "invalid_field", "ref"),
    (b'{"op":"submit","to":"+4","from":"A","text":"x","flash":1}', "invalid_field", "flash"),
    (
        b'{"op":"submit","to":"+4","from":"A","text":"x","smart_encoding":"yes"}',
        "invalid_field",
        "smart_encoding",
    ),
    (b'{"op": "status", "message_id": true}', "invalid_field", "message_id"),
    (b'{"op": "status", "message_id": "12"}', "invalid_field", "message_id"),
    (b'{"op": "status", "message_id": 0}', "invalid_field", "message_id"),
    (b'{"op": "cancel"}', "missing_field", "message_id"),
    (b'{"op": "submit_many", "messages": []}', "invalid_field", "messages"),
    (b'{"op": "subscribe", "events": ["gossip"]}', "invalid_field", "events"),
    (b'{"op": "optout", "action": "purge", "sender": "A"}', "invalid_field", "action"),
    (b'{"op": "inbound", "after": -1}', "invalid_field", "after"),
    (b'{"op": "inbound", "after": "7"}', "invalid_field", "after"),
    (b'{"op": "inbound", "limit": 0}', "invalid_field", "limit"),
    (b'{"op": "inbound", "limit": 1001}', "invalid_field", "limit"),
    (b'{"op": "inbound", "since": 3}', "invalid_field", "since"),
    (b'{"op": "finished", "after": 7}', "invalid_field", "after"),
    (b'{"op": "finished", "after": "yesterday"}', "invalid_field", "after"),
    (b'{"op": "finished", "after": "inf:3"}', "invalid_field", "after"),
    (b'{"op": "finished", "after": "1.5:-3"}', "invalid_field", "after"),
    (b'{"op": "finished", "limit": 0}', "invalid_field", "limit"),
]


@pytest.mark.parametrize(("line", "code", "field"), MALFORMED)
async def test_malformed_request_gets_its_error_and_the_connection_stays_usable(
    line: bytes, code: str, field: str | None
) -> None:
    """Each malformed line is answered with its own code (naming the field) and nothing breaks."""
    service = FakeService()
    async with running_server(service, max_line_bytes=1024 * 1024) as server:
        raw = await Raw.open(server.settings.socket)
        reply = await raw.call(line + b"\n")
        assert reply["ok"] is False
        assert reply["error"]["code"] == code
        assert reply["error"].get("field") == field
        assert await raw.call({"op": "health", "id": "after"}) == {
            "ok": True,
            "id": "after",
            "status": "ok",
            "binds_up": 2,
        }
    assert [c for c in service.calls if c[0] != "health"] == []


async def test_oversized_line_is_refused_before_its_end_and_the_next_request_works() -> None:
    """Passing max_line_bytes is answered at once; the rest of the line is discarded."""
    async with running_server(max_line_bytes=1024) as server:
        raw = await Raw.open(server.settings.socket)
        await raw.send(b'{"op": "health", "pad": "' + b"x" * 5000)
        reply = await raw.recv()
        assert reply == {
            "ok": False,
            "id": None,
            "error": {"code": "line_too_long", "message": "request line longer than 1024 bytes"},
        }
        await raw.send(b"x" * 100_000)
        await raw.send(b'"}\n{"op": "health", "id": 2}\n')
        assert (await raw.recv())["id"] == 2


async def test_internal_error_hides_its_details_and_is_logged_once_without_them() -> None:
    """An unexpected exception answers `internal`; neither the reply nor the log quote it."""
    secret = "+447700900123 your code is 9876"
    service = FakeService(failure=RuntimeError(secret))
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        with structlog.testing.capture_logs() as logs:
            reply = await raw.call({"op": "status", "id": 1, "message_id": 5})
        assert reply["error"]["code"] == "internal"
        assert "9876" not in json.dumps(reply)
        assert "RuntimeError" not in json.dumps(reply)
        errors = [e for e in logs if e["event"] == "api.internal_error"]
        assert len(errors) == 1
        assert errors[0]["error"] == "RuntimeError"
        assert errors[0]["op"] == "status"
        assert "9876" not in repr(logs)
        assert "447700900123" not in repr(logs)
        service.failure = None
        assert (await raw.call({"op": "health"}))["ok"] is True


# --- limits -------------------------------------------------------------------------------------


async def test_idle_connection_is_closed() -> None:
    """A connection silent for idle_timeout_s, with nothing in progress, is closed."""
    async with running_server(idle_timeout_s=0.2) as server:
        raw = await Raw.open(server.settings.socket)
        assert (await raw.call({"op": "health"}))["ok"] is True
        assert await raw.closed_by_server()


class _ClockLoop:
    """What the idle check asks of its loop: the time, set by the test, and timers, noted."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[float] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: object) -> None:
        self.timers.append(when)


def test_the_idle_period_counts_from_the_last_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that finds a read within the period waits a period from that read; one with a
    request in progress waits a whole period more; only a whole period of silence with nothing
    in progress ends the read."""
    loop = _ClockLoop()
    monkeypatch.setattr(asyncio, "get_running_loop", lambda: loop)
    server = SimpleNamespace(settings=ApiSettings(socket=Path("/unused"), idle_timeout_s=10.0))
    connection = api._Connection(cast(Any, server), DEMO, 1000, cast(Any, None), cast(Any, None))
    interrupted: list[bool] = []
    monkeypatch.setattr(connection, "_interrupt", lambda: interrupted.append(True))
    connection._reading = True
    connection._last_read = 95.0
    connection._idle_check()  # at 100: 5 s since the last read
    assert (loop.timers, interrupted) == ([105.0], [])
    loop.now, connection._pending = 105.0, 1
    connection._idle_check()
    assert (loop.timers, interrupted) == ([105.0, 115.0], [])
    loop.now, connection._pending = 115.0, 0
    connection._idle_check()
    assert (loop.timers, interrupted, connection._idle) == ([105.0, 115.0], [True], True)


async def test_connection_with_a_request_in_progress_is_not_idle() -> None:
    """The idle timer does not cut off a reply the client is waiting for."""
    service = FakeService(gates={"slow": asyncio.Event()})
    async with running_server(service, idle_timeout_s=0.1) as server:
        raw = await Raw.open(server.settings.socket)
        await raw.send(SUBMIT | {"id": 1, "ref": "slow"})
        # Several idle periods pass while the request is held; then it is released.
        released = asyncio.get_running_loop().call_later(0.35, service.gates["slow"].set)
        reply = await raw.recv()
        released.cancel()
        assert reply["ok"] is True


async def test_connections_over_the_maximum_are_told_and_closed() -> None:
    """The connection past max_connections gets too_many_connections, then EOF."""
    observer = RecordingObserver()
    async with running_server(max_connections=1, observer=observer) as server:
        first = await Raw.open(server.settings.socket)
        assert (await first.call({"op": "health"}))["ok"] is True
        second = await Raw.open(server.settings.socket)
        refusal = await second.recv()
        assert refusal["error"]["code"] == "too_many_connections"
        assert await second.closed_by_server()
        assert (await first.call({"op": "health"}))["ok"] is True
        assert server.connections == 1
    assert observer.refused == ["too_many_connections"]


async def test_one_client_cannot_take_every_connection() -> None:
    """Past max_connections_per_client a client's next connection is refused, with room left
    for others under max_connections; one closing makes room again."""
    observer = RecordingObserver()
    limits: dict[str, Any] = {"max_connections": 10, "max_connections_per_client": 2}
    async with running_server(observer=observer, **limits) as server:
        first = await Raw.open(server.settings.socket)
        second = await Raw.open(server.settings.socket)
        for raw in (first, second):
            assert (await raw.call({"op": "health"}))["ok"] is True
        third = await Raw.open(server.settings.socket)
        refusal = await third.recv()
        assert refusal["error"]["code"] == "too_many_connections"
        assert "has 2 connections open already" in refusal["error"]["message"]
        assert await third.closed_by_server()
        first.writer.write_eof()  # the server ends the connection, and frees its room first
        assert await first.closed_by_server()
        again = await Raw.open(server.settings.socket)
        assert (await again.call({"op": "health"}))["ok"] is True
    assert observer.refused == ["too_many_connections"]


async def test_requests_past_the_pending_cap_are_refused_at_once() -> None:
    """With max_pending_per_connection in progress, one more gets too_many_pending, and its
    message counts as refused (smppd_api_messages_total), as a submit_many's each do."""
    service = FakeService(gates={"slow": asyncio.Event()})
    observer = RecordingObserver()
    async with running_server(service, observer=observer, max_pending_per_connection=2) as server:
        raw = await Raw.open(server.settings.socket)
        for rid in (1, 2, 3):
            await raw.send(SUBMIT | {"id": rid, "ref": "slow"})
        refusal = await raw.recv()
        assert refusal["id"] == 3
        assert refusal["error"]["code"] == "too_many_pending"
        service.gates["slow"].set()
        assert {(await raw.recv())["id"], (await raw.recv())["id"]} == {1, 2}
        assert (await raw.call(SUBMIT | {"id": 4}))["ok"] is True
        many = {"op": "submit_many", "id": 5, "messages": [SUBMIT] * 3}
        assert (await raw.call(many))["error"]["code"] == "invalid_field"  # never fits
    assert sorted(observer.messages) == ["invalid_field"] * 3 + ["ok"] * 3 + ["too_many_pending"]


class HeldStatus(FakeService):
    """status waits for `release`; how many were in progress at once is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.running = 0
        self.most_running = 0
        self.cap_reached = asyncio.Event()

    async def status(self, client: ClientIdentity, message_id: int) -> dict[str, Any]:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        if self.running == api.RUNNING_PER_CONNECTION:
            self.cap_reached.set()
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return {"message_id": message_id, "state": "queued"}


async def test_a_connection_runs_a_bounded_number_of_requests_at_once() -> None:
    """A peer that pipelines reads faster than it takes replies: each running request holds
    its reply, so no more than RUNNING_PER_CONNECTION start; reading the rest waits, and
    every request is still answered, in order."""
    service = HeldStatus()
    count = 3 * api.RUNNING_PER_CONNECTION
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        lines = [
            json.dumps({"op": "status", "id": i, "message_id": i + 1}).encode() + b"\n"
            for i in range(count)
        ]
        await raw.send(b"".join(lines))  # one write: read by the daemon in one chunk
        async with asyncio.timeout(WAIT_S):
            await service.cap_reached.wait()
        service.release.set()
        replies = [await raw.recv() for _ in range(count)]
    assert [r["id"] for r in replies] == list(range(count))
    assert all(r["ok"] for r in replies)
    assert service.most_running == api.RUNNING_PER_CONNECTION


async def test_a_finished_cursor_out_of_range_is_an_invalid_field() -> None:
    """An id past SQLite's integers or a negative time: invalid_field on `after`, not internal."""
    service = FakeService()
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        for after in ("1.5:9223372036854775808", "-1e308:0", "nan:1", "1.5:-1"):
            reply = await raw.call({"op": "finished", "after": after})
            assert reply["error"]["code"] == "invalid_field", after
            assert reply["error"]["field"] == "after"
        ok = await raw.call({"op": "finished", "after": "1.5:9223372036854775807"})
        assert ok["ok"]
    assert [c for c in service.calls if c[0] == "finished"] == [
        ("finished", ((1.5, 2**63 - 1), 100))
    ]


async def test_the_pending_caps_count_the_messages_of_a_submit_many() -> None:
    """What requests in progress hold grows with their messages, so the caps count those: per
    connection and for the daemon. A call larger than a connection may hold is refused for
    good (invalid_field, not a retry), before anything of it is parsed or stored: the line
    cap does not bound it, `[1,1,...]` fitting half a million messages in a line."""
    service = FakeService(gates={"slow": asyncio.Event()})
    limits: dict[str, Any] = {"max_pending_per_connection": 5, "max_pending": 8}

    def many(rid: int, count: int, ref: str | None = None) -> dict[str, Any]:
        messages = [{"to": "+447700900123", "from": "ACME", "text": "hi"} for _ in range(count)]
        if ref is not None:
            messages[0]["ref"] = ref
        return {"op": "submit_many", "id": rid, "messages": messages}

    async with running_server(service, **limits) as server:
        first = await Raw.open(server.settings.socket)
        await first.send(many(1, 4, ref="slow"))  # held: 4 in progress
        async with asyncio.timeout(WAIT_S):
            await service.submit_entered.wait()
        over = await first.call(many(2, 2))
        assert over["error"]["code"] == "too_many_pending"
        assert "on this connection" in over["error"]["message"]
        second = await Raw.open(server.settings.socket)
        crowded = await second.call(many(3, 5))
        assert crowded["error"]["code"] == "too_many_pending"
        assert "in the daemon" in crowded["error"]["message"]
        fits = await second.call(many(4, 4))  # 4 + 4 = 8: at the daemon's cap, not past it
        assert [r["ok"] for r in fits["results"]] == [True] * 4
        service.gates["slow"].set()
        assert (await first.recv())["id"] == 1
        alone = await second.call(many(5, 6))  # more than a connection's cap, on its own
        assert alone["error"]["code"] == "invalid_field"
        assert alone["error"]["field"] == "messages"
        assert "at most 5 messages" in alone["error"]["message"]
        submitted = [len(args[1]) for name, args in service.calls if name == "submit"]
        assert submitted == [4, 4]  # calls 1 and 4; nothing of call 5 reached the service
        at_cap = await second.call(many(6, 5))
        assert [r["ok"] for r in at_cap["results"]] == [True] * 5


async def test_unknown_uid_is_unauthorized_and_closed() -> None:
    """A peer whose uid maps to no client is refused and disconnected."""
    stranger_only = ClientTable(by_uid={own_uid() + 1: DEMO})
    service = FakeService()
    async with running_server(service, clients=stranger_only) as server:
        raw = await Raw.open(server.settings.socket)
        refusal = await raw.recv()
        assert refusal["ok"] is False
        assert refusal["error"]["code"] == "unauthorized"
        assert await raw.closed_by_server()
    assert service.calls == []


async def test_a_loop_of_refused_connections_is_one_log_line() -> None:
    """A local process reconnecting as fast as it can: each is refused and counted, and the
    log gets one line per 10 s rather than one per attempt."""
    stranger_only = ClientTable(by_uid={own_uid() + 1: DEMO})
    observer = RecordingObserver()
    with structlog.testing.capture_logs() as logs:
        async with running_server(clients=stranger_only, observer=observer) as server:
            for _ in range(30):
                raw = await Raw.open(server.settings.socket)
                assert (await raw.recv())["error"]["code"] == "unauthorized"
                await raw.close()
    assert observer.refused == ["unauthorized"] * 30
    assert len([e for e in logs if e["event"] == "api.connection_refused"]) == 1


async def test_listed_uid_acts_as_its_client() -> None:
    """SO_PEERCRED picks the client configured for our uid over the any-uid one."""
    mine = ClientIdentity(name="mine", senders=frozenset({"ACME"}))
    service = FakeService()
    clients = ClientTable(by_uid={own_uid(): mine}, any_uid=DEMO)
    async with running_server(service, clients=clients) as server:
        raw = await Raw.open(server.settings.socket)
        await raw.call({"op": "stats"})
    assert service.calls == [("stats", "mine")]


def test_client_table_from_config_entries() -> None:
    """Config clients become identities by uid, with one optional any-uid client."""

    class Entry:
        def __init__(self, name: str, uids: tuple[int, ...], any_uid: bool, cap: int | None):
            self.name, self.uids, self.any_uid = name, uids, any_uid
            self.senders = ("ACME",)
            self.priority_max = cap
            self.max_queued = 500 if any_uid else None
            self.smart_encoding = any_uid
            self.validity_s = 600.0 if any_uid else None

    table = ClientTable.from_config(
        [Entry("otp", (1000, 1001), False, 1), Entry("web", (), True, None)], {"ACME": "otp"}
    )
    otp = table.identify(1001)
    assert otp == ClientIdentity(
        "otp", frozenset({"ACME"}), max_priority=5, owned=frozenset({"ACME"})
    )
    web = table.identify(4242)
    assert web is not None
    assert (web.name, web.max_priority, web.owned, web.max_queued) == ("web", 9, frozenset(), 500)
    assert (otp.smart_encoding, web.smart_encoding) == (False, True)
    assert (otp.validity_s, web.validity_s) == (None, 600.0)
    assert ClientTable.from_config([Entry("otp", (7,), False, 3)]).identify(8) is None
    assert [max_priority_for_flag(f) for f in (0, 1, 2, 3)] == [2, 5, 8, 9]


# --- the socket file ----------------------------------------------------------------------------


async def test_socket_gets_the_configured_mode_and_is_removed_on_close() -> None:
    """The socket file is 0660 by default and gone after close()."""
    async with running_server() as server:
        path = server.settings.socket
        info = path.stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert sorted(p.name for p in path.parent.iterdir()) == ["api.sock", "api.sock.lock"]
    assert not path.exists()


@pytest.mark.parametrize("long_path", [False, True], ids=["staged", "bound in place"])
async def test_stale_socket_is_replaced(long_path: bool) -> None:
    """A socket file left by a dead process is replaced by a working one, also on a path too
    long for the staging name beside it (the socket is then bound where it is)."""
    with short_tmpdir() as top:
        directory = top
        if long_path:  # a 97-byte folder: its staging name (+13) would pass sun_path's 107
            directory = top / ("d" * (97 - len(os.fsencode(top)) - 1))
            directory.mkdir()
        path = directory / "a.sock"
        assert not long_path or len(os.fsencode(path)) == 104
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(path))
        stale.close()  # the file stays, nobody listens
        server = ApiServer(
            ApiSettings(socket=path, mode=0o600), ClientTable(any_uid=DEMO), FakeService()
        )
        await server.start()
        try:
            raw = await Raw.open(path)
            assert (await raw.call({"op": "health"}))["ok"] is True
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        finally:
            await close_raw_connections()
            await server.close()


async def test_a_path_that_is_not_a_socket_is_never_removed() -> None:
    """start() refuses a regular file at the socket path and leaves it alone."""
    with short_tmpdir() as directory:
        path = directory / "api.sock"
        path.write_text("precious")
        server = ApiServer(ApiSettings(socket=path), ClientTable(any_uid=DEMO), FakeService())
        with pytest.raises(ApiServerError, match="not a socket"):
            await server.start()
        assert path.read_text() == "precious"


async def test_a_socket_path_that_cannot_be_looked_at_is_a_clear_error() -> None:
    """A directory on the way that is a file (or that this user may not enter): an
    ApiServerError naming the path and why, not a traceback."""
    with short_tmpdir() as directory:
        (directory / "run").write_text("")
        path = directory / "run" / "api.sock"
        server = ApiServer(ApiSettings(socket=path), ClientTable(any_uid=DEMO), FakeService())
        with pytest.raises(ApiServerError) as info:
            await server.start()
        assert str(info.value).startswith(f"{path}: cannot use the API socket path: [Errno 20]")


async def test_a_socket_in_use_is_not_taken_over() -> None:
    """A second server on a live socket refuses to start; the first keeps serving."""
    async with running_server() as first:
        path = first.settings.socket
        second = ApiServer(ApiSettings(socket=path), ClientTable(any_uid=DEMO), FakeService())
        with pytest.raises(ApiServerError, match="in use"):
            await second.start()
        raw = await Raw.open(path)
        assert (await raw.call({"op": "health"}))["ok"] is True


async def test_a_socket_path_being_taken_is_not_taken_twice() -> None:
    """Two daemons starting at once both found the path free, and the second's rename took
    the first one's socket unnoticed: the path's lock, held from before the check to the
    close, makes the second refuse, naming the holder; once the first closes it is free."""
    with short_tmpdir() as directory:
        path = directory / "api.sock"
        starting = PathLock.take(path)  # another daemon between its check and its bind
        server = ApiServer(ApiSettings(socket=path), ClientTable(any_uid=DEMO), FakeService())
        with pytest.raises(ApiServerError) as info:
            await server.start()
        assert str(info.value) == f"{path} is in use by another process (pid {os.getpid()})"
        assert not path.exists()
        starting.release()
        async with running_server() as first:
            path = first.settings.socket
            second = ApiServer(ApiSettings(socket=path), ClientTable(any_uid=DEMO), FakeService())
            with pytest.raises(ApiServerError, match=r"in use by another process \(pid \d+\)"):
                await second.start()
            await first.close()
            await second.start()  # the first no longer listens: the path is free
            await second.close()


# --- subscriptions ------------------------------------------------------------------------------


async def test_subscriber_gets_an_ack_then_events() -> None:
    """After the ack, the service's events arrive as `{"event": kind, ...}` lines."""
    service = FakeService()
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        ack = await raw.call({"op": "subscribe", "id": "s", "events": ["receipt", "inbound"]})
        assert ack == {"ok": True, "id": "s", "events": ["inbound", "receipt"]}
        subscription = await service.subscribed()
        assert subscription.kinds == {"receipt", "inbound"}
        subscription.publish(Event("receipt", "demo", {"message_id": 4, "state": "delivered"}))
        assert await raw.recv() == {"event": "receipt", "message_id": 4, "state": "delivered"}
        # Requests still work on a subscribed connection.
        assert (await raw.call({"op": "health", "id": 1}))["id"] == 1
        again = await raw.call({"op": "subscribe", "id": 2})
        assert again["error"]["code"] == "invalid_request"
        await raw.close()
        async with asyncio.timeout(WAIT_S):
            await subscription.closed.wait()


async def test_subscription_ended_by_the_service_closes_the_connection() -> None:
    """A subscriber dropped by the service hears `dropped`, then the connection ends."""
    service = FakeService(subscription_size=1)
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        await raw.call({"op": "subscribe"})
        subscription = await service.subscribed()
        subscription.publish(Event("state", "demo", {"n": 1}))
        subscription.publish(Event("state", "demo", {"n": 2}))  # over its bound: dropped
        assert await raw.recv() == {"event": "state", "n": 1}
        assert (await raw.recv())["event"] == "dropped"
        assert await raw.closed_by_server()


async def test_slow_subscriber_is_dropped_without_the_server_buffering_its_events() -> None:
    """A subscriber that stops reading costs a socket buffer: the server stops pulling events,
    the service drops the subscription, and the write deadline closes the connection."""
    service = FakeService(subscription_size=32)
    loop = asyncio.get_running_loop()
    async with running_server(service, write_timeout_s=0.5) as server:
        # A plain socket: an asyncio stream would keep reading into its own buffer.
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stuck.setblocking(False)
        await loop.sock_connect(stuck, str(server.settings.socket))
        await loop.sock_sendall(stuck, b'{"op": "subscribe"}\n')
        subscription = await service.subscribed()
        payload = "x" * 4096
        published = 0
        async with asyncio.timeout(WAIT_S):
            while subscription.publish(Event("state", "demo", {"pad": payload})):
                published += 1
                await asyncio.sleep(0)  # let the server pull what it can
            # The write deadline gives up on the peer and ends the subscription.
            await subscription.closed_by_server.wait()
        assert subscription.dropped
        # Pulled events are bounded by the socket buffers, not by how many were published.
        assert subscription.pulled < 200
        assert published < 300
        async with asyncio.timeout(WAIT_S):
            with contextlib.suppress(ConnectionResetError):
                while await loop.sock_recv(stuck, 1 << 20):
                    pass  # what the kernel held, then the end
        stuck.close()


class BigPages(FakeService):
    """A service whose inbound pages are 1 MB, noting for each whether the peer was dropped
    yet when it was asked."""

    def __init__(self, observer: RecordingObserver) -> None:
        super().__init__()
        self.observer = observer
        self.asked: list[bool] = []
        self.ten_asked = asyncio.Event()

    async def inbound(self, client: ClientIdentity, after: int, limit: int) -> dict[str, Any]:
        self.asked.append(bool(self.observer.dropped))
        if len(self.asked) == 10:
            self.ten_asked.set()
        return {"messages": [{"id": after + 1, "text": "x" * 1_000_000}]}


async def test_pages_for_a_peer_that_does_not_read_are_made_one_at_a_time() -> None:
    """Ten pipelined page reads from a peer that reads nothing: the second page is not made
    while the first waits to be written, so what the peer holds in the daemon is one page
    (32 of them at once held ~100 MB a connection). The others run once it is dropped."""
    observer = RecordingObserver()
    service = BigPages(observer)
    loop = asyncio.get_running_loop()
    async with running_server(service, observer=observer, write_timeout_s=0.5) as server:
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stuck.setblocking(False)
        await loop.sock_connect(stuck, str(server.settings.socket))
        await loop.sock_sendall(stuck, b'{"op": "inbound"}\n' * 10)
        async with asyncio.timeout(WAIT_S):
            await service.ten_asked.wait()
        assert observer.dropped == ["write_timeout"]
        assert service.asked == [False] + [True] * 9
        stuck.close()


async def test_a_client_that_stops_reading_is_not_read_from_until_it_is_dropped() -> None:
    """Replies wait behind the one the peer is not taking, and the server stops reading: what
    a stuck client costs is bounded by what it sent before it stopped reading, not by what it
    goes on sending. The write deadline then drops it, and says so."""
    observer = RecordingObserver()
    loop = asyncio.get_running_loop()
    # Limits that let every request start: the point is the replies, not too_many_pending.
    limits: dict[str, Any] = {"max_pending_per_connection": 10**6, "max_pending": 10**7}
    async with running_server(observer=observer, write_timeout_s=1.0, **limits) as server:
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stuck.setblocking(False)
        await loop.sock_connect(stuck, str(server.settings.socket))
        # Each line is 8 KB of messages the server refuses one by one: 180 KB of reply.
        line = json.dumps({"op": "submit_many", "messages": [{}] * 2000}).encode() + b"\n"
        sending = asyncio.ensure_future(loop.sock_sendall(stuck, line * 400))
        async with asyncio.timeout(WAIT_S):
            await observer.has_dropped.wait()
        assert observer.dropped == ["write_timeout"]
        answered = len(observer.requests)
        assert 1 <= answered <= 16, answered  # a read's worth at most; not one per 30 ms
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        stuck.close()


async def test_close_finishes_requests_in_flight_then_ends_connections() -> None:
    """close() stops accepting, lets a held request answer, then closes and removes the socket."""
    service = FakeService(gates={"slow": asyncio.Event()})
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        await raw.call({"op": "subscribe"})
        await raw.send(SUBMIT | {"id": "held", "ref": "slow"})
        async with asyncio.timeout(WAIT_S):
            await service.submit_entered.wait()
        closing = asyncio.create_task(server.close())
        await asyncio.sleep(0)
        service.gates["slow"].set()
        reply = await raw.recv()
        assert (reply["id"], reply["ok"]) == ("held", True)
        assert await raw.closed_by_server()
        await raw.close()
        await closing
        assert not server.settings.socket.exists()
        with pytest.raises(OSError, match=r"No such file|Connection refused"):
            await Raw.open(server.settings.socket)


async def test_observer_hears_each_request_by_op_and_result() -> None:
    """Metrics hooks get the op (or `invalid`) and `ok` or the error code."""
    observer = RecordingObserver()
    async with running_server(observer=observer) as server:
        raw = await Raw.open(server.settings.socket)
        await raw.call(SUBMIT)
        await raw.call(SUBMIT | {"to": "0770"})
        await raw.call(b"nonsense\n")
        await raw.call({"op": "nope"})
        await raw.call({"op": "status", "message_id": 42})
    assert observer.requests == [
        ("submit", "ok"),
        ("submit", "invalid_address"),
        ("invalid", "invalid_json"),
        ("invalid", "unknown_op"),
        ("status", "not_found"),
    ]


# --- with the real config section and event hub -------------------------------------------------


async def test_settings_and_clients_from_the_config_section() -> None:
    """ApiSettings and ClientTable take the config's api section as loaded."""
    with short_tmpdir() as directory:
        section = ApiConfig(
            socket=directory / "s.sock",
            mode=0o640,
            max_pending_per_connection=7,
            clients=(
                ApiClient(name="otp", uids=(own_uid(),), senders=("ACME",), priority_max=3),
                ApiClient(name="web", any_uid=True),
            ),
        )
        settings = ApiSettings.from_config(section, write_timeout_s=2.0)
        assert (settings.mode, settings.max_pending_per_connection) == (0o640, 7)
        assert settings.write_timeout_s == 2.0
        service = FakeService()
        server = ApiServer(settings, ClientTable.from_config(section.clients), service)
        await server.start()
        try:
            raw = await Raw.open(section.socket)
            await raw.call({"op": "stats"})
            assert stat.S_IMODE(section.socket.stat().st_mode) == 0o640
        finally:
            await close_raw_connections()
            await server.close()
    assert service.calls == [("stats", "otp")]


class HubService(FakeService):
    """The stand-in service with the real event hub behind subscribe."""

    def __init__(self, hub: EventHub) -> None:
        super().__init__()
        self.hub = hub

    def subscribe(self, client: ClientIdentity, kinds: frozenset[str]) -> Any:
        subscription = self.hub.subscribe(client.name, kinds)
        self.has_subscription.set()
        return subscription


async def test_events_from_the_hub_reach_only_their_clients_subscriber() -> None:
    """With the real hub: our client's events arrive in order, another client's never do."""
    hub = EventHub(queue_size=8)
    service = HubService(hub)
    async with running_server(service) as server:
        raw = await Raw.open(server.settings.socket)
        await raw.call({"op": "subscribe", "events": ["inbound"]})
        hub.publish(Event("inbound", "other", {"n": 0}))
        hub.publish(Event("receipt", "demo", {"n": 1}))
        hub.publish(Event("inbound", "demo", {"n": 2}))
        assert await raw.recv() == {"event": "inbound", "n": 2}
        for n in range(3, 20):  # past the hub's bound before the server can pull them all
            hub.publish(Event("inbound", "demo", {"n": n}))
        lines = []
        while (line := await raw.recv())["event"] != "dropped":
            lines.append(line["n"])
        assert lines == list(range(3, 3 + len(lines)))
        assert await raw.closed_by_server()
        assert hub.subscriber_count() == 0
