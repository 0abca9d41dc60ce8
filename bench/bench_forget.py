#!/usr/bin/env python
"""Does a forget reach the weights? A night, a forget, the next night, measured adapter-only.

Usage: bin/circ bench forget [--facts N] [--forget K] [--gates open|default] [--seed S] [--keep]

In a scratch CIRCADIAN_HOME with every daemon up (`circ up`), through the
real daemons and CLI, as ``bin/circ bench memory`` does it:

1. a seeded synthetic day of N facts (``bench/memory/world.py``) is chatted;
2. night 1: `circ sleep` trains, judges and promotes adapter A;
3. `circ forget MEMORY_ID --yes` forgets the turns stating K of the facts;
   nothing new is said;
4. night 2: `circ sleep` again: the trainer re-trains A's night from the base
   model without the forgotten memories (services/trainer/forgets.py) and
   promotes adapter B;
5. measured on one model with the evaluator's metric code
   (``bench/memory/measure.py``: multiple choice by log-likelihood against
   three same-type distractors, chance 25%): recall of the forgotten facts and
   of the kept facts, adapter only (no recall in the prompt), in held-out and
   trained wording, on the bare model, A and B.

The goal: the forgotten facts on B at the bare model's level, the kept facts
on B about where A had them. ``--gates open`` (default) opens the
evaluator's gates so night 1 is promoted whatever a small night costs: the
forget is under test here, the gates are measured by ``bench memory``.
Prints one JSON object (ratios against the bare model, measured in the
same run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import emit, fail, machine_load, progress  # noqa: E402

from services.common.blas import preload_openblas  # noqa: E402

preload_openblas()

PROG = "bench_forget"
GATES_OPEN = {
    "CIRCADIAN_EVALUATOR_MIN_FACT_RECALL": "0", "CIRCADIAN_EVALUATOR_MAX_CANARY_DROP_PTS": "100",
    "CIRCADIAN_EVALUATOR_MAX_PPL_DRIFT_PCT": "1000", "CIRCADIAN_EVALUATOR_MAX_FALSE_RECALL": "1",
    "CIRCADIAN_EVALUATOR_MAX_FALSE_RECALL_RISE": "1", "CIRCADIAN_EVALUATOR_MAX_FORMAT_DROP": "1",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="circ bench forget", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", type=int, default=8, help="facts told on the day (default 8)")
    parser.add_argument("--forget", type=int, default=2, help="facts forgotten after night 1 (default 2)")
    parser.add_argument("--gates", choices=("open", "default"), default="open",
                        help="open: the evaluator promotes any night (default); default: the shipped gates")
    parser.add_argument("--seed", type=int, default=0, help="the synthetic world's seed (default 0)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch home (its path goes to stderr)")
    args = parser.parse_args(argv)
    if not 2 <= args.facts <= 200 or not 1 <= args.forget < args.facts:
        parser.error("--facts must be 2..200 and --forget 1..facts-1")
    return args


def _rate(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


class ForgetBench:
    def __init__(self, args: argparse.Namespace) -> None:
        from bench.memory.system import ScratchSystem
        from bench.memory.world import generate_world

        self.args = args
        self.world = generate_world(args.seed, facts_per_day=args.facts, days=1)
        self.system = ScratchSystem(keep=args.keep, env=GATES_OPEN if args.gates == "open" else {})

    def run(self) -> dict[str, Any]:
        from bench.memory.measure import Probe
        from services.trainer.memories import IngestMemories

        day = self.world.days[0]
        progress("starting the daemons (circ up)")
        self.system.up()
        progress(f"chatting {len(day.turns)} turns ({len(day.facts)} facts)")
        seqs = self.system.chat_day(day.turns, max_tokens=8, progress=progress)
        self.system.wait_ingested(max(seqs.values()))
        probes = [Probe(subject=f.key[0], relation=f.key[1], value=f.value,
                        turn_seq=next((s for text, s in seqs.items() if f.statement in text), 0))
                  for f in day.facts]
        with IngestMemories(self.system.paths) as ingest:
            trainable = ingest.trainable()
        by_seq: dict[int, list[str]] = {}
        for m in trainable:
            by_seq.setdefault(m.seq, []).append(m.memory_id)
        learnable = [p for p in probes if p.turn_seq in by_seq]
        if len(learnable) <= self.args.forget:
            raise RuntimeError(f"only {len(learnable)} of {len(probes)} facts were routed to training")
        forgotten, kept = learnable[:self.args.forget], learnable[self.args.forget:]

        progress("night 1: circ sleep")
        night1 = self.system.sleep()
        if night1.get("verdict") != "promote":
            raise RuntimeError(f"night 1 was not promoted: {night1.get('reasons') or night1.get('error')}")
        ids = [mid for p in forgotten for mid in by_seq[p.turn_seq]]
        progress(f"forgetting {len(forgotten)} facts ({len(ids)} memories)")
        told = self.system.circ("forget", *ids, "--yes", timeout_s=300)
        if told.returncode != 0:
            raise RuntimeError(f"circ forget failed: {told.stderr}")
        plan = self.system.circ("sleep", "--dry-run", "--json", timeout_s=300)
        progress("night 2: circ sleep (the re-train)")
        night2 = self.system.sleep()
        if night2.get("verdict") != "promote":
            raise RuntimeError(f"night 2 was not promoted: {night2.get('reasons') or night2.get('error')}")
        return self.measure(forgotten, kept, night1, night2, told.stdout, plan.stdout)

    def measure(self, forgotten: list, kept: list, night1: dict, night2: dict, told: str, plan: str) -> dict:
        import json

        from bench.memory.measure import Measurer, fact_items
        from services.common.config import load_config
        from services.common.paths import resolve_model_dir
        from services.lib.adapters.apply import adapter_applied
        from services.lib.models.compute import load_for_serving

        config = load_config()
        model, tokenizer, _ = load_for_serving(resolve_model_dir(config.chat.model))
        measurer = Measurer(model, tokenizer, config.chat.system_prompt)
        conditions = {"bare": None, "night1": Path(night1["adapter_dir"]), "night2_retrain": Path(night2["adapter_dir"])}
        figures: dict[str, dict[str, float | None]] = {}
        for name, adapter_dir in conditions.items():
            progress(f"measuring {name}")
            with adapter_applied(model, adapter_dir, role=name):
                figures[name] = {
                    f"{group}_{wording}": _rate(measurer.recall(fact_items(probes, wording, seed=self.args.seed)))
                    for group, probes in (("forgotten", forgotten), ("kept", kept))
                    for wording in ("heldout", "train")}
        train2 = (Path(night2["adapter_dir"]) / "dataset" / "train.jsonl").read_text()
        try:
            retrain = json.loads(plan).get("retrain", "")
        except ValueError:
            retrain = ""
        bare, n1, n2 = figures["bare"], figures["night1"], figures["night2_retrain"]

        def diff(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else round(a - b, 4)

        return {
            "facts": len(forgotten) + len(kept), "forgotten_facts": len(forgotten), "kept_facts": len(kept),
            "figures": figures,
            "forgotten_heldout_vs_bare": {"night1": diff(n1["forgotten_heldout"], bare["forgotten_heldout"]),
                                          "night2_retrain": diff(n2["forgotten_heldout"], bare["forgotten_heldout"])},
            "forgotten_train_vs_bare": {"night1": diff(n1["forgotten_train"], bare["forgotten_train"]),
                                        "night2_retrain": diff(n2["forgotten_train"], bare["forgotten_train"])},
            "kept_heldout_night2_over_night1": (round(n2["kept_heldout"] / n1["kept_heldout"], 4)
                                                if n1["kept_heldout"] and n2["kept_heldout"] is not None else None),
            "forgotten_values_in_night2_train_jsonl": sum(1 for p in forgotten if p.value in train2),
            "plan_said": retrain,
            "forget_said": told.strip().splitlines()[-1] if told.strip() else "",
            "nights": {name: {k: n.get(k) for k in ("adapter_id", "verdict", "counts", "stages_s", "train")}
                       for name, n in (("night1", night1), ("night2_retrain", night2))},
        }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    bench = ForgetBench(args)
    progress(f"scratch home {bench.system.home}; {args.facts} facts, forgetting {args.forget}; gates {args.gates}")
    try:
        result = bench.run()
    except Exception as exc:  # the scratch system did not do what was asked: say what, exit 1
        fail(PROG, f"{type(exc).__name__}: {exc}")
    finally:
        if args.keep:
            progress(f"kept the scratch home {bench.system.home}")
        bench.system.down()
    emit({"benchmark": "forget", "seed": args.seed, "gates": args.gates, **result,
          "duration_s": round(time.monotonic() - started, 1), "machine": machine_load(),
          "command": "bin/circ bench forget " + " ".join(sys.argv[1:] if argv is None else argv)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
