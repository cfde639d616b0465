"""What one route demands of an access token, and the check of a verified token against it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stepup.resource.levels import LevelOrder
from stepup.resource.refusals import (
    InsufficientScope,
    InsufficientUserAuthentication,
    InvalidToken,
    Param,
)
from stepup.resource.tokens import AccessToken


@dataclass(frozen=True, init=False)
class Requirement:
    """`scope`: all of these (RFC 6749 §3.3). `acr`: this level or a stronger one.
    `max_age`: the user authenticated at most this many seconds ago (RFC 9470 §3).
    `description`: the `error_description` of the step-up challenge, for the user's app.

    `introspect`: ask stepup (RFC 7662) instead of checking the signature locally, so a
    revoked token is refused; `revocation_delay` seconds of cached answers are tolerated
    (0: every request asks). `single_use`: the token is good for one request only; it is
    introspected every time (stepup consumes single-use tokens) and remembered as spent.
    """

    scope: tuple[str, ...]
    acr: str | None
    max_age: int | None
    introspect: bool
    revocation_delay: float
    single_use: bool
    description: str

    def __init__(
        self,
        scope: str | Sequence[str] = (),
        *,
        acr: str | None = None,
        max_age: int | None = None,
        introspect: bool = False,
        revocation_delay: float = 0.0,
        single_use: bool = False,
        description: str = "A stronger authentication is required",
    ) -> None:
        scopes = tuple(scope.split()) if isinstance(scope, str) else tuple(scope)
        if any(not s or " " in s for s in scopes):
            raise ValueError("each scope must be a non-empty token without spaces")
        if max_age is not None and (isinstance(max_age, bool) or max_age < 0):
            raise ValueError("max_age must be a non-negative number of seconds")
        if revocation_delay < 0:
            raise ValueError("revocation_delay must not be negative")
        if single_use and revocation_delay:
            raise ValueError("a single-use token is never served from a cache")
        object.__setattr__(self, "scope", scopes)
        object.__setattr__(self, "acr", acr)
        object.__setattr__(self, "max_age", max_age)
        object.__setattr__(self, "introspect", introspect or single_use)
        object.__setattr__(self, "revocation_delay", float(revocation_delay))
        object.__setattr__(self, "single_use", single_use)
        object.__setattr__(self, "description", description)

    def step_up_params(self) -> list[Param]:
        params: list[Param] = []
        if self.acr:
            params.append(("acr_values", self.acr))
        if self.max_age is not None:
            params.append(("max_age", self.max_age))
        if self.scope:
            # RFC 6750 §3 lets any Bearer challenge name the scope; stepup's intake reads it
            # from the challenge, so the client need not know which scope to ask for.
            params.append(("scope", " ".join(self.scope)))
        return params

    def step_up(
        self, description: str | None = None, detail: str | None = None
    ) -> InsufficientUserAuthentication:
        return InsufficientUserAuthentication(
            description or self.description, detail=detail, params=self.step_up_params()
        )


def check(
    token: AccessToken, requirement: Requirement, levels: LevelOrder, now: float, leeway: int = 0
) -> None:
    """Raise the refusal RFC 9470 / RFC 6750 prescribe, or return if the token will do.

    The level is checked before the scope: a token short of both gets the step-up challenge
    (which names the scope too), so one trip through stepup fixes both.
    """
    if requirement.acr and not levels.satisfies(token.acr, requirement.acr):
        raise requirement.step_up(
            detail=f"acr {token.acr!r} does not satisfy {requirement.acr!r}",
        )
    if requirement.max_age is not None:
        if token.auth_time is None:
            raise requirement.step_up(
                "A more recent authentication is required", detail="no auth_time"
            )
        if token.auth_time > now + leeway:
            raise InvalidToken("The access token is not valid", detail="auth_time in the future")
        # RFC 9470 §3: max_age is the allowable elapsed time; exactly max_age still passes.
        if now - token.auth_time > requirement.max_age:
            raise requirement.step_up(
                "A more recent authentication is required",
                detail=f"auth_time {token.auth_time} older than {requirement.max_age}s",
            )
    missing = [s for s in requirement.scope if s not in token.scopes]
    if missing:
        raise InsufficientScope(
            "The access token lacks a scope this request needs",
            detail=f"missing {' '.join(missing)}",
            params=[("scope", " ".join(requirement.scope))],
        )
