"""The training worker's stdout lines keep their contract (protocol.worker_lines).

One tiny real run of ``python -m services.trainer.worker`` on the embedded
model through the parent-side runner, and one refused for bad input: every
line the parent received decodes as its typed Struct, in the documented order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from protocol.worker_lines import (
    WorkerDone,
    WorkerError,
    WorkerHello,
    WorkerLine,
    WorkerProgress,
    WorkerStarted,
)
from services.trainer.params import TrainParams
from services.trainer.runner import parse_worker_line, run_worker

TINY = TrainParams(steps=4, steps_per_report=2, steps_per_checkpoint=2, max_seq_len=64)
LINE: msgspec.json.Decoder[Any] = msgspec.json.Decoder(WorkerLine)


def typed(lines: list[dict[str, Any]]) -> list[Any]:
    return [LINE.decode(json.dumps(line)) for line in lines]


def test_a_real_run_speaks_the_contract(model_dir: Path, tmp_path: Path) -> None:
    """hello first, started before any progress, done last; each line decodes as its Struct."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": "What is my cat's name?"},
        {"role": "assistant", "content": "Your cat is called Mochi."}]}) + "\n")
    lines: list[dict[str, Any]] = []
    result = run_worker(model_dir, data, tmp_path / "out", TINY, on_line=lines.append)
    assert result.ok, f"{result.status}: {result.error}\n{result.stderr_tail}"
    kinds = typed(lines)
    assert isinstance(kinds[0], WorkerHello) and kinds[0].pid == result.pid
    assert isinstance(kinds[-1], WorkerDone) and kinds[-1].steps == TINY.steps
    started = next(i for i, k in enumerate(kinds) if isinstance(k, WorkerStarted))
    progress = [i for i, k in enumerate(kinds) if isinstance(k, WorkerProgress)]
    assert progress and min(progress) > started
    assert [kinds[i].step for i in progress] == [2, 4]


def test_a_refused_run_ends_with_a_typed_error(model_dir: Path, tmp_path: Path) -> None:
    """No training data: the last line is an ``error`` of kind ``input`` saying why."""
    lines: list[dict[str, Any]] = []
    (tmp_path / "empty").mkdir()
    result = run_worker(model_dir, tmp_path / "empty", tmp_path / "out", TINY, on_line=lines.append)
    assert result.status == "bad_input"
    last = typed(lines)[-1]
    assert isinstance(last, WorkerError) and last.kind == "input" and last.error == result.error


def test_what_is_not_a_worker_line_is_not_taken_for_one() -> None:
    """Stray output on the channel (a library's print, a torn line) stays out of the results."""
    assert parse_worker_line("loading weights...") is None
    assert parse_worker_line('["progress"]') is None
    assert parse_worker_line('{"step": 3}') is None
    assert parse_worker_line('{"type": "progress", "step": 1, "steps": 2}') == {"type": "progress", "step": 1,
                                                                              "steps": 2}


def test_the_worker_checks_its_own_lines_against_the_contract() -> None:
    from services.trainer.worker_io import off_contract

    assert off_contract('{"type": "progress", "step": 3, "steps": 10, "loss": 1.5}') == ""
    assert "not in the contract: lossy" in off_contract('{"type": "progress", "step": 3, "steps": 10, "lossy": 1}')
    assert "Expected `int`" in off_contract('{"type": "progress", "step": "three", "steps": 10}')
    assert "unknown line type 'bogus'" in off_contract('{"type": "bogus"}')
    assert off_contract("not json")
