"""Rate limits with the clock passed in: a hard sliding-window cap and a bind's adaptive rate.

Owns the arithmetic of "at most N sends in any span of P seconds" (a TPS cap holds over any
one-second span, which a token bucket with a burst does not guarantee) and of
slowing a bind down when the SMSC answers ESME_RTHROTTLED / ESME_RMSGQFUL. It must not know
asyncio or SMPP: `now` is an argument and the callers decide what a send is.

The window keeps the times of the last `capacity` sends in a ring, so checking and recording a
send are O(1) whatever the rate, and the limit can shrink or grow within the capacity at once.
The ring is an array of doubles: a list would hold a float object (24 bytes more) for each of
the last `capacity` sends, 24 MB at 1,000,000 a second, filling as the traffic passes.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Mapping

# A cap's span is counted a little wider than its period. The carrier counts submits as they
# arrive, and ours reach it with the jitter of the event loop's writes (a tick's submits leave
# together at its end): counted over exactly one second of our clock, 300/s came in as up to 2%
# more in some second at an SMSC capping at 300, which answered the excess ESME_RTHROTTLED.
ARRIVAL_MARGIN = 1.02
# A paced cap (the SMSC-facing ones: a carrier's tps, a bind's) spreads its sends evenly over
# its span, one per period / limit; a send may run this far ahead of that pace (or one send's
# step, if longer), which absorbs the jitter of the event loop's timers without losing rate.
# Sent as fast as allowed, a second's cap went out in its first milliseconds, and an urgent
# message arriving after that burst waited for the next second (720 ms at 50/s), while SMSCs
# that count in parts of a second throttled the burst. Kannel and Jasmin pace evenly too. No
# more ahead than that: the hard cap repeats a span later whatever burst it let through, and
# the gap behind it is what an urgent message may wait.
PACE_AHEAD_S = 0.02


def window_for_rate(tps: float) -> tuple[int, float]:
    """(limit, period_s) for a rate: whole sends per second, or one per 1/tps seconds below 1/s.

    A fractional rate is rounded down, since the cap is a hard limit.
    """
    if not tps > 0:
        raise ValueError("a rate must be positive")
    if tps >= 1:
        return math.floor(tps), 1.0
    return 1, 1.0 / tps


class SlidingWindow:
    """At most `limit` sends in any half-open span of `period_s` seconds; `paced`, spread out
    too: one per period_s / limit, running ahead of that by PACE_AHEAD_S (or a step) at most."""

    __slots__ = ("_ahead_s", "_capacity", "_due", "_i", "_paced", "_ring", "limit", "period_s")

    def __init__(
        self,
        limit: int,
        *,
        period_s: float = 1.0,
        capacity: int | None = None,
        paced: bool = False,
    ) -> None:
        capacity = limit if capacity is None else capacity
        if not 1 <= limit <= capacity or period_s <= 0:
            raise ValueError("need 1 <= limit <= capacity and period_s > 0")
        self._capacity = capacity
        self._ring = array("d", [-math.inf]) * capacity  # send times, oldest at _i
        self._i = 0
        self._due = -math.inf  # when the next send is due at the even pace
        self._paced = paced
        self.limit = limit
        self.period_s = period_s
        self._ahead_s = self._ahead()

    @classmethod
    def for_rate(cls, tps: float, *, paced: bool = False) -> SlidingWindow:
        """The hard cap for `tps`, its span widened by ARRIVAL_MARGIN."""
        limit, period_s = window_for_rate(tps)
        return cls(limit, period_s=period_s * ARRIVAL_MARGIN, paced=paced)

    @property
    def capacity(self) -> int:
        return self._capacity

    def set_limit(self, limit: int) -> None:
        self.limit = min(max(1, limit), self._capacity)
        self._ahead_s = self._ahead()

    def _ahead(self) -> float:
        return max(PACE_AHEAD_S, self.period_s / self.limit) if self._paced else math.inf

    def inherit(self, previous: SlidingWindow) -> None:
        """Count the latest sends `previous` recorded as this window's own: a window that
        takes over from another (a new rate, a restarted carrier) must not grant a whole cap
        on top of what went out in the last span."""
        kept = min(self._capacity, previous._capacity)
        ring, start = previous._ring, previous._i - kept
        for k in range(kept):
            self.record(ring[(start + k) % previous._capacity])

    def allows(self, now: float) -> bool:
        # The send `limit` places back must have left the span that would end at `now`.
        return (
            self._due - self._ahead_s <= now  # as ready_at reckons it, to the last bit
            and self._ring[(self._i - self.limit) % self._capacity] + self.period_s <= now
        )

    def record(self, now: float) -> None:
        self._ring[self._i] = now
        self._i = (self._i + 1) % self._capacity
        self._due = max(self._due, now) + self.period_s / self.limit

    def try_acquire(self, now: float) -> bool:
        if self.allows(now):
            self.record(now)
            return True
        return False

    def ready_at(self, now: float) -> float:
        """The earliest time at or after `now` when a send is allowed."""
        return max(
            now,
            self._ring[(self._i - self.limit) % self._capacity] + self.period_s,
            self._due - self._ahead_s,
        )


# Throttling answers slow a bind down only once there are SPORADIC_MIN_THROTTLES of them and
# they are SPORADIC_SHARE of its sends, both over the last SPORADIC_SPAN_S seconds. A carrier
# that throttles now and then whatever the rate (a busy moment, a queue-full spike) would
# otherwise hold the bind near one send per backoff, since each slow-down pauses it, and a
# slowed bind would never send enough to tell. Those submits are retried as usual. A rate
# over the carrier's cap draws throttling on all its excess, past both at once.
SPORADIC_SHARE = 0.05  # as the SmppdThrottlingSustained alert: past it, slow down and tell
SPORADIC_MIN_THROTTLES = 5
SPORADIC_SPAN_S = 10


class AdaptiveRate:
    """A bind's own rate: its cap (or none), halved when the SMSC says slow down, then regained.

    On a throttling answer to a send made since the last slow-down began, sending pauses for
    `backoff_s` and the limit halves; after that, each `backoff_s` without a new throttling
    answer adds a tenth of the ceiling back. The ceiling is the configured rate, or for an
    uncapped bind the rate it reached in the second before the first throttling answer (the cap
    is dropped again once that is regained). Answers to sends made before the slow-down began
    are counted by the caller but do not halve again: a whole window of them arrives at once.
    Sporadic throttling (see SPORADIC_SHARE) slows nothing.
    """

    __slots__ = (
        "_backoff_s",
        "_bucket_count",
        "_bucket_end",
        "_ceiling",
        "_config",
        "_configured",
        "_last_second",
        "_recover_at",
        "_second_end",
        "_sent",
        "_throttles",
        "_window",
        "paused_until",
        "slowed_at",
    )

    def __init__(self, tps: float | None, *, backoff_s: float) -> None:
        self._config = (tps, backoff_s)
        self._configured = None if tps is None else SlidingWindow.for_rate(tps, paced=True)
        self._window = self._configured
        self._ceiling = 0 if self._window is None else self._window.limit
        self._backoff_s = backoff_s
        self.paused_until = -math.inf
        self.slowed_at = -math.inf  # when the current slow-down began
        self._recover_at = math.inf
        # Sends per second while uncapped, to know where to slow down from.
        self._bucket_end = -math.inf
        self._bucket_count = 0
        self._last_second = 0
        # Sends and throttling answers per second, the latest first (for the share).
        self._second_end = -math.inf
        self._sent: deque[int] = deque([0], maxlen=SPORADIC_SPAN_S)
        self._throttles: deque[int] = deque([0], maxlen=SPORADIC_SPAN_S)

    def continued_from(self, previous: AdaptiveRate) -> AdaptiveRate:
        """The rate a bind goes on with after a reload restarted it, `previous` its rate before:
        that one itself when configured alike (a slow-down the SMSC asked for goes on); else
        this one, counting what `previous` sent in the last span and its pause, if any."""
        if previous._config == self._config:
            return previous
        self.paused_until = previous.paused_until
        if self._window is not None and previous._window is not None:
            self._window.inherit(previous._window)
        return self

    def _roll(self, now: float) -> None:
        if now < self._second_end:
            return
        elapsed = now - self._second_end  # seconds that began since the current one ended
        gone = SPORADIC_SPAN_S if elapsed >= SPORADIC_SPAN_S else int(elapsed) + 1
        for _ in range(gone):
            self._sent.appendleft(0)
            self._throttles.appendleft(0)
        self._second_end = now + 1.0

    @property
    def limit(self) -> int | None:
        """Sends allowed per period now (None: uncapped)."""
        return None if self._window is None else self._window.limit

    @property
    def period_s(self) -> float:
        return 1.0 if self._window is None else self._window.period_s

    def allows(self, now: float) -> bool:
        if now < self.paused_until:
            return False
        if now >= self._recover_at:
            self._recover(now)
        window = self._window
        return window is None or window.allows(now)

    def record(self, now: float) -> None:
        self._roll(now)
        self._sent[0] += 1
        window = self._window
        if window is not None:
            window.record(now)
        else:
            if now >= self._bucket_end:
                fresh = now - self._bucket_end >= 1.0
                self._last_second = 0 if fresh else self._bucket_count
                self._bucket_count = 0
                self._bucket_end = now + 1.0
            self._bucket_count += 1

    def ready_at(self, now: float) -> float:
        at = max(now, self.paused_until)
        window = self._window
        return at if window is None else max(at, window.ready_at(at))

    def throttled(self, *, now: float, sent_at: float) -> bool:
        """A throttling answer arrived for a send made at `sent_at`; True if it slowed us down."""
        if sent_at < self.slowed_at:  # sent at the old rate: its answer is no news
            return False
        self._roll(now)
        self._throttles[0] += 1
        throttles = sum(self._throttles)
        if throttles < SPORADIC_MIN_THROTTLES or throttles < SPORADIC_SHARE * sum(self._sent):
            return False
        window = self._window
        if window is None:
            rate = max(self._bucket_count, self._last_second, 2)
            window = SlidingWindow(rate, period_s=ARRIVAL_MARGIN, capacity=rate, paced=True)
            self._window = window
            self._ceiling = rate
        window.set_limit(window.limit // 2)
        # The share is judged again on what the new rate draws: the burst that slowed it
        # down, still in the span, would make one sporadic answer halve it again.
        self._sent = deque([0], maxlen=SPORADIC_SPAN_S)
        self._throttles = deque([0], maxlen=SPORADIC_SPAN_S)
        self.slowed_at = now
        self.paused_until = now + self._backoff_s
        self._recover_at = self.paused_until + self._backoff_s
        return True

    def _recover(self, now: float) -> None:
        window = self._window
        if window is None:
            self._recover_at = math.inf
            return
        window.set_limit(window.limit + max(1, self._ceiling // 10))
        if window.limit < self._ceiling:
            self._recover_at = now + self._backoff_s
            return
        self._recover_at = math.inf
        if self._configured is None:
            self._window = None  # back to uncapped
            self._bucket_end = -math.inf


class SenderRates:
    """Each capped sender's one window, whatever carriers its messages go to (a sender's
    `tps` caps it, not each carrier's share of it): the send loops of every carrier share one
    of these, and a reload changes it in place. `next_slot` is when (monotonic) the next
    message deferred for a sender's rate comes due, so that deferrals return spaced out: one
    line for its urgent work and one for the rest, by (sender, urgent), so that an OTP is not
    lined up behind a campaign, nor OTPs deferred together all back at once."""

    def __init__(self, tps: Mapping[str, float] | None = None) -> None:
        self.windows: dict[str, SlidingWindow] = {}
        self.next_slot: dict[tuple[str, bool], float] = {}
        self._tps: dict[str, float] = {}
        self.set_tps(tps or {})

    def set_tps(self, tps: Mapping[str, float]) -> list[str]:
        """New rates (a reload): an unchanged rate keeps its window, a changed one counts what
        the old window did and lines its deferrals up anew. The senders that may go faster
        now (raised or lifted), whose deferred work is lined up at the old rate."""
        faster = [s for s, rate in self._tps.items() if tps.get(s, math.inf) > rate]
        for sender in set(self._tps) | set(tps):
            if self._tps.get(sender) != tps.get(sender):
                self.next_slot.pop((sender, False), None)
                self.next_slot.pop((sender, True), None)
        windows = {}
        for sender, rate in tps.items():
            old = self.windows.get(sender)
            if old is not None and self._tps[sender] == rate:
                windows[sender] = old
                continue
            windows[sender] = window = SlidingWindow.for_rate(rate)
            if old is not None:
                window.inherit(old)
        self.windows = windows
        self._tps = dict(tps)
        return faster
