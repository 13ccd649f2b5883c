"""Test support for the API server, its client and the CLI: an in-memory stand-in Service that
records calls, a raw line-level connection, and a helper that runs a server in a short tmp dir."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smppd.api import ApiServer, ApiSettings, ClientTable
from smppd.service import (
    ApiError,
    ClientIdentity,
    ErrorCode,
    Event,
    SubmitReply,
    SubmitRequest,
)

DEMO = ClientIdentity(name="demo", senders=frozenset({"ACME", "12345"}))
WAIT_S = 5.0


class FakeSubscription:
    """A bounded event queue like the real hub's: a full one is dropped with a last event."""

    def __init__(self, kinds: frozenset[str], size: int) -> None:
        self.kinds = kinds
        self._size = size
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(size + 2)
        self.pulled = 0
        self.dropped = False
        self.closed = asyncio.Event()  # no more events: dropped or closed
        self.closed_by_server = asyncio.Event()  # the server called close()

    def publish(self, event: Event) -> bool:
        """Queue an event; False once the subscription is closed or dropped."""
        if self.closed.is_set():
            return False
        if self._queue.qsize() >= self._size:
            self.dropped = True
            self._queue.put_nowait(Event("dropped", event.client, {"reason": "behind"}))
            self._end()
            return False
        self._queue.put_nowait(event)
        return True

    def _end(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self._queue.put_nowait(None)

    def close(self) -> None:
        self.closed_by_server.set()
        self._end()

    async def _events(self) -> AsyncIterator[Event]:
        while (event := await self._queue.get()) is not None:
            self.pulled += 1
            yield event

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()


@dataclass
class FakeService:
    """Accepts `+` numbers, refuses others with invalid_address; holds submits whose ref is
    in `gates` (None: those with none) until the gate is set; raises `failure` from every call
    when it is set."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    gates: dict[str | None, asyncio.Event] = field(default_factory=dict)
    failure: Exception | None = None
    subscription_size: int = 64
    subscriptions: list[FakeSubscription] = field(default_factory=list)
    has_subscription: asyncio.Event = field(default_factory=asyncio.Event)
    submit_entered: asyncio.Event = field(default_factory=asyncio.Event)
    owners: dict[int, str] = field(default_factory=dict)
    optouts: set[tuple[str, str]] = field(default_factory=set)
    healthy: bool | None = None  # None: the reply has no verdict
    delivered: set[int] = field(default_factory=set)  # message ids a cancel comes too late for
    cancelled: set[int] = field(default_factory=set)  # message ids cancelled already
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _refs: dict[str, int] = field(default_factory=dict)

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def submit(
        self, client: ClientIdentity, requests: Sequence[SubmitRequest], *, whole: bool = True
    ) -> list[SubmitReply | ApiError]:
        self.calls.append(("submit", (client.name, list(requests))))
        self.submit_entered.set()
        self._check()
        for request in requests:
            if request.ref in self.gates:
                await self.gates[request.ref].wait()
        replies: list[SubmitReply | ApiError] = []
        for request in requests:
            if not request.to.startswith("+"):
                replies.append(ApiError(ErrorCode.invalid_address, "bad number", field="to"))
            elif request.ref is not None and request.ref in self._refs:
                replies.append(SubmitReply(self._refs[request.ref], 1, created=False))
            else:
                message_id = next(self._ids)
                self.owners[message_id] = client.name
                if request.ref is not None:
                    self._refs[request.ref] = message_id
                segments = 1 + (len(request.text) - 1) // 153 if len(request.text) > 160 else 1
                replies.append(SubmitReply(message_id, segments, created=True))
        return replies

    def _own(self, client: ClientIdentity, message_id: int) -> None:
        if self.owners.get(message_id) != client.name:
            raise ApiError(ErrorCode.not_found, f"no message {message_id}")

    async def message_id_of(self, client: ClientIdentity, ref: str) -> int:
        self.calls.append(("message_id_of", ref))
        message_id = self._refs.get(ref)
        if message_id is None or self.owners.get(message_id) != client.name:
            raise ApiError(ErrorCode.not_found, "no message with this ref", field="ref")
        return message_id

    async def status(self, client: ClientIdentity, message_id: int) -> dict[str, Any]:
        self.calls.append(("status", message_id))
        self._check()
        self._own(client, message_id)
        return {
            "message_id": message_id,
            "state": "queued",
            "created_at": 1764877501.25,
            "segments": [{"index": 0, "done_at": None}],
            "ok": "not the server's ok",
        }

    async def cancel(self, client: ClientIdentity, message_id: int) -> dict[str, Any]:
        self.calls.append(("cancel", message_id))
        self._check()
        self._own(client, message_id)
        state = "delivered" if message_id in self.delivered else "cancelled"
        cancelled = 0 if state == "delivered" or message_id in self.cancelled else 1
        self.cancelled.add(message_id)
        return {
            "message_id": message_id,
            "state": state,
            "segments": [{"index": 0, "state": state}],
            "cancelled": cancelled,
        }

    def subscribe(self, client: ClientIdentity, kinds: frozenset[str]) -> FakeSubscription:
        self.calls.append(("subscribe", kinds))
        self._check()
        subscription = FakeSubscription(kinds, self.subscription_size)
        self.subscriptions.append(subscription)
        self.has_subscription.set()
        return subscription

    def health(self) -> dict[str, Any]:
        self.calls.append(("health", None))
        self._check()
        verdict = {} if self.healthy is None else {"healthy": self.healthy}
        return {"status": "ok", "binds_up": 2, **verdict}

    async def stats(self, client: ClientIdentity) -> dict[str, Any]:
        self.calls.append(("stats", client.name))
        self._check()
        return {"queued": len(self.owners)}

    async def optout(
        self,
        client: ClientIdentity,
        action: str,
        sender: str,
        number: str | None,
        after: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        self.calls.append(("optout", (action, sender, number) + ((after,) if after else ())))
        self._check()
        if action == "add" and number is not None:
            self.optouts.add((sender, number))
        elif action == "remove" and number is not None:
            self.optouts.discard((sender, number))
        return {"numbers": sorted(n for s, n in self.optouts if s == sender)}

    async def inbound(self, client: ClientIdentity, after: int, limit: int) -> dict[str, Any]:
        self.calls.append(("inbound", (after, limit)))
        self._check()
        return {"messages": [{"id": after + 1, "text": "hi"}][:limit]}

    async def finished(
        self, client: ClientIdentity, after: tuple[float, int] | None, limit: int
    ) -> dict[str, Any]:
        self.calls.append(("finished", (after, limit)))
        self._check()
        return {"messages": [], "next": "1.5:7"}

    async def subscribed(self) -> FakeSubscription:
        """The first subscription, once the server has made it."""
        async with asyncio.timeout(WAIT_S):
            await self.has_subscription.wait()
        return self.subscriptions[0]


@dataclass
class RecordingObserver:
    requests: list[tuple[str, str]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    has_dropped: asyncio.Event = field(default_factory=asyncio.Event)

    def request_finished(self, op: str, result: str, duration_s: float) -> None:
        assert duration_s >= 0
        self.requests.append((op, result))

    def messages_finished(self, results: Iterable[str]) -> None:
        self.messages.extend(results)

    def connection_refused(self, code: str) -> None:
        self.refused.append(code)

    def connection_dropped(self, reason: str) -> None:
        self.dropped.append(reason)
        self.has_dropped.set()


class Raw:
    """A line-level connection: send bytes or objects, receive decoded reply lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, path: Path) -> Raw:
        """Connect; the connection is closed when the enclosing running_server() ends."""
        reader, writer = await asyncio.open_unix_connection(str(path), limit=16 * 1024 * 1024)
        raw = cls(reader, writer)
        _opened.append(raw)
        return raw

    async def send(self, request: Mapping[str, Any] | bytes) -> None:
        data = request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n"
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            line = await self.reader.readline()
        assert line.endswith(b"\n"), f"connection ended instead of a reply: {line!r}"
        reply = json.loads(line)
        assert isinstance(reply, dict)
        return reply

    async def call(self, request: Mapping[str, Any] | bytes) -> dict[str, Any]:
        await self.send(request)
        return await self.recv()

    async def closed_by_server(self) -> bool:
        """Whether the server ends the connection (EOF or reset) with nothing more to say."""
        async with asyncio.timeout(WAIT_S):
            try:
                return await self.reader.read() == b""
            except ConnectionResetError:
                return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


_opened: list[Raw] = []


async def close_raw_connections() -> None:
    while _opened:
        await _opened.pop().close()


@contextlib.contextmanager
def short_tmpdir() -> Iterator[Path]:
    """A directory in /tmp: pytest's tmp_path can exceed sun_path's 108 bytes."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="smppd-api-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_server(
    service: FakeService | None = None,
    *,
    clients: ClientTable | None = None,
    observer: RecordingObserver | None = None,
    **settings: Any,
) -> AsyncIterator[ApiServer]:
    """An ApiServer on a fresh socket with `service` (a new FakeService by default)."""
    with short_tmpdir() as directory:
        server = ApiServer(
            ApiSettings(socket=directory / "api.sock", **settings),
            clients or ClientTable(any_uid=DEMO),
            service or FakeService(),
            observer=observer,
        )
        await server.start()
        try:
            yield server
        finally:
            await close_raw_connections()
            await server.close()


def own_uid() -> int:
    return os.getuid()
