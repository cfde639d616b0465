"""The protected APIs the toolkit tests drive: one Starlette, one FastAPI, same routes."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stepup.config import ACR_MFA, ACR_PHR
from stepup.resource import (
    AccessToken,
    Guard,
    ProtectedResource,
    Requirement,
    StepUpMiddleware,
    TrustedIssuer,
    access_token,
    needs,
    requires,
)
from stepup.resource.asgi import Endpoint
from tests.support.stepup import API, ISSUER_UPSTREAM, RS_ID, RS_SECRET

ROUTES = {
    "/read": Requirement("payments:read"),
    "/write": Requirement("payments:write"),
    "/pay": Requirement("payments:write", acr=ACR_MFA, max_age=300),
    "/fresh": Requirement("payments:write", acr=ACR_MFA, max_age=60),
    "/phr": Requirement("payments:write", acr=ACR_PHR),
    "/low": Requirement("payments:write", acr="urn:example:low"),
    "/introspect": Requirement("payments:write", acr=ACR_MFA, introspect=True),
    "/cached": Requirement("payments:write", introspect=True, revocation_delay=30),
    "/once": Requirement("audit:read", acr=ACR_MFA, single_use=True),
    "/once-here": Requirement("payments:write", single_use=True),
}


def resource(
    stepup_url: str,
    *,
    upstream_jwks: str,
    introspection_endpoint: str | None = None,
    **options: Any,
) -> ProtectedResource:
    return ProtectedResource(
        API,
        [
            TrustedIssuer(
                stepup_url,
                introspection_endpoint=introspection_endpoint,
                client_id=RS_ID,
                client_secret=RS_SECRET,
            ),
            TrustedIssuer(ISSUER_UPSTREAM, jwks_uri=upstream_jwks),
        ],
        realm="payments",
        resource_name="Payments API",
        scopes_supported=("payments:read", "payments:write", "audit:read"),
        # urn:example:low ranks below mfa: a real mfa token must satisfy it.
        levels=("urn:example:low", ACR_MFA, ACR_PHR),
        **options,
    )


def _describe(token: AccessToken) -> JSONResponse:
    return JSONResponse(
        {
            "sub": token.subject,
            "acr": token.acr,
            "scope": sorted(token.scopes),
            "introspected": token.introspected,
        }
    )


def starlette_app(guard: Guard) -> Starlette:
    def endpoint(requirement: Requirement) -> Endpoint:
        @requires(requirement)
        async def handle(request: Request) -> JSONResponse:
            return _describe(access_token(request))

        return handle

    return Starlette(
        routes=[
            Route(path, endpoint(requirement), methods=["GET", "POST"])
            for path, requirement in ROUTES.items()
        ],
        middleware=[Middleware(StepUpMiddleware, guard=guard)],
    )


def fastapi_app(guard: Guard) -> FastAPI:
    app = FastAPI()
    app.add_middleware(StepUpMiddleware, guard=guard)
    for path, requirement in ROUTES.items():

        async def handle(token: AccessToken = Depends(needs(requirement))) -> JSONResponse:  # noqa: B008
            return _describe(token)

        app.add_api_route(path, handle, methods=["GET", "POST"])
    return app
