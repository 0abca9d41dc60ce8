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

__all__ = ["NightLedger", "SleepScheduler", "Window", "WindowError", "parse_window", "sleep_trigger"]


def sleep_trigger(*, now: dt.datetime, window: Window | None, new_memories: int, min_new: int,
                  idle_s: float | None, idle_minutes: int, last_night: dt.date | None,
                  unhonoured_forgets: int = 0) -> str | None:
    """'schedule', 'idle' or None: whether a sleep should start now.

    ``last_night`` is the night (the date its window opened) of the last
    scheduled sleep; a night sleeps by schedule once, whatever its verdict.
    ``unhonoured_forgets``: forgotten memories the serving adapter still holds
    (services/trainer/forgets.py); any makes the night sleep, new memories or
    not, so that the weights forget them too.
    """
    if new_memories < max(1, min_new) and unhonoured_forgets < 1:
        return None
    if window is not None:
        night = window.opened_on(now)
        if night is not None and night != last_night:
            return "schedule"
    if idle_minutes > 0 and idle_s is not None and idle_s >= idle_minutes * 60:
        return "idle"
    return None


class SleepScheduler:
    """The trainer's schedule check (every 30 s), with the clocks passed in, so a test can move them.

    The daemon passes ``now = datetime.now().astimezone()`` and ``wall_s =
    time.time()``; it asks only while no sleep runs, and records a scheduled
    night in the ledger once that night has a verdict. Set back, the clock
    cannot repeat a night: the night is named by the date its window opened
    on and the ledger already holds it. Idle time is measured from the newest
    turn by seq (services.trainer.last_turn), never below zero, and one idle
    spell (the same last turn) sleeps once.
    """

    def __init__(self, window: Window | None, ledger: NightLedger, *, min_new: int, idle_minutes: int) -> None:
        self.window, self.ledger = window, ledger
        self.min_new, self.idle_minutes = min_new, idle_minutes
        self.idle_slept_after: float | None = None  # the last turn's ts when an idle sleep began

    def decide(self, *, now: dt.datetime, wall_s: float, last_turn_ts: float | None,
               new_memories: int, unhonoured_forgets: int = 0) -> tuple[str, dt.date | None] | None:
        """(trigger, night) for a sleep to start now, or None; ``night`` only for a scheduled one."""
        idle_s = (None if last_turn_ts is None or last_turn_ts == self.idle_slept_after
                  else max(0.0, wall_s - last_turn_ts))
        trigger = sleep_trigger(now=now, window=self.window, new_memories=new_memories, min_new=self.min_new,
                                idle_s=idle_s, idle_minutes=self.idle_minutes, last_night=self.ledger.last_night(),
                                unhonoured_forgets=unhonoured_forgets)
        if trigger is None:
            return None
        if trigger == "idle":
            self.idle_slept_after = last_turn_ts
        night = self.window.opened_on(now) if trigger == "schedule" and self.window else None
        return trigger, night


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
