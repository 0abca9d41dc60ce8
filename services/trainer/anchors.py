"""Self-distilled anchors: the base model's own answers, mixed into a night.

A night's dataset is a few hundred short answers about the user. Trained on
them a small model drifts towards answering *everything* that way: the
memory benchmark measured −7.5 to −17.5 canary points and +4 to +18%
perplexity on the embedded model. Rehearsing the base model's own greedy
replies to general prompts pulls the adapter back toward the base model
everywhere else — a LoRA that reproduces them changes nothing there — at
the cost of a generation pass, cached per model (self-distillation
fine-tuning, Yang et al. 2024, uses the same idea against drift).

The prompts are general requests in many formats, generated from small
templates; none is an evaluator canary or format prompt (a test checks), so
the gates still measure drift on material the adapter never rehearsed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CACHE_VERSION = 1
MAX_TOKENS = 96

_TOPICS = ("a volcano", "photosynthesis", "a rainbow", "gravity", "a library", "a bicycle", "the ocean",
           "a thunderstorm", "a bridge", "the internet", "a calendar", "an orchestra", "a desert", "a glacier",
           "a vaccine", "a compass", "a lighthouse", "a museum", "an election", "a recipe")
_YES_NO = ("Is the Pacific an ocean?", "Can birds fly?", "Is a tomato a fruit?", "Is iron a metal?",
           "Do plants need light?", "Is the Earth flat?", "Is a week seven days long?", "Can penguins fly?",
           "Is gold heavier than feathers?", "Is Mars a planet?", "Do spiders have six legs?",
           "Is Tokyo in Japan?")
_LISTS = ("vegetables", "musical instruments", "European capitals", "board games", "kitchen tools",
          "sports played with a ball", "things found in a garden", "types of weather")
_FACTS = ("What is the boiling point of water in Celsius?", "Who wrote Pride and Prejudice?",
          "What is the chemical symbol for gold?", "How many strings does a violin have?",
          "What is the longest river in Africa?", "Which instrument has 88 keys?",
          "What language is spoken in Brazil?", "How many minutes are in an hour?",
          "What do you call a baby cat?", "What is the opposite of cold?", "What is 12 times 3?",
          "What is the square root of 81?", "Which ocean lies between Europe and America?",
          "What gas do humans breathe out?")
_TASKS = ("Give me a tip for sleeping better.", "Suggest a name for a coffee shop.",
          "Write a short haiku about autumn.", "How do I make a cup of tea?",
          "Give me one idea for a rainy afternoon.", "Translate 'good night' into French.",
          "Write one sentence encouraging a friend before an exam.", "What should I pack for a beach day?",
          "Summarize the story of Cinderella in one sentence.", "Explain what a noun is.",
          "Give me a synonym for 'happy'.", "How can I save money on groceries?")


def anchor_prompts() -> list[str]:
    """The fixed pool of general prompts (deterministic order)."""
    prompts = [f"Explain {topic} in one sentence." for topic in _TOPICS]
    prompts += [f"{q} Answer with yes or no." for q in _YES_NO]
    prompts += [f"Name three {kind}." for kind in _LISTS]
    prompts += list(_FACTS) + list(_TASKS)
    prompts += [f"Reply with a JSON object describing {topic} with the keys \"name\" and \"kind\"."
                for topic in _TOPICS[:6]]
    return prompts


def _cache_key(model_id: str, system_prompt: str, prompts: Sequence[str], max_tokens: int) -> str:
    blob = json.dumps([CACHE_VERSION, model_id, system_prompt, list(prompts), max_tokens])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def base_replies(model: Any, tokenizer: Any, *, model_id: str, system_prompt: str,
                 cache_dir: Path | None, prompts: Sequence[str] | None = None,
                 max_tokens: int = MAX_TOKENS) -> list[tuple[str, str]]:
    """(prompt, the model's greedy reply) for each anchor prompt; call on the bare model.

    Cached in ``cache_dir`` (one JSON file per model, system prompt and prompt
    set), so only the first night after installing a model pays for it.
    """
    prompts = list(prompts if prompts is not None else anchor_prompts())
    key = _cache_key(model_id, system_prompt, prompts, max_tokens)
    path = Path(cache_dir) / f"anchors-{key}.json" if cache_dir else None
    if path is not None and path.is_file():
        try:
            cached = json.loads(path.read_text())
            if isinstance(cached, list) and len(cached) == len(prompts):
                return [(str(p), str(r)) for p, r in cached]
        except (OSError, ValueError):
            pass  # a damaged cache is regenerated
    from services.lib.models.scoring import Scorer

    replies = Scorer(model, tokenizer, system_prompt).greedy(prompts, max_tokens)
    # A reply cut off by the token budget would teach the model to stop
    # mid-sentence: only replies that ended on their own are kept (the rest
    # stay in the cache as "" so the cache lines up with the prompts).
    pairs = [(p, r.strip() if len(tokenizer.encode(r)) < max_tokens - 1 else "")
             for p, r in zip(prompts, replies, strict=True)]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(pairs, ensure_ascii=False))
        os.replace(tmp, path)
    return pairs


def anchor_examples(pairs: Sequence[tuple[str, str]], *, system_prompt: str, count: int) -> list[dict]:
    """``count`` chat examples cycling through the pairs (replies that came out empty are skipped)."""
    usable = [(p, r) for p, r in pairs if r]
    if not usable or count <= 0:
        return []
    return [{"messages": [{"role": "system", "content": system_prompt}, {"role": "user", "content": p},
                          {"role": "assistant", "content": r}]}
            for p, r in (usable[i % len(usable)] for i in range(count))]
