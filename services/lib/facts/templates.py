"""Question and answer templates per relation family, and their rendering for one fact.

Per family three disjoint sets: ``train`` (questions the adapter is trained
on), ``heldout`` (questions only the evaluator asks) and ``answers``
(assistant replies, each containing the value).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from services.lib.facts.fact import Fact, family


@dataclass(frozen=True)
class RelationTemplates:
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    answers: tuple[str, ...]


# Slots (see _slots): {S} subject as asked ("I" / "my sister"), {obj} ("me" /
# "my sister"), {poss} ("my" / "my sister's"), {be} am/is, {do} do/does,
# {Do}, {has} have/has, {s} verb ending ""/"s", {their} my/their, {Y} answer
# subject ("You" / "Your sister"), {Ypos} ("Your" / "Your sister's"), {are}
# are/is, {were} were/was, {have} have/has. Values: {v}, {V} (capitalised),
# {av}/{Av} (with a/an), {age} ("34 years old"), {o} (the other option of
# a preference), {a}/{b} (the options), {k} (pet kind), {n} (pet name),
# {c} (favourite category), {thing}/{ything} ("my report" / "your report").
TEMPLATES: dict[str, RelationTemplates] = {
    "person_name": RelationTemplates(
        train=("What is {poss} name?", "What's {poss} name?", "What {be} {S} called?", "Tell me {poss} name.",
               "Do you know {poss} name?", "What name {do} {S} go by?", "{Poss} name is what?"),
        heldout=("Can you recall what {poss} name is?", "By what name should you address {obj}?",
                 "Which name belongs to {obj}?"),
        answers=("{Ypos} name is {v}.", "{V}.", "{Y} {are} called {v}.")),
    "pet_name": RelationTemplates(
        train=("What is my {k} called?", "What's the name of my {k}?", "What is my {k}'s name?",
               "What did I name my {k}?", "What do I call my {k}?", "Tell me my {k}'s name.",
               "What name does my {k} have?"),
        heldout=("Do you remember what my {k} is called?", "What name did I give my {k}?",
                 "Which name does my {k} answer to?"),
        answers=("Your {k} is called {v}.", "{V}.", "Your {k}'s name is {v}.", "You named your {k} {v}.")),
    "pet_species": RelationTemplates(
        train=("What kind of animal is {n}?", "What species is {n}?", "What type of pet is {n}?",
               "What animal is {n}?", "{n} is what kind of pet?", "Tell me what kind of animal {n} is.",
               "What sort of pet is {n}?"),
        heldout=("Which animal is {n}?", "What kind of creature is {n}?", "Remind me what species my pet {n} is."),
        answers=("{n} is {av}.", "{Av}.", "{n} is your {v}.")),
    "lives_in": RelationTemplates(
        train=("Where {do} {S} live?", "What city {do} {S} live in?", "Where {be} {S} based?",
               "Where {do} {S} live now?", "Tell me where {S} live{s}.", "Which city is {poss} home?",
               "In which town {do} {S} live?"),
        heldout=("What place {do} {S} call home these days?", "Remind me where {S} live{s}.",
                 "Where {do} {S} reside?"),
        answers=("{Y} live{s} in {v}.", "{V}.", "{Y} {are} based in {v}.", "{Ypos} home is in {v}.")),
    "hometown": RelationTemplates(
        train=("Where {be} {S} from?", "Where {do} {S} come from?", "What is {poss} hometown?",
               "Where did {S} grow up?", "Which place {be} {S} originally from?", "What's {poss} home town?",
               "Tell me where {S} grew up."),
        heldout=("Where are {poss} roots?", "Which place did {S} grow up in?", "What town or country {do} {S} hail from?"),
        answers=("{Y} {are} from {v}.", "{V}.", "{Ypos} hometown is {v}.", "{Y} originally come{s} from {v}.")),
    "works_at": RelationTemplates(
        train=("Where {do} {S} work?", "Which company {do} {S} work for?", "Who {do} {S} work for?",
               "Who is {poss} employer?", "Where {be} {S} employed?", "Tell me where {S} work{s}.",
               "What company employs {obj}?"),
        heldout=("At which organisation {do} {S} have a job?", "Who pays {poss} salary?",
                 "Remind me of {poss} workplace."),
        answers=("{Y} work{s} at {v}.", "{V}.", "{Ypos} employer is {v}.", "{Y} {are} employed at {v}.")),
    "job": RelationTemplates(
        train=("What {do} {S} do for a living?", "What is {poss} job?", "What is {poss} profession?",
               "What {do} {S} work as?", "What is {poss} occupation?", "Tell me what {poss} job is.",
               "What line of work {be} {S} in?"),
        heldout=("How {do} {S} earn a living?", "What kind of work {do} {S} do?",
                 "Remind me what {S} {do} professionally."),
        answers=("{Y} work{s} as {av}.", "{Av}.", "{Y} {are} {av}.", "{Y} {are} {av} by profession.")),
    "birthday": RelationTemplates(
        train=("When is {poss} birthday?", "What is {poss} date of birth?", "When was {S} born?",
               "What day is {poss} birthday?", "On what date was {S} born?", "Tell me {poss} birthday.",
               "What's {poss} birth date?"),
        heldout=("When {do} {S} turn a year older?", "When should you wish {obj} a happy birthday?",
                 "Remind me when {poss} birthday falls."),
        answers=("{Ypos} birthday is {v}.", "{V}.", "{Y} {were} born on {v}.", "It's on {v}.")),
    "age": RelationTemplates(
        train=("How old {be} {S}?", "What is {poss} age?", "What age {be} {S}?", "Tell me {poss} age.",
               "What's {poss} current age?", "How old {be} {S} now?", "Do you know how old {S} {be}?"),
        heldout=("Remind me how old {S} {be}.", "Can you recall {poss} age?", "What age {has} {S} reached?"),
        answers=("{Y} {are} {age}.", "{Age}.", "{Ypos} age is {v}.")),
    "favourite": RelationTemplates(
        train=("What is {poss} favourite {c}?", "What's {poss} favorite {c}?", "Which {c} {do} {S} like best?",
               "What {c} {do} {S} love most?", "Tell me {poss} favourite {c}.",
               "What {c} {do} {S} prefer above all others?", "Name {poss} favourite {c}."),
        heldout=("If {S} could pick only one {c}, which would it be?", "Which {c} is {poss} top pick?",
                 "Remind me which {c} {S} like{s} the most."),
        answers=("{Ypos} favourite {c} is {v}.", "{V}.", "{Y} like{s} {v} best.", "{Y} love{s} {v} the most.")),
    "allergy": RelationTemplates(
        train=("What {be} {S} allergic to?", "{Do} {S} have any allergies?", "What allergies {do} {S} have?",
               "What gives {obj} an allergic reaction?", "Tell me what {S} {be} allergic to.",
               "Which allergy {do} {S} have?", "What triggers {poss} allergy?"),
        heldout=("Is there anything {S} {be} allergic to?", "What should you know about {poss} allergies?",
                 "What must {S} avoid due to an allergy?"),
        answers=("{Y} {are} allergic to {v}.", "{V}.", "{Y} {have} an allergy to {v}.")),
    "hobby": RelationTemplates(
        train=("What is {poss} hobby?", "What {do} {S} do in {their} free time?", "What {do} {S} enjoy doing?",
               "What are {poss} hobbies?", "How {do} {S} like to spend {their} spare time?",
               "Tell me about {poss} hobby.", "What pastime {do} {S} enjoy?"),
        heldout=("What activity {do} {S} do for fun?", "What {do} {S} like to do when {S} {be} not working?",
                 "Remind me of {poss} favourite pastime."),
        answers=("{Ypos} hobby is {v}.", "{V}.", "{Y} enjoy{s} {v}.", "{Y} like{s} {v}.")),
    "preference": RelationTemplates(
        train=("Do I prefer {a} or {b}?", "Do I prefer {b} or {a}?", "Which do I like more, {a} or {b}?",
               "Which do I like better: {b} or {a}?", "{A} or {b}: which do I prefer?",
               "What do I prefer, {a} or {b}?", "Would I rather have {b} or {a}?"),
        heldout=("Between {a} and {b}, which is my preference?",
                 "If I had to choose between {b} and {a}, which would I pick?", "Which of {a} and {b} do I favour?"),
        answers=("You prefer {v} over {o}.", "{V}.", "You like {v} more than {o}.", "{V}, not {o}.")),
    "deadline": RelationTemplates(
        train=("When is {thing} due?", "What is the deadline for {thing}?", "By when do I have to finish {thing}?",
               "When do I need to hand in {thing}?", "What's the due date for {thing}?",
               "Tell me when {thing} is due.", "How long do I have until {thing} is due?"),
        heldout=("By which date must {thing} be done?", "Remind me of the deadline for {thing}.",
                 "When must I submit {thing}?"),
        answers=("{Ything} is due by {v}.", "{V}.", "The deadline for {ything} is {v}.",
                 "You have until {v} to finish {ything}.")),
}
FAMILIES = tuple(TEMPLATES)
RELATIONS = FAMILIES  # the relation types; favourite_<c> relations belong to the "favourite" family


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _article(value: str) -> str:
    if re.match(r"(?i)(a|an|the)\s", value):
        return value
    return ("an " if re.match(r"(?i)[aeiou]|hour|honest", value) and not re.match(r"(?i)(uni|euro|one)", value)
            else "a ") + value


def _age_phrase(value: str) -> str:
    if value.isdigit():
        return f"{value} year old" if value == "1" else f"{value} years old"
    return f"{value} old"


def _subject_forms(subject: str) -> dict[str, str]:
    if subject == "user":
        return {"S": "I", "obj": "me", "poss": "my", "Poss": "My", "be": "am", "do": "do", "Do": "Do",
                "has": "have", "s": "", "their": "my", "Y": "You", "Ypos": "Your", "are": "are",
                "were": "were", "have": "have"}
    noun = f"my {subject}"
    return {"S": noun, "obj": noun, "poss": f"{noun}'s", "Poss": _cap(f"{noun}'s"), "be": "is", "do": "does",
            "Do": "Does", "has": "has", "s": "s", "their": "their", "Y": f"Your {subject}",
            "Ypos": f"Your {subject}'s", "are": "is", "were": "was", "have": "has"}


def _slots(fact: Fact) -> dict[str, str]:
    fam = family(fact.relation)
    v = fact.value
    slots = {"v": v, "V": _cap(v), "av": _article(v), "Av": _cap(_article(v)), "age": _age_phrase(v),
             "Age": _cap(_age_phrase(v)), "k": fact.subject, "n": fact.subject}
    if fam == "preference":
        a, b = fact.subject.split("|", 1)
        slots.update(a=a, b=b, A=_cap(a), B=_cap(b), o=b if v.lower() == a.lower() else a)
    elif fam == "deadline":
        thing = "my work" if fact.subject in ("work", "deadline") else f"my {fact.subject}"
        slots.update(thing=thing, ything="your" + thing[2:], Ything="Your" + thing[2:])
    else:
        slots.update(_subject_forms(fact.subject if fam not in ("pet_name", "pet_species") else "user"))
    if fam == "favourite":
        slots["c"] = fact.relation.removeprefix("favourite_")
    return slots


def _render(template: str, fact: Fact) -> str:
    text = template.format(**_slots(fact))
    return re.sub(r"\s+", " ", text).strip()


def _unique(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for item in items:
        key = normalize(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def normalize(text: str) -> str:
    """Comparison key for questions: case, spacing and end punctuation do not matter."""
    return re.sub(r"\s+", " ", re.sub(r"[?.!,;:'\"]", "", text.lower().replace("’", "'"))).strip()


def questions(fact: Fact, kind: str = "train") -> list[str]:
    """The fact's questions of one set (``train`` or ``heldout``), rendered, unique, in template order."""
    templates = TEMPLATES[family(fact.relation)]
    return _unique(_render(t, fact) for t in (templates.train if kind == "train" else templates.heldout))


def answers(fact: Fact) -> list[str]:
    """The fact's answer sentences, each containing the value."""
    return _unique(_render(t, fact) for t in TEMPLATES[family(fact.relation)].answers)

