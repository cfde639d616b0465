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
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey
from joserfc.util import urlsafe_b64encode

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
            if key.key_type not in SIGNING_ALGORITHMS or key.curve_name not in ("P-256", "Ed25519"):
                raise SigningKeyError(f"key {key.kid}: only EC P-256 (ES256) or Ed25519 (EdDSA)")
        self._keys = keys
        self._signer = _CompactSigner(keys[0])
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
        return self._signer.sign(claims)

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


class _CompactSigner:
    """An access token (RFC 9068) as a JWS in compact serialization (RFC 7515 §7.1), signed
    by one key with `cryptography`, the library joserfc signs with as well.

    joserfc's serialize_compact cost 130 µs a token here, 90 of them around the signature
    itself (registry and header checks, key-operation lookups, the header encoded anew every
    time). The header never changes for a key, so it is encoded once; what is left per token
    is the payload's JSON and base64url, the signature, and its encoding: for ES256 the DER
    signature becomes R || S, each 32 bytes big-endian (RFC 7518 §3.4); Ed25519 signatures
    are already raw (RFC 8037 §3.1). Tokens are verified by joserfc, here and in the tests,
    and by the npm jose library in the interop tests.
    """

    def __init__(self, key: ECKey | OKPKey) -> None:
        # RFC 9068 §2.1: `typ: at+jwt` so the token cannot be confused with an ID token.
        header = {"typ": "at+jwt", "alg": SIGNING_ALGORITHMS[key.key_type], "kid": key.kid}
        self._prefix = urlsafe_b64encode(orjson.dumps(header)) + b"."
        private = key.private_key
        if isinstance(private, ec.EllipticCurvePrivateKey):
            self._ecdsa: ec.EllipticCurvePrivateKey | None = private
            self._ed25519: Ed25519PrivateKey | None = None
        else:
            assert isinstance(private, Ed25519PrivateKey)
            self._ecdsa, self._ed25519 = None, private

    def sign(self, claims: dict[str, Any]) -> str:
        signing_input = self._prefix + urlsafe_b64encode(orjson.dumps(claims))
        if self._ecdsa is not None:
            r, s = decode_dss_signature(self._ecdsa.sign(signing_input, _ES256))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            assert self._ed25519 is not None
            signature = self._ed25519.sign(signing_input)
        return (signing_input + b"." + urlsafe_b64encode(signature)).decode("ascii")


_ES256 = ec.ECDSA(SHA256())


def new_key() -> ECKey:
    return ECKey.generate_key("P-256", private=True, auto_kid=True)


def write_new_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps({"keys": [new_key().as_dict(private=True)]}, indent=2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(body)
