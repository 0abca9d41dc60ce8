"""The ingest process: follows the log, files memories, answers recall.

One thread owns everything that touches MLX and the index (the embedder is
an MLX model): it polls ``ingest.ctl`` and the log's doorbell together, and
handles the log in small slices so a long catch-up never keeps recall
waiting. A second thread only watches ``data/inbox/`` (watchfiles) and hands
file paths over a queue.

The embedder (services.ingest.embed.load_embedder): MiniLM, else the chat
model as a fallback. If neither loads, ingest stays up but not ready: it logs
one ``memory.failed`` (stage ``embed``, ``turn_seq`` 0) naming the fix,
answers Ping (details: ``state``, ``problem``) and imports inbox files, while
recall and the memory verbs get an ``unavailable`` error with the same text.
Its cursor does not move, so nothing is lost: it tries to load an embedder
again (after 5 s, doubling to every 60 s) and, once one loads, files every
turn logged meanwhile. chat answers without recall until then.

The index records which embedder built it. When the embedder that loads is
another one (MiniLM installed or removed since), ingest rebuilds the index
from the log up to its cursor, beside the live one, and swaps it in: the
index is derived state, and the old vectors cannot be compared with the new
ones. The old index stays in place until the new one is complete; recall is
unavailable meanwhile, Ping says how far the rebuild is.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from protocol.codec import Codec
from protocol.envelope import Envelope, new_envelope
from protocol.events import (
    ChatTurnCompleted,
    MemoryEdited,
    MemoryFailed,
    MemoryForgotten,
    MemoryMerged,
    ServiceStarted,
    event_tag,
)
from protocol.ingest_api import (
    IngestRequest,
)
from services.common.config import Config
from services.common.daemon import VERSION, Readiness, ShutdownFlag, serve_daemon
from services.common.eventlog_client import EventlogClient
from services.common.logging import get_logger
from services.common.paths import Paths
from services.common.router import RouterServer
from services.common.rpc import RemoteError, ServiceUnavailable
from services.common.zmqio import bind_router
from services.ingest.answers import answer

log = get_logger("ingest")

POLL_TIMEOUT_MS = 200
SLICE_EVENTS = 16  # events handled between two looks at the control socket
IDLE_CATCH_UP_S = 1.0
TYPES = [event_tag(ChatTurnCompleted), event_tag(MemoryForgotten), event_tag(MemoryEdited), event_tag(MemoryMerged)]
RETRY_FIRST_S = 5.0  # no embedder: first retry after this, doubling ...
RETRY_MAX_S = 60.0  # ... up to this (or 10x the failed attempt's duration, if longer)
REBUILD_DIR = "memory.rebuild-ingest"  # beside data/memory; `circ memory rebuild` uses memory.rebuild


class _Stopped(Exception):
    """SIGTERM during the daemon's own rebuild."""


def load_router(embedder: Any) -> Any:
    """The learned router (rules first, then the classifier), or the rules alone
    if the seed set cannot be trained on — ingest must start either way."""
    from services.ingest.route_model import load_or_train

    try:
        return load_or_train(embedder)
    except Exception as exc:
        log.warning("ingest.router_fallback_to_rules", error=str(exc))
        return None


class IndexCursor:
    """The consumer cursor kept inside the memory index (same transaction as the memories)."""

    def __init__(self, core: Any) -> None:
        self.core = core

    def load(self) -> int:
        return self.core.cursor

    def store(self, seq: int) -> None:
        if seq > self.core.cursor:
            self.core.index.set_meta("cursor_seq", str(seq))


class IngestServer:
    def __init__(self, paths: Paths, config: Config, ctx: zmq.Context | None = None) -> None:
        self.paths = paths
        self.config = config
        self.ctx = ctx or zmq.Context.instance()
        self.readiness = Readiness("ingest")
        self.codec: Codec[Any] = Codec(IngestRequest)
        self.router = bind_router(self.ctx, paths.endpoint("ingest.ctl"))
        # One bad request must not take recall down: RouterServer answers it with an ErrorReply.
        self.rpc = RouterServer("ingest", self.router, self.codec, lambda request, _origin: answer(self, request),
                                hint="send a request from protocol.ingest_api")
        self.log_client = EventlogClient(paths, ctx=self.ctx)
        self.inbox_queue: queue.Queue[Path] = queue.Queue()
        self.core: Any = None
        self.consumer: Any = None
        self.embedder: Any = None
        self.problem = ""  # why ingest is not ready, and what fixes it
        self._mismatch: Any = None  # EmbedderMismatch: the index needs a rebuild for self.embedder
        self._announced = ""  # the embedder problem last logged as an event
        self._retry_s = RETRY_FIRST_S
        self._next_attempt = 0.0

    def emit(self, env: Envelope) -> int:
        """Append one event and wait for the commit (retrying through an eventlog restart)."""
        return self.append_many([env])[0]

    def append_many(self, envelopes: list[Envelope]) -> list[int]:
        return self.log_client.append(envelopes, retry_s=30.0).seqs

    def start(self) -> None:
        """Load an embedder and open the index; without one, start degraded (serve() retries)."""
        from services.ingest.rebuild import recover_interrupted_swap

        recovered = recover_interrupted_swap(self.paths)
        if recovered:
            log.warning("ingest.index_swap_recovered", detail=recovered)
        shutil.rmtree(self.paths.data / REBUILD_DIR, ignore_errors=True)  # a rebuild cut short
        self._attempt()

    def _attempt(self) -> None:
        """One try: load an embedder, open its index (or note that it must be rebuilt), get ready."""
        from services.ingest.embed import EmbedderUnavailable, load_embedder
        from services.lib.memory.index import EmbedderMismatch, IndexDamaged, MemoryIndex

        started = time.perf_counter()
        self.readiness.details.update(state="loading the embedder")
        try:
            embedder = load_embedder(chat_model=self.config.chat.model)
        except EmbedderUnavailable as exc:
            self._degrade(str(exc), time.perf_counter() - started)
            return
        except Exception as exc:  # anything else while loading: still not a reason to die
            log.exception("ingest.embedder_load_failed")
            self._degrade(f"loading the embedder failed ({type(exc).__name__}: {exc}); "
                          f"reinstall it with `bin/setup`", time.perf_counter() - started)
            return
        self.embedder = embedder
        if embedder.fallback_reason:
            log.warning("ingest.embedder_fallback", embedder=embedder.identity, reason=embedder.fallback_reason)
        try:
            # check: a torn or corrupted page of memories.db is found now, not at some later read.
            index = MemoryIndex(self.paths.memory, embedder.dim, embedder=embedder.identity, check=True)
        except IndexDamaged as exc:
            # Derived state: rebuilt from the log, up to the last turn whose decision ingest logged
            # (its own cursor is in the damaged file); later turns go through the consumer as usual.
            from services.ingest.rebuild import last_decided_seq

            exc.until_seq = last_decided_seq(self.paths)
            self._mismatch = exc
            self.problem = (f"rebuilding the memory index from the log: {exc.path} was damaged "
                            f"({exc.problem}); recall is back when it is done")
            self.readiness.details = {"state": "rebuilding", "embedder": embedder.name, "problem": self.problem}
            log.error("ingest.index_damaged", db=str(exc.path), problem=exc.problem, until_seq=exc.until_seq)
            return
        except EmbedderMismatch as exc:
            self._mismatch = exc
            self.problem = (f"rebuilding the memory index from the log for {embedder.identity} (it was built by "
                            f"{exc.stored}); recall is back when it is done")
            self.readiness.details = {"state": "rebuilding", "embedder": embedder.name, "problem": self.problem}
            log.warning("ingest.index_embedder_mismatch", was=exc.stored, now=embedder.identity)
            return  # serve() rebuilds: it can answer requests and notice SIGTERM meanwhile
        self._activate(index, started, {})

    def _activate(self, index: Any, started: float, extra: dict[str, str]) -> None:
        from services.common.consumer import EventConsumer
        from services.ingest.core import IngestCore
        from services.lib.privacy.names import NameKeys

        embedder = self.embedder
        self.core = IngestCore(index, embedder, router=load_router(embedder), names=NameKeys.open(self.paths.keys),
                               redact_names=self.config.ingest.redact_names)
        self.consumer = EventConsumer(self.paths, "ingest", TYPES, self._handle_event, ctx=self.ctx,
                                      cursor=IndexCursor(self.core))
        self.problem = ""
        self.readiness.ready = True
        details = {"memories": str(index.stats().get("memories", 0)), "cursor_seq": str(self.core.cursor),
                   "load_s": f"{time.perf_counter() - started:.2f}", "state": "ready",
                   "embedder": embedder.name, "embedder_identity": embedder.identity,
                   "embedder_dim": str(embedder.dim), "embedder_description": embedder.description,
                   "index": f"{index.status.action}: {index.status.reason}"}
        if embedder.fallback_reason:
            details["embedder_fallback_reason"] = embedder.fallback_reason[:500]
        details.update(extra)
        self.readiness.details = dict(details)
        log.info("ingest.ready", **details)
        try:
            self.emit(new_envelope(ServiceStarted(service="ingest", pid=os.getpid(), version=VERSION,
                                                  details=details), source="ingest"))
        except (ServiceUnavailable, RemoteError) as exc:
            log.warning("ingest.event_not_logged", error=str(exc))

    def _degrade(self, reason: str, attempt_s: float) -> None:
        """No embedder: stay up, not ready; say so once in the log of events; try again later."""
        from services.lib.memory.index import read_meta

        self.core = self.consumer = self.embedder = None
        self._mismatch = None
        self.readiness.ready = False
        delay = min(max(self._retry_s, 10 * attempt_s), 5 * RETRY_MAX_S)
        self._next_attempt = time.monotonic() + delay
        self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
        cursor = read_meta(self.paths.memory).get("cursor_seq", "0")
        self.problem = (f"{reason}. Until then ingest files no memories and chat answers without recall. "
                        f"Nothing is lost: turns after seq {cursor} wait in the log and are filed once an "
                        f"embedder loads (ingest tries again every {RETRY_MAX_S:g} s at most)")
        self.readiness.details = {"state": "no embedder", "embedder": "none", "problem": self.problem,
                                  "cursor_seq": str(cursor)}
        if reason == self._announced:
            log.info("ingest.embedder_still_unavailable", next_try_s=round(delay, 1))
            return
        log.error("ingest.no_embedder", error=self.problem, next_try_s=round(delay, 1))
        # One event per distinct problem (and cursor): a restart in the same state logs nothing new.
        key = hashlib.sha256(reason.encode()).hexdigest()[:12]
        event = MemoryFailed(stage="embed", error="EmbedderUnavailable", turn_seq=0, detail=self.problem[:2000])
        try:
            self.emit(new_envelope(event, source="ingest", msg_id=f"ingest-no-embedder-{cursor}-{key}"))
            self._announced = reason
        except (ServiceUnavailable, RemoteError) as exc:  # said again at the next attempt
            log.warning("ingest.event_not_logged", error=str(exc))

    def _rebuild(self, stop: ShutdownFlag) -> None:
        """Rebuild the index for self.embedder (up to the old cursor), swap it in, get ready."""
        from services.ingest.rebuild import rebuild_index, swap_in
        from services.lib.memory.index import MemoryIndex, read_meta

        started = time.perf_counter()
        mismatch, embedder = self._mismatch, self.embedder
        until = getattr(mismatch, "until_seq", None)
        if until is None:
            until = int(read_meta(self.paths.memory).get("cursor_seq", "0") or 0)
        target = self.paths.data / REBUILD_DIR

        def on_event(seq: int, head: int) -> None:
            self.readiness.details["rebuild"] = f"seq {seq} of {head}"
            self.rpc.drain()  # Ping says how far; recall and the rest: unavailable
            if stop.is_set():
                raise _Stopped

        log.info("ingest.index_rebuild_started", was=mismatch.stored, now=embedder.identity, until_seq=until)
        try:
            handled = rebuild_index(self.paths, target, embedder=embedder, until_seq=until, on_event=on_event)
            swap_in(self.paths, target)
            index = MemoryIndex(self.paths.memory, embedder.dim, embedder=embedder.identity)
        except _Stopped:
            shutil.rmtree(target, ignore_errors=True)  # the old index is still in place
            return
        except Exception as exc:
            log.exception("ingest.index_rebuild_failed")
            shutil.rmtree(target, ignore_errors=True)
            self._degrade(f"rebuilding the memory index for {embedder.identity} failed "
                          f"({type(exc).__name__}: {exc}); fix the cause, or run `circ memory rebuild`",
                          time.perf_counter() - started)
            return
        self._mismatch = None
        why = "the old one was damaged" if hasattr(mismatch, "until_seq") else f"for this embedder (was {mismatch.stored})"
        note = (f"rebuilt from the log, {why}: {handled} events up to seq "
                f"{until} in {time.perf_counter() - started:.1f} s")
        log.info("ingest.index_rebuilt", detail=note)
        self._activate(index, started, {"index": note})

    def _handle_event(self, env: Envelope) -> None:
        from services.ingest.forget import apply_forgotten

        if isinstance(env.body, MemoryForgotten):
            apply_forgotten(self.core, env.body)
            return
        if isinstance(env.body, MemoryEdited):
            from services.ingest.edit import apply_edited

            apply_edited(self.core, env.body)
            return
        if isinstance(env.body, MemoryMerged):
            from services.ingest.compact import apply_merged

            apply_merged(self.core, env.body)
            return
        self.core.handle(env, lambda e: self.emit(e))

    # -- main loop ------------------------------------------------------------
    def serve(self, stop: ShutdownFlag) -> None:
        watcher = threading.Thread(target=self._watch_inbox, args=(stop,), name="inbox", daemon=True)
        watcher.start()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        doorbell = None
        behind = True
        last_catch_up = 0.0
        while not stop.is_set():
            if self.core is None:
                if self._mismatch is not None:
                    self._rebuild(stop)
                    continue
                if time.monotonic() >= self._next_attempt:
                    self._attempt()
                    continue
            if self.consumer is not None and doorbell is None:
                doorbell = self.consumer.doorbell
                poller.register(doorbell, zmq.POLLIN)
            ready = dict(poller.poll(0 if behind and self.consumer is not None else POLL_TIMEOUT_MS))
            if self.router in ready:
                self.rpc.drain()
            rang = doorbell is not None and doorbell in ready and self.consumer.drain_doorbell()
            self._import_waiting_files()
            if self.consumer is None:
                continue
            if behind or rang or time.monotonic() - last_catch_up > IDLE_CATCH_UP_S:
                last_catch_up = time.monotonic()
                try:
                    behind = self.consumer.catch_up(max_events=SLICE_EVENTS) >= SLICE_EVENTS
                except (ServiceUnavailable, RemoteError) as exc:
                    log.warning("ingest.eventlog_unavailable", error=str(exc))
                    behind = False
                    time.sleep(0.2)
        if self.core is not None:
            self.core.index.save()

    # -- inbox ------------------------------------------------------------------
    def _watch_inbox(self, stop: ShutdownFlag) -> None:
        from services.ingest.importer import inbox_dir, pending_files

        inbox = inbox_dir(self.paths)
        for path in pending_files(inbox):  # files that arrived while we were down
            self.inbox_queue.put(path)
        try:
            from watchfiles import Change, watch

            for changes in watch(inbox, stop_event=stop._event, recursive=False, rust_timeout=500,
                                 yield_on_timeout=False):
                for change, raw in changes:
                    path = Path(raw)
                    if change != Change.deleted and path.parent == inbox and path.is_file():
                        self.inbox_queue.put(path)
        except Exception as exc:  # the watcher is a convenience; `circ import` still works
            log.error("ingest.inbox_watch_failed", error=str(exc))

    def _import_waiting_files(self) -> None:
        from services.ingest.importer import import_file, is_candidate, is_settled

        waiting: list[Path] = []
        while True:
            try:
                path = self.inbox_queue.get_nowait()
            except queue.Empty:
                break
            if not path.exists() or not is_candidate(path) or path in waiting:
                continue
            if not is_settled(path):  # still being written: look again shortly
                waiting.append(path)
                continue
            try:
                import_file(path, self.paths, self.append_many, move=True,
                            redact=self.config.chat.redact_before_log)
            except (ServiceUnavailable, RemoteError) as exc:
                log.warning("ingest.import_deferred", file=path.name, error=str(exc))
                waiting.append(path)
        for path in waiting:
            self.inbox_queue.put(path)

    def close(self) -> None:
        self.router.close()
        if self.consumer is not None:
            self.consumer.close()
        if self.core is not None:
            # Explicitly, not at interpreter exit: closing checkpoints the WAL
            # into memories.db so no stale page images stay behind on disk.
            self.core.index.close()
        self.log_client.close()


def run(paths: Paths, config: Config) -> int:
    from services.common.blas import preload_openblas

    preload_openblas()  # before the embedder imports mlx
    return serve_daemon("ingest", paths, lambda: IngestServer(paths, config), before_serve=lambda server: server.start())


def main(argv: list[str] | None = None) -> int:
    from services.common.entry import run_service

    return run_service("ingest", run, argv)


if __name__ == "__main__":
    sys.exit(main())
