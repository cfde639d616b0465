"""Token exchange (RFC 8693): the caller's token plus a step-up code for an elevated token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from stepup import details
from stepup.config import TOKEN_TYPE_ACCESS_TOKEN, Client
from stepup.errors import (
    InvalidAuthorizationDetails,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    UnsupportedGrantType,
)
from stepup.models import Elevation, Grant
from stepup.protocol import dpop_binding
from stepup.services import Services

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
# RFC 7636 §4.1: 43 to 128 unreserved characters.
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


async def exchange(
    services: Services, client: Client, form: Mapping[str, str], dpop: Sequence[str] = ()
) -> dict[str, Any]:
    if form.get("grant_type") != GRANT_TYPE:
        raise UnsupportedGrantType(f"grant_type must be {GRANT_TYPE}")
    if form.get("actor_token") or form.get("actor_token_type"):
        raise InvalidRequest("delegation (actor_token) is not supported")
    requested = form.get("requested_token_type")
    if requested is not None and requested != TOKEN_TYPE_ACCESS_TOKEN:
        raise InvalidRequest(f"requested_token_type must be {TOKEN_TYPE_ACCESS_TOKEN}")
    code = form.get("code")
    verifier = form.get("code_verifier")
    if not code:
        raise InvalidRequest("code is required: the step-up code from the redirect")
    if not verifier:
        # RFC 9700 §2.1.1: a code issued with a challenge is never redeemed without a verifier.
        raise InvalidRequest("code_verifier is required (PKCE)")
    if not _VERIFIER.match(verifier):
        raise InvalidRequest("code_verifier must be 43-128 unreserved characters")
    subject = await services.subjects.validate(
        form.get("subject_token"), form.get("subject_token_type"), client
    )
    # RFC 9449 §5: checked before the code is spent, so a bad proof costs the client nothing.
    proven = await dpop_binding.proof(services, dpop, "/token")
    if subject.cnf_jkt is not None:
        dpop_binding.required_key(proven, subject.cnf_jkt, "subject_token")

    jti = secrets.token_urlsafe(24)
    limits = services.config.limits
    # One round trip: the redemption (atomic, one-time) and the subject's disabled flag.
    grant, spent_jti, disabled = await services.store.redeem_code_of(
        code, jti, limits.max_token_lifetime, subject.key
    )
    if grant is None:
        if spent_jti:
            # RFC 6749 §4.1.2: a code used twice revokes what the first use issued.
            await services.store.revoke_elevation(spent_jti, limits.max_token_lifetime)
            services.audit.record("token.replay", "revoked", client=client.client_id, jti=spent_jti)
        raise InvalidGrant("code is invalid, expired or already used")
    if grant.client_id != client.client_id:
        raise InvalidGrant("code was not issued to this client")
    if (grant.issuer, grant.sub) != (subject.issuer, subject.sub):
        raise InvalidGrant("code was issued for another subject")
    if not hmac.compare_digest(_s256(verifier), grant.code_challenge):
        raise InvalidGrant("code_verifier does not match the code_challenge")
    if disabled:
        services.audit.record("token.issued", "refused", subject=subject.key, reason="disabled")
        raise InvalidGrant("code is invalid, expired or already used")
    if grant.dpop_jkt is not None:
        # RFC 9449 §10: intake bound the request to this key.
        dpop_binding.required_key(proven, grant.dpop_jkt, "step-up request")
    # RFC 9449 §5: a proof binds the new token even when nothing asked for it.
    cnf_jkt = proven.jkt if proven is not None else None

    for name in ("resource", "audience"):
        value = form.get(name)
        if value is not None and value != grant.resource:
            raise InvalidTarget(f"{name} is not the resource this step-up was approved for")
    scopes = grant.scopes
    if form.get("scope"):
        asked = form["scope"].split()
        if not set(asked) <= set(grant.scopes):
            raise InvalidScope("scope is wider than what was approved")
        scopes = [s for s in grant.scopes if s in asked]
    approved_details = _authorization_details(services, client, form, grant, scopes)

    now = services.now()
    lifetime = services.policy.lifetime_for(scopes, subject.exp, now)
    if lifetime <= 0:
        # Within the upstream's leeway B still validated, but nothing of its life is left;
        # RFC 8693 §2.2.2: an unacceptable subject_token is invalid_request.
        raise InvalidRequest("subject_token has expired")
    elevation = Elevation(
        jti=jti,
        iss=services.config.issuer,
        sub=subject.sub,
        client_id=client.client_id,
        aud=grant.resource,
        scope=" ".join(scopes),
        acr=grant.acr,
        amr=grant.amr,
        auth_time=grant.auth_time,
        iat=now,
        exp=now + lifetime,
        single_use=services.policy.single_use(scopes),
        authorization_details=approved_details,
        cnf_jkt=cnf_jkt,
    )
    claims: dict[str, Any] = {
        "iss": elevation.iss,
        "sub": elevation.sub,
        "aud": elevation.aud,
        "client_id": elevation.client_id,
        "scope": elevation.scope,
        "acr": elevation.acr,
        "amr": elevation.amr,
        "auth_time": elevation.auth_time,
        "iat": elevation.iat,
        "exp": elevation.exp,
        "jti": elevation.jti,
    }
    if cnf_jkt is not None:
        claims["cnf"] = {"jkt": cnf_jkt}  # RFC 9449 §6.1
    if elevation.authorization_details:
        # RFC 9396 §9.1: the resource server reads what was approved from the token itself.
        claims["authorization_details"] = elevation.authorization_details
    if elevation.single_use:
        # Tells a resource server checking locally that this token must be introspected
        # (stepup consumes it there); a signature alone cannot say it was already used.
        claims["single_use"] = True
    token = services.signing.sign(claims)
    # Indexed under the subject before it is recorded, so an admin revoke-all cannot miss it.
    if not await services.elevations.track_and_record(
        subject.key, elevation, lifetime, now, limits.max_token_lifetime
    ):
        # A parallel replay of this code revoked the jti before it was recorded.
        raise InvalidGrant("code is invalid, expired or already used")
    services.audit.record(
        "token.issued",
        "success",
        subject=subject.key,
        client=client.client_id,
        jti=jti,
        scope=elevation.scope,
        acr=elevation.acr,
        expires_in=lifetime,
    )
    response: dict[str, Any] = {
        "access_token": token,
        "issued_token_type": TOKEN_TYPE_ACCESS_TOKEN,
        "token_type": "DPoP" if cnf_jkt is not None else "Bearer",
        "expires_in": lifetime,
        "scope": elevation.scope,
    }
    if elevation.authorization_details:
        # RFC 9396 §7: the token response says what the token was granted for.
        response["authorization_details"] = elevation.authorization_details
    return response


def _authorization_details(
    services: Services,
    client: Client,
    form: Mapping[str, str],
    grant: Grant,
    scopes: list[str],
) -> list[dict[str, Any]] | None:
    """What the token carries: the approved details, or (RFC 9396 §6.1) the subset the client
    asks for again at the token endpoint; never anything the user did not see."""
    raw = form.get("authorization_details")
    if raw is None or raw == "":
        types = services.config.authorization_details
        for detail in grant.authorization_details or ():
            known = types.get(str(detail.get("type")))
            if known is not None and not set(known.scopes) & set(scopes):
                raise InvalidAuthorizationDetails(
                    f"type {known.name!r} needs scope {' or '.join(known.scopes)}, "
                    "which the narrowed scope leaves out"
                )
        return grant.authorization_details
    approved = grant.authorization_details
    if not approved:
        raise InvalidAuthorizationDetails("no authorization_details were approved for this code")
    requested = details.parse(
        raw,
        services.config.authorization_details,
        client_id=client.client_id,
        scopes=scopes,
        resource=grant.resource,
    )
    if not details.narrowed(requested, approved, services.config.authorization_details):
        raise InvalidAuthorizationDetails(
            "authorization_details may only repeat or narrow what was approved"
        )
    return requested


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
