"""What every daemon's process shell shares: signals, one instance, readiness.

SIGTERM and SIGINT only *request* shutdown (a flag the loop polls); the loop
drains and returns, and the process exits 0. Each daemon holds an ``flock``
on ``run/<service>.lock`` so a second copy refuses to start instead of
stealing the first one's sockets; the kernel releases it if we die.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from pathlib import Path

from protocol.service_api import Pong
from services.common.paths import Paths

VERSION = "0.1.0"


class AlreadyRunning(RuntimeError):
    pass


class ShutdownFlag:
    """Set by SIGTERM/SIGINT; loops poll ``is_set()`` between short waits."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> ShutdownFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._event.set())
        return self

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout_s: float) -> bool:
        return self._event.wait(timeout_s)


class InstanceLock:
    """flock-based single-instance guard, released by the kernel on death."""

    def __init__(self, paths: Paths, service: str) -> None:
        self.path: Path = paths.run / f"{service}.lock"
        self._fd: int | None = None

    def acquire(self) -> InstanceLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(f"another {self.path.stem} is already running (lock {self.path})") from None
        # Not inherited by worker processes we may start (DESIGN: a worker
        # must not keep its parent's lock).
        os.set_inheritable(fd, False)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Readiness:
    """What a daemon says about itself in reply to Ping."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.started_at = time.time()
        self.ready = False
        self.details: dict[str, str] = {}

    def pong(self, request_id: str) -> Pong:
        return Pong(request_id=request_id, service=self.service, pid=os.getpid(),
                    ready=self.ready, started_at=self.started_at, version=VERSION,
                    details=dict(self.details))


def serve_daemon(service: str, paths: Paths, make_server, *, before_serve=None) -> int:  # noqa: ANN001
    """The shared lifecycle of every daemon: signals, one instance, serve, clean close.

    ``make_server()`` builds the process shell (binding its sockets);
    ``before_serve(server)`` runs once first (announcing, loading); the
    server's ``serve(stop)`` returns after SIGTERM and the exit code is 0.
    """
    from services.common.logging import get_logger

    stop = ShutdownFlag().install()
    paths.ensure()
    lock = InstanceLock(paths, service).acquire()
    server = make_server()
    try:
        if before_serve is not None:
            before_serve(server)
        server.serve(stop)
    finally:
        server.close()
        lock.release()
    get_logger(service).info(f"{service}.stopped")
    return 0
