"""Golden samples: event bytes written by an earlier version must keep decoding.

``tests/golden/v1/<tag>.msgpack`` were written once by
``tests/golden/make_golden.py`` and are never regenerated. Each must decode
with today's ``Codec(Envelope)`` into exactly the hand-written sample, and
every key stored in the file must survive decoding with its value (a renamed
or retyped field fails here). Every event type in ``protocol.events`` must
have a golden file, so a new event forces a new sample.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import msgspec
import pytest

from protocol.codec import Codec
from protocol.envelope import Envelope
from protocol.events import EVENT_TAGS, EVENT_TYPES, event_tag

GOLDEN_ROOT = Path(__file__).resolve().parent / "golden"


def _load_make_golden() -> Any:
    spec = importlib.util.spec_from_file_location("circadian_make_golden", GOLDEN_ROOT / "make_golden.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_golden = _load_make_golden()
SAMPLES: dict[str, Envelope] = make_golden.SAMPLES
GOLDEN_FILES = sorted(make_golden.GOLDEN_DIR.glob("*.msgpack"))
CODEC: Codec[Envelope] = Codec(Envelope)


def test_every_event_type_has_a_sample_and_a_golden_file() -> None:
    missing_samples = sorted(EVENT_TAGS - set(SAMPLES))
    assert not missing_samples, (
        f"event types without a golden sample: {missing_samples}; add one to "
        "tests/golden/make_golden.py SAMPLES and run it")
    missing_files = sorted(t for t in EVENT_TAGS if not make_golden.golden_path(t).is_file())
    assert not missing_files, (
        f"event types without a golden file: {missing_files}; run "
        "`.venv/bin/python tests/golden/make_golden.py` and commit tests/golden/v1/")


def test_no_golden_file_for_an_unknown_tag() -> None:
    # Tags are never removed or renamed: old logs hold them forever.
    stray = [p.name for p in GOLDEN_FILES if p.name.removesuffix(".msgpack") not in EVENT_TAGS]
    assert not stray, f"golden files whose tag no longer exists in protocol.events: {stray}"


def test_golden_files_cover_all_samples() -> None:
    assert {p.name.removesuffix(".msgpack") for p in GOLDEN_FILES} == set(SAMPLES)
    assert len(GOLDEN_FILES) >= len(EVENT_TYPES)


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_golden_file_decodes_to_its_sample(path: Path) -> None:
    tag = path.name.removesuffix(".msgpack")
    data = path.read_bytes()
    decoded = CODEC.decode(data)

    assert decoded.type == tag
    assert event_tag(decoded.body) == tag
    assert type(decoded.body) in EVENT_TYPES
    assert decoded == SAMPLES[tag], (
        f"{path.name} no longer decodes to its sample: a field's type, name or "
        "default changed, which the evolution rules forbid (add a new field or tag)")


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_every_stored_field_survives_decoding(path: Path) -> None:
    """Compare the file's raw (untyped) content with the typed decode, key by key."""
    raw = msgspec.msgpack.decode(path.read_bytes())
    typed = msgspec.to_builtins(CODEC.decode(path.read_bytes()))
    assert isinstance(raw, dict) and isinstance(raw["body"], dict)
    for key, value in raw.items():
        if key == "body":
            continue
        assert key in typed, f"envelope field {key!r} from {path.name} is no longer decoded"
        assert typed[key] == value, f"envelope field {key!r}"
    for key, value in raw["body"].items():
        assert key in typed["body"], f"body field {key!r} from {path.name} is no longer decoded"
        assert typed["body"][key] == value, f"body field {key!r} of {path.name}"


def test_golden_samples_have_the_documented_values() -> None:
    """A few field values spelled out, independent of the sample objects."""
    turn = CODEC.decode(make_golden.golden_path("chat.turn_completed").read_bytes())
    assert (turn.msg_id, turn.source, turn.seq, turn.v) == (
        "0193a1b2c3d4e5f60718293a4b5c6d7e8f", "chat", 41, 1)
    assert turn.ts == 1764165600.125
    assert turn.body.user_text == "My sister Ana lives in Lisboa — remember that. 🐈"
    assert (turn.body.turn_index, turn.body.prompt_tokens, turn.body.completion_tokens) == (3, 57, 12)
    assert turn.body.finish_reason == "stop" and turn.body.ttft_ms == 321.5

    started = CODEC.decode(make_golden.golden_path("service.started").read_bytes())
    assert started.parent_id is None and started.seq == 1
    assert started.body.details == {"head_seq": "0", "db": "data/events/events.db"}

    failed = CODEC.decode(make_golden.golden_path("service.failed").read_bytes())
    assert (failed.body.service, failed.body.pid, failed.body.error) == ("chat", 5150, "FileNotFoundError")

    reloaded = CODEC.decode(make_golden.golden_path("adapter.reloaded").read_bytes())
    assert reloaded.body.adapter_id == "ad-20251126-0300"
    assert reloaded.body.previous_id == "ad-20251125-0300" and reloaded.body.reason == "promoted"

    stored = CODEC.decode(make_golden.golden_path("memory.stored").read_bytes())
    assert (stored.source, stored.seq, stored.body.turn_seq) == ("ingest", 42, 41)
    assert stored.body.memory_ids == ["m-41-0", "m-41-1"] and stored.body.route == "both"
    assert stored.body.redactions == {"email": 1, "phone": 0} and stored.body.chunks == 2

    forgotten = CODEC.decode(make_golden.golden_path("memory.forgotten").read_bytes())
    assert forgotten.body.turn_seqs == [41] and forgotten.body.memory_ids == ["m-41-0", "m-41-1"]

    imported = CODEC.decode(make_golden.golden_path("inbox.imported").read_bytes())
    assert (imported.body.turns, imported.body.first_seq, imported.body.last_seq) == (12, 108, 119)


def test_an_old_turn_gets_the_defaults_of_fields_added_later() -> None:
    """The chat.turn_completed sample predates fields added with defaults
    (evolution rule: new fields get defaults); the old bytes still decode."""
    raw = msgspec.msgpack.decode(make_golden.golden_path("chat.turn_completed").read_bytes())
    turn = CODEC.decode(make_golden.golden_path("chat.turn_completed").read_bytes())
    fields = {f.name: f for f in msgspec.structs.fields(type(turn.body))}
    added_later = [name for name in fields if name not in raw["body"]]
    for name in added_later:
        f = fields[name]
        assert not f.required, f"field {name} was added without a default"
        expected = f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
        assert getattr(turn.body, name) == expected


def test_make_golden_refuses_to_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "v1"
    target.mkdir()
    sentinel = b"do not touch"
    first_tag = next(iter(SAMPLES))
    (target / f"{first_tag}.msgpack").write_bytes(sentinel)
    monkeypatch.setattr(make_golden, "GOLDEN_DIR", target)
    assert make_golden.main() == 0
    assert (target / f"{first_tag}.msgpack").read_bytes() == sentinel
    for tag, sample in SAMPLES.items():
        if tag != first_tag:
            assert CODEC.decode((target / f"{tag}.msgpack").read_bytes()) == sample
