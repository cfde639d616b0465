"""The operator's API: a subject's factors and elevations, and enrolment links, under the
admin credential of the policy (`[admin] token_hash`), never a client's or resource server's.

Every call is audited, refusals included. Subjects are named as the upstream names them:
`issuer` (a trusted upstream) and `sub`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from stepup.config import Config, hash_secret, secret_matches
from stepup.errors import InvalidRequest, OAuthError
from stepup.models import Enrollment
from stepup.services import Services
from stepup.storage import keys
from stepup.storage.keys import subject_id

OPERATOR = "operator"
_DUMMY_HASH = hash_secret("not-the-admin-token")


class InvalidToken(OAuthError):
    """RFC 6750 §3.1: a missing or wrong bearer token."""

    error = "invalid_token"
    status = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="stepup-admin"'}


class NotFound(OAuthError):
    error = "not_found"
    status = 404


def bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authenticate(services: Services, authorization: str | None) -> None:
    """Admits the admin token only; the API does not exist when no token is configured."""
    stored = services.config.operator.admin_token_hash
    if stored is None:
        raise NotFound("not found")
    token = bearer(authorization)
    # Compared even when absent, so both paths cost the same.
    if not secret_matches(token or "", stored if token else _DUMMY_HASH) or token is None:
        # Audited as `admin.refused` (reason invalid_token) with every other refusal.
        raise InvalidToken("the admin token is missing or wrong")


def _subject(config: Config, params: Mapping[str, str]) -> tuple[str, str, str]:
    issuer, sub = params.get("issuer"), params.get("sub")
    if not issuer or not sub:
        raise InvalidRequest("issuer and sub are required")
    if config.upstream(issuer) is None:
        raise InvalidRequest("issuer is not a trusted upstream issuer")
    return issuer, sub, subject_id(issuer, sub)


async def list_factors(services: Services, params: Mapping[str, str]) -> dict[str, Any]:
    _, _, subject = _subject(services.config, params)
    factors = await services.store.factors(subject)
    services.audit.record("admin.factors_listed", "success", subject=subject, actor=OPERATOR)
    return {
        "subject": subject,
        "disabled": await services.store.is_disabled(subject),
        "factors": [
            {
                "id": f.id,
                "kind": f.kind,
                "name": f.name,
                "created_at": f.created_at,
                "last_used_at": f.last_used_at,
                "suspected_clone": bool(f.data.get("suspected_clone")),
                **({"remaining": f.data["remaining"]} if "remaining" in f.data else {}),
            }
            for f in factors
        ],
    }


async def remove_factor(services: Services, params: Mapping[str, str]) -> dict[str, Any]:
    _, _, subject = _subject(services.config, params)
    factor_id = params.get("factor_id")
    if not factor_id:
        raise InvalidRequest("factor_id is required")
    factor = next((f for f in await services.store.factors(subject) if f.id == factor_id), None)
    # The operator may remove a user's last factor (a lost phone): that is the point of it.
    if factor is None or not await services.store.remove_factor(subject, factor):
        services.audit.record(
            "admin.factor_removed", "refused", subject=subject, factor=factor_id, reason="unknown"
        )
        raise NotFound("the subject has no such factor")
    services.audit.record(
        "admin.factor_removed",
        "success",
        subject=subject,
        factor=factor.id,
        kind=factor.kind,
        actor=OPERATOR,
    )
    return {"removed": factor.id}


async def list_elevations(services: Services, params: Mapping[str, str]) -> dict[str, Any]:
    _, _, subject = _subject(services.config, params)
    held = await services.elevations.held(subject, services.now())
    live = []
    for jti, exp in held:
        if await services.store.elevation(jti) is not None:
            live.append({"jti": jti, "exp": exp})
    services.audit.record("admin.elevations_listed", "success", subject=subject, actor=OPERATOR)
    return {"subject": subject, "elevations": live}


async def revoke_elevations(services: Services, params: Mapping[str, str]) -> dict[str, Any]:
    _, _, subject = _subject(services.config, params)
    limits = services.config.limits
    ended = await services.elevations.revoke_all(subject, services.now(), limits.max_token_lifetime)
    services.audit.record(
        "admin.elevations_revoked", "success", subject=subject, revoked=ended, actor=OPERATOR
    )
    return {"revoked": ended}


async def create_enrollment(services: Services, params: Mapping[str, str]) -> dict[str, Any]:
    """An enrolment link an operator hands to the user: it admits a first factor without a
    fresh sign-in (the operator vouches); a user with factors still proves one first."""
    issuer, sub, subject = _subject(services.config, params)
    client_id = params.get("client_id")
    return_uri = params.get("redirect_uri")
    client = services.config.clients.get(client_id) if client_id else None
    if client_id and client is None:
        raise InvalidRequest("client_id is not a registered client")
    if return_uri is not None and (client is None or return_uri not in client.redirect_uris):
        raise InvalidRequest("redirect_uri is not registered for that client")
    now = services.now()
    lifetime = services.config.limits.enrollment_lifetime
    enrollment = Enrollment(
        client_id=client.client_id if client else OPERATOR,
        issuer=issuer,
        sub=sub,
        # The operator's word stands in for a fresh sign-in for as long as the link lives.
        subject_authenticated_at=now
        + max(0, lifetime - services.config.limits.first_factor_max_age),
        csrf=secrets.token_urlsafe(32),
        expires_at=now + lifetime,
        return_uri=return_uri,
    )
    enrollment_id = secrets.token_urlsafe(32)
    await services.store.put(keys.enrollment(enrollment_id), enrollment, lifetime)
    services.audit.record(
        "admin.enrolment_link", "success", subject=subject, client=client_id, actor=OPERATOR
    )
    return {
        "enrollment_uri": f"{services.config.issuer}/enroll/{enrollment_id}",
        "expires_in": lifetime,
    }
