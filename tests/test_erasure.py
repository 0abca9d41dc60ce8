"""Forget's audited erasure: the one exception to an append-only log."""

from __future__ import annotations

import sqlite3

from protocol.envelope import new_envelope
from protocol.events import ChatTurnCompleted, MemoryForgotten
from services.lib.eventstore.store import EventStore, verify


def turn(text: str):
    return new_envelope(ChatTurnCompleted(session_id="s", turn_index=0, user_text=text,
                                          assistant_text=f"noted: {text}", model="m"), source="test")


def test_forgotten_turn_text_is_erased_from_log_and_disk(tmp_path):
    """memory.forgotten blanks the named turns' text in the same commit; bytes leave the files."""
    store = EventStore(tmp_path / "events.db")
    seqs = [r.seq for r in store.append_batch([turn("keep-me"), turn("canary-8812 my PIN"), turn("also-keep")])]
    store.append_batch([new_envelope(MemoryForgotten(memory_ids=["m2.0"], turn_seqs=[seqs[1]]), source="ingest")])
    events, _ = store.replay(0, 10)
    import msgspec

    bodies = {e.seq: msgspec.msgpack.decode(e.body) for e in events}
    assert bodies[seqs[1]]["user_text"] == "" and bodies[seqs[1]]["erased"] is True
    assert bodies[seqs[0]]["user_text"] == "keep-me"
    report = verify(store._conn)
    assert report.ok and report.erased == [seqs[1]]
    store.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"canary-8812" not in on_disk
    assert b"keep-me" in on_disk


def test_erasure_row_without_forgotten_event_is_reported(tmp_path):
    """A forged erasures row (no memory.forgotten asked for it) fails verify."""
    db = tmp_path / "events.db"
    store = EventStore(db)
    store.append_batch([turn("original")])
    store.close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO erasures (seq, erased_by, erased_at) VALUES (1, 'forged', 0)")
    conn.execute("UPDATE events SET body = x'80' WHERE seq = 1")  # permitted by the trigger...
    report = verify(conn)
    assert not report.ok and report.bad_bodies == [1]  # ...but verify catches it
    conn.close()


def test_erasing_twice_is_a_no_op(tmp_path):
    store = EventStore(tmp_path / "events.db")
    store.append_batch([turn("x")])
    forget = MemoryForgotten(memory_ids=["m1.0"], turn_seqs=[1, 99])
    store.append_batch([new_envelope(forget, source="ingest"), new_envelope(forget, source="ingest")])
    assert verify(store._conn).erased == [1]
    store.close()
