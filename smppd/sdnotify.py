"""The sd_notify protocol (sd_notify(3)) without libsystemd: readiness, reload, stop, status and
watchdog messages as datagrams to the socket systemd names in $NOTIFY_SOCKET.

It owns the wire format of those messages and the reading of $NOTIFY_SOCKET, $WATCHDOG_USEC and
$WATCHDOG_PID. It must not know when the daemon is ready or how often to ping: the composition
root decides that. Outside systemd (no $NOTIFY_SOCKET) every call is a no-op, and a failed send
never raises: supervision is a courtesy that must not take the daemon down.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

__all__ = ["Notifier", "notify_address", "watchdog_interval_s"]

log = structlog.get_logger(__name__)


def notify_address(environ: Mapping[str, str] | None = None) -> str | None:
    """The AF_UNIX address in $NOTIFY_SOCKET: a path, or `@name` as an abstract socket (leading
    NUL). None when unset, empty, or a form we do not speak (relative paths, `vsock:`)."""
    value = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """How often to send WATCHDOG=1: half of $WATCHDOG_USEC, so one late ping is not fatal.

    None when the watchdog is off, the value is malformed, or $WATCHDOG_PID names another
    process (the variable was inherited from a parent that systemd watches, not us).
    """
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


def _monotonic_usec() -> int:
    # The clock systemd compares MONOTONIC_USEC against (CLOCK_MONOTONIC, not BOOTTIME).
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _one_line(text: str) -> str:
    # A newline would end the STATUS= assignment and start a new, unintended one.
    return " ".join(text.splitlines())


class Notifier:
    """Sends sd_notify messages to the service manager, if there is one.

    The address is read once, at construction; each message goes out on a fresh non-blocking
    datagram socket, so there is no descriptor to manage and the event loop never waits on a
    busy manager.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._address = notify_address(environ)
        self._failure_logged = False

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens for notifications."""
        return self._address is not None

    def ready(self, status: str | None = None) -> None:
        """Startup (or a reload) is complete: the API socket accepts submits."""
        self._send("READY=1", status)

    def reloading(self, status: str | None = None) -> None:
        """A reload has begun; `ready()` ends it. MONOTONIC_USEC is what Type=notify-reload
        (systemd >= 253) needs to tie this message to the reload it requested."""
        self._send(f"RELOADING=1\nMONOTONIC_USEC={_monotonic_usec()}", status)

    def stopping(self, status: str | None = None) -> None:
        """Shutdown has begun: the daemon is draining its windows."""
        self._send("STOPPING=1", status)

    def status(self, text: str) -> None:
        """A one-line state shown by `systemctl status`."""
        self._send(None, text)

    def watchdog(self) -> None:
        """The daemon is alive; systemd restarts it when these stop for WatchdogSec."""
        self._send("WATCHDOG=1", None)

    def extend_timeout(self, seconds: float) -> None:
        """Ask for `seconds` more before the current start or stop times out, for a drain
        that is still making progress."""
        self._send(f"EXTEND_TIMEOUT_USEC={max(0, round(seconds * 1_000_000))}", None)

    def _send(self, message: str | None, status: str | None) -> None:
        if self._address is None:
            return
        lines = [] if message is None else [message]
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            # Once: a manager that is gone stays gone, and a ping every few seconds would flood.
            if not self._failure_logged:
                self._failure_logged = True
                log.debug("sd_notify_failed", error=str(exc))
