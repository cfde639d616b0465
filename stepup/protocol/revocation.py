"""Token revocation (RFC 7009): the client that holds an elevated token, or the resource
server it is for, ends it; introspection reads inactive at once."""

from __future__ import annotations

from collections.abc import Mapping

from stepup.config import Client, ResourceServer
from stepup.errors import InvalidRequest, UnauthorizedClient
from stepup.protocol.introspection import find_elevation
from stepup.services import Services


async def revoke(
    services: Services, caller: Client | ResourceServer, form: Mapping[str, str]
) -> None:
    token = form.get("token")
    if not token:
        raise InvalidRequest("token is required")
    elevation = await find_elevation(services, token)
    if elevation is None:
        # RFC 7009 §2.2: an invalid or unknown token is answered with 200 all the same.
        return
    if isinstance(caller, Client):
        allowed = elevation.client_id == caller.client_id
        who = caller.client_id
    else:
        allowed = elevation.aud in caller.resources
        who = caller.id
    if not allowed:
        # RFC 7009 §2.1: the token must have been issued to (or be for) the caller.
        services.audit.record("token.revoked", "refused", caller=who, jti=elevation.jti)
        raise UnauthorizedClient("this token was not issued to you")
    await services.store.revoke_elevation(elevation.jti)
    await services.elevations.untrack(elevation.jti)
    services.audit.record("token.revoked", "success", caller=who, jti=elevation.jti)
