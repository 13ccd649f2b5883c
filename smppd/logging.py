"""Structured logs for smppd: JSON lines in production, a readable view on a terminal.

It owns the structlog processor chain, the bridge that renders stdlib `logging` records
(asyncio, aiosqlite) through the same chain, and the privacy processor that keeps invariant 7:
phone numbers are masked and message texts and passwords redacted before any renderer runs.
It must not know about config files or components: the daemon passes in the level and format.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import Final, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["configure_logging", "mask_msisdn", "redact_private"]

# Keys whose values are phone numbers (masked) and keys whose values are content or secrets
# (redacted). Matched case-insensitively on the event's own keys and one level into dicts.
NUMBER_KEYS: Final = frozenset(
    {"destination", "source", "msisdn", "to", "from", "destination_addr", "source_addr"}
    | {"recipient", "number", "sender", "other_reading"}
)
REDACTED_KEYS: Final = frozenset({"text", "short_message", "message_payload", "password"})
# Keys whose values are free text that may quote a number (an exception's message, what a
# peer sent): number-like runs in them are masked, as in the event itself.
FREE_TEXT_KEYS: Final = frozenset({"error", "detail"})

_KEPT_TAIL: Final = 2
_MIN_MASKED: Final = 5
_MAX_KEPT_HEAD: Final = 5  # country code and operator prefix: what a person debugging routes needs
_SHORT_DIGITS: Final = 6  # at most this many digits: a short code or sender id, not a person
_DIGITS: Final = frozenset("0123456789")
# A run standing alone: the digits of a hex value (0x00000099) or an identifier are no number.
# Written with + it may be grouped as people write it ("+44 7700 900123", "+44 (0) 20 7946
# 0000"); without, only unbroken (grouped digits there are as often dates, ports and counts).
_DIGIT_RUN: Final = re.compile(
    r"(?<![0-9A-Za-z])(?:\+[0-9](?:[ \-]?(?:\(0\)[ \-]?)?[0-9]){6,}|\+?[0-9]{7,})(?![0-9A-Za-z])"
)


def mask_msisdn(value: str) -> str:
    """Mask a phone number, keeping its prefix and last 2 digits: `+447911123423` ->
    `+44791*****23`.

    Only digits are masked (at least 5 of them); separators and letters stay, so formatted
    numbers keep their shape. A value with at most 6 digits (a short code such as `12345`, an
    alphanumeric sender id such as `ACME`) is not a subscriber's number and is returned as is.
    """
    total = sum(c in _DIGITS for c in value)
    if total <= _SHORT_DIGITS:
        return value
    head = min(_MAX_KEPT_HEAD, total - _KEPT_TAIL - _MIN_MASKED)
    out = []
    seen = 0
    for c in value:
        if c in _DIGITS:
            seen += 1
            if head < seen <= total - _KEPT_TAIL:
                c = "*"  # noqa: PLW2901 (rewriting the character is the point)
        out.append(c)
    return "".join(out)


def _mask_digit_runs(text: str) -> str:
    """Mask anything number-like in free text (exception messages, foreign log lines)."""
    return _DIGIT_RUN.sub(lambda m: mask_msisdn(m[0]), text)


def _masked(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(v) for v in value]
    return mask_msisdn(value if isinstance(value, str) else str(value))


def _redacted(key: str, value: object) -> object:
    if value is None:
        return None
    if key == "password":
        return "<redacted>"  # not even its length
    if isinstance(value, str):
        return f"<redacted {len(value)} chars>"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<redacted {len(value)} bytes>"
    return "<redacted>"


def _scrub(key: object, value: object, *, descend: bool) -> object:
    name = key.lower() if isinstance(key, str) else ""
    if name in REDACTED_KEYS:
        return _redacted(name, value)
    if name in NUMBER_KEYS:
        return _masked(value)
    if name in FREE_TEXT_KEYS and isinstance(value, str):
        return _mask_digit_runs(value)
    if descend and isinstance(value, Mapping):
        return {k: _scrub(k, v, descend=False) for k, v in value.items()}
    return value


def redact_private(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: mask numbers and redact texts and passwords in the event and one level down."""
    return {key: _scrub(key, value, descend=True) for key, value in event_dict.items()}


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _exc_info(value: object) -> ExcInfo | None:
    if value is True:
        value = sys.exc_info()
    if isinstance(value, BaseException):
        return type(value), value, value.__traceback__
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return value[0], value[1], value[2]
    return None


def _one_line(exc: BaseException) -> str:
    """`ValueError: boom (at pkg/mod.py:12 in f < pkg/b.py:3 in g)`, causes appended."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(parts) < 3:
        frames = traceback.extract_tb(current.__traceback__)[-3:]
        where = " < ".join(
            f"{'/'.join(f.filename.split('/')[-2:])}:{f.lineno} in {f.name}"
            for f in reversed(frames)
        )
        text = f"{type(current).__qualname__}: {current}" + (f" (at {where})" if where else "")
        parts.append(text)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return " | caused by ".join(parts).replace("\r", " ").replace("\n", " | ")


def _render_exception(*, one_line: bool) -> Processor:
    """Processor: turn exc_info into a masked `exception` string (one line for JSON)."""

    def render(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        info = _exc_info(event_dict.pop("exc_info", None))
        if info is not None:
            if one_line:
                text = _one_line(info[1])
            else:
                text = "".join(traceback.format_exception(*info)).rstrip()
            event_dict["exception"] = _mask_digit_runs(text)
        return event_dict

    return render


def _mask_foreign_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Stdlib records were not written with our keys in mind: mask numbers in their text."""
    event = event_dict.get("event")
    if isinstance(event, str):
        event_dict["event"] = _mask_digit_runs(event)
    return event_dict


def _lead_with_essentials(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Put timestamp, level and event first so JSON lines read well by eye too."""
    first = {k: event_dict.pop(k) for k in ("timestamp", "level", "event") if k in event_dict}
    return {**first, **event_dict}


class _Handler(logging.StreamHandler[TextIO]):
    """Our root handler, told apart from others (pytest's) when reconfiguring."""


def configure_logging(
    level: str,
    fmt: Literal["auto", "json", "console"],
    stream: TextIO = sys.stderr,
) -> None:
    """Send structlog events and stdlib records to `stream` at `level` and above.

    `auto` renders for a person when `stream` is a terminal and as JSON lines otherwise. Safe to
    call again (on reload): loggers are not cached, so the new chain applies at once.
    """
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None or level.upper() in ("NOTSET", "WARN", "FATAL"):
        raise ValueError(f"unknown log level {level!r}")
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: Processor
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    tail: list[Processor] = [
        redact_private,
        _render_exception(one_line=not console),
        _lead_with_essentials,
        renderer,
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = _Handler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.processors.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
                _mask_foreign_event,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(number)
    # aiosqlite's debug lines print each call's arguments: a NewMessage with its text. They
    # say nothing about smppd that its own events do not, so they are never shown.
    logging.getLogger("aiosqlite").setLevel(max(number, logging.INFO))
