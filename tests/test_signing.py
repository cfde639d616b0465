"""stepup's own tokens (signing.py): the header and payload bytes are those joserfc's
jwt.encode writes, and joserfc verifies every signature stepup makes, ES256 and Ed25519."""

from __future__ import annotations

import base64
import json

import pytest
from joserfc import jws, jwt
from joserfc.jwk import ECKey, OKPKey

from stepup.signing import SigningKeyError, SigningKeys, new_key

CLAIMS = {"iss": "https://stepup.example", "sub": "zoë", "exp": 2_000_000_000, "amr": ["otp"]}


def _segments(token: str) -> list[bytes]:
    return [base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in token.split(".")]


@pytest.mark.parametrize(
    ("key", "alg"),
    [(new_key(), "ES256"), (OKPKey.generate_key("Ed25519", auto_kid=True), "Ed25519")],
    ids=["ES256", "Ed25519"],
)
def test_a_signed_token_has_the_bytes_jwt_encode_writes_and_verifies(
    key: ECKey | OKPKey, alg: str
) -> None:
    keys = SigningKeys([key])
    token = keys.sign(dict(CLAIMS))
    reference = jwt.encode(
        {"typ": "at+jwt", "alg": alg, "kid": key.kid}, dict(CLAIMS), key, algorithms=[alg]
    )
    # ECDSA signatures are randomized: everything before them must match byte for byte.
    assert token.rsplit(".", 1)[0] == reference.rsplit(".", 1)[0]
    assert json.loads(_segments(token)[0]) == {"typ": "at+jwt", "alg": alg, "kid": key.kid}
    assert "=" not in token  # base64url without padding (RFC 7515 §2)
    assert keys.verify(token) == CLAIMS
    # joserfc on its own, with the public key only, as a resource server would.
    public = type(key).import_key(key.as_dict(private=False))
    assert jws.deserialize_compact(token, public, algorithms=[alg]).payload == _segments(token)[1]


def test_every_es256_signature_is_r_and_s_in_32_bytes_each() -> None:
    # R or S below 2^248 (a leading zero byte) turns up about once in 128 signatures: a
    # variable-length encoding would fail some of these.
    key = new_key()
    keys = SigningKeys([key])
    public = ECKey.import_key(key.as_dict(private=False))
    for index in range(1000):
        token = keys.sign({**CLAIMS, "jti": str(index)})
        assert len(_segments(token)[2]) == 64
        jws.deserialize_compact(token, public, algorithms=["ES256"])


def test_a_changed_payload_or_signature_does_not_verify() -> None:
    keys = SigningKeys([new_key()])
    header, payload, signature = keys.sign(dict(CLAIMS)).split(".")
    other = base64.urlsafe_b64encode(b'{"sub":"mallory"}').rstrip(b"=").decode()
    assert keys.verify(f"{header}.{other}.{signature}") is None
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert keys.verify(f"{header}.{payload}.{flipped}") is None


def test_only_p256_and_ed25519_keys_sign() -> None:
    with pytest.raises(SigningKeyError, match="P-256"):
        SigningKeys([ECKey.generate_key("P-384", private=True, auto_kid=True)])
