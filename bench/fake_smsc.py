"""How many submit_sm per second the fake SMSC sinks: its ceiling as a benchmark peer.

Starts `python -m tools.fake_smsc --port 0` as a subprocess, binds one transceiver from this
process with a raw socket client on smppd's codec, and pipelines submit_sm with a window of
outstanding requests (each response frees a slot). Prints submit_sm/s for: counters only
(`--no-record`, the mode for long runs), full in-memory records, and with a delivery receipt
per submit (the client acknowledges each deliver_sm). The SMSC must stay well above the
daemon's 10,000 msg/s target so that benchmarks measure the daemon, not it.

    .venv/bin/python bench/fake_smsc.py [--count 200000] [--window 500]
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from smppd.pdu.codec import HEADER, encode, encode_body, frame
from smppd.pdu.command import CommandId
from smppd.pdu.pdus import BindTransceiver, SubmitSm, Unbind

ROOT = Path(__file__).resolve().parent.parent
_SUBMIT_SM = int(CommandId.submit_sm)
_SUBMIT_SM_RESP = int(CommandId.submit_sm_resp)
_DELIVER_SM = int(CommandId.deliver_sm)
_DELIVER_SM_RESP = int(CommandId.deliver_sm_resp)
_BATCH = 64  # submits written per sendall


def start_smsc(*extra: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.fake_smsc", "--port", "0", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("fake_smsc listening on "):
        proc.kill()
        raise SystemExit(f"fake SMSC did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def run_client(port: int, count: int, window: int, *, receipts: bool) -> float:
    """Submit `count` messages with `window` outstanding; seconds until every answer came."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(encode(BindTransceiver(sequence_number=1, system_id="smppd", password="secret")))
    buf = bytearray()
    while len(buf) < 16 or len(buf) < struct.unpack_from(">I", buf)[0]:
        buf += sock.recv(4096)
    del buf[: struct.unpack_from(">I", buf)[0]]
    body = encode_body(
        SubmitSm(
            source_addr="SMPPD",
            destination_addr="447700900123",
            registered_delivery=1 if receipts else 0,
            short_message=b"Your code is 123456. It expires in 10 minutes.",
        )
    )
    unpack = HEADER.unpack_from
    sent = answered = receipted = 0
    seq = 1
    start = time.perf_counter()
    while answered < count or (receipts and receipted < count):
        room = min(window - (sent - answered), count - sent)
        if room >= _BATCH or (room > 0 and sent + room == count):
            frames = []
            for _ in range(room):
                seq += 1
                frames.append(frame(_SUBMIT_SM, 0, seq, body))
            sock.sendall(b"".join(frames))
            sent += room
        data = sock.recv(1 << 20)
        if not data:
            raise SystemExit("the fake SMSC closed the connection")
        buf += data
        acks = []
        offset = 0
        size = len(buf)
        while size - offset >= 16:
            length, cid, status, number = unpack(buf, offset)
            if size - offset < length:
                break
            offset += length
            if cid == _SUBMIT_SM_RESP:
                if status:
                    raise SystemExit(f"submit refused with status 0x{status:08X}")
                answered += 1
            elif cid == _DELIVER_SM:
                receipted += 1
                acks.append(frame(_DELIVER_SM_RESP, 0, number, b"\0"))
        del buf[:offset]
        if acks:
            sock.sendall(b"".join(acks))
    elapsed = time.perf_counter() - start
    sock.sendall(encode(Unbind(sequence_number=seq + 1)))
    sock.close()
    return elapsed


def measure(label: str, count: int, window: int, *smsc_args: str, receipts: bool = False) -> None:
    proc, port = start_smsc(*smsc_args)
    try:
        run_client(port, min(count, 20_000), window, receipts=receipts)  # warm up
        elapsed = run_client(port, count, window, receipts=receipts)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"{label:<44} {count / elapsed:>9,.0f} submit_sm/s  ({count:,} in {elapsed:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=500)
    args = parser.parse_args()
    print(f"fake SMSC ceiling, window {args.window}, {os.cpu_count()} CPUs")
    measure("counters only (--no-record)", args.count, args.window, "--no-record")
    measure("full in-memory records", args.count, args.window)
    measure(
        "counters only, a receipt per submit",
        args.count,
        args.window,
        "--no-record",
        receipts=True,
    )


if __name__ == "__main__":
    main()
