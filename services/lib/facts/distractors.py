"""Wrong values of the same type as a fact's value, for multiple-choice questions.

Names for names, cities for cities, dates written in the same format for
dates; seeded with :func:`stable_seed`, so every process draws the same ones.
"""

from __future__ import annotations

import hashlib
import random
import re

from services.lib.facts.fact import MULTI_VALUED, Fact, family
from services.lib.facts.templates import _slots
from services.lib.facts.vocabulary import _COUNTRIES, _MONTHS, _WEEKDAYS, FAVOURITE_POOLS, POOLS

_DATE_DAY = re.compile(r"\b(\d{1,2})(st|nd|rd|th)?\b")
_MONTH_WORD = re.compile(r"\b(" + "|".join(_MONTHS) + r")\b")


def stable_seed(*parts: object) -> int:
    """A seed from values, the same in every process (``hash()`` of a str is not)."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def _ordinal(n: int) -> str:
    return "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _date_variants(gold: str, rng: random.Random, k: int) -> list[str]:
    """Wrong dates written like ``gold``: another month, day and/or weekday, same format."""
    weekday_re = re.compile(r"\b(" + "|".join(_WEEKDAYS) + r")\b")
    out: list[str] = []
    for _ in range(k * 10):
        text = gold
        month, day = _MONTH_WORD.search(text), _DATE_DAY.search(text)
        if month and (rng.random() < 0.7 or not day):
            text = text[:month.start()] + rng.choice([m for m in _MONTHS if m != month.group(1)]) + text[month.end():]
        day = _DATE_DAY.search(text)
        if day and (text == gold or rng.random() < 0.5):
            n = rng.randint(1, 28)
            text = text[:day.start()] + f"{n}{_ordinal(n) if day.group(2) else ''}" + text[day.end():]
        weekday = weekday_re.search(text)
        if weekday:  # "Friday at noon" -> "Tuesday at noon"; "Friday 16 May" -> a plausible other pair
            text = text[:weekday.start()] + rng.choice([w for w in _WEEKDAYS if w != weekday.group(1)]) \
                + text[weekday.end():]
        if text.lower() != gold.lower() and text not in out:
            out.append(text)
        if len(out) >= k:
            break
    return out


def _pool_for(fact: Fact) -> tuple[str, ...]:
    fam, v = family(fact.relation), fact.value
    if fam == "person_name":
        return POOLS["person"]
    if fam == "pet_name":
        return POOLS["pet"]
    if fam == "pet_species":
        return POOLS["species"]
    if fam in ("lives_in", "hometown"):
        return POOLS["country"] if v in _COUNTRIES else POOLS["city"]
    if fam == "works_at":
        return POOLS["org_generic"] if re.match(r"(?i)(a|an|the)\s", v) else POOLS["org"]
    if fam == "job":
        return POOLS["job"]
    if fam == "allergy":
        return POOLS["allergen"]
    if fam == "hobby":
        return POOLS["hobby"]
    if fam == "favourite":
        return FAVOURITE_POOLS[fact.relation.removeprefix("favourite_")]
    if fam == "deadline":
        if v in _WEEKDAYS:
            return POOLS["weekday"]
        return POOLS["relative_date"]
    return ()


def distractors(fact: Fact, k: int = 3, seed: int = 0) -> list[str]:
    """``k`` wrong values of the same type as ``fact.value`` (fewer when the type has fewer)."""
    rng = random.Random(stable_seed("distractors", seed, fact.subject, fact.relation, fact.value))
    fam, gold = family(fact.relation), fact.value
    golds = {part.lower() for part in _split_merged(gold)} | {gold.lower()}
    if fam == "preference":
        return [_slots(fact)["o"]]
    if fam == "age":
        n, unit = (int(gold), "") if gold.isdigit() else (int(gold.split()[0]), " " + gold.split(" ", 1)[1])
        near = [x for x in range(max(1, n - 12), n + 13) if x != n]
        return [f"{x}{unit}" for x in rng.sample(near, min(k, len(near)))]
    if fam in ("birthday", "deadline") and (_MONTH_WORD.search(gold) or _DATE_DAY.search(gold)
                                           or re.search(r"\b(" + "|".join(_WEEKDAYS) + r")\b", gold)):
        return _date_variants(gold, rng, k)
    if fam == "birthday":
        return rng.sample(POOLS["date"], k)
    candidates = [c for c in _pool_for(fact) if c.lower() not in golds]
    if fam in MULTI_VALUED and len(golds) > 2:  # a merged "peanuts and shellfish": offer pairs
        parts = len(_split_merged(gold))
        return [_join(rng.sample(candidates, parts)) for _ in range(k)]
    return rng.sample(candidates, min(k, len(candidates)))


def _join(values: list[str]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def _split_merged(value: str) -> list[str]:
    return [p for p in re.split(r",\s*|\s+and\s+", value) if p]


def merge_values(values: list[str]) -> str:
    """Several values of a multi-valued relation as one answer ("peanuts and shellfish")."""
    return _join(list(dict.fromkeys(values)))

