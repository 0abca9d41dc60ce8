"""The training data of a run: ``train.jsonl`` read and validated, its fingerprint, the example order."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from services.trainer.worker_io import InputError

TRAIN_FILE = "train.jsonl"


def read_examples(data_dir: Path) -> list[dict[str, Any]]:
    """train.jsonl as a list of chat examples, validated (InputError says which line)."""
    path = Path(data_dir) / TRAIN_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read the training data {path}: {exc}") from exc
    examples = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{path}:{number} is not JSON: {exc}") from exc
        messages = example.get("messages") if isinstance(example, dict) else None
        if not isinstance(messages, list) or len(messages) < 2 or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise InputError(f'{path}:{number}: expected {{"messages": [{{"role", "content"}}, ...]}} '
                             "with at least a user and an assistant message")
        if messages[-1]["role"] != "assistant":
            raise InputError(f"{path}:{number}: the last message must be the assistant's (the answer to learn)")
        examples.append({"messages": messages})
    if not examples:
        raise InputError(f"{path} holds no examples")
    return examples


def data_fingerprint(data_dir: Path) -> str:
    return hashlib.sha256((Path(data_dir) / TRAIN_FILE).read_bytes()).hexdigest()


def example_order(step: int, n_examples: int, batch_size: int, seed: int) -> list[int]:
    """The example indices of 1-based ``step``: a fresh permutation per epoch.

    A pure function of the step, so a resumed run sees exactly the batches
    the unbroken run would have seen.
    """
    import numpy as np

    per_epoch = max(1, n_examples // batch_size)
    epoch, position = divmod(step - 1, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_examples)
    return [int(i) for i in order[position * batch_size:(position + 1) * batch_size]]


