"""The shipped systemd unit, sysusers and tmpfiles files: the directives the daemon relies on and
the hardening it promises, checked against the config's defaults and, where present, systemd."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from smppd.config import ApiConfig, Carrier, QueueConfig

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD / "smppd.service"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections of key -> every value given, in order (systemd allows repeated keys)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"continuation lines are not expected: {line!r}"
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"directive outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key)
    assert values is not None, f"{key}= missing"
    assert len(values) == 1, f"{key}= given {len(values)} times"
    return values[0]


def seconds(value: str) -> float:
    # Only the forms this unit uses: a plain number of seconds, or a number with s/min.
    for suffix, scale in (("min", 60.0), ("s", 1.0)):
        if value.endswith(suffix):
            return float(value.removesuffix(suffix)) * scale
    return float(value)


def test_notify_reload_and_watchdog(service: dict[str, list[str]]) -> None:
    """The daemon is a notify service with a 30 s watchdog whose reload is SIGHUP."""
    kind = one(service, "Type")
    assert kind in {"notify", "notify-reload"}
    if kind == "notify":
        assert one(service, "ExecReload").split() == ["/bin/kill", "-HUP", "$MAINPID"]
    else:
        assert one(service, "ReloadSignal") == "SIGHUP"
        assert "ExecReload" not in service
    assert one(service, "WatchdogSec") == "30"
    assert one(service, "Restart") == "on-failure"
    assert "78" in one(service, "RestartPreventExitStatus").split()


def test_runs_the_daemon_on_the_etc_config(service: dict[str, list[str]]) -> None:
    """ExecStart runs `smppd run` on /etc/smppd/smppd.yaml as user smppd; its files are group
    smppd-api (the clients'), and the config's group smppd is its own alone."""
    assert one(service, "ExecStart").split() == [
        "/usr/bin/smppd",
        "run",
        "-c",
        "/etc/smppd/smppd.yaml",
    ]
    assert one(service, "User") == "smppd"
    assert one(service, "Group") == "smppd-api"
    assert one(service, "SupplementaryGroups") == "smppd"


def test_directories_hold_the_configs_default_paths(service: dict[str, list[str]]) -> None:
    """StateDirectory and RuntimeDirectory are where the queue and the API socket live by default,
    the only places ProtectSystem=strict leaves writable."""
    assert one(service, "StateDirectory") == "smppd"
    assert QueueConfig().path.parent == Path("/var/lib/smppd")
    assert one(service, "RuntimeDirectory") == "smppd"
    assert ApiConfig().socket.parent == Path("/run/smppd")
    # Clients (group smppd-api) reach the socket but never the queue with its numbers and texts.
    assert one(service, "StateDirectoryMode") == "0700"
    assert one(service, "RuntimeDirectoryMode") == "0750"
    assert one(service, "UMask") == "0007"


def test_stop_timeout_covers_the_drain(service: dict[str, list[str]]) -> None:
    """SIGTERM goes to the daemon alone and it has time to await responses and unbind."""
    assert one(service, "KillMode") == "mixed"
    defaults = {f.name: f.default for f in dataclasses.fields(Carrier)}
    response_timeout_s = defaults["response_timeout_s"]
    unbind_timeout_s = defaults["unbind_timeout_s"]
    assert isinstance(response_timeout_s, float)
    assert isinstance(unbind_timeout_s, float)
    drain_s = response_timeout_s + unbind_timeout_s
    assert seconds(one(service, "TimeoutStopSec")) >= 2 * drain_s


def test_hardening(service: dict[str, list[str]]) -> None:
    """The sandbox directives are present with their strict values."""
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
    }
    assert {key: one(service, key) for key in expected} == expected
    families = one(service, "RestrictAddressFamilies").split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert service["SystemCallFilter"][0] == "@system-service"
    # PrivateUsers would turn API clients' SO_PEERCRED uids into nobody.
    assert "PrivateUsers" not in service
    assert int(one(service, "LimitNOFILE")) >= 4096


def test_credential_example_is_documented_not_active(service: dict[str, list[str]]) -> None:
    """The LoadCredential example is there to uncomment; active, a missing file stops startup."""
    assert "LoadCredential" not in service
    example = "#LoadCredential=carrier-password:/etc/smppd/credentials/carrier-password"
    assert example in UNIT.read_text().splitlines()


def test_install_section() -> None:
    """The unit starts at boot in multi-user.target, after the network is up."""
    unit = parse_unit(UNIT.read_text())
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert unit["Unit"]["After"] == ["network-online.target"]
    assert unit["Unit"]["Wants"] == ["network-online.target"]


def config_lines(path: Path) -> list[list[str]]:
    return [
        line.split()
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_sysusers_declares_the_system_user() -> None:
    """sysusers creates user smppd (and its group) and the clients' group smppd-api, with
    automatic system ids."""
    lines = config_lines(SYSTEMD / "smppd.sysusers.conf")
    assert len(lines) == 2
    kind, name, uid = lines[0][:3]
    assert (kind, name, uid) == ("u", "smppd", "-")
    assert lines[0][-1] == "/var/lib/smppd"
    assert lines[1] == ["g", "smppd-api", "-"]


def test_tmpfiles_keep_config_and_credentials_private() -> None:
    """tmpfiles only guards /etc/smppd; state and runtime directories are the unit's job."""
    lines = config_lines(SYSTEMD / "smppd.tmpfiles.conf")
    assert {tuple(line) for line in lines} == {
        ("d", "/etc/smppd", "0750", "root", "smppd", "-"),
        ("d", "/etc/smppd/credentials", "0700", "root", "root", "-"),
    }


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """systemd-analyze verify, where installed, finds no unknown directive or bad value."""
    unit = parse_unit(UNIT.read_text())
    assert unit["Service"]
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the parsing tests above still hold the unit to its contract
    # verify also checks that ExecStart exists; stand in an executable that surely does.
    copy = tmp_path / "smppd.service"
    copy.write_text(UNIT.read_text().replace("/usr/bin/smppd ", "/bin/true "))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
