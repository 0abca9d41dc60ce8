"""Check that a directory is a loadable mlx-lm model, cheaply and with one-line errors.

Nothing here imports MLX: the checks read file headers only, so ``circ doctor``
and the installer can run them in milliseconds on a multi-GB model.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

# The embedded model's directory under models/ (services.lib.models.install converts into it).
EMBEDDED_DIR = "smollm2-135m-instruct"

# A safetensors header is a JSON object; anything near this size is garbage.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
# Files that let transformers' AutoTokenizer build a tokenizer (one suffices).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tiktoken.model", "vocab.json")


class ModelError(Exception):
    """A model cannot be installed or loaded; the message is one line with the fix."""


def display(path: Path) -> str:
    """The path as a person would type it: relative to the cwd when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def human_size(nbytes: int) -> str:
    # Decimal units, as `ls -lh --si` and download pages show them.
    if nbytes >= 1_000_000:
        return f"{nbytes / 1e6:.0f} MB"
    return f"{nbytes / 1e3:.1f} KB"


def repair_hint(path: Path) -> str:
    """How to fix a broken model at ``path``: only what `circ model install` made can be reinstalled.

    The embedded model and hub downloads live under the models directory and
    `circ model install [ID] --force` rebuilds them; any other directory is the
    user's own, which circadian never writes to.
    """
    from services.common.paths import models_dir

    path = Path(path)
    try:
        managed = path.absolute().parent.resolve() == models_dir().resolve()
    except OSError:
        managed = False
    # Staging and partial directories of an install in progress count as their target.
    name = path.name.removeprefix(".").removesuffix(".partial").split(".staging-")[0]
    if managed and name == EMBEDDED_DIR:
        return "reinstall it with `circ model install --force`"
    if managed and "--" in name:
        return f"reinstall it with `circ model install {name.replace('--', '/', 1)} --force`"
    return ("this is your own model directory, not one `circ model install` made, so --force cannot "
            "rebuild it: copy or convert the model into it again, or point [chat] model at another one")


def validate_model_dir(path: Path) -> None:
    """Raise ModelError naming the first broken file of the model at ``path``."""
    path = Path(path)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise ModelError(
            f"{display(path)} {what}: install a model with `circ model install` "
            "or pass a local mlx-lm model directory"
        )
    fix = repair_hint(path)
    _check_config(path / "config.json", fix)
    for weights in _weight_files(path, fix):
        check_safetensors(weights, fix)
    _check_tokenizer(path, fix)


def _check_config(config_path: Path, fix: str) -> dict:
    if not config_path.is_file():
        raise ModelError(f"{display(config_path)} is missing: {fix}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{display(config_path)} is not valid JSON ({exc}): {fix}") from None
    if not isinstance(config, dict) or not config.get("model_type"):
        raise ModelError(f"{display(config_path)} has no model_type: {fix}")
    return config


def _weight_files(path: Path, fix: str) -> list[Path]:
    """The safetensors files mlx-lm will load (it globs model*.safetensors)."""
    index = path / "model.safetensors.index.json"
    files = set(path.glob("model*.safetensors"))
    if index.is_file():
        # A sharded model: every shard the index names must be present.
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            raise ModelError(f"{display(index)} is not a valid index: {fix}") from None
        for name in sorted(set(weight_map.values())):
            shard = path / name
            if not shard.is_file():
                raise ModelError(f"{display(shard)} is missing: {fix}")
            files.add(shard)
    if not files:
        raise ModelError(f"{display(path / 'model.safetensors')} is missing: {fix}")
    return sorted(files)


def check_safetensors(file: Path, fix: str | None = None) -> None:
    """Parse the header and compare the file size with the tensor offsets it lists.

    A download or copy cut short keeps a valid header but loses the tail, so
    the size check catches what a header parse alone would not. ``fix`` ends
    the error message (default: the repair hint for the file's directory).
    """
    name = display(file)
    fix = fix or repair_hint(file.parent)
    try:
        size = file.stat().st_size
        with open(file, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ModelError(f"{name} is truncated (no header, {size} bytes): {fix}")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > _MAX_HEADER_BYTES or 8 + header_len > size:
                raise ModelError(
                    f"{name} is truncated or not safetensors (bad header): {fix}"
                )
            header = json.loads(handle.read(header_len))
    except OSError as exc:
        raise ModelError(f"{name} is not readable ({exc.strerror or exc}): {fix}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError(f"{name} has a corrupt header: {fix}") from None

    end = 0
    for key, entry in header.items() if isinstance(header, dict) else ():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(entry["data_offsets"][1]))
        except (KeyError, IndexError, TypeError, ValueError):
            raise ModelError(f"{name} has a corrupt header (tensor {key}): {fix}") from None
    expected = 8 + header_len + end
    if size < expected:
        raise ModelError(
            f"{name} is truncated (expected {human_size(expected)}, found {human_size(size)}): "
            f"{fix}"
        )


def _check_tokenizer(path: Path, fix: str) -> None:
    # tokenizer_config.json carries the chat template and special tokens.
    for name in ("tokenizer_config.json", "tokenizer.json"):
        file = path / name
        if name == "tokenizer.json" and not file.exists():
            continue  # a sentencepiece or tiktoken model instead, checked below
        if not file.is_file():
            raise ModelError(f"{display(file)} is missing: {fix}")
        # Cheap enough (tens of ms) and catches a torn download of the vocab.
        try:
            json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise ModelError(f"{display(file)} is not valid JSON: {fix}") from None
    present = [name for name in _TOKENIZER_FILES if (path / name).is_file()]
    if not present and not list(path.glob("*.tiktoken")):
        raise ModelError(f"{display(path / 'tokenizer.json')} is missing: {fix}")
