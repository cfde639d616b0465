"""WebAuthn (passkeys and security keys): the options and checks of both ceremonies.

py_webauthn holds no state: the challenge (single-use, short-lived, in Redis) and the
credential (a factor record) are passed in, and what comes back is saved by the caller.
"""

from __future__ import annotations

import binascii
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from stepup.config import Level, WebAuthn
from stepup.models import Factor

MAX_CREDENTIAL_JSON = 16_384
_TRANSPORTS = {t.value for t in AuthenticatorTransport}


class CeremonyFailed(Exception):
    """One precise reason per failed check, for the audit log; the user sees one message."""


@dataclass(slots=True)
class Ceremony:
    """A running ceremony, kept in Redis until its response arrives (then consumed)."""

    purpose: str  # "authenticate" | "register"
    challenge: str  # base64url
    subject: str
    user_verification: bool
    device_bound: bool
    expires_at: int


class WebAuthnKind:
    kind = "webauthn"

    def meets(self, factor: Factor, level: Level) -> bool:
        return (
            factor.kind == self.kind
            and "webauthn" in level.factors
            and not factor.data.get("suspected_clone")
            and (not level.device_bound or device_bound(factor))
        )

    def amr(self, factor: Factor) -> list[str]:
        # RFC 8176 §2: proof of possession of a key, with the user present; `mfa` is added
        # when the authenticator also verified the user (see proof_amr).
        return ["pop", "user"]


def proof_amr(user_verified: bool) -> list[str]:
    return ["pop", "user", "mfa"] if user_verified else ["pop", "user"]


def device_bound(factor: Factor) -> bool:
    # A backup-eligible credential may be copied to other devices by a passkey provider
    # (WebAuthn §6.1.3 BE/BS flags), so only one that is neither eligible nor backed up counts.
    return not factor.data.get("backup_eligible") and not factor.data.get("backed_up")


def user_handle(subject: str) -> bytes:
    # The subject key is a digest of (issuer, sub): no personal data goes to the authenticator.
    return bytes.fromhex(subject)


def new_challenge() -> bytes:
    return secrets.token_bytes(32)


def registration_options(
    rp: WebAuthn,
    subject: str,
    user_name: str,
    existing: list[Factor],
    challenge: bytes,
    user_verification: bool,
) -> str:
    options = generate_registration_options(
        rp_id=rp.rp_id,
        rp_name=rp.rp_name,
        user_id=user_handle(subject),
        user_name=user_name,
        user_display_name=user_name,
        challenge=challenge,
        timeout=rp.challenge_lifetime * 1000,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=_requirement(user_verification),
        ),
        exclude_credentials=_descriptors(existing),
    )
    return options_to_json(options)


def authentication_options(
    rp: WebAuthn, credentials: list[Factor], challenge: bytes, user_verification: bool
) -> str:
    options = generate_authentication_options(
        rp_id=rp.rp_id,
        challenge=challenge,
        timeout=rp.challenge_lifetime * 1000,
        allow_credentials=_descriptors(credentials),
        user_verification=_requirement(user_verification),
    )
    return options_to_json(options)


def parse_credential(text: str | None) -> dict[str, Any]:
    if not text or len(text) > MAX_CREDENTIAL_JSON:
        raise CeremonyFailed("no credential, or one too large")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CeremonyFailed("credential is not JSON") from exc
    if not isinstance(value, dict) or not isinstance(value.get("id"), str):
        raise CeremonyFailed("credential has no id")
    return value


def new_factor(
    rp: WebAuthn,
    ceremony: Ceremony,
    credential: Mapping[str, Any],
    name: str,
    now: int,
) -> tuple[Factor, int]:
    """Checks a registration response; returns the factor and its initial sign count."""
    try:
        verified = verify_registration_response(
            credential=dict(credential), **_expected(rp, ceremony)
        )
    except (WebAuthnException, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise CeremonyFailed(f"registration: {exc}") from exc
    eligible = verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE
    if ceremony.device_bound and (eligible or verified.credential_backed_up):
        raise CeremonyFailed("registration: a synced credential where a device-bound one is needed")
    response = credential.get("response")
    transports = response.get("transports") if isinstance(response, dict) else None
    factor = Factor(
        id="webauthn-" + secrets.token_hex(6),
        kind="webauthn",
        name=name,
        created_at=now,
        data={
            "credential_id": bytes_to_base64url(verified.credential_id),
            "public_key": bytes_to_base64url(verified.credential_public_key),
            "aaguid": verified.aaguid,
            "backup_eligible": eligible,
            "backed_up": verified.credential_backed_up,
            "user_verified": verified.user_verified,
            "transports": [t for t in transports or [] if t in _TRANSPORTS],
        },
    )
    return factor, verified.sign_count


@dataclass(frozen=True)
class Assertion:
    factor: Factor
    sign_count: int
    user_verified: bool
    backed_up: bool


def check_assertion(
    rp: WebAuthn, ceremony: Ceremony, credential: Mapping[str, Any], candidates: list[Factor]
) -> Assertion:
    """Checks an authentication response against the subject's own credentials.

    The signature counter is compared by the caller, atomically in Redis, after the
    signature is known to be good: py_webauthn compares it before checking the signature,
    so a forged response could otherwise get a genuine credential marked as cloned.
    """
    factor = next(
        (f for f in candidates if f.data.get("credential_id") == credential.get("id")), None
    )
    if factor is None:
        # Another user's credential, a removed one, or one that does not meet the level.
        raise CeremonyFailed("credential is not one of the subject's")
    response = credential.get("response")
    handle = response.get("userHandle") if isinstance(response, dict) else None
    if handle and handle != bytes_to_base64url(user_handle(ceremony.subject)):
        raise CeremonyFailed("user handle belongs to another user")
    try:
        verified = verify_authentication_response(
            credential=dict(credential),
            credential_public_key=base64url_to_bytes(str(factor.data["public_key"])),
            credential_current_sign_count=0,
            **_expected(rp, ceremony),
        )
    except (WebAuthnException, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise CeremonyFailed(f"authentication: {exc}") from exc
    multi_device = verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE
    if ceremony.device_bound and (multi_device or verified.credential_backed_up):
        raise CeremonyFailed(
            "authentication: a synced credential where a device-bound one is needed"
        )
    return Assertion(
        factor, verified.new_sign_count, verified.user_verified, verified.credential_backed_up
    )


def _expected(rp: WebAuthn, ceremony: Ceremony) -> dict[str, Any]:
    """What both ceremonies check the response against: this challenge, RP ID and origins."""
    return {
        "expected_challenge": base64url_to_bytes(ceremony.challenge),
        "expected_rp_id": rp.rp_id,
        "expected_origin": list(rp.origins),
        "require_user_verification": ceremony.user_verification,
    }


def _requirement(required: bool) -> UserVerificationRequirement:
    return (
        UserVerificationRequirement.REQUIRED if required else UserVerificationRequirement.PREFERRED
    )


def _descriptors(factors: list[Factor]) -> list[PublicKeyCredentialDescriptor]:
    return [
        PublicKeyCredentialDescriptor(
            id=base64url_to_bytes(str(f.data["credential_id"])),
            transports=[AuthenticatorTransport(t) for t in f.data.get("transports", [])],
        )
        for f in factors
        if f.kind == "webauthn"
    ]
