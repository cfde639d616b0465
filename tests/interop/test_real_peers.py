"""The loop with peers nobody here wrote, all on loopback:

- the upstream IdP is panva's oidc-provider (node): the user signs in through its own pages
  and it issues B, a JWT access token; stepup trusts it through discovery alone;
- the TOTP codes come from oathtool;
- the elevated token E is verified by panva's jose (remote JWKS, `typ: at+jwt`) and by joserfc;
- authlib's OAuth client introspects and revokes E (tests/e2e/test_readme_client.py runs
  authlib through the whole loop; here it meets a token born of a foreign IdP's B).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.errors import InvalidClaimError
from joserfc.jwk import KeySet

from stepup.client import BrowserStep, StepUpAuth
from stepup.resource import Guard, ProtectedResource, TrustedIssuer
from stepup.storage.embedded import EmbeddedRedis
from tests.resource.apps import starlette_app
from tests.support.dpop import DPoPKey
from tests.support.node_peers import (
    jose_verify,
    node_with_peers,
    oidc_provider,
    sign_in_at_oidc_provider,
)
from tests.support.own_issuer import claims_of, stepup_at_own_url
from tests.support.server import LiveServer
from tests.support.stepup import (
    API,
    CLIENT_ID,
    CLIENT_SECRET,
    OTHER_API,
    REDIRECT,
    RS_ID,
    RS_SECRET,
    Stepup,
    Upstream,
    frozen_now,
    hidden,
    manual_key,
    pkce,
)

IDP_CLIENT_ID, IDP_CLIENT_SECRET = "bank-app", "bank-app-secret-0123456789"
IDP_REDIRECT = "http://localhost:9999/upstream-callback"


@dataclass
class Peers:
    node: str
    oathtool: str
    idp: str
    stepup: Stepup

    def user_token(self, sub: str = "alice", dpop_key: DPoPKey | None = None) -> str:
        body = sign_in_at_oidc_provider(
            self.idp,
            sub=sub,
            client_id=IDP_CLIENT_ID,
            client_secret=IDP_CLIENT_SECRET,
            redirect_uri=IDP_REDIRECT,
            api=API,
            # oidc-provider checks iat against the real time, not stepup's frozen clock.
            dpop=(lambda url: dpop_key.proof("POST", url, iat=time.time()))
            if dpop_key is not None
            else None,
        )
        token: str = body["access_token"]
        return token

    def totp(self, secret: str) -> str:
        at = f"@{int(self.stepup.clock.now())}"
        done = subprocess.run(
            [self.oathtool, "--totp", "-b", "-N", at, secret],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def approve(self, url: str) -> str:
        """The user's browser at stepup: enrol TOTP with oathtool's code; the redirect."""
        with self.stepup.browser() as browser:
            started = browser.get(url)
            page = browser.get(started.headers["location"])
            self.stepup.clock.advance(30)
            done = browser.post(
                page.url.path,
                data={
                    "csrf": hidden(page.text, "csrf"),
                    "action": "verify",
                    "code": self.totp(manual_key(page.text)),
                },
            )
        assert done.status_code == 303, done.text
        location: str = done.headers["location"]
        return location


def trust_the_idp(idp: str) -> Any:
    def edit(document: dict[str, Any]) -> None:
        document["upstream"] = [{"issuer": idp, "discovery": True, "audiences": [API]}]
        document["clients"][0]["upstream_client_ids"] = [IDP_CLIENT_ID]

    return edit


@pytest.fixture(scope="module")
def peers(
    tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis, oathtool: str
) -> Iterator[Peers]:
    node = node_with_peers()
    directory = tmp_path_factory.mktemp("interop")
    clock = frozen_now()
    with (
        oidc_provider(node, API, IDP_CLIENT_ID, IDP_CLIENT_SECRET, IDP_REDIRECT) as idp,
        stepup_at_own_url(
            directory,
            redis_server.url,
            clock,
            Upstream(directory, clock),
            edit=trust_the_idp(idp),
        ) as stepup,
    ):
        yield Peers(node, oathtool, idp, stepup)


@pytest.fixture
def fresh(peers: Peers, redis_url: str) -> Peers:
    peers.stepup.clock.set(frozen_now().now())
    return peers


def elevate(peers: Peers, subject_token: str) -> str:
    stepup = peers.stepup
    verifier, challenge = pkce()
    pushed = stepup.par(subject_token, code_challenge=challenge)
    assert pushed.status_code == 201, pushed.text
    location = peers.approve(
        f"{stepup.url}/authorize?client_id={CLIENT_ID}&request_uri={pushed.json()['request_uri']}"
    )
    query = parse_qs(urlsplit(location).query)
    assert query["iss"] == [stepup.url]
    exchanged = stepup.token(query["code"][0], verifier, subject_token)
    assert exchanged.status_code == 200, exchanged.text
    token: str = exchanged.json()["access_token"]
    return token


def test_a_user_token_bound_by_oidc_provider_is_exchanged_only_with_its_key(
    fresh: Peers,
) -> None:
    key, thief = DPoPKey(), DPoPKey()
    b = fresh.user_token(dpop_key=key)
    assert claims_of(b)["cnf"] == {"jkt": key.jkt}  # oidc-provider's thumbprint, RFC 7638
    stepup = fresh.stepup

    def proof(by: DPoPKey, path: str = "/token") -> dict[str, str]:
        return {"DPoP": by.proof("POST", stepup.url + path, iat=stepup.clock.now())}

    verifier, challenge = pkce()
    # Without a proof by its key the bound token pushes nothing.
    refused = stepup.par(b, code_challenge=challenge)
    assert refused.json()["error"] == "invalid_dpop_proof"
    pushed = stepup.par(b, code_challenge=challenge, headers=proof(key, "/par"))
    assert pushed.status_code == 201, pushed.text
    location = fresh.approve(
        f"{stepup.url}/authorize?client_id={CLIENT_ID}&request_uri={pushed.json()['request_uri']}"
    )
    code = parse_qs(urlsplit(location).query)["code"][0]

    assert stepup.token(code, verifier, b).json()["error"] == "invalid_dpop_proof"
    assert stepup.token(code, verifier, b, headers=proof(thief)).json()["error"] == (
        "invalid_dpop_proof"
    )
    exchanged = stepup.token(code, verifier, b, headers=proof(key))
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.json()["token_type"] == "DPoP"
    assert claims_of(exchanged.json()["access_token"])["cnf"] == {"jkt": key.jkt}


def test_oidc_provider_issues_a_jwt_user_token(fresh: Peers) -> None:
    b = claims_of(fresh.user_token("carol"))
    assert b["iss"] == fresh.idp
    assert b["sub"] == "carol"
    assert b["aud"] == API
    assert b["client_id"] == IDP_CLIENT_ID
    assert b["scope"] == "payments:read"


def test_the_whole_loop_with_oidc_providers_token_and_oathtools_codes(fresh: Peers) -> None:
    b = fresh.user_token()
    e = elevate(fresh, b)
    claims = claims_of(e)
    assert claims["iss"] == fresh.stepup.url
    assert claims["sub"] == "alice"  # the same subject as B
    assert claims["client_id"] == CLIENT_ID
    assert claims["aud"] == API
    assert claims["acr"] == "urn:stepup:acr:mfa" and claims["amr"] == ["otp"]


def test_jose_verifies_the_elevated_token_with_the_remote_jwks(fresh: Peers) -> None:
    e = elevate(fresh, fresh.user_token())
    jwks = fresh.stepup.url + "/jwks"
    accepted = jose_verify(fresh.node, e, jwks, fresh.stepup.url, API)
    other = jose_verify(fresh.node, e, jwks, fresh.stepup.url, OTHER_API)
    assert accepted["ok"] is True, accepted
    assert accepted["header"]["typ"] == "at+jwt"
    assert accepted["payload"]["sub"] == "alice"
    assert other == {"ok": False, "code": "ERR_JWT_CLAIM_VALIDATION_FAILED"}


def test_joserfc_verifies_the_elevated_token_and_refuses_another_audience(fresh: Peers) -> None:
    e = elevate(fresh, fresh.user_token())
    keys = KeySet.import_key_set(httpx.get(fresh.stepup.url + "/jwks").json())
    decoded = jwt.decode(e, keys, algorithms=["ES256"])
    assert decoded.header["typ"] == "at+jwt"

    def registry(audience: str) -> jwt.JWTClaimsRegistry:
        return jwt.JWTClaimsRegistry(
            now=int(fresh.stepup.clock.now()),
            iss={"essential": True, "value": fresh.stepup.url},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
        )

    registry(API).validate(decoded.claims)
    with pytest.raises(InvalidClaimError):
        registry(OTHER_API).validate(decoded.claims)


def test_authlib_introspects_and_the_resource_server_revokes(fresh: Peers) -> None:
    e = elevate(fresh, fresh.user_token())
    api = OAuth2Session(RS_ID, RS_SECRET, token_endpoint_auth_method="client_secret_basic")
    seen = api.introspect_token(fresh.stepup.url + "/introspect", token=e).json()
    assert seen["active"] is True and seen["sub"] == "alice" and seen["aud"] == API
    assert api.revoke_token(fresh.stepup.url + "/revoke", token=e).status_code == 200
    assert api.introspect_token(fresh.stepup.url + "/introspect", token=e).json() == {
        "active": False
    }


@pytest.mark.anyio
async def test_toolkit_and_client_helper_complete_the_loop_with_the_foreign_idp(
    fresh: Peers,
) -> None:
    # The API trusts oidc-provider by discovery and stepup by its metadata; the client
    # helper turns the challenge to B into E and retries.
    guard = Guard(
        ProtectedResource(
            API,
            [
                TrustedIssuer(fresh.stepup.url, client_id=RS_ID, client_secret=RS_SECRET),
                TrustedIssuer(fresh.idp),
            ],
        ),
        clock=fresh.stepup.clock,
    )
    b = fresh.user_token()
    # oidc-provider stamps `iat` from the real clock; the guard checks it without leeway, so
    # the frozen clock must not stand before it (it was frozen when the fixture started).
    issued = claims_of(b)["iat"]
    if fresh.stepup.clock.now() < issued:
        fresh.stepup.clock.set(float(issued))

    def authorize(step: BrowserStep) -> str:
        return fresh.approve(step.url)

    auth = StepUpAuth(
        issuer=fresh.stepup.url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        subject_token=b,
        resource=API,
        redirect_uri=REDIRECT,
        authorize=authorize,
    )
    with LiveServer(starlette_app(guard)) as live:
        async with httpx.AsyncClient(base_url=live.url, auth=auth) as client:
            read = await client.get("/read")  # B alone is enough here
            paid = await client.post("/introspect")  # needs a revocable mfa elevation
    assert read.status_code == 200
    assert paid.status_code == 200, paid.text
    assert paid.json() == {
        "sub": "alice",
        "acr": "urn:stepup:acr:mfa",
        "scope": ["payments:write"],
        "introspected": True,
    }
