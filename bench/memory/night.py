"""Train one benchmark condition on a night's memories, the way the trainer does.

The trainer daemon's own pieces, without its sockets: ``build_dataset``
(facts -> question/answer pairs, identity examples, replay), ``save_dataset``
and ``run_worker`` (the training worker process). A condition differs from
the shipped defaults only in what :class:`Condition` says.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.paths import anchor_cache_dir
from services.lib.memory.index import MemoryRecord
from services.trainer.checkpoints import SUMMARY_FILE
from services.trainer.dataset import NightDataset, build_dataset, save_dataset
from services.trainer.identity import chat_example, identity_examples, valid_examples
from services.trainer.params import TrainParams
from services.trainer.runner import run_worker
from services.trainer.steps import items_with_anchors, steps_for
from services.trainer.stop_rule import write_probe


@dataclass(frozen=True)
class Condition:
    """How one condition turns memories into training (None fields: the defaults)."""

    name: str
    train: bool = True
    raw_turns: bool = False  # train on the turns as chatted, not on question/answer pairs
    phrasings: int | None = None
    replay_share: float | None = None
    rag: bool = False  # measured with recall in the prompt
    params: dict[str, Any] | None = None  # TrainParams overrides (lr, rank, scale, ...)


@dataclass
class NightResult:
    adapter_dir: Path | None
    counts: dict[str, int]
    steps: int
    train_s: float
    tokens_per_s: float
    final_loss: float | None
    error: str = ""
    replay_pool: list[dict] | None = None
    steps_run: int = 0  # of ``steps`` planned (the stop rule may end it early)
    stopped_because: str = ""


def raw_dataset(memories: Sequence[MemoryRecord], turns: dict[int, tuple[str, str]], system_prompt: str,
                seed: int = 0) -> NightDataset:
    """The naive baseline: each remembered turn as chatted (redacted user text, the reply)."""
    examples = [chat_example(system_prompt, m.text.strip(), (turns.get(m.seq) or ("", "OK."))[1] or "OK.")
                for m in memories if m.text.strip()]
    examples += identity_examples(system_prompt)
    random.Random(seed).shuffle(examples)
    counts = {"chat": len(examples) - len(identity_examples(system_prompt)),
              "identity": len(identity_examples(system_prompt)), "qa": 0, "replay": 0}
    manifest = {"counts": counts, "total": len(examples), "raw_turns": True}
    return NightDataset(examples=examples, manifest=manifest, eval_facts=[], false_facts=[],
                        replay_pool=[], valid=valid_examples(system_prompt), facts=[])


def night_dataset(condition: Condition, memories: Sequence[MemoryRecord], *, turns: dict[int, tuple[str, str]],
                  system_prompt: str, phrasings: int, replay_share: float, replay_pool: Sequence[dict],
                  seed: int = 0, abstain_share: float = 0.0) -> NightDataset:
    if condition.raw_turns:
        return raw_dataset(memories, turns, system_prompt, seed)
    options = dict(phrasings=condition.phrasings or phrasings, seed=seed, system_prompt=system_prompt,
                   abstain_share=abstain_share)
    first = build_dataset(list(memories), **options)
    share = replay_share if condition.replay_share is None else condition.replay_share
    want = int(round(len(first.examples) * share / max(1e-9, 1 - share))) if replay_pool else 0
    replay = random.Random(seed).sample(list(replay_pool), min(want, len(replay_pool)))
    return build_dataset(list(memories), replay=replay, **options) if replay else first


def train_condition(condition: Condition, memories: Sequence[MemoryRecord], out_dir: Path, *, model_dir: Path,
                    base_params: TrainParams, turns: dict[int, tuple[str, str]], system_prompt: str,
                    phrasings: int, replay_share: float, epochs: float, max_steps: int,
                    replay_pool: Sequence[dict] = (), seed: int = 0, abstain_share: float = 0.0,
                    on_progress: Callable[[dict[str, Any]], None] | None = None) -> NightResult:
    """Build the condition's dataset, train it in a worker, return where the adapter is."""
    dataset = night_dataset(condition, memories, turns=turns, system_prompt=system_prompt, phrasings=phrasings,
                            replay_share=replay_share, replay_pool=replay_pool, seed=seed,
                            abstain_share=abstain_share)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_dataset(dataset, out_dir / "dataset")
    write_probe(dataset, out_dir / "dataset")  # the stop rule's questions, as the trainer writes them
    overrides = dict(condition.params or {})
    if condition.raw_turns:
        overrides.setdefault("mask_prompt", False)  # raw text: learn the user's own words
    epochs = float(overrides.pop("epochs", epochs))
    params = replace_params(base_params, **overrides)
    steps = steps_for(items_with_anchors(len(dataset.examples), params.anchor_share), epochs=epochs,
                      batch_size=params.batch_size, max_steps=max_steps)
    params = replace_params(params, steps=steps)
    started = time.monotonic()
    result = run_worker(model_dir, out_dir / "dataset", out_dir, params, on_progress=on_progress, resume=False,
                        anchor_cache=anchor_cache_dir())
    summary = _summary(out_dir)
    return NightResult(adapter_dir=out_dir if result.ok else None, counts=dict(dataset.manifest.get("counts", {})),
                       steps=steps, train_s=round(time.monotonic() - started, 1),
                       tokens_per_s=float(summary.get("tokens_per_s", 0.0) or 0.0),
                       final_loss=summary.get("final_loss"), error="" if result.ok else (result.error or "failed"),
                       replay_pool=list(dataset.replay_pool), steps_run=int(summary.get("steps") or 0),
                       stopped_because=str(summary.get("stopped_because") or ""))


def replace_params(params: TrainParams, **changes: Any) -> TrainParams:
    return TrainParams(**{**{f: getattr(params, f) for f in params.__struct_fields__}, **changes})


def _summary(out_dir: Path) -> dict[str, Any]:
    path = out_dir / SUMMARY_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


__all__ = ["Condition", "NightResult", "night_dataset", "raw_dataset", "train_condition"]
