"""The local API server: newline-delimited JSON over a Unix stream socket.

It owns the socket (created in a private directory so it is never briefly open to all, then
given its configured mode; a stale one from an earlier run replaced), who is calling (the peer's
uid by SO_PEERCRED, mapped to a configured client), each connection's limits (line size, idle
timeout, unanswered requests, a deadline on every write) and the wire format: requests parsed
into `smppd.service` values, replies and errors rendered with its stable codes. It must not know
how messages are validated, stored, routed or sent: that is the `Service` behind it.

Wire format. A request is one JSON object per line with an `op` and an optional `id` (a string or
an integer) echoed in its reply. Requests of one connection run concurrently, so replies may come
back out of order: the id correlates them. The `submit`s read in one go are handed to the service
together, as a `submit_many`'s messages are (one validation pass, one commit), and each is still
answered on its own line: under load a pipelining client gets batching without asking for it.
A reply is `{"ok": true, "id": ..., ...result}` (the keys `ok` and `id` are the server's; a
result never overrides them) or `{"ok": false, "id": ..., "error": {"code", "message",
"field"?}}`. After `subscribe` is answered, event lines `{"event": kind, ...}` follow on the
same connection until it closes.

Limits. A connection may have `max_pending_per_connection` messages in progress, and all of them
together `max_pending` (a submit_many counts its messages, any other request one); a request past
either is answered at once with `too_many_pending` rather than queued, so a client learns its
window instead of waiting on a stalled socket. A submit_many larger than both limits allow could
never start and gets `invalid_field` instead (the line cap does not bound it: `[1,1,...]` puts half
a million in a line). At most RUNNING_PER_CONNECTION requests other than submits run at once on a
connection; reading waits for one to end. A line longer than `max_line_bytes` is answered with
`line_too_long` as soon as the limit is passed and discarded up to its newline; the connection
stays usable. Each write waits for the peer to take the bytes for at most `write_timeout_s`, then
the connection is dropped. Meanwhile later replies wait their turn and the connection is not read:
a client that stops reading costs a socket buffer and the requests it already sent, never a reply
to everything it goes on sending. A connection with no requests in progress and no subscription is
closed after `idle_timeout_s` of silence. End of input ends the connection (and its subscription)
once the requests already read are answered; a subscription that ends (its client fell behind) ends
the connection too. Closing, the server sends EOF and waits a moment for the client's, so that
unread input does not turn into a reset that would cost the client its last replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import stat
import struct
import tempfile
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import structlog

from smppd.errors import SmppdError
from smppd.logsample import LogSample
from smppd.pathlock import LockHeld, PathLock
from smppd.service import (
    MAX_MESSAGE_ID,
    ApiError,
    ClientIdentity,
    ErrorCode,
    Priority,
    Service,
    SubmitReply,
    SubmitRequest,
    Subscription,
    parse_finished_token,
)

__all__ = [
    "EVENT_KINDS",
    "OPS",
    "ApiObserver",
    "ApiServer",
    "ApiServerError",
    "ApiSettings",
    "ClientDirectory",
    "ClientTable",
    "LineSplitter",
    "NullObserver",
    "parse_submit",
]

log = structlog.get_logger("smppd.api")

EVENT_KINDS: Final = frozenset({"receipt", "inbound", "state"})
ENCODINGS: Final = frozenset({"auto", "gsm7", "ucs2", "latin1"})
MAX_REF_CHARS: Final = 256  # a client reference is a key, not a payload
# Networks keep an undelivered SMS for days, not months (72 hours is common); a larger validity
# is a unit mistake (milliseconds), and past year 2099 SMPP's two-digit years cannot carry it.
MAX_VALIDITY_S: Final = 30 * 86_400.0
INBOUND_PAGE: Final = 100  # inbound messages an `inbound` request returns unless it says
INBOUND_PAGE_MAX: Final = 1000

_READ_CHUNK: Final = 64 * 1024
RUNNING_PER_CONNECTION: Final = 32  # requests other than submits in progress on one connection
# Ops whose reply is a page (10,000 opt-outs, 1,000 messages): one at a time on a connection,
# its reply written before the next starts. 32 of them waiting for a peer that does not read
# held ~100 MB a connection.
_PAGED: Final = frozenset({"optout", "inbound", "finished"})
_LINGER_S: Final = 1.0  # how long a closing connection waits for the peer's EOF
_UCRED: Final = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
_SUN_PATH_MAX: Final = 107
_INVALID_OP: Final = "invalid"  # metrics label for lines that never named a known op


class ApiServerError(SmppdError):
    """The API server cannot start (socket path unusable or already served)."""


# --- settings and clients -----------------------------------------------------------------------


class _ApiSection(Protocol):
    """The fields of the config's `api` section this server reads."""

    @property
    def socket(self) -> Path: ...
    @property
    def mode(self) -> int: ...
    @property
    def max_line_bytes(self) -> int: ...
    @property
    def idle_timeout_s(self) -> float: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def max_connections_per_client(self) -> int: ...
    @property
    def max_pending_per_connection(self) -> int: ...
    @property
    def max_pending(self) -> int: ...


class _ApiClientEntry(Protocol):
    """One configured client of the `api` section."""

    @property
    def name(self) -> str: ...
    @property
    def uids(self) -> tuple[int, ...]: ...
    @property
    def any_uid(self) -> bool: ...
    @property
    def senders(self) -> tuple[str, ...]: ...
    @property
    def priority_max(self) -> int | None: ...
    @property
    def max_queued(self) -> int | None: ...
    @property
    def smart_encoding(self) -> bool: ...
    @property
    def validity_s(self) -> float | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiSettings:
    socket: Path
    mode: int = 0o660
    max_line_bytes: int = 1024 * 1024
    idle_timeout_s: float = 300.0
    max_connections: int = 256
    max_connections_per_client: int = 128
    max_pending_per_connection: int = 10_000  # messages, as max_pending
    max_pending: int = 100_000  # messages in progress on all connections together
    write_timeout_s: float = 10.0  # a peer that takes no bytes for this long is dropped
    close_timeout_s: float = 5.0  # on close(): how long in-flight requests may still finish

    @classmethod
    def from_config(
        cls, section: _ApiSection, *, write_timeout_s: float = 10.0, close_timeout_s: float = 5.0
    ) -> ApiSettings:
        return cls(
            socket=section.socket,
            mode=section.mode,
            max_line_bytes=section.max_line_bytes,
            idle_timeout_s=section.idle_timeout_s,
            max_connections=section.max_connections,
            max_connections_per_client=section.max_connections_per_client,
            max_pending_per_connection=section.max_pending_per_connection,
            max_pending=section.max_pending,
            write_timeout_s=write_timeout_s,
            close_timeout_s=close_timeout_s,
        )


class ClientDirectory(Protocol):
    def identify(self, uid: int) -> ClientIdentity | None:
        """The client a peer with this uid acts as, or None: not allowed."""
        ...


def max_priority_for_flag(priority_flag: int | None) -> int:
    """The highest API priority (0..9) a client capped at SMPP priority_flag 0..3 may ask for.

    API priorities map to priority_flag by thirds (0-2 -> 0, 3-5 -> 1, 6-8 -> 2, 9 -> 3), so a
    cap of 1 still allows "normal" (5) and only a cap of 3 allows "urgent" (9).
    """
    return 9 if priority_flag is None else min(9, 3 * priority_flag + 2)


@dataclass(frozen=True, slots=True)
class ClientTable:
    """Clients by uid, and the one (if any) that any other uid acts as."""

    by_uid: Mapping[int, ClientIdentity] = field(default_factory=dict)
    any_uid: ClientIdentity | None = None

    def identify(self, uid: int) -> ClientIdentity | None:
        return self.by_uid.get(uid, self.any_uid)

    @classmethod
    def from_config(
        cls, clients: Iterable[_ApiClientEntry], owners: Mapping[str, str] | None = None
    ) -> ClientTable:
        """`owners`: sender id -> the client that owns it (`senders[].client`)."""
        by_uid: dict[int, ClientIdentity] = {}
        anyone: ClientIdentity | None = None
        owner_of = owners or {}
        for entry in clients:
            identity = ClientIdentity(
                name=entry.name,
                senders=frozenset(entry.senders),
                max_priority=max_priority_for_flag(entry.priority_max),
                owned=frozenset(s for s in entry.senders if owner_of.get(s) == entry.name),
                max_queued=entry.max_queued,
                smart_encoding=entry.smart_encoding,
                validity_s=entry.validity_s,
            )
            by_uid.update(dict.fromkeys(entry.uids, identity))
            if entry.any_uid:
                anyone = identity
        return cls(by_uid, anyone)


class ApiObserver(Protocol):
    """Hooks for metrics; labels are op names and error codes, never values from a request."""

    def request_finished(self, op: str, result: str, duration_s: float) -> None:
        """`op` is a known op or "invalid"; `result` is "ok" or an ErrorCode."""
        ...

    def messages_finished(self, results: Iterable[str]) -> None:
        """One result ("ok" or an ErrorCode) per message submitted, by submit or submit_many:
        a submit_many answers ok as a request even when each of its messages was refused."""
        ...

    def connection_refused(self, code: str) -> None: ...

    def connection_dropped(self, reason: str) -> None:
        """The server gave up on a connection: "write_timeout" (the peer stopped reading)."""
        ...


class NullObserver:
    def request_finished(self, op: str, result: str, duration_s: float) -> None:
        pass

    def messages_finished(self, results: Iterable[str]) -> None:
        pass

    def connection_refused(self, code: str) -> None:
        pass

    def connection_dropped(self, reason: str) -> None:
        pass


# --- framing ------------------------------------------------------------------------------------


class _TooLong:
    """Marker in LineSplitter output: a line passed the limit (reported once per line)."""

    def __repr__(self) -> str:
        return "TOO_LONG"


TOO_LONG: Final = _TooLong()


class LineSplitter:
    """Splits a byte stream into lines of at most `max_bytes` (newline excluded).

    A longer line yields TOO_LONG as soon as it passes the limit, and the rest of it up to its
    newline is discarded, so buffering never exceeds the limit however long the line.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | _TooLong]:
        out: list[bytes | _TooLong] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                if not self._discarding:
                    if len(self._buf) + len(data) - start > self._max:
                        out.append(TOO_LONG)
                        self._buf.clear()
                        self._discarding = True
                    else:
                        self._buf += data[start:]
                return out
            if self._discarding:
                self._discarding = False
            elif len(self._buf) + nl - start > self._max:
                out.append(TOO_LONG)
                self._buf.clear()
            elif self._buf:
                self._buf += data[start:nl]
                out.append(bytes(self._buf))
                self._buf.clear()
            else:
                out.append(data[start:nl])
            start = nl + 1

    def end(self) -> bytes | None:
        """At end of input, the last line if it had no newline (`printf '{...}' | nc -U`)."""
        rest = None if self._discarding or not self._buf else bytes(self._buf)
        self._buf.clear()
        return rest


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A name given twice is refused: parsers differ in which one counts (a proxy that checked
    # the first "to" would pass a message sent to the second).
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise ValueError(f"the name {name!r} is given twice in one object")
            seen.add(name)
    return found


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_object)
# Replies hold values built here and the request's own decoded id: none can contain itself, so
# the encoder's cycle check (an entry per container written: half its time on a submit_many
# reply) is off.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False)


def _decode(line: bytes) -> object:
    """The JSON value of a line; ValueError for anything that is not strict UTF-8 JSON."""
    try:
        return _DECODER.decode(line.decode("utf-8"))
    except RecursionError:  # deeply nested arrays: refused like any other bad JSON
        raise ValueError("nested too deeply") from None


def _encode(obj: Mapping[str, Any]) -> bytes:
    return _ENCODER.encode(obj).encode("ascii") + b"\n"


def _error_reply(rid: object, error: ApiError) -> dict[str, Any]:
    return {"ok": False, "id": rid, "error": error.to_json()}


def _ok_reply(rid: object, result: Mapping[str, Any]) -> dict[str, Any]:
    return {"ok": True, "id": rid, **{k: v for k, v in result.items() if k not in ("ok", "id")}}


# --- request fields -----------------------------------------------------------------------------

Request = Mapping[str, object]


def _invalid(name: str, rule: str) -> ApiError:
    return ApiError(ErrorCode.invalid_field, f"{name} must be {rule}", field=name)


_ENVELOPE: Final = frozenset({"op", "id"})


def _only(req: Request, allowed: frozenset[str]) -> None:
    extra = req.keys() - allowed
    if extra and not extra <= _ENVELOPE:
        key = next(key for key in req if key in extra and key not in _ENVELOPE)
        raise ApiError(ErrorCode.invalid_field, f"unknown field {key!r}", field=key)


def _value(req: Request, name: str, *, required: bool = False) -> object:
    """The field's value; None when absent or null (null is refused for a required field)."""
    if name not in req:
        if required:
            raise ApiError(ErrorCode.missing_field, f"{name} is required", field=name)
        return None
    value = req[name]
    if value is None and required:
        raise _invalid(name, "given (null is not allowed)")
    return value


def _str(value: object, name: str, *, max_chars: int | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(name, "a non-empty string")
    if max_chars is not None and len(value) > max_chars:
        raise _invalid(name, f"at most {max_chars} characters")
    if not value.isascii():
        try:
            value.encode()  # JSON's \ud800 escapes give lone surrogates, which nothing stores
        except UnicodeEncodeError:
            raise _invalid(name, "valid Unicode (no lone surrogates)") from None
    return value


def _int(value: object, name: str, lo: int, hi: int) -> int:
    # bool is an int in Python but never a number on the wire.
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _invalid(name, f"an integer from {lo} to {hi}")
    return value


def _float(
    value: object,
    name: str,
    *,
    above: float | None = None,
    lo: float = 0.0,
    most: float = math.inf,
) -> float:
    rule = f"a number above {above:g}" if above is not None else f"a number of at least {lo:g}"
    if most < math.inf:
        rule += f" and at most {most:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(name, rule)
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise _invalid(name, rule) from None
    in_range = number > above if above is not None else number >= lo
    if not (math.isfinite(number) and in_range and number <= most):
        raise _invalid(name, rule)
    return number


def _bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid(name, "true or false")
    return value


def _choice(value: object, name: str, choices: Iterable[str]) -> str:
    options = sorted(choices)
    if not isinstance(value, str) or value not in options:
        raise _invalid(name, "one of " + ", ".join(options))
    return value


def _priority(value: object) -> int:
    if isinstance(value, str) and value in Priority.NAMES:
        return Priority.NAMES[value]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9:
        return value
    names = ", ".join(f'"{n}"' for n in Priority.NAMES)
    raise _invalid("priority", f"{names} or an integer from 0 to 9")


# The optional fields in the order they are checked, each with its parser.
_SUBMIT_OPTIONS: Final[Mapping[str, Callable[[object], object]]] = {
    "priority": _priority,
    "ref": lambda value: _str(value, "ref", max_chars=MAX_REF_CHARS),
    "validity_s": lambda value: _float(value, "validity_s", above=0.0, most=MAX_VALIDITY_S),
    "schedule_at": lambda value: _float(value, "schedule_at", lo=0.0),
    "registered_delivery": lambda value: _bool(value, "registered_delivery"),
    "encoding": lambda value: _choice(value, "encoding", ENCODINGS),
    "flash": lambda value: _bool(value, "flash"),
    "smart_encoding": lambda value: _bool(value, "smart_encoding"),
}
_SUBMIT_FIELDS: Final = frozenset({"to", "from", "text", *_SUBMIT_OPTIONS})


def parse_submit(req: Request, *, nested: bool = False) -> SubmitRequest:
    """A submit request's fields as a SubmitRequest; ApiError naming the first bad field.
    `nested`: a message of a submit_many, whose `op` (if given) must be submit: another op
    there is a mistake, not a submit to make."""
    if nested and req.get("op", "submit") != "submit":
        raise ApiError(
            ErrorCode.invalid_field, "a message of a submit_many is a submit", field="op"
        )
    _only(req, _SUBMIT_FIELDS)
    options: dict[str, Any] = {}
    if not req.keys().isdisjoint(_SUBMIT_OPTIONS):  # most submits give none
        for name, parse in _SUBMIT_OPTIONS.items():
            if (value := req.get(name)) is not None:
                options[name] = parse(value)
    return SubmitRequest(
        to=_required_str(req, "to"),
        sender=_required_str(req, "from"),
        text=_required_str(req, "text"),
        **options,
    )


def _required_str(req: Request, name: str) -> str:
    value = req.get(name)
    if isinstance(value, str) and value and value.isascii():  # most are: spare the checks
        return value
    return _str(_value(req, name, required=True), name)


def _parse_message(message: object, *, nested: bool = False) -> SubmitRequest | ApiError:
    if not isinstance(message, dict):
        return ApiError(ErrorCode.invalid_request, "a message is a JSON object")
    try:
        return parse_submit(message, nested=nested)
    except ApiError as error:
        return error


async def _message_id(service: Service, client: ClientIdentity, req: Request) -> int:
    """The message a status or cancel names: by `message_id`, or by the `ref` it was
    submitted with (exactly one of them)."""
    _only(req, frozenset({"message_id", "ref"}))
    ref = _value(req, "ref")
    if ref is None:
        return _int(_value(req, "message_id", required=True), "message_id", 1, MAX_MESSAGE_ID)
    if _value(req, "message_id") is not None:
        raise _invalid("ref", "not given with message_id (one of them names the message)")
    return await service.message_id_of(client, _str(ref, "ref", max_chars=MAX_REF_CHARS))


def _event_kinds(req: Request) -> frozenset[str]:
    _only(req, frozenset({"events"}))
    value = _value(req, "events")
    if value is None:
        return EVENT_KINDS
    rule = "a non-empty list of " + ", ".join(sorted(EVENT_KINDS))
    if not isinstance(value, list) or not value:
        raise _invalid("events", rule)
    if not all(isinstance(k, str) and k in EVENT_KINDS for k in value):
        raise _invalid("events", rule)
    return frozenset(value)


# --- ops ----------------------------------------------------------------------------------------

OpHandler = Callable[[Service, ClientIdentity, Request], Awaitable[Mapping[str, Any]]]


async def _submit_all(
    service: Service, client: ClientIdentity, requests: Sequence[SubmitRequest], whole: bool
) -> list[SubmitReply | ApiError]:
    replies = await service.submit(client, requests, whole=whole)
    if len(replies) != len(requests):
        raise RuntimeError(f"service answered {len(replies)} of {len(requests)} submits")
    return replies


async def _submit_each(
    service: Service,
    client: ClientIdentity,
    parsed: Sequence[SubmitRequest | ApiError],
    *,
    whole: bool = True,
) -> list[SubmitReply | ApiError]:
    """The reply to each of `parsed`, in order. Each message was parsed on its own so that a bad
    one fails alone; the valid ones go to the service in one call, which commits them together
    (`whole`: a submit_many; otherwise single submits read together)."""
    valid = [p for p in parsed if isinstance(p, SubmitRequest)]
    replies = iter(await _submit_all(service, client, valid, whole) if valid else [])
    return [next(replies) if isinstance(p, SubmitRequest) else p for p in parsed]


def _in_place_of_valid(
    parsed: Sequence[SubmitRequest | ApiError], error: ApiError
) -> list[SubmitReply | ApiError]:
    return [error if isinstance(p, SubmitRequest) else p for p in parsed]


async def _op_submit_many(
    service: Service, client: ClientIdentity, req: Request
) -> Mapping[str, Any]:
    _only(req, frozenset({"messages"}))
    messages = _value(req, "messages", required=True)
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "a non-empty list of submit objects")
    parsed = [_parse_message(message, nested=True) for message in messages]
    results: list[dict[str, Any]] = []
    for outcome in await _submit_each(service, client, parsed):
        if isinstance(outcome, ApiError):
            results.append({"ok": False, "error": outcome.to_json()})
        else:
            results.append({"ok": True, **outcome.to_json()})
    return {"results": results}


def _weight(op: str, req: Request) -> int:
    """What a request counts against the pending limits: a submit_many its messages."""
    if op == "submit_many":
        messages = req.get("messages")
        if isinstance(messages, list) and messages:
            return len(messages)
    return 1


def _message_results(req: Request, outcome: Mapping[str, Any] | None, result: str) -> list[str]:
    """Each message's result in a submit_many's reply; the request's for each message it
    held (once if it held no list) when the whole call failed."""
    if outcome is None or result != "ok":
        messages = req.get("messages")
        return [result] * (len(messages) if isinstance(messages, list) and messages else 1)
    return ["ok" if r["ok"] else r["error"]["code"] for r in outcome["results"]]


async def _op_status(service: Service, client: ClientIdentity, req: Request) -> Mapping[str, Any]:
    return await service.status(client, await _message_id(service, client, req))


async def _op_cancel(service: Service, client: ClientIdentity, req: Request) -> Mapping[str, Any]:
    return await service.cancel(client, await _message_id(service, client, req))


async def _op_health(service: Service, client: ClientIdentity, req: Request) -> Mapping[str, Any]:
    _only(req, frozenset())
    return service.health()


async def _op_stats(service: Service, client: ClientIdentity, req: Request) -> Mapping[str, Any]:
    _only(req, frozenset())
    return await service.stats(client)


async def _op_optout(service: Service, client: ClientIdentity, req: Request) -> Mapping[str, Any]:
    _only(req, frozenset({"action", "sender", "number", "after"}))
    action = _choice(_value(req, "action", required=True), "action", ("add", "remove", "list"))
    changing = action != "list"
    # Listing without a sender lists every sender of the client's ("" to the service).
    raw_sender = _value(req, "sender", required=changing)
    sender = "" if raw_sender is None else _str(raw_sender, "sender")
    raw_number = _value(req, "number", required=changing)
    number = None if raw_number is None else _str(raw_number, "number")
    raw_after = _value(req, "after")
    if raw_after is None:
        return await service.optout(client, action, sender, number)
    # A list's `next`: {"sender": ..., "number": ...}.
    if changing or not isinstance(raw_after, dict) or set(raw_after) != {"sender", "number"}:
        raise ApiError(
            ErrorCode.invalid_field,
            'after is the `next` of an earlier list: {"sender": ..., "number": ...}',
            field="after",
        )
    after = (_str(raw_after["sender"], "after"), _str(raw_after["number"], "after"))
    return await service.optout(client, action, sender, number, after)


def _page_limit(req: Request) -> int:
    limit = _value(req, "limit")
    return INBOUND_PAGE if limit is None else _int(limit, "limit", 1, INBOUND_PAGE_MAX)


async def _op_inbound(service: Service, client: ClientIdentity, req: Request) -> Mapping[str, Any]:
    _only(req, frozenset({"after", "limit"}))
    after = _value(req, "after")
    return await service.inbound(
        client,
        0 if after is None else _int(after, "after", 0, MAX_MESSAGE_ID),
        _page_limit(req),
    )


async def _op_finished(service: Service, client: ClientIdentity, req: Request) -> Mapping[str, Any]:
    _only(req, frozenset({"after", "limit"}))
    after = _value(req, "after")
    return await service.finished(
        client,
        None if after is None else parse_finished_token(_str(after, "after", max_chars=64)),
        _page_limit(req),
    )


# `submit` is not here: a connection hands the submits it reads to the service in batches.
_HANDLERS: Final[Mapping[str, OpHandler]] = {
    "submit_many": _op_submit_many,
    "status": _op_status,
    "cancel": _op_cancel,
    "health": _op_health,
    "stats": _op_stats,
    "optout": _op_optout,
    "inbound": _op_inbound,
    "finished": _op_finished,
}
OPS: Final = frozenset({*_HANDLERS, "submit", "subscribe"})


def _log_internal(op: str, exc: BaseException) -> None:
    # The exception's message may quote a number or a text, so only its type and where it
    # happened are logged; the client is told nothing more than "internal".
    frames = traceback.extract_tb(exc.__traceback__)[-4:]
    where = " < ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(frames))
    log.error("api.internal_error", op=op, error=type(exc).__qualname__, where=where)


_INTERNAL: Final = ApiError(ErrorCode.internal, "internal error; see the daemon's log")


# --- connections --------------------------------------------------------------------------------


class _Connection:
    """One authenticated client connection: reads lines, runs requests, writes replies."""

    def __init__(
        self,
        server: ApiServer,
        client: ClientIdentity,
        uid: int | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._server = server
        self._settings = server.settings
        self.client = client  # a reload may give it other rights (ApiServer.set_clients)
        self.client_name = client.name
        self.uid = uid
        self._reader = reader
        self._writer = writer
        self._pending = 0
        self._stopping = False
        self._closing_error = ApiError(ErrorCode.shutting_down, "this connection is closing")
        self._broken = False
        self._subscription: Subscription | None = None
        self._forwarder: asyncio.Task[None] | None = None
        self._tasks: asyncio.TaskGroup | None = None
        # A read in progress is interrupted (stop, idle, an ended subscription) by cancelling
        # the connection's task while it waits in that read, and only then: no task and no
        # timer per read.
        self._task: asyncio.Task[Any] | None = None
        self._reading = False
        self._interrupted = False
        self._last_read = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle = False
        self._submits: list[tuple[object, Request]] = []  # read, not yet handed to the service
        # Held while a reply waits for the peer to take bytes: replies queue behind it rather
        # than in the transport's buffer, and reading waits for it, so a peer that does not
        # read stops being read from (one socket buffer and the requests in progress, never
        # every reply to everything it sent).
        self._writing = asyncio.Lock()
        self._running = asyncio.Semaphore(RUNNING_PER_CONNECTION)
        self._paging = asyncio.Lock()  # held by a request of _PAGED until its reply is written

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                await self._read_loop()
                # No more input: in-flight requests finish; the subscription ends now.
                self._end_subscription()
        except asyncio.CancelledError:
            self._broken = True  # close() gave up on us: no lingering either
            raise
        finally:
            self._end_subscription()
            # Its room is free before the peer sees the close: a client that reconnects at
            # once is not refused for the connection it just ended.
            self._server.forget(self)
            if not self._broken:
                await _linger(self._reader, self._writer)
            await _close_writer(self._writer, self._settings.write_timeout_s)

    def stop(self, error: ApiError | None = None) -> None:
        """Stop reading (lines already read get `error`, `shutting_down` by default); in-flight
        requests finish."""
        if error is not None:
            self._closing_error = error
        self._stopping = True
        self._interrupt()
        self._end_subscription()

    def _end_subscription(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        if self._forwarder is not None:
            self._forwarder.cancel()

    async def _read_loop(self) -> None:
        splitter = LineSplitter(self._settings.max_line_bytes)
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._last_read = loop.time()
        self._idle_timer = loop.call_at(
            self._last_read + self._settings.idle_timeout_s, self._idle_check
        )
        try:
            while not (self._stopping or self._broken):
                if self._writing.locked():
                    async with self._writing:
                        continue  # the peer took our replies (or was dropped): check again
                self._reading = True
                try:
                    data = await self._reader.read(_READ_CHUNK)
                except asyncio.CancelledError:
                    if not self._interrupted or self._task is None or self._task.uncancel():
                        raise  # not (only) ours: the connection itself is being cancelled
                    if self._idle:
                        log.info("api.idle_closed", client=self.client_name)
                    return
                except OSError:
                    return
                finally:
                    self._reading = False
                self._last_read = loop.time()
                if data:
                    lines = splitter.feed(data)
                else:  # end of input: a last line without its newline is still a request
                    last = splitter.end()
                    lines = [] if last is None else [last]
                try:
                    for line in lines:
                        if self._is_broken():
                            return
                        await self._handle_line(line)
                finally:
                    self._start_submits()  # what was read is performed, as each line's task was
                if not data:
                    return
        finally:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None

    def _idle_check(self) -> None:
        """Close a connection silent for idle_timeout_s with nothing in progress; one with
        requests in progress or a subscription waits another period."""
        loop = asyncio.get_running_loop()
        now, idle_s = loop.time(), self._settings.idle_timeout_s
        if now < self._last_read + idle_s:
            self._idle_timer = loop.call_at(self._last_read + idle_s, self._idle_check)
        elif not self._reading or self._pending or self._subscription is not None:
            self._last_read = now
            self._idle_timer = loop.call_at(now + idle_s, self._idle_check)
        else:
            self._idle_timer = None
            self._idle = True
            self._interrupt()

    def _interrupt(self) -> None:
        """End the read in progress, if there is one (the loop ends at its next turn if not)."""
        if self._reading and not self._interrupted and self._task is not None:
            self._interrupted = True
            self._task.cancel()

    def _is_broken(self) -> bool:
        return self._broken

    async def _handle_line(self, line: bytes | _TooLong) -> None:
        if isinstance(line, _TooLong):
            limit = self._settings.max_line_bytes
            error = ApiError(ErrorCode.line_too_long, f"request line longer than {limit} bytes")
            await self._refuse(None, _INVALID_OP, error)
            return
        if not line.strip():
            return  # blank lines are harmless keep-alives from hand-typed sessions
        try:
            req = _decode(line)
        except ValueError as exc:
            await self._refuse(None, _INVALID_OP, ApiError(ErrorCode.invalid_json, str(exc)))
            return
        if not isinstance(req, dict):
            error = ApiError(ErrorCode.invalid_request, "a request is a JSON object")
            await self._refuse(None, _INVALID_OP, error)
            return
        rid = req.get("id")
        if rid is not None and (not isinstance(rid, str | int) or isinstance(rid, bool)):
            await self._refuse(None, _INVALID_OP, _invalid("id", "a string or an integer"))
            return
        op = req.get("op")
        if op is None:
            error = ApiError(ErrorCode.missing_field, "op is required", field="op")
            await self._refuse(rid, _INVALID_OP, error)
        elif not isinstance(op, str) or op not in OPS:
            error = ApiError(ErrorCode.unknown_op, "op must be one of " + ", ".join(sorted(OPS)))
            await self._refuse(rid, _INVALID_OP, error)
        elif self._stopping:
            await self._refuse(rid, op, self._closing_error, req)
        elif op == "subscribe":
            await self._subscribe(rid, req)
        elif (weight := _weight(op, req)) > (most := self._most_per_call()):
            # Refused for good, not as too_many_pending: it would never fit (see the module doc).
            rule = (
                f"a list of at most {most} messages (the smaller of"
                " api.max_pending_per_connection and api.max_pending)"
            )
            await self._refuse(rid, op, _invalid("messages", rule), req)
        elif (crowded := self._crowded(weight)) is not None:
            await self._refuse(rid, op, ApiError(ErrorCode.too_many_pending, crowded), req)
        elif op == "submit":
            self._take(weight)
            self._submits.append((rid, req))
        else:
            assert self._tasks is not None
            self._start_submits()  # keep the order in which requests start
            # Each running request holds its reply until the peer reads it: reading waits for
            # a free place, so a peer that pipelines big reads (a `finished` page is ~400 KB
            # in memory) but does not read replies holds a few, never thousands.
            await self._running.acquire()
            self._take(weight)
            self._tasks.create_task(self._run(op, rid, req, weight))

    def _most_per_call(self) -> int:
        return min(self._settings.max_pending_per_connection, self._settings.max_pending)

    def _crowded(self, weight: int) -> str | None:
        """Why a request of `weight` messages cannot start now, or None. One alone on its
        connection is never refused here: one too large ever to fit was refused before."""
        settings, server = self._settings, self._server
        if self._pending and self._pending + weight > settings.max_pending_per_connection:
            limit = settings.max_pending_per_connection
            return f"{limit} messages already in progress on this connection"
        if server.pending and server.pending + weight > settings.max_pending:
            return f"{settings.max_pending} messages in progress in the daemon; retry shortly"
        return None

    def _take(self, weight: int) -> None:
        self._pending += weight
        self._server.pending += weight

    def _give_back(self, weight: int) -> None:
        self._pending -= weight
        self._server.pending -= weight

    def _start_submits(self) -> None:
        """Hand the submits read so far to the service in one call, as submit_many does: one
        validation pass and one commit for all of them instead of one each."""
        if self._submits:
            assert self._tasks is not None
            self._tasks.create_task(self._run_submits(self._submits))
            self._submits = []

    async def _run_submits(self, batch: list[tuple[object, Request]]) -> None:
        started = asyncio.get_running_loop().time()
        outcomes: list[SubmitReply | ApiError] = []
        try:
            parsed = [_parse_message(req) for _, req in batch]
            try:
                outcomes = await _submit_each(
                    self._server.service, self.client, parsed, whole=False
                )
            except ApiError as error:  # the whole call refused: each valid submit's answer
                outcomes = _in_place_of_valid(parsed, error)
            except Exception as exc:  # any bug in the core answers `internal`
                _log_internal("submit", exc)
                outcomes = _in_place_of_valid(parsed, _INTERNAL)
            lines = [
                _encode(_error_reply(rid, outcome))
                if isinstance(outcome, ApiError)
                else _encode(_ok_reply(rid, outcome.to_json()))
                for (rid, _), outcome in zip(batch, outcomes, strict=True)
            ]
            await self._send(b"".join(lines))
        finally:
            self._give_back(len(batch))
        elapsed = asyncio.get_running_loop().time() - started
        observer = self._server.observer
        results = [str(o.code) if isinstance(o, ApiError) else "ok" for o in outcomes]
        for result in results:
            observer.request_finished("submit", result, elapsed)
        observer.messages_finished(results)

    async def _run(self, op: str, rid: object, req: Request, weight: int = 1) -> None:
        started = asyncio.get_running_loop().time()
        try:
            if op in _PAGED:
                async with self._paging:
                    result, messages = await self._answer(op, rid, req)
            else:
                result, messages = await self._answer(op, rid, req)
        finally:
            self._give_back(weight)
            self._running.release()
        elapsed = asyncio.get_running_loop().time() - started
        self._server.observer.request_finished(op, result, elapsed)
        if messages is not None:
            self._server.observer.messages_finished(messages)

    async def _answer(self, op: str, rid: object, req: Request) -> tuple[str, list[str] | None]:
        """Perform a request and write its reply: the result, and a submit_many's per message."""
        outcome: Mapping[str, Any] | None = None
        try:
            outcome = await _HANDLERS[op](self._server.service, self.client, req)
            data, result = _encode(_ok_reply(rid, outcome)), "ok"
        except ApiError as error:
            data, result = _encode(_error_reply(rid, error)), str(error.code)
        except Exception as exc:  # any bug in the core answers `internal`
            _log_internal(op, exc)
            data, result = _encode(_error_reply(rid, _INTERNAL)), str(ErrorCode.internal)
        messages = _message_results(req, outcome, result) if op == "submit_many" else None
        # Only the bytes wait for the peer to read: the objects they came from are many times
        # their size.
        del outcome
        await self._send(data)
        return result, messages

    async def _subscribe(self, rid: object, req: Request) -> None:
        if self._subscription is not None:
            error = ApiError(ErrorCode.invalid_request, "this connection is already subscribed")
            await self._refuse(rid, "subscribe", error)
            return
        try:
            kinds = _event_kinds(req)
            subscription = self._server.service.subscribe(self.client, kinds)
        except ApiError as error:
            await self._refuse(rid, "subscribe", error)
            return
        except Exception as exc:
            _log_internal("subscribe", exc)
            await self._refuse(rid, "subscribe", _INTERNAL)
            return
        self._subscription = subscription
        await self._send(_encode(_ok_reply(rid, {"events": sorted(kinds)})))
        self._server.observer.request_finished("subscribe", "ok", 0.0)
        assert self._tasks is not None
        self._forwarder = self._tasks.create_task(self._forward(subscription))

    async def _forward(self, subscription: Subscription) -> None:
        try:
            async for event in subscription:
                await self._send(_encode(event.to_json()))
                if self._broken:
                    break
        except Exception as exc:
            _log_internal("subscribe", exc)
        finally:
            subscription.close()
            # A subscription that ended (the client fell behind, or the daemon is stopping)
            # ends the connection, so the client cannot mistake silence for no events.
            self._stopping = True
            self._interrupt()

    async def _refuse(
        self, rid: object, op: str, error: ApiError, req: Request | None = None
    ) -> None:
        """Answer `error` to a request not performed; a submit's messages count as refused."""
        await self._send(_encode(_error_reply(rid, error)))
        code = str(error.code)
        self._server.observer.request_finished(op, code, 0.0)
        if req is not None and op in ("submit", "submit_many"):
            self._server.observer.messages_finished(_message_results(req, None, code))

    async def _send(self, data: bytes) -> None:
        """Write some lines once earlier replies are taken; drop the connection if the peer
        does not take them in time."""
        if self._writing.locked():
            async with self._writing:
                if not self._write(data):
                    await self._drain()
        elif not self._write(data):  # else the kernel took it all: no wait, no timer to arm
            async with self._writing:  # free, so taken without waiting
                await self._drain()

    def _write(self, data: bytes) -> bool:
        """Write unless the connection is gone; whether nothing is left buffered."""
        if self._broken or self._writer.is_closing():
            self._broken = True
            return True
        self._writer.write(data)
        return not self._writer.transport.get_write_buffer_size()

    async def _drain(self) -> None:
        try:
            async with asyncio.timeout(self._settings.write_timeout_s):
                await self._writer.drain()
        except TimeoutError:
            log.warning("api.write_timeout", client=self.client_name)
            self._server.observer.connection_dropped("write_timeout")
            self._drop()
        except OSError:
            self._drop()

    def _drop(self) -> None:
        self._broken = True
        self._writer.transport.abort()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send EOF, then discard input until the peer's EOF (for at most _LINGER_S).

    Closing with unread input makes the kernel reset the connection, and an asyncio peer
    raises that reset before handing over lines it already has: our last replies (an
    `unauthorized`, the answers to requests in flight) would be lost.
    """
    try:
        async with asyncio.timeout(_LINGER_S):
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
            while await reader.read(_READ_CHUNK):
                pass
    except (TimeoutError, OSError):
        pass


async def _close_writer(writer: asyncio.StreamWriter, timeout_s: float) -> None:
    """Close, flushing what is buffered for at most `timeout_s`."""
    writer.close()
    try:
        async with asyncio.timeout(timeout_s):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except OSError:
        pass


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    _pid, uid, _gid = _UCRED.unpack(creds)
    return int(uid)


# --- the socket ---------------------------------------------------------------------------------


def _is_socket(path: Path) -> bool:
    """Whether something is at `path`: a socket (True); nothing (False); else ApiServerError."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    except OSError as exc:  # a directory on the way this user may not enter, say
        raise ApiServerError(f"{path}: cannot use the API socket path: {exc}") from exc
    if not stat.S_ISSOCK(info.st_mode):
        raise ApiServerError(f"{path} exists and is not a socket; refusing to replace it")
    return True


async def _check_stale(path: Path) -> None:
    """Refuse a path that is not a socket or that another process still serves."""
    if not _is_socket(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        async with asyncio.timeout(1.0):
            await asyncio.get_running_loop().sock_connect(probe, str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return  # left over from a run that did not clean up: safe to replace
    except (TimeoutError, BlockingIOError):
        pass  # a full backlog still means someone is listening
    except OSError as exc:
        raise ApiServerError(f"{path}: cannot check the existing socket: {exc}") from exc
    finally:
        probe.close()
    raise ApiServerError(f"{path} is in use by another process")


def _lock_path(path: Path) -> PathLock:
    """The socket path's lock (smppd.pathlock), or ApiServerError naming the holder."""
    try:
        return PathLock.take(path)
    except LockHeld as held:
        raise ApiServerError(f"{path} is in use by another process (pid {held.holder})") from None
    except OSError as exc:
        raise ApiServerError(f"{path}: cannot use the API socket path: {exc}") from None


def _bind(path: Path, mode: int) -> socket.socket:
    """A listening socket at `path` with `mode`, never reachable with looser permissions.

    It is bound in a fresh 0700 directory beside `path`, given its mode, then renamed into place
    (atomically replacing a stale socket). If that temporary name would be too long for
    sockaddr_un, the umask is narrowed around bind instead.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        private = Path(tempfile.mkdtemp(prefix=".s", dir=path.parent))
        try:
            staged = private / "s"
            if len(os.fsencode(staged)) <= _SUN_PATH_MAX:
                sock.bind(str(staged))
                os.chmod(staged, mode)
                sock.listen()
                os.rename(staged, path)
            else:
                if _is_socket(path):  # stale (_check_stale said so): bind cannot replace it
                    path.unlink()
                old = os.umask(0o177)
                try:
                    sock.bind(str(path))
                finally:
                    os.umask(old)
                os.chmod(path, mode)
                sock.listen()
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(private)
    except OSError as exc:
        sock.close()
        raise ApiServerError(f"{path}: cannot create the API socket: {exc}") from exc
    except BaseException:
        sock.close()
        raise
    return sock


# --- the server ---------------------------------------------------------------------------------


class ApiServer:
    """Serves the API on a Unix socket until close()."""

    def __init__(
        self,
        settings: ApiSettings,
        clients: ClientDirectory,
        service: Service,
        *,
        observer: ApiObserver | None = None,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.service = service
        self.observer: ApiObserver = observer or NullObserver()
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._path_lock: PathLock | None = None
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.pending = 0  # messages in progress on every connection (see max_pending)
        # Open connections per client: one client may not take them all from the others.
        self._per_client: Counter[str] = Counter()
        self._log_sample = LogSample()

    @property
    def connections(self) -> int:
        return len(self._connections)

    def set_clients(self, clients: ClientTable) -> None:
        """A reload's clients, for open connections too: one whose uid now maps to another
        client or to none is closed (requests in progress finish, lines read after get
        `unauthorized`); the others act with the new senders and priority cap at once."""
        self.clients = clients
        for conn in list(self._connections):
            identity = None if conn.uid is None else clients.identify(conn.uid)
            if identity is not None and identity.name == conn.client_name:
                conn.client = identity
                continue
            log.info("api.client_removed", client=conn.client_name, uid=conn.uid)
            conn.stop(ApiError(ErrorCode.unauthorized, "this client was removed by a reload"))

    async def start(self) -> None:
        path = self.settings.socket
        # Held while we listen: two daemons starting at once would otherwise both find the
        # path free, and the second's rename would take the first one's socket unnoticed.
        lock = _lock_path(path)
        try:
            await _check_stale(path)
            sock = _bind(path, self.settings.mode)
            self._inode = path.stat().st_ino
            self._server = await asyncio.start_unix_server(self._on_connect, sock=sock)
        except BaseException:
            lock.release()
            raise
        self._path_lock = lock
        log.info("api.listening", socket=str(path))

    async def close(self) -> None:
        """Stop accepting, let in-flight requests finish (up to close_timeout_s), end
        subscriptions, close every connection and remove the socket file."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        if self._path_lock is not None:  # no longer listening: a new daemon may take the path
            self._path_lock.release()
        for conn in list(self._connections):
            conn.stop()
        if self._handlers:
            _done, late = await asyncio.wait(
                set(self._handlers), timeout=self.settings.close_timeout_s
            )
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        self._remove_socket()

    def _remove_socket(self) -> None:
        path = self.settings.socket
        with contextlib.suppress(OSError):
            # Only our own file: a newer daemon may already have replaced it.
            if self._inode is not None and path.lstat().st_ino == self._inode:
                path.unlink()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except Exception as exc:  # one connection's bug stays there
            _log_internal("connection", exc)
            writer.transport.abort()
        except asyncio.CancelledError:
            # close() gave up waiting for this connection. Ending normally rather than
            # cancelled spares asyncio's stream callback (3.11) an error from task.exception().
            writer.transport.abort()
            if not self._closing:
                raise
        finally:
            self._handlers.discard(task)

    def _admit(self, uid: int | None) -> ClientIdentity | ApiError:
        client = None if uid is None else self.clients.identify(uid)
        if client is None:
            return ApiError(ErrorCode.unauthorized, f"uid {uid} is not an API client")
        if self._closing:
            return ApiError(ErrorCode.shutting_down, "the daemon is stopping")
        if len(self._connections) >= self.settings.max_connections:
            limit = self.settings.max_connections
            return ApiError(ErrorCode.too_many_connections, f"{limit} connections already open")
        if self._per_client[client.name] >= self.settings.max_connections_per_client:
            limit = self.settings.max_connections_per_client
            return ApiError(
                ErrorCode.too_many_connections,
                f"client {client.name!r} has {limit} connections open already",
            )
        return client

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = _peer_uid(writer)
        client = self._admit(uid)
        if isinstance(client, ApiError):
            code = str(client.code)
            left_out = self._log_sample.allow((code, uid), asyncio.get_running_loop().time())
            if left_out is not None:  # a loop of refused connects is one line per 10 s
                extra = {"same_since_last_line": left_out} if left_out else {}
                log.info("api.connection_refused", code=code, uid=uid, **extra)
            self.observer.connection_refused(str(client.code))
            writer.write(_encode(_error_reply(None, client)))
            await _linger(reader, writer)
            await _close_writer(writer, self.settings.write_timeout_s)
            return
        conn = _Connection(self, client, uid, reader, writer)
        self._connections.add(conn)
        self._per_client[client.name] += 1
        log.debug("api.connected", client=client.name, uid=uid)
        try:
            await conn.run()
        finally:
            self.forget(conn)
            log.debug("api.disconnected", client=client.name)

    def forget(self, conn: _Connection) -> None:
        """`conn` no longer counts against the connection limits (once, however it ended)."""
        if conn in self._connections:
            self._connections.discard(conn)
            self._per_client[conn.client_name] -= 1
