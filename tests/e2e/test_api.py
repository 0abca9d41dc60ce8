"""The OpenAI-compatible API (issue 14), driven with the real `openai` package.

Real daemons under supervisord (`circ up`, the api on a free port), the real
embedded model (greedy, few tokens). What the client gets is checked against
what chat logged, so "every turn through it is logged like a circ-chat turn"
is proven on the event log itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx  # the HTTP client the openai package itself uses
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.cli.daemons import ping
from services.common.paths import REPO_ROOT

from .harness import CIRC, TURN_TYPE, Instance, make_home, remove_home, wait_until

pytestmark = pytest.mark.e2e

TIMEOUT_S = 120.0  # one request on a loaded 2-core machine, generously
FACT = "my sister Mara's birthday is March 14th"
QUESTION = "When is Mara's birthday?"
ANSWER = "March 14"


def _base_url(instance: Instance) -> str:
    pong = ping(instance.paths, "api", timeout_s=5.0)
    assert pong is not None and pong.ready, "api is not ready"
    return pong.details["url"]


@pytest.fixture(scope="module")
def client(instance: Instance) -> openai.OpenAI:
    return openai.OpenAI(base_url=_base_url(instance) + "/v1", api_key="unused-on-loopback",
                         timeout=TIMEOUT_S, max_retries=0)


def _logged(instance: Instance, seq: int) -> dict[str, Any]:
    [event] = [e for e in instance.events(TURN_TYPE) if e["seq"] == seq]
    return event["body"]


def _turn_of(instance: Instance, user_text: str) -> dict[str, Any] | None:
    turns = [e["body"] for e in instance.events(TURN_TYPE) if e["body"]["user_text"] == user_text]
    return turns[-1] if turns else None


def test_non_streamed_completion_is_logged_like_a_chat_turn(instance: Instance, client: openai.OpenAI) -> None:
    [model] = client.models.list().data
    assert model.id == "smollm2-135m-instruct" and model.owned_by == "circadian"
    reply = client.chat.completions.create(
        model=model.id, messages=[{"role": "user", "content": "Name a color."}], max_tokens=8, temperature=0)
    text = reply.choices[0].message.content
    assert text and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 0
    ext = reply.model_extra["circadian"]
    logged = _logged(instance, ext["seq"])
    assert logged["user_text"] == "Name a color." and logged["assistant_text"] == text
    assert logged["session_id"] == ext["session_id"] and logged["turn_index"] == 0
    assert logged["completion_tokens"] == reply.usage.completion_tokens
    health = httpx.get(_base_url(instance) + "/health", timeout=TIMEOUT_S).json()
    assert health["status"] == "ok" and health["chat"]["model"] == model.id


def test_streamed_completion_and_its_continuation_reuse_one_session(
        instance: Instance, client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]
    pieces, finishes, ext = [], [], None
    for chunk in client.chat.completions.create(model="any", messages=messages, max_tokens=8, temperature=0,
                                                stream=True, stream_options={"include_usage": True}):
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finishes.append(choice.finish_reason)
        ext = (chunk.model_extra or {}).get("circadian") or ext
    text = "".join(pieces)
    assert len(pieces) >= 3 and text, pieces  # role chunk, several deltas, the finish chunk
    assert finishes[-1] in ("stop", "length") and not any(finishes[:-1])
    first = _logged(instance, ext["seq"])
    assert first["assistant_text"] == text and first["system_prompt"] == "You are terse."

    # The client resends the whole history: it continues the same chat session (KV cache kept).
    follow = client.chat.completions.create(
        model="any", max_tokens=6, temperature=0,
        messages=[*messages, {"role": "assistant", "content": text}, {"role": "user", "content": "Again."}])
    second = _logged(instance, follow.model_extra["circadian"]["seq"])
    assert second["session_id"] == first["session_id"] and second["turn_index"] == 1, second

    # An edited history is another conversation: a new session, seeded with what the client sent.
    edited = client.chat.completions.create(
        model="any", max_tokens=6, temperature=0,
        messages=[*messages, {"role": "assistant", "content": "Hello there."}, {"role": "user", "content": "Again."}])
    third = _logged(instance, edited.model_extra["circadian"]["seq"])
    assert third["session_id"] != first["session_id"] and third["turn_index"] == 0


def test_stop_sequence_ends_the_reply_before_it(instance: Instance, client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "Describe the sea in one sentence."}],
        max_tokens=24, temperature=0, stop=[" "])
    text = reply.choices[0].message.content
    assert " " not in text and reply.choices[0].finish_reason == "stop", repr(text)
    assert _logged(instance, reply.model_extra["circadian"]["seq"])["assistant_text"] == text


def test_fact_told_through_the_api_is_recalled_in_a_new_conversation(
        instance: Instance, client: openai.OpenAI) -> None:
    told = client.chat.completions.create(model="any", messages=[{"role": "user", "content": FACT}],
                                          max_tokens=8, temperature=0)
    seq = told.model_extra["circadian"]["seq"]
    decision = wait_until(
        lambda: next((e for e in instance.events() if e["type"] in ("memory.stored", "memory.skipped")
                      and e["body"]["turn_seq"] == seq), None), 90.0, f"ingest's decision on turn {seq}", 0.3)
    assert decision["type"] == "memory.stored", decision["body"]
    memory_ids = set(decision["body"]["memory_ids"])

    asked = client.chat.completions.create(model="any", messages=[{"role": "user", "content": QUESTION}],
                                           max_tokens=24, temperature=0)
    ext = asked.model_extra["circadian"]
    assert ext["session_id"] != told.model_extra["circadian"]["session_id"] and ext["turn_index"] == 0
    assert ext["recall_status"] == "ok" and memory_ids & set(ext["recalled_ids"]), ext
    assert ANSWER in asked.choices[0].message.content, asked.choices[0].message.content


def _cancelled_turn(instance: Instance, user_text: str) -> dict[str, Any]:
    return wait_until(lambda: _turn_of(instance, user_text), 60.0, f"the logged turn for {user_text!r}", 0.2)


def test_client_that_disconnects_cancels_generation(instance: Instance, client: openai.OpenAI) -> None:
    # Streamed: read the first words, then hang up.
    prompt = "Write a very long story about a lighthouse keeper."
    stream = client.chat.completions.create(model="any", messages=[{"role": "user", "content": prompt}],
                                            max_tokens=400, temperature=0, stream=True)
    got = ""
    for chunk in stream:
        got += chunk.choices[0].delta.content or ""
        if len(got) > 10:
            break
    stream.close()
    turn = _cancelled_turn(instance, prompt)
    assert turn["finish_reason"] == "cancelled" and turn["completion_tokens"] < 400, turn
    assert turn["assistant_text"].startswith(got), (got, turn["assistant_text"])

    # Not streamed: the client gives up waiting (its timeout closes the connection).
    prompt2 = "Write a very long poem about the night sky."
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=4.0).chat.completions.create(
            model="any", messages=[{"role": "user", "content": prompt2}], max_tokens=400, temperature=0)
    turn2 = _cancelled_turn(instance, prompt2)
    assert turn2["finish_reason"] == "cancelled" and turn2["completion_tokens"] < 400, turn2


BAD_BODIES: list[tuple[bytes, str]] = [
    (b"{not json", "not valid JSON"),
    (b"[1, 2, 3]", "invalid request body"),
    (b'{"messages": "hello"}', "messages"),
    (b'{"messages": []}', "empty"),
    (b'{"messages": [{"role": "user", "content": 42}]}', "content"),
    (b'{"messages": [{"role": "tool", "content": "x"}]}', "role"),
    (b'{"messages": [{"role": "wizard", "content": "x"}]}', "role"),
    (b'{"messages": [{"role": "assistant", "content": "x"}]}', "last non-system message"),
    (b'{"messages": [{"role": "user", "content": "   "}]}', "empty"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000000}', "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}', "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 9}', "temperature"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "top_p": 0}', "top_p"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["a","b","c","d","e"]}', "stop"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "n": 3}', "n=1"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}', "text parts"),
    (b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', "JSON"),
    (b"[" * 100_000 + b"]" * 100_000, ""),
    (json.dumps({"messages": [{"role": "user", "content": "x" * 40_000}]}).encode(), "limit"),
    (json.dumps({"messages": [{"role": "user", "content": "x" * 2_000_000}]}).encode(), "limit"),
]


def _post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", content=body, timeout=TIMEOUT_S,
                      headers={"content-type": "application/json"})


def _assert_openai_error(response: httpx.Response, hint: str = "") -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["message"] and hint.lower() in error["message"].lower(), error


def test_fuzzed_bodies_get_4xx_and_never_disturb_chat(instance: Instance, client: openai.OpenAI) -> None:
    url = _base_url(instance)
    pids = {name: instance.pid(name) for name in ("chat", "api")}
    turns_before = len(instance.events(TURN_TYPE))
    for body, hint in BAD_BODIES:
        _assert_openai_error(_post(url, body), hint)
    big = _post(url, b'{"messages": "' + b"x" * 1_100_000 + b'"}')
    assert big.status_code == 413, big.text[:200]
    assert httpx.get(url + "/v2/nothing", timeout=TIMEOUT_S).status_code == 404
    assert httpx.get(url + "/v1/chat/completions", timeout=TIMEOUT_S).status_code == 405

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                            st.sampled_from(["messages", "role", "content", "max_tokens", "stream", "stop", "x"]),
                            inner, max_size=4), max_leaves=12))
    def fuzz(value: Any) -> None:
        response = _post(url, json.dumps(value).encode())
        _assert_openai_error(response)

    fuzz()
    # Nothing reached chat, nothing crashed, and chat still answers.
    assert len(instance.events(TURN_TYPE)) == turns_before
    assert {name: instance.pid(name) for name in ("chat", "api")} == pids
    ok = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi."}], max_tokens=4)
    assert ok.choices[0].message.content


def test_api_survives_kill9_and_a_garbage_control_frame(instance: Instance, client: openai.OpenAI) -> None:
    import signal

    import zmq

    from protocol.codec import Codec
    from protocol.openai_api import ApiReply
    from protocol.service_api import ErrorReply

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(instance.paths.endpoint("api.ctl"))
    try:
        sock.send(b"\xc1 not msgpack")
        assert sock.poll(30_000), "api.ctl did not answer a garbage frame"
        assert isinstance(Codec(ApiReply).decode(sock.recv()), ErrorReply)
    finally:
        sock.close()

    messages = [{"role": "user", "content": "Say one word."}]
    first = client.chat.completions.create(model="any", messages=messages, max_tokens=4, temperature=0)
    old = instance.pid("api")
    os.kill(old, signal.SIGKILL)
    instance.wait_running("api", not_pid=old, timeout_s=60)
    instance.wait_ready("api", timeout_s=60)
    # A new port (port 0 in tests): a fresh client; the conversation goes on, seeded from the history.
    fresh = openai.OpenAI(base_url=_base_url(instance) + "/v1", api_key="x", timeout=TIMEOUT_S, max_retries=0)
    again = fresh.chat.completions.create(model="any", max_tokens=4, temperature=0, messages=[
        *messages, {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "Another."}])
    logged = _logged(instance, again.model_extra["circadian"]["seq"])
    assert logged["user_text"] == "Another." and logged["assistant_text"] == again.choices[0].message.content
    assert instance.pid("chat")  # chat never noticed


# -- a non-loopback bind needs the token --------------------------------------------

NETNS_ADDRESS = "10.77.0.1"


def _netns_or_skip() -> str:
    """A network namespace with a non-loopback address reachable only inside it."""
    name = f"circ-api-{os.getpid()}"
    ip = shutil.which("ip")
    if ip is None or os.geteuid() != 0:
        pytest.skip("needs root and iproute2 (`ip netns`) to bind a non-loopback address in a private namespace")
    setup = [[ip, "netns", "add", name], [ip, "netns", "exec", name, ip, "link", "set", "lo", "up"],
             [ip, "netns", "exec", name, ip, "addr", "add", f"{NETNS_ADDRESS}/32", "dev", "lo"]]
    for cmd in setup:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            subprocess.run([ip, "netns", "del", name], capture_output=True, timeout=30)
            pytest.skip(f"cannot make a network namespace here ({' '.join(cmd[1:4])}: {result.stderr.strip()})")
    return name


@pytest.fixture
def netns_instance() -> Iterator[tuple[Instance, str]]:
    ns = _netns_or_skip()
    home = make_home()
    inst = Instance(home)
    inst.env.update(CIRCADIAN_API_HOST=NETNS_ADDRESS, CIRCADIAN_API_PORT="0")
    try:
        up = inst.run(shutil.which("ip"), "netns", "exec", ns, str(CIRC), "up", "--timeout", "200", timeout_s=240)
        inst._remember_pids()
        assert up.returncode == 0, up.stderr + inst.logs()
        yield inst, ns
    finally:
        inst.teardown()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        remove_home(home)


CLIENT_SCRIPT = """
import json, sys, openai
base, key = sys.argv[1], sys.argv[2]
out = {}
try:
    openai.OpenAI(base_url=base, api_key="wrong", max_retries=0, timeout=120).models.list()
    out["wrong"] = 200
except openai.AuthenticationError as exc:
    out["wrong"] = exc.status_code
    out["message"] = exc.body["message"]
c = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)
r = c.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi."}], max_tokens=4)
out["ok"] = r.choices[0].message.content
print(json.dumps(out))
"""


def test_non_loopback_bind_requires_the_token(netns_instance: tuple[Instance, str]) -> None:
    inst, ns = netns_instance
    url = _base_url(inst)
    assert url.startswith(f"http://{NETNS_ADDRESS}:"), url
    token_file = inst.paths.keys / "api.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    shown = inst.circ("api", "token")
    assert shown.returncode == 0 and shown.stdout.strip() == token_file.read_text().strip()
    status = inst.circ("status")
    assert f"api: {url}/v1 (bearer token required" in status.stdout, status.stdout
    # The client runs inside the namespace: only there is the address reachable.
    no_header = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                                "import httpx2,sys; r=httpx2.get(sys.argv[1]+'/v1/models', timeout=60); "
                                "print(r.status_code)", url], capture_output=True, text=True, timeout=120)
    assert no_header.stdout.strip() == "401", no_header.stderr
    result = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT_SCRIPT, url + "/v1",
                             shown.stdout.strip()], capture_output=True, text=True, timeout=240, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["wrong"] == 401 and "circ api token" in out["message"], out
    assert out["ok"], out
