"""Factor enrolment: a client that holds the user's token asks for a one-time enrolment link;
the user opens it, proves an existing factor if they have one, and adds a TOTP factor.

A first factor needs a recently issued subject token (policy `first_factor_max_age`).
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from stepup.config import Client
from stepup.errors import InvalidRequest
from stepup.models import Enrollment, Factor
from stepup.protocol.authorize import (
    STALE_SIGN_IN,
    enrol_context,
    failure_message,
    fresh_enough_for_first_factor,
)
from stepup.protocol.outcomes import Page, Redirect, error_page, form_ok
from stepup.services import Services
from stepup.storage import keys

EXPIRED = "This enrolment link has expired or was already used. Ask the app for a new one."


async def create(services: Services, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
    subject = await services.subjects.validate(
        form.get("subject_token"), form.get("subject_token_type"), client
    )
    return_uri = form.get("redirect_uri")
    if return_uri is not None and return_uri not in client.redirect_uris:
        raise InvalidRequest("redirect_uri is not registered for this client")
    now = services.now()
    lifetime = services.config.limits.enrollment_lifetime
    enrollment = Enrollment(
        client_id=client.client_id,
        issuer=subject.issuer,
        sub=subject.sub,
        subject_authenticated_at=subject.authenticated_at,
        csrf=secrets.token_urlsafe(32),
        expires_at=now + lifetime,
        return_uri=return_uri,
    )
    enrollment_id = secrets.token_urlsafe(32)
    await services.store.put(keys.enrollment(enrollment_id), enrollment, lifetime)
    services.audit.record("enrolment.link", "success", client=client.client_id, subject=subject.key)
    return {
        "enrollment_uri": f"{services.config.issuer}/enroll/{enrollment_id}",
        "expires_in": lifetime,
    }


async def _load(services: Services, enrollment_id: str) -> Enrollment | None:
    enrollment = await services.store.get(keys.enrollment(enrollment_id), Enrollment)
    if enrollment is None or services.now() >= enrollment.expires_at:
        return None
    return enrollment


async def _save(services: Services, enrollment_id: str, enrollment: Enrollment) -> None:
    remaining = enrollment.expires_at - services.now()
    if remaining > 0:
        await services.store.put(keys.enrollment(enrollment_id), enrollment, remaining)


async def show(services: Services, enrollment_id: str, browser: str) -> Page:
    enrollment = await _load(services, enrollment_id)
    if enrollment is None:
        return error_page("Link expired", EXPIRED)
    if enrollment.browser is None:
        enrollment.browser = browser
        await _save(services, enrollment_id, enrollment)
    elif not hmac.compare_digest(enrollment.browser, browser):
        return error_page(
            "Open this in the same browser",
            "This enrolment link was opened in another browser.",
            403,
        )
    return await _page(services, enrollment_id, enrollment)


async def _page(
    services: Services,
    enrollment_id: str,
    enrollment: Enrollment,
    error: str | None = None,
    status: int = 200,
    retry_after: int | None = None,
) -> Page:
    subject = enrollment.subject_key
    factors = await services.store.factors(subject)
    client = services.config.clients.get(enrollment.client_id)
    context: dict[str, Any] = {
        "client_name": client.name if client else enrollment.client_id,
        "csrf": enrollment.csrf,
        "error": error,
        "factors": factors,
    }
    if await services.store.is_disabled(subject):
        # The same answer as a stale sign-in: a disabled subject is not told apart.
        return error_page("Sign in again", STALE_SIGN_IN, 403)
    if factors and not enrollment.proven:
        context["step"] = "prove"
    elif not factors and not fresh_enough_for_first_factor(
        services, enrollment.subject_authenticated_at
    ):
        return error_page("Sign in again", STALE_SIGN_IN, 403)
    else:
        if enrollment.pending_factor is None:
            enrollment.pending_factor = dataclasses.asdict(services.verifier.new_totp(subject))
            await _save(services, enrollment_id, enrollment)
        factor = Factor(**enrollment.pending_factor)
        context["step"] = "confirm"
        context.update(enrol_context(services, enrollment.sub, subject, factor))
    # CSP form-action also governs the redirect a form leads to (Cancel → return_uri).
    origins: tuple[str, ...] = ()
    if enrollment.return_uri:
        parts = urlsplit(enrollment.return_uri)
        origins = (f"{parts.scheme}://{parts.netloc}",)
    return Page("enroll.html", context, status, retry_after, form_origins=origins)


async def submit(
    services: Services, enrollment_id: str, browser: str | None, form: Mapping[str, str]
) -> Page | Redirect:
    enrollment = await _load(services, enrollment_id)
    if enrollment is None:
        return error_page("Link expired", EXPIRED)
    if not form_ok(enrollment.browser, browser, enrollment.csrf, form.get("csrf")):
        return error_page("Request refused", "This form was not sent from the enrolment page.", 403)
    subject = enrollment.subject_key
    action = form.get("action")
    if action == "cancel":
        await services.store.delete(keys.enrollment(enrollment_id))
        if enrollment.return_uri:
            return Redirect(enrollment.return_uri)
        return error_page("Cancelled", "Nothing was changed.", 200)
    if await services.store.is_disabled(subject):
        services.audit.record("enrolment.added", "refused", subject=subject, reason="disabled")
        return error_page("Sign in again", STALE_SIGN_IN, 403)
    factors = await services.store.factors(subject)
    if action == "prove" and factors and not enrollment.proven:
        attempt = await services.verifier.prove_totp(subject, factors, form.get("code"))
        if attempt.factor is None:
            return await _failed(services, enrollment_id, enrollment, attempt.retry_after)
        enrollment.proven = True
        await _save(services, enrollment_id, enrollment)
        return await _page(services, enrollment_id, enrollment)
    if (
        action != "confirm"
        or enrollment.pending_factor is None
        or (factors and not enrollment.proven)
    ):
        # Adding a factor when one exists requires proving an existing one first.
        services.audit.record("enrolment.added", "refused", subject=subject, reason="not proven")
        return error_page("Request refused", "Prove one of your existing factors first.", 403)
    if not factors and not fresh_enough_for_first_factor(
        services, enrollment.subject_authenticated_at
    ):
        services.audit.record("enrolment.added", "refused", subject=subject, reason="stale")
        return error_page("Sign in again", STALE_SIGN_IN, 403)
    pending = Factor(**enrollment.pending_factor)
    attempt = await services.verifier.prove_totp(subject, [pending], form.get("code"))
    if attempt.factor is None:
        return await _failed(services, enrollment_id, enrollment, attempt.retry_after)
    if await services.store.take(keys.enrollment(enrollment_id), Enrollment) is None:
        return error_page("Link expired", EXPIRED)
    if factors:
        await services.store.save_factor(subject, pending)
    elif not await services.store.add_first_factor(subject, pending):
        return error_page("Already set up", "A factor was set up meanwhile; nothing was changed.")
    services.audit.record(
        "enrolment.added",
        "success",
        subject=subject,
        factor=pending.id,
        kind=pending.kind,
        client=enrollment.client_id,
    )
    return Page(
        "enrolled.html",
        {
            "client_name": services.config.clients[enrollment.client_id].name,
            "return_uri": enrollment.return_uri,
        },
    )


async def _failed(
    services: Services, enrollment_id: str, enrollment: Enrollment, retry_after: int
) -> Page:
    return await _page(
        services,
        enrollment_id,
        enrollment,
        failure_message(retry_after),
        429 if retry_after else 400,
        retry_after or None,
    )
