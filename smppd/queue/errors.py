"""Errors of the durable queue.

Every backend raises these and only these: a storage engine's own exceptions (sqlite3.Error) are
translated where they arise, so callers never depend on the backend. `code` is the stable name the
API shows (`storage_full` is the one a client is expected to handle: retry later).
"""

from __future__ import annotations

from typing import ClassVar

from smppd.errors import SmppdError


class QueueError(SmppdError):
    """Base class of every error raised by smppd.queue."""

    code: ClassVar[str] = "storage_error"
    # What failed, in a few fixed words a client may be shown (no path, no row): "disk I/O
    # error". Empty when the code says it all.
    reason: str = ""


class StorageFullError(QueueError):
    """The disk (or the configured size limit) is full: nothing in the failed batch was stored.

    The store keeps running; writes succeed again once space returns.
    """

    code: ClassVar[str] = "storage_full"


class StorageBusyError(QueueError):
    """Another process holds the database lock past the busy timeout."""

    code: ClassVar[str] = "storage_busy"


class StorageCorruptError(QueueError):
    """The database file is damaged or is not a queue database."""

    code: ClassVar[str] = "storage_corrupt"


class SchemaTooNewError(QueueError):
    """The database was written by a newer smppd (its schema version is unknown here)."""

    code: ClassVar[str] = "schema_too_new"


class QueueInUseError(QueueError):
    """Another process (another smppd) runs this queue: see smppd.queue.owner."""

    code: ClassVar[str] = "queue_in_use"


class QueueClosedError(QueueError):
    """The store was closed (or its writer stopped); the operation was not performed."""

    code: ClassVar[str] = "queue_closed"
