#!/usr/bin/env python
"""Which wording of recalled memories makes the embedded model answer about the *user*?

Usage: .venv/bin/python bench/bench_framing.py [--max-tokens N] [--framings a,b]

Issue 12, part 4: with "I work as a nurse" in its context the 135M model
answered as if it were itself a nurse. For each framing in
services/lib/prompts/framing.py, the same 12 questions about the user's life are
asked in a fresh session, greedy, with three recalled memories in the prompt
(the right one and two others, the right one at a rotating position: as
recall gives them). One memory holds a redaction placeholder ([EMAIL]).

Per framing: correct (the reply contains the fact's value), second_person
(the reply says "you"/"your"), first_person (a sentence of the reply that
holds the user's fact also says "I"/"my": the model took the fact as its
own), placeholder (a reply contains "[...]"). Baseline: ``context_plain``,
the framing before issue 12, in the same run.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import emit, progress, resolve_model_or_exit  # noqa: E402

FACTS = [  # (memory as the user said it, question, what a right answer contains)
    ("Hi! My name is Priya and my dog is called Biscuit.", "What is my dog called?", "biscuit"),
    ("Hi! My name is Priya and my dog is called Biscuit.", "What is my name?", "priya"),
    ("I work as a nurse at St. Olaf hospital.", "Where do I work?", "olaf"),
    ("Actually, we moved from Leeds to Bristol.", "Where do we live now?", "bristol"),
    ("My sister Mara lives in Lisbon.", "Where does my sister live?", "lisbon"),
    ("I'm allergic to peanuts.", "What am I allergic to?", "peanut"),
    ("My favourite colour is green.", "What is my favourite colour?", "green"),
    ("My boss is called Karen Holt.", "What is my boss called?", "karen"),
    ("I play the cello in a small orchestra.", "What instrument do I play?", "cello"),
    ("My daughter's birthday is March 14.", "When is my daughter's birthday?", "march"),
    ("I drive an old blue Volvo.", "What car do I drive?", "volvo"),
    ("My aunt's email is [EMAIL] and she lives in Cork.", "Where does my aunt live?", "cork"),
]
_FIRST = re.compile(r"\b(i|i'm|i am|my|me)\b", re.IGNORECASE)
_SECOND = re.compile(r"\b(you|your|you're)\b", re.IGNORECASE)
_BRACKET = re.compile(r"\[[^\]]{1,40}\]")


def first_person_about(reply: str, gold: str) -> bool:
    return any(gold in s.lower() and _FIRST.search(s) for s in re.split(r"(?<=[.!?])\s+", reply))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--framings", default="", help="comma-separated subset of services/lib/prompts/framing.FRAMINGS")
    args = parser.parse_args()
    model_dir = resolve_model_or_exit("bench_framing", None)

    from services.chat.engine import ChatEngine, TurnCallbacks, TurnRequest
    from services.common.config import ChatConfig
    from services.lib.models.compute import load_for_serving
    from services.lib.prompts import framing

    names = [n for n in args.framings.split(",") if n] or list(framing.FRAMINGS)
    unknown = [n for n in names if n not in framing.FRAMINGS]
    if unknown:
        print(f"bench_framing: unknown framing {unknown}; choose from {sorted(framing.FRAMINGS)}", file=sys.stderr)
        return 2
    model, tokenizer, _ = load_for_serving(model_dir, "auto")
    engine = ChatEngine(model, tokenizer, model_name=model_dir.name, config=ChatConfig(recall=False))
    results: dict[str, dict] = {}
    chosen = framing.FRAMING
    for name in names:
        rows, started = [], time.perf_counter()
        for i, (memory, question, gold) in enumerate(FACTS):
            others = [FACTS[(i + 3) % len(FACTS)][0], FACTS[(i + 6) % len(FACTS)][0]]
            memories = others[:i % 3] + [memory] + others[i % 3:]
            message = framing.with_memories(question, memories, name)
            turn = engine.run_turn(TurnRequest(request_id=f"f{name}{i}", session_id=f"{name}-{i}", message=message,
                                               max_tokens=args.max_tokens, temperature=0.0, recall=False),
                                   TurnCallbacks(on_start=lambda _i: None, on_delta=lambda _d: None,
                                                 should_cancel=lambda: False))
            reply = turn.assistant_text
            rows.append({"q": question, "reply": reply, "correct": gold in reply.lower(),
                         "second_person": bool(_SECOND.search(reply)),
                         "first_person": first_person_about(reply, gold), "placeholder": bool(_BRACKET.search(reply))})
            progress(name, i, rows[-1]["correct"], reply[:80])
        n = len(rows)
        results[name] = {
            "correct": round(sum(r["correct"] for r in rows) / n, 3),
            "second_person": round(sum(r["second_person"] for r in rows) / n, 3),
            "first_person_about_user": round(sum(r["first_person"] for r in rows) / n, 3),
            "placeholder_replies": sum(r["placeholder"] for r in rows),
            "seconds": round(time.perf_counter() - started, 1),
            "replies": [r["reply"] for r in rows],
        }
    base = results.get("context_plain")
    emit({"bench": "framing", "model": model_dir.name, "questions": len(FACTS), "max_tokens": args.max_tokens,
          "chosen": chosen, "framings": results,
          "vs_context_plain": {n: {"correct_delta": round(r["correct"] - base["correct"], 3),
                                   "first_person_delta": round(r["first_person_about_user"]
                                                               - base["first_person_about_user"], 3)}
                               for n, r in results.items()} if base else None})
    return 0


if __name__ == "__main__":
    sys.exit(main())
