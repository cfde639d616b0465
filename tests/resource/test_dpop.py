"""The toolkit with DPoP (RFC 9449 §7): bound tokens from a live stepup on real Redis, proofs
checked against the request being served, in local (JWKS) and introspection mode."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stepup.resource import Guard, Requirement, StepUpMiddleware, requires
from stepup.storage.embedded import EmbeddedRedis
from tests.resource.apps import resource, starlette_app
from tests.resource.conftest import Peers, bearer, protected
from tests.support.dpop import DPoPKey
from tests.support.own_issuer import Counting, claims_of
from tests.support.stepup import API, Stepup, pkce

pytestmark = pytest.mark.anyio

ALGS = 'algs="ES256 ES384 EdDSA Ed25519 PS256 RS256"'
METADATA = f"{API}/.well-known/oauth-protected-resource"
MODES = {"local": "/pay", "introspection": "/introspect"}
RACERS = 50


@pytest.fixture(params=sorted(MODES))
def route(request: pytest.FixtureRequest) -> str:
    return MODES[str(request.param)]


def bound_token(stepup: Stepup, key: DPoPKey, sub: str = "alice") -> str:
    """A real step-up, exchanged with a proof by `key`: an elevated token bound to it."""
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(browser, None, sub)
    proof = key.proof("POST", stepup.url + "/token", iat=stepup.clock.now())
    response = stepup.token(
        query["code"][0], verifier, stepup.upstream.token(sub), headers={"DPoP": proof}
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP"
    token: str = response.json()["access_token"]
    return token


def dpop(
    token: str, key: DPoPKey, clock_now: float, path: str, method: str = "GET", **options: Any
) -> dict[str, str]:
    return {
        "Authorization": f"DPoP {token}",
        "DPoP": key.proof(method, API + path, iat=clock_now, access_token=token, **options),
    }


# -- a bound token at the resource ----------------------------------------------------------


async def test_a_bound_token_with_a_proof_from_its_key_passes(
    peers: Peers, framework: str, route: str
) -> None:
    key = DPoPKey()
    token = bound_token(peers.stepup, key)
    async with protected(peers, framework) as (api, _, _):
        response = await api.get(route, headers=dpop(token, key, peers.stepup.clock.now(), route))
    assert response.status_code == 200, response.text
    assert response.json()["sub"] == "alice"


async def test_a_stolen_bound_token_presented_as_bearer_is_refused(
    peers: Peers, framework: str, route: str
) -> None:
    token = bound_token(peers.stepup, DPoPKey())
    async with protected(peers, framework) as (api, _, _):
        response = await api.get(route, headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'DPoP realm="payments", {ALGS}, error="invalid_token", '
        'error_description="The access token is DPoP-bound: present it with a DPoP proof", '
        f'resource_metadata="{METADATA}"'
    )


async def test_a_stolen_bound_token_with_a_proof_by_another_key_is_refused(
    peers: Peers, framework: str, route: str
) -> None:
    token = bound_token(peers.stepup, DPoPKey())
    thief = DPoPKey()
    async with protected(peers, framework) as (api, _, _):
        response = await api.get(route, headers=dpop(token, thief, peers.stepup.clock.now(), route))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'DPoP realm="payments", {ALGS}, error="invalid_token", '
        f'error_description="Invalid DPoP key binding", resource_metadata="{METADATA}"'
    )


async def test_an_unbound_token_presented_with_dpop_is_refused(peers: Peers, route: str) -> None:
    with peers.stepup.browser() as browser:
        query, verifier, _ = peers.stepup.step_up(browser)
    token = peers.stepup.token(query["code"][0], verifier).json()["access_token"]
    assert "cnf" not in claims_of(token)
    async with protected(peers) as (api, _, _):
        response = await api.get(
            route, headers=dpop(token, DPoPKey(), peers.stepup.clock.now(), route)
        )
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_a_step_up_challenge_uses_the_scheme_the_client_used(peers: Peers) -> None:
    key = DPoPKey()
    token = bound_token(peers.stepup, key)
    async with protected(peers) as (api, _, _):
        response = await api.get("/phr", headers=dpop(token, key, peers.stepup.clock.now(), "/phr"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'DPoP realm="payments", {ALGS}, error="insufficient_user_authentication", '
        'error_description="A stronger authentication is required", '
        'acr_values="urn:stepup:acr:phr", scope="payments:write", '
        f'resource_metadata="{METADATA}"'
    )


@pytest.mark.parametrize("path", ["/pay?amount=10", "/pay#x"])
async def test_the_query_is_not_part_of_htu(peers: Peers, path: str) -> None:
    key = DPoPKey()
    token = bound_token(peers.stepup, key)
    async with protected(peers) as (api, _, _):
        response = await api.get(path, headers=dpop(token, key, peers.stepup.clock.now(), "/pay"))
    assert response.status_code == 200, response.text


# -- RFC 9449 §4.3 at the resource, one check each -------------------------------------------

OTHER = DPoPKey()

BAD: dict[str, Callable[[DPoPKey, str, float], list[str]]] = {
    "1: no DPoP header": lambda k, t, now: [],
    "1: two DPoP headers": lambda k, t, now: [
        k.proof("GET", API + "/pay", iat=now, access_token=t),
        k.proof("GET", API + "/pay", iat=now, access_token=t),
    ],
    "2: not a JWT": lambda k, t, now: ["garbage"],
    "3: no jti": lambda k, t, now: [
        k.proof("GET", API + "/pay", iat=now, access_token=t, drop=("jti",))
    ],
    "4: typ JWT": lambda k, t, now: [
        k.proof("GET", API + "/pay", iat=now, access_token=t, header={"typ": "JWT"})
    ],
    "5: alg none": lambda k, t, now: [
        k.proof("GET", API + "/pay", iat=now, access_token=t, header={"alg": "none"})
    ],
    "5: alg HS256": lambda k, t, now: [
        k.proof("GET", API + "/pay", iat=now, access_token=t, header={"alg": "HS256"})
    ],
    "6: signed by another key": lambda k, t, now: [
        k.proof("GET", API + "/pay", iat=now, access_token=t, signer=OTHER.key)
    ],
    "6: crit a number": lambda k, t, now: [
        k.proof("GET", API + "/pay", iat=now, access_token=t, header={"crit": 5}, raw=True)
    ],
    "6: crit lists a number": lambda k, t, now: [
        k.proof("GET", API + "/pay", iat=now, access_token=t, header={"crit": [5]}, raw=True)
    ],
    "7: private key in jwk": lambda k, t, now: [
        k.proof(
            "GET",
            API + "/pay",
            iat=now,
            access_token=t,
            header={"jwk": k.key.as_dict(private=True)},
        )
    ],
    "8: htm POST": lambda k, t, now: [k.proof("POST", API + "/pay", iat=now, access_token=t)],
    "9: htu another route": lambda k, t, now: [
        k.proof("GET", API + "/read", iat=now, access_token=t)
    ],
    "9: htu another host": lambda k, t, now: [
        k.proof("GET", "https://evil.example/pay", iat=now, access_token=t)
    ],
    "9: htu the token endpoint": lambda k, t, now: [
        k.proof("GET", "http://localhost:8000/token", iat=now, access_token=t)
    ],
    "11: iat too old": lambda k, t, now: [
        k.proof("GET", API + "/pay", iat=now - 61, access_token=t)
    ],
    "11: iat in the future": lambda k, t, now: [
        k.proof("GET", API + "/pay", iat=now + 6, access_token=t)
    ],
    "12: no ath": lambda k, t, now: [k.proof("GET", API + "/pay", iat=now)],
    "12: ath of another token": lambda k, t, now: [
        k.proof("GET", API + "/pay", iat=now, access_token=t + "x")
    ],
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_a_proof_failing_one_check_is_refused_with_invalid_dpop_proof(
    peers: Peers, case: str
) -> None:
    key = DPoPKey()
    token = bound_token(peers.stepup, key)
    now = peers.stepup.clock.now()
    headers = [("Authorization", f"DPoP {token}")]
    headers += [("DPoP", proof) for proof in BAD[case](key, token, now)]
    async with protected(peers) as (api, _, _):
        response = await api.get("/pay", headers=headers)
        # The control: the same token with a good proof passes.
        good = await api.get("/pay", headers=dpop(token, key, now, "/pay"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith(
        f'DPoP realm="payments", {ALGS}, error="invalid_dpop_proof"'
    )
    assert response.json()["error"] == "invalid_dpop_proof"
    assert good.status_code == 200, good.text


@pytest.mark.parametrize(
    ("offset", "accepted"), [(-59, True), (-60, True), (-61, False), (5, True), (6, False)]
)
async def test_iat_edges_at_the_resource(peers: Peers, offset: int, accepted: bool) -> None:
    key = DPoPKey()
    token = bound_token(peers.stepup, key)
    now = peers.stepup.clock.now()
    async with protected(peers) as (api, _, _):
        response = await api.get("/pay", headers=dpop(token, key, now + offset, "/pay"))
    assert response.status_code == (200 if accepted else 401), response.text


# -- replay ----------------------------------------------------------------------------------


async def test_a_proof_replayed_within_its_window_is_refused(peers: Peers, route: str) -> None:
    key = DPoPKey()
    token = bound_token(peers.stepup, key)
    headers = dpop(token, key, peers.stepup.clock.now(), route)
    async with protected(peers) as (api, _, _):
        first = await api.get(route, headers=headers)
        peers.stepup.clock.advance(30)
        second = await api.get(route, headers=headers)
    assert first.status_code == 200, first.text
    assert second.status_code == 401
    assert 'error="invalid_dpop_proof"' in second.headers["www-authenticate"]


async def test_fifty_parallel_requests_with_one_proof_pass_once(peers: Peers) -> None:
    key = DPoPKey()
    token = bound_token(peers.stepup, key)
    headers = dpop(token, key, peers.stepup.clock.now(), "/pay")
    async with protected(peers) as (api, _, _):
        responses = await asyncio.gather(*(api.get("/pay", headers=headers) for _ in range(RACERS)))
    assert Counter(r.status_code for r in responses) == {200: 1, 401: RACERS - 1}


async def test_a_shared_replay_cache_refuses_a_proof_seen_by_another_process(
    peers: Peers, redis_server: EmbeddedRedis
) -> None:
    # Two resource-server processes (two guards) sharing one claim callable on Redis.
    shared = aioredis.Redis.from_url(redis_server.url)

    async def claim(key: str, ttl: int) -> bool:
        return bool(await shared.set(f"api:dpop:{key}", 1, nx=True, ex=ttl))

    key = DPoPKey()
    token = bound_token(peers.stepup, key)
    headers = dpop(token, key, peers.stepup.clock.now(), "/pay")
    answers = []
    try:
        for _ in range(2):
            http = Counting()
            guard = Guard(
                resource(peers.stepup.url, upstream_jwks=peers.upstream_jwks),
                clock=peers.stepup.clock,
                http=http,
                dpop_replay=claim,
            )
            transport = httpx.ASGITransport(app=starlette_app(guard))
            async with http, httpx.AsyncClient(transport=transport, base_url=API) as api:
                answers.append(await api.get("/pay", headers=headers))
    finally:
        await shared.aclose()
    assert [a.status_code for a in answers] == [200, 401]


# -- a resource that takes DPoP only ---------------------------------------------------------


async def test_a_resource_requiring_dpop_says_so_and_refuses_bearer(peers: Peers) -> None:
    async with protected(peers, dpop_bound_access_tokens_required=True) as (api, _, _):
        document = (await api.get("/.well-known/oauth-protected-resource")).json()
        none = await api.get("/pay")
        bearer_answer = await api.get("/read", headers=bearer(peers.stepup.upstream.token()))
    assert document["dpop_bound_access_tokens_required"] is True
    assert document["dpop_signing_alg_values_supported"][0] == "ES256"
    assert none.headers["www-authenticate"] == (
        f'DPoP realm="payments", {ALGS}, scope="payments:write", resource_metadata="{METADATA}"'
    )
    assert bearer_answer.status_code == 401
    assert bearer_answer.headers["www-authenticate"].startswith(
        f'DPoP realm="payments", {ALGS}, error="invalid_token"'
    )


# -- the whole loop, DPoP-bound from the user's token on -------------------------------------


async def test_the_whole_loop_bound_to_one_key(peers: Peers, route: str) -> None:
    stepup, key = peers.stepup, DPoPKey()
    # The user's token B, bound by the upstream IdP to the client's key (cnf.jkt).
    user_token = stepup.upstream.token(cnf={"jkt": key.jkt})
    async with protected(peers) as (api, _, _):
        # 1. The API asks for a step-up, in DPoP's scheme since the client used it.
        first = await api.get(route, headers=dpop(user_token, key, stepup.clock.now(), route))
        assert first.status_code == 401
        challenge = first.headers["www-authenticate"]
        assert challenge.startswith("DPoP ") and "insufficient_user_authentication" in challenge
        # A thief holding B without the key gets nothing from the API either.
        stolen = await api.get(route, headers=bearer(user_token))
        assert (
            stolen.status_code == 401
            and 'error="invalid_token"' in stolen.headers["www-authenticate"]
        )

        # 2. Intake with the challenge as it came, and a proof (RFC 9449 §10.1).
        verifier, code_challenge = pkce()
        pushed = stepup.par(
            user_token,
            challenge=challenge,
            code_challenge=code_challenge,
            headers={"DPoP": key.proof("POST", stepup.url + "/par", iat=stepup.clock.now())},
        )
        assert pushed.status_code == 201, pushed.text

        # 3.-5. The verification page: a first factor enrolled and proven.
        with stepup.browser() as browser:
            page = stepup.open_authorization(browser, pushed.json()["request_uri"])
            assert page.status_code == 200, page.text
            answer = stepup.prove_totp(browser, page)
        assert answer.status_code == 303, answer.text
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]

        # 6. The exchange, with a proof from the same key.
        exchanged = stepup.token(
            code,
            verifier,
            user_token,
            headers={"DPoP": key.proof("POST", stepup.url + "/token", iat=stepup.clock.now())},
        )
        assert exchanged.status_code == 200, exchanged.text
        assert exchanged.json()["token_type"] == "DPoP"
        elevated = exchanged.json()["access_token"]
        assert claims_of(elevated)["cnf"] == {"jkt": key.jkt}

        # 7. The retry with the elevated token and a fresh proof.
        retried = await api.get(route, headers=dpop(elevated, key, stepup.clock.now(), route))
        assert retried.status_code == 200, retried.text
        as_bearer = await api.get(route, headers=bearer(elevated))
        assert as_bearer.status_code == 401


# -- a thief's attempt does not spend a single-use token -------------------------------------


@pytest.mark.parametrize(
    "scope, route", [("payments:write", "/once-here"), ("audit:read", "/once")]
)
async def test_a_thief_trying_a_bound_single_use_token_leaves_it_to_its_holder(
    peers: Peers, scope: str, route: str
) -> None:
    # /once-here is spent by the API itself, /once (audit:read) by stepup's introspection:
    # the key binding is checked before either, so the thief's tries cost the holder nothing.
    stepup, key = peers.stepup, DPoPKey()
    with stepup.browser() as browser:
        query, verifier, _ = stepup.step_up(browser, None, "alice", scope=scope)
    exchanged = stepup.token(
        query["code"][0],
        verifier,
        stepup.upstream.token("alice"),
        headers={"DPoP": key.proof("POST", stepup.url + "/token", iat=stepup.clock.now())},
    )
    assert exchanged.status_code == 200, exchanged.text
    token = exchanged.json()["access_token"]
    now = stepup.clock.now()
    async with protected(peers) as (api, _, _):
        with_another_key = await api.get(route, headers=dpop(token, DPoPKey(), now, route))
        as_bearer = await api.get(route, headers=bearer(token))
        holder = await api.get(route, headers=dpop(token, key, now, route))
        again = await api.get(route, headers=dpop(token, key, now, route))
    assert with_another_key.status_code == as_bearer.status_code == 401
    assert 'error="invalid_token"' in with_another_key.headers["www-authenticate"]
    assert 'error="invalid_token"' in as_bearer.headers["www-authenticate"]
    assert holder.status_code == 200, holder.text
    assert again.status_code == 401


# -- htu of a path with percent-encoded characters -------------------------------------------


def _accounts_app(guard: Guard) -> Starlette:
    @requires(Requirement("payments:write"))
    async def account(request: Request) -> JSONResponse:
        return JSONResponse({"name": request.path_params["name"]})

    return Starlette(
        routes=[Route("/accounts/{name}", account)],
        middleware=[Middleware(StepUpMiddleware, guard=guard)],
    )


@pytest.mark.parametrize(
    ("name", "encoded"), [("café", "caf%C3%A9"), ("Bob Bikes", "Bob%20Bikes"), ("50%", "50%25")]
)
async def test_a_percent_encoded_path_is_compared_as_the_client_sent_it(
    peers: Peers, name: str, encoded: str
) -> None:
    # RFC 9449 §4.3 step 9 compares htu with the target URI the client used: the path as it
    # travelled, percent-encoding and all (RFC 3986 §2.1), not the server's decoded form.
    key = DPoPKey()
    token = bound_token(peers.stepup, key)
    guard = Guard(
        resource(peers.stepup.url, upstream_jwks=peers.upstream_jwks), clock=peers.stepup.clock
    )
    path = f"/accounts/{encoded}"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_accounts_app(guard)), base_url=API
    ) as api:
        response = await api.get(path, headers=dpop(token, key, peers.stepup.clock.now(), path))
    await guard.aclose()
    assert response.status_code == 200, response.text
    assert response.json() == {"name": name}


async def test_proofs_sent_with_forged_tokens_take_no_place_in_the_replay_cache(
    peers: Peers, route: str
) -> None:
    # The replay cache is bounded and, when full of live proofs, refuses new ones. A proof's
    # jti is claimed only behind a token that verifies, so an attacker with no token cannot
    # fill it (and shut DPoP out) with proofs of a key of their own.
    key, attacker = DPoPKey(), DPoPKey()
    token = bound_token(peers.stepup, key)
    forged = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2ln"
    now = peers.stepup.clock.now()
    async with protected(peers, dpop_replay_cache_size=2) as (api, _, _):
        flood = [await api.get(route, headers=dpop(forged, attacker, now, route)) for _ in range(5)]
        owner = await api.get(route, headers=dpop(token, key, now, route))
        replayed_headers = dpop(token, key, now, route)
        first = await api.get(route, headers=replayed_headers)
        replayed = await api.get(route, headers=replayed_headers)
    assert {answer.status_code for answer in flood} == {401}
    assert {answer.json()["error"] for answer in flood} == {"invalid_token"}
    assert owner.status_code == 200, owner.text
    assert first.status_code == 200, first.text
    assert replayed.status_code == 401
    assert replayed.json()["error"] == "invalid_dpop_proof"
