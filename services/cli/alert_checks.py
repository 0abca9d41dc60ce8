"""The alerts that only a look from outside can see, raised by `circ up` and `circ status`.

A daemon that supervisord gave up on (FATAL) cannot announce it itself, and
ingest without its embedding model keeps running degraded; `circ status`
sees both (and the free disk) and raises them through services.common.alerts,
which keeps it to one per cause per hour however often status is run.
"""

from __future__ import annotations

from typing import Any

from services.common.alerts import Alert, disk_alert, raise_alert, recent_alerts
from services.common.logging import get_logger
from services.common.paths import Paths

log = get_logger("cli.alerts")


def _emit(paths: Paths):
    def emit(body: Any) -> None:
        from protocol.envelope import new_envelope
        from services.common.eventlog_client import EventlogClient

        client = EventlogClient(paths, timeout_s=2.0)
        try:
            client.append([new_envelope(body, source="cli")])
        finally:
            client.close()
    return emit


def live_alerts(paths: Paths, daemons: dict[str, dict]) -> list[Alert]:
    """What is wrong now, from supervisord's and the daemons' own view."""
    from services.common.config import load_config

    found = []
    for name, d in daemons.items():
        if d.get("state") == "FATAL":
            found.append(Alert(cause="daemon_fatal", key=name, severity="error",
                               message=f"{name} stopped for good (supervisord gave up restarting it); see "
                                       f"{paths.logs / (name + '.log')}, then `circ up`"))
    ingest = daemons.get("ingest", {}).get("details", {})
    if ingest.get("state") == "no embedder":
        found.append(Alert(cause="embedder_missing", key="ingest",
                           message=f"ingest has no embedding model: nothing new is remembered ({ingest.get('problem', '')}); "
                                   "run bin/setup"))
    disk = disk_alert(paths, load_config().alerts)
    if disk:
        found.append(disk)
    return found


def check_and_list(paths: Paths, daemons: dict[str, dict], eventlog_up: bool) -> list[dict[str, Any]]:
    """Raise what is wrong now (rate-limited), then the alerts of the last day, newest first."""
    from services.common.config import load_config
    from services.common.logging import configure_logging

    # structlog unconfigured prints to stdout, which `circ status --json` owns: problems to stderr.
    configure_logging("cli", "warning")
    try:
        config = load_config().alerts
        for alert in live_alerts(paths, daemons):
            if eventlog_up:  # an alert must be logged; without the log it is shown live only
                raise_alert(paths, config, alert, _emit(paths))
    except Exception as exc:  # status must answer whatever the alert machinery thinks
        log.warning("alerts.check_failed", error=str(exc))
    return recent_alerts(paths)
