"""smppd end to end: the daemon as a subprocess, the fake SMSC in process, the real socket API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_support import Daemon, running, smsc_and_dir, unused_port, write_config

from smppd.client import UNAVAILABLE, ApiClientError, Client
from smppd.pdu.national import NationalLanguage
from smppd.pdu.status import CommandStatus
from smppd.queue import open_queue
from tools.fake_smsc import FakeSmsc, SmscConfig
from tools.fake_smsc.config import IdFormat, ReceiptConfig
from tools.fake_smsc.faults import Faults, Reorder

pytestmark = pytest.mark.timeout(90)

FALLBACK_WARNING = (
    "receipts give message ids written otherwise than the submit_sm_resp; "
    "they match after a wait: set message_id_format for this carrier"
)
FINAL_MESSAGE_STATES = frozenset(
    {"delivered", "undeliverable", "expired", "rejected", "failed", "cancelled"}
)


async def run_to_exit(config: str | Path) -> subprocess.CompletedProcess[str]:
    """`smppd run -c CONFIG` to its end (a start that fails), its output captured."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "smppd", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


class RawSubscriber:
    """A subscription read line by line, registered (acknowledged) before the test goes on."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, socket: Path, kinds: list[str]) -> RawSubscriber:
        reader, writer = await asyncio.open_unix_connection(str(socket))
        writer.write(json.dumps({"op": "subscribe", "id": 1, "events": kinds}).encode() + b"\n")
        await writer.drain()
        async with asyncio.timeout(5):
            ack = json.loads(await reader.readline())
        assert ack["ok"] is True, ack
        return cls(reader, writer)

    async def next(self, timeout: float = 10) -> dict[str, Any]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            line = await self.reader.readline()
        assert line, "subscription closed"
        event: dict[str, Any] = json.loads(line)
        return event

    def close(self) -> None:
        self.writer.close()


async def test_submit_reaches_smsc_and_receipt_reaches_subscriber() -> None:
    """A submit is acknowledged, seen at the SMSC, and its delivery receipt is an event."""
    async with running() as (smsc, _daemon, directory):
        socket = directory / "smppd.sock"
        sub = await RawSubscriber.open(socket, ["receipt"])
        async with Client(socket) as client:
            sent = await client.submit(to="+447700900123", sender="ALPHA", text="Your code is 4711")
            await smsc.records.wait_for(1, timeout=10)
            [message] = smsc.records.messages
            assert message.text == "Your code is 4711"
            assert message.destination == "447700900123"
            assert message.source == "ALPHA"
            event = await sub.next()
            assert event["event"] == "receipt"
            assert event["id"] == sent.message_id
            assert event["stat"] == "DELIVRD"
            status = await client.status(sent.message_id)
            assert status["state"] == "delivered"
        sub.close()


async def test_long_unicode_message_arrives_reassembled() -> None:
    """A 150-character Cyrillic text with emoji goes as UDH parts and rejoins at the SMSC."""
    text = "Привет, мир! 👋 Это длинное сообщение. " * 4
    async with running() as (smsc, _daemon, directory):
        async with Client(directory / "smppd.sock") as client:
            sent = await client.submit(to="+79161234567", sender="ALPHA", text=text)
            assert sent.segments == 3
        await smsc.records.wait_for(1, timeout=10)
        [message] = smsc.records.messages
        assert message.text == text
        assert message.parts == 3
        assert message.data_coding == 8


async def test_a_flash_message_reaches_the_smsc_as_class_0() -> None:
    """`flash: true` reaches the SMSC as data_coding 0x10 (0x18 for UCS-2), the text intact."""
    async with running() as (smsc, _daemon, directory):
        async with Client(directory / "smppd.sock") as client:
            await client.submit(to="+447700900123", sender="ALPHA", text="Code 4711", flash=True)
            await client.submit(to="+447700900123", sender="ALPHA", text="Код 4711", flash=True)
        await smsc.records.wait_for(2, timeout=10)
        got = sorted((m.data_coding, m.text) for m in smsc.records.messages)
        assert got == [(0x10, "Code 4711"), (0x18, "Код 4711")]


async def test_smart_encoding_sends_typographic_quotes_as_gsm() -> None:
    """A text with a curly apostrophe reaches the SMSC as GSM with a plain one when the
    submit asks for smart_encoding, and as UCS-2, exactly, when it does not."""
    text = "Don\u2019t forget: 9\u00a0am"
    async with running() as (smsc, _daemon, directory):
        async with Client(directory / "smppd.sock") as client:
            await client.submit(to="+447700900123", sender="ALPHA", text=text, smart_encoding=True)
            await client.submit(to="+447700900124", sender="ALPHA", text=text)
        await smsc.records.wait_for(2, timeout=10)
        got = sorted((m.data_coding, m.text) for m in smsc.records.messages)
        assert got == [(0, "Don't forget: 9 am"), (8, text)]


async def test_turkish_text_goes_in_the_turkish_tables() -> None:
    """A carrier with national_language turkish gets Turkish as GSM 7-bit septets in the
    Turkish tables, named in each part's UDH: two parts where UCS-2 would need four."""
    text = "Sayın müşterimiz, siparişiniz yola çıktı; teslimat yarın öğleden sonra. " * 3
    async with running(carrier={"national_language": "turkish"}) as (smsc, _daemon, directory):
        async with Client(directory / "smppd.sock") as client:
            sent = await client.submit(to="+905321234567", sender="ALPHA", text=text)
            assert sent.segments == 2
        await smsc.records.wait_for(1, timeout=10)
        [message] = smsc.records.messages
        assert (message.text, message.parts, message.data_coding) == (text, 2, 0)
        assert all(segment.esm_class & 0x40 for segment in smsc.records.segments)


async def test_a_turkish_mo_in_the_turkish_tables_reaches_its_owner_as_turkish() -> None:
    """A long MO written in the Turkish tables (as Turkish handsets send it) reaches the
    owning client's subscription as the text typed."""
    text = "Siparişim ne zaman gelir? Yarın öğleden sonra evde olacağım, teşekkürler. " * 2
    async with running() as (smsc, _daemon, directory):
        sub = await RawSubscriber.open(directory / "smppd.sock", ["inbound"])
        await smsc.inject_mo(
            source="+905321234567",
            destination="ALPHA",
            text=text,
            national=NationalLanguage.TURKISH,
        )
        event = await sub.next()
        sub.close()
    assert (event["text"], event["complete"]) == (text, True)


async def test_reply_reaches_only_the_owning_client() -> None:
    """An inbound reply to another client's sender id never reaches this client."""
    async with running() as (smsc, _daemon, directory):
        sub = await RawSubscriber.open(directory / "smppd.sock", ["inbound"])
        beta = await smsc.inject_mo(source="+447700900001", destination="BETA", text="for beta")
        await asyncio.wait_for(beta, 10)
        alpha = await smsc.inject_mo(source="+447700900002", destination="ALPHA", text="for me")
        await asyncio.wait_for(alpha, 10)
        event = await sub.next()
        assert event["event"] == "inbound"
        assert event["text"] == "for me"
        assert event["to"] == "ALPHA"
        assert event["from"] == "+447700900002"
        sub.close()


async def restart_carrier_by_reload(daemon: Daemon, directory: Path, **changes: Any) -> None:
    """Change the carrier's config, SIGHUP, and wait until the reload has restarted it."""
    config_path = directory / "smppd.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["carriers"][0].update(changes)
    config_path.write_text(yaml.safe_dump(config))
    daemon.signal(signal.SIGHUP)
    assert (await daemon.wait_log("configuration reloaded"))["carriers_restarted"] == ["fake"]


async def smppd_cli(*args: str) -> list[dict[str, Any]]:
    """`smppd ARGS` run to its end, successfully; its output's JSON lines."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "smppd", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


async def test_inbound_received_while_no_one_listened_is_read_back_as_events_said_it() -> None:
    """Two MOs (one a STOP) arrive with no subscriber, then one with: `smppd inbound` lists all
    three, oldest first, each as its event would say it, and `--after` pages on from an id."""
    async with running() as (smsc, daemon, directory):
        for text in ("while you were away", "STOP"):
            done = await smsc.inject_mo(source="+447700900009", destination="ALPHA", text=text)
            await asyncio.wait_for(done, 10)  # acknowledged: stored
        sub = await RawSubscriber.open(directory / "smppd.sock", ["inbound"])
        await smsc.inject_mo(source="+447700900009", destination="ALPHA", text="now live")
        live = await sub.next()
        sub.close()
        config = str(daemon.config)
        listed = await smppd_cli("inbound", "-c", config, "--epoch")
        assert [m["text"] for m in listed] == ["while you were away", "STOP", "now live"]
        assert [m["keyword"] for m in listed] == [None, "stop", None]
        assert listed[-1] == {k: v for k, v in live.items() if k != "event"}
        after = await smppd_cli("inbound", "-c", config, "--after", str(listed[0]["id"]))
        assert [m["id"] for m in after] == [m["id"] for m in listed[1:]]
        assert str(after[0]["received_at"]).endswith("Z")  # ISO 8601 UTC without --epoch
        async with Client(directory / "smppd.sock") as client:
            assert await client.inbound(listed[1]["id"], limit=1) == listed[2:]


async def test_outcomes_missed_while_away_are_read_back_in_the_order_they_finished() -> None:
    """Three messages delivered and one cancelled: `smppd finished` lists the four with their
    final states, in the order they finished, and a client pages through them with `next`
    until `more` is false."""
    async with running() as (_smsc, daemon, directory):
        socket = directory / "smppd.sock"
        sub = await RawSubscriber.open(socket, ["receipt"])
        async with Client(socket) as client:
            sent = [
                await client.submit(to=f"+44770090020{i}", sender="ALPHA", text="m", ref=f"r{i}")
                for i in range(3)
            ]
            later = await client.submit(
                to="+447700900209", sender="ALPHA", text="later", schedule_at=time.time() + 3600
            )
            assert {(await sub.next())["state"] for _ in sent} == {"delivered"}
            sub.close()
            by_ref = await client.status(ref="r1")  # the client's own key reads it back too
            assert (by_ref["message_id"], by_ref["state"]) == (sent[1].message_id, "delivered")
            await client.cancel(later.message_id)
            listed = await smppd_cli("finished", "-c", str(daemon.config), "--epoch")
            assert sorted((m["message_id"], m["state"]) for m in listed) == sorted(
                [(m.message_id, "delivered") for m in sent] + [(later.message_id, "cancelled")]
            )
            assert [m["finished_at"] for m in listed] == sorted(m["finished_at"] for m in listed)
            assert listed[-1]["message_id"] == later.message_id
            assert {m["ref"] for m in listed} == {"r0", "r1", "r2", None}
            paged: list[dict[str, Any]] = []
            after = None
            for _ in range(10):
                page = await client.finished(after, limit=1)
                paged.extend(page["messages"])
                after = page["next"]
                if not page["more"]:
                    break
            assert paged == listed


async def test_an_mo_the_smsc_delivers_again_is_stored_and_told_once() -> None:
    """inbound_dedup_s 120: the SMSC delivers an MO twice (as after a lost deliver_sm_resp),
    then another: both deliveries are acknowledged, the subscriber hears of two messages, the
    store holds two and the metrics count the redelivery."""
    async with running(carrier={"inbound_dedup_s": 120}) as (smsc, daemon, directory):
        sub = await RawSubscriber.open(directory / "smppd.sock", ["inbound"])
        for text in ("YES", "YES", "and a question"):
            done = await smsc.inject_mo(source="+447700900009", destination="ALPHA", text=text)
            await asyncio.wait_for(done, 10)  # acknowledged ESME_ROK
        assert [(await sub.next())["text"] for _ in range(2)] == ["YES", "and a question"]
        sub.close()
        listed = await smppd_cli("inbound", "-c", str(daemon.config), "--epoch")
        assert [m["text"] for m in listed] == ["YES", "and a question"]
        metrics = await daemon.scrape_metrics()
        assert 'smppd_inbound_redelivered_total{carrier="fake"} 1.0' in metrics
        assert 'smppd_inbound_total{carrier="fake"} 2.0' in metrics


async def test_stop_opts_out_and_start_opts_back_in() -> None:
    """After STOP from a number to a sender, submits to it are refused until START."""
    async with running() as (smsc, _daemon, directory):
        socket = directory / "smppd.sock"
        sub = await RawSubscriber.open(socket, ["inbound"])
        async with Client(socket) as client:
            await client.submit(to="+447700900005", sender="12345", text="hello")
            # Sent before the STOP: a STOP cancels what is still queued to the number.
            await smsc.records.wait_for(1, timeout=10)
            await smsc.inject_mo(source="+447700900005", destination="12345", text=" stop ")
            assert (await sub.next())["keyword"] == "stop"
            with pytest.raises(ApiClientError) as info:
                await client.submit(to="+447700900005", sender="12345", text="again")
            assert info.value.code == "opted_out"
            # Another sender of the same client is not affected with scope "sender".
            await client.submit(to="+447700900005", sender="ALPHA", text="other sender")
            await smsc.inject_mo(source="+447700900005", destination="12345", text="Start")
            assert (await sub.next())["keyword"] == "start"
            await client.submit(to="+447700900005", sender="12345", text="welcome back")
        await smsc.records.wait_for(3, timeout=10)
        texts = smsc.records.texts_to("447700900005")
        assert "again" not in texts
        assert {"hello", "other sender", "welcome back"} <= set(texts)
        sub.close()


async def test_metrics_show_the_traffic() -> None:
    """A scrape after one submit shows the bind, the submit and the API request."""
    async with running() as (_smsc, daemon, directory):
        sub = await RawSubscriber.open(directory / "smppd.sock", ["receipt"])
        async with Client(directory / "smppd.sock") as client:
            await client.submit(to="+447700900123", sender="ALPHA", text="metrics")
        # The receipt event comes after the submit_sm_resp was counted and recorded.
        assert (await sub.next())["stat"] == "DELIVRD"
        sub.close()
        text = await daemon.scrape_metrics()
        assert 'smppd_binds_up{carrier="fake"} 2.0' in text
        assert 'smppd_submits_total{carrier="fake",status="ESME_ROK"} 1.0' in text
        assert 'smppd_throttling_answers_total{carrier="fake"} 0.0' in text
        assert 'smppd_api_requests_total{op="submit",result="ok"} 1.0' in text
        commits = re.search(r"^smppd_queue_commits_total (\S+)$", text, re.MULTILINE)
        assert commits is not None
        assert float(commits[1]) >= 3  # the enqueue, the claim and the outcome at least
        timed = re.search(r"^smppd_queue_commit_seconds_count (\S+)$", text, re.MULTILINE)
        assert timed is not None
        assert float(timed[1]) >= 3  # each of those commits is timed as well
        assert 'smppd_outcome_commit_seconds_count{carrier="fake"} 1.0' in text
        # The fake SMSC sends its receipt at once: delivered within the first bucket.
        assert 'smppd_delivery_seconds_bucket{carrier="fake",le="1.0"} 1.0' in text
        assert 'smppd_delivery_seconds_count{carrier="fake"} 1.0' in text
        assert "447700900123" not in text


async def test_counters_survive_a_reload_that_restarts_the_carrier() -> None:
    """A carrier restarted by a reload keeps its counts: Prometheus counters never go back."""
    async with running() as (smsc, daemon, directory):
        socket = directory / "smppd.sock"
        sub = await RawSubscriber.open(socket, ["receipt", "inbound"])
        async with Client(socket) as client:
            await client.submit(to="+447700900123", sender="ALPHA", text="before reload")
        assert (await sub.next())["event"] == "receipt"
        await smsc.inject_mo(source="+447700900777", destination="ALPHA", text="STOP")
        assert (await sub.next())["keyword"] == "stop"
        sub.close()
        before = await daemon.scrape_metrics()
        await restart_carrier_by_reload(daemon, directory, window=7, binds=1)
        after = await daemon.scrape_metrics()
    for line in (
        'smppd_submits_total{carrier="fake",status="ESME_ROK"} 1.0',
        'smppd_receipts_total{carrier="fake",result="matched"} 1.0',
        'smppd_inbound_total{carrier="fake"} 1.0',
        'smppd_outcome_commit_seconds_count{carrier="fake"} 1.0',
        'smppd_delivery_seconds_count{carrier="fake"} 1.0',
        "smppd_optouts_total 1.0",
    ):
        assert line in before
        assert line in after
    # The bind the reload took away is no longer shown.
    assert 'smppd_binds_configured{carrier="fake"} 1.0' in after


async def test_a_reload_that_restarts_the_carrier_keeps_its_tps_cap() -> None:
    """The carrier's cap counts the sends of its binds before the restart: 10/s and a
    reload in the middle of a backlog still make no 11 submits in any second at the SMSC."""
    async with running(carrier={"tps": 10}) as (smsc, daemon, directory):
        async with Client(directory / "smppd.sock") as client:
            await client.submit_many(
                [{"to": "+447700900123", "from": "ALPHA", "text": f"m{i}"} for i in range(30)]
            )
        await smsc.records.wait_for(10, timeout=10)  # the first second's burst is out
        await restart_carrier_by_reload(daemon, directory, window=7)
        await smsc.records.wait_for(25, timeout=10)
        times = sorted(s.time for s in smsc.records.segments)
    assert all(later - earlier >= 1.0 for earlier, later in zip(times, times[10:], strict=False))


async def test_sigterm_drains_in_flight_and_exits_zero() -> None:
    """SIGTERM with submits in flight: they are answered and recorded, nothing is left inflight."""
    async with running() as (smsc, daemon, directory):
        smsc.set_faults(latency_s=0.5)
        async with Client(directory / "smppd.sock") as client:
            for i in range(10):
                await client.submit(to="+447700900123", sender="ALPHA", text=f"drain {i}")
        await smsc.records.wait_for(1, timeout=10, segments=True)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    with sqlite3.connect(directory / "smppd.db") as db:
        states = dict(db.execute("SELECT state, count(*) FROM segments GROUP BY state").fetchall())
    assert "inflight" not in states
    assert sum(states.values()) == 10


async def test_sighup_reloads_and_refuses_a_broken_config() -> None:
    """SIGHUP applies a changed carrier; a broken file is refused and the daemon keeps serving."""
    async with running() as (smsc, daemon, directory):
        config_path = directory / "smppd.yaml"
        config = yaml.safe_load(config_path.read_text())
        config["carriers"][0]["window"] = 7
        config_path.write_text(yaml.safe_dump(config))
        daemon.signal(signal.SIGHUP)
        reloaded = await daemon.wait_log("configuration reloaded")
        assert reloaded["carriers_restarted"] == ["fake"]
        config_path.write_text("carriers: [\n")
        daemon.signal(signal.SIGHUP)
        refused = await daemon.wait_log("reload refused; keeping the running configuration")
        assert "smppd.yaml" in refused["error"]
        # A file that parses but holds a value its tag cannot build is refused the same way.
        config["carriers"][0]["window"] = "<bad>"
        config_path.write_text(yaml.safe_dump(config).replace("<bad>", "!!int abc"))
        seen = len(daemon.lines)
        daemon.signal(signal.SIGHUP)
        refused = await daemon.wait_log(
            "reload refused; keeping the running configuration", since=seen
        )
        assert "not a valid int value" in refused["error"]
        async with Client(directory / "smppd.sock") as client:
            await client.submit(to="+447700900123", sender="ALPHA", text="after reload")
        await smsc.records.wait_for(1, timeout=10)


async def test_sighup_applies_senders_clients_and_compliance_without_reconnecting() -> None:
    """A new sender id (and so its client's rights), a new stop word, a new API setting and a
    new commit interval: the first two apply at once with no carrier restarted, the last two are
    named as needing one."""
    async with running() as (smsc, daemon, directory):
        socket = directory / "smppd.sock"
        async with Client(socket) as client:
            with pytest.raises(ApiClientError) as info:
                await client.submit(to="+447700900123", sender="GAMMA", text="too early")
            assert info.value.code == "sender_not_allowed"
        config_path = directory / "smppd.yaml"
        config = yaml.safe_load(config_path.read_text())
        config["senders"].append({"id": "GAMMA", "client": "alpha", "tps": 50})
        config["compliance"] = {"stop_words": ["STOP", "HALT"]}
        config["api"]["max_connections"] = 17
        config.setdefault("queue", {})["commit_interval_s"] = 0.005
        config["queue"]["receipt_hold_s"] = 60
        config_path.write_text(yaml.safe_dump(config))
        daemon.signal(signal.SIGHUP)
        reloaded = await daemon.wait_log("configuration reloaded")
        assert reloaded["carriers_restarted"] == []
        assert reloaded["restart_needed"] == [
            "queue.commit_interval_s",
            "queue.receipt_hold_s",
            "api.max_connections",
        ]
        sub = await RawSubscriber.open(socket, ["inbound"])
        async with Client(socket) as client:
            await client.submit(to="+447700900123", sender="GAMMA", text="after reload")
            await smsc.records.wait_for(1, timeout=10)
            # A reply to the new sender id reaches its owner, and the new stop word opts out.
            await smsc.inject_mo(source="+447700900123", destination="GAMMA", text="halt")
            event = await sub.next()
            assert (event["to"], event["keyword"]) == ("GAMMA", "stop")
            with pytest.raises(ApiClientError) as info:
                await client.submit(to="+447700900123", sender="GAMMA", text="opted out")
            assert info.value.code == "opted_out"
        assert smsc.records.texts_to("447700900123") == ["after reload"]
        assert smsc.records.segments[0].source == "GAMMA"
        sub.close()


async def test_a_reload_changes_the_rights_of_connections_already_open() -> None:
    """A sender a reload takes from a client is refused on the connection it already had open,
    and a connection whose uid the reload gives to another client is closed: rights are the
    file's from the reload on, whatever connections there were."""
    async with running() as (smsc, daemon, directory):
        config_path = directory / "smppd.yaml"
        config = yaml.safe_load(config_path.read_text())
        async with Client(directory / "smppd.sock") as client:
            await client.submit(to="+447700900123", sender="12345", text="before")
            config["senders"] = [s for s in config["senders"] if s["id"] != "12345"]
            config_path.write_text(yaml.safe_dump(config))
            seen = len(daemon.lines)
            daemon.signal(signal.SIGHUP)
            await daemon.wait_log("configuration reloaded", since=seen)
            with pytest.raises(ApiClientError) as info:
                await client.submit(to="+447700900123", sender="12345", text="after")
            assert info.value.code == "sender_not_allowed"
            await client.submit(to="+447700900123", sender="ALPHA", text="still alpha")

            alpha, beta = config["api"]["clients"]
            alpha["uids"], beta["uids"] = beta["uids"], alpha["uids"]
            config_path.write_text(yaml.safe_dump(config))
            seen = len(daemon.lines)
            daemon.signal(signal.SIGHUP)
            removed = await daemon.wait_log("api.client_removed", since=seen)
            assert removed["client"] == "alpha"
            with pytest.raises(ApiClientError) as info:
                await client.submit(to="+447700900123", sender="ALPHA", text="closed")
            assert info.value.code in {UNAVAILABLE, "unauthorized"}
        async with Client(directory / "smppd.sock") as client:  # as beta now
            await client.submit(to="+447700900123", sender="BETA", text="as beta")
        await smsc.records.wait_for(3, timeout=10)
        assert sorted(smsc.records.texts_to("447700900123")) == ["as beta", "before", "still alpha"]


async def test_waiting_work_fails_over_when_its_carrier_stays_down() -> None:
    """Messages queued for a carrier that cannot bind move to the next carrier on their route
    once it has been down for failover_after_s, and are sent there."""
    dead_port = unused_port()
    async with smsc_and_dir() as (smsc, directory):
        path = write_config(directory, smsc.port)
        config = yaml.safe_load(path.read_text())
        (fake,) = config["carriers"]
        config["carriers"] = [{**fake, "name": "dead", "port": dead_port}, fake]
        config["routes"] = [{"prefix": "", "carriers": ["dead", "fake"], "failover_after_s": 4}]
        path.write_text(yaml.safe_dump(config))
        daemon = Daemon(path)
        await daemon.start()
        try:
            async with Client(directory / "smppd.sock") as client:
                for i in range(3):
                    await client.submit(to="+447700900123", sender="ALPHA", text=f"held {i}")
            moved = await daemon.wait_log("queued messages failed over")
            assert (moved["carrier"], moved["to_carrier"], moved["messages"]) == ("dead", "fake", 3)
            await smsc.records.wait_for(3, timeout=10)
            assert sorted(smsc.records.texts_to("447700900123")) == ["held 0", "held 1", "held 2"]
            text = await daemon.scrape_metrics()
            assert 'smppd_failover_messages_total{carrier="dead",to_carrier="fake"} 3.0' in text
        finally:
            await daemon.stop()
    with sqlite3.connect(directory / "smppd.db") as db:
        carriers = db.execute("SELECT DISTINCT carrier FROM segments").fetchall()
    assert carriers == [("fake",)]


async def test_work_a_carrier_held_when_it_went_down_fails_over_too() -> None:
    """A carrier whose SMSC goes away with its window full: the batch its send loop had claimed
    but not sent, and the submits left unanswered (due again as retries), move to the next
    carrier with the rest of its queue, so every message reaches the SMSC that is up."""
    async with smsc_and_dir() as (smsc, directory):
        lost = FakeSmsc(SmscConfig(port=0))
        await lost.start()
        path = write_config(directory, smsc.port)
        config = yaml.safe_load(path.read_text())
        (fake,) = config["carriers"]
        config["carriers"] = [
            {**fake, "name": "lost", "port": lost.port, "binds": 1, "window": 2},
            fake,
        ]
        config["routes"] = [{"prefix": "", "carriers": ["lost", "fake"], "failover_after_s": 2}]
        path.write_text(yaml.safe_dump(config))
        daemon = Daemon(path)
        await daemon.start()
        try:
            await daemon.wait_log("bound", carrier="lost")
            lost.set_faults(latency_s=60.0)  # answers nothing in time: its window stays full
            async with Client(directory / "smppd.sock") as client:
                await client.submit_many(
                    [{"to": "+447700900123", "from": "ALPHA", "text": f"m {i}"} for i in range(8)]
                )
            await lost.records.wait_for(2, timeout=10, segments=True)
            await lost.stop()
            await smsc.records.wait_for(8, timeout=30)
            assert sorted(smsc.records.texts_to("447700900123")) == [f"m {i}" for i in range(8)]
        finally:
            await daemon.stop()
            await lost.stop()


async def test_work_claimed_before_an_outage_with_no_failover_reads_as_queued() -> None:
    """A carrier with nowhere to fail over to, down past its route's failover_after_s: the
    batch its send loop had claimed goes back to the queue (state events say queued) instead
    of reading inflight for the whole outage, and is sent once the SMSC is back."""
    async with smsc_and_dir() as (smsc, directory):
        routes = [{"prefix": "", "carriers": ["fake"], "failover_after_s": 1}]
        path = write_config(directory, smsc.port, carrier={"binds": 1, "window": 2}, routes=routes)
        daemon = Daemon(path)
        await daemon.start()
        try:
            await daemon.wait_log("bound", carrier="fake")
            smsc.set_faults(latency_s=60.0)  # answers nothing in time: its window stays full
            socket = directory / "smppd.sock"
            sub = await RawSubscriber.open(socket, ["state"])
            async with Client(socket) as client:
                sent = await client.submit_many(
                    [{"to": "+447700900123", "from": "ALPHA", "text": f"m {i}"} for i in range(8)]
                )
                ids = [s.message_id for s in sent if not isinstance(s, ApiClientError)]
                assert len(ids) == 8
                await smsc.records.wait_for(2, timeout=10, segments=True)
                smsc.drop()
                smsc.set_faults(hang=True)  # binds again, answers nothing
                states: list[str] = []
                while states != ["queued"] * 8:  # each change is an event: no polling
                    await sub.next(timeout=15)
                    states = [(await client.status(i))["state"] for i in ids]
                smsc.set_faults(hang=False, latency_s=0.0)
                await smsc.records.wait_for(8, timeout=30)
            sub.close()
        finally:
            await daemon.stop()


async def test_a_message_whose_validity_ends_while_its_carrier_is_down_reads_expired() -> None:
    """An OTP queued for a carrier that cannot be reached is reported expired (a state event,
    then `status`) soon after its validity ends, not when the carrier comes back."""
    async with smsc_and_dir() as (_smsc, directory):
        path = write_config(directory, unused_port())
        daemon = Daemon(path)
        await daemon.start()
        try:
            socket = directory / "smppd.sock"
            sub = await RawSubscriber.open(socket, ["state"])
            async with Client(socket) as client:
                sent = await client.submit(
                    to="+447700900123", sender="ALPHA", text="code 1234", validity_s=1
                )
                event = await sub.next(timeout=15)
                assert (event["id"], event["state"]) == (sent.message_id, "expired")
                assert (await client.status(sent.message_id))["state"] == "expired"
            sub.close()
        finally:
            await daemon.stop()


async def test_work_left_for_a_carrier_a_reload_removed_is_reported() -> None:
    """Messages queued for a carrier that a reload then removes are named in a warning and in
    smppd_queue_unrouted_segments, since no send loop will take them."""
    dead_port = unused_port()
    async with smsc_and_dir() as (smsc, directory):
        path = write_config(directory, smsc.port)
        config = yaml.safe_load(path.read_text())
        (fake,) = config["carriers"]
        config["carriers"] = [fake, {**fake, "name": "gone", "port": dead_port}]
        config["routes"] = [{"prefix": "", "carriers": ["gone"]}]
        path.write_text(yaml.safe_dump(config))
        daemon = Daemon(path)
        await daemon.start()
        try:
            async with Client(directory / "smppd.sock") as client:
                for i in range(2):
                    await client.submit(to="+447700900123", sender="ALPHA", text=f"left {i}")
            config["carriers"] = [fake]
            config["routes"] = [{"prefix": "", "carriers": ["fake"]}]
            path.write_text(yaml.safe_dump(config))
            daemon.signal(signal.SIGHUP)
            await daemon.wait_log("configuration reloaded")
            warned = await daemon.wait_log("queued work for carriers that do not send")
            assert warned["segments"] == {"gone": 2}
            text = await daemon.scrape_metrics()
            assert 'smppd_queue_unrouted_segments{carrier="gone"} 2.0' in text
            assert smsc.records.messages == []
        finally:
            await daemon.stop()


async def test_config_error_exits_78_with_one_line() -> None:
    """A bad value exits with EX_CONFIG and a line naming file, key and reason, no traceback."""
    async with smsc_and_dir() as (smsc, directory):
        path = write_config(directory, smsc.port, carrier={"window": "ten"})
        proc = await run_to_exit(str(path))
    assert proc.returncode == 78
    assert "carriers[0].window" in proc.stderr
    assert str(path) in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("listener", ["api", "metrics"])
async def test_a_listener_that_cannot_start_ends_the_run_with_one_line(listener: str) -> None:
    """An API socket path taken by a plain file, or a metrics address in use: exit 1 with one
    log line naming the key and the reason, no traceback, and no carrier ever bound."""
    async with smsc_and_dir() as (smsc, directory):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            metrics = f"127.0.0.1:{taken.getsockname()[1]}"
            path = write_config(directory, smsc.port, metrics={"listen": metrics})
            if listener == "api":
                path = write_config(directory, smsc.port)
                (directory / "smppd.sock").write_text("not a socket")
            proc = await run_to_exit(str(path))
        assert smsc.connections == []
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [json.loads(line) for line in proc.stderr.splitlines() if '"error"' in line]
    assert [e["event"] for e in errors] == ["cannot start"]
    assert errors[0]["error"].startswith(f"{listener}.")
    assert (directory / "smppd.sock").exists() == (listener == "api")


async def test_kill9_restart_loses_nothing() -> None:
    """kill -9 mid-run: after a restart every acknowledged message reaches the SMSC."""
    async with smsc_and_dir() as (smsc, directory):
        smsc.set_faults(latency_s=0.002)
        daemon = Daemon(write_config(directory, smsc.port))
        await daemon.start()
        acked: set[str] = set()
        socket = directory / "smppd.sock"

        async def submit_all() -> None:
            async with Client(socket) as client:
                for batch in range(40):
                    results = await client.submit_many(
                        [
                            {"to": "+447700900123", "from": "ALPHA", "text": f"m{batch}-{i}"}
                            for i in range(50)
                        ]
                    )
                    acked.update(
                        f"m{batch}-{i}"
                        for i, r in enumerate(results)
                        if not isinstance(r, ApiClientError)
                    )

        submitter = asyncio.create_task(submit_all())
        await smsc.records.wait_for(300, timeout=30)
        await daemon.kill()
        with pytest.raises(Exception):  # noqa: B017, PT011 - the socket went away mid-batch
            await submitter
        assert len(acked) >= 300
        daemon = Daemon(daemon.config)
        await daemon.start()
        try:
            async with asyncio.timeout(60):
                while not acked <= {m.text for m in smsc.records.messages}:
                    await smsc.records.wait_for(len(smsc.records.messages) + 1, timeout=30)
        finally:
            await daemon.stop()
        seen: dict[str, int] = {}
        for message in smsc.records.messages:
            seen[message.text] = seen.get(message.text, 0) + 1
        duplicates = sum(n - 1 for n in seen.values())
        assert duplicates <= 50 * 2, duplicates


async def test_stop_gets_its_configured_auto_reply() -> None:
    """A STOP is confirmed by the configured reply, sent although the number just opted out."""
    compliance = {"auto_replies": {"stop": "You are unsubscribed.", "help": "Reply STOP to quit."}}
    async with running(compliance=compliance) as (smsc, _daemon, _directory):
        await smsc.inject_mo(source="+447700900009", destination="ALPHA", text="STOP")
        await smsc.records.wait_for(1, timeout=10)
        await smsc.inject_mo(source="+447700900009", destination="ALPHA", text="help")
        await smsc.records.wait_for(2, timeout=10)
        [first, second] = smsc.records.messages
        assert (first.source, first.destination, first.text) == (
            "ALPHA",
            "447700900009",
            "You are unsubscribed.",
        )
        assert second.text == "Reply STOP to quit."


async def test_eight_digit_national_numbers_with_a_plan_that_says_so() -> None:
    """With Denmark's plan (8-digit numbers, short codes up to 6 digits) a submit to 20123456
    goes to +45 20123456 as an international number, and a STOP from 20123456 (TON 0) stops
    it; by default 8 digits would be a short code, sent as TON 3 to nobody."""
    compliance = {"default_country_prefix": "45", "short_code_max_digits": 6}
    async with running(compliance=compliance) as (smsc, _daemon, directory):
        socket = directory / "smppd.sock"
        sub = await RawSubscriber.open(socket, ["inbound"])
        async with Client(socket) as client:
            await client.submit(to="20123456", sender="ALPHA", text="hej")
            await smsc.records.wait_for(1, timeout=10)
            [segment] = smsc.records.segments
            wire = (segment.destination, segment.destination_ton, segment.destination_npi)
            assert wire == ("4520123456", 1, 1)
            await smsc.inject_mo(source="20123456", destination="ALPHA", text="STOP")
            stop = await sub.next()
            sub.close()
            assert (stop["keyword"], stop["from"]) == ("stop", "+4520123456")
            with pytest.raises(ApiClientError) as info:
                await client.submit(to="20 12 34 56", sender="ALPHA", text="again")
            assert info.value.code == "opted_out"


async def test_daily_cap_refuses_and_survives_a_restart() -> None:
    """Past a sender's daily cap submits are refused, and a restart does not reset the count."""
    senders = [
        {"id": "ALPHA", "client": "alpha", "daily_cap": 3},
        {"id": "BETA", "client": "beta"},
    ]
    async with running(senders=senders) as (_smsc, daemon, directory):
        socket = directory / "smppd.sock"
        async with Client(socket) as client:
            for i in range(3):
                await client.submit(to="+447700900123", sender="ALPHA", text=f"capped {i}")
            with pytest.raises(ApiClientError) as info:
                await client.submit(to="+447700900123", sender="ALPHA", text="one too many")
            assert info.value.code == "over_daily_cap"
        assert await daemon.stop() == 0
        again = Daemon(daemon.config)
        await again.start()
        try:
            async with Client(socket) as client:
                with pytest.raises(ApiClientError) as info:
                    await client.submit(to="+447700900123", sender="ALPHA", text="after restart")
                assert info.value.code == "over_daily_cap"
        finally:
            await again.stop()


async def test_every_receipt_finds_its_own_message() -> None:
    """With zero-padded hex ids ("0000000a" and "00000010" share a numeric reading) each of 40
    messages gets its own receipt and ends delivered."""
    async with running() as (_smsc, _daemon, directory):
        await each_gets_its_receipt(directory / "smppd.sock", 40)


async def each_gets_its_receipt(socket: Path, count: int) -> None:
    """Submit `count` messages; each one's receipt reaches a subscriber and it ends delivered."""
    sub = await RawSubscriber.open(socket, ["receipt"])
    async with Client(socket) as client:
        sent = await client.submit_many(
            [{"to": "+447700900123", "from": "ALPHA", "text": f"n{i}"} for i in range(count)]
        )
        ids = {r.message_id for r in sent if not isinstance(r, ApiClientError)}
        assert len(ids) == count
        receipted = [(await sub.next())["id"] for _ in range(count)]
        assert sorted(receipted) == sorted(ids)
        for message_id in ids:
            assert (await client.status(message_id))["state"] == "delivered"
    sub.close()


async def test_receipts_giving_the_id_in_decimal_find_hex_resp_ids() -> None:
    """A carrier that answers in hex and writes receipts in decimal, with the default
    message_id_format (auto): each receipt finds its message under the id's other rendering,
    after a wait, and the daemon says once which setting would spare it. The ids start at
    0xA0000000 so that no decimal id also reads as another open hex one (the ambiguity
    message_id_format: hex is for)."""
    smsc = SmscConfig(
        port=0,
        message_id_start=0xA000_0000,
        receipts=ReceiptConfig(id_format=IdFormat.DECIMAL),
    )
    async with running(smsc) as (_smsc, daemon, directory):
        await each_gets_its_receipt(directory / "smppd.sock", 30)
        warnings = [line for line in daemon.lines if line.get("event") == FALLBACK_WARNING]
        assert [w["carrier"] for w in warnings] == ["fake"]  # once, naming the setting
        # Each was held on arrival, then matched: the metrics say both.
        text = await daemon.scrape_metrics()
        assert 'smppd_receipts_total{carrier="fake",result="held"} 30.0' in text
        assert 'smppd_receipts_held_ended_total{carrier="fake",result="matched"} 30.0' in text


LEARNED = (
    "message ids are hex on one side and decimal on the other: receipts are matched so from "
    "now on, and ones before may have gone to the wrong message; set message_id_format for "
    "this carrier"
)
KEPT = (
    "message ids were found hex on one side and decimal on the other: receipts are matched so "
    "until the ids say otherwise; set message_id_format for this carrier"
)


async def test_a_learned_hex_or_decimal_quirk_is_kept_across_a_restart() -> None:
    """Sequential hex resp ids (00000001 on), decimal receipts, message_id_format auto. The
    first run learns the quirk and keeps it on disk; the second starts from it, so its first
    receipts find their own messages at once. Learning again, the receipt "101" (for 0x65)
    would be the open resp 00000101's as written: the second run's receipts come 2 s after
    their submits, when the 200 messages up to 0x12C are all open."""
    smsc_config = SmscConfig(port=0, receipts=ReceiptConfig(id_format=IdFormat.DECIMAL))
    async with smsc_and_dir(smsc_config) as (smsc, directory):
        config = write_config(directory, smsc.port)
        socket = directory / "smppd.sock"
        first = Daemon(config)
        await first.start()
        async with Client(socket) as client:
            await client.submit_many(
                [{"to": "+447700900123", "from": "ALPHA", "text": f"n{i}"} for i in range(100)]
            )
        await first.wait_log(LEARNED, carrier="fake", message_id_format="hex")
        # Every receipt of the first run taken before it stops: one left for the second run
        # would be for a message the first settled wrongly while it learned (as the quirk
        # does), and could be held there.
        await asyncio.wait_for(smsc.outbox.wait_acked("receipt", 100), 10)
        assert await first.stop() == 0
        with sqlite3.connect(directory / "smppd.db") as db:
            rows = db.execute("SELECT carrier, receipt_format FROM id_formats").fetchall()
        assert rows == [("fake", "hex")]

        smsc.set_receipts(delay_s=2.0)
        second = Daemon(config)
        await second.start()
        try:
            assert (await second.wait_log(KEPT))["carrier"] == "fake"
            sub = await RawSubscriber.open(socket, ["receipt"])
            async with Client(socket) as client:
                sent = await client.submit_many(
                    [{"to": "+447700900123", "from": "ALPHA", "text": f"m{i}"} for i in range(200)]
                )
                ids = sorted(r.message_id for r in sent if not isinstance(r, ApiClientError))
                assert len(ids) == 200
                receipted: list[int] = []
                while len(receipted) < len(ids):
                    receipt_for = (await sub.next())["id"]
                    if receipt_for >= ids[0]:  # not one the first run left outstanding
                        receipted.append(receipt_for)
                assert sorted(receipted) == ids
            # Each receipt reached its own message (above) at once: none was held, as the
            # first run's held ones, re-keyed, no longer wait under another message's id as
            # written. None went through the wait for AUTO's other reading, and nothing was
            # learned again.
            text = await second.scrape_metrics()
            assert 'smppd_receipts_total{carrier="fake",result="held"}' not in text
            events = {line.get("event") for line in second.lines}
            assert FALLBACK_WARNING not in events
            assert LEARNED not in events
            sub.close()
        finally:
            await second.kill()


async def test_health_says_which_address_each_bind_of_a_spread_carrier_is_on() -> None:
    """spread_binds over host:port and a dead alternate: bind 1's own address is the dead one,
    so it binds at host:port, and health shows both binds there."""
    dead = unused_port()
    carrier = {"alternates": [f"127.0.0.1:{dead}"], "spread_binds": True, "binds": 2}
    async with running(carrier=carrier) as (smsc, daemon, directory):
        failed = await daemon.wait_log("connect failed", bind="1")
        assert failed["level"] == "warning"
        for bind in ("0", "1"):
            await daemon.wait_log("bound", bind=bind, address=f"127.0.0.1:{smsc.port}")
        async with Client(directory / "smppd.sock") as client:
            health = await client.health()
        assert health["carriers"]["fake"]["bound_at"] == {f"127.0.0.1:{smsc.port}": 2}


async def test_a_carrier_with_split_binds_gets_its_receipts_on_the_receiver() -> None:
    """bind_mode transmitter with receiver_binds 1: the SMSC sends receipts only to receivers,
    and every message still ends delivered; health counts the receiver apart."""
    carrier = {"bind_mode": "transmitter", "binds": 2, "receiver_binds": 1}
    async with running(carrier=carrier) as (smsc, daemon, directory):
        binds = {(await daemon.wait_log("bound", bind=name))["state"] for name in ("0", "1", "rx0")}
        assert binds == {"BOUND_TX", "BOUND_RX"}
        assert sorted(c.state.value for c in smsc.bound()) == ["bound_rx", "bound_tx", "bound_tx"]
        await each_gets_its_receipt(directory / "smppd.sock", 20)
        async with Client(directory / "smppd.sock") as client:
            health = await client.health()
        fake = health["carriers"]["fake"]
        assert (fake["binds_up"], fake["receivers_up"], health["healthy"]) == (2, 1, True)
        text = await daemon.scrape_metrics()
        for line in (
            'smppd_binds_up{carrier="fake"} 2.0',
            'smppd_binds_configured{carrier="fake"} 2.0',
            'smppd_receiver_binds_up{carrier="fake"} 1.0',
            'smppd_receiver_binds_configured{carrier="fake"} 1.0',
        ):
            assert line in text


async def test_one_receipt_per_message_delivers_every_part() -> None:
    """A carrier that sends one receipt for a whole concatenated message, for its last part
    (receipts_per: message): the three-part message ends delivered with a receipt event for
    each part, and a one-part message still gets its own. The SMSC sent two receipts."""
    smsc = SmscConfig(port=0, receipts=ReceiptConfig(per_message=True))
    async with running(smsc, carrier={"receipts_per": "message"}) as (fake, _daemon, directory):
        sub = await RawSubscriber.open(directory / "smppd.sock", ["receipt"])
        async with Client(directory / "smppd.sock") as client:
            long = await client.submit(to="+447700900123", sender="ALPHA", text="long " * 80)
            short = await client.submit(to="+447700900123", sender="ALPHA", text="short")
            events = [await sub.next() for _ in range(4)]
            assert sorted((e["id"], e["segment"]) for e in events) == [
                (long.message_id, 0),
                (long.message_id, 1),
                (long.message_id, 2),
                (short.message_id, 0),
            ]
            for message_id in (long.message_id, short.message_id):
                assert (await client.status(message_id))["state"] == "delivered"
        assert fake.stats()["outbox"]["receipt"]["sent"] == 2
        sub.close()


def _misbehaving_smsc(*, drop_after_pdus: int | None) -> SmscConfig:
    """An SMSC that throttles, fails some submits for now and some for good, answers late and
    shuffled, and sends every receipt twice and before its submit_sm_resp."""
    faults = Faults(
        latency_s=(0.0, 0.01),
        submit_errors={
            CommandStatus.ESME_RTHROTTLED: 0.05,
            CommandStatus.ESME_RMSGQFUL: 0.03,
            CommandStatus.ESME_RSYSERR: 0.03,
            # At 6% of some 270 segments' submits, none failing for good (which the tests
            # assert some do) has odds of 1 in 10^7; at 2% it was 1 in 400.
            CommandStatus.ESME_RINVDSTADR: 0.06,
        },
        reorder=Reorder.SHUFFLE,
        reorder_batch=5,
        reorder_hold_s=0.05,
        drop_after_pdus=drop_after_pdus,
    )
    return SmscConfig(
        port=0, faults=faults, receipts=ReceiptConfig(duplicate=True, before_resp=True)
    )


def _quick_retries(directory: Path, smsc_port: int) -> Path:
    """Three binds of window 10 whose retries and throttling pauses are a fraction of a second."""
    return write_config(
        directory,
        smsc_port,
        carrier={"binds": 3, "window": 10, "throttle_backoff_s": 0.05},
        queue={"path": str(directory / "smppd.db"), "retry_initial_s": 0.05, "retry_max_s": 0.2},
    )


async def test_every_message_ends_final_through_a_misbehaving_smsc() -> None:
    """An SMSC that throttles, fails some submits for now and some for good, answers late and
    out of order, drops each connection every 120 PDUs (losing the answers it held), and sends
    every receipt twice and before its submit_sm_resp: every accepted message still reaches a
    final state, delivered unless a permanent error failed it (its parts not yet sent then
    cancelled), and each delivered segment was
    accepted at the SMSC under the id the daemon recorded. The ids are small hex ones, so an
    early receipt for 0000000a meets an open 00000010 (ten, read as decimal), and must wait
    for its own."""
    smsc_config = _misbehaving_smsc(drop_after_pdus=120)
    count = 240
    async with smsc_and_dir(smsc_config) as (smsc, directory):
        config = _quick_retries(directory, smsc.port)
        daemon = Daemon(config)
        await daemon.start()
        try:
            socket = directory / "smppd.sock"
            sub = await RawSubscriber.open(socket, ["state"])
            long = "of a long text " * 20
            texts = [f"m{i} " + (long if i % 8 == 0 else "") for i in range(count)]
            async with Client(socket) as client:
                sent = await client.submit_many(
                    [{"to": "+447700900123", "from": "ALPHA", "text": t} for t in texts]
                )
                ids = {r.message_id for r in sent if not isinstance(r, ApiClientError)}
                assert len(ids) == count
                unfinished = set(ids)
                while unfinished:
                    event = await sub.next(timeout=30)
                    if event["state"] in FINAL_MESSAGE_STATES:
                        unfinished.discard(event["id"])
                statuses = [await client.status(message_id) for message_id in sorted(ids)]
            sub.close()
            accepted = {r.message_id: r.command_status for r in smsc.records.segments}
            segments = [segment for status in statuses for segment in status["segments"]]
            assert {"delivered", "failed"} <= {s["state"] for s in segments}
            for status in statuses:
                states = {segment["state"] for segment in status["segments"]}
                # A part not yet sent when another failed for good is cancelled, never sent.
                assert states <= {"delivered", "failed", "cancelled"}, status
                assert "cancelled" not in states or "failed" in states, status
            for segment in segments:
                if segment["state"] == "delivered":
                    assert accepted.get(segment["carrier_message_id"]) == 0, segment
                elif segment["state"] == "failed":
                    assert segment["command_status"] == CommandStatus.ESME_RINVDSTADR, segment
                    assert segment["status"] == "ESME_RINVDSTADR", segment
            problems = [line for line in daemon.lines if line.get("level") in ("error", "critical")]
            assert problems == []
        finally:
            await daemon.stop()


async def test_cancels_and_validity_through_a_misbehaving_smsc_and_a_restart() -> None:
    """Cancels while sending, validities that run out in the queue, urgent and long messages,
    an SMSC that throttles, fails some submits, answers late and out of order, and a stop and
    start of the daemon halfway: every message ends final; no segment the daemon calls
    cancelled or expired was accepted at the SMSC, each delivered one was accepted under the
    id the daemon recorded, and none was accepted twice (a graceful stop waits for its
    answers)."""
    rng = random.Random(8)
    smsc_config = _misbehaving_smsc(drop_after_pdus=None)  # no answer is lost
    count = 400
    # Every part of a message carries its tag, so the SMSC's records name the message.
    tags = [f"<{i:04d}>" for i in range(count)]
    messages: list[dict[str, Any]] = []
    for i, tag in enumerate(tags):
        message: dict[str, Any] = {
            "to": "+447700900123",
            "from": "ALPHA",
            "text": tag * (40 if i % 5 == 0 else 1),  # 240 characters: two parts
        }
        if i % 7 == 0:
            message["validity_s"] = rng.choice([0.05, 0.2, 0.5, 1.0])
        if i % 11 == 0:
            message["priority"] = "urgent"
        messages.append(message)
    async with smsc_and_dir(smsc_config) as (smsc, directory):
        config = _quick_retries(directory, smsc.port)
        socket = directory / "smppd.sock"
        daemon = Daemon(config)
        await daemon.start()
        try:
            async with Client(socket) as client:
                sent = await client.submit_many(messages)
                ids = [r.message_id for r in sent if not isinstance(r, ApiClientError)]
                assert len(ids) == count
                doomed = rng.sample(ids, 80)
                # Ten cancels each time the SMSC has seen another 25 segments.
                for step in range(8):
                    await smsc.records.wait_for(25 * (step + 1), timeout=20, segments=True)
                    for message_id in doomed[step * 10 : step * 10 + 10]:
                        with contextlib.suppress(ApiClientError):  # it may have ended
                            await client.cancel(message_id)
            assert await daemon.stop() == 0
            lines = list(daemon.lines)
            daemon = Daemon(config)
            await daemon.start()
            sub = await RawSubscriber.open(socket, ["state"])
            async with Client(socket) as client:
                unfinished = set(ids)
                for message_id in ids:
                    if (await client.status(message_id))["state"] in FINAL_MESSAGE_STATES:
                        unfinished.discard(message_id)
                while unfinished:
                    event = await sub.next(timeout=30)
                    if event["state"] in FINAL_MESSAGE_STATES:
                        unfinished.discard(event["id"])
                statuses = [await client.status(message_id) for message_id in ids]
            sub.close()
        finally:
            await daemon.stop()
        lines += daemon.lines
    accepted: dict[tuple[str, int], list[str]] = {}
    for record in smsc.records.segments:
        if record.command_status == 0:
            found = re.search(r"<\d{4}>", record.text)
            assert found is not None, record
            part = record.concat.seq if record.concat is not None else 1
            accepted.setdefault((found.group(0), part), []).append(record.message_id)
    assert all(len(carrier_ids) == 1 for carrier_ids in accepted.values())
    seen = {status["state"] for status in statuses}
    assert {"delivered", "cancelled", "expired", "failed"} <= seen, seen
    for tag, status in zip(tags, statuses, strict=True):
        for segment in status["segments"]:
            carrier_ids = accepted.get((tag, segment["index"] + 1), [])
            if segment["state"] in ("cancelled", "expired"):
                assert carrier_ids == [], status
            elif segment["state"] == "delivered":
                assert carrier_ids == [segment["carrier_message_id"]], status
            else:
                assert segment["state"] == "failed", status
                assert segment["command_status"] == CommandStatus.ESME_RINVDSTADR, status
        if status["state"] == "delivered":
            assert {s["state"] for s in status["segments"]} == {"delivered"}, status
    assert [line for line in lines if line.get("level") in ("error", "critical")] == []


async def test_a_cancel_stops_messages_claimed_but_not_yet_sent() -> None:
    """One bind, window 1, an SMSC that answers after 1 s: ten submits are claimed together
    and wait for room. Those cancelled while the first is out never reach the SMSC; a message
    submitted after the cancels, which goes behind them, shows when they would have."""
    smsc_config = SmscConfig(port=0, faults=Faults(latency_s=1.0))
    carrier = {"binds": 1, "window": 1}
    async with (
        running(smsc_config, carrier=carrier) as (smsc, _daemon, directory),
        Client(directory / "smppd.sock") as client,
    ):
        sent = await client.submit_many(
            [{"to": "+447700900123", "from": "ALPHA", "text": f"c{i}"} for i in range(10)]
        )
        await smsc.records.wait_for(1, timeout=10)
        for reply in sent[1:]:
            assert not isinstance(reply, ApiClientError)
            assert (await client.cancel(reply.message_id))["state"] == "cancelled"
        await client.submit(to="+447700900123", sender="ALPHA", text="after")
        await smsc.records.wait_for(2, timeout=10)
        assert [m.text for m in smsc.records.messages] == ["c0", "after"]
        for reply in sent[1:]:
            assert not isinstance(reply, ApiClientError)
            assert (await client.status(reply.message_id))["state"] == "cancelled"


async def _queue_file(directory: Path) -> Path:
    """A queue file with the current schema, closed again."""
    path = directory / "smppd.db"
    queue = await open_queue("sqlite", path)
    await queue.close()
    return path


async def test_a_queue_locked_at_startup_ends_the_run_with_one_line() -> None:
    """Another process holds the write lock through the busy timeout: exit 1 with one line,
    no traceback, no carrier bound, and the process does not hang on the store's thread."""
    async with smsc_and_dir() as (smsc, directory):
        db = sqlite3.connect(await _queue_file(directory), isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        config = write_config(directory, smsc.port)
        try:
            proc = await run_to_exit(str(config))
        finally:
            db.close()
        assert smsc.connections == []
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [json.loads(line) for line in proc.stderr.splitlines() if '"error"' in line]
    assert [e["event"] for e in errors] == ["cannot open the queue"]
    assert "busy" in errors[0]["error"] or "locked" in errors[0]["error"]


async def test_a_queue_directory_that_cannot_be_made_ends_the_run_with_one_line() -> None:
    """queue.path under a regular file: exit 1 with one line naming what could not be made,
    no traceback, no carrier bound."""
    async with smsc_and_dir() as (smsc, directory):
        (directory / "plain").write_text("")
        queue = {"path": str(directory / "plain" / "smppd.db")}
        proc = await run_to_exit(str(write_config(directory, smsc.port, queue=queue)))
        assert smsc.connections == []
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [json.loads(line) for line in proc.stderr.splitlines() if '"error"' in line]
    assert [e["event"] for e in errors] == ["cannot open the queue"]
    assert errors[0]["error"] == f"cannot create {directory / 'plain'}: File exists"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
async def test_a_signal_while_the_queue_opens_is_kept_for_when_it_has_opened(
    sig: signal.Signals,
) -> None:
    """The store is held by another process while the daemon opens it. A stop signal then
    ends the run cleanly once the store is free, before any carrier binds; a SIGHUP is a
    reload once serving, not the end of the process."""
    async with smsc_and_dir() as (smsc, directory):
        db = sqlite3.connect(await _queue_file(directory), isolation_level=None)
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        db.execute("BEGIN EXCLUSIVE")
        daemon = Daemon(write_config(directory, smsc.port))
        try:
            await daemon.start(ready=False)
            await daemon.wait_log("opening the queue")
            daemon.signal(sig)
        finally:
            db.close()
        try:
            if sig == signal.SIGHUP:
                await daemon.wait_log("smppd ready")
                await daemon.wait_log("configuration reloaded")
                assert await daemon.stop() == 0
            else:
                assert await daemon.wait() == 0
                assert smsc.connections == []
                await daemon.wait_log("smppd stopped before serving")
        finally:
            if daemon.proc is not None and daemon.proc.returncode is None:
                await daemon.kill()
    assert not any("Traceback" in line for line in daemon.raw)


async def test_a_second_daemon_on_a_running_ones_config_leaves_it_alone() -> None:
    """A second `smppd run` on the same config while the first has submits in flight: it
    stops at the queue with one line naming the first one's pid, before recovering anything,
    so nothing is sent twice and the first daemon's counts stay right."""
    smsc_config = SmscConfig(port=0, faults=Faults(latency_s=1.0))
    async with (
        running(smsc_config) as (smsc, daemon, directory),
        Client(directory / "smppd.sock") as client,
    ):
        assert daemon.proc is not None
        sub = await RawSubscriber.open(directory / "smppd.sock", ["receipt"])
        await client.submit_many(
            [{"to": f"+4477009001{i:02d}", "from": "ALPHA", "text": f"m{i}"} for i in range(5)]
        )
        await smsc.records.wait_for(5, timeout=10)  # all five out, their answers held back
        second = await run_to_exit(str(directory / "smppd.yaml"))
        assert second.returncode == 1
        assert "Traceback" not in second.stderr + second.stdout
        assert "resending segments" not in second.stderr
        errors = [json.loads(line) for line in second.stderr.splitlines() if '"error"' in line]
        assert [e["event"] for e in errors] == ["cannot open the queue"]
        assert f"in use by another process (pid {daemon.proc.pid})" in errors[0]["error"]
        receipts = [await sub.next() for _ in range(5)]
        assert {r["stat"] for r in receipts} == {"DELIVRD"}
        sub.close()
        assert sorted(m.text for m in smsc.records.messages) == [f"m{i}" for i in range(5)]
        stats = await client.stats()
        assert stats["queued_depth"] == 0
        assert all(n >= 0 for n in stats["segments"].values())


async def test_retries_keep_their_delay_when_the_wall_clock_steps_back() -> None:
    """Submits refused with a temporary error wait out a 4 s retry; the daemon's wall clock
    then steps back 10 minutes (an NTP step): they go about 4 s after their try, as they
    would have, not 10 minutes later, and the step is logged."""
    async with smsc_and_dir() as (smsc, directory):
        smsc.set_faults(submit_errors={CommandStatus.ESME_RSYSERR: 1.0})
        queue = {"path": str(directory / "smppd.db"), "retry_initial_s": 4, "retry_max_s": 4}
        program = (str(Path(__file__).with_name("stepped_clock.py")),)
        daemon = Daemon(write_config(directory, smsc.port, queue=queue), program=program)
        await daemon.start()
        try:
            async with Client(directory / "smppd.sock") as client:
                for i in range(5):
                    await client.submit(to="+447700900123", sender="ALPHA", text=f"retry {i}")
            await smsc.records.wait_for(5, timeout=10, segments=True)  # each refused once
            smsc.set_faults(submit_errors={})
            daemon.signal(signal.SIGUSR1)
            event = "wall clock stepped back; waiting retries moved back with it"
            stepped = await daemon.wait_log(event, timeout=5)
            # Those whose refusal was recorded after the step had the new clock's times: 5 at
            # most are moved, as many as were recorded before it.
            assert 1 <= stepped["segments"] <= 5
            assert 599 < stepped["by_s"] < 601
            await smsc.records.wait_for(5, timeout=10)
            assert sorted(m.text for m in smsc.records.messages) == [f"retry {i}" for i in range(5)]
        finally:
            await daemon.kill()


async def test_a_wall_clock_stepped_forward_does_not_fail_a_carrier_over_early() -> None:
    """A carrier down for a second when the daemon's wall clock jumps 10 minutes ahead has
    been down for a second, not 10 minutes: its work stays for it (failover_after_s 60)."""
    async with smsc_and_dir() as (smsc, directory):
        path = write_config(directory, smsc.port)
        config = yaml.safe_load(path.read_text())
        (fake,) = config["carriers"]
        config["carriers"] = [{**fake, "name": "dead", "port": unused_port()}, fake]
        config["routes"] = [{"prefix": "", "carriers": ["dead", "fake"], "failover_after_s": 60}]
        path.write_text(yaml.safe_dump(config))
        program = (str(Path(__file__).with_name("stepped_clock.py")),)
        daemon = Daemon(path, program=program)
        await daemon.start()
        try:
            async with Client(directory / "smppd.sock") as client:
                sent = await client.submit(to="+447700900123", sender="ALPHA", text="wait")
                daemon.signal(signal.SIGUSR2)
                forward = "wall clock stepped forward; scheduled work comes due that much sooner"
                assert 599 < (await daemon.wait_log(forward, timeout=5))["by_s"] < 601
                daemon.signal(signal.SIGUSR1)  # a later tick: the forward one's sweep is done
                await daemon.wait_log("wall clock stepped back; waiting retries moved back with it")
                status = await client.status(sent.message_id)
            assert not any(
                line.get("event") == "queued messages failed over" for line in daemon.lines
            )
            assert status["state"] == "queued"
            assert smsc.records.segments == []
        finally:
            await daemon.kill()


async def test_a_reload_that_restarts_the_carrier_keeps_the_auto_reply_cooldown() -> None:
    """A STOP answered before a reload restarted its carrier is not answered again within the
    hour after it: the cooldown is the daemon's, not the carrier's."""
    compliance = {"auto_replies": {"stop": "You are unsubscribed."}}
    async with running(compliance=compliance) as (smsc, daemon, directory):
        sub = await RawSubscriber.open(directory / "smppd.sock", ["inbound"])
        await smsc.inject_mo(source="+447700900009", destination="ALPHA", text="STOP")
        await smsc.records.wait_for(1, timeout=10)
        assert (await sub.next())["keyword"] == "stop"
        await restart_carrier_by_reload(daemon, directory, window=7)
        # Queued by the SMSC until the restarted carrier binds again.
        await smsc.inject_mo(source="+447700900009", destination="ALPHA", text="STOP")
        assert (await sub.next())["keyword"] == "stop"  # published once the reply was decided
        sub.close()
        metrics = await daemon.scrape_metrics()
    assert "smppd_auto_replies_total 1.0" in metrics
    assert [m.text for m in smsc.records.messages] == ["You are unsubscribed."]


def _two_carriers(path: Path, first: dict[str, Any]) -> dict[str, Any]:
    """The config at `path` with carrier "maint" (`first` over the fake one's settings) ahead
    of "fake" on the one route, which fails over only after an hour."""
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    (fake,) = config["carriers"]
    config["carriers"] = [{**fake, "name": "maint", **first}, fake]
    config["routes"] = [{"prefix": "", "carriers": ["maint", "fake"], "failover_after_s": 3600}]
    path.write_text(yaml.safe_dump(config))
    return config


async def test_a_paused_carrier_keeps_no_binds_and_its_route_passes_it_over() -> None:
    """carriers[].paused: no bind to that carrier, its traffic goes to the next carrier on its
    route at once (not after failover_after_s), health stays healthy and says so; a reload
    that unpauses it binds it and its traffic comes back to it."""
    async with smsc_and_dir() as (smsc, directory), FakeSmsc(SmscConfig(port=0)) as maint:
        path = write_config(directory, smsc.port)
        config = _two_carriers(path, {"port": maint.port, "binds": 1, "paused": True})
        daemon = Daemon(path)
        await daemon.start()
        try:
            await daemon.wait_log("carrier paused: no binds until a reload unpauses it")
            async with Client(directory / "smppd.sock") as client:
                await client.submit(to="+447700900123", sender="ALPHA", text="while paused")
                await smsc.records.wait_for(1, timeout=10)
                health = await client.health()
                assert health["healthy"] is True
                assert health["carriers"]["maint"] == {"binds_up": 0, "binds": 0, "paused": True}
                metrics = await daemon.scrape_metrics()
                assert 'smppd_carrier_paused{carrier="maint"} 1.0' in metrics
                assert 'smppd_binds_configured{carrier="maint"} 0.0' in metrics
                assert 'smppd_carrier_paused{carrier="fake"} 0.0' in metrics
                assert maint.bound() == []
                config["carriers"][0]["paused"] = False
                path.write_text(yaml.safe_dump(config))
                seen = len(daemon.lines)
                daemon.signal(signal.SIGHUP)
                reloaded = await daemon.wait_log("configuration reloaded", since=seen)
                assert reloaded["carriers_restarted"] == ["maint"]
                await daemon.wait_log("bound", since=seen, carrier="maint")
                await client.submit(to="+447700900123", sender="ALPHA", text="unpaused")
                await maint.records.wait_for(1, timeout=10)
        finally:
            await daemon.stop()
    assert smsc.records.texts_to("447700900123") == ["while paused"]
    assert maint.records.texts_to("447700900123") == ["unpaused"]


async def test_pausing_a_carrier_by_reload_moves_its_queued_work_on_at_once() -> None:
    """A reload pauses a carrier whose window is full of unanswered submits and whose queue
    holds more: it unbinds, and every message goes out through the next carrier on the route
    within seconds, though the route fails over only after an hour."""
    async with smsc_and_dir() as (smsc, directory), FakeSmsc(SmscConfig(port=0)) as maint:
        path = write_config(directory, smsc.port)
        first = {
            "port": maint.port,
            "binds": 1,
            "window": 2,
            "response_timeout_s": 1,
            "unbind_timeout_s": 1,
        }
        config = _two_carriers(path, first)
        daemon = Daemon(path)
        await daemon.start()
        try:
            await daemon.wait_log("bound", carrier="maint")
            maint.set_faults(latency_s=60.0)  # answers nothing in time: its window stays full
            texts = [f"m {i}" for i in range(6)]
            async with Client(directory / "smppd.sock") as client:
                await client.submit_many(
                    [{"to": "+447700900123", "from": "ALPHA", "text": t} for t in texts]
                )
            await maint.records.wait_for(2, timeout=10, segments=True)
            config["carriers"][0]["paused"] = True
            path.write_text(yaml.safe_dump(config))
            daemon.signal(signal.SIGHUP)
            await daemon.wait_log("configuration reloaded")
            await smsc.records.wait_for(6, timeout=15)
            assert sorted(smsc.records.texts_to("447700900123")) == texts
        finally:
            await daemon.stop()


async def test_a_receipt_the_carrier_lost_is_found_with_query_sm() -> None:
    """The SMSC delivers but sends no receipt: with receipt_queries the daemon asks it with
    query_sm once after_s has passed, records the DELIVERED it answers as the receipt (the
    subscriber gets the receipt event) and counts the query as final."""
    smsc_config = SmscConfig(port=0, receipts=ReceiptConfig(lost=1.0))
    queries = {"receipt_queries": {"after_s": 0.5}}
    async with running(smsc_config, carrier=queries) as (smsc, daemon, directory):
        socket = directory / "smppd.sock"
        sub = await RawSubscriber.open(socket, ["receipt"])
        async with Client(socket) as client:
            sent = await client.submit(to="+447700900123", sender="ALPHA", text="lost receipt")
            await smsc.records.wait_for(1, timeout=10)
            event = await sub.next()
            assert (event["event"], event["id"], event["stat"]) == (
                "receipt",
                sent.message_id,
                "DELIVRD",
            )
            status = await client.status(sent.message_id)
            assert status["state"] == "delivered"
        sub.close()
        metrics = await daemon.scrape_metrics()
    assert 'smppd_receipt_queries_total{carrier="fake",result="final"} 1.0' in metrics
    assert 'smppd_receipts_total{carrier="fake",result="matched"}' not in metrics
