"""Upstream key sources beyond a JWKS file: a JWKS URI and discovery, served by a small live
app of the test's own; rotation, the refetch limit, and an upstream that is down."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stepup.clock import FrozenClock
from stepup.config import parse
from tests.support.oauth import assert_oauth_error
from tests.support.server import LiveServer
from tests.support.stepup import (
    ACCESS_TOKEN_TYPE,
    API,
    CHALLENGE,
    CLIENT_ID,
    CLIENT_SECRET,
    OTHER_API,
    REDIRECT,
    Stepup,
    Upstream,
    pkce,
    policy_document,
    running_stepup,
)

# stepup refetches an issuer's keys for an unknown kid at most once per this many seconds.
REFRESH_INTERVAL = 30
FLOOD = 50
JWKS = "/jwks"
OPENID = "/.well-known/openid-configuration"
OAUTH = "/.well-known/oauth-authorization-server"


class KeyServer:
    """An upstream IdP's key endpoints, counting every request by path."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.documents: dict[str, dict[str, Any]] = {}
        self.jwks_status = 200
        self.hits: Counter[str] = Counter()
        self.url = ""
        self.app = Starlette(
            routes=[
                Route(JWKS, self.serve_jwks),
                Route("/.well-known/{name}", self.serve_document),
            ]
        )

    def serve(self, *keys: ECKey) -> None:
        self.jwks = {"keys": [key.as_dict(private=False) for key in keys]}

    async def serve_jwks(self, request: Request) -> Response:
        self.hits[request.url.path] += 1
        if self.jwks_status != 200:
            return Response(b"upstream trouble", self.jwks_status)
        return JSONResponse(self.jwks)

    async def serve_document(self, request: Request) -> Response:
        self.hits[request.url.path] += 1
        document = self.documents.get(request.url.path)
        if document is None:
            return Response(b"not found", 404)
        return JSONResponse(document)


StartStepup = Callable[[dict[str, Any]], Stepup]


@pytest.fixture
def key_server() -> Iterator[KeyServer]:
    server = KeyServer()
    with LiveServer(server.app, lifespan="off") as live:
        server.url = live.url
        yield server


@pytest.fixture
def start_stepup(
    tmp_path: Path, redis_url: str, clock: FrozenClock, upstream: Upstream
) -> Iterator[StartStepup]:
    """Starts a stepup whose one trusted upstream is the given [[upstream]] entry."""
    with ExitStack() as stack:

        def start(entry: dict[str, Any]) -> Stepup:
            document = policy_document(upstream, tmp_path / "data")
            document["upstream"] = [{"audiences": [API, OTHER_API], **entry}]
            config = parse(document, base_dir=tmp_path / "data")
            return stack.enter_context(running_stepup(config, redis_url, clock, upstream))

        yield start


@pytest.fixture
def via_jwks_uri(key_server: KeyServer, start_stepup: StartStepup, upstream: Upstream) -> Stepup:
    """A stepup reading the upstream's keys from the key server's JWKS URI, serving key A."""
    key_server.serve(upstream.key)
    return start_stepup({"issuer": "https://idp.example", "jwks_uri": key_server.url + JWKS})


def new_key() -> ECKey:
    return ECKey.generate_key("P-256", private=True, auto_kid=True)


def par_form(subject_token: str) -> dict[str, str]:
    _, challenge = pkce()
    return {
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "challenge": CHALLENGE,
        "scope": "payments:write",
        "resource": API,
        "redirect_uri": REDIRECT,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }


async def flood(stepup: Stepup, tokens: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(tokens), max_keepalive_connections=len(tokens))
    async with httpx.AsyncClient(base_url=stepup.url, limits=limits, timeout=30.0) as client:
        return await asyncio.gather(
            *(
                client.post("/par", data=par_form(token), auth=(CLIENT_ID, CLIENT_SECRET))
                for token in tokens
            )
        )


def closed_port_url() -> str:
    """A local URL nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://localhost:{port}"


# --- jwks_uri -----------------------------------------------------------------------


def test_token_validates_against_keys_from_a_jwks_uri(
    via_jwks_uri: Stepup, key_server: KeyServer
) -> None:
    response = via_jwks_uri.par(via_jwks_uri.upstream.token())
    assert response.status_code == 201, response.text
    assert key_server.hits[JWKS] == 1


def test_jwks_is_fetched_once_then_cached(via_jwks_uri: Stepup, key_server: KeyServer) -> None:
    for _ in range(3):
        assert via_jwks_uri.par(via_jwks_uri.upstream.token()).status_code == 201
    assert key_server.hits[JWKS] == 1


def test_token_signed_by_a_key_the_jwks_does_not_hold_is_refused(
    via_jwks_uri: Stepup, key_server: KeyServer
) -> None:
    token = via_jwks_uri.upstream.token(key=new_key())
    assert_oauth_error(via_jwks_uri.par(token), 400, "invalid_request")


def test_rotated_key_validates_after_one_refetch(
    via_jwks_uri: Stepup, key_server: KeyServer
) -> None:
    assert via_jwks_uri.par(via_jwks_uri.upstream.token()).status_code == 201
    rotated = new_key()
    key_server.serve(rotated)
    via_jwks_uri.clock.advance(REFRESH_INTERVAL + 1)
    response = via_jwks_uri.par(via_jwks_uri.upstream.token(key=rotated))
    assert response.status_code == 201, response.text
    assert key_server.hits[JWKS] == 2
    assert via_jwks_uri.par(via_jwks_uri.upstream.token(key=rotated)).status_code == 201
    assert key_server.hits[JWKS] == 2


def test_old_key_is_refused_once_rotated_out(via_jwks_uri: Stepup, key_server: KeyServer) -> None:
    assert via_jwks_uri.par(via_jwks_uri.upstream.token()).status_code == 201
    rotated = new_key()
    key_server.serve(rotated)
    via_jwks_uri.clock.advance(REFRESH_INTERVAL + 1)
    assert via_jwks_uri.par(via_jwks_uri.upstream.token(key=rotated)).status_code == 201
    old = via_jwks_uri.upstream.token()
    assert_oauth_error(via_jwks_uri.par(old), 400, "invalid_request")


def test_unknown_kid_within_the_refresh_interval_does_not_refetch(
    via_jwks_uri: Stepup, key_server: KeyServer
) -> None:
    assert via_jwks_uri.par(via_jwks_uri.upstream.token()).status_code == 201
    token = via_jwks_uri.upstream.token(key=new_key())
    assert_oauth_error(via_jwks_uri.par(token), 400, "invalid_request")
    assert key_server.hits[JWKS] == 1


def test_flood_of_unknown_kids_refetches_once_per_refresh_interval(
    via_jwks_uri: Stepup, key_server: KeyServer
) -> None:
    assert via_jwks_uri.par(via_jwks_uri.upstream.token()).status_code == 201
    for round_number in (1, 2):
        via_jwks_uri.clock.advance(REFRESH_INTERVAL + 1)
        tokens = [via_jwks_uri.upstream.token(key=new_key()) for _ in range(FLOOD)]
        responses = asyncio.run(flood(via_jwks_uri, tokens))
        assert Counter(r.status_code for r in responses) == {400: FLOOD}
        assert {r.json()["error"] for r in responses} == {"invalid_request"}
        assert key_server.hits[JWKS] == 1 + round_number


def test_known_key_keeps_validating_during_a_flood(
    via_jwks_uri: Stepup, key_server: KeyServer
) -> None:
    assert via_jwks_uri.par(via_jwks_uri.upstream.token()).status_code == 201
    via_jwks_uri.clock.advance(REFRESH_INTERVAL + 1)
    forged = [via_jwks_uri.upstream.token(key=new_key()) for _ in range(FLOOD)]
    genuine = [via_jwks_uri.upstream.token() for _ in range(5)]
    responses = asyncio.run(flood(via_jwks_uri, forged + genuine))
    assert [r.status_code for r in responses[FLOOD:]] == [201] * 5


# --- the verified-token cache ---------------------------------------------------------


def test_same_token_again_is_still_checked_against_the_clock(
    via_jwks_uri: Stepup, key_server: KeyServer
) -> None:
    token = via_jwks_uri.upstream.token(lifetime=60)
    assert via_jwks_uri.par(token).status_code == 201
    via_jwks_uri.clock.advance(600)  # past exp and any leeway
    response = via_jwks_uri.par(token)
    assert_oauth_error(response, 400, "invalid_request")
    assert "expired" in response.json()["error_description"]


def test_same_token_again_is_verified_anew_once_its_key_is_rotated_out(
    via_jwks_uri: Stepup, key_server: KeyServer
) -> None:
    token = via_jwks_uri.upstream.token()
    assert via_jwks_uri.par(token).status_code == 201
    rotated = new_key()
    key_server.serve(rotated)
    via_jwks_uri.clock.advance(REFRESH_INTERVAL + 1)
    assert via_jwks_uri.par(via_jwks_uri.upstream.token(key=rotated)).status_code == 201
    assert_oauth_error(via_jwks_uri.par(token), 400, "invalid_request")


def test_same_token_again_from_another_client_is_refused(via_jwks_uri: Stepup) -> None:
    token = via_jwks_uri.upstream.token()
    assert via_jwks_uri.par(token).status_code == 201
    other = via_jwks_uri.upstream.token(client_id="someone-else")
    assert_oauth_error(via_jwks_uri.par(other), 400, "invalid_request")
    assert via_jwks_uri.par(token).status_code == 201


# --- discovery ----------------------------------------------------------------------


def test_token_validates_through_discovery(
    key_server: KeyServer, start_stepup: StartStepup, upstream: Upstream
) -> None:
    key_server.serve(upstream.key)
    key_server.documents[OPENID] = {"issuer": key_server.url, "jwks_uri": key_server.url + JWKS}
    stepup = start_stepup({"issuer": key_server.url, "discovery": True})
    response = stepup.par(upstream.token(iss=key_server.url))
    assert response.status_code == 201, response.text
    assert key_server.hits[OPENID] == 1
    assert key_server.hits[JWKS] == 1


def test_discovery_falls_back_to_oauth_authorization_server_metadata(
    key_server: KeyServer, start_stepup: StartStepup, upstream: Upstream
) -> None:
    key_server.serve(upstream.key)
    key_server.documents[OAUTH] = {"issuer": key_server.url, "jwks_uri": key_server.url + JWKS}
    stepup = start_stepup({"issuer": key_server.url, "discovery": True})
    response = stepup.par(upstream.token(iss=key_server.url))
    assert response.status_code == 201, response.text
    assert key_server.hits[JWKS] == 1


def test_discovery_document_naming_another_issuer_is_refused(
    key_server: KeyServer, start_stepup: StartStepup, upstream: Upstream
) -> None:
    key_server.serve(upstream.key)
    key_server.documents[OPENID] = {
        "issuer": "https://impostor.example",
        "jwks_uri": key_server.url + JWKS,
    }
    stepup = start_stepup({"issuer": key_server.url, "discovery": True})
    response = stepup.par(upstream.token(iss=key_server.url))
    assert_oauth_error(response, 503, "temporarily_unavailable")
    assert key_server.hits[JWKS] == 0  # the impostor's jwks_uri is never followed


# --- the upstream is down -----------------------------------------------------------


def test_jwks_server_down_at_first_use_is_503_with_retry_after(
    start_stepup: StartStepup, upstream: Upstream
) -> None:
    stepup = start_stepup({"issuer": "https://idp.example", "jwks_uri": closed_port_url() + JWKS})
    response = stepup.par(upstream.token())
    assert_oauth_error(response, 503, "temporarily_unavailable")
    assert int(response.headers["retry-after"]) > 0


def test_jwks_server_failing_at_first_use_is_503_with_retry_after(
    key_server: KeyServer, start_stepup: StartStepup, upstream: Upstream
) -> None:
    key_server.jwks_status = 500
    stepup = start_stepup({"issuer": "https://idp.example", "jwks_uri": key_server.url + JWKS})
    response = stepup.par(upstream.token())
    assert_oauth_error(response, 503, "temporarily_unavailable")
    assert int(response.headers["retry-after"]) > 0


def test_jwks_server_back_up_is_used_again(
    key_server: KeyServer, start_stepup: StartStepup, upstream: Upstream
) -> None:
    key_server.serve(upstream.key)
    key_server.jwks_status = 500
    stepup = start_stepup({"issuer": "https://idp.example", "jwks_uri": key_server.url + JWKS})
    assert stepup.par(upstream.token()).status_code == 503
    key_server.jwks_status = 200
    response = stepup.par(upstream.token())
    assert response.status_code == 201, response.text


def test_cached_keys_outlive_a_jwks_outage(via_jwks_uri: Stepup, key_server: KeyServer) -> None:
    assert via_jwks_uri.par(via_jwks_uri.upstream.token()).status_code == 201
    key_server.jwks_status = 500
    via_jwks_uri.clock.advance(REFRESH_INTERVAL + 1)
    # An unknown kid makes stepup try the JWKS again; the failure must not drop the cache.
    assert via_jwks_uri.par(via_jwks_uri.upstream.token(key=new_key())).status_code == 400
    assert via_jwks_uri.par(via_jwks_uri.upstream.token()).status_code == 201
