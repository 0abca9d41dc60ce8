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
  number runs, because the same digits are one or the other.
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

import functools
import ipaddress
import re
import string
from collections.abc import Callable, Iterable, Iterator

import msgspec

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


# ---------------------------------------------------------------------------
# Character classes
# ---------------------------------------------------------------------------

# Python's `re` has no \p{Lu}: build Latin upper/lower classes once (ASCII,
# Latin-1 and Latin Extended-A/B cover the European names and streets we target).
_UP = "".join(c for c in map(chr, range(0x41, 0x250)) if c.isalpha() and c.isupper())
_LO = "".join(c for c in map(chr, range(0x61, 0x250)) if c.isalpha() and c.islower()) + "ß"
_UP = re.escape(_UP)
_LO = re.escape(_LO)

_ANY_DIGIT = re.compile(r"[0-9]")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


@functools.lru_cache(maxsize=8)
def _lower(text: str) -> str:
    """ASCII-lowercased copy with the *same length* (str.lower() can change lengths: 'İ').

    Case-insensitive alternations are slow in `re` (no first-character
    skipping); matching cue words case-sensitively on this copy is several
    times faster, and offsets stay valid for the original text.
    """
    return text.translate(_ASCII_LOWER)


# ---------------------------------------------------------------------------
# secret
# ---------------------------------------------------------------------------

# Provider formats. Each prefix is documented by its provider and chosen so
# that scanners can find leaked keys; the lengths are the documented minimums.
# `(?<![\w-])` / `(?![\w-])` keep us from matching inside longer identifiers.
_PROVIDER_TOKENS = re.compile(
    r"(?<![\w-])(?:"
    # AWS access key ids: 4-letter type prefix + 16 upper-case base32 chars.
    r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}"
    # GitHub: ghp_ (classic PAT), gho_ (OAuth), ghu_/ghs_ (app), ghr_ (refresh), fine-grained PATs.
    r"|gh[pousr]_[A-Za-z0-9]{30,255}"
    r"|github_pat_[A-Za-z0-9_]{22,255}"
    # GitLab: personal/deploy/runner/pipeline/... tokens all share the gl<type>- prefix.
    r"|gl(?:pat|dt|rt|ptt|cbt|oas|soat|ft|imt|agent|ffct|rtr)-[A-Za-z0-9_-]{20,255}"
    # Slack: bot/user/app/refresh tokens (xox?-) and app-level tokens (xapp-).
    r"|xox[abposre]-[A-Za-z0-9-]{10,255}"
    r"|xapp-\d-[A-Za-z0-9-]{10,255}"
    # Stripe: secret / restricted / publishable keys and webhook secrets.
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,255}"
    r"|whsec_[A-Za-z0-9]{20,255}"
    # OpenAI (sk-, sk-proj-, sk-svcacct-) and Anthropic (sk-ant-api03-...): `sk-` + a long
    # body. The body must hold a digit (checked below), so prose like
    # "sk-learn" or "sk-this-is-a-long-phrase" is not a key.
    r"|sk-[A-Za-z0-9_-]{20,255}"
    # Google API keys are exactly AIza + 35 chars; OAuth access tokens start ya29.
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|ya29\.[0-9A-Za-z_-]{20,255}"
    # npm, PyPI, Hugging Face, DigitalOcean, SendGrid tokens: cheap to add, same idea.
    r"|npm_[A-Za-z0-9]{36}"
    r"|pypi-[A-Za-z0-9_-]{50,255}"
    r"|hf_[A-Za-z0-9]{30,255}"
    r"|do[opr]_v1_[a-f0-9]{64}"
    r"|SG\.[A-Za-z0-9_-]{16,64}\.[A-Za-z0-9_-]{16,64}"
    r")(?![\w-])"
)

# JWT: three base64url parts, the first two are JSON objects, so they start with
# `eyJ` ('{"'). The signature may be empty for alg=none.
_JWT = re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{5,4096}\.eyJ[A-Za-z0-9_-]{5,8192}\.[A-Za-z0-9_-]{0,4096}(?![\w-])")

# `Authorization: Bearer <tok>`, `Bearer <tok>`, `token <tok>`: redact the credential
# only, keeping the scheme word so the sentence still reads.
_BEARER = re.compile(r"(?i)(?<![\w-])(?:bearer|token)[ \t]+(?-i:([A-Za-z0-9._~+/-]{16,4096}=*))")
_BASIC = re.compile(r"(?i)authorization[\"']?[ \t]*[:=][ \t]*[\"']?basic[ \t]+(?-i:([A-Za-z0-9+/]{8,4096}={0,2}))")

# PEM/OpenSSH/PGP private keys. A public certificate is not a secret, so the
# header must say PRIVATE KEY. A paste may be truncated: without an END line we
# redact the base64 body that follows.
_PEM_BEGIN = re.compile(r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_BODY = re.compile(r"[A-Za-z0-9+/=:,\- \t\r\n]{0,200000}")

# `password=...`, `DB_PASSWORD: ...`, `"api_key": "..."`, `x-api-key: ...`:
# a key whose name says secret, then `=`/`:`/`=>`, then the value. Only the
# value is redacted. The key may carry a prefix (DB_, aws_secret_...), bounded.
_SECRET_KEY_WORDS = (
    r"pass(?:word|wd|wort|phrase|code)?|pwd|pw|mot[ _]de[ _]passe|wachtwoord"
    r"|secret|client[_-]?secret|token|api[_-]?key|apikey|access[_-]?key|secret[_-]?key"
    r"|private[_-]?key|auth[_-]?token|credentials?|pin"
)
# The key must *end* with the secret word (`DB_PASSWORD`, `x-api-key`, `clientSecret`),
# and the word must start a word or a camelCase hump: "bypass: true", "compass: north" are not keys.
_ASSIGNMENT = re.compile(
    r"(?:(?<![A-Za-z])|(?<=[a-z])(?=[A-Z]))(?i:" + _SECRET_KEY_WORDS + r")[\"']?"
    r"[ \t]{0,3}(?:=>|:=|=|:)[ \t]{0,3}"
    r"(?P<value>\"[^\"\n]{1,300}\"|'[^'\n]{1,300}'|(?:[^\s\"',;&]|&(?![\w.-]{1,40}=)){1,300})"  # "&next=" ends a query value
)
# Cheap pre-check on the lower-cased text: most chat turns mention none of these.
_SECRET_HINTS = ("pass", "pw", "secret", "token", "key", "credential", "pin", "mot de passe", "wachtwoord",
                 "bearer", "basic")
# Natural language: "my password is hunter2", "the wifi password was: Tr0ub4dor&3".
_PASSWORD_SENTENCE = re.compile(
    r"(?i)(?<![\w-])(?:password|passwort|passcode|pass ?phrase|pin(?: code)?|pw|mot de passe|wachtwoord)"
    r"[ \t]+(?:is|was|is now|will be|ist|est|è|e|=)[ \t]*:?[ \t]+[\"']?(?P<value>[^\s\"']{3,200})"
)
# Values that are obviously not secrets: empty markers, types, env references.
_NOT_A_VALUE = re.compile(
    r"(?:(?i:none|null|nil|true|false|undefined|empty|required|optional|hidden|redacted|masked"
    r"|str|string|bytes|int|secretstr|text|varchar.*|password|secret|token|\**|x{3,}|\.{3,}|…)"
    r"|<[^>]*>|\$\{[^}]*\}|\$[A-Z_][A-Z0-9_]*|%\w+%|\{\{.*\}\}|(?:os\.environ|os\.getenv|process\.env|env)\b.*"
    r"|\[[A-Z]+\].*|.*\[[A-Z]+\]"
    # code, not a literal: get_token(), self.password, settings.API_KEY, Optional[str]
    r"|[A-Za-z_][\w.]*\([^()]*\)|(?:[A-Za-z_]\w*\.)+[A-Za-z_]\w*|[A-Z]\w*\[\w*\]?)"
)
# "if not token: raise AuthError": keywords are code, not a password.
_CODE_WORDS = frozenset(
    "raise return yield await async lambda import from assert except finally while elif else break "
    "continue pass self this null None True False true false function const let var new await throw "
    "catch typeof instanceof undefined void static public private protected final".split()
)
# Prose values for the sentence form: "my password is wrong / too short / the same".
_PROSE_WORDS = frozenset(
    "wrong correct incorrect too not the a an my your same different expired invalid weak strong "
    "long short required missing saved stored changed reset set case sensitive still also now "
    "incorrect, locked there here written on in at for what that this it".split()
)


def _plausible_secret_value(value: str, *, sentence: bool) -> bool:
    if len(value) < 4 or value[0] in "<{" or _NOT_A_VALUE.fullmatch(value) or value in _CODE_WORDS:
        return False  # "<your password here>", "{{ secret }}", "$DB_PASS", "%PASSWORD%"
    if sentence:
        word = value.lower().rstrip(".,!?;:")
        if word in _PROSE_WORDS:
            return False
        # A plain lower-case word after "is" is far more often prose than a password.
        if word.isalpha() and word.islower():
            return False
    return True


def _has_digit(s: str) -> bool:
    return any(c.isdigit() for c in s)


def _private_key_blocks(text: str) -> Iterator[tuple[int, int]]:
    for m in _PEM_BEGIN.finditer(text):
        end = _PEM_END.search(text, m.end(), m.end() + 200_000)
        if end:
            yield m.start(), end.end()
        else:
            body = _PEM_BODY.match(text, m.end())
            stop = body.end() if body else m.end()
            while stop > m.end() and text[stop - 1] in " \t\r\n":
                stop -= 1
            yield m.start(), stop


def detect_secret(text: str) -> Iterator[tuple[int, int]]:
    """Keys, tokens, private keys and secret-valued assignments."""
    for m in _PROVIDER_TOKENS.finditer(text):
        token = m.group()
        if token.startswith("sk-") and not _has_digit(token):
            continue  # prose like "sk-learn-style-name"; real keys are random and hold digits
        yield m.span()
    if "eyJ" in text:
        for m in _JWT.finditer(text):
            yield m.span()
    if "-----BEGIN" in text:
        yield from _private_key_blocks(text)
    low = _lower(text)
    if not any(h in low for h in _SECRET_HINTS):
        return
    for m in _BEARER.finditer(text):
        token = m.group(1)
        # Random credentials mix digits or cases; "token economically..." does not.
        if _has_digit(token) or (token.lower() != token and token.upper() != token and len(token) >= 20):
            yield m.span(1)
    for m in _BASIC.finditer(text):
        yield m.span(1)
    for pattern, sentence in ((_ASSIGNMENT, False), (_PASSWORD_SENTENCE, True)):
        for m in pattern.finditer(text):
            start, end = m.span("value")
            value = m.group("value")
            if value[:1] in "\"'" and len(value) >= 2 and value[-1] == value[0]:
                start, end, value = start + 1, end - 1, value[1:-1]
            else:
                while end > start and (text[end - 1] in ".," or (text[end - 1] in ")]}" and not any(
                        c in text[start:end] for c in "([{"))):
                    end -= 1  # sentence punctuation after an unquoted value
                value = text[start:end]
            if _plausible_secret_value(value, sentence=sentence):
                yield start, end


# ---------------------------------------------------------------------------
# url
# ---------------------------------------------------------------------------

# A URL with a scheme; its extent stops at whitespace and at characters that
# commonly delimit a URL in prose. Trailing punctuation is trimmed below.
# An apostrophe belongs to the URL only inside a word ("/aujourd'hui.mp4"), not as a closing quote.
_URL = re.compile(r"(?i)(?<![\w.+-])[a-z][a-z0-9+.-]{1,20}://(?:[^\s<>\"'`\[\]{}|\\^]|'(?=[^\W\d_])){1,4096}")
# userinfo with a password: scheme://user:pass@host
_URL_CREDENTIALS = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#@\s]*:[^/?#@\s]*@", re.I)
# userinfo that is itself a token (GitHub accepts https://<token>@github.com/...)
_URL_TOKEN_USER = re.compile(r"^[a-z][a-z0-9+.-]*://[A-Za-z0-9_-]{20,}@", re.I)
# A query/fragment parameter whose name says it carries a credential. The name
# must *end* with the word, so `keyword=` or `monkey=`... `key=` still counts
# (Google Maps `key=`), while `page=`, `q=`, `utm_source=` do not.
_URL_SECRET_PARAM = re.compile(
    r"(?i)[?&#;](?:[\w.-]{0,40}?(?:token|secret|passw(?:or)?d|pwd|pass|api[_-]?key|apikey|key|"
    r"signature|sig|credential|auth|session|session[_-]?id|sid|code|jwt|hash))=[^&#\s]"
)
# Webhook URLs are credentials by themselves (the path is the secret).
_URL_WEBHOOK = re.compile(
    r"(?i)://(?:hooks\.slack\.com/(?:services|workflows)/|(?:[\w-]+\.)?discord(?:app)?\.com/api/webhooks/"
    r"|outlook\.office\.com/webhook/|[\w-]+\.webhook\.office\.com/)"
)


def _trim_url(text: str, start: int, end: int) -> int:
    # "see https://x.org/a." or "(https://x.org/a)": trailing punctuation belongs to the prose.
    while end > start and text[end - 1] in ".,;:!?'\")]}>":
        if text[end - 1] == ")" and text.count("(", start, end) >= text.count(")", start, end):
            break
        end -= 1
    return end


def detect_url(text: str) -> Iterator[tuple[int, int]]:
    """URLs that carry credentials or tokens (plain URLs are kept)."""
    if "://" not in text:
        return
    for m in _URL.finditer(text):
        start, end = m.start(), _trim_url(text, m.start(), m.end())
        url = text[start:end]
        if (_URL_CREDENTIALS.match(url) or _URL_TOKEN_USER.match(url)
                or _URL_SECRET_PARAM.search(url) or _URL_WEBHOOK.search(url)):
            yield start, end


# ---------------------------------------------------------------------------
# email
# ---------------------------------------------------------------------------

# local@domain.tld. The local part uses the characters people actually use
# (RFC 5322 allows more, but quoted locals never appear in chat). The look-behind
# anchors the local part at its first character, so a long run of word
# characters without `@` is scanned once, not once per start position.
_EMAIL = re.compile(
    r"(?<![\w.%+\-'])[\w%+\-'][\w.%+\-']{0,63}@(?:[\w-]{1,63}\.){1,8}[^\W\d_]{2,24}(?![\w-])"
)


def detect_email(text: str) -> Iterator[tuple[int, int]]:
    """E-mail addresses."""
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        yield m.span()


# ---------------------------------------------------------------------------
# iban
# ---------------------------------------------------------------------------

# Lengths from the SWIFT IBAN registry (plus the widely used "experimental"
# African/other ones). The country's exact length tells us where the IBAN ends,
# so "DE89 3704 0044 0532 0130 00 is mine" never swallows the next word.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
    # experimental / national-only, still seen in the wild
    "AO": 25, "BF": 28, "BJ": 28, "CF": 27, "CG": 27, "CI": 28, "CM": 27, "CV": 25, "DZ": 26,
    "GA": 27, "GQ": 27, "GW": 25, "HN": 28, "IR": 26, "KM": 27, "MA": 28, "MG": 27, "ML": 28,
    "MZ": 25, "NE": 28, "SN": 28, "TD": 27, "TG": 28,
}
# Country code + two check digits, not glued to a preceding word.
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])(?:[A-Z]{2}|[a-z]{2})[0-9]{2}(?=[ \u00a0-]?[A-Za-z0-9])")
_IBAN_SEPARATORS = " \u00a0-"


def iban_checksum_ok(iban: str) -> bool:
    """ISO 13616 mod-97: move the first four chars to the end, letters -> 10..35, remainder 1."""
    s = iban.upper()
    if len(s) < 5 or not s.isascii() or not s.isalnum():
        return False
    s = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in s)) % 97 == 1


def detect_iban(text: str) -> Iterator[tuple[int, int]]:
    """IBANs, compact or printed in groups of four; checksum and length validated."""
    if not _ANY_DIGIT.search(text):
        return
    n = len(text)
    for m in _IBAN_START.finditer(text):
        length = _IBAN_LENGTHS.get(m.group()[:2].upper())
        if length is None:
            continue
        chars = [m.group()]
        count, i = 4, m.end()
        # Collect exactly `length` alphanumerics; a single separator is allowed only
        # between groups of four, as in the printed form "GB29 NWBK 6016 1331 9268 19".
        while count < length and i < n:
            c = text[i]
            if c.isascii() and c.isalnum():
                chars.append(c)
                count += 1
                i += 1
            elif c in _IBAN_SEPARATORS and count % 4 == 0 and i + 1 < n and text[i + 1].isascii() \
                    and text[i + 1].isalnum() and text[i - 1] not in _IBAN_SEPARATORS:
                i += 1
            else:
                break
        if count != length or (i < n and text[i].isascii() and text[i].isalnum()):
            continue
        if iban_checksum_ok("".join(chars)):
            yield m.start(), i


# ---------------------------------------------------------------------------
# ip
# ---------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# Four octets, optionally /prefix. Not part of a longer dotted sequence
# (OIDs, 5-part versions) and not glued to letters.
_IPV4 = re.compile(
    rf"(?<![\w.])(?<![\w.]-){_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?:/(?:3[0-2]|[12]?[0-9])|:[0-9]{{1,5}})?"
    r"(?![\w]|\.[0-9])"
)
# A dotted quad is also a valid 4-part version string. We call it a version
# (and keep it) when it is written like one: `v1.2.3.4`, after the words
# version/release/build/..., or with a pre-release/build suffix (`-beta`, `+b5`).
# Everything else that is a valid dotted quad is treated as an IP address.
_VERSION_BEFORE = re.compile(
    r"(?i)(?:\bv|\bver\.?|\bversion|\brelease|\brel\.?|\bbuild|\brev\.?|\bfirmware|\bfw|\bpatch|\bupdate)"
    r"[ \t:]{0,3}$"
)
_VERSION_AFTER = re.compile(r"[-+~][A-Za-z]")
# IPv6 candidates: hex groups and colons (at least two colons), optional
# embedded IPv4 tail, zone id and prefix; validated by the ipaddress module.
_IPV6 = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:]{2,39}"
    r"(?:(?<=:)(?:[0-9]{1,3}\.){3}[0-9]{1,3})?(?:%[0-9A-Za-z._-]{1,20})?(?:/[0-9]{1,3})?(?![\w:])"
)


_IPV6_BRACKET_PORT = re.compile(r"\](?::[0-9]{1,5})?")


def detect_ip(text: str) -> Iterator[tuple[int, int]]:
    """IPv4 (version strings excluded, see above) and IPv6 addresses."""
    if "." in text and _ANY_DIGIT.search(text):
        for m in _IPV4.finditer(text):
            start, end = m.span()
            if _VERSION_BEFORE.search(text, max(0, start - 12), start) or _VERSION_AFTER.match(text, end):
                continue
            yield start, end
    if ":" in text:
        for m in _IPV6.finditer(text):
            candidate = m.group().split("/")[0].split("%")[0]
            if candidate.count(":") < 2 or not any(c.isalnum() for c in candidate):
                continue
            try:
                ipaddress.IPv6Address(candidate)
            except ValueError:
                continue
            start, end = m.span()
            # "[2001:db8::1]:443": the brackets and the port go with the address
            bracket = _IPV6_BRACKET_PORT.match(text, end)
            if start > 0 and text[start - 1] == "[" and bracket:
                start, end = start - 1, bracket.end()
            yield start, end


# ---------------------------------------------------------------------------
# card and phone: one scanner of number runs
# ---------------------------------------------------------------------------

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
    for m in _RUN.finditer(text):
        start, end = m.span()
        while end > start and not text[end - 1].isdigit() and text[end - 1] != ")":
            end -= 1
        if sum(c.isdigit() for c in text[start:end]) < 7:
            continue
        if not _RUN_END_OK.match(text, end) and not _EXTENSION.match(text, end):
            continue  # glued to a word ("12345678abc"), a decimal or a time
        run = text[start:end]
        # chunks: the pieces of the run between single spaces; digits[k] = digits in chunks[:k]
        chunks = [piece.span() for piece in _CHUNK.finditer(run)]
        ndigits = [0]
        for a, b in chunks:
            ndigits.append(ndigits[-1] + sum(c.isdigit() for c in run[a:b]))
        befores: dict[int, _Before] = {}
        # "1234 5678 9012 3456": a grouped long number is a card or nothing (never a phone)
        whole_card_shaped = len(chunks) >= 3 and ndigits[-1] >= 13 and \
            all(b - a == 4 for a, b in chunks[:-1]) and all(run[a:b].isdigit() for a, b in chunks)
        i = 0
        while i < len(chunks):
            found = None
            # at most 7 chunks: "+33 (0)6 12 34 56 78" is the most fragmented real number
            for j in range(min(len(chunks), i + 7) - 1, i - 1, -1):
                if whole_card_shaped and (i, j) != (0, len(chunks) - 1):
                    continue  # a grouped long number is one thing: a card or nothing
                a, b = chunks[i][0], chunks[j][1]
                if b - a > 40 or not 7 <= ndigits[j + 1] - ndigits[i] <= 19:
                    continue  # no phone has fewer than 7 digits, no card more than 19
                window = run[a:b]
                ctx = befores.get(i)
                if ctx is None:  # bounded look-back: context checks stay O(1) per window
                    ctx = befores[i] = _Before(text[max(0, start + a - 40):start + a])
                after = text[start + b:start + b + 40].translate(_ASCII_LOWER)
                if ndigits[j + 1] - ndigits[i] >= 12 and _is_card(window, ctx):
                    found = (start + a, start + b, "card")
                elif not whole_card_shaped and _is_phone(window, ctx, after):
                    wend = start + b
                    if j == len(chunks) - 1:
                        ext = _EXTENSION.match(text, wend)
                        if ext:
                            wend = ext.end()
                    found = (start + a, wend, "phone")
                if found:
                    break
            if found:
                yield found
                i = j + 1
            else:
                i += 1
            if whole_card_shaped:
                break


# ---------------------------------------------------------------------------
# address
# ---------------------------------------------------------------------------

_CAPWORD_STRICT = rf"[{_UP}][{_LO}'’]+(?:-[{_UP}{_LO}][{_LO}'’]+)*"
# Line separators inside an address: a comma or a newline (with spaces).
_LSEP = r"(?:[ \t]*,[ \t]*\n?[ \t]*|[ \t]*\n[ \t]*)"
# City words may be CamelCase ("VaillantBourg") or hyphenated ("Saint-Denis").
_CITYWORD = rf"[{_UP}][{_LO}'’]+(?:[{_UP}][{_LO}]+)?(?:-[{_UP}{_LO}][{_LO}'’]+)*"
# Lower-case links inside city names: "Frankfurt am Main", "Krimpen aan de Lek", "Neunburg vorm Wald".
_CITY = (rf"(?:'[st][ -])?{_CITYWORD}(?:[ -](?:[{_LO}]{{1,5}}[ -]){{0,2}}{_CITYWORD}){{0,3}}")
_US_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|"
    "NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|AS|GU|MP|PR|VI|UM|FM|MH|PW|AA|AE|AP"
)
_UK_POSTCODE = r"(?:GIR ?0AA|[A-PR-UWYZ][A-HK-Y]?[0-9][0-9A-HJKPSTUW]?[ ]?[0-9][ABD-HJLNP-UW-Z]{2})"
# After a street line a looser shape is safe enough (and real typos happen).
_UK_POSTCODE_LOOSE = r"(?:[A-Z]{1,2}[0-9][A-Z0-9]?[ ]?[0-9][A-Z]{2})"
# How addresses end: "City, ST 12345", "[City,] SW1A 1AA", "12345 City", "1234 AB City", "00100, City (RM)".
_TAIL = (
    rf"(?:{_LSEP}{_CITY},?[ ](?:{_US_STATES})[ ][0-9]{{5}}(?:-[0-9]{{4}})?"
    rf"|(?:{_LSEP}{_CITY}){{0,2}}(?:{_LSEP}|[ ]){_UK_POSTCODE_LOOSE}"
    rf"|{_LSEP}(?:[A-Z]-)?[0-9]{{5}},?[ ]{_CITY}(?:[ ]\([A-Z]{{2}}\))?"
    rf"|{_LSEP}[1-9][0-9]{{3}}[ ]?[A-Z]{{2}}(?:(?:{_LSEP}|[ ]){_CITY})?)"
    rf"(?:{_LSEP}(?:USA|U\.S\.A\.|United States|UK|United Kingdom|England|Scotland|Wales|Germany|Deutschland"
    rf"|France|Netherlands|The Netherlands|Nederland|Italy|Italia))?(?![\w])"
)
# USPS Publication 28 street suffixes (and UK ones): the word that makes
# "85 Jennifer Shore" a street and "85 Jennifer photos" not.
_EN_SUFFIX = (
    "Alley|Aly|Avenue|Ave|Bend|Bluff|Bluffs|Boulevard|Blvd|Branch|Bridge|Brook|Brooks|Burg|Burgs|Bypass|"
    "Camp|Canyon|Cape|Causeway|Center|Centers|Circle|Cir|Circles|Cliff|Cliffs|Close|Club|Common|Commons|Corner|"
    "Corners|Course|Court|Ct|Courts|Cove|Coves|Creek|Crescent|Cres|Crest|Crossing|Crossroad|Curve|Dale|Dam|"
    "Divide|Drive|Dr|Drives|Drove|Estate|Estates|Expressway|Expy|Extension|Extensions|Fall|Falls|Ferry|"
    "Field|Fields|Flat|Flats|Ford|Fords|Forest|Forge|Forges|Fork|Forks|Fort|Freeway|Fwy|Garden|Gardens|"
    "Gateway|Glen|Glens|Green|Greens|Grove|Groves|Harbor|Harbors|Harbour|Haven|Heights|Highway|Hwy|Hill|"
    "Hills|Hollow|Inlet|Island|Islands|Isle|Junction|Junctions|Key|Keys|Knoll|Knolls|Lake|Lakes|Land|"
    "Landing|Lane|Ln|Light|Lights|Loaf|Lock|Locks|Lodge|Loop|Mall|Manor|Manors|Meadow|Meadows|Mews|Mill|"
    "Mills|Mission|Motorway|Mount|Mountain|Mountains|Neck|Orchard|Oval|Overpass|Parade|Park|Parks|Parkway|"
    "Pkwy|Parkways|Pass|Passage|Path|Pike|Pine|Pines|Place|Pl|Plain|Plains|Plaza|Point|Points|Port|Ports|"
    "Prairie|Promenade|Radial|Ramp|Ranch|Rapid|Rapids|Rest|Ridge|Ridges|Rise|River|Road|Rd|Roads|Route|Row|"
    "Rue|Run|Shoal|Shoals|Shore|Shores|Skyway|Spring|Springs|Spur|Spurs|Square|Sq|Squares|Station|"
    "Stravenue|Stream|Street|St|Streets|Summit|Terrace|Ter|Throughway|Trace|Track|Trafficway|Trail|Trl|"
    "Tunnel|Turnpike|Underpass|Union|Unions|Valley|Valleys|Via|Viaduct|View|Views|Village|Villages|Ville|"
    "Vista|Walk|Walks|Wall|Way|Ways|Well|Wells|Wharf|Wynd|Yard"
)
_UNIT = r"(?:,?[ ](?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Floor|Fl\.?|Room|Rm\.?|Bldg\.?|Building|#)[ ]?#?[0-9][\w-]{0,5})"
_UK_PREFIX = r"(?:(?:Flat|Studio|Apartment|Apt\.?|Unit|Suite|Room)[ ][0-9][\w-]{0,4}" + _LSEP + ")"
_NUMBER = r"[0-9]{1,6}[A-Za-z]?"
_EN_STREET = rf"(?:(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?[ ])?(?:{_CAPWORD_STRICT}[ ]){{1,3}}(?:{_EN_SUFFIX})\b\.?(?:[ ](?:N|S|E|W|NE|NW|SE|SW)\b\.?)?"
# German/Dutch streets are one word ending in a street noun, house number after.
_DE_NL_SUFFIX = (
    "straße|strasse|str\\.|gasse|platz|weg|allee|ring|damm|ufer|chaussee|steig|stieg|pfad|markt|"
    "graben|wall|zeile|kamp|berg|hof|park|dreef|steeg|pad|laan|straat|plein|kade|gracht|singel|dijk|"
    "boulevard|erf|plantsoen|baan|hoven|veld|weide|dam|haven|wetering|lei|brink|hage|promenade"
)
_DE_NL_STREET = (
    rf"(?:(?:van|von)[ ](?:de[nr]?[ ]|het[ ])?|'t[ ])?"  # streets named after people: "van der Dussengasse"
    rf"(?:[{_UP}][{_LO}]*(?:er|e|en|es)[ ]){{0,2}}(?:[{_UP}](?:[{_LO}]{{1,20}}|\.)-){{0,4}}[{_UP}][{_LO}{_UP}\-]{{0,40}}(?i:{_DE_NL_SUFFIX})[ ]"
    rf"[0-9]{{1,5}}[a-zA-Z]?(?:[ ]?[/-][ ]?[0-9]{{1,5}}[a-zA-Z]?)?"
)
_FR_TYPES = (
    "rue|avenue|av\\.|boulevard|bd|chemin|impasse|place|allée|quai|route|cours|passage|square|voie|"
    "rond-point|faubourg|sentier|villa|résidence|hameau|lieu-dit|parvis|esplanade|promenade"
)
_FR_LINK = r"(?:(?:de[ ]la|de[ ]l'|de|du|des|d'|l'|la|le|les)[ ]?)?"
_FR_STREET = rf"(?i:{_FR_TYPES})[ ]{_FR_LINK}{_CAPWORD_STRICT}(?:[ ]{_FR_LINK}{_CAPWORD_STRICT}){{0,3}}"
_FR_NUMBER = r"[0-9]{1,5}(?:[ ]?(?:bis|ter|[A-D]))?,?[ ]"
_IT_TYPES = (
    "Via|Viale|V\\.le|Vicolo|Piazza|P\\.za|Piazzale|Corso|C\\.so|Largo|Stretto|Contrada|Borgo|Rotonda|"
    "Strada|Canale|Incrocio|Calle|Lungomare|Lungotevere|Salita|Traversa|Vico|Rampa|Galleria|Località"
)
_IT_LINK = r"(?:(?:dei|degli|delle|della|dello|del|di|da|de|d')[ ]?)?"
_IT_STREET = (
    rf"(?:{_IT_TYPES})[ ]{_IT_LINK}{_CAPWORD_STRICT}(?:[ ]{_IT_LINK}{_CAPWORD_STRICT}){{0,3}},?[ ]"
    rf"[0-9]{{1,5}}[a-zA-Z]?(?:/[A-Za-z0-9]{{1,3}})?(?:,?[ ](?:Appartamento|Piano|Interno|Int\.|Scala)[ ][0-9]{{1,4}})?"
)
# Each shape comes with a cheap gate (a literal-led regex that must match
# somewhere first), so a turn without street words costs a few microseconds.
_GATE_EN = re.compile(rf"\b(?:{_EN_SUFFIX})\b")
_GATE_DE_NL = re.compile(rf"(?:{_DE_NL_SUFFIX})[ ][0-9]")  # on the lower-cased text
_GATE_FR = re.compile(rf"\b(?:{_FR_TYPES})[ ]")  # on the lower-cased text
_GATE_IT = re.compile(rf"\b(?:{_IT_TYPES})[ ]")
_GATE_MIL = re.compile(r"\b[AFD]PO[ ]A[AEP][ ][0-9]")
_GATE_BOX = re.compile(r"(?i:box)[ ][0-9]")
_GATE_STATE_ZIP = re.compile(rf",[ ](?:{_US_STATES})[ ][0-9]{{5}}")
_GATE_UK_PC = re.compile(r"[0-9][A-Z]{2}(?![\w-])")
_ADDRESS_PATTERNS: list[tuple[re.Pattern[str], bool, re.Pattern[str]]] = [
    # 85 Jennifer Shore Apt. 4[, Port Benhaven, IG70 0NZ]   (US/UK, number first)
    (_GATE_EN, False, re.compile(rf"(?<![\w.,-]){_UK_PREFIX}?{_NUMBER},?[ ]{_EN_STREET}{_UNIT}?(?:{_TAIL})?")),
    # Flat 5, Buckley Skyway, West Glen, W8G 7JR   (UK flat line, street without number)
    (_GATE_EN, False, re.compile(rf"(?<![\w.,-]){_UK_PREFIX}{_EN_STREET}(?:{_TAIL})?")),
    # Buckley Skyway, West Glen, W8G 7JR   (street without number: only with a postal tail)
    (_GATE_EN, False, re.compile(rf"(?<![\w.,-]){_EN_STREET}{_UNIT}?{_TAIL}")),
    # Blümelstraße 49/98, 75650 Miltenberg / Haileydreef 83, 4388 ZG Nieuwkoop
    (_GATE_DE_NL, True, re.compile(rf"(?<![\w.-]){_DE_NL_STREET}(?:{_TAIL})?")),
    # 5, boulevard de Allain, 74503 Roy   (number or postal tail required)
    (_GATE_FR, True, re.compile(rf"(?<![\w.,-]){_FR_NUMBER}{_FR_STREET}(?:{_TAIL})?")),
    (_GATE_FR, True, re.compile(rf"(?<![\w.,-]){_FR_STREET}{_TAIL}")),
    # Via Nitti, 94 Appartamento 8, 92019, Sciacca (AG)
    (_GATE_IT, False, re.compile(
        rf"(?<![\w.-]){_IT_STREET}(?:{_TAIL}|{_LSEP}[0-9]{{5}},[ ]{_CITY}(?:[ ]\([A-Z]{{2}}\))?)?")),
    # US military mail: PSC 4115, Box 7815 / Unit 0521 Box 6218 / USNS Murphy, then APO/FPO/DPO AA 12345
    (_GATE_MIL, False, re.compile(
        rf"(?<![\w.-])(?:PSC[ ][0-9]{{4}},[ ]Box[ ][0-9]{{4}}|Unit[ ][0-9]{{4}}[ ]Box[ ][0-9]{{4}}"
        rf"|(?:USNS|USNV|USS|USCGC)[ ]{_CAPWORD_STRICT}){_LSEP}?[ ]?(?:APO|FPO|DPO)[ ]A[AEP][ ][0-9]{{5}}(?![\w])"
    )),
    # P.O. Box 123[, City, ST 12345]
    (_GATE_BOX, False, re.compile(rf"(?<![\w.-])P\.?[ ]?O\.?[ ]Box[ ][0-9]{{1,6}}(?:{_TAIL})?")),
    # Standalone "Springfield, IL 62704" (state validated) and UK postcodes (very specific shape).
    (_GATE_STATE_ZIP, False,
     re.compile(rf"(?<![\w.-]){_CITY},[ ](?:{_US_STATES})[ ][0-9]{{5}}(?:-[0-9]{{4}})?(?![\w-])")),
    (_GATE_UK_PC, False, re.compile(rf"(?<![\w-]){_UK_POSTCODE}(?![\w-])")),
]


# "Chapter 5 Main Points", "Top 10 Beach Resorts": the number counts something.
_COUNTING_NOUN_BEFORE = re.compile(
    r"(?i)\b(?:chapter|section|page|pages|figure|fig\.|table|top|step|part|level|season|episode|vol\.?|volume"
    r"|item|number|no\.|grade|class|day|week|year|gate|room|row|seat|platform|track|exit|route|bus|line)[ ]$"
)


def detect_address(text: str) -> Iterator[tuple[int, int]]:
    """Postal addresses: a street line, optionally followed by its postal/city line."""
    if not _ANY_DIGIT.search(text):
        return  # every shape below holds a house number, a postcode or a box number
    low = _lower(text)
    gates: dict[int, bool] = {}
    for gate, on_lower, pattern in _ADDRESS_PATTERNS:
        if id(gate) not in gates:
            gates[id(gate)] = gate.search(low if on_lower else text) is not None
        if not gates[id(gate)]:
            continue
        for m in pattern.finditer(text):
            start, end = m.span()
            if text[start].isdigit() and _COUNTING_NOUN_BEFORE.search(text, max(0, start - 12), start):
                continue
            while end > start and text[end - 1] in " \t\n,":
                end -= 1
            yield start, end


# ---------------------------------------------------------------------------
# name
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Name lists
# ---------------------------------------------------------------------------

# Capitalised words that end a name: "John Monday" is John (then a weekday).
_NAME_STOP = frozenset("""
I I'm I've I'll I'd A An The This That These Those My Your His Her Our Their It Its We You He She They
And Or But So If When Then Also Just Yes No Not Ok OK Okay Hi Hey Hello Thanks Thank Please Sorry Dear
Mr Mrs Ms Miss Dr Prof Sir Madam Herr Frau Mme
Monday Tuesday Wednesday Thursday Friday Saturday Sunday Today Tomorrow Yesterday Tonight
January February March April May June July August September October November December
Street Road Avenue Lane Drive Court Place Square Park Way
Inc Ltd LLC GmbH AG Corp Co Company University Hospital School Bank Team Group
""".split())

# Words that are common first names *and* common words or places: only a name
# when a capitalised surname follows or a strong cue precedes them.
_AMBIGUOUS_NAMES = frozenset("""
Will May June April August Mark Bill Grace Hope Joy Faith Rose Summer Autumn Dawn Art Sue Pat Guy Ray
Jack Frank Chase Eve Max Sunny Holly Ivy Lily Iris Ruby Amber Crystal Jade Pearl Sky River Storm Page
Hunter Mason Carter Cash Drew Dean Don Gene Glen Grant Miles Norm Rod Rusty Sandy Skip Wade Jean Ernst
Wolf Angel Destiny Harmony Melody Honey Paris Florence Sydney Austin Dallas Chelsea Jordan Georgia
Virginia Carolina Victoria Lincoln Washington Houston Madison Savannah Phoenix Orlando Regina Adelaide
Kent Troy Brook Brooke Bob Sam Tom Nick Rob Jo Al Ben Dick Bud Sonny Gabe Fabian Jasmine Violet Heather
Olive Hazel Willow Sage Robin Bella Mia Eden Rain Cliff Heath Lane Royal King Prince Duke Earl Noble
Marshall Taylor Parker Cooper Porter Fletcher Tucker Spencer Harper Sawyer Hudson Dakota Cheyenne
Maria Angela Christian Constance Patience Prudence Mercy Trinity Genesis Charity Serenity Bliss
Nora Ava Ella Stella Luna Nova Aurora Rio Cruz Santiago Cristal Bianca Carmen Dolores Luz Paz Sol
Otto Kurt Heinz Hans Wolfgang Ulrich Vincent Irene Lee Kim Lou Roman Norman Germaine Frances Ernest
""".split())

# A shipped list of common given names (EN, DE, FR, NL, IT, ES and some
# frequent names from elsewhere), written for this project; not derived from
# the evaluation generator.
_FIRST_NAMES = frozenset("""
Aaron Abby Abigail Ada Adam Adrian Adriana Agnes Aidan Aiden Alan Albert Alberto Alejandro Alex Alexa
Alexander Alexandra Alexis Alfie Alfred Ali Alice Alicia Alison Allan Allison Alyssa Amanda Amelia Amy
Ana Andrea Andreas Andrew Andy Angela Angelica Angelo Anita Ann Anna Anne Annette Annie Anthony Antonio
Archie Ariana Arianna Arthur Ashley Audrey Austin Ava Barbara Barry Beatrice Becky Ben Benjamin Bernard
Beth Bethany Betty Beverly Billy Blake Bobby Bonnie Brad Bradley Brandon Brenda Brendan Brett Brian
Bridget Brittany Bruce Bryan Caitlin Caleb Callum Calvin Cameron Camila Carl Carla Carlos Carly Carol
Caroline Carrie Casey Catherine Cathy Cecilia Charles Charlie Charlotte Chelsea Cheryl Chloe Chris
Christina Christine Christopher Cindy Claire Clara Claudia Clifford Clive Cody Colin Colleen Connor
Courtney Craig Cynthia Daisy Dale Dan Dana Daniel Daniela Danielle Danny Darren Dave David Debbie Deborah
Debra Denise Dennis Derek Diana Diane Dominic Donald Donna Doris Dorothy Douglas Dylan Eddie Edgar Edith
Edward Edwin Eileen Elaine Eleanor Elena Eli Elijah Elizabeth Ella Ellen Ellie Elliot Elliott Emily Emma
Eric Erica Erik Erin Ethan Eugene Evan Evelyn Felix Fiona Florence Freddie Frederick Freya Gabriel
Gabriella Gail Gary Gavin Gemma Geoffrey George Georgia Gerald Gina Gloria Gordon Graham Greg Gregory
Gwen Hailey Hannah Harold Harriet Harry Harvey Hayley Heather Heidi Helen Henry Holly Howard Hugh Hugo
Ian Imogen Isaac Isabel Isabella Isabelle Isla Ivan Jack Jackie Jackson Jacob Jacqueline Jade Jake James
Jamie Jan Jane Janet Janice Jared Jasmine Jason Jay Jayden Jean Jeff Jeffrey Jenna Jennifer Jenny Jeremy
Jerry Jesse Jessica Jill Jim Jimmy Joan Joanna Joanne Jodie Joe Joel Joey John Johnny Jon Jonathan Jordan
Jose Joseph Josephine Josh Joshua Joyce Juan Judith Judy Julia Julian Julie Justin Karen Kate Katherine
Kathleen Kathryn Kathy Katie Kayla Keith Kelly Ken Kenneth Kerry Kevin Kieran Kimberly Kirsty Kyle Laura
Lauren Lawrence Leah Leo Leon Leonard Leslie Lewis Liam Lillian Linda Lindsay Lisa Logan Lois Lorraine
Louis Louise Lucas Lucy Luke Lydia Lynn Madeline Madison Maggie Malcolm Marc Marcus Margaret Maria Marie
Marilyn Marion Martha Martin Mary Matt Matthew Maureen Megan Melanie Melissa Michael Michelle Mike Mildred
Millie Molly Monica Morgan Nancy Naomi Natalie Natasha Nathan Neil Nicholas Nicola Nicole Niamh Nigel
Noah Oliver Olivia Oscar Owen Paige Pamela Patricia Patrick Paul Paula Pauline Peggy Penny Peter Philip
Phillip Phoebe Poppy Rachel Ralph Randy Raymond Rebecca Regina Reginald Rhys Richard Rick Ricky Riley
Rita Robert Roberta Roger Ronald Rosie Ross Roy Russell Ruth Ryan Sally Samantha Samuel Sandra Sara Sarah
Scarlett Scott Sean Sebastian Seth Shane Shannon Sharon Shaun Shawn Sheila Shirley Sienna Simon Sofia
Sophia Sophie Stacey Stanley Stephanie Stephen Steve Steven Stuart Susan Suzanne Sylvia Tamara Tammy Tanya
Tara Teresa Terry Theo Theodore Theresa Thomas Tiffany Timothy Tina Toby Todd Tommy Tony Tracey Tracy
Travis Trevor Tyler Valerie Vanessa Vera Veronica Vicky Victor Victoria Vincent Virginia Walter Wayne
Wendy William Willie Zachary Zara Zoe
Agnieszka Anja Anke Annika Antje Astrid Bärbel Bernd Birgit Björn Brigitte Carsten Christa Christel
Christian Christiane Christoph Claus Dagmar Dieter Dirk Doris Elke Erika Erwin Florian Frank Franz
Friedrich Gabriele Gerhard Gisela Gudrun Günter Günther Hannelore Hans Harald Heike Heinrich Heinz Helga
Helmut Herbert Hildegard Holger Horst Ilse Ingrid Jan Jens Joachim Jochen Johanna Jörg Jürgen Karin Karl
Katharina Kerstin Klaus Kristin Lena Lukas Manfred Marco Marianne Marion Markus Martina Matthias Maximilian
Monika Niklas Nils Norbert Olaf Petra Rainer Ralf Regina Reinhard Renate Rolf Rudolf Sabine Sandra Sebastian
Silke Simone Stefan Stefanie Susanne Sven Thorsten Tobias Torsten Udo Ursula Ute Uwe Volker Walter
Werner Wilhelm Wolfgang Yvonne Jonas Leonie Finn Mats Emil Hanna Marlene Ole Tim Felix Jannik Laura
Alain Amélie Anaïs André Antoine Arnaud Aurélie Baptiste Benoît Bernadette Brigitte Camille Céline Chantal
Christophe Claude Clément Colette Corinne Damien Denis Didier Dominique Élodie Émile Emmanuel Étienne
Fabien Fabrice Florian Françoise François Frédéric Gaël Geneviève Georges Gérard Gilles Guillaume Hélène
Henri Hervé Isabelle Jacques Jeanne Jérémy Jérôme Josette Julien Laetitia Laurent Léa Léon Louise Luc
Lucie Manon Marcel Margaux Marguerite Mathieu Mathilde Maxime Michel Monique Nathalie Nicolas Noémie
Odette Olivier Pascal Pascale Patrice Philippe Pierre Quentin Raymond Renée Rémy Romain Sébastien
Serge Simone Solène Stéphane Stéphanie Suzanne Sylvie Thibault Thierry Valérie Véronique Vincent Virginie
Xavier Yves Yvette Zoé Chloé Inès Hugo Enzo Théo Nathan Mathis Clémence Océane Lucas Maël
Aafke Anouk Arjen Bart Bas Bram Cornelis Daan Dirk Eline Els Ewout Femke Floor Fleur Gerrit Gert Geert
Hendrik Henk Ilse Inge Jaap Jan Janneke Jasper Jeroen Joost Joris Kees Klaas Koen Lieke Lotte Luuk
Maarten Marieke Marijke Mark Martijn Merel Mirjam Niels Noor Pieter Pim Rik Rob Roel Ruud Sander Sanne
Sem Sietse Stijn Teun Thijs Tijn Tom Wessel Willem Wim Wouter Yvonne Fenna Roos Sven Jesse Milan Lars Levi
Adriano Alessandra Alessandro Alessio Alice Andrea Angela Angelo Anna Antonella Antonio Arianna Beatrice
Benedetta Bruno Carla Carlo Caterina Chiara Claudio Cristina Daniela Daniele Dario Davide Domenico
Elena Elisa Emanuele Enrico Enzo Fabio Federica Federico Filippo Francesca Francesco Franco Gabriele
Giacomo Gianluca Gianni Giorgia Giorgio Giovanna Giovanni Giulia Giulio Giuseppe Giuseppina Ilaria Laura
Leonardo Lorenzo Luca Lucia Luciano Luigi Marco Margherita Maria Mario Marta Martina Massimo Matteo
Mattia Maurizio Michele Nicola Paola Paolo Pietro Raffaele Riccardo Roberta Roberto Rosa Salvatore Sara
Serena Silvia Simona Simone Stefania Stefano Tommaso Valentina Valerio Vincenzo Vittoria Vittorio
Alba Alicia Álvaro Ángel Beatriz Carmen Cristina Diego Eduardo Elena Enrique Fernando Francisco Gonzalo
Guillermo Ignacio Javier Jesús Jorge José Josefa Juan Lucía Luis Manuel Marta Miguel Nuria Pablo Pilar
Rafael Ramón Raúl Rocío Rodrigo Sergio Teresa Vicente
Aarav Aditya Amit Ananya Anil Arjun Deepak Divya Ganesh Kavya Krishna Lakshmi Manoj Meera Neha Nikhil
Pooja Priya Rahul Raj Rajesh Ravi Rohan Sanjay Shreya Sunil Vikram Vijay Aisha Ahmed Ali Amir Fatima
Hassan Hussein Ibrahim Khalid Layla Mohammed Muhammad Mustafa Omar Yusuf Zainab Zeynep Emre Mehmet Elif
Wei Li Ming Jing Xin Hui Yan Chen Hiroshi Yuki Kenji Sakura Haruto Yuto Ji-woo Min-jun Seo-yeon
Olga Irina Natalia Svetlana Tatiana Dmitri Sergei Andrei Alexei Ivan Pavel Piotr Katarzyna Magdalena
Tomasz Krzysztof Marek Ewa Jakub Zofia Lars Erik Ingrid Sigrid Astrid Nils Freja Mette Søren Kasper
Abbie Adele Aileen Alana Albertine Alec Alfonso Alma Alvin Amara Amber Andre Andrea Angus Anya Arlene
Arnold Ashton Aubrey Audra Barney Basil Beatrix Belinda Benedict Bernice Bert Bertha Blanche Boris Brandi
Brenna Brent Bridie Bronwyn Bryony Byron Candice Cara Carmel Carole Carolyn Cassandra Cecil Cedric Celia
Chad Chandler Charity Charmaine Chester Clarence Claudette Clayton Clement Clifton Clint Clyde Connie
Conrad Cora Corey Cormac Cyril Daphne Darcy Darius Darla Darlene Declan Deirdre Delia Della Delores Demi
Desmond Dexter Dominique Dora Doreen Dorian Duncan Dwayne Earl Edna Effie Eliza Ellis Elsie Elton Elvira
Emilia Enid Erica Ernest Esme Esther Ethel Eunice Evangeline Everett Fay Felicity Fergus Fern Flora
Forrest Francine Francis Frederica Gareth Garrett Gaynor Georgina Gertrude Gideon Gilbert Giles Ginny
Gladys Glenda Glenn Greta Gus Gwendolyn Hal Hamish Harley Harriet Harrison Hattie Hector Herman Hilary
Hilda Homer Horace Hubert Ida Ingrid Irma Isaiah Isobel Jacqui Jasper Jeanette Jeannie Jed Jem Jemima
Jenna Jocelyn Jodi Johanna Jolene Josie Judd Juliana Juliet Juliette June Justine Kara Karl Kasey Katrina
Kay Kaylee Keeley Kelvin Kendra Kenny Kirk Kristen Kristina Kristy Lacey Lana Lance Lara Larry Leanne
Lee Leigh Lena Leona Leroy Lesley Lester Letitia Lex Lila Lindsey Lionel Lloyd Lola Lorna Lottie Lucille
Lucinda Luella Luther Lyle Mabel Mackenzie Madeleine Mae Malik Mandy Marcia Margot Marian Marianne Marjorie
Marla Marlon Marsha Marvin Matilda Maude Maurice Mavis Maxine Meghan Melinda Mervyn Micheal Miranda Mitchell
Moira Muriel Myra Myrtle Nadia Nadine Nell Nellie Nettie Nina Noel Noreen Norma Odessa Olive Ophelia Ora
Orla Oswald Pam Patsy Percy Perry Petra Philippa Piers Polly Priscilla Quinn Rachael Rebekah Reece Reid
Rex Rhoda Rhona Rhonda Rodney Roisin Ronan Ronnie Rosalind Rosamund Rosemary Rowan Roxanne Rufus Rupert
Sabrina Sadie Selina Seymour Sheldon Shelby Sheryl Sidney Silas Sonia Stacy Stella Stewart Sybil Tabitha
Tamsin Tania Tess Tessa Thelma Tilly Timmy Tobias Trisha Trudy Ursula Vernon Vivian Vivienne Wallace
Warren Wesley Whitney Wilbur Wilfred Winifred Winston Yolanda Yvette Zachariah Zelda
Achim Adelheid Albrecht Alfons Alois Annegret Annemarie Armin Arnd Benno Bernhard Berta Bettina Burkhard
Carola Claudia Cornelia Detlef Dietmar Dietrich Dorit Dorothea Eberhard Edeltraud Egon Elfriede Elisabeth
Elli Emma Erich Ernst Eugen Ewald Falk Ferdinand Frieda Friedhelm Fritz Gerda Gerlinde Gernot Gert Gottfried
Grete Gundula Hanspeter Hartmut Hedwig Heidemarie Heiner Heino Helene Henning Heribert Hermann Hilde Hubertus
Ilona Imke Irmgard Isolde Jannik Jutta Kai Karsten Kilian Klemens Konrad Kornelia Kurt Leni Liesel Lothar
Ludwig Luise Magdalena Margarete Margit Marianne Marlies Mechthild Meike Nicole Notburga Oskar Ottilie
Philipp Reinhold Rosemarie Rüdiger Sieglinde Siegfried Sigrid Sophie Theresia Traudl Ulf Ulla Ulrike
Valentin Veronika Viktor Waltraud Wilfried Wiebke Winfried
Adèle Adrien Agathe Albane Alexandrine Alphonse Anatole Annick Apolline Armand Arthur Aude Augustin Axelle
Bastien Béatrice Bénédicte Benjamin Bertrand Blanche Brigitte Capucine Caroline Cécile Charles Clarisse
Claudine Constance Corentin Cyrille Daniel Danielle Delphine Diane Dorothée Édouard Éliane Élise Éloïse
Émilie Eugénie Fanny Félix Florence Gabrielle Gaston Gauthier Germain Gilbert Ginette Grégoire Gustave
Hortense Hubert Ignace Jacqueline Joëlle Josiane Jules Juliette Laure Laurence Léonie Lionel Lorraine
Louis Lucien Lucille Madeleine Marcelle Marthe Martine Maurice Michèle Mireille Muriel Noël Noëlle Odile
Olivie Paulette Perrine Raphaël Régine René Roland Rosalie Sabine Sacha Serge Simone Sylvain Thérèse
Timothée Victoire Yannick
Aad Anneke Annemieke Berend Bram Carlijn Casper Chantal Coen Dieuwke Diederik Evert Fenne Frits Gijs Guus
Hanneke Harm Ids Ineke Jelle Jildou Joep Jorien Jurre Karel Kasper Lieve Linda Maartje Marloes Meindert
Mick Nynke Pien Rens Rutger Sjoerd Sofie Tess Thijmen Tineke Truus Valentijn Vera Wietske Wilma Wout
Agostino Alberico Alda Alfredo Ambra Amedeo Anselmo Antonietta Arturo Bartolomeo Bettino Bianca Carolina
Cesare Clelia Corrado Costanza Dante Donatella Edoardo Elio Emilio Ennio Ermanno Ettore Fabrizio Fausto
Ferdinando Fiorenzo Flavio Fulvio Gaetano Gemma Gennaro Gianfranco Gianmarco Gilberto Gino Giosuè Girolamo
Graziella Guido Igor Ilario Imelda Ivo Lazzaro Lino Livia Loredana Lucrezia Ludovica Manlio Marcantonio
Marcello Marina Maurilio Milena Mirella Nadia Natalia Nicoletta Noemi Oreste Orlando Ornella Ottavio
Pamela Patrizia Piero Pierangelo Pierluigi Priscilla Renato Rinaldo Rocco Romano Rosalia Rosario Sabrina
Sandro Santo Sergio Severino Teodoro Tiziana Tiziano Ugo Umberto Valeria Vanessa Veronica Virginia Vito
""".split())
