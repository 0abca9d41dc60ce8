"""The trainer's and the evaluator's control sockets.

- ROUTER ``trainer.ctl``: :class:`StartSleep`, :class:`GetTrainerStatus`,
  :class:`Rollback`, :class:`Pin`, Ping.
- ROUTER ``evaluator.ctl``: :class:`Evaluate`, Ping. Only the trainer sends
  Evaluate; the evaluator takes the heavy-run lock for the duration.
Progress and outcomes travel as events in the log (``training.*``,
``evaluation.completed``, ``adapter.*``), which `circ sleep --wait` follows.
"""

from __future__ import annotations

from typing import Union

import msgspec

from protocol.events import EvaluationCompleted
from protocol.service_api import ErrorReply, Ping, Pong


class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class StartSleep(_Msg, tag="start_sleep", kw_only=True):
    """Sleep now. ``steps`` overrides the configured number of training steps.
    Refused with ErrorReply ``busy`` while a sleep runs."""

    request_id: str = ""
    steps: int | None = None


class SleepAccepted(_Msg, tag="sleep_accepted", kw_only=True):
    request_id: str
    sleep_id: str
    adapter_id: str


class GetTrainerStatus(_Msg, tag="get_trainer_status", kw_only=True):
    request_id: str = ""


class TrainerStatus(_Msg, tag="trainer_status", kw_only=True):
    """``state``: idle | building | training | evaluating | promoting."""

    request_id: str
    state: str
    sleep_id: str = ""
    step: int = 0
    steps: int = 0
    loss: float = 0.0
    lock_holder: str = ""
    current_adapter: str | None = None
    last_verdict: str = ""
    new_trainable: int = 0
    next_window: str = ""


class Rollback(_Msg, tag="rollback", kw_only=True):
    """Point ``adapters/current`` at ``adapter_id`` (default: the previously
    promoted adapter; ``none`` for the base model alone)."""

    adapter_id: str | None = None
    request_id: str = ""


class Pin(_Msg, tag="pin", kw_only=True):
    """Keep an adapter through retention (or release it with pinned=False)."""

    adapter_id: str
    pinned: bool = True
    request_id: str = ""


class AdapterChanged(_Msg, tag="adapter_changed", kw_only=True):
    request_id: str
    current: str | None
    previous: str | None = None
    pinned: list[str] = []


class EvalItem(msgspec.Struct, frozen=True, kw_only=True):
    """One multiple-choice item: the right answer among same-type distractors."""

    question: str
    answer: str
    distractors: list[str]
    kind: str = "fact"  # fact | false | canary


class Evaluate(_Msg, tag="evaluate", kw_only=True):
    """Judge ``candidate_dir`` (unfused, as chat serves it) against
    ``baseline_dir`` (the current adapter, or None for the base model)."""

    adapter_id: str
    candidate_dir: str
    baseline_dir: str | None = None
    baseline_id: str | None = None
    facts: list[EvalItem] = []
    false_facts: list[EvalItem] = []
    request_id: str = ""


class EvaluationResult(_Msg, tag="evaluation_result", kw_only=True):
    request_id: str
    evaluation: EvaluationCompleted


TrainerRequest = Union[StartSleep, GetTrainerStatus, Rollback, Pin, Ping]
TrainerReply = Union[SleepAccepted, TrainerStatus, AdapterChanged, Pong, ErrorReply]
EvaluatorRequest = Union[Evaluate, Ping]
EvaluatorReply = Union[EvaluationResult, Pong, ErrorReply]
