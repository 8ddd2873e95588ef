"""The pidfile of ``dsd --daemon``: held by a lock that dies with its daemon.

The file is locked (`flock`) before detaching, so every reason it cannot be used (a
missing directory, no permission, a running daemon holding it) reaches the terminal.
The lock belongs to the open file, which the detached daemon keeps: a daemon killed
with SIGKILL leaves the file behind but never the lock, so the next start takes it over
instead of believing a dead process still holds it. A pid in the file is only for people
and scripts (``kill $(cat PIDFILE)``); whether it is taken is the lock's say alone.
"""

from __future__ import annotations

import fcntl
import os


class PidfileError(Exception):
    """The pidfile cannot be used; ``str(e)`` is one line."""


class Pidfile:
    """A locked pidfile; also the context manager python-daemon's DaemonContext enters once detached."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)  # --daemon changes to /
        self.fd: int | None = None

    def acquire(self) -> None:
        """Create and lock the file; PidfileError if it cannot be made or a live process holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise PidfileError(f"cannot create the pidfile {self.path}: {error.strerror or error}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise PidfileError(f"pidfile {self.path} is held by running process {holder}: "
                               "another dsd runs with it; stop it or give this one another --pidfile") from None
        self.fd = fd

    def __enter__(self) -> "Pidfile":
        """Write this (detached) process's pid; the file is already locked."""
        assert self.fd is not None, "acquire() first"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        """Remove the file (if it is still ours) and drop the lock."""
        if self.fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass  # removed already: nothing to clean up
        os.close(self.fd)
        self.fd = None
