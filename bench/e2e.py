"""End-to-end durable throughput: API submit -> SQLite -> SMSC -> resp -> receipt recorded.

The fake SMSC and the daemon run as processes on this machine (SQLite on disk in a temporary
directory); submitter processes send N messages with `submit_many` over several pipelined
connections; the run ends when every receipt is recorded (the daemon's `stats` op), or with
--no-receipts when every message is submitted (registered_delivery false: submit and resp only,
still durable). Prints accepted/s, submitted/s (as seen at the SMSC), receipts recorded/s, the
CPU seconds of daemon, SMSC and submitters, the daemon's peak RSS, and the latency accept ->
submit_sm seen at the SMSC, matched by text through the SMSC's JSON-lines record.

    .venv/bin/python bench/e2e.py                          # 100,000 messages with receipts
    .venv/bin/python bench/e2e.py --count 20000 --no-receipts
    .venv/bin/python bench/e2e.py --pace 9000               # a steady offer: does sending keep up?
    .venv/bin/python bench/e2e.py --profile p.txt          # py-spy record of the daemon
    .venv/bin/python bench/e2e.py --profile p.txt --gil    # who holds the interpreter lock
    .venv/bin/python bench/e2e.py --profile p.txt --wall --after-accept   # where each thread's
                                                           # time goes once accepting is done
    .venv/bin/python bench/e2e.py --profile p.txt --profile-smsc   # the fake SMSC's time instead
    .venv/bin/python bench/e2e.py --poll-status 500         # and a service polling status
    .venv/bin/python bench/e2e.py --read-finished 20        # or reading outcomes back
    .venv/bin/python bench/ab.py HEAD~1 -- --count 60000   # two commits, runs interleaved

Every rate counts from the first submit sent. `sustained` is the SMSC's rate between 10% and 90%
of the messages. Without --pace the submitters send as fast as the daemon acknowledges, so the
first seconds are mostly accepting (sending then runs at a fraction of its later rate); with
--pace the offer is steady and the rates show whether the daemon keeps up. With --no-record the
SMSC keeps counters only (no latency, less SMSC CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _harness as h

from smppd.client import ApiClientError, Client

PREFIX = "E"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="messages (100,000)")
    parser.add_argument("--processes", type=int, default=1, help="submitter processes (1)")
    parser.add_argument("--connections", type=int, default=4, help="per process (4)")
    parser.add_argument("--depth", type=int, default=4, help="batches in flight per connection")
    parser.add_argument("--batch", type=int, default=500, help="messages per submit_many (500)")
    parser.add_argument(
        "--pace",
        type=float,
        default=0.0,
        help="offer at most this many messages/s in all, for a steady state (0: no limit)",
    )
    parser.add_argument("--claim-batch", type=int, default=None, help="queue.claim_batch")
    parser.add_argument(
        "--receipt-delay", type=float, default=0.0, help="SMSC receipt delay after the resp (0 s)"
    )
    parser.add_argument("--no-record", action="store_true", help="SMSC counts only: no latency")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after (s)")
    parser.add_argument(
        "--poll-status",
        type=float,
        default=0.0,
        metavar="RATE",
        help="also ask `status` for random accepted messages this many times a second, from "
        "a connection of its own, and print how long the answers took",
    )
    parser.add_argument(
        "--summary", type=Path, default=None, help="also write the main figures here, as JSON"
    )
    parser.add_argument(
        "--read-finished",
        type=float,
        default=0.0,
        metavar="RATE",
        help="also read `finished` pages of 1,000 this many times a second, one at a time from "
        "a connection of its own, following each page's cursor, and print how long they took",
    )
    h.add_profile_options(parser)
    parser.add_argument(
        "--after-accept",
        action="store_true",
        help="with --profile: start it once every submit is acknowledged (sending alone)",
    )
    parser.add_argument(
        "--profile-smsc",
        action="store_true",
        help="with --profile: record the fake SMSC instead of the daemon",
    )
    h.add_common(parser)
    return parser.parse_args()


async def run(args: argparse.Namespace) -> None:
    await h.run_bench(
        args,
        measure,
        smsc={"record": not args.no_record, "receipt_delay_s": args.receipt_delay},
        config={"queue": {} if args.claim_batch is None else {"claim_batch": args.claim_batch}},
    )


async def measure(
    args: argparse.Namespace, directory: Path, smsc: h.Smsc, daemon: h.Daemon
) -> None:
    count: int = args.count
    print(h.machine_line("before"))
    daemon_cpu0 = h.cpu_s(daemon.pid) or 0.0
    split0 = h.cpu_split_s(daemon.pid) or (0.0, 0.0)
    smsc_cpu0 = h.cpu_s(smsc.pid) or 0.0

    profiled = smsc.pid if args.profile_smsc else daemon.pid
    profiler = None if args.after_accept else h.profile(args, profiled)

    share = math.ceil(count / args.processes)
    specs = [
        h.SubmitSpec(
            socket=str(daemon.socket),
            out=str(directory / f"submit{p}.json"),
            prefix=PREFIX,
            start=p * share,
            stop=min(count, (p + 1) * share),
            connections=args.connections,
            depth=args.depth,
            batch=args.batch,
            pace=args.pace / args.processes,
            registered_delivery=not args.no_receipts,
            deadline_s=args.timeout,
        )
        for p in range(args.processes)
    ]
    submitters = [h.start_submitter(spec) for spec in specs]
    highest = 0  # messages the daemon holds so far: ids 1..highest exist
    poll_latencies: list[float] = []
    polling = (
        asyncio.ensure_future(
            poll_status(daemon.socket, args.poll_status, lambda: highest, poll_latencies)
        )
        if args.poll_status > 0
        else None
    )
    pages: list[float] = []
    finished_read = [0]
    reading = (
        asyncio.ensure_future(
            read_finished(daemon.socket, args.read_finished, pages, finished_read)
        )
        if args.read_finished > 0
        else None
    )
    done_state = ("submitted", *h.FINAL) if args.no_receipts else h.FINAL
    deadline = time.monotonic() + args.timeout
    smsc_done_at = done_at = math.nan
    submitters_done = False
    target = count
    while True:
        await asyncio.sleep(0.1)
        if not submitters_done and all(p.poll() is not None for p in submitters):
            await h.wait_submitters(submitters, 1)
            submitters_done = True
            target = sum(h.read_result(spec)[0].accepted for spec in specs)
            if args.after_accept:
                profiler = h.profile(args, profiled)
        if math.isnan(smsc_done_at) and await smsc.segments() >= target:
            smsc_done_at = time.time()
        stats = await daemon.stats()
        highest = sum(stats["segments"].values())
        if submitters_done and h.segments_in(stats, *done_state) >= target:
            done_at = time.time()
            break
        if time.monotonic() > deadline:
            print(f"timed out; daemon stats: {stats}")
            print(f"SMSC stats: {await smsc.control('stats')}")
            break
    if profiler is not None:
        h.stop_profiler(profiler)
    if polling is not None:
        polling.cancel()
        await asyncio.gather(polling, return_exceptions=True)
        print(h.latency_line(f"status polled ({len(poll_latencies):,})", poll_latencies))
    if reading is not None:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        print(h.latency_line(f"finished pages read ({finished_read[0]:,} messages)", pages))
    daemon_cpu = (h.cpu_s(daemon.pid) or math.nan) - daemon_cpu0
    user, system = h.cpu_split_s(daemon.pid) or (math.nan, math.nan)
    print(f"daemon CPU: user {user - split0[0]:.1f} s, system {system - split0[1]:.1f} s")
    smsc_cpu = (h.cpu_s(smsc.pid) or math.nan) - smsc_cpu0
    peak_rss = h.status_mib(daemon.pid, "VmHWM")
    metrics = daemon.metrics()
    means = h.histogram_means(metrics)
    if not args.no_receipts:
        results = h.label_sums(metrics, "smppd_receipts_total", "result")
        print("receipts by match result: " + ", ".join(f"{k} {v:,.0f}" for k, v in results.items()))
    print(h.machine_line("after"))
    report(args, specs, stats, means, smsc, daemon_cpu, smsc_cpu, peak_rss, smsc_done_at, done_at)


async def poll_status(
    socket: Path, rate: float, highest: Callable[[], int], latencies: list[float]
) -> None:
    """`status` requests at `rate` a second, each on its own (as many services polling would
    be, not one waiting for the last), until cancelled; appends each one's answer time."""
    rng = random.Random(8)
    pending: set[asyncio.Task[None]] = set()

    async def one(client: Client, message_id: int) -> None:
        started = time.perf_counter()
        # not_found: asked before the message was there; still a read
        with contextlib.suppress(ApiClientError):
            await client.status(message_id)
        latencies.append(time.perf_counter() - started)

    async with Client(socket, timeout_s=60, max_in_flight=10_000) as client:
        next_at = time.monotonic()
        try:
            while True:
                if highest() > 0:
                    task = asyncio.ensure_future(one(client, rng.randint(1, highest())))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                next_at += 1 / rate
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


async def read_finished(socket: Path, rate: float, pages: list[float], read: list[int]) -> None:
    """`finished` pages of 1,000 at most `rate` a second, each after the last, following the
    cursor while there is more, until cancelled; appends each page's time, counts messages."""
    cursor: str | None = None
    async with Client(socket, timeout_s=60) as client:
        next_at = time.monotonic()
        while True:
            started = time.perf_counter()
            page = await client.finished(after=cursor, limit=1000)
            pages.append(time.perf_counter() - started)
            read[0] += len(page["messages"])
            cursor = page["next"]
            next_at += 1 / rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


def report(
    args: argparse.Namespace,
    specs: list[h.SubmitSpec],
    stats: dict[str, object],
    means: dict[str, float],
    smsc: h.Smsc,
    daemon_cpu: float,
    smsc_cpu: float,
    peak_rss: float | None,
    smsc_done_at: float,
    done_at: float,
) -> None:
    results = [h.read_result(spec) for spec in specs]
    first = min(r.first_sent for r, _ in results)
    last_accept = max(r.last_accepted for r, _ in results)
    accepted = sum(r.accepted for r, _ in results)
    errors: dict[str, int] = {}
    for r, _ in results:
        for code, n in r.errors.items():
            errors[code] = errors.get(code, 0) + n
    kind = "no receipts" if args.no_receipts else "with receipts"
    print(f"{args.count:,} messages, {kind}, {args.processes}x{args.connections} connections")
    print(f"accepted: {accepted:,} ({h.rate(accepted, last_accept - first)}) errors: {errors}")
    accept_times: dict[int, float] = {}
    for spec, (_, times) in zip(specs, results, strict=True):
        for offset, t in enumerate(times):
            if not math.isnan(t):
                accept_times[spec.start + offset] = t
    if smsc.record_path is not None:
        seen = h.read_records(smsc.record_path, PREFIX)
        firsts = sorted(min(ts) for ts in seen.values())
        last = firsts[-1] if firsts else math.nan
        print(f"submitted at the SMSC: {len(seen):,} ({h.rate(len(seen), last - first)})", end="")
        if len(firsts) >= 10:
            lo, hi = firsts[len(firsts) // 10], firsts[len(firsts) * 9 // 10]
            print(f", sustained {h.rate(len(firsts) * 8 // 10, hi - lo)}", end="")
        dups = sum(len(ts) - 1 for ts in seen.values())
        missing = sum(1 for i in accept_times if i not in seen)
        print(f"; duplicates {dups}, accepted but not seen {missing}")
        latencies = [min(seen[i]) - t for i, t in accept_times.items() if i in seen]
        print(h.latency_line("latency accept -> submit_sm at the SMSC", latencies, (50, 99, 99.9)))
        early = sum(1 for v in latencies if v < 0)
        print(f"  ({early:,} reached the SMSC before the client read its ack)")
    else:
        print(f"submitted at the SMSC: {h.rate(accepted, smsc_done_at - first)} (polled)")
    what = "submitted" if args.no_receipts else "receipts recorded"
    print(f"{what}: {h.rate(accepted, done_at - first)} (end to end, polled every 0.1 s)")
    client_cpu = sum(r.cpu_s for r, _ in results)
    per_msg = 1e6 / max(accepted, 1)
    print(
        f"CPU s: daemon {daemon_cpu:.1f} ({daemon_cpu * per_msg:.0f} us/msg), "
        f"SMSC {smsc_cpu:.1f} ({smsc_cpu * per_msg:.0f} us/msg), "
        f"submitters {client_cpu:.1f}; wall {done_at - first:.1f} s"
    )
    print(f"daemon peak RSS (VmHWM): {peak_rss:.1f} MiB" if peak_rss else "daemon RSS: n/a")
    commits = int(str(stats.get("commits", 0)))
    commit_ms = means.get("smppd_queue_commit_seconds", math.nan) * 1e3
    print(
        f"store commits: {commits:,} ({commits / max(accepted, 1):.3f} per message), "
        f"mean {commit_ms:.1f} ms each"
    )
    # A window slot is taken from the write of a submit_sm until its outcome is committed.
    print(
        "window slot held (means): submit_sm -> resp "
        f"{means.get('smppd_submit_latency_seconds', math.nan) * 1e3:.1f} ms, "
        f"outcome -> committed {means.get('smppd_outcome_commit_seconds', math.nan) * 1e3:.1f} ms"
    )
    print(f"daemon stats at the end: segments {stats.get('segments')}")
    if args.summary is not None:
        summary = {
            "messages": accepted,
            "rate": accepted / (done_at - first),  # end to end: receipts, or submits without
            "daemon_us_per_message": daemon_cpu * per_msg,
            "smsc_us_per_message": smsc_cpu * per_msg,
            "outcome_committed_ms": means.get("smppd_outcome_commit_seconds", math.nan) * 1e3,
        }
        args.summary.write_text(json.dumps(summary))


def main() -> int:
    args = parse_args()
    h.use_common(args)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
