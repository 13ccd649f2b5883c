"""Configuration of the fake SMSC: accounts, message ids, receipts, recording and initial faults.

Owns the frozen description a `FakeSmsc` is built from, and the reading of a scenario YAML file
into it (unknown keys are errors that name the key). It must not know sockets or PDUs. The
defaults match the shipped daemon config: 127.0.0.1:2775, system_id `smppd`, password `secret`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum, StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml

from smppd.pdu.codec import DEFAULT_MAX_COMMAND_LENGTH, HEADER_SIZE
from smppd.pdu.receipt import ReceiptStat
from smppd.pdu.segment import ConcatMethod
from smppd.pdu.text import Alphabet
from smppd.yamlproblem import yaml_problem
from tools.fake_smsc.faults import Faults

E = TypeVar("E", bound=Enum)


class ConfigError(ValueError):
    """A scenario that cannot be used; the message names the file and key."""


class IdFormat(StrEnum):
    """How message ids are rendered: lowercase hex or decimal digits."""

    HEX = "hex"
    DECIMAL = "decimal"

    def render(self, number: int) -> str:
        return f"{number:08x}" if self is IdFormat.HEX else str(number)


@dataclass(frozen=True, slots=True)
class Account:
    system_id: str = "smppd"
    password: str = field(default="secret", repr=False)
    max_binds: int | None = None  # past it, a bind gets ESME_RALYBND


@dataclass(frozen=True, slots=True)
class ReceiptConfig:
    """Delivery receipts, sent when a submit's registered_delivery asks for one (bits 0-1)."""

    delay_s: float = 0.0  # after the submit_sm_resp is written
    # ReceiptStat word -> weight; each receipt's stat is drawn with these weights.
    outcomes: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({ReceiptStat.DELIVRD.value: 1.0})
    )
    before_resp: bool = False  # receipt on the wire before the submit_sm_resp (no delay)
    duplicate: bool = False  # every receipt is sent twice
    # One receipt per concatenated message, for its last part (UDH or SAR sequence = total),
    # as some carriers do; the other parts get none.
    per_message: bool = False
    id_format: IdFormat | None = None  # the id in the receipt; None: as in the resp
    # Resend a receipt not acknowledged with ESME_ROK within this time (or this long after a
    # deliver_sm_resp with an error status).
    retry_timeout_s: float = 5.0
    # The share of receipts never sent (the message is settled all the same), as a carrier that
    # loses them: for the daemon's receipt_wait_s and its overdue alert. 1.0 sends none.
    lost: float = 0.0
    # False: no receipt is sent by itself (messages stay ENROUTE); the control op `receipt`
    # sends one for a given id when the test or the user asks.
    auto: bool = True

    def check(self) -> None:
        # Written so that NaN fails each test: it compares false with everything.
        if not (math.isfinite(self.delay_s) and self.delay_s >= 0):
            raise ValueError(f"receipts.delay_s must be a finite number >= 0, not {self.delay_s}")
        if not (math.isfinite(self.retry_timeout_s) and self.retry_timeout_s > 0):
            raise ValueError(
                f"receipts.retry_timeout_s must be a finite number > 0, not {self.retry_timeout_s}"
            )
        if not 0.0 <= self.lost <= 1.0:
            raise ValueError("receipts: lost must be a share from 0 to 1")
        for word, weight in self.outcomes.items():
            if word not in ReceiptStat.__members__:
                raise ValueError(f"receipts.outcomes: unknown stat {word!r}")
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(
                    f"receipts.outcomes.{word}: a weight is a finite number >= 0, not {weight}"
                )
        if not 0 < sum(self.outcomes.values()) < math.inf:
            raise ValueError("receipts.outcomes: the weights must add up to a finite number > 0")


@dataclass(frozen=True, slots=True)
class SmscConfig:
    host: str = "127.0.0.1"
    port: int = 2775  # 0 picks a free port; FakeSmsc.port tells which
    accounts: tuple[Account, ...] = (Account(),)
    system_id: str = "fake_smsc"  # ours, in bind_resp
    # sc_interface_version in bind_resp (0x34: takes TLVs; 0x33: SMPP 3.3, none); None: omitted.
    interface_version: int | None = 0x34
    message_id_format: IdFormat = IdFormat.HEX
    message_id_start: int = 1
    default_alphabet: Alphabet = Alphabet.GSM7  # what data_coding 0 means: gsm7 or latin1
    receipts: ReceiptConfig = field(default_factory=ReceiptConfig)
    faults: Faults = field(default_factory=Faults)  # copied at start; the server's own changes
    mo_concatenation: ConcatMethod = ConcatMethod.UDH8  # how long MO texts are split
    outbound_window: int = 100  # deliver_sm awaiting deliver_sm_resp per connection
    record_path: Path | None = None  # JSON lines of every segment and message
    record_in_memory: bool = True  # False: counters only, for long benchmark runs
    control: str | None = None  # Unix socket path, or a TCP port on 127.0.0.1
    max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH
    max_tracked_messages: int = 100_000  # ids remembered for query_sm / cancel_sm
    # Segments and messages kept in memory (the latest; counters and --record keep them all),
    # so that a long run does not grow without end.
    max_records: int = 100_000

    def check(self) -> None:
        if not self.accounts:
            raise ValueError("accounts: at least one account is needed")
        if len({a.system_id for a in self.accounts}) != len(self.accounts):
            raise ValueError("accounts: system_id values must be unique")
        for account in self.accounts:
            if not isinstance(account.system_id, str) or not isinstance(account.password, str):
                raise TypeError("accounts: system_id and password must be strings")
            if not 1 <= len(account.system_id) <= 15 or len(account.password) > 8:
                # SMPP v3.4 5.2.1-5.2.2: an ESME could not bind with anything else.
                raise ValueError("accounts: system_id is 1 to 15 characters, password at most 8")
            if account.max_binds is not None and (
                not isinstance(account.max_binds, int) or account.max_binds < 1
            ):
                raise ValueError("accounts.max_binds must be an integer of at least 1, or null")
        if self.default_alphabet not in (Alphabet.GSM7, Alphabet.LATIN1):
            raise ValueError("default_alphabet must be gsm7 or latin1")
        if not 0 <= self.port <= 0xFFFF or self.outbound_window < 1:
            raise ValueError("port must be 0..65535 and outbound_window at least 1")
        control = self.control or ""
        if control.isascii() and control.isdigit() and int(control) > 0xFFFF:
            raise ValueError("control: a port is 0..65535 (or give a socket path)")
        if self.message_id_start < 0:
            raise ValueError("message_id_start must be 0 or more")
        if self.max_records < 1:
            raise ValueError("max_records must be at least 1")
        if self.max_tracked_messages < 1:  # the id of the latest message is always kept
            raise ValueError("max_tracked_messages must be at least 1")
        if self.max_command_length < HEADER_SIZE:
            raise ValueError(f"max_command_length must be at least {HEADER_SIZE} (the PDU header)")
        if self.interface_version is not None and not 0 <= self.interface_version <= 0xFF:
            raise ValueError("interface_version must be 0..255 (0x34 for SMPP 3.4), or null")
        self.receipts.check()
        self.faults.check()


_SCALARS: dict[str, type] = {
    "host": str,
    "port": int,
    "system_id": str,
    "message_id_start": int,
    "outbound_window": int,
    "record_in_memory": bool,
    "max_command_length": int,
    "max_tracked_messages": int,
    "max_records": int,
}


def load_scenario(path: Path, base: SmscConfig | None = None) -> SmscConfig:
    """`base` (or the defaults) with the keys of the scenario file at `path` applied."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read scenario: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_reason(text, exc)}") from None
    except ValueError as exc:  # a YAML 1.1 timestamp that is no date (2024-02-30)
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deep") from None
    try:
        return from_mapping({} if raw is None else raw, base or SmscConfig())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _yaml_reason(text: str, exc: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: where and why (nothing it read on a
    password's line: smppd.configload.yaml_problem)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        reason = f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
        if exc.context:
            since = exc.context_mark
            reason += f" ({exc.context}" + (
                f" from line {since.line + 1})" if since is not None else ")"
            )
        return yaml_problem(text, exc, reason)
    return " ".join(str(exc).split())


def from_mapping(raw: Any, base: SmscConfig) -> SmscConfig:
    """`base` with the keys of a parsed scenario applied; ValueError naming a bad key."""
    if not isinstance(raw, Mapping):
        raise TypeError("a scenario is a mapping of keys")
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SCALARS:
            kind = _SCALARS[key]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{key}: expected {kind.__name__}, got {value!r}")
            changes[key] = value
        elif key == "accounts":
            changes[key] = _accounts(value)
        elif key == "message_id_format":
            changes[key] = _choice(key, IdFormat, value)
        elif key == "default_alphabet":
            changes[key] = _choice(key, Alphabet, value)
        elif key == "mo_concatenation":
            changes[key] = _choice(key, ConcatMethod, value)
        elif key == "receipts":
            changes[key] = receipt_config(value, base.receipts)
        elif key == "faults":
            faults = base.faults.copy()
            faults.update(_mapping("faults", value), where="faults.")
            changes[key] = faults
        elif key == "record_path":
            if value is not None and not isinstance(value, str):
                raise ValueError(f"record_path: expected a file path or null, got {value!r}")
            changes[key] = None if value is None else Path(value)
        elif key == "control":
            if isinstance(value, bool) or not isinstance(value, str | int | None):
                raise ValueError(f"control: expected a port, a socket path or null, got {value!r}")
            changes[key] = None if value is None else str(value)
        elif key == "interface_version":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"interface_version: expected an integer or null, got {value!r}")
            changes[key] = value
        else:
            raise ValueError(f"unknown key {key!r}")
    config = replace(base, **changes)
    config.check()
    return config


def receipt_config(raw: Any, base: ReceiptConfig) -> ReceiptConfig:
    """`base` with the receipt keys of `raw` applied (also used by the control interface)."""
    changes: dict[str, Any] = {}
    for key, value in _mapping("receipts", raw).items():
        if key in ("delay_s", "retry_timeout_s", "lost"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"receipts.{key}: expected a number, got {value!r}")
            changes[key] = float(value)
        elif key in ("before_resp", "duplicate", "per_message", "auto"):
            if not isinstance(value, bool):
                raise ValueError(f"receipts.{key}: expected true or false, got {value!r}")
            changes[key] = value
        elif key == "outcomes":
            outcomes = _mapping("receipts.outcomes", value)
            weights = {}
            for word, weight in outcomes.items():
                if isinstance(weight, bool) or not isinstance(weight, int | float):
                    raise TypeError(f"receipts.outcomes.{word}: expected a number, got {weight!r}")
                weights[str(word)] = float(weight)
            changes[key] = MappingProxyType(weights)
        elif key == "id_format":
            changes[key] = None if value is None else _choice("receipts.id_format", IdFormat, value)
        else:
            raise ValueError(f"unknown key 'receipts.{key}'")
    result = replace(base, **changes)
    result.check()
    return result


def _choice(where: str, kind: type[E], value: Any) -> E:
    """`kind(value)`, or ValueError naming the key and the choices."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(member.value) for member in kind)
        raise ValueError(f"{where}: expected one of {choices}, got {value!r}") from None


def _mapping(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}: expected a mapping, got {value!r}")
    return value


def _accounts(value: Any) -> tuple[Account, ...]:
    if not isinstance(value, list):
        raise TypeError("accounts: expected a list")
    allowed = {f.name for f in fields(Account)}
    accounts = []
    for raw in value:
        entry = _mapping("accounts[]", raw)
        unknown = set(entry) - allowed
        if unknown:
            raise ValueError(f"unknown key 'accounts.{sorted(unknown)[0]}'")
        accounts.append(Account(**entry))
    return tuple(accounts)
