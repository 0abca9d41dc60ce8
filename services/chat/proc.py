"""The chat process: sockets and threads around :class:`ChatEngine` and :class:`ChatCore`.

Threads (sockets never cross threads); what each does is services.chat.core's:
- main: the IO loop. Owns ROUTER ``chat.ctl`` (RouterServer -> ChatCore.handle)
  and an inproc PULL on which the other threads hand it frames to deliver.
- model: owns MLX. Loads the model, then runs one turn at a time (ChatCore.run_job).
- committer: appends finished turns to the event log (with retries) and only
  then tells the client the turn is complete (ChatCore.commit_turn).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from protocol.chat_api import ChatRequest
from protocol.codec import Codec, encode
from protocol.envelope import Envelope, new_envelope
from protocol.events import AdapterReloaded, ChatTurnCompleted, ServiceStarted
from services.chat.core import ChatCore, Job, Reload
from services.common.config import Config
from services.common.daemon import VERSION, Readiness, ShutdownFlag, serve_daemon
from services.common.diskspace import log_space_problem
from services.common.eventlog_client import EventlogClient
from services.common.logging import get_logger
from services.common.paths import Paths, resolve_model_dir
from services.common.router import RouterServer
from services.common.rpc import RemoteError, ServiceUnavailable
from services.common.zmqio import bind_router

log = get_logger("chat")

POLL_TIMEOUT_MS = 200
OUTBOUND = "inproc://chat-outbound"


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
        # A full disk refuses a turn before the model runs (services.common.diskspace).
        self.core = ChatCore(self.readiness, config.chat,
                             space_problem=lambda: log_space_problem(paths.events_db.parent))
        self.jobs = self.core.jobs
        self.commits: queue.Queue[tuple[Job, ChatTurnCompleted] | Envelope | None] = queue.Queue()
        self.fatal: BaseException | None = None
        self.inbound = self.ctx.socket(zmq.PULL)
        self.inbound.bind(OUTBOUND)
        self.router = bind_router(self.ctx, paths.endpoint("chat.ctl"))
        self.rpc = RouterServer("chat", self.router, Codec(ChatRequest), self.core.handle,
                                hint="send a request from protocol.chat_api")
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
                self.rpc.drain()
        self.core.cancel_all()
        self.jobs.put(None)
        for thread in threads:
            thread.join(timeout=10)
        # The committer drains what it has before exiting: a finished turn
        # is logged even when we are asked to stop.
        if self.fatal is not None:
            raise self.fatal

    def _forward_outbound(self) -> None:
        while True:
            try:
                ident, rid, frame = self.inbound.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            request_id = rid.decode()
            job = self.core.active.get(request_id)
            if not frame:  # end-of-job marker from the model or committer thread
                self.core.job_ended(request_id)
                continue
            delivered = self.rpc.send_raw(ident, frame)
            if job is not None:
                with job.progress:
                    job.forwarded += 1
                    job.progress.notify_all()
                if not delivered:  # the client went away (ROUTER_MANDATORY): stop generating for it
                    job.cancelled.set()

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
        rid = job.request.request_id
        turn = self.core.run_job(engine, job, lambda message: out.send(job.ident, rid, message))
        if turn is None:  # answered already: end the job
            out.send(job.ident, rid, b"")
        else:  # the committer logs it, says ChatFinished, then ends the job
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
        self.core.commit_turn(lambda envelopes: client.append(envelopes, retry_s=retry_s), job, turn,
                              lambda message: out.send(job.ident, rid, message))
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
