"""smppd's configuration: one YAML file validated at start into frozen, typed sections.

It owns the schema (every section, its defaults and ranges), the checks across sections (names
unique, routes and senders referring to what exists) and the resolution of secrets at load time.
Each component receives its own section; none of them reads YAML. It must not know how a section
is used: the send loop, the API and the sessions interpret their settings.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import ssl
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final, Literal

from smppd.address import SHORT_CODE_MAX_DIGITS, canonical_sender, sender_problem
from smppd.compliance import keyword_key
from smppd.configload import (
    Check,
    ConfigError,
    Converter,
    Length,
    OneOf,
    Pattern,
    Range,
    Secret,
    ValidationError,
    derive,
    load,
)
from smppd.pdu.status import CommandStatus
from smppd.tlsctx import EncryptedKeyError, load_chain

__all__ = [
    "EX_CONFIG",
    "ApiClient",
    "ApiConfig",
    "AutoReplies",
    "BindMode",
    "Carrier",
    "Compliance",
    "Concatenation",
    "Config",
    "ConfigError",
    "DataCoding",
    "HostPort",
    "LoggingConfig",
    "MessageIdFormat",
    "MetricsConfig",
    "OptOutScope",
    "OverCap",
    "QueueConfig",
    "Reconnect",
    "Route",
    "Sender",
    "SenderKind",
    "Tls",
    "config_diff",
    "load_config",
]

EX_CONFIG: Final = 78  # sysexits.h: the CLI exits with this when the config is unusable

DAY_S: Final = 86_400.0


class BindMode(StrEnum):
    TRANSCEIVER = "transceiver"
    TRANSMITTER = "transmitter"
    RECEIVER = "receiver"


class DataCoding(StrEnum):
    """What the carrier's SMSC means by data_coding 0 (SMPP v3.4 5.2.19 leaves it to the SMSC)."""

    GSM = "gsm"
    LATIN1 = "latin1"


class Concatenation(StrEnum):
    UDH8 = "udh8"  # UDH IE 0x00, 8-bit reference
    UDH16 = "udh16"  # UDH IE 0x08, 16-bit reference
    SAR = "sar"  # sar_msg_ref_num / sar_total_segments / sar_segment_seqnum TLVs
    PAYLOAD = "payload"  # one submit_sm with the whole text in message_payload


class NationalLanguage(StrEnum):
    """National language shift tables (3GPP TS 23.038 annex A) for text GSM 03.38 lacks."""

    NONE = "none"
    TURKISH = "turkish"
    SPANISH = "spanish"  # a single shift table only
    PORTUGUESE = "portuguese"


class MessageIdFormat(StrEnum):
    """How the carrier writes message_id in receipts relative to submit_sm_resp."""

    AUTO = "auto"
    HEX = "hex"
    DECIMAL = "decimal"


class ReceiptsPer(StrEnum):
    """What one delivery receipt from the carrier stands for."""

    SEGMENT = "segment"  # one receipt per submit_sm (SMPP's own rule)
    MESSAGE = "message"  # one per concatenated message: it settles every part


class SenderKind(StrEnum):
    SHORT = "short"
    LONG = "long"
    ALPHA = "alpha"


class OverCap(StrEnum):
    REFUSE = "refuse"
    HOLD = "hold"


class OptOutScope(StrEnum):
    SENDER = "sender"
    CLIENT = "client"


# --- shared field types -------------------------------------------------------------------------

Name = Annotated[
    str,
    Pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", "a name of letters, digits, '.', '_' or '-'"),
]
# SMPP v3.4 C-Octet strings (system_id, password, system_type) are ASCII; the SMSC sees bytes.
SmppText = Pattern(r"[\x20-\x7e]*", "printable ASCII text")
Timeout = Annotated[float, Range(0, 3600, above=True)]
Interval = Annotated[float, Range(0, DAY_S, above=True)]
Rate = Annotated[float, Range(0, 1_000_000, above=True)]
Ton = Annotated[int, Range(0, 6)]  # SMPP v3.4 5.2.5
Npi = Annotated[int, OneOf((0, 1, 3, 4, 6, 8, 9, 10, 14, 18))]  # SMPP v3.4 5.2.6


class FileMode(Converter):
    """A permission mode written as a quoted octal string ("0660"); an unquoted YAML 0660 is
    already the integer 432 and an unquoted 660 is decimal, so numbers are refused."""

    def convert(self, raw: object) -> object:
        if isinstance(raw, str) and (m := re.fullmatch(r"(?:0o)?([0-7]{3,4})", raw)):
            return int(m[1], 8)
        raise ValueError(raw)

    def describe(self) -> str:
        return 'a quoted octal mode such as "0660"'


_LABEL: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def is_host(text: str) -> bool:
    """An IP address, or a DNS name that could resolve: `256.1.1.1` and `smpp://x` are not."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return True
    if not text.isascii():  # an internationalised name: as the resolver and TLS write it
        try:
            ascii_form = text.encode("idna").decode("ascii")
            # Only one that reads back as written: IDNA 2003 maps "ß" to "ss" and drops soft
            # hyphens, another name than meant (write those in their xn-- form).
            if ascii_form.encode("ascii").decode("idna") != text.lower():
                return False
        except UnicodeError:
            return False
        text = ascii_form
    if len(text) > 253 or re.fullmatch(r"[0-9.]+", text):  # a dotted quad that is no address
        return False
    return all(_LABEL.fullmatch(label) for label in text.removesuffix(".").split("."))


@dataclass(frozen=True, slots=True)
class HostName(Check):
    def accepts(self, value: object) -> bool:
        return isinstance(value, str) and is_host(value)

    def describe(self, noun: str, base: object) -> str:
        return "a host name or IP address"


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int  # 0 asks the kernel for a free port

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class HostPortParser(Converter):
    def convert(self, raw: object) -> object:
        if isinstance(raw, str):
            m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", raw)
            if m and int(m[2] or m[4]) <= 65535:
                host = m[1] or m[3]
                if is_host(host) and (m[1] is None or ":" in host):
                    return HostPort(host, int(m[2] or m[4]))
        raise ValueError(raw)

    def describe(self) -> str:
        return 'an address "host:port" (or "[ipv6]:port")'


class CommandStatusParser(Converter):
    """A non-zero command_status: a number (0x hex too) or a spec name such as ESME_RSYSERR."""

    def convert(self, raw: object) -> object:
        if isinstance(raw, int) and not isinstance(raw, bool) and 0 < raw <= 0xFFFFFFFF:
            return raw
        if isinstance(raw, str) and raw in CommandStatus.__members__ and raw != "ESME_ROK":
            return int(CommandStatus[raw])
        raise ValueError(raw)

    def describe(self) -> str:
        return "a command_status: a number from 1 to 0xFFFFFFFF or a name such as ESME_RSYSERR"


Status = Annotated[int, CommandStatusParser()]


@dataclass(frozen=True, slots=True)
class NumberPrefix(Converter):
    """Leading digits of an international number; a leading '+' is accepted and dropped."""

    max_digits: int = 15
    country: bool = False  # a country calling code: 1 to 3 digits, never starting with 0

    def convert(self, raw: object) -> object:
        regex = r"\+?[1-9][0-9]{0,2}" if self.country else rf"\+?[0-9]{{0,{self.max_digits}}}"
        if isinstance(raw, str) and re.fullmatch(regex, raw):
            return raw.removeprefix("+")
        raise ValueError(raw)

    def describe(self) -> str:
        if self.country:
            return 'a quoted country calling code such as "44"'
        return f"a quoted number prefix of at most {self.max_digits} digits"


class Keyword(Converter):
    """A keyword matched against inbound texts (smppd.compliance); stored upper-case, its
    words one space apart."""

    def convert(self, raw: object) -> object:
        if isinstance(raw, str) and 1 <= len(keyword_key(raw)) <= 32:
            return " ".join(raw.split()).upper()
        raise ValueError(raw)

    def describe(self) -> str:
        return "a word or words of at most 32 letters"


# --- sections -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    path: Path = Path("/var/lib/smppd/smppd.db")
    retention_s: Annotated[float, Range(0, 366 * DAY_S)] = 7 * DAY_S
    max_depth: Annotated[int, Range(1, 1_000_000_000)] = 5_000_000
    claim_batch: Annotated[int, Range(1, 100_000)] = 500
    max_attempts: Annotated[int, Range(1, 10_000)] = 20
    retry_initial_s: Interval = 1.0
    retry_max_s: Interval = 300.0
    receipt_hold_s: Interval = 300.0
    receipt_wait_s: Annotated[float, Range(60, 366 * DAY_S)] = 3 * DAY_S
    commit_interval_s: Annotated[float, Range(0, 1)] = 0.002

    def __post_init__(self) -> None:
        if self.retry_initial_s > self.retry_max_s:
            raise ValidationError("must not exceed retry_max_s", "retry_initial_s")
        if _probe(self.path, Path.is_dir, "path"):
            raise ValidationError(f"{self.path} is a directory; name the database file", "path")


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiClient:
    name: Name
    uids: tuple[Annotated[int, Range(0, 2**32 - 2)], ...] = ()
    any_uid: bool = False  # explicit: any local user who can open the socket is this client
    senders: tuple[str, ...] = ()  # after loading: every sender id it may use, owned ones included
    priority_max: Annotated[int, Range(0, 3)] | None = None  # as SMPP priority_flag 0..3
    # Receives the MO messages to numbers no sender entry owns (at most one client).
    unowned_inbound: bool = False
    # Its segments not yet accepted by a carrier past which its submits are refused
    # (client_queue_full); default: only queue.max_depth applies.
    max_queued: Annotated[int, Range(1, 100_000_000)] | None = None
    # The smart_encoding of its submits that do not say (look-alike punctuation as GSM).
    smart_encoding: bool = False
    # How long its messages that give no validity_s may wait to be sent, from when they are
    # due (their schedule_at, or the submit); default: as long as the queue keeps them.
    validity_s: Annotated[float, Range(0, 30 * DAY_S, above=True)] | None = None

    def __post_init__(self) -> None:
        if self.any_uid and self.uids:
            raise ValidationError("give either uids or any_uid: true, not both", "uids")
        if not self.any_uid and not self.uids:
            raise ValidationError("list at least one uid, or set any_uid: true", "uids")


_SUN_PATH_MAX: Final = 107  # sockaddr_un.sun_path is 108 bytes with the terminating NUL


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    socket: Path = Path("/run/smppd/smppd.sock")
    mode: Annotated[int, FileMode()] = 0o660
    max_line_bytes: Annotated[int, Range(1024, 64 * 1024 * 1024)] = 1024 * 1024
    idle_timeout_s: Interval = 300.0
    max_connections: Annotated[int, Range(1, 65_536)] = 256
    max_connections_per_client: Annotated[int, Range(1, 65_536)] = 128
    # Messages (a submit_many counts each of its own) in progress: a bound on what they hold.
    max_pending_per_connection: Annotated[int, Range(1, 1_000_000)] = 10_000
    max_pending: Annotated[int, Range(1, 10_000_000)] = 100_000
    clients: tuple[ApiClient, ...] = ()

    def __post_init__(self) -> None:
        if len(os.fsencode(self.socket)) > _SUN_PATH_MAX:
            raise ValidationError(f"path longer than {_SUN_PATH_MAX} bytes", "socket")

    def client_for_uid(self, uid: int) -> ApiClient | None:
        """The client a peer with this uid (SO_PEERCRED) acts as: a listed uid wins over any_uid."""
        listed = next((c for c in self.clients if uid in c.uids), None)
        return listed or next((c for c in self.clients if c.any_uid), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    listen: Annotated[HostPort, HostPortParser()] | None = None  # None: no metrics endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True, slots=True, kw_only=True)
class Tls:
    enabled: bool = False
    ca_file: Path | None = None  # None: the system's trust store
    cert_file: Path | None = None
    key_file: Path | None = None
    verify_hostname: bool = True
    server_hostname: Annotated[str, HostName()] | None = None  # None: the carrier's host

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise ValidationError("cert_file and key_file go together", missing)
        if self.enabled and not self.verify_hostname and self.ca_file is None:
            # Against the system's trust store, any public certificate for any name would do.
            raise ValidationError(
                "false needs ca_file (the carrier's own CA): with the system's trust store "
                "any publicly issued certificate would be accepted",
                "verify_hostname",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconnect:
    initial_s: Interval = 1.0
    max_s: Interval = 60.0
    auth_failure_s: Interval = 300.0  # after a bind refused for credentials: don't hammer it
    # Held on one of the alternates this long, a bind goes back to host:port (null: stays).
    primary_after_s: Interval | None = 300.0

    def __post_init__(self) -> None:
        if self.initial_s > self.max_s:
            raise ValidationError("must not exceed max_s", "initial_s")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptQueries:
    """query_sm for segments whose receipt is late, as carriers that lose receipts need."""

    # Asked about this long after its acceptance, then again after as long as it has waited,
    # until queue.receipt_wait_s; null: never.
    after_s: Interval | None = None
    tps: Rate = 5.0  # queries a second at most, beside the submits


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitStatuses:
    """submit_sm_resp codes this carrier means otherwise than SMPP v3.4 does (its vendor codes
    0x400-0x4FF above all, which are read as permanent failures unless listed here)."""

    temporary: tuple[Status, ...] = ()  # retried, as after ESME_RSYSERR
    permanent: tuple[Status, ...] = ()  # the message fails at once
    throttling: tuple[Status, ...] = ()  # retried, and the bind slows down

    def __post_init__(self) -> None:
        seen: dict[int, str] = {}
        for key in ("temporary", "permanent", "throttling"):
            for code in getattr(self, key):
                if code in seen:
                    where = "twice" if seen[code] == key else f"in {seen[code]} too"
                    raise ValidationError(f"0x{code:08X} is listed {where}", key)
                seen[code] = key


@dataclass(frozen=True, slots=True, kw_only=True)
class Carrier:
    name: Name
    host: Annotated[str, HostName()]
    port: Annotated[int, Range(1, 65_535)] = 2775
    # The carrier's other SMSC addresses for the same account, tried in turn after host:port.
    alternates: Annotated[tuple[Annotated[HostPort, HostPortParser()], ...], Length(0, 8)] = ()
    # Bind i's own address is the i-th of host:port and the alternates, in turn (receiver
    # binds counted apart), instead of host:port for all: for carriers that cap binds per node.
    spread_binds: bool = False
    tls: Tls = field(default_factory=Tls)
    system_id: Annotated[str, SmppText, Length(1, 15)]  # SMPP v3.4 5.2.1: 16 octets with NUL
    # Given as password, password_file or password_credential; resolved when loading.
    password: Annotated[str, Secret(), SmppText, Length(0, 8)] = field(repr=False)  # 5.2.2
    system_type: Annotated[str, SmppText, Length(0, 12)] = ""  # 5.2.3: 13 octets
    # The bind's own address: which MO and receipts a shared SMSC routes to this ESME (5.2.7-9).
    address_range: Annotated[str, SmppText, Length(0, 40)] = ""  # 41 octets with NUL
    addr_ton: Ton = 0
    addr_npi: Npi = 0
    bind_mode: BindMode = BindMode.TRANSCEIVER
    binds: Annotated[int, Range(1, 64)] = 1
    # With bind_mode transmitter: bind_receiver sessions beside the binds, for a carrier that
    # sends receipts and MO only on those (0: none, and no receipts come).
    receiver_binds: Annotated[int, Range(0, 64)] = 0
    window: Annotated[int, Range(1, 10_000)] = 10
    tps: Rate = 50.0
    bind_tps: Rate | None = None
    enquire_link_interval_s: Timeout = 30.0
    response_timeout_s: Timeout = 10.0
    connect_timeout_s: Timeout = 10.0
    bind_timeout_s: Timeout = 10.0
    unbind_timeout_s: Timeout = 5.0
    reconnect: Reconnect = field(default_factory=Reconnect)
    default_data_coding: DataCoding = DataCoding.GSM
    concatenation: Concatenation = Concatenation.UDH8
    max_segments: Annotated[int, Range(1, 255)] = 10
    national_language: NationalLanguage = NationalLanguage.NONE
    message_id_format: MessageIdFormat = MessageIdFormat.AUTO
    receipts_per: ReceiptsPer = ReceiptsPer.SEGMENT
    source_ton: Ton | None = None  # None: from the sender's kind
    source_npi: Npi | None = None
    dest_ton: Ton | None = None  # None: from the destination's form (numbers 1/1, short codes 3/0)
    dest_npi: Npi | None = None
    service_type: Annotated[str, SmppText, Length(0, 5)] = ""  # 5.2.11: 6 octets with NUL
    registered_delivery: bool = True
    priority_flag: bool = False  # True: a message's priority goes as priority_flag 0..3
    throttle_backoff_s: Timeout = 1.0
    submit_statuses: SubmitStatuses = field(default_factory=SubmitStatuses)
    receipt_queries: ReceiptQueries = field(default_factory=ReceiptQueries)
    # An MO equal to one received this recently (source, destination, coding and user data) is
    # the SMSC delivering it again (our deliver_sm_resp was lost): answered, not stored again.
    inbound_dedup_s: Annotated[float, Range(0, DAY_S)] = 0.0
    # Taken out of service (the carrier's maintenance, say): no binds, and routes pass it over
    # at once; set and cleared by a reload.
    paused: bool = False

    def __post_init__(self) -> None:
        seen = {(self.host, self.port)}
        for alternate in self.alternates:
            if alternate.port == 0:
                raise ValidationError(f"{alternate}: an SMSC's port is 1 to 65535", "alternates")
            if (alternate.host, alternate.port) in seen:
                raise ValidationError(f"{alternate} is named twice (host:port too)", "alternates")
            seen.add((alternate.host, alternate.port))
        if self.spread_binds and not self.alternates:
            raise ValidationError("needs alternates to spread the binds over", "spread_binds")
        if self.receiver_binds and self.bind_mode is not BindMode.TRANSMITTER:
            raise ValidationError(
                f"only with bind_mode transmitter (a {self.bind_mode} bind receives already)",
                "receiver_binds",
            )
        if self.receipt_queries.after_s is not None and self.bind_mode is BindMode.RECEIVER:
            raise ValidationError(
                "needs binds that submit (query_sm goes where submit_sm does), not bind_mode"
                " receiver",
                "receipt_queries",
                "after_s",
            )
        if self.bind_tps is not None and self.bind_tps > self.tps:
            # Never reached: the carrier's own cap holds every bind below it.
            raise ValidationError(f"must not exceed tps ({self.tps:g})", "bind_tps")
        if self.national_language is not NationalLanguage.NONE:
            # The tables are named in each part's UDH, and the septets go as GSM 03.38.
            if self.concatenation not in (Concatenation.UDH8, Concatenation.UDH16):
                raise ValidationError(
                    "needs concatenation udh8 or udh16 (the tables are named in the UDH),"
                    f" not {self.concatenation}",
                    "national_language",
                )
            if self.default_data_coding is not DataCoding.GSM:
                raise ValidationError(
                    "needs default_data_coding gsm (the text goes as GSM 7-bit septets)",
                    "national_language",
                )

    @property
    def can_send(self) -> bool:
        return self.bind_mode is not BindMode.RECEIVER


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    prefix: Annotated[str, NumberPrefix()] = ""  # "" is the default route
    carriers: Annotated[tuple[Name, ...], Length(1)]  # in failover order
    failover_after_s: Annotated[float, Range(0, DAY_S)] = 30.0


def _sender_kind(values: Mapping[str, object]) -> SenderKind:
    sender = str(values["id"])
    if not re.fullmatch(r"\+?[0-9]+", sender):
        return SenderKind.ALPHA
    return SenderKind.SHORT if len(sender) <= 8 and sender[0] != "+" else SenderKind.LONG


_SENDER_ID: Final = {
    SenderKind.ALPHA: (r"[ -~]{1,11}", "at most 11 printable ASCII characters"),
    SenderKind.SHORT: (r"[0-9]{3,8}", "3 to 8 digits"),
    SenderKind.LONG: (r"\+?[0-9]{7,15}", "7 to 15 digits"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Sender:
    id: Annotated[str, Length(1, 16)]
    client: Name  # owner: it may submit from this id and receives the replies to it
    kind: SenderKind = field(metadata=derive(_sender_kind))
    tps: Rate | None = None
    daily_cap: Annotated[int, Range(1, 1_000_000_000)] | None = None
    over_cap: OverCap = OverCap.REFUSE

    def __post_init__(self) -> None:
        regex, rule = _SENDER_ID[self.kind]
        if not re.fullmatch(regex, self.id):
            raise ValidationError(f"a {self.kind} sender id must be {rule}, got {self.id!r}", "id")
        if (problem := sender_problem(self.id)) is not None:
            raise ValidationError(f"{problem}, got {self.id!r}", "id")
        object.__setattr__(self, "id", canonical_sender(self.id))


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoReplies:
    stop: Annotated[str, Length(1, 1000)] | None = None
    start: Annotated[str, Length(1, 1000)] | None = None
    help: Annotated[str, Length(1, 1000)] | None = None


Keywords = tuple[Annotated[str, Keyword()], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Compliance:
    stop_words: Keywords = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT")
    start_words: Keywords = ("START", "UNSTOP")
    help_words: Keywords = ("HELP", "INFO")
    scope: OptOutScope = OptOutScope.SENDER
    auto_replies: AutoReplies = field(default_factory=AutoReplies)
    default_country_prefix: Annotated[str, NumberPrefix(country=True)] | None = None
    # Bare digits up to this long are a short code, longer ones a number (smppd.address).
    short_code_max_digits: Annotated[int, Range(3, SHORT_CODE_MAX_DIGITS)] = SHORT_CODE_MAX_DIGITS

    def __post_init__(self) -> None:
        if self.short_code_max_digits < SHORT_CODE_MAX_DIGITS and not self.default_country_prefix:
            raise ValidationError(
                "needs default_country_prefix: bare digits longer than a short code are then"
                " a national number, of that country",
                "short_code_max_digits",
            )
        # STOP and START are what regulators and handsets' help pages tell people to send: a
        # list of local synonyms must not turn them off.
        for key, word in (("stop_words", "STOP"), ("start_words", "START")):
            words: tuple[str, ...] = getattr(self, key)
            if word not in words:
                object.__setattr__(self, key, (word, *words))
        # A word means one thing (as matched): stop wins over start and help, start over help.
        lists = (("stop", self.stop_words), ("start", self.start_words), ("help", self.help_words))
        for i, (kind, words) in enumerate(lists):
            for earlier, taken in lists[:i]:
                matched = {keyword_key(w): w for w in taken}
                if clash := [w for w in words if keyword_key(w) in matched]:
                    raise ValidationError(f"{clash[0]!r} is also a {earlier} word", f"{kind}_words")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    queue: QueueConfig = field(default_factory=QueueConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    carriers: Annotated[tuple[Carrier, ...], Length(1)]
    routes: Annotated[tuple[Route, ...], Length(1)]
    senders: tuple[Sender, ...] = ()
    compliance: Compliance = field(default_factory=Compliance)


# --- loading ------------------------------------------------------------------------------------


def load_config(
    path: Path, *, environ: Mapping[str, str] | None = None, read_secrets: bool = True
) -> Config:
    """Load and check `path`; raises ConfigError naming the file, the key path and the reason.

    `environ` supplies $CREDENTIALS_DIRECTORY for `password_credential` and $HOME for paths
    starting with ~ (default os.environ). `read_secrets` False checks how each secret is given
    but does not read its file or credential (it reads as ""): for checking a file outside the
    daemon's unit, where its credentials are not to be had.
    """
    env = os.environ if environ is None else environ
    return load(Config, path, environ=env, finish=_link, read_secrets=read_secrets)


def load_api_config(path: Path, *, environ: Mapping[str, str] | None = None) -> ApiConfig:
    """The `api` section of `path` alone, checked as load_config does: what a client needs (the
    socket). Carriers, their secrets and TLS files are not read."""
    env = os.environ if environ is None else environ
    return load(ApiConfig, path, environ=env, section="api")


def config_diff(old: Config, new: Config) -> set[str]:
    """Names of carriers added, removed or changed between two configs (password included)."""
    before = {c.name: c for c in old.carriers}
    after = {c.name: c for c in new.carriers}
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


def _probe(path: Path, test: Callable[[Path], bool], *key: str | int) -> bool:
    """`test(path)`, or the config error naming `key` that a path no file system takes is
    (a name over 255 bytes, a loop of links)."""
    try:
        return test(path)
    except OSError as exc:
        raise ValidationError(f"{path}: {exc.strerror}", *key) from None


def _check_tls(tls: Tls, where: tuple[str | int, ...]) -> None:
    """Load the files as a connection will, so that a file that is no certificate or key
    shows here and not as every connect failing; a private key anyone may read is refused."""
    if tls.key_file is not None:
        mode = stat.S_IMODE(tls.key_file.stat().st_mode)  # is_file() found it just before
        if mode & stat.S_IROTH:
            reason = f"{tls.key_file} is readable by everyone (mode {mode:04o}): chmod o-r it"
            raise ValidationError(reason, *where, "key_file")
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
    except (ssl.SSLError, OSError) as exc:
        reason = f"not a usable CA file: {_ssl_reason(exc)}"
        raise ValidationError(reason, *where, "ca_file") from None
    if tls.cert_file is not None:
        try:
            load_chain(context, tls.cert_file, tls.key_file)
        except EncryptedKeyError:
            reason = "is encrypted: smppd takes an unencrypted key (its mode and owner guard it)"
            raise ValidationError(reason, *where, "key_file") from None
        except (ssl.SSLError, OSError) as exc:
            reason = f"cert_file and key_file are no certificate and its key: {_ssl_reason(exc)}"
            raise ValidationError(reason, *where, "cert_file") from None


def _ssl_reason(exc: ssl.SSLError | OSError) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)  # "NO_CERTIFICATE_OR_CRL_FOUND", "KEY_VALUES_MISMATCH"
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", exc.strerror or str(exc))  # "[SSL] PEM lib"


def _first_duplicate(names: list[str]) -> tuple[int, int] | None:
    """(index of the first occurrence, index of the repeat) of the first repeated name."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            return seen[name], i
        seen[name] = i
    return None


def _link(config: Config) -> Config:
    """Checks across sections; returns the config with each client's full sender list."""
    for section, key, names in (
        ("carriers", "name", [c.name for c in config.carriers]),
        ("routes", "prefix", [r.prefix for r in config.routes]),
        ("senders", "id", [s.id for s in config.senders]),
    ):
        if dup := _first_duplicate(names):
            first, again = dup
            reason = f"{names[again]!r} is already used by {section}[{first}]"
            raise ValidationError(reason, section, again, key)
    short_max = config.compliance.short_code_max_digits
    for i, sender in enumerate(config.senders):
        # A number under the plan (see Compliance): it goes out, and MO to it comes back, in
        # international form; bare, it would be taken for a short code (TON 3).
        if sender.id.isascii() and sender.id.isdigit() and short_max < len(sender.id) <= 8:
            reason = (
                f"{len(sender.id)} digits is a number, not a short code, under"
                f" compliance.short_code_max_digits {short_max}: write it in international form"
                f" (+{config.compliance.default_country_prefix}...)"
            )
            raise ValidationError(reason, "senders", i, "id")
    carriers = {c.name: c for c in config.carriers}
    for i, carrier in enumerate(config.carriers):
        for key in ("ca_file", "cert_file", "key_file"):
            file = getattr(carrier.tls, key)
            where = ("carriers", i, "tls", key)
            if carrier.tls.enabled and file is not None and not _probe(file, Path.is_file, *where):
                if _probe(file, Path.is_dir, *where):  # a CA directory (CApath) is not taken
                    raise ValidationError(f"{file} is a directory, not a PEM file", *where)
                raise ValidationError(f"no such file: {file}", *where)
        if carrier.tls.enabled:
            _check_tls(carrier.tls, ("carriers", i, "tls"))
    for i, route in enumerate(config.routes):
        if dup := _first_duplicate(list(route.carriers)):
            raise ValidationError("listed twice", "routes", i, "carriers", dup[1])
        for j, name in enumerate(route.carriers):
            if name not in carriers:
                raise ValidationError(f"no carrier named {name!r}", "routes", i, "carriers", j)
            if not carriers[name].can_send:
                reason = f"carrier {name!r} binds as receiver only and cannot send"
                raise ValidationError(reason, "routes", i, "carriers", j)
    return dataclasses.replace(config, api=_link_clients(config))


def _link_clients(config: Config) -> ApiConfig:
    clients = config.api.clients
    if dup := _first_duplicate([c.name for c in clients]):
        raise ValidationError(f"{clients[dup[1]].name!r} is already used", "api", "clients", dup[1])
    any_uid = [i for i, c in enumerate(clients) if c.any_uid]
    if len(any_uid) > 1:
        reason = f"only one client may have any_uid (api.clients[{any_uid[0]}] has it too)"
        raise ValidationError(reason, "api", "clients", any_uid[1], "any_uid")
    unowned = [i for i, c in enumerate(clients) if c.unowned_inbound]
    if len(unowned) > 1:
        reason = f"only one client may have unowned_inbound (api.clients[{unowned[0]}] has it too)"
        raise ValidationError(reason, "api", "clients", unowned[1], "unowned_inbound")
    owner_of_uid: dict[int, int] = {}
    for i, client in enumerate(clients):
        for j, uid in enumerate(client.uids):
            if owner_of_uid.setdefault(uid, i) != i:
                reason = f"uid {uid} already belongs to api.clients[{owner_of_uid[uid]}]"
                raise ValidationError(reason, "api", "clients", i, "uids", j)
    names = {c.name for c in clients}
    sender_ids = {s.id for s in config.senders}
    for i, sender in enumerate(config.senders):
        if sender.client not in names:
            raise ValidationError(f"no api client named {sender.client!r}", "senders", i, "client")
    linked = []
    for i, client in enumerate(clients):
        listed = [canonical_sender(sender_id) for sender_id in client.senders]
        for j, sender_id in enumerate(listed):
            if sender_id not in sender_ids:
                reason = f"no sender with id {client.senders[j]!r}"
                raise ValidationError(reason, "api", "clients", i, "senders", j)
        owned = [s.id for s in config.senders if s.client == client.name]
        full = tuple(dict.fromkeys([*listed, *owned]))
        linked.append(dataclasses.replace(client, senders=full))
    return dataclasses.replace(config.api, clients=tuple(linked))
