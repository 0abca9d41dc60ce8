"""The API's bearer token: ``data/keys/api.token`` (0600), created on first use.

A bind to anything but loopback requires it: whoever can reach the port must
also be able to read this file (or have been given its content).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

from services.common.paths import Paths, ensure_private_dir

TOKEN_FILE = "api.token"


def token_path(paths: Paths) -> Path:
    return paths.keys / TOKEN_FILE


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the API on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so treat it as exposed


def ensure_token(paths: Paths) -> str:
    """The token, created (random, 0600, atomically) if there is none yet."""
    path = token_path(paths)
    ensure_private_dir(path.parent)
    try:
        token = path.read_text().strip()
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # a copied file lost its mode: a secret must stay private
        if token:
            return token
        path.unlink()  # empty (a crash mid-write elsewhere): make a new one
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{token}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link() fails if another process created the token first: then theirs wins.
        os.link(tmp, path)
    except FileExistsError:
        token = path.read_text().strip()
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return token
