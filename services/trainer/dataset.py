"""The night's training set: memories in, chat examples + manifest + eval items out.

``build_dataset`` is pure (no model, no files, no clock): the same memories,
replay, turns, paraphraser and seed give the same dataset. ``save_dataset``
writes it next to the candidate adapter.

What gets taught (DESIGN.md, "Memory quality"):

* **Which memories.** Routed to training (``lora`` or ``both``), not
  forgotten, not tagged ``no-train``, with text. Everything else is counted
  in ``manifest["excluded"]``.
* **Facts -> question/answer pairs.** Each fact the user stated
  (:func:`services.lib.facts.extract_facts`) becomes ``phrasings``
  (default 5) pairs: TRAIN question templates (a seeded choice among >= 6)
  each paired with an answer template (the answers rotate, so the value is
  seen in several sentence shapes). An optional ``paraphraser`` adds up to
  ``max_paraphrases`` model-written rewordings per fact, kept only when they
  are new (not any TRAIN or HELDOUT template, normalised), still a question
  in the user's voice about the same subject, and do not give the answer
  away; an answer paraphrase (the paraphraser may return ``(question,
  answer)`` tuples) must still contain the value.
* **Updates.** One (subject, relation) has one value: the latest statement
  wins (seq, then chunk, then position in the text), so "we moved from Paris
  to Lyon" teaches Lyon and the earlier "I live in Paris" is listed under
  ``manifest["superseded"]``. When the latest statement is itself not
  trainable (``#no-train``, recall-only) the key is *withheld*: the stale
  value is not taught either. ``allergy`` and ``hobby`` are multi-valued:
  their values accumulate ("peanuts and shellfish").
* **Assistant turns.** The chat model's own replies are often wrong, and a
  statement's facts are taught better by the templates, so an assistant turn
  (``turns[seq]``) becomes a chat example only when the memory is routed to
  ``lora`` alone (the router's "behaviour/style" class), none of the turn's
  chunks stated a fact, the turn is a single chunk, and the reply —
  redacted like the user's text — carries no placeholder and is not
  overlong. The user side is the memory's redacted text, never the raw turn.
  Memories routed ``both`` without a fact are left to recall (RAG); they are
  listed in ``manifest["untaught"]``.
* **Identity/format examples** (:mod:`services.trainer.identity`) are mixed
  in every night to limit drift; ``valid.jsonl`` is a separate never-trained
  set of the same kind, so validation loss measures drift.
* **Abstentions** (``abstain_share``, a share of the QA examples): questions
  in the trained templates about keys from :data:`ABSTAIN_PROBES` the user
  never stated, answered "I don't know. You haven't told me." They are
  disjoint from the false-recall probes, so the gate still measures what
  the adapter makes up on keys it never saw; not replayed.
* **Replay.** Earlier nights' examples (``replay``, entries of an earlier
  ``replay_pool``) are mixed in as given, except those that teach a
  (subject, relation) stated again tonight (superseded: replaying them would
  teach the old value) and those whose source memories are forgotten.
* **Teacher context.** A question/answer example carries ``context``: the
  texts of the memories its fact came from (as chat recalls them), kept in
  train.jsonl and in the replay pool. The ``distill`` objective's teacher
  reads them in chat's recall prompt; ``sft`` ignores the field.

Evaluation items (``protocol.trainer_api.EvalItem``):

* ``eval_facts`` (kind ``fact``): HELDOUT questions of each taught fact —
  worded differently from every question trained tonight, templates and
  paraphrases alike — with the value as the gold answer and same-type
  distractors (other names, other cities, dates in the same format, ...).
* ``false_facts`` (kind ``false``): questions about (subject, relation)
  pairs never stated (not tonight, not in ``known_facts``). Convention: the
  gold ``answer`` is the abstention :data:`ABSTAIN` ("I don't know.") and the
  ``distractors`` are fabricated values of the right type; a model that
  picks (or says) any distractor has recalled something it was never told.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from protocol.trainer_api import EvalItem
from services.common.atomic import write_atomic
from services.lib.facts import (
    ABSTAIN,
    MULTI_VALUED,
    Fact,
    answers,
    distractors,
    extract_facts,
    family,
    has_placeholder,
    merge_values,
    normalize,
    questions,
    stable_seed,
)
from services.lib.memory.index import MemoryRecord
from services.lib.privacy.redact import redact
from services.trainer.identity import chat_example, valid_examples
from services.trainer.identity import identity_examples as default_identity

DATASET_VERSION = 1
TRAIN_ROUTES = ("lora", "both")
CHAT_ROUTES = ("lora",)  # assistant turns are taught only for behaviour/style memories
MAX_REPLY_CHARS = 2000
MAX_PARAPHRASE_CHARS = 200
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly and truthfully."  # = ChatConfig's default
KINDS = ("qa", "chat", "identity", "abstain", "replay")

# The question/answer a paraphraser returns rewordings of; see build_dataset.
Paraphraser = Callable[[str, str], Sequence["str | tuple[str, str]"]]

# (subject, relation) pairs the false-recall items ask about when the user never stated them.
FALSE_PROBES: tuple[tuple[str, str], ...] = (
    ("user", "lives_in"), ("user", "works_at"), ("user", "birthday"), ("user", "allergy"), ("user", "hobby"),
    ("user", "job"), ("user", "hometown"), ("user", "age"), ("user", "favourite_colour"),
    ("user", "favourite_food"), ("user", "favourite_book"), ("sister", "person_name"),
    ("brother", "person_name"), ("best friend", "person_name"), ("grandmother", "person_name"),
    ("hamster", "pet_name"), ("parrot", "pet_name"), ("goldfish", "pet_name"), ("thesis", "deadline"),
    ("tax return", "deadline"), ("sister", "lives_in"), ("brother", "works_at"), ("Pickles", "pet_species"),
    ("juice|milk", "preference"), ("user", "person_name"),
)

# (subject, relation) pairs the night's abstention examples ask about (``abstain_share``): never
# one of FALSE_PROBES, so the false-recall gate never scores a key the night trained "I don't
# know" on; and never a key the user stated (tonight or earlier), so they contradict nothing.
ABSTAIN_PROBES: tuple[tuple[str, str], ...] = (
    ("uncle", "person_name"), ("aunt", "person_name"), ("godfather", "person_name"), ("twin", "person_name"),
    ("landlord", "person_name"), ("dentist", "person_name"), ("turtle", "pet_name"), ("ferret", "pet_name"),
    ("budgie", "pet_name"), ("essay", "deadline"), ("invoice", "deadline"), ("presentation", "deadline"),
    ("user", "favourite_season"), ("user", "favourite_song"), ("user", "favourite_fruit"),
    ("uncle", "lives_in"), ("aunt", "works_at"), ("father", "job"), ("mother", "birthday"),
    ("godmother", "lives_in"), ("twin", "job"), ("user", "favourite_sport"),
)
ABSTAIN_ANSWERS = ("I don't know. You haven't told me.", "I don't know. You haven't told me that yet.",
                   "I don't know; you haven't mentioned it.")


@dataclass
class NightDataset:
    examples: list[dict]  # mlx-lm chat format, shuffled: train.jsonl
    manifest: dict
    eval_facts: list[EvalItem]
    false_facts: list[EvalItem]
    replay_pool: list[dict]  # tonight's new examples with their source, for later nights to replay
    valid: list[dict] = field(default_factory=list)  # valid.jsonl (never trained on)
    facts: list[Fact] = field(default_factory=list)  # the facts taught tonight


@dataclass
class _Taught:
    fact: Fact
    memory_ids: list[str]
    seqs: list[int]


def _eligible(memory: MemoryRecord) -> str | None:
    """Why a memory is not trained on, or None when it is."""
    if memory.forgotten:
        return "forgotten"
    if "no-train" in memory.tags:
        return "no_train"
    if memory.route not in TRAIN_ROUTES:
        return "not_trained_route"
    if not memory.text.strip():
        return "empty"
    return None


def _resolve(stated: list[tuple[Fact, bool]]) -> tuple[list[_Taught], list[Fact], list[Fact]]:
    """(taught, superseded, withheld) from facts in statement order, each with its memory's eligibility."""
    by_key: dict[tuple[str, str], list[tuple[Fact, bool]]] = {}
    for fact, ok in stated:
        by_key.setdefault(fact.key, []).append((fact, ok))
    taught, superseded, withheld = [], [], []
    for group in by_key.values():
        latest, latest_ok = group[-1]
        if family(latest.relation) in MULTI_VALUED:
            kept = [f for f, ok in group if ok]
            if not kept:
                withheld.append(latest)
                continue
            values = list(dict.fromkeys(f.value.lower() for f in kept))
            spelled = [next(f.value for f in kept if f.value.lower() == v) for v in values]
            last = kept[-1]
            merged = Fact(subject=last.subject, relation=last.relation, value=merge_values(spelled),
                          statement=last.statement, memory_id=last.memory_id, seq=last.seq)
            taught.append(_Taught(merged, _ordered(f.memory_id for f in kept), sorted({f.seq for f in kept})))
            continue
        same = [f for f, _ in group if f.value.lower() == latest.value.lower()]
        superseded += [f for f, _ in group if f.value.lower() != latest.value.lower()]
        if not latest_ok:
            withheld.append(latest)
            continue
        sources = [f for f, ok in group if ok and f.value.lower() == latest.value.lower()]
        taught.append(_Taught(latest, _ordered(f.memory_id for f in sources or same),
                              sorted({f.seq for f in sources or same})))
    return taught, superseded, withheld


def _ordered(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# -- paraphrases -------------------------------------------------------------------
_FIRST_PERSON = re.compile(r"\b(i|my|me|mine|i'm|i've|i'd|myself)\b")


def _clean_text(text: str) -> str:
    text = re.sub(r"^\s*(?:\d+[.)]|[-*•])\s*", "", str(text)).strip().strip("\"'“”").strip()
    return re.sub(r"\s+", " ", text)


def _anchor_words(fact: Fact) -> list[str]:
    """Words a question about this fact must still contain after rewording."""
    fam = family(fact.relation)
    if fam == "preference":
        return fact.subject.split("|")
    if fam == "favourite":
        return [fact.relation.removeprefix("favourite_")]
    if fam == "deadline":
        return [] if fact.subject == "work" else [fact.subject]
    if fact.subject == "user":
        return []
    return [fact.subject]


_GENERIC_WORDS = frozenset(
    "a an the what what's which who whom whose where when how why is are am was were do does did i my me you "
    "your to of in on for at by with from about tell remind know recall can could would should please again "
    "is there any anything if had have has be it that this name".split())


def _topic_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z']+", text.lower()) if w not in _GENERIC_WORDS and len(w) > 2}


def _keep_question(text: str, fact: Fact, banned: set[str]) -> str | None:
    q = _clean_text(text)
    low = q.lower()
    if not q or len(q) > MAX_PARAPHRASE_CHARS or not 3 <= len(q.split()) <= 30 or has_placeholder(q):
        return None
    if normalize(q) in banned:
        return None  # a template (TRAIN or HELDOUT) or a paraphrase already kept
    if not _FIRST_PERSON.search(low) or re.search(r"\byour\b", low):
        return None  # the user asks about themself; "your" would flip whose fact it is
    if any(word.lower() not in low for word in _anchor_words(fact)):
        return None
    templates = questions(fact, "train") + questions(fact, "heldout")
    if not _topic_words(q) & set().union(*(_topic_words(t) for t in templates)):
        return None  # shares no topic word with any template: a question about something else
    if family(fact.relation) != "preference" and re.search(rf"\b{re.escape(fact.value.lower())}\b", low):
        return None  # gives the answer away
    return q


def _keep_answer(text: str, fact: Fact) -> str | None:
    a = _clean_text(text)
    if not a or len(a) > 300 or has_placeholder(a) or fact.value.lower() not in a.lower():
        return None
    return a


def _paraphrases(fact: Fact, question: str, answer: str, paraphraser: Paraphraser, limit: int,
                 banned: set[str], stats: dict[str, int]) -> list[tuple[str, str | None]]:
    try:
        proposals = list(paraphraser(question, answer) or [])
    except Exception:  # a paraphraser is a model call: its failure costs variety, not the night
        stats["errors"] += 1
        return []
    kept: list[tuple[str, str | None]] = []
    for proposal in proposals:
        if len(kept) >= limit:
            break
        q_raw, a_raw = (proposal if isinstance(proposal, (tuple, list)) and len(proposal) == 2
                        else (proposal, None))
        q = _keep_question(q_raw, fact, banned)
        a = _keep_answer(a_raw, fact) if a_raw is not None else None
        if q is None or (a_raw is not None and a is None):
            stats["rejected"] += 1
            continue
        banned.add(normalize(q))
        kept.append((q, a))
        stats["kept"] += 1
    return kept


# -- examples ------------------------------------------------------------------------
def _qa_pairs(fact: Fact, *, phrasings: int, seed: int, paraphraser: Paraphraser | None, max_paraphrases: int,
              stats: dict[str, int]) -> list[tuple[str, str]]:
    rng = random.Random(stable_seed("qa", seed, fact.subject, fact.relation, fact.value))
    train_qs = questions(fact, "train")
    answer_list = answers(fact)
    rng.shuffle(train_qs)
    rng.shuffle(answer_list)
    pairs = []
    for i in range(phrasings):
        # Past the last template the questions repeat; shift the answers so no pair repeats.
        q = train_qs[i % len(train_qs)]
        a = answer_list[(i + i // len(train_qs)) % len(answer_list)]
        pairs.append((q, a))
    if paraphraser is not None and max_paraphrases > 0:
        banned = {normalize(q) for q in questions(fact, "train") + questions(fact, "heldout")}
        extra = _paraphrases(fact, pairs[0][0], pairs[0][1], paraphraser, max_paraphrases, banned, stats)
        for j, (q, a) in enumerate(extra):
            pairs.append((q, a or answer_list[(phrasings + j) % len(answer_list)]))
    return pairs


def _with_system(example: dict, system_prompt: str) -> dict:
    messages = list(example["messages"])
    if messages and messages[0].get("role") != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return {"messages": messages}


def _valid_chat(example: Any) -> bool:
    if not isinstance(example, dict) or not isinstance(example.get("messages"), list) or not example["messages"]:
        return False
    messages = example["messages"]
    return (all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages)
            and messages[-1]["role"] == "assistant" and bool(messages[-1]["content"].strip()))


def _chat_reply(assistant_text: str) -> tuple[str | None, str]:
    """The assistant turn as a training target, or (None, why not)."""
    # The reply can echo what the user said ("Nice to meet you, Anna"): redact it like the user's text.
    reply = redact(assistant_text or "").text.strip()
    if not reply:
        return None, "empty_reply"
    if has_placeholder(reply):
        return None, "placeholder_in_reply"  # never teach the model to say "[NAME]"
    if len(reply) > MAX_REPLY_CHARS:
        return None, "reply_too_long"
    return reply, ""


# -- evaluation items ---------------------------------------------------------------------
def _eval_items(taught: list[_Taught], trained: dict[tuple[str, str], set[str]], *, per_fact: int | None,
                seed: int) -> list[EvalItem]:
    items = []
    for entry in taught:
        fact = entry.fact
        held = [q for q in questions(fact, "heldout") if normalize(q) not in trained.get(fact.key, set())]
        if per_fact is not None and len(held) > per_fact:
            rng = random.Random(stable_seed("heldout", seed, fact.subject, fact.relation))
            picked = set(rng.sample(range(len(held)), per_fact))
            held = [q for i, q in enumerate(held) if i in picked]
        wrong = distractors(fact, 3, seed)
        items += [EvalItem(question=q, answer=fact.value, distractors=list(wrong), kind="fact") for q in held]
    return items


def _unstated(candidates: Sequence[tuple[str, str]], stated_keys: set[tuple[str, str]]) -> list[Fact]:
    """Stand-in facts for the (subject, relation) pairs never stated: only their questions are rendered
    from them (and age distractors center on the stand-in value)."""
    return [Fact(subject=subject, relation=relation, statement="",
                 value=subject.split("|")[0] if relation == "preference" else "30" if relation == "age" else "?")
            for subject, relation in candidates if (subject.lower(), relation) not in stated_keys]


def _false_items(stated_keys: set[tuple[str, str]], *, count: int, seed: int) -> list[EvalItem]:
    probes = _unstated(FALSE_PROBES, stated_keys)
    rng = random.Random(stable_seed("false", seed))
    rng.shuffle(probes)
    items = []
    for probe in probes[:count]:
        subject, relation = probe.subject, probe.relation
        question = rng.choice(questions(probe, "heldout"))
        if relation == "preference":
            wrong = subject.split("|")
        else:
            wrong = [v for v in distractors(probe, 4, seed) if v != "?"][:3]
        items.append(EvalItem(question=question, answer=ABSTAIN, distractors=wrong, kind="false"))
    return items


def _abstentions(excluded: set[tuple[str, str]], *, count: int, seed: int, system: str) -> list[dict]:
    """``count`` questions about never-stated keys answered "I don't know" (distinct questions).

    Why: a night of nothing but answered questions about "my X" teaches that
    every such question has an answer, and the false-recall gate measured
    exactly that on large nights (README "Does it remember?").
    """
    rng = random.Random(stable_seed("abstain", seed))
    pools = []
    for fact in _unstated(ABSTAIN_PROBES, excluded):
        pool = questions(fact, "train")
        rng.shuffle(pool)
        pools.append(pool)
    items: list[dict] = []
    while len(items) < count and any(pools):
        for pool in pools:
            if pool and len(items) < count:
                items.append(chat_example(system, pool.pop(), ABSTAIN_ANSWERS[len(items) % len(ABSTAIN_ANSWERS)]))
    return items


# -- the steps of build_dataset ------------------------------------------------------------------
@dataclass
class _Selection:
    """Tonight's memories in statement order, those trained on, and why the others are not."""

    ordered: list[MemoryRecord]
    eligible: list[MemoryRecord]
    excluded: dict[str, int]
    gone: set[str]  # forgotten memory ids (tonight's and earlier ones): replay from them is dropped


def _select(memories: list[MemoryRecord], forgotten_ids: Collection[str]) -> _Selection:
    ordered = sorted(memories, key=lambda m: (m.seq, m.chunk))
    excluded = {"forgotten": 0, "no_train": 0, "not_trained_route": 0, "empty": 0}
    eligible: list[MemoryRecord] = []
    for memory in ordered:
        reason = _eligible(memory)
        if reason:
            excluded[reason] += 1
        else:
            eligible.append(memory)
    gone = set(forgotten_ids) | {m.memory_id for m in ordered if m.forgotten}
    return _Selection(ordered=ordered, eligible=eligible, excluded=excluded, gone=gone)


def _stated_facts(selection: _Selection) -> list[tuple[Fact, bool]]:
    """Facts from every live memory, each with whether its memory is trained on.

    Not only the eligible ones: a later opted-out statement still supersedes an earlier one.
    """
    eligible_ids = {m.memory_id for m in selection.eligible}
    stated: list[tuple[Fact, bool]] = []
    for memory in selection.ordered:
        if memory.forgotten or not memory.text.strip():
            continue
        for fact in extract_facts(memory.text, memory_id=memory.memory_id, seq=memory.seq, ts=memory.ts):
            stated.append((fact, memory.memory_id in eligible_ids))
    return stated


def _qa_examples(taught: list[_Taught], system: str, *, phrasings: int, seed: int,
                 paraphraser: Paraphraser | None, max_paraphrases: int, texts: dict[str, str],
                 ) -> tuple[list[dict], dict[tuple[str, str], set[str]], dict[str, int]]:
    """(examples with their source, the normalised questions trained per key, paraphrase counts).

    Each example's ``context`` is the text of the memories its fact came
    from: what chat would recall into the prompt, and what the distillation
    teacher reads (services/trainer/distill.py; the SFT objective ignores it).
    """
    stats = {"kept": 0, "rejected": 0, "errors": 0}
    examples: list[dict] = []
    trained_questions: dict[tuple[str, str], set[str]] = {}
    for entry in taught:
        pairs = _qa_pairs(entry.fact, phrasings=phrasings, seed=seed, paraphraser=paraphraser,
                          max_paraphrases=max_paraphrases, stats=stats)
        trained_questions[entry.fact.key] = {normalize(q) for q, _ in pairs}
        context = [texts[mid] for mid in entry.memory_ids if texts.get(mid)]
        for q, a in pairs:
            examples.append({**chat_example(system, q, a), "context": context,
                             "source": {"kind": "qa", "fact": list(entry.fact.key),
                                        "memory_ids": entry.memory_ids, "seqs": entry.seqs}})
    return examples, trained_questions, stats


def _chat_examples(selection: _Selection, stated: list[tuple[Fact, bool]],
                   turns: dict[int, tuple[str, str]] | None, system: str,
                   ) -> tuple[list[dict], set[str], dict[str, int]]:
    """(assistant-turn examples with their source, the memory ids they teach, skipped turns by reason)."""
    fact_seqs = {f.seq for f, _ in stated}
    chunks_per_seq: dict[int, int] = {}
    for memory in selection.ordered:
        chunks_per_seq[memory.seq] = chunks_per_seq.get(memory.seq, 0) + 1
    examples: list[dict] = []
    taught_ids: set[str] = set()
    skipped: dict[str, int] = {}
    for memory in selection.eligible:
        if memory.seq in fact_seqs:
            continue
        reply, why = _chat_target(memory, turns, chunks_per_seq)
        if reply is None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        examples.append({**chat_example(system, memory.text.strip(), reply),
                         "source": {"kind": "chat", "memory_ids": [memory.memory_id], "seqs": [memory.seq]}})
        taught_ids.add(memory.memory_id)
    return examples, taught_ids, skipped


def _chat_target(memory: MemoryRecord, turns: dict[int, tuple[str, str]] | None,
                 chunks_per_seq: dict[int, int]) -> tuple[str | None, str]:
    """The reply to teach for this memory's turn, or (None, why not)."""
    if memory.route not in CHAT_ROUTES:
        return None, "route_both_left_to_recall"
    if turns is None or memory.seq not in turns:
        return None, "no_turn"
    if chunks_per_seq.get(memory.seq, 0) > 1:
        return None, "multi_chunk_turn"
    return _chat_reply(turns[memory.seq][1])


def _identity(identity_examples: list[dict] | None, system: str) -> list[dict]:
    given = default_identity(system) if identity_examples is None else identity_examples
    return [_with_system(e, system) for e in given if _valid_chat(e)]


def _replayed(replay: Sequence[dict], stated_keys: set[tuple[str, str]], gone: set[str],
              ) -> tuple[list[dict], dict[str, int], set[str]]:
    """Earlier nights' examples still worth teaching, how many were dropped by reason, and the
    memory ids the kept ones came from (what the adapter will hold: services/trainer/forgets.py)."""
    dropped = {"invalid": 0, "superseded": 0, "forgotten": 0}
    kept: list[dict] = []
    sources: set[str] = set()
    for item in replay:
        if not _valid_chat(item):
            dropped["invalid"] += 1
            continue
        source = item.get("source") or {}
        fact_key = source.get("fact")
        if isinstance(fact_key, list) and len(fact_key) == 2 and (str(fact_key[0]).lower(), fact_key[1]) in stated_keys:
            dropped["superseded"] += 1
            continue
        if gone & set(source.get("memory_ids") or ()):
            dropped["forgotten"] += 1
            continue
        kept.append(_trained_fields(item))
        sources.update(str(m) for m in source.get("memory_ids") or () if isinstance(m, str))
    return kept, dropped, sources


def _trained_fields(example: dict) -> dict:
    """What train.jsonl keeps of an example: its messages, and its teacher context when it has one."""
    context = example.get("context")
    if isinstance(context, list) and context and all(isinstance(c, str) for c in context):
        return {"messages": example["messages"], "context": context}
    return {"messages": example["messages"]}


def _shuffled(new_examples: list[dict], identity: list[dict], abstain: list[dict], replayed: list[dict],
              seed: int) -> tuple[list[dict], dict[str, int]]:
    """train.jsonl's examples in their seeded order, and how many of each kind."""
    kinds = ([e["source"]["kind"] for e in new_examples] + ["identity"] * len(identity)
             + ["abstain"] * len(abstain) + ["replay"] * len(replayed))
    examples = [_trained_fields(e) for e in new_examples] + identity + abstain + replayed
    order = list(range(len(examples)))
    random.Random(stable_seed("shuffle", seed)).shuffle(order)
    counts = {kind: sum(1 for k in kinds if k == kind) for kind in KINDS}
    return [examples[i] for i in order], counts


@dataclass
class _Night:
    """What the steps found, for the manifest."""

    selection: _Selection
    taught: list[_Taught]
    superseded: list[Fact]
    withheld: list[Fact]
    taught_ids: set[str]
    chat_skipped: dict[str, int]
    paraphrases: dict[str, int]
    replay_dropped: dict[str, int]
    replayed_ids: set[str] = field(default_factory=set)


def _manifest(night: _Night, examples: list[dict], counts: dict[str, int], eval_counts: tuple[int, int], *,
              phrasings: int, max_paraphrases: int, seed: int, system: str) -> dict:
    sel = night.selection
    contributed = [m for m in sel.ordered if m.memory_id in night.taught_ids]
    return {
        "version": DATASET_VERSION,
        "counts": counts,
        "total": len(examples),
        "source_seqs": sorted({m.seq for m in contributed}),
        "memory_ids": [m.memory_id for m in contributed],
        "max_seq": max((m.seq for m in sel.ordered), default=0),
        "facts": [{**e.fact.to_dict(), "memory_ids": e.memory_ids, "seqs": e.seqs} for e in night.taught],
        "superseded": [f.to_dict() for f in night.superseded],
        "withheld": [f.to_dict() for f in night.withheld],
        "excluded": sel.excluded,
        "untaught": [m.memory_id for m in sel.eligible if m.memory_id not in night.taught_ids],
        "chat_skipped": night.chat_skipped,
        "paraphrases": night.paraphrases,
        "replay_dropped": night.replay_dropped,
        # Forgets reach the weights (services/trainer/forgets.py): the memories the replayed
        # examples came from, and every memory forgotten before this dataset was built (none of
        # its examples came from one).
        "replayed_memory_ids": sorted(night.replayed_ids),
        "honours_forgets": sorted(sel.gone),
        "eval": {"facts": eval_counts[0], "false": eval_counts[1], "abstain": ABSTAIN},
        "phrasings": phrasings,
        "max_paraphrases": max_paraphrases,
        "seed": seed,
        "system_prompt": system,
    }


# -- the entry point --------------------------------------------------------------------------
def build_dataset(memories: list[MemoryRecord], *, replay: Sequence[dict] = (),
                  turns: dict[int, tuple[str, str]] | None = None, phrasings: int = 5,
                  paraphraser: Paraphraser | None = None, seed: int = 0,
                  identity_examples: list[dict] | None = None, system_prompt: str | None = None,
                  max_paraphrases: int = 2, heldout_per_fact: int | None = 2, false_count: int = 12,
                  known_facts: Iterable[Fact | tuple[str, str]] = (),
                  forgotten_ids: Collection[str] = (), abstain_share: float = 0.0) -> NightDataset:
    """The night's dataset from these memories (see the module docstring for every rule).

    ``replay``: earlier nights' ``replay_pool`` entries (already sampled by the
    caller). ``turns``: seq -> (user_text, assistant_text) of the chat turns.
    ``paraphraser(question, answer)``: rewordings of the question (strings),
    or (question, answer) tuples. ``known_facts``: facts (or (subject,
    relation) keys) taught on earlier nights, never used as false-recall
    probes. ``forgotten_ids``: memories forgotten since earlier nights; replay
    entries that came from them are dropped. ``abstain_share``: abstention
    examples to add, as a share of tonight's question/answer examples.
    """
    if phrasings < 1:
        raise ValueError("phrasings must be at least 1")
    system = system_prompt or DEFAULT_SYSTEM_PROMPT
    selection = _select(memories, forgotten_ids)
    stated = _stated_facts(selection)
    stated_keys = {fact.key for fact, _ in stated}
    taught, superseded, withheld = _resolve(stated)
    qa, trained_questions, paraphrases = _qa_examples(taught, system, phrasings=phrasings, seed=seed,
                                                      paraphraser=paraphraser, max_paraphrases=max_paraphrases,
                                                      texts={m.memory_id: m.text.strip() for m in selection.eligible})
    chat, chat_ids, chat_skipped = _chat_examples(selection, stated, turns, system)
    new_examples = qa + chat  # with "source", for the replay pool
    replayed, replay_dropped, replayed_ids = _replayed(replay, stated_keys, selection.gone)
    known = {(k.key if isinstance(k, Fact) else (str(k[0]).lower(), str(k[1]))) for k in known_facts}
    abstain = _abstentions(stated_keys | known, count=round(len(qa) * abstain_share), seed=seed, system=system)
    examples, counts = _shuffled(new_examples, _identity(identity_examples, system), abstain, replayed, seed)

    eval_facts = _eval_items(taught, trained_questions, per_fact=heldout_per_fact, seed=seed)
    false_facts = _false_items(stated_keys | known, count=false_count, seed=seed)

    taught_ids = {mid for entry in taught for mid in entry.memory_ids} | chat_ids
    night = _Night(selection=selection, taught=taught, superseded=superseded, withheld=withheld,
                   taught_ids=taught_ids, chat_skipped=chat_skipped, paraphrases=paraphrases,
                   replay_dropped=replay_dropped, replayed_ids=replayed_ids)
    manifest = _manifest(night, examples, counts, (len(eval_facts), len(false_facts)), phrasings=phrasings,
                         max_paraphrases=max_paraphrases if paraphraser is not None else 0, seed=seed,
                         system=system)
    return NightDataset(examples=examples, manifest=manifest, eval_facts=eval_facts, false_facts=false_facts,
                        replay_pool=new_examples, valid=valid_examples(system),
                        facts=[e.fact for e in taught])


# -- files ----------------------------------------------------------------------------------
def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


def save_dataset(ds: NightDataset, directory: Path) -> None:
    """Write train.jsonl, valid.jsonl, eval.json and manifest.json into ``directory``.

    Each file is replaced atomically (temp file, fsync, rename); manifest.json
    is written last and records every other file's sha256, so a manifest that
    is present means a complete dataset. Mode 0600: it is what the user said.
    """
    import hashlib

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = {
        "train.jsonl": _jsonl(ds.examples),
        "valid.jsonl": _jsonl(ds.valid),
        "eval.json": json.dumps({"facts": msgspec.to_builtins(ds.eval_facts),
                                 "false_facts": msgspec.to_builtins(ds.false_facts),
                                 "abstain": ABSTAIN}, ensure_ascii=False, indent=1).encode(),
    }
    for name, data in files.items():
        write_atomic(directory / name, data)
    manifest = {**ds.manifest, "files": {name: {"sha256": hashlib.sha256(data).hexdigest(),
                                                "lines": data.count(b"\n")} for name, data in files.items()}}
    write_atomic(directory / "manifest.json", json.dumps(manifest, ensure_ascii=False, indent=1,
                                                         sort_keys=True).encode())


def load_eval(directory: Path) -> tuple[list[EvalItem], list[EvalItem]]:
    """(facts, false_facts) from a saved dataset's eval.json."""
    data = json.loads((Path(directory) / "eval.json").read_text())
    return (msgspec.convert(data["facts"], list[EvalItem]), msgspec.convert(data["false_facts"], list[EvalItem]))
