"""Routes that ask stepup (RFC 7662) instead of trusting the signature alone: revocation bites
at once, the answer cache is short and bounded, single-use tokens pass once, also when 50
requests race over real HTTP."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from stepup.resource import Guard
from tests.resource.apps import resource, starlette_app
from tests.resource.conftest import Peers, bearer, protected
from tests.support.own_issuer import elevated_token
from tests.support.server import LiveServer

pytestmark = pytest.mark.anyio

RACERS = 50


async def test_introspected_token_passes(peers: Peers, framework: str) -> None:
    token = elevated_token(peers.stepup)
    async with protected(peers, framework) as (api, http, _):
        response = await api.post("/introspect", headers=bearer(token))
    assert response.status_code == 200
    assert response.json()["introspected"] is True
    assert http.sent == ["/.well-known/oauth-authorization-server", "/introspect"]


async def test_revoked_token_is_refused_at_once(peers: Peers, framework: str) -> None:
    token = elevated_token(peers.stepup)
    async with protected(peers, framework) as (api, _, _):
        before = await api.post("/introspect", headers=bearer(token))
        assert peers.stepup.revoke(token).status_code == 200
        after = await api.post("/introspect", headers=bearer(token))
    assert before.status_code == 200
    assert after.status_code == 401
    assert after.json() == {
        "error": "invalid_token",
        "error_description": "The access token is not active",
    }


async def test_locally_checked_route_still_accepts_a_revoked_token_until_exp(peers: Peers) -> None:
    # The documented trade-off: a route that must see revocation asks for introspection.
    token = elevated_token(peers.stepup)
    peers.stepup.revoke(token)
    async with protected(peers) as (api, _, _):
        local = await api.post("/pay", headers=bearer(token))
        asked = await api.post("/introspect", headers=bearer(token))
    assert (local.status_code, asked.status_code) == (200, 401)


async def test_cached_answers_last_at_most_the_revocation_delay(peers: Peers) -> None:
    token = elevated_token(peers.stepup)
    async with protected(peers) as (api, http, _):
        first = await api.post("/cached", headers=bearer(token))
        peers.stepup.revoke(token)
        peers.stepup.clock.advance(29)
        within = await api.post("/cached", headers=bearer(token))
        peers.stepup.clock.advance(1)
        beyond = await api.post("/cached", headers=bearer(token))
    assert (first.status_code, within.status_code, beyond.status_code) == (200, 200, 401)
    assert http.sent.count("/introspect") == 2


async def test_the_answer_cache_is_bounded(peers: Peers) -> None:
    tokens = [elevated_token(peers.stepup, sub) for sub in ("alice", "bob", "carol")]
    async with protected(peers, introspection_cache_size=2) as (api, http, guard):
        for token in tokens:
            assert (await api.post("/cached", headers=bearer(token))).status_code == 200
        assert guard.verifier.cached_introspections == 2
        # The oldest answer was dropped: it is asked for again; the newest is not.
        await api.post("/cached", headers=bearer(tokens[2]))
        assert http.sent.count("/introspect") == 3
        await api.post("/cached", headers=bearer(tokens[0]))
        assert http.sent.count("/introspect") == 4


async def test_single_use_token_passes_once(peers: Peers, framework: str) -> None:
    # audit:read is single_use in stepup's policy: stepup's introspection consumes it.
    token = elevated_token(peers.stepup, scope="audit:read")
    async with protected(peers, framework) as (api, _, _):
        first = await api.post("/once", headers=bearer(token))
        second = await api.post("/once", headers=bearer(token))
    assert first.status_code == 200
    assert second.status_code == 401
    assert second.json()["error"] == "invalid_token"
    assert peers.stepup.introspect(token).json() == {"active": False}


async def test_single_use_route_spends_a_token_stepup_would_let_live(peers: Peers) -> None:
    # payments:write is not single use at stepup; the route itself remembers the jti.
    token = elevated_token(peers.stepup)
    async with protected(peers) as (api, _, _):
        first = await api.post("/once-here", headers=bearer(token))
        second = await api.post("/once-here", headers=bearer(token))
    assert (first.status_code, second.status_code) == (200, 401)
    assert second.json()["error_description"] == "The access token was already used"


async def test_fifty_racing_requests_with_one_single_use_token_one_succeeds(peers: Peers) -> None:
    token = elevated_token(peers.stepup, scope="audit:read")
    guard = Guard(
        resource(peers.stepup.url, upstream_jwks=peers.upstream_jwks), clock=peers.stepup.clock
    )
    with LiveServer(starlette_app(guard)) as live:
        async with httpx.AsyncClient(
            base_url=live.url, limits=httpx.Limits(max_connections=RACERS), timeout=30
        ) as client:
            answers = await asyncio.gather(
                *(client.post("/once", headers=bearer(token)) for _ in range(RACERS))
            )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [401] * (RACERS - 1)


async def test_upstream_token_on_an_introspecting_route_is_asked_to_step_up(peers: Peers) -> None:
    async with protected(peers) as (api, _, _):
        response = await api.post("/introspect", headers=bearer(peers.stepup.upstream.token()))
    assert response.status_code == 401
    assert 'error="insufficient_user_authentication"' in response.headers["www-authenticate"]


async def test_forged_token_on_an_introspecting_route_is_invalid(peers: Peers) -> None:
    async with protected(peers) as (api, _, _):
        response = await api.post("/introspect", headers=bearer("not-a-token"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


async def test_a_single_use_route_the_token_does_not_satisfy_leaves_it_unspent_here(
    peers: Peers,
) -> None:
    # payments:write is not single use at stepup: only the route's own memory spends it, and
    # a route that refuses the token (here: audit:read missing) must not have spent it first.
    token = elevated_token(peers.stepup)
    async with protected(peers) as (api, _, _):
        refused = await api.post("/once", headers=bearer(token))
        used = await api.post("/once-here", headers=bearer(token))
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "insufficient_scope"
    assert used.status_code == 200, used.text
