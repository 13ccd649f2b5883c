"""The daemon's wiring: segments claimed for a carrier a reload took away, carrier profiles."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from queue_support import CARRIER, message

from smppd.config import load_config
from smppd.daemon import Daemon, bind_settings, needs_restart, profiles, unowned_inbound_client
from smppd.outbound import prepare
from smppd.pdu.codec import decode_body
from smppd.pdu.command import CommandId
from smppd.pdu.pdus import SubmitSm
from smppd.pdu.receipt import receipt_keys, resp_keys
from smppd.pdu.status import CommandStatus, StatusClass, StatusPolicy
from smppd.queue import MemoryQueue, ReceiptIn, Submitted, open_queue
from smppd.queue.errors import QueueError, StorageFullError

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "smppd.yaml"


def segment_states(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [state for (state,) in db.execute("SELECT state FROM segments ORDER BY id")]
    finally:
        db.close()


async def test_segments_handed_to_a_carrier_without_a_send_loop_go_back_to_the_queue(
    tmp_path: Path,
) -> None:
    """An arrival claimed for sending at once whose carrier a reload removed (or is restarting)
    meanwhile is queued again on disk, not left in flight until the next start."""
    path = tmp_path / "queue.db"
    queue = await open_queue("sqlite", path)
    try:
        daemon = Daemon(load_config(SHIPPED), SHIPPED, queue)
        assert CARRIER not in daemon.carriers
        (enq,) = await queue.enqueue(
            [message(segments=(b"one", b"two"), send_now=True)], now=time.time()
        )
        assert len(enq.claimed) == 2
        assert segment_states(path) == ["inflight", "inflight"]
        daemon._send_loops.hand_over(CARRIER, enq.claimed)
        await daemon._send_loops.drain()
        assert segment_states(path) == ["queued", "queued"]
        again = await queue.claim(CARRIER, 10, now=time.time() + 1)
        assert [s.segment_id for s in again.segments] == [s.segment_id for s in enq.claimed]
    finally:
        await queue.close()


def test_each_carrier_profile_carries_its_receipt_setting(tmp_path: Path) -> None:
    """The carrier's `registered_delivery` reaches the profile that encodes its submits."""
    text = SHIPPED.read_text().replace(
        "registered_delivery: true ", "registered_delivery: false", 1
    )
    path = tmp_path / "smppd.yaml"
    path.write_text(text)
    config = load_config(path)
    assert [c.registered_delivery for c in config.carriers] == [False]
    assert [p.registered_delivery for p in profiles(config).values()] == [False]
    assert all(p.registered_delivery for p in profiles(load_config(SHIPPED)).values())


def test_a_carrier_that_concatenates_in_tlvs_says_so_to_its_binds(tmp_path: Path) -> None:
    """SAR and message_payload need TLVs, which the bind checks against the SMSC's version;
    UDH, the shipped default, needs none."""
    (shipped,) = load_config(SHIPPED).carriers
    assert bind_settings(shipped).needs_tlvs == ""
    for method in ("sar", "payload"):
        path = tmp_path / f"{method}.yaml"
        path.write_text(
            SHIPPED.read_text().replace("concatenation: udh8", f"concatenation: {method}", 1)
        )
        (carrier,) = load_config(path).carriers
        assert bind_settings(carrier).needs_tlvs == f"concatenation: {method}"


async def test_health_says_healthy_only_while_serving() -> None:
    """`healthy` is its own key: the reply's `ok` is whether the request succeeded."""
    daemon = Daemon(load_config(SHIPPED), SHIPPED, MemoryQueue())
    assert daemon.gateway.health()["healthy"] is False  # starting
    daemon.serving = True
    health = daemon.gateway.health()
    assert health["healthy"] is True
    assert "ok" not in health


class FailingStore(MemoryQueue):
    write_failure: QueueError | None = StorageFullError("queue storage: database or disk is full")


async def test_a_store_that_fails_its_writes_is_not_healthy() -> None:
    """Serving with every carrier up, but the disk full: every submit is refused, so the
    daemon is not healthy, says why, and smppd_queue_writable is 0; once a write commits,
    all is well again."""
    queue = FailingStore()
    daemon = Daemon(load_config(SHIPPED), SHIPPED, queue)
    daemon.serving = True
    health = daemon.gateway.health()
    assert (health["healthy"], health["storage"]) == (False, "storage_full")
    assert daemon.metrics_registry().get_sample_value("smppd_queue_writable") == 0.0
    queue.write_failure = None
    assert daemon.gateway.health()["storage"] == "ok"
    assert daemon.gateway.health()["healthy"] is True
    assert daemon.metrics_registry().get_sample_value("smppd_queue_writable") == 1.0


def test_every_api_limit_is_a_restart_key(tmp_path: Path) -> None:
    """The API server reads its limits when it starts: a reload that changes one says so."""
    text = SHIPPED.read_text()
    for key, value in [
        ("max_connections_per_client", "128"),
        ("max_pending_per_connection", "10000"),
        ("max_pending", "100000"),
    ]:
        assert f"  {key}: {value}\n" in text
        text = text.replace(f"  {key}: {value}\n", f"  {key}: 7\n")
    changed = tmp_path / "smppd.yaml"
    changed.write_text(text)
    restart = needs_restart(load_config(SHIPPED), load_config(changed))
    assert set(restart) >= {
        "api.max_connections_per_client",
        "api.max_pending_per_connection",
        "api.max_pending",
    }


def test_a_carrier_s_alternate_addresses_reach_its_binds(tmp_path: Path) -> None:
    """`alternates` reach the bind settings in order, IPv6 ones unbracketed, as host and port."""
    path = tmp_path / "smppd.yaml"
    path.write_text(
        SHIPPED.read_text().replace(
            "    port: 2775\n",
            '    port: 2775\n    alternates: ["10.0.0.2:2776", "[::1]:2777"]\n',
            1,
        )
    )
    (carrier,) = load_config(path).carriers
    assert bind_settings(carrier).alternates == (("10.0.0.2", 2776), ("::1", 2777))
    (shipped,) = load_config(SHIPPED).carriers
    assert bind_settings(shipped).alternates == ()
    assert bind_settings(shipped).reconnect.primary_after_s == 300
    path.write_text(
        SHIPPED.read_text().replace("primary_after_s: 300 ", "primary_after_s: null ", 1)
    )
    (staying,) = load_config(path).carriers
    assert bind_settings(staying).reconnect.primary_after_s is None


def test_a_carrier_s_service_type_goes_in_each_of_its_submits(tmp_path: Path) -> None:
    """`service_type` is written into every submit_sm body prepared for the carrier (and is
    part of the profile failover compares); the shipped one leaves it empty."""
    path = tmp_path / "smppd.yaml"
    path.write_text(SHIPPED.read_text().replace('service_type: ""', "service_type: CMT", 1))
    config = load_config(path)
    for wanted, cfg in (("CMT", config), ("", load_config(SHIPPED))):
        (profile,) = profiles(cfg).values()
        prepared = prepare(
            destination="+447700900123",
            source="SMPPD",
            text="a long text " * 20,
            encoding="auto",
            registered_delivery=True,
            expires_at=None,
            ref=7,
            profile=profile,
        )
        assert len(prepared.bodies) == 2
        for body in prepared.bodies:
            submit = decode_body(CommandId.submit_sm, 0, 1, body)
            assert isinstance(submit, SubmitSm)
            assert submit.service_type == wanted


def test_a_carrier_s_bind_address_reaches_its_binds(tmp_path: Path) -> None:
    """address_range, addr_ton and addr_npi go into the bind settings (the session test has
    them on the wire); the shipped config binds with none."""
    path = tmp_path / "smppd.yaml"
    path.write_text(
        SHIPPED.read_text().replace(
            '    # address_range: "12345"', '    address_range: "12345"\n    addr_ton: 3\n    #', 1
        )
    )
    (carrier,) = load_config(path).carriers
    settings = bind_settings(carrier)
    assert (settings.address_range, settings.addr_ton, settings.addr_npi) == ("12345", 3, 0)
    (shipped,) = load_config(SHIPPED).carriers
    assert bind_settings(shipped).address_range == ""


def test_the_client_of_unowned_inbound_is_the_one_that_says_so(tmp_path: Path) -> None:
    path = tmp_path / "smppd.yaml"
    path.write_text(
        SHIPPED.read_text().replace(
            "      # unowned_inbound: true", "      unowned_inbound: true", 1
        )
    )
    assert unowned_inbound_client(load_config(path)) == "demo"
    assert unowned_inbound_client(load_config(SHIPPED)) is None


def test_a_carrier_s_submit_statuses_reach_its_binds(tmp_path: Path) -> None:
    """Codes given as names or hex numbers become the binds' StatusPolicy."""
    path = tmp_path / "smppd.yaml"
    shipped = SHIPPED.read_text()
    listed = (
        "      temporary: [0x400, 1025]\n"
        "      permanent: [ESME_RSYSERR]\n"
        "      throttling: [0x458]\n"
    )
    start = shipped.index("      temporary: []")
    end = shipped.index("\n", shipped.index("      throttling: []")) + 1
    path.write_text(shipped[:start] + listed + shipped[end:])
    (carrier,) = load_config(path).carriers
    statuses = bind_settings(carrier).statuses
    assert statuses == StatusPolicy.of(
        temporary=[0x400, 0x401], permanent=[CommandStatus.ESME_RSYSERR], throttling=[0x458]
    )
    assert statuses.classify(CommandStatus.ESME_RSYSERR) is StatusClass.PERMANENT
    (shipped_carrier,) = load_config(SHIPPED).carriers
    assert bind_settings(shipped_carrier).statuses == StatusPolicy()


async def test_receipts_held_under_auto_keys_are_rekeyed_for_a_set_or_kept_format(
    tmp_path: Path,
) -> None:
    """The receipt "65" (0x41's) held under AUTO's keys: with message_id_format hex set, the
    daemon re-keys it, so that the resp 00000065 does not take it; with auto and nothing kept
    it stays (and is taken); with auto and hex kept by an earlier run it is re-keyed too."""
    held = ReceiptIn(receipt_keys("65"), "DELIVRD", "delivered", "000", None)
    path = tmp_path / "smppd.yaml"
    for written, kept, rekeyed in [
        ("hex", None, True),
        ("auto", None, False),
        ("auto", "hex", True),
    ]:
        path.write_text(
            SHIPPED.read_text().replace(
                "message_id_format: auto", f"message_id_format: {written}", 1
            )
        )
        config = load_config(path)
        queue = MemoryQueue()
        await queue.apply_receipts("fake", [held], now=time.time())
        daemon = Daemon(config, path, queue)
        if kept is not None:
            daemon._kept_id_formats = {"fake": kept}
        await daemon._rekey_by_format(config.carriers)
        (enq,) = await queue.enqueue([message(carrier="fake")], now=time.time())
        (segment,) = await queue.claim("fake", 1, now=time.time())
        await queue.record(
            [Submitted(segment.segment_id, resp_keys("00000065"), "0")], now=time.time()
        )
        status = await queue.status(enq.message_id, None)
        assert status is not None
        # Re-keyed, the receipt no longer goes to the message whose resp id is "65" as written.
        assert str(status.state) == ("submitted" if rekeyed else "delivered")
