"""Load a model for serving in the form that computes fastest on this machine.

On Metal or CUDA the 4-bit weights are the fast path (and QLoRA trains on
them). On a CPU backend MLX's quantized matmul is scalar and single-threaded,
while a float32 matmul goes to BLAS (OpenBLAS, see services.common.blas): a
dequantized float32 copy decodes faster and trains LoRA ~10x faster. The 4-bit
values are dequantized exactly, so the float32 copy computes the same
function; an adapter trained on it applies unchanged to the 4-bit weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from services.common.blas import preload_openblas
from services.lib.models.validate import ModelError, validate_model_dir

# OpenBLAS must be in the process before libmlx.so is loaded (first `import mlx`).
_BLAS = preload_openblas()

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
from mlx.utils import tree_map_with_path  # noqa: E402

COMPUTE_CHOICES = ("auto", "float32", "quantized")


class ComputeInfo(msgspec.Struct, frozen=True):
    """How the served model computes, and why (shown by `circ doctor`)."""

    backend: str  # "cpu" | "metal" | "cuda"
    weights: str  # "float32" | "4bit" (or e.g. "8bit", "bfloat16" for other models)
    compute_requested: str  # "auto" | "float32" | "quantized"
    reason: str


def load_for_serving(model_dir: Path, compute: str = "auto") -> tuple[nn.Module, Any, ComputeInfo]:
    """Validate and load ``model_dir`` with mlx-lm; on a CPU backend make a float32 copy.

    ``compute``: "auto" (float32 on CPU, quantized on Metal/CUDA), "float32"
    (always dequantize) or "quantized" (keep the weights as stored).
    Returns (model, mlx-lm TokenizerWrapper, ComputeInfo).
    """
    if compute not in COMPUTE_CHOICES:
        raise ModelError(f"compute must be one of {', '.join(COMPUTE_CHOICES)}, not {compute!r}")
    from mlx_lm.utils import load  # imports transformers: seconds, so only when needed

    model_dir = Path(model_dir)
    validate_model_dir(model_dir)
    model, tokenizer = load(str(model_dir))
    backend = current_backend()
    stored = weights_kind(model)

    if compute == "quantized" or (compute == "auto" and backend != "cpu"):
        why = "requested" if compute == "quantized" else f"the {backend} backend runs it natively"
        info = ComputeInfo(backend, stored, compute, f"kept the {stored} weights: {why}")
        return model, tokenizer, info

    dequantized = to_float32(model)
    mx.eval(model.parameters())
    if compute == "float32":
        why = "requested"
    else:
        why = "on the cpu backend MLX's quantized matmul is scalar, float32 matmul uses BLAS"
    source = f"dequantized {stored} to float32" if dequantized else f"cast {stored} to float32"
    reason = f"{source}: {why}; BLAS: {_BLAS.name}"
    if backend == "cpu" and _BLAS.name == "reference":
        reason += f" ({_BLAS.reason})"
    return model, tokenizer, ComputeInfo(backend, "float32", compute, reason)


def current_backend() -> str:
    """The device MLX computes on by default: "cpu", "metal" or "cuda"."""
    if mx.default_device().type == mx.DeviceType.cpu:
        return "cpu"
    if mx.metal.is_available():
        return "metal"
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        return "cuda"
    return "gpu"


def weights_kind(model: nn.Module) -> str:
    """How the linear layers are stored: "4bit", "8bit", or a float dtype name."""
    for _, module in model.named_modules():
        if isinstance(module, nn.QuantizedLinear):
            return f"{module.bits}bit"
    for _, module in model.named_modules():
        if isinstance(module, nn.Linear):
            return str(module.weight.dtype).removeprefix("mlx.core.")
    return "unknown"


def to_float32(model: nn.Module) -> int:
    """Replace quantized layers by float32 ones in place; cast the rest to float32.

    Returns how many layers were dequantized. Tied embeddings keep working:
    the LM head calls ``embed_tokens.as_linear``, which nn.Embedding provides
    as ``x @ weight.T`` just as QuantizedEmbedding does with a quantized matmul.
    """
    count = 0

    def replace(_path: str, module: nn.Module) -> nn.Module:
        nonlocal count
        if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            count += 1
            return _dequantized(module)
        return module

    leaves = tree_map_with_path(replace, model.leaf_modules(), is_leaf=nn.Module.is_module)
    model.update_modules(leaves)
    # Norm weights and any float16/bfloat16 leftovers: float16 overflows on CPU.
    model.apply(lambda a: a.astype(mx.float32) if mx.issubdtype(a.dtype, mx.floating) else a)
    return count


def _dequantize_weight(module: nn.Module) -> mx.array:
    """The float32 weight of a quantized layer: ``q * scale + bias`` per group.

    Computed in float32 from float32 scales. mx.dequantize keeps the scales'
    dtype (float16 in a converted GGUF) and rounds the result to it; it is
    also ~4x slower on the CPU than these vectorised element-wise ops.
    """
    bits, group_size = module.bits, module.group_size
    scales = module["scales"].astype(mx.float32)
    biases = module.get("biases")
    if module.mode != "affine" or 32 % bits or biases is None:
        return mx.dequantize(
            module["weight"],
            scales=scales,
            biases=biases,
            group_size=group_size,
            bits=bits,
            mode=module.mode,
        ).astype(mx.float32)
    packed = module["weight"]
    # Each uint32 holds 32 // bits values, the first in the lowest bits.
    shifts = mx.arange(0, 32, bits, dtype=mx.uint32)
    values = (packed[..., None] >> shifts) & ((1 << bits) - 1)
    rows = packed.shape[0]
    values = values.reshape(rows, -1, group_size).astype(mx.float32)
    weight = values * scales[..., None] + biases.astype(mx.float32)[..., None]
    return weight.reshape(rows, -1)


def _dequantized(module: nn.Module) -> nn.Module:
    weight = _dequantize_weight(module)
    rows, cols = weight.shape
    if isinstance(module, nn.QuantizedEmbedding):
        layer = nn.Embedding(rows, cols)
    else:
        layer = nn.Linear(cols, rows, bias="bias" in module)
        if "bias" in module:
            layer.bias = module["bias"].astype(mx.float32)
    layer.weight = weight
    return layer
