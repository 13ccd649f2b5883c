"""Prometheus metrics: counters kept by plain observers, exported by one collector at scrape time.

The hot paths (every submit, every receipt) only bump plain ints in an observer; prometheus-client
objects are built when Prometheus scrapes, from those counts and from snapshots the daemon keeps.
Labels are carrier, bind, status, state, op and result names: never numbers or text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from smppd.histogram import Histogram
from smppd.pdu.status import status_label
from smppd.session import RECEIVER_BIND_PREFIX, State, SubmitResult

_BOUND = frozenset({State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX})


# The daemon's own counters (Daemon._extra_counters), each exported as smppd_<name>_total.
DAEMON_COUNTERS: Final[Mapping[str, str]] = {
    "optouts": "Opt-outs (STOP and friends) recorded from inbound messages",
    "optins": "Opt-ins (START and friends) recorded from inbound messages",
    "auto_replies": "Automatic replies to keyword messages, queued to be sent",
    "inbound_unowned": "Inbound messages to a number no sender entry owns: stored, and told"
    " only to the api client with unowned_inbound, if one has it",
    "sender_rate_deferrals": "Segments held back by a sender's own tps",
    "events_published": "Events queued to API subscribers (one per subscriber taking it)",
    "subscribers_dropped": "API subscribers dropped for not reading their events",
    "accepted": "Messages accepted onto the queue (a repeated ref is not counted again)",
    "receipts_overdue": "Messages finished without all their receipts after queue.receipt_wait_s",
    "queue_commits": "Store transactions, one fsync each",
}


@dataclass
class CarrierObserver:
    """A carrier's BindObserver (smppd.link): what its binds did, as plain counts."""

    carrier: str
    states: dict[str, State] = field(default_factory=dict)
    submits: Counter[str] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=Histogram)
    throttled_count: int = 0
    throttling_answers: int = 0  # submit answers asking to slow down, whether or not they did
    timeouts: int = 0
    late: int = 0
    late_accepted: int = 0
    peer_errors: int = 0
    handler_failures: int = 0
    bind_failures: Counter[str] = field(default_factory=Counter)
    disconnects: Counter[str] = field(default_factory=Counter)
    reconnects: Counter[str] = field(default_factory=Counter)

    def state_changed(self, bind: str, state: State) -> None:
        self.states[bind] = state

    def submit_ended(self, bind: str, result: SubmitResult, latency_s: float | None) -> None:
        if latency_s is None:
            self.submits["unknown"] += 1
        else:
            self.submits[status_label(result.command_status)] += 1
            self.throttling_answers += result.throttling
            self.latency.observe(latency_s)

    def response_timed_out(self, bind: str) -> None:
        self.timeouts += 1

    def late_response(self, bind: str, *, accepted: bool, latency_s: float) -> None:
        self.late += 1
        self.late_accepted += accepted
        self.latency.observe(latency_s)  # how slow the carrier answers, past the timeout too

    def throttled(self, bind: str, command_status: int, tps: float | None) -> None:
        self.throttled_count += 1

    def peer_error(self, bind: str) -> None:
        self.peer_errors += 1

    def handler_failed(self, bind: str) -> None:
        self.handler_failures += 1

    def bind_failed(self, bind: str, command_status: int, permanent: bool) -> None:
        self.bind_failures[status_label(command_status)] += 1

    def disconnected(self, bind: str, reason: str) -> None:
        self.disconnects[reason] += 1

    def reconnect_scheduled(self, bind: str, reason: str, delay_s: float) -> None:
        self.reconnects[reason] += 1

    @property
    def binds_up(self) -> int:
        """Bound binds that can send: a carrier's receiver_binds are `receivers_up`."""
        return sum(
            s in _BOUND
            for bind, s in dict(self.states).items()
            if not bind.startswith(RECEIVER_BIND_PREFIX)
        )

    @property
    def receivers_up(self) -> int:
        return sum(
            s in _BOUND
            for bind, s in dict(self.states).items()
            if bind.startswith(RECEIVER_BIND_PREFIX)
        )


@dataclass
class ApiObserverCounts:
    """The API server's observer: requests by op and result, connections refused by code and
    dropped by reason."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=Histogram)

    def request_finished(self, op: str, result: str, duration_s: float) -> None:
        self.requests[(op, result)] += 1
        self.latency.observe(duration_s)

    def messages_finished(self, results: Iterable[str]) -> None:
        self.messages.update(results)

    def connection_refused(self, code: str) -> None:
        self.refused[code] += 1

    def connection_dropped(self, reason: str) -> None:
        self.dropped[reason] += 1


@dataclass(frozen=True, slots=True)
class CarrierView:
    """What the collector reads of one carrier at scrape time."""

    name: str
    configured: int
    observer: CarrierObserver
    window_in_use: Callable[[], int]
    receipts: Callable[[], Mapping[str, int]]
    inbound: Callable[[], int]
    inbound_redelivered: Callable[[], int] = lambda: 0  # MO an SMSC delivered again
    queries: Callable[[], Mapping[str, int]] = dict  # receipt queries by how they ended
    outcome_latency: Histogram | None = None  # None: the carrier only receives
    delivery: Histogram | None = None  # acceptance -> final receipt (InboundCounters.delivery)
    receivers: int = 0  # receiver_binds configured
    paused: bool = False  # carriers[].paused: it keeps no binds (configured reads 0)


class SmppdCollector(Collector):
    """Builds every smppd_* family from the views and snapshots it is given."""

    def __init__(
        self,
        *,
        carriers: Callable[[], Iterable[CarrierView]],
        api: ApiObserverCounts,
        queue_snapshot: Callable[[], Mapping[str, Any]],
        extra_counters: Callable[[], Mapping[str, int]],
        commit_latency: Histogram | None = None,
        held_receipts_ended: Callable[[], Mapping[str, Mapping[str, int]]] = dict,
        failed_over: Callable[[], Mapping[tuple[str, str], int]] = dict,
        serving: Callable[[], bool] = lambda: True,
        writable: Callable[[], bool] = lambda: True,
    ) -> None:
        self._carriers = carriers
        self._api = api
        self._queue = queue_snapshot
        self._extra = extra_counters
        self._commit_latency = commit_latency
        self._held_ended = held_receipts_ended
        self._failed_over = failed_over
        self._serving = serving
        self._writable = writable

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "smppd_up",
            "1 while the daemon serves, 0 while it starts or drains",
            value=self._serving(),
        )
        yield GaugeMetricFamily(
            "smppd_queue_writable",
            "0 for 30 s from each transaction the store failed for its own sake (disk full,"
            " database locked or damaged, I/O errors): submits were refused, outcomes not recorded",
            value=self._writable(),
        )
        yield from self._carrier_families()
        yield from self._carrier_inbound_families()
        yield from self._queue_families()
        api = CounterMetricFamily(
            "smppd_api_requests", "API requests by op and result", labels=["op", "result"]
        )
        for (op, result), n in dict(self._api.requests).items():
            api.add_metric([op, result], n)
        yield api
        api_latency = HistogramMetricFamily(
            "smppd_api_request_seconds", "API requests, from read to reply written"
        )
        api_latency.add_metric([], self._api.latency.cumulative(), self._api.latency.total)
        yield api_latency
        yield _counted(
            "smppd_api_messages",
            "Messages submitted over the API (submit and submit_many) by result",
            "result",
            self._api.messages,
        )
        yield _counted(
            "smppd_api_connections_refused", "API connections refused", "code", self._api.refused
        )
        yield _counted(
            "smppd_api_connections_dropped",
            "API connections dropped by the server",
            "reason",
            self._api.dropped,
        )
        for name, value in dict(self._extra()).items():
            yield CounterMetricFamily(f"smppd_{name}", DAEMON_COUNTERS[name], value=value)

    def _carrier_families(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("smppd_binds_up", "Binds bound now", labels=["carrier"])
        configured = GaugeMetricFamily(
            "smppd_binds_configured",
            "Binds configured (0 while the carrier is paused)",
            labels=["carrier"],
        )
        paused = GaugeMetricFamily(
            "smppd_carrier_paused",
            "1 while carriers[].paused takes the carrier out of service",
            labels=["carrier"],
        )
        receivers_up = GaugeMetricFamily(
            "smppd_receiver_binds_up",
            "receiver_binds bound now (where a carrier with split binds sends receipts and MO)",
            labels=["carrier"],
        )
        receivers_configured = GaugeMetricFamily(
            "smppd_receiver_binds_configured", "receiver_binds configured", labels=["carrier"]
        )
        window = GaugeMetricFamily(
            "smppd_window_in_use", "submit_sm awaiting a response", labels=["carrier"]
        )
        submits = CounterMetricFamily(
            "smppd_submits", "submit_sm answered, by command_status", labels=["carrier", "status"]
        )
        throttled = CounterMetricFamily(
            "smppd_throttled", "Throttling answers that slowed a bind", labels=["carrier"]
        )
        throttling_answers = CounterMetricFamily(
            "smppd_throttling_answers",
            "submit_sm answers asking to slow down: ESME_RTHROTTLED, ESME_RMSGQFUL and the"
            " carrier's submit_statuses.throttling (counted in smppd_submits too)",
            labels=["carrier"],
        )
        reconnects = CounterMetricFamily(
            "smppd_reconnects", "Reconnects scheduled, by reason", labels=["carrier", "reason"]
        )
        bind_failures = CounterMetricFamily(
            "smppd_bind_failures", "Bind attempts refused", labels=["carrier", "status"]
        )
        timeouts = CounterMetricFamily(
            "smppd_response_timeouts", "Requests with no response in time", labels=["carrier"]
        )
        late = CounterMetricFamily(
            "smppd_late_responses",
            "Responses that came after their request had timed out; an acceptance among them"
            " settles its segment unless it went out again",
            labels=["carrier"],
        )
        late_accepted = CounterMetricFamily(
            "smppd_late_acceptances",
            "ESME_ROK answers that came after their submit had timed out: many mean"
            " response_timeout_s is below the carrier's answer time",
            labels=["carrier"],
        )
        peer_errors = CounterMetricFamily(
            "smppd_peer_errors",
            "SMSC protocol errors the bind survived (a bad or unexpected PDU)",
            labels=["carrier"],
        )
        handler_failures = CounterMetricFamily(
            "smppd_deliver_failures",
            "deliver_sm/data_sm answered ESME_RX_T_APPN because storing them failed",
            labels=["carrier"],
        )
        latency = HistogramMetricFamily(
            "smppd_submit_latency_seconds",
            "submit_sm to its submit_sm_resp, late answers included",
            labels=["carrier"],
        )
        outcome_latency = HistogramMetricFamily(
            "smppd_outcome_commit_seconds",
            "A sent segment's outcome to its commit (its window slot stays taken meanwhile)",
            labels=["carrier"],
        )
        for view in self._carriers():
            obs, name = view.observer, view.name
            up.add_metric([name], obs.binds_up)
            configured.add_metric([name], view.configured)
            paused.add_metric([name], int(view.paused))
            if view.receivers:
                receivers_up.add_metric([name], obs.receivers_up)
                receivers_configured.add_metric([name], view.receivers)
            window.add_metric([name], view.window_in_use())
            for status, n in dict(obs.submits).items():
                submits.add_metric([name, status], n)
            throttled.add_metric([name], obs.throttled_count)
            throttling_answers.add_metric([name], obs.throttling_answers)
            for reason, n in dict(obs.reconnects).items():
                reconnects.add_metric([name, reason], n)
            for status, n in dict(obs.bind_failures).items():
                bind_failures.add_metric([name, status], n)
            timeouts.add_metric([name], obs.timeouts)
            late.add_metric([name], obs.late)
            late_accepted.add_metric([name], obs.late_accepted)
            peer_errors.add_metric([name], obs.peer_errors)
            handler_failures.add_metric([name], obs.handler_failures)
            latency.add_metric([name], obs.latency.cumulative(), obs.latency.total)
            if view.outcome_latency is not None:
                histogram = view.outcome_latency
                outcome_latency.add_metric([name], histogram.cumulative(), histogram.total)
        yield from (up, configured, paused, receivers_up, receivers_configured, window, submits)
        yield from (throttled, throttling_answers, reconnects, bind_failures)
        yield from (timeouts, late, late_accepted, peer_errors, handler_failures)
        yield from (latency, outcome_latency)

    def _carrier_inbound_families(self) -> Iterator[Metric]:
        receipts = CounterMetricFamily(
            "smppd_receipts", "Delivery receipts by match result", labels=["carrier", "result"]
        )
        inbound = CounterMetricFamily(
            "smppd_inbound", "Mobile-originated messages stored", labels=["carrier"]
        )
        redelivered = CounterMetricFamily(
            "smppd_inbound_redelivered",
            "Mobile-originated PDUs an SMSC delivered again within carriers[].inbound_dedup_s:"
            " answered, not stored again",
            labels=["carrier"],
        )
        delivery = HistogramMetricFamily(
            "smppd_delivery_seconds",
            "A segment's acceptance by the SMSC to its final delivery receipt, for segments"
            " whose first receipt is final",
            labels=["carrier"],
        )
        queries = CounterMetricFamily(
            "smppd_receipt_queries",
            "query_sm about segments whose receipt was late, by how they ended: final (applied"
            " as the receipt), pending, no_answer, unknown_id",
            labels=["carrier", "result"],
        )
        for view in self._carriers():
            name = view.name
            for result, n in dict(view.receipts()).items():
                receipts.add_metric([name, result], n)
            inbound.add_metric([name], view.inbound())
            redelivered.add_metric([name], view.inbound_redelivered())
            if view.delivery is not None:
                delivery.add_metric([name], view.delivery.cumulative(), view.delivery.total)
            for result, n in dict(view.queries()).items():
                queries.add_metric([name, result], n)
        yield from (receipts, inbound, redelivered, delivery, queries)

    def _queue_families(self) -> Iterator[Metric]:
        if self._commit_latency is not None:
            commits = HistogramMetricFamily(
                "smppd_queue_commit_seconds",
                "Store write transactions (one fsync each), from taking their writes to committed",
            )
            commits.add_metric([], self._commit_latency.cumulative(), self._commit_latency.total)
            yield commits
        snap = self._queue()
        depth = GaugeMetricFamily("smppd_queue_depth", "Segments not yet accepted by an SMSC")
        depth.add_metric([], snap.get("queued_depth", 0))
        yield depth
        segments = GaugeMetricFamily(
            "smppd_queue_segments", "Segments by state and priority", labels=["state", "priority"]
        )
        for state, by_priority in snap.get("segments", {}).items():
            for priority, n in by_priority.items():
                segments.add_metric([str(state), str(priority)], n)
        yield segments
        by_carrier = GaugeMetricFamily(
            "smppd_queue_carrier_segments",
            "Segments by carrier and state",
            labels=["carrier", "state"],
        )
        for carrier, by_state in snap.get("by_carrier", {}).items():
            for state, n in by_state.items():
                by_carrier.add_metric([carrier, str(state)], n)
        yield by_carrier
        age = snap.get("oldest_queued_age_s")
        oldest = GaugeMetricFamily(
            "smppd_queue_oldest_age_seconds",
            "How long the oldest due work not yet accepted by a carrier (queued or retrying) waits",
        )
        oldest.add_metric([], 0.0 if age is None else age)
        yield oldest
        by_carrier_age = GaugeMetricFamily(
            "smppd_queue_carrier_oldest_age_seconds",
            "smppd_queue_oldest_age_seconds per carrier with due work",
            labels=["carrier"],
        )
        for carrier, seconds in snap.get("oldest_by_carrier", {}).items():
            by_carrier_age.add_metric([carrier], seconds)
        yield by_carrier_age
        by_client = GaugeMetricFamily(
            "smppd_queue_client_depth",
            "smppd_queue_depth per API client with unsent work (its max_queued caps it)",
            labels=["client"],
        )
        for client, n in snap.get("depth_by_client", {}).items():
            by_client.add_metric([client], n)
        yield by_client
        held = GaugeMetricFamily("smppd_receipts_held", "Early receipts awaiting their submit")
        held.add_metric([], snap.get("receipts_held", 0))
        yield held
        held_ended = CounterMetricFamily(
            "smppd_receipts_held_ended",
            "Early receipts no longer held: matched, duplicate, unmatched (hold passed), dropped",
            labels=["carrier", "result"],
        )
        for carrier, by_result in self._held_ended().items():
            for result, n in by_result.items():
                held_ended.add_metric([carrier, result], n)
        yield held_ended
        unrouted = GaugeMetricFamily(
            "smppd_queue_unrouted_segments",
            "Unsent segments for a carrier removed or made receiver-only: nothing sends them",
            labels=["carrier"],
        )
        for carrier, n in snap.get("unrouted", {}).items():
            unrouted.add_metric([carrier], n)
        yield unrouted
        failed_over = CounterMetricFamily(
            "smppd_failover_messages",
            "Queued messages moved to another carrier of their route, their own being down past"
            " the route's failover_after_s",
            labels=["carrier", "to_carrier"],
        )
        for (carrier, target), n in dict(self._failed_over()).items():
            failed_over.add_metric([carrier, target], n)
        yield failed_over


def _counted(name: str, documentation: str, label: str, counts: Mapping[str, int]) -> Metric:
    """A counter family with one sample per key of `counts` (a copy: it may grow meanwhile)."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, n in dict(counts).items():
        family.add_metric([value], n)
    return family
