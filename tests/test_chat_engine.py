"""The socket-free chat core on the real embedded model (small prompts, few tokens)."""

from __future__ import annotations

import pytest

from services.chat.engine import ChatEngine, TurnCallbacks, TurnRejected, TurnRequest
from services.common.config import ChatConfig
from services.common.paths import models_dir

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def loaded():
    from services.lib.models.compute import load_for_serving
    from services.lib.models.install import install_model

    model_dir = install_model(None, models_dir())
    model, tokenizer, _ = load_for_serving(model_dir, "auto")
    return model, tokenizer


def engine(loaded, **config) -> ChatEngine:
    model, tokenizer = loaded
    return ChatEngine(model, tokenizer, model_name="smollm2", config=ChatConfig(**config))


class Recorder:
    def __init__(self, cancel_after: int | None = None) -> None:
        self.deltas: list[str] = []
        self.started: list[int] = []
        self.cancel_after = cancel_after

    def callbacks(self) -> TurnCallbacks:
        return TurnCallbacks(on_start=self.started.append, on_delta=self.deltas.append,
                             should_cancel=lambda: self.cancel_after is not None and len(self.deltas) >= self.cancel_after)


def ask(eng: ChatEngine, text: str, session: str = "s", max_tokens: int = 12, rec: Recorder | None = None):
    rec = rec or Recorder()
    return eng.run_turn(TurnRequest(request_id=f"r-{text[:8]}", session_id=session, message=text,
                                    max_tokens=max_tokens), rec.callbacks()), rec


def test_answers_and_streams_the_same_text_it_records(loaded):
    """The deltas streamed to the client add up to the logged assistant text."""
    turn, rec = ask(engine(loaded), "What is the capital of France?", max_tokens=16)
    assert "Paris" in turn.assistant_text
    assert "".join(rec.deltas) == turn.assistant_text
    assert rec.started == [0]
    assert turn.completion_tokens > 0 and turn.prompt_tokens > 0 and turn.ttft_ms > 0


def test_follow_up_reuses_kv_cache_with_identical_output(loaded):
    """A follow-up turn fed only its new tokens answers exactly like a full re-prefill."""
    cached, fresh = engine(loaded), engine(loaded)
    questions = ["My cat is called Miso.", "What is my cat called?", "Say it again."]
    for index, question in enumerate(questions):
        session = fresh.sessions.get("s")
        if session is not None:
            session.reset_cache()
        a, _ = ask(cached, question)
        b, _ = ask(fresh, question)
        assert a.assistant_text == b.assistant_text
        assert a.turn_index == b.turn_index == index
    # The cached session holds the whole conversation, not only the last turn.
    held = cached.sessions.get("s").tokens
    assert len(held) >= a.prompt_tokens


def test_cancel_stops_generation_early(loaded):
    """should_cancel() ends the turn with finish_reason 'cancelled'."""
    turn, rec = ask(engine(loaded), "Count from one to one hundred.", max_tokens=60, rec=Recorder(cancel_after=3))
    assert turn.finish_reason == "cancelled"
    assert turn.completion_tokens <= 5


def test_token_limit_sets_finish_reason_length(loaded):
    turn, _ = ask(engine(loaded), "Write a long poem about the sea.", max_tokens=4)
    assert turn.finish_reason == "length"
    assert turn.completion_tokens == 4


@pytest.mark.parametrize("kwargs, code", [
    ({"message": "   "}, "bad_request"),
    ({"message": "x" * 40_000}, "too_large"),
    ({"message": "hi", "max_tokens": 0}, None),  # 0 means "use the default"
    ({"message": "hi", "max_tokens": 100_000}, "bad_request"),
    ({"message": "hi", "temperature": -1.0}, "bad_request"),
    ({"message": "hi", "top_p": 0.0}, "bad_request"),
])
def test_invalid_requests_are_rejected_with_a_code(loaded, kwargs, code):
    eng = engine(loaded, max_tokens=2)
    request = TurnRequest(request_id="r", session_id="s", **kwargs)
    if code is None:
        assert eng.run_turn(request, Recorder().callbacks()).completion_tokens <= 2
        return
    with pytest.raises(TurnRejected) as info:
        eng.run_turn(request, Recorder().callbacks())
    assert info.value.code == code


def test_context_limit_is_enforced(loaded):
    eng = engine(loaded, max_context_tokens=64)
    with pytest.raises(TurnRejected, match="new session"):
        ask(eng, "word " * 80)


def test_unknown_session_is_rebuilt_from_history(loaded):
    """A session chat does not hold continues from the history loader (the log)."""
    model, tokenizer = loaded
    history = {"old": [("My name is Ada.", "Nice to meet you, Ada."), ("I live in Oslo.", "Oslo is lovely.")]}
    eng = ChatEngine(model, tokenizer, model_name="m", config=ChatConfig(),
                     history_loader=lambda sid: history.get(sid, []))
    turn, _ = ask(eng, "Where do I live?", session="old", max_tokens=12)
    assert turn.turn_index == 2
    assert turn.prompt_tokens > ask(engine(loaded), "Where do I live?", session="new")[0].prompt_tokens
