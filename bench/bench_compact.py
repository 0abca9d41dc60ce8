#!/usr/bin/env python
"""Which threshold `circ memory compact` merges at: restatements merged vs different facts merged.

Usage: .venv/bin/python bench/bench_compact.py [--negatives 200] [--everyday 150] [--seed 0]
       [--thresholds 0.85,0.88,0.9,0.92,0.93,0.94,0.95,0.97]

The day: the 66 facts of ``bench/data/paraphrase_set.json`` (bench_retrieval's
set), each also said again later in other words ("Remember that my sister Ana
lives in Lisbon.", "Just so you know, …", "As I said, …", "Oh, and …"),
``--negatives`` hard negatives (facts about *other* people, pets, projects and
places: bench_retrieval's generator) and ``--everyday`` turns of
bench_ingest's mix (remarks, code, PII, long pastes), shuffled, all through
the real ``IngestCore`` (redactor, learned router, the live near-duplicate
check at cosine 0.97) on a temporary index. Then, for each threshold,
``services.ingest.compact.find_merges`` on that index:

- ``restatements_merged``: restatements (stored, not already skipped at
  ingest) merged into a memory of the same fact, over all such restatements;
- ``false_merges``: merges of two memories of different facts (or of a fact
  with a negative, or of two negatives that differ in a word of fact);
  ``repeated_negatives_merged``: two negatives the generator made the same
  (right merges); ``other_merges``: merges among unlabelled everyday turns,
  with a few examples, to read.

Each threshold twice: with compact's word check (``word_check``: the merged
memory adds no word of fact to the kept one) and by cosine alone.

Also ``skipped_at_ingest``: restatements the live check (0.97) already skipped.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import emit, machine_load, progress  # noqa: E402

from services.common.blas import preload_openblas  # noqa: E402

BLAS = preload_openblas()

from bench_ingest import make_envelope, turn_mix  # noqa: E402
from bench_retrieval import hard_negative, load_models, load_set  # noqa: E402

RESTATEMENTS = ("Remember that {lc}", "Just so you know, {lc}", "As I said, {lc}", "Oh, and {lc}")


def _lower_first(text: str) -> str:
    return text if text.startswith(("I ", "I'")) else text[0].lower() + text[1:]


def build_day(seed: int, negatives: int, everyday: int) -> list[tuple[str, str, str | None]]:
    """(kind, text, fact id or None): each fact first, its restatement later; deterministic."""
    rnd = random.Random(seed)
    facts = load_set()
    first = [("fact", f["text"], f["id"]) for f in facts]
    first += [("negative", hard_negative(rnd), None) for _ in range(negatives)]
    first += [(kind, text, None) for kind, text in turn_mix(everyday, seed=seed + 3)]
    rnd.shuffle(first)
    again = [("restatement", rnd.choice(RESTATEMENTS).format(lc=_lower_first(f["text"])), f["id"]) for f in facts]
    rnd.shuffle(again)
    return first + again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--negatives", type=int, default=200)
    parser.add_argument("--everyday", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thresholds", default="0.85,0.88,0.9,0.92,0.93,0.94,0.95,0.97")
    args = parser.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]

    from protocol.events import MemorySkipped
    from services.common.logging import configure_logging
    from services.ingest.compact import NO_FACT_WORDS, find_merges, words

    def content(text: str) -> frozenset[str]:
        return frozenset(words(text) - NO_FACT_WORDS)
    from services.ingest.core import IngestCore
    from services.lib.memory.index import MemoryIndex

    configure_logging("bench_compact", "warning")  # structlog lines to stderr, not into the JSON
    embedder, router, _ = load_models("minilm")
    day = build_day(args.seed, args.negatives, args.everyday)
    rnd = random.Random(args.seed)
    label: dict[int, tuple[str, str | None]] = {}
    skipped_restatements = 0
    with tempfile.TemporaryDirectory(prefix="bench-compact-") as tmp:
        index = MemoryIndex(Path(tmp) / "memory", embedder.dim)
        core = IngestCore(index, embedder, router=router)
        started = time.perf_counter()
        for seq, (kind, text, fact) in enumerate(day, start=1):
            events: list = []
            core.handle(make_envelope(seq, text, rnd), events.append)
            label[seq] = (kind, fact)
            if kind == "restatement" and isinstance(events[-1].body, MemorySkipped):
                skipped_restatements += 1
        progress(f"ingested {len(day)} turns in {time.perf_counter() - started:.1f} s")
        stored = [r for r in index.list(limit=100_000)]
        restated = sum(1 for r in stored if label[r.seq][0] == "restatement" and r.chunk == 0)
        rows = []
        for threshold, word_check in [(t, True) for t in thresholds] + [(t, False) for t in thresholds]:
            started = time.perf_counter()
            merges, compared = find_merges(index, threshold, word_check=word_check)
            seconds = time.perf_counter() - started
            good = false = other = good_negative = 0
            false_examples, other_examples = [], []
            for merge in merges:
                kept_kind, kept_fact = label[merge.kept.seq]
                for record, score in merge.merged:
                    kind, fact = label[record.seq]
                    if fact is not None and fact == kept_fact and kind == "restatement":
                        good += 1
                    elif kind == kept_kind == "negative" and content(record.text) == content(merge.kept.text):
                        good_negative += 1  # the generator said the same thing twice: a right merge
                    elif fact is None and kept_fact is None and kind not in ("negative",) \
                            and kept_kind not in ("negative",):
                        other += 1
                        if len(other_examples) < 3:
                            other_examples.append([merge.kept.text[:80], record.text[:80], round(score, 4)])
                    else:
                        false += 1
                        if len(false_examples) < 5:
                            false_examples.append([merge.kept.text[:80], record.text[:80], round(score, 4)])
            rows.append({"threshold": threshold, "word_check": word_check, "restatements_merged": good, "restatements_stored": restated,
                         "restatement_recall": round(good / restated, 4) if restated else None,
                         "false_merges": false, "other_merges": other, "repeated_negatives_merged": good_negative, "false_examples": false_examples,
                         "other_examples": other_examples, "compared": compared,
                         "find_merges_s": round(seconds, 3)})
            progress(f"threshold {threshold}{'' if word_check else ' (cosine only)'}: {good}/{restated} "
                     f"restatements merged, {false} false, {other} other, {good_negative} repeated negatives")
        index.close()
    emit({"bench": "bench_compact", "seed": args.seed, "turns": len(day), "facts": len(load_set()),
          "negatives": args.negatives, "everyday": args.everyday, "blas": BLAS.name,
          "skipped_at_ingest": skipped_restatements, "memories": len(stored), "machine": machine_load(),
          "thresholds": rows})


if __name__ == "__main__":
    main()
