"""The common consumer: catch up from a cursor, follow live, handle each event once."""

from __future__ import annotations

import threading
import time

from protocol.envelope import Envelope, new_envelope
from protocol.events import ChatTurnCompleted, ServiceStarted
from services.common.consumer import Cursor, EventConsumer
from services.common.eventlog_client import EventlogClient

TURN = "chat.turn_completed"


def turn(i: int) -> Envelope:
    return new_envelope(ChatTurnCompleted(session_id="s", turn_index=i, user_text=f"u{i}",
                                          assistant_text=f"a{i}", model="m"), source="test")


def append(paths, envelopes) -> list[int]:
    client = EventlogClient(paths)
    try:
        return client.append(envelopes).seqs
    finally:
        client.close()


def wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_catch_up_handles_backlog_in_order_once(paths, eventlog_proc):
    """Events committed before the consumer starts are handled on catch-up, in seq order."""
    seqs = append(paths, [turn(i) for i in range(25)])
    seen: list[int] = []
    consumer = EventConsumer(paths, "t", [TURN], lambda env: seen.append(env.seq), page_size=7)
    try:
        assert consumer.catch_up() == 25
        assert consumer.catch_up() == 0  # nothing twice
        assert consumer.head_seq == seqs[-1]  # what stats report as the log's head
    finally:
        consumer.close()
    assert seen == seqs
    assert Cursor(paths.state / "t.cursor").load() == seqs[-1]


def test_restart_resumes_from_stored_cursor(paths, eventlog_proc):
    """A new consumer with the same name handles only what the old one had not."""
    first = append(paths, [turn(i) for i in range(5)])
    seen: list[int] = []
    consumer = EventConsumer(paths, "t", [TURN], lambda env: seen.append(env.seq))
    consumer.catch_up()
    consumer.close()
    second = append(paths, [turn(i) for i in range(5, 9)])
    restarted = EventConsumer(paths, "t", [TURN], lambda env: seen.append(env.seq))
    try:
        restarted.catch_up()
    finally:
        restarted.close()
    assert seen == first + second


def test_live_events_arrive_through_the_doorbell(paths, eventlog_proc):
    """Following the log, a newly committed event is handled within a poll."""
    seen: list[Envelope] = []
    consumer = EventConsumer(paths, "live", [TURN], seen.append, idle_check_s=5.0)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        time.sleep(0.3)  # let the SUB connect
        started = time.monotonic()
        seqs = append(paths, [turn(1)])
        wait_for(lambda: len(seen) == 1)
        # Well before the 5 s idle re-check: the PUB doorbell did it.
        assert time.monotonic() - started < 4.0
        assert seen[0].seq == seqs[0]
        assert isinstance(seen[0].body, ChatTurnCompleted) and seen[0].body.user_text == "u1"
    finally:
        stop.set()
        thread.join(10)
        consumer.close()


def test_type_filter_skips_other_events_but_advances_cursor(paths, eventlog_proc):
    """Only subscribed types reach the handler; the cursor still moves to the head."""
    def other():
        return new_envelope(ServiceStarted(service="x", pid=1), source="test")

    seqs = append(paths, [turn(0), other(), turn(1), other()])
    seen: list[str] = []
    consumer = EventConsumer(paths, "f", [TURN], lambda env: seen.append(env.type))
    try:
        consumer.catch_up()
    finally:
        consumer.close()
    assert seen == [TURN, TURN]
    assert Cursor(paths.state / "f.cursor").load() == max(seqs)


def test_consumer_survives_eventlog_kill(paths, eventlog_proc):
    """kill -9 of the eventlog delays the consumer; nothing is lost or doubled."""
    seen: list[int] = []
    consumer = EventConsumer(paths, "k", [TURN], lambda env: seen.append(env.seq), idle_check_s=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        before = append(paths, [turn(i) for i in range(3)])
        wait_for(lambda: len(seen) == 3)
        eventlog_proc.kill()
        eventlog_proc.start()
        after = append(paths, [turn(i) for i in range(3, 6)])
        wait_for(lambda: len(seen) == 6, timeout_s=20)
        assert seen == before + after
    finally:
        stop.set()
        thread.join(10)
        consumer.close()


def test_the_handler_runs_with_the_events_seq_and_msg_id_bound(paths, eventlog_proc):
    """Every line a handler logs names the event it handles (structlog contextvars), and
    nothing stays bound once it returns."""
    import structlog

    envelopes = [turn(i) for i in range(3)]
    seqs = append(paths, envelopes)
    bound: list[dict] = []
    consumer = EventConsumer(paths, "bound", [TURN], lambda env: bound.append(structlog.contextvars.get_contextvars()))
    try:
        consumer.catch_up()
    finally:
        consumer.close()
    assert [(b["seq"], b["msg_id"]) for b in bound] == [(s, e.msg_id) for s, e in zip(seqs, envelopes, strict=True)]
    assert "seq" not in structlog.contextvars.get_contextvars()
