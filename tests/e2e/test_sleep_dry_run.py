"""`circ sleep --dry-run` through the real daemons: it plans the night and trains nothing.

One instance (test_night's fixture: all daemons under supervisord, no
scheduled window), in file order:

- on an empty night the dry run says there is nothing to learn and exits 1,
  as a sleep would fail;
- after two facts are told, the plan counts the memories ingest stores for
  training (ListTrainable, the trainer's own source), its dataset file holds
  the examples it counts, and no adapter, ``current`` change, training or
  adapter event, or heavy-run lock came of it;
- `circ forget` says the weights hold none of them (no adapter yet), and the next dry
  run has one memory fewer and counts the forget.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from services.common.heavylock import HeavyRunLock
from services.lib.adapters.store import AdapterStore
from services.trainer.memories import IngestMemories

from . import test_night
from .harness import Instance
from .test_night import FACTS, _events, _head, _tail, _teach

pytestmark = pytest.mark.e2e

inst = test_night.inst  # the night tests' instance fixture; module-scoped, so this module gets its own

PLAN_TIMEOUT_S = 240  # the CLI waits up to 180 s for the trainer on a loaded 2-core box


def _dry_run(instance: Instance, *args: str) -> tuple[int, dict, str]:
    result = instance.circ("sleep", "--dry-run", "--json", *args, timeout_s=PLAN_TIMEOUT_S)
    try:
        return result.returncode, json.loads(result.stdout), result.stderr
    except ValueError:
        raise AssertionError(f"circ sleep --dry-run --json printed no JSON (exit {result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}\n{instance.logs()}") from None


def _untouched(instance: Instance, start: int, adapters_before: list[str], current_before: str | None) -> None:
    store = AdapterStore(instance.paths.adapters)
    assert store.ids() == adapters_before, "a dry run created an adapter"
    assert store.current() == current_before, "a dry run moved adapters/current"
    staged = sorted(p.name for p in store.staging_root.iterdir()) if store.staging_root.is_dir() else []
    assert staged == [], f"a dry run staged {staged}"
    logged = [e["type"] for e in _events(instance, start) if e["type"].startswith(("training.", "adapter.",
                                                                                     "evaluation."))]
    assert logged == [], f"a dry run logged {logged}\n{_tail(instance, start)}"
    assert HeavyRunLock(instance.paths.run / "heavy.lock").holder() is None


def test_a_dry_run_of_an_empty_night_says_there_is_nothing_to_learn(inst: Instance) -> None:
    start = _head(inst)
    code, plan, _ = _dry_run(inst)
    assert code == 1, plan
    assert "no new trainable memories" in plan["nothing_to_learn"], plan
    assert plan["examples"] == 0 and plan["plan_dir"] == ""
    human = inst.circ("sleep", "--dry-run", timeout_s=PLAN_TIMEOUT_S)
    assert human.returncode == 1 and "nothing to learn" in human.stderr, human.stderr
    _untouched(inst, start, [], None)


def test_a_dry_run_plans_the_told_facts_and_trains_nothing(inst: Instance) -> None:
    _teach(inst, FACTS)
    store = AdapterStore(inst.paths.adapters)
    adapters_before, current_before = store.ids(), store.current()
    with IngestMemories(inst.paths) as ingest:
        stored = ingest.trainable(after_seq=0)
    start = _head(inst)
    code, plan, stderr = _dry_run(inst)
    assert code == 0, f"{plan}\n{stderr}"
    assert plan["memories"] == len(stored) >= len(FACTS)
    assert plan["routes"] == dict(Counter(m.route for m in stored))
    assert plan["since_seq"] == 0 and plan["facts"] >= len(FACTS)
    train = Path(plan["plan_dir"]) / "train.jsonl"
    examples = [json.loads(line) for line in train.read_text().splitlines() if line.strip()]
    assert len(examples) == plan["examples"] == sum(plan["counts"].values()) > 0
    assert plan["counts"]["qa"] > 0 and plan["counts"]["replay"] == 0
    assert "Miso" in train.read_text() and "Porto" in train.read_text()
    assert plan["items"] == plan["examples"] + plan["anchors"] and plan["steps"] >= 1
    assert plan["estimated_train_s"] > 0 and plan["step_time_from"]
    assert json.loads((Path(plan["plan_dir"]) / "plan.json").read_text())["examples"] == plan["examples"]
    assert Path(plan["plan_dir"]).parent == inst.paths.data / "plans"
    _untouched(inst, start, adapters_before, current_before)

    human = inst.circ("sleep", "--dry-run", "--steps", "3", timeout_s=PLAN_TIMEOUT_S)
    assert human.returncode == 0, human.stderr
    assert "nothing was trained" in human.stdout and "3 steps" in human.stdout, human.stdout
    assert "forgets remove" in human.stdout and "replay adds" in human.stdout
    _untouched(inst, start, adapters_before, current_before)


def test_forget_says_the_weights_forget_and_the_plan_counts_it(inst: Instance) -> None:
    with IngestMemories(inst.paths) as ingest:
        before = ingest.trainable(after_seq=0)
    miso = [m for m in before if "Miso" in m.text]
    assert miso, [m.text for m in before]
    result = inst.circ("forget", miso[0].memory_id, "--yes", timeout_s=120)
    assert result.returncode == 0, result.stderr
    # No adapter yet: the weights hold none of it (tests/e2e/test_forget_night.py: an adapter that does).
    assert "The weights hold none of them" in result.stdout, result.stdout
    start = _head(inst)
    code, plan, stderr = _dry_run(inst)
    assert code == 0, f"{plan}\n{stderr}"
    assert plan["memories"] == len(before) - 1
    assert plan["forgotten_memories"] >= 1
    assert "Miso" not in (Path(plan["plan_dir"]) / "train.jsonl").read_text()
    _untouched(inst, start, AdapterStore(inst.paths.adapters).ids(), AdapterStore(inst.paths.adapters).current())
