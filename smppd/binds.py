"""A carrier's binds: keeps the configured number bound and offers them to the send loop as one.

`CarrierBinds` owns one slot per configured bind. Each slot runs one loop: connect and bind (one
attempt at a time), hold the link until it ends, wait a backoff with jitter, again. Binds the SMSC
refused for credentials back off for `auth_failure_s` instead, and say so. A failed attempt moves
on to the SMSC's next address; a bind held on another address than its own (host:port, or with
`spread_binds` its share of the addresses) goes back after `primary_after_s`, one slot at a
time, so the carrier never loses more than that bind meanwhile. The carrier's TPS cap is one
`SlidingWindow` shared by every link's session. `try_send` and `wait_ready` present
the bound links as one: a submit goes to the bind with the most free window slots.
It must not know the queue or the send loop, nor how a link speaks SMPP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from types import TracebackType
from typing import Final

import structlog

from smppd.link import DEFAULT_MAX_HANDLERS, BindObserver, DeliverHandler, Link, NullObserver
from smppd.pdu.status import status_name
from smppd.ratelimit import AdaptiveRate, SlidingWindow
from smppd.session import (
    RECEIVER_BIND_PREFIX,
    BindError,
    BindMode,
    BindSettings,
    CloseReason,
    LinkError,
    QueryAnswered,
    State,
    SubmitResult,
)

log = structlog.get_logger(__name__)

_BOUND: Final = frozenset({State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX})

# Reconnect reasons besides the link's CloseReason values (a small set: a metrics label).
CONNECT_FAILED: Final = "connect_failed"
BIND_REFUSED: Final = "bind_refused"
BIND_REFUSED_PERMANENT: Final = "bind_refused_permanent"
RETURN_BACKOFF: Final = 8  # the most primary_after_s grows to while a way back keeps failing


def reconnect_delay(attempt: int, *, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: between half and all of min(max_s, initial_s * 2^n),
    so binds that dropped together do not all come back in the same instant."""
    step = min(max_s, initial_s * float(1 << min(attempt, 30)))
    return step * (0.5 + rng.random() / 2)


class CarrierBinds:
    """The binds of one carrier. Run with `run()` inside a TaskGroup and stop with `close()`,
    or use `async with`."""

    def __init__(
        self,
        settings: BindSettings,
        *,
        binds: int,
        receivers: int = 0,
        handler: DeliverHandler,
        tps: float | None = None,
        carrier: str = "",
        observer: BindObserver | None = None,
        max_handlers: int = DEFAULT_MAX_HANDLERS,
        rng: random.Random | None = None,
    ) -> None:
        if binds < 1:
            raise ValueError("a carrier needs at least one bind")
        self.settings = settings
        self.carrier = carrier
        self._handler = handler
        self._observer: BindObserver = observer or NullObserver()
        self._max_handlers = max_handlers
        self._rng = rng or random.Random()
        self.carrier_rate = None if tps is None else SlidingWindow.for_rate(tps, paced=True)
        # Each sending slot's own rate (bind_tps, slow-downs), kept across its reconnects.
        self._rates = [
            AdaptiveRate(settings.bind_tps, backoff_s=settings.throttle_backoff_s)
            for _ in range(binds)
        ]
        # Slots [0, binds) bind as settings.bind_mode; the `receivers` after them bind_receiver
        # (for a carrier that takes submits on transmitter binds and sends receipts and MO on
        # receiver ones). Only the first kind sends, and only it counts as the carrier up.
        self._links: list[Link | None] = [None] * (binds + receivers)
        self._senders = binds
        self._live: list[Link] = []  # the sending links now open, for the hot path
        self._waiters: list[asyncio.Future[None]] = []
        self._interrupts = 0
        self._closing = False
        self._close_timeout_s: float | None = None
        self._late_closes: list[asyncio.Future[CloseReason]] = []
        self._stop = asyncio.Event()
        # Held by the one slot leaving an address not its own, until it is bound again (at its
        # own, or elsewhere once that failed).
        self._returning = asyncio.Lock()
        # Once the SMSC has refused the carrier's credentials (ESME_RINVPASWD, ...), one slot
        # asks with them and the others wait for its answer: a wrong password costs one failed
        # login per auth_failure_s, not one per bind, and carriers lock an account after a few.
        # Not before (at start, after a reload): every bind goes at once, a silent SMSC node
        # holding none of them up.
        self._credentials_good = True
        self._asking: int | None = None  # the slot that asks meanwhile
        self._turn_changed = asyncio.Event()  # set, and replaced, when either of those changes
        self._slots: list[asyncio.Task[None]] = []
        self._runner: asyncio.Task[None] | None = None
        self._log = log.bind(carrier=carrier)
        self._endpoints = [settings] + [
            dataclasses.replace(settings, host=host, port=port, alternates=())
            for host, port in settings.alternates
        ]
        self._receiver_endpoints = [
            dataclasses.replace(e, bind_mode=BindMode.RECEIVER) for e in self._endpoints
        ]

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep every slot bound until close()."""
        async with asyncio.TaskGroup() as group:
            self._slots = [
                group.create_task(self._keep_bound(i), name=f"bind {self.carrier}/{i}")
                for i in range(len(self._links))
            ]

    async def close(self, timeout_s: float | None = None) -> None:
        """Stop taking submits; close every bound link gracefully (outstanding answered up to
        `timeout_s`, default response_timeout_s; then unbind); stop connecting."""
        self._closing = True
        self._stop.set()
        self._wake()
        self._close_timeout_s = timeout_s
        links = [link for link in self._links if link is not None]
        await asyncio.gather(*(link.close(timeout_s) for link in links))
        for slot in self._slots:
            slot.cancel()  # those still connecting or waiting out a backoff
        if self._runner is not None:
            await self._runner
        if self._late_closes:  # binds that completed while the others drained
            await asyncio.gather(*self._late_closes)

    async def __aenter__(self) -> CarrierBinds:
        self._runner = asyncio.create_task(self.run(), name=f"binds {self.carrier}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- what the send loop uses ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closing

    def carry_rate_from(self, previous: CarrierBinds) -> None:
        """The binds of a restarted carrier: its cap and each bind's count what `previous` sent
        in the span before, or a reload would allow twice the cap in that second; a bind's
        slow-down goes on while its rate is configured alike."""
        if self.carrier_rate is not None and previous.carrier_rate is not None:
            self.carrier_rate.inherit(previous.carrier_rate)
        for i, rate in enumerate(previous._rates[: len(self._rates)]):
            self._rates[i] = self._rates[i].continued_from(rate)

    @property
    def bound_count(self) -> int:
        """Binds bound that can carry submits (receivers aside): whether the carrier is up."""
        return sum(1 for link in self._live if link.state in _BOUND)

    @property
    def receivers_bound(self) -> int:
        receivers = self._links[self._senders :]
        return sum(1 for link in receivers if link is not None and link.state in _BOUND)

    def bound_addresses(self) -> dict[str, int]:
        """Bound binds (receivers too) per SMSC address, for a carrier with alternates."""
        found: dict[str, int] = {}
        for link in self._links:
            if link is not None and link.state in _BOUND:
                found[link.settings.address] = found.get(link.settings.address, 0) + 1
        return found

    @property
    def in_flight(self) -> int:
        return sum(link.in_flight for link in self._live)

    @property
    def links(self) -> tuple[Link | None, ...]:
        """Each slot's link (None while it reconnects), for gauges."""
        return tuple(self._links)

    def pick(self) -> Link | None:
        """The bound link with the most free window slots that could submit now."""
        best = None
        best_room = 0
        now = -1.0
        for link in self._live:
            room = link.room
            if room > best_room:
                if now < 0:
                    now = asyncio.get_running_loop().time()
                at = link.ready_at(now)
                if at is not None and at <= now:
                    best, best_room = link, room
        return best

    def try_send(self, body: bytes, on_result: Callable[[SubmitResult], None]) -> bool:
        """Send an encoded submit_sm body on the bind with the most room; False when no bind can
        take it now (all windows full, rates, none bound, closing). See Link.try_send."""
        if self._closing:
            return False
        live = self._live
        if len(live) == 1:
            return live[0].try_send(body, on_result)
        best = None
        best_room = 0
        for link in live:
            room = link.room
            if room > best_room:
                best, best_room = link, room
        if best is None:
            return False
        if best.try_send(body, on_result):
            return True
        other = self.pick()  # held back by its own rate: another bind may still take it
        return other is not None and other.try_send(body, on_result)

    def try_query(self, body: bytes) -> asyncio.Future[QueryAnswered | None] | None:
        """Send an encoded query_sm body on the bind with the most room; None when no bind can
        (none bound, closing). See Link.try_query."""
        if self._closing:
            return None
        for link in sorted(self._live, key=lambda link: link.room, reverse=True):
            query = link.try_query(body)
            if query is not None:
                return query
        return None

    async def wait_ready(self) -> None:
        """Return when try_send could succeed on some bind, once closing, or on interrupt()."""
        loop = asyncio.get_running_loop()
        interrupts = self._interrupts
        while not self._closing and interrupts == self._interrupts:
            now = loop.time()
            earliest = None
            for link in self._live:
                at = link.ready_at(now)
                if at is not None:
                    if at <= now:
                        return
                    earliest = at if earliest is None else min(earliest, at)
            waiter = loop.create_future()
            self._waiters.append(waiter)
            timer = None if earliest is None else loop.call_at(earliest, self._wake)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()

    async def wait_bound(self, count: int | None = None) -> None:
        """Return once `count` sending binds (default: every bind, receivers too) are bound,
        or once closing."""
        loop = asyncio.get_running_loop()
        while not self._closing and (
            self.bound_count < count
            if count is not None
            else self.bound_count + self.receivers_bound < len(self._links)
        ):
            waiter = loop.create_future()
            self._waiters.append(waiter)
            await waiter

    # --- slots ---------------------------------------------------------------------------------

    async def _keep_bound(self, index: int) -> None:
        """Connect, bind and hold one slot, again and again. A failed connect or bind moves on
        to the SMSC's next address (`alternates`), the backoff growing once all were tried; a
        link that held reconnects to the address it was on, and one held on another address
        than its own goes back after `primary_after_s`."""
        loop = asyncio.get_running_loop()
        reconnect = self.settings.reconnect
        receiver = index >= self._senders
        name = f"{RECEIVER_BIND_PREFIX}{index - self._senders}" if receiver else str(index)
        attempt = 0
        endpoints = self._receiver_endpoints if receiver else self._endpoints
        # Where the slot binds first and goes back to: host:port, or with spread_binds its
        # share of the addresses (carriers that cap binds per SMSC node want them spread).
        slot = index - self._senders if receiver else index
        home = slot % len(endpoints) if self.settings.spread_binds else 0
        at = home
        # This slot holds _returning: it left an address not its own and is not bound again yet
        # (at its own, or elsewhere once that failed), so no other slot leaves meanwhile.
        returning = False
        # How long it holds an address not its own before it goes back: primary_after_s, twice
        # as long after each way back its own address did not take (a carrier with one bind is
        # down for a moment each time), up to RETURN_BACKOFF times.
        back_after = reconnect.primary_after_s
        try:
            while not self._closing:
                started = loop.time()
                try:
                    link = await self._connect(endpoints[at], name, index)
                except (BindError, LinkError) as exc:
                    reason, delay = self._attempt_failed(exc, name, endpoints[at], attempt)
                    back_after = (  # its own address did not take it back: wait longer
                        self._longer(back_after) if returning and at == home else back_after
                    )
                else:
                    if returning:
                        returning = False
                        self._returning.release()
                    back_after = reconnect.primary_after_s if at == home else back_after
                    closed = await self._hold(index, link, None if at == home else back_after)
                    if closed is None:  # unbound from the alternate to go back
                        returning = True
                        self._log.info(
                            "leaving an alternate address for the bind's own",
                            bind=name,
                            address=endpoints[at].address,
                            to_address=endpoints[home].address,  # `to` would be masked
                        )
                        at, attempt = home, 0
                        continue
                    if self.closed:
                        return
                    if loop.time() - started >= reconnect.max_s:
                        attempt = 0  # it held long enough: a fresh start, not a flapping link
                    reason = closed.value
                    delay = self._delay(attempt)
                    attempt += 1
                    self._log.info("reconnecting", bind=name, reason=reason, in_s=round(delay, 3))
                    self._observer.reconnect_scheduled(name, reason, delay)
                    await self._pause(delay)
                    continue
                at = (at + 1) % len(endpoints)
                if at == home and reason != BIND_REFUSED_PERMANENT:
                    attempt += 1  # every address tried at this step of the backoff
                self._observer.reconnect_scheduled(name, reason, delay)
                await self._pause(delay)
        finally:
            if returning:
                self._returning.release()

    async def _may_bind(self, index: int) -> None:
        """Return when slot `index` may try to bind: at once unless the credentials are in
        doubt; else when it is the one that asks (the first to come while none does)."""
        while not self._credentials_good and self._asking not in (None, index):
            await self._turn_changed.wait()
        if not self._credentials_good:
            self._asking = index

    def _answered(self, index: int, *, bound: bool, refused: bool) -> None:
        """Slot `index` tried: bound, the credentials are good and every slot may go; refused
        them, they are in doubt and it asks from now on (unless another does); failed
        otherwise (no connection, a timeout), nothing was learnt: the one asking hands the
        turn to the next slot that waits, one at a time still."""
        if bound:
            good, asking = True, None
        elif refused:
            good, asking = False, index if self._asking is None else self._asking
        elif self._asking == index:
            good, asking = self._credentials_good, None
        else:
            return
        if (good, asking) != (self._credentials_good, self._asking):
            self._credentials_good, self._asking = good, asking
            changed, self._turn_changed = self._turn_changed, asyncio.Event()
            changed.set()  # the waiters look again; the first that may go takes the turn

    def _longer(self, back_after: float | None) -> float | None:
        """The wait before the next way back, after one that failed."""
        primary = self.settings.reconnect.primary_after_s
        if back_after is None or primary is None:
            return None
        return min(back_after * 2, RETURN_BACKOFF * primary)

    async def _connect(self, endpoint: BindSettings, name: str, index: int) -> Link:
        await self._may_bind(index)
        try:
            link = await self._link(endpoint, name, index)
        except BindError as exc:
            self._answered(index, bound=False, refused=exc.permanent)
            raise
        except LinkError:
            self._answered(index, bound=False, refused=False)
            raise
        self._answered(index, bound=True, refused=False)
        return link

    async def _link(self, endpoint: BindSettings, name: str, index: int) -> Link:
        return await Link.connect(
            endpoint,
            handler=self._handler,
            name=name,
            carrier=self.carrier,
            observer=self._observer,
            carrier_rate=self.carrier_rate,
            bind_rate=self._rates[index] if index < self._senders else None,
            on_ready=self._wake,
            max_handlers=self._max_handlers,
        )

    def _attempt_failed(
        self, exc: BindError | LinkError, name: str, endpoint: BindSettings, attempt: int
    ) -> tuple[str, float]:
        """Log a failed connect or bind; the reconnect reason and the delay before the next."""
        if not isinstance(exc, BindError):
            delay = self._delay(attempt)
            self._log.warning(
                "connect failed", bind=name, error=str(exc), retry_in_s=round(delay, 3)
            )
            return CONNECT_FAILED, delay
        status = status_name(exc.command_status)
        if exc.permanent:
            delay = self.settings.reconnect.auth_failure_s * (1.0 + self._rng.random() / 5)
            self._log.error(
                "bind refused; retrying will not help until credentials change",
                bind=name,
                address=endpoint.address,
                status=status,
                retry_in_s=round(delay, 1),
            )
            return BIND_REFUSED_PERMANENT, delay
        delay = self._delay(attempt)
        self._log.warning(
            "bind refused",
            bind=name,
            address=endpoint.address,
            status=status,
            retry_in_s=round(delay, 3),
        )
        return BIND_REFUSED, delay

    async def _hold(self, index: int, link: Link, return_after: float | None) -> CloseReason | None:
        """Offer `link` to the send loop until it closes; or, `return_after` seconds on, once no
        other slot is on its way back to its own address, close it gracefully and return None with
        `_returning` held."""
        if self._closing:
            # Bound while close() drained the others: unbound too (an aborted bound session
            # lingers at the SMSC, which may then refuse the next start's binds), in a task
            # of its own that close() awaits, since close() cancels this slot.
            late = asyncio.ensure_future(link.close(self._close_timeout_s))
            self._late_closes.append(late)
            return await asyncio.shield(late)
        self._links[index] = link
        self._live = [x for x in self._links[: self._senders] if x is not None]
        self._wake()
        try:
            if return_after is None:
                return await link.wait_closed()
            return await self._hold_until_return(link, return_after)
        finally:
            self._links[index] = None
            self._live = [x for x in self._links[: self._senders] if x is not None]
            if not link.closed:  # cancelled holding a link that close() did not see yet
                link.abort()

    async def _hold_until_return(self, link: Link, after: float) -> CloseReason | None:
        closed = asyncio.ensure_future(link.wait_closed())
        turn: asyncio.Task[bool] | None = None
        try:
            done, _ = await asyncio.wait({closed}, timeout=after)
            if not done:
                turn = asyncio.create_task(self._returning.acquire())
                await asyncio.wait({closed, turn}, return_when=asyncio.FIRST_COMPLETED)
            if closed.done():  # it ended first (a drop, a close()): the usual reconnect
                return closed.result()
            await link.close()  # outstanding submits answered, then unbind
            await closed
            turn = None  # held: _keep_bound releases it once this slot is bound again
            return None
        finally:
            if not closed.done():
                closed.cancel()
            if turn is not None:
                if turn.done() and not turn.cancelled():
                    self._returning.release()
                else:
                    turn.cancel()

    def _delay(self, attempt: int) -> float:
        r = self.settings.reconnect
        return reconnect_delay(attempt, initial_s=r.initial_s, max_s=r.max_s, rng=self._rng)

    async def _pause(self, delay: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._stop.wait()
        except TimeoutError:
            pass

    def interrupt(self) -> None:
        """Return from every pending wait_ready() now, ready or not."""
        self._interrupts += 1
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
