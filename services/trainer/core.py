"""The trainer's socket-free request policy: what ``trainer.ctl`` answers and why.

:meth:`TrainerCore.handle` is the handler the process shell's RouterServer
dispatches to (and what a test drives in process): Ping, StartSleep (refused
while a sleep runs or for absurd step counts), GetTrainerStatus, Rollback
(refused mid-promotion), Pin and PlanSleep (`circ sleep --dry-run`: answered
with the plan, refused while a sleep runs). Running a sleep is the shell's: it owns the
sleep thread, the worker process and the clients, and hands the core
:class:`SleepControl` to start and watch it; the adapters are the
:class:`AdapterStore`'s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.events import AdapterRolledBack
from protocol.service_api import ErrorReply, Ping
from protocol.trainer_api import (
    AdapterChanged,
    GetTrainerStatus,
    Pin,
    PlanSleep,
    Rollback,
    SleepAccepted,
    StartSleep,
    TrainerStatus,
)
from services.common.daemon import Readiness
from services.common.heavylock import HeavyRunLock
from services.lib.adapters.store import AdapterStore, AdapterStoreError

MAX_STEPS = 100_000


@dataclass(frozen=True)
class SleepControl:
    """The shell's sleeps, as the core sees them.

    ``running()``: is a sleep thread alive; ``state()``: the last sleep's
    SleepState (or None); ``start(trigger, steps)``: start one, return its state;
    ``plan(steps, request_id)``: the next sleep's SleepPlan, built now on the
    calling thread (services.trainer.plan); None where the shell makes no plans.
    """

    running: Callable[[], bool]
    state: Callable[[], Any]
    start: Callable[[str, int | None], Any]
    plan: Callable[[int | None, str], Any] | None = None


class TrainerCore:
    def __init__(self, readiness: Readiness, store: AdapterStore, sleeps: SleepControl, *,
                 window: Any, lock_path: Path, new_trainable: Callable[[], int],
                 emit: Callable[[Any], int]) -> None:
        self.readiness = readiness
        self.store = store
        self.sleeps = sleeps
        self.window = window  # schedule.SleepWindow or None
        self.lock_path = lock_path
        self.new_trainable = new_trainable  # trainable memories since the current adapter's data
        self.emit = emit  # append one event body to the log, return its seq

    def handle(self, request: Any, origin: bytes = b"") -> Any:
        match request:
            case Ping(request_id=rid):
                self.readiness.details["state"] = self.state()
                return self.readiness.pong(rid)
            case StartSleep(request_id=rid, steps=steps):
                return self._start(rid, steps)
            case PlanSleep(request_id=rid, steps=steps):
                return self._plan(rid, steps)
            case GetTrainerStatus(request_id=rid):
                return self.status(rid)
            case Rollback(adapter_id=target, request_id=rid):
                return self._rollback(target, rid)
            case Pin(adapter_id=adapter_id, pinned=pinned, request_id=rid):
                return self._pin(adapter_id, pinned, rid)
        return ErrorReply(code="bad_request", message=f"unsupported request {type(request).__name__}")

    def state(self) -> str:
        """``idle``, or the running sleep's stage (``dataset``, ``training``, ``promoting`` ...)."""
        current = self.sleeps.state()
        return current.state if self.sleeps.running() and current else "idle"

    def _start(self, rid: str, steps: int | None) -> Any:
        if steps is not None and not 1 <= steps <= MAX_STEPS:
            return ErrorReply(code="bad_request", request_id=rid, message=f"steps must be 1..{MAX_STEPS}")
        if self.sleeps.running():
            return ErrorReply(code="busy", request_id=rid,
                              message=f"a sleep is already running ({self.sleeps.state().sleep_id}); "
                                      "follow it with `circ sleep --wait`")
        state = self.sleeps.start("request", steps)
        return SleepAccepted(request_id=rid, sleep_id=state.sleep_id, adapter_id=state.adapter_id)

    def _plan(self, rid: str, steps: int | None) -> Any:
        from services.trainer.plan import PlanUnavailable

        if steps is not None and not 1 <= steps <= MAX_STEPS:
            return ErrorReply(code="bad_request", request_id=rid, message=f"steps must be 1..{MAX_STEPS}")
        if self.sleeps.plan is None:
            return ErrorReply(code="bad_request", request_id=rid, message="this trainer makes no plans")
        if self.sleeps.running():
            # The next night is planned against the adapter this one will leave: wait for it.
            return ErrorReply(code="busy", request_id=rid,
                              message=f"a sleep is running ({self.sleeps.state().sleep_id}); plan the next one "
                                      "when it is done (follow it with `circ log tail -f`)")
        try:
            return self.sleeps.plan(steps, rid)
        except PlanUnavailable as exc:
            return ErrorReply(code="unavailable", request_id=rid, message=str(exc))

    def status(self, rid: str) -> TrainerStatus:
        holder = HeavyRunLock(self.lock_path).holder()
        state = self.sleeps.state()
        sleeping = self.sleeps.running()
        next_window = ""
        if self.window is not None:
            next_window = self.window.next_opening(dt.datetime.now()).isoformat(timespec="minutes")
        try:
            new_trainable = self.new_trainable()
        except Exception:  # ingest down: the status still answers, with 0
            new_trainable = 0
        return TrainerStatus(
            request_id=rid, state=self.state(), sleep_id=state.sleep_id if state else "",
            step=state.step if state and sleeping else 0, steps=state.steps if state and sleeping else 0,
            loss=state.loss if state and sleeping else 0.0,
            lock_holder=f"{holder.get('holder')} (pid {holder.get('pid')})" if holder else "",
            current_adapter=self.store.current(), last_verdict=state.verdict if state else "",
            new_trainable=new_trainable, next_window=next_window)

    def _rollback(self, target: str | None, rid: str) -> Any:
        previous = self.store.current()
        if self.sleeps.running() and self.sleeps.state().state == "promoting":
            return ErrorReply(code="busy", request_id=rid, message="a promotion is in progress; retry in a moment")
        try:
            new = self.store.rollback(target)
        except AdapterStoreError as exc:
            return ErrorReply(code="bad_request", request_id=rid, message=str(exc))
        self.emit(AdapterRolledBack(adapter_id=new, previous_id=previous))
        return AdapterChanged(request_id=rid, current=new, previous=previous)

    def _pin(self, adapter_id: str, pinned: bool, rid: str) -> Any:
        try:
            self.store.pin(adapter_id, pinned)
        except AdapterStoreError as exc:
            return ErrorReply(code="bad_request", request_id=rid, message=str(exc))
        return AdapterChanged(request_id=rid, current=self.store.current(),
                              pinned=[a.adapter_id for a in self.store.list() if a.pinned])
