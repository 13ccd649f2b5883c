"""smppd.config: the shipped file, each class of error, secrets, paths, repr and config_diff."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from smppd import config as config_module
from smppd.config import (
    EX_CONFIG,
    ApiClient,
    ApiConfig,
    BindMode,
    Config,
    ConfigError,
    HostPort,
    SenderKind,
    config_diff,
    load_config,
)
from smppd.errors import SmppdError

SHIPPED = Path(__file__).resolve().parents[1] / "config" / "smppd.yaml"

BASE: dict[str, Any] = {
    "api": {"clients": [{"name": "svc", "uids": [1000]}]},
    "carriers": [
        {"name": "alpha", "host": "smsc.example.net", "system_id": "acme", "password": "pw1"},
        {"name": "beta", "host": "smsc.example.org", "system_id": "acme", "password": "pw2"},
    ],
    "routes": [{"prefix": "", "carriers": ["alpha", "beta"]}],
    "senders": [{"id": "ACME", "client": "svc"}],
}


def write(directory: Path, data: object, name: str = "smppd.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return path


def variant(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    change(data)
    return data


def error_of(path: Path, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)
    return str(info.value)


# --- the shipped config ---------------------------------------------------------------------------


def test_shipped_config_loads_and_targets_the_fake_smsc() -> None:
    """config/smppd.yaml loads as is and points at the bundled fake SMSC's defaults."""
    config = load_config(SHIPPED, environ={})
    (fake,) = config.carriers
    assert (fake.name, fake.host, fake.port) == ("fake", "127.0.0.1", 2775)
    assert (fake.system_id, fake.password) == ("smppd", "secret")
    assert (fake.bind_mode, fake.binds, fake.window, fake.tps) == (
        BindMode.TRANSCEIVER,
        2,
        100,
        5000.0,
    )
    assert [(r.prefix, r.carriers) for r in config.routes] == [("", ("fake",))]
    repo = SHIPPED.parents[1]
    assert config.queue.path == repo / "var" / "smppd.db"
    assert config.api.socket == repo / "var" / "smppd.sock"
    assert config.api.mode == 0o660
    assert config.metrics.listen == HostPort("127.0.0.1", 9470)
    (demo,) = config.api.clients
    assert demo.any_uid
    assert demo.uids == ()
    assert demo.senders == ("SMPPD", "12345")
    assert {s.id: s.kind for s in config.senders} == {
        "SMPPD": SenderKind.ALPHA,
        "12345": SenderKind.SHORT,
    }


def test_ex_config_is_sysexits_value() -> None:
    """The CLI's exit status for a bad config is EX_CONFIG from sysexits.h."""
    assert EX_CONFIG == 78


def test_defaults_fill_sections_left_out(tmp_path: Path) -> None:
    """A config naming only carriers, routes and clients gets documented defaults elsewhere."""
    config = load_config(write(tmp_path, BASE))
    assert config.queue.path == Path("/var/lib/smppd/smppd.db")
    assert config.metrics.listen is None
    assert config.logging.format == "auto"
    assert config.carriers[0].window == 10
    assert config.carriers[0].dest_ton is config.carriers[0].dest_npi is None
    assert config.carriers[0].source_ton is None
    assert config.carriers[0].paused is False
    assert config.api.clients[0].max_queued is None
    assert config.carriers[0].submit_statuses.temporary == ()
    assert config.carriers[0].reconnect.primary_after_s == 300
    assert "STOP" in config.compliance.stop_words


# --- one line naming file, key path and reason ------------------------------------------------


def set_window_ten(d: dict[str, Any]) -> None:
    d["carriers"][0]["window"] = "ten"


ERRORS: list[tuple[str, Callable[[dict[str, Any]], object], str]] = [
    (
        "wrong type",
        set_window_ten,
        "carriers[0].window: must be an integer between 1 and 10000, got 'ten'",
    ),
    (
        "out of range",
        lambda d: d["carriers"][1].update(window=0),
        "carriers[1].window: must be an integer between 1 and 10000, got 0",
    ),
    (
        "unknown key",
        lambda d: d["carriers"][0].update(windw=5),
        "carriers[0].windw: unknown key; did you mean 'window'?",
    ),
    (
        "unknown section",
        lambda d: d.update(carrier=[]),
        "carrier: unknown key; did you mean 'carriers'?",
    ),
    (
        "missing required",
        lambda d: d["carriers"][0].pop("host"),
        "carriers[0].host: required key is missing",
    ),
    (
        "missing section",
        lambda d: d.pop("routes"),
        "routes: required key is missing",
    ),
    (
        "bad enum",
        lambda d: d["carriers"][0].update(bind_mode="trx"),
        "carriers[0].bind_mode: must be one of 'transceiver', 'transmitter', 'receiver', got 'trx'",
    ),
    (
        "bad receipts_per",
        lambda d: d["carriers"][0].update(receipts_per="part"),
        "carriers[0].receipts_per: must be one of 'segment', 'message', got 'part'",
    ),
    (
        "bad literal",
        lambda d: d.update(logging={"format": "xml"}),
        "logging.format: must be one of 'auto', 'json', 'console', got 'xml'",
    ),
    (
        "number where a string is expected",
        lambda d: d["carriers"][0].update(system_id=1234),
        "carriers[0].system_id: must be printable ASCII text of 1 to 15 characters, got 1234"
        " (quote it to make it a string)",
    ),
    (
        "string too long",
        lambda d: d["carriers"][0].update(system_id="x" * 16),
        "carriers[0].system_id: must be printable ASCII text of 1 to 15 characters,"
        " got 'xxxxxxxxxxxxxxxx'",
    ),
    (
        "a list where a mapping is expected",
        lambda d: d.update(queue=[1]),
        "queue: must be a mapping, got a list of 1 item",
    ),
    (
        "null for a required value",
        lambda d: d["carriers"][0].update(port=None),
        "carriers[0].port: must be an integer between 1 and 65535, got null",
    ),
    (
        "empty list",
        lambda d: d.update(carriers=[]),
        "carriers: must be a list of at least 1 item, got []",
    ),
    (
        "bad npi",
        lambda d: d["carriers"][0].update(dest_npi=2),
        "carriers[0].dest_npi: must be one of 0, 1, 3, 4, 6, 8, 9, 10, 14, 18, got 2",
    ),
    (
        "positive duration",
        lambda d: d["carriers"][0].update(response_timeout_s=0),
        "carriers[0].response_timeout_s: must be a number greater than 0 and at most 3600, got 0",
    ),
    (
        "route to unknown carrier",
        lambda d: d["routes"][0].update(carriers=["alpha", "gamma"]),
        "routes[0].carriers[1]: no carrier named 'gamma'",
    ),
    (
        "duplicate carrier",
        lambda d: d["carriers"][1].update(name="alpha"),
        "carriers[1].name: 'alpha' is already used by carriers[0]",
    ),
    (
        "duplicate route prefix",
        lambda d: d["routes"].append({"prefix": "+", "carriers": ["beta"]}),
        "routes[1].prefix: '' is already used by routes[0]",
    ),
    (
        "carrier twice in one route",
        lambda d: d["routes"][0].update(carriers=["alpha", "alpha"]),
        "routes[0].carriers[1]: listed twice",
    ),
    (
        "route to a receiver-only carrier",
        lambda d: d["carriers"][1].update(bind_mode="receiver"),
        "routes[0].carriers[1]: carrier 'beta' binds as receiver only and cannot send",
    ),
    (
        "sender of an unknown client",
        lambda d: d["senders"][0].update(client="nobody"),
        "senders[0].client: no api client named 'nobody'",
    ),
    (
        "client of an unknown sender",
        lambda d: d["api"]["clients"][0].update(senders=["ACME", "OTHER"]),
        "api.clients[0].senders[1]: no sender with id 'OTHER'",
    ),
    (
        "client without uids",
        lambda d: d["api"]["clients"][0].update(uids=[]),
        "api.clients[0].uids: list at least one uid, or set any_uid: true",
    ),
    (
        "uid shared by two clients",
        lambda d: d["api"]["clients"].append({"name": "other", "uids": [7, 1000]}),
        "api.clients[1].uids[1]: uid 1000 already belongs to api.clients[0]",
    ),
    (
        "two any_uid clients",
        lambda d: d["api"].update(
            clients=[{"name": "a", "any_uid": True}, {"name": "b", "any_uid": True}]
        ),
        "api.clients[1].any_uid: only one client may have any_uid (api.clients[0] has it too)",
    ),
    (
        "two clients of unowned inbound",
        lambda d: (
            d["api"]["clients"][0].update(unowned_inbound=True),
            d["api"]["clients"].append({"name": "ops", "uids": [7], "unowned_inbound": True}),
        ),
        "api.clients[1].unowned_inbound: only one client may have unowned_inbound"
        " (api.clients[0] has it too)",
    ),
    (
        "sender id that does not fit its kind",
        lambda d: d["senders"][0].update(kind="short"),
        "senders[0].id: a short sender id must be 3 to 8 digits, got 'ACME'",
    ),
    (
        "retry backoff upside down",
        lambda d: d.update(queue={"retry_initial_s": 600, "retry_max_s": 60}),
        "queue.retry_initial_s: must not exceed retry_max_s",
    ),
    (
        "a bind's rate above its carrier's",
        lambda d: d["carriers"][0].update(tps=50, bind_tps=80),
        "carriers[0].bind_tps: must not exceed tps (50)",
    ),
    (
        "national language tables with SAR concatenation",
        lambda d: d["carriers"][0].update(national_language="turkish", concatenation="sar"),
        "carriers[0].national_language: needs concatenation udh8 or udh16 (the tables are named"
        " in the UDH), not sar",
    ),
    (
        "national language tables on a Latin-1 carrier",
        lambda d: d["carriers"][0].update(
            national_language="portuguese", default_data_coding="latin1"
        ),
        "carriers[0].national_language: needs default_data_coding gsm (the text goes as GSM"
        " 7-bit septets)",
    ),
    (
        "a commit interval in milliseconds by mistake",
        lambda d: d.update(queue={"commit_interval_s": 2}),
        "queue.commit_interval_s: must be a number between 0 and 1, got 2",
    ),
    (
        "hostname checks off against the public trust store",
        lambda d: d["carriers"][0].update(tls={"enabled": True, "verify_hostname": False}),
        "carriers[0].tls.verify_hostname: false needs ca_file (the carrier's own CA): with the"
        " system's trust store any publicly issued certificate would be accepted",
    ),
    (
        "client certificate without key",
        lambda d: d["carriers"][0].update(tls={"cert_file": "client.pem"}),
        "carriers[0].tls.key_file: cert_file and key_file go together",
    ),
    (
        "socket mode as a number",
        lambda d: d["api"].update(mode=432),
        'api.mode: must be a quoted octal mode such as "0660", got 432',
    ),
    (
        "metrics address without port",
        lambda d: d.update(metrics={"listen": "localhost"}),
        'metrics.listen: must be an address "host:port" (or "[ipv6]:port"), got \'localhost\'',
    ),
    (
        "receiver binds beside transceivers",
        lambda d: d["carriers"][0].update(receiver_binds=1),
        "carriers[0].receiver_binds: only with bind_mode transmitter (a transceiver bind"
        " receives already)",
    ),
    (
        "receipt queries on a carrier that only receives",
        lambda d: d["carriers"][0].update(bind_mode="receiver", receipt_queries={"after_s": 3600}),
        "carriers[0].receipt_queries.after_s: needs binds that submit (query_sm goes where"
        " submit_sm does), not bind_mode receiver",
    ),
    (
        "a submit status named that is none",
        lambda d: d["carriers"][0].update(submit_statuses={"permanent": ["ESME_ROK"]}),
        "carriers[0].submit_statuses.permanent[0]: must be a command_status: a number from 1 to"
        " 0xFFFFFFFF or a name such as ESME_RSYSERR, got 'ESME_ROK'",
    ),
    (
        "a submit status read two ways",
        lambda d: d["carriers"][0].update(
            submit_statuses={"temporary": [0x400], "throttling": [1024]}
        ),
        "carriers[0].submit_statuses.throttling: 0x00000400 is listed in temporary too",
    ),
    (
        "alternate SMSC address without a port",
        lambda d: d["carriers"][0].update(alternates=["10.0.0.2"]),
        'carriers[0].alternates[0]: must be an address "host:port" (or "[ipv6]:port"),'
        " got '10.0.0.2'",
    ),
    (
        "alternate SMSC address with port 0",
        lambda d: d["carriers"][0].update(alternates=["10.0.0.2:0"]),
        "carriers[0].alternates: 10.0.0.2:0: an SMSC's port is 1 to 65535",
    ),
    (
        "alternate SMSC address that is the host",
        lambda d: d["carriers"][0].update(alternates=["10.0.0.2:2776", "smsc.example.net:2775"]),
        "carriers[0].alternates: smsc.example.net:2775 is named twice (host:port too)",
    ),
    (
        "binds spread over no alternates",
        lambda d: d["carriers"][0].update(spread_binds=True),
        "carriers[0].spread_binds: needs alternates to spread the binds over",
    ),
    (
        "short codes longer than the longest",
        lambda d: d.update(compliance={"short_code_max_digits": 9}),
        "compliance.short_code_max_digits: must be an integer between 3 and 8, got 9",
    ),
    (
        "shorter short codes with no country",
        lambda d: d.update(compliance={"short_code_max_digits": 6}),
        "compliance.short_code_max_digits: needs default_country_prefix: bare digits longer"
        " than a short code are then a national number, of that country",
    ),
    (
        "an 8-digit sender where those are numbers",
        lambda d: d.update(
            compliance={"short_code_max_digits": 6, "default_country_prefix": "45"},
            senders=[{"id": "20123456", "client": "demo"}],
        ),
        "senders[0].id: 8 digits is a number, not a short code, under"
        " compliance.short_code_max_digits 6: write it in international form (+45...)",
    ),
    (
        "stop word also a start word",
        lambda d: d.update(compliance={"start_words": ["start", "stop"]}),
        "compliance.start_words: 'STOP' is also a stop word",
    ),
    (
        "both an inline password and a file",
        lambda d: d["carriers"][0].update(password_file="pw"),
        "carriers[0]: give only one of password, password_file",
    ),
    (
        "no password at all",
        lambda d: d["carriers"][0].pop("password"),
        "carriers[0].password: required key is missing (or give password_file or"
        " password_credential)",
    ),
]


@pytest.mark.parametrize(("change", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_error_names_file_key_and_reason(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], message: str
) -> None:
    """Each kind of mistake is one ConfigError line: the file, the key path, the reason."""
    path = write(tmp_path, variant(change))
    assert error_of(path) == f"{path}: {message}"


def test_config_error_is_an_smppd_error_with_parts(tmp_path: Path) -> None:
    """ConfigError sits in the SmppdError tree and exposes file, key and reason separately."""
    path = write(tmp_path, variant(set_window_ten))
    with pytest.raises(SmppdError) as info:
        load_config(path)
    assert isinstance(info.value, ConfigError)
    assert (info.value.file, info.value.where) == (str(path), "carriers[0].window")
    assert info.value.reason.startswith("must be an integer")


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    """A YAML syntax error names the file and the line and column where it was found."""
    path = write(tmp_path, "queue:\n  path: x.db\n routes: [\n")
    message = error_of(path)
    assert message.startswith(f"{path}: line 3, column 2: ")
    assert "\n" not in message


def test_duplicate_yaml_key_is_refused_with_line(tmp_path: Path) -> None:
    """A key given twice in one mapping is an error, not a silent override."""
    path = write(tmp_path, "logging:\n  level: info\n  level: debug\n")
    assert error_of(path) == f"{path}: line 3, column 3: duplicate key 'level'"


def test_unreadable_or_empty_file(tmp_path: Path) -> None:
    """A missing file and an empty file each give one line naming the file."""
    missing = tmp_path / "nope.yaml"
    assert error_of(missing) == f"{missing}: cannot read: No such file or directory"
    empty = write(tmp_path, "")
    assert error_of(empty) == f"{empty}: carriers: required key is missing"
    listing = write(tmp_path, "- a\n- b\n")
    assert error_of(listing) == f"{listing}: must be a mapping, got a list of 2 items"


def test_only_true_and_false_are_booleans(tmp_path: Path) -> None:
    """YAML 1.1 words such as `yes` are not booleans, so `NO` or `ON` stay plain strings."""
    data = variant(lambda d: d["carriers"][0].update(registered_delivery="<yes>"))
    path = write(tmp_path, yaml.safe_dump(data).replace("<yes>", "yes"))
    assert error_of(path) == (
        f"{path}: carriers[0].registered_delivery: must be true or false, got 'yes'"
    )
    data = variant(lambda d: d["senders"].append({"id": "<NO>", "client": "svc"}))
    path = write(tmp_path, yaml.safe_dump(data).replace("<NO>", "NO"))
    assert load_config(path).senders[1].id == "NO"


def with_text(tmp_path: Path, old: str, new: str) -> Path:
    """BASE written as YAML with `old` replaced by `new`: YAML forms safe_dump would not write."""
    text = yaml.safe_dump(BASE, sort_keys=False)
    assert old in text
    return write(tmp_path, text.replace(old, new, 1))


def test_integers_and_floats_follow_yaml_1_2(tmp_path: Path) -> None:
    """`02775` is decimal (not YAML 1.1 octal), 0o/0x work, `1:40` and `1_0` are strings."""
    config = load_config(with_text(tmp_path, "host: smsc.example.net", "port: 02775\n  host: a.b"))
    assert config.carriers[0].port == 2775
    config = load_config(with_text(tmp_path, "host: smsc.example.net", "window: 0x10\n  host: a"))
    assert config.carriers[0].window == 16
    config = load_config(with_text(tmp_path, "host: smsc.example.net", "binds: 0o17\n  host: a"))
    assert config.carriers[0].binds == 15
    config = load_config(with_text(tmp_path, "host: smsc.example.net", "tps: 5e3\n  host: a"))
    assert config.carriers[0].tps == 5000.0
    for sexagesimal in ("1:40", "1_0"):
        path = with_text(tmp_path, "host: smsc.example.net", f"window: {sexagesimal}\n  host: a")
        assert error_of(path) == (
            f"{path}: carriers[0].window: must be an integer between 1 and 10000,"
            f" got '{sexagesimal}'"
        )
    # No YAML 1.1 timestamps: a date-like value is the string it looks like.
    config = load_config(with_text(tmp_path, "system_id: acme", "system_id: 2024-02-30"))
    assert config.carriers[0].system_id == "2024-02-30"


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ("window: 10", "window: !!int abc", "line 10, column 11: not a valid int value"),
        ("window: 10", "window: " + "9" * 5000, "line 10, column 11: not a valid int value"),
        ("window: 10", "window: 0x" + "f" * 400, "line 10, column 11: not a valid int value"),
        ("window: 10", "tps: 0x" + "f" * 400, "line 10, column 8: not a valid int value"),
        ("window: 10", "window: 0o" + "7" * 5000, "line 10, column 11: not a valid int value"),
        ("window: 10", "tps: !!float abc", "line 10, column 8: not a valid float value"),
        ("window: 10", "tps: !!float 1:30", "line 10, column 8: not a valid float value"),
        ("window: 10", "paused: !!bool yes", "line 10, column 11: not a valid bool value"),
        ("window: 10", "window: 1\0", "line 10, column 12: a character YAML does not allow"),
        ("window: 10", "window: 1\a", "line 10, column 12: a character YAML does not allow"),
        ("window: 10", "tps: !!timestamp 2024-02-30", "line 10, column 8: the !!timestamp tag"),
        ("window: 10", "tps: !!timestamp soon", "line 10, column 8: the !!timestamp tag"),
        ("window: 10", "window: !!set [a]", "line 10, column 11: the !!set tag"),
        ("window: 10", "window: !!map x", "line 10, column 11: not a valid map value"),
        ("window: 10", "window: !!seq x", "line 10, column 11: not a valid seq value"),
        ("window: 10", "window: !!str [a]", "line 10, column 11: not a valid str value"),
        ("window: 10", "window: !!int S3cr3t", "line 10, column 11: not a valid int value"),
        ("window: 10", "? [a]\n  : 1", "line 10, column 5: a list cannot be a key"),
        ("window: 10", "<<: {binds: 2}", "line 10, column 3: merge keys (<<) are not supported"),
        ("window: 10", "window: " + "[" * 5000, "invalid YAML: nested too deeply"),
    ],
)
def test_a_value_yaml_cannot_build_is_one_line(
    tmp_path: Path, old: str, new: str, reason: str
) -> None:
    """A tag that cannot build its value, an unhashable key, a merge key or absurd nesting
    are a ConfigError naming the file and line, never a ValueError or RecursionError."""
    text = yaml.safe_dump(BASE, sort_keys=False).replace("acme\n", f"acme\n  {old}\n", 1)
    path = write(tmp_path, text.replace(old, new, 1))
    message = error_of(path)
    assert message.startswith(f"{path}: {reason}")
    assert "\n" not in message
    assert "S3cr3t" not in message  # a tagged value may be a password: never echoed
    assert len(message) < len(str(path)) + 120


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("!S3cr3t", "could not determine a constructor for the tag <redacted>"),
        ("*S3cr3t", "found undefined alias <redacted>"),
    ],
)
def test_a_password_yaml_reads_as_a_tag_or_alias_is_never_echoed(
    tmp_path: Path, value: str, reason: str
) -> None:
    """Unquoted, a password beginning with ! or * is a tag or an alias to YAML, whose error
    quoted it (check-config, run, a refused reload's log line); elsewhere the quote stays."""
    text = yaml.safe_dump(BASE, sort_keys=False)
    assert "password: pw1\n" in text
    path = write(tmp_path, text.replace("password: pw1\n", f"password: {value}\n", 1))
    message = error_of(path)
    assert message.endswith(reason)
    assert "S3cr3t" not in message
    path = write(tmp_path, text.replace("acme\n", "acme\n  system_type: *S3cr3t\n", 1))
    assert error_of(path).endswith("found undefined alias 'S3cr3t'")


def test_carrier_credentials_are_printable_ascii(tmp_path: Path) -> None:
    """system_id, password and system_type go to the SMSC as ASCII C-Octet strings: anything
    else is refused when loading, not when binding; the password is never echoed."""
    path = write(tmp_path, variant(lambda d: d["carriers"][0].update(system_id="smppé")))
    assert error_of(path) == (
        f"{path}: carriers[0].system_id: must be printable ASCII text of 1 to 15 characters,"
        " got 'smppé'"
    )
    path = write(tmp_path, variant(lambda d: d["carriers"][0].update(system_type="v\x01")))
    assert error_of(path).startswith(f"{path}: carriers[0].system_type: must be printable ASCII")
    path = write(tmp_path, variant(lambda d: d["carriers"][0].update(service_type="CMT123")))
    assert error_of(path) == (
        f"{path}: carriers[0].service_type: must be printable ASCII text of at most 5 characters,"
        " got 'CMT123'"
    )
    (tmp_path / "pw").write_text("pw\0xyz\n")
    (tmp_path / "pw").chmod(0o600)
    data = variant(
        lambda d: (d["carriers"][0].pop("password"), d["carriers"][0].update(password_file="pw"))
    )
    path = write(tmp_path, data)
    message = error_of(path)
    assert message == (
        f"{path}: carriers[0].password_file: must be printable ASCII text of at most 8 characters"
    )
    path = write(tmp_path, variant(lambda d: d["carriers"][0].update(password="pässwd")))
    assert "pässwd" not in error_of(path)


def test_strings_with_a_lone_surrogate_or_nul_are_refused(tmp_path: Path) -> None:
    """YAML can spell a lone surrogate ("\\ud800"); no socket, file or SMSC can take one."""
    path = write(tmp_path, variant(lambda d: d["api"].update(socket="/tmp/\ud800")))
    assert error_of(path) == f"{path}: api.socket: must be a path, got '/tmp/\\ud800'"
    data = variant(
        lambda d: (d["carriers"][0].pop("password"), d["carriers"][0].update(password_file="a\0b"))
    )
    path = write(tmp_path, data)
    assert error_of(path) == (
        f"{path}: carriers[0].password_file: must be a path, not one holding a NUL character"
    )


@pytest.mark.parametrize(
    "host", ["smsc.example.net", "smsc-1.example.net.", "10.0.0.1", "::1", "smsc.bücher.example"]
)
def test_carrier_hosts_that_can_resolve_are_accepted(tmp_path: Path, host: str) -> None:
    path = write(tmp_path, variant(lambda d: d["carriers"][0].update(host=host)))
    assert load_config(path).carriers[0].host == host


@pytest.mark.parametrize(
    "host", ["smpp://10.0.0.1:2775", "256.1.1.1", "bad host", "-a.b", "", "Straße.example"]
)
def test_carrier_hosts_that_cannot_resolve_are_refused(tmp_path: Path, host: str) -> None:
    path = write(tmp_path, variant(lambda d: d["carriers"][0].update(host=host)))
    assert error_of(path) == (
        f"{path}: carriers[0].host: must be a host name or IP address, got {host!r}"
    )


def test_an_internationalised_tls_server_hostname_is_taken(tmp_path: Path) -> None:
    """As ssl takes it (IDNA): it loaded before names were checked, and must go on loading."""
    tls = {"enabled": True, "server_hostname": "smsc.bücher.example"}
    path = write(tmp_path, variant(lambda d: d["carriers"][0].update(tls=tls)))
    assert load_config(path).carriers[0].tls.server_hostname == "smsc.bücher.example"


@pytest.mark.parametrize("name", [".smsc.example.net", "a..b", "x" * 64 + ".net", "bad name"])
def test_a_tls_server_hostname_that_cannot_be_one_is_refused(tmp_path: Path, name: str) -> None:
    """It passed on length alone, then failed the first connect with a UnicodeError (IDNA)
    that took the daemon down, at start or on a reload."""
    tls = {"enabled": True, "server_hostname": name}
    path = write(tmp_path, variant(lambda d: d["carriers"][0].update(tls=tls)))
    assert error_of(path).startswith(
        f"{path}: carriers[0].tls.server_hostname: must be a host name or IP address, got "
    )


@pytest.mark.parametrize("listen", ["256.1.1.1:9470", "[10.0.0.1]:9470", "a b:9470", "[zz]:1"])
def test_metrics_listen_needs_a_valid_host(tmp_path: Path, listen: str) -> None:
    path = write(tmp_path, variant(lambda d: d.update(metrics={"listen": listen})))
    assert error_of(path) == (
        f'{path}: metrics.listen: must be an address "host:port" (or "[ipv6]:port"), got {listen!r}'
    )


def test_a_keyword_with_no_letters_is_refused(tmp_path: Path) -> None:
    """An emoji keyword (its variation selector the only thing left of it) would match every
    reply that ends in an emoji with one as STOP."""
    compliance = {"stop_words": ["STOP", "\u270b\ufe0f"]}
    path = write(tmp_path, variant(lambda d: d.update(compliance=compliance)))
    assert error_of(path).startswith(f"{path}: compliance.stop_words[1]: must be a word")


def test_a_word_belongs_to_one_keyword_list(tmp_path: Path) -> None:
    """A word in two lists would be answered as either; stop, then start, then help win."""
    compliance = {"start_words": ["START", "HELP"], "help_words": ["HELP"]}
    path = write(tmp_path, variant(lambda d: d.update(compliance=compliance)))
    assert error_of(path) == f"{path}: compliance.help_words: 'HELP' is also a start word"
    compliance = {"stop_words": ["STOP"], "help_words": ["STOP"]}
    path = write(tmp_path, variant(lambda d: d.update(compliance=compliance)))
    assert error_of(path) == f"{path}: compliance.help_words: 'STOP' is also a stop word"
    compliance = {"stop_words": ["STOP ALL"], "start_words": ["stopall"]}  # matched alike
    path = write(tmp_path, variant(lambda d: d.update(compliance=compliance)))
    assert error_of(path) == f"{path}: compliance.start_words: 'STOPALL' is also a stop word"


@pytest.mark.parametrize(
    ("configured", "stop_words", "start_words"),
    [
        ({"stop_words": ["ARRET"]}, ("STOP", "ARRET"), ("START", "UNSTOP")),
        ({"stop_words": [], "start_words": []}, ("STOP",), ("START",)),
        ({"stop_words": ["stop  promo", "Stop"]}, ("STOP PROMO", "STOP"), ("START", "UNSTOP")),
    ],
)
def test_stop_and_start_always_count(
    tmp_path: Path,
    configured: dict[str, Any],
    stop_words: tuple[str, ...],
    start_words: tuple[str, ...],
) -> None:
    """Lists of local synonyms add to STOP and START, never turn them off; a keyword may be
    of several words."""
    path = write(tmp_path, variant(lambda d: d.update(compliance=configured)))
    compliance = load_config(path).compliance
    assert (compliance.stop_words, compliance.start_words) == (stop_words, start_words)


def test_paths_no_file_system_takes_name_their_key(tmp_path: Path) -> None:
    """A path component over 255 bytes makes stat() fail: a config error naming the key."""
    long = tmp_path / ("a" * 300) / "smppd.db"
    path = write(tmp_path, variant(lambda d: d.update(queue={"path": str(long)})))
    assert error_of(path) == f"{path}: queue.path: {long}: File name too long"
    tls = {"enabled": True, "ca_file": str(long)}
    path = write(tmp_path, variant(lambda d: d["carriers"][0].update(tls=tls)))
    assert error_of(path) == f"{path}: carriers[0].tls.ca_file: {long}: File name too long"


def test_tls_files_are_loaded_as_a_connection_would_and_the_key_kept_private(
    tmp_path: Path,
) -> None:
    """A CA, certificate or key file that does not load is its key's error when the config
    is loaded (not every connect failing later), and so is a key anyone may read."""
    assert shutil.which("openssl"), "the TLS tests need the openssl command (package openssl)"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=smppd", "-keyout", "key.pem", "-out", "cert.pem"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("garbage\n")
    for file in (tmp_path / "key.pem", garbage):
        file.chmod(0o600)
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")

    def with_tls(**files: str) -> Path:
        tls = {"enabled": True, **files}
        return write(tmp_path, variant(lambda d: d["carriers"][0].update(tls=tls)))

    config = load_config(with_tls(ca_file=cert, cert_file=cert, key_file=key))
    assert config.carriers[0].tls.cert_file == Path(cert)
    path = with_tls(ca_file=str(garbage))
    assert error_of(path) == (
        f"{path}: carriers[0].tls.ca_file: not a usable CA file: NO_CERTIFICATE_OR_CRL_FOUND"
    )
    path = with_tls(ca_file=str(tmp_path))  # a CA directory (CApath) is not what it takes
    assert error_of(path) == (
        f"{path}: carriers[0].tls.ca_file: {tmp_path} is a directory, not a PEM file"
    )
    path = with_tls(ca_file=str(tmp_path / "absent.pem"))
    assert error_of(path) == f"{path}: carriers[0].tls.ca_file: no such file: {tmp_path}/absent.pem"
    path = with_tls(ca_file=cert, cert_file=str(garbage), key_file=key)
    assert error_of(path).startswith(
        f"{path}: carriers[0].tls.cert_file: cert_file and key_file are no certificate and its key"
    )
    (tmp_path / "key.pem").chmod(0o644)
    path = with_tls(ca_file=cert, cert_file=cert, key_file=key)
    assert error_of(path) == (
        f"{path}: carriers[0].tls.key_file: {key} is readable by everyone (mode 0644): chmod o-r it"
    )
    # An encrypted key had OpenSSL ask for its passphrase on the terminal, at start and at
    # every connect, the event loop frozen meanwhile (without a terminal: "Invalid argument").
    subprocess.run(
        ["openssl", "pkey", "-in", "key.pem", "-aes256", "-passout", "pass:s3cret", "-out",
         "encrypted.pem"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    (tmp_path / "encrypted.pem").chmod(0o600)
    path = with_tls(ca_file=cert, cert_file=cert, key_file=str(tmp_path / "encrypted.pem"))
    assert error_of(path) == (
        f"{path}: carriers[0].tls.key_file: is encrypted: smppd takes an unencrypted key (its"
        " mode and owner guard it)"
    )


def test_a_queue_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, variant(lambda d: d.update(queue={"path": str(tmp_path)})))
    assert error_of(path) == (
        f"{path}: queue.path: {tmp_path} is a directory; name the database file"
    )


# --- values -------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    """Relative paths are taken from the config file's directory, not the working directory."""
    data = variant(
        lambda d: (
            d.update(queue={"path": "../state/q.db"}),
            d["api"].update(socket="run/api.sock"),
        )
    )
    config = load_config(write(tmp_path / "etc", data))
    assert config.queue.path == tmp_path / "state" / "q.db"
    assert config.api.socket == tmp_path / "etc" / "run" / "api.sock"


def test_scalar_forms_are_normalised(tmp_path: Path) -> None:
    """Octal modes, '+' in prefixes, keyword case and integer durations load into one form."""
    data = variant(
        lambda d: (
            d["api"].update(mode="0o600"),
            d["routes"].append({"prefix": "+44", "carriers": ["beta"]}),
            d.update(compliance={"stop_words": [" stop ", "Arret"]}),
            d.update(metrics={"listen": "[::1]:0"}),
        )
    )
    # Quoted by hand: to YAML 1.2 (and so to smppd) a bare 0o600 is an integer, not a mode.
    text = yaml.safe_dump(data).replace("mode: 0o600", "mode: '0o600'")
    config = load_config(write(tmp_path, text))
    assert config.api.mode == 0o600
    assert config.routes[1].prefix == "44"
    assert config.compliance.stop_words == ("STOP", "ARRET")
    assert config.metrics.listen == HostPort("::1", 0)
    assert str(config.metrics.listen) == "[::1]:0"
    assert config.queue.retry_max_s == 300.0
    assert isinstance(config.queue.retry_max_s, float)


def test_sender_kind_is_derived_when_left_out(tmp_path: Path) -> None:
    """Letters make an alpha sender, up to 8 digits a short code, longer numbers a long one."""
    data = variant(
        lambda d: d.update(
            senders=[
                {"id": "ACME", "client": "svc"},
                {"id": "12345", "client": "svc"},
                {"id": "+447911123456", "client": "svc"},
                {"id": "447911123457", "client": "svc"},
            ]
        )
    )
    kinds = [s.kind for s in load_config(write(tmp_path, data)).senders]
    assert kinds == [SenderKind.ALPHA, SenderKind.SHORT, SenderKind.LONG, SenderKind.LONG]


@pytest.mark.parametrize(
    ("sender", "why"),
    [
        ("Shop`s", "an alphanumeric sender id is 1 to 11 GSM 03.38 septets"),
        ("{{Shop}}", "an alphanumeric sender id is 1 to 11 GSM 03.38 septets"),
        ("07911123456", "a long number is written in international form"),
        ("+07911123456", "a long number is written in international form"),
    ],
)
def test_sender_ids_no_network_carries_are_refused(tmp_path: Path, sender: str, why: str) -> None:
    data = variant(lambda d: d["senders"].append({"id": sender, "client": "svc"}))
    path = write(tmp_path, json.dumps(data))  # JSON is YAML whose strings are all quoted
    assert error_of(path).startswith(f"{path}: senders[1].id: {why}")


def test_long_sender_ids_are_kept_with_their_plus(tmp_path: Path) -> None:
    """MO to a long number arrives as "+digits": a sender configured (or listed by a client)
    without the + is kept with it, so that its replies and STOPs find it; both forms of one
    number are one sender twice."""
    data = variant(
        lambda d: (
            d["senders"].append({"id": "447911123456", "client": "svc"}),
            d["api"]["clients"].append({"name": "ops", "uids": [0], "senders": ["447911123456"]}),
        )
    )
    config = load_config(write(tmp_path, data))
    assert [s.id for s in config.senders] == ["ACME", "+447911123456"]
    svc, ops = config.api.clients
    assert (svc.senders, ops.senders) == (("ACME", "+447911123456"), ("+447911123456",))
    twice = variant(
        lambda d: d["senders"].extend(
            [{"id": "+447911123456", "client": "svc"}, {"id": "447911123456", "client": "svc"}]
        )
    )
    with pytest.raises(SmppdError, match=r"senders\[2\]\.id: '\+447911123456' is already used"):
        load_config(write(tmp_path, twice))


def test_clients_may_use_owned_and_listed_senders(tmp_path: Path) -> None:
    """After loading, a client's senders are those it lists plus those it owns."""
    data = variant(
        lambda d: (
            d["api"]["clients"].append({"name": "ops", "uids": [0], "senders": ["ACME"]}),
            d["senders"].append({"id": "OPS", "client": "ops"}),
        )
    )
    clients = load_config(write(tmp_path, data)).api.clients
    assert [(c.name, c.senders) for c in clients] == [("svc", ("ACME",)), ("ops", ("ACME", "OPS"))]


def test_client_for_uid_prefers_a_listed_uid() -> None:
    """A listed uid picks its client; others fall back to the any_uid client, else none."""
    named = ApiClient(name="named", uids=(1000,))
    anyone = ApiClient(name="anyone", any_uid=True)
    api = ApiConfig(clients=(anyone, named))
    assert api.client_for_uid(1000) is named
    assert api.client_for_uid(1001) is anyone
    assert ApiConfig(clients=(named,)).client_for_uid(1001) is None


# --- secrets ------------------------------------------------------------------------------------


def test_password_from_file_relative_to_config(tmp_path: Path) -> None:
    """password_file is read at load time, relative to the config, without its final newline."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "alpha").write_text("s3cr3t\n")
    (tmp_path / "secrets" / "alpha").chmod(0o640)
    data = variant(
        lambda d: (
            d["carriers"][0].pop("password"),
            d["carriers"][0].update(password_file="secrets/alpha"),
        )
    )
    assert load_config(write(tmp_path, data)).carriers[0].password == "s3cr3t"


def test_a_password_file_anyone_may_read_is_refused(tmp_path: Path) -> None:
    """As ssh refuses such keys: the file, its mode and what to do, never the password."""
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t\n")
    secret.chmod(0o644)
    path = write(
        tmp_path,
        variant(
            lambda d: (
                d["carriers"][0].pop("password"),
                d["carriers"][0].update(password_file="pw"),
            )
        ),
    )
    message = error_of(path)
    assert message == (
        f"{path}: carriers[0].password_file: {secret} is readable by everyone (mode 0644):"
        " chmod o-r it"
    )
    assert "s3cr3t" not in message


def test_a_password_file_that_is_a_pipe_is_refused_without_waiting_for_a_writer(
    tmp_path: Path,
) -> None:
    """A FIFO (or a device) at password_file would block the load, and with it a reload's
    event loop and check-config, until someone wrote to it: it is refused at once, as is a
    file too big to be a password."""
    pipe = tmp_path / "pw"
    os.mkfifo(pipe, 0o600)
    data = variant(
        lambda d: (
            d["carriers"][0].pop("password"),
            d["carriers"][0].update(password_file="pw"),
        )
    )
    path = write(tmp_path, data)
    assert error_of(path) == f"{path}: carriers[0].password_file: {pipe} is not a regular file"
    pipe.unlink()
    pipe.write_text("x" * 5000)
    pipe.chmod(0o600)
    assert error_of(path) == (
        f"{path}: carriers[0].password_file: {pipe} is over 4096 bytes: not a password file"
    )


def test_missing_password_file_names_the_key(tmp_path: Path) -> None:
    """An unreadable password_file is a ConfigError naming the key and the file."""
    data = variant(
        lambda d: (
            d["carriers"][1].pop("password"),
            d["carriers"][1].update(password_file="missing"),
        )
    )
    path = write(tmp_path, data)
    assert error_of(path) == (
        f"{path}: carriers[1].password_file: cannot read {tmp_path / 'missing'}:"
        " No such file or directory"
    )


def credential(d: dict[str, Any]) -> None:
    d["carriers"][0].pop("password")
    d["carriers"][0]["password_credential"] = "alpha.pw"


def test_password_from_systemd_credential(tmp_path: Path) -> None:
    """password_credential reads $CREDENTIALS_DIRECTORY/<name> from the given environment."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "alpha.pw").write_text("fromcred")
    path = write(tmp_path, variant(credential))
    config = load_config(path, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.carriers[0].password == "fromcred"


def test_password_credential_errors_name_the_key(tmp_path: Path) -> None:
    """Without $CREDENTIALS_DIRECTORY, or with a missing credential, the key is named."""
    path = write(tmp_path, variant(credential))
    assert error_of(path, environ={}) == (
        f"{path}: carriers[0].password_credential: $CREDENTIALS_DIRECTORY is not set"
        " (systemd sets it for LoadCredential=)"
    )
    assert error_of(path, environ={"CREDENTIALS_DIRECTORY": str(tmp_path / "none")}) == (
        f"{path}: carriers[0].password_credential: cannot read"
        f" {tmp_path / 'none' / 'alpha.pw'}: No such file or directory"
    )

    def escaping(d: dict[str, Any]) -> None:
        credential(d)
        d["carriers"][0]["password_credential"] = "../x"

    escape = write(tmp_path, variant(escaping))
    assert error_of(escape, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}) == (
        f"{escape}: carriers[0].password_credential: must be a credential file name, got '../x'"
    )


def test_secret_errors_never_echo_the_secret(tmp_path: Path) -> None:
    """A password that is too long or not a string is refused without showing its value."""
    (tmp_path / "pw").write_text("much-too-long-password")
    (tmp_path / "pw").chmod(0o600)
    data = variant(
        lambda d: (d["carriers"][0].pop("password"), d["carriers"][0].update(password_file="pw"))
    )
    path = write(tmp_path, data)
    assert error_of(path) == (
        f"{path}: carriers[0].password_file: must be printable ASCII text of at most 8 characters"
    )
    path = write(tmp_path, variant(lambda d: d["carriers"][0].update(password=12345678)))
    message = error_of(path)
    assert message == (
        f"{path}: carriers[0].password: must be a string (quoted if it looks like a number)"
    )
    assert "12345678" not in message


def test_repr_never_shows_passwords(tmp_path: Path) -> None:
    """Printing the config, a carrier or a diff of them never includes a password."""
    config = load_config(write(tmp_path, BASE))
    for text in (repr(config), str(config), repr(config.carriers[0]), f"{config.carriers}"):
        assert "pw1" not in text
        assert "pw2" not in text
    assert config.carriers[0].password == "pw1"


# --- reload -------------------------------------------------------------------------------------


def loaded(tmp_path: Path, change: Callable[[dict[str, Any]], object], name: str) -> Config:
    return load_config(write(tmp_path, variant(change), name))


def test_config_diff_lists_changed_added_and_removed_carriers(tmp_path: Path) -> None:
    """config_diff names carriers whose settings differ, including ones added or removed."""
    old = load_config(write(tmp_path, BASE, "old.yaml"))
    assert config_diff(old, old) == set()
    assert config_diff(old, loaded(tmp_path, lambda d: d.update(logging={}), "same.yaml")) == set()
    window = loaded(tmp_path, lambda d: d["carriers"][1].update(window=50), "window.yaml")
    assert config_diff(old, window) == {"beta"}
    password = loaded(tmp_path, lambda d: d["carriers"][0].update(password="new"), "pw.yaml")
    assert config_diff(old, password) == {"alpha"}
    added = loaded(
        tmp_path,
        lambda d: d["carriers"].append(
            {"name": "gamma", "host": "h", "system_id": "s", "password": ""}
        ),
        "added.yaml",
    )
    assert config_diff(old, added) == {"gamma"}
    assert config_diff(added, old) == {"gamma"}


def test_config_is_frozen(tmp_path: Path) -> None:
    """Loaded sections cannot be changed in place; a reload builds a new Config."""
    config = load_config(write(tmp_path, BASE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.carriers[0].window = 5  # type: ignore[misc]


SECTIONS = (
    config_module.QueueConfig,
    config_module.ApiConfig,
    config_module.ApiClient,
    config_module.MetricsConfig,
    config_module.LoggingConfig,
    config_module.Tls,
    config_module.Reconnect,
    config_module.Carrier,
    config_module.Route,
    config_module.Sender,
    config_module.AutoReplies,
    config_module.Compliance,
    config_module.Config,
)


@pytest.mark.parametrize("section", SECTIONS, ids=lambda cls: cls.__name__)
def test_shipped_file_shows_every_field(section: type) -> None:
    """Every field of every section appears in the shipped file, set or commented out."""
    text = SHIPPED.read_text()
    for f in dataclasses.fields(section):
        assert f"{f.name}:" in text, f"{section.__name__}.{f.name} is not in {SHIPPED.name}"
    assert "password_file" in text
    assert "password_credential" in text


def test_a_leading_tilde_is_the_home_directory_and_nothing_else_is_expanded(
    tmp_path: Path,
) -> None:
    """~ is $HOME, ~user that user's home; $VAR and the rest stay as written, relative to the
    config file's directory. Without $HOME, or for an unknown user, the key is named."""
    home = tmp_path / "home"
    root = pwd.getpwuid(os.getuid())
    path = write(
        tmp_path / "etc",
        variant(
            lambda d: d.update(
                queue={"path": "~/var/smppd.db"},
                api={**d["api"], "socket": f"~{root.pw_name}/smppd.sock"},
            )
        ),
    )
    config = load_config(path, environ={"HOME": str(home)})
    assert config.queue.path == home / "var" / "smppd.db"
    assert config.api.socket == Path(root.pw_dir) / "smppd.sock"
    literal = write(
        tmp_path / "etc", variant(lambda d: d.update(queue={"path": "$VAR/q.db"})), "literal.yaml"
    )
    assert load_config(literal, environ={"VAR": "/x"}).queue.path == tmp_path / "etc/$VAR/q.db"
    assert error_of(path, environ={}) == (
        f"{path}: queue.path: '~/var/smppd.db' starts with ~ but $HOME is not set"
    )
    unknown = write(
        tmp_path / "etc", variant(lambda d: d.update(queue={"path": "~nobody-x/q.db"})), "u.yaml"
    )
    assert error_of(unknown, environ={"HOME": str(home)}) == (
        f"{unknown}: queue.path: no user 'nobody-x' for '~nobody-x/q.db'"
    )
