"""`make demo`: the bundled fake SMSC and smppd on the shipped config, and a first message.

Starts `python -m tools.fake_smsc` and `python -m smppd run -c CONFIG` as child processes, waits
until both serve, submits one message over the local API and prints its delivery receipt. Then
both keep running until Ctrl-C, so you can try the CLI from another terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from smppd.client import ApiConnectionError, Client
from smppd.config import ConfigError, load_config

READY_TIMEOUT_S = 15.0


async def wait_for_line(proc: asyncio.subprocess.Process, marker: str) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(READY_TIMEOUT_S):
        while True:
            line = (await proc.stdout.readline()).decode(errors="replace")
            if not line:
                raise RuntimeError(f"process exited before printing {marker!r}")
            if marker in line:
                return line.strip()


async def wait_for_api(socket: Path, daemon: asyncio.subprocess.Process) -> None:
    """Until the daemon answers on its socket; RuntimeError at once if it exits first."""
    async with asyncio.timeout(READY_TIMEOUT_S):
        while True:
            if daemon.returncode is not None:
                raise RuntimeError(
                    f"smppd exited with status {daemon.returncode} (its log above says why)"
                )
            try:
                async with Client(socket, connect_timeout_s=1) as client:
                    await client.health()
                    return
            except ApiConnectionError:
                await asyncio.sleep(0.1)


async def demo(config_path: Path) -> int:
    config = load_config(config_path)
    carrier = config.carriers[0]
    sender = config.senders[0].id if config.senders else "SMPPD"
    python = sys.executable
    control = config.api.socket.parent / "fake_smsc.sock"  # beside the API socket
    control.parent.mkdir(parents=True, exist_ok=True)
    smsc = await asyncio.create_subprocess_exec(
        python,
        "-m",
        "tools.fake_smsc",
        "--host",
        carrier.host,
        "--port",
        str(carrier.port),
        "--system-id",
        carrier.system_id,
        "--password",
        carrier.password,
        "--control",
        str(control),
        stdout=subprocess.PIPE,
    )
    daemon: asyncio.subprocess.Process | None = None
    try:
        print(await wait_for_line(smsc, "listening"))
        daemon = await asyncio.create_subprocess_exec(
            python, "-m", "smppd", "run", "-c", str(config_path)
        )
        await wait_for_api(config.api.socket, daemon)
        print(f"smppd is up; API socket {config.api.socket}")
        async with Client(config.api.socket) as client:
            sent = await client.submit(
                to="+447700900123", sender=sender, text="Hello from smppd! 👋"
            )
            print(f"submitted message {sent.message_id} ({sent.segments} segment)")
            async with asyncio.timeout(10):
                while True:
                    status = await client.status(sent.message_id)
                    if status["state"] not in ("queued", "inflight", "submitted"):
                        break
                    await asyncio.sleep(0.1)  # a demo may poll; the daemon never does
            receipt = status["segments"][0]
            print(
                f"message {sent.message_id}: {status['state']} (receipt {receipt['receipt_stat']})"
            )
        metrics = config.metrics.listen
        print("\nTry, from another terminal:")
        print(
            f"  .venv/bin/smppd send -c {config_path} --to +447700900124 --from {sender} --text Hi"
        )
        print(f"  .venv/bin/smppd tail -c {config_path}")
        print(
            f"  .venv/bin/python -m tools.fake_smsc.ctl {control} inject_mo"
            f" source=447700900123 destination={sender} text=Hello   # an inbound message"
        )
        if metrics is not None:
            print(f"  curl -s http://{metrics.host}:{metrics.port}/metrics | grep ^smppd_")
        print("Ctrl-C stops both.")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(daemon.wait())}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        return 0
    finally:
        for proc in (daemon, smsc):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await proc.wait()
                if proc.returncode is None:
                    proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", "--config", type=Path, default=Path("config/smppd.yaml"))
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        return asyncio.run(demo(args.config))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 78
    except (RuntimeError, TimeoutError, ApiConnectionError) as exc:
        reason = f"timed out after {READY_TIMEOUT_S:g} s" if isinstance(exc, TimeoutError) else exc
        print(f"error: demo could not start: {reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
