"""The /metrics endpoint: scrapes answered, idle connections closed, nothing printed."""

from __future__ import annotations

import socket
import urllib.request

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


def test_an_address_that_cannot_be_used_is_an_oserror() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError, match="in use"):
            metrics_http.serve_metrics("127.0.0.1", busy.getsockname()[1], CollectorRegistry())
    with pytest.raises(socket.gaierror):
        metrics_http.serve_metrics("no-such-host.invalid", 0, CollectorRegistry())
