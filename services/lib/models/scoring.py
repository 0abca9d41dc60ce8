"""Deterministic quality metrics of a served model, with whatever adapter it has on.

Socket-free and shared by the evaluator's gates and the benchmark, so both
report the same numbers. Every metric is deterministic: log-likelihood
scoring has no sampling, and generation is greedy (argmax, as chat serves at
temperature 0).

How a question is put to the model: exactly as chat does, through the chat
template with the system prompt chat uses (``ChatConfig.system_prompt`` by
default) and the assistant turn opened; an answer is scored as the start of
the assistant's reply. Answer tokens are the answer text tokenized on its own
(no end-of-turn token): the reply "Paris" scores the same whether the model
would then stop or go on, so a terse gold answer is not penalized against a
chatty model's habit of writing a sentence.

Multiple choice (:func:`mc_accuracy`): the gold answer wins when its score
strictly beats every distractor's. ``normalize``: ``"sum"`` (default, see
:data:`DEFAULT_NORMALIZE`) compares the total log-likelihood, i.e. the
probability of replying exactly that; ``"mean"`` the mean per token;
``"chars"`` the total per character (lm-eval's length normalization).

Speed: on a CPU the cost is the number of tokens pushed through the model.
:class:`Scorer` computes the prompt prefix shared by a batch of questions
(system prompt, template) once, keeps its KV cache, feeds each question's
own tokens once, and scores all of an item's options in one batched call on
copies of that cache. :func:`answer_logprob` is the plain single-pass form
(the two agree to float rounding, ~1e-5).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.common.blas import preload_openblas

preload_openblas()  # before the first mlx import (services.common.blas)

import mlx.core as mx  # noqa: E402
from mlx_lm.models.cache import BatchKVCache, KVCache, dynamic_roll, make_prompt_cache  # noqa: E402

from protocol.trainer_api import EvalItem  # noqa: E402
from services.common.config import ChatConfig  # noqa: E402

# The system prompt chat serves with by default: the canaries and the facts
# are asked in the context the user will actually meet.
DEFAULT_SYSTEM_PROMPT = ChatConfig().system_prompt
NORMALIZATIONS = ("mean", "sum", "chars")
# The default everywhere (gates, benchmark, canary selection). Measured on the
# canary pool of 94 items with the embedded model: "sum" 55 right, "chars"
# 53, "mean" 45 — per-token means let a multi-token distractor beat a
# one-token gold answer ("Madrid" over "Paris", "Damp" over "Dry") because
# the later tokens of a word are nearly certain once it has begun.
DEFAULT_NORMALIZE = "sum"
# False recall compares an abstention ("I don't know.") with fabricated values:
# a multi-token phrase against short ones. Summed, the phrase pays for its
# wording (its final full stop alone costs ~4 nats) and the base model already
# "prefers" a made-up name on 8 of 10 never-stated questions, so the measure
# starts saturated and cannot show harm. Per token, the near-certain tail of
# the phrase stops counting against it and the comparison is about which
# reply the model commits to: the base model then scores 0 of 10 ("chars":
# 2 of 10). Measured on the embedded model, 10 personal questions, 3 values each.
FALSE_RECALL_NORMALIZE = "mean"
# Perplexity is computed in windows of this many tokens (no overlap): the
# canary text is one window; longer texts stay bounded in memory.
PPL_WINDOW_TOKENS = 1024


@dataclass(frozen=True)
class AnswerScore:
    """Log-likelihood of one answer (natural log, nats)."""

    total: float  # sum over the answer's tokens
    mean: float  # total / tokens
    tokens: int
    chars: int  # length of the answer text

    def value(self, normalize: str) -> float:
        if normalize == "mean":
            return self.mean
        if normalize == "chars":
            return self.total / self.chars
        return self.total


@dataclass(frozen=True)
class ItemScore:
    """One multiple-choice item as scored: gold first, then the distractors."""

    question: str
    answer: str
    gold: AnswerScore
    distractors: list[AnswerScore]
    correct: bool  # gold strictly beats every distractor
    margin: float  # gold minus the best distractor, in the normalized unit
    best_distractor: str


@dataclass(frozen=True)
class FormatPrompt:
    """A prompt whose reply must follow a format, and the rule that checks it.

    ``rule``: one of :data:`FORMAT_RULES`. ``max_tokens`` bounds the greedy
    reply (a compliant reply is short; a longer one has already failed).
    """

    prompt: str
    rule: str
    max_tokens: int = 12


@dataclass(frozen=True)
class FormatResult:
    prompt: str
    rule: str
    output: str
    ok: bool


# ---------------------------------------------------------------- tokens


def chat_prompt_tokens(tokenizer: Any, question: str, system_prompt: str | None = None) -> list[int]:
    """The chat-templated question, ending where the assistant's reply starts."""
    system = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
    messages = [{"role": "user", "content": question}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    tokens = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(tokens, Mapping):  # a bare transformers tokenizer returns an encoding
        tokens = tokens["input_ids"]
    return list(tokens)


def answer_tokens(tokenizer: Any, answer: str) -> list[int]:
    tokens = list(tokenizer.encode(answer, add_special_tokens=False))
    if not tokens:
        raise ValueError(f"answer {answer!r} has no tokens: an answer must not be empty")
    return tokens


def _log_softmax(logits: mx.array) -> mx.array:
    logits = logits.astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def _score(total: float, tokens: int, answer: str) -> AnswerScore:
    return AnswerScore(total=total, mean=total / tokens, tokens=tokens, chars=max(1, len(answer)))


# ---------------------------------------------------------------- single answers


def answer_score(model: Any, tokenizer: Any, question: str, answer: str,
                 system_prompt: str | None = None) -> AnswerScore:
    """Sum and mean log-prob of ``answer``'s tokens as the assistant's reply to
    ``question``, in one forward pass over prompt + answer."""
    prompt = chat_prompt_tokens(tokenizer, question, system_prompt)
    target = answer_tokens(tokenizer, answer)
    inputs = mx.array([prompt + target[:-1]])
    logprobs = _log_softmax(model(inputs)[0, len(prompt) - 1:])
    picked = mx.take_along_axis(logprobs, mx.array(target)[:, None], axis=-1)
    total = float(picked.sum().item())
    return _score(total, len(target), answer)


def answer_logprob(model: Any, tokenizer: Any, question: str, answer: str,
                   system_prompt: str | None = None, *, per_token: bool = False) -> float:
    """Log-likelihood of ``answer`` given the chat-templated ``question``: the
    sum over its tokens, or the mean per token with ``per_token=True``
    (:func:`answer_score` returns both)."""
    score = answer_score(model, tokenizer, question, answer, system_prompt)
    return score.mean if per_token else score.total


# ---------------------------------------------------------------- the batched scorer


def _common_prefix(sequences: Sequence[Sequence[int]]) -> int:
    first = sequences[0]
    n = min(len(s) for s in sequences)
    for i in range(n):
        token = first[i]
        if any(s[i] != token for s in sequences):
            return i
    return n


class Scorer:
    """Scores and greedy replies for one model state (one adapter setting), batched.

    :meth:`prime` computes the KV cache of the prompt prefix shared by a set of
    questions (system prompt, template) once. A batch of questions then costs
    one call over their own tokens (right-padded, so padding never precedes a
    real token), after which the padding is rolled to the left of each row
    and mlx-lm's ``BatchKVCache`` masks it out and gives every row its own
    positions, exactly as if it had been run alone (to float rounding).
    Options of all items are scored in one more call on row copies of that
    cache; greedy replies decode all rows in lock-step.

    Models whose caches are not plain KV caches (sliding windows) take the
    simple path: one full forward pass per option, one generation per prompt.
    The cache belongs to the adapter setting it was computed under: make a new
    Scorer after changing the adapter.
    """

    def __init__(self, model: Any, tokenizer: Any, system_prompt: str | None = None,
                 *, batch_size: int = 16) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.batch_size = batch_size
        self._prefix: list[int] = []
        self._snapshot: list[tuple[mx.array, mx.array]] = []
        self._eos = set(getattr(tokenizer, "eos_token_ids", None) or [tokenizer.eos_token_id])
        caches = make_prompt_cache(model)
        self._layers = len(caches)
        self.batched = all(type(c) is KVCache for c in caches)

    def prompt(self, question: str) -> list[int]:
        return chat_prompt_tokens(self.tokenizer, question, self.system_prompt)

    def prime(self, questions: Sequence[str]) -> int:
        """Cache the prefix the prompts of ``questions`` share; returns its length."""
        if not self.batched or not questions:
            return 0
        prompts = [self.prompt(q) for q in questions]
        # Keep at least one token of each prompt to feed, so every prompt's
        # last position (which predicts the reply) is computed afresh.
        length = min(_common_prefix(prompts), min(len(p) for p in prompts) - 1)
        if length <= 0 or prompts[0][:length] == self._prefix:
            return len(self._prefix)
        cache = make_prompt_cache(self.model)
        self.model(mx.array([prompts[0][:length]]), cache=cache)
        self._snapshot = [(c.keys[..., :c.offset, :], c.values[..., :c.offset, :]) for c in cache]
        mx.eval(self._snapshot)
        self._prefix = prompts[0][:length]
        return length

    # -- batched internals

    def _prefill(self, prompts: list[list[int]]) -> tuple[list[BatchKVCache], mx.array]:
        """Feed a batch of prompts; return their caches (padding on the left,
        masked) and the log-probs of each prompt's next token, shape (B, V)."""
        n = len(self._prefix)
        if not n or any(len(p) <= n or p[:n] != self._prefix for p in prompts):
            n = 0
        rows = len(prompts)
        suffixes = [p[n:] for p in prompts]
        width = max(len(s) for s in suffixes)
        pads = [width - len(s) for s in suffixes]
        cache = [BatchKVCache([0] * rows) for _ in range(self._layers)]
        if n:
            for layer, (keys, values) in zip(cache, self._snapshot, strict=True):
                layer.state = (mx.repeat(keys, rows, axis=0), mx.repeat(values, rows, axis=0),
                               mx.array([n] * rows), mx.array([0] * rows), n)
        inputs = mx.array([s + [s[-1]] * pad for s, pad in zip(suffixes, pads, strict=True)])
        last = mx.array([len(s) - 1 for s in suffixes])
        first = _log_softmax(_last_logits(self.model, inputs, cache, last))
        # Move each row's trailing padding to its front, where the mask hides it.
        shifts = mx.array(pads)
        for layer in cache:
            keys, values, _, _, idx = layer.state
            keys = dynamic_roll(keys[..., :idx, :], shifts[:, None], axis=2)
            values = dynamic_roll(values[..., :idx, :], shifts[:, None], axis=2)
            layer.state = (keys, values, mx.array([n + len(s) for s in suffixes]), shifts, idx)
        return cache, first

    @staticmethod
    def _select_rows(cache: list[BatchKVCache], rows: mx.array) -> list[BatchKVCache]:
        picked = []
        for layer in cache:
            keys, values, offset, left, idx = layer.state
            copy = BatchKVCache([0] * rows.shape[0])
            copy.state = (keys[rows], values[rows], offset[rows], left[rows], idx)
            picked.append(copy)
        return picked

    def _score_chunk(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[AnswerScore]]:
        targets = [[answer_tokens(self.tokenizer, o) for o in options] for _, options in requests]
        cache, first = self._prefill([self.prompt(q) for q, _ in requests])
        firsts = mx.concatenate([first[i][mx.array([t[0] for t in ts])]
                                 for i, ts in enumerate(targets)])
        pairs = [(i, t) for i, ts in enumerate(targets) for t in ts]
        rests = [0.0] * len(pairs)
        # The rest of each option, one call per option length: no padding at all
        # (answers are short, so there are few distinct lengths).
        for length in sorted({len(t) for _, t in pairs} - {1}):
            group = [k for k, (_, t) in enumerate(pairs) if len(t) == length]
            rows = mx.array([pairs[k][0] for k in group])
            inputs = mx.array([pairs[k][1][:-1] for k in group])
            nexts = mx.array([pairs[k][1][1:] for k in group])
            logprobs = _log_softmax(self.model(inputs, cache=self._select_rows(cache, rows)))
            picked = mx.take_along_axis(logprobs, nexts[..., None], axis=-1)[..., 0].sum(axis=1)
            for k, value in zip(group, picked.tolist(), strict=True):
                rests[k] = value
        values = [f + r for f, r in zip(firsts.tolist(), rests, strict=True)]
        texts = [o for _, options in requests for o in options]
        scores = [_score(float(v), len(t), text)
                  for v, (_, t), text in zip(values, pairs, texts, strict=True)]
        out, k = [], 0
        for ts in targets:
            out.append(scores[k: k + len(ts)])
            k += len(ts)
        return out

    def _greedy_chunk(self, questions: Sequence[str], budgets: Sequence[int]) -> list[str]:
        """Decode all rows in lock-step; a row stops at end of turn or at its
        own token budget (its reply is what it would be alone)."""
        cache, logprobs = self._prefill([self.prompt(q) for q in questions])
        generated: list[list[int]] = [[] for _ in questions]
        done = [budget <= 0 for budget in budgets]
        for _step in range(max(budgets)):
            tokens = mx.argmax(logprobs, axis=-1).tolist()
            for row, token in enumerate(tokens):
                if done[row]:
                    continue
                if token in self._eos:
                    done[row] = True
                else:
                    generated[row].append(token)
                    done[row] = len(generated[row]) >= budgets[row]
            if all(done):
                break
            logits = self.model(mx.array(tokens)[:, None], cache=cache)
            logprobs = _log_softmax(logits[:, -1])
        return [self.tokenizer.decode(g) for g in generated]

    # -- public

    def _chunks(self, questions: Sequence[str]) -> list[list[int]]:
        """Indices in batches of similar prompt length (less padding to compute).
        The batching depends only on the questions, so a baseline and a
        candidate are scored in identical batches."""
        order = sorted(range(len(questions)), key=lambda i: (len(self.prompt(questions[i])), i))
        return [order[k: k + self.batch_size] for k in range(0, len(order), self.batch_size)]

    def score(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[AnswerScore]]:
        """Log-likelihood of every option as the reply to its question:
        ``[(question, [option, ...]), ...]`` → one list of scores per question."""
        if not self.batched:
            return [[answer_score(self.model, self.tokenizer, q, o, self.system_prompt)
                     for o in options] for q, options in requests]
        out: list[list[AnswerScore]] = [[] for _ in requests]
        for chunk in self._chunks([q for q, _ in requests]):
            for index, scores in zip(chunk, self._score_chunk([requests[i] for i in chunk]),
                                     strict=True):
                out[index] = scores
        return out

    def score_options(self, question: str, options: Sequence[str]) -> list[AnswerScore]:
        return self.score([(question, options)])[0]

    def greedy(self, questions: Sequence[str], max_tokens: int | Sequence[int]) -> list[str]:
        """Greedy (temperature 0) replies, at most ``max_tokens`` tokens each
        (one budget for all, or one per question), stopping at end of turn,
        as chat would serve them."""
        budgets = ([max_tokens] * len(questions) if isinstance(max_tokens, int)
                   else list(max_tokens))
        if not self.batched:
            return [_greedy_single(self.model, self.tokenizer, self.prompt(q), b, self._eos)
                    for q, b in zip(questions, budgets, strict=True)]
        out = [""] * len(questions)
        for chunk in self._chunks(questions):
            replies = self._greedy_chunk([questions[i] for i in chunk], [budgets[i] for i in chunk])
            for index, reply in zip(chunk, replies, strict=True):
                out[index] = reply
        return out


# Architectures whose logits are exactly ``head(model.model(x))``: for them the
# LM head (a fifth of the compute on the embedded model) runs only on the
# positions that are read. Others run whole, which is equally right.
_PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def _last_logits(model: Any, inputs: mx.array, cache: list[Any], last: mx.array) -> mx.array:
    """Logits at position ``last[b]`` of each row, shape (B, V)."""
    args = getattr(model, "args", None)
    if getattr(model, "model_type", None) in _PLAIN_HEAD_TYPES and args is not None:
        hidden = model.model(inputs, cache)
        hidden = mx.take_along_axis(hidden, last[:, None, None], axis=1)
        if getattr(args, "tie_word_embeddings", False):
            return model.model.embed_tokens.as_linear(hidden)[:, 0]
        return model.lm_head(hidden)[:, 0]
    logits = model(inputs, cache=cache)
    return mx.take_along_axis(logits, last[:, None, None], axis=1)[:, 0]


def _greedy_single(model: Any, tokenizer: Any, prompt: list[int], max_tokens: int,
                   eos: set[int]) -> str:
    cache = make_prompt_cache(model)
    logits = model(mx.array([prompt]), cache=cache)
    generated: list[int] = []
    for step in range(max_tokens):
        token = int(mx.argmax(logits[0, -1]).item())
        if token in eos:
            break
        generated.append(token)
        if step + 1 < max_tokens:
            logits = model(mx.array([[token]]), cache=cache)
    return tokenizer.decode(generated)


# ---------------------------------------------------------------- multiple choice


def _check_item(item: EvalItem) -> None:
    if not item.distractors:
        raise ValueError(f"item {item.question!r} has no distractors: nothing to choose against")
    gold = item.answer.strip().casefold()
    if any(d.strip().casefold() == gold for d in item.distractors):
        raise ValueError(f"item {item.question!r} lists its answer {item.answer!r} as a distractor")


def score_items(model: Any, tokenizer: Any, items: Sequence[EvalItem], *,
                normalize: str = DEFAULT_NORMALIZE,
                system_prompt: str | None = None, scorer: Scorer | None = None) -> list[ItemScore]:
    """Score every item's gold answer and distractors (see :func:`mc_accuracy`)."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, not {normalize!r}")
    for item in items:
        _check_item(item)
    scorer = scorer or Scorer(model, tokenizer, system_prompt)
    scorer.prime([item.question for item in items])
    results = []
    all_scores = scorer.score([(item.question, [item.answer, *item.distractors]) for item in items])
    for item, scores in zip(items, all_scores, strict=True):
        gold, rest = scores[0], scores[1:]
        values = [s.value(normalize) for s in rest]
        best = max(range(len(values)), key=values.__getitem__)
        margin = gold.value(normalize) - values[best]
        results.append(ItemScore(question=item.question, answer=item.answer, gold=gold,
                                 distractors=rest, correct=margin > 0, margin=margin,
                                 best_distractor=item.distractors[best]))
    return results


def mc_accuracy(model: Any, tokenizer: Any, items: Sequence[EvalItem], *,
                normalize: str = DEFAULT_NORMALIZE,
                system_prompt: str | None = None, scorer: Scorer | None = None
                ) -> tuple[float, list[ItemScore]]:
    """Share of items whose gold answer's log-likelihood (``normalize``: "sum",
    "mean" per token, "chars" per character) strictly beats every distractor's.

    Returns (accuracy, per-item scores); no items → (0.0, []).
    """
    per_item = score_items(model, tokenizer, items, normalize=normalize,
                           system_prompt=system_prompt, scorer=scorer)
    if not per_item:
        return 0.0, []
    return sum(r.correct for r in per_item) / len(per_item), per_item


def false_recall(model: Any, tokenizer: Any, items: Sequence[EvalItem], *,
                 normalize: str = FALSE_RECALL_NORMALIZE,
                 system_prompt: str | None = None, scorer: Scorer | None = None
                 ) -> tuple[float, list[ItemScore]]:
    """How often the model "remembers" a fact it was never told.

    Each item asks about something never stated; its ``answer`` is an
    abstention ("I don't know.") and its ``distractors`` are plausible
    fabricated values. An item counts as a false recall when the abstention
    does NOT strictly beat every fabricated value (a tie counts against the
    model), scored as :func:`mc_accuracy` scores facts, so ``false_recall ==
    1 - mc_accuracy`` on the same items with the same ``normalize`` — by
    default the mean log-prob per token (:data:`FALSE_RECALL_NORMALIZE` says
    why). The absolute level depends on the abstention's wording; the gate
    also compares with the same items scored on the base model, which this
    definition keeps exact (same items, same scoring, same batches).

    Returns (rate, per-item scores; ``correct`` there means "abstained").
    """
    accuracy, per_item = mc_accuracy(model, tokenizer, items, normalize=normalize,
                                     system_prompt=system_prompt, scorer=scorer)
    return (1.0 - accuracy if per_item else 0.0), per_item


# ---------------------------------------------------------------- perplexity


def perplexity(model: Any, tokenizer: Any, text: str) -> float:
    """exp(mean negative log-likelihood per token) of raw ``text`` (no chat
    template): each token predicted from the ones before it, in windows of
    :data:`PPL_WINDOW_TOKENS`."""
    tokens = list(tokenizer.encode(text, add_special_tokens=False))
    if len(tokens) < 2:
        raise ValueError("perplexity needs a text of at least two tokens")
    nll, count = 0.0, 0
    for start in range(0, len(tokens) - 1, PPL_WINDOW_TOKENS):
        window = tokens[start: start + PPL_WINDOW_TOKENS + 1]
        if len(window) < 2:
            break
        logprobs = _log_softmax(model(mx.array([window[:-1]]))[0])
        picked = mx.take_along_axis(logprobs, mx.array(window[1:])[:, None], axis=-1)
        nll -= float(picked.sum().item())
        count += len(window) - 1
    mean = nll / count
    if not math.isfinite(mean):
        return math.inf if mean > 0 or math.isinf(mean) else math.nan
    return math.exp(mean) if mean < 700 else math.inf  # a broken model, not an OverflowError


# ---------------------------------------------------------------- format


def _bare(text: str) -> str:
    """The reply without surrounding whitespace, quotes or a final full stop."""
    return text.strip().strip("\"'`").strip().rstrip(".!").strip()


def _json_object(text: str) -> Any:
    body = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, flags=re.S)
    if fenced:
        body = fenced.group(1)
    try:
        return json.loads(body)
    except ValueError:
        return None


def _is_yes_no(text: str) -> bool:
    return _bare(text).casefold() in ("yes", "no")


def _is_json_ok(text: str) -> bool:
    value = _json_object(text)
    return isinstance(value, dict) and "ok" in value


def _is_integer(text: str) -> bool:
    return re.fullmatch(r"-?\d+", _bare(text).replace(",", "")) is not None


def _is_one_word(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z][A-Za-z'-]*", _bare(text)) is not None


def _is_uppercase(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and all(c.isupper() for c in letters)


def _is_three_items(text: str) -> bool:
    # "red, green, blue" yes; "The colors are: red, green, blue" no.
    body = _bare(text)
    parts = [p.strip() for p in body.split(",")]
    return "\n" not in body and len(parts) == 3 and all(1 <= len(p.split()) <= 2 for p in parts)


FORMAT_RULES: dict[str, Callable[[str], bool]] = {
    "yes_no": _is_yes_no,  # exactly "yes" or "no" (any case, optional full stop)
    "json_ok": _is_json_ok,  # a JSON object (optionally in a code fence) with key "ok"
    "integer": _is_integer,  # just a whole number
    "one_word": _is_one_word,  # a single word
    "uppercase": _is_uppercase,  # every letter upper case
    "three_items": _is_three_items,  # exactly three short comma-separated items, one line
}


def check_format(rule: str, output: str) -> bool:
    try:
        return FORMAT_RULES[rule](output)
    except KeyError:
        raise ValueError(f"unknown format rule {rule!r}; known: {', '.join(FORMAT_RULES)}") from None


def format_results(model: Any, tokenizer: Any, prompts: Sequence[FormatPrompt], *,
                   system_prompt: str | None = None, scorer: Scorer | None = None
                   ) -> list[FormatResult]:
    """Greedy reply to each prompt and whether it follows the prompt's rule."""
    for p in prompts:
        check_format(p.rule, "")  # unknown rules fail before any generation
    scorer = scorer or Scorer(model, tokenizer, system_prompt)
    scorer.prime([p.prompt for p in prompts])
    replies = scorer.greedy([p.prompt for p in prompts], [p.max_tokens for p in prompts])
    return [FormatResult(p.prompt, p.rule, reply, check_format(p.rule, reply))
            for p, reply in zip(prompts, replies, strict=True)]


def format_ok(model: Any, tokenizer: Any, prompts: Sequence[FormatPrompt], *,
              system_prompt: str | None = None, scorer: Scorer | None = None) -> float:
    """Share of ``prompts`` whose greedy reply complies with the required format."""
    results = format_results(model, tokenizer, prompts, system_prompt=system_prompt, scorer=scorer)
    return sum(r.ok for r in results) / len(results) if results else 0.0


# ---------------------------------------------------------------- greedy recall


def greedy_results(model: Any, tokenizer: Any, items: Sequence[EvalItem], max_tokens: int = 24, *,
                   system_prompt: str | None = None, scorer: Scorer | None = None
                   ) -> list[tuple[str, str, bool]]:
    """(question, greedy reply, answer found in it) for each item."""
    scorer = scorer or Scorer(model, tokenizer, system_prompt)
    scorer.prime([item.question for item in items])
    replies = scorer.greedy([item.question for item in items], max_tokens)
    return [(item.question, reply, item.answer.strip().casefold() in reply.casefold())
            for item, reply in zip(items, replies, strict=True)]


def greedy_contains(model: Any, tokenizer: Any, items: Sequence[EvalItem], max_tokens: int = 24, *,
                    system_prompt: str | None = None, scorer: Scorer | None = None) -> float:
    """Share of items whose greedy reply (at most ``max_tokens`` tokens)
    contains the answer, case-insensitively: the generation check beside the
    log-likelihood score (a model can rank the answer first and still not say it)."""
    results = greedy_results(model, tokenizer, items, max_tokens,
                             system_prompt=system_prompt, scorer=scorer)
    return sum(ok for _, _, ok in results) / len(results) if results else 0.0
