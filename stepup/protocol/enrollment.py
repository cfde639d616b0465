"""Factor management through a one-time link: a client that holds the user's token asks for
the link (POST /enroll); the user opens it, proves an existing factor if they have one, then
lists, renames and removes factors, adds an authenticator app or a passkey, and creates
recovery codes.

A first factor needs a recently issued subject token (policy `first_factor_max_age`).
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
import time
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from stepup.config import Client, Level
from stepup.errors import InvalidRequest
from stepup.factors.verify import Attempt
from stepup.models import Enrollment, Factor
from stepup.protocol import ceremonies, dpop_binding
from stepup.protocol.authorize import (
    STALE_SIGN_IN,
    enrol_context,
    failure_message,
    fresh_enough_for_first_factor,
)
from stepup.protocol.outcomes import Json, Page, Redirect, error_page, form_ok
from stepup.services import Services
from stepup.storage import keys

EXPIRED = "This enrolment link has expired or was already used. Ask the app for a new one."
NOT_PROVEN = "Prove one of your existing factors first."
KIND_NAMES = {
    "totp": "Authenticator app",
    "webauthn": "Passkey or security key",
    "recovery": "Recovery codes",
}
MAX_NAME = 64


async def create(
    services: Services, client: Client, form: Mapping[str, str], dpop: Sequence[str] = ()
) -> dict[str, Any]:
    subject = await services.subjects.validate(
        form.get("subject_token"), form.get("subject_token_type"), client
    )
    # A DPoP-bound user token opens the factor page only with a proof by its key (RFC 9449).
    proven = await dpop_binding.proof(services, dpop, "/enroll")
    if subject.cnf_jkt is not None:
        dpop_binding.required_key(proven, subject.cnf_jkt, "subject_token")
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
        # The link belongs to the first browser that opens it: one atomic bind, so of
        # browsers racing to open it one wins (reading the record, then saving it, let all in).
        remaining = max(1, enrollment.expires_at - services.now())
        enrollment.browser = await services.store.bind_once(
            keys.enrollment_browser(enrollment_id), browser, remaining
        )
        if enrollment.browser == browser:
            await _save(services, enrollment_id, enrollment)
    if not hmac.compare_digest(enrollment.browser, browser):
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
    **extra: Any,
) -> Page:
    subject = enrollment.subject_key
    if await services.store.is_disabled(subject):
        # The same answer as a stale sign-in: a disabled subject is not told apart.
        return error_page("Sign in again", STALE_SIGN_IN, 403)
    factors = await services.store.factors(subject)
    client = services.config.clients.get(enrollment.client_id)
    context: dict[str, Any] = {
        "client_name": client.name if client else enrollment.client_id,
        "csrf": enrollment.csrf,
        "error": error,
        "notice": enrollment.notice,
        **extra,
    }
    if enrollment.notice:
        enrollment.notice = None  # shown once
        await _save(services, enrollment_id, enrollment)
    if factors and not enrollment.proven:
        kinds = {f.kind for f in factors if not f.data.get("suspected_clone")}
        context["step"] = "prove"
        context["offer"] = {kind: kind in kinds for kind in ("totp", "webauthn", "recovery")}
    elif not factors and not fresh_enough_for_first_factor(
        services, enrollment.subject_authenticated_at
    ):
        return error_page("Sign in again", STALE_SIGN_IN, 403)
    else:
        if enrollment.pending_factor is None:
            enrollment.pending_factor = dataclasses.asdict(services.verifier.new_totp(subject))
            await _save(services, enrollment_id, enrollment)
        pending = Factor(**enrollment.pending_factor)
        context["step"] = "manage"
        context["factors"] = [_row(f) for f in factors if f.kind != "recovery"]
        context["recovery"] = next((_row(f) for f in factors if f.kind == "recovery"), None)
        context["first"] = not factors
        context.update(enrol_context(services, enrollment.sub, subject, pending))
    # CSP form-action also governs the redirect a form leads to (Done/Cancel → return_uri).
    origins: tuple[str, ...] = ()
    if enrollment.return_uri:
        parts = urlsplit(enrollment.return_uri)
        origins = (f"{parts.scheme}://{parts.netloc}",)
    return Page("enroll.html", context, status, retry_after, form_origins=origins)


def _row(factor: Factor) -> dict[str, Any]:
    state = ""
    if factor.data.get("suspected_clone"):
        state = "Turned off: it may have been copied. Remove it."
    elif factor.kind == "recovery":
        state = f"{factor.data.get('remaining', 0)} of {factor.data.get('count', 0)} unused"
    elif factor.kind == "webauthn":
        state = "Synced passkey" if factor.data.get("backup_eligible") else "Bound to one device"
    return {
        "id": factor.id,
        "kind": factor.kind,
        "kind_name": KIND_NAMES.get(factor.kind, factor.kind),
        "name": factor.name,
        "created": _date(factor.created_at),
        "last_used": _date(factor.last_used_at) if factor.last_used_at else "never",
        "state": state,
    }


def _date(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


async def submit(
    services: Services, enrollment_id: str, browser: str | None, form: Mapping[str, str]
) -> Page | Redirect | Json:
    enrollment = await _load(services, enrollment_id)
    if enrollment is None:
        return error_page("Link expired", EXPIRED)
    if not form_ok(enrollment.browser, browser, enrollment.csrf, form.get("csrf")):
        return error_page("Request refused", "This form was not sent from the enrolment page.", 403)
    subject = enrollment.subject_key
    action = form.get("action")
    if action in ("cancel", "done"):
        await services.store.delete(keys.enrollment(enrollment_id))
        if enrollment.return_uri:
            return Redirect(enrollment.return_uri)
        if action == "done":
            return error_page(
                "All set", "Your sign-in factors are saved. You can close this page.", 200
            )
        return error_page("Cancelled", "Nothing was changed.", 200)
    if await services.store.is_disabled(subject):
        services.audit.record("enrolment.changed", "refused", subject=subject, reason="disabled")
        return error_page("Sign in again", STALE_SIGN_IN, 403)
    factors = await services.store.factors(subject)
    proving = bool(factors) and not enrollment.proven
    if proving and action in ("prove", "prove-recovery", "webauthn"):
        return await _prove(services, enrollment_id, enrollment, factors, action, form)
    if proving and action == "webauthn-options":
        usable = [f for f in factors if f.kind == "webauthn" and not f.data.get("suspected_clone")]
        return await ceremonies.begin(
            services,
            _ceremony_id(enrollment_id),
            subject,
            "authenticate",
            None,
            usable,
            enrollment.sub,
        )
    if proving:
        # Adding or removing a factor when one exists requires proving an existing one first.
        services.audit.record(
            "enrolment.changed", "refused", subject=subject, reason="not proven", action=action
        )
        return error_page("Request refused", NOT_PROVEN, 403)
    if not factors and not fresh_enough_for_first_factor(
        services, enrollment.subject_authenticated_at
    ):
        services.audit.record("enrolment.added", "refused", subject=subject, reason="stale")
        return error_page("Sign in again", STALE_SIGN_IN, 403)
    if action == "confirm":
        return await _confirm_totp(services, enrollment_id, enrollment, factors, form)
    if action == "webauthn-options":
        return await ceremonies.begin(
            services,
            _ceremony_id(enrollment_id),
            subject,
            "register",
            None,
            factors,
            enrollment.sub,
        )
    if action == "webauthn":
        return await _register_passkey(services, enrollment_id, enrollment, factors, form)
    if action == "rename":
        return await _rename(services, enrollment_id, enrollment, factors, form)
    if action == "remove":
        return await _remove(services, enrollment_id, enrollment, factors, form)
    if action == "recovery-new":
        return await _new_recovery_codes(services, enrollment_id, enrollment, factors)
    return error_page("Request refused", "Unknown action.")


async def _prove(
    services: Services,
    enrollment_id: str,
    enrollment: Enrollment,
    factors: list[Factor],
    action: str,
    form: Mapping[str, str],
) -> Page | Redirect | Json:
    subject = enrollment.subject_key
    usable = [f for f in factors if not f.data.get("suspected_clone")]
    attempt: Attempt
    if action == "webauthn":
        ceremony = await ceremonies.finish(services, _ceremony_id(enrollment_id))
        attempt = await services.verifier.prove_webauthn(
            subject, usable, ceremony, form.get("credential")
        )
    elif action == "prove-recovery":
        attempt = await services.verifier.prove_recovery(subject, usable, form.get("recovery_code"))
    else:
        attempt = await services.verifier.prove_totp(subject, usable, form.get("code"))
    if attempt.factor is None:
        return await _failed(services, enrollment_id, enrollment, attempt.retry_after)
    await services.verifier.touch(subject, attempt.factor)
    enrollment.proven = True
    await _save(services, enrollment_id, enrollment)
    services.audit.record("enrolment.proven", "success", subject=subject, factor=attempt.factor.id)
    if action == "webauthn":
        return Redirect(f"/enroll/{enrollment_id}")
    return await _page(services, enrollment_id, enrollment)


async def _confirm_totp(
    services: Services,
    enrollment_id: str,
    enrollment: Enrollment,
    factors: list[Factor],
    form: Mapping[str, str],
) -> Page:
    subject = enrollment.subject_key
    if enrollment.pending_factor is None:
        return error_page(
            "Request refused", "Open the page again to add an authenticator app.", 403
        )
    pending = Factor(**enrollment.pending_factor)
    attempt = await services.verifier.prove_totp(subject, [pending], form.get("code"))
    if attempt.factor is None:
        return await _failed(services, enrollment_id, enrollment, attempt.retry_after)
    if not await _add(services, enrollment, factors, pending):
        return error_page("Already set up", "A factor was set up meanwhile; nothing was changed.")
    enrollment.pending_factor = None
    enrollment.proven = True  # the new factor was just proven
    return await _changed(services, enrollment_id, enrollment, "Authenticator app added.")


async def _register_passkey(
    services: Services,
    enrollment_id: str,
    enrollment: Enrollment,
    factors: list[Factor],
    form: Mapping[str, str],
) -> Page | Redirect:
    ceremony = await ceremonies.finish(services, _ceremony_id(enrollment_id))
    if ceremony is not None and ceremony.subject != enrollment.subject_key:
        ceremony = None
    name = _clean_name(form.get("name")) or "Passkey"
    registered = services.verifier.register_webauthn(ceremony, form.get("credential"), name)
    if registered is None:
        return await _page(
            services, enrollment_id, enrollment, "The passkey could not be added. Try again.", 400
        )
    factor, sign_count = registered
    if not await _add(services, enrollment, factors, factor):
        return error_page("Already set up", "A factor was set up meanwhile; nothing was changed.")
    await services.store.advance_sign_count(enrollment.subject_key, factor.id, sign_count)
    enrollment.proven = True
    enrollment.notice = f"Passkey “{name}” added."
    await _save(services, enrollment_id, enrollment)
    return Redirect(f"/enroll/{enrollment_id}")


async def _add(
    services: Services, enrollment: Enrollment, factors: list[Factor], factor: Factor
) -> bool:
    subject = enrollment.subject_key
    if factors:
        await services.store.save_factor(subject, factor)
    elif not await services.store.add_first_factor(subject, factor):
        services.audit.record("enrolment.added", "refused", subject=subject, reason="exists")
        return False
    services.audit.record(
        "enrolment.added",
        "success",
        subject=subject,
        factor=factor.id,
        kind=factor.kind,
        client=enrollment.client_id,
    )
    return True


async def _rename(
    services: Services,
    enrollment_id: str,
    enrollment: Enrollment,
    factors: list[Factor],
    form: Mapping[str, str],
) -> Page:
    factor = _find(factors, form.get("factor"))
    name = _clean_name(form.get("name"))
    if factor is None or factor.kind == "recovery":
        return await _page(
            services, enrollment_id, enrollment, "That factor no longer exists.", 404
        )
    if not name:
        return await _page(
            services, enrollment_id, enrollment, f"Give a name of 1 to {MAX_NAME} characters.", 400
        )
    factor.name = name
    factor.data.pop("remaining", None)
    await services.store.update_factor(enrollment.subject_key, factor)
    services.audit.record(
        "enrolment.renamed", "success", subject=enrollment.subject_key, factor=factor.id
    )
    return await _changed(services, enrollment_id, enrollment, f"Renamed to “{name}”.")


async def _remove(
    services: Services,
    enrollment_id: str,
    enrollment: Enrollment,
    factors: list[Factor],
    form: Mapping[str, str],
) -> Page:
    subject = enrollment.subject_key
    factor = _find(factors, form.get("factor"))
    if factor is None:
        return await _page(
            services, enrollment_id, enrollment, "That factor no longer exists.", 404
        )
    lost = _levels_lost(services, factor, [f for f in factors if f.id != factor.id])
    if lost:
        what = ", ".join(level.description or level.uri for level in lost)
        if services.config.factors.last_factor == "refuse":
            services.audit.record(
                "enrolment.removed",
                "refused",
                subject=subject,
                factor=factor.id,
                reason="last factor",
            )
            return await _page(
                services,
                enrollment_id,
                enrollment,
                f"“{factor.name}” is your only way to give {what}. Add another factor first.",
                409,
            )
        if form.get("confirm") != "yes":
            return await _page(
                services,
                enrollment_id,
                enrollment,
                confirm_remove={"row": _row(factor), "lost": what},
            )
    if not await services.store.remove_factor(subject, factor):
        return await _page(
            services, enrollment_id, enrollment, "That factor no longer exists.", 404
        )
    services.audit.record(
        "enrolment.removed", "success", subject=subject, factor=factor.id, kind=factor.kind
    )
    return await _changed(services, enrollment_id, enrollment, f"“{factor.name}” removed.")


async def _changed(
    services: Services, enrollment_id: str, enrollment: Enrollment, notice: str
) -> Page:
    enrollment.notice = notice
    await _save(services, enrollment_id, enrollment)
    return await _page(services, enrollment_id, enrollment)


def _levels_lost(services: Services, factor: Factor, others: list[Factor]) -> list[Level]:
    """The levels policy uses that the factor meets and no other factor would.

    Recovery codes are a fallback, not a factor to live on: they never count as another.
    """
    config = services.config
    used = {config.levels[rule.acr].uri: config.levels[rule.acr] for rule in config.scopes.values()}
    remaining = [f for f in others if f.kind != "recovery"]
    return [
        level
        for level in sorted(used.values(), key=lambda lv: lv.rank)
        if services.verifier.meeting([factor], level)
        and not services.verifier.meeting(remaining, level)
    ]


async def _new_recovery_codes(
    services: Services, enrollment_id: str, enrollment: Enrollment, factors: list[Factor]
) -> Page:
    subject = enrollment.subject_key
    if not any(f.kind != "recovery" for f in factors):
        return await _page(
            services, enrollment_id, enrollment, "Add an authenticator app or a passkey first.", 409
        )
    factor, codes = await services.verifier.new_recovery_codes(
        subject, services.config.factors.recovery_codes
    )
    services.audit.record(
        "enrolment.recovery_codes", "success", subject=subject, factor=factor.id, count=len(codes)
    )
    return await _page(services, enrollment_id, enrollment, new_codes=codes)


def _find(factors: list[Factor], factor_id: str | None) -> Factor | None:
    return next((f for f in factors if factor_id and f.id == factor_id), None)


def _clean_name(name: str | None) -> str | None:
    if name is None:
        return None
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > MAX_NAME:
        return None
    if any(unicodedata.category(ch).startswith("C") for ch in cleaned):
        return None
    return cleaned


def _ceremony_id(enrollment_id: str) -> str:
    return "enrollment:" + enrollment_id


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
