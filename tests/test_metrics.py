"""What /metrics shows: bounded label values, smppd_up, the process' own series."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from queue_support import CARRIER, T0, message

from smppd.config import load_config
from smppd.daemon import Daemon
from smppd.metrics import DAEMON_COUNTERS, CarrierObserver
from smppd.pdu.status import StatusClass, status_label
from smppd.queue import MemoryQueue
from smppd.session import State, SubmitResult

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "smppd.yaml"


def samples(daemon: Daemon) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = generate_latest(daemon.metrics_registry()).decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def test_status_labels_are_bounded_whatever_the_peer_sends() -> None:
    """Spec names, the 256 reserved vendor codes in hex, and one "other" for the rest: an
    SMSC answering random codes cannot grow the series without end."""
    observer = CarrierObserver("fake")
    rng = random.Random(7)
    for _ in range(2000):
        code = rng.randrange(0x500, 2**32)
        observer.submit_ended("0", SubmitResult(None, code, StatusClass.PERMANENT), 0.01)
        observer.bind_failed("0", code, True)
    observer.submit_ended("0", SubmitResult(None, 0x58, StatusClass.TEMPORARY), 0.01)
    observer.submit_ended("0", SubmitResult(None, 0x401, StatusClass.PERMANENT), 0.01)
    assert dict(observer.submits) == {"other": 2000, "ESME_RTHROTTLED": 1, "0x00000401": 1}
    assert observer.throttling_answers == 0  # by the result's reading, not by the code
    throttling = SubmitResult(None, 0x458, StatusClass.TEMPORARY, throttling=True)
    observer.submit_ended("0", throttling, 0.01)
    assert observer.throttling_answers == 1
    assert dict(observer.bind_failures) == {"other": 2000}
    assert status_label(0x4FF) == "0x000004FF"
    assert status_label(0x500) == "other"


async def test_smppd_up_is_one_only_while_serving_and_process_series_are_there() -> None:
    daemon = Daemon(load_config(SHIPPED), SHIPPED, MemoryQueue())
    assert samples(daemon)["smppd_up"] == [({}, 0.0)]  # starting
    daemon.serving = True
    found = samples(daemon)
    assert found["smppd_up"] == [({}, 1.0)]
    (rss,) = found["process_resident_memory_bytes"]
    assert rss[1] > 1_000_000
    assert "process_cpu_seconds_total" in found
    assert "process_start_time_seconds" in found


def test_api_messages_are_counted_by_result() -> None:
    daemon = Daemon(load_config(SHIPPED), SHIPPED, MemoryQueue())
    daemon.api_counts.messages_finished(["ok", "queue_full", "ok"])
    found = samples(daemon)["smppd_api_messages_total"]
    assert sorted(found, key=lambda s: s[0]["result"]) == [
        ({"result": "ok"}, 2.0),
        ({"result": "queue_full"}, 1.0),
    ]


async def test_queue_segments_are_shown_per_carrier_after_a_refresh() -> None:
    """Which carrier holds the backlog, from the same stats the other queue gauges read."""
    queue = MemoryQueue()
    daemon = Daemon(load_config(SHIPPED), SHIPPED, queue)
    await queue.enqueue([message(carrier="a"), message(carrier="a"), message(carrier="b")], now=T0)
    await queue.claim("b", 1, now=T0)
    await daemon._refresh_stats(T0)
    found = samples(daemon)["smppd_queue_carrier_segments"]
    assert sorted((labels["carrier"], labels["state"], n) for labels, n in found) == [
        ("a", "queued", 2.0),
        ("b", "inflight", 1.0),
    ]
    ages = samples(daemon)["smppd_queue_carrier_oldest_age_seconds"]
    assert ages == [({"carrier": "a"}, 0.0)]  # b's only message is in flight, not waiting


async def test_each_clients_unsent_segments_are_shown_after_a_refresh() -> None:
    """smppd_queue_client_depth: which client holds the backlog (against its max_queued)."""
    queue = MemoryQueue()
    daemon = Daemon(load_config(SHIPPED), SHIPPED, queue)
    await queue.enqueue([message(), message(segments=(b"a", b"b")), message("crm")], now=T0)
    await queue.claim(CARRIER, 1, now=T0)
    await daemon._refresh_stats(T0)
    found = samples(daemon)["smppd_queue_client_depth"]
    assert sorted((labels["client"], n) for labels, n in found) == [("crm", 1.0), ("otp", 3.0)]


def test_every_extra_counter_is_exported_with_total() -> None:
    daemon = Daemon(load_config(SHIPPED), SHIPPED, MemoryQueue())
    found = samples(daemon)
    for name in daemon._extra_counters():
        assert f"smppd_{name}_total" in found, name
    assert "smppd_inbound_unowned_total" in found


def test_api_request_latency_is_a_histogram() -> None:
    daemon = Daemon(load_config(SHIPPED), SHIPPED, MemoryQueue())
    daemon.api_counts.request_finished("submit", "ok", 0.004)
    daemon.api_counts.request_finished("status", "ok", 0.2)
    found = samples(daemon)
    assert found["smppd_api_request_seconds_count"] == [({}, 2.0)]
    assert found["smppd_api_request_seconds_sum"][0][1] == pytest.approx(0.204)
    buckets = {labels["le"]: n for labels, n in found["smppd_api_request_seconds_bucket"]}
    assert buckets["+Inf"] == 2.0
    assert min(n for n in buckets.values()) <= 1.0


def test_every_daemon_counter_has_its_own_help_text() -> None:
    daemon = Daemon(load_config(SHIPPED), SHIPPED, MemoryQueue())
    assert set(daemon._extra_counters()) == set(DAEMON_COUNTERS)
    text = generate_latest(daemon.metrics_registry()).decode()
    for name, help_text in DAEMON_COUNTERS.items():
        assert f"# HELP smppd_{name}_total {help_text}\n" in text


def test_receiver_binds_are_counted_apart_from_the_binds_that_send() -> None:
    """A transmitter bound and a receiver bound: one of each, so that a carrier whose
    transmitters are all down reads as down however its receivers fare."""
    observer = CarrierObserver("fake")
    observer.state_changed("0", State.BOUND_TX)
    observer.state_changed("1", State.CLOSED)
    observer.state_changed("rx0", State.BOUND_RX)
    assert (observer.binds_up, observer.receivers_up) == (1, 1)
    observer.state_changed("0", State.CLOSED)
    assert (observer.binds_up, observer.receivers_up) == (0, 1)
