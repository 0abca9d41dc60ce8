"""How recalled memories are shown to the model: as what the *user* said (issue 12, part 4).

A library, not chat's own module: chat builds every recall prompt with
:func:`with_memories`, and the trainer's distillation teacher
(services/trainer/distill.py) must see exactly the same prompt.

The 135M model read "I work as a nurse" in its context and answered as if it
were itself a nurse. A memory is the user's own statement, so it is shown as
one; placeholders become words first (services/lib/privacy/placeholders.py).

The framings below are the candidates measured by ``bench/bench_framing.py``
(embedded model, greedy, the same facts and questions for each); ``FRAMING``
is the one chosen by that measurement: ``short_answer`` answered 10 of 12
right with no reply taking the user's fact as its own, against 8 of 12 for
the shape before issue 12 (README "Memory a person would trust").
"""

from __future__ import annotations

import re

from services.lib.privacy.placeholders import speakable

# First person -> second person, longest forms first; only where the swap is reliable
# (a memory is one user's own sentence about themselves).
_SWAPS = [
    (r"i'm", "you're"), (r"i’m", "you’re"), (r"i am", "you are"), (r"i was", "you were"), (r"i've", "you've"),
    (r"i’ve", "you’ve"), (r"i'd", "you'd"), (r"i'll", "you'll"), (r"we're", "you're"), (r"we've", "you've"),
    (r"myself", "yourself"), (r"ourselves", "yourselves"), (r"mine", "yours"), (r"ours", "yours"),
    (r"my", "your"), (r"our", "your"), (r"me", "you"), (r"us", "you"), (r"we", "you"), (r"i", "you"),
]
_SWAP_RE = re.compile(r"\b(" + "|".join(re.escape(a) for a, _ in _SWAPS) + r")\b", re.IGNORECASE)
_SWAP = {a: b for a, b in _SWAPS}


def second_person(text: str) -> str:
    """ "My dog is called Biscuit. I work as a nurse" -> "Your dog is called Biscuit. You work as a nurse"."""
    def swap(m: re.Match[str]) -> str:
        word = m.group(0)
        out = _SWAP[word.lower()]
        starts = m.start() == 0 or text[:m.start()].rstrip()[-1:] in (".", "!", "?", '"')
        return out[0].upper() + out[1:] if starts else out
    return _SWAP_RE.sub(swap, text)


def _sentences(memories: list[str]) -> list[str]:
    return [speakable(text).strip().rstrip(".") + "." for text in memories]


def context_plain(message: str, memories: list[str]) -> str:
    """The shape before issue 12 (memories as bare context): the baseline."""
    return f"Context: {' '.join(_sentences(memories))}\n\nQuestion: {message}\nAnswer using the context."


def user_said(message: str, memories: list[str]) -> str:
    quoted = " ".join(f'"{s}"' for s in _sentences(memories))
    return f"Earlier the user said: {quoted}\n\nQuestion: {message}\nAnswer using what the user said."


def you_said(message: str, memories: list[str]) -> str:
    facts = " ".join(second_person(s) for s in _sentences(memories))
    return f"Context (the user told you this about themselves): {facts}\n\nQuestion: {message}\nAnswer using the context."


def facts_about_you(message: str, memories: list[str]) -> str:
    facts = " ".join(second_person(s) for s in _sentences(memories))
    return f"Facts about you, the user: {facts}\n\nQuestion: {message}\nAnswer in one sentence, using \"you\"."


def short_answer(message: str, memories: list[str]) -> str:
    facts = " ".join(second_person(s) for s in _sentences(memories))
    return f"Facts: {facts}\nQuestion: {message}\nAnswer in a few words, using the facts."


def you_first(message: str, memories: list[str]) -> str:
    facts = " ".join(second_person(s) for s in _sentences(memories))
    return f"{facts}\n\nQuestion: {message}\nAnswer using the sentences above."


FRAMINGS = {"context_plain": context_plain, "user_said": user_said, "you_said": you_said,
            "facts_about_you": facts_about_you, "short_answer": short_answer, "you_first": you_first}
FRAMING = "short_answer"


def with_memories(message: str, memories: list[str], framing: str = FRAMING) -> str:
    """The user message as the model sees it: recalled memories first, as the user's own words."""
    if not memories:
        return message
    return FRAMINGS[framing](message, memories)
