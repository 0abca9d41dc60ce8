"""Alerts that `circ status` raises from outside: ingest without its embedding model.

The embedding model package is shadowed by an empty one (as in
test_ingest_bad_input.py), so ingest runs degraded ("no embedder"). `circ
status` raises ``embedder_missing`` once, shows it as an ``alert:`` line,
and raises nothing more when run again within the hour.
"""

from __future__ import annotations

import json

import pytest

from services.cli.alert_checks import live_alerts

from .harness import Instance, base_env, wait_until
from .test_ingest_bad_input import _broken_embedder_path, _ingest_pong

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)
def test_status_raises_embedder_missing_once_and_shows_it(fresh_home: Instance) -> None:
    shadow = fresh_home.home / "shadow"
    _broken_embedder_path(shadow)
    env = base_env(fresh_home.home, PYTHONPATH=str(shadow), CIRCADIAN_EMBEDDER="minilm",
                   CIRCADIAN_ALERTS_DESKTOP="false", CIRCADIAN_ALERTS_MIN_FREE_MB="0",
                   CIRCADIAN_TRAINER_WINDOW="")
    broken = Instance(fresh_home.home, env)
    fresh_home.env = env  # teardown with the same environment
    up = broken.circ("up", "--timeout", "300", timeout_s=360)
    fresh_home._remember_pids()
    assert up.returncode == 0, up.stderr
    wait_until(lambda: (p := _ingest_pong(broken)) and p.details.get("state") == "no embedder", 90,
               "ingest to answer Ping without an embedder")
    first = broken.circ("status")
    lines = [x for x in first.stdout.splitlines() if x.startswith("alert:")]
    assert len(lines) == 1 and "embedder_missing" in lines[0] and "bin/setup" in lines[0], first.stdout
    for _ in range(3):
        report = json.loads(broken.circ("status", "--json").stdout)
        assert [a["cause"] for a in report["alerts"]] == ["embedder_missing"], report["alerts"]
    [event] = broken.events("alert.raised")
    assert event["source"] == "cli" and event["body"]["key"] == "ingest"
    state = json.loads((broken.paths.state / "alerts.json").read_text())
    assert state["embedder_missing"]["suppressed"] == 3, state


def test_a_fatal_daemon_and_a_degraded_ingest_are_each_an_alert(tmp_path) -> None:
    from services.common.paths import Paths

    found = live_alerts(Paths(tmp_path), {
        "chat": {"state": "FATAL", "details": {}},
        "ingest": {"state": "RUNNING", "details": {"state": "no embedder", "problem": "no model.safetensors"}},
        "trainer": {"state": "RUNNING", "details": {}},
    })
    by_cause = {a.cause: a for a in found if a.cause != "disk_full"}
    assert set(by_cause) == {"daemon_fatal", "embedder_missing"}
    assert by_cause["daemon_fatal"].key == "chat" and "chat.log" in by_cause["daemon_fatal"].message
    assert "no model.safetensors" in by_cause["embedder_missing"].message
