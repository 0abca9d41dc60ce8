"""Precision and recall of the redactor per kind, on a seeded labelled set.

    .venv/bin/python bench/redact_eval.py --n 2000 [--seed 7] [--show-errors 5]

Generates chat-like messages with Faker (dev dependency) in several locales:
each positive message embeds one or two PII items (gold spans known by
construction) in a sentence template; negative messages contain look-alikes
only (prices, dates, times, versions, order numbers, non-Luhn 16-digit
numbers, bad-checksum IBANs, plain URLs, "password" without a value,
capitalised common words). A detection counts as a true positive if it
overlaps a gold span of the same kind.

Columns: ``precision`` and ``recall`` are span-level with the right kind;
``covered`` is the share of gold characters redacted under *any*
placeholder (what actually matters for privacy: a phone number redacted as
[CARD] does not leak).

Prints one JSON object on stdout (benchlib convention); the markdown table
goes to stderr too, and is also in the JSON under ``table``.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import string
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from services.lib.privacy.redact import KINDS, STRUCTURED_KINDS, luhn_ok, redact  # noqa: E402

LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "nl_NL", "it_IT"]
IBAN_LOCALES = LOCALES + ["es_ES", "pl_PL", "pt_PT", "fr_CH", "de_AT", "nl_BE"]
GOAL_PRECISION = 0.95
GOAL_RECALL = 0.99


@dataclass
class Sample:
    text: str
    gold: list[tuple[int, int, str]] = field(default_factory=list)


class Builder:
    """Concatenates literal text and PII items, recording gold spans."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.gold: list[tuple[int, int, str]] = []
        self.pos = 0

    def lit(self, s: str) -> None:
        self.parts.append(s)
        self.pos += len(s)

    def item(self, s: str, kind: str) -> None:
        self.gold.append((self.pos, self.pos + len(s), kind))
        self.lit(s)

    def template(self, template: str, items: dict[str, tuple[str, str]]) -> None:
        """``template`` with ``{slot}`` markers; ``items[slot] = (text, kind)``."""
        rest = template
        while "{" in rest:
            before, _, after = rest.partition("{")
            slot, _, rest = after.partition("}")
            self.lit(before)
            text, kind = items[slot]
            if kind:
                self.item(text, kind)
            else:
                self.lit(text)
        self.lit(rest)

    def build(self) -> Sample:
        return Sample("".join(self.parts), list(self.gold))


# ---------------------------------------------------------------------------
# Generators of PII items
# ---------------------------------------------------------------------------


class Gen:
    def __init__(self, seed: int) -> None:
        from faker import Faker

        self.rng = random.Random(seed)
        self.fakers = {}
        for i, loc in enumerate(sorted(set(LOCALES + IBAN_LOCALES))):
            f = Faker(loc)
            f.seed_instance(seed * 1000 + i)
            self.fakers[loc] = f

    def fake(self, locales: list[str] | None = None):
        return self.fakers[self.rng.choice(locales or LOCALES)]

    def rand(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    # -- structured --------------------------------------------------------
    def email(self) -> str:
        f = self.fake()
        choice = self.rng.random()
        if choice < 0.4:
            return f.email()
        if choice < 0.6:
            return f.free_email()
        if choice < 0.8:
            return f.company_email()
        if choice < 0.9:
            return f.email().upper()
        user = f.user_name()
        return f"{user}+{self.rng.choice(['news', 'work', 'x1'])}@{f.domain_name()}"

    def phone(self) -> str:
        r = self.rng.random()
        if r < 0.7:
            return self.fake().phone_number()
        # international formats from anywhere: +CC then 8-10 digits in varied groupings
        cc = self.rng.choice(["1", "7", "31", "33", "34", "39", "41", "43", "44", "45", "46", "47", "48",
                              "49", "55", "61", "81", "86", "91", "351", "353", "358", "420", "972"])
        digits = self.rand(string.digits[1:], 1) + self.rand(string.digits, self.rng.randint(7, 9))
        style = self.rng.randrange(7)
        if style == 4:  # French dotted national format
            return "0" + self.rand("123456789", 1) + "." + ".".join(self.rand(string.digits, 2) for _ in range(4))
        if style == 5:  # dots between groups
            return f"+{cc}.{digits[:3]}.{digits[3:6]}.{digits[6:]}"
        if style == 6:  # country code in parentheses
            return f"(+{cc}) {digits[:2]} {digits[2:]}"
        if style == 0:
            return f"+{cc}{digits}"
        if style == 1:
            return f"+{cc} {digits[:3]} {digits[3:6]} {digits[6:]}"
        if style == 2:
            return f"+{cc}-{digits[:3]}-{digits[3:6]}-{digits[6:]}"
        return f"00{cc} {digits[:2]} {digits[2:]}"

    def card(self) -> str:
        f = self.fake(["en_US"])
        kind = self.rng.choice(["visa16", "visa13", "visa19", "mastercard", "amex", "discover", "diners",
                                "jcb15", "jcb16", "maestro"])
        number = f.credit_card_number(card_type=kind)
        style = self.rng.random()
        if style < 0.4 or len(number) not in (15, 16, 14):
            return number
        sep = " " if style < 0.75 else "-"
        if len(number) == 16:
            return sep.join(number[i:i + 4] for i in range(0, 16, 4))
        return sep.join([number[:4], number[4:10], number[10:]])  # amex 4-6-5, diners 4-6-4

    def iban(self) -> str:
        value = self.fake(IBAN_LOCALES).iban()
        if self.rng.random() < 0.5:
            return " ".join(value[i:i + 4] for i in range(0, len(value), 4))
        return value

    def ip(self) -> str:
        f = self.fake(["en_US"])
        r = self.rng.random()
        if r < 0.08:
            return f"{f.ipv4()}:{self.rng.randint(1, 65535)}"  # with a port
        if r < 0.12:
            return f"[{f.ipv6()}]:{self.rng.randint(1, 65535)}"
        if r < 0.35:
            return f.ipv4()
        if r < 0.5:
            return f.ipv4_private()
        if r < 0.6:
            return f.ipv4(network=True)
        if r < 0.8:
            return f.ipv6()
        import ipaddress

        addr = ipaddress.IPv6Address(f.ipv6())
        # compressed forms with zero runs, as people paste them
        packed = bytearray(addr.packed)
        packed[4:10] = bytes(6)
        return str(ipaddress.IPv6Address(bytes(packed)))

    def url(self) -> str:
        f = self.fake()
        host = f.domain_name()
        r = self.rng.randrange(6)
        if r == 0:
            return f"https://{f.user_name()}:{f.password(length=12, special_chars=False)}@{host}/{f.uri_path()}"
        if r == 1:
            scheme = self.rng.choice(["postgres", "postgresql", "mysql", "mongodb+srv", "redis", "amqp"])
            return f"{scheme}://{f.user_name()}:{f.password(length=14, special_chars=False)}@db.{host}:5432/{f.word()}"
        if r == 2:
            param = self.rng.choice(["token", "access_token", "api_key", "apikey", "key", "auth", "sig",
                                     "client_secret", "password", "session_id"])
            return f"https://{host}/{f.uri_path()}?{param}={self.rand(string.ascii_letters + string.digits, 24)}&lang=en"
        if r == 3:
            return (f"https://{f.word()}.s3.amazonaws.com/{f.file_name().replace(' ', '%20')}?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                    f"&X-Amz-Credential=AKIA{self.rand(string.ascii_uppercase, 16)}%2F20240101"
                    f"&X-Amz-Signature={self.rand('0123456789abcdef', 64)}")
        if r == 4:
            return (f"https://hooks.slack.com/services/T{self.rand(string.ascii_uppercase + string.digits, 8)}"
                    f"/B{self.rand(string.ascii_uppercase + string.digits, 8)}/{self.rand(string.ascii_letters, 24)}")
        return f"https://{host}/reset#token={self.rand(string.ascii_letters + string.digits, 32)}"

    def secret(self) -> str:
        alnum = string.ascii_letters + string.digits
        r = self.rng.randrange(16)
        if r == 0:
            return "AKIA" + self.rand(string.ascii_uppercase + string.digits, 16)
        if r == 1:
            return "ghp_" + self.rand(alnum, 36)
        if r == 2:
            return "github_pat_" + self.rand(alnum, 22) + "_" + self.rand(alnum, 59)
        if r == 3:
            return "glpat-" + self.rand(alnum + "-_", 20)
        if r == 4:
            return f"xoxb-{self.rand(string.digits, 11)}-{self.rand(string.digits, 12)}-{self.rand(alnum, 24)}"
        if r == 5:
            return self.rng.choice(["sk_live_", "sk_test_", "rk_live_"]) + self.rand(alnum, 24)
        if r == 6:
            return "sk-proj-" + self.rand(alnum + "-_", 48)
        if r == 7:
            return "sk-ant-api03-" + self.rand(alnum + "-_", 93) + "AA"
        if r == 8:
            return "sk-" + self.rand(alnum, 48)
        if r == 9:
            return "AIza" + self.rand(alnum + "-_", 35)
        if r == 10:
            def b64(obj: dict) -> str:
                return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
            return (b64({"alg": "HS256", "typ": "JWT"}) + "." +
                    b64({"sub": self.rand(string.digits, 8), "name": self.fake().name()}) + "." +
                    self.rand(alnum + "-_", 43))
        if r == 12:
            return self.rand(alnum + "-._~", self.rng.randint(24, 64))  # opaque bearer token
        if r == 11:
            body = "\n".join(self.rand(alnum + "+/", 64) for _ in range(self.rng.randint(2, 5)))
            kind = self.rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
            return f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"
        # r >= 13: values whose secrecy comes from context (filled in by the caller)
        return self.fake().password(length=self.rng.randint(8, 16))

    # -- unstructured ------------------------------------------------------
    def address(self) -> str:
        loc = self.rng.choice(LOCALES)
        text = self.fakers[loc].address()
        return text if self.rng.random() < 0.4 else text.replace("\n", ", ")

    def name(self) -> str:
        f = self.fake()
        r = self.rng.random()
        if r < 0.5:
            return f"{f.first_name()} {f.last_name()}"
        if r < 0.8:
            return f.first_name()
        return f.name()


# ---------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------

TEMPLATES: dict[str, list[str]] = {
    "email": ["my email is {x}", "send it to {x} please", "you can reach me at {x}.", "{x} is my work address",
              "cc {x} on that thread", "ok, new address: {x}", "did you get my mail from {x}?",
              "forward the invoice to {x}, thanks",
              "reply to <{x}>", "From: Support <{x}>"],
    "phone": ["call me at {x}", "my number is {x}", "you can reach me on {x} after 6", "{x} is my cell",
              "text {x} when you land", "the office line is {x}.", "New number: {x}", "ring {x} tomorrow morning",
              "whatsapp me: {x}", "her mobile: {x}, call after lunch", "tel. {x}", "{x} - that's the landline",
              "the link was tel:{x}", "(mobile {x})"],
    "card": ["my card number is {x}", "charge it to {x} please", "card: {x} exp 09/27", "use {x} for the booking",
             "the visa is {x}", "I paid with {x} yesterday"],
    "iban": ["my IBAN is {x}", "please transfer to {x}", "IBAN: {x}", "send the rent to {x} by Friday",
             "account {x} (joint)", "wire it to {x}."],
    "ip": ["the server is at {x}", "ssh into {x} and restart nginx", "my IP is {x}", "ping {x}",
           "blocked {x} in the firewall", "allow {x} on port 443", "the router moved to {x}."],
    "url": ["the connection string is {x}", "open {x}", "here's the link: {x}", "webhook: {x}",
            "curl '{x}' returned 403", "I pasted {x} in the config"],
    "secret": ["my key is {x}", "export OPENAI_API_KEY={x}", "token: {x}", "I accidentally committed {x}",
               "use {x} for the CI", "here is the key:\n{x}\nkeep it safe"],
    "secret_bearer": ["Authorization: Bearer {x}", "curl -H 'Authorization: Bearer {x}' the endpoint",
                      "use bearer {x} for now"],
    "secret_ctx": ["password={x}", "DB_PASSWORD: {x}", "my password is {x}", "the wifi password is {x}",
                   "\"api_key\": \"{x}\"", "login with pass: {x}",
                   "aws_secret_access_key = {x}", "client_secret={x}"],
    "address": ["I live at {x}", "send it to {x}", "ship to {x}.", "new address: {x}", "we moved to {x} last week",
                "the party is at {x}, bring snacks", "my office: {x}", "deliver to\n{x}"],
    "name": ["my name is {x}", "I'm {x}", "{x} said the meeting moved", "I had lunch with {x}",
             "ask {x} about the slides", "Dr. {x} will call back", "met {x} at the conference",
             "{x} and I went hiking", "thanks to {x} for the help", "call me {x}", "Hi {x}, how are you?",
             "{x} told me about it", "Mr {x} is the landlord", "tell {x} I said hi"],
}


def negatives(g: Gen) -> str:
    """A message with look-alikes only (no gold spans)."""
    rng = g.rng
    f = g.fake()
    n16 = "".join(rng.choice(string.digits) for _ in range(15))
    n16 = n16 + next(d for d in string.digits if not luhn_ok(n16 + d))  # a 16-digit non-card
    bad_iban = g.fake(IBAN_LOCALES).iban()
    bad_iban = bad_iban[:2] + f"{(int(bad_iban[2:4]) + rng.randint(1, 50)) % 100:02d}" + bad_iban[4:]
    choices = [
        f"it costs ${rng.randint(1, 9)},{rng.randint(100, 999)}.{rng.randint(10, 99)} incl. tax",
        f"that's €{rng.randint(2, 500)},{rng.randint(10, 99)} per month",
        f"meeting on {rng.randint(2019, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} at {rng.randint(8, 18)}:{rng.choice(['00', '15', '30', '45'])}",
        f"due {rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(2019, 2026)}, see you then",
        f"born {rng.randint(1, 12)}/{rng.randint(1, 28)}/{rng.randint(1950, 2010)}",
        f"upgraded to v{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
        f"bumped to {rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}-beta",
        f"running version {rng.randint(1, 20)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 99)} now",
        f"release {rng.randint(1, 20)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)} shipped",
        f"order #{rng.randint(10**6, 10**9)} shipped",
        f"order number {rng.randint(10**9, 10**10 - 1)} is delayed",
        f"invoice INV-{rng.randint(2019, 2026)}-{rng.randint(1, 99999):05d} attached",
        f"tracking 1Z{g.rand(string.ascii_uppercase + string.digits, 16)} says tomorrow",
        f"the number {n16} is not a card",
        f"reference {n16[:4]} {n16[4:8]} {n16[8:12]} {n16[12:]} on the form",
        f"IBAN {bad_iban} bounced (typo)",
        f"we had {rng.randint(2, 20)} people and {rng.randint(100, 9999)} views",
        f"population {rng.randint(1, 9)},{rng.randint(100, 999)},{rng.randint(100, 999)} in {rng.randint(1990, 2024)}",
        f"the score was {rng.randint(0, 5)}-{rng.randint(0, 5)} in {rng.randint(2019, 2021)}-{rng.randint(2022, 2024)}",
        f"ISBN 978-{rng.randint(0, 9)}-{rng.randint(10, 99)}-{rng.randint(100000, 999999)}-{rng.randint(0, 9)}",
        f"pi is about 3.{rng.randint(1000, 99999)}",
        f"room {rng.randint(100, 999)}, floor {rng.randint(1, 12)}",
        f"it took {rng.randint(10, 59)}:{rng.randint(10, 59)}:{rng.randint(10, 59)} to finish",
        "I forgot my password again", "the password reset link expired", "password is too short, it says",
        "set the token in the env, not in the code", "I use scikit-learn and sk-learn style APIs",
        "the API key is in the vault", "Bearer of bad news, sorry", "token of appreciation",
        "password: <your password here>", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        f"see https://{f.domain_name()}/docs?page={rng.randint(1, 9)}&q={f.word()}",
        f"repo at https://github.com/{f.user_name()}/{f.word()}",
        "http://localhost:8080/health is green", "ping me @ 5pm",
        f"commit {g.rand('0123456789abcdef', 40)} fixed it",
        f"uuid {g.rand('0123456789abcdef', 8)}-{g.rand('0123456789abcdef', 4)}-4{g.rand('0123456789abcdef', 3)}-a{g.rand('0123456789abcdef', 3)}-{g.rand('0123456789abcdef', 12)}",
        f"color #{g.rand('0123456789abcdef', 6)} looks better",
        "Monday was busy. Tomorrow will be better.", "Coffee first, then the report.",
        "Apple released a new phone", "Python 3.12 is out", "New York was cold", "Will you come tonight?",
        "May I ask something?", "Mark the date in the calendar", "Grace period ends Friday",
        "Thanks, see you tomorrow", "The Beatles played here", "Machine Learning is hard",
        "Chapter 12 covers the basics", "I read 3 chapters last night", "Route 66 is iconic",
        "Meeting moved to 3pm, Room B", "Hope you're well!", "Sunny day in the park",
        f"{f.word().capitalize()} and {f.word()} are on the list",
        f"{f.city()} was lovely this time of year",
        f"Gate {rng.randint(1, 60)} at Terminal {rng.randint(1, 5)}",
        f"I need {rng.randint(2, 9)} Large Pizzas and {rng.randint(2, 9)} Cokes",
        f"the build took {rng.randint(100, 999)}.{rng.randint(0, 9)} seconds",
        f"port {rng.randint(1024, 65535)} is open",
        f"timestamp {rng.randint(1_600_000_000, 1_800_000_000)} in the log",
        f"zip {rng.randint(10000, 99999)}?",
        f"we crossed {rng.randint(2, 9)}{g.rand(string.digits, 9)} requests today",
        f"the count is {rng.randint(10**7, 10**8)}",
        f"call me in {rng.randint(5, 50)} minutes", f"ticket {rng.randint(2019, 2026)}-{rng.randint(1, 99999):05d} is closed",
        # code pasted into chat: names of secrets without their values
        "def login(user, password: str) -> bool:", "password = os.environ['DB_PASSWORD']",
        "token = get_token(session)", "api_key: Optional[str] = None", "password: ********",
        "if not token: raise AuthError", "the token expired after 3600 seconds",
        # organisations, products and adjectives in the slots where names go
        "Google said the outage is over", "Slack told me to update the app", "Amazon says it ships Monday",
        "met the New Relic folks at the booth", "I'm Canadian, eh", "I'm Happy with that", "Thanks Google!",
        "Hi Team, quick update", "Dear Sir or Madam", "ask Siri for the weather", "tell Alexa to stop",
        "we build it with Python and Rust", "I'm Ready when you are", "This is Spotify's new feature",
        "Microsoft and I have a complicated relationship", "Docker said the image is too big",
        "I visited Rome and Florence", "see Figure 3 and Table 2", "with Visual Studio Code it works",
        # numbers and capitalised words that look a bit like a street line
        "Chapter 5 Main Points are in the summary", "Top 10 Beach Resorts of 2024",
        "we booked 2 Grand Hotel rooms", "Section 12, Paragraph 3",
        f"Windows 11 and iOS {rng.randint(15, 18)}.{rng.randint(0, 6)} both work",
    ]
    return rng.choice(choices)


def make_samples(n: int, seed: int) -> list[Sample]:
    g = Gen(seed)
    rng = g.rng
    kinds = list(KINDS)
    samples: list[Sample] = []
    for i in range(n):
        b = Builder()
        if i % 5 == 4:  # 20 % pure negatives
            b.lit(negatives(g))
            samples.append(b.build())
            continue
        kind = kinds[i % len(kinds)] if i % 5 < 3 else rng.choice(kinds)
        items = _item(g, kind)
        template = rng.choice(TEMPLATES[items[1]])
        b.template(template, {"x": (items[0], kind)})
        extra = rng.random()
        if extra < 0.25:  # a second PII item of another kind in the same turn
            other = rng.choice([k for k in kinds if k != kind])
            text, tkey = _item(g, other)
            b.lit(rng.choice([". Also ", "; ", " and btw ", ".\n"]))
            b.template(rng.choice(TEMPLATES[tkey]), {"x": (text, other)})
        elif extra < 0.45:  # plus an innocent look-alike
            b.lit(rng.choice([". ", " — ", "\n"]))
            b.lit(negatives(g))
        samples.append(b.build())
    return samples


def _item(g: Gen, kind: str) -> tuple[str, str]:
    """(text, template key)"""
    if kind == "secret":
        value = g.secret()
        if value.startswith(("AKIA", "gh", "gl", "xox", "sk", "rk", "AIza", "eyJ", "-----")):
            return value, "secret"
        if len(value) >= 24 and value.isascii() and not any(c in value for c in "!@#$%^&*()+"):
            return value, "secret_bearer"
        return value, "secret_ctx"
    return getattr(g, kind)(), kind


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------


def score(samples: list[Sample]) -> tuple[dict, list[dict], float]:
    stats = {k: {"gold": 0, "found": 0, "detected": 0, "tp_det": 0, "gold_chars": 0, "covered_chars": 0}
             for k in KINDS}
    errors: list[dict] = []
    started = time.perf_counter()
    # Names mode (``ingest.redact_names``): every detector, names included. The default mode
    # runs the same detectors minus names, so its recall per non-name kind is the same.
    results = [redact(s.text, names=True) for s in samples]
    elapsed = time.perf_counter() - started
    for s, r in zip(samples, results, strict=True):
        dets = [(sp.start, sp.end, sp.kind) for sp in r.spans]
        for gs, ge, gk in s.gold:
            st = stats[gk]
            st["gold"] += 1
            st["gold_chars"] += ge - gs
            st["covered_chars"] += sum(max(0, min(ge, de) - max(gs, ds)) for ds, de, _ in dets)
            if any(dk == gk and ds < ge and gs < de for ds, de, dk in dets):
                st["found"] += 1
            else:
                errors.append({"type": "miss", "kind": gk, "item": s.text[gs:ge], "text": s.text,
                               "redacted": r.text})
        for ds, de, dk in dets:
            st = stats[dk]
            st["detected"] += 1
            if any(gk == dk and ds < ge and gs < de for gs, ge, gk in s.gold):
                st["tp_det"] += 1
            else:
                errors.append({"type": "false_positive", "kind": dk, "item": s.text[ds:de], "text": s.text,
                               "redacted": r.text})
    table = {}
    for k, st in stats.items():
        table[k] = {
            "gold": st["gold"], "detected": st["detected"],
            "precision": round(st["tp_det"] / st["detected"], 4) if st["detected"] else None,
            "recall": round(st["found"] / st["gold"], 4) if st["gold"] else None,
            "covered": round(st["covered_chars"] / st["gold_chars"], 4) if st["gold_chars"] else None,
        }
    return table, errors, elapsed


def throughput(seed: int, turns: int = 1000, repeats: int = 5) -> dict:
    """Time redact() on ~200-char chat turns: plain prose, and PII-dense turns.

    Best of ``repeats`` passes, in CPU time of this process (the least
    disturbed by other processes on a shared machine).
    """
    g = Gen(seed + 2)

    def pad(text: str) -> str:
        while len(text) < 180:
            text += " " + g.fake(["en_US", "en_GB"]).sentence(nb_words=g.rng.randint(6, 14))
        return text[:240]

    workloads = {
        "prose": [pad("") .strip() for _ in range(turns)],
        "pii": [pad(s.text) for s in make_samples(turns, seed + 1)],
    }
    out = {}
    for name, texts in workloads.items():
        for t in texts[:100]:
            redact(t)  # warm up
        best = float("inf")
        for _ in range(repeats):
            started = time.process_time()
            for t in texts:
                redact(t)
            best = min(best, time.process_time() - started)
        chars = sum(map(len, texts))
        out[name] = {"turns": len(texts), "mean_chars": round(chars / len(texts), 1),
                     "us_per_turn": round(best / len(texts) * 1e6, 1), "chars_per_s": round(chars / best)}
    return out


def phone_crosscheck() -> dict:
    """Recall on phone numbers from an independent source: libphonenumber's example
    numbers for every region (fixed line and mobile), formatted INTERNATIONAL,
    E164 and NATIONAL, in three sentences. Needs ``pip install phonenumbers``
    (optional: not a dependency of the project)."""
    import phonenumbers as pn
    from phonenumbers import PhoneNumberFormat as Fmt
    from phonenumbers import PhoneNumberType as Typ

    out = {}
    for fmt_name in ("INTERNATIONAL", "E164", "NATIONAL"):
        fmt = getattr(Fmt, fmt_name)
        hits = total = 0
        for region in sorted(pn.SUPPORTED_REGIONS):
            for typ in (Typ.FIXED_LINE, Typ.MOBILE):
                example = pn.example_number_for_type(region, typ)
                if not example:
                    continue
                number = pn.format_number(example, fmt)
                for template in ("call me at {}", "{} is my number", "reach me on {} tomorrow"):
                    text = template.format(number)
                    i = text.index(number)
                    total += 1
                    hits += any(s.kind == "phone" and s.start < i + len(number) and i < s.end
                                for s in redact(text).spans)
        out[fmt_name] = {"n": total, "recall": round(hits / total, 4)}
    return out


# Look-alikes (issue 12): places, organisations, products, titles and pets built on a person's
# name. None is a person, so none may be redacted, in either mode. Labelled by construction:
# the text and the part that must survive.
LOOKALIKE_NAMES = ["Olaf", "Mary", "Victoria", "George", "Lincoln", "Anna", "James", "Elizabeth", "Luigi", "Peter",
                   "Thomas", "Francis", "Catherine", "Edward", "Patrick", "Albert", "Vincent", "Margaret", "Joseph",
                   "Martin"]
LOOKALIKE_TEMPLATES = [
    ("I work as a nurse at St. {n} hospital.", "St. {n} hospital"),
    ("We took the train from {n} station this morning.", "{n} station"),
    ("My son goes to St. {n}'s school now.", "St. {n}'s school"),
    ("She studied history at {n} College.", "{n} College"),
    ("We had dinner at {n}'s restaurant by the river.", "{n}'s restaurant"),
    ("My dog is called {n} and he is two.", "{n}"),
    ("The meeting is at the {n} Foundation offices.", "{n} Foundation"),
    ("We walked through {n} Park on Sunday.", "{n} Park"),
    ("Our flat is near the {n} Bridge.", "{n} Bridge"),
    ("I bought tickets for the {n} Museum.", "{n} Museum"),
]


def lookalikes() -> list[tuple[str, str]]:
    return [(t.format(n=name), keep.format(n=name)) for t, keep in LOOKALIKE_TEMPLATES for name in LOOKALIKE_NAMES]


def lookalike_survival() -> dict:
    """Share of look-alikes whose protected words survive, per name mode, and the failures."""
    out = {}
    for mode, names in (("default", False), ("redact_names", True)):
        failed = [text for text, keep in lookalikes() if keep not in redact(text, names=names).text]
        out[mode] = {"n": len(lookalikes()), "survival": round(1 - len(failed) / len(lookalikes()), 4),
                     "failed": failed[:10]}
    return out


def markdown(table: dict) -> str:
    def fmt(v):
        return "–" if v is None else f"{v:.3f}"

    lines = ["| kind | placeholder | gold | detected | precision | recall | covered |",
             "|---|---|---:|---:|---:|---:|---:|"]
    from services.lib.privacy.redact import PLACEHOLDERS

    for k, row in table.items():
        lines.append(f"| {k} | `{PLACEHOLDERS[k]}` | {row['gold']} | {row['detected']} | {fmt(row['precision'])} "
                     f"| {fmt(row['recall'])} | {fmt(row['covered'])} |")
    return "\n".join(lines)


def evaluate(n: int, seed: int = 42) -> dict:
    samples = make_samples(n, seed)
    table, errors, elapsed = score(samples)
    goals_met = all(
        (table[k]["precision"] or 0) >= GOAL_PRECISION and (table[k]["recall"] or 0) >= GOAL_RECALL
        for k in STRUCTURED_KINDS if table[k]["gold"])
    pii = [k for k in KINDS if table[k]["gold"]]
    found = sum(round((table[k]["recall"] or 0) * table[k]["gold"]) for k in pii)
    return {"n": n, "seed": seed, "per_kind": table, "structured_goals_met": goals_met,
            "pii_recall_names_mode": round(found / max(1, sum(table[k]["gold"] for k in pii)), 4),
            "pii_recall_default_mode": _recall_without_names(table),
            "lookalike_survival": lookalike_survival(),
            "errors": errors, "eval_seconds": round(elapsed, 3)}


def _recall_without_names(table: dict) -> float:
    """Default mode: the same detectors without names, so recall over the non-name kinds."""
    kinds = [k for k in KINDS if k != "name" and table[k]["gold"]]
    found = sum(round((table[k]["recall"] or 0) * table[k]["gold"]) for k in kinds)
    return round(found / max(1, sum(table[k]["gold"] for k in kinds)), 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="number of messages (default 2000)")
    parser.add_argument("--seed", type=int, default=42,
                        help="generator seed (default 42). The rules were developed looking at errors on seeds "
                             "1, 7, 42, 43 and 44: use another seed for a less biased estimate")
    parser.add_argument("--show-errors", type=int, default=0, metavar="K",
                        help="print up to K misses and false positives per kind to stderr")
    parser.add_argument("--no-throughput", action="store_true", help="skip the timing run")
    parser.add_argument("--phonenumbers", action="store_true",
                        help="also measure phone recall on libphonenumber's example numbers (needs phonenumbers)")
    args = parser.parse_args(argv)
    result = evaluate(args.n, args.seed)
    errors = result.pop("errors")
    if args.show_errors:
        shown: dict[tuple[str, str], int] = {}
        for e in errors:
            key = (e["type"], e["kind"])
            if shown.get(key, 0) < args.show_errors:
                shown[key] = shown.get(key, 0) + 1
                print(f"{e['type']:<15} {e['kind']:<8} {e['item']!r}\n    in {e['text']!r}\n    -> {e['redacted']!r}",
                      file=sys.stderr)
    if not args.no_throughput:
        result["throughput"] = throughput(args.seed)
    if args.phonenumbers:
        result["phone_crosscheck"] = phone_crosscheck()
        for fmt, row in result["phone_crosscheck"].items():
            print(f"phone cross-check ({fmt}, libphonenumber examples): recall {row['recall']:.3f} of {row['n']}",
                  file=sys.stderr)
    result["table"] = markdown(result["per_kind"])
    print(result["table"], file=sys.stderr)
    print(f"PII recall: {result['pii_recall_names_mode']:.4f} (names mode), "
          f"{result['pii_recall_default_mode']:.4f} (default mode, names kept); look-alike survival: "
          + ", ".join(f"{m} {r['survival']:.4f} of {r['n']}" for m, r in result["lookalike_survival"].items()),
          file=sys.stderr)
    for name, t in result.get("throughput", {}).items():
        print(f"throughput ({name}): {t['us_per_turn']} µs per ~{t['mean_chars']:.0f}-char turn, "
              f"{t['chars_per_s'] / 1e6:.2f} M chars/s", file=sys.stderr)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
