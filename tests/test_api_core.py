"""The api's socket-free parts: request checks, the conversation map, the token file;
and chat's side of them (stop sequences, a session seeded from a resent history)."""

from __future__ import annotations

import json
import stat

import pytest

from services.api.conversations import Conversations
from services.api.requests import BadRequest, check, decode
from services.common.api_token import ensure_token, is_loopback, token_path
from services.common.config import ApiConfig
from services.common.paths import Paths

CONFIG = ApiConfig()


def _turn(body: dict):
    return check(decode(json.dumps(body).encode()), CONFIG)


def test_roles_map_onto_system_prompt_history_and_message() -> None:
    turn = _turn({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "developer", "content": "No lists."},
        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "How are you?"}],
        "max_completion_tokens": 5, "stop": "\n", "stream": True, "stream_options": {"include_usage": True},
        "unknown_field_clients_send": 1})
    assert turn.system_prompt == "Be brief.\n\nNo lists."
    assert turn.history == (("user", "Hi there"), ("assistant", "Hello."))
    assert turn.message == "How are you?" and turn.max_tokens == 5 and turn.stop == ("\n",)
    assert turn.stream and turn.include_usage


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 10**9}, "max_tokens"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
])
def test_bad_requests_name_the_field(body: dict, param: str) -> None:
    with pytest.raises(BadRequest) as err:
        _turn(body)
    assert err.value.status == 400 and err.value.param == param, (str(err.value), err.value.param)


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff", b"[" * 50_000, b"null", b'"text"'])
def test_undecodable_bodies_are_bad_requests(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        decode(raw)


def test_a_conversation_continues_its_session_once() -> None:
    convos = Conversations(max_entries=2)
    history = (("user", "Hi"), ("assistant", "Hello! "))
    convos.remember("sys", list(history), "s1")
    assert convos.claim("other system", history) is None
    assert convos.claim("sys", (("user", "Hi"), ("assistant", "Hello!"))) == "s1"  # trimmed alike
    assert convos.claim("sys", history) is None  # claimed: a regenerate gets a new session
    for i in range(3):
        convos.remember(None, [("user", str(i))], f"s{i}")
    assert convos.claim(None, (("user", "0"),)) is None  # evicted, least recently used first


def test_token_file_is_private_and_stable(tmp_path) -> None:
    paths = Paths(tmp_path)
    token = ensure_token(paths)
    assert len(token) >= 32 and ensure_token(paths) == token
    assert stat.S_IMODE(token_path(paths).stat().st_mode) == 0o600
    assert stat.S_IMODE(token_path(paths).parent.stat().st_mode) == 0o700
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.5.0.1", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.2", "::", "example.org"))


def test_stop_filter_never_sends_part_of_a_stop_sequence() -> None:
    from services.chat.engine import _StopFilter

    sent: list[str] = []
    out = _StopFilter(("END", "\n\n"), sent.append)
    for segment in ["Hello", " E", "N", "ding. E", "ND more"]:
        if out.add(segment):
            break
    assert out.stopped and out.text == "Hello ENding. " and "".join(sent) == out.text
    plain: list[str] = []
    no_stop = _StopFilter((), plain.append)
    assert not no_stop.add("a") and not no_stop.add("b") and plain == ["a", "b"]  # no hold-back


@pytest.mark.model
def test_engine_stops_before_a_stop_sequence_and_seeds_from_history() -> None:
    from services.chat.engine import ChatEngine, TurnCallbacks, TurnRequest
    from services.common.config import ChatConfig
    from services.common.paths import models_dir
    from services.lib.models.compute import load_for_serving
    from services.lib.models.install import install_model

    model, tokenizer, _ = load_for_serving(install_model(None, models_dir()), "auto")
    engine = ChatEngine(model, tokenizer, model_name="m", config=ChatConfig(recall=False))

    def ask(session: str, **kw):
        deltas: list[str] = []
        turn = engine.run_turn(TurnRequest(request_id=session, session_id=session, message="Describe the sea.",
                                           max_tokens=16, resume=False, **kw),
                               TurnCallbacks(on_start=lambda _: None, on_delta=deltas.append,
                                             should_cancel=lambda: False))
        return turn, "".join(deltas)

    free, _ = ask("a")
    word = free.assistant_text.split()[2]
    stopped, streamed = ask("b", stop=(word,))
    assert stopped.assistant_text == streamed == free.assistant_text[:free.assistant_text.index(word)]
    assert stopped.finish_reason == "stop"
    seeded, _ = ask("c", history=(("user", "My name is Ada."), ("assistant", "Nice to meet you, Ada.")))
    session = engine.sessions.get("c")
    assert seeded.turn_index == 0 and session.messages[0] == {"role": "user", "content": "My name is Ada."}
    assert seeded.prompt_tokens > free.prompt_tokens
