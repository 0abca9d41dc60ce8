"""Issue 12, part 7: long pastes are chunked with overlap, near duplicates are merged by compact.

The splitter alone (pure Python), then the ingest core on the real embedder, SQLite index,
redactor and router rules: a long paste's chunks keep the turn's id, timestamp and tags;
`compact` keeps the oldest memory, marks the newer near duplicate superseded (not recalled,
not trained on, nothing deleted), logs memory.merged before applying it, and a rebuild-style
replay of that event gives the same index.
"""

from __future__ import annotations

import random

import pytest

from protocol.envelope import Envelope, new_envelope
from protocol.events import ChatTurnCompleted, MemoryMerged, MemoryStored
from services.lib.memory.split import split_paste

PASTE_SENTENCES = [
    "The meeting started with a review of last quarter's numbers, which came in slightly under forecast.",
    "Revenue from the subscription tier grew by eight percent, mostly driven by the annual plan.",
    "Support tickets about login problems doubled after the identity provider change.",
    "The team agreed to freeze new features for two weeks and focus on reliability work.",
    "Action item: write a postmortem for the outage on Tuesday and share it before Friday.",
    "Several customers asked for a way to export their data as CSV rather than PDF.",
    "The history of the canal goes back to the early nineteenth century, when it carried coal and grain.",
    "Most of the locks were rebuilt in stone after a flood destroyed the original wooden gates.",
    "Researchers measured water quality at twelve points along the route over three years.",
    "After the cutover, nightly jobs finished in forty minutes instead of three hours.",
]


def notes(seed: int, n_sentences: int = 40) -> str:
    rnd = random.Random(seed)
    picked = [rnd.choice(PASTE_SENTENCES) for _ in range(n_sentences)]
    return "Notes from today:\n\n" + "\n\n".join(" ".join(picked[i:i + 4]) for i in range(0, len(picked), 4))


def _overlap(previous: str, chunk: str) -> int:
    return next((k for k in range(min(len(previous), len(chunk)), 0, -1) if previous.endswith(chunk[:k])), 0)


# -- the splitter ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_a_long_paste_becomes_overlapping_chunks_cut_at_sentence_ends(seed):
    text = notes(seed)
    chunks = split_paste(text)
    assert len(chunks) >= 3
    for i, chunk in enumerate(chunks):
        assert chunk in text  # a slice of the paste: its newlines kept
        assert len(chunk) <= 1000
        if i < len(chunks) - 1:
            assert len(chunk) >= 512
            assert chunk.endswith((".", ":")), chunk[-40:]  # at a sentence (or the intro's) end
        if i:
            shared = _overlap(chunks[i - 1], chunk)
            assert 0.10 <= shared / len(chunks[i - 1]) <= 0.20, (i, shared)
            # The overlap starts at a sentence where one starts in that window, else at a word.
            assert chunks[i - 1][-shared - 1].isspace()
    assert text.startswith(chunks[0]) and text.endswith(chunks[-1])


def test_text_without_sentence_ends_is_cut_at_words_and_still_overlaps():
    text = " ".join(f"token{i}" for i in range(600))
    chunks = split_paste(text)
    assert all(len(c) <= 1000 for c in chunks) and len(chunks) >= 4
    assert all(not c.startswith(" ") and c.split()[0] in text.split() for c in chunks)  # whole words
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert 0.10 <= _overlap(a, b) / len(a) <= 0.20


def test_short_text_is_one_chunk_and_blank_text_none():
    assert split_paste("  a short note\n") == ["a short note"]
    assert split_paste(" \n ") == []
    with pytest.raises(ValueError):
        split_paste("x", max_chars=100, min_chars=200)


def test_an_abbreviation_is_no_sentence_end():
    body = "I met Dr. Lee at St. Olaf hospital on the ward rounds today. " * 30
    for chunk in split_paste(body)[1:]:
        assert not chunk.startswith(("Lee", "Olaf"))


# -- what ingest makes of it -----------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder():
    from services.common.blas import preload_openblas

    preload_openblas()
    from services.ingest.embed import Embedder

    return Embedder()


@pytest.fixture
def core(tmp_path, embedder):
    from services.ingest.core import IngestCore
    from services.lib.memory.index import MemoryIndex

    core = IngestCore(MemoryIndex(tmp_path / "memory"), embedder)
    yield core
    core.index.close()


class Day:
    def __init__(self, core) -> None:
        self.core, self.seq, self.events = core, 0, []

    def say(self, text: str, ts: float | None = None):
        self.seq += 1
        body = ChatTurnCompleted(session_id="s1", turn_index=self.seq, user_text=text, assistant_text="ok",
                                 model="m")
        env = new_envelope(body, source="test")
        self.core.handle(Envelope(msg_id=env.msg_id, ts=ts or env.ts, source="test", body=body, seq=self.seq),
                         self.events.append)
        return self.events[-1].body


@pytest.mark.model
def test_each_chunk_of_a_long_paste_keeps_its_turn_id_timestamp_and_tags(core):
    day = Day(core)
    day.say("My dog is called Biscuit.")
    paste = notes(7) + "\n\n#no-train"
    event = day.say(paste, ts=1764165600.5)
    assert isinstance(event, MemoryStored) and event.chunks >= 3 and event.route == "rag"  # #no-train
    records = [core.index.get(mid) for mid in event.memory_ids]
    assert [r.chunk for r in records] == list(range(event.chunks))
    for r in records:
        assert (r.seq, r.ts, r.tags, r.session_id) == (2, 1764165600.5, ["no-train"], "s1")
        assert 0 < len(r.text) <= 1000 and "#no-train" not in r.text
    assert records[0].text.startswith("Notes from today:")
    memories, _, _ = core.recall("what did the researchers measure along the canal?", k=3)
    assert memories[0].turn_seq == 2


@pytest.mark.model
def test_a_long_turn_of_personal_statements_stays_one_memory_per_sentence(core):
    text = ("My name is Priya and I have lived in Bristol for eleven years, ever since I finished my nursing "
            "degree at the university there. I work as a nurse at St. Olaf hospital, mostly night shifts on the "
            "children's ward, which I love even though the hours are hard on my sleep. My dog is called "
            "Biscuit and he is a scruffy terrier who came from a rescue centre near Bath when he was two. My "
            "partner Sam teaches chemistry at a secondary school and we are saving up to buy a small house with "
            "a garden for Biscuit. My mother lives in Leeds and I visit her every second weekend by train, "
            "which takes about four hours each way if the connections work. I started learning the cello last "
            "autumn because my grandfather played it, and I practise for half an hour most mornings before "
            "work. Our neighbours Tom and Ada have two cats that sit on our garden wall and stare at Biscuit "
            "through the kitchen window every evening, which drives him completely mad. My best friend Jo runs "
            "a small bakery in Clifton and gives me the leftover sourdough on Saturday afternoons.")
    assert len(text) > 1000
    event = Day(core).say(text)
    texts = [core.index.get(mid).text for mid in event.memory_ids]
    assert len(texts) == 8 and texts[0].startswith("My name is Priya") and texts[-1].startswith("My best friend")


# -- compact -----------------------------------------------------------------------------------


@pytest.mark.model
def test_compact_keeps_the_oldest_and_marks_the_newer_near_duplicate_merged(core):
    from protocol.ingest_api import CompactMemories, CompactResult
    from services.ingest.compact import apply_merged, compact
    from services.ingest.forget import get_memory, list_memories

    day = Day(core)
    old = day.say("My cousin Beatriz is getting married in Porto in September.")
    other = day.say("My cousin Beatriz is getting married in Lisbon in June.")
    again = day.say("Remember that my cousin Beatriz is getting married in Porto in September.")
    # Below the live check (0.97): ingest stored it; compact's threshold (0.90) merges it.
    assert isinstance(again, MemoryStored), again
    [old_id], [other_id], [again_id] = old.memory_ids, other.memory_ids, again.memory_ids

    logged: list = []
    preview = compact(core, CompactMemories(dry_run=True), lambda env: logged.append(env) or len(logged))
    assert isinstance(preview, CompactResult) and preview.dry_run and not logged
    assert [(m.kept.memory_id, [x.memory_id for x in m.merged]) for m in preview.merges] == [(old_id, [again_id])]
    assert core.index.superseded() == {}  # a dry run changes nothing

    done = compact(core, CompactMemories(), lambda env: logged.append(env) or len(logged))
    [merge] = done.merges
    assert merge.kept.memory_id == old_id and 0.90 <= merge.merged[0].score < 0.97 and merge.event_seq == 1
    [event] = [env.body for env in logged]
    assert isinstance(event, MemoryMerged) and (event.kept_id, event.merged_ids) == (old_id, [again_id])
    assert event.scores == [merge.merged[0].score] and event.threshold == 0.90

    # Kept, listed as merged, never recalled nor trained on; the different fact is untouched.
    assert core.index.get(again_id) is not None
    info = get_memory(core, again_id)
    assert info.merged_into == old_id and info.superseded_by == old_id
    listed = {m.memory_id: m for m in list_memories(core, 20, 0)[0]}
    assert listed[again_id].merged_into == old_id and not listed[other_id].merged_into
    recalled = [m.memory_id for m in core.recall("where is Beatriz getting married?", k=5)[0]]
    assert again_id not in recalled and old_id in recalled and other_id in recalled
    assert again_id not in {r.memory_id for r in core.index.trainable()}

    assert apply_merged(core, event) == 0  # the consumer's replay: a no-op
    assert compact(core, CompactMemories(), lambda env: 0).merges == []  # nothing left to merge


@pytest.mark.model
def test_compact_never_merges_a_different_value_a_paste_with_itself_or_across_routes(core):
    from protocol.ingest_api import CompactMemories, CompactResult
    from protocol.service_api import ErrorReply
    from services.ingest.compact import compact

    day = Day(core)
    day.say("At work, the Cirrus project is due at the end of October.")
    day.say("At work, the Cirrus project is due at the end of August.")  # a different fact, cosine ~0.97
    day.say("\n".join(f"2025-03-01 12:00:{i:02d} INFO worker-1 job finished id=1 took=5ms" for i in range(60)))
    day.say("I finally fixed the squeaky door in the hallway.")
    day.say("I finally fixed the squeaky door in the kitchen.")
    reply = compact(core, CompactMemories(threshold=0.8), lambda env: 0)
    assert isinstance(reply, CompactResult) and reply.merges == [], reply.merges
    for bad in (0.5, 1.5, float("nan")):
        assert isinstance(compact(core, CompactMemories(threshold=bad), lambda env: 0), ErrorReply)


@pytest.mark.model
def test_replaying_memory_merged_into_a_fresh_index_gives_the_same_index(tmp_path, core, embedder):
    """What `circ memory rebuild` does: the turns, then the logged memory.merged, in seq order."""
    from protocol.ingest_api import CompactMemories
    from services.ingest.compact import apply_merged, compact
    from services.ingest.core import IngestCore
    from services.lib.memory.index import MemoryIndex

    turns = ["My stepbrother Rafael is training for the Berlin marathon.",
             "Oh, and my stepbrother Rafael is training for the Berlin marathon.",
             "We take the dog to the vet on Fridays."]
    day = Day(core)
    for text in turns:
        day.say(text)
    logged: list = []
    compact(core, CompactMemories(), lambda env: logged.append(env) or len(logged))
    assert core.index.superseded()  # something was merged

    fresh = IngestCore(MemoryIndex(tmp_path / "rebuilt"), embedder)
    try:
        replay = Day(fresh)
        for text in turns:
            replay.say(text)
        for env in logged:
            apply_merged(fresh, env.body)
        assert fresh.index.superseded() == core.index.superseded()
        query = "what is Rafael training for?"
        assert [m.memory_id for m in fresh.recall(query, k=3)[0]] == [m.memory_id for m in core.recall(query, k=3)[0]]
    finally:
        fresh.index.close()


@pytest.mark.model
def test_forgetting_the_kept_memory_forgets_what_was_merged_into_it_but_not_what_it_corrected(core):
    from protocol.ingest_api import CompactMemories, Forget
    from services.ingest.compact import compact
    from services.ingest.forget import forget

    day = Day(core)
    [leeds] = day.say("We live in Leeds.").memory_ids
    [bristol] = day.say("Actually, we moved from Leeds to Bristol.").memory_ids
    [porto] = day.say("My cousin Beatriz is getting married in Porto in September.").memory_ids
    [again] = day.say("Remember that my cousin Beatriz is getting married in Porto in September.").memory_ids
    compact(core, CompactMemories(), lambda env: 0)
    assert core.index.superseded() == {leeds: bristol, again: porto}
    previews = {mid: forget(core, Forget(memory_ids=[mid], dry_run=True), lambda env: 0) for mid in (porto, bristol)}
    assert {m.memory_id for m in previews[porto].memories} == {porto, again}
    assert {m.memory_id for m in previews[bristol].memories} == {bristol}
