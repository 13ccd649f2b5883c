"""Routes: which carrier a destination goes to, with failover when a carrier has been down.

The longest matching prefix wins ("" matches everything). Within a route, the first carrier that
is up, or has been down for less than the route's failover_after_s, takes the message; when all
are down the first is used anyway, so the message waits in the queue for it rather than failing.
Work already queued for a carrier that goes down follows the same choice (see
smppd.daemon.failover_pick). Pure: carrier health and time come in as arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RouteRule:
    prefix: str  # digits, no "+"
    carriers: tuple[str, ...]
    failover_after_s: float


class Router:
    def __init__(self, rules: Sequence[RouteRule]) -> None:
        self._rules = sorted(rules, key=lambda r: len(r.prefix), reverse=True)

    def rule_for(self, destination: str) -> RouteRule | None:
        digits = destination.lstrip("+")
        for rule in self._rules:
            if digits.startswith(rule.prefix):
                return rule
        return None

    def pick(
        self, destination: str, down_since: Callable[[str], float | None], *, now: float
    ) -> str | None:
        """The carrier for `destination`, or None when no route matches.

        `down_since(carrier)` is when the carrier last had no bind up (None while one is up).
        """
        rule = self.rule_for(destination)
        if rule is None:
            return None
        for carrier in rule.carriers:
            since = down_since(carrier)
            if since is None or now - since < rule.failover_after_s:
                return carrier
        return rule.carriers[0]
