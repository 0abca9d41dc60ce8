"""kill -9 of ingest while turns stream in: every turn decided once, the index equals a rebuild.

500 turns (facts about the user, code, small talk, exact and near duplicates,
PII, long multi-chunk pastes, ``#no-rag``/``#no-train``/``#private``) are
appended to the log the way chat appends them (``turn-<request_id>`` event
ids, several interleaved sessions), a few of them as real chat turns. Meanwhile
a background thread SIGKILLs ingest at random moments; supervisord restarts
it. Afterwards, once ingest's cursor has reached the last turn:

- every ``chat.turn_completed`` seq has exactly one decision event
  (``memory.stored`` | ``memory.skipped`` | ``memory.failed``, by ``turn_seq``);
- no memory id is stored twice, and the index holds exactly the memories the
  ``memory.stored`` events name (nothing lost, nothing extra);
- opt-out tags were honoured;
- the index equals a rebuild from the log (`circ memory rebuild`): the same
  memories (ids, texts, routes, chunks) and the same recall answers (ids in
  order) for 20 queries.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from protocol.envelope import new_envelope
from protocol.events import ChatTurnCompleted
from protocol.ingest_api import GetMemoryStats, IngestReply, ListMemories, Recall
from services.cli.chat_client import ChatClient
from services.common.eventlog_client import EventlogClient
from services.common.rpc import RemoteError, RpcClient, ServiceUnavailable

from .harness import TURN_TYPE, Instance, wait_until

pytestmark = pytest.mark.e2e

TURNS = 500
CHAT_TURNS = 4  # of the TURNS, sent through chat for real (the rest appended as chat does)
SESSIONS = 7
BATCH = 5  # turns per append: a user base chatting briskly, not one giant burst
BATCH_PAUSE_S = 0.15  # ~15 s of streaming at least: the kills land while turns arrive
KILLS = 6
# supervisord counts a death within startsecs (1 s) as a failed start: only
# kill an ingest that has been up a little longer (and has answered a ping).
MIN_UPTIME_S = 2.0
CATCH_UP_TIMEOUT_S = 180.0
REBUILD_TIMEOUT_S = 240.0
DECISIONS = ("memory.stored", "memory.skipped", "memory.failed")
RECALL_K = 8

SUBJECTS = ["favourite colour", "gym locker number", "dentist", "favourite band", "home town",
            "car", "favourite food", "cat's name", "morning routine", "team at work", "allotment plot",
            "book club book", "running shoe size", "coffee order", "piano teacher"]
VALUES = ["teal", "forty-two", "Dr. Okafor on Elm Street", "Radiohead", "Ghent", "a green Skoda",
          "mushroom risotto", "Biscuit", "cold shower then tea", "the payments team", "number 17",
          "The Left Hand of Darkness", "44.5", "flat white with oat milk", "Mrs. Lindqvist"]
SMALL_TALK = ["hi", "thanks!", "ok", "lol", "good morning", "nice", "bye", "hmm", "cool", "thank you"]
QUERIES = ["what is my favourite colour", "where is my gym locker", "who is my dentist",
           "which band do I like", "where did I grow up", "what car do I drive", "what food do I like",
           "what is my cat called", "how do I start my morning", "which team do I work in",
           "python function that parses a config", "what book are we reading", "what shoe size do I run in",
           "how do I take my coffee", "who teaches me piano", "my email address", "bug in the sort function",
           "allotment", "the meeting notes from the long paste", "a reminder about the trip"]


def _nonce(rng: random.Random) -> str:
    """A made-up word, so facts differ from one another and stay recognisable."""
    return "".join(rng.choice("bcdfgklmnprstvz") + rng.choice("aeiou") for _ in range(3))


def _long_paste(rng: random.Random, n: int) -> str:
    words = ["meeting", "notes", "budget", "timeline", "review", "deploy", "customer", "feedback", "trip",
             "reminder", "agenda", "follow-up", "owner", "risk", "milestone", "draft", "launch", "metric"]
    body = " ".join(rng.choice(words) for _ in range(420))
    return f"Meeting notes {n} ({_nonce(rng)}): {body}."


def script(seed: int) -> list[tuple[str, str]]:
    """(kind, user_text) for every turn: a realistic, seeded mix."""
    rng = random.Random(seed)
    facts: list[str] = []
    turns: list[tuple[str, str]] = []
    kinds = (["fact"] * 30 + ["code"] * 12 + ["small"] * 14 + ["dup"] * 9 + ["near"] * 5 + ["pii"] * 10
             + ["no-rag"] * 5 + ["no-train"] * 5 + ["private"] * 5 + ["long"] * 2 + ["question"] * 3)
    # A few turns go through chat itself, spread over the stream.
    chat_positions = set(rng.sample(range(20, TURNS - 20), CHAT_TURNS))
    for n in range(TURNS):
        kind = rng.choice(kinds) if n > 5 else "fact"
        if kind in ("dup", "near") and not facts:
            kind = "fact"
        if n in chat_positions:
            kind = "chat"
        match kind:
            case "chat":
                text = (f"Please remember that my {SUBJECTS[n % len(SUBJECTS)]} is {VALUES[n % len(VALUES)]} "
                        f"(chat {_nonce(rng)}).")
            case "fact":
                i = rng.randrange(len(SUBJECTS))
                text = f"Please remember that my {SUBJECTS[i]} is {VALUES[i]} (note {_nonce(rng)})."
                facts.append(text)
            case "code":
                name = f"parse_{_nonce(rng)}"
                text = (f"Why does this crash?\n```python\ndef {name}(path):\n    with open(path) as f:\n"
                        f"        return sorted(f.read().split(), key=int)[{rng.randrange(9)}]\n```")
            case "small":
                text = rng.choice(SMALL_TALK)
            case "dup":  # the same fact again (spacing around it does not make it new)
                text = rng.choice(facts)
                text = rng.choice([text, f" {text}", f"{text}  ", f"\n{text}\n"])
            case "near":
                text = rng.choice(facts).rstrip(".") + "!!"
            case "pii":
                text = rng.choice([
                    f"My email is {_nonce(rng)}.{rng.randrange(999)}@example.org, write me there.",
                    f"Call me on +44 7700 900{rng.randrange(100, 999)} if the delivery is late.",
                    f"My password is Zq{_nonce(rng)}!{rng.randrange(99)} for the home router, remember it.",
                ])
            case "no-rag" | "no-train" | "private":
                i = rng.randrange(len(SUBJECTS))
                text = f"I like to keep my {SUBJECTS[i]} to myself: {VALUES[i]} {_nonce(rng)} #{kind}"
            case "long":
                text = _long_paste(rng, n)
            case _:
                text = rng.choice(["what time is it?", "can you help me?", "is it going to rain today?"])
        turns.append((kind, text))
    return turns


@dataclass
class Kills:
    pids: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _ingest(instance: Instance, timeout_s: float = 10.0) -> RpcClient:
    return RpcClient(instance.paths, "ingest", "ingest.ctl", IngestReply, timeout_s=timeout_s)


def _ask(instance: Instance, request: Any, timeout_s: float = 10.0) -> Any:
    client = _ingest(instance, timeout_s)
    try:
        return client.request(request)
    finally:
        client.close()


def _cursor(instance: Instance) -> int:
    try:
        return _ask(instance, GetMemoryStats(request_id="k9-stats"), timeout_s=3.0).cursor_seq
    except (ServiceUnavailable, RemoteError):
        return -1


def killer(instance: Instance, stop: threading.Event, kills: Kills, seed: int) -> None:
    """SIGKILL ingest KILLS times, each at a random moment once it has been up a while."""
    from services.cli.daemons import ping

    rng = random.Random(seed + 1)
    try:
        while len(kills.pids) < KILLS and not stop.is_set():
            if stop.wait(rng.uniform(0.3, 2.5)):
                return
            deadline = time.monotonic() + 60
            while not stop.is_set():
                proc = instance.procs().get("ingest")
                if (proc is not None and proc.state == "RUNNING" and proc.uptime_s >= MIN_UPTIME_S
                        and proc.pid not in kills.pids):
                    pong = ping(instance.paths, "ingest", timeout_s=1.0)
                    if pong is not None and pong.ready and pong.pid == proc.pid:
                        break
                if time.monotonic() > deadline:
                    kills.errors.append("ingest did not come back within 60 s")
                    return
                stop.wait(0.1)
            else:
                return
            # Land anywhere: mid-embedding, between the decision event and the
            # index commit, while answering a recall, or idle.
            if stop.wait(rng.uniform(0.0, 0.8)):
                return
            instance.started_pids.add(proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
            kills.pids.append(proc.pid)
    except Exception as exc:  # reported by the test, not lost in the thread
        kills.errors.append(repr(exc))


def _chat_turn(instance: Instance, client: ChatClient, text: str, request_id: str) -> int:
    """One real chat turn (small max_tokens), resent with the same id if chat hiccups."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return client.complete(text, request_id=request_id, max_tokens=2).seq
        except (ServiceUnavailable, RemoteError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"chat turn {request_id} failed: {exc}\n{instance.logs()}") from exc
            client.close()
            time.sleep(0.5)


def stream(instance: Instance, turns: list[tuple[str, str]], seed: int) -> dict[int, tuple[str, str]]:
    """Send every turn; return seq -> (kind, user_text)."""
    log = EventlogClient(instance.paths, timeout_s=10.0)
    chat = ChatClient(instance.paths, max_wait_s=120)
    turn_index: Counter[str] = Counter()
    sent: dict[int, tuple[str, str]] = {}
    pending: list[tuple[Any, str, str]] = []

    def flush() -> None:
        if pending:
            seqs = log.append([env for env, _, _ in pending], retry_s=30).seqs
            sent.update({seq: (kind, text) for seq, (_, kind, text) in zip(seqs, pending, strict=True)})
            pending.clear()
            time.sleep(BATCH_PAUSE_S)

    try:
        for n, (kind, text) in enumerate(turns):
            request_id = f"k9{seed:x}-{n:03d}"
            if kind == "chat":
                flush()
                sent[_chat_turn(instance, chat, text, request_id)] = (kind, text)
                continue
            session = f"k9-{seed:x}-{n % SESSIONS}"
            body = ChatTurnCompleted(session_id=session, turn_index=turn_index[session], user_text=text,
                                     assistant_text="Noted.", model="smollm2-135m-instruct",
                                     request_id=request_id, prompt_tokens=40 + n % 30, completion_tokens=2,
                                     finish_reason="length")
            turn_index[session] += 1
            pending.append((new_envelope(body, source="chat", msg_id=f"turn-{request_id}"), kind, text))
            if len(pending) >= BATCH:
                flush()
        flush()
    finally:
        log.close()
        chat.close()
    return sent


def all_memories(instance: Instance) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = _ask(instance, ListMemories(limit=500, offset=len(out), request_id="k9-list"))
        out += [{"id": m.memory_id, "seq": m.turn_seq, "chunk": m.chunk, "route": m.route, "text": m.text,
                 "tags": list(m.tags), "session": m.session_id} for m in page.memories]
        if not page.memories:
            return out


def recall_answers(instance: Instance) -> dict[str, list[tuple[str, float]]]:
    return {q: [(m.memory_id, m.score) for m in _ask(instance, Recall(query=q, k=RECALL_K, request_id="k9-q"),
                                                      timeout_s=30.0).memories]
            for q in QUERIES}


@pytest.mark.timeout(600)
def test_ingest_decides_every_turn_once_under_kill9_and_matches_a_rebuild(instance: Instance) -> None:
    seed = int(os.environ.get("CIRCADIAN_E2E_SEED", "0")) or random.randrange(1, 2**31)
    print(f"ingest kill -9 seed {seed} (rerun with CIRCADIAN_E2E_SEED={seed})")
    instance.wait_ready("ingest", timeout_s=60)
    first_pid = instance.pid("ingest")
    turns = script(seed)

    stop, kills = threading.Event(), Kills()
    thread = threading.Thread(target=killer, args=(instance, stop, kills, seed), name="killer", daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        sent = stream(instance, turns, seed)
        streamed_s = time.monotonic() - started
        last_turn = max(sent)
        # Keep killing while ingest works through the backlog.
        wait_until(lambda: len(kills.pids) >= KILLS or kills.errors or _cursor(instance) >= last_turn,
                   CATCH_UP_TIMEOUT_S, "the kills or ingest's catch-up", interval_s=0.3)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not kills.errors, kills.errors
    instance.wait_running("ingest", timeout_s=60)
    instance.wait_ready("ingest", timeout_s=60)
    wait_until(lambda: _cursor(instance) >= last_turn, CATCH_UP_TIMEOUT_S,
               f"ingest's cursor to reach seq {last_turn}", interval_s=0.3)
    caught_up_s = time.monotonic() - started
    print(f"{len(sent)} turns streamed in {streamed_s:.1f} s, ingest caught up at {caught_up_s:.1f} s; "
          f"killed ingest {len(kills.pids)} times: {kills.pids}")
    assert len(kills.pids) >= 3, f"only {len(kills.pids)} kills landed before ingest caught up"
    assert instance.pid("ingest") not in [first_pid, *kills.pids]

    events = instance.events()
    turns_logged = {e["seq"]: e for e in events if e["type"] == TURN_TYPE}
    assert set(turns_logged) == set(sent), "the log does not hold exactly the turns sent"

    # -- exactly one decision per turn ------------------------------------------
    decisions = [e for e in events if e["type"] in DECISIONS]
    per_turn = Counter(e["body"]["turn_seq"] for e in decisions)
    twice = {seq: n for seq, n in per_turn.items() if n > 1}
    assert not twice, f"turns decided more than once: {twice}"
    undecided = sorted(set(turns_logged) - set(per_turn))
    assert not undecided, f"turns without a decision event: {undecided}"
    stray = sorted(set(per_turn) - set(turns_logged))
    assert not stray, f"decisions naming no logged turn: {stray}"
    for e in decisions:
        assert e["event_id"] == f"mem-{e['body']['turn_seq']}", e
        assert e["seq"] > e["body"]["turn_seq"]
    decision_of = {e["body"]["turn_seq"]: e for e in decisions}
    failed = {seq: e["body"] for seq, e in decision_of.items() if e["type"] == "memory.failed"}
    assert not failed, f"turns that failed: {failed}"

    # -- no memory stored twice; the index holds exactly what the log says --------
    stored_ids = [mid for e in decisions if e["type"] == "memory.stored" for mid in e["body"]["memory_ids"]]
    assert len(stored_ids) == len(set(stored_ids)), \
        f"memory ids stored twice: {[m for m, n in Counter(stored_ids).items() if n > 1]}"
    live = all_memories(instance)
    live_ids = [m["id"] for m in live]
    assert len(live_ids) == len(set(live_ids)), "the index lists a memory twice"
    assert set(live_ids) == set(stored_ids), (
        f"index and log disagree: only in the index {sorted(set(live_ids) - set(stored_ids))[:10]}, "
        f"only in memory.stored {sorted(set(stored_ids) - set(live_ids))[:10]}")
    stats = _ask(instance, GetMemoryStats(request_id="k9-stats"))
    assert stats.memories == len(live_ids) and stats.forgotten == 0
    for m in live:
        event = decision_of[m["seq"]]
        assert event["type"] == "memory.stored" and m["id"] in event["body"]["memory_ids"]
        assert m["route"] == event["body"]["route"]
    kinds = Counter(e["type"] for e in decisions)
    print(f"decisions: {dict(kinds)}; {len(live_ids)} memories by route {stats.by_route}")
    assert kinds["memory.stored"] >= 100 and kinds["memory.skipped"] >= 50  # the mix did its job
    assert any(len(e["body"]["memory_ids"]) > 1 for e in decisions if e["type"] == "memory.stored"), \
        "no long paste was stored in several chunks"

    # -- opt-outs and duplicates ------------------------------------------------
    for seq, (kind, text) in sent.items():
        body, type_ = decision_of[seq]["body"], decision_of[seq]["type"]
        if kind == "private":
            assert type_ == "memory.skipped" and "#private" in body["reason"], (text, body)
        elif kind == "no-rag" and type_ == "memory.stored":
            assert body["route"] == "lora", (text, body)
        elif kind == "no-train" and type_ == "memory.stored":
            assert body["route"] == "rag", (text, body)
        elif kind == "dup":
            assert type_ == "memory.skipped" and "duplicate" in body["reason"], (text, body)
    private_words = {text.split()[-2] for kind, text in sent.values() if kind == "private"}
    leaked = [m for m in live if any(word in m["text"] for word in private_words)]
    assert not leaked, f"#private turns in the index: {leaked}"
    assert not any("#no-" in m["text"] or "#private" in m["text"] for m in live), "tags stored as content"

    # -- the index equals a rebuild from the log ----------------------------------
    before_recall = recall_answers(instance)
    assert sum(len(v) for v in before_recall.values()) > 0
    head_before = events[-1]["seq"]
    rebuild_started = time.monotonic()
    rebuilt = instance.circ("memory", "rebuild", timeout_s=REBUILD_TIMEOUT_S)
    print(f"circ memory rebuild took {time.monotonic() - rebuild_started:.1f} s")
    assert rebuilt.returncode == 0, f"circ memory rebuild failed:\n{rebuilt.stderr}\n{instance.logs()}"
    assert "rebuilt the memory index" in rebuilt.stderr
    instance.wait_ready("ingest", timeout_s=60)
    wait_until(lambda: _cursor(instance) >= last_turn, 60, "ingest's cursor after the rebuild")
    after = all_memories(instance)
    key = lambda m: m["id"]  # noqa: E731
    assert sorted(after, key=key) == sorted(live, key=key), _diff(live, after)
    after_recall = recall_answers(instance)
    for query in QUERIES:
        before_ids = [mid for mid, _ in before_recall[query]]
        after_ids = [mid for mid, _ in after_recall[query]]
        assert after_ids == before_ids, f"recall for {query!r} differs after the rebuild"
        for (_, s1), (_, s2) in zip(before_recall[query], after_recall[query], strict=True):
            assert abs(s1 - s2) < 1e-3, (query, s1, s2)
    # Restarting on the rebuilt index decided nothing again.
    time.sleep(1.5)
    later = instance.events()
    again = [e for e in later[len(events):] if e["type"] in DECISIONS]
    assert not again, f"decisions logged again after the rebuild: {again[:3]}"
    assert not (instance.paths.data / "memory.rebuild").exists()
    assert not list(instance.paths.data.glob("memory.old-*"))
    assert later[-1]["seq"] >= head_before


def _diff(before: list[dict], after: list[dict]) -> str:
    b = {m["id"]: m for m in before}
    a = {m["id"]: m for m in after}
    changed = [(b[i], a[i]) for i in set(a) & set(b) if a[i] != b[i]]
    return (f"only live: {sorted(set(b) - set(a))[:10]}; only rebuilt: {sorted(set(a) - set(b))[:10]}; "
            f"changed: {changed[:3]}")


@pytest.mark.timeout(300)
def test_an_import_lost_with_a_killed_ingest_is_resent_to_the_restarted_one(instance: Instance, tmp_path) -> None:
    """`circ import` whose request reached an ingest that then dies completes through the new one, once.

    Found by `circ bench chaos`: the request died with the killed ingest and the
    CLI waited its whole 300 s timeout. Made deterministic here: ingest is
    stopped (SIGSTOP) so the request waits in its socket, then killed -9;
    supervisord starts a new ingest, which the CLI must notice and ask again.
    """
    import json
    import subprocess

    from services.common.digest import bytes_sha256

    from .harness import CIRC

    instance.wait_ready("ingest", timeout_s=60)
    wait_until(lambda: (p := instance.procs()["ingest"]).state == "RUNNING" and p.uptime_s >= 2, 30,
               "ingest up for 2 s")
    pid = instance.pid("ingest")
    nonce = os.urandom(6).hex()
    data = "".join(json.dumps({"messages": [{"role": "user", "content": f"My locker is number {n} ({nonce})."},
                                            {"role": "assistant", "content": "Noted."}]}) + "\n" for n in (7, 8))
    path = tmp_path / "lost-import.jsonl"
    path.write_text(data)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        proc = subprocess.Popen([str(CIRC), "import", str(path)], env=instance.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        time.sleep(10)  # the CLI starts, finds ingest not answering, sends: the request waits at the stopped one
    finally:
        os.kill(pid, signal.SIGKILL)  # a stopped process dies of SIGKILL too
    out, err = proc.communicate(timeout=150)
    took_s = time.monotonic() - started
    print(f"circ import took {took_s:.1f} s across the restart")
    assert proc.returncode == 0, f"circ import failed ({proc.returncode}): {err}"
    assert "imported 2 turns" in out, out
    instance.wait_running("ingest", not_pid=pid, timeout_s=60)
    sha24 = bytes_sha256(data.encode())[:24]
    logged = Counter(e["event_id"] for e in instance.events(TURN_TYPE) if e["event_id"].startswith(f"imp-{sha24}-"))
    assert logged == {f"imp-{sha24}-0": 1, f"imp-{sha24}-1": 1}, logged
