"""A question is a recall query, never a memory: keep only what a turn *states*.

Issue 12: "What is my dog called?" and "Where do I work?" were routed `both`
(they say "my dog", "i work"), so they were indexed, ranked first for the
next similar question (0.94 against the fact's 0.21), and reached the night's
training data. So before routing, ingest splits a turn into sentences and
drops the questions; a turn that both states and asks ("Busy day. My aunt's
birthday is July 9. Any film for tonight?") keeps its statements only, and a
turn with nothing left is skipped.

A sentence is a question when it ends with "?", or when it is shaped like one
without the mark ("where do I work", "remind me what my dog is called"): an
interrogative word followed by an auxiliary, an inverted auxiliary + subject,
or a request to be told something. Verbatim material (code, JSON, logs) is
never split: a "?" there is content.
"""

from __future__ import annotations

import re

# Sentence ends: ". ", "! ", "? " (and newlines), but not "St. Olaf", "Dr. Lee", "e.g. this".
_ABBREVIATIONS = ("st", "dr", "mr", "mrs", "ms", "prof", "mt", "jr", "sr", "e.g", "i.e", "etc", "vs", "no", "approx")
_SPLIT = re.compile(r"(?<=[.!?])[\"'’”)]*\s+|\n+")
_AUX = (r"is|are|am|was|were|do|does|did|can|could|would|will|should|shall|may|might|must|have|has|had"
        r"|'s|’s|'re|’re")
_WH_QUESTION = re.compile(
    rf"^(?:and |so |but |ok,? |okay,? |hey,? |hi,? )?(?:what|where|when|who|whom|whose|which|why|how)"
    rf"(?:\s+\w+)?\s*(?:{_AUX}|much|many|old|long|often|far)\b", re.IGNORECASE)
_YES_NO = re.compile(rf"^(?:and |so |but )?(?:{_AUX}|didn't|don't|doesn't|isn't|aren't|can't|won't)\s+"
                     r"(?:i|you|we|my|me|our|it|they|he|she|there|that|this)\b", re.IGNORECASE)
_ASK = re.compile(r"^(?:please\s+)?(?:remind me|tell me|do you (?:know|remember)|can you (?:tell|remind)"
                  r"|could you (?:tell|remind)|any idea|i wonder|guess)\b(?!\s+that\b)", re.IGNORECASE)
# "Could you stop starting every answer with 'Sure!'": a request that states a preference, kept.
_PREFERENCE_REQUEST = re.compile(
    r"^(?:please\s+)?(?:could|can|would|will)\s+you\s+(?:please\s+)?(?:stop|start|always|never|not|keep|remember"
    r"|call me|use|avoid|try to|be more|be less|write|answer|reply|speak)\b", re.IGNORECASE)


def sentences(text: str) -> list[str]:
    """The sentences of ``text``, abbreviations ("St. Olaf") kept inside their sentence."""
    parts: list[str] = []
    for piece in _SPLIT.split(text):
        if not piece.strip():
            continue
        last_word = parts[-1].rsplit(None, 1)[-1].lower() if parts else ""
        if last_word.rstrip(".") in _ABBREVIATIONS and last_word.endswith("."):
            parts[-1] = f"{parts[-1]} {piece.strip()}"
        else:
            parts.append(piece.strip())
    return parts


def is_question(sentence: str) -> bool:
    s = sentence.strip().strip("\"'“”")
    if not s or _PREFERENCE_REQUEST.match(s):
        return False
    if s.rstrip().endswith("?"):
        return True
    s = s.rstrip(".! ")
    return bool(_WH_QUESTION.match(s) or _YES_NO.match(s) or _ASK.match(s))


def _verbatim(text: str) -> bool:
    from services.ingest.route import features

    f = features(text)
    return bool(f["code"] or f["json"] or f["log"] or f["url"] or f["n_words"] > 150
                or (f["digit_ratio"] > 0.2 and f["n_words"] >= 4))


def statements_only(text: str) -> str:
    """``text`` without its questions ("" when it only asks); unchanged when it asks nothing,
    and verbatim material (code, logs, links, long pastes) always unchanged."""
    if _verbatim(text):
        return text
    parts = sentences(text)
    kept = [s for s in parts if not is_question(s)]
    return text.strip() if len(kept) == len(parts) else " ".join(kept).strip()
