"""The event store without sockets: gap-free seq, idempotence, append-only, verify."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import msgspec
import pytest

from protocol.codec import Codec, encode
from protocol.envelope import Envelope, new_envelope
from protocol.eventlog_api import Append, Appended
from protocol.events import AdapterReloaded, ChatTurnCompleted, ServiceFailed, ServiceStarted
from protocol.service_api import ErrorReply
from services.common.daemon import Readiness
from services.eventlog.core import EventlogCore, PendingAppend
from services.lib.eventstore.store import GENESIS_HASH, EventStore, StoreError, row_hash, verify

ENVELOPE = Codec(Envelope)


def turn(i: int, **kw: object) -> Envelope:
    body = ChatTurnCompleted(session_id="s1", turn_index=i, user_text=f"question {i}",
                             assistant_text=f"answer {i}", model="m")
    return new_envelope(body, source="chat", **kw)  # type: ignore[arg-type]


def started(i: int) -> Envelope:
    return new_envelope(ServiceStarted(service="svc", pid=1000 + i), source="svc")


def failed(i: int) -> Envelope:
    return new_envelope(ServiceFailed(service="svc", pid=i, error="E"), source="svc")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "events" / "events.db"


@pytest.fixture
def store(db_path: Path):
    s = EventStore(db_path)
    yield s
    s.close()


def all_seqs(db_path: Path) -> list[int]:
    with sqlite3.connect(db_path) as conn:
        return [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")]


def copy_db(src: Path, dst: Path) -> Path:
    """A consistent copy (WAL included) through SQLite's backup API."""
    with sqlite3.connect(src) as source, sqlite3.connect(dst) as target:
        source.backup(target)
    return dst


def tamper(db: Path, *statements: str) -> None:
    """Edit a copy the way an attacker with file access would: drop the guards first."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        triggers = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'")]
        assert triggers, "the events table has no guard triggers to drop"
        for name in triggers:
            conn.execute(f'DROP TRIGGER "{name}"')
        for sql in statements:
            conn.execute(sql)
    finally:
        conn.close()


# --------------------------------------------------------------------------- seq and idempotence


def test_seq_is_gap_free_from_one(store: EventStore, db_path: Path) -> None:
    assert store.head_seq == 0
    seqs: list[int] = []
    for batch_size in (1, 5, 1, 17, 3):
        results = store.append_batch([turn(i) for i in range(batch_size)])
        seqs.extend(r.seq for r in results)
        assert not any(r.duplicate for r in results)
    assert seqs == list(range(1, 28))
    assert store.head_seq == 27
    assert all_seqs(db_path) == seqs


def test_append_returns_publishable_stored_envelopes(store: EventStore) -> None:
    envs = [turn(0, parent_id="p0"), started(1)]
    results = store.append_batch(envs)
    for env, result in zip(envs, results, strict=True):
        assert result.stored is not None
        decoded = ENVELOPE.decode(encode(result.stored))
        assert decoded == msgspec.structs.replace(env, seq=result.seq)


def test_duplicate_across_batches_returns_existing_seq(store: EventStore, db_path: Path) -> None:
    first = turn(1)
    other = turn(2)
    [r1] = store.append_batch([first])
    resend = store.append_batch([first, other, first])
    assert [(r.seq, r.duplicate) for r in resend] == [(r1.seq, True), (2, False), (r1.seq, True)]
    assert resend[0].stored is None and resend[2].stored is None
    assert store.head_seq == 2
    assert all_seqs(db_path) == [1, 2]


def test_duplicate_within_one_batch_is_stored_once(store: EventStore, db_path: Path) -> None:
    env = turn(1)
    changed = msgspec.structs.replace(env, source="impostor")  # same id, other content
    results = store.append_batch([env, turn(2), changed, env])
    assert [(r.seq, r.duplicate) for r in results] == [(1, False), (2, False), (1, True), (1, True)]
    events, head = store.replay(0, 100)
    assert head == 2 and [e.msg_id for e in events] == [env.msg_id, results[1].stored.msg_id]
    assert events[0].source == "chat"  # the first write wins; a resend never edits


# --------------------------------------------------------------------------- append-only


@pytest.mark.parametrize("sql", [
    "UPDATE events SET source = 'edited' WHERE seq = 1",
    "UPDATE events SET body = x'c0'",
    "DELETE FROM events WHERE seq = 2",
    "DELETE FROM events",
])
def test_update_and_delete_are_refused(store: EventStore, db_path: Path, sql: str) -> None:
    store.append_batch([turn(0), turn(1)])
    raw = sqlite3.connect(db_path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute(sql)
    finally:
        raw.close()
    with pytest.raises(sqlite3.IntegrityError):
        store._conn.execute(sql)  # the daemon's own connection is refused too
    events, head = store.replay(0, 10)
    assert head == 2 and [e.source for e in events] == ["chat", "chat"]
    assert verify(store._conn).ok


def test_invalid_envelope_rolls_back_the_whole_batch(store: EventStore, db_path: Path) -> None:
    store.append_batch([turn(0)])
    good = turn(1)
    bad = msgspec.structs.replace(turn(2), seq=99)
    with pytest.raises(StoreError, match="seq"):
        store.append_batch([good, turn(3), bad])
    assert store.head_seq == 1
    assert all_seqs(db_path) == [1]
    # The good event was not half-committed: appending it now gets the next seq.
    [r] = store.append_batch([good])
    assert (r.seq, r.duplicate) == (2, False)
    assert verify(store._conn).ok


# --------------------------------------------------------------------------- reopen


def test_reopen_resumes_head_and_hash_chain(db_path: Path) -> None:
    s = EventStore(db_path)
    s.append_batch([turn(i) for i in range(3)])
    head_hash_before = s._head_hash
    s.close()

    s = EventStore(db_path)
    try:
        assert s.head_seq == 3
        assert s._head_hash == head_hash_before != GENESIS_HASH
        results = s.append_batch([started(4), turn(5)])
        assert [r.seq for r in results] == [4, 5]
        # Idempotence survives the reopen too.
        events, _ = s.replay(0, 1)
        assert s.append_batch([ENVELOPE.decode(encode(msgspec.structs.replace(events[0], seq=None)))])[0].duplicate
        report = verify(s._conn)
        assert report.ok and report.hash_chain and report.count == 5 and report.head_seq == 5
        rows = s._conn.execute(
            "SELECT seq, event_id, ts, source, type, parent_id, v, body_sha256, hash FROM events"
            " WHERE seq IN (3, 4) ORDER BY seq").fetchall()
        assert rows[1][8] == row_hash(rows[0][8], *rows[1][:8])  # row 4 chains onto row 3
    finally:
        s.close()


def test_store_without_hash_chain_verifies(db_path: Path) -> None:
    s = EventStore(db_path, hash_chain=False)
    try:
        s.append_batch([turn(i) for i in range(4)])
        report = verify(s._conn)
        assert report.ok and not report.hash_chain and report.count == 4
    finally:
        s.close()


# --------------------------------------------------------------------------- verify


def test_verify_ok_on_a_fresh_and_on_an_empty_log(store: EventStore) -> None:
    empty = verify(store._conn)
    assert empty.ok and empty.count == 0 and empty.head_seq == 0
    store.append_batch([turn(i) for i in range(10)])
    report = verify(store._conn)
    assert report.ok and report.count == 10 and report.head_seq == 10 and report.hash_chain
    assert not (report.gaps or report.bad_bodies or report.bad_hashes)


def test_verify_detects_an_edited_body(store: EventStore, db_path: Path, tmp_path: Path) -> None:
    store.append_batch([turn(i) for i in range(5)])
    copy = copy_db(db_path, tmp_path / "tampered.db")
    forged = encode(ChatTurnCompleted(session_id="s1", turn_index=2, user_text="question 2",
                                      assistant_text="something else entirely", model="m"))
    tamper(copy, f"UPDATE events SET body = x'{forged.hex()}' WHERE seq = 3")
    with sqlite3.connect(copy) as conn:
        report = verify(conn)
    assert not report.ok and report.bad_bodies == [3]
    assert verify(store._conn).ok  # the original is untouched


def test_verify_detects_a_consistent_forgery_through_the_chain(store: EventStore, db_path: Path,
                                                               tmp_path: Path) -> None:
    """Body and its checksum edited together: only the hash chain notices."""
    store.append_batch([turn(i) for i in range(5)])
    copy = copy_db(db_path, tmp_path / "tampered.db")
    forged = encode(ChatTurnCompleted(session_id="s1", turn_index=3, user_text="question 3",
                                      assistant_text="forged", model="m"))
    tamper(copy, f"UPDATE events SET body = x'{forged.hex()}', "
                 f"body_sha256 = '{hashlib.sha256(forged).hexdigest()}' WHERE seq = 4")
    with sqlite3.connect(copy) as conn:
        report = verify(conn)
    assert not report.ok and report.bad_bodies == [] and report.bad_hashes == [4]


def test_verify_detects_an_edited_header_column(store: EventStore, db_path: Path, tmp_path: Path) -> None:
    store.append_batch([turn(i) for i in range(3)])
    copy = copy_db(db_path, tmp_path / "tampered.db")
    tamper(copy, "UPDATE events SET source = 'someone-else' WHERE seq = 2")
    with sqlite3.connect(copy) as conn:
        report = verify(conn)
    assert not report.ok and report.bad_hashes == [2]


def test_verify_detects_a_gap(store: EventStore, db_path: Path, tmp_path: Path) -> None:
    store.append_batch([turn(i) for i in range(6)])
    copy = copy_db(db_path, tmp_path / "tampered.db")
    tamper(copy, "DELETE FROM events WHERE seq = 3")
    with sqlite3.connect(copy) as conn:
        report = verify(conn)
    assert not report.ok
    assert report.gaps == [3]
    assert 4 in report.bad_hashes  # the row after the hole no longer chains
    assert report.count == 5 and report.head_seq == 6


def test_verify_detects_a_gap_without_hash_chain(db_path: Path, tmp_path: Path) -> None:
    s = EventStore(db_path, hash_chain=False)
    try:
        s.append_batch([turn(i) for i in range(4)])
    finally:
        s.close()
    copy = copy_db(db_path, tmp_path / "tampered.db")
    tamper(copy, "DELETE FROM events WHERE seq IN (1, 3)")
    with sqlite3.connect(copy) as conn:
        report = verify(conn)
    assert not report.ok and report.gaps == [1, 3]


# --------------------------------------------------------------------------- replay


def test_replay_with_type_filter_and_limit(store: EventStore) -> None:
    makers = [turn, started, failed, turn, turn, failed, started, turn, failed, turn]
    envs = [make(i) for i, make in enumerate(makers)]
    store.append_batch(envs)

    page, head = store.replay(0, 3)
    assert head == 10 and [e.seq for e in page] == [1, 2, 3]
    page, head = store.replay(3, 1000)
    assert [e.seq for e in page] == list(range(4, 11))
    assert store.replay(10, 5) == ([], 10)

    failures, head = store.replay(0, 2, ["service.failed"])
    assert head == 10 and [e.seq for e in failures] == [3, 6]
    rest, _ = store.replay(6, 2, ["service.failed"])
    assert [e.seq for e in rest] == [9]

    mixed, _ = store.replay(1, 100, ["service.started", "service.failed"])
    assert [e.seq for e in mixed] == [2, 3, 6, 7, 9]
    decoded = [ENVELOPE.decode(encode(e)) for e in mixed]
    assert {d.type for d in decoded} == {"service.started", "service.failed"}
    assert decoded[0] == msgspec.structs.replace(envs[1], seq=2)

    assert store.replay(0, 10, ["no.such_type"]) == ([], 10)


# --------------------------------------------------------------------------- group commit isolation


def test_one_poisoned_request_does_not_fail_its_group(store: EventStore) -> None:
    """A request the database refuses fails alone; the rest of the group commits."""
    core = EventlogCore(store, Readiness("eventlog"))
    good_a = PendingAppend("a", Append(events=[turn(1)], request_id="ra"))
    # NaN ts binds as NULL and violates NOT NULL. The daemon refuses it in
    # validate_append; here it reaches commit directly, as an unforeseen
    # poison would.
    poison = PendingAppend("p", Append(events=[msgspec.structs.replace(turn(2), ts=float("nan"))],
                                       request_id="rp"))
    good_pull = PendingAppend(None, Append(events=[started(3), turn(4)]))
    assert core.validate_append(poison.request) is not None

    outcome = core.commit([good_a, poison, good_pull])
    replies = dict(outcome.replies)
    assert isinstance(replies["a"], Appended) and replies["a"].seqs == [1]
    assert isinstance(replies["p"], ErrorReply) and replies["p"].code == "unavailable"
    assert isinstance(replies[None], Appended) and replies[None].seqs == [2, 3]
    assert [s.seq for s in outcome.published] == [1, 2, 3]
    assert outcome.types == ["chat.turn_completed", "service.started", "chat.turn_completed"]
    assert store.head_seq == 3 and verify(store._conn).ok


def test_validate_append_refuses_values_sqlite_cannot_store(store: EventStore) -> None:
    core = EventlogCore(store, Readiness("eventlog"))
    for bad in (msgspec.structs.replace(turn(0), ts=float("nan")),
                msgspec.structs.replace(turn(0), ts=float("inf")),
                msgspec.structs.replace(turn(0), v=2**63),
                msgspec.structs.replace(turn(0), v=-1),
                msgspec.structs.replace(turn(0), seq=1),
                msgspec.structs.replace(turn(0), msg_id=""),
                msgspec.structs.replace(turn(0), msg_id="x" * 201)):
        reply = core.validate_append(Append(events=[turn(1), bad], request_id="r"))
        assert isinstance(reply, ErrorReply) and reply.code == "bad_request" and reply.request_id == "r"
    fine = new_envelope(AdapterReloaded(adapter_id=None), source="chat")
    assert core.validate_append(Append(events=[turn(1), fine])) is None
