"""Optional parameters (TLVs, SMPP v3.4 section 5.3).

A TLV is kept as its raw value bytes, so unknown tags and the order of tags survive a round trip
byte for byte. The table `TLV_TYPES` gives the known tags a type: the decoder checks their length
against it, and the typed accessors below read and build values through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import NamedTuple

from smppd.pdu.errors import DecodeError, EncodeError
from smppd.pdu.status import CommandStatus


class Tag(IntEnum):
    dest_addr_subunit = 0x0005
    dest_network_type = 0x0006
    dest_bearer_type = 0x0007
    dest_telematics_id = 0x0008
    source_addr_subunit = 0x000D
    source_network_type = 0x000E
    source_bearer_type = 0x000F
    source_telematics_id = 0x0010
    qos_time_to_live = 0x0017
    payload_type = 0x0019
    additional_status_info_text = 0x001D
    receipted_message_id = 0x001E
    ms_msg_wait_facilities = 0x0030
    privacy_indicator = 0x0201
    source_subaddress = 0x0202
    dest_subaddress = 0x0203
    user_message_reference = 0x0204
    user_response_code = 0x0205
    source_port = 0x020A
    destination_port = 0x020B
    sar_msg_ref_num = 0x020C
    language_indicator = 0x020D
    sar_total_segments = 0x020E
    sar_segment_seqnum = 0x020F
    sc_interface_version = 0x0210
    callback_num_pres_ind = 0x0302
    callback_num_atag = 0x0303
    number_of_messages = 0x0304
    callback_num = 0x0381
    dpf_result = 0x0420
    set_dpf = 0x0421
    ms_availability_status = 0x0422
    network_error_code = 0x0423
    message_payload = 0x0424
    delivery_failure_reason = 0x0425
    more_messages_to_send = 0x0426
    message_state = 0x0427
    ussd_service_op = 0x0501
    display_time = 0x1201
    sms_signal = 0x1203
    ms_validity = 0x1204
    alert_on_message_delivery = 0x130C
    its_reply_type = 0x1380
    its_session_info = 0x1383


class TlvKind(Enum):
    U8 = 1
    U16 = 2
    U32 = 4
    CSTRING = "cstring"
    OCTETS = "octets"


@dataclass(frozen=True, slots=True)
class TlvType:
    kind: TlvKind
    max_length: int = 0xFFFF  # octets on the wire, NUL included for C-strings


_U8, _U16, _U32 = TlvType(TlvKind.U8), TlvType(TlvKind.U16), TlvType(TlvKind.U32)

TLV_TYPES: dict[int, TlvType] = {
    Tag.dest_addr_subunit: _U8,
    Tag.dest_network_type: _U8,
    Tag.dest_bearer_type: _U8,
    Tag.dest_telematics_id: _U16,
    Tag.source_addr_subunit: _U8,
    Tag.source_network_type: _U8,
    Tag.source_bearer_type: _U8,
    Tag.source_telematics_id: _U8,
    Tag.qos_time_to_live: _U32,
    Tag.payload_type: _U8,
    Tag.additional_status_info_text: TlvType(TlvKind.CSTRING, 256),
    Tag.receipted_message_id: TlvType(TlvKind.CSTRING, 65),
    Tag.ms_msg_wait_facilities: _U8,
    Tag.privacy_indicator: _U8,
    Tag.source_subaddress: TlvType(TlvKind.OCTETS, 23),
    Tag.dest_subaddress: TlvType(TlvKind.OCTETS, 23),
    Tag.user_message_reference: _U16,
    Tag.user_response_code: _U8,
    Tag.source_port: _U16,
    Tag.destination_port: _U16,
    Tag.sar_msg_ref_num: _U16,
    Tag.language_indicator: _U8,
    Tag.sar_total_segments: _U8,
    Tag.sar_segment_seqnum: _U8,
    Tag.sc_interface_version: _U8,
    Tag.callback_num_pres_ind: _U8,
    Tag.callback_num_atag: TlvType(TlvKind.OCTETS, 65),
    Tag.number_of_messages: _U8,
    Tag.callback_num: TlvType(TlvKind.OCTETS, 19),
    Tag.dpf_result: _U8,
    Tag.set_dpf: _U8,
    Tag.ms_availability_status: _U8,
    Tag.network_error_code: TlvType(TlvKind.OCTETS, 3),
    Tag.message_payload: TlvType(TlvKind.OCTETS),
    Tag.delivery_failure_reason: _U8,
    Tag.more_messages_to_send: _U8,
    Tag.message_state: _U8,
    Tag.ussd_service_op: _U8,
    Tag.display_time: _U8,
    Tag.sms_signal: _U16,
    Tag.ms_validity: _U8,
    Tag.alert_on_message_delivery: TlvType(TlvKind.OCTETS, 0),
    Tag.its_reply_type: _U8,
    Tag.its_session_info: TlvType(TlvKind.OCTETS, 2),
}


class Tlv(NamedTuple):
    """One optional parameter: its tag and its value exactly as on the wire.

    A NamedTuple rather than a frozen dataclass: receipts carry several and the decoder builds
    them on the hot path, where a tuple is several times cheaper to create.
    """

    tag: int
    value: bytes

    @classmethod
    def of_int(cls, tag: int, value: int) -> Tlv:
        kind = TLV_TYPES[tag].kind
        if kind not in (TlvKind.U8, TlvKind.U16, TlvKind.U32):
            raise EncodeError(f"TLV 0x{tag:04X} is not an integer")
        size = kind.value
        assert isinstance(size, int)
        if not 0 <= value < 1 << (8 * size):
            raise EncodeError(f"TLV 0x{tag:04X} value {value} does not fit {size} octet(s)")
        return cls(tag, value.to_bytes(size, "big"))

    @classmethod
    def of_bytes(cls, tag: int, value: bytes) -> Tlv:
        if len(value) > 0xFFFF:
            raise EncodeError(f"TLV 0x{tag:04X} longer than 65535 octets")
        return cls(tag, bytes(value))

    @classmethod
    def of_str(cls, tag: int, value: str) -> Tlv:
        raw = value.encode("latin-1") + b"\0"
        limit = TLV_TYPES[tag].max_length if tag in TLV_TYPES else 0xFFFF
        if len(raw) > limit:
            raise EncodeError(f"TLV 0x{tag:04X} longer than {limit - 1} characters")
        return cls(tag, raw)

    def as_int(self) -> int:
        return int.from_bytes(self.value, "big")

    def as_str(self) -> str:
        """A C-string value; a missing terminating NUL is tolerated (SMSCs omit it)."""
        raw = self.value
        end = raw.find(0)
        return (raw if end < 0 else raw[:end]).decode("latin-1")


def find(tlvs: tuple[Tlv, ...], tag: int) -> Tlv | None:
    for tlv in tlvs:
        if tlv.tag == tag:
            return tlv
    return None


def get_int(tlvs: tuple[Tlv, ...], tag: int) -> int | None:
    tlv = find(tlvs, tag)
    return None if tlv is None else tlv.as_int()


def get_str(tlvs: tuple[Tlv, ...], tag: int) -> str | None:
    tlv = find(tlvs, tag)
    return None if tlv is None else tlv.as_str()


def get_bytes(tlvs: tuple[Tlv, ...], tag: int) -> bytes | None:
    tlv = find(tlvs, tag)
    return None if tlv is None else tlv.value


def _length_range(spec: TlvType) -> tuple[int, int]:
    if isinstance(spec.kind.value, int):
        return spec.kind.value, spec.kind.value
    return 0, spec.max_length


# tag -> (shortest, longest) value length the decoder accepts
LENGTHS: dict[int, tuple[int, int]] = {tag: _length_range(t) for tag, t in TLV_TYPES.items()}


def check(tag: int, length: int, *, command_id: int, sequence_number: int) -> None:
    """Reject a known tag whose length contradicts its type (SMPP v3.4 5.3: ESME_RINVPARLEN)."""
    bounds = LENGTHS.get(tag)
    if bounds is not None and not bounds[0] <= length <= bounds[1]:
        raise DecodeError(
            f"TLV 0x{tag:04X} has invalid length {length}",
            command_status=CommandStatus.ESME_RINVPARLEN,
            command_id=command_id,
            sequence_number=sequence_number,
        )
