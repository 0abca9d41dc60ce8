"""The evaluator's metrics and gates on the real embedded model (and the gate
logic without it).

Kept small for a shared 2-core machine: one full evaluate() on the default
suite (a zero-initialized LoRA, which must change nothing), the rest on a
reduced suite. Every run is deterministic, so exact equalities are asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocol.trainer_api import EvalItem
from services.evaluator.canaries import CANARY_ITEMS, FORMAT_PROMPTS, POOL, PPL_TEXT
from services.evaluator.core import (
    Suite,
    Thresholds,
    _gates,
    evaluate,
    measure_reference,
)
from services.lib.adapters.apply import AdapterInvalid, has_adapter
from services.lib.models.scoring import (
    answer_logprob,
    answer_score,
    check_format,
    false_recall,
    mc_accuracy,
)

FALSE_FACTS = [
    EvalItem(question="What is the name of my sister?", answer="I don't know.",
             distractors=["Anna", "Maria", "Sophie"], kind="false"),
    EvalItem(question="Which city was I born in?", answer="I don't know.",
             distractors=["Berlin", "Chicago", "Madrid"], kind="false"),
    EvalItem(question="What is my favourite food?", answer="I don't know.",
             distractors=["Pizza", "Sushi", "Pasta"], kind="false"),
]
# Facts the base model already knows: with an adapter that changes nothing,
# the fact gate must pass.
KNOWN_FACTS = [EvalItem(question=i.question, answer=i.answer, distractors=i.distractors, kind="fact")
               for i in CANARY_ITEMS[:4]]
SMALL_SUITE = Suite(canary=CANARY_ITEMS[:6], ppl_text=PPL_TEXT.split("\n\n")[0],
                    format_prompts=[FORMAT_PROMPTS[0], FORMAT_PROMPTS[-1]])


# ---------------------------------------------------------------- no model


def _figures(**overrides: float) -> dict[str, float]:
    m = {"fact_recall": 0.8, "fact_recall_base": 0.2, "canary_acc": 1.0, "canary_acc_base": 1.0,
         "canary_acc_model": 1.0, "canary_drop_pts": 0.0, "ppl": 10.0, "ppl_model": 10.0,
         "ppl_drift_pct": 0.0, "format_ok": 1.0, "format_ok_model": 1.0, "false_recall": 0.0,
         "false_recall_model": 0.0}
    m.update(overrides)
    return m


def test_gates_pass_on_healthy_figures():
    gates, reasons = _gates(_figures(), Thresholds(), n_facts=10, n_false=10)
    assert all(gates.values()) and reasons == []


def test_gates_name_each_failure():
    m = _figures(fact_recall=0.4, canary_acc=0.975, canary_drop_pts=2.5, ppl=10.3,
                 ppl_drift_pct=3.0, format_ok=0.8, false_recall=0.2)
    gates, reasons = _gates(m, Thresholds(), n_facts=10, n_false=10)
    assert not any(gates.values())
    text = " ".join(reasons)
    assert "canary dropped 2.5 points" in text and "limit 1.0" in text
    assert "perplexity drifted +3.0%" in text
    assert "below the floor 0.50" in text and "false recall 0.20" in text
    assert "format compliance fell to 0.80" in text


def test_fact_gate_refuses_fewer_facts_than_the_baseline():
    gates, reasons = _gates(_figures(fact_recall=0.6, fact_recall_base=0.7), Thresholds(),
                            n_facts=10, n_false=0)
    assert not gates["fact_recall"]
    assert any("fewer than the current adapter (7)" in r for r in reasons)


def test_false_recall_gate_is_relative_to_the_base_model():
    """The base model's own false recall on these questions is not held against
    the candidate; only what the candidate adds (beyond 0.05) is."""
    ok, _ = _gates(_figures(false_recall=0.33, false_recall_model=0.33), Thresholds(),
                   n_facts=0, n_false=3)
    assert ok["false_recall"]
    bad, _ = _gates(_figures(false_recall=0.67, false_recall_model=0.33), Thresholds(),
                    n_facts=0, n_false=3)
    assert not bad["false_recall"]


def test_format_rules():
    assert check_format("yes_no", " Yes.") and not check_format("yes_no", "Yes, it is.")
    assert check_format("json_ok", '{"ok": true}') and check_format("json_ok", '```json\n{"ok": 1}\n```')
    assert not check_format("json_ok", '{"ok": true} and more')
    assert check_format("three_items", "apple, pear, plum")
    assert not check_format("three_items", "The colors are: red, green, blue.")
    assert check_format("uppercase", "YES!") and not check_format("uppercase", "Yes")
    assert check_format("integer", "42") and check_format("one_word", "Blue.")


def test_canary_data_is_consistent():
    assert 30 <= len(CANARY_ITEMS) <= len(POOL)
    assert len({i.question for i in CANARY_ITEMS}) == len(CANARY_ITEMS)
    assert all(i.kind == "canary" and len(i.distractors) == 3 for i in CANARY_ITEMS)
    assert len(FORMAT_PROMPTS) >= 5
    assert 250 <= len(PPL_TEXT.split()) <= 400


# ---------------------------------------------------------------- on the model


@pytest.fixture(scope="module")
def loaded():
    from services.common.paths import models_dir
    from services.lib.models.compute import load_for_serving
    from services.lib.models.install import install_model

    model_dir = install_model(None, models_dir())
    model, tokenizer, _ = load_for_serving(model_dir, "auto")
    return model, tokenizer


def make_adapter(model, path: Path, *, damage: bool, num_layers: int = 4, rank: int = 4) -> Path:
    """Save an mlx-lm adapter for ``model``: lora_b all zeros (the model is
    unchanged) or, with ``damage``, large random weights."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from services.lib.adapters.apply import remove_adapter

    config = {"fine_tune_type": "lora", "num_layers": num_layers,
              "lora_parameters": {"rank": rank, "scale": 20.0, "dropout": 0.0}}
    linear_to_lora_layers(model, num_layers, config["lora_parameters"])
    try:
        weights = {}
        key = mx.random.key(7)
        for name, value in tree_flatten(model.parameters()):
            key, sub = mx.random.split(key)
            if name.endswith("lora_a"):
                weights[name] = mx.random.normal(value.shape, key=sub) * value.shape[0] ** -0.5
            elif name.endswith("lora_b"):
                weights[name] = (mx.random.normal(value.shape, key=sub) * 0.5 if damage
                                 else mx.zeros_like(value))
        path.mkdir(parents=True)
        mx.save_safetensors(str(path / "adapters.safetensors"), weights)
        (path / "adapter_config.json").write_text(json.dumps(config))
    finally:
        remove_adapter(model)
    assert not has_adapter(model)
    return path


@pytest.fixture(scope="module")
def reference(loaded):
    """The bare model on the full default suite (what a daemon would keep)."""
    return measure_reference(*loaded)


@pytest.fixture(scope="module")
def zero_outcome(loaded, reference, tmp_path_factory):
    """evaluate() on the default suite: a zero LoRA against the bare model."""
    model, tokenizer = loaded
    adapter = make_adapter(model, tmp_path_factory.mktemp("zero") / "a", damage=False)
    stages: list[tuple[str, int, int]] = []
    outcome = evaluate(model, tokenizer, candidate_dir=adapter, baseline_dir=None,
                       facts=KNOWN_FACTS, false_facts=FALSE_FACTS, thresholds=Thresholds(),
                       reference=reference,
                       progress=lambda stage, done, total: stages.append((stage, done, total)))
    return outcome, stages


@pytest.fixture(scope="module")
def small_reference(loaded):
    return measure_reference(*loaded, SMALL_SUITE)


@pytest.mark.model
def test_base_model_answers_its_own_canary(reference):
    """By construction (canaries.py selection), by multiple-choice log-likelihood."""
    assert reference["canary_acc"] >= 0.95
    assert reference["format_ok"] == 1.0


@pytest.mark.model
def test_zero_adapter_changes_nothing_and_is_promoted(loaded, zero_outcome):
    """A LoRA whose lora_b is zero computes exactly the base model: every
    figure equals its baseline, every gate passes."""
    model, _ = loaded
    outcome, stages = zero_outcome
    m = outcome.metrics
    assert outcome.verdict == "promote", outcome.reasons
    assert all(outcome.gates.values()) and set(outcome.gates) >= {
        "fact_recall", "canary", "perplexity", "format", "false_recall"}
    assert m["ppl_drift_pct"] == 0.0 and m["ppl"] == m["ppl_base"] == m["ppl_model"]
    assert m["canary_acc_model"] >= 0.95
    assert m["canary_acc"] == m["canary_acc_base"] and m["canary_drop_pts"] == 0.0
    assert m["format_ok"] == m["format_ok_base"] == 1.0
    assert m["false_recall"] == m["false_recall_base"]
    assert m["fact_recall"] == m["fact_recall_base"] == 1.0
    assert "greedy_fact_recall" in m and outcome.duration_s > 0
    names = [name for name, _, _ in stages]
    assert names[-1] == "done" and "candidate: canary" in names and "baseline: facts" in names
    assert [done for _, done, _ in stages] == list(range(len(stages)))  # one step each
    assert {total for _, _, total in stages} == {len(stages) - 1}
    assert not has_adapter(model)
    event = outcome.to_event("a1", None)
    assert event.verdict == "promote" and event.metrics == m


@pytest.mark.model
def test_mc_scoring_tells_known_from_unknown(loaded):
    """Questions the base model knows are scored right; the same questions with
    the truth hidden among the distractors are scored wrong. The batched
    scorer agrees with the one-pass answer_logprob."""
    model, tokenizer = loaded
    known = list(CANARY_ITEMS[:3])
    swapped = [EvalItem(question=i.question, answer=i.distractors[0],
                        distractors=[i.answer, *i.distractors[1:]]) for i in known]
    accuracy, per_item = mc_accuracy(model, tokenizer, known + swapped)
    assert [r.correct for r in per_item] == [True] * 3 + [False] * 3 and accuracy == 0.5
    item = known[0]
    total = answer_logprob(model, tokenizer, item.question, item.answer)
    assert total == pytest.approx(per_item[0].gold.total, abs=1e-3)
    one = answer_score(model, tokenizer, item.question, item.answer)
    assert one.mean == pytest.approx(one.total / one.tokens) and one.total < 0
    rate, scored = false_recall(model, tokenizer, FALSE_FACTS)
    assert rate == 1.0 - sum(r.correct for r in scored) / len(scored)


@pytest.mark.model
def test_damaging_adapter_is_rejected_with_reasons(loaded, small_reference, tmp_path):
    """Against a current adapter (here a harmless one): the regression gates
    compare with the bare model's reference figures."""
    model, tokenizer = loaded
    adapter = make_adapter(model, tmp_path / "damage", damage=True)
    current = make_adapter(model, tmp_path / "current", damage=False)
    outcome = evaluate(model, tokenizer, candidate_dir=adapter, baseline_dir=current, facts=[],
                       false_facts=[], suite=SMALL_SUITE, reference=small_reference,
                       greedy_sample=0)
    assert outcome.verdict == "reject"
    assert outcome.metrics["canary_acc_base"] == small_reference["canary_acc"]
    assert not outcome.gates["canary"] and not outcome.gates["perplexity"]
    text = " ".join(outcome.reasons)
    assert "canary dropped" in text and "perplexity drifted" in text
    assert outcome.metrics["ppl_model"] == small_reference["ppl"]
    assert not has_adapter(model)


@pytest.mark.model
def test_measurements_are_deterministic(loaded, small_reference):
    assert measure_reference(*loaded, SMALL_SUITE) == small_reference


@pytest.mark.model
def test_missing_or_corrupt_adapters_are_refused_up_front(loaded, tmp_path):
    model, tokenizer = loaded

    def judge(path: Path) -> AdapterInvalid:
        with pytest.raises(AdapterInvalid) as info:
            evaluate(model, tokenizer, candidate_dir=path, baseline_dir=None, facts=[],
                     false_facts=[], suite=SMALL_SUITE)
        assert not has_adapter(model)
        return info.value

    assert "no such directory" in str(judge(tmp_path / "nowhere"))
    good = make_adapter(model, tmp_path / "good", damage=False)
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "adapter_config.json").write_text((good / "adapter_config.json").read_text())
    data = (good / "adapters.safetensors").read_bytes()
    (torn / "adapters.safetensors").write_bytes(data[: len(data) // 2])
    error = judge(torn)
    assert error.role == "candidate" and "safetensors" in error.problem
    (torn / "adapters.safetensors").unlink()
    assert "adapters.safetensors is missing" in str(judge(torn))


# ---------------------------------------------------------------- one Evaluate request (core.judge)


def test_judge_answers_busy_while_another_holds_the_heavy_run_lock(tmp_path):
    """Training holds the lock past the timeout: a ``busy`` error to retry, the model never loaded."""
    from protocol.service_api import ErrorReply
    from protocol.trainer_api import Evaluate
    from services.common.heavylock import HeavyRunLock
    from services.evaluator.core import judge

    holder = HeavyRunLock(tmp_path / "heavy.lock")
    assert holder.acquire("trainer", timeout_s=1)
    loads: list[int] = []
    try:
        reply = judge(Evaluate(request_id="e1", adapter_id="ad-x", candidate_dir=str(tmp_path)),
                      load=lambda: loads.append(1) or (None, None), thresholds=Thresholds(), system_prompt="",
                      lock=HeavyRunLock(tmp_path / "heavy.lock"), lock_timeout_s=0.2)
    finally:
        holder.release()
    assert isinstance(reply, ErrorReply) and reply.code == "busy" and reply.request_id == "e1" and not loads


def test_judge_rejects_a_corrupt_candidate_with_the_reason_and_frees_the_lock(loaded, tmp_path):
    """A candidate that cannot be measured is a verdict (reject, with why), not an error."""
    from protocol.trainer_api import Evaluate
    from services.common.heavylock import HeavyRunLock
    from services.evaluator.core import judge

    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "adapter_config.json").write_text("{}")
    lock = HeavyRunLock(tmp_path / "heavy.lock")
    evaluation = judge(Evaluate(request_id="e2", adapter_id="ad-torn", candidate_dir=str(torn)),
                       load=lambda: loaded, thresholds=Thresholds(), system_prompt="", lock=lock, lock_timeout_s=5)
    assert evaluation.verdict == "reject" and evaluation.adapter_id == "ad-torn"
    assert evaluation.reasons and evaluation.reasons[0].startswith("evaluation failed:")
    assert lock.holder() is None and not has_adapter(loaded[0])


# ---------------------------------------------------------------- failing closed (issue 13)


@pytest.mark.parametrize("key", ["fact_recall", "fact_recall_base", "canary_acc", "canary_acc_model",
                                 "canary_drop_pts", "ppl", "ppl_model", "ppl_drift_pct", "format_ok",
                                 "format_ok_model", "false_recall", "false_recall_model"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None])
def test_a_nan_infinite_or_missing_figure_fails_its_gate(key, bad):
    """``max(0.05, nan)`` is 0.05 and ``round(nan)`` raises: each figure is checked before its
    comparison, so a NaN or missing one fails the gate it feeds, with a reason."""
    m = _figures()
    if bad is None:
        del m[key]
    else:
        m[key] = bad
    gates, reasons = _gates(m, Thresholds(), n_facts=10, n_false=10)
    assert not all(gates.values())
    failed = [g for g, ok in gates.items() if not ok]
    assert len(failed) == 1 and any(f"the {failed[0]} gate could not be tested ({key}" in r for r in reasons)


def test_an_infinite_base_perplexity_cannot_pass_as_a_fall():
    """ppl / inf - 1 = -100%: a 'fall' that would pass the gate; the base figure is checked."""
    gates, _ = _gates(_figures(ppl_model=float("inf"), ppl_drift_pct=-100.0), Thresholds(), n_facts=10, n_false=10)
    assert gates["perplexity"] is False


def test_canary_kinds_are_tagged_and_each_kind_is_selected():
    from services.evaluator.canaries import KIND_OF, KINDS, kind_of

    assert set(KIND_OF) == {i.question for i in POOL} and set(KIND_OF.values()) == set(KINDS)
    selected = {kind: sum(kind_of(i) == kind for i in CANARY_ITEMS) for kind in KINDS}
    assert all(n >= 1 for n in selected.values()), selected
    assert selected["knowledge"] == 40  # the general items as before; the other kinds add a few


@pytest.mark.model
@pytest.mark.parametrize("empty", ["canary", "ppl_text", "format_prompts"])
def test_an_empty_fixed_suite_is_a_reject_that_says_what_to_do(loaded, tmp_path, empty):
    """A canary set that is missing or was regenerated empty must not wave every adapter through."""
    model, tokenizer = loaded
    adapter = make_adapter(model, tmp_path / "a", damage=False)
    parts = {"canary": SMALL_SUITE.canary, "ppl_text": SMALL_SUITE.ppl_text,
             "format_prompts": SMALL_SUITE.format_prompts}
    parts[empty] = "" if empty == "ppl_text" else []
    outcome = evaluate(model, tokenizer, candidate_dir=adapter, baseline_dir=None, facts=KNOWN_FACTS,
                       false_facts=FALSE_FACTS, suite=Suite(**parts), greedy_sample=0)
    assert outcome.verdict == "reject" and outcome.gates == {"suite": False} and outcome.metrics == {}
    assert len(outcome.reasons) == 1 and outcome.reasons[0].startswith("cannot judge:")
    assert "canaries.py" in outcome.reasons[0]
    assert not has_adapter(model)


def _scaled_adapter(good: Path, path: Path, factor: float) -> Path:
    """``good`` with every lora_b multiplied by ``factor`` (NaN, or finite but huge)."""
    import mlx.core as mx

    weights = mx.load(str(good / "adapters.safetensors"))
    path.mkdir()
    (path / "adapter_config.json").write_text((good / "adapter_config.json").read_text())
    mx.save_safetensors(str(path / "adapters.safetensors"),
                        {k: (v * factor if k.endswith("lora_b") else v) for k, v in weights.items()})
    return path


@pytest.mark.model
def test_an_overflowing_adapter_is_rejected_for_its_figures(loaded, tmp_path):
    """Finite but enormous weights (a diverged run that did not reach NaN): the model's scores
    overflow to infinity/NaN; every figure that is not a number fails closed, saying why."""
    model, tokenizer = loaded
    good = make_adapter(model, tmp_path / "good", damage=True)
    huge = _scaled_adapter(good, tmp_path / "huge", 1e30)
    outcome = evaluate(model, tokenizer, candidate_dir=huge, baseline_dir=None, facts=KNOWN_FACTS,
                       false_facts=FALSE_FACTS, suite=SMALL_SUITE, greedy_sample=0)
    assert outcome.verdict == "reject", outcome
    assert outcome.gates.get("finite") is False and not outcome.gates["perplexity"], outcome
    assert any("not a finite number" in r and "train again" in r for r in outcome.reasons)
    assert all(v == v and abs(v) != float("inf") for v in outcome.metrics.values())  # what travels is JSON
    assert not has_adapter(model)


@pytest.mark.model
def test_judge_rejects_a_nan_candidate_it_cannot_load(loaded, tmp_path):
    """NaN weights are refused when the adapter is applied: a reject with the reason."""
    from protocol.trainer_api import Evaluate
    from services.common.heavylock import HeavyRunLock
    from services.evaluator.core import judge

    nan = _scaled_adapter(make_adapter(loaded[0], tmp_path / "good", damage=False), tmp_path / "nan", float("nan"))
    evaluation = judge(Evaluate(request_id="e4", adapter_id="ad-nan", candidate_dir=str(nan)),
                       load=lambda: loaded, thresholds=Thresholds(), system_prompt="",
                       lock=HeavyRunLock(tmp_path / "heavy.lock"), lock_timeout_s=5)
    assert evaluation.verdict == "reject" and evaluation.gates == {"evaluated": False}
    assert "NaN or infinity" in evaluation.reasons[0] and not has_adapter(loaded[0])


@pytest.mark.model
def test_the_canary_change_is_reported_per_kind(zero_outcome):
    """A zero LoRA changes nothing: every kind of the default suite is reported, at 0.0 points."""
    from services.evaluator.canaries import KINDS

    outcome, _ = zero_outcome
    assert outcome.canary_by_kind == {kind: 0.0 for kind in sorted(KINDS)}
    assert outcome.to_event("a1", None).canary_by_kind == outcome.canary_by_kind


def test_judge_rejects_when_the_model_cannot_be_loaded(tmp_path):
    """The evaluator's own model failing to load is a reject with the reason, the lock freed."""
    from protocol.trainer_api import Evaluate
    from services.common.heavylock import HeavyRunLock
    from services.evaluator.core import judge

    def load():
        raise FileNotFoundError("models/nowhere/config.json")

    lock = HeavyRunLock(tmp_path / "heavy.lock")
    evaluation = judge(Evaluate(request_id="e3", adapter_id="ad-x", candidate_dir=str(tmp_path)),
                       load=load, thresholds=Thresholds(), system_prompt="", lock=lock, lock_timeout_s=5)
    assert evaluation.verdict == "reject" and evaluation.gates == {"evaluated": False}
    assert "FileNotFoundError" in evaluation.reasons[0] and "circ logs evaluator" in evaluation.reasons[0]
    assert lock.holder() is None
