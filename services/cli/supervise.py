"""Start, stop and inspect the daemons through supervisord's private socket."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.paths import REPO_ROOT, Paths

CONF = REPO_ROOT / "etc" / "supervisord.conf"
DAEMONS = ("eventlog", "ingest", "chat", "trainer", "evaluator", "api")


class SupervisorError(RuntimeError):
    pass


@dataclass(frozen=True)
class ProcState:
    name: str
    state: str  # RUNNING, STARTING, BACKOFF, STOPPED, EXITED, FATAL...
    pid: int
    uptime_s: float
    description: str


def supervisor_env(paths: Paths) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CIRCADIAN_HOME=str(paths.home), CIRCADIAN_RUN=str(paths.run),
               CIRCADIAN_PYTHON=sys.executable,
               PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(REPO_ROOT))
    return env


class Supervisor:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.socket = paths.run / "supervisor.sock"

    def _proxy(self) -> Any:
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def is_running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            self._proxy().supervisor.getState()
            return True
        except (OSError, xmlrpc.client.Error):
            return False

    def start(self) -> None:
        """Start supervisord (it daemonizes itself) unless it already runs."""
        if self.is_running():
            self._proxy().supervisor.startAllProcesses(False)
            return
        self.paths.ensure()
        self.socket.unlink(missing_ok=True)  # stale from a killed supervisord
        result = subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(CONF)],
                                env=supervisor_env(self.paths), capture_output=True, text=True)
        if result.returncode != 0:
            raise SupervisorError(f"supervisord failed to start: {result.stderr.strip() or result.stdout.strip()}")
        deadline = time.monotonic() + 10
        while not self.is_running():
            if time.monotonic() > deadline:
                raise SupervisorError(f"supervisord did not open {self.socket}; see {self.paths.logs / 'supervisord.log'}")
            time.sleep(0.1)

    def processes(self) -> list[ProcState]:
        infos = self._proxy().supervisor.getAllProcessInfo()
        return [ProcState(name=i["name"], state=i["statename"], pid=i["pid"],
                          uptime_s=float(i["now"] - i["start"]) if i["statename"] == "RUNNING" else 0.0,
                          description=i["description"]) for i in infos]

    def stop_process(self, name: str) -> None:
        self._proxy().supervisor.stopProcess(name, True)

    def start_process(self, name: str) -> None:
        self._proxy().supervisor.startProcess(name, True)

    def pid(self) -> int | None:
        try:
            return int(self._proxy().supervisor.getPID())
        except (OSError, xmlrpc.client.Error):
            return None

    def shutdown(self, timeout_s: float = 60) -> None:
        pid = self.pid()
        if pid is None:
            return
        try:
            self._proxy().supervisor.shutdown()
        except (OSError, xmlrpc.client.Error):
            pass
        deadline = time.monotonic() + timeout_s
        while _alive(pid):
            if time.monotonic() > deadline:
                raise SupervisorError(f"supervisord (pid {pid}) did not stop within {timeout_s:g} s")
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False
    return True
