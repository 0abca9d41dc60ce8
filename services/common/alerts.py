"""Alerts: one ``alert.raised`` event per cause per hour, a desktop notification, a hook.

Who raises what (each where the fact is first known, so nothing polls for it):

- the trainer, after a night's verdict: ``sleep_failed`` (``training.failed``)
  and ``adapter_rejected``; on its schedule check (every 30 s): ``disk_full``;
- ``circ up`` and ``circ status``: ``daemon_fatal`` (supervisord gave up on a
  daemon: the daemon itself cannot say so), ``disk_full`` and
  ``embedder_missing`` (ingest answers Ping with state "no embedder").

The rate limit is per cause, shared by every process of one home, and
survives restarts: ``data/state/alerts.json`` (written atomically, under an
``flock`` so two processes never both raise the same cause). An alert that
could not be logged (eventlog down) gives its slot back, so it is raised
again at the next check. Notifications are best effort: a missing
``notify-send`` or a failing hook is logged, never raised.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.events import AlertRaised
from services.common.atomic import write_atomic
from services.common.config import AlertsConfig
from services.common.logging import get_logger
from services.common.paths import Paths

log = get_logger("alerts")

CAUSES = ("sleep_failed", "adapter_rejected", "daemon_fatal", "disk_full", "embedder_missing")
HOOK_TIMEOUT_S = 30.0
NOTIFY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Alert:
    cause: str
    message: str
    key: str = ""
    severity: str = "warning"
    details: dict[str, str] = field(default_factory=dict)


def state_path(paths: Paths) -> Path:
    return paths.state / "alerts.json"


class RateLimit:
    """At most one alert per cause per ``interval_s``, on disk, across processes."""

    def __init__(self, path: Path, interval_s: float, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.interval_s = interval_s
        self.clock = clock

    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path.with_name(self.path.name + ".lock"), "a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}  # unreadable state: at worst one alert too many, never one too few

    def admit(self, cause: str) -> tuple[bool, int]:
        """(True, suppressed since the last one) when ``cause`` may alert now; else counts it."""
        with self._locked():
            state = self._read()
            entry = state.get(cause) if isinstance(state.get(cause), dict) else {}
            now = self.clock()
            last = float(entry.get("last_ts", 0.0) or 0.0)
            suppressed = int(entry.get("suppressed", 0) or 0)
            if now - last < self.interval_s and last <= now:
                state[cause] = {"last_ts": last, "suppressed": suppressed + 1}
                self._write(state)
                return False, suppressed + 1
            state[cause] = {"last_ts": now, "suppressed": 0, "previous_ts": last}
            self._write(state)
            return True, suppressed

    def give_back(self, cause: str) -> None:
        """Undo an admission whose alert could not be delivered."""
        with self._locked():
            state = self._read()
            entry = state.get(cause)
            if isinstance(entry, dict):
                state[cause] = {"last_ts": float(entry.get("previous_ts", 0.0) or 0.0), "suppressed": 0}
                self._write(state)

    def _write(self, state: dict[str, Any]) -> None:
        write_atomic(self.path, json.dumps(state, sort_keys=True).encode(), mode=0o600)


def raise_alert(paths: Paths, config: AlertsConfig, alert: Alert, emit: Callable[[AlertRaised], Any],
                *, clock: Callable[[], float] = time.time) -> AlertRaised | None:
    """Notify and log ``alert`` unless its cause alerted within the hour; the event, or None."""
    limit = RateLimit(state_path(paths), config.min_interval_s, clock)
    admitted, suppressed = limit.admit(alert.cause)
    if not admitted:
        log.info("alerts.suppressed", cause=alert.cause, key=alert.key, suppressed=suppressed)
        return None
    event = AlertRaised(cause=alert.cause, message=alert.message, key=alert.key, severity=alert.severity,
                        details={str(k): str(v) for k, v in alert.details.items()}, suppressed=suppressed)
    try:
        emit(event)
    except Exception as exc:  # not logged: raise it again next time rather than lose it
        limit.give_back(alert.cause)
        log.warning("alerts.not_logged", cause=alert.cause, error=str(exc))
        return None
    if config.desktop:
        notify_desktop(alert)
    if config.command.strip():
        run_hook(config.command, alert)
    log.info("alerts.raised", cause=alert.cause, key=alert.key, message=alert.message)
    return event


def notify_desktop(alert: Alert) -> bool:
    """A desktop notification where the desktop has a way to show one."""
    title = f"circadian: {alert.cause.replace('_', ' ')}"
    if sys.platform == "darwin" and shutil.which("osascript"):
        # The text goes in as an argument, never into the script (no quoting to get wrong).
        argv = ["osascript", "-e", "on run argv", "-e",
                "display notification (item 2 of argv) with title (item 1 of argv)", "-e", "end run",
                title, alert.message]
    elif shutil.which("notify-send") and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                                          or os.environ.get("DBUS_SESSION_BUS_ADDRESS")):
        urgency = "critical" if alert.severity == "error" else "normal"
        argv = ["notify-send", "--app-name=circadian", f"--urgency={urgency}", title, alert.message]
    else:
        return False
    try:
        subprocess.run(argv, timeout=NOTIFY_TIMEOUT_S, capture_output=True, check=True, stdin=subprocess.DEVNULL)
        return True
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("alerts.desktop_failed", error=str(exc))
        return False


def run_hook(command: str, alert: Alert) -> bool:
    """Run ``[alerts] command`` with the alert in its environment; True when it exited 0."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        log.warning("alerts.hook_unparsable", command=command, error=str(exc))
        return False
    env = dict(os.environ, CIRCADIAN_ALERT_CAUSE=alert.cause, CIRCADIAN_ALERT_MESSAGE=alert.message,
               CIRCADIAN_ALERT_KEY=alert.key, CIRCADIAN_ALERT_SEVERITY=alert.severity)
    try:
        result = subprocess.run(argv, env=env, timeout=HOOK_TIMEOUT_S, capture_output=True,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("alerts.hook_failed", command=command, error=str(exc))
        return False
    if result.returncode != 0:
        log.warning("alerts.hook_failed", command=command, exit_code=result.returncode,
                    stderr=result.stderr.decode(errors="replace")[-300:])
    return result.returncode == 0


def disk_alert(paths: Paths, config: AlertsConfig) -> Alert | None:
    """``disk_full`` when the data directory's filesystem has less than ``min_free_mb`` free."""
    where = paths.data if paths.data.exists() else paths.home
    try:
        free_mb = shutil.disk_usage(where).free / 1e6
    except OSError:
        return None
    if free_mb >= config.min_free_mb:
        return None
    return Alert(cause="disk_full", severity="error", key=str(where),
                 message=f"only {free_mb:.0f} MB free under {where} (alert below {config.min_free_mb} MB): "
                         "the log and the nights need room; free some space",
                 details={"free_mb": f"{free_mb:.0f}"})


def recent_alerts(paths: Paths, within_s: float = 86400.0, limit: int = 10) -> list[dict[str, Any]]:
    """The newest ``alert.raised`` events of the last ``within_s`` seconds, newest first."""
    import msgspec

    if not paths.events_db.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{paths.events_db}?mode=ro", uri=True, timeout=2)
        try:
            rows = conn.execute("SELECT seq, ts, source, body FROM events WHERE type = 'alert.raised' AND ts > ? "
                                "ORDER BY seq DESC LIMIT ?", (time.time() - within_s, limit)).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []
    out = []
    decoder = msgspec.msgpack.Decoder(AlertRaised)
    for seq, ts, source, body in rows:
        try:
            event = decoder.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError):
            continue
        out.append({"seq": seq, "ts": ts, "source": source, "cause": event.cause, "key": event.key,
                    "severity": event.severity, "message": event.message})
    return out
