"""Command line: run a fake SMSC until SIGINT or SIGTERM.

    python -m tools.fake_smsc --host 127.0.0.1 --port 2775 --system-id smppd --password secret \\
        [--scenario FILE.yaml] [--control PATH_OR_PORT] [--record FILE.jsonl] [--no-record]

Prints `fake_smsc listening on HOST:PORT` (the real port with --port 0), flushed, once it
accepts connections, and `fake_smsc control on ADDRESS` when --control is given. A bad scenario
exits with status 78 (EX_CONFIG) and one line naming the file, key and reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from dataclasses import replace
from pathlib import Path

from smppd.gctune import tune_gc
from tools.fake_smsc.config import Account, ConfigError, IdFormat, SmscConfig, load_scenario
from tools.fake_smsc.control import ControlSocketError
from tools.fake_smsc.server import FakeSmsc

EX_CONFIG = 78


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.fake_smsc",
        description=__doc__,
        epilog="Control ops, fault knobs and scenario keys: tools/fake_smsc/README.md",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=None, help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="TCP port (2775); 0 picks one")
    parser.add_argument("--system-id", default=None, help="account system_id (smppd)")
    parser.add_argument("--password", default=None, help="account password (secret)")
    parser.add_argument("--scenario", type=Path, help="YAML file of settings and faults")
    parser.add_argument("--control", help="control socket: a Unix socket path or a TCP port")
    parser.add_argument("--record", type=Path, help="append records as JSON lines to this file")
    parser.add_argument(
        "--no-record", action="store_true", help="keep counters only (long benchmark runs)"
    )
    parser.add_argument(
        "--message-id",
        choices=[f.value for f in IdFormat],
        default=None,
        help="message ids in 8-digit lowercase hex or in decimal (the scenario's, else hex)",
    )
    parser.add_argument(
        "--max-records",
        type=int,
        default=None,
        help="segments and messages kept in memory, the latest (100000; counters keep all)",
    )
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> SmscConfig:
    """The config from the scenario (if any) with the command line on top."""
    config = SmscConfig()
    if args.scenario is not None:
        config = load_scenario(args.scenario, config)
    changes: dict[str, object] = {}
    if args.host is not None:
        changes["host"] = args.host
    if args.port is not None:
        changes["port"] = args.port
    if args.system_id is not None or args.password is not None:
        first = config.accounts[0]
        account = Account(
            system_id=first.system_id if args.system_id is None else args.system_id,
            password=first.password if args.password is None else args.password,
            max_binds=first.max_binds,
        )
        changes["accounts"] = (account, *config.accounts[1:])
    if args.control is not None:
        changes["control"] = args.control
    if args.record is not None:
        changes["record_path"] = args.record
    if args.no_record:
        changes["record_in_memory"] = False
    if args.message_id is not None:
        changes["message_id_format"] = IdFormat(args.message_id)
    if args.max_records is not None:
        changes["max_records"] = args.max_records
    config = replace(config, **changes)  # type: ignore[arg-type]
    try:
        config.check()
    except ValueError as exc:
        raise ConfigError(f"command line: {exc}") from None
    return config


async def run(config: SmscConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with FakeSmsc(config) as smsc:
        tune_gc()
        print(f"fake_smsc listening on {smsc.host}:{smsc.port}", flush=True)
        if smsc.control_address is not None:
            print(f"fake_smsc control on {smsc.control_address}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    try:
        config = build_config(parse_args(argv))
    except ConfigError as exc:
        print(f"fake_smsc: {exc}", file=sys.stderr)
        return EX_CONFIG
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(config))
    except (OSError, ControlSocketError) as exc:  # port in use, unknown host, record file, ...
        print(f"fake_smsc: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
