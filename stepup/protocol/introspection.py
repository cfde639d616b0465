"""Token introspection (RFC 7662), for resource servers only.

The Redis record decides: a revoked or lost record reads as inactive (fail closed), and
`exp` is checked against the clock as well, since a TTL alone is not a security boundary.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from stepup import models
from stepup.config import ResourceServer
from stepup.errors import InvalidRequest
from stepup.models import Elevation

if TYPE_CHECKING:
    from stepup.services import Services

INACTIVE = orjson.dumps({"active": False})
# How many records' answers each app remembers (about 1.5 KiB each).
ANSWERS_SIZE = 4096


class Answers:
    """The active answer of each recently introspected record, by the record's bytes: the
    parsed record and its JSON answer, which depend on those bytes alone. A resource server
    introspects the same token on every call; a hit saves parsing the record and writing the
    answer. Everything that can change is still decided per request: whether the record is
    there at all (Redis, every time), `exp` against the clock, the audience against the
    asking server, and a single-use token's consumption. A revoked token has no record, a
    changed record other bytes, so neither finds an old answer. Each app owns one
    (Services.answers); the entries are only read."""

    def __init__(self, size: int = ANSWERS_SIZE) -> None:
        self._size = size
        self._found: OrderedDict[bytes, tuple[Elevation, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._found)

    def of(self, record: bytes) -> tuple[Elevation, bytes]:
        found = self._found.get(record)
        if found is not None:
            self._found.move_to_end(record)
            return found
        found = self._found[record] = answered(record)
        if len(self._found) > self._size:
            self._found.popitem(last=False)  # least recently used
        return found


def answered(record: bytes) -> tuple[Elevation, bytes]:
    """A record, parsed, with its active answer as JSON."""
    elevation = models.load(Elevation, record)
    return elevation, orjson.dumps(active_answer(elevation))


def _signed_claims(services: Services, token: str) -> dict[str, Any] | None:
    """The claims of a token stepup signed, if they name a jti."""
    claims = services.signing.verify(token)
    return claims if claims is not None and isinstance(claims.get("jti"), str) else None


async def find_elevation(services: Services, token: str) -> Elevation | None:
    """The live record of a token stepup signed, or None."""
    claims = _signed_claims(services, token)
    if claims is None:
        return None
    elevation = await services.store.elevation(claims["jti"])
    if elevation is None or services.now() >= elevation.exp:
        return None
    return elevation


async def introspect(services: Services, server: ResourceServer, form: Mapping[str, str]) -> bytes:
    """The JSON answer."""
    token = form.get("token")
    if not token:
        raise InvalidRequest("token is required")
    found = await _live(services, server, token)
    # A resource server learns only about tokens meant for it.
    if found is None or found[0].aud not in server.resources:
        services.audit.record("token.introspected", "inactive", server=server.id)
        return INACTIVE
    elevation, answer, taken = found
    # A single-use token is consumed atomically: of racing introspections one sees it active.
    # (_live took it already when its claims said so; this is for a record that says so alone.)
    consume = elevation.single_use and not taken
    if consume and await services.store.consume_elevation(elevation.jti) is None:
        return INACTIVE
    services.audit.record(
        "token.introspected",
        "active",
        server=server.id,
        jti=elevation.jti,
        consumed=elevation.single_use or None,
    )
    return answer


async def _live(
    services: Services, server: ResourceServer, token: str
) -> tuple[Elevation, bytes, bool] | None:
    """As find_elevation: the record with its answer, and whether it was taken (consumed)."""
    claims = _signed_claims(services, token)
    if claims is None:
        return None
    jti = claims["jti"]
    # Its signed claims say it is single-use and meant for this resource server: taken
    # (GETDEL) in the round trip that reads it, and not remembered: it is never read again.
    taken = claims.get("single_use") is True and claims.get("aud") in server.resources
    if taken:
        record = await services.store.take_elevation_record(jti)
    else:
        record = await services.store.elevation_record(jti)
    if record is None:
        return None
    elevation, answer = answered(record) if taken else services.answers.of(record)
    if services.now() >= elevation.exp:
        return None
    return elevation, answer, taken


def active_answer(elevation: Elevation) -> dict[str, Any]:
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
