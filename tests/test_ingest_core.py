"""The socket-free ingest core on the real embedder, index and redactor."""

from __future__ import annotations

import pytest

from protocol.envelope import Envelope, new_envelope
from protocol.events import (
    ChatTurnCompleted,
    MemoryFailed,
    MemoryForgotten,
    MemorySkipped,
    MemoryStored,
)
from protocol.ingest_api import Forget

pytestmark = pytest.mark.model


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

    index = MemoryIndex(tmp_path / "memory")
    yield IngestCore(index, embedder)
    index.close()


class Log:
    """Collects what the core emits, and hands out seqs like the eventlog."""

    def __init__(self) -> None:
        self.events: list[Envelope] = []
        self.seq = 0

    def turn(self, text: str, assistant: str = "ok", **extra) -> Envelope:
        self.seq += 1
        body = ChatTurnCompleted(session_id="s", turn_index=self.seq, user_text=text,
                                 assistant_text=assistant, model="m", **extra)
        env = new_envelope(body, source="test")
        return Envelope(msg_id=env.msg_id, ts=env.ts, source="test", body=body, seq=self.seq)

    def emit(self, env: Envelope) -> int:
        self.events.append(env)
        return len(self.events)


def handle(core, log: Log, text: str, **extra):
    env = log.turn(text, **extra)
    core.handle(env, log.emit)
    return log.events[-1].body


def test_statement_about_user_is_stored_for_both_and_recalled(core):
    log = Log()
    event = handle(core, log, "My cat is called Miso and she is three years old.")
    assert isinstance(event, MemoryStored) and event.route == "both"
    memories, embed_ms, search_ms = core.recall("what is the name of my cat?", k=3)
    assert memories and "Miso" in memories[0].text
    assert embed_ms > 0 and search_ms >= 0


def test_pii_is_redacted_before_the_index(core):
    log = Log()
    event = handle(core, log, "My email is ada.lovelace@example.org and my phone is +44 20 7946 0958.")
    assert isinstance(event, MemoryStored)
    assert event.redactions.get("email") == 1
    text = core.index.get(event.memory_ids[0]).text
    assert "ada.lovelace" not in text and "7946" not in text and "[EMAIL]" in text


def test_opt_out_tags_are_honoured(core):
    log = Log()
    private = handle(core, log, "#private my bank PIN is 1234")
    no_train = handle(core, log, "I love spicy ramen #no-train")
    no_rag = handle(core, log, "My favourite colour is teal #no-rag")
    assert isinstance(private, MemorySkipped) and "private" in private.reason
    assert no_train.route == "rag" and "no-train" in no_train.tags
    assert no_rag.route == "lora"
    assert "#no-train" not in core.index.get(no_train.memory_ids[0]).text
    # lora-only memories are never recalled into a prompt
    assert all(m.memory_id not in no_rag.memory_ids for m in core.recall("favourite colour", k=5)[0])


def test_small_talk_and_duplicates_are_skipped(core):
    log = Log()
    assert isinstance(handle(core, log, "thanks!"), MemorySkipped)
    first = handle(core, log, "My sister Tove lives in Bergen.")
    again = handle(core, log, "my sister tove lives in   Bergen.")
    assert isinstance(first, MemoryStored)
    assert isinstance(again, MemorySkipped) and "duplicate" in again.reason


def test_handling_is_idempotent_by_seq(core):
    """A replay after a crash (same seq) neither stores twice nor emits a new decision."""
    log = Log()
    env = log.turn("I work at the lighthouse on Tuesdays.")
    core.handle(env, log.emit)
    core.handle(env, log.emit)
    assert len(log.events) == 1
    assert core.index.stats()["memories"] == 1
    assert core.cursor == env.seq


def test_code_goes_to_rag_verbatim(core):
    log = Log()
    event = handle(core, log, "def area(r):\n    return 3.14159 * r * r")
    assert event.route == "rag"
    assert core.index.get(event.memory_ids[0]).text.startswith("def area(r):\n    return")


def test_embedding_failure_becomes_a_failed_event_and_the_cursor_moves_on(core):
    class BrokenEmbedder:
        def embed(self, texts):
            raise RuntimeError("model file unreadable")

    core.embedder = BrokenEmbedder()
    log = Log()
    event = handle(core, log, "My bike is a red Peugeot.")
    assert isinstance(event, MemoryFailed) and event.stage == "embed"
    assert "unreadable" in event.detail
    assert core.cursor == 1


def test_long_turn_is_chunked(core):
    log = Log()
    text = " ".join(f"word{i}" for i in range(450))
    event = handle(core, log, text)
    assert isinstance(event, MemoryStored) and event.chunks >= 3
    assert [core.index.get(m).chunk for m in event.memory_ids] == list(range(event.chunks))


def test_forget_removes_the_memory_and_names_its_turn(core):
    from services.ingest.forget import forget

    log = Log()
    stored = handle(core, log, "My locker code is behind the blue door.")
    result = forget(core, Forget(match="blue door"), log.emit)
    forgotten = log.events[-1].body
    assert isinstance(forgotten, MemoryForgotten) and forgotten.turn_seqs == [stored.turn_seq]
    assert result.event_seq > 0
    assert core.index.get(stored.memory_ids[0]) is None
    assert all("blue door" not in m.text for m in core.recall("locker code", k=5)[0])


# -- recall by name, without the name in the index (services/lib/privacy/names.py) --------------------

@pytest.fixture
def named_core(tmp_path, embedder):
    from services.ingest.core import IngestCore
    from services.lib.memory.index import MemoryIndex
    from services.lib.privacy.names import NameKeys

    index = MemoryIndex(tmp_path / "memory")
    # The ingest.redact_names mode (names are kept by default since issue 12).
    yield IngestCore(index, embedder, names=NameKeys.open(tmp_path / "keys"), redact_names=True)
    index.close()


FILLER = ["My brother works as a paramedic in Leeds.", "My neighbour is a veterinarian who loves cats.",
          "My coworker always brings homemade pierogi on Fridays.", "My aunt lives on a farm with three goats.",
          "My friend plays cello in a community orchestra.", "My cousin is getting married in Porto.",
          "My accountant files my taxes every April."]


def test_a_redacted_name_is_recalled_by_name_and_stored_nowhere(named_core, tmp_path):
    log = Log()
    for text in FILLER:
        handle(named_core, log, text)
    told = handle(named_core, log, "My godson Maximilian loves dinosaurs, especially the triceratops.")
    assert isinstance(told, MemoryStored) and told.redactions.get("name") == 1
    stored = named_core.index.get(told.memory_ids[0])
    assert stored.text == "My godson [NAME] loves dinosaurs, especially the triceratops."

    memories, _, _ = named_core.recall("What is Maximilian obsessed with?", k=3)
    assert memories[0].memory_id == told.memory_ids[0] and memories[0].name_match, memories
    # The one [NAME] is shown as the query spells it: nothing the user did not just type.
    assert memories[0].text == "My godson Maximilian loves dinosaurs, especially the triceratops."
    assert not [m for m in memories[1:] if m.name_match]
    # The same index without the keys finds it only by meaning (or not at all): the keys did it.
    names, named_core.names = named_core.names, None
    plain, _, _ = named_core.recall("What is Maximilian obsessed with?", k=3)
    named_core.names = names
    assert not any(m.name_match for m in plain)
    assert all(m.score < memories[0].score for m in plain)

    # Two placeholders: which one is meant is unknown, so the text stays as stored.
    two = handle(named_core, log, "My aunt Ingrid and her husband Maximilian moved to Bergen.")
    both = [m for m in named_core.recall("Where does Ingrid live?", k=5)[0] if m.memory_id == two.memory_ids[0]]
    assert both and both[0].name_match and both[0].text == "My aunt [NAME] and her husband [NAME] moved to Bergen."

    # Neither a name nor an unkeyed hash of it is written anywhere under the index or the key dir.
    import hashlib

    named_core.index.save()
    for needle in ("Maximilian", "maximilian", "Ingrid", hashlib.sha256(b"maximilian").hexdigest()[:16]):
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert needle.encode() not in path.read_bytes(), (needle, path)


def test_forget_drops_the_name_keys_too(named_core):
    from services.ingest.forget import forget

    log = Log()
    for text in FILLER:
        handle(named_core, log, text)
    told = handle(named_core, log, "My sister Anna's birthday is March 14th.")
    assert named_core.recall("When is Anna's birthday?", k=1)[0][0].name_match
    forget(named_core, Forget(memory_ids=list(told.memory_ids)), log.emit)
    rows = named_core.index._db.execute("SELECT COUNT(*) FROM memory_names").fetchone()[0]
    assert rows == 0  # the filler names nobody; Anna's keys left with her memory
    assert not [m for m in named_core.recall("When is Anna's birthday?", k=5)[0] if m.name_match]
