"""Forged and confused tokens: key-locating headers never fetched, foreign signatures and
`typ`/`alg` tricks refused, PKCE downgrades refused, codes bound to their client.

References: RFC 8725 (JWT BCP) §2.1-2.8, §3.1, §3.11; RFC 9068 §4; RFC 9700 §2.1.1, §4.8.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stepup.clock import FrozenClock
from stepup.config import parse
from tests.support.oauth import assert_oauth_error, module_server
from tests.support.server import LiveServer
from tests.support.stepup import (
    OTHER_ID,
    OTHER_SECRET,
    ScopeAndMaxAge,
    Stepup,
    Upstream,
    pkce,
    policy_document,
    running_stepup,
)

live_stepup, stepup = module_server("token-safety")
NO_REUSE: ScopeAndMaxAge = {"scope": "payments:write", "max_age": "0"}


class AttackerServer:
    """The attacker's web server: serves its JWKS (and anything else) and counts requests."""

    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", private=True, auto_kid=True)
        self.hits: Counter[str] = Counter()
        self.url = ""
        self.app = Starlette(routes=[Route("/{path:path}", self.serve)])

    async def serve(self, request: Request) -> Response:
        self.hits[request.url.path] += 1
        if request.url.path.endswith(".json"):
            return JSONResponse({"keys": [self.key.as_dict(private=False)]})
        return Response(
            b"-----BEGIN CERTIFICATE-----\n", media_type="application/pem-certificate-chain"
        )

    @property
    def total(self) -> int:
        return sum(self.hits.values())


@pytest.fixture(scope="module")
def attacker_server() -> Iterator[AttackerServer]:
    server = AttackerServer()
    with LiveServer(server.app, lifespan="off") as live:
        server.url = live.url
        yield server


@pytest.fixture
def attacker(attacker_server: AttackerServer) -> AttackerServer:
    attacker_server.hits.clear()
    return attacker_server


# -- helpers --------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def part_of(token: str, index: int) -> dict[str, Any]:
    text = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    return decoded


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())


def elevated(stepup: Stepup, sub: str = "alice") -> str:
    """A real step-up and exchange: the elevated token E."""
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(browser, sub=sub, **NO_REUSE)
    response = stepup.token(query["code"][0], verifier, subject_token=stepup.upstream.token(sub))
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def stepup_signing_key(stepup: Stepup) -> ECKey:
    """stepup's own private signing key (the embedded default keeps it in the data dir)."""
    path = stepup.config.deployment.data_dir / "signing-keys.json"
    return ECKey.import_key(json.loads(path.read_text())["keys"][0])


def inactive(stepup: Stepup, token: str) -> bool:
    response = stepup.introspect(token)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return bool(response.json() == {"active": False})


def code_and_verifier(stepup: Stepup, sub: str = "alice") -> tuple[str, str]:
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(browser, sub=sub, **NO_REUSE)
    return query["code"][0], verifier


# -- key-locating headers in subject tokens ---------------------------------------------------


@pytest.mark.parametrize("kid", ["attacker", "trusted"])
def test_subject_token_with_jku_to_an_attacker_jwks_is_refused_unfetched(
    stepup: Stepup, attacker: AttackerServer, kid: str
) -> None:
    header = {
        "jku": attacker.url + "/jwks.json",
        "kid": attacker.key.kid if kid == "attacker" else stepup.upstream.key.kid,
    }
    token = stepup.upstream.token(key=attacker.key, header=header)
    assert_oauth_error(stepup.par(token), 400, "invalid_request")
    assert attacker.total == 0, attacker.hits


def test_subject_token_with_x5u_to_an_attacker_certificate_is_refused_unfetched(
    stepup: Stepup, attacker: AttackerServer
) -> None:
    token = stepup.upstream.token(key=attacker.key, header={"x5u": attacker.url + "/cert.pem"})
    assert_oauth_error(stepup.par(token), 400, "invalid_request")
    assert attacker.total == 0, attacker.hits


def test_subject_token_carrying_jku_x5u_and_jwk_at_once_is_refused_unfetched(
    stepup: Stepup, attacker: AttackerServer
) -> None:
    header = {
        "jku": attacker.url + "/jwks.json",
        "x5u": attacker.url + "/cert.pem",
        "jwk": attacker.key.as_dict(private=False),
        "kid": stepup.upstream.key.kid,
    }
    token = stepup.upstream.token(key=attacker.key, header=header)
    assert_oauth_error(stepup.par(token), 400, "invalid_request")
    assert attacker.total == 0, attacker.hits


def test_key_headers_are_not_fetched_at_the_token_endpoint_either(
    stepup: Stepup, attacker: AttackerServer
) -> None:
    code, verifier = code_and_verifier(stepup)
    forged = stepup.upstream.token(
        key=attacker.key,
        header={"jku": attacker.url + "/jwks.json", "x5u": attacker.url + "/cert.pem"},
    )
    response = stepup.token(code, verifier, subject_token=forged)
    assert_oauth_error(response, 400, "invalid_request")
    assert "access_token" not in response.text
    assert attacker.total == 0, attacker.hits


def test_genuine_subject_token_with_a_jku_header_is_verified_by_the_configured_keys_only(
    stepup: Stepup, attacker: AttackerServer
) -> None:
    # Signed by the real upstream key: valid, and the header is simply not followed.
    token = stepup.upstream.token(header={"jku": attacker.url + "/jwks.json"})
    assert stepup.par(token, **NO_REUSE).status_code == 201
    assert attacker.total == 0, attacker.hits


def rsa_stepup(
    tmp_path: Path, redis_url: str, clock: FrozenClock, upstream: Upstream, key: RSAKey
) -> Any:
    """A stepup whose one upstream publishes (in a JWKS file) only this RSA key, for RS256."""
    jwks = tmp_path / "rsa-jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    document = policy_document(upstream, tmp_path / "data")
    document["upstream"][0]["jwks_file"] = str(jwks)
    document["upstream"][0]["algorithms"] = ["RS256"]
    return running_stepup(parse(document, base_dir=tmp_path / "data"), redis_url, clock, upstream)


# joserfc warns (SecurityWarning) when it imports a short RSA key; the suite turns warnings
# into errors, which would hide what stepup does in production, where a warning is only logged.
@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")
@pytest.mark.parametrize(("bits", "accepted"), [(1024, False), (2048, True)])
def test_subject_token_rs256_key_must_be_at_least_2048_bits(
    tmp_path: Path,
    redis_url: str,
    clock: FrozenClock,
    upstream: Upstream,
    bits: int,
    accepted: bool,
) -> None:
    # RFC 7518 §3.3: "A key of size 2048 bits or larger MUST be used with these algorithms."
    key = RSAKey.generate_key(bits, private=True, auto_kid=True)
    with rsa_stepup(tmp_path, redis_url, clock, upstream, key) as rsa:
        token = upstream.token(key=key, header={"alg": "RS256"})  # type: ignore[arg-type]
        response = rsa.par(token, **NO_REUSE)
    if accepted:
        assert response.status_code == 201, response.text
    else:
        assert_oauth_error(response, 400, "invalid_request")


# -- forged elevated tokens at introspection ------------------------------------------------


def test_elevated_token_resigned_by_an_attacker_key_served_by_jku_reads_inactive(
    stepup: Stepup, attacker: AttackerServer
) -> None:
    token = elevated(stepup)
    header = {**part_of(token, 0), "jku": attacker.url + "/jwks.json"}
    forged = jwt.encode(header, part_of(token, 1), attacker.key)
    assert inactive(stepup, forged)
    assert attacker.total == 0, attacker.hits
    assert not inactive(stepup, token)


def test_elevated_token_with_typ_jwt_reads_inactive(stepup: Stepup) -> None:
    # Even signed by stepup's own key: an access token is `at+jwt` (RFC 9068 §4, RFC 8725 §3.11).
    token = elevated(stepup)
    header = {**part_of(token, 0), "typ": "JWT"}
    confused = jwt.encode(header, part_of(token, 1), stepup_signing_key(stepup))
    assert inactive(stepup, confused)
    assert not inactive(stepup, token)


def test_elevated_token_without_typ_reads_inactive(stepup: Stepup) -> None:
    token = elevated(stepup)
    header = {k: v for k, v in part_of(token, 0).items() if k != "typ"}
    confused = jwt.encode(header, part_of(token, 1), stepup_signing_key(stepup))
    assert inactive(stepup, confused)


def test_elevated_token_with_alg_none_reads_inactive(stepup: Stepup) -> None:
    token = elevated(stepup)
    header = {**part_of(token, 0), "alg": "none"}
    assert inactive(stepup, unsigned(header, part_of(token, 1)) + ".")
    assert inactive(stepup, unsigned(header, part_of(token, 1)) + "." + token.split(".")[2])


def test_elevated_token_hs256_signed_with_the_public_key_reads_inactive(stepup: Stepup) -> None:
    token = elevated(stepup)
    public_pem = stepup_signing_key(stepup).as_pem(private=False)
    header = {**part_of(token, 0), "alg": "HS256"}
    signing_input = unsigned(header, part_of(token, 1))
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert inactive(stepup, signing_input + "." + b64url(signature))


def test_elevated_token_is_not_accepted_as_a_subject_token(stepup: Stepup) -> None:
    token = elevated(stepup)
    assert_oauth_error(stepup.par(token, **NO_REUSE), 400, "invalid_request")
    code, verifier = code_and_verifier(stepup, "bob")
    assert_oauth_error(stepup.token(code, verifier, subject_token=token), 400, "invalid_request")


# -- PKCE -------------------------------------------------------------------------------------


def test_par_without_code_challenge_is_invalid_request(stepup: Stepup) -> None:
    response = stepup.par(code_challenge=None, code_challenge_method=None)
    assert_oauth_error(response, 400, "invalid_request")


def test_token_request_without_code_verifier_is_refused_and_leaves_the_code_usable(
    stepup: Stepup,
) -> None:
    # RFC 9700 §2.1.1: a code issued with a code_challenge is never redeemed without the
    # verifier. The request is refused before the code is touched, so whoever sent it (an
    # attacker with a stolen code) cannot burn the legitimate client's code.
    code, verifier = code_and_verifier(stepup)
    refused = stepup.token(code, None)  # type: ignore[arg-type]
    assert_oauth_error(refused, 400, "invalid_request")
    assert "access_token" not in refused.text
    assert stepup.token(code, verifier).status_code == 200


def test_wrong_code_verifier_is_invalid_grant_and_no_token_ever_comes_of_that_code(
    stepup: Stepup,
) -> None:
    # A mismatching verifier means someone else holds the code: it is spent, fail closed.
    code, verifier = code_and_verifier(stepup)
    other_verifier, _ = pkce()
    assert_oauth_error(stepup.token(code, other_verifier), 400, "invalid_grant")
    assert_oauth_error(stepup.token(code, verifier), 400, "invalid_grant")


# -- a code is bound to its client ------------------------------------------------------------


def test_code_of_client_a_redeemed_by_client_b_with_its_own_valid_token_is_invalid_grant(
    stepup: Stepup,
) -> None:
    code, verifier = code_and_verifier(stepup)
    b_token = stepup.upstream.token(client_id=OTHER_ID)
    # B's own subject token is valid for B: B may start a step-up of its own with it.
    own = stepup.par(
        b_token, auth=(OTHER_ID, OTHER_SECRET), redirect_uri="http://localhost:9998/cb", **NO_REUSE
    )
    assert own.status_code == 201, own.text
    response = stepup.token(code, verifier, subject_token=b_token, auth=(OTHER_ID, OTHER_SECRET))
    assert_oauth_error(response, 400, "invalid_grant")
    assert "access_token" not in response.text


def test_forged_token_cannot_revoke_the_real_one(stepup: Stepup) -> None:
    token = elevated(stepup)
    forger = ECKey.generate_key("P-256", private=True)
    forged = jwt.encode(part_of(token, 0), part_of(token, 1), forger)
    assert stepup.revoke(forged).status_code == 200  # RFC 7009 §2.2: invalid tokens are 200
    assert not inactive(stepup, token)
