"""Shared pieces of the end-to-end benchmarks (e2e, latency, priority, crash).

It starts the fake SMSC and the daemon as processes on this machine (127.0.0.1 and a Unix
socket in a private temporary directory), writes the daemon's config, reads a process's CPU time
and memory from /proc, drives the SMSC's control socket, runs submitters in processes of their
own and reads the SMSC's JSON-lines record back. It is also the submitter's entry point:

    python bench/_harness.py submit SPEC.json

Message texts carry their index (`B00001234 ...`): a record at the SMSC is matched to the
client's accept time by its text, which is unique per message within a run.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import math
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from smppd.client import UNAVAILABLE, ApiClientError, ApiConnectionError, Client

ROOT: Final = Path(__file__).resolve().parent.parent
# The source tree the daemon and the SMSC run from (`--tree`, e.g. a `git archive` of a commit,
# so that a measurement does not pick up edits in progress); the submitters use it as well.
TREE = ROOT
AMBIGUOUS_IDS = False  # --ambiguous-ids: the fake SMSC's ids from 1 (see UNAMBIGUOUS_ID_START)
HARNESS: Final = Path(__file__).resolve()
BENCH: Final = HARNESS.parent
CLIENT: Final = "bench"
SENDER: Final = "BENCH"
START_TIMEOUT_S: Final = 30.0
TEXT_BODY: Final = " Your verification code is 482913. It expires in 10 minutes."
INDEX_DIGITS: Final = 8
# Codes after which a crash-mode submitter retries the batch (with the same refs).
# "timeout" by name: bench/ab.py runs these scripts against older trees too.
RETRY_CODES: Final = frozenset(
    {UNAVAILABLE, "timeout", "shutting_down", "queue_full", "too_many_pending"}
)
# The fake SMSC numbers its message ids from here, in hex: a0000000.. always holds a letter,
# so every id has one reading. All-digit ids (00000010) are also read as decimal by
# smppd.pdu.receipt.receipt_keys, where they collide with other ids' hex readings
# (0000000a is 10 too) and a receipt can land on the wrong segment; --ambiguous-ids keeps them.
UNAMBIGUOUS_ID_START: Final = 0xA000_0000


def text_for(prefix: str, index: int) -> str:
    """A message text unique within a run: one letter, the index, a realistic body."""
    return f"{prefix}{index:0{INDEX_DIGITS}d}{TEXT_BODY}"


def index_of(text: str, prefix: str) -> int | None:
    """The index written by `text_for`, or None for a text of another kind."""
    end = len(prefix) + INDEX_DIGITS
    if not text.startswith(prefix) or not text[len(prefix) : end].isdigit():
        return None
    return int(text[len(prefix) : end])


def destination_for(index: int) -> str:
    return f"+4477009{index % 100_000:05d}"


# --- /proc ----------------------------------------------------------------------------------


def cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_split_s(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of a process, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def status_mib(pid: int, key: str) -> float | None:
    """A memory line of /proc/PID/status (VmRSS, VmHWM) in MiB, or None once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return None


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def calibration_ms() -> float:
    """A fixed pure-Python loop, timed: how fast this machine runs Python just now (figures
    from runs with different values are not comparable; other tenants slow it down)."""
    started = time.perf_counter()
    total = 0
    for i in range(1_000_000):
        total += i * i
    return (time.perf_counter() - started) * 1e3


def busy_cores(span_s: float = 0.3) -> float:
    """Cores kept busy by whatever runs on the machine, over `span_s` of this process's sleep.

    The calibration loop times one core, so it misses a tenant (or a forgotten process) that
    holds the other: on two cores that leaves the daemon, the SMSC and the submitters one core
    between them, and the rates fall by a quarter or more while the calibration reads as usual.
    """
    first = _cpu_jiffies()
    time.sleep(span_s)
    busy, total = (b - a for a, b in zip(first, _cpu_jiffies(), strict=True))
    return busy / total * (os.cpu_count() or 1) if total else 0.0


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores together, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


# Past this many busy cores before a run, its figures say more about the other load than ours.
BUSY_WARNING: Final = 0.25


def machine_line(when: str) -> str:
    busy = busy_cores()
    # After a run the processes it started may still be exiting: only a load before it counts.
    warning = (
        " (another load: not comparable with a quiet machine)"
        if when == "before" and busy > BUSY_WARNING
        else ""
    )
    return (
        f"load average {when}: {load_average()}; other processes busy {busy:.2f} of "
        f"{os.cpu_count()} cores{warning}; calibration loop {calibration_ms():.0f} ms"
    )


# --- figures --------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank of an already sorted sequence."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_line(name: str, seconds: Sequence[float], qs: Sequence[float] = (50, 99)) -> str:
    values = sorted(seconds)
    if not values:
        return f"{name}: no samples"
    parts = [f"p{q:g} {percentile(values, q) * 1e3:.1f} ms" for q in qs]
    return f"{name} (n={len(values)}): " + ", ".join(parts) + f", max {values[-1] * 1e3:.1f} ms"


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s" if seconds > 0 else "n/a"


# --- processes ------------------------------------------------------------------------------


def workdir() -> Path:
    """A private temporary directory short enough for a Unix socket path."""
    return Path(tempfile.mkdtemp(prefix="smppd-bench-", dir="/tmp"))


def _read_lines(process: subprocess.Popen[bytes], count: int, timeout_s: float) -> list[str]:
    """The first `count` lines a process prints, read unbuffered under a deadline."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while data.count(b"\n") < count:
            if not selector.select(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"no output from the process in time: {data!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"the process exited: {data!r}")
            data += chunk
    return data.decode().splitlines()[:count]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(TREE)}


def add_common(parser: argparse.ArgumentParser) -> None:
    """The options every end-to-end benchmark takes (run_bench reads them)."""
    parser.add_argument("--no-receipts", action="store_true", help="registered_delivery false")
    parser.add_argument("--binds", type=int, default=2)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--tree", type=Path, default=None, help="run smppd from this tree")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--ambiguous-ids", action="store_true", help="SMSC message ids from 1 (all-digit ones)"
    )
    parser.add_argument(
        "--switch-interval", type=float, default=None, help="sys.setswitchinterval in the daemon"
    )
    parser.add_argument(
        "--trace-memory",
        type=float,
        default=None,
        metavar="S",
        help="tracemalloc in the daemon, allocation sites every S seconds (bench/memtrace.py);"
        " slows it: for what grows, not for rates",
    )


def use_common(args: argparse.Namespace) -> None:
    global TREE, AMBIGUOUS_IDS
    AMBIGUOUS_IDS = args.ambiguous_ids
    if args.tree is not None:
        TREE = args.tree.resolve()
        print(f"smppd and the fake SMSC from {TREE}")


def _stop(process: subprocess.Popen[Any], timeout_s: float = 15.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


class Smsc:
    """The fake SMSC as a process: `python -m tools.fake_smsc` with a control socket."""

    def __init__(
        self,
        directory: Path,
        *,
        record: bool = True,
        in_memory: bool = False,
        receipt_delay_s: float = 0.0,
    ) -> None:
        self.control_path = directory / "smsc.ctl"
        self.record_path = directory / "smsc.jsonl" if record else None
        command = [sys.executable, "-m", "tools.fake_smsc", "--host", "127.0.0.1", "--port", "0"]
        command += ["--system-id", "smppd", "--password", "secret"]
        command += ["--control", str(self.control_path)]
        scenario: dict[str, Any] = {}
        if not AMBIGUOUS_IDS:
            scenario["message_id_start"] = UNAMBIGUOUS_ID_START
        if receipt_delay_s:
            scenario["receipts"] = {"delay_s": receipt_delay_s}
        if scenario:
            path = directory / "smsc.yaml"
            path.write_text(yaml.safe_dump(scenario))
            command += ["--scenario", str(path)]
        if not in_memory:
            command.append("--no-record")
        if self.record_path is not None:
            command += ["--record", str(self.record_path)]
        self.process = subprocess.Popen(
            command, cwd=TREE, env=_env(), stdout=subprocess.PIPE, bufsize=0
        )
        try:
            listening, control = _read_lines(self.process, 2, START_TIMEOUT_S)
        except BaseException:
            _stop(self.process)
            raise
        if "listening on" not in listening or "control on" not in control:
            _stop(self.process)
            raise RuntimeError(f"fake SMSC did not start: {listening!r} {control!r}")
        self.port = int(listening.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        _stop(self.process)

    async def control(self, op: str, **fields: Any) -> Any:
        """One request on the control socket; its result, or RuntimeError with the error."""
        reader, writer = await asyncio.open_unix_connection(
            str(self.control_path), limit=64 * 1024 * 1024
        )
        try:
            async with asyncio.timeout(float(fields.get("timeout", 5.0)) + 10.0):
                writer.write(json.dumps({"op": op, "id": 1, **fields}).encode() + b"\n")
                reply = json.loads(await reader.readline())
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not reply.get("ok"):
            raise RuntimeError(f"fake SMSC {op}: {reply.get('error')}")
        return reply["result"]

    async def segments(self) -> int:
        stats = await self.control("stats")
        return int(stats["segments"])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on just now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(
    directory: Path,
    smsc_port: int,
    *,
    registered_delivery: bool = True,
    binds: int = 2,
    window: int = 100,
    tps: float = 1_000_000,
    queue: dict[str, Any] | None = None,
) -> Path:
    """A daemon config for one carrier on the fake SMSC, everything else in `directory`."""
    config: dict[str, Any] = {
        "queue": {"path": str(directory / "smppd.db"), "retry_initial_s": 0.2, **(queue or {})},
        "api": {
            "socket": str(directory / "smppd.sock"),
            "clients": [{"name": CLIENT, "uids": [os.getuid()]}],
            "max_pending_per_connection": 10_000,
        },
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "logging": {"level": "warning", "format": "json"},
        "carriers": [
            {
                "name": "fake",
                "host": "127.0.0.1",
                "port": smsc_port,
                "system_id": "smppd",
                "password": "secret",
                "binds": binds,
                "window": window,
                "tps": tps,
                "response_timeout_s": 10,
                "reconnect": {"initial_s": 0.1, "max_s": 1},
                "registered_delivery": registered_delivery,
            }
        ],
        "routes": [{"prefix": "", "carriers": ["fake"]}],
        "senders": [{"id": SENDER, "client": CLIENT}],
    }
    path = directory / "smppd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Daemon:
    """`python -m smppd run -c CONFIG` as a process, its output appended to a log file."""

    def __init__(
        self,
        config: Path,
        *,
        extra_env: dict[str, str] | None = None,
        switch_interval_s: float | None = None,
        trace_memory_s: float | None = None,
    ) -> None:
        self.config = config
        # sys.setswitchinterval in the daemon (an experiment: the SQLite thread gives up the GIL
        # at every sqlite3_step and may wait up to this long to get it back; default 0.005).
        self.switch_interval_s = switch_interval_s
        # bench/memtrace.py in the daemon: allocation sites every this many seconds.
        self.trace_memory_s = trace_memory_s
        self.memtrace_path = config.parent / "memtrace.jsonl"
        self.socket = config.parent / "smppd.sock"
        self.log_path = config.parent / "smppd.log"
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            command = [sys.executable, "-m", "smppd", "run", "-c", str(self.config)]
            prelude = []
            if self.switch_interval_s is not None:
                prelude.append(f"sys.setswitchinterval({self.switch_interval_s!r})")
            if self.trace_memory_s is not None:
                prelude += [
                    f"sys.path.append({str(BENCH)!r})",  # last: bench/queue.py is not stdlib's
                    "import memtrace",
                    f"memtrace.start({str(self.memtrace_path)!r}, {self.trace_memory_s!r})",
                ]
            if prelude:
                run = "sys.argv[0] = 'smppd'; runpy.run_module('smppd', run_name='__main__')"
                command[1:3] = ["-c", "; ".join(["import sys, runpy", *prelude, run])]
            return subprocess.Popen(
                command,
                cwd=TREE,
                env={**_env(), **self.extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def start(self) -> float:
        """Start and wait until the API answers `health`; returns the seconds that took."""
        started = time.perf_counter()
        self.process = self._spawn()
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited ({self.process.returncode}): {self.log_tail()}")
            with contextlib.suppress(ApiClientError):
                async with Client(self.socket, timeout_s=5, connect_timeout_s=1) as client:
                    await client.health()
                    return time.perf_counter() - started
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemon not ready in {START_TIMEOUT_S} s: {self.log_tail()}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """kill -9, and reap it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=15)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, timeout_s=30)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stats(self) -> dict[str, Any]:
        async with Client(self.socket, timeout_s=10, connect_timeout_s=2) as client:
            return await client.stats()

    def metrics(self) -> str:
        """One scrape of the daemon's metrics (write_config gives them a free port)."""
        address = yaml.safe_load(self.config.read_text())["metrics"]["listen"]
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
            text: str = response.read().decode()
            return text


def histogram_means(metrics: str) -> dict[str, float]:
    """Mean of each histogram in a Prometheus text scrape (name -> seconds), over all labels."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        name, _, value = line.partition(" ")
        base = name.split("{", 1)[0]
        for suffix, into in (("_sum", sums), ("_count", counts)):
            if base.endswith(suffix):
                key = base.removesuffix(suffix)
                into[key] = into.get(key, 0.0) + float(value)
    return {name: sums[name] / counts[name] for name in sums if counts.get(name)}


def label_sums(metrics: str, name: str, label: str) -> dict[str, float]:
    """A metric's samples summed by the value of one of its labels, from a text scrape."""
    sums: dict[str, float] = {}
    for line in metrics.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels, _, value = line[len(name) + 1 :].partition("} ")
        for pair in labels.split(","):
            key, _, quoted = pair.partition("=")
            if key == label:
                value_of = quoted.strip('"')
                sums[value_of] = sums.get(value_of, 0.0) + float(value)
    return sums


def segments_in(stats: dict[str, Any], *states: str) -> int:
    by_state: dict[str, int] = stats.get("segments", {})
    return sum(int(by_state.get(state, 0)) for state in states)


PENDING: Final = ("queued", "scheduled", "inflight")
FINAL: Final = ("delivered", "undeliverable", "expired", "rejected", "failed", "cancelled")


Measure = Callable[[argparse.Namespace, Path, Smsc, Daemon], Awaitable[None]]


async def run_bench(
    args: argparse.Namespace,
    measure: Measure,
    *,
    smsc: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    daemon: dict[str, Any] | None = None,
) -> None:
    """The frame every end-to-end benchmark shares: a work directory, the fake SMSC and the
    daemon as processes (config from the common options plus `config`), `measure`, cleanup."""
    directory = workdir()
    with cleanup(directory, keep=args.keep):
        smsc_proc = Smsc(directory, **(smsc or {}))
        daemon_proc = Daemon(
            write_config(
                directory,
                smsc_proc.port,
                registered_delivery=not args.no_receipts,
                binds=args.binds,
                window=args.window,
                **(config or {}),
            ),
            **{
                "switch_interval_s": args.switch_interval,
                "trace_memory_s": args.trace_memory,
                **(daemon or {}),
            },
        )
        try:
            await daemon_proc.start()
            await measure(args, directory, smsc_proc, daemon_proc)
            if args.trace_memory is not None:
                # Here, not at the top: the submitters run this module from elsewhere.
                sys.path.append(str(BENCH))
                import memtrace  # noqa: PLC0415

                print("\n".join(memtrace.report(daemon_proc.memtrace_path)))
        finally:
            daemon_proc.stop()
            smsc_proc.stop()


@contextlib.contextmanager
def cleanup(directory: Path, *, keep: bool) -> Iterator[None]:
    try:
        yield
    finally:
        if keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


class Sampler:
    """Samples a process's RSS (and anything else `probe` returns) every `every_s` seconds."""

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        self.pid = pid
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []  # (time, RSS MiB)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            rss = status_mib(self.pid, "VmRSS")
            if rss is not None:
                self.samples.append((time.time(), rss))
            await asyncio.sleep(self.every_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def peak(self) -> float:
        return max((rss for _, rss in self.samples), default=math.nan)


# --- profiling -----------------------------------------------------------------------------

PY_SPY_OPTIONS: list[str] = []  # more py-spy options for every profile


PROFILE_RATE = 200  # samples per second
# With C frames py-spy stops the process longer per sample: at 200 a second the daemon ran at
# half its usual rate, at this one within its run-to-run spread.
WALL_PROFILE_RATE = 50


def start_profiler(
    pid: int, out: Path, *, gil: bool = False, wall: bool = False
) -> subprocess.Popen[bytes]:
    """py-spy (pip install py-spy into the venv) recording `pid` as collapsed stacks per thread;
    with `gil`, only the thread holding the interpreter lock is sampled; with `wall`, every
    thread whether it runs or waits, with C frames, so that profile_summary.py can tell running
    from waiting for the lock, for fsync or for work."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    options = list(PY_SPY_OPTIONS)
    if gil:
        options.append("--gil")
    if wall:
        options += ["--idle", "--native"]
    else:
        # py-spy's default stops the process for each sample, and a stopped thread is caught
        # at its syscalls far more often than their cost: in one profile a line whose only
        # syscall is getpid() (asyncio.get_running_loop) took 11% of the lock holder's
        # samples, against under 1% sampled without stopping. C frames need the stop.
        options.append("--nonblocking")
    rate = str(WALL_PROFILE_RATE if wall else PROFILE_RATE)
    command = [py_spy, "record", "-p", str(pid), "-r", rate, "--threads", *options]
    return subprocess.Popen(
        [*command, "-f", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def add_profile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", type=Path, default=None, help="py-spy record into this file")
    parser.add_argument(
        "--gil", action="store_true", help="with --profile: sample only the interpreter lock holder"
    )
    parser.add_argument(
        "--wall",
        action="store_true",
        help="with --profile: sample every thread, waiting or not, with C frames",
    )


def profile(args: argparse.Namespace, pid: int) -> subprocess.Popen[bytes] | None:
    """The profiler add_profile_options asked for, recording `pid`, or None."""
    if args.profile is None:
        return None
    return start_profiler(pid, args.profile, gil=args.gil, wall=args.wall)


def stop_profiler(profiler: subprocess.Popen[bytes]) -> None:
    profiler.send_signal(signal.SIGINT)
    profiler.wait(timeout=60)


# --- the SMSC's record ----------------------------------------------------------------------


def read_records(
    path: Path, prefix: str, *, keep: Callable[[bytes], bool] | None = None
) -> dict[int, list[float]]:
    """Message index -> the times the SMSC recorded it (one per sighting), from `path`.

    Only complete messages answered ESME_ROK are records of kind "message". `keep` may skip
    lines cheaply before they are parsed.
    """
    seen: dict[int, list[float]] = {}
    with path.open("rb") as lines:
        for line in lines:
            if not line.startswith(b'{"type": "message"'):
                continue
            if keep is not None and not keep(line):
                continue
            record = json.loads(line)
            index = index_of(record["text"], prefix)
            if index is not None:
                seen.setdefault(index, []).append(float(record["time"]))
    return seen


# --- submitters -----------------------------------------------------------------------------


@dataclass
class SubmitSpec:
    """What one submitter process sends: messages [start, stop) of `prefix`."""

    socket: str
    out: str  # JSON result here, accept times (array of doubles, NaN: refused) in out + ".times"
    prefix: str = "B"
    start: int = 0
    stop: int = 0
    mode: str = "bulk"  # bulk: submit_many batches | rate: single submits at `rate` per second
    connections: int = 4
    depth: int = 4  # batches in flight per connection (bulk)
    batch: int = 500
    rate: float = 1000.0
    priority: str = "normal"
    registered_delivery: bool = True
    refs: bool = False  # give each message a ref, so a resubmit after a crash is idempotent
    retry: bool = False  # on a lost connection: reconnect and resubmit (crash bench)
    deadline_s: float = 600.0  # give up after this long
    stop_file: str | None = None  # rate mode: stop sending once this file exists
    pace: float = 0.0  # bulk mode: at most this many messages per second (0: no limit)


@dataclass
class SubmitResult:
    first_sent: float = math.nan  # time.time()
    last_accepted: float = math.nan
    accepted: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    cpu_s: float = 0.0
    rtt_s: list[float] = field(default_factory=list)  # rate mode: request -> reply


def start_submitter(spec: SubmitSpec) -> subprocess.Popen[bytes]:
    spec_path = Path(spec.out + ".spec")
    spec_path.write_text(json.dumps(asdict(spec)))
    return subprocess.Popen(
        # -P: bench/ off the path, where queue.py would shadow the stdlib's module.
        [sys.executable, "-P", str(HARNESS), "submit", str(spec_path)],
        cwd=TREE,
        env=_env(),
    )


async def wait_submitters(processes: Sequence[subprocess.Popen[bytes]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while any(p.poll() is None for p in processes):
        if time.monotonic() > deadline:
            for p in processes:
                _stop(p)
            raise RuntimeError("submitters did not finish in time")
        await asyncio.sleep(0.05)
    if failed := [p.returncode for p in processes if p.returncode]:
        raise RuntimeError(f"submitters failed: exit codes {failed}")


def read_result(spec: SubmitSpec) -> tuple[SubmitResult, array.array[float]]:
    result = SubmitResult(**json.loads(Path(spec.out).read_text()))
    times = array.array("d")
    times.frombytes(Path(spec.out + ".times").read_bytes())
    return result, times


class _Connection:
    """One API connection shared by a submitter's workers; replaced when the daemon dies."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.lock = asyncio.Lock()


class _Submitter:
    def __init__(self, spec: SubmitSpec) -> None:
        self.spec = spec
        self.times = array.array("d", [math.nan]) * (spec.stop - spec.start)
        self.result = SubmitResult()
        self.deadline = time.monotonic() + spec.deadline_s

    def message(self, index: int) -> dict[str, Any]:
        spec = self.spec
        fields: dict[str, Any] = {
            "to": destination_for(index),
            "from": SENDER,
            "text": text_for(spec.prefix, index),
            "priority": spec.priority,
        }
        if not spec.registered_delivery:
            fields["registered_delivery"] = False
        if spec.refs:
            fields["ref"] = f"{spec.prefix}{index}"
        return fields

    def count_error(self, code: str) -> None:
        self.result.errors[code] = self.result.errors.get(code, 0) + 1

    async def connect(self) -> Client:
        while True:
            client = Client(self.spec.socket, timeout_s=60, max_in_flight=10_000)
            try:
                await client.connect()
            except ApiConnectionError:
                if not self.spec.retry or time.monotonic() > self.deadline:
                    raise
                await asyncio.sleep(0.05)
                continue
            return client

    async def run(self) -> None:
        spec = self.spec
        cpu_started = time.process_time()
        self.result.first_sent = time.time()
        if spec.mode == "bulk":
            batches = iter(range(spec.start, spec.stop, spec.batch))
            await asyncio.gather(*(self._connection(batches) for _ in range(spec.connections)))
        else:
            await self._rate()
        self.result.cpu_s = time.process_time() - cpu_started
        self._save()

    def _save(self) -> None:
        Path(self.spec.out + ".times").write_bytes(self.times.tobytes())
        Path(self.spec.out).write_text(json.dumps(asdict(self.result)))

    async def _connection(self, batches: Iterator[int]) -> None:
        holder = _Connection(await self.connect())
        try:
            await asyncio.gather(*(self._batches(holder, batches) for _ in range(self.spec.depth)))
        finally:
            await holder.client.close()

    async def _batches(self, holder: _Connection, batches: Iterator[int]) -> None:
        spec = self.spec
        for first in batches:
            if spec.pace > 0:
                due = self.result.first_sent + (first - spec.start) / spec.pace
                if (wait := due - time.time()) > 0:
                    await asyncio.sleep(wait)
            indexes = range(first, min(first + spec.batch, spec.stop))
            await self._submit_batch(holder, list(indexes))

    async def _submit_batch(self, holder: _Connection, indexes: list[int]) -> None:
        spec = self.spec
        while indexes:
            client = holder.client
            try:
                results = await client.submit_many([self.message(i) for i in indexes])
            except ApiClientError as exc:
                if not spec.retry or exc.code not in RETRY_CODES:
                    raise
                if time.monotonic() > self.deadline:
                    raise
                self.result.retries += 1
                async with holder.lock:
                    if holder.client is client:  # the first of its workers to notice
                        await client.close()
                        holder.client = await self.connect()
                continue
            now = time.time()
            again: list[int] = []
            for index, outcome in zip(indexes, results, strict=True):
                if isinstance(outcome, ApiClientError):
                    if spec.retry and outcome.code in RETRY_CODES:
                        again.append(index)
                    else:
                        self.count_error(outcome.code)
                    continue
                self.times[index - spec.start] = now
                self.result.accepted += 1
                self.result.last_accepted = now
            if again:
                self.result.retries += 1
                await asyncio.sleep(0.05)
            indexes = again

    async def _rate(self) -> None:
        spec = self.spec
        client = await self.connect()
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        t0 = loop.time()

        async def one(index: int) -> None:
            sent = time.time()
            try:
                await client.submit(**_submit_kwargs(self.message(index)))
            except ApiClientError as exc:
                self.count_error(exc.code)
                return
            now = time.time()
            self.times[index - spec.start] = now
            self.result.rtt_s.append(now - sent)
            self.result.accepted += 1
            self.result.last_accepted = now

        try:
            for k, index in enumerate(range(spec.start, spec.stop)):
                due = t0 + k / spec.rate
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if time.monotonic() > self.deadline or self._stop_requested():
                    break
                task = loop.create_task(one(index))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=60)
        finally:
            await client.close()

    def _stop_requested(self) -> bool:
        return self.spec.stop_file is not None and os.path.exists(self.spec.stop_file)


def _submit_kwargs(fields: dict[str, Any]) -> dict[str, Any]:
    return {("sender" if k == "from" else k): v for k, v in fields.items()}


def _submit_main(spec_path: Path) -> None:
    spec = SubmitSpec(**json.loads(spec_path.read_text()))
    asyncio.run(_Submitter(spec).run())


# --- crash timing ---------------------------------------------------------------------------


def crash_delays(count: int, low_s: float, high_s: float, seed: int | None) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(low_s, high_s) for _ in range(count)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="submitter process of the e2e benchmarks")
    parser.add_argument("command", choices=["submit"])
    parser.add_argument("spec", type=Path)
    args = parser.parse_args(argv)
    _submit_main(args.spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
