"""A forget reaches the weights, through the real daemons: the next night re-trains without it.

One instance (all daemons under supervisord, no scheduled window, the gates
opened wide and template rewordings only: what a 2-step night learns is not
under test here, the forget is). Two facts are told and a 2-step night is
promoted; one fact's memory is forgotten with `circ forget`; then, with
nothing new to learn:

- `circ forget` says the serving adapter was trained on it and that the
  weights forget it at the next night; `circ adapters list` marks that
  adapter and `circ adapters show` says it holds a forgotten memory;
- `circ sleep --dry-run` says "re-train: 1 forget not honoured by the
  current adapter";
- the next `circ sleep` runs anyway, its train.jsonl holds the other fact
  and not the forgotten one, it is promoted, and its manifest (and `circ
  adapters show`) lists the forget it honours.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.lib.adapters.store import AdapterStore
from services.trainer.memories import IngestMemories

from .harness import Instance, base_env, make_home, running
from .test_night import _teach

pytestmark = pytest.mark.e2e

FACTS = ("My cat is called Miso.", "My sister lives in Porto.")
STEPS = "2"
SLEEP_TIMEOUT_S = 900  # a 2-step night and its evaluation on a loaded 2-core box
GATES_OPEN = {
    "CIRCADIAN_EVALUATOR_MIN_FACT_RECALL": "0", "CIRCADIAN_EVALUATOR_MAX_CANARY_DROP_PTS": "100",
    "CIRCADIAN_EVALUATOR_MAX_PPL_DRIFT_PCT": "1000", "CIRCADIAN_EVALUATOR_MAX_FALSE_RECALL": "1",
    "CIRCADIAN_EVALUATOR_MAX_FALSE_RECALL_RISE": "1", "CIRCADIAN_EVALUATOR_MAX_FORMAT_DROP": "1",
}


@pytest.fixture(scope="module")
def inst() -> Iterator[Instance]:
    home = make_home()
    env = {k: v for k, v in base_env(home).items() if not k.startswith(("CIRCADIAN_TRAINER_", "CIRCADIAN_EVALUATOR_"))}
    env.update(GATES_OPEN, CIRCADIAN_TRAINER_WINDOW="", CIRCADIAN_TRAINER_MODEL_PARAPHRASES="0")
    with running(home, env) as instance:
        yield instance


def _sleep(inst: Instance) -> dict:
    result = inst.circ("sleep", "--wait", "--json", "--steps", STEPS, "--timeout", str(SLEEP_TIMEOUT_S - 60),
                       timeout_s=SLEEP_TIMEOUT_S)
    summary = json.loads(result.stdout)
    assert result.returncode == 0 and summary["verdict"] == "promote", (summary, result.stderr, inst.logs())
    return summary


def test_a_forget_makes_the_next_night_retrain_without_it(inst: Instance) -> None:
    _teach(inst, FACTS)
    first = _sleep(inst)["adapter_id"]
    store = AdapterStore(inst.paths.adapters)
    assert store.current() == first
    with IngestMemories(inst.paths) as ingest:
        miso = [m.memory_id for m in ingest.trainable() if "Miso" in m.text]
    assert miso, "the Miso fact was not stored for training"

    told = inst.circ("forget", miso[0], "--yes", timeout_s=120)
    assert told.returncode == 0, told.stderr
    assert f"The adapter serving now ({first}) was trained on 1 of them" in told.stdout, told.stdout
    assert "the weights forget them at the next night" in told.stdout, told.stdout
    listed = inst.circ("adapters", "list").stdout
    assert any(first in line and "holds 1 forgotten" in line for line in listed.splitlines()), listed
    assert "holds forgotten: 1" in inst.circ("adapters", "show", first).stdout

    planned = inst.circ("sleep", "--dry-run", "--json", timeout_s=240)
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["retrain"] == f"re-train: 1 forget not honoured by the current adapter {first}", plan

    second = _sleep(inst)["adapter_id"]
    assert second != first and store.current() == second
    train = (inst.paths.adapters / second / "dataset" / "train.jsonl").read_text()
    assert "Porto" in train and "Miso" not in train, "the re-train must hold the rest and not the forgotten"
    dataset = store.show(second)["dataset"]
    assert miso[0] in dataset["honours_forgets"] and dataset["retrain"]["replaces"] == first
    shown = inst.circ("adapters", "show", second).stdout
    assert "honours forgets: " in shown and miso[0] in shown and "holds forgotten: 0" in shown, shown
    listed = inst.circ("adapters", "list").stdout
    assert not any(second in line and "forgotten" in line for line in listed.splitlines()), listed
    assert Path(inst.paths.adapters / first).is_dir(), "the old adapter is kept (rollback, audit)"
