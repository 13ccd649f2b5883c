"""The composition root: builds every part from the config, runs them, handles signals.

Nothing else wires components together. Start order: logging, queue (with crash recovery), carrier
binds and send loops, API socket, metrics, then READY=1. SIGTERM drains: the API stops taking
submits, the send loops stop claiming, binds wait for outstanding responses (up to their
response timeout), unbind, and every outcome is recorded before the queue closes. SIGHUP reloads
the file: changed carriers restart, everything else (routes, senders, caps, compliance, API
clients, logging) applies in place; queued work stays on disk and keeps its carrier. What only a
restart can change (the database, the sockets) is logged, not applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import math
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import structlog
from prometheus_client import CollectorRegistry, ProcessCollector

from smppd import config as cfg
from smppd.address import SENDER_KIND_TON_NPI, NumberPlan, canonical_sender
from smppd.api import ApiObserver, ApiServer, ApiServerError, ApiSettings, ClientTable
from smppd.binds import CarrierBinds
from smppd.compliance import Keyword, Keywords
from smppd.config import Config, ConfigError, config_diff, load_config
from smppd.errors import SmppdError
from smppd.events import EventHub
from smppd.gateway import Gateway, GatewaySettings
from smppd.gctune import tune_gc
from smppd.histogram import Histogram
from smppd.idformat import IdFormatLearner
from smppd.inbound import (
    InboundCounters,
    InboundHandler,
    OptOutPolicy,
    ReplyCooldown,
    learned_id_format,
)
from smppd.logging import configure_logging
from smppd.metrics import ApiObserverCounts, CarrierObserver, CarrierView, SmppdCollector
from smppd.metrics_http import serve_metrics
from smppd.outbound import OutboundProfile
from smppd.pdu.national import NationalLanguage
from smppd.pdu.receipt import IdFormat, relearned_keys
from smppd.pdu.segment import ConcatMethod
from smppd.pdu.status import StatusPolicy
from smppd.pdu.text import Alphabet
from smppd.queries import ReceiptQueries
from smppd.queue import Queue, QueueError, open_queue
from smppd.queue.model import ClaimedSegment, Deferred, ReceiptResult, RerouteCursor
from smppd.queue.states import PENDING_STATES, SegmentState
from smppd.ratelimit import SenderRates
from smppd.redelivery import Redeliveries
from smppd.routing import Router, RouteRule
from smppd.sdnotify import Notifier, watchdog_interval_s
from smppd.senderpolicy import DAY_S, DailyCap, DailyCaps, day_of
from smppd.sendloop import CarrierSendLoop, RetryPolicy
from smppd.session import BindMode, BindSettings, ReconnectSettings, TlsSettings
from smppd.wallclock import WallClockWatch

log = structlog.get_logger(__name__)


class StartupError(SmppdError):
    """A listener cannot start; the message names the config key and the reason."""


HOUSEKEEPING_S = 1.0
REROUTE_STEPS = 10  # reroute calls (of up to 1,000 due segments each) per carrier a tick
PURGE_EVERY_S = 300.0
EXPIRE_STEP: Final = 500  # messages a transaction of the expiry sweep
EXPIRE_STEPS: Final = 20  # transactions of it a tick at most: the rest waits for the next
STATS_EVERY_S = 5.0
# A clock step waits this long at most for the outcomes being recorded (storage trouble).
SETTLE_OUTCOMES_S: Final = 2.0


# --- config -> component settings -------------------------------------------------------------

_TLV_CONCATENATION: Final = frozenset({cfg.Concatenation.SAR, cfg.Concatenation.PAYLOAD})


def bind_settings(carrier: cfg.Carrier) -> BindSettings:
    tls = carrier.tls
    return BindSettings(
        host=carrier.host,
        port=carrier.port,
        alternates=tuple((a.host, a.port) for a in carrier.alternates),
        spread_binds=carrier.spread_binds,
        system_id=carrier.system_id,
        password=carrier.password,
        system_type=carrier.system_type,
        addr_ton=carrier.addr_ton,
        addr_npi=carrier.addr_npi,
        address_range=carrier.address_range,
        bind_mode=BindMode(carrier.bind_mode.value),
        window=carrier.window,
        bind_tps=carrier.bind_tps,
        enquire_link_interval_s=carrier.enquire_link_interval_s,
        response_timeout_s=carrier.response_timeout_s,
        connect_timeout_s=carrier.connect_timeout_s,
        bind_timeout_s=carrier.bind_timeout_s,
        unbind_timeout_s=carrier.unbind_timeout_s,
        reconnect=ReconnectSettings(
            initial_s=carrier.reconnect.initial_s,
            max_s=carrier.reconnect.max_s,
            auth_failure_s=carrier.reconnect.auth_failure_s,
            primary_after_s=carrier.reconnect.primary_after_s,
        ),
        throttle_backoff_s=carrier.throttle_backoff_s,
        statuses=StatusPolicy.of(
            temporary=carrier.submit_statuses.temporary,
            permanent=carrier.submit_statuses.permanent,
            throttling=carrier.submit_statuses.throttling,
        ),
        needs_tlvs=(
            f"concatenation: {carrier.concatenation.value}"
            if carrier.concatenation in _TLV_CONCATENATION
            else ""
        ),
        tls=TlsSettings(
            enabled=tls.enabled,
            ca_file=None if tls.ca_file is None else str(tls.ca_file),
            cert_file=None if tls.cert_file is None else str(tls.cert_file),
            key_file=None if tls.key_file is None else str(tls.key_file),
            verify_hostname=tls.verify_hostname,
            server_hostname=tls.server_hostname,
        ),
    )


def outbound_profile(carrier: cfg.Carrier) -> OutboundProfile:
    return OutboundProfile(
        default_is_latin1=carrier.default_data_coding is cfg.DataCoding.LATIN1,
        concatenation=ConcatMethod(carrier.concatenation.value),
        max_segments=carrier.max_segments,
        source_ton=carrier.source_ton,
        source_npi=carrier.source_npi,
        dest_ton=carrier.dest_ton,
        dest_npi=carrier.dest_npi,
        service_type=carrier.service_type,
        registered_delivery=carrier.registered_delivery,
        priority_flag=carrier.priority_flag,
        national=(
            None
            if carrier.national_language is cfg.NationalLanguage.NONE
            else NationalLanguage[carrier.national_language.name]
        ),
    )


def router(config: Config) -> Router:
    return Router(
        [RouteRule(r.prefix, tuple(r.carriers), r.failover_after_s) for r in config.routes]
    )


def failover_pick(
    router: Router,
    down: Mapping[str, float | None],
    senders: Mapping[str, OutboundProfile],
    carrier: str,
    destination: str,
    *,
    now: float,
) -> str | None:
    """Where a message waiting for `carrier` goes now, or None to stay.

    Once `carrier` has been down its route's failover_after_s, the first carrier of the route
    that is up and encodes as `carrier` does: the queued segments are finished submit_sm
    bodies, valid on the new carrier only if its profile (alphabet, concatenation, TON/NPI) is
    the same. Not only the route's first choice: one that encodes otherwise is passed over for
    the next. A carrier that is itself down is no target, or work would go back and forth
    between two that are.
    """
    rule = router.rule_for(destination)
    since = down.get(carrier, now)
    if rule is None or since is None or now - since < rule.failover_after_s:
        return None
    return next(
        (c for c in rule.carriers if _can_take_over(c, carrier, down, senders, now=now)), None
    )


def _can_take_over(
    target: str,
    carrier: str,
    down: Mapping[str, float | None],
    senders: Mapping[str, OutboundProfile],
    *,
    now: float,
) -> bool:
    """`target` is another carrier, up, that sends with `carrier`'s outbound profile."""
    profile = senders.get(target)
    return (
        target != carrier
        and down.get(target, now) is None
        and profile is not None
        and profile == senders.get(carrier)
    )


def _names(config: Config) -> set[str]:
    return {carrier.name for carrier in config.carriers}


def _account(carrier: cfg.Carrier) -> tuple[str, int, str]:
    """What tells one carrier account: the SMSC and the system_id bound there."""
    return carrier.host, carrier.port, carrier.system_id


def unrouted_work(
    by_carrier: Mapping[str, Mapping[SegmentState, int]], senders: Collection[str]
) -> dict[str, int]:
    """Unsent segments (queued, scheduled, in flight) per carrier not among `senders`, as a
    reload that removed a carrier or made it receiver-only leaves them: nothing will send them
    (a paused carrier is a sender: its work waits for its return)."""
    unrouted = {
        carrier: sum(n for state, n in by_state.items() if state in PENDING_STATES)
        for carrier, by_state in by_carrier.items()
        if carrier not in senders
    }
    return {carrier: n for carrier, n in sorted(unrouted.items()) if n}


def may_fail_over(
    routes: Sequence[cfg.Route],
    down: Mapping[str, float | None],
    senders: Mapping[str, OutboundProfile],
    carrier: str,
    *,
    now: float,
) -> bool:
    """Whether some route could move `carrier`'s queued work now (see `failover_pick`): a sweep
    of a backlog that has nowhere to go would read it all again every tick of an outage."""
    since = down.get(carrier)
    if since is None or carrier not in senders:
        return False
    return any(
        carrier in route.carriers
        and now - since >= route.failover_after_s
        and any(_can_take_over(other, carrier, down, senders, now=now) for other in route.carriers)
        for route in routes
    )


def cap_rules(config: Config) -> dict[str, tuple[int, cfg.OverCap]]:
    return {s.id: (s.daily_cap, s.over_cap) for s in config.senders if s.daily_cap is not None}


def owners(config: Config) -> dict[str, str]:
    """Sender id -> the client it belongs to (who gets the replies sent to it)."""
    return {s.id: s.client for s in config.senders}


def unowned_inbound_client(config: Config) -> str | None:
    """The client that receives MO to numbers no sender entry owns, if one is configured."""
    return next((c.name for c in config.api.clients if c.unowned_inbound), None)


def optout_policy(config: Config) -> OptOutPolicy:
    senders_of: dict[str, tuple[str, ...]] = {}
    for s in config.senders:
        senders_of[s.client] = (*senders_of.get(s.client, ()), s.id)
    compliance = config.compliance
    return OptOutPolicy(
        keywords=Keywords.of(compliance.stop_words, compliance.start_words, compliance.help_words),
        per_client=compliance.scope is cfg.OptOutScope.CLIENT,
        senders_of=senders_of,
        auto_replies=auto_replies(compliance.auto_replies),
        numbers=number_plan(compliance),
    )


def sender_rates(config: Config) -> dict[str, float]:
    return {s.id: s.tps for s in config.senders if s.tps is not None}


def gateway_settings(config: Config) -> GatewaySettings:
    return GatewaySettings(
        max_depth=config.queue.max_depth,
        numbers=number_plan(config.compliance),
        sender_ton_npi={s.id: SENDER_KIND_TON_NPI[s.kind] for s in config.senders},
        optout_per_client=config.compliance.scope is cfg.OptOutScope.CLIENT,
    )


def number_plan(compliance: cfg.Compliance) -> NumberPlan:
    return NumberPlan(compliance.default_country_prefix, compliance.short_code_max_digits)


# Changes to these need a restart: the open database, the listening sockets.
_RESTART_KEYS: Final = (
    ("queue", "path"),
    ("queue", "commit_interval_s"),
    ("queue", "receipt_hold_s"),
    ("api", "socket"),
    ("api", "mode"),
    ("api", "max_line_bytes"),
    ("api", "idle_timeout_s"),
    ("api", "max_connections"),
    ("api", "max_connections_per_client"),
    ("api", "max_pending_per_connection"),
    ("api", "max_pending"),
    ("metrics", "listen"),
)
# The send loops read these when a carrier starts: a change restarts every carrier.
_SEND_LOOP_KEYS: Final = ("claim_batch", "max_attempts", "retry_initial_s", "retry_max_s")


def needs_restart(old: Config, new: Config) -> list[str]:
    """The keys changed between `old` and `new` that a reload cannot apply."""
    return [
        f"{section}.{key}"
        for section, key in _RESTART_KEYS
        if getattr(getattr(old, section), key) != getattr(getattr(new, section), key)
    ]


def keep_running(old: Config, new: Config) -> Config:
    """`new` with the values a reload cannot apply as `old` has them: what stays in force, so
    that the next reload is compared with that (and a revert is no change)."""
    sections: dict[str, Any] = {}
    for section, key in _RESTART_KEYS:
        current = sections.get(section, getattr(new, section))
        running = getattr(getattr(old, section), key)
        sections[section] = dataclasses.replace(current, **{key: running})
    return dataclasses.replace(new, **sections)


def auto_replies(replies: cfg.AutoReplies) -> dict[Keyword, str]:
    texts = {Keyword.STOP: replies.stop, Keyword.START: replies.start, Keyword.HELP: replies.help}
    return {keyword: text for keyword, text in texts.items() if text is not None}


def daily_caps(config: Config) -> DailyCaps:
    return DailyCaps(
        {
            s.id: DailyCap(s.daily_cap, hold=s.over_cap is cfg.OverCap.HOLD)
            for s in config.senders
            if s.daily_cap is not None
        }
    )


def profiles(config: Config) -> dict[str, OutboundProfile]:
    return {c.name: outbound_profile(c) for c in config.carriers if c.can_send}


# --- one carrier at run time -----------------------------------------------------------------


class _SendLoops:
    """The carriers' send loops as the gateway sees them (smppd.gateway.SendLoops)."""

    def __init__(self, carriers: Mapping[str, CarrierRuntime], queue: Queue) -> None:
        self._carriers = carriers
        self._queue = queue
        self._requeueing: set[asyncio.Task[None]] = set()

    def _loop(self, carrier: str) -> CarrierSendLoop | None:
        runtime = self._carriers.get(carrier)
        return None if runtime is None else runtime.loop

    def wake(self, carrier: str, urgent_at: float | None) -> None:
        loop = self._loop(carrier)
        if loop is not None:
            loop.wake(urgent_at=urgent_at)

    def _bound_loop(self, carrier: str) -> CarrierSendLoop | None:
        """The carrier's send loop while at least one of its binds is up, else None."""
        runtime = self._carriers.get(carrier)
        if runtime is None or runtime.binds.bound_count == 0:
            return None
        return runtime.loop

    def ready_for_urgent(self, carrier: str) -> bool:
        loop = self._bound_loop(carrier)
        return loop is not None and loop.ready_for_urgent()

    def ready_for_arrival(self, carrier: str) -> bool:
        loop = self._bound_loop(carrier)
        return loop is not None and loop.ready_for_arrival()

    def hand_over(self, carrier: str, segments: Sequence[ClaimedSegment]) -> None:
        loop = self._loop(carrier)
        if loop is not None:  # a stopping loop puts them back in the queue itself
            loop.hand_over(segments)
            return
        # A reload removed or is restarting the carrier while the store claimed these on
        # arrival: back to the queue, not in flight until the next start's recovery.
        task = asyncio.get_running_loop().create_task(self._requeue(carrier, segments))
        self._requeueing.add(task)
        task.add_done_callback(self._requeueing.discard)

    async def _requeue(self, carrier: str, segments: Sequence[ClaimedSegment]) -> None:
        now = time.time()
        try:
            await self._queue.record([Deferred(s.segment_id, now) for s in segments], now=now)
        except QueueError as exc:
            log.error(
                "cannot put segments back in the queue; the next start sends them",
                carrier=carrier,
                segments=len(segments),
                error=str(exc),
            )

    async def drain(self) -> None:
        """Until the segments being put back are in the queue (before it closes)."""
        while self._requeueing:
            await asyncio.gather(*self._requeueing)

    def withdraw(self, segment_ids: Sequence[int]) -> None:
        if segment_ids:  # segment ids are unique across carriers: every loop checks its own
            for runtime in self._carriers.values():
                if runtime.loop is not None:
                    runtime.loop.withdraw(segment_ids)


DEFAULT_HAND_BACK_AFTER_S: Final = 30.0  # a carrier no route names: as a route's default


@dataclass
class CarrierTotals:
    """A carrier's counters across its restarts: a reload that restarts a carrier must not send
    a Prometheus counter backwards. One that removes it keeps only its daemon-wide counts."""

    observer: CarrierObserver
    inbound: InboundCounters = field(default_factory=InboundCounters)
    outcome_latency: Histogram = field(default_factory=Histogram)
    deferred_before: int = 0  # sender-rate deferrals of the send loops already stopped
    query_results: Counter[str] = field(default_factory=Counter)  # smppd.queries' results
    learner: IdFormatLearner | None = None  # message_id_format auto: what its ids showed
    redeliveries: Redeliveries | None = None  # its recent MO, to tell a redelivery


def daemon_wide(inbound: InboundCounters, deferred: int) -> Counter[str]:
    """What a carrier adds to the daemon-wide counters (smppd.metrics.DAEMON_COUNTERS)."""
    return Counter(
        optouts=inbound.optouts,
        optins=inbound.optins,
        auto_replies=inbound.auto_replies,
        inbound_unowned=inbound.inbound_unowned,
        sender_rate_deferrals=deferred,
    )


@dataclass
class CarrierRuntime:
    config: cfg.Carrier
    binds: CarrierBinds
    inbound: InboundHandler
    observer: CarrierObserver
    loop: CarrierSendLoop | None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    queries: ReceiptQueries | None = None
    # time.monotonic() when it last had no bind up: a wall clock stepped forward must not
    # make a short outage look long enough for failover.
    down_since: float | None = None

    def view(self) -> CarrierView:
        paused = self.config.paused  # keeps no binds: none is missing
        return CarrierView(
            name=self.config.name,
            configured=0 if paused else self.config.binds,
            receivers=0 if paused else self.config.receiver_binds,
            paused=paused,
            observer=self.observer,
            window_in_use=lambda: self.binds.in_flight,
            receipts=self._receipt_counts,
            queries=lambda: {} if self.queries is None else self.queries.counts,
            inbound=lambda: self.inbound.counters.inbound,
            inbound_redelivered=lambda: self.inbound.counters.inbound_redelivered,
            outcome_latency=None if self.loop is None else self.loop.outcome_latency,
            delivery=self.inbound.counters.delivery,
        )

    def _receipt_counts(self) -> dict[str, int]:
        counters = self.inbound.counters
        # One that could not be read (no id, no stat) was answered and dropped: shown beside
        # the others, as it matched nothing.
        return {**counters.receipts, "unparseable": counters.receipts_unparseable}

    async def stop(self) -> None:
        """Stop claiming, let outstanding submits answer (or time out), unbind, record all."""
        if self.queries is not None:
            self.queries.stop()
        if self.loop is not None:
            self.loop.stop()
        await self.binds.close()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass
class Signals:
    """What the process has been asked to do by signal.

    `main` installs the handlers before the queue opens, so a signal during a long open or a
    migration is kept for when it ends instead of killing the process mid-write.
    """

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reload: asyncio.Event = field(default_factory=asyncio.Event)

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload.set)


class Daemon:
    def __init__(
        self, config: Config, config_path: Path, queue: Queue, signals: Signals | None = None
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.queue = queue
        self.hub = EventHub()
        self.notifier = Notifier()
        self.carriers: dict[str, CarrierRuntime] = {}
        self._totals: dict[str, CarrierTotals] = {}
        # The daemon-wide counts of carriers a reload removed: their series are gone, and the
        # rest of their totals (MO fingerprints, histograms) with them.
        self._removed_counts = daemon_wide(InboundCounters(), 0)
        self._reply_cooldown = ReplyCooldown()  # every carrier's, across their restarts
        self.started = time.time()
        self.api_counts = ApiObserverCounts()
        self.queue_snapshot: dict[str, Any] = {}
        self.receipts_overdue = 0
        self.failed_over: Counter[tuple[str, str]] = Counter()  # (from, to) carrier: messages
        self._fallback_warned: set[str] = set()  # carriers warned about their receipts' ids
        self.caps = daily_caps(config)
        # Senders' own rates over all carriers (kept across reloads and carrier restarts).
        self.sender_rates = SenderRates(sender_rates(config))
        self._send_loops = _SendLoops(self.carriers, queue)
        self.gateway = Gateway(
            queue=queue,
            router=router(config),
            profiles=profiles(config),
            hub=self.hub,
            settings=gateway_settings(config),
            down_since=self._down_since,
            loops=self._send_loops,
            health=self._health,
            clock=time.time,
            caps=self.caps,
        )
        self._signals = signals or Signals()
        self._stop = self._signals.stop
        self._reload = self._signals.reload
        self._group: asyncio.TaskGroup | None = None
        self._api: ApiServer | None = None
        self._reroute_cursors: dict[str, RerouteCursor] = {}
        # Held by a reload while it changes the config and the carriers, and by a failover
        # sweep while it moves work: a sweep by the old routes must not move work to a carrier
        # the reload then removes (stranded there), nor find its target gone.
        self._reconfiguring = asyncio.Lock()
        self._expiry_cursor: tuple[float, int] = (float("-inf"), 0)  # Queue.expire_waiting
        self._kept_id_formats: dict[str, str] = {}  # what the store holds (Queue.id_formats)
        self.serving = False  # ready, not yet draining: smppd_up

    # --- carriers --------------------------------------------------------------------------

    def _start_carrier(
        self,
        carrier: cfg.Carrier,
        group: asyncio.TaskGroup,
        previous: CarrierRuntime | None = None,
    ) -> None:
        """Start `carrier`; `previous`, its runtime before a reload restarted it, hands on what
        its rate caps counted."""
        config = self.config
        totals = self._totals.get(carrier.name)
        if totals is None:
            totals = self._totals[carrier.name] = CarrierTotals(CarrierObserver(carrier.name))
        totals.observer.states.clear()  # the binds of the last start are gone
        learner = None
        if carrier.message_id_format is cfg.MessageIdFormat.AUTO:  # kept across reloads
            learner = totals.learner = totals.learner or self._learner(carrier.name)
        if totals.redeliveries is None:
            totals.redeliveries = Redeliveries(carrier.inbound_dedup_s)
        totals.redeliveries.window_s = carrier.inbound_dedup_s  # a reload may change it
        inbound = InboundHandler(
            carrier.name,
            self.queue,
            owners=owners(config),
            optout=optout_policy(config),
            unowned_to=unowned_inbound_client(config),
            auto_reply=self.gateway.submit_reply,
            withdraw=self._send_loops.withdraw,
            id_format=IdFormat(carrier.message_id_format.value),
            learner=learner,
            receipts_per_message=carrier.receipts_per is cfg.ReceiptsPer.MESSAGE,
            default_alphabet=(
                Alphabet.LATIN1
                if carrier.default_data_coding is cfg.DataCoding.LATIN1
                else Alphabet.GSM7
            ),
            publish=self.hub.publish,
            wants=self.hub.wants,
            clock=time.time,
            counters=totals.inbound,
            cooldown=self._reply_cooldown,
            redeliveries=totals.redeliveries,
        )
        observer = totals.observer
        binds = CarrierBinds(
            bind_settings(carrier),
            binds=carrier.binds,
            receivers=carrier.receiver_binds,
            handler=inbound,
            tps=carrier.tps,
            carrier=carrier.name,
            observer=observer,
        )
        loop = None
        if carrier.can_send and not carrier.paused:
            loop = CarrierSendLoop(
                carrier.name,
                self.queue,
                binds,
                claim_batch=config.queue.claim_batch,
                max_unrecorded=carrier.window * carrier.binds,
                policy=RetryPolicy(
                    max_attempts=config.queue.max_attempts,
                    initial_s=config.queue.retry_initial_s,
                    max_s=config.queue.retry_max_s,
                    unknown_delay_s=carrier.response_timeout_s,
                ),
                clock=time.time,
                on_changes=functools.partial(self.hub.publish_changes, carrier=carrier.name),
                sender_rates=self.sender_rates,
                id_format=IdFormat(carrier.message_id_format.value),
                learner=learner,
                receipts_per_message=carrier.receipts_per is cfg.ReceiptsPer.MESSAGE,
                outcome_latency=totals.outcome_latency,
                query_after_s=carrier.receipt_queries.after_s,
            )
        # Paused: down since ever, so that routes pass it over and its queued work fails over
        # at once, not after failover_after_s. A carrier down when a reload restarts it is down
        # since then still: a fresh outage would take traffic off its alternates again.
        down_since = -math.inf if carrier.paused else time.monotonic()
        if (
            not carrier.paused
            and previous is not None
            and not previous.config.paused
            and previous.down_since is not None
        ):
            down_since = previous.down_since
        if previous is not None:
            binds.carry_rate_from(previous.binds)
        runtime = CarrierRuntime(carrier, binds, inbound, observer, loop, down_since=down_since)
        self.carriers[carrier.name] = runtime
        if carrier.paused:
            log.warning("carrier paused: no binds until a reload unpauses it", carrier=carrier.name)
            return
        runtime.tasks.append(group.create_task(binds.run(), name=f"binds {carrier.name}"))
        if loop is not None:
            runtime.tasks.append(group.create_task(loop.run(), name=f"send {carrier.name}"))
        queried = carrier.receipt_queries
        if loop is not None and queried.after_s is not None:
            runtime.queries = ReceiptQueries(
                carrier.name,
                self.queue,
                binds,
                after_s=queried.after_s,
                tps=queried.tps,
                wait_s=config.queue.receipt_wait_s,
                clock=time.time,
                on_results=functools.partial(self._query_results, carrier.name),
                counts=totals.query_results,
            )
            task = group.create_task(runtime.queries.run(), name=f"queries {carrier.name}")
            runtime.tasks.append(task)
        log.info(
            "carrier started",
            carrier=carrier.name,
            binds=carrier.binds,
            window=carrier.window,
            tps=carrier.tps,
        )

    def _query_results(self, carrier: str, results: Sequence[ReceiptResult]) -> None:
        """What receipt queries settled goes to subscribers as a receipt would."""
        for result in results:
            self.hub.publish_changes(result.changes, carrier=carrier)

    def _learner(self, carrier: str) -> IdFormatLearner:
        """A carrier's first learner of this run, from what an earlier run kept of its ids."""
        known = self._kept_format(carrier)
        if known is not IdFormat.AUTO:
            learned_id_format(carrier, known, kept=True)
        return IdFormatLearner(known)

    def _kept_format(self, carrier: str) -> IdFormat:
        try:
            return IdFormat(self._kept_id_formats.get(carrier, IdFormat.AUTO))
        except ValueError:  # not a word this smppd writes: learn again
            return IdFormat.AUTO

    async def _rekey_by_format(self, carriers: Sequence[cfg.Carrier]) -> None:
        """`_rekey_held` for each carrier whose id format is set or was kept by a run."""
        for carrier in carriers:
            set_format = IdFormat(carrier.message_id_format.value)
            fmt = self._kept_format(carrier.name) if set_format is IdFormat.AUTO else set_format
            if fmt is not IdFormat.AUTO:
                await self._rekey_held(carrier.name, fmt, time.time())

    async def _rekey_held(self, carrier: str, fmt: IdFormat, now: float) -> None:
        """Receipts held under AUTO's keys before the carrier's id format was known (learned
        now, or by an earlier run, or set) get that format's keys: under the id as written
        they are another message's, whose resp would take them."""
        rekey = functools.partial(relearned_keys, fmt=fmt)
        changed = await self.queue.rekey_held(carrier, rekey, now=now)
        if changed:
            log.info(
                "held receipts now matched by the carrier's id format",
                carrier=carrier,
                receipts=changed,
                message_id_format=str(fmt),
            )

    async def _keep_id_formats(self, now: float) -> None:
        """Write what the learners found since the last time to the store, so that the next
        start begins from it; raises QueueError, and the next tick tries again."""
        for name, totals in list(self._totals.items()):
            if totals.learner is None:
                continue
            found = totals.learner.receipt_format
            learned = None if found is IdFormat.AUTO else str(found)
            if self._kept_id_formats.get(name) != learned:
                if learned is not None:  # first: a failure leaves both for the next tick
                    await self._rekey_held(name, found, now)
                await self.queue.set_id_format(name, learned, now=now)
                if learned is None:
                    del self._kept_id_formats[name]
                else:
                    self._kept_id_formats[name] = learned

    def _down_since(self, carrier: str) -> float | None:
        runtime = self.carriers.get(carrier)
        return time.monotonic() if runtime is None else runtime.down_since

    def _health(self) -> dict[str, Any]:
        carriers: dict[str, dict[str, Any]] = {}
        for name, rt in self.carriers.items():
            if rt.config.paused:  # taken out of service on purpose: not a fault
                carriers[name] = {"binds_up": 0, "binds": 0, "paused": True}
                continue
            carriers[name] = {"binds_up": rt.binds.bound_count, "binds": rt.config.binds}
            if rt.config.receiver_binds:
                carriers[name]["receivers_up"] = rt.binds.receivers_bound
                carriers[name]["receivers"] = rt.config.receiver_binds
            if rt.config.alternates:  # which of its SMSC addresses the binds are on
                carriers[name]["bound_at"] = rt.binds.bound_addresses()
        # "healthy", not "ok": a reply's "ok" says whether the request itself succeeded. A
        # carrier with receiver binds needs one of them up too, or no receipt comes.
        # A store that fails every write (a full disk, a locked database) takes nothing.
        failure = self.queue.write_failure
        healthy = (
            self.serving
            and failure is None
            and all(
                c.get("paused") or (c["binds_up"] > 0 and c.get("receivers_up", 1) > 0)
                for c in carriers.values()
            )
        )
        return {
            "healthy": healthy,
            "storage": "ok" if failure is None else failure.code,
            "carriers": carriers,
            "uptime_s": round(time.time() - self.started, 1),
        }

    # --- run -------------------------------------------------------------------------------

    async def _read_back(self) -> int:
        """What the last run left: daily counts, learned id formats, segments in flight (how
        many, to be resent)."""
        await self._load_caps(self.caps)
        self._kept_id_formats = await self.queue.id_formats()
        await self._rekey_by_format(self.config.carriers)  # what an earlier run held
        return await self.queue.recover(now=time.time())

    async def run(self) -> int:
        """Serve until asked to stop; QueueError if the queue cannot be read or recovered."""
        self._signals.install()
        api = ApiServer(
            ApiSettings.from_config(self.config.api),
            ClientTable.from_config(self.config.api.clients, owners(self.config)),
            self.gateway,
            observer=self._api_observer(),
        )
        self._api = api
        metrics_server = None
        try:
            # Scans of the whole store, as long as its open on a large one: more start time.
            recovered = await extending_start(self.notifier, self._read_back())
            if recovered:
                log.warning("resending segments left in flight by the last run", segments=recovered)
            if self._stop.is_set():
                log.info("smppd stopped before serving")
                return 0
            # The listeners first, outside the task group: one that cannot start ends the run
            # with its reason before any carrier binds.
            await self._start_api(api)
            metrics_server = self._start_metrics()
            async with asyncio.TaskGroup() as group:
                self._group = group
                for carrier in self.config.carriers:
                    self._start_carrier(carrier, group)
                housekeeping = group.create_task(self._housekeeping(), name="housekeeping")
                retention = group.create_task(self._retention_loop(), name="retention")
                self.notifier.ready("serving")
                self.serving = True
                log.info("smppd ready", socket=str(self.config.api.socket))
                await self._serve()
                self.serving = False
                self.notifier.stopping("draining")
                log.info("stopping: draining in-flight submits")
                self.gateway.shutting_down = True
                housekeeping.cancel()
                retention.cancel()
                await api.close()
                await asyncio.gather(*(rt.stop() for rt in self.carriers.values()))
                try:
                    await self._keep_id_formats(time.time())
                except QueueError as exc:  # the next start learns again
                    log.error("could not keep the learned id formats", error=str(exc))
                self.hub.close()
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
            await api.close()
            await self._send_loops.drain()
            await self.queue.close()
        log.info("smppd stopped")
        return 0

    async def _caps_for(self, old: Config, new: Config) -> DailyCaps | None:
        """The daily caps under `new`: the running ones, or counted again from the queue if
        their rules changed; None (logged) if the store cannot count them. Done before a reload
        changes anything, so that it is refused whole; a submit meanwhile may go uncounted."""
        if cap_rules(old) == cap_rules(new):
            return self.caps
        caps = daily_caps(new)
        try:
            await self._load_caps(caps)
        except QueueError as exc:
            log.error(
                "reload refused: the daily caps cannot be counted from the queue; "
                "keeping the running configuration",
                error=str(exc),
            )
            return None
        return caps

    async def _load_caps(self, caps: DailyCaps) -> None:
        """Rebuild the daily counts of capped senders in `caps` from what is already queued."""
        if not caps.senders:
            return
        today = day_of(time.time())
        for day, by_source in (await self.queue.segments_by_day(today * DAY_S)).items():
            counts: Counter[str] = Counter()
            # Messages stored before schema 15 and finished by then keep a long number's bare
            # digits: they count under its canonical form, as the cap and the rest do.
            for source, n in by_source.items():
                counts[canonical_sender(source)] += n
            caps.load(day, counts)

    async def _serve(self) -> None:
        while True:
            stop = asyncio.ensure_future(self._stop.wait())
            reload_ = asyncio.ensure_future(self._reload.wait())
            await asyncio.wait({stop, reload_}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            reload_.cancel()
            if self._stop.is_set():
                return
            self._reload.clear()
            await self._reload_config()

    async def _reload_config(self) -> None:
        self.notifier.reloading("reloading configuration")
        try:
            new = load_config(self.config_path)
        except Exception as exc:  # whatever the file holds, the daemon keeps serving
            error = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            log.error("reload refused; keeping the running configuration", error=error)
            self.notifier.ready("serving (reload refused)")
            return
        old = self.config
        changed = config_diff(old, new)
        if any(getattr(old.queue, k) != getattr(new.queue, k) for k in _SEND_LOOP_KEYS):
            changed |= _names(new)
        old_names = _names(old)
        caps = await self._caps_for(old, new)
        if caps is None:
            self.notifier.ready("serving (reload refused)")
            return
        restart = needs_restart(old, new)
        async with self._reconfiguring:
            faster = self._apply(keep_running(old, new), caps, changed)
            await self._restart_carriers(changed, old_names)
            await self._bring_forward(faster)
        await self._warn_removed(old, new)
        if restart:
            log.warning("configuration changes that need a restart are not applied", keys=restart)
        log.info(
            "configuration reloaded", carriers_restarted=sorted(changed), restart_needed=restart
        )
        self.notifier.ready("serving")

    async def _warn_removed(self, old: Config, new: Config) -> None:
        """A carrier the reload removed leaves its submitted segments' receipts unmatched: they
        are looked up by carrier name, message ids being the carrier's own. Said now, while the
        reload can still be undone, naming a new carrier on the same account (a rename)."""
        names = _names(new)
        removed = [carrier for carrier in old.carriers if carrier.name not in names]
        if not removed:
            return
        try:
            stats = await self.queue.stats(now=time.time())
        except QueueError:
            return  # the unsent work is reported by the next pass of the stats
        before = _names(old)
        added = [carrier for carrier in new.carriers if carrier.name not in before]
        for carrier in removed:
            waiting = stats.by_carrier.get(carrier.name, {}).get(SegmentState.SUBMITTED, 0)
            if not waiting:
                continue
            account = _account(carrier)
            renamed = next((c.name for c in added if _account(c) == account), None)
            log.warning(
                "carrier removed with awaited receipts",
                carrier=carrier.name,
                segments=waiting,
                renamed_to=renamed,
                hint="their receipts are not matched (they are looked up by carrier name) and"
                " they finish at queue.receipt_wait_s; name the carrier as before to keep them",
            )

    def _apply(self, new: Config, caps: DailyCaps, changed: set[str]) -> list[str]:
        """The reload's new settings, routes first: what is submitted from now on goes where
        the new config says, not to a carrier the reload is about to stop or remove. The
        senders whose rate went up or was lifted."""
        self.config = new
        self.caps = caps
        faster = self.sender_rates.set_tps(sender_rates(new))
        configure_logging(new.logging.level, new.logging.format)
        if self._api is not None:
            self._api.set_clients(ClientTable.from_config(new.api.clients, owners(new)))
        self.gateway.reconfigure(
            router(new), profiles(new), settings=gateway_settings(new), caps=self.caps
        )
        for name, runtime in self.carriers.items():  # those kept take the new policies
            if name in changed:
                continue
            runtime.inbound.reconfigure(
                owners=owners(new),
                optout=optout_policy(new),
                unowned_to=unowned_inbound_client(new),
            )
            if runtime.queries is not None:
                runtime.queries.wait_s = new.queue.receipt_wait_s
        return faster

    async def _bring_forward(self, senders: list[str]) -> None:
        """What was deferred for these senders' old rates is due now, to go at the new ones
        (lined up at the old rate, a backlog would drain at it for hours)."""
        for sender in senders:
            try:
                moved = await self.queue.bring_forward(sender, now=time.time())
            except QueueError as exc:
                log.warning("deferred messages keep their times", sender=sender, error=str(exc))
                continue
            if moved:
                log.info("deferred messages due now at the new rate", sender=sender, segments=moved)
        if senders:
            for runtime in self.carriers.values():
                if runtime.loop is not None:
                    runtime.loop.wake()

    async def _restart_carriers(self, changed: set[str], old_names: set[str]) -> None:
        """Stop the changed and removed carriers, all at once (one after another, each would be
        out for the sum of their drains), then start the changed ones on the new config."""
        draining = {
            name: runtime
            for name in sorted(changed & old_names)
            if (runtime := self.carriers.get(name)) is not None
        }
        # Kept in the table while they drain: their metrics go on (a counter that left and
        # came back would read as a reset), and arrivals find a stopping loop.
        await asyncio.gather(*(runtime.stop() for runtime in draining.values()))
        new = self.config
        restarting = [carrier for carrier in new.carriers if carrier.name in changed]
        try:  # a message_id_format set by this reload applies to the receipts held too
            await self._rekey_by_format(restarting)
        except QueueError as exc:
            log.warning("held receipts keep their keys until the next start", error=str(exc))
        assert self._group is not None
        kept = {carrier.name for carrier in restarting}
        for name, runtime in draining.items():
            del self.carriers[name]
            if runtime.loop is not None:
                self._totals[name].deferred_before += runtime.loop.deferred
            if name not in kept:
                gone = self._totals.pop(name)
                self._removed_counts.update(daemon_wide(gone.inbound, gone.deferred_before))
        for carrier in restarting:
            self._start_carrier(carrier, self._group, draining.get(carrier.name))

    async def _housekeeping(self) -> None:
        """Once a tick: the watchdog, carriers' down times, held MO parts, held receipts,
        failover and the queue gauges. Each step is bounded, so the watchdog's pings keep to
        the tick (a store that stops answering stops them: systemd then restarts the daemon)."""
        interval = watchdog_interval_s()
        step = HOUSEKEEPING_S if interval is None else min(HOUSEKEEPING_S, interval)
        # Intervals and outages go by the monotonic clock: a wall clock set back would hold
        # them off, one set forward would cut them short.
        last_stats = -math.inf
        watch = WallClockWatch(time.time(), time.monotonic())
        while True:
            now, ticked = time.time(), time.monotonic()
            jump = watch.step(now, ticked)
            self.notifier.watchdog()
            for runtime in self.carriers.values():
                if runtime.binds.bound_count > 0:
                    runtime.down_since = None
                elif runtime.down_since is None:
                    runtime.down_since = ticked
            try:
                if watch.unapplied is not None:  # kept until the store took it
                    await self._clock_stepped_back(*watch.unapplied, now=now)
                    watch.applied()
                if jump > 0:
                    log.info(
                        "wall clock stepped forward; scheduled work comes due that much sooner",
                        by_s=round(jump, 3),
                    )
                # A copy: a reload may change the carriers while this waits for the store.
                for runtime in list(self.carriers.values()):
                    await runtime.inbound.store_incomplete(now)
                await self._settle_receipts(now)
                await self._keep_id_formats(now)
                await self._fail_over(now, ticked)
                if ticked - last_stats >= STATS_EVERY_S:
                    last_stats = ticked
                    await self._expire_waiting(now)
                    await self._refresh_stats(now)
            except QueueError as exc:
                log.error("housekeeping query failed", error=str(exc))
            except Exception:  # a bug here must not stop sending: log it, try next tick
                log.exception("housekeeping failed")
            await asyncio.sleep(step)

    async def _clock_stepped_back(self, back_s: float, since: float, *, now: float) -> None:
        """Retries and deferrals set before the step keep their delays (see smppd.wallclock);
        raises QueueError, and the next tick tries again."""
        loops = [runtime.loop for runtime in self.carriers.values() if runtime.loop is not None]
        try:  # outcomes of the old clock first, to be moved with the rest
            async with asyncio.timeout(SETTLE_OUTCOMES_S):
                for loop in loops:
                    await loop.settle_outcomes()
        except TimeoutError:  # storage trouble: the rebase below fails too, or they were late
            log.warning("outcomes were still being recorded when the clock step was applied")
        moved = await self.queue.rebase_schedules(back_s, now=now, since=since)
        log.warning(
            "wall clock stepped back; waiting retries moved back with it",
            by_s=round(back_s, 3),
            segments=moved,
        )
        for runtime in self.carriers.values():
            if runtime.loop is not None:
                runtime.loop.rebased()
        # Validities set since end before where the expiry sweep got to with the old clock.
        self._expiry_cursor = (float("-inf"), 0)

    async def _retention_loop(self) -> None:
        """Retention in a task of its own: purging millions of finished messages takes a
        while, and housekeeping (the watchdog above all) must go on meanwhile."""
        while True:
            try:
                await self._retention(time.time())
            except QueueError as exc:
                log.error("retention query failed", error=str(exc))
            except Exception:
                log.exception("retention failed")
            await asyncio.sleep(PURGE_EVERY_S)

    async def _expire_waiting(self, now: float) -> None:
        """Messages whose validity ended while they waited (their carrier down, say) read as
        expired, not queued, and their clients hear of it; bounded steps a tick."""
        for _ in range(EXPIRE_STEPS):
            changes, self._expiry_cursor, done = await self.queue.expire_waiting(
                now=now, after=self._expiry_cursor, limit=EXPIRE_STEP
            )
            self.hub.publish_changes(changes)
            if done:
                return

    async def _settle_receipts(self, now: float) -> None:
        """Receipts held a while go to segments that wrote their number another way."""
        for carrier, changes in (await self.queue.settle_receipts(now=now)).items():
            self.hub.publish_changes(changes, carrier=carrier)
            if carrier not in self._fallback_warned:
                self._fallback_warned.add(carrier)
                log.warning(
                    "receipts give message ids written otherwise than the submit_sm_resp; "
                    "they match after a wait: set message_id_format for this carrier",
                    carrier=carrier,
                    receipts=len(changes),
                )

    async def _fail_over(self, now: float, ticked: float) -> None:
        """Move the waiting work of carriers down past their routes' failover_after_s to the
        carrier up that their routes name next (see `failover_pick`), a bounded sweep a tick.
        `ticked` is time.monotonic(), which outages are measured in; `now` the wall clock."""
        if self._reconfiguring.locked():
            return  # a reload is changing the carriers: the next tick sweeps by the new ones
        async with self._reconfiguring:
            await self._sweep(now, ticked)

    async def _sweep(self, now: float, ticked: float) -> None:
        """_fail_over's sweep, the carriers and config unchanged while it runs."""
        # Snapshots: `pick` runs beside the event loop, in the queue's thread.
        down = {name: rt.down_since for name, rt in self.carriers.items()}
        senders = profiles(self.config)
        routes = router(self.config)
        for name in list(self.carriers):
            runtime = self.carriers[name]
            if not may_fail_over(self.config.routes, down, senders, name, now=ticked):
                self._reroute_cursors.pop(name, None)
                if (
                    runtime.loop is not None
                    and runtime.down_since is not None
                    and ticked - runtime.down_since >= self._hand_back_after(name)
                ):
                    # Nowhere to go, but a batch claimed before the outage reads as queued,
                    # not inflight, for as long as it lasts; it goes once a bind is up.
                    runtime.loop.hand_back()
                continue
            send_loop = runtime.loop
            if send_loop is not None:  # a batch claimed before the outage: swept next tick
                send_loop.hand_back()
            pick = functools.partial(failover_pick, routes, down, senders, name, now=ticked)
            cursor = self._reroute_cursors.pop(name, None)
            for _ in range(REROUTE_STEPS):
                moved, cursor = await self.queue.reroute(name, pick, now=now, after=cursor)
                for target, messages in moved.items():
                    self.failed_over[name, target] += messages
                    log.warning(
                        "queued messages failed over",
                        carrier=name,
                        to_carrier=target,  # `to` is masked as a phone number
                        messages=messages,
                    )
                    target_runtime = self.carriers.get(target)
                    if target_runtime is not None and target_runtime.loop is not None:
                        target_runtime.loop.wake()
                if cursor is None:
                    break
            if cursor is not None:
                self._reroute_cursors[name] = cursor

    def _hand_back_after(self, carrier: str) -> float:
        """How long a carrier with nowhere to fail over to is down before its claimed work goes
        back in the queue: when its routes would have failed it over."""
        after = [r.failover_after_s for r in self.config.routes if carrier in r.carriers]
        return min(after, default=DEFAULT_HAND_BACK_AFTER_S)

    async def _retention(self, now: float) -> None:
        settings = self.config.queue
        overdue = await self.queue.finish_overdue(now - settings.receipt_wait_s, now=now)
        if overdue:
            self.receipts_overdue += overdue
            log.warning(
                "stopped waiting for receipts",
                messages=overdue,
                waited_s=settings.receipt_wait_s,
            )
        before = now - settings.retention_s
        if self.caps.senders:
            # A restart counts today's submits of capped senders from today's messages: a
            # shorter retention keeps them to the day's end, or the caps would start at 0.
            before = min(before, day_of(now) * DAY_S)
        purged = await self.queue.purge(before)
        if purged:
            log.info("purged finished messages", messages=purged)
        await self.queue.forget_seen(now=now)  # redelivery fingerprints past their window

    async def _refresh_stats(self, now: float) -> None:
        stats = await self.queue.stats(now=now)
        senders = {name for name, runtime in self.carriers.items() if runtime.config.can_send}
        unrouted = unrouted_work(stats.by_carrier, senders)
        warn = unrouted and unrouted != self.queue_snapshot.get("unrouted")
        # The gauges first: a scrape (another thread) prompted by the warning must show it.
        self.queue_snapshot = {
            "queued_depth": stats.queued_depth,
            "segments": {str(k): dict(v) for k, v in stats.segments.items()},
            "by_carrier": {
                carrier: {str(state): n for state, n in by_state.items()}
                for carrier, by_state in stats.by_carrier.items()
            },
            "oldest_queued_age_s": stats.oldest_queued_age_s,
            "oldest_by_carrier": dict(stats.oldest_age_by_carrier),
            "depth_by_client": dict(stats.depth_by_client),
            "receipts_held": stats.receipts_held,
            "unrouted": unrouted,
        }
        if warn:
            log.warning(
                "queued work for carriers that do not send",
                segments=unrouted,
                hint="a reload removed them or made them receiver-only: nothing sends it;"
                " add them back as senders, or cancel their messages",
            )

    def _api_observer(self) -> ApiObserver:
        return self.api_counts

    async def _start_api(self, api: ApiServer) -> None:
        socket = self.config.api.socket
        try:
            socket.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = f"cannot create {socket.parent}: {exc.strerror}"
            raise StartupError(f"api.socket: {reason}") from None
        try:
            await api.start()
        except ApiServerError as exc:
            raise StartupError(f"api.socket: {exc}") from None

    def metrics_registry(self) -> CollectorRegistry:
        """What /metrics shows: the smppd_* families, and the process' own (process_*: CPU,
        RSS, open files, start time)."""
        registry = CollectorRegistry()
        registry.register(
            SmppdCollector(
                carriers=lambda: [rt.view() for rt in list(self.carriers.values())],
                api=self.api_counts,
                queue_snapshot=lambda: self.queue_snapshot,
                extra_counters=self._extra_counters,
                commit_latency=self.queue.commit_latency,
                held_receipts_ended=lambda: self.queue.held_ended,
                failed_over=lambda: self.failed_over,
                serving=lambda: self.serving,
                writable=lambda: self.queue.write_failure is None,
            )
        )
        ProcessCollector(registry=registry)
        return registry

    def _start_metrics(self) -> Any:
        listen = self.config.metrics.listen
        if listen is None:
            return None
        registry = self.metrics_registry()
        try:
            server = serve_metrics(listen.host, listen.port, registry)
        except OSError as exc:  # gaierror for a name that does not resolve, EADDRINUSE, ...
            reason = exc.strerror or str(exc)
            raise StartupError(f"metrics.listen: cannot listen on {listen}: {reason}") from None
        log.info("metrics listening", address=f"{listen.host}:{server.server_port}")
        return server

    def _extra_counters(self) -> Mapping[str, int]:
        summed = self._removed_counts.copy()  # names and HELP texts: metrics.DAEMON_COUNTERS
        for totals in self._totals.values():
            summed.update(daemon_wide(totals.inbound, totals.deferred_before))
        summed["sender_rate_deferrals"] += sum(
            rt.loop.deferred for rt in self.carriers.values() if rt.loop
        )
        return {
            **summed,
            "events_published": self.hub.published,
            "subscribers_dropped": self.hub.dropped_subscribers,
            "accepted": self.gateway.accepted,
            "receipts_overdue": self.receipts_overdue,
            "queue_commits": self.queue.commits,
        }


_T = TypeVar("_T")
# Start time asked of systemd while the queue opens and is read back, again every third of it:
# a migration of a large file can outlast TimeoutStartSec, and a start killed half way would
# restart into it.
OPEN_EXTEND_S: Final = 60.0


async def extending_start(notifier: Notifier, opening: Awaitable[_T]) -> _T:
    """`opening`, with more start time asked of the service manager while it runs."""

    async def extend() -> None:
        while True:
            notifier.extend_timeout(OPEN_EXTEND_S)
            await asyncio.sleep(OPEN_EXTEND_S / 3)

    keeper = asyncio.create_task(extend())
    try:
        return await opening
    finally:
        keeper.cancel()


async def main(config_path: Path) -> int:
    # Before the config is read: a reload asked meanwhile is applied once serving.
    signals = Signals()
    signals.install()
    config = load_config(config_path)
    configure_logging(config.logging.level, config.logging.format)
    try:
        config.queue.path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, a read-only file system, no permission
        error = f"cannot create {exc.filename or config.queue.path.parent}: {exc.strerror}"
        log.error("cannot open the queue", path=str(config.queue.path), error=error)
        return 1
    # A migration of a large file can take a while: say what is happening.
    log.info("opening the queue", path=str(config.queue.path))
    opening = open_queue(
        "sqlite",
        config.queue.path,
        receipt_hold_s=config.queue.receipt_hold_s,
        commit_interval_s=config.queue.commit_interval_s,
    )
    try:
        queue = await extending_start(Notifier(), opening)
    except QueueError as exc:
        log.error("cannot open the queue", path=str(config.queue.path), error=str(exc))
        return 1
    tune_gc()
    try:
        return await Daemon(config, config_path, queue, signals).run()
    except StartupError as exc:
        log.error("cannot start", error=str(exc))
    except QueueError as exc:  # a locked or unreadable store while recovering
        log.error("cannot open the queue", path=str(config.queue.path), error=str(exc))
    return 1


def run(config_path: Path) -> int:
    """Entry point of `smppd run`: ConfigError propagates (the CLI exits 78 with its line)."""
    return asyncio.run(main(config_path))
