"""One process at a time for a path: an exclusive lock on a file beside it.

The lock is flock(2) on `<path>.lock`, named after the path with its symlinks resolved (a second
config reaching the same file another way takes the same lock): advisory, held by the open file
and released by the kernel when the process ends however it ends (kill -9 included), so there
is never a stale lock to clear by hand. The holder's pid is written in the file, for the message
of the one refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from os import PathLike


class LockHeld(Exception):  # noqa: N818 - a state, not an error of the caller's
    """Another process holds the lock."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder  # its pid, or "unknown"


class PathLock:
    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @staticmethod
    def file_of(target: str | PathLike[str]) -> str:
        return f"{os.path.realpath(target)}.lock"

    @classmethod
    def take(cls, target: str | PathLike[str]) -> PathLock:
        """The lock of `target`: LockHeld if another process has it, OSError (naming the lock
        file) if it cannot be opened or locked."""
        path = cls.file_of(target)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockHeld(holder) from None
        except OSError as exc:
            os.close(fd)
            exc.filename = path
            raise
        with contextlib.suppress(OSError):  # the pid is for the message, nothing else
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the lock
            self._fd = None
