"""What the local API offers, in domain words: the contract between the socket server and the core.

The API server (smppd.api) parses requests into these values and renders replies and errors; the
gateway (smppd.gateway) implements `Service`. Neither side knows the other's internals, so the
server is tested against a stand-in service and the gateway without a socket.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import field
from enum import StrEnum
from typing import Any, Final, Protocol

from smppd.errors import SmppdError
from smppd.record import record

MAX_MESSAGE_ID: Final = 2**63 - 1  # ids are SQLite integers


class ErrorCode(StrEnum):
    """Stable error codes of the API (documented in the README; never renamed)."""

    invalid_json = "invalid_json"
    line_too_long = "line_too_long"
    invalid_request = "invalid_request"  # not an object, or a field of the wrong type
    missing_field = "missing_field"
    invalid_field = "invalid_field"
    unknown_op = "unknown_op"
    invalid_address = "invalid_address"
    unencodable_text = "unencodable_text"
    too_many_segments = "too_many_segments"
    sender_not_allowed = "sender_not_allowed"
    opted_out = "opted_out"
    over_daily_cap = "over_daily_cap"
    no_route = "no_route"
    not_found = "not_found"
    queue_full = "queue_full"
    client_queue_full = "client_queue_full"
    storage_full = "storage_full"
    storage_error = "storage_error"  # the store failed otherwise: locked, I/O errors
    too_many_pending = "too_many_pending"
    too_many_connections = "too_many_connections"
    unauthorized = "unauthorized"
    shutting_down = "shutting_down"
    internal = "internal"


class ApiError(SmppdError):
    """A request refused with a stable code; `field` names the offending request field if any."""

    def __init__(self, code: ErrorCode, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": str(self.code), "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return error


@record
class ClientIdentity:
    """A configured API client, resolved from the caller's uid."""

    name: str
    senders: frozenset[str]  # it may send from these
    max_priority: int = 9
    # Of those, the ones it owns (`senders[].client`): only an owner manages their opt-outs,
    # which hold other people's numbers and decide what the owner's messages may reach.
    owned: frozenset[str] = frozenset()
    # Its segments not yet accepted by an SMSC past which its submits are refused (None: only
    # the queue's max_depth applies), so that one client's flood cannot fill the queue.
    max_queued: int | None = None
    smart_encoding: bool = False  # for its submits that do not say
    # How long its messages without a validity_s may wait, from when they are due (None: no
    # limit of its own).
    validity_s: float | None = None


class Priority:
    """Named priorities; requests may also give an integer 0..9 (higher is more urgent)."""

    NAMES: Mapping[str, int] = {"bulk": 0, "normal": 5, "urgent": 9}


@record
class SubmitRequest:
    to: str
    sender: str
    text: str
    priority: int = 5
    ref: str | None = None
    validity_s: float | None = None
    schedule_at: float | None = None  # epoch seconds
    registered_delivery: bool = True
    encoding: str = "auto"  # auto | gsm7 | ucs2 | latin1
    flash: bool = False  # message class 0: shown at once, not stored by the handset
    # Look-alike punctuation in GSM characters where that spares UCS-2 (smppd.pdu.lookalike);
    # None: as the client's configuration says.
    smart_encoding: bool | None = None


@record
class SubmitReply:
    id: int
    segments: int
    created: bool  # False when `ref` matched an earlier submit (idempotent)

    def to_json(self) -> dict[str, Any]:
        # "id" on the wire is the request's own id, echoed; the message's is "message_id".
        return {"message_id": self.id, "segments": self.segments, "created": self.created}


@record
class Event:
    """Something a subscriber hears about: kind is `receipt`, `inbound` or `state`."""

    kind: str
    client: str | None
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, **self.data}


class Subscription(Protocol):
    """A bounded stream of events for one client; ends (with a last `dropped` event) if it lags."""

    def __aiter__(self) -> AsyncIterator[Event]: ...

    def close(self) -> None: ...


class Service(Protocol):
    async def submit(
        self, client: ClientIdentity, requests: Sequence[SubmitRequest], *, whole: bool = True
    ) -> list[SubmitReply | ApiError]:
        """Validate and durably queue; each reply is sent only after its message is on disk.
        `whole`: one call (a submit_many), refused whole when the queue's depth or the client's
        max_queued would be passed; otherwise independent submits, taken in order while they fit."""
        ...

    async def status(self, client: ClientIdentity, message_id: int) -> dict[str, Any]:
        """Raises ApiError(not_found) for unknown ids and for other clients' messages."""
        ...

    async def cancel(self, client: ClientIdentity, message_id: int) -> dict[str, Any]: ...

    async def message_id_of(self, client: ClientIdentity, ref: str) -> int:
        """The id of the client's message submitted with `ref`; ApiError(not_found) if none."""
        ...

    def subscribe(self, client: ClientIdentity, kinds: frozenset[str]) -> Subscription: ...

    def health(self) -> dict[str, Any]: ...

    async def stats(self, client: ClientIdentity) -> dict[str, Any]: ...

    async def optout(
        self,
        client: ClientIdentity,
        action: str,
        sender: str,
        number: str | None,
        after: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """action: add | remove | list (a page, after the (sender, number) `after`)."""
        ...

    async def inbound(self, client: ClientIdentity, after: int, limit: int) -> dict[str, Any]:
        """The client's stored inbound messages with ids above `after`, oldest first: what a
        subscriber missed while it was away (`messages`)."""
        ...

    async def finished(
        self, client: ClientIdentity, after: tuple[float, int] | None, limit: int
    ) -> dict[str, Any]:
        """The client's messages finished after the cursor `after` (None: the oldest kept),
        in the order they finished (`messages`), and the cursor of the next page (`next`)."""
        ...


# The cursor of the `finished` op on the wire: "<finished_at>:<message_id>", opaque to clients.
def finished_token(cursor: tuple[float, int]) -> str:
    return f"{cursor[0]!r}:{cursor[1]}"


def parse_finished_token(token: str) -> tuple[float, int]:
    """A cursor `finished_token` wrote; ApiError (invalid_field, `after`) for anything else."""
    at, _, message_id = token.rpartition(":")
    try:
        cursor = (float(at), int(message_id))
    except ValueError:
        cursor = None
    if (
        cursor is None
        or not (math.isfinite(cursor[0]) and cursor[0] >= 0)
        or not 0 <= cursor[1] <= MAX_MESSAGE_ID
    ):
        raise ApiError(
            ErrorCode.invalid_field,
            "after must be the `next` of an earlier finished reply",
            field="after",
        )
    return cursor
