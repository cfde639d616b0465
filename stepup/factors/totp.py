"""TOTP (RFC 6238): secrets, provisioning URIs, QR codes and finding the time step a code is for."""

from __future__ import annotations

import hmac
import io

import pyotp
import segno

from stepup.config import Level
from stepup.models import Factor

PERIOD = 30
DIGITS = 6
# RFC 6238 §5.2: allow one step of clock skew each way.
SKEW_STEPS = 1


class Totp:
    kind = "totp"

    def meets(self, factor: Factor, level: Level) -> bool:
        # A typed code can be phished, so TOTP never meets a level demanding user verification
        # by an authenticator (WebAuthn UV) or device binding.
        return (
            factor.kind == self.kind
            and "totp" in level.factors
            and not level.user_verification
            and not level.device_bound
        )

    def amr(self, factor: Factor) -> list[str]:
        return ["otp"]  # RFC 8176 §2


def new_secret() -> str:
    return pyotp.random_base32(32)  # 160 bits, RFC 4226 §4 recommends at least 128


def provisioning_uri(secret: str, account: str, issuer_name: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD).provisioning_uri(
        name=account, issuer_name=issuer_name
    )


def qr_svg(uri: str) -> str:
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(
        buffer,
        kind="svg",
        scale=4,
        border=2,
        xmldecl=False,
        svgns=True,
        title="QR code for your authenticator app",
    )
    return buffer.getvalue().decode()


def normalize_code(code: str | None) -> str | None:
    """Digits only; spaces and dashes that people type or paste are dropped."""
    if code is None:
        return None
    cleaned = "".join(ch for ch in code if ch not in " -\u00a0")
    if len(cleaned) != DIGITS or not cleaned.isascii() or not cleaned.isdigit():
        return None
    return cleaned


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step the code belongs to, within the allowed skew; None if none matches."""
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD)
    current = int(now // PERIOD)
    for step in (current, current - SKEW_STEPS, current + SKEW_STEPS):
        if hmac.compare_digest(totp.at(step * PERIOD), code):
            return step
    return None
