"""Rule-based redaction of personal data and secrets, before anything is remembered.

``redact(text)`` finds spans of personal data and secrets and replaces each
with a typed placeholder. It runs on every chat turn before the text reaches
the memory index or a training set, and behind ``circ redact`` so a user can
check what would be kept.

Placeholders (``kind`` -> placeholder):

========  =============  ==========================================================
kind      placeholder    what
========  =============  ==========================================================
secret    ``[SECRET]``   provider API keys/tokens (AWS, GitHub, GitLab, Slack,
                         Stripe, OpenAI/Anthropic ``sk-``, Google), JWTs, bearer /
                         basic credentials, private-key blocks, the *value* of
                         ``password=``-style assignments and "my password is X"
url       ``[URL]``      URLs carrying credentials (``user:pass@``) or tokens
                         (``?token=``, ``api_key=``, signatures, webhook URLs).
                         Plain URLs are kept: they are rarely personal and often
                         the point of the message.
email     ``[EMAIL]``    e-mail addresses
iban      ``[IBAN]``     IBANs, mod-97 checksum and per-country length validated
card      ``[CARD]``     payment card numbers, Luhn-checked
ip        ``[IP]``       IPv4 (not version strings) and IPv6 addresses
phone     ``[PHONE]``    phone numbers, international and common national formats
address   ``[ADDRESS]``  postal addresses (US, UK, DE, FR, NL, IT shapes)
name      ``[NAME]``     person names, as far as rules allow; only with
                         ``redact(text, names=True)`` (``ingest.redact_names``)
========  =============  ==========================================================

Design:

* One small detector per kind (``detect_<kind>(text)``) yields ``(start, end)``
  candidates in the original text; cards and phones share one scanner of
  number runs, because the same digits are one or the other. Where they
  live: :mod:`.credentials` (secret, url), :mod:`.identifiers` (email,
  iban, ip), :mod:`.numbers` (card, phone), :mod:`.address`,
  :mod:`.person_names` (with its :mod:`.name_lists`); this module resolves
  their findings and places the placeholders.
* Overlaps are resolved deterministically: overlapping candidates form a
  cluster whose *union* is redacted (so no fragment of a losing candidate
  leaks), labelled with the kind of the longest candidate (ties: the more
  specific kind, in the order of the table above).
* Idempotent: placeholders are ``[UPPERCASE]`` tokens that no finding may
  overlap, and ``find_spans`` re-scans its own output until nothing new
  appears, so ``redact(redact(x).text)`` finds nothing.
* Never raises on a ``str``: every pattern is linear-time (each unbounded
  repetition is anchored by a look-behind of its own class or bounded), and
  should a detector ever fail, ``redact`` withholds the whole text as one
  ``[SECRET]`` rather than let anything through.

Decisions (where the text alone is ambiguous):

* A dotted quad is an IP address unless it is written as a version:
  ``v1.2.3.4``, after "version/release/build/...", or with a suffix such as
  ``-beta``/``+b5``. Five or more parts (OIDs) are never an IP.
* A bare run of 10-11 digits is a phone number (Italian mobiles, US numbers
  are written that way) unless the words before it name it as something else
  (order, invoice, ticket, id, ...), a plural noun after it makes it a
  quantity ("2383287575 requests"), or it starts with 1 (Unix timestamps).
  Shorter bare numbers need a phone word nearby ("call", "tel.", "my number").
* A grouped 16-digit number that fails Luhn is nothing (not a phone).
  12-digit card numbers need a Maestro prefix or a card word before them.
* Secrets in ``key=value`` form redact only the value; placeholders, env
  references (``$DB_PASS``, ``${X}``), templates (``<your password>``) and
  code (``get_token()``, ``self.password``) are not values.
* Names: strong cues ("my name is", titles, "Hi X,") take any capitalised
  words; weaker cues ("with", "met", "X said") take a known first name or an
  exact "First Last" pair; a known first name anywhere is a name unless it is
  also a common word or place (May, Grace, Paris: then a surname must follow).
  Text typed as ``[NAME]`` etc. by the user is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import msgspec

from services.lib.privacy.address import detect_address
from services.lib.privacy.credentials import detect_secret, detect_url
from services.lib.privacy.identifiers import detect_email, detect_iban, detect_ip, iban_checksum_ok
from services.lib.privacy.numbers import detect_cards_and_phones, luhn_ok
from services.lib.privacy.person_names import detect_name

__all__ = [
    "KINDS", "PLACEHOLDERS", "STRUCTURED_KINDS", "Redaction", "Span", "find_spans", "iban_checksum_ok",
    "luhn_ok", "redact",
]

PLACEHOLDERS: dict[str, str] = {
    "secret": "[SECRET]",
    "url": "[URL]",
    "email": "[EMAIL]",
    "iban": "[IBAN]",
    "card": "[CARD]",
    "ip": "[IP]",
    "phone": "[PHONE]",
    "address": "[ADDRESS]",
    "name": "[NAME]",
}
KINDS: tuple[str, ...] = tuple(PLACEHOLDERS)
STRUCTURED_KINDS: tuple[str, ...] = ("secret", "url", "email", "iban", "card", "ip", "phone")
_SPECIFICITY = {kind: rank for rank, kind in enumerate(KINDS)}  # lower = more specific


class Span(msgspec.Struct, frozen=True, kw_only=True):
    """One redacted region: ``text[start:end]`` of the *original* text became ``placeholder``."""

    start: int
    end: int
    kind: str
    placeholder: str


class Redaction(msgspec.Struct, frozen=True, kw_only=True):
    """The redacted text, the spans found (sorted, disjoint) and how many of each kind."""

    text: str
    spans: list[Span]
    counts: dict[str, int]


Detector = Callable[[str], Iterable[tuple[int, int]]]
_DETECTORS: list[tuple[str, Detector]] = [
    ("secret", detect_secret),
    ("url", detect_url),
    ("email", detect_email),
    ("iban", detect_iban),
    ("ip", detect_ip),
    ("address", detect_address),
    ("name", detect_name),
]


def _candidates(text: str, names: bool) -> list[tuple[int, int, str]]:
    candidates: list[tuple[int, int, str]] = []
    for kind, detector in _DETECTORS:
        if kind == "name" and not names:
            continue
        candidates.extend((s, e, kind) for s, e in detector(text) if e > s)
    candidates.extend((s, e, k) for s, e, k in detect_cards_and_phones(text) if e > s)
    # A bracketed placeholder is never (part of) a finding: text that was already
    # redacted stays as it is.
    return [c for c in candidates if not _inside_placeholder(text, c[0], c[1])]


def _resolve(candidates: list[tuple[int, int, str]]) -> list[Span]:
    """Overlapping candidates -> one span over their union, kind of the longest (then most specific)."""
    candidates = sorted(candidates, key=lambda c: (c[0], -c[1]))
    spans: list[Span] = []
    i = 0
    while i < len(candidates):
        start, end, _ = candidates[i]
        cluster = [candidates[i]]
        i += 1
        while i < len(candidates) and candidates[i][0] < end:
            cluster.append(candidates[i])
            end = max(end, candidates[i][1])
            i += 1
        best = min(cluster, key=lambda c: (-(c[1] - c[0]), _SPECIFICITY[c[2]], c[0]))
        spans.append(Span(start=start, end=end, kind=best[2], placeholder=PLACEHOLDERS[best[2]]))
    return spans


def _apply(text: str, spans: list[Span]) -> tuple[str, list[tuple[int, int, int, int]]]:
    """The redacted text, and for each placeholder (red_start, red_end, orig_start, orig_end)."""
    parts: list[str] = []
    placed: list[tuple[int, int, int, int]] = []
    last = out = 0
    for span in spans:
        parts.append(text[last:span.start])
        out += span.start - last
        parts.append(span.placeholder)
        placed.append((out, out + len(span.placeholder), span.start, span.end))
        out += len(span.placeholder)
        last = span.end
    parts.append(text[last:])
    return "".join(parts), placed


def _to_original(pos: int, placed: list[tuple[int, int, int, int]], *, end: bool) -> int:
    """Map an offset in the redacted text back to the original (placeholders expand to their span)."""
    shift = 0
    for red_start, red_end, orig_start, orig_end in placed:
        if pos < red_start or (end and pos == red_start):
            break
        if pos < red_end or (end and pos == red_end):
            return orig_end if end else orig_start
        shift = orig_end - red_end
    return pos + shift


_MAX_PASSES = 4


def find_spans(text: str, *, names: bool = False) -> list[Span]:
    """All spans to redact in ``text``: sorted, disjoint, one kind each.

    Detectors look at the characters around a candidate (word boundaries,
    "not preceded by a digit", ...). Replacing a span with ``[KIND]`` changes
    those neighbours, so a second pass over the redacted text can, rarely, see
    something the first could not (``a@b.coa+x@b.co``). We therefore re-scan
    the redacted text and fold any new finding back into the original spans
    until nothing new appears: the result is a fixed point by construction,
    which is what makes ``redact`` idempotent.
    """
    candidates = _candidates(text, names)
    spans = _resolve(candidates)
    for _ in range(_MAX_PASSES):
        if not spans:
            return spans
        redacted, placed = _apply(text, spans)
        extra = _candidates(redacted, names)
        if not extra:
            return spans
        for s, e, kind in extra:
            candidates.append((_to_original(s, placed, end=False), _to_original(e, placed, end=True), kind))
        spans = _resolve(candidates)
    # Still not settled (adversarial input): redact the whole region the findings touch.
    first, last = spans[0].start, spans[-1].end
    best = max(spans, key=lambda sp: (sp.end - sp.start, -_SPECIFICITY[sp.kind]))
    return [Span(start=first, end=last, kind=best.kind, placeholder=best.placeholder)]


_PLACEHOLDER_RE = re.compile(r"\[(?:" + "|".join(k.upper() for k in KINDS) + r")\]")


def _inside_placeholder(text: str, start: int, end: int) -> bool:
    segment = text[max(0, start - 10):end + 10]
    offset = max(0, start - 10)
    for m in _PLACEHOLDER_RE.finditer(segment):
        if m.start() + offset < end and start < m.end() + offset:
            return True
    return False


def redact(text: str, *, names: bool = False) -> Redaction:
    """Replace personal data and secrets in ``text`` with typed placeholders.

    ``names``: person names become ``[NAME]`` too. Off by default (issue 12): a
    user's own name and the names of the people in their life are what they
    want remembered, and they never leave the machine; ``ingest.redact_names``
    turns it on. Never raises for a ``str``. ``spans`` index the original text. The result
    is a fixed point: ``redact(redact(x).text)`` finds no spans.
    """
    if not isinstance(text, str):
        text = str(text)
    try:
        spans = find_spans(text, names=names)
    except Exception:  # a detector bug must not let text through unredacted, nor kill the caller
        spans = [Span(start=0, end=len(text), kind="secret", placeholder="[SECRET]")] if text else []
    counts: dict[str, int] = {}
    for span in spans:
        counts[span.kind] = counts.get(span.kind, 0) + 1
    return Redaction(text=_apply(text, spans)[0], spans=spans, counts=counts)

