"""The trainer process: sleep schedule, `circ sleep`, adapter commands.

The main thread owns ROUTER ``trainer.ctl`` and answers at once (status
during a sleep included; what it answers is services.trainer.core's); a
sleep runs on its own thread, which starts the training worker process (so
no MLX ever runs in this process); scheduling is checked every few seconds
on the main thread.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading
import time
from typing import Any

import zmq

from protocol.codec import Codec
from protocol.envelope import new_envelope
from protocol.events import ServiceStarted
from protocol.trainer_api import (
    Evaluate,
    EvaluatorReply,
    TrainerRequest,
)
from services.common.config import Config
from services.common.daemon import VERSION, Readiness, ShutdownFlag, serve_daemon
from services.common.eventlog_client import EventlogClient
from services.common.heavylock import heavy_lock_path
from services.common.logging import get_logger
from services.common.paths import Paths
from services.common.router import RouterServer
from services.common.rpc import RemoteError, RpcClient, ServiceUnavailable
from services.common.zmqio import bind_router
from services.trainer.core import SleepControl, TrainerCore
from services.trainer.last_turn import LastTurn
from services.trainer.memories import IngestMemories

log = get_logger("trainer")

POLL_TIMEOUT_MS = 500
SCHEDULE_CHECK_S = 30.0


class TrainerServer:
    def __init__(self, paths: Paths, config: Config, ctx: zmq.Context | None = None) -> None:
        from services.lib.adapters.store import AdapterStore
        from services.trainer.schedule import NightLedger, SleepScheduler, parse_window

        self.paths = paths
        self.config = config
        self.ctx = ctx or zmq.Context.instance()
        self.readiness = Readiness("trainer")
        self.codec: Codec[Any] = Codec(TrainerRequest)
        self.router = bind_router(self.ctx, paths.endpoint("trainer.ctl"))
        self.rpc = RouterServer("trainer", self.router, self.codec, lambda request, origin: self.core.handle(request, origin),
                                hint="send a request from protocol.trainer_api")
        self.log_client = EventlogClient(paths, ctx=self.ctx)
        self.store = AdapterStore(paths.adapters)
        self.window = parse_window(config.trainer.window)
        self.sleep_thread: threading.Thread | None = None
        self.sleep_state: Any = None
        self.stop = ShutdownFlag()
        # The night of the last scheduled sleep, on disk: a restart or a rejected night inside the
        # window must not sleep again that night.
        self.nights = NightLedger(paths.state / "trainer-schedule.json")
        self.scheduler = SleepScheduler(self.window, self.nights, min_new=config.trainer.min_new_memories,
                                        idle_minutes=config.trainer.idle_minutes)
        self.memories = IngestMemories(paths, ctx=self.ctx)  # main thread only (the schedule check)
        self.last_turn = LastTurn(paths, ctx=self.ctx)
        self.core = TrainerCore(self.readiness, self.store,
                                SleepControl(running=self._sleeping, state=lambda: self.sleep_state,
                                             start=self._start_sleep, plan=self._plan_sleep),
                                window=self.window, lock_path=heavy_lock_path(paths),
                                new_trainable=self._new_trainable,
                                emit=lambda body: self.emit_from(self.log_client, body))

    def emit_from(self, client: EventlogClient, body: Any) -> int:
        return client.append([new_envelope(body, source="trainer")], retry_s=30.0).seqs[0]

    # -- main loop ----------------------------------------------------------
    def serve(self, stop: ShutdownFlag) -> None:
        self.stop = stop
        self.readiness.ready = True
        try:
            self.emit_from(self.log_client, ServiceStarted(service="trainer", pid=os.getpid(), version=VERSION,
                                                           details={"window": self.config.trainer.window}))
        except (ServiceUnavailable, RemoteError) as exc:
            log.warning("trainer.event_not_logged", error=str(exc))
        log.info("trainer.ready", window=self.config.trainer.window, current=self.store.current())
        next_check = time.monotonic() + 5.0
        while not stop.is_set():
            if self.router.poll(POLL_TIMEOUT_MS, zmq.POLLIN):
                self.rpc.drain()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + SCHEDULE_CHECK_S
                self._maybe_sleep()
                self._check_disk()
        if self.sleep_thread is not None:
            self.sleep_thread.join(timeout=30)  # the worker is told to stop through should_stop

    # -- sleeps ---------------------------------------------------------------
    def _sleeping(self) -> bool:
        return self.sleep_thread is not None and self.sleep_thread.is_alive()

    def _start_sleep(self, trigger: str, steps: int | None, night: dt.date | None = None) -> Any:
        """Start a sleep on its own thread; ``night``: the scheduled night it is for, if any."""
        from services.trainer.sleep import Sleep, SleepState, new_sleep_ids

        sleep_id, adapter_id = new_sleep_ids(self.store)
        state = SleepState(sleep_id=sleep_id, adapter_id=adapter_id, trigger=trigger)
        self.sleep_state = state

        def body() -> None:
            client = EventlogClient(self.paths, ctx=self.ctx)
            evaluator = RpcClient(self.paths, "evaluator", "evaluator.ctl", EvaluatorReply,
                                  timeout_s=self.config.evaluator.verdict_timeout_s, ctx=self.ctx)
            try:
                sleep = Sleep(self.paths, self.config, state, emit=lambda b: self.emit_from(client, b),
                              evaluate=lambda req: self._evaluate(evaluator, req),
                              should_stop=self.stop.is_set, steps=steps)
                verdict = sleep.run()
                log.info("trainer.sleep_done", sleep_id=sleep_id, verdict=verdict)
                # Alerts and the morning report; guarded inside: they never change the night.
                from services.trainer.morning import after_night_in_background

                after_night_in_background(self.paths, self.config, state, verdict,
                                          emit=self._emit_on_own_client)
                # The night is spent once it has a verdict, promoted, rejected or failed (no retry
                # loop inside the window). Not when we were asked to stop: a restart inside the
                # window resumes that night from its checkpoints.
                if night is not None and not self.stop.is_set():
                    self.nights.record(night)
            finally:
                client.close()
                evaluator.close()

        self.sleep_thread = threading.Thread(target=body, name="sleep", daemon=True)
        self.sleep_thread.start()
        log.info("trainer.sleep_started", sleep_id=sleep_id, adapter_id=adapter_id, trigger=trigger)
        return state

    def _plan_sleep(self, steps: int | None, request_id: str) -> Any:
        """`circ sleep --dry-run`, on the main thread: reading memories and writing a dataset takes
        seconds, not the model (services.trainer.plan), so other requests wait only that long."""
        from services.trainer.plan import plan_sleep

        plan = plan_sleep(self.paths, self.config, steps=steps, request_id=request_id)
        log.info("trainer.planned", plan_id=plan.plan_id, examples=plan.examples, steps=plan.steps,
                 nothing_to_learn=bool(plan.nothing_to_learn))
        return plan

    def _evaluate(self, evaluator: RpcClient, request: Evaluate) -> Any:
        """The checked verdict; no verdict (timeout, evaluator restarted, a promote without
        proof) raises, and the sleep rejects the adapter (services.trainer.verdict)."""
        from services.trainer.verdict import await_verdict

        return await_verdict(self.paths, evaluator, request, ctx=self.ctx,
                             timeout_s=self.config.evaluator.verdict_timeout_s)

    def _new_trainable(self) -> int:
        current = self.store.current()
        since = int(self.store.show(current).get("dataset", {}).get("max_seq", 0)) if current else 0
        return self.memories.count_trainable(after_seq=since)

    def _unhonoured_forgets(self) -> int:
        """Forgotten memories the serving adapter still holds: the next night re-trains for them."""
        from services.trainer.forgets import unhonoured

        current = self.store.current()
        return len(unhonoured(self.store, current, self.memories.forgotten_ids())) if current else 0

    def _last_turn_ts(self) -> float | None:
        return self.last_turn.ts()

    def _maybe_sleep(self) -> None:
        if self._sleeping():
            return
        now = dt.datetime.now().astimezone()  # aware local time: DST changes keep their meaning
        try:
            # One idle sleep per idle spell: a rejected one must not start again until the user
            # has said something new (services.trainer.schedule.SleepScheduler, clocks passed in).
            decided = self.scheduler.decide(now=now, wall_s=time.time(), last_turn_ts=self._last_turn_ts(),
                                            new_memories=self._new_trainable(),
                                            unhonoured_forgets=self._unhonoured_forgets())
        except Exception as exc:
            log.warning("trainer.schedule_check_failed", error=str(exc))
            return
        if decided is not None:
            trigger, night = decided
            self._start_sleep(trigger, None, night=night)

    def _emit_on_own_client(self, body: Any) -> int:
        """Emit from any thread: a socket of its own (ZeroMQ sockets are not thread-safe)."""
        client = EventlogClient(self.paths, ctx=self.ctx)
        try:
            return self.emit_from(client, body)
        finally:
            client.close()

    def _check_disk(self) -> None:
        from services.trainer.morning import check_disk

        check_disk(self.paths, self.config, emit=lambda b: self.emit_from(self.log_client, b))

    def close(self) -> None:
        self.router.close()
        self.log_client.close()
        self.memories.close()
        self.last_turn.close()


def run(paths: Paths, config: Config) -> int:
    return serve_daemon("trainer", paths, lambda: TrainerServer(paths, config))


def main(argv: list[str] | None = None) -> int:
    from services.common.entry import run_service

    return run_service("trainer", run, argv)


if __name__ == "__main__":
    sys.exit(main())
