"""sd_notify client: exact datagrams on a real AF_UNIX socket, and silence outside systemd."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from smppd.daemon import OPEN_EXTEND_S, extending_start
from smppd.sdnotify import Notifier, notify_address, watchdog_interval_s


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory whose paths fit sun_path's 108 bytes, which pytest's tmp_path may not."""
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp:
        yield Path(tmp)


@pytest.fixture
def manager(monkeypatch: pytest.MonkeyPatch, short_dir: Path) -> Iterator[socket.socket]:
    """A listening datagram socket standing in for systemd, named in $NOTIFY_SOCKET by path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = str(short_dir / "notify")
        sock.bind(path)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        yield sock


def received(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def test_ready_stopping_status_watchdog_datagrams(manager: socket.socket) -> None:
    """Each call sends one datagram with exactly the sd_notify assignments it stands for."""
    notifier = Notifier()
    assert notifier.enabled
    notifier.ready()
    assert received(manager) == b"READY=1"
    notifier.ready(status="bound 2/2")
    assert received(manager) == b"READY=1\nSTATUS=bound 2/2"
    notifier.status("draining 12 in flight")
    assert received(manager) == b"STATUS=draining 12 in flight"
    notifier.watchdog()
    assert received(manager) == b"WATCHDOG=1"
    notifier.stopping()
    assert received(manager) == b"STOPPING=1"
    notifier.extend_timeout(20)
    assert received(manager) == b"EXTEND_TIMEOUT_USEC=20000000"


async def test_opening_the_queue_asks_for_more_start_time_until_it_is_open(
    manager: socket.socket,
) -> None:
    """A migration may outlast TimeoutStartSec: while the queue opens the daemon asks for
    OPEN_EXTEND_S more at once and every third of it, and stops asking once it is open."""
    opened = asyncio.Event()

    async def opening() -> str:
        await opened.wait()
        return "queue"

    task = asyncio.create_task(extending_start(Notifier(), opening()))
    manager.setblocking(False)
    loop = asyncio.get_running_loop()
    first = await asyncio.wait_for(loop.sock_recv(manager, 4096), 5)
    assert first == f"EXTEND_TIMEOUT_USEC={round(OPEN_EXTEND_S * 1_000_000)}".encode()
    opened.set()
    assert await asyncio.wait_for(task, 5) == "queue"
    with pytest.raises(BlockingIOError):
        manager.recv(4096)


def test_reloading_carries_monotonic_usec(manager: socket.socket) -> None:
    """RELOADING=1 carries the CLOCK_MONOTONIC time in microseconds, as notify-reload expects."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier().reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    match = re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=(\d+)", received(manager))
    assert match is not None
    assert before <= int(match[1]) <= after


def test_status_text_is_kept_on_one_line(manager: socket.socket) -> None:
    """A newline in a status cannot inject a second assignment such as READY=1."""
    Notifier().status("reloading\nREADY=1")
    assert received(manager) == b"STATUS=reloading READY=1"


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """`@name` in $NOTIFY_SOCKET addresses the abstract socket `name`."""
    name = f"smppd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        Notifier().ready()
        assert received(sock) == b"READY=1"


def test_unset_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without $NOTIFY_SOCKET nothing is sent and nothing is logged."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    with capture_logs() as logs:
        notifier.ready()
        notifier.reloading()
        notifier.stopping()
        notifier.status("x")
        notifier.watchdog()
    assert logs == []


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@abstract", "\0abstract"),
        ("", None),
        ("@", None),
        ("relative/path", None),
        ("vsock:2:1234", None),
    ],
)
def test_notify_address_forms(value: str, address: str | None) -> None:
    """Absolute paths and `@name` are spoken; anything else disables notifications."""
    assert notify_address({"NOTIFY_SOCKET": value}) == address


def test_send_failure_never_raises_and_logs_once(
    monkeypatch: pytest.MonkeyPatch, short_dir: Path
) -> None:
    """A socket nobody listens on costs one debug line, however many messages fail."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(short_dir / "gone"))
    notifier = Notifier()
    with capture_logs() as logs:
        notifier.ready()
        notifier.watchdog()
        notifier.stopping()
    assert [(e["event"], e["log_level"]) for e in logs] == [("sd_notify_failed", "debug")]


def test_too_long_path_is_a_send_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A path beyond sun_path's limit fails like any other send, without raising."""
    monkeypatch.setenv("NOTIFY_SOCKET", "/" + "x" * 200)
    with capture_logs() as logs:
        Notifier().ready()
    assert [e["event"] for e in logs] == ["sd_notify_failed"]


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    """WATCHDOG_USEC=30s gives a ping every 15 s; WATCHDOG_PID of this process is accepted."""
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval_s(env) == 15.0


def test_watchdog_interval_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping the process environment is read."""
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval_s() == 0.5


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WATCHDOG_USEC": ""},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "30s"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)},
    ],
)
def test_watchdog_interval_none(env: dict[str, str]) -> None:
    """No watchdog when unset, malformed, or meant for another process."""
    assert watchdog_interval_s(env) is None


def test_busy_manager_never_blocks(manager: socket.socket) -> None:
    """When the manager's queue is full, sends fail at once instead of stalling the event loop."""
    notifier = Notifier()
    with capture_logs() as logs:
        for _ in range(1000):
            notifier.watchdog()
    assert [e["event"] for e in logs] == ["sd_notify_failed"]
    assert received(manager) == b"WATCHDOG=1"
