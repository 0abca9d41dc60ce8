"""Sweep training settings on one synthetic night, without the daemons.

``python -m bench.memory.sweep --facts 40 --grid lr=5e-5,1e-4 epochs=2,3``
prints one JSON line per setting (the memory benchmark's figures for it).
Memories are the synthetic day's fact statements, redacted as ingest does
and routed to training; what the daemons add (routing, embedding, the
real sleep) is measured by ``circ bench memory``. This exists to choose the
defaults quickly: every figure comes from the same measuring code.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from services.common.blas import preload_openblas  # noqa: E402

preload_openblas()

from bench.memory.measure import Measurer, Probe, false_items  # noqa: E402
from bench.memory.night import Condition, train_condition  # noqa: E402
from bench.memory.world import generate_world  # noqa: E402
from services.common.config import load_config  # noqa: E402
from services.common.paths import resolve_model_dir  # noqa: E402
from services.lib.memory.index import MemoryRecord  # noqa: E402
from services.lib.models.compute import load_for_serving  # noqa: E402
from services.lib.privacy.redact import redact  # noqa: E402
from services.trainer.params import TrainParams  # noqa: E402


def _value(text: str) -> object:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text)


def parse_grid(specs: list[str]) -> list[dict[str, object]]:
    axes = []
    for spec in specs:
        key, _, values = spec.partition("=")
        if not key or not values:
            raise SystemExit(f"sweep: bad --grid entry {spec!r}; use key=v1,v2")
        axes.append([(key, _value(v)) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", type=int, default=40, help="facts in the night (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", nargs="*", default=[],
                        help="key=v1,v2 ... over TrainParams fields plus epochs, phrasings and abstain_share")
    parser.add_argument("--no-fixed", action="store_true", help="skip canary/perplexity/format")
    args = parser.parse_args(argv)

    config = load_config()
    world = generate_world(args.seed, facts_per_day=args.facts, days=1)
    day = world.days[0]
    memories, probes = [], []
    for i, fact in enumerate(day.facts):
        seq = i + 1
        memories.append(MemoryRecord(memory_id=f"m{seq}", seq=seq, route="both", text=redact(fact.statement).text,
                                     ts=time.time()))
        probes.append(Probe(subject=fact.key[0], relation=fact.key[1], value=fact.value, turn_seq=seq))
    model_dir = resolve_model_dir(config.chat.model)
    model, tokenizer, _info = load_for_serving(model_dir)
    measurer = Measurer(model, tokenizer, config.chat.system_prompt)
    false = false_items({p.fact().key for p in probes}, seed=args.seed)
    t = config.trainer
    base = TrainParams(rank=t.rank, lr=t.learning_rate, scale=t.lora_scale, batch_size=t.batch_size,
                       num_layers=t.num_layers, max_seq_len=t.max_seq_len, anchor_share=t.anchor_share,
                       early_stop=t.stop_when_learned, check_every=t.stop_check_steps,
                       learned_share=t.stop_learned_share, patience=t.stop_patience)
    print(json.dumps({"setting": "base", **measurer.run(None, night=probes, earlier=[], updated=[], false=false,
                                                         fixed=not args.no_fixed)}), flush=True)
    for setting in parse_grid(args.grid):
        overrides = dict(setting)
        phrasings = int(overrides.pop("phrasings", t.phrasings_per_fact))
        epochs = float(overrides.pop("epochs", t.epochs))
        abstain_share = float(overrides.pop("abstain_share", t.abstain_share))
        with tempfile.TemporaryDirectory(prefix="sweep-") as tmp:
            result = train_condition(Condition(name="sweep", params=overrides), memories, Path(tmp), model_dir=model_dir,
                                     base_params=base, turns={}, system_prompt=config.chat.system_prompt,
                                     phrasings=phrasings, replay_share=0.0, epochs=epochs, max_steps=5000,
                                     seed=args.seed, abstain_share=abstain_share)
            row = {"setting": setting, "steps": result.steps, "steps_run": result.steps_run,
                   "stopped_because": result.stopped_because, "train_s": result.train_s,
                   "tokens_per_s": result.tokens_per_s, "final_loss": result.final_loss, "counts": result.counts}
            if result.adapter_dir is None:
                row["error"] = result.error
            else:
                row.update(measurer.run(result.adapter_dir, night=probes, earlier=[], updated=[], false=false,
                                        fixed=not args.no_fixed))
        row.pop("greedy_examples", None)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
