"""A teacher for the night: any OpenAI-compatible endpoint rewords the night's questions and answers.

``trainer.teacher_url`` (empty by default: nothing leaves the machine) names
a chat-completions endpoint, for example a bigger local model behind
llama.cpp, Ollama, mlx-lm's server or another circadian's API. It writes the
rewordings the embedded model would otherwise write itself
(:mod:`services.trainer.paraphrase`): the same prompts, the same parsing,
the same acceptance rules in ``build_dataset``, and its own cache, keyed by
the teacher, so a resumed night asks nothing twice.

What is sent: only the question/answer pairs the dataset builder made from
*redacted* memories, each run through the redactor again on the way out
(belt and braces: a teacher may be a remote service). The API key, if any,
comes from ``CIRCADIAN_TEACHER_API_KEY`` and is never logged.

A teacher that cannot be reached, refuses, times out or answers garbage
raises :class:`TeacherError`; the sleep then logs ``training.teacher_failed``
and falls back to the built-in augmentation. Plain ``urllib``: a POST of
JSON needs no HTTP client beyond the standard library.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.trainer.paraphrase import (
    MAX_TOKENS,
    SYSTEM_PROMPT,
    Proposal,
    Request,
    prompts_for,
    proposals_from,
    request_key,
)

API_KEY_ENV = "CIRCADIAN_TEACHER_API_KEY"
MAX_REPLY_BYTES = 1 << 20


class TeacherError(RuntimeError):
    """The teacher could not write the night's rewordings (the message says why, never the key)."""


def completions_url(base: str) -> str:
    """``http://host:port`` or ``.../v1`` or the full ``.../chat/completions`` -> the full URL."""
    base = base.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")


@dataclass(frozen=True)
class Teacher:
    url: str
    model: str = ""
    timeout_s: float = 60.0
    redact_names: bool = False

    @property
    def where(self) -> str:
        """host:port, for logs and events (never a path with a token in it)."""
        parsed = urllib.parse.urlparse(self.url)
        return f"{parsed.hostname}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"

    @property
    def identity(self) -> str:
        """The cache key: another teacher or model writes other rewordings."""
        return "teacher-" + hashlib.sha256(f"{completions_url(self.url)}|{self.model}".encode()).hexdigest()[:16]

    def complete(self, prompt: str) -> str:
        from services.lib.privacy.redact import redact

        body = {"model": self.model or "default", "temperature": 0, "max_tokens": MAX_TOKENS,
                "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                             {"role": "user", "content": redact(prompt, names=self.redact_names).text}]}
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if os.environ.get(API_KEY_ENV):
            headers["Authorization"] = f"Bearer {os.environ[API_KEY_ENV]}"
        request = urllib.request.Request(completions_url(self.url), data=json.dumps(body).encode(),
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - http(s) only
                raw = response.read(MAX_REPLY_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise TeacherError(f"the teacher at {self.where} answered HTTP {exc.code} ({_error_text(exc)})") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TeacherError(f"the teacher at {self.where} cannot be reached ({reason})") from None
        return _content(raw, self.where)

    def propose(self, requests: Sequence[Request], *, on_progress: Callable[[int], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> dict[str, list[Proposal]]:
        """request key -> proposals, for every request; raises TeacherError at the first failure."""
        out: dict[str, list[Proposal]] = {}
        for done, request in enumerate(requests, 1):
            if should_stop is not None and should_stop():
                break
            out[request_key(*request)] = proposals_from([self.complete(p) for p in prompts_for(request)])
            if on_progress is not None:
                on_progress(done)
        return out


def _content(raw: bytes, where: str) -> str:
    if len(raw) > MAX_REPLY_BYTES:
        raise TeacherError(f"the teacher at {where} sent more than {MAX_REPLY_BYTES} bytes for one reply")
    try:
        reply = json.loads(raw)
        content = reply["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise TeacherError(f"the teacher at {where} did not answer an OpenAI chat completion "
                           "(choices[0].message.content)") from None
    if not isinstance(content, str):
        raise TeacherError(f"the teacher at {where} sent a non-text message content")
    return content


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(exc.read(4096)).get("error", {}).get("message", "")
    except (ValueError, AttributeError, OSError):
        detail = ""
    return str(detail)[:200] or exc.reason or "no detail"

