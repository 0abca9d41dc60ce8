"""The heavy-run lock: the trainer and the evaluator never run their memory-heavy work at once.

One ``flock`` on one file. flock, not ``lockf``/``fcntl`` record locks: a
flock belongs to the open file description, so the kernel drops it the
moment the holder dies (even by ``kill -9``) and it never depends on which
thread or pid asks. Record locks, by contrast, are per process and silently
released when *any* descriptor of the file is closed.

The lock must never outlive its holder through a child process:

- the descriptor is opened ``O_CLOEXEC``, so an exec'd worker (the training
  worker, anything started with subprocess) does not get a copy;
- a child made by a bare ``fork()`` (multiprocessing's fork start method)
  would share the open file description and keep the lock after its parent
  died; an at-fork hook closes the child's copy (closing a copy does not
  release the parent's lock; only ``LOCK_UN`` or the last close does).

While held, the file names the holder (``{"holder", "pid", "since"}``) for
``circ status``. Those contents are advisory: the lock itself is the truth,
so :meth:`HeavyRunLock.holder` first asks the kernel whether anyone holds it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
import weakref
from pathlib import Path
from typing import Any

# Polling instead of a blocking flock: a blocking flock cannot be given a
# timeout or be cancelled by a shutdown request.
POLL_INTERVAL_S = 0.05

_held: weakref.WeakSet[HeavyRunLock] = weakref.WeakSet()


def _close_in_forked_child() -> None:
    for lock in list(_held):
        lock._forget_after_fork()


os.register_at_fork(after_in_child=_close_in_forked_child)


class LockError(RuntimeError):
    pass


class HeavyRunLock:
    """``with HeavyRunLock(path) as lock:`` or ``acquire(holder, timeout_s)`` / ``release()``.

    Exclusive between processes and between two instances in one process
    (each instance opens its own file description). Not re-entrant: acquiring
    an instance that already holds the lock raises :class:`LockError`.
    """

    def __init__(self, path: Path | str, holder: str = "") -> None:
        self.path = Path(path)
        self.default_holder = holder or f"pid {os.getpid()}"
        self._fd: int | None = None
        self._mutex = threading.Lock()

    # -- taking and giving back ------------------------------------------------
    def acquire(self, holder: str = "", timeout_s: float | None = None,
                should_stop: Any = None) -> bool:
        """Take the lock; False when ``timeout_s`` passed (or ``should_stop()`` said so) first.

        ``timeout_s``: None waits as long as it takes, 0 tries once.
        """
        with self._mutex:
            if self._fd is not None:
                raise LockError(f"{self.path}: this HeavyRunLock is already held")
            deadline = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
            fd = self._open()
            try:
                while not _try_flock(fd, fcntl.LOCK_EX):
                    if deadline is not None and time.monotonic() >= deadline:
                        os.close(fd)
                        return False
                    if should_stop is not None and should_stop():
                        os.close(fd)
                        return False
                    time.sleep(POLL_INTERVAL_S)
                self._fd = fd
                _held.add(self)
                self._write_info(holder or self.default_holder)
            except BaseException:
                if self._fd is None:
                    os.close(fd)
                else:
                    self._release_locked()
                raise
            return True

    def release(self) -> None:
        """Give the lock back (a no-op when not held)."""
        with self._mutex:
            self._release_locked()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> HeavyRunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- who holds it -----------------------------------------------------------
    def holder(self) -> dict[str, Any] | None:
        """``{"holder", "pid", "since"}`` of whoever holds the lock now, or None when it is free.

        Asks the kernel with a non-blocking shared flock on a separate
        descriptor: it conflicts with the holder's exclusive lock, not with
        other probes. Works from any process, including the holder's own.
        """
        if self._fd is not None:
            return self._read_info() or {"holder": self.default_holder, "pid": os.getpid(), "since": None}
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            if _try_flock(fd, fcntl.LOCK_SH):
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
        finally:
            os.close(fd)
        # Held; the holder may not have written its name yet (a moment after taking it).
        return self._read_info() or {"holder": "unknown", "pid": None, "since": None}

    # -- internals -------------------------------------------------------------
    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _write_info(self, holder: str) -> None:
        assert self._fd is not None
        info = {"holder": holder, "pid": os.getpid(), "host": socket.gethostname(),
                "since": time.time()}
        data = json.dumps(info).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def _read_info(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text()
        except OSError:
            return None
        try:
            info = json.loads(text)
        except ValueError:
            return None
        return info if isinstance(info, dict) and "holder" in info else None

    def _release_locked(self) -> None:
        fd, self._fd = self._fd, None
        _held.discard(self)
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # nobody holds it: leave no name behind
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _forget_after_fork(self) -> None:
        # In a forked child: drop our copy of the descriptor WITHOUT LOCK_UN
        # (that would release the parent's lock too).
        fd, self._fd = self._fd, None
        self._mutex = threading.Lock()
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def _try_flock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def heavy_lock_path(paths: Any) -> Path:
    """The one lock file every memory-heavy run (night, evaluation) takes: a ``Paths``'s run dir."""
    return paths.run / "heavy.lock"
