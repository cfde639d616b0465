"""Signing-key rotation: publish a key before it signs, keep it published until the last
token it signed has expired.

All instances read one JWK Set file (mounted from one place). Beside `keys` the file holds
`activate_at` (key id -> unix time): a key signs from that moment on (a key without one is
active from the start), so every instance switches at the same time, without talking to the
others. The signer at time t is the key with the latest activation at or before t (ties: the
first in the file, as before rotation existed). Keys not yet active are already in JWKS.

`stepup keys rotate` adds a key that activates after `publish_delay` (longer than JWKS caches
live) and drops keys whose tokens have all expired: a key stopped signing at the latest when
the current signer became active, so its tokens are dead `max_token_lifetime` after that.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey

from stepup.clock import Clock
from stepup.signing import SigningKeyError, SigningKeys, new_key

# Beyond the JWKS Cache-Control (300 s) so every verifier has refetched the set before use.
DEFAULT_PUBLISH_DELAY = 600
# Clock skew between instances and verifiers.
_SKEW = 60


@dataclass
class KeyFile:
    keys: list[dict[str, Any]]
    activate_at: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> KeyFile:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SigningKeyError(f"{path}: cannot read a JWK Set: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise SigningKeyError(f"{path}: not a JWK Set")
        keys = [k for k in data["keys"] if isinstance(k, dict)]
        for item in keys:
            if not item.get("kid"):
                item["kid"] = _import(item).thumbprint()
        raw = data.get("activate_at", {})
        activate_at = {
            str(kid): int(when)
            for kid, when in (raw.items() if isinstance(raw, dict) else [])
            if isinstance(when, int)
        }
        return cls(keys, activate_at)

    def write(self, path: Path) -> None:
        body = json.dumps({"keys": self.keys, "activate_at": self.activate_at}, indent=2)
        # Replaced in one rename: an instance re-reading the file never sees half of it.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".signing-keys-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(body)
            os.chmod(temporary, 0o600)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def activation(self, kid: str) -> int:
        return self.activate_at.get(kid, 0)

    def signer(self, now: float) -> str:
        active = [str(k["kid"]) for k in self.keys if self.activation(str(k["kid"])) <= now]
        if not active:
            raise SigningKeyError("no signing key is active yet")
        # max() keeps the first of equals: the file order decides ties.
        return max(active, key=self.activation)

    def states(self, now: float) -> list[tuple[str, str, int]]:
        """(kid, state, activation) per key: next, signing, or verifying (retiring)."""
        signer = self.signer(now)
        out = []
        for key in self.keys:
            kid = key["kid"]
            when = self.activation(kid)
            state = "signing" if kid == signer else ("next" if when > now else "verifying")
            out.append((kid, state, when))
        return out

    def signing_keys(self, now: float) -> SigningKeys:
        signer = self.signer(now)
        ordered = sorted(self.keys, key=lambda k: k["kid"] != signer)  # signer first, stable
        return SigningKeys([_import(k) for k in ordered])


def _import(item: dict[str, Any]) -> ECKey | OKPKey:
    try:
        if item.get("kty") == "EC":
            return ECKey.import_key(item)
        return OKPKey.import_key(item)
    except (JoseError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"bad signing key: {exc}") from exc


@dataclass
class Rotation:
    added: str | None
    activates_at: int | None
    retired: list[str]
    pending: str | None  # a key already waiting to activate


def rotate(path: Path, now: int, publish_delay: int, max_token_lifetime: int) -> Rotation:
    key_file = KeyFile.read(path)
    signer = key_file.signer(now)
    # Every key but the signer stopped signing by the signer's activation at the latest.
    dead_after = key_file.activation(signer) + max_token_lifetime + _SKEW
    retired = [
        k["kid"]
        for k in key_file.keys
        if k["kid"] != signer and key_file.activation(k["kid"]) <= now and now >= dead_after
    ]
    key_file.keys = [k for k in key_file.keys if k["kid"] not in retired]
    for kid in retired:
        key_file.activate_at.pop(kid, None)
    pending = next((k["kid"] for k in key_file.keys if key_file.activation(k["kid"]) > now), None)
    added = activates = None
    if pending is None:
        key = new_key()
        item = dict(key.as_dict(private=True))
        item["kid"] = str(key.kid)
        key_file.keys.append(item)
        added, activates = str(key.kid), now + publish_delay
        key_file.activate_at[added] = activates
    if added or retired:
        key_file.write(path)
    return Rotation(added, activates, retired, pending)


class KeyWatch:
    """Keeps `holder.signing` on the file's current signer: re-read when the file changes
    (a rotation on the shared file) or when a published key's activation time arrives."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self._stamp: tuple[int, int] | None = None
        self._file: KeyFile | None = None
        self._signer: str | None = None

    def refresh(self) -> SigningKeys | None:
        """New keys when something changed, else None."""
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp or self._file is None:
            self._file = KeyFile.read(self.path)
            self._stamp = stamp
            self._signer = None
        signer = self._file.signer(self.clock.now())
        if signer == self._signer:
            return None
        keys = self._file.signing_keys(self.clock.now())
        self._signer = signer
        return keys

    async def run(self, holder: Any, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                keys = self.refresh()
            except (OSError, SigningKeyError) as exc:
                # Keep signing with what is loaded: a half-edited file must not stop the service.
                logging.getLogger("stepup.keys").error("signing keys not reloaded: %s", exc)
                continue
            if keys is not None:
                holder.signing = keys
