"""Field declarations: one table per PDU body, which the codec compiles into encode/decode.

Each field knows its wire form, its maximum size and the command_status to answer when a peer
sends a bad value for it (the idea mozes/smpp.pdu had). Sizes of C-strings include the NUL, as
the SMPP v3.4 tables in section 4 give them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from smppd.pdu.status import CommandStatus as S


class Kind(Enum):
    U8 = "u8"
    U16 = "u16"
    U32 = "u32"
    CSTRING = "cstring"
    SHORT_MESSAGE = "short_message"  # sm_length (1 octet) then that many octets
    DEST_ADDRESSES = "dest_addresses"  # number_of_dests then dest_address list (submit_multi)
    UNSUCCESS_SMES = "unsuccess_smes"  # no_unsuccess then unsuccess_sme list


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    size: int = 0  # C-string maximum, NUL included
    status: int = S.ESME_RINVCMDLEN  # answered when the value is invalid


def u8(name: str) -> Field:
    return Field(name, Kind.U8)


def cstr(name: str, size: int, status: int) -> Field:
    return Field(name, Kind.CSTRING, size, status)


SERVICE_TYPE = cstr("service_type", 6, S.ESME_RINVSERTYP)
SOURCE = (u8("source_addr_ton"), u8("source_addr_npi"), cstr("source_addr", 21, S.ESME_RINVSRCADR))
DEST = (u8("dest_addr_ton"), u8("dest_addr_npi"), cstr("destination_addr", 21, S.ESME_RINVDSTADR))
SCHEDULE = cstr("schedule_delivery_time", 17, S.ESME_RINVSCHED)
VALIDITY = cstr("validity_period", 17, S.ESME_RINVEXPIRY)
MESSAGE_ID = cstr("message_id", 65, S.ESME_RINVMSGID)
SHORT_MESSAGE = Field("short_message", Kind.SHORT_MESSAGE, 254, S.ESME_RINVMSGLEN)

# SMPP v3.4 4.1.1 / 4.1.3 / 4.1.5
BIND = (
    cstr("system_id", 16, S.ESME_RINVSYSID),
    cstr("password", 9, S.ESME_RINVPASWD),
    cstr("system_type", 13, S.ESME_RINVSYSTYP),
    u8("interface_version"),
    u8("addr_ton"),
    u8("addr_npi"),
    cstr("address_range", 41, S.ESME_RINVPARLEN),
)
BIND_RESP = (cstr("system_id", 16, S.ESME_RINVSYSID),)
# 4.1.7
OUTBIND = (cstr("system_id", 16, S.ESME_RINVSYSID), cstr("password", 9, S.ESME_RINVPASWD))
# 4.4.1 submit_sm and 4.6.1 deliver_sm share one body
SHORT_MESSAGE_BODY = (
    SERVICE_TYPE,
    *SOURCE,
    *DEST,
    u8("esm_class"),
    u8("protocol_id"),
    u8("priority_flag"),
    SCHEDULE,
    VALIDITY,
    u8("registered_delivery"),
    u8("replace_if_present_flag"),
    u8("data_coding"),
    u8("sm_default_msg_id"),
    SHORT_MESSAGE,
)
# Read past the spec's 64 octets: the SMSC accepted the submit, and an id refused for its length
# left the acceptance with no id, which no receipt (whose text carries the same id) could match.
MESSAGE_ID_RESP = (cstr("message_id", 256, S.ESME_RINVMSGID),)
# 4.5.1
SUBMIT_MULTI = (
    SERVICE_TYPE,
    *SOURCE,
    Field("dest_addresses", Kind.DEST_ADDRESSES, 0, S.ESME_RINVNUMDESTS),
    u8("esm_class"),
    u8("protocol_id"),
    u8("priority_flag"),
    SCHEDULE,
    VALIDITY,
    u8("registered_delivery"),
    u8("replace_if_present_flag"),
    u8("data_coding"),
    u8("sm_default_msg_id"),
    SHORT_MESSAGE,
)
SUBMIT_MULTI_RESP = (MESSAGE_ID, Field("unsuccess_smes", Kind.UNSUCCESS_SMES))
# 4.7.1 (addresses are 65 octets in data_sm)
DATA_SM = (
    SERVICE_TYPE,
    u8("source_addr_ton"),
    u8("source_addr_npi"),
    cstr("source_addr", 65, S.ESME_RINVSRCADR),
    u8("dest_addr_ton"),
    u8("dest_addr_npi"),
    cstr("destination_addr", 65, S.ESME_RINVDSTADR),
    u8("esm_class"),
    u8("registered_delivery"),
    u8("data_coding"),
)
# 4.8.1 / 4.8.2
QUERY_SM = (MESSAGE_ID, *SOURCE)
QUERY_SM_RESP = (
    MESSAGE_ID,
    cstr("final_date", 17, S.ESME_RINVPARLEN),
    u8("message_state"),
    u8("error_code"),
)
# 4.9.1
CANCEL_SM = (SERVICE_TYPE, MESSAGE_ID, *SOURCE, *DEST)
# 4.10.1
REPLACE_SM = (
    MESSAGE_ID,
    *SOURCE,
    SCHEDULE,
    VALIDITY,
    u8("registered_delivery"),
    u8("sm_default_msg_id"),
    SHORT_MESSAGE,
)
# 4.12.1
ALERT_NOTIFICATION = (
    u8("source_addr_ton"),
    u8("source_addr_npi"),
    cstr("source_addr", 65, S.ESME_RINVSRCADR),
    u8("esme_addr_ton"),
    u8("esme_addr_npi"),
    cstr("esme_addr", 65, S.ESME_RINVPARLEN),
)
