"""The /metrics endpoint: prometheus_client's WSGI app on a threaded HTTP server.

prometheus_client's own start_http_server gives each connection a thread with no timeout, so
a local process that opens connections and sends nothing holds a thread each for ever. Here a
connection that sends no request within READ_TIMEOUT_S is closed, quietly.
"""

from __future__ import annotations

import socket
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

READ_TIMEOUT_S = 10.0


class _Handler(WSGIRequestHandler):
    timeout = READ_TIMEOUT_S  # socketserver sets it on each connection it hands over

    def log_message(self, format: str, *args: Any) -> None:
        return None  # a scrape is not a log line


def serve_metrics(host: str, port: int, registry: CollectorRegistry) -> WSGIServer:
    """Serve `registry` on host:port from a daemon thread; OSError (gaierror included) when
    the address cannot be used. `shutdown()` stops it."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    class _Server(ThreadingWSGIServer):
        address_family = family

        def handle_error(self, request: Any, client_address: Any) -> None:
            return None  # a client that timed out or went away: nothing to print

    httpd = make_server(host, port, make_wsgi_app(registry), _Server, handler_class=_Handler)
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
    return httpd
