"""Where a py-spy raw profile (bench/e2e.py --profile) spent its samples, per thread.

    .venv/bin/python bench/profile_summary.py p.txt --messages 50000

Prints each thread's samples, the seconds they stand for and, with --messages, microseconds per
message; then the functions with the most samples of their own, and the project's functions
with the most samples inside them. A profile recorded with --gil samples only the thread holding
the interpreter lock, so its figures are interpreter-lock time: what bounds the daemon's rate.

A profile recorded with --wall (every thread, waiting or not, with C frames) also gets each
thread's time split by what it was doing: running, in SQLite's C code, in fsync, waiting for
the interpreter lock, or idle (waiting for events or work). The lock wait is recognised the way
CPython 3.11-3.13 waits for it, on a condition variable (`pthread_cond_timedwait`); every other
wait in the daemon is a semaphore, epoll or poll. With --wall, a function's "own" samples are
those whose innermost Python frame it is. To read its C frames py-spy stops the process for
each sample, and that catches threads at their syscalls more often than their cost warrants:
take per-line figures from a plain or --gil profile, which samples without stopping.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from _harness import PROFILE_RATE, WALL_PROFILE_RATE

LOCK_WAIT = "waiting for the interpreter lock"
STATES = ("running", "SQLite (C)", "fsync", LOCK_WAIT, "idle")
_IDLE_FRAMES = ("epoll_wait", "PyThread_acquire_lock_timed", "select_poll_poll_impl", "poll")


def is_native(frame: str) -> bool:
    """A C frame of py-spy --native: an address, a shared object, or a C source location.
    Python frames name a file and line, `<string>` (generated code) and `<frozen ...>` too."""
    location = frame.rpartition(" (")[2]
    source = location.split(":")[0]
    return frame.startswith("0x") or ".so" in location or source.endswith((".c", ".h"))


def state_of(frames: list[str]) -> str:
    """What a --wall sample's thread was doing, from its frames (outermost first)."""
    names = [frame.split(" (", 1)[0] for frame in frames]
    named = [name for name in names if not name.startswith("0x")]
    if named and named[-1] == "pthread_cond_timedwait":
        return LOCK_WAIT
    if any(name in ("fdatasync", "fsync") for name in named):
        return "fsync"
    if any(name in _IDLE_FRAMES for name in named):
        return "idle"
    if any(name.startswith("sqlite3") for name in named):
        return "SQLite (C)"
    return "running"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="py-spy raw output (collapsed stacks)")
    parser.add_argument("--messages", type=int, default=None, help="messages in the run")
    parser.add_argument("--top", type=int, default=15, help="functions to list per thread")
    args = parser.parse_args()
    own: dict[str, Counter[str]] = {}
    inside: dict[str, Counter[str]] = {}
    states: dict[str, Counter[str]] = {}
    lines = args.profile.read_text().splitlines()
    native = any(is_native(frame) for line in lines for frame in line.split(";")[1:])
    for line in lines:
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1]
        n = int(count)
        python = [frame for frame in frames[1:] if not is_native(frame)]
        own.setdefault(thread, Counter())[python[-1] if native and python else frames[-1]] += n
        if native:
            states.setdefault(thread, Counter())[state_of(frames[1:])] += n
        for frame in set(frames[1:]):
            if ("smppd/" in frame or "tools/" in frame) and "__main__" not in frame:
                inside.setdefault(thread, Counter())[frame] += n
    for thread, counts in sorted(own.items(), key=lambda item: -item[1].total()):
        total = counts.total()
        seconds = total / (WALL_PROFILE_RATE if native else PROFILE_RATE)
        per = "" if not args.messages else f", {seconds / args.messages * 1e6:.0f} us/message"
        print(f"{thread}: {total} samples, {seconds:.1f} s{per}")
        if thread in states:
            split = states[thread]
            print("  " + ", ".join(f"{name} {split[name] / total:.1%}" for name in STATES))
        for title, table in (("own", counts), ("inside (smppd)", inside.get(thread, Counter()))):
            print(f"  most samples {title}:")
            for frame, n in table.most_common(args.top):
                print(f"    {n / total:6.1%}  {frame[:110]}")


if __name__ == "__main__":
    main()
