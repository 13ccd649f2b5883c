"""Encode and decode PDUs, and frame them out of a byte stream.

The field tables in `smppd.pdu.fields` are compiled once, at import, into one straight-line
encoder and decoder per PDU class (as dataclasses and attrs generate __init__): the tables stay the
single description of the wire format and the hot path pays for no per-field dispatch.

Decoding never raises anything but `DecodeError`, whatever the bytes. Tolerances, each seen in
real SMSCs: a resp whose body is empty or one stray octet (error resps usually carry no body); a
C-string whose NUL is missing at the very end of the body; unknown TLVs (kept, byte for byte).
Lengths are strict: command_length is capped, sm_length and TLV lengths must fit the PDU.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import fields as dc_fields
from typing import Any, Final

from smppd.pdu import fields as spec
from smppd.pdu import tlv as _tlv
from smppd.pdu.command import CommandId
from smppd.pdu.errors import DecodeError, EncodeError
from smppd.pdu.pdus import PDU_BY_ID, DestAddress, Pdu, UnsuccessSme
from smppd.pdu.status import CommandStatus
from smppd.pdu.tlv import Tag, Tlv

HEADER = struct.Struct(">IIII")
HEADER_SIZE = 16
# The largest message_payload (65,535 octets) with every mandatory field at its longest and
# room for other TLVs: a legitimate PDU is never refused, so never redelivered in a loop.
DEFAULT_MAX_COMMAND_LENGTH = 72 * 1024

_TLV_HEAD = struct.Struct(">HH")
_TLV_LENGTHS = _tlv.LENGTHS

Encoder = Callable[[Any], bytes]
Decoder = Callable[[bytes, int, int], Pdu]

# --- helpers the generated code calls (on error paths only) -------------------------------


def _short(cid: int, seq: int, name: str) -> DecodeError:
    return DecodeError(
        f"body ends before field {name}",
        command_status=CommandStatus.ESME_RINVCMDLEN,
        command_id=cid,
        sequence_number=seq,
    )


def _cstr_end(body: bytes, p: int, n: int, size: int, status: int, cid: int, seq: int) -> int:
    """Where a C-string with no NUL inside its maximum size ends, if that is tolerable."""
    if n - p < size:  # the body simply ends: the peer dropped the final NUL
        return n
    raise DecodeError(
        f"C-string longer than {size - 1} octets",
        command_status=status,
        command_id=cid,
        sequence_number=seq,
    )


def _bad(message: str, status: int, cid: int, seq: int) -> DecodeError:
    return DecodeError(message, command_status=status, command_id=cid, sequence_number=seq)


def _read_cstr(body: bytes, p: int, n: int, size: int, status: int, cid: int, seq: int) -> int:
    e = body.find(0, p, p + size)
    return e if e >= 0 else _cstr_end(body, p, n, size, status, cid, seq)


def _decode_dests(body: bytes, p: int, cid: int, seq: int) -> tuple[tuple[DestAddress, ...], int]:
    n = len(body)
    if p >= n:
        raise _short(cid, seq, "number_of_dests")
    count = body[p]
    p += 1
    out = []
    for _ in range(count):
        if p >= n:
            raise _short(cid, seq, "dest_address")
        flag = body[p]
        p += 1
        if flag == 1:
            if p + 2 > n:
                raise _short(cid, seq, "dest_address")
            ton, npi = body[p], body[p + 1]
            p += 2
            e = _read_cstr(body, p, n, 21, CommandStatus.ESME_RINVDSTADR, cid, seq)
            out.append(DestAddress(1, ton, npi, body[p:e].decode("latin-1")))
        elif flag == 2:
            e = _read_cstr(body, p, n, 21, CommandStatus.ESME_RINVDLNAME, cid, seq)
            out.append(DestAddress(2, dl_name=body[p:e].decode("latin-1")))
        else:
            raise _bad(f"dest_flag {flag}", CommandStatus.ESME_RINVDESTFLAG, cid, seq)
        p = e + 1
    return tuple(out), p


def _encode_dests(dests: tuple[DestAddress, ...]) -> bytes:
    if len(dests) > 254:
        raise EncodeError("submit_multi takes at most 254 destinations")
    out = [bytes((len(dests),))]
    for d in dests:
        if d.dest_flag == 1:
            out.append(bytes((1, d.dest_addr_ton, d.dest_addr_npi)))
            out.append(_cstr_bytes(d.destination_addr, 21, "destination_addr"))
        elif d.dest_flag == 2:
            out.append(b"\x02" + _cstr_bytes(d.dl_name, 21, "dl_name"))
        else:
            raise EncodeError(f"dest_flag must be 1 or 2, not {d.dest_flag}")
    return b"".join(out)


def _decode_unsuccess(
    body: bytes, p: int, cid: int, seq: int
) -> tuple[tuple[UnsuccessSme, ...], int]:
    n = len(body)
    if p >= n:  # no_unsuccess omitted: tolerated like any short resp
        return (), p
    count = body[p]
    p += 1
    out = []
    for _ in range(count):
        if p + 2 > n:
            raise _short(cid, seq, "unsuccess_sme")
        ton, npi = body[p], body[p + 1]
        p += 2
        e = _read_cstr(body, p, n, 21, CommandStatus.ESME_RINVDSTADR, cid, seq)
        addr = body[p:e].decode("latin-1")
        p = e + 1
        if p + 4 > n:
            raise _short(cid, seq, "error_status_code")
        (code,) = struct.unpack_from(">I", body, p)
        p += 4
        out.append(UnsuccessSme(ton, npi, addr, code))
    return tuple(out), p


def _encode_unsuccess(smes: tuple[UnsuccessSme, ...]) -> bytes:
    if len(smes) > 255:
        raise EncodeError("at most 255 unsuccess_sme entries")
    out = [bytes((len(smes),))]
    for u in smes:
        out.append(bytes((u.dest_addr_ton, u.dest_addr_npi)))
        out.append(_cstr_bytes(u.destination_addr, 21, "destination_addr"))
        out.append(struct.pack(">I", u.error_status_code))
    return b"".join(out)


def _cstr_bytes(value: str, size: int, name: str) -> bytes:
    raw = value.encode("latin-1")
    if len(raw) >= size:
        raise EncodeError(f"{name} longer than {size - 1} octets")
    if 0 in raw:
        raise EncodeError(f"{name} holds a NUL")
    return raw + b"\0"


# What an SMSC delivers to us: a receipt or an MO. Refusing one for a TLV we only read in
# passing would lose it (the SMSC resends it and gets the same answer, or gives up), so stray
# trailing octets are ignored and a known TLV of the wrong length is kept as it came: its
# readers ignore a value they cannot use (a network_error_code not of 3 octets, say).
_DELIVERIES: Final = frozenset({int(CommandId.deliver_sm), int(CommandId.data_sm)})


def _decode_tlvs(body: bytes, p: int, cid: int, seq: int, is_resp: bool) -> tuple[Tlv, ...]:
    n = len(body)
    out = []
    lenient = is_resp or cid in _DELIVERIES
    while p < n:
        if n - p < 4:
            if lenient:  # stray trailing octets cost nothing to ignore
                break
            raise _bad("truncated TLV header", CommandStatus.ESME_RINVOPTPARSTREAM, cid, seq)
        tag, length = _TLV_HEAD.unpack_from(body, p)
        p += 4
        if p + length > n:
            raise _bad(
                f"TLV 0x{tag:04X} length {length} runs past the PDU",
                CommandStatus.ESME_RINVOPTPARSTREAM,
                cid,
                seq,
            )
        bounds = _TLV_LENGTHS.get(tag)
        if bounds is not None and not bounds[0] <= length <= bounds[1] and not lenient:
            _tlv.check(tag, length, command_id=cid, sequence_number=seq)  # raises
        out.append(Tlv(tag, body[p : p + length]))
        p += length
    return tuple(out)


def _encode_tlvs(tlvs: tuple[Tlv, ...]) -> bytes:
    # A tag or length past 16 bits makes pack raise struct.error, which encode() translates.
    pack = _TLV_HEAD.pack
    return b"".join([pack(tag, len(value)) + value for tag, value in tlvs])


_MESSAGE_PAYLOAD = int(Tag.message_payload)  # a plain int: compared once per TLV per encode


def _check_content(pdu: Any) -> None:
    short_message = pdu.short_message
    if len(short_message) > 254:
        raise EncodeError("short_message holds at most 254 octets; use message_payload")
    if short_message and pdu.tlvs and any(t.tag == _MESSAGE_PAYLOAD for t in pdu.tlvs):
        raise EncodeError("short_message and message_payload must not both be set")


# --- compilation of the field tables ----------------------------------------------------------

_NAMESPACE: dict[str, Any] = {
    "_short": _short,
    "_cstr_end": _cstr_end,
    "_bad": _bad,
    "_decode_dests": _decode_dests,
    "_encode_dests": _encode_dests,
    "_decode_unsuccess": _decode_unsuccess,
    "_encode_unsuccess": _encode_unsuccess,
    "_decode_tlvs": _decode_tlvs,
    "_encode_tlvs": _encode_tlvs,
    "_check_content": _check_content,
    "_unpack_u16": struct.Struct(">H").unpack_from,
    "_unpack_u32": struct.Struct(">I").unpack_from,
    "EncodeError": EncodeError,
    "INVMSGLEN": CommandStatus.ESME_RINVMSGLEN,
}

_INT_FORMAT = {spec.Kind.U8: "B", spec.Kind.U16: "H", spec.Kind.U32: "I"}


def _compile_decoder(cls: type[Pdu]) -> Decoder:
    cid = int(cls.command_id)
    is_resp = bool(cid & 0x80000000)
    lines = ["def decode(body, status, seq):", "    n = len(body)", "    p = 0"]
    if is_resp:
        # An error resp usually has no body, sometimes a lone octet: the fields keep defaults.
        lines.append("    if n <= 1: return cls(sequence_number=seq, command_status=status)")
    names = []
    for f in cls.FIELDS:
        name = f.name
        names.append(name)
        if f.kind is spec.Kind.U8:
            lines += [
                f"    if p >= n: raise _short({cid}, seq, {name!r})",
                f"    {name} = body[p]",
                "    p += 1",
            ]
        elif f.kind is spec.Kind.U16:
            lines += [
                f"    if p + 2 > n: raise _short({cid}, seq, {name!r})",
                f"    {name} = _unpack_u16(body, p)[0]",
                "    p += 2",
            ]
        elif f.kind is spec.Kind.U32:
            lines += [
                f"    if p + 4 > n: raise _short({cid}, seq, {name!r})",
                f"    {name} = _unpack_u32(body, p)[0]",
                "    p += 4",
            ]
        elif f.kind is spec.Kind.CSTRING:
            lines += [
                f"    e = body.find(0, p, p + {f.size})",
                f"    if e < 0: e = _cstr_end(body, p, n, {f.size}, {f.status}, {cid}, seq)",
                f"    {name} = body[p:e].decode('latin-1')",
                "    p = e + 1",
            ]
        elif f.kind is spec.Kind.SHORT_MESSAGE:
            lines += [
                f"    if p >= n: raise _short({cid}, seq, 'sm_length')",
                "    sm_length = body[p]",
                "    p += 1",
                "    if sm_length > 254 or p + sm_length > n:",
                f"        raise _bad(f'sm_length {{sm_length}} does not fit the PDU', INVMSGLEN, "
                f"{cid}, seq)",
                f"    {name} = body[p:p + sm_length]",
                "    p += sm_length",
            ]
        elif f.kind is spec.Kind.DEST_ADDRESSES:
            lines.append(f"    {name}, p = _decode_dests(body, p, {cid}, seq)")
        elif f.kind is spec.Kind.UNSUCCESS_SMES:
            lines.append(f"    {name}, p = _decode_unsuccess(body, p, {cid}, seq)")
    # Fill the slots directly: calling __init__ with twenty keywords costs more than the parse.
    lines += [
        "    pdu = _new(cls)",
        "    pdu.sequence_number = seq",
        "    pdu.command_status = status",
        f"    pdu.tlvs = _decode_tlvs(body, p, {cid}, seq, {is_resp}) if p < n else ()",
    ]
    lines += [f"    pdu.{name} = {name}" for name in names]
    lines.append("    return pdu")
    namespace = dict(_NAMESPACE, cls=cls, _new=object.__new__)
    exec("\n".join(lines), namespace)  # noqa: S102 - source built above from our own tables
    decoder: Decoder = namespace["decode"]
    return decoder


def _compile_encoder(cls: type[Pdu]) -> Encoder:
    lines = ["def encode(pdu):"]
    parts: list[str] = []
    ints: list[spec.Field] = []  # consecutive integer fields share one struct.pack

    def flush_ints() -> None:
        if ints:
            fmt = ">" + "".join(_INT_FORMAT[f.kind] for f in ints)
            parts.append(f"_pack({fmt!r}, {', '.join(f'pdu.{f.name}' for f in ints)})")
            ints.clear()

    for f in cls.FIELDS:
        if f.kind in _INT_FORMAT:
            ints.append(f)
            continue
        flush_ints()
        if f.kind is spec.Kind.CSTRING:
            var = f"v_{f.name}"
            lines += [
                f"    {var} = pdu.{f.name}.encode('latin-1')",
                f"    if len({var}) >= {f.size}:",
                f"        raise EncodeError('{f.name} longer than {f.size - 1} octets')",
                # A NUL inside would end the field there, and the next be read from the rest
                # (an int needle: bytes' memchr, several times faster than b"\\0").
                f"    if 0 in {var}:",
                f"        raise EncodeError('{f.name} holds a NUL')",
            ]
            parts += [var, "b'\\0'"]
        elif f.kind is spec.Kind.SHORT_MESSAGE:
            lines.append("    _check_content(pdu)")
            parts += [f"bytes((len(pdu.{f.name}),))", f"pdu.{f.name}"]
        elif f.kind is spec.Kind.DEST_ADDRESSES:
            parts.append(f"_encode_dests(pdu.{f.name})")
        elif f.kind is spec.Kind.UNSUCCESS_SMES:
            parts.append(f"_encode_unsuccess(pdu.{f.name})")
    flush_ints()
    parts.append("_encode_tlvs(pdu.tlvs) if pdu.tlvs else b''")
    lines.append(f"    return b''.join(({', '.join(parts)},))")
    source = "\n".join(lines)
    namespace = dict(_NAMESPACE, _pack=struct.pack)
    exec(source, namespace)  # noqa: S102 - source built above from our own tables
    inner: Encoder = namespace["encode"]

    def encode(pdu: Any) -> bytes:
        try:
            return inner(pdu)
        except UnicodeEncodeError as exc:
            raise EncodeError(f"{cls.__name__}: a C-string field is not ASCII/Latin-1") from exc
        except struct.error as exc:
            raise EncodeError(f"{cls.__name__}: an integer field is out of range: {exc}") from exc

    return encode


def _check_table(cls: type[Pdu]) -> None:
    declared = [f.name for f in dc_fields(cls)][3:]  # after sequence_number, status, tlvs
    table = [f.name for f in cls.FIELDS]
    if declared != table:
        raise AssertionError(f"{cls.__name__}: dataclass fields {declared} != table {table}")


_DECODERS: dict[int, Decoder] = {}
_ENCODERS: dict[type[Pdu], Encoder] = {}
for _cls in PDU_BY_ID.values():
    _check_table(_cls)
    _DECODERS[_cls.command_id] = _compile_decoder(_cls)
    _ENCODERS[_cls] = _compile_encoder(_cls)


# --- public API -------------------------------------------------------------------------------


def encode_body(pdu: Pdu) -> bytes:
    """The body of `pdu` (everything after the 16-octet header)."""
    return _ENCODERS[type(pdu)](pdu)


def encode(pdu: Pdu) -> bytes:
    """The whole PDU, header included."""
    body = _ENCODERS[type(pdu)](pdu)
    seq = pdu.sequence_number
    if not 0 <= seq <= 0xFFFFFFFF or not 0 <= pdu.command_status <= 0xFFFFFFFF:
        raise EncodeError("sequence_number and command_status must fit 32 bits")
    return HEADER.pack(HEADER_SIZE + len(body), pdu.command_id, pdu.command_status, seq) + body


def frame(command_id: int, command_status: int, sequence_number: int, body: bytes) -> bytes:
    """A PDU around an encoded body: the send loop encodes once and frames it per attempt."""
    return HEADER.pack(HEADER_SIZE + len(body), command_id, command_status, sequence_number) + body


def decode_body(command_id: int, command_status: int, sequence_number: int, body: bytes) -> Pdu:
    decoder = _DECODERS.get(command_id)
    if decoder is None:
        raise DecodeError(
            f"unknown command_id 0x{command_id:08X}",
            command_status=CommandStatus.ESME_RINVCMDID,
            command_id=command_id,
            sequence_number=sequence_number,
        )
    return decoder(body, command_status, sequence_number)


def decode(data: bytes) -> Pdu:
    """Decode exactly one whole PDU."""
    if len(data) < HEADER_SIZE:
        raise DecodeError(
            "shorter than a PDU header",
            command_status=CommandStatus.ESME_RINVCMDLEN,
            framing_lost=True,
        )
    length, cid, status, seq = HEADER.unpack_from(data)
    if length != len(data):
        raise DecodeError(
            f"command_length {length} but {len(data)} octets given",
            command_status=CommandStatus.ESME_RINVCMDLEN,
            command_id=cid,
            sequence_number=seq,
            framing_lost=True,
        )
    return decode_body(cid, status, seq, bytes(data[HEADER_SIZE:]))


class PduReader:
    """Frames PDUs out of a byte stream fed in arbitrary chunks.

    `feed()` appends bytes; `next_pdu()` returns the next whole PDU, None when more bytes are
    needed, or raises DecodeError. A PDU that fails to decode is consumed, so the caller answers it
    and goes on; an impossible command_length loses framing for good (`broken`), since nothing
    after it can be trusted. Memory is bounded by max_command_length plus one read.
    """

    def __init__(self, *, max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH) -> None:
        if max_command_length < HEADER_SIZE:
            raise ValueError("max_command_length must be at least 16")
        self._max = max_command_length
        self._buf = bytearray()
        self.broken = False

    def feed(self, data: bytes) -> None:
        if not self.broken:
            self._buf += data

    def __len__(self) -> int:
        return len(self._buf)

    def next_pdu(self) -> Pdu | None:
        buf = self._buf
        if self.broken or len(buf) < HEADER_SIZE:
            return None
        length, cid, status, seq = HEADER.unpack_from(buf)
        if length < HEADER_SIZE or length > self._max:
            self.broken = True
            buf.clear()
            raise DecodeError(
                f"command_length {length} outside 16..{self._max}",
                command_status=CommandStatus.ESME_RINVCMDLEN,
                command_id=cid,
                sequence_number=seq,
                framing_lost=True,
            )
        if len(buf) < length:
            return None
        body = bytes(buf[HEADER_SIZE:length])
        del buf[:length]
        return decode_body(cid, status, seq, body)
