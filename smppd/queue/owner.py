"""One smppd per queue: an exclusive lock on a file beside the database.

SQLite's own locks guard each transaction, not who runs the queue: a second daemon started on
a live one's file would "recover" the first one's in-flight segments and send them again. The
lock is flock(2): advisory, held by the open file, released by the kernel when the process ends
however it ends (kill -9 included), so there is never a stale lock to clear by hand. Readers
that only look (sqlite3 on the file, backups) do not take it. The lock is named after the
database's resolved path: a second config reaching the same file through a symlink (or a
relative path from elsewhere) takes the same lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from os import PathLike

from smppd.queue.errors import QueueError, QueueInUseError


class OwnerLock:
    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def take(cls, database: str | PathLike[str]) -> OwnerLock:
        """The lock for `database`, or QueueInUseError naming the holder's pid."""
        path = f"{os.path.realpath(database)}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise QueueError(f"queue storage: cannot open {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise QueueInUseError(
                f"queue storage: {os.fspath(database)} is in use by another process (pid {holder})"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise QueueError(f"queue storage: cannot lock {path}: {exc.strerror}") from None
        with contextlib.suppress(OSError):  # the pid is for the message above, nothing else
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the lock
            self._fd = None
