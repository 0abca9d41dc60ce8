#!/usr/bin/env python
"""Retrieval quality on paraphrased questions: recall@1, recall@5, MRR through IngestCore vs the raw embedder+index.

Usage: .venv/bin/python bench/bench_retrieval.py [--quick] [--distractors 300] [--seed 0]
       [--show-misses 10] [--blas-threads 1] [--embedder minilm|chat-model]

``--embedder``: ``minilm`` (default: all-MiniLM-L6-v2, what ingest loads
first) or ``chat-model`` (ingest's fallback: the chat model's pooled hidden
states, services.ingest.embed_chat); the router is the one ingest would use
with it (its own cached weights). ``summary`` holds the comparison figures:
recall@1/@5 of ``raw`` and ``pipeline`` and the per-query embedding time.

The set: ``bench/data/paraphrase_set.json``: 66 facts about fictitious
people, pets, places and projects, each stated once as a user turn ("My
sister Ana lives in Lisbon.") and asked twice in other words ("Where does Ana
live?", "Which city is my sister in?"). Each query is labelled ``by: name``
(it names the person/pet/place/project) or ``by: description`` (relation,
kind or description only). Plus ``--distractors`` turns (default 300;
``--quick`` 200), deterministic in ``--seed``: half hard negatives (facts
about *other* people, pets, projects and places, with relations, cities and
values that the queries do not ask about, e.g. "My client Pavel lives in
Graz."), half the everyday mix of bench_ingest (remarks, small talk,
questions, code, PII, long pastes). Facts and distractors are interleaved.

Variants, each asked every query with k=5 (MRR is therefore MRR@5: a miss
scores 0):

- ``pipeline``: every turn through ``IngestCore.handle`` with the real
  redactor and ``LearnedRouter`` (rules, classifier, dedupe); queries through
  ``IngestCore.recall(q, k=5, min_score=0)`` (which redacts the query too).
  A fact the router sends to ``lora`` or ``skip`` cannot be recalled: a miss.
- ``raw``: no redaction, no routing, no dedupe: every turn's raw text chunked
  and embedded into a ``MemoryIndex``; raw query embedded, ``index.search``.
- ``redact_only``: like ``raw`` but texts and queries redacted (no routing):
  what redaction alone costs.
- ``route_only``: raw texts, but only the turns ``pipeline`` kept for recall
  (rag/both, after dedupe): what routing alone costs.
- ``pipeline_without_names``: the pipeline's index and recall without the
  keyed name hashes (services/lib/privacy/names.py): what recall by name adds.

Splits: ``person_by_name`` (asks about a person by name) vs ``other``, the
category x by cells, and ``query_redacted`` (the redactor changed the query:
measured, not labelled: it misses some person names and takes some pet and
place names). For ``pipeline`` also: recall@5 at chat's default
``recall_min_score``, scores of the right memory, which facts were not
recallable, and the first ``--show-misses`` misses at rank 1.

Timing: ``IngestCore.recall``'s ``embed_ms`` (query redaction + embedding)
and ``search_ms`` (usearch + SQLite rows + route filter), plus the raw path's
``embed_ms`` and ``index.search`` ms, p50/p90/max over all queries.
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
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import emit, machine_load, progress  # noqa: E402

# Before anything imports mlx (the embedder does).
from services.common.blas import preload_openblas  # noqa: E402

BLAS = preload_openblas()

from bench_ingest import _a, make_envelope, pct, turn_mix, warm_up  # noqa: E402

PROG = "bench_retrieval"
DATA = Path(__file__).resolve().parent / "data" / "paraphrase_set.json"
K = 5
GENERAL_WEIGHTS = {"statement": 0.30, "question": 0.20, "small_talk": 0.10, "code": 0.15, "pii": 0.17,
                   "long_paste": 0.08}

# Hard negatives: other people, pets, projects, places. Relations, cities, jobs
# and values are chosen so that none of them answers a query of the set.
NEG_NAMES = ("Elodie Marta Bram Sven Aiko Chidi Ines Pavel Greta Rohan Lucia Tariq Freya Nikolai Zainab "
             "Hugo Mirela Odile Kwame Astrid Leila Teodor Yara Malik Signe Quentin Hana Emeka Vera").split()
NEG_RELATIONS = ("client", "teammate", "nephew", "hairdresser", "plumber", "pen pal", "tenant", "babysitter",
                 "book club friend")
NEG_CITIES = ("Ghent Oslo Valencia Krakow Tampere Bologna Lyon Utrecht Graz Cork Bergen Malmo Seville Brno "
              "Tartu Aarhus Ljubljana").split()
NEG_JOBS = ("pilot", "carpenter", "data analyst", "pharmacist", "translator", "architect", "electrician",
            "librarian", "firefighter")
NEG_SKILLS = ("Japanese", "pottery", "sailing", "woodworking", "Portuguese", "rock climbing")
NEG_SPORTS = ("badminton", "water polo", "squash", "volleyball", "table tennis", "rugby")
MONTHS = "January February March April May June July August September October November December".split()
NEG_PETS = ("dog", "cat", "rabbit", "ferret", "guinea pig")
NEG_PET_NAMES = "Waffles Pepper Noodle Ziggy Mochi Tofu Nugget Bramble Sprout Gizmo Truffle Dumpling".split()
NEG_CODENAMES = "Kingfisher Obsidian Tamarind Quasar Halyard Marigold Tundra Ferrite Cirrus Pinnacle".split()
NEG_PLACES = ("bookshop", "climbing gym", "record store", "flea market", "cinema", "board game cafe")
NEG_PLACE_NAMES = "Kornblume Vinyl Attic Lowtide Paperkite Rookery Ember Hall Granite Loft".split(" ")


def hard_negative(rnd: random.Random) -> str:
    kind = rnd.random()
    if kind < 0.55:
        name, rel, city = rnd.choice(NEG_NAMES), rnd.choice(NEG_RELATIONS), rnd.choice(NEG_CITIES)
        pred = rnd.choice([
            f"lives in {city}", f"works as {_a(rnd.choice(NEG_JOBS))}", f"moved to {city} last {rnd.choice(MONTHS)}",
            f"is learning {rnd.choice(NEG_SKILLS)}", f"has a birthday on {rnd.choice(MONTHS)} {rnd.randint(1, 28)}",
            f"plays {rnd.choice(NEG_SPORTS)} on weekends", f"is saving up for a trip to {city}",
            f"just bought a flat in {city}", "is terrible at replying to messages", "drives an old red van"])
        return rnd.choice([f"My {rel} {name} {pred}.", f"{name}, my {rel}, {pred}.",
                           f"Just so you know, my {rel} {name} {pred}."])
    if kind < 0.75:
        rel, pet, pet_name = rnd.choice(NEG_RELATIONS), rnd.choice(NEG_PETS), rnd.choice(NEG_PET_NAMES)
        pred = rnd.choice([f"is {rnd.randint(2, 14)} years old", "hates the vacuum cleaner",
                           f"was adopted from a shelter in {rnd.choice(NEG_CITIES)}",
                           "sleeps on the radiator all winter", "has a very fluffy tail"])
        return f"My {rel}'s {pet} {pet_name} {pred}."
    if kind < 0.9:
        code = rnd.choice(NEG_CODENAMES)
        pred = rnd.choice([f"is due at the end of {rnd.choice(MONTHS)}", f"is run out of the {rnd.choice(NEG_CITIES)} office",
                           "is blocked on the security review", "replaces the old customer portal",
                           "moves our reporting to a data warehouse", "has a weekly sync on Thursdays"])
        return rnd.choice([f"Project {code} {pred}.", f"At work, the {code} project {pred}."])
    return (f"The {rnd.choice(NEG_PLACES)} in {rnd.choice(NEG_CITIES)} called {rnd.choice(NEG_PLACE_NAMES)} "
            f"is worth a visit.")


def load_set(path: Path = DATA) -> list[dict[str, Any]]:
    facts = json.loads(path.read_text(encoding="utf-8"))["facts"]
    ids = [f["id"] for f in facts]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{path}: duplicate fact ids")
    return facts


def build_turns(facts: list[dict[str, Any]], n_distractors: int, seed: int) -> list[tuple[str, str, str | None]]:
    """(kind, text, fact_id or None), facts interleaved with distractors; deterministic in ``seed``."""
    rnd = random.Random(seed)
    n_hard = n_distractors // 2
    turns: list[tuple[str, str, str | None]] = [("fact", f["text"], f["id"]) for f in facts]
    turns += [("hard_negative", hard_negative(rnd), None) for _ in range(n_hard)]
    turns += [(kind, text, None) for kind, text in turn_mix(n_distractors - n_hard, seed=seed + 7,
                                                             weights=GENERAL_WEIGHTS)]
    rnd.shuffle(turns)
    return turns


# -- metrics -----------------------------------------------------------------------

def rank_of(target: set[str], hit_ids: list[str]) -> int | None:
    for i, memory_id in enumerate(hit_ids[:K], 1):
        if memory_id in target:
            return i
    return None


def wilson(hits: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson interval of a proportion: these sets are small."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 3), round(centre + half, 3)]


def summarise(ranks: list[int | None], ci: bool = False) -> dict[str, Any]:
    n = len(ranks)
    if n == 0:
        return {"n": 0}
    at1, at5 = sum(1 for r in ranks if r == 1), sum(1 for r in ranks if r is not None)
    out: dict[str, Any] = {"n": n, "recall_at_1": round(at1 / n, 4), "recall_at_5": round(at5 / n, 4),
                           "mrr_at_5": round(sum(1 / r for r in ranks if r is not None) / n, 4)}
    if ci:
        out["recall_at_1_ci95"], out["recall_at_5_ci95"] = wilson(at1, n), wilson(at5, n)
    return out


def splits(queries: list[dict[str, Any]], ranks: list[int | None]) -> dict[str, Any]:
    groups: dict[str, list[int | None]] = {}

    def add(name: str, rank: int | None) -> None:
        groups.setdefault(name, []).append(rank)

    for q, rank in zip(queries, ranks, strict=True):
        add("all", rank)
        add("person_by_name" if q["category"] == "person" and q["by"] == "name" else "other", rank)
        add(f"{q['category']}/{q['by']}", rank)
        add("query_redacted" if q["query_redacted"] else "query_unchanged_by_redaction", rank)
        if q["category"] == "person" and q["by"] == "name":
            add("person_by_name/name_redacted" if q["query_redacted"] else "person_by_name/name_missed_by_redactor",
                rank)
    order = ["all", "person_by_name", "other", "person_by_name/name_redacted",
             "person_by_name/name_missed_by_redactor", "query_redacted", "query_unchanged_by_redaction"]
    names = order + sorted(k for k in groups if k not in order)
    return {name: summarise(groups[name]) for name in names if name in groups}


# -- variants --------------------------------------------------------------------------

def run_pipeline(turns: list[tuple[str, str, str | None]], queries: list[dict[str, Any]], embedder: Any,
                 router: Any, directory: Path, seed: int) -> dict[str, Any]:
    from protocol.events import MemoryStored
    from services.ingest.core import RECALL_ROUTES, IngestCore
    from services.lib.memory.index import MemoryIndex
    from services.lib.privacy.names import NameKeys

    index = MemoryIndex(directory, embedder.dim, embedder=embedder.identity)
    core = IngestCore(index, embedder, router=router, names=NameKeys(secrets.token_bytes(32)))
    events: list[Any] = []
    rnd = random.Random(seed + 11)
    fact_outcome: dict[str, Any] = {}
    kept_seqs: set[int] = set()
    started = time.perf_counter()
    for seq, (_kind, text, fact_id) in enumerate(turns, 1):
        core.handle(make_envelope(seq, text, rnd), events.append)
        body = events[-1].body
        stored = isinstance(body, MemoryStored)
        if stored and body.route in RECALL_ROUTES:
            kept_seqs.add(seq)
        if fact_id is not None:
            fact_outcome[fact_id] = {"seq": seq, "event": type(body).__name__,
                                     "route": body.route if stored else None,
                                     "reason": getattr(body, "reason", "") or getattr(body, "detail", ""),
                                     "memory_ids": list(body.memory_ids) if stored else [],
                                     "recallable": stored and body.route in RECALL_ROUTES,
                                     "stored_text": index.get(body.memory_ids[0]).text if stored else None}
    ingest_s = time.perf_counter() - started
    progress(f"pipeline: ingested {len(turns)} turns in {ingest_s:.1f} s")

    ranks, embed_ms, search_ms, no_name_ranks, misses, right_scores = [], [], [], [], [], []
    wrong_top_scores: list[float] = []
    at_chat_min_score: list[bool] = []
    chat_min = _chat_min_score()
    for q in queries:
        target = set(fact_outcome[q["fact"]]["memory_ids"])
        memories, e_ms, s_ms = core.recall(q["text"], K, min_score=0.0)
        embed_ms.append(e_ms / 1000)
        search_ms.append(s_ms / 1000)
        hit_ids = [m.memory_id for m in memories]
        rank = rank_of(target, hit_ids)
        ranks.append(rank)
        if rank is not None:
            right_scores.append(memories[rank - 1].score)
            at_chat_min_score.append(memories[rank - 1].score >= chat_min)
        else:
            at_chat_min_score.append(False)
        if rank != 1 and memories:
            wrong_top_scores.append(memories[0].score)
            misses.append({"cell": f"{q['category']}/{q['by']}", "query": q["text"], "query_as_searched": q["redacted"], "rank": rank,
                           "expected": fact_outcome[q["fact"]]["stored_text"] or f"(not stored: "
                           f"{fact_outcome[q['fact']]['event']} {fact_outcome[q['fact']]['reason']})",
                           "expected_route": fact_outcome[q["fact"]]["route"],
                           "top1": memories[0].text[:160], "top1_score": memories[0].score})
        # Baseline in the same run: the same index and recall, without the keyed name hashes.
        names, core.names = core.names, None
        plain, _, _ = core.recall(q["text"], K, min_score=0.0)
        core.names = names
        no_name_ranks.append(rank_of(target, [m.memory_id for m in plain]))
    stats = index.stats()
    index.close()
    outcomes = Counter((o["event"], o["route"]) for o in fact_outcome.values())
    return {
        "ranks": ranks, "no_name_ranks": no_name_ranks, "kept_seqs": kept_seqs,
        "ingest_s": round(ingest_s, 2), "memories": stats["memories"], "by_route": stats["by_route"],
        "distractors_recallable": len(kept_seqs) - sum(1 for o in fact_outcome.values() if o["recallable"]),
        "facts_recallable": sum(1 for o in fact_outcome.values() if o["recallable"]),
        "fact_outcomes": {f"{event}/{route}": count for (event, route), count in sorted(outcomes.items(), key=str)},
        "facts_not_recallable": [{"id": fid, "event": o["event"], "route": o["route"], "reason": o["reason"]}
                                 for fid, o in fact_outcome.items() if not o["recallable"]],
        "facts_stored_text_changed_by_redaction": sum(1 for (_, text, fid) in turns if fid is not None
                                                      and fact_outcome[fid]["stored_text"] not in (None, text)),
        "timing": {"recall_embed_ms": pct(embed_ms), "recall_search_ms": pct(search_ms)},
        "right_memory_score": score_stats(right_scores),
        "wrong_top1_score": score_stats(wrong_top_scores),
        "chat_recall_min_score": chat_min,
        "recall_at_5_at_chat_min_score": round(sum(at_chat_min_score) / len(queries), 4),
        "misses": misses,
    }


def score_stats(scores: list[float]) -> dict[str, float] | None:
    if not scores:
        return None
    a = np.array(scores)
    return {"p10": round(float(np.percentile(a, 10)), 4), "p50": round(float(np.percentile(a, 50)), 4),
            "p90": round(float(np.percentile(a, 90)), 4), "n": len(a)}


def _chat_min_score() -> float:
    try:
        from services.common.config import load_config

        return float(load_config().chat.recall_min_score)
    except Exception:
        return 0.35


def run_plain(name: str, turns: list[tuple[str, str, str | None]], queries: list[dict[str, Any]], embedder: Any,
              directory: Path, *, redacted: bool, keep: set[int] | None = None,
              cache: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Embedder + MemoryIndex only: every turn (or the ``keep`` seqs) stored for recall, no routing."""
    from services.ingest.tags import strip_tags
    from services.lib.memory.index import MemoryIndex, MemoryRecord, chunk_text
    from services.lib.privacy.redact import redact

    cache = {} if cache is None else cache

    def vectors_for(texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            for t, v in zip(missing, embedder.embed(missing), strict=True):
                cache[t] = v
        return np.stack([cache[t] for t in texts])

    index = MemoryIndex(directory, embedder.dim, embedder=embedder.identity)
    fact_ids: dict[str, set[str]] = {}
    started = time.perf_counter()
    for seq, (_, text, fact_id) in enumerate(turns, 1):
        if keep is not None and seq not in keep:
            continue
        text = strip_tags(text)
        if redacted:
            text = redact(text).text
        if not text.strip():
            continue
        chunks = chunk_text(text) or [text]
        records = [MemoryRecord(memory_id=f"m{seq}.{i}", seq=seq, chunk=i, route="rag", text=chunk)
                   for i, chunk in enumerate(chunks)]
        index.add(records, vectors_for(chunks))
        if fact_id is not None:
            fact_ids[fact_id] = {r.memory_id for r in records}
    build_s = time.perf_counter() - started
    ranks, embed_s, search_s = [], [], []
    for q in queries:
        text = q["redacted"] if redacted else q["text"]
        t0 = time.perf_counter()
        vector = embedder.embed([text])[0]
        t1 = time.perf_counter()
        hits = index.search(vector, K)
        t2 = time.perf_counter()
        embed_s.append(t1 - t0)
        search_s.append(t2 - t1)
        ranks.append(rank_of(fact_ids.get(q["fact"], set()), [h.memory_id for h in hits]))
    memories = index.stats()["memories"]
    index.close()
    progress(f"{name}: {memories} memories, built in {build_s:.1f} s")
    return {"ranks": ranks, "memories": memories, "build_s": round(build_s, 2),
            "timing": {"embed_ms": pct(embed_s), "search_ms": pct(search_s)}}


# -- main ---------------------------------------------------------------------------------

def load_models(which: str) -> tuple[Any, Any, float]:
    """The embedder ``which`` (no fallback: a benchmark measures what it names) and its router."""
    from benchlib import fail

    from services.ingest.embed import EmbedderUnavailable, load_embedder
    from services.ingest.route_model import load_or_train

    started = time.perf_counter()
    try:
        embedder = load_embedder(which)
    except EmbedderUnavailable as exc:
        fail(PROG, str(exc))
    load_s = time.perf_counter() - started
    return embedder, load_or_train(embedder), load_s


def main() -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 distractor turns (default 300)")
    parser.add_argument("--distractors", type=int, help="distractor turns (default 300, --quick 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show-misses", type=int, default=10, help="pipeline misses at rank 1 to list")
    parser.add_argument("--blas-threads", default=os.environ["OPENBLAS_NUM_THREADS"],
                        help="OPENBLAS_NUM_THREADS (default 1, as supervisord runs ingest)")
    parser.add_argument("--embedder", choices=("minilm", "chat-model"), default="minilm",
                        help="MiniLM (default) or ingest's fallback, the chat model's hidden states")
    args = parser.parse_args()
    from services.common.logging import configure_logging
    from services.lib.privacy.redact import redact

    configure_logging(PROG, "info")  # structlog lines to stderr, not into the JSON
    n_distractors = args.distractors or (200 if args.quick else 300)
    facts = load_set()
    queries = []
    redact_s = []
    for f in facts:
        for q in f["queries"]:
            t0 = time.perf_counter()
            red = redact(q["text"]).text
            redact_s.append(time.perf_counter() - t0)
            queries.append({"fact": f["id"], "category": f["category"], "by": q["by"], "text": q["text"],
                            "redacted": red, "query_redacted": red != q["text"]})
    turns = build_turns(facts, n_distractors, args.seed)
    result: dict[str, Any] = {
        "bench": PROG, "facts": len(facts), "queries": len(queries), "k": K, "seed": args.seed,
        "distractor_turns": n_distractors,
        "distractor_mix": dict(Counter(kind for kind, _, fid in turns if fid is None)),
        "queries_by_cell": dict(Counter(f"{q['category']}/{q['by']}" for q in queries)),
        "queries_changed_by_redaction": sum(q["query_redacted"] for q in queries),
        "blas": BLAS.name, "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "machine_before": machine_load()}

    progress(f"loading embedder ({args.embedder}) and router")
    embedder, router, load_s = load_models(args.embedder)
    result["embedder"] = {"name": embedder.name, "identity": embedder.identity, "dim": embedder.dim,
                          "description": embedder.description, "load_s": round(load_s, 2)}
    result["router"] = {k: v for k, v in router.info.items() if k != "path"} | {"threshold": router.threshold}
    warm_up(embedder, router)

    root = Path(tempfile.mkdtemp(prefix="circ-retrieval-", dir="/tmp"))
    try:
        progress(f"pipeline: {len(turns)} turns through IngestCore, {len(queries)} queries")
        pipe = run_pipeline(turns, queries, embedder, router, root / "pipeline", args.seed)
        raw_cache: dict[str, np.ndarray] = {}
        raw = run_plain("raw", turns, queries, embedder, root / "raw", redacted=False, cache=raw_cache)
        red = run_plain("redact_only", turns, queries, embedder, root / "redact", redacted=True)
        route = run_plain("route_only", turns, queries, embedder, root / "route", redacted=False,
                          keep=pipe["kept_seqs"], cache=raw_cache)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    variants = {"pipeline": pipe["ranks"], "raw": raw["ranks"], "redact_only": red["ranks"],
                "route_only": route["ranks"], "pipeline_without_names": pipe["no_name_ranks"]}
    def cell(ranks: list[int | None], name: str) -> dict[str, Any]:
        return summarise([r for q, r in zip(queries, ranks, strict=True) if group(q) == name], ci=True)

    def group(q: dict[str, Any]) -> str:
        return "person_by_name" if q["category"] == "person" and q["by"] == "name" else "other"

    result["headline"] = {name: {"all": summarise(r, ci=True), "person_by_name": cell(r, "person_by_name"),
                                 "other": cell(r, "other")} for name, r in variants.items()}
    result["cost_vs_raw"] = {name: {metric: round(summarise(r)[metric] - summarise(raw["ranks"])[metric], 4)
                                    for metric in ("recall_at_1", "recall_at_5", "mrr_at_5")}
                             for name, r in variants.items() if name != "raw"}
    result["splits"] = {name: splits(queries, r) for name, r in variants.items()}
    result["pipeline"] = {k: v for k, v in pipe.items() if k not in ("ranks", "no_name_ranks", "kept_seqs", "misses")}
    result["pipeline"]["misses_at_rank_1"] = len(pipe["misses"])
    result["pipeline"]["first_misses"] = pipe["misses"][: args.show_misses]
    result["memories"] = {"pipeline": pipe["memories"], "raw": raw["memories"], "redact_only": red["memories"],
                          "route_only": route["memories"]}
    result["timing"] = {"pipeline_recall": pipe["timing"], "query_redact_ms": pct(redact_s), "raw": raw["timing"],
                        "note": "recall_embed_ms is IngestCore.recall's embed_ms: query redaction + embedding"}
    result["summary"] = {
        "embedder": embedder.name,
        "raw": {k: result["headline"]["raw"]["all"][k] for k in ("recall_at_1", "recall_at_5", "mrr_at_5")},
        "pipeline": {k: result["headline"]["pipeline"]["all"][k]
                     for k in ("recall_at_1", "recall_at_5", "mrr_at_5")},
        "pipeline_without_names": {k: result["headline"]["pipeline_without_names"]["all"][k]
                                   for k in ("recall_at_1", "recall_at_5", "mrr_at_5")},
        "query_embed_ms": {k: raw["timing"]["embed_ms"][k] for k in ("p50", "p90", "mean")},
        "memories_embedded_per_s": round(raw["memories"] / raw["build_s"], 1) if raw["build_s"] else None,
    }
    result["machine_after"] = machine_load()
    emit(result)


if __name__ == "__main__":
    main()
