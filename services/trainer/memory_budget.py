"""Whether this machine has the free memory a training run needs, checked before anything loads.

The estimate reads the safetensors headers and config.json (no weights, no
MLX import); the measurement is the accelerator's free memory on the
quantized path, else RAM (/proc/meminfo and the cgroup limit, or vm_stat).
Both can be replaced through the environment (:data:`NEEDED_ENV`,
:data:`AVAILABLE_ENV`) for tests and odd machines.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec

from services.trainer.params import TrainParams
from services.trainer.worker_io import InputError

NEEDED_ENV = "CIRCADIAN_TRAIN_MEMORY_NEEDED_BYTES"  # replaces the estimate (tests, odd machines)
AVAILABLE_ENV = "CIRCADIAN_TRAIN_MEMORY_AVAILABLE_BYTES"  # replaces the measurement

# Python, MLX, the tokenizer (transformers) loaded: measured ~350 MB RSS on Linux.
RUNTIME_OVERHEAD_BYTES = 450 * 2**20
SAFETY_FACTOR = 1.25



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


