"""Validation of subject tokens (B): JWT access tokens from trusted upstream issuers.

Keys come from a JWKS URI, a JWKS file or the issuer's discovery document; they are
cached and fetched again on an unknown `kid`, at most once per `refresh_interval`.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import KeySet

from stepup.clock import Clock
from stepup.config import (
    TOKEN_TYPE_ACCESS_TOKEN,
    TOKEN_TYPE_JWT,
    Client,
    Config,
    Upstream,
    secure_url,
)
from stepup.errors import InvalidRequest, TemporarilyUnavailable, UnsupportedTokenType
from stepup.jwtparts import numeric_date
from stepup.models import Subject

SUBJECT_TOKEN_TYPES = (TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT)
MAX_TOKEN_LENGTH = 16_384
MIN_RSA_BITS = 2048
# How many verified subject tokens each process remembers, and the longest one it keeps
# (a bound on memory whatever the upstream issues: at most about 4096 x 4 KiB twice over).
VERIFIED_CACHE_SIZE = 4096
VERIFIED_CACHE_MAX_TOKEN = 4096


class UpstreamUnavailable(Exception):
    pass


@dataclass
class _Cached:
    keys: KeySet
    fetched_at: float
    # The key ids, read once: joserfc's `kid` is a property worked out on every access, and
    # every subject token asks whether its kid is among them.
    kids: frozenset[str | None] = field(init=False)

    def __post_init__(self) -> None:
        self.kids = frozenset(key.kid for key in self.keys)

    def has_kid(self, kid: str | None) -> bool:
        return kid is None or kid in self.kids


class UpstreamKeys:
    """Public keys of the upstream issuers, fetched lazily and cached per issuer."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        clock: Clock,
        *,
        refresh_interval: float = 30.0,
        max_age: float = 3600.0,
    ) -> None:
        self._http = http
        self._clock = clock
        self._refresh_interval = refresh_interval
        self._max_age = max_age
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def keys_for(self, upstream: Upstream, kid: str | None) -> KeySet:
        cached = self._cache.get(upstream.issuer)
        now = self._clock.now()
        if cached and now - cached.fetched_at < self._max_age and cached.has_kid(kid):
            return cached.keys
        lock = self._locks.setdefault(upstream.issuer, asyncio.Lock())
        async with lock:
            cached = self._cache.get(upstream.issuer)
            # An unknown kid may mean the issuer rotated; refetch, but not more often than
            # refresh_interval, so forged kids cannot make stepup hammer the issuer.
            fresh = cached is not None and now - cached.fetched_at < self._max_age
            recent = cached is not None and now - cached.fetched_at < self._refresh_interval
            if cached and ((fresh and cached.has_kid(kid)) or recent):
                return cached.keys
            try:
                keys = await self._fetch(upstream)
            except UpstreamUnavailable:
                if cached:
                    return cached.keys
                raise
            self._cache[upstream.issuer] = _Cached(keys, now)
            return keys

    async def _fetch(self, upstream: Upstream) -> KeySet:
        if upstream.jwks_file is not None:
            try:
                data = json.loads(upstream.jwks_file.read_text("utf-8"))
                return _strong_only(KeySet.import_key_set(data))
            except (OSError, ValueError, TypeError, JoseError) as exc:
                raise UpstreamUnavailable(f"{upstream.jwks_file}: {exc}") from exc
        jwks_uri = upstream.jwks_uri or await self._discover(upstream)
        try:
            keys = KeySet.import_key_set(await self._get_json(jwks_uri))  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError) as exc:
            raise UpstreamUnavailable(f"{jwks_uri}: not a usable JWKS: {exc}") from exc
        return _strong_only(keys)

    async def _discover(self, upstream: Upstream) -> str:
        base = upstream.issuer.rstrip("/")
        for suffix in (
            "/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server",
        ):
            try:
                document = await self._get_json(base + suffix)
            except UpstreamUnavailable:
                continue
            # RFC 8414 §3.3 / OIDC Discovery §4.3: the document must name the same issuer.
            if document.get("issuer") != upstream.issuer:
                raise UpstreamUnavailable(f"discovery for {upstream.issuer}: issuer mismatch")
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not secure_url(jwks_uri):
                raise UpstreamUnavailable(f"discovery for {upstream.issuer}: bad jwks_uri")
            return jwks_uri
        raise UpstreamUnavailable(f"no discovery document for {upstream.issuer}")

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url, timeout=5.0)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise UpstreamUnavailable(f"{url}: {exc}") from exc
        if not isinstance(data, dict):
            raise UpstreamUnavailable(f"{url}: not a JSON object")
        return data


def _strong_only(keys: KeySet) -> KeySet:
    # RFC 7518 §3.3: RSA keys of 2048 bits or more; a shorter published key is never used.
    return KeySet(
        [k for k in keys if k.key_type != "RSA" or k.public_key.key_size >= MIN_RSA_BITS]  # type: ignore[union-attr]
    )


@dataclass(frozen=True)
class _Verified:
    """A token whose signature verified: the issuer entry and the key set it verified under."""

    upstream: Upstream
    kid: str | None
    keys: KeySet
    claims: dict[str, Any]


class SubjectValidator:
    def __init__(self, config: Config, keys: UpstreamKeys, clock: Clock) -> None:
        self._config = config
        self._keys = keys
        self._clock = clock
        # Token string -> what its verification found. The same bytes verified under the same
        # key set object always verify the same way, so a hit skips parsing and ECDSA; the
        # entry is used only while the issuer's current key set is still that very object
        # (a refetch, a rotation or an expired key cache makes a new one, and the token is
        # verified again). Claims are never cached as valid: exp, nbf, iat, aud and client_id
        # are checked against the clock and the presenting client on every call.
        self._verified: OrderedDict[str, _Verified] = OrderedDict()

    async def validate(self, token: str | None, token_type: str | None, client: Client) -> Subject:
        if not token:
            raise InvalidRequest("subject_token is required")
        if not token_type:
            raise InvalidRequest("subject_token_type is required")
        if token_type not in SUBJECT_TOKEN_TYPES:
            raise UnsupportedTokenType(
                f"subject_token_type must be one of {', '.join(SUBJECT_TOKEN_TYPES)}"
            )
        invalid = "subject_token is invalid"
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidRequest(invalid, detail="subject token too long")
        cached = self._verified.get(token)
        if cached is not None:
            keyset = await self._current_keys(cached.upstream, cached.kid)
            if keyset is cached.keys:
                self._verified.move_to_end(token)
                return self._check_claims(dict(cached.claims), cached.upstream, client)
            del self._verified[token]
        try:
            compact = jws.extract_compact(token.encode())
            header = compact.protected
            unverified = json.loads(compact.payload)
        except (JoseError, ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest(invalid, detail=f"not a JWS: {exc}") from exc
        if not isinstance(unverified, dict):
            raise InvalidRequest(invalid, detail="payload is not a JSON object")
        upstream = self._config.upstream(str(unverified.get("iss", "")))
        if upstream is None:
            raise InvalidRequest(invalid, detail=f"untrusted issuer {unverified.get('iss')!r}")
        alg = header.get("alg")
        # An allowlist per issuer: `none` and HMAC never verify, whatever the header says.
        if alg not in upstream.algorithms:
            raise InvalidRequest(invalid, detail=f"algorithm {alg!r} not allowed")
        self._check_typ(header.get("typ"), upstream)
        kid = header.get("kid")
        kid = kid if isinstance(kid, str) else None
        keyset = await self._current_keys(upstream, kid)
        try:
            # Only the issuer's published keys are used: `jku`, `x5u` and `jwk` headers are ignored.
            with warnings.catch_warnings():
                # "EdDSA" (deprecated by RFC 9864) verifies only where the policy names it;
                # joserfc's deprecation notice is then expected, not a fault.
                warnings.simplefilter("ignore", SecurityWarning)
                decoded = jwt.decode(token, keyset, algorithms=[alg])
            claims = dict(decoded.claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidRequest(invalid, detail=f"signature: {exc}") from exc
        if len(token) <= VERIFIED_CACHE_MAX_TOKEN:
            self._verified[token] = _Verified(upstream, kid, keyset, dict(claims))
            if len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)  # least recently used
        return self._check_claims(claims, upstream, client)

    async def _current_keys(self, upstream: Upstream, kid: str | None) -> KeySet:
        try:
            return await self._keys.keys_for(upstream, kid)
        except UpstreamUnavailable as exc:
            raise TemporarilyUnavailable(
                "the upstream issuer's keys cannot be fetched", detail=str(exc)
            ) from exc

    def _check_typ(self, typ: object, upstream: Upstream) -> None:
        normalized = str(typ).lower().removeprefix("application/") if typ is not None else None
        allowed: set[str | None] = set()
        if "at+jwt" in upstream.token_types:
            allowed.add("at+jwt")
        if "jwt" in upstream.token_types:
            allowed.update({"jwt", None})
        if normalized not in allowed:
            raise InvalidRequest("subject_token is invalid", detail=f"typ {typ!r} not accepted")

    def _check_claims(self, claims: dict[str, Any], upstream: Upstream, client: Client) -> Subject:
        invalid = "subject_token is invalid"
        now = self._clock.now()
        leeway = upstream.leeway

        def number(name: str, required: bool) -> int | None:
            value = claims.get(name)
            if value is None and not required:
                return None
            seconds = numeric_date(value)
            if seconds is None:
                raise InvalidRequest(invalid, detail=f"claim {name} missing or not a NumericDate")
            return seconds

        exp = number("exp", True)
        assert exp is not None
        if now >= exp + leeway:
            raise InvalidRequest("subject_token has expired", detail=f"exp {exp} <= now {now}")
        nbf = number("nbf", False)
        if nbf is not None and now < nbf - leeway:
            raise InvalidRequest(invalid, detail="nbf in the future")
        iat = number("iat", False)
        if iat is not None and iat > now + leeway:
            raise InvalidRequest(invalid, detail="iat in the future")
        audiences = claims.get("aud")
        audience_list = [audiences] if isinstance(audiences, str) else audiences
        if not isinstance(audience_list, list) or not set(map(str, audience_list)) & set(
            upstream.audiences
        ):
            raise InvalidRequest(invalid, detail=f"aud {audiences!r} not accepted")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidRequest(invalid, detail="no sub")
        # RFC 9068 §2.2: `client_id` names the client the token was issued to. An elevation is
        # never transferable, so it must be the client presenting it.
        presented = claims.get("client_id", claims.get("azp"))
        if presented not in client.presented_ids():
            raise InvalidRequest(
                "subject_token was not issued to this client",
                detail=f"client_id {presented!r} != {client.client_id!r}",
            )
        auth_time = number("auth_time", False)
        cnf = claims.get("cnf")
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        return Subject(
            issuer=upstream.issuer,
            sub=sub,
            client_id=client.client_id,
            exp=exp,
            authenticated_at=auth_time if auth_time is not None else (iat or 0),
            cnf_jkt=jkt if isinstance(jkt, str) else None,
        )
