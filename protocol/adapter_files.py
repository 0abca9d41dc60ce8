"""The adapter store's own files, as contracts (``adapters/history.json``).

Not a socket message: a file the trainer's AdapterStore writes and reads
back, and that `circ adapters` and audits read. Evolution rules as for the
messages: new fields get defaults, a field never changes type.
(``manifest.json`` stays a free-form record: the dataset's, the training's
and the evaluation's figures, plus the store-owned ``adapter_id``,
``created``, ``format``, ``sha256`` and ``bytes`` that verify() checks.)
"""

from __future__ import annotations

import msgspec


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One change of what chat serves: ``action`` promote | rollback (``adapter_id`` None: the base model)."""

    action: str
    adapter_id: str | None = None
    previous_id: str | None = None
    ts: str = ""


class AdapterHistory(msgspec.Struct, frozen=True, kw_only=True):
    """``history.json``: the promotion stack (last = current), pinned ids, the last 200 changes.

    The ``adapters/current`` symlink is the truth; the store reconciles this
    file with it after a crash between the two writes.
    """

    stack: list[str] = []
    pinned: list[str] = []
    log: list[HistoryEntry] = []
