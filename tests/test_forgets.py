"""Forgetting reaches the weights, socket-free: which forgets an adapter honours, when a night
re-trains for them, what the dataset manifest records, and what a sleep does at its verdict.

Everything is real except ingest, whose answers (the trainable memories, the forgotten ids)
are given as it would send them: the adapter store on disk, the dataset builder, the plan's
files, the sleep's verdict code. Through the daemons: tests/e2e/test_forget_night.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import msgspec

from protocol.events import AdapterRejected, AdapterRolledBack, EvaluationCompleted
from services.cli.sleep_plan import render
from services.common.config import load_config
from services.common.paths import Paths
from services.lib.adapters.store import AdapterStore
from services.lib.memory.index import MemoryRecord
from services.trainer.dataset import build_dataset
from services.trainer.forgets import clean_fallback, decide, held_memory_ids, honoured, unhonoured
from services.trainer.plan import plan_sleep
from services.trainer.schedule import parse_window, sleep_trigger
from services.trainer.sleep import Sleep, SleepState

TEMPLATES_ONLY = {"trainer": {"model_paraphrases": 0}}


def mem(seq: int, text: str) -> MemoryRecord:
    return MemoryRecord(memory_id=f"m{seq}", seq=seq, route="both", text=text, ts=1747300000.0 + seq)


def replay_item(memory_id: str, question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            "source": {"kind": "qa", "memory_ids": [memory_id], "seqs": [int(memory_id[1:])]}}


def night(paths: Paths, adapter_id: str, memory_ids: list[str], *, since: int, max_seq: int,
          replayed: list[str] | None = None, pool: list[dict] = (), promote: bool = True) -> str:
    """A committed adapter as a night leaves it (``replayed`` None: a manifest from before the field)."""
    store = AdapterStore(paths.adapters)
    staging = store.stage(adapter_id)
    (staging / "adapters.safetensors").write_bytes(os.urandom(64))
    (staging / "adapter_config.json").write_text(json.dumps({"fine_tune_type": "lora", "num_layers": 2}))
    (staging / "replay.jsonl").write_text("".join(json.dumps(e) + "\n" for e in pool))
    dataset = {"since_seq": since, "max_seq": max_seq, "memory_ids": memory_ids, "facts": []}
    if replayed is not None:
        dataset["replayed_memory_ids"] = replayed
    store.commit(adapter_id, {"dataset": dataset})
    if promote:
        store.promote(adapter_id)
    return adapter_id


def test_an_adapter_holds_its_own_and_its_replayed_memories(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    night(paths, "ad-1", ["m1", "m2"], since=0, max_seq=2, replayed=[])
    night(paths, "ad-2", ["m3"], since=2, max_seq=3, replayed=["m1"])
    store = AdapterStore(paths.adapters)
    assert held_memory_ids(store, "ad-2") == {"m1", "m3"}
    assert unhonoured(store, "ad-2", {"m1", "m9"}) == ["m1"]
    assert unhonoured(store, "ad-2", {"m2"}) == [], "m2 was not replayed into ad-2: it honours that forget"
    assert unhonoured(store, None, {"m1"}) == [], "the base model holds nothing"


def test_an_adapter_from_before_the_record_is_assumed_to_hold_the_older_pools(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    night(paths, "ad-1", ["m1"], since=0, max_seq=1, pool=[replay_item("m1", "Where do I work?", "Acme.")])
    night(paths, "ad-2", ["m2"], since=1, max_seq=2)  # no replayed_memory_ids: it may have replayed m1
    assert held_memory_ids(AdapterStore(paths.adapters), "ad-2") == {"m1", "m2"}


def test_nothing_new_and_a_forgotten_memory_in_the_serving_adapter_is_a_retrain(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    night(paths, "ad-1", ["m1", "m2"], since=4, max_seq=9, replayed=[])
    store = AdapterStore(paths.adapters)
    assert decide(store, set(), has_new=False).retrain == "", "no forget: nothing to do"
    assert decide(store, {"m7"}, has_new=False).retrain == "", "a memory it never trained on"
    new = decide(store, {"m1"}, has_new=True)
    assert new.since == 9 and new.retrain == "", "a night of new memories trains without the forgotten anyway"
    retrain = decide(store, {"m1"}, has_new=False)
    assert retrain.since == 4 and retrain.forgets == ("m1",)
    assert retrain.retrain == "re-train: 1 forget not honoured by the current adapter ad-1"


def test_the_schedule_sleeps_for_a_forget_with_nothing_new() -> None:
    now = dt.datetime(2026, 1, 5, 2, 30).astimezone()
    args = dict(now=now, window=parse_window("02:00-05:00"), new_memories=0, min_new=5, idle_s=None,
                idle_minutes=0, last_night=None)
    assert sleep_trigger(**args) is None
    assert sleep_trigger(**args, unhonoured_forgets=1) == "schedule"
    assert sleep_trigger(**{**args, "last_night": now.date()}, unhonoured_forgets=1) is None, "once a night"


def test_the_dataset_manifest_records_the_forgets_it_honours_and_the_replayed_sources() -> None:
    pool = [replay_item("m1", "Where do I work?", "You work at Zorblatt Labs."),
            replay_item("m2", "What is my dog called?", "Your dog is called Rex.")]
    ds = build_dataset([mem(5, "My cat is called Miso.")], replay=pool, forgotten_ids={"m1"})
    assert ds.manifest["honours_forgets"] == ["m1"]
    assert ds.manifest["replayed_memory_ids"] == ["m2"]
    assert "Zorblatt" not in json.dumps(ds.examples) and "Rex" in json.dumps(ds.examples)


def test_the_plan_of_a_retrain_says_so_and_leaves_the_forgotten_out(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    night(paths, "ad-1", ["m1", "m2"], since=0, max_seq=2, replayed=[])
    # As Sleep.gather answers a re-train: the serving adapter's night again (after its since_seq),
    # which ingest lists without the forgotten m1.
    plan = plan_sleep(paths, load_config(TEMPLATES_ONLY),
                      gathered=(0, [mem(2, "My sister lives in Porto.")], {"m1"}))
    assert plan.retrain == "re-train: 1 forget not honoured by the current adapter ad-1", plan
    assert plan.memories == 1 and plan.forgotten_in_current == 1 and not plan.nothing_to_learn
    train = (Path(plan.plan_dir) / "train.jsonl").read_text()
    assert "Porto" in train
    manifest = json.loads((Path(plan.plan_dir) / "manifest.json").read_text())
    assert manifest["honours_forgets"] == ["m1"]
    assert render(msgspec.to_builtins(plan)).startswith("dry run: re-train: 1 forget not honoured")


def test_a_retrain_with_nothing_left_says_it_rolls_back(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    night(paths, "ad-1", ["m1"], since=0, max_seq=1, replayed=[])
    plan = plan_sleep(paths, load_config(TEMPLATES_ONLY), gathered=(0, [], {"m1"}))
    assert plan.retrain and "roll back" in plan.nothing_to_learn and plan.plan_dir == ""


def test_the_fallback_is_the_newest_promoted_adapter_that_holds_none(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    night(paths, "ad-1", ["m1"], since=0, max_seq=1, replayed=[])
    night(paths, "ad-2", ["m2"], since=1, max_seq=2, replayed=[])
    night(paths, "ad-3", ["m3"], since=2, max_seq=3, replayed=["m2"])
    store = AdapterStore(paths.adapters)
    assert clean_fallback(store, {"m3"}) == "ad-2"
    assert clean_fallback(store, {"m2"}) == "ad-1", "ad-3 replayed m2, ad-2 was trained on it"
    assert clean_fallback(store, {"m1", "m2"}) is None, "the base model"


class _Emitted(list):
    def __call__(self, body: object) -> int:
        self.append(body)
        return len(self)


def _sleep(paths: Paths, adapter_id: str, forgotten_now: set[str], emitted: _Emitted) -> Sleep:
    promote = EvaluationCompleted(adapter_id=adapter_id, baseline_id=None, verdict="promote")
    return Sleep(paths, load_config(TEMPLATES_ONLY), SleepState(sleep_id="sl-1", adapter_id=adapter_id,
                                                                 trigger="request"),
                 emit=emitted, evaluate=lambda request: promote, should_stop=lambda: False,
                 forgotten_now=lambda: set(forgotten_now))


def test_a_candidate_trained_on_a_memory_forgotten_during_the_night_is_not_promoted(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    night(paths, "ad-1", ["m1"], since=0, max_seq=1, replayed=[])
    night(paths, "ad-2", ["m2"], since=1, max_seq=2, replayed=[], promote=False)  # the night's candidate
    emitted = _Emitted()
    verdict = _sleep(paths, "ad-2", {"m2"}, emitted)._judge(build_dataset([]))
    assert verdict == "reject" and AdapterStore(paths.adapters).current() == "ad-1"
    [rejected] = [e for e in emitted if isinstance(e, AdapterRejected)]
    assert any("forgotten during the night" in r for r in rejected.reasons), rejected
    assert AdapterStore(paths.adapters).show("ad-2")["verdict"] == "reject"


def test_a_candidate_is_not_promoted_when_ingest_cannot_say_what_is_forgotten(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    night(paths, "ad-2", ["m2"], since=0, max_seq=2, replayed=[], promote=False)
    emitted = _Emitted()
    sleep = _sleep(paths, "ad-2", set(), emitted)

    def down() -> set[str]:
        raise RuntimeError("ingest is not running")

    sleep.forgotten_now = down
    assert sleep._judge(build_dataset([])) == "reject"
    assert AdapterStore(paths.adapters).current() is None


def test_a_retrain_that_is_not_promoted_goes_back_to_an_adapter_that_honours(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    night(paths, "ad-1", ["m1"], since=0, max_seq=1, replayed=[])
    night(paths, "ad-2", ["m2", "m3"], since=1, max_seq=3, replayed=[])
    emitted = _Emitted()
    sleep = _sleep(paths, "ad-9", {"m3"}, emitted)
    sleep.retrain = "re-train: 1 forget not honoured by the current adapter ad-2"
    sleep._fall_back_if_held()
    assert AdapterStore(paths.adapters).current() == "ad-1"
    [rolled] = [e for e in emitted if isinstance(e, AdapterRolledBack)]
    assert rolled.adapter_id == "ad-1" and rolled.previous_id == "ad-2"
    sleep._fall_back_if_held()
    assert len([e for e in emitted if isinstance(e, AdapterRolledBack)]) == 1, "ad-1 honours: nothing more"


def test_honoured_reads_the_manifest() -> None:
    assert honoured({"dataset": {"honours_forgets": ["m1", "m2"]}}) == ["m1", "m2"]
    assert honoured({}) == [] and honoured({"dataset": "broken"}) == []
