"""The night's stop rule (services.trainer.stop_rule) and length-bucketed batches.

The decision and the probe are checked without a model; two tiny real
worker runs on the embedded model (3 facts, lr 3e-4 so they are learned in
a few steps) show a run that stops early and says why, and a run killed
after its first check that resumes with the rule's history and ends the
same way. Speed is measured in bench/, not here.
"""

from __future__ import annotations

# Imported first on purpose: it preloads OpenBLAS before anything imports mlx.
from services.lib.models.compute import load_for_serving  # noqa: F401  # isort: skip

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from services.common.config import ConfigError, load_config
from services.common.paths import REPO_ROOT
from services.lib.memory.index import MemoryRecord
from services.trainer.checkpoints import CHECKPOINT_DIR, CHECKPOINT_INDEX
from services.trainer.dataset import build_dataset
from services.trainer.params import TrainParams
from services.trainer.runner import run_worker, worker_command
from services.trainer.stop_rule import (
    PROBE_FILE,
    check_every,
    decide,
    probe_examples,
    read_probe,
    write_probe,
)
from services.trainer.train_data import example_order
from services.trainer.worker_io import InputError

FACTS = [
    ("What is my cat's name?", "Your cat is called Mochi.", "Mochi"),
    ("Where do I work?", "You work at Lumen Bakery in Ghent.", "Lumen Bakery"),
    ("What is my sister's name?", "Your sister is named Ilse.", "Ilse"),
]
# Learns the three facts in well under the cap; a check after every pass over the three items.
FAST = TrainParams(steps=60, lr=3e-4, early_stop=True, check_every=3, steps_per_report=3,
                   steps_per_checkpoint=3, max_seq_len=64)
LINE_TIMEOUT_S = 300.0


def _messages(q: str, a: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


# ----------------------------------------------------------------- no model needed


def test_decide_learned_plateau_or_go_on() -> None:
    assert decide([], 3, learned_share=1.0, patience=2) is None
    assert decide([[3, 2, 0.5]], 3, learned_share=1.0, patience=2) is None
    assert decide([[3, 3, 0.5]], 3, learned_share=1.0, patience=2) == "learned"
    assert decide([[3, 2, 0.5]], 3, learned_share=0.6, patience=2) == "learned"  # 2 of 3 >= 60%
    falling = [[3, 0, 2.0], [6, 1, 1.0], [9, 1, 0.5]]
    assert decide(falling, 3, learned_share=1.0, patience=2) is None
    flat = [[3, 0, 2.0], [6, 1, 1.0], [9, 1, 0.99], [12, 1, 1.01]]  # 2 checks without a 2% gain
    assert decide(flat, 3, learned_share=1.0, patience=2) == "plateau"
    assert decide(flat, 3, learned_share=1.0, patience=3) is None


def test_check_every_defaults_to_twice_an_epoch() -> None:
    assert check_every(0, 100) == 50 and check_every(0, 7) == 4 and check_every(0, 1) == 1
    assert check_every(9, 100) == 9


def test_stop_keys_are_validated_in_config_and_params(monkeypatch: pytest.MonkeyPatch) -> None:
    t = load_config().trainer
    assert (t.stop_when_learned, t.stop_check_steps, t.stop_learned_share, t.stop_patience) == (True, 0, 1.0, 2)
    monkeypatch.setenv("CIRCADIAN_TRAINER_STOP_LEARNED_SHARE", "0")
    with pytest.raises(ConfigError, match="stop_learned_share"):
        load_config()
    with pytest.raises(ValueError, match="learned_share"):
        TrainParams(learned_share=1.5)
    with pytest.raises(ValueError, match="patience"):
        TrainParams(patience=0)


def test_bucketed_batches_are_a_function_of_the_step_and_cover_each_epoch() -> None:
    lengths = [10, 50, 11, 49, 12, 48, 13, 47]
    unbroken = [example_order(s, 8, 2, 5, lengths) for s in range(1, 13)]
    assert [example_order(s, 8, 2, 5, lengths) for s in range(7, 13)] == unbroken[6:]
    for epoch in range(3):
        batches = unbroken[epoch * 4:(epoch + 1) * 4]
        assert sorted(i for b in batches for i in b) == list(range(8))
        assert all(abs(lengths[a] - lengths[b]) <= 1 for a, b in batches), batches  # near-equal lengths
    # Batch size 1 is the plain permutation, with or without lengths (earlier runs stay reproducible).
    assert [example_order(s, 8, 1, 5, lengths) for s in range(1, 17)] == \
        [example_order(s, 8, 1, 5) for s in range(1, 17)]


def test_the_probe_is_one_trained_item_per_fact_with_its_value(tmp_path: Path) -> None:
    memories = [MemoryRecord(memory_id=f"m{i}", seq=i, route="both", text=text, ts=time.time())
                for i, text in enumerate(["My cat is called Mochi.", "I live in Lyon."], 1)]
    dataset = build_dataset(memories, phrasings=5, seed=0, system_prompt="Be brief.")
    probes = probe_examples(dataset)
    assert len(probes) == len(dataset.facts) == 3  # the cat's name, its species, the city
    trained = {json.dumps(e["messages"]) for e in dataset.examples}
    for probe, fact in zip(probes, dataset.facts, strict=True):
        assert json.dumps(probe["messages"]) in trained  # the night's own training question
        assert probe["value"] == fact.value and fact.value in probe["messages"][-1]["content"]
    assert write_probe(dataset, tmp_path) == 3
    assert read_probe(tmp_path) == probes
    assert read_probe(tmp_path / "none") == []  # no probe: the rule is off
    (tmp_path / PROBE_FILE).write_text(json.dumps({"messages": probes[0]["messages"], "value": "Paris"}) + "\n")
    with pytest.raises(InputError, match=f"{PROBE_FILE}:1"):
        read_probe(tmp_path)


# ----------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("data")
    (directory / "train.jsonl").write_text("".join(json.dumps({"messages": _messages(q, a)}) + "\n"
                                                   for q, a, _ in FACTS))
    (directory / PROBE_FILE).write_text("".join(json.dumps({"messages": _messages(q, a), "value": v}) + "\n"
                                                for q, a, v in FACTS))
    return directory


@pytest.mark.model
def test_a_run_stops_once_the_facts_are_learned_and_says_why(model_dir: Path, data_dir: Path,
                                                             tmp_path: Path) -> None:
    lines: list[dict[str, Any]] = []
    result = run_worker(model_dir, data_dir, tmp_path, FAST, on_line=lines.append, resume=False)
    assert result.ok, f"{result.status}: {result.error}\n{result.stderr_tail}"
    checks = [line for line in lines if line["type"] == "check"]
    done = result.summary
    assert done["stopped_because"] == "learned" and done["steps_planned"] == 60
    assert done["steps"] < 60 and done["steps"] == checks[-1]["step"]
    assert checks[-1]["learned"] == checks[-1]["facts"] == 3 and checks[-1]["stop"] == "learned"
    assert all(c["stop"] == "" and c["learned"] < 3 for c in checks[:-1])
    assert [c["step"] for c in checks] == list(range(3, done["steps"] + 1, 3))
    assert result.started["probe_items"] == 3 and result.started["check_every"] == 3
    summary = json.loads((tmp_path / "training.json").read_text())
    assert (summary["steps"], summary["steps_planned"], summary["stopped_because"]) == (done["steps"], 60, "learned")
    assert json.loads((tmp_path / "adapter_config.json").read_text())["iters"] == done["steps"]


@pytest.mark.model
def test_a_killed_run_resumes_with_the_rules_history(model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    """kill -9 after the first check's checkpoint: the resumed run keeps that check and stops as the rule says."""
    proc = subprocess.Popen(worker_command(model_dir, data_dir, tmp_path, FAST, resume=False), cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first_check: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + LINE_TIMEOUT_S
        while time.monotonic() < deadline:
            line = json.loads(proc.stdout.readline() or '{"type": "eof"}')
            assert line["type"] not in ("eof", "error", "done"), line
            if line["type"] == "check" and not first_check:
                first_check = line
            if line["type"] == "checkpoint" and first_check:
                break
    finally:
        proc.kill()
        proc.wait(10)
    index = json.loads((tmp_path / CHECKPOINT_DIR / CHECKPOINT_INDEX).read_text())
    assert index["step"] == first_check["step"] == 3
    assert index["checks"] == [[3, first_check["learned"], first_check["probe_loss"]]]

    result = run_worker(model_dir, data_dir, tmp_path, FAST, resume=True)
    assert result.ok, f"{result.status}: {result.error}\n{result.stderr_tail}"
    assert result.started["start_step"] == 3
    summary = json.loads((tmp_path / "training.json").read_text())
    assert summary["checks"][0] == index["checks"][0], "the check made before the kill is kept"
    assert summary["stopped_because"] == "learned" and summary["steps"] < 60
    if first_check["stop"]:  # killed between the decision and the final files: it ends at once
        assert summary["steps"] == 3
    # Asked again, the finished run is reused with what it said.
    again = run_worker(model_dir, data_dir, tmp_path, FAST, resume=True)
    assert again.ok and not again.started
    assert (again.summary["steps"], again.summary["stopped_because"]) == (summary["steps"], "learned")
