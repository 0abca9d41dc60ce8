"""The trainer's request policy driven in process, with no socket: TrainerCore.handle (what
RouterServer dispatches to) over a real AdapterStore in a temp directory.

The sleeps are the shell's (a thread and a worker process); here a small
:class:`Shell` starts none and records what the core asked for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from protocol.events import AdapterRolledBack
from protocol.service_api import ErrorReply, Ping, Pong
from protocol.trainer_api import (
    AdapterChanged,
    GetTrainerStatus,
    Pin,
    Rollback,
    SleepAccepted,
    StartSleep,
    TrainerReply,
    TrainerRequest,
)
from services.common.daemon import Readiness
from services.common.router import LocalClient
from services.common.rpc import RemoteError
from services.lib.adapters.store import AdapterStore
from services.trainer.core import SleepControl, TrainerCore
from services.trainer.sleep import SleepState


class Shell:
    def __init__(self) -> None:
        self.alive = False
        self.current: SleepState | None = None
        self.started: list[tuple[str, int | None]] = []
        self.events: list[Any] = []

    def start(self, trigger: str, steps: int | None) -> SleepState:
        self.started.append((trigger, steps))
        self.current = SleepState(sleep_id=f"sl-{len(self.started)}", adapter_id="ad-next", trigger=trigger)
        self.alive = True
        return self.current

    def core(self, store: AdapterStore, tmp_path: Path) -> TrainerCore:
        sleeps = SleepControl(running=lambda: self.alive, state=lambda: self.current, start=self.start)
        return TrainerCore(Readiness("trainer"), store, sleeps, window=None, lock_path=tmp_path / "heavy.lock",
                           new_trainable=lambda: 7, emit=lambda body: self.events.append(body) or len(self.events))


@pytest.fixture
def store(tmp_path: Path) -> AdapterStore:
    return AdapterStore(tmp_path / "adapters")


@pytest.fixture
def shell() -> Shell:
    return Shell()


def make_adapter(store: AdapterStore) -> str:
    adapter_id = store.new_id()
    staging = store.stage(adapter_id)
    (staging / "adapters.safetensors").write_bytes(os.urandom(1024))
    (staging / "adapter_config.json").write_text(json.dumps({"fine_tune_type": "lora", "num_layers": 2}))
    store.commit(adapter_id, {"dataset": {"examples": 1}})
    return adapter_id


def test_ping_says_idle_then_the_sleeps_stage(store: AdapterStore, shell: Shell, tmp_path: Path) -> None:
    core = shell.core(store, tmp_path)
    pong = core.handle(Ping(request_id="p"))
    assert isinstance(pong, Pong) and pong.details["state"] == "idle"
    core.handle(StartSleep(request_id="s"))
    assert shell.current is not None
    shell.current.state = "training"
    assert core.handle(Ping(request_id="p")).details["state"] == "training"


def test_a_sleep_starts_once_and_a_second_is_refused(store: AdapterStore, shell: Shell, tmp_path: Path) -> None:
    core = shell.core(store, tmp_path)
    accepted = core.handle(StartSleep(request_id="s1", steps=10))
    assert isinstance(accepted, SleepAccepted) and accepted.sleep_id == "sl-1" and shell.started == [("request", 10)]
    busy = core.handle(StartSleep(request_id="s2"))
    assert isinstance(busy, ErrorReply) and busy.code == "busy" and "sl-1" in busy.message
    assert shell.started == [("request", 10)]


@pytest.mark.parametrize("steps", [0, 100_001])
def test_absurd_step_counts_are_refused(store: AdapterStore, shell: Shell, tmp_path: Path, steps: int) -> None:
    reply = shell.core(store, tmp_path).handle(StartSleep(request_id="s", steps=steps))
    assert isinstance(reply, ErrorReply) and reply.code == "bad_request" and not shell.started


def test_status_reports_the_running_sleep(store: AdapterStore, shell: Shell, tmp_path: Path) -> None:
    core = shell.core(store, tmp_path)
    core.handle(StartSleep(request_id="s"))
    assert shell.current is not None
    shell.current.step, shell.current.steps, shell.current.state = 3, 10, "training"
    status = core.handle(GetTrainerStatus(request_id="st"))
    assert (status.state, status.sleep_id, status.step, status.steps) == ("training", "sl-1", 3, 10)
    assert status.new_trainable == 7 and status.current_adapter is None and status.lock_holder == ""


def test_rollback_moves_current_and_logs_it(store: AdapterStore, shell: Shell, tmp_path: Path) -> None:
    first, second = make_adapter(store), make_adapter(store)
    store.promote(first)
    store.promote(second)
    reply = shell.core(store, tmp_path).handle(Rollback(request_id="rb"))
    assert isinstance(reply, AdapterChanged) and (reply.current, reply.previous) == (first, second)
    assert store.current() == first
    assert shell.events == [AdapterRolledBack(adapter_id=first, previous_id=second)]


def test_rollback_waits_for_a_promotion(store: AdapterStore, shell: Shell, tmp_path: Path) -> None:
    store.promote(make_adapter(store))
    core = shell.core(store, tmp_path)
    core.handle(StartSleep(request_id="s"))
    assert shell.current is not None
    shell.current.state = "promoting"
    reply = core.handle(Rollback(request_id="rb"))
    assert isinstance(reply, ErrorReply) and reply.code == "busy" and not shell.events


def test_pin_names_the_pinned_and_refuses_unknown_ids(store: AdapterStore, shell: Shell, tmp_path: Path) -> None:
    adapter_id = make_adapter(store)
    core = shell.core(store, tmp_path)
    pinned = core.handle(Pin(request_id="pin", adapter_id=adapter_id, pinned=True))
    assert isinstance(pinned, AdapterChanged) and pinned.pinned == [adapter_id]
    unknown = core.handle(Pin(request_id="pin", adapter_id="ad-20990101-000000-dead", pinned=True))
    assert isinstance(unknown, ErrorReply) and unknown.code == "bad_request"


def test_the_core_answers_through_the_client_interface(store: AdapterStore, shell: Shell, tmp_path: Path) -> None:
    """In process, through the request()/RemoteError interface and the codecs of trainer.ctl:
    what `circ sleep` and `circ adapters` get over ZeroMQ."""
    client = LocalClient("trainer", TrainerRequest, TrainerReply, shell.core(store, tmp_path).handle)
    accepted = client.request(StartSleep(request_id="s", steps=5))
    assert isinstance(accepted, SleepAccepted) and shell.started == [("request", 5)]
    with pytest.raises(RemoteError) as busy:
        client.request(StartSleep(request_id="s2"))
    assert busy.value.code == "busy"
    assert client.request(GetTrainerStatus(request_id="st")).sleep_id == accepted.sleep_id
