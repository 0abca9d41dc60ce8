"""The distillation teacher: the bare model reading the night's memories, as top-k targets.

Cross-entropy on a few hundred question/answer pairs pulls a small model off
its own distribution; that is what drifts (README "Does it remember?"). The
``distill`` objective teaches the same answers as *distributions*: the
teacher is the base model with the example's memories in its prompt,
framed exactly as chat frames recalled memories
(:func:`services.lib.prompts.framing.with_memories`); the student is base +
LoRA without them (context distillation, Snell et al. 2022). An anchor
(services.trainer.anchors) is distilled from the bare model on the same
prompt: the general-prompt KL that holds the rest in place.

An example is distilled when it carries ``context`` (a list of memory texts,
possibly empty for "the bare model as it is"); one without (identity,
assistant turns) keeps cross-entropy. Only answer tokens are distilled.

The teacher's logits are computed once, on the bare model before LoRA goes
on, and only the top ``k`` log-probabilities per answer position are kept
(the rest of the mass is one bucket in the loss, services.trainer.losses).
They are cached in the anchor cache directory under a key that hashes the
model, ``k`` and every token the teacher read, so a resumed or repeated run
of the same data pays nothing; the file holds what the answers say about
the user, so it is private (0600) and only the newest ``KEEP_CACHED`` stay.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.lib.prompts.framing import with_memories

CACHE_VERSION = 1
KEEP_CACHED = 4
TEACHER_BATCH = 4  # rows per teacher forward pass (right padding leaves earlier positions exact)


@dataclass
class Target:
    """The teacher's top-k for one item's answer: token ``start + i`` is predicted by row ``i``."""

    start: int  # index of the first answer token in the student's tokens
    indices: Any  # numpy int32 [n, k]
    logprobs: Any  # numpy float32 [n, k]


def teacher_messages(messages: list[dict], context: Sequence[str]) -> list[dict]:
    """The messages the teacher reads: the last user message as chat would show it with these memories."""
    out = [dict(m) for m in messages]
    for message in reversed(out[:-1]):
        if message["role"] == "user":
            message["content"] = with_memories(message["content"], list(context))
            break
    return out


@dataclass
class _Plan:
    """One distilled item: what the teacher reads and where the answer is in both sequences."""

    item: int  # index into the student's items
    teacher_tokens: list[int]
    teacher_start: int  # index of the first answer token in teacher_tokens
    start: int  # the same in the student's tokens
    length: int  # answer tokens (the student's, after truncation)


class Teacher:
    """Targets for the items of one run, and the batches that carry them to the loss."""

    def __init__(self, items: list[tuple[list[int], int]], targets: list[Target | None], stats: dict) -> None:
        self.items = items
        self.targets = targets
        self.stats = stats

    # -- building ------------------------------------------------------------------
    @classmethod
    def build(cls, model: Any, tokenizer: Any, examples: list[dict], *, mask_prompt: bool, max_seq_len: int,
              top_k: int, model_id: str, cache_dir: Path | None, base_from: int | None = None,
              emit: Callable[..., None] | None = None) -> Teacher:
        """Call on the bare model. ``examples[base_from:]`` (the anchors) are distilled from the bare model
        on their own prompt (context ``[]``); the others when they carry ``context``."""
        import time

        started = time.monotonic()
        items, plans, mismatched = _plan(tokenizer, examples, mask_prompt=mask_prompt, max_seq_len=max_seq_len,
                                         base_from=len(examples) if base_from is None else base_from)
        key = _cache_key(model_id, top_k, plans)
        path = Path(cache_dir) / f"distill-{key}.npz" if cache_dir else None
        computed = _load(path, plans, top_k)
        cached = computed is not None
        if computed is None:
            computed = _teacher_topk(model, plans, top_k)
            if path is not None:
                _save(path, computed)
        targets: list[Target | None] = [None] * len(items)
        for plan, (indices, logprobs) in zip(plans, computed, strict=True):
            targets[plan.item] = Target(plan.start, indices, logprobs)
        stats = {"distilled": len(plans), "cross_entropy": len(items) - len(plans), "mismatched": mismatched,
                 "top_k": top_k, "cached": cached, "seconds": round(time.monotonic() - started, 1),
                 "cache_key": key}
        if emit is not None:
            emit("teacher", **stats)
        return cls(items, targets, stats)

    def check(self, items: list[tuple[list[int], int]]) -> None:
        """The trainer's own tokenization must be the one the targets were computed for."""
        if items != self.items:
            raise RuntimeError("distill: the trainer's tokenized items differ from the teacher's: "
                               "the targets would not line up with the answers")

    # -- batches ----------------------------------------------------------------------
    def batch(self, rows: Sequence[int]) -> tuple[Any, Any, Any, Any, Any, int]:
        """(tokens [B, T], [[offset, length]], teacher indices [B, T-1, k], log-probs, KL mask [B, T-1],
        token count) for these items; target index ``j`` predicts token ``j + 1``, as in the loss."""
        import mlx.core as mx
        import numpy as np

        chosen = [self.items[i] for i in rows]
        width = max(len(tokens) for tokens, _ in chosen)
        k = int(self.stats["top_k"])
        tokens_a = np.zeros((len(chosen), width), np.int32)
        t_idx = np.zeros((len(chosen), width - 1, k), np.int32)
        t_logp = np.zeros((len(chosen), width - 1, k), np.float32)
        kl_mask = np.zeros((len(chosen), width - 1), np.float32)
        for j, ((tokens, _offset), i) in enumerate(zip(chosen, rows, strict=True)):
            tokens_a[j, :len(tokens)] = tokens
            target = self.targets[i]
            if target is None:
                continue
            n = len(target.indices)
            lo = target.start - 1
            t_idx[j, lo:lo + n] = target.indices
            t_logp[j, lo:lo + n] = target.logprobs
            kl_mask[j, lo:lo + n] = 1.0
        lengths = [[offset, len(tokens)] for tokens, offset in chosen]
        return (mx.array(tokens_a), mx.array(lengths), mx.array(t_idx), mx.array(t_logp), mx.array(kl_mask),
                sum(len(t) for t, _ in chosen))


def _plan(tokenizer: Any, examples: list[dict], *, mask_prompt: bool, max_seq_len: int, base_from: int,
          ) -> tuple[list[tuple[list[int], int]], list[_Plan], int]:
    """The student's items (exactly as the trainer tokenizes them) and the teacher's work."""
    from mlx_lm.tuner.datasets import ChatDataset

    student = ChatDataset(examples, tokenizer, mask_prompt=mask_prompt)
    shaper = ChatDataset([], tokenizer, mask_prompt=True)  # where the answer starts, in either sequence
    items: list[tuple[list[int], int]] = []
    plans: list[_Plan] = []
    mismatched = 0
    for index, example in enumerate(examples):
        tokens, offset = student.process(example)
        tokens = list(tokens)[:max_seq_len]
        if offset >= len(tokens) or len(tokens) < 2:
            continue  # dropped, as the trainer drops it
        items.append((tokens, max(1, int(offset))))
        context = [] if index >= base_from else example.get("context")
        if context is None:
            continue
        _full, start = shaper.process(example)
        length = len(tokens) - int(start)
        if length < 1:
            continue
        t_tokens, t_start = shaper.process({"messages": teacher_messages(example["messages"], context)})
        t_tokens = list(t_tokens)
        if t_tokens[t_start:t_start + length] != tokens[start:]:
            mismatched += 1  # the answer tokenized differently after the context: keep cross-entropy
            continue
        plans.append(_Plan(len(items) - 1, t_tokens[:t_start + length], int(t_start), int(start), length))
    return items, plans, mismatched


def _teacher_topk(model: Any, plans: list[_Plan], top_k: int) -> list[tuple[Any, Any]]:
    """(indices [n, k], log-probs [n, k]) of the bare model at each plan's answer positions."""
    import mlx.core as mx
    import numpy as np

    out: list[tuple[Any, Any] | None] = [None] * len(plans)
    order = sorted(range(len(plans)), key=lambda i: len(plans[i].teacher_tokens))
    for first in range(0, len(order), TEACHER_BATCH):
        group = order[first:first + TEACHER_BATCH]
        width = max(len(plans[i].teacher_tokens) for i in group)
        array = np.zeros((len(group), width), np.int32)
        for row, i in enumerate(group):
            array[row, :len(plans[i].teacher_tokens)] = plans[i].teacher_tokens
        logits = model(mx.array(array))
        for row, i in enumerate(group):
            plan = plans[i]
            lo = plan.teacher_start - 1  # logits at position p - 1 predict token p
            answer = logits[row, lo:lo + plan.length].astype(mx.float32)  # only the answer's rows: small
            logprobs = answer - mx.logsumexp(answer, axis=-1, keepdims=True)
            top = mx.argpartition(-logprobs, kth=top_k - 1, axis=-1)[..., :top_k]
            top_lp = mx.take_along_axis(logprobs, top, axis=-1)
            mx.eval(top, top_lp)
            out[i] = (np.array(top).astype(np.int32), np.array(top_lp).astype(np.float32))
    return [o for o in out if o is not None]


# -- the cache ---------------------------------------------------------------------------
def _cache_key(model_id: str, top_k: int, plans: list[_Plan]) -> str:
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, model_id, top_k]).encode())
    for plan in plans:
        digest.update(json.dumps([plan.teacher_tokens, plan.teacher_start, plan.length]).encode())
    return digest.hexdigest()[:24]


def _load(path: Path | None, plans: list[_Plan], top_k: int) -> list[tuple[Any, Any]] | None:
    if path is None or not path.is_file():
        return None
    import numpy as np

    try:
        with np.load(path) as data:
            indices, logprobs, lengths = data["indices"], data["logprobs"], data["lengths"]
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache is recomputed
    if (list(lengths) != [p.length for p in plans] or indices.shape != (int(lengths.sum()), top_k)
            or logprobs.shape != indices.shape):
        return None
    out, at = [], 0
    for n in lengths:
        out.append((indices[at:at + n].astype(np.int32), logprobs[at:at + n].astype(np.float32)))
        at += int(n)
    return out


def _save(path: Path, computed: list[tuple[Any, Any]]) -> None:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    k = computed[0][0].shape[1] if computed else 0
    indices = np.concatenate([i for i, _ in computed]) if computed else np.zeros((0, k), np.int32)
    logprobs = np.concatenate([lp for _, lp in computed]) if computed else np.zeros((0, k), np.float32)
    lengths = np.array([len(i) for i, _ in computed], np.int64)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        np.savez(handle, indices=indices, logprobs=logprobs, lengths=lengths)
    os.replace(tmp, path)
    older = sorted(path.parent.glob("distill-*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in older[KEEP_CACHED:]:
        stale.unlink(missing_ok=True)
