"""Routing accuracy on the held-out labelled set: rules alone, classifier alone, rules then classifier.

    .venv/bin/python bench/bench_router.py [--show-errors 10] [--no-save]

Trains the router on ``services/ingest/seed/routes.jsonl`` (L2 strength and
abstention threshold chosen by cross-validation on that file only), then
evaluates on ``services/ingest/seed/routes_heldout.jsonl``, which training
never sees:

- ``rules``: ``route.route_default`` (the rules, and their fallback);
- ``classifier``: the logistic regression alone, argmax, no abstention;
- ``router``: the shipped :class:`LearnedRouter` (rules when they fire, else
  the classifier, abstaining to "both" below the threshold).

For each: accuracy (with a Wilson 95% interval: the held-out set is small),
per-class precision/recall/F1, confusion matrix (rows = gold, columns =
predicted), and for the router the abstention rate and how many items the
rules decided. Prints one JSON object on stdout (benchlib convention); the
markdown table goes to stderr too, and is also in the JSON under ``table``.
Unless ``--no-save``, the trained weights are cached where
``route_model.load_or_train`` looks for them (the same fit it would make).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.benchlib import emit, fail, progress  # noqa: E402
from services.common.blas import preload_openblas  # noqa: E402

BLAS = preload_openblas()  # before anything imports mlx

from services.ingest import route_model as rm  # noqa: E402
from services.ingest.route import ROUTES, route_default, rule_route  # noqa: E402


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(centre - half, 4), round(centre + half, 4)


def evaluate(gold: list[str], pred: list[str]) -> dict:
    classes = list(ROUTES)
    confusion = [[sum(1 for g, p in zip(gold, pred, strict=True) if g == gc and p == pc) for pc in classes] for gc in classes]
    per_class = {}
    for i, c in enumerate(classes):
        tp = confusion[i][i]
        predicted = sum(row[i] for row in confusion)
        actual = sum(confusion[i])
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                        "support": actual}
    correct = sum(g == p for g, p in zip(gold, pred, strict=True))
    return {"accuracy": round(correct / len(gold), 4), "accuracy_ci95": wilson(correct, len(gold)),
            "correct": correct, "n": len(gold), "per_class": per_class,
            "confusion": {"classes": classes, "rows_gold_cols_pred": confusion}}


def markdown(results: dict, router_extra: dict) -> str:
    classes = list(ROUTES)
    lines = ["| system | accuracy (95% CI) | " + " | ".join(f"{c} P/R" for c in classes) + " | abstain |",
             "|---|---|" + "---|" * len(classes) + "---|"]
    names = {"rules": "rules + fallback (`route_default`)", "classifier": "classifier alone",
             "router": "rules, then classifier (`LearnedRouter`)"}
    for key, label in names.items():
        r = results[key]
        lo, hi = r["accuracy_ci95"]
        cells = [f"{r['per_class'][c]['precision']:.2f}/{r['per_class'][c]['recall']:.2f}" for c in classes]
        abstain = f"{router_extra['abstention_rate']:.1%}" if key == "router" else "-"
        lines.append(f"| {label} | {r['accuracy']:.1%} ({lo:.0%}-{hi:.0%}) | " + " | ".join(cells)
                     + f" | {abstain} |")
    conf = results["router"]["confusion"]["rows_gold_cols_pred"]
    lines += ["", "Router confusion (rows = gold, columns = predicted):", "",
              "| gold \\ pred | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    lines += [f"| {c} | " + " | ".join(str(v) for v in conf[i]) + " |" for i, c in enumerate(classes)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=rm.SEED_FILE)
    parser.add_argument("--heldout", type=Path, default=rm.HELDOUT_FILE)
    parser.add_argument("--show-errors", type=int, default=0, help="print up to N router mistakes to stderr")
    parser.add_argument("--no-save", action="store_true", help="do not cache the trained weights")
    args = parser.parse_args()

    from services.ingest.embed import Embedder, EmbedderUnavailable

    try:
        started = time.perf_counter()
        embedder = Embedder()
        load_s = time.perf_counter() - started
    except EmbedderUnavailable as exc:
        fail("bench_router", str(exc))
    train_examples = rm.load_examples(args.train)
    heldout = rm.load_examples(args.heldout)
    overlap = {e.text.strip().lower() for e in train_examples} & {e.text.strip().lower() for e in heldout}
    if overlap:
        fail("bench_router", f"{len(overlap)} held-out texts also appear in the training set")

    progress(f"training on {len(train_examples)} examples ({args.train.name})")
    seed_sha = rm.file_sha256(args.train)
    weights = rm.train(train_examples, embedder, seed_sha256=seed_sha)
    saved = None
    if not args.no_save:
        saved = str(rm.save(weights, rm.default_path(seed_sha)))
    router = rm.LearnedRouter(weights, embedder)

    progress(f"evaluating on {len(heldout)} held-out examples ({args.heldout.name})")
    texts = [e.text for e in heldout]
    gold = [e.label for e in heldout]
    started = time.perf_counter()
    vectors = rm.embed_texts(embedder, texts)
    heldout_embed_s = time.perf_counter() - started

    rules_pred = [route_default(t).route for t in texts]
    classifier_pred = [router.classify(t, v).route for t, v in zip(texts, vectors, strict=True)]
    started = time.perf_counter()
    router_decisions = [router(t, v) for t, v in zip(texts, vectors, strict=True)]
    decide_ms = (time.perf_counter() - started) * 1000 / len(texts)
    router_pred = [d.route for d in router_decisions]

    by_rules = [rule_route(t) is not None for t in texts]
    abstained = [d.reason.startswith("classifier unsure") for d in router_decisions]
    rules_correct = sum(1 for r, p, g in zip(by_rules, router_pred, gold, strict=True) if r and p == g)
    classifier_open = [(p, g) for r, p, g in zip(by_rules, router_pred, gold, strict=True) if not r]
    router_extra = {
        "threshold": weights.threshold,
        "abstention_rate": round(sum(abstained) / len(texts), 4),
        "abstained": sum(abstained),
        "abstained_gold": {c: sum(1 for a, g in zip(abstained, gold, strict=True) if a and g == c) for c in ROUTES},
        "decided_by_rules": sum(by_rules),
        "rules_accuracy_when_they_fire": round(rules_correct / max(sum(by_rules), 1), 4),
        "decided_by_classifier": len(classifier_open),
        "accuracy_on_classifier_decided": round(sum(p == g for p, g in classifier_open)
                                                / max(len(classifier_open), 1), 4),
    }
    # For information only: the threshold is chosen by cross-validation on the training file.
    sweep = {}
    for threshold in rm.THRESHOLD_GRID:
        swept = rm.LearnedRouter(weights, embedder, threshold=threshold)
        decisions = [swept(t, v) for t, v in zip(texts, vectors, strict=True)]
        sweep[str(threshold)] = {"accuracy": round(sum(d.route == g for d, g in zip(decisions, gold, strict=True)) / len(gold), 4),
                                 "abstained": sum(d.reason.startswith("classifier unsure") for d in decisions)}
    router_extra["heldout_threshold_sweep_info_only"] = sweep
    results = {"rules": evaluate(gold, rules_pred), "classifier": evaluate(gold, classifier_pred),
               "router": evaluate(gold, router_pred)}
    table = markdown(results, router_extra)
    print(table, file=sys.stderr, flush=True)

    if args.show_errors:
        shown = 0
        for t, g, d in zip(texts, gold, router_decisions, strict=True):
            if d.route != g and shown < args.show_errors:
                shown += 1
                print(f"  gold={g:4} got={d.route:4} ({d.reason}): {t[:90]!r}", file=sys.stderr)

    def per_class(examples: list[rm.Example]) -> dict[str, int]:
        return {c: sum(1 for e in examples if e.label == c) for c in ROUTES}

    emit({
        "bench": "router",
        "blas": BLAS.name,
        "train": {"file": str(args.train.relative_to(REPO_ROOT)) if args.train.is_relative_to(REPO_ROOT)
                  else str(args.train), "sha256": seed_sha, "n": len(train_examples),
                  "per_class": per_class(train_examples)},
        "heldout": {"n": len(heldout), "per_class": per_class(heldout)},
        "model": {"l2": weights.l2, "threshold": weights.threshold, "inputs": int(weights.W.shape[0]),
                  "cv": weights.meta.get("cv"), "cv_open_cases": weights.meta.get("cv_open_cases"),
                  "cv_threshold_accuracy": weights.meta.get("cv_threshold_accuracy"), "saved": saved},
        "timing_s": {"embedder_load": round(load_s, 3), "train_total": weights.meta.get("train_s"),
                     "train_embed": weights.meta.get("embed_s"), "train_fit_and_cv": weights.meta.get("fit_s"),
                     "heldout_embed": round(heldout_embed_s, 3),
                     "router_ms_per_text_given_vector": round(decide_ms, 3)},
        "results": results,
        "router": router_extra,
        "table": table,
    })


if __name__ == "__main__":
    main()
