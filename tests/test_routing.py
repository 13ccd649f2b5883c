"""Routing: longest prefix, failover after a carrier has been down long enough."""

from __future__ import annotations

import functools

from smppd.config import Route
from smppd.daemon import failover_pick, may_fail_over
from smppd.outbound import OutboundProfile
from smppd.pdu.segment import ConcatMethod
from smppd.routing import Router, RouteRule

RULES = [
    RouteRule("", ("default",), 30.0),
    RouteRule("44", ("uk-a", "uk-b"), 30.0),
    RouteRule("447", ("uk-mobile",), 30.0),
]


def test_longest_prefix_wins() -> None:
    """+4479... goes to the mobile route, +4420... to the UK route, others to the default."""
    router = Router(RULES)
    assert router.pick("+447911123456", lambda c: None, now=0) == "uk-mobile"
    assert router.pick("+442071234567", lambda c: None, now=0) == "uk-a"
    assert router.pick("+12025550123", lambda c: None, now=0) == "default"


def test_failover_after_configured_downtime() -> None:
    """A carrier down under failover_after_s keeps its traffic; past it, the next one takes it."""
    router = Router(RULES)
    down = {"uk-a": 100.0}
    assert router.pick("+442071234567", down.get, now=120.0) == "uk-a"
    assert router.pick("+442071234567", down.get, now=131.0) == "uk-b"


def test_all_down_uses_the_first() -> None:
    """With every carrier down the first is used, so the message waits in the queue."""
    router = Router(RULES)
    down = {"uk-a": 0.0, "uk-b": 0.0}
    assert router.pick("+442071234567", down.get, now=1000.0) == "uk-a"


def test_no_route() -> None:
    """Without a default route an unmatched destination has no carrier."""
    router = Router([RouteRule("44", ("uk",), 1.0)])
    assert router.pick("+12025550123", lambda c: None, now=0) is None


def test_waiting_work_fails_over_only_to_a_carrier_up_that_encodes_alike() -> None:
    """Queued work of a carrier down past failover_after_s goes to the next carrier on the route
    if that one is up and has the same outbound profile; otherwise it stays."""
    router = Router([RouteRule("44", ("uk-a", "uk-b"), 30.0)])
    same = {"uk-a": OutboundProfile(), "uk-b": OutboundProfile()}
    pick = functools.partial(failover_pick, router, carrier="uk-a", destination="+442071234567")
    assert pick(down={"uk-a": 100.0, "uk-b": None}, senders=same, now=131.0) == "uk-b"
    # Not down long enough; the other one down too; a number no route matches.
    assert pick(down={"uk-a": 100.0, "uk-b": None}, senders=same, now=120.0) is None
    assert pick(down={"uk-a": 100.0, "uk-b": 125.0}, senders=same, now=131.0) is None
    assert (
        failover_pick(
            router,
            {"uk-a": 100.0},
            same,
            "uk-a",
            "+12025550123",
            now=131.0,
        )
        is None
    )
    # Bodies encoded for uk-a would be wrong on uk-b: another concatenation method.
    other = {**same, "uk-b": OutboundProfile(concatenation=ConcatMethod.SAR)}
    assert pick(down={"uk-a": 100.0, "uk-b": None}, senders=other, now=131.0) is None


def test_failover_passes_over_a_carrier_that_encodes_otherwise_for_the_next_that_does() -> None:
    """Route a, b, c with a down: b is up but encodes otherwise, c is up and alike. a's work
    goes to c; it stayed on a for the whole outage while the sweep reread it every tick."""
    router = Router([RouteRule("", ("a", "b", "c"), 30.0)])
    senders = {
        "a": OutboundProfile(),
        "b": OutboundProfile(concatenation=ConcatMethod.SAR),
        "c": OutboundProfile(),
    }
    up = {"a": 100.0, "b": None, "c": None}
    pick = functools.partial(failover_pick, router, senders=senders, destination="+15550001")
    assert pick(down=up, carrier="a", now=131.0) == "c"
    assert pick(down={**up, "c": 120.0}, carrier="a", now=131.0) is None  # c down too
    # Back on the route's first carrier once it is up again, when c goes down in its turn.
    assert pick(down={"a": None, "b": None, "c": 100.0}, carrier="c", now=131.0) == "a"


def test_no_sweep_while_nothing_could_move() -> None:
    """A carrier's backlog is swept only when some route of it has been past failover_after_s
    and names another carrier up with the same profile: an outage of a carrier with nowhere
    to go costs no rereading of its backlog every tick."""
    routes = [Route(prefix="44", carriers=("uk-a", "uk-b"), failover_after_s=30.0)]
    same = {"uk-a": OutboundProfile(), "uk-b": OutboundProfile()}
    check = functools.partial(may_fail_over, routes, carrier="uk-a")
    assert check(down={"uk-a": 100.0, "uk-b": None}, senders=same, now=131.0)
    assert not check(down={"uk-a": None, "uk-b": None}, senders=same, now=131.0)
    assert not check(down={"uk-a": 100.0, "uk-b": None}, senders=same, now=120.0)
    assert not check(down={"uk-a": 100.0, "uk-b": 90.0}, senders=same, now=131.0)
    sar = {**same, "uk-b": OutboundProfile(concatenation=ConcatMethod.SAR)}
    assert not check(down={"uk-a": 100.0, "uk-b": None}, senders=sar, now=131.0)
    alone = [Route(prefix="", carriers=("uk-a",), failover_after_s=30.0)]
    assert not may_fail_over(alone, {"uk-a": 100.0}, same, "uk-a", now=131.0)
