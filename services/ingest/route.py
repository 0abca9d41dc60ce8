"""Deciding what a memory is good for: LoRA (teach it), RAG (recall it), both, or skip.

Rules first, because they are explainable and cover the clear cases:
- nothing to keep (empty, small talk, a bare question) -> skip;
- verbatim material (code, URLs, JSON, logs, long pastes, number-heavy
  text) -> RAG: a small model cannot learn it verbatim, recall can quote it;
- statements about the user (first person, preferences, stable facts, and
  anything the trainer's fact extractor recognises) -> both: recall answers
  at once, the adapter learns it overnight.
A learned classifier (:mod:`services.ingest.route_model`) refines the rest
when it is available and confident; below its threshold it abstains to
"both" (the safe choice: nothing is lost).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROUTES = ("lora", "rag", "both", "skip")


@dataclass(frozen=True)
class RouteDecision:
    route: str
    score: float  # confidence 0..1
    reason: str


_SMALL_TALK = re.compile(
    r"^(hi|hello|hey|yo|thanks|thank you|thx|ok|okay|cool|nice|great|bye|goodbye|good (morning|night|evening)"
    r"|lol|haha|yes|no|sure|yep|nope|hmm+|wow)[\s!.,?]*$", re.IGNORECASE)
_CODE = re.compile(r"```|^\s{4,}\S|\bdef \w+\(|\bclass \w+[:(]|#include|\bfunction\s*\(|=>|;\s*$|\{\s*$",
                   re.MULTILINE)
_URL = re.compile(r"https?://|www\.\w")
_JSON = re.compile(r"^\s*[\[{].*[\]}]\s*$", re.DOTALL)
_LOG = re.compile(r"^\s*(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}|\[\w+\]|(ERROR|WARN|INFO|DEBUG)\b)", re.MULTILINE)
_FIRST_PERSON = re.compile(r"\b(i|i'm|im|i've|i'd|my|mine|me|we|our|we're)\b", re.IGNORECASE)
# The people in a user's life: "my <one of these>" makes a statement about them, a fact the user
# may ask about, so it is never routed to training only ("My mentor Hollis taught me to write the
# tests first" had gone to `lora` on the retrieval bench, and could not be recalled).
_PEOPLE = (r"wife|husband|partner|fianc[eé]e?|spouse|son|daughter|kids?|children|child|baby|mother|father|mom|mum"
           r"|dad|parents?|brother|sister|siblings?|twin|grand(?:mother|father|ma|pa|parents?|son|daughter)"
           r"|aunt|uncle|cousin|niece|nephew|godson|goddaughter|godchild|godmother|godfather|in-laws?"
           r"|(?:mother|father|brother|sister)-in-law|step(?:mother|father|son|daughter)|friends?|best friend"
           r"|boyfriend|girlfriend|roommate|flatmate|housemate|neighbou?r|landlord|landlady|tenant|boss|manager"
           r"|colleague|coworker|co-worker|teammate|mentor|client|assistant|teacher|tutor|coach|trainer"
           r"|therapist|counsell?or|doctor|dentist|vet|nurse|accountant|lawyer|hairdresser|barber|classmate"
           r"|old classmate|piano teacher|personal trainer")
_ABOUT_USER = re.compile(
    r"\b(my name|i live|i work|i like|i love|i hate|i prefer|i don't like|i dislike|my favou?rite"
    r"|i'm allergic|allergic to|my (" + _PEOPLE + r"|cat|dog|pet|birthday|job|team|project|deadline)"
    r"|remember that|please remember|call me"
    r"|we moved|i moved|my address|born on|i was born)\b", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\[[A-Z_]+\]")


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def features(user_text: str) -> dict[str, float]:
    """Cheap surface features the rules and the classifier share."""
    words = _words(user_text)
    n_chars = max(len(user_text), 1)
    return {
        "n_words": float(len(words)),
        "digit_ratio": sum(c.isdigit() for c in user_text) / n_chars,
        "code": float(bool(_CODE.search(user_text))),
        "url": float(bool(_URL.search(user_text))),
        "json": float(bool(_JSON.match(user_text)) and len(user_text) > 20),
        "log": float(bool(_LOG.search(user_text))),
        "first_person": float(len(_FIRST_PERSON.findall(user_text))) / max(len(words), 1),
        "about_user": float(bool(_ABOUT_USER.search(user_text))),
        "question": float(user_text.rstrip().endswith("?")),
        "lines": float(user_text.count("\n") + 1),
        "small_talk": float(bool(_SMALL_TALK.match(user_text.strip()))),
    }


def _states_a_fact(text: str) -> bool:
    """Would the trainer learn a fact from this? Then it must never be skipped.

    Asks the trainer's own extractor (pure Python, no model): people state
    facts in passing ("Busy day. My aunt's birthday is July 9. Any film for
    tonight?"), and the classifier, seeing a question at the end, skipped 14
    of 100 such statements on the memory benchmark's day.
    """
    from services.lib.facts import extract_facts

    return bool(extract_facts(text))


def rule_route(user_text: str) -> RouteDecision | None:
    """A confident rule decision, or None when the rules have no clear answer."""
    text = _PLACEHOLDER.sub(" ", user_text).strip()
    f = features(text)
    if not text or f["n_words"] == 0:
        return RouteDecision("skip", 1.0, "empty")
    if f["small_talk"]:
        return RouteDecision("skip", 0.95, "small talk")
    if f["code"] or f["json"]:
        return RouteDecision("rag", 0.95, "verbatim: code or structured data")
    if f["log"] and f["lines"] >= 2:
        return RouteDecision("rag", 0.9, "verbatim: log output")
    if f["url"]:
        return RouteDecision("rag", 0.85, "verbatim: contains a link")
    if f["n_words"] > 150:
        return RouteDecision("rag", 0.85, "verbatim: long pasted text")
    if f["digit_ratio"] > 0.2 and f["n_words"] >= 4:
        return RouteDecision("rag", 0.8, "verbatim: number-heavy")
    if _states_a_fact(text):
        return RouteDecision("both", 0.95, "states a fact about the user")
    if f["about_user"]:
        return RouteDecision("both", 0.9, "a statement about the user")
    if f["question"] and f["first_person"] == 0 and f["n_words"] < 25:
        return RouteDecision("skip", 0.7, "a question with no new information")
    return None


def route_default(user_text: str) -> RouteDecision:
    """Rules, falling back to a plain recall-only memory when they are unsure."""
    decision = rule_route(user_text)
    if decision is not None:
        return decision
    words = features(user_text)["n_words"]
    if words < 4:
        return RouteDecision("skip", 0.6, "too short to be worth remembering")
    first_person = features(user_text)["first_person"] > 0
    if first_person:
        return RouteDecision("both", 0.5, "first-person statement (uncertain): both")
    return RouteDecision("rag", 0.5, "general conversation: recall only")


def apply_opt_outs(route: str, tags: list[str]) -> tuple[str, str]:
    """Restrict a route by the user's opt-out tags; returns (route, note)."""
    uses = {"lora", "rag"} if route == "both" else ({route} if route in ("lora", "rag") else set())
    if "no-train" in tags:
        uses.discard("lora")
    if "no-rag" in tags:
        uses.discard("rag")
    if not uses:
        return "skip", "opt-out tags leave no allowed use"
    new_route = "both" if uses == {"lora", "rag"} else uses.pop()
    return new_route, "" if new_route == route else f"restricted by #{' #'.join(tags)}"
