"""chat's socket-free policy: which requests become turns, how a turn is streamed and logged.

:class:`ChatCore` is what the process shell (services.chat.proc) drives from
its three threads, with no socket in sight:

- :meth:`ChatCore.handle` (IO thread, the RouterServer handler): Ping
  answers at once; a SendMessage is admitted as a :class:`Job` (or refused:
  bad id, already running, queue full) and answered later; CancelChat flags
  the running job.
- :meth:`ChatCore.run_job` (model thread): one turn through the engine,
  every frame handed to ``send``; a resend of a turn already logged gets the
  logged answer instead of a new turn.
- :meth:`ChatCore.commit_turn` (committer thread): append the turn to the
  log (with retries) and only then say ChatFinished.

Drive it in process by calling the same three with any ``origin`` and a
``send`` that collects (tests/test_chat_core.py does).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog

from protocol.chat_api import CancelChat, ChatDelta, ChatFinished, ChatStarted, SendMessage
from protocol.envelope import Envelope, new_envelope, new_id
from protocol.events import ChatTurnCompleted
from protocol.service_api import ErrorReply, Ping
from services.common.config import ChatConfig
from services.common.daemon import Readiness
from services.common.logging import get_logger
from services.common.rpc import RemoteError, ServiceUnavailable

log = get_logger("chat")

MAX_QUEUED_TURNS = 32
# Logged turns remembered by request_id, so a resend is answered from the
# record instead of generating the turn (and growing the session) again.
MAX_REMEMBERED_TURNS = 1024
# After the first token the model thread waits (at most this long) until the IO thread has
# passed the delta on. Otherwise it went straight back into mlx-lm's generate loop, whose next
# steps hold the GIL for ~10 ms (buffer cache clearing after the prefill, the next step's
# graph), and the IO thread waited for it: the first token reached the client 9-15 ms after
# it was sent in about two turns of three (traced: model send -> IO receive; bench_chat's
# "client minus chat TTFT").
FIRST_DELTA_HANDOFF_S = 0.005

Send = Callable[[Any], None]


@dataclass
class Job:
    ident: bytes
    request: SendMessage
    session_id: str
    cancelled: threading.Event = field(default_factory=threading.Event)
    forwarded: int = 0  # frames of this job the IO thread has passed on to the client
    progress: threading.Condition = field(default_factory=threading.Condition)
    received_at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class Reload:
    """Ask the model thread to serve whatever adapters/current names now."""

    reason: str


def turn_msg_id(request_id: str) -> str:
    """A resent request must log the same event id, so the log stores the turn once."""
    return f"turn-{request_id}"


def redact_turn(turn: ChatTurnCompleted) -> ChatTurnCompleted:
    """The turn with PII and secrets replaced, for `chat.redact_before_log`."""
    from services.lib.privacy.redact import redact

    return msgspec.structs.replace(turn, user_text=redact(turn.user_text).text,
                                   assistant_text=redact(turn.assistant_text).text)


class ChatCore:
    def __init__(self, readiness: Readiness, config: ChatConfig,
                 space_problem: Callable[[], str | None] = lambda: None) -> None:
        self.readiness = readiness
        self.config = config
        # Why a turn could not be logged now (a full disk, services.common.diskspace), or None:
        # asked before a turn is generated, so the model's work is not thrown away at the commit.
        self.space_problem = space_problem
        self.jobs: queue.Queue[Job | Reload | None] = queue.Queue()
        self.active: dict[str, Job] = {}  # request_id -> job, owned by the IO thread
        self.logged: OrderedDict[str, ChatFinished] = OrderedDict()  # committer writes, model thread reads
        self.logged_lock = threading.Lock()

    # -- IO thread ------------------------------------------------------------------
    def handle(self, request: Any, origin: bytes) -> Any:
        """Ping at once; a SendMessage becomes a job streamed to ``origin`` later (None)."""
        match request:
            case Ping(request_id=rid):
                self.readiness.details["queued_turns"] = str(self.jobs.qsize())
                return self.readiness.pong(rid)
            case CancelChat(request_id=rid):  # no reply: the cancelled turn's stream ends instead
                job = self.active.get(rid)
                if job is not None:
                    job.cancelled.set()
            case SendMessage(request_id=rid) if not rid or len(rid) > 200:
                return ErrorReply(code="bad_request", request_id=rid, message="request_id must be 1-200 characters")
            case SendMessage(request_id=rid) if rid in self.active:
                return ErrorReply(code="busy", request_id=rid, message=f"request {rid} is already being answered")
            case SendMessage() if self.jobs.qsize() >= MAX_QUEUED_TURNS:
                return ErrorReply(code="busy", request_id=request.request_id,
                                  message="chat has too many queued messages; retry in a moment")
            case SendMessage() if (problem := self.space_problem()) is not None:
                log.warning("chat.turn_refused", request_id=request.request_id, reason=problem)
                return ErrorReply(code="disk_full", request_id=request.request_id, message=problem)
            case SendMessage():
                job = Job(origin, request, request.session_id or new_id("s"))
                self.active[request.request_id] = job
                self.jobs.put(job)
        return None

    def job_ended(self, request_id: str) -> None:
        """The job's last frame went out: its request_id may be sent again."""
        self.active.pop(request_id, None)

    def cancel_all(self) -> None:
        for job in list(self.active.values()):
            job.cancelled.set()

    # -- model thread ---------------------------------------------------------------
    def run_job(self, engine: Any, job: Job, send: Send) -> ChatTurnCompleted | None:
        """Stream one turn to ``send``; the turn to log, or None when the job is answered already
        (refused, failed, cancelled before it started, or a resend of a logged turn)."""
        with structlog.contextvars.bound_contextvars(request_id=job.request.request_id, session_id=job.session_id):
            return self._run_job(engine, job, send)

    def _run_job(self, engine: Any, job: Job, send: Send) -> ChatTurnCompleted | None:
        from services.chat.engine import TurnRejected

        rid = job.request.request_id
        if job.cancelled.is_set():
            send(ErrorReply(code="cancelled", request_id=rid, message="cancelled before it started"))
            return None
        with self.logged_lock:
            done = self.logged.get(rid)
        if done is not None:  # a resend of a turn already logged: the same answer, not a new turn
            turn = done.turn
            send(ChatStarted(request_id=rid, session_id=turn.session_id, turn_index=turn.turn_index,
                             adapter_id=turn.adapter_id))
            send(ChatDelta(request_id=rid, text=turn.assistant_text))
            send(ChatFinished(request_id=rid, seq=done.seq, turn=turn, duplicate=True))
            return None
        try:
            turn = engine.run_turn(_turn_request(job), self._callbacks(engine, job, send))
        except TurnRejected as exc:
            send(ErrorReply(code=exc.code, request_id=rid, message=str(exc)))
            return None
        except Exception as exc:  # one bad turn must not take the daemon down
            log.exception("chat.turn_failed", request_id=rid)
            send(ErrorReply(code="internal", request_id=rid, message=f"generation failed: {exc}"))
            return None
        log.info("chat.turn_generated", request_id=rid, session_id=turn.session_id,
                 turn_index=turn.turn_index, completion_tokens=turn.completion_tokens,
                 ttft_ms=turn.ttft_ms, tokens_per_s=turn.tokens_per_s, finish=turn.finish_reason)
        return turn

    @staticmethod
    def _callbacks(engine: Any, job: Job, send: Send) -> Any:
        from services.chat.engine import TurnCallbacks

        rid = job.request.request_id
        sent = 0

        def counted(message: Any) -> None:
            nonlocal sent
            send(message)
            sent += 1

        def on_delta(text: str) -> None:
            counted(ChatDelta(request_id=rid, text=text))
            if sent == 2:  # ChatStarted, then this first delta: let the IO thread pass it on now
                with job.progress:
                    job.progress.wait_for(lambda: job.forwarded >= sent, timeout=FIRST_DELTA_HANDOFF_S)

        return TurnCallbacks(
            on_start=lambda index: counted(ChatStarted(
                request_id=rid, session_id=job.session_id, turn_index=index, adapter_id=engine.adapter_id)),
            on_delta=on_delta,
            should_cancel=job.cancelled.is_set,
        )

    # -- committer thread -----------------------------------------------------------
    def commit_turn(self, append: Callable[[list[Envelope]], Any], job: Job, turn: ChatTurnCompleted,
                    send: Send) -> None:
        """Log the turn (``append`` waits for the commit, retrying), then send ChatFinished."""
        rid = job.request.request_id
        if self.config.redact_before_log:
            turn = redact_turn(turn)
        env = new_envelope(turn, source="chat", msg_id=turn_msg_id(rid))
        started = time.perf_counter()
        try:
            appended = append([env])
        except RemoteError as exc:
            log.error("chat.turn_not_logged", request_id=rid, error=str(exc), code=exc.code)
            if exc.code == "disk_full":  # the log's own words name the directory to free
                send(ErrorReply(code="disk_full", request_id=rid,
                                message=f"{exc.reply.message.split(';')[0]}: the reply was generated but not "
                                        f"logged; send the message again once there is space"))
                return
            send(ErrorReply(code="unavailable", request_id=rid,
                            message=f"the reply was generated but could not be logged ({exc}); resend the message"))
            return
        except ServiceUnavailable as exc:
            log.error("chat.turn_not_logged", request_id=rid, error=str(exc))
            send(ErrorReply(code="unavailable", request_id=rid,
                            message=f"the reply was generated but could not be logged ({exc}); resend the message"))
            return
        seq, duplicate = appended.seqs[0], appended.duplicates[0]
        log.info("chat.turn_logged", request_id=rid, seq=seq, duplicate=duplicate,
                 duration_ms=round((time.perf_counter() - started) * 1000, 2))
        finished = ChatFinished(request_id=rid, seq=seq, turn=turn, duplicate=duplicate)
        with self.logged_lock:
            self.logged[rid] = finished
            while len(self.logged) > MAX_REMEMBERED_TURNS:
                self.logged.popitem(last=False)
        send(finished)


def _turn_request(job: Job) -> Any:
    from services.chat.engine import TurnRequest

    req = job.request
    return TurnRequest(req.request_id, job.session_id, req.message, req.max_tokens,
                       req.temperature, req.top_p, req.system_prompt, req.recall,
                       resume=req.session_id is not None, stop=tuple(req.stop),
                       history=tuple((m.role, m.content) for m in req.history))
