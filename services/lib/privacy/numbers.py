"""Payment card numbers (Luhn-checked) and phone numbers, from one scanner of number runs.

The same digits are one or the other, so one scanner decides: from each
chunk boundary of a run, the longest window that is a card, else a phone.

Detectors yield ``(start, end)`` spans of the original text; :mod:`.redact`
resolves overlaps and places the placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from services.lib.privacy.chars import _ANY_DIGIT, _ASCII_LOWER

# A "number run": digits joined by the separators people type in phone and
# card numbers (space, dot, dash, slash, parentheses), optionally led by '+'.
# The look-behinds refuse to start inside a word, an amount ($, €, #), a time
# (10:30), a decimal or a version (1.2.3): the digits after them are not a
# phone number. Each step consumes one char deterministically: linear time.
_RUN = re.compile(
    r"(?<![\w+#$€£¥%@&=/-])(?<![0-9][.,:/])"
    r"(?:\+[ \u00a0]?)?(?:\([ ]?\+?[0-9](?:[0-9 -]{0,5}[0-9])?[ ]?\)[ \u00a0-]?)?[0-9]"
    r"(?:[0-9]|[ \u00a0]?\((?:0|[0-9]{1,5})\)[ \u00a0]?(?=[0-9])|[ \u00a0.\-/](?=[0-9(]))*"
)
# An extension after the number: "x123", "ext. 45", "extension 7".
_EXTENSION = re.compile(r"[ ]?(?:x|ext\.?|extension|#)[ ]?[0-9]{1,6}(?![\w])", re.I)
_RUN_END_OK = re.compile(r"(?![\w@]|[.,][0-9]|:[0-9])")

# Shapes that are numbers but not phone numbers.
_DATE = re.compile(
    r"(?:[0-9]{1,2}[./-][0-9]{1,2}[./-](?:[0-9]{2}|[0-9]{4})|[0-9]{4}[./-][0-9]{1,2}[./-][0-9]{1,2}"
    r"|(?:19|20)[0-9]{2}[./-](?:19|20)[0-9]{2}|[0-9]{1,2}[./][0-9]{4})"  # year ranges, month/year
)
_THOUSANDS = re.compile(r"[1-9][0-9]{0,2}(?:([ .,\u00a0])[0-9]{3})(?:\1[0-9]{3})*")
_FR_DOTTED = re.compile(r"0[1-9](?:\.[0-9]{2}){4}")
_DOTTED_SMALL = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){2,}")
# North American Numbering Plan: area code and exchange start with 2-9.
_NANP = re.compile(r"(?:1[-. ]?)?(?:\([2-9][0-9]{2}\)[ ]?|[2-9][0-9]{2}([-. ]))[2-9][0-9]{2}[-. ][0-9]{4}")
# The context patterns below are case-sensitive and run on ASCII-lower-cased
# text: (?i) alternations of many words are ~10x slower in `re`.
_PHONE_CONTEXT = re.compile(
    r"(?:\b(?:call|called|calling|phone|tel|telephone|mobile|mob|cell|cellphone|whatsapp|signal"
    r"|text|txt|sms|fax|ring|dial|number|num|no|nr|reach|contact|line|landline|hotline|handy|telefon"
    r"|telefonnummer|rufnummer|téléphone|tél|portable|numéro|telefono|cellulare|numero|bel|mobiel"
    r"|telefoonnummer|nummer)\b|\b(?:tel|no|nr|mob|num|tél|ph|fax)\.)"
    r"[^0-9\n.!?]{0,20}$"  # same sentence: "... my cell. The count is 39407585" is not a phone
)
# "0612345678 is my cell", "... - that's the landline"
_PHONE_CONTEXT_AFTER = re.compile(
    r"[ \t]*(?:[-–—:,(][ \t]*)?(?:is[ \t]+|that's[ \t]+|it's[ \t]+)?(?:my|the|his|her|our|their|a)?[ \t]*"
    r"(?:new[ \t]+)?(?:cell|mobile|phone|number|landline|line|office|home|work|fax|whatsapp|tel)\b"
)
# "2383287575 requests": a bare number followed by a plural noun or unit is a quantity.
_QUANTITY_AFTER = re.compile(
    r"[ \t]+(?!is\b|was\b|has\b|this\b|its\b|as\b)(?:[a-z]+s|[a-z]*bytes?|[kmgt]b|kg|km|people|times|euros?|dollars?)\b"
)
# Words that say the digits are something else: order/invoice/ticket numbers, ids.
_NOT_PHONE_CONTEXT = re.compile(
    r"(?:\b(?:order|invoice|inv|ticket|tracking|track|account|acct|ref|reference|case|confirmation"
    r"|booking|transaction|txn|serial|sku|ean|isbn|upc|barcode|item|product|part|policy|claim|customer"
    r"|member|membership|id|pnr|po|bestellung|rechnung|commande|facture|ordine|fattura|bestelling"
    r"|factuur|timestamp|epoch|version|build|pid|port|zip|postcode|code)\b[^0-9a-z\n]{0,6}"
    r"(?:(?:no|nr|num|number|#|id)\b\.?[^0-9a-z\n]{0,3})?$|#[ ]?$)"
)
_CARD_CONTEXT = re.compile(
    r"\b(?:card|visa|maestro|mastercard|amex|credit|debit|cc|kreditkarte|karte|carte|carta|kaart"
    r"|pay with|paid with|paying with|charge it to|charge to|charged to|bill it to)\b[^0-9\n]{0,25}$"
)
_CARD_GROUPS = (
    re.compile(r"[0-9]{12,19}"),
    re.compile(r"[0-9]{4}([ -])[0-9]{4}\1[0-9]{4}(?:\1[0-9]{1,4}){0,2}"),
    re.compile(r"[0-9]{4}([ -])[0-9]{6}\1[0-9]{4,5}"),  # Amex 4-6-5, Diners 4-6-4
)


def luhn_ok(digits: str) -> bool:
    """The Luhn mod-10 check every payment card number carries in its last digit."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


class _Before:
    """The 40 characters before a window, with the context checks computed once, on demand."""

    __slots__ = ("text", "_cache")

    def __init__(self, text: str) -> None:
        self.text = text.translate(_ASCII_LOWER)
        self._cache: dict[str, bool] = {}

    def _check(self, key: str, pattern: re.Pattern[str]) -> bool:
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = pattern.search(self.text) is not None
        return hit

    def not_phone(self) -> bool:
        return self._check("not_phone", _NOT_PHONE_CONTEXT)

    def phone(self) -> bool:
        return self._check("phone", _PHONE_CONTEXT)

    def card(self) -> bool:
        return self._check("card", _CARD_CONTEXT)


def _is_card(window: str, before: _Before) -> bool:
    if not any(p.fullmatch(window) for p in _CARD_GROUPS):
        return False
    digits = "".join(c for c in window if c.isdigit())
    if not 12 <= len(digits) <= 19 or len(set(digits)) == 1 or not luhn_ok(digits):
        return False
    if before.not_phone():
        return False  # "EAN 4006381333931", "order no. 4111..."
    # 12-digit numbers are common; only Maestro issues 12-digit cards (50, 56-69).
    return len(digits) > 12 or digits[:2] == "50" or "56" <= digits[:2] <= "69" or before.card()


def _is_phone(window: str, before: _Before, after: str = "") -> bool:
    digits = "".join(c for c in window if c.isdigit())
    n = len(digits)
    if n < 7 or n > 17:
        return False
    intl = window.startswith(("+", "(+")) or (digits.startswith("00") and not digits.startswith("000")
                                             and window[:1] in "0(")
    trunk = "(0)" in window
    significant = n - (2 if digits.startswith("00") else 0) - (1 if trunk else 0)
    if intl:
        # "0067471387915140": sixteen bare digits are not a dialled number
        return 7 <= significant <= 15 and not (window.isdigit() and n > 15)
    has_sep = not window.isdigit()
    if _FR_DOTTED.fullmatch(window):
        return True  # "06.12.34.56.78": French numbers are often written with dots
    if _DATE.fullmatch(window) or _DOTTED_SMALL.fullmatch(window):
        return False
    if _THOUSANDS.fullmatch(window) and not window.startswith("0"):
        # "2 345 678" is a big number, unless the sentence says it is a phone number
        return not _QUANTITY_AFTER.match(after) and not before.not_phone() and (
            before.phone() or _PHONE_CONTEXT_AFTER.match(after) is not None)
    if significant > 12 or _QUANTITY_AFTER.match(after) or before.not_phone():
        return False
    if trunk or window.startswith("("):
        return True
    if _NANP.fullmatch(window):
        return True
    if digits[0] == "0" and 9 <= n <= 12 and (has_sep or n in (10, 11)):
        return True  # national format with trunk prefix 0 (most of Europe, UK)
    if not has_sep and n in (10, 11) and digits[0] not in "01" and not _QUANTITY_AFTER.match(after):
        return True  # bare national number (IT mobiles 3xx, US 10-digit); not a Unix time (1...)
    return before.phone() or _PHONE_CONTEXT_AFTER.match(after) is not None


_CHUNK = re.compile(r"[^ \u00a0]+")


def detect_cards_and_phones(text: str) -> Iterator[tuple[int, int, str]]:
    """Card numbers (Luhn) and phone numbers, from the same runs of digits.

    A run is split into whitespace-separated chunks; from each chunk boundary
    the longest window (at most 7 chunks) that is a card, else a phone, wins.
    That handles "card 4111 1111 1111 1111 0612345678" and keeps grouped
    16-digit look-alikes ("1234 5678 9012 3456", not Luhn) from turning into
    a 12-digit phone number.
    """
    if not _ANY_DIGIT.search(text):
        return
    for start, end in _number_runs(text):
        yield from _RunScan(text, start, end).findings()


def _number_runs(text: str) -> Iterator[tuple[int, int]]:
    """The runs worth scanning: at least 7 digits, ending on a digit or ")", not glued to what follows."""
    for m in _RUN.finditer(text):
        start, end = m.span()
        while end > start and not text[end - 1].isdigit() and text[end - 1] != ")":
            end -= 1
        if sum(c.isdigit() for c in text[start:end]) < 7:
            continue
        if not _RUN_END_OK.match(text, end) and not _EXTENSION.match(text, end):
            continue  # glued to a word ("12345678abc"), a decimal or a time
        yield start, end


class _RunScan:
    """One number run ``text[start:end]``, split into chunks, scanned window by window."""

    def __init__(self, text: str, start: int, end: int) -> None:
        self.text, self.start = text, start
        self.run = run = text[start:end]
        # chunks: the pieces of the run between single spaces; ndigits[k] = digits in chunks[:k]
        self.chunks = chunks = [piece.span() for piece in _CHUNK.finditer(run)]
        self.ndigits = ndigits = [0]
        for a, b in chunks:
            ndigits.append(ndigits[-1] + sum(c.isdigit() for c in run[a:b]))
        self.befores: dict[int, _Before] = {}
        # "1234 5678 9012 3456": a grouped long number is a card or nothing (never a phone)
        self.whole_card_shaped = len(chunks) >= 3 and ndigits[-1] >= 13 and \
            all(b - a == 4 for a, b in chunks[:-1]) and all(run[a:b].isdigit() for a, b in chunks)

    def findings(self) -> Iterator[tuple[int, int, str]]:
        i = 0
        while i < len(self.chunks):
            found, j = self._longest_from(i)
            if found:
                yield found
                i = j + 1
            else:
                i += 1
            if self.whole_card_shaped:
                break

    def _longest_from(self, i: int) -> tuple[tuple[int, int, str] | None, int]:
        """The longest window of chunks ``i..j`` that is a card or a phone, and its last chunk ``j``."""
        chunks, ndigits = self.chunks, self.ndigits
        # at most 7 chunks: "+33 (0)6 12 34 56 78" is the most fragmented real number
        for j in range(min(len(chunks), i + 7) - 1, i - 1, -1):
            if self.whole_card_shaped and (i, j) != (0, len(chunks) - 1):
                continue  # a grouped long number is one thing: a card or nothing
            a, b = chunks[i][0], chunks[j][1]
            if b - a > 40 or not 7 <= ndigits[j + 1] - ndigits[i] <= 19:
                continue  # no phone has fewer than 7 digits, no card more than 19
            found = self._classify(i, j, a, b)
            if found:
                return found, j
        return None, i

    def _classify(self, i: int, j: int, a: int, b: int) -> tuple[int, int, str] | None:
        """Window ``run[a:b]`` (chunks ``i..j``) as a card, a phone (with its extension) or nothing."""
        text, start, window = self.text, self.start, self.run[a:b]
        ctx = self.befores.get(i)
        if ctx is None:  # bounded look-back: context checks stay O(1) per window
            ctx = self.befores[i] = _Before(text[max(0, start + a - 40):start + a])
        after = text[start + b:start + b + 40].translate(_ASCII_LOWER)
        if self.ndigits[j + 1] - self.ndigits[i] >= 12 and _is_card(window, ctx):
            return (start + a, start + b, "card")
        if not self.whole_card_shaped and _is_phone(window, ctx, after):
            wend = start + b
            if j == len(self.chunks) - 1:
                ext = _EXTENSION.match(text, wend)
                if ext:
                    wend = ext.end()
            return (start + a, wend, "phone")
        return None
