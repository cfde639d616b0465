"""stepup's own signing keys: loaded from a key file, never regenerated per process.

The file is a JWK Set of private keys; the first key signs, all are published, so a key
can be added before it is used and kept after it stops signing. With the embedded default
a P-256 key is generated once into the data directory.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import orjson
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey

# RFC 9864 names Ed25519 fully ("EdDSA" is deprecated for new uses).
SIGNING_ALGORITHMS = {"EC": "ES256", "OKP": "Ed25519"}
# How many verified tokens each process remembers (about 1 KiB each).
VERIFIED_CACHE_SIZE = 4096


class SigningKeyError(Exception):
    pass


class SigningKeys:
    def __init__(self, keys: list[ECKey | OKPKey]) -> None:
        if not keys:
            raise SigningKeyError("the signing key file holds no key")
        for key in keys:
            if not key.is_private:
                raise SigningKeyError(f"key {key.kid} is public only: stepup needs the private key")
            if key.key_type not in SIGNING_ALGORITHMS:
                raise SigningKeyError(f"key {key.kid}: only EC P-256 (ES256) or Ed25519 (EdDSA)")
        self._keys = keys
        self._verify_set = KeySet(list(keys))
        self._public = {"keys": [self._public_jwk(key) for key in keys]}
        # Only the algorithms of the keys stepup holds: any other `alg` is refused up front.
        self._algorithms = sorted({SIGNING_ALGORITHMS[key.key_type] for key in keys})
        # Token string -> its claims, for tokens whose signature already verified. The keys of
        # one SigningKeys never change, so the answer for the same bytes cannot change either;
        # a resource server introspecting the same token on every call (the common case) then
        # costs a dict lookup instead of an ECDSA verification. Whether the token is still
        # active (revocation, exp) is never cached: the caller asks Redis and the clock.
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @staticmethod
    def _public_jwk(key: ECKey | OKPKey) -> dict[str, Any]:
        public = dict(key.as_dict(private=False))
        public.update(use="sig", alg=SIGNING_ALGORITHMS[key.key_type], kid=str(key.kid))
        return public

    @classmethod
    def load(cls, path: Path) -> SigningKeys:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SigningKeyError(f"{path}: cannot read a JWK Set: {exc}") from exc
        keys: list[ECKey | OKPKey] = []
        for item in data.get("keys", []) if isinstance(data, dict) else []:
            try:
                key = ECKey.import_key(item) if item.get("kty") == "EC" else OKPKey.import_key(item)
            except (JoseError, ValueError, TypeError) as exc:
                raise SigningKeyError(f"{path}: bad key: {exc}") from exc
            if not key.kid:
                key.ensure_kid()
            keys.append(key)
        return cls(keys)

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKeys:
        if not path.exists():
            write_new_key_file(path)
        return cls.load(path)

    @property
    def active(self) -> ECKey | OKPKey:
        return self._keys[0]

    @property
    def algorithm(self) -> str:
        return SIGNING_ALGORITHMS[self.active.key_type]

    def public_jwks(self) -> dict[str, Any]:
        return self._public

    def sign(self, claims: dict[str, Any]) -> str:
        # RFC 9068 §2.1: `typ: at+jwt` so the token cannot be confused with an ID token.
        # The header and payload bytes are those joserfc's jwt.encode writes ("typ" first,
        # compact JSON, UTF-8 as is), the payload by orjson instead of json.dumps (a tenth of
        # the signing's cost); joserfc still builds and signs the JWS.
        header = {"typ": "at+jwt", "alg": self.algorithm, "kid": self.active.kid}
        payload = orjson.dumps(claims)
        return jws.serialize_compact(header, payload, self.active, algorithms=[self.algorithm])

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a token stepup signed, or None; expiry is the caller's to check."""
        cached = self._verified.get(token)
        if cached is not None:
            self._verified.move_to_end(token)
            return dict(cached)
        claims = self._verify(token)
        if claims is not None:
            self._verified[token] = claims
            if len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)  # least recently used
            return dict(claims)
        return None

    def _verify(self, token: str) -> dict[str, Any] | None:
        try:
            decoded = jwt.decode(
                token, self._verify_set, algorithms=list(SIGNING_ALGORITHMS.values())
            )
        except (JoseError, ValueError, TypeError):
            return None
        if str(decoded.header.get("typ", "")).lower() not in ("at+jwt", "application/at+jwt"):
            return None
        return dict(decoded.claims)


def new_key() -> ECKey:
    return ECKey.generate_key("P-256", private=True, auto_kid=True)


def write_new_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps({"keys": [new_key().as_dict(private=True)]}, indent=2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(body)
