"""Token introspection (RFC 7662), for resource servers only.

The Redis record decides: a revoked or lost record reads as inactive (fail closed), and
`exp` is checked against the clock as well, since a TTL alone is not a security boundary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stepup.config import ResourceServer
from stepup.errors import InvalidRequest
from stepup.models import Elevation
from stepup.services import Services

INACTIVE: dict[str, Any] = {"active": False}


async def find_elevation(services: Services, token: str) -> Elevation | None:
    """The live record of a token stepup signed, or None."""
    claims = services.signing.verify(token)
    if claims is None or not isinstance(claims.get("jti"), str):
        return None
    elevation = await services.store.elevation(claims["jti"])
    if elevation is None or services.now() >= elevation.exp:
        return None
    return elevation


async def introspect(
    services: Services, server: ResourceServer, form: Mapping[str, str]
) -> dict[str, Any]:
    token = form.get("token")
    if not token:
        raise InvalidRequest("token is required")
    elevation = await find_elevation(services, token)
    # A resource server learns only about tokens meant for it.
    if elevation is None or elevation.aud not in server.resources:
        services.audit.record("token.introspected", "inactive", server=server.id)
        return INACTIVE
    # A single-use token is consumed atomically: of racing introspections one sees it active.
    if elevation.single_use and await services.store.consume_elevation(elevation.jti) is None:
        return INACTIVE
    services.audit.record(
        "token.introspected",
        "active",
        server=server.id,
        jti=elevation.jti,
        consumed=elevation.single_use or None,
    )
    body: dict[str, Any] = {
        "active": True,
        "iss": elevation.iss,
        "sub": elevation.sub,
        "aud": elevation.aud,
        "client_id": elevation.client_id,
        "scope": elevation.scope,
        "token_type": "DPoP" if elevation.cnf_jkt else "Bearer",
        "exp": elevation.exp,
        "iat": elevation.iat,
        "jti": elevation.jti,
        "acr": elevation.acr,
        "amr": elevation.amr,
        "auth_time": elevation.auth_time,
    }
    if elevation.single_use:
        # This answer is the token's one use: a resource server must not cache it.
        body["single_use"] = True
    if elevation.cnf_jkt:
        body["cnf"] = {"jkt": elevation.cnf_jkt}
    if elevation.authorization_details:
        body["authorization_details"] = elevation.authorization_details
    return body
