"""Fault knobs of the fake SMSC, switchable while it runs.

Owns the values that make the SMSC misbehave (latency, error answers, limits, hangs, drops,
unsolicited unbind, reordering, garbage) and their parsing from JSON-like values, so the control
interface and a scenario file read them the same way. It must not know connections: the
connection reads the knobs at the moment each one matters.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from smppd.pdu.status import CommandStatus

# An impossible command_length (0xDEADBEEF): the peer must lose framing and drop the connection.
DEFAULT_GARBAGE = bytes.fromhex("deadbeef") * 4


class Reorder(StrEnum):
    """How held submit responses are released."""

    REVERSE = "reverse"
    SHUFFLE = "shuffle"


@dataclass(slots=True)
class Faults:
    """What the SMSC does wrong. Assign attributes directly, or use `FakeSmsc.set_faults`.

    `*_after_pdus` knobs fire once per connection, when its count of received PDUs reaches N
    (binds included); a connection already past N fires at its next PDU.
    """

    # Delay before each response: fixed, or uniform in a (low, high) range.
    latency_s: float | tuple[float, float] = 0.0
    # command_status -> fraction of submit_sm/data_sm answered with it (drawn at random).
    submit_errors: dict[int, float] = field(default_factory=dict)
    # Accepted submits per account over any sliding second; the excess gets ESME_RTHROTTLED.
    tps_limit: float | None = None
    # More than this many submits received and not yet answered on a connection get
    # `window_status` at once.
    window: int | None = None
    window_status: int = CommandStatus.ESME_RTHROTTLED
    # Read and discard everything, answer nothing, send nothing; TCP stays open.
    hang: bool = False
    # Abort the connection when its Nth PDU arrives (that PDU is not answered).
    drop_after_pdus: int | None = None
    # Send unbind to the client once its Nth PDU is handled (after the answer, unless delayed).
    unbind_after_pdus: int | None = None
    # Write `garbage` once the Nth PDU is handled, likewise.
    garbage_after_pdus: int | None = None
    garbage: bytes = DEFAULT_GARBAGE
    # Hold submit responses and release each batch of `reorder_batch` in this order (a partial
    # batch after `reorder_hold_s`).
    reorder: Reorder | None = None
    reorder_batch: int = 10
    reorder_hold_s: float = 0.2

    def copy(self) -> Faults:
        """An independent copy (the submit_errors dict included)."""
        return replace(self, submit_errors=dict(self.submit_errors))

    def response_delay_s(self, rng: random.Random) -> float:
        latency = self.latency_s
        if isinstance(latency, tuple):
            return rng.uniform(latency[0], latency[1])
        return latency

    def draw_submit_error(self, rng: random.Random) -> int:
        """A status from `submit_errors` for this submit, or 0 (ESME_ROK)."""
        if not self.submit_errors:
            return 0
        draw = rng.random()
        for status, fraction in self.submit_errors.items():
            draw -= fraction
            if draw < 0:
                return status
        return 0

    def update(self, changes: Mapping[str, Any], *, where: str = "") -> None:
        """Apply JSON-like `changes` (knob -> value); nothing changes if any is bad.

        ValueError for a bad value or an unknown knob, TypeError for a value of the wrong type;
        the message names the knob, after `where` (say "faults." in a scenario).
        """
        parsed = {name: _parse(name, value, where) for name, value in changes.items()}
        trial = self.copy()
        for name, value in parsed.items():
            setattr(trial, name, value)
        try:
            trial.check()
        except ValueError as exc:  # each message starts with the knob's name
            raise ValueError(f"{where}{exc}") from None
        for name, value in parsed.items():
            setattr(self, name, value)

    def check(self) -> None:
        # Each test is written so that NaN fails it (it compares false with everything), and
        # infinities are refused where a number of seconds or a rate is meant.
        latency = self.latency_s
        low, high = latency if isinstance(latency, tuple) else (latency, latency)
        if not (0 <= low <= high and math.isfinite(high)):
            raise ValueError(
                "latency_s must be a finite number >= 0, or a range (low, high) with low <= high"
            )
        fractions = self.submit_errors.values()
        if not (all(0 <= f <= 1 for f in fractions) and sum(fractions) <= 1):
            raise ValueError("submit_errors fractions must be >= 0 and add up to at most 1")
        if self.tps_limit is not None and not (
            math.isfinite(self.tps_limit) and self.tps_limit >= 1
        ):
            raise ValueError("tps_limit must be a finite number of at least 1, or null")
        for name in ("window", "drop_after_pdus", "unbind_after_pdus", "garbage_after_pdus"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 or null")
        hold_s = self.reorder_hold_s
        if not (self.reorder_batch >= 1 and math.isfinite(hold_s) and hold_s > 0):
            raise ValueError("reorder_batch must be >= 1 and reorder_hold_s finite and > 0")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["latency_s"] = (
            list(self.latency_s) if isinstance(self.latency_s, tuple) else (self.latency_s)
        )
        out["submit_errors"] = {f"0x{k:08X}": v for k, v in self.submit_errors.items()}
        out["garbage"] = self.garbage.hex()
        out["reorder"] = None if self.reorder is None else self.reorder.value
        return out


def parse_status(value: Any) -> int:
    """A command_status from an int, a numeric string ("0x58", "88") or a spec name."""
    if isinstance(value, bool):
        raise TypeError(f"not a command_status: {value!r}")
    if isinstance(value, int):
        status = value
    elif isinstance(value, str):
        if value.upper().startswith("ESME_"):
            try:
                return int(CommandStatus[value.upper()])
            except KeyError:
                raise ValueError(f"unknown command_status name {value!r}") from None
        try:
            status = int(value, 0)
        except ValueError:
            raise ValueError(f"not a command_status: {value!r}") from None
    else:
        raise TypeError(f"not a command_status: {value!r}")
    if not 0 <= status <= 0xFFFFFFFF:
        raise ValueError(f"command_status {status} does not fit 32 bits")
    return status


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {value!r}")
    return float(value)


def _optional_int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer or null, not {value!r}")
    return value


def _parse(name: str, value: Any, where: str = "") -> Any:
    key = where + name  # as the messages name it
    if name == "latency_s":
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise ValueError(f"{key} range must be [low, high]")
            return (_number(key, value[0]), _number(key, value[1]))
        return _number(key, value)
    if name == "submit_errors":
        if not isinstance(value, Mapping):
            raise TypeError(f"{key} must map command_status to a fraction")
        return {_status(key, k): _number(key, v) for k, v in value.items()}
    if name == "tps_limit":
        return None if value is None else _number(key, value)
    if name in ("window", "drop_after_pdus", "unbind_after_pdus", "garbage_after_pdus"):
        return _optional_int(key, value)
    if name == "window_status":
        return _status(key, value)
    if name == "hang":
        if not isinstance(value, bool):
            raise TypeError(f"{key} must be true or false, not {value!r}")
        return value
    if name == "garbage":
        if isinstance(value, bytes):
            return value
        wrong = ValueError(f"{key}: expected a hex string, got {value!r}")
        if not isinstance(value, str):
            raise wrong
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise wrong from None
    if name == "reorder":
        if value is None:
            return None
        try:
            return Reorder(value)
        except ValueError:
            choices = ", ".join(member.value for member in Reorder)
            raise ValueError(f"{key}: expected one of {choices} or null, got {value!r}") from None
    if name == "reorder_batch":
        result = _optional_int(key, value)
        if result is None:
            raise ValueError(f"{key} must be an integer")
        return result
    if name == "reorder_hold_s":
        return _number(key, value)
    raise ValueError(f"unknown fault knob {key!r}")


def _status(key: str, value: Any) -> int:
    try:
        return parse_status(value)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{key}: {exc}") from None


class SlidingCounter:
    """Events in the last second, to enforce a rate over any one-second span (not per tick)."""

    __slots__ = ("_times",)

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def allow(self, limit: float, *, now: float) -> bool:
        """Count an event at `now` unless `limit` already happened in the second before it."""
        if not self.would_allow(limit, now=now):
            return False
        self._times.append(now)
        return True

    def would_allow(self, limit: float, *, now: float) -> bool:
        """Whether an event at `now` would be within `limit` (counted only by `add`)."""
        times = self._times
        horizon = now - 1.0
        while times and times[0] <= horizon:
            times.popleft()
        return len(times) < limit

    def add(self, now: float) -> None:
        self._times.append(now)
