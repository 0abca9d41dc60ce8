"""The memory benchmark's synthetic world: deterministic, fair ground truth (every statement yields exactly
its fact through the redactor and the extractor), updates, distractors that state nothing, fake PII."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.memory import world as W
from bench.memory.world import FAMILIES, STATEMENTS, UPDATABLE, generate_world
from services.lib.facts import (
    MULTI_VALUED,
    TEMPLATES,
    Fact,
    answers,
    extract_facts,
    family,
    normalize,
    questions,
)
from services.lib.privacy.redact import redact


@pytest.fixture(scope="module")
def three_days() -> W.World:
    return generate_world(0, facts_per_day=100, days=3)


def _extracted(text: str) -> set[tuple[tuple[str, str], str]]:
    return {(f.key, normalize(f.value)) for f in extract_facts(redact(text).text)}


def test_deterministic_for_a_seed_and_seeds_differ() -> None:
    a = generate_world(7, facts_per_day=30, days=2)
    assert a == generate_world(7, facts_per_day=30, days=2)
    b = generate_world(8, facts_per_day=30, days=2)
    assert [d.turns for d in a.days] != [d.turns for d in b.days]
    assert {f.key for f in a.all_facts()} != {f.key for f in b.all_facts()}


def test_deterministic_across_processes() -> None:
    """No set or str-hash order leaks in: the world is the same under any PYTHONHASHSEED."""
    code = ("from bench.memory.world import generate_world; w = generate_world(3, facts_per_day=40, days=2); "
            "print(repr([(d.turns, d.pii) for d in w.days] + [w.unstated]))")
    root = Path(__file__).resolve().parents[1]
    outs = {subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}).stdout
            for seed in ("1", "2")}
    assert len(outs) == 1


def test_days_facts_turns_and_unique_keys(three_days: W.World) -> None:
    assert [d.index for d in three_days.days] == [1, 2, 3]
    for day in three_days.days:
        assert len(day.facts) == 100
        assert len(day.distractors) == 100 and len(day.turns) == 200
        assert len(set(day.turns)) == len(day.turns)  # a turn's text identifies it
        turn_of = {t: i for i, t in enumerate(day.turns)}
        assert sorted(turn_of[f.statement] for f in day.facts) == [turn_of[f.statement] for f in day.facts]
        assert set(turn_of[f.statement] for f in day.facts).isdisjoint(day.distractors)
        assert all(f.day == day.index for f in day.facts)
    new = [f.key for f in three_days.all_facts() if f.previous is None]
    assert len(new) == len(set(new)), "each key is stated once, except updates"


def test_updates_replace_an_earlier_value(three_days: W.World) -> None:
    first = three_days.days[0]
    assert not [f for f in first.facts if f.previous is not None]
    updated = three_days.updated()
    assert Counter(f.day for f in updated) == {2: 10, 3: 10}
    for fact in updated:
        assert family(fact.relation) in UPDATABLE and fact.relation not in MULTI_VALUED
        before = three_days.facts_until(fact.day - 1)
        assert fact.key in before, "an update changes a fact stated on an earlier day"
        assert fact.previous == before[fact.key].value != fact.value
        assert three_days.facts_until(fact.day)[fact.key] is fact
    final = three_days.facts_until(3)
    assert len(final) == len({f.key for f in three_days.all_facts()})
    for fact in three_days.all_facts():
        later = [f for f in three_days.all_facts() if f.key == fact.key and f.day > fact.day]
        assert final[fact.key] is (later[-1] if later else fact)
    # an age update is a birthday; a preference update flips to the other option
    for fact in updated:
        if fact.relation == "age":
            assert int(fact.value) == int(fact.previous) + 1
        if fact.relation == "preference":
            assert {fact.value.lower(), fact.previous.lower()} == set(fact.subject.lower().split("|"))


@pytest.mark.parametrize("seed", range(5))
def test_every_statement_yields_exactly_its_fact(seed: int) -> None:
    world = generate_world(seed, facts_per_day=100, days=3)  # the generator validates as it goes ...
    for fact in world.all_facts():  # ... and so does this test, independently
        red = redact(fact.statement)
        assert red.text == fact.statement, "a statement must reach memory unredacted"
        got = _extracted(fact.statement)
        want = {(fact.key, normalize(fact.value))}
        if fact.relation == "pet_name":
            want.add(((fact.value.lower(), "pet_species"), normalize(fact.subject)))
        assert got == want, fact.statement
        if fact.previous is not None and fact.previous in fact.statement:
            assert (fact.key, normalize(fact.previous)) not in got


def test_distractors_state_nothing_and_pii_is_redacted(three_days: W.World) -> None:
    pii_kinds = {"email", "phone", "iban", "card"}
    for day in three_days.days:
        for i in day.distractors:
            assert extract_facts(redact(day.turns[i]).text) == [], day.turns[i]
        assert len(day.pii) == 10 and set(day.pii) <= set(day.distractors)
        for i in day.pii:
            red = redact(day.turns[i])
            assert pii_kinds & set(red.counts), day.turns[i]
            assert "@" not in red.text and not re.search(r"\d{4} \d{4}|\d{3} \d{4}", red.text), red.text
            emails = re.findall(r"[\w.]+@[\w.]+", day.turns[i])
            assert all(e.rstrip(".").endswith(("@example.com", "@example.org")) for e in emails)
        plain = [i for i in day.distractors if i not in day.pii]
        assert all(not pii_kinds & set(redact(day.turns[i]).counts) for i in plain)


def test_generator_rejects_a_template_that_does_not_yield_its_fact(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = "I keep thinking about {v}"
    monkeypatch.setattr(W, "STATEMENTS", {name: (broken,) for name in STATEMENTS})
    with pytest.raises(ValueError, match=re.escape(broken)):
        generate_world(0, facts_per_day=5)


def test_generator_rejects_a_distractor_that_states_a_fact(monkeypatch: pytest.MonkeyPatch) -> None:
    stating = ("I live in Lisbon.", "I work at Siemens.")
    for name in ("SMALL_TALK", "QUESTIONS", "CODE", "URLS", "JSONS", "PII"):
        monkeypatch.setattr(W, name, stating)
    with pytest.raises(ValueError, match="distractor template"):
        generate_world(0, facts_per_day=5)


def test_stating_templates_are_disjoint_from_the_question_and_answer_templates() -> None:
    asked = [t for rel in TEMPLATES.values() for t in (*rel.train, *rel.heldout, *rel.answers)]
    for name, templates in STATEMENTS.items():
        if not name.endswith("/update"):
            assert len(templates) >= 3, name
        for t in templates:
            for q in asked:
                assert t != q and t not in q and q not in t, (t, q)
                assert normalize(t) != normalize(q), (t, q)


def test_statements_are_not_rendered_questions_or_answers(three_days: W.World) -> None:
    for fact in three_days.all_facts():
        f = Fact(subject=fact.key[0], relation=fact.relation, value=fact.value, statement="")
        rendered = {normalize(s) for s in (*questions(f, "train"), *questions(f, "heldout"), *answers(f))}
        sentences = {normalize(s) for s in re.split(r"(?<=[.!?])\s+", fact.statement)}
        assert not sentences & rendered, fact.statement


def test_about_ten_relation_types_in_a_day_of_100_facts() -> None:
    for seed in range(3):
        day = generate_world(seed, facts_per_day=100).days[0]
        families = Counter(family(f.relation) for f in day.facts)
        assert set(families) == set(FAMILIES) and len(families) >= 10
        assert max(families.values()) <= 30, families  # no family crowds out the others


def test_a_week_of_100_facts_a_day_fits_and_values_vary() -> None:
    week = generate_world(1, facts_per_day=100, days=7)
    new = [f for f in week.all_facts() if f.previous is None]
    assert len(new) == len({f.key for f in new}) == 100 + 6 * 90
    for day in week.days[1:]:  # the small families are spread over the week, not used up on day 1
        assert len({family(f.relation) for f in day.facts}) >= 8
    for relation in ("lives_in", "works_at", "job", "birthday"):  # pools larger than the people
        values = [f.value for f in new if f.relation == relation]
        assert len(values) == len(set(values)), relation


def test_unstated_keys_are_never_stated(three_days: W.World) -> None:
    stated = {f.key for f in three_days.all_facts()}
    assert 15 <= len(three_days.unstated) <= 25
    assert len(set(three_days.unstated)) == len(three_days.unstated)
    for subject, relation in three_days.unstated:
        assert (subject, relation) not in stated
        assert family(relation) in TEMPLATES
        assert subject in W.ROLES or subject in W.PETS or subject in W.ITEMS


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        generate_world(0, facts_per_day=-1)
    with pytest.raises(ValueError):
        generate_world(0, update_share=1.5)
    empty = generate_world(0, facts_per_day=0, days=2)
    assert [len(d.turns) for d in empty.days] == [0, 0]
