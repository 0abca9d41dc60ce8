"""Encoding and defensive decoding of msgpack frames.

One encoder is shared; each channel builds its typed decoder once (msgspec's
perf advice). Decoding untrusted bytes can fail in more ways than msgspec's
own errors: msgspec 0.22 raises ``UnicodeDecodeError`` on invalid UTF-8 and
``RecursionError`` on deep nesting, so all of them become one
:class:`ProtocolError` that callers can catch without guessing.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

# A frame bigger than this is refused before decoding. Chat messages are the
# largest legitimate frames (a pasted document); 4 MiB leaves ample room while
# keeping a hostile frame from ballooning a daemon's memory.
MAX_FRAME_BYTES = 4 * 1024 * 1024

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()


class ProtocolError(ValueError):
    """A frame could not be decoded into the expected message type.

    ``code`` is ``too_large`` or ``malformed``; the message is safe to send
    back to the peer (it never echoes the frame's bytes).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def encode(obj: Any) -> bytes:
    """Encode any protocol Struct (or plain data) as msgpack."""
    return _encoder.encode(obj)


class Codec(Generic[T]):
    """A typed msgpack decoder for one channel, built once and reused."""

    def __init__(self, type_: Any, *, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self.type = type_
        self.max_bytes = max_bytes
        self._decoder = msgspec.msgpack.Decoder(type_)

    def encode(self, obj: T) -> bytes:
        return _encoder.encode(obj)

    def decode(self, data: bytes | memoryview) -> T:
        """Decode ``data`` or raise :class:`ProtocolError`; never anything else."""
        if len(data) > self.max_bytes:
            raise ProtocolError(
                "too_large",
                f"frame of {len(data)} bytes exceeds the limit of {self.max_bytes} bytes",
            )
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise ProtocolError("malformed", f"invalid message: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ProtocolError("malformed", f"undecodable msgpack: {exc}") from None
        except UnicodeDecodeError:
            raise ProtocolError("malformed", "invalid UTF-8 in a string field") from None
        except RecursionError:
            raise ProtocolError("malformed", "message nested too deeply") from None
