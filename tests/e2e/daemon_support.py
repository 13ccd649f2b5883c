"""Running smppd as a real subprocess for end-to-end tests, against an in-process fake SMSC."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml

from tools.fake_smsc import FakeSmsc
from tools.fake_smsc.config import SmscConfig

START_TIMEOUT_S = 20.0


def write_config(
    directory: Path, smsc_port: int, *, carrier: dict[str, Any] | None = None, **sections: Any
) -> Path:
    """A config for one carrier on the fake SMSC, with queue and socket in `directory`."""
    config: dict[str, Any] = {
        "queue": {"path": str(directory / "smppd.db"), "retry_initial_s": 0.2},
        "api": {
            "socket": str(directory / "smppd.sock"),
            "clients": [
                {"name": "alpha", "uids": [os.getuid()]},
                {"name": "beta", "uids": [os.getuid() + 1 if os.getuid() < 60000 else 1]},
            ],
        },
        "metrics": {"listen": "127.0.0.1:0"},
        "logging": {"level": "info", "format": "json"},
        "carriers": [
            {
                "name": "fake",
                "host": "127.0.0.1",
                "port": smsc_port,
                "system_id": "smppd",
                "password": "secret",
                "binds": 2,
                "window": 50,
                "tps": 100000,
                "response_timeout_s": 5,
                "reconnect": {"initial_s": 0.1, "max_s": 1},
                **(carrier or {}),
            }
        ],
        "routes": [{"prefix": "", "carriers": ["fake"]}],
        "senders": [
            {"id": "ALPHA", "client": "alpha"},
            {"id": "12345", "client": "alpha"},
            {"id": "BETA", "client": "beta"},
        ],
    }
    config.update(sections)
    path = directory / "smppd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Daemon:
    """`python -m smppd run` with its JSON log lines collected; `wait_log` waits for one."""

    def __init__(self, config: Path, *, program: Sequence[str] = ("-m", "smppd")) -> None:
        self.config = config
        self.program = tuple(program)  # what python runs: the module, or a wrapper script
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._new_line = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, *, ready: bool = True) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *self.program,
            "run",
            "-c",
            str(self.config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        if ready:
            await self.wait_log("smppd ready")

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            text = line.decode(errors="replace").rstrip("\n")
            self.raw.append(text)
            try:
                self.lines.append(json.loads(text))
            except json.JSONDecodeError:
                self.lines.append({"event": text})
            self._new_line.set()
        self._new_line.set()

    async def wait_log(
        self,
        event: str,
        timeout: float = START_TIMEOUT_S,  # noqa: ASYNC109
        since: int = 0,
        **fields: object,
    ) -> dict[str, Any]:
        """The first line from `lines[since]` on logging `event` (with these `fields`), waiting
        for it if need be."""
        seen = since
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines[seen:]:
                    if line.get("event") == event and all(
                        line.get(k) == v for k, v in fields.items()
                    ):
                        return line
                seen = len(self.lines)
                if self._reader is not None and self._reader.done():
                    raise AssertionError(f"daemon exited before logging {event!r}: {self.raw}")
                self._new_line.clear()
                await self._new_line.wait()

    def metrics_port(self) -> int:
        for line in self.lines:
            if line.get("event") == "metrics listening":
                return int(str(line["address"]).rsplit(":", 1)[1])
        raise AssertionError("metrics address not logged")

    async def scrape_metrics(self) -> str:
        """The daemon's /metrics page."""
        url = f"http://127.0.0.1:{self.metrics_port()}/metrics"

        def scrape() -> str:
            with urllib.request.urlopen(url, timeout=5) as response:
                body: bytes = response.read()
                return body.decode()

        return await asyncio.to_thread(scrape)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = START_TIMEOUT_S) -> int:  # noqa: ASYNC109
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            if self._reader is not None:
                await self._reader
        return code

    async def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.returncode is not None:
            return self.proc.returncode
        self.signal(signal.SIGTERM)
        return await self.wait()

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.wait()


@asynccontextmanager
async def smsc_and_dir(config: SmscConfig | None = None) -> AsyncIterator[tuple[FakeSmsc, Path]]:
    directory = Path(tempfile.mkdtemp(prefix="smppd-e2e-", dir="/tmp"))
    smsc = FakeSmsc(config or SmscConfig(port=0))
    await smsc.start()
    try:
        yield smsc, directory
    finally:
        await smsc.stop()


@asynccontextmanager
async def running(
    config: SmscConfig | None = None, **config_args: Any
) -> AsyncIterator[tuple[FakeSmsc, Daemon, Path]]:
    async with smsc_and_dir(config) as (smsc, directory):
        daemon = Daemon(write_config(directory, smsc.port, **config_args))
        await daemon.start()
        try:
            yield smsc, daemon, directory
        finally:
            if daemon.proc is not None and daemon.proc.returncode is None:
                await daemon.kill()


def unused_port() -> int:
    """A local TCP port nothing listens on (a carrier that cannot be reached)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
