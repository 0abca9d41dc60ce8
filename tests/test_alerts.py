"""services.common.alerts without daemons: the per-cause rate limit on disk, the hook, give-back.

Real files and real subprocesses; only the clock is passed in, so an hour can
pass in a test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from protocol.events import AlertRaised
from services.common.alerts import Alert, RateLimit, disk_alert, raise_alert, run_hook, state_path
from services.common.config import AlertsConfig
from services.common.paths import Paths


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path)


def test_one_alert_per_cause_per_hour_survives_a_new_process_view(paths: Paths) -> None:
    clock, logged = Clock(), []
    config = AlertsConfig(desktop=False)
    rejected = Alert(cause="adapter_rejected", key="ad-1", message="rejected: canary dropped")
    assert isinstance(raise_alert(paths, config, rejected, logged.append, clock=clock), AlertRaised)
    clock.now += 1800
    assert raise_alert(paths, config, rejected, logged.append, clock=clock) is None
    # Another cause is not held back by the first.
    other = Alert(cause="sleep_failed", key="sl-1", message="failed")
    assert raise_alert(paths, config, other, logged.append, clock=clock) is not None
    # The state is on disk: a fresh RateLimit (a restarted process) sees it.
    state = json.loads(state_path(paths).read_text())
    assert state["adapter_rejected"]["suppressed"] == 1
    assert RateLimit(state_path(paths), 3600, clock).admit("adapter_rejected") == (False, 2)
    clock.now += 1801
    event = raise_alert(paths, config, rejected, logged.append, clock=clock)
    assert event is not None and event.suppressed == 2
    assert [e.cause for e in logged] == ["adapter_rejected", "sleep_failed", "adapter_rejected"]


def test_an_alert_that_could_not_be_logged_is_raised_again_next_time(paths: Paths) -> None:
    clock, logged = Clock(), []
    config = AlertsConfig(desktop=False)
    alert = Alert(cause="daemon_fatal", key="chat", message="chat is FATAL")

    def down(event: AlertRaised) -> None:
        raise ConnectionError("eventlog service is not running")

    assert raise_alert(paths, config, alert, down, clock=clock) is None
    assert raise_alert(paths, config, alert, logged.append, clock=clock) is not None
    assert len(logged) == 1


def test_the_hook_gets_the_alert_in_its_environment(paths: Paths, tmp_path: Path) -> None:
    out = tmp_path / "hook.txt"
    script = f"import os; open({str(out)!r}, 'w').write(os.environ['CIRCADIAN_ALERT_CAUSE'] + '|' + os.environ['CIRCADIAN_ALERT_MESSAGE'])"
    config = AlertsConfig(desktop=False, command=f"{sys.executable} -c \"{script}\"")
    raise_alert(paths, config, Alert(cause="disk_full", message="only 3 MB free"), lambda e: None, clock=Clock())
    assert out.read_text() == "disk_full|only 3 MB free"


def test_a_broken_hook_is_reported_not_raised() -> None:
    alert = Alert(cause="sleep_failed", message="x")
    assert run_hook("/nonexistent/hook", alert) is False
    assert run_hook(f"{sys.executable} -c 'import sys; sys.exit(3)'", alert) is False
    assert run_hook("unterminated 'quote", alert) is False


def test_unreadable_state_allows_the_alert(paths: Paths) -> None:
    state_path(paths).parent.mkdir(parents=True)
    state_path(paths).write_text("{not json")
    assert RateLimit(state_path(paths), 3600, Clock()).admit("disk_full") == (True, 0)


def test_disk_alert_fires_below_the_threshold_only(paths: Paths) -> None:
    paths.data.mkdir(parents=True)
    assert disk_alert(paths, AlertsConfig(min_free_mb=0)) is None
    alert = disk_alert(paths, AlertsConfig(min_free_mb=10**12))  # more than any disk has
    assert alert is not None and alert.cause == "disk_full" and "MB free" in alert.message
