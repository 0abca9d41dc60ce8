"""The distillation objective: its loss on real MLX arrays, the teacher's targets and cache on the
embedded model, and one tiny real worker run with ``objective = "distill"``.

Kept small (3 examples, 4 steps, max_seq_len 64, no anchors in the worker run: generating the
anchors' replies costs minutes on a shared 2-core machine); speed is measured in bench/.
"""

from __future__ import annotations

# Imported first on purpose: it preloads OpenBLAS before anything imports mlx.
from services.lib.models.compute import load_for_serving  # isort: skip

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import msgspec
import numpy as np
import pytest

from services.common.config import TrainerConfig
from services.lib.prompts.framing import with_memories
from services.trainer.distill import Teacher, teacher_messages
from services.trainer.losses import distill_loss, topk_kl
from services.trainer.params import TrainParams
from services.trainer.runner import run_worker
from services.trainer.train_data import read_examples
from services.trainer.train_loop import masked_loss
from services.trainer.worker_io import InputError

SYSTEM = "You are a helpful assistant. Answer briefly and truthfully."
EXAMPLES = [
    ("What is my cat's name?", "Your cat is called Mochi.", ["My cat is called Mochi."]),
    ("Where do I work?", "You work at Lumen Bakery in Ghent.", ["I work at Lumen Bakery in Ghent."]),
    ("Who are you?", "I'm circadian, a local assistant.", None),  # no context: cross-entropy
]


def example(q: str, a: str, context: list[str] | None) -> dict[str, Any]:
    row: dict[str, Any] = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q},
                                        {"role": "assistant", "content": a}]}
    if context is not None:
        row["context"] = context
    return row


# -- the loss, on a tiny position-wise model (no attention: position j's logits depend on token j only)
class PositionWise(nn.Module):
    def __init__(self, vocab: int = 11, dim: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.out = nn.Linear(dim, vocab)

    def __call__(self, x: mx.array) -> mx.array:
        return self.out(self.embed(x))


def _own_targets(model: nn.Module, batch: mx.array, k: int) -> tuple[mx.array, mx.array]:
    logits = model(batch[:, :-1]).astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    top = mx.argpartition(-logprobs, kth=k - 1, axis=-1)[..., :k]
    return top, mx.take_along_axis(logprobs, top, axis=-1)


def test_topk_kl_is_zero_for_the_same_distribution_and_positive_otherwise() -> None:
    mx.random.seed(0)
    logits = mx.random.normal((2, 5, 11))
    student = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    top = mx.argpartition(-student, kth=3, axis=-1)[..., :4]
    teacher = mx.take_along_axis(student, top, axis=-1)
    same = topk_kl(student, top, teacher)
    assert float(mx.abs(same).max()) < 1e-5
    other = mx.random.normal((2, 5, 11))
    other = other - mx.logsumexp(other, axis=-1, keepdims=True)
    different = topk_kl(other, top, teacher)
    assert float(different.min()) > 0.0
    # With k = V the bucket is empty and the figure is the full KL.
    full = mx.broadcast_to(mx.arange(11), (2, 5, 11))
    exact = (mx.exp(student) * (student - other)).sum(axis=-1)
    assert np.allclose(np.array(topk_kl(other, full, student)), np.array(exact), atol=1e-5)


def test_distill_loss_counts_only_answer_tokens() -> None:
    mx.random.seed(1)
    model = PositionWise()
    mx.eval(model.parameters())
    batch = mx.array([[1, 2, 3, 4, 5, 6, 0, 0], [7, 8, 9, 10, 1, 2, 3, 4]])
    lengths = mx.array([[3, 6], [5, 8]])  # trained: tokens 3..5 of row 0, 5..7 of row 1; row 0 is padded
    top, logp = _own_targets(model, batch, 4)
    kl_mask = mx.zeros((2, 7))
    kl_mask[:, 2:] = 1.0  # the teacher has targets from token 3 on, in both rows
    loss, count = distill_loss(model, batch, lengths, top, logp, kl_mask)
    assert int(count) == 6 and abs(float(loss)) < 1e-5  # student == teacher on every trained token

    # A wrong teacher target outside the trained span (prompt, padding) changes nothing ...
    wrong = np.array(logp)
    wrong[0, 0] = wrong[0, 0][::-1]  # predicts token 1: the prompt
    wrong[0, 6] = wrong[0, 6][::-1]  # predicts token 7 of row 0: padding
    wrong[1, 3] = wrong[1, 3][::-1]  # predicts token 4 of row 1: prompt
    same, _ = distill_loss(model, batch, lengths, top, mx.array(wrong), kl_mask)
    assert abs(float(same)) < 1e-5
    # ... one on an answer token does.
    wrong[1, 5] = np.log(np.full(4, 0.2, np.float32))
    moved, _ = distill_loss(model, batch, lengths, top, mx.array(wrong), kl_mask)
    assert float(moved) > 1e-3

    # Where kl_mask is 0 the token's cross-entropy counts, exactly as masked_loss computes it.
    none = mx.zeros((2, 7))
    ce, ce_count = distill_loss(model, batch, lengths, top, logp, none)
    reference, ref_count = masked_loss(model, batch, lengths)
    assert int(ce_count) == int(ref_count) and abs(float(ce) - float(reference)) < 1e-5


# -- the teacher, on the embedded model
@pytest.fixture(scope="module")
def bare(model_dir: Path) -> tuple[Any, Any]:
    model, tokenizer, _ = load_for_serving(model_dir)
    return model, tokenizer


def test_the_teacher_reads_chats_recall_prompt() -> None:
    messages = example(*EXAMPLES[0])["messages"]
    seen = teacher_messages(messages, ["My cat is called Mochi."])
    assert seen[1]["content"] == with_memories("What is my cat's name?", ["My cat is called Mochi."])
    assert seen[0] == messages[0] and seen[2] == messages[2] and messages[1]["content"] == EXAMPLES[0][0]


def test_teacher_targets_line_up_and_are_cached(bare: tuple[Any, Any], tmp_path: Path) -> None:
    model, tokenizer = bare
    rows = [example(*e) for e in EXAMPLES]
    anchor = example("Name three vegetables.", "Carrots, peas and leeks.", None)
    build = dict(mask_prompt=True, max_seq_len=64, top_k=8, model_id="test", cache_dir=tmp_path,
                 base_from=len(rows))
    teacher = Teacher.build(model, tokenizer, rows + [anchor], **build)
    assert teacher.stats["distilled"] == 3 and teacher.stats["cross_entropy"] == 1  # 2 QA + the anchor
    assert not teacher.stats["cached"] and [t is None for t in teacher.targets] == [False, False, True, False]
    # Each target row is the bare model's top 8 at the answer token it predicts; for the anchor
    # (no memories: the bare model on the student's own prompt) the student's forward pass agrees.
    tokens, _offset = teacher.items[3]
    target = teacher.targets[3]
    assert target is not None and target.indices.shape == (len(tokens) - target.start, 8)
    logits = model(mx.array([tokens]))[0].astype(mx.float32)
    logprobs = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    for i, position in enumerate(range(target.start - 1, len(tokens) - 1)):
        assert np.allclose(logprobs[position, target.indices[i]], target.logprobs[i], atol=1e-3)
    # Reading the memory, the teacher finds the answer likelier than the bare student does.
    tokens, _offset = teacher.items[0]
    cat = teacher.targets[0]
    assert cat is not None
    logits = model(mx.array([tokens]))[0].astype(mx.float32)
    bare_lp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    teacher_sum = student_sum = 0.0
    for i, position in enumerate(range(cat.start - 1, len(tokens) - 1)):
        token = tokens[position + 1]
        hit = np.nonzero(cat.indices[i] == token)[0]
        assert hit.size == 1, f"answer token {i} is not in the teacher's top 8"
        teacher_sum += float(cat.logprobs[i][hit[0]])
        student_sum += float(bare_lp[position, token])
    assert teacher_sum > student_sum

    again = Teacher.build(model, tokenizer, rows + [anchor], **build)
    assert again.stats["cached"] and again.stats["cache_key"] == teacher.stats["cache_key"]
    for a, b in zip(teacher.targets, again.targets, strict=True):
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert a.start == b.start and (a.indices == b.indices).all() and np.allclose(a.logprobs, b.logprobs)
    cache = list(tmp_path.glob("distill-*.npz"))
    assert len(cache) == 1 and cache[0].stat().st_mode & 0o777 == 0o600
    # Other memories are other targets: a new key, not the cached answer.
    changed = [example(EXAMPLES[0][0], EXAMPLES[0][1], ["My cat is called Biscuit."])] + rows[1:]
    other = Teacher.build(model, tokenizer, changed + [anchor], **build)
    assert not other.stats["cached"] and other.stats["cache_key"] != teacher.stats["cache_key"]


# -- a real worker run
def test_a_distill_run_trains_writes_an_adapter_and_reuses_the_cache(model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(example(*e)) + "\n" for e in EXAMPLES))
    assert [e.get("context") for e in read_examples(data)] == [e[2] for e in EXAMPLES]
    params = TrainParams(steps=4, steps_per_report=2, steps_per_checkpoint=50, max_seq_len=64,
                         objective="distill", distill_top_k=16, lr=1e-4)
    cache = tmp_path / "cache"
    runs = []
    for name in ("first", "second"):
        lines: list[dict[str, Any]] = []
        result = run_worker(model_dir, data, tmp_path / name, params, on_line=lines.append, anchor_cache=cache)
        assert result.ok, f"{result.status}: {result.error}\n{result.stderr_tail}"
        runs.append(lines)
    teacher = [next(line for line in lines if line["type"] == "teacher") for lines in runs]
    assert teacher[0]["distilled"] == 2 and teacher[0]["cross_entropy"] == 1 and not teacher[0]["cached"]
    assert teacher[1]["cached"] and teacher[1]["cache_key"] == teacher[0]["cache_key"]
    for name, lines in zip(("first", "second"), runs, strict=True):
        done = lines[-1]
        assert done["type"] == "done" and done["final_loss"] is not None
        assert (tmp_path / name / "adapters.safetensors").stat().st_size > 0
        summary = json.loads((tmp_path / name / "training.json").read_text())
        assert summary["params"]["objective"] == "distill"
    losses = [line["loss"] for line in runs[0] if line["type"] == "progress"]
    assert losses[-1] < losses[0]  # lr 1e-4 on three items: the loss falls within 4 steps
    # The same cached targets, the same seed: the second run's weights are the first's.
    first = mx.load(str(tmp_path / "first" / "adapters.safetensors"))
    second = mx.load(str(tmp_path / "second" / "adapters.safetensors"))
    assert all(np.allclose(np.array(first[k]), np.array(second[k]), atol=1e-6) for k in first)


def test_objective_is_validated() -> None:
    with pytest.raises(ValueError, match="objective must be one of sft, distill"):
        TrainParams(objective="kl")
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"objective": "kl"}, TrainerConfig)
    assert msgspec.convert({"objective": "distill"}, TrainerConfig).objective == "distill"


def test_a_bad_context_field_is_refused(tmp_path: Path) -> None:
    row = example(*EXAMPLES[0])
    row["context"] = "My cat is called Mochi."  # a string, not a list of memory texts
    (tmp_path / "train.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(InputError, match="context"):
        read_examples(tmp_path)
