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

from protocol.chat_api import MAX_MESSAGE_CHARS, MAX_STOP, MAX_STOP_CHARS
from protocol.events import ChatTurnCompleted
from services.chat.sessions import Session, SessionTable, common_prefix_len
from services.common.config import ChatConfig
from services.lib.privacy.placeholders import scrub_reply
from services.lib.prompts.framing import with_memories as framed

HistoryLoader = Callable[[str], list[tuple[str, str]]]


@dataclass(frozen=True)
class RecallOutcome:
    status: str  # ok | off | unavailable | timeout | error
    memories: list[tuple[str, str]]  # (memory_id, text)
    duration_ms: float = 0.0


Recaller = Callable[[str], RecallOutcome]


def with_memories(message: str, memories: list[tuple[str, str]]) -> str:
    """The user message as the model sees it: recalled memories first, as the user's own words.

    Memories go into the current user message, not the system prompt, so the
    conversation's prefix stays identical from turn to turn and the KV cache
    keeps working. The wording (services/lib/prompts/framing.py) was chosen by
    measurement on bench/bench_framing.py: placeholders become words, and the
    memory is said to be the user's, so the model does not answer as if the
    user's facts were its own.
    """
    return framed(message, [text for _, text in memories])


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
    stop: tuple[str, ...] = ()
    # (role, content) pairs a client resent: a session chat does not hold starts from them.
    history: tuple[tuple[str, str], ...] = ()


@dataclass
class TurnCallbacks:
    on_start: Callable[[int], None]  # turn_index
    on_delta: Callable[[str], None]
    should_cancel: Callable[[], bool]


def validate_stop(stop: tuple[str, ...]) -> None:
    if len(stop) > MAX_STOP:
        raise TurnRejected("bad_request", f"at most {MAX_STOP} stop sequences, got {len(stop)}")
    for seq in stop:
        if not 1 <= len(seq) <= MAX_STOP_CHARS:
            raise TurnRejected("bad_request", f"a stop sequence must be 1..{MAX_STOP_CHARS} characters, got {len(seq)}")


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
            if request.history:
                # The client resent the conversation (the OpenAI API's way): that is
                # the context. Only turns logged in this session count in turn_index.
                session.messages += [{"role": role, "content": content} for role, content in request.history]
            # A session chat no longer holds (restart, eviction): rebuild its
            # conversation from the log so the turn index and context continue.
            elif self.history_loader is not None and request.resume:
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
        validate_stop(request.stop)

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
            session, tokens[keep:], max_tokens, temperature, top_p, callbacks, request.stop)
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
                  temperature: float, top_p: float, callbacks: TurnCallbacks,
                  stop: tuple[str, ...] = ()) -> tuple[list[int], str, str, float | None]:
        sampler = make_sampler(temp=temperature, top_p=top_p if top_p < 1.0 else 0.0)
        detokenizer = self.tokenizer.detokenizer
        detokenizer.reset()
        eos = set(self.tokenizer.eos_token_ids)
        generated: list[int] = []
        finish = "length"
        first_token_at: float | None = None
        scrub = _PlaceholderScrub(callbacks.on_delta)
        out = _StopFilter(stop, scrub)
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
            if segment and out.add(segment):
                finish = "stop"
                break
            if callbacks.should_cancel():
                finish = "cancelled"
                break
        steps.close()
        detokenizer.finalize()
        tail = detokenizer.last_segment
        if tail and not out.stopped and out.add(tail):
            finish = "stop"
        out.flush()
        scrub.flush()
        return generated, scrub_reply(out.text), finish, first_token_at


class _PlaceholderScrub:
    """Passes text on with placeholders scrubbed (services/lib/privacy/placeholders.py).

    A "[" holds the text back until its "]" arrives (or 40 characters pass), so a
    placeholder split over tokens is scrubbed whole: no reply shows "[NAME]".
    """

    HOLD_CHARS = 40

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.pending = ""

    def __call__(self, segment: str) -> None:
        self.pending += segment
        cut = self.pending.rfind("[")
        if cut == -1 or "]" in self.pending[cut:] or len(self.pending) - cut > self.HOLD_CHARS:
            cut = len(self.pending)
        ready, self.pending = self.pending[:cut], self.pending[cut:]
        if ready:
            self.emit(scrub_reply(ready))

    def flush(self) -> None:
        if self.pending:
            self.emit(scrub_reply(self.pending))
            self.pending = ""


class _StopFilter:
    """Passes text on, holding back just enough to never send part of a stop sequence.

    Without stop sequences every segment goes straight through. With them, the
    last ``len(longest) - 1`` characters wait until the next segment shows
    whether a stop sequence starts there; the reply ends before the first one.
    """

    def __init__(self, stop: tuple[str, ...], emit: Callable[[str], None]) -> None:
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.emit = emit
        self.text = ""
        self.sent = 0
        self.stopped = False

    def add(self, segment: str) -> bool:
        """Take a segment; True when a stop sequence ended the reply."""
        self.text += segment
        if self.stop:
            # Search only where a new match can be: the held back tail plus the segment.
            start = max(0, self.sent - self.hold)
            found = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
            if found:
                self.text = self.text[:min(found)]
                self.stopped = True
                self.flush()
                return True
        safe = len(self.text) - self.hold
        if safe > self.sent:
            self.emit(self.text[self.sent:safe])
            self.sent = safe
        return False

    def flush(self) -> None:
        if len(self.text) > self.sent:
            self.emit(self.text[self.sent:])
            self.sent = len(self.text)
