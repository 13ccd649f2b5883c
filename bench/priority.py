"""Urgent traffic behind a large bulk backlog, and the daemon's memory while the backlog drains.

The fake SMSC and the daemon run as processes on this machine and the SMSC answers at once
throughout. Submitter processes enqueue N bulk messages (priority "bulk", default 1,000,000)
with pipelined `submit_many`; once they are all accepted, a rate submitter sends urgent messages
(priority "urgent", default 20/s) until the backlog has drained. Prints the urgent messages'
latency accept -> submit_sm at the SMSC (from its JSON-lines record, matched by text), the
backlog's enqueue and drain rates, and the daemon's RSS sampled every second throughout (peak,
and at the deepest queue seen). With `--while-accepting` the urgent messages go while the bulk
ones are being accepted instead (another client's flood of `submit_many`s), until they all are.

    .venv/bin/python bench/priority.py                       # 1,000,000 bulk messages
    .venv/bin/python bench/priority.py --count 100000 --no-receipts
    .venv/bin/python bench/priority.py --count 300000 --batch 5000 --while-accepting
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from pathlib import Path

import _harness as h

BULK = "B"
URGENT = "U"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="bulk messages (1,000,000)")
    parser.add_argument("--urgent-rate", type=float, default=20.0, help="urgent per second (20)")
    parser.add_argument("--processes", type=int, default=1, help="bulk submitter processes")
    parser.add_argument("--connections", type=int, default=4, help="per process (4)")
    parser.add_argument("--depth", type=int, default=2, help="batches in flight per connection")
    parser.add_argument("--batch", type=int, default=1000, help="messages per submit_many")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after (s)")
    parser.add_argument(
        "--while-accepting",
        action="store_true",
        help="send the urgent messages while the bulk ones are accepted, not while they drain",
    )
    h.add_common(parser)
    return parser.parse_args()


async def run(args: argparse.Namespace) -> None:
    # The SMSC records to its file only: a million records would not fit in RAM.
    await h.run_bench(args, measure)


async def measure(
    args: argparse.Namespace, directory: Path, smsc: h.Smsc, daemon: h.Daemon
) -> None:
    print(h.machine_line("before"))
    deadline = time.monotonic() + args.timeout
    share = math.ceil(args.count / args.processes)
    bulk = [
        h.SubmitSpec(
            socket=str(daemon.socket),
            out=str(directory / f"bulk{p}.json"),
            prefix=BULK,
            start=p * share,
            stop=min(args.count, (p + 1) * share),
            connections=args.connections,
            depth=args.depth,
            batch=args.batch,
            priority="bulk",
            registered_delivery=not args.no_receipts,
            deadline_s=args.timeout,
        )
        for p in range(args.processes)
    ]
    stop_file = directory / "urgent.stop"
    urgent = h.SubmitSpec(
        socket=str(daemon.socket),
        out=str(directory / "urgent.json"),
        prefix=URGENT,
        start=0,
        stop=math.ceil(args.urgent_rate * args.timeout),
        mode="rate",
        rate=args.urgent_rate,
        priority="urgent",
        registered_delivery=not args.no_receipts,
        deadline_s=args.timeout,
        stop_file=str(stop_file),
    )
    samples: list[tuple[float, float, int]] = []  # (time, RSS MiB, queued depth)
    pending = ("queued", "scheduled", "inflight")
    daemon_cpu0 = h.cpu_s(daemon.pid) or 0.0
    started = time.time()
    bulk_processes = [h.start_submitter(spec) for spec in bulk]
    urgent_process = h.start_submitter(urgent) if args.while_accepting else None
    enqueued_at = drained_at = math.nan
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        stats = await daemon.stats()
        depth = h.segments_in(stats, *pending)
        samples.append((time.time(), h.status_mib(daemon.pid, "VmRSS") or math.nan, depth))
        if math.isnan(enqueued_at) and all(p.poll() is not None for p in bulk_processes):
            await h.wait_submitters(bulk_processes, 1)
            enqueued_at = time.time()
            print(f"bulk enqueued after {enqueued_at - started:.1f} s; queued {depth:,}")
            if urgent_process is None:
                urgent_process = h.start_submitter(urgent)
            else:
                stop_file.touch()  # the flood is over; the backlog still drains
        elif not math.isnan(enqueued_at) and depth == 0:
            drained_at = time.time()
            break
    stop_file.touch()
    if urgent_process is not None:
        await h.wait_submitters([urgent_process], 120)
    daemon_cpu = (h.cpu_s(daemon.pid) or math.nan) - daemon_cpu0
    peak_rss = h.status_mib(daemon.pid, "VmHWM")
    print(h.machine_line("after"))
    report(args, bulk, urgent, smsc, samples, started, enqueued_at, drained_at)
    print(f"daemon CPU {daemon_cpu:.0f} s; peak RSS (VmHWM) {peak_rss:.1f} MiB")


def report(
    args: argparse.Namespace,
    bulk: list[h.SubmitSpec],
    urgent: h.SubmitSpec,
    smsc: h.Smsc,
    samples: list[tuple[float, float, int]],
    started: float,
    enqueued_at: float,
    drained_at: float,
) -> None:
    accepted = sum(h.read_result(spec)[0].accepted for spec in bulk)
    last_accept = max(h.read_result(spec)[0].last_accepted for spec in bulk)
    print(
        f"bulk: {accepted:,} accepted at {h.rate(accepted, last_accept - started)}; "
        f"all sent after {drained_at - started:.1f} s ({h.rate(accepted, drained_at - started)})"
    )
    result, times = h.read_result(urgent)
    assert smsc.record_path is not None
    seen = h.read_records(smsc.record_path, URGENT, keep=lambda line: b'"text": "U' in line)
    latencies = [min(seen[i]) - t for i, t in enumerate(times) if not math.isnan(t) and i in seen]
    missing = sum(1 for i, t in enumerate(times) if not math.isnan(t) and i not in seen)
    during = (
        f"the backlog was accepted ({enqueued_at - started:.0f} s)"
        if args.while_accepting
        else f"the backlog drained ({drained_at - enqueued_at:.0f} s)"
    )
    print(
        f"urgent: {result.accepted:,} accepted at {args.urgent_rate:g}/s while {during}, "
        f"errors {result.errors}, not seen {missing}"
    )
    print(h.latency_line("urgent accept -> on the wire", latencies, (50, 99, 99.9)))
    print(h.latency_line("urgent submit -> ack (durable)", result.rtt_s, (50, 99)))
    if samples:
        deepest = max(samples, key=lambda s: s[2])
        peak = max(samples, key=lambda s: s[1])
        print(
            f"daemon RSS: {samples[0][1]:.0f} MiB at start, peak {peak[1]:.0f} MiB "
            f"(queue {peak[2]:,}), {deepest[1]:.0f} MiB at the deepest queue ({deepest[2]:,}), "
            f"{samples[-1][1]:.0f} MiB at the end"
        )
        step = max(1, len(samples) // 12)
        trace = ", ".join(
            f"{t - started:.0f}s {rss:.0f}MiB/{depth // 1000}k" for t, rss, depth in samples[::step]
        )
        print(f"  RSS/queued over time: {trace}")


def main() -> int:
    args = parse_args()
    h.use_common(args)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
