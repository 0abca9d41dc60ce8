"""E-mail addresses, IBANs (mod-97 and per-country length checked) and IP addresses.

Detectors yield ``(start, end)`` spans of the original text; :mod:`.redact`
resolves overlaps and places the placeholders.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from services.lib.privacy.chars import _ANY_DIGIT

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


