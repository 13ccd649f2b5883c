"""A small client of the local API, asyncio first with a synchronous wrapper for scripts.

It owns the client side of the wire format (smppd.api): one connection, requests numbered and
pipelined, replies matched by id, event lines handed to `subscribe()`, error replies raised as
ApiClientError with the server's stable code. It must not know anything the server does not
say on the socket: no config, no service types.

    async with Client("/run/smppd/smppd.sock") as client:
        sent = await client.submit(to="+447700900123", sender="ACME", text="Your code is 1234")
        print(sent.message_id, sent.segments)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import stat
from collections.abc import AsyncGenerator, Coroutine, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self, TypeVar

from smppd.errors import SmppdError
from smppd.record import record

__all__ = [
    "ApiClientError",
    "ApiConnectionError",
    "ApiTimeoutError",
    "Client",
    "Submitted",
    "Subscription",
    "SyncClient",
    "submit_sync",
]

UNAVAILABLE: Final = "unavailable"  # the client's own code: no daemon, or the connection broke
TIMEOUT: Final = "timeout"  # the client's own code: sent, and no reply in time
# Errors not tied to a request that end the connection; others (line_too_long) leave it usable.
_CONNECTION_ERRORS: Final = frozenset({"unauthorized", "too_many_connections", "shutting_down"})
_SUN_PATH_MAX: Final = 107  # sockaddr_un's sun_path, less its NUL
_LINE_LIMIT: Final = 64 * 1024 * 1024  # replies such as `optout list` may be large
_EVENT_BUFFER: Final = 1000
# Past this many buffered (while replies are awaited) the client drops its own subscription,
# as the daemon drops a subscriber that falls behind its queue of 10,000.
_EVENT_BUFFER_MAX: Final = 10_000

_T = TypeVar("_T")


class ApiClientError(SmppdError):
    """The daemon answered with an error; `code` is one of its stable codes."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (field {field})" if field else ""))
        self.code = code
        self.message = message
        self.field = field

    @classmethod
    def from_reply(cls, error: object) -> ApiClientError:
        if not isinstance(error, dict):
            return cls("internal", "malformed error reply")
        field = error.get("field")
        return cls(
            str(error.get("code", "internal")),
            str(error.get("message", "")),
            field if isinstance(field, str) else None,
        )


class ApiConnectionError(ApiClientError):
    """The daemon could not be reached, or the connection ended before the reply."""

    def __init__(self, message: str) -> None:
        super().__init__(UNAVAILABLE, message)


class ApiTimeoutError(ApiConnectionError):
    """The request was sent and no reply came in time: the daemon may have carried it out (a
    submit may be stored), so resubmit with the same `ref`, which returns that message."""

    def __init__(self, message: str) -> None:
        ApiClientError.__init__(self, TIMEOUT, message)


@record
class Submitted:
    """A message the daemon accepted: durably queued as `message_id`."""

    message_id: int
    segments: int
    created: bool  # False when `ref` matched an earlier submit

    @classmethod
    def from_reply(cls, reply: Mapping[str, Any]) -> Submitted:
        return cls(int(reply["message_id"]), int(reply["segments"]), bool(reply["created"]))


def _result(reply: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in reply.items() if k not in ("ok", "id")}


def _submit_fields(
    to: str,
    sender: str,
    text: str,
    priority: str | int | None,
    ref: str | None,
    validity_s: float | None,
    schedule_at: float | None,
    registered_delivery: bool | None,
    encoding: str | None,
    flash: bool | None = None,
    smart_encoding: bool | None = None,
) -> dict[str, Any]:
    optional = {
        "flash": flash,
        "smart_encoding": smart_encoding,
        "priority": priority,
        "ref": ref,
        "validity_s": validity_s,
        "schedule_at": schedule_at,
        "registered_delivery": registered_delivery,
        "encoding": encoding,
    }
    fields = {"to": to, "from": sender, "text": text}
    return fields | {k: v for k, v in optional.items() if v is not None}


def _target(message_id: int | None, ref: str | None) -> dict[str, Any]:
    if (message_id is None) == (ref is None):
        raise TypeError("give one of message_id and ref")
    return {"message_id": message_id} if ref is None else {"ref": ref}


class Client:
    """One connection to the daemon. Requests may be issued concurrently (they are pipelined);
    at most `max_in_flight` wait for replies at once, the rest wait their turn here."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout_s: float | None = 30.0,
        connect_timeout_s: float = 5.0,
        max_in_flight: int = 256,
    ) -> None:
        self.path = os.fspath(path)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._sizes: dict[int, int] = {}  # each waiting request's line length
        self._window = asyncio.Semaphore(max_in_flight)
        # Events for subscribe(). Past _EVENT_BUFFER of them the reader stops reading (back-
        # pressure) until the loop takes some, or a request waits for its reply, which may be
        # behind them: one made from inside the loop (a reply to each inbound message) would
        # otherwise wait for ever. While replies are awaited the buffer may pass the mark, up to
        # _EVENT_BUFFER_MAX: a loop that falls that far behind ends with a `dropped` event.
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._resume = asyncio.Event()
        self._listening = False  # a subscribe() loop takes events; otherwise they are dropped
        # The daemon's subscription of this connection, once made: (the kinds asked for, None
        # for all; the kinds it has). It lasts as long as the connection.
        self._subscribed: tuple[tuple[str, ...] | None, tuple[str, ...]] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._failure: ApiClientError | None = None
        self._connection = 0  # which connection this is: a subscription is of one
        self._connecting = asyncio.Lock()  # one connect() at a time

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect; again after the connection was lost or closed, a fresh start: the old one's
        failure, subscription and events do not carry over (a stream of it has ended). On a
        live connection it does nothing, so two tasks that lost one may both call it."""
        async with self._connecting:
            await self._connect()

    async def _connect(self) -> None:
        if self._writer is not None:
            if self._failure is None:
                return
            await self._close()
        self._connection += 1
        self._failure = None
        self._subscribed = None
        self._listening = False
        self._events = asyncio.Queue()
        self._writer = None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, self._writer = await asyncio.open_unix_connection(
                    self.path, limit=_LINE_LIMIT
                )
        except (OSError, TimeoutError) as exc:
            reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else "timed out"
            raise ApiConnectionError(
                f"cannot connect to {self.path} ({reason}); {_hint(exc, self.path)}"
            ) from None
        self._reading = asyncio.create_task(self._read_replies(reader, self._connection))

    async def close(self) -> None:
        async with self._connecting:  # not while a connect() is under way: it would leave one
            await self._close()

    async def _close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._fail_all(ApiConnectionError("the client was closed"))

    async def request(self, op: str, /, **fields: Any) -> dict[str, Any]:
        """Send one request and return its successful reply; ApiClientError otherwise."""
        async with self._window:
            return await self._exchange(op, fields)

    async def _exchange(self, op: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        if self._writer is None:
            raise ApiConnectionError("not connected")
        if self._failure is not None:
            raise self._failure
        rid = next(self._ids)
        try:
            line = json.dumps({"op": op, "id": rid, **fields}, allow_nan=False).encode() + b"\n"
        except (TypeError, ValueError) as exc:  # NaN, or a value JSON has no form for
            raise ApiClientError("invalid_request", f"cannot send as JSON: {exc}") from None
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = reply
        self._sizes[rid] = len(line)
        self._resume.set()  # its reply may be behind the events buffered
        try:
            self._writer.write(line)
            try:
                async with asyncio.timeout(self.timeout_s):
                    if self._writer.transport.get_write_buffer_size():
                        await self._writer.drain()
                    answer = await reply
            except TimeoutError:  # before OSError, of which it is a subclass
                raise ApiTimeoutError(
                    f"no reply to {op} within {self.timeout_s} s; it may have been carried out"
                ) from None
            except OSError:
                # The daemon may have said why before closing (unauthorized, too many
                # connections): the reader has that line or will have it shortly.
                if self._reading is not None:
                    await asyncio.wait({self._reading}, timeout=1.0)
                raise self._failure or ApiConnectionError("connection lost") from None
        finally:
            self._waiting.pop(rid, None)
            self._sizes.pop(rid, None)
        if answer.get("ok") is True:
            return answer
        raise ApiClientError.from_reply(answer.get("error"))

    async def _read_replies(self, reader: asyncio.StreamReader, connection: int) -> None:
        failure: ApiClientError = ApiConnectionError("the daemon closed the connection")
        try:
            while (line := await reader.readline()) and connection == self._connection:
                message = json.loads(line)
                if not isinstance(message, dict):
                    continue
                if "event" in message and "ok" not in message:
                    if self._listening:
                        self._events.put_nowait(message)
                        if self._events.qsize() >= _EVENT_BUFFER_MAX:
                            self._drop_subscription()
                        while (
                            self._listening
                            and self._events.qsize() >= _EVENT_BUFFER
                            and not self._waiting
                        ):
                            self._resume.clear()
                            await self._resume.wait()
                    continue
                rid = message.get("id")
                waiter = self._waiting.get(rid) if isinstance(rid, int) else None
                if waiter is not None:
                    if not waiter.done():
                        waiter.set_result(message)
                elif message.get("ok") is False and rid is None:
                    self._unattributed(ApiClientError.from_reply(message.get("error")))
        except (OSError, ValueError) as exc:
            failure = ApiConnectionError(f"connection broken: {exc}")
        finally:
            if connection == self._connection:  # not a newer connection's state
                self._fail_all(failure)

    def _drop_subscription(self) -> None:
        """The subscribe() loop fell too far behind: it ends after the events buffered and a
        last `dropped` (as the daemon's own), and the events after it are not kept."""
        self._listening = False
        self._events.put_nowait({"event": "dropped", "reason": "client fell behind"})
        self._events.put_nowait(None)

    def _unattributed(self, error: ApiClientError) -> None:
        """An error reply without an id. Refusing the connection (unauthorized, ...), the
        daemon is about to close it. `line_too_long` cannot carry the id of a line it did not
        parse, but only a line over the limit gets it and every other line is shorter: it is
        the longest line still waiting. Other such errors answer lines this client never writes.
        """
        if error.code in _CONNECTION_ERRORS:
            if self._failure is None:
                self._fail_all(error)
        elif error.code == "line_too_long" and self._sizes:
            longest = max(self._sizes, key=self._sizes.__getitem__)
            del self._sizes[longest]
            waiter = self._waiting.get(longest)
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)

    def _fail_all(self, failure: ApiClientError) -> None:
        if self._failure is None:
            self._failure = failure
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(self._failure)
        self._waiting.clear()
        self._sizes.clear()
        self._events.put_nowait(None)

    # --- ops ---

    async def submit(
        self,
        *,
        to: str,
        sender: str,
        text: str,
        priority: str | int | None = None,
        ref: str | None = None,
        validity_s: float | None = None,
        schedule_at: float | None = None,
        registered_delivery: bool | None = None,
        encoding: str | None = None,
        flash: bool | None = None,
        smart_encoding: bool | None = None,
    ) -> Submitted:
        fields = _submit_fields(
            to,
            sender,
            text,
            priority,
            ref,
            validity_s,
            schedule_at,
            registered_delivery,
            encoding,
            flash,
            smart_encoding,
        )
        return Submitted.from_reply(await self.request("submit", **fields))

    async def submit_many(
        self, messages: Sequence[Mapping[str, Any]]
    ) -> list[Submitted | ApiClientError]:
        """Submit several messages in one request; each item is a submit's fields (`from` or
        `sender` for the sender id). Results come back in order, each accepted or refused."""
        wire = [
            {("from" if k == "sender" else k): v for k, v in m.items() if v is not None}
            for m in messages
        ]
        reply = await self.request("submit_many", messages=wire)
        return [
            Submitted.from_reply(r)
            if r.get("ok") is True
            else ApiClientError.from_reply(r["error"])
            for r in reply["results"]
        ]

    async def status(
        self, message_id: int | None = None, *, ref: str | None = None
    ) -> dict[str, Any]:
        """The message by its id, or by the `ref` it was submitted with."""
        return _result(await self.request("status", **_target(message_id, ref)))

    async def cancel(
        self, message_id: int | None = None, *, ref: str | None = None
    ) -> dict[str, Any]:
        """Cancel the message's segments not yet sent; by its id, or by its `ref`."""
        return _result(await self.request("cancel", **_target(message_id, ref)))

    async def health(self) -> dict[str, Any]:
        return _result(await self.request("health"))

    async def stats(self) -> dict[str, Any]:
        return _result(await self.request("stats"))

    async def optout(
        self,
        action: str,
        sender: str | None = None,
        number: str | None = None,
        *,
        after: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """action: add | remove | list. Sender and number are required to add or remove;
        listing without a sender lists all of this client's senders, a page at a time: a
        reply with `next` has more, asked for with `after=reply["next"]`."""
        fields: dict[str, Any] = {"action": action}
        if sender is not None:
            fields["sender"] = sender
        if number is not None:
            fields["number"] = number
        if after is not None:
            fields["after"] = dict(after)
        return _result(await self.request("optout", **fields))

    async def inbound(self, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """This client's stored inbound messages with ids above `after`, oldest first (at most
        `limit`, 100 unless given): after a subscription ends, what it missed meanwhile."""
        fields: dict[str, Any] = {"after": after}
        if limit is not None:
            fields["limit"] = limit
        messages: list[dict[str, Any]] = _result(await self.request("inbound", **fields))[
            "messages"
        ]
        return messages

    async def finished(self, after: str | None = None, limit: int | None = None) -> dict[str, Any]:
        """This client's messages that finished after the cursor `after` (the `next` of an
        earlier reply; None: from the oldest kept), in the order they finished: `messages`
        (message_id, ref, state, finished_at), `next`, and `more`: a page may hold fewer than
        `limit` and not be the last, so go on while it is true."""
        fields: dict[str, Any] = {}
        if after is not None:
            fields["after"] = after
        if limit is not None:
            fields["limit"] = limit
        reply: dict[str, Any] = _result(await self.request("finished", **fields))
        return reply

    async def subscribe(
        self, events: Iterable[str] | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Events (`{"event": kind, ...}`) until the connection ends; all kinds by default.

        The daemon is asked when the loop first waits for an event: a service that reads what
        it missed (`inbound`, `finished`) should use `subscription()`, which returns once the
        daemon has the subscription, and read the backlog after it.

        A last `{"event": "dropped"}` means the daemon dropped this subscriber for falling behind,
        or this client did: the loop held over 10,000 events unread while requests on this
        connection awaited their replies (which the daemon then stops sending to read).

        A connection has one subscription, and one loop at a time takes its events: another
        subscribe() while one runs is ApiClientError(invalid_request). Once a loop has ended
        (left and closed: `aclose()`, or `contextlib.aclosing`), subscribe() to the same kinds
        goes on with the subscription the daemon has; events while no loop ran are not kept.
        """
        stream = await self.subscription(events)
        try:
            async for event in stream:
                yield event
        finally:
            await stream.aclose()

    async def subscription(self, events: Iterable[str] | None = None) -> Subscription:
        """Subscribe now: once this returns the daemon has the subscription, and its events are
        kept for the returned stream (iterate it; `aclose()` it, or use it in `async with`,
        when done). So a client that was away subscribes, then reads what it missed with
        `inbound` and `finished`, then iterates, dropping events it already read: nothing
        falls between the two. The rules of subscribe() apply."""
        asked = None if events is None else tuple(sorted(set(events)))
        if (failure := self._failure) is not None:  # the connection, and its subscription, gone
            raise failure
        if self._listening:
            raise ApiClientError(
                "invalid_request",
                "a subscribe() loop runs on this connection already: end it first (aclose), "
                "or use another Client",
            )
        subscribed = self._subscribed
        if subscribed is not None and asked != subscribed[0] and asked != subscribed[1]:
            raise ApiClientError(
                "invalid_request",
                f"this connection is subscribed to {', '.join(subscribed[1])} events; use "
                "another Client for others",
            )
        fields = {} if asked is None else {"events": list(asked)}
        self._listening = True  # before the ack: the events right after it are kept
        if subscribed is None:
            try:
                reply = await self.request("subscribe", **fields)
            except BaseException:
                self._stop_listening(self._connection)
                raise
            kinds = reply.get("events")
            self._subscribed = (asked, tuple(kinds) if isinstance(kinds, list) else ())
        return Subscription(self)

    async def _next_event(self, connection: int) -> dict[str, Any] | None:
        """The next event of the subscription made on `connection`, or None once that
        connection has ended."""
        if connection != self._connection or (self._failure is not None and self._events.empty()):
            return None
        event = await self._events.get()
        if event is not None and self._events.qsize() < _EVENT_BUFFER:
            self._resume.set()
        return event

    def _stop_listening(self, connection: int) -> None:
        """The subscription's stream ended: events are dropped, so replies still get read."""
        if connection != self._connection:
            return  # that connection is gone; this one's state is its own
        self._listening = False
        while not self._events.empty():
            self._events.get_nowait()
        self._resume.set()


class Subscription:
    """The events of a connection's subscription (`Client.subscription`), as an async
    iterator; it ends with the connection, or when closed (`aclose`, `async with`)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._connection = client._connection
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._closed:
            raise StopAsyncIteration
        event = await self._client._next_event(self._connection)
        if event is None:
            await self.aclose()
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._client._stop_listening(self._connection)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class SyncClient:
    """The same operations for scripts without an event loop: `with SyncClient(path) as c:`."""

    def __init__(self, path: str | os.PathLike[str], **options: Any) -> None:
        self._runner = asyncio.Runner()
        self._path = path
        self._options = options
        self._client: Client | None = None

    def __enter__(self) -> Self:
        self._client = self._run(self._open())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._client is not None:
                self._run(self._client.close())
        finally:
            self._runner.close()

    async def _open(self) -> Client:
        client = Client(self._path, **self._options)  # created inside the runner's loop
        await client.connect()
        return client

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self._runner.run(coro)

    @property
    def client(self) -> Client:
        if self._client is None:
            raise ApiConnectionError("not connected: use `with SyncClient(path) as client:`")
        return self._client

    def submit(self, **fields: Any) -> Submitted:
        """Keyword arguments as Client.submit (to, sender, text, priority, ref, ...)."""
        return self._run(self.client.submit(**fields))

    def submit_many(
        self, messages: Sequence[Mapping[str, Any]]
    ) -> list[Submitted | ApiClientError]:
        return self._run(self.client.submit_many(messages))

    def status(self, message_id: int | None = None, *, ref: str | None = None) -> dict[str, Any]:
        return self._run(self.client.status(message_id, ref=ref))

    def cancel(self, message_id: int | None = None, *, ref: str | None = None) -> dict[str, Any]:
        return self._run(self.client.cancel(message_id, ref=ref))

    def health(self) -> dict[str, Any]:
        return self._run(self.client.health())

    def stats(self) -> dict[str, Any]:
        return self._run(self.client.stats())

    def optout(
        self,
        action: str,
        sender: str | None = None,
        number: str | None = None,
        *,
        after: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        return self._run(self.client.optout(action, sender, number, after=after))

    def inbound(self, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        return self._run(self.client.inbound(after, limit))

    def finished(self, after: str | None = None, limit: int | None = None) -> dict[str, Any]:
        return self._run(self.client.finished(after, limit))


def submit_sync(path: str | os.PathLike[str], **fields: Any) -> Submitted:
    """Submit one message and return once it is durably queued (keyword arguments as
    Client.submit)."""
    with SyncClient(path) as client:
        return client.submit(**fields)


def _hint(exc: BaseException, path: str | os.PathLike[str]) -> str:
    """What to check, for the usual reasons a connect fails."""
    if isinstance(exc, PermissionError):
        return "is this user in the socket's group (smppd-api under the systemd unit)?"
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        return f"a Unix socket's path can be at most {_SUN_PATH_MAX} bytes: use a shorter one"
    try:
        is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        is_socket = True  # missing: as a daemon that is not running leaves it
    if not is_socket:  # a connect to a plain file is refused like one to a dead socket
        return "that is not a socket: is it the daemon's api.socket?"
    return "is the daemon running?"
