"""Secrets: provider tokens, JWTs, bearer/basic credentials, private keys,
``password=``-style values and "my password is X"; and URLs that carry credentials.

Detectors yield ``(start, end)`` spans of the original text; :mod:`.redact`
resolves overlaps and places the placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from services.lib.privacy.chars import _lower

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


