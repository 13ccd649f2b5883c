"""The Prometheus alert rules: complete, written against the metrics the daemon exports and, where
promtool is installed, valid and firing (or staying quiet) on synthetic series."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

RULES = Path(__file__).resolve().parent.parent / "config" / "alerts.yml"

# What the metrics module exports: name -> its labels. Prometheus adds instance and job.
METRICS: dict[str, frozenset[str]] = {
    "smppd_binds_up": frozenset({"carrier"}),
    "smppd_binds_configured": frozenset({"carrier"}),
    "smppd_receiver_binds_up": frozenset({"carrier"}),
    "smppd_receiver_binds_configured": frozenset({"carrier"}),
    "smppd_submits_total": frozenset({"carrier", "status"}),
    "smppd_submit_latency_seconds_bucket": frozenset({"carrier", "le"}),
    "smppd_submit_latency_seconds_sum": frozenset({"carrier"}),
    "smppd_submit_latency_seconds_count": frozenset({"carrier"}),
    "smppd_window_in_use": frozenset({"carrier"}),
    "smppd_throttled_total": frozenset({"carrier"}),
    "smppd_throttling_answers_total": frozenset({"carrier"}),
    "smppd_reconnects_total": frozenset({"carrier", "reason"}),
    "smppd_queue_segments": frozenset({"state", "priority"}),
    "smppd_queue_oldest_age_seconds": frozenset(),
    "smppd_queue_depth": frozenset(),
    "smppd_queue_unrouted_segments": frozenset({"carrier"}),
    "smppd_queue_commit_seconds_bucket": frozenset({"le"}),
    "smppd_queue_commit_seconds_sum": frozenset(),
    "smppd_queue_commit_seconds_count": frozenset(),
    "smppd_outcome_commit_seconds_bucket": frozenset({"carrier", "le"}),
    "smppd_outcome_commit_seconds_sum": frozenset({"carrier"}),
    "smppd_outcome_commit_seconds_count": frozenset({"carrier"}),
    "smppd_late_acceptances_total": frozenset({"carrier"}),
    "smppd_receipts_total": frozenset({"carrier", "result"}),
    "smppd_receipts_held_ended_total": frozenset({"carrier", "result"}),
    "smppd_inbound_total": frozenset({"carrier"}),
    "smppd_delivery_seconds_bucket": frozenset({"carrier", "le"}),
    "smppd_delivery_seconds_sum": frozenset({"carrier"}),
    "smppd_delivery_seconds_count": frozenset({"carrier"}),
    "smppd_optouts_total": frozenset(),
    "smppd_api_requests_total": frozenset({"op", "result"}),
    "smppd_api_messages_total": frozenset({"result"}),
    "smppd_up": frozenset(),
    "smppd_queue_writable": frozenset(),
    "up": frozenset(),  # Prometheus' own, per scrape target
}
TARGET_LABELS = frozenset({"instance", "job"})

# PromQL words the rules may use besides metric names.
PROMQL_WORDS = frozenset(
    {"sum", "max", "min", "avg", "count", "rate", "increase", "absent", "histogram_quantile"}
    | {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"[A-Za-z_:][\w:]*")


def load_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    rules: list[dict[str, Any]] = []
    for group in document["groups"]:
        assert set(group) == {"name", "rules"}
        assert group["rules"], f"group {group['name']} is empty"
        rules.extend(group["rules"])
    return rules


def expression_names(expr: str) -> tuple[set[str], set[str], set[str]]:
    """Metric names, matcher labels (as `metric:label`) and grouping labels used in `expr`."""
    expr = _STRING.sub('""', expr)
    matched: set[str] = set()
    for name, body in _SELECTOR.findall(expr):
        matched |= {f"{name}:{label}" for label in _MATCHER_LABEL.findall(body)}
    expr = _SELECTOR.sub(lambda m: m[1] or "", expr)
    grouped: set[str] = set()
    for _, labels in _GROUPING.findall(expr):
        grouped |= {label.strip() for label in labels.split(",") if label.strip()}
    expr = _GROUPING.sub(" ", _RANGE.sub(" ", expr))
    return set(_IDENTIFIER.findall(expr)) - PROMQL_WORDS, matched, grouped


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    return load_rules()


def test_every_rule_is_a_complete_alert(rules: list[dict[str, Any]]) -> None:
    """Each rule names an alert, an expression, a hold time, a severity and its explanations."""
    assert len(rules) >= 8
    for rule in rules:
        name = rule.get("alert")
        assert isinstance(name, str), rule
        assert re.fullmatch(r"Smppd[A-Z]\w+", name), name
        assert isinstance(rule.get("expr"), str), name
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for"))), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        for key in ("summary", "description", "runbook"):
            assert isinstance(annotations.get(key), str), f"{name}: {key}"
            assert annotations[key].strip(), f"{name}: {key}"
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names repeat"


def test_expressions_use_only_exported_metrics(rules: list[dict[str, Any]]) -> None:
    """Every name in an expression is a metric the daemon exports (or a PromQL word), and every
    label matched or grouped on is one those metrics carry."""
    for rule in rules:
        metrics, matched, grouped = expression_names(rule["expr"])
        assert metrics, f"{rule['alert']}: no metric"
        assert metrics <= METRICS.keys(), f"{rule['alert']}: {sorted(metrics - METRICS.keys())}"
        for pair in matched:
            metric, label = pair.split(":")
            assert label in METRICS[metric] | TARGET_LABELS, f"{rule['alert']}: {pair}"
        carried = set().union(*(METRICS[m] for m in metrics)) | TARGET_LABELS
        assert grouped <= carried, f"{rule['alert']}: {sorted(grouped - carried)}"


def test_the_expression_parser_sees_foreign_names() -> None:
    """The name check would catch a metric outside the list, and a label it does not carry."""
    metrics, matched, grouped = expression_names(
        'sum by (carrier, node) (rate(up{job="x", carrier=~"a|b"}[5m])) > 0 and smppd_up'
    )
    assert metrics == {"up", "smppd_up"}
    assert matched == {"up:job", "up:carrier"}
    assert grouped == {"carrier", "node"}


def test_required_alerts_are_present(rules: list[dict[str, Any]]) -> None:
    """Binds, queue age, errors, throttling, receipts, reconnects and absence are all watched."""
    by_name = {rule["alert"]: rule for rule in rules}
    assert by_name["SmppdCarrierDown"]["labels"]["severity"] == "critical"
    assert by_name["SmppdCarrierDegraded"]["labels"]["severity"] == "warning"
    assert by_name["SmppdQueueOldestWarning"]["labels"]["severity"] == "warning"
    assert by_name["SmppdQueueOldestCritical"]["labels"]["severity"] == "critical"
    assert "absent(smppd_up)" in by_name["SmppdDown"]["expr"]
    for name in (
        "SmppdSubmitErrorRatioHigh",
        "SmppdThrottlingSustained",
        "SmppdReceiptsUnmatched",
        "SmppdReceiptsStopped",
        "SmppdDeliverySlow",
        "SmppdReconnectStorm",
        "SmppdResponseTimeoutTooShort",
        "SmppdQueuedForRemovedCarrier",
        "SmppdStoreCommitsSlow",
        "SmppdStorageFailing",
    ):
        assert name in by_name
    assert all(case["alertname"] in by_name for case in CASES)
    assert {case["alertname"] for case in CASES if case["exp_alerts"]} == set(by_name)


# --- behaviour on synthetic series, run by promtool where it is installed -----------------------


def series(name: str, values: str) -> dict[str, str]:
    return {"series": name, "values": values}


def alert(alertname: str, at: str, *firing: dict[str, str]) -> dict[str, Any]:
    return {
        "alertname": alertname,
        "eval_time": at,
        "exp_alerts": [{"exp_labels": labels} for labels in firing],
    }


CRITICAL = {"severity": "critical"}
WARNING = {"severity": "warning"}

# Each scenario: series sampled every minute, and the alerts expected at given times.
SCENARIOS: list[tuple[list[dict[str, str]], list[dict[str, Any]]]] = [
    (  # daemon never scraped, then an instance that reports itself not running
        [series('smppd_up{instance="b"}', "_x3 0x10")],
        [
            alert("SmppdDown", "2m", CRITICAL),
            alert("SmppdDown", "4m"),
            alert("SmppdDown", "5m", {**CRITICAL, "instance": "b"}),
        ],
    ),
    (  # two instances serve; then c stops answering scrapes while b goes on
        [
            series('smppd_up{instance="b",job="smppd"}', "1x10"),
            series('up{instance="b",job="smppd"}', "1x10"),
            series('smppd_up{instance="c",job="smppd"}', "1x3"),
            series('up{instance="c",job="smppd"}', "1x3 0x7"),
        ],
        [
            alert("SmppdDown", "5m"),
            alert("SmppdDown", "7m", {**CRITICAL, "instance": "c", "job": "smppd"}),
        ],
    ),
    (  # the disk filled up: every submit refused with storage_full (submit_many's included,
        # which answer ok as requests)
        [
            series('smppd_api_messages_total{result="storage_full"}', "0+30x10"),
            series('smppd_api_messages_total{result="ok"}', "0+300x10"),
            series('smppd_api_requests_total{op="submit_many",result="ok"}', "0+3x10"),
        ],
        [alert("SmppdApiRefusingSubmits", "5m", {**CRITICAL, "result": "storage_full"})],
    ),
    (  # another process holds the database: submits fail with storage_error, and so does
        # every write; b's store failed for a minute only
        [
            series('smppd_api_messages_total{result="storage_error"}', "0+30x10"),
            series('smppd_queue_writable{instance="a"}', "1 0x9"),
            series('smppd_queue_writable{instance="b"}', "1 0 1x8"),
        ],
        [
            alert("SmppdApiRefusingSubmits", "5m", {**CRITICAL, "result": "storage_error"}),
            alert("SmppdStorageFailing", "2m"),
            alert("SmppdStorageFailing", "4m", {**CRITICAL, "instance": "a"}),
        ],
    ),
    (  # carrier a lost both binds; b runs one of two; c is whole
        [
            series('smppd_binds_up{carrier="a"}', "2 2 0x30"),
            series('smppd_binds_configured{carrier="a"}', "2x32"),
            series('smppd_binds_up{carrier="b"}', "1x30"),
            series('smppd_binds_configured{carrier="b"}', "2x30"),
            series('smppd_binds_up{carrier="c"}', "2x30"),
            series('smppd_binds_configured{carrier="c"}', "2x30"),
        ],
        [
            alert("SmppdCarrierDown", "3m"),
            alert("SmppdCarrierDown", "4m", {**CRITICAL, "carrier": "a"}),
            alert("SmppdCarrierDegraded", "9m"),
            alert("SmppdCarrierDegraded", "10m", {**WARNING, "carrier": "b"}),
        ],
    ),
    (  # a's receiver bind is down for good, b's comes back within the hold time
        [
            series('smppd_receiver_binds_up{carrier="a"}', "1 1 0x30"),
            series('smppd_receiver_binds_configured{carrier="a"}', "1x32"),
            series('smppd_receiver_binds_up{carrier="b"}', "1 0 0 0 1x30"),
            series('smppd_receiver_binds_configured{carrier="b"}', "1x34"),
        ],
        [
            alert("SmppdReceiversDown", "6m"),
            alert("SmppdReceiversDown", "7m", {**CRITICAL, "carrier": "a"}),
        ],
    ),
    (  # a: 9% system errors; b: heavy throttling but no errors (most of it answers to submits
        # sent before the bind slowed down, which smppd_throttled_total leaves out); c: errors
        # on too little traffic; d: throttling in a vendor code of its own (submit_statuses);
        # e: throttling on too little traffic (one submit a minute)
        [
            series('smppd_submits_total{carrier="a",status="ESME_ROK"}', "0+100x30"),
            series('smppd_submits_total{carrier="a",status="ESME_RSYSERR"}', "0+10x30"),
            series('smppd_throttling_answers_total{carrier="a"}', "0x30"),
            series('smppd_submits_total{carrier="b",status="ESME_ROK"}', "0+100x30"),
            series('smppd_submits_total{carrier="b",status="ESME_RTHROTTLED"}', "0+30x30"),
            series('smppd_submits_total{carrier="b",status="ESME_RMSGQFUL"}', "0+20x30"),
            series('smppd_throttling_answers_total{carrier="b"}', "0+50x30"),
            series('smppd_throttled_total{carrier="b"}', "0+2x30"),
            series('smppd_submits_total{carrier="c",status="ESME_ROK"}', "0+1x30"),
            series('smppd_submits_total{carrier="c",status="unknown"}', "0+1x30"),
            series('smppd_throttling_answers_total{carrier="c"}', "0x30"),
            series('smppd_submits_total{carrier="d",status="ESME_ROK"}', "0+100x30"),
            series('smppd_submits_total{carrier="d",status="0x00000458"}', "0+40x30"),
            series('smppd_throttling_answers_total{carrier="d"}', "0+40x30"),
            series('smppd_submits_total{carrier="e",status="ESME_ROK"}', "0+1x30"),
            series('smppd_submits_total{carrier="e",status="ESME_RMSGQFUL"}', "0+0.1x30"),
            series('smppd_throttling_answers_total{carrier="e"}', "0+0.1x30"),
        ],
        [
            alert("SmppdSubmitErrorRatioHigh", "20m", {**WARNING, "carrier": "a"}),
            alert("SmppdThrottlingSustained", "10m"),
            alert(
                "SmppdThrottlingSustained",
                "25m",
                {**WARNING, "carrier": "b"},
                {**WARNING, "carrier": "d"},
            ),
        ],
    ),
    (  # a flaps with binds up; b is down and retrying, which is SmppdCarrierDown's business;
        # d takes one bind of two and refuses the other once a minute (SmppdCarrierDegraded's)
        [
            series('smppd_reconnects_total{carrier="a",reason="enquire_link_timeout"}', "0+1x40"),
            series('smppd_binds_up{carrier="a"}', "1x40"),
            series('smppd_reconnects_total{carrier="b",reason="connect_failed"}', "0+1x40"),
            series('smppd_binds_up{carrier="b"}', "0x40"),
            series('smppd_reconnects_total{carrier="d",reason="bind_refused"}', "0+1x40"),
            series('smppd_binds_up{carrier="d"}', "1x40"),
        ],
        [alert("SmppdReconnectStorm", "30m", {**WARNING, "carrier": "a"})],
    ),
    (  # a: 5% of submits accepted after their timeout; b: 0.5%; c: all late, on little traffic
        [
            series('smppd_submits_total{carrier="a",status="ESME_ROK"}', "0+95x40"),
            series('smppd_submits_total{carrier="a",status="unknown"}', "0+5x40"),
            series('smppd_late_acceptances_total{carrier="a"}', "0+5x40"),
            series('smppd_submits_total{carrier="b",status="ESME_ROK"}', "0+199x40"),
            series('smppd_submits_total{carrier="b",status="unknown"}', "0+1x40"),
            series('smppd_late_acceptances_total{carrier="b"}', "0+1x40"),
            series('smppd_submits_total{carrier="c",status="unknown"}', "0+1x40"),
            series('smppd_late_acceptances_total{carrier="c"}', "0+1x40"),
        ],
        [
            alert("SmppdResponseTimeoutTooShort", "10m"),
            alert("SmppdResponseTimeoutTooShort", "30m", {**WARNING, "carrier": "a"}),
        ],
    ),
    (  # a third of a's receipts match nothing; b's all match; e's cannot be read
        [
            series('smppd_receipts_total{carrier="a",result="matched"}', "0+10x80"),
            series('smppd_receipts_total{carrier="a",result="unmatched"}', "0+5x80"),
            series('smppd_receipts_total{carrier="b",result="matched"}', "0+10x80"),
            series('smppd_receipts_total{carrier="b",result="held"}', "0+1x80"),
            series('smppd_receipts_total{carrier="e",result="matched"}', "0+10x80"),
            series('smppd_receipts_total{carrier="e",result="unparseable"}', "0+10x80"),
        ],
        [
            alert("SmppdReceiptsUnmatched", "20m"),
            alert(
                "SmppdReceiptsUnmatched",
                "70m",
                {**WARNING, "carrier": "a"},
                {**WARNING, "carrier": "e"},
            ),
        ],
    ),
    (  # c's receipts are all held on arrival: half later match, half outlive the hold or
        # are pushed out; d's are held and all match
        [
            series('smppd_receipts_total{carrier="c",result="held"}', "0+10x80"),
            series('smppd_receipts_held_ended_total{carrier="c",result="matched"}', "0+5x80"),
            series('smppd_receipts_held_ended_total{carrier="c",result="unmatched"}', "0+3x80"),
            series('smppd_receipts_held_ended_total{carrier="c",result="dropped"}', "0+2x80"),
            series('smppd_receipts_total{carrier="d",result="held"}', "0+10x80"),
            series('smppd_receipts_held_ended_total{carrier="d",result="matched"}', "0+10x80"),
        ],
        [
            alert("SmppdReceiptsUnmatched", "20m"),
            alert("SmppdReceiptsUnmatched", "70m", {**WARNING, "carrier": "c"}),
        ],
    ),
    (  # a's receipts stop at 50 m while it goes on accepting; b never sends receipts; c's
        # go on; d's stop with its traffic
        [
            series('smppd_submits_total{carrier="a",status="ESME_ROK"}', "0+100x120"),
            series('smppd_receipts_total{carrier="a",result="matched"}', "0+100x50 5000x70"),
            series('smppd_submits_total{carrier="b",status="ESME_ROK"}', "0+100x120"),
            series('smppd_submits_total{carrier="c",status="ESME_ROK"}', "0+100x120"),
            series('smppd_receipts_total{carrier="c",result="matched"}', "0+100x120"),
            series('smppd_submits_total{carrier="d",status="ESME_ROK"}', "0+100x50 5000x70"),
            series('smppd_receipts_total{carrier="d",result="matched"}', "0+100x50 5000x70"),
        ],
        [
            alert("SmppdReceiptsStopped", "75m"),
            alert("SmppdReceiptsStopped", "90m"),  # held for 15 m first
            alert("SmppdReceiptsStopped", "110m", {**WARNING, "carrier": "a"}),
        ],
    ),
    (  # a delivers most messages 10-30 minutes after accepting them; b within seconds; c is
        # as slow as a but delivers too few for the median to mean much
        [
            *(
                series(f'smppd_delivery_seconds_bucket{{carrier="{carrier}",le="{le}"}}', values)
                for carrier, buckets in (
                    ("a", (("5.0", "0+20x90"), ("600.0", "0+40x90"), ("1800.0", "0+200x90"))),
                    ("b", (("5.0", "0+200x90"), ("600.0", "0+200x90"), ("1800.0", "0+200x90"))),
                    ("c", (("5.0", "0x90"), ("600.0", "0x90"), ("1800.0", "0+1x90"))),
                )
                for le, values in (*buckets, ("+Inf", buckets[-1][1]))
            ),
            series('smppd_delivery_seconds_count{carrier="a"}', "0+200x90"),
            series('smppd_delivery_seconds_count{carrier="b"}', "0+200x90"),
            series('smppd_delivery_seconds_count{carrier="c"}', "0+1x90"),
        ],
        [
            alert("SmppdDeliverySlow", "20m"),  # held for 30 m first
            alert("SmppdDeliverySlow", "60m", {**WARNING, "carrier": "a"}),
        ],
    ),
    (  # the oldest queued message ages a minute per minute
        [series("smppd_queue_oldest_age_seconds", "0+60x60")],
        [
            alert("SmppdQueueOldestWarning", "7m"),
            alert("SmppdQueueOldestWarning", "8m", WARNING),
            alert("SmppdQueueOldestCritical", "35m"),
            alert("SmppdQueueOldestCritical", "36m", CRITICAL),
        ],
    ),
    (  # a reload removed carrier x with 3 segments queued; y was added back within minutes
        [
            series('smppd_queue_unrouted_segments{carrier="x"}', "_x2 3x20"),
            series('smppd_queue_unrouted_segments{carrier="y"}', "4x3 0x20"),
        ],
        [
            alert("SmppdQueuedForRemovedCarrier", "6m"),
            alert("SmppdQueuedForRemovedCarrier", "8m", {**WARNING, "carrier": "x"}),
        ],
    ),
    (  # a's disk takes 250-500 ms a commit; b commits in under 10 ms
        [
            series('smppd_queue_commit_seconds_bucket{instance="a",le="0.01"}', "0x30"),
            series('smppd_queue_commit_seconds_bucket{instance="a",le="0.25"}', "0+1x30"),
            series('smppd_queue_commit_seconds_bucket{instance="a",le="0.5"}', "0+100x30"),
            series('smppd_queue_commit_seconds_bucket{instance="a",le="+Inf"}', "0+100x30"),
            series('smppd_queue_commit_seconds_bucket{instance="b",le="0.01"}', "0+100x30"),
            series('smppd_queue_commit_seconds_bucket{instance="b",le="0.25"}', "0+100x30"),
            series('smppd_queue_commit_seconds_bucket{instance="b",le="0.5"}', "0+100x30"),
            series('smppd_queue_commit_seconds_bucket{instance="b",le="+Inf"}', "0+100x30"),
        ],
        [
            alert("SmppdStoreCommitsSlow", "8m"),
            alert("SmppdStoreCommitsSlow", "15m", {**WARNING, "instance": "a"}),
        ],
    ),
]
CASES = [case for _, cases in SCENARIOS for case in cases]


def test_promtool_checks_and_fires_the_rules(tmp_path: Path) -> None:
    """promtool, where installed, accepts the rules and each scenario fires exactly the alerts
    expected of it: right labels, right hold times, and silence where the rule must not fire."""
    # On the PATH, or in the venv (`make promtool` puts it there).
    promtool = shutil.which("promtool") or shutil.which(
        "promtool", path=str(Path(sys.executable).parent)
    )
    assert promtool is not None, "promtool is not installed: `make promtool` puts it in the venv"
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in checked.stdout

    # promtool compares annotations too; the rendered prose is not what these tests are about.
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    rules_copy = tmp_path / "alerts.yml"
    rules_copy.write_text(yaml.safe_dump(document))
    spec = {
        "rule_files": [str(rules_copy)],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": inputs, "alert_rule_test": cases}
            for inputs, cases in SCENARIOS
        ],
    }
    spec_file = tmp_path / "alerts_test.yml"
    spec_file.write_text(yaml.safe_dump(spec))
    tested = subprocess.run(
        [promtool, "test", "rules", str(spec_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
