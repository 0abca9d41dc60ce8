"""`circ sleep --dry-run`: the dataset the next sleep would train on, and its plan; no training.

The plan is built by the very steps a sleep builds its dataset with
(:class:`services.trainer.sleep.Sleep`: ``gather``, ``dataset_options``,
``compose``, ``planned_steps``), so what it counts is what a sleep started
now would train on, with one exception said in the plan: model-written
rewordings come from the cache only. Writing the missing ones needs the
model in a child process under the heavy-run lock (or the teacher over the
network), and a dry run must be cheap and leave no trace, so it takes no
lock, starts no process, makes no request outside the machine, creates no
adapter and logs no event (a plan changes nothing the log records).

The dataset goes to ``data/plans/<plan_id>/`` (train.jsonl, valid.jsonl,
eval.json, manifest.json as a sleep stages them, plus plan.json). It is the
user's own words, so the directory is private and only the latest plan is
kept: a forgotten memory does not linger in old plans.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from protocol.envelope import new_id
from protocol.trainer_api import SleepPlan
from services.common.atomic import write_atomic
from services.common.config import Config
from services.common.paths import Paths, ensure_private_dir, paraphrase_cache_dir, resolve_model_dir

# README "A 100-fact night": the training worker on 2 CPU cores (float32 + OpenBLAS, batch 1),
# used until this home has trained a night of its own.
README_S_PER_STEP = 0.41
README_STEP_SOURCE = "README figure (0.41 s/step: float32 + OpenBLAS, 2 CPU cores, batch 1)"
# The same run: the model reworded 74 facts' questions in 127.5 s.
README_PARAPHRASE_S = 127.5 / 74
SUMMARY_FILE = "training.json"  # services.trainer.checkpoints (not imported: it pulls in the worker's modules)
PLAN_FILE = "plan.json"


class PlanUnavailable(RuntimeError):
    """The plan cannot be made (ingest cannot be asked); the message says what to do."""


def plans_root(paths: Paths) -> Path:
    return paths.data / "plans"


def measured_step_s(adapters: Path, order: Sequence[str]) -> tuple[float, str]:
    """Seconds per step of the first adapter in ``order`` whose training.json measured some, else README's."""
    for adapter_id in order:
        try:
            summary = json.loads((adapters / adapter_id / SUMMARY_FILE).read_text())
            trained = int(summary["steps"]) - int(summary.get("resumed_from", 0) or 0)
            train_s = float(summary["train_s"])
        except (OSError, ValueError, TypeError, KeyError):
            continue  # no summary (a hand-made adapter) or a damaged one: try the next
        if trained > 0 and train_s > 0:
            return train_s / trained, f"adapters/{adapter_id}/{SUMMARY_FILE} ({trained} steps in {train_s:g} s)"
    return README_S_PER_STEP, README_STEP_SOURCE


def forgets_remove(pool: Sequence[dict], forgotten: set[str]) -> int:
    """Replay-pool examples that came from a memory since forgotten: no night trains on them again."""
    return sum(1 for item in pool if forgotten & set((item.get("source") or {}).get("memory_ids") or ()))


def cached_paraphraser(config: Config, memories: list, options: dict, limit: int,
                       ) -> tuple[Callable[[str, str], list], str, int, int]:
    """(a cache-only paraphraser, who wrote it, questions asked, questions without a cached rewording).

    The same questions and the same cache the sleep uses (the teacher's when
    ``trainer.teacher_url`` is set, else the embedded model's), read only.
    """
    from services.trainer.dataset import build_dataset
    from services.trainer.paraphrase import ProposalCache, collect_requests, request_key

    requests = collect_requests(lambda record: build_dataset(memories, **{**options, "paraphraser": record,
                                                                          "max_paraphrases": limit}))
    t = config.trainer
    if t.teacher_url:
        from services.trainer.teacher import Teacher

        teacher = Teacher(t.teacher_url, t.teacher_model, t.teacher_timeout_s,
                          redact_names=config.ingest.redact_names)
        cache, by = ProposalCache(paraphrase_cache_dir(), teacher.identity), f"teacher {teacher.where}"
    else:
        name = resolve_model_dir(config.chat.model).name
        cache, by = ProposalCache(paraphrase_cache_dir(), name), f"model {name}"
    asked = len({request_key(*r) for r in requests})
    return cache.paraphraser(), by, asked, len(cache.missing(requests))


def _no_events(body: Any) -> int:
    raise RuntimeError(f"a dry run logs no event (tried {type(body).__name__})")


def _no_evaluation(request: Any) -> Any:
    raise RuntimeError("a dry run is not judged")


def plan_sleep(paths: Paths, config: Config, *, steps: int | None = None, request_id: str = "",
               gathered: tuple[int, list, set[str]] | None = None) -> SleepPlan:
    """Build the next sleep's dataset into data/plans/<id>/ and say what the sleep would do.

    ``gathered``: (since_seq, memories, forgotten ids) as ``Sleep.gather`` asks
    ingest for them; given by socket-free tests, asked of ingest otherwise.
    """
    from services.trainer.dataset import save_dataset
    from services.trainer.paraphrase import rewordings_per_fact
    from services.trainer.sleep import NO_EXAMPLES, Sleep, SleepFailed, SleepState, nothing_new
    from services.trainer.steps import items_with_anchors

    plan_id = new_id("pl-")
    sleep = Sleep(paths, config, SleepState(sleep_id=plan_id, adapter_id="", trigger="dry-run"),
                  emit=_no_events, evaluate=_no_evaluation, should_stop=lambda: False, steps=steps)
    try:
        since, memories, forgotten = gathered if gathered is not None else sleep.gather()
    except SleepFailed as exc:
        raise PlanUnavailable(str(exc)) from None
    current = sleep.store.current()
    retrain = sleep.retrain_reason(since, forgotten)
    if not memories:
        why = (f"{retrain}, and nothing of its night is left to learn: the sleep would roll back to the newest "
               "adapter that holds none of the forgotten memories (or the base model)") if retrain else nothing_new(since)
        return SleepPlan(request_id=request_id, nothing_to_learn=why, since_seq=since, retrain=retrain,
                         current_adapter=current, forgotten_memories=len(forgotten))
    options = sleep.dataset_options(forgotten)
    t = config.trainer
    by, asked, missing = "", 0, 0
    limit = rewordings_per_fact(t)
    if limit > 0:
        paraphraser, by, asked, missing = cached_paraphraser(config, memories, options, limit)
        options.update(max_paraphrases=limit, paraphraser=paraphraser)
    pool = sleep.replay_pool()
    dataset = sleep.compose(memories, options, pool)
    if not dataset.examples:
        return SleepPlan(request_id=request_id, nothing_to_learn=NO_EXAMPLES, since_seq=since, retrain=retrain,
                         memories=len(memories), current_adapter=current, forgotten_memories=len(forgotten))
    manifest = dataset.manifest
    examples = len(dataset.examples)
    items = items_with_anchors(examples, t.anchor_share)
    planned = sleep.planned_steps(examples)
    order = ([current] if current else []) + [i.adapter_id for i in sleep.store.list() if i.adapter_id != current]
    step_s, step_from = measured_step_s(paths.adapters, order)
    trained_on = set(sleep.store.show(current).get("dataset", {}).get("memory_ids", [])) if current else set()
    directory = plans_root(paths) / plan_id
    plan = SleepPlan(
        request_id=request_id, plan_id=plan_id, plan_dir=str(directory), since_seq=since,
        memories=len(memories), routes=dict(sorted(Counter(m.route for m in memories).items())),
        excluded={k: int(v) for k, v in manifest.get("excluded", {}).items()},
        facts=len(dataset.facts), superseded=len(manifest.get("superseded", [])),
        withheld=len(manifest.get("withheld", [])),
        counts={k: int(v) for k, v in manifest.get("counts", {}).items()}, examples=examples,
        anchors=items - examples, items=items, steps=planned, seconds_per_step=round(step_s, 3),
        step_time_from=step_from, estimated_train_s=round(planned * step_s, 1),
        estimated_paraphrase_s=round(missing * README_PARAPHRASE_S, 1) if by.startswith("model") else 0.0,
        paraphrased_by=by, paraphrase_requests=asked, paraphrases_missing=missing,
        replay_pool=len(pool), replay_added=int(manifest.get("counts", {}).get("replay", 0)),
        replay_dropped={k: int(v) for k, v in manifest.get("replay_dropped", {}).items()},
        forgotten_memories=len(forgotten),
        forgets_remove=forgets_remove(pool, forgotten) + int(manifest.get("excluded", {}).get("forgotten", 0)),
        forgotten_in_current=len(trained_on & forgotten),
        eval_facts=len(dataset.eval_facts), false_facts=len(dataset.false_facts), current_adapter=current,
        retrain=retrain)
    _write(paths, directory, dataset, plan, save_dataset)
    return plan


def _write(paths: Paths, directory: Path, dataset: Any, plan: SleepPlan, save: Callable[[Any, Path], None]) -> None:
    """The plan's files, then every older plan goes (only the latest is kept)."""
    root = plans_root(paths)
    ensure_private_dir(root)
    save(dataset, directory)
    body = {k: v for k, v in msgspec.to_builtins(plan).items() if k != "request_id"}
    write_atomic(directory / PLAN_FILE, json.dumps(body, indent=2, ensure_ascii=False).encode())
    for entry in root.iterdir():
        if entry.is_dir() and entry.name != directory.name:
            shutil.rmtree(entry, ignore_errors=True)
