"""SMPP v3.4 PDUs as typed values.

Every PDU has the header's command_status and sequence_number, its body's mandatory fields and a
tuple of optional parameters. Field names are the spec's. `FIELDS` on each class is the wire
layout the codec compiles; `smppd.pdu.codec` checks at import that it matches the dataclass.
PDUs are plain values: build a new one rather than mutate one that was sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from smppd.pdu import fields as spec
from smppd.pdu import tlv as _tlv
from smppd.pdu.command import CommandId
from smppd.pdu.tlv import Tag, Tlv
from smppd.record import record

INTERFACE_VERSION = 0x34

# esm_class bits (5.2.12)
ESM_UDHI = 0x40
ESM_TYPE_MASK = 0x3C
ESM_DELIVERY_RECEIPT = 0x04
ESM_DELIVERY_ACK = 0x08  # SME delivery acknowledgement
ESM_INTERMEDIATE_NOTIFICATION = 0x20
_RECEIPT_TYPES = frozenset({ESM_DELIVERY_RECEIPT, ESM_DELIVERY_ACK, ESM_INTERMEDIATE_NOTIFICATION})


def _is_receipt(esm_class: int, tlvs: tuple[Tlv, ...]) -> bool:
    """A receipt by its message type, or by the receipted_message_id only receipts and
    acknowledgements carry (SMPP v3.4 5.3.2.12): some SMSCs send receipts with esm_class 0,
    which would otherwise reach a client as an inbound text saying "id:... stat:DELIVRD"."""
    if esm_class & ESM_TYPE_MASK in _RECEIPT_TYPES:
        return True
    return _tlv.find(tlvs, Tag.receipted_message_id) is not None


@dataclass(slots=True, kw_only=True)
class Pdu:
    command_id: ClassVar[CommandId]
    FIELDS: ClassVar[tuple[spec.Field, ...]] = ()

    sequence_number: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()

    def tlv(self, tag: int) -> Tlv | None:
        return _tlv.find(self.tlvs, tag)

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & 0x80000000)


# --- body-less PDUs -------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class GenericNack(Pdu):
    command_id = CommandId.generic_nack


@dataclass(slots=True, kw_only=True)
class Unbind(Pdu):
    command_id = CommandId.unbind


@dataclass(slots=True, kw_only=True)
class UnbindResp(Pdu):
    command_id = CommandId.unbind_resp


@dataclass(slots=True, kw_only=True)
class EnquireLink(Pdu):
    command_id = CommandId.enquire_link


@dataclass(slots=True, kw_only=True)
class EnquireLinkResp(Pdu):
    command_id = CommandId.enquire_link_resp


@dataclass(slots=True, kw_only=True)
class CancelSmResp(Pdu):
    command_id = CommandId.cancel_sm_resp


@dataclass(slots=True, kw_only=True)
class ReplaceSmResp(Pdu):
    command_id = CommandId.replace_sm_resp


# --- binding --------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _Bind(Pdu):
    FIELDS = spec.BIND
    system_id: str = ""
    password: str = field(default="", repr=False)
    system_type: str = ""
    interface_version: int = INTERFACE_VERSION
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""


@dataclass(slots=True, kw_only=True)
class BindTransmitter(_Bind):
    command_id = CommandId.bind_transmitter


@dataclass(slots=True, kw_only=True)
class BindReceiver(_Bind):
    command_id = CommandId.bind_receiver


@dataclass(slots=True, kw_only=True)
class BindTransceiver(_Bind):
    command_id = CommandId.bind_transceiver


@dataclass(slots=True, kw_only=True)
class _BindResp(Pdu):
    FIELDS = spec.BIND_RESP
    system_id: str = ""


@dataclass(slots=True, kw_only=True)
class BindTransmitterResp(_BindResp):
    command_id = CommandId.bind_transmitter_resp


@dataclass(slots=True, kw_only=True)
class BindReceiverResp(_BindResp):
    command_id = CommandId.bind_receiver_resp


@dataclass(slots=True, kw_only=True)
class BindTransceiverResp(_BindResp):
    command_id = CommandId.bind_transceiver_resp


@dataclass(slots=True, kw_only=True)
class Outbind(Pdu):
    command_id = CommandId.outbind
    FIELDS = spec.OUTBIND
    system_id: str = ""
    password: str = field(default="", repr=False)


# --- messages -------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _ShortMessagePdu(Pdu):
    FIELDS = spec.SHORT_MESSAGE_BODY
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""

    @property
    def content(self) -> bytes:
        """The user data: message_payload when present (short_message is then empty). An empty
        one is not: SMSCs that always add the TLV send it empty, the text in short_message."""
        return _tlv.get_bytes(self.tlvs, Tag.message_payload) or self.short_message

    @property
    def is_receipt(self) -> bool:
        return _is_receipt(self.esm_class, self.tlvs)


@dataclass(slots=True, kw_only=True)
class SubmitSm(_ShortMessagePdu):
    command_id = CommandId.submit_sm


@dataclass(slots=True, kw_only=True)
class DeliverSm(_ShortMessagePdu):
    command_id = CommandId.deliver_sm


@dataclass(slots=True, kw_only=True)
class _MessageIdResp(Pdu):
    FIELDS = spec.MESSAGE_ID_RESP
    message_id: str = ""


@dataclass(slots=True, kw_only=True)
class SubmitSmResp(_MessageIdResp):
    command_id = CommandId.submit_sm_resp


@dataclass(slots=True, kw_only=True)
class DeliverSmResp(_MessageIdResp):
    command_id = CommandId.deliver_sm_resp


@dataclass(slots=True, kw_only=True)
class DataSmResp(_MessageIdResp):
    command_id = CommandId.data_sm_resp


@record
class DestAddress:
    """One destination of submit_multi (5.2.25): an SME address (dest_flag 1) or a list name (2)."""

    dest_flag: int = 1
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    dl_name: str = ""


@record
class UnsuccessSme:
    """A destination that submit_multi could not reach, with the reason (5.2.26)."""

    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    error_status_code: int = 0


@dataclass(slots=True, kw_only=True)
class SubmitMulti(Pdu):
    command_id = CommandId.submit_multi
    FIELDS = spec.SUBMIT_MULTI
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addresses: tuple[DestAddress, ...] = ()
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""


@dataclass(slots=True, kw_only=True)
class SubmitMultiResp(Pdu):
    command_id = CommandId.submit_multi_resp
    FIELDS = spec.SUBMIT_MULTI_RESP
    message_id: str = ""
    unsuccess_smes: tuple[UnsuccessSme, ...] = ()


@dataclass(slots=True, kw_only=True)
class DataSm(Pdu):
    command_id = CommandId.data_sm
    FIELDS = spec.DATA_SM
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0

    @property
    def content(self) -> bytes:
        return _tlv.get_bytes(self.tlvs, Tag.message_payload) or b""

    @property
    def is_receipt(self) -> bool:
        return _is_receipt(self.esm_class, self.tlvs)


@dataclass(slots=True, kw_only=True)
class QuerySm(Pdu):
    command_id = CommandId.query_sm
    FIELDS = spec.QUERY_SM
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""


@dataclass(slots=True, kw_only=True)
class QuerySmResp(Pdu):
    command_id = CommandId.query_sm_resp
    FIELDS = spec.QUERY_SM_RESP
    message_id: str = ""
    final_date: str = ""
    message_state: int = 0
    error_code: int = 0


@dataclass(slots=True, kw_only=True)
class CancelSm(Pdu):
    command_id = CommandId.cancel_sm
    FIELDS = spec.CANCEL_SM
    service_type: str = ""
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""


@dataclass(slots=True, kw_only=True)
class ReplaceSm(Pdu):
    command_id = CommandId.replace_sm
    FIELDS = spec.REPLACE_SM
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""


@dataclass(slots=True, kw_only=True)
class AlertNotification(Pdu):
    command_id = CommandId.alert_notification
    FIELDS = spec.ALERT_NOTIFICATION
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    esme_addr_ton: int = 0
    esme_addr_npi: int = 0
    esme_addr: str = ""


ALL_PDUS: tuple[type[Pdu], ...] = (
    GenericNack,
    BindReceiver,
    BindReceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    QuerySm,
    QuerySmResp,
    SubmitSm,
    SubmitSmResp,
    DeliverSm,
    DeliverSmResp,
    Unbind,
    UnbindResp,
    ReplaceSm,
    ReplaceSmResp,
    CancelSm,
    CancelSmResp,
    BindTransceiver,
    BindTransceiverResp,
    Outbind,
    EnquireLink,
    EnquireLinkResp,
    SubmitMulti,
    SubmitMultiResp,
    AlertNotification,
    DataSm,
    DataSmResp,
)

PDU_BY_ID: dict[int, type[Pdu]] = {cls.command_id: cls for cls in ALL_PDUS}

# What a request is answered with (generic_nack where the spec defines no resp).
RESPONSE_OF: dict[type[Pdu], type[Pdu]] = {
    cls: PDU_BY_ID.get(cls.command_id | 0x80000000, GenericNack)
    for cls in ALL_PDUS
    if not cls.command_id & 0x80000000
}
