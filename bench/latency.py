"""Latency at a fixed offered rate: accept -> submit_sm on the wire, and the durable ack itself.

The fake SMSC and the daemon run as processes on this machine; a submitter process sends single
`submit` requests at an even pace (default 1,000 msg/s for 10 s, after a 1 s warm-up that is
not counted). A message's accept time is when its client read the ack; its wire time is when the
SMSC recorded the submit_sm (its JSON-lines record, matched by text). Both clocks are this
machine's wall clock. Also prints the request -> ack round trip (a group commit with fsync).

    .venv/bin/python bench/latency.py
    .venv/bin/python bench/latency.py --rate 2000 --seconds 5 --no-receipts
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from pathlib import Path

import _harness as h

PREFIX = "L"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="messages per second (1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured span (10 s)")
    parser.add_argument("--warmup", type=float, default=1.0, help="sent first, not counted (1 s)")
    parser.add_argument("--priority", default="normal", help="bulk | normal | urgent (normal)")
    h.add_profile_options(parser)
    h.add_common(parser)
    return parser.parse_args()


async def run(args: argparse.Namespace) -> None:
    await h.run_bench(args, measure)


async def measure(
    args: argparse.Namespace, directory: Path, smsc: h.Smsc, daemon: h.Daemon
) -> None:
    warm = math.ceil(args.rate * args.warmup)
    count = warm + math.ceil(args.rate * args.seconds)
    print(h.machine_line("before"))
    spec = h.SubmitSpec(
        socket=str(daemon.socket),
        out=str(directory / "submit.json"),
        prefix=PREFIX,
        start=0,
        stop=count,
        mode="rate",
        rate=args.rate,
        priority=args.priority,
        registered_delivery=not args.no_receipts,
        deadline_s=args.warmup + args.seconds + 60,
    )
    commits0 = int((await daemon.stats())["commits"])
    daemon_cpu0 = h.cpu_s(daemon.pid) or 0.0
    split0 = h.cpu_split_s(daemon.pid) or (0.0, 0.0)
    started = time.perf_counter()
    profiler = h.profile(args, daemon.pid)
    await h.wait_submitters([h.start_submitter(spec)], args.warmup + args.seconds + 90)
    if profiler is not None:
        h.stop_profiler(profiler)
    result, times = h.read_result(spec)
    await smsc.control("wait_for", count=result.accepted, timeout=30.0)
    elapsed = time.perf_counter() - started
    daemon_cpu = (h.cpu_s(daemon.pid) or math.nan) - daemon_cpu0
    user, system = h.cpu_split_s(daemon.pid) or (math.nan, math.nan)
    user, system = user - split0[0], system - split0[1]
    commits = int((await daemon.stats())["commits"]) - commits0
    means = h.histogram_means(daemon.metrics())
    print(h.machine_line("after"))
    assert smsc.record_path is not None
    seen = h.read_records(smsc.record_path, PREFIX)
    latencies = [
        min(seen[i]) - t
        for i, t in enumerate(times)
        if i >= warm and not math.isnan(t) and i in seen
    ]
    measured = count - warm
    span = result.last_accepted - result.first_sent
    kind = "no receipts" if args.no_receipts else "with receipts"
    print(
        f"offered {args.rate:,.0f}/s for {args.seconds:g} s ({kind}, priority {args.priority}): "
        f"accepted {result.accepted:,} of {count:,} ({h.rate(result.accepted, span)} achieved), "
        f"errors {result.errors}"
    )
    missing = sum(1 for i, t in enumerate(times) if not math.isnan(t) and i not in seen)
    print(f"seen at the SMSC: {len(seen):,}; accepted but not seen: {missing}")
    print(h.latency_line("accept -> on the wire", latencies, (50, 99, 99.9)))
    early = sum(1 for v in latencies if v < 0)
    print(f"  ({early:,} of {measured:,} were on the wire before the client read the ack)")
    print(h.latency_line("submit -> ack (durable)", result.rtt_s[warm:], (50, 99, 99.9)))
    # Whether sending kept up with the offer: the SMSC's rate over the measured messages.
    wire = sorted(min(seen[i]) for i in range(warm, count) if i in seen)
    if len(wire) > 1:
        print(
            f"on the wire: {h.rate(len(wire) - 1, wire[-1] - wire[0])} over the measured span "
            f"(offered {args.rate:,.0f}/s); window slot held (means): submit_sm -> resp "
            f"{means.get('smppd_submit_latency_seconds', math.nan) * 1e3:.1f} ms, "
            f"outcome -> committed "
            f"{means.get('smppd_outcome_commit_seconds', math.nan) * 1e3:.1f} ms"
        )
    print(
        f"daemon CPU: {daemon_cpu:.1f} s over {elapsed:.1f} s ({daemon_cpu / elapsed:.0%}; "
        f"user {user:.1f} s, system {system:.1f} s); "
        f"{commits:,} store commits ({commits / count:.2f} per message)"
    )


def main() -> int:
    args = parse_args()
    h.use_common(args)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
