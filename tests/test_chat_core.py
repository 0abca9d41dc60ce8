"""chat's policy driven in process, with no socket: ChatCore.handle (what RouterServer
dispatches to), run_job on the real embedded model, commit_turn into a real events.db."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from protocol.chat_api import CancelChat, ChatDelta, ChatFinished, ChatStarted, SendMessage
from protocol.envelope import Envelope
from protocol.eventlog_api import Appended
from protocol.service_api import ErrorReply, Ping, Pong
from services.chat.core import MAX_QUEUED_TURNS, ChatCore, Job, turn_msg_id
from services.common.config import ChatConfig
from services.common.daemon import Readiness
from services.common.paths import models_dir
from services.common.rpc import ServiceUnavailable
from services.lib.eventstore.store import EventStore

ORIGIN = b"client-1"


def core(**config: Any) -> ChatCore:
    return ChatCore(Readiness("chat"), ChatConfig(recall=False, **config))


def send_message(rid: str, text: str = "What is the capital of France?", **fields: Any) -> SendMessage:
    return SendMessage(request_id=rid, message=text, **{"max_tokens": 8, **fields})


def test_ping_is_answered_at_once() -> None:
    reply = core().handle(Ping(request_id="p"), ORIGIN)
    assert isinstance(reply, Pong) and reply.request_id == "p" and reply.details["queued_turns"] == "0"


def test_a_message_becomes_a_job_for_its_origin_and_is_answered_later() -> None:
    c = core()
    assert c.handle(send_message("r-1"), ORIGIN) is None
    job = c.jobs.get_nowait()
    assert isinstance(job, Job) and job.ident == ORIGIN and job.session_id.startswith("s")
    assert c.active["r-1"] is job


def test_refusals_say_why() -> None:
    """No id, an id already being answered, a full queue: a typed error each, nothing queued."""
    c = core()
    no_id = c.handle(send_message(""), ORIGIN)
    assert isinstance(no_id, ErrorReply) and no_id.code == "bad_request"
    c.handle(send_message("r-1"), ORIGIN)
    again = c.handle(send_message("r-1"), ORIGIN)
    assert isinstance(again, ErrorReply) and again.code == "busy" and again.request_id == "r-1"
    for i in range(MAX_QUEUED_TURNS - 1):
        assert c.handle(send_message(f"q-{i}"), ORIGIN) is None
    full = c.handle(send_message("one-too-many"), ORIGIN)
    assert isinstance(full, ErrorReply) and full.code == "busy" and "retry" in full.message
    assert c.jobs.qsize() == MAX_QUEUED_TURNS


def test_cancel_flags_the_job_and_ending_frees_its_id() -> None:
    c = core()
    c.handle(send_message("r-1"), ORIGIN)
    assert c.handle(CancelChat(request_id="r-1"), ORIGIN) is None
    assert c.active["r-1"].cancelled.is_set()
    c.job_ended("r-1")
    assert c.handle(send_message("r-1"), ORIGIN) is None  # the id may be used again


def test_a_job_cancelled_before_it_starts_is_answered_without_the_model() -> None:
    c = core()
    c.handle(send_message("r-1"), ORIGIN)
    job = c.jobs.get_nowait()
    job.cancelled.set()
    sent: list[Any] = []
    assert c.run_job(None, job, sent.append) is None
    assert isinstance(sent[0], ErrorReply) and sent[0].code == "cancelled"


@pytest.fixture(scope="module")
def engine() -> Any:
    from services.chat.engine import ChatEngine
    from services.lib.models.compute import load_for_serving
    from services.lib.models.install import install_model

    model, tokenizer, _ = load_for_serving(install_model(None, models_dir()), "auto")
    return ChatEngine(model, tokenizer, model_name="smollm2", config=ChatConfig(recall=False))


def store_appender(store: EventStore) -> Any:
    def append(envelopes: list[Envelope]) -> Appended:
        results = store.append_batch(envelopes)
        return Appended(request_id="", seqs=[r.seq for r in results], duplicates=[r.duplicate for r in results])
    return append


@pytest.mark.model
def test_a_turn_streams_then_is_logged_then_finished(engine: Any, tmp_path: Path) -> None:
    """ChatStarted, deltas adding up to the logged text, and ChatFinished only after the commit;
    a resend of the same request gets the logged answer, not a new turn."""
    c = core()
    c.handle(send_message("r-turn"), ORIGIN)
    job = c.jobs.get_nowait()
    sent: list[Any] = []
    turn = c.run_job(engine, job, sent.append)
    assert turn is not None and isinstance(sent[0], ChatStarted) and sent[0].session_id == job.session_id
    assert "".join(m.text for m in sent if isinstance(m, ChatDelta)) == turn.assistant_text
    assert not any(isinstance(m, ChatFinished) for m in sent), "finished before it was logged"
    store = EventStore(tmp_path / "events.db")
    try:
        c.commit_turn(store_appender(store), job, turn, sent.append)
        events, _ = store.replay(0, 10)
    finally:
        store.close()
    finished = sent[-1]
    assert isinstance(finished, ChatFinished) and finished.seq == events[-1].seq and not finished.duplicate
    assert events[-1].msg_id == turn_msg_id("r-turn")
    c.job_ended("r-turn")
    c.handle(send_message("r-turn"), ORIGIN)
    resent: list[Any] = []
    assert c.run_job(engine, c.jobs.get_nowait(), resent.append) is None
    assert isinstance(resent[-1], ChatFinished) and resent[-1].duplicate and resent[-1].seq == finished.seq


@pytest.mark.model
def test_a_turn_that_cannot_be_logged_is_an_unavailable_error(engine: Any) -> None:
    """The reply was generated but the log is down past the retries: the client is told to resend."""
    c = core()
    c.handle(send_message("r-down", max_tokens=4), ORIGIN)
    job = c.jobs.get_nowait()
    turn = c.run_job(engine, job, lambda _m: None)
    assert turn is not None

    def log_down(_envelopes: list[Envelope]) -> Appended:
        raise ServiceUnavailable("eventlog service is not running (test): start it with `circ up`")

    sent: list[Any] = []
    c.commit_turn(log_down, job, turn, sent.append)
    assert isinstance(sent[-1], ErrorReply) and sent[-1].code == "unavailable" and "resend" in sent[-1].message
