"""The trainer's and the evaluator's control sockets.

- ROUTER ``trainer.ctl``: :class:`StartSleep`, :class:`PlanSleep`, :class:`GetTrainerStatus`,
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


class PlanSleep(_Msg, tag="plan_sleep", kw_only=True):
    """`circ sleep --dry-run`: plan the next sleep and train nothing.

    Sender: the CLI. Receiver: the trainer, which builds the dataset the next
    sleep would train on (same memories, routes, augmentation, replay and
    forgets), writes it under ``data/plans/<plan_id>/`` and answers
    :class:`SleepPlan`. Guaranteed: no adapter is created, ``adapters/current``
    is untouched, no event is logged, the heavy-run lock is not taken (only
    cached model or teacher rewordings are used; the plan counts the missing
    ones). A request of its own rather than a flag on StartSleep: a trainer
    that predates it refuses the unknown tag instead of ignoring an unknown
    field and training. ErrorReply ``busy`` while a sleep runs, ``unavailable``
    when ingest cannot be asked. ``steps`` as in StartSleep.
    """

    request_id: str = ""
    steps: int | None = None


class SleepPlan(_Msg, tag="sleep_plan", kw_only=True):
    """The trainer's answer to :class:`PlanSleep`: what the next sleep would do.

    ``nothing_to_learn`` is non-empty (and every count 0, no files written)
    when the night has no new trainable memories or they make no example.
    ``routes``: the night's memories by route (lora, both). ``counts``: the
    examples of train.jsonl by kind (qa, chat, identity, replay), which sum to
    ``examples``; ``items`` adds the anchors the worker mixes in, ``steps`` is
    what it would train. ``seconds_per_step`` comes from ``step_time_from``
    (the last trained adapter's training.json, else the README figure).
    ``paraphrases_missing``: questions without a cached rewording by
    ``paraphrased_by``; the real night asks for them, the plan goes without.
    ``forgets_remove``: earlier nights' examples from memories since
    forgotten, which no replay uses again; ``forgotten_in_current``: forgotten
    memories the serving adapter was trained on. ``retrain``: non-empty
    ("re-train: N forgets not honoured by the current adapter ID") when the
    night has nothing new but the serving adapter holds a forgotten memory:
    the plan is then that adapter's own night again, without the forgotten.
    """

    request_id: str
    plan_id: str = ""
    plan_dir: str = ""
    nothing_to_learn: str = ""
    since_seq: int = 0
    memories: int = 0
    routes: dict[str, int] = {}
    excluded: dict[str, int] = {}
    facts: int = 0
    superseded: int = 0
    withheld: int = 0
    counts: dict[str, int] = {}
    examples: int = 0
    anchors: int = 0
    items: int = 0
    steps: int = 0
    seconds_per_step: float = 0.0
    step_time_from: str = ""
    estimated_train_s: float = 0.0
    estimated_paraphrase_s: float = 0.0
    paraphrased_by: str = ""
    paraphrase_requests: int = 0
    paraphrases_missing: int = 0
    replay_pool: int = 0
    replay_added: int = 0
    replay_dropped: dict[str, int] = {}
    forgotten_memories: int = 0
    forgets_remove: int = 0
    forgotten_in_current: int = 0
    eval_facts: int = 0
    false_facts: int = 0
    current_adapter: str | None = None
    retrain: str = ""


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


TrainerRequest = Union[StartSleep, PlanSleep, GetTrainerStatus, Rollback, Pin, Ping]
TrainerReply = Union[SleepAccepted, SleepPlan, TrainerStatus, AdapterChanged, Pong, ErrorReply]
EvaluatorRequest = Union[Evaluate, Ping]
EvaluatorReply = Union[EvaluationResult, Pong, ErrorReply]
