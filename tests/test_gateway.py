"""The gateway's hand-off to the send loops: which wake each accepted submit asks for."""

from __future__ import annotations

from typing import Any

from smppd.events import EventHub
from smppd.gateway import Gateway, GatewaySettings
from smppd.outbound import OutboundProfile
from smppd.queue.memory import MemoryQueue
from smppd.routing import Router, RouteRule
from smppd.service import ClientIdentity, SubmitRequest

T0 = 1_800_000_000.0
CLIENT = ClientIdentity(name="app", senders=frozenset({"ALPHA"}))


def gateway(queue: MemoryQueue, wakes: list[tuple[str, float | None]]) -> Gateway:
    def health() -> dict[str, Any]:
        return {}

    return Gateway(
        queue=queue,
        router=Router([RouteRule(prefix="", carriers=("fake",), failover_after_s=60.0)]),
        profiles={"fake": OutboundProfile()},
        hub=EventHub(),
        settings=GatewaySettings(max_depth=1000),
        down_since=lambda carrier: None,
        wake=lambda carrier, urgent_at: wakes.append((carrier, urgent_at)),
        health=health,
        clock=lambda: T0,
    )


def request(text: str, *, priority: int = 5, schedule_at: float | None = None) -> SubmitRequest:
    return SubmitRequest(
        to="+447700900123", sender="ALPHA", text=text, priority=priority, schedule_at=schedule_at
    )


async def test_bulk_and_normal_submits_wake_the_main_loop_once_per_batch() -> None:
    wakes: list[tuple[str, float | None]] = []
    replies = await gateway(MemoryQueue(), wakes).submit(
        CLIENT, [request("a", priority=0), request("b"), request("c", schedule_at=T0 + 60)]
    )
    assert len(replies) == 3
    assert wakes == [("fake", None)]


async def test_urgent_submits_ask_for_the_urgent_claimer_when_each_is_due() -> None:
    """An urgent message due now wakes the urgent claimer now; a scheduled one asks for its
    time, so it is not left to the main loop's bulk batches when it comes due."""
    wakes: list[tuple[str, float | None]] = []
    await gateway(MemoryQueue(), wakes).submit(
        CLIENT,
        [
            request("otp", priority=9),
            request("later", priority=9, schedule_at=T0 + 30),
            request("again", priority=9),
            request("past", priority=9, schedule_at=T0 - 5),
            request("bulk", priority=0),
        ],
    )
    assert wakes == [("fake", T0), ("fake", T0 + 30)]


async def test_an_auto_reply_is_urgent() -> None:
    wakes: list[tuple[str, float | None]] = []
    await gateway(MemoryQueue(), wakes).submit_reply("app", "ALPHA", "+447700900123", "stopped")
    assert wakes == [("fake", T0)]
