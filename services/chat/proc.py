"""The chat process: sockets and threads around :class:`ChatEngine`.

Threads (sockets never cross threads):
- main: the IO loop. Owns ROUTER ``chat.ctl`` and an inproc PULL on which the
  other threads hand it frames to deliver. Answers Ping itself.
- model: owns MLX. Loads the model, then runs one turn at a time.
- committer: appends finished turns to the event log (with retries) and only
  then tells the client the turn is complete.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from protocol.chat_api import (
    CancelChat,
    ChatDelta,
    ChatFinished,
    ChatRequest,
    ChatStarted,
    SendMessage,
)
from protocol.codec import Codec, ProtocolError, encode
from protocol.envelope import Envelope, new_envelope, new_id
from protocol.events import AdapterReloaded, ChatTurnCompleted, ServiceStarted
from protocol.service_api import ErrorReply, Ping
from services.common.config import Config
from services.common.daemon import VERSION, Readiness, ShutdownFlag, serve_daemon
from services.common.eventlog_client import EventlogClient
from services.common.logging import get_logger
from services.common.paths import Paths, resolve_model_dir
from services.common.rpc import RemoteError, ServiceUnavailable
from services.common.zmqio import bind_router

log = get_logger("chat")

POLL_TIMEOUT_MS = 200
MAX_QUEUED_TURNS = 32
# Logged turns remembered by request_id, so a resend is answered from the
# record instead of generating the turn (and growing the session) again.
MAX_REMEMBERED_TURNS = 1024
OUTBOUND = "inproc://chat-outbound"
# After the first token the model thread waits (at most this long) until the IO thread has
# passed the delta on. Otherwise it went straight back into mlx-lm's generate loop, whose next
# steps hold the GIL for ~10 ms (buffer cache clearing after the prefill, the next step's
# graph), and the IO thread waited for it: the first token reached the client 9-15 ms after
# it was sent in about two turns of three (traced: model send -> IO receive; bench_chat's
# "client minus chat TTFT").
FIRST_DELTA_HANDOFF_S = 0.005


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
    import msgspec

    from services.lib.privacy.redact import redact

    return msgspec.structs.replace(turn, user_text=redact(turn.user_text).text,
                                   assistant_text=redact(turn.assistant_text).text)


class Outbound:
    """A per-thread inproc PUSH to the IO thread: ``[ident, request_id, frame]``."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.sock = ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(OUTBOUND)

    def send(self, ident: bytes, request_id: str, message: Any) -> None:
        # Raw bytes pass through unencoded: b"" is the end-of-job marker, and
        # encoded it would be a non-empty frame the IO thread never recognises.
        frame = message if isinstance(message, bytes) else encode(message)
        self.sock.send_multipart([ident, request_id.encode(), frame])


class ChatServer:
    def __init__(self, paths: Paths, config: Config, ctx: zmq.Context | None = None) -> None:
        self.paths = paths
        self.config = config
        self.ctx = ctx or zmq.Context.instance()
        self.readiness = Readiness("chat")
        self.codec: Codec[Any] = Codec(ChatRequest)
        self.jobs: queue.Queue[Job | Reload | None] = queue.Queue()
        self.commits: queue.Queue[tuple[Job, ChatTurnCompleted] | Envelope | None] = queue.Queue()
        self.active: dict[str, Job] = {}  # request_id -> job, owned by the IO thread
        self.logged: OrderedDict[str, ChatFinished] = OrderedDict()  # committer writes, model thread reads
        self.logged_lock = threading.Lock()
        self.fatal: BaseException | None = None
        self.inbound = self.ctx.socket(zmq.PULL)
        self.inbound.bind(OUTBOUND)
        self.router = bind_router(self.ctx, paths.endpoint("chat.ctl"))
        self.stop = ShutdownFlag()

    # -- IO thread --------------------------------------------------------
    def serve(self, stop: ShutdownFlag) -> None:
        self.stop = stop
        threads = [threading.Thread(target=self._model_thread, name="model", daemon=True),
                   threading.Thread(target=self._committer_thread, name="committer", daemon=True),
                   threading.Thread(target=self._adapter_events_thread, name="adapter-events", daemon=True),
                   threading.Thread(target=self._adapter_files_thread, name="adapter-files", daemon=True)]
        for thread in threads:
            thread.start()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.inbound, zmq.POLLIN)
        while not stop.is_set() and self.fatal is None:
            ready = dict(poller.poll(POLL_TIMEOUT_MS))
            if self.inbound in ready:
                self._forward_outbound()
            if self.router in ready:
                self._take_requests()
        for job in list(self.active.values()):
            job.cancelled.set()
        self.jobs.put(None)
        for thread in threads:
            thread.join(timeout=10)
        # The committer drains what it has before exiting: a finished turn
        # is logged even when we are asked to stop.
        if self.fatal is not None:
            raise self.fatal

    def _take_requests(self) -> None:
        while True:
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            ident = frames[0]
            if len(frames) != 2:
                self._send(ident, ErrorReply(code="malformed", message="send exactly one frame per request"))
                continue
            try:
                request = self.codec.decode(frames[1])
            except ProtocolError as exc:
                log.warning("chat.frame_rejected", reason=str(exc))
                self._send(ident, ErrorReply(code=exc.code, message=f"{exc}; send a request from protocol.chat_api"))
                continue
            self._dispatch(ident, request)

    def _dispatch(self, ident: bytes, request: Any) -> None:
        match request:
            case Ping(request_id=rid):
                self.readiness.details["queued_turns"] = str(self.jobs.qsize())
                self._send(ident, self.readiness.pong(rid))
            case CancelChat(request_id=rid):
                job = self.active.get(rid)
                if job is not None:
                    job.cancelled.set()
            case SendMessage(request_id=rid) if not rid or len(rid) > 200:
                self._send(ident, ErrorReply(code="bad_request", request_id=rid,
                                             message="request_id must be 1-200 characters"))
            case SendMessage(request_id=rid) if rid in self.active:
                self._send(ident, ErrorReply(code="busy", request_id=rid,
                                             message=f"request {rid} is already being answered"))
            case SendMessage() if self.jobs.qsize() >= MAX_QUEUED_TURNS:
                self._send(ident, ErrorReply(code="busy", request_id=request.request_id,
                                             message="chat has too many queued messages; retry in a moment"))
            case SendMessage():
                session_id = request.session_id or new_id("s")
                job = Job(ident, request, session_id)
                self.active[request.request_id] = job
                self.jobs.put(job)

    def _forward_outbound(self) -> None:
        while True:
            try:
                ident, rid, frame = self.inbound.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            request_id = rid.decode()
            job = self.active.get(request_id)
            if not frame:  # end-of-job marker from the model or committer thread
                self.active.pop(request_id, None)
                continue
            delivered = self._send_raw(ident, frame)
            if job is not None:
                with job.progress:
                    job.forwarded += 1
                    job.progress.notify_all()
                if not delivered:  # the client went away (ROUTER_MANDATORY): stop generating for it
                    job.cancelled.set()

    def _send(self, ident: bytes, message: Any) -> bool:
        return self._send_raw(ident, encode(message))

    def _send_raw(self, ident: bytes, frame: bytes) -> bool:
        try:
            self.router.send_multipart([ident, frame])
            return True
        except zmq.ZMQError as exc:
            log.info("chat.client_gone", error=str(exc))
            return False

    # -- model thread -----------------------------------------------------
    def _model_thread(self) -> None:
        try:
            self._serve_jobs()
        finally:
            # MLX streams must be destroyed on the thread that made them before
            # the process exits, or exit aborts now and then ("terminate called
            # without an active exception", ml-explore/mlx#3126) and a SIGTERM
            # stop ends in SIGABRT instead of exit code 0.
            mlx_core = sys.modules.get("mlx.core")
            if mlx_core is not None and hasattr(mlx_core, "clear_streams"):
                mlx_core.clear_streams()

    def _serve_jobs(self) -> None:
        out = Outbound(self.ctx)
        try:
            engine = self._load_engine()
        except BaseException as exc:
            self.fatal = exc
            return
        self.readiness.ready = True
        while True:
            job = self.jobs.get()
            if job is None:
                break
            if isinstance(job, Reload):
                self._reload_adapter(engine, job.reason)
                continue
            self._run_job(engine, job, out)
        self.commits.put(None)

    def _load_engine(self):  # noqa: ANN202 - imports MLX lazily, on this thread
        from services.chat.engine import ChatEngine
        from services.chat.history import LogHistory
        from services.common.blas import preload_openblas
        from services.lib.models.compute import load_for_serving

        blas = preload_openblas()
        model_dir = resolve_model_dir(self.config.chat.model)
        started = time.perf_counter()
        model, tokenizer, info = load_for_serving(model_dir, self.config.chat.compute)
        from services.chat.recall import IngestRecaller

        engine = ChatEngine(model, tokenizer, model_name=model_dir.name, config=self.config.chat,
                            history_loader=LogHistory(self.paths, self.ctx),
                            recaller=IngestRecaller(self.paths, self.config.chat, self.ctx))
        adapter_event = self._load_current_adapter(engine)
        engine.warm_up()
        details = {"model": model_dir.name, "backend": info.backend, "weights": info.weights,
                   "compute_reason": info.reason, "blas": blas.name,
                   "load_s": f"{time.perf_counter() - started:.2f}",
                   "adapter": engine.adapter_id or ""}
        self.readiness.details.update(details)
        log.info("chat.ready", **details)
        self.commits.put(new_envelope(ServiceStarted(service="chat", pid=os.getpid(), version=VERSION,
                                                     details=details), source="chat"))
        if adapter_event is not None:
            self.commits.put(adapter_event)
        return engine

    def _load_current_adapter(self, engine: Any) -> Envelope | None:
        """Serve adapters/current from the start (a promotion missed while down is caught here)."""
        return self._reload_adapter(engine, "startup", emit=False)

    def _reload_adapter(self, engine: Any, reason: str, *, emit: bool = True) -> Envelope | None:
        """Swap to adapters/current between requests; a bad adapter leaves the old one serving."""
        from services.lib.adapters.serve import AdapterError, swap

        try:
            outcome = swap(engine.model, self.paths.adapters, engine.adapter_id)
        except AdapterError as exc:
            log.error("chat.adapter_refused", reason=reason, error=str(exc))
            return None
        if not outcome.changed:
            return None
        engine.adapter_id = outcome.adapter_id
        engine.sessions.drop_caches()  # their KV caches were computed with the old weights
        self.readiness.details["adapter"] = outcome.adapter_id or ""
        log.info("chat.adapter_reloaded", adapter_id=outcome.adapter_id, previous_id=outcome.previous_id,
                 reload_ms=round(outcome.reload_ms, 1), reason=reason)
        event = new_envelope(AdapterReloaded(adapter_id=outcome.adapter_id, previous_id=outcome.previous_id,
                                             reload_ms=round(outcome.reload_ms, 2), reason=reason), source="chat")
        if emit:
            self.commits.put(event)
        return event

    # -- adapter watchers: events first, the file as a fallback ----------------
    def _adapter_events_thread(self) -> None:
        from protocol.events import AdapterPromoted, AdapterRolledBack, event_tag
        from services.common.consumer import EventConsumer

        class FromHead:
            """chat loads adapters/current at start, so only events from now on matter."""

            position = None

            def load(self) -> int:
                return 0

            def store(self, seq: int) -> None:
                self.position = seq

        types = [event_tag(AdapterPromoted), event_tag(AdapterRolledBack)]
        consumer = EventConsumer(self.paths, "chat-adapters", types,
                                 lambda env: self.jobs.put(Reload(env.type)), ctx=self.ctx, cursor=FromHead())
        try:
            while not self.stop.is_set():
                try:
                    if consumer.position == 0:  # skip history: jump to the head once
                        consumer.position = consumer._log.replay(0, limit=1).head_seq
                    consumer.poll(1.0)
                except (ServiceUnavailable, RemoteError):
                    self.stop.wait(1.0)
        finally:
            consumer.close()

    def _adapter_files_thread(self) -> None:
        from watchfiles import watch

        self.paths.adapters.mkdir(parents=True, exist_ok=True)
        try:
            for changes in watch(self.paths.adapters, stop_event=self.stop._event, recursive=False,
                                 rust_timeout=1000, yield_on_timeout=False):
                if any(Path(p).name == "current" for _, p in changes):
                    self.jobs.put(Reload("adapters/current changed"))
        except Exception as exc:  # a fallback only: the events still work
            log.warning("chat.adapter_watch_failed", error=str(exc))

    def _run_job(self, engine: Any, job: Job, out: Outbound) -> None:
        from services.chat.engine import TurnCallbacks, TurnRejected, TurnRequest

        req = job.request
        rid = req.request_id
        if job.cancelled.is_set():
            out.send(job.ident, rid, ErrorReply(code="cancelled", request_id=rid, message="cancelled before it started"))
            out.send(job.ident, rid, b"")
            return
        with self.logged_lock:
            done = self.logged.get(rid)
        if done is not None:  # a resend of a turn already logged: the same answer, not a new turn
            turn = done.turn
            out.send(job.ident, rid, ChatStarted(request_id=rid, session_id=turn.session_id,
                                                 turn_index=turn.turn_index, adapter_id=turn.adapter_id))
            out.send(job.ident, rid, ChatDelta(request_id=rid, text=turn.assistant_text))
            out.send(job.ident, rid, ChatFinished(request_id=rid, seq=done.seq, turn=turn, duplicate=True))
            out.send(job.ident, rid, b"")
            return
        turn_request = TurnRequest(rid, job.session_id, req.message, req.max_tokens,
                                   req.temperature, req.top_p, req.system_prompt, req.recall,
                                   resume=req.session_id is not None, stop=tuple(req.stop),
                                   history=tuple((m.role, m.content) for m in req.history))
        sent = 0

        def send(message: Any) -> None:
            nonlocal sent
            out.send(job.ident, rid, message)
            sent += 1

        def on_delta(text: str) -> None:
            send(ChatDelta(request_id=rid, text=text))
            if sent == 2:  # ChatStarted, then this first delta: let the IO thread pass it on now
                with job.progress:
                    job.progress.wait_for(lambda: job.forwarded >= sent, timeout=FIRST_DELTA_HANDOFF_S)

        callbacks = TurnCallbacks(
            on_start=lambda index: send(ChatStarted(
                request_id=rid, session_id=job.session_id, turn_index=index, adapter_id=engine.adapter_id)),
            on_delta=on_delta,
            should_cancel=job.cancelled.is_set,
        )
        try:
            turn = engine.run_turn(turn_request, callbacks)
        except TurnRejected as exc:
            out.send(job.ident, rid, ErrorReply(code=exc.code, request_id=rid, message=str(exc)))
            out.send(job.ident, rid, b"")
            return
        except Exception as exc:  # one bad turn must not take the daemon down
            log.exception("chat.turn_failed", request_id=rid)
            out.send(job.ident, rid, ErrorReply(code="internal", request_id=rid, message=f"generation failed: {exc}"))
            out.send(job.ident, rid, b"")
            return
        log.info("chat.turn_generated", request_id=rid, session_id=turn.session_id,
                 turn_index=turn.turn_index, completion_tokens=turn.completion_tokens,
                 ttft_ms=turn.ttft_ms, tokens_per_s=turn.tokens_per_s, finish=turn.finish_reason)
        self.commits.put((job, turn))

    # -- committer thread ---------------------------------------------------
    def _committer_thread(self) -> None:
        out = Outbound(self.ctx)
        client = EventlogClient(self.paths, ctx=self.ctx)
        retry_s = self.config.chat.log_retry_s
        while True:
            item = self.commits.get()
            if item is None:
                break
            if isinstance(item, Envelope):  # our own service events: best effort
                try:
                    client.append([item], retry_s=retry_s, should_stop=self.stop.is_set)
                except (ServiceUnavailable, RemoteError) as exc:
                    log.warning("chat.event_not_logged", type=item.type, error=str(exc))
                continue
            job, turn = item
            self._commit_turn(client, out, job, turn, retry_s)
        client.close()

    def _commit_turn(self, client: EventlogClient, out: Outbound, job: Job,
                     turn: ChatTurnCompleted, retry_s: float) -> None:
        rid = job.request.request_id
        if self.config.chat.redact_before_log:
            turn = redact_turn(turn)
        env = new_envelope(turn, source="chat", msg_id=turn_msg_id(rid))
        started = time.perf_counter()
        try:
            appended = client.append([env], retry_s=retry_s)
        except (ServiceUnavailable, RemoteError) as exc:
            log.error("chat.turn_not_logged", request_id=rid, error=str(exc))
            out.send(job.ident, rid, ErrorReply(code="unavailable", request_id=rid,
                                                message=f"the reply was generated but could not be logged ({exc}); resend the message"))
        else:
            seq, duplicate = appended.seqs[0], appended.duplicates[0]
            log.info("chat.turn_logged", request_id=rid, seq=seq, duplicate=duplicate,
                     duration_ms=round((time.perf_counter() - started) * 1000, 2))
            finished = ChatFinished(request_id=rid, seq=seq, turn=turn, duplicate=duplicate)
            with self.logged_lock:
                self.logged[rid] = finished
                while len(self.logged) > MAX_REMEMBERED_TURNS:
                    self.logged.popitem(last=False)
            out.send(job.ident, rid, finished)
        out.send(job.ident, rid, b"")

    def close(self) -> None:
        self.router.close()
        self.inbound.close()


def run(paths: Paths, config: Config) -> int:
    from services.common.blas import preload_openblas

    preload_openblas()  # before anything in this process imports mlx
    return serve_daemon("chat", paths, lambda: ChatServer(paths, config))


def main(argv: list[str] | None = None) -> int:
    from services.common.entry import run_service

    return run_service("chat", run, argv)


if __name__ == "__main__":
    sys.exit(main())
