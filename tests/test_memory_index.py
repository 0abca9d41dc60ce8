"""The vector memory (services.lib.memory.index): real SQLite, real usearch, on disk.

SQLite is the truth and vectors.usearch a cache of it: these tests check the
cache is repaired or rebuilt whenever it disagrees, that a forgotten memory
leaves no text or vector in any file, and that a caller's cursor moves in the
same transaction as its memories. The retrieval check at the end uses the
real embedder (marked ``model``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from services.lib.memory.index import (
    DB_NAME,
    VECTORS_NAME,
    MemoryIndex,
    MemoryRecord,
    chunk_text,
    text_sha256,
)

DIM = 384


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def vectors() -> np.ndarray:
    return unit(np.random.default_rng(7).standard_normal((40, DIM)))


def record(i: int, text: str | None = None, **fields: object) -> MemoryRecord:
    values = {"memory_id": f"m{i}.0", "seq": i, "session_id": "s1", "ts": 1000.0 + i, "route": "rag",
              "tags": ["work"], "text": text if text is not None else f"memory number {i}"}
    values.update(fields)
    return MemoryRecord(**values)  # type: ignore[arg-type]


def filled(directory: Path, vectors: np.ndarray, n: int = 20) -> MemoryIndex:
    index = MemoryIndex(directory)
    index.add([record(i) for i in range(n)], vectors[:n], meta={"cursor_seq": str(n - 1)})
    return index


def answers(index: MemoryIndex, queries: np.ndarray, k: int = 5) -> list[list[str]]:
    return [[h.memory_id for h in index.search(q, k)] for q in queries]


def raw_bytes(directory: Path) -> bytes:
    """Every byte of the database files (db, WAL, shared memory) and the vector file."""
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


# ---------------------------------------------------------------- add / search


def test_add_and_search_find_the_nearest(tmp_path: Path, vectors: np.ndarray) -> None:
    index = filled(tmp_path, vectors)
    assert index.status.action == "created"
    hits = index.search(vectors[3], 5)
    assert [h.memory_id for h in hits][0] == "m3.0" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    assert hits[0].record == record(3, text_sha256=text_sha256("memory number 3"))
    assert len(index.search(vectors[3], 100)) == 20  # k beyond the count: all of them
    assert index.search(vectors[3], 0) == []
    noisy = unit(vectors[5:6] + 0.02 * np.random.default_rng(1).standard_normal((1, DIM)))[0]
    assert index.search(noisy, 1)[0].memory_id == "m5.0"


def test_add_is_idempotent_by_memory_id(tmp_path: Path, vectors: np.ndarray) -> None:
    index = filled(tmp_path, vectors)
    assert index.add([record(i) for i in range(20)], vectors[:20]) == 0
    # A replay with other vectors or text changes nothing either; new ids are added.
    assert index.add([record(3, text="changed"), record(30)], vectors[[9, 30]]) == 1
    assert index.get("m3.0").text == "memory number 3"
    assert index.search(vectors[3], 1)[0].memory_id == "m3.0"
    # The same id twice in one call is stored once, with the first vector.
    assert index.add([record(31), record(31, text="second")], vectors[[31, 32]]) == 1
    assert index.get("m31.0").text == "memory number 31"
    assert index.search(vectors[31], 1)[0].memory_id == "m31.0"
    assert index.stats()["memories"] == 22 == index.stats()["indexed"]


def test_meta_moves_in_the_same_transaction_as_the_rows(tmp_path: Path, vectors: np.ndarray) -> None:
    index = filled(tmp_path, vectors)
    assert index.get_meta("cursor_seq") == "19" and index.get_meta("absent") is None
    # A row that fails half-way (tags that are not JSON) rolls back the rows and the cursor.
    bad = record(21, tags=[object()])
    with pytest.raises(TypeError):
        index.add([record(20), bad], vectors[20:22], meta={"cursor_seq": "21"})
    assert index.get_meta("cursor_seq") == "19" and index.get("m20.0") is None
    assert index.stats()["memories"] == 20 == index.stats()["indexed"]
    # A skipped turn has no records: only the cursor moves.
    assert index.add([], None, meta={"cursor_seq": "22"}) == 0
    index.set_meta("other", "x")
    index.close()
    reopened = MemoryIndex(tmp_path)
    assert reopened.get_meta("cursor_seq") == "22" and reopened.get_meta("other") == "x"


def test_bad_vectors_are_refused_before_anything_is_written(tmp_path: Path, vectors: np.ndarray) -> None:
    index = MemoryIndex(tmp_path)
    for bad in (vectors[:2, :10], vectors[:1], np.zeros((2, DIM)), np.full((2, DIM), np.nan), None):
        with pytest.raises(ValueError):
            index.add([record(1), record(2)], bad, meta={"cursor_seq": "2"})
    assert index.get_meta("cursor_seq") is None and index.stats()["memories"] == 0


def test_duplicates_exact_by_hash_and_near_by_vector(tmp_path: Path, vectors: np.ndarray) -> None:
    index = filled(tmp_path, vectors)
    assert index.has_text(text_sha256("memory number 4")) and not index.has_text(text_sha256("nope"))
    index.add([record(25, text_sha256="caller-key")], vectors[25:26])
    assert index.has_text("caller-key")  # the caller's own duplicate key is stored as given
    near = unit(vectors[7:8] + 0.01 * np.random.default_rng(2).standard_normal((1, DIM)))[0]
    duplicate = index.find_duplicate(near, threshold=0.97)
    assert duplicate is not None and duplicate.memory_id == "m7.0" and duplicate.score >= 0.97
    assert index.find_duplicate(vectors[35]) is None  # a random direction is nobody's duplicate
    assert MemoryIndex(tmp_path / "empty").find_duplicate(vectors[0]) is None


def test_get_list_by_seq_find_text_and_stats(tmp_path: Path, vectors: np.ndarray) -> None:
    index = filled(tmp_path, vectors, n=5)
    index.add([record(9, text="Long turn, part one", chunk=0, memory_id="m9.0", route="both"),
               record(9, text="part two: 100% of_it", chunk=1, memory_id="m9.1", route="both")],
              vectors[9:11])
    assert index.get("m9.1").chunk == 1 and index.get("nope") is None
    assert [r.memory_id for r in index.list(limit=3)] == ["m9.0", "m9.1", "m4.0"]
    assert [r.memory_id for r in index.list(limit=2, offset=2)] == ["m4.0", "m3.0"]
    assert [r.memory_id for r in index.by_seq(9)] == ["m9.0", "m9.1"]
    assert [r.memory_id for r in index.find_text("PART")] == ["m9.0", "m9.1"]
    assert [r.memory_id for r in index.find_text("100% of_")] == ["m9.1"]  # LIKE wildcards are literal
    assert index.find_text("0%") == [r for r in index.find_text("100%")]
    stats = index.stats()
    assert stats["memories"] == 7 and stats["forgotten"] == 0 and stats["by_route"] == {"rag": 5, "both": 2}
    assert stats["bytes"] > 0 and stats["dim"] == DIM


def test_dimension_mismatch_is_refused(tmp_path: Path) -> None:
    MemoryIndex(tmp_path, dim=8).close()
    with pytest.raises(ValueError, match="8-dimensional"):
        MemoryIndex(tmp_path, dim=DIM)


# ---------------------------------------------------------------- forget


def test_forget_erases_text_and_vector_from_every_file(tmp_path: Path, vectors: np.ndarray) -> None:
    secret = "my locker code is ZEBRA-4471 " + "and nobody may know it " * 300  # overflows a page
    index = filled(tmp_path, vectors)
    index.add([record(30, text=secret)], vectors[30:31])
    index.save()
    index._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the text is now in the main db file too
    vector_bytes = vectors[30].tobytes()
    assert b"ZEBRA-4471" in raw_bytes(tmp_path) and vector_bytes in raw_bytes(tmp_path)

    assert index.forget(["m30.0", "m3.0", "no-such-id"]) == 2
    assert index.forget(["m30.0"]) == 0  # already gone
    assert "m30.0" not in [h.memory_id for h in index.search(vectors[30], 20)]
    assert index.get("m30.0") is None and not index.has_text(text_sha256(secret))
    tombstone = index.get("m30.0", include_forgotten=True)
    assert tombstone is not None and tombstone.forgotten and tombstone.text == "" and tombstone.tags == []
    assert tombstone.seq == 30  # kept for the audit trail, and so a replay is not stored again
    assert index.add([record(30, text=secret)], vectors[30:31]) == 0
    assert index.find_text("ZEBRA") == []

    data = raw_bytes(tmp_path)
    assert b"ZEBRA-4471" not in data and b"nobody may know" not in data
    assert vector_bytes not in data and vectors[3].tobytes() not in data
    assert text_sha256(secret).encode() not in data
    stats = index.stats()
    assert stats["memories"] == 19 and stats["forgotten"] == 2 and stats["indexed"] == 19
    index.close()
    assert b"ZEBRA-4471" not in raw_bytes(tmp_path)


def test_repeated_forgets_leave_no_vector_in_the_cache_file(tmp_path: Path, vectors: np.ndarray) -> None:
    # usearch keeps removed vectors in free slots; each forget must scrub all of them.
    index = filled(tmp_path, vectors, n=30)
    for batch in (["m1.0"], ["m2.0", "m5.0"], ["m8.0"]):
        index.forget(batch)
        index.add([record(40 + len(batch))], vectors[30 + len(batch):31 + len(batch)])
        index.save()
    saved = (tmp_path / VECTORS_NAME).read_bytes()
    for i in (1, 2, 5, 8):
        assert vectors[i].tobytes() not in saved
    assert vectors[9].tobytes() in saved  # live vectors are (of course) still there
    assert answers(index, vectors[9:12], 3) == answers(MemoryIndex(tmp_path), vectors[9:12], 3)


def test_search_can_see_forgotten_rows_only_when_asked(tmp_path: Path, vectors: np.ndarray) -> None:
    index = filled(tmp_path, vectors)
    # Another writer marks a row forgotten behind the cache's back.
    with sqlite3.connect(tmp_path / DB_NAME) as other:
        other.execute("UPDATE memories SET forgotten = 1 WHERE memory_id = 'm6.0'")
    assert "m6.0" not in [h.memory_id for h in index.search(vectors[6], 5)]
    shown = index.search(vectors[6], 5, exclude_forgotten=False)
    assert shown[0].memory_id == "m6.0" and shown[0].record.forgotten


# ---------------------------------------------------------------- the cache on disk


def test_reopen_loads_the_saved_cache_with_the_same_answers(tmp_path: Path, vectors: np.ndarray) -> None:
    index = filled(tmp_path, vectors)
    index.save()
    before = answers(index, vectors[:20])
    index.close()
    reopened = MemoryIndex(tmp_path)
    assert reopened.status.action == "loaded", reopened.status
    assert answers(reopened, vectors[:20]) == before
    assert reopened.get_meta("cursor_seq") == "19"


@pytest.mark.parametrize("damage", ["delete", "corrupt", "truncate", "garbage", "unsaved_checksum"])
def test_a_damaged_cache_is_rebuilt_from_sqlite(tmp_path: Path, vectors: np.ndarray, damage: str) -> None:
    index = filled(tmp_path, vectors)
    index.save()
    before = answers(index, vectors[:20])
    index.close()
    path = tmp_path / VECTORS_NAME
    data = bytearray(path.read_bytes())
    if damage == "delete":
        path.unlink()
    elif damage == "corrupt":  # flip bytes inside the vectors: still parses, wrong numbers
        data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[:len(data) // 3]))
    elif damage == "garbage":
        path.write_bytes(b"not an index at all" * 100)
    else:  # a crash between the rename and the checksum's commit
        with sqlite3.connect(tmp_path / DB_NAME) as other:
            other.execute("DELETE FROM meta WHERE key = 'index.file_sha256'")
    reopened = MemoryIndex(tmp_path)
    assert reopened.status.action == "rebuilt", reopened.status
    assert VECTORS_NAME in reopened.status.reason
    assert answers(reopened, vectors[:20]) == before
    reopened.save()
    reopened.close()
    assert MemoryIndex(tmp_path).status.action == "loaded"


def test_a_stale_cache_is_repaired_without_a_rebuild(tmp_path: Path, vectors: np.ndarray) -> None:
    index = filled(tmp_path, vectors)
    index.save()
    index.add([record(i) for i in range(20, 25)], vectors[20:25])  # never saved: a crash
    index.close()
    reopened = MemoryIndex(tmp_path)
    assert reopened.status.action == "repaired" and "added 5" in reopened.status.reason
    assert [reopened.search(vectors[i], 1)[0].memory_id for i in range(25)] == [f"m{i}.0" for i in range(25)]
    # Rows forgotten behind the saved file's back are removed from it on open.
    reopened.save()
    reopened.close()
    with sqlite3.connect(tmp_path / DB_NAME) as other:
        other.execute("UPDATE memories SET forgotten = 1, vector = NULL WHERE memory_id = 'm2.0'")
    again = MemoryIndex(tmp_path)
    assert again.status.action == "repaired" and "removed 1" in again.status.reason
    assert "m2.0" not in [h.memory_id for h in again.search(vectors[2], 25)]


def test_forget_saves_the_cache_itself(tmp_path: Path, vectors: np.ndarray) -> None:
    index = filled(tmp_path, vectors)
    index.save()
    index.forget(["m4.0"])
    index.close()  # no save(): forget already wrote the file without the vector
    assert vectors[4].tobytes() not in (tmp_path / VECTORS_NAME).read_bytes()
    reopened = MemoryIndex(tmp_path)
    assert reopened.status.action == "loaded"
    assert "m4.0" not in [h.memory_id for h in reopened.search(vectors[4], 20)]


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path, vectors: np.ndarray) -> None:
    index = filled(tmp_path, vectors)
    index.save()
    index.save()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert {p.name for p in tmp_path.iterdir()} >= {DB_NAME, VECTORS_NAME}


# ---------------------------------------------------------------- chunking


def test_chunking_windows_overlap_and_cover_every_word() -> None:
    words = [f"w{i}" for i in range(450)]
    chunks = chunk_text(" ".join(words), max_words=200, overlap_words=40)
    split = [c.split() for c in chunks]
    assert [len(s) for s in split] == [200, 200, 130]
    assert split[0][-40:] == split[1][:40] and split[1][-40:] == split[2][:40]
    assert split[0][0] == "w0" and split[-1][-1] == "w449"


def test_chunking_short_blank_exact_and_formatting() -> None:
    assert chunk_text("  one short turn\n") == ["one short turn"]
    assert chunk_text("   \n ") == []
    exactly = " ".join(["x"] * 200)
    assert chunk_text(exactly) == [exactly]
    assert len(chunk_text(" ".join(["x"] * 201))) == 2
    text = "line one\n\n" + " ".join(f"w{i}" for i in range(300))
    assert chunk_text(text)[0].startswith("line one\n\nw0")  # a slice of the original text
    with pytest.raises(ValueError):
        chunk_text("a b", max_words=10, overlap_words=10)


# ---------------------------------------------------------------- retrieval with the real model

FACTS = [
    ("My sister Ana lives in Lisbon and works as a pediatric nurse.", "Where does my sister live?"),
    ("I'm allergic to penicillin, I found out when I was a kid.", "Which medicine am I allergic to?"),
    ("My dog Biscuit is a three-year-old beagle who hates thunderstorms.", "What breed is my dog?"),
    ("I started learning the cello last September, lessons are on Thursdays.",
     "What instrument am I learning to play?"),
    ("My flight to Tokyo leaves on March 14th from Frankfurt.", "When do I fly to Japan?"),
    ("I switched jobs and now work as a data engineer at a logistics company.", "What is my job now?"),
    ("My favourite dish is my grandmother's mushroom risotto.", "What food do I like best?"),
    ("I run the Porto half marathon every October.", "Which race do I run each autumn?"),
    ("The rent for our apartment went up to 1,450 euros a month.", "How much do we pay for housing?"),
    ("My daughter Mia turns seven on the 2nd of June.", "When is my daughter's birthday?"),
]
DISTRACTORS = [
    "I watched a documentary about deep sea creatures last night.",
    "Can you explain how a hash map works?",
    "The weather has been rainy all week.",
    "Remind me to buy milk and eggs.",
    "What's a good recipe for banana bread?",
    "I think the new phone update drains the battery.",
    "My colleague recommended a book about habits.",
    "How do I convert Celsius to Fahrenheit?",
    "I spent the afternoon cleaning the garage.",
    "Tell me a joke about programmers.",
    "We had pizza for dinner on Friday.",
    "My brother is thinking about buying a motorbike.",
    "I went to a jazz concert in the park.",
    "The train to work was late again this morning.",
    "My neighbour's cat keeps sitting on our balcony.",
    "I need to renew my passport before it expires.",
    "Electricity prices have gone up a lot this winter.",
    "I tried yoga for the first time and my back hurts.",
    "What is the capital of Australia?",
    "Our team shipped the new dashboard yesterday.",
    "I'm reading a novel set in nineteenth century Russia.",
    "How many ounces are in a pound?",
    "My friend Carlos just moved to Berlin.",
    "The dentist appointment moved to next week.",
    "I planted tomatoes and basil on the balcony.",
    "Can you summarize the plot of Hamlet?",
    "I prefer tea over coffee in the mornings.",
    "The printer at the office is broken again.",
    "I'm saving up for a new laptop.",
    "My parents celebrated their fortieth wedding anniversary.",
]


@pytest.mark.model
def test_retrieval_of_facts_among_distractors(tmp_path: Path) -> None:
    from services.ingest.embed import Embedder

    embedder = Embedder()
    texts = [fact for fact, _ in FACTS] + DISTRACTORS
    index = MemoryIndex(tmp_path)
    index.add([record(i, text=t) for i, t in enumerate(texts)], embedder.embed(texts))
    queries = embedder.embed([q for _, q in FACTS])
    ranks = []
    for i, query in enumerate(queries):
        ids = [h.memory_id for h in index.search(query, 5)]
        ranks.append(ids.index(f"m{i}.0") + 1 if f"m{i}.0" in ids else None)
    recall_1 = sum(r == 1 for r in ranks) / len(FACTS)
    recall_5 = sum(r is not None for r in ranks) / len(FACTS)
    print(f"\nretrieval: recall@1 {recall_1:.2f} recall@5 {recall_5:.2f} ranks {ranks}")
    assert recall_5 >= 0.9 and recall_1 >= 0.7, ranks
