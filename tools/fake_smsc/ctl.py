"""Send one control request to a running fake SMSC and print its reply.

    python -m tools.fake_smsc.ctl ADDRESS OP [KEY=TEXT | KEY:=JSON ...]
    python -m tools.fake_smsc.ctl /tmp/fake_smsc.sock inject_mo source=447700900123 \
        destination=SMPPD text=STOP
    python -m tools.fake_smsc.ctl 127.0.0.1:7001 set latency_s:=0.5 \
        'submit_errors:={"ESME_RTHROTTLED": 0.1}'
    python -m tools.fake_smsc.ctl 127.0.0.1:7001 set 'receipts:={"delay_s": 2}'

ADDRESS is the control socket path or 127.0.0.1:PORT (as `fake_smsc control on` printed).
KEY=TEXT gives a string (a number such as 447700900123 stays text); KEY:=JSON a number, true,
a list or an object. The ops and their fields: tools/fake_smsc/README.md. Status 0 when the
reply is ok, 1 when it is an error, 69 when nothing answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

EX_UNAVAILABLE = 69
# A reply is one line, and a page of records can run to megabytes (up to 10,000 items): far
# above asyncio's 64 KiB default for a line.
MAX_REPLY = 64 << 20


def request_of(op: str, pairs: list[str]) -> dict[str, Any]:
    request: dict[str, Any] = {"op": op, "id": 1}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key or key == ":":
            raise ValueError(f"not KEY=TEXT or KEY:=JSON: {pair!r}")
        if key.endswith(":"):
            try:
                request[key[:-1]] = json.loads(raw)
            except ValueError:
                raise ValueError(f"{key[:-1]}: not JSON: {raw!r}") from None
        else:
            request[key] = raw
    return request


# Beyond what the request itself may wait (wait_for, inject_mo with wait: its `timeout`).
_ANSWER_S = 30.0


async def call(address: str, request: dict[str, Any]) -> dict[str, Any]:
    host, sep, port = address.rpartition(":")
    waits = request.get("timeout")
    extra = waits if isinstance(waits, int | float) and 0 <= waits < 1e9 else 0.0
    async with asyncio.timeout(_ANSWER_S + extra):
        if sep and port.isascii() and port.isdigit():
            if int(port) > 65535:
                raise ValueError(f"port {port} is not 0 to 65535")
            reader, writer = await asyncio.open_connection(
                host or "127.0.0.1", int(port), limit=MAX_REPLY
            )
        else:
            reader, writer = await asyncio.open_unix_connection(address, limit=MAX_REPLY)
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            line = await reader.readline()
        finally:
            writer.close()
    reply: dict[str, Any] = json.loads(line)
    return reply


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.fake_smsc.ctl",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("address")
    parser.add_argument("op")
    parser.add_argument("fields", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        request = request_of(args.op, args.fields)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        reply = asyncio.run(call(args.address, request))
    except (OSError, TimeoutError, ValueError) as exc:
        print(f"error: no answer from {args.address}: {str(exc) or 'timed out'}", file=sys.stderr)
        return EX_UNAVAILABLE
    print(json.dumps(reply.get("result") if reply.get("ok") else reply, ensure_ascii=False))
    return 0 if reply.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
