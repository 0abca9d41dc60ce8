"""A correction replaces what it corrects (issue 12, part 5).

"Actually, we moved from Leeds to Bristol" states the same single-valued
fact (the user's home) as an earlier "We live in Leeds", with a new value.
The earlier memory is then *superseded*: kept (and listed as such by `circ
memory list`), never recalled again, so "where do we live?" finds Bristol.
The night's dataset already lets the latest value win per (subject,
relation) (services/trainer/dataset.py), so the old value is not replayed.

Which facts a memory states comes from the trainer's own rule extractor
(pure Python, no model): the same definition of "the same fact" that decides
what is trained. Multi-valued relations (allergies, hobbies) never supersede:
"I'm allergic to cats" does not undo "I'm allergic to peanuts".

The decision depends only on the index's state when the turn is handled, so
a rebuild from the log (same order) marks the same memories.
"""

from __future__ import annotations

from typing import Any


def fact_pairs(text: str) -> list[tuple[str, str]]:
    """(fact_key, value) for the single-valued facts ``text`` states."""
    from services.lib.facts import MULTI_VALUED, extract_facts, family

    pairs = {}
    for fact in extract_facts(text):
        if family(fact.relation) in MULTI_VALUED:
            continue
        subject, relation = fact.key
        pairs[f"{subject}|{relation}"] = fact.value
    return sorted(pairs.items())


def superseded_by(index: Any, facts: list[tuple[str, str]]) -> list[str]:
    """Live memories that a new memory stating ``facts`` replaces.

    One is replaced when the new memory restates every fact it holds and changes at least one:
    "My name is Priya and my dog is Biscuit" is not replaced by "my dog is called Max" (her
    name would no longer be recalled): both stay recallable.
    """
    wanted = {key: value.casefold() for key, value in facts}
    replaced = set()
    for memory_id in {memory_id for memory_id, _, _ in index.facts_for(list(wanted))}:
        held = {key: value.casefold() for key, value in index.facts_of(memory_id).items()}
        if held and set(held) <= set(wanted) and any(held[k] != wanted[k] for k in held):
            replaced.add(memory_id)
    return sorted(replaced)
