"""Where a py-spy raw profile (bench/e2e.py --profile) spent its samples, per thread.

    .venv/bin/python bench/profile_summary.py p.txt --messages 50000

Prints each thread's samples, the seconds they stand for and, with --messages, microseconds per
message; then the functions with the most samples of their own, and the project's functions
with the most samples inside them. A profile recorded with --gil samples only the thread holding
the interpreter lock, so its figures are interpreter-lock time: what bounds the daemon's rate.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from _harness import PROFILE_RATE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="py-spy raw output (collapsed stacks)")
    parser.add_argument("--messages", type=int, default=None, help="messages in the run")
    parser.add_argument("--top", type=int, default=15, help="functions to list per thread")
    args = parser.parse_args()
    own: dict[str, Counter[str]] = {}
    inside: dict[str, Counter[str]] = {}
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1]
        n = int(count)
        own.setdefault(thread, Counter())[frames[-1]] += n
        for frame in set(frames[1:]):
            if ("smppd/" in frame or "tools/" in frame) and "__main__" not in frame:
                inside.setdefault(thread, Counter())[frame] += n
    for thread, counts in sorted(own.items(), key=lambda item: -item[1].total()):
        total = counts.total()
        seconds = total / PROFILE_RATE
        per = "" if not args.messages else f", {seconds / args.messages * 1e6:.0f} us/message"
        print(f"{thread}: {total} samples, {seconds:.1f} s{per}")
        for title, table in (("own", counts), ("inside (smppd)", inside.get(thread, Counter()))):
            print(f"  most samples {title}:")
            for frame, n in table.most_common(args.top):
                print(f"    {n / total:6.1%}  {frame[:110]}")


if __name__ == "__main__":
    main()
