"""DPoP proof parsing never raises anything but `ProofError` (hypothesis, in process).

`dpop.verify_proof` runs on the `DPoP` header of every request to /par, /token and a route the
toolkit protects; any other exception there is a 500. Inputs: arbitrary text, three-part
base64url strings, and JWS-shaped proofs whose header carries a real public key next to
arbitrary JSON in `alg`, `typ`, `jwk`, `crit` and friends, signed by that key (so the JOSE
library's header checks, not only the signature check, see them) or not at all.
"""

from __future__ import annotations

import asyncio
import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stepup import dpop
from tests.support.dpop import DPoPKey, b64url

PROPERTIES = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
URI = "https://api.example/pay"
NOW = 1_800_000_000
KEY = DPoPKey()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
base64url_text = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60
)


@st.composite
def proofs(draw: st.DrawFn) -> str:
    header = draw(
        st.fixed_dictionaries(
            {
                # Mostly right, so the draws get past the early checks to the JOSE library.
                "typ": st.just("dpop+jwt") | json_values,
                "alg": st.just("ES256") | json_values,
                "jwk": st.just(KEY.public_jwk)
                | st.dictionaries(st.sampled_from(["kty", "crv", "x", "y", "n", "e"]), json_values)
                | json_values,
            },
            optional={
                "crit": json_values | st.lists(st.text(max_size=4), max_size=2),
                "b64": json_values,
                "kid": json_values,
                "zip": json_values,
                "jku": json_values,
            },
        )
    )
    claims = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "jti": st.text(max_size=8) | json_values,
                "htm": st.just("GET") | json_values,
                "htu": st.just(URI) | st.text(max_size=40) | json_values,
                "iat": st.just(NOW) | st.floats() | json_values,
                "ath": json_values,
                "nonce": json_values,
            },
        )
        | json_values
    )
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    if draw(st.booleans()):
        return signing_input + "." + b64url(KEY._es256(signing_input.encode()))
    return signing_input + "." + draw(base64url_text)


async def _accept(key: str, ttl: int) -> bool:
    return True


def _outcome(headers: list[str]) -> str:
    """ "refused" (ProofError), or the thumbprint of the key of a proof that passed;
    any other exception propagates and fails the test."""
    try:
        proof = asyncio.run(
            dpop.verify_proof(
                headers,
                method="GET",
                uri=URI,
                now=NOW,
                policy=dpop.ProofPolicy(),
                claim=_accept,
                access_token="token",
                nonce=lambda value: value is None or isinstance(value, str),
            )
        )
    except dpop.ProofError:
        return "refused"
    return proof.jkt


@PROPERTIES
@given(proof=st.one_of(st.text(max_size=200), proofs()))
@example(proof="..")
@example(proof="a.b.c")
@example(proof=KEY.proof("GET", URI, iat=NOW, header={"crit": 5}, raw=True))
@example(proof=KEY.proof("GET", URI, iat=NOW, header={"crit": [5]}, raw=True))
def test_any_proof_is_accepted_or_refused_with_a_proof_error(proof: str) -> None:
    # Only the one key that signs real proofs here can ever pass.
    assert _outcome([proof]) in ("refused", KEY.jkt)


@PROPERTIES
@given(headers=st.lists(st.one_of(st.text(max_size=40), proofs()), max_size=3))
def test_any_number_of_headers_is_accepted_or_refused_with_a_proof_error(
    headers: list[str],
) -> None:
    assert _outcome(headers) in ("refused", KEY.jkt)
