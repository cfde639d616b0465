"""stepup's own tokens: the header and payload bytes are those joserfc's jwt.encode writes."""

from __future__ import annotations

from joserfc import jwt

from stepup.signing import SigningKeys, new_key


def test_a_signed_token_has_the_bytes_jwt_encode_writes_and_verifies() -> None:
    keys = SigningKeys([new_key()])
    claims = {"iss": "https://stepup.example", "sub": "zoë", "exp": 2_000_000_000, "amr": ["otp"]}
    token = keys.sign(dict(claims))
    reference = jwt.encode(
        {"alg": "ES256", "typ": "at+jwt", "kid": keys.active.kid},
        dict(claims),
        keys.active,
        algorithms=["ES256"],
    )
    # ECDSA signatures are randomized: everything before them must match byte for byte.
    assert token.rsplit(".", 1)[0] == reference.rsplit(".", 1)[0]
    assert keys.verify(token) == claims
