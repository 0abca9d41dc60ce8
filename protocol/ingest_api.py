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


IngestRequest = Union[Recall, ListMemories, GetMemory, GetMemoryStats, Forget, ImportFile, Ping, EditMemory]
IngestReply = Union[Recalled, MemoryList, MemoryDetail, MemoryStats, ForgetResult, ImportResult, Pong, ErrorReply]
