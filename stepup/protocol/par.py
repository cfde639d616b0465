"""Challenge intake: the pushed authorization request (RFC 9126) carrying the user's token
and the resource server's challenge (RFC 9470), answered with a one-time request_uri."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from stepup import details
from stepup.config import Client
from stepup.dpop import is_thumbprint
from stepup.errors import (
    InvalidAuthorizationDetails,
    InvalidDPoPProof,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    UnsupportedResponseType,
)
from stepup.models import PendingRequest
from stepup.protocol import dpop_binding
from stepup.protocol.challenge import (
    ChallengeSyntaxError,
    requirement_from,
)
from stepup.services import Services
from stepup.storage import keys

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
# RFC 7636 §4.2: BASE64URL(SHA256(verifier)) is exactly 43 characters.
_S256_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
MAX_STATE = 1024


async def push(
    services: Services, client: Client, form: Mapping[str, str], dpop: Sequence[str] = ()
) -> dict[str, Any]:
    if "request" in form:
        raise InvalidRequest("request objects are not supported; send the parameters directly")
    if "request_uri" in form:
        # RFC 9126 §2.1: a pushed request must not itself carry a request_uri.
        raise InvalidRequest("request_uri is not allowed in a pushed request")
    if form.get("response_type", "code") != "code":
        raise UnsupportedResponseType("response_type must be code")
    redirect_uri = form.get("redirect_uri")
    if not redirect_uri:
        raise InvalidRequest("redirect_uri is required")
    if not _registered(redirect_uri, client.redirect_uris):
        raise InvalidRequest("redirect_uri is not registered for this client")
    code_challenge = _pkce(form)
    state = form.get("state")
    if state is not None and len(state) > MAX_STATE:
        raise InvalidRequest(f"state is longer than {MAX_STATE} characters")
    dpop_jkt = form.get("dpop_jkt")
    if dpop_jkt is not None and not is_thumbprint(dpop_jkt):
        raise InvalidRequest("dpop_jkt must be a base64url SHA-256 JWK thumbprint (RFC 7638)")

    subject = await services.subjects.validate(
        form.get("subject_token"), form.get("subject_token_type"), client
    )
    dpop_jkt = await _binding(services, dpop, dpop_jkt, subject.cnf_jkt)
    acr_values, max_age, scopes = _requirement(form)
    if not scopes:
        raise InvalidScope("scope is required: name the scope the elevation is for")
    for scope in scopes:
        if scope not in client.scopes or scope not in services.config.scopes:
            raise InvalidScope(f"scope '{scope}' may not be elevated to by this client")
    resource = _resource(form, client, services, scopes)
    authorization_details = _authorization_details(form, client, services, scopes, resource)
    level = services.policy.level_for(scopes, acr_values)
    now = services.now()
    request = PendingRequest(
        client_id=client.client_id,
        issuer=subject.issuer,
        sub=subject.sub,
        subject_exp=subject.exp,
        subject_authenticated_at=subject.authenticated_at,
        redirect_uri=redirect_uri,
        state=state,
        code_challenge=code_challenge,
        scopes=scopes,
        resource=resource,
        acr=level.uri,
        max_age=services.policy.max_age_for(scopes, max_age),
        created_at=now,
        authorization_details=authorization_details,
        dpop_jkt=dpop_jkt,
    )
    request_id = secrets.token_urlsafe(32)
    lifetime = services.config.limits.request_uri_lifetime
    await services.store.put(keys.pending_request(request_id), request, lifetime)
    services.audit.record(
        "challenge.accepted",
        "success",
        client=client.client_id,
        subject=subject.key,
        acr=level.uri,
        scope=" ".join(scopes),
        # The types only: the details themselves may name people and amounts.
        details=" ".join(d["type"] for d in authorization_details)
        if authorization_details
        else None,
    )
    return {"request_uri": REQUEST_URI_PREFIX + request_id, "expires_in": lifetime}


async def _binding(
    services: Services, headers: Sequence[str], dpop_jkt: str | None, cnf_jkt: str | None
) -> str | None:
    """The key the request is bound to from intake on (RFC 9449 §10): `dpop_jkt`, the key of
    a DPoP proof sent with the request (§10.1: both must agree), or the key the subject token
    is bound to (cnf.jkt: the elevation stays with the key the user's token is held by). A
    bound subject token is good only with a proof by its key, here as at /token and /enroll:
    whoever copied it without the key gets nothing done with it."""
    proven = await dpop_binding.proof(services, headers, "/par")
    if proven is not None and dpop_jkt is not None and proven.jkt != dpop_jkt:
        raise InvalidDPoPProof(
            "dpop_jkt is not the key of the DPoP proof",
            detail=f"dpop_jkt {dpop_jkt}, proof {proven.jkt}",
        )
    if cnf_jkt is None:
        return dpop_jkt or (proven.jkt if proven else None)
    if dpop_jkt is not None and dpop_jkt != cnf_jkt:
        raise InvalidRequest(
            "dpop_jkt is not the key the subject_token is bound to",
            detail=f"dpop_jkt {dpop_jkt}, cnf.jkt {cnf_jkt}",
        )
    dpop_binding.required_key(proven, cnf_jkt, "subject_token")
    return cnf_jkt


# RFC 8252 §7.3: a native app's loopback listener gets its port from the system at run time.
_LOOPBACK = re.compile(r"http://(127\.0\.0\.1|\[::1\]):([1-9][0-9]{0,4})(/.*)")


def _registered(redirect_uri: str, registered: tuple[str, ...]) -> bool:
    # Exact string match (RFC 9700 §4.1.3): no prefix, no pattern, no normalisation.
    if redirect_uri in registered:
        return True
    # The one exception (RFC 8252 §7.3, RFC 9700 §2.1): for a loopback IP literal registered
    # without a port, any port; everything else still matches exactly.
    match = _LOOPBACK.fullmatch(redirect_uri)
    if match is None or int(match.group(2)) > 65535:
        return False
    return f"http://{match.group(1)}{match.group(3)}" in registered


def _pkce(form: Mapping[str, str]) -> str:
    challenge = form.get("code_challenge")
    method = form.get("code_challenge_method")
    if not challenge:
        raise InvalidRequest("code_challenge is required (PKCE, RFC 7636)")
    if method != "S256":
        # `plain` gives no protection if the challenge leaks; RFC 9700 §2.1.1.
        raise InvalidRequest("code_challenge_method must be S256")
    if not _S256_CHALLENGE.match(challenge):
        raise InvalidRequest("code_challenge must be 43 base64url characters (S256)")
    return challenge


def _requirement(form: Mapping[str, str]) -> tuple[list[str], int | None, list[str]]:
    acr_values: list[str] = []
    max_age: int | None = None
    scopes: list[str] = []
    raw = form.get("challenge")
    if raw:
        try:
            requirement = requirement_from(raw)
        except ChallengeSyntaxError as exc:
            raise InvalidRequest(f"challenge cannot be parsed: {exc}") from exc
        acr_values.extend(requirement.acr_values)
        max_age = requirement.max_age
        scopes.extend(requirement.scope)
    if form.get("acr_values"):
        acr_values.extend(form["acr_values"].split())
    if "max_age" in form:
        text = form["max_age"]
        if not text.isascii() or not text.isdigit() or len(text) > 9:
            raise InvalidRequest("max_age must be a non-negative integer")
        max_age = int(text) if max_age is None else min(max_age, int(text))
    if form.get("scope"):
        scopes.extend(form["scope"].split())
    return acr_values, max_age, list(dict.fromkeys(scopes))


def _resource(
    form: Mapping[str, str], client: Client, services: Services, scopes: list[str]
) -> str:
    resource = form.get("resource")
    if not resource:
        raise InvalidTarget("resource is required: name the API the elevation is for")
    parts = urlsplit(resource)
    if not parts.scheme or parts.fragment:
        # RFC 8707 §2: an absolute URI without a fragment.
        raise InvalidTarget("resource must be an absolute URI without a fragment")
    if resource not in client.resources:
        raise InvalidTarget("this client may not elevate for that resource")
    for rule in services.policy.rules(scopes):
        if rule.resources and resource not in rule.resources:
            raise InvalidTarget(f"scope '{rule.name}' is not for that resource")
    return resource


def _authorization_details(
    form: Mapping[str, str], client: Client, services: Services, scopes: list[str], resource: str
) -> list[dict[str, Any]] | None:
    raw = form.get("authorization_details")
    if raw is None or raw == "":
        return None
    types = services.config.authorization_details
    if not types:
        raise InvalidAuthorizationDetails("no authorization_details types are accepted here")
    return details.parse(raw, types, client_id=client.client_id, scopes=scopes, resource=resource)
