"""DPoP (RFC 9449), authorization details (RFC 9396) and single use in one flow: the seam
where the features built apart meet. A token bound to the client's key, to one payment, and
good for one request: intake with a proof and the details, the page, the exchange with a
proof, a toolkit route handing the guard its payment (`ExpectedDetail`) with DPoP, once
only; another payment, or a token edited to name it, spends nothing — live stepup, real
Redis."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stepup.config import ACR_MFA
from stepup.protocol.challenge import parse_www_authenticate, step_up_requirement
from stepup.resource import ExpectedDetail, Guard, Requirement, StepUpMiddleware, authorize
from tests.resource.apps import resource
from tests.resource.conftest import Peers, bearer
from tests.support.dpop import DPoPKey
from tests.support.oauth import assert_oauth_error
from tests.support.own_issuer import claims_of
from tests.support.stepup import API, PAYMENT, Stepup, payment, pkce

pytestmark = pytest.mark.anyio

# payments:write carries the payment type; audit:read makes the elevation single use.
SCOPE = "payments:write audit:read"
ROUTES = {
    "local": Requirement("payments:write", acr=ACR_MFA, max_age=300),
    "introspection": Requirement("payments:write", acr=ACR_MFA, max_age=300, introspect=True),
}


@pytest.fixture(params=sorted(ROUTES))
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def paying_app(guard: Guard) -> Starlette:
    def route(requirement: Requirement) -> Any:
        async def pay(request: Request) -> JSONResponse:
            # The payment is read first, so the guard checks it before the token is spent.
            body = await request.json()
            payment = ExpectedDetail(
                PAYMENT,
                instructedAmount={"amount": Decimal(body["amount"]), "currency": body["currency"]},
                creditorName=body["payee"],
            )
            caller = await authorize(request, requirement, transaction=payment)
            return JSONResponse({"approved": dict(payment.approved_in(caller))}, status_code=201)

        return pay

    return Starlette(
        routes=[Route(f"/pay/{name}", route(r), methods=["POST"]) for name, r in ROUTES.items()],
        middleware=[Middleware(StepUpMiddleware, guard=guard)],
    )


@asynccontextmanager
async def payments_api(peers: Peers) -> AsyncIterator[httpx.AsyncClient]:
    guard = Guard(
        resource(peers.stepup.url, upstream_jwks=peers.upstream_jwks), clock=peers.stepup.clock
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=paying_app(guard)), base_url=API
    ) as client:
        yield client
    await guard.aclose()


def proof(key: DPoPKey, stepup: Stepup, url: str, **options: Any) -> dict[str, str]:
    return {"DPoP": key.proof("POST", url, iat=stepup.clock.now(), **options)}


def bound_transaction_token(stepup: Stepup, key: DPoPKey, *details: dict[str, Any]) -> str:
    """Intake with a proof and the details, the page showing them, the exchange with a proof
    by the same key; asserts each step and returns the elevated token."""
    verifier, challenge = pkce()
    par_proof = proof(key, stepup, stepup.url + "/par")
    pushed = stepup.par(
        scope=SCOPE,
        code_challenge=challenge,
        authorization_details=json.dumps(list(details)),
        headers=par_proof,
    )
    assert pushed.status_code == 201, pushed.text
    with stepup.browser() as browser:
        page = stepup.open_authorization(browser, pushed.json()["request_uri"])
        assert page.status_code == 200, page.text
        assert "Pay 500.00 EUR to Bob&#39;s Bikes" in page.text
        answer = stepup.prove_totp(browser, page)
    assert answer.status_code == 303, answer.text
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]

    # The proof sent to /par names /par: at /token it is for another URI (§4.3 step 9),
    # and it was spent anyway. Refused before the code is touched.
    assert_oauth_error(stepup.token(code, verifier, headers=par_proof), 400, "invalid_dpop_proof")
    # Intake bound the request to the key: a proof by another key does not redeem it.
    exchanged = stepup.token(code, verifier, headers=proof(key, stepup, stepup.url + "/token"))
    assert exchanged.status_code == 200, exchanged.text
    body = exchanged.json()
    assert body["token_type"] == "DPoP"
    assert body["authorization_details"] == list(details)
    token: str = body["access_token"]
    claims = claims_of(token)
    assert claims["cnf"] == {"jkt": key.jkt}
    assert claims["authorization_details"] == list(details)
    assert claims["single_use"] is True
    return token


def dpop_call(token: str, key: DPoPKey, stepup: Stepup, path: str) -> dict[str, str]:
    return {
        "Authorization": f"DPoP {token}",
        "DPoP": key.proof("POST", API + path, iat=stepup.clock.now(), access_token=token),
    }


async def test_a_key_bound_single_use_payment_token_pays_once(peers: Peers, mode: str) -> None:
    stepup, key, path = peers.stepup, DPoPKey(), f"/pay/{mode}"
    token = bound_transaction_token(stepup, key, payment("500.00"))
    async with payments_api(peers) as api:
        paid = await api.post(
            path,
            json={"amount": "500", "currency": "EUR", "payee": "Bob's Bikes"},
            headers=dpop_call(token, key, stepup, path),
        )
        again = await api.post(
            path,
            json={"amount": "500", "currency": "EUR", "payee": "Bob's Bikes"},
            headers=dpop_call(token, key, stepup, path),
        )
    assert paid.status_code == 201, paid.text
    assert paid.json()["approved"] == payment("500.00")
    assert again.status_code == 401
    assert again.headers["www-authenticate"].startswith("DPoP ")
    assert again.json()["error"] == "invalid_token"
    assert stepup.introspect(token).json() == {"active": False}


async def test_the_stolen_token_neither_pays_nor_spends_the_owners_one_use(
    peers: Peers, mode: str
) -> None:
    stepup, key, path = peers.stepup, DPoPKey(), f"/pay/{mode}"
    token = bound_transaction_token(stepup, key, payment("500.00"))
    body = {"amount": "500.00", "currency": "EUR", "payee": "Bob's Bikes"}
    async with payments_api(peers) as api:
        as_bearer = await api.post(path, json=body, headers=bearer(token))
        other_key = await api.post(
            path, json=body, headers=dpop_call(token, DPoPKey(), stepup, path)
        )
        owner = await api.post(path, json=body, headers=dpop_call(token, key, stepup, path))
    assert (as_bearer.status_code, other_key.status_code) == (401, 401)
    assert as_bearer.json()["error"] == other_key.json()["error"] == "invalid_token"
    # Neither thief spent it: the one use is still the owner's.
    assert owner.status_code == 201, owner.text


APPROVED = {"amount": "500.00", "currency": "EUR", "payee": "Bob's Bikes"}
OTHER = {"amount": "5000.00", "currency": "EUR", "payee": "Bob's Bikes"}


async def test_another_payment_is_refused_unspent_and_the_approved_one_then_pays_once(
    peers: Peers, mode: str
) -> None:
    stepup, key, path = peers.stepup, DPoPKey(), f"/pay/{mode}"
    token = bound_transaction_token(stepup, key, payment("500.00"))
    async with payments_api(peers) as api:
        other = await api.post(path, json=OTHER, headers=dpop_call(token, key, stepup, path))
        paid = await api.post(path, json=APPROVED, headers=dpop_call(token, key, stepup, path))
        again = await api.post(path, json=APPROVED, headers=dpop_call(token, key, stepup, path))
    assert other.status_code == 403, other.text
    assert other.json()["error"] == "insufficient_authorization_details"
    # In the scheme the client used (RFC 9449 §7.1), with what it takes to stepup for a new
    # approval of this payment.
    assert other.headers["www-authenticate"].startswith("DPoP ")
    requirement = step_up_requirement(parse_www_authenticate(other.headers["www-authenticate"]))
    assert requirement.error == "insufficient_authorization_details"
    assert requirement.acr_values == (ACR_MFA,)
    assert (requirement.max_age, requirement.scope) == (300, ("payments:write",))
    # The refusal did not use up the approval: the payment approved still goes through, once.
    assert paid.status_code == 201, paid.text
    assert paid.json()["approved"] == payment("500.00")
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_token"


def edited(token: str, **claims: Any) -> str:
    """`token` with claims changed in its payload and its signature kept, so no longer valid."""
    header, _, signature = token.split(".")
    changed = claims_of(token) | claims
    encoded = base64.urlsafe_b64encode(json.dumps(changed).encode()).rstrip(b"=").decode()
    return f"{header}.{encoded}.{signature}"


async def test_a_token_edited_to_name_another_payment_is_refused_and_spends_nothing(
    peers: Peers, mode: str
) -> None:
    # The guard reads an introspected token's own claims before it asks stepup; an edit that
    # makes them name this payment gets past that look, but never past the signature.
    stepup, key, path = peers.stepup, DPoPKey(), f"/pay/{mode}"
    token = bound_transaction_token(stepup, key, payment("500.00"))
    forged = edited(token, authorization_details=[payment("5000.00")])
    async with payments_api(peers) as api:
        refused = await api.post(path, json=OTHER, headers=dpop_call(forged, key, stepup, path))
        paid = await api.post(path, json=APPROVED, headers=dpop_call(token, key, stepup, path))
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "invalid_token"
    assert paid.status_code == 201, paid.text
