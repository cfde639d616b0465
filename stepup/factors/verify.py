"""Proving a factor: the one place that checks a code or an assertion, throttles, and
consumes what is one-time (a TOTP time step, a recovery code, a signature counter value).

Every failure looks the same to the user; the precise cause goes to the audit log.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from webauthn.helpers import bytes_to_base64url

from stepup.audit import Audit
from stepup.clock import Clock
from stepup.config import Level, WebAuthn
from stepup.factors import recovery, totp, webauthn
from stepup.factors.base import FactorKind
from stepup.models import Factor
from stepup.sealing import Sealer, SealingError
from stepup.storage.base import Store
from stepup.throttle import Throttle

KINDS: dict[str, FactorKind] = {
    "totp": totp.Totp(),
    "webauthn": webauthn.WebAuthnKind(),
    "recovery": recovery.RecoveryKind(),
}


@dataclass(frozen=True)
class Attempt:
    factor: Factor | None
    retry_after: int = 0
    amr: list[str] = field(default_factory=list)  # what this proof showed (RFC 8176)


class Verifier:
    def __init__(
        self,
        store: Store,
        sealer: Sealer,
        throttle: Throttle,
        clock: Clock,
        audit: Audit,
        rp: WebAuthn,
    ) -> None:
        self._rp = rp
        self._store = store
        self._sealer = sealer
        self._throttle = throttle
        self._clock = clock
        self._audit = audit

    @staticmethod
    def meeting(factors: list[Factor], level: Level) -> list[Factor]:
        return [f for f in factors if (kind := KINDS.get(f.kind)) and kind.meets(f, level)]

    def new_totp(self, subject: str, name: str = "Authenticator app") -> Factor:
        factor_id = "totp-" + secrets.token_hex(6)
        secret = totp.new_secret()
        return Factor(
            id=factor_id,
            kind="totp",
            name=name,
            created_at=int(self._clock.now()),
            data={"secret": self._sealer.seal(secret, f"{subject}:{factor_id}")},
        )

    def totp_secret(self, subject: str, factor: Factor) -> str | None:
        """The factor's secret, or None when it does not open (fail closed, never a 500)."""
        try:
            return self._sealer.open(str(factor.data["secret"]), f"{subject}:{factor.id}")
        except (SealingError, KeyError) as exc:
            self._audit.record(
                "factor.unsealable", "failure", subject=subject, factor=factor.id, reason=str(exc)
            )
            return None

    async def prove_totp(self, subject: str, candidates: list[Factor], code: str | None) -> Attempt:
        """Checks a code against the subject's TOTP factors (or one being enrolled)."""
        wait = await self._throttle.wait(subject)
        if wait:
            self._audit.record("factor.verify", "throttled", subject=subject, retry_after=wait)
            return Attempt(None, wait)
        cleaned = totp.normalize_code(code)
        now = self._clock.now()
        if cleaned is not None:
            for factor in candidates:
                if factor.kind != "totp":
                    continue
                secret = self.totp_secret(subject, factor)
                step = None if secret is None else totp.matching_step(secret, cleaned, now)
                if step is None:
                    continue
                # The step is claimed atomically: the same code (or an older one) is refused
                # afterwards, also when two requests race with it.
                ttl = totp.PERIOD * (2 * totp.SKEW_STEPS + 2)
                if await self._store.claim_totp_step(subject, factor.id, step, ttl):
                    return await self._succeeded(subject, factor, KINDS["totp"].amr(factor))
                self._audit.record("factor.verify", "failure", subject=subject, reason="replay")
                break
        return await self._failed(subject, "malformed" if cleaned is None else "mismatch")

    async def prove_recovery(
        self, subject: str, candidates: list[Factor], code: str | None
    ) -> Attempt:
        """Spends one recovery code of the subject's current set."""
        wait = await self._throttle.wait(subject)
        if wait:
            self._audit.record("factor.verify", "throttled", subject=subject, retry_after=wait)
            return Attempt(None, wait)
        factor = next((f for f in candidates if f.kind == "recovery"), None)
        cleaned = recovery.normalize(code)
        if factor is None or cleaned is None:
            return await self._failed(subject, "malformed" if factor else "no recovery codes")
        # scrypt is deliberately slow: off the event loop, so other requests are not held up.
        digest = await asyncio.to_thread(recovery.digest, cleaned, str(factor.data["salt"]))
        if not await self._store.use_recovery_code(subject, digest):
            return await self._failed(subject, "mismatch or already used")
        remaining = max(0, int(factor.data.get("remaining", 1)) - 1)
        self._audit.record(
            "factor.recovery_used",
            "success",
            subject=subject,
            factor=factor.id,
            remaining=remaining,
        )
        return await self._succeeded(subject, factor, KINDS["recovery"].amr(factor))

    async def prove_webauthn(
        self,
        subject: str,
        candidates: list[Factor],
        ceremony: webauthn.Ceremony | None,
        credential_json: str | None,
    ) -> Attempt:
        """Checks an assertion for a ceremony this page started (consumed by the caller)."""
        wait = await self._throttle.wait(subject)
        if wait:
            self._audit.record("factor.verify", "throttled", subject=subject, retry_after=wait)
            return Attempt(None, wait)
        if (
            ceremony is None
            or ceremony.purpose != "authenticate"
            or ceremony.subject != subject
            or self._clock.now() >= ceremony.expires_at
        ):
            return await self._failed(subject, "no ceremony running, or it expired")
        try:
            credential = webauthn.parse_credential(credential_json)
            assertion = webauthn.check_assertion(self._rp, ceremony, credential, candidates)
        except webauthn.CeremonyFailed as exc:
            return await self._failed(subject, str(exc))
        factor = assertion.factor
        if not await self._store.advance_sign_count(subject, factor.id, assertion.sign_count):
            # WebAuthn §6.1.1: a counter that does not grow may mean a cloned authenticator;
            # the credential is set aside until the user or an operator removes it.
            factor.data["suspected_clone"] = True
            await self._store.update_factor(subject, factor)
            self._audit.record(
                "factor.suspected_clone",
                "failure",
                subject=subject,
                factor=factor.id,
                sign_count=assertion.sign_count,
            )
            return await self._failed(subject, "signature counter did not increase")
        factor.data["backed_up"] = assertion.backed_up
        return await self._succeeded(subject, factor, webauthn.proof_amr(assertion.user_verified))

    def start_ceremony(
        self, subject: str, purpose: str, level: Level | None
    ) -> tuple[webauthn.Ceremony, bytes]:
        challenge = webauthn.new_challenge()
        ceremony = webauthn.Ceremony(
            purpose=purpose,
            challenge=bytes_to_base64url(challenge),
            subject=subject,
            user_verification=bool(level and level.user_verification),
            device_bound=bool(level and level.device_bound),
            expires_at=int(self._clock.now()) + self._rp.challenge_lifetime,
        )
        return ceremony, challenge

    def register_webauthn(
        self, ceremony: webauthn.Ceremony | None, credential_json: str | None, name: str
    ) -> tuple[Factor, int] | None:
        """A new credential from a registration response, or None (the cause is audited)."""
        subject = ceremony.subject if ceremony else None
        try:
            if (
                ceremony is None
                or ceremony.purpose != "register"
                or self._clock.now() >= ceremony.expires_at
            ):
                raise webauthn.CeremonyFailed("no registration running, or it expired")
            credential = webauthn.parse_credential(credential_json)
            return webauthn.new_factor(self._rp, ceremony, credential, name, int(self._clock.now()))
        except webauthn.CeremonyFailed as exc:
            self._audit.record("enrolment.added", "failure", subject=subject, reason=str(exc))
            return None

    async def new_recovery_codes(self, subject: str, count: int) -> tuple[Factor, list[str]]:
        """A new set (voiding the old one); the codes are returned to show once, never stored."""
        codes = recovery.new_codes(count)
        salt = recovery.new_salt()
        digests = await asyncio.to_thread(
            lambda: [recovery.digest(recovery.normalize(c) or "", salt) for c in codes]
        )
        now = int(self._clock.now())
        factor = Factor(
            id="recovery-" + secrets.token_hex(6),
            kind="recovery",
            name="Recovery codes",
            created_at=now,
            data={"salt": salt, "count": count},
        )
        await self._store.replace_recovery_codes(subject, factor, digests)
        factor.data["remaining"] = count
        return factor, codes

    async def _succeeded(self, subject: str, factor: Factor, amr: list[str]) -> Attempt:
        await self._throttle.succeeded(subject)
        self._audit.record(
            "factor.verify", "success", subject=subject, factor=factor.id, kind=factor.kind
        )
        return Attempt(factor, 0, amr)

    async def _failed(self, subject: str, reason: str) -> Attempt:
        wait = await self._throttle.failed(subject)
        self._audit.record("factor.verify", "failure", subject=subject, reason=reason)
        return Attempt(None, wait)

    async def touch(self, subject: str, factor: Factor) -> None:
        """Records the use; a secret sealed under an older key is resealed with the current one,
        so an old key can be retired once every factor has been used (or re-enrolled)."""
        factor.last_used_at = int(self._clock.now())
        factor.data.pop("remaining", None)  # counted from Redis on each read, not stored
        sealed = str(factor.data.get("secret", ""))
        if factor.kind == "totp" and not self._sealer.is_current(sealed):
            secret = self.totp_secret(subject, factor)
            if secret is not None:
                factor.data["secret"] = self._sealer.seal(secret, f"{subject}:{factor.id}")
        await self._store.update_factor(subject, factor)
