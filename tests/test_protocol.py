"""The protocol's shapes: every Struct round-trips, is frozen and keyword-only,
and every tag names exactly one message type.

Structs and unions are discovered by introspecting ``protocol/``, so a new
message type is covered without editing this file; values are generated from
each Struct's own type annotations (``msgspec.inspect``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import time
import typing
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol
from protocol.codec import Codec, encode
from protocol.envelope import PROTOCOL_VERSION, Envelope, StoredEnvelope, new_envelope, new_id
from protocol.events import EVENT_TAGS, EVENT_TYPES, Event, event_tag

# --------------------------------------------------------------------------- discovery


def _protocol_modules() -> list[Any]:
    return [importlib.import_module(f"protocol.{m.name}") for m in pkgutil.iter_modules(protocol.__path__)]


def _all_structs() -> list[type]:
    found: dict[str, type] = {}
    for module in _protocol_modules():
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, msgspec.Struct)
                    and obj.__module__ == module.__name__):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def _all_unions() -> dict[str, tuple[type, ...]]:
    unions: dict[str, tuple[type, ...]] = {}
    for module in _protocol_modules():
        for name, obj in vars(module).items():
            if typing.get_origin(obj) is typing.Union:
                args = typing.get_args(obj)
                if all(isinstance(a, type) and issubclass(a, msgspec.Struct) for a in args):
                    unions[f"{module.__name__}.{name}"] = args
    return unions


ALL_STRUCTS = _all_structs()
CONCRETE_STRUCTS = [c for c in ALL_STRUCTS if not c.__name__.startswith("_")]
UNIONS = _all_unions()


def test_discovery_finds_the_protocol() -> None:
    names = {c.__name__ for c in CONCRETE_STRUCTS}
    assert {"Envelope", "StoredEnvelope", "Append", "Appended", "Replay", "ReplayBatch", "Ping",
            "Pong", "ErrorReply", "SendMessage", "ChatFinished", "ChatTurnCompleted"} <= names
    assert {"protocol.events.Event", "protocol.eventlog_api.EventlogRequest",
            "protocol.eventlog_api.EventlogReply", "protocol.chat_api.ChatRequest",
            "protocol.chat_api.ChatReply"} <= set(UNIONS)


# --------------------------------------------------------------------------- value generation

_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# NaN is excluded only because NaN != NaN would defeat the equality check.
_floats = st.floats(allow_nan=False)
_text = st.text(max_size=20)


def strategy_for(t: mi.Type, depth: int = 0) -> st.SearchStrategy[Any]:
    """A hypothesis strategy for any type our protocol uses (from msgspec.inspect)."""
    if isinstance(t, mi.StrType):
        return _text
    if isinstance(t, mi.IntType):
        return _ints
    if isinstance(t, mi.FloatType):
        return _floats
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.UnionType):
        return st.one_of([strategy_for(x, depth) for x in t.types])
    if isinstance(t, mi.ListType):
        return st.lists(strategy_for(t.item_type, depth + 1), max_size=3 if depth < 2 else 1)
    if isinstance(t, mi.DictType):
        return st.dictionaries(strategy_for(t.key_type, depth + 1),
                               strategy_for(t.value_type, depth + 1), max_size=3)
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.BytesType):
        return st.binary(max_size=20)
    if isinstance(t, mi.VarTupleType):
        return st.lists(strategy_for(t.item_type, depth + 1), max_size=3).map(tuple)
    if isinstance(t, mi.TupleType):
        return st.tuples(*(strategy_for(x, depth + 1) for x in t.item_types))
    if isinstance(t, mi.RawType):
        # Raw fields hold an already-encoded event body (StoredEnvelope).
        return strategy_for(mi.type_info(Event), depth + 1).map(lambda e: msgspec.Raw(encode(e)))
    if isinstance(t, mi.StructType):
        return struct_strategy(t.cls, depth)
    if isinstance(t, mi.AnyType):  # free-form JSON values (the worker's compute/params figures)
        return st.one_of(st.none(), st.booleans(), _ints, _floats, _text)
    raise NotImplementedError(f"no strategy for {t!r}: extend tests/test_protocol.py")


def struct_strategy(cls: type, depth: int = 0) -> st.SearchStrategy[Any]:
    info = mi.type_info(cls)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in info.fields:
        generated = strategy_for(f.type, depth + 1)
        if not f.required:
            default = f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
            generated = st.one_of(st.just(default), generated)
        fields[f.name] = generated
    return st.fixed_dictionaries(fields).map(lambda kw: cls(**kw))


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("cls", CONCRETE_STRUCTS, ids=lambda c: c.__name__)
def test_every_struct_round_trips(cls: type) -> None:
    codec: Codec[Any] = Codec(cls)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(struct_strategy(cls))
    def check(obj: Any) -> None:
        data = encode(obj)
        assert codec.decode(data) == obj
        assert codec.encode(obj) == data

    check()


@pytest.mark.parametrize("union_name", sorted(UNIONS))
def test_union_members_round_trip_through_the_union(union_name: str) -> None:
    members = UNIONS[union_name]
    module_name, _, attr = union_name.rpartition(".")
    codec: Codec[Any] = Codec(getattr(importlib.import_module(module_name), attr))

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.one_of([struct_strategy(m) for m in members]))
    def check(obj: Any) -> None:
        decoded = codec.decode(encode(obj))
        assert type(decoded) is type(obj)
        assert decoded == obj

    check()


# --------------------------------------------------------------------------- shape rules


@pytest.mark.parametrize("cls", ALL_STRUCTS, ids=lambda c: c.__name__)
def test_every_struct_is_frozen_and_keyword_only(cls: type) -> None:
    assert cls.__struct_config__.frozen, f"{cls.__name__} must be frozen"
    params = inspect.signature(cls).parameters.values()
    positional = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert not positional, f"{cls.__name__} fields must be keyword-only, not {positional}"
    if cls.__struct_fields__:
        with pytest.raises(TypeError):
            cls(*([None] * len(cls.__struct_fields__)))


@pytest.mark.parametrize("cls", CONCRETE_STRUCTS, ids=lambda c: c.__name__)
def test_frozen_structs_refuse_mutation(cls: type) -> None:
    info = mi.type_info(cls)
    simple = {mi.StrType: "x", mi.IntType: 1, mi.FloatType: 1.0, mi.BoolType: True}
    kwargs: dict[str, Any] = {}
    for f in info.fields:
        if f.required:
            kwargs[f.name] = _simple_value(f.type, simple)
    obj = cls(**kwargs)
    with pytest.raises(AttributeError):
        setattr(obj, cls.__struct_fields__[0], None)


def _simple_value(t: mi.Type, simple: dict[type, Any]) -> Any:
    for kind, value in simple.items():
        if isinstance(t, kind):
            return value
    if isinstance(t, mi.UnionType):
        return _simple_value(t.types[0], simple)
    if isinstance(t, mi.ListType):
        return []
    if isinstance(t, mi.DictType):
        return {}
    if isinstance(t, mi.LiteralType):
        return t.values[0]
    if isinstance(t, mi.BytesType):
        return b""
    if isinstance(t, mi.VarTupleType):
        return ()
    if isinstance(t, mi.TupleType):
        return tuple(_simple_value(x, simple) for x in t.item_types)
    if isinstance(t, mi.RawType):
        return msgspec.Raw(encode(None))
    if isinstance(t, mi.StructType):
        inner = mi.type_info(t.cls)
        return t.cls(**{f.name: _simple_value(f.type, simple) for f in inner.fields if f.required})
    raise NotImplementedError(repr(t))


def test_every_union_member_has_an_explicit_string_tag() -> None:
    for union_name, members in UNIONS.items():
        tags = []
        for cls in members:
            config = cls.__struct_config__
            assert config.tag_field == "type", f"{cls.__name__} in {union_name}"
            assert isinstance(config.tag, str) and config.tag, f"{cls.__name__} in {union_name}"
            assert config.tag != cls.__name__, f"{cls.__name__}: tag must be explicit"
            tags.append(config.tag)
        assert len(tags) == len(set(tags)), f"duplicate tag inside {union_name}: {tags}"
        msgspec.msgpack.Decoder(typing.Union.__getitem__(members))  # msgspec accepts the union


# JSON-lines channels that never share a socket with the messages: their tags form a namespace of
# their own (the training worker's stdout says "error" and "started", as it always did).
LINE_CHANNELS = ("protocol.worker_lines",)


def test_tags_are_unique_across_all_unions() -> None:
    owner: dict[str, type] = {}
    channels: dict[str, dict[str, type]] = {name: {} for name in LINE_CHANNELS}
    for cls in CONCRETE_STRUCTS:  # private bases carry msgspec's implicit tag (their name)
        tag = cls.__struct_config__.tag
        if tag is None:
            continue
        space = channels.get(cls.__module__, owner)
        assert space.setdefault(tag, cls) is cls, (
            f"tag {tag!r} is used by both {space[tag].__name__} and {cls.__name__}")
    # The same class may sit in several unions (Ping, ErrorReply); a tag may not
    # mean two different classes anywhere.
    for members in UNIONS.values():
        for cls in members:
            assert channels.get(cls.__module__, owner)[cls.__struct_config__.tag] is cls


def test_event_types_and_tags_agree() -> None:
    assert EVENT_TYPES == typing.get_args(Event)
    assert EVENT_TAGS == {c.__struct_config__.tag for c in EVENT_TYPES}
    for cls in EVENT_TYPES:
        assert event_tag(cls) == cls.__struct_config__.tag
        # Events are facts: past tense, namespaced ("chat.turn_completed").
        assert "." in event_tag(cls)


# --------------------------------------------------------------------------- envelope


@settings(max_examples=100, deadline=None)
@given(struct_strategy(Envelope))
def test_envelope_type_is_the_body_tag(env: Envelope) -> None:
    assert env.type == type(env.body).__struct_config__.tag
    assert env.type in EVENT_TAGS


def test_new_envelope_has_no_seq_and_current_version() -> None:
    body = EVENT_TYPES[0](**{f.name: _simple_value(f.type, {mi.StrType: "x", mi.IntType: 1,
                                                            mi.FloatType: 1.0, mi.BoolType: True})
                             for f in mi.type_info(EVENT_TYPES[0]).fields if f.required})
    before = time.time()
    env = new_envelope(body, source="test", parent_id="p1")
    assert env.seq is None and env.v == PROTOCOL_VERSION and env.parent_id == "p1"
    assert before <= env.ts <= time.time()
    assert env.msg_id and env.body is body
    assert new_envelope(body, source="t", msg_id="fixed").msg_id == "fixed"


def test_new_id_is_unique() -> None:
    ids = [new_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)


def test_new_id_sorts_by_creation_time() -> None:
    ids = []
    for _ in range(30):
        ids.append(new_id("e"))
        time.sleep(0.0015)  # ids of different milliseconds must sort in order
    assert ids == sorted(ids)
    assert all(i.startswith("e") and len(i) == 1 + 13 + 16 for i in ids)
    stamp_ms = int(ids[-1][1:14], 16)
    assert abs(stamp_ms / 1000 - time.time()) < 5


@settings(max_examples=150, deadline=None)
@given(struct_strategy(Envelope), st.integers(min_value=1, max_value=2**62))
def test_stored_envelope_bytes_decode_as_envelope(env: Envelope, seq: int) -> None:
    env = msgspec.structs.replace(env, seq=seq)
    stored = StoredEnvelope(msg_id=env.msg_id, ts=env.ts, source=env.source,
                            body=msgspec.Raw(encode(env.body)), parent_id=env.parent_id,
                            seq=env.seq, v=env.v)
    data = encode(stored)
    assert data == encode(env)  # same bytes on the wire
    decoded = Codec(Envelope).decode(data)
    assert decoded == env
    assert decoded.type == env.type
