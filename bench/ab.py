"""Two revisions of smppd measured by bench/e2e.py in interleaved runs, for comparing changes.

This machine's speed drifts by 30% within a day and up to three times between days, so runs of
one revision an hour apart from runs of the other say little. Here the runs alternate, in the
order A B, B A, A B, ..., so that a drift during the session falls on both sides, and each
pair is read as a ratio of figures taken minutes apart.

    .venv/bin/python bench/ab.py HEAD~1                       # HEAD~1 against the working tree
    .venv/bin/python bench/ab.py 60279d9 HEAD --pairs 4 -- --count 60000 --no-receipts

Arguments after `--` go to every e2e run. A revision is exported with `git archive` (committed
files only); without a second revision, B is the working tree as it is, edits included. Prints
each run's end-to-end rate and daemon CPU per message, then per pair the ratio B/A of both, and
their medians.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import ROOT, busy_cores, calibration_ms

E2E = Path(__file__).resolve().parent / "e2e.py"


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:]
    passed: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passed = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="revision A (the baseline)")
    parser.add_argument("b", nargs="?", default=None, help="revision B (default: working tree)")
    parser.add_argument("--pairs", type=int, default=3, help="pairs of runs (3)")
    return parser.parse_args(argv), passed


def export(revision: str, into: Path) -> Path:
    """The committed tree of `revision`, unpacked into a directory of its own."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_once(tree: Path, passed: list[str], summary: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, str(E2E), "--tree", str(tree), "--summary", str(summary), *passed],
        check=False,  # a failure is reported with the run's output, below
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not summary.exists():
        sys.exit(f"e2e run from {tree} failed:\n{done.stdout}{done.stderr}")
    figures: dict[str, float] = json.loads(summary.read_text())
    summary.unlink()
    return figures


def main() -> int:
    args, passed = parse_args()
    if args.pairs < 1:
        sys.exit("--pairs must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="smppd-ab-", dir="/tmp"))
    try:
        trees = {
            "A": export(args.a, work / "a"),
            "B": ROOT if args.b is None else export(args.b, work / "b"),
        }
        print(f"A: {args.a}  B: {args.b or 'working tree'}  e2e args: {' '.join(passed) or '-'}")
        runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
        for pair in range(args.pairs):
            for side in "AB" if pair % 2 == 0 else "BA":
                calibration, busy = calibration_ms(), busy_cores()
                figures = run_once(trees[side], passed, work / "summary.json")
                runs[side].append(figures)
                print(
                    f"pair {pair + 1} {side}: {figures['rate']:,.0f}/s, "
                    f"{figures['daemon_us_per_message']:.0f} us/msg daemon CPU, "
                    f"outcome -> committed {figures['outcome_committed_ms']:.1f} ms "
                    f"(calibration {calibration:.0f} ms, {busy:.2f} cores busy before)",
                    flush=True,
                )
        rates = [b["rate"] / a["rate"] for a, b in zip(runs["A"], runs["B"], strict=True)]
        cpus = [
            b["daemon_us_per_message"] / a["daemon_us_per_message"]
            for a, b in zip(runs["A"], runs["B"], strict=True)
        ]
        print("B/A per pair: rate " + ", ".join(f"{r:.3f}" for r in rates))
        print("              daemon CPU per message " + ", ".join(f"{c:.3f}" for c in cpus))
        print(
            f"median B/A: rate {statistics.median(rates):.3f}, "
            f"daemon CPU per message {statistics.median(cpus):.3f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
