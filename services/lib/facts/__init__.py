"""Facts a user states about themselves, and the question templates that teach them.

``extract_facts(text)`` turns a user's (already redacted) statement into
:class:`Fact` records with rules: one small pattern family per relation,
applied sentence by sentence. It is deliberately conservative: a sentence
that is a question, a value that carries a redaction placeholder
(``[NAME]``, ``[EMAIL]``, ...) or a value that does not look like its type
gives no fact. A memory with no fact still reaches the night's dataset by
other means (see :mod:`services.trainer.dataset`).

Relations (``Fact.relation``; ``Fact.subject`` is ``"user"`` or the noun the
user used, e.g. ``"cat"``, ``"sister"``, ``"report"``):

==============  ===============================  ==========================================
relation        subject                          example statement
==============  ===============================  ==========================================
person_name     user, or a role (sister, boss)   "my partner is called Sam"
pet_name        the pet's kind (cat, dog)        "my cat is called Miso", "my dog Rex"
pet_species     the pet's name                   (from the pet-name statements) Miso -> cat
lives_in        user, or a role                  "I live in Berlin", "we moved from X to Y"
hometown        user                             "I'm originally from Porto"
works_at        user, or a role                  "I work at Siemens"
job             user, or a role                  "I work as a nurse", "my sister is a dentist"
birthday        user, or a role                  "my birthday is on March 3"
age             user, a role, or a pet's kind    "I'm 34 years old", "my dog Rex is 3 years old"
favourite_<c>   user, or a role                  "my favourite food is sushi" (c: food, colour, ...)
allergy         user, or a role (multi-valued)   "I'm allergic to peanuts and shellfish"
hobby           user (multi-valued)              "my hobby is climbing", "I enjoy knitting"
preference      "<a>|<b>" (the pair, sorted)     "I prefer tea over coffee"
deadline        the item ("report"), or "work"   "my report is due on Friday"
==============  ===============================  ==========================================

``favourite_<c>`` is one template family (:func:`family`) with the category
in the relation name, so "favourite food" and "favourite colour" are
different keys. ``allergy`` and ``hobby`` are multi-valued: a later value
adds to the earlier ones instead of replacing them (the dataset merges
them); every other relation is single-valued and the later statement wins
(``we moved from X to Y`` is just a statement of Y).

Templates: per family three disjoint sets, rendered with the fact's slots:
``TRAIN`` (questions the adapter is trained on), ``HELDOUT`` (questions only
the evaluator asks, never trained on) and ``ANSWERS`` (assistant replies,
each containing the value). Questions are in the user's voice ("What is my
cat called?"), answers in the assistant's ("Your cat is called Miso.").
``distractors()`` draws same-type wrong values (names for names, cities for
cities, dates in the same format for dates, ...) for multiple choice.

Where things live: :mod:`.fact` (the record, ``family``, ``MULTI_VALUED``),
:mod:`.vocabulary` (word lists and distractor pools), :mod:`.templates`
(questions and answers), :mod:`.distractors` (wrong values, ``stable_seed``),
:mod:`.extract` (``extract_facts``) with its :mod:`.rules`, the regex
:mod:`.patterns` they are written with and the value cleaners in
:mod:`.values`. Callers import from this package; the modules are its
organisation, not its interface.
"""

from services.lib.facts.distractors import distractors, merge_values, stable_seed
from services.lib.facts.extract import extract_facts
from services.lib.facts.fact import ABSTAIN, MULTI_VALUED, Fact, family, has_placeholder
from services.lib.facts.templates import (
    FAMILIES,
    RELATIONS,
    TEMPLATES,
    RelationTemplates,
    answers,
    normalize,
    questions,
)
from services.lib.facts.vocabulary import FAVOURITE_CATEGORIES, FAVOURITE_POOLS, POOLS

__all__ = [
    "ABSTAIN", "FAMILIES", "FAVOURITE_CATEGORIES", "FAVOURITE_POOLS", "MULTI_VALUED", "POOLS", "RELATIONS",
    "TEMPLATES", "Fact", "RelationTemplates", "answers", "distractors", "extract_facts", "family",
    "has_placeholder", "merge_values", "normalize", "questions", "stable_seed",
]
