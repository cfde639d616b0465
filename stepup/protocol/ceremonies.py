"""WebAuthn ceremonies started from a page: the options a page script asks for, and the
challenge kept for the response (one per page at a time, single-use, short-lived)."""

from __future__ import annotations

import orjson

from stepup.config import Level
from stepup.factors import webauthn
from stepup.models import Factor
from stepup.protocol.outcomes import Json
from stepup.services import Services
from stepup.storage import keys


async def begin(
    services: Services,
    context_id: str,
    subject: str,
    purpose: str,
    level: Level | None,
    factors: list[Factor],
    user_name: str,
) -> Json:
    """Options for `navigator.credentials.get` (authenticate) or `.create` (register)."""
    rp = services.config.relying_party
    ceremony, challenge = services.verifier.start_ceremony(subject, purpose, level)
    if purpose == "register":
        options = webauthn.registration_options(
            rp, subject, user_name, factors, challenge, ceremony.user_verification
        )
    else:
        options = webauthn.authentication_options(
            rp, factors, challenge, ceremony.user_verification
        )
    # A new ceremony replaces the page's previous one: only the latest challenge is valid.
    await services.store.put(keys.webauthn_challenge(context_id), ceremony, rp.challenge_lifetime)
    return Json({"publicKey": orjson.loads(options)})


async def finish(services: Services, context_id: str) -> webauthn.Ceremony | None:
    """The page's running ceremony, consumed: a response is checked against it once only."""
    return await services.store.take(keys.webauthn_challenge(context_id), webauthn.Ceremony)
