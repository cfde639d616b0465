"""Encryption at rest for factor secrets (TOTP seeds): AES-256-GCM with a key id.

The key file holds lines `key-id:base64(32 bytes)`; the first line seals, every line
opens. To rotate: put a new line first, restart, and old secrets still open; they are
resealed with the new key the next time they are written.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from stepup import keyfiles


class SealingError(Exception):
    pass


class Sealer:
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise SealingError("the factor key file holds no key")
        for key_id, key in keys:
            if len(key) != 32 or ":" in key_id or not key_id:
                raise SealingError(f"factor key '{key_id}' must be 32 bytes with a plain id")
        self._current = keys[0][0]
        self._keys = {key_id: AESGCM(key) for key_id, key in keys}
        self._raw = dict(keys)

    @classmethod
    def load(cls, path: Path) -> Sealer:
        try:
            return cls(keyfiles.read_keys(path, "factor key"))
        except keyfiles.KeyFileError as exc:
            raise SealingError(str(exc)) from exc

    @classmethod
    def load_or_create(cls, path: Path) -> Sealer:
        keyfiles.create_once(path)
        return cls.load(path)

    def seal(self, plaintext: str, context: str) -> str:
        # The context (subject and factor) is bound as associated data, so a sealed secret
        # copied onto another subject's record does not open.
        nonce = os.urandom(12)
        sealed = self._keys[self._current].encrypt(nonce, plaintext.encode(), context.encode())
        return f"{self._current}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str, context: str) -> str:
        key_id, _, body = sealed.partition(":")
        aead = self._keys.get(key_id)
        if aead is None:
            raise SealingError(f"no factor key '{key_id}' to open this secret")
        try:
            raw = base64.urlsafe_b64decode(body)
            return aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (InvalidTag, ValueError) as exc:
            # Tampered, copied from another subject or factor, or sealed under another key.
            raise SealingError("this secret does not open in its context") from exc

    def derive_key(self, purpose: str) -> bytes:
        """A key of its own for `purpose` (HKDF-SHA256 from the current factor key): every
        instance sharing the factor key file derives the same one, and it opens nothing."""
        return _derive(self._raw[self._current], purpose)

    def derive_older_keys(self, purpose: str) -> list[bytes]:
        """`derive_key(purpose)` under each key that is no longer current (after a rotation)."""
        return [
            _derive(raw, purpose) for key_id, raw in self._raw.items() if key_id != self._current
        ]

    def is_current(self, sealed: str) -> bool:
        return sealed.partition(":")[0] == self._current


def _derive(raw: bytes, purpose: str) -> bytes:
    info = f"stepup {purpose}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(raw)


def new_key_line() -> str:
    return keyfiles.new_key_line()
