"""Model-written rewordings of a fact's question and answer, for the night's dataset.

Rule templates give each fact five or more sentence shapes; the model adds
wording no template has (a single phrasing teaches a small model almost
nothing, varied ones teach it most facts). A small model rewords badly, so
nothing here judges quality: ``build_dataset`` keeps a proposal only when the
question still asks the user's own fact (first person, the subject and a
topic word, no answer given away) and the answer still contains the value;
the rest are counted as rejected in the dataset manifest.

Generation is greedy, so the same requests give the same proposals; they are
cached per model (like the anchors) so a resumed night rebuilds the very
same dataset, and a fact replayed on a later night costs nothing. The model
runs in ``services.trainer.paraphrase_worker``, a child process of the
trainer (which never imports MLX), under the heavy-run lock.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from services.common.config import TrainerConfig

CACHE_VERSION = 1
MAX_TOKENS = 40
SYSTEM_PROMPT = "You are a helpful assistant."
# Measured on SmolLM2-135M: a bare instruction beats few-shot prompts, which
# it continues with the examples' subjects instead of the asked one.
QUESTION_PROMPTS = (
    "Rewrite this question in different words, keeping its meaning. Reply with the new question only.\n\n"
    "{question}",
    "Ask this question again another way, as the same person asking about their own life. "
    "Reply with one question only.\n\n{question}",
)
ANSWER_PROMPT = ("Rewrite this sentence in different words, keeping every fact. "
                 "Reply with the new sentence only.\n\n{answer}")

Request = tuple[str, str]  # (question, answer) as the dataset builder asks
Proposal = tuple[str, str | None]  # (question, answer or None: use a template answer)


def rewordings_per_fact(trainer: TrainerConfig) -> int:
    """How many rewordings a night asks for per fact: the teacher's count when one is set, else the model's."""
    return trainer.teacher_paraphrases if trainer.teacher_url else trainer.model_paraphrases


def request_key(question: str, answer: str) -> str:
    return hashlib.sha256(json.dumps([question, answer]).encode()).hexdigest()[:24]


def prompts_for(request: Request) -> list[str]:
    """The prompts one request needs: one per question style, then the answer."""
    question, answer = request
    return [p.format(question=question) for p in QUESTION_PROMPTS] + [ANSWER_PROMPT.format(answer=answer)]


def last_line(text: str) -> str:
    """The reply's last non-empty line: small models often echo the instruction first."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def proposals_from(replies: Sequence[str]) -> list[Proposal]:
    """Turn one request's replies (as ordered by :func:`prompts_for`) into proposals.

    The first reworded question is paired with the reworded answer, the
    others with a template answer, so a bad answer costs one question, not all.
    """
    *questions, answer = (last_line(r) for r in replies)
    out: list[Proposal] = []
    for i, question in enumerate(questions):
        if question:
            out.append((question, answer or None) if i == 0 else (question, None))
    return out


def propose(requests: Sequence[Request], generate: Callable[[list[str]], list[str]]) -> dict[str, list[Proposal]]:
    """Proposals for each request, keyed by :func:`request_key`; ``generate`` maps prompts to replies."""
    per = len(QUESTION_PROMPTS) + 1
    prompts = [p for request in requests for p in prompts_for(request)]
    replies = generate(prompts)
    if len(replies) != len(prompts):
        raise ValueError(f"{len(replies)} replies for {len(prompts)} prompts")
    return {request_key(*request): proposals_from(replies[i * per:(i + 1) * per])
            for i, request in enumerate(requests)}


# -- the cache -----------------------------------------------------------------------
class ProposalCache:
    """Proposals per request for one model, in one JSON file (rewritten atomically)."""

    def __init__(self, cache_dir: Path | None, model_id: str) -> None:
        key = hashlib.sha256(json.dumps([CACHE_VERSION, model_id, QUESTION_PROMPTS, ANSWER_PROMPT,
                                         SYSTEM_PROMPT, MAX_TOKENS]).encode()).hexdigest()[:16]
        self.path = Path(cache_dir) / f"paraphrases-{key}.json" if cache_dir else None
        self.entries: dict[str, list[Proposal]] = {}
        if self.path is not None and self.path.is_file():
            try:
                raw = json.loads(self.path.read_text())
                self.entries = {str(k): [(str(q), None if a is None else str(a)) for q, a in v]
                                for k, v in raw.items()}
            except (OSError, ValueError, TypeError, AttributeError):
                self.entries = {}  # a damaged cache is regenerated

    def missing(self, requests: Iterable[Request]) -> list[Request]:
        seen: set[str] = set()
        out = []
        for request in requests:
            key = request_key(*request)
            if key not in self.entries and key not in seen:
                seen.add(key)
                out.append(request)
        return out

    def update(self, proposals: dict[str, list[Proposal]]) -> None:
        self.entries.update(proposals)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.entries, ensure_ascii=False))
        os.replace(tmp, self.path)

    def paraphraser(self) -> Callable[[str, str], list[Proposal]]:
        """What ``build_dataset(paraphraser=...)`` calls: a lookup, no model."""
        return lambda question, answer: list(self.entries.get(request_key(question, answer), []))


def collect_requests(build: Callable[[Callable[[str, str], list[Proposal]]], object]) -> list[Request]:
    """The requests a dataset build would make: run it once with a recording paraphraser."""
    requests: list[Request] = []

    def record(question: str, answer: str) -> list[Proposal]:
        requests.append((question, answer))
        return []

    build(record)
    return requests


def write_requests(path: Path, requests: Sequence[Request]) -> None:
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in requests))


def read_requests(path: Path) -> list[Request]:
    """The worker's input; a line that is not {"question": str, "answer": str} is an error."""
    out = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc})") from exc
        if (not isinstance(item, dict) or not isinstance(item.get("question"), str)
                or not isinstance(item.get("answer"), str)):
            raise ValueError(f'{path}:{number}: expected {{"question": str, "answer": str}}')
        out.append((item["question"], item["answer"]))
    return out
