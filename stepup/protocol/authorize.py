"""The authorization endpoint and its interaction: show what is being approved, take a factor,
answer the client's redirect_uri with a code (RFC 6749 §4.1.2, RFC 9207 `iss`).

Errors before the request is known are shown as a page and never redirected: only a
redirect_uri registered and checked at intake is ever used (RFC 9700 §4.11).
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from stepup import details
from stepup.config import Level
from stepup.factors import totp, webauthn
from stepup.factors.verify import Attempt
from stepup.models import Factor, Grant, Interaction, PendingRequest, RecentStepUp
from stepup.protocol import ceremonies
from stepup.protocol.outcomes import Json, Page, Redirect, error_page, form_ok
from stepup.protocol.par import REQUEST_URI_PREFIX
from stepup.services import Services
from stepup.storage import keys

GENERIC_FAILURE = "That did not work. Check your code or security key and try again."
STALE_SIGN_IN = (
    "To set up your first factor, sign in to the app again and start over: "
    "your sign-in is too old to add a factor."
)
EXPIRED = "This approval request has expired or was already used. Go back to the app and try again."


def client_redirect(redirect_uri: str, params: Mapping[str, str | None]) -> str:
    parts = urlsplit(redirect_uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.extend((k, v) for k, v in params.items() if v is not None)
    return urlunsplit(parts._replace(query=urlencode(query)))


async def start(
    services: Services, client_id: str | None, request_uri: str | None, browser: str
) -> Redirect | Page:
    if not client_id or not request_uri:
        return error_page("Incomplete request", "client_id and request_uri are required.")
    client = services.config.clients.get(client_id)
    if client is None or not request_uri.startswith(REQUEST_URI_PREFIX):
        return error_page("Unknown request", "This link does not come from a registered app.")
    request_id = request_uri.removeprefix(REQUEST_URI_PREFIX)
    # The request_uri is one-time (RFC 9126 §4): the browser continues on an interaction of its own.
    request = await services.store.take(keys.pending_request(request_id), PendingRequest)
    now = services.now()
    if request is None or now >= request.created_at + services.config.limits.request_uri_lifetime:
        return error_page("Request expired", EXPIRED)
    if request.client_id != client_id:
        services.audit.record(
            "authorize.start", "refused", client=client_id, reason="client mismatch"
        )
        return error_page("Unknown request", "This link does not belong to that app.")
    level = services.config.levels[request.acr]
    subject = request.subject_key

    # A disabled subject is answered like any other: the page, or `unmet_authentication_
    # requirements` when no factor is enrolled; only its proofs never succeed.
    disabled = await services.store.is_disabled(subject)
    reused = None if disabled else await _recent(services, request, now)
    if reused is not None:
        services.audit.record("stepup.reused", "success", subject=subject, client=client_id)
        return await _issue_code(services, request, reused.amr, reused.auth_time)

    factors = await services.store.factors(subject)
    if services.verifier.meeting(factors, level):
        mode, pending = "verify", None
    elif not disabled and _may_enrol_first_factor(services, request, factors, level, now):
        mode, pending = (
            "enrol",
            (services.verifier.new_totp(subject) if _takes(services, level, "totp") else None),
        )
    else:
        services.audit.record(
            "authorize.start", "unmet", subject=subject, client=client_id, acr=level.uri
        )
        return Redirect(
            client_redirect(
                request.redirect_uri,
                {
                    "error": "unmet_authentication_requirements",
                    "error_description": "No enrolled factor meets the required level",
                    "state": request.state,
                    "iss": services.config.issuer,
                },
            )
        )
    interaction_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    lifetime = services.config.limits.interaction_lifetime
    interaction = Interaction(
        request=_as_dict(request),
        csrf=csrf,
        browser=browser,
        mode=mode,
        expires_at=now + lifetime,
        pending_factor=_as_dict(pending) if pending else None,
    )
    await services.store.put(keys.interaction(interaction_id), interaction, lifetime)
    return Redirect(f"/interaction/{interaction_id}")


def _may_enrol_first_factor(
    services: Services, request: PendingRequest, factors: list[Factor], level: Level, now: int
) -> bool:
    return (
        not factors
        and services.config.limits.enrollment_during_stepup
        and (_takes(services, level, "totp") or _takes(services, level, "webauthn"))
        and fresh_enough_for_first_factor(services, request.subject_authenticated_at)
    )


def _takes(services: Services, level: Level, kind: str) -> bool:
    """Whether a new factor of this kind could meet the level (for first-factor enrolment)."""
    probe = Factor(id="probe", kind=kind, name="", created_at=0)
    return services.verifier.meeting([probe], level) != []


def fresh_enough_for_first_factor(services: Services, authenticated_at: int) -> bool:
    # Enrolment is the riskiest moment: only a freshly signed-in user may add a first factor,
    # checked when the page is shown and again when the factor is confirmed.
    return services.now() - authenticated_at <= services.config.limits.first_factor_max_age


async def _interaction(services: Services, key: str) -> Interaction | None:
    interaction = await services.store.get(key, Interaction)
    # The TTL ends it in Redis; the clock ends it here too (a TTL is not a security boundary).
    if interaction is None or services.now() >= interaction.expires_at:
        return None
    return interaction


async def _recent(services: Services, request: PendingRequest, now: int) -> RecentStepUp | None:
    if request.max_age <= 0:
        return None
    if request.authorization_details:
        # Dynamic linking (PSD2 RTS Art. 5): the user approves *this* transaction with a
        # proof made while it was shown, never with one made for something else earlier.
        return None
    for recent in await services.store.recent_stepups(request.subject_key, request.client_id):
        if services.policy.stronger_or_equal(recent.acr, request.acr) and (
            0 <= now - recent.auth_time <= request.max_age
        ):
            return recent
    return None


async def show(services: Services, interaction_id: str, browser: str | None) -> Page:
    interaction = await _interaction(services, keys.interaction(interaction_id))
    if interaction is None:
        return error_page("Request expired", EXPIRED)
    if browser is None or not hmac.compare_digest(interaction.browser, browser):
        return error_page(
            "Open this in the same browser",
            "This approval page was started in another browser. Go back to the app and try again.",
            403,
        )
    return await _page(services, interaction)


async def _page(
    services: Services,
    interaction: Interaction,
    error: str | None = None,
    status: int = 200,
    retry_after: int | None = None,
) -> Page:
    context = await _context(services, interaction)
    context["error"] = error
    origin = urlsplit(interaction.request["redirect_uri"])
    return Page(
        "authorize.html",
        context,
        status,
        retry_after,
        form_origins=(f"{origin.scheme}://{origin.netloc}",),
    )


async def submit(
    services: Services, interaction_id: str, browser: str | None, form: Mapping[str, str]
) -> Redirect | Page | Json:
    key = keys.interaction(interaction_id)
    interaction = await _interaction(services, key)
    if interaction is None:
        return error_page("Request expired", EXPIRED)
    if not form_ok(interaction.browser, browser, interaction.csrf, form.get("csrf")):
        return error_page("Request refused", "This form was not sent from the approval page.", 403)
    request = interaction.pending()
    subject = request.subject_key
    level = services.config.levels[request.acr]
    action = form.get("action")
    if action == "cancel":
        if await services.store.take(key, Interaction) is None:
            return error_page("Request expired", EXPIRED)
        services.audit.record(
            "stepup.cancelled", "denied", subject=subject, client=request.client_id
        )
        return Redirect(
            client_redirect(
                request.redirect_uri,
                {"error": "access_denied", "state": request.state, "iss": services.config.issuer},
            )
        )
    if action == "webauthn-options":
        enrol = interaction.mode == "enrol"
        factors = [] if enrol else await services.store.factors(subject)
        return await ceremonies.begin(
            services,
            _ceremony_id(interaction_id),
            subject,
            "register" if enrol else "authenticate",
            level,
            services.verifier.meeting(factors, level),
            request.sub,
        )
    if action not in ("verify", "recovery", "webauthn"):
        return error_page("Request refused", "Unknown action.")

    if await services.store.is_disabled(subject):
        services.audit.record("factor.verify", "failure", subject=subject, reason="disabled")
        return await _page(services, interaction, GENERIC_FAILURE, 400)
    if interaction.mode == "enrol":
        if not fresh_enough_for_first_factor(services, request.subject_authenticated_at):
            services.audit.record("enrolment.added", "refused", subject=subject, reason="stale")
            return error_page("Sign in again", STALE_SIGN_IN, 403)
        attempt, sign_count = await _prove_new(services, interaction_id, interaction, action, form)
    else:
        attempt, sign_count = (
            await _prove(services, interaction_id, subject, level, action, form),
            None,
        )
    if attempt.factor is None:
        return await _page(
            services,
            interaction,
            failure_message(attempt.retry_after),
            429 if attempt.retry_after else 400,
            attempt.retry_after or None,
        )

    # Consume the interaction atomically: of two racing submissions only one gets a code.
    if await services.store.take(key, Interaction) is None:
        return error_page("Request expired", EXPIRED)
    factor = attempt.factor
    if interaction.mode == "enrol":
        if not await services.store.add_first_factor(subject, factor):
            services.audit.record("enrolment.added", "refused", subject=subject, reason="exists")
            return error_page(
                "Already set up", "A factor was set up meanwhile. Go back to the app and try again."
            )
        if sign_count is not None:
            await services.store.advance_sign_count(subject, factor.id, sign_count)
        services.audit.record(
            "enrolment.added",
            "success",
            subject=subject,
            factor=factor.id,
            kind=factor.kind,
            via="stepup",
        )
    else:
        await services.verifier.touch(subject, factor)
    return await _issue_code(services, request, attempt.amr, services.now())


async def _prove(
    services: Services,
    interaction_id: str,
    subject: str,
    level: Level,
    action: str,
    form: Mapping[str, str],
) -> Attempt:
    candidates = services.verifier.meeting(await services.store.factors(subject), level)
    if action == "webauthn":
        ceremony = await ceremonies.finish(services, _ceremony_id(interaction_id))
        return await services.verifier.prove_webauthn(
            subject, candidates, ceremony, form.get("credential")
        )
    if action == "recovery":
        return await services.verifier.prove_recovery(
            subject, candidates, form.get("recovery_code")
        )
    return await services.verifier.prove_totp(subject, candidates, form.get("code"))


async def _prove_new(
    services: Services,
    interaction_id: str,
    interaction: Interaction,
    action: str,
    form: Mapping[str, str],
) -> tuple[Attempt, int | None]:
    """A first factor enrolled on the verification page: confirming it is the proof."""
    subject = interaction.pending().subject_key
    if action == "webauthn":
        ceremony = await ceremonies.finish(services, _ceremony_id(interaction_id))
        if ceremony is not None and ceremony.subject != subject:
            ceremony = None
        registered = services.verifier.register_webauthn(
            ceremony, form.get("credential"), "Passkey"
        )
        if registered is None:
            return Attempt(None), None
        factor, sign_count = registered
        return Attempt(
            factor, 0, webauthn.proof_amr(bool(factor.data["user_verified"]))
        ), sign_count
    if action == "verify" and interaction.pending_factor:
        pending = Factor(**interaction.pending_factor)
        return await services.verifier.prove_totp(subject, [pending], form.get("code")), None
    return Attempt(None), None


def _ceremony_id(interaction_id: str) -> str:
    return "interaction:" + interaction_id


def failure_message(retry_after: int) -> str:
    # One message for every failure; only the wait is told, never why (authelia does the same).
    if retry_after:
        return f"Too many attempts. Wait {retry_after} seconds, then try again."
    return GENERIC_FAILURE


async def _issue_code(
    services: Services, request: PendingRequest, amr: list[str], auth_time: int
) -> Redirect:
    code = secrets.token_urlsafe(32)
    grant = Grant(
        client_id=request.client_id,
        issuer=request.issuer,
        sub=request.sub,
        subject_exp=request.subject_exp,
        redirect_uri=request.redirect_uri,
        code_challenge=request.code_challenge,
        scopes=request.scopes,
        resource=request.resource,
        acr=request.acr,
        amr=amr,
        auth_time=auth_time,
        authorization_details=request.authorization_details,
        dpop_jkt=request.dpop_jkt,
    )
    await services.store.put(keys.code(code), grant, services.config.limits.code_lifetime)
    await services.store.remember_stepup(
        request.subject_key,
        request.client_id,
        RecentStepUp(acr=request.acr, amr=amr, auth_time=auth_time),
        services.policy.reuse_window,
    )
    services.audit.record(
        "stepup.approved",
        "success",
        subject=request.subject_key,
        client=request.client_id,
        acr=request.acr,
        amr=" ".join(amr),
    )
    return Redirect(
        client_redirect(
            request.redirect_uri,
            {"code": code, "state": request.state, "iss": services.config.issuer},
        )
    )


async def _context(services: Services, interaction: Interaction) -> dict[str, Any]:
    request = interaction.pending()
    config = services.config
    client = config.clients[request.client_id]
    level = config.levels[request.acr]
    api = next(
        (rs.name for rs in config.resource_servers.values() if request.resource in rs.resources),
        request.resource,
    )
    context: dict[str, Any] = {
        "client_name": client.name,
        "scopes": [config.scopes[name].description for name in request.scopes],
        "api": api,
        "resource": request.resource,
        "level": level.description or level.uri,
        "mode": interaction.mode,
        "csrf": interaction.csrf,
        "details": [
            details.describe(detail, config.authorization_details)
            for detail in request.authorization_details or ()
        ],
    }
    if interaction.mode == "enrol":
        context["offer"] = {"passkey_setup": _takes(services, level, "webauthn")}
        if interaction.pending_factor:
            factor = Factor(**interaction.pending_factor)
            context.update(enrol_context(services, request.sub, request.subject_key, factor))
    else:
        factors = await services.store.factors(request.subject_key)
        kinds = {f.kind for f in services.verifier.meeting(factors, level)}
        context["offer"] = {kind: kind in kinds for kind in ("totp", "webauthn", "recovery")}
    return context


def enrol_context(services: Services, sub: str, subject: str, factor: Factor) -> dict[str, Any]:
    secret = services.verifier.totp_secret(subject, factor)
    if secret is None:
        # Sealed under a key that is gone: show no QR; confirming fails like a wrong code.
        return {"qr_svg": "", "secret_groups": "unavailable — start again"}
    issuer_name = urlsplit(services.config.issuer).hostname or "stepup"
    uri = totp.provisioning_uri(secret, sub, issuer_name)
    return {
        "qr_svg": totp.qr_svg(uri),
        "secret_groups": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
    }


def _as_dict(record: object) -> dict[str, Any]:
    return dataclasses.asdict(record)  # type: ignore[call-overload, no-any-return]
