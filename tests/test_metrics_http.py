"""The /metrics endpoint: scrapes answered, idle connections closed, nothing printed."""

from __future__ import annotations

import select
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from smppd import metrics_http


def test_scrapes_are_answered_and_an_idle_connection_is_closed(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A connection that sends no request is closed after the read timeout instead of holding
    its thread for ever; the server says nothing about it on stderr."""
    monkeypatch.setattr(metrics_http._Handler, "timeout", 0.2)
    registry = CollectorRegistry()
    Counter("smppd_probe", "a probe", registry=registry).inc()
    server = metrics_http.serve_metrics("127.0.0.1", 0, registry)
    try:
        port = server.server_port
        with socket.create_connection(("127.0.0.1", port), timeout=5) as idle:
            assert idle.recv(1) == b""  # closed by the server, well before our 5 s
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert b"smppd_probe_total 1.0" in reply.read()
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in capfd.readouterr().err


def test_a_request_sent_a_byte_at_a_time_must_still_arrive_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The read timeout is for the whole request: a client that sends a byte of its headers
    whenever the last read would time out does not keep its connection (and thread)."""
    monkeypatch.setattr(metrics_http._Handler, "timeout", 0.5)
    server = metrics_http.serve_metrics("127.0.0.1", 0, CollectorRegistry())
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as slow:
            started = time.monotonic()
            request = b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 200
            closed = False
            for octet in request:  # a byte each 0.1 s: each read on its own would be in time
                slow.sendall(bytes([octet]))
                ready, _, _ = select.select([slow], [], [], 0.1)
                if ready and slow.recv(1) == b"":
                    closed = True
                    break
            assert closed, "the whole request trickled in and the connection stayed open"
            assert time.monotonic() - started < 2.0
    finally:
        server.shutdown()
        server.server_close()


class Blocking:
    """A collector that holds every scrape until `release` is set."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def collect(self) -> Iterator[Any]:
        self.entered.release()
        assert self.release.wait(10)
        return iter(())


def test_connections_past_the_limit_are_closed_at_once_while_all_are_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At most MAX_CONNECTIONS connections hold a thread: with every one of them being
    answered (a slow collection), one more is closed at once; once they are done, a scrape
    is answered again."""
    monkeypatch.setattr(metrics_http, "MAX_CONNECTIONS", 3)
    registry = CollectorRegistry()
    blocking = Blocking()
    registry.register(blocking)
    server = metrics_http.serve_metrics("127.0.0.1", 0, registry)
    port = server.server_port
    busy = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    try:
        for sock in busy:
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        for _ in busy:
            assert blocking.entered.acquire(timeout=5)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            assert extra.recv(1) == b""  # well before the 10 s read timeout
        blocking.release.set()
        for sock in busy:
            assert sock.recv(12) == b"HTTP/1.0 200"
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 5
        while True:  # the answered connections' threads end as they close
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    assert reply.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline
    finally:
        blocking.release.set()
        for sock in busy:
            sock.close()
        server.shutdown()
        server.server_close()


def test_connections_that_send_nothing_give_their_place_to_a_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every place taken by a connection that has sent no request (renewed as the timeout
    closes them, they kept every scrape out): a scrape takes the place of the oldest, which
    is closed; the others keep theirs."""
    monkeypatch.setattr(metrics_http, "MAX_CONNECTIONS", 3)
    registry = CollectorRegistry()
    Counter("smppd_probe", "a probe", registry=registry).inc()
    server = metrics_http.serve_metrics("127.0.0.1", 0, registry)
    port = server.server_port
    # Accepted in this order, and before the scrapes.
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        for _ in range(3):
            with urllib.request.urlopen(url, timeout=5) as reply:
                assert b"smppd_probe_total 1.0" in reply.read()
        assert idle[0].recv(1) == b""
    finally:
        for sock in idle:
            sock.close()
        server.shutdown()
        server.server_close()


def test_an_address_that_cannot_be_used_is_an_oserror() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError, match="in use"):
            metrics_http.serve_metrics("127.0.0.1", busy.getsockname()[1], CollectorRegistry())
    with pytest.raises(socket.gaierror):
        metrics_http.serve_metrics("no-such-host.invalid", 0, CollectorRegistry())
