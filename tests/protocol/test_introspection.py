"""Introspection (RFC 7662) and revocation (RFC 7009) of elevated tokens, over real HTTP and
Redis, with the live server's clock in the test's hand."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, Unpack

import httpx
import pytest
import redis
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.support.oauth import assert_oauth_error, module_server
from tests.support.stepup import (
    API,
    CLIENT_ID,
    CLIENT_SECRET,
    OTHER_ID,
    OTHER_RS_ID,
    OTHER_RS_SECRET,
    OTHER_SECRET,
    RS_ID,
    RS_SECRET,
    ParFields,
    Stepup,
)

RACERS = 50


live_stepup, stepup = module_server("introspection")


def elevated(stepup: Stepup, **par_fields: Unpack[ParFields]) -> tuple[str, dict[str, Any]]:
    """A real step-up and exchange: the elevated token and the token response."""
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(browser, None, "alice", **par_fields)
    response = stepup.token(query["code"][0], verifier)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body["access_token"], body


def part_of(token: str, index: int) -> dict[str, Any]:
    """The decoded JSON of a JWT's header (0) or payload (1), unverified."""
    text = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    return decoded


def claims_of(token: str) -> dict[str, Any]:
    return part_of(token, 1)


def is_active(stepup: Stepup, token: str, auth: tuple[str, str] = (RS_ID, RS_SECRET)) -> bool:
    response = stepup.introspect(token, auth=auth)
    assert response.status_code == 200, response.text
    active = response.json()["active"]
    assert isinstance(active, bool)
    return active


def assert_inactive(response: httpx.Response) -> None:
    """RFC 7662 §2.2: an inactive token is `{"active": false}` and nothing more."""
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {"active": False}


# --- who may introspect -------------------------------------------------------------


def test_client_credential_cannot_introspect(stepup: Stepup) -> None:
    token, _ = elevated(stepup)
    response = stepup.introspect(token, auth=(CLIENT_ID, CLIENT_SECRET))
    assert_oauth_error(response, 401, "invalid_client")
    assert "www-authenticate" in response.headers


def test_wrong_resource_server_secret_is_invalid_client(stepup: Stepup) -> None:
    response = stepup.introspect("anything", auth=(RS_ID, "wrong"))
    assert_oauth_error(response, 401, "invalid_client")
    assert "www-authenticate" in response.headers


def test_introspection_without_credentials_is_invalid_client(stepup: Stepup) -> None:
    response = stepup.http.post("/introspect", data={"token": "anything"})
    assert_oauth_error(response, 401, "invalid_client")


def test_introspection_without_token_is_invalid_request(stepup: Stepup) -> None:
    response = stepup.http.post("/introspect", data={}, auth=(RS_ID, RS_SECRET))
    assert_oauth_error(response, 400, "invalid_request")


# --- what an active answer says -----------------------------------------------------


def test_active_token_response_has_every_field(stepup: Stepup) -> None:
    token, issued = elevated(stepup)
    now = int(stepup.clock.now())
    response = stepup.introspect(token)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    claims = claims_of(token)
    assert body["active"] is True
    assert body["iss"] == stepup.config.issuer
    assert body["sub"] == "alice"
    assert body["aud"] == API
    assert body["client_id"] == CLIENT_ID
    assert body["scope"] == "payments:write"
    assert body["token_type"] == "Bearer"
    assert body["iat"] == now
    assert body["exp"] == now + issued["expires_in"]
    assert body["jti"] == claims["jti"]
    assert body["acr"] == "urn:stepup:acr:mfa"
    assert body["amr"] == ["otp"]
    assert body["auth_time"] == now


def test_introspection_agrees_with_the_token_claims(stepup: Stepup) -> None:
    token, _ = elevated(stepup)
    body = stepup.introspect(token).json()
    claims = claims_of(token)
    for name in ("iss", "sub", "aud", "client_id", "scope", "acr", "amr", "auth_time", "exp"):
        assert body[name] == claims[name], name


# --- inactive answers ---------------------------------------------------------------


def test_another_resource_server_sees_inactive(stepup: Stepup) -> None:
    token, _ = elevated(stepup)
    assert_inactive(stepup.introspect(token, auth=(OTHER_RS_ID, OTHER_RS_SECRET)))


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "e30.e30.", "x" * 5000])
def test_garbage_is_inactive(stepup: Stepup, garbage: str) -> None:
    assert_inactive(stepup.introspect(garbage))


def test_token_signed_by_another_key_is_inactive(stepup: Stepup) -> None:
    # The forgery copies a live token's header (kid included) and claims (jti included).
    token, _ = elevated(stepup)
    forger = ECKey.generate_key("P-256", private=True)
    forged = jwt.encode(part_of(token, 0), claims_of(token), forger)
    assert_inactive(stepup.introspect(forged))
    assert is_active(stepup, token)


def test_upstream_token_is_inactive(stepup: Stepup) -> None:
    assert_inactive(stepup.introspect(stepup.upstream.token()))


# --- expiry against the injected clock ----------------------------------------------


@pytest.mark.parametrize(("offset", "active"), [(-1, True), (0, False), (1, False)])
def test_expiry_edges(stepup: Stepup, offset: int, active: bool) -> None:
    token, _ = elevated(stepup)
    exp = claims_of(token)["exp"]
    stepup.clock.set(exp + offset)
    assert is_active(stepup, token) is active


def test_revoked_token_is_inactive_at_once(stepup: Stepup) -> None:
    token, _ = elevated(stepup)
    assert is_active(stepup, token)
    assert stepup.revoke(token).status_code == 200
    assert_inactive(stepup.introspect(token))


# --- remembered answers (introspection.Answers) ---------------------------------------
# A token introspected once has its answer remembered by the record's bytes; what can change
# is still decided on every call.


@pytest.mark.parametrize("offset", [0, 1])
def test_a_remembered_answer_still_expires(stepup: Stepup, offset: int) -> None:
    token, _ = elevated(stepup)
    exp = claims_of(token)["exp"]
    stepup.clock.set(exp - 1)
    assert is_active(stepup, token)
    stepup.clock.set(exp + offset)
    assert_inactive(stepup.introspect(token))


def test_a_remembered_answer_is_not_shown_to_another_resource_server(stepup: Stepup) -> None:
    token, _ = elevated(stepup)
    assert is_active(stepup, token)
    assert_inactive(stepup.introspect(token, auth=(OTHER_RS_ID, OTHER_RS_SECRET)))
    assert is_active(stepup, token)


def test_a_remembered_answer_is_the_same_answer(stepup: Stepup) -> None:
    token, _ = elevated(stepup)
    first, second = stepup.introspect(token), stepup.introspect(token)
    assert first.content == second.content
    assert first.json()["jti"] == claims_of(token)["jti"]
    assert first.headers["content-type"] == "application/json"
    assert first.headers["cache-control"] == "no-store"
    assert first.headers["pragma"] == "no-cache"


# --- single use ---------------------------------------------------------------------


def test_single_use_token_is_active_once(stepup: Stepup) -> None:
    token, issued = elevated(stepup, scope="audit:read")
    assert issued["scope"] == "audit:read"
    first = stepup.introspect(token).json()
    assert first["active"] is True
    assert first["scope"] == "audit:read"
    assert_inactive(stepup.introspect(token))


def test_single_use_token_is_not_consumed_by_another_resource_server(stepup: Stepup) -> None:
    token, _ = elevated(stepup, scope="audit:read")
    assert_inactive(stepup.introspect(token, auth=(OTHER_RS_ID, OTHER_RS_SECRET)))
    assert is_active(stepup, token)


def token_commands(redis_url: str, action: Callable[[], object]) -> list[str]:
    """The Redis commands on elevated-token records (`stepup:tok:…`) while `action` runs,
    in the order Redis's MONITOR saw them run. After `action`, an ECHO of a fresh word is
    sent: MONITOR shows commands in the order they run, so once the word is seen, everything
    `action` made Redis do has been seen too."""
    seen: list[str] = []
    word = f"end-of-action-{uuid.uuid4().hex}"
    started, ended = threading.Event(), threading.Event()

    def watch() -> None:
        with redis.Redis.from_url(redis_url, socket_timeout=10) as client, client.monitor() as m:
            started.set()
            while True:
                command = m.next_command()["command"]
                if word in command:
                    ended.set()
                    return
                if "stepup:tok:" in command:
                    seen.append(command.split()[0].upper())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert started.wait(5)
    action()
    with redis.Redis.from_url(redis_url) as client:
        client.echo(word)
    watcher.join(10)
    assert ended.is_set(), "MONITOR did not show the end of the action"
    return seen


def test_a_single_use_token_is_read_and_taken_in_one_command(
    stepup: Stepup, redis_url: str
) -> None:
    token, _ = elevated(stepup, scope="audit:read")
    first = token_commands(redis_url, lambda: stepup.introspect(token))
    assert first == ["GETDEL"]
    assert token_commands(redis_url, lambda: assert_inactive(stepup.introspect(token))) == [
        "GETDEL"
    ]


def test_a_reusable_token_is_read_not_taken(stepup: Stepup, redis_url: str) -> None:
    token, _ = elevated(stepup)
    assert token_commands(redis_url, lambda: is_active(stepup, token)) == ["GET"]
    assert is_active(stepup, token)


def test_a_single_use_token_asked_about_by_another_server_is_only_read(
    stepup: Stepup, redis_url: str
) -> None:
    token, _ = elevated(stepup, scope="audit:read")
    other = (OTHER_RS_ID, OTHER_RS_SECRET)
    seen = token_commands(redis_url, lambda: assert_inactive(stepup.introspect(token, auth=other)))
    assert seen == ["GET"]
    assert is_active(stepup, token)


async def race_introspections(stepup: Stepup, token: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=RACERS, max_keepalive_connections=RACERS)
    async with httpx.AsyncClient(base_url=stepup.url, limits=limits, timeout=30.0) as client:
        return await asyncio.gather(
            *(
                client.post("/introspect", data={"token": token}, auth=(RS_ID, RS_SECRET))
                for _ in range(RACERS)
            )
        )


def test_single_use_token_racing_introspections_see_it_active_once(stepup: Stepup) -> None:
    token, _ = elevated(stepup, scope="audit:read")
    responses = asyncio.run(race_introspections(stepup, token))
    assert {r.status_code for r in responses} == {200}
    assert Counter(r.json()["active"] for r in responses) == {True: 1, False: RACERS - 1}


def test_racing_introspections_of_a_reusable_token_all_see_it_active(stepup: Stepup) -> None:
    token, _ = elevated(stepup)
    responses = asyncio.run(race_introspections(stepup, token))
    assert all(r.status_code == 200 and r.json()["active"] is True for r in responses)


# --- revocation (RFC 7009) ----------------------------------------------------------


@pytest.mark.parametrize("token", ["unknown-token", "a.b.c", "e30.e30."])
def test_revoking_an_unknown_token_is_200(stepup: Stepup, token: str) -> None:
    response = stepup.revoke(token)
    assert response.status_code == 200, response.text


def test_revoking_an_upstream_token_is_200(stepup: Stepup) -> None:
    assert stepup.revoke(stepup.upstream.token()).status_code == 200


def test_client_that_holds_the_token_revokes_it(stepup: Stepup) -> None:
    token, _ = elevated(stepup)
    response = stepup.revoke(token)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert not is_active(stepup, token)


def test_client_revokes_with_client_secret_post(stepup: Stepup) -> None:
    token, _ = elevated(stepup)
    response = stepup.http.post(
        "/revoke",
        data={"token": token, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
    )
    assert response.status_code == 200, response.text
    assert not is_active(stepup, token)


def test_revoking_twice_is_200(stepup: Stepup) -> None:
    token, _ = elevated(stepup)
    assert stepup.revoke(token).status_code == 200
    assert stepup.revoke(token).status_code == 200


def test_resource_server_of_the_audience_revokes_it(stepup: Stepup) -> None:
    token, _ = elevated(stepup)
    response = stepup.revoke(token, auth=(RS_ID, RS_SECRET))
    assert response.status_code == 200, response.text
    assert not is_active(stepup, token)


def test_another_client_cannot_revoke(stepup: Stepup) -> None:
    token, _ = elevated(stepup)
    response = stepup.revoke(token, auth=(OTHER_ID, OTHER_SECRET))
    assert_oauth_error(response, 400, "unauthorized_client")
    assert is_active(stepup, token)


def test_another_resource_server_cannot_revoke(stepup: Stepup) -> None:
    token, _ = elevated(stepup)
    response = stepup.revoke(token, auth=(OTHER_RS_ID, OTHER_RS_SECRET))
    assert_oauth_error(response, 400, "unauthorized_client")
    assert is_active(stepup, token)


def test_revocation_without_token_is_invalid_request(stepup: Stepup) -> None:
    response = stepup.http.post("/revoke", data={}, auth=(CLIENT_ID, CLIENT_SECRET))
    assert_oauth_error(response, 400, "invalid_request")


def test_revocation_without_credentials_is_invalid_client(stepup: Stepup) -> None:
    token, _ = elevated(stepup)
    response = stepup.http.post("/revoke", data={"token": token})
    assert_oauth_error(response, 401, "invalid_client")
    assert "www-authenticate" in response.headers
    assert is_active(stepup, token)


def test_revocation_with_wrong_secret_is_invalid_client(stepup: Stepup) -> None:
    token, _ = elevated(stepup)
    response = stepup.revoke(token, auth=(CLIENT_ID, "wrong"))
    assert_oauth_error(response, 401, "invalid_client")
    assert is_active(stepup, token)
