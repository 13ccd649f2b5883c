"""Bind throughput: submit_sm answered per second through 1 and 4 binds, windows 1, 10 and 100,
against the fake SMSC running in a separate process on this machine; before that, the cost of
the sans-IO session alone and of the rate limiter beside asyncio-throttle.

    python bench/session.py [--seconds S] [--binds 1,4] [--windows 1,10,100]

One coroutine sends (try_send until the windows are full, then wait_ready), as the send loop
does; the result callback counts answers. Figures are answers per second over the measured span,
after a short warm-up, with the SMSC answering at once and recording counters only. CPU time per
answer is printed for both processes: on a shared machine it is steadier than the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import _harness as h
import structlog
from asyncio_throttle.throttler import Throttler

from smppd.binds import CarrierBinds
from smppd.pdu import pdus
from smppd.pdu.codec import encode_body, frame
from smppd.pdu.command import CommandId
from smppd.ratelimit import SlidingWindow
from smppd.session import BindSettings, Session, SubmitResult

ROOT = Path(__file__).resolve().parent.parent
BODY = encode_body(
    pdus.SubmitSm(
        source_addr_ton=5,
        source_addr="SMPPD",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="447911123456",
        short_message=("The quick brown fox jumps over the lazy dog. " * 4)[:160].encode(),
    )
)


@contextlib.contextmanager
def fake_smsc() -> Iterator[tuple[int, int]]:
    """A fake SMSC in its own process; yields its port and pid."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.fake_smsc", "--port", "0", "--no-record"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"fake SMSC did not start: {line!r}")
        yield int(line.rsplit(":", 1)[1]), process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


async def accept(pdu: pdus.DeliverSm | pdus.DataSm) -> int:
    return 0


@dataclass(frozen=True, slots=True)
class Figures:
    rate: float  # answers per second
    failed: int  # answers other than ESME_ROK
    cpu_us: float  # this process's CPU per answer, microseconds
    smsc_cpu_us: float | None  # the SMSC process's CPU per answer


async def run(port: int, pid: int, binds: int, window: int, seconds: float) -> Figures:
    settings = BindSettings(
        host="127.0.0.1", port=port, system_id="smppd", password="secret", window=window
    )
    answered = 0
    failed = 0

    def done(result: SubmitResult) -> None:
        nonlocal answered, failed
        answered += 1
        if result.command_status != 0:
            failed += 1

    async with CarrierBinds(settings, binds=binds, handler=accept, carrier="bench") as carrier:
        async with asyncio.timeout(10):
            await carrier.wait_bound()
        loop = asyncio.get_running_loop()
        warm_until = loop.time() + min(0.5, seconds / 4)
        end = warm_until + seconds
        counted_from = -1
        started = cpu_started = 0.0
        smsc_started: float | None = None
        while True:
            now = loop.time()
            if counted_from < 0 and now >= warm_until:
                counted_from, started = answered, time.perf_counter()
                cpu_started, smsc_started = time.process_time(), h.cpu_s(pid)
            if now >= end:
                break
            if not carrier.try_send(BODY, done):
                await carrier.wait_ready()
        elapsed = time.perf_counter() - started
        count = answered - counted_from
        cpu = time.process_time() - cpu_started
        smsc_now = h.cpu_s(pid)
        smsc = None if smsc_started is None or smsc_now is None else smsc_now - smsc_started
    return Figures(
        count / elapsed,
        failed,
        cpu / count * 1e6,
        None if smsc is None else smsc / count * 1e6,
    )


def core_us_per_submit(rounds: int = 2_000, window: int = 100) -> float:
    """The sans-IO session alone: try_submit, then its submit_sm_resp fed back and its event
    read, per message, in microseconds."""
    session = Session(
        BindSettings(host="-", port=1, system_id="smppd", password="secret", window=window)
    )
    session.start_bind(now=0.0)
    session.data_to_send()
    session.receive_data(frame(CommandId.bind_transceiver_resp, 0, 1, b"smsc\0"), now=0.0)
    session.next_event()
    first = 2
    answers = [
        b"".join(
            frame(CommandId.submit_sm_resp, 0, seq, b"%08x\0" % seq)
            for seq in range(start, start + window)
        )
        for start in range(first, first + rounds * window, window)
    ]
    started = time.perf_counter()
    for data in answers:
        for _ in range(window):
            session.try_submit(BODY, now=1.0)
        session.data_to_send()
        session.receive_data(data, now=1.0)
        while session.next_event() is not None:
            pass
    return (time.perf_counter() - started) / (rounds * window) * 1e6


def limiter_ns_per_send(n: int = 200_000) -> tuple[float, float]:
    """ns per allowed send: our SlidingWindow, and asyncio-throttle's awaited acquire."""
    window = SlidingWindow(n)
    started = time.perf_counter()
    now = time.monotonic()
    for _ in range(n):
        window.try_acquire(now)
    ours = (time.perf_counter() - started) / n * 1e9
    throttler = Throttler(rate_limit=n)

    async def theirs() -> float:
        started = time.perf_counter()
        for _ in range(n):
            async with throttler:
                pass
        return (time.perf_counter() - started) / n * 1e9

    return ours, asyncio.run(theirs())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--binds", default="1,4")
    parser.add_argument("--windows", default="1,10,100")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    bind_counts = [int(b) for b in args.binds.split(",")]
    windows = [int(w) for w in args.windows.split(",")]
    print(f"sans-IO session, submit and answer: {core_us_per_submit():.2f} us per message")
    ours, theirs = limiter_ns_per_send()
    print(f"rate limiter per send: SlidingWindow {ours:.0f} ns, asyncio-throttle {theirs:.0f} ns")
    print()
    print(f"submit_sm answered per second (fake SMSC in another process, {os.cpu_count()} CPUs)")
    print("cpu us: CPU time per answered submit, here and in the SMSC (the machine may be shared)")
    print(
        f"{'binds':>5} {'window':>6} {'submits/s':>10} {'not ok':>7} {'cpu us':>7} {'smsc us':>8}"
    )
    with fake_smsc() as (port, pid):
        for binds in bind_counts:
            for window in windows:
                f = asyncio.run(run(port, pid, binds, window, args.seconds))
                smsc = "-" if f.smsc_cpu_us is None else f"{f.smsc_cpu_us:.1f}"
                row = f"{binds:5d} {window:6d} {f.rate:10.0f} {f.failed:7d} {f.cpu_us:7.1f}"
                print(f"{row} {smsc:>8}", flush=True)


if __name__ == "__main__":
    main()
