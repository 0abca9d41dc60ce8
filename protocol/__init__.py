"""circadian's wire protocol: every message shape that crosses a process boundary.

Rules (see README.md, "Protocol"):
- Structs are frozen, keyword-only and tagged with an explicit string tag.
  Events are past tense (``chat.turn_completed``), commands imperative
  (``append``, ``replay``).
- New fields get defaults; a field's type never changes; a tag is never
  renamed or reused; a logged event's defaults never change. A real break gets
  a new tag and an upcaster in :mod:`protocol.evolution`.
- Wire format is msgpack. Untrusted bytes are decoded only through
  :class:`protocol.codec.Codec`, which raises :class:`ProtocolError` and
  nothing else.
"""

from protocol.codec import MAX_FRAME_BYTES, Codec, ProtocolError, encode
from protocol.envelope import PROTOCOL_VERSION, Envelope, new_envelope, new_id

__all__ = [
    "MAX_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "Codec",
    "Envelope",
    "ProtocolError",
    "encode",
    "new_envelope",
    "new_id",
]
