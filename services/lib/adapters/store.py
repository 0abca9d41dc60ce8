"""The adapter store: ``adapters/<id>/`` directories and the ``adapters/current`` symlink.

Layout under ``root`` (``adapters/``)::

    <id>/                 a committed adapter, never modified except manifest.json
      adapters.safetensors, adapter_config.json   (mlx-lm's format)
      manifest.json       training/dataset manifest, evaluation, verdict and
                          "sha256": {relative path: hash} of every other file
      ...                 whatever else was staged (dataset/, replay.jsonl)
    current -> <id>       the served adapter (absent: the base model alone)
    history.json          promotion stack and pins
    .staging/<id>/        adapters being written (removed by cleanup_staging)
    .store.lock           flock serialising writers of this store

Crash safety (kill -9 at any moment):

- An adapter appears all at once: it is written under ``.staging/``, every
  file fsynced, then the directory is renamed into place (rename is atomic)
  and the parent fsynced. A crash leaves at most a staging leftover.
- ``current`` only ever changes by renaming a complete temporary symlink
  over it, and only to an adapter whose hashes were just verified. It is
  the commit point; ``history.json`` is bookkeeping written after it and
  reconciled with it on every read, so the two can never disagree for long.
- Deleting an adapter first renames it into ``.staging/`` (atomic), so a
  crash mid-delete never leaves a half-deleted adapter in ``root``.

Ids are validated everywhere (letters, digits, ``-``, ``_``; no dots, no
slashes), so no argument can name a path outside ``root``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import secrets
import shutil
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from protocol.adapter_files import AdapterHistory, HistoryEntry
from services.common.atomic import fsync_dir, write_atomic
from services.common.digest import file_sha256_size

CURRENT = "current"
STAGING = ".staging"
HISTORY = "history.json"
MANIFEST = "manifest.json"
STORE_LOCK = ".store.lock"
REQUIRED_FILES = ("adapters.safetensors", "adapter_config.json")
# The target that means "no adapter, the base model alone" (protocol Rollback).
BASE = "none"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")
_RESERVED = {CURRENT, BASE}
# Manifest keys the store owns; update_manifest may not overwrite them.
_OWNED_KEYS = {"adapter_id", "created", "sha256", "bytes", "format"}
# Evaluation metrics worth a column in `circ adapters list`, in order.
KEY_FIGURES = ("fact_recall", "canary_acc", "ppl_drift_pct", "false_recall", "format_ok")


class AdapterStoreError(Exception):
    pass


class AdapterInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One row of `circ adapters list`."""

    adapter_id: str
    created: str  # ISO 8601, UTC
    verdict: str  # promote | reject | pending | broken
    figures: dict[str, float] = {}
    current: bool = False
    pinned: bool = False
    problem: str = ""  # why the manifest could not be read (verdict "broken")


class AdapterStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        # Writers: one thread at a time in this process (the RLock), one
        # process at a time across processes (a flock on .store.lock).
        self._thread_lock = threading.RLock()
        self._depth = 0

    # -- ids and paths -----------------------------------------------------------
    @staticmethod
    def new_id() -> str:
        """``ad-YYYYmmdd-HHMMSS-xxxx`` (UTC): sorts by creation time."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        return f"ad-{stamp}-{secrets.token_hex(2)}"

    @staticmethod
    def check_id(adapter_id: str) -> str:
        if not isinstance(adapter_id, str) or not _ID.match(adapter_id) or adapter_id.lower() in _RESERVED:
            raise AdapterStoreError(f"{adapter_id!r} is not a valid adapter id "
                                    "(letters, digits, '-' and '_' only, e.g. ad-20250101-020000-ab12)")
        return adapter_id

    def path(self, adapter_id: str) -> Path:
        return self.root / self.check_id(adapter_id)

    @property
    def staging_root(self) -> Path:
        return self.root / STAGING

    # -- writing a new adapter ----------------------------------------------------
    def stage(self, adapter_id: str) -> Path:
        """The directory to write adapter ``adapter_id`` into (created; idempotent)."""
        self.check_id(adapter_id)
        if self.path(adapter_id).exists():
            raise AdapterStoreError(f"adapter {adapter_id} is already committed")
        staging = self.staging_root / adapter_id
        staging.mkdir(parents=True, exist_ok=True)
        return staging

    def commit(self, adapter_id: str, manifest: dict[str, Any]) -> Path:
        """Seal the staged adapter: hash every file, write manifest.json, rename it into place.

        ``manifest`` is the caller's record (dataset manifest, training
        parameters, figures); the store adds ``adapter_id``, ``created``,
        ``format`` and ``sha256``/``bytes`` of every file. Dot-files in the
        staging directory are temp files of interrupted writes: removed.
        """
        staging = self.staging_root / self.check_id(adapter_id)
        final = self.path(adapter_id)
        with self._writer():
            if final.exists():
                raise AdapterStoreError(f"adapter {adapter_id} is already committed")
            if not staging.is_dir():
                raise AdapterStoreError(f"nothing staged for {adapter_id} (expected {staging})")
            missing = [name for name in REQUIRED_FILES if not (staging / name).is_file()]
            if missing:
                raise AdapterStoreError(f"staged adapter {adapter_id} lacks {', '.join(missing)}")
            _remove_temp_files(staging)
            files = _hash_tree(staging, fsync=True)
            record = {k: v for k, v in manifest.items() if k not in _OWNED_KEYS}
            record.update(adapter_id=adapter_id, created=_now_iso(), format=1,
                          sha256={k: v[0] for k, v in files.items()},
                          bytes={k: v[1] for k, v in files.items()})
            write_atomic(staging / MANIFEST, _dumps(record), mode=0o644)
            for directory in _directories(staging):
                fsync_dir(directory)
            os.rename(staging, final)
            fsync_dir(self.root)
            fsync_dir(self.staging_root)
        return final

    def update_manifest(self, adapter_id: str, key: str, value: Any) -> None:
        """Set ``manifest[key] = value`` (e.g. the evaluation), atomically.

        The files are re-hashed first and must still match: an update never
        launders a corrupted adapter into a consistent-looking one.
        """
        if key in _OWNED_KEYS:
            raise AdapterStoreError(f"manifest key {key!r} belongs to the store")
        with self._writer():
            problems = self.verify(adapter_id)
            if problems:
                raise AdapterStoreError(f"adapter {adapter_id} failed verification: {'; '.join(problems)}")
            manifest = self._manifest(adapter_id)
            manifest[key] = msgspec.to_builtins(value)
            write_atomic(self.path(adapter_id) / MANIFEST, _dumps(manifest), mode=0o644)

    # -- checking -----------------------------------------------------------------
    def verify(self, adapter_id: str) -> list[str]:
        """Problems with adapter ``adapter_id``; empty when complete and every hash matches."""
        directory = self.path(adapter_id)
        if not directory.is_dir():
            return [f"adapter {adapter_id} does not exist"]
        try:
            manifest = self._manifest(adapter_id)
        except AdapterStoreError as exc:
            return [str(exc)]
        expected = manifest.get("sha256")
        if not isinstance(expected, dict) or not expected:
            return [f"{MANIFEST} of {adapter_id} lists no file hashes"]
        problems = [f"{name} is not listed in {MANIFEST}" for name in REQUIRED_FILES if name not in expected]
        try:
            actual = _hash_tree(directory, skip={MANIFEST})
        except OSError as exc:
            return [*problems, f"cannot read {adapter_id}: {exc}"]
        for name, digest in sorted(expected.items()):
            if name not in actual:
                problems.append(f"{name} is missing")
            elif actual[name][0] != digest:
                problems.append(f"{name} does not match its sha256 (corrupted or modified)")
        problems += [f"{name} is not listed in {MANIFEST}" for name in sorted(set(actual) - set(expected))]
        return problems

    def hashes(self, adapter_id: str) -> dict[str, str]:
        """The recorded sha256 of every file (for ``adapter.promoted``)."""
        return dict(self._manifest(adapter_id).get("sha256", {}))

    # -- what chat serves ---------------------------------------------------------
    def current(self) -> str | None:
        """The id ``adapters/current`` points to, or None (no adapter, or it points nowhere)."""
        link = self.root / CURRENT
        try:
            target = os.readlink(link)
        except (FileNotFoundError, OSError):
            return None
        name = Path(target).name
        if not _ID.match(name) or not (self.root / name).is_dir():
            return None
        return name

    def promote(self, adapter_id: str) -> str | None:
        """Make ``adapter_id`` current after verifying it; returns the previous current."""
        with self._writer():
            problems = self.verify(adapter_id)
            if problems:
                raise AdapterStoreError(f"refusing to promote {adapter_id}: {'; '.join(problems)}")
            history = self._history()
            previous = self.current()
            self._point_current(adapter_id)
            if not history["stack"] or history["stack"][-1] != adapter_id:
                history["stack"].append(adapter_id)
            history["log"].append({"action": "promote", "adapter_id": adapter_id,
                                   "previous_id": previous, "ts": _now_iso()})
            self._write_history(history)
            return previous

    def rollback(self, adapter_id: str | None = None) -> str | None:
        """Point ``current`` back; returns the new current id (None: the base model).

        No argument: the adapter promoted before the current one (skipping
        any that were deleted or no longer verify), or the base model when
        there is none. An id: that adapter (verified first). ``"none"``: the
        base model alone.
        """
        if adapter_id is not None and adapter_id.lower() == BASE:
            return self.rollback_to_base()
        with self._writer():
            history = self._history()
            stack = history["stack"]
            if adapter_id is None:
                if stack:
                    stack.pop()  # the current one
                while stack and self.verify(stack[-1]):
                    stack.pop()
                target = stack[-1] if stack else None
            else:
                problems = self.verify(adapter_id)
                if problems:
                    raise AdapterStoreError(f"refusing to roll back to {adapter_id}: {'; '.join(problems)}")
                target = adapter_id
                if target in stack:
                    del stack[stack.index(target) + 1:]
                else:
                    stack.append(target)
            previous = self.current()
            if target is None:
                self._remove_current()
            else:
                self._point_current(target)
            history["log"].append({"action": "rollback", "adapter_id": target,
                                   "previous_id": previous, "ts": _now_iso()})
            self._write_history(history)
            return target

    def rollback_to_base(self) -> None:
        """Remove ``current``: chat serves the base model alone."""
        with self._writer():
            history = self._history()
            previous = self.current()
            self._remove_current()
            history["stack"].clear()
            history["log"].append({"action": "rollback", "adapter_id": None,
                                   "previous_id": previous, "ts": _now_iso()})
            self._write_history(history)

    def previous(self) -> str | None:
        """What ``rollback()`` with no argument would go back to."""
        stack = self._history()["stack"]
        return stack[-2] if len(stack) >= 2 else None

    def promotion_stack(self) -> list[str]:
        """The promoted adapters rollback walks back through, oldest first (the current one last)."""
        return list(self._history()["stack"])

    # -- listing, pins, retention -------------------------------------------------
    def pin(self, adapter_id: str, pinned: bool = True) -> None:
        """Keep ``adapter_id`` through retention (``pinned=False`` releases it)."""
        with self._writer():
            if pinned and not self.path(adapter_id).is_dir():
                raise AdapterStoreError(f"adapter {adapter_id} does not exist")
            history = self._history()
            pins = set(history["pinned"])
            pins = pins | {adapter_id} if pinned else pins - {adapter_id}
            history["pinned"] = sorted(pins)
            self._write_history(history)

    def ids(self) -> list[str]:
        """Committed adapter ids, oldest first (ids sort by creation time)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.is_symlink() and _ID.match(p.name)
                      and p.name.lower() not in _RESERVED)

    def list(self) -> list[AdapterInfo]:
        """Every committed adapter, oldest first; no hashing (use :meth:`verify`)."""
        current = self.current()
        pins = set(self._history()["pinned"])
        rows = []
        for adapter_id in self.ids():
            flags = {"current": adapter_id == current, "pinned": adapter_id in pins}
            try:
                manifest = self._manifest(adapter_id)
            except AdapterStoreError as exc:
                rows.append(AdapterInfo(adapter_id=adapter_id, created="", verdict="broken",
                                        problem=str(exc), **flags))
                continue
            rows.append(AdapterInfo(adapter_id=adapter_id, created=str(manifest.get("created", "")),
                                    verdict=_verdict(manifest), figures=_figures(manifest), **flags))
        return sorted(rows, key=lambda r: (r.created, r.adapter_id))

    def show(self, adapter_id: str) -> dict[str, Any]:
        """The manifest plus ``current``, ``pinned``, ``path`` and ``problems`` (hashes checked)."""
        manifest = self._manifest(adapter_id)
        manifest.update(current=self.current() == adapter_id,
                        pinned=adapter_id in self._history()["pinned"],
                        path=str(self.path(adapter_id)), problems=self.verify(adapter_id))
        return manifest

    def retain(self, keep_last: int) -> list[str]:
        """Delete all but the newest ``keep_last`` adapters; returns the deleted ids.

        Never deletes the current adapter, the one rollback would return to,
        or a pinned one (those do not count against ``keep_last``).
        """
        with self._writer():
            history = self._history()
            protected = {self.current(), *history["pinned"]}
            stack = history["stack"]
            if len(stack) >= 2:
                protected.add(stack[-2])
            candidates = [i for i in self.ids() if i not in protected]
            doomed = candidates[:max(0, len(candidates) - max(0, keep_last))]
            for adapter_id in doomed:
                self._delete(adapter_id)
            if doomed:
                history["stack"] = [i for i in stack if i not in doomed]
                self._write_history(history)
            return doomed

    def cleanup_staging(self, keep: Collection[str] = ()) -> list[str]:
        """Remove what interrupted writes left: staging dirs, temp symlinks, temp files.

        Call it when no adapter is being written (the trainer does, holding
        the heavy-run lock, before a sleep). ``keep``: staging dirs to leave
        (an interrupted run the caller may resume). Returns what was removed.
        """
        removed: list[str] = []
        with self._writer():
            if self.staging_root.is_dir():
                for entry in self.staging_root.iterdir():
                    if entry.name in keep:
                        continue
                    _remove_path(entry)
                    removed.append(f"{STAGING}/{entry.name}")
            if self.root.is_dir():
                for entry in self.root.iterdir():
                    if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                        _remove_path(entry)
                        removed.append(entry.name)
                for adapter_id in self.ids():
                    for leftover in _remove_temp_files(self.root / adapter_id):
                        removed.append(f"{adapter_id}/{leftover}")
                link = self.root / CURRENT
                if link.is_symlink() and self.current() is None:
                    link.unlink()  # points nowhere: the base model is what chat serves anyway
                    removed.append(CURRENT)
                fsync_dir(self.root)
        return removed

    # -- internals -------------------------------------------------------------------
    @contextmanager
    def _writer(self) -> Iterator[None]:
        """Serialise writers across threads and processes (re-entrant in one thread)."""
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / STORE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if we die
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
            finally:
                os.close(fd)

    def _manifest(self, adapter_id: str) -> dict[str, Any]:
        path = self.path(adapter_id) / MANIFEST
        try:
            manifest = json.loads(path.read_bytes())
        except FileNotFoundError as exc:
            raise AdapterStoreError(f"adapter {adapter_id} has no {MANIFEST}") from exc
        except (OSError, ValueError) as exc:
            raise AdapterStoreError(f"{MANIFEST} of {adapter_id} is unreadable: {exc}") from exc
        if not isinstance(manifest, dict):
            raise AdapterStoreError(f"{MANIFEST} of {adapter_id} is not a JSON object")
        return manifest

    def _history(self) -> dict[str, Any]:
        """history.json, reconciled with the ``current`` symlink (which is the truth)."""
        history: dict[str, Any] = {"stack": [], "pinned": [], "log": []}
        try:
            raw = (self.root / HISTORY).read_bytes()
        except OSError:
            raw = b""
        try:  # the contract (protocol.adapter_files) ...
            history = msgspec.to_builtins(msgspec.json.decode(raw, type=AdapterHistory))
        except (msgspec.DecodeError, msgspec.ValidationError):  # ... else keep whatever part still reads
            try:
                loaded = json.loads(raw)
                if isinstance(loaded, dict):
                    for key in history:
                        if isinstance(loaded.get(key), list):
                            history[key] = loaded[key]
            except ValueError:
                pass
        history["stack"] = [i for i in history["stack"] if isinstance(i, str) and _ID.match(i)]
        history["pinned"] = [i for i in history["pinned"] if isinstance(i, str) and _ID.match(i)]
        current = self.current()
        stack = history["stack"]
        if current is None:
            # A crash after the symlink went away but before the history said so.
            if stack and not (self.root / CURRENT).is_symlink():
                stack.clear()
        elif current in stack:
            del stack[stack.index(current) + 1:]
        else:
            stack.append(current)  # a crash between the symlink swap and the history write
        return history

    def _write_history(self, history: dict[str, Any]) -> None:
        # What is written always meets the contract: a log entry an older or damaged file left in
        # another shape is dropped rather than carried on.
        log = [entry for entry in (_history_entry(e) for e in history["log"]) if entry is not None][-200:]
        checked = AdapterHistory(stack=list(history["stack"]), pinned=list(history["pinned"]), log=log)
        write_atomic(self.root / HISTORY, _dumps(msgspec.to_builtins(checked)), mode=0o644)

    def _point_current(self, adapter_id: str) -> None:
        tmp = self.root / f".{CURRENT}-{secrets.token_hex(4)}.tmp"
        os.symlink(self.check_id(adapter_id), tmp)  # relative: the tree may move
        try:
            os.replace(tmp, self.root / CURRENT)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.root)

    def _remove_current(self) -> None:
        link = self.root / CURRENT
        if link.is_symlink():
            link.unlink()
            fsync_dir(self.root)
        elif link.exists():
            raise AdapterStoreError(f"{link} is not a symlink; move it away by hand")

    def _delete(self, adapter_id: str) -> None:
        # Rename out of root first: the adapter vanishes at once, whole.
        self.staging_root.mkdir(parents=True, exist_ok=True)
        trash = self.staging_root / f"deleted-{adapter_id}-{secrets.token_hex(2)}"
        os.rename(self.path(adapter_id), trash)
        fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)


# -- helpers ---------------------------------------------------------------------------
def _history_entry(entry: Any) -> HistoryEntry | None:
    try:
        return msgspec.convert(entry, HistoryEntry)
    except msgspec.ValidationError:
        return None


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=str).encode() + b"\n"


def _hash_tree(directory: Path, *, skip: set[str] = frozenset(), fsync: bool = False) -> dict[str, tuple[str, int]]:
    """{relative posix path: (sha256, bytes)} of every regular file; dot-files are temp files."""
    out: dict[str, tuple[str, int]] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if rel in skip or any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue
        if path.is_symlink():
            raise AdapterStoreError(f"{path} is a symlink: adapters hold regular files only")
        if path.is_file():
            out[rel] = file_sha256_size(path, fsync=fsync)
    return out


def _directories(directory: Path) -> list[Path]:
    return [directory, *(p for p in directory.rglob("*") if p.is_dir() and not p.is_symlink())]


def _remove_temp_files(directory: Path) -> list[str]:
    removed = []
    for entry in directory.iterdir():
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            _remove_path(entry)
            removed.append(entry.name)
    return removed


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _verdict(manifest: dict[str, Any]) -> str:
    verdict = manifest.get("verdict")
    evaluation = manifest.get("evaluation")
    if not verdict and isinstance(evaluation, dict):
        verdict = evaluation.get("verdict")
    return str(verdict) if verdict else "pending"


def _figures(manifest: dict[str, Any]) -> dict[str, float]:
    figures: dict[str, float] = {}
    evaluation = manifest.get("evaluation")
    metrics = evaluation.get("metrics", {}) if isinstance(evaluation, dict) else {}
    for key in KEY_FIGURES:
        value = metrics.get(key) if isinstance(metrics, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            figures[key] = float(value)
    training = manifest.get("training")
    loss = manifest.get("final_loss", training.get("final_loss") if isinstance(training, dict) else None)
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        figures["final_loss"] = float(loss)
    return figures
