"""A protected resource: its identity, the issuers it trusts, and the whole check of one
request's Authorization header against one route's requirement. Framework-free: any ASGI
(or other) code calls `Guard.authorize` and renders the `Refusal` it may raise."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from stepup import dpop
from stepup.clock import Clock, SystemClock
from stepup.resource.details import ExpectedDetail
from stepup.resource.levels import DEFAULT_LEVELS, LevelOrder
from stepup.resource.refusals import (
    Answer,
    InvalidDPoPProof,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    Refusal,
)
from stepup.resource.requirement import Requirement, check
from stepup.resource.tokens import (
    MAX_TOKEN_LENGTH,
    AccessToken,
    TokenVerifier,
    TrustedIssuer,
    token_from_claims,
    unverified_parts,
)

# RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token; RFC 9449 §7.1: the same after "DPoP".
_BEARER = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)
_DPOP = re.compile(r"DPoP +([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)
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
    # RFC 9449: algorithms a DPoP proof may use; whether Bearer tokens are refused outright;
    # how old a proof may be (seconds); how many seen proofs each process remembers.
    dpop_algorithms: Sequence[str] = dpop.DEFAULT_ALGORITHMS
    dpop_bound_access_tokens_required: bool = False
    dpop_iat_window: int = 60
    dpop_replay_cache_size: int = 65_536
    # The origin (scheme://host[:port]) clients call this API at, which proofs name in `htu`;
    # by default the origin of `resource`. Never taken from the request's Host header.
    dpop_origin: str | None = None

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
        document["dpop_signing_alg_values_supported"] = list(self.dpop_algorithms)
        if self.dpop_bound_access_tokens_required:
            document["dpop_bound_access_tokens_required"] = True
        return document

    def request_uri(self, path: str) -> str:
        """The URI a DPoP proof's `htu` must name for a request to `path`: this resource's
        public origin (its identifier, RFC 9728), not the Host header a proxy passed on."""
        parts = urlsplit(self.dpop_origin or self.resource)
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def bearer_token(authorization: str | None) -> str:
    """The b64token of an RFC 6750 §2.1 Authorization header, or the refusal to answer."""
    scheme, token = credentials(authorization)
    if scheme != "bearer":
        raise MissingToken(detail="scheme DPoP")
    return token


def credentials(authorization: str | None) -> tuple[str, str]:
    """("bearer" | "dpop", token) of an RFC 6750 §2.1 or RFC 9449 §7.1 Authorization header."""
    if authorization is None or not authorization.strip():
        raise MissingToken()
    scheme = re.split(r"[ \t]", authorization.strip(), maxsplit=1)[0].lower()
    if scheme not in ("bearer", "dpop"):
        # Another scheme is no credential at all: answered like none (RFC 6750 §3.1).
        raise MissingToken(detail=f"scheme {scheme[:20]!r}")
    if len(authorization) > MAX_TOKEN_LENGTH + 16:
        raise InvalidToken("The access token is not valid", detail="token too long")
    grammar = _BEARER if scheme == "bearer" else _DPOP
    match = grammar.fullmatch(authorization.strip(" \t"))
    if match is None:
        raise InvalidRequest("The Authorization header is malformed", detail="not b64token")
    return scheme, match.group(1)


class Guard:
    """Checks requests for one protected resource. Holds the caches; make one per process
    and share it (`aclose()` when done if it made its own HTTP client)."""

    def __init__(
        self,
        resource: ProtectedResource,
        *,
        clock: Clock | None = None,
        http: httpx.AsyncClient | None = None,
        dpop_replay: dpop.ClaimOnce | None = None,
    ) -> None:
        """`dpop_replay`: where seen DPoP proofs are claimed (shared by every process of the
        resource server, e.g. Redis SET NX EX); by default this process's memory."""
        self.resource = resource
        self.clock = clock or SystemClock()
        self.levels = LevelOrder(resource.levels)
        self.proof_policy = dpop.ProofPolicy(
            tuple(resource.dpop_algorithms), resource.dpop_iat_window, resource.leeway + 5
        )
        self._dpop_algs = " ".join(resource.dpop_algorithms)
        self._replay = dpop_replay or dpop.MemoryReplayCache(
            self.clock.now, resource.dpop_replay_cache_size
        )
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

    async def authorize(
        self,
        authorization: str | None,
        requirement: Requirement,
        *,
        dpop: Sequence[str] = (),
        method: str = "GET",
        uri: str | None = None,
        transaction: ExpectedDetail | None = None,
    ) -> AccessToken:
        """The verified token if it meets `requirement`; otherwise raises a `Refusal`.

        `dpop`: the request's DPoP header values; `method` and `uri` (default: the resource
        itself): the request being served, which a DPoP proof must name (RFC 9449 §4.3).
        `transaction`: the RFC 9396 detail the request must be within, checked with the
        requirement, so a token approved for another transaction is refused unspent."""
        scheme = None
        try:
            scheme, value = credentials(authorization)
            if scheme == "bearer" and self.resource.dpop_bound_access_tokens_required:
                raise InvalidToken(
                    "This resource takes DPoP-bound tokens only", detail="Bearer presented"
                )
            proof = None
            if scheme == "dpop":
                proof = await self._proof(dpop, method, uri or self.resource.resource, value)
            proven = _Proven(proof, self.proof_policy.replay_ttl, self._replay)
            token = await self._verify(value, requirement, transaction, proven)
        except MissingToken as refusal:
            # No error code (RFC 6750 §3.1), but the scope hint helps a client ask for it.
            missing = refusal
            if requirement.scope:
                missing = MissingToken(
                    detail=refusal.detail, params=[("scope", " ".join(requirement.scope))]
                )
            if self.resource.dpop_bound_access_tokens_required:
                missing.dpop_algs = self._dpop_algs
            if missing is refusal:
                raise
            raise missing from None
        except Refusal as refusal:
            # RFC 9449 §7.1: a client that used DPoP (or must) is answered in DPoP's scheme,
            # step-up challenges included, so it retries the way it can succeed.
            if scheme == "dpop" or self.resource.dpop_bound_access_tokens_required:
                refusal.dpop_algs = self._dpop_algs
            raise
        return token

    async def _proof(self, headers: Sequence[str], method: str, uri: str, token: str) -> dpop.Proof:
        """The proof, every check passed but the one-time claim of its jti (`_Proven.claim`
        makes it once the token is known to be good)."""
        try:
            return await dpop.verify_proof(
                headers,
                method=method,
                uri=uri,
                now=self.clock.now(),
                policy=self.proof_policy,
                claim=None,
                access_token=token,
            )
        except dpop.ProofError as exc:
            raise InvalidDPoPProof(exc.description, detail=exc.detail) from exc

    def _bound(self, token: AccessToken, proof: dpop.Proof | None) -> AccessToken:
        self._check_binding(token.claims, proof)
        return token

    def _check_binding(self, claims: Mapping[str, Any], proof: dpop.Proof | None) -> None:
        cnf = claims.get("cnf")
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        if jkt is None and proof is None:
            return
        if proof is None:
            # RFC 9449 §7.2: a bound token presented as a Bearer token is refused; whoever
            # holds it without the key (a thief) gets nothing from it.
            refusal = InvalidToken(
                "The access token is DPoP-bound: present it with a DPoP proof",
                detail="bound token as Bearer",
            )
            # Answered in DPoP's scheme: that is the only way this token works.
            refusal.dpop_algs = self._dpop_algs
            raise refusal
        if not isinstance(jkt, str) or jkt != proof.jkt:
            raise InvalidToken(
                "Invalid DPoP key binding", detail=f"cnf.jkt {str(jkt)[:50]}, proof {proof.jkt}"
            )

    async def _verify(
        self,
        token: str,
        requirement: Requirement,
        transaction: ExpectedDetail | None,
        proven: _Proven,
    ) -> AccessToken:
        """The token, verified or introspected, and fit for this route: a token the route
        refuses is refused before anything spends it (stepup's single use, or this process's)."""
        verifier = self.verifier
        proof = proven.proof

        def usable(answer: AccessToken) -> None:
            # On every introspection answer, before this process spends anything: an opaque
            # token's binding and claims are known only from it.
            self._check_binding(answer.claims, proof)
            self._fits(answer, requirement, transaction, self.clock.now())

        if not requirement.introspect:
            checked = self._bound(await verifier.verify_jwt(token), proof)
            # The proof's jti is claimed only now, behind a verified signature: proofs made
            # with any token string cannot fill the (bounded) replay cache.
            await proven.claim()
            # Before stepup is asked, which spends a single-use token: a route this token
            # cannot satisfy refuses it first, so the client keeps its one use for a route
            # it was made for.
            self._fits(checked, requirement, transaction, self.clock.now())
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
            return await verifier.introspect(
                token, issuer, max_staleness=0, single_use=True, check=usable
            )
        issuer = verifier.introspecting_issuer(token)
        if issuer is None:
            # A token of an issuer this resource cannot ask (an upstream IdP's): if it is
            # valid, the answer is the step-up challenge, so the client gets one stepup can
            # revoke; if not, invalid_token.
            self._bound(await verifier.verify_jwt(token), proof)
            await proven.claim()
            raise requirement.step_up(detail="token cannot be introspected")
        # Asking stepup spends a single-use token. A JWT says itself which key it is bound
        # to: whoever presents it without that key (a thief, RFC 9449 §7.2) is refused before
        # the question, so they cannot burn the owner's one use. Its claims are unverified
        # here, but only ever refuse: a token edited to pass this fails at stepup unspent.
        # The same for a route this token cannot satisfy, or a transaction it was not approved
        # for (stepup marks its single-use tokens).
        parts = unverified_parts(token)
        if parts is not None:
            self._check_binding(parts[1], proof)
            if parts[1].get("single_use") is True:
                now = self.clock.now()
                claimed = token_from_claims(
                    parts[1],
                    issuer=issuer.issuer,
                    resource=self.resource.resource,
                    now=now,
                    leeway=self.resource.leeway,
                    introspected=False,
                )
                self._fits(claimed, requirement, transaction, now)
        # Before asking, so a replayed proof never reaches stepup (nor spends a token there).
        await proven.claim()
        return await verifier.introspect(
            token,
            issuer,
            max_staleness=requirement.revocation_delay,
            single_use=requirement.single_use,
            check=usable,
        )

    def _fits(
        self,
        token: AccessToken,
        requirement: Requirement,
        transaction: ExpectedDetail | None,
        now: float,
    ) -> None:
        # Level, age and scope first: a token short of those needs a step-up whatever the
        # transaction, and the refusal for another transaction names them all the same.
        check(token, requirement, self.levels, now, self.resource.leeway)
        if transaction is not None:
            transaction.approved_in(token, requirement)

    def answer(self, refusal: Refusal) -> Answer:
        return refusal.answer(self.resource.realm, self.resource.metadata_url)


class _Proven:
    """A request's checked proof (or None) and the one-time claim of its jti still to make."""

    def __init__(self, proof: dpop.Proof | None, ttl: int, replay: dpop.ClaimOnce) -> None:
        self.proof = proof
        self._pending = proof is not None
        self._ttl = ttl
        self._replay = replay

    async def claim(self) -> None:
        # RFC 9449 §11.1: a proof is good once.
        if self.proof is None or not self._pending:
            return
        self._pending = False
        key = self.proof.replay_key
        if not await self._replay(key, self._ttl):
            raise InvalidDPoPProof("The DPoP proof was already used", detail=f"jti replay {key}")
