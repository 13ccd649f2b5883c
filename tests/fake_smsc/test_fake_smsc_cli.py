"""`python -m tools.fake_smsc` as a subprocess: its listening line, records file and exit codes."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smppd.pdu.pdus import SubmitSm
from smppd.pdu.status import CommandStatus as S
from tools.fake_smsc import EsmeClient

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.slow


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.fake_smsc",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def line_of(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(10):
        return (await proc.stdout.readline()).decode()


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    record = tmp_path / "records.jsonl"
    proc = await start(
        "--port", "0", "--control", "0", "--record", str(record), "--system-id", "acme",
        "--password", "pw",
    )  # fmt: skip
    try:
        yield proc, record
    finally:
        if proc.returncode is None:
            proc.kill()
        async with asyncio.timeout(10):
            await proc.communicate()


async def test_prints_the_real_port_and_serves_it(
    running: tuple[asyncio.subprocess.Process, Path],
) -> None:
    """With --port 0 the listening line names the port it got; binds use the CLI account."""
    proc, record = running
    listening = await line_of(proc)
    assert listening.startswith("fake_smsc listening on 127.0.0.1:")
    port = int(listening.rsplit(":", 1)[1])
    assert port > 0
    control = await line_of(proc)
    assert control.startswith("fake_smsc control on 127.0.0.1:")
    async with await EsmeClient.connect("127.0.0.1", port) as client:
        assert (await client.bind(system_id="smppd", password="secret")).command_status == (
            S.ESME_RINVSYSID
        )
        assert (await client.bind(system_id="acme", password="pw")).command_status == 0
        resp = await client.submit(SubmitSm(destination_addr="447700900123", short_message=b"hi"))
    assert resp.command_status == 0
    # Records are flushed per batch, before the answer went out.
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(line["type"], line["text"]) for line in lines] == [
        ("segment", "hi"),
        ("message", "hi"),
    ]
    assert lines[0]["account"] == "acme"
    proc.terminate()
    async with asyncio.timeout(10):
        assert await proc.wait() == 0


async def test_control_port_answers(running: tuple[asyncio.subprocess.Process, Path]) -> None:
    """The control address printed at start takes JSON requests."""
    proc, _ = running
    await line_of(proc)
    control = (await line_of(proc)).rsplit(" ", 1)[1].strip()
    reader, writer = await asyncio.open_connection("127.0.0.1", int(control.rsplit(":", 1)[1]))
    writer.write(b'{"op": "stats", "id": 1}\n')
    async with asyncio.timeout(10):
        reply = json.loads(await reader.readline())
    writer.close()
    await writer.wait_closed()
    assert reply["ok"]
    assert reply["id"] == 1
    assert reply["result"]["segments"] == 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("faults: {hang: true}\nwindows: 3\n", "unknown key 'windows'"),
        # Limits a server could start with and then fail on every connection or submit.
        ("max_tracked_messages: 0\n", "max_tracked_messages must be at least 1"),
        ("max_command_length: 8\n", "max_command_length must be at least 16"),
        ("faults: {hang: true\nport: 0\n", "not valid YAML: line 2, column 5: expected ','"),
        ("faults: {reorder: sideways}\n", "faults.reorder: expected one of reverse, shuffle"),
    ],
)
async def test_bad_scenario_exits_78_with_one_line(tmp_path: Path, text: str, reason: str) -> None:
    """A bad scenario exits with EX_CONFIG, one line naming the file, key and reason."""
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(text)
    proc = await start("--port", "0", "--scenario", str(scenario))
    async with asyncio.timeout(10):
        stdout, stderr = await proc.communicate()
    assert proc.returncode == 78
    assert stdout == b""
    message = stderr.decode()
    assert message.count("\n") == 1
    assert str(scenario) in message
    assert reason in message


@pytest.mark.parametrize("problem", ["port in use", "record file", "control path"])
async def test_a_start_that_cannot_happen_is_one_line_and_status_1(
    tmp_path: Path, problem: str
) -> None:
    """A port in use, a record file that cannot be written, a control path that is a file:
    one `cannot start` line each, no traceback, and nothing left running."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = {
            "port in use": ["--port", str(busy.getsockname()[1])],
            "record file": ["--port", "0", "--record", str(tmp_path / "no" / "dir" / "r.jsonl")],
            "control path": ["--port", "0", "--control", str(tmp_path)],
        }[problem]
        proc = await start(*args)
        async with asyncio.timeout(10):
            stdout, stderr = await proc.communicate()
    assert proc.returncode == 1
    assert stdout == b""
    message = stderr.decode()
    assert message.startswith("fake_smsc: cannot start: ")
    assert message.count("\n") == 1
    assert "Traceback" not in message


async def test_scenario_faults_apply(tmp_path: Path) -> None:
    """Faults from --scenario are in force from the first submit."""
    scenario = tmp_path / "throttled.yaml"
    scenario.write_text("faults: {submit_errors: {ESME_RTHROTTLED: 1.0}}\n")
    proc = await start("--port", "0", "--scenario", str(scenario), "--no-record")
    try:
        port = int((await line_of(proc)).rsplit(":", 1)[1])
        async with await EsmeClient.connect("127.0.0.1", port) as client:
            await client.bind()
            resp = await client.submit(SubmitSm(destination_addr="4470", short_message=b"x"))
        assert resp.command_status == S.ESME_RTHROTTLED
    finally:
        proc.terminate()
        async with asyncio.timeout(10):
            await proc.communicate()
