"""The socket-free chat core: one turn in, streamed text and a turn record out.

Everything here runs on the single thread that owns the model (MLX streams
belong to the thread that created them). The process shell hands requests
in and ships deltas out; tests drive this class directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache
from mlx_lm.sample_utils import make_sampler

from protocol.chat_api import MAX_MESSAGE_CHARS
from protocol.events import ChatTurnCompleted
from services.chat.sessions import Session, SessionTable, common_prefix_len
from services.common.config import ChatConfig

HistoryLoader = Callable[[str], list[tuple[str, str]]]


@dataclass(frozen=True)
class RecallOutcome:
    status: str  # ok | off | unavailable | timeout | error
    memories: list[tuple[str, str]]  # (memory_id, text)
    duration_ms: float = 0.0


Recaller = Callable[[str], RecallOutcome]


def with_memories(message: str, memories: list[tuple[str, str]]) -> str:
    """The user message as the model sees it: recalled memories first, compactly.

    Memories go into the current user message, not the system prompt, so the
    conversation's prefix stays identical from turn to turn and the KV cache
    keeps working. The "Context / Question" shape was chosen by measurement:
    on four remembered facts the embedded 135M model's answer contained the
    fact 4/4 times this way, 2/4 with a bulleted preamble.
    """
    if not memories:
        return message
    context = " ".join(text.strip().rstrip(".") + "." for _, text in memories)
    return f"Context: {context}\n\nQuestion: {message}\nAnswer using the context."


class TurnRejected(ValueError):
    """The request cannot be served as asked; ``code`` goes into the ErrorReply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TurnRequest:
    request_id: str
    session_id: str
    message: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    system_prompt: str | None = None
    recall: bool = True
    # The client named this session: it may exist in the log (chat restarted
    # or evicted it). A new session has no history to look up.
    resume: bool = True


@dataclass
class TurnCallbacks:
    on_start: Callable[[int], None]  # turn_index
    on_delta: Callable[[str], None]
    should_cancel: Callable[[], bool]


def validate_sampling(max_tokens: int, temperature: float, top_p: float) -> None:
    if not 1 <= max_tokens <= 8192:
        raise TurnRejected("bad_request", f"max_tokens must be 1..8192, got {max_tokens}")
    if not 0.0 <= temperature <= 5.0:
        raise TurnRejected("bad_request", f"temperature must be 0..5, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise TurnRejected("bad_request", f"top_p must be in (0, 1], got {top_p}")


class ChatEngine:
    def __init__(self, model: Any, tokenizer: Any, *, model_name: str, config: ChatConfig,
                 history_loader: HistoryLoader | None = None, recaller: Recaller | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.config = config
        self.sessions = SessionTable(config.max_sessions)
        self.history_loader = history_loader
        self.recaller = recaller
        self.adapter_id: str | None = None
        # Created here, on the owner thread: MLX streams are per-thread.
        self.stream = mx.new_stream(mx.default_device())

    def warm_up(self) -> None:
        """Run one tiny generation so the first real turn does not pay for MLX's first-use setup."""
        cache = make_prompt_cache(self.model)
        tokens = self.tokenizer.encode("Hello")
        for _ in generate_step(mx.array(tokens), self.model, self.stream, max_tokens=2, prompt_cache=cache):
            pass

    # -- sessions -------------------------------------------------------
    def _session(self, request: TurnRequest) -> Session:
        session = self.sessions.get(request.session_id)
        if session is None:
            session = Session(request.session_id, request.system_prompt or self.config.system_prompt)
            # A session chat no longer holds (restart, eviction): rebuild its
            # conversation from the log so the turn index and context continue.
            if self.history_loader is not None and request.resume:
                for user_text, assistant_text in self.history_loader(request.session_id):
                    session.messages += [{"role": "user", "content": user_text},
                                         {"role": "assistant", "content": assistant_text}]
                    session.turn_index += 1
            self.sessions.put(session)
        elif request.system_prompt and request.system_prompt != session.system_prompt:
            session.system_prompt = request.system_prompt
            session.reset_cache()
        return session

    def prompt_tokens(self, session: Session, user_text: str) -> list[int]:
        messages = [{"role": "system", "content": session.system_prompt}, *session.messages,
                    {"role": "user", "content": user_text}]
        return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))

    def _reuse_cache(self, session: Session, tokens: list[int]) -> int:
        """Trim the session's cache to the common prefix; return how many tokens it keeps."""
        if session.cache is None:
            session.cache = make_prompt_cache(self.model)
            session.tokens = []
            return 0
        keep = common_prefix_len(session.tokens, tokens)
        keep = min(keep, len(tokens) - 1)  # at least one token must be fed to get logits
        surplus = len(session.tokens) - keep
        if surplus > 0:
            if not can_trim_prompt_cache(session.cache):
                session.cache = make_prompt_cache(self.model)
                session.tokens = []
                return 0
            trim_prompt_cache(session.cache, surplus)
            session.tokens = session.tokens[:keep]
        return keep

    # -- one turn ------------------------------------------------------
    def run_turn(self, request: TurnRequest, callbacks: TurnCallbacks) -> ChatTurnCompleted:
        received = time.perf_counter()
        if not request.message.strip():
            raise TurnRejected("bad_request", "the message is empty; type something to say")
        if len(request.message) > MAX_MESSAGE_CHARS:
            raise TurnRejected("too_large", f"the message has {len(request.message)} characters; the limit is {MAX_MESSAGE_CHARS}")
        max_tokens = request.max_tokens or self.config.max_tokens
        temperature = self.config.temperature if request.temperature is None else request.temperature
        top_p = self.config.top_p if request.top_p is None else request.top_p
        validate_sampling(max_tokens, temperature, top_p)

        session = self._session(request)
        recall = self._recall(request)
        seen_message = with_memories(request.message, recall.memories)
        tokens = self.prompt_tokens(session, seen_message)
        if len(tokens) + max_tokens > self.config.max_context_tokens:
            raise TurnRejected("too_large", f"the conversation is {len(tokens)} tokens; with max_tokens "
                               f"{max_tokens} it passes the limit of {self.config.max_context_tokens}: start a new session (/new)")
        turn_index = session.turn_index
        callbacks.on_start(turn_index)
        keep = self._reuse_cache(session, tokens)
        generated, text, finish, first_token_at = self._generate(
            session, tokens[keep:], max_tokens, temperature, top_p, callbacks)
        done = time.perf_counter()

        # The cache now holds the prompt plus the tokens it has consumed.
        offset = session.cache[0].offset if session.cache else 0
        session.tokens = (tokens + generated)[:offset]
        session.messages += [{"role": "user", "content": seen_message},
                             {"role": "assistant", "content": text}]
        session.turn_index += 1
        ttft_ms = ((first_token_at or done) - received) * 1000
        decode_s = done - (first_token_at or done)
        return ChatTurnCompleted(
            session_id=session.session_id, turn_index=turn_index, user_text=request.message,
            assistant_text=text, model=self.model_name, adapter_id=self.adapter_id,
            request_id=request.request_id, prompt_tokens=len(tokens),
            completion_tokens=len(generated), ttft_ms=round(ttft_ms, 2),
            tokens_per_s=round((len(generated) - 1) / decode_s, 2) if len(generated) > 1 and decode_s > 0 else 0.0,
            finish_reason=finish, system_prompt=session.system_prompt,
            recall_status=recall.status, recalled_ids=[mid for mid, _ in recall.memories],
            recall_ms=round(recall.duration_ms, 2),
        )

    def _recall(self, request: TurnRequest) -> RecallOutcome:
        if not (request.recall and self.config.recall and self.recaller is not None):
            return RecallOutcome("off", [])
        try:
            return self.recaller(request.message)
        except Exception:  # memory is a help, never a reason not to answer
            return RecallOutcome("error", [])

    def _generate(self, session: Session, new_tokens: list[int], max_tokens: int,
                  temperature: float, top_p: float, callbacks: TurnCallbacks
                  ) -> tuple[list[int], str, str, float | None]:
        sampler = make_sampler(temp=temperature, top_p=top_p if top_p < 1.0 else 0.0)
        detokenizer = self.tokenizer.detokenizer
        detokenizer.reset()
        eos = set(self.tokenizer.eos_token_ids)
        generated: list[int] = []
        finish = "length"
        first_token_at: float | None = None
        steps = generate_step(mx.array(new_tokens), self.model, self.stream, max_tokens=max_tokens,
                              sampler=sampler, prompt_cache=session.cache)
        for token, _ in steps:
            token = int(token)
            if first_token_at is None:
                first_token_at = time.perf_counter()
            generated.append(token)
            if token in eos:
                finish = "stop"
                break
            detokenizer.add_token(token)
            segment = detokenizer.last_segment
            if segment:
                callbacks.on_delta(segment)
            if callbacks.should_cancel():
                finish = "cancelled"
                break
        steps.close()
        detokenizer.finalize()
        tail = detokenizer.last_segment
        if tail:
            callbacks.on_delta(tail)
        return generated, detokenizer.text, finish, first_token_at
