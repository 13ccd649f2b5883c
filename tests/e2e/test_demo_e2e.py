"""`make demo` as a newcomer runs it: the fake SMSC and smppd as processes, a first message."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest
from daemon_support import unused_port, write_config

from smppd.client import Client

pytestmark = pytest.mark.timeout(60)


async def test_demo_delivers_a_first_message_and_stops_both_on_ctrl_c() -> None:
    directory = Path(tempfile.mkdtemp(prefix="smppd-demo-", dir="/tmp"))
    config = write_config(directory, unused_port())
    demo = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.demo",
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,  # the daemon's log
    )
    assert demo.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(40):
            while not lines or lines[-1] != "Ctrl-C stops both.":
                line = await demo.stdout.readline()
                assert line, f"the demo ended early: {lines}"
                lines.append(line.decode().rstrip("\n"))
        assert lines[0].startswith("fake_smsc listening on 127.0.0.1:")
        assert "message 1: delivered (receipt DELIVRD)" in lines
        hint = next(line for line in lines if "inject_mo" in line)
        assert str(directory / "fake_smsc.sock") in hint
        # Both keep serving: the CLI's way in answers.
        async with Client(directory / "smppd.sock") as client:
            assert (await client.status(1))["state"] == "delivered"
        demo.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            assert await demo.wait() == 0
        assert not (directory / "smppd.sock").exists()  # the daemon stopped and cleaned up
        assert not (directory / "fake_smsc.sock").exists()
    finally:
        if demo.returncode is None:
            demo.kill()
            await demo.wait()
        shutil.rmtree(directory, ignore_errors=True)
