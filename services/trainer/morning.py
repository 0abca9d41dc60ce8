"""After a night's verdict: the alerts it calls for, and the morning report.

Started by the trainer's sleep thread once ``Sleep.run`` has returned, on a
thread of its own (a hook may take 30 s; the next `circ sleep` must not wait
for it), and guarded whole: nothing here can change the verdict or break the
night (the report is even a child process, killed after ``REPORT_TIMEOUT_S``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from services.common.alerts import Alert, disk_alert, raise_alert
from services.common.config import Config
from services.common.logging import get_logger
from services.common.paths import REPO_ROOT, Paths

log = get_logger("trainer.morning")

REPORT_TIMEOUT_S = 300.0


def after_night_in_background(paths: Paths, config: Config, state: Any, verdict: str,
                              emit: Callable[[Any], Any]) -> threading.Thread:
    """:func:`after_night` on its own thread: the sleep is over (a new one may start) at once."""
    thread = threading.Thread(target=after_night, args=(paths, config, state, verdict, emit),
                              name="morning", daemon=True)
    thread.start()
    return thread


def after_night(paths: Paths, config: Config, state: Any, verdict: str, emit: Callable[[Any], Any]) -> None:
    """Alert on a failed or rejected night, append its line to ``data/reports/nights.jsonl``,
    then rebuild ``data/reports/latest.html`` (which reads that line)."""
    try:
        alert = night_alert(paths, state, verdict)
        if alert is not None:
            raise_alert(paths, config.alerts, alert, emit)
    except Exception:
        log.exception("trainer.alert_failed", sleep_id=state.sleep_id)
    try:
        from services.trainer.nights_log import record_night

        log.info("trainer.night_recorded", sleep_id=state.sleep_id, path=str(record_night(paths, state, verdict)))
    except Exception:
        log.exception("trainer.night_not_recorded", sleep_id=state.sleep_id)
    write_report(paths)


def night_alert(paths: Paths, state: Any, verdict: str) -> Alert | None:
    if verdict == "failed":
        return Alert(cause="sleep_failed", key=state.sleep_id, severity="error",
                     message=f"last night's sleep failed: {state.error}",
                     details={"sleep_id": state.sleep_id, "adapter_id": state.adapter_id})
    if verdict == "reject":
        from services.lib.adapters.store import AdapterStore

        try:
            reasons = AdapterStore(paths.adapters).show(state.adapter_id).get("evaluation", {}).get("reasons", [])
        except Exception:
            reasons = []
        why = "; ".join(str(r) for r in reasons) or "it did not pass the evaluator's gates"
        return Alert(cause="adapter_rejected", key=state.adapter_id,
                     message=f"last night's adapter {state.adapter_id} was rejected: {why}",
                     details={"sleep_id": state.sleep_id, "adapter_id": state.adapter_id})
    return None


def check_disk(paths: Paths, config: Config, emit: Callable[[Any], Any]) -> None:
    """The trainer's periodic look at the free disk (a night needs room)."""
    try:
        alert = disk_alert(paths, config.alerts)
        if alert is not None:
            raise_alert(paths, config.alerts, alert, emit)
    except Exception as exc:
        log.warning("trainer.disk_check_failed", error=str(exc))


def write_report(paths: Paths) -> bool:
    """``python -m services.report`` for this home; True when it wrote the page.

    The child gets the read end of a pipe whose write end only this process
    holds: if the trainer dies (supervisord does not reap grandchildren), the
    pipe closes and the child exits.
    """
    env = dict(os.environ, CIRCADIAN_HOME=str(paths.home))
    read_fd, write_fd = os.pipe()
    try:
        result = subprocess.run([sys.executable, "-m", "services.report", "--parent-fd", str(read_fd)],
                                cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                                timeout=REPORT_TIMEOUT_S, stdin=subprocess.DEVNULL, pass_fds=(read_fd,))
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("trainer.report_failed", error=str(exc))
        return False
    finally:
        os.close(read_fd)
        os.close(write_fd)
    if result.returncode != 0:
        log.warning("trainer.report_failed", exit_code=result.returncode, stderr=result.stderr[-500:])
        return False
    log.info("trainer.report_written", page=result.stdout.strip())
    return True
