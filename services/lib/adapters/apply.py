"""Apply, check and remove an mlx-lm LoRA/DoRA adapter on a loaded model: the one code path.

Chat serves an adapter with :func:`apply_adapter`, and the evaluator measures
a candidate with :func:`adapter_applied` (apply, then remove whatever
happens), so "measured exactly as chat serves it" holds by construction, not
by convention: the same files checks, the same NaN/infinity refusal, the
same missing-tensor check, the same unfused application.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ADAPTER_FILES = ("adapter_config.json", "adapters.safetensors")


class AdapterInvalid(Exception):
    """An adapter directory is missing, incomplete or corrupt, or does not fit the model.

    ``role`` names whose adapter it is ("candidate", "baseline", "served"):
    the evaluator turns a bad candidate into a reject verdict; a bad baseline
    means the adapter chat serves is itself broken (roll back).
    """

    def __init__(self, role: str, path: Path | str, problem: str) -> None:
        super().__init__(f"{role} adapter {path}: {problem}")
        self.role = role
        self.path = str(path)
        self.problem = problem


def _lora_types() -> tuple[type, ...]:
    from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
    from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear

    return (LoRALinear, DoRALinear, LoRASwitchLinear, LoRAEmbedding, DoRAEmbedding)


def has_adapter(model: Any) -> bool:
    types = _lora_types()
    return any(isinstance(m, types) for _, m in model.named_modules())


def remove_adapter(model: Any) -> None:
    """Put the base layers back in place of every LoRA/DoRA wrapper.

    mlx-lm's ``remove_lora_layers`` knows only LoRALinear; the wrappers keep
    the very base module they wrap, so this restores the model exactly.
    """
    from mlx.utils import tree_unflatten

    types = _lora_types()
    restored = []
    for name, module in model.named_modules():
        if isinstance(module, types):
            base = getattr(module, "linear", None) or getattr(module, "embedding", None)
            restored.append((name, base))
    if restored:
        model.update_modules(tree_unflatten(restored))


def check_adapter_dir(path: Path | str, role: str = "candidate") -> dict[str, Any]:
    """Validate an mlx-lm adapter directory without touching the model; return
    its config. Raises :class:`AdapterInvalid` with what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise AdapterInvalid(role, path, "no such directory")
    for name in ADAPTER_FILES:
        if not (path / name).is_file():
            raise AdapterInvalid(role, path, f"{name} is missing (the adapter is incomplete)")
    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise AdapterInvalid(role, path, f"adapter_config.json is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise AdapterInvalid(role, path, "adapter_config.json is not a JSON object")
    kind = config.get("fine_tune_type", "lora")
    if kind not in ("lora", "dora"):
        raise AdapterInvalid(role, path, f"fine_tune_type {kind!r}: only lora/dora adapters can be "
                                         "served unfused")
    params = config.get("lora_parameters")
    if not isinstance(config.get("num_layers"), int) or not isinstance(params, dict) \
            or not {"rank", "scale"} <= params.keys():
        raise AdapterInvalid(role, path, "adapter_config.json lacks num_layers or "
                                         "lora_parameters.rank/scale")
    return config


def _load_weights(path: Path, role: str) -> dict[str, Any]:
    import mlx.core as mx

    try:
        weights = mx.load(str(path / "adapters.safetensors"))
    except Exception as exc:  # mlx raises RuntimeError/ValueError for torn files
        raise AdapterInvalid(role, path, f"adapters.safetensors cannot be read ({exc})") from None
    if not isinstance(weights, dict) or not weights:
        raise AdapterInvalid(role, path, "adapters.safetensors holds no tensors")
    bad = [name for name, w in weights.items() if not bool(mx.all(mx.isfinite(w)).item())]
    if bad:
        raise AdapterInvalid(role, path, f"{len(bad)} tensors hold NaN or infinity (e.g. {bad[0]})")
    return weights


def apply_adapter(model: Any, path: Path | str, role: str = "candidate") -> dict[str, Any]:
    """Apply the adapter in ``path`` to ``model`` unfused, in eval mode; return its config.

    Raises :class:`AdapterInvalid` (the model may then hold part of the
    adapter: call :func:`remove_adapter`).
    """
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import load_adapters

    path = Path(path)
    config = check_adapter_dir(path, role)
    weights = _load_weights(path, role)
    try:
        load_adapters(model, str(path))
    except Exception as exc:  # shape/name mismatches, bad config values
        raise AdapterInvalid(role, path, f"does not fit this model ({exc})") from None
    # load_weights(strict=False) would leave a missing lora_a at its random
    # initialization: answers would then not be deterministic.
    expected = {name for name, _ in tree_flatten(model.parameters())
                if name.rsplit(".", 1)[-1] in ("lora_a", "lora_b", "m")}
    missing = expected - weights.keys()
    if missing:
        raise AdapterInvalid(role, path, f"{len(missing)} adapter tensors are missing "
                                         f"(e.g. {sorted(missing)[0]})")
    model.eval()  # new LoRA layers start in training mode (dropout on)
    return config


@contextmanager
def adapter_applied(model: Any, path: Path | str | None, role: str = "candidate") -> Iterator[None]:
    """Apply the adapter in ``path`` unfused for the duration (None: the bare
    model); the model is bare again afterwards, whatever happened."""
    if path is None:
        yield
        return
    try:
        apply_adapter(model, path, role)
        yield
    finally:
        remove_adapter(model)
