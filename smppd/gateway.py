"""The core behind the local API: validate, route, prepare and durably queue; read back status.

It implements `smppd.service.Service`. A submit is checked (sender allowed for the client, number
valid, not opted out, text encodable within the segment cap, queue not over its depth), routed to
a carrier, split into submit_sm bodies and enqueued; the reply goes out only after the store's
commit. Everything accepted in one call shares one group commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol

import structlog

from smppd.address import NumberPlan, canonical_sender, check_sender, normalise_destination
from smppd.events import KINDS, EventHub, inbound_json
from smppd.logsample import LogSample
from smppd.outbound import OutboundProfile, Prepared, prepare
from smppd.pdu.segment import ConcatMethod, ReferenceAllocator
from smppd.pdu.status import status_name
from smppd.queue.base import ENQUEUE_MAX, Queue
from smppd.queue.errors import QueueClosedError, QueueError, StorageFullError
from smppd.queue.model import (
    FINISHED_START,
    URGENT_PRIORITY,
    Change,
    ClaimedSegment,
    Enqueued,
    MessageStatus,
    NewMessage,
    OptOut,
)
from smppd.routing import Router
from smppd.senderpolicy import DailyCaps
from smppd.service import (
    ApiError,
    ClientIdentity,
    ErrorCode,
    SubmitReply,
    SubmitRequest,
    Subscription,
    finished_token,
)

log = structlog.get_logger(__name__)

OPTOUT_PAGE: Final = 10_000  # opt-outs in one `optout list` reply; `next` continues
REF_LOOKUPS_MAX: Final = 1_000  # refs of refused submits looked up in one call (_known_refs)
HAND_OVER_MAX: Final = 16  # segments per call claimed on arrival, as urgent enqueues are small


class SendLoops(Protocol):
    """What the gateway needs of the carriers' send loops (smppd.sendloop)."""

    def wake(self, carrier: str, urgent_at: float | None) -> None:
        """Work was queued; an urgent message is due at `urgent_at` (None: none is)."""

    def ready_for_urgent(self, carrier: str) -> bool:
        """Whether an urgent message handed over now would go out at once."""

    def ready_for_arrival(self, carrier: str) -> bool:
        """Whether any message handed over now would go out at once and pass nothing queued."""

    def hand_over(self, carrier: str, segments: Sequence[ClaimedSegment]) -> None:
        """Send these segments, claimed by the store as it stored them."""

    def withdraw(self, segment_ids: Sequence[int]) -> None:
        """These segments were cancelled: not to be sent if claimed and not yet written."""


@dataclasses.dataclass(slots=True)
class _Accepted:
    """A validated message on its way into the queue, with its daily-cap reservation."""

    message: NewMessage
    cap_day: int | None
    slot: int = 0


# How far ahead a submit may be scheduled: further is a unit mistake (epoch milliseconds), and a
# message held that long would outlive anything it was meant to say.
MAX_SCHEDULE_AHEAD_S: Final = 366 * 86_400.0


def _check_schedule(request: SubmitRequest, now: float) -> None:
    """Refuse a schedule that cannot work: years ahead, or after the message expires."""
    at = request.schedule_at
    if at is None:
        return
    if at > now + MAX_SCHEDULE_AHEAD_S:
        raise ApiError(
            ErrorCode.invalid_field,
            f"schedule_at is more than {MAX_SCHEDULE_AHEAD_S / 86_400:.0f} days ahead "
            "(it is in epoch seconds)",
            field="schedule_at",
        )
    if request.validity_s is not None and at >= now + request.validity_s:
        raise ApiError(
            ErrorCode.invalid_field,
            "schedule_at is after the message would expire (validity_s counts from the submit)",
            field="schedule_at",
        )


def _writes(batch: list[_Accepted]) -> list[list[_Accepted]]:
    """A call's messages as store writes: its urgent ones first, as a write of their own that
    the store commits ahead of the rest instead of inside a transaction full of it, then the
    others, at most ENQUEUE_MAX a write. Those are of even sizes (1,030 is 515 and 515, not
    1,024 and 6), so that the store takes them all as bulk writes, applied in order: a small
    tail would go ahead of the call's head, taking lower ids (and so being sent first), and
    a ref repeated across them would be created at its later place. For the same reason a
    repeated ref goes where its first place went: an urgent resubmit of a bulk message is
    that message, not one of its own written ahead of it."""
    urgent: list[_Accepted] = []
    rest: list[_Accepted] = []
    first_urgent: dict[str, bool] = {}  # by ref: whether its first place was urgent
    for accepted in batch:
        message = accepted.message
        is_urgent = message.priority >= URGENT_PRIORITY
        if message.ref is not None:
            is_urgent = first_urgent.setdefault(message.ref, is_urgent)
        (urgent if is_urgent else rest).append(accepted)
    if not rest and len(batch) <= ENQUEUE_MAX:
        return [batch]
    writes = max(1, -(-len(rest) // ENQUEUE_MAX))  # rounded up, as is the size
    size = max(1, -(-len(rest) // writes))
    chunks = [rest[i : i + size] for i in range(0, len(rest), size)]
    return [urgent, *chunks] if urgent else chunks


def _expires_at(request: SubmitRequest, client: ClientIdentity, now: float) -> float | None:
    """A submit's validity_s counts from the submit; the client's default, from when the
    message is due, so that a scheduled message is not refused for outliving it."""
    if request.validity_s is not None:
        return now + request.validity_s
    if client.validity_s is None:
        return None
    due = now if request.schedule_at is None else max(now, request.schedule_at)
    return due + client.validity_s


# Refusals for what has changed since a message was stored (room, a route, an opt-out): a
# resubmit of its ref gets that message instead (Gateway._known_refs).
_SINCE_REFUSALS: Final = frozenset(
    {
        ErrorCode.over_daily_cap,
        ErrorCode.queue_full,
        ErrorCode.client_queue_full,
        ErrorCode.opted_out,
        ErrorCode.no_route,
    }
)


def _opted_out() -> ApiError:
    return ApiError(
        ErrorCode.opted_out, "the recipient opted out of messages from this sender", field="to"
    )


# Every request fails alike while the store does: one line per kind and 10 s, with a count.
_STORAGE_LOG: Final = LogSample()
_log_clock: Callable[[], float] = time.monotonic


def _storage_error(
    exc: QueueError, *, op: str = "submit", outcome: str = "nothing was accepted"
) -> ApiError:
    """What the client is told of a store that could not take (or check) its request:
    storage_full for a full disk, shutting_down for a store closed by a stopping daemon, else
    storage_error; logged here (sampled), not as a fault of the core."""
    if isinstance(exc, QueueClosedError):
        return ApiError(ErrorCode.shutting_down, f"the daemon is stopping; {outcome}")
    full = isinstance(exc, StorageFullError)
    left_out = _STORAGE_LOG.allow((op, exc.code), _log_clock())
    if left_out is not None:
        same = {"same_since_last_line": left_out} if left_out else {}
        if full:
            log.error("storage full: refused until space is freed", op=op, **same)
        else:
            log.error("queue error", op=op, error=str(exc), **same)
    if full:
        return ApiError(ErrorCode.storage_full, f"storage is full; {outcome}")
    how = f"{exc.code}: {exc.reason}" if exc.reason else exc.code
    return ApiError(ErrorCode.storage_error, f"storage error ({how}); {outcome}")


@contextlib.contextmanager
def _storage_errors(op: str) -> Iterator[None]:
    """_storage_error for a request the store could not serve (a read, a cancel, an
    opt-out), raised: storage_error, not `internal`, and logged sampled."""
    try:
        yield
    except QueueError as exc:
        raise _storage_error(exc, op=op, outcome="try again") from None


def _or_default(asked: bool | None, default: bool) -> bool:
    return default if asked is None else asked


def _urgent_at(message: NewMessage, now: float) -> float | None:
    """When an urgent message is due (None if it is not urgent): its send loop's urgent
    claimer runs then."""
    if message.priority < URGENT_PRIORITY:
        return None
    return now if message.not_before is None else max(now, message.not_before)


@dataclasses.dataclass(frozen=True, slots=True)
class GatewaySettings:
    max_depth: int
    numbers: NumberPlan = dataclasses.field(default_factory=NumberPlan)
    # Source TON/NPI of the configured senders, from their kind: an all-digit alphanumeric id
    # or a long number of 7 or 8 digits does not read as such from its form.
    sender_ton_npi: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    optout_per_client: bool = False  # compliance.scope client


class Gateway:
    def __init__(
        self,
        *,
        queue: Queue,
        router: Router,
        profiles: Mapping[str, OutboundProfile],
        hub: EventHub,
        settings: GatewaySettings,
        down_since: Callable[[str], float | None],
        loops: SendLoops,
        health: Callable[[], dict[str, Any]],
        clock: Callable[[], float],
        caps: DailyCaps | None = None,
    ) -> None:
        self._queue = queue
        self._caps = caps or DailyCaps({})
        self._router = router
        self._profiles = profiles
        self._hub = hub
        self._settings = settings
        self._down_since = down_since
        self._loops = loops
        self._health = health
        self._clock = clock
        self._refs = ReferenceAllocator()
        # Segments past the depth checks and not yet stored, in all and by client: the depths
        # count them, or concurrent calls would each pass against the same stored counts.
        self._admitting = 0
        self._admitting_of: Counter[str] = Counter()
        self.accepted = 0
        self.shutting_down = False

    def reconfigure(
        self,
        router: Router,
        profiles: Mapping[str, OutboundProfile],
        *,
        settings: GatewaySettings | None = None,
        caps: DailyCaps | None = None,
    ) -> None:
        """Take new routes, carrier profiles, settings and caps (SIGHUP); queued work keeps its
        carrier and its encoding."""
        self._router = router
        self._profiles = profiles
        if settings is not None:
            self._settings = settings
        if caps is not None:
            self._caps = caps

    # --- submit ----------------------------------------------------------------------------

    async def submit(
        self, client: ClientIdentity, requests: Sequence[SubmitRequest], *, whole: bool = True
    ) -> list[SubmitReply | ApiError]:
        if self.shutting_down:
            error = ApiError(ErrorCode.shutting_down, "smppd is shutting down; submit again")
            return [error for _ in requests]
        now = self._clock()
        optouts_seen = self._queue.optouts_recorded  # see Queue.enqueue
        results: list[SubmitReply | ApiError | None] = []  # one for each request, in order
        batch: list[_Accepted] = []
        try:
            for request in requests:
                try:
                    accepted = await self._validate(client, request, now)
                except ApiError as exc:
                    results.append(exc)
                    continue
                except QueueError as exc:  # the opt-out lookup
                    results.append(_storage_error(exc))
                    continue
                accepted.slot = len(results)
                results.append(None)
                batch.append(accepted)
        except BaseException:  # nothing of the call is stored: its cap reservations go back
            for accepted in batch:
                self._release(accepted)
            raise
        refused: ApiError | None = None
        if batch and not whole:  # independent submits: those that fit, in order
            batch = self._fitting(client, batch, results)
        elif batch:  # a call: refused whole if it would pass a depth
            refused = self._over_depth(client, sum(len(a.message.segments) for a in batch))
        if batch:
            groups = [batch] if refused is not None else _writes(batch)
            refusals: Sequence[ApiError | None] = [refused]
            if refused is None:
                self._arrivals(batch, now)
                refusals = await self._write(client, groups, results, now, optouts_seen)
            for group, refusal in zip(groups, refusals, strict=True):
                if refusal is not None:
                    for accepted in group:
                        results[accepted.slot] = refusal
                        self._release(accepted)
        await self._known_refs(client, requests, results)
        return [r for r in results if r is not None]

    async def _write(
        self,
        client: ClientIdentity,
        groups: list[list[_Accepted]],
        results: list[SubmitReply | ApiError | None],
        now: float,
        optouts_seen: int,
    ) -> Sequence[ApiError | None]:
        """Store a call's groups (see _writes): each one's refusal, or None. Their segments
        count against the depths from here; each write's share goes back as it returns
        (stored, the store's counts have it), the rest if the call ends first."""
        shares = [sum(len(a.message.segments) for a in g) for g in groups]
        self._admit(client.name, sum(shares))
        written = [False] * len(groups)

        def stored(i: int) -> None:
            if not written[i]:
                written[i] = True
                self._admit(client.name, -shares[i])

        try:
            if len(groups) == 1:  # most calls: no task for it
                return [await self._enqueue(groups[0], results, now, optouts_seen)]
            # Queued in order: a ref repeated within the call finds its first.
            writes = (
                self._enqueue(g, results, now, optouts_seen, functools.partial(stored, i))
                for i, g in enumerate(groups)
            )
            return await asyncio.gather(*writes)
        finally:
            for i in range(len(groups)):
                stored(i)

    async def _known_refs(
        self,
        client: ClientIdentity,
        requests: Sequence[SubmitRequest],
        results: list[SubmitReply | ApiError | None],
    ) -> None:
        """A submit refused for what changed since its ref's message was stored (room: a cap,
        the queue's depth; the route; an opt-out since) is that message again: a client
        resubmitting after a lost reply must not be told that what was stored (and may have
        been sent) was refused. At most REF_LOOKUPS_MAX lookups a call: a flood refused for
        a full queue must not cost a store read per message. A message this call created is
        not one stored before (a ref given twice in the call): the refusal stands."""
        created = {r.id for r in results if isinstance(r, SubmitReply) and r.created}
        lookups = 0
        for i, (request, result) in enumerate(zip(requests, results, strict=True)):
            if (
                request.ref is None
                or not isinstance(result, ApiError)
                or result.code not in _SINCE_REFUSALS
            ):
                continue
            lookups += 1
            if lookups > REF_LOOKUPS_MAX:
                return
            try:
                message_id = await self._queue.message_id_of(client.name, request.ref)
                found = (
                    None
                    if message_id is None
                    else await self._queue.status(message_id, client.name)
                )
            except QueueError:
                continue  # the refusal stands: resubmitting later finds it
            if found is not None and found.message_id not in created:
                results[i] = SubmitReply(found.message_id, len(found.segments), created=False)

    def _fitting(
        self,
        client: ClientIdentity,
        batch: list[_Accepted],
        results: list[SubmitReply | ApiError | None],
    ) -> list[_Accepted]:
        """Of independent submits, those that fit the depths in order; each of the rest gets
        the refusal it would have had alone (and gives its cap reservation back)."""
        fit: list[_Accepted] = []
        segments = 0
        for accepted in batch:
            more = len(accepted.message.segments)
            refused = self._over_depth(client, segments + more)
            if refused is None:
                fit.append(accepted)
                segments += more
            else:
                results[accepted.slot] = refused
                self._release(accepted)
        return fit

    def _admit(self, client: str, segments: int) -> None:
        self._admitting += segments
        self._admitting_of[client] += segments
        if not self._admitting_of[client]:
            del self._admitting_of[client]

    def _over_depth(self, client: ClientIdentity, segments: int) -> ApiError | None:
        """The refusal for `segments` more from `client`, if they would pass a depth (with
        what other calls have past the checks and not yet stored)."""
        if self._queue.queued_depth() + self._admitting + segments > self._settings.max_depth:
            return ApiError(
                ErrorCode.queue_full,
                f"queue is at its configured depth ({self._settings.max_depth} segments);"
                " retry later",
            )
        cap = client.max_queued
        if cap is not None and (
            (held := self._queue.client_depth(client.name) + self._admitting_of[client.name])
            + segments
            > cap
        ):
            return ApiError(
                ErrorCode.client_queue_full,
                f"client {client.name!r} has {held} segments not yet sent and may have"
                f" {cap} (max_queued); these {segments} would pass it: retry later",
            )
        return None

    async def _enqueue(
        self,
        batch: list[_Accepted],
        results: list[SubmitReply | ApiError | None],
        now: float,
        optouts_seen: int,
        written: Callable[[], None] = lambda: None,
    ) -> ApiError | None:
        messages = [a.message for a in batch]
        try:
            enqueued = await self._queue.enqueue(messages, now=now, optouts_seen=optouts_seen)
        except QueueError as exc:
            return _storage_error(exc)
        finally:
            written()
        for accepted, done in zip(batch, enqueued, strict=True):
            if done.opted_out:
                results[accepted.slot] = _opted_out()
            else:
                results[accepted.slot] = SubmitReply(done.message_id, done.segments, done.created)
            if not done.created:  # the same ref again (counted the first time), or opted out
                self._release(accepted)
        self.accepted += sum(1 for e in enqueued if e.created)
        self._dispatch(messages, enqueued, now)
        return None

    def _arrivals(self, batch: list[_Accepted], now: float) -> None:
        """Messages due now that their send loop can send at once ask the store to claim them
        as it stores them, sparing them a claim's round trip (a few per call: a big batch goes
        through the claimers). Urgent ones need room on the window; others also need the loop
        to be waiting for work with the queue empty, so that they pass nothing, and none of a
        call's messages is handed over after one of its own for that carrier was queued."""
        room = HAND_OVER_MAX
        queued: set[str] = set()  # carriers for which this call queued a non-urgent message
        for accepted in batch:
            message = accepted.message
            carrier, urgent = message.carrier, message.priority >= URGENT_PRIORITY
            if (
                (message.not_before is None or message.not_before <= now)
                and len(message.segments) <= room
                and (
                    self._loops.ready_for_urgent(carrier)
                    if urgent
                    else carrier not in queued and self._loops.ready_for_arrival(carrier)
                )
            ):
                room -= len(message.segments)
                accepted.message = dataclasses.replace(message, send_now=True)
            elif not urgent:
                queued.add(carrier)

    def _dispatch(
        self, messages: Sequence[NewMessage], enqueued: Sequence[Enqueued], now: float
    ) -> None:
        """Hand the send loops what the store claimed on arrival; wake them for the rest."""
        wakes: dict[str, set[float]] = {}  # carrier -> when its urgent messages are due
        for message, done in zip(messages, enqueued, strict=True):
            if done.opted_out:
                continue
            if done.claimed:
                self._loops.hand_over(message.carrier, done.claimed)
                continue
            urgent = wakes.setdefault(message.carrier, set())
            at = _urgent_at(message, now)
            if at is not None:
                urgent.add(at)
        for carrier, times in wakes.items():
            if not times:
                self._loops.wake(carrier, None)
            for at in sorted(times):
                self._loops.wake(carrier, at)

    def _release(self, accepted: _Accepted) -> None:
        if accepted.cap_day is not None:
            self._caps.release(
                accepted.message.source, accepted.cap_day, len(accepted.message.segments)
            )
            accepted.cap_day = None

    async def submit_reply(self, client: str, sender: str, to: str, text: str) -> int:
        """Queue an automatic reply (to STOP, START, HELP) from `sender` to `to`.

        The opt-out check is skipped on purpose: confirming an opt-out to the person who just
        sent STOP is the one message regulators expect after it. Returns the message id.
        """
        identity = ClientIdentity(name=client, senders=frozenset({sender}))
        request = SubmitRequest(to=to, sender=sender, text=text, priority=9)
        now = self._clock()
        accepted = await self._validate(identity, request, now, check_optout=False)
        self._arrivals([accepted], now)
        messages = [accepted.message]
        try:
            enqueued = await self._queue.enqueue(messages, now=now)
        except QueueError:
            self._release(accepted)
            raise
        self._dispatch(messages, enqueued, now)
        return enqueued[0].message_id

    async def _is_opted_out(self, senders: tuple[str, ...], destination: str) -> bool:
        for one in senders:
            if await self._queue.is_opted_out(one, destination):
                return True
        return False

    def _scope_senders(self, client: ClientIdentity, sender: str) -> tuple[str, ...]:
        """The other senders whose opt-outs stop `client`'s messages from `sender`: under
        compliance.scope client those its client owns (a STOP is stored under the senders it
        had then, and a sender added since, or one it may use without owning it, is its too)."""
        if not self._settings.optout_per_client or not client.owned:
            return ()
        return tuple(sorted(client.owned - {sender}))

    async def _validate(
        self,
        client: ClientIdentity,
        request: SubmitRequest,
        now: float,
        *,
        check_optout: bool = True,
    ) -> _Accepted:
        sender = canonical_sender(request.sender)
        check_sender(sender)  # first: no client may send from an id no network carries
        if sender not in client.senders:
            raise ApiError(
                ErrorCode.sender_not_allowed,
                f"client {client.name!r} may not send from {request.sender!r}",
                field="from",
            )
        _check_schedule(request, now)
        destination = normalise_destination(request.to, plan=self._settings.numbers)
        scope = self._scope_senders(client, sender)
        if check_optout and await self._is_opted_out((sender, *scope), destination):
            raise _opted_out()
        # Outages are measured in monotonic time (smppd.daemon.CarrierRuntime.down_since).
        carrier = self._router.pick(destination, self._down_since, now=time.monotonic())
        if carrier is None or carrier not in self._profiles:
            raise ApiError(ErrorCode.no_route, "no route to this destination", field="to")
        profile = self._profiles[carrier]
        expires_at = _expires_at(request, client, now)
        ref16 = profile.concatenation is ConcatMethod.UDH16
        priority = min(request.priority, client.max_priority)

        def bodies(expires_at: float | None) -> Prepared:
            return prepare(
                destination=destination,
                source=sender,
                text=request.text,
                encoding=request.encoding,
                flash=request.flash,
                smart=_or_default(request.smart_encoding, client.smart_encoding),
                registered_delivery=request.registered_delivery,
                expires_at=expires_at,
                ref=lambda: self._refs.next(destination, ref16=ref16),
                profile=profile,
                priority=priority,
                source_ton_npi=self._settings.sender_ton_npi.get(sender),
            )

        prepared = bodies(expires_at)
        due = now if request.schedule_at is None else max(now, request.schedule_at)
        segments = len(prepared.bodies)
        cap_day, held_until = self._caps.reserve(sender, segments, at=due, now=now)
        if held_until is not None:  # over its cap today: held for a later day
            if request.validity_s is None and client.validity_s is not None:
                expires_at = held_until + client.validity_s  # the default counts from then
                prepared = bodies(expires_at)
            elif expires_at is not None and expires_at <= held_until:
                assert cap_day is not None
                self._caps.release(sender, cap_day, segments)
                raise ApiError(
                    ErrorCode.over_daily_cap,
                    f"sender {sender!r} reached its daily cap; held for the next day, the"
                    " message would expire (validity_s) before it could go",
                    field="from",
                )
        message = NewMessage(
            client=client.name,
            ref=request.ref,
            source=sender,
            destination=destination,
            carrier=carrier,
            priority=priority,
            not_before=request.schedule_at if held_until is None else held_until,
            expires_at=expires_at,
            registered_delivery=request.registered_delivery and profile.registered_delivery,
            segments=prepared.bodies,
            opted_out_with=scope,
        )
        return _Accepted(message, cap_day)

    # --- reads and the rest ----------------------------------------------------------------

    async def status(self, client: ClientIdentity, message_id: int) -> dict[str, Any]:
        with _storage_errors("status"):
            found = await self._queue.status(message_id, client.name)
        if found is None:
            raise ApiError(ErrorCode.not_found, f"no message {message_id}", field="message_id")
        return status_json(found)

    async def message_id_of(self, client: ClientIdentity, ref: str) -> int:
        with _storage_errors("status"):
            found = await self._queue.message_id_of(client.name, ref)
        if found is None:
            raise ApiError(ErrorCode.not_found, "no message with this ref", field="ref")
        return found

    async def cancel(self, client: ClientIdentity, message_id: int) -> dict[str, Any]:
        with _storage_errors("cancel"):
            found = await self._queue.cancel(message_id, client.name, now=self._clock())
        if found is None:
            raise ApiError(ErrorCode.not_found, f"no message {message_id}", field="message_id")
        status, changes = found
        self._cancelled(changes)
        return {**status_json(status), "cancelled": len(changes)}

    def _cancelled(self, changes: Sequence[Change]) -> None:
        """What a cancel or an opt-out cancelled: out of the send loops, and told to subscribers."""
        self._loops.withdraw([change.segment_id for change in changes])
        self._hub.publish_changes(changes)

    async def inbound(self, client: ClientIdentity, after: int, limit: int) -> dict[str, Any]:
        with _storage_errors("inbound"):
            found = await self._queue.inbound_since(after, client=client.name, limit=limit)
        return {"messages": [inbound_json(m.id, m) for m in found]}

    async def finished(
        self, client: ClientIdentity, after: tuple[float, int] | None, limit: int
    ) -> dict[str, Any]:
        with _storage_errors("finished"):
            page = await self._queue.finished_since(
                FINISHED_START if after is None else after, client=client.name, limit=limit
            )
        return {
            "messages": [
                {
                    "message_id": f.message_id,
                    "ref": f.ref,
                    "state": str(f.state),
                    "finished_at": f.finished_at,
                }
                for f in page.messages
            ],
            # Where the next call goes on from; with no message finished yet, the start.
            "next": None if page.cursor == FINISHED_START else finished_token(page.cursor),
            "more": page.more,
        }

    def subscribe(self, client: ClientIdentity, kinds: frozenset[str]) -> Subscription:
        unknown = kinds - KINDS
        if unknown:
            raise ApiError(
                ErrorCode.invalid_field,
                f"unknown event kinds {sorted(unknown)}; known: {sorted(KINDS)}",
                field="events",
            )
        return self._hub.subscribe(client.name, kinds or KINDS)

    def health(self) -> dict[str, Any]:
        return {"queue_depth": self._queue.queued_depth(), **self._health()}

    async def stats(self, client: ClientIdentity) -> dict[str, Any]:
        with _storage_errors("stats"):
            stats = await self._queue.stats(now=self._clock())
        return {
            "queued_depth": stats.queued_depth,
            "oldest_queued_age_s": stats.oldest_queued_age_s,
            "segments": {
                str(state): sum(by_priority.values())
                for state, by_priority in stats.segments.items()
            },
            "by_carrier": {
                carrier: {str(s): n for s, n in states.items()}
                for carrier, states in stats.by_carrier.items()
            },
            "receipts_held": stats.receipts_held,
            "receipts_unmatched": stats.receipts_unmatched,
            "accepted": self.accepted,
            "commits": stats.commits,
            # The caller's own share of queued_depth, and what max_queued allows it (or None).
            "client_queued": self._queue.client_depth(client.name),
            "client_max_queued": client.max_queued,
        }

    async def optout(
        self,
        client: ClientIdentity,
        action: str,
        sender: str,
        number: str | None,
        after: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        # Owners only: a client allowed to send from another's id may not read who opted out
        # of it (personal data), undo a STOP, or cancel the owner's messages with an opt-out.
        sender = canonical_sender(sender)
        if sender and sender not in client.owned:
            raise ApiError(
                ErrorCode.sender_not_allowed,
                f"client {client.name!r} does not own sender {sender!r}",
                field="sender",
            )
        if action == "list":
            return await self._list_optouts([sender] if sender else sorted(client.owned), after)
        if number is None:
            raise ApiError(ErrorCode.missing_field, "number is required", field="number")
        destination = normalise_destination(number, plan=self._settings.numbers, field="number")
        if action == "add":
            with _storage_errors("optout"):
                changed = await self._queue.add_optout(sender, destination, now=self._clock())
                now = self._clock()
                cancelled = await self._queue.cancel_queued_to(sender, destination, now=now)
            self._cancelled(cancelled)
        elif action == "remove":
            with _storage_errors("optout"):
                changed = await self._queue.remove_optout(sender, destination)
        else:
            raise ApiError(ErrorCode.invalid_field, "action is add, remove or list", field="action")
        return {"changed": changed}

    async def _list_optouts(
        self, senders: list[str], after: tuple[str, str] | None
    ) -> dict[str, Any]:
        """Up to OPTOUT_PAGE opt-outs of `senders`, by (sender, number) after `after`, each
        sender read on its own (the store's order mixes in other clients' senders); `next`
        is the cursor of the next page when there may be more."""
        rows: list[OptOut] = []
        for sender in senders:
            if after is not None and sender < after[0]:
                continue
            cursor = after if after is not None and sender == after[0] else None
            while (want := OPTOUT_PAGE - len(rows)) > 0:
                with _storage_errors("optout"):
                    page = await self._queue.list_optouts(sender=sender, after=cursor, limit=want)
                rows += page
                if len(page) < want:  # this sender's are all read
                    break
                cursor = (page[-1].sender, page[-1].number)
            if len(rows) >= OPTOUT_PAGE:
                break
        reply: dict[str, Any] = {
            "optouts": [
                {"sender": r.sender, "number": r.number, "created_at": r.created_at} for r in rows
            ]
        }
        if len(rows) >= OPTOUT_PAGE:
            reply["next"] = {"sender": rows[-1].sender, "number": rows[-1].number}
        return reply


def status_json(status: MessageStatus) -> dict[str, Any]:
    return {
        "message_id": status.message_id,
        "ref": status.ref,
        "state": str(status.state),
        "carrier": status.carrier,
        "priority": status.priority,
        "created_at": status.created_at,
        "not_before": status.not_before,
        "expires_at": status.expires_at,
        "segments": [
            {
                "index": s.index,
                "state": str(s.state),
                "attempts": s.attempts,
                "command_status": s.command_status,
                # The name the metrics use (ESME_RTHROTTLED), beside the number.
                "status": None if s.command_status is None else status_name(s.command_status),
                "carrier_message_id": s.carrier_message_id,
                "receipt_stat": s.receipt_stat,
                "receipt_err": s.receipt_err,
                "done_at": s.done_at,
            }
            for s in status.segments
        ],
    }
