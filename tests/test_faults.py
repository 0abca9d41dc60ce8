"""Faults beyond kill, at the socket-free cores (issue 15, part 2; the daemons: tests/e2e/test_faults_*.py).

- A full disk: a real SQLITE_FULL from SQLite (``PRAGMA max_page_count`` caps
  the file, which is how SQLite itself tests it), through the eventlog's
  commit and chat's logging of a turn; chat's own free-space check before a
  turn, on the real filesystem.
- A torn page in ``events.db`` or ``memories.db``: bytes overwritten in the
  middle of the file, found by SQLite's integrity check.
- The clock set back an hour: the trainer's schedule check driven through a
  day with a clock that jumps (it takes its clocks as parameters).
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from protocol.chat_api import SendMessage
from protocol.envelope import Envelope, new_envelope
from protocol.eventlog_api import Append, Appended, Replay
from protocol.events import ChatTurnCompleted, ServiceStarted
from protocol.service_api import ErrorReply
from services.chat.core import ChatCore, Job
from services.common.config import ChatConfig
from services.common.daemon import Readiness
from services.common.diskspace import log_space_problem
from services.common.rpc import RemoteError
from services.eventlog.core import EventlogCore, PendingAppend
from services.lib.eventstore.store import EventStore, LogDamaged, connect, verify
from services.trainer.last_turn import LastTurnCursor
from services.trainer.schedule import NightLedger, SleepScheduler, parse_window

PAGE = 4096


def _event(text: str = "x") -> Envelope:
    return new_envelope(ServiceStarted(service="test", pid=1, version="0", details={"pad": text}), source="test")


def _turn(rid: str, text: str) -> ChatTurnCompleted:
    return ChatTurnCompleted(session_id="s-1", turn_index=0, user_text=text, assistant_text="ok",
                             model="m", request_id=rid)


def _cap(store: EventStore) -> None:
    """The file may not grow by one more page: the next append that needs a page gets SQLITE_FULL."""
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")


def _uncap(store: EventStore) -> None:
    store._conn.execute("PRAGMA max_page_count = 1073741823")


# -- the disk fills ---------------------------------------------------------------------------
def test_a_full_log_says_disk_full_keeps_what_it_acknowledged_and_accepts_again(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events" / "events.db")
    core = EventlogCore(store, Readiness("eventlog"))
    try:
        first = core.commit([PendingAppend("a", Append(events=[_event() for _ in range(3)], request_id="r1"))])
        assert [r.seqs for _, r in first.replies] == [[1, 2, 3]]
        _cap(store)
        big = "y" * (64 * 1024)  # needs pages the file may not have
        pending = [PendingAppend(origin, Append(events=[_event(big)], request_id=origin))
                   for origin in ("r2", "r3", None)]  # None: a PUSHed append, nobody waits
        full = core.commit(pending)
        replies = dict(full.replies)
        for origin in ("r2", "r3"):
            reply = replies[origin]
            assert isinstance(reply, ErrorReply) and reply.code == "disk_full", reply
            assert reply.message.startswith(f"disk full: free space under {tmp_path / 'events'}"), reply.message
            assert "resend" in reply.message
        assert not full.published and store.head_seq == 3
        # Not a crash, not a half-written transaction: the log is whole and still readable.
        assert core.handle_read(Replay(after_seq=0, limit=10)).head_seq == 3
        _uncap(store)  # space returns
        again = core.commit([PendingAppend("r4", Append(events=[_event(big)], request_id="r4"))])
        assert [r.seqs for _, r in again.replies] == [[4]], "the next seq, no gap"
    finally:
        store.close()
    report = verify(connect(tmp_path / "events" / "events.db", readonly=True))
    assert report.ok and report.count == 4 and report.head_seq == 4


def test_chat_tells_the_user_the_disk_is_full_when_the_log_cannot_commit_a_turn(tmp_path: Path) -> None:
    """The reply was generated but the log is full: the client hears "disk full: free space under
    <dir>", nothing is marked logged, and a resend once there is space is logged once."""
    store = EventStore(tmp_path / "events" / "events.db")
    log = EventlogCore(store, Readiness("eventlog"))
    chat = ChatCore(Readiness("chat"), ChatConfig(recall=False))

    def append(envelopes: list[Envelope]) -> Appended:  # what EventlogClient does with the reply
        (_, reply), = log.commit([PendingAppend("chat", Append(events=envelopes, request_id="a"))]).replies
        if isinstance(reply, ErrorReply):
            raise RemoteError(reply)
        return reply

    job = Job(b"client", SendMessage(request_id="r-full", message="hello"), "s-1")
    turn = _turn("r-full", "z" * 64 * 1024)
    try:
        _cap(store)
        sent: list[Any] = []
        chat.commit_turn(append, job, turn, sent.append)
        assert len(sent) == 1 and isinstance(sent[0], ErrorReply) and sent[0].code == "disk_full"
        assert sent[0].message.startswith(f"disk full: free space under {tmp_path / 'events'}"), sent[0].message
        assert "send the message again" in sent[0].message
        assert "r-full" not in chat.logged and store.head_seq == 0
        _uncap(store)
        chat.commit_turn(append, job, turn, sent.append)
        assert sent[-1].seq == 1 and not sent[-1].duplicate
    finally:
        store.close()


def test_chat_refuses_a_new_turn_before_generating_it_when_the_disk_is_full(tmp_path: Path) -> None:
    """The check chat runs on every message, on the real filesystem: below the reserve, refused
    with the directory named; above it, admitted."""
    free = shutil.disk_usage(tmp_path).free
    full = ChatCore(Readiness("chat"), ChatConfig(recall=False),
                    space_problem=lambda: log_space_problem(tmp_path, reserve_bytes=free * 2))
    reply = full.handle(SendMessage(request_id="r-1", message="hi"), b"c")
    assert isinstance(reply, ErrorReply) and reply.code == "disk_full"
    assert reply.message.startswith(f"disk full: free space under {tmp_path} ("), reply.message
    assert full.jobs.qsize() == 0 and not full.active
    ok = ChatCore(Readiness("chat"), ChatConfig(recall=False),
                  space_problem=lambda: log_space_problem(tmp_path))
    assert ok.handle(SendMessage(request_id="r-1", message="hi"), b"c") is None and ok.jobs.qsize() == 1


# -- a torn page ------------------------------------------------------------------------------
def tear_page(path: Path, page: int) -> None:
    """Overwrite the first KB of one page (its header, cell pointers) with garbage, as a write torn
    by a power cut can leave it."""
    with path.open("r+b") as f:
        f.seek(page * PAGE)  # the page header and its first cells
        f.write(b"\xde\xad\xbe\xef" * 256)


def _log_of(path: Path, events: int) -> None:
    store = EventStore(path)
    try:
        for _ in range(events // 50):
            store.append_batch([_event("p" * 400) for _ in range(50)])
    finally:
        store.close()  # the last connection checkpoints the WAL into events.db


def test_a_torn_page_in_the_log_is_found_by_verify_and_stops_the_eventlog_from_opening_it(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    _log_of(db, 300)
    assert verify(connect(db, readonly=True)).ok
    pages = db.stat().st_size // PAGE
    tear_page(db, pages // 2)
    report = verify(connect(db, readonly=True))
    assert not report.ok and report.damaged, report
    with pytest.raises(LogDamaged) as refused:
        EventStore(db, check=True)
    message = str(refused.value)
    assert str(db) in message and "circ log verify" in message and ".recover" in message


def test_a_torn_page_in_the_memory_index_is_found_when_it_is_opened(tmp_path: Path) -> None:
    from services.lib.memory.index import IndexDamaged, MemoryIndex, MemoryRecord

    rng = np.random.default_rng(0)
    with MemoryIndex(tmp_path / "memory", dim=8) as index:
        records = [MemoryRecord(memory_id=f"m{i}", seq=i + 1, session_id="s", text=f"memory number {i} " * 20,
                                route="rag", ts=0.0) for i in range(200)]
        index.add(records, rng.standard_normal((200, 8)).astype(np.float32))
        index.save()
    db = tmp_path / "memory" / "memories.db"
    tear_page(db, db.stat().st_size // PAGE // 2)
    with pytest.raises(IndexDamaged) as found:
        MemoryIndex(tmp_path / "memory", dim=8, check=True)
    assert str(db) in str(found.value) and "circ memory rebuild" in str(found.value)
    db.write_bytes(b"not a database at all " * 400)  # not even SQLite: found without the check
    with pytest.raises(IndexDamaged):
        MemoryIndex(tmp_path / "memory", dim=8)


# -- the clock is set back an hour ------------------------------------------------------------
LONDON = ZoneInfo("Europe/London")
NIGHT_MIN = 20  # how long a simulated night runs (no check meanwhile, as in the daemon)


def _day(scheduler: SleepScheduler, start: dt.datetime, minutes: int, *, jump_at_min: int,
         jump_min: int = -60, last_turn: LastTurnCursor | None = None,
         turns_at_min: tuple[int, ...] = ()) -> list[tuple[dt.datetime, str]]:
    """Check once a simulated minute; at ``jump_at_min`` the wall clock moves by ``jump_min``.
    Returns (wall-clock moment, trigger) for every sleep started."""
    started: list[tuple[dt.datetime, str]] = []
    offset = dt.timedelta(0)
    busy_until = -1
    for real in range(minutes):
        if real == jump_at_min:
            offset += dt.timedelta(minutes=jump_min)
        moment = (start.astimezone(dt.UTC) + dt.timedelta(minutes=real) + offset).astimezone(LONDON)
        if last_turn is not None and real in turns_at_min:
            last_turn.saw(Envelope(msg_id=f"t{real}", ts=moment.timestamp(), source="chat",
                                   body=_turn(f"r{real}", "hi")))
        if real < busy_until:
            continue  # a night is running: the daemon does not check
        decided = scheduler.decide(now=moment, wall_s=moment.timestamp(), new_memories=10,
                                   last_turn_ts=last_turn.ts if last_turn else None)
        if decided is None:
            continue
        trigger, night = decided
        started.append((moment, trigger))
        busy_until = real + NIGHT_MIN
        if night is not None:
            scheduler.ledger.record(night)  # the daemon records it once the night has its verdict
    return started


@pytest.mark.parametrize(("window", "start", "jump_at"), [
    ("02:00-05:00", dt.datetime(2026, 12, 7, 9, 0), 4 * 60),     # 13:00 -> 12:00, mid-day
    ("02:00-05:00", dt.datetime(2026, 12, 7, 9, 0), 17 * 60 + 45),  # 02:45 -> 01:45: the window opens again
    ("23:00-02:00", dt.datetime(2026, 12, 7, 12, 0), 12 * 60 + 30),  # 00:30 -> 23:30: back over midnight
])
def test_a_clock_set_back_an_hour_never_sleeps_a_night_twice(tmp_path: Path, window: str,
                                                               start: dt.datetime, jump_at: int) -> None:
    scheduler = SleepScheduler(parse_window(window), NightLedger(tmp_path / "schedule.json"),
                               min_new=5, idle_minutes=0)
    sleeps = _day(scheduler, start.replace(tzinfo=LONDON), 26 * 60, jump_at_min=jump_at)
    assert [t for _, t in sleeps] == ["schedule"], sleeps


def test_an_idle_spell_sleeps_once_across_the_jump_and_a_turn_after_it_starts_a_new_one(tmp_path: Path) -> None:
    """idle_minutes=30. A turn at 12:10, an idle sleep at 12:40; at 12:50 the clock goes back to
    11:50: the same spell does not sleep again. A turn at (wall clock) 12:05 — earlier than the one
    before by ts, later by seq — starts a new spell, which sleeps at 12:35. (Following the largest
    ts instead, the trainer saw no new turn and never slept again.)"""
    cursor = LastTurnCursor(tmp_path / "last-turn.json")
    scheduler = SleepScheduler(None, NightLedger(tmp_path / "schedule.json"), min_new=5, idle_minutes=30)
    start = dt.datetime(2026, 12, 7, 12, 0, tzinfo=LONDON)
    sleeps = _day(scheduler, start, 3 * 60, jump_at_min=50, last_turn=cursor, turns_at_min=(10, 65))
    assert [(m.strftime("%H:%M"), t) for m, t in sleeps] == [("12:40", "idle"), ("12:35", "idle")], sleeps
