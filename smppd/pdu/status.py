"""Command status codes (SMPP v3.4 section 5.1.3) and how the send loop should treat each.

A non-zero command_status is an outcome, not an exception: `classify` is the one table that says
which outcomes are worth retrying. Codes outside the table (vendor specific 0x400-0x4FF and the
like) are permanent unless listed, since retrying an unknown rejection forever gets senders blocked.
A carrier that means something else by a code says so in its `StatusPolicy`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final


class CommandStatus(IntEnum):
    ESME_ROK = 0x00000000
    ESME_RINVMSGLEN = 0x00000001
    ESME_RINVCMDLEN = 0x00000002
    ESME_RINVCMDID = 0x00000003
    ESME_RINVBNDSTS = 0x00000004
    ESME_RALYBND = 0x00000005
    ESME_RINVPRTFLG = 0x00000006
    ESME_RINVREGDLVFLG = 0x00000007
    ESME_RSYSERR = 0x00000008
    ESME_RINVSRCADR = 0x0000000A
    ESME_RINVDSTADR = 0x0000000B
    ESME_RINVMSGID = 0x0000000C
    ESME_RBINDFAIL = 0x0000000D
    ESME_RINVPASWD = 0x0000000E
    ESME_RINVSYSID = 0x0000000F
    ESME_RCANCELFAIL = 0x00000011
    ESME_RREPLACEFAIL = 0x00000013
    ESME_RMSGQFUL = 0x00000014
    ESME_RINVSERTYP = 0x00000015
    ESME_RINVNUMDESTS = 0x00000033
    ESME_RINVDLNAME = 0x00000034
    ESME_RINVDESTFLAG = 0x00000040
    ESME_RINVSUBREP = 0x00000042
    ESME_RINVESMCLASS = 0x00000043
    ESME_RCNTSUBDL = 0x00000044
    ESME_RSUBMITFAIL = 0x00000045
    ESME_RINVSRCTON = 0x00000048
    ESME_RINVSRCNPI = 0x00000049
    ESME_RINVDSTTON = 0x00000050
    ESME_RINVDSTNPI = 0x00000051
    ESME_RINVSYSTYP = 0x00000053
    ESME_RINVREPFLAG = 0x00000054
    ESME_RINVNUMMSGS = 0x00000055
    ESME_RTHROTTLED = 0x00000058
    ESME_RINVSCHED = 0x00000061
    ESME_RINVEXPIRY = 0x00000062
    ESME_RINVDFTMSGID = 0x00000063
    ESME_RX_T_APPN = 0x00000064
    ESME_RX_P_APPN = 0x00000065
    ESME_RX_R_APPN = 0x00000066
    ESME_RQUERYFAIL = 0x00000067
    ESME_RINVOPTPARSTREAM = 0x000000C0
    ESME_ROPTPARNOTALLWD = 0x000000C1
    ESME_RINVPARLEN = 0x000000C2
    ESME_RMISSINGOPTPARAM = 0x000000C3
    ESME_RINVOPTPARAMVAL = 0x000000C4
    ESME_RDELIVERYFAILURE = 0x000000FE
    ESME_RUNKNOWNERR = 0x000000FF


class StatusClass(Enum):
    SUCCESS = "success"
    TEMPORARY = "temporary"  # retry later, same message, same correlation
    PERMANENT = "permanent"  # the message fails; retrying will not help


# Statuses an SMSC uses for "not now": congestion, throttling, its own trouble, or a transient
# application error (ESME_RX_T_APPN is "temporary" by definition, v3.4 5.1.3).
_TEMPORARY: frozenset[int] = frozenset(
    {
        CommandStatus.ESME_RSYSERR,
        CommandStatus.ESME_RMSGQFUL,
        CommandStatus.ESME_RTHROTTLED,
        CommandStatus.ESME_RX_T_APPN,
        CommandStatus.ESME_RSUBMITFAIL,
        CommandStatus.ESME_RDELIVERYFAILURE,
        CommandStatus.ESME_RUNKNOWNERR,
        CommandStatus.ESME_RINVBNDSTS,  # we raced a rebind; the next bind takes it
    }
)

# The subset that means "slow down": the bind backs off on these, on top of the message retry.
THROTTLING: frozenset[int] = frozenset({CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RMSGQFUL})
# Of those, the answers about the bind's rate alone, never the message: retried without
# spending one of its attempts, so hours of throttling fail nothing. Not ESME_RMSGQFUL unless
# a carrier lists it: SMSCs mean a subscriber's full queue by it too, which a retry every
# second for ever would not empty.
PACING: frozenset[int] = frozenset({CommandStatus.ESME_RTHROTTLED})


@dataclass(frozen=True, slots=True)
class StatusPolicy:
    """How one carrier's submit answers are read: `classify` and `THROTTLING`, with the codes
    a carrier uses its own way (vendor codes 0x400-0x4FF above all) moved where it says."""

    temporary: frozenset[int] = _TEMPORARY
    throttling: frozenset[int] = THROTTLING
    pacing: frozenset[int] = PACING

    @classmethod
    def of(
        cls,
        *,
        temporary: Iterable[int] = (),
        permanent: Iterable[int] = (),
        throttling: Iterable[int] = (),
    ) -> StatusPolicy:
        """The spec's reading, but `temporary` retried, `permanent` failed at once and
        `throttling` retried with the bind slowed down, without spending an attempt; a code in
        one list is in no other."""
        temporary, permanent, throttling = set(temporary), set(permanent), set(throttling)
        if temporary & permanent or temporary & throttling or permanent & throttling:
            raise ValueError("a command_status can be read one way only")
        return cls(
            frozenset((_TEMPORARY - permanent) | temporary | throttling),
            frozenset((THROTTLING - permanent - temporary) | throttling),
            frozenset((PACING - permanent - temporary) | throttling),
        )

    def classify(self, command_status: int) -> StatusClass:
        if command_status == 0:
            return StatusClass.SUCCESS
        if command_status in self.temporary:
            return StatusClass.TEMPORARY
        return StatusClass.PERMANENT


def classify(command_status: int) -> StatusClass:
    """Return how a submit answered with `command_status` should be treated, by the spec."""
    return _SPEC.classify(command_status)


_SPEC: Final = StatusPolicy()


def status_name(command_status: int) -> str:
    """The spec name of a status, or its hex form for vendor codes (safe as a metric label)."""
    name = _NAMES.get(command_status)
    return f"0x{command_status:08X}" if name is None else name


def status_label(command_status: int) -> str:
    """`status_name` with bounded values, for metric labels: a peer can send any 32-bit code,
    and each label value is a series kept for the life of the process. Spec names, the
    reserved vendor range 0x400-0x4FF in hex (256 at most), "other" for anything else."""
    name = _NAMES.get(command_status)
    if name is not None:
        return name
    return f"0x{command_status:08X}" if 0x400 <= command_status <= 0x4FF else "other"


# One lookup per submit_sm_resp; an enum call costs ten times as much.
_NAMES: Final[Mapping[int, str]] = {status.value: status.name for status in CommandStatus}
