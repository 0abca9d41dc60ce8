"""The training worker: one LoRA run in its own process, so its memory goes back to the OS.

    python -m services.trainer.worker --model DIR --data DIR --out DIR
        [--resume] [--params JSON] [--parent-fd N --parent-pid PID]

``--data`` holds ``train.jsonl`` in mlx-lm's chat format (one
``{"messages": [...]}`` per line, the last message the assistant's). The
run uses mlx-lm's pieces — :func:`linear_to_lora_layers`, ``ChatDataset``
(prompt masking) and its adapter format — in a small loop of its own, which
makes resuming exact (the example order is a function of the step) and
reports progress between steps.

stdout carries only JSON lines, one per event (everything else the process
prints goes to stderr)::

    {"type": "hello", "pid": ...}                          at once
    {"type": "started", "start_step", "steps", "examples", "compute", ...}
    {"type": "progress", "step", "steps", "loss", "tokens_per_s", "eta_s", ...}
    {"type": "checkpoint", "step", "path"}
    {"type": "done", "steps", "final_loss", "duration_s", "tokens_per_s", "files"}
    {"type": "stopped", "step"}                             after SIGTERM (checkpoint saved)
    {"type": "error", "kind", "error", ...}                 then a non-zero exit

Exit codes: 0 done, 1 unexpected failure, 2 bad input (data, params,
model), 3 not enough free memory (refused before loading anything), 5
stopped by SIGTERM, 6 the parent died.

Output in ``--out``: ``adapters.safetensors`` + ``adapter_config.json``
(loadable by ``mlx_lm.tuner.utils.load_adapters`` on the 4-bit model and on
the float32 copy alike) and ``training.json`` (figures, loss curve). While
running, ``checkpoints/`` holds the latest adapter weights and the step
(no optimizer state: Adam restarts its moments on resume, which costs a
few noisy steps and keeps checkpoints at the adapter's size); it is removed
once the final files are durable.

The worker dies with its parent: ``--parent-fd`` is the read end of a pipe
whose write end only the parent holds; a watcher thread exits the process
when it reads EOF (the parent closed it or died). On Linux
``PR_SET_PDEATHSIG`` (SIGKILL) is a second guard that works even while the
main thread is inside a long MLX call.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import msgspec

from services.common import lifeline
from services.common.atomic import fsync_dir, write_atomic
from services.trainer.params import TrainParams

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NO_MEMORY = 3
EXIT_STOPPED = 5
EXIT_PARENT_GONE = 6

NEEDED_ENV = "CIRCADIAN_TRAIN_MEMORY_NEEDED_BYTES"  # replaces the estimate (tests, odd machines)
AVAILABLE_ENV = "CIRCADIAN_TRAIN_MEMORY_AVAILABLE_BYTES"  # replaces the measurement

TRAIN_FILE = "train.jsonl"
ADAPTER_FILE = "adapters.safetensors"
CONFIG_FILE = "adapter_config.json"
SUMMARY_FILE = "training.json"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_INDEX = "checkpoint.json"
# Python, MLX, the tokenizer (transformers) loaded: measured ~350 MB RSS on Linux.
RUNTIME_OVERHEAD_BYTES = 450 * 2**20
SAFETY_FACTOR = 1.25


class InputError(Exception):
    """Bad data, params, model or checkpoint: exit 2 with the reason."""


# ----------------------------------------------------------------- JSON lines out


class Emitter:
    """The JSON-lines channel to the parent: a private copy of fd 1.

    fd 1 itself is pointed at stderr, so stray prints (mlx-lm, transformers)
    can never corrupt the stream.
    """

    def __init__(self) -> None:
        self._out: IO[str] = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._lock = threading.Lock()

    def __call__(self, event_type: str, /, **fields: Any) -> None:
        line = json.dumps({"type": event_type, **fields}, default=str)
        with self._lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (BrokenPipeError, OSError):
                os._exit(EXIT_PARENT_GONE)  # nobody is listening any more


# ----------------------------------------------------------------- dying with the parent


def watch_parent(fd: int, parent_pid: int | None) -> None:
    """Exit (EXIT_PARENT_GONE) when the trainer that started us is gone (services.common.lifeline)."""
    lifeline.watch_parent(fd, parent_pid, EXIT_PARENT_GONE)


# ----------------------------------------------------------------- memory check


class MemoryCheck(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    needed_bytes: int
    available_bytes: int | None  # None: could not be measured (the check passes)
    detail: dict[str, int] = {}
    source: str = ""

    def message(self) -> str:
        gb = 2**30
        avail = "unknown" if self.available_bytes is None else f"{self.available_bytes / gb:.2f} GB"
        parts = ", ".join(f"{k} {v / gb:.2f} GB" for k, v in self.detail.items())
        text = f"needs ~{self.needed_bytes / gb:.2f} GB ({parts}); {avail} available ({self.source})"
        if self.ok:
            return text
        return (f"not enough free memory to train: {text}. Close other programs, or lower "
                "trainer.max_seq_len / the batch size, or train on the quantized weights "
                "(compute=quantized)")


def check_memory(model_dir: Path, params: TrainParams, compute: str | None = None) -> MemoryCheck:
    """Whether this machine has the free memory the run needs (no MLX import: cheap)."""
    override = os.environ.get(NEEDED_ENV, "").strip()
    if override:
        needed, detail = int(float(override)), {"override": int(float(override))}
    else:
        detail = estimate_training_bytes(model_dir, params, compute)
        needed = int(sum(detail.values()))
    available, source = available_memory_bytes(resolve_compute(compute or params.compute))
    ok = available is None or needed <= available
    return MemoryCheck(ok=ok, needed_bytes=needed, available_bytes=available, detail=detail, source=source)


def resolve_compute(compute: str) -> str:
    """"float32" or "quantized" for "auto", without importing MLX.

    macOS (Metal) keeps the quantized weights; on Linux the CUDA build of MLX
    is the exception (the check asks for it only when the package exists).
    """
    if compute != "auto":
        return compute
    if sys.platform == "darwin":
        return "quantized"
    try:
        from importlib.util import find_spec

        if find_spec("mlx_cuda") is not None or find_spec("nvidia") is not None:
            return "quantized"
    except (ImportError, ValueError):
        pass
    return "float32"


def estimate_training_bytes(model_dir: Path, params: TrainParams, compute: str | None = None) -> dict[str, int]:
    """Peak memory of a run, by part: weights, LoRA state, activations, runtime.

    Read from the safetensors headers and config.json (no weights loaded).
    Rough by design (x1.25 margin): its job is to refuse a run that cannot
    fit before it pushes the machine into swap, not to predict to the MB.
    """
    config = _read_config(model_dir)
    stored, logical, lora_candidates = _count_parameters(model_dir, config)
    kind = resolve_compute(compute or params.compute)
    # The float32 copy is made from the loaded quantized weights: both live at once.
    weights = stored + (logical * 4 if kind == "float32" else 0)
    n_layers = int(config.get("num_hidden_layers", 1)) or 1
    trained_layers = n_layers if params.num_layers == -1 else min(params.num_layers, n_layers)
    # LoRA A and B, their gradients, Adam's two moments: 4 float32 copies.
    lora = int(lora_candidates * params.rank * trained_layers / n_layers) * 4 * 4
    hidden = int(config.get("hidden_size", 1024))
    inter = int(config.get("intermediate_size", 4 * hidden))
    heads = int(config.get("num_attention_heads", 8))
    vocab = int(config.get("vocab_size", 32000))
    tokens = params.batch_size * params.max_seq_len
    # Per token and layer the backward pass keeps the block's inputs and
    # intermediates (~16 hidden-sized + 4 MLP-sized vectors) and a row of
    # attention scores per head; the logits need ~3 vocab-sized rows.
    act_layers = 2 if params.grad_checkpoint else n_layers
    per_token = act_layers * (16 * hidden + 4 * inter + heads * params.max_seq_len) * 4 + 3 * vocab * 4
    activations = tokens * per_token
    if params.grad_checkpoint:
        activations += tokens * n_layers * hidden * 4
    detail = {"weights": weights, "lora": lora, "activations": activations}
    detail = {k: int(v * SAFETY_FACTOR) for k, v in detail.items()}
    detail["runtime"] = RUNTIME_OVERHEAD_BYTES
    return detail


def _read_config(model_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{model_dir} is not a model directory (config.json: {exc})") from exc
    return config.get("text_config", config) if isinstance(config, dict) else {}


def _count_parameters(model_dir: Path, config: dict[str, Any]) -> tuple[int, int, int]:
    """(bytes stored, logical parameter count, sum of in+out dims of block linears)."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise InputError(f"{model_dir} has no *.safetensors weights")
    bits = int((config.get("quantization") or {}).get("bits", 0) or 0)
    stored = logical = lora_dims = 0
    for file in files:
        stored += file.stat().st_size
        header = _safetensors_header(file)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            shape = [int(d) for d in info.get("shape", [])]
            numel = 1
            for d in shape:
                numel *= d
            if name.endswith((".scales", ".biases")) and bits:
                continue
            packed = info.get("dtype") == "U32" and bits
            if packed:
                numel = numel * 32 // bits
            logical += numel
            if ".layers." in name and name.endswith(".weight") and len(shape) == 2:
                rows, cols = shape
                cols = cols * 32 // bits if packed else cols
                lora_dims += rows + cols
    return stored, logical, lora_dims


def _safetensors_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100 * 2**20:
            raise InputError(f"{path}: implausible safetensors header ({length} bytes)")
        return json.loads(handle.read(length))


def available_memory_bytes(compute: str = "float32") -> tuple[int | None, str]:
    """Memory a new process can use without swapping, and where the figure came from.

    On an accelerator (the quantized path on Metal or CUDA) the bound is the
    device's: the card's free memory, or Metal's recommended working set of the
    unified memory (services.common.hostinfo). On the CPU backend it is RAM.
    """
    override = os.environ.get(AVAILABLE_ENV, "").strip()
    if override:
        return int(float(override)), AVAILABLE_ENV
    if compute == "quantized":
        from services.common.blas import preload_openblas
        from services.common.hostinfo import accelerator_memory_bytes

        preload_openblas()  # the query imports mlx: OpenBLAS must be in place first
        on_device, source = accelerator_memory_bytes()
        if on_device is not None:
            return on_device, source
    if sys.platform.startswith("linux"):
        return _linux_available()
    if sys.platform == "darwin":
        return _macos_available()
    return None, f"not measured on {sys.platform}"


def _linux_available() -> tuple[int | None, str]:
    available: int | None = None
    source = "/proc/meminfo MemAvailable"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None, "/proc/meminfo unreadable"
    # In a container the cgroup's limit is the real ceiling.
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        usage = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            room = max(0, int(limit) - usage)
            if available is None or room < available:
                available, source = room, "cgroup memory.max - memory.current"
    except (OSError, ValueError):
        pass
    return available, source


def _macos_available() -> tuple[int | None, str]:
    try:
        text = subprocess.run(["vm_stat"], capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, "vm_stat failed"
    page = 4096
    pages: dict[str, int] = {}
    for line in text.splitlines():
        if "page size of" in line:
            page = int("".join(ch for ch in line.split("page size of")[1] if ch.isdigit()) or page)
        elif ":" in line:
            key, _, value = line.partition(":")
            digits = value.strip().rstrip(".")
            if digits.isdigit():
                pages[key.strip()] = int(digits)
    free = sum(pages.get(k, 0) for k in ("Pages free", "Pages inactive", "Pages speculative", "Pages purgeable"))
    return free * page, "vm_stat free+inactive+speculative+purgeable"


# ----------------------------------------------------------------- data


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


# ----------------------------------------------------------------- checkpoints


def save_weights_atomic(path: Path, weights: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    """mx.save_safetensors to a temp file, fsync, rename, fsync the directory."""
    import mlx.core as mx

    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        mx.save_safetensors(handle, weights, metadata=metadata or {})
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_checkpoint(out_dir: Path, step: int, weights: dict[str, Any], key: dict[str, Any],
                     curve: list[list[float]] | None = None) -> Path:
    """The weights, then an index naming them (the commit point), then old weights go."""
    directory = out_dir / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{step:07d}.safetensors"
    save_weights_atomic(path, weights)
    index = {"step": step, "file": path.name, "sha256": _sha256(path), "key": key, "ts": time.time(),
             "loss_curve": curve or []}
    write_atomic(directory / CHECKPOINT_INDEX, json.dumps(index, indent=2).encode(), mode=0o644)
    for old in directory.glob("step-*.safetensors"):  # keep the one the index names
        if old.name != path.name:
            old.unlink(missing_ok=True)
    return path


def read_checkpoint(out_dir: Path, key: dict[str, Any]) -> tuple[dict[str, Any] | None, Path | None, str]:
    """(index, weights file, note) of a checkpoint resumable under ``key``; (None, None, why) otherwise."""
    directory = out_dir / CHECKPOINT_DIR
    try:
        index = json.loads((directory / CHECKPOINT_INDEX).read_text())
    except FileNotFoundError:
        return None, None, "no checkpoint: starting at step 0"
    except (OSError, ValueError) as exc:
        return None, None, f"checkpoint index unreadable ({exc}): starting at step 0"
    path = directory / str(index.get("file", ""))
    if index.get("key") != key:
        return None, None, "the checkpoint was made with other data or parameters: starting at step 0"
    if not path.is_file() or path.parent != directory or _sha256(path) != index.get("sha256"):
        return None, None, "the checkpoint's weights are missing or corrupt: starting at step 0"
    return index, path, f"resuming from the checkpoint at step {index['step']}"


# ----------------------------------------------------------------- training


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
        examples = examples + self._anchors(examples)  # from the bare model: before LoRA goes on
        mx.random.seed(p.seed)  # LoRA's A matrices are drawn here
        linear_to_lora_layers(self.model, self.n_lora_layers, p.lora_parameters())
        if p.grad_checkpoint:
            from mlx_lm.tuner.trainer import grad_checkpoint

            grad_checkpoint(self.model.layers[0])
        dataset = CacheDataset(ChatDataset(examples, self.tokenizer, mask_prompt=p.mask_prompt))
        self.items, self.dropped = self._tokenize(dataset)
        if len(self.items) < p.batch_size:
            raise InputError(f"{len(self.items)} usable examples (of {len(examples)}; {self.dropped} had "
                             f"no answer left within max_seq_len {p.max_seq_len}): fewer than "
                             f"batch_size {p.batch_size}")
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
            _remove_tree(self.out_dir / CHECKPOINT_DIR)
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
        return step

    # -- the loop ----------------------------------------------------------------
    def batch(self, step: int) -> tuple[Any, Any, int]:
        """(tokens [B, T], [[offset, length]] per row, non-pad token count) for ``step``."""
        import mlx.core as mx
        import numpy as np

        rows = [self.items[i] for i in example_order(step, len(self.items), self.params.batch_size,
                                                      self.params.seed)]
        width = max(len(tokens) for tokens, _ in rows)  # no padding beyond the batch's longest
        array = np.zeros((len(rows), width), np.int32)
        for j, (tokens, _) in enumerate(rows):
            array[j, :len(tokens)] = tokens
        lengths = [[offset, len(tokens)] for tokens, offset in rows]
        return mx.array(array), mx.array(lengths), sum(len(t) for t, _ in rows)

    def run(self) -> int:
        import mlx.core as mx
        import mlx.nn as nn

        p = self.params
        start = self.restore()
        self.emit("started", start_step=start, steps=p.steps, examples=len(self.items), dropped=self.dropped,
                  lora_layers=self.n_lora_layers, compute=msgspec.to_builtins(self.compute),
                  trainable_params=sum(int(v.size) for v in self.trainable_weights().values()),
                  params=msgspec.to_builtins(p))
        loss_and_grad = nn.value_and_grad(self.model, masked_loss)
        self.model.train()
        started = time.monotonic()
        window_loss, window_steps, window_tokens, window_time = 0.0, 0, 0, 0.0
        total_time, total_tokens, last_checkpoint = 0.0, 0, start
        final_loss = self.curve[-1][1] if self.curve else float("nan")
        for step in range(start + 1, p.steps + 1):
            if self.stop_requested():
                return self.stop(step - 1, last_checkpoint)
            tic = time.perf_counter()
            inputs, lengths, n_tokens = self.batch(step)
            (loss, _trained), grads = loss_and_grad(self.model, inputs, lengths)
            self.optimizer.update(self.model, grads)
            mx.eval(self.model.trainable_parameters(), self.optimizer.state, loss)
            elapsed = time.perf_counter() - tic
            window_loss += loss.item()
            window_steps += 1
            window_tokens += n_tokens
            window_time += elapsed
            total_time += elapsed
            total_tokens += n_tokens
            if step % p.steps_per_report == 0 or step == p.steps:
                final_loss = window_loss / window_steps
                done = step - start
                self.curve.append([step, round(final_loss, 5)])
                self.emit("progress", step=step, steps=p.steps, loss=round(final_loss, 5),
                          tokens_per_s=round(window_tokens / window_time, 1),
                          eta_s=round(total_time / done * (p.steps - step), 1),
                          step_s=round(window_time / window_steps, 3), elapsed_s=round(total_time, 1),
                          peak_memory_bytes=int(mx.get_peak_memory()))
                window_loss, window_steps, window_tokens, window_time = 0.0, 0, 0, 0.0
            if step % p.steps_per_checkpoint == 0 and step < p.steps:
                self.checkpoint(step)
                last_checkpoint = step
        if last_checkpoint < p.steps:
            self.checkpoint(p.steps)  # the final save below can be redone from it
        self.finish(start, final_loss, total_time, total_tokens, time.monotonic() - started)
        return EXIT_OK

    def checkpoint(self, step: int) -> None:
        path = write_checkpoint(self.out_dir, step, self.trainable_weights(), self.key, self.curve)
        self.emit("checkpoint", step=step, path=str(path))

    def stop(self, step: int, last_checkpoint: int) -> int:
        if step > last_checkpoint:
            self.checkpoint(step)
        self.emit("stopped", step=step)
        return EXIT_STOPPED

    def finish(self, start: int, final_loss: float, train_s: float, tokens: int, duration_s: float) -> None:
        """Write the adapter (mlx-lm's format) and the run's summary; drop the checkpoints."""
        p = self.params
        save_weights_atomic(self.out_dir / ADAPTER_FILE, self.trainable_weights())
        config = {
            "fine_tune_type": "lora",
            "num_layers": self.n_lora_layers,
            "lora_parameters": p.lora_parameters(),
            "model": str(self.model_dir.name),
            "mask_prompt": p.mask_prompt,
            "learning_rate": p.lr,
            "iters": p.steps,
            "batch_size": p.batch_size,
            "max_seq_length": p.max_seq_len,
            "seed": p.seed,
        }
        write_atomic(self.out_dir / CONFIG_FILE, json.dumps(config, indent=2).encode(), mode=0o644)
        tokens_per_s = round(tokens / train_s, 1) if train_s > 0 else 0.0
        summary = {
            "steps": p.steps, "resumed_from": start, "final_loss": _finite(final_loss),
            "duration_s": round(duration_s, 1), "train_s": round(train_s, 1), "tokens_per_s": tokens_per_s,
            "examples": len(self.items), "dropped": self.dropped, "loss_curve": self.curve,
            "peak_memory_bytes": int(_peak_memory()),
            "compute": msgspec.to_builtins(self.compute), "params": msgspec.to_builtins(p), "key": self.key,
        }
        write_atomic(self.out_dir / SUMMARY_FILE, json.dumps(summary, indent=2).encode(), mode=0o644)
        _remove_tree(self.out_dir / CHECKPOINT_DIR)
        self.emit("done", steps=p.steps, final_loss=_finite(final_loss), duration_s=round(duration_s, 1),
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


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def finished_summary(out_dir: Path, key_params: TrainParams, data_dir: Path) -> dict[str, Any] | None:
    """The summary of a run that already finished into ``out_dir`` with these params and data."""
    try:
        summary = json.loads((out_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    key = summary.get("key", {})
    same = (isinstance(key, dict) and summary.get("steps") == key_params.steps
            and all(key.get(k) == v for k, v in key_params.trajectory_key().items())
            and key.get("data_sha256") == data_fingerprint(data_dir))
    complete = (out_dir / ADAPTER_FILE).is_file() and (out_dir / CONFIG_FILE).is_file()
    return summary if same and complete else None


# ----------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.trainer.worker",
                                     description="Train one LoRA adapter (JSON lines on stdout).")
    parser.add_argument("--model", required=True, help="mlx-lm model directory (e.g. models/smollm2-135m-instruct)")
    parser.add_argument("--data", required=True, help=f"directory holding {TRAIN_FILE} (chat format)")
    parser.add_argument("--out", required=True, help="output directory (adapter, summary, checkpoints)")
    parser.add_argument("--resume", action="store_true", help="continue from the last matching checkpoint")
    parser.add_argument("--params", default="{}", help="TrainParams as JSON (missing fields: defaults)")
    parser.add_argument("--anchor-cache", default=None,
                        help="directory caching the base model's anchor replies (default: no cache)")
    add_parent_arguments(parser)
    return parser


def add_parent_arguments(parser: argparse.ArgumentParser) -> None:
    """The death-pipe flags every worker takes (the runner passes them)."""
    parser.add_argument("--parent-fd", type=int, default=None, help="read end of the parent's death pipe")
    parser.add_argument("--parent-pid", type=int, default=None, help="the parent's pid (race check)")


def start_child(args: argparse.Namespace) -> Emitter:
    """A worker's first moves: take over stdout, tie its life to the parent's, say hello."""
    emit = Emitter()
    if args.parent_fd is not None:
        watch_parent(args.parent_fd, args.parent_pid)
    emit("hello", pid=os.getpid())
    return emit


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    emit = start_child(args)
    stop = threading.Event()
    in_loop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not in_loop.is_set():  # nothing to save yet: leave at once
            emit("stopped", step=0)
            os._exit(EXIT_STOPPED)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return _main(args, emit, stop, in_loop)
    except InputError as exc:
        emit("error", kind="input", error=str(exc))
        return EXIT_BAD_INPUT
    except MemoryError as exc:
        emit("error", kind="memory", error=f"ran out of memory while training: {exc}")
        return EXIT_NO_MEMORY
    except Exception as exc:  # a bug: say what, let the parent report it
        import traceback

        traceback.print_exc()
        emit("error", kind="internal", error=f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED


def _main(args: argparse.Namespace, emit: Emitter, stop: threading.Event, in_loop: threading.Event) -> int:
    try:
        params = TrainParams.from_json(args.params)
    except ValueError as exc:
        raise InputError(f"bad --params: {exc}") from exc
    model_dir, data_dir, out_dir = Path(args.model), Path(args.data), Path(args.out)
    if not model_dir.is_dir():
        raise InputError(f"model directory {model_dir} does not exist")
    examples = read_examples(data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.resume:
        summary = finished_summary(out_dir, params, data_dir)
        if summary is not None:
            emit("done", steps=summary["steps"], final_loss=summary.get("final_loss"),
                 duration_s=0.0, tokens_per_s=summary.get("tokens_per_s", 0.0), resumed_from=params.steps,
                 files=[ADAPTER_FILE, CONFIG_FILE, SUMMARY_FILE])
            return EXIT_OK
    else:
        (out_dir / SUMMARY_FILE).unlink(missing_ok=True)
    memory = check_memory(model_dir, params)
    if not memory.ok:
        emit("error", kind="memory", error=memory.message(), needed_bytes=memory.needed_bytes,
             available_bytes=memory.available_bytes, detail=memory.detail)
        return EXIT_NO_MEMORY
    emit("memory", needed_bytes=memory.needed_bytes, available_bytes=memory.available_bytes,
         detail=memory.detail, source=memory.source)
    trainer = Trainer(args, params, emit, stop.is_set)
    from services.lib.models.validate import ModelError

    try:
        trainer.load(examples)
    except InputError:
        raise
    except (ModelError, ValueError, OSError, KeyError) as exc:
        raise InputError(f"cannot load the model {model_dir}: {exc}") from exc
    in_loop.set()
    if stop.is_set():
        return trainer.stop(0, 0)
    return trainer.run()


if __name__ == "__main__":
    sys.exit(main())
