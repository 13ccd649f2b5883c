"""The `smppd` command: exit statuses and output, against a real server and a stand-in service."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import os
import signal
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from api_fakes import WAIT_S, FakeService, running_server

from smppd import api, cli
from smppd.cli import main
from smppd.service import ClientIdentity, Event

CONFIG: dict[str, Any] = {
    "api": {"clients": [{"name": "svc", "any_uid": True}]},
    "carriers": [{"name": "alpha", "host": "127.0.0.1", "system_id": "acme", "password": "pw"}],
    "routes": [{"prefix": "", "carriers": ["alpha"]}],
    "senders": [{"id": "ACME", "client": "svc"}],
}


@pytest.fixture(autouse=True)
def quiet_logs() -> Iterator[None]:
    """The server's log lines would otherwise mix with the command's output."""
    with structlog.testing.capture_logs():
        yield


def write_config(directory: Path, **api: Any) -> Path:
    data = CONFIG | {"api": CONFIG["api"] | api}
    path = directory / "smppd.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def run_cli(*argv: str) -> int:
    """main() in a thread, as the command runs its own event loop."""
    async with asyncio.timeout(WAIT_S):
        return await asyncio.to_thread(main, list(argv))


# --- config -------------------------------------------------------------------------------------


def test_check_config_prints_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid config: `ok` and status 0."""
    assert main(["check-config", "-c", str(write_config(tmp_path))]) == 0
    assert capsys.readouterr().out == "ok\n"


def test_check_config_error_is_one_line_and_status_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid config: the loader's line on stderr (file, key, reason), status 78."""
    path = write_config(tmp_path, max_connections=0)
    assert main(["check-config", "-c", str(path)]) == 78
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: {path}: api.max_connections: ")
    assert captured.err.count("\n") == 1
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("value", ["!!int abc", "[" * 5000, "2024-02-30"])
def test_check_config_a_value_yaml_cannot_build_is_status_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    """A file that parses but whose value its tag cannot build (or nests absurdly deep) is
    the same one line and status 78, not a traceback and status 1."""
    path = write_config(tmp_path, max_connections=12345)
    path.write_text(path.read_text().replace("12345", value))
    assert main(["check-config", "-c", str(path)]) == 78
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {path}: ")
    assert captured.err.count("\n") == 1


def test_check_config_uses_the_environment_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without -c the config comes from $SMPPD_CONFIG; a missing file is a config error."""
    monkeypatch.setenv("SMPPD_CONFIG", str(write_config(tmp_path)))
    assert main(["check-config"]) == 0
    monkeypatch.setenv("SMPPD_CONFIG", str(tmp_path / "absent.yaml"))
    assert main(["check-config"]) == 78
    assert "absent.yaml" in capsys.readouterr().err


def test_run_hands_the_config_path_to_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`smppd run -c FILE` returns smppd.daemon.run(FILE)'s status."""
    seen: list[Path] = []

    def run(path: Path) -> int:
        seen.append(path)
        return 3

    daemon = types.ModuleType("smppd.daemon")
    daemon.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "smppd.daemon", daemon)
    assert main(["run", "-c", str(tmp_path / "x.yaml")]) == 3
    assert seen == [tmp_path / "x.yaml"]


def test_run_ignores_sighup_until_the_daemon_handles_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGHUP (a scripted reload) while the daemon is still importing or reading its config
    must not end it: systemd's Restart=on-failure would take that for a clean exit."""

    def set_disposition(sig: int, handler: object) -> object:
        dispositions.append((sig, handler))
        return signal.SIG_DFL

    monkeypatch.setattr(signal, "signal", set_disposition)
    dispositions: list[tuple[int, object]] = []

    def run(path: Path) -> int:
        assert dispositions == [(signal.SIGHUP, signal.SIG_IGN)]  # before the daemon runs
        return 0

    daemon = types.ModuleType("smppd.daemon")
    daemon.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "smppd.daemon", daemon)
    assert main(["run", "-c", str(tmp_path / "x.yaml")]) == 0
    # As it was once run returns (a test, a process going on).
    assert dispositions == [(signal.SIGHUP, signal.SIG_IGN), (signal.SIGHUP, signal.SIG_DFL)]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Bad usage is argparse's status 2 with a message, not a traceback."""
    with pytest.raises(SystemExit) as exited:
        main(["optout", "add", "--sender", "ACME", "--socket", "/nonexistent"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "needs a number" in err
    assert err.startswith("usage: smppd optout")  # the command's usage, not the top level's
    with pytest.raises(SystemExit) as exited:  # a number would be taken as a filter: none is
        main(["optout", "list", "+447700900123", "--socket", "/nonexistent"])
    assert exited.value.code == 2
    assert "takes no number" in capsys.readouterr().err
    bad = [
        (["inbound", "--limit", "5000"], "at most 1000: '5000'"),
        (["finished", "--limit", "1001"], "at most 1000: '1001'"),
        (["send", "--to", "+447700900123", "--from", "A", "--text", "x", "--priority", "10"], ""),
        (["send", "--to", "+447700900123", "--from", "A", "--text", "x", "--priority", "top"], ""),
        (
            ["send", "--to", "+447700900123", "--from", "A", "--text", "x", "--schedule-at", "600"],
            "seconds from now are written +600",
        ),
    ]
    for argv, said in bad:
        with pytest.raises(SystemExit) as exited:
            main([*argv, "--socket", "/nonexistent"])
        assert exited.value.code == 2, argv
        err = capsys.readouterr().err
        assert said in err
        assert ("not bulk, normal, urgent or 0..9" in err) is ("--priority" in argv)
    for twelve in ("twelve", "1\u00b2"):  # "12" with a superscript 2 passes str.isdigit()
        with pytest.raises(SystemExit) as exited:
            main(["status", twelve, "--socket", "/nonexistent"])
        assert exited.value.code == 2
        assert f"not a message id: {twelve!r}" in capsys.readouterr().err
    for target in ([], ["1", "--ref", "r1"]):  # neither, or both
        with pytest.raises(SystemExit) as exited:
            main(["cancel", *target, "--socket", "/nonexistent"])
        assert exited.value.code == 2
        assert "--ref" in capsys.readouterr().err
    send = ["send", "--to", "+447700900123", "--from", "ACME", "--text", "hi"]
    for seconds in ("nan", "inf", "0", "-5", "soon"):
        with pytest.raises(SystemExit) as exited:
            main([*send, "--validity", seconds, "--socket", "/nonexistent"])
        assert exited.value.code == 2
        assert f"not a number of seconds: {seconds!r}" in capsys.readouterr().err


# --- talking to the daemon ----------------------------------------------------------------------


async def test_send_then_status_through_the_socket(capsys: pytest.CaptureFixture[str]) -> None:
    """`send` prints the id and segment count; `status ID` prints the message as JSON, its
    times in ISO 8601 UTC (`--epoch`: as the API gives them)."""
    service = FakeService()
    async with running_server(service) as server:
        socket = str(server.settings.socket)
        send = ["send", "--socket", socket, "--to", "+447700900123", "--from", "ACME"]
        assert await run_cli(*send, "--text", "hi", "--priority", "urgent", "--ref", "r1") == 0
        assert capsys.readouterr().out == "1 (1 segment)\n"
        assert await run_cli(*send, "--text", "hi", "--ref", "r1") == 0
        assert capsys.readouterr().out == "1 (1 segment, already submitted with this ref)\n"
        assert await run_cli("status", "1", "--socket", socket) == 0
        assert json.loads(capsys.readouterr().out) == {
            "message_id": 1,
            "state": "queued",
            "created_at": "2025-12-04T19:45:01.250Z",
            "segments": [{"index": 0, "done_at": None}],
        }
        assert await run_cli("status", "1", "--epoch", "--socket", socket) == 0
        assert json.loads(capsys.readouterr().out)["created_at"] == 1764877501.25
        assert await run_cli("status", "--ref", "r1", "--socket", socket) == 0
        assert json.loads(capsys.readouterr().out)["message_id"] == 1
        assert await run_cli("status", "--ref", "r2", "--socket", socket) == 1
        assert "no message with this ref" in capsys.readouterr().err
    request = service.calls[0][1][1][0]
    assert (request.priority, request.ref, request.text) == (9, "r1", "hi")


async def test_send_can_schedule_and_decline_the_receipt(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--schedule-at +S` is that many seconds from now (or epoch seconds), `--no-receipt`
    asks for none, `--flash` for class 0, `--smart-encoding` for look-alike punctuation as
    GSM; they reach the daemon as the API's schedule_at, registered_delivery, flash and
    smart_encoding."""
    service = FakeService()
    async with running_server(service) as server:
        socket = str(server.settings.socket)
        send = ["send", "--socket", socket, "--to", "+447700900123", "--from", "ACME"]
        before = time.time()
        assert await run_cli(*send, "--text", "later", "--schedule-at", "+600", "--no-receipt") == 0
        assert await run_cli(*send, "--text", "at", "--schedule-at", "1900000000", "--flash") == 0
        assert await run_cli(*send, "--text", "it\u2019s", "--smart-encoding") == 0
    later, at, smart = (call[1][1][0] for call in service.calls)
    assert before + 600 <= later.schedule_at <= time.time() + 600
    assert (later.registered_delivery, later.flash) == (False, False)
    assert (at.schedule_at, at.registered_delivery, at.flash) == (1900000000.0, True, True)
    assert (later.smart_encoding, smart.smart_encoding) == (None, True)


@pytest.mark.parametrize(
    "args",
    [
        ["send", "--to", "+44", "--from", "A", "--text", "x", "--schedule-at", "soon"],
        ["tail", "--events", "receipt,bogus"],
        ["inbound", "--after", "-1"],
        ["inbound", "--limit", "0"],
        ["inbound", "--after", "seven"],
        ["finished", "--limit", "0"],
    ],
)
async def test_bad_arguments_are_usage_errors_before_any_connection(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        await run_cli(*args, "--socket", "/nonexistent/smppd.sock")
    assert exited.value.code == 2
    assert "unavailable" not in capsys.readouterr().err


async def test_socket_path_comes_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --socket, the config's api.socket is used, read from the api section alone: a
    carrier password given as a systemd credential, which only the daemon's unit can read
    ($CREDENTIALS_DIRECTORY unset here), does not stop a client command."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    async with running_server() as server:
        config = write_config(tmp_path, socket=str(server.settings.socket))
        text = config.read_text().replace("password: pw", "password_credential: smsc.password")
        config.write_text(text)
        assert await run_cli("health", "-c", str(config)) == 0
    assert json.loads(capsys.readouterr().out) == {"binds_up": 2, "status": "ok"}


async def test_an_empty_api_section_is_the_config_error_it_is_to_the_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`api:` with nothing under it: the client commands say what the daemon would (status
    78, the key), not try the default socket, which may be another daemon's."""
    path = write_config(tmp_path)
    text = path.read_text()
    path.write_text(text[: text.index("api:")] + "api:\n" + text[text.index("carriers:") :])
    assert await run_cli("health", "-c", str(path)) == 78
    assert "api: must be a mapping" in capsys.readouterr().err


def test_check_config_can_leave_the_daemons_secrets_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside the unit a password_credential cannot be read: check-config says so (78);
    with --skip-secrets the rest is checked, and an error elsewhere is still found."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("password: pw", "password_credential: smsc.password"))
    assert main(["check-config", "-c", str(path)]) == 78
    assert "CREDENTIALS_DIRECTORY" in capsys.readouterr().err
    assert main(["check-config", "-c", str(path), "--skip-secrets"]) == 0
    assert capsys.readouterr().out == "ok (secrets' files and credentials not read)\n"
    path.write_text(path.read_text().replace("system_id: acme", "system_id: ''"))
    assert main(["check-config", "-c", str(path), "--skip-secrets"]) == 78
    assert "carriers[0].system_id" in capsys.readouterr().err


async def test_health_exits_1_when_the_daemon_is_not_healthy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """So that `smppd health` works as a check by itself (a probe, a cron job)."""
    service = FakeService(healthy=False)
    async with running_server(service) as server:
        assert await run_cli("health", "--socket", str(server.settings.socket)) == 1
    assert json.loads(capsys.readouterr().out)["healthy"] is False


async def test_daemon_refusals_print_code_and_message(capsys: pytest.CaptureFixture[str]) -> None:
    """An error reply: `error: code: message` (and the field) on stderr, status 1."""
    async with running_server() as server:
        socket = str(server.settings.socket)
        assert await run_cli("status", "99", "--socket", socket) == 1
        assert capsys.readouterr().err == "error: not_found: no message 99\n"
        send = ["send", "--socket", socket, "--to", "+447700900123", "--from", "ACME"]
        assert await run_cli(*send, "--text", "x", "--validity", "99999999") == 1
        err = capsys.readouterr().err
        assert err.startswith("error: invalid_field: validity_s")
        assert err.endswith("(field: validity_s)\n")


async def test_a_send_with_no_reply_in_time_is_status_75_and_says_to_resend_with_its_ref(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Not 69 (daemon not reachable): the request went out and may be stored."""
    service = FakeService(gates={"slow": asyncio.Event()})
    async with running_server(service, close_timeout_s=0.1) as server:
        send = ["send", "--socket", str(server.settings.socket), "--timeout", "0.2"]
        send += ["--to", "+447700900123", "--from", "ACME", "--text", "x", "--ref", "slow"]
        assert await run_cli(*send) == 75
    err = capsys.readouterr().err
    assert err.startswith("error: timeout: no reply to submit within 0.2 s")
    assert "same --ref" in err
    # With no ref a resend is another message: nothing tells it to send again.
    service = FakeService(gates={None: asyncio.Event()})
    async with running_server(service, close_timeout_s=0.1) as server:
        send = ["send", "--socket", str(server.settings.socket), "--timeout", "0.2"]
        assert await run_cli(*send, "--to", "+447700900123", "--from", "ACME", "--text", "x") == 75
    err = capsys.readouterr().err
    assert "same --ref" not in err
    assert "without --ref it may go twice" in err


class FullDisk(io.StringIO):
    """A stdout on a full disk (as `> /dev/full`): every write fails."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


async def test_output_that_cannot_be_written_is_status_74_and_says_what_was_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not 1 (a refusal) with a traceback: `send` had stored the message, and a script that
    resends what was refused would send it twice."""
    service = FakeService()
    async with running_server(service) as server:
        monkeypatch.setattr(sys, "stdout", FullDisk())
        send = ["send", "--socket", str(server.settings.socket), "--to", "+447700900123"]
        assert await run_cli(*send, "--from", "ACME", "--text", "hi") == 74
        assert await run_cli("stats", "--socket", str(server.settings.socket)) == 74
        assert await run_cli("check-config", "-c", str(write_config(tmp_path))) == 74
    first, second, third = capsys.readouterr().err.splitlines()
    assert (
        first == "error: cannot write the output: No space left on device (the message was stored)"
    )
    assert second == third == "error: cannot write the output: No space left on device"
    assert [call[0] for call in service.calls].count("submit") == 1


async def test_cancel_stats_and_optout(capsys: pytest.CaptureFixture[str]) -> None:
    """The other commands print the daemon's result as JSON."""
    async with running_server() as server:
        socket = ["--socket", str(server.settings.socket)]
        send = ["send", *socket, "--to", "+447700900123", "--from", "ACME", "--text", "x"]
        assert await run_cli(*send) == 0
        assert await run_cli("cancel", "1", *socket) == 0
        assert await run_cli("stats", *socket) == 0
        assert await run_cli("optout", "add", "+447700900999", "--sender", "ACME", *socket) == 0
        capsys.readouterr()
        assert await run_cli("optout", "list", "--sender", "ACME", *socket) == 0
        assert json.loads(capsys.readouterr().out) == {"numbers": ["+447700900999"]}


async def test_a_cancel_that_cancels_nothing_says_so_with_status_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = FakeService(delivered={1})
    async with running_server(service) as server:
        socket = ["--socket", str(server.settings.socket)]
        send = ["send", *socket, "--to", "+447700900123", "--from", "ACME", "--text", "x"]
        assert await run_cli(*send) == 0
        capsys.readouterr()
        assert await run_cli("cancel", "1", *socket) == 1
        out, err = capsys.readouterr()
        assert json.loads(out)["state"] == "delivered"
        assert err == "error: nothing cancelled: the message is delivered\n"
        assert await run_cli(*send) == 0
        assert await run_cli("cancel", "2", *socket) == 0
        capsys.readouterr()
        assert await run_cli("cancel", "2", *socket) == 1  # cancelled before, not by this call
    assert capsys.readouterr().err == "error: nothing cancelled: the message is cancelled\n"


async def test_no_daemon_says_so_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """A socket nobody serves: a clear line naming it, status 69."""
    assert await run_cli("health", "--socket", "/nonexistent/smppd.sock") == 69
    err = capsys.readouterr().err
    assert "is the daemon running?" in err
    assert "/nonexistent/smppd.sock" in err
    assert "Traceback" not in err


async def test_a_socket_path_that_is_a_file_gets_its_own_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not "is the daemon running?" for a path that is no socket at all."""
    plain = tmp_path / "smppd.sock"
    plain.write_text("")
    assert await run_cli("health", "--socket", str(plain)) == 69
    err = capsys.readouterr().err
    assert "that is not a socket: is it the daemon's api.socket?" in err
    assert "is the daemon running?" not in err


async def test_a_socket_path_too_long_for_unix_sockets_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not "(timed out)": the kernel's own reason, and the limit to keep under."""
    long_path = str(tmp_path / ("x" * 120 + ".sock"))
    assert await run_cli("health", "--socket", long_path) == 69
    err = capsys.readouterr().err
    assert "path too long" in err
    assert "at most 107 bytes" in err
    assert "timed out" not in err


@pytest.mark.parametrize("via_stdin", [True, False])
async def test_send_refuses_text_that_is_not_utf8(
    via_stdin: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bytes that are not UTF-8, piped in or in argv (where they arrive as lone surrogates):
    a usage error naming the cause, status 2, before any connection is tried."""
    if via_stdin:
        stdin = types.SimpleNamespace(buffer=io.BytesIO(b"caf\xe9\n"))
        monkeypatch.setattr(sys, "stdin", stdin)
        text = "-"
    else:
        text = os.fsdecode(b"caf\xe9")
    argv = ("send", "--socket", "/nonexistent/smppd.sock", "--to", "+447700900123")
    assert await run_cli(*argv, "--from", "ACME", "--text", text) == 2
    assert capsys.readouterr().err == "error: the text is not valid UTF-8\n"


async def test_tail_prints_one_line_per_event_until_the_stream_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`tail` subscribes to receipts and inbound messages and prints each on one line, text
    as it reads; a stream that ends (the daemon stopped) is status 69 with one line."""
    service = FakeService()
    async with running_server(service) as server:
        tail = asyncio.create_task(run_cli("tail", "--socket", str(server.settings.socket)))
        subscription = await service.subscribed()
        assert subscription.kinds == {"receipt", "inbound"}
        subscription.publish(Event("receipt", "svc", {"message_id": 7, "state": "delivered"}))
        subscription.publish(Event("inbound", "svc", {"to": "ACME", "text": "STOP now"}))
        subscription.publish(Event("inbound", "svc", {"to": "ACME", "text": "Привет 👋"}))
        subscription.publish(Event("inbound", "svc", {"received_at": 1764877501.25}))
        subscription.close()  # the stream ends: tail ends with it
        assert await tail == 69
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "receipt message_id=7 state=delivered",
        'inbound to=ACME text="STOP now"',
        'inbound to=ACME text="Привет 👋"',
        "inbound received_at=2025-12-04T19:45:01.250Z",  # as status and inbound print times
    ]
    assert err == "error: unavailable: the daemon ended the stream (it stopped or is restarting)\n"


async def test_tail_dropped_for_falling_behind_is_status_69(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The daemon dropping a reader that fell behind ends the tail as its stopping does:
    69, temporary (restart and catch up), not 1, which a supervisor takes for a refusal."""
    service = FakeService()
    async with running_server(service) as server:
        tail = asyncio.create_task(run_cli("tail", "--socket", str(server.settings.socket)))
        subscription = await service.subscribed()
        subscription.publish(Event("dropped", "svc", {"reason": "subscriber fell behind"}))
        subscription.close()
        assert await tail == 69
    assert capsys.readouterr().err == (
        "error: dropped: this reader fell behind the daemon's events\n"
    )


@pytest.mark.parametrize("as_json", [False, True])
async def test_tail_escapes_what_would_drive_the_terminal(
    capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    """An MO is anyone's to write: a newline, a tab, ESC or C1 sequences and a bidi override
    in its text come out escaped (one line, nothing a terminal acts on), never bare, in the
    line form and in --json, which reads back as the text sent."""
    text = "hi\nreceipt\tid=1\x1b[2J\x9b31m\u202e ok"
    service = FakeService()
    async with running_server(service) as server:
        argv = ("tail", "--socket", str(server.settings.socket), *(["--json"] if as_json else []))
        tail = asyncio.create_task(run_cli(*argv))
        subscription = await service.subscribed()
        subscription.publish(Event("inbound", "svc", {"to": "ACME", "text": text}))
        subscription.close()
        assert await tail == 69
    (line,) = capsys.readouterr().out.splitlines()
    assert line.isprintable()
    if as_json:
        assert json.loads(line)["text"] == text
    else:
        assert line == 'inbound to=ACME text="hi\\nreceipt\\tid=1\\u001b[2J\\u009b31m\\u202e ok"'


class ManyInbound(FakeService):
    """2,500 stored inbound messages, paged as the daemon pages them."""

    async def inbound(self, client: ClientIdentity, after: int, limit: int) -> dict[str, Any]:
        self.calls.append(("inbound", (after, limit)))
        ids = range(after + 1, min(after + limit, 2500) + 1)
        return {"messages": [{"id": i, "text": "hi"} for i in ids]}


async def test_inbound_prints_every_page_or_says_where_the_next_begins(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It printed the first 100 and stopped, saying nothing: now every page, or with --limit
    that many and the cursor of the next on stderr."""
    service = ManyInbound()
    async with running_server(service) as server:
        socket_path = str(server.settings.socket)
        assert await run_cli("inbound", "--socket", socket_path, "--epoch") == 0
        out, err = capsys.readouterr()
        assert [json.loads(line)["id"] for line in out.splitlines()] == list(range(1, 2501))
        assert err == ""
        assert await run_cli("inbound", "--socket", socket_path, "--limit", "10") == 0
        out, err = capsys.readouterr()
        assert len(out.splitlines()) == 10
        assert err == "next: --after 10\n"


class ManyFinished(FakeService):
    """250 finished messages, paged as the daemon pages them: 100 a page by default, and an
    empty page with more to come in the middle (other clients' messages filled its look)."""

    async def finished(
        self, client: ClientIdentity, after: tuple[float, int] | None, limit: int
    ) -> dict[str, Any]:
        self.calls.append(("finished", (after, limit)))
        start = 0 if after is None else after[1]
        end = min(start + limit, 250)
        ids = range(start + 1, end + 1)
        if start == 120:  # a page that found none of this client's
            return {"messages": [], "next": "1.0:130", "more": True}
        if start < 120 < end:
            end, ids = 120, range(start + 1, 121)
        return {
            "messages": [{"message_id": i, "finished_at": 1.0} for i in ids],
            "next": f"1.0:{end}",
            "more": end < 250,
        }


async def test_finished_prints_every_page_or_says_where_the_next_begins(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It printed one page of 100 and stopped, and printed a cursor on the last page too:
    now every page while the daemon says more (an empty page with more is not the end), or
    with --limit one page and the cursor only if there are more."""
    service = ManyFinished()
    async with running_server(service) as server:
        socket_path = str(server.settings.socket)
        assert await run_cli("finished", "--socket", socket_path, "--epoch") == 0
        out, err = capsys.readouterr()
        ids = [json.loads(line)["message_id"] for line in out.splitlines()]
        assert ids == [*range(1, 121), *range(131, 251)]
        assert err == ""
        assert await run_cli("finished", "--socket", socket_path, "--limit", "10") == 0
        out, err = capsys.readouterr()
        assert (len(out.splitlines()), err) == (10, "next: --after 1.0:10\n")
        last = ["--after", "1.0:245", "--limit", "10"]
        assert await run_cli("finished", "--socket", socket_path, *last) == 0
        out, err = capsys.readouterr()
        assert (len(out.splitlines()), err) == (5, "")


async def test_a_page_cursor_that_cannot_be_written_is_status_74(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cursor of the next page goes to stderr: when that write fails the page was not told
    in full, which is 74 (not 1, a refusal), with no traceback on the way out."""
    service = ManyInbound()
    async with running_server(service) as server:
        monkeypatch.setattr(sys, "stderr", FullDisk())
        socket_path = str(server.settings.socket)
        assert await run_cli("inbound", "--socket", socket_path, "--limit", "10") == 74
    async with running_server(ManyFinished()) as server:
        monkeypatch.setattr(sys, "stderr", FullDisk())
        socket_path = str(server.settings.socket)
        assert await run_cli("finished", "--socket", socket_path, "--limit", "10") == 74
    assert len(capsys.readouterr().out.splitlines()) == 20


def test_the_event_kinds_tail_checks_are_the_daemons() -> None:
    assert cli._EVENT_KINDS == api.EVENT_KINDS
