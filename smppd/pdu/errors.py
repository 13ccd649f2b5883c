"""Errors of the pure codec: PDUs, text and segmentation.

A decode error carries what the receiving side must answer (SMPP v3.4 section 5.1.3): the
command_status, and whether the byte stream can still be framed. The session turns these into
generic_nack or an error resp without knowing how they arose.
"""

from __future__ import annotations

from smppd.errors import SmppdError


class CodecError(SmppdError):
    """Base class of every error raised by smppd.pdu."""


class EncodeError(CodecError):
    """We were asked to build something SMPP cannot carry (a local error, never the peer's)."""


class TextError(EncodeError):
    """Text that cannot be represented in the requested or any allowed data_coding."""


class SegmentLimitError(EncodeError):
    """A message needs more segments than the configured cap."""


class DecodeError(CodecError):
    """The peer sent bytes that are not a valid PDU.

    `command_status` is the status to answer with; `command_id` and `sequence_number` are those of
    the offending PDU when its header could be read (so the session can address the generic_nack
    or resp); `framing_lost` means the stream cannot be resynchronised and the connection must
    close.
    """

    def __init__(
        self,
        message: str,
        *,
        command_status: int,
        command_id: int | None = None,
        sequence_number: int | None = None,
        framing_lost: bool = False,
    ) -> None:
        super().__init__(message)
        self.command_status = command_status
        self.command_id = command_id
        self.sequence_number = sequence_number
        self.framing_lost = framing_lost
