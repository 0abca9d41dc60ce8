"""Importing conversation files: the watched inbox and `circ import FILE`.

A file is parsed and validated completely first; only then are its turns
appended, as ``chat.turn_completed`` events marked ``imported_from``, followed
by one ``inbox.imported``. Event ids derive from the file's sha256 and the
turn's position, so an import interrupted by a crash and run again completes
without doubling anything. A file that does not parse moves to
``data/inbox/rejected/`` with ``<name>.reason`` beside it; nothing of it is
imported. Imported files move to ``data/inbox/imported/``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from protocol.envelope import Envelope, new_envelope
from protocol.events import ChatTurnCompleted, InboxImported, InboxRejected
from services.common.atomic import write_atomic
from services.common.digest import bytes_sha256, file_sha256
from services.common.logging import get_logger
from services.common.paths import Paths, ensure_private_dir
from services.ingest.inbox import InboxError, read_inbox_file
from services.lib.privacy.redact import redact as redact_text

log = get_logger("ingest.import")

AppendFn = Callable[[list[Envelope]], list[int]]
APPEND_CHUNK = 200  # events per append: keeps each frame far below the size limit
SETTLE_S = 1.0  # a file younger than this may still be being written


@dataclass(frozen=True)
class ImportOutcome:
    file: str
    turns: int = 0
    first_seq: int = 0
    last_seq: int = 0
    error: str | None = None


def inbox_dir(paths: Paths) -> Path:
    inbox = paths.data / "inbox"
    ensure_private_dir(inbox)
    return inbox


def pending_files(inbox: Path) -> list[Path]:
    """Files waiting in the inbox (hidden and partial files are ignored)."""
    return sorted(p for p in inbox.iterdir() if p.is_file() and is_candidate(p))


def is_candidate(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix not in (".tmp", ".part", ".reason")


def is_settled(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime >= SETTLE_S
    except FileNotFoundError:
        return False


def turn_envelopes(turns, sha: str, name: str, *, redact: bool = False) -> list[Envelope]:  # noqa: ANN001
    """The turns as ``chat.turn_completed`` events; ``redact`` (chat.redact_before_log) redacts them first."""
    envelopes = []
    for position, turn in enumerate(turns):
        body = ChatTurnCompleted(
            session_id=f"import-{sha[:12]}-{turn.conversation}", turn_index=turn.turn_index,
            user_text=turn.user_text, assistant_text=turn.assistant_text, model="import",
            request_id=f"imp-{sha[:24]}-{position}", system_prompt=turn.system_prompt, imported_from=name)
        if redact:  # an imported turn is a turn: with redact_before_log, the raw text never reaches the log
            body = msgspec.structs.replace(body, user_text=redact_text(body.user_text).text,
                                           assistant_text=redact_text(body.assistant_text).text)
        envelopes.append(new_envelope(body, source="ingest", msg_id=f"imp-{sha[:24]}-{position}"))
    return envelopes


def import_file(path: Path, paths: Paths, append: AppendFn, *, move: bool, redact: bool = False) -> ImportOutcome:
    """Import ``path``; with ``move`` (the inbox) file it under imported/ or rejected/.

    ``redact`` is ``chat.redact_before_log``: the turns are logged redacted, as chat logs its own,
    and an inbox file is removed after its import instead of kept under imported/.
    """
    name = path.name
    try:
        data, turns = read_inbox_file(path)
    except (InboxError, OSError) as exc:
        reason = str(exc)
        log.warning("ingest.import_rejected", file=name, reason=reason)
        sha = ""
        try:
            sha = file_sha256(path)
        except OSError:
            pass
        append([new_envelope(InboxRejected(file=name, reason=reason, sha256=sha), source="ingest")])
        if move:
            _file_away(path, paths, "rejected", reason)
        return ImportOutcome(file=name, error=reason)
    sha = bytes_sha256(data)
    envelopes = turn_envelopes(turns, sha, name, redact=redact)
    seqs: list[int] = []
    for start in range(0, len(envelopes), APPEND_CHUNK):
        seqs += append(envelopes[start:start + APPEND_CHUNK])
    summary = InboxImported(file=name, sha256=sha, turns=len(turns), first_seq=min(seqs), last_seq=max(seqs))
    append([new_envelope(summary, source="ingest", msg_id=f"inbox-{sha}")])
    log.info("ingest.imported", file=name, turns=len(turns), first_seq=min(seqs), last_seq=max(seqs))
    if move and redact:
        # With redact_before_log the raw text may not stay on disk: the log holds the redacted
        # turns, and a file dropped again is still recognised by its sha256 (the event ids).
        path.unlink(missing_ok=True)
        log.info("ingest.inbox_file_removed", file=name, why="chat.redact_before_log: no raw copy is kept")
    elif move:
        _file_away(path, paths, "imported", None)
    return ImportOutcome(file=name, turns=len(turns), first_seq=min(seqs), last_seq=max(seqs))


def _file_away(path: Path, paths: Paths, folder: str, reason: str | None) -> None:
    target_dir = inbox_dir(paths) / folder
    ensure_private_dir(target_dir)
    target = target_dir / path.name
    if target.exists():  # never overwrite an earlier file of the same name
        target = target_dir / f"{path.stem}.{int(time.time())}{path.suffix}"
    if reason is not None:
        write_atomic(target.with_name(target.name + ".reason"), (reason + "\n").encode())
    os.replace(path, target)
