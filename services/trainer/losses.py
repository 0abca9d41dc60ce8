"""The distillation objective's loss: KL(teacher || student) on answer tokens, cross-entropy elsewhere.

The teacher is given as its top-k log-probabilities per position
(services.trainer.distill); the mass outside the top k is one more bucket,
so the KL is exact for the coarsened distribution (k + 1 outcomes): zero
when the student's distribution equals the teacher's, positive otherwise,
and blind only to how the student spreads the remainder among the tokens
the teacher did not rank. Positions the trainer trains on but that have no
teacher target (examples without context, or a prompt trained unmasked)
keep cross-entropy, so one batch can mix both.
"""

from __future__ import annotations

from typing import Any

EPS = 1e-6


def topk_kl(student_logprobs: Any, indices: Any, teacher_logprobs: Any) -> Any:
    """Per-position KL(teacher || student) over the teacher's top k plus the remainder bucket.

    ``student_logprobs`` [..., V] (log-softmax); ``indices`` and
    ``teacher_logprobs`` [..., k]. Returns [...].
    """
    import mlx.core as mx

    s_top = mx.take_along_axis(student_logprobs, indices, axis=-1)
    p_top = mx.exp(teacher_logprobs)
    kl_top = (p_top * (teacher_logprobs - s_top)).sum(axis=-1)
    p_rest = mx.clip(1.0 - p_top.sum(axis=-1), 0.0, 1.0)
    q_rest = mx.clip(1.0 - mx.exp(s_top).sum(axis=-1), EPS, 1.0)
    kl_rest = p_rest * (mx.log(mx.maximum(p_rest, EPS)) - mx.log(q_rest))
    return kl_top + kl_rest


def distill_loss(model: Any, batch: Any, lengths: Any, indices: Any, teacher_logprobs: Any,
                 kl_mask: Any) -> tuple[Any, Any]:
    """Mean over the trained tokens (positions ``offset .. length-1``, as ``masked_loss``) of the KL
    where ``kl_mask`` is 1 and of the cross-entropy where it is 0; returns (loss, trained tokens)."""
    import mlx.core as mx

    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits = model(inputs).astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    positions = mx.arange(1, targets.shape[1] + 1)  # index of each target token in the row
    mask = mx.logical_and(positions >= lengths[:, 0:1], positions < lengths[:, 1:]).astype(mx.float32)
    ce = -mx.take_along_axis(logprobs, targets[..., None], axis=-1).squeeze(-1)
    kl = topk_kl(logprobs, indices, teacher_logprobs)
    per_token = kl_mask * kl + (1.0 - kl_mask) * ce
    count = mask.sum()
    return (per_token * mask).sum() / count, count
