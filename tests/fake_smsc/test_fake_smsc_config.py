"""Scenario files and fault parsing of the fake SMSC."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from smppd.pdu.segment import ConcatMethod
from smppd.pdu.status import CommandStatus as S
from smppd.pdu.text import Alphabet
from tools.fake_smsc import Account, Faults, IdFormat, Reorder, SmscConfig, load_scenario
from tools.fake_smsc.config import ConfigError
from tools.fake_smsc.faults import SlidingCounter, parse_status

SHIPPED = Path(__file__).parents[2] / "tools" / "fake_smsc" / "scenarios" / "flaky_carrier.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return path


def test_the_shipped_scenario_loads() -> None:
    """The example scenario is valid and means what it says."""
    config = load_scenario(SHIPPED)
    assert config.accounts == (Account(max_binds=2),)
    assert config.receipts.id_format is IdFormat.DECIMAL
    assert config.receipts.outcomes["DELIVRD"] == 90
    assert config.faults.latency_s == (0.002, 0.02)
    assert config.faults.submit_errors[S.ESME_RTHROTTLED] == 0.01
    assert config.faults.window_status == S.ESME_RMSGQFUL
    assert (config.host, config.port) == ("127.0.0.1", 2775)


def test_every_section_is_read(tmp_path: Path) -> None:
    """Scalars, accounts, enums, receipts and faults all apply on top of the base."""
    config = load_scenario(
        write(
            tmp_path,
            """
port: 0
system_id: carrier
accounts: [{system_id: a, password: b}, {system_id: c, password: d, max_binds: 1}]
message_id_format: decimal
message_id_start: 1000
default_alphabet: latin1
mo_concatenation: sar
record_in_memory: false
record_path: out.jsonl
control: "0"
receipts: {before_resp: true, duplicate: true}
faults: {hang: true, reorder: shuffle, garbage: "00ff", drop_after_pdus: 5}
""",
        ),
    )
    assert config.port == 0
    assert config.system_id == "carrier"
    assert [a.system_id for a in config.accounts] == ["a", "c"]
    assert config.message_id_format is IdFormat.DECIMAL
    assert config.default_alphabet is Alphabet.LATIN1
    assert config.mo_concatenation is ConcatMethod.SAR
    assert config.record_path == Path("out.jsonl")
    assert config.control == "0"
    assert not config.record_in_memory
    assert config.receipts.before_resp
    assert config.receipts.duplicate
    assert config.faults.reorder is Reorder.SHUFFLE
    assert config.faults.garbage == b"\x00\xff"
    assert config.faults.drop_after_pdus == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour: blue", "unknown key 'colour'"),
        ("receipts: {delay: 1}", "unknown key 'receipts.delay'"),
        ("faults: {slowness: 1}", "unknown fault knob 'faults.slowness'"),
        ("accounts: [{system_id: a, pasword: b}]", "unknown key 'accounts.pasword'"),
        ("port: eighty", "port: expected int"),
        ("receipts: {outcomes: {DELIVERED: 1}}", "unknown stat 'DELIVERED'"),
        (
            "faults: {submit_errors: {ESME_RNOPE: 0.1}}",
            "faults.submit_errors: unknown command_status name",
        ),
        ("accounts: []", "at least one account"),
        ("- a list", "a scenario is a mapping"),
        ("faults: {window: 0}", "faults.window must be at least 1"),
        ("faults: {reorder: sideways}", "faults.reorder: expected one of reverse, shuffle or null"),
        ("faults: {garbage: 12}", "faults.garbage: expected a hex string, got 12"),
        ("faults: {garbage: xyz}", "faults.garbage: expected a hex string, got 'xyz'"),
        ("faults: {window_status: 1.5}", "faults.window_status: not a command_status"),
        ("faults: {hang: true\nport: 0", "not valid YAML: line 2, column 5: expected ',' or '}'"),
        ("accounts: [{system_id: '', password: b}]", "system_id is 1 to 15 characters"),
        ("accounts: [{system_id: a, password: ninechars}]", "password at most 8"),
        ("message_id_format: octal", "message_id_format: expected one of hex, decimal"),
        ("receipts: {outcomes: {DELIVRD: x}}", "receipts.outcomes.DELIVRD: expected a number"),
        ("receipts: {lost: 2}", "lost must be a share from 0 to 1"),
        (
            "receipts: {outcomes: {DELIVRD: .inf, UNDELIV: 1}}",
            "receipts.outcomes.DELIVRD: a weight is a finite number >= 0, not inf",
        ),
        ("receipts: {outcomes: {DELIVRD: .nan}}", "receipts.outcomes.DELIVRD: a weight is a"),
        ("receipts: {delay_s: .nan}", "receipts.delay_s must be a finite number >= 0"),
        ("receipts: {retry_timeout_s: .inf}", "receipts.retry_timeout_s must be a finite"),
        ("faults: {latency_s: .nan}", "latency_s must be a finite number >= 0"),
        ("faults: {latency_s: [0, .inf]}", "latency_s must be a finite number >= 0"),
        ("faults: {tps_limit: .nan}", "tps_limit must be a finite number of at least 1"),
        ("faults: {submit_errors: {ESME_RTHROTTLED: .nan}}", "submit_errors fractions"),
        ("faults: {reorder_hold_s: .nan}", "reorder_hold_s finite and > 0"),
        ("max_tracked_messages: 0", "max_tracked_messages must be at least 1"),
        ("max_command_length: 8", "max_command_length must be at least 16"),
        ("record_path: 5", "record_path: expected a file path or null, got 5"),
        ("control: true", "control: expected a port, a socket path or null, got True"),
        ("control: 7001.5", "control: expected a port, a socket path or null, got 7001.5"),
        ("faults: " + "[" * 5000 + "]" * 5000, "not valid YAML: nested too deep"),
        ("port: 2024-02-30", "not valid YAML: day is out of range for month"),
        (
            "accounts:\n  - system_id: a\n    password: !S3cr3t\n",
            "for the tag <redacted>",  # and never the password
        ),
    ],
)
def test_bad_scenarios_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    """A bad key or value is a ConfigError naming the file and what is wrong."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_scenario_file(tmp_path: Path) -> None:
    """An unreadable file is a ConfigError too."""
    with pytest.raises(ConfigError, match="cannot read scenario"):
        load_scenario(tmp_path / "absent.yaml")


def test_statuses_by_number_or_name() -> None:
    """Statuses are given as ints, hex or decimal strings, or spec names."""
    assert parse_status(0x58) == parse_status("0x58") == parse_status("88") == S.ESME_RTHROTTLED
    assert parse_status("esme_rmsgqful") == S.ESME_RMSGQFUL
    with pytest.raises(ValueError, match="32 bits"):
        parse_status(1 << 32)


def test_faults_serialise_to_json_values() -> None:
    """to_json gives values the control interface can send and `update` read back."""
    faults = Faults(latency_s=(0.1, 0.2), submit_errors={0x58: 0.5}, reorder=Reorder.REVERSE)
    copy = Faults()
    copy.update(faults.to_json())
    assert copy == faults


def test_sliding_counter_allows_the_limit_over_any_second() -> None:
    """At most `limit` events in any one-second span, whatever the tick alignment."""
    counter = SlidingCounter()
    assert [counter.allow(2, now=t) for t in (0.0, 0.5, 0.9, 1.0, 1.4, 1.6)] == [
        True,
        True,
        False,
        True,  # the event at 0.0 left the window
        False,
        True,
    ]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"control": "99999"}, "control: a port is 0..65535"),
        ({"message_id_start": -3}, "message_id_start must be 0 or more"),
    ],
)
def test_config_check_rejects_what_cannot_be(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        replace(SmscConfig(), **changes).check()


def test_config_check_rejects_duplicates() -> None:
    """Two accounts with one system_id are refused."""
    with pytest.raises(ValueError, match="unique"):
        SmscConfig(accounts=(Account(), Account())).check()
