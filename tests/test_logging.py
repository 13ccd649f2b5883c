"""smppd.logging: rendering, number masking, redaction of texts and passwords."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from smppd.config import Carrier
from smppd.logging import configure_logging, mask_msisdn, redact_private

NUMBER = "+447911123423"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    aiosqlite_level = logging.getLogger("aiosqlite").level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiosqlite").setLevel(aiosqlite_level)
    structlog.reset_defaults()


def json_lines(fmt: Any = "json", level: str = "info") -> tuple[io.StringIO, structlog.BoundLogger]:
    stream = io.StringIO()
    configure_logging(level, fmt, stream=stream)
    return stream, structlog.get_logger()


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = stream.getvalue().splitlines()
    return [json.loads(line) for line in lines]


# --- masking rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("+447911123423", "+44791*****23"),
        ("447911123423", "44791*****23"),
        ("+12025550123", "+1202*****23"),
        ("+6834002", "+*****02"),
        ("+44 7911 123423", "+44 791* ****23"),
        ("12345", "12345"),
        ("123456", "123456"),
        ("ACME", "ACME"),
        ("MyBank", "MyBank"),
        ("", ""),
    ],
)
def test_mask_msisdn(value: str, masked: str) -> None:
    """Numbers keep a prefix and the last 2 digits; short codes and sender ids stay readable."""
    assert mask_msisdn(value) == masked


@given(st.from_regex(r"\+?[0-9]{7,15}", fullmatch=True))
def test_mask_hides_at_least_five_digits(number: str) -> None:
    """Any number of 7+ digits keeps its length and last 2 digits and loses at least 5 digits."""
    masked = mask_msisdn(number)
    assert len(masked) == len(number)
    assert masked[-2:] == number[-2:]
    assert masked.count("*") >= 5
    assert number.lstrip("+") not in masked


def test_redact_private_rules() -> None:
    """Number keys are masked, content keys redacted with their length, one level down too."""
    event = redact_private(
        None,
        "info",
        {
            "event": "submitted",
            "destination_addr": NUMBER,
            "To": [NUMBER, "12345"],
            "text": "hello world",
            "short_message": b"\x00\x01",
            "password": "secret",
            "segment": {"source_addr": NUMBER, "message_payload": "abc", "seq": 4},
            "message_id": "12345678901",
            "error": f"KeyError: '{NUMBER}' (errno 28)",
            "detail": f"unknown command_id 0x00000099 from {NUMBER}",
            "reason": "x",
            "sender": NUMBER,  # an MO's own number, which no sender entry owns
            "Sender": "ACME",
        },
    )
    assert event == {
        "event": "submitted",
        "destination_addr": "+44791*****23",
        "To": ["+44791*****23", "12345"],
        "text": "<redacted 11 chars>",
        "short_message": "<redacted 2 bytes>",
        "password": "<redacted>",
        "segment": {
            "source_addr": "+44791*****23",
            "message_payload": "<redacted 3 chars>",
            "seq": 4,
        },
        "message_id": "12345678901",
        "error": "KeyError: '+44791*****23' (errno 28)",  # free text: number-like runs only
        "detail": "unknown command_id 0x00000099 from +44791*****23",  # hex digits are no number
        "reason": "x",
        "sender": "+44791*****23",
        "Sender": "ACME",
    }


def test_free_text_masks_numbers_grouped_as_people_write_them() -> None:
    """An unbroken run only was masked: "+44 7700 900123" went in full. Grouped digits are
    masked when written with + (without, they are as often dates, ports and counts)."""
    texts = {
        "to '+44 7700 900123' refused": "to '+44 770* ****23' refused",
        "to +44 (0) 20 7946 0000": "to +44 (0) 20 **** **00",
        "to +1-202-555-0143 refused": "to +1-202-***-**43 refused",
        "at 2026-12-08 12:30, port 2775 1234": "at 2026-12-08 12:30, port 2775 1234",
        "errno 28, 1234 5678": "errno 28, 1234 5678",
    }
    for text, masked in texts.items():
        assert redact_private(None, "info", {"error": text})["error"] == masked


# --- what reaches the stream ----------------------------------------------------------------------


def test_json_mode_emits_one_object_per_line_without_numbers_or_text() -> None:
    """Each event is one JSON line with timestamp, level and event; numbers and text never show."""
    stream, log = json_lines()
    log.info("message_submitted", destination=NUMBER, source="SMPPD", text="your code is 4711")
    log.warning("throttled", carrier="fake", msisdn=NUMBER)
    first, second = records(stream)
    # The timestamps aside: their microseconds can spell 4711.
    output = json.dumps([{k: v for k, v in r.items() if k != "timestamp"} for r in (first, second)])
    assert NUMBER not in output
    assert NUMBER[1:] not in output
    assert "4711" not in output
    assert list(first)[:3] == ["timestamp", "level", "event"]
    assert first["timestamp"].endswith("Z")
    assert first["level"] == "info"
    assert first["destination"] == "+44791*****23"
    assert first["source"] == "SMPPD"
    assert first["text"] == "<redacted 17 chars>"
    assert (second["level"], second["event"]) == ("warning", "throttled")


def test_passwords_are_never_printed() -> None:
    """A password under any key, nested or in a logged config object, stays out of the output."""
    stream, log = json_lines()
    carrier = Carrier(name="c", host="h", system_id="s", password="hunter2")
    log.info("binding", password="hunter2", bind={"system_id": "s", "password": "hunter2"})
    log.info("loaded", carrier=carrier)
    assert "hunter2" not in stream.getvalue()
    first, _ = records(stream)
    assert first["bind"] == {"system_id": "s", "password": "<redacted>"}


def _close() -> None:
    raise OSError("socket closed")


def _submit() -> None:
    try:
        _close()
    except OSError as exc:
        raise ValueError(f"bad destination {NUMBER}\nsecond line") from exc


def test_exceptions_are_one_masked_line_in_json() -> None:
    """A logged exception is one single-line string field, with numbers in it masked."""
    stream, log = json_lines()
    try:
        _submit()
    except ValueError:
        log.exception("submit_failed")
    (record,) = records(stream)
    assert stream.getvalue().count("\n") == 1
    exception = record["exception"]
    assert exception.startswith("ValueError: bad destination +44791*****23 | second line (at ")
    assert "test_logging.py:" in exception
    assert "caused by OSError: socket closed" in exception
    assert NUMBER not in stream.getvalue()


def test_stdlib_records_share_the_format_and_masking() -> None:
    """Records from stdlib loggers (asyncio, aiosqlite) come out as the same masked JSON lines."""
    stream, _ = json_lines()
    logging.getLogger("asyncio").warning("peer %s went away", NUMBER)
    (record,) = records(stream)
    assert record["event"] == "peer +44791*****23 went away"
    assert (record["level"], record["logger"]) == ("warning", "asyncio")


def test_aiosqlite_debug_lines_never_show_at_debug_level() -> None:
    """aiosqlite logs each call's arguments (message texts) at debug: dropped, its warnings kept."""
    stream, log = json_lines(level="debug")
    logging.getLogger("aiosqlite").debug("executing %s", "NewMessage(text='your code is 4711')")
    logging.getLogger("aiosqlite").warning("connection lost")
    log.debug("ours")
    assert [r["event"] for r in records(stream)] == ["connection lost", "ours"]
    assert not any(
        "4711" in str(v) for r in records(stream) for k, v in r.items() if k != "timestamp"
    )


def test_level_filters_both_paths() -> None:
    """Events below the configured level are dropped, from structlog and stdlib alike."""
    stream, log = json_lines(level="WARNING")
    log.info("hidden")
    logging.getLogger("x").info("hidden too")
    log.error("shown")
    assert [r["event"] for r in records(stream)] == ["shown"]


def test_reconfiguring_replaces_the_handler() -> None:
    """Calling configure_logging again does not duplicate stdlib output."""
    json_lines()
    stream, _ = json_lines()
    logging.getLogger("x").warning("once")
    assert len(records(stream)) == 1


def test_auto_is_json_off_a_terminal_and_console_is_readable() -> None:
    """`auto` writes JSON to a non-terminal; `console` writes a key=value line, still masked."""
    stream, log = json_lines("auto")
    log.info("started")
    assert records(stream)[0]["event"] == "started"
    stream, log = json_lines("console")
    log.info("delivered", destination=NUMBER)
    line = stream.getvalue()
    assert "delivered" in line
    assert "destination=+44791*****23" in line
    assert not line.startswith("{")


def test_unknown_level_is_refused() -> None:
    """A misspelt level is a ValueError rather than silently logging everything."""
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        configure_logging("verbose", "json", stream=io.StringIO())
