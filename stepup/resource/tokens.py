"""Checking an access token: locally against an issuer's JWKS (RFC 9068), or by asking the
issuer (RFC 7662 introspection). No framework here: a header value in, a verified token out.

Keys and metadata are cached per issuer; an unknown `kid` fetches the JWKS again (the issuer
may have rotated), but not more often than `refresh_interval`, since the kid is the
attacker's choice. Nothing here trusts a header to say where keys live (`jku`, `x5u`, `jwk`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlsplit, urlunsplit

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import KeySet

from stepup.clock import Clock
from stepup.jwtparts import numeric_date
from stepup.resource.refusals import InvalidToken, Unavailable

log = logging.getLogger("stepup.resource")

MAX_TOKEN_LENGTH = 16_384
# Asymmetric only: with HMAC anyone holding the published key could mint tokens.
DEFAULT_ALGORITHMS = ("ES256", "Ed25519", "EdDSA")
_AT_JWT = ("at+jwt", "application/at+jwt")


@dataclass(frozen=True)
class TrustedIssuer:
    """An authorization server whose tokens this resource accepts.

    Keys come from `jwks_uri`, else from its metadata (RFC 8414, then OpenID Connect
    discovery). Introspection needs `client_id`/`client_secret` (the resource server's
    credential at that issuer, RFC 7662 §2.1); its endpoint comes from the metadata
    unless given.
    """

    issuer: str
    jwks_uri: str | None = None
    introspection_endpoint: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS

    @property
    def introspects(self) -> bool:
        return self.client_id is not None and self.client_secret is not None


@dataclass(frozen=True)
class AccessToken:
    """A token that passed every check; `claims` holds all it said (JWT claims or the
    introspection answer), e.g. `authorization_details` (RFC 9396)."""

    issuer: str
    subject: str
    client_id: str | None
    audience: tuple[str, ...]
    scopes: frozenset[str]
    acr: str | None
    amr: tuple[str, ...]
    auth_time: int | None
    issued_at: int | None
    expires_at: int
    jti: str | None
    claims: Mapping[str, Any]
    introspected: bool


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def token_from_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    resource: str,
    now: float,
    leeway: int,
    introspected: bool,
) -> AccessToken:
    """The claim checks shared by both paths: RFC 9068 §4 for JWTs, RFC 7662 §2.2 answers."""
    invalid = "The access token is not valid"
    iss = claims.get("iss")
    # An introspection answer may leave `iss` out (RFC 7662 §2.2); then the issuer asked vouches.
    if (iss is not None or not introspected) and iss != issuer:
        raise InvalidToken(invalid, detail=f"iss {iss!r} is not {issuer!r}")
    audience = _strings(claims.get("aud"))
    # RFC 9068 §4: the resource server must find its own identifier in `aud`.
    if resource not in audience:
        raise InvalidToken("The access token is not for this resource", detail=f"aud {audience}")
    exp = numeric_date(claims.get("exp"))
    if exp is None:
        raise InvalidToken(invalid, detail="exp missing or not a NumericDate")
    # RFC 7519 §4.1.4: not accepted "on or after" exp.
    if now >= exp + leeway:
        raise InvalidToken("The access token expired", detail=f"exp {exp} <= now {now}")
    nbf = numeric_date(claims.get("nbf"))
    if "nbf" in claims and (nbf is None or now < nbf - leeway):
        raise InvalidToken(invalid, detail="nbf in the future or malformed")
    iat = numeric_date(claims.get("iat"))
    if "iat" in claims and (iat is None or iat > now + leeway):
        raise InvalidToken(invalid, detail="iat in the future or malformed")
    auth_time = numeric_date(claims.get("auth_time"))
    if "auth_time" in claims and auth_time is None:
        raise InvalidToken(invalid, detail="auth_time malformed")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidToken(invalid, detail="no sub")
    client_id = claims.get("client_id")
    jti = claims.get("jti")
    # RFC 9068 §2.2: client_id and jti are required in a JWT access token.
    if not introspected and not (isinstance(client_id, str) and isinstance(jti, str) and jti):
        raise InvalidToken(invalid, detail="client_id or jti missing")
    scope = claims.get("scope")
    acr = claims.get("acr")
    return AccessToken(
        issuer=issuer,
        subject=sub,
        client_id=client_id if isinstance(client_id, str) else None,
        audience=audience,
        scopes=frozenset(scope.split(" ")) - {""} if isinstance(scope, str) else frozenset(),
        acr=acr if isinstance(acr, str) else None,
        amr=_strings(claims.get("amr")),
        auth_time=auth_time,
        issued_at=iat,
        expires_at=exp,
        jti=jti if isinstance(jti, str) and jti else None,
        claims=dict(claims),
        introspected=introspected,
    )


def unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Header and payload of a compact JWS, unverified (only to pick the issuer), or None."""
    try:
        compact = jws.extract_compact(token.encode("ascii"))
        payload = json.loads(compact.payload)
    except (JoseError, ValueError, UnicodeError):
        return None
    if not isinstance(payload, dict):
        return None
    return dict(compact.protected), payload


def metadata_urls(issuer: str) -> list[str]:
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    # RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path;
    # OpenID Connect Discovery §4 appends it to the issuer instead.
    return [
        urlunsplit(
            (parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + path, "", "")
        ),
        issuer.rstrip("/") + "/.well-known/openid-configuration",
    ]


@dataclass
class _IssuerState:
    metadata: dict[str, Any] | None = None
    keys: KeySet | None = None
    fetched_at: float = -math.inf
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class _Cached:
    token: AccessToken
    fetched_at: float


class TokenVerifier:
    """Verifies tokens of the trusted issuers for one resource (its `aud`)."""

    def __init__(
        self,
        resource: str,
        issuers: tuple[TrustedIssuer, ...],
        clock: Clock,
        http: httpx.AsyncClient,
        *,
        leeway: int = 0,
        refresh_interval: float = 30.0,
        keys_max_age: float = 3600.0,
        introspection_cache_size: int = 1024,
    ) -> None:
        if not issuers:
            raise ValueError("trust at least one issuer")
        self.resource = resource
        self.issuers = {i.issuer: i for i in issuers}
        self.clock = clock
        self.http = http
        self.leeway = leeway
        self.refresh_interval = refresh_interval
        self.keys_max_age = keys_max_age
        self.cache_size = introspection_cache_size
        self._state = {i.issuer: _IssuerState() for i in issuers}
        self._introspected: OrderedDict[str, _Cached] = OrderedDict()
        self._spent: dict[str, int] = {}

    # -- local (JWKS) ----------------------------------------------------------------------

    async def verify_jwt(self, token: str) -> AccessToken:
        parts = unverified_parts(token)
        if parts is None:
            raise InvalidToken("The access token is not valid", detail="not a compact JWS")
        header, payload = parts
        issuer = self.issuers.get(str(payload.get("iss")))
        if issuer is None:
            raise InvalidToken(
                "The access token is not valid", detail=f"untrusted iss {payload.get('iss')!r}"
            )
        alg = header.get("alg")
        if alg not in issuer.algorithms:
            raise InvalidToken("The access token is not valid", detail=f"alg {alg!r}")
        # RFC 9068 §4: `typ` tells an access token from an ID token or any other JWT.
        if str(header.get("typ", "")).lower() not in _AT_JWT:
            raise InvalidToken("The access token is not valid", detail="typ is not at+jwt")
        kid = header.get("kid")
        keys = await self._keys(issuer, kid if isinstance(kid, str) else None)
        try:
            with warnings.catch_warnings():
                # "EdDSA" verifies only where the issuer's allowlist names it.
                warnings.simplefilter("ignore", SecurityWarning)
                decoded = jwt.decode(token, keys, algorithms=[alg])
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidToken("The access token is not valid", detail=f"signature: {exc}") from exc
        return token_from_claims(
            decoded.claims,
            issuer=issuer.issuer,
            resource=self.resource,
            now=self.clock.now(),
            leeway=self.leeway,
            introspected=False,
        )

    async def _keys(self, issuer: TrustedIssuer, kid: str | None) -> KeySet:
        state = self._state[issuer.issuer]
        now = self.clock.now()
        if (
            state.keys is not None
            and now - state.fetched_at < self.keys_max_age
            and (_has_kid(state.keys, kid))
        ):
            return state.keys
        async with state.lock:
            now = self.clock.now()
            fresh = now - state.fetched_at < self.keys_max_age
            recent = now - state.fetched_at < self.refresh_interval
            if state.keys is not None and ((fresh and _has_kid(state.keys, kid)) or recent):
                return state.keys
            try:
                jwks_uri = issuer.jwks_uri or _endpoint(await self._metadata(issuer), "jwks_uri")
                keys = KeySet.import_key_set(await self._get_json(jwks_uri))  # type: ignore[arg-type]
            except (Unavailable, JoseError, ValueError, TypeError) as exc:
                log.warning("keys of %s unavailable: %s", issuer.issuer, exc)
                if state.keys is not None and fresh:
                    return state.keys
                raise Unavailable(
                    "The token issuer's keys cannot be fetched right now", detail=str(exc)
                ) from exc
            state.keys, state.fetched_at = keys, now
            return keys

    async def _metadata(self, issuer: TrustedIssuer) -> dict[str, Any]:
        state = self._state[issuer.issuer]
        if state.metadata is not None:
            return state.metadata
        problems = []
        for url in metadata_urls(issuer.issuer):
            try:
                document = await self._get_json(url)
            except Unavailable as exc:
                problems.append(exc.detail)
                continue
            # RFC 8414 §3.3: a document naming another issuer must not be used.
            if document.get("issuer") != issuer.issuer:
                raise Unavailable("misconfigured issuer", detail=f"{url} names another issuer")
            state.metadata = document
            return document
        raise Unavailable("no metadata", detail="; ".join(problems))

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self.http.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Unavailable("unreachable", detail=f"{url}: {exc!r}") from exc
        if not isinstance(document, dict):
            raise Unavailable("unreachable", detail=f"{url}: not a JSON object")
        return document

    # -- introspection (RFC 7662) ------------------------------------------------------------

    def introspecting_issuer(self, token: str) -> TrustedIssuer | None:
        """The issuer to ask about `token`: the one it names, else the only introspecting one."""
        parts = unverified_parts(token)
        named = self.issuers.get(str(parts[1].get("iss"))) if parts else None
        if named is not None:
            return named if named.introspects else None
        introspecting = [i for i in self.issuers.values() if i.introspects]
        return introspecting[0] if len(introspecting) == 1 else None

    async def introspect(
        self,
        token: str,
        issuer: TrustedIssuer,
        *,
        max_staleness: float,
        single_use: bool,
        check: Callable[[AccessToken], None] | None = None,
    ) -> AccessToken:
        """The introspected token; `check` (e.g. its DPoP key binding) runs on every answer,
        cached or not, before a single-use token is spent here."""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock.now()
        if max_staleness > 0 and not single_use:
            cached = self._introspected.get(key)
            if (
                cached is not None
                and now - cached.fetched_at < max_staleness
                and now < cached.token.expires_at + self.leeway
            ):
                self._introspected.move_to_end(key)
                if check is not None:
                    check(cached.token)
                return cached.token
        body = await self._ask(token, issuer)
        # RFC 7662 §2.2: anything but a literal `true` is inactive.
        if body.get("active") is not True:
            self._introspected.pop(key, None)
            raise InvalidToken("The access token is not active", detail="introspection: inactive")
        verified = token_from_claims(
            body,
            issuer=issuer.issuer,
            resource=self.resource,
            now=now,
            leeway=self.leeway,
            introspected=True,
        )
        if check is not None:
            check(verified)
        # stepup says so of a token its policy makes single use: never cache its answer.
        if single_use or body.get("single_use") is True:
            self._spend(verified.jti or key, verified.expires_at, now)
        elif max_staleness > 0:
            self._remember(key, verified, now)
        return verified

    def _spend(self, spent_id: str, expires_at: int, now: float) -> None:
        # stepup consumes single-use tokens itself; remembering the token here as well keeps
        # it to one use at this resource even where stepup's policy did not say so. RFC 7662
        # makes `jti` optional in the answer, so the token's digest stands in for it.
        # No await between the check and the write: in one event loop this is atomic.
        self._spent = {k: exp for k, exp in self._spent.items() if exp + self.leeway > now}
        if spent_id in self._spent:
            raise InvalidToken("The access token was already used", detail="token spent")
        self._spent[spent_id] = expires_at

    def _remember(self, key: str, token: AccessToken, now: float) -> None:
        self._introspected[key] = _Cached(token, now)
        self._introspected.move_to_end(key)
        while len(self._introspected) > self.cache_size:
            self._introspected.popitem(last=False)

    @property
    def cached_introspections(self) -> int:
        return len(self._introspected)

    async def _ask(self, token: str, issuer: TrustedIssuer) -> dict[str, Any]:
        assert issuer.client_id is not None and issuer.client_secret is not None
        endpoint = issuer.introspection_endpoint or _endpoint(
            await self._metadata(issuer), "introspection_endpoint"
        )
        # RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
        raw = f"{quote_plus(issuer.client_id)}:{quote_plus(issuer.client_secret)}".encode()
        try:
            response = await self.http.post(
                endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                headers={
                    "Authorization": "Basic " + base64.b64encode(raw).decode("ascii"),
                    "Accept": "application/json",
                },
            )
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            raise Unavailable(
                "The token issuer cannot be asked right now", detail=f"introspection: {exc!r}"
            ) from exc
        if not isinstance(body, dict):
            # A 401 here is this resource server's credential being refused: an operator
            # problem, never the client's; fail closed and log it.
            log.error("introspection at %s answered %s", endpoint, response.status_code)
            raise Unavailable(
                "The token issuer cannot be asked right now",
                detail=f"introspection answered {response.status_code}",
            )
        return body

    def forget(self) -> None:
        """Drop cached keys, metadata and introspection answers (tests, key compromise)."""
        self._state = {name: _IssuerState() for name in self.issuers}
        self._introspected.clear()


def _has_kid(keys: KeySet, kid: str | None) -> bool:
    return kid is None or any(key.kid == kid for key in keys)


def _endpoint(metadata: Mapping[str, Any], name: str) -> str:
    value = metadata.get(name)
    if not isinstance(value, str) or urlsplit(value).scheme not in ("https", "http"):
        raise Unavailable("misconfigured issuer", detail=f"metadata has no usable {name}")
    return value
