"""Golden samples of every logged event: one hand-written Envelope per type.

Run ``python tests/golden/make_golden.py`` once after adding an event type to
``protocol.events``: it writes ``v1/<tag>.msgpack`` for samples that have no
file yet and never overwrites one. The files are the log's memory of how
events looked when they were first written: ``tests/test_golden.py`` decodes
them with today's code forever. If a golden file stops decoding, the protocol
broke its evolution rules (DESIGN.md, "Protocol"); fix the protocol, never the
file.

Every field that existed when a sample was written is given explicitly, so
a later change of a default shows up as a mismatch instead of passing
unnoticed; fields added later decode to their defaults (see test_golden).
Before anything is logged for real, a still-unreleased event's golden file
may be deleted and regenerated; after that, never.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from protocol.codec import encode  # noqa: E402
from protocol.envelope import Envelope  # noqa: E402
from protocol.events import (  # noqa: E402
    AdapterPromoted,
    AdapterRejected,
    AdapterReloaded,
    AdapterRolledBack,
    AlertRaised,
    ChatTurnCompleted,
    EvaluationCompleted,
    InboxImported,
    InboxRejected,
    MemoryEdited,
    MemoryFailed,
    MemoryForgotten,
    MemoryMerged,
    MemorySkipped,
    MemoryStored,
    ServiceFailed,
    ServiceStarted,
    TrainingFailed,
    TrainingFinished,
    TrainingProgress,
    TrainingStarted,
    TrainingTeacherFailed,
)

GOLDEN_DIR = Path(__file__).resolve().parent / "v1"

SAMPLES: dict[str, Envelope] = {
    "chat.turn_completed": Envelope(
        msg_id="0193a1b2c3d4e5f60718293a4b5c6d7e8f",
        ts=1764165600.125,
        source="chat",
        parent_id="r0193a1b2c3d4aabbccddeeff00112233",
        seq=41,
        v=1,
        body=ChatTurnCompleted(
            session_id="s-2025-11-26-a",
            turn_index=3,
            user_text="My sister Ana lives in Lisboa — remember that. 🐈",
            assistant_text="Noted: your sister Ana lives in Lisbon.",
            model="smollm2-135m-instruct",
            adapter_id="ad-20251125-0300",
            request_id="r0193a1b2c3d4aabbccddeeff00112233",
            prompt_tokens=57,
            completion_tokens=12,
            ttft_ms=321.5,
            tokens_per_s=12.75,
            finish_reason="stop",
            system_prompt="You are a helpful assistant.",
        ),
    ),
    "service.started": Envelope(
        msg_id="0193a1b2c3d40011223344556677889900",
        ts=1764165000.5,
        source="eventlog",
        parent_id=None,
        seq=1,
        v=1,
        body=ServiceStarted(
            service="eventlog",
            pid=4242,
            version="0.1.0",
            details={"head_seq": "0", "db": "data/events/events.db"},
        ),
    ),
    "service.failed": Envelope(
        msg_id="0193a1b2c3d4ffeeddccbbaa9988776655",
        ts=1764165300.75,
        source="chat",
        parent_id=None,
        seq=17,
        v=1,
        body=ServiceFailed(
            service="chat",
            pid=5150,
            error="FileNotFoundError",
            detail="models/smollm2-135m-instruct/config.json: no such file",
        ),
    ),
    "adapter.reloaded": Envelope(
        msg_id="0193a1b2c3d4123456789abcdef0123456",
        ts=1764180000.0,
        source="chat",
        parent_id="0193a1b2c3d4aaaaaaaaaaaaaaaaaaaaaa",
        seq=230,
        v=1,
        body=AdapterReloaded(
            adapter_id="ad-20251126-0300",
            previous_id="ad-20251125-0300",
            reload_ms=11.25,
            reason="promoted",
        ),
    ),
    "memory.stored": Envelope(
        msg_id="ingest-turn-41-stored",
        ts=1764165601.5,
        source="ingest",
        parent_id="0193a1b2c3d4e5f60718293a4b5c6d7e8f",
        seq=42,
        v=1,
        body=MemoryStored(
            turn_seq=41,
            memory_ids=["m-41-0", "m-41-1"],
            route="both",
            score=0.875,
            reason="personal fact about family",
            session_id="s-2025-11-26-a",
            tags=["family", "travel"],
            redactions={"email": 1, "phone": 0},
            chunks=2,
        ),
    ),
    "memory.skipped": Envelope(
        msg_id="ingest-turn-43-skipped",
        ts=1764165700.25,
        source="ingest",
        parent_id="0193a1b2c3d4bbbbbbbbbbbbbbbbbbbbbb",
        seq=44,
        v=1,
        body=MemorySkipped(
            turn_seq=43,
            reason="duplicate",
            score=0.125,
            session_id="s-2025-11-26-a",
            tags=["smalltalk"],
            redactions={"card": 2},
            duplicate_of="m-41-0",
        ),
    ),
    "memory.failed": Envelope(
        msg_id="ingest-turn-45-failed",
        ts=1764165800.0,
        source="ingest",
        parent_id=None,
        seq=46,
        v=1,
        body=MemoryFailed(
            stage="embed",
            error="RuntimeError",
            turn_seq=45,
            detail="embedding model not loaded",
        ),
    ),
    "memory.forgotten": Envelope(
        msg_id="0193a1b2c3d4cccccccccccccccccccccc",
        ts=1764170000.5,
        source="ingest",
        parent_id="r0193a1b2c3d4dddddddddddddddddddd",
        seq=90,
        v=1,
        body=MemoryForgotten(
            memory_ids=["m-41-0", "m-41-1"],
            turn_seqs=[41],
            reason="user asked: forget my sister's address",
        ),
    ),
    "memory.edited": Envelope(
        msg_id="0193a1b2c3d4eeeeeeeeeeeeeeeeeeeeee",
        ts=1764170100.25,
        source="ingest",
        parent_id=None,
        seq=91,
        v=1,
        body=MemoryEdited(
            memory_id="m-44-0",
            text="We live in Bristol, near the harbour.",
            previous_text="We live in Bristol.",
        ),
    ),
    "memory.merged": Envelope(
        msg_id="0193a1b2c3d4cccccccccccccccccccccc",
        ts=1764170400.5,
        source="ingest",
        parent_id=None,
        seq=97,
        v=1,
        body=MemoryMerged(
            kept_id="m12.0",
            merged_ids=["m30.0", "m57.1"],
            scores=[0.9731, 0.9412],
            threshold=0.93,
        ),
    ),
    "inbox.imported": Envelope(
        msg_id="inbox-9f86d081884c7d65-imported",
        ts=1764171000.0,
        source="ingest",
        parent_id=None,
        seq=120,
        v=1,
        body=InboxImported(
            file="notes/2025-11-24-chat.jsonl",
            sha256="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            turns=12,
            first_seq=108,
            last_seq=119,
        ),
    ),
    "inbox.rejected": Envelope(
        msg_id="inbox-60303ae22b998861-rejected",
        ts=1764171100.0,
        source="ingest",
        parent_id=None,
        seq=121,
        v=1,
        body=InboxRejected(
            file="notes/broken.jsonl",
            reason="line 3: not valid JSON",
            sha256="60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
        ),
    ),
    "training.started": Envelope(
        msg_id="0193a1b2c3d4e5f6training0started01", ts=1764205200.0, source="trainer", seq=120, v=1,
        body=TrainingStarted(sleep_id="sl-0193a1b2", adapter_id="ad-20251127-0200", trigger="schedule",
                             counts={"qa": 50, "chat": 10, "identity": 8, "replay": 12},
                             source_seqs=[41, 57, 88], steps=300),
    ),
    "training.progress": Envelope(
        msg_id="0193a1b2c3d4e5f6training0progress1", ts=1764205260.0, source="trainer", seq=121, v=1,
        body=TrainingProgress(sleep_id="sl-0193a1b2", step=50, steps=300, loss=1.234, tokens_per_s=190.5,
                              eta_s=240.0),
    ),
    "training.finished": Envelope(
        msg_id="0193a1b2c3d4e5f6training0finished1", ts=1764205500.0, source="trainer", seq=125, v=1,
        body=TrainingFinished(sleep_id="sl-0193a1b2", adapter_id="ad-20251127-0200", steps=300,
                              final_loss=0.412, duration_s=298.7),
    ),
    "training.failed": Envelope(
        msg_id="0193a1b2c3d4e5f6training0failed001", ts=1764205500.0, source="trainer", seq=126, v=1,
        body=TrainingFailed(sleep_id="sl-0193a1b3", stage="dataset",
                            error="no new trainable memories since the current adapter"),
    ),
    "training.teacher_failed": Envelope(
        msg_id="0193a1b2c3d4e5f6teacher0failed0001", ts=1764205550.0, source="trainer", seq=128, v=1,
        body=TrainingTeacherFailed(sleep_id="sl-0193a1b4", teacher="127.0.0.1:8080",
                                   error="the teacher at 127.0.0.1:8080 cannot be reached (Connection refused)",
                                   requests=12, answered=3),
    ),
    "evaluation.completed": Envelope(
        msg_id="0193a1b2c3d4e5f6evaluation0done001", ts=1764205600.0, source="evaluator", seq=127, v=1,
        parent_id="0193a1b2c3d4e5f6training0finished1",
        body=EvaluationCompleted(adapter_id="ad-20251127-0200", baseline_id="ad-20251126-0200", verdict="promote",
                                 metrics={"fact_recall": 0.9, "canary_acc": 0.75, "ppl_drift_pct": 0.4},
                                 gates={"fact_recall": True, "canary": True, "ppl_drift": True},
                                 reasons=[], duration_s=41.5),
    ),
    "adapter.promoted": Envelope(
        msg_id="0193a1b2c3d4e5f6adapter0promoted01", ts=1764205610.0, source="trainer", seq=128, v=1,
        body=AdapterPromoted(adapter_id="ad-20251127-0200", previous_id="ad-20251126-0200",
                             sha256={"adapters.safetensors": "ab" * 32}),
    ),
    "adapter.rejected": Envelope(
        msg_id="0193a1b2c3d4e5f6adapter0rejected01", ts=1764205610.0, source="trainer", seq=129, v=1,
        body=AdapterRejected(adapter_id="ad-20251127-0201", reasons=["canary dropped 2.5 points (limit 1)"]),
    ),
    "adapter.rolled_back": Envelope(
        msg_id="0193a1b2c3d4e5f6adapter0rolledbk01", ts=1764205700.0, source="cli", seq=130, v=1,
        body=AdapterRolledBack(adapter_id="ad-20251126-0200", previous_id="ad-20251127-0200"),
    ),
    "alert.raised": Envelope(
        msg_id="0193a1b2c3d4e5f6alert00raised0001", ts=1764205800.0, source="trainer", seq=131, v=1,
        body=AlertRaised(cause="adapter_rejected", message="last night's adapter was rejected: canary dropped 2.5 points (limit 1)",
                         key="ad-20251127-0201", severity="warning", details={"sleep_id": "sl-0193a1b2"},
                         suppressed=0),
    ),
}


def golden_path(tag: str) -> Path:
    return GOLDEN_DIR / f"{tag}.msgpack"


def main() -> int:
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    written = 0
    for tag, envelope in SAMPLES.items():
        if envelope.type != tag:
            print(f"sample {tag!r} holds a {envelope.type!r} event: fix SAMPLES", file=sys.stderr)
            return 1
        path = golden_path(tag)
        if path.exists():
            print(f"keep    {path.name} (golden files are never overwritten)")
            continue
        with open(path, "xb") as f:  # "x": refuse to replace a file created meanwhile
            f.write(encode(envelope))
        written += 1
        print(f"written {path.name}")
    print(f"{written} new golden file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
