"""What the canary kinds cost: the evaluator's fixed suite with every selected canary item
against the 40 knowledge items the suite had before kinds, on the embedded model, same process.

    .venv/bin/python bench/canary_cost.py [--reps 5]

One ``measure_reference`` (canary, perplexity, format) per suite per rep, the
fastest rep kept; an evaluation measures the fixed suite two or three times
(base model, baseline adapter, candidate). Prints one JSON object on stdout
(benchlib convention) with the ratio.
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed reps per suite (the fastest is kept)")
    args = parser.parse_args(argv)

    from services.common.paths import models_dir
    from services.evaluator.canaries import CANARY_ITEMS, kind_of
    from services.evaluator.core import Suite, measure_reference
    from services.lib.models.compute import load_for_serving

    model, tokenizer, _ = load_for_serving(models_dir() / "smollm2-135m-instruct", "auto")
    suites = {"knowledge_40": Suite(canary=[i for i in CANARY_ITEMS if kind_of(i) == "knowledge"]),
              "all_kinds": Suite(canary=CANARY_ITEMS)}
    measure_reference(model, tokenizer, suites["all_kinds"])  # warm-up, not timed
    times: dict[str, list[float]] = {name: [] for name in suites}
    for _ in range(args.reps):
        for name, suite in suites.items():
            start = time.perf_counter()
            measure_reference(model, tokenizer, suite)
            times[name].append(time.perf_counter() - start)
    best = {name: round(min(v), 2) for name, v in times.items()}
    print(json.dumps({"bench": "canary_cost", "items": {k: len(s.canary) for k, s in suites.items()},
                      "fixed_suite_s": best, "ratio": round(best["all_kinds"] / best["knowledge_40"], 2),
                      "reps": args.reps}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
