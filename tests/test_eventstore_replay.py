"""The one log-replay helper (services.lib.eventstore.replay) over a real events.db.

Pages are read with a read-only SQLite connection, the way an audit or a
rebuild reads the log while the daemons may be down.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from protocol.envelope import Envelope, StoredEnvelope, new_envelope
from protocol.events import ChatTurnCompleted, ServiceStarted
from services.lib.eventstore.replay import db_pager, logged_envelopes
from services.lib.eventstore.store import EventStore, connect

TURN = "chat.turn_completed"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    """A log of 10 events: turns at odd seqs, service.started at even seqs."""
    path = tmp_path / "events.db"
    store = EventStore(path)
    envelopes: list[Envelope] = []
    for i in range(10):
        body = (ChatTurnCompleted(session_id="s", turn_index=i, user_text=f"q{i}", assistant_text="a", model="m")
                if i % 2 == 0 else ServiceStarted(service="probe", pid=i))
        envelopes.append(new_envelope(body, source="test"))
    store.append_batch(envelopes)
    store.close()
    yield path


def test_every_event_of_the_types_in_seq_order_across_pages(db: Path) -> None:
    """A page smaller than the log changes nothing: the same envelopes, in order, typed."""
    conn = connect(db, readonly=True)
    try:
        turns = list(logged_envelopes(db_pager(conn), [TURN], page=2))
        everything = list(logged_envelopes(db_pager(conn), page=3))
    finally:
        conn.close()
    assert [e.seq for e in turns] == [1, 3, 5, 7, 9]
    assert all(isinstance(e.body, ChatTurnCompleted) for e in turns)
    assert [e.seq for e in everything] == list(range(1, 11))


def test_after_and_until_bound_the_span(db: Path) -> None:
    """``after_seq`` is exclusive, ``until_seq`` inclusive (a rebuild stops at its cursor)."""
    conn = connect(db, readonly=True)
    try:
        span = [e.seq for e in logged_envelopes(db_pager(conn), after_seq=3, until_seq=7, page=2)]
    finally:
        conn.close()
    assert span == [4, 5, 6, 7]


def test_an_undecodable_event_is_reported_and_skipped() -> None:
    """An event this version cannot read does not end the replay; the caller hears of it."""
    good = msgspec.msgpack.encode(ServiceStarted(service="probe", pid=1))
    pages = [[StoredEnvelope(msg_id="a", ts=1.0, source="t", seq=1, body=msgspec.Raw(b"\xc1")),
              StoredEnvelope(msg_id="b", ts=1.0, source="t", seq=2, body=msgspec.Raw(good))], []]
    skipped: list[int] = []
    replayed = list(logged_envelopes(lambda after, limit, types: pages.pop(0),
                                     on_undecodable=lambda stored, exc: skipped.append(stored.seq or 0)))
    assert [e.seq for e in replayed] == [2] and skipped == [1]
