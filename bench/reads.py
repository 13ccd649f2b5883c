"""What the API's reads cost the daemon: CPU per request and requests answered a second.

The fake SMSC and the daemon run as processes on this machine. One client stores --messages
messages, then sends `health` (no store access: the API's own cost) and `status` (a lookup in
the store) requests, --in-flight at a time, --requests of each, and prints the daemon's CPU per
request and the rate they were answered at. Lookups in flight together share round trips to
the store's thread, so --in-flight 1 shows a lookup's whole cost.

    .venv/bin/python bench/reads.py
    .venv/bin/python bench/reads.py --in-flight 1
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _harness as h

from smppd.client import Client


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="stored first (1,000)")
    parser.add_argument("--requests", type=int, default=5000, help="of each op (5,000)")
    parser.add_argument("--in-flight", type=int, default=50, help="requests at a time (50)")
    parser.add_argument("--ops", default="health,status", help="which, in order (both)")
    h.add_profile_options(parser)
    h.add_common(parser)
    return parser.parse_args()


async def measure(
    args: argparse.Namespace, directory: Path, smsc: h.Smsc, daemon: h.Daemon
) -> None:
    print(h.machine_line("before"))
    async with Client(daemon.socket, timeout_s=60, max_in_flight=10_000) as client:
        messages = [
            {"to": h.destination_for(i), "from": h.SENDER, "text": h.text_for("R", i)}
            for i in range(args.messages)
        ]
        replies = await client.submit_many(messages)
        ids = [reply.message_id for reply in replies]  # type: ignore[union-attr]
        deadline = time.monotonic() + 60
        while h.segments_in(await daemon.stats(), *h.FINAL) < len(ids):  # quiet before measuring
            if time.monotonic() > deadline:
                sys.exit("the stored messages did not finish within 60 s")
            await asyncio.sleep(0.1)
        ops: dict[str, Callable[[int], Awaitable[Any]]] = {
            "health": lambda i: client.health(),
            "status": lambda i: client.status(ids[i % len(ids)]),
        }
        profiler = h.profile(args, daemon.pid)
        for name in args.ops.split(","):
            op = ops[name]
            cpu0, started = h.cpu_s(daemon.pid) or 0.0, time.perf_counter()
            for first in range(0, args.requests, args.in_flight):
                last = min(args.requests, first + args.in_flight)
                await asyncio.gather(*(op(i) for i in range(first, last)))
            cpu = (h.cpu_s(daemon.pid) or 0.0) - cpu0
            wall = time.perf_counter() - started
            print(
                f"{name}: {cpu / args.requests * 1e6:.0f} us of daemon CPU a request, "
                f"{args.requests / wall:,.0f} answered a second ({args.in_flight} in flight)"
            )
        if profiler is not None:
            h.stop_profiler(profiler)
    print(h.machine_line("after"))


def main() -> int:
    args = parse_args()
    h.use_common(args)
    asyncio.run(h.run_bench(args, measure))
    return 0


if __name__ == "__main__":
    sys.exit(main())
