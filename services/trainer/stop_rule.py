"""Learn until learned, then stop: the night's stop rule (issue 13, part 2).

A fixed number of epochs over-teaches a night whose facts are learned early
and under-teaches one whose facts are not; training on past the point of
learning is what raises hallucination (Gekhman et al. 2024) and costs
general ability. So every ``check_every`` steps (after one whole pass over
the items, so every item was trained once) the loop asks the model the
night's own training questions — one trained question/answer item per fact
(``probe.jsonl``, written next to ``train.jsonl`` by :func:`write_probe`) —
teacher-forced, and looks at the tokens of the fact's *value* in the
answer: is each the model's top choice (argmax)? The answer's other words
rotate between templates, so only the value says whether the fact is known.
The run stops:

- ``learned``: at least ``learned_share`` of the facts' values are the top
  choice;
- ``plateau``: the probe's mean loss on the value tokens has not fallen by
  :data:`PLATEAU_GAIN` (relative) below its best for ``patience`` checks;
- ``cap``: at the planned steps (the night's epochs over its items), as before.

A check is a forward pass over the probe items (no gradient, rows of
near-equal length batched), about a third of a training step per item; at
two checks an epoch and one probe item per five or more trained items it
costs a few percent of the training time. The checks so far travel in the
checkpoint, so a resumed run decides from the same history.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.common.atomic import write_atomic
from services.trainer.worker_io import InputError

PROBE_FILE = "probe.jsonl"
PLATEAU_GAIN = 0.02  # a check must lower the best probe loss by 2% to count as progress
PROBE_BATCH = 8
STOP_REASONS = ("learned", "plateau", "cap")


# -- the probe: written by the trainer, read by the worker ---------------------------
def probe_examples(dataset: Any) -> list[dict[str, Any]]:
    """One trained question/answer item per fact of a NightDataset: the first whose answer holds the value.

    ``dataset.replay_pool`` is tonight's examples with their source (kind,
    fact key); ``dataset.facts`` the facts taught. A fact none of whose
    answers spells its value (a reworded date, say) has no probe item.
    """
    probes: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for fact in getattr(dataset, "facts", []) or []:
        value = str(getattr(fact, "value", "") or "").strip()
        key = [str(k) for k in getattr(fact, "key", ())]
        if not value:
            continue
        for example in dataset.replay_pool:
            source = example.get("source") or {}
            if source.get("kind") != "qa" or [str(k) for k in source.get("fact") or ()] != key:
                continue
            answer = example["messages"][-1]["content"]
            marker = json.dumps(example["messages"])
            if value.lower() in answer.lower() and (marker, value) not in seen:
                seen.add((marker, value))
                probes.append({"messages": example["messages"], "value": value})
                break
    return probes


def write_probe(dataset: Any, directory: Path) -> int:
    """Write ``probe.jsonl`` into a saved dataset's directory; returns how many items it holds."""
    rows = probe_examples(dataset)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    write_atomic(Path(directory) / PROBE_FILE, data)
    return len(rows)


def read_probe(data_dir: Path) -> list[dict[str, Any]]:
    """``probe.jsonl`` validated (InputError says which line); [] when there is none."""
    path = Path(data_dir) / PROBE_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InputError(f"cannot read the probe {path}: {exc}") from exc
    probes = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{path}:{number} is not JSON: {exc}") from exc
        messages = row.get("messages") if isinstance(row, dict) else None
        value = row.get("value") if isinstance(row, dict) else None
        if (not isinstance(messages, list) or len(messages) < 2 or not isinstance(value, str) or not value
                or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
                or messages[-1].get("role") != "assistant"
                or value.lower() not in messages[-1]["content"].lower()):
            raise InputError(f'{path}:{number}: expected {{"messages": [..., {{"role": "assistant", ...}}], '
                             '"value": "..."}} with the value inside the answer; delete the file to train '
                             "without the stop rule")
        probes.append({"messages": messages, "value": value})
    return probes


def value_rows(tokenizer: Any, probes: Sequence[dict[str, Any]], max_seq_len: int) -> list[tuple[list[int], int, int]]:
    """(tokens, first value token, end) per probe item, tokenized as mlx-lm's ChatDataset does.

    The value's span is found by rendering the answer cut before and after
    the value and taking the common token prefix with the whole item (robust
    to however the tokenizer merges the value with its neighbours); at least
    the value's first token is checked. Rows end with the value: nothing
    after it is computed.
    """
    rows = []
    for probe in probes:
        messages = probe["messages"]
        answer = messages[-1]["content"]
        at = answer.lower().index(probe["value"].lower())

        tokens = _render(tokenizer, messages, answer)[:max_seq_len]
        start = _common(tokens, _render(tokenizer, messages, answer[:at]))
        end = max(start + 1, _common(tokens, _render(tokenizer, messages, answer[:at + len(probe["value"])])))
        if 1 <= start and end <= len(tokens):
            rows.append((tokens[:end], start, end))  # what follows the value is not needed to check it
    return rows


def _render(tokenizer: Any, messages: list[dict[str, Any]], answer: str) -> list[int]:
    """The item's tokens with ``answer`` as the assistant's reply."""
    return list(tokenizer.apply_chat_template([*messages[:-1], {**messages[-1], "content": answer}],
                                              return_dict=False))


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# -- a check -----------------------------------------------------------------------
def check(model: Any, rows: Sequence[tuple[list[int], int, int]], batch: int = PROBE_BATCH) -> tuple[int, float]:
    """(items whose every value token is the top choice, mean cross-entropy over the value tokens)."""
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np

    learned, loss_sum, count = 0, 0.0, 0
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    for k in range(0, len(order), batch):
        chunk = [rows[i] for i in order[k:k + batch]]
        width = max(len(tokens) for tokens, _, _ in chunk)
        array = np.zeros((len(chunk), width), np.int32)
        for j, (tokens, _, _) in enumerate(chunk):
            array[j, :len(tokens)] = tokens
        tokens_mx = mx.array(array)
        spans = mx.array([[start, end] for _, start, end in chunk])
        logits = model(tokens_mx[:, :-1])
        targets = tokens_mx[:, 1:]
        positions = mx.arange(1, targets.shape[1] + 1)
        mask = mx.logical_and(positions >= spans[:, 0:1], positions < spans[:, 1:])
        right = mx.logical_or(mx.argmax(logits, axis=-1) == targets, mx.logical_not(mask)).all(axis=1)
        losses = (nn.losses.cross_entropy(logits, targets) * mask).astype(mx.float32).sum()
        mx.eval(right, losses)
        learned += int(right.sum().item())
        loss_sum += float(losses.item())
        count += int(mask.sum().item())
    return learned, loss_sum / max(1, count)


# -- the decision --------------------------------------------------------------------
def decide(checks: Sequence[Sequence[float]], total: int, *, learned_share: float, patience: int) -> str | None:
    """Why to stop after the last check (``learned`` or ``plateau``), or None to go on.

    ``checks``: ``[step, learned, loss]`` per check so far, oldest first.
    """
    if not checks or total <= 0:
        return None
    if checks[-1][1] >= math.ceil(learned_share * total - 1e-9):
        return "learned"
    losses = [float(c[2]) for c in checks]
    if len(losses) > patience:
        best_before = min(losses[:-patience])
        if min(losses[-patience:]) > best_before * (1 - PLATEAU_GAIN):
            return "plateau"
    return None


def check_every(configured: int, steps_per_epoch: int) -> int:
    """Steps between checks: the configured count, or (0) twice an epoch."""
    return configured if configured > 0 else max(1, math.ceil(steps_per_epoch / 2))
