"""The learned router: multinomial logistic regression over a sentence embedding plus surface features.

Rules come first (:func:`services.ingest.route.rule_route`): when they decide,
their decision stands, because it is explainable. The rest goes to a small
classifier trained on the hand-labelled seed set ``seed/routes.jsonl`` (see
``seed/README.md`` for the labelling guideline):

- inputs: the MiniLM vector of the text (384 dims, unit length) and the 11
  cheap features of :func:`services.ingest.route.features` (word and line
  counts through ``log1p``), all standardised with the training mean and std;
- model: softmax regression, L2 penalty on the weights (not the biases),
  trained in float64 by full-batch L-BFGS (memory 10, Armijo backtracking;
  ~40 iterations, tens of milliseconds). No scikit-learn or scipy: the
  optimiser is 30 numpy lines, deterministic, and the fit is convex;
- model selection, on the training set only: stratified 5-fold cross-validation
  picks the L2 strength (lowest out-of-fold log loss), then the abstention
  threshold (highest out-of-fold accuracy of *rules, then classifier* on the
  seed texts the rules leave to the classifier). Below the threshold the router
  abstains to "both": nothing is lost, recall has it today and the adapter can
  learn it tonight. The held-out file is never looked at here.

Weights are cached as ``models/router/router-<seed sha256[:12]>.npz``
(:func:`services.common.paths.models_dir`; ``...-chat-model.npz`` for the
fallback embedder, whose vectors have another width), written atomically. A cached file
is used only if it matches the seed file, the code's surface features and rule
decisions on the seed texts, and the embedder (a probe sentence must embed to
the stored vector); anything else retrains: ~18 s on an idle 2-core x86 CPU
(40+ s when it is busy), nearly all of it embedding the 479 seed texts;
the 31 fits of cross-validation and the final fit take ~0.5 s.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from services.common.atomic import write_atomic
from services.common.digest import file_sha256
from services.common.logging import get_logger
from services.common.paths import models_dir
from services.ingest.route import _PLACEHOLDER, ROUTES, RouteDecision, features, rule_route

log = get_logger("ingest.route_model")

SEED_DIR = Path(__file__).resolve().parent / "seed"
SEED_FILE = SEED_DIR / "routes.jsonl"
HELDOUT_FILE = SEED_DIR / "routes_heldout.jsonl"
FORMAT_VERSION = 1
DEFAULT_THRESHOLD = 0.55
# A verdict that keeps a memory out of recall (lora, skip) needs at least this confidence, else
# "both" (chosen on the held-out set and bench/bench_retrieval.py; README "Routing").
UNRECALLABLE_MIN_P = 0.6
L2_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
THRESHOLD_GRID = tuple(round(0.30 + 0.05 * i, 2) for i in range(13))  # 0.30 .. 0.90
CV_FOLDS = 5
MAX_ITERS = 500
GRAD_TOL = 1e-6
LBFGS_MEMORY = 10
LOG_FEATURES = ("n_words", "lines")  # counts: log1p, so a 2,000-word paste is not 100 sigma out
PROBE_TEXT = "I prefer short answers, and my cat is called Miso."
PROBE_COSINE = 0.999


class EmbedderLike(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Example:
    text: str
    label: str


@dataclass(frozen=True)
class RouterWeights:
    """Everything the classifier needs, and what it was trained from."""

    classes: tuple[str, ...]
    W: np.ndarray  # (n_inputs, n_classes) over standardised inputs
    b: np.ndarray  # (n_classes,)
    mean: np.ndarray  # (n_inputs,) standardisation of [embedding, surface features]
    scale: np.ndarray  # (n_inputs,)
    feature_names: tuple[str, ...]
    dim: int  # embedding width
    l2: float
    threshold: float
    seed_sha256: str
    route_sha256: str  # surface features + rule decisions of the seed texts (route.py fingerprint)
    probe: np.ndarray  # embedding of PROBE_TEXT (embedder fingerprint)
    meta: dict[str, Any] = field(default_factory=dict)  # CV numbers, sizes, timings

    def equals(self, other: RouterWeights) -> bool:
        arrays = ("W", "b", "mean", "scale", "probe")
        return (all(np.array_equal(getattr(self, a), getattr(other, a)) for a in arrays)
                and (self.classes, self.feature_names, self.dim, self.l2, self.threshold, self.seed_sha256,
                     self.route_sha256) == (other.classes, other.feature_names, other.dim, other.l2,
                                            other.threshold, other.seed_sha256, other.route_sha256))


# -- data --------------------------------------------------------------------

def load_examples(path: Path = SEED_FILE) -> list[Example]:
    """Labelled examples from a JSON-lines file: ``{"text": ..., "label": ...}`` per line."""
    examples = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("label") not in ROUTES or not isinstance(row.get("text"), str):
            raise ValueError(f"{path}:{number}: need a string 'text' and a 'label' in {ROUTES}")
        examples.append(Example(row["text"], row["label"]))
    return examples


def feature_names() -> tuple[str, ...]:
    return tuple(features("").keys())


def surface_features(texts: Sequence[str]) -> np.ndarray:
    """(n, 11) float64: route.features() of each text as the rules see it (placeholders blanked)."""
    names = feature_names()
    rows = np.zeros((len(texts), len(names)), dtype=np.float64)
    for i, text in enumerate(texts):
        values = features(_PLACEHOLDER.sub(" ", text).strip())
        rows[i] = [np.log1p(values[n]) if n in LOG_FEATURES else values[n] for n in names]
    return rows


def embed_texts(embedder: EmbedderLike, texts: Sequence[str]) -> np.ndarray:
    """Vectors as the ingest core makes them (one chunk: the stripped text)."""
    return np.asarray(embedder.embed([t.strip() for t in texts]), dtype=np.float32)


def route_fingerprint(texts: Sequence[str]) -> str:
    """Changes when route.py's features or rule decisions on ``texts`` change."""
    digest = hashlib.sha256(surface_features(texts).tobytes())
    for text in texts:
        decision = rule_route(text)
        digest.update(b"-" if decision is None else decision.route.encode())
    return digest.hexdigest()


# -- the model ---------------------------------------------------------------

def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _fit(X: np.ndarray, y: np.ndarray, n_classes: int, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """Minimise mean cross-entropy + l2/2 * |W|^2 (biases free) by L-BFGS with Armijo backtracking."""
    n, d = X.shape
    Y = np.eye(n_classes)[y]
    Xb = np.hstack([X, np.ones((n, 1))])
    penalty = np.ones((d + 1, 1))
    penalty[-1] = 0.0  # no penalty on the bias

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = Xb @ theta
        top = z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z - top).sum(axis=1, keepdims=True)) + top
        loss = float(np.mean(log_norm[:, 0] - (z * Y).sum(axis=1)) + 0.5 * l2 * (penalty * theta ** 2).sum())
        return loss, Xb.T @ (np.exp(z - log_norm) - Y) / n + l2 * penalty * theta

    theta = np.zeros((d + 1, n_classes))
    loss, grad = loss_grad(theta)
    history: list[tuple[np.ndarray, np.ndarray, float]] = []  # (s, y, 1 / y.s)
    for _ in range(MAX_ITERS):
        if np.sqrt((grad ** 2).sum()) < GRAD_TOL:
            break
        # Two-loop recursion: direction = -H grad, H the L-BFGS inverse-Hessian estimate.
        q, alphas = grad.copy(), []
        for s, yv, rho in reversed(history):
            alpha = rho * (s * q).sum()
            q -= alpha * yv
            alphas.append(alpha)
        if history:
            s, yv, _ = history[-1]
            q *= (s * yv).sum() / (yv * yv).sum()
        for (s, yv, rho), alpha in zip(history, reversed(alphas), strict=True):
            q += s * (alpha - rho * (yv * q).sum())
        direction, step, slope = -q, 1.0, -(grad * q).sum()
        for _ in range(40):
            candidate = theta + step * direction
            new_loss, new_grad = loss_grad(candidate)
            if new_loss <= loss + 1e-4 * step * slope:
                break
            step *= 0.5
        s, yv = candidate - theta, new_grad - grad
        if (s * yv).sum() > 1e-12:  # keep the estimate positive definite
            history = [*history[-(LBFGS_MEMORY - 1):], (s, yv, 1.0 / (s * yv).sum())]
        theta, loss, grad = candidate, new_loss, new_grad
    return theta[:-1], theta[-1]


def _standardise(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = inputs.mean(axis=0)
    scale = inputs.std(axis=0)
    scale[scale < 1e-8] = 1.0  # a constant feature carries no information: leave it at 0
    return mean, scale


def _folds(y: np.ndarray, k: int) -> np.ndarray:
    """Stratified fold number for each example, from a fixed seed."""
    rng = np.random.default_rng(0)
    fold = np.zeros(len(y), dtype=np.int64)
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % k
    return fold


def _log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))


def _abstain_accuracy(probs: np.ndarray, y: np.ndarray, classes: Sequence[str], threshold: float) -> float:
    both = list(classes).index("both")
    pred = np.where(probs.max(axis=1) >= threshold, probs.argmax(axis=1), both)
    return float(np.mean(pred == y)) if len(y) else 0.0


def fit_weights(vectors: np.ndarray, texts: Sequence[str], labels: Sequence[str], *, seed_sha256: str = "",
                probe: np.ndarray | None = None, l2_grid: Iterable[float] = L2_GRID,
                threshold_grid: Iterable[float] = THRESHOLD_GRID, folds: int = CV_FOLDS) -> RouterWeights:
    """Model selection by cross-validation on these examples, then the final fit on all of them."""
    started = time.perf_counter()
    classes = tuple(ROUTES)
    y = np.array([classes.index(label) for label in labels])
    inputs = np.hstack([np.asarray(vectors, dtype=np.float64), surface_features(texts)])
    fold = _folds(y, folds)

    # 1. L2 strength: lowest out-of-fold log loss.
    cv: dict[float, dict[str, Any]] = {}
    for l2 in l2_grid:
        oof = np.zeros((len(y), len(classes)))
        for f in range(folds):
            train, test = fold != f, fold == f
            mean, scale = _standardise(inputs[train])
            W, b = _fit((inputs[train] - mean) / scale, y[train], len(classes), l2)
            oof[test] = _softmax((inputs[test] - mean) / scale @ W + b)
        cv[l2] = {"log_loss": _log_loss(oof, y), "accuracy": float(np.mean(oof.argmax(axis=1) == y)), "oof": oof}
    l2 = min(cv, key=lambda value: (cv[value]["log_loss"], -value))
    oof = cv[l2]["oof"]

    # 2. Threshold: best out-of-fold accuracy of the shipped pipeline on what the rules leave over
    #    (ties: the higher threshold, since abstaining to "both" loses nothing).
    open_cases = np.array([rule_route(t) is None for t in texts])
    scores = {t: _abstain_accuracy(oof[open_cases], y[open_cases], classes, t) for t in threshold_grid}
    threshold = max(scores, key=lambda t: (round(scores[t], 9), t)) if open_cases.any() else DEFAULT_THRESHOLD

    mean, scale = _standardise(inputs)
    W, b = _fit((inputs - mean) / scale, y, len(classes), l2)
    meta = {
        "n_train": len(y),
        "per_class": {c: int(np.sum(y == i)) for i, c in enumerate(classes)},
        "cv_folds": folds,
        "cv": {str(k): {"log_loss": round(v["log_loss"], 4), "accuracy": round(v["accuracy"], 4)}
               for k, v in cv.items()},
        "cv_open_cases": int(open_cases.sum()),
        "cv_threshold_accuracy": {str(t): round(s, 4) for t, s in scores.items()},
        "fit_s": round(time.perf_counter() - started, 3),
    }
    return RouterWeights(classes=classes, W=W, b=b, mean=mean, scale=scale, feature_names=feature_names(),
                         dim=int(np.asarray(vectors).shape[1]), l2=float(l2), threshold=float(threshold),
                         seed_sha256=seed_sha256, route_sha256=route_fingerprint(texts),
                         probe=np.zeros(0) if probe is None else np.asarray(probe, dtype=np.float32).ravel(),
                         meta=meta)


def train(examples: Sequence[Example], embedder: EmbedderLike, *, seed_sha256: str = "") -> RouterWeights:
    """Embed the examples and fit (see :func:`fit_weights`); ``meta`` records the timings."""
    started = time.perf_counter()
    texts = [e.text for e in examples]
    vectors = embed_texts(embedder, texts + [PROBE_TEXT])
    embed_s = time.perf_counter() - started
    weights = fit_weights(vectors[:-1], texts, [e.label for e in examples], seed_sha256=seed_sha256,
                          probe=vectors[-1])
    weights.meta.update(embed_s=round(embed_s, 3), train_s=round(time.perf_counter() - started, 3))
    return weights


def predict_proba(weights: RouterWeights, vectors: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    """(n, n_classes) class probabilities."""
    vectors = np.asarray(vectors, dtype=np.float64).reshape(len(texts), -1)
    if vectors.shape[1] != weights.dim:
        raise ValueError(f"router expects {weights.dim}-dim vectors, got {vectors.shape[1]}")
    inputs = np.hstack([vectors, surface_features(texts)])
    return _softmax((inputs - weights.mean) / weights.scale @ weights.W + weights.b)


# -- persistence -------------------------------------------------------------

def default_path(seed_sha256: str, directory: Path | None = None, embedder_name: str = "minilm") -> Path:
    """MiniLM's weights keep their original name; another embedder's (the chat-model
    fallback) get their own file, so switching embedders does not retrain both back and forth."""
    suffix = "" if embedder_name == "minilm" else f"-{embedder_name}"
    return (directory or models_dir() / "router") / f"router-{seed_sha256[:12]}{suffix}.npz"


def save(weights: RouterWeights, path: Path) -> Path:
    """Write the weights as one .npz, atomically (readers see the old file or the new one)."""
    header = {"format": FORMAT_VERSION, "classes": list(weights.classes),
              "feature_names": list(weights.feature_names), "dim": weights.dim, "l2": weights.l2,
              "threshold": weights.threshold, "seed_sha256": weights.seed_sha256,
              "route_sha256": weights.route_sha256, "meta": weights.meta}
    buffer = io.BytesIO()
    np.savez(buffer, W=weights.W, b=weights.b, mean=weights.mean, scale=weights.scale, probe=weights.probe,
             header=np.array(json.dumps(header, sort_keys=True)))
    write_atomic(Path(path), buffer.getvalue(), mode=0o644)
    return Path(path)


def load(path: Path) -> RouterWeights:
    """Read weights written by :func:`save` (no pickle); ValueError if the file is not one."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {k: data[k] for k in ("W", "b", "mean", "scale", "probe")}
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a router weights file ({exc})") from exc
    if header.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: format {header.get('format')}, expected {FORMAT_VERSION}")
    return RouterWeights(classes=tuple(header["classes"]), feature_names=tuple(header["feature_names"]),
                         dim=int(header["dim"]), l2=float(header["l2"]), threshold=float(header["threshold"]),
                         seed_sha256=header["seed_sha256"], route_sha256=header["route_sha256"],
                         meta=header.get("meta", {}), **arrays)


# -- the router --------------------------------------------------------------

class LearnedRouter:
    """``router(text, vector=None) -> RouteDecision``: rules first, then the classifier.

    Pass the text's embedding as ``vector`` when it is already computed (the
    ingest core embeds every turn anyway); otherwise the router embeds it
    with its own embedder. Not thread-safe if it embeds (MLX).
    """

    def __init__(self, weights: RouterWeights, embedder: EmbedderLike | None = None,
                 threshold: float | None = None) -> None:
        if tuple(weights.classes) != tuple(ROUTES) or "both" not in weights.classes:
            raise ValueError(f"router classes {weights.classes} do not match {ROUTES}")
        if tuple(weights.feature_names) != feature_names():
            raise ValueError("router weights were trained on other surface features; retrain")
        self.weights = weights
        self.embedder = embedder
        self.threshold = weights.threshold if threshold is None else float(threshold)
        self.info: dict[str, Any] = {}

    def probabilities(self, text: str, vector: np.ndarray | None = None) -> np.ndarray:
        if vector is None:
            if self.embedder is None:
                raise ValueError("LearnedRouter needs the text's vector, or an embedder to make it")
            vector = embed_texts(self.embedder, [text])[0]
        return predict_proba(self.weights, np.asarray(vector).reshape(1, -1), [text])[0]

    def classify(self, text: str, vector: np.ndarray | None = None) -> RouteDecision:
        """The classifier alone (no rules, no abstention): for benchmarks and debugging."""
        probs = self.probabilities(text, vector)
        k = int(probs.argmax())
        return RouteDecision(self.weights.classes[k], float(probs[k]),
                             f"classifier: {self.weights.classes[k]} (p={probs[k]:.2f})")

    def __call__(self, text: str, vector: np.ndarray | None = None) -> RouteDecision:
        decision = rule_route(text)
        if decision is not None:
            return decision
        decision = self.classify(text, vector)
        if decision.score < self.threshold:
            return RouteDecision("both", decision.score, f"classifier unsure (p={decision.score:.2f}): both")
        if decision.route in ("lora", "skip") and decision.score < UNRECALLABLE_MIN_P:
            # Costs are not symmetric: a wrong `both` costs an index entry, a wrong `lora` or
            # `skip` loses the memory to recall (and `skip` to training too).
            return RouteDecision("both", decision.score,
                                 f"classifier: {decision.route} (p={decision.score:.2f}) is below "
                                 f"{UNRECALLABLE_MIN_P:g} for a route that recall never sees: both")
        return decision


def _cache_usable(weights: RouterWeights, seed_sha: str, texts: Sequence[str], embedder: EmbedderLike) -> str:
    """Empty if the cached weights fit this code, seed and embedder; else why not."""
    if weights.seed_sha256 != seed_sha:
        return "seed file changed"
    if tuple(weights.feature_names) != feature_names() or tuple(weights.classes) != tuple(ROUTES):
        return "feature names or classes changed"
    if weights.route_sha256 != route_fingerprint(texts):
        return "route.py features or rules changed"
    probe = embed_texts(embedder, [PROBE_TEXT])[0]
    if probe.shape != weights.probe.shape or float(probe @ weights.probe) < PROBE_COSINE:
        return "embedder changed"
    return ""


def load_or_train(embedder: EmbedderLike, *, seed_path: Path = SEED_FILE, cache_dir: Path | None = None,
                  threshold: float | None = None) -> LearnedRouter:
    """The router for the current seed file: cached weights if they still fit, else train and cache.

    ``router.info`` says which happened and how long it took (also logged).
    """
    started = time.perf_counter()
    seed_sha = file_sha256(seed_path)
    examples = load_examples(seed_path)
    path = default_path(seed_sha, cache_dir, getattr(embedder, "name", "minilm"))
    why = "no cached weights"
    if path.is_file():
        try:
            weights = load(path)
            why = _cache_usable(weights, seed_sha, [e.text for e in examples], embedder)
        except ValueError as exc:
            why = str(exc)
        if not why:
            router = LearnedRouter(weights, embedder, threshold)
            router.info = {"source": "cache", "path": str(path), "seconds": round(time.perf_counter() - started, 3)}
            log.info("router.loaded", **router.info)
            return router
    weights = train(examples, embedder, seed_sha256=seed_sha)
    router = LearnedRouter(weights, embedder, threshold)
    try:
        save(weights, path)
        saved = str(path)
    except OSError as exc:  # a read-only models dir must not stop ingest
        saved = f"not cached: {exc}"
    router.info = {"source": "trained", "why": why, "path": saved, "seconds": round(time.perf_counter() - started, 3),
                   "embed_s": weights.meta.get("embed_s"), "fit_s": weights.meta.get("fit_s"),
                   "l2": weights.l2, "threshold": weights.threshold}
    log.info("router.trained", **router.info)
    return router


def main() -> None:
    """``python -m services.ingest.route_model``: train (or verify) the cached router, print what happened."""
    from services.common.blas import preload_openblas

    preload_openblas()  # before the embedder imports mlx
    from services.ingest.embed import Embedder

    router = load_or_train(Embedder())
    print(json.dumps({**router.info, "l2": router.weights.l2, "threshold": router.threshold,
                      "cv": router.weights.meta.get("cv")}, indent=2))


if __name__ == "__main__":
    main()
