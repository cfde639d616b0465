"""The demo's parts, in process: the IdP, the policy it writes, the payments API, the client.

Peers talk over real HTTP requests routed to in-process ASGI apps by origin; the client's
loop runs against a small stand-in for stepup that checks what the client sends.
The end-to-end run through the real stepup in a browser is elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import stat
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from stepup import dpop as proofs
from stepup.client import DPoPSigner
from stepup.clock import FrozenClock
from stepup.config import ACR_MFA, TOKEN_TYPE_ACCESS_TOKEN, load, secret_matches
from stepup.demo.api import create_payments_api
from stepup.demo.client import SESSION_COOKIE, create_client_app, create_demo_apps
from stepup.demo.idp import create_idp_app, issue_access_token
from stepup.demo.policy import DemoSettings, load_or_create_idp_key, write_demo_policy
from stepup.protocol.challenge import parse_www_authenticate, step_up_requirement

pytestmark = pytest.mark.anyio

SETTINGS = DemoSettings()
NOW = 1_900_000_000.0
# The bank's DPoP key: B and E are bound to it, and the bank proves it at every step.
BANK_KEY = ECKey.generate_key("P-256")
BANK_JKT = str(BANK_KEY.thumbprint())


class Origins(httpx.AsyncBaseTransport):
    """Routes each request to the in-process app serving its origin, like DNS would."""

    def __init__(self, apps: Mapping[str, ASGIApp]) -> None:
        # Read at request time: apps that call each other can be added after this is made.
        self._apps = apps

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
        app = self._apps.get(origin)
        if app is None:
            raise httpx.ConnectError(f"nothing listens at {origin}", request=request)
        return await httpx.ASGITransport(app=app).handle_async_request(request)


@asynccontextmanager
async def running(*apps: Starlette) -> AsyncIterator[None]:
    """Run the apps' lifespans (ASGITransport does not), so their HTTP clients exist."""
    async with AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app.router.lifespan_context(app))
        yield


@pytest.fixture
def key() -> ECKey:
    return ECKey.generate_key("P-256", auto_kid=True)


def upstream_token(key: ECKey, **overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "issuer": SETTINGS.idp_issuer,
        "sub": "alice",
        "client_id": SETTINGS.client_id,
        "audience": SETTINGS.api_base,
        "now": NOW,
        "jkt": BANK_JKT,
    }
    arguments.update(overrides)
    return issue_access_token(key, **arguments)


def idp_host(key: ECKey) -> Starlette:
    return Starlette(routes=[Mount("/idp", app=create_idp_app(SETTINGS.idp_issuer, key))])


# -- the upstream IdP ----------------------------------------------------------------------


async def test_idp_token_verifies_with_its_jwks_and_carries_rfc9068_claims(key: ECKey) -> None:
    async with httpx.AsyncClient(transport=Origins({SETTINGS.client_base: idp_host(key)})) as http:
        discovery = (
            await http.get(f"{SETTINGS.idp_issuer}/.well-known/openid-configuration")
        ).json()
        assert discovery["issuer"] == SETTINGS.idp_issuer
        jwks = (await http.get(discovery["jwks_uri"])).json()

    assert all("d" not in published for published in jwks["keys"])
    token = jwt.decode(upstream_token(key), KeySet.import_key_set(jwks), algorithms=["ES256"])
    assert token.header == {"typ": "at+jwt", "alg": "ES256", "kid": key.thumbprint()}
    claims = token.claims
    assert claims["iss"] == SETTINGS.idp_issuer
    assert claims["sub"] == "alice"
    assert claims["aud"] == SETTINGS.api_base
    assert claims["client_id"] == SETTINGS.client_id
    assert claims["iat"] == claims["auth_time"] == int(NOW)
    assert claims["exp"] == int(NOW) + 3600
    assert claims["scope"] == "payments:read"
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16


def test_idp_binds_the_token_to_the_key_it_is_given(key: ECKey) -> None:
    # RFC 9449 §6.1: cnf.jkt names the bank's key, so B works only with its proofs.
    assert jwt.decode(upstream_token(key), key).claims["cnf"] == {"jkt": BANK_JKT}
    assert "cnf" not in jwt.decode(upstream_token(key, jkt=None), key).claims


async def test_idp_tokens_have_distinct_jti(key: ECKey) -> None:
    first = jwt.decode(upstream_token(key), key).claims["jti"]
    second = jwt.decode(upstream_token(key), key).claims["jti"]
    assert first != second


def test_idp_key_is_created_once_and_private_to_its_owner(tmp_path: Path) -> None:
    first = load_or_create_idp_key(tmp_path)
    second = load_or_create_idp_key(tmp_path)
    assert first.kid == second.kid == first.thumbprint()
    assert second.is_private
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == ["demo-idp-key.json"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600


# -- the policy ----------------------------------------------------------------------------


def test_written_policy_loads_with_stepup_config(tmp_path: Path) -> None:
    path = write_demo_policy(tmp_path, SETTINGS)
    assert path == tmp_path / "demo-policy.toml"

    config = load(path, environ={})

    assert config.issuer == "http://localhost:8000"
    assert config.deployment.data_dir == tmp_path / "."
    (upstream,) = config.upstreams
    assert upstream.issuer == "http://localhost:8001/idp"
    assert upstream.discovery
    assert upstream.audiences == ("http://localhost:8002",)
    client = config.clients["demo-bank"]
    assert client.name == "Demo Bank"
    assert secret_matches(SETTINGS.client_secret, client.secret_hash)
    assert client.redirect_uris == (
        "http://localhost:8001/callback",
        "http://localhost:8001/account",
    )
    assert client.scopes == ("payments:write",)
    assert client.resources == ("http://localhost:8002",)
    server = config.resource_servers["payments-api"]
    assert secret_matches(SETTINGS.resource_server_secret, server.secret_hash)
    assert server.resources == ("http://localhost:8002",)
    rule = config.scopes["payments:write"]
    assert (rule.acr, rule.max_age, rule.token_lifetime) == (ACR_MFA, 300, 300)
    assert rule.description == "Send payments from your account"


def test_policy_holds_no_plain_secret(tmp_path: Path) -> None:
    text = write_demo_policy(tmp_path, SETTINGS).read_text()
    assert SETTINGS.client_secret not in text
    assert SETTINGS.resource_server_secret not in text


# -- the payments API ----------------------------------------------------------------------


@asynccontextmanager
async def payments_api(
    key: ECKey, stepup: Starlette | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    peers: dict[str, ASGIApp] = {SETTINGS.client_base: idp_host(key)}
    if stepup is not None:
        peers[SETTINGS.stepup_issuer] = stepup
    api = create_payments_api(SETTINGS, clock=FrozenClock(NOW), transport=Origins(peers))
    async with (
        running(api),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api), base_url=SETTINGS.api_base
        ) as http,
    ):
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def dpop(token: str, method: str, path: str, key: ECKey = BANK_KEY) -> dict[str, str]:
    """`token` with the DPoP scheme and a proof by `key` for this request (`ath` too)."""
    proof = DPoPSigner(key, lambda: NOW).proof(method, SETTINGS.api_base + path, token)
    return {"Authorization": f"DPoP {token}", "DPoP": proof}


async def test_api_answers_a_payment_with_the_upstream_token_with_a_step_up_challenge(
    key: ECKey,
) -> None:
    async with payments_api(key) as api:
        response = await api.post(
            "/payments",
            json={"amount": "25.00", "payee": "Bob"},
            headers=dpop(upstream_token(key), "POST", "/payments"),
        )

    assert response.status_code == 401
    requirement = step_up_requirement(parse_www_authenticate(response.headers["www-authenticate"]))
    assert requirement.error == "insufficient_user_authentication"
    assert requirement.acr_values == ("urn:stepup:acr:mfa",)
    assert requirement.max_age == 300
    assert requirement.error_description == (
        "A stronger authentication is required to send a payment"
    )


async def test_api_answers_a_payment_without_a_token_with_a_bare_challenge(
    key: ECKey,
) -> None:
    async with payments_api(key) as api:
        response = await api.post("/payments", json={"amount": "25.00", "payee": "Bob"})

    # RFC 6750 §3.1: no credentials, no error code; the scope and the RFC 9728 metadata
    # tell a client where to start; the scheme and algs that it must use DPoP (RFC 9449 §7.1).
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'DPoP realm="Demo payments API", algs="{" ".join(proofs.DEFAULT_ALGORITHMS)}", '
        'scope="payments:write", '
        'resource_metadata="http://localhost:8002/.well-known/oauth-protected-resource"'
    )


def signed_by_an_impostor(key: ECKey) -> str:
    # Same kid and issuer, but signed by a key the IdP never published.
    impostor = ECKey.generate_key("P-256", parameters={"kid": key.thumbprint()})
    return upstream_token(impostor)


def with_payload_changed(key: ECKey) -> str:
    # A genuine signature over claims that are no longer the ones sent.
    header, payload, signature = upstream_token(key).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "mallory"
    changed = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{changed}.{signature}"


@pytest.mark.parametrize("forge", [signed_by_an_impostor, with_payload_changed])
async def test_api_refuses_an_upstream_token_with_a_bad_signature(
    key: ECKey, forge: Callable[[ECKey], str]
) -> None:
    forged = forge(key)
    async with payments_api(key) as api:
        balance = await api.get("/balance", headers=dpop(forged, "GET", "/balance"))
        payment = await api.post(
            "/payments",
            json={"amount": "1.00", "payee": "Mallory"},
            headers=dpop(forged, "POST", "/payments"),
        )

    for response in (balance, payment):
        assert response.status_code == 401
        (challenge,) = parse_www_authenticate(response.headers["www-authenticate"])
        assert challenge.params["error"] == "invalid_token"
        assert response.json()["error"] == "invalid_token"


@pytest.mark.parametrize(
    "overrides",
    [
        {"audience": "http://localhost:9999"},
        {"now": NOW - 7200},
        {"issuer": "http://localhost:8001/other"},
    ],
    ids=["other audience", "expired", "other issuer"],
)
async def test_api_refuses_an_upstream_token_not_meant_for_it(
    key: ECKey, overrides: dict[str, Any]
) -> None:
    async with payments_api(key, stepup=FakeStepup().app()) as api:
        response = await api.get(
            "/balance", headers=dpop(upstream_token(key, **overrides), "GET", "/balance")
        )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


async def test_api_shows_the_balance_for_the_upstream_token(key: ECKey) -> None:
    async with payments_api(key) as api:
        response = await api.get("/balance", headers=dpop(upstream_token(key), "GET", "/balance"))
    assert response.status_code == 200
    assert response.json() == {
        "sub": "alice",
        "balance": "1250.00",
        "currency": "EUR",
        "payments": [],
    }


def approved_payment(amount: str, payee: str) -> dict[str, Any]:
    """The RFC 9396 detail the demo bank sends for one payment."""
    return {
        "type": "payment_initiation",
        "instructedAmount": {"currency": SETTINGS.currency, "amount": amount},
        "creditorName": payee,
    }


async def test_api_pays_with_an_active_elevated_token_once(key: ECKey) -> None:
    stepup = FakeStepup()
    elevated = stepup.elevate("alice", authorization_details=[approved_payment("25.50", "Bob")])
    async with payments_api(key, stepup=stepup.app()) as api:
        paid = await api.post(
            "/payments",
            data={"amount": "25.5", "payee": "Bob"},
            headers=dpop(elevated, "POST", "/payments"),
        )
        again = await api.post(
            "/payments",
            data={"amount": "25.5", "payee": "Bob"},
            headers=dpop(elevated, "POST", "/payments"),
        )
        balance = await api.get("/balance", headers=dpop(upstream_token(key), "GET", "/balance"))

    assert paid.status_code == 201
    assert paid.json()["amount"] == "25.50"
    assert paid.json()["balance"] == "1224.50"
    assert stepup.introspected_by == ["payments-api", "payments-api"]
    assert again.status_code == 401
    assert balance.json()["balance"] == "1224.50"


@pytest.mark.parametrize(
    "amount, payee",
    [("25.51", "Bob"), ("255.00", "Bob"), ("25.50", "Mallory")],
)
async def test_api_refuses_a_payment_other_than_the_approved_one(
    key: ECKey, amount: str, payee: str
) -> None:
    stepup = FakeStepup()
    elevated = stepup.elevate("alice", authorization_details=[approved_payment("25.5", "Bob")])
    async with payments_api(key, stepup=stepup.app()) as api:
        response = await api.post(
            "/payments",
            json={"amount": amount, "payee": payee},
            headers=dpop(elevated, "POST", "/payments"),
        )
        balance = await api.get("/balance", headers=dpop(upstream_token(key), "GET", "/balance"))
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_authorization_details"
    requirement = step_up_requirement(parse_www_authenticate(response.headers["www-authenticate"]))
    assert (requirement.acr_values, requirement.scope) == ((ACR_MFA,), ("payments:write",))
    assert balance.json()["balance"] == "1250.00"


async def test_api_refuses_another_payment_without_using_up_the_approved_one(key: ECKey) -> None:
    # The approval is single use (the API remembers it spent); the other payment is refused
    # before it is spent, so the payment the user approved still goes through, once.
    stepup = FakeStepup()
    elevated = stepup.elevate("alice", authorization_details=[approved_payment("25.50", "Bob")])
    async with payments_api(key, stepup=stepup.app()) as api:
        other = await api.post(
            "/payments",
            json={"amount": "255.00", "payee": "Bob"},
            headers=dpop(elevated, "POST", "/payments"),
        )
        paid = await api.post(
            "/payments",
            json={"amount": "25.50", "payee": "Bob"},
            headers=dpop(elevated, "POST", "/payments"),
        )
        again = await api.post(
            "/payments",
            json={"amount": "25.50", "payee": "Bob"},
            headers=dpop(elevated, "POST", "/payments"),
        )
    assert other.status_code == 403
    assert other.json()["error"] == "insufficient_authorization_details"
    assert other.headers["www-authenticate"].startswith("DPoP ")
    assert paid.status_code == 201, paid.text
    assert paid.json()["balance"] == "1224.50"
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_token"


async def test_api_refuses_an_elevation_for_no_transaction(key: ECKey) -> None:
    stepup = FakeStepup()
    async with payments_api(key, stepup=stepup.app()) as api:
        response = await api.post(
            "/payments",
            json={"amount": "5", "payee": "Bob"},
            headers=dpop(stepup.elevate("alice"), "POST", "/payments"),
        )
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_authorization_details"


async def test_api_refuses_a_revoked_elevated_token(key: ECKey) -> None:
    stepup = FakeStepup()
    elevated = stepup.elevate("alice")
    stepup.active.clear()
    async with payments_api(key, stepup=stepup.app()) as api:
        response = await api.post(
            "/payments",
            json={"amount": "5", "payee": "Bob"},
            headers=dpop(elevated, "POST", "/payments"),
        )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


async def test_api_wants_payments_write_in_the_elevated_token(key: ECKey) -> None:
    stepup = FakeStepup()
    elevated = stepup.elevate("alice", scope="payments:read")
    async with payments_api(key, stepup=stepup.app()) as api:
        response = await api.post(
            "/payments",
            json={"amount": "5", "payee": "Bob"},
            headers=dpop(elevated, "POST", "/payments"),
        )
    assert response.status_code == 403
    requirement = step_up_requirement(parse_www_authenticate(response.headers["www-authenticate"]))
    assert (requirement.error, requirement.scope) == ("insufficient_scope", ("payments:write",))


async def test_api_refuses_an_elevation_proven_too_long_ago(key: ECKey) -> None:
    stepup = FakeStepup()
    elevated = stepup.elevate("alice", auth_time=int(NOW) - 301)
    async with payments_api(key, stepup=stepup.app()) as api:
        response = await api.post(
            "/payments",
            json={"amount": "5", "payee": "Bob"},
            headers=dpop(elevated, "POST", "/payments"),
        )
    assert response.status_code == 401
    assert "insufficient_user_authentication" in response.headers["www-authenticate"]


async def test_api_takes_dpop_bound_tokens_only_and_says_so(key: ECKey) -> None:
    async with payments_api(key) as api:
        metadata = await api.get("/.well-known/oauth-protected-resource")
        # Even a valid, unbound B is refused as Bearer: the API takes proofs only.
        unbound = await api.get("/balance", headers=bearer(upstream_token(key, jkt=None)))
        with_proof = await api.get("/balance", headers=dpop(upstream_token(key), "GET", "/balance"))
    assert metadata.json()["dpop_bound_access_tokens_required"] is True
    assert unbound.status_code == 401
    assert unbound.headers["www-authenticate"].startswith("DPoP ")
    assert unbound.json()["error"] == "invalid_token"
    assert with_proof.status_code == 200


def stolen_as_bearer(token: str, method: str, path: str) -> dict[str, str]:
    return bearer(token)


def stolen_with_another_key(token: str, method: str, path: str) -> dict[str, str]:
    # A well-formed proof for this very request, by the thief's own key.
    return dpop(token, method, path, key=ECKey.generate_key("P-256"))


THIEVES = [stolen_as_bearer, stolen_with_another_key]


@pytest.mark.parametrize("thief", THIEVES)
async def test_api_refuses_a_stolen_elevated_token_and_its_holder_still_pays(
    key: ECKey, thief: Callable[[str, str, str], dict[str, str]]
) -> None:
    stepup = FakeStepup()
    payment = {"amount": "25.00", "payee": "Bob"}
    elevated = stepup.elevate("alice", authorization_details=[approved_payment("25", "Bob")])
    async with payments_api(key, stepup=stepup.app()) as api:
        stolen = await api.post(
            "/payments", json=payment, headers=thief(elevated, "POST", "/payments")
        )
        # The single-use approval was not spent by the thief's try: it is still the holder's.
        paid = await api.post(
            "/payments", json=payment, headers=dpop(elevated, "POST", "/payments")
        )
    assert stolen.status_code == 401
    assert stolen.json()["error"] == "invalid_token"
    assert stolen.headers["www-authenticate"].startswith("DPoP ")
    assert paid.status_code == 201, paid.text
    assert paid.json()["balance"] == "1225.00"
    assert paid.json()["dpop_jkt"] == BANK_JKT


@pytest.mark.parametrize("thief", THIEVES)
async def test_api_refuses_a_stolen_upstream_token(
    key: ECKey, thief: Callable[[str, str, str], dict[str, str]]
) -> None:
    async with payments_api(key) as api:
        response = await api.get("/balance", headers=thief(upstream_token(key), "GET", "/balance"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


async def test_api_refuses_a_proof_made_for_another_request(key: ECKey) -> None:
    stepup = FakeStepup()
    elevated = stepup.elevate("alice", authorization_details=[approved_payment("5", "Bob")])
    headers = dpop(elevated, "GET", "/balance") | {"Authorization": f"DPoP {elevated}"}
    async with payments_api(key, stepup=stepup.app()) as api:
        response = await api.post(
            "/payments", json={"amount": "5", "payee": "Bob"}, headers=headers
        )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_dpop_proof"
    assert stepup.introspected_by == []


@pytest.mark.parametrize("amount", ["0", "-5", "1.001", "abc", "NaN", "1e9", ""])
async def test_api_refuses_a_bad_amount(key: ECKey, amount: str) -> None:
    stepup = FakeStepup()
    async with payments_api(key, stepup=stepup.app()) as api:
        response = await api.post(
            "/payments",
            json={"amount": amount, "payee": "Bob"},
            headers=dpop(stepup.elevate("alice"), "POST", "/payments"),
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    # The payment is read before the token is looked at: a malformed one spends nothing.
    assert stepup.introspected_by == []


# -- a stand-in for stepup, checking what the demo sends ------------------------------------


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    user, _, secret = base64.b64decode(encoded).decode().partition(":")
    return user, secret


@dataclass
class FakeStepup:
    issuer: str = SETTINGS.stepup_issuer
    requests: dict[str, dict[str, str]] = field(default_factory=dict)
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    active: dict[str, dict[str, Any]] = field(default_factory=dict)
    introspected_by: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    pushed: list[dict[str, str]] = field(default_factory=list)
    exchanged: list[dict[str, str]] = field(default_factory=list)
    # RFC 9449 at /par and /token, checked by stepup's own proof verifier: the endpoint and
    # key thumbprint of each proof that passed; the endpoints that asked for the nonce.
    nonce: str | None = None
    bind: bool = True
    passed_proofs: list[tuple[str, str]] = field(default_factory=list)
    nonce_refusals: list[str] = field(default_factory=list)
    seen_proofs: proofs.MemoryReplayCache = field(
        default_factory=lambda: proofs.MemoryReplayCache(lambda: NOW)
    )

    def elevate(self, sub: str, bound_to: str | None = BANK_JKT, **overrides: Any) -> str:
        token = secrets.token_urlsafe(24)
        if bound_to is not None:
            overrides.setdefault("cnf", {"jkt": bound_to})
        self.active[token] = {
            "active": True,
            "iss": self.issuer,
            "sub": sub,
            "aud": SETTINGS.api_base,
            "client_id": SETTINGS.client_id,
            "scope": "payments:write",
            "acr": ACR_MFA,
            "amr": ["otp"],
            "auth_time": int(NOW) - 5,
            "exp": int(NOW) + 300,
            **overrides,
        }
        return token

    def approve(self, request_uri: str) -> str:
        """What the user's visit to the authorization endpoint ends in: a code."""
        code = secrets.token_urlsafe(16)
        self.codes[code] = self.requests.pop(request_uri)
        return code

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/oauth-authorization-server", self._metadata),
                Route("/par", self._par, methods=["POST"]),
                Route("/token", self._token, methods=["POST"]),
                Route("/introspect", self._introspect, methods=["POST"]),
                Route("/revoke", self._revoke, methods=["POST"]),
            ]
        )

    async def _metadata(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "pushed_authorization_request_endpoint": f"{self.issuer}/par",
                "token_endpoint": f"{self.issuer}/token",
                "introspection_endpoint": f"{self.issuer}/introspect",
                "revocation_endpoint": f"{self.issuer}/revoke",
                "authorization_details_types_supported": ["payment_initiation"],
            }
        )

    async def _proof(self, request: Request) -> proofs.Proof | Response | None:
        headers = request.headers.getlist("dpop")
        if not headers:
            return None
        nonce = self.nonce
        try:
            proof = await proofs.verify_proof(
                headers,
                method=request.method,
                uri=self.issuer + request.url.path,
                now=NOW,
                policy=proofs.ProofPolicy(),
                claim=self.seen_proofs,
                nonce=None if nonce is None else (lambda offered: offered == nonce),
            )
        except proofs.NonceRequired:
            self.nonce_refusals.append(request.url.path)
            return JSONResponse(
                {"error": "use_dpop_nonce"}, status_code=400, headers={"DPoP-Nonce": nonce or ""}
            )
        except proofs.ProofError as exc:
            return JSONResponse({"error": "invalid_dpop_proof", "detail": exc.detail}, 400)
        self.passed_proofs.append((request.url.path, proof.jkt))
        return proof

    async def _par(self, request: Request) -> Response:
        assert _basic_credentials(request) == (SETTINGS.client_id, SETTINGS.client_secret)
        proof = await self._proof(request)
        if isinstance(proof, Response):
            return proof
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.pushed.append(form)
        request_uri = "urn:ietf:params:oauth:request_uri:" + secrets.token_urlsafe(8)
        self.requests[request_uri] = form
        return JSONResponse({"request_uri": request_uri, "expires_in": 90}, status_code=201)

    async def _token(self, request: Request) -> Response:
        assert _basic_credentials(request) == (SETTINGS.client_id, SETTINGS.client_secret)
        proof = await self._proof(request)
        if isinstance(proof, Response):
            return proof
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.exchanged.append(form)
        pushed = self.codes.pop(form.get("code", ""), None)
        if pushed is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        digest = hashlib.sha256(form["code_verifier"].encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if challenge != pushed["code_challenge"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        details = pushed.get("authorization_details")
        # Like stepup: a proof binds E to its key (RFC 9449 §5), unless told to misbehave.
        bound_to = proof.jkt if proof is not None and self.bind else None
        token = self.elevate(
            "alice",
            bound_to,
            **({"authorization_details": json.loads(details)} if details else {}),
        )
        return JSONResponse(
            {
                "access_token": token,
                "issued_token_type": TOKEN_TYPE_ACCESS_TOKEN,
                "token_type": "Bearer" if bound_to is None else "DPoP",
                "expires_in": 300,
                "scope": "payments:write",
            },
            headers={"Cache-Control": "no-store"},
        )

    async def _introspect(self, request: Request) -> Response:
        credentials = _basic_credentials(request)
        if credentials != (SETTINGS.resource_server_id, SETTINGS.resource_server_secret):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        self.introspected_by.append(credentials[0])
        token = str((await request.form()).get("token"))
        return JSONResponse(self.active.get(token, {"active": False}))

    async def _revoke(self, request: Request) -> Response:
        assert _basic_credentials(request) == (SETTINGS.client_id, SETTINGS.client_secret)
        form = await request.form()
        assert form.get("token_type_hint") == "access_token"
        token = str(form.get("token"))
        self.active.pop(token, None)
        self.revoked.append(token)
        return Response(status_code=200)


# -- the client app ------------------------------------------------------------------------


@dataclass
class Demo:
    browser: httpx.AsyncClient
    stepup: FakeStepup

    async def sign_in(self) -> None:
        home = await self.browser.get("/")
        response = await self.browser.post("/login", data={"csrf_token": csrf_of(home.text)})
        assert response.status_code == 303
        assert response.headers["location"] == "/account"

    async def send_payment(self, amount: str, payee: str) -> httpx.Response:
        account = await self.browser.get("/account")
        assert account.status_code == 200
        return await self.browser.post(
            "/pay", data={"amount": amount, "payee": payee, "csrf_token": csrf_of(account.text)}
        )

    async def come_back(self, **params: str) -> httpx.Response:
        return await self.browser.get("/callback", params=params)


def request_uri_of(redirect: httpx.Response) -> str:
    query = parse_qs(urlsplit(redirect.headers["location"]).query)
    return query["request_uri"][0]


def csrf_of(html: str) -> str:
    marker = 'name="csrf_token" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


@asynccontextmanager
async def demo(
    key: ECKey, *, stepup_running: bool = True, stepup: FakeStepup | None = None
) -> AsyncIterator[Demo]:
    stepup = stepup or FakeStepup()
    clock = FrozenClock(NOW)
    routes: dict[str, ASGIApp] = {}
    if stepup_running:
        routes[SETTINGS.stepup_issuer] = stepup.app()
    transport = Origins(routes)
    client = create_client_app(SETTINGS, key, dpop_key=BANK_KEY, clock=clock, transport=transport)
    api = create_payments_api(SETTINGS, clock=clock, transport=transport)
    routes[SETTINGS.client_base] = client
    routes[SETTINGS.api_base] = api
    async with (
        running(client, api),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=client), base_url=SETTINGS.client_base
        ) as browser,
    ):
        yield Demo(browser, stepup)


async def test_client_steps_up_pays_and_revokes_the_elevated_token(key: ECKey) -> None:
    async with demo(key) as bank:
        await bank.sign_in()
        redirect = await bank.send_payment("25.00", "Bob")

        assert redirect.status_code == 303
        location = urlsplit(redirect.headers["location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == (
            "http://localhost:8000/authorize"
        )
        query = {k: v[0] for k, v in parse_qs(location.query).items()}
        assert query.keys() == {"client_id", "request_uri"}
        assert query["client_id"] == "demo-bank"
        (pushed,) = bank.stepup.pushed
        assert pushed["subject_token_type"] == TOKEN_TYPE_ACCESS_TOKEN
        subject = jwt.decode(pushed["subject_token"], key).claims
        assert subject["sub"] == "alice"
        # B, minted at sign-in, is bound to the bank's key (RFC 9449 §6.1).
        assert subject["cnf"] == {"jkt": BANK_JKT}
        assert "insufficient_user_authentication" in pushed["challenge"]
        assert pushed["scope"] == "payments:write"
        assert pushed["resource"] == "http://localhost:8002"
        assert pushed["redirect_uri"] == "http://localhost:8001/callback"
        assert pushed["code_challenge_method"] == "S256"
        assert "code_verifier" not in pushed
        # RFC 9396: stepup advertises the type, so the bank binds the approval to this payment.
        assert json.loads(pushed["authorization_details"]) == [approved_payment("25.00", "Bob")]

        code = bank.stepup.approve(request_uri_of(redirect))
        back = await bank.come_back(code=code, state=pushed["state"], iss=SETTINGS.stepup_issuer)

        assert back.status_code == 303
        assert back.headers["location"] == "/receipt"
        (exchange,) = bank.stepup.exchanged
        assert exchange["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
        assert exchange["subject_token"] == pushed["subject_token"]
        assert exchange["requested_token_type"] == TOKEN_TYPE_ACCESS_TOKEN
        assert exchange["resource"] == "http://localhost:8002"
        # The bank proved its key at intake and at the exchange (stepup's own verifier
        # checked both proofs), so E came back bound to it; the API took E with a proof.
        assert bank.stepup.passed_proofs == [("/par", BANK_JKT), ("/token", BANK_JKT)]
        assert bank.stepup.introspected_by == ["payments-api"]
        assert len(bank.stepup.revoked) == 1
        assert bank.stepup.active == {}
        receipt = await bank.browser.get("/receipt")
        assert receipt.status_code == 200
        assert "Elevated token revoked" in receipt.text
        assert "1225.00" in receipt.text
        # The receipt shows the key the API saw the approval bound to and proven with.
        assert "Bound to" in receipt.text
        assert BANK_JKT in receipt.text
        account = await bank.browser.get("/account")
        assert "1225.00" in account.text
        assert "Bob" in account.text


async def pay_through(bank: Demo, amount: str, payee: str) -> httpx.Response:
    """A payment, approved at the stand-in stepup: the bank's answer to the callback."""
    redirect = await bank.send_payment(amount, payee)
    assert redirect.status_code == 303, redirect.text
    state = bank.stepup.pushed[-1]["state"]
    code = bank.stepup.approve(request_uri_of(redirect))
    return await bank.come_back(code=code, state=state, iss=SETTINGS.stepup_issuer)


async def test_client_answers_use_dpop_nonce_once_with_stepups_nonce(key: ECKey) -> None:
    async with demo(key, stepup=FakeStepup(nonce="n-0123456789")) as bank:
        await bank.sign_in()
        back = await pay_through(bank, "25.00", "Bob")

    assert back.status_code == 303, back.text
    assert back.headers["location"] == "/receipt"
    # RFC 9449 §8: asked once at /par, the nonce is then sent at /token unasked.
    assert bank.stepup.nonce_refusals == ["/par"]
    assert bank.stepup.passed_proofs == [("/par", BANK_JKT), ("/token", BANK_JKT)]
    assert len(bank.stepup.pushed) == len(bank.stepup.exchanged) == 1


async def test_client_refuses_an_elevated_token_not_bound_to_its_key(key: ECKey) -> None:
    async with demo(key, stepup=FakeStepup(bind=False)) as bank:
        await bank.sign_in()
        back = await pay_through(bank, "25.00", "Bob")
        account = await bank.browser.get("/account")

    assert back.status_code == 502
    assert "not bound to the bank" in back.text
    # Never presented to the API, and revoked at once.
    assert bank.stepup.introspected_by == []
    assert len(bank.stepup.revoked) == 1
    assert bank.stepup.active == {}
    assert "1250.00" in account.text


async def test_client_refuses_a_callback_from_another_issuer(key: ECKey) -> None:
    async with demo(key) as bank:
        await bank.sign_in()
        redirect = await bank.send_payment("25.00", "Bob")
        (pushed,) = bank.stepup.pushed
        code = bank.stepup.approve(request_uri_of(redirect))
        back = await bank.come_back(code=code, state=pushed["state"], iss="https://evil.example")

    assert back.status_code == 400
    assert "unexpected server" in back.text
    assert bank.stepup.exchanged == []


async def test_client_refuses_a_callback_with_the_wrong_state(key: ECKey) -> None:
    async with demo(key) as bank:
        await bank.sign_in()
        await bank.send_payment("25.00", "Bob")
        back = await bank.come_back(code="x", state="forged", iss=SETTINGS.stepup_issuer)
    assert back.status_code == 400
    assert "not for your pending payment" in back.text
    assert bank.stepup.exchanged == []


async def test_client_explains_a_cancelled_approval(key: ECKey) -> None:
    async with demo(key) as bank:
        await bank.sign_in()
        await bank.send_payment("25.00", "Bob")
        (pushed,) = bank.stepup.pushed
        back = await bank.come_back(
            error="access_denied", state=pushed["state"], iss=SETTINGS.stepup_issuer
        )
    assert back.status_code == 400
    assert "cancelled" in back.text
    assert "<main" in back.text


async def test_client_shows_a_page_when_stepup_is_down(key: ECKey) -> None:
    async with demo(key, stepup_running=False) as bank:
        await bank.sign_in()
        response = await bank.send_payment("25.00", "Bob")
    assert response.status_code == 502
    assert "not answering" in response.text
    assert "<main" in response.text


async def test_client_pages_are_accessible_shapes(key: ECKey) -> None:
    async with demo(key) as bank:
        home = await bank.browser.get("/")
        await bank.sign_in()
        account = await bank.browser.get("/account")
        missing = await bank.browser.get("/nowhere")
        css = await bank.browser.get("/static/demo.css")

    for page in (home, account, missing):
        assert '<html lang="en">' in page.text
        assert 'name="viewport"' in page.text
        assert "<main" in page.text
        assert "<script" not in page.text
        assert "style=" not in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
    assert missing.status_code == 404
    assert '<label for="amount">' in account.text
    assert '<label for="payee">' in account.text
    assert css.status_code == 200
    assert ":focus-visible" in css.text
    cookie = home.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "httponly" in cookie.lower()


async def test_client_refuses_a_form_without_its_csrf_token(key: ECKey) -> None:
    async with demo(key) as bank:
        await bank.browser.get("/")
        response = await bank.browser.post("/login", data={"csrf_token": "guess"})
    assert response.status_code == 403


def test_demo_apps_are_built_from_a_data_dir(tmp_path: Path) -> None:
    client, api = create_demo_apps(SETTINGS, tmp_path)
    assert isinstance(client, Starlette)
    assert isinstance(api, Starlette)
    assert (tmp_path / "demo-idp-key.json").exists()
