"""Token parsing never raises anything unexpected (hypothesis, in process, no server).

- `SigningKeys.verify` (elevated tokens, used by introspection and revocation) answers None
  for anything that is not a token stepup signed, unchanged: arbitrary text, arbitrary
  three-part base64url strings, JWS-shaped ones with real-looking headers, and real tokens
  with one byte changed.
- `SubjectValidator.validate` (the user's token B at /par, /token and /enroll) refuses the
  same inputs, and real upstream tokens with one byte changed, with an `OAuthError` only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stepup.clock import FrozenClock
from stepup.config import Client
from stepup.errors import OAuthError
from stepup.protocol.subject import SubjectValidator, UpstreamKeys
from stepup.signing import SigningKeys, new_key
from tests.support.stepup import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ID,
    ISSUER_UPSTREAM,
    Upstream,
    frozen_now,
    make_config,
)

PROPERTIES = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TOKEN_TYPES = [ACCESS_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:jwt"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64url(json.dumps(value).encode())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
base64url_text = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)
three_parts = st.tuples(base64url_text, base64url_text, base64url_text).map(".".join)


@st.composite
def jws_shaped(draw: st.DrawFn, kids: list[str]) -> str:
    """A compact JWS whose header and payload look real: known algorithms, kids, typ and
    issuer, mixed with arbitrary JSON, over a random (or empty) signature."""
    header = draw(
        st.one_of(
            json_values,
            st.fixed_dictionaries(
                {
                    "alg": st.sampled_from(["ES256", "EdDSA", "RS256", "HS256", "none"])
                    | json_values
                },
                optional={
                    "kid": st.sampled_from(kids) | json_values,
                    "typ": st.sampled_from(["at+jwt", "application/at+jwt", "JWT"]) | json_values,
                    "crit": json_values,
                    "jwk": json_values,
                    "b64": st.booleans(),
                },
            ),
        )
    )
    claims = draw(
        st.one_of(
            json_values,
            st.fixed_dictionaries(
                {},
                optional={
                    "iss": st.just(ISSUER_UPSTREAM) | json_values,
                    "sub": json_values,
                    "aud": json_values,
                    "client_id": st.just(CLIENT_ID) | json_values,
                    "exp": st.integers() | st.floats() | json_values,
                    "nbf": st.integers() | json_values,
                    "iat": st.integers() | json_values,
                    "auth_time": st.integers() | json_values,
                    "jti": json_values,
                    "cnf": json_values,
                },
            ),
        )
    )
    signature = draw(st.binary(max_size=80))
    return f"{segment(header)}.{segment(claims)}.{b64url(signature)}"


@st.composite
def one_byte_changed(draw: st.DrawFn, token: str) -> str:
    """`token` with one byte (of its UTF-8 form, read back as Latin-1) changed."""
    raw = bytearray(token.encode())
    index = draw(st.integers(0, len(raw) - 1))
    raw[index] ^= draw(st.integers(1, 255))
    return raw.decode("latin-1")


# -- SigningKeys.verify ---------------------------------------------------------------------

SIGNING = SigningKeys([new_key()])
OTHER_SIGNING = SigningKeys([new_key()])
CLAIMS = {"iss": "http://localhost:8000", "sub": "alice", "jti": "j-1", "exp": 2_000_000_000}
SIGNED = SIGNING.sign(CLAIMS)
KIDS = [str(SIGNING.active.kid), str(OTHER_SIGNING.active.kid)]


def test_verify_accepts_an_unchanged_token() -> None:
    assert SIGNING.verify(SIGNED) == CLAIMS
    assert SIGNING.verify(OTHER_SIGNING.sign(CLAIMS)) is None


def test_verify_answers_none_for_a_deprecated_algorithm() -> None:
    """A header naming a deprecated algorithm must not make verification warn (or raise, where
    warnings are errors, as in this suite): joserfc 1.8 warns on `alg: EdDSA` (RFC 9864)."""
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": KIDS[0]}
    assert SIGNING.verify(f"{segment(header)}.{segment(CLAIMS)}.AAAA") is None


@PROPERTIES
@given(token=st.one_of(st.text(), three_parts, jws_shaped(KIDS)))
@example(token="")
@example(token="..")
def test_verify_answers_none_for_arbitrary_input(token: str) -> None:
    assert SIGNING.verify(token) is None


@PROPERTIES
@given(token=one_byte_changed(SIGNED))
def test_verify_answers_none_for_a_token_with_one_byte_changed(token: str) -> None:
    assert SIGNING.verify(token) is None


# -- SubjectValidator.validate --------------------------------------------------------------


class Subjects:
    """A validator over the test policy; the upstream keys come from a JWKS file (no HTTP)."""

    def __init__(self, directory: Path) -> None:
        self.clock: FrozenClock = frozen_now()
        self.upstream = Upstream(directory, self.clock)
        config = make_config(self.upstream, directory / "data")
        self.client: Client = config.clients[CLIENT_ID]
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient()
        self.validator = SubjectValidator(config, UpstreamKeys(self.http, self.clock), self.clock)

    def validate(self, token: str | None, token_type: str | None = ACCESS_TOKEN_TYPE) -> Any:
        return self.loop.run_until_complete(self.validator.validate(token, token_type, self.client))

    def refuses(self, token: str | None, token_type: str | None = ACCESS_TOKEN_TYPE) -> None:
        """Only an OAuthError may come out; any other exception fails the test as it is."""
        with pytest.raises(OAuthError):
            self.validate(token, token_type)

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


@pytest.fixture(scope="module")
def subjects() -> Iterator[Subjects]:
    with tempfile.TemporaryDirectory(prefix="token-parsing-") as directory:
        subjects = Subjects(Path(directory))
        try:
            yield subjects
        finally:
            subjects.close()


def test_validate_accepts_a_real_token(subjects: Subjects) -> None:
    subject = subjects.validate(subjects.upstream.token("alice"))
    assert subject.sub == "alice"


@PROPERTIES
@given(
    token=st.one_of(st.none(), st.text(), three_parts),
    token_type=st.one_of(st.none(), st.sampled_from(TOKEN_TYPES), st.text(max_size=40)),
)
def test_validate_refuses_arbitrary_input_with_an_oauth_error(
    subjects: Subjects, token: str | None, token_type: str | None
) -> None:
    subjects.refuses(token, token_type)


def test_validate_refuses_a_deprecated_algorithm_with_an_oauth_error(subjects: Subjects) -> None:
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": str(subjects.upstream.key.kid)}
    claims = {"iss": ISSUER_UPSTREAM, "client_id": CLIENT_ID, "sub": "alice", "exp": 2**31}
    subjects.refuses(f"{segment(header)}.{segment(claims)}.AAAA")


@PROPERTIES
@given(data=st.data())
def test_validate_refuses_jws_shaped_input_with_an_oauth_error(
    subjects: Subjects, data: st.DataObject
) -> None:
    kids = [str(subjects.upstream.key.kid), "unknown-kid"]
    subjects.refuses(data.draw(jws_shaped(kids)), data.draw(st.sampled_from(TOKEN_TYPES)))


@PROPERTIES
@given(data=st.data())
def test_validate_refuses_a_real_token_with_one_byte_changed(
    subjects: Subjects, data: st.DataObject
) -> None:
    token = subjects.upstream.token("alice")
    subjects.refuses(data.draw(one_byte_changed(token)))
