"""Logged events: the facts the event log records, past tense, one Struct each.

Every event here may sit in ``data/events/events.db`` for years, so the
evolution rules are strict: add fields only with defaults, never change a
field's type or a default, never rename or reuse a tag. Golden samples of
each type live in ``tests/golden/`` and must keep decoding.
"""

from __future__ import annotations

from typing import Union

import msgspec


# msgspec applies kw_only only to the fields a class itself defines (frozen is
# inherited): every event repeats kw_only=True.
class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of all events; ``type`` on the wire is the event's tag."""


class ChatTurnCompleted(_Event, tag="chat.turn_completed", kw_only=True):
    """One user message and the assistant's full reply.

    Sender: chat, after the reply finished (or was cancelled or hit the token
    limit). Consumers: ingest (memory), trainer (datasets), audits.
    Guarantee: chat reports a turn as complete to its client only after the
    eventlog has committed this event; ``request_id`` is the client's id, so
    a resent request is logged once (its ``msg_id`` derives from it).
    """

    session_id: str
    turn_index: int
    user_text: str
    assistant_text: str
    model: str
    adapter_id: str | None = None
    request_id: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    finish_reason: str = "stop"  # stop | length | cancelled
    system_prompt: str | None = None
    # Memory recall for this turn: ok | off | unavailable | timeout | error.
    recall_status: str = "off"
    recalled_ids: list[str] = []
    recall_ms: float = 0.0
    # Set by ingest for turns imported from a file rather than chatted.
    imported_from: str | None = None
    # True once `circ forget` erased this turn's text (an audited tombstone).
    erased: bool = False


class ServiceStarted(_Event, tag="service.started", kw_only=True):
    """A daemon finished starting and is ready to serve.

    Sender: every daemon, once per start. Consumers: ``circ status``, audits
    (a restart after ``kill -9`` shows up as a second start).
    """

    service: str
    pid: int
    version: str = ""
    details: dict[str, str] = {}


class ServiceFailed(_Event, tag="service.failed", kw_only=True):
    """A daemon hit a fatal error and is exiting non-zero for supervisord.

    Sender: the failing daemon, best effort (the log may itself be down).
    """

    service: str
    pid: int
    error: str
    detail: str = ""


class AdapterReloaded(_Event, tag="adapter.reloaded", kw_only=True):
    """chat switched the adapter it serves (or loaded one at start).

    Sender: chat, after the swap, between requests. ``adapter_id`` None means
    chat now serves the base model alone.
    """

    adapter_id: str | None
    previous_id: str | None = None
    reload_ms: float = 0.0
    reason: str = "startup"


class MemoryStored(_Event, tag="memory.stored", kw_only=True):
    """ingest filed a turn in memory.

    Sender: ingest, once per handled ``chat.turn_completed`` (msg_id derives
    from the turn's seq, so a replay after a crash is logged once).
    ``route``: lora | rag | both — where the memory may be used; ``reason``
    says why, ``score`` is the router's confidence. Counts per redaction type
    are in ``redactions``; the memory text itself is never in the log twice.
    """

    turn_seq: int
    memory_ids: list[str]
    route: str
    score: float
    reason: str
    session_id: str = ""
    tags: list[str] = []
    redactions: dict[str, int] = {}
    chunks: int = 1
    # Earlier memories this one corrects (same single-valued fact, new value): from now on
    # they are kept and listed as superseded, never recalled (services/ingest/supersede.py).
    supersedes: list[str] = []


class MemorySkipped(_Event, tag="memory.skipped", kw_only=True):
    """ingest decided a turn is not worth remembering (small talk, empty,
    duplicate, ``#private``). Sender: ingest, once per such turn."""

    turn_seq: int
    reason: str
    score: float = 0.0
    session_id: str = ""
    tags: list[str] = []
    redactions: dict[str, int] = {}
    duplicate_of: str | None = None


class MemoryFailed(_Event, tag="memory.failed", kw_only=True):
    """ingest could not handle a turn (or an inbox file); the daemon goes on.

    ``stage``: decode | redact | route | embed | index | import.
    """

    stage: str
    error: str
    turn_seq: int = 0
    detail: str = ""


class MemoryForgotten(_Event, tag="memory.forgotten", kw_only=True):
    """The user asked to forget memories. Sender: ingest, after removing them
    from the index. Receivers: the eventlog erases the source turns' text
    (leaving an audited tombstone); the trainer excludes them from every
    future training set."""

    memory_ids: list[str]
    turn_seqs: list[int]
    reason: str = "user request"


class MemoryEdited(_Event, tag="memory.edited", kw_only=True):
    """The user replaced a memory's text (`circ memory edit ID`).

    Sender: ingest, before it re-embeds the memory. ``text`` is the new text as
    the user typed it (ingest redacts it by the same policy as a turn before
    indexing); ``previous_text`` is the text it replaces, so the log keeps the
    old wording. Receivers: ingest (applies it again on replay and rebuild:
    idempotent), audits. Recall uses the new text from the moment the reply
    to the request is sent.
    """

    memory_id: str
    text: str
    previous_text: str = ""


class MemoryMerged(_Event, tag="memory.merged", kw_only=True):
    """Near-duplicate memories were merged into an older one (`circ memory compact`).

    Sender: ingest, before it marks them. ``kept_id`` stays as it is;
    ``merged_ids`` (newer memories of other turns) are from now on superseded
    by it: kept and listed as merged, never recalled nor trained on, nothing
    deleted. ``scores[i]`` is the cosine similarity of ``merged_ids[i]`` to the
    kept memory, ``threshold`` the one asked for. Receivers: ingest (applies it
    again on replay and rebuild: idempotent; a memory no longer live is left
    alone), audits.
    """

    kept_id: str
    merged_ids: list[str]
    scores: list[float] = []
    threshold: float = 0.0


class InboxImported(_Event, tag="inbox.imported", kw_only=True):
    """ingest imported a conversation file; its turns precede this event."""

    file: str
    sha256: str
    turns: int
    first_seq: int = 0
    last_seq: int = 0


class InboxRejected(_Event, tag="inbox.rejected", kw_only=True):
    """An inbox file could not be imported; nothing of it was. It was moved
    to ``data/inbox/rejected/`` with the reason beside it."""

    file: str
    reason: str
    sha256: str = ""


class TrainingStarted(_Event, tag="training.started", kw_only=True):
    """A sleep began: the trainer holds the heavy-run lock and built a dataset.

    Sender: trainer. ``counts`` is the dataset by kind (chat, qa, identity,
    replay); ``source_seqs`` the memories' turn seqs it came from.
    """

    sleep_id: str
    adapter_id: str
    trigger: str  # schedule | idle | request
    counts: dict[str, int] = {}
    source_seqs: list[int] = []
    steps: int = 0


class TrainingProgress(_Event, tag="training.progress", kw_only=True):
    """Periodic progress of a training run (every few steps)."""

    sleep_id: str
    step: int
    steps: int
    loss: float
    tokens_per_s: float = 0.0
    eta_s: float = 0.0


class TrainingFinished(_Event, tag="training.finished", kw_only=True):
    """Training produced a candidate adapter (not yet evaluated).

    ``steps`` were run of ``steps_planned`` (the cap: the night's epochs over
    its items); ``stopped_because`` is "learned" (the night's facts were the
    model's top choice), "plateau" (the probe's loss stopped falling) or
    "cap" (services.trainer.stop_rule). 0 / "": a trainer older than the rule.
    """

    sleep_id: str
    adapter_id: str
    steps: int
    final_loss: float
    duration_s: float
    steps_planned: int = 0
    stopped_because: str = ""


class TrainingFailed(_Event, tag="training.failed", kw_only=True):
    """A sleep ended without a candidate. ``stage``: dataset | memory | lock |
    train | save | evaluate; ``error`` says what to do about it."""

    sleep_id: str
    stage: str
    error: str


class TrainingTeacherFailed(_Event, tag="training.teacher_failed", kw_only=True):
    """The night's teacher (``trainer.teacher_url``) could not write its rewordings.

    Sender: the trainer, once per sleep, before it falls back (``fallback``:
    "built-in", the embedded model's own rewordings and the rule templates).
    ``teacher`` is host:port only (never a key or path); ``requests``: how many
    question/answer pairs were to be reworded, ``answered``: how many were
    before the failure. Consumers: audits, the morning report.
    """

    sleep_id: str
    teacher: str
    error: str
    requests: int = 0
    answered: int = 0
    fallback: str = "built-in"


class EvaluationCompleted(_Event, tag="evaluation.completed", kw_only=True):
    """The evaluator judged a candidate adapter, unfused, against the current one.

    ``metrics`` holds every figure (fact_recall, canary_acc, ppl, ppl_drift_pct,
    format_ok, false_recall, and their baselines); ``gates`` which passed.
    ``canary_by_kind`` (added later; empty from older evaluators): canary
    accuracy of the candidate minus the bare base model's, in percentage
    points, per kind of canary item (knowledge, instructions, refusal,
    long_context, code; negative: lost). Reported, not gated. The trainer
    copies the whole event into the adapter's manifest and the night's line
    in data/reports/nights.jsonl.
    """

    adapter_id: str
    baseline_id: str | None
    verdict: str  # promote | reject
    metrics: dict[str, float] = {}
    gates: dict[str, bool] = {}
    reasons: list[str] = []
    duration_s: float = 0.0
    canary_by_kind: dict[str, float] = {}


class AdapterPromoted(_Event, tag="adapter.promoted", kw_only=True):
    """``adapters/current`` now points to ``adapter_id``. Chat hot-reloads it."""

    adapter_id: str
    previous_id: str | None = None
    sha256: dict[str, str] = {}


class AdapterRejected(_Event, tag="adapter.rejected", kw_only=True):
    """A candidate failed its gates; the current adapter stays."""

    adapter_id: str
    reasons: list[str] = []


class AdapterRolledBack(_Event, tag="adapter.rolled_back", kw_only=True):
    """The user moved ``adapters/current`` back (to ``adapter_id``, or to no
    adapter when None). Chat hot-reloads."""

    adapter_id: str | None
    previous_id: str | None = None
    reason: str = "user request"


class AlertRaised(_Event, tag="alert.raised", kw_only=True):
    """Something needs the user's attention; one event per cause per hour at most.

    Senders (services/common/alerts.py decides and rate-limits): the trainer
    for ``sleep_failed`` and ``adapter_rejected`` (after the night's verdict)
    and ``disk_full`` (its schedule check); ``circ up`` and ``circ status`` for
    ``daemon_fatal`` (supervisord gave up on a daemon), ``disk_full`` and
    ``embedder_missing`` (ingest runs without its embedding model).
    Consumers: ``circ status`` (a line per recent alert), the morning report,
    audits. Guarantee: the desktop notification and the ``[alerts] command``
    hook, when configured, were tried before this was logged; ``key`` is the
    cause's subject (a sleep id, an adapter id, a daemon name) and
    ``suppressed`` how many alerts of this cause the hour before swallowed.
    """

    cause: str  # sleep_failed | adapter_rejected | daemon_fatal | disk_full | embedder_missing
    message: str
    key: str = ""
    severity: str = "warning"  # warning | error
    details: dict[str, str] = {}
    suppressed: int = 0


Event = Union[
    ChatTurnCompleted,
    ServiceStarted,
    ServiceFailed,
    AdapterReloaded,
    MemoryStored,
    MemorySkipped,
    MemoryFailed,
    MemoryForgotten,
    MemoryEdited,
    InboxImported,
    InboxRejected,
    TrainingStarted,
    TrainingProgress,
    TrainingFinished,
    TrainingFailed,
    EvaluationCompleted,
    AdapterPromoted,
    AdapterRejected,
    AdapterRolledBack,
    AlertRaised,
    TrainingTeacherFailed,
    MemoryMerged,
]

EVENT_TYPES: tuple[type, ...] = Event.__args__  # type: ignore[attr-defined]


def event_tag(cls_or_obj: object) -> str:
    """The wire tag (``type``) of an event class or instance."""
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    return cls.__struct_config__.tag  # type: ignore[attr-defined]


EVENT_TAGS: frozenset[str] = frozenset(event_tag(c) for c in EVENT_TYPES)
