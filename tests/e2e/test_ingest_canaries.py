"""Canary secrets through the whole pipeline: nothing of them is remembered anywhere.

100 canaries (unique random tokens inside the PII and secret shapes the
redactor handles: e-mail addresses, phone numbers, Luhn-valid card numbers,
IBANs, AWS keys, GitHub tokens, JWTs, ``password=...``, private-key blocks)
are chatted in — some as real chat turns, most appended to the log as chat
appends them. Once ingest has handled them, no canary appears:

- in the memory index as a client sees it (recall answers, `circ memory list --json`);
- in any file under ``data/memory/`` (raw bytes), neither while ingest runs nor
  after it stopped cleanly (WAL checkpointed into the database, vectors saved);
- in ingest's logs (``data/logs/ingest.log*``) or the other files ingest
  writes (``data/state/``, ``data/inbox/``);

and every canary turn's decision event carries its redaction counts. ``#private``
turns leave nothing in ``data/memory/``. Finally `circ forget --match WORD --yes`
removes a memory from the index and its text from the log's files on disk,
and `circ log verify` still passes, reporting the audited erasure.

Tests in this module run in file order on one instance.
"""

from __future__ import annotations

import base64
import json
import os
import random
import string
import time
from dataclasses import dataclass
from pathlib import Path
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

CANARIES = 100
CHAT_CANARIES = 8  # of the CANARIES, sent as real chat turns
PRIVATE_TURNS = 6
CATCH_UP_TIMEOUT_S = 240.0
DECISIONS = ("memory.stored", "memory.skipped", "memory.failed")
PLACEHOLDER = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "iban": "[IBAN]", "secret": "[SECRET]"}
RECALL_QUERIES = ["what is my email address", "my phone number", "my credit card number", "my bank account IBAN",
                  "the AWS access key for deploys", "my github token", "the authorization header token",
                  "my password", "the server private key", "what should I remember", "invoices", "rent"]
SEED = int(os.environ.get("CIRCADIAN_E2E_SEED", "0")) or random.randrange(1, 2**31)
RNG = random.Random(SEED)


@dataclass(frozen=True)
class Canary:
    kind: str  # the redaction kind expected in the decision's counts
    shape: str
    text: str  # the user's message
    needles: tuple[str, ...]  # strings none of which may survive anywhere


def _tok(n: int, alphabet: str = string.ascii_lowercase + string.digits) -> str:
    return "".join(RNG.choice(alphabet) for _ in range(n))


def _digits(n: int) -> str:
    return "".join(RNG.choice(string.digits) for _ in range(n))


def _luhn(prefix: str, length: int) -> str:
    body = prefix + _digits(length - len(prefix) - 1)
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return body + str((10 - total % 10) % 10)


def _iban(country: str, bban_len: int) -> str:
    bban = _digits(bban_len)
    numeric = int(bban + "".join(str(ord(c) - 55) for c in country) + "00")
    return f"{country}{98 - numeric % 97:02d}{bban}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _group(s: str, n: int = 4) -> str:
    return " ".join(s[i:i + n] for i in range(0, len(s), n))


CONTEXTS = ["for the dentist's office", "because the bank asked again", "for the school trip form",
            "since my landlord needs it", "for the gym membership", "when the plumber comes on Tuesday",
            "for my tax return", "because we are moving to Utrecht", "for the wedding RSVP list",
            "for the car insurance renewal", "since the old one expired", "for the book club newsletter"]


def make_canary(n: int) -> Canary:
    shape = ["email", "phone", "card", "iban", "aws", "github", "jwt", "password", "pem"][n % 9]
    why = CONTEXTS[(n // 9) % len(CONTEXTS)]  # the same shape in different sentences: not duplicates
    match shape:
        case "email":
            local = f"canary.{_tok(10)}"
            return Canary("email", shape, f"Please remember my new email is {local}@example.com {why}.",
                          (local, f"{local}@example.com"))
        case "phone":
            exchange, line = RNG.choice("23456789") + _digits(2), _digits(4)
            if n % 2:
                return Canary("phone", shape, f"Please remember my phone number +1 415 {exchange} {line} {why}.",
                              (f"415 {exchange} {line}", f"415{exchange}{line}", f"{exchange} {line}"))
            mobile = "7700" + _digits(6)
            return Canary("phone", shape, f"My mobile is +44 {mobile[:4]} {mobile[4:]}, I gave it out {why}.",
                          (f"{mobile[:4]} {mobile[4:]}", mobile))
        case "card":
            card = _luhn(RNG.choice(["4", "51", "55"]), 16)
            return Canary("card", shape, f"Remember my card number is {_group(card)} {why}.",
                          (card, _group(card), card[-10:]))
        case "iban":
            iban = RNG.choice([_iban("DE", 18), _iban("FR", 23), _iban("ES", 20)])
            return Canary("iban", shape, f"I pay to IBAN {_group(iban)} {why}, remember that.",
                          (iban, _group(iban), iban[4:]))
        case "aws":
            key = "AKIA" + _tok(16, string.ascii_uppercase + string.digits)
            return Canary("secret", shape, f"The deploy job uses aws_access_key_id = {key} {why}.", (key, key[4:]))
        case "github":
            token = "ghp_" + _tok(36, string.ascii_letters + string.digits)
            return Canary("secret", shape, f"my github token is {token}, I made it {why}", (token, token[4:]))
        case "jwt":
            header = _b64url(b'{"alg":"HS256","typ":"JWT"}')
            payload = _b64url(json.dumps({"sub": _tok(12), "name": "canary", "iat": 1700000000}).encode())
            signature = _b64url(RNG.randbytes(32))
            jwt = f"{header}.{payload}.{signature}"
            return Canary("secret", shape, f"The API answered 401 although the Authorization header was {jwt} "
                                           f"({why}).", (jwt, payload, signature))
        case "password":
            value = "Zx" + _tok(12) + "!9"
            text = RNG.choice([f"password={value}", f"Remember: my password is {value}, I set it {why}."])
            return Canary("secret", shape, text, (value,))
        case _:
            lines = [base64.b64encode(RNG.randbytes(48)).decode() for _ in range(5)]
            block = "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *lines, "-----END RSA PRIVATE KEY-----"])
            return Canary("secret", shape, f"Here is the server key I made {why}, keep it safe:\n{block}\nthanks",
                          tuple(lines))


CANARY_LIST = [make_canary(n) for n in range(CANARIES)]
PRIVATE_WORDS = [f"zp{_tok(10)}" for _ in range(PRIVATE_TURNS)]
PRIVATE_TEXTS = [f"Diary: today I told my sister about the {word} plan, nobody else knows #private"
                 for word in PRIVATE_WORDS]
FORGET_WORD = f"quillon{_tok(8)}"
# Stored (a fact about the user), and a skipped exact duplicate of it.
FORGET_TEXTS = [f"Please remember that my bike lock code word is {FORGET_WORD}.",
                f"Please remember that my bike lock code word is {FORGET_WORD}."]


def _needles() -> dict[str, bytes]:
    return {f"{c.shape}#{i}:{needle}": needle.encode() for i, c in enumerate(CANARY_LIST) for needle in c.needles}


def _ask(instance: Instance, request: Any, timeout_s: float = 15.0) -> Any:
    client = RpcClient(instance.paths, "ingest", "ingest.ctl", IngestReply, timeout_s=timeout_s)
    try:
        return client.request(request)
    finally:
        client.close()


def _cursor(instance: Instance) -> int:
    try:
        return _ask(instance, GetMemoryStats(request_id="c-stats"), timeout_s=3.0).cursor_seq
    except (ServiceUnavailable, RemoteError):
        return -1


def _wait_handled(instance: Instance, seq: int) -> None:
    wait_until(lambda: _cursor(instance) >= seq, CATCH_UP_TIMEOUT_S, f"ingest to handle seq {seq}", interval_s=0.3)


def _all_memories(instance: Instance) -> list[Any]:
    out: list[Any] = []
    while True:
        page = _ask(instance, ListMemories(limit=500, offset=len(out), request_id="c-list")).memories
        if not page:
            return out
        out += page


def _append(instance: Instance, texts: list[str], tag: str) -> list[int]:
    log = EventlogClient(instance.paths, timeout_s=10.0)
    try:
        envelopes = []
        for n, text in enumerate(texts):
            rid = f"{tag}-{SEED:x}-{n:03d}"
            body = ChatTurnCompleted(session_id=f"{tag}-{SEED:x}-{n % 5}", turn_index=n // 5, user_text=text,
                                     assistant_text="Got it.", model="smollm2-135m-instruct", request_id=rid,
                                     completion_tokens=2, finish_reason="length")
            envelopes.append(new_envelope(body, source="chat", msg_id=f"turn-{rid}"))
        seqs: list[int] = []
        for start in range(0, len(envelopes), 10):
            seqs += log.append(envelopes[start:start + 10], retry_s=30).seqs
        return seqs
    finally:
        log.close()


def _chat(instance: Instance, texts: list[str], tag: str) -> list[int]:
    client = ChatClient(instance.paths, max_wait_s=120)
    try:
        return [client.complete(text, request_id=f"{tag}-{SEED:x}-{n:03d}", max_tokens=2).seq
                for n, text in enumerate(texts)]
    finally:
        client.close()


def _scan(paths: list[Path], needles: dict[str, bytes]) -> list[tuple[str, str]]:
    """(file, needle name) for every needle found in the raw bytes of ``paths`` (case-insensitive)."""
    hits = []
    for path in paths:
        try:
            data = path.read_bytes().lower()
        except (FileNotFoundError, IsADirectoryError):
            continue
        hits += [(str(path), name) for name, needle in needles.items() if needle.lower() in data]
    return hits


def _files(root: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in root.rglob(pattern) if p.is_file()) if root.exists() else []


def _ingest_files(instance: Instance) -> list[Path]:
    """Every file ingest writes: the index, its logs, state and the inbox."""
    data = instance.paths.data
    return (_files(data / "memory") + _files(data / "logs", "ingest.log*") + _files(data / "state")
            + _files(data / "inbox"))


@pytest.fixture(scope="module")
def canaries_in(instance: Instance) -> dict[int, Canary]:
    """All canaries and #private turns chatted in and handled by ingest; seq -> canary."""
    print(f"canary seed {SEED} (rerun with CIRCADIAN_E2E_SEED={SEED})")
    instance.wait_ready("ingest", timeout_s=60)
    for canary in CANARY_LIST:  # the premise: the redactor knows every shape used here
        from services.lib.privacy.redact import redact

        redacted = redact(canary.text)
        assert not [n for n in canary.needles if n in redacted.text], (canary.shape, redacted.text)
    chatted, appended = CANARY_LIST[:CHAT_CANARIES], CANARY_LIST[CHAT_CANARIES:]
    seqs = _chat(instance, [c.text for c in chatted], "cc")
    seqs += _append(instance, [c.text for c in appended], "ca")
    private_seqs = _append(instance, PRIVATE_TEXTS, "cp")
    _wait_handled(instance, max(seqs + private_seqs))
    return dict(zip(seqs, CANARY_LIST, strict=True))


def test_every_canary_turn_is_decided_with_its_redaction_counts(instance: Instance,
                                                                 canaries_in: dict[int, Canary]) -> None:
    decisions = {e["body"]["turn_seq"]: e for e in instance.events() if e["type"] in DECISIONS}
    stored: dict[str, int] = {}
    for seq, canary in canaries_in.items():
        event = decisions.get(seq)
        assert event is not None, f"no decision for the {canary.shape} canary turn at seq {seq}"
        assert event["type"] != "memory.failed", event["body"]
        counts = event["body"]["redactions"]
        assert counts.get(canary.kind, 0) >= 1, (canary.shape, canary.text, event["body"])
        stored[canary.shape] = stored.get(canary.shape, 0) + (event["type"] == "memory.stored")
    # Canary turns are facts worth keeping (those not duplicates of another after
    # redaction): the index really holds their redacted text, of every shape.
    print(f"canary turns stored, by shape: {stored}")
    assert all(stored.values()) and sum(stored.values()) >= CANARIES // 3, stored
    memories = {m.turn_seq: m for m in _all_memories(instance)}
    for seq, canary in canaries_in.items():
        if decisions[seq]["type"] == "memory.stored":
            assert PLACEHOLDER[canary.kind] in memories[seq].text, (canary.shape, memories[seq].text)


def test_no_canary_in_recall_or_memory_list(instance: Instance, canaries_in: dict[int, Canary]) -> None:
    needles = _needles()
    queries = RECALL_QUERIES + [c.needles[0] for c in CANARY_LIST[::5]]
    for query in queries:
        reply = _ask(instance, Recall(query=query, k=20, request_id="c-q"), timeout_s=30)
        for memory in reply.memories:
            leaked = [name for name, needle in needles.items() if needle.decode().lower() in memory.text.lower()]
            assert not leaked, f"recall for {query!r} returned canaries {leaked}: {memory.text!r}"
    listing = instance.circ("memory", "list", "--json", "--limit", "500")
    assert listing.returncode == 0, listing.stderr
    listed = json.loads(listing.stdout)
    assert listed["total"] >= CANARIES // 2 and len(listed["memories"]) == listed["total"]
    leaked = [name for name, needle in needles.items() if needle.decode().lower() in listing.stdout.lower()]
    assert not leaked, f"`circ memory list --json` shows canaries: {leaked[:10]}"


def test_no_canary_or_private_text_on_disk(instance: Instance, canaries_in: dict[int, Canary]) -> None:
    needles = _needles()
    private = {f"private:{word}": word.encode() for word in PRIVATE_WORDS}
    memory_dir = instance.paths.memory
    assert (memory_dir / "memories.db").stat().st_size > 0
    assert _files(instance.paths.logs, "ingest.log*"), "premise: ingest logs to data/logs/ingest.log"
    hits = _scan(_ingest_files(instance), needles) + _scan(_files(memory_dir), private)
    assert not hits, f"found while ingest runs: {hits[:10]}"
    # The premise of the scan: the raw log (the user's own record) does hold them.
    assert _scan([instance.paths.events_db, *instance.paths.events_db.parent.glob("*-wal")],
                 {"email": CANARY_LIST[0].needles[0].encode()})

    # Stop ingest cleanly: the WAL is checkpointed into memories.db, vectors.usearch saved.
    instance.supervisor.stop_process("ingest")
    try:
        wal = memory_dir / "memories.db-wal"
        assert not wal.exists() or wal.stat().st_size == 0
        assert (memory_dir / "vectors.usearch").exists()
        hits = _scan(_ingest_files(instance), needles) + _scan(_files(memory_dir), private)
    finally:
        # The instance is shared by the module's later tests: restart ingest
        # even when an assertion above fails, so one failure stays one.
        instance.supervisor.start_process("ingest")
        instance.wait_ready("ingest", timeout_s=60)
    assert not hits, f"found after a checkpoint: {hits[:10]}"


def test_private_turns_are_skipped_and_not_listed(instance: Instance, canaries_in: dict[int, Canary]) -> None:
    events = instance.events()
    private_seqs = [e["seq"] for e in events if e["type"] == TURN_TYPE and "#private" in e["body"]["user_text"]]
    assert len(private_seqs) == PRIVATE_TURNS
    decisions = {e["body"]["turn_seq"]: e for e in events if e["type"] in DECISIONS}
    for seq in private_seqs:
        assert decisions[seq]["type"] == "memory.skipped" and "#private" in decisions[seq]["body"]["reason"]
    assert not {m.turn_seq for m in _all_memories(instance)} & set(private_seqs)


def test_forget_erases_the_memory_and_the_logged_text(instance: Instance, canaries_in: dict[int, Canary]) -> None:
    seqs = _chat(instance, FORGET_TEXTS[:1], "cf") + _append(instance, FORGET_TEXTS[1:], "cf2")
    _wait_handled(instance, max(seqs))
    word = FORGET_WORD.encode()
    events_files = lambda: _files(instance.paths.events_db.parent)  # noqa: E731
    assert [m for m in _all_memories(instance) if FORGET_WORD in m.text], "the memory to forget was not stored"
    assert _scan(events_files(), {"word": word}), "premise: the log holds the turn's text"
    before = _ask(instance, GetMemoryStats(request_id="c-stats"))

    result = instance.circ("forget", "--match", FORGET_WORD, "--yes")
    assert result.returncode == 0, result.stderr
    assert "forgot 1 memories" in result.stdout and "erased 2 turn(s)" in result.stdout, result.stdout

    # Gone from the index: listing, recall, stats.
    assert not [m for m in _all_memories(instance) if FORGET_WORD in m.text]
    recalled = _ask(instance, Recall(query=f"my bike lock code word {FORGET_WORD}", k=20, request_id="c-q"))
    assert not [m for m in recalled.memories if FORGET_WORD in m.text]
    after = _ask(instance, GetMemoryStats(request_id="c-stats"))
    assert (after.memories, after.forgotten) == (before.memories - 1, before.forgotten + 1)

    # The logged event, and the turns' text erased in the log.
    events = instance.events()
    forgotten = [e for e in events if e["type"] == "memory.forgotten"]
    assert len(forgotten) == 1 and sorted(forgotten[0]["body"]["turn_seqs"]) == sorted(seqs)
    for e in events:
        if e["seq"] in seqs:
            assert e["body"]["erased"] and e["body"]["user_text"] == "" and e["body"]["assistant_text"] == ""

    # Gone from every file on disk: the log's database and WAL, and ingest's files.
    deadline = time.monotonic() + 10
    while (hits := _scan(events_files() + _ingest_files(instance), {"word": word})) and time.monotonic() < deadline:
        time.sleep(0.5)  # the eventlog checkpoints right after the erasing commit
    assert not hits, f"the forgotten word is still on disk in {hits}"

    verify = instance.circ("log", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("ok:") and "2 turn(s) erased by forget" in verify.stdout, verify.stdout
