"""The control interface: newline-delimited JSON over TCP or a Unix socket."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from smppd.pdu.pdus import DeliverSm, SubmitSm, SubmitSmResp, Unbind
from smppd.pdu.status import CommandStatus as S
from tools.fake_smsc import EsmeClient, FakeSmsc, SmscConfig
from tools.fake_smsc.control import MAX_CLIENTS, MAX_LINE, ControlSocketError


class Control:
    """A line-at-a-time JSON client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, address: str) -> Control:
        async with asyncio.timeout(5):
            if address.startswith("127.0.0.1:"):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", int(address.rsplit(":", 1)[1])
                )
            else:
                reader, writer = await asyncio.open_unix_connection(address)
        return cls(reader, writer)

    async def call(self, request: dict[str, Any] | bytes) -> dict[str, Any]:
        line = request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n"
        self.writer.write(line)
        async with asyncio.timeout(5):
            reply: dict[str, Any] = json.loads(await self.reader.readline())
        return reply

    async def ok(self, op: str, **fields: Any) -> Any:
        reply = await self.call({"op": op, "id": op, **fields})
        assert reply["ok"], reply
        assert reply["id"] == op
        return reply["result"]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture(params=["tcp", "unix"])
async def smsc(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FakeSmsc]:
    where = "0" if request.param == "tcp" else str(tmp_path / "ctl.sock")
    async with FakeSmsc(SmscConfig(port=0, control=where)) as server:
        yield server


@pytest.fixture
async def control(smsc: FakeSmsc) -> AsyncIterator[Control]:
    assert smsc.control_address is not None
    client = await Control.open(smsc.control_address)
    yield client
    await client.close()


async def test_stats_set_and_records(smsc: FakeSmsc, control: Control) -> None:
    """`set` changes knobs the wire then shows; `stats` and `records` report what came."""
    result = await control.ok("set", submit_errors={"ESME_RTHROTTLED": 1.0}, window=5)
    assert result["faults"]["window"] == 5
    async with await EsmeClient.connect(smsc.host, smsc.port) as client:
        await client.bind()
        refused = await client.submit(SubmitSm(destination_addr="4470", short_message=b"no"))
        assert refused.command_status == S.ESME_RTHROTTLED
        await control.ok("set", submit_errors={})
        await client.submit(SubmitSm(destination_addr="4470", short_message=b"yes"))
    stats = await control.ok("stats")
    assert (stats["segments"], stats["messages"]) == (2, 1)
    assert stats["statuses"] == {"ESME_ROK": 1, "ESME_RTHROTTLED": 1}
    assert stats["connections"][0]["max_outstanding"] == 1
    messages = await control.ok("records")
    assert [m["text"] for m in messages["items"]] == ["yes"]
    segments = await control.ok("records", kind="segments", offset=1, limit=5)
    assert (segments["total"], len(segments["items"])) == (2, 1)
    assert segments["items"][0]["text"] == "yes"


async def test_set_receipts(smsc: FakeSmsc, control: Control) -> None:
    """`set` with `receipts` changes the receipt settings."""
    await control.ok("set", receipts={"duplicate": True, "outcomes": {"EXPIRED": 1}})
    assert smsc.receipts.duplicate
    assert dict(smsc.receipts.outcomes) == {"EXPIRED": 1.0}


async def test_receipt_on_demand(smsc: FakeSmsc, control: Control) -> None:
    """With `auto: false` nothing is sent until `receipt` asks, then the stat asked for:
    an intermediate ACCEPTD first, then UNDELIV; unknown ids and stats are refused by name."""
    await control.ok("set", receipts={"auto": False})
    async with await EsmeClient.connect(smsc.host, smsc.port) as client:
        await client.bind()
        quiet = SubmitSm(destination_addr="4470", registered_delivery=1, short_message=b"a")
        first = await client.submit(quiet)
        second = await client.submit(quiet)
        unasked = await client.submit(SubmitSm(destination_addr="4470", short_message=b"b"))
        result = await control.ok("receipt", message_id=second.message_id, stat="ACCEPTD")
        assert result == {"message_id": second.message_id, "stat": "ACCEPTD"}
        await control.ok("receipt", message_id=second.message_id, stat="UNDELIV")
        seen = []
        for _ in range(2):  # the first's would come first had it been sent
            pdu = await client.expect(DeliverSm)
            client.ack(pdu)
            seen.append(pdu.short_message.decode())
        assert [f"id:{second.message_id} " in text for text in seen] == [True, True]
        assert ["stat:ACCEPTD" in seen[0], "stat:UNDELIV" in seen[1]] == [True, True]
        tracked = smsc.tracker.get(first.message_id)
        assert tracked is not None
        assert not tracked.is_final  # still ENROUTE: nothing settled it
        for fields, message in [
            ({"message_id": unasked.message_id}, "asked for no receipt"),
            ({"message_id": "nope"}, "no message 'nope'"),
        ]:
            reply = await control.call({"op": "receipt", **fields})
            assert reply["error"]["code"] == "not_found"
            assert message in reply["error"]["message"]
        reply = await control.call({"op": "receipt", "message_id": first.message_id, "stat": "OK"})
        assert reply["error"]["code"] == "bad_request"
        assert "stat must be one of DELIVRD" in reply["error"]["message"]


async def test_a_bad_inject_mo_queues_nothing(smsc: FakeSmsc, control: Control) -> None:
    """bad_request is a refusal: sent again corrected, the MO goes once."""
    for bad in ({"wait": "yes"}, {"wait": True, "timeout": -1}):
        request = {"op": "inject_mo", "source": "447700900001", "destination": "ACME"}
        reply = await control.call({**request, "text": "hi", **bad})
        assert reply["error"]["code"] == "bad_request"
    stats = await control.ok("stats")
    assert stats["outbox"]["mo"]["queued"] == 0


async def test_inject_mo_waits_for_the_ack(smsc: FakeSmsc, control: Control) -> None:
    """`inject_mo` with wait returns once the bound client acknowledged every segment."""
    async with await EsmeClient.connect(smsc.host, smsc.port) as client:
        await client.bind()
        reply = asyncio.ensure_future(
            control.ok(
                "inject_mo",
                source="+447700900123",
                destination="12345",
                text="STOP " * 50,  # two segments
                wait=True,
            )
        )
        for _ in range(2):
            client.ack(await client.expect(DeliverSm))
        assert (await reply) == {"queued": True, "acked": True}


async def test_wait_for_unbind_drop_and_send_raw(smsc: FakeSmsc, control: Control) -> None:
    """`wait_for` blocks until the count; `unbind`, `send_raw` and `drop` act on binds."""
    async with await EsmeClient.connect(smsc.host, smsc.port) as client:
        await client.bind()
        waiting = asyncio.ensure_future(control.ok("wait_for", count=1))
        await client.submit(SubmitSm(destination_addr="4470", short_message=b"x"))
        assert await waiting == {"messages": 1, "segments": 1}
        assert await control.ok("send_raw", hex="0000001080000015000000000000002a") == {
            "connections": 1
        }
        assert (await client.read()).sequence_number == 0x2A
        assert await control.ok("unbind") == {"connections": 1}
        await client.expect(Unbind)
        assert await control.ok("drop", bind_id=1) == {"connections": 1}
        assert await client.wait_closed() == []
    timeout = await control.call({"op": "wait_for", "count": 5, "timeout": 0.01})
    assert timeout["error"]["code"] == "timeout"


@pytest.mark.parametrize(
    ("request_line", "code"),
    [
        (b"not json\n", "bad_json"),
        (b"[1, 2]\n", "bad_request"),
        (b'{"op": "launch"}\n', "unknown_op"),
        (b'{"op": "set", "hang": "maybe"}\n', "bad_request"),
        (b'{"op": "set", "speed": 1}\n', "bad_request"),
        (b'{"op": "inject_mo", "source": 1}\n', "bad_request"),
        (b'{"op": "records", "kind": "everything"}\n', "bad_request"),
        (  # more than 255 parts: an error reply, not a dead control connection
            b'{"op": "inject_mo", "source": "4477", "destination": "ACME", "text": "'
            + b"z" * 50_000
            + b'"}\n',
            "bad_request",
        ),
        (b'{"op": "wait_for"}\n', "bad_request"),
        (b"[" * 100_000 + b"\n", "bad_json"),  # deeper than the JSON parser recurses
        (b'{"op": "records", "offset": Infinity}\n', "bad_json"),
        (b'{"op": "records", "offset": -2}\n', "bad_request"),
        (b'{"op": "records", "limit": -7}\n', "bad_request"),
        (b'{"op": "records", "limit": 2.5}\n', "bad_request"),
        (b'{"op": "wait_for", "count": 1e400}\n', "bad_json"),
        (b'{"op": "wait_for", "count": 1, "timeout": NaN}\n', "bad_json"),
        (b'{"op": "wait_for", "count": 0, "segments": "false"}\n', "bad_request"),
        (b'{"op": "drop", "bind_id": 1e999}\n', "bad_json"),
        (b'{"op": "unbind", "bind_id": true}\n', "bad_request"),
        (  # would fail every later submit asking for a receipt
            b'{"op": "set", "receipts": {"outcomes": {"DELIVRD": Infinity, "UNDELIV": 1}}}\n',
            "bad_json",
        ),
        (b'{"op": "set", "tps_limit": NaN}\n', "bad_json"),
        (b'{"op": "drop", "bind_id": 99}\n', "not_found"),
        (b'{"op": "unbind", "bind_id": 99}\n', "not_found"),
    ],
)
async def test_errors_are_replies_and_the_connection_goes_on(
    control: Control, request_line: bytes, code: str
) -> None:
    """A bad request gets ok false with a stable code; the next request still works."""
    reply = await control.call(request_line)
    assert reply["ok"] is False
    assert reply["error"]["code"] == code
    assert (await control.ok("stats"))["segments"] == 0


async def test_a_line_over_the_limit_is_answered_and_skipped(control: Control) -> None:
    """A request longer than MAX_LINE gets a line_too_long reply; the next line is served."""
    reply = await control.call(b'{"op": "stats", "pad": "' + b"x" * (MAX_LINE + 10) + b'"}\n')
    assert (reply["ok"], reply["error"]["code"]) == (False, "line_too_long")
    assert (await control.ok("stats"))["segments"] == 0


async def test_an_unexpected_failure_is_an_internal_error_reply(
    smsc: FakeSmsc,
    control: Control,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception no op expects is answered with code internal, not a dropped connection,
    and logged by its op, not its values (which can hold phone numbers)."""

    def broken() -> dict[str, Any]:
        raise RuntimeError("stats are broken")

    monkeypatch.setattr(smsc, "stats", broken)
    reply = await control.call({"op": "stats", "id": 7, "to": "447700900123"})
    assert reply == {
        "id": 7,
        "ok": False,
        "error": {"code": "internal", "message": "RuntimeError: stats are broken"},
    }
    (record,) = [r for r in caplog.records if "control request" in r.getMessage()]
    assert record.getMessage() == "control request 'stats' failed"
    assert "447700900123" not in caplog.text
    monkeypatch.undo()
    assert (await control.ok("stats"))["segments"] == 0


async def test_unix_socket_is_removed_on_stop(tmp_path: Path) -> None:
    """The control socket file goes away with the server."""
    path = tmp_path / "c.sock"
    async with FakeSmsc(SmscConfig(port=0, control=str(path))) as smsc:
        assert smsc.control_address == str(path)
        assert path.exists()
    assert not path.exists()


async def test_submit_resp_is_not_disturbed_by_control_traffic(
    smsc: FakeSmsc, control: Control
) -> None:
    """Control requests interleaved with submits leave the SMPP side alone."""
    async with await EsmeClient.connect(smsc.host, smsc.port) as client:
        await client.bind()
        for n in range(3):
            client.send(SubmitSm(destination_addr=f"4470{n}", short_message=b"x"))
            await control.ok("stats")
        assert [(await client.expect(SubmitSmResp)).command_status for _ in range(3)] == [0] * 3


async def test_the_control_path_is_never_taken_from_a_file_or_a_live_instance(
    tmp_path: Path,
) -> None:
    """Only a stale socket (nothing answers) is replaced: a file at the path is left alone,
    and a second instance does not take a running one's socket."""
    victim = tmp_path / "notes.txt"
    victim.write_text("important")
    with pytest.raises(ControlSocketError, match="not a socket"):
        async with FakeSmsc(SmscConfig(port=0, control=str(victim))):
            pass
    assert victim.read_text() == "important"
    path = tmp_path / "ctl.sock"
    async with FakeSmsc(SmscConfig(port=0, control=str(path))) as first:
        with pytest.raises(ControlSocketError, match="in use"):
            async with FakeSmsc(SmscConfig(port=0, control=str(path))):
                pass
        assert first.control_address is not None
        client = await Control.open(first.control_address)
        assert (await client.ok("stats"))["segments"] == 0
        await client.close()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, never listening: what a killed instance leaves
    stale.close()
    async with FakeSmsc(SmscConfig(port=0, control=str(path))) as again:
        assert again.control_address == str(path)


async def test_a_stop_with_control_clients_connected_logs_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An idle control client at SIGTERM: the server stops without asyncio logging the
    cancelled connection's task as an error (19 lines of traceback on stderr)."""
    async with FakeSmsc(SmscConfig(port=0, control="0")) as server:
        assert server.control_address is not None
        client = await Control.open(server.control_address)
        assert (await client.ok("stats"))["segments"] == 0
    await client.close()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_control_connections_past_the_cap_are_told_and_closed(
    smsc: FakeSmsc, control: Control
) -> None:
    """Each may hold a line of up to MAX_LINE being read: their number is bounded too."""
    assert smsc.control_address is not None
    others = [await Control.open(smsc.control_address) for _ in range(MAX_CLIENTS - 1)]
    assert (await others[-1].ok("stats"))["segments"] == 0
    extra = await Control.open(smsc.control_address)
    async with asyncio.timeout(5):
        reply = json.loads(await extra.reader.readline())
        assert await extra.reader.read() == b""  # closed
    assert reply["error"]["code"] == "too_many_connections"
    await extra.close()
    await others[0].close()
    assert (await control.ok("stats"))["segments"] == 0
    for other in others[1:]:
        await other.close()
