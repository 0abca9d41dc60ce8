"""The learned router (services/ingest/route_model.py).

Most tests use a hashed bag-of-words stand-in for the embedder (numpy only,
deterministic, no MLX), so they run in seconds. The held-out accuracy test
loads the real MiniLM embedder (``-m model``).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from services.ingest import route_model as rm
from services.ingest.route import ROUTES, route_default, rule_route

# Measured with bench/bench_router.py on the reference machine: the shipped router
# gets 137/154 = 89.0% of the held-out set right (Wilson 95% CI 83-93%), rules alone
# 61.0%, the classifier alone 90.3%. Training is deterministic, so the only drift is
# float differences between BLAS builds (a near-tie item or two) and later seed-set
# edits: the bar is the measurement minus 4 points (6 items), still far above the
# rules-only level that a broken embedding or feature pipeline falls back to.
HELDOUT_BAR = 0.85
RULES_MARGIN = 0.15


class HashEmbedder:
    """Deterministic stand-in: signed hashed bag of words (and bigrams), unit length, 384 dims."""

    def __init__(self, dim: int = 384, salt: str = "") -> None:
        self.dim = dim
        self.salt = salt
        self.calls = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            words = re.findall(r"\w+|[^\w\s]", text.lower())
            for token in words + [a + " " + b for a, b in zip(words, words[1:], strict=False)]:
                h = int.from_bytes(hashlib.md5((self.salt + token).encode()).digest()[:4], "little")
                out[i, h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
            norm = np.linalg.norm(out[i])
            out[i] /= norm if norm else 1.0
        return out


def constant_weights(bias: list[float], threshold: float = 0.55) -> rm.RouterWeights:
    """Weights that ignore the input: class probabilities = softmax(bias)."""
    n_inputs = 384 + len(rm.feature_names())
    return rm.RouterWeights(classes=tuple(ROUTES), W=np.zeros((n_inputs, len(ROUTES))), b=np.array(bias, float),
                            mean=np.zeros(n_inputs), scale=np.ones(n_inputs), feature_names=rm.feature_names(),
                            dim=384, l2=0.01, threshold=threshold, seed_sha256="0" * 64, route_sha256="",
                            probe=np.zeros(384, np.float32))


@pytest.fixture(scope="module")
def seed() -> list[rm.Example]:
    return rm.load_examples(rm.SEED_FILE)


@pytest.fixture
def small_seed(tmp_path: Path, seed: list[rm.Example]) -> Path:
    """A 15-per-class slice of the seed file, so training tests stay fast."""
    rows = [e for c in ROUTES for e in [x for x in seed if x.label == c][:15]]
    path = tmp_path / "seed.jsonl"
    path.write_text("".join(json.dumps({"text": e.text, "label": e.label}) + "\n" for e in rows))
    return path


# -- the seed data -------------------------------------------------------------

def test_seed_files_are_valid_and_disjoint(seed: list[rm.Example]) -> None:
    heldout = rm.load_examples(rm.HELDOUT_FILE)
    assert len(seed) >= 400 and len(heldout) >= 150
    for examples, minimum in ((seed, 100), (heldout, 35)):
        counts = {c: sum(e.label == c for e in examples) for c in ROUTES}
        assert min(counts.values()) >= minimum, counts
    key = lambda e: re.sub(r"\s+", " ", e.text.strip().lower())  # noqa: E731
    assert len({key(e) for e in seed}) == len(seed)
    assert not {key(e) for e in seed} & {key(e) for e in heldout}


def test_load_examples_rejects_a_bad_label(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "hi", "label": "skip"}\n{"text": "x", "label": "maybe"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        rm.load_examples(path)


# -- training and persistence --------------------------------------------------

def test_training_is_deterministic(seed: list[rm.Example]) -> None:
    first = rm.train(seed, HashEmbedder(), seed_sha256="a" * 64)
    second = rm.train(seed, HashEmbedder(), seed_sha256="a" * 64)
    assert first.equals(second)
    assert first.l2 in rm.L2_GRID and first.threshold in rm.THRESHOLD_GRID
    assert first.W.shape == (384 + len(rm.feature_names()), len(ROUTES))


def test_save_load_round_trip_gives_identical_decisions(tmp_path: Path, seed: list[rm.Example]) -> None:
    embedder = HashEmbedder()
    weights = rm.fit_weights(embedder.embed([e.text.strip() for e in seed]), [e.text for e in seed],
                             [e.label for e in seed], l2_grid=(0.01,), folds=3, probe=np.ones(384) / 384 ** 0.5)
    path = rm.save(weights, tmp_path / "router" / "router-test.npz")
    assert not list(path.parent.glob(".*.tmp"))  # atomic write leaves no temp file behind
    loaded = rm.load(path)
    assert loaded.equals(weights) and loaded.meta == json.loads(json.dumps(weights.meta))
    before, after = rm.LearnedRouter(weights, embedder), rm.LearnedRouter(loaded, embedder)
    texts = [e.text for e in seed]
    vectors = embedder.embed([t.strip() for t in texts])
    assert [before(t, v) for t, v in zip(texts, vectors, strict=True)] == [after(t, v) for t, v in zip(texts, vectors, strict=True)]
    # Without a vector the router embeds the text itself, to the same decision.
    assert before(texts[3]) == before(texts[3], vectors[3])


def test_load_rejects_a_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a router weights file"):
        rm.load(path)


def test_load_or_train_caches_by_seed_sha_and_checks_the_embedder(tmp_path: Path, small_seed: Path) -> None:
    cache = tmp_path / "cache"
    first = rm.load_or_train(HashEmbedder(), seed_path=small_seed, cache_dir=cache)
    assert first.info["source"] == "trained"
    path = cache / f"router-{rm.file_sha256(small_seed)[:12]}.npz"
    assert path.is_file() and first.info["path"] == str(path)

    second = rm.load_or_train(HashEmbedder(), seed_path=small_seed, cache_dir=cache)
    assert second.info["source"] == "cache" and second.weights.equals(first.weights)

    other = rm.load_or_train(HashEmbedder(salt="another model"), seed_path=small_seed, cache_dir=cache)
    assert other.info["source"] == "trained" and other.info["why"] == "embedder changed"

    with small_seed.open("a") as handle:  # a new seed file is a new cache key
        handle.write(json.dumps({"text": "My cat is called Tofu.", "label": "both"}) + "\n")
    third = rm.load_or_train(HashEmbedder(), seed_path=small_seed, cache_dir=cache)
    assert third.info["source"] == "trained" and len(list(cache.glob("router-*.npz"))) == 2


# -- decisions ------------------------------------------------------------------

OPEN_TEXT = "Sam and I got married last spring in the mountains"


def test_abstains_to_both_below_the_threshold() -> None:
    assert rule_route(OPEN_TEXT) is None
    vector = np.zeros(384, np.float32)

    uniform = rm.LearnedRouter(constant_weights([0, 0, 0, 0]))
    decision = uniform(OPEN_TEXT, vector)
    assert decision.route == "both" and decision.score == pytest.approx(0.25)
    assert decision.reason == "classifier unsure (p=0.25): both"

    # p(lora) = 0.5 exactly: below 0.55 abstain, above 0.45 trust it.
    half = [np.log(3.0), 0.0, 0.0, 0.0]
    assert rm.LearnedRouter(constant_weights(half, 0.55))(OPEN_TEXT, vector).route == "both"
    trusted = rm.LearnedRouter(constant_weights(half, 0.55), threshold=0.45)(OPEN_TEXT, vector)
    # ... but not for a route recall never sees: lora and skip need UNRECALLABLE_MIN_P (0.6).
    assert trusted.route == "both" and trusted.reason.startswith("classifier: lora (p=0.50) is below 0.6")
    half_rag = [0.0, np.log(3.0), 0.0, 0.0]
    rag = rm.LearnedRouter(constant_weights(half_rag, 0.55), threshold=0.45)(OPEN_TEXT, vector)
    assert rag.route == "rag" and rag.reason == "classifier: rag (p=0.50)"
    sure = [np.log(9.0), 0.0, 0.0, 0.0]  # p(lora) = 0.75
    confident = rm.LearnedRouter(constant_weights(sure, 0.55))(OPEN_TEXT, vector)
    assert confident.route == "lora" and confident.reason == "classifier: lora (p=0.75)"


@pytest.mark.parametrize(("text", "route", "reason"), [
    ("def add(a, b):\n    return a + b", "rag", "verbatim: code or structured data"),
    ("```\nmake -j8\n```", "rag", "verbatim: code or structured data"),
    ("the docs are at https://example.com/guide", "rag", "verbatim: contains a link"),
    ('{"user": "ana", "roles": ["admin", "dev"]}', "rag", "verbatim: code or structured data"),
    ("thanks!", "skip", "small talk"),
    ("good morning", "skip", "small talk"),
    ("", "skip", "empty"),
    ("   [EMAIL]  ", "skip", "empty"),
])
def test_rules_override_the_classifier(text: str, route: str, reason: str) -> None:
    always_lora = rm.LearnedRouter(constant_weights([20.0, 0.0, 0.0, 0.0]))  # p(lora) ~ 1
    decision = always_lora(text, np.zeros(384, np.float32))
    assert (decision.route, decision.reason) == (route, reason)
    assert always_lora(OPEN_TEXT, np.zeros(384, np.float32)).route == "lora"


def test_needs_a_vector_or_an_embedder_of_the_right_width() -> None:
    router = rm.LearnedRouter(constant_weights([0, 0, 0, 0]))
    assert router("hi").route == "skip"  # rules need no vector
    with pytest.raises(ValueError, match="needs the text's vector"):
        router(OPEN_TEXT)
    with pytest.raises(ValueError, match="384-dim"):
        router(OPEN_TEXT, np.zeros(128, np.float32))


def test_weights_for_other_features_are_refused() -> None:
    weights = constant_weights([0, 0, 0, 0])
    stale = rm.RouterWeights(**{**weights.__dict__, "feature_names": ("n_words",)})
    with pytest.raises(ValueError, match="other surface features"):
        rm.LearnedRouter(stale)


# -- the real model -------------------------------------------------------------

@pytest.fixture(scope="module")
def embedder():  # noqa: ANN201
    from services.ingest.embed import Embedder, EmbedderUnavailable

    try:
        return Embedder()
    except EmbedderUnavailable as exc:
        pytest.fail(str(exc))


@pytest.mark.model
def test_heldout_accuracy_of_the_shipped_router(embedder) -> None:  # noqa: ANN001
    started = time.perf_counter()
    router = rm.load_or_train(embedder)  # cached weights if bench/bench_router.py or the daemon made them
    heldout = rm.load_examples(rm.HELDOUT_FILE)
    texts, gold = [e.text for e in heldout], [e.label for e in heldout]
    vectors = rm.embed_texts(embedder, texts)
    predicted = [router(t, v).route for t, v in zip(texts, vectors, strict=True)]
    accuracy = float(np.mean([p == g for p, g in zip(predicted, gold, strict=True)]))
    rules = float(np.mean([route_default(t).route == g for t, g in zip(texts, gold, strict=True)]))
    assert accuracy >= HELDOUT_BAR, f"held-out accuracy {accuracy:.3f} < {HELDOUT_BAR} ({router.info})"
    assert accuracy >= rules + RULES_MARGIN, f"router {accuracy:.3f} vs rules alone {rules:.3f}"
    # The cached weights decide exactly as the ones in memory.
    path = Path(router.info["path"]) if router.info["path"].endswith(".npz") else None
    if path is not None:
        reloaded = rm.LearnedRouter(rm.load(path), embedder)
        assert [reloaded(t, v) for t, v in zip(texts, vectors, strict=True)] == [router(t, v) for t, v in zip(texts, vectors, strict=True)]
    print(f"held-out accuracy {accuracy:.3f} (rules {rules:.3f}); router {router.info['source']} "
          f"in {router.info['seconds']} s; test {time.perf_counter() - started:.1f} s")


@pytest.mark.parametrize("text", [
    "My mentor Hollis taught me to always write the tests before the code.",
    "My therapist suggested I keep a gratitude journal.",
    "My piano teacher says I should practise scales for twenty minutes a day.",
])
def test_what_someone_in_the_users_life_said_is_recallable(text: str) -> None:
    # Advice reads like a style instruction (the classifier had said `lora`), but it is a fact
    # about a person the user may ask about: the rules keep it for recall and training.
    decision = rule_route(text)
    assert decision is not None and decision.route == "both", decision
