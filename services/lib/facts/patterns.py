"""Regular-expression fragments the extraction rules are written with.

Internal to the facts package (hence the underscores): :mod:`.rules`
composes them into one pattern per statement shape.
"""

from __future__ import annotations

import re

from services.lib.facts.vocabulary import (
    _MONTHS,
    _WEEKDAYS,
    DEADLINE_ITEMS,
    FAVOURITE_CATEGORIES,
    PERSON_ROLES,
    PET_KINDS,
)

_ALT = lambda words: "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))  # noqa: E731
_KIND = _ALT(PET_KINDS)
_ROLE = _ALT(PERSON_ROLES)
_ITEM = _ALT(DEADLINE_ITEMS)
_CAT = _ALT(FAVOURITE_CATEGORIES)
_MY = r"(?:my|our)"
_WE = r"(?:I|we)"
_ADV = r"(?:(?:currently|now|still|also|actually|just|recently|finally|really|mostly|originally) )?"
# An optional name (or its placeholder) right after a role: "my sister Anna lives in ..."
_APPOS = r"(?:,? (?:\[[A-Z]+\]|(?-i:[A-Z])[\w'-]+),?)?"
_V = r"(?P<v>[^.,;:!?\n()\"]+?)"
_END = (r"(?=\s*(?:$|[.,;:!?\n()\"]|\s(?:and|but|because|since|so|although|though|while|who|which|where|when|if"
        r"|until|as well|or)\b))")
_VLIST = r"(?P<v>[^.;:!?\n()\"]+?)"
_END_LIST = r"(?=\s*(?:$|[.;:!?\n()\"]|\s(?:but|because|since|so|although|though|while|which|when|if|as well)\b))"
_NAME = r"(?P<n>[^\s.,;:!?()\"]+(?: (?-i:[A-Z])[\w'-]+)?)"
_MONTH_RE = r"(?:" + "|".join(_MONTHS) + r"|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)\.?"
_DAY_RE = r"\d{1,2}(?:st|nd|rd|th)?"
_DATE = (rf"(?:(?:the )?{_DAY_RE}(?: of)? {_MONTH_RE}(?:,? \d{{4}})?|{_MONTH_RE} (?:the )?{_DAY_RE}(?:,? \d{{4}})?"
         r"|\d{1,2}[./-]\d{1,2}(?:[./-]\d{2,4})?|\d{4}-\d{2}-\d{2})")
_WEEKDAY_RE = r"(?:" + "|".join(_WEEKDAYS) + r")"
_RELATIVE = (r"(?:(?:next|this) (?:week|month|year|" + _WEEKDAY_RE[3:-1] + r")|(?:the )?end of (?:the|this|next) "
             r"(?:week|month|year|quarter)|tomorrow|today|tonight|the day after tomorrow|(?:in|within) \d+ "
             r"(?:days|weeks)|(?:the )?weekend)")
_WHEN = (rf"(?P<v>(?:(?:{_WEEKDAY_RE},? )?(?:{_DATE})|{_RELATIVE}|{_WEEKDAY_RE}(?: (?:morning|afternoon|evening|night))?)"
         r"(?: at (?:\d{1,2}(?::\d{2})? ?(?:am|pm)?|noon|midnight))?)")
_AGE = r"(?P<v>\d{1,3})(?:\s*(?P<unit>years?|months?|weeks?)(?:\s*old)?|\s*-?\s*years?-old)"

