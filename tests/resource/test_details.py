"""A route bound to the transaction the user approved (RFC 9396), and single-use tokens, through
the toolkit against a live stepup: the same payment passes, any other is a 403 challenge the
client can take back to stepup (checked after the guard, `require_detail`, or by it,
`ExpectedDetail`, which leaves a single-use token unspent); a single-use token passes once,
locally checked or introspected, also when 50 requests race for it over two API instances."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stepup.config import ACR_MFA, ACR_PHR
from stepup.protocol.challenge import parse_www_authenticate, step_up_requirement
from stepup.resource import (
    ExpectedDetail,
    Guard,
    InsufficientAuthorizationDetails,
    ProtectedResource,
    Requirement,
    StepUpMiddleware,
    TrustedIssuer,
    access_token,
    authorize,
    find_detail,
    require_detail,
    requires,
)
from stepup.resource.tokens import token_from_claims
from tests.resource.apps import resource
from tests.resource.conftest import Peers, bearer
from tests.support.own_issuer import claims_of, elevated_token
from tests.support.server import LiveServer
from tests.support.stepup import ACCOUNTS, API, PAYMENT, payment

pytestmark = pytest.mark.anyio

RACERS = 50
WRITE = Requirement("payments:write", acr=ACR_MFA, max_age=300)
WRITE_INTROSPECTED = Requirement("payments:write", acr=ACR_MFA, max_age=300, introspect=True)
ROUTES = {
    "/pay": WRITE,
    "/pay-introspected": WRITE_INTROSPECTED,
    # The payment read first and handed to the guard (`ExpectedDetail`).
    "/pay-first": WRITE,
    "/pay-first-introspected": WRITE_INTROSPECTED,
    # Checked locally (JWKS): a single-use token must still be spent at stepup.
    "/audit": Requirement("audit:read"),
    "/audit-cached": Requirement("audit:read", introspect=True, revocation_delay=30),
    "/audit-introspected": Requirement("audit:read", introspect=True),
    # Routes a single-use audit:read token (acr mfa) does not satisfy.
    "/audit-phr": Requirement("audit:read", acr=ACR_PHR),
    "/audit-phr-introspected": Requirement("audit:read", acr=ACR_PHR, introspect=True),
    "/audit-and-pay": Requirement("audit:read payments:write"),
}


def app(guard: Guard) -> Starlette:
    def paying(requirement: Requirement) -> Any:
        @requires(requirement)
        async def pay(request: Request) -> JSONResponse:
            body = await request.json()
            approved = require_detail(
                access_token(request),
                body.get("type", PAYMENT),
                requirement=requirement,
                instructedAmount={"amount": Decimal(body["amount"]), "currency": body["currency"]},
                creditorName=body["payee"],
            )
            return JSONResponse({"approved": dict(approved)}, status_code=201)

        return pay

    def paying_first(requirement: Requirement) -> Any:
        async def pay(request: Request) -> JSONResponse:
            body = await request.json()
            payment = ExpectedDetail(
                body.get("type", PAYMENT),
                instructedAmount={"amount": Decimal(body["amount"]), "currency": body["currency"]},
                creditorName=body["payee"],
            )
            caller = await authorize(request, requirement, transaction=payment)
            return JSONResponse({"approved": dict(payment.approved_in(caller))}, status_code=201)

        return pay

    def reading(requirement: Requirement) -> Any:
        @requires(requirement)
        async def read(request: Request) -> JSONResponse:
            return JSONResponse({"jti": access_token(request).jti})

        return read

    def endpoint(path: str) -> Any:
        if path.startswith("/pay-first"):
            return paying_first
        return paying if path.startswith("/pay") else reading

    routes = [Route(path, endpoint(path)(r), methods=["POST"]) for path, r in ROUTES.items()]
    return Starlette(routes=routes, middleware=[Middleware(StepUpMiddleware, guard=guard)])


@asynccontextmanager
async def api(peers: Peers, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    guard = Guard(
        resource(peers.stepup.url, upstream_jwks=peers.upstream_jwks, **options),
        clock=peers.stepup.clock,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app(guard)), base_url=API
    ) as client:
        yield client
    await guard.aclose()


def approved_for(
    peers: Peers, *details: dict[str, Any], sub: str = "alice", scope: str = "payments:write"
) -> str:
    return elevated_token(
        peers.stepup, sub, authorization_details=json.dumps(list(details)), scope=scope
    )


def paying(amount: str, currency: str = "EUR", payee: str = "Bob's Bikes", **more: str) -> Any:
    return {"amount": amount, "currency": currency, "payee": payee, **more}


# -- transaction binding -----------------------------------------------------------------


PAYING = ["/pay", "/pay-introspected", "/pay-first", "/pay-first-introspected"]


@pytest.mark.parametrize("path", PAYING)
@pytest.mark.parametrize("amount", ["500.00", "500", "500.0"])
async def test_the_approved_payment_passes(peers: Peers, path: str, amount: str) -> None:
    token = approved_for(peers, payment("500.00"))
    async with api(peers) as client:
        response = await client.post(path, json=paying(amount), headers=bearer(token))
    assert response.status_code == 201, response.text
    assert response.json()["approved"] == payment("500.00")


async def test_an_approval_written_500_matches_a_payment_of_500_00(peers: Peers) -> None:
    token = approved_for(peers, payment("500"))
    async with api(peers) as client:
        response = await client.post("/pay", json=paying("500.00"), headers=bearer(token))
    assert response.status_code == 201, response.text


async def test_one_of_several_approved_payments_passes(peers: Peers) -> None:
    token = approved_for(peers, payment("12.00", payee="Corner Shop"), payment("500.00"))
    async with api(peers) as client:
        response = await client.post("/pay", json=paying("500.00"), headers=bearer(token))
    assert response.status_code == 201
    assert response.json()["approved"]["creditorName"] == "Bob's Bikes"


OTHER = {
    "another amount": paying("5000.00"),
    "a cent more": paying("500.01"),
    "another payee": paying("500.00", payee="Mallory"),
    "the payee in other case": paying("500.00", payee="bob's bikes"),
    "another currency": paying("500.00", "USD"),
    "another type": paying("500.00", type=ACCOUNTS),
}


@pytest.mark.parametrize("case", sorted(OTHER))
@pytest.mark.parametrize("path", PAYING)
async def test_another_transaction_is_refused_with_a_challenge(
    peers: Peers, case: str, path: str
) -> None:
    token = approved_for(peers, payment("500.00"))
    async with api(peers) as client:
        response = await client.post(path, json=OTHER[case], headers=bearer(token))
    assert response.status_code == 403
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "error": "insufficient_authorization_details",
        "error_description": "This request is not the one that was approved",
    }
    challenge = parse_www_authenticate(response.headers["www-authenticate"])
    requirement = step_up_requirement(challenge)
    assert requirement.error == "insufficient_authorization_details"
    assert requirement.acr_values == (ACR_MFA,)
    assert (requirement.max_age, requirement.scope) == (300, ("payments:write",))


@pytest.mark.parametrize("path", PAYING)
async def test_a_token_approved_for_no_transaction_is_refused(peers: Peers, path: str) -> None:
    token = elevated_token(peers.stepup)
    async with api(peers) as client:
        response = await client.post(path, json=paying("500.00"), headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_authorization_details"


@pytest.mark.parametrize("path", ["/pay-first", "/pay-first-introspected"])
async def test_another_transaction_leaves_a_single_use_token_for_the_approved_one(
    peers: Peers, path: str
) -> None:
    # audit:read makes the elevation single use: the guard refuses the other payment before
    # stepup is asked, so the client can still make the one the user approved.
    token = approved_for(peers, payment("500.00"), scope="payments:write audit:read")
    async with api(peers) as client:
        other = await client.post(path, json=paying("5000.00"), headers=bearer(token))
        paid = await client.post(path, json=paying("500.00"), headers=bearer(token))
        again = await client.post(path, json=paying("500.00"), headers=bearer(token))
    assert other.status_code == 403, other.text
    assert other.json()["error"] == "insufficient_authorization_details"
    assert paid.status_code == 201, paid.text
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_token"


async def test_the_refusal_is_a_challenge_stepup_takes_for_the_new_transaction(
    peers: Peers,
) -> None:
    token = approved_for(peers, payment("500.00"))
    async with api(peers) as client:
        refused = await client.post("/pay", json=paying("5000.00"), headers=bearer(token))
    pushed = peers.stepup.par(
        challenge=refused.headers["www-authenticate"],
        scope=None,
        authorization_details=json.dumps([payment("5000.00")]),
    )
    assert pushed.status_code == 201, pushed.text


async def test_find_detail_compares_amounts_as_decimals_and_strings_exactly(
    peers: Peers,
) -> None:
    token_text = approved_for(peers, payment("500.00", actions=["initiate", "status"]))
    token = token_from_claims(
        claims_of(token_text),
        issuer=peers.stepup.url,
        resource=API,
        now=peers.stepup.clock.now(),
        leeway=0,
        introspected=False,
    )
    amount = {"amount": Decimal("500"), "currency": "EUR"}
    assert find_detail(token, PAYMENT, {"instructedAmount": amount}) is not None
    assert find_detail(token, PAYMENT, {"instructedAmount": {"amount": 500}}) is not None
    assert find_detail(token, PAYMENT, {"instructedAmount": {"amount": "500"}}) is None
    assert find_detail(token, PAYMENT, {"actions": ["initiate"]}) is not None
    assert find_detail(token, PAYMENT, {"actions": ["refund"]}) is None
    assert find_detail(token, PAYMENT, {"creditorName": "Bob's Bikes "}) is None
    assert find_detail(token, PAYMENT, {"iban": "DE00"}) is None
    with pytest.raises(InsufficientAuthorizationDetails):
        require_detail(token, ACCOUNTS)


# -- single use ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/audit", "/audit-cached", "/audit-introspected"])
async def test_a_single_use_token_passes_once_on_any_route(peers: Peers, path: str) -> None:
    token = elevated_token(peers.stepup, scope="audit:read")
    async with api(peers) as client:
        first = await client.post(path, headers=bearer(token))
        second = await client.post(path, headers=bearer(token))
    assert first.status_code == 200, first.text
    assert second.status_code == 401
    assert second.json()["error"] == "invalid_token"
    assert peers.stepup.introspect(token).json() == {"active": False}


@pytest.mark.parametrize(
    ("path", "status"),
    [("/audit-phr", 401), ("/audit-phr-introspected", 401), ("/audit-and-pay", 403)],
)
async def test_a_route_the_single_use_token_does_not_satisfy_leaves_it_unspent(
    peers: Peers, path: str, status: int
) -> None:
    # A resource server that cannot use the token must not spend it: the client learns what
    # this route needs and still has its one use for a route the token was made for.
    token = elevated_token(peers.stepup, scope="audit:read")
    async with api(peers) as client:
        refused = await client.post(path, headers=bearer(token))
        used = await client.post("/audit", headers=bearer(token))
    assert refused.status_code == status, refused.text
    assert used.status_code == 200, used.text


async def test_a_spent_token_is_refused_by_another_api_instance(peers: Peers) -> None:
    token = elevated_token(peers.stepup, scope="audit:read")
    async with api(peers) as one, api(peers) as other:
        first = await one.post("/audit", headers=bearer(token))
        local = await other.post("/audit", headers=bearer(token))
        asked = await other.post("/audit-introspected", headers=bearer(token))
    assert (first.status_code, local.status_code, asked.status_code) == (200, 401, 401)


async def test_a_single_use_token_checked_locally_without_introspection_is_refused(
    peers: Peers,
) -> None:
    token = elevated_token(peers.stepup, scope="audit:read")
    guard = Guard(
        ProtectedResource(API, [TrustedIssuer(peers.stepup.url)]), clock=peers.stepup.clock
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app(guard)), base_url=API
    ) as client:
        response = await client.post("/audit", headers=bearer(token))
    await guard.aclose()
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    # Nothing was spent: a resource server that can introspect still gets its one use.
    assert peers.stepup.introspect(token).json()["active"] is True


@pytest.mark.parametrize("path", ["/audit", "/audit-introspected"])
async def test_fifty_racing_requests_over_two_instances_one_succeeds(
    peers: Peers, path: str
) -> None:
    token = elevated_token(peers.stepup, scope="audit:read")
    guards = [
        Guard(
            resource(peers.stepup.url, upstream_jwks=peers.upstream_jwks),
            clock=peers.stepup.clock,
        )
        for _ in range(2)
    ]
    with LiveServer(app(guards[0])) as one, LiveServer(app(guards[1])) as two:
        limits = httpx.Limits(max_connections=RACERS)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            answers = await asyncio.gather(
                *(
                    client.post((one, two)[i % 2].url + path, headers=bearer(token))
                    for i in range(RACERS)
                )
            )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [401] * (RACERS - 1)
    assert peers.stepup.introspect(token).json() == {"active": False}
