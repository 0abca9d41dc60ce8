"""Turning the text a rule matched into a clean value, or refusing it.

Each ``_clean_*`` returns ``None`` for what does not look like its type
(a pronoun for a place, a digit in a name, ...): a refused value is no fact.
Internal to the facts package (hence the underscores).
"""

from __future__ import annotations

import datetime as _dt
import re

from services.lib.facts.fact import has_placeholder
from services.lib.facts.vocabulary import _MONTH_ABBR, _MONTHS, _ROLE_CANON, _WEEKDAYS, JOB_NOUNS

_STOP_NAMES = {"the", "and", "but", "is", "was", "he", "she", "it", "they", "we", "you", "i", "a", "an", "my",
               "his", "her", "their", "our", "your", "who", "that", "this", "just", "also", "really", "very",
               "so", "not", "still", "now", "always", "never", "too", "from", "in", "at", "on", "with"}
_NOT_NAMES = {"American", "British", "English", "German", "French", "Italian", "Spanish", "Dutch", "Polish",
              "Irish", "Scottish", "Swiss", "Swedish", "Danish", "Norwegian", "Greek", "Turkish", "Chinese",
              "Japanese", "Korean", "Indian", "Mexican", "Brazilian", "Canadian", "Australian", "Catholic",
              "Jewish", "Muslim", "Christian", "Buddhist", "Hindu", "Vegan", "Vegetarian", "Sick", "Home",
              "Here", "There", "Retired", "Pregnant", "Happy", "Sad", "Great", "Fine", "Okay", "Ok"}
_NOT_PLACES = {"team", "office", "city", "country", "village", "town", "area", "suburbs", "house", "apartment",
               "flat", "home", "school", "work", "future", "past", "fear", "peace", "hope", "denial", "hiding",
               "bed", "hospital", "love", "debt", "luck", "trouble", "a", "an", "here", "there", "it", "them",
               "the city", "the countryside", "the suburbs", "the same place", "the area", "the office"}
_PRONOUNS = {"i", "me", "myself", "we", "us", "you", "he", "she", "it", "they", "him", "her", "them", "my", "our",
             "his", "their", "its", "home", "nobody", "noone", "anyone", "someone", "everyone", "everything",
             "something", "nothing", "anything", "a living", "free", "myself and", "fun"}
_NOT_GERUNDS = {"being", "thing", "nothing", "something", "anything", "everything", "morning", "evening",
                "during", "spring", "string", "ceiling", "wedding", "pudding", "king", "ring", "wing", "bring",
                "sibling", "darling", "living", "working", "having", "getting", "feeling", "knowing", "seeing",
                "thinking", "trying", "doing", "saying", "using", "talking", "meeting", "building", "sing",
                "sting", "swing", "ding", "bling", "ping", "wearing", "waiting", "hearing", "telling"}
_TRAILING = re.compile(
    r"\s+(?:now|nowadays|currently|these days|at the moment|right now|for now|anymore|again|recently|too|as well"
    r"|full[- ]time|part[- ]time|for (?:a|the|about|over|almost|nearly|\d).*|since .*|with .*|after .*"
    r"|before .*|near .*|last \w+.*|this \w+.*|next \w+.*|in \d{4}.*|\w+ (?:years?|months?|weeks?|days?) ago.*"
    r"|(?:a|one|two|three|four|five|six|seven|eight|nine|ten|\d+) (?:years?|months?|weeks?|days?).*)$",
    re.IGNORECASE)



def _trim(value: str) -> str:
    value = value.strip(" '\"-")
    while True:
        trimmed = _TRAILING.sub("", value).strip(" '\"-")
        if trimmed == value:
            return value
        value = trimmed


def _titlecase_if_lower(value: str) -> str:
    if value != value.lower():
        return value
    small = {"de", "la", "le", "del", "am", "upon", "on", "of", "the", "and", "van", "von", "da", "di"}
    words = value.split()
    return " ".join(w if i and w in small else w[:1].upper() + w[1:] for i, w in enumerate(words))


def _words(value: str) -> list[str]:
    return value.split()


def _clean_name(raw: str, *, strong: bool) -> str | None:
    value = raw.strip(" '\"-")
    if not value or has_placeholder(value) or any(c.isdigit() for c in value):
        return None
    words = _words(value)
    # "Miso and ...": a name's later words are capitalised ([A-Z] in an IGNORECASE pattern is not)
    while len(words) > 1 and not words[-1][:1].isupper():
        words.pop()
    value = " ".join(words)
    if len(words) > 3 or words[0].lower() in _STOP_NAMES or words[0] in _NOT_NAMES:
        return None
    if not all(re.fullmatch(r"[^\W\d_][\w'-]*", w) for w in words):
        return None
    if not value[0].isupper() and not strong:
        return None
    return _titlecase_if_lower(value)


def _clean_place(raw: str) -> str | None:
    value = _trim(raw)
    if not value or has_placeholder(value) or any(c.isdigit() for c in value):
        return None
    low = value.lower()
    words = _words(value)
    if (low in _NOT_PLACES or low in _PRONOUNS or words[0].lower() in _NOT_PLACES or len(words) > 4
            or words[0].lower() in ("a", "an", "my", "our")):
        return None
    if words[0].lower() == "the" and (len(words) < 2 or words[1][:1].islower()):
        return None
    if not all(re.fullmatch(r"[^\W\d_][\w'.-]*", w) for w in words):
        return None
    return _titlecase_if_lower(value)


def _clean_thing(raw: str, max_words: int = 5) -> str | None:
    value = _trim(raw)
    if not value or has_placeholder(value) or value.lower() in _PRONOUNS:
        return None
    words = _words(value)
    if len(words) > max_words or words[0].lower() in ("i", "we", "he", "she", "they", "it", "you", "me", "myself"):
        return None
    if re.match(r"\d", value) and not re.match(r"\d+[A-Za-z]", value):
        return None
    return value


def _clean_job(raw: str, *, need_known: bool) -> str | None:
    value = _clean_thing(raw, 4)
    if value is None:
        return None
    value = re.sub(r"(?i)^(?:a|an|the)\s+", "", value)
    head = value.split()[-1].lower() if value else ""
    if not value or (need_known and head not in JOB_NOUNS):
        return None
    return value if any(c.isupper() for c in value[1:]) else value.lower()


def _split_list(raw: str) -> list[str]:
    """'peanuts, shellfish and cats' -> 3 values; stops at a part that starts a new clause."""
    out = []
    for part in re.split(r",\s*(?:and\s+|or\s+)?|\s+and\s+|\s+or\s+|\s*&\s*", raw):
        part = _trim(part)
        if not part:
            continue
        first = part.split()[0].lower()
        if first in ("i", "i'm", "we", "my", "he", "she", "it", "they", "you", "also", "am", "is", "was"):
            break
        out.append(part)
    return out


def _resolve_relative_day(value: str, ts: float) -> str:
    """'tomorrow' said on a known day becomes that date, so it still means something next week."""
    offsets = {"today": 0, "tonight": 0, "tomorrow": 1, "the day after tomorrow": 2}
    low = value.lower()
    base = next((w for w in sorted(offsets, key=len, reverse=True) if low.startswith(w)), None)
    if base is None or ts <= 0:
        return value
    day = _dt.datetime.fromtimestamp(ts).date() + _dt.timedelta(days=offsets[base])
    rest = value[len(base):]
    return f"{_WEEKDAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]}{rest}"


def _norm_date(value: str) -> str:
    value = value.strip()
    return re.sub(r"\b(Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)\b\.?",
                  lambda m: _MONTH_ABBR[m.group(1).lower()[:4] if m.group(1).lower() == "sept" else
                                        m.group(1).lower()[:3]], value, flags=re.IGNORECASE)


def _role(word: str) -> str:
    word = word.lower()
    return _ROLE_CANON.get(word, word)

