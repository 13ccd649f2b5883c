"""The API client against a real server with the stand-in service: results and error mapping."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from api_fakes import (
    DEMO,
    WAIT_S,
    FakeService,
    FakeSubscription,
    own_uid,
    running_server,
    short_tmpdir,
)

from smppd.api import ApiServer, ClientTable
from smppd.client import (
    ApiClientError,
    ApiConnectionError,
    ApiTimeoutError,
    Client,
    Submitted,
    SyncClient,
    submit_sync,
)
from smppd.service import Event

TO = "+447700900123"


async def test_submit_returns_the_durable_id_and_segments() -> None:
    """submit() sends the fields (sender as `from`) and returns a Submitted."""
    service = FakeService()
    async with running_server(service) as server, Client(server.settings.socket) as client:
        sent = await client.submit(to=TO, sender="ACME", text="hi", priority="urgent", ref="r")
        again = await client.submit(to=TO, sender="ACME", text="hi", ref="r")
    assert sent == Submitted(message_id=1, segments=1, created=True)
    assert again == Submitted(message_id=1, segments=1, created=False)
    request = service.calls[0][1][1][0]
    assert (request.sender, request.priority, request.ref) == ("ACME", 9, "r")


async def test_submit_many_returns_results_and_errors_in_order() -> None:
    """Each message's outcome comes back in place: Submitted or ApiClientError."""
    async with running_server() as server, Client(server.settings.socket) as client:
        results = await client.submit_many(
            [
                {"to": TO, "sender": "ACME", "text": "a"},
                {"to": "0770", "from": "ACME", "text": "b"},
                {"to": TO, "sender": "ACME", "text": "c", "priority": 99},
            ]
        )
    assert results[0] == Submitted(1, 1, True)
    assert isinstance(results[1], ApiClientError)
    assert (results[1].code, results[1].field) == ("invalid_address", "to")
    assert isinstance(results[2], ApiClientError)
    assert (results[2].code, results[2].field) == ("invalid_field", "priority")


async def test_other_ops_return_the_result_without_ok_and_id() -> None:
    """status, cancel, health, stats and optout return the reply's result fields."""
    async with running_server() as server, Client(server.settings.socket) as client:
        sent = await client.submit(to=TO, sender="ACME", text="hi")
        assert await client.status(sent.message_id) == {
            "message_id": 1,
            "state": "queued",
            "created_at": 1764877501.25,
            "segments": [{"index": 0, "done_at": None}],
        }
        assert (await client.cancel(sent.message_id))["state"] == "cancelled"
        assert await client.health() == {"status": "ok", "binds_up": 2}
        assert await client.stats() == {"queued": 1}
        assert await client.optout("add", "ACME", TO) == {"numbers": [TO]}
        assert await client.optout("list", "ACME") == {"numbers": [TO]}


async def test_error_replies_raise_with_code_message_and_field() -> None:
    """An error reply becomes ApiClientError carrying the server's code and field."""
    async with running_server() as server, Client(server.settings.socket) as client:
        with pytest.raises(ApiClientError) as missing:
            await client.status(42)
        assert (missing.value.code, missing.value.message) == ("not_found", "no message 42")
        with pytest.raises(ApiClientError) as bad:
            await client.submit(to=TO, sender="ACME", text="x", validity_s=-5)
        assert (bad.value.code, bad.value.field) == ("invalid_field", "validity_s")
        assert str(bad.value).startswith("invalid_field: validity_s must be")
        # The connection is still fine after errors.
        assert (await client.health())["status"] == "ok"


async def test_a_line_too_long_fails_only_its_own_request() -> None:
    """The server answers an over-long line with an id-less `line_too_long` and keeps the
    connection: the client fails that request alone, and the others pipelined with it succeed."""
    service = FakeService(gates={"held": asyncio.Event()})
    async with (
        running_server(service, max_line_bytes=2048) as server,
        Client(server.settings.socket) as client,
    ):
        held = asyncio.ensure_future(client.submit(to=TO, sender="ACME", text="a", ref="held"))
        async with asyncio.timeout(WAIT_S):
            await service.submit_entered.wait()
        long = asyncio.ensure_future(client.submit(to=TO, sender="ACME", text="x" * 4000))
        after = asyncio.ensure_future(client.submit(to=TO, sender="ACME", text="b"))
        with pytest.raises(ApiClientError) as too_long:
            await asyncio.wait_for(long, WAIT_S)
        assert too_long.value.code == "line_too_long"
        assert (await asyncio.wait_for(after, WAIT_S)).created
        service.gates["held"].set()
        assert (await asyncio.wait_for(held, WAIT_S)).created
        assert (await client.health())["status"] == "ok"


async def test_a_value_json_cannot_carry_is_refused_before_sending() -> None:
    """NaN is not JSON: the client refuses it itself rather than writing a line the server
    can only answer without an id."""
    async with running_server() as server, Client(server.settings.socket) as client:
        with pytest.raises(ApiClientError) as nan:
            await client.submit(to=TO, sender="ACME", text="x", validity_s=float("nan"))
        assert nan.value.code == "invalid_request"
        assert (await client.submit(to=TO, sender="ACME", text="x")).message_id == 1


async def test_concurrent_requests_are_pipelined_within_the_client_window() -> None:
    """Many concurrent submits on one connection all succeed; the window keeps them under the
    server's pending cap."""
    async with (
        running_server(max_pending_per_connection=8) as server,
        Client(server.settings.socket, max_in_flight=8) as client,
    ):
        sent = await asyncio.gather(
            *(client.submit(to=TO, sender="ACME", text=str(i)) for i in range(200))
        )
    assert sorted(s.message_id for s in sent) == list(range(1, 201))


async def test_subscribe_yields_events_until_the_connection_ends() -> None:
    """subscribe() acknowledges, yields event dicts, and ends with the connection."""
    service = FakeService(subscription_size=2)
    async with running_server(service) as server, Client(server.settings.socket) as client:
        events = client.subscribe(["receipt"])
        first = asyncio.ensure_future(anext(events))
        subscription = await service.subscribed()
        assert subscription.kinds == {"receipt"}
        subscription.publish(Event("receipt", "demo", {"message_id": 1, "stat": "DELIVRD"}))
        async with asyncio.timeout(WAIT_S):
            assert await first == {"event": "receipt", "message_id": 1, "stat": "DELIVRD"}
        for n in range(3):  # one over the bound: the service drops the subscriber
            subscription.publish(Event("receipt", "demo", {"n": n}))
        async with asyncio.timeout(WAIT_S):
            rest = [event async for event in events]
    assert rest[-1]["event"] == "dropped"
    assert [e.get("n") for e in rest[:-1]] == [0, 1]


async def test_leaving_a_subscription_loop_leaves_the_connection_usable() -> None:
    """A caller that breaks out of subscribe(): the events that follow (more than the
    client buffers) are dropped, not left to stall the reading of every reply after them."""
    service = FakeService(subscription_size=5000)
    async with running_server(service) as server, Client(server.settings.socket) as client:
        events = client.subscribe(["receipt"])
        first = asyncio.ensure_future(anext(events))
        subscription = await service.subscribed()
        subscription.publish(Event("receipt", "demo", {"n": -1}))
        async with asyncio.timeout(WAIT_S):
            assert (await first)["n"] == -1
        await events.aclose()
        for n in range(3000):
            subscription.publish(Event("receipt", "demo", {"n": n}))
        async with asyncio.timeout(WAIT_S):
            assert (await client.health())["status"] == "ok"


async def first_event(
    client: Client, service: FakeService, kind: str = "state"
) -> tuple[AsyncGenerator[dict[str, Any], None], FakeSubscription]:
    """A subscribe() loop to `kind` events that has had its first, and the daemon's side."""
    events = client.subscribe([kind])
    first = asyncio.ensure_future(anext(events))
    subscription = await service.subscribed()
    subscription.publish(Event(kind, "demo", {"n": 1}))
    async with asyncio.timeout(WAIT_S):
        assert (await first)["n"] == 1
    return events, subscription


async def test_a_second_subscribe_while_one_runs_is_refused_and_the_first_goes_on() -> None:
    """One loop at a time takes a connection's events: a second subscribe() raises
    invalid_request before it touches anything, and the first loop keeps getting events (it
    used to lose every one after the refusal, waiting for ever)."""
    service = FakeService()
    async with running_server(service) as server, Client(server.settings.socket) as client:
        events, subscription = await first_event(client, service)
        with pytest.raises(ApiClientError) as info:
            await anext(client.subscribe(["receipt"]))
        assert info.value.code == "invalid_request"
        subscription.publish(Event("state", "demo", {"n": 2}))
        async with asyncio.timeout(WAIT_S):
            assert (await anext(events))["n"] == 2
        assert len(service.subscriptions) == 1


async def test_a_loop_that_ended_can_be_followed_by_another_on_the_same_subscription() -> None:
    """After a loop is closed, subscribe() to the same kinds goes on with the daemon's
    subscription (the daemon refuses a second one); other kinds are refused, clearly."""
    service = FakeService()
    async with running_server(service) as server, Client(server.settings.socket) as client:
        events, subscription = await first_event(client, service)
        await events.aclose()
        with pytest.raises(ApiClientError, match="subscribed to state events"):
            await anext(client.subscribe(["receipt"]))
        again = client.subscribe(["state"])
        nxt = asyncio.ensure_future(anext(again))
        subscription.publish(Event("state", "demo", {"n": 2}))
        async with asyncio.timeout(WAIT_S):
            assert (await nxt)["n"] == 2
        await again.aclose()
        assert len(service.subscriptions) == 1


async def test_subscribing_again_after_the_daemon_dropped_the_subscriber_raises() -> None:
    """The daemon drops a subscriber that fell behind and closes the connection: subscribe()
    on that client again raises ApiConnectionError (a supervisor loop reconnects), rather than
    ending at once with nothing, for ever."""
    service = FakeService(subscription_size=2)
    async with running_server(service) as server, Client(server.settings.socket) as client:
        events, subscription = await first_event(client, service, "receipt")
        for n in range(3):  # past the bound: dropped, the connection closed
            subscription.publish(Event("receipt", "demo", {"n": n}))
        async with asyncio.timeout(WAIT_S):
            rest = [event async for event in events]
        assert rest[-1]["event"] == "dropped"
        with pytest.raises(ApiConnectionError):
            await anext(client.subscribe(["receipt"]))


async def test_a_subscription_keeps_its_events_from_the_ack_while_the_backlog_is_read() -> None:
    """subscribe() asked the daemon only when its loop first waited, and dropped events until
    then: an MO between a catch-up read and the loop was in neither. subscription() returns
    once the daemon has it, and keeps the events from then on for its stream."""
    service = FakeService()
    async with running_server(service) as server, Client(server.settings.socket) as client:
        async with await client.subscription(["inbound"]) as stream:
            (subscription,) = service.subscriptions  # made before it returned
            subscription.publish(Event("inbound", "demo", {"id": 2}))
            assert len(await client.inbound(0)) == 1  # the catch-up, meanwhile
            subscription.publish(Event("inbound", "demo", {"id": 3}))
            async with asyncio.timeout(WAIT_S):
                assert [(await anext(stream))["id"] for _ in range(2)] == [2, 3]
            with pytest.raises(ApiClientError, match="loop runs on this connection"):
                await client.subscription(["inbound"])
        async with asyncio.timeout(WAIT_S):  # closed: its events are dropped, replies read
            subscription.publish(Event("inbound", "demo", {"id": 4}))
            assert (await client.health())["status"] == "ok"


async def test_connect_again_after_the_daemon_went_away_starts_afresh() -> None:
    """connect() after a lost connection kept the old failure: every request raised "the
    daemon closed the connection" against a daemon that was back. A new connection starts
    clean (its old subscription's stream has ended); connect() on a live one does nothing,
    and two at once (two tasks that lost the connection) make one connection, not a client
    failed while connected and a connection nobody holds."""
    service = FakeService()
    async with running_server(service) as server, Client(server.settings.socket) as client:
        stream = await client.subscription(["receipt"])
        await client.connect()
        assert server.connections == 1
        await server.close()
        async with asyncio.timeout(WAIT_S):
            assert [event async for event in stream] == []
            with pytest.raises(ApiConnectionError):
                await client.health()
        again = ApiServer(server.settings, ClientTable(any_uid=DEMO), service)
        await again.start()
        try:
            await asyncio.gather(client.connect(), client.connect())
            async with asyncio.timeout(WAIT_S):
                assert (await client.health())["status"] == "ok"
                assert again.connections == 1
                fresh = await client.subscription(["state"])  # not "subscribed to receipt"
                service.subscriptions[-1].publish(Event("state", "demo", {"n": 1}))
                assert (await anext(fresh))["n"] == 1
                await fresh.aclose()
        finally:
            await client.close()
            await again.close()


async def test_a_close_during_a_connect_leaves_nothing_open() -> None:
    """close() while connect() waited for the socket found nothing to close, and the
    connection came up after it returned, its reader running."""
    async with running_server() as server:
        client = Client(server.settings.socket)
        connecting = asyncio.ensure_future(client.connect())
        await asyncio.sleep(0)  # one turn of the loop: the connect under way, not a wait for time
        await client.close()
        await connecting
        assert client._reading is not None
        assert client._reading.done()
        assert client._writer is not None
        assert client._writer.is_closing()
        with pytest.raises(ApiConnectionError, match="closed"):
            await client.health()


async def test_a_request_made_inside_a_subscription_loop_gets_its_reply() -> None:
    """An auto-responder answers each event with a request on the same client: with more
    events buffered than the client holds, the reader paused for the loop, and the reply
    behind them was never read (ApiTimeoutError, though the daemon answered at once): a
    waiting request resumes reading."""
    service = FakeService(subscription_size=5000)
    async with (
        running_server(service) as server,
        Client(server.settings.socket, timeout_s=WAIT_S) as client,
    ):
        events = client.subscribe(["receipt"])
        first = asyncio.ensure_future(anext(events))
        subscription = await service.subscribed()
        for n in range(1500):
            subscription.publish(Event("receipt", "demo", {"n": n}))
        async with asyncio.timeout(WAIT_S):
            seen = [(await first)["n"]]
            async for event in events:
                seen.append(event["n"])
                if len(seen) % 100 == 0:
                    assert (await client.health())["status"] == "ok"
                if len(seen) == 1500:
                    break
    assert seen == list(range(1500))


async def test_a_subscription_that_falls_far_behind_while_a_reply_is_awaited_is_dropped() -> None:
    """While a request awaits its reply the reader reads past the buffer's mark; at 10,000
    events unread it ends the subscription with a last `dropped`, as the daemon does, rather
    than hold every event in memory; the reply behind them is still read."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            request = json.loads(line)
            if request["op"] == "health":  # 12,000 events come first, then its reply
                for n in range(12_000):
                    writer.write(json.dumps({"event": "receipt", "n": n}).encode() + b"\n")
                await writer.drain()
            writer.write(json.dumps({"ok": True, "id": request["id"]}).encode() + b"\n")
        writer.close()

    with short_tmpdir() as directory:
        path = directory / "api.sock"
        server = await asyncio.start_unix_server(serve, path)
        async with server, Client(path, timeout_s=WAIT_S) as client:
            events = client.subscribe(["receipt"])
            first = asyncio.ensure_future(anext(events))
            async with asyncio.timeout(WAIT_S):
                await client.health()  # read past the mark, the subscribe loop waiting
                rest = [await first] + [event async for event in events]
    assert rest[-1]["event"] == "dropped"
    assert [e["n"] for e in rest[:-1]] == list(range(len(rest) - 1))
    assert len(rest) - 1 == 10_000


async def test_no_daemon_is_a_connection_error_naming_the_socket() -> None:
    """A missing socket and a socket nobody serves both say the daemon may not be running."""
    with short_tmpdir() as directory:
        missing = directory / "none.sock"
        with pytest.raises(ApiConnectionError, match="is the daemon running") as absent:
            await Client(missing).connect()
        assert str(missing) in absent.value.message
        assert absent.value.code == "unavailable"
        stale = directory / "stale.sock"
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(str(stale))
        dead.close()
        with pytest.raises(ApiConnectionError, match="refused"):
            await Client(stale).connect()


async def test_unauthorized_is_raised_on_the_first_request() -> None:
    """The server's refusal at connect time surfaces as the request's error."""
    clients = ClientTable(by_uid={own_uid() + 1: DEMO})
    async with running_server(clients=clients) as server, Client(server.settings.socket) as client:
        with pytest.raises(ApiClientError) as refused:
            await client.health()
        assert refused.value.code == "unauthorized"
        with pytest.raises(ApiClientError, match="unauthorized"):
            await client.stats()


async def test_reply_timeout_and_lost_connection_are_connection_errors() -> None:
    """No reply in time, or the daemon going away mid-request, raise ApiConnectionError; the
    first as ApiTimeoutError (code timeout): the request went out and may have been done."""
    service = FakeService(gates={"slow": asyncio.Event()})
    async with running_server(service, close_timeout_s=0.1) as server:
        async with Client(server.settings.socket, timeout_s=0.2) as client:
            with pytest.raises(ApiTimeoutError, match="no reply to submit") as late:
                await client.submit(to=TO, sender="ACME", text="x", ref="slow")
            assert late.value.code == "timeout"
        service.submit_entered.clear()
        async with Client(server.settings.socket) as client:
            held = asyncio.ensure_future(client.submit(to=TO, sender="ACME", text="x", ref="slow"))
            async with asyncio.timeout(WAIT_S):
                await service.submit_entered.wait()
            await server.close()  # gives up on the held request after close_timeout_s
            with pytest.raises(ApiConnectionError, match="closed the connection"):
                await held
        service.gates["slow"].set()


async def test_sync_client_and_submit_sync_work_from_a_thread_without_a_loop() -> None:
    """The synchronous wrappers run their own loop; a script needs no asyncio."""
    async with running_server() as server:
        path = server.settings.socket

        def script() -> tuple[Submitted, dict[str, object], Submitted]:
            with SyncClient(path) as client:
                sent = client.submit(to=TO, sender="ACME", text="hello")
                status = client.status(sent.message_id)
            return sent, status, submit_sync(path, to=TO, sender="ACME", text="again")

        sent, status, again = await asyncio.to_thread(script)
    assert sent.message_id == 1
    assert status["state"] == "queued"
    assert again.message_id == 2
