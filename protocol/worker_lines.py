"""The JSON lines a worker child process writes on its stdout, one object per line.

Sender: the training worker (``python -m services.trainer.worker``) and the
paraphrase worker (``services.trainer.paraphrase_worker``), through
``services.trainer.worker_io.Emitter``. Consumer: the parent's
``services.trainer.runner``, which decodes every stdout line with
:data:`WORKER_LINE` and keeps the last line of each type. A line that does
not decode as one of these is not the worker's (a library printed to fd 1
before the worker took it over) and goes with the stderr tail.

Every line carries ``type``; the order in a run is ``hello``, then (training)
``memory``, ``anchors``, ``teacher``, ``started``, ``progress``/``check``/``checkpoint`` ... and one
of ``done``, ``stopped`` or ``error`` last, before the exit code says the
same. Fields the two workers do not share have defaults. Evolution: JSON
lines are not logged, but the rules of protocol/ hold all the same (new
fields get defaults, never change a type or reuse a tag), so a runner and
a worker of different versions still understand each other; unknown fields
are ignored.
"""

from __future__ import annotations

from typing import Any

import msgspec


class _Line(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class WorkerHello(_Line, tag="hello", kw_only=True):
    """First line, at once: the worker is alive (its pid, for the parent's log)."""

    pid: int = 0


class WorkerMemory(_Line, tag="memory", kw_only=True):
    """Training only: the memory check passed. ``detail`` is bytes by part (weights, lora, activations)."""

    needed_bytes: int = 0
    available_bytes: int = 0
    detail: dict[str, int] = {}
    source: str = ""


class WorkerAnchors(_Line, tag="anchors", kw_only=True):
    """Training only: ``count`` anchor examples made from ``prompts`` prompts in ``seconds``."""

    count: int = 0
    prompts: int = 0
    seconds: float = 0.0


class WorkerTeacher(_Line, tag="teacher", kw_only=True):
    """Training, objective "distill" only: the teacher's top-``top_k`` targets for ``distilled``
    items (``cross_entropy`` items have none; ``mismatched``: their answer tokenized differently
    after the memories), read from the cache (``cached``, key ``cache_key``) or computed in ``seconds``."""

    distilled: int = 0
    cross_entropy: int = 0
    mismatched: int = 0
    top_k: int = 0
    cached: bool = False
    seconds: float = 0.0
    cache_key: str = ""


class WorkerStarted(_Line, tag="started", kw_only=True):
    """The run began. Training: from ``start_step`` (a resume) of ``steps``, over ``examples``
    (``dropped``: too long or empty), with the compute path and the params as dicts.
    Paraphrasing: ``requests`` to answer on ``backend``/``weights``."""

    start_step: int = 0
    steps: int = 0
    examples: int = 0
    dropped: int = 0
    lora_layers: int = 0
    trainable_params: int = 0
    compute: dict[str, Any] = {}
    params: dict[str, Any] = {}
    requests: int = 0
    backend: str = ""
    weights: str = ""
    # Training with the stop rule: probe items (one per fact; 0: the rule is off) and steps between checks.
    probe_items: int = 0
    check_every: int = 0


class WorkerProgress(_Line, tag="progress", kw_only=True):
    """``step`` of ``steps`` done; training adds the loss, speed and peak memory."""

    step: int
    steps: int
    loss: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    step_s: float | None = None
    elapsed_s: float | None = None
    peak_memory_bytes: int | None = None


class WorkerCheck(_Line, tag="check", kw_only=True):
    """Training, stop rule on: after ``step`` (of at most ``steps``), ``learned`` of ``facts`` probe
    items have their value as the model's top choice; ``probe_loss`` is the mean loss on the value
    tokens; ``stop``: "learned" or "plateau" when the run stops here, else empty."""

    step: int
    steps: int = 0
    learned: int = 0
    facts: int = 0
    probe_loss: float | None = None
    seconds: float = 0.0
    stop: str = ""


class WorkerCheckpoint(_Line, tag="checkpoint", kw_only=True):
    """A resumable checkpoint of ``step`` was written (fsynced) at ``path``."""

    step: int
    path: str = ""


class WorkerDone(_Line, tag="done", kw_only=True):
    """The run finished (exit 0). Training: ``files`` written into the output directory;
    ``final_loss`` is None when it was not finite. Paraphrasing: ``requests`` answered."""

    steps: int = 0
    final_loss: float | None = None
    duration_s: float = 0.0
    tokens_per_s: float | None = None
    resumed_from: int = 0
    files: list[str] = []
    requests: int = 0
    # Training: ``steps`` is the steps run, of ``steps_planned`` (the cap); ``stopped_because`` is
    # "learned" or "plateau" (the stop rule) or "cap" (0 / "": a worker older than the rule).
    steps_planned: int = 0
    stopped_because: str = ""


class WorkerStopped(_Line, tag="stopped", kw_only=True):
    """Stopped by SIGTERM after checkpointing ``step`` (0: before the first step); exit 5."""

    step: int = 0


class WorkerError(_Line, tag="error", kw_only=True):
    """The run failed: ``kind`` is ``input`` (exit 2), ``memory`` (exit 3) or ``internal``
    (exit 1); ``error`` says what to do. A memory refusal adds the figures."""

    kind: str = "internal"
    error: str = ""
    needed_bytes: int | None = None
    available_bytes: int | None = None
    detail: dict[str, int] = {}


WorkerLine = (WorkerHello | WorkerMemory | WorkerAnchors | WorkerTeacher | WorkerStarted | WorkerProgress
              | WorkerCheck | WorkerCheckpoint | WorkerDone | WorkerStopped | WorkerError)

WORKER_LINE_TYPES = tuple(cls.__struct_config__.tag for cls in WorkerLine.__args__)  # type: ignore[attr-defined]
