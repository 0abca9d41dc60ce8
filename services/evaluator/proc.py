"""The evaluator process: judge a candidate adapter on request, under the heavy-run lock.

The main thread owns ROUTER ``evaluator.ctl`` and answers Ping at once; one
judging thread owns MLX and runs :func:`services.evaluator.core.judge` for
each request (heavy-run lock, a fresh model load dropped afterwards so its
memory returns between nights, measure, gate), logs ``evaluation.completed``
and replies.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from pathlib import Path
from typing import Any

import zmq

from protocol.codec import Codec, encode
from protocol.envelope import new_envelope
from protocol.events import ServiceStarted
from protocol.service_api import ErrorReply, Ping
from protocol.trainer_api import Evaluate, EvaluationResult, EvaluatorRequest
from services.common.config import Config
from services.common.daemon import VERSION, Readiness, ShutdownFlag, serve_daemon
from services.common.eventlog_client import EventlogClient
from services.common.logging import get_logger
from services.common.paths import Paths
from services.common.router import RouterServer
from services.common.rpc import RemoteError, ServiceUnavailable
from services.common.zmqio import bind_router

log = get_logger("evaluator")
POLL_TIMEOUT_MS = 200
OUTBOUND = "inproc://evaluator-outbound"


class EvaluatorServer:
    def __init__(self, paths: Paths, config: Config, ctx: zmq.Context | None = None) -> None:
        self.paths = paths
        self.config = config
        self.ctx = ctx or zmq.Context.instance()
        self.readiness = Readiness("evaluator")
        self.codec: Codec[Any] = Codec(EvaluatorRequest)
        self.router = bind_router(self.ctx, paths.endpoint("evaluator.ctl"))
        self.inbound = self.ctx.socket(zmq.PULL)
        self.inbound.bind(OUTBOUND)
        self.jobs: queue.Queue[tuple[bytes, Evaluate] | None] = queue.Queue()
        self.busy_with = ""
        self.rpc = RouterServer("evaluator", self.router, self.codec, self._answer,
                                hint="send a request from protocol.trainer_api")

    def serve(self, stop: ShutdownFlag) -> None:
        worker = threading.Thread(target=self._judge_loop, name="judge", daemon=True)
        worker.start()
        self.readiness.ready = True
        client = EventlogClient(self.paths, ctx=self.ctx)
        try:
            client.append([new_envelope(ServiceStarted(service="evaluator", pid=os.getpid(), version=VERSION),
                                        source="evaluator")], retry_s=10)
        except (ServiceUnavailable, RemoteError) as exc:
            log.warning("evaluator.event_not_logged", error=str(exc))
        finally:
            client.close()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.inbound, zmq.POLLIN)
        while not stop.is_set():
            ready = dict(poller.poll(POLL_TIMEOUT_MS))
            if self.inbound in ready:
                while True:
                    try:
                        ident, frame = self.inbound.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.rpc.send_raw(ident, frame)
            if self.router in ready:
                self.rpc.drain()
        self.jobs.put(None)
        worker.join(timeout=5)

    def _answer(self, request: Any, origin: bytes) -> Any:
        """Ping at once; an Evaluate is queued for the judging thread, which replies to ``origin``."""
        match request:
            case Ping(request_id=rid):
                self.readiness.details["busy_with"] = self.busy_with
                return self.readiness.pong(rid)
            case Evaluate() if not Path(request.candidate_dir).is_dir():
                return ErrorReply(code="bad_request", request_id=request.request_id,
                                  message=f"no adapter directory {request.candidate_dir}")
            case Evaluate():
                self.jobs.put((origin, request))
                return None
        return ErrorReply(code="bad_request", message=f"unsupported request {type(request).__name__}")

    # -- the judging thread (owns MLX) -------------------------------------------
    def _judge_loop(self) -> None:
        out = self.ctx.socket(zmq.PUSH)
        out.setsockopt(zmq.LINGER, 0)
        out.connect(OUTBOUND)
        client = EventlogClient(self.paths, ctx=self.ctx)
        try:
            while True:
                job = self.jobs.get()
                if job is None:
                    return
                ident, request = job
                self.busy_with = request.adapter_id
                try:
                    reply = self._judge(request, client)
                except Exception as exc:  # a bug outside the measuring: answer it, keep judging
                    log.exception("evaluator.judge_crashed", adapter_id=request.adapter_id)
                    reply = ErrorReply(code="internal", request_id=request.request_id,
                                       message=f"the evaluator failed: {type(exc).__name__}: {exc}")
                self.busy_with = ""
                out.send_multipart([ident, encode(reply)])
        finally:
            out.close()
            client.close()
            # As in chat's model thread: MLX streams made on this thread (mlx-lm's
            # generation stream among them) must be destroyed here before the
            # process exits, or a SIGTERM stop now and then ends in SIGABRT
            # ("terminate called without an active exception", ml-explore/mlx#3126).
            mlx_core = sys.modules.get("mlx.core")
            if mlx_core is not None and hasattr(mlx_core, "clear_streams"):
                mlx_core.clear_streams()

    def _judge(self, request: Evaluate, client: EventlogClient) -> Any:
        """services.evaluator.core.judge, then log the verdict (``evaluation.completed``) and reply."""
        from services.common.heavylock import HeavyRunLock, heavy_lock_path
        from services.common.paths import resolve_model_dir
        from services.evaluator.core import judge, thresholds_of
        from services.lib.models.compute import load_for_serving

        def load() -> tuple[Any, Any]:
            model, tokenizer, _ = load_for_serving(resolve_model_dir(self.config.chat.model),
                                                   self.config.chat.compute)
            return model, tokenizer

        evaluation = judge(request, load=load, thresholds=thresholds_of(self.config.evaluator),
                           system_prompt=self.config.chat.system_prompt,
                           lock=HeavyRunLock(heavy_lock_path(self.paths)),
                           lock_timeout_s=self.config.evaluator.lock_timeout_s)
        if isinstance(evaluation, ErrorReply):
            return evaluation
        log.info("evaluator.judged", adapter_id=request.adapter_id, verdict=evaluation.verdict,
                 duration_s=evaluation.duration_s, reasons=evaluation.reasons)
        try:
            client.append([new_envelope(evaluation, source="evaluator", parent_id=request.request_id or None)],
                          retry_s=30)
        except (ServiceUnavailable, RemoteError) as exc:
            log.warning("evaluator.event_not_logged", error=str(exc))
        return EvaluationResult(request_id=request.request_id, evaluation=evaluation)

    def close(self) -> None:
        self.router.close()
        self.inbound.close()


def run(paths: Paths, config: Config) -> int:
    from services.common.blas import preload_openblas

    preload_openblas()
    return serve_daemon("evaluator", paths, lambda: EvaluatorServer(paths, config))


def main(argv: list[str] | None = None) -> int:
    from services.common.entry import run_service

    return run_service("evaluator", run, argv)


if __name__ == "__main__":
    sys.exit(main())
