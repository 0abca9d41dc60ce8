"""Redaction placeholders turned into words a model can use (issue 12, part 3).

A recalled memory may hold ``[EMAIL]`` or, with ``ingest.redact_names``,
``[NAME]``. Shown as they are, the 135M model copies them into its reply
("I'm [NAME] and I work at St. [NAME] hospital"). So before a memory reaches
the model each placeholder becomes a plain phrase ("someone", "their email
address"); and :func:`scrub_reply` is the last guard on what the user sees:
a reply never contains a placeholder, even one the model made up.
"""

from __future__ import annotations

import re

SPOKEN: dict[str, str] = {
    "NAME": "someone",
    "EMAIL": "their email address",
    "PHONE": "their phone number",
    "ADDRESS": "their address",
    "CARD": "their card number",
    "IBAN": "their bank account number",
    "IP": "an IP address",
    "URL": "a private link",
    "SECRET": "a secret",
}
# The redactor's own placeholders, and the bracketed stand-ins small models invent from them
# ("[XYZ Hospital]", "[Your Name]", "[insert city]").
_OURS = re.compile(r"\[(" + "|".join(SPOKEN) + r")\](?:['’]s)?")
_INVENTED = re.compile(r"\[(?:[A-Z][A-Za-z]*|your|insert|enter)(?:[ _][A-Za-z]+){0,3}\]")


def _spoken(match: re.Match[str]) -> str:
    words = SPOKEN[match.group(1)]
    if match.group(0).endswith(("'s", "’s")):
        return "someone's" if words == "someone" else words  # "[NAME]'s birthday" -> "someone's birthday"
    return words


def speakable(text: str) -> str:
    """``text`` with every redaction placeholder replaced by words."""
    return _OURS.sub(_spoken, text)


def scrub_reply(text: str) -> str:
    """A reply as the user may see it: no redaction placeholder, no invented ``[Bracketed Slot]``."""
    text = speakable(text)
    return _INVENTED.sub(lambda m: m.group(0)[1:-1], text)


def has_placeholder(text: str) -> bool:
    return bool(_OURS.search(text) or _INVENTED.search(text))
