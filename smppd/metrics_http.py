"""The /metrics endpoint: prometheus_client's WSGI app on a threaded HTTP server.

prometheus_client's own start_http_server gives each connection a thread with no timeout, so
a local process that opens connections and sends nothing holds a thread each for ever. Here a
request must be read within READ_TIMEOUT_S in all (a client sending a byte now and then does
not restart the clock), at most MAX_CONNECTIONS are served at once, and what is closed goes
quietly. One more takes the place of the oldest that has not sent its request yet (a scraper
sends it at once), and is closed at once only when every one is being answered: connections
that send nothing, renewed as the timeout closes them, would otherwise keep every scrape out
(Prometheus sees the target down, every alert blind).
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

READ_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 16  # scrapers are a few Prometheus servers and a curl now and then


class _Reads(io.RawIOBase):
    """A connection's reads, all within one deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request was not read in time")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _Slots:
    """The connections served: at most `size`; those still to send their request, oldest
    first, give their place to a new one."""

    def __init__(self, size: int) -> None:
        self._free = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._waiting: dict[socket.socket, None] = {}  # no request read yet, oldest first

    def take(self, sock: socket.socket) -> bool:
        if not self._free.acquire(blocking=False):
            with self._lock:
                oldest = next(iter(self._waiting), None)
                if oldest is not None:
                    del self._waiting[oldest]
            if oldest is None:
                return False  # every one is being answered
            with contextlib.suppress(OSError):
                oldest.shutdown(socket.SHUT_RDWR)  # its thread reads the end and gives way
            if not self._free.acquire(timeout=1.0):
                return False
        with self._lock:
            self._waiting[sock] = None
        return True

    def requested(self, sock: socket.socket) -> None:
        with self._lock:
            self._waiting.pop(sock, None)

    def give_back(self, sock: socket.socket) -> None:
        self.requested(sock)
        self._free.release()


class _Handler(WSGIRequestHandler):
    timeout = READ_TIMEOUT_S  # socketserver sets it on each connection it hands over

    def setup(self) -> None:
        super().setup()
        self.rfile = io.BufferedReader(_Reads(self.connection, time.monotonic() + self.timeout))

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        slots: _Slots | None = getattr(self.server, "slots", None)
        if slots is not None:
            slots.requested(self.connection)
        return parsed

    def log_message(self, format: str, *args: Any) -> None:
        return None  # a scrape is not a log line


def serve_metrics(host: str, port: int, registry: CollectorRegistry) -> WSGIServer:
    """Serve `registry` on host:port from a daemon thread; OSError (gaierror included) when
    the address cannot be used. `shutdown()` stops it."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    class _Server(ThreadingWSGIServer):
        address_family = family
        request_queue_size = 64
        slots = _Slots(MAX_CONNECTIONS)

        def process_request(self, request: Any, client_address: Any) -> None:
            if not self.slots.take(request):  # as many threads as that, and no more
                self.shutdown_request(request)
                return
            try:
                super().process_request(request, client_address)  # starts its thread
            except BaseException:
                self.slots.give_back(request)
                raise

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                self.slots.give_back(request)

        def handle_error(self, request: Any, client_address: Any) -> None:
            return None  # a client that timed out or went away: nothing to print

    httpd = make_server(host, port, make_wsgi_app(registry), _Server, handler_class=_Handler)
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
    return httpd
