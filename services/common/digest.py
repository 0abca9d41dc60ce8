"""sha256 of files, bytes and text: the one place every checksum in circadian is computed.

Adapter manifests, checkpoints, the memory index's vector file, the GGUF
install marker, the router's seed set and inbox files all name their content
by its sha256 hex digest. Files are read in chunks so a multi-GB model never
sits in memory whole.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK_BYTES = 4 << 20  # large enough that hashing a model is disk-bound, small enough to not matter in RAM


def file_sha256_size(path: str | os.PathLike[str], *, fsync: bool = False) -> tuple[str, int]:
    """(hex digest, bytes) of a file; ``fsync``: also flush it to disk while it is open
    (the adapter store hashes and fsyncs each file of a new adapter in one read)."""
    digest = hashlib.sha256()
    size = 0
    with open(Path(path), "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
        if fsync:
            os.fsync(handle.fileno())
    return digest.hexdigest(), size


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's content."""
    return file_sha256_size(path)[0]


def bytes_sha256(data: bytes | bytearray | memoryview) -> str:
    """Hex sha256 of bytes already in memory."""
    return hashlib.sha256(data).hexdigest()


def text_sha256(text: str) -> str:
    """Hex sha256 of a string's UTF-8 encoding."""
    return hashlib.sha256(text.encode()).hexdigest()
