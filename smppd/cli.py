"""The `smppd` command: run the daemon, check a config, and talk to a running daemon.

It owns argument parsing, where the API socket is (`--socket`, else the config's api.socket),
how replies are printed and the exit status: 0 done, 1 refused by the daemon, 69 daemon not
reachable, 74 output not written (it was done), 75 no reply in time, 78 config unusable
(sysexits.h), 2 bad usage. Expected failures print one line on
stderr, never a traceback. It must not know the wire format (smppd.client speaks it) nor how
the daemon is built (smppd.daemon, imported only by `run`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib
import json
import math
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

from smppd.client import ApiClientError, ApiConnectionError, ApiTimeoutError, Client, Submitted

__all__ = ["main"]

EX_OK: Final = 0
EX_REFUSED: Final = 1
EX_USAGE: Final = 2  # what argparse uses
EX_UNAVAILABLE: Final = 69
EX_IOERR: Final = 74  # our output could not be written (a full disk): what was asked was done
EX_TEMPFAIL: Final = 75  # sent, no reply in time: it may have been done
# smppd.api.EVENT_KINDS, not imported so that --help stays light (a test checks they agree).
_EVENT_KINDS: Final = frozenset({"receipt", "inbound", "state"})
EX_CONFIG: Final = 78  # same as smppd.config.EX_CONFIG; not imported so --help stays light
EXIT_INTERRUPTED: Final = 130

DEFAULT_CONFIG: Final = Path("config/smppd.yaml")
CONFIG_ENV: Final = "SMPPD_CONFIG"


class _ConfigUnusableError(Exception):
    """The config could not be loaded; the message is the loader's one line."""


class _OutputError(Exception):
    """Our output could not be written (a full disk, /dev/full); the message says why."""


def _out(text: str, *, err: bool = False) -> None:
    """Print a line of output (on stderr with `err`: a page's cursor), at once: a write that
    fails is told as such, not as a refusal (a closed pipe is not a failure: see main)."""
    try:
        print(text, file=sys.stderr if err else sys.stdout, flush=True)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _OutputError(exc.strerror or str(exc)) from None


def _default_config() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def _socket_path(args: argparse.Namespace) -> Path:
    """The socket to talk to: --socket, else the config's api.socket, read from its `api`
    section alone (carrier secrets are the daemon's: a shell without them still gets in)."""
    from smppd.config import ConfigError, load_api_config  # noqa: PLC0415  (only clients need it)

    if args.socket is not None:
        return Path(args.socket)
    try:
        return Path(load_api_config(args.config).socket)
    except ConfigError as exc:
        raise _ConfigUnusableError(f"{exc} (or give the socket with --socket PATH)") from None


# --- commands -----------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    # SIGHUP's default ends the process, and systemd's Restart=on-failure takes that for a
    # clean exit: ignored while the daemon is imported (it takes over before it reads the
    # config, so a reload asked before then has nothing to do).
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        from smppd.config import ConfigError  # noqa: PLC0415

        # Imported here: the daemon pulls in everything, and the other commands need none.
        daemon = importlib.import_module("smppd.daemon")
        run: Callable[[Path], int] = daemon.run
        try:
            return run(args.config)
        except ConfigError as exc:
            raise _ConfigUnusableError(str(exc)) from None
    finally:
        signal.signal(signal.SIGHUP, previous)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from smppd.config import ConfigError, load_config  # noqa: PLC0415  (only commands that need it)

    try:
        load_config(args.config, read_secrets=not args.skip_secrets)
    except ConfigError as exc:
        raise _ConfigUnusableError(str(exc)) from None
    _out("ok" if not args.skip_secrets else "ok (secrets' files and credentials not read)")
    return EX_OK


def _print_json(result: dict[str, Any]) -> None:
    _out(_json(result, indent=2, sort_keys=True))


def _json(value: object, **options: Any) -> str:
    """JSON for a terminal: text as it reads (Cyrillic, emoji), but no character that is not
    printable (C1 controls, bidi overrides; JSON escapes only C0): an SMS is anyone's to write,
    and an escape sequence in one must not reach the operator's terminal."""
    text = json.dumps(value, ensure_ascii=False, **options)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\n" else json.dumps(c)[1:-1] for c in text)


def _describe(sent: Submitted) -> str:
    unit = "segment" if sent.segments == 1 else "segments"
    existing = "" if sent.created else ", already submitted with this ref"
    return f"{sent.message_id} ({sent.segments} {unit}{existing})"


_SPACE: Final = re.compile(r"\s")


def _event_line(event: dict[str, Any]) -> str:
    """`receipt message_id=12 state=delivered`: kind first, then the fields."""
    parts = [str(event.get("event", "?"))]
    for key, value in event.items():
        if key == "event":
            continue
        bare = isinstance(value, str) and value.isprintable() and not _SPACE.search(value)
        parts.append(f"{key}={value if bare and value else _json(value)}")
    return " ".join(parts)


async def _send(client: Client, args: argparse.Namespace) -> int:
    sent = await client.submit(
        to=args.to,
        sender=args.sender,
        text=args.text,
        priority=args.priority,
        ref=args.ref,
        validity_s=args.validity,
        schedule_at=args.schedule_at,
        registered_delivery=False if args.no_receipt else None,
        encoding=args.encoding,
        flash=True if args.flash else None,
        smart_encoding=True if args.smart_encoding else None,
    )
    _out(_describe(sent))
    return EX_OK


# A message's times, which the API gives as epoch seconds.
_TIME_KEYS: Final = frozenset(
    {"created_at", "not_before", "expires_at", "done_at", "received_at", "finished_at"}
)


def _readable_times(value: Any) -> Any:
    """`value` with its times as ISO 8601 UTC (2026-12-04T19:55:01.250Z), for a reader."""
    if isinstance(value, list):
        return [_readable_times(item) for item in value]
    if not isinstance(value, dict):
        return value
    return {
        key: _iso(item)
        if key in _TIME_KEYS and isinstance(item, int | float) and not isinstance(item, bool)
        else _readable_times(item)
        for key, item in value.items()
    }


def _iso(epoch: float) -> str:
    when = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _print_message(status: dict[str, Any], args: argparse.Namespace) -> None:
    _print_json(status if args.epoch else _readable_times(status))


async def _status(client: Client, args: argparse.Namespace) -> int:
    _print_message(await client.status(args.message_id, ref=args.ref), args)
    return EX_OK


async def _cancel(client: Client, args: argparse.Namespace) -> int:
    """Prints the message after the cancel; status 1 when this call cancelled nothing of it
    (every segment was with the carrier, finished or cancelled before), so a script can tell."""
    status = await client.cancel(args.message_id, ref=args.ref)
    _print_message(status, args)
    if not status.get("cancelled"):
        state = status.get("state")
        print(f"error: nothing cancelled: the message is {state}", file=sys.stderr)
        return EX_REFUSED
    return EX_OK


async def _stats(client: Client, _args: argparse.Namespace) -> int:
    _print_json(await client.stats())
    return EX_OK


async def _health(client: Client, _args: argparse.Namespace) -> int:
    """Prints the reply; status 1 when the daemon says it is not healthy (a carrier with no
    bind up, or not serving yet), so that `smppd health` can be a check on its own."""
    reply = await client.health()
    _print_json(reply)
    return EX_OK if reply.get("healthy", True) else EX_REFUSED


_INBOUND_PAGE_MAX: Final = 1000  # the most an `inbound` request returns (smppd.api)


async def _inbound(client: Client, args: argparse.Namespace) -> int:
    """The stored inbound messages after --after, a JSON line each: what `tail` missed. All
    of them, page by page; with --limit, that many and the cursor of the next on stderr."""
    after = args.after
    while True:
        page = await client.inbound(after, args.limit or _INBOUND_PAGE_MAX)
        for message in page:
            shown = message if args.epoch else _readable_times(message)
            _out(_json(shown))
        if not page:
            return EX_OK
        after = page[-1]["id"]
        if args.limit is not None:
            if len(page) == args.limit:  # there may be more
                _out(f"next: --after {after}", err=True)
            return EX_OK
        if len(page) < _INBOUND_PAGE_MAX:
            return EX_OK


async def _finished(client: Client, args: argparse.Namespace) -> int:
    """Messages finished after --after, a JSON line each, in the order they finished: all of
    them, page by page while the daemon says there are more; with --limit, one page and, if
    there are more, the cursor of the next on stderr. A page may be short, empty even, and
    not the last: `more` says."""
    after = args.after
    while True:
        reply = await client.finished(after, args.limit)
        for message in reply["messages"]:
            shown = message if args.epoch else _readable_times(message)
            _out(_json(shown))
        after = reply.get("next")
        if not reply.get("more") or after is None:
            return EX_OK
        if args.limit is not None:
            _out(f"next: --after {after}", err=True)
            return EX_OK


async def _optout(client: Client, args: argparse.Namespace) -> int:
    reply = await client.optout(args.action, args.sender, args.number)
    while args.action == "list" and "next" in reply:  # every page, printed as one list
        more = await client.optout("list", args.sender, after=reply.pop("next"))
        reply["optouts"] += more["optouts"]
        if "next" in more:
            reply["next"] = more["next"]
    _print_json(reply if args.epoch else _readable_times(reply))
    return EX_OK


async def _tail(client: Client, args: argparse.Namespace) -> int:
    """Until interrupted: a stream that ends (the daemon stopped, or dropped this reader) is a
    failure, so that a supervisor or script does not take it for a finished job."""
    async for event in client.subscribe(args.events.split(",")):
        shown = event if args.epoch else _readable_times(event)
        _out(_json(shown) if args.json else _event_line(shown))
        if event.get("event") == "dropped":
            # Temporary, as the daemon stopping is: a supervisor restarts on 69, and a reader
            # started again catches up with `inbound` / `finished`.
            print("error: dropped: this reader fell behind the daemon's events", file=sys.stderr)
            return EX_UNAVAILABLE
    print(
        "error: unavailable: the daemon ended the stream (it stopped or is restarting)",
        file=sys.stderr,
    )
    return EX_UNAVAILABLE


ClientCommand = Callable[[Client, argparse.Namespace], Awaitable[int]]


async def _with_client(command: ClientCommand, args: argparse.Namespace, socket: Path) -> int:
    async with Client(socket, timeout_s=args.timeout) as client:
        return await command(client, args)


def _client_command(command: ClientCommand) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(_with_client(command, args, _socket_path(args)))

    return run


# --- parser -------------------------------------------------------------------------------------


def _message_id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a message id: {text!r}")
    return int(text)


def _count(least: int, most: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not (text.isascii() and text.isdigit()) or int(text) < least:
            raise argparse.ArgumentTypeError(f"not an integer of {least} or more: {text!r}")
        if most is not None and int(text) > most:
            raise argparse.ArgumentTypeError(f"at most {most}: {text!r}")
        return int(text)

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def _event_kinds(text: str) -> str:
    """A usage error (status 2) for a kind the daemon does not publish, before connecting."""
    unknown = sorted(set(text.split(",")) - _EVENT_KINDS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown event kind {', '.join(unknown)!r}")
    return text


def _epoch_seconds(text: str) -> float:
    """`1796400000` (epoch seconds) or `+600` (that many seconds from now)."""
    relative = text.startswith("+")
    try:
        value = float(text[1:] if relative else text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"not epoch seconds or +seconds: {text!r}")
    if not relative and value < time.time() - _LONG_AGO_S:  # `600` for `+600`: sent at once
        raise argparse.ArgumentTypeError(
            f"{text!r} is a time more than a day ago; seconds from now are written +{text}"
        )
    return time.time() + value if relative else value


_LONG_AGO_S: Final = 86_400.0


def _priority(text: str) -> str | int:
    if text in ("bulk", "normal", "urgent"):  # smppd.service's names
        return text
    if text.isascii() and text.isdigit() and int(text) <= 9:
        return int(text)
    raise argparse.ArgumentTypeError(f"not bulk, normal, urgent or 0..9: {text!r}")


_page_size = _count(1, _INBOUND_PAGE_MAX)


def _send_arguments(send: argparse.ArgumentParser) -> None:
    send.add_argument("--to", required=True, help="destination number (E.164) or short code")
    send.add_argument("--from", dest="sender", required=True, metavar="SENDER", help="sender id")
    send.add_argument("--text", required=True, help="message text ('-' reads it from stdin)")
    send.add_argument("--priority", type=_priority, help="bulk, normal (default), urgent, or 0..9")
    send.add_argument("--ref", help="your reference: the same ref twice is one message")
    send.add_argument("--validity", type=_seconds, metavar="S", help="give up after S seconds")
    send.add_argument("--encoding", choices=("auto", "gsm7", "ucs2", "latin1"))
    send.add_argument(
        "--schedule-at",
        type=_epoch_seconds,
        metavar="TIME",
        help="send at this time: epoch seconds, or +S seconds from now",
    )
    send.add_argument(
        "--no-receipt", action="store_true", help="ask the carrier for no delivery receipt"
    )
    send.add_argument(
        "--flash", action="store_true", help="a flash message (class 0: shown, not stored)"
    )
    send.add_argument(
        "--smart-encoding",
        action="store_true",
        help="typographic quotes, dashes and spaces as GSM ones where that spares UCS-2",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smppd",
        description="SMPP v3.4 carrier connector daemon, and a client of its local API.",
        epilog=f"The config defaults to ${CONFIG_ENV} or {DEFAULT_CONFIG}. "
        "Exit status: 0 done, 1 refused by the daemon, 2 bad usage, 69 daemon not reachable "
        "(or it ended a tail), 74 output not written (it was done), 75 no reply in time (it "
        "may have been done), 78 config unusable.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_option(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "-c",
            "--config",
            type=Path,
            default=_default_config(),
            metavar="FILE",
            help=f"config file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG})",
        )
        return p

    def add(
        name: str, help_text: str, handler: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def add_client(
        name: str, help_text: str, command: ClientCommand, *, times: bool = False
    ) -> argparse.ArgumentParser:
        """A command that talks to the daemon; `times`: it prints times (--epoch)."""
        p = add(name, help_text, _client_command(command))
        config_option(p)
        if times:
            p.add_argument(
                "--epoch",
                action="store_true",
                help="times as epoch seconds (default: ISO 8601 UTC)",
            )
        p.add_argument(
            "--socket", metavar="PATH", help="API socket (default: the config's api.socket)"
        )
        p.add_argument(
            "--timeout",
            type=_seconds,
            default=30.0,
            metavar="S",
            help="seconds to wait for each reply (default: 30)",
        )
        return p

    config_option(add("run", "run the daemon in the foreground", _cmd_run))
    check = config_option(add("check-config", "load and check a config file", _cmd_check_config))
    check.add_argument(
        "--skip-secrets",
        action="store_true",
        help="do not read password_file / password_credential (outside the daemon's unit, "
        "where $CREDENTIALS_DIRECTORY is not set); everything else is checked",
    )

    send = add_client("send", "submit one message; prints its id and segment count", _send)
    _send_arguments(send)

    status = add_client("status", "show a message's state", _status, times=True)
    cancel = add_client("cancel", "cancel a message's segments not yet sent", _cancel, times=True)
    for command in (status, cancel):
        target = command.add_mutually_exclusive_group(required=True)
        target.add_argument("message_id", nargs="?", type=_message_id, metavar="ID")
        target.add_argument("--ref", help="the message submitted with this ref, instead of ID")

    tail = add_client("tail", "follow delivery receipts and inbound messages", _tail, times=True)
    tail.add_argument(
        "--events",
        type=_event_kinds,
        default="receipt,inbound",
        metavar="KINDS",
        help="comma-separated: receipt, inbound, state (default: receipt,inbound)",
    )
    tail.add_argument("--json", action="store_true", help="print each event as a JSON line")

    inbound = add_client(
        "inbound",
        "list stored inbound messages, oldest first: what a tail missed",
        _inbound,
        times=True,
    )
    inbound.add_argument(
        "--after", type=_count(0), default=0, metavar="ID", help="only those after this id"
    )
    inbound.add_argument(
        "--limit", type=_page_size, metavar="N", help="at most N (at most 1000; default: all)"
    )

    finished = add_client(
        "finished",
        "list messages that finished, in that order: the outcomes a tail missed",
        _finished,
        times=True,
    )
    finished.add_argument(
        "--after", metavar="CURSOR", help="go on from the `next` an earlier call printed"
    )
    finished.add_argument(
        "--limit", type=_page_size, metavar="N", help="at most N (default 100, at most 1000)"
    )

    add_client("stats", "show queue and carrier counters", _stats)
    add_client("health", "show whether the daemon and its binds are up", _health)

    optout = add_client("optout", "add, remove or list opted-out numbers", _optout, times=True)
    optout.add_argument("action", choices=("add", "remove", "list"))
    optout.add_argument("number", nargs="?", help="the number (for add and remove)")
    optout.add_argument("--sender", help="the sender id it applies to (required to add or remove)")
    optout.set_defaults(usage_error=optout.error)
    return parser


def _read_text(text: str) -> str:
    """`send --text`: `-` reads stdin, whose ending newline (`echo hi | smppd send --text -`)
    is not text. Bytes that are not UTF-8 (from stdin, or in argv, where they come as lone
    surrogates) are the caller's to fix: UnicodeError, before any connection is made."""
    if text == "-":
        return sys.stdin.buffer.read().decode("utf-8").removesuffix("\n")
    text.encode("utf-8")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "text", None) is not None:
        try:
            args.text = _read_text(args.text)
        except UnicodeError:
            print("error: the text is not valid UTF-8", file=sys.stderr)
            return EX_USAGE
    action = getattr(args, "action", None)
    if action in ("add", "remove") and None in (args.number, args.sender):
        args.usage_error(f"optout {action} needs a number and --sender")
    if action == "list" and args.number is not None:
        args.usage_error("optout list takes no number: it lists them all (--sender: one's)")
    try:
        result: int = args.handler(args)
    except _ConfigUnusableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except ApiTimeoutError as exc:
        hint = ""
        if args.command == "send" and args.ref is not None:
            hint = " (send it again with the same --ref: that returns the stored message)"
        elif args.command == "send":  # a resend without a ref is a second message
            hint = " (it may be stored: sent again without --ref it may go twice)"
        print(f"error: {exc.code}: {exc.message}{hint}", file=sys.stderr)
        return EX_TEMPFAIL
    except ApiConnectionError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return EX_UNAVAILABLE
    except ApiClientError as exc:
        where = f" (field: {exc.field})" if exc.field else ""
        print(f"error: {exc.code}: {exc.message}{where}", file=sys.stderr)
        return EX_REFUSED
    except _OutputError as exc:
        done = " (the message was stored)" if args.command == "send" else ""
        with contextlib.suppress(OSError):  # stderr may be the full one
            print(f"error: cannot write the output: {exc}{done}", file=sys.stderr)
        return EX_IOERR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`smppd tail | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EX_OK
    return result


if __name__ == "__main__":
    sys.exit(main())
