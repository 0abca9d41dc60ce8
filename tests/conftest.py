"""Shared fixtures: a private CIRCADIAN_HOME per test and real daemon processes.

Integration tests run the real daemons (``python -m services.<name>``) as
subprocesses over real ipc sockets in a short temp directory (socket paths
must stay under ~100 bytes). Every wait has a timeout.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from protocol.eventlog_api import EventlogReply
from protocol.service_api import Ping, Pong
from services.common.paths import REPO_ROOT, Paths
from services.common.rpc import RemoteError, RpcClient, ServiceUnavailable, fresh_request_id

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The embedded model converted into the repo's models/ (reused across runs)."""
    from services.lib.models.install import install_model

    return install_model(None, REPO_ROOT / "models")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (bin/test: ``-n 2``), give each worker its own MLX kernel cache.

    services/common/mlxjit.py keeps one cache per kind of process; two
    instances started by two workers would still have two chats compiling
    the same kernel into one directory at once (the race that module is
    about). The daemons inherit the variable through ``circ up``.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        base = Path(tempfile.gettempdir()) / f"circadian-mlx-{os.getuid()}-{worker}"
        os.environ["CIRCADIAN_MLX_JIT_BASE"] = str(base)


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    """A ZeroMQ context for one test (its sockets are closed with it)."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short, private CIRCADIAN_HOME under /tmp, removed after the test."""
    path = Path(tempfile.mkdtemp(prefix="circ-", dir="/tmp"))
    monkeypatch.setenv("CIRCADIAN_HOME", str(path))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def paths(home: Path) -> Paths:
    return Paths(home).ensure()


class DaemonProcess:
    """One daemon run as ``python -m <module>`` with its own CIRCADIAN_HOME.

    ``start()`` returns once the daemon answers Ping with ``ready=True`` on its
    control socket. stderr goes to ``data/logs/<service>.test.log`` (a pipe
    could fill up and block the daemon); :meth:`log_text` reads it back for
    assertion messages. :meth:`start` may be called again after a stop or a
    kill (restart tests).
    """

    def __init__(self, paths: Paths, service: str, *, module: str | None = None,
                 ctl_socket: str | None = None, reply_type: Any = EventlogReply,
                 env: dict[str, str] | None = None) -> None:
        self.paths = paths
        self.service = service
        self.module = module or f"services.{service}"
        self.ctl_socket = ctl_socket or f"{service}.ctl"
        self.reply_type = reply_type
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = paths.logs / f"{service}.test.log"
        self.pong: Pong | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, *, timeout_s: float = READY_TIMEOUT_S) -> DaemonProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = {**os.environ, "CIRCADIAN_HOME": str(self.paths.home), **self.extra_env}
        log = open(self.log_path, "ab")  # the child inherits it; we close our copy
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module], cwd=REPO_ROOT, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        finally:
            log.close()
        self.pong = self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> Pong:
        """Ping until the daemon says it is ready (or fail with its log)."""
        deadline = time.monotonic() + timeout_s
        client = RpcClient(self.paths, self.service, self.ctl_socket, self.reply_type, timeout_s=0.5)
        try:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise AssertionError(f"{self.service} exited with {self.proc.returncode} "
                                         f"before it was ready:\n{self.log_text()}")
                try:
                    pong = client.request(Ping(request_id=fresh_request_id()))
                except (ServiceUnavailable, RemoteError):
                    time.sleep(0.05)
                    continue
                if isinstance(pong, Pong) and pong.ready and (self.proc is None or pong.pid == self.proc.pid):
                    return pong
                time.sleep(0.05)
        finally:
            client.close()
        raise AssertionError(f"{self.service} not ready within {timeout_s} s:\n{self.log_text()}")

    def terminate(self, *, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait, then SIGKILL if it hangs; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        return self.proc.returncode

    def kill(self, *, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGKILL (``kill -9``) and reap."""
        assert self.proc is not None
        self.proc.kill()
        return self.proc.wait(timeout_s)

    def log_text(self, tail_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail_chars:]
        except FileNotFoundError:
            return "(no log)"


@pytest.fixture
def eventlog_proc(paths: Paths) -> Iterator[DaemonProcess]:
    """The real eventlog daemon, ready, in this test's CIRCADIAN_HOME."""
    daemon = DaemonProcess(paths, "eventlog", ctl_socket="events.ctl", reply_type=EventlogReply)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.terminate()
