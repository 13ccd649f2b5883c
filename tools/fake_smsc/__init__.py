"""A real SMPP v3.4 server for tests, benchmarks and demos, built on smppd.pdu only.

`FakeSmsc` accepts binds, answers submits, sends delivery receipts and mobile-originated
messages, misbehaves on demand (`Faults`) and records what reached it (`Records`). `EsmeClient`
is a small raw client on the same codec, for tests that watch the bytes on the wire.
"""

from tools.fake_smsc.client import EsmeClient
from tools.fake_smsc.config import Account, IdFormat, ReceiptConfig, SmscConfig, load_scenario
from tools.fake_smsc.faults import Faults, Reorder
from tools.fake_smsc.records import MessageRecord, Records, SegmentRecord
from tools.fake_smsc.server import FakeSmsc

__all__ = [
    "Account",
    "EsmeClient",
    "FakeSmsc",
    "Faults",
    "IdFormat",
    "MessageRecord",
    "ReceiptConfig",
    "Records",
    "Reorder",
    "SegmentRecord",
    "SmscConfig",
    "load_scenario",
]
