"""What the memory benchmark measures, with the evaluator's own metric code.

Every figure here comes from ``services.evaluator`` (``measure``,
``score_items``, ``adapter_applied``, the false-recall probes of the night's
dataset): the gates that decide a promotion and the benchmark that reports
on it cannot disagree about what "recalled" means.

Fact recall is multiple choice by log-likelihood: the right value against
three same-type distractors (chance 25%); for an updated fact the old value
is one of the distractors, so "the latest value wins" is what is scored.
Questions come from ``services.lib.facts.TEMPLATES``: ``train`` wording
(what the adapter was taught) and ``heldout`` wording (never trained on).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.trainer_api import EvalItem
from services.chat.engine import with_memories
from services.evaluator.core import measure
from services.lib.adapters.apply import adapter_applied
from services.lib.facts import Fact, distractors, questions, stable_seed
from services.lib.models.scoring import DEFAULT_NORMALIZE, Scorer, greedy_results, score_items
from services.trainer.dataset import _false_items

QUESTIONS_PER_FACT = 2  # per wording; two keep 100 facts to ~400 scored items
GREEDY_SAMPLE = 10

RecallFn = Callable[[str], list[tuple[int, str]]]  # query -> [(turn_seq, text)], best first


@dataclass(frozen=True)
class Probe:
    """One fact to ask about: its key, the value that should win, and where it was said."""

    subject: str
    relation: str
    value: str
    previous: str | None = None  # the value an update replaced (must lose)
    turn_seq: int = 0  # the chat turn that stated the value (for retrieval recall)

    def fact(self) -> Fact:
        return Fact(subject=self.subject, relation=self.relation, value=self.value, statement="")


def fact_items(probes: Sequence[Probe], wording: str, *, per_fact: int = QUESTIONS_PER_FACT,
               seed: int = 0) -> list[tuple[Probe, EvalItem]]:
    """Multiple-choice items for each probe in ``wording`` ("train" or "heldout")."""
    out = []
    for probe in probes:
        fact = probe.fact()
        asked = questions(fact, wording)
        rng = random.Random(stable_seed("bench", wording, seed, probe.subject, probe.relation))
        rng.shuffle(asked)
        wrong = [v for v in distractors(fact, 4, seed) if v != probe.previous][:3]
        if probe.previous:
            wrong = [probe.previous, *wrong[:2]]
        for question in asked[:per_fact]:
            out.append((probe, EvalItem(question=question, answer=probe.value, distractors=wrong, kind="fact")))
    return out


def false_items(stated: set[tuple[str, str]], count: int = 12, seed: int = 0) -> list[EvalItem]:
    """Questions about facts never stated (the night dataset's own probes)."""
    return _false_items({(s.lower(), r) for s, r in stated}, count=count, seed=seed)


def _rate(correct: Sequence[bool]) -> float | None:
    return round(sum(correct) / len(correct), 4) if correct else None


class Measurer:
    """One loaded model; measures the bare model or any adapter directory on it."""

    def __init__(self, model: Any, tokenizer: Any, system_prompt: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self._base_fixed: dict[str, float] | None = None

    def base_fixed(self) -> dict[str, float]:
        """The bare model's canary, perplexity and format figures (measured once)."""
        if self._base_fixed is None:
            self._base_fixed = measure(self.model, self.tokenizer, system_prompt=self.system_prompt)
        return self._base_fixed

    def recall(self, items: Sequence[tuple[Probe, EvalItem]]) -> list[bool]:
        if not items:
            return []
        scorer = Scorer(self.model, self.tokenizer, self.system_prompt)
        scored = score_items(self.model, self.tokenizer, [item for _, item in items],
                             normalize=DEFAULT_NORMALIZE, scorer=scorer)
        return [s.correct for s in scored]

    def run(self, adapter_dir: Path | None, *, night: Sequence[Probe], earlier: Sequence[Probe],
            updated: Sequence[Probe], false: Sequence[EvalItem], rag: RagContext | None = None,
            fixed: bool = True, seed: int = 0) -> dict[str, Any]:
        """Every figure for one condition: the model with ``adapter_dir`` on (None: bare)."""
        base = self.base_fixed() if fixed else {}  # on the bare model, before the adapter goes on
        with adapter_applied(self.model, adapter_dir, role="condition"):
            held = fact_items(night, "heldout", seed=seed)
            trained = fact_items(night, "train", seed=seed)
            out: dict[str, Any] = {
                "recall_adapter_heldout": _rate(self.recall(held)),
                "recall_adapter_trained": _rate(self.recall(trained)),
                "retention": _rate(self.recall(fact_items(earlier, "heldout", seed=seed))),
                "recall_updated": _rate(self.recall(fact_items(updated, "heldout", seed=seed))),
            }
            figures = measure(self.model, self.tokenizer, false_facts=list(false), fixed=fixed,
                              system_prompt=self.system_prompt)
            out["false_recall"] = round(figures["false_recall"], 4) if "false_recall" in figures else None
            sample = [item for _, item in held[::max(1, len(held) // GREEDY_SAMPLE)]][:GREEDY_SAMPLE]
            found = greedy_results(self.model, self.tokenizer, sample, 24, system_prompt=self.system_prompt)
            out["greedy_recall"] = _rate([ok for _, _, ok in found])
            out["greedy_examples"] = [{"question": q, "reply": r, "ok": ok} for q, r, ok in found[:3]]
            if fixed:
                out["canary_acc"] = round(figures["canary_acc"], 4)
                out["canary_delta_pts"] = round((figures["canary_acc"] - base["canary_acc"]) * 100, 2)
                out["ppl"] = round(figures["ppl"], 3)
                out["ppl_drift_pct"] = round((figures["ppl"] / base["ppl"] - 1) * 100, 2)
                out["format_ok"] = round(figures["format_ok"], 4)
                out["format_delta"] = round(figures["format_ok"] - base["format_ok"], 4)
            # Present in every condition (None: not part of it), so reports line up.
            out.update({"recall_rag": None, "retrieval_recall_at_1": None, "retrieval_recall_at_5": None})
            if rag is not None:
                out.update(rag.score(self, night, seed=seed))
        return out


class RagContext:
    """Recall through the running ingest daemon, as chat does it, for RAG figures."""

    def __init__(self, recall_for_prompt: RecallFn, recall_top: RecallFn) -> None:
        # for_prompt: chat's k and min_score (what chat would put in the prompt);
        # top: k=5, no floor (retrieval recall@1/@5).
        self.recall_for_prompt = recall_for_prompt
        self.recall_top = recall_top
        self._cache: dict[str, tuple[list[tuple[int, str]], list[tuple[int, str]]]] = {}

    def _recalled(self, question: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        if question not in self._cache:
            self._cache[question] = (self.recall_for_prompt(question), self.recall_top(question))
        return self._cache[question]

    def score(self, measurer: Measurer, night: Sequence[Probe], *, seed: int = 0) -> dict[str, Any]:
        items = fact_items(night, "heldout", seed=seed)
        at1, at5, prompted = [], [], []
        for probe, item in items:
            in_prompt, top = self._recalled(item.question)
            seqs = [seq for seq, _ in top]
            at1.append(probe.turn_seq in seqs[:1])
            at5.append(probe.turn_seq in seqs[:5])
            context = with_memories(item.question, [(str(seq), text) for seq, text in in_prompt])
            prompted.append((probe, EvalItem(question=context, answer=item.answer,
                                             distractors=list(item.distractors), kind="fact")))
        return {"recall_rag": _rate(measurer.recall(prompted)),
                "retrieval_recall_at_1": _rate(at1), "retrieval_recall_at_5": _rate(at5)}
