"""When to sleep: the nightly window, enough new material, or an idle user.

A scheduled sleep happens at most once per night. A night is named by the
date its window opened on (``Window.opened_on``), not by the calendar date
of the moment, so a window that wraps midnight (23:00-02:00) does not sleep
again after 00:00; and the night's name is kept on disk
(:class:`NightLedger`), so a trainer restarted inside the window, or a night
whose adapter was rejected, does not sleep a second time that night.

Local wall-clock time is what the user sets the window in. Moments should be
timezone-aware local times (``datetime.now().astimezone()``): across a DST
change the window still means the same wall-clock hours, the repeated hour
of the autumn change is one night, and a spring-forward jump over the
window's opening still lands inside the window when it is at least an hour
long.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from services.common.atomic import write_atomic
from services.common.clock_window import Window, WindowError, parse_window

__all__ = ["NightLedger", "Window", "WindowError", "parse_window", "sleep_trigger"]


def sleep_trigger(*, now: dt.datetime, window: Window | None, new_memories: int, min_new: int,
                  idle_s: float | None, idle_minutes: int, last_night: dt.date | None) -> str | None:
    """'schedule', 'idle' or None: whether a sleep should start now.

    ``last_night`` is the night (the date its window opened) of the last
    scheduled sleep; a night sleeps by schedule once, whatever its verdict.
    """
    if new_memories < max(1, min_new):
        return None
    if window is not None:
        night = window.opened_on(now)
        if night is not None and night != last_night:
            return "schedule"
    if idle_minutes > 0 and idle_s is not None and idle_s >= idle_minutes * 60:
        return "idle"
    return None


class NightLedger:
    """The night of the last scheduled sleep, kept across restarts (one small JSON file)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def last_night(self) -> dt.date | None:
        try:
            return dt.date.fromisoformat(json.loads(self.path.read_text())["night"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # never slept by schedule, or an unreadable file: at worst one extra sleep

    def record(self, night: dt.date) -> None:
        write_atomic(self.path, json.dumps({"night": night.isoformat()}).encode())
