#!/usr/bin/env python
"""Ingest throughput: turns/s through the socket-free IngestCore, per-stage shares, and through the daemons.

Usage: .venv/bin/python bench/bench_ingest.py [--quick] [--turns 500] [--seed 0]
       [--no-daemon] [--blas-threads 1] [--wait-quiet 0] [--keep-home]

The turns: a deterministic, realistic mix (:func:`turn_mix`) of facts about
the user (people, pets, projects), first-person remarks, small talk, bare
questions, code and config pastes, turns carrying PII (e-mail, phone, IBAN,
card, address, API keys, passwords), long pastes (notes, articles, logs:
250-950 words, so several chunks each: services/ingest/chunks.py), and a few ``#private`` and
empty turns. ``--turns`` of them (default
500; ``--quick`` 100); the JSON lists how many of each kind.

(a) in process: ``IngestCore`` with the real ``Embedder`` (MiniLM in MLX),
    ``MemoryIndex`` (SQLite + usearch, in a temp dir under /tmp), redactor and
    ``LearnedRouter`` (``route_model.load_or_train``: the cached weights when
    they still fit). ``emit`` is a no-op. The embedder is warmed up first.
    ``turns_per_s`` = turns / sum of ``core.handle`` times. Stage shares of
    that time: ``redact``, ``route``, ``embed``, ``index`` (``index.add``:
    the SQLite commit with the cursor, synchronous=FULL, plus the usearch
    insert; skipped turns commit the cursor too) come from
    ``IngestCore.counters``; ``dedupe`` (``has_text`` + ``find_duplicate``,
    timed through a proxy of the index) and ``emit`` are timed here;
    ``other`` is the rest (tags, chunking, events, envelopes).
(b) through the daemons (skip with ``--no-daemon``): ``services.eventlog``
    and ``services.ingest`` as subprocesses in a temp ``CIRCADIAN_HOME``
    (same router cache, same ``OPENBLAS_NUM_THREADS``); after a few warm-up
    turns, the same turns are appended with ``EventlogClient`` (acked, 50 per
    request) and timed until ingest's cursor (its Ping ``cursor_seq``) reaches
    the last turn's seq. Here each turn's decision event is a real acked
    append to the log. ``daemon_over_in_process`` = daemon turns/s / in-process
    turns/s, in the same run.

``OPENBLAS_NUM_THREADS`` defaults to 1, as supervisord runs ingest
(``--blas-threads`` to change it); it must be set before OpenBLAS loads.
"""

from __future__ import annotations

import os
import sys

# Before OpenBLAS is loaded (preload_openblas below): ingest runs with one BLAS thread.
for _i, _arg in enumerate(sys.argv):
    if _arg.startswith("--blas-threads="):
        os.environ["OPENBLAS_NUM_THREADS"] = _arg.split("=", 1)[1]
    elif _arg == "--blas-threads" and _i + 1 < len(sys.argv):
        os.environ["OPENBLAS_NUM_THREADS"] = sys.argv[_i + 1]
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO_ROOT, emit, fail, machine_load, progress, wait_quiet  # noqa: E402

# Before anything imports mlx (the embedder does).
from services.common.blas import preload_openblas  # noqa: E402

BLAS = preload_openblas()

PROG = "bench_ingest"
CURSOR_TIMEOUT_S = 900.0

# -- the turn mix ---------------------------------------------------------------

MIX_WEIGHTS = {"fact": 0.24, "statement": 0.14, "small_talk": 0.12, "question": 0.14, "code": 0.12,
               "pii": 0.14, "long_paste": 0.06, "private": 0.02, "empty": 0.02}

FIRST = ("Elodie Marta Bram Sven Aiko Chidi Ines Pavel Greta Rohan Lucia Tariq Freya Nikolai Zainab Hugo "
         "Mirela Odile Kwame Astrid Bjorn Leila Teodor Yara Malik Signe Quentin Hana Emeka Vera").split()
LAST = ("Lindqvist Moreau Okonkwo Fischer Nakamura Silva Novak Haddad Kowalski Brennan Marchetti Varga "
        "Osei Jansen Castillo Ferreira Ivanova Dubois").split()
CITIES = ("Ghent Oslo Valencia Krakow Tampere Bologna Lyon Utrecht Graz Porto Cork Bergen Malmo Seville "
          "Brno Tartu Aarhus Ljubljana").split()
RELATIONS = ("cousin colleague friend neighbour boss sister-in-law nephew flatmate client teammate "
             "brother-in-law classmate").split()
JOBS = ("nurse pilot carpenter data analyst pharmacist translator architect electrician chef "
        "primary school teacher firefighter librarian").split(" ")
FOODS = "shellfish gluten sesame kiwi strawberries dairy eggs soy".split()
SKILLS = "Japanese pottery salsa dancing the accordion sailing woodworking Portuguese rock climbing".split(" ")
SPORTS = "badminton water polo squash ice hockey volleyball table tennis rugby".split(" ")
MONTHS = "January February March April May June July August September October November December".split()
PETS = "dog cat rabbit parrot hamster tortoise ferret guinea pig".split(" ")
PET_NAMES = "Waffles Pepper Noodle Ziggy Mochi Tofu Nugget Bramble Sprout Gizmo Truffle Dumpling".split()
CODENAMES = "Kingfisher Obsidian Tamarind Quasar Halyard Marigold Tundra Ferrite Cirrus Pinnacle".split()


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _fact(rnd: random.Random) -> str:
    name, rel, city = rnd.choice(FIRST), rnd.choice(RELATIONS), rnd.choice(CITIES)
    kind = rnd.random()
    if kind < 0.6:
        pred = rnd.choice([
            f"lives in {city}", f"works as {_a(rnd.choice(JOBS))}", f"is allergic to {rnd.choice(FOODS)}",
            f"moved to {city} last {rnd.choice(MONTHS)}", f"is learning {rnd.choice(SKILLS)}",
            f"has a birthday on {rnd.choice(MONTHS)} {rnd.randint(1, 28)}",
            f"plays {rnd.choice(SPORTS)} on weekends", f"runs a small bookshop in {city}",
            f"just started a new job as {_a(rnd.choice(JOBS))} in {city}"])
        return rnd.choice([f"My {rel} {name} {pred}.", f"{name}, my {rel}, {pred}.",
                           f"Please remember that my {rel} {name} {pred}.",
                           f"Just so you know, {name} (my {rel}) {pred}, in case it comes up."])
    if kind < 0.8:
        pet, pet_name = rnd.choice(PETS), rnd.choice(PET_NAMES)
        pred = rnd.choice([f"is {rnd.randint(2, 14)} years old", "hates the vacuum cleaner",
                           "needs a special diet for his stomach", f"was adopted from a shelter in {city}",
                           "sleeps on the radiator all winter", "goes to the vet every spring for vaccines"])
        return rnd.choice([f"My {pet} {pet_name} {pred}.", f"Our {pet} is called {pet_name} and {pred}."])
    code = rnd.choice(CODENAMES)
    pred = rnd.choice([f"is due at the end of {rnd.choice(MONTHS)}", "moves our reporting to a data warehouse",
                       f"is run out of the {city} office", "is blocked on the security review",
                       "replaces the old customer portal", "uses Kotlin for the Android client"])
    return rnd.choice([f"Project {code} {pred}.", f"At work, the {code} project {pred}.",
                       f"I'm leading {code} now; it {pred}."])


def _statement(rnd: random.Random) -> str:
    city, rel = rnd.choice(CITIES), rnd.choice(RELATIONS + ["sister", "dad", "partner"])
    return rnd.choice([
        f"I think {city} is a bit overrated in summer, far too many tourists.",
        f"I've been trying to {rnd.choice(['meditate', 'stretch', 'journal', 'run', 'read'])} every morning this month.",
        f"We watched a {rnd.choice(['horror', 'documentary', 'romantic', 'sci-fi', 'heist'])} film last night "
        f"and it was {rnd.choice(['great', 'dull', 'too long', 'surprisingly good'])}.",
        f"My {rel} and I went {rnd.choice(['bowling', 'hiking', 'to a concert', 'kayaking'])} last "
        f"{rnd.choice(['weekend', 'Sunday', 'Friday'])}.",
        f"I prefer {rnd.choice(['tea', 'paper notebooks', 'trains', 'dark mode'])} over "
        f"{rnd.choice(['coffee', 'apps', 'planes', 'light mode'])}, honestly.",
        f"I finally fixed the {rnd.choice(['leaky tap', 'squeaky door', 'wobbly shelf'])} in the "
        f"{rnd.choice(['kitchen', 'bathroom', 'hallway'])}.",
        f"The weather in {city} was {rnd.choice(['grey', 'glorious', 'stormy', 'freezing'])} all week.",
        "I'm not a fan of open-plan offices, the noise makes it hard for me to focus.",
        f"I've started cycling to work on {rnd.choice(['Mondays', 'Wednesdays', 'sunny days'])}.",
        f"Our team decided to stop doing {rnd.choice(['daily standups', 'story points', 'Friday demos'])}."])


SMALL_TALK = ["hi", "hello!", "hey", "thanks!", "thank you", "ok", "okay", "cool", "nice", "great",
              "bye", "good morning", "good night", "lol", "haha", "yes", "no", "sure", "hmm", "wow", "thx",
              "thanks, that helped a lot", "ok cool, got it", "perfect, thank you so much!"]


def _question(rnd: random.Random) -> str:
    return rnd.choice([
        f"How do I {rnd.choice(['reverse a list', 'read a CSV file', 'sort a dict by value', 'parse JSON', 'format a date', 'remove duplicates from an array'])} "
        f"in {rnd.choice(['Python', 'JavaScript', 'Rust', 'Go', 'Java', 'bash'])}?",
        f"What's the difference between {rnd.choice(['TCP and UDP', 'a process and a thread', 'affect and effect', 'weather and climate', 'git merge and git rebase'])}?",
        f"Can you explain {rnd.choice(['compound interest', 'how vaccines work', 'the CAP theorem', 'photosynthesis', 'inflation'])} simply?",
        f"What is the capital of {rnd.choice(['Australia', 'Canada', 'Mongolia', 'Chile', 'Kenya', 'Slovenia'])}?",
        f"How long should I boil {rnd.choice(['an egg', 'pasta', 'rice', 'potatoes'])}?",
        f"Can you write a short poem about {rnd.choice(['autumn', 'the sea', 'a lighthouse', 'coffee'])}?",
        f"Why does {rnd.choice(['bread go stale', 'the moon look bigger near the horizon', 'ice float'])}?",
        f"Could you help me draft an email to my {rnd.choice(['landlord', 'manager', 'teacher'])} about "
        f"{rnd.choice(['a broken heater', 'taking Friday off', 'a late assignment'])}?"])


def _code(rnd: random.Random) -> str:
    fn = rnd.choice(["load_config", "parse_rows", "retry_request", "merge_users", "compute_totals"])
    n = rnd.randint(2, 99)
    return rnd.choice([
        f"why does this fail?\n```python\ndef {fn}(path, limit={n}):\n    with open(path) as fh:\n"
        f"        rows = [line.split(',') for line in fh]\n    return rows[:limit]\n\nprint({fn}('data.csv'))\n```",
        f"SELECT u.id, u.email, COUNT(o.id) AS orders\nFROM users u LEFT JOIN orders o ON o.user_id = u.id\n"
        f"WHERE o.created_at > now() - interval '{n} days'\nGROUP BY u.id, u.email\nORDER BY orders DESC;",
        f"const {fn} = async (url) => {{\n  const res = await fetch(url, {{ timeout: {n * 100} }});\n"
        f"  if (!res.ok) throw new Error(res.status);\n  return res.json();\n}};",
        f'{{"service": "{fn}", "replicas": {n % 7 + 1}, "env": {{"LOG_LEVEL": "debug", "PORT": {8000 + n}}}}}',
        f"for f in *.log; do\n    gzip -{n % 9 + 1} \"$f\"\ndone\nls -lh *.gz | sort -k5 -h",
        f"Traceback (most recent call last):\n  File \"app.py\", line {n}, in <module>\n    {fn}()\n"
        f"KeyError: 'user_{n}'"])


def _iban(rnd: random.Random) -> str:
    bban = "".join(str(rnd.randint(0, 9)) for _ in range(18))
    numeric = int(bban + "131400")  # "DE00" with D=13, E=14
    return f"DE{98 - numeric % 97:02d}{bban}"


def _card(rnd: random.Random) -> str:
    digits = [4] + [rnd.randint(0, 9) for _ in range(14)]
    total = sum(d if i % 2 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(reversed(digits)))
    digits.append((10 - total % 10) % 10)
    s = "".join(map(str, digits))
    return " ".join(s[i:i + 4] for i in range(0, 16, 4))


def _pii(rnd: random.Random) -> str:
    first, last = rnd.choice(FIRST), rnd.choice(LAST)
    return rnd.choice([
        f"My email is {first.lower()}.{last.lower()}@example.org, please use that for the invoice.",
        f"You can reach me on +44 7700 900{rnd.randint(100, 999)} after six.",
        f"My IBAN is {_iban(rnd)}, the rent goes there every month.",
        f"My card number is {_card(rnd)} and it expires {rnd.randint(1, 12):02d}/{rnd.randint(26, 31)}.",
        f"Please ship it to {rnd.randint(10, 999)} Maple Street, Springfield, IL 62704.",
        f"My name is {first} {last} and I need to update my booking.",
        f"The staging server is at 10.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}, "
        "ssh in as deploy.",
        f"my password for the wifi is {rnd.choice(['Tr0ub4dor', 'hunter2x', 'S3cure!pass'])}{rnd.randint(10, 99)}",
        f"Here is my API key: sk-{''.join(rnd.choice('abcdefghijklmnopqrstuvwxyz0123456789') for _ in range(40))}",
        f"Dear Dr. {last}, I would like to move my appointment to next week."])


_PASTE_SENTENCES = [
    "The meeting started with a review of last quarter's numbers, which came in slightly under forecast.",
    "Revenue from the subscription tier grew by eight percent, mostly driven by the annual plan.",
    "Support tickets about login problems doubled after the identity provider change.",
    "The team agreed to freeze new features for two weeks and focus on reliability work.",
    "Action item: write a postmortem for the outage on Tuesday and share it before Friday.",
    "Several customers asked for a way to export their data as CSV rather than PDF.",
    "The design review for the onboarding flow is postponed until the research results are in.",
    "Latency at the ninety-ninth percentile improved after the cache was moved closer to the database.",
    "Marketing wants a short demo video for the conference booth in the spring.",
    "We still do not have a clear owner for the billing alerts, which is a risk.",
    "The history of the canal goes back to the early nineteenth century, when it carried coal and grain.",
    "Most of the locks were rebuilt in stone after a flood destroyed the original wooden gates.",
    "Today the towpath is popular with cyclists, and several old warehouses have become apartments.",
    "Researchers measured water quality at twelve points along the route over three years.",
    "The results suggest that nitrate levels fall sharply downstream of the restored wetlands.",
    "Volunteers remove invasive plants every month, and a local school monitors the dragonflies.",
    "In practice, the hardest part of the migration was not the code but the data cleanup.",
    "Old records used three different date formats and occasionally stored prices as text.",
    "We wrote a validation script that flagged about two thousand rows for manual review.",
    "After the cutover, nightly jobs finished in forty minutes instead of three hours.",
]


def _long_paste(rnd: random.Random) -> str:
    if rnd.random() < 0.25:
        lines = []
        for i in range(rnd.randint(40, 110)):
            level = rnd.choice(["INFO", "INFO", "INFO", "WARN", "ERROR", "DEBUG"])
            lines.append(f"2025-03-{rnd.randint(1, 28):02d} 12:{i % 60:02d}:{rnd.randint(0, 59):02d} {level} "
                         f"worker-{rnd.randint(1, 8)} {rnd.choice(['job finished', 'retrying request', 'cache miss', 'connection reset by peer', 'queue depth high'])} "
                         f"id={rnd.randint(1000, 99999)} took={rnd.randint(1, 900)}ms")
        return "here's the log from last night, what went wrong?\n" + "\n".join(lines)
    sentences = [rnd.choice(_PASTE_SENTENCES) for _ in range(rnd.randint(14, 55))]
    paragraphs = [" ".join(sentences[i:i + 5]) for i in range(0, len(sentences), 5)]
    intro = rnd.choice(["Can you summarise these notes?", "Here is the article I mentioned:", "Notes from today:"])
    return intro + "\n\n" + "\n\n".join(paragraphs)


def _private(rnd: random.Random) -> str:
    return rnd.choice(["#private my therapist says the panic attacks are getting less frequent",
                       "#private I owe my brother 400 euros and haven't told my partner",
                       f"#private my PIN is {rnd.randint(1000, 9999)}"])


def _empty(rnd: random.Random) -> str:
    return rnd.choice(["", "   ", "?", "..."])


GENERATORS = {"fact": _fact, "statement": _statement, "small_talk": lambda r: r.choice(SMALL_TALK),
              "question": _question, "code": _code, "pii": _pii, "long_paste": _long_paste,
              "private": _private, "empty": _empty}


def turn_mix(n: int, seed: int = 0, weights: dict[str, float] | None = None) -> list[tuple[str, str]]:
    """``n`` (kind, user_text) turns in the proportions of ``weights``, shuffled; deterministic in ``seed``."""
    weights = weights or MIX_WEIGHTS
    rnd = random.Random(seed)
    total = sum(weights.values())
    counts = {k: int(n * w / total) for k, w in weights.items()}
    for kind in sorted(weights, key=lambda k: -weights[k])[: n - sum(counts.values())]:
        counts[kind] += 1
    turns = [(kind, GENERATORS[kind](rnd)) for kind, c in counts.items() for _ in range(c)]
    rnd.shuffle(turns)
    return turns


def assistant_reply(rnd: random.Random) -> str:
    return rnd.choice(["Got it, I'll keep that in mind.", "Sure! Here is what I found.",
                       "That sounds lovely. Anything else?", "Here is a corrected version of your code."])


# -- helpers -----------------------------------------------------------------------

def pct(samples_s: list[float]) -> dict[str, float] | None:
    if not samples_s:
        return None
    import numpy as np

    ms = np.array(samples_s) * 1000
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p90": round(float(np.percentile(ms, 90)), 2),
            "max": round(float(ms.max()), 2), "mean": round(float(ms.mean()), 2), "n": len(ms)}


def make_envelope(seq: int | None, text: str, rnd: random.Random, number: int = 0) -> Any:
    """A chat.turn_completed envelope; with ``seq`` as the eventlog would hand it out (in process)."""
    from protocol.envelope import Envelope, new_envelope
    from protocol.events import ChatTurnCompleted

    number = seq or number
    body = ChatTurnCompleted(session_id=f"bench-{number % 7}", turn_index=number, user_text=text,
                             assistant_text=assistant_reply(rnd), model="smollm2-135m-instruct",
                             request_id=f"bench-{rnd.random():.12f}")
    env = new_envelope(body, source="chat")
    return env if seq is None else Envelope(msg_id=env.msg_id, ts=env.ts, source=env.source, body=body, seq=seq)


class TimedIndex:
    """Passes everything through to a MemoryIndex; times the duplicate lookups the core makes."""

    def __init__(self, index: Any) -> None:
        self._index = index
        self.dedupe_s = 0.0

    def has_text(self, sha: str) -> bool:
        t0 = time.perf_counter()
        try:
            return self._index.has_text(sha)
        finally:
            self.dedupe_s += time.perf_counter() - t0

    def find_duplicate(self, vector: Any, threshold: float = 0.97) -> Any:
        t0 = time.perf_counter()
        try:
            return self._index.find_duplicate(vector, threshold=threshold)
        finally:
            self.dedupe_s += time.perf_counter() - t0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)


def load_models() -> tuple[Any, Any]:
    from services.ingest.embed import Embedder, EmbedderUnavailable
    from services.ingest.route_model import load_or_train

    try:
        embedder = Embedder()
    except EmbedderUnavailable as exc:
        fail(PROG, str(exc))
    router = load_or_train(embedder)
    return embedder, router


def warm_up(embedder: Any, router: Any) -> None:
    rnd = random.Random(12345)
    texts = [t for _, t in turn_mix(40, seed=999)] + [_long_paste(rnd)]
    embedder.embed(texts)
    for t in texts[:8]:
        embedder.embed([t])
    router(texts[0], embedder.embed([texts[0]])[0])


# -- (a) in process -------------------------------------------------------------------

def bench_in_process(turns: list[tuple[str, str]], embedder: Any, router: Any, seed: int) -> dict[str, Any]:
    from protocol.events import MemoryFailed, MemorySkipped, MemoryStored
    from services.ingest.chunks import memory_chunks
    from services.ingest.core import IngestCore
    from services.lib.memory.index import MemoryIndex

    directory = Path(tempfile.mkdtemp(prefix="circ-ingest-", dir="/tmp"))
    try:
        index = MemoryIndex(directory)
        timed = TimedIndex(index)
        embedded: list[str] = []

        def chunker(text: str) -> list[str]:  # ingest's own (services/ingest/chunks.py), counted
            chunks = memory_chunks(text)
            embedded.extend(chunks or [text])
            return chunks

        core = IngestCore(timed, embedder, router=router, chunker=chunker)
        events: list[Any] = []
        emit_s = [0.0]

        def emit_event(env: Any) -> None:  # the daemon's acked eventlog append, as a no-op
            t0 = time.perf_counter()
            events.append(env)
            emit_s[0] += time.perf_counter() - t0

        rnd = random.Random(seed + 1)
        envelopes = [make_envelope(i + 1, text, rnd) for i, (_, text) in enumerate(turns)]
        per_kind: dict[str, list[float]] = {}
        embed_per_turn: list[float] = []
        total = 0.0
        for (kind, _), env in zip(turns, envelopes, strict=True):
            embed_before = core.counters.embed_s
            t0 = time.perf_counter()
            core.handle(env, emit_event)
            dt = time.perf_counter() - t0
            total += dt
            per_kind.setdefault(kind, []).append(dt)
            embed_per_turn.append(core.counters.embed_s - embed_before)
            done = env.seq
            if done % 100 == 0:
                progress(f"in process: {done}/{len(turns)} turns ({done / total:.1f}/s)")
        t0 = time.perf_counter()
        index.save()
        save_ms = (time.perf_counter() - t0) * 1000

        c = core.counters
        stages = {"redact": c.redact_s, "route": c.route_s, "embed": c.embed_s, "index": c.index_s,
                  "dedupe": timed.dedupe_s, "emit": emit_s[0]}
        stages["other"] = max(0.0, total - sum(stages.values()))
        outcomes = Counter(type(e.body).__name__ for e in events)
        routes = Counter(e.body.route for e in events if isinstance(e.body, MemoryStored))
        reasons = Counter(e.body.reason.split(";")[0].split(" (p=")[0] for e in events
                          if isinstance(e.body, MemorySkipped))
        failures = [e.body.detail for e in events if isinstance(e.body, MemoryFailed)]
        redactions: Counter[str] = Counter()
        for e in events:
            redactions.update(getattr(e.body, "redactions", {}) or {})
        # Embedding time spent on turns that were then skipped. The core embeds before it routes;
        # a rule skip (empty, small talk, bare question) and an exact duplicate need no vector.
        wasted: Counter[str] = Counter()
        decisions = {e.body.turn_seq: e.body for e in events}
        for env, spent in zip(envelopes, embed_per_turn, strict=True):
            body = decisions.get(env.seq)
            if isinstance(body, MemorySkipped) and spent > 0:
                if body.reason.startswith("exact duplicate"):
                    wasted["exact_duplicate"] += spent
                elif body.reason.startswith("near duplicate"):
                    wasted["near_duplicate"] += spent
                elif body.reason.startswith("classifier"):
                    wasted["classifier_skip"] += spent
                else:
                    wasted["rule_skip"] += spent
        stats = index.stats()
        index.close()
        # After the timed loop: how many embedded chunks the 256-token limit cut short.
        tokens = [embedder.token_count(t) for t in embedded]
        truncated = sum(1 for n in tokens if n >= embedder.max_tokens)
        return {
            "turns": len(turns), "total_s": round(total, 3), "turns_per_s": round(len(turns) / total, 2),
            "ms_per_turn": round(total / len(turns) * 1000, 2),
            "stage_seconds": {k: round(v, 4) for k, v in stages.items()},
            "stage_share": {k: round(v / total, 4) for k, v in stages.items()},
            "stage_ms_per_turn": {k: round(v / len(turns) * 1000, 3) for k, v in stages.items()},
            "chunks_embedded": len(embedded),
            "embed_chunks_per_s": round(len(embedded) / c.embed_s, 1) if c.embed_s else None,
            "embedded_tokens": sum(tokens), "embed_tokens_per_s": round(sum(tokens) / c.embed_s) if c.embed_s else None,
            "chunks_cut_at_max_tokens": truncated, "max_tokens": embedder.max_tokens,
            "embed_s_on_skipped_turns": {k: round(v, 3) for k, v in wasted.most_common()},
            "embed_share_on_turns_skippable_before_embedding": round(
                (wasted["rule_skip"] + wasted["exact_duplicate"]) / total, 4),
            "per_kind_ms": {k: pct(v) for k, v in sorted(per_kind.items())},
            "per_kind_share_of_time": {k: round(sum(v) / total, 4) for k, v in sorted(per_kind.items())},
            "outcomes": dict(outcomes), "stored_routes": dict(routes), "skip_reasons": dict(reasons.most_common()),
            "failures": failures[:5], "redactions": dict(redactions),
            "memories": stats["memories"], "index_bytes": stats["bytes"], "save_ms": round(save_ms, 1),
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- (b) through the daemons ------------------------------------------------------------

def _start(paths: Any, module: str, ctl: str, reply_type: Any, timeout_s: float) -> tuple[Any, float, Any]:
    from protocol.service_api import Ping, Pong
    from services.common.rpc import RemoteError, RpcClient, ServiceUnavailable

    log = open(paths.logs / f"{module.split('.')[-1]}.bench.log", "ab")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", module], cwd=REPO_ROOT,
                            env={**os.environ, "CIRCADIAN_HOME": str(paths.home), "PYTHONUNBUFFERED": "1"},
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
    rpc = RpcClient(paths, module, ctl, reply_type, timeout_s=1.0)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{module} exited with {proc.returncode}; see {paths.logs}")
            try:
                pong = rpc.request(Ping(request_id=f"ready-{time.monotonic_ns()}"))
                if isinstance(pong, Pong) and pong.ready:
                    return proc, time.perf_counter() - started, pong
            except (ServiceUnavailable, RemoteError):
                pass
            time.sleep(0.05)
    finally:
        rpc.close()
    _stop(proc)
    raise RuntimeError(f"{module} not ready within {timeout_s:.0f} s; see {paths.logs}")


def _stop(proc: Any) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


def _cursor(rpc: Any) -> int:
    from protocol.service_api import Ping

    pong = rpc.request(Ping(request_id=f"c-{time.monotonic_ns()}"), timeout_s=30.0)
    return int(pong.details.get("cursor_seq", "0"))


def _append_and_wait(client: Any, rpc: Any, envelopes: list[Any], batch: int) -> tuple[float, float, int]:
    """Append (acked, ``batch`` per request); return (append_s, until_cursor_s, last_turn_seq)."""
    started = time.perf_counter()
    last = 0
    for i in range(0, len(envelopes), batch):
        last = max(client.append(envelopes[i:i + batch], retry_s=10.0).seqs)
    appended = time.perf_counter()
    deadline = time.monotonic() + CURSOR_TIMEOUT_S
    next_report = time.monotonic() + 15
    while True:
        cursor = _cursor(rpc)
        if cursor >= last:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"ingest cursor {cursor} did not reach {last} in {CURSOR_TIMEOUT_S:.0f} s")
        if time.monotonic() > next_report:
            progress(f"daemon: cursor {cursor} of {last}")
            next_report += 15
        time.sleep(0.02)
    return appended - started, time.perf_counter() - started, last


def bench_daemons(turns: list[tuple[str, str]], seed: int, keep_home: bool) -> dict[str, Any]:
    from protocol.eventlog_api import EventlogReply
    from protocol.ingest_api import GetMemoryStats, IngestReply
    from services.common.eventlog_client import EventlogClient
    from services.common.paths import Paths
    from services.common.rpc import RpcClient

    home = Path(tempfile.mkdtemp(prefix="circ-ib-", dir="/tmp"))
    paths = Paths(home).ensure()
    eventlog = ingest = None
    client = rpc = None
    try:
        eventlog, eventlog_start_s, _ = _start(paths, "services.eventlog", "events.ctl", EventlogReply, 60)
        ingest, ingest_start_s, pong = _start(paths, "services.ingest", "ingest.ctl", IngestReply, 300)
        progress(f"daemons ready (ingest in {ingest_start_s:.1f} s)")
        client = EventlogClient(paths)
        rpc = RpcClient(paths, "ingest", "ingest.ctl", IngestReply, timeout_s=30.0)
        rnd = random.Random(seed + 2)
        warm = [make_envelope(None, text, rnd, i) for i, (_, text) in enumerate(turn_mix(12, seed=999))]
        _append_and_wait(client, rpc, warm, 50)
        before = rpc.request(GetMemoryStats(request_id="stats0")).memories
        envelopes = [make_envelope(None, text, rnd, i) for i, (_, text) in enumerate(turns)]
        append_s, total_s, last = _append_and_wait(client, rpc, envelopes, 50)
        stats = rpc.request(GetMemoryStats(request_id="stats"))
        return {"turns": len(turns), "total_s": round(total_s, 3), "turns_per_s": round(len(turns) / total_s, 2),
                "ms_per_turn": round(total_s / len(turns) * 1000, 2), "append_s": round(append_s, 3),
                "last_turn_seq": last, "ingest_startup_s": round(ingest_start_s, 2),
                "eventlog_startup_s": round(eventlog_start_s, 2), "ingest_ready_details": dict(pong.details),
                "memories_added": stats.memories - before, "home": str(home) if keep_home else None}
    finally:
        for closable in (client, rpc):
            if closable is not None:
                closable.close()
        _stop(ingest)
        _stop(eventlog)
        if not keep_home:
            shutil.rmtree(home, ignore_errors=True)


# -- main -------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 turns (default 500)")
    parser.add_argument("--turns", type=int, help="number of turns (default 500, --quick 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-daemon", action="store_true", help="skip the run through the daemons")
    parser.add_argument("--blas-threads", default=os.environ["OPENBLAS_NUM_THREADS"],
                        help="OPENBLAS_NUM_THREADS for this process and the daemons (default 1, as supervisord)")
    parser.add_argument("--keep-home", action="store_true", help="keep the daemons' temp CIRCADIAN_HOME (logs)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help="first wait up to S seconds for the machine to be quiet")
    args = parser.parse_args()
    n = args.turns or (100 if args.quick else 500)
    from services.common.logging import configure_logging

    configure_logging(PROG, "info")  # structlog lines (router.loaded ...) to stderr, not into the JSON
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
    turns = turn_mix(n, seed=args.seed)
    result: dict[str, Any] = {
        "bench": PROG, "turns": n, "seed": args.seed, "mix": dict(Counter(k for k, _ in turns)),
        "mean_user_chars": round(statistics.fmean(len(t) for _, t in turns), 1),
        "blas": BLAS.name, "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "machine_before": machine_load(), "waited_for_quiet": quiet}

    progress("loading embedder and router")
    t0 = time.perf_counter()
    embedder, router = load_models()
    result["load_s"] = round(time.perf_counter() - t0, 2)
    result["router"] = {k: v for k, v in router.info.items() if k != "path"} | {"threshold": router.threshold}
    warm_up(embedder, router)

    progress(f"in process: {n} turns")
    result["in_process"] = bench_in_process(turns, embedder, router, args.seed)
    result["machine_mid"] = machine_load()
    if not args.no_daemon:
        progress(f"through the daemons: {n} turns")
        try:
            daemon = bench_daemons(turns, args.seed, args.keep_home)
        except Exception as exc:  # the in-process numbers still stand
            daemon = {"error": f"{type(exc).__name__}: {exc}"}
        result["daemon"] = daemon
        if "turns_per_s" in daemon:
            result["daemon_over_in_process"] = round(daemon["turns_per_s"] / result["in_process"]["turns_per_s"], 3)
    result["machine_after"] = machine_load()
    emit(result)


if __name__ == "__main__":
    main()
