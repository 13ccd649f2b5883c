"""The fake SMSC: a real SMPP v3.4 server for tests, benchmarks and demos.

Owns the listening socket and the pieces every connection shares: accounts and their binds (caps
included), the TPS counters, the message ids and receipts (`Tracker`), the outbox of deliver_sm,
the records, the fault knobs, mobile-originated injection and the optional control interface. It
is the composition root of tools.fake_smsc; the wire work of each connection is in `connection`.

    async with FakeSmsc(SmscConfig(port=0)) as smsc:
        ...  # connect to smsc.port; assert on smsc.records
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from smppd.pdu.national import NationalLanguage
from smppd.pdu.segment import ConcatMethod, ReferenceAllocator
from smppd.pdu.status import CommandStatus, status_name
from tools.fake_smsc.config import Account, ReceiptConfig, SmscConfig, receipt_config
from tools.fake_smsc.connection import BindPdu, BindState, SmscConnection
from tools.fake_smsc.control import ControlServer
from tools.fake_smsc.faults import SlidingCounter
from tools.fake_smsc.mo import mo_pdus
from tools.fake_smsc.outbox import Outbox
from tools.fake_smsc.receipts import Tracker
from tools.fake_smsc.records import Records

_BOUND = frozenset({BindState.BOUND_TX, BindState.BOUND_RX, BindState.BOUND_TRX})
# Closed connections listed (for tests and `stats`); older ones are forgotten, so that a run of
# reconnects does not grow the list, or the stats reply, without end.
MAX_CLOSED_KEPT = 100


class FakeSmsc:
    def __init__(self, config: SmscConfig | None = None) -> None:
        self.config = config = config or SmscConfig()
        config.check()
        self.faults = config.faults.copy()
        self.rng = random.Random()
        self.records = Records(
            default_alphabet=config.default_alphabet,
            in_memory=config.record_in_memory,
            path=config.record_path,
            max_records=config.max_records,
        )
        self.outbox = Outbox(retry_timeout_s=lambda: self.tracker.receipts.retry_timeout_s)
        self.tracker = Tracker(
            id_format=config.message_id_format,
            id_start=config.message_id_start,
            receipts=config.receipts,
            outbox=self.outbox,
            rng=self.rng,
            default_alphabet=config.default_alphabet,
            max_tracked=config.max_tracked_messages,
        )
        # The open connections and the latest closed ones (MAX_CLOSED_KEPT), oldest first.
        self.connections: list[SmscConnection] = []
        self._max_outstanding_gone = 0  # of closed connections no longer listed
        self.host = config.host
        self.port = config.port  # the real port once started
        self._accounts: dict[str, Account] = {a.system_id: a for a in config.accounts}
        self._binds: dict[str, list[SmscConnection]] = {}
        self._tps: dict[str, SlidingCounter] = {}
        self._bind_ids = itertools.count(1)
        self._refs = ReferenceAllocator()
        self._server: asyncio.Server | None = None
        self._control: ControlServer | None = None
        self.control_address: str | None = None  # "host:port" or a socket path, once started

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen; OSError (the port, the host, the record file) or ControlSocketError."""
        self.records.open()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_connection, self.config.host, self.config.port
        )
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        if self.config.control is not None:
            self._control = ControlServer(self)
            try:
                self.control_address = await self._control.start(self.config.control)
            except BaseException:
                self._control = None
                await self.stop()
                raise

    async def stop(self) -> None:
        if self._control is not None:
            await self._control.stop()
            self._control = None
        if self._server is not None:
            self._server.close()
            for connection in self.connections:
                connection.close()
            await self._server.wait_closed()
            self._server = None
        self.tracker.close()
        self.outbox.close()
        self.records.close()

    async def __aenter__(self) -> FakeSmsc:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _new_connection(self) -> SmscConnection:
        connection = SmscConnection(self, next(self._bind_ids))
        self.connections.append(connection)
        closed = [c for c in self.connections if c.state is BindState.CLOSED]
        if len(closed) > 2 * MAX_CLOSED_KEPT:  # pruned in steps, not one by one
            gone = set(closed[:-MAX_CLOSED_KEPT])
            self._max_outstanding_gone = max(
                self._max_outstanding_gone, *(c.max_outstanding for c in gone)
            )
            self.connections = [c for c in self.connections if c not in gone]
        return connection

    # --- what connections ask (connection.Host) -----------------------------------------------

    def bind(self, connection: SmscConnection, pdu: BindPdu) -> int:
        account = self._accounts.get(pdu.system_id)
        if account is None:
            return CommandStatus.ESME_RINVSYSID
        if pdu.password != account.password:
            return CommandStatus.ESME_RINVPASWD
        active = self._binds.setdefault(account.system_id, [])
        if account.max_binds is not None and len(active) >= account.max_binds:
            return CommandStatus.ESME_RALYBND
        active.append(connection)
        return 0

    def allow_submit(self, account: str, *, now: float) -> bool:
        limit = self.faults.tps_limit
        if limit is None:
            return True
        counter = self._tps.get(account)
        return counter is None or counter.would_allow(limit, now=now)

    def accepted_submit(self, account: str, *, now: float) -> None:
        if self.faults.tps_limit is not None:
            self._tps.setdefault(account, SlidingCounter()).add(now)

    def connection_lost(self, connection: SmscConnection) -> None:
        active = self._binds.get(connection.account, [])
        if connection in active:
            active.remove(connection)
        self.outbox.remove_receiver(connection.account, connection)

    # --- control from tests -------------------------------------------------------------------

    @property
    def receipts(self) -> ReceiptConfig:
        return self.tracker.receipts

    def set_faults(self, **changes: Any) -> None:
        """Change fault knobs (names of `Faults` fields, JSON-like values); ValueError if bad."""
        self.faults.update(changes)
        self.outbox.pump_all()  # a cleared hang lets queued receipts go

    def set_receipts(self, **changes: Any) -> None:
        """Change receipt settings (names of `ReceiptConfig` fields); ValueError if bad."""
        self.tracker.receipts = receipt_config(changes, self.tracker.receipts)

    def bound(self, account: str | None = None) -> list[SmscConnection]:
        """Connections bound now (of `account` when given)."""
        return [
            c
            for c in self.connections
            if c.state in _BOUND and (account is None or c.account == account)
        ]

    @property
    def max_outstanding(self) -> int:
        """The most submits any connection had received and not yet answered at one time."""
        listed = max((c.max_outstanding for c in self.connections), default=0)
        return max(listed, self._max_outstanding_gone)

    async def inject_mo(
        self,
        *,
        source: str,
        destination: str,
        text: str,
        account: str | None = None,
        concatenation: ConcatMethod | None = None,
        national: NationalLanguage | None = None,
    ) -> asyncio.Future[None]:
        """Queue a mobile-originated text (split as needed) for a receiver bind of `account`.

        Returns once queued; the returned future resolves when every segment was acknowledged
        with ESME_ROK.
        """
        account = account or self.config.accounts[0].system_id
        if account not in self._accounts:
            raise ValueError(f"no account {account!r}")
        method = concatenation or self.config.mo_concatenation
        pdus = mo_pdus(
            source=source,
            destination=destination,
            text=text,
            method=method,
            ref=self._refs.next(f"{source}>{destination}", ref16=method is ConcatMethod.UDH16),
            default_alphabet=self.config.default_alphabet,
            national=national,
        )
        futures = [self.outbox.put(account, "mo", pdu, track=True) for pdu in pdus]
        return _all_done(f for f in futures if f is not None)

    def _select(self, bind_id: int | None) -> list[SmscConnection]:
        return [
            c
            for c in self.connections
            if c.state is not BindState.CLOSED and (bind_id is None or c.bind_id == bind_id)
        ]

    def send_unbind(self, bind_id: int | None = None) -> int:
        """Send unbind to one bound connection (or all); returns how many got it."""
        return sum(1 for c in self._select(bind_id) if c.send_unbind())

    def send_raw(self, data: bytes, bind_id: int | None = None) -> int:
        """Write `data` as is to one open connection (or all); returns how many."""
        selected = self._select(bind_id)
        for connection in selected:
            connection.send_raw(data)
        return len(selected)

    def drop(self, bind_id: int | None = None) -> int:
        """Abort one open connection (or all) without a word; returns how many."""
        selected = self._select(bind_id)
        for connection in selected:
            connection.abort()
        return len(selected)

    def stats(self) -> dict[str, Any]:
        records = self.records
        return {
            "segments": records.segment_count,
            "messages": records.message_count,
            "statuses": {
                "unanswered" if s < 0 else status_name(s): n
                for s, n in sorted(records.status_counts.items())
            },
            "max_outstanding": self.max_outstanding,
            "deliveries_waiting": self.outbox.waiting(),
            "outbox": {
                kind: {
                    "queued": s.queued,
                    "sent": s.sent,
                    "acked": s.acked,
                    "retried": s.retried,
                    "dropped": s.dropped,
                }
                for kind, s in self.outbox.stats.items()
            },
            "connections": [c.info() for c in self.connections],
            "faults": self.faults.to_json(),
        }


def _all_done(futures: Iterable[asyncio.Future[None]]) -> asyncio.Future[None]:
    pending = list(futures)
    result: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    remaining = len(pending)

    def one_done(future: asyncio.Future[None]) -> None:
        nonlocal remaining
        if result.done():
            return
        if future.cancelled():
            result.cancel()
            return
        remaining -= 1
        if remaining == 0:
            result.set_result(None)

    if not pending:
        result.set_result(None)
    for future in pending:
        future.add_done_callback(one_done)
    return result
