"""When the trainer sleeps: the window (also across midnight and DST), once per night, the ledger."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.common.clock_window import WindowError, parse_window
from services.trainer.schedule import NightLedger, sleep_trigger

LONDON = ZoneInfo("Europe/London")  # DST: 2026-03-29 01:00 -> 02:00, 2026-10-25 02:00 -> 01:00


def _trigger(now: dt.datetime, window: str, last_night: dt.date | None, **kw) -> str | None:
    args = dict(new_memories=10, min_new=5, idle_s=None, idle_minutes=0)
    args.update(kw)
    return sleep_trigger(now=now, window=parse_window(window), last_night=last_night, **args)


def _walk(start: dt.datetime, minutes: int, window: str, step_min: int = 1) -> list[dt.datetime]:
    """Check every ``step_min`` minutes as the trainer does; return the moments a sleep starts."""
    last: dt.date | None = None
    started = []
    win = parse_window(window)
    assert win is not None
    for i in range(0, minutes, step_min):
        moment = (start.astimezone(dt.UTC) + dt.timedelta(minutes=i)).astimezone(start.tzinfo)
        if _trigger(moment, window, last) == "schedule":
            started.append(moment)
            last = win.opened_on(moment)  # the trainer records the night once it has a verdict
    return started


def test_a_window_that_wraps_midnight_sleeps_once_per_night() -> None:
    start = dt.datetime(2026, 12, 7, 12, 0, tzinfo=LONDON)
    sleeps = _walk(start, 3 * 24 * 60, "23:00-02:00")
    assert [(s.day, s.hour, s.minute) for s in sleeps] == [(7, 23, 0), (8, 23, 0), (9, 23, 0)]


def test_after_midnight_the_night_is_still_the_one_that_opened_yesterday() -> None:
    window = parse_window("23:00-02:00")
    assert window is not None
    night = dt.date(2026, 12, 7)
    assert window.opened_on(dt.datetime(2026, 12, 7, 23, 30)) == night
    assert window.opened_on(dt.datetime(2026, 12, 8, 1, 30)) == night
    assert window.opened_on(dt.datetime(2026, 12, 8, 2, 0)) is None
    # Slept (even rejected) at 23:30: the same window after midnight does not sleep again.
    assert _trigger(dt.datetime(2026, 12, 8, 0, 30), "23:00-02:00", night) is None


def test_a_rejected_night_is_not_slept_again_in_the_same_window() -> None:
    night = dt.date(2026, 12, 8)
    assert _trigger(dt.datetime(2026, 12, 8, 2, 10), "02:00-05:00", None) == "schedule"
    assert _trigger(dt.datetime(2026, 12, 8, 4, 50), "02:00-05:00", night) is None
    assert _trigger(dt.datetime(2026, 12, 9, 2, 0), "02:00-05:00", night) == "schedule"


def test_the_autumn_dst_change_repeats_an_hour_but_not_the_sleep() -> None:
    start = dt.datetime(2026, 10, 24, 12, 0, tzinfo=LONDON)
    sleeps = _walk(start, 24 * 60, "01:00-03:00")
    assert len(sleeps) == 1
    assert (sleeps[0].hour, sleeps[0].minute, sleeps[0].fold) == (1, 0, 0)


def test_the_spring_dst_jump_over_the_opening_still_sleeps_that_night() -> None:
    # 01:00 does not exist on 2026-03-29 in London (clocks go to 02:00): a 01:30-03:00 window
    # is entered at 02:00 and the night is slept.
    start = dt.datetime(2026, 3, 28, 12, 0, tzinfo=LONDON)
    sleeps = _walk(start, 24 * 60, "01:30-03:00")
    assert [(s.day, s.hour) for s in sleeps] == [(29, 2)]


def test_too_few_new_memories_never_sleep() -> None:
    assert _trigger(dt.datetime(2026, 12, 8, 2, 10), "02:00-05:00", None, new_memories=4) is None
    assert _trigger(dt.datetime(2026, 12, 8, 2, 10), "02:00-05:00", None, new_memories=0, min_new=0) is None


def test_idle_sleeps_outside_the_window() -> None:
    moment = dt.datetime(2026, 12, 8, 14, 0)
    assert _trigger(moment, "02:00-05:00", None, idle_s=3600, idle_minutes=30) == "idle"
    assert _trigger(moment, "02:00-05:00", None, idle_s=600, idle_minutes=30) is None
    assert _trigger(moment, "", None, idle_s=3600, idle_minutes=0) is None


def test_the_ledger_survives_a_restart_and_ignores_a_torn_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "trainer-schedule.json"
    assert NightLedger(path).last_night() is None
    NightLedger(path).record(dt.date(2026, 12, 7))
    assert NightLedger(path).last_night() == dt.date(2026, 12, 7)  # a new instance: as after a restart
    path.write_text("{not json")
    assert NightLedger(path).last_night() is None


@pytest.mark.parametrize("text", ["2-3", "25:00-02:00", "02:60-03:00", "02:00", "02:00-02:00", "ab:cd-ef:gh"])
def test_bad_windows_are_refused_with_an_example(text: str) -> None:
    with pytest.raises(WindowError, match="02:00-05:00"):
        parse_window(text)


def test_an_empty_window_means_no_scheduled_sleeps() -> None:
    assert parse_window("") is None
    assert _trigger(dt.datetime(2026, 12, 8, 2, 10), "", None) is None
