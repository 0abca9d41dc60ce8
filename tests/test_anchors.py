"""Self-distilled anchors (services.trainer.anchors) and how many steps a night trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.paths import models_dir
from services.evaluator.canaries import FORMAT_POOL, POOL
from services.trainer.anchors import anchor_examples, anchor_prompts, base_replies
from services.trainer.identity import IDENTITY_QA, VALID_QA
from services.trainer.steps import items_with_anchors, steps_for


def test_anchor_prompts_are_disjoint_from_everything_the_gates_measure() -> None:
    prompts = anchor_prompts()
    assert len(prompts) == len(set(prompts)) >= 60
    measured = {item.question for item in POOL} | {p.prompt for p in FORMAT_POOL}
    taught = {q for q, _ in IDENTITY_QA} | {q for q, _ in VALID_QA}
    assert not set(prompts) & measured, "an anchor would rehearse a canary: the gate would stop measuring drift"
    assert not set(prompts) & taught


def test_anchor_examples_cycle_through_usable_pairs() -> None:
    pairs = [("a?", "A."), ("b?", ""), ("c?", "C.")]
    examples = anchor_examples(pairs, system_prompt="sys", count=5)
    assert [e["messages"][1]["content"] for e in examples] == ["a?", "c?", "a?", "c?", "a?"]
    assert all(e["messages"][0] == {"role": "system", "content": "sys"} for e in examples)
    assert all(e["messages"][-1]["role"] == "assistant" and e["messages"][-1]["content"] for e in examples)
    assert anchor_examples(pairs, system_prompt="sys", count=0) == []
    assert anchor_examples([("x?", "")], system_prompt="sys", count=3) == []


def test_steps_are_epochs_over_the_items_within_bounds() -> None:
    assert steps_for(100, epochs=2.0) == 200
    assert steps_for(100, epochs=2.0, batch_size=4) == 50
    assert steps_for(100, epochs=1.5, max_steps=120) == 120
    assert steps_for(0, epochs=2.0) == 1
    assert items_with_anchors(70, 0.3) == 100
    assert items_with_anchors(70, 0.0) == 70
    with pytest.raises(ValueError):
        steps_for(10, epochs=0)


@pytest.mark.model
def test_base_replies_are_the_models_greedy_answers_and_are_cached(tmp_path: Path) -> None:
    from services.lib.models.compute import load_for_serving
    from services.lib.models.install import install_model

    model, tokenizer, _ = load_for_serving(install_model(None, models_dir()), "auto")
    prompts = ["What is the capital of France?", "Name three vegetables."]
    first = base_replies(model, tokenizer, model_id="m", system_prompt="You are helpful.", cache_dir=tmp_path,
                         prompts=prompts, max_tokens=12)
    assert [p for p, _ in first] == prompts
    assert "Paris" in first[0][1]
    cached = list(tmp_path.glob("anchors-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == [list(pair) for pair in first]
    # The second call reads the cache: no model needed.
    again = base_replies(None, None, model_id="m", system_prompt="You are helpful.", cache_dir=tmp_path,
                         prompts=prompts, max_tokens=12)
    assert again == first
    # A different system prompt is a different cache entry.
    with pytest.raises(AttributeError):
        base_replies(None, None, model_id="m", system_prompt="Other.", cache_dir=tmp_path, prompts=prompts,
                     max_tokens=12)
