"""The evaluator's socket-free core: measure a candidate adapter, apply the gates.

:func:`evaluate` judges a candidate *unfused*, as chat serves it, on the one
model the evaluator holds (the caller holds the heavy-run lock):

1. the baseline (the adapter currently served, or the bare base model);
2. the bare base model on the fixed canaries, when the baseline is an
   adapter (pass ``reference`` to reuse an earlier measurement);
3. the candidate.

Each adapter is applied with mlx-lm's ``load_adapters`` and removed again, so
the model leaves every call as the bare base model it came in as (also when
a measurement fails), and the function can be called again.

What is measured (``services.lib.models.scoring``, the same code the benchmark
uses): recall of the night's facts (multiple choice by log-likelihood, on
questions worded differently from training), a general-capability canary
(multiple choice the base model answers right), perplexity on a fixed text,
format compliance of short greedy replies, false recall (questions about
facts never stated: does a fabricated value beat "I don't know"? compared
per token, see metrics.FALSE_RECALL_NORMALIZE), and a
greedy check that the candidate actually *says* a sample of the facts.

The gates and why they are anchored where they are: see :class:`Thresholds`.

Fail closed: a verdict is ``promote`` only when every gate was *tested* and
passed. An empty fixed suite (canary, perplexity text or format prompts
missing), a figure that is not a finite number (NaN, infinity), a baseline
figure a gate needs that is missing, an adapter that cannot be applied, or any
error while measuring: each is a ``reject`` whose reason says what to do.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.blas import preload_openblas

preload_openblas()  # before the first mlx import (services.common.blas)

import msgspec  # noqa: E402

from protocol.events import EvaluationCompleted  # noqa: E402
from protocol.service_api import ErrorReply  # noqa: E402
from protocol.trainer_api import EvalItem, Evaluate  # noqa: E402
from services.common.heavylock import HeavyRunLock  # noqa: E402
from services.common.logging import get_logger  # noqa: E402
from services.evaluator.canaries import CANARY_ITEMS, FORMAT_PROMPTS, PPL_TEXT, kind_of  # noqa: E402
from services.lib.adapters.apply import adapter_applied, has_adapter  # noqa: E402
from services.lib.models.scoring import (  # noqa: E402
    DEFAULT_NORMALIZE,
    FALSE_RECALL_NORMALIZE,
    NORMALIZATIONS,
    FormatPrompt,
    Scorer,
    format_results,
    greedy_results,
    perplexity,
    score_items,
)

Progress = Callable[[str, int, int], None]  # (stage, stages done, stages in all)
log = get_logger("evaluator")


class Thresholds(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The gates. A candidate is promoted only when every gate passes.

    Anchors. The candidate *replaces* the current adapter (it is not stacked
    on it), so what the user gets is base + candidate. The regression gates
    (canary, perplexity, format, false recall) therefore compare the
    candidate with the **bare base model**, not with the previous adapter:
    measured against the previous adapter, a drift just under the limit
    every night would add up night after night; against the base it cannot
    accumulate. The fact gate compares with the baseline (the adapter being
    replaced): a new adapter must not know fewer of the night's facts than
    the one it replaces.

    - ``min_fact_recall``: share of the night's facts answered right (multiple
      choice, chance is 1/(1+distractors)); also never fewer facts than the
      baseline recalls. No facts given: the gate passes, noted in reasons.
    - ``max_canary_drop_pts``: canary accuracy may fall at most this many
      percentage points below the base model's (1 item of 49 = 2.0 points,
      so 1.0 means: lose no canary item). The change per kind of item is
      reported (``canary_by_kind``), not gated.
    - ``max_ppl_drift_pct``: perplexity on the fixed text may rise at most
      this many percent above the base model's (a fall is fine).
    - ``max_format_drop``: format compliance (a share, 0..1) may fall at most
      this much below the base model's (one prompt of ten = 0.1).
    - ``max_false_recall`` / ``max_false_recall_rise``: false recall passes
      when it is at most ``max_false_recall`` absolute OR at most the base
      model's own false recall on the same questions plus the rise — the
      base model's priors on a particular question set are not the
      candidate's fault, only what it adds.
    - ``min_greedy_fact_recall``: share of a sample of facts whose greedy
      reply contains the answer; 0 reports it without gating (a 135M model
      phrases answers unpredictably; multiple choice is the primary gate).
    """

    min_fact_recall: float = 0.5
    max_canary_drop_pts: float = 1.0
    max_ppl_drift_pct: float = 1.0
    max_format_drop: float = 0.10
    max_false_recall: float = 0.05
    max_false_recall_rise: float = 0.05
    min_greedy_fact_recall: float = 0.0


@dataclass(frozen=True)
class Suite:
    """The fixed canaries (defaults: ``services.evaluator.canaries``)."""

    canary: Sequence[EvalItem] = field(default_factory=lambda: list(CANARY_ITEMS))
    ppl_text: str = PPL_TEXT
    format_prompts: Sequence[FormatPrompt] = field(default_factory=lambda: list(FORMAT_PROMPTS))


class EvaluationOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """Every figure, which gates passed, why not, and the verdict.

    ``metrics`` (floats; NaN/infinity left out and named in ``reasons``):
    ``x`` is the candidate, ``x_base`` the baseline (the adapter being
    replaced, or the bare model when there is none), ``x_model`` the bare
    base model. fact_recall(_base), greedy_fact_recall, greedy_checked,
    facts, false_facts (counts), false_recall(_base/_model),
    canary_acc(_base/_model), canary_margin(_base/_model) (mean gold minus
    best distractor, nats), canary_drop_pts (vs the model),
    canary_drop_base_pts, ppl(_base/_model), ppl_drift_pct (vs the model),
    ppl_drift_base_pct, format_ok(_base/_model).
    ``gates``: fact_recall, canary, perplexity, format, false_recall (and
    greedy_fact_recall when its threshold is set; ``finite`` False when a
    figure was not a number). ``reasons``: one sentence per failed gate, plus
    notes (a gate with nothing to test). ``canary_by_kind``: canary accuracy
    of the candidate minus the bare base model's, percentage points, per kind
    (services.evaluator.canaries.KINDS; negative: lost).
    """

    metrics: dict[str, float]
    gates: dict[str, bool]
    reasons: list[str]
    verdict: str  # promote | reject
    duration_s: float = 0.0
    canary_by_kind: dict[str, float] = {}

    def to_event(self, adapter_id: str, baseline_id: str | None) -> EvaluationCompleted:
        return EvaluationCompleted(adapter_id=adapter_id, baseline_id=baseline_id,
                                   verdict=self.verdict, metrics=dict(self.metrics),
                                   gates=dict(self.gates), reasons=list(self.reasons),
                                   duration_s=self.duration_s, canary_by_kind=dict(self.canary_by_kind))


# ---------------------------------------------------------------- measuring


def measure(model: Any, tokenizer: Any, *, suite: Suite | None = None,
            facts: Sequence[EvalItem] = (), false_facts: Sequence[EvalItem] = (),
            fixed: bool = True, greedy_sample: int = 0, greedy_max_tokens: int = 24,
            normalize: str = DEFAULT_NORMALIZE, false_normalize: str = FALSE_RECALL_NORMALIZE,
            system_prompt: str | None = None,
            step: Callable[[str], None] | None = None) -> dict[str, float]:
    """Every figure for the model as it is now (with whatever adapter is on).

    ``fixed``: also the fixed suite (canary, perplexity, format). Keys:
    fact_recall, false_recall, canary_acc, canary_margin, ppl, format_ok,
    greedy_fact_recall (those that were measured), and ``canary_acc@<kind>``
    per kind of canary item (services.evaluator.canaries.kind_of).
    """
    for name in (normalize, false_normalize):
        if name not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, not {name!r}")
    suite = suite or Suite()
    step = step or (lambda _stage: None)
    scorer = Scorer(model, tokenizer, system_prompt)
    out: dict[str, float] = {}
    if facts:
        step("facts")
        scored = score_items(model, tokenizer, facts, normalize=normalize, scorer=scorer)
        out["fact_recall"] = sum(r.correct for r in scored) / len(scored)
    if false_facts:
        step("false facts")
        scored = score_items(model, tokenizer, false_facts, normalize=false_normalize, scorer=scorer)
        out["false_recall"] = 1.0 - sum(r.correct for r in scored) / len(scored)
    if greedy_sample and facts:
        step("greedy check")
        sample = _sample(facts, greedy_sample)
        found = greedy_results(model, tokenizer, sample, greedy_max_tokens, scorer=scorer)
        out["greedy_fact_recall"] = sum(ok for _, _, ok in found) / len(found)
        out["greedy_checked"] = float(len(found))
    if fixed:
        if suite.canary:
            step("canary")
            # One kind at a time: the scorer pads a batch to its longest prompt, so a
            # long-context passage batched with short questions would cost them all.
            scored = []
            for group in _kind_groups(suite.canary):
                scored += score_items(model, tokenizer, group, normalize=normalize, scorer=scorer)
            out["canary_acc"] = sum(r.correct for r in scored) / len(scored)
            out["canary_margin"] = sum(r.margin for r in scored) / len(scored)
            for kind, acc in _by_kind([i for g in _kind_groups(suite.canary) for i in g],
                                      [r.correct for r in scored]).items():
                out[f"canary_acc@{kind}"] = acc
        step("perplexity")
        out["ppl"] = perplexity(model, tokenizer, suite.ppl_text)
        if suite.format_prompts:
            step("format")
            results = format_results(model, tokenizer, suite.format_prompts, scorer=scorer)
            out["format_ok"] = sum(r.ok for r in results) / len(results)
    return out


def measure_reference(model: Any, tokenizer: Any, suite: Suite | None = None, *,
                      normalize: str = DEFAULT_NORMALIZE) -> dict[str, float]:
    """The bare base model's figures on the fixed suite (a daemon may keep
    them: they change only with the model, the suite or the normalization)."""
    if has_adapter(model):
        raise ValueError("measure_reference needs the bare base model; it has LoRA layers on")
    return measure(model, tokenizer, suite=suite, normalize=normalize)


def _kind_groups(items: Sequence[EvalItem]) -> list[list[EvalItem]]:
    """The items by kind, in order of each kind's first item (deterministic)."""
    groups: dict[str, list[EvalItem]] = {}
    for item in items:
        groups.setdefault(kind_of(item), []).append(item)
    return list(groups.values())


def _by_kind(items: Sequence[EvalItem], correct: Sequence[bool]) -> dict[str, float]:
    """Accuracy per kind of canary item."""
    right: dict[str, list[bool]] = {}
    for item, ok in zip(items, correct, strict=True):
        right.setdefault(kind_of(item), []).append(bool(ok))
    return {kind: sum(oks) / len(oks) for kind, oks in sorted(right.items())}


def canary_change_by_kind(cand: dict[str, float], ref: dict[str, float]) -> dict[str, float]:
    """Candidate minus base model, canary accuracy per kind, in points (2 decimals)."""
    return {key.split("@", 1)[1]: round((cand[key] - ref[key]) * 100.0, 2)
            for key in sorted(cand) if key.startswith("canary_acc@") and key in ref
            and math.isfinite(cand[key] - ref[key])}


def _missing_suite(suite: Suite) -> list[str]:
    """What the fixed suite lacks: each is a reject (a gate that cannot be tested)."""
    missing = []
    if not suite.canary:
        missing.append("the canary set is empty or missing (services/evaluator/canaries.py: "
                       "regenerate it with `python -m services.evaluator.canaries --select --write`)")
    if not suite.ppl_text.strip():
        missing.append("the perplexity text is empty (services/evaluator/canaries.py PPL_TEXT)")
    if not suite.format_prompts:
        missing.append("the format prompts are empty or missing (services/evaluator/canaries.py: "
                       "regenerate them with `python -m services.evaluator.canaries --select --write`)")
    return missing


def _fixed_keys(suite: Suite) -> set[str]:
    keys = {"ppl"}
    if suite.canary:
        keys |= {"canary_acc", "canary_margin"}
    if suite.format_prompts:
        keys.add("format_ok")
    return keys


def _sample(items: Sequence[EvalItem], n: int) -> list[EvalItem]:
    """n items spread evenly over the list (deterministic)."""
    if n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


# ---------------------------------------------------------------- the verdict


def evaluate(model: Any, tokenizer: Any, *, candidate_dir: Path | str,
             baseline_dir: Path | str | None, facts: Sequence[EvalItem],
             false_facts: Sequence[EvalItem], thresholds: Thresholds | None = None,
             progress: Progress | None = None, suite: Suite | None = None,
             reference: dict[str, float] | None = None, greedy_sample: int = 8,
             greedy_max_tokens: int = 24, normalize: str = DEFAULT_NORMALIZE,
             false_normalize: str = FALSE_RECALL_NORMALIZE,
             system_prompt: str | None = None) -> EvaluationOutcome:
    """Judge ``candidate_dir`` against ``baseline_dir`` (None: the bare model).

    ``model`` must be the bare base model; it is again when this returns or
    raises. A missing or corrupt candidate (or baseline) raises
    :class:`AdapterInvalid` before any measurement. ``reference``: the bare
    model's fixed-suite figures from :func:`measure_reference`, reused when
    the baseline is an adapter and as the baseline's own when it is not (else
    measured here).
    """
    started = time.perf_counter()
    thresholds = thresholds or Thresholds()
    suite = suite or Suite()
    if has_adapter(model):
        raise ValueError("evaluate needs the bare base model; it has LoRA layers on")
    missing = _missing_suite(suite)
    if missing:  # fail closed: an untestable gate is a reject, before minutes of measuring
        return EvaluationOutcome(metrics={}, gates={"suite": False},
                                 reasons=[f"cannot judge: {m}" for m in missing], verdict="reject",
                                 duration_s=round(time.perf_counter() - started, 3))
    # Apply and remove each adapter once up front (milliseconds): a corrupt or
    # ill-fitting candidate is refused before minutes of measuring.
    for path, role in ((candidate_dir, "candidate"), (baseline_dir, "baseline")):
        if path is not None:
            with adapter_applied(model, path, role):
                pass

    fixed_keys = _fixed_keys(suite)
    if reference is not None and not fixed_keys <= reference.keys():
        raise ValueError(f"reference lacks {sorted(fixed_keys - reference.keys())}: "
                         "pass measure_reference() of the same suite")
    reuse = reference is not None  # the base model's fixed-suite figures are known
    fixed_stages = len(fixed_keys - {"canary_margin"})
    total = (bool(facts) + bool(false_facts) + (0 if reuse and baseline_dir is None else fixed_stages)
             + ((bool(false_facts) + (0 if reuse else fixed_stages)) if baseline_dir else 0)
             + bool(facts) + bool(false_facts) + bool(greedy_sample and facts) + fixed_stages)
    done = 0

    def stepper(phase: str) -> Callable[[str], None]:
        def step(stage: str) -> None:
            nonlocal done
            if progress is not None:
                progress(f"{phase}: {stage}", done, total)
            done += 1
        return step

    common = dict(suite=suite, normalize=normalize, false_normalize=false_normalize,
                  system_prompt=system_prompt)
    # With no baseline adapter the baseline *is* the base model: its fixed-suite
    # figures are the reference, measured now or passed in.
    with adapter_applied(model, baseline_dir, "baseline"):
        base = measure(model, tokenizer, facts=facts, false_facts=false_facts,
                       fixed=not (reuse and baseline_dir is None), step=stepper("baseline"),
                       **common)
    if baseline_dir is None:
        base = {**(reference or {}), **base}
        ref = base
    else:
        ref = measure(model, tokenizer, false_facts=false_facts, fixed=not reuse,
                      step=stepper("base model"), **common)
        ref = {**(reference or {}), **ref}
    with adapter_applied(model, candidate_dir, "candidate"):
        cand = measure(model, tokenizer, facts=facts, false_facts=false_facts,
                       greedy_sample=greedy_sample, greedy_max_tokens=greedy_max_tokens,
                       step=stepper("candidate"), **common)
    if progress is not None:
        progress("done", total, total)

    raw = _metrics(cand, base, ref, n_facts=len(facts), n_false=len(false_facts))
    gates, reasons = _gates(raw, thresholds, n_facts=len(facts), n_false=len(false_facts),
                            baseline="the current adapter" if baseline_dir else "the base model")
    # NaN/infinity cannot travel in the event (JSON): leave them out, say so,
    # and reject (a figure that is not a number proves nothing: fail closed).
    metrics = {k: v for k, v in raw.items() if math.isfinite(v)}
    broken = sorted(k for k in raw if k not in metrics)
    if broken:
        gates["finite"] = False
        reasons.append(f"not a finite number (left out of the metrics): {', '.join(broken)}; the "
                       "adapter is rejected: a diverged training run gives NaN, train again")
    verdict = "promote" if gates and all(gates.values()) else "reject"
    return EvaluationOutcome(metrics=metrics, gates=gates, reasons=reasons, verdict=verdict,
                             duration_s=round(time.perf_counter() - started, 3),
                             canary_by_kind=canary_change_by_kind(cand, ref))


def _metrics(cand: dict[str, float], base: dict[str, float], ref: dict[str, float], *,
             n_facts: int, n_false: int) -> dict[str, float]:
    """One flat dict: ``x`` (candidate), ``x_base`` (baseline: the adapter
    being replaced, or the bare model), ``x_model`` (the bare base model)."""
    m: dict[str, float] = {"facts": float(n_facts), "false_facts": float(n_false)}
    for key in ("fact_recall", "greedy_fact_recall", "greedy_checked"):
        if key in cand:
            m[key] = cand[key]
    if "fact_recall" in base:
        m["fact_recall_base"] = base["fact_recall"]
    for key in ("false_recall", "canary_acc", "canary_margin", "ppl", "format_ok"):
        if key in cand:
            m[key] = cand[key]
        if key in base:
            m[f"{key}_base"] = base[key]
        if key in ref:
            m[f"{key}_model"] = ref[key]
    if "canary_acc" in m and "canary_acc_model" in m:
        m["canary_drop_pts"] = (m["canary_acc_model"] - m["canary_acc"]) * 100.0
        m["canary_drop_base_pts"] = (m["canary_acc_base"] - m["canary_acc"]) * 100.0
    if "ppl" in m and "ppl_model" in m:
        m["ppl_drift_pct"] = (m["ppl"] / m["ppl_model"] - 1.0) * 100.0
        m["ppl_drift_base_pct"] = (m["ppl"] / m["ppl_base"] - 1.0) * 100.0
    return {k: float(v) for k, v in m.items()}


# Comparisons of shares and percentages computed in float: allow rounding.
_EPS = 1e-9


def _untested(m: dict[str, float], *keys: str) -> str:
    """Which of ``keys`` is missing or not a finite number ('' when all are fine)."""
    bad = [k for k in keys if not math.isfinite(m.get(k, math.nan))]
    return ", ".join(bad)


def _gates(m: dict[str, float], t: Thresholds, *, n_facts: int, n_false: int,
           baseline: str = "the current adapter") -> tuple[dict[str, bool], list[str]]:
    """Each gate passes only on finite figures that meet its limit: a missing
    or NaN figure fails the gate (comparisons with NaN are False, but
    ``max(limit, nan)`` and ``round(nan)`` are not safe, so it is checked first)."""
    gates: dict[str, bool] = {}
    reasons: list[str] = []

    def untested(gate: str, *keys: str) -> bool:
        bad = _untested(m, *keys)
        if bad:
            gates[gate] = False
            reasons.append(f"the {gate} gate could not be tested ({bad} missing or not a number): "
                           "rejected; see the evaluator's log")
        return bool(bad)

    if n_facts and untested("fact_recall", "fact_recall", "fact_recall_base"):
        pass
    elif n_facts:
        right = round(m["fact_recall"] * n_facts)
        right_base = round(m["fact_recall_base"] * n_facts)
        floor_ok = m["fact_recall"] + _EPS >= t.min_fact_recall
        gates["fact_recall"] = floor_ok and right >= right_base
        if not floor_ok:
            reasons.append(f"recalled {right} of {n_facts} facts ({m['fact_recall']:.2f}), below "
                           f"the floor {t.min_fact_recall:.2f}")
        if right < right_base:
            reasons.append(f"recalled {right} of {n_facts} facts, fewer than {baseline} "
                           f"({right_base})")
    else:
        gates["fact_recall"] = True
        reasons.append("no facts to check: the fact-recall gate passed without a test")

    if not untested("canary", "canary_acc", "canary_acc_model", "canary_drop_pts"):
        drop = m["canary_drop_pts"]
        gates["canary"] = drop <= t.max_canary_drop_pts + _EPS
        if not gates["canary"]:
            reasons.append(f"canary dropped {drop:.1f} points vs the base model "
                           f"({m['canary_acc_model'] * 100:.1f}% -> {m['canary_acc'] * 100:.1f}%; "
                           f"limit {t.max_canary_drop_pts:.1f})")

    if not untested("perplexity", "ppl", "ppl_model", "ppl_drift_pct"):
        drift = m["ppl_drift_pct"]
        gates["perplexity"] = drift <= t.max_ppl_drift_pct + _EPS
        if not gates["perplexity"]:
            reasons.append(f"perplexity drifted {drift:+.1f}% from the base model "
                           f"({m['ppl_model']:.2f} -> {m['ppl']:.2f}; limit {t.max_ppl_drift_pct:.1f}%)")

    if not untested("format", "format_ok", "format_ok_model"):
        fall = m["format_ok_model"] - m["format_ok"]
        gates["format"] = fall <= t.max_format_drop + _EPS
        if not gates["format"]:
            reasons.append(f"format compliance fell to {m['format_ok']:.2f} from the base model's "
                           f"{m['format_ok_model']:.2f} (limit: a drop of {t.max_format_drop:.2f})")

    if n_false and untested("false_recall", "false_recall", "false_recall_model"):
        pass
    elif n_false:
        limit = max(t.max_false_recall, m["false_recall_model"] + t.max_false_recall_rise)
        gates["false_recall"] = m["false_recall"] <= limit + _EPS
        if not gates["false_recall"]:
            reasons.append(f"false recall {m['false_recall']:.2f} on {n_false} never-stated facts "
                           f"(base model {m['false_recall_model']:.2f}; limit {limit:.2f})")
    else:
        gates["false_recall"] = True
        reasons.append("no never-stated facts to check: the false-recall gate passed without a test")

    if t.min_greedy_fact_recall > 0 and n_facts and untested("greedy_fact_recall", "greedy_fact_recall"):
        pass
    elif t.min_greedy_fact_recall > 0 and "greedy_fact_recall" in m:
        ok = m["greedy_fact_recall"] + _EPS >= t.min_greedy_fact_recall
        gates["greedy_fact_recall"] = ok
        if not ok:
            reasons.append(f"greedy replies stated {m['greedy_fact_recall']:.2f} of the sampled "
                           f"facts, below {t.min_greedy_fact_recall:.2f}")
    return gates, reasons


# ---------------------------------------------------------------- one Evaluate request


def thresholds_of(config: Any) -> Thresholds:
    """The gates from ``[evaluator]`` (services.common.config.EvaluatorConfig)."""
    return Thresholds(min_fact_recall=config.min_fact_recall, max_canary_drop_pts=config.max_canary_drop_pts,
                      max_ppl_drift_pct=config.max_ppl_drift_pct, max_false_recall=config.max_false_recall,
                      max_format_drop=config.max_format_drop, max_false_recall_rise=config.max_false_recall_rise)


def judge(request: Evaluate, *, load: Callable[[], tuple[Any, Any]], thresholds: Thresholds, system_prompt: str,
          lock: HeavyRunLock, lock_timeout_s: float) -> EvaluationCompleted | ErrorReply:
    """Answer one Evaluate: under the heavy-run lock, load the model (``load``), measure, gate.

    The lock stays busy past ``lock_timeout_s``: a ``busy`` ErrorReply, try again later. A
    measurement that fails (a corrupt candidate) is a ``reject`` with the reason, not an
    error: the trainer must get a verdict. The model is dropped afterwards, so its memory
    goes back between nights.
    """
    started = time.monotonic()
    if not lock.acquire("evaluator", timeout_s=lock_timeout_s):
        return ErrorReply(code="busy", request_id=request.request_id,
                          message="the heavy-run lock stayed busy; evaluate again later")
    try:
        model, tokenizer = load()
        try:
            outcome = evaluate(model, tokenizer, candidate_dir=Path(request.candidate_dir),
                               baseline_dir=Path(request.baseline_dir) if request.baseline_dir else None,
                               facts=list(request.facts), false_facts=list(request.false_facts),
                               thresholds=thresholds, system_prompt=system_prompt)
        finally:
            del model
        return EvaluationCompleted(
            adapter_id=request.adapter_id, baseline_id=request.baseline_id, verdict=outcome.verdict,
            metrics={k: float(v) for k, v in outcome.metrics.items()},
            gates={k: bool(v) for k, v in outcome.gates.items()}, reasons=list(outcome.reasons),
            duration_s=round(time.monotonic() - started, 2), canary_by_kind=dict(outcome.canary_by_kind))
    except Exception as exc:  # a corrupt candidate (or model, or suite) is a reject, not a crash
        log.exception("evaluator.failed", adapter_id=request.adapter_id)
        return EvaluationCompleted(adapter_id=request.adapter_id, baseline_id=request.baseline_id,
                                   verdict="reject", gates={"evaluated": False},
                                   reasons=[f"evaluation failed: {type(exc).__name__}: {exc}; the adapter "
                                            "is rejected, see the evaluator's log (circ logs evaluator)"],
                                   duration_s=round(time.monotonic() - started, 2))
    finally:
        lock.release()
        gc.collect()
