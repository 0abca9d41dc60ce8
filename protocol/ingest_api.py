"""The ingest daemon's control socket (ROUTER ``ingest.ctl``).

Recall is on the chat path: chat asks for the top memories for each user turn
within a latency budget and answers without them if ingest is slow or down.
"""

from __future__ import annotations

from typing import Union

import msgspec

from protocol.service_api import ErrorReply, Ping, Pong

MAX_RECALL_K = 50


class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class Recall(_Msg, tag="recall", kw_only=True):
    """Find the ``k`` memories closest to ``query`` that may be recalled
    (route rag or both, not forgotten). ``min_score`` drops weak matches."""

    query: str
    k: int = 5
    min_score: float = 0.0
    request_id: str = ""


class RecalledMemory(msgspec.Struct, frozen=True, kw_only=True):
    memory_id: str
    # Cosine similarity to the query, plus a bonus (ingest's NAME_MATCH_BONUS) when
    # ``name_match``: the memory mentions a name the query names (matched by keyed hash).
    score: float
    text: str
    turn_seq: int
    ts: float
    route: str
    session_id: str = ""
    name_match: bool = False


class Recalled(_Msg, tag="recalled", kw_only=True):
    """Reply to :class:`Recall`, best first, with where the time went."""

    request_id: str
    memories: list[RecalledMemory]
    embed_ms: float = 0.0
    search_ms: float = 0.0


class ListMemories(_Msg, tag="list_memories", kw_only=True):
    """Page through stored memories, newest first."""

    limit: int = 20
    offset: int = 0
    request_id: str = ""


class MemoryInfo(msgspec.Struct, frozen=True, kw_only=True):
    memory_id: str
    turn_seq: int
    chunk: int
    ts: float
    route: str
    tags: list[str]
    text: str
    session_id: str = ""
    forgotten: bool = False
    # A later memory corrected this one (its id): kept and listed, never recalled.
    superseded_by: str = ""
    # An older near-duplicate this one was merged into by `circ memory compact` (then
    # ``superseded_by`` names it too): kept and listed, never recalled nor trained on.
    merged_into: str = ""


class MemoryList(_Msg, tag="memory_list", kw_only=True):
    request_id: str
    memories: list[MemoryInfo]
    total: int


class GetMemory(_Msg, tag="get_memory", kw_only=True):
    memory_id: str
    request_id: str = ""


class MemoryDetail(_Msg, tag="memory_detail", kw_only=True):
    request_id: str
    memory: MemoryInfo


class GetMemoryStats(_Msg, tag="get_memory_stats", kw_only=True):
    request_id: str = ""


class MemoryStats(_Msg, tag="memory_stats", kw_only=True):
    request_id: str
    memories: int
    forgotten: int
    by_route: dict[str, int]
    cursor_seq: int
    head_seq: int = 0
    index_bytes: int = 0


class Forget(_Msg, tag="forget", kw_only=True):
    """Forget memories by id, or every memory whose text contains ``match``
    (case-insensitive). With ``dry_run`` nothing changes and the reply lists
    what would be forgotten (the preview before confirmation)."""

    memory_ids: list[str] = []
    match: str = ""
    dry_run: bool = False
    request_id: str = ""


class EditMemory(_Msg, tag="edit_memory", kw_only=True):
    """Replace a live memory's text (`circ memory edit`). Sender: the CLI; ingest logs a
    ``memory.edited`` event, re-embeds the memory and answers with a MemoryDetail of the
    edited memory, or an ErrorReply (no such memory, empty or too long text)."""

    memory_id: str
    text: str
    request_id: str = ""


class ForgetResult(_Msg, tag="forget_result", kw_only=True):
    """Reply to :class:`Forget`: the memories (to be) forgotten; when not a
    dry run, the seq of the logged ``memory.forgotten`` event."""

    request_id: str
    memories: list[MemoryInfo]
    dry_run: bool
    event_seq: int = 0
    # Every logged turn whose text is (to be) erased: the memories' own turns,
    # turns skipped as their duplicates, and with ``match`` any turn whose
    # text contains it, remembered or not.
    turn_seqs: list[int] = []


class ImportFile(_Msg, tag="import_file", kw_only=True):
    """Import a conversation file (JSON lines of {"messages": [...]}) now."""

    path: str
    request_id: str = ""


class ImportResult(_Msg, tag="import_result", kw_only=True):
    request_id: str
    file: str
    turns: int
    first_seq: int = 0
    last_seq: int = 0


MAX_TRAINABLE_PAGE = 1000


class ListTrainable(_Msg, tag="list_trainable", kw_only=True):
    """The memories a night may train on, oldest first, after ``(after_seq, after_chunk)``.

    Sender: the trainer (building a night's dataset; ``count_only`` for its
    schedule check). Receiver: ingest, which owns the memory index. What is
    trainable: routed lora/both, not forgotten, not superseded by a later
    correction, not tagged #no-train. ``after_chunk`` -1 starts after every
    chunk of turn ``after_seq``. ``limit`` is 1..MAX_TRAINABLE_PAGE; ask again
    after the last memory of a page (its seq and chunk) while ``more`` is true.
    ``with_forgotten``: also send every forgotten memory id (no dataset or
    replay may hold one).
    """

    after_seq: int = 0
    after_chunk: int = -1
    limit: int = 500
    count_only: bool = False
    with_forgotten: bool = False
    request_id: str = ""


class TrainableMemory(msgspec.Struct, frozen=True, kw_only=True):
    """One trainable memory as ingest stored it (``text`` is redacted, never raw)."""

    memory_id: str
    seq: int
    chunk: int = 0
    session_id: str = ""
    ts: float = 0.0
    route: str = ""
    tags: list[str] = []
    text: str = ""
    text_sha256: str = ""


class TrainableList(_Msg, tag="trainable_list", kw_only=True):
    """Reply to :class:`ListTrainable`. ``total``: trainable memories after ``after_seq``
    (all pages); ``cursor_seq``: the last turn ingest has decided (later turns are not in
    the answer yet)."""

    request_id: str
    memories: list[TrainableMemory] = []
    more: bool = False
    total: int = 0
    forgotten_ids: list[str] = []
    cursor_seq: int = 0


class CompactMemories(_Msg, tag="compact_memories", kw_only=True):
    """Merge near-duplicate memories (`circ memory compact`).

    Sender: the CLI. Receiver: ingest, which compares every live, not superseded
    memory with every other (cosine of the stored vectors). Two memories of
    different turns whose similarity is at least ``threshold`` (0 < threshold
    <= 1; 0 means ingest's default, MIN_COMPACT_COSINE..1 is accepted) are
    merged when the older one's route covers the newer one's (same route, or
    the older is ``both``) and the newer adds no word of fact to it
    (services/ingest/compact.py): the older is kept, the newer is marked superseded
    by it (kept, listed as merged, never recalled nor trained on; nothing is
    deleted). For each kept memory ingest first logs one ``memory.merged``
    event, then applies it. With ``dry_run`` nothing is logged or changed and
    the reply lists what would be merged. Reply: :class:`CompactResult`, or an
    ErrorReply (threshold out of range).
    """

    threshold: float = 0.0
    dry_run: bool = False
    request_id: str = ""


MIN_COMPACT_COSINE = 0.8


class MergedMemory(msgspec.Struct, frozen=True, kw_only=True):
    """One memory folded into a kept one, with its cosine similarity to it."""

    memory_id: str
    score: float
    text: str = ""


class MemoryMerge(msgspec.Struct, frozen=True, kw_only=True):
    """A kept memory and the near-duplicates merged into it (newest last)."""

    kept: MemoryInfo
    merged: list[MergedMemory]
    event_seq: int = 0  # the logged memory.merged (0 in a dry run)


class CompactResult(_Msg, tag="compact_result", kw_only=True):
    """Reply to :class:`CompactMemories`: the merges done (or, with ``dry_run``, that
    would be done) at ``threshold``, and how many memories were compared."""

    request_id: str
    merges: list[MemoryMerge]
    threshold: float
    dry_run: bool
    compared: int = 0


IngestRequest = Union[Recall, ListMemories, GetMemory, GetMemoryStats, Forget, ImportFile, Ping, EditMemory,
                      ListTrainable, CompactMemories]
IngestReply = Union[Recalled, MemoryList, MemoryDetail, MemoryStats, ForgetResult, ImportResult, Pong, ErrorReply,
                    TrainableList, CompactResult]
