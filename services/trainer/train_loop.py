"""The training run itself: model + LoRA layers + dataset + optimizer, stepped and reported.

Uses mlx-lm's pieces (``linear_to_lora_layers``, ``ChatDataset`` with
prompt masking, its adapter format) in a small loop of its own, which
makes resuming exact (the example order is a function of the step) and
reports progress between steps. MLX is imported inside the methods: this
module loads without it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from services.common.atomic import write_atomic
from services.trainer.checkpoints import (
    ADAPTER_FILE,
    CONFIG_FILE,
    SUMMARY_FILE,
    read_checkpoint,
    remove_checkpoints,
    save_weights_atomic,
    write_checkpoint,
)
from services.trainer.losses import distill_loss
from services.trainer.params import TrainParams
from services.trainer.stop_rule import check_every, decide, read_probe, value_rows
from services.trainer.train_data import data_fingerprint, example_order
from services.trainer.worker_io import EXIT_OK, EXIT_STOPPED, Emitter, InputError


@dataclass
class _Window:
    """Sums over a stretch of steps: one report window, or the whole run."""

    loss: float = 0.0
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def add(self, loss: float, tokens: int, seconds: float) -> None:
        self.loss += loss
        self.steps += 1
        self.tokens += tokens
        self.seconds += seconds


class Trainer:
    """One run: model + LoRA layers + dataset + optimizer, stepped by :meth:`run`."""

    def __init__(self, args: argparse.Namespace, params: TrainParams, emit: Emitter,
                 stop_requested: Callable[[], bool]) -> None:
        self.model_dir = Path(args.model)
        self.data_dir = Path(args.data)
        self.out_dir = Path(args.out)
        self.resume = args.resume
        self.anchor_cache = Path(args.anchor_cache) if getattr(args, "anchor_cache", None) else None
        self.params = params
        self.emit = emit
        self.stop_requested = stop_requested
        self.curve: list[list[float]] = []  # [step, mean loss of the report window]
        self.checks: list[list[float]] = []  # the stop rule's [step, facts learned, probe loss]
        self.padded = 0  # padding positions computed (batches of more than one row)
        self.check_s = 0.0  # seconds spent in the stop rule's checks

    # -- setup ---------------------------------------------------------------
    def load(self, examples: list[dict[str, Any]]) -> None:
        # First: it preloads OpenBLAS, which must happen before mlx is imported.
        from services.lib.models.compute import load_for_serving

        # isort: split
        import mlx.core as mx
        import mlx.optimizers as optim
        from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
        from mlx_lm.tuner.utils import linear_to_lora_layers

        p = self.params
        self.model, self.tokenizer, self.compute = load_for_serving(self.model_dir, p.compute)
        self.model.freeze()
        n_layers = len(self.model.layers)
        if p.num_layers > n_layers:
            raise InputError(f"num_layers {p.num_layers} > the model's {n_layers} layers")
        self.n_lora_layers = n_layers if p.num_layers == -1 else p.num_layers
        trained = len(examples)
        examples = examples + self._anchors(examples)  # from the bare model: before LoRA goes on
        self.teacher = self._teacher(examples, base_from=trained)  # likewise (None unless distilling)
        mx.random.seed(p.seed)  # LoRA's A matrices are drawn here
        linear_to_lora_layers(self.model, self.n_lora_layers, p.lora_parameters())
        if p.grad_checkpoint:
            from mlx_lm.tuner.trainer import grad_checkpoint

            grad_checkpoint(self.model.layers[0])
        dataset = CacheDataset(ChatDataset(examples, self.tokenizer, mask_prompt=p.mask_prompt))
        self.items, self.dropped = self._tokenize(dataset)
        if self.teacher is not None:
            self.teacher.check(self.items)
        if len(self.items) < p.batch_size:
            raise InputError(f"{len(self.items)} usable examples (of {len(examples)}; {self.dropped} had "
                             f"no answer left within max_seq_len {p.max_seq_len}): fewer than "
                             f"batch_size {p.batch_size}")
        self.lengths = [len(tokens) for tokens, _ in self.items]  # for bucketing batches by length
        self.steps_per_epoch = max(1, len(self.items) // p.batch_size)
        probes = read_probe(self.data_dir) if p.early_stop else []
        self.probe = value_rows(self.tokenizer, probes, p.max_seq_len)  # [] = the rule is off: train to the cap
        self.check_every = check_every(p.check_every, self.steps_per_epoch)
        self.optimizer = optim.Adam(learning_rate=p.lr)
        self.key = {**p.trajectory_key(), "data_sha256": data_fingerprint(self.data_dir),
                    "model": self.model_dir.name, "lora_layers": self.n_lora_layers}

    def _anchors(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Self-distilled anchors for ``anchor_share`` of the items (services.trainer.anchors)."""
        from services.trainer.anchors import anchor_examples, base_replies

        share = self.params.anchor_share
        if share <= 0:
            return []
        first = examples[0]["messages"][0]
        system = first["content"] if first["role"] == "system" else ""
        started = time.monotonic()
        pairs = base_replies(self.model, self.tokenizer, model_id=self.model_dir.name, system_prompt=system,
                             cache_dir=self.anchor_cache)
        count = int(round(len(examples) * share / (1 - share)))
        self.emit("anchors", count=count, prompts=len(pairs), seconds=round(time.monotonic() - started, 1))
        return anchor_examples(pairs, system_prompt=system, count=count)

    def _teacher(self, examples: list[dict[str, Any]], *, base_from: int) -> Any:
        """The distillation targets (objective "distill"; services.trainer.distill), else None."""
        if self.params.objective != "distill":
            return None
        from services.trainer.distill import Teacher

        p = self.params
        return Teacher.build(self.model, self.tokenizer, examples, mask_prompt=p.mask_prompt,
                             max_seq_len=p.max_seq_len, top_k=p.distill_top_k, base_from=base_from,
                             model_id=f"{self.model_dir.name}:{self.compute.backend}:{self.compute.weights}",
                             cache_dir=self.anchor_cache, emit=self.emit)

    def _tokenize(self, dataset: Any) -> tuple[list[tuple[list[int], int]], int]:
        """(tokens, offset of the first trained token) per example; drop those with nothing to train."""
        items, dropped = [], 0
        limit = self.params.max_seq_len
        for i in range(len(dataset)):
            tokens, offset = dataset[i]
            tokens = list(tokens)[:limit]
            if offset >= len(tokens) or len(tokens) < 2:
                dropped += 1
                continue
            items.append((tokens, max(1, int(offset))))
        return items, dropped

    def trainable_weights(self) -> dict[str, Any]:
        from mlx.utils import tree_flatten

        return dict(tree_flatten(self.model.trainable_parameters()))

    def restore(self) -> int:
        """Load the last matching checkpoint (with --resume); returns the step to continue after."""
        if not self.resume:
            remove_checkpoints(self.out_dir)
            return 0
        index, path, note = read_checkpoint(self.out_dir, self.key)
        print(f"worker: {note}", file=sys.stderr)
        if index is None or path is None:
            return 0
        import mlx.core as mx

        weights = mx.load(str(path))
        expected = self.trainable_weights()
        if set(weights) != set(expected) or any(weights[k].shape != expected[k].shape for k in weights):
            print("worker: checkpoint tensors do not match the LoRA layers: starting at step 0", file=sys.stderr)
            return 0
        self.model.load_weights(list(weights.items()), strict=False)
        mx.eval(self.model.parameters())
        step = min(int(index["step"]), self.params.steps)
        self.curve = [point for point in index.get("loss_curve", []) if point[0] <= step]
        self.checks = [c for c in index.get("checks", []) if c[0] <= step] if self.probe else []
        return step

    # -- the loop ----------------------------------------------------------------
    def batch(self, step: int) -> tuple[Any, Any, int]:
        """(tokens [B, T], [[offset, length]] per row, non-pad token count) for ``step``."""
        import mlx.core as mx
        import numpy as np

        rows = [self.items[i] for i in self.order(step)]
        width = max(len(tokens) for tokens, _ in rows)  # no padding beyond the batch's longest
        self.padded += width * len(rows) - sum(len(tokens) for tokens, _ in rows)
        array = np.zeros((len(rows), width), np.int32)
        for j, (tokens, _) in enumerate(rows):
            array[j, :len(tokens)] = tokens
        lengths = [[offset, len(tokens)] for tokens, offset in rows]
        return mx.array(array), mx.array(lengths), sum(len(t) for t, _ in rows)

    def order(self, step: int) -> list[int]:
        """The item indices of ``step``'s batch: a function of the step, rows of near-equal length."""
        p = self.params
        return example_order(step, len(self.items), p.batch_size, p.seed, self.lengths)

    def run(self) -> int:
        """Step from the restored step to ``params.steps``; checkpoint, report, finish (or stop on request)."""
        import mlx.nn as nn

        p = self.params
        start = self.restore()
        self.emit("started", start_step=start, steps=p.steps, examples=len(self.items), dropped=self.dropped,
                  lora_layers=self.n_lora_layers, compute=msgspec.to_builtins(self.compute),
                  trainable_params=sum(int(v.size) for v in self.trainable_weights().values()),
                  params=msgspec.to_builtins(p), probe_items=len(self.probe),
                  check_every=self.check_every if self.probe else 0)
        loss_and_grad = nn.value_and_grad(self.model, masked_loss if self.teacher is None else distill_loss)
        self.model.train()
        started = time.monotonic()
        window, total, last_checkpoint = _Window(), _Window(), start
        final_loss = self.curve[-1][1] if self.curve else float("nan")
        # A run killed after its rule said stop (between that checkpoint and the final files) ends at once.
        reason = self._decide() if start else None
        end = start if reason else p.steps
        for step in range(start + 1, end + 1):
            if self.stop_requested():
                return self.stop(step - 1, last_checkpoint)
            loss, n_tokens, elapsed = self._step(loss_and_grad, step)
            window.add(loss, n_tokens, elapsed)
            total.add(loss, n_tokens, elapsed)
            reason = self._check(step)
            if step % p.steps_per_report == 0 or step == p.steps or reason:
                final_loss = self._report(step, start, window, total.seconds)
                window = _Window()
            if reason:
                end = step
                break
            if step % p.steps_per_checkpoint == 0 and step < p.steps:
                self.checkpoint(step)
                last_checkpoint = step
        if last_checkpoint < end:
            self.checkpoint(end)  # the final save below can be redone from it
        self.finish(start, end, reason or "cap", final_loss, total.seconds, total.tokens,
                    time.monotonic() - started)
        return EXIT_OK

    def _check(self, step: int) -> str | None:
        """The stop rule at ``step`` (services.trainer.stop_rule): why to stop, or None.

        Checked every ``check_every`` steps once every item was trained once,
        never at the cap (the run ends there anyway).
        """
        if (not self.probe or step < self.steps_per_epoch or step % self.check_every
                or step >= self.params.steps):
            return None
        from services.trainer.stop_rule import check

        tic = time.perf_counter()
        learned, loss = check(self.model, self.probe)
        self.checks.append([step, learned, round(loss, 5)])
        reason = self._decide()
        seconds = time.perf_counter() - tic
        self.check_s += seconds
        self.emit("check", step=step, steps=self.params.steps, learned=learned, facts=len(self.probe),
                  probe_loss=round(loss, 5), seconds=round(seconds, 2), stop=reason or "")
        return reason

    def _decide(self) -> str | None:
        p = self.params
        return decide(self.checks, len(self.probe), learned_share=p.learned_share, patience=p.patience)

    def _step(self, loss_and_grad: Callable[..., Any], step: int) -> tuple[float, int, float]:
        """One optimizer step on ``step``'s batch: (loss, tokens in the batch, seconds)."""
        import mlx.core as mx

        tic = time.perf_counter()
        if self.teacher is None:
            inputs, lengths, n_tokens = self.batch(step)
            (loss, _trained), grads = loss_and_grad(self.model, inputs, lengths)
        else:  # unpacked rows with the teacher's targets (services.trainer.distill)
            *arrays, n_tokens = self.teacher.batch(self.order(step))
            (loss, _trained), grads = loss_and_grad(self.model, *arrays)
        self.optimizer.update(self.model, grads)
        mx.eval(self.model.trainable_parameters(), self.optimizer.state, loss)
        return loss.item(), n_tokens, time.perf_counter() - tic

    def _report(self, step: int, start: int, window: _Window, total_s: float) -> float:
        """Emit a progress line for the window that ends at ``step``; returns its mean loss."""
        p = self.params
        loss = window.loss / window.steps
        self.curve.append([step, round(loss, 5)])
        self.emit("progress", step=step, steps=p.steps, loss=round(loss, 5),
                  tokens_per_s=round(window.tokens / window.seconds, 1),
                  eta_s=round(total_s / (step - start) * (p.steps - step), 1),
                  step_s=round(window.seconds / window.steps, 3), elapsed_s=round(total_s, 1),
                  peak_memory_bytes=_peak_memory())
        return loss

    def checkpoint(self, step: int) -> None:
        path = write_checkpoint(self.out_dir, step, self.trainable_weights(), self.key, self.curve, self.checks)
        self.emit("checkpoint", step=step, path=str(path))

    def stop(self, step: int, last_checkpoint: int) -> int:
        if step > last_checkpoint:
            self.checkpoint(step)
        self.emit("stopped", step=step)
        return EXIT_STOPPED

    def finish(self, start: int, end: int, reason: str, final_loss: float, train_s: float, tokens: int,
               duration_s: float) -> None:
        """Write the adapter (mlx-lm's format) and the run's summary; drop the checkpoints.

        ``end``: the step the run stopped at, ``reason`` why (services.trainer.stop_rule.STOP_REASONS).
        """
        p = self.params
        save_weights_atomic(self.out_dir / ADAPTER_FILE, self.trainable_weights())
        config = {
            "fine_tune_type": "lora",
            "num_layers": self.n_lora_layers,
            "lora_parameters": p.lora_parameters(),
            "model": str(self.model_dir.name),
            "mask_prompt": p.mask_prompt,
            "learning_rate": p.lr,
            "iters": end,
            "batch_size": p.batch_size,
            "max_seq_length": p.max_seq_len,
            "seed": p.seed,
        }
        write_atomic(self.out_dir / CONFIG_FILE, json.dumps(config, indent=2).encode(), mode=0o644)
        tokens_per_s = round(tokens / train_s, 1) if train_s > 0 else 0.0
        summary = {
            "steps": end, "steps_planned": p.steps, "stopped_because": reason, "stop_key": p.stop_key(),
            "checks": self.checks, "check_s": round(self.check_s, 1), "probe_items": len(self.probe),
            "padding_share": round(self.padded / (self.padded + tokens), 4) if tokens else 0.0,
            "tokens": tokens, "resumed_from": start, "final_loss": _finite(final_loss),
            "duration_s": round(duration_s, 1), "train_s": round(train_s, 1), "tokens_per_s": tokens_per_s,
            "examples": len(self.items), "dropped": self.dropped, "loss_curve": self.curve,
            "peak_memory_bytes": int(_peak_memory()),
            "compute": msgspec.to_builtins(self.compute), "params": msgspec.to_builtins(p), "key": self.key,
        }
        write_atomic(self.out_dir / SUMMARY_FILE, json.dumps(summary, indent=2).encode(), mode=0o644)
        remove_checkpoints(self.out_dir)
        self.emit("done", steps=end, steps_planned=p.steps, stopped_because=reason,
                  final_loss=_finite(final_loss), duration_s=round(duration_s, 1),
                  tokens_per_s=tokens_per_s, resumed_from=start,
                  files=[ADAPTER_FILE, CONFIG_FILE, SUMMARY_FILE])


def masked_loss(model: Any, batch: Any, lengths: Any) -> tuple[Any, Any]:
    """Mean cross-entropy over the trained tokens: positions ``offset .. length-1``.

    mlx-lm's ``default_loss`` also counts the first padding position of every
    row shorter than the batch (its mask runs to ``length`` inclusive); here
    padding never contributes.
    """
    import mlx.core as mx
    import mlx.nn as nn

    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits = model(inputs)
    positions = mx.arange(1, targets.shape[1] + 1)  # index of each target token in the row
    mask = mx.logical_and(positions >= lengths[:, 0:1], positions < lengths[:, 1:])
    losses = nn.losses.cross_entropy(logits, targets) * mask
    count = mask.sum()
    return losses.astype(mx.float32).sum() / count, count


def _peak_memory() -> int:
    import mlx.core as mx

    return int(mx.get_peak_memory())


def _finite(value: float) -> float | None:
    return round(value, 5) if value == value and abs(value) != float("inf") else None


