"""Convert a llama-architecture GGUF (e.g. the embedded SmolLM2 Q4_1) to an mlx-lm model dir.

MLX reads GGUF natively and maps Q4_0/Q4_1/Q8_0 blocks onto its own affine
quantization (``weight`` packed in uint32, per-group ``scales`` and ``biases``),
so the 4-bit weights are carried over bit for bit; what is left is renaming,
undoing llama.cpp's q/k row permutation, and rebuilding config and tokenizer
from the GGUF metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.common.atomic import fsync_dir
from services.common.blas import preload_openblas
from services.common.digest import file_sha256
from services.lib.models.validate import ModelError, validate_model_dir

# Bump when the output of the converter changes, so installs redo old conversions.
CONVERTER_VERSION = 1
MARKER_FILE = "circadian_model.json"

Progress = Callable[[str], None]

# GGUF tensor names (after "blk.N.") -> Hugging Face Llama names (after "model.layers.N.").
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
# Parameter suffixes: "weight"/"bias" of the layer, "scales"/"biases" of MLX quantization.
_SUFFIXES = ("weight", "bias", "scales", "biases")

# GGUF token types (llama.cpp's llama_token_type).
_TOKEN_CONTROL = 3
_TOKEN_USER_DEFINED = 4

# tokenizer.ggml.pre values whose pre-tokenization we reproduce exactly.
_DIGITS_THEN_BYTELEVEL = {"smollm", "starcoder", "refact"}
_PLAIN_BYTELEVEL = {"gpt-2", "default"}


def convert_gguf(gguf_path: Path, out_dir: Path, progress: Progress | None = None) -> Path:
    """Convert ``gguf_path`` into the mlx-lm model directory ``out_dir`` and return it.

    Everything is written to a staging directory next to ``out_dir`` and renamed
    into place at the end, so a conversion that is killed never leaves a half
    model at ``out_dir`` (an existing ``out_dir`` is replaced only once the new
    one is complete).
    """
    say = progress or (lambda _message: None)
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    started = time.perf_counter()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        say(f"hashing {gguf_path.name}")
        digest = file_sha256(gguf_path)
        _write_model(gguf_path, staging, say)
        _write_json(
            staging / MARKER_FILE,
            {
                "source": str(gguf_path),
                "sha256": digest,
                "converted_by": "circadian",
                "converter_version": CONVERTER_VERSION,
            },
        )
        validate_model_dir(staging)
        fsync_dir(staging)
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"converted to {out_dir} in {time.perf_counter() - started:.1f} s")
    return out_dir


def _write_model(gguf_path: Path, staging: Path, say: Progress) -> None:
    # A process may convert and then serve: keep OpenBLAS ahead of the first mlx import.
    preload_openblas()
    import mlx.core as mx

    say(f"reading {gguf_path.name} ({gguf_path.stat().st_size / 1e6:.0f} MB)")
    try:
        tensors, meta = mx.load(str(gguf_path), return_metadata=True)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"{gguf_path} is not a readable GGUF file ({exc})") from None
    arch = str(meta.get("general.architecture", ""))
    if arch != "llama":
        raise ModelError(
            f"{gguf_path} is a {arch or 'unknown'} model; only llama-architecture GGUFs "
            "convert (pass an mlx-lm model directory instead)"
        )

    say(f"renaming {len(tensors)} tensors and undoing llama.cpp's q/k permutation")
    weights = convert_tensors(tensors, meta)
    config = build_config(meta, weights)
    say("writing model.safetensors")
    mx.save_safetensors(str(staging / "model.safetensors"), weights, metadata={"format": "mlx"})
    _fsync_file(staging / "model.safetensors")
    _write_json(staging / "config.json", config)

    say(f"building the tokenizer ({len(meta['tokenizer.ggml.tokens'])} tokens)")
    tokenizer, tokenizer_config, special_map = build_tokenizer(meta)
    tokenizer.save(str(staging / "tokenizer.json"))
    _fsync_file(staging / "tokenizer.json")
    _write_json(staging / "tokenizer_config.json", tokenizer_config)
    _write_json(staging / "special_tokens_map.json", special_map)


# ---------------------------------------------------------------- metadata


def _scalar(meta: dict[str, Any], key: str, default: Any = None) -> Any:
    """A GGUF scalar as a Python value (MLX returns numbers as 0-d arrays)."""
    value = meta.get(key)
    if value is None:
        return default
    return value.item() if hasattr(value, "item") else value


def _float32(value: Any) -> float:
    """GGUF floats are float32: 1e-5 arrives as 9.99999974e-06; write it as 1e-05."""
    import numpy as np

    return float(str(np.float32(value)))


def _require(meta: dict[str, Any], key: str) -> Any:
    value = _scalar(meta, key)
    if value is None:
        raise ModelError(f"the GGUF has no {key} in its metadata: it cannot be converted")
    return value


def build_config(meta: dict[str, Any], weights: dict[str, Any]) -> dict[str, Any]:
    """config.json for mlx-lm's llama model, every hyperparameter from the GGUF."""
    hidden = int(_require(meta, "llama.embedding_length"))
    heads = int(_require(meta, "llama.attention.head_count"))
    kv_heads = int(_scalar(meta, "llama.attention.head_count_kv", heads))
    vocab = int(_scalar(meta, "llama.vocab_size", len(meta["tokenizer.ggml.tokens"])))
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": int(_require(meta, "llama.feed_forward_length")),
        "num_hidden_layers": int(_require(meta, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": int(_scalar(meta, "llama.attention.key_length", hidden // heads)),
        "rms_norm_eps": _float32(_require(meta, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": _float32(_scalar(meta, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_scalar(meta, "llama.context_length", 2048)),
        "vocab_size": vocab,
        # SmolLM2 ties the LM head to the embedding: llama.cpp then omits output.weight.
        "tie_word_embeddings": "lm_head.weight" not in weights,
        "attention_bias": "model.layers.0.self_attn.q_proj.bias" in weights,
        "mlp_bias": "model.layers.0.mlp.up_proj.bias" in weights,
    }
    for key, name in (
        ("bos_token_id", "bos"),
        ("eos_token_id", "eos"),
        ("pad_token_id", "padding"),
    ):
        token_id = _scalar(meta, f"tokenizer.ggml.{name}_token_id")
        if token_id is not None:
            config[key] = int(token_id)
    scaling = _scalar(meta, "llama.rope.scaling.type")
    if scaling == "linear":
        config["rope_scaling"] = {
            "type": "linear",
            "factor": _float32(_require(meta, "llama.rope.scaling.factor")),
        }
    elif scaling not in (None, "none"):
        raise ModelError(
            f"the GGUF uses rope scaling {scaling!r}, which this converter does not map"
        )
    quantization = _quantization_of(weights, hidden)
    if quantization is not None:
        # Makes mlx_lm.load build QuantizedLinear/QuantizedEmbedding; layers whose
        # bits differ (a Q8_0 tensor in a Q4_1 file) are inferred per layer by mlx-lm.
        config["quantization"] = quantization
        config["quantization_config"] = dict(quantization)
    return config


def _quantization_of(weights: dict[str, Any], hidden: int) -> dict[str, Any] | None:
    """MLX quantization of the weights, read from a layer whose input width is ``hidden``."""
    # The attention projections set the default: llama.cpp often keeps the
    # embedding at 8 bits in a 4-bit file (mlx-lm infers such layers itself).
    for layer in ("model.layers.0.self_attn.q_proj", "model.embed_tokens"):
        scales = weights.get(f"{layer}.scales")
        if scales is not None:
            # Packed uint32 columns hold hidden * bits bits; one scale per group.
            bits = weights[f"{layer}.weight"].shape[-1] * 32 // hidden
            return {"group_size": hidden // scales.shape[-1], "bits": bits, "mode": "affine"}
    return None


# ----------------------------------------------------------------- tensors


def hf_name(gguf_name: str) -> str:
    """Hugging Face Llama name of a GGUF tensor name, e.g. blk.3.attn_q.scales."""
    parts = gguf_name.split(".")
    suffix = parts[-1]
    if suffix in _SUFFIXES:
        if parts[0] == "blk" and len(parts) == 4 and parts[2] in _BLOCK_NAMES:
            return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}.{suffix}"
        if len(parts) == 2 and parts[0] in _TOP_NAMES:
            return f"{_TOP_NAMES[parts[0]]}.{suffix}"
    raise ModelError(f"the GGUF tensor {gguf_name} has no Llama equivalent; it cannot be converted")


def unpermute_rows(array: Any, n_head: int) -> Any:
    """Undo llama.cpp's permute() of q_proj/k_proj rows.

    llama.cpp's converter reorders each head's output rows from the Hugging
    Face "rotate half" layout to interleaved pairs:
    ``w.reshape(n_head, 2, d // 2, ...).swapaxes(1, 2)``. Its inverse swaps the
    same axes from ``(n_head, d // 2, 2, ...)``. Only axis 0 (output rows)
    moves, so the packed 4-bit weight, its scales and its biases, and a 1-D
    bias all un-permute the same way and stay consistent.
    """
    rows = array.shape[0]
    head_dim = rows // n_head
    if head_dim * n_head != rows or head_dim % 2:
        raise ModelError(f"cannot un-permute {rows} rows into {n_head} heads")
    rest = tuple(array.shape[1:])
    return array.reshape(n_head, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(array.shape)


def permute_rows(array: Any, n_head: int) -> Any:
    """llama.cpp's permute() (the inverse of :func:`unpermute_rows`), for tests."""
    rows = array.shape[0]
    rest = tuple(array.shape[1:])
    return array.reshape(n_head, 2, rows // n_head // 2, *rest).swapaxes(1, 2).reshape(array.shape)


def convert_tensors(tensors: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    heads = int(_require(meta, "llama.attention.head_count"))
    kv_heads = int(_scalar(meta, "llama.attention.head_count_kv", heads))
    converted: dict[str, Any] = {}
    for gguf_name, array in tensors.items():
        if gguf_name == "rope_freqs.weight":
            raise ModelError(
                "the GGUF uses llama3 rope scaling (rope_freqs), which is not supported"
            )
        name = hf_name(gguf_name)
        if ".self_attn.q_proj." in name:
            array = unpermute_rows(array, heads)
        elif ".self_attn.k_proj." in name:
            array = unpermute_rows(array, kv_heads)
        converted[name] = array
    if "model.embed_tokens.weight" not in converted:
        raise ModelError("the GGUF has no token_embd tensor; it cannot be converted")
    return converted


# --------------------------------------------------------------- tokenizer


def _pre_tokenizer(pre: str) -> Any:
    from tokenizers import pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in _DIGITS_THEN_BYTELEVEL:
        # StarCoder-style: every digit is its own token, then GPT-2 byte-level splitting.
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in _PLAIN_BYTELEVEL:
        return byte_level
    raise ModelError(
        f"the GGUF's pre-tokenizer {pre!r} is not supported by this converter; "
        "pass an mlx-lm model directory instead"
    )


def build_tokenizer(meta: dict[str, Any]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(tokenizers.Tokenizer, tokenizer_config.json, special_tokens_map.json) from GGUF metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    model_kind = _scalar(meta, "tokenizer.ggml.model")
    if model_kind != "gpt2":
        raise ModelError(
            f"the GGUF's tokenizer is {model_kind!r}; only byte-level BPE (gpt2) converts"
        )
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(merge.split(" ", 1)) for merge in meta["tokenizer.ggml.merges"]]
    types = [int(t) for t in meta["tokenizer.ggml.token_type"].tolist()]

    bpe = models.BPE(
        vocab={token: index for index, token in enumerate(tokens)},
        merges=merges,
        fuse_unk=False,
        byte_fallback=False,
    )
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = _pre_tokenizer(str(_scalar(meta, "tokenizer.ggml.pre", "default")))
    tokenizer.decoder = decoders.ByteLevel()
    # Control tokens (<|im_start|> ...) must never be split by BPE and are
    # skipped by decode(skip_special_tokens=True); user-defined ones only match whole.
    added = {
        index: AddedToken(tokens[index], special=(kind == _TOKEN_CONTROL), normalized=False)
        for index, kind in enumerate(types)
        if kind in (_TOKEN_CONTROL, _TOKEN_USER_DEFINED)
    }
    # They are in the vocab already, so they keep their ids.
    tokenizer.add_tokens([a for a in added.values() if not a.special])
    tokenizer.add_special_tokens([a for a in added.values() if a.special])

    def token(role: str) -> str | None:
        index = _scalar(meta, f"tokenizer.ggml.{role}_token_id")
        return tokens[int(index)] if index is not None and int(index) < len(tokens) else None

    bos, eos, unk = token("bos"), token("eos"), token("unknown")
    pad = token("padding") or eos
    add_bos = bool(_scalar(meta, "tokenizer.ggml.add_bos_token", False)) and bos is not None
    add_eos = bool(_scalar(meta, "tokenizer.ggml.add_eos_token", False)) and eos is not None
    tokenizer.post_processor = _post_processor(
        processors, tokens, bos if add_bos else None, eos if add_eos else None
    )

    special_map = {
        key: value
        for key, value in (
            ("bos_token", bos),
            ("eos_token", eos),
            ("unk_token", unk),
            ("pad_token", pad),
        )
        if value is not None
    }
    tokenizer_config: dict[str, Any] = {
        # The fast tokenizer reads everything from tokenizer.json.
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_map,
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(_scalar(meta, "llama.context_length", 2048)),
        "added_tokens_decoder": {
            str(index): {
                "content": a.content,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": a.special,
            }
            for index, a in added.items()
        },
    }
    template = _scalar(meta, "tokenizer.chat_template")
    if template:
        tokenizer_config["chat_template"] = template
    return tokenizer, tokenizer_config, special_map


def _post_processor(processors: Any, tokens: list[str], bos: str | None, eos: str | None) -> Any:
    if bos is None and eos is None:
        return processors.ByteLevel(trim_offsets=False)
    single = " ".join([*([f"{bos}:0"] if bos else []), "$A:0", *([f"{eos}:0"] if eos else [])])
    pair = " ".join(
        [single, *([f"{bos}:1"] if bos else []), "$B:1", *([f"{eos}:1"] if eos else [])]
    )
    specials = [(t, tokens.index(t)) for t in (bos, eos) if t]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


# ------------------------------------------------------------------- files


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False, sort_keys=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished staging dir to ``out_dir``, replacing an old one.

    Two renames, not one (Linux cannot swap directories with plain rename):
    a kill between them leaves no model at ``out_dir`` and the old one at
    ``.<name>.old-<pid>``, never a half-written one.
    """
    old = None
    if out_dir.exists() or out_dir.is_symlink():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out_dir, old)
    os.rename(staging, out_dir)
    fsync_dir(out_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
