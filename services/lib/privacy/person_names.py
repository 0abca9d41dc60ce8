"""Person names, as far as rules allow: cue phrases, titles, speech verbs and a
shipped first-name list; pets, places and organisations named after people are not persons.

Only used with ``redact(text, names=True)``. Detectors yield ``(start, end)`` spans of the original text; :mod:`.redact`
resolves overlaps and places the placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from services.lib.privacy.chars import _LO, _UP, _lower
from services.lib.privacy.name_lists import _AMBIGUOUS_NAMES, _FIRST_NAMES, _NAME_STOP

# A capitalised name word: "Anne", "O'Brien", "Hahn-Biggen", "Rémy-Émile".
# The apostrophe part is for "O'Brien", "D’Angelo": a possessive "'s"/"’s" is
# not part of the name ("Anna's birthday" -> "[NAME]'s birthday").
_NAME_WORD = rf"[{_UP}][{_LO}]*(?:['’](?!s\b)[{_UP}]?[{_LO}]+)?(?:-[{_UP}][{_LO}]+)*"
_PARTICLE = r"(?:van der|van den|van de|van 't|van|von der|von|de la|de le|de|di|da|del|della|du|le|la|ten|ter|zu|dos|das|bin|ibn|al|el|st\.?)"
_FULL_NAME = rf"{_NAME_WORD}(?:[ ](?:{_PARTICLE}[ ])?{_NAME_WORD}){{0,3}}"
_NAME_TOKEN = re.compile(rf"(?<![\w@./#:\[-]){_NAME_WORD}(?![\w@\]]|\.[a-z])")

# Strong cues: whatever capitalised words follow is a name ("my name is Kara").
# Cue regexes run case-sensitively on the ASCII-lower-cased text (see _lower);
# the name after the cue is matched on the original text.
_FULL_NAME_RE = re.compile(_FULL_NAME)
_NAME_INTRO = re.compile(
    r"\b(?:my name is|my name's|my full name is|name:|i am called|i'm called|call me|"
    r"ich heiße|ich heisse|mein name ist|je m'appelle|je m’appelle|mon nom est|mi chiamo|"
    r"il mio nome è|ik heet|mijn naam is|signed)[ \t\n]+"
)
# Greetings and sign-offs address a person, unless the word is "Team", "All", ...
_NAME_GREETING = re.compile(
    r"\b(?:dear|hi|hello|hey|hiya|morning|thanks|thank you|cheers|regards|sincerely|"
    r"best wishes|best|xoxo|liebe|lieber|hallo|bonjour|salut|ciao|cara|caro|beste|hoi),?[ \t\n]+"
)
_GREETING_END = re.compile(r"[ \t]*(?:[,!.:;\n]|$)")
_GREETING_NOT_NAMES = frozenset(
    "Team All Everyone Everybody There World Folks Guys Friends Sir Madam Mum Mom Dad Mama Papa Boss Love "
    "Again Anyway Ok OK Okay Everyone Gang Class Both You".split()
)
# Honorifics and titles (EN, DE, FR, IT, NL): the title stays, the name goes.
_NAME_TITLE = re.compile(
    r"(?<![\w-])(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Herr|Frau|Mme|Mlle|Sig|Sig\.ra|Sig\.na|Signor|"
    r"Signora|Dott|Dott\.ssa|Ing|Avv|Mevr|Dhr|Fr|Rev|Capt|Col|Gen|Sgt|Lt|Judge|Uncle|Aunt|Auntie|Grandma|Grandpa)"
    rf"\.?[ ]+(?P<n>{_FULL_NAME})"
)
# Medium cues: verbs that take a person. A capitalised *pair* after them is a
# person ("met Jodi Curtis"); a single word must be a known first name.
_NAME_VERB = re.compile(
    r"\b(?:i'm|i’m|i am|this is|it's|it’s|c'est|ik ben|ich bin|sono|with|ask|asked|"
    r"met|meet|meeting|tell|told|thanks to|thank|invite|invited|visit|visited|call|"
    r"called|text|texted|email|emailed|ping|pinged|message|messaged|saw|see|hug|"
    r"hugged|married|dating|miss|missed|remind|reminded|brother|sister|friend|wife|"
    r"husband|boss|colleague|cousin|son|daughter|mom|mum|dad|partner|neighbou?r)[ ]+"
)
# "<Name> said", "<Name> and I": the subject of a speech verb is a person.
_NAME_SPEECH = re.compile(
    rf"(?<![\w-])(?P<n>{_FULL_NAME})[ ]+(?:said|says|told|tells|asked|asks|wrote|writes|replied|mentioned|"
    r"thinks|thought|texted|emailed|messaged|suggested|agreed|explained|answered|added|noted|confirmed|"
    r"promised|called me|calls me|is coming|came over|will come|and I|and me|sagte|meinte|a dit|ha detto|zei)\b"
)


def _name_words(span_text: str) -> list[str]:
    return [w for w in span_text.split(" ") if w and w[0].isupper()]


def _trim_name(text: str, start: int, end: int) -> tuple[int, int] | None:
    """Drop stop-words at either end ("John Monday" -> "John"); None if nothing name-like is left."""
    words = text[start:end].split(" ")
    while words and (words[-1] in _NAME_STOP or not words[-1][:1].isupper()):
        words.pop()
    while words and (words[0] in _NAME_STOP or not words[0][:1].isupper()):
        start += len(words[0]) + 1
        words.pop(0)
    if not words:
        return None
    return start, start + len(" ".join(words))


def _known_first_name(word: str, *, strong_follow: bool) -> bool:
    base = re.split(r"[-'’]", word, maxsplit=1)[0]
    if word in _FIRST_NAMES or base in _FIRST_NAMES:
        return strong_follow or (word not in _AMBIGUOUS_NAMES and base not in _AMBIGUOUS_NAMES)
    return False


def _plain_name_words(words: list[str]) -> bool:
    """Capitalised words that could be a name: no stop-words, no ALL-CAPS acronyms."""
    return bool(words) and not any(w in _NAME_STOP or (w.isupper() and len(w) > 1) for w in words)


def _unknown_pair(words: list[str]) -> bool:
    """Exactly "First Last" shaped: two plain capitalised words ("Visual Studio Code" is three)."""
    return len(words) == 2 and _plain_name_words(words)


def _cued_names(cue: re.Pattern[str], text: str) -> Iterator[tuple[re.Match[str], tuple[int, int]]]:
    """(cue match, trimmed name span) for each cue followed by capitalised words."""
    for m in cue.finditer(_lower(text)):
        name = _FULL_NAME_RE.match(text, m.end())
        if name:
            span = _trim_name(text, *name.span())
            if span:
                yield m, span


# Pets are not persons, and their names are exactly what a user wants
# remembered ("my dog is called Rex"): a name right after a pet noun (and an
# optional naming phrase) is left alone.
_PET_BEFORE = re.compile(
    r"\b(?:dog|dogs|puppy|pup|cat|cats|kitten|kitty|pet|pets|hamster|rabbit|bunny|parrot|bird|budgie|"
    r"fish|goldfish|horse|pony|tortoise|turtle|guinea pig|ferret|gecko|snake|lizard|rat|mouse)"
    r"(?:'s name is|’s name is| is called| is named| called| named| was called| was named|,)?[ ]+$",
    re.IGNORECASE,
)


def _is_pet_name(text: str, start: int) -> bool:
    return bool(_PET_BEFORE.search(text[max(0, start - 40):start]))


# Places, organisations, products and titles that are built on a person's name ("St. Olaf
# hospital", "Lincoln Memorial", "Victoria station", "Tesla Model 3", "Harry Potter book"):
# never persons, in either name mode (issue 12: "St. Olaf hospital" had lost "Olaf").
_SAINT_BEFORE = re.compile(r"(?:st|saint|san|santa|sankt|sainte|ste|são|sao)\.?[ ]+$", re.IGNORECASE)
_NOT_PERSON_AFTER = re.compile(
    r"^(?:['’]s)?[ ]+(?:hospital|clinic|infirmary|medical|school|academy|college|university|institute|church"
    r"|cathedral|chapel|abbey|street|st\b|road|rd\b|avenue|ave\b|lane|square|place|park|gardens?|bridge"
    r"|station|airport|terminal|tower|hall|house|centre|center|museum|gallery|library|theatre|theater"
    r"|stadium|arena|memorial|monument|hotel|inn|pub|bar|cafe|café|restaurant|bakery|market|mall|shop"
    r"|store|company|corp|inc\b|ltd\b|gmbh|group|foundation|trust|society|club|fc\b|united\b|city\b"
    r"|county|valley|river|lake|mountain|island|bay|beach|model|series|edition|prize|award|cup\b"
    r"|book|books|novel|movie|film|show|album|song|building|estate|village|quarter|district|ward)\b",
    re.IGNORECASE,
)


_PLACE_BEFORE = re.compile(r"\b(?:at|the|near|from|to|in|into|of|by|via|past|around|outside|behind|through|across)[ ]+$",
                           re.IGNORECASE)


def _is_place_or_thing(text: str, start: int, end: int) -> bool:
    # The place noun may be outside the span ("St. Olaf hospital") or its last capitalised word
    # after a place preposition or article ("at Lincoln College", "the Victoria Park"); "met Anna
    # Park" stays a person.
    # A capitalised noun after the name is as often a surname ("Anna Park"): it counts only after
    # a place preposition; a lower-case one ("Victoria station") always does.
    before = text[max(0, start - 12):start]
    if _SAINT_BEFORE.search(before):
        return True
    place_before = bool(_PLACE_BEFORE.search(before))
    after = _NOT_PERSON_AFTER.match(text[end:end + 24])
    if after and (place_before or after.group().split()[-1][:1].islower()):
        return True
    last_space = text.rfind(" ", start, end)
    return bool(place_before and last_space > start and _NOT_PERSON_AFTER.match(text[last_space:end]))


def detect_name(text: str) -> Iterator[tuple[int, int]]:
    """Person names (not pets, places or organisations): see :func:`_detect_person_names`."""
    for start, end in _detect_person_names(text):
        if not _is_pet_name(text, start) and not _is_place_or_thing(text, start, end):
            yield start, end


def _detect_person_names(text: str) -> Iterator[tuple[int, int]]:
    """Person names: cue phrases, titles, speech verbs and a shipped first-name list."""
    for _, span in _cued_names(_NAME_INTRO, text):
        yield span
    for m in _NAME_TITLE.finditer(text):
        span = _trim_name(text, *m.span("n"))
        if span:
            yield span
    for m, span in _cued_names(_NAME_GREETING, text):
        if _GREETING_END.match(text, span[1]):
            words = _name_words(text[span[0]:span[1]])
            salutation = m.group().lower().startswith(("dear", "hi", "hello", "hey", "hiya", "liebe", "hallo",
                                                           "bonjour", "salut", "ciao", "cara", "caro", "beste", "hoi"))
            if not _plain_name_words(words) or words[0] in _GREETING_NOT_NAMES:
                continue
            # "Thanks Google!": after a thank-you a single unknown word is as often a company.
            if salutation or len(words) >= 2 or _known_first_name(words[0], strong_follow=True):
                yield span
    for _, span in _cued_names(_NAME_VERB, text):
        words = _name_words(text[span[0]:span[1]])
        if _unknown_pair(words) or _known_first_name(words[0], strong_follow=True):
            yield span
    for m in _NAME_SPEECH.finditer(text):
        span = _trim_name(text, *m.span("n"))
        if span:
            words = _name_words(text[span[0]:span[1]])
            # "Google said": a single unknown word is as often a company as a person.
            if _unknown_pair(words) or _known_first_name(words[0], strong_follow=True):
                yield span
    # Known first names anywhere, extended over a following surname (and particles).
    tokens = list(_NAME_TOKEN.finditer(text))
    k = 0
    while k < len(tokens):
        tok = tokens[k]
        nxt, end = k + 1, tok.end()
        # extend: "Anna Maria de Vries": single spaces, capitalised, optional particles
        while nxt < len(tokens) and nxt - k <= 3:
            gap = text[end:tokens[nxt].start()]
            if (gap == " " or _PARTICLE_GAP.fullmatch(gap)) and tokens[nxt].group() not in _NAME_STOP:
                end = tokens[nxt].end()
                nxt += 1
            else:
                break
        if _known_first_name(tok.group(), strong_follow=nxt > k + 1):
            yield tok.start(), end
            k = nxt
        else:
            k += 1


_PARTICLE_GAP = re.compile(rf" {_PARTICLE} ")

