"""Token exchange: POST /token (RFC 8693) after a real step-up, over real HTTP and Redis."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Unpack

import httpx
import pytest
import redis
from joserfc import jwt
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from stepup.clock import FrozenClock
from stepup.storage import keys
from tests.support.oauth import assert_oauth_error, module_server
from tests.support.stepup import (
    ACCESS_TOKEN_TYPE,
    API,
    CLIENT_ID,
    CLIENT_SECRET,
    EXCHANGE,
    ISSUER_UPSTREAM,
    OTHER_API,
    OTHER_ID,
    OTHER_SECRET,
    RS_ID,
    RS_SECRET,
    ParFields,
    Stepup,
    Upstream,
    make_config,
    running_stepup,
)

MFA = "urn:stepup:acr:mfa"
RACERS = 50


live_stepup, stepup = module_server("exchange")


def elevate(stepup: Stepup, sub: str = "alice", **par_fields: Unpack[ParFields]) -> tuple[str, str]:
    """A real step-up (intake, page, TOTP proof): the code and its PKCE verifier."""
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(browser, sub=sub, **par_fields)
    assert "code" in query, query
    return query["code"][0], verifier


def issued(stepup: Stepup, sub: str = "alice", **par_fields: Unpack[ParFields]) -> httpx.Response:
    code, verifier = elevate(stepup, sub, **par_fields)
    response = stepup.token(code, verifier, subject_token=stepup.upstream.token(sub))
    assert response.status_code == 200, response.text
    return response


def unverified_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def published_keys(stepup: Stepup) -> KeySet:
    response = stepup.http.get("/jwks")
    assert response.status_code == 200
    return KeySet.import_key_set(response.json())


# --- success ------------------------------------------------------------------------


def test_success_body_is_exactly_the_rfc_8693_fields(stepup: Stepup) -> None:
    response = issued(stepup)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"access_token", "issued_token_type", "token_type", "expires_in", "scope"}
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "payments:write"
    assert body["expires_in"] == 300  # the payments:write token_lifetime


def test_elevated_token_header_is_at_jwt_es256_with_a_published_kid(stepup: Stepup) -> None:
    token = issued(stepup).json()["access_token"]
    decoded = jwt.decode(token, published_keys(stepup), algorithms=["ES256"])
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.header["alg"] == "ES256"
    kids = [key["kid"] for key in stepup.http.get("/jwks").json()["keys"]]
    assert decoded.header["kid"] in kids


def test_elevated_token_claims_verify_against_the_published_jwks(stepup: Stepup) -> None:
    response = issued(stepup)
    now = int(stepup.clock.now())
    decoded = jwt.decode(
        response.json()["access_token"], published_keys(stepup), algorithms=["ES256"]
    )
    claims = decoded.claims
    JWTClaimsRegistry(
        now=now,
        iss={"essential": True, "value": stepup.config.issuer},
        sub={"essential": True, "value": "alice"},
        aud={"essential": True, "value": API},
        exp={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
    ).validate(claims)
    assert claims["client_id"] == CLIENT_ID
    assert claims["scope"] == "payments:write"
    assert claims["acr"] == MFA
    assert claims["amr"] == ["otp"]
    assert claims["auth_time"] == now  # the moment the TOTP code was proven
    assert claims["iat"] == now
    assert claims["exp"] == now + response.json()["expires_in"]
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16


def test_elevated_tokens_have_distinct_jtis(stepup: Stepup) -> None:
    first = unverified_claims(issued(stepup, "alice").json()["access_token"])
    second = unverified_claims(issued(stepup, "bob").json()["access_token"])
    assert first["jti"] != second["jti"]


def test_explicit_matching_resource_and_audience_are_accepted(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    response = stepup.token(code, verifier, resource=API, audience=API)
    assert response.status_code == 200, response.text
    assert unverified_claims(response.json()["access_token"])["aud"] == API


def test_client_secret_post_is_accepted_at_the_token_endpoint(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    form = {
        "grant_type": EXCHANGE,
        "subject_token": stepup.upstream.token(),
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "code": code,
        "code_verifier": verifier,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    response = stepup.http.post("/token", data=form)
    assert response.status_code == 200, response.text


# --- request errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    "grant_type",
    [
        "authorization_code",
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "refresh_token",
    ],
)
def test_other_grant_type_is_unsupported_grant_type(stepup: Stepup, grant_type: str) -> None:
    code, verifier = elevate(stepup)
    response = stepup.token(code, verifier, grant_type=grant_type)
    assert_oauth_error(response, 400, "unsupported_grant_type")


def test_missing_code_is_invalid_request(stepup: Stepup) -> None:
    _, verifier = elevate(stepup)
    assert_oauth_error(stepup.token(None, verifier), 400, "invalid_request")  # type: ignore[arg-type]


def test_missing_code_verifier_is_invalid_request(stepup: Stepup) -> None:
    code, _ = elevate(stepup)
    assert_oauth_error(stepup.token(code, None), 400, "invalid_request")  # type: ignore[arg-type]


def test_malformed_code_verifier_is_invalid_request(stepup: Stepup) -> None:
    code, _ = elevate(stepup)
    assert_oauth_error(stepup.token(code, "too-short"), 400, "invalid_request")


def test_wrong_code_verifier_is_invalid_grant(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    wrong = verifier[:-1] + ("A" if verifier[-1] != "A" else "B")
    assert_oauth_error(stepup.token(code, wrong), 400, "invalid_grant")


def test_unknown_code_is_invalid_grant(stepup: Stepup) -> None:
    _, verifier = elevate(stepup)
    assert_oauth_error(stepup.token("no-such-code", verifier), 400, "invalid_grant")


def test_code_from_another_client_is_invalid_grant(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    response = stepup.token(
        code,
        verifier,
        subject_token=stepup.upstream.token(client_id=OTHER_ID),
        auth=(OTHER_ID, OTHER_SECRET),
    )
    assert_oauth_error(response, 400, "invalid_grant")


def test_subject_token_of_another_user_is_invalid_grant(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    response = stepup.token(code, verifier, subject_token=stepup.upstream.token("bob"))
    assert_oauth_error(response, 400, "invalid_grant")


def test_wrong_client_secret_is_invalid_client(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    response = stepup.token(code, verifier, auth=(CLIENT_ID, "wrong"))
    assert_oauth_error(response, 401, "invalid_client")
    assert "www-authenticate" in response.headers


def test_resource_server_credential_cannot_exchange(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    response = stepup.token(code, verifier, auth=(RS_ID, RS_SECRET))
    assert_oauth_error(response, 401, "invalid_client")


def test_missing_subject_token_is_invalid_request(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    form = {
        "grant_type": EXCHANGE,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "code": code,
        "code_verifier": verifier,
    }
    response = stepup.http.post("/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    assert_oauth_error(response, 400, "invalid_request")


def test_other_subject_token_type_is_unsupported_token_type(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    response = stepup.token(
        code, verifier, subject_token_type="urn:ietf:params:oauth:token-type:id_token"
    )
    assert_oauth_error(response, 400, "unsupported_token_type")


@pytest.mark.parametrize(
    "token_type",
    [
        "urn:ietf:params:oauth:token-type:jwt",
        "urn:ietf:params:oauth:token-type:refresh_token",
        "urn:ietf:params:oauth:token-type:id_token",
    ],
)
def test_other_requested_token_type_is_invalid_request(stepup: Stepup, token_type: str) -> None:
    code, verifier = elevate(stepup)
    response = stepup.token(code, verifier, requested_token_type=token_type)
    assert_oauth_error(response, 400, "invalid_request")


def test_actor_token_is_invalid_request(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    response = stepup.token(
        code,
        verifier,
        actor_token=stepup.upstream.token("service"),
        actor_token_type=ACCESS_TOKEN_TYPE,
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_repeated_parameter_is_invalid_request(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    form: dict[str, Any] = {
        "grant_type": EXCHANGE,
        "subject_token": stepup.upstream.token(),
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "code": [code, code],
        "code_verifier": verifier,
    }
    response = stepup.http.post("/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    assert_oauth_error(response, 400, "invalid_request")


def test_get_token_is_405_json_error(stepup: Stepup) -> None:
    response = stepup.http.get("/token")
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    assert {"error", "error_description"} <= set(response.json())


# --- one code, one token ------------------------------------------------------------


def test_reused_code_is_invalid_grant(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    assert stepup.token(code, verifier).status_code == 200
    assert_oauth_error(stepup.token(code, verifier), 400, "invalid_grant")


def test_code_of_a_subject_disabled_since_is_invalid_grant_and_spent(
    stepup: Stepup, redis_url: str
) -> None:
    code, verifier = elevate(stepup)
    with redis.Redis.from_url(redis_url) as client:
        client.set(keys.disabled(keys.subject_id(ISSUER_UPSTREAM, "alice")), "1")
        assert_oauth_error(stepup.token(code, verifier), 400, "invalid_grant")
        client.delete(keys.disabled(keys.subject_id(ISSUER_UPSTREAM, "alice")))
    # Re-enabled, the code is still spent: the refused redemption consumed it.
    assert_oauth_error(stepup.token(code, verifier), 400, "invalid_grant")


def test_reused_code_revokes_the_token_of_the_first_redemption(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    first = stepup.token(code, verifier).json()["access_token"]
    assert stepup.introspect(first).json()["active"] is True
    stepup.token(code, verifier)
    assert stepup.introspect(first).json() == {"active": False}


async def race_redemptions(
    stepup: Stepup, code: str, verifier: str, racers: int = RACERS
) -> list[httpx.Response]:
    form = {
        "grant_type": EXCHANGE,
        "subject_token": stepup.upstream.token(),
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "code": code,
        "code_verifier": verifier,
    }
    limits = httpx.Limits(max_connections=racers, max_keepalive_connections=racers)
    async with httpx.AsyncClient(base_url=stepup.url, limits=limits, timeout=30.0) as client:
        return await asyncio.gather(
            *(
                client.post("/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
                for _ in range(racers)
            )
        )


def test_parallel_redemptions_of_one_code_yield_at_most_one_token(stepup: Stepup) -> None:
    # One code consumed once: at most one redemption gets a token (none, when a replay
    # revoked its jti before the winner recorded it), every other one invalid_grant.
    code, verifier = elevate(stepup)
    responses = asyncio.run(race_redemptions(stepup, code, verifier))
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 400} and statuses[200] <= 1, statuses
    assert statuses[400] >= RACERS - 1
    losers = [r for r in responses if r.status_code == 400]
    assert {r.json()["error"] for r in losers} == {"invalid_grant"}


def test_expired_code_is_invalid_grant(
    tmp_path: Path, redis_url: str, clock: FrozenClock, upstream: Upstream
) -> None:
    config = make_config(upstream, tmp_path / "short-codes", code_lifetime=1)
    with running_stepup(config, redis_url, clock, upstream) as short:
        code, verifier = elevate(short)
        time.sleep(2.1)  # codes die by Redis TTL, which follows the real clock
        assert_oauth_error(short.token(code, verifier), 400, "invalid_grant")


# --- scope and target ---------------------------------------------------------------


def test_narrower_scope_is_granted(stepup: Stepup) -> None:
    code, verifier = elevate(stepup, scope="payments:write audit:read")
    response = stepup.token(code, verifier, scope="payments:write")
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "payments:write"
    assert unverified_claims(response.json()["access_token"])["scope"] == "payments:write"


def test_wider_scope_is_invalid_scope(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    response = stepup.token(code, verifier, scope="payments:write audit:read")
    assert_oauth_error(response, 400, "invalid_scope")


def test_other_scope_is_invalid_scope(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    assert_oauth_error(stepup.token(code, verifier, scope="audit:read"), 400, "invalid_scope")


def test_resource_mismatch_is_invalid_target(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    assert_oauth_error(stepup.token(code, verifier, resource=OTHER_API), 400, "invalid_target")


def test_audience_mismatch_is_invalid_target(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    assert_oauth_error(stepup.token(code, verifier, audience=OTHER_API), 400, "invalid_target")


# --- lifetime and the subject token -------------------------------------------------


def test_lifetime_never_goes_beyond_the_subject_tokens_exp(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    subject = stepup.upstream.token(lifetime=100)
    response = stepup.token(code, verifier, subject_token=subject)
    assert response.status_code == 200, response.text
    assert 0 < response.json()["expires_in"] <= 100
    claims = unverified_claims(response.json()["access_token"])
    assert claims["exp"] <= unverified_claims(subject)["exp"]


def test_expired_subject_token_is_invalid_request(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    subject = stepup.upstream.token(age=3700, lifetime=3600)  # expired 100 s ago
    assert_oauth_error(stepup.token(code, verifier, subject_token=subject), 400, "invalid_request")


def test_subject_token_expired_moments_ago_is_invalid_request(stepup: Stepup) -> None:
    # Expired 5 s ago: inside the upstream's clock-skew leeway, but expired all the same.
    code, verifier = elevate(stepup)
    subject = stepup.upstream.token(age=3605, lifetime=3600)
    assert_oauth_error(stepup.token(code, verifier, subject_token=subject), 400, "invalid_request")


def test_subject_token_issued_to_another_client_is_invalid_request(stepup: Stepup) -> None:
    code, verifier = elevate(stepup)
    subject = stepup.upstream.token(client_id=OTHER_ID)
    assert_oauth_error(stepup.token(code, verifier, subject_token=subject), 400, "invalid_request")


def test_two_racing_redemptions_never_leave_a_live_token(stepup: Stepup) -> None:
    # With two racers the replay may reach Redis before the winner records its token: the
    # jti is then marked revoked first and the winner's record is refused (no live token).
    for round_ in range(30):
        code, verifier = elevate(stepup, sub=f"racer-{round_}")
        responses = asyncio.run(race_redemptions(stepup, code, verifier, racers=2))
        for response in responses:
            if response.status_code == 200:
                token = response.json()["access_token"]
                assert stepup.introspect(token).json() == {"active": False}, round_
        assert any(r.status_code == 400 for r in responses)


def test_parallel_redemptions_leave_the_winning_token_revoked(stepup: Stepup) -> None:
    # Every losing redemption is a reuse of the code (RFC 6749 §4.1.2).
    code, verifier = elevate(stepup)
    responses = asyncio.run(race_redemptions(stepup, code, verifier))
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) <= 1
    for winner in winners:
        assert stepup.introspect(winner.json()["access_token"]).json() == {"active": False}
    assert len(responses) - len(winners) >= RACERS - 1
