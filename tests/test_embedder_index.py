"""One embedder per memory index: recorded, checked on open, and a rebuild up to a cursor.

No model here: a deterministic hashing embedder stands in (the real ones are
tested in tests/test_embed.py, the daemon's switch in the e2e tests).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from protocol.envelope import Envelope, new_envelope
from protocol.events import ChatTurnCompleted, MemoryForgotten
from services.common.paths import Paths
from services.lib.eventstore.store import EventStore
from services.lib.memory.index import (
    UNRECORDED_EMBEDDER,
    EmbedderMismatch,
    MemoryIndex,
    MemoryRecord,
    read_meta,
)

MINILM = "minilm:all-MiniLM-L6-v2"


class HashEmbedder:
    """Bag of hashed words: similar texts share dimensions; deterministic; fast."""

    def __init__(self, name: str = "hash", dim: int = 64) -> None:
        self.name, self.dim = name, dim
        self.identity = f"{name}:test-v1"
        self.description = f"hashing test embedder, {dim} dims"
        self.fallback_reason = ""

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()) or ["<empty>"]:
                out[i, int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _record(seq: int) -> MemoryRecord:
    return MemoryRecord(memory_id=f"m{seq}.0", seq=seq, route="rag", text=f"memory {seq}")


def test_a_new_index_records_its_embedder_and_refuses_another(tmp_path: Path) -> None:
    with MemoryIndex(tmp_path, dim=8, embedder="a:v1") as index:
        index.add([_record(1)], _unit(1, 8), meta={"cursor_seq": "1"})
        assert index.stats()["embedder"] == "a:v1"
    assert read_meta(tmp_path)["index.embedder"] == "a:v1"
    before = (tmp_path / "memories.db").read_bytes()
    with pytest.raises(EmbedderMismatch) as caught:
        MemoryIndex(tmp_path, dim=8, embedder="b:v1")
    assert caught.value.stored == "a:v1" and caught.value.wanted == "b:v1"
    assert "cannot be mixed" in str(caught.value) and "circ memory rebuild" in str(caught.value)
    with pytest.raises(ValueError, match="8-dimensional"):  # another width: refused the same way
        MemoryIndex(tmp_path, dim=16, embedder="a:v1")
    assert (tmp_path / "memories.db").read_bytes() == before, "a refused open must not write"
    with MemoryIndex(tmp_path, dim=8, embedder="a:v1") as index:  # the same embedder: fine
        assert index.get("m1.0") is not None
    with MemoryIndex(tmp_path, dim=8) as index:  # tools that do not say: not checked
        assert index.stats()["memories"] == 1


def test_an_index_from_before_embedders_were_recorded_is_minilm(tmp_path: Path) -> None:
    with MemoryIndex(tmp_path, dim=384) as index:  # what every index looked like before
        index.add([_record(1)], _unit(1, 384))
    assert "index.embedder" not in read_meta(tmp_path)
    assert UNRECORDED_EMBEDDER == MINILM
    with pytest.raises(EmbedderMismatch, match="all-MiniLM-L6-v2"):
        MemoryIndex(tmp_path, dim=384, embedder="chat-model:smollm2@x:mean-v1")
    with MemoryIndex(tmp_path, dim=384, embedder=MINILM) as index:
        assert index.get("m1.0") is not None
    assert read_meta(tmp_path)["index.embedder"] == MINILM  # recorded from now on


def test_read_meta_without_an_index(tmp_path: Path) -> None:
    assert read_meta(tmp_path / "nothing-here") == {}


def _turn(seq_hint: int, text: str) -> Envelope:
    body = ChatTurnCompleted(session_id="s", turn_index=seq_hint, user_text=text, assistant_text="ok", model="m")
    return new_envelope(body, source="chat")


@pytest.fixture
def logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    """A log of six turns and one forget of the third (a paste the rules send to RAG)."""
    monkeypatch.setenv("CIRCADIAN_MODELS", str(tmp_path / "models"))  # the test router's cache
    paths = Paths(tmp_path / "home").ensure()
    store = EventStore(paths.events_db)
    texts = ["My sister Ana lives in Lisbon and works as a nurse.",
             "My dog Bruno is a four year old beagle who loves the beach.",
             "The deploy script for project Quasar lives in tools/deploy.sh, run it with --prod.",
             "My favourite tea is a smoky lapsang souchong with a slice of lemon.",
             "Our team standup moved to 9:30 every Tuesday and Thursday morning.",
             "My grandmother grew up in a small village called Dorpvelde near the coast."]
    seqs = [r.seq for r in store.append_batch([_turn(i, t) for i, t in enumerate(texts)])]
    store.append_batch([new_envelope(MemoryForgotten(memory_ids=[f"m{seqs[2]}.0"], turn_seqs=[seqs[2]]),
                                     source="ingest")])
    store.close()
    return paths


def test_rebuild_up_to_a_cursor_records_the_embedder_and_stops_there(logged: Paths, tmp_path: Path) -> None:
    from services.ingest.rebuild import rebuild_index

    embedder = HashEmbedder()
    seen: list[tuple[int, int]] = []
    handled = rebuild_index(logged, tmp_path / "partial", embedder=embedder, until_seq=4,
                            on_event=lambda seq, head: seen.append((seq, head)))
    assert handled == 4 and seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    meta = read_meta(tmp_path / "partial")
    assert meta["cursor_seq"] == "4" and meta["index.embedder"] == embedder.identity and meta["index.dim"] == "64"
    with MemoryIndex(tmp_path / "partial", dim=64, embedder=embedder.identity) as index:
        seqs = {r.seq for r in index.list(limit=100)}
    # Nothing past the cursor; turn 3 is gone although its forget (seq 7) is past it too:
    # the log erased the turn's text when the forget was logged.
    assert max(seqs) <= 4 and 1 in seqs and 3 not in seqs

    handled = rebuild_index(logged, tmp_path / "full", embedder=embedder)
    assert handled == 7 and read_meta(tmp_path / "full")["cursor_seq"] == "7"
    with MemoryIndex(tmp_path / "full", dim=64, embedder=embedder.identity) as index:
        seqs = {r.seq for r in index.list(limit=100)}
        assert {1, 5, 6} <= seqs and 3 not in seqs and index.get("m3.0") is None
        hits = index.search(embedder.embed(["where does my sister Ana live?"])[0], 1)
        assert hits and hits[0].record.seq == 1


def test_an_interrupted_swap_is_undone(logged: Paths) -> None:
    from services.ingest.rebuild import recover_interrupted_swap

    assert recover_interrupted_swap(logged) == ""
    logged.memory.mkdir(parents=True, exist_ok=True)
    (logged.memory / "marker").write_text("old index")
    logged.memory.rename(logged.memory.with_name("memory.old-123"))  # cut between swap_in's two renames
    assert "memory.old-123" in recover_interrupted_swap(logged)
    assert (logged.memory / "marker").read_text() == "old index"


def test_an_index_from_before_name_keys_is_rebuilt_by_ingest(tmp_path: Path) -> None:
    import sqlite3

    with MemoryIndex(tmp_path / "full", dim=8, embedder="a:v1") as index:
        index.add([_record(1)], _unit(1, 8))
    with MemoryIndex(tmp_path / "empty", dim=8, embedder="a:v1"):
        pass
    for name in ("full", "empty"):  # what an index looked like before format 2
        conn = sqlite3.connect(tmp_path / name / "memories.db")
        conn.execute("DELETE FROM meta WHERE key = 'index.format'")
        conn.execute("DROP TABLE memory_names")
        conn.commit()
        conn.close()
    # Memories without name keys: the daemon (which names its embedder) must rebuild it.
    with pytest.raises(EmbedderMismatch, match=r"index format 1") as caught:
        MemoryIndex(tmp_path / "full", dim=8, embedder="a:v1")
    assert caught.value.wanted == "a:v1"
    with MemoryIndex(tmp_path / "full", dim=8) as index:  # tools still read it
        assert index.get("m1.0") is not None
    assert read_meta(tmp_path / "full").get("index.format") is None, "a tool must not mark it current"
    # Nothing in it to key: simply current.
    with MemoryIndex(tmp_path / "empty", dim=8, embedder="a:v1") as index:
        assert index.get_meta("index.format") == "2"


def test_a_rebuild_follows_the_logged_decisions_not_a_fresh_routing(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """What the daemon decided is what a rebuild remembers, whatever the router would say today."""
    from protocol.events import MemorySkipped, MemoryStored
    from services.ingest.rebuild import rebuild_index

    monkeypatch.setenv("CIRCADIAN_MODELS", str(tmp_path / "models"))
    paths = Paths(tmp_path / "home").ensure()
    store = EventStore(paths.events_db)
    texts = ["My sister Ana lives in Lisbon and works as a nurse.",
             "My dog Bruno is a four year old beagle who loves the beach.",
             "My favourite tea is a smoky lapsang souchong with a slice of lemon."]
    a, b, c = [r.seq for r in store.append_batch([_turn(i, t) for i, t in enumerate(texts)])]
    store.append_batch([  # the daemon decided the first two (the third: it died before deciding)
        new_envelope(MemoryStored(turn_seq=a, memory_ids=[f"m{a}.0"], route="rag", score=0.5, reason="logged"),
                     source="ingest", msg_id=f"mem-{a}"),
        new_envelope(MemorySkipped(turn_seq=b, reason="near duplicate of an earlier memory"),
                     source="ingest", msg_id=f"mem-{b}")])
    store.close()
    embedder = HashEmbedder()
    assert rebuild_index(paths, tmp_path / "rebuilt", embedder=embedder) == 3
    with MemoryIndex(tmp_path / "rebuilt", dim=64, embedder=embedder.identity) as index:
        assert index.get(f"m{a}.0").route == "rag"  # the logged route, not today's routing of it
        assert index.by_seq(b) == []  # skipped then, skipped now
        assert [r.route for r in index.by_seq(c)] != []  # undecided: routed as the daemon would
