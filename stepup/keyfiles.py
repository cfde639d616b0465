"""Files of 32-byte secret keys, one `key-id:base64` line each, the first one current.

Used by the factor sealing keys and the audit chain keys: both rotate by putting a new
line first, and both are created once (mode 0600) for the embedded default.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path


class KeyFileError(Exception):
    pass


def new_key_line(prefix: str = "k") -> str:
    return f"{prefix}{secrets.token_hex(4)}:{base64.b64encode(os.urandom(32)).decode()}"


def read_keys(path: Path, what: str) -> list[tuple[str, bytes]]:
    try:
        lines = path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read the {what} file: {exc}") from exc
    keys: list[tuple[str, bytes]] = []
    for line in lines:
        key_id, _, encoded = line.partition(":")
        try:
            key = base64.b64decode(encoded, validate=True)
        except ValueError as exc:
            raise KeyFileError(f"{path}: key '{key_id}' is not base64") from exc
        if len(key) != 32 or not key_id:
            raise KeyFileError(f"{path}: key '{key_id}' must be 32 bytes with a plain id")
        keys.append((key_id, key))
    if not keys:
        raise KeyFileError(f"{path}: the {what} file holds no key")
    return keys


def create_once(path: Path, prefix: str = "k") -> None:
    """Writes a first key unless the file exists (O_EXCL: two starters agree on one file)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(new_key_line(prefix) + "\n")
