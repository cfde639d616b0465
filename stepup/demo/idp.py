"""The demo's upstream identity provider: a discovery document, a JWKS, and a token minter.

It stands in for the IdP a real deployment already has. It has no login of its own: the
demo client mints the user's access token B with `issue_access_token` (RFC 9068), bound to
the client's DPoP key when it names one (`cnf.jkt`), as an IdP does for a client that
proves its key at the token endpoint or names it as `dpop_jkt` (RFC 9449 §5, §10).
"""

from __future__ import annotations

import secrets

from joserfc import jwt
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stepup.demo.policy import PAYMENTS_READ

ALGORITHM = "ES256"


def create_idp_app(issuer: str, key: ECKey) -> Starlette:
    key.ensure_kid()
    app = Starlette(
        routes=[
            Route("/.well-known/openid-configuration", _discovery, methods=["GET"]),
            Route("/jwks", _jwks, methods=["GET"]),
        ]
    )
    app.state.issuer = issuer
    # Only the public half ever leaves this module.
    app.state.jwks = {"keys": [{**key.as_dict(private=False), "use": "sig", "alg": ALGORITHM}]}
    return app


async def _discovery(request: Request) -> JSONResponse:
    issuer: str = request.app.state.issuer
    return JSONResponse(
        {
            "issuer": issuer,
            "jwks_uri": f"{issuer}/jwks",
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "subject_types_supported": ["public"],
        },
        headers={"Cache-Control": "public, max-age=300"},
    )


async def _jwks(request: Request) -> JSONResponse:
    return JSONResponse(
        request.app.state.jwks,
        media_type="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=300"},
    )


def issue_access_token(
    key: ECKey,
    issuer: str,
    sub: str,
    client_id: str,
    audience: str,
    now: float,
    lifetime: int = 3600,
    jkt: str | None = None,
) -> str:
    """An RFC 9068 JWT access token, as a real IdP would give `client_id` for `sub`; bound
    to the DPoP key whose RFC 7638 thumbprint is `jkt`, if given (RFC 9449 §6.1)."""
    key.ensure_kid()
    issued_at = int(now)
    header = {"typ": "at+jwt", "alg": ALGORITHM, "kid": key.kid}
    claims = {
        "iss": issuer,
        "sub": sub,
        "aud": audience,
        "client_id": client_id,
        "iat": issued_at,
        "exp": issued_at + lifetime,
        "jti": secrets.token_urlsafe(16),
        "scope": PAYMENTS_READ,
        # The demo login is a fresh password login, so the user authenticated just now.
        "auth_time": issued_at,
    }
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    return jwt.encode(header, claims, key, algorithms=[ALGORITHM])
