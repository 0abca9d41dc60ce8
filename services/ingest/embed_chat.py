"""The fallback embedder: sentence vectors from the embedded chat model's own hidden states.

Used by ingest only when MiniLM (services.ingest.embed) does not load: it
needs nothing beyond the chat model that chat serves, so memory keeps working
offline on a machine where the embedding package is missing or broken. It is
worse and slower than MiniLM (``bench/bench_retrieval.py --embedder
chat-model``; README, "Memory"), so it is the fallback, not the goal.

The recipe, chosen by measurement on the retrieval benchmark's paraphrase
set (recall@1 of the raw embedder + index, 132 questions; every layer, mean /
position-weighted / last-token pooling, with and without a prompt):

- the text goes into a PromptEOL template, ``This sentence : "<text>" means
  in one word:"``, built from token ids (prefix + the text's first
  :data:`MAX_TOKENS` tokens + suffix, so a long text never loses the
  template's end); mean pooling of plain text reached at best 0.41 recall@1,
  the template's last token 0.60;
- the hidden state of that last token after :data:`LAYERS` of the 30
  decoder blocks of the *base* model (never an adapter: adapters change every
  night, the index must not); the last blocks and the final norm add nothing;
- minus the mean of the same states over a fixed reference corpus (the
  router's seed texts, services/ingest/seed/routes.jsonl), then L2-normalised.
  Decoder states share a large common direction that makes every pair of
  texts look alike (cosines near 1); centring removes it (0.60 -> 0.76
  recall@1) and puts unrelated texts near 0, where the near-duplicate and
  ``recall_min_score`` thresholds made for MiniLM expect them. The mean is
  computed once per model and cached in ``models/.cache/embedder/``.

Batches are padded on the right: with the causal mask no real token attends
to padding, so padding does not change a vector. The identity recorded in the
memory index names the model, a fingerprint of its weights, this recipe and
the reference corpus: changing any of them makes ingest rebuild the index
instead of mixing vectors.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from services.common.blas import preload_openblas

_BLAS = preload_openblas()  # before libmlx.so loads

import mlx.core as mx  # noqa: E402

from services.common.logging import get_logger  # noqa: E402
from services.common.paths import resolve_model_dir  # noqa: E402
from services.ingest.embed import EmbedderUnavailable  # noqa: E402

log = get_logger("ingest.embed_chat")

NAME = "chat-model"
PROMPT = ('This sentence : "', '" means in one word:"')
LAYERS = 28  # decoder blocks run; the last token's state after the last of them is the vector
MAX_TOKENS = 256  # of the text itself; the template's tokens come on top
BATCH_SIZE = 16
RECIPE = f"eol-last-l{LAYERS}-centred-v1"


def model_fingerprint(model_dir: Path) -> str:
    """12 hex digits that change when the model's weights do (without hashing 100+ MB)."""
    meta = model_dir / "circadian_model.json"
    try:
        sha = json.loads(meta.read_text())["sha256"]  # the source file's sha256, written by `circ model install`
        if isinstance(sha, str) and sha:
            return sha[:12]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")) + [model_dir / "config.json"]:
        try:
            stat = path.stat()
        except OSError:
            continue
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:12]


def reference_texts() -> tuple[list[str], str]:
    """The centring corpus (the router's seed texts, stripped as ingest embeds them) and its sha256[:8]."""
    from services.ingest.route_model import SEED_FILE, load_examples

    texts = [e.text.strip() for e in load_examples(SEED_FILE)]
    return texts, hashlib.sha256("\n\0".join(texts).encode()).hexdigest()[:8]


class ChatModelEmbedder:
    """``embed(texts)`` -> float32 unit vectors (n, hidden size) from the chat model's base weights."""

    name = NAME
    fallback_reason = ""

    def __init__(self, model: str | Path, *, batch_size: int = BATCH_SIZE, max_tokens: int = MAX_TOKENS,
                 cache_dir: Path | None = None) -> None:
        from services.lib.models.validate import ModelError, validate_model_dir

        self.model_dir = resolve_model_dir(str(model))
        self.batch_size = max(1, batch_size)
        self.max_tokens = max(1, max_tokens)
        self.blas = _BLAS
        try:
            validate_model_dir(self.model_dir)
        except ModelError as exc:
            raise EmbedderUnavailable(str(exc)) from None
        try:
            from mlx_lm.models.base import create_attention_mask
            from tokenizers import Tokenizer

            from services.lib.models.compute import load_for_serving

            model_obj, _tokenizer, compute = load_for_serving(self.model_dir, "auto")
            inner = model_obj.model
            blocks = list(inner.layers)
            if len(blocks) < LAYERS:
                raise ValueError(f"the recipe needs {LAYERS} decoder blocks, the model has {len(blocks)}")
            self.layers = LAYERS
            self._embed_tokens = inner.embed_tokens
            self._blocks = blocks[:LAYERS]
            self._mask = create_attention_mask
            self.dim = int(model_obj.args.hidden_size)
            self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
            self.tokenizer.no_padding()
            self.tokenizer.no_truncation()
            self._prefix = self.tokenizer.encode(PROMPT[0], add_special_tokens=False).ids
            self._suffix = self.tokenizer.encode(PROMPT[1], add_special_tokens=False).ids
            self.pad_id = int(json.loads((self.model_dir / "config.json").read_text()).get("pad_token_id") or 0)
            self.compute = compute
            del model_obj  # the LM head and the unused blocks go with it
        except Exception as exc:  # mlx-lm missing, unknown architecture, corrupt weights
            raise EmbedderUnavailable(f"the chat model in {self.model_dir} does not load as an embedder "
                                      f"({type(exc).__name__}: {exc}): repair it with `bin/circ model install`") from exc
        texts, reference_sha = reference_texts()
        self.identity = (f"{NAME}:{self.model_dir.name}@{model_fingerprint(self.model_dir)}:{RECIPE}"
                         f"-ref{reference_sha}")
        self.description = (f"the chat model {self.model_dir.name} (fallback: its state after block {LAYERS} "
                            f"at a prompt's last token, centred), {self.dim} dims")
        self._known: dict[str, np.ndarray] = {}  # uncentred states of the reference texts (the router embeds them)
        self.centre = self._load_centre(texts, cache_dir)

    # -- the centre -------------------------------------------------------------------
    def _cache_path(self, cache_dir: Path | None) -> Path:
        from services.common.paths import models_dir

        directory = cache_dir or models_dir() / ".cache" / "embedder"
        safe = self.identity.replace(":", "_").replace("@", "_").replace("/", "_")
        return directory / f"{safe}.npy"

    def _load_centre(self, texts: list[str], cache_dir: Path | None) -> np.ndarray:
        from services.common.atomic import write_atomic

        path = self._cache_path(cache_dir)
        try:
            centre = np.load(path, allow_pickle=False)
            if centre.shape == (self.dim,) and centre.dtype == np.float32 and np.isfinite(centre).all():
                return centre
        except (OSError, ValueError):
            pass
        raw = self._states(texts)
        self._known = dict(zip(texts, raw, strict=True))
        centre = raw.mean(axis=0).astype(np.float32)
        buffer = io.BytesIO()
        np.save(buffer, centre, allow_pickle=False)
        try:
            write_atomic(path, buffer.getvalue(), mode=0o644)
        except OSError as exc:  # a read-only models dir: recompute at the next start
            log.warning("embed_chat.centre_not_cached", path=str(path), error=str(exc))
        log.info("embed_chat.centre_computed", texts=len(texts), path=str(path))
        return centre

    # -- embedding --------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return self._prefix + self.tokenizer.encode(text, add_special_tokens=False).ids[: self.max_tokens] + self._suffix

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors (n, dim) float32, in the order of ``texts``."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings; wrap a single text in a list")
        vectors = self._states(list(texts)) - self.centre
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)

    def _states(self, texts: list[str]) -> np.ndarray:
        """The last token's state after block LAYERS, uncentred: (n, dim) float32."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        todo = []
        for i, text in enumerate(texts):
            known = self._known.get(text)
            if known is not None:
                out[i] = known
            else:
                todo.append(i)
        encoded = {i: self._ids(texts[i]) for i in todo}
        order = sorted(todo, key=lambda i: -len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            width = len(encoded[rows[0]])
            ids = np.full((len(rows), width), self.pad_id, dtype=np.int32)
            for j, i in enumerate(rows):
                ids[j, :len(encoded[i])] = encoded[i]
            last = mx.array([len(encoded[i]) - 1 for i in rows])
            out[rows] = np.asarray(self._last_state(mx.array(ids), last), dtype=np.float32)
        return out

    def _last_state(self, ids: mx.array, last: mx.array) -> mx.array:
        h = self._embed_tokens(ids)
        mask = self._mask(h, None)  # causal: right padding never reaches a real token
        for block in self._blocks:
            h = block(h, mask)
        states = h[mx.arange(ids.shape[0]), last]
        mx.eval(states)
        return states

    def token_count(self, text: str) -> int:
        """Tokens of ``text`` the model sees (at most ``max_tokens``; the template's come on top)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids[: self.max_tokens])
