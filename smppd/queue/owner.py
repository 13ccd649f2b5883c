"""One smppd per queue: the database's path lock (smppd.pathlock).

SQLite's own locks guard each transaction, not who runs the queue: a second daemon started on
a live one's file would "recover" the first one's in-flight segments and send them again.
Readers that only look (sqlite3 on the file, backups) do not take the lock.
"""

from __future__ import annotations

import os
from os import PathLike

from smppd.pathlock import LockHeld, PathLock
from smppd.queue.errors import QueueError, QueueInUseError


class OwnerLock:
    @staticmethod
    def take(database: str | PathLike[str]) -> PathLock:
        """The lock for `database`, or QueueInUseError naming the holder's pid."""
        try:
            return PathLock.take(database)
        except LockHeld as held:
            raise QueueInUseError(
                f"queue storage: {os.fspath(database)} is in use by another process"
                f" (pid {held.holder})"
            ) from None
        except OSError as exc:
            path = PathLock.file_of(database)
            raise QueueError(f"queue storage: cannot lock {path}: {exc.strerror}") from None
