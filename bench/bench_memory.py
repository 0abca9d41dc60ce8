#!/usr/bin/env python
"""Does it remember? Days of synthetic conversation, nights of sleep, measured.

Usage: bin/circ bench memory [--quick] [--facts N] [--nights N] [--conditions A,B]
       [--out DIR] [--json] [--seed S] [--keep]

In a scratch CIRCADIAN_HOME with every daemon up (`circ up`), for each night:

1. the day: a seeded synthetic day (``bench/memory/world.py``: facts about
   fictitious relatives, pets, places and projects, each stated once in
   chit-chat, with distractor turns, some PII and, from day 2, updated
   facts) is chatted turn by turn through the chat daemon; ingest redacts,
   routes, embeds and indexes it;
2. the night: `circ sleep` through the trainer daemon (its dataset, the
   training worker, the evaluator's verdict) gives the ``default``
   condition's adapter; the other trained conditions are trained here from
   the same remembered memories with the trainer's own code
   (``bench/memory/night.py``), each with its own chain of nights;
3. measuring (``bench/memory/measure.py``, the evaluator's metric code) on
   one model: recall of the night's facts with the adapter only (held-out
   and trained wording), with RAG (recall from the running ingest, prompt as
   chat builds it), retrieval recall@1/@5, earlier nights' facts, updated
   facts, false recall, canary/perplexity/format change against the bare
   model, and a greedy sample.

Conditions: no_training, raw_turns, qa_1, qa_5, qa_10, qa_5_replay, rag_only,
default (the shipped defaults through the daemons; its ``recall_rag`` is RAG
plus adapter), rag_adapter (the same, named for the comparison).

Output: one JSON object on stdout with ``--json`` (else the markdown table),
and memory.json, memory.md, retention.png, drift.png in ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO_ROOT, emit, fail, machine_load, progress  # noqa: E402

from services.common.blas import preload_openblas  # noqa: E402

preload_openblas()

PROG = "bench_memory"
ALL_CONDITIONS = ("no_training", "raw_turns", "qa_1", "qa_5", "qa_10", "qa_5_replay", "rag_only", "default",
                  "rag_adapter")
QUICK_CONDITIONS = ("no_training", "qa_1", "qa_5", "rag_only", "default", "rag_adapter")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="circ bench memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes on 2 cores: 6 facts, 1 night, fewer conditions, 1 epoch")
    parser.add_argument("--facts", type=int, help="facts stated per day (default 100; --quick 6)")
    parser.add_argument("--nights", type=int, help="days+nights to run (default 1)")
    parser.add_argument("--conditions", help=f"comma-separated subset of {','.join(ALL_CONDITIONS)}")
    parser.add_argument("--seed", type=int, default=0, help="the synthetic world's seed (default 0)")
    parser.add_argument("--max-tokens", type=int, default=12, help="tokens per chat reply during the day")
    parser.add_argument("--epochs", type=float, help="override trainer.epochs for every trained condition")
    parser.add_argument("--out", type=Path, help="where the report goes (default bench/results/memory[-quick])")
    parser.add_argument("--json", action="store_true", help="print the JSON object instead of the table")
    parser.add_argument("--keep", action="store_true", help="keep the scratch home (its path goes to stderr)")
    args = parser.parse_args(argv)
    args.facts = args.facts if args.facts is not None else (6 if args.quick else 100)
    args.nights = args.nights if args.nights is not None else 1
    wanted = args.conditions.split(",") if args.conditions else list(QUICK_CONDITIONS if args.quick else ALL_CONDITIONS)
    unknown = [c for c in wanted if c not in ALL_CONDITIONS]
    if unknown:
        parser.error(f"unknown condition(s) {', '.join(unknown)}; choose from {', '.join(ALL_CONDITIONS)}")
    if "rag_adapter" in wanted and "default" not in wanted:
        wanted.append("default")  # rag_adapter is measured on the default's adapter
    args.conditions = [c for c in ALL_CONDITIONS if c in wanted]
    if not 1 <= args.facts <= 1000 or not 1 <= args.nights <= 30:
        parser.error("--facts must be 1..1000 and --nights 1..30")
    if args.epochs is not None and not 0 < args.epochs <= 50:
        parser.error("--epochs must be in (0, 50]")
    if args.out is None:
        args.out = REPO_ROOT / "bench" / "results" / ("memory-quick" if args.quick else "memory")
    return args


def trained_conditions() -> dict[str, Any]:
    from bench.memory.night import Condition

    return {"raw_turns": Condition("raw_turns", raw_turns=True), "qa_1": Condition("qa_1", phrasings=1, replay_share=0.0),
            "qa_5": Condition("qa_5", phrasings=5, replay_share=0.0), "qa_10": Condition("qa_10", phrasings=10, replay_share=0.0),
            "qa_5_replay": Condition("qa_5_replay", phrasings=5)}


class MemoryBench:
    """One run: the scratch system, the measuring model, each condition's chain of nights."""

    def __init__(self, args: argparse.Namespace) -> None:
        from bench.memory.system import ScratchSystem
        from bench.memory.world import generate_world
        from services.common.config import ConfigError, load_config
        from services.trainer.params import TrainParams

        self.args = args
        self.world = generate_world(args.seed, facts_per_day=args.facts, days=args.nights)
        self.system = ScratchSystem(keep=args.keep)
        try:
            self.config = load_config()
        except ConfigError as exc:
            fail(PROG, str(exc))
        t = self.config.trainer
        self.epochs = args.epochs or t.epochs
        self.base_params = TrainParams(rank=t.rank, lr=t.learning_rate, scale=t.lora_scale,
                                       batch_size=t.batch_size, num_layers=t.num_layers, max_seq_len=t.max_seq_len,
                              anchor_share=t.anchor_share, early_stop=t.stop_when_learned,
                              check_every=t.stop_check_steps, learned_share=t.stop_learned_share,
                              patience=t.stop_patience)
        self.recipes = {name: recipe for name, recipe in trained_conditions().items() if name in args.conditions}
        self.chains: dict[str, list[dict]] = {name: [] for name in self.recipes}  # replay pools
        self.probes_by_night: list[list[Any]] = []
        self.night1: dict[str, float | None] = {}
        self.nights: list[dict[str, Any]] = []
        self.after_seq = 0

    def run(self) -> None:
        from bench.memory.measure import Measurer, RagContext
        from services.common.paths import resolve_model_dir
        from services.lib.models.compute import load_for_serving

        progress("starting the daemons (circ up)")
        self.system.up()
        self.model_dir = resolve_model_dir(self.config.chat.model)
        model, tokenizer, _ = load_for_serving(self.model_dir)
        self.measurer = Measurer(model, tokenizer, self.config.chat.system_prompt)
        chat = self.config.chat
        self.rag = RagContext(self.system.recaller(chat.recall_k, chat.recall_min_score),
                              self.system.recaller(5, 0.0))
        for n, day in enumerate(self.world.days, start=1):
            self.nights.append(self.night(n, day))

    def night(self, n: int, day: Any) -> dict[str, Any]:
        from bench.memory.measure import Probe, false_items

        started = time.monotonic()
        progress(f"night {n}: chatting {len(day.turns)} turns ({len(day.facts)} facts)")
        seqs = self.system.chat_day(day.turns, max_tokens=self.args.max_tokens, progress=progress)
        chat_s = time.monotonic() - started
        last_seq = max(seqs.values())
        self.system.wait_ingested(last_seq)
        ingest_s = time.monotonic() - started - chat_s
        probes = [Probe(subject=f.key[0], relation=f.key[1], value=f.value, previous=f.previous,
                        turn_seq=next((s for text, s in seqs.items() if f.statement in text), 0))
                  for f in day.facts]
        self.probes_by_night.append(probes)
        latest = {p.fact().key: p for night in self.probes_by_night for p in night}
        scope = {
            "night": probes,
            "earlier": [p for night in self.probes_by_night[:-1] for p in night if latest[p.fact().key] is p],
            "first": [p for p in self.probes_by_night[0] if latest[p.fact().key] is p],
            "updated": [p for p in probes if p.previous],
            "false": false_items({k for k in latest}, seed=self.args.seed),
        }
        conditions: dict[str, dict[str, Any]] = {}
        if "default" in self.args.conditions:
            conditions.update(self.default_night(n, scope))
        if "no_training" in self.args.conditions:
            conditions["no_training"] = self.measure(n, "no_training", None, False, scope)
        if "rag_only" in self.args.conditions:
            conditions["rag_only"] = self.measure(n, "rag_only", None, True, scope)
        conditions.update(self.trained_nights(n, scope))
        for name, figures in conditions.items():
            if n == 1:
                self.night1[name] = figures.get("recall_adapter_heldout")
            base = self.night1.get(name)
            figures["retention_ratio"] = (round(figures["night1_recall"] / base, 4)
                                          if base and figures.get("night1_recall") is not None else None)
        routes = self.routes(self.after_seq)
        self.after_seq = last_seq
        # How ingest filed the fact statements: only those routed to training can be learnt by an adapter.
        fact_routes = [routes.get(p.turn_seq, "none") for p in probes]
        return {"night": n, "facts": len(day.facts), "updated": len(scope["updated"]), "turns": len(day.turns),
                "fact_routes": {r: fact_routes.count(r) for r in sorted(set(fact_routes))},
                "chat_s": round(chat_s, 1), "ingest_wait_s": round(ingest_s, 1),
                "wall_s": round(time.monotonic() - started, 1), "conditions": conditions}

    def routes(self, after_seq: int) -> dict[int, str]:
        """turn seq -> the route ingest gave it (memory.stored), or "skipped"."""
        out = {}
        for event in self.system.events(("memory.stored", "memory.skipped"), after_seq):
            body = event["body"]
            out[body.get("turn_seq", 0)] = body.get("route", "") if event["type"] == "memory.stored" else "skipped"
        return out

    def measure(self, n: int, name: str, adapter_dir: Path | None, use_rag: bool, scope: dict[str, Any],
                **extra: Any) -> dict[str, Any]:
        from bench.memory.measure import _rate, fact_items
        from services.lib.adapters.apply import adapter_applied

        progress(f"night {n}: measuring {name}")
        figures = self.measurer.run(adapter_dir, night=scope["night"], earlier=scope["earlier"],
                                    updated=scope["updated"], false=scope["false"],
                                    rag=self.rag if use_rag else None, seed=self.args.seed)
        if n == 1:
            figures["night1_recall"] = figures["recall_adapter_heldout"]
        else:
            with adapter_applied(self.measurer.model, adapter_dir, role=name):
                figures["night1_recall"] = _rate(self.measurer.recall(
                    fact_items(scope["first"], "heldout", seed=self.args.seed)))
        return {**figures, **extra}

    def default_night(self, n: int, scope: dict[str, Any]) -> dict[str, dict[str, Any]]:
        progress(f"night {n}: sleeping (circ sleep, through the trainer and evaluator daemons)")
        started = time.monotonic()
        summary = self.system.sleep()
        adapter = Path(summary["adapter_dir"]) if summary.get("adapter_dir") else None
        out = {"default": self.measure(
            n, "default", adapter, True, scope, verdict=summary.get("verdict"), counts=summary.get("counts"),
            sleep_s=round(time.monotonic() - started, 1), adapter_id=summary.get("adapter_id"),
            steps=summary.get("train", {}).get("steps"), stages_s=summary.get("stages_s"),
            reasons=summary.get("reasons", [])[:4],
            error=summary.get("error"))}
        if "rag_adapter" in self.args.conditions:
            out["rag_adapter"] = dict(out["default"])
        return out

    def trained_nights(self, n: int, scope: dict[str, Any]) -> dict[str, dict[str, Any]]:
        import shutil
        import tempfile

        from bench.memory.night import train_condition
        from services.trainer.memories import IngestMemories

        with IngestMemories(self.system.paths) as ingest:  # the system's ingest daemon answers
            memories = ingest.trainable(after_seq=self.after_seq)
        turns = {e["seq"]: (e["body"].get("user_text", ""), e["body"].get("assistant_text", ""))
                 for e in self.system.events(("chat.turn_completed",), self.after_seq)}
        t = self.config.trainer
        out = {}
        for name, recipe in self.recipes.items():
            progress(f"night {n}: training {name} ({len(memories)} memories)")
            out_dir = Path(tempfile.mkdtemp(prefix=f"cb-{name}-", dir="/tmp"))
            try:
                result = train_condition(recipe, memories, out_dir, model_dir=self.model_dir,
                                         base_params=self.base_params, turns=turns,
                                         system_prompt=self.config.chat.system_prompt,
                                         phrasings=t.phrasings_per_fact, replay_share=t.replay_share,
                                         epochs=self.epochs, max_steps=t.max_steps,
                                         replay_pool=self.chains[name], seed=self.args.seed,
                                         abstain_share=t.abstain_share)
                self.chains[name] += result.replay_pool or []
                out[name] = self.measure(n, name, result.adapter_dir, False, scope,
                                         steps=result.steps_run or result.steps, steps_planned=result.steps,
                                         stopped_because=result.stopped_because,
                                         train_s=result.train_s, tokens_per_s=result.tokens_per_s,
                                         counts=result.counts, error=result.error or None)
            finally:
                shutil.rmtree(out_dir, ignore_errors=True)
        return out

    def result(self, started: float, argv: list[str] | None) -> dict[str, Any]:
        t = self.config.trainer
        return {"benchmark": "memory", "quick": self.args.quick, "seed": self.args.seed,
                "facts_per_day": self.args.facts, "nights": self.nights,
                "conditions": self.nights[-1]["conditions"] if self.nights else {},
                "defaults": {"epochs": self.epochs, "lr": t.learning_rate, "rank": t.rank,
                             "lora_scale": t.lora_scale, "num_layers": t.num_layers, "batch_size": t.batch_size,
                             "phrasings_per_fact": t.phrasings_per_fact, "replay_share": t.replay_share},
                "duration_s": round(time.monotonic() - started, 1), "machine": machine_load(),
                "command": "bin/circ bench memory " + " ".join(sys.argv[1:] if argv is None else argv)}


def main(argv: list[str] | None = None) -> int:
    import os

    args = parse_args(argv)
    started = time.monotonic()
    if args.epochs is not None or args.quick:
        # The trainer daemon reads it from the environment `circ up` passes on.
        os.environ["CIRCADIAN_TRAINER_EPOCHS"] = str(args.epochs or 1.0)
        args.epochs = args.epochs or 1.0

    from bench.memory.report import markdown, write
    from bench.memory.system import SystemError_

    bench = MemoryBench(args)
    progress(f"scratch home {bench.system.home}; {args.facts} facts/day, {args.nights} night(s); "
             f"conditions: {', '.join(args.conditions)}")
    try:
        bench.run()
    except SystemError_ as exc:
        fail(PROG, str(exc))
    finally:
        if args.keep:
            progress(f"kept the scratch home {bench.system.home}")
        bench.system.down()
    result = bench.result(started, argv)
    write(result, args.out)
    if args.json:
        emit(result)
    else:
        print(markdown(result), end="")
        print(f"\nfull report: {args.out}/memory.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
