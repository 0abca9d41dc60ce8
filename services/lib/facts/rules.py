"""The extraction rules: one small pattern family per relation, each with a handler.

Importing this module registers every rule in :data:`_RULES`, in file
order; the order matters (a value found twice is kept as the first rule
found it), so new rules go where they belong, not at the end.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterator

from services.lib.facts.fact import has_placeholder
from services.lib.facts.patterns import (
    _ADV,
    _AGE,
    _APPOS,
    _CAT,
    _DATE,
    _END,
    _END_LIST,
    _ITEM,
    _KIND,
    _MY,
    _NAME,
    _ROLE,
    _V,
    _VLIST,
    _WE,
    _WHEN,
)
from services.lib.facts.values import (
    _NOT_GERUNDS,
    _NOT_NAMES,
    _STOP_NAMES,
    _clean_job,
    _clean_name,
    _clean_place,
    _clean_thing,
    _norm_date,
    _resolve_relative_day,
    _role,
    _split_list,
    _titlecase_if_lower,
)
from services.lib.facts.vocabulary import _MONTHS, _SPECIES, FAVOURITE_CATEGORIES, PET_KINDS

# Categories whose values are common nouns: a capital is the sentence start, not a name.
_LOWERCASE_FAVOURITES = frozenset({"food", "colour", "drink", "sport", "animal", "season", "fruit", "flower",
                                   "dessert", "vegetable", "instrument"})


# Each rule: (compiled pattern, handler(match, sentence, ts) -> iterable of (subject, relation, value)).
_Rule = tuple[re.Pattern[str], object]
_RULES: list[_Rule] = []


def _rule(pattern: str):  # noqa: ANN202
    def register(handler):  # noqa: ANN001, ANN202
        _RULES.append((re.compile(pattern, re.IGNORECASE), handler))
        return handler
    return register


# -- names ------------------------------------------------------------------
@_rule(rf"\b{_MY} (?P<k>{_KIND})(?:'s name is| is called| is named| goes by(?: the name)?) {_NAME}")
def _pet_named(m, _s, _ts):
    yield from _pet(m.group("k"), m.group("n"), strong=True)


@_rule(rf"\b(?:{_WE} (?:have|'ve got|have got|own|adopted|got)|and) an? (?:new |little |young |old )?(?P<k>{_KIND})"
       rf",? (?:called|named) {_NAME}")
def _pet_have(m, _s, _ts):
    yield from _pet(m.group("k"), m.group("n"), strong=True)


@_rule(rf"\b{_MY} (?P<k>{_KIND}),? (?P<n>(?-i:[A-Z])[\w'-]+)\b(?!')")
def _pet_appositive(m, _s, _ts):
    yield from _pet(m.group("k"), m.group("n"), strong=False)


@_rule(rf"^(?P<n>(?-i:[A-Z])[\w'-]+) is {_MY} (?P<k>{_KIND})\b")
def _pet_is_my(m, _s, _ts):
    yield from _pet(m.group("k"), m.group("n"), strong=False)


def _pet(kind: str, raw_name: str, *, strong: bool) -> Iterator[tuple[str, str, str]]:
    if not raw_name[:1].isupper() and not strong:
        return
    name = _clean_name(raw_name.split()[0] if not strong else raw_name, strong=strong)
    if name is None or name.lower() in PET_KINDS:
        return
    kind = kind.lower()
    yield kind, "pet_name", name
    yield name, "pet_species", _SPECIES.get(kind, kind)


@_rule(rf"\b{_MY} (?P<r>{_ROLE})(?:'s name is| is called| is named| goes by(?: the name)?) {_NAME}")
def _person_named(m, _s, _ts):
    name = _clean_name(m.group("n"), strong=True)
    if name:
        yield _role(m.group("r")), "person_name", name


@_rule(rf"\b{_MY} (?P<r>{_ROLE}) is (?P<n>(?-i:[A-Z])[\w'-]+(?: (?-i:[A-Z])[\w'-]+)?)(?=\s*(?:$|[.,;!?]|\s(?:and|but|who)\b))")
def _person_is(m, _s, _ts):
    name = _clean_name(m.group("n"), strong=False)
    if name and m.group("n")[0].isupper():
        yield _role(m.group("r")), "person_name", name


@_rule(rf"\b{_MY} (?P<r>{_ROLE}),? (?P<n>(?-i:[A-Z])[\w'-]+)\b(?!')")
def _person_appositive(m, _s, _ts):
    if m.group("n")[0].isupper() and m.group("n") not in _NOT_NAMES and m.group("n").lower() not in _STOP_NAMES:
        name = _clean_name(m.group("n"), strong=False)
        if name:
            yield _role(m.group("r")), "person_name", name


@_rule(rf"\bmy name is {_NAME}")
@_rule(rf"\bI(?:'m| am) called {_NAME}")
def _user_name(m, _s, _ts):
    name = _clean_name(m.group("n"), strong=True)
    if name:
        yield "user", "person_name", name


@_rule(r"\b(?:please )?call me (?P<n>(?-i:[A-Z])[\w'-]+)\b")
def _user_call_me(m, _s, _ts):
    name = _clean_name(m.group("n"), strong=False)
    if name and m.group("n")[0].isupper():
        yield "user", "person_name", name


# -- places and work ---------------------------------------------------------
@_rule(rf"\b{_WE} {_ADV}(?:live|reside|am living|'m living|are living|'re living) in {_V}{_END}")
@_rule(rf"\b{_WE}(?:'m|'re| am| are) {_ADV}based in {_V}{_END}")
@_rule(rf"\b{_MY} home is (?:now )?in {_V}{_END}")
def _lives(m, _s, _ts):
    place = _clean_place(m.group("v"))
    if place:
        yield "user", "lives_in", place


@_rule(rf"\b{_WE} {_ADV}(?:moved|relocated)(?: (?:back|over|house))?(?: from (?P<old>[^.,;!?\n]+?))? to "
       rf"(?P<v>[^.,;:!?\n()\"]+?)(?=\s*(?:$|[.,;:!?\n()\"]|\s(?:and|but|because|since|so|from|when|where|after|"
       r"for|with|in \d{4}|last|this|a few|two|three)\b))")
def _moved(m, _s, _ts):
    place = _clean_place(m.group("v"))
    if place:
        yield "user", "lives_in", place


@_rule(rf"\b{_MY} (?P<r>{_ROLE}){_APPOS} (?:lives|is living|is based|resides|moved|has moved|relocated) "
       rf"(?:in|to) {_V}{_END}")
def _role_lives(m, _s, _ts):
    place = _clean_place(m.group("v"))
    if place:
        yield _role(m.group("r")), "lives_in", place


@_rule(rf"\bI(?:'m| am) {_ADV}from {_V}{_END}")
@_rule(rf"\bI {_ADV}come from {_V}{_END}")
@_rule(rf"\bI grew up in {_V}{_END}")
@_rule(rf"\bI was born (?:and raised )?in {_V}{_END}")
@_rule(rf"\bmy home ?town is {_V}{_END}")
def _hometown(m, _s, _ts):
    place = _clean_place(m.group("v"))
    if place:
        yield "user", "hometown", place


_NOT_ORGS = {"home", "a living", "myself", "himself", "herself", "themselves", "free", "it", "this", "that",
             "night", "nights", "weekends", "the weekend", "times", "the moment", "least", "the office", "work",
             "my desk", "a desk", "fun", "money", "nothing", "peace", "a distance"}
_ORG_END = (r"(?=\s*(?:$|[.,;:!?\n()\"]|\s(?:and|but|because|since|so|as|in|on|where|when|which|who|for \d|"
            r"for (?:a|the|about|over|almost|nearly)|now|these days|at the moment)\b))")


@_rule(rf"\b(?:{_WE}|and) {_ADV}(?:work|am working|'m working|are working|'re working) (?:at|for) {_V}{_ORG_END}")
@_rule(rf"\bI(?:'m| am) {_ADV}employed (?:at|by) {_V}{_ORG_END}")
@_rule(rf"\bmy employer is {_V}{_ORG_END}")
@_rule(rf"\bI {_ADV}(?:started|began) (?:a new job |my new job |working |a job )?at {_V}{_ORG_END}")
@_rule(rf"\bI work as an? [\w -]+? (?:at|for) {_V}{_ORG_END}")
def _works(m, _s, _ts):
    org = _clean_thing(m.group("v"))
    if org and org.lower() not in _NOT_ORGS:
        yield "user", "works_at", _titlecase_if_lower(org) if len(org.split()) == 1 else org


@_rule(rf"\b{_MY} (?P<r>{_ROLE}){_APPOS} (?:works|is working) (?:at|for) {_V}{_ORG_END}")
def _role_works(m, _s, _ts):
    org = _clean_thing(m.group("v"))
    if org and org.lower() not in _NOT_ORGS:
        yield _role(m.group("r")), "works_at", org


_JOB_END = r"(?=\s*(?:$|[.,;:!?\n()\"]|\s(?:and|but|at|for|in|since|because|so|who|with|now)\b))"


@_rule(rf"\bI {_ADV}(?:work|am working|'m working) as {_V}{_JOB_END}")
@_rule(rf"\bI(?:'m| am) {_ADV}employed as {_V}{_JOB_END}")
@_rule(rf"\bmy (?:job title|profession|occupation) is {_V}{_JOB_END}")
def _job(m, _s, _ts):
    job = _clean_job(m.group("v"), need_known=False)
    if job:
        yield "user", "job", job


@_rule(rf"\bmy job is (?:being )?(?P<v>an? [^.,;:!?\n()\"]+?){_JOB_END}")
@_rule(rf"\bI(?:'m| am) {_ADV}an? (?P<v>[^.,;:!?\n()\"]+?){_JOB_END}")
def _job_known(m, _s, _ts):
    job = _clean_job(m.group("v"), need_known=True)
    if job:
        yield "user", "job", job


@_rule(rf"\b{_MY} (?P<r>{_ROLE}){_APPOS} (?:is|works as) an? (?P<v>[^.,;:!?\n()\"]+?){_JOB_END}")
def _role_job(m, _s, _ts):
    job = _clean_job(m.group("v"), need_known=True)
    if job:
        yield _role(m.group("r")), "job", job


# -- dates and ages ------------------------------------------------------------
@_rule(rf"\b{_MY} (?:(?P<r>{_ROLE})'s )?birthday is (?:on )?(?P<v>{_DATE})")
@_rule(rf"\bI was born on (?P<v>{_DATE})")
@_rule(rf"\b{_MY} (?P<r2>{_ROLE}){_APPOS} was born on (?P<v>{_DATE})")
def _birthday(m, _s, _ts):
    role = m.groupdict().get("r") or m.groupdict().get("r2")
    yield (_role(role) if role else "user"), "birthday", _norm_date(m.group("v"))


@_rule(r"\b(?:it's|it is|today is) my birthday(?: today)?\b")
def _birthday_today(_m, _s, ts):
    if ts > 0:
        day = _dt.datetime.fromtimestamp(ts).date()
        yield "user", "birthday", f"{_MONTHS[day.month - 1]} {day.day}"


@_rule(rf"\bI(?:'m| am) {_AGE}")
@_rule(r"\bI(?:'m| am) (?P<v>\d{1,3})(?=\s*(?:$|[.!]))")
@_rule(r"\bI (?:just )?turned (?P<v>\d{1,3})\b(?! (?:minutes|hours|percent|%))")
def _age(m, _s, _ts):
    unit = (m.groupdict().get("unit") or "years").lower()
    n = int(m.group("v"))
    if unit.startswith("year") and 1 <= n <= 120:
        yield "user", "age", str(n)


@_rule(rf"\b{_MY} (?P<k>{_KIND}|{_ROLE}){_APPOS} is (?:now )?{_AGE}")
@_rule(rf"\b{_MY} (?P<k>{_KIND}|{_ROLE}){_APPOS} is (?:now )?(?P<v>\d{{1,2}})(?=\s*(?:$|[.!]))")
def _other_age(m, _s, _ts):
    subject = _role(m.group("k"))
    n = int(m.group("v"))
    unit = (m.groupdict().get("unit") or "years").lower()
    if not 0 <= n <= 120:
        return
    if unit.startswith("year"):
        yield subject, "age", str(n)
    else:
        yield subject, "age", f"{n} {unit.rstrip('s')}{'s' if n != 1 else ''}"


@_rule(rf"\b(?:{_MY}|the) (?:(?P<i>{_ITEM}) )?deadline(?: for {_MY} (?P<i2>{_ITEM}))? is (?:on |by |at )?{_WHEN}")
@_rule(rf"\b{_MY} (?P<i3>{_ITEM}) is due (?:on |by |at |before )?{_WHEN}")
@_rule(rf"\bI (?:have|need|must|got) to (?:submit|finish|hand in|deliver|complete|send|turn in|file) "
       rf"(?:{_MY}|the) (?P<i4>{_ITEM}) (?:by|before|on|until) {_WHEN}")
@_rule(rf"\b{_MY} (?P<i5>{_ITEM}) (?:has|needs) to be (?:done|finished|submitted|in|handed in) (?:by|on|before) {_WHEN}")
def _deadline(m, _s, ts):
    groups = m.groupdict()
    item = next((groups[g] for g in ("i", "i2", "i3", "i4", "i5") if groups.get(g)), None)
    value = _resolve_relative_day(_norm_date(m.group("v")), ts)
    yield (item.lower() if item else "work"), "deadline", value


# -- likes ---------------------------------------------------------------------
@_rule(rf"\b{_MY} (?:(?P<r>{_ROLE})'s )?(?:all[- ]time |absolute |very )?favou?rite (?P<c>{_CAT}) is {_V}{_END}")
@_rule(rf"^(?P<v2>[\w' -]{{1,40}}?) (?:is|are) {_MY} (?:all[- ]time |absolute )?favou?rite (?P<c2>{_CAT})\b")
def _favourite(m, _s, _ts):
    groups = m.groupdict()
    category = FAVOURITE_CATEGORIES[(groups.get("c") or groups.get("c2")).lower()]
    value = _clean_thing(groups.get("v") or groups.get("v2"), 4)
    if value and category in _LOWERCASE_FAVOURITES and value[1:] == value[1:].lower():
        value = value[:1].lower() + value[1:]  # "Sushi is my favourite food": a sentence start, not a name
    if value and not re.match(r"(?i)(it|that|this|probably|definitely|maybe)\b", value):
        role = groups.get("r")
        yield (_role(role) if role else "user"), f"favourite_{category}", value


@_rule(rf"\bI(?:'m| am) (?:(?:very|severely|highly|deathly|mildly|also|really|quite|super|so) )*allergic to "
       rf"{_VLIST}{_END_LIST}")
@_rule(rf"\bI have an? (?:severe |mild |bad |serious )?allergy to {_VLIST}{_END_LIST}")
def _allergy(m, _s, _ts):
    for value in _split_list(m.group("v")):
        value = _clean_thing(value, 3)
        if value:
            yield "user", "allergy", value


@_rule(r"\bI have an? (?:severe |mild |bad |serious )?(?P<v>[a-z][\w-]*(?: [a-z][\w-]*)?) allergy\b")
def _allergy_noun(m, _s, _ts):
    value = _clean_thing(m.group("v"), 2)
    if value and value.lower() not in ("severe", "mild", "bad", "serious", "food", "slight", "new"):
        yield "user", "allergy", value


@_rule(rf"\b{_MY} (?P<r>{_ROLE}){_APPOS} is (?:(?:very|severely|highly|also|really) )*allergic to {_VLIST}{_END_LIST}")
def _role_allergy(m, _s, _ts):
    for value in _split_list(m.group("v")):
        value = _clean_thing(value, 3)
        if value:
            yield _role(m.group("r")), "allergy", value


@_rule(rf"\bmy (?:favou?rite |main |big )?hobby is {_VLIST}{_END_LIST}")
@_rule(rf"\bmy hobbies (?:are|include) {_VLIST}{_END_LIST}")
def _hobby(m, _s, _ts):
    for value in _split_list(m.group("v")):
        value = _clean_thing(value, 4)
        if value:
            yield "user", "hobby", value.lower() if value[1:] == value[1:].lower() else value


@_rule(r"\bI (?:really |absolutely |just )?(?:enjoy|love) (?P<v>[a-z]+ing(?: [\w']+){0,3}?)(?=\s*(?:$|[.,;!?]|\s(?:and|"
       r"in my|on|when|with|because|every|at|whenever|during|since|for)\b))")
def _hobby_gerund(m, _s, _ts):
    value = m.group("v")
    head = value.split()[0].lower()
    if len(head) >= 5 and head not in _NOT_GERUNDS and not has_placeholder(value):
        yield "user", "hobby", value


_OPT = r"[\w' -]{1,30}?"


@_rule(rf"\bI (?:much |really |definitely |generally |usually |strongly |always |totally )?prefer (?P<a>{_OPT}) "
       rf"(?:over|to|rather than|more than|instead of) (?P<b>{_OPT}){_END}")
@_rule(rf"\bI (?:like|love|enjoy) (?P<a>{_OPT}) (?:much |a lot |way |far )?(?:more|better) than (?P<b>{_OPT}){_END}")
@_rule(rf"\bI(?:'d| would) (?:much )?rather (?:have |drink |eat |play |watch )?(?P<a>{_OPT}) than "
       rf"(?:have |drink |eat |play |watch )?(?P<b>{_OPT}){_END}")
def _preference(m, _s, _ts):
    a = _clean_option(m.group("a"))
    b = _clean_option(m.group("b"))
    if a and b and a.lower() != b.lower():
        first, second = sorted((a, b), key=str.lower)
        yield f"{first}|{second}", "preference", a


def _clean_option(raw: str) -> str | None:
    value = re.split(r"\s(?:in|at|on|during|when|for|because|since|with|most|every)\s", " " + raw.strip() + " ")[0]
    value = _clean_thing(value.strip(), 3)
    if value is None or "|" in value or value.lower() in ("it", "that", "this", "them", "to", "not"):
        return None
    return value


