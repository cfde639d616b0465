"""A DPoP client key for tests: builds proofs (RFC 9449 §4.2), good ones and each kind of bad
one, with joserfc; and the same through panva's jose (tests/peers/dpop.mjs)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import subprocess
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jws
from joserfc.jwk import ECKey, OKPKey, RSAKey

from tests.support.node_peers import PEERS

Key = ECKey | OKPKey | RSAKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ath(access_token: str) -> str:
    return b64url(hashlib.sha256(access_token.encode()).digest())


class DPoPKey:
    """A client's proof-of-possession key and the proofs it signs."""

    def __init__(self, alg: str = "ES256") -> None:
        self.alg = alg
        if alg == "ES256":
            self.key: Key = ECKey.generate_key("P-256", private=True)
        elif alg == "Ed25519":
            self.key = OKPKey.generate_key("Ed25519", private=True)
        else:
            self.key = RSAKey.generate_key(2048, private=True)

    @property
    def jkt(self) -> str:
        return str(self.key.thumbprint())

    @property
    def public_jwk(self) -> dict[str, Any]:
        return dict(self.key.as_dict(private=False))

    def proof(
        self,
        htm: str,
        htu: str,
        *,
        iat: float,
        access_token: str | None = None,
        nonce: str | None = None,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        signer: Key | None = None,
        raw: bool = False,
    ) -> str:
        """A proof; `header`/`claims` override fields, `drop` leaves claims out, `signer`
        signs with another key than the one in the header; `raw` signs (ES256) without
        joserfc, for headers it refuses to write (an attacker's library would not)."""
        head: dict[str, Any] = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public_jwk}
        head.update(header or {})
        head = {name: value for name, value in head.items() if value is not None}
        body: dict[str, Any] = {
            "jti": secrets.token_urlsafe(12),
            "htm": htm,
            "htu": htu,
            "iat": int(iat),
        }
        if access_token is not None:
            body["ath"] = ath(access_token)
        if nonce is not None:
            body["nonce"] = nonce
        body.update(claims or {})
        for name in drop:
            body.pop(name, None)
        payload = json.dumps(body).encode()
        if head["alg"] in ("none", "HS256"):
            # joserfc will not sign these; what an attacker would send is easy to write.
            signing_input = b64url(json.dumps(head).encode()) + "." + b64url(payload)
            if head["alg"] == "none":
                return signing_input + "."
            mac = hmac.new(b"k" * 32, signing_input.encode(), hashlib.sha256).digest()
            return signing_input + "." + b64url(mac)
        if raw:
            signing_input = b64url(json.dumps(head).encode()) + "." + b64url(payload)
            return signing_input + "." + b64url(self._es256(signing_input.encode()))
        return jws.serialize_compact(head, payload, signer or self.key, algorithms=[head["alg"]])

    def _es256(self, data: bytes) -> bytes:
        # RFC 7518 §3.4: the signature is R || S, 32 bytes each, not DER.
        assert isinstance(self.key, ECKey)
        private_key = self.key.private_key
        assert private_key is not None  # generated with private=True
        der = private_key.sign(data, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def jose_proof(node: str, htm: str, htu: str, iat: int) -> dict[str, str]:
    """A proof made by panva's jose (SignJWT + exportJWK, a fresh ES256 key); returns
    {"proof", "jkt"} where jkt is jose's calculateJwkThumbprint."""
    done = subprocess.run(
        [node, "dpop.mjs", htm, htu, str(iat)],
        cwd=PEERS,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: dict[str, str] = json.loads(done.stdout)
    return result
