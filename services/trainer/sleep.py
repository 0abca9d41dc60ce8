"""One sleep, start to verdict: lock, dataset, train, evaluate, promote.

Socket-free: events go out through ``emit`` and the evaluator is reached
through ``evaluate``, so tests drive a whole night in process. The heavy-run
lock is held for building and training and released before the evaluator is
asked (it takes the lock itself): the two never overlap.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protocol.envelope import new_id
from protocol.events import (
    AdapterPromoted,
    AdapterRejected,
    EvaluationCompleted,
    TrainingFailed,
    TrainingFinished,
    TrainingProgress,
    TrainingStarted,
    TrainingTeacherFailed,
)
from protocol.trainer_api import Evaluate
from services.common.config import Config
from services.common.logging import get_logger
from services.common.paths import Paths, anchor_cache_dir, paraphrase_cache_dir
from services.lib.facts import stable_seed

log = get_logger("trainer.sleep")

EmitFn = Callable[[Any], int]
EvaluateFn = Callable[[Evaluate], EvaluationCompleted]
PROGRESS_EVERY_S = 2.0


NO_EXAMPLES = "the night's memories produced no training examples"


def nothing_new(since: int) -> str:
    """Why a night has nothing to learn (the sleep's training.failed error and the dry run's answer)."""
    return (f"no new trainable memories since seq {since} "
            "(memories routed to training, not forgotten, not #no-train)")


class SleepFailed(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


@dataclass
class SleepState:
    sleep_id: str
    adapter_id: str
    trigger: str
    state: str = "building"
    step: int = 0
    steps: int = 0
    loss: float = 0.0
    verdict: str = ""
    error: str = ""
    started_at: float = field(default_factory=time.time)


def new_sleep_ids(store: Any) -> tuple[str, str]:
    return new_id("sl-"), store.new_id()


class Sleep:
    def __init__(self, paths: Paths, config: Config, state: SleepState, *, emit: EmitFn,
                 evaluate: EvaluateFn, should_stop: Callable[[], bool], steps: int | None = None,
                 forgotten_now: Callable[[], set[str]] | None = None) -> None:
        from services.lib.adapters.store import AdapterStore

        self.paths = paths
        self.config = config
        self.state = state
        self.emit = emit
        self.evaluate = evaluate
        self.should_stop = should_stop
        # None until the dataset is built when steps come from epochs (config steps = 0).
        self.steps = steps or config.trainer.steps or None
        self.store = AdapterStore(paths.adapters)
        self.paraphrased_by = ""  # set while the dataset is built
        self.retrain = ""  # why this night re-trains the serving adapter's night (services/trainer/forgets.py)
        self._built_forgotten: set[str] = set()  # the forgotten memory ids its dataset was built without
        # Every forgotten memory id now (default: asked of ingest); checked again before promoting.
        self.forgotten_now = forgotten_now or self._forgotten_now

    def run(self) -> str:
        """Run the sleep; returns the verdict: promote, reject or failed (events tell the rest)."""
        try:
            verdict = self._run()
        except SleepFailed as exc:
            self.state.state, self.state.error, verdict = "idle", str(exc), "failed"
            log.warning("trainer.sleep_failed", stage=exc.stage, error=str(exc))
            self.emit(TrainingFailed(sleep_id=self.state.sleep_id, stage=exc.stage, error=str(exc)))
        except Exception as exc:  # a bug must still end the sleep with an event
            self.state.state, self.state.error, verdict = "idle", str(exc), "failed"
            log.exception("trainer.sleep_crashed")
            self.emit(TrainingFailed(sleep_id=self.state.sleep_id, stage="internal", error=f"{type(exc).__name__}: {exc}"))
        if verdict != "promote" and self.retrain and not self.should_stop():
            # Forgetting must not wait on a gate or a failed run: the serving adapter holds what was forgotten.
            try:
                self._fall_back_if_held()
            except Exception:
                log.exception("trainer.forget_rollback_failed")
        self.state.verdict = verdict
        self.state.state = "idle"
        return verdict

    # -- the night ----------------------------------------------------------
    def _run(self) -> str:
        from services.common.heavylock import HeavyRunLock, heavy_lock_path

        lock = HeavyRunLock(heavy_lock_path(self.paths))
        if not lock.acquire("trainer", timeout_s=self.config.trainer.lock_timeout_s):
            holder = lock.holder() or {}
            raise SleepFailed("lock", f"the heavy-run lock is held by {holder.get('holder', 'another process')}; "
                                      "try again when it is done")
        try:
            interrupted = self._interrupted_runs()
            self.store.cleanup_staging(keep=interrupted.values())
            try:
                dataset, manifest = self._build_dataset()
                self._adopt_checkpoints(interrupted)
            finally:
                self.store.cleanup_staging(keep=[self.state.adapter_id])
            self._train(manifest)
        finally:
            lock.release()
        return self._judge(dataset)

    def _interrupted_runs(self) -> dict[str, str]:
        """Staging dirs a killed sleep left with checkpoints: sha256(train.jsonl) -> dir name."""
        import hashlib

        found = {}
        root = self.store.staging_root
        for entry in sorted(root.iterdir()) if root.is_dir() else ():
            train = entry / "dataset" / "train.jsonl"
            if (entry / "checkpoints").is_dir() and train.is_file():
                found[hashlib.sha256(train.read_bytes()).hexdigest()] = entry.name
        return found

    def _adopt_checkpoints(self, interrupted: dict[str, str]) -> None:
        """Resume a killed night: the same dataset again gets the old run's checkpoints.

        The worker itself only resumes from a checkpoint whose key (training
        parameters and data fingerprint) matches, so anything else starts afresh.
        """
        import hashlib

        staging = self.store.staging_root / self.state.adapter_id
        digest = hashlib.sha256((staging / "dataset" / "train.jsonl").read_bytes()).hexdigest()
        old = interrupted.get(digest)
        if old and old != self.state.adapter_id and not (staging / "checkpoints").exists():
            os.rename(self.store.staging_root / old / "checkpoints", staging / "checkpoints")
            log.info("trainer.resuming", from_adapter=old, adapter_id=self.state.adapter_id)

    def _previous_max_seq(self) -> int:
        current = self.store.current()
        if current is None:
            return 0
        manifest = self.store.show(current)
        return int(manifest.get("dataset", {}).get("max_seq", 0))

    def replay_pool(self) -> list[dict]:
        """Every kept adapter's replay.jsonl entries: what a night's replay samples from."""
        pool: list[dict] = []
        for info in self.store.list():
            path = self.paths.adapters / info.adapter_id / "replay.jsonl"
            if path.is_file():
                pool += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return pool

    def _replay(self, new_examples: int, pool: list[dict] | None = None) -> list[dict]:
        pool = self.replay_pool() if pool is None else pool
        share = self.config.trainer.replay_share
        want = int(round(new_examples * share / max(1e-9, 1 - share))) if pool else 0
        # Seeded by what the night is made of, not by the sleep: the same
        # memories give the same dataset, so a killed night can be resumed.
        seed = stable_seed("replay", self._previous_max_seq(), new_examples, len(pool))
        return random.Random(seed).sample(pool, min(want, len(pool)))

    def _known_facts(self) -> list:
        """Facts earlier adapters taught: false-recall items must not ask about them."""
        known = []
        for info in self.store.list():
            try:
                facts = self.store.show(info.adapter_id).get("dataset", {}).get("facts", [])
            except Exception:
                continue
            known += [(f.get("subject", ""), f.get("relation", "")) for f in facts if isinstance(f, dict)]
        return known

    # -- the dataset, in steps `circ sleep --dry-run` (services.trainer.plan) shares ------------
    def gather(self) -> tuple[int, list, set[str]]:
        """(since_seq, the trainable memories after it, every forgotten memory id), asked of ingest.

        With nothing new and a serving adapter that holds a forgotten memory, the
        memories are that adapter's own night again, minus the forgotten
        (services/trainer/forgets.py): ``since_seq`` is then the adapter's own.
        """
        from services.trainer.forgets import decide
        from services.trainer.memories import IngestMemories, MemoriesUnavailable

        since = self._previous_max_seq()
        try:
            with IngestMemories(self.paths) as ingest:
                memories, forgotten = ingest.trainable(after_seq=since), ingest.forgotten_ids()
                decision = decide(self.store, forgotten, has_new=bool(memories))
                if decision.retrain:
                    since, memories = decision.since, ingest.trainable(after_seq=decision.since)
                return since, memories, forgotten
        except MemoriesUnavailable as exc:
            raise SleepFailed("dataset", f"{exc}; start ingest with `circ up` and sleep again") from None

    def retrain_reason(self, since: int, forgotten: set[str]) -> str:
        """Why this night re-trains the serving adapter's night ("" for an ordinary night)."""
        from services.trainer.forgets import retrain_reason, unhonoured

        current = self.store.current()
        if current is None or since >= self._previous_max_seq():
            return ""
        held = unhonoured(self.store, current, forgotten)
        return retrain_reason(held, current) if held else ""

    def _forgotten_now(self) -> set[str]:
        """Every forgotten memory id, asked of ingest again (a forget can come during the night)."""
        from services.trainer.memories import IngestMemories

        with IngestMemories(self.paths) as ingest:
            return ingest.forgotten_ids()

    def _forgotten_or_empty(self) -> set[str]:
        try:
            return self.forgotten_now()
        except Exception as exc:  # ingest gone: fall back as far as the forgets known at the build
            log.warning("trainer.forgotten_unavailable", error=str(exc))
            return set(self._built_forgotten)

    def _forgets_since_built(self) -> list[str] | None:
        """Forgotten memories the candidate was trained on, asked now (a forget may have come while
        it trained); None when ingest cannot say (the candidate is then not promoted: fail closed)."""
        from services.trainer.forgets import unhonoured

        try:
            forgotten = self.forgotten_now()
        except Exception as exc:
            log.warning("trainer.forgotten_unavailable", error=str(exc))
            return None
        return unhonoured(self.store, self.state.adapter_id, forgotten)

    def _fall_back_if_held(self) -> None:
        from services.trainer.forgets import unhonoured

        forgotten = self._forgotten_or_empty()
        if unhonoured(self.store, self.store.current(), forgotten):
            self._fall_back(forgotten, self.retrain)

    def _fall_back(self, forgotten: set[str], why: str) -> str | None:
        """Stop serving an adapter that holds a forgotten memory: roll back to the newest one that
        holds none (or the base model), logged as ``adapter.rolled_back``; returns the new current."""
        from protocol.events import AdapterRolledBack
        from services.trainer.forgets import clean_fallback

        previous = self.store.current()
        target = clean_fallback(self.store, forgotten)
        new = self.store.rollback(target) if target else self.store.rollback("none")
        log.warning("trainer.forget_rollback", previous=previous, current=new, why=why)
        self.emit(AdapterRolledBack(adapter_id=new, previous_id=previous))
        return new

    def dataset_options(self, forgotten: set[str]) -> dict:
        """build_dataset's keyword arguments for this night, before any paraphraser."""
        return dict(phrasings=self.config.trainer.phrasings_per_fact, seed=0,
                    system_prompt=self.config.chat.system_prompt, known_facts=self._known_facts(),
                    forgotten_ids=forgotten, abstain_share=self.config.trainer.abstain_share)

    def compose(self, memories: list, options: dict, pool: list[dict] | None = None) -> Any:
        """The night's dataset: built once to size the replay, then again with the replay in it."""
        from services.trainer.dataset import build_dataset

        first = build_dataset(memories, **options)
        return build_dataset(memories, replay=self._replay(len(first.examples), pool), **options)

    def planned_steps(self, examples: int) -> int:
        """The steps given (request or config), else epochs over the examples and their anchors."""
        from services.trainer.steps import items_with_anchors, steps_for

        if self.steps is not None:
            return self.steps
        t = self.config.trainer
        return steps_for(items_with_anchors(examples, t.anchor_share), epochs=t.epochs,
                         batch_size=t.batch_size, max_steps=t.max_steps)

    def _build_dataset(self) -> tuple[Any, dict]:
        from services.trainer.dataset import save_dataset
        from services.trainer.stop_rule import write_probe

        since, memories, forgotten = self.gather()
        self.retrain = self.retrain_reason(since, forgotten)
        self._built_forgotten = set(forgotten)
        if self.retrain:
            log.info("trainer.retrain", reason=self.retrain, since_seq=since, memories=len(memories))
        if not memories and self.retrain:
            # Nothing of the serving adapter's night is left to re-train: run() goes back to one that honours.
            raise SleepFailed("dataset", f"{self.retrain}, and nothing of its night is left to learn: rolling back "
                                         "to the newest adapter that holds none of the forgotten memories "
                                         "(or the base model)")
        if not memories:
            raise SleepFailed("dataset", nothing_new(since))
        options = self.dataset_options(forgotten)
        from services.trainer.paraphrase import rewordings_per_fact

        paraphrases = rewordings_per_fact(self.config.trainer)
        self.paraphrased_by = ""
        if paraphrases:
            options.update(max_paraphrases=paraphrases,
                           paraphraser=self._model_paraphraser(memories, paraphrases, options))
        dataset = self.compose(memories, options)
        if not dataset.examples:
            raise SleepFailed("dataset", NO_EXAMPLES)
        staging = self.store.stage(self.state.adapter_id)
        save_dataset(dataset, staging / "dataset")
        write_probe(dataset, staging / "dataset")  # the stop rule's questions: one trained item per fact
        (staging / "replay.jsonl").write_text("".join(json.dumps(e) + "\n" for e in dataset.replay_pool))
        manifest = dict(dataset.manifest)
        # A re-train never moves the next night's starting point back (its last memory may be forgotten).
        manifest["max_seq"] = max([m.seq for m in memories] + ([self._previous_max_seq()] if self.retrain else []))
        manifest["since_seq"] = since
        if self.retrain:
            manifest["retrain"] = {"reason": self.retrain, "replaces": self.store.current()}
        # Who wrote the rewordings: "teacher host:port", "model NAME", or "" (templates only).
        manifest["paraphrased_by"] = self.paraphrased_by
        counts = {k: int(v) for k, v in manifest.get("counts", {}).items()}
        self.steps = self.planned_steps(len(dataset.examples))
        self.state.state, self.state.steps = "training", self.steps
        self.emit(TrainingStarted(sleep_id=self.state.sleep_id, adapter_id=self.state.adapter_id,
                                  trigger=self.state.trigger, counts=counts,
                                  source_seqs=sorted({m.seq for m in memories}), steps=self.steps))
        return dataset, manifest

    def _model_paraphraser(self, memories: list, limit: int, options: dict) -> Any:
        """A lookup of the model's rewordings for this night's questions; generates the missing ones.

        The dataset is built once with a recording paraphraser to learn which
        questions it will ask about, the model rewords those not cached yet in
        a child process (under this sleep's lock), and the real build then
        looks them up. A failed pass costs variety, not the night.
        """
        from services.common.paths import resolve_model_dir
        from services.trainer.dataset import build_dataset
        from services.trainer.paraphrase import ProposalCache, collect_requests, write_requests
        from services.trainer.runner import run_paraphraser

        requests = collect_requests(lambda record: build_dataset(memories, **{**options, "paraphraser": record,
                                                                              "max_paraphrases": limit}))
        if self.config.trainer.teacher_url:
            taught = self._teacher_paraphraser(requests)
            if taught is not None:
                return taught
            if self.config.trainer.model_paraphrases == 0:
                return None  # the rule templates only
        model_dir = resolve_model_dir(self.config.chat.model)
        self.paraphrased_by = f"model {model_dir.name}"
        cache = ProposalCache(paraphrase_cache_dir(), model_dir.name)
        missing = cache.missing(requests)
        if not missing:
            return cache.paraphraser()
        self.state.state, self.state.step, self.state.steps = "paraphrasing", 0, len(missing)
        work = self.store.stage(self.state.adapter_id) / "paraphrasing"
        work.mkdir(exist_ok=True)
        write_requests(work / "requests.jsonl", missing)
        started = time.monotonic()

        def on_progress(p: dict) -> None:
            self.state.step = int(p.get("step", 0))

        result = run_paraphraser(model_dir, work / "requests.jsonl", work / "proposals.json",
                                 on_progress=on_progress, should_stop=self.should_stop)
        self.state.state, self.state.step, self.state.steps = "building", 0, 0
        if result.status == "stopped":
            raise SleepFailed("dataset", "the sleep was stopped while the model was paraphrasing")
        if result.ok:
            try:
                proposals = json.loads((work / "proposals.json").read_text())
                cache.update({str(k): [(str(q), None if a is None else str(a)) for q, a in v]
                              for k, v in proposals.items()})
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                log.warning("trainer.paraphrases_unreadable", error=str(exc))
        else:
            log.warning("trainer.paraphrase_failed", status=result.status, error=result.error)
        log.info("trainer.paraphrased", requests=len(missing), ok=result.ok,
                 duration_s=round(time.monotonic() - started, 1))
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        return cache.paraphraser()

    def _teacher_paraphraser(self, requests: list) -> Any:
        """The teacher's rewordings (``trainer.teacher_url``), or None to fall back to the built-in ones."""
        from services.trainer.paraphrase import ProposalCache
        from services.trainer.teacher import Teacher, TeacherError

        t = self.config.trainer
        teacher = Teacher(t.teacher_url, t.teacher_model, t.teacher_timeout_s,
                          redact_names=self.config.ingest.redact_names)
        cache = ProposalCache(paraphrase_cache_dir(), teacher.identity)
        missing = cache.missing(requests)
        self.state.state, self.state.step, self.state.steps = "asking the teacher", 0, len(missing)
        answered: dict = {}
        started = time.monotonic()

        def on_progress(done: int) -> None:
            self.state.step = done

        try:
            answered = teacher.propose(missing, on_progress=on_progress, should_stop=self.should_stop)
        except TeacherError as exc:
            log.warning("trainer.teacher_failed", teacher=teacher.where, error=str(exc))
            self.emit(TrainingTeacherFailed(sleep_id=self.state.sleep_id, teacher=teacher.where, error=str(exc),
                                            requests=len(missing), answered=len(answered)))
            return None
        finally:
            cache.update(answered)  # what it did answer is kept for the next night
            self.state.state, self.state.step, self.state.steps = "building", 0, 0
        if self.should_stop():
            raise SleepFailed("dataset", "the sleep was stopped while the teacher was rewording")
        log.info("trainer.taught", teacher=teacher.where, requests=len(missing),
                 duration_s=round(time.monotonic() - started, 1))
        self.paraphrased_by = f"teacher {teacher.where}"
        return cache.paraphraser()

    def _params(self) -> Any:
        from services.trainer.params import TrainParams

        t = self.config.trainer
        return TrainParams(rank=t.rank, lr=t.learning_rate, scale=t.lora_scale, batch_size=t.batch_size,
                           num_layers=t.num_layers, steps=self.steps, max_seq_len=t.max_seq_len,
                           anchor_share=t.anchor_share, compute=t.compute, objective=t.objective,
                           early_stop=t.stop_when_learned, check_every=t.stop_check_steps,
                           learned_share=t.stop_learned_share, patience=t.stop_patience)

    def _train(self, manifest: dict) -> None:
        from services.common.paths import resolve_model_dir
        from services.trainer.runner import run_worker

        staging = self.store.stage(self.state.adapter_id)
        last_report = 0.0
        started = time.monotonic()

        def on_progress(p: dict) -> None:
            nonlocal last_report
            self.state.step, self.state.loss = int(p.get("step", 0)), float(p.get("loss", 0.0))
            if time.monotonic() - last_report >= PROGRESS_EVERY_S or self.state.step >= self.steps:
                last_report = time.monotonic()
                self.emit(TrainingProgress(sleep_id=self.state.sleep_id, step=self.state.step, steps=self.steps,
                                           loss=round(self.state.loss, 4),
                                           tokens_per_s=round(float(p.get("tokens_per_s", 0.0)), 1),
                                           eta_s=round(float(p.get("eta_s", 0.0)), 1)))

        params = self._params()
        result = run_worker(resolve_model_dir(self.config.chat.model), staging / "dataset", staging, params,
                            on_progress=on_progress, should_stop=self.should_stop, anchor_cache=anchor_cache_dir())
        if not result.ok:
            raise SleepFailed("memory" if result.exit_code == 3 else "train", result.error or "training failed")
        done = result.summary
        stopped = {"planned": self.steps, "run": int(done.get("steps") or self.state.step),
                   "stopped_because": str(done.get("stopped_because") or "cap")}
        manifest_out = {"dataset": manifest, "train": _builtins(params), "sleep_id": self.state.sleep_id,
                        "trigger": self.state.trigger, "final_loss": self.state.loss, "steps": stopped}
        self.state.state = "saving"
        self.store.commit(self.state.adapter_id, manifest_out)
        self.emit(TrainingFinished(sleep_id=self.state.sleep_id, adapter_id=self.state.adapter_id,
                                   steps=stopped["run"], final_loss=round(self.state.loss, 4),
                                   duration_s=round(time.monotonic() - started, 1),
                                   steps_planned=stopped["planned"], stopped_because=stopped["stopped_because"]))

    def _judge(self, dataset: Any) -> str:
        self.state.state = "evaluating"
        current = self.store.current()
        request = Evaluate(adapter_id=self.state.adapter_id,
                           candidate_dir=str(self.paths.adapters / self.state.adapter_id),
                           baseline_dir=str(self.paths.adapters / current) if current else None,
                           baseline_id=current, facts=list(dataset.eval_facts),
                           false_facts=list(dataset.false_facts), request_id=new_id("e"))
        try:
            evaluation = self.evaluate(request)
        except Exception as exc:
            reason = f"the evaluator could not judge it: {exc}"
            self.store.update_manifest(self.state.adapter_id, "verdict", "reject")
            self.emit(AdapterRejected(adapter_id=self.state.adapter_id, reasons=[reason]))
            return "reject"
        self.store.update_manifest(self.state.adapter_id, "evaluation", _builtins(evaluation))
        reasons = list(evaluation.reasons)
        forgotten = self._forgets_since_built() if evaluation.verdict == "promote" else []
        if forgotten is None:
            reasons.append("could not ask ingest which memories were forgotten while it trained; "
                           "start ingest with `circ up` and sleep again")
        elif forgotten:
            reasons.append(f"{len(forgotten)} memor{'y' if len(forgotten) == 1 else 'ies'} it was trained on "
                           "were forgotten during the night; the next night re-trains without them")
        verdict = "promote" if evaluation.verdict == "promote" and forgotten == [] else "reject"
        self.store.update_manifest(self.state.adapter_id, "verdict", verdict)
        if verdict != "promote":
            self.emit(AdapterRejected(adapter_id=self.state.adapter_id, reasons=reasons))
            return "reject"
        self.state.state = "promoting"
        self.store.promote(self.state.adapter_id)
        sha = self.store.hashes(self.state.adapter_id)
        self.emit(AdapterPromoted(adapter_id=self.state.adapter_id, previous_id=current,
                                  sha256={k: str(v) for k, v in sha.items()}))
        self.store.retain(self.config.trainer.keep_last)
        return "promote"


def _builtins(obj: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(obj)
