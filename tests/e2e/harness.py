"""Driving a real circadian instance: the CLI, supervisord's view, the log.

Each :class:`Instance` is one short CIRCADIAN_HOME under /tmp, started with
``bin/circ up`` exactly as a user would, and stopped with ``bin/circ down``
(or, if that fails, by killing the supervisord and daemons it started, by
pid). Every wait has a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from protocol.events import ChatTurnCompleted
from services.cli.supervise import DAEMONS as ALL_DAEMONS
from services.cli.supervise import Supervisor
from services.common.paths import REPO_ROOT, Paths

CIRC = REPO_ROOT / "bin" / "circ"
CIRC_CHAT = REPO_ROOT / "bin" / "circ-chat"
UP_TIMEOUT_S = 120.0
DOWN_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 60.0
# The two daemons every test here exercises; ALL_DAEMONS is what `circ up` starts.
DAEMONS = ("eventlog", "chat")
TURN_TYPE = ChatTurnCompleted.__struct_config__.tag

# Variables that would make a daemon read another instance's files or config.
_FOREIGN_ENV = ("CIRCADIAN_HOME", "CIRCADIAN_RUN", "CIRCADIAN_CONFIG", "CIRCADIAN_PYTHON")


def base_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment minus anything pointing at another instance or config."""
    env = {k: v for k, v in os.environ.items()
           if k not in _FOREIGN_ENV and not k.startswith(("CIRCADIAN_CHAT_", "CIRCADIAN_EVENTLOG_", "CIRCADIAN_INGEST_"))}
    env["CIRCADIAN_HOME"] = str(home)
    # Any free port: instances of parallel tests must not fight over the API's default port.
    env.setdefault("CIRCADIAN_API_PORT", "0")
    env.update(extra)
    return env


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Instance:
    """One circadian home, driven through the real CLI and the real sockets."""

    def __init__(self, home: Path, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.paths = Paths(home)
        self.env = env or base_env(home)
        self.supervisor = Supervisor(self.paths)
        self.started_pids: set[int] = set()

    # -- the CLI -----------------------------------------------------------
    def run(self, exe: Path, *args: str, timeout_s: float = CLI_TIMEOUT_S, input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), *args], env=env or self.env, cwd=REPO_ROOT, text=True,
                              capture_output=True, timeout=timeout_s, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def circ(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run(CIRC, *args, **kwargs)

    def chat(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run(CIRC_CHAT, *args, **kwargs)

    def up(self) -> None:
        result = self.circ("up", "--timeout", str(UP_TIMEOUT_S - 10), timeout_s=UP_TIMEOUT_S)
        self._remember_pids()
        assert result.returncode == 0, f"circ up failed ({result.returncode}):\n{result.stderr}\n{self.logs()}"

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.circ("down", timeout_s=DOWN_TIMEOUT_S + 10)

    def teardown(self) -> None:
        """`circ down`; if that fails, kill what we started, by pid."""
        self._remember_pids()
        try:
            self.down()
        except subprocess.TimeoutExpired:
            pass
        # Whatever survived (down failed or hung): kill it, by pid.
        for pid in [pid for pid in self.started_pids if pid_alive(pid) and self._owns(pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _owns(self, pid: int) -> bool:
        """Whether ``pid`` is still one of ours (pids of killed daemons get reused)."""
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"CIRCADIAN_HOME={self.home}".encode() in environ

    def _remember_pids(self) -> None:
        """supervisord's pid and its daemons' pids: what teardown may have to kill."""
        pid_file = self.paths.run / "supervisord.pid"
        try:
            self.started_pids.add(int(pid_file.read_text().strip()))
        except (OSError, ValueError):
            pass
        if self.supervisor.is_running():
            try:
                self.started_pids.update(p.pid for p in self.supervisor.processes() if p.pid)
            except OSError:
                pass

    # -- supervisord's view ----------------------------------------------
    def procs(self) -> dict[str, Any]:
        return {p.name: p for p in self.supervisor.processes()}

    def pid(self, name: str) -> int:
        proc = self.procs()[name]
        assert proc.state == "RUNNING", f"{name} is {proc.state}"
        self.started_pids.add(proc.pid)
        return proc.pid

    def wait_running(self, name: str, *, not_pid: int | None = None, timeout_s: float = 60.0) -> int:
        """Wait until supervisord reports ``name`` RUNNING (with a new pid if ``not_pid``)."""
        def check() -> int | None:
            try:
                proc = self.procs()[name]
            except OSError:
                return None
            if proc.state == "RUNNING" and proc.pid and proc.pid != not_pid:
                self.started_pids.add(proc.pid)
                return proc.pid
            return None
        return wait_until(check, timeout_s, f"{name} RUNNING (not pid {not_pid})")

    def wait_ready(self, name: str, timeout_s: float = 60.0) -> Any:
        from services.cli.daemons import ping

        def check() -> Any:
            pong = ping(self.paths, name, timeout_s=1.0)
            return pong if pong is not None and pong.ready else None
        return wait_until(check, timeout_s, f"{name} ready", interval_s=0.2)

    def logs(self, tail_chars: int = 3000) -> str:
        parts = []
        for name in ("supervisord", *ALL_DAEMONS):
            path = self.paths.logs / f"{name}.log"
            try:
                parts.append(f"--- {path}\n{path.read_text(errors='replace')[-tail_chars:]}")
            except OSError:
                pass
        return "\n".join(parts)

    # -- the log, read-only -------------------------------------------------
    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        conn = sqlite3.connect(f"file:{self.paths.events_db}?mode=ro", uri=True, timeout=5)
        try:
            sql = "SELECT seq, event_id, type, source, body FROM events"
            rows = conn.execute(sql + (" WHERE type = ?" if type_ else "") + " ORDER BY seq",
                                (type_,) if type_ else ()).fetchall()
        finally:
            conn.close()
        return [{"seq": seq, "event_id": eid, "type": t, "source": src, "body": msgspec.msgpack.decode(body)}
                for seq, eid, t, src, body in rows]


def make_home() -> Path:
    # Short: socket paths must stay under ~100 bytes.
    return Path(tempfile.mkdtemp(prefix="ce-", dir="/tmp"))


def remove_home(home: Path) -> None:
    """Remove an instance directory; CIRCADIAN_E2E_KEEP=1 keeps it (logs, events.db) for a post-mortem."""
    if os.environ.get("CIRCADIAN_E2E_KEEP"):
        print(f"kept {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)


NIGHT_DAEMONS = ("chat", "ingest", "trainer", "evaluator")


@contextmanager
def running(home: Path, env: dict[str, str], *, ready_timeout_s: float = 60.0) -> Iterator[Instance]:
    """`circ up` in ``home`` with ``env``, yielded once every daemon a night needs is ready;
    torn down and removed afterwards (see :func:`remove_home`)."""
    instance = Instance(home, env)
    try:
        instance.up()
        for name in NIGHT_DAEMONS:
            instance.wait_ready(name, timeout_s=ready_timeout_s)
        yield instance
    finally:
        instance.teardown()
        remove_home(home)




def parse_json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
