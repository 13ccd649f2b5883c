"""Allocation sites of a benchmarked daemon over time, for finding memory that grows.

`bench/e2e.py --trace-memory S` (and the other end-to-end benchmarks) start the daemon through
`start()`: tracemalloc from the first import, and a thread that writes a JSON line every S
seconds with the memory traced and every allocation site (file:line) holding SITE_MIN_BYTES or
more. `report()` reads them back: the traced total over time and the sites that grew most from
a third of the way through (past start-up) to the last line. tracemalloc slows the daemon by
half or more, so such a run's rates are not comparable with others; it answers "what grows",
not "how fast".
"""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
from pathlib import Path

# Sites below this are left out of a line (and read as this much at most when compared).
SITE_MIN_BYTES = 32 * 1024
FRAMES = 4  # enough to name the project's line behind an allocation made in the stdlib


def start(path: str, every_s: float) -> None:
    tracemalloc.start(FRAMES)
    began = time.monotonic()

    def write() -> None:
        with Path(path).open("a") as out:
            while True:
                time.sleep(every_s)
                sites: dict[str, list[int]] = {}
                for stat in tracemalloc.take_snapshot().statistics("traceback"):
                    held = sites.setdefault(_site(stat.traceback), [0, 0])
                    held[0] += stat.size
                    held[1] += stat.count
                kept = [[site, *held] for site, held in sites.items() if held[0] >= SITE_MIN_BYTES]
                line = {
                    "t": round(time.monotonic() - began, 1),
                    "traced": tracemalloc.get_traced_memory()[0],
                    "sites": kept,
                }
                out.write(json.dumps(line) + "\n")
                out.flush()

    threading.Thread(target=write, name="memtrace", daemon=True).start()


def _site(traceback: tracemalloc.Traceback) -> str:
    """The allocating line, and the project's line that called down to it when it is not one."""
    frames = [f"{frame.filename}:{frame.lineno}" for frame in reversed(traceback)]  # newest first
    ours = next((f for f in frames if "/smppd/" in f or "/tools/" in f), None)
    return frames[0] if ours in (None, frames[0]) else f"{frames[0]} from {ours}"


def report(path: Path, *, top: int = 3) -> list[str]:
    """Lines to print: the traced total over time, then the sites that grew most."""
    if not path.exists():
        return ["memory trace: no snapshot taken (a run shorter than its interval)"]
    lines = [json.loads(text) for text in path.read_text().splitlines() if text.strip()]
    if not lines:
        return ["memory trace: no snapshot taken (a run shorter than its interval)"]
    series = " ".join(f"{line['t']:.0f}s {line['traced'] / 2**20:.1f}" for line in lines)
    out = [f"memory traced in the daemon (MiB): {series}"]
    if len(lines) < 4:
        return out
    first = {site: (size, count) for site, size, count in lines[len(lines) // 3]["sites"]}
    grown = []
    for site, size, count in lines[-1]["sites"]:
        size0, count0 = first.get(site, (0, 0))
        grown.append((size - size0, count - count0, site))
    grown.sort(reverse=True)
    for size, count, site in grown[:top]:
        if size > 0:
            out.append(f"  grew {size / 2**20:+.2f} MiB ({count:+,} blocks) at {site}")
    return out
