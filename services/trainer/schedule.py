"""When to sleep: the nightly window, enough new material, or an idle user."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class ScheduleError(ValueError):
    pass


@dataclass(frozen=True)
class Window:
    start: dt.time
    end: dt.time

    def contains(self, moment: dt.datetime) -> bool:
        now = moment.time()
        if self.start <= self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end  # wraps midnight, e.g. 23:00-02:00

    def next_opening(self, moment: dt.datetime) -> dt.datetime:
        candidate = moment.replace(hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0)
        return candidate if candidate > moment else candidate + dt.timedelta(days=1)


def parse_window(text: str) -> Window | None:
    """"HH:MM-HH:MM" -> Window; empty -> None (no scheduled sleeps)."""
    if not text.strip():
        return None
    match = _WINDOW.match(text)
    if not match:
        raise ScheduleError(f"trainer.window {text!r} is not HH:MM-HH:MM (e.g. \"02:00-05:00\")")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ScheduleError(f"trainer.window {text!r} has an impossible time")
    return Window(dt.time(h1, m1), dt.time(h2, m2))


def sleep_trigger(*, now: dt.datetime, window: Window | None, new_memories: int, min_new: int,
                  idle_s: float | None, idle_minutes: int, slept_in_window: bool) -> str | None:
    """'schedule', 'idle' or None: whether a sleep should start now."""
    if new_memories < max(1, min_new):
        return None
    if window is not None and window.contains(now) and not slept_in_window:
        return "schedule"
    if idle_minutes > 0 and idle_s is not None and idle_s >= idle_minutes * 60:
        return "idle"
    return None
