"""Proving a factor: the one place that checks a code, throttles and consumes the time step.

Every failure looks the same to the user; the precise cause goes to the audit log.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from stepup.audit import Audit
from stepup.clock import Clock
from stepup.config import Level
from stepup.factors import totp
from stepup.factors.base import FactorKind
from stepup.models import Factor
from stepup.sealing import Sealer, SealingError
from stepup.storage.base import Store
from stepup.throttle import Throttle

KINDS: dict[str, FactorKind] = {"totp": totp.Totp()}


@dataclass(frozen=True)
class Attempt:
    factor: Factor | None
    retry_after: int = 0


class Verifier:
    def __init__(
        self, store: Store, sealer: Sealer, throttle: Throttle, clock: Clock, audit: Audit
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._throttle = throttle
        self._clock = clock
        self._audit = audit

    @staticmethod
    def meeting(factors: list[Factor], level: Level) -> list[Factor]:
        return [f for f in factors if (kind := KINDS.get(f.kind)) and kind.meets(f, level)]

    @staticmethod
    def amr(factor: Factor) -> list[str]:
        return KINDS[factor.kind].amr(factor)

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
                    await self._throttle.succeeded(subject)
                    self._audit.record(
                        "factor.verify", "success", subject=subject, factor=factor.id
                    )
                    return Attempt(factor)
                self._audit.record("factor.verify", "failure", subject=subject, reason="replay")
                break
        reason = "malformed" if cleaned is None else "mismatch"
        wait = await self._throttle.failed(subject)
        self._audit.record("factor.verify", "failure", subject=subject, reason=reason)
        return Attempt(None, wait)

    async def touch(self, subject: str, factor: Factor) -> None:
        """Records the use; a secret sealed under an older key is resealed with the current one,
        so an old key can be retired once every factor has been used (or re-enrolled)."""
        factor.last_used_at = int(self._clock.now())
        sealed = str(factor.data.get("secret", ""))
        if factor.kind == "totp" and not self._sealer.is_current(sealed):
            secret = self.totp_secret(subject, factor)
            if secret is not None:
                factor.data["secret"] = self._sealer.seal(secret, f"{subject}:{factor.id}")
        await self._store.update_factor(subject, factor)
