"""The toolkit protecting a Starlette app and a FastAPI app, driven with real tokens from a live
stepup on real Redis; the toolkit fetches JWKS, metadata and introspection over real HTTP."""

from __future__ import annotations

import pytest

from tests.resource.conftest import Peers, bearer, protected
from tests.support.own_issuer import claims_of, elevated_token
from tests.support.stepup import API

pytestmark = pytest.mark.anyio

METADATA = f"{API}/.well-known/oauth-protected-resource"


# -- the answers, exactly ------------------------------------------------------------------


async def test_no_token_gets_a_challenge_without_error_code(peers: Peers, framework: str) -> None:
    async with protected(peers, framework) as (api, _, _):
        response = await api.post("/pay")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="payments", scope="payments:write", resource_metadata="{METADATA}"'
    )
    assert response.json() == {}


async def test_upstream_token_gets_the_step_up_challenge(peers: Peers, framework: str) -> None:
    async with protected(peers, framework) as (api, _, _):
        response = await api.post("/pay", headers=bearer(peers.stepup.upstream.token()))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        'Bearer realm="payments", error="insufficient_user_authentication", '
        'error_description="A stronger authentication is required", '
        f'acr_values="urn:stepup:acr:mfa", max_age=300, scope="payments:write", '
        f'resource_metadata="{METADATA}"'
    )
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "error": "insufficient_user_authentication",
        "error_description": "A stronger authentication is required",
    }


async def test_token_without_the_scope_gets_insufficient_scope(
    peers: Peers, framework: str
) -> None:
    async with protected(peers, framework) as (api, _, _):
        response = await api.get("/write", headers=bearer(peers.stepup.upstream.token()))
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        'Bearer realm="payments", error="insufficient_scope", '
        'error_description="The access token lacks a scope this request needs", '
        f'scope="payments:write", resource_metadata="{METADATA}"'
    )


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 20000])
async def test_a_token_that_is_no_token_is_invalid_token(
    peers: Peers, framework: str, token: str
) -> None:
    async with protected(peers, framework) as (api, _, _):
        response = await api.get("/read", headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        'Bearer realm="payments", error="invalid_token", '
        'error_description="The access token is not valid", '
        f'resource_metadata="{METADATA}"'
    )


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer a b", "Bearer a,b", "Bearer\ta"])
async def test_a_malformed_bearer_header_is_invalid_request(
    peers: Peers, framework: str, header: str
) -> None:
    async with protected(peers, framework) as (api, _, _):
        response = await api.get("/read", headers={"Authorization": header})
    # RFC 6750 §3.1: invalid_request is a 400.
    assert response.status_code == 400
    assert response.headers["www-authenticate"] == (
        'Bearer realm="payments", error="invalid_request", '
        'error_description="The Authorization header is malformed", '
        f'resource_metadata="{METADATA}"'
    )


async def test_two_authorization_headers_are_invalid_request(peers: Peers, framework: str) -> None:
    token = peers.stepup.upstream.token()
    async with protected(peers, framework) as (api, _, _):
        response = await api.get(
            "/read", headers=[("Authorization", f"Bearer {token}"), ("Authorization", "Bearer x")]
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_another_scheme_is_answered_like_no_token(peers: Peers, framework: str) -> None:
    async with protected(peers, framework) as (api, _, _):
        response = await api.get("/read", headers={"Authorization": "Basic YTpi"})
    assert response.status_code == 401
    assert "error=" not in response.headers["www-authenticate"]


async def test_protected_resource_metadata_document(peers: Peers, framework: str) -> None:
    async with protected(peers, framework) as (api, _, _):
        response = await api.get("/.well-known/oauth-protected-resource")
    assert response.status_code == 200
    assert response.json() == {
        "resource": API,
        "authorization_servers": [peers.stepup.url, "https://idp.example"],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["payments:read", "payments:write", "audit:read"],
        "resource_name": "Payments API",
        "dpop_signing_alg_values_supported": [
            "ES256",
            "ES384",
            "EdDSA",
            "Ed25519",
            "PS256",
            "RS256",
        ],
    }


# -- local validation (JWKS) ---------------------------------------------------------------


async def test_elevated_token_passes_with_local_checks(peers: Peers, framework: str) -> None:
    token = elevated_token(peers.stepup)
    async with protected(peers, framework) as (api, http, _):
        first = await api.post("/pay", headers=bearer(token))
        second = await api.post("/pay", headers=bearer(token))
    assert first.status_code == second.status_code == 200
    assert first.json() == {
        "sub": "alice",
        "acr": "urn:stepup:acr:mfa",
        "scope": ["payments:write"],
        "introspected": False,
    }
    # Metadata and JWKS fetched once, then cached.
    assert http.sent == ["/.well-known/oauth-authorization-server", "/jwks"]


async def test_upstream_token_passes_where_no_step_up_is_needed(peers: Peers) -> None:
    async with protected(peers) as (api, _, _):
        response = await api.get("/read", headers=bearer(peers.stepup.upstream.token()))
    assert response.status_code == 200
    assert response.json()["sub"] == "alice"


@pytest.mark.parametrize(("offset", "status"), [(-1, 200), (0, 401), (1, 401)])
async def test_expiry_edges(peers: Peers, offset: int, status: int) -> None:
    token = elevated_token(peers.stepup)
    peers.stepup.clock.set(claims_of(token)["exp"] + offset)
    async with protected(peers) as (api, _, _):
        response = await api.post("/write", headers=bearer(token))
    assert response.status_code == status
    if status == 401:
        assert response.json() == {
            "error": "invalid_token",
            "error_description": "The access token expired",
        }


@pytest.mark.parametrize(("age", "status"), [(59, 200), (60, 200), (61, 401)])
async def test_max_age_edges(peers: Peers, age: int, status: int) -> None:
    token = elevated_token(peers.stepup)
    peers.stepup.clock.set(claims_of(token)["auth_time"] + age)
    async with protected(peers) as (api, _, _):
        response = await api.post("/fresh", headers=bearer(token))
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"] == (
            'Bearer realm="payments", error="insufficient_user_authentication", '
            'error_description="A more recent authentication is required", '
            'acr_values="urn:stepup:acr:mfa", max_age=60, scope="payments:write", '
            f'resource_metadata="{METADATA}"'
        )


async def test_a_stronger_level_satisfies_a_weaker_one(peers: Peers, framework: str) -> None:
    token = elevated_token(peers.stepup)
    async with protected(peers, framework) as (api, _, _):
        low = await api.post("/low", headers=bearer(token))
        same = await api.post("/pay", headers=bearer(token))
        higher = await api.post("/phr", headers=bearer(token))
    assert (low.status_code, same.status_code) == (200, 200)
    assert higher.status_code == 401
    assert 'acr_values="urn:stepup:acr:phr"' in higher.headers["www-authenticate"]


async def test_token_for_another_resource_is_invalid_token(peers: Peers) -> None:
    token = peers.stepup.upstream.token(aud="https://other-api.example")
    async with protected(peers) as (api, _, _):
        response = await api.get("/read", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["error_description"] == "The access token is not for this resource"


@pytest.mark.parametrize(
    ("route", "options"),
    [
        ("/read", {"upstream_jwks": "http://localhost:9/jwks"}),
        ("/introspect", {"introspection_endpoint": "http://localhost:9/introspect"}),
    ],
    ids=["jwks", "introspection"],
)
async def test_unreachable_issuer_fails_closed_with_503(
    peers: Peers, framework: str, route: str, options: dict[str, str]
) -> None:
    token = peers.stepup.upstream.token() if route == "/read" else elevated_token(peers.stepup)
    async with protected(peers, framework, **options) as (api, _, _):
        response = await api.get(route, headers=bearer(token))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "www-authenticate" not in response.headers
    assert response.json()["error"] == "temporarily_unavailable"
