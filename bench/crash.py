"""Crash safety under load: kill -9 the daemon at random moments of a run, restart it each time.

The fake SMSC and the daemon run as processes on this machine. A submitter process sends N
messages (default 100,000) with pipelined `submit_many` at a steady pace (4,000/s, so that the
crashes fall on submits as well as on sends), each with a `ref`: when the daemon dies
it reconnects and resubmits what was not acknowledged, which the refs make idempotent. Meanwhile
the daemon is killed with SIGKILL after random delays and restarted at once, `--crashes` times.
Once everything is sent, the SMSC's JSON-lines record is checked against the acknowledgements:

- lost: acknowledged messages never seen at the SMSC (answered ESME_ROK). Must be 0.
- duplicates: sightings beyond the first, each charged to the last crash before it. The bound
  is window x binds per crash (segments in flight at the crash are resent).

    .venv/bin/python bench/crash.py
    .venv/bin/python bench/crash.py --count 20000 --crashes 3 --seed 7
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import math
import random
import sys
import time
from pathlib import Path

import _harness as h

from smppd.client import ApiClientError

PREFIX = "C"
RECOVERED = "resending segments left in flight by the last run"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="messages (100,000)")
    parser.add_argument("--crashes", type=int, default=5, help="kill -9 this many times (5)")
    parser.add_argument("--min-gap", type=float, default=1.0, help="least time between (1 s)")
    parser.add_argument("--max-gap", type=float, default=5.0, help="most time between (5 s)")
    parser.add_argument("--seed", type=int, default=None, help="for the crash delays")
    parser.add_argument("--connections", type=int, default=2, help="submitter connections (2)")
    parser.add_argument("--batch", type=int, default=200, help="messages per submit_many")
    parser.add_argument(
        "--pace", type=float, default=4000.0, help="submits per second, so crashes hit them too"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after (s)")
    h.add_common(parser)
    return parser.parse_args()


async def run(args: argparse.Namespace) -> None:
    await h.run_bench(args, measure)


async def pending_segments(daemon: h.Daemon) -> int | None:
    try:
        return h.segments_in(await daemon.stats(), *h.PENDING)
    except ApiClientError:
        return None


async def measure(
    args: argparse.Namespace, directory: Path, smsc: h.Smsc, daemon: h.Daemon
) -> None:
    print(h.machine_line("before"))
    spec = h.SubmitSpec(
        socket=str(daemon.socket),
        out=str(directory / "submit.json"),
        prefix=PREFIX,
        start=0,
        stop=args.count,
        connections=args.connections,
        depth=2,
        batch=args.batch,
        registered_delivery=not args.no_receipts,
        refs=True,
        retry=True,
        pace=args.pace,
        deadline_s=args.timeout,
    )
    deadline = time.monotonic() + args.timeout
    rng = random.Random(args.seed)
    submitter = h.start_submitter(spec)
    started = time.time()
    kills: list[float] = []
    restarts: list[float] = []
    while len(kills) < args.crashes and time.monotonic() < deadline:
        await asyncio.sleep(rng.uniform(args.min_gap, args.max_gap))
        if submitter.poll() is not None and await pending_segments(daemon) == 0:
            print(f"the run ended before crash {len(kills) + 1}; raise --count to crash more")
            break
        daemon.kill()
        kills.append(time.time())
        restarts.append(await daemon.start())
    await h.wait_submitters([submitter], max(1.0, deadline - time.monotonic()))
    while (left := await pending_segments(daemon)) != 0:
        if time.monotonic() > deadline:
            print(f"timed out with {left} segments pending")
            break
        await asyncio.sleep(0.2)
    finished = time.time()
    result, times = h.read_result(spec)
    await smsc.control("wait_for", count=result.accepted, timeout=10.0)
    print(h.machine_line("after"))
    report(args, daemon, smsc, result, times, kills, restarts, started, finished)


def recovered_per_start(daemon: h.Daemon) -> list[int]:
    """Segments each restart found in flight, from the daemon's warning lines."""
    found = []
    for line in daemon.log_path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == RECOVERED:
            found.append(int(event.get("segments", 0)))
    return found


def report(
    args: argparse.Namespace,
    daemon: h.Daemon,
    smsc: h.Smsc,
    result: h.SubmitResult,
    times: array.array[float],
    kills: list[float],
    restarts: list[float],
    started: float,
    finished: float,
) -> None:
    assert smsc.record_path is not None
    seen = h.read_records(smsc.record_path, PREFIX)
    acked = [i for i, t in enumerate(times) if not math.isnan(t)]
    lost = [i for i in acked if i not in seen]
    unacked_seen = sum(1 for i in seen if math.isnan(times[i]))
    per_crash = [0] * (len(kills) + 1)  # [0]: before the first crash
    for sightings in seen.values():
        for t in sorted(sightings)[1:]:
            per_crash[sum(1 for k in kills if k <= t)] += 1
    bound = args.window * args.binds
    print(
        f"{args.count:,} messages, {len(kills)} crashes (kill -9) in {finished - started:.1f} s; "
        f"restarts took {', '.join(f'{s:.1f}' for s in restarts)} s"
    )
    print(
        f"acknowledged {len(acked):,} (errors {result.errors}, resubmits {result.retries}); "
        f"seen at the SMSC {len(seen):,} ({unacked_seen} never acknowledged)"
    )
    print(f"LOST: {len(lost)}" + (f" e.g. indexes {lost[:10]}" if lost else ""))
    dups = sum(per_crash)
    worst = max(per_crash[1:], default=0)
    verdict = "within" if per_crash[0] == 0 and worst <= bound else "OVER"
    print(
        f"duplicates at the SMSC: {dups} in all; per crash {per_crash[1:]} "
        f"(before any crash {per_crash[0]}); bound window x binds = {bound} per crash: {verdict}"
    )
    print(f"in flight found at each restart: {recovered_per_start(daemon)}")


def main() -> int:
    args = parse_args()
    h.use_common(args)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
