"""A protected resource: its identity, the issuers it trusts, and the whole check of one
request's Authorization header against one route's requirement. Framework-free: any ASGI
(or other) code calls `Guard.authorize` and renders the `Refusal` it may raise."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from stepup.clock import Clock, SystemClock
from stepup.resource.levels import DEFAULT_LEVELS, LevelOrder
from stepup.resource.refusals import Answer, InvalidRequest, InvalidToken, MissingToken, Refusal
from stepup.resource.requirement import Requirement, check
from stepup.resource.tokens import MAX_TOKEN_LENGTH, AccessToken, TokenVerifier, TrustedIssuer

# RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token.
_BEARER = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)
WELL_KNOWN = "/.well-known/oauth-protected-resource"


@dataclass(frozen=True)
class ProtectedResource:
    """`resource` is this API's identifier (RFC 8707, RFC 9728 §2): tokens must name it in
    `aud`. `issuers`: stepup first, then any upstream IdP whose tokens the API also takes.
    `levels`: weakest to strongest. `leeway`: clock skew allowed on exp/nbf/iat, seconds."""

    resource: str
    issuers: Sequence[TrustedIssuer]
    resource_name: str | None = None
    realm: str | None = None
    scopes_supported: Sequence[str] = ()
    levels: Sequence[str] = DEFAULT_LEVELS
    leeway: int = 0
    jwks_refresh_interval: float = 30.0
    introspection_cache_size: int = 1024
    timeout: float = 5.0

    @property
    def metadata_path(self) -> str:
        # RFC 9728 §3.1: the well-known segment goes between host and the resource's path.
        return WELL_KNOWN + urlsplit(self.resource).path.rstrip("/")

    @property
    def metadata_url(self) -> str:
        parts = urlsplit(self.resource)
        return urlunsplit((parts.scheme, parts.netloc, self.metadata_path, "", ""))

    def metadata(self) -> dict[str, Any]:
        """The RFC 9728 §2 protected-resource metadata document."""
        document: dict[str, Any] = {
            "resource": self.resource,
            "authorization_servers": [i.issuer for i in self.issuers],
            # RFC 6750 §2.1 only: a token in a query string or form body ends up in logs.
            "bearer_methods_supported": ["header"],
        }
        if self.scopes_supported:
            document["scopes_supported"] = list(self.scopes_supported)
        if self.resource_name:
            document["resource_name"] = self.resource_name
        return document


def bearer_token(authorization: str | None) -> str:
    """The b64token of an RFC 6750 §2.1 Authorization header, or the refusal to answer."""
    if authorization is None or not authorization.strip():
        raise MissingToken()
    scheme = re.split(r"[ \t]", authorization.strip(), maxsplit=1)[0]
    if scheme.lower() != "bearer":
        # Another scheme is no Bearer credential at all: answered like none (RFC 6750 §3.1).
        raise MissingToken(detail=f"scheme {scheme[:20]!r}")
    if len(authorization) > MAX_TOKEN_LENGTH + 16:
        raise InvalidToken("The access token is not valid", detail="token too long")
    match = _BEARER.fullmatch(authorization.strip(" \t"))
    if match is None:
        raise InvalidRequest("The Authorization header is malformed", detail="not b64token")
    return match.group(1)


class Guard:
    """Checks requests for one protected resource. Holds the caches; make one per process
    and share it (`aclose()` when done if it made its own HTTP client)."""

    def __init__(
        self,
        resource: ProtectedResource,
        *,
        clock: Clock | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.resource = resource
        self.clock = clock or SystemClock()
        self.levels = LevelOrder(resource.levels)
        self._own_http = http is None
        self._http = http
        self._verifier: TokenVerifier | None = None

    @property
    def verifier(self) -> TokenVerifier:
        if self._verifier is None:
            if self._http is None:
                # Made on first use, inside the running event loop, never at import time.
                self._http = httpx.AsyncClient(timeout=self.resource.timeout)
            self._verifier = TokenVerifier(
                self.resource.resource,
                tuple(self.resource.issuers),
                self.clock,
                self._http,
                leeway=self.resource.leeway,
                refresh_interval=self.resource.jwks_refresh_interval,
                introspection_cache_size=self.resource.introspection_cache_size,
            )
        return self._verifier

    async def aclose(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.aclose()
        self._http = self._verifier = None

    async def authorize(self, authorization: str | None, requirement: Requirement) -> AccessToken:
        """The verified token if it meets `requirement`; otherwise raises a `Refusal`."""
        try:
            token = await self._verify(bearer_token(authorization), requirement)
            check(token, requirement, self.levels, self.clock.now(), self.resource.leeway)
        except MissingToken as refusal:
            # No error code (RFC 6750 §3.1), but the scope hint helps a client ask for it.
            if requirement.scope:
                raise MissingToken(
                    detail=refusal.detail, params=[("scope", " ".join(requirement.scope))]
                ) from None
            raise
        return token

    async def _verify(self, token: str, requirement: Requirement) -> AccessToken:
        verifier = self.verifier
        if not requirement.introspect:
            checked = await verifier.verify_jwt(token)
            if checked.claims.get("single_use") is not True:
                return checked
            # stepup marks the tokens its policy makes single use: only introspection
            # consumes one, so a signature check alone would accept it again and again.
            issuer = verifier.introspecting_issuer(token)
            if issuer is None:
                raise InvalidToken(
                    "The access token is not valid",
                    detail="single-use token, and its issuer cannot be asked",
                )
            return await verifier.introspect(token, issuer, max_staleness=0, single_use=True)
        issuer = verifier.introspecting_issuer(token)
        if issuer is None:
            # A token of an issuer this resource cannot ask (an upstream IdP's): if it is
            # valid, the answer is the step-up challenge, so the client gets one stepup can
            # revoke; if not, invalid_token.
            await verifier.verify_jwt(token)
            raise requirement.step_up(detail="token cannot be introspected")
        return await verifier.introspect(
            token,
            issuer,
            max_staleness=requirement.revocation_delay,
            single_use=requirement.single_use,
        )

    def answer(self, refusal: Refusal) -> Answer:
        return refusal.answer(self.resource.realm, self.resource.metadata_url)
