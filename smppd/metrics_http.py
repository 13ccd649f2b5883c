"""The /metrics endpoint: prometheus_client's WSGI app on a threaded HTTP server.

prometheus_client's own start_http_server gives each connection a thread with no timeout, so
a local process that opens connections and sends nothing holds a thread each for ever. Here a
request must be read within READ_TIMEOUT_S in all (a client sending a byte now and then does
not restart the clock), at most MAX_CONNECTIONS are served at once (one more is closed at
once), and what is closed goes quietly.
"""

from __future__ import annotations

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


class _Handler(WSGIRequestHandler):
    timeout = READ_TIMEOUT_S  # socketserver sets it on each connection it hands over

    def setup(self) -> None:
        super().setup()
        self.rfile = io.BufferedReader(_Reads(self.connection, time.monotonic() + self.timeout))

    def log_message(self, format: str, *args: Any) -> None:
        return None  # a scrape is not a log line


def serve_metrics(host: str, port: int, registry: CollectorRegistry) -> WSGIServer:
    """Serve `registry` on host:port from a daemon thread; OSError (gaierror included) when
    the address cannot be used. `shutdown()` stops it."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    class _Server(ThreadingWSGIServer):
        address_family = family
        request_queue_size = 64

        def process_request(self, request: Any, client_address: Any) -> None:
            if not slots.acquire(blocking=False):  # as many threads as that, and no more
                self.shutdown_request(request)
                return
            try:
                super().process_request(request, client_address)  # starts its thread
            except BaseException:
                slots.release()
                raise

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                slots.release()

        def handle_error(self, request: Any, client_address: Any) -> None:
            return None  # a client that timed out or went away: nothing to print

    httpd = make_server(host, port, make_wsgi_app(registry), _Server, handler_class=_Handler)
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
    return httpd
