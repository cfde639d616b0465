"""Authorization server metadata (RFC 8414), JWKS, security headers and health, live."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from stepup.storage.embedded import EmbeddedRedis
from tests.support.stepup import (
    EXCHANGE,
    Stepup,
    Upstream,
    frozen_now,
    make_config,
    running_stepup,
)

METADATA = "/.well-known/oauth-authorization-server"
ENDPOINTS = (
    "authorization_endpoint",
    "token_endpoint",
    "pushed_authorization_request_endpoint",
    "introspection_endpoint",
    "revocation_endpoint",
    "jwks_uri",
    "enrollment_endpoint",
)
DEFAULT_LEVELS = ("urn:stepup:acr:mfa", "urn:stepup:acr:phr", "urn:stepup:acr:phrh")
AUTH_METHODS = {"client_secret_basic", "client_secret_post"}
# RFC 7517 / RFC 7518 §6: members that only a private key carries.
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@pytest.fixture(scope="module")
def stepup(
    tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis
) -> Iterator[Stepup]:
    """One live server for the module: nothing here changes its state."""
    directory = tmp_path_factory.mktemp("metadata")
    clock = frozen_now()
    upstream = Upstream(directory, clock)
    config = make_config(upstream, directory / "data")
    with running_stepup(config, redis_server.url, clock, upstream) as running:
        yield running


@pytest.fixture(scope="module")
def metadata(stepup: Stepup) -> dict[str, Any]:
    response = stepup.http.get(METADATA)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document: dict[str, Any] = response.json()
    return document


def on_live_server(stepup: Stepup, url: str) -> str:
    """The advertised URL's path on the live server (the policy's issuer names another port)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def test_issuer_is_the_configured_one(stepup: Stepup, metadata: dict[str, Any]) -> None:
    assert metadata["issuer"] == stepup.config.issuer


@pytest.mark.parametrize("name", ENDPOINTS)
def test_every_endpoint_is_advertised_under_the_issuer(
    stepup: Stepup, metadata: dict[str, Any], name: str
) -> None:
    url = metadata[name]
    assert isinstance(url, str)
    assert url.startswith(stepup.config.issuer + "/"), url


@pytest.mark.parametrize("name", ENDPOINTS)
def test_every_advertised_endpoint_answers(
    stepup: Stepup, metadata: dict[str, Any], name: str
) -> None:
    path = on_live_server(stepup, metadata[name])
    answers = [stepup.http.get(path), stepup.http.post(path, data={})]
    assert all(r.status_code < 500 for r in answers), [r.status_code for r in answers]
    assert any(r.status_code not in (404, 405) for r in answers), [r.status_code for r in answers]


def test_grant_types_include_token_exchange(metadata: dict[str, Any]) -> None:
    assert EXCHANGE in metadata["grant_types_supported"]


def test_code_challenge_methods_are_s256_only(metadata: dict[str, Any]) -> None:
    assert metadata["code_challenge_methods_supported"] == ["S256"]


def test_acr_values_include_the_default_levels(metadata: dict[str, Any]) -> None:
    assert set(DEFAULT_LEVELS) <= set(metadata["acr_values_supported"])


@pytest.mark.parametrize(
    "name",
    [
        "token_endpoint_auth_methods_supported",
        "introspection_endpoint_auth_methods_supported",
        "revocation_endpoint_auth_methods_supported",
    ],
)
def test_client_auth_methods_are_advertised(metadata: dict[str, Any], name: str) -> None:
    assert set(metadata[name]) == AUTH_METHODS


def test_authorization_response_iss_parameter_is_supported(metadata: dict[str, Any]) -> None:
    assert metadata["authorization_response_iss_parameter_supported"] is True


def test_response_types_are_code_only(metadata: dict[str, Any]) -> None:
    assert metadata["response_types_supported"] == ["code"]


def test_metadata_names_no_plain_pkce_and_no_implicit_grant(metadata: dict[str, Any]) -> None:
    assert "plain" not in metadata["code_challenge_methods_supported"]
    assert "implicit" not in metadata["grant_types_supported"]
    assert "password" not in metadata["grant_types_supported"]


# --- JWKS ---------------------------------------------------------------------------


def jwks(stepup: Stepup, metadata: dict[str, Any]) -> dict[str, Any]:
    response = stepup.http.get(on_live_server(stepup, metadata["jwks_uri"]))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document: dict[str, Any] = response.json()
    return document


def test_jwks_has_signing_keys_with_kid_and_alg(stepup: Stepup, metadata: dict[str, Any]) -> None:
    keys = jwks(stepup, metadata)["keys"]
    assert keys
    for key in keys:
        assert key["kid"]
        assert key["alg"] in ("ES256", "EdDSA")
        assert key.get("use", "sig") == "sig"


def test_jwks_keys_are_public_only(stepup: Stepup, metadata: dict[str, Any]) -> None:
    for key in jwks(stepup, metadata)["keys"]:
        assert not PRIVATE_MEMBERS & set(key), key


def test_jwks_kids_are_unique(stepup: Stepup, metadata: dict[str, Any]) -> None:
    kids = [key["kid"] for key in jwks(stepup, metadata)["keys"]]
    assert len(kids) == len(set(kids))


# --- security headers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", METADATA),
        ("GET", "/jwks"),
        ("GET", "/healthz"),
        ("POST", "/token"),  # an error answer
        ("GET", "/par"),  # 405
        ("GET", "/no-such-page"),  # 404
    ],
)
def test_security_headers_on_every_response(stepup: Stepup, method: str, path: str) -> None:
    response = stepup.http.request(method, path)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    csp = response.headers["content-security-policy"]
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert directives["frame-ancestors"] == "frame-ancestors 'none'"


@pytest.mark.parametrize("path", ["/par", "/token", "/introspect", "/revoke", "/enroll"])
def test_get_on_a_post_endpoint_is_a_405_json_error(stepup: Stepup, path: str) -> None:
    response = stepup.http.get(path)
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    assert {"error", "error_description"} <= set(response.json())


def test_error_answers_are_not_cached(stepup: Stepup) -> None:
    response = stepup.http.post("/token", data={})
    assert response.status_code in (400, 401)
    assert response.headers["cache-control"] == "no-store"


# --- health -------------------------------------------------------------------------


def test_healthz_is_200(stepup: Stepup) -> None:
    response = stepup.http.get("/healthz")
    assert response.status_code == 200


def test_readyz_is_200_with_redis_up(stepup: Stepup) -> None:
    response = stepup.http.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


def test_unknown_path_is_404_not_500(stepup: Stepup) -> None:
    response: httpx.Response = stepup.http.get("/.well-known/openid-configuration")
    assert response.status_code == 404
