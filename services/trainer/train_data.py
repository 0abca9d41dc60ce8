"""The training data of a run: ``train.jsonl`` read and validated, its fingerprint, the example order."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
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
        context = example.get("context")
        if context is None:
            examples.append({"messages": messages})
            continue
        if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
            raise InputError(f'{path}:{number}: "context" must be a list of memory texts (strings); '
                             "leave it out when the example has none")
        examples.append({"messages": messages, "context": context})
    if not examples:
        raise InputError(f"{path} holds no examples")
    return examples


def data_fingerprint(data_dir: Path) -> str:
    return hashlib.sha256((Path(data_dir) / TRAIN_FILE).read_bytes()).hexdigest()


def example_order(step: int, n_examples: int, batch_size: int, seed: int,
                  lengths: Sequence[int] | None = None) -> list[int]:
    """The example indices of 1-based ``step``: a fresh permutation per epoch.

    A pure function of the step, so a resumed run sees exactly the batches
    the unbroken run would have seen. With ``lengths`` (tokens per example)
    and a batch of more than one, the epoch's examples are bucketed: sorted
    by length (ties in the epoch's random order), cut into batches of
    near-equal length, and the batches taken in a seeded random order — so
    a batch computes almost no padding (mlx-lm's ``iterate_batches`` does
    the same). Batch size 1 is the plain permutation either way.
    """
    import numpy as np

    per_epoch = max(1, n_examples // batch_size)
    epoch, position = divmod(step - 1, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_examples)
    if lengths is None or batch_size == 1:
        return [int(i) for i in order[position * batch_size:(position + 1) * batch_size]]
    kept = sorted((int(i) for i in order[:per_epoch * batch_size]), key=lambda i: lengths[i])  # stable
    batch = int(np.random.default_rng([seed, epoch, 1]).permutation(per_epoch)[position])
    return kept[batch * batch_size:(batch + 1) * batch_size]


