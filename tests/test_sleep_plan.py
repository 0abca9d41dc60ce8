"""`circ sleep --dry-run`'s plan, socket-free: counts, replay, forgets, step time, files, the core's answers.

The memories are given as ingest would send them (``gathered``); everything
else is real: the adapter store on disk, the dataset builder, the config's
defaults, the plan's files. Through the daemons: tests/e2e/test_sleep_dry_run.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec
import pytest

from protocol.service_api import ErrorReply
from protocol.trainer_api import PlanSleep, SleepPlan
from services.cli.sleep_plan import render
from services.common.config import load_config
from services.common.daemon import Readiness
from services.common.paths import Paths
from services.lib.adapters.store import AdapterStore
from services.lib.memory.index import MemoryRecord
from services.trainer.core import SleepControl, TrainerCore
from services.trainer.plan import (
    README_S_PER_STEP,
    PlanUnavailable,
    measured_step_s,
    plan_sleep,
    plans_root,
)

TEMPLATES_ONLY = {"trainer": {"model_paraphrases": 0}}  # no dependence on the shared rewording cache


def mem(seq: int, text: str, route: str = "both") -> MemoryRecord:
    return MemoryRecord(memory_id=f"m{seq}", seq=seq, route=route, text=text, ts=1747300000.0 + seq)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def earlier_night(paths: Paths, memory_ids: list[str], replay: list[dict], *, train_s: float, steps: int) -> str:
    """A committed, promoted adapter as a night leaves it: replay pool, manifest, training.json."""
    store = AdapterStore(paths.adapters)
    adapter_id = store.new_id()
    staging = store.stage(adapter_id)
    (staging / "adapters.safetensors").write_bytes(os.urandom(256))
    (staging / "adapter_config.json").write_text(json.dumps({"fine_tune_type": "lora", "num_layers": 2}))
    (staging / "replay.jsonl").write_text("".join(json.dumps(e) + "\n" for e in replay))
    (staging / "training.json").write_text(json.dumps({"steps": steps, "resumed_from": 0, "train_s": train_s}))
    store.commit(adapter_id, {"dataset": {"max_seq": 2, "memory_ids": memory_ids, "facts": []}})
    store.promote(adapter_id)
    return adapter_id


def replay_item(memory_id: str, question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            "source": {"kind": "qa", "memory_ids": [memory_id], "seqs": [int(memory_id[1:])]}}


def test_the_plan_counts_what_it_writes_and_creates_no_adapter(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    memories = [mem(1, "My cat is called Miso."), mem(2, "My sister lives in Porto.", route="lora")]
    plan = plan_sleep(paths, load_config(TEMPLATES_ONLY), gathered=(0, memories, set()), request_id="r")
    assert plan.request_id == "r" and not plan.nothing_to_learn
    assert plan.memories == 2 and plan.routes == {"both": 1, "lora": 1}
    manifest = json.loads((Path(plan.plan_dir) / "manifest.json").read_text())
    assert plan.facts == len(manifest["facts"]) >= 2 and manifest["files"]["train.jsonl"]["lines"] == plan.examples
    train = lines(Path(plan.plan_dir) / "train.jsonl")
    assert len(train) == plan.examples == sum(plan.counts.values()) > 0
    assert plan.counts["qa"] > 0 and plan.counts["replay"] == 0 and plan.replay_pool == 0
    assert any("Miso" in json.dumps(e) for e in train) and any("Porto" in json.dumps(e) for e in train)
    assert plan.items == plan.examples + plan.anchors and plan.steps >= 1
    # No adapter exists yet: the step time is the README's, and the estimate follows from it.
    assert plan.seconds_per_step == README_S_PER_STEP and "README" in plan.step_time_from
    assert plan.estimated_train_s == pytest.approx(plan.steps * README_S_PER_STEP, abs=0.1)
    assert plan.paraphrased_by == "" and plan.paraphrase_requests == 0
    written = json.loads((Path(plan.plan_dir) / "plan.json").read_text())
    assert written["examples"] == plan.examples and written["plan_id"] == plan.plan_id
    assert not paths.adapters.exists() or not [p for p in paths.adapters.iterdir() if p.name != ".staging"]
    assert oct(plans_root(paths).stat().st_mode & 0o777) == oct(0o700)


def test_steps_given_are_the_plans_steps(tmp_path: Path) -> None:
    plan = plan_sleep(Paths(tmp_path), load_config(TEMPLATES_ONLY), steps=7,
                      gathered=(0, [mem(1, "My cat is called Miso.")], set()))
    assert plan.steps == 7 and plan.estimated_train_s == pytest.approx(7 * README_S_PER_STEP, abs=0.1)


def test_replay_and_forgets_from_an_earlier_night(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    pool = ([replay_item("m1", f"Where do I work? ({i})", "You work at Zorblatt Labs.") for i in range(4)]
            + [replay_item("m2", f"What is my dog called? ({i})", "Your dog is called Rex.") for i in range(4)])
    current = earlier_night(paths, ["m1", "m2"], pool, train_s=5.0, steps=10)
    forgotten = {"m1"}
    plan = plan_sleep(paths, load_config(TEMPLATES_ONLY),
                      gathered=(2, [mem(3, "My cat is called Miso."), mem(4, "My sister lives in Porto.")], forgotten))
    assert plan.current_adapter == current and plan.since_seq == 2
    assert plan.replay_pool == 8
    assert plan.forgotten_memories == 1 and plan.forgets_remove == 4 and plan.forgotten_in_current == 1
    assert plan.replay_added == plan.counts["replay"] > 0
    train = (Path(plan.plan_dir) / "train.jsonl").read_text()
    assert "Zorblatt" not in train, "a forgotten memory's examples were replayed"
    assert plan.replay_dropped.get("forgotten", 0) + plan.replay_added <= plan.replay_pool
    # Measured beats the README: 5 s over 10 steps in the serving adapter's training.json.
    assert plan.seconds_per_step == 0.5 and current in plan.step_time_from
    assert AdapterStore(paths.adapters).ids() == [current], "the dry run created an adapter"
    text = render(msgspec.to_builtins(plan))
    assert "forgets remove     4 examples" in text and "replay adds" in text and plan.plan_dir in text


def test_nothing_to_learn_writes_nothing(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    plan = plan_sleep(paths, load_config(TEMPLATES_ONLY), gathered=(5, [], set()))
    assert "no new trainable memories since seq 5" in plan.nothing_to_learn
    assert plan.examples == 0 and plan.plan_dir == "" and not plans_root(paths).exists()


def test_only_the_latest_plan_is_kept(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    gathered = (0, [mem(1, "My cat is called Miso.")], set())
    first = plan_sleep(paths, load_config(TEMPLATES_ONLY), gathered=gathered)
    second = plan_sleep(paths, load_config(TEMPLATES_ONLY), gathered=gathered)
    assert [p.name for p in plans_root(paths).iterdir()] == [second.plan_id] != [first.plan_id]
    # The same memories plan the same dataset (a sleep started now would train on it).
    assert second.counts == first.counts and second.steps == first.steps


def test_a_damaged_training_json_falls_back_to_the_next_measure(tmp_path: Path) -> None:
    (tmp_path / "a1").mkdir()
    (tmp_path / "a1" / "training.json").write_text("{not json")
    (tmp_path / "a2").mkdir()
    (tmp_path / "a2" / "training.json").write_text(json.dumps({"steps": 20, "resumed_from": 10, "train_s": 4.0}))
    assert measured_step_s(tmp_path, ["a1", "a2"]) == (0.4, "adapters/a2/training.json (10 steps in 4 s)")
    assert measured_step_s(tmp_path, ["a1"])[0] == README_S_PER_STEP


# -- the core's answers ------------------------------------------------------------------------
def core_with(tmp_path: Path, *, running: bool, plan) -> TrainerCore:
    class Running:
        sleep_id = "sl-now"
        state = "training"

    sleeps = SleepControl(running=lambda: running, state=lambda: Running(), start=lambda *a: None, plan=plan)
    return TrainerCore(Readiness("trainer"), AdapterStore(tmp_path / "adapters"), sleeps, window=None,
                       lock_path=tmp_path / "heavy.lock", new_trainable=lambda: 0, emit=lambda body: 0)


def test_the_core_answers_the_plan_and_refuses_while_a_sleep_runs(tmp_path: Path) -> None:
    asked = []

    def plan(steps, rid):
        asked.append((steps, rid))
        return SleepPlan(request_id=rid, plan_id="pl-1")

    assert core_with(tmp_path, running=False, plan=plan).handle(PlanSleep(request_id="a", steps=3)).plan_id == "pl-1"
    assert asked == [(3, "a")]
    busy = core_with(tmp_path, running=True, plan=plan).handle(PlanSleep(request_id="b"))
    assert isinstance(busy, ErrorReply) and busy.code == "busy" and "sl-now" in busy.message
    bad = core_with(tmp_path, running=False, plan=plan).handle(PlanSleep(request_id="c", steps=0))
    assert isinstance(bad, ErrorReply) and bad.code == "bad_request"
    assert asked == [(3, "a")]


def test_ingest_down_is_an_unavailable_answer(tmp_path: Path) -> None:
    def plan(steps, rid):
        raise PlanUnavailable("could not ask ingest; start ingest with `circ up`")

    reply = core_with(tmp_path, running=False, plan=plan).handle(PlanSleep(request_id="d"))
    assert isinstance(reply, ErrorReply) and reply.code == "unavailable" and "circ up" in reply.message
