"""The control interface: newline-delimited JSON on a Unix socket or a 127.0.0.1 TCP port.

Owns the ops a test or a benchmark drives a fake SMSC with from another process: `inject_mo`,
`set` (fault knobs, and `receipts` settings), `receipt` (one, now, for a message id), `stats`,
`records` (paged), `wait_for`, `unbind`, `drop` and `send_raw`. A request is
`{"op": ..., "id": ...}`; the reply echoes `id` with `"ok": true` and a `result`, or
`"ok": false` and an `error` {code, message}. It must not know the wire protocol: it calls the
server's public methods only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smppd.pdu.errors import EncodeError
from smppd.pdu.national import NationalLanguage
from smppd.pdu.receipt import ReceiptStat
from smppd.pdu.segment import ConcatMethod
from tools.fake_smsc.config import receipt_config

if TYPE_CHECKING:
    from tools.fake_smsc.server import FakeSmsc

MAX_LINE = 1 << 20
MAX_CLIENTS = 64  # connections served at once; more are told so and closed
_PAGE = 1000

_log = logging.getLogger(__name__)


class ControlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Op = Callable[["FakeSmsc", dict[str, Any]], Awaitable[Any]]


async def _clear_stale_socket(path: Path) -> None:
    """Remove a socket left by an instance that is gone; refuse to touch anything else (a
    file, or the socket of an instance still answering), with ControlSocketError."""
    try:
        mode = os.lstat(path).st_mode  # a quick local call: no thread for it
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlSocketError(f"{path} exists and is not a socket: not replacing it")
    try:
        _reader, writer = await asyncio.open_unix_connection(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # nothing listens: stale
        return
    writer.close()
    raise ControlSocketError(f"{path} is in use by another fake SMSC")


class ControlSocketError(Exception):
    """The control socket path cannot be used."""


class ControlServer:
    def __init__(self, smsc: FakeSmsc) -> None:
        self._smsc = smsc
        self._server: asyncio.Server | None = None
        self._path: Path | None = None
        self._inode = 0
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self, where: str) -> str:
        """Listen on `where` (a port number, 0 for any, or a socket path); return the address."""
        if where.isascii() and where.isdigit():
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", int(where), limit=MAX_LINE
            )
            port = self._server.sockets[0].getsockname()[1]
            return f"127.0.0.1:{port}"
        path = Path(where)
        await _clear_stale_socket(path)
        self._server = await asyncio.start_unix_server(self._serve, where, limit=MAX_LINE)
        self._path = path
        os.chmod(where, 0o600)
        self._inode = os.stat(path).st_ino
        return where

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                if self._path.lstat().st_ino == self._inode:  # ours, not a newer one's
                    self._path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._clients) >= MAX_CLIENTS:  # each may hold a line of MAX_LINE being read
            message = f"at most {MAX_CLIENTS} control connections at a time"
            error = {"code": "too_many_connections", "message": message}
            writer.write(json.dumps({"id": None, "ok": False, "error": error}).encode() + b"\n")
            writer.close()
            return
        self._clients.add(task)
        try:
            while True:
                line = await _read_line(reader)
                if line is None:  # over MAX_LINE, skipped: the connection goes on
                    message = f"a request is one line of at most {MAX_LINE} bytes"
                    reply: dict[str, Any] = {"id": None, "ok": False}
                    reply["error"] = {"code": "line_too_long", "message": message}
                elif not line:
                    break
                else:
                    reply = await self._handle(line)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except ConnectionError:  # the peer went
            pass
        except asyncio.CancelledError:  # stop(): ended here, not raised into asyncio's callback
            pass
        finally:
            self._clients.discard(task)
            writer.close()

    async def _handle(self, line: bytes) -> dict[str, Any]:
        request_id: Any = None
        op: Any = None
        try:
            request = _parse(line)
            request_id, op = request.get("id"), request.get("op")
            result = await _op(request)(self._smsc, request)
        except ControlError as exc:
            return {"id": request_id, "ok": False, "error": {"code": exc.code, "message": str(exc)}}
        except (ValueError, TypeError, KeyError, EncodeError) as exc:  # EncodeError: an MO
            # text too long for 255 parts, say
            message = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            error = {"code": "bad_request", "message": message}
            return {"id": request_id, "ok": False, "error": error}
        except TimeoutError:
            error = {"code": "timeout", "message": "not reached in time"}
            return {"id": request_id, "ok": False, "error": error}
        except Exception as exc:  # a bug here: answer it rather than drop the connection
            # By its op alone: the request's values (an MO's numbers, say) are no log's to keep.
            _log.exception("control request %s failed", repr(op)[:40])
            error = {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}
            return {"id": request_id, "ok": False, "error": error}
        return {"id": request_id, "ok": True, "result": result}


async def _read_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next line (what is left at the end of the stream, b"" for nothing), or None for a
    line longer than the reader's limit, read to its end and dropped (memory stays bounded)."""
    too_long = False
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:  # the end of the stream
            return b"" if too_long else exc.partial
        except asyncio.LimitOverrunError as exc:
            too_long = True
            await reader.readexactly(exc.consumed)  # the part of the line in the buffer
            continue
        return None if too_long else line


def _parse(line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        raise ControlError("bad_json", "the request is not JSON") from None
    if not isinstance(request, dict):
        raise ControlError("bad_request", "a request is a JSON object")
    return request


def _no_constant(name: str) -> float:
    """NaN and Infinity are no JSON (Python's json reads them), nor is a number too big for a
    float (1e999): a reply echoing one would not be JSON either."""
    raise ValueError(name)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _op(request: dict[str, Any]) -> Op:
    op = _OPS.get(str(request.get("op")))
    if op is None:
        raise ControlError("unknown_op", f"unknown op {request.get('op')!r}")
    return op


def _text(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str):
        raise ControlError("bad_request", f"{key} must be a string")
    return value


def _count(request: dict[str, Any], key: str, default: int | None = None) -> int:
    """A whole number >= 0 (a JSON integer: not a float, not a boolean)."""
    value = request.get(key, default)
    if value is None:
        raise ControlError("bad_request", f"missing {key}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ControlError("bad_request", f"{key} must be a whole number >= 0, got {value!r}")
    return value


def _seconds(request: dict[str, Any], key: str, default: float) -> float:
    """A finite number of seconds >= 0."""
    value = request.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ControlError("bad_request", f"{key} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _flag(request: dict[str, Any], key: str) -> bool:
    value = request.get(key, False)
    if not isinstance(value, bool):
        raise ControlError("bad_request", f"{key} must be true or false, got {value!r}")
    return value


_NATIONAL = {language.name.lower(): language for language in NationalLanguage}


async def _inject_mo(smsc: FakeSmsc, request: dict[str, Any]) -> Any:
    method = request.get("concatenation")
    national = request.get("national")
    if national is not None and national not in _NATIONAL:
        raise ControlError("bad_request", f"national must be one of {sorted(_NATIONAL)}")
    # Every field read before the MO is queued: a bad_request queues nothing (sent again
    # corrected, it would go twice).
    wait, timeout = _flag(request, "wait"), _seconds(request, "timeout", 5.0)
    source, destination = _text(request, "source"), _text(request, "destination")
    text = _text(request, "text")
    acked = await smsc.inject_mo(
        source=source,
        destination=destination,
        text=text,
        account=request.get("account"),
        concatenation=None if method is None else ConcatMethod(method),
        national=None if national is None else _NATIONAL[national],
    )
    if wait:
        async with asyncio.timeout(timeout):
            await acked
    return {"queued": True, "acked": acked.done() and not acked.cancelled()}


async def _set(smsc: FakeSmsc, request: dict[str, Any]) -> Any:
    changes = {k: v for k, v in request.items() if k not in ("op", "id", "receipts")}
    receipts = request.get("receipts")
    new_receipts = smsc.receipts
    if receipts is not None:  # checked before anything changes, like the fault knobs
        new_receipts = receipt_config(receipts, smsc.receipts)
    smsc.set_faults(**changes)
    smsc.tracker.receipts = new_receipts
    return {"faults": smsc.faults.to_json()}


async def _receipt(smsc: FakeSmsc, request: dict[str, Any]) -> Any:
    word = request.get("stat")
    stat = None
    if word is not None:
        stat = ReceiptStat.__members__.get(str(word))
        if stat is None:
            choices = ", ".join(ReceiptStat.__members__)
            raise ControlError("bad_request", f"stat must be one of {choices}, got {word!r}")
    message_id = _text(request, "message_id")
    try:
        sent = smsc.tracker.receipt_on_demand(message_id, stat)
    except LookupError as exc:
        raise ControlError("not_found", str(exc.args[0])) from None
    return {"message_id": message_id, "stat": sent.value}


async def _stats(smsc: FakeSmsc, request: dict[str, Any]) -> Any:
    return smsc.stats()


async def _records(smsc: FakeSmsc, request: dict[str, Any]) -> Any:
    kind = request.get("kind", "messages")
    if kind not in ("messages", "segments"):
        raise ControlError("bad_request", "kind is messages or segments")
    items = smsc.records.messages if kind == "messages" else smsc.records.segments
    offset = _count(request, "offset", 0)
    limit = min(_count(request, "limit", _PAGE), _PAGE * 10)
    page = items[offset : offset + limit]
    return {
        "kind": kind,
        "total": len(items),
        "offset": offset,
        "items": [asdict(item) for item in page],
    }


async def _wait_for(smsc: FakeSmsc, request: dict[str, Any]) -> Any:
    await smsc.records.wait_for(
        _count(request, "count"),
        _seconds(request, "timeout", 5.0),
        segments=_flag(request, "segments"),
    )
    return {"messages": smsc.records.message_count, "segments": smsc.records.segment_count}


def _bind_id(request: dict[str, Any]) -> int | None:
    return None if request.get("bind_id") is None else _count(request, "bind_id")


def _reached(count: int, bind_id: int | None, *, bound: bool = False) -> dict[str, int]:
    if bind_id is not None and count == 0:
        which = "bound" if bound else "open"
        raise ControlError("not_found", f"no {which} connection with bind_id {bind_id}")
    return {"connections": count}


async def _unbind(smsc: FakeSmsc, request: dict[str, Any]) -> Any:
    bind_id = _bind_id(request)
    return _reached(smsc.send_unbind(bind_id), bind_id, bound=True)


async def _drop(smsc: FakeSmsc, request: dict[str, Any]) -> Any:
    bind_id = _bind_id(request)
    return _reached(smsc.drop(bind_id), bind_id)


async def _send_raw(smsc: FakeSmsc, request: dict[str, Any]) -> Any:
    data = bytes.fromhex(_text(request, "hex"))
    bind_id = _bind_id(request)
    return _reached(smsc.send_raw(data, bind_id), bind_id)


_OPS: dict[str, Op] = {
    "inject_mo": _inject_mo,
    "set": _set,
    "receipt": _receipt,
    "stats": _stats,
    "records": _records,
    "wait_for": _wait_for,
    "unbind": _unbind,
    "drop": _drop,
    "send_raw": _send_raw,
}
