"""Hostile bytes against every untrusted decoder: only ProtocolError may escape.

Daemons decode frames from any local process. Whatever arrives — random
bytes, a valid frame with flipped bits, truncated or with junk appended,
absurd nesting, invalid UTF-8, a frame over the size limit — ``Codec.decode``
either returns a message of the expected type or raises
:class:`protocol.codec.ProtocolError`; never ``UnicodeDecodeError``,
``RecursionError``, ``MemoryError`` or anything else that would kill a loop.
"""

from __future__ import annotations

import typing
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_protocol import struct_strategy  # the value generator of every Struct

from protocol.chat_api import ChatRequest, SendMessage
from protocol.codec import MAX_FRAME_BYTES, Codec, ProtocolError, encode
from protocol.envelope import Envelope
from protocol.eventlog_api import Append, EventlogRequest

CHANNELS: dict[str, Any] = {
    "EventlogRequest": EventlogRequest,
    "ChatRequest": ChatRequest,
    "Envelope": Envelope,
}
CODECS: dict[str, Codec[Any]] = {name: Codec(t) for name, t in CHANNELS.items()}


def _members(t: Any) -> tuple[type, ...]:
    return typing.get_args(t) or (t,)


def _valid_messages(name: str) -> st.SearchStrategy[Any]:
    return st.one_of([struct_strategy(m) for m in _members(CHANNELS[name])])


FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def decode_safely(name: str, data: bytes | memoryview) -> Any:
    """Decode and check the contract: a typed result or ProtocolError, nothing else."""
    try:
        result = CODECS[name].decode(data)
    except ProtocolError as exc:
        assert exc.code in ("malformed", "too_large")
        assert str(exc)
        return exc
    assert isinstance(result, _members(CHANNELS[name])), type(result)
    return result


channel = pytest.mark.parametrize("name", list(CHANNELS))


# --------------------------------------------------------------------------- random bytes


@channel
def test_random_bytes(name: str) -> None:
    @FUZZ
    @given(st.binary(max_size=1024))
    def check(data: bytes) -> None:
        decode_safely(name, data)
        decode_safely(name, memoryview(data))

    check()


# --------------------------------------------------------------------------- mutated frames

_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(min_value=0)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("overwrite"), st.integers(min_value=0), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.integers(1, 16)),
)


def mutate(frame: bytes, ops: list[tuple[Any, ...]]) -> bytes:
    data = bytearray(frame)
    for op in ops:
        if not data:
            break
        kind = op[0]
        if kind == "flip":
            data[op[1] % len(data)] ^= 1 << op[2]
        elif kind == "truncate":
            del data[op[1] % len(data):]
        elif kind == "append":
            data += op[1]
        elif kind == "insert":
            i = op[1] % (len(data) + 1)
            data[i:i] = op[2]
        elif kind == "overwrite":
            data[op[1] % len(data)] = op[2]
        elif kind == "delete":
            i = op[1] % len(data)
            del data[i:i + op[2]]
    return bytes(data)


@channel
def test_mutated_valid_frames(name: str) -> None:
    @FUZZ
    @given(_valid_messages(name), st.lists(_mutation, min_size=1, max_size=4))
    def check(message: Any, ops: list[tuple[Any, ...]]) -> None:
        frame = encode(message)
        assert CODECS[name].decode(frame) == message  # the unmutated frame is fine
        decode_safely(name, mutate(frame, ops))

    check()


@channel
def test_truncation_at_every_length_is_malformed(name: str) -> None:
    @settings(max_examples=40, deadline=None)
    @given(_valid_messages(name))
    def check(message: Any) -> None:
        frame = encode(message)
        for cut in range(len(frame)):
            outcome = decode_safely(name, frame[:cut])
            # A prefix of one msgpack object is never a complete object.
            assert isinstance(outcome, ProtocolError), (cut, frame)

    check()


@channel
def test_appended_junk_is_malformed(name: str) -> None:
    @FUZZ
    @given(_valid_messages(name), st.binary(min_size=1, max_size=32))
    def check(message: Any, junk: bytes) -> None:
        outcome = decode_safely(name, encode(message) + junk)
        assert isinstance(outcome, ProtocolError)  # trailing bytes are refused

    check()


# --------------------------------------------------------------------------- deep nesting


def _nest(depth: int, container: str, leaf: bytes = b"\xc0") -> bytes:
    opener = {"array": b"\x91", "map": b"\x81\xa1k", "mixed": b"\x91\x81\xa1k"}[container]
    return opener * depth + leaf


@channel
def test_deep_nesting(name: str) -> None:
    # Positions: the whole frame, an unknown field (skipped by msgspec, which
    # still recurses), and a known field of a valid message.
    tag_prefix = {
        "EventlogRequest": b"\x82\xa4type\xa4ping",
        "ChatRequest": b"\x82\xa4type\xa4ping",
        "Envelope": b"\x82\xa6source\xa1s",
    }[name]

    @settings(max_examples=60, deadline=None)
    @given(st.integers(min_value=1, max_value=300_000), st.sampled_from(["array", "map", "mixed"]),
           st.sampled_from(["top", "unknown_field", "known_field"]))
    def check(depth: int, container: str, where: str) -> None:
        nested = _nest(depth, container)
        if where == "top":
            frame = nested
        elif where == "unknown_field":
            frame = tag_prefix + b"\xa7unknown" + nested
        else:
            frame = tag_prefix + b"\xaarequest_id" + nested if name != "Envelope" else (
                tag_prefix + b"\xa4body" + nested)
        outcome = decode_safely(name, frame)
        if where != "unknown_field" or depth > 5000:
            assert isinstance(outcome, ProtocolError)

    check()


# --------------------------------------------------------------------------- invalid UTF-8

_INVALID_UTF8 = [
    b"\xff", b"\xfe", b"\x80", b"\xc0\xaf",          # bytes never valid / overlong "/"
    b"\xed\xa0\x80",                                   # UTF-16 surrogate encoded in UTF-8
    b"\xf4\x90\x80\x80",                               # beyond U+10FFFF
    b"\xe2\x82",                                        # truncated 3-byte sequence
    b"\xc3",                                            # lone lead byte
]
_MARK = "\ue000"  # 3 bytes in UTF-8; never appears in generated text of ours


def _string_slots(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], bool]]:
    """Every string in an untyped message: (path, is_key)."""
    slots: list[tuple[tuple[Any, ...], bool]] = []
    if isinstance(obj, str):
        slots.append((path, False))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            slots.append((path + (k,), True))
            slots.extend(_string_slots(v, path + (k,)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            slots.extend(_string_slots(v, path + (i,)))
    return slots


def _with_marker(obj: Any, path: tuple[Any, ...], is_key: bool, marker: str) -> Any:
    if not path:
        return marker
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        if is_key and not rest:
            return {(marker if k == head else k): v for k, v in obj.items()}
        return {k: (_with_marker(v, rest, is_key, marker) if k == head else v) for k, v in obj.items()}
    return [(_with_marker(v, rest, is_key, marker) if i == head else v) for i, v in enumerate(obj)]


@channel
def test_invalid_utf8_in_string_fields(name: str) -> None:
    @FUZZ
    @given(_valid_messages(name), st.data())
    def check(message: Any, data: st.DataObject) -> None:
        plain = msgspec.msgpack.decode(encode(message))
        slots = _string_slots(plain)
        path, is_key = data.draw(st.sampled_from(slots))
        bad = data.draw(st.sampled_from(_INVALID_UTF8))
        # A marker string of the same byte length as the payload we substitute.
        marker = _MARK * max(2, len(bad))
        raw_marker = marker.encode()
        frame = encode(_with_marker(plain, path, is_key, marker))
        assume(frame.count(raw_marker) == 1)  # generated text could contain U+E000
        payload = (bad + b"a" * len(raw_marker))[:len(raw_marker)]
        payload = data.draw(st.sampled_from([payload, payload[::-1], b"a" + payload[:-1]]))
        corrupt = frame.replace(raw_marker, payload)
        outcome = decode_safely(name, corrupt)
        if not is_key:
            # Every string in a typed message sits in a known field: invalid
            # UTF-8 there is refused, never mis-decoded. (A corrupted key just
            # becomes an unknown field, which msgspec skips unread.)
            assert isinstance(outcome, ProtocolError)

    check()


# --------------------------------------------------------------------------- size limit


@channel
def test_oversized_frames_are_refused_before_decoding(name: str) -> None:
    small: Codec[Any] = Codec(CHANNELS[name], max_bytes=256)

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(min_size=257, max_size=4096))
    def check(data: bytes) -> None:
        with pytest.raises(ProtocolError) as info:
            small.decode(data)
        assert info.value.code == "too_large"
        assert data[:16].hex() not in str(info.value)  # never echoes the frame

    check()


def test_real_limit_frames() -> None:
    codec: Codec[Any] = Codec(ChatRequest)
    overhead = len(encode(SendMessage(request_id="r", message="")))
    at_limit = encode(SendMessage(request_id="r", message="x" * (MAX_FRAME_BYTES - overhead - 4)))
    assert len(at_limit) <= MAX_FRAME_BYTES
    assert codec.decode(at_limit).request_id == "r"  # the limit itself is allowed
    over = encode(SendMessage(request_id="r", message="x" * MAX_FRAME_BYTES))
    with pytest.raises(ProtocolError) as info:
        codec.decode(over)
    assert info.value.code == "too_large"
    five_mib = encode(Append(events=[])) + b"\x00" * (5 * 1024 * 1024)
    with pytest.raises(ProtocolError) as info:
        Codec(EventlogRequest).decode(five_mib)
    assert info.value.code == "too_large"


# --------------------------------------------------------------------------- hand-picked nasties

NASTY = [
    b"",
    b"\xc0",                                   # nil
    b"\xc1",                                   # never-used byte
    b"\xdd\xff\xff\xff\xff",                   # array32 claiming 4G items
    b"\xdf\xff\xff\xff\xff",                   # map32 claiming 4G pairs
    b"\xdb\xff\xff\xff\xff",                   # str32 claiming 4 GiB
    b"\xc6\xff\xff\xff\xff",                   # bin32 claiming 4 GiB
    b"\xc9\xff\xff\xff\xff\x01",               # ext32 claiming 4 GiB
    b"\xd6\xff\x00\x00\x00\x00",               # timestamp ext
    b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",   # NaN
    b"\x81\xa4type\xa4ping" * 2,               # two objects back to back
    b"\x81\xa4type\xa9unknown!!",              # unknown tag
    b"\x81\xa4type\x01",                       # tag of the wrong type
    b"\x82\xa4type\xa4ping\xa4type\xa4pong",   # duplicate tag key
    b"\x82\xa4type\xa4ping\xaarequest_id\xcf\xff\xff\xff\xff\xff\xff\xff\xff",  # int for str
    msgspec.msgpack.encode({"type": "append", "events": [{"msg_id": "m", "ts": 1.0, "source": "s",
                                                          "body": {"type": "nope"}}]}),
    msgspec.msgpack.encode({"msg_id": "m", "ts": "yesterday", "source": "s", "body": {}}),
]


@channel
@pytest.mark.parametrize("frame", NASTY, ids=lambda f: f[:12].hex() or "empty")
def test_hand_picked_nasty_frames(name: str, frame: bytes) -> None:
    assert isinstance(decode_safely(name, frame), ProtocolError)
