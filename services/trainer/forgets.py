"""Which forgets an adapter honours, and whether the next night must re-train because of one.

Socket-free: the forgotten memory ids are asked of ingest by the caller
(``IngestMemories.forgotten_ids``); everything else is the adapters' own
manifests.

Every night trains a fresh adapter from the base model, so an adapter holds
exactly the memories whose examples were in its train.jsonl: the night's own
(``dataset.memory_ids``) and those of the replayed examples
(``dataset.replayed_memory_ids``, recorded since forgets reach the weights).
It *honours* a forget when it holds none of that forget's memories; the
dataset manifest also lists every memory forgotten before it was built
(``dataset.honours_forgets``), which no example of it came from.

The policy (README "Decisions", "A forget re-trains the night"):

* a night with new memories trains without the forgotten ones anyway;
* with nothing new, a serving adapter that holds a forgotten memory makes
  the next sleep a **re-train**: the serving adapter's own night again (its
  memories after its ``since_seq``, which ingest no longer lists when
  forgotten) with replay from the pool minus the forgotten, from the base;
* when nothing of that night is left, there is nothing to re-train: the
  sleep rolls back to the newest adapter of the promotion history that holds
  none of the forgotten memories (or to the base model).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

# Shown (and logged) when a night re-trains because of forgets; tests and the CLI match on it.
RETRAIN = "re-train: {n} forget{s} not honoured by the current adapter {adapter}"


def retrain_reason(unhonoured: Collection[str], adapter_id: str) -> str:
    n = len(unhonoured)
    return RETRAIN.format(n=n, s="" if n == 1 else "s", adapter=adapter_id)


def _replay_pool_ids(store: Any, adapter_id: str) -> set[str]:
    """Memory ids in the replay pool of ``adapter_id`` (its replay.jsonl), what later nights replay."""
    path = store.path(adapter_id) / "replay.jsonl"
    ids: set[str] = set()
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return ids
    for line in lines:
        try:
            source = json.loads(line).get("source") or {}
        except (ValueError, AttributeError):
            continue
        ids.update(str(m) for m in source.get("memory_ids") or () if isinstance(m, str))
    return ids


def held_memory_ids(store: Any, adapter_id: str, manifest: dict | None = None) -> set[str]:
    """Every memory whose examples adapter ``adapter_id`` was trained on.

    An adapter from before ``replayed_memory_ids`` was recorded is assumed to
    hold whatever the replay pools of the adapters older than it hold
    (conservative: it may have replayed any of them).
    """
    manifest = store.show(adapter_id) if manifest is None else manifest
    dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    held = {str(m) for m in dataset.get("memory_ids") or () if isinstance(m, str)}
    replayed = dataset.get("replayed_memory_ids")
    if isinstance(replayed, list):
        return held | {str(m) for m in replayed if isinstance(m, str)}
    for older in store.ids():
        if older >= adapter_id:  # ids sort by creation time
            break
        held |= _replay_pool_ids(store, older)
    return held


def unhonoured(store: Any, adapter_id: str | None, forgotten: Collection[str],
               manifest: dict | None = None) -> list[str]:
    """The forgotten memories ``adapter_id`` still holds (sorted); [] for the base model."""
    if adapter_id is None or not forgotten:
        return []
    return sorted(held_memory_ids(store, adapter_id, manifest) & set(forgotten))


def honoured(manifest: dict) -> list[str]:
    """The forgotten memory ids an adapter's dataset was built without (``dataset.honours_forgets``)."""
    dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    return [str(m) for m in dataset.get("honours_forgets") or () if isinstance(m, str)]


@dataclass(frozen=True)
class Decision:
    """What the next sleep trains on: ``since`` is where its memories start (ListTrainable after_seq).

    ``retrain`` is empty for an ordinary night, else the reason (see :data:`RETRAIN`);
    ``forgets``: the forgotten memories the serving adapter holds.
    """

    since: int
    retrain: str = ""
    forgets: tuple[str, ...] = ()


def decide(store: Any, forgotten: Collection[str], has_new: bool) -> Decision:
    """The next night: new memories after the serving adapter's, or a re-train of its own night."""
    current = store.current()
    if current is None:
        return Decision(since=0)
    manifest = store.show(current)
    dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    max_seq = int(dataset.get("max_seq", 0) or 0)
    if has_new:
        return Decision(since=max_seq)
    held = unhonoured(store, current, forgotten, manifest)
    if not held:
        return Decision(since=max_seq)
    return Decision(since=int(dataset.get("since_seq", 0) or 0), retrain=retrain_reason(held, current),
                    forgets=tuple(held))


def clean_fallback(store: Any, forgotten: Collection[str], history: Iterable[str] | None = None) -> str | None:
    """The newest adapter of the promotion history (newest first) that holds none of ``forgotten``;
    None: the base model. Adapters that no longer verify are skipped."""
    order = list(history) if history is not None else list(reversed(store.promotion_stack()))
    for adapter_id in order:
        try:
            if store.verify(adapter_id):
                continue
            if not unhonoured(store, adapter_id, forgotten):
                return adapter_id
        except Exception:  # an unreadable manifest: not a safe place to go back to
            continue
    return None
