"""The JSON lines of ``data/reports/nights.jsonl``: one object per night, appended.

Sender: the trainer, after each night's verdict (``services.trainer.nights_log``,
called from ``services.trainer.morning.after_night``), promoted, rejected or
failed alike. Consumer: the morning report (``services.report.nights``), which
decodes each line with :data:`NIGHT_LINE_DECODER`, matches it to the log's
night by ``sleep_id`` and skips a line that does not decode (a torn last
line after a crash: the event log still has that night). The log stays the
record of what happened; this file adds what the log does not hold (peak
memory, the training summary) and is the nights' trend in one place, for
people and scripts (``jq``).

Guarantees: one line per night, written once, never rewritten; the writer
starts a line on a fresh line even after a torn one. Evolution: the rules of
protocol/ hold (new fields get defaults, a field's type never changes, ``v``
is raised only for a real break); unknown fields are ignored on read.
"""

from __future__ import annotations

import msgspec


class NightLine(msgspec.Struct, frozen=True, kw_only=True):
    """One night: what was judged, the verdict, its figures and timings.

    ``verdict``: promote | reject | failed. ``error``: why a failed night
    failed. ``started_at``/``ended_at``: unix seconds (the sleep's start, the
    line's writing). ``total_s``: start to verdict; ``train_s``: the training
    worker's wall time; ``eval_s``: the evaluator's. ``peak_memory_bytes``: MLX
    peak of the training worker (None when unknown, e.g. a night failed before
    training). ``metrics``/``gates``/``reasons``: as in
    ``evaluation.completed`` (empty when the night was not judged);
    ``canary_by_kind``: canary accuracy change per kind of item, percentage
    points, candidate minus the bare base model (negative: lost).
    """

    v: int = 1
    sleep_id: str
    adapter_id: str = ""
    trigger: str = ""
    verdict: str
    error: str = ""
    started_at: float
    ended_at: float
    total_s: float
    train_s: float | None = None
    eval_s: float | None = None
    steps: int = 0
    final_loss: float | None = None
    peak_memory_bytes: int | None = None
    metrics: dict[str, float] = {}
    gates: dict[str, bool] = {}
    reasons: list[str] = []
    canary_by_kind: dict[str, float] = {}


NIGHT_LINE_DECODER = msgspec.json.Decoder(NightLine)
