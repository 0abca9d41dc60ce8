"""A daily window of local wall-clock time, "HH:MM-HH:MM", that may wrap midnight.

Shared by the configuration (which validates ``trainer.window`` when it is
loaded, in every process) and the trainer's schedule (which decides when to
sleep), so both read the text the same way.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
WINDOW_EXAMPLE = '"02:00-05:00" (or "" for no scheduled sleeps)'


class WindowError(ValueError):
    pass


@dataclass(frozen=True)
class Window:
    start: dt.time
    end: dt.time

    @property
    def wraps(self) -> bool:
        return self.end <= self.start

    def contains(self, moment: dt.datetime) -> bool:
        now = moment.time()
        if not self.wraps:
            return self.start <= now < self.end
        return now >= self.start or now < self.end  # wraps midnight, e.g. 23:00-02:00

    def opened_on(self, moment: dt.datetime) -> dt.date | None:
        """The date this window opened on if ``moment`` lies inside it, else None.

        This names one night: 23:30 on the 7th and 01:30 on the 8th are both the
        night that opened on the 7th, so a sleep keyed by it happens once per
        night even though the calendar date changes in the middle.
        """
        if not self.contains(moment):
            return None
        if self.wraps and moment.time() < self.end:
            return moment.date() - dt.timedelta(days=1)
        return moment.date()

    def next_opening(self, moment: dt.datetime) -> dt.datetime:
        candidate = moment.replace(hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0)
        return candidate if candidate > moment else candidate + dt.timedelta(days=1)


def parse_window(text: str) -> Window | None:
    """"HH:MM-HH:MM" -> Window; empty -> None (no scheduled sleeps)."""
    if not text.strip():
        return None
    match = _WINDOW.match(text)
    if not match:
        raise WindowError(f"{text!r} is not HH:MM-HH:MM; use e.g. {WINDOW_EXAMPLE}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise WindowError(f"{text!r} has an impossible time (hours 00-23, minutes 00-59); use e.g. {WINDOW_EXAMPLE}")
    if (h1, m1) == (h2, m2):
        raise WindowError(f"{text!r} opens and closes at the same minute; use e.g. {WINDOW_EXAMPLE}")
    return Window(dt.time(h1, m1), dt.time(h2, m2))
